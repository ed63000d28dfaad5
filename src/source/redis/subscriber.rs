//! The subscriber thread: owns the pub/sub connection to Redis, drains it at once, and hands
//! every push to the hub: routed on this thread under the hub's lock once the hub runs
//! ([`HubDoor`], decision 0013), else on the hub's channel. Reconnects with capped exponential
//! backoff and jitter, checks
//! `notify-keyspace-events` when the source serves watches ([`super::notify`]), then
//! resubscribes everything.
//!
//! Shared with the hub thread (through [`SubShared`], one mutex): the set of Redis channels and
//! patterns wanted, with a refcount each, and the write half of the current connection. The hub
//! writes SUBSCRIBE/UNSUBSCRIBE on the 0→1 and 1→0 edges; a reconnect resubscribes the whole set
//! under the same lock, so an edge is never lost between the two.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Sender, TrySendError};

use super::conn::{RedisConn, RedisError};
use super::resp::{self, Proto, PubSub};
use super::{Backoff, Input, RedisSettings};
use crate::metrics::Metrics;
use crate::router::UpstreamMsg;
use crate::router::hub::{HubDoor, ShardLink};
use crate::source::{SourceEvent, SourceInput};

/// A subscribed connection silent this long gets a `PING`.
pub const PING_WHEN_IDLE: Duration = Duration::from_secs(1);
/// A `PING` unanswered this long means Redis stopped answering (stopped, overloaded, or a
/// network that drops packets without a reset): the source is reported down (`/healthz`
/// degraded) until anything arrives again. The connection is kept: nothing published
/// meanwhile is lost by a reconnect, and clients stay.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(3);
/// How often the reader wakes up without data, to send pings and check the deadline.
pub(super) const TICK: Duration = Duration::from_millis(250);

/// Most inputs handed to the hub at once (the bound of the hand-over batch).
pub(super) const BATCH: usize = 512;

/// Most names per SUBSCRIBE command when resubscribing.
pub(super) const CHUNK: usize = 512;

/// What the hub and the subscriber thread share.
#[derive(Default)]
pub struct SubShared {
    state: Mutex<SubState>,
}

#[derive(Default)]
struct SubState {
    channels: HashMap<Bytes, u32>,
    patterns: HashMap<Bytes, u32>,
    writer: Option<TcpStream>,
}

/// Channel or pattern, for the shared refcounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `SUBSCRIBE`.
    Channel,
    /// `PSUBSCRIBE`.
    Pattern,
}

impl SubShared {
    fn lock(&self) -> MutexGuard<'_, SubState> {
        // A panic while holding this lock cannot leave the maps inconsistent (each update is a
        // single insert or remove), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one reference to each name; sends SUBSCRIBE for names that went 0 → 1. Returns the
    /// names that were already wanted (no confirmation will come for them).
    pub fn add(&self, kind: Kind, names: &[Bytes]) -> Vec<Bytes> {
        let mut guard = self.lock();
        let (map, writer) = guard.split(kind);
        let (fresh, existing): (Vec<Bytes>, Vec<Bytes>) = names.iter().cloned().partition(|n| {
            let c = map.entry(n.clone()).or_insert(0);
            *c += 1;
            *c == 1
        });
        send(writer, kind.command(true), &fresh);
        existing
    }

    /// Writes a `PING` on the connection (false when there is no writer).
    pub fn ping(&self) -> bool {
        write_ping(&mut self.lock().writer)
    }

    /// Drops one reference to each name; sends UNSUBSCRIBE for names that went 1 → 0.
    pub fn remove(&self, kind: Kind, names: &[Bytes]) {
        let mut guard = self.lock();
        let (map, writer) = guard.split(kind);
        let gone: Vec<Bytes> = names
            .iter()
            .filter(|n| match map.get_mut(*n) {
                Some(c) => {
                    *c -= 1;
                    *c == 0 && map.remove(*n).is_some()
                }
                None => false,
            })
            .cloned()
            .collect();
        send(writer, kind.command(false), &gone);
    }
}

