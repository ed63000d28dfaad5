//! The hub: the upstream side of the router, on its own OS thread.
//!
//! It owns the [`Source`] and, per channel and pattern, which shards want it, under which
//! [`LocalTopicId`] and in which [`Format`]s. It turns interest edges into batched
//! (un)subscribe calls on the source (one subscription per topic for the whole process), and
//! turns each source event into frames, **encoded once per format in the whole process**, sent
//! only to the shards that have subscribers.
//!
//! A source whose own thread reads the upstream (Redis pub/sub) routes its events itself,
//! through a [`HubDoor`], under the lock that holds this state once [`Hub::run`] starts: the
//! hub thread is not woken for each of them (decision 0013).
//!
//! It never waits on a shard: deliveries use `try_send`, and when a shard's inbox is full the
//! event is dropped for that shard and counted in `ringcast_shard_queue_drops_total{shard="i"}` (the same
//! at-most-once contract as Redis pub/sub). Blocking on its own inbox is fine: it is not a shard.
//!
//! A watched key's value is not sent again in a format whose frame is byte-identical to the one
//! the key's watchers were last sent (a coalesced re-read after the last change, a write that
//! does not change the value, a re-read after a Redis reconnect, a hash change the checklist
//! does not show). The comparison reuses the frames `key_cache` already holds for late watchers,
//! so it costs no memory; it is skipped after a frame of the previous value was dropped on a
//! full shard inbox, and never applies to key globs, whose watchers may not have the previous
//! value. Suppressed frames are counted in `ringcast_key_frames_suppressed_total`.
//!
//! The file is past the 300-line soft ceiling: topics, the key cache, waiting snapshots and
//! BESS reads are one state machine over the same maps, and its unit tests sit at the bottom.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{
    ConnRef, Format, FormatSet, Frames, Interest, LocalTopicId, ShardId, ShardMsg, SourceId,
    TopicKind, UpstreamMsg,
};
use crate::metrics::Metrics;
use crate::protocol::{event_len_hint, render_event};
use crate::rt::WakeHandle;
use crate::source::{Hash, Source, SourceEvent, SourceInput};
use crate::ws::frame::{self, FrameBuilder, OpCode};

/// Most upstream messages handled before the hub flushes batched subscriptions and wakes shards.
const BATCH: usize = 512;

/// The hub's link to one shard.
#[derive(Debug, Clone)]
pub struct ShardLink {
    /// The shard's bounded inbox.
    pub tx: Sender<ShardMsg>,
    /// Wakes the shard after messages were queued.
    pub wake: WakeHandle,
}

/// A source thread's way into the hub's state, so that its events are routed on that thread
/// instead of waking the hub thread for each one (one thread hand-off fewer per event; see
/// decision 0013). The source creates it before the hub exists; [`Hub::run`] opens it. It holds
/// the hub weakly, so it never keeps the hub alive.
#[derive(Debug, Clone, Default)]
pub struct HubDoor(Arc<OnceLock<Weak<Mutex<Hub>>>>);

impl HubDoor {
    /// A closed door: [`route`](Self::route) refuses until the hub opens it.
    pub fn new() -> Self {
        HubDoor::default()
    }

    fn open(&self, hub: &Arc<Mutex<Hub>>) {
        // Opened once, by the one hub that owns the source.
        let _ = self.0.set(Arc::downgrade(hub));
    }

