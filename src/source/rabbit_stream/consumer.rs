//! One replay consumer's state, and the pure decisions about it: where to (re)subscribe from,
//! which records of a chunk are new, and how much credit RabbitMQ may have.
//!
//! Invariants:
//! - `next_offset` only grows: it is the offset after the last record processed (delivered,
//!   or dropped by the transform), so a resubscription starts there and a re-sent chunk's
//!   older records are skipped: nothing is lost or sent twice across reconnects;
//! - `pending` holds events the shard's inbox refused, in order; nothing behind them is sent
//!   first, and no credit is granted while it is not empty;
//! - once `phase` is [`Phase::Closed`], only `pending` (ending with the `End`) is still sent;
//! - `held` holds frames waiting for a lease check (see [`crate::source::replay_lease`]); they
//!   go to `pending` only when the check passes, and no credit is granted while any wait, so
//!   they are bounded by [`MAX_CHUNK_CREDIT`] chunks.
//!
//! Thread: the stream source's driver thread.

use std::collections::VecDeque;

use super::MAX_CHUNK_CREDIT;
use super::codec::OffsetSpec;
use crate::source::replay::{ReplayEvent, ReplayTarget, StartAt};
use crate::source::replay_lease::LeaseToken;

/// Where a consumer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its connection to be up or for a free subscription id.
    Waiting,
    /// `Metadata` sent: does the stream exist?
    Checking,
    /// `Subscribe` sent with this subscription id.
    Subscribing(u8),
    /// Subscribed with this id; chunks arrive against credit.
    Live(u8),
    /// Ended (its `End` is in `pending`), or being dropped.
    Closed,
}

/// One consumer.
#[derive(Debug)]
pub struct Consumer {
    /// The connection it delivers to.
    pub target: ReplayTarget,
    /// The stream it reads.
    pub stream: String,
    /// Where the client asked to start.
    pub start: StartAt,
    /// The connection of the pool it uses.
    pub conn: usize,
    /// Where it is.
    pub phase: Phase,
    /// The stream's existence was confirmed (`Metadata` is not asked again on resubscribe).
    pub checked: bool,
    /// When RabbitMQ first confirmed the subscription (ms since the epoch): a `Next`
    /// consumer that got nothing before a reconnect resumes from this time.
    pub live_since_ms: Option<i64>,
    /// The offset after the last record processed; records below it are skipped.
    pub next_offset: Option<u64>,
    /// Chunks RabbitMQ may still send without more credit.
    pub credit: u16,
    /// Frames sent to the shard and not yet credited back by it.
    pub in_flight_frames: u64,
    /// Events the shard's inbox refused, oldest first.
    pub pending: VecDeque<ReplayEvent>,
    /// Its lease token, once its `SET` was queued (`None`: no lease, chunks are not checked).
    pub lease: Option<LeaseToken>,
    /// Events of delivered chunks waiting for a lease check, oldest first.
    pub held: VecDeque<ReplayEvent>,
    /// A check is in flight; it covers this many events at the front of `held`.
    pub checking: Option<usize>,
}

impl Consumer {
    /// A new consumer, waiting for its connection.
    pub fn new(target: ReplayTarget, stream: String, start: StartAt, conn: usize) -> Self {
        Consumer {
            target,
            stream,
            start,
            conn,
            phase: Phase::Waiting,
            checked: false,
            live_since_ms: None,
            next_offset: match start {
                StartAt::Offset(n) => Some(n),
                _ => None,
            },
            credit: 0,
            in_flight_frames: 0,
            pending: VecDeque::new(),
            lease: None,
            held: VecDeque::new(),
            checking: None,
        }
    }

    /// The subscription id it holds on its connection, if any.
    pub fn sub(&self) -> Option<u8> {
        match self.phase {
            Phase::Subscribing(s) | Phase::Live(s) => Some(s),
            _ => None,
        }
    }

    /// Where to subscribe from now: after the last record processed if there was one, else
    /// the client's choice (a `Next` consumer that was already live resumes from the time it
    /// went live, so messages published while the connection was down are not lost).
    pub fn offset_spec(&self) -> OffsetSpec {
        match (self.next_offset, self.start, self.live_since_ms) {
            (Some(o), _, _) => OffsetSpec::Offset(o),
            (None, StartAt::Next, Some(t)) => OffsetSpec::Timestamp(t),
            (None, StartAt::Next, None) => OffsetSpec::Next,
            (None, StartAt::Offset(n), _) => OffsetSpec::Offset(n),
            (None, StartAt::Timestamp(t), _) => OffsetSpec::Timestamp(t),
        }
    }

    /// True when the record at `offset` is new (not processed before); then it counts as
    /// processed.
    pub fn take_offset(&mut self, offset: u64) -> bool {
        if self.next_offset.is_some_and(|n| offset < n) {
            return false;
        }
        self.next_offset = Some(offset.saturating_add(1));
        true
    }

    /// Credits to grant RabbitMQ now (0 when the shard is behind).
    pub fn credit_to_grant(&self, max_in_flight_frames: u32) -> u16 {
        let behind = !self.pending.is_empty()
            || !self.held.is_empty()
            || self.in_flight_frames >= u64::from(max_in_flight_frames)
            || self.phase == Phase::Closed;
        if behind {
            0
        } else {
            MAX_CHUNK_CREDIT.saturating_sub(self.credit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{ConnRef, ShardId};

    fn consumer(start: StartAt) -> Consumer {
        let target = ReplayTarget {
            shard: ShardId(0),
            conn: ConnRef { key: 1, id: 2 },
        };
        Consumer::new(target, "s".into(), start, 0)
    }

    #[test]
    fn resubscribes_after_the_last_processed_record() {
        let mut c = consumer(StartAt::Next);
        assert_eq!(c.offset_spec(), OffsetSpec::Next);
        c.live_since_ms = Some(1_000);
        assert_eq!(c.offset_spec(), OffsetSpec::Timestamp(1_000));
        assert!(c.take_offset(41));
        assert_eq!(c.offset_spec(), OffsetSpec::Offset(42));
        let c = consumer(StartAt::Timestamp(5));
        assert_eq!(c.offset_spec(), OffsetSpec::Timestamp(5));
        let c = consumer(StartAt::Offset(3));
        assert_eq!(c.offset_spec(), OffsetSpec::Offset(3));
    }

    #[test]
    fn offsets_below_the_start_or_already_seen_are_skipped() {
        let mut c = consumer(StartAt::Offset(3));
        assert!(!c.take_offset(0));
        assert!(!c.take_offset(2));
        assert!(c.take_offset(3));
        assert!(!c.take_offset(3));
        assert!(c.take_offset(4));
        let mut c = consumer(StartAt::Next);
        assert!(c.take_offset(0));
    }

    #[test]
    fn credit_only_while_the_shard_keeps_up() {
        let mut c = consumer(StartAt::Next);
        assert_eq!(c.credit_to_grant(10), MAX_CHUNK_CREDIT);
        c.credit = 1;
        assert_eq!(c.credit_to_grant(10), MAX_CHUNK_CREDIT - 1);
        c.in_flight_frames = 10;
        assert_eq!(c.credit_to_grant(10), 0);
        c.in_flight_frames = 0;
        c.pending.push_back(ReplayEvent::Frames(vec![]));
        assert_eq!(c.credit_to_grant(10), 0);
        c.pending.clear();
        c.held.push_back(ReplayEvent::Frames(vec![]));
        assert_eq!(c.credit_to_grant(10), 0, "a lease check is in flight");
        c.held.clear();
        c.phase = Phase::Closed;
        assert_eq!(c.credit_to_grant(10), 0);
    }
}
