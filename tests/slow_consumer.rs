//! Slow consumers: a client that stops reading is closed with 4000 once its outbox passes
//! `--max-outbox-bytes`, after an in-order prefix of the stream; a reading client on the same
//! channel loses nothing; the hub's inbox-drop policy is not involved.

mod common;

use common::{Client, Gateway};
use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};
use tungstenite::Message;

#[test]
fn a_client_that_stops_reading_is_closed_with_4000_and_others_lose_nothing() {
    let gw = Gateway::start(&["--shards", "1", "--max-outbox-bytes", "64KiB"]);

    // A: a tiny receive buffer, so the kernel soaks up little before the outbox has to grow.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&gw.addr.into()).unwrap();
    let mut a = Client::over(socket.into(), gw.addr, "/ws");
    a.subscribe("flood");
    let mut b = gw.ws("/ws");
    b.subscribe("flood");

    let pad = "p".repeat(16 * 1024);
    let mut published = 0u64;
    loop {
        assert!(published < 2_000, "A was never closed as a slow consumer");
        gw.publish("flood", &json!({"seq": published, "pad": pad}));
        // B reads as a normal client does: every message, in order, right away.
        let ev = b.recv_json();
        assert_eq!(
            ev["data"]["seq"], published,
            "B lost or reordered a message"
        );
        published += 1;
        if gw.metric("ringcast_slow_consumer_closes_total") == 1 {
            break;
        }
    }
    // The outbox (64 KiB) plus what the kernel buffers must be exceeded before the close.
    assert!(published > 4, "closed after only {published} messages");

    // B is still subscribed and nothing was duplicated: a marker is the very next message.
    gw.publish("flood", &json!("end"));
    assert_eq!(b.recv_json(), json!({"channel": "flood", "data": "end"}));

    // A gets an in-order prefix of the stream (what was in the kernel buffers and in flight when
    // the outbox overflowed), then the close frame: the queued frames were dropped, the frame in
    // flight was finished, and the close went out behind it. We read promptly, well inside the
    // 2 s close grace, so the close frame is always written before the socket is shut down: the
    // outcome is a 4000 close, never a bare EOF.
    let mut next = 0u64;
    let code = loop {
        match a.ws.read() {
            Ok(Message::Text(t)) => {
                let ev: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(ev["data"]["seq"], next, "A's prefix has a gap");
                next += 1;
            }
            Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("A's connection ended without a close frame: {e}"),
        }
    };
    assert_eq!(code, 4000);
    // Answer the close; the gateway then drops A at once instead of at the grace deadline.
    a.ws.flush().unwrap();
    // Lost: the message that overflowed the outbox, and the frames queued behind the one in
    // flight, which fit in 64 KiB: at most three 16 KiB frames. Nothing else.
    let lost = published - next;
    assert!(
        (1..=4).contains(&lost),
        "A got {next} of {published} messages"
    );

    assert_eq!(gw.metric("ringcast_slow_consumer_closes_total"), 1);
    // Hub inbox drops are a different policy (a full shard inbox), not a slow client.
    assert_eq!(gw.metric("ringcast_queue_drops_total"), 0);
    gw.wait_metric("ringcast_websockets", |n| n == 1);
}
