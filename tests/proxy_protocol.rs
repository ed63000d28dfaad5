//! The PROXY protocol on a listener that expects it (`--proxy-protocol`, route key
//! `proxy_protocol = true`): v1 and v2 headers give the connection the client address they
//! carry (seen through `--max-connections-per-ip`, since every test socket comes from
//! 127.0.0.1), a v2 `LOCAL` header (haproxy's health checks) is served, and a missing, garbage
//! or slow header closes the connection with a log line naming the peer, counted in
//! `ringcast_refused_total{reason="proxy_header"}`, while the gateway keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use common::{Client, Gateway, TIMEOUT, parse_response};
use serde_json::json;

/// A v1 header from `src` (an IPv4 address) to the gateway.
fn v1(src: &str) -> Vec<u8> {
    format!("PROXY TCP4 {src} 127.0.0.1 40000 8080\r\n").into_bytes()
}

/// A v2 header: `command` 1 (PROXY) from `src`, or 0 (LOCAL) with no addresses.
fn v2(command: u8, src: [u8; 4]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x20 | command);
    if command == 0 {
        out.extend_from_slice(&[0x00, 0, 0]);
        return out;
    }
    out.extend_from_slice(&[0x11, 0, 12]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&41_000u16.to_be_bytes());
    out.extend_from_slice(&8_080u16.to_be_bytes());
    out
}

/// Connects and writes `header` first.
fn connect_with(addr: SocketAddr, header: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(header).expect("write header");
    s
}

/// A WebSocket on `/ws` behind `header`.
fn ws_with(addr: SocketAddr, header: &[u8]) -> Client {
    Client::over(connect_with(addr, header), addr, "/ws")
}

/// `header`, then a WebSocket upgrade request; the status and body of the answer.
fn upgrade_status(addr: SocketAddr, header: &[u8]) -> (u16, String) {
    let mut s = connect_with(addr, header);
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("write request");
    let mut out = Vec::new();
    let mut chunk = [0; 4096];
    // Up to the end of the head: a 101 leaves the socket open.
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    parse_response(&out)
}

/// Reads one metric through a v1 header from 127.0.0.1 (the listener wants one).
fn metric(addr: SocketAddr, series: &str) -> u64 {
    let mut s = connect_with(addr, &v1("127.0.0.1"));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (status, text) = parse_response(&out);
    assert_eq!(status, 200, "{text}");
    ringcast::metrics::value(&text, series).unwrap_or_else(|| panic!("no series {series}"))
}

/// Waits until the gateway closes `s` (EOF or reset) without sending anything; returns how
/// long that took.
fn closed_silently(mut s: TcpStream) -> std::time::Duration {
    let start = Instant::now();
    let mut buf = [0; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected a silent close, got {:?}", &buf[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no close within {TIMEOUT:?}: {e}"),
    }
    start.elapsed()
}

#[test]
fn v1_and_v2_headers_carry_the_client_address_into_per_ip_limits() {
    let gw = Gateway::start(&[
        "--shards",
        "2",
        "--proxy-protocol",
        "--max-connections-per-ip",
        "1",
    ]);
    // Every socket below comes from 127.0.0.1; only the headers tell the clients apart.
    let mut a = ws_with(gw.addr, &v1("203.0.113.5"));
    let (status, body) = upgrade_status(gw.addr, &v1("203.0.113.5"));
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too many connections"), "{body}");
    let line = gw.wait_log(&["connection refused", "203.0.113.5"], 1);
    assert!(line.contains("per_ip_connections"), "{line}");

    let mut b = ws_with(gw.addr, &v2(1, [198, 51, 100, 7]));
    assert_eq!(upgrade_status(gw.addr, &v2(1, [198, 51, 100, 7])).0, 429);
    assert_eq!(
        metric(
            gw.addr,
            "ringcast_refused_total{reason=\"per_ip_connections\"}"
        ),
        2
    );

    // Both clients are served, and bytes after the header were not lost.
    a.subscribe("edge");
    b.subscribe("edge");
    let mut s = connect_with(gw.addr, &v1("127.0.0.1"));
    let body = json!({"channel": "edge", "data": 1}).to_string();
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(parse_response(&out).0, 200);
    assert_eq!(a.recv_json(), json!({"channel": "edge", "data": 1}));
    assert_eq!(b.recv_json(), json!({"channel": "edge", "data": 1}));

    // A client that leaves gives its address's slot back.
    drop(a);
    let start = Instant::now();
    while upgrade_status(gw.addr, &v1("203.0.113.5")).0 != 101 {
        assert!(
            start.elapsed() < TIMEOUT,
            "the slot of 203.0.113.5 never came back"
        );
    }
}