impl SubState {
    /// The refcounts for `kind`, and the writer, borrowed together.
    fn split(&mut self, kind: Kind) -> (&mut HashMap<Bytes, u32>, &mut Option<TcpStream>) {
        let map = match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
        };
        (map, &mut self.writer)
    }
}

impl Kind {
    /// `SUBSCRIBE`/`UNSUBSCRIBE`, or the pattern forms.
    pub(super) fn command(self, subscribe: bool) -> &'static [u8] {
        match (self, subscribe) {
            (Kind::Channel, true) => b"SUBSCRIBE",
            (Kind::Channel, false) => b"UNSUBSCRIBE",
            (Kind::Pattern, true) => b"PSUBSCRIBE",
            (Kind::Pattern, false) => b"PUNSUBSCRIBE",
        }
    }
}

/// Writes `PING` (allowed on a subscribed connection, in RESP2 and RESP3); on failure drops the
/// writer, as [`send`] does.
pub(super) fn write_ping(writer: &mut Option<TcpStream>) -> bool {
    let Some(w) = writer.as_mut() else {
        return false;
    };
    if w.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        let _ = w.shutdown(std::net::Shutdown::Both);
        *writer = None;
        return false;
    }
    true
}

/// Writes `cmd names…` in chunks; on failure drops the writer (the reader thread notices the
/// broken connection, reconnects and resubscribes everything).
pub(super) fn send(writer: &mut Option<TcpStream>, cmd: &[u8], names: &[Bytes]) {
    if names.is_empty() {
        return;
    }
    let Some(w) = writer.as_mut() else { return };
    let mut out = BytesMut::new();
    for chunk in names.chunks(CHUNK) {
        let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
        args.push(cmd);
        args.extend(chunk.iter().map(|b| &b[..]));
        resp::encode_command(&mut out, &args);
    }
    if w.write_all(&out).is_err() {
        // Force the reader to notice: it reconnects and resubscribes the whole wanted set.
        let _ = w.shutdown(std::net::Shutdown::Both);
        *writer = None;
    }
}

/// Runs the subscriber thread until the process ends, or until the shard that reads its
/// connection has stopped. Input goes through `door`
/// once the hub has opened it, else on the hub's channel.
///
/// With `on_shard`, each connection, once subscribed, is read on that shard's runtime and this
/// thread only supervises it (decision 0017, [`super::on_shard`]).
pub fn run(
    settings: Arc<RedisSettings>,
    shared: Arc<SubShared>,
    hub: Sender<UpstreamMsg>,
    door: HubDoor,
    metrics: Arc<Metrics>,
    on_shard: Option<ShardLink>,
) {
    let stats = &metrics.redis[settings.index];
    let mut backoff = Backoff::new(settings.backoff_max);
    let mut connected_before = false;
    loop {
        let Some(mut conn) = super::connect_or_wait(&settings, &mut backoff, "subscriber") else {
            continue;
        };
        // Before resubscribing: the flags must be in place before the confirmations that
        // trigger the watches' snapshot reads. A Redis restart loses a `CONFIG SET`.
        if settings.serves_watches
            && let Err(e) = super::notify::check(&mut conn, &settings)
        {
            tracing::warn!(redis = %settings.url, error = %e, "redis notify-keyspace-events check failed");
            std::thread::sleep(backoff.next_delay());
            continue;
        }
        if let Err(e) = resubscribe(&mut conn, &shared) {
            tracing::warn!(redis = %settings.url, error = %e, "redis resubscribe failed");
            std::thread::sleep(backoff.next_delay());
            continue;
        }
        backoff.reset();
        stats.up.set(1);
        if connected_before {
            stats.reconnects.inc();
            tracing::info!(redis = %settings.url, "reconnected to redis; resubscribed");
        } else {
            tracing::info!(redis = %settings.url, proto = ?conn.proto, "connected to redis");
        }
        connected_before = true;
        let mut stalled = |stalled: bool| {
            stalled_log(&settings.url, stalled);
            stats.up.set(u64::from(!stalled));
        };
        let err = match &on_shard {
            Some(shard) => match super::on_shard::read_on_shard(
                conn,
                shard,
                &shared,
                &hub,
                &door,
                &metrics,
                settings.index,
                &mut stalled,
            ) {
                super::on_shard::Ended::Lost(err) => err,
                super::on_shard::Ended::ShardGone => {
                    // Shutting down: the thread ends quietly, and Redis sees the close.
                    shared.lock().writer = None;
                    tracing::debug!(redis = %settings.url, "the shard reading redis stopped; subscriber thread ends");
                    return;
                }
            },
            None => read_loop(
                settings.index,
                &mut conn,
                &hub,
                Some(&door),
                &metrics,
                &|| shared.ping(),
                &mut |c| {
                    if let Control::Stalled(s) = c {
                        stalled(s);
                    }
                },
            ),
        };
        shared.lock().writer = None;
        stats.up.set(0);
        tracing::warn!(redis = %settings.url, error = %err, "redis subscriber connection lost");
        let _ = hub.try_send(UpstreamMsg::Source(SourceInput::Redis {
            source: settings.index,
            input: Input::Down,
        }));
    }
}

