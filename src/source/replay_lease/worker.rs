//! The `replay-lease` thread: owns the lease's Redis connection, runs the driver's
//! [`LeaseCmd`]s in pipelined batches (one write, then the replies in order) and answers every
//! check with a [`LeaseReply`], in order.
//!
//! Invariants:
//! - commands run in the order the driver queued them, on one connection, so a consumer's
//!   `SET` always reaches Redis before its checks;
//! - every check is answered, also while Redis is unreachable (then [`Verdict::Unchecked`]:
//!   fail open); a connect never blocks the answers: it runs on a short-lived
//!   `replay-lease-connect` thread, one at a time, with a capped, jittered backoff between tries;
//! - a consumer whose `SET` failed is answered `Unchecked` (its token is in `unset`), so a
//!   Redis that comes back never knocks it out by mistake;
//! - after every (re)connect each live consumer's key is written again with `SET … NX`: a
//!   Redis that restarted empty does not knock every socket out (`Gone`), a newer socket's key
//!   is never overwritten, and an `unset` consumer whose key is free becomes checked again;
//! - an outage is logged once when it starts (naming the source) and once when it ends.
//!
//! Thread: `replay-lease` (blocking I/O is fine: it is not a shard and does one thing).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{LeaseCmd, LeaseReply, LeaseSettings, LeaseToken, Verdict, lease_key};
use crate::metrics::{Metrics, ReplayLeaseStats};
use crate::source::redis::Backoff;
use crate::source::redis::conn::{RedisConn, RedisError};
use crate::source::redis::resp::{Proto, Value};

/// Most commands pipelined in one batch.
const BATCH: usize = 256;

/// Longest sleep with nothing to do.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Deletes the key only while it holds the caller's token (a consumer that ends never removes
/// a newer consumer's lease).
const RELEASE_SCRIPT: &[u8] =
    b"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// A connect attempt's outcome, from the connector thread.
type Connected = Result<RedisConn, RedisError>;

/// Starts the thread.
pub fn spawn(
    settings: LeaseSettings,
    rx: Receiver<LeaseCmd>,
    replies: Sender<LeaseReply>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let worker = Worker {
        backoff: Backoff::new(settings.backoff_max),
        settings: Arc::new(settings),
        replies,
        metrics,
        conn: None,
        connecting: None,
        next_try: Instant::now(),
        outage: false,
        unset: HashSet::new(),
        live: HashMap::new(),
    };
    std::thread::Builder::new()
        .name("replay-lease".into())
        .spawn(move || worker.run(&rx))
        .map(drop)
}

struct Worker {
    settings: Arc<LeaseSettings>,
    /// Verdicts to the driver.
    replies: Sender<LeaseReply>,
    metrics: Arc<Metrics>,
    /// The connection, while up.
    conn: Option<RedisConn>,
    /// The connect attempt in progress, if any.
    connecting: Option<Receiver<Connected>>,
    /// When the next connect attempt may start.
    next_try: Instant,
    backoff: Backoff,
    /// Redis is unreachable and that was logged.
    outage: bool,
    /// Tokens whose `SET` did not reach Redis: their checks answer `Unchecked`.
    unset: HashSet<LeaseToken>,
    /// Every consumer that acquired and has not released or lost its lease: token → stream.
    live: HashMap<LeaseToken, String>,
}

impl Worker {
    fn stats(&self) -> &ReplayLeaseStats {
        &self.metrics.replay_lease
    }

