//! The hub: the upstream side of the router, on its own OS thread.
//!
//! It owns the [`Source`] and, per channel and pattern, which shards want it, under which
//! [`LocalTopicId`] and in which [`Format`]s. It turns interest edges into batched
//! (un)subscribe calls on the source (one subscription per topic for the whole process), and
//! turns each source event into frames, **encoded once per format in the whole process**, sent
//! only to the shards that have subscribers.
//!
//! It never waits on a shard: deliveries use `try_send`, and when a shard's inbox is full the
//! event is dropped for that shard and counted in `ringcast_shard_queue_drops_total{shard="i"}` (the same
//! at-most-once contract as Redis pub/sub). Blocking on its own inbox is fine: it is not a shard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{
    ConnRef, Format, FormatSet, Frames, Interest, LocalTopicId, ShardId, ShardMsg, TopicKind,
    UpstreamMsg,
};
use crate::metrics::Metrics;
use crate::protocol::render_event;
use crate::rt::WakeHandle;
use crate::source::{Source, SourceEvent};
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

/// A source and the names it serves.
pub struct RoutedSource {
    /// The source.
    pub source: Box<dyn Source>,
    /// Globs of the channels (and patterns) it serves.
    pub channels: Vec<Bytes>,
    /// Globs of the keys it serves.
    pub keys: Vec<Bytes>,
}

impl RoutedSource {
    /// A source that serves every channel, pattern and key.
    pub fn everything(source: Box<dyn Source>) -> Self {
        let all = vec![Bytes::from_static(b"*")];
        RoutedSource {
            source,
            channels: all.clone(),
            keys: all,
        }
    }
}

