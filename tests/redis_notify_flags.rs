//! At startup the Redis source checks `notify-keyspace-events`: it warns clearly when keyspace
//! events are off, and with `--redis-set-notify` it turns them on itself.

mod common;

use std::time::Instant;

use common::{Gateway, RedisServer, Resp, TIMEOUT};

fn notify_flags(redis: &RedisServer) -> String {
    match redis.cmd(&["CONFIG", "GET", "notify-keyspace-events"]) {
        Resp::Array(items) => match items.get(1) {
            Some(Resp::Bulk(Some(v))) => String::from_utf8_lossy(v).into_owned(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_flags_are_warned_about() {
    let redis = RedisServer::start_with(&["--notify-keyspace-events", ""]);
    let gw = Gateway::start(&["--shards", "1", "--redis", &redis.url(0)]);
    let start = Instant::now();
    while !gw
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("keyspace notifications are off"))
    {
        assert!(
            start.elapsed() < TIMEOUT,
            "no warning: {:?}",
            gw.log.lock().unwrap()
        );
        std::thread::yield_now();
    }
    assert_eq!(
        notify_flags(&redis),
        "",
        "without --redis-set-notify nothing is changed"
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