    /// Routes `inputs` on the calling thread, under the hub's lock, as the hub thread would
    /// (`UpstreamMsg::Source`, in order), then wakes each shard that got something, once.
    /// False, with `inputs` untouched, when the hub is not running: not started yet, gone, or
    /// poisoned by a panic. The caller then hands them to the hub's channel.
    ///
    /// The lock is held for one batch of the hub's own channel at most (`BATCH` messages);
    /// nothing under it blocks on a shard or on this source's thread.
    pub fn route(&self, inputs: &mut Vec<SourceInput>) -> bool {
        let Some(hub) = self.0.get().and_then(Weak::upgrade) else {
            return false;
        };
        let Ok(mut hub) = hub.lock() else {
            return false;
        };
        for input in inputs.drain(..) {
            hub.handle(UpstreamMsg::Source(input));
        }
        hub.wake_shards();
        true
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

/// One shard's interest in a topic.
#[derive(Debug, Clone, Copy)]
struct ShardSub {
    shard: ShardId,
    target: LocalTopicId,
    formats: FormatSet,
}

/// Edge for the source, kept in arrival order so a quick unsubscribe/subscribe stays ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    Subscribe,
    Unsubscribe,
}

/// A topic in the whole process: which source, what kind, which name.
type TopicKey = (SourceId, TopicKind, Bytes);

/// A connection waiting for a one-off key snapshot, and the format it wants.
type Waiter = (ShardId, ConnRef, Format);

/// The last value read of a watched key: the snapshot for late watchers, rendered lazily once
/// per format, and what the key's watchers were last sent, to suppress an identical next frame.
struct CachedKey {
    /// The native rendering, `{"key":…,"type":…,"value":…}`.
    json: Bytes,
    /// A hash's pairs, for the profiles that render hashes their own way.
    hash: Option<Hash>,
    /// The frames rendered so far, at most one per format.
    frames: Frames,
    /// False once a frame of this value (its fan-out or a watcher's cached snapshot) was dropped
    /// on a full shard inbox: some watcher may lack it, so the next value is sent even when
    /// identical.
    complete: bool,
}

/// A BESS re-read of one battery hash, triggered by a channel message (coalesced: one read in
/// flight, one more after the last message that arrived during it).
#[derive(Default)]
struct BessRead {
    dirty: bool,
    topics: Vec<TopicKey>,
}

/// Connections waiting for an index snapshot of one set: those the read in flight will answer,
/// and those that arrived after it started (answered by the next read).
#[derive(Default)]
struct IndexWait {
    reading: bool,
    current: Vec<(ShardId, ConnRef)>,
    next: Vec<(ShardId, ConnRef)>,
}

/// The hub state.
pub struct Hub {
    sources: Vec<Box<dyn Source>>,
    shards: Vec<ShardLink>,
    topics: HashMap<TopicKey, Vec<ShardSub>>,
    edges: Vec<(Edge, TopicKey)>,
    to_wake: Vec<bool>,
    events: Vec<SourceEvent>,
    /// The last value of each watched key.
    key_cache: HashMap<(SourceId, Bytes), CachedKey>,
    /// When the event being routed was read from its source (sampled events only).
    stamp: Option<Instant>,
    /// Publishes seen, for sampling stage timings of embedded-broker events.
    publishes_seen: u64,
    /// Watched key globs, to route key events to pattern watchers.
    key_patterns: Vec<(SourceId, Bytes)>,
    /// One-off snapshot requests waiting for a key read.
    waiting: HashMap<(SourceId, Bytes), Vec<Waiter>>,
    /// BESS battery reads in flight.
    bess: HashMap<(SourceId, Bytes), BessRead>,
    /// BESS snapshot requests per id set.
    index_waits: HashMap<(SourceId, Bytes), IndexWait>,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// A hub over `sources` (indexed by [`SourceId`]), delivering to `shards`.
    pub fn new(
        sources: Vec<Box<dyn Source>>,
        shards: Vec<ShardLink>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let n = shards.len();
        Self {
            sources,
            shards,
            topics: HashMap::new(),
            edges: Vec::new(),
            to_wake: vec![false; n],
            events: Vec::new(),
            key_cache: HashMap::new(),
            key_patterns: Vec::new(),
            stamp: None,
            publishes_seen: 0,
            waiting: HashMap::new(),
            bess: HashMap::new(),
            index_waits: HashMap::new(),
            metrics,
        }
    }

    /// Runs until [`UpstreamMsg::Shutdown`] or until every sender is gone.
    ///
    /// The state sits behind a mutex from here on, so that a source thread holding a
    /// [`HubDoor`] can route its events itself instead of waking this thread for each one. This
    /// thread takes the lock for one batch of its own channel at a time.
    pub fn run(self, rx: Receiver<UpstreamMsg>) {
        for s in &self.sources {
            tracing::info!(source = s.name(), "hub started");
        }
        let hub = Arc::new(Mutex::new(self));
        if let Ok(h) = hub.lock() {
            for door in h.sources.iter().filter_map(|s| s.hub_door()) {
                door.open(&hub);
            }
        }
        // `recv` spins and calls `sched_yield` up to four times before it parks. A `Select`
        // (which parks at once) was tried: with the Redis hop through this thread it cost more
        // CPU per event, not less (docs/BENCHMARKS.md, issue 15).
        while let Ok(first) = rx.recv() {
            // Poisoned: a source thread panicked while routing. Stop, so that main reports
            // the hub as gone and shuts the gateway down, as for a panic on this thread.
            let Ok(mut h) = hub.lock() else {
                tracing::error!("hub state poisoned by a panic on a source thread");
                return;
            };
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(msg) = next.take() {
                if !h.handle(msg) {
                    h.finish_batch();
                    return;
                }
                handled += 1;
                if handled < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            h.finish_batch();
        }
    }

    fn source(&mut self, id: SourceId) -> Option<&mut Box<dyn Source>> {
        self.sources.get_mut(usize::from(id))
    }

    /// Handles one message; false means stop.
    pub fn handle(&mut self, msg: UpstreamMsg) -> bool {
        match msg {
            UpstreamMsg::Interest(i) => self.handle_interest(i),
            UpstreamMsg::Publish {
                source,
                channel,
                payload,
            } => {
                // Subscriptions queued before this publish must reach the source first.
                self.flush_edges();
                // Embedded-broker events start here: sample their stage timings from now.
                self.publishes_seen += 1;
                if self
                    .publishes_seen
                    .is_multiple_of(crate::metrics::STAGE_SAMPLE_EVERY)
                {
                    self.stamp = Some(Instant::now());
                }
                if let Some(src) = self.source(source) {
                    match src.publish(channel, payload) {
                        Ok(()) => self.metrics.hub.publishes.inc(),
                        Err(e) => tracing::warn!(error = %e, "publish failed"),
                    }
                }
                self.poll_source();
                self.stamp = None;
            }
            UpstreamMsg::Source(input) => {
                // Pattern subscriptions queued before this input must reach the source first
                // (the radar source matches patterns itself).
                self.flush_edges();
                let mut events = std::mem::take(&mut self.events);
                let source = input.source();
                self.stamp = input.read_at();
                if let Some(s) = self.sources.get_mut(source) {
                    s.handle_input(input, &mut events);
                }
                for ev in events.drain(..) {
                    self.route(source as SourceId, ev);
                }
                self.events = events;
                self.stamp = None;
            }
            UpstreamMsg::Snapshot {
                shard,
                conn,
                source,
                format,
                key,
                watcher,
            } => {
                self.flush_edges();
                if format == Format::Bess {
                    self.handle_index_snapshot(shard, conn, source, key);
                } else {
                    self.handle_snapshot(shard, conn, source, format, key, watcher);
                }
            }
            UpstreamMsg::Shutdown => return false,
        }
        true
    }

    /// Flushes batched (un)subscriptions, routes pending events, and wakes shards.
    pub fn finish_batch(&mut self) {
        self.flush_edges();
        self.poll_source();
        self.wake_shards();
    }

    /// Wakes each shard something was queued for since the last wake-up, once.
    fn wake_shards(&mut self) {
        for (i, wake) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.shards[i].wake.wake();
            }
        }
    }

