//! A connection drops its WebSocket codec whenever the client's input ends on a message boundary
//! (issue 15: buffers only a busy connection needs are returned when it goes quiet). These tests
//! check that it never does so in the middle of a frame or a fragmented message: the input is
//! cut there, the gateway is made to read the first part on its own (a ping in the same write is
//! answered only once that read was handled), and the message must still come out whole.

mod common;

use std::io::Write as _;

use common::{Client, Gateway, client_frame};
use serde_json::json;
use tungstenite::Message;

/// Writes `bytes` (which end with a complete ping "sync") and waits for the pong: by then the
/// gateway has read and handled everything written so far.
fn write_and_sync(c: &mut Client, bytes: &[u8]) {
    c.ws.get_mut().write_all(bytes).unwrap();
    match c.ws.read().expect("pong") {
        Message::Pong(p) => assert_eq!(&p[..], b"sync"),
        other => panic!("expected the pong, got {other:?}"),
    }
}

#[test]
fn commands_after_the_codec_was_dropped_still_work() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut c = gw.ws("/ws");
    // Each command ends on a boundary, so each one finds a new codec.
    for channel in ["a", "b", "c"] {
        c.subscribe(channel);
    }
    gw.publish("c", &json!(3));
    assert_eq!(c.recv_json(), json!({"channel": "c", "data": 3}));
}

#[test]
fn a_frame_cut_inside_its_header_or_payload_is_kept_across_reads() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut c = gw.ws("/ws");
    // Cut inside the first two header bytes, inside the mask, inside the payload.
    for (i, cut) in [1usize, 4, 20].into_iter().enumerate() {
        let channel = format!("cut{i}");
        let cmd = json!({"op": "subscribe", "channel": channel, "id": i}).to_string();
        let frame = client_frame(true, 0x1, cmd.as_bytes());
        // The ping goes first (a control frame cannot sit inside a data frame's bytes); the
        // start of the frame comes in the same write, so in the same read as far as loopback
        // goes.
        let mut first = client_frame(true, 0x9, b"sync");
        first.extend_from_slice(&frame[..cut]);
        write_and_sync(&mut c, &first);
        c.ws.get_mut().write_all(&frame[cut..]).unwrap();
        assert_eq!(
            c.recv_json(),
            json!({"op": "subscribed", "channel": channel, "id": i})
        );
    }
    gw.publish("cut2", &json!("whole"));
    assert_eq!(c.recv_json(), json!({"channel": "cut2", "data": "whole"}));
}

#[test]
fn a_fragmented_message_is_kept_across_reads() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut c = gw.ws("/ws");
    let cmd = br#"{"op":"subscribe","channel":"frag","id":"f2"}"#;
    let (a, b) = cmd.split_at(17);
    // The first fragment and a ping, read and handled on their own (the pong proves it); the
    // codec must keep the fragment although its input ends on a frame boundary.
    let mut first = client_frame(false, 0x1, a);
    first.extend(client_frame(true, 0x9, b"sync"));
    write_and_sync(&mut c, &first);
    c.ws.get_mut()
        .write_all(&client_frame(true, 0x0, b))
        .unwrap();
    assert_eq!(
        c.recv_json(),
        json!({"op": "subscribed", "channel": "frag", "id": "f2"})
    );
    gw.publish("frag", &json!(2));
    assert_eq!(c.recv_json(), json!({"channel": "frag", "data": 2}));
}
