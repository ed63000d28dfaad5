//! The replay lease: at most one live consumer per stream across several ringcast instances
//! that share a Redis (the Squonk2 rule, COMPAT.md 6.2 step 6 and row Q7; the original kept
//! `routing_key → socket uuid4` in memcached). Within one process the replay source's own
//! table already enforces it; this adds the instances around it.
//!
//! The protocol, the same in every instance (so any two that share the Redis agree):
//! - a consumer whose stream exists writes `SET <KEY_PREFIX><stream> <token>`, its own token
//!   ([`TokenSource`]: a random per-process nonce and a counter), so the newest writer holds the
//!   stream;
//! - before it forwards a delivered chunk, the consumer reads `GET <KEY_PREFIX><stream>`: its
//!   own token → forward; another token → a newer consumer, perhaps in another instance, took the
//!   stream → it ends [`ReplayEnd::Replaced`]; no key → the event stream was deleted (a REST
//!   `DELETE` on any instance runs `DEL`) → it ends [`ReplayEnd::Deleted`]. Either way the chunk
//!   that found out is not forwarded, as the original did not forward the message that found out;
//! - a consumer that ends removes the key only while it still holds it (compare-and-delete in
//!   one `EVAL`), so a socket that goes never removes a newer socket's lease.
//!
//! Limits (docs/MIGRATING.md): the check is per chunk, not atomic with anything: an older
//! socket in another instance learns it lost the stream on its next chunk, not at once. A
//! Redis that is unreachable fails open: chunks are forwarded unchecked (counted), the
//! in-process rule still holds, and a consumer whose `SET` never reached Redis is never checked.
//!
//! Threads: [`Lease`] lives on the replay source's driver thread, which sends [`LeaseCmd`]s
//! with `try_send` (never blocking; a full queue skips the check, counted) and reads the
//! verdicts from [`Lease::replies`]. The `replay-lease` thread ([`worker`]) owns the Redis
//! connection. The key, token and verdict logic below is pure.

mod worker;

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::redis::RedisUrl;
use super::redis::resp::Value;
use super::replay::ReplayEnd;
use crate::metrics::Metrics;

/// Lease commands queued for the lease thread. Default 4_096: at most one check per consumer
/// is in flight (4_000 consumers at most), plus the sets and deletes of a burst of
/// subscriptions. Past it a check is skipped (fail open) and a set or delete is lost; both
/// counted in `ringcast_replay_lease_queue_full_total`.
pub const LEASE_QUEUE: usize = 4_096;

/// Verdicts queued for the driver. Default 4_096. The lease thread waits for room (the driver
/// drains it every turn and never waits on the lease thread, so this cannot deadlock).
pub const REPLY_QUEUE: usize = 4_096;

/// Prefix of every lease key: `ringcast:ess:<stream>`.
pub const KEY_PREFIX: &str = "ringcast:ess:";

/// Where the lease lives.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Redis source's name, for logs.
    pub source: String,
    /// Its address (the lease uses the URL's db).
    pub url: RedisUrl,
    /// Connect timeout, and the bound on every later read and write (a Redis that stops
    /// answering delays checks by at most this, then they fail open). Default: the Redis
    /// sources' `redis-connect-timeout`.
    pub timeout: Duration,
    /// Cap of the reconnect backoff (the sources' `redis-backoff-max`).
    pub backoff_max: Duration,
}

/// One consumer's token: unique across processes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseToken(Box<str>);

impl LeaseToken {
    /// The bytes written to Redis.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Hands out tokens: `<nonce as 16 hex digits>-<counter>`.
#[derive(Debug)]
pub struct TokenSource {
    /// Random per process (the OS's `getrandom`; the time and pid if that fails).
    nonce: u64,
    /// The next counter value.
    next: u64,
}

impl TokenSource {
    /// A source with a fresh random nonce.
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        let nonce = match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                t ^ (u64::from(std::process::id()) << 32)
            }
        };
        TokenSource::with_nonce(nonce)
    }

    /// A source with a given nonce (tests).
    pub fn with_nonce(nonce: u64) -> Self {
        TokenSource { nonce, next: 0 }
    }

    /// The next token.
    pub fn next_token(&mut self) -> LeaseToken {
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        LeaseToken(format!("{:016x}-{n}", self.nonce).into())
    }
}

impl Default for TokenSource {
    fn default() -> Self {
        TokenSource::new()
    }
}

/// The Redis key of `stream`'s lease.
pub fn lease_key(stream: &str) -> Vec<u8> {
    [KEY_PREFIX.as_bytes(), stream.as_bytes()].concat()
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key holds the consumer's token: forward.
    Held,
    /// The key holds another token: a newer consumer took the stream.
    Taken,
    /// No key: the event stream was deleted.
    Gone,
    /// Redis could not tell (unreachable, an error reply, or this consumer's `SET` never
    /// reached it): forward (fail open).
    Unchecked,
}

