//! Redis Cluster topology (issue 13, point 4): which primary owns which hash slot, read from
//! `CLUSTER SHARDS` (Redis 7) or, on older servers, `CLUSTER SLOTS`; the key slot of a name;
//! and the `-MOVED` / `-ASK` redirections.
//!
//! Pure except [`discover`], which asks one seed node over a blocking [`RedisConn`] (called by
//! the Redis source's own threads, never a shard). The cluster source is built on it:
//! [`subs`] places and keeps the subscriptions (keyspace on every primary, sharded channels on
//! their owners, the rest on one node) and refreshes the topology; [`commands`] sends key reads
//! and publishes to the owning primary, following redirections.
//!
//! Invariants: a [`Topology`] covers slots in ascending, non-overlapping ranges, each with one
//! primary address; a slot no range covers has no owner (the cluster is down for it, and the
//! caller retries after a refresh). Parsing never panics on a malformed reply: it is an error
//! naming what was wrong.

use std::time::Duration;

pub mod commands;
pub mod subs;

use super::RedisUrl;
use super::conn::{RedisConn, RedisError};
use super::resp::{Proto, Value};

/// How many hash slots a cluster has.
pub const SLOTS: u16 = 16_384;

/// The hash slot of `key` (CRC16 of the key, or of its `{hash tag}`, modulo 16384), as the
/// cluster computes it; `redis-protocol`'s implementation.
pub fn key_slot(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
}

/// A node's address, as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One range of slots and the primary serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    /// First slot, inclusive.
    pub start: u16,
    /// Last slot, inclusive.
    pub end: u16,
    /// The primary.
    pub primary: NodeAddr,
}

/// Which primary serves each slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Sorted by `start`, non-overlapping.
    ranges: Vec<SlotRange>,
}

/// Why a topology reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected cluster topology reply: {0}")]
pub struct TopologyError(String);

fn bad(what: impl Into<String>) -> TopologyError {
    TopologyError(what.into())
}

impl Topology {
    /// A topology from ranges in any order; overlapping ranges are an error.
    pub fn new(mut ranges: Vec<SlotRange>) -> Result<Topology, TopologyError> {
        ranges.sort_by_key(|r| r.start);
        for pair in ranges.windows(2) {
            if pair[0].end >= pair[1].start {
                return Err(bad(format!(
                    "slot ranges {}-{} and {}-{} overlap",
                    pair[0].start, pair[0].end, pair[1].start, pair[1].end
                )));
            }
        }
        if let Some(r) = ranges.iter().find(|r| r.start > r.end || r.end >= SLOTS) {
            return Err(bad(format!("slot range {}-{} is invalid", r.start, r.end)));
        }
        Ok(Topology { ranges })
    }

    /// The primary serving `slot`, if any range covers it.
    pub fn owner(&self, slot: u16) -> Option<&NodeAddr> {
        let i = self.ranges.partition_point(|r| r.end < slot);
        self.ranges
            .get(i)
            .filter(|r| r.start <= slot)
            .map(|r| &r.primary)
    }

    /// The primary serving `key`.
    pub fn owner_of(&self, key: &[u8]) -> Option<&NodeAddr> {
        self.owner(key_slot(key))
    }

    /// Every primary, each once, in address order.
    pub fn primaries(&self) -> Vec<&NodeAddr> {
        let mut out: Vec<&NodeAddr> = self.ranges.iter().map(|r| &r.primary).collect();
        out.sort();
        out.dedup();
        out
    }

    /// How many slots have an owner (16384 on a healthy cluster).
    pub fn covered(&self) -> usize {
        self.ranges
            .iter()
            .map(|r| usize::from(r.end - r.start) + 1)
            .sum()
    }

    /// The slot ranges, in order.
    pub fn ranges(&self) -> &[SlotRange] {
        &self.ranges
    }