    fn handle_snapshot(
        &mut self,
        shard: ShardId,
        conn: ConnRef,
        source: SourceId,
        format: Format,
        key: Bytes,
        watcher: bool,
    ) {
        let cached = self
            .key_cache
            .get_mut(&(source, key.clone()))
            .map(|c| cached_frame(c, &key, format, &self.metrics));
        if let Some(frame) = cached {
            let watch = if watcher {
                let topic = (source, TopicKind::Key, key.clone());
                let target = self
                    .topics
                    .get(&topic)
                    .and_then(|subs| subs.iter().find(|s| s.shard == shard))
                    .map(|s| s.target);
                if target.is_none() {
                    // The watch is already gone on that shard.
                    return;
                }
                target
            } else {
                None
            };
            let msg = ShardMsg::DeliverTo {
                conn,
                frame: frame.unwrap_or_default(),
                releases_held: !watcher,
                watch,
            };
            if !self.send(usize::from(shard.0), msg)
                && let Some(c) = self.key_cache.get_mut(&(source, key))
            {
                // That watcher lacks the value: do not suppress it if it comes again.
                c.complete = false;
            }
        } else if !watcher {
            // Every request triggers a read: one dropped on a full command queue must not leave
            // later requests waiting forever. Concurrent requests all get the first result.
            self.waiting
                .entry((source, key.clone()))
                .or_default()
                .push((shard, conn, format));
            if let Some(s) = self.source(source) {
                s.read_key(&key);
            }
        }
    }

    /// A BESS client's snapshot: every battery named in the id set `set`.
    fn handle_index_snapshot(
        &mut self,
        shard: ShardId,
        conn: ConnRef,
        source: SourceId,
        set: Bytes,
    ) {
        let wait = self.index_waits.entry((source, set.clone())).or_default();
        if wait.reading {
            wait.next.push((shard, conn));
        } else {
            wait.current.push((shard, conn));
            self.start_index_read(source, set);
        }
    }

    fn start_index_read(&mut self, source: SourceId, set: Bytes) {
        let (prefix, suffix) = crate::profile::BESS_KEY_AFFIXES;
        let queued = self.source(source).is_some_and(|s| {
            s.read_index(
                &set,
                &Bytes::from_static(prefix),
                &Bytes::from_static(suffix),
            )
        });
        match self.index_waits.get_mut(&(source, set)) {
            Some(wait) if queued => wait.reading = true,
            Some(wait) => {
                // The command queue is full: answer with an empty snapshot rather than hold
                // these connections' updates; the next update of each battery reaches them.
                tracing::warn!("BESS snapshot read could not be queued; sending an empty one");
                let waiters = std::mem::take(&mut wait.current);
                let frame = frame::encode(OpCode::Text, b"{}");
                for (shard, conn) in waiters {
                    self.deliver_to(shard, conn, frame.clone());
                }
            }
            None => {}
        }
    }

    fn deliver_to(&mut self, shard: ShardId, conn: ConnRef, frame: Bytes) {
        let msg = ShardMsg::DeliverTo {
            conn,
            frame,
            releases_held: true,
            watch: None,
        };
        self.send(usize::from(shard.0), msg);
    }

