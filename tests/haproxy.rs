//! Two ringcast nodes behind a real haproxy running `deploy/haproxy.cfg`: one Redis, health checks
//! on `/healthz`, WebSocket clients spread over both nodes, a publish reaching every client
//! whichever node it is on, and a node stopped with SIGTERM whose clients get 1001, reconnect
//! through haproxy to the survivor and receive the next publish. haproxy sends a PROXY v2 header
//! (`send-proxy-v2`) and the nodes run with `--proxy-protocol`: a node's per-IP cap and its log
//! see each client's own address (clients bound to 127.0.0.2 and 127.0.0.3), not haproxy's.
//!
//! Needs `haproxy` on `PATH` (`scripts/test` installs it with apt). Without it the test prints a
//! skip line, except under `CI=true`, where it fails.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{Client, Gateway, RedisClient, RedisServer, Resp, TIMEOUT, TempPath, parse_response};
use serde_json::json;
use tungstenite::Message;

/// Clients connected through haproxy.
const CLIENTS: usize = 200;

/// True when haproxy can run. Otherwise prints a skip line and returns false, or, under
/// `CI=true`, panics: CI must never pass by skipping.
fn available(test: &str) -> bool {
    let ok = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: no working `haproxy` on PATH. Under CI=true this is a failure; scripts/test installs it."
        );
    }
    eprintln!(
        "SKIPPED {test}: no working `haproxy` on PATH; scripts/test installs it (apt-get install haproxy)"
    );
    false
}

/// A haproxy in the foreground (`-db`) with a generated configuration, killed on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    stats: TempPath,
    _config: TempPath,
    log: Arc<Mutex<Vec<String>>>,
}

