//! A cluster's command thread: key reads and publishes, each sent to the primary that owns its
//! key's (or channel's) slot, following `-MOVED` (and asking for a topology refresh) and
//! `-ASK` (`ASKING` plus the command, once, on the importing node).
//!
//! One connection per primary, opened when first needed and dropped when it fails. The key
//! reads are the single-Redis ones ([`commander::read_key`], [`commander::read_index`]),
//! written against [`KeyCall`]; [`Pool`] is the cluster's [`KeyCall`]. Publishes go out one at
//! a time (`SPUBLISH` for a sharded channel, `PUBLISH` otherwise, to the channel's owner), not
//! pipelined as on a single Redis.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use super::subs::{ClusterSubs, is_sharded};
use super::{NodeAddr, Redirect};
use crate::metrics::Metrics;
use crate::router::UpstreamMsg;
use crate::source::SourceInput;
use crate::source::redis::commander::{Cmd, KeyCall, next_batch, read_input};
use crate::source::redis::conn::{RedisConn, RedisError};
use crate::source::redis::resp::Value;
use crate::source::redis::{Backoff, RedisSettings};

/// Most redirections one command follows before it is given up as an error.
const MAX_REDIRECTS: usize = 5;

/// The command thread's connections, one per primary.
pub struct Pool {
    settings: Arc<RedisSettings>,
    subs: Arc<ClusterSubs>,
    conns: HashMap<NodeAddr, RedisConn>,
    metrics: Arc<Metrics>,
}

impl Pool {
    fn conn(&mut self, node: &NodeAddr) -> Result<&mut RedisConn, RedisError> {
        if !self.conns.contains_key(node) {
            let url = self.settings.url.at(node);
            let conn =
                RedisConn::connect(&url, self.settings.proto, self.settings.connect_timeout)?;
            self.conns.insert(node.clone(), conn);
        }
        self.conns
            .get_mut(node)
            .ok_or_else(|| RedisError::Reply("connection vanished".into()))
    }

    /// Sends `args` to `node`, with `ASKING` first when `asking`.
    fn send(&mut self, node: &NodeAddr, args: &[&[u8]], asking: bool) -> Result<Value, RedisError> {
        let result = self.conn(node).and_then(|conn| {
            if asking {
                conn.queue(&[b"ASKING"]);
                conn.queue(args);
                conn.flush()?;
                if let Value::Error(e) = conn.read()? {
                    return Err(RedisError::Reply(e));
                }
                match conn.read()? {
                    Value::Error(e) => Err(RedisError::Reply(e)),
                    v => Ok(v),
                }
            } else {
                conn.call(args)
            }
        });
        match result {
            Err(RedisError::Reply(e)) => Err(RedisError::Reply(e)),
            Err(e) => {
                // The connection is unusable: the next command to this node reconnects.
                self.conns.remove(node);
                Err(e)
            }
            ok => ok,
        }
    }
}

impl KeyCall for Pool {
    fn call_for(&mut self, key: &[u8], args: &[&[u8]]) -> Result<Value, RedisError> {
        let mut node = self.subs.node_for(key);
        let mut asking = false;
        for _ in 0..=MAX_REDIRECTS {
            match self.send(&node, args, asking) {
                Err(RedisError::Reply(e)) => match Redirect::parse(&e) {
                    Some(Redirect::Moved { to, .. }) => {
                        self.metrics.redis[self.settings.index]
                            .cluster_redirects
                            .inc();
                        self.subs.request_refresh();
                        node = to;
                        asking = false;
                    }
                    Some(Redirect::Ask { to, .. }) => {
                        self.metrics.redis[self.settings.index]
                            .cluster_redirects
                            .inc();
                        node = to;
                        asking = true;
                    }
                    // The cluster cannot serve the slot now (a primary down, a migration
                    // mid-way): a connection-level failure, so the read is kept and retried.
                    None if e.starts_with("CLUSTERDOWN") || e.starts_with("TRYAGAIN") => {
                        self.subs.request_refresh();
                        return Err(RedisError::Io(std::io::Error::other(e)));
                    }
                    None => return Err(RedisError::Reply(e)),
                },
                other => return other,
            }
        }
        Err(RedisError::Reply(format!(
            "more than {MAX_REDIRECTS} cluster redirections for one command"
        )))
    }

    fn hgetall_each(&mut self, keys: &[Bytes]) -> Result<Vec<Value>, RedisError> {
        keys.iter()
            .map(|key| match self.call_for(key, &[b"HGETALL", key]) {
                Err(RedisError::Reply(e)) => Ok(Value::Error(e)),
                other => other,
            })
            .collect()
    }
}

/// Runs the command thread until the hub drops its sender.
pub fn run(
    settings: Arc<RedisSettings>,
    subs: Arc<ClusterSubs>,
    rx: Receiver<Cmd>,
    hub: Sender<UpstreamMsg>,
    metrics: Arc<Metrics>,
) {
    let index = settings.index;
    let mut backoff = Backoff::new(settings.backoff_max);
    let mut pool = Pool {
        settings: settings.clone(),
        subs,
        conns: HashMap::new(),
        metrics: metrics.clone(),
    };
    let mut pending: Vec<Cmd> = Vec::new();
    loop {
        if !next_batch(&rx, &mut pending) {
            return;
        }
        match execute(&settings, &mut pool, &mut pending, &hub, &metrics) {
            Ok(()) => backoff.reset(),
            Err(e) => {
                // Reads stay pending and are retried; publishes are not (at-most-once).
                let delay = backoff.next_delay();
                tracing::warn!(redis = %settings.url, error = %e, retry_in = ?delay, "redis cluster command failed");
                let before = pending.len();
                pending.retain(|c| !matches!(c, Cmd::Publish { .. }));
                metrics.redis[index]
                    .publish_errors
                    .add((before - pending.len()) as u64);
                std::thread::sleep(delay);
            }
        }
    }
}

/// Runs `pending` in order; on a connection-level error, what is left stays in `pending`.
fn execute(
    settings: &RedisSettings,
    pool: &mut Pool,
    pending: &mut Vec<Cmd>,
    hub: &Sender<UpstreamMsg>,
    metrics: &Metrics,
) -> Result<(), RedisError> {
    let stats = &metrics.redis[settings.index];
    while let Some(cmd) = pending.first() {
        if let Cmd::Publish { channel, payload } = cmd {
            let verb: &[u8] = if is_sharded(channel, &settings.sharded_channels) {
                b"SPUBLISH"
            } else {
                b"PUBLISH"
            };
            let (channel, payload) = (channel.clone(), payload.clone());
            pending.remove(0);
            match pool.call_for(&channel, &[verb, &channel, &payload]) {
                Ok(_) => {}
                Err(RedisError::Reply(e)) => {
                    stats.publish_errors.inc();
                    tracing::warn!(error = %e, "PUBLISH refused");
                }
                Err(e) => {
                    stats.publish_errors.inc();
                    return Err(e);
                }
            }
            continue;
        }
        let Some(input) = read_input(pool, cmd)? else {
            pending.remove(0);
            continue;
        };
        stats.key_reads.inc();
        pending.remove(0);
        // The hub must learn every read's end (see the single-Redis command thread).
        let _ = hub.send(UpstreamMsg::Source(SourceInput::Redis {
            source: settings.index,
            input,
        }));
    }
    Ok(())
}
