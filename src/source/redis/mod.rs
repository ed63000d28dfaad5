//! The Redis source: pub/sub channels and patterns, keyspace watches with snapshots, publishes.
//!
//! Threads (none of them a shard):
//! - the subscriber thread ([`subscriber`]) owns the pub/sub connection, drains it at once, and
//!   passes each push to the hub as [`Input`], routing it itself under the hub's lock once the
//!   hub runs ([`HubDoor`]); it reconnects and resubscribes by itself, and
//!   checks `notify-keyspace-events` on each connection of a source that serves watches
//!   ([`notify`]);
//! - the command thread ([`commander`]) owns a second connection for `PUBLISH` and key reads;
//! - [`RedisSource`] itself lives on the hub thread: it turns interest edges into shared
//!   subscriptions and runs the keyspace **coalescing rule**: at most one read in flight per
//!   key, and one more read after the last event that arrived during a read. A burst of HSETs
//!   costs a handful of reads, and watchers always end on the latest state.
//!
//! Snapshots: a watch subscribes `__keyspace@<db>__:<key>` first and reads the key only when
//! Redis confirms that subscription, so no change can fall between the snapshot and the stream.
//! After a reconnect the confirmations arrive again, so every watched key is re-read.

pub mod cluster;
pub mod commander;
pub mod conn;
pub mod notify;
mod on_shard;
pub mod resp;
pub mod subscriber;
mod url;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError, bounded};

pub use url::RedisUrl;

use super::{Source, SourceError, SourceEvent};
use crate::metrics::Metrics;
use crate::router::UpstreamMsg;
use crate::router::hub::HubDoor;
use commander::Cmd;
use conn::RedisConn;
use resp::Proto;
use subscriber::{Kind, SubShared};

/// Capacity of the hub → command-thread channel. Past it a publish answers 503 and a key read
/// is skipped (the next event for that key reads again).
pub const COMMAND_QUEUE: usize = 16_384;

/// How to reach and talk to one Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Position among the sources: the index of its metrics and of its hub inputs.
    pub index: usize,
    /// Its name, for logs.
    pub name: String,
    /// Address, credentials, db.
    pub url: RedisUrl,
    /// RESP3 (falls back to RESP2 on servers without HELLO) or RESP2.
    pub proto: Proto,
    /// TCP connect and handshake timeout.
    pub connect_timeout: Duration,
    /// Cap of the reconnect backoff.
    pub backoff_max: Duration,
    /// Set `notify-keyspace-events` after every (re)connect when flags are missing.
    pub set_notify: bool,
    /// The source may serve keyspace watches, so its subscriber checks
    /// `notify-keyspace-events` after every (re)connect ([`notify`]); false for a source that
    /// only serves pub/sub, which needs no server setting.
    pub serves_watches: bool,
    /// On a cluster (`url.cluster`), globs of the sharded channels (`SSUBSCRIBE`/`SPUBLISH`).
    pub sharded_channels: Vec<String>,
}

/// The subscriptions, on one Redis or on a cluster's primaries.
enum Subs {
    One(Arc<SubShared>),
    Cluster(Arc<cluster::subs::ClusterSubs>),
}

impl Subs {
    fn add(&self, kind: Kind, names: &[Bytes]) -> Vec<Bytes> {
        match self {
            Subs::One(s) => s.add(kind, names),
            Subs::Cluster(c) => c.add(kind, names),
        }
    }

    fn remove(&self, kind: Kind, names: &[Bytes]) {
        match self {
            Subs::One(s) => s.remove(kind, names),
            Subs::Cluster(c) => c.remove(kind, names),
        }
    }
}

