//! Socket.IO clients for tests: the real socket.io-client (Node, `tests/sio/client.mjs`) and
//! the real python-socketio (`tests/sio/client.py`) as child processes that print one JSON line
//! per state change or event, and [`RawSio`], Engine.IO v4 over a hand-driven WebSocket, for
//! exact bytes. Included with `#[path = "common/sio.rs"] mod sio;` next to `common`.
//!
//! The Node client needs `node` and `tests/sio/node_modules/socket.io-client` (`npm ci --prefix
//! tests/sio`); the Python one needs python-socketio 5.x with its client extra, found through
//! `$RINGCAST_TEST_PYTHON` (default `python3`). `scripts/test` installs both. Without them a test
//! skips with a line on stderr, except under `CI=true`, where it fails.
//!
//! Every wait has a timeout; a wait that runs out fails with every line the client printed and
//! its stderr.

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::{RawWs, client_frame, try_wait_exit};

/// How long a client may take for one step (start, connect, an event): longer than
/// [`super::common::TIMEOUT`], because Node and Python share two cores with the gateway and the
/// other tests.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A Socket.IO client library the tests drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    /// socket.io-client 4.x on Node.
    Node,
    /// python-socketio 5.x.
    Python,
}

/// The folder with the client scripts and `node_modules`.
fn sio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sio")
}

/// The interpreter for `client.py`: `$RINGCAST_TEST_PYTHON`, else `python3`.
pub fn python() -> OsString {
    std::env::var_os("RINGCAST_TEST_PYTHON")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// Why `lib`'s tests cannot run here, if they cannot.
fn missing(lib: Lib) -> Option<String> {
    match lib {
        Lib::Node => {
            let node = Command::new("node").arg("--version").output();
            if !node.is_ok_and(|o| o.status.success()) {
                return Some("no working `node` on PATH".to_owned());
            }
            let pkg = sio_dir().join("node_modules/socket.io-client/package.json");
            (!pkg.is_file()).then(|| format!("no {} (npm ci --prefix tests/sio)", pkg.display()))
        }
        Lib::Python => {
            let probe = Command::new(python())
                .args(["-c", "import socketio, websocket, requests"])
                .stderr(Stdio::null())
                .status();
            (!probe.is_ok_and(|s| s.success())).then(|| {
                format!(
                    "{:?} cannot import socketio, websocket and requests \
                     (pip install 'python-socketio[client]', or set RINGCAST_TEST_PYTHON)",
                    python()
                )
            })
        }
    }
}

/// True when `lib`'s tests can run. Otherwise prints a skip line and returns false, or, under
/// `CI=true`, panics: CI must never pass by skipping them.
pub fn available(lib: Lib, test: &str) -> bool {
    let Some(why) = missing(lib) else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}. Under CI=true this is a failure; scripts/test installs it.");
    }
    eprintln!("SKIPPED {test}: {why}; scripts/test installs it");
    false
}