    fn run(mut self, rx: &Receiver<LeaseCmd>) {
        let never = crossbeam_channel::never();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            self.maybe_connect();
            // Down with no attempt running: wake for the next one; else only input wakes us.
            let wait = if self.conn.is_none() && self.connecting.is_none() {
                self.next_try.saturating_duration_since(Instant::now())
            } else {
                IDLE_WAKE
            };
            let connecting = self.connecting.clone().unwrap_or_else(|| never.clone());
            crossbeam_channel::select! {
                recv(rx) -> c => match c {
                    Ok(c) => batch.push(c),
                    Err(_) => return,
                },
                recv(connecting) -> r => {
                    self.connecting = None;
                    if let Ok(r) = r {
                        self.connected(r);
                    }
                },
                default(wait) => {}
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.execute(&mut batch);
            }
        }
    }

    /// Starts a connect attempt when none runs, the connection is down and the backoff allows.
    fn maybe_connect(&mut self) {
        if self.conn.is_some() || self.connecting.is_some() || Instant::now() < self.next_try {
            return;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let settings = self.settings.clone();
        let spawned = std::thread::Builder::new()
            .name("replay-lease-connect".into())
            .spawn(move || {
                let r = RedisConn::connect(&settings.url, Proto::Resp2, settings.timeout);
                let r = r.and_then(|c| {
                    c.set_io_timeout(settings.timeout)?;
                    Ok(c)
                });
                let _ = tx.send(r);
            });
        match spawned {
            Ok(_) => self.connecting = Some(rx),
            Err(e) => self.failed(&RedisError::Io(e)),
        }
    }

    fn connected(&mut self, r: Connected) {
        match r {
            Ok(mut conn) => {
                if let Err(e) = self.rewrite(&mut conn) {
                    return self.failed(&e);
                }
                self.conn = Some(conn);
                self.backoff.reset();
                self.stats().up.inc();
                if std::mem::replace(&mut self.outage, false) {
                    tracing::info!(source = self.settings.source, redis = %self.settings.url,
                        "replay lease: Redis is back; sockets are checked across instances again");
                }
            }
            Err(e) => self.failed(&e),
        }
    }

    /// `SET key token NX` for every live consumer, pipelined, on a fresh connection.
    fn rewrite(&mut self, conn: &mut RedisConn) -> Result<(), RedisError> {
        if self.live.is_empty() {
            return Ok(());
        }
        for (token, stream) in &self.live {
            conn.queue(&[b"SET", &lease_key(stream), token.as_bytes(), b"NX"]);
        }
        conn.flush()?;
        for token in self.live.keys() {
            match conn.read()? {
                Value::Simple(_) => {
                    self.unset.remove(token);
                }
                Value::Error(_) => self.metrics.replay_lease.errors.inc(),
                _ => {} // the key exists: it decides
            }
        }
        Ok(())
    }

    /// Redis failed: drop the connection, count, log once per outage, back off.
    fn failed(&mut self, e: &RedisError) {
        if self.conn.take().is_some() {
            self.stats().up.dec();
        }
        self.stats().errors.inc();
        let delay = self.backoff.next_delay();
        self.next_try = Instant::now() + delay;
        if !std::mem::replace(&mut self.outage, true) {
            tracing::warn!(source = self.settings.source, redis = %self.settings.url, error = %e,
                "replay lease: Redis unreachable; sockets are not checked across instances \
                 until it is back (fail open)");
        }
    }

    /// Runs a batch: queue every command, one flush, then each reply in order. On a failure
    /// the rest of the batch is answered as if Redis were down.
    fn execute(&mut self, batch: &mut Vec<LeaseCmd>) {
        let Some(conn) = self.conn.as_mut() else {
            return self.without_redis(batch.drain(..));
        };
        for cmd in batch.iter() {
            queue(conn, cmd);
        }
        if let Err(e) = conn.flush() {
            self.failed(&e);
            return self.without_redis(batch.drain(..));
        }
        let mut cmds = batch.drain(..);
        for cmd in cmds.by_ref() {
            let reply = match self.conn.as_mut().map(RedisConn::read) {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    self.failed(&e);
                    self.without_redis(std::iter::once(cmd));
                    break;
                }
                None => {
                    self.without_redis(std::iter::once(cmd));
                    break;
                }
            };
            self.apply(cmd, &reply);
        }
        self.without_redis(cmds);
    }

    /// Handles one command's reply.
    fn apply(&mut self, cmd: LeaseCmd, reply: &Value) {
        if let Value::Error(e) = reply {
            self.stats().errors.inc();
            tracing::debug!(error = %e, ?cmd, "replay lease: command refused");
        }
        match cmd {
            LeaseCmd::Acquire { token, stream } => {
                if matches!(reply, Value::Error(_)) {
                    self.unset.insert(token.clone());
                }
                self.live.insert(token, stream);
            }
            LeaseCmd::Check {
                consumer, token, ..
            } => {
                let verdict = if self.unset.contains(&token) {
                    Verdict::Unchecked
                } else {
                    Verdict::of_reply(reply, &token)
                };
                match verdict {
                    Verdict::Unchecked => self.stats().unchecked.inc(),
                    Verdict::Held => self.stats().checks.inc(),
                    Verdict::Taken | Verdict::Gone => {
                        self.stats().checks.inc();
                        self.stats().knockouts.inc();
                        // The consumer ends without a release.
                        self.live.remove(&token);
                    }
                }
                self.answer(consumer, verdict);
            }
            LeaseCmd::Release { token, .. } => {
                self.unset.remove(&token);
                self.live.remove(&token);
            }
            LeaseCmd::Revoke { .. } => {
                if !matches!(reply, Value::Error(_)) {
                    self.stats().revokes.inc();
                }
            }
        }
    }

    /// Handles commands that cannot reach Redis: checks fail open, sets are remembered as
    /// failed, deletes are lost (counted; a lost revoke is logged).
    fn without_redis(&mut self, cmds: impl Iterator<Item = LeaseCmd>) {
        for cmd in cmds {
            match cmd {
                LeaseCmd::Acquire { token, stream } => {
                    self.stats().errors.inc();
                    self.unset.insert(token.clone());
                    self.live.insert(token, stream);
                }
                LeaseCmd::Check { consumer, .. } => {
                    self.stats().unchecked.inc();
                    self.answer(consumer, Verdict::Unchecked);
                }
                LeaseCmd::Release { token, .. } => {
                    self.stats().errors.inc();
                    self.unset.remove(&token);
                    self.live.remove(&token);
                }
                LeaseCmd::Revoke { stream } => {
                    self.stats().errors.inc();
                    tracing::warn!(
                        source = self.settings.source,
                        stream,
                        "replay lease: Redis unreachable; sockets on this stream in other \
                         instances are not told it was deleted"
                    );
                }
            }
        }
    }

    fn answer(&self, consumer: u64, verdict: Verdict) {
        // Waits for room: the driver drains replies every turn and never waits on us.
        let _ = self.replies.send(LeaseReply { consumer, verdict });
    }
}

/// Appends `cmd`'s Redis command to the connection's pipeline.
fn queue(conn: &mut RedisConn, cmd: &LeaseCmd) {
    match cmd {
        LeaseCmd::Acquire { stream, token } => {
            conn.queue(&[b"SET", &lease_key(stream), token.as_bytes()]);
        }
        LeaseCmd::Check { stream, .. } => conn.queue(&[b"GET", &lease_key(stream)]),
        LeaseCmd::Release { stream, token } => conn.queue(&[
            b"EVAL",
            RELEASE_SCRIPT,
            b"1",
            &lease_key(stream),
            token.as_bytes(),
        ]),
        LeaseCmd::Revoke { stream } => conn.queue(&[b"DEL", &lease_key(stream)]),
    }
}