impl Haproxy {
    /// Runs `deploy/haproxy.cfg` with these changes: it binds a free loopback port, balances
    /// `servers` (named `a`, `b`, …) instead of its own, health-checks every 200 ms so the test
    /// does not wait for seconds, and opens a stats socket.
    fn start(servers: &[SocketAddr]) -> Haproxy {
        let port = common::free_port();
        let stats = TempPath::new("haproxy.sock");
        let config = TempPath::new("haproxy.cfg");
        let deployed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg"))
                .expect("read deploy/haproxy.cfg");
        let replace = |cfg: String, from: &str, to: &str| {
            assert!(cfg.contains(from), "deploy/haproxy.cfg has no {from:?}");
            cfg.replacen(from, to, 1)
        };
        let mut cfg = replace(
            deployed,
            "\nglobal\n",
            &format!(
                "\nglobal\n    stats socket {} mode 600 level admin\n",
                stats.0.display()
            ),
        );
        cfg = replace(cfg, "bind :8080", &format!("bind 127.0.0.1:{port}"));
        cfg = replace(cfg, "inter 2s fall 3 rise 2", "inter 200ms fall 2 rise 1");
        let mut cfg: String = cfg
            .lines()
            .filter(|l| !l.trim_start().starts_with("server "))
            .map(|l| format!("{l}\n"))
            .collect();
        for (i, addr) in servers.iter().enumerate() {
            cfg.push_str(&format!("    server {} {addr}\n", server_name(i)));
        }
        std::fs::write(&config.0, cfg).expect("write haproxy.cfg");
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn haproxy");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut haproxy = Haproxy {
            child,
            addr,
            stats,
            _config: config,
            log,
        };
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            let exited = haproxy.child.try_wait().ok().flatten();
            assert!(
                exited.is_none(),
                "haproxy exited ({exited:?}): {:?}",
                haproxy.log.lock().unwrap()
            );
            assert!(
                start.elapsed() < TIMEOUT,
                "haproxy did not listen: {:?}",
                haproxy.log.lock().unwrap()
            );
            std::thread::yield_now();
        }
        haproxy
    }

    /// The `status` column of each server of backend `ringcast` (`UP`, `DOWN`, …), from
    /// `show stat` on the stats socket.
    fn statuses(&self) -> Vec<(String, String)> {
        let Ok(mut s) = UnixStream::connect(&self.stats.0) else {
            return Vec::new();
        };
        s.write_all(b"show stat\n").expect("write stats socket");
        let mut csv = String::new();
        s.read_to_string(&mut csv).expect("read stats socket");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
            return Vec::new();
        };
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > st && f[px] == "ringcast")
            .filter(|f| f[sv] != "FRONTEND" && f[sv] != "BACKEND")
            .map(|f| (f[sv].to_string(), f[st].to_string()))
            .collect()
    }

    /// Waits until haproxy's health checks report `want` (one status per server, in order).
    fn wait_statuses(&self, want: &[&str]) {
        let start = Instant::now();
        loop {
            let got = self.statuses();
            let matches = got.len() == want.len()
                && got.iter().zip(want).all(|((_, st), w)| st.starts_with(w));
            if matches {
                return;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "haproxy servers {got:?}, want {want:?}; log {:?}",
                self.log.lock().unwrap()
            );
            std::thread::yield_now();
        }
    }

    /// A WebSocket client through haproxy, subscribed to `news` (ack read).
    fn subscriber(&self) -> Client {
        let mut c = Client::connect(self.addr, "/ws?subscribe=news");
        assert_eq!(c.recv_json()["op"], "subscribed");
        c
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one metric from a node that expects a PROXY header, as a health check would (a v2
/// `LOCAL` header, then the request).
fn node_metric(node: &Gateway, series: &str) -> u64 {
    let mut s = TcpStream::connect(node.addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (status, text) = parse_response(&out);
    assert_eq!(status, 200, "{text}");
    ringcast::metrics::value(&text, series).unwrap_or_else(|| panic!("no series {series}"))
}

/// Waits until `series` on `node` satisfies `pred` ([`node_metric`]).
fn wait_node_metric(node: &Gateway, series: &str, pred: impl Fn(u64) -> bool) -> u64 {
    let start = Instant::now();
    loop {
        let v = node_metric(node, series);
        if pred(v) {
            return v;
        }
        assert!(start.elapsed() < TIMEOUT, "{series} stuck at {v}");
        std::thread::yield_now();
    }
}

fn server_name(i: usize) -> String {
    char::from(b'a' + i as u8).to_string()
}

/// Publishes `{"n": n}` on `news` with a plain Redis client; returns how many subscribers Redis
/// delivered it to (one per ringcast node).
fn publish(redis: &RedisServer, n: u64) -> Resp {
    let mut c = RedisClient::connect(redis.port);
    c.cmd(&["PUBLISH", "news", &json!({"n": n}).to_string()])
}

/// Every client's next message is the event `{"n": n}` on `news`.
fn all_receive(clients: &mut [Client], n: u64) {
    for c in clients {
        assert_eq!(c.recv_json(), json!({"channel": "news", "data": {"n": n}}));
    }
}

/// Waits until `count` of `clients` have received a close frame, using poll(2) so clients that
/// stay open cost nothing; returns the indexes of the closed ones with their close codes.
fn wait_closes(clients: &mut [Client], count: usize) -> Vec<(usize, u16)> {
    let start = Instant::now();
    let mut closed: Vec<(usize, u16)> = Vec::new();
    while closed.len() < count {
        let left = TIMEOUT.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "{} of {count} clients saw a close",
            closed.len()
        );
        let open: Vec<usize> = (0..clients.len())
            .filter(|i| !closed.iter().any(|(j, _)| j == i))
            .collect();
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|&i| libc::pollfd {
                fd: clients[i].ws.get_ref().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll(2) on descriptors of sockets owned by `clients`, alive for the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, left.as_millis() as i32) };
        for (pfd, &i) in fds.iter().zip(&open) {
            if pfd.revents == 0 {
                continue;
            }
            match clients[i].ws.read() {
                Ok(Message::Close(frame)) => {
                    closed.push((i, frame.map_or(1005, |f| u16::from(f.code))));
                }
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                other => panic!("client {i}: expected a close, got {other:?}"),
            }
        }
    }
    closed
}

#[test]
fn two_nodes_behind_haproxy_share_clients_and_take_over_on_stop() {
    if !available("two_nodes_behind_haproxy_share_clients_and_take_over_on_stop") {
        return;
    }
    let redis = RedisServer::start();
    let url = redis.url(0);
    // One shard each: two nodes, haproxy, Redis and the clients share a small machine.
    let node = || {
        Gateway::start(&[
            "--shards",
            "1",
            "--shutdown-timeout",
            "2s",
            "--redis",
            &url,
            "--proxy-protocol",
        ])
    };
    let mut a = node();
    let b = node();
    let haproxy = Haproxy::start(&[a.addr, b.addr]);
    haproxy.wait_statuses(&["UP", "UP"]);

    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| haproxy.subscriber()).collect();
    let on_a = wait_node_metric(&a, "ringcast_websockets", |v| v > 0);
    let on_b = wait_node_metric(&b, "ringcast_websockets", |v| v > 0);
    assert_eq!(on_a + on_b, CLIENTS as u64, "every client is on a node");
    eprintln!("haproxy spread {CLIENTS} clients: {on_a} on a, {on_b} on b");

    // Each node holds one Redis subscription, so one PUBLISH reaches both and every client.
    redis.wait_numsub("news", 2);
    assert_eq!(publish(&redis, 1), Resp::Int(2));
    all_receive(&mut clients, 1);

    // Stop node a as systemd or Docker would: its clients get 1001 through the tunnel.
    a.signal(libc::SIGTERM);
    let closed = wait_closes(&mut clients, on_a as usize);
    assert!(closed.iter().all(|&(_, code)| code == 1001), "{closed:?}");
    common::wait_exit(&mut a.child, TIMEOUT);
    haproxy.wait_statuses(&["DOWN", "UP"]);

    // They reconnect through haproxy and land on b, which now has everyone.
    for &(i, _) in &closed {
        clients[i] = haproxy.subscriber();
    }
    wait_node_metric(&b, "ringcast_websockets", |v| v == CLIENTS as u64);
    redis.wait_numsub("news", 1);
    assert_eq!(publish(&redis, 2), Resp::Int(1));
    all_receive(&mut clients, 2);
}