/// Subscribes the whole wanted set and installs the writer, under one lock.
fn resubscribe(conn: &mut RedisConn, shared: &SubShared) -> Result<(), RedisError> {
    let mut st = shared.lock();
    let channels: Vec<Bytes> = st.channels.keys().cloned().collect();
    let patterns: Vec<Bytes> = st.patterns.keys().cloned().collect();
    for (cmd, names) in [
        (&b"SUBSCRIBE"[..], channels),
        (&b"PSUBSCRIBE"[..], patterns),
    ] {
        for chunk in names.chunks(CHUNK) {
            let mut args: Vec<&[u8]> = vec![cmd];
            args.extend(chunk.iter().map(|b| &b[..]));
            conn.queue(&args);
        }
    }
    conn.flush()?;
    st.writer = Some(conn.writer()?);
    Ok(())
}

/// What a subscribed connection said besides messages and `subscribe` confirmations, for a
/// cluster's node threads (a single Redis ignores it).
#[derive(Debug)]
pub enum Control {
    /// `sunsubscribe <channel>`: ours, or the server's after the channel's slot migrated.
    ShardUnsubscribed(Bytes),
    /// An error reply to a subscription command (`-MOVED` for an `SSUBSCRIBE` sent to a node
    /// that no longer owns the slot).
    Refused(String),
    /// true: a `PING` went unanswered for [`REPLY_DEADLINE`]; false: Redis answers again.
    Stalled(bool),
}

/// The log line of a stall or of its end.
pub(super) fn stalled_log(redis: &super::RedisUrl, stalled: bool) {
    if stalled {
        tracing::warn!(%redis, deadline = ?REPLY_DEADLINE, "redis stopped answering (no reply to PING): source down, /healthz degraded; clients stay connected");
    } else {
        tracing::info!(%redis, "redis answers again");
    }
}

/// Reads pushes until the connection fails; returns why. `ping` writes a `PING` on the
/// connection (through the shared writer); it is sent after [`PING_WHEN_IDLE`] of silence, and
/// `control` hears [`Control::Stalled`] when it goes unanswered for [`REPLY_DEADLINE`], and
/// what else a cluster needs to know ([`Control`]).
///
/// Everything one socket read brought (at most `BATCH`, 512 inputs) is handed over together
/// before the next read: through `door` when the hub has opened it, so this thread routes it
/// under the hub's lock and each shard is woken once per batch; else on `hub`, the hub's
/// channel.
pub fn read_loop(
    index: usize,
    conn: &mut RedisConn,
    hub: &Sender<UpstreamMsg>,
    door: Option<&HubDoor>,
    metrics: &Metrics,
    ping: &dyn Fn() -> bool,
    control: &mut dyn FnMut(Control),
) -> RedisError {
    let mut batch = Vec::new();
    let err = read_batches(index, conn, &mut batch, hub, door, metrics, ping, control);
    hand_over(&mut batch, hub, door, metrics);
    err
}