/// What the Redis threads tell the hub.
#[derive(Debug)]
pub enum Input {
    /// A channel or pattern message (keyspace channels included), as it will be routed.
    Event {
        /// The message.
        event: SourceEvent,
        /// When it was read from the socket, for sampled events (stage timings).
        read_at: Option<std::time::Instant>,
    },
    /// Redis confirmed a SUBSCRIBE (also after every reconnect).
    Subscribed {
        /// The channel.
        channel: Bytes,
    },
    /// A key read finished: the rendered `{"key":…,"type":…,"value":…}`.
    KeyValue {
        /// The key.
        key: Bytes,
        /// The rendered event.
        json: Bytes,
        /// The fields, when the key is a hash.
        hash: Option<super::Hash>,
    },
    /// An index read finished (see [`Source::read_index`]).
    IndexValue {
        /// The set.
        set: Bytes,
        /// `(key, fields)` per member.
        items: Vec<(Bytes, super::Hash)>,
    },
    /// A key read got an error reply; the key is not "reading" any more.
    ReadFailed {
        /// The key.
        key: Bytes,
    },
    /// The subscriber connection was lost.
    Down,
}

/// Coalescing state of one watched key.
#[derive(Debug, Default)]
struct KeyState {
    /// Watched only through a key glob: forgotten once its read completes.
    transient: bool,
    /// A read is in flight.
    reading: bool,
    /// An event arrived during the read: read once more when it completes.
    dirty: bool,
}

/// The Redis source, on the hub thread.
pub struct RedisSource {
    index: usize,
    name: String,
    shared: Subs,
    commands: Sender<Cmd>,
    /// `__keyspace@<db>__:`.
    keyspace_prefix: Bytes,
    watched: HashMap<Bytes, KeyState>,
    /// Watched key globs, as their keyspace patterns (`__keyspace@0__:run:*`).
    watched_patterns: std::collections::HashSet<Bytes>,
    metrics: Arc<Metrics>,
    /// The subscriber thread's way into the hub (a single Redis; a cluster's node threads use
    /// the channel).
    door: Option<HubDoor>,
}

impl Input {
    /// When a sampled event was read from Redis.
    pub fn read_at(&self) -> Option<std::time::Instant> {
        match self {
            Input::Event { read_at, .. } => *read_at,
            _ => None,
        }
    }
}

impl RedisSource {
    /// Starts the subscriber and command threads and returns the hub-side source.
    ///
    /// `on_shard`: the shard whose runtime reads a single Redis's pub/sub connection (decision
    /// 0017); `None` keeps it on the subscriber thread. A cluster's nodes are read on their
    /// own threads either way.
    pub fn start(
        settings: RedisSettings,
        hub: Sender<UpstreamMsg>,
        metrics: Arc<Metrics>,
        on_shard: Option<crate::router::hub::ShardLink>,
    ) -> std::io::Result<RedisSource> {
        let settings = Arc::new(settings);
        let (tx, rx) = bounded(COMMAND_QUEUE);
        // The command connections speak RESP2 whatever `--redis-resp` says: they need no
        // pushes, and RESP3 returns HGETALL as a map, whose field order the decoder does not
        // keep (redis-protocol builds a hash map); the profiles render fields in the order
        // Redis stores them, as the originals did.
        let resp2 = Arc::new(RedisSettings {
            proto: resp::Proto::Resp2,
            ..(*settings).clone()
        });
        let mut door = None;
        let shared = if settings.url.cluster {
            let subs =
                cluster::subs::ClusterSubs::start(settings.clone(), hub.clone(), metrics.clone())?;
            let (s, c, h, m) = (resp2, subs.clone(), hub, metrics.clone());
            std::thread::Builder::new()
                .name("ringcast-redis-cmd".into())
                .spawn(move || cluster::commands::run(s, c, rx, h, m))?;
            Subs::Cluster(subs)
        } else {
            let shared = Arc::new(SubShared::default());
            let opened = HubDoor::new();
            let (s, sh, h, d, m) = (
                settings.clone(),
                shared.clone(),
                hub.clone(),
                opened.clone(),
                metrics.clone(),
            );
            std::thread::Builder::new()
                .name("ringcast-redis-sub".into())
                .spawn(move || subscriber::run(s, sh, h, d, m, on_shard))?;
            door = Some(opened);
            let (s, h, m) = (resp2, hub, metrics.clone());
            std::thread::Builder::new()
                .name("ringcast-redis-cmd".into())
                .spawn(move || commander::run(s, rx, h, m))?;
            Subs::One(shared)
        };
        Ok(RedisSource {
            index: settings.index,
            name: format!("{} ({})", settings.name, settings.url),
            shared,
            commands: tx,
            keyspace_prefix: Bytes::from(format!("__keyspace@{}__:", settings.url.db)),
            watched: HashMap::new(),
            watched_patterns: Default::default(),
            metrics,
            door,
        })
    }