/// One client process, closed on drop (stdin EOF, then a kill if it lingers).
pub struct SioClient {
    /// The library.
    pub lib: Lib,
    /// `node:websocket`, `python:default`, … for failure messages.
    pub name: String,
    child: Child,
    /// Dropped to make the client disconnect and exit.
    stdin: Option<ChildStdin>,
    /// The client's stdout lines, in order.
    lines: mpsc::Receiver<String>,
    /// Every line read so far, parsed.
    pub seen: Vec<Value>,
    /// The client's stderr, for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl SioClient {
    /// Starts `lib`'s client on `url` with `transports` (`websocket`, `default`, and for Node
    /// also `polling`), exiting after `count` events (0: at stdin EOF), listening to `events`.
    /// Call [`available`] first.
    pub fn start(lib: Lib, url: &str, transports: &str, count: usize, events: &[&str]) -> Self {
        let mut cmd = match lib {
            Lib::Node => {
                let mut c = Command::new("node");
                c.arg(sio_dir().join("client.mjs"));
                c
            }
            Lib::Python => {
                let mut c = Command::new(python());
                c.arg(sio_dir().join("client.py"));
                c
            }
        };
        let name = format!("{lib:?}:{transports}").to_lowercase();
        let mut child = cmd
            .args([url, transports, &count.to_string()])
            .args(events)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("client stdout");
        let stderr = child.stderr.take().expect("client stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err_log = Arc::new(Mutex::new(Vec::new()));
        let sink = err_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        SioClient {
            lib,
            name,
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr: err_log,
        }
    }

    /// The first line (already seen or still to come) that satisfies `pred`; fails after
    /// [`CLIENT_TIMEOUT`], or when the client exits without printing one.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            let line = self.next_line(deadline, what);
            if pred(&line) {
                return line;
            }
        }
    }

    /// Waits until `n` lines (already seen or still to come) satisfy `pred`; fails after
    /// [`CLIENT_TIMEOUT`], or when the client exits first.
    pub fn wait_count(&mut self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        while self.seen.iter().filter(|v| pred(v)).count() < n {
            self.next_line(deadline, &format!("{n} × {what}"));
        }
    }

    /// The first `n` events (`(name, data)`), waiting for the missing ones.
    pub fn events(&mut self, n: usize) -> Vec<(String, Value)> {
        self.wait_count("event", n, |v| v.get("event").is_some());
        self.event_lines()
            .take(n)
            .map(|v| {
                let name = v["event"].as_str().expect("event name").to_owned();
                (name, v["data"].clone())
            })
            .collect()
    }

    fn event_lines(&self) -> impl Iterator<Item = &Value> {
        self.seen.iter().filter(|v| v.get("event").is_some())
    }

    /// Reads one more line into [`SioClient::seen`] and returns it.
    fn next_line(&mut self, deadline: Instant, what: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match self.lines.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => panic!("{}: no {what} ({e}); {}", self.name, self.report()),
        };
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", self.name));
        self.seen.push(value.clone());
        value
    }

    /// What the client printed, and its stderr.
    pub fn report(&self) -> String {
        format!(
            "lines: {:?}; stderr: {:?}",
            self.seen.iter().map(Value::to_string).collect::<Vec<_>>(),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for SioClient {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if try_wait_exit(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A Socket.IO client over a WebSocket spoken by hand (`/socket.io/?EIO=4&transport=websocket`,
/// no Origin): the open packet, `40`, the `40{"sid":…}` reply, then packets, each ping (`2`)
/// answered with a pong (`3`).
pub struct RawSio {
    pub ws: RawWs,
    /// The Engine.IO open packet as sent (`0{…}`).
    pub open: String,
    /// The namespace reply as sent (`40{"sid":…}`).
    pub connect: String,
}

impl RawSio {
    /// Connects, reads the open packet, joins the default namespace and reads its reply. Each
    /// read waits at most [`CLIENT_TIMEOUT`].
    pub fn connect(addr: SocketAddr) -> RawSio {
        let ws = RawWs::connect(addr, "/socket.io/?EIO=4&transport=websocket");
        ws.stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("read timeout");
        let mut sio = RawSio {
            ws,
            open: String::new(),
            connect: String::new(),
        };
        sio.open = sio.next_text("the open packet");
        assert!(sio.open.starts_with("0{"), "open packet: {}", sio.open);
        sio.send("40");
        sio.connect = sio.next_packet_or("the namespace reply");
        assert!(
            sio.connect.starts_with("40{\"sid\":\""),
            "namespace reply: {}",
            sio.connect
        );
        sio
    }

    /// Sends one text frame.
    pub fn send(&mut self, text: &str) {
        self.ws.send_raw(&client_frame(true, 0x1, text.as_bytes()));
    }

    /// The next packet other than a ping, answering pings with pongs.
    pub fn next_packet(&mut self) -> String {
        self.next_packet_or("a packet")
    }

    /// [`RawSio::next_packet`], failing with what it was waiting for.
    pub fn next_packet_or(&mut self, what: &str) -> String {
        loop {
            let text = self.next_text(what);
            if text == "2" {
                self.send("3");
                continue;
            }
            return text;
        }
    }

    /// The next text frame's payload; fails on anything else.
    fn next_text(&mut self, what: &str) -> String {
        let frame = match self.ws.try_read_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("EOF while waiting for {what}"),
            Err(e) => panic!("no {what} within {CLIENT_TIMEOUT:?}: {e}"),
        };
        assert!(
            frame.fin && frame.opcode == 0x1,
            "{what}: not a text frame: {frame:?}"
        );
        String::from_utf8(frame.payload).expect("UTF-8 packet")
    }
}
