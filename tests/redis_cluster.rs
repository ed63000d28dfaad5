//! The Redis Cluster source (issue 13, point 4) against a real local cluster of 3 primaries:
//! ordinary and sharded channels fan out with one subscription each (`PUBSUB NUMSUB`,
//! `PUBSUB SHARDNUMSUB`), a publish through the HTTP API reaches a sharded channel
//! (`SPUBLISH`), a Preflight run hash and a BESS battery on different primaries update their
//! clients, a slot migration in the middle of a publish stream re-homes the sharded
//! subscription and loses none, and `kill -9` plus restart of a primary is survived.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use cluster::RedisCluster;
use common::{Client, Gateway, Resp, TIMEOUT, TempPath};
use ringcast::source::redis::cluster::key_slot;
use serde_json::{Value, json};

/// A gateway whose one source is the cluster (seeded with node 0 only: the rest is
/// discovered), with `orders:*` sharded.
fn gateway(c: &RedisCluster, file: &TempPath) -> Gateway {
    std::fs::write(
        &file.0,
        format!(
            "[[source]]\nname = \"cluster\"\nredis = \"redis+cluster://127.0.0.1:{}\"\n\
             sharded_channels = [\"orders:*\"]\n",
            c.nodes[0].port
        ),
    )
    .expect("config file");
    Gateway::start(&["--shards", "2", "--config", file.0.to_str().expect("path")])
}

fn subscribed(gw: &Gateway, channel: &str) -> Client {
    let mut client = gw.ws("/ws");
    client.subscribe(channel);
    client
}

/// The next message's `data` on `channel`, skipping nothing else (the clients here subscribe
/// to one channel each).
fn data(client: &mut Client, channel: &str) -> Value {
    let m = client.recv_json();
    assert_eq!(m["channel"], channel, "{m}");
    m["data"].clone()
}

#[test]
fn ordinary_and_sharded_channels_fan_out_with_one_subscription_each() {
    let c = RedisCluster::start(3);
    let file = TempPath::new("cluster.toml");
    let gw = gateway(&c, &file);
    gw.wait_metric("ringcast_source_redis_up{source=\"cluster\"}", |v| v == 1);
    assert_eq!(
        gw.metric("ringcast_source_redis_cluster_nodes{source=\"cluster\"}"),
        3
    );
    // One sharded channel per primary, and one ordinary channel.
    let sharded: Vec<String> = (0..3).map(|n| c.name_on(n, "orders:")).collect();
    let mut clients: Vec<(String, Client)> = Vec::new();
    for channel in sharded.iter().chain([&"news".to_owned()]) {
        for _ in 0..2 {
            clients.push((channel.clone(), subscribed(&gw, channel)));
        }
    }
    // Each name once, on its owner (sharded) or on one node (ordinary).
    for (owner, channel) in sharded.iter().enumerate() {
        c.wait(&format!("SHARDNUMSUB {channel} = 1 on its owner"), |c| {
            c.shardnumsub(owner, channel) == 1
        });
        for other in (0..3).filter(|n| *n != owner) {
            assert_eq!(
                c.shardnumsub(other, channel),
                0,
                "{channel} on node {other}"
            );
        }
        assert_eq!(c.numsub(channel), 0, "{channel} is not an ordinary channel");
    }
    c.wait("NUMSUB news = 1 across the cluster", |c| {
        c.numsub("news") == 1
    });

    // SPUBLISH on each owner; PUBLISH on every node (the cluster broadcasts it).
    for (owner, channel) in sharded.iter().enumerate() {
        let payload = json!({ "to": channel }).to_string();
        assert_eq!(
            c.nodes[owner].cmd(&["SPUBLISH", channel, &payload]),
            Resp::Int(1)
        );
    }
    for node in &c.nodes {
        assert!(matches!(
            node.cmd(&["PUBLISH", "news", &format!("{{\"via\":{}}}", node.port)]),
            Resp::Int(_)
        ));
    }
    for (channel, client) in &mut clients {
        if channel == "news" {
            // Each node's publish, in any order: the cluster bus carries the others' to the
            // node holding the subscription.
            let mut via: Vec<u64> = (0..3)
                .map(|_| data(client, channel)["via"].as_u64().expect("port"))
                .collect();
            via.sort_unstable();
            let mut ports: Vec<u64> = c.nodes.iter().map(|n| u64::from(n.port)).collect();
            ports.sort_unstable();
            assert_eq!(via, ports);
        } else {
            assert_eq!(data(client, channel), json!({ "to": channel }));
        }
    }
    // The HTTP API publishes a sharded channel with SPUBLISH (an ordinary PUBLISH would not
    // reach a sharded subscription) and an ordinary one with PUBLISH.
    gw.publish(&sharded[2], &json!({"api": 1}));
    gw.publish("news", &json!({"api": 2}));
    for (channel, client) in &mut clients {
        let want = if channel == "news" { 2 } else { 1 };
        if channel == "news" || channel == &sharded[2] {
            assert_eq!(data(client, channel), json!({ "api": want }));
        }
    }
    // Leaving unsubscribes once the last client is gone, on the owner.
    let owner = 1;
    clients.retain(|(ch, _)| ch != &sharded[owner]);
    c.wait("SHARDNUMSUB back to 0", |c| {
        c.shardnumsub(owner, &sharded[owner]) == 0
    });
}

