//! Engine.IO v4 / Socket.IO v5 on a `socketio` route, at the protocol level, with raw HTTP
//! and raw WebSocket frames (the client libraries are in `tests/socketio_clients.rs`): the
//! handshake, long-polling GET and POST, engine.io's error bodies, the Origin rule and CORS, a
//! second GET, the heartbeat, the upgrade with its probe, and sessions handed to the shard that
//! owns them.
//!
//! The route has no radar feeds here, so it broadcasts the embedded broker's channels: a
//! `POST /api/publish` on the native listener is the event source. No sleeps as
//! synchronisation: tests wait on responses, frames and metrics.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Gateway, RawWs, TIMEOUT, TempPath, client_frame, read_http_response};
use serde_json::{Value, json};

/// `--preset superdarn` on free ports, two shards, its echo store in a temp file, then
/// `extra`.
fn gateway(extra: &[&str]) -> (Gateway, SocketAddr, TempPath) {
    let db = TempPath::new("engineio-echoes.sqlite");
    let db_arg = db.route_arg("superdarn", "echoes_db");
    let mut args = vec![
        "--shards",
        "2",
        "--preset",
        "superdarn",
        "--route",
        "superdarn.listen=127.0.0.1:0",
        "--route",
        &db_arg,
    ];
    args.extend_from_slice(extra);
    let gw = Gateway::start(&args);
    let addr = gw.route_addr("superdarn");
    (gw, addr, db)
}

/// One request on a fresh connection (so `SO_REUSEPORT` may give it to either shard).
fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> common::Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    read_http_response(&mut s, &mut buf)
}

