//! A local Redis Cluster for tests: N primaries (`redis-server --cluster-enabled yes`) on free
//! ports, each with its cluster bus on another free port, joined by `redis-cli --cluster create
//! … --cluster-replicas 0 --cluster-yes`, and waited for until every node says
//! `cluster_state:ok`. Included with `#[path = "common/cluster.rs"]` next to `mod common;`.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::Instant;

use super::common::{RedisServer, Resp, TIMEOUT, free_port};

/// The nodes of a running cluster, killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` primaries (at least 3, as `redis-cli --cluster create` requires) and joins them.
    pub fn start(n: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli must be installed (scripts/test installs it)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok` and knows every other node.
    pub fn wait_ok(&self) {
        let start = Instant::now();
        for node in &self.nodes {
            loop {
                let info = match node.cmd(&["CLUSTER", "INFO"]) {
                    Resp::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                    _ => String::new(),
                };
                let known = format!("cluster_known_nodes:{}", self.nodes.len());
                if info.contains("cluster_state:ok") && info.contains(&known) {
                    break;
                }
                assert!(start.elapsed() < TIMEOUT * 3, "cluster not ok: {info}");
                std::thread::yield_now();
            }
        }
    }

    /// The node id of `node` (`CLUSTER MYID`).
    pub fn id(&self, node: usize) -> String {
        match self.nodes[node].cmd(&["CLUSTER", "MYID"]) {
            Resp::Bulk(Some(b)) => String::from_utf8(b).expect("UTF-8 id"),
            other => panic!("CLUSTER MYID: {other:?}"),
        }
    }

    /// The index of the node that answers `GET key` without a redirection.
    pub fn owner_index(&self, key: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| !matches!(n.cmd(&["GET", key]), Resp::Error(_)))
            .unwrap_or_else(|| panic!("no node owns {key}"))
    }

    /// A name `<prefix><n>` whose slot `node` owns.
    pub fn name_on(&self, node: usize, prefix: &str) -> String {
        (0..10_000)
            .map(|i| format!("{prefix}{i}"))
            .find(|name| self.owner_index(name) == node)
            .unwrap_or_else(|| panic!("no {prefix}N on node {node}"))
    }

    /// `PUBSUB SHARDNUMSUB channel` on `node`.
    pub fn shardnumsub(&self, node: usize, channel: &str) -> i64 {
        match self.nodes[node].cmd(&["PUBSUB", "SHARDNUMSUB", channel]) {
            Resp::Array(items) => match items.get(1) {
                Some(Resp::Int(n)) => *n,
                other => panic!("SHARDNUMSUB: {other:?}"),
            },
            other => panic!("SHARDNUMSUB: {other:?}"),
        }
    }

    /// `PUBSUB NUMSUB channel` summed over every node (ordinary subscriptions are node-local).
    pub fn numsub(&self, channel: &str) -> i64 {
        self.nodes
            .iter()
            .map(|n| match n.cmd(&["PUBSUB", "NUMSUB", channel]) {
                Resp::Array(items) => match items.get(1) {
                    Some(Resp::Int(n)) => *n,
                    _ => 0,
                },
                _ => 0,
            })
            .sum()
    }

    /// Waits until `check()` holds; fails after [`TIMEOUT`] with `what`.
    pub fn wait(&self, what: &str, check: impl Fn(&RedisCluster) -> bool) {
        let start = Instant::now();
        while !check(self) {
            assert!(
                start.elapsed() < TIMEOUT,
                "cluster: waited too long for {what}"
            );
            std::thread::yield_now();
        }
    }

    /// Runs `args` on the node that owns `key`'s slot (following `-MOVED` by asking each node).
    pub fn cmd_for(&self, args: &[&str]) -> Resp {
        for node in &self.nodes {
            match node.cmd(args) {
                Resp::Error(e) if e.starts_with("MOVED") || e.starts_with("ASK") => continue,
                other => return other,
            }
        }
        panic!("no node took {args:?}")
    }

    /// Moves empty slot `slot` from node `from` to node `to` the way `redis-cli --cluster
    /// reshard` does: IMPORTING on the target, MIGRATING on the source, then `SETSLOT … NODE`
    /// on the target, the source and the rest.
    pub fn migrate_slot(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        let (from_id, to_id) = (self.id(from), self.id(to));
        let ok = Resp::Simple("OK".into());
        assert_eq!(
            self.nodes[to].cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
            ok
        );
        assert_eq!(
            self.nodes[from].cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]),
            ok
        );
        let order = [to, from]
            .into_iter()
            .chain((0..self.nodes.len()).filter(|i| *i != to && *i != from));
        for i in order {
            assert_eq!(
                self.nodes[i].cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]),
                ok
            );
        }
    }
}
