//! After every (re)connect a Redis source that serves watches checks `notify-keyspace-events`:
//! it warns clearly, naming the source, when keyspace events are off, and with
//! `--redis-set-notify` it turns them on itself, again after a Redis restart lost them. A source
//! that only serves pub/sub is left alone.

mod common;

use std::time::Instant;

use common::{Gateway, RedisServer, Resp, TIMEOUT};
use serde_json::json;

fn notify_flags(redis: &RedisServer) -> String {
    match redis.cmd(&["CONFIG", "GET", "notify-keyspace-events"]) {
        Resp::Array(items) => match items.get(1) {
            Some(Resp::Bulk(Some(v))) => String::from_utf8_lossy(v).into_owned(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// Waits for `n` log lines containing `needle`; returns them.
fn wait_lines(gw: &Gateway, needle: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines: Vec<String> = gw
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "{n} x {needle:?} never logged: {:?}",
            gw.log.lock().unwrap()
        );
        std::thread::yield_now();
    }
}

#[test]
fn missing_flags_are_warned_about() {
    let redis = RedisServer::start_with(&["--notify-keyspace-events", ""]);
    let gw = Gateway::start(&["--shards", "1", "--redis", &redis.url(0)]);
    let warning = wait_lines(&gw, "keyspace notifications are off", 1).remove(0);
    // It names the source and shows the empty setting as such.
    assert!(warning.contains("source=\"redis\""), "{warning}");
    assert!(warning.contains("current=(empty)"), "{warning}");
    assert_eq!(
        notify_flags(&redis),
        "",
        "without --redis-set-notify nothing is changed"
    );
}

#[test]
fn a_pubsub_only_source_is_not_warned_about() {
    let redis = RedisServer::start_with(&["--notify-keyspace-events", ""]);
    // The weppcloud preset: `preflight` watches keys, `status` only serves channels.
    let gw = Gateway::weppcloud(&redis, &[]);
    let warning = wait_lines(&gw, "keyspace notifications are off", 1).remove(0);
    assert!(warning.contains("source=\"preflight\""), "{warning}");
    // `up` is set after the check and the resubscribe: a warning would be logged by now.
    gw.wait_metric("ringcast_source_redis_up{source=\"status\"}", |v| v == 1);
    let log = gw.log.lock().unwrap();
    assert!(
        !log.iter()
            .any(|l| l.contains("source=\"status\"") && l.contains("notify")),
        "{log:?}"
    );
}

#[test]
fn redis_set_notify_turns_them_on() {
    let redis = RedisServer::start_with(&["--notify-keyspace-events", "Ex"]);
    let _gw = Gateway::start(&[
        "--shards",
        "1",
        "--redis",
        &redis.url(0),
        "--redis-set-notify",
    ]);
    let start = Instant::now();
    loop {
        let flags = notify_flags(&redis);
        if flags.contains('K') && flags.contains('A') {
            assert!(flags.contains('E'), "existing flags are kept: {flags}");
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "flags never set: {flags}");
        std::thread::yield_now();
    }
}

#[test]
fn redis_set_notify_sets_them_again_after_a_redis_restart() {
    // Started without keyspace events, and so again after the restart: nothing is persisted.
    let mut redis = RedisServer::start_with(&["--notify-keyspace-events", ""]);
    redis.cmd(&["HSET", "w", "v", "before"]);
    let gw = Gateway::start(&[
        "--shards",
        "1",
        "--redis",
        &redis.url(0),
        "--redis-set-notify",
        "--redis-backoff-max",
        "500ms",
    ]);
    let mut watcher = gw.ws("/ws?watch=w");
    assert_eq!(watcher.recv_json()["op"], "watched");
    assert_eq!(watcher.recv_json()["value"], json!({"v": "before"}));

    redis.restart();
    assert_eq!(notify_flags(&redis), "", "the restart lost the setting");
    // The fresh value after the reconnect: by then the flags were set again (the subscriber
    // sets them before it resubscribes, and the resubscription triggers this read).
    assert_eq!(
        watcher.recv_json(),
        json!({"key": "w", "type": "none", "value": null})
    );
    redis.cmd(&["HSET", "w", "v", "after"]);
    assert_eq!(
        watcher.recv_json(),
        json!({"key": "w", "type": "hash", "value": {"v": "after"}})
    );
    let set = wait_lines(&gw, "set notify-keyspace-events", 2);
    for line in &set {
        assert!(line.contains("source=\"redis\""), "{line}");
        assert!(line.contains("from=(empty)"), "{line}");
    }
}