    /// Reads a `CLUSTER SHARDS` reply (Redis 7): per shard, `slots` (start/end pairs) and
    /// `nodes` (maps with `endpoint` or `ip`, `port`, `role`, `health`). A shard without a
    /// healthy primary serves nothing.
    pub fn from_shards(reply: &Value) -> Result<Topology, TopologyError> {
        let Value::Array(shards) = reply else {
            return Err(bad("CLUSTER SHARDS: not an array"));
        };
        let mut ranges = Vec::new();
        for shard in shards {
            let slots = field(shard, "slots").ok_or_else(|| bad("a shard has no slots"))?;
            let Value::Array(bounds) = slots else {
                return Err(bad("a shard's slots are not an array"));
            };
            let Value::Array(nodes) = field(shard, "nodes").ok_or_else(|| bad("no nodes"))? else {
                return Err(bad("a shard's nodes are not an array"));
            };
            let primary = nodes.iter().find(|n| {
                text(field(n, "role")) == Some("master")
                    && text(field(n, "health")).is_none_or(|h| h == "online")
            });
            let Some(primary) = primary else { continue };
            let host = text(field(primary, "endpoint"))
                .filter(|e| !e.is_empty() && *e != "?")
                .or_else(|| text(field(primary, "ip")))
                .ok_or_else(|| bad("a primary has no endpoint or ip"))?;
            let port = field(primary, "port")
                .and_then(int)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad("a primary has no port"))?;
            if bounds.len() % 2 != 0 {
                return Err(bad("a shard's slots are not start/end pairs"));
            }
            for pair in bounds.chunks_exact(2) {
                let (Some(start), Some(end)) = (slot(&pair[0]), slot(&pair[1])) else {
                    return Err(bad("a slot bound is not a slot number"));
                };
                ranges.push(SlotRange {
                    start,
                    end,
                    primary: NodeAddr {
                        host: host.to_owned(),
                        port,
                    },
                });
            }
        }
        Topology::new(ranges)
    }

    /// Reads a `CLUSTER SLOTS` reply (any Redis with cluster support): `[start, end,
    /// [host, port, id, …], replicas…]` per range.
    pub fn from_slots(reply: &Value) -> Result<Topology, TopologyError> {
        let Value::Array(entries) = reply else {
            return Err(bad("CLUSTER SLOTS: not an array"));
        };
        let mut ranges = Vec::new();
        for entry in entries {
            let Value::Array(parts) = entry else {
                return Err(bad("a CLUSTER SLOTS entry is not an array"));
            };
            let (Some(start), Some(end), Some(Value::Array(primary))) = (
                parts.first().and_then(slot),
                parts.get(1).and_then(slot),
                parts.get(2),
            ) else {
                return Err(bad("a CLUSTER SLOTS entry lacks start, end or primary"));
            };
            let host = primary
                .first()
                .and_then(|v| text(Some(v)))
                .ok_or_else(|| bad("a primary has no host"))?;
            let port = primary
                .get(1)
                .and_then(int)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad("a primary has no port"))?;
            ranges.push(SlotRange {
                start,
                end,
                primary: NodeAddr {
                    host: host.to_owned(),
                    port,
                },
            });
        }
        Topology::new(ranges)
    }
}

/// A `-MOVED` or `-ASK` error: where the slot lives now (MOVED), or for this one command (ASK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `MOVED <slot> <host:port>`: the slot moved for good; refresh the topology.
    Moved {
        /// The slot.
        slot: u16,
        /// Its new primary.
        to: NodeAddr,
    },
    /// `ASK <slot> <host:port>`: send `ASKING` and this one command there.
    Ask {
        /// The slot.
        slot: u16,
        /// The node importing it.
        to: NodeAddr,
    },
}

impl Redirect {
    /// Reads an error reply's text; `None` for any other error.
    pub fn parse(error: &str) -> Option<Redirect> {
        let mut words = error.split_ascii_whitespace();
        let kind = words.next()?;
        let slot: u16 = words.next()?.parse().ok().filter(|&s| s < SLOTS)?;
        let (host, port) = words.next()?.rsplit_once(':')?;
        let to = NodeAddr {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: port.parse().ok()?,
        };
        match kind {
            "MOVED" => Some(Redirect::Moved { slot, to }),
            "ASK" => Some(Redirect::Ask { slot, to }),
            _ => None,
        }
    }
}

