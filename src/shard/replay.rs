//! The shard's side of replay consumers ([`crate::source::replay`]): one per connection on a
//! route whose messages come from a replay source (Squonk2's `ess`).
//!
//! Thread: the owning shard.
//!
//! Invariants:
//! - a connection in `replays` has asked for a consumer; removing or closing it ends that
//!   consumer (`Unsubscribe`), so the source never serves a connection that is gone;
//! - frames arrive only for connections in `replays`; a frame for a connection that is gone
//!   (its `ConnRef` no longer matches) is dropped, the source learns of it from `Unsubscribe`;
//! - credit: every frame delivered is credited back (`Credit`) once the connection's outbox has
//!   been written out, so the source sends at the rate the client reads. A credit that does not
//!   fit in the source's channel stays owed and is retried on the next inbox turn or sweep;
//! - subscribe and unsubscribe commands are never dropped: a full channel queues them in
//!   `replay_backlog` (at most two per connection), flushed in order.

use std::collections::{HashMap, VecDeque};

use crossbeam_channel::{Sender, TrySendError};

use super::{CLOSE_GRACE, Shard};
use crate::conn::outbox::{OutFrame, SendStatus};
use crate::router::ConnRef;
use crate::router::table::ConnKey;
use crate::source::replay::{ReplayCmd, ReplayEvent, ReplayTarget, StartAt};

/// A connection served by a replay consumer.
#[derive(Debug)]
pub struct ReplayConn {
    /// The connection's id (slab keys are reused).
    id: u64,
    /// What the profile names the consumer in close reasons (Squonk2: the event stream's uuid).
    label: Box<str>,
    /// Frames delivered to the outbox and not yet credited back to the source.
    owed: u32,
}

/// A shard's replay state: the source's command channel, the commands waiting for room in it,
/// and the connections it serves.
#[derive(Debug, Default)]
pub struct Replays {
    /// Shard → replay source; `None` when no route uses one.
    tx: Option<Sender<ReplayCmd>>,
    /// Subscribe/unsubscribe commands waiting for room in `tx`, in order.
    backlog: VecDeque<ReplayCmd>,
    /// The connections with a consumer, by slab key.
    conns: HashMap<ConnKey, ReplayConn>,
}

impl Replays {
    /// Replay state sending commands on `tx`.
    pub fn new(tx: Option<Sender<ReplayCmd>>) -> Self {
        Replays {
            tx,
            ..Replays::default()
        }
    }

    /// True when no connection has a consumer (the common case: nothing to do on writes).
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

impl Shard {
    /// Starts a consumer of `stream` from `start` for connection `key`; `label` names it in
    /// close reasons. Without a replay source the connection is closed (1011).
    pub fn replay_subscribe(&mut self, key: ConnKey, stream: String, start: StartAt, label: &str) {
        let Some(conn) = self.conn_ref(key) else {
            return;
        };
        if self.replays.tx.is_none() {
            self.close_with(key, 1011, "no replay source is configured");
            return;
        }
        self.replays.conns.insert(
            key,
            ReplayConn {
                id: conn.id,
                label: label.into(),
                owed: 0,
            },
        );
        let target = ReplayTarget {
            shard: self.id,
            conn,
        };
        self.tell_replay(ReplayCmd::Subscribe {
            target,
            stream,
            start,
        });
    }

    /// Ends the consumer of every connection of `stream` (its registry entry was deleted).
    pub fn replay_revoke(&mut self, stream: String) {
        if self.replays.tx.is_some() {
            self.tell_replay(ReplayCmd::Revoke { stream });
        }
    }

    /// A replay source's frames or end for `conn`.
    pub fn handle_replay(&mut self, conn: ConnRef, event: ReplayEvent) {
        let live = self
            .replays
            .conns
            .get(&conn.key)
            .is_some_and(|r| r.id == conn.id);
        if !live {
            return;
        }
        match event {
            ReplayEvent::Frames(frames) => self.deliver_replay(conn.key, frames),
            ReplayEvent::End(end) => {
                let label = self.replays.conns.remove(&conn.key).map(|r| r.label);
                let (code, reason) =
                    crate::profile::squonk2::end_close(end, label.as_deref().unwrap_or(""));
                self.close_with(conn.key, code, &reason);
            }
        }
    }

    fn deliver_replay(&mut self, key: ConnKey, frames: Vec<bytes::Bytes>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut queued = 0u32;
        let mut overflow = false;
        for f in frames {
            match conn.outbox.push(OutFrame::new(f)) {
                SendStatus::Queued { wake_writer } => {
                    queued += 1;
                    if wake_writer {
                        conn.wake_writer();
                    }
                }
                SendStatus::Overflow => {
                    overflow = true;
                    break;
                }
                SendStatus::Closed => break,
            }
        }
        self.stats().messages_out.add(u64::from(queued));
        if let Some(r) = self.replays.conns.get_mut(&key) {
            r.owed = r.owed.saturating_add(queued);
        }
        if overflow {
            // Credit keeps the source within a few chunks of the outbox, so this is a client
            // that stopped reading with more than `max_outbox_bytes` in flight.
            if let Some(conn) = self.conns.get_mut(key) {
                conn.outbox.clear();
            }
            self.stats().slow_consumer_closes.inc();
            self.close(key, crate::protocol::CloseCode::SlowConsumer, CLOSE_GRACE);
        }
    }

    /// The write loop wrote `key`'s outbox out: credit the frames back to its consumer.
    pub fn replay_written(&mut self, key: ConnKey) {
        let Some(r) = self.replays.conns.get_mut(&key) else {
            return;
        };
        if r.owed == 0 {
            return;
        }
        let (frames, id) = (r.owed, r.id);
        let Some(tx) = &self.replays.tx else {
            return;
        };
        let target = ReplayTarget {
            shard: self.id,
            conn: ConnRef { key, id },
        };
        // A full channel keeps the credit owed; `flush_replay` retries it.
        if tx.try_send(ReplayCmd::Credit { target, frames }).is_ok()
            && let Some(r) = self.replays.conns.get_mut(&key)
        {
            r.owed = 0;
        }
    }

    /// Ends `key`'s consumer, if it has one (the connection is closing or gone).
    pub(super) fn end_replay(&mut self, key: ConnKey) {
        let Some(r) = self.replays.conns.remove(&key) else {
            return;
        };
        let target = ReplayTarget {
            shard: self.id,
            conn: ConnRef { key, id: r.id },
        };
        self.tell_replay(ReplayCmd::Unsubscribe { target });
    }

    fn tell_replay(&mut self, cmd: ReplayCmd) {
        self.replays.backlog.push_back(cmd);
        self.flush_replay();
    }

    /// Retries queued commands in order, then owed credits of connections whose outbox is
    /// empty. Called on every inbox turn and sweep.
    pub fn flush_replay(&mut self) {
        let Some(tx) = self.replays.tx.clone() else {
            return;
        };
        while let Some(cmd) = self.replays.backlog.pop_front() {
            match tx.try_send(cmd) {
                Ok(()) => {}
                Err(TrySendError::Full(cmd)) => {
                    self.replays.backlog.push_front(cmd);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.replays.backlog.clear();
                    return;
                }
            }
        }
        let owed: Vec<ConnKey> = self
            .replays
            .conns
            .iter()
            .filter(|(k, r)| r.owed > 0 && self.conns.get(**k).is_some_and(|c| c.outbox.is_empty()))
            .map(|(k, _)| *k)
            .collect();
        for key in owed {
            self.replay_written(key);
        }
    }
}