#[test]
fn behind_haproxy_per_ip_limits_and_logs_see_the_client_address() {
    if !available("behind_haproxy_per_ip_limits_and_logs_see_the_client_address") {
        return;
    }
    let node = Gateway::start(&[
        "--shards",
        "2",
        "--proxy-protocol",
        "--max-connections-per-ip",
        "1",
    ]);
    let haproxy = Haproxy::start(&[node.addr]);
    haproxy.wait_statuses(&["UP"]);
    // Every connection reaches the node from haproxy (127.0.0.1); only the PROXY header tells
    // 127.0.0.2 from 127.0.0.3. Without it the second client would be refused.
    let via = |src: [u8; 4]| common::connect_from(src, haproxy.addr);
    let mut two = Client::over(via([127, 0, 0, 2]), haproxy.addr, "/ws?subscribe=edge");
    assert_eq!(two.recv_json()["op"], "subscribed");
    let mut three = Client::over(via([127, 0, 0, 3]), haproxy.addr, "/ws?subscribe=edge");
    assert_eq!(three.recv_json()["op"], "subscribed");
    assert_eq!(node_metric(&node, "ringcast_websockets"), 2);

    // A second connection from 127.0.0.2 gets the node's 429 through haproxy.
    let mut again = via([127, 0, 0, 2]);
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = again.read_to_end(&mut out);
    assert_eq!(
        parse_response(&out).0,
        429,
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    let start = Instant::now();
    while !node
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("connection refused") && l.contains("peer=127.0.0.2:"))
    {
        assert!(
            start.elapsed() < TIMEOUT,
            "no refusal naming 127.0.0.2: {:?}",
            node.log.lock().unwrap()
        );
        std::thread::yield_now();
    }
    assert_eq!(
        node_metric(
            &node,
            "ringcast_refused_total{reason=\"per_ip_connections\"}"
        ),
        1
    );
    assert_eq!(
        node_metric(&node, "ringcast_refused_total{reason=\"proxy_header\"}"),
        0,
        "haproxy's health checks carry a header too"
    );
}
