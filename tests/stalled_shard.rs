//! A shard that stops draining its inbox (the `--debug-stall-shard` test hook) delays no one:
//! the hub drops that shard's events (counted) and every other shard gets everything, in order.

mod common;

use common::{Client, Gateway, RedisClient, RedisServer};
use serde_json::json;

#[test]
fn a_stalled_shard_does_not_delay_the_others() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&[
        "--shards",
        "2",
        "--redis",
        &redis.url(0),
        "--debug-stall-shard",
        "1",
        "--shard-inbox",
        "64",
    ]);
    // Learn which shard each client landed on from the per-shard gauge.
    let mut healthy: Vec<Client> = Vec::new();
    let mut stalled: Vec<Client> = Vec::new();
    while healthy.len() < 5 || stalled.is_empty() {
        let before = gw.metric("ringcast_shard_websockets{shard=\"1\"}");
        let mut c = gw.ws("/ws?subscribe=s");
        c.recv_json();
        if gw.metric("ringcast_shard_websockets{shard=\"1\"}") > before {
            stalled.push(c);
        } else {
            healthy.push(c);
        }
        assert!(
            healthy.len() + stalled.len() < 200,
            "connections never spread over both shards"
        );
    }
    redis.wait_numsub("s", 1);
    let mut p = RedisClient::connect(redis.port);
    // Batches small enough for a healthy shard's inbox; in total far more than the stalled
    // shard's inbox holds.
    const BATCHES: usize = 10;
    const BATCH: usize = 20;
    for b in 0..BATCHES {
        for i in 0..BATCH {
            p.send(&["PUBLISH", "s", &(b * BATCH + i).to_string()]);
        }
        for _ in 0..BATCH {
            p.read();
        }
        for c in &mut healthy {
            for i in 0..BATCH {
                assert_eq!(
                    c.recv_json(),
                    json!({"channel": "s", "data": b * BATCH + i})
                );
            }
        }
    }
    assert!(gw.metric("ringcast_shard_queue_drops_total{shard=\"1\"}") > 0);
    assert_eq!(
        gw.metric("ringcast_shard_queue_drops_total{shard=\"0\"}"),
        0
    );
}
