//! The driver thread of the stream source: owns every consumer and every connection's write
//! side, handles the shards' [`ReplayCmd`]s and the connection threads' frames, and delivers
//! transformed chunks to the shards' inboxes with the flow control described in [`super`].
//!
//! Invariants:
//! - one live consumer per stream (`by_stream`) and per target (`by_target`);
//! - a subscription id is reused only after RabbitMQ confirmed its `Unsubscribe` (or the
//!   connection dropped): a late `Deliver` for an old id can never reach a new consumer;
//! - a consumer's events reach its shard in order; a full inbox keeps them queued on the
//!   consumer and they are retried every [`RETRY_INTERVAL`] (counted), never dropped;
//! - every socket write happens here, so frames never interleave;
//! - with a lease ([`crate::source::replay_lease`]), a chunk's frames wait in the consumer's
//!   `held` until a lease check passes; one check per consumer is in flight at a time and
//!   covers every chunk held when it was asked, so each chunk is checked after it arrived and
//!   before it is forwarded (cost: one Redis round trip per chunk, pipelined with the other
//!   consumers' checks on the lease thread; the driver never waits for it).
//!
//! Thread: the `rabbit-stream` driver thread. This file is long because it is one state
//! machine (commands, frames, deliveries, timers) over the same maps; the pure parts live in
//! `consumer.rs`, `transform.rs`, `chunk.rs` and `codec.rs`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use super::codec::{ClientFrame, ServerFrame, code, key};
use super::conn::{self, ConnEvent, ConnMsg};
use super::consumer::{Consumer, Phase};
use super::transform::{DropReason, Transformed};
use super::{
    EVENT_QUEUE, MAX_CHUNK_CREDIT, MAX_CONNECTIONS, MAX_SUBSCRIPTIONS_PER_CONN,
    RabbitStreamSettings, amqp, chunk, transform,
};
use crate::metrics::{Metrics, RabbitStreamStats};
use crate::router::ShardMsg;
use crate::router::hub::ShardLink;
use crate::source::replay::{ReplayCmd, ReplayEnd, ReplayEvent, ReplayTarget};
use crate::source::replay_lease::{Lease, LeaseCmd, LeaseReply};

/// How often events refused by a full shard inbox are retried.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(2);

/// Most commands or frames handled in a row before timers run.
const BATCH: usize = 256;

/// Longest sleep when nothing is due.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Starts the driver thread.
pub fn spawn(
    settings: Arc<RabbitStreamSettings>,
    links: Vec<ShardLink>,
    metrics: Arc<Metrics>,
    commands: Receiver<ReplayCmd>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (events_tx, events_rx) = crossbeam_channel::bounded(EVENT_QUEUE);
    let lease = match settings.lease.clone() {
        Some(l) => Some(Lease::start(l, metrics.clone())?),
        None => None,
    };
    let mut driver = Driver {
        lease,
        settings,
        links,
        metrics,
        events_tx,
        conns: Vec::new(),
        consumers: HashMap::new(),
        by_target: HashMap::new(),
        by_stream: HashMap::new(),
        blocked: HashSet::new(),
        next_id: 0,
        out: Vec::with_capacity(256),
        stats_at: Instant::now(),
        stats_count: 0,
    };
    // The first connection starts at once, so a misconfiguration shows in the log early.
    driver.add_conn()?;
    std::thread::Builder::new()
        .name("rabbit-stream".into())
        .spawn(move || driver.run(&commands, &events_rx))
}

/// A request waiting for its response, by correlation id.
#[derive(Debug, Clone, Copy)]
enum Request {
    Metadata(u64),
    Subscribe(u64),
    Unsubscribe(u8),
}

/// A subscription id's state on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    Used(u64),
    /// `Unsubscribe` sent, not confirmed: not reusable yet.
    Closing,
}

