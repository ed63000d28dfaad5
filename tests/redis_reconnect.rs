//! Redis goes away (`kill -9`) and comes back on the same port: clients stay connected,
//! `/healthz` says "degraded" meanwhile, the upstream reconnects (counted), resubscribes, and
//! keyspace watchers get a fresh snapshot.

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, RedisServer};
use serde_json::json;

#[test]
fn clients_survive_a_redis_restart() {
    let mut redis = RedisServer::start();
    redis.cmd(&["HSET", "w", "v", "before"]);
    let gw = Gateway::start(&[
        "--shards",
        "2",
        "--redis",
        &redis.url(0),
        "--redis-backoff-max",
        "500ms",
    ]);
    let mut sub = gw.ws("/ws?subscribe=live");
    assert_eq!(sub.recv_json()["op"], "subscribed");
    let mut watcher = gw.ws("/ws?watch=w");
    assert_eq!(watcher.recv_json()["op"], "watched");
    assert_eq!(watcher.recv_json()["value"], json!({"v": "before"}));
    redis.wait_numsub("live", 1);

    redis.kill9();
    let (_, health) = gw.http("GET", "/healthz", &[], b"");
    let start = Instant::now();
    let mut degraded = health.contains("degraded");
    while !degraded {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "healthz never reported degraded"
        );
        degraded = gw.http("GET", "/healthz", &[], b"").1.contains("degraded");
    }

    redis.restart();
    let restarted = Instant::now();
    redis.wait_numsub("live", 1);
    redis.cmd(&["PUBLISH", "live", "after"]);
    assert_eq!(sub.recv_json(), json!({"channel": "live", "data": "after"}));
    assert!(
        restarted.elapsed() < Duration::from_secs(2),
        "took {:?}",
        restarted.elapsed()
    );
    // The restarted Redis has no data: the fresh snapshot says the key is gone.
    assert_eq!(
        watcher.recv_json(),
        json!({"key": "w", "type": "none", "value": null})
    );
    assert!(gw.metric("ringcast_redis_reconnects_total") >= 1);
    assert!(gw.http("GET", "/healthz", &[], b"").1.contains("\"ok\""));
}
