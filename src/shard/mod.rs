//! A shard: one OS thread, one io_uring runtime, one listener, one `Slab` of connections.
//!
//! [`Shard`] is the shard's whole state, owned by its thread as `Rc<RefCell<Shard>>` (never
//! `Send`, never locked). Tasks on the thread borrow it briefly and never across an `.await`.
//! The methods here are the synchronous operations those tasks perform: deliver an event, queue
//! a frame, (un)subscribe, close a connection. The async drivers live in [`run`].
//!
//! Invariants:
//! - every key in the topic table is a live connection in `conns` (cleanup is synchronous);
//! - the hub learns of every interest edge, in order (a local backlog absorbs a full channel);
//! - one connection's trouble (overflow, silence) closes that connection, never stalls the shard.

mod access;
pub mod eio;
pub mod replay;
pub mod run;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use slab::Slab;

use crate::config::Config;
use crate::conn::outbox::{OutFrame, SendStatus};
use crate::conn::{Conn, ConnState, Tick};
use crate::metrics::{Metrics, ShardStats};
use crate::protocol::CloseCode;
use crate::router::table::{Change, ConnKey, TopicTable};
use crate::router::{
    ConnRef, Format, Frames, Interest, LocalTopicId, ShardId, SourceId, TopicKind, UpstreamMsg,
};
use crate::ws::frame;

/// How long a closing connection may take to flush and answer our close frame.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A connection the shard wrote itself (the direct flush, decision 0014) less than this many
/// milliseconds ago is being sent a stream (over 50 frames a second), one frame a turn: its
/// write loop takes the next frame, so that frames pile up behind a write in flight instead of
/// each costing its own `sendmsg`. Without it a saturated shard that is handed one event a
/// turn writes every frame alone and stays saturated (decision 0016; 2 ms was tried and caught
/// too few).
pub const STREAM_GAP_MS: u16 = 20;

/// The heartbeat that applies to one connection (see [`Shard::heartbeat`]).
#[derive(Debug, Clone, Copy)]
pub struct Beat {
    /// How often it is pinged.
    pub ping_interval: Duration,
    /// How long a ping may stay unanswered before the connection is closed (4001).
    pub pong_timeout: Duration,
    /// Protocol pings (any frame answers) or JSON pings (`pong` or `init` answers).
    pub style: crate::config::Heartbeat,
}

/// The heartbeat of connections of `kind` under `config` (see [`Shard::heartbeat`]).
fn beat_of(config: &Config, kind: crate::conn::ConnKind) -> Beat {
    let route = match kind {
        crate::conn::ConnKind::Route { route, .. } => config.routes.get(usize::from(route)),
        _ => None,
    };
    match route {
        Some(r) => Beat {
            ping_interval: r.ping_interval,
            pong_timeout: r.pong_timeout,
            style: r.heartbeat,
        },
        None => Beat {
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            style: crate::config::Heartbeat::Ws,
        },
    }
}

/// Shared handle to a shard's state, for the tasks on its thread.
pub type ShardRef = Rc<RefCell<Shard>>;

