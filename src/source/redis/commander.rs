//! The command thread: a second Redis connection for everything that is not pub/sub:
//! `PUBLISH` for the HTTP API, and key reads for keyspace watches and snapshots.
//!
//! Commands arrive from the hub on a bounded channel. Publishes are pipelined (one write and one
//! read batch for everything queued). A key read is `TYPE` followed by the read that fits the
//! type, rendered to JSON here, off the hub thread. When the connection fails, pending reads are
//! retried after reconnecting (a watcher must end on the latest state); failed publishes are
//! dropped and counted (pub/sub is at-most-once).

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use super::conn::{RedisConn, RedisError};
use super::resp::Value;
use super::{Backoff, Input, RedisSettings};
use crate::metrics::Metrics;
use crate::protocol::{render_key_event, render_key_value_hash, render_string_array, render_zset};
use crate::router::UpstreamMsg;
use crate::source::SourceInput;

/// Most commands pipelined in one batch.
const BATCH: usize = 256;

/// Sends commands about keys: one connection ([`RedisConn`]), or a cluster's connections with
/// each command routed to the primary owning its key's slot
/// ([`super::cluster::commands::Routed`]). The key reads are written once against it.
pub trait KeyCall {
    /// Sends `args`, a command about `key`, and reads its reply; an error reply is
    /// [`RedisError::Reply`].
    fn call_for(&mut self, key: &[u8], args: &[&[u8]]) -> Result<Value, RedisError>;

    /// Sends `HGETALL key` for each key (pipelined where the keys share a connection) and
    /// returns the replies in order, error replies as [`Value::Error`].
    fn hgetall_each(&mut self, keys: &[Bytes]) -> Result<Vec<Value>, RedisError>;
}

impl KeyCall for RedisConn {
    fn call_for(&mut self, _key: &[u8], args: &[&[u8]]) -> Result<Value, RedisError> {
        self.call(args)
    }

    fn hgetall_each(&mut self, keys: &[Bytes]) -> Result<Vec<Value>, RedisError> {
        for key in keys {
            self.queue(&[b"HGETALL", key]);
        }
        self.flush()?;
        keys.iter().map(|_| self.read()).collect()
    }
}

/// A request for the command thread.
#[derive(Debug)]
pub enum Cmd {
    /// `PUBLISH channel payload`.
    Publish {
        /// The channel.
        channel: Bytes,
        /// The payload.
        payload: Bytes,
    },
    /// Read a key and report its value as [`Input::KeyValue`].
    Read {
        /// The key.
        key: Bytes,
    },
    /// `SMEMBERS set`, then `HGETALL prefix+member+suffix` per member, as [`Input::IndexValue`].
    ReadIndex {
        /// The set of ids.
        set: Bytes,
        /// Key prefix.
        prefix: Bytes,
        /// Key suffix.
        suffix: Bytes,
    },
}

/// Runs the command thread until the hub drops its sender.
pub fn run(
    settings: Arc<RedisSettings>,
    rx: Receiver<Cmd>,
    hub: Sender<UpstreamMsg>,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Backoff::new(settings.backoff_max);
    let mut pending: Vec<Cmd> = Vec::new();
    loop {
        let Some(mut conn) = super::connect_or_wait(&settings, &mut backoff, "command") else {
            // Publishes waiting while Redis is down are dropped; reads are kept.
            let before = pending.len();
            pending.retain(|c| !matches!(c, Cmd::Publish { .. }));
            let dropped = (before - pending.len()) as u64;
            metrics.redis[settings.index].publish_errors.add(dropped);
            continue;
        };
        backoff.reset();
        loop {
            if !next_batch(&rx, &mut pending) {
                return;
            }
            match execute(settings.index, &mut conn, &mut pending, &hub, &metrics) {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(redis = %settings.url, error = %e, "redis command connection lost");
                    break;
                }
            }
        }
    }
}