impl Verdict {
    /// The verdict of a `GET` reply for `token`.
    pub fn of_reply(reply: &Value, token: &LeaseToken) -> Verdict {
        match reply {
            Value::Null => Verdict::Gone,
            Value::Bulk(b) | Value::Simple(b) if &b[..] == token.as_bytes() => Verdict::Held,
            Value::Bulk(_) | Value::Simple(_) => Verdict::Taken,
            _ => Verdict::Unchecked,
        }
    }

    /// How the consumer ends, if it must.
    pub fn end(self) -> Option<ReplayEnd> {
        match self {
            Verdict::Held | Verdict::Unchecked => None,
            Verdict::Taken => Some(ReplayEnd::Replaced),
            Verdict::Gone => Some(ReplayEnd::Deleted),
        }
    }
}

/// Driver → lease thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCmd {
    /// `SET key token`: the consumer takes the stream.
    Acquire {
        /// The stream.
        stream: String,
        /// The consumer's token.
        token: LeaseToken,
    },
    /// `GET key`, compared with `token`; answered as a [`LeaseReply`].
    Check {
        /// The driver's consumer id, echoed in the reply.
        consumer: u64,
        /// The stream.
        stream: String,
        /// The consumer's token.
        token: LeaseToken,
    },
    /// Delete the key if it still holds `token` (the consumer ended).
    Release {
        /// The stream.
        stream: String,
        /// The consumer's token.
        token: LeaseToken,
    },
    /// `DEL key`: the event stream was deleted; its consumer in any instance ends on its next
    /// chunk.
    Revoke {
        /// The stream.
        stream: String,
    },
}

/// Lease thread → driver: the answer to a [`LeaseCmd::Check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseReply {
    /// The consumer the check was for.
    pub consumer: u64,
    /// What it found.
    pub verdict: Verdict,
}

/// The driver's handle on the lease thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct Lease {
    /// Commands to the lease thread.
    tx: Sender<LeaseCmd>,
    /// Verdicts of checks, in the order they were asked.
    pub replies: Receiver<LeaseReply>,
    /// Tokens for new consumers.
    tokens: TokenSource,
    /// Counters (`queue_full` is the driver's).
    metrics: Arc<Metrics>,
}

impl Lease {
    /// Starts the `replay-lease` thread; it connects in the background.
    pub fn start(settings: LeaseSettings, metrics: Arc<Metrics>) -> std::io::Result<Lease> {
        let (tx, rx) = crossbeam_channel::bounded(LEASE_QUEUE);
        let (reply_tx, replies) = crossbeam_channel::bounded(REPLY_QUEUE);
        worker::spawn(settings, rx, reply_tx, metrics.clone())?;
        Ok(Lease {
            tx,
            replies,
            tokens: TokenSource::new(),
            metrics,
        })
    }

    /// A token for a new consumer.
    pub fn token(&mut self) -> LeaseToken {
        self.tokens.next_token()
    }

    /// Queues `cmd`; false (counted) when the queue is full or the thread is gone.
    pub fn tell(&self, cmd: LeaseCmd) -> bool {
        if self.tx.try_send(cmd).is_ok() {
            return true;
        }
        self.metrics.replay_lease.queue_full.inc();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn tokens_are_unique_per_consumer_and_per_process() {
        let mut a = TokenSource::with_nonce(0xabc);
        let (t0, t1) = (a.next_token(), a.next_token());
        assert_eq!(t0.as_bytes(), b"0000000000000abc-0");
        assert_ne!(t0, t1);
        let mut b = TokenSource::with_nonce(0xabd);
        assert_ne!(b.next_token(), t0);
        assert_ne!(TokenSource::new().nonce, TokenSource::new().nonce);
    }

    #[test]
    fn the_key_is_the_prefix_and_the_stream() {
        assert_eq!(lease_key("as.merchant.7"), b"ringcast:ess:as.merchant.7");
    }

    #[test]
    fn a_get_reply_decides_the_consumer_s_fate() {
        let mine = TokenSource::with_nonce(1).next_token();
        let bulk = |t: &LeaseToken| Value::Bulk(Bytes::copy_from_slice(t.as_bytes()));
        let other = TokenSource::with_nonce(2).next_token();
        assert_eq!(Verdict::of_reply(&bulk(&mine), &mine), Verdict::Held);
        assert_eq!(Verdict::of_reply(&bulk(&other), &mine), Verdict::Taken);
        assert_eq!(Verdict::of_reply(&Value::Null, &mine), Verdict::Gone);
        let err = Value::Error("WRONGTYPE".into());
        assert_eq!(Verdict::of_reply(&err, &mine), Verdict::Unchecked);
        assert_eq!(Verdict::Held.end(), None);
        assert_eq!(Verdict::Unchecked.end(), None);
        assert_eq!(Verdict::Taken.end(), Some(ReplayEnd::Replaced));
        assert_eq!(Verdict::Gone.end(), Some(ReplayEnd::Deleted));
    }
}
