//! Shared test harness: the real `ringcast` binary on an ephemeral port, real WebSocket clients
//! (tungstenite over blocking std sockets with read timeouts), and small HTTP helpers.
//!
//! No fixed ports and no sleeps: the gateway binds port 0 and tests learn the port from its
//! `listening addr=` log line; clients wait for acks or markers, never for time to pass.
#![allow(dead_code)]

pub mod browser;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// A file name in the temp directory, unique to this test process and call, removed on drop
/// (e.g. a gateway's SQLite file, so parallel tests never share one or write in the checkout).
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(tag: &str) -> TempPath {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TempPath(
            std::env::temp_dir().join(format!("ringcast-test-{}-{n}-{tag}", std::process::id())),
        )
    }

    /// `--route` value setting `route.key` to this path.
    pub fn route_arg(&self, route: &str, key: &str) -> String {
        format!("{route}.{key}={}", self.0.display())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

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
        Gateway::start_with_env(args, &[])
    }

    /// [`Gateway::start`] with extra environment variables. The variables the configuration
    /// reads (`RINGCAST_*`, `REDIS_*`, `WS_*`) are removed from the child first, so the test
    /// runner's own environment cannot leak in; `env` adds back what the test means to set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
        hermetic(&mut cmd).envs(env.iter().copied());
        Gateway::start_command(&mut cmd, args)
    }

    /// [`Gateway::start`] from a prepared `ringcast` command (one with a `pre_exec` hook, say);
    /// the caller applies [`hermetic`] and any environment.
    pub fn start_command(cmd: &mut Command, args: &[&str]) -> Gateway {
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
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

    /// `--preset weppcloud` against `redis` (host and port; each preset source keeps its db),
    /// both routes on free loopback ports, two shards, then `extra`.
    pub fn weppcloud(redis: &RedisServer, extra: &[&str]) -> Gateway {
        Gateway::weppcloud_at(&format!("redis://127.0.0.1:{}", redis.port), extra)
    }

    /// [`Gateway::weppcloud`] against the Redis (or Redis Cluster) at `base`.
    pub fn weppcloud_at(base: &str, extra: &[&str]) -> Gateway {
        let mut args = vec![
            "--shards",
            "2",
            "--preset",
            "weppcloud",
            "--redis",
            base,
            "--route",
            "preflight.listen=127.0.0.1:0",
            "--route",
            "status.listen=127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Gateway::start(&args)
    }

    /// `--preset bess` against `redis` (its URL's db 0), the route on a free loopback port, two
    /// shards, then `extra`.
    pub fn bess(redis: &RedisServer, extra: &[&str]) -> Gateway {
        Gateway::bess_at(&format!("redis://127.0.0.1:{}", redis.port), extra)
    }

    /// [`Gateway::bess`] against the Redis (or Redis Cluster) at `url`.
    pub fn bess_at(url: &str, extra: &[&str]) -> Gateway {
        let mut args = vec![
            "--shards",
            "2",
            "--preset",
            "bess",
            "--redis",
            url,
            "--route",
            "bess.listen=127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Gateway::start(&args)
    }

    /// The address route `name` listens on, from its `route ready` log line (logged before
    /// `listening addr=`, so it is there once `start` returned).
    pub fn route_addr(&self, name: &str) -> SocketAddr {
        let log = self.log.lock().unwrap();
        let needle = format!("route ready name={name} ");
        let line = log
            .iter()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no route {name} in {log:?}"));
        let addr = line
            .split("listen=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("listen= in the route line");
        addr.parse().expect("route address")
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

    /// Waits until `times` log lines each contain every one of `needles`; returns the last of
    /// them. Fails after [`TIMEOUT`], showing the log.
    pub fn wait_log(&self, needles: &[&str], times: usize) -> String {
        let start = Instant::now();
        loop {
            {
                let log = self.log.lock().unwrap();
                let mut hits = log.iter().filter(|l| needles.iter().all(|n| l.contains(n)));
                if let Some(line) = hits.nth(times.saturating_sub(1)) {
                    return line.clone();
                }
                assert!(
                    start.elapsed() < TIMEOUT,
                    "log never had {times}× {needles:?}: {log:?}"
                );
            }
            std::thread::yield_now();
        }
    }

    /// One shard against the Redis at `url`, retrying a refused connection every 200 ms at
    /// most (the fault tests: a wrong password, a restarted server).
    pub fn redis_fast_retry(url: &str) -> Gateway {
        Gateway::start(&[
            "--shards",
            "1",
            "--redis",
            url,
            "--redis-backoff-max",
            "200ms",
        ])
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

/// Removes the variables the configuration reads (`RINGCAST_*`, `REDIS_*`, `WS_*`,
/// `CANADA_ADDR`) from a child's environment, so the test runner's own cannot leak in. One
/// exception: `RINGCAST_IO_BACKEND` is kept, to run any test's gateways on the epoll backend.
pub fn hermetic(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let ours = ["RINGCAST_", "REDIS_", "WS_", "ESS_"];
        // RINGCAST_IO_BACKEND passes through, so `RINGCAST_IO_BACKEND=epoll cargo test` runs
        // the suite's gateways on the epoll backend (scripts/test does, for a subset).
        if name == "RINGCAST_IO_BACKEND" {
            continue;
        }
        if ours.iter().any(|prefix| name.starts_with(prefix)) || name == "CANADA_ADDR" {
            cmd.env_remove(name);
        }
    }
    cmd
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

// ---------------------------------------------------------------------------------------------
// Raw WebSocket and HTTP helpers, for input a well-behaved client library refuses to produce.
// ---------------------------------------------------------------------------------------------

/// A masked client frame (RFC 6455 §5.3) built by hand: any opcode, any payload (invalid UTF-8
/// included), fragmented or not.
/// Lets more than `STREAM_GAP_MS` pass after the shard's last direct write of a connection
/// (decision 0016: one written more recently is being sent a stream, and its next lone frame
/// goes to its write loop). Call it after a read that shows that write done: it is the
/// condition under test, not a synchronisation, and a sleep is never shorter than asked.
pub fn outlast_the_stream_gap() {
    let gap = u64::from(ringcast::shard::STREAM_GAP_MS);
    std::thread::sleep(Duration::from_millis(gap + 5));
}

pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x1f, 0xc3, 0x07];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 65_535 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// One frame the server sent, as read off a raw socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The FIN bit.
    pub fin: bool,
    /// The opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong).
    pub opcode: u8,
    /// The (unmasked) payload.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A WebSocket spoken by hand over a plain `TcpStream`: the handshake, then raw frames.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Connects and performs the opening handshake by hand; checks the `101` and the accept key.
    pub fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let stream = TcpStream::connect(addr).expect("connect");
        RawWs::handshake(stream, addr, path)
    }

    /// Performs the opening handshake on an already connected stream.
    pub fn handshake(mut stream: TcpStream, addr: SocketAddr, path: &str) -> RawWs {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).expect("read handshake response");
            assert!(
                n > 0,
                "EOF during handshake: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        assert!(
            head.to_ascii_lowercase().contains(&format!(
                "sec-websocket-accept: {}",
                accept.to_ascii_lowercase()
            )),
            "{head}"
        );
        buf.drain(..head_end);
        RawWs { stream, buf }
    }

    /// Writes raw bytes (frames built with [`client_frame`], or garbage).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The socket and the bytes read past the last frame returned, for a caller that drives
    /// many sockets itself (e.g. with poll(2)).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// The next server frame; `None` at a clean EOF between frames. Panics on a read error,
    /// a timeout, or EOF inside a frame.
    pub fn read_frame(&mut self) -> Option<RawFrame> {
        self.try_read_frame().expect("read frame")
    }

    /// [`RawWs::read_frame`] returning a read error or timeout (`WouldBlock`) instead of
    /// panicking, for callers that say what they were waiting for.
    pub fn try_read_frame(&mut self) -> std::io::Result<Option<RawFrame>> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                assert!(self.buf.is_empty(), "EOF inside a frame: {:?}", self.buf);
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Parses one unmasked server frame from the front of `buf`: the frame and its length.
pub fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return None;
    }
    let frame = RawFrame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0f,
        payload: buf[header..header + len].to_vec(),
    };
    Some((frame, header + len))
}