/// Asks the seed node at `url` for the topology: `CLUSTER SHARDS`, or `CLUSTER SLOTS` when the
/// server does not know it (Redis 6).
pub fn discover(url: &RedisUrl, timeout: Duration) -> Result<Topology, DiscoverError> {
    let mut conn = RedisConn::connect(url, Proto::Resp2, timeout)?;
    match conn.call(&[b"CLUSTER", b"SHARDS"]) {
        Ok(reply) => Ok(Topology::from_shards(&reply)?),
        Err(RedisError::Reply(_)) => {
            Ok(Topology::from_slots(&conn.call(&[b"CLUSTER", b"SLOTS"])?)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Why [`discover`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The seed node could not be reached or refused the command.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// Its reply made no sense.
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// Field `name` of a map-like value: a RESP3 map, or RESP2's flat `[k, v, k, v…]` array.
fn field<'v>(v: &'v Value, name: &str) -> Option<&'v Value> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(Some(k)) == Some(name))
            .map(|(_, v)| v),
        Value::Array(items) => items
            .chunks_exact(2)
            .find(|kv| text(Some(&kv[0])) == Some(name))
            .map(|kv| &kv[1]),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::Bulk(b) | Value::Simple(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::Bulk(b) | Value::Simple(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn slot(v: &Value) -> Option<u16> {
    int(v)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&s| s < SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn node(host: &str, port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk("abc"),
            bulk("port"),
            Value::Int(port),
            bulk("ip"),
            bulk(host),
            bulk("endpoint"),
            bulk(host),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            Value::Int(0),
            bulk("health"),
            bulk(health),
        ])
    }

    fn shard(slots: &[i64], nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk("slots"),
            Value::Array(slots.iter().map(|&s| Value::Int(s)).collect()),
            bulk("nodes"),
            Value::Array(nodes),
        ])
    }

    #[test]
    fn key_slots_are_the_clusters_with_hash_tags() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"123456789"), 12_739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"bar"),
            "an empty tag is no tag"
        );
    }

    #[test]
    fn cluster_shards_gives_each_slot_its_online_primary() {
        let reply = Value::Array(vec![
            shard(
                &[0, 5460],
                vec![
                    node("10.0.0.2", 7001, "replica", "online"),
                    node("10.0.0.1", 7000, "master", "online"),
                ],
            ),
            shard(
                &[5461, 10922],
                vec![node("10.0.0.3", 7002, "master", "online")],
            ),
            shard(
                &[10923, 12000, 12001, 16383],
                vec![node("10.0.0.4", 7003, "master", "online")],
            ),
            // A failed primary serves nothing until the cluster elects a new one.
            shard(&[], vec![node("10.0.0.5", 7004, "master", "fail")]),
        ]);
        let t = Topology::from_shards(&reply).expect("valid");
        assert_eq!(t.covered(), usize::from(SLOTS));
        assert_eq!(t.owner(0).map(|a| a.port), Some(7000));
        assert_eq!(t.owner(5460).map(|a| a.port), Some(7000));
        assert_eq!(t.owner(5461).map(|a| a.port), Some(7002));
        assert_eq!(
            t.owner(16_383).map(|a| a.to_string()),
            Some("10.0.0.4:7003".into())
        );
        assert_eq!(t.owner_of(b"foo").map(|a| a.port), Some(7003));
        assert_eq!(t.primaries().len(), 3);
    }

    #[test]
    fn cluster_slots_and_uncovered_slots() {
        let reply = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(99),
            Value::Array(vec![bulk("127.0.0.1"), Value::Int(30_001), bulk("id")]),
            Value::Array(vec![bulk("127.0.0.1"), Value::Int(30_004), bulk("id2")]),
        ])]);
        let t = Topology::from_slots(&reply).expect("valid");
        assert_eq!(t.owner(99).map(|a| a.port), Some(30_001));
        assert_eq!(
            t.owner(100),
            None,
            "no owner: the cluster is down for that slot"
        );
        assert_eq!(t.covered(), 100);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for reply in [
            Value::Int(3),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![shard(&[0], vec![node("h", 1, "master", "online")])]),
            Value::Array(vec![shard(
                &[0, 99_999],
                vec![node("h", 1, "master", "online")],
            )]),
            Value::Array(vec![
                shard(&[0, 10], vec![node("a", 1, "master", "online")]),
                shard(&[5, 20], vec![node("b", 2, "master", "online")]),
            ]),
        ] {
            assert!(Topology::from_shards(&reply).is_err(), "{reply:?}");
        }
        assert!(Topology::from_slots(&Value::Array(vec![Value::Array(vec![])])).is_err());
    }

    #[test]
    fn redirections_are_read_from_error_replies() {
        assert_eq!(
            Redirect::parse("MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved {
                slot: 3999,
                to: NodeAddr {
                    host: "127.0.0.1".into(),
                    port: 6381
                }
            })
        );
        assert_eq!(
            Redirect::parse("ASK 3999 [::1]:6381"),
            Some(Redirect::Ask {
                slot: 3999,
                to: NodeAddr {
                    host: "::1".into(),
                    port: 6381
                }
            })
        );
        for other in [
            "ERR unknown command",
            "MOVED x h:1",
            "MOVED 20000 h:1",
            "ASK 1 nohost",
        ] {
            assert_eq!(Redirect::parse(other), None, "{other}");
        }
    }
}