/// A shard's state.
pub struct Shard {
    /// This shard's id.
    pub id: ShardId,
    /// The process configuration.
    pub config: Arc<Config>,
    /// Connections, keyed by slab index.
    pub conns: Slab<Conn>,
    /// Local subscribers per topic.
    pub topics: TopicTable,
    /// Upstream channel to the hub.
    hub: Sender<UpstreamMsg>,
    /// Interest updates waiting for room in the hub channel (bounded by topics × 2).
    backlog: VecDeque<UpstreamMsg>,
    /// All metrics; this shard writes only `metrics.shards[id]`.
    metrics: Arc<Metrics>,
    /// The shared ping frame, encoded once.
    ping: OutFrame,
    /// The shared `{"type":"ping"}` text frame of JSON-heartbeat routes.
    json_ping: OutFrame,
    /// The shared `{"type":"hangup"}` text frame.
    hangup: OutFrame,
    /// The listener index of each route (parallel to `config.routes`).
    pub route_listeners: Vec<usize>,
    /// Set once graceful shutdown started.
    pub shutting_down: bool,
    /// Events are arriving in bursts (the last inbox turn found several): a woken writer waits
    /// one scheduler round before flushing, so one `writev` carries more frames.
    pub cork: bool,
    /// Most connections this shard accepts.
    pub max_conns: usize,
    /// The per-IP table shared by every shard (set from [`run::ShardSetup`]).
    pub per_ip: Arc<crate::limits::PerIp>,
    /// Whether each listener expects a PROXY protocol header ([`crate::conn::proxy`]).
    pub proxy_listeners: Vec<bool>,
    /// Source of [`Conn::id`]s.
    next_conn_id: u64,
    /// Until when the sweep returns freed memory to the OS (see `run::sweep`).
    trim_until: Option<Instant>,
    /// Notified when the last connection leaves during shutdown.
    pub drained: Rc<tokio::sync::Notify>,
    /// Connections served by a replay source, and the channel to it.
    pub replays: replay::Replays,
    /// The event-stream registry of each route (parallel to `config.routes`; `None` for routes
    /// without one), set from [`run::ShardSetup`]. See [`Shard::registry`].
    pub registries: Vec<Option<crate::store::registry::Registry>>,
    /// Engine.IO sessions owned by this shard ([`eio`]).
    pub eio: eio::EioSessions,
    /// Every shard's inbox (this one's included), for handing a request to the shard that owns
    /// its Engine.IO session. Set from [`run::ShardSetup`].
    pub peers: Vec<crate::router::hub::ShardLink>,
    /// Each route's SuperDARN echo store (parallel to `config.routes`; `None` for routes
    /// without `echoes_db`), for `GET /echoes`. Set from [`run::ShardSetup`].
    pub echoes: Vec<Option<crate::store::echoes::EchoesHandle>>,
    /// Verifies JWTs with the configured keys; `None` without `--jwt-secret` or
    /// `--jwt-public-key` ([`access`]).
    pub verifier: Option<Rc<crate::auth::Verifier>>,
    /// Connections that this inbox turn gave their first frames while no write was in
    /// flight, for [`Shard::flush_turn`] (each at most once a turn, so bounded by the
    /// connections).
    pub to_flush: Vec<ConnKey>,
    /// The batch vector of the direct flush ([`Shard::flush_turn`]), kept between turns.
    flush_batch: Vec<OutFrame>,
}

impl Shard {
    /// A shard with no connections.
    pub fn new(
        id: ShardId,
        config: Arc<Config>,
        hub: Sender<UpstreamMsg>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let max_conns = config.max_connections.div_ceil(config.shards.max(1));
        let route_listeners = config.route_listeners();
        // The configuration checked the keys already; a failure here leaves tokens unverifiable
        // (every `jwt` handshake is refused), never accepted.
        let verifier = crate::auth::Verifier::new(&config.jwt)
            .ok()
            .flatten()
            .map(Rc::new);
        let proxy_listeners = crate::conn::proxy::listeners(&config);
        Shard {
            id,
            config,
            conns: Slab::new(),
            topics: TopicTable::new(),
            hub,
            backlog: VecDeque::new(),
            metrics,
            ping: OutFrame::new(frame::ping()),
            json_ping: OutFrame::new(frame::encode(
                frame::OpCode::Text,
                crate::profile::JSON_PING,
            )),
            hangup: OutFrame::new(frame::encode(
                frame::OpCode::Text,
                crate::profile::JSON_HANGUP,
            )),
            route_listeners,
            shutting_down: false,
            cork: false,
            max_conns,
            per_ip: Arc::new(crate::limits::PerIp::new(0, None)),
            proxy_listeners,
            next_conn_id: 0,
            trim_until: None,
            drained: Rc::new(tokio::sync::Notify::new()),
            replays: replay::Replays::default(),
            registries: Vec::new(),
            eio: eio::EioSessions::default(),
            peers: Vec::new(),
            echoes: Vec::new(),
            verifier,
            to_flush: Vec::new(),
            flush_batch: Vec::new(),
        }
    }

    /// Route `route`'s event-stream registry (`ess_api` routes; `None` otherwise). Clone it out
    /// in its own `let` and await the request after the borrow is gone:
    /// `let pending = shard.borrow().registry(i).cloned()?.lookup(uuid);` then
    /// `pending?.await`.
    pub fn registry(&self, route: usize) -> Option<&crate::store::registry::Registry> {
        self.registries.get(route)?.as_ref()
    }

    /// This shard's own wake-up (from [`peers`](Self::peers); `None` before the setup set it).
    pub fn own_wake(&self) -> Option<crate::rt::WakeHandle> {
        self.peers
            .get(usize::from(self.id.0))
            .map(|link| link.wake.clone())
    }

    /// This shard's counters.
    pub fn stats(&self) -> &ShardStats {
        &self.metrics.shards[usize::from(self.id.0)]
    }