/// Writes `request` as is and reads until the server closes. A reset after the response (the
/// server closed with input unread) is tolerated: whatever arrived before it is returned.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request).expect("write request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (give it lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one response from the front of `raw`, using `content-length` to find its end; also
/// returns how many bytes it took. `None` while incomplete.
pub fn parse_http_response(raw: &[u8]) -> Option<(Response, usize)> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&raw[..head_end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("content-length"));
    if raw.len() < head_end + len {
        return None;
    }
    let body = raw[head_end..head_end + len].to_vec();
    Some((
        Response {
            status,
            headers,
            body,
        },
        head_end + len,
    ))
}

/// Reads exactly one response from a kept-alive connection; `buf` keeps any bytes past it.
pub fn read_http_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Response {
    loop {
        if let Some((resp, used)) = parse_http_response(buf) {
            buf.drain(..used);
            return resp;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "EOF before a whole response: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs `ringcast ARGS` (hermetic, no stdin) to its exit, failing after [`TIMEOUT`]; returns the
/// exit code and stderr. For start-up refusals, whose one or two lines fit in the pipe, so
/// waiting before reading cannot deadlock.
pub fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = hermetic(&mut Command::new(env!("CARGO_BIN_EXE_ringcast")))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringcast");
    let status = wait_exit(&mut child, TIMEOUT);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status.code(), stderr)
}

/// Waits for `child` to exit, at most `within`; panics if it is still running. Blocks on a
/// pidfd (no polling); falls back to polling `try_wait` where pidfds are unavailable.
pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    try_wait_exit(child, within).unwrap_or_else(|| panic!("process still running after {within:?}"))
}