#[test]
fn preflight_and_bess_keys_on_different_primaries_update_their_clients() {
    let c = RedisCluster::start(3);
    let url = format!("redis+cluster://127.0.0.1:{}", c.nodes[1].port);
    // A run and a battery whose keys live on different primaries.
    let battery = (1..100)
        .find(|i| c.owner_index(&format!("battery:{i}:data")) == 2)
        .expect("a battery on node 2");
    let battery_key = format!("battery:{battery}:data");
    let run = c.name_on(0, "run-");
    assert_ne!(c.owner_index(&run), c.owner_index(&battery_key));

    let wepp = Gateway::weppcloud_at(&url, &[]);
    let mut pre = Client::connect(
        wepp.route_addr("preflight"),
        &format!("/weppcloud-microservices/preflight/{run}"),
    );
    let snap: Value = serde_json::from_str(&pre.recv_text()).expect("json");
    assert_eq!(snap["checklist"]["channels"], false, "{snap}");
    // Written on its owner, node 0: its keyspace notification is node-local.
    assert_eq!(
        c.nodes[0].cmd(&["HSET", &run, "timestamps:build_channels", "100"]),
        Resp::Int(1)
    );
    let update: Value = serde_json::from_str(&pre.recv_text()).expect("json");
    assert_eq!(update["type"], "preflight");
    assert_eq!(update["checklist"]["channels"], true, "{update}");

    // BESS: the id set lives wherever its slot is; the battery on node 2.
    assert!(matches!(
        c.cmd_for(&["SADD", "info:batteries:ids", &battery.to_string()]),
        Resp::Int(_)
    ));
    let fields = ["timestamp", "1731801715542", "voltage", "136"];
    let mut hset = vec!["HSET", battery_key.as_str()];
    hset.extend(fields);
    assert!(matches!(c.nodes[2].cmd(&hset), Resp::Int(2)));
    let bess = Gateway::bess_at(&url, &[]);
    let mut b = Client::connect(bess.route_addr("bess"), "/ws");
    let snapshot: Value = serde_json::from_str(&b.recv_text()).expect("json");
    assert_eq!(
        snapshot,
        json!({ battery_key.clone(): {"timestamp": 1731801715542_i64, "voltage": 136} })
    );
    // The producer's update: HSET on the owner, PUBLISH on any node.
    assert!(matches!(
        c.nodes[2].cmd(&["HSET", &battery_key, "voltage", "140"]),
        Resp::Int(0)
    ));
    c.wait("the bess pattern subscription", |c| {
        c.nodes
            .iter()
            .map(|n| match n.cmd(&["PUBSUB", "NUMPAT"]) {
                Resp::Int(v) => v,
                _ => 0,
            })
            .sum::<i64>()
            == 1
    });
    assert!(matches!(
        c.nodes[0].cmd(&["PUBLISH", &battery_key, "update"]),
        Resp::Int(_)
    ));
    let update: Value = serde_json::from_str(&b.recv_text()).expect("json");
    assert_eq!(update[&battery_key]["voltage"], 140, "{update}");
    assert_eq!(
        update[&battery_key]["timestamp"], 1731801715542_i64,
        "{update}"
    );
}

