//! Dormant WebSockets (`conn::dormant`): a connection quiet for a sweep period gives up its task
//! and waits in its slab entry; lone events still reach it (the shard's direct write), and
//! anything else (input, a stream of events, a close, the peer leaving, a pong timeout) gives
//! it a task again, with nothing lost.
//!
//! Short heartbeat settings make the sweep run every 50–100 ms, so a connection dozes within a
//! few hundred milliseconds of going quiet; every wait below is on `/metrics` or on the socket,
//! never a sleep (the one sleep spaces lone events apart: `outlast_the_stream_gap`).

mod common;

use common::{Gateway, RawWs, client_frame, outlast_the_stream_gap};
use serde_json::json;

/// The sweep every 100 ms (a quarter of the HTTP idle timeout), no pings within a test.
const FAST_SWEEP: &[&str] = &["--shards", "1", "--idle-timeout", "400ms"];

fn dormant(gw: &Gateway) -> u64 {
    gw.metric("ringcast_dormant_connections")
}

#[test]
fn a_quiet_websocket_dozes_and_lone_events_reach_it_without_waking_it() {
    let gw = Gateway::start(FAST_SWEEP);
    let mut c = gw.ws("/ws?subscribe=d1");
    assert_eq!(c.recv_json(), json!({"op": "subscribed", "channel": "d1"}));
    gw.wait_metric("ringcast_dormant_connections", |n| n == 1);

    let resumes = gw.metric("ringcast_resumes_total");
    for seq in 0..5 {
        // Lone events: each more than `STREAM_GAP_MS` after the last (a stream wakes it).
        outlast_the_stream_gap();
        gw.publish("d1", &json!({"seq": seq}));
        assert_eq!(c.recv_json()["data"]["seq"], seq);
    }
    assert_eq!(
        gw.metric("ringcast_resumes_total"),
        resumes,
        "a lone event woke it"
    );
    assert_eq!(dormant(&gw), 1);
}

#[test]
fn input_and_streams_bring_it_back_and_nothing_is_lost_or_reordered() {
    let gw = Gateway::start(FAST_SWEEP);
    let mut c = gw.ws("/ws?subscribe=d1");
    assert_eq!(c.recv_json(), json!({"op": "subscribed", "channel": "d1"}));
    gw.wait_metric("ringcast_dormant_connections", |n| n == 1);

    // Input gives it a task again; the command is answered.
    let resumes = gw.metric("ringcast_resumes_total");
    c.subscribe("d2");
    assert!(gw.metric("ringcast_resumes_total") > resumes);
    gw.wait_metric("ringcast_dormant_connections", |n| n == 1);

    // A burst on both channels while dormant: the first event may be a direct write, the rest
    // wake it; every one arrives once, in order.
    let resumes = gw.metric("ringcast_resumes_total");
    for seq in 1..=50 {
        let channel = if seq % 2 == 0 { "d1" } else { "d2" };
        gw.publish(channel, &json!({"seq": seq}));
    }
    for seq in 1..=50 {
        assert_eq!(
            c.recv_json()["data"]["seq"],
            seq,
            "lost or reordered at {seq}"
        );
    }
    // It dozes again once quiet, however it was woken.
    gw.wait_metric("ringcast_dormant_connections", |n| n == 1);
    assert!(gw.metric("ringcast_resumes_total") >= resumes);

    // The client closes: the dormant connection wakes, answers the close, and leaves.
    c.ws.close(None).unwrap();
    while c.ws.read().is_ok() {}
    gw.wait_metric("ringcast_websockets", |n| n == 0);
    assert_eq!(dormant(&gw), 0);
}

#[test]
fn half_a_frame_keeps_a_connection_awake_and_the_rest_completes_it() {
    // Pings every 200 ms (the sweep every 50 ms), answered by nobody but never timing out
    // within the test: the ping count says how many sweeps have passed.
    let gw = Gateway::start(&[
        "--shards",
        "1",
        "--ping-interval",
        "200ms",
        "--pong-timeout",
        "60s",
    ]);
    let mut raw = RawWs::connect(gw.addr, "/ws");
    let cmd = json!({"op": "subscribe", "channel": "half"}).to_string();
    let frame = client_frame(true, 0x1, cmd.as_bytes());
    let (head, tail) = frame.split_at(5);
    raw.send_raw(head);
    // Three pings to this (only) connection: a dozen sweeps, far more than the two quiet ones a
    // doze takes.
    let pings = gw.metric("ringcast_pings_total");
    gw.wait_metric("ringcast_pings_total", |n| n >= pings + 3);
    assert_eq!(dormant(&gw), 0, "a connection holding half a frame dozed");
    raw.send_raw(tail);
    let ack = loop {
        let f = raw.read_frame().expect("the ack");
        if f.opcode == 0x1 {
            break f;
        }
    };
    let ack: serde_json::Value = serde_json::from_slice(&ack.payload).unwrap();
    assert_eq!(ack, json!({"op": "subscribed", "channel": "half"}));
    // At rest now (the codec was dropped with the message): it dozes.
    gw.wait_metric("ringcast_dormant_connections", |n| n == 1);
}

#[test]
fn a_dormant_connection_that_ignores_pings_is_closed_4001_and_one_that_leaves_is_removed() {
    let gw = Gateway::start(&[
        "--shards",
        "1",
        "--ping-interval",
        "300ms",
        "--pong-timeout",
        "900ms",
    ]);
    // Answers nothing (a raw socket sends no pongs).
    let mut silent = RawWs::connect(gw.addr, "/ws");
    let gone = RawWs::connect(gw.addr, "/ws");
    gw.wait_metric("ringcast_dormant_connections", |n| n == 2);

    // The peer leaves while dormant: its EOF wakes it, and it is removed.
    drop(gone);
    gw.wait_metric("ringcast_websockets", |n| n == 1);

    // Pings reach the dormant connection (direct writes); once the oldest is unanswered for
    // the pong timeout, the close wakes it: 4001.
    let code = loop {
        match silent.read_frame() {
            Some(f) if f.opcode == 0x8 => break f.close_code(),
            Some(_) => continue,
            None => panic!("EOF without a close frame"),
        }
    };
    assert_eq!(code, Some(4001));
    assert!(gw.metric("ringcast_pong_timeout_closes_total") >= 1);
    assert!(gw.metric("ringcast_pings_total") >= 1);
}