    /// All counters, for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Delivers one event to every local subscriber of `target`. A sampled event (`stamp`)
    /// records its dispatch time and marks the last subscriber it reached as the probe whose
    /// next write is timed (the tail of the fan-out).
    pub fn deliver(&mut self, target: LocalTopicId, frames: Frames, stamp: Option<Instant>) {
        self.topics.delivered(target);
        let Some(entry) = self.topics.get(target) else {
            return;
        };
        if let Some(stamp) = stamp {
            self.metrics.shards[usize::from(self.id.0)]
                .stages
                .dispatch
                .observe(stamp.elapsed());
        }
        let mut probe = None;
        // One `OutFrame` (an `Rc` around the shared bytes) per format, cloned per subscriber:
        // a non-atomic refcount bump each, never an allocation.
        let mut first: Option<(Format, OutFrame)> = None;
        let mut more: Vec<(Format, OutFrame)> = Vec::new();
        for (f, b) in frames.iter() {
            let out = (f, OutFrame::new(b.clone()));
            if first.is_none() {
                first = Some(out);
            } else {
                more.push(out);
            }
        }
        let pick = |f: Format| -> Option<&OutFrame> {
            match &first {
                Some((g, o)) if *g == f => Some(o),
                _ => more.iter().find(|(g, _)| *g == f).map(|(_, o)| o),
            }
        };
        let stats = &self.metrics.shards[usize::from(self.id.0)];
        let mut overflowed = Vec::new();
        let mut delivered = 0u64;
        let mut routes = Vec::new();
        for key in entry.subscribers() {
            if key >= eio::ROUTE_KEY_BASE {
                routes.push(key - eio::ROUTE_KEY_BASE);
                continue;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let Some(frame) = conn.format().and_then(pick) else {
                continue;
            };
            if let Some(held) = conn.holding() {
                if held.frames.len() < crate::conn::MAX_HELD {
                    held.frames.push(frame.clone());
                } else {
                    overflowed.push(key);
                }
                continue;
            }
            match conn.outbox.push(frame.clone()) {
                SendStatus::Queued { wake_writer } => {
                    delivered += 1;
                    probe = Some(key);
                    if wake_writer {
                        // Written by the inbox loop at the end of its turn (`flush_turn`),
                        // not by waking the connection's write loop.
                        self.to_flush.push(key);
                    }
                }
                SendStatus::Overflow => overflowed.push(key),
                SendStatus::Closed => {}
            }
        }
        stats.messages_out.add(delivered);
        if let (Some(stamp), Some(key)) = (stamp, probe)
            && let Some(conn) = self.conns.get_mut(key)
        {
            conn.probe.get_or_insert(stamp);
        }
        for key in overflowed {
            self.stats().slow_consumer_closes.inc();
            if let Some(conn) = self.conns.get_mut(key) {
                conn.outbox.clear();
            }
            self.close(key, CloseCode::SlowConsumer, CLOSE_GRACE);
        }
        if let Some(frame) = pick(Format::SocketIo).cloned() {
            let now = Instant::now();
            for route in routes {
                self.eio_broadcast(route, &frame, now);
            }
        }
    }

    /// Sends what this inbox turn delivered to connections that had nothing queued or in
    /// flight. At the end of a turn (`direct`), a connection given one frame is written by the
    /// shard itself: one non-blocking `sendmsg`
    /// ([`SocketHandle::try_writev`](crate::rt::SocketHandle::try_writev)) instead of a
    /// wake-up, a poll and an io_uring submission of its write loop. That is the low fan-out
    /// case (each event to a few connections, each connection seldom written). A connection
    /// given several frames in the turn is being sent a stream: its write loop is woken, corks
    /// and submits them together with what follows (measured: direct writes of every
    /// connection halved the frames per write at max rate and cost CPU per frame). Where the
    /// socket buffer does not take a direct write whole, or it fails, the rest stays queued
    /// and the write loop is woken: it waits for room (or meets the error) as before. Before a
    /// budget yield (`direct` false) every write loop is woken. Decision 0014. The inbox loop
    /// calls this before it yields and at the end of each turn; whoever calls
    /// [`Shard::deliver`] must call it after.
    pub fn flush_turn(&mut self, direct: bool) {
        if self.to_flush.is_empty() {
            return;
        }
        if !direct {
            for key in self.to_flush.drain(..) {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.wake_writer();
                }
            }
            return;
        }
        self.flush_direct(Tick::now().millis16());
    }