#[test]
fn a_slot_migration_mid_stream_rehomes_the_sharded_subscription() {
    let c = RedisCluster::start(3);
    let file = TempPath::new("cluster.toml");
    let gw = gateway(&c, &file);
    let from = 0;
    let to = 1;
    let channel = c.name_on(from, "orders:");
    let slot = key_slot(channel.as_bytes());
    // A second sharded channel on the same primary, in a slot that stays.
    let stays = (0..10_000)
        .map(|i| format!("orders:stay:{i}"))
        .find(|n| c.owner_index(n) == from && key_slot(n.as_bytes()) != slot)
        .expect("another slot on the same node");
    let mut client = subscribed(&gw, &channel);
    let _other = subscribed(&gw, &stays);
    c.wait("the sharded subscriptions on their owner", |c| {
        c.shardnumsub(from, &channel) == 1 && c.shardnumsub(from, &stays) == 1
    });
    // Past the start-up refreshes (the first one finds the node threads not yet connected and
    // retries): the next periodic one is 30 s away, so only the node's `sunsubscribe` can
    // re-home the subscription within the test's wait.
    gw.wait_metric("ringcast_source_redis_up{source=\"cluster\"}", |v| v == 1);
    gw.wait_metric(
        "ringcast_source_redis_cluster_refreshes_total{source=\"cluster\"}",
        |v| v >= 2,
    );

    // A publisher that follows the slot wherever it is, numbering its messages.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.port).collect();
    let publisher = {
        let (stop, sent, channel) = (stop.clone(), sent.clone(), channel.clone());
        std::thread::spawn(move || {
            let mut conns: Vec<common::RedisClient> = ports
                .iter()
                .map(|p| common::RedisClient::connect(*p))
                .collect();
            let mut at = 0;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let payload = seq.to_string();
                match conns[at].cmd(&["SPUBLISH", &channel, &payload]) {
                    Resp::Int(_) => {
                        seq += 1;
                        sent.store(seq, Ordering::Relaxed);
                    }
                    Resp::Error(e) if e.starts_with("MOVED") => {
                        let port: u16 = e
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .expect("MOVED port");
                        at = ports.iter().position(|p| *p == port).expect("known node");
                    }
                    other => panic!("SPUBLISH: {other:?}"),
                }
            }
        })
    };
    let mut last: Option<u64> = None;
    let mut next = |client: &mut Client| -> u64 {
        let n = data(client, &channel).as_u64().expect("a number");
        if let Some(prev) = last {
            assert!(n > prev, "out of order: {n} after {prev}");
        }
        last = Some(n);
        n
    };
    // Mid-stream: some messages have arrived.
    while next(&mut client) < 50 {}
    c.migrate_slot(slot, from, to);
    c.wait("the subscription re-homed to the new owner", |c| {
        c.shardnumsub(to, &channel) == 1 && c.shardnumsub(from, &channel) == 0
    });
    assert_eq!(c.shardnumsub(2, &channel), 0);
    // Everything published from now on arrives, in order.
    let mark = sent.load(Ordering::Relaxed);
    let start = Instant::now();
    while next(&mut client) < mark + 50 {
        assert!(
            start.elapsed() < TIMEOUT,
            "the stream stalled after the move"
        );
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("publisher");
    // Only the subscription whose slot moved was re-homed.
    assert_eq!(
        gw.metric("ringcast_source_redis_cluster_rehomed_total{source=\"cluster\"}"),
        1
    );
    assert_eq!(c.shardnumsub(from, &stays), 1);
    assert_eq!(
        gw.metric("ringcast_source_redis_cluster_nodes{source=\"cluster\"}"),
        3
    );
}

#[test]
fn kill_9_and_restart_of_a_primary_is_survived() {
    let mut c = RedisCluster::start(3);
    let file = TempPath::new("cluster.toml");
    let gw = gateway(&c, &file);
    let victim = 2;
    let sharded = c.name_on(victim, "orders:");
    let watched = c.name_on(victim, "run-");
    let mut s = subscribed(&gw, &sharded);
    let mut o = subscribed(&gw, "news");
    let mut w = gw.ws(&format!("/ws?watch={watched}"));
    assert_eq!(w.recv_json()["op"], "watched");
    assert_eq!(
        w.recv_json(),
        json!({"key": watched, "type": "none", "value": null})
    );
    c.wait("subscriptions in place", |c| {
        c.shardnumsub(victim, &sharded) == 1 && c.numsub("news") == 1
    });
    gw.wait_metric("ringcast_source_redis_up{source=\"cluster\"}", |v| v == 1);

    c.nodes[victim].kill9();
    gw.wait_metric("ringcast_source_redis_up{source=\"cluster\"}", |v| v == 0);
    c.nodes[victim].restart();
    c.wait_ok();
    gw.wait_metric("ringcast_source_redis_up{source=\"cluster\"}", |v| v == 1);
    let keyspace = format!("__keyspace@0__:{watched}");
    c.wait("subscriptions back on the restarted primary", |c| {
        c.shardnumsub(victim, &sharded) == 1
            && c.numsub("news") == 1
            && matches!(c.nodes[victim].cmd(&["PUBSUB", "NUMSUB", &keyspace]),
                Resp::Array(ref items) if items.get(1) == Some(&Resp::Int(1)))
    });
    // The same clients, never dropped, get what is published after the restart.
    c.nodes[victim].cmd(&["SPUBLISH", &sharded, "\"after\""]);
    assert_eq!(data(&mut s, &sharded), json!("after"));
    c.nodes[0].cmd(&["PUBLISH", "news", "\"after\""]);
    assert_eq!(data(&mut o, "news"), json!("after"));
    c.nodes[victim].cmd(&["SET", &watched, "v"]);
    assert_eq!(
        w.recv_json(),
        json!({"key": watched, "type": "string", "value": "v"})
    );
    assert!(gw.metric("ringcast_source_redis_reconnects_total{source=\"cluster\"}") >= 1);
}