/// The driver's side of one pooled connection.
struct Conn {
    /// The socket's write side, while the connection is up.
    writer: Option<TcpStream>,
    /// Counted in the `up` gauge (between `Up` and `Down`).
    up: bool,
    /// Was up before (the next `Up` is a reconnect).
    was_up: bool,
    /// Negotiated heartbeat interval.
    heartbeat: Option<Duration>,
    /// When we last wrote (heartbeats are sent when we were quiet for half the interval).
    last_write: Instant,
    next_corr: u32,
    /// Requests waiting for a response.
    requests: HashMap<u32, Request>,
    /// Subscription ids, 0..=255.
    slots: Vec<Slot>,
    /// Consumers assigned to this connection and not closed.
    assigned: usize,
    /// Dropped to stop the connection thread.
    _stop: Sender<()>,
}

struct Driver {
    /// The cross-instance lease, when a Redis source is configured.
    lease: Option<Lease>,
    settings: Arc<RabbitStreamSettings>,
    links: Vec<ShardLink>,
    metrics: Arc<Metrics>,
    events_tx: Sender<ConnMsg>,
    conns: Vec<Conn>,
    consumers: HashMap<u64, Consumer>,
    by_target: HashMap<ReplayTarget, u64>,
    by_stream: HashMap<String, u64>,
    /// Consumers with events a full inbox refused.
    blocked: HashSet<u64>,
    next_id: u64,
    /// Encode scratch.
    out: Vec<u8>,
    stats_at: Instant,
    stats_count: u64,
}

impl Driver {
    fn stats(&self) -> &RabbitStreamStats {
        &self.metrics.rabbit_stream
    }

    fn run(mut self, commands: &Receiver<ReplayCmd>, events: &Receiver<ConnMsg>) {
        let verdicts = self
            .lease
            .as_ref()
            .map_or_else(crossbeam_channel::never, |l| l.replies.clone());
        'outer: loop {
            let timeout = self.next_timeout(Instant::now());
            crossbeam_channel::select! {
                recv(commands) -> c => match c {
                    Ok(c) => self.handle_cmd(c),
                    Err(_) => break 'outer,
                },
                recv(events) -> e => if let Ok(e) = e { self.handle_event(e) },
                recv(verdicts) -> v => if let Ok(v) = v { self.on_verdict(v) },
                default(timeout) => {}
            }
            for _ in 0..BATCH {
                match verdicts.try_recv() {
                    Ok(v) => self.on_verdict(v),
                    Err(_) => break,
                }
            }
            for _ in 0..BATCH {
                match commands.try_recv() {
                    Ok(c) => self.handle_cmd(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'outer,
                }
            }
            for _ in 0..BATCH {
                match events.try_recv() {
                    Ok(e) => self.handle_event(e),
                    Err(_) => break,
                }
            }
            self.tick(Instant::now());
        }
        self.shutdown();
    }

    /// How long the loop may wait for input.
    fn next_timeout(&self, now: Instant) -> Duration {
        if !self.blocked.is_empty() {
            return RETRY_INTERVAL;
        }
        self.conns
            .iter()
            .filter(|c| c.writer.is_some())
            .filter_map(|c| {
                c.heartbeat
                    .map(|h| (c.last_write + h / 2).saturating_duration_since(now))
            })
            .min()
            .unwrap_or(IDLE_WAKE)
            .min(IDLE_WAKE)
    }