    /// The direct half of [`Shard::flush_turn`], at `now_ms` ([`Tick::millis16`]).
    fn flush_direct(&mut self, now_ms: u16) {
        let mut keys = std::mem::take(&mut self.to_flush);
        let mut batch = std::mem::take(&mut self.flush_batch);
        let stats = &self.metrics.shards[usize::from(self.id.0)];
        let replays = !self.replays.is_empty();
        let mut written_out = Vec::new();
        for &key in &keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.outbox.is_empty() {
                continue;
            }
            if conn.writer_waker.is_none()
                || conn.outbox.in_flight()
                || conn.outbox.queued_frames() > 1
                || conn.outbox.direct_within(now_ms, STREAM_GAP_MS)
                || conn.outbox.is_closed()
                || conn.state != ConnState::Open
            {
                // Only a write loop parked on an empty outbox leaves the socket to us: one not
                // started yet (the upgrade's response may still be in flight) or already awake
                // writes the frame itself. Likewise a write in flight (its loop takes the rest
                // after it), a connection being sent a stream (several frames this turn: its
                // loop corks, and one submission carries more of them; so is one the shard
                // wrote itself under `STREAM_GAP_MS` ago, one frame a turn), or one closing
                // (its loop writes the close and half-closes).
                conn.wake_writer();
                continue;
            }
            conn.outbox.take_batch_into(&mut batch);
            let probe = conn.probe.take();
            if let Some(stamp) = probe {
                stats.stages.write_submit.observe(stamp.elapsed());
            }
            match conn.socket.try_writev(&batch) {
                Ok(n) => {
                    stats.bytes_out.add(n as u64);
                    stats.writes.inc();
                    stats.direct_writes.inc();
                    conn.outbox.mark_direct(now_ms);
                    if let Some(stamp) = probe {
                        stats.stages.write_complete.observe(stamp.elapsed());
                    }
                    conn.outbox.complete_into(&mut batch, n);
                }
                Err(_) => {
                    conn.outbox.complete_into(&mut batch, 0);
                    conn.probe = probe;
                }
            }
            if conn.outbox.is_empty() {
                if replays {
                    written_out.push(key);
                }
            } else {
                // The socket buffer is full (or the write failed): the write loop waits for
                // room, or meets the error and closes.
                stats.direct_writes_handed_over.inc();
                conn.wake_writer();
            }
        }
        keys.clear();
        self.to_flush = keys;
        self.flush_batch = batch;
        for key in written_out {
            self.replay_written(key);
        }
    }

    /// Adds a connection in the HTTP phase and returns its slab key.
    pub fn insert_conn(
        &mut self,
        socket: crate::rt::SocketHandle,
        listener: u8,
        now: Instant,
    ) -> ConnKey {
        self.next_conn_id += 1;
        let conn = Conn::new(
            self.next_conn_id,
            listener,
            socket,
            self.config.max_outbox_bytes,
            Tick::at(now),
        );
        self.stats().connections.inc();
        self.conns.insert(conn)
    }

    /// Marks a connection in the HTTP phase as a WebSocket of `kind` and counts it. Called
    /// before the 101 response (or anything else) is written, so a client that has read its
    /// first frame always finds itself in `ringcast_shard_websockets`; [`remove`](Self::remove)
    /// uncounts it.
    pub fn upgraded(&mut self, key: ConnKey, kind: crate::conn::ConnKind) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.kind == crate::conn::ConnKind::Http && kind != crate::conn::ConnKind::Http {
            conn.kind = kind;
            self.stats().websockets.inc();
        }
    }

    /// The [`ConnRef`] of a live connection.
    pub fn conn_ref(&self, key: ConnKey) -> Option<ConnRef> {
        self.conns.get(key).map(|c| ConnRef { key, id: c.id })
    }

    /// Asks the hub for the current value of `key` for connection `conn`.
    ///
    /// A watcher (`watcher`) is already subscribed to the key's changes: the hub answers from its
    /// cache, or the watch's first read reaches it anyway, so nothing is held back. A one-off
    /// snapshot (subscribe with `snapshot`) holds the connection's events back until the
    /// snapshot arrives ([`deliver_snapshot`](Self::deliver_snapshot)), so it comes first.
    pub fn request_snapshot(&mut self, conn: ConnKey, key: Bytes, watcher: bool) {
        let Some(cref) = self.conn_ref(conn) else {
            return;
        };
        let c = &self.conns[conn];
        let format = c.format().unwrap_or(Format::Json);
        let source = if format == Format::Bess {
            self.source_of(c.route(), &key, false)
        } else {
            self.source_of(c.route(), &key, true)
        };
        if let Some(c) = self.conns.get_mut(conn).filter(|_| !watcher) {
            c.held.get_or_insert_with(Box::default).pending += 1;
        }
        if watcher && let Some(id) = self.topics.lookup(source, TopicKind::Key, &key) {
            self.topics.await_first(id, conn);
        }
        self.tell_hub(UpstreamMsg::Snapshot {
            shard: self.id,
            conn: cref,
            source,
            format,
            key,
            watcher,
        });
    }

    /// Delivers a requested snapshot, then the events held back while waiting for it.
    /// `releases_held` is true for the one-off snapshot the connection holds its events for;
    /// a watcher's cached value is ordered like any other event.
    pub fn deliver_snapshot(&mut self, conn: ConnRef, frame: Bytes, releases_held: bool) {
        let Some(c) = self.conns.get_mut(conn.key).filter(|c| c.id == conn.id) else {
            return;
        };
        if !releases_held && let Some(held) = c.holding() {
            if held.frames.len() < crate::conn::MAX_HELD {
                held.frames.push(OutFrame::new(frame));
            }
            return;
        }
        let mut frames = vec![OutFrame::new(frame)];
        if releases_held
            && c.holding().is_some_and(|h| {
                h.pending = h.pending.saturating_sub(1);
                h.pending == 0
            })
            && let Some(held) = c.held.take()
        {
            frames.extend(held.frames);
        }
        for f in frames {
            match c.outbox.push(f) {
                SendStatus::Queued { wake_writer } => {
                    if wake_writer {
                        c.wake_writer();
                    }
                }
                SendStatus::Overflow => {
                    c.outbox.clear();
                    self.metrics.shards[usize::from(self.id.0)]
                        .slow_consumer_closes
                        .inc();
                    self.close(conn.key, CloseCode::SlowConsumer, CLOSE_GRACE);
                    return;
                }
                SendStatus::Closed => return,
            }
        }
    }

    /// Queues a data frame for one connection; an overflow closes it as a slow consumer.
    pub fn send(&mut self, key: ConnKey, frame: Bytes) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.outbox.push(OutFrame::new(frame)) {
            SendStatus::Queued { wake_writer } => {
                if wake_writer {
                    conn.wake_writer();
                }
                self.stats().messages_out.inc();
            }
            SendStatus::Overflow => {
                conn.outbox.clear();
                self.stats().slow_consumer_closes.inc();
                self.close(key, CloseCode::SlowConsumer, CLOSE_GRACE);
            }
            SendStatus::Closed => {}
        }
    }

    /// Queues a JSON text reply.
    pub fn send_text(&mut self, key: ConnKey, text: &str) {
        self.send(key, frame::encode(frame::OpCode::Text, text.as_bytes()));
    }

    /// Queues a control frame (pong, close reply) produced by the codec, ignoring the cap.
    pub fn send_control(&mut self, key: ConnKey, bytes: Bytes) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let SendStatus::Queued { wake_writer: true } =
            conn.outbox.push_control(OutFrame::new(bytes))
        {
            conn.wake_writer();
        }
    }

    /// Queues a ping for `key`; the caller calls [`Shard::flush_turn`] after its pings.
    pub fn ping(&mut self, key: ConnKey, now: Instant) {
        let Some(kind) = self.conns.get(key).map(|c| c.kind) else {
            return;
        };
        let ping = match self.heartbeat(kind).style {
            crate::config::Heartbeat::Ws => self.ping.clone(),
            crate::config::Heartbeat::Json => self.json_ping.clone(),
        };
        self.stats().pings.inc();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let now = Tick::at(now);
        conn.last_ping = now;
        conn.unanswered_ping.get_or_insert(now);
        // Written by the shard if it is the only frame (a parked or dormant connection,
        // `conn::dormant`): the sweep calls `flush_turn` after its pings.
        if let SendStatus::Queued { wake_writer: true } = conn.outbox.push_control(ping) {
            self.to_flush.push(key);
        }
    }

    /// Starts closing `key` with `code`: queues the close frame as the last frame and gives the
    /// peer `grace` to read it and answer before the socket is shut down.
    pub fn close(&mut self, key: ConnKey, code: CloseCode, grace: Duration) {
        self.close_frame(key, frame::close(code.code(), code.reason()), grace);
    }

    /// Closes `key` with a close frame of `code` and `reason` (a profile's own codes), with the
    /// usual grace.
    pub fn close_with(&mut self, key: ConnKey, code: u16, reason: &str) {
        self.close_frame(key, frame::close(code, reason), CLOSE_GRACE);
    }

    /// [`close`](Self::close) with a close frame built by the caller (a profile's own code).
    pub fn close_frame(&mut self, key: ConnKey, close: Bytes, grace: Duration) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.is_open() {
            return;
        }
        conn.state = ConnState::Closing {
            deadline: Tick::now().after(grace),
        };
        if conn
            .route()
            .and_then(|r| self.config.routes.get(r))
            .is_some_and(|r| r.hangup)
        {
            let _ = conn.outbox.push_control(self.hangup.clone());
        }
        conn.outbox.push_last(OutFrame::new(close));
        conn.wake_writer();
        self.unsubscribe_all(key);
    }

    /// Marks `key` closing without a close frame (the peer sent one, or vanished).
    pub fn close_quietly(&mut self, key: ConnKey, final_frame: Option<Bytes>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.is_open() {
            conn.state = ConnState::Closing {
                deadline: Tick::now().after(CLOSE_GRACE),
            };
        }
        match final_frame {
            Some(f) => {
                conn.outbox.push_last(OutFrame::new(f));
            }
            None => conn.outbox.seal(),
        }
        conn.wake_writer();
        self.unsubscribe_all(key);
    }

    /// The source serving `name` for a connection on `route` (see [`Config::source_for`]).
    pub fn source_of(&self, route: Option<usize>, name: &[u8], key: bool) -> SourceId {
        let route = route.and_then(|r| self.config.routes.get(r));
        SourceId::try_from(self.config.source_for(route, name, key)).unwrap_or(0)
    }

    /// The heartbeat of connections of `kind`: their route's, or the native listener's.
    pub fn heartbeat(&self, kind: crate::conn::ConnKind) -> Beat {
        beat_of(&self.config, kind)
    }

    /// Subscribes `key` to a channel or pattern; `Err` with an error code when refused.
    pub fn subscribe(
        &mut self,
        key: ConnKey,
        kind: TopicKind,
        name: &Bytes,
    ) -> Result<(), &'static str> {
        let route = self.conns.get(key).and_then(Conn::route);
        let source = self.source_of(route, name, kind.is_key());
        self.subscribe_in(key, source, kind, name)
    }

    /// Subscribes `key` to a topic of `source`; `Err` with an error code when refused.
    pub fn subscribe_in(
        &mut self,
        key: ConnKey,
        source: SourceId,
        kind: TopicKind,
        name: &Bytes,
    ) -> Result<(), &'static str> {
        let max = self.config.max_subscriptions;
        let Some(conn) = self.conns.get_mut(key) else {
            return Err("internal");
        };
        let Some(format) = conn.format() else {
            return Err("internal");
        };
        if !conn.is_open() {
            return Err("internal");
        }
        if conn.subscriptions.len() >= max
            && self
                .topics
                .lookup(source, kind, name)
                .is_none_or(|id| !conn.subscriptions.contains(&id))
        {
            return Err("too_many_subscriptions");
        }
        match self.topics.subscribe(source, kind, name, key, format) {
            Change::Unchanged => {}
            Change::Local(id) => {
                conn.subscriptions.push(id);
                self.stats().subscriptions.inc();
            }
            Change::Interest(id, formats) => {
                conn.subscriptions.push(id);
                self.stats().subscriptions.inc();
                self.tell_hub(UpstreamMsg::Interest(Interest {
                    shard: self.id,
                    source,
                    kind,
                    name: name.clone(),
                    target: id,
                    formats,
                }));
            }
        }
        self.sync_topic_gauge();
        Ok(())
    }

    /// Unsubscribes `key`; false when it was not subscribed.
    pub fn unsubscribe(&mut self, key: ConnKey, kind: TopicKind, name: &[u8]) -> bool {
        let route = self.conns.get(key).and_then(Conn::route);
        let source = self.source_of(route, name, kind.is_key());
        let Some(id) = self.topics.lookup(source, kind, name) else {
            return false;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let Some(pos) = conn.subscriptions.iter().position(|s| *s == id) else {
            return false;
        };
        conn.subscriptions.swap_remove(pos);
        let format = conn.format().unwrap_or(Format::Json);
        self.apply_unsubscribe(key, id, format);
        true
    }

    fn unsubscribe_all(&mut self, key: ConnKey) {
        if !self.replays.is_empty() {
            self.end_replay(key);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let subs = std::mem::take(&mut conn.subscriptions);
        let format = conn.format().unwrap_or(Format::Json);
        for id in subs {
            self.apply_unsubscribe(key, id, format);
        }
    }

    fn apply_unsubscribe(&mut self, key: ConnKey, id: LocalTopicId, format: Format) {
        let (source, kind, name) = match self.topics.get(id) {
            Some(e) => (e.source(), e.kind(), e.name().clone()),
            None => return,
        };
        match self.topics.unsubscribe(id, key, format) {
            Change::Unchanged => return,
            Change::Local(_) => {}
            Change::Interest(id, formats) => {
                self.tell_hub(UpstreamMsg::Interest(Interest {
                    shard: self.id,
                    source,
                    kind,
                    name,
                    target: id,
                    formats,
                }));
            }
        }
        self.stats().subscriptions.dec();
        self.sync_topic_gauge();
    }

    fn sync_topic_gauge(&self) {
        let stats = self.stats();
        let now = self.topics.len() as u64;
        let was = stats.topics.get();
        if now > was {
            stats.topics.add(now - was);
        } else {
            stats.topics.sub(was - now);
        }
    }

    /// Sends an interest change or snapshot request to the hub, in order, queueing it locally
    /// while the channel is full.
    fn tell_hub(&mut self, msg: UpstreamMsg) {
        self.backlog.push_back(msg);
        self.flush_backlog();
    }

    /// Retries queued interest changes, in order. Called on every inbox turn and sweep.
    pub fn flush_backlog(&mut self) {
        while let Some(msg) = self.backlog.pop_front() {
            match self.hub.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    self.backlog.push_front(msg);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.backlog.clear();
                    break;
                }
            }
        }
        let stats = &self.metrics.shards[usize::from(self.id.0)];
        let (now, was) = (self.backlog.len() as u64, stats.hub_backlog.get());
        if now >= was {
            stats.hub_backlog.add(now - was)
        } else {
            stats.hub_backlog.sub(was - now)
        }
    }

    /// Publishes through the hub; false when the hub channel is full or the configured Redis is
    /// down (answer 503: the publish would be lost).
    pub fn publish(&mut self, channel: Bytes, payload: Bytes) -> bool {
        let source = self.source_of(None, &channel, false);
        if !self.config.sources.is_empty()
            && self
                .metrics
                .redis
                .get(usize::from(source))
                .is_some_and(|m| m.up.get() == 0)
        {
            return false;
        }
        // Interest changes queued earlier must reach the hub before this publish.
        self.flush_backlog();
        if !self.backlog.is_empty() {
            return false;
        }
        self.hub
            .try_send(UpstreamMsg::Publish {
                source,
                channel,
                payload,
            })
            .is_ok()
    }

    /// Removes a finished connection.
    pub fn remove(&mut self, key: ConnKey) {
        self.unsubscribe_all(key);
        if let Some(conn) = self.conns.try_remove(key) {
            self.stats().connections.dec();
            if conn.kind.is_websocket() {
                self.stats().websockets.dec();
            }
            if conn.kind.is_eio() {
                self.eio_conn_gone(key, conn.kind, Instant::now());
            }
        }
        if self.shutting_down && self.conns.is_empty() {
            self.drained.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::conn::ConnKind;

    /// A shard on default settings, the hub's end of its channel (kept, so that sends to the
    /// hub succeed), and a loopback listener to accept its connections from.
    fn loopback_shard() -> (
        Shard,
        crossbeam_channel::Receiver<UpstreamMsg>,
        crate::rt::TcpListener,
        std::net::SocketAddr,
    ) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let listener = crate::rt::TcpListener::from_std(listener).expect("listener");
        let (tx, hub) = crossbeam_channel::bounded(64);
        let s = Shard::new(
            ShardId(0),
            Arc::new(Config::default()),
            tx,
            Arc::new(Metrics::new(1)),
        );
        (s, hub, listener, addr)
    }

    /// The direct flush's rule (decision 0014) on real loopback sockets: a connection whose write
    /// loop is parked and that got one frame this turn is written by the shard; one whose loop
    /// has not parked yet (it may still be writing the 101) keeps the frame queued; one given
    /// several frames in the turn is left to its (woken) write loop.
    #[test]
    fn the_shard_writes_only_a_lone_frame_and_only_to_a_parked_write_loop() {
        let rt = crate::rt::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (mut s, _hub, listener, addr) = loopback_shard();
            let channel = Bytes::from_static(b"c");
            // Three connections: not started, parked, parked (given two frames).
            let mut peers = Vec::new();
            let mut streams = Vec::new();
            let mut keys = Vec::new();
            for parked in [false, true, true] {
                let peer = std::net::TcpStream::connect(addr).expect("connect");
                peer.set_nonblocking(true).expect("nonblocking");
                let (stream, _) = listener.accept().await.expect("accept");
                let key = s.insert_conn(stream.handle(), 0, Instant::now());
                s.conns[key].kind = ConnKind::Native(Format::Json);
                if parked {
                    s.conns[key].writer_waker = Some(std::task::Waker::noop().clone());
                }
                s.subscribe(key, TopicKind::Channel, &channel)
                    .expect("subscribe");
                peers.push(peer);
                streams.push(stream);
                keys.push(key);
            }
            let topic = s.topics.lookup(0, TopicKind::Channel, b"c").expect("topic");
            let frame = |text: &'static [u8]| {
                let mut frames = Frames::new();
                frames.push(Format::Json, Bytes::from_static(text));
                frames
            };
            // The third connection gets a second frame in the same turn.
            s.deliver(topic, frame(b"one"), None);
            s.topics.unsubscribe(topic, keys[1], Format::Json);
            s.topics.unsubscribe(topic, keys[0], Format::Json);
            s.deliver(topic, frame(b"two"), None);
            s.flush_turn(true);

            let read_now = |peer: &mut std::net::TcpStream| {
                let mut buf = [0u8; 64];
                match peer.read(&mut buf) {
                    Ok(n) => buf[..n].to_vec(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Vec::new(),
                    Err(e) => panic!("read: {e}"),
                }
            };
            // Not parked: nothing written, the frame waits for the write loop.
            assert_eq!(s.conns[keys[0]].outbox.queued_frames(), 1);
            assert!(read_now(&mut peers[0]).is_empty());
            // Parked, one frame: written by the shard, the loop still parked.
            assert!(s.conns[keys[1]].outbox.is_idle());
            assert!(s.conns[keys[1]].writer_waker.is_some());
            // The shard's `sendmsg` is done by now; loopback delivers it at once.
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while got.len() < 3 && Instant::now() < deadline {
                got.extend(read_now(&mut peers[1]));
                std::thread::yield_now();
            }
            assert_eq!(got, b"one");
            // Parked, two frames: left to the write loop, which was woken (its waker taken).
            assert_eq!(s.conns[keys[2]].outbox.queued_frames(), 2);
            assert!(s.conns[keys[2]].writer_waker.is_none());
            assert!(read_now(&mut peers[2]).is_empty());
            assert_eq!(s.stats().direct_writes.get(), 1);
            assert_eq!(s.stats().direct_writes_handed_over.get(), 0);
            assert!(s.to_flush.is_empty());
            for key in keys {
                s.conns.remove(key);
            }
            drop(streams);
        });
    }

    /// A connection the shard wrote itself under `STREAM_GAP_MS` ago is being sent a stream:
    /// its next lone frame goes to its write loop, not to another `sendmsg` (decision 0016).
    /// Past the gap the shard writes it itself again. The clock is passed in, so the test does
    /// not depend on how fast it runs.
    #[test]
    fn a_connection_written_directly_moments_ago_is_left_to_its_write_loop() {
        let rt = crate::rt::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (mut s, _hub, listener, addr) = loopback_shard();
            let _peer = std::net::TcpStream::connect(addr).expect("connect");
            let (stream, _) = listener.accept().await.expect("accept");
            let key = s.insert_conn(stream.handle(), 0, Instant::now());
            s.conns[key].kind = ConnKind::Native(Format::Json);
            s.subscribe(key, TopicKind::Channel, &Bytes::from_static(b"c"))
                .expect("subscribe");
            let topic = s.topics.lookup(0, TopicKind::Channel, b"c").expect("topic");
            let send = |s: &mut Shard, text: &'static [u8], now_ms: u16| {
                s.conns[key].writer_waker = Some(std::task::Waker::noop().clone());
                let mut frames = Frames::new();
                frames.push(Format::Json, Bytes::from_static(text));
                s.deliver(topic, frames, None);
                s.flush_direct(now_ms);
            };
            let start = u16::MAX - 1; // across the clock's wrap
            send(&mut s, b"one", start);
            assert_eq!(s.stats().direct_writes.get(), 1);
            assert!(s.conns[key].outbox.is_idle());
            // 1 ms later: left to the write loop, which was woken (its waker taken).
            send(&mut s, b"two", start.wrapping_add(STREAM_GAP_MS - 1));
            assert_eq!(s.stats().direct_writes.get(), 1);
            assert_eq!(s.conns[key].outbox.queued_frames(), 1);
            assert!(s.conns[key].writer_waker.is_none());
            // The write loop would write it; here it is dropped.
            s.conns[key].outbox.clear();
            // The gap after the last direct write: the shard writes it itself again.
            send(&mut s, b"three", start.wrapping_add(STREAM_GAP_MS));
            assert_eq!(s.stats().direct_writes.get(), 2);
            assert!(s.conns[key].outbox.is_idle());
            s.conns.remove(key);
            drop(stream);
        });
    }
}