/// Waits for a command when none is pending, then takes what else is queued, up to [`BATCH`].
/// False when the hub dropped its sender (the thread ends).
pub fn next_batch(rx: &Receiver<Cmd>, pending: &mut Vec<Cmd>) -> bool {
    if pending.is_empty() {
        match rx.recv() {
            Ok(cmd) => pending.push(cmd),
            Err(_) => return false,
        }
    }
    while pending.len() < BATCH {
        match rx.try_recv() {
            Ok(cmd) => pending.push(cmd),
            Err(_) => break,
        }
    }
    true
}

/// Runs a batch. Publishes are pipelined first; then reads, one key at a time. On error, what
/// is left in `pending` is retried by the caller after reconnecting.
fn execute(
    index: usize,
    conn: &mut RedisConn,
    pending: &mut Vec<Cmd>,
    hub: &Sender<UpstreamMsg>,
    metrics: &Metrics,
) -> Result<(), RedisError> {
    let publishes: Vec<usize> = (0..pending.len())
        .filter(|&i| matches!(pending[i], Cmd::Publish { .. }))
        .collect();
    for &i in &publishes {
        if let Cmd::Publish { channel, payload } = &pending[i] {
            conn.queue(&[b"PUBLISH", channel, payload]);
        }
    }
    if !publishes.is_empty() {
        let sent = publishes.len();
        // The publishes leave `pending` now: on a failure below they are not retried.
        pending.retain(|c| !matches!(c, Cmd::Publish { .. }));
        let flushed = conn.flush();
        if let Err(e) = flushed {
            metrics.redis[index].publish_errors.add(sent as u64);
            return Err(e);
        }
        for _ in 0..sent {
            match conn.read() {
                Ok(Value::Error(e)) => {
                    metrics.redis[index].publish_errors.inc();
                    tracing::warn!(error = %e, "PUBLISH refused");
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.redis[index].publish_errors.inc();
                    return Err(e);
                }
            }
        }
    }
    while let Some(cmd) = pending.first() {
        let Some(input) = read_input(conn, cmd)? else {
            pending.remove(0);
            continue;
        };
        metrics.redis[index].key_reads.inc();
        pending.remove(0);
        // The hub must learn every read's end, or the key stays "reading" forever: wait for room
        // (the hub never blocks for long).
        let _ = hub.send(UpstreamMsg::Source(SourceInput::Redis {
            source: index,
            input,
        }));
    }
    Ok(())
}

/// Runs a read command and returns what to tell the hub; `None` for a publish. An error reply
/// (a WRONGTYPE race, NOPERM...) is about this read, not the connection: it is reported and
/// the read is over, instead of retrying forever. Other errors are the connection's.
pub fn read_input(conn: &mut impl KeyCall, cmd: &Cmd) -> Result<Option<Input>, RedisError> {
    Ok(Some(match cmd {
        Cmd::Publish { .. } => return Ok(None),
        Cmd::Read { key } => match read_key(conn, key) {
            Ok((json, hash)) => Input::KeyValue {
                key: key.clone(),
                json,
                hash,
            },
            Err(RedisError::Reply(e)) => {
                tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "key read refused");
                Input::ReadFailed { key: key.clone() }
            }
            Err(e) => return Err(e),
        },
        Cmd::ReadIndex {
            set,
            prefix,
            suffix,
        } => match read_index(conn, set, prefix, suffix) {
            Ok(items) => Input::IndexValue {
                set: set.clone(),
                items,
            },
            Err(RedisError::Reply(e)) => {
                tracing::warn!(set = %String::from_utf8_lossy(set), error = %e, "index read refused");
                Input::IndexValue {
                    set: set.clone(),
                    items: Vec::new(),
                }
            }
            Err(e) => return Err(e),
        },
    }))
}

