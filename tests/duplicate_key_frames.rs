//! A watched key that ends on the same state twice sends its frame once: a write that leaves the
//! value as it was, a hash change the Preflight checklist does not show, and the re-read after a
//! Redis restart that finds the same state are counted in `ringcast_key_frames_suppressed_total`
//! instead of sent, format by format, and the next real change is the next frame each client
//! gets (against a real redis-server).

mod common;

use common::{Client, Gateway, RedisServer};
use serde_json::{Value, json};

/// The counter of key frames not sent because they repeated the last one.
const SUPPRESSED: &str = "ringcast_key_frames_suppressed_total";

/// A Preflight client of run `run` on the weppcloud preset's preflight route.
fn preflight(gw: &Gateway, run: &str) -> Client {
    Client::connect(
        gw.route_addr("preflight"),
        &format!("/weppcloud-microservices/preflight/{run}"),
    )
}

/// The next Preflight frame's checklist.
fn checklist(c: &mut Client) -> Value {
    let frame: Value = serde_json::from_str(&c.recv_text()).expect("json");
    assert_eq!(frame["type"], "preflight", "{frame}");
    frame["checklist"].clone()
}

#[test]
fn writing_the_same_value_again_sends_no_second_frame() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&["--shards", "2", "--redis", &redis.url(0)]);
    let mut w = gw.ws("/ws?watch=k");
    assert_eq!(w.recv_json()["op"], "watched");
    assert_eq!(
        w.recv_json(),
        json!({"key": "k", "type": "none", "value": null})
    );
    redis.cmd(&["HSET", "k", "f", "1"]);
    assert_eq!(
        w.recv_json(),
        json!({"key": "k", "type": "hash", "value": {"f": "1"}})
    );
    let before = gw.metric(SUPPRESSED);
    // Redis notifies the same HSET again; the re-read renders the frame the watcher has.
    redis.cmd(&["HSET", "k", "f", "1"]);
    gw.wait_metric(SUPPRESSED, |n| n > before);
    redis.cmd(&["HSET", "k", "f", "2"]);
    assert_eq!(
        w.recv_json(),
        json!({"key": "k", "type": "hash", "value": {"f": "2"}}),
        "the change is the next frame, not the repeat"
    );
    // A late watcher still gets the current value from the cache.
    let mut late = gw.ws("/ws?watch=k");
    assert_eq!(late.recv_json()["op"], "watched");
    assert_eq!(late.recv_json()["value"], json!({"f": "2"}));
}

#[test]
fn each_format_is_compared_on_its_own() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    // One key, two formats: a Preflight client and a native watcher of the same run (db 0).
    let mut p = preflight(&gw, "run");
    assert_eq!(checklist(&mut p)["channels"], false);
    let mut n = gw.ws("/ws?watch=run");
    assert_eq!(n.recv_json()["op"], "watched");
    assert_eq!(n.recv_json()["type"], "none");
    let before = gw.metric(SUPPRESSED);
    // A field the checklist does not read: the native frame changes, the checklist does not.
    redis.cmd(&["HSET", "run", "attrs:loaded", "true"]);
    assert_eq!(n.recv_json()["value"], json!({"attrs:loaded": "true"}));
    gw.wait_metric(SUPPRESSED, |v| v > before);
    redis.cmd(&["HSET", "run", "attrs:has_sbs", "true"]);
    assert_eq!(
        checklist(&mut p)["sbs_map"],
        true,
        "the first checklist the Preflight client gets after its snapshot is the change"
    );
    assert_eq!(
        n.recv_json()["value"],
        json!({"attrs:loaded": "true", "attrs:has_sbs": "true"})
    );
    // The same write again: neither format is sent.
    let before = gw.metric(SUPPRESSED);
    redis.cmd(&["HSET", "run", "attrs:has_sbs", "true"]);
    gw.wait_metric(SUPPRESSED, |v| v >= before + 2);
    redis.cmd(&["HSET", "run", "timestamps:build_channels", "1"]);
    assert_eq!(checklist(&mut p)["channels"], true);
    assert_eq!(
        n.recv_json()["value"]["timestamps:build_channels"],
        "1",
        "the native watcher's next frame is the change too"
    );
}

#[test]
fn the_reread_after_a_redis_restart_is_not_sent_when_nothing_changed() {
    let mut redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &["--redis-backoff-max", "200ms"]);
    // A run with no hash: the restarted (empty) Redis has the same state.
    let mut c = preflight(&gw, "rr");
    assert_eq!(checklist(&mut c)["channels"], false);
    let before = gw.metric(SUPPRESSED);
    redis.kill9();
    redis.restart();
    // The watch is re-read after resubscribing; its checklist is the one the client has.
    gw.wait_metric(SUPPRESSED, |v| v > before);
    redis.cmd(&["HSET", "rr", "timestamps:build_channels", "8"]);
    assert_eq!(checklist(&mut c)["channels"], true);
}