#[test]
fn a_v2_local_header_keeps_the_socket_address_and_is_served() {
    let gw = Gateway::start(&["--shards", "1", "--proxy-protocol"]);
    let mut s = connect_with(gw.addr, &v2(0, [0; 4]));
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(
        parse_response(&out).0,
        200,
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        metric(gw.addr, "ringcast_refused_total{reason=\"proxy_header\"}"),
        0
    );
}

#[test]
fn a_missing_or_garbage_header_closes_the_connection_and_is_counted() {
    let gw = Gateway::start(&["--shards", "1", "--proxy-protocol"]);
    // A plain request where the header should be.
    let s = connect_with(
        gw.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    closed_silently(s);
    let line = gw.wait_log(&["PROXY protocol header refused", "127.0.0.1"], 1);
    assert!(line.contains("not a PROXY header"), "{line}");

    // Garbage, a v1 line with missing fields, a v2 header with a bad version.
    let mut bad_v2 = v2(1, [1, 2, 3, 4]);
    bad_v2[12] = 0x31;
    for garbage in [
        &b"\x00\xff\x13\x37garbage\r\n\r\n"[..],
        b"PROXY TCP4 10.0.0.1\r\n",
        &bad_v2,
    ] {
        closed_silently(connect_with(gw.addr, garbage));
    }
    assert_eq!(
        metric(gw.addr, "ringcast_refused_total{reason=\"proxy_header\"}"),
        4
    );
    // The gateway keeps serving clients that send a header.
    let mut c = ws_with(gw.addr, &v1("192.0.2.10"));
    c.command(json!({"op": "ping", "id": 1}));
    assert_eq!(c.recv_json(), json!({"op": "pong", "id": 1}));
}

#[test]
fn a_header_not_complete_within_head_timeout_is_cut_off() {
    let gw = Gateway::start(&[
        "--shards",
        "1",
        "--proxy-protocol",
        "--head-timeout",
        "300ms",
    ]);
    // Half a v1 line, then nothing.
    let slow = connect_with(gw.addr, b"PROXY TCP4 192.0.2.1 ");
    let took = closed_silently(slow);
    assert!(took < TIMEOUT, "closed after {took:?}");
    gw.wait_log(&["PROXY protocol header refused", "within head-timeout"], 1);
    // A connection that sends nothing at all is cut off too.
    let silent = TcpStream::connect(gw.addr).unwrap();
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    closed_silently(silent);
    assert_eq!(
        metric(gw.addr, "ringcast_refused_total{reason=\"proxy_header\"}"),
        2
    );
}

#[test]
fn a_route_with_proxy_protocol_expects_it_and_the_native_listener_does_not() {
    let gw = Gateway::start(&[
        "--shards",
        "1",
        "--route",
        "edge.listen=127.0.0.1:0",
        "--route",
        "edge.path=/edge",
        "--route",
        "edge.profile=native",
        "--route",
        "edge.proxy_protocol=true",
    ]);
    let route = gw.route_addr("edge");
    // The route: a header first, then the upgrade.
    let s = connect_with(route, &v1("192.0.2.33"));
    let mut c = Client::over(s, route, "/edge");
    c.command(json!({"op": "ping", "id": 2}));
    assert_eq!(c.recv_json(), json!({"op": "pong", "id": 2}));
    closed_silently(connect_with(
        route,
        b"GET /edge HTTP/1.1\r\nHost: x\r\n\r\n",
    ));
    // The native listener takes plain requests, as before, and reads a header as a bad one.
    let raw = common::http_raw(
        gw.addr,
        &[
            v1("192.0.2.34"),
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ]
        .concat(),
    );
    assert_eq!(
        parse_response(&raw).0,
        400,
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(
        gw.metric("ringcast_refused_total{reason=\"proxy_header\"}"),
        1
    );
}
