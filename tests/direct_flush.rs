//! The shard's direct flush (decision 0014): an event for a connection with nothing queued or in
//! flight is written by the shard right after its inbox turn, not by waking the connection's
//! write loop; where the socket buffer does not take it all, the write loop takes over the rest,
//! and the client still reads every frame once, in order. A connection the shard wrote itself
//! under `STREAM_GAP_MS` ago is being sent a stream and is left to its write loop (decision
//! 0016).

mod common;

use common::{Client, Gateway, outlast_the_stream_gap};
use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};

#[test]
fn a_quiet_connections_events_are_written_by_the_shard() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut c = gw.ws("/ws?subscribe=quiet");
    assert_eq!(
        c.recv_json(),
        json!({"op": "subscribed", "channel": "quiet"})
    );
    let before = gw.metric("ringcast_direct_writes_total");
    for i in 0..5 {
        outlast_the_stream_gap();
        gw.publish("quiet", &json!({"seq": i}));
        assert_eq!(c.recv_json()["data"]["seq"], i);
    }
    // One direct write per event at least (the client read each before the next publish).
    let direct = gw.metric("ringcast_direct_writes_total") - before;
    assert!(direct >= 5, "{direct} direct writes for 5 events");
    assert_eq!(gw.metric("ringcast_direct_writes_handed_over_total"), 0);
}

#[test]
fn a_connection_sent_a_stream_is_left_to_its_write_loop() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut c = gw.ws("/ws?subscribe=stream");
    assert_eq!(
        c.recv_json(),
        json!({"op": "subscribed", "channel": "stream"})
    );
    // Each attempt: the first event after the gap is a direct write; the second, published as
    // soon as the first was read, comes within the gap (unless this machine took over 20 ms
    // for the read and the metric: then the attempt is made again) and goes through the write
    // loop: no direct write more.
    for attempt in 0.. {
        assert!(
            attempt < 50,
            "the second event of every pair was a direct write"
        );
        outlast_the_stream_gap();
        let direct = gw.metric("ringcast_direct_writes_total");
        gw.publish("stream", &json!({"seq": 2 * attempt}));
        assert_eq!(c.recv_json()["data"]["seq"], 2 * attempt);
        assert_eq!(gw.metric("ringcast_direct_writes_total"), direct + 1);
        gw.publish("stream", &json!({"seq": 2 * attempt + 1}));
        assert_eq!(c.recv_json()["data"]["seq"], 2 * attempt + 1);
        if gw.metric("ringcast_direct_writes_total") == direct + 1 {
            break;
        }
    }
}

#[test]
fn a_full_socket_hands_the_rest_to_the_write_loop_and_nothing_is_lost_or_reordered() {
    // A large outbox cap: this is about the hand-over, not the slow-consumer policy.
    let gw = Gateway::start(&["--shards", "1", "--max-outbox-bytes", "64MiB"]);
    // A tiny receive buffer that the test does not read at first, so the shard's direct write
    // finds the socket full and must leave the rest to the connection's write loop.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&gw.addr.into()).unwrap();
    let mut a = Client::over(socket.into(), gw.addr, "/ws");
    a.subscribe("full");

    let pad = "p".repeat(32 * 1024);
    let mut published = 0u64;
    // Publish one event per inbox turn (the next only once the shard has queued the last: the
    // one shard also answers `/metrics`, so its turn is over when the count is read), until a
    // direct write has handed frames over. Every earlier event was written whole, so the first
    // write that the full socket cuts short is a direct one.
    while gw.metric("ringcast_direct_writes_handed_over_total") == 0 {
        assert!(
            published < 2_000,
            "no direct write ever found the socket full"
        );
        let out = gw.metric("ringcast_messages_out_total");
        outlast_the_stream_gap();
        gw.publish("full", &json!({"seq": published, "pad": pad}));
        gw.wait_metric("ringcast_messages_out_total", |n| n > out);
        published += 1;
    }
    // And a few more while the write loop owns the connection's writes.
    for _ in 0..5 {
        gw.publish("full", &json!({"seq": published, "pad": pad}));
        published += 1;
    }
    gw.publish("full", &json!("end"));

    // Every frame arrives, once, in order; then the marker.
    for seq in 0..published {
        let ev = a.recv_json();
        assert_eq!(ev["data"]["seq"], seq, "lost or reordered at {seq}");
    }
    assert_eq!(a.recv_json()["data"], "end");
    assert_eq!(gw.metric("ringcast_slow_consumer_closes_total"), 0);

    // The connection is back to direct writes once its outbox has drained.
    let before = gw.metric("ringcast_direct_writes_total");
    outlast_the_stream_gap();
    gw.publish("full", &json!("after"));
    assert_eq!(a.recv_json()["data"], "after");
    assert!(gw.metric("ringcast_direct_writes_total") > before);
}
