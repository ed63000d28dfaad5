//! The seam for replay sources: upstreams where each client reads one stream from an offset
//! of its choosing (RabbitMQ streams today; Redis Streams and the radar feeds' history later),
//! unlike the pub/sub [`super::Source`]s, where the hub shares one subscription per topic.
//!
//! Shape (every replay source follows it):
//! - the source runs on its own thread(s) and runtime, never on a shard or the hub;
//! - a shard asks it for a consumer with [`ReplayCmd::Subscribe`] (one per connection; the
//!   connection is the [`ReplayTarget`]), grants credit with [`ReplayCmd::Credit`] as the
//!   connection's outbox drains, and ends it with [`ReplayCmd::Unsubscribe`] when the socket
//!   goes; commands travel on a bounded `crossbeam_channel::Sender<ReplayCmd>` with `try_send`
//!   (a shard keeps what does not fit in a local backlog and never blocks on it);
//! - the source renders each message once into a complete WebSocket frame and delivers it straight
//!   to the owning shard's inbox as [`crate::router::ShardMsg::Replay`], with the shard's wake-up,
//!   in offset order; the end of a consumer (stream missing, deleted, replaced) is one
//!   [`ReplayEvent::End`], after which nothing more comes for that target;
//! - at most one live consumer per stream name (the Squonk2 rule): a newer `Subscribe` on the same
//!   stream ends the older one with [`ReplayEnd::Replaced`]; [`ReplayCmd::Revoke`] ends every
//!   consumer of a stream (its registry entry was deleted). Across instances that share a
//!   Redis, [`super::replay_lease`] extends the rule (checked per chunk, fail open).
//!
//! Thread: the types are plain values, built on shards and read on the source's thread.

use bytes::Bytes;

use crate::router::{ConnRef, ShardId};

/// The connection a consumer delivers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayTarget {
    /// The shard that owns the connection.
    pub shard: ShardId,
    /// The connection on that shard.
    pub conn: ConnRef,
}

/// Where a new consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only messages published after the subscription (RabbitMQ `NEXT`).
    Next,
    /// The message at this offset and every one after it (inclusive; offsets start at 0).
    Offset(u64),
    /// The first chunk whose timestamp is at or after this time, in epoch milliseconds (chunk
    /// granularity, as RabbitMQ's `TIMESTAMP`).
    Timestamp(i64),
}

/// Shard → replay source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayCmd {
    /// Open a consumer of `stream` for `target`, ending any other consumer of `stream`.
    Subscribe {
        /// Who receives the messages.
        target: ReplayTarget,
        /// The stream (for Squonk2, the routing key).
        stream: String,
        /// Where to start.
        start: StartAt,
    },
    /// The target's outbox drained: it may take `frames` more frames.
    Credit {
        /// The consumer's connection.
        target: ReplayTarget,
        /// How many frames were written since the last credit.
        frames: u32,
    },
    /// The target's socket is gone or closing: close its consumer, send nothing more.
    Unsubscribe {
        /// The consumer's connection.
        target: ReplayTarget,
    },
    /// End every consumer of `stream` with [`ReplayEnd::Deleted`] (its registry entry is gone).
    Revoke {
        /// The stream.
        stream: String,
    },
}

/// Why a consumer ended; each maps to a close code and reason in the profile that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayEnd {
    /// The stream does not exist upstream (Squonk2: close 1013).
    NotFound,
    /// The stream was deleted: a `POISON` message, or [`ReplayCmd::Revoke`] (Squonk2: 1000).
    Deleted,
    /// A newer consumer of the same stream took over (Squonk2: 1000, the same reason).
    Replaced,
    /// The source gave up on the consumer (a bad offset, the broker refused it): 1011.
    Failed,
}

/// Replay source → shard, inside [`crate::router::ShardMsg::Replay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayEvent {
    /// Complete WebSocket frames, in offset order (one chunk's messages at most).
    Frames(Vec<Bytes>),
    /// The consumer ended; nothing more comes for this target.
    End(ReplayEnd),
}
