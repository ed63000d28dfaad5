//! Keyspace watches: the current value first, then every change as `{"key","type","value"}`;
//! a burst of writes is coalesced into far fewer reads and every watcher ends on the final
//! state; deletion sends the "gone" form; a subscription can carry a key snapshot.

mod common;

use common::{Client, Gateway, RedisClient, RedisServer};
use serde_json::{Value, json};

fn gateway(redis: &RedisServer) -> Gateway {
    Gateway::start(&["--shards", "2", "--redis", &redis.url(0)])
}

/// Reads key events until one satisfies `done`; returns it.
fn until(c: &mut Client, done: impl Fn(&Value) -> bool) -> Value {
    loop {
        let ev = c.recv_json();
        if done(&ev) {
            return ev;
        }
    }
}

#[test]
fn hset_arrives_as_hash_json_after_the_snapshot() {
    let redis = RedisServer::start();
    redis.cmd(&["HSET", "run:1", "a", "1"]);
    let gw = gateway(&redis);
    let mut c = gw.ws("/ws");
    c.command(json!({"op": "watch", "key": "run:1", "id": 5}));
    assert_eq!(
        c.recv_json(),
        json!({"op": "watched", "key": "run:1", "id": 5})
    );
    assert_eq!(
        c.recv_json(),
        json!({"key": "run:1", "type": "hash", "value": {"a": "1"}})
    );
    redis.cmd(&["HSET", "run:1", "b", "two"]);
    assert_eq!(
        c.recv_json(),
        json!({"key": "run:1", "type": "hash", "value": {"a": "1", "b": "two"}})
    );
    redis.cmd(&["DEL", "run:1"]);
    assert_eq!(
        c.recv_json(),
        json!({"key": "run:1", "type": "none", "value": null})
    );
    // A late watcher (same shard or not) gets the current value from the hub's cache.
    let mut late = gw.ws("/ws?watch=run:1");
    assert_eq!(late.recv_json()["op"], "watched");
    assert_eq!(
        late.recv_json(),
        json!({"key": "run:1", "type": "none", "value": null})
    );
}

#[test]
fn a_burst_of_1000_hsets_is_coalesced_and_ends_on_the_final_state() {
    let redis = RedisServer::start();
    let gw = gateway(&redis);
    let mut watchers: Vec<Client> = (0..10).map(|_| gw.ws("/ws?watch=burst")).collect();
    for w in &mut watchers {
        assert_eq!(w.recv_json()["op"], "watched");
        assert_eq!(w.recv_json()["type"], "none");
    }
    redis.wait_numsub("__keyspace@0__:burst", 1);
    let mut p = RedisClient::connect(redis.port);
    for i in 0..1000 {
        p.send(&["HSET", "burst", "n", &i.to_string()]);
    }
    for _ in 0..1000 {
        p.read();
    }
    let final_state = json!({"key": "burst", "type": "hash", "value": {"n": "999"}});
    for w in &mut watchers {
        until(w, |ev| *ev == final_state);
    }
    let reads = gw.metric("ringcast_redis_key_reads_total");
    assert!(
        reads < 200,
        "{reads} reads for 1000 writes: coalescing is not working"
    );
    assert!(reads >= 2, "the snapshot and at least one update were read");
}

#[test]
fn subscribe_with_snapshot_sends_the_key_first() {
    let redis = RedisServer::start();
    redis.cmd(&["SET", "status:1", "ready"]);
    let gw = gateway(&redis);
    let mut c = gw.ws("/ws");
    c.command(json!({"op": "subscribe", "channel": "updates:1", "snapshot": "status:1", "id": 1}));
    assert_eq!(
        c.recv_json(),
        json!({"op": "subscribed", "channel": "updates:1", "id": 1})
    );
    assert_eq!(
        c.recv_json(),
        json!({"key": "status:1", "type": "string", "value": "ready"})
    );
    redis.wait_numsub("updates:1", 1);
    redis.cmd(&["PUBLISH", "updates:1", "next"]);
    assert_eq!(
        c.recv_json(),
        json!({"channel": "updates:1", "data": "next"})
    );
}

#[test]
fn watch_without_redis_is_refused_clearly() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut c = gw.ws("/ws");
    c.command(json!({"op": "watch", "key": "k", "id": 3}));
    let err = c.recv_json();
    assert_eq!(err["op"], "error");
    assert_eq!(err["id"], 3);
    assert!(err["message"].as_str().unwrap().contains("--redis"));
}

#[test]
fn watch_gets_a_snapshot_when_its_keyspace_channel_is_already_subscribed() {
    let redis = RedisServer::start();
    redis.cmd(&["SET", "shared", "1"]);
    let gw = gateway(&redis);
    let mut raw = gw.ws("/ws?subscribe=__keyspace@0__:shared");
    assert_eq!(raw.recv_json()["op"], "subscribed");
    redis.wait_numsub("__keyspace@0__:shared", 1);
    let mut w = gw.ws("/ws?watch=shared");
    assert_eq!(w.recv_json()["op"], "watched");
    assert_eq!(
        w.recv_json(),
        json!({"key": "shared", "type": "string", "value": "1"})
    );
    redis.cmd(&["SET", "shared", "2"]);
    assert_eq!(
        raw.recv_json(),
        json!({"channel": "__keyspace@0__:shared", "data": "set"})
    );
    until(&mut w, |ev| ev["value"] == "2");
}

#[test]
fn watching_a_key_glob_sends_every_matching_change() {
    let redis = RedisServer::start();
    let gw = gateway(&redis);
    let mut w = gw.ws("/ws");
    w.command(json!({"op": "watch", "key": "run:*", "id": 1}));
    assert_eq!(
        w.recv_json(),
        json!({"op": "watched", "key": "run:*", "id": 1})
    );
    let start = std::time::Instant::now();
    while redis.cmd(&["PUBSUB", "NUMPAT"]) != common::Resp::Int(1) {
        assert!(
            start.elapsed() < common::TIMEOUT,
            "keyspace pattern never subscribed"
        );
        std::thread::yield_now();
    }
    redis.cmd(&["HSET", "other", "x", "1"]);
    redis.cmd(&["HSET", "run:7", "ready", "1"]);
    assert_eq!(
        w.recv_json(),
        json!({"key": "run:7", "type": "hash", "value": {"ready": "1"}})
    );
    redis.cmd(&["SET", "run:8", "x"]);
    assert_eq!(
        w.recv_json(),
        json!({"key": "run:8", "type": "string", "value": "x"})
    );
    w.command(json!({"op": "unwatch", "key": "run:*", "id": 2}));
    assert_eq!(
        w.recv_json(),
        json!({"op": "unwatched", "key": "run:*", "id": 2})
    );
}
