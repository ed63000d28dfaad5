//! Redis Cluster topology against a real local cluster of 3 primaries (issue 13, point 4, the
//! first piece): `cluster::discover` from any seed node gives every slot its primary, agreeing
//! with where the cluster itself serves each key (no `-MOVED`) and with the `-MOVED` replies of
//! the other nodes; after a slot is moved with `CLUSTER SETSLOT … NODE`, a new discovery names
//! the new owner.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::time::{Duration, Instant};

use cluster::RedisCluster;
use common::{Resp, TIMEOUT};
use ringcast::source::redis::RedisUrl;
use ringcast::source::redis::cluster::{Redirect, SLOTS, Topology, discover, key_slot};

fn topology(seed: u16) -> Topology {
    let url = RedisUrl::parse(&format!("redis://127.0.0.1:{seed}")).expect("url");
    discover(&url, Duration::from_secs(2)).expect("discover")
}

#[test]
fn discovery_agrees_with_the_cluster_and_follows_a_moved_slot() {
    let c = RedisCluster::start(3);
    let keys: Vec<String> = (0..30).map(|i| format!("run:{i}")).collect();
    for seed in &c.nodes {
        let t = topology(seed.port);
        assert_eq!(t.covered(), usize::from(SLOTS));
        assert_eq!(t.primaries().len(), 3);
        for key in &keys {
            let owner = c.owner_index(key);
            let want = c.nodes[owner].port;
            assert_eq!(
                t.owner_of(key.as_bytes()).map(|a| a.port),
                Some(want),
                "{key}"
            );
            // Every other node redirects there, and the redirection reads back the same.
            for (i, other) in c.nodes.iter().enumerate().filter(|(i, _)| *i != owner) {
                let Resp::Error(e) = other.cmd(&["GET", key]) else {
                    panic!("node {i} served {key} it does not own");
                };
                match Redirect::parse(&e) {
                    Some(Redirect::Moved { slot, to }) => {
                        assert_eq!(slot, key_slot(key.as_bytes()));
                        assert_eq!(to.port, want);
                    }
                    other => panic!("{e}: {other:?}"),
                }
            }
        }
    }
    // Move an empty slot to another primary, as a resharding does for each slot.
    let key = "run:7";
    let slot = key_slot(key.as_bytes()).to_string();
    let from = c.owner_index(key);
    let to = (from + 1) % 3;
    let target = c.id(to);
    for node in &c.nodes {
        assert_eq!(
            node.cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &target]),
            Resp::Simple("OK".into())
        );
    }
    let start = Instant::now();
    loop {
        let t = topology(c.nodes[from].port);
        if t.owner_of(key.as_bytes()).map(|a| a.port) == Some(c.nodes[to].port) {
            break;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the moved slot was never rediscovered"
        );
        std::thread::yield_now();
    }
    assert_eq!(c.owner_index(key), to);
}