fn body(r: &common::Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Opens a polling session; returns its sid and the open packet's JSON.
fn open_polling(addr: SocketAddr) -> (String, Value) {
    let r = request(
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling&t=x",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
    let text = body(&r);
    let open: Value = serde_json::from_str(text.strip_prefix('0').expect("open packet")).unwrap();
    let sid = open["sid"].as_str().expect("sid").to_owned();
    (sid, open)
}

fn poll(addr: SocketAddr, sid: &str) -> common::Response {
    request(
        addr,
        "GET",
        &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
        &[],
        b"",
    )
}

fn post(addr: SocketAddr, sid: &str, packets: &str) -> common::Response {
    request(
        addr,
        "POST",
        &format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
        &[("Content-Type", "text/plain;charset=UTF-8")],
        packets.as_bytes(),
    )
}

/// A polling session connected to the default namespace; returns the sid.
fn connected_polling(addr: SocketAddr) -> String {
    let (sid, _) = open_polling(addr);
    let r = post(addr, &sid, "40");
    assert_eq!((r.status, body(&r).as_str()), (200, "OK"));
    let r = poll(addr, &sid);
    let text = body(&r);
    let reply: Value = serde_json::from_str(text.strip_prefix("40").expect("40 reply")).unwrap();
    assert_eq!(reply["sid"].as_str().map(str::len), Some(20), "{text}");
    sid
}

#[test]
fn polling_handshake_connect_and_broadcasts() {
    let (gw, addr, _db) = gateway(&[]);
    let (sid, open) = open_polling(addr);
    assert_eq!(sid.len(), 20);
    assert_eq!(
        open,
        json!({"sid": sid, "upgrades": ["websocket"], "pingTimeout": 20000,
               "pingInterval": 25000, "maxPayload": 1000000})
    );
    let r = post(addr, &sid, "40");
    assert_eq!((r.status, body(&r).as_str()), (200, "OK"));
    let r = poll(addr, &sid);
    assert!(body(&r).starts_with("40{\"sid\":\""), "{}", body(&r));
    // Two events before the next GET: one body, the packets joined by the record separator.
    let frames_before = gw.metric("ringcast_frames_encoded_total");
    gw.publish("sas", &json!({"beam": 1}));
    gw.publish("sas/echoes", &json!({"total_echoes": 3}));
    gw.wait_metric("ringcast_frames_encoded_total", |n| n >= frames_before + 2);
    let r = poll(addr, &sid);
    assert_eq!(
        body(&r),
        "42[\"sas\",{\"beam\":1}]\u{1e}42[\"sas/echoes\",{\"total_echoes\":3}]"
    );
}

#[test]
fn a_parked_get_is_answered_by_the_next_broadcast() {
    let (gw, addr, _db) = gateway(&[]);
    let sid = connected_polling(addr);
    let waiter = std::thread::spawn(move || body(&poll(addr, &sid)));
    gw.wait_metric("ringcast_eio_parked_gets", |n| n == 1);
    gw.publish("news", &json!("hello"));
    assert_eq!(waiter.join().unwrap(), "42[\"news\",\"hello\"]");
}

#[test]
fn errors_are_engineio_bodies() {
    let (gw, addr, _db) = gateway(&[]);
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "GET",
            "/socket.io/?EIO=4&transport=carrier-pigeon",
            400,
            r#"{"code":0,"message":"Transport unknown"}"#,
        ),
        (
            "GET",
            "/socket.io/?EIO=3&transport=polling",
            400,
            r#"{"code":5,"message":"Unsupported protocol version"}"#,
        ),
        (
            "POST",
            "/socket.io/?EIO=4&transport=polling",
            400,
            r#"{"code":2,"message":"Bad handshake method"}"#,
        ),
        (
            "GET",
            "/socket.io/?EIO=4&transport=polling&sid=short",
            400,
            r#"{"code":1,"message":"Session ID unknown"}"#,
        ),
        (
            "GET",
            "/socket.io/?EIO=4&transport=websocket",
            400,
            r#"{"code":3,"message":"Bad request"}"#,
        ),
    ];
    for (method, target, status, expected) in cases {
        let r = request(addr, method, target, &[], b"");
        assert_eq!(
            (r.status, body(&r).as_str()),
            (*status, *expected),
            "{method} {target}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // A well-formed sid that names a live shard but no session: unknown, from its owner.
    let (sid, _) = open_polling(addr);
    let mut gone = sid.clone().into_bytes();
    gone[0] = if gone[0] == b'A' { b'B' } else { b'A' };
    let gone = String::from_utf8(gone).unwrap();
    let r = poll(addr, &gone);
    assert_eq!(
        (r.status, body(&r).as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
    // A bad packet in a POST closes the session: its sid is unknown afterwards.
    let r = post(addr, &sid, "9nonsense");
    assert_eq!(r.status, 400, "{}", body(&r));
    let r = poll(addr, &sid);
    assert_eq!(
        (r.status, body(&r).as_str()),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#)
    );
    assert!(gw.metric("ringcast_eio_bad_requests_total") >= 7);
}

#[test]
fn origin_allow_list_and_cors_headers() {
    let (gw, addr, _db) = gateway(&[]);
    // Not on the SuperDARN list (not even the server's own address): python-engineio's 400.
    let own = format!("http://{addr}");
    for origin in ["http://evil.example", own.as_str()] {
        let r = request(
            addr,
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            &[("Origin", origin)],
            b"",
        );
        assert_eq!(
            (r.status, body(&r).as_str()),
            (400, "\"Not an accepted origin.\"")
        );
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }
    assert_eq!(gw.metric("ringcast_eio_origin_refused_total"), 2);
    // On the list: served, with the Origin echoed and credentials allowed.
    let origin = "http://vt.superdarn.org";
    let r = request(
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[("Origin", origin)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    // A preflight names the methods and echoes the requested headers.
    let r = request(
        addr,
        "OPTIONS",
        "/socket.io/?EIO=4&transport=polling",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("OPTIONS, GET, POST")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );
    // Error answers carry them too (python-engineio adds them to every answer but the
    // Origin refusal), so a page can read why it was refused.
    let r = request(
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA",
        &[("Origin", origin)],
        b"",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    // The list is configurable: `*` allows any Origin.
    drop(gw);
    let (_gw, addr, _db) = gateway(&["--route", "superdarn.origins=*"]);
    let r = request(
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://evil.example")
    );
}

#[test]
fn a_second_get_while_one_is_parked_closes_the_session() {
    let (gw, addr, _db) = gateway(&[]);
    let (sid, _) = open_polling(addr);
    // Park the first GET on a connection we keep, then send the second.
    let mut first = TcpStream::connect(addr).unwrap();
    first.set_read_timeout(Some(TIMEOUT)).unwrap();
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    write!(first, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    gw.wait_metric("ringcast_eio_parked_gets", |n| n == 1);
    let second = poll(addr, &sid);
    assert_eq!(body(&second), r#"{"code":3,"message":"Bad request"}"#);
    let mut buf = Vec::new();
    let r = read_http_response(&mut first, &mut buf);
    assert_eq!(
        (r.status, body(&r).as_str()),
        (200, "1"),
        "the parked GET gets the close packet"
    );
    gw.wait_metric(
        "ringcast_eio_session_closes_total{reason=\"bad_request\"}",
        |n| n == 1,
    );
}

/// A WebSocket session's next text frame.
fn next_text(ws: &mut RawWs) -> String {
    loop {
        let f = ws.read_frame().expect("a frame, not EOF");
        match f.opcode {
            0x1 => return String::from_utf8(f.payload).expect("UTF-8"),
            0x9 | 0xA => continue,
            other => panic!("unexpected frame opcode {other}: {:?}", f.payload),
        }
    }
}

#[test]
fn websocket_only_session_connects_and_receives_the_shared_frame() {
    let (gw, addr, _db) = gateway(&[]);
    let mut ws = RawWs::connect(addr, "/socket.io/?EIO=4&transport=websocket");
    let open: Value = serde_json::from_str(next_text(&mut ws).strip_prefix('0').unwrap()).unwrap();
    assert_eq!(open["upgrades"], json!([]), "no upgrade from a WebSocket");
    ws.send_raw(&client_frame(true, 0x1, b"40"));
    assert!(next_text(&mut ws).starts_with("40{\"sid\":"));
    // A polling session too: one encoded frame serves both transports.
    let sid = connected_polling(addr);
    let encoded = gw.metric("ringcast_frames_encoded_total");
    gw.publish("kod", &json!({"beam": 7}));
    assert_eq!(next_text(&mut ws), r#"42["kod",{"beam":7}]"#);
    assert_eq!(body(&poll(addr, &sid)), r#"42["kod",{"beam":7}]"#);
    assert_eq!(gw.metric("ringcast_frames_encoded_total"), encoded + 1);
    // The client leaves with `41`, then closes: the session is gone.
    ws.send_raw(&client_frame(true, 0x1, b"41"));
    ws.send_raw(&client_frame(true, 0x8, &1000u16.to_be_bytes()));
    gw.wait_metric("ringcast_eio_sessions", |n| n == 1);
}

#[test]
fn heartbeat_pings_and_closes_a_silent_session() {
    let (gw, addr, _db) = gateway(&[
        "--route",
        "superdarn.ping_interval=300ms",
        "--route",
        "superdarn.pong_timeout=1500ms",
    ]);
    let mut ws = RawWs::connect(addr, "/socket.io/?EIO=4&transport=websocket");
    let open: Value = serde_json::from_str(next_text(&mut ws).strip_prefix('0').unwrap()).unwrap();
    assert_eq!(
        (open["pingInterval"].clone(), open["pingTimeout"].clone()),
        (json!(300), json!(1500))
    );
    ws.send_raw(&client_frame(true, 0x1, b"40"));
    assert!(next_text(&mut ws).starts_with("40"));
    // Answered pings keep it open (1.5 s to answer: room for a busy machine).
    for _ in 0..3 {
        assert_eq!(next_text(&mut ws), "2");
        ws.send_raw(&client_frame(true, 0x1, b"3"));
    }
    // An unanswered one closes it.
    assert_eq!(next_text(&mut ws), "2");
    let started = Instant::now();
    let f = loop {
        match ws.read_frame() {
            Some(f) if f.opcode == 0x1 => continue,
            other => break other,
        }
    };
    assert!(f.as_ref().is_none_or(|f| f.opcode == 0x8), "{f:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before the timeout"
    );
    gw.wait_metric(
        "ringcast_eio_session_closes_total{reason=\"ping_timeout\"}",
        |n| n == 1,
    );
    // Over polling the ping is the next GET's body.
    let (sid, _) = open_polling(addr);
    assert_eq!(body(&poll(addr, &sid)), "2");
}

#[test]
fn upgrade_probe_releases_the_parked_get_and_moves_the_session() {
    let (gw, addr, _db) = gateway(&[]);
    let sid = connected_polling(addr);
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    // A GET parked while the upgrade starts.
    let mut parked = TcpStream::connect(addr).unwrap();
    parked.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(parked, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    gw.wait_metric("ringcast_eio_parked_gets", |n| n == 1);
    let mut ws = RawWs::connect(
        addr,
        &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"),
    );
    ws.send_raw(&client_frame(true, 0x1, b"2probe"));
    assert_eq!(next_text(&mut ws), "3probe");
    let mut buf = Vec::new();
    let r = read_http_response(&mut parked, &mut buf);
    assert_eq!(
        (r.status, body(&r).as_str()),
        (200, "6"),
        "the noop releases the GET"
    );
    ws.send_raw(&client_frame(true, 0x1, b"5"));
    gw.wait_metric("ringcast_eio_upgrades_total", |n| n == 1);
    gw.publish("hok", &json!([1, 2]));
    assert_eq!(next_text(&mut ws), r#"42["hok",[1,2]]"#);
    // Polling is over for this session (engine.io's transport mismatch), and it lives on.
    let r = poll(addr, &sid);
    assert_eq!(
        (r.status, body(&r).as_str()),
        (400, r#"{"code":3,"message":"Bad request"}"#)
    );
    gw.publish("hok", &json!(3));
    assert_eq!(next_text(&mut ws), r#"42["hok",3]"#);
}

#[test]
fn requests_reach_the_shard_that_owns_their_session() {
    let (gw, addr, _db) = gateway(&[]);
    // Every request on a fresh connection: the kernel spreads them over both shards, so about
    // half of them arrive at the other shard and are handed over.
    let sids: Vec<String> = (0..12).map(|_| connected_polling(addr)).collect();
    gw.publish("sas", &json!(1));
    for sid in &sids {
        assert_eq!(body(&poll(addr, sid)), r#"42["sas",1]"#);
    }
    let handed = gw.metric("ringcast_eio_handoffs_total");
    assert!(handed > 0, "36 requests and not one handed over");
    assert_eq!(gw.metric("ringcast_eio_handoff_drops_total"), 0);
    // A kept-alive connection handed over stays with the owner: its next requests are local.
    let (sid, _) = open_polling(addr);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let mut buf = Vec::new();
    write!(
        s,
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n40"
    )
    .unwrap();
    assert_eq!(body(&read_http_response(&mut s, &mut buf)), "OK");
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(body(&read_http_response(&mut s, &mut buf)).starts_with("40{"));
    // Pipelined: the POST and the GET in one write still get two answers, in order.
    gw.publish("sas", &json!(2));
    write!(
        s,
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n3GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    assert_eq!(body(&read_http_response(&mut s, &mut buf)), "OK");
    assert_eq!(
        body(&read_http_response(&mut s, &mut buf)),
        r#"42["sas",2]"#
    );
    let mut rest = [0u8; 1];
    s.set_nonblocking(true).unwrap();
    let more = s.read(&mut rest);
    assert!(
        more.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing more was sent: {more:?}"
    );
}
