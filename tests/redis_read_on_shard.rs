//! A single Redis's pub/sub connection is read on a shard's own runtime (decision 0017): its
//! events reach the clients without waking the source's subscriber thread, which only
//! supervises the connection. With `--redis-read-on-shard false` that thread reads every
//! event itself, as before; both ways deliver the same.

mod common;

use common::{Gateway, RedisClient, RedisServer, Resp};
use serde_json::json;

/// Events published one at a time, each after the last one arrived, so that each is a read
/// of its own for whatever reads the connection.
const EVENTS: usize = 300;

/// Voluntary context switches of the gateway's Redis threads (`ringcast-redis-sub` and
/// `-cmd`; the kernel keeps 15 bytes of a thread's name, so both read `ringcast-redis-`).
fn redis_thread_sleeps(gw: &Gateway) -> u64 {
    let tasks = format!("/proc/{}/task", gw.child.id());
    let mut total = 0;
    for task in std::fs::read_dir(&tasks).expect("the gateway's threads") {
        let dir = task.expect("a thread").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("ringcast-redis") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("voluntary_ctxt_switches");
    }
    total
}

/// A gateway started with `args` after `--redis`, one client subscribed to `channel`, and
/// a publisher; one event (`0`) has come through, so the connection is on its reader (a shard
/// takes it after it subscribed).
struct Through {
    // Declared first: the gateway goes before its Redis.
    gw: Gateway,
    client: common::Client,
    publisher: RedisClient,
    _redis: RedisServer,
}

fn one_event_through(args: &[&str], channel: &str) -> Through {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mut all = vec!["--redis", &url];
    all.extend_from_slice(args);
    let gw = Gateway::start(&all);
    let mut client = gw.ws(&format!("/ws?subscribe={channel}"));
    assert_eq!(client.recv_json()["op"], "subscribed");
    redis.wait_numsub(channel, 1);
    let mut publisher = RedisClient::connect(redis.port);
    assert_eq!(publisher.cmd(&["PUBLISH", channel, "0"]), Resp::Int(1));
    assert_eq!(client.recv_json(), json!({"channel": channel, "data": 0}));
    Through {
        gw,
        client,
        publisher,
        _redis: redis,
    }
}

/// Delivers [`EVENTS`] one by one through a gateway started with `flags`; returns how often
/// the Redis threads went to sleep meanwhile.
fn sleeps_while_delivering(flags: &[&str]) -> u64 {
    let mut args = vec!["--shards", "1"];
    args.extend_from_slice(flags);
    let Through {
        gw,
        mut client,
        mut publisher,
        _redis,
    } = one_event_through(&args, "ticks");
    let before = redis_thread_sleeps(&gw);
    for i in 1..=EVENTS {
        publisher.cmd(&["PUBLISH", "ticks", &i.to_string()]);
        assert_eq!(client.recv_json(), json!({"channel": "ticks", "data": i}));
    }
    redis_thread_sleeps(&gw) - before
}

#[test]
fn a_shard_reads_redis_and_the_subscriber_thread_does_not_wake_per_event() {
    // The control: on its own thread, nearly every event wakes the reader (one that arrives
    // before the thread went back to sleep is read in the same wake).
    let on_thread = sleeps_while_delivering(&["--redis-read-on-shard", "false"]);
    assert!(
        on_thread >= EVENTS as u64 * 2 / 3,
        "read on the subscriber thread: {on_thread} sleeps for {EVENTS} events"
    );
    // Read on the shard: the thread only wakes to supervise (every 250 ms), however many
    // events pass.
    let on_shard = sleeps_while_delivering(&[]);
    eprintln!(
        "sleeps of the Redis threads for {EVENTS} events: on the thread {on_thread}, on the shard {on_shard}"
    );
    assert!(
        on_shard < EVENTS as u64 / 4,
        "read on the shard: {on_shard} sleeps of the Redis threads for {EVENTS} events \
         (read on the thread: {on_thread})"
    );
}

#[test]
fn a_gateway_shutting_down_does_not_reconnect_the_connection_its_shard_read() {
    let Through {
        mut gw,
        client,
        _redis,
        ..
    } = one_event_through(&["--shards", "2"], "bye");
    drop(client);

    gw.signal(libc::SIGTERM);
    let status = common::wait_exit(&mut gw.child, common::TIMEOUT);
    assert_eq!(status.code(), Some(0));
    // The log is read on a thread of its own: wait for its last line, not just for the exit.
    gw.wait_log(&["stopped"], 1);
    let log = gw.log.lock().expect("log").join("\n");
    for line in ["redis subscriber connection lost", "reconnected to redis"] {
        assert!(
            !log.contains(line),
            "a shutdown is not a lost connection ({line:?}): {log}"
        );
    }
}