    /// Queues `msg` for `shard`; false when its full inbox dropped it.
    fn send(&mut self, shard: usize, msg: ShardMsg) -> bool {
        send(
            &self.shards[shard],
            &mut self.to_wake[shard],
            &self.metrics.hub.inbox_drops[shard],
            msg,
        )
    }

    fn handle_interest(&mut self, i: Interest) {
        let key = (i.source, i.kind, i.name);
        let subs = self.topics.entry(key.clone()).or_default();
        let was_empty = subs.is_empty();
        let pos = subs.iter().position(|s| s.shard == i.shard);
        match (pos, i.formats.is_empty()) {
            (Some(p), true) => {
                subs.swap_remove(p);
            }
            (Some(p), false) => {
                subs[p] = ShardSub {
                    shard: i.shard,
                    target: i.target,
                    formats: i.formats,
                };
            }
            (None, false) => subs.push(ShardSub {
                shard: i.shard,
                target: i.target,
                formats: i.formats,
            }),
            (None, true) => {}
        }
        let now_empty = subs.is_empty();
        if now_empty {
            self.topics.remove(&key);
        }
        if was_empty && !now_empty {
            self.metrics.hub.topics.inc();
            self.edges.push((Edge::Subscribe, key));
        } else if !was_empty && now_empty {
            self.metrics.hub.topics.dec();
            self.edges.push((Edge::Unsubscribe, key));
        }
    }

    /// Sends edges to the sources, grouping consecutive edges of the same kind into one call.
    fn flush_edges(&mut self) {
        let edges = std::mem::take(&mut self.edges);
        for run in edges.chunk_by(|a, b| a.0 == b.0 && a.1.0 == b.1.0 && a.1.1 == b.1.1) {
            let (edge, (source, kind, _)) = &run[0];
            let (edge, source, kind) = (*edge, *source, *kind);
            let names: Vec<Bytes> = run.iter().map(|e| e.1.2.clone()).collect();
            match (edge, kind) {
                (Edge::Subscribe, TopicKind::KeyPattern) => self
                    .key_patterns
                    .extend(names.iter().map(|n| (source, n.clone()))),
                (Edge::Unsubscribe, TopicKind::KeyPattern) => self
                    .key_patterns
                    .retain(|(s, p)| *s != source || !names.contains(p)),
                (Edge::Unsubscribe, TopicKind::Key) => {
                    for k in &names {
                        self.key_cache.remove(&(source, k.clone()));
                    }
                }
                _ => {}
            }
            let Some(src) = self.sources.get_mut(usize::from(source)) else {
                continue;
            };
            match (edge, kind) {
                (Edge::Subscribe, TopicKind::Channel) => src.subscribe(&names),
                (Edge::Unsubscribe, TopicKind::Channel) => src.unsubscribe(&names),
                (Edge::Subscribe, TopicKind::Pattern) => src.psubscribe(&names),
                (Edge::Unsubscribe, TopicKind::Pattern) => src.punsubscribe(&names),
                (Edge::Subscribe, TopicKind::Key) => src.watch(&names),
                (Edge::Unsubscribe, TopicKind::Key) => src.unwatch(&names),
                (Edge::Subscribe, TopicKind::KeyPattern) => src.pwatch(&names),
                (Edge::Unsubscribe, TopicKind::KeyPattern) => src.punwatch(&names),
            }
        }
        self.edges = edges;
        self.edges.clear();
    }

    fn poll_source(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        for i in 0..self.sources.len() {
            self.sources[i].poll_events(&mut events);
            for ev in events.drain(..) {
                self.route(i as SourceId, ev);
            }
        }
        self.events = events;
    }

    /// Encodes one event once per wanted format and hands it to each interested shard.
    pub fn route(&mut self, source: SourceId, ev: SourceEvent) {
        self.metrics.hub.events.inc();
        if let Some(stamp) = self.stamp {
            self.metrics.hub.stage_hub.observe(stamp.elapsed());
        }
        let (key, channel, pattern, payload) = match ev {
            SourceEvent::Message { channel, payload } => (
                (source, TopicKind::Channel, channel.clone()),
                channel,
                None,
                payload,
            ),
            SourceEvent::PMessage {
                pattern,
                channel,
                payload,
            } => (
                (source, TopicKind::Pattern, pattern.clone()),
                channel,
                Some(pattern),
                payload,
            ),
            SourceEvent::Key { key, json, hash } => return self.route_key(source, key, json, hash),
            SourceEvent::Index { set, items } => return self.route_index(source, set, &items),
        };
        let Some(wanted) = self.wanted(&key) else {
            return;
        };
        let mut frames = Frames::new();
        for format in wanted.iter() {
            let frame = match format {
                Format::Json => {
                    let mut b = FrameBuilder::with_capacity(event_len_hint(
                        &channel,
                        pattern.as_deref(),
                        &payload,
                    ));
                    render_event(b.payload(), &channel, pattern.as_deref(), &payload);
                    b.finish(OpCode::Text)
                }
                Format::Raw => frame::encode_auto(&payload),
                Format::Status => {
                    let mut b = FrameBuilder::with_capacity(payload.len() + 40);
                    crate::profile::status::render(b.payload(), &payload);
                    b.finish(OpCode::Text)
                }
                Format::Bess => {
                    // The payload is ignored: re-read the battery the channel names.
                    self.request_bess_read(source, channel.clone(), key.clone());
                    continue;
                }
                Format::Preflight(_) => continue,
                Format::SocketIo => {
                    let mut b = FrameBuilder::with_capacity(payload.len() + channel.len() + 16);
                    crate::transport::engineio::packet::write_event(
                        b.payload(),
                        &channel,
                        &payload,
                    );
                    b.finish(OpCode::Text)
                }
            };
            self.metrics.hub.frames_encoded.inc();
            frames.push(format, frame);
        }
        if !frames.is_empty() {
            self.fan_out(&key, &frames);
        }
    }