/// [`read_loop`] until the connection fails, with `batch` as its hand-over buffer.
#[allow(clippy::too_many_arguments)]
fn read_batches(
    index: usize,
    conn: &mut RedisConn,
    batch: &mut Vec<SourceInput>,
    hub: &Sender<UpstreamMsg>,
    door: Option<&HubDoor>,
    metrics: &Metrics,
    ping: &dyn Fn() -> bool,
    control: &mut dyn FnMut(Control),
) -> RedisError {
    let mut pushes = Pushes::new(index, metrics);
    if let Err(e) = conn.set_read_tick(TICK) {
        return RedisError::Io(e);
    }
    let mut live = Liveness::new();
    loop {
        let buffered = match conn.next_buffered() {
            Ok(v) => v,
            Err(e) => return e,
        };
        let read = match buffered {
            Some(v) => Ok(Some(v)),
            None => {
                // Nothing complete is left from the last read: hand the batch over before
                // the next read can block.
                hand_over(batch, hub, door, metrics);
                conn.read_or_tick()
            }
        };
        let value = match read {
            Ok(Some(v)) => v,
            Ok(None) => {
                live.tick(ping, &mut |s| control(Control::Stalled(s)));
                continue;
            }
            Err(e) => return e,
        };
        live.heard(Instant::now(), &mut |s| control(Control::Stalled(s)));
        let input = match pushes.take(value, conn.proto, control) {
            Ok(Some(input)) => input,
            Ok(None) => continue,
            Err(e) => return e,
        };
        batch.push(input);
        // Without a door (a cluster's node threads), each input goes at once, as it arrives.
        if door.is_none() || batch.len() >= BATCH {
            hand_over(batch, hub, door, metrics);
        }
    }
}

/// The ping and stall rule of a subscribed connection, fed by whatever reads it (this thread,
/// or the shard that reads it, decision 0017): a `PING` after [`PING_WHEN_IDLE`] of silence,
/// a stall reported when it goes unanswered for [`REPLY_DEADLINE`], its end when anything
/// arrives again.
pub(super) struct Liveness {
    heard: Instant,
    ping_sent: Option<Instant>,
    stalled: bool,
}

impl Liveness {
    pub(super) fn new() -> Self {
        Liveness {
            heard: Instant::now(),
            ping_sent: None,
            stalled: false,
        }
    }

    /// Something was read at `at`: it answers a ping sent before it, and ends a stall.
    pub(super) fn heard(&mut self, at: Instant, stalled: &mut dyn FnMut(bool)) {
        self.heard = self.heard.max(at);
        if self.ping_sent.is_none_or(|sent| at >= sent) {
            self.ping_sent = None;
            if self.stalled {
                self.stalled = false;
                stalled(false);
            }
        }
    }

    /// A tick without anything read: `ping` (true when written) after [`PING_WHEN_IDLE`] of
    /// silence, `stalled(true)` once it has gone unanswered for [`REPLY_DEADLINE`].
    pub(super) fn tick(&mut self, ping: &dyn Fn() -> bool, stalled: &mut dyn FnMut(bool)) {
        match self.ping_sent {
            Some(at) if !self.stalled && at.elapsed() >= REPLY_DEADLINE => {
                self.stalled = true;
                stalled(true);
            }
            None if self.heard.elapsed() >= PING_WHEN_IDLE && ping() => {
                self.ping_sent = Some(Instant::now());
            }
            _ => {}
        }
    }
}

/// Turns the values read from a subscribed connection into the hub's inputs, wherever the
/// connection is read (this thread, or a shard: [`ShardRead`]).
pub(super) struct Pushes<'m> {
    index: usize,
    stats: &'m crate::metrics::RedisStats,
    /// Events seen, for sampling stage timings.
    seen: u64,
}

impl<'m> Pushes<'m> {
    pub(super) fn new(index: usize, metrics: &'m Metrics) -> Self {
        Pushes {
            index,
            stats: &metrics.redis[index],
            seen: 0,
        }
    }