/// [`wait_exit`] without the panic: `None` if `child` is still running after `within` (for
/// clean-ups in `Drop`, which must not panic).
pub fn try_wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    // SAFETY: pidfd_open(2) on our own child's pid; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) } as i32;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        if fd >= 0 {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one valid pollfd; the pidfd becomes readable at exit.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        } else {
            std::thread::yield_now();
        }
    };
    if fd >= 0 {
        // SAFETY: closing the pidfd we opened above.
        unsafe { libc::close(fd) };
    }
    status
}

impl Client {
    /// Opens a WebSocket over an already connected stream (for sockets with custom options).
    pub fn over(stream: TcpStream, addr: SocketAddr, path: &str) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://{addr}{path}");
        let (ws, resp) = tungstenite::client(url.as_str(), stream).expect("handshake");
        assert_eq!(resp.status(), 101);
        Client { ws }
    }
}

/// A real `redis-server` child on a free port, killable and restartable on the same port.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` with keyspace notifications on (`KA`) and no persistence.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts `redis-server` with extra arguments (e.g. `["--requirepass", "pw"]`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("ringcast-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = RedisServer {
            child: None,
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--notify-keyspace-events", "KA"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < TIMEOUT, "redis-server did not start");
            std::thread::yield_now();
        }
    }

    /// `redis://127.0.0.1:PORT/db`.
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` to the server (SIGSTOP / SIGCONT to stall it).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Starts again on the same port with other extra arguments (a new password, say).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    /// Starts again on the same port (the data is gone: no persistence).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs one command on a fresh connection and returns the reply.
    pub fn cmd(&self, args: &[&str]) -> Resp {
        let mut c = RedisClient::connect(self.port);
        c.cmd(args)
    }

    /// Waits until `PUBSUB NUMSUB channel` equals `n`.
    pub fn wait_numsub(&self, channel: &str, n: i64) {
        let start = Instant::now();
        loop {
            let got = match self.cmd(&["PUBSUB", "NUMSUB", channel]) {
                Resp::Array(items) => match items.get(1) {
                    Some(Resp::Int(v)) => *v,
                    _ => -1,
                },
                _ => -1,
            };
            if got == n {
                return;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "NUMSUB {channel} stuck at {got}, want {n}"
            );
            std::thread::yield_now();
        }
    }

    /// Waits until `PUBSUB NUMPAT` equals `n`.
    pub fn wait_numpat(&self, n: i64) {
        let start = Instant::now();
        loop {
            if self.cmd(&["PUBSUB", "NUMPAT"]) == Resp::Int(n) {
                return;
            }
            assert!(start.elapsed() < TIMEOUT, "NUMPAT never reached {n}");
            std::thread::yield_now();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago (bind to 0, read it, release it).
///
/// Picked below the kernel's ephemeral range (`ip_local_port_range`, 32768+ by default), so a
/// restarted server gets its port back even while other tests open thousands of client
/// sockets, whose local ports come from that range.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Spread parallel test binaries apart, then walk.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 600) as u16 * 20;
    for _ in 0..12_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A RESP reply, as the tests need it.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

/// A minimal blocking RESP2 client for driving the test's Redis.
pub struct RedisClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RedisClient {
    pub fn connect(port: u16) -> RedisClient {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect redis");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        RedisClient {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Sends one command without reading the reply (for pipelines).
    pub fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).unwrap();
    }

    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        self.send(args);
        self.read()
    }

    pub fn read(&mut self) -> Resp {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("redis reply");
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Resp::Simple(rest.to_string()),
            "-" => Resp::Error(rest.to_string()),
            ":" => Resp::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Resp::Bulk(None);
                }
                let mut buf = vec![0; n as usize + 2];
                self.reader.read_exact(&mut buf).unwrap();
                buf.truncate(n as usize);
                Resp::Bulk(Some(buf))
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                Resp::Array((0..n.max(0)).map(|_| self.read()).collect())
            }
            other => panic!("unexpected RESP type {other}"),
        }
    }
}

/// A TCP connection to `addr` from the loopback address `src` (any of 127.0.0.0/8 works on
/// Linux), so one test can play several client addresses.
pub fn connect_from(src: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((src, 0)).into())
        .expect("bind a loopback source address");
    socket.connect(&addr.into()).expect("connect");
    let s = TcpStream::from(socket);
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}