    fn request_bess_read(&mut self, source: SourceId, battery: Bytes, topic: TopicKey) {
        let k = (source, battery.clone());
        if let Some(read) = self.bess.get_mut(&k) {
            read.dirty = true;
            if !read.topics.contains(&topic) {
                read.topics.push(topic);
            }
            return;
        }
        if self.source(source).is_some_and(|s| s.read_key(&battery)) {
            self.bess.insert(
                k,
                BessRead {
                    dirty: false,
                    topics: vec![topic],
                },
            );
        } else {
            self.metrics.hub.bess_reads_skipped.inc();
        }
    }

    /// A key's new value: rendered once per wanted format, cached as the snapshot for later
    /// watchers, sent to watchers, to one-off snapshot requests and to BESS readers.
    fn route_key(&mut self, source: SourceId, key: Bytes, json: Bytes, hash: Option<Hash>) {
        let mut cached = CachedKey {
            json,
            hash,
            frames: Frames::new(),
            complete: true,
        };
        let topic = (source, TopicKind::Key, key.clone());
        // What the key's watchers were last sent; none for a new watch (see `flush_edges`).
        let previous = self.key_cache.remove(&(source, key.clone()));
        self.fan_out_changed(&topic, &mut cached, previous.as_ref(), &key);
        let patterns: Vec<Bytes> = self
            .key_patterns
            .iter()
            .filter(|(s, p)| *s == source && crate::protocol::glob_match(p, &key))
            .map(|(_, p)| p.clone())
            .collect();
        for pattern in patterns {
            self.fan_out_value(&(source, TopicKind::KeyPattern, pattern), &mut cached, &key);
        }
        for (shard, conn, format) in self
            .waiting
            .remove(&(source, key.clone()))
            .unwrap_or_default()
        {
            let frame = cached_frame(&mut cached, &key, format, &self.metrics);
            self.deliver_to(shard, conn, frame.unwrap_or_default());
        }
        if let Some(read) = self.bess.remove(&(source, key.clone())) {
            // BESS frames carry the time of sending: never cached, rendered once per read.
            let mut frames = Frames::new();
            if let Some(frame) = render(&cached, &key, Format::Bess, &self.metrics) {
                frames.push(Format::Bess, frame);
            }
            for topic in &read.topics {
                self.fan_out(topic, &frames);
            }
            if read.dirty {
                let topics = read.topics;
                if self.source(source).is_some_and(|s| s.read_key(&key)) {
                    self.bess.insert(
                        (source, key.clone()),
                        BessRead {
                            dirty: false,
                            topics,
                        },
                    );
                }
            }
        }
        if self.topics.contains_key(&topic) {
            self.key_cache.insert((source, key), cached);
        }
    }

