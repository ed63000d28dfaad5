//! The limits a hostile client meets at the edge, each with its documented answer and its
//! `ringcast_refused_total{reason=…}` counter: the per-IP connection cap (429 before the
//! upgrade, the slot given back when a client leaves), the per-IP handshake rate (429), the
//! per-connection command rate (`rate_limited` error replies, the connection stays open) and
//! the request-head deadline against slowloris (408, even while bytes trickle in).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Gateway, TIMEOUT, parse_response};
use serde_json::json;

/// Status of `GET /healthz` on a fresh connection.
fn healthz(addr: SocketAddr) -> u16 {
    common::http(addr, "GET", "/healthz", &[], b"").0
}

#[test]
fn the_per_ip_cap_answers_429_before_the_upgrade_and_frees_slots_on_close() {
    let gw = Gateway::start(&["--shards", "2", "--max-connections-per-ip", "2"]);
    let a = gw.ws("/ws");
    let _b = gw.ws("/ws");
    // Both slots of 127.0.0.1 are taken: a third upgrade, or any request, gets 429.
    let (status, body) = common::http(
        gw.addr,
        "GET",
        "/ws",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(healthz(gw.addr), 429);
    drop(a);
    // The slot comes back once the gateway has seen the client leave.
    let start = Instant::now();
    while healthz(gw.addr) != 200 {
        assert!(
            start.elapsed() < TIMEOUT,
            "a closed client's slot never came back"
        );
    }
    // Reading the counter takes the free slot too: it is served.
    let refused = gw.metric("ringcast_refused_total{reason=\"per_ip_connections\"}");
    assert!(refused >= 2, "{refused}");
    // The log arrives on its own pipe, read by another thread: wait for the line rather than
    // look once (on a busy machine the 429 can be read before the line is).
    gw.wait_log(&["connection refused", "127.0.0.1", "per_ip"], 1);
}

#[test]
fn the_handshake_rate_per_ip_refuses_bursts_with_429() {
    let gw = Gateway::start(&["--shards", "2", "--handshake-rate-per-ip", "1/3"]);
    let start = Instant::now();
    let statuses: Vec<u16> = (0..10).map(|_| healthz(gw.addr)).collect();
    let elapsed = start.elapsed().as_secs();
    let served = statuses.iter().filter(|&&s| s == 200).count() as u64;
    let refused = statuses.iter().filter(|&&s| s == 429).count() as u64;
    assert_eq!(served + refused, 10, "{statuses:?}");
    // The burst of 3, plus one a second for however long the ten took (a busy machine).
    assert!(
        served >= 3 && served <= 3 + elapsed + 1,
        "{statuses:?} in {elapsed}s"
    );
    assert!(refused > 0 || elapsed >= 6, "{statuses:?} in {elapsed}s");
    // Another address has a bucket of its own: 127.0.0.2 is loopback too.
    let mut other = common::connect_from([127, 0, 0, 2], gw.addr);
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = other.read_to_end(&mut out);
    assert_eq!(parse_response(&out).0, 200);
    let start = Instant::now();
    loop {
        let (status, text) = common::http(gw.addr, "GET", "/metrics", &[], b"");
        if status == 200 {
            let n = ringcast::metrics::value(
                &text,
                "ringcast_refused_total{reason=\"handshake_rate\"}",
            );
            assert!(n.is_some_and(|n| n >= refused), "{n:?} < {refused}");
            break;
        }
        assert_eq!(status, 429);
        assert!(start.elapsed() < TIMEOUT, "the bucket never refilled");
    }
}

#[test]
fn the_command_rate_answers_rate_limited_and_keeps_the_connection() {
    let gw = Gateway::start(&["--shards", "1", "--command-rate", "1/5"]);
    let mut c = gw.ws("/ws");
    let start = Instant::now();
    for id in 0..20 {
        c.command(json!({"op": "ping", "id": id}));
    }
    let mut pongs = 0u64;
    let mut limited = 0u64;
    for id in 0..20 {
        let reply = c.recv_json();
        assert_eq!(reply["id"], id, "{reply}");
        match reply["op"].as_str() {
            Some("pong") => pongs += 1,
            _ => {
                assert_eq!(reply["code"], "rate_limited", "{reply}");
                limited += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs();
    assert!(
        pongs >= 5 && pongs <= 5 + elapsed + 1,
        "{pongs} pongs in {elapsed}s"
    );
    assert_eq!(
        gw.metric("ringcast_refused_total{reason=\"command_rate\"}"),
        limited
    );
    // Still open: once the bucket refills, commands run again.
    let start = Instant::now();
    loop {
        c.command(json!({"op": "ping", "id": "again"}));
        if c.recv_json()["op"] == "pong" {
            break;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the command bucket never refilled"
        );
    }
}

#[test]
fn slowloris_is_cut_off_at_head_timeout_while_bytes_trickle_in() {
    // idle-timeout (input silence) is longer than the test: only the head deadline can fire.
    let gw = Gateway::start(&[
        "--shards",
        "1",
        "--head-timeout",
        "500ms",
        "--idle-timeout",
        "60s",
    ]);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // The attack: one header byte at a time, never the end of the head. Each read waits at
    // most 50 ms for the gateway's answer, then the next byte goes out.
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0; 1024];
    loop {
        assert!(start.elapsed() < TIMEOUT, "slowloris never cut off");
        if s.write_all(b"X").is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let (status, body) = parse_response(&out);
    assert_eq!(status, 408, "{body}");
    assert_eq!(
        gw.metric("ringcast_refused_total{reason=\"head_timeout\"}"),
        1
    );
    // A client that connects and never speaks is cut off too, without an answer.
    let mut silent = TcpStream::connect(gw.addr).unwrap();
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(
        gw.metric("ringcast_refused_total{reason=\"head_timeout\"}"),
        2
    );
    // Clients that send whole requests are served as before.
    assert_eq!(healthz(gw.addr), 200);
}

#[test]
fn half_open_handshakes_cannot_hold_the_accept_path() {
    // 20 connection slots on one shard, a 500 ms head deadline. An attacker opens 20
    // connections and never sends a byte: while they last, a real client is refused (the
    // shard is full), but the deadline frees every slot, and the real client is served.
    let gw = Gateway::start(&[
        "--shards",
        "1",
        "--max-connections",
        "20",
        "--head-timeout",
        "500ms",
        "--idle-timeout",
        "60s",
    ]);
    let start = Instant::now();
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| {
            let s = TcpStream::connect(gw.addr).unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s
        })
        .collect();
    // Until the deadline frees them, a newcomer is accepted and closed at once (the cap), or
    // served if the slots were already freed; either way it is never left waiting.
    let mut refused_while_held = false;
    loop {
        let (status, _) = common::http(gw.addr, "GET", "/healthz", &[], b"");
        if status == 200 {
            break;
        }
        refused_while_held = true;
        assert!(
            start.elapsed() < TIMEOUT,
            "the silent connections were never cut off"
        );
    }
    let held_for = start.elapsed();
    assert!(
        refused_while_held || held_for >= Duration::from_millis(500),
        "a client was served while 20 silent connections held every slot"
    );
    for mut s in silent {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "a silent connection got {rest:?}");
    }
    assert!(gw.metric("ringcast_refused_total{reason=\"head_timeout\"}") >= 20);
}