/// Reads the ids in `set`, then each hash `prefix + id + suffix`, pipelined.
pub fn read_index(
    conn: &mut impl KeyCall,
    set: &[u8],
    prefix: &[u8],
    suffix: &[u8],
) -> Result<Vec<(Bytes, crate::source::Hash)>, RedisError> {
    let mut ids = strings(&conn.call_for(set, &[b"SMEMBERS", set])?);
    ids.sort();
    let keys: Vec<Bytes> = ids
        .iter()
        .map(|id| Bytes::from([prefix, &id[..], suffix].concat()))
        .collect();
    let values = conn.hgetall_each(&keys)?;
    let mut out = Vec::with_capacity(keys.len());
    for (key, v) in keys.into_iter().zip(values) {
        if let Value::Error(e) = &v {
            tracing::warn!(key = %String::from_utf8_lossy(&key), error = %e, "HGETALL refused");
            continue;
        }
        out.push((key, pairs(&v).into()));
    }
    Ok(out)
}

/// Reads a key according to its type and renders `{"key":…,"type":…,"value":…}`; a hash's
/// fields come back too.
pub fn read_key(
    conn: &mut impl KeyCall,
    key: &[u8],
) -> Result<(Bytes, Option<crate::source::Hash>), RedisError> {
    let kind = match conn.call_for(key, &[b"TYPE", key])? {
        Value::Simple(t) | Value::Bulk(t) => String::from_utf8_lossy(&t).into_owned(),
        other => return Err(RedisError::Reply(format!("TYPE returned {other:?}"))),
    };
    let mut value = Vec::new();
    let mut hash = None;
    let present = match kind.as_str() {
        "string" => {
            let v = conn.call_for(key, &[b"GET", key])?;
            match v.as_bytes() {
                Some(b) => {
                    crate::protocol::write_json_string(&mut value, b);
                    true
                }
                None => false,
            }
        }
        "hash" => {
            let v = conn.call_for(key, &[b"HGETALL", key])?;
            let pairs = pairs(&v);
            let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(a, b)| (&a[..], &b[..])).collect();
            render_key_value_hash(&mut value, &refs);
            hash = Some(pairs.into());
            true
        }
        "list" => {
            let v = conn.call_for(key, &[b"LRANGE", key, b"0", b"-1"])?;
            let items = strings(&v);
            let refs: Vec<&[u8]> = items.iter().map(|b| &b[..]).collect();
            render_string_array(&mut value, &refs);
            true
        }
        "set" => {
            let v = conn.call_for(key, &[b"SMEMBERS", key])?;
            let mut items = strings(&v);
            items.sort();
            let refs: Vec<&[u8]> = items.iter().map(|b| &b[..]).collect();
            render_string_array(&mut value, &refs);
            true
        }
        "zset" => {
            let v = conn.call_for(key, &[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])?;
            let pairs = pairs(&v);
            let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(a, b)| (&a[..], &b[..])).collect();
            render_zset(&mut value, &refs);
            true
        }
        _ => false,
    };
    let mut out = Vec::with_capacity(value.len() + key.len() + 40);
    render_key_event(&mut out, key, &kind, present.then_some(&value[..]));
    Ok((Bytes::from(out), hash))
}

/// Flattens a RESP2 `[k, v, k, v]` array, a RESP3 map, or RESP3 `[[k, v], …]` into pairs.
fn pairs(v: &Value) -> Vec<(Bytes, Bytes)> {
    let text = |v: &Value| match v {
        Value::Bulk(b) | Value::Simple(b) => b.clone(),
        Value::Int(i) => Bytes::from(i.to_string()),
        Value::Other(s) => Bytes::from(s.clone()),
        _ => Bytes::new(),
    };
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| (text(k), text(v))).collect(),
        Value::Array(items)
            if items
                .iter()
                .all(|i| matches!(i, Value::Array(p) if p.len() == 2))
                && !items.is_empty() =>
        {
            items
                .iter()
                .filter_map(|i| match i {
                    Value::Array(p) => Some((text(&p[0]), text(&p[1]))),
                    _ => None,
                })
                .collect()
        }
        Value::Array(items) => items
            .chunks_exact(2)
            .map(|p| (text(&p[0]), text(&p[1])))
            .collect(),
        _ => Vec::new(),
    }
}

fn strings(v: &Value) -> Vec<Bytes> {
    match v {
        Value::Array(items) => items.iter().filter_map(|i| i.as_bytes().cloned()).collect(),
        _ => Vec::new(),
    }
}
