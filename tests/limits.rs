//! Input limits and bad input: oversized messages (1009), invalid UTF-8 (1007), unmasked frames
//! (1002), garbage and bad-version handshakes (400), oversized request heads (431) each end only
//! the offending connection; fragmented messages with a ping in the middle reassemble.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;

use common::{Gateway, RawWs, client_frame, http_raw, parse_response};
use serde_json::json;
use tungstenite::Message;

/// A fresh client can still subscribe and receive a publish: the gateway kept serving.
fn still_serving(gw: &Gateway, channel: &str) {
    let mut c = gw.ws("/ws");
    c.subscribe(channel);
    gw.publish(channel, &json!("alive"));
    assert_eq!(c.recv_json(), json!({"channel": channel, "data": "alive"}));
}

#[test]
fn message_over_max_message_bytes_gets_1009_and_the_gateway_keeps_serving() {
    let gw = Gateway::start(&["--shards", "1", "--max-message-bytes", "1KiB"]);
    // Exactly at the limit is accepted (it is a command, answered with an error: not JSON).
    let mut ok = gw.ws("/ws");
    ok.send(&"x".repeat(1024));
    assert_eq!(ok.recv_json()["code"], "bad_json");

    let mut big = gw.ws("/ws");
    big.send(&"x".repeat(1025));
    assert_eq!(big.expect_close(), 1009);
    assert_eq!(gw.metric("ringcast_protocol_closes_total"), 1);

    // The limit is per message, not per frame: two 600-byte fragments are too much together.
    let mut frag = RawWs::connect(gw.addr, "/ws");
    frag.send_raw(&client_frame(false, 0x1, &[b'a'; 600]));
    frag.send_raw(&client_frame(true, 0x0, &[b'a'; 600]));
    let close = frag.read_frame().expect("close frame");
    assert_eq!(close.close_code(), Some(1009), "{close:?}");
    assert_eq!(gw.metric("ringcast_protocol_closes_total"), 2);

    // The connection at the limit is untouched.
    ok.command(json!({"op": "ping", "id": 1}));
    assert_eq!(ok.recv_json(), json!({"op": "pong", "id": 1}));
    still_serving(&gw, "after-1009");
}

#[test]
fn invalid_utf8_text_gets_1007() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut c = gw.ws("/ws");
    // tungstenite will not send invalid UTF-8 as text; write the masked frame ourselves.
    c.ws.get_mut()
        .write_all(&client_frame(true, 0x1, b"{\"op\":\"\xff\xfe\"}"))
        .unwrap();
    assert_eq!(c.expect_close(), 1007);
    assert_eq!(gw.metric("ringcast_protocol_closes_total"), 1);
    still_serving(&gw, "after-1007");
}

#[test]
fn unmasked_client_frame_gets_1002() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut c = gw.ws("/ws");
    // A client frame without the mask bit: FIN + text, length 2, "hi".
    c.ws.get_mut().write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(c.expect_close(), 1002);
    assert_eq!(gw.metric("ringcast_protocol_closes_total"), 1);
    still_serving(&gw, "after-1002");
}

fn http_status(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    parse_response(&http_raw(addr, request))
}

#[test]
fn garbage_and_bad_version_handshakes_get_400_and_the_gateway_keeps_serving() {
    let gw = Gateway::start(&["--shards", "1"]);
    let (status, body) = http_status(gw.addr, b"\x16\x03\x01 garbage\r\n\r\n");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed HTTP request"), "{body}");

    let bad_version = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        gw.addr
    );
    let (status, body) = http_status(gw.addr, bad_version.as_bytes());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad WebSocket handshake"), "{body}");

    assert_eq!(gw.metric("ringcast_http_errors_total"), 2);
    assert_eq!(gw.metric("ringcast_websockets"), 0);
    let (status, _) = gw.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
    still_serving(&gw, "after-400");
}

#[test]
fn request_head_over_8kib_gets_431() {
    let gw = Gateway::start(&["--shards", "1"]);
    // 16 KiB: the head cannot complete before 8 KiB of it are buffered, however the reads fall.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let (status, body) = http_status(gw.addr, big.as_bytes());
    assert_eq!(status, 431, "{body}");

    // More headers than the parser holds is refused the same way.
    let mut many = String::from("GET /healthz HTTP/1.1\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (status, body) = http_status(gw.addr, many.as_bytes());
    assert_eq!(status, 431, "{body}");
    assert_eq!(
        gw.metric("ringcast_refused_total{reason=\"header_too_large\"}"),
        2
    );

    // A head just under the limit is fine.
    let under = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(7 * 1024)
    );
    let (status, body) = http_status(gw.addr, under.as_bytes());
    assert_eq!(status, 200, "{body}");
}

#[test]
fn pipelined_request_head_over_8kib_gets_431() {
    let gw = Gateway::start(&["--shards", "1"]);
    // A small keep-alive request, then a ~9 KiB head, in one write. The server reads 4 KiB at a
    // time: the first request is answered and drained, so the big head is never seen partial
    // with 8 KiB buffered, and is then parsed complete.
    let mut raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    raw.extend_from_slice(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "a".repeat(9 * 1024)
        )
        .as_bytes(),
    );
    let out = http_raw(gw.addr, &raw);
    let (first, used) = common::parse_http_response(&out).expect("first response");
    assert_eq!(first.status, 200);
    let (second, _) = parse_response(&out[used..]);
    assert_eq!(second, 431, "a 9 KiB head must be refused");
}

#[test]
fn fragmented_message_with_a_ping_in_the_middle_reassembles() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut c = gw.ws("/ws");
    let cmd = br#"{"op":"subscribe","channel":"frag","id":"f1"}"#;
    let (a, rest) = cmd.split_at(10);
    let (b, d) = rest.split_at(15);
    let mut bytes = client_frame(false, 0x1, a);
    bytes.extend(client_frame(false, 0x0, b));
    bytes.extend(client_frame(true, 0x9, b"mid"));
    bytes.extend(client_frame(true, 0x0, d));
    c.ws.get_mut().write_all(&bytes).unwrap();
    // The ping is answered as soon as it is read, before the message it interrupted completes.
    match c.ws.read().expect("pong") {
        Message::Pong(p) => assert_eq!(&p[..], b"mid"),
        other => panic!("expected the pong first, got {other:?}"),
    }
    assert_eq!(
        c.recv_json(),
        json!({"op": "subscribed", "channel": "frag", "id": "f1"})
    );
    gw.publish("frag", &json!(1));
    assert_eq!(c.recv_json(), json!({"channel": "frag", "data": 1}));
    assert_eq!(gw.metric("ringcast_messages_in_total"), 1);
}
