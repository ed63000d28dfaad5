//! Shared test harness: the real `ringcast` binary on an ephemeral port, real WebSocket clients
//! (tungstenite over blocking std sockets with read timeouts), and small HTTP helpers.
//!
//! No fixed ports and no sleeps: the gateway binds port 0 and tests learn the port from its
//! `listening addr=` log line; clients wait for acks or markers, never for time to pass.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A running gateway, killed on drop.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts `ringcast --listen 127.0.0.1:0 <args>` and waits until it listens.
    pub fn start(args: &[&str]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("RINGCAST_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcast");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening addr=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(TIMEOUT) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!("gateway did not start: {:?}", log.lock().unwrap());
            }
        };
        Gateway { child, addr, log }
    }

    /// Connects a WebSocket client to `path` (e.g. `/ws?subscribe=a`).
    pub fn ws(&self, path: &str) -> Client {
        Client::connect(self.addr, path)
    }

    /// An HTTP request; returns status and body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        http(self.addr, method, path, headers, body)
    }

    /// Publishes through `POST /api/publish`; panics unless it returns 200.
    pub fn publish(&self, channel: &str, data: &Value) {
        let body = serde_json::json!({ "channel": channel, "data": data }).to_string();
        let (status, text) = self.http("POST", "/api/publish", &[], body.as_bytes());
        assert_eq!(status, 200, "publish failed: {text}");
    }

    /// Reads one sample from `/metrics`.
    pub fn metric(&self, series: &str) -> u64 {
        let (status, text) = self.http("GET", "/metrics", &[], b"");
        assert_eq!(status, 200);
        ringcast::metrics::value(&text, series).unwrap_or_else(|| panic!("no series {series}"))
    }

    /// Waits until `series` satisfies `pred`, re-reading `/metrics`; fails after [`TIMEOUT`].
    pub fn wait_metric(&self, series: &str, pred: impl Fn(u64) -> bool) -> u64 {
        let start = Instant::now();
        loop {
            let v = self.metric(series);
            if pred(v) {
                return v;
            }
            assert!(start.elapsed() < TIMEOUT, "{series} stuck at {v}");
            std::thread::yield_now();
        }
    }

    /// Sends a signal to the gateway.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking WebSocket client.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

impl Client {
    /// Opens a WebSocket to `addr` + `path`.
    pub fn connect(addr: SocketAddr, path: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://{addr}{path}");
        let (ws, resp) = tungstenite::client(url.as_str(), stream).expect("handshake");
        assert_eq!(resp.status(), 101);
        Client { ws }
    }

    /// Sends a text message.
    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// Sends a JSON command.
    pub fn command(&mut self, cmd: Value) {
        self.send(&cmd.to_string());
    }

    /// The next data message (text or binary), skipping pings and pongs.
    pub fn recv(&mut self) -> Message {
        loop {
            match self.ws.read() {
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(m) => return m,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// The next text message.
    pub fn recv_text(&mut self) -> String {
        match self.recv() {
            Message::Text(t) => t.to_string(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// The next message as JSON.
    pub fn recv_json(&mut self) -> Value {
        let text = self.recv_text();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Subscribes with a command and waits for the ack.
    pub fn subscribe(&mut self, channel: &str) {
        self.command(serde_json::json!({"op": "subscribe", "channel": channel}));
        let ack = self.recv_json();
        assert_eq!(ack["op"], "subscribed", "{ack}");
    }

    /// Reads until the server's close frame and returns its code; fails on EOF without one.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(frame))) => return u16::from(frame.code),
                Ok(Message::Close(None)) => return u16::from(CloseCode::Status),
                Ok(_) => continue,
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
        }
    }
}

/// A plain HTTP/1.1 request with `Connection: close`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&out)
}

/// Splits a raw HTTP response into status and body.
pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
