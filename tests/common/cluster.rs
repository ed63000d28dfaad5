//! A local Redis Cluster for tests: N primaries (`redis-server --cluster-enabled yes`) on free
//! ports, each with its cluster bus on another free port, joined by `redis-cli --cluster create
//! … --cluster-replicas 0 --cluster-yes`, and waited for until every node says
//! `cluster_state:ok`. Included with `#[path = "common/cluster.rs"]` next to `mod common;`.

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
}
