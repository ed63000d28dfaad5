//! The echo endpoint (`--echo-path`): text, binary (up to `--max-message-bytes`) and pings come
//! back unchanged; on `/` it shares the path with the demo page, which plain GETs still get.

mod common;

use common::{Gateway, http};
use serde_json::json;
use tungstenite::{Bytes, Message};

#[test]
fn text_and_binary_messages_come_back_unchanged() {
    let gw = Gateway::start(&[
        "--shards",
        "2",
        "--echo-path",
        "/echo",
        "--max-message-bytes",
        "1MiB",
    ]);
    let mut c = gw.ws("/echo");

    c.send("hello, ringcast");
    assert_eq!(c.recv(), Message::text("hello, ringcast"));
    // Not a command: the echo endpoint does not interpret JSON.
    c.send(r#"{"op":"subscribe","channel":"a"}"#);
    assert_eq!(
        c.recv(),
        Message::text(r#"{"op":"subscribe","channel":"a"}"#)
    );
    c.send("");
    assert_eq!(c.recv(), Message::text(""));
    c.send("ünïcödé ✓");
    assert_eq!(c.recv(), Message::text("ünïcödé ✓"));

    let small: Bytes = (0..=255u8).collect::<Vec<u8>>().into();
    c.ws.send(Message::Binary(small.clone())).unwrap();
    assert_eq!(c.recv(), Message::Binary(small));

    let big: Bytes = (0..100 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect::<Vec<u8>>()
        .into();
    c.ws.send(Message::Binary(big.clone())).unwrap();
    match c.recv() {
        Message::Binary(b) => assert!(
            b == big,
            "100 KiB binary came back altered ({} bytes)",
            b.len()
        ),
        other => panic!("expected binary, got {other:?}"),
    }

    c.ws.send(Message::Ping(Bytes::from_static(b"p1"))).unwrap();
    match c.ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"p1"),
        other => panic!("expected a pong, got {other:?}"),
    }
    assert_eq!(gw.metric("ringcast_messages_in_total"), 6);
    assert_eq!(gw.metric("ringcast_protocol_closes_total"), 0);
}

#[test]
fn echo_on_root_upgrades_while_plain_get_serves_the_demo_page() {
    let gw = Gateway::start(&["--shards", "1", "--echo-path", "/"]);
    let mut c = gw.ws("/");
    c.send("round trip");
    assert_eq!(c.recv(), Message::text("round trip"));

    let (status, body) = http(gw.addr, "GET", "/", &[], b"");
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");

    // The native endpoint is unaffected, and the echo connection is still open.
    let mut native = gw.ws("/ws?subscribe=n");
    assert_eq!(
        native.recv_json(),
        json!({"op": "subscribed", "channel": "n"})
    );
    c.ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(c.recv(), Message::binary(vec![1, 2, 3]));
}