/// The hub state.
pub struct Hub {
    sources: Vec<RoutedSource>,
    shards: Vec<ShardLink>,
    topics: HashMap<(TopicKind, Bytes), Vec<ShardSub>>,
    edges: Vec<(Edge, TopicKind, Bytes)>,
    to_wake: Vec<bool>,
    events: Vec<SourceEvent>,
    /// The last rendered frame of each watched key: the snapshot for late watchers.
    key_cache: HashMap<Bytes, Bytes>,
    /// When the event being routed was read from its source (sampled events only).
    stamp: Option<Instant>,
    /// Publishes seen, for sampling stage timings of embedded-broker events.
    publishes_seen: u64,
    /// Watched key globs, to route key events to pattern watchers.
    key_patterns: Vec<Bytes>,
    /// One-off snapshot requests waiting for a key read.
    waiting: HashMap<Bytes, Vec<(ShardId, ConnRef)>>,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// A hub over `source`, delivering to `shards`.
    pub fn new(sources: Vec<RoutedSource>, shards: Vec<ShardLink>, metrics: Arc<Metrics>) -> Self {
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
            metrics,
        }
    }

    /// Runs until [`UpstreamMsg::Shutdown`] or until every sender is gone.
    pub fn run(mut self, rx: Receiver<UpstreamMsg>) {
        for r in &self.sources {
            tracing::info!(source = r.source.name(), "hub started");
        }
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(msg) = next.take() {
                if !self.handle(msg) {
                    self.finish_batch();
                    return;
                }
                handled += 1;
                if handled < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.finish_batch();
        }
    }

    /// The source serving `name`: the first whose globs match, else the last one.
    fn source_for(&self, kind: TopicKind, name: &[u8]) -> usize {
        self.sources
            .iter()
            .position(|r| {
                let globs = if kind.is_key() { &r.keys } else { &r.channels };
                globs.iter().any(|g| crate::protocol::glob_match(g, name))
            })
            .unwrap_or(self.sources.len() - 1)
    }

    /// Handles one message; false means stop.
    pub fn handle(&mut self, msg: UpstreamMsg) -> bool {
        match msg {
            UpstreamMsg::Interest(i) => self.handle_interest(i),
            UpstreamMsg::Publish { channel, payload } => {
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
                let i = self.source_for(TopicKind::Channel, &channel);
                match self.sources[i].source.publish(channel, payload) {
                    Ok(()) => self.metrics.hub.publishes.inc(),
                    Err(e) => tracing::warn!(error = %e, "publish failed"),
                }
                self.poll_source();
                self.stamp = None;
            }
            UpstreamMsg::Source(input) => {
                let mut events = std::mem::take(&mut self.events);
                let crate::source::SourceInput::Redis { source, input: raw } = &input;
                self.stamp = raw.read_at();
                if let Some(r) = self.sources.get_mut(*source) {
                    r.source.handle_input(input, &mut events);
                }
                for ev in events.drain(..) {
                    self.route(ev);
                }
                self.events = events;
                self.stamp = None;
            }
            UpstreamMsg::Snapshot {
                shard,
                conn,
                key,
                watcher,
            } => {
                self.flush_edges();
                self.handle_snapshot(shard, conn, key, watcher);
            }
            UpstreamMsg::Shutdown => return false,
        }
        true
    }

    /// Flushes batched (un)subscriptions, routes pending events, and wakes shards.
    pub fn finish_batch(&mut self) {
        self.flush_edges();
        self.poll_source();
        for (i, wake) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.shards[i].wake.wake();
            }
        }
    }

    fn handle_snapshot(&mut self, shard: ShardId, conn: ConnRef, key: Bytes, watcher: bool) {
        if let Some(frame) = self.key_cache.get(&key) {
            let msg = ShardMsg::DeliverTo {
                conn,
                frame: frame.clone(),
                releases_held: !watcher,
            };
            self.send(usize::from(shard.0), msg);
        } else if !watcher {
            // Every request triggers a read: one dropped on a full command queue must not leave
            // later requests waiting forever. Concurrent requests all get the first result.
            self.waiting
                .entry(key.clone())
                .or_default()
                .push((shard, conn));
            let i = self.source_for(TopicKind::Key, &key);
            self.sources[i].source.read_key(&key);
        }
    }

    fn send(&mut self, shard: usize, msg: ShardMsg) {
        send(
            &self.shards[shard],
            &mut self.to_wake[shard],
            &self.metrics.hub.inbox_drops[shard],
            msg,
        );
    }

    fn handle_interest(&mut self, i: Interest) {
        let key = (i.kind, i.name);
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
            self.edges.push((Edge::Subscribe, key.0, key.1));
        } else if !was_empty && now_empty {
            self.metrics.hub.topics.dec();
            self.edges.push((Edge::Unsubscribe, key.0, key.1));
        }
    }

    /// Sends edges to the source, grouping consecutive edges of the same kind into one call.
    fn flush_edges(&mut self) {
        let edges = std::mem::take(&mut self.edges);
        let routed: Vec<(Edge, TopicKind, usize, Bytes)> = edges
            .iter()
            .map(|(edge, kind, name)| (*edge, *kind, self.source_for(*kind, name), name.clone()))
            .collect();
        for run in routed.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1 && a.2 == b.2) {
            let names: Vec<Bytes> = run.iter().map(|e| e.3.clone()).collect();
            let source = &mut self.sources[run[0].2].source;
            match (run[0].0, run[0].1) {
                (Edge::Subscribe, TopicKind::Channel) => source.subscribe(&names),
                (Edge::Unsubscribe, TopicKind::Channel) => source.unsubscribe(&names),
                (Edge::Subscribe, TopicKind::Pattern) => source.psubscribe(&names),
                (Edge::Unsubscribe, TopicKind::Pattern) => source.punsubscribe(&names),
                (Edge::Subscribe, TopicKind::Key) => source.watch(&names),
                (Edge::Subscribe, TopicKind::KeyPattern) => {
                    self.key_patterns.extend(names.iter().cloned());
                    source.pwatch(&names)
                }
                (Edge::Unsubscribe, TopicKind::KeyPattern) => {
                    self.key_patterns.retain(|p| !names.contains(p));
                    source.punwatch(&names)
                }
                (Edge::Unsubscribe, TopicKind::Key) => {
                    for k in &names {
                        self.key_cache.remove(k);
                    }
                    source.unwatch(&names)
                }
            }
        }
        self.edges = edges;
        self.edges.clear();
    }

    fn poll_source(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        for r in &mut self.sources {
            r.source.poll_events(&mut events);
        }
        for ev in events.drain(..) {
            self.route(ev);
        }
        self.events = events;
    }

    /// Encodes one event once per wanted format and hands it to each interested shard.
    pub fn route(&mut self, ev: SourceEvent) {
        self.metrics.hub.events.inc();
        if let Some(stamp) = self.stamp {
            self.metrics.hub.stage_hub.observe(stamp.elapsed());
        }
        let (key, channel, pattern, payload) = match ev {
            SourceEvent::Message { channel, payload } => (
                (TopicKind::Channel, channel.clone()),
                channel,
                None,
                payload,
            ),
            SourceEvent::PMessage {
                pattern,
                channel,
                payload,
            } => (
                (TopicKind::Pattern, pattern.clone()),
                channel,
                Some(pattern),
                payload,
            ),
            SourceEvent::Key { key, json } => return self.route_key(key, json),
        };
        let Some(subs) = self.topics.get(&key) else {
            return;
        };
        let wanted = subs
            .iter()
            .fold(FormatSet::EMPTY, |acc, s| acc.union(s.formats));
        let json = wanted.contains(Format::Json).then(|| {
            let mut b = FrameBuilder::with_capacity(payload.len() + channel.len() + 32);
            render_event(b.payload(), &channel, pattern.as_deref(), &payload);
            b.finish(OpCode::Text)
        });
        let raw = wanted
            .contains(Format::Raw)
            .then(|| frame::encode_auto(&payload));
        let encoded = u64::from(json.is_some()) + u64::from(raw.is_some());
        self.metrics.hub.frames_encoded.add(encoded);
        let frames = Frames::new(json, raw);
        self.fan_out(&key, &frames);
    }

    /// A key's new value: one frame for every format (the value is JSON already), cached as the
    /// snapshot for later watchers, sent to watchers and to one-off snapshot requests.
    fn route_key(&mut self, key: Bytes, json: Bytes) {
        let frame = frame::encode(OpCode::Text, &json);
        self.metrics.hub.frames_encoded.inc();
        let frames = Frames::new(Some(frame.clone()), Some(frame.clone()));
        let topic = (TopicKind::Key, key.clone());
        if self.topics.contains_key(&topic) {
            self.key_cache.insert(key.clone(), frame.clone());
            self.fan_out(&topic, &frames);
        }
        let patterns: Vec<Bytes> = self
            .key_patterns
            .iter()
            .filter(|p| crate::protocol::glob_match(p, &key))
            .cloned()
            .collect();
        for pattern in patterns {
            self.fan_out(&(TopicKind::KeyPattern, pattern), &frames);
        }
        for (shard, conn) in self.waiting.remove(&key).unwrap_or_default() {
            self.send(
                usize::from(shard.0),
                ShardMsg::DeliverTo {
                    conn,
                    frame: frame.clone(),
                    releases_held: true,
                },
            );
        }
    }

    fn fan_out(&mut self, topic: &(TopicKind, Bytes), frames: &Frames) {
        let Some(subs) = self.topics.get(topic) else {
            return;
        };
        for sub in subs {
            let msg = ShardMsg::Deliver {
                target: sub.target,
                stamp: self.stamp,
                frames: frames.subset(sub.formats),
            };
            let shard = usize::from(sub.shard.0);
            send(
                &self.shards[shard],
                &mut self.to_wake[shard],
                &self.metrics.hub.inbox_drops[shard],
                msg,
            );
        }
    }
}

/// Queues `msg` for a shard without ever waiting: a full inbox drops it and counts the drop.
fn send(link: &ShardLink, to_wake: &mut bool, drops: &crate::metrics::Counter, msg: ShardMsg) {
    match link.tx.try_send(msg) {
        Ok(()) => *to_wake = true,
        Err(TrySendError::Full(_)) => {
            drops.inc();
            *to_wake = true;
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}