    fn keyspace_channel(&self, key: &[u8]) -> Bytes {
        let mut c = Vec::with_capacity(self.keyspace_prefix.len() + key.len());
        c.extend_from_slice(&self.keyspace_prefix);
        c.extend_from_slice(key);
        Bytes::from(c)
    }

    /// The coalescing rule: read now, or mark the key for one more read after the current one.
    fn request_read(&mut self, key: &Bytes) {
        let Some(state) = self.watched.get_mut(key) else {
            return;
        };
        if state.reading {
            state.dirty = true;
            return;
        }
        match self.commands.try_send(Cmd::Read { key: key.clone() }) {
            Ok(()) => state.reading = true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.redis[self.index].key_reads_skipped.inc();
            }
        }
    }
}

impl Source for RedisSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn subscribe(&mut self, channels: &[Bytes]) {
        self.shared.add(Kind::Channel, channels);
    }

    fn unsubscribe(&mut self, channels: &[Bytes]) {
        self.shared.remove(Kind::Channel, channels);
    }

    fn psubscribe(&mut self, patterns: &[Bytes]) {
        self.shared.add(Kind::Pattern, patterns);
    }

    fn punsubscribe(&mut self, patterns: &[Bytes]) {
        self.shared.remove(Kind::Pattern, patterns);
    }

    fn supports_watch(&self) -> bool {
        true
    }

    fn watch(&mut self, keys: &[Bytes]) {
        let channels: Vec<Bytes> = keys.iter().map(|k| self.keyspace_channel(k)).collect();
        for k in keys {
            self.watched.entry(k.clone()).or_default().transient = false;
        }
        // A keyspace channel someone already subscribed to as a plain channel gets no new
        // confirmation, so read those keys now (the subscription is already in place).
        for channel in self.shared.add(Kind::Channel, &channels) {
            let key = channel.slice(self.keyspace_prefix.len()..);
            self.request_read(&key);
        }
    }

    fn pwatch(&mut self, patterns: &[Bytes]) {
        let channels: Vec<Bytes> = patterns.iter().map(|p| self.keyspace_channel(p)).collect();
        self.watched_patterns.extend(channels.iter().cloned());
        self.shared.add(Kind::Pattern, &channels);
    }

    fn punwatch(&mut self, patterns: &[Bytes]) {
        let channels: Vec<Bytes> = patterns.iter().map(|p| self.keyspace_channel(p)).collect();
        for c in &channels {
            self.watched_patterns.remove(c);
        }
        self.shared.remove(Kind::Pattern, &channels);
    }

    fn unwatch(&mut self, keys: &[Bytes]) {
        let channels: Vec<Bytes> = keys.iter().map(|k| self.keyspace_channel(k)).collect();
        for k in keys {
            self.watched.remove(k);
        }
        self.shared.remove(Kind::Channel, &channels);
    }

    fn publish(&mut self, channel: Bytes, payload: Bytes) -> Result<(), SourceError> {
        if self.metrics.redis[self.index].up.get() == 0 {
            return Err(SourceError::Unavailable("redis is down".into()));
        }
        self.commands
            .try_send(Cmd::Publish { channel, payload })
            .map_err(|_| SourceError::Unavailable("redis command queue is full".into()))
    }

    fn poll_events(&mut self, _out: &mut Vec<SourceEvent>) {}

    fn read_key(&mut self, key: &Bytes) -> bool {
        if self.watched.contains_key(key) {
            self.request_read(key);
            true
        } else {
            // A one-off snapshot for a key nobody watches (snapshot-on-subscribe).
            self.commands
                .try_send(Cmd::Read { key: key.clone() })
                .is_ok()
        }
    }

    fn read_index(&mut self, set: &Bytes, prefix: &Bytes, suffix: &Bytes) -> bool {
        let cmd = Cmd::ReadIndex {
            set: set.clone(),
            prefix: prefix.clone(),
            suffix: suffix.clone(),
        };
        self.commands.try_send(cmd).is_ok()
    }

    fn hub_door(&self) -> Option<&HubDoor> {
        self.door.as_ref()
    }

    fn handle_input(&mut self, input: super::SourceInput, out: &mut Vec<SourceEvent>) {
        let super::SourceInput::Redis { input, .. } = input else {
            return;
        };
        match input {
            Input::Event { event, .. } => {
                match &event {
                    SourceEvent::Message { channel, .. } => {
                        if let Some(key) = channel.strip_prefix(&self.keyspace_prefix[..]) {
                            let key = channel.slice_ref(key);
                            self.request_read(&key);
                        }
                    }
                    SourceEvent::PMessage {
                        pattern, channel, ..
                    } => {
                        if self.watched_patterns.contains(pattern)
                            && let Some(key) = channel.strip_prefix(&self.keyspace_prefix[..])
                        {
                            // A change under a watched key glob: read that key (coalesced like
                            // any watched key; forgotten after the read unless watched by name).
                            let key = channel.slice_ref(key);
                            self.watched.entry(key.clone()).or_insert_with(|| KeyState {
                                transient: true,
                                ..KeyState::default()
                            });
                            self.request_read(&key);
                        }
                    }
                    SourceEvent::Key { .. } | SourceEvent::Index { .. } => {}
                }
                out.push(event);
            }
            Input::Subscribed { channel } => {
                if let Some(key) = channel.strip_prefix(&self.keyspace_prefix[..]) {
                    let key = channel.slice_ref(key);
                    if let Some(state) = self.watched.get_mut(&key) {
                        // A fresh subscription (first watch or reconnect): a read in flight
                        // may predate it, so make sure one more follows.
                        if state.reading {
                            state.dirty = true;
                        }
                        self.request_read(&key);
                    }
                }
            }
            Input::KeyValue { key, json, hash } => {
                if let Some(state) = self.watched.get_mut(&key) {
                    state.reading = false;
                    let again = std::mem::take(&mut state.dirty);
                    out.push(SourceEvent::Key {
                        key: key.clone(),
                        json,
                        hash,
                    });
                    if again {
                        self.request_read(&key);
                    } else if state.transient {
                        self.watched.remove(&key);
                    }
                } else {
                    out.push(SourceEvent::Key { key, json, hash });
                }
            }
            Input::IndexValue { set, items } => out.push(SourceEvent::Index {
                set,
                items: Arc::new(items),
            }),
            Input::ReadFailed { key } => {
                if let Some(state) = self.watched.get_mut(&key) {
                    state.reading = false;
                    if std::mem::take(&mut state.dirty) {
                        self.request_read(&key);
                    } else if state.transient {
                        self.watched.remove(&key);
                    }
                }
            }
            Input::Down => {}
        }
    }
}

/// Connects and hands back the connection; on failure logs the cause (auth, refused, bad RESP),
/// sleeps the next backoff delay and returns `None` so the caller loops. `role` names the
/// connection in the log line.
pub(crate) fn connect_or_wait(
    settings: &RedisSettings,
    backoff: &mut Backoff,
    role: &str,
) -> Option<RedisConn> {
    match RedisConn::connect(&settings.url, settings.proto, settings.connect_timeout) {
        Ok(conn) => Some(conn),
        Err(e) => {
            let delay = backoff.next_delay();
            tracing::warn!(redis = %settings.url, error = %e, retry_in = ?delay, "redis {role} connection failed");
            std::thread::sleep(delay);
            None
        }
    }
}

/// Capped exponential backoff with ±25 % jitter.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    /// First delay 100 ms, doubling up to `max`.
    pub fn new(max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            next: Duration::from_millis(100).min(max),
            max,
            seed,
        }
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.next = Duration::from_millis(100).min(self.max);
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter only, not cryptography.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.75 + (self.seed % 1000) as f64 / 2000.0;
        let delay = self.next.mul_f64(jitter).min(self.max);
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::new(Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(125));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[9] >= Duration::from_millis(1500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