    /// A BESS snapshot: answers the connections the read was for, then starts the next read
    /// for those that arrived meanwhile.
    fn route_index(&mut self, source: SourceId, set: Bytes, items: &[(Bytes, Hash)]) {
        let Some(wait) = self.index_waits.get_mut(&(source, set.clone())) else {
            return;
        };
        let waiters = std::mem::take(&mut wait.current);
        wait.reading = false;
        let batteries: Vec<(Bytes, Vec<(Bytes, Bytes)>)> =
            items.iter().map(|(k, h)| (k.clone(), h.to_vec())).collect();
        let mut b = FrameBuilder::with_capacity(256);
        let skipped = crate::profile::bess::render_snapshot(b.payload(), &batteries);
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "BESS snapshot: fields that are not integers left out"
            );
        }
        let frame = b.finish(OpCode::Text);
        self.metrics.hub.frames_encoded.inc();
        for (shard, conn) in waiters {
            self.deliver_to(shard, conn, frame.clone());
        }
        if let Some(wait) = self.index_waits.get_mut(&(source, set.clone())) {
            if wait.next.is_empty() {
                self.index_waits.remove(&(source, set));
            } else {
                wait.current = std::mem::take(&mut wait.next);
                self.start_index_read(source, set);
            }
        }
    }

    /// The formats some subscriber of `topic` wants; `None` without subscribers.
    fn wanted(&self, topic: &TopicKey) -> Option<FormatSet> {
        let subs = self.topics.get(topic)?;
        Some(
            subs.iter()
                .fold(FormatSet::EMPTY, |a, s| a.union(s.formats)),
        )
    }

    /// Renders a key value in every format its watch `topic` wants (memoised in `cached`) and
    /// fans out the frames that differ from `previous`, the value the watchers were last sent.
    /// A frame byte-identical to the previous one in its format is counted, not sent; nothing
    /// is suppressed when `previous` is missing or lost a frame on a full inbox.
    fn fan_out_changed(
        &mut self,
        topic: &TopicKey,
        cached: &mut CachedKey,
        previous: Option<&CachedKey>,
        key: &Bytes,
    ) {
        let Some(wanted) = self.wanted(topic) else {
            return;
        };
        let previous = previous.filter(|p| p.complete);
        let mut changed = Frames::new();
        for format in wanted.iter() {
            let Some(frame) = cached_frame(cached, key, format, &self.metrics) else {
                continue;
            };
            let last = previous.and_then(|p| p.frames.get(format));
            if last.is_some_and(|last| same_frame(last, &frame)) {
                self.metrics.hub.key_frames_suppressed.inc();
            } else {
                changed.push(format, frame);
            }
        }
        if !changed.is_empty() {
            cached.complete = self.fan_out(topic, &changed);
        }
    }

    /// Renders a key value in every format `topic` wants (memoised in `cached`) and fans it out.
    fn fan_out_value(&mut self, topic: &TopicKey, cached: &mut CachedKey, key: &Bytes) {
        let Some(wanted) = self.wanted(topic) else {
            return;
        };
        for format in wanted.iter() {
            cached_frame(cached, key, format, &self.metrics);
        }
        let frames = cached.frames.clone();
        self.fan_out(topic, &frames);
    }

    /// Sends `frames` to every shard with subscribers of `topic`; false when a full inbox
    /// dropped them for some shard.
    fn fan_out(&mut self, topic: &TopicKey, frames: &Frames) -> bool {
        let Some(subs) = self.topics.get(topic) else {
            return true;
        };
        let mut all_queued = true;
        for sub in subs {
            let subset = frames.subset(sub.formats);
            if subset.is_empty() {
                continue;
            }
            let msg = ShardMsg::Deliver {
                target: sub.target,
                stamp: self.stamp,
                frames: subset,
            };
            let shard = usize::from(sub.shard.0);
            all_queued &= send(
                &self.shards[shard],
                &mut self.to_wake[shard],
                &self.metrics.hub.inbox_drops[shard],
                msg,
            );
        }
        all_queued
    }
}

/// Whether two frames carry the same bytes (the same `Bytes` is equal without a look; lengths
/// differ for most changes, so most comparisons stop there).
fn same_frame(a: &Bytes, b: &Bytes) -> bool {
    a.len() == b.len() && (a.as_ptr() == b.as_ptr() || a[..] == b[..])
}

/// The frame of a key value in `format`, rendered at most once per cached value (BESS frames,
/// which carry the send time, are rendered fresh). `None` for formats that have no key form.
fn cached_frame(
    cached: &mut CachedKey,
    key: &Bytes,
    format: Format,
    metrics: &Metrics,
) -> Option<Bytes> {
    if let Some(f) = cached.frames.get(format) {
        return Some(f.clone());
    }
    let frame = render(cached, key, format, metrics)?;
    if format != Format::Bess {
        cached.frames.push(format, frame.clone());
    }
    Some(frame)
}

fn render(cached: &CachedKey, key: &Bytes, format: Format, metrics: &Metrics) -> Option<Bytes> {
    let fields: &[(Bytes, Bytes)] = cached.hash.as_deref().unwrap_or(&[]);
    let frame = match format {
        Format::Json | Format::Raw => frame::encode(OpCode::Text, &cached.json),
        Format::Preflight(opts) => {
            let mut b = FrameBuilder::with_capacity(512);
            crate::profile::preflight::render(b.payload(), fields, opts);
            b.finish(OpCode::Text)
        }
        Format::Bess => {
            cached.hash.as_ref()?;
            let mut b = FrameBuilder::with_capacity(256);
            let skipped = crate::profile::bess::render_update(
                b.payload(),
                key,
                fields,
                crate::profile::now_ms(),
            );
            if skipped > 0 {
                tracing::warn!(key = %String::from_utf8_lossy(key), skipped, "BESS: fields that are not integers left out");
            }
            b.finish(OpCode::Text)
        }
        Format::Status | Format::SocketIo => return None,
    };
    metrics.hub.frames_encoded.inc();
    Some(frame)
}