    /// The input `value` makes, `None` for values that need none (pongs, other confirmations),
    /// or why the connection must be reset.
    pub(super) fn take(
        &mut self,
        value: resp::Value,
        proto: Proto,
        control: &mut dyn FnMut(Control),
    ) -> Result<Option<SourceInput>, RedisError> {
        let input = match resp::classify(value) {
            PubSub::Message { channel, payload } => Input::Event {
                event: SourceEvent::Message { channel, payload },
                read_at: sample(&mut self.seen),
            },
            PubSub::PMessage {
                pattern,
                channel,
                payload,
            } => Input::Event {
                event: SourceEvent::PMessage {
                    pattern,
                    channel,
                    payload,
                },
                read_at: sample(&mut self.seen),
            },
            PubSub::Confirm { kind, name, .. } => {
                if &kind[..] == b"sunsubscribe" {
                    control(Control::ShardUnsubscribed(name));
                    return Ok(None);
                }
                if &kind[..] != b"subscribe" {
                    return Ok(None);
                }
                Input::Subscribed { channel: name }
            }
            PubSub::Pong => return Ok(None),
            PubSub::Reply(resp::Value::Error(e)) => {
                if e.starts_with("MOVED") {
                    // A cluster re-homing a sharded subscription whose slot already left.
                    tracing::debug!(error = %e, "redis cluster node redirected a subscription command");
                } else {
                    tracing::warn!(error = %e, "redis refused a subscription command");
                }
                control(Control::Refused(e));
                return Ok(None);
            }
            PubSub::Reply(other) => {
                if proto == Proto::Resp2 {
                    return Err(RedisError::Reply(format!(
                        "unexpected value on a subscribed connection: {other:?}"
                    )));
                }
                return Ok(None);
            }
        };
        if matches!(input, Input::Event { .. }) {
            self.stats.events.inc();
        }
        Ok(Some(SourceInput::Redis {
            source: self.index,
            input,
        }))
    }
}

/// Hands `batch` to the hub (emptying it): routed on this thread through `door` when the hub
/// runs, else queued on the hub's channel.
fn hand_over(
    batch: &mut Vec<SourceInput>,
    hub: &Sender<UpstreamMsg>,
    door: Option<&HubDoor>,
    metrics: &Metrics,
) {
    hand_over_to(batch, hub, door, metrics, true);
}

/// [`hand_over`], where `may_block` false (on a shard) never waits for room on the hub's
/// channel.
pub(super) fn hand_over_to(
    batch: &mut Vec<SourceInput>,
    hub: &Sender<UpstreamMsg>,
    door: Option<&HubDoor>,
    metrics: &Metrics,
    may_block: bool,
) {
    if batch.is_empty() || door.is_some_and(|d| d.route(batch)) {
        return;
    }
    for input in batch.drain(..) {
        let SourceInput::Redis { source, input } = input else {
            continue;
        };
        if let Input::Subscribed { .. } = input {
            // A confirmation drives snapshot reads: wait for room rather than lose it (only
            // when the hub channel is full, in which case messages are being dropped anyway).
            // A shard never waits: there it is dropped, counted and logged.
            let msg = UpstreamMsg::Source(SourceInput::Redis { source, input });
            if may_block {
                let _ = hub.send(msg);
            } else if hub.try_send(msg).is_err() {
                metrics.redis[source].events_dropped.inc();
                tracing::warn!(
                    source,
                    "hub channel full: a redis subscribe confirmation was dropped (a watch may miss its snapshot)"
                );
            }
            continue;
        }
        // Never block on the hub: a full channel drops the event (counted), so Redis's output
        // buffer for this client never grows because of us.
        let msg = UpstreamMsg::Source(SourceInput::Redis { source, input });
        if let Err(TrySendError::Full(_)) = hub.try_send(msg) {
            metrics.redis[source].events_dropped.inc();
        }
    }
}

/// Timestamps one event in [`STAGE_SAMPLE_EVERY`](crate::metrics::STAGE_SAMPLE_EVERY).
fn sample(seen: &mut u64) -> Option<std::time::Instant> {
    *seen += 1;
    seen.is_multiple_of(crate::metrics::STAGE_SAMPLE_EVERY)
        .then(std::time::Instant::now)
}