    /// Timers: retry refused deliveries, send heartbeats.
    fn tick(&mut self, now: Instant) {
        let blocked: Vec<u64> = self.blocked.iter().copied().collect();
        for id in blocked {
            self.flush(id);
            self.grant(id);
        }
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.writer.is_some() && c.heartbeat.is_some_and(|h| now >= c.last_write + h / 2) {
                self.send(i, ClientFrame::Heartbeat);
            }
        }
    }

    fn shutdown(&mut self) {
        for i in 0..self.conns.len() {
            let corr = self.corr(i);
            self.send(
                i,
                ClientFrame::Close {
                    corr,
                    code: code::OK,
                    reason: "ringcast stopping",
                },
            );
            if let Some(w) = self.conns[i].writer.take() {
                let _ = w.shutdown(Shutdown::Both);
            }
        }
        tracing::info!("rabbit stream source stopped");
    }

    // --- connections --------------------------------------------------------------------

    fn add_conn(&mut self) -> std::io::Result<usize> {
        let index = self.conns.len();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        conn::spawn(
            index,
            self.settings.clone(),
            self.events_tx.clone(),
            stop_rx,
        )?;
        self.conns.push(Conn {
            writer: None,
            up: false,
            was_up: false,
            heartbeat: None,
            last_write: Instant::now(),
            next_corr: 0,
            requests: HashMap::new(),
            slots: vec![Slot::Free; 256],
            assigned: 0,
            _stop: stop_tx,
        });
        Ok(index)
    }

    /// A connection with room for one more consumer, adding one to the pool if needed.
    fn assign_conn(&mut self) -> Option<usize> {
        if let Some(i) = self
            .conns
            .iter()
            .position(|c| c.assigned < MAX_SUBSCRIPTIONS_PER_CONN)
        {
            return Some(i);
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            return None;
        }
        match self.add_conn() {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::warn!(error = %e, "rabbit stream: cannot start a connection thread");
                None
            }
        }
    }

    fn corr(&mut self, conn: usize) -> u32 {
        let c = &mut self.conns[conn];
        c.next_corr = c.next_corr.wrapping_add(1);
        c.next_corr
    }

    /// Writes a frame; false when the connection is down. A failed write shuts the socket, so
    /// the connection thread sees it and reports `Down`.
    fn send(&mut self, conn: usize, frame: ClientFrame<'_>) -> bool {
        let c = &mut self.conns[conn];
        let Some(w) = c.writer.as_mut() else {
            return false;
        };
        self.out.clear();
        if let Err(e) = frame.encode(&mut self.out) {
            tracing::warn!(error = %e, "rabbit stream: frame not encodable");
            return false;
        }
        match w.write_all(&self.out) {
            Ok(()) => {
                c.last_write = Instant::now();
                true
            }
            Err(e) => {
                tracing::warn!(conn, error = %e, "rabbit stream: write failed");
                if let Some(w) = c.writer.take() {
                    let _ = w.shutdown(Shutdown::Both);
                }
                false
            }
        }
    }

    fn handle_event(&mut self, msg: ConnMsg) {
        let i = msg.conn;
        match msg.event {
            ConnEvent::Up { writer, heartbeat } => {
                let c = &mut self.conns[i];
                c.writer = Some(writer);
                c.heartbeat = heartbeat;
                c.last_write = Instant::now();
                c.up = true;
                if std::mem::replace(&mut c.was_up, true) {
                    self.metrics.rabbit_stream.reconnects.inc();
                }
                self.stats().connections_up.inc();
                self.kick(i);
            }
            ConnEvent::Down { reason } => {
                tracing::debug!(
                    conn = i,
                    reason,
                    "rabbit stream: connection down; consumers wait"
                );
                self.conn_down(i);
            }
            ConnEvent::Frame(f) => self.handle_frame(i, f),
        }
    }

    fn conn_down(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if std::mem::replace(&mut c.up, false) {
            self.metrics.rabbit_stream.connections_up.dec();
        }
        c.writer = None;
        c.requests.clear();
        c.slots.fill(Slot::Free);
        for con in self.consumers.values_mut().filter(|c| c.conn == i) {
            if con.phase != Phase::Closed {
                con.phase = Phase::Waiting;
            }
            con.credit = 0;
        }
    }

    /// Starts every waiting consumer of connection `i` that can start.
    fn kick(&mut self, i: usize) {
        if self.conns[i].writer.is_none() {
            return;
        }
        let waiting: Vec<u64> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.conn == i && c.phase == Phase::Waiting)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.start(id);
        }
    }

    /// Asks whether the stream exists, or subscribes when that is known.
    fn start(&mut self, id: u64) {
        let Some(c) = self.consumers.get(&id) else {
            return;
        };
        let (conn, checked, stream) = (c.conn, c.checked, c.stream.clone());
        if checked {
            return self.subscribe(id);
        }
        let corr = self.corr(conn);
        if self.send(
            conn,
            ClientFrame::Metadata {
                corr,
                streams: &[&stream],
            },
        ) {
            self.conns[conn]
                .requests
                .insert(corr, Request::Metadata(id));
            if let Some(c) = self.consumers.get_mut(&id) {
                c.phase = Phase::Checking;
            }
        }
    }

    fn subscribe(&mut self, id: u64) {
        let Some(c) = self.consumers.get_mut(&id) else {
            return;
        };
        c.checked = true;
        c.phase = Phase::Waiting;
        let conn = c.conn;
        let Some(sub) = self.conns[conn].slots.iter().position(|s| *s == Slot::Free) else {
            return; // retried when an Unsubscribe confirms
        };
        let Ok(sub) = u8::try_from(sub) else { return };
        let credit = c.credit_to_grant(self.settings.max_in_flight_frames);
        let (stream, offset) = (c.stream.clone(), c.offset_spec());
        let corr = self.corr(conn);
        let frame = ClientFrame::Subscribe {
            corr,
            sub,
            stream: &stream,
            offset,
            credit,
        };
        if self.send(conn, frame) {
            let cn = &mut self.conns[conn];
            cn.slots[usize::from(sub)] = Slot::Used(id);
            cn.requests.insert(corr, Request::Subscribe(id));
            if let Some(c) = self.consumers.get_mut(&id) {
                c.phase = Phase::Subscribing(sub);
                c.credit = credit;
            }
            tracing::debug!(stream, sub, ?offset, "rabbit stream: subscribing");
        }
    }

    fn unsubscribe(&mut self, conn: usize, sub: u8) {
        let corr = self.corr(conn);
        if self.send(conn, ClientFrame::Unsubscribe { corr, sub }) {
            let c = &mut self.conns[conn];
            c.slots[usize::from(sub)] = Slot::Closing;
            c.requests.insert(corr, Request::Unsubscribe(sub));
        } else {
            self.conns[conn].slots[usize::from(sub)] = Slot::Free;
        }
    }

    // --- frames from RabbitMQ ------------------------------------------------------------

    fn handle_frame(&mut self, i: usize, f: ServerFrame) {
        match f {
            ServerFrame::Deliver { sub, chunk } => {
                self.stats().chunks.inc();
                if let Slot::Used(id) = self.conns[i].slots[usize::from(sub)] {
                    self.on_chunk(id, &chunk);
                }
            }
            ServerFrame::Response { key, corr, code } => {
                match self.conns[i].requests.remove(&corr) {
                    Some(Request::Subscribe(id)) if key == key::SUBSCRIBE => {
                        self.on_subscribed(id, code)
                    }
                    Some(Request::Unsubscribe(sub)) => {
                        self.conns[i].slots[usize::from(sub)] = Slot::Free;
                        self.kick(i);
                    }
                    _ => {}
                }
            }
            ServerFrame::Metadata { corr, streams } => {
                if let Some(Request::Metadata(id)) = self.conns[i].requests.remove(&corr) {
                    self.on_metadata(id, &streams);
                }
            }
            ServerFrame::MetadataUpdate { code, stream } => {
                tracing::info!(stream, code, "rabbit stream: stream deleted or unavailable");
                let gone: Vec<u64> = self
                    .consumers
                    .iter()
                    .filter(|(_, c)| c.conn == i && c.stream == stream && c.sub().is_some())
                    .map(|(id, _)| *id)
                    .collect();
                for id in gone {
                    // RabbitMQ already dropped the subscription: free the id, no Unsubscribe.
                    if let Some(sub) = self.consumers.get(&id).and_then(Consumer::sub) {
                        self.conns[i].slots[usize::from(sub)] = Slot::Free;
                    }
                    if let Some(c) = self.consumers.get_mut(&id) {
                        c.phase = Phase::Waiting;
                    }
                    self.end(id, ReplayEnd::Deleted);
                }
            }
            ServerFrame::CreditError { code, sub } => {
                tracing::debug!(conn = i, code, sub, "rabbit stream: credit refused");
            }
            ServerFrame::Close { corr, code, reason } => {
                tracing::warn!(
                    conn = i,
                    code,
                    reason,
                    "rabbit stream: RabbitMQ closes the connection"
                );
                self.send(
                    i,
                    ClientFrame::CloseResponse {
                        corr,
                        code: code::OK,
                    },
                );
                if let Some(w) = self.conns[i].writer.take() {
                    let _ = w.shutdown(Shutdown::Both);
                }
            }
            ServerFrame::Heartbeat => {
                self.send(i, ClientFrame::Heartbeat);
            }
            ServerFrame::Tune { .. } | ServerFrame::SaslMechanisms { .. } => {}
            ServerFrame::Other { key } => {
                tracing::debug!(conn = i, key, "rabbit stream: frame ignored");
            }
        }
    }

    fn on_metadata(&mut self, id: u64, streams: &[(String, u16)]) {
        let Some(c) = self.consumers.get(&id) else {
            return;
        };
        if c.phase != Phase::Checking {
            return;
        }
        let found = streams
            .iter()
            .find(|(s, _)| *s == c.stream)
            .map(|(_, code)| *code);
        match found.unwrap_or(code::STREAM_DOES_NOT_EXIST) {
            code::OK => {
                self.acquire(id);
                self.subscribe(id);
            }
            code::STREAM_DOES_NOT_EXIST => self.end(id, ReplayEnd::NotFound),
            other => {
                tracing::warn!(
                    stream = c.stream,
                    code = other,
                    "rabbit stream: metadata refused"
                );
                self.end(id, ReplayEnd::Failed);
            }
        }
    }

    fn on_subscribed(&mut self, id: u64, code: u16) {
        let Some(c) = self.consumers.get_mut(&id) else {
            return;
        };
        let Phase::Subscribing(sub) = c.phase else {
            return;
        };
        if code == code::OK {
            c.phase = Phase::Live(sub);
            c.live_since_ms.get_or_insert_with(crate::profile::now_ms);
            self.grant(id);
            return;
        }
        self.conns[c.conn].slots[usize::from(sub)] = Slot::Free;
        c.phase = Phase::Waiting;
        let reason = match (code, c.live_since_ms) {
            (code::STREAM_DOES_NOT_EXIST, None) => ReplayEnd::NotFound,
            (code::STREAM_DOES_NOT_EXIST, Some(_)) => ReplayEnd::Deleted,
            _ => {
                tracing::warn!(stream = c.stream, code, "rabbit stream: subscribe refused");
                ReplayEnd::Failed
            }
        };
        self.end(id, reason);
    }

    /// Transforms one delivered chunk into frames for the consumer's shard.
    fn on_chunk(&mut self, id: u64, bytes: &Bytes) {
        let Some(c) = self.consumers.get_mut(&id) else {
            return;
        };
        c.credit = c.credit.saturating_sub(1);
        let stats = &self.metrics.rabbit_stream;
        let parsed = match chunk::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(stream = c.stream, error = %e, "rabbit stream: unreadable chunk; consumer failed");
                stats.dropped.inc();
                return self.end(id, ReplayEnd::Failed);
            }
        };
        let ts = parsed.header.timestamp;
        let mut frames = Vec::new();
        let mut poison = false;
        for entry in &parsed.entries {
            match *entry {
                chunk::Entry::Record { offset, message } => {
                    if !c.take_offset(offset) {
                        continue;
                    }
                    match transform_record(message, offset, ts, &c.stream, stats) {
                        Some(Transformed::Frame(f)) => frames.push(f),
                        Some(Transformed::Poison) => {
                            poison = true;
                            break;
                        }
                        _ => {}
                    }
                }
                chunk::Entry::Skipped {
                    first_offset,
                    records,
                    compression,
                } => {
                    let end = first_offset.saturating_add(u64::from(records));
                    if c.next_offset.is_some_and(|n| end <= n) {
                        continue;
                    }
                    c.next_offset = Some(end);
                    stats.dropped.add(u64::from(records));
                    tracing::warn!(
                        stream = c.stream,
                        first_offset,
                        records,
                        compression,
                        "rabbit stream: compressed sub-batch skipped (not supported)"
                    );
                }
            }
        }
        if let Some(e) = &parsed.error
            && !poison
        {
            tracing::warn!(stream = c.stream, error = %e, "rabbit stream: chunk cut short; its remaining records are skipped");
            stats.dropped.inc();
            let end = parsed.header.end_offset();
            c.next_offset = Some(c.next_offset.map_or(end, |n| n.max(end)));
        }
        if !frames.is_empty() {
            let n = u64::try_from(frames.len()).unwrap_or(u64::MAX);
            stats.messages.add(n);
            stats.bytes.add(
                frames
                    .iter()
                    .map(|f| u64::try_from(f.len()).unwrap_or(0))
                    .sum(),
            );
            let event = ReplayEvent::Frames(frames);
            if c.lease.is_some() {
                c.held.push_back(event);
            } else {
                c.pending.push_back(event);
            }
            self.count_stats(n);
        }
        let held = self.consumers.get(&id).is_some_and(|c| !c.held.is_empty());
        if poison && held {
            // The frames before POISON still need their check; the End follows them.
            self.close(id);
            if let Some(c) = self.consumers.get_mut(&id) {
                c.held.push_back(ReplayEvent::End(ReplayEnd::Deleted));
            }
        } else if poison {
            return self.end(id, ReplayEnd::Deleted);
        }
        self.check(id);
        self.flush(id);
        self.grant(id);
    }

    // --- the lease -----------------------------------------------------------------------

    /// Takes the stream's lease for the consumer (its stream exists): `SET key token`.
    fn acquire(&mut self, id: u64) {
        let (Some(lease), Some(c)) = (self.lease.as_mut(), self.consumers.get_mut(&id)) else {
            return;
        };
        if c.lease.is_some() {
            return;
        }
        let token = lease.token();
        let cmd = LeaseCmd::Acquire {
            stream: c.stream.clone(),
            token: token.clone(),
        };
        // A lost SET leaves the consumer unchecked (fail open), never knocked out by mistake.
        if lease.tell(cmd) {
            c.lease = Some(token);
        }
    }

    /// Asks for a check of the consumer's held chunks unless one is in flight; when the
    /// lease queue is full the chunks go unchecked (fail open, counted).
    fn check(&mut self, id: u64) {
        let Some(c) = self.consumers.get_mut(&id) else {
            return;
        };
        if c.held.is_empty() || c.checking.is_some() {
            return;
        }
        let (Some(lease), Some(token)) = (self.lease.as_ref(), c.lease.clone()) else {
            c.pending.extend(c.held.drain(..));
            return;
        };
        let cmd = LeaseCmd::Check {
            consumer: id,
            stream: c.stream.clone(),
            token,
        };
        if lease.tell(cmd) {
            c.checking = Some(c.held.len());
        } else {
            c.pending.extend(c.held.drain(..));
        }
    }

    /// A check's verdict: forward the chunks it covered, or end the consumer without them.
    fn on_verdict(&mut self, v: LeaseReply) {
        let Some(c) = self.consumers.get_mut(&v.consumer) else {
            return;
        };
        let Some(n) = c.checking.take() else { return };
        let id = v.consumer;
        match v.verdict.end() {
            None => {
                let n = n.min(c.held.len());
                c.pending.extend(c.held.drain(..n));
                self.check(id);
                self.flush(id);
                self.grant(id);
            }
            Some(reason) => {
                tracing::debug!(
                    stream = c.stream,
                    ?reason,
                    "rabbit stream: lease lost to another consumer or deleted"
                );
                // Another consumer holds it, or nobody: nothing to release.
                c.lease = None;
                self.end(id, reason);
            }
        }
    }

    /// Logs the stats line every `stats_interval` messages (the original's
    /// `ESS_MESSAGE_STATS_INTERVAL`).
    fn count_stats(&mut self, n: u64) {
        let every = self.settings.stats_interval;
        if every == 0 {
            return;
        }
        let before = self.stats_count;
        self.stats_count += n;
        if before / every != self.stats_count / every {
            let now = Instant::now();
            let secs = now.duration_since(self.stats_at).as_secs_f64();
            let total = self.metrics.rabbit_stream.messages.get();
            let rate = if secs > 0.0 {
                (self.stats_count - before) as f64 / secs
            } else {
                0.0
            };
            tracing::info!(
                messages = total,
                rate_per_s = format!("{rate:.1}"),
                "rabbit stream stats"
            );
            self.stats_at = now;
        }
    }

    // --- delivery to shards --------------------------------------------------------------

    /// Sends the consumer's queued events to its shard until the inbox is full.
    fn flush(&mut self, id: u64) {
        let Some(c) = self.consumers.get_mut(&id) else {
            self.blocked.remove(&id);
            return;
        };
        let Some(link) = self.links.get(usize::from(c.target.shard.0)) else {
            c.pending.clear();
            return;
        };
        let mut sent = false;
        let mut gone = false;
        while let Some(event) = c.pending.pop_front() {
            let frames = match &event {
                ReplayEvent::Frames(f) => u64::try_from(f.len()).unwrap_or(u64::MAX),
                ReplayEvent::End(_) => 0,
            };
            let msg = ShardMsg::Replay {
                conn: c.target.conn,
                event,
            };
            match link.tx.try_send(msg) {
                Ok(()) => {
                    sent = true;
                    c.in_flight_frames = c.in_flight_frames.saturating_add(frames);
                }
                Err(TrySendError::Full(msg)) => {
                    if let ShardMsg::Replay { event, .. } = msg {
                        c.pending.push_front(event);
                    }
                    self.metrics.rabbit_stream.inbox_full_retries.inc();
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    c.pending.clear();
                    gone = true;
                }
            }
        }
        if sent {
            link.wake.wake();
        }
        if !c.pending.is_empty() {
            self.blocked.insert(id);
            return;
        }
        self.blocked.remove(&id);
        if gone || (c.phase == Phase::Closed && c.held.is_empty()) {
            self.drop_consumer(id);
        }
    }

    /// Grants RabbitMQ credit for the consumer if its shard keeps up.
    fn grant(&mut self, id: u64) {
        let Some(c) = self.consumers.get_mut(&id) else {
            return;
        };
        let Phase::Live(sub) = c.phase else { return };
        let n = c.credit_to_grant(self.settings.max_in_flight_frames);
        if n == 0 {
            return;
        }
        let conn = c.conn;
        if self.send(conn, ClientFrame::Credit { sub, credit: n })
            && let Some(c) = self.consumers.get_mut(&id)
        {
            c.credit = c.credit.saturating_add(n).min(MAX_CHUNK_CREDIT);
        }
    }

    // --- commands from shards ------------------------------------------------------------

    fn handle_cmd(&mut self, cmd: ReplayCmd) {
        match cmd {
            ReplayCmd::Subscribe {
                target,
                stream,
                start,
            } => self.new_consumer(target, stream, start),
            ReplayCmd::Credit { target, frames } => {
                if let Some(&id) = self.by_target.get(&target) {
                    if let Some(c) = self.consumers.get_mut(&id) {
                        c.in_flight_frames = c.in_flight_frames.saturating_sub(u64::from(frames));
                    }
                    self.grant(id);
                }
            }
            ReplayCmd::Unsubscribe { target } => {
                if let Some(&id) = self.by_target.get(&target) {
                    self.close(id);
                    self.drop_consumer(id);
                }
            }
            ReplayCmd::Revoke { stream } => {
                // `DEL` first: a consumer of the stream in another instance ends on its next
                // chunk.
                if let Some(lease) = &self.lease {
                    lease.tell(LeaseCmd::Revoke {
                        stream: stream.clone(),
                    });
                }
                if let Some(&id) = self.by_stream.get(&stream) {
                    self.end(id, ReplayEnd::Deleted);
                }
            }
        }
    }

    fn new_consumer(
        &mut self,
        target: ReplayTarget,
        stream: String,
        start: crate::source::replay::StartAt,
    ) {
        if let Some(&old) = self.by_target.get(&target) {
            self.close(old);
            self.drop_consumer(old);
        }
        if let Some(&old) = self.by_stream.get(&stream) {
            self.end(old, ReplayEnd::Replaced);
        }
        let id = self.next_id;
        self.next_id += 1;
        let conn = self.assign_conn();
        let mut c = Consumer::new(target, stream.clone(), start, conn.unwrap_or(0));
        self.by_target.insert(target, id);
        let Some(conn) = conn else {
            tracing::warn!(
                stream,
                max = MAX_CONNECTIONS * MAX_SUBSCRIPTIONS_PER_CONN,
                "rabbit stream: consumer cap reached"
            );
            c.phase = Phase::Closed;
            c.pending.push_back(ReplayEvent::End(ReplayEnd::Failed));
            self.consumers.insert(id, c);
            return self.flush(id);
        };
        self.conns[conn].assigned += 1;
        self.stats().consumers.inc();
        self.by_stream.insert(stream, id);
        self.consumers.insert(id, c);
        if self.conns[conn].writer.is_some() {
            self.start(id);
        }
    }

    /// Stops the consumer upstream and takes it out of the indexes; its queued events stay.
    fn close(&mut self, id: u64) {
        let Some(c) = self.consumers.get_mut(&id) else {
            return;
        };
        let sub = c.sub();
        let conn = c.conn;
        let was_open = c.phase != Phase::Closed;
        c.phase = Phase::Closed;
        if self.by_stream.get(&c.stream) == Some(&id) {
            self.by_stream.remove(&c.stream);
        }
        if self.by_target.get(&c.target) == Some(&id) {
            self.by_target.remove(&c.target);
        }
        if was_open {
            self.conns[conn].assigned = self.conns[conn].assigned.saturating_sub(1);
            self.metrics.rabbit_stream.consumers.dec();
        }
        if let Some(sub) = sub {
            self.unsubscribe(conn, sub);
        }
    }

    /// Ends the consumer: closes it and queues `End(reason)` after its frames; frames still
    /// waiting for a lease check are not forwarded.
    fn end(&mut self, id: u64, reason: ReplayEnd) {
        self.close(id);
        if let Some(c) = self.consumers.get_mut(&id) {
            c.held.clear();
            tracing::debug!(stream = c.stream, ?reason, "rabbit stream: consumer ended");
            c.pending.push_back(ReplayEvent::End(reason));
        }
        self.flush(id);
    }

    /// Forgets the consumer and releases its lease (after any check of its held chunks, which
    /// still needed the token).
    fn drop_consumer(&mut self, id: u64) {
        self.blocked.remove(&id);
        if let Some(mut c) = self.consumers.remove(&id) {
            if let (Some(token), Some(lease)) = (c.lease.take(), &self.lease) {
                lease.tell(LeaseCmd::Release {
                    stream: c.stream.clone(),
                    token,
                });
            }
            if self.by_target.get(&c.target) == Some(&id) {
                self.by_target.remove(&c.target);
            }
            if self.by_stream.get(&c.stream) == Some(&id) {
                self.by_stream.remove(&c.stream);
            }
        }
    }
}

/// The body of one record through the transform; drops are counted (and logged unless
/// empty). `None` when the message itself is unreadable.
fn transform_record(
    message: &[u8],
    offset: u64,
    ts: i64,
    stream: &str,
    stats: &RabbitStreamStats,
) -> Option<Transformed> {
    let body = match amqp::body(message) {
        Ok(b) => b,
        Err(e) => {
            stats.dropped.inc();
            tracing::warn!(stream, offset, error = %e, "rabbit stream: message dropped, unreadable AMQP 1.0");
            return None;
        }
    };
    let t = transform::transform(&body, offset, ts);
    if let Transformed::Dropped(reason) = &t {
        stats.dropped.inc();
        match reason {
            DropReason::Empty => {}
            DropReason::InvalidUtf8 => {
                tracing::warn!(
                    stream,
                    offset,
                    "rabbit stream: message dropped, body is not UTF-8"
                );
            }
            DropReason::InvalidJson(e) => {
                tracing::warn!(stream, offset, error = %e, "rabbit stream: message dropped, invalid JSON");
            }
        }
    }
    Some(t)
}
