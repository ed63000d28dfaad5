//! Redis pub/sub through the gateway: PUBLISH fans out across all shards, patterns work, HTTP
//! publishes go through Redis, and the process holds exactly one Redis subscription per channel
//! (checked with PUBSUB NUMSUB / CHANNELS / NUMPAT) through many clients' subscribes and leaves.

mod common;

use common::{Gateway, RedisClient, RedisServer, Resp};
use serde_json::json;

fn gateway(redis: &RedisServer, shards: &str) -> Gateway {
    Gateway::start(&["--shards", shards, "--redis", &redis.url(0)])
}

#[test]
fn publish_fans_out_across_all_shards_and_patterns_work() {
    let redis = RedisServer::start();
    let gw = gateway(&redis, "4");
    let mut clients: Vec<_> = (0..40).map(|_| gw.ws("/ws?subscribe=news")).collect();
    for c in &mut clients {
        assert_eq!(c.recv_json()["op"], "subscribed");
    }
    for shard in 0..4 {
        assert!(gw.metric(&format!("ringcast_shard_websockets{{shard=\"{shard}\"}}")) > 0);
    }
    redis.wait_numsub("news", 1);
    let mut pub_client = RedisClient::connect(redis.port);
    for i in 0..20 {
        let reply = pub_client.cmd(&["PUBLISH", "news", &format!("{{\"n\":{i}}}")]);
        assert_eq!(
            reply,
            Resp::Int(1),
            "one Redis subscriber for the whole process"
        );
    }
    for c in &mut clients {
        for i in 0..20 {
            assert_eq!(c.recv_json(), json!({"channel": "news", "data": {"n": i}}));
        }
    }

    let mut p = gw.ws("/ws");
    p.command(json!({"op": "psubscribe", "pattern": "news.*", "id": 1}));
    assert_eq!(p.recv_json()["op"], "psubscribed");
    redis.wait_numpat(1);
    pub_client.cmd(&["PUBLISH", "news.eu", "plain text"]);
    assert_eq!(
        p.recv_json(),
        json!({"channel": "news.eu", "pattern": "news.*", "data": "plain text"})
    );
}

#[test]
fn http_publish_goes_through_redis() {
    let redis = RedisServer::start();
    let gw = gateway(&redis, "2");
    let mut c = gw.ws("/ws?subscribe=via-http");
    c.recv_json();
    redis.wait_numsub("via-http", 1);
    // A plain Redis subscriber sees it too, so the message really went through Redis.
    let mut sub = RedisClient::connect(redis.port);
    sub.cmd(&["SUBSCRIBE", "via-http"]);
    redis.wait_numsub("via-http", 2);
    gw.publish("via-http", &json!({"x": 1}));
    assert_eq!(
        c.recv_json(),
        json!({"channel": "via-http", "data": {"x": 1}})
    );
    match sub.read() {
        Resp::Array(items) => assert_eq!(items[2], Resp::Bulk(Some(br#"{"x":1}"#.to_vec()))),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn numsub_refcount_follows_many_clients() {
    let redis = RedisServer::start();
    let gw = gateway(&redis, "4");
    let mut clients: Vec<_> = (0..30).map(|_| gw.ws("/ws")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.subscribe("shared");
        c.subscribe(&format!("own{i}"));
    }
    redis.wait_numsub("shared", 1);
    redis.wait_numsub("own29", 1);
    match redis.cmd(&["PUBSUB", "CHANNELS"]) {
        Resp::Array(items) => assert_eq!(items.len(), 31),
        other => panic!("{other:?}"),
    }
    // Half unsubscribe by command, the rest but one leave by closing.
    for c in clients.iter_mut().take(15) {
        c.command(json!({"op": "unsubscribe", "channel": "shared", "id": 9}));
        assert_eq!(c.recv_json()["op"], "unsubscribed");
    }
    let last = clients.pop().unwrap();
    drop(clients);
    gw.wait_metric("ringcast_websockets", |n| n == 1);
    redis.wait_numsub("shared", 1);
    // The 29 leavers' UNSUBSCRIBEs are batched and asynchronous: wait until Redis shows only
    // the two channels still wanted.
    for i in 0..29 {
        redis.wait_numsub(&format!("own{i}"), 0);
    }
    match redis.cmd(&["PUBSUB", "CHANNELS"]) {
        Resp::Array(items) => assert_eq!(items.len(), 2, "{items:?}"),
        other => panic!("{other:?}"),
    }
    drop(last);
    redis.wait_numsub("shared", 0);
    redis.wait_numsub("own29", 0);
}

#[test]
fn resp2_works_as_well_as_resp3() {
    let redis = RedisServer::start();
    redis.cmd(&["SET", "k", "v1"]);
    let gw = Gateway::start(&[
        "--shards",
        "2",
        "--redis",
        &redis.url(0),
        "--redis-resp",
        "2",
    ]);
    let mut c = gw.ws("/ws?subscribe=r2&watch=k");
    assert_eq!(c.recv_json()["op"], "subscribed");
    assert_eq!(c.recv_json()["op"], "watched");
    assert_eq!(
        c.recv_json(),
        json!({"key": "k", "type": "string", "value": "v1"})
    );
    redis.wait_numsub("r2", 1);
    redis.cmd(&["PUBLISH", "r2", "[1,2]"]);
    assert_eq!(c.recv_json(), json!({"channel": "r2", "data": [1, 2]}));
    redis.cmd(&["SET", "k", "v2"]);
    assert_eq!(
        c.recv_json(),
        json!({"key": "k", "type": "string", "value": "v2"})
    );
}