/// Queues `msg` for a shard without ever waiting: a full inbox drops it and counts the drop.
/// False only for that drop (a shard that is gone has no watchers left to miss anything).
fn send(
    link: &ShardLink,
    to_wake: &mut bool,
    drops: &crate::metrics::Counter,
    msg: ShardMsg,
) -> bool {
    match link.tx.try_send(msg) {
        Ok(()) => {
            *to_wake = true;
            true
        }
        Err(TrySendError::Full(_)) => {
            drops.inc();
            *to_wake = true;
            false
        }
        Err(TrySendError::Disconnected(_)) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{Interest, LocalTopicId};
    use crate::source::memory::MemorySource;

    /// A hub over one memory source and one shard whose inbox holds `inbox` messages, and that
    /// inbox's receiving end.
    fn hub(inbox: usize) -> (Hub, Receiver<ShardMsg>) {
        hub_over(vec![Box::new(MemorySource::new())], inbox)
    }

    /// A hub over `sources` with one shard whose inbox holds `inbox` messages.
    fn hub_over(sources: Vec<Box<dyn Source>>, inbox: usize) -> (Hub, Receiver<ShardMsg>) {
        let (tx, rx) = crossbeam_channel::bounded(inbox);
        let (wake, _unused_receiver) = crate::rt::wake_pair().expect("eventfd");
        let metrics = Arc::new(Metrics::new(1));
        (Hub::new(sources, vec![ShardLink { tx, wake }], metrics), rx)
    }

    /// Shard 0 watches `name` as `kind` in `formats`, interned to slot `slot`.
    fn watch(hub: &mut Hub, kind: TopicKind, name: &'static [u8], slot: u32, formats: &[Format]) {
        hub.handle(UpstreamMsg::Interest(Interest {
            shard: ShardId(0),
            source: 0,
            kind,
            name: Bytes::from_static(name),
            target: LocalTopicId {
                slot,
                generation: 0,
            },
            formats: formats.iter().fold(FormatSet::EMPTY, |s, &f| s.with(f)),
        }));
        hub.finish_batch();
    }

    /// A read of the key `run` that found the string `value`.
    fn read(hub: &mut Hub, value: &str) {
        let json = format!(r#"{{"key":"run","type":"string","value":"{value}"}}"#);
        let ev = SourceEvent::Key {
            key: Bytes::from_static(b"run"),
            json: Bytes::from(json),
            hash: None,
        };
        hub.route(0, ev);
    }

    /// Per delivery queued since the last call: its topic's slot and its formats.
    fn delivered(rx: &Receiver<ShardMsg>) -> Vec<(u32, Vec<Format>)> {
        rx.try_iter()
            .map(|msg| match msg {
                ShardMsg::Deliver { target, frames, .. } => {
                    (target.slot, frames.iter().map(|(f, _)| f).collect())
                }
                ShardMsg::DeliverTo { .. }
                | ShardMsg::Replay { .. }
                | ShardMsg::Adopt { .. }
                | ShardMsg::Read(_) => (u32::MAX, Vec::new()),
            })
            .collect()
    }

    fn suppressed(hub: &Hub) -> u64 {
        hub.metrics.hub.key_frames_suppressed.get()
    }

    const PREFLIGHT: Format = Format::Preflight(crate::profile::preflight::PreflightOptions {
        extended: false,
        locks: crate::profile::preflight::LockStyle::Both,
    });

    #[test]
    fn an_identical_frame_is_not_sent_again_format_by_format() {
        let (mut hub, rx) = hub(16);
        watch(
            &mut hub,
            TopicKind::Key,
            b"run",
            1,
            &[Format::Json, PREFLIGHT],
        );
        read(&mut hub, "a");
        assert_eq!(delivered(&rx), [(1, vec![Format::Json, PREFLIGHT])]);
        read(&mut hub, "a");
        assert_eq!(delivered(&rx), []);
        assert_eq!(suppressed(&hub), 2, "one per format");
        // A string is no hash: the checklist stays all false while the JSON changes.
        read(&mut hub, "b");
        assert_eq!(delivered(&rx), [(1, vec![Format::Json])]);
        assert_eq!(suppressed(&hub), 3);
    }

    #[test]
    fn a_new_watch_and_a_key_glob_always_get_the_value() {
        let (mut hub, rx) = hub(16);
        watch(&mut hub, TopicKind::Key, b"run", 1, &[Format::Json]);
        watch(&mut hub, TopicKind::KeyPattern, b"r*", 2, &[Format::Json]);
        read(&mut hub, "a");
        assert_eq!(delivered(&rx).len(), 2);
        // Glob watchers may have joined since: they always get the value.
        read(&mut hub, "a");
        assert_eq!(delivered(&rx), [(2, vec![Format::Json])]);
        assert_eq!(suppressed(&hub), 1);
        // The last watcher leaves and a new one comes: the value read for it is sent.
        watch(&mut hub, TopicKind::Key, b"run", 1, &[]);
        watch(&mut hub, TopicKind::Key, b"run", 3, &[Format::Json]);
        read(&mut hub, "a");
        let got = delivered(&rx);
        assert!(got.contains(&(3, vec![Format::Json])), "{got:?}");
        assert_eq!(suppressed(&hub), 1);
    }

    #[test]
    fn a_value_dropped_on_a_full_inbox_is_sent_again() {
        let (mut hub, rx) = hub(1);
        watch(&mut hub, TopicKind::Key, b"run", 1, &[Format::Json]);
        read(&mut hub, "a");
        read(&mut hub, "b"); // The inbox still holds "a": dropped.
        assert_eq!(hub.metrics.hub.inbox_drops[0].get(), 1);
        assert_eq!(delivered(&rx).len(), 1);
        read(&mut hub, "b");
        assert_eq!(delivered(&rx).len(), 1, "the dropped value, sent again");
        read(&mut hub, "b");
        assert_eq!(delivered(&rx), []);
        assert_eq!(suppressed(&hub), 1);
    }

    #[test]
    fn a_cached_value_a_watcher_missed_is_sent_again() {
        let (mut hub, rx) = hub(1);
        watch(&mut hub, TopicKind::Key, b"run", 1, &[Format::Json]);
        read(&mut hub, "a");
        // A second watcher on the shard asks for the cached value while the inbox is full.
        hub.handle(UpstreamMsg::Snapshot {
            shard: ShardId(0),
            conn: ConnRef { key: 7, id: 7 },
            source: 0,
            format: Format::Json,
            key: Bytes::from_static(b"run"),
            watcher: true,
        });
        assert_eq!(hub.metrics.hub.inbox_drops[0].get(), 1);
        assert_eq!(delivered(&rx).len(), 1);
        read(&mut hub, "a");
        assert_eq!(
            delivered(&rx).len(),
            1,
            "sent again for the watcher that missed it"
        );
        assert_eq!(suppressed(&hub), 0);
    }

    /// A source thread routes through its door only while the hub runs: refused (input kept)
    /// before the hub opens it and after the hub is gone; in between, delivered under the lock.
    #[test]
    fn a_door_routes_only_while_the_hub_lives() {
        let (mut hub, rx) = hub_over(
            vec![Box::new(crate::source::radar::source::RadarSource::new(
                &[],
                None,
            ))],
            16,
        );
        hub.handle(UpstreamMsg::Interest(Interest {
            shard: ShardId(0),
            source: 0,
            kind: TopicKind::Channel,
            name: Bytes::from_static(b"sas"),
            target: LocalTopicId {
                slot: 3,
                generation: 0,
            },
            formats: FormatSet::EMPTY.with(Format::Json),
        }));
        hub.finish_batch();
        let record = || crate::source::SourceInput::Radar {
            source: 0,
            event: SourceEvent::Message {
                channel: Bytes::from_static(b"sas"),
                payload: Bytes::from_static(br#"{"beam":1}"#),
            },
        };
        let door = HubDoor::new();
        let mut inputs = vec![record()];
        assert!(!door.route(&mut inputs), "closed before the hub opens it");
        assert_eq!(inputs.len(), 1, "refused input stays with the caller");
        let hub = Arc::new(Mutex::new(hub));
        door.open(&hub);
        assert!(door.route(&mut inputs));
        assert!(inputs.is_empty());
        assert_eq!(delivered(&rx), [(3, vec![Format::Json])]);
        drop(hub);
        let mut inputs = vec![record()];
        assert!(!door.route(&mut inputs), "the hub is gone");
        assert_eq!(inputs.len(), 1);
    }

    /// A pattern subscription and a radar record in the same batch: the source (which matches
    /// patterns itself) hears of the pattern before the record, so the record is delivered.
    #[test]
    fn a_pattern_queued_in_the_same_batch_reaches_the_source_before_its_input() {
        let (mut hub, rx) = hub_over(
            vec![
                Box::new(MemorySource::new()),
                Box::new(crate::source::radar::source::RadarSource::new(&[], None)),
            ],
            16,
        );
        hub.handle(UpstreamMsg::Interest(Interest {
            shard: ShardId(0),
            source: 1,
            kind: TopicKind::Pattern,
            name: Bytes::from_static(b"*"),
            target: LocalTopicId {
                slot: 7,
                generation: 0,
            },
            formats: FormatSet::EMPTY.with(Format::SocketIo),
        }));
        hub.handle(UpstreamMsg::Source(crate::source::SourceInput::Radar {
            source: 1,
            event: SourceEvent::Message {
                channel: Bytes::from_static(b"sas"),
                payload: Bytes::from_static(br#"{"beam":1}"#),
            },
        }));
        hub.finish_batch();
        assert_eq!(delivered(&rx), [(7, vec![Format::SocketIo])]);
    }
}
