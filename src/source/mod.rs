//! Where events come from, behind one interface.
//!
//! A [`Source`] is a pub/sub broker as the hub sees it: it is told which channels and patterns
//! anyone wants (one call per edge, batched), it publishes, and it yields [`SourceEvent`]s.
//! The embedded broker ([`memory::MemorySource`]) is the default; the Redis source, RabbitMQ
//! streams and the radar feeds plug in here as further implementations.
//!
//! Contract (like Redis pub/sub): at-most-once delivery; events for one channel arrive in publish
//! order; a subscription takes effect for every publish the source handles after the call; a
//! pattern match produces a [`SourceEvent::PMessage`] per matching pattern, separately from the
//! [`SourceEvent::Message`] for a channel subscription.

pub mod memory;
pub mod rabbit_stream;
pub mod radar;
pub mod redis;
pub mod replay;
pub mod replay_lease;

use bytes::Bytes;

/// One event from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// A message on a subscribed channel.
    Message {
        /// The channel.
        channel: Bytes,
        /// The payload bytes.
        payload: Bytes,
    },
    /// A message on a channel that matched a subscribed pattern.
    PMessage {
        /// The pattern that matched.
        pattern: Bytes,
        /// The channel.
        channel: Bytes,
        /// The payload bytes.
        payload: Bytes,
    },
    /// The current value of a watched key, already rendered as
    /// `{"key":…,"type":…,"value":…}` (value `null` once the key is gone).
    Key {
        /// The key.
        key: Bytes,
        /// The rendered event.
        json: Bytes,
        /// The fields of a hash (`None` for other types and missing keys), for the profiles
        /// that render hashes their own way.
        hash: Option<Hash>,
    },
    /// The answer to [`Source::read_index`]: every member of a set, each with its hash.
    Index {
        /// The set that was read.
        set: Bytes,
        /// `(key, fields)` per member, in member order (sorted).
        items: std::sync::Arc<Vec<(Bytes, Hash)>>,
    },
}

/// A hash's `(field, value)` pairs in HGETALL order, shared between formats and events.
pub type Hash = std::sync::Arc<[(Bytes, Bytes)]>;

/// Something a source's own threads hand to the hub, for the source to interpret on the hub
/// thread (see [`Source::handle_input`]).
#[derive(Debug)]
pub enum SourceInput {
    /// From the threads of the Redis source at position `source`.
    Redis {
        /// The source's position.
        source: usize,
        /// What happened.
        input: redis::Input,
    },
    /// From a radar feed thread of the radar source at position `source`: one rendered event,
    /// on channel `<site>` or `<site>/echoes` ([`radar::source`]).
    Radar {
        /// The source's position.
        source: usize,
        /// The event, always a [`SourceEvent::Message`].
        event: SourceEvent,
    },
}

impl SourceInput {
    /// The position of the source whose threads sent it.
    pub fn source(&self) -> usize {
        match self {
            SourceInput::Redis { source, .. } | SourceInput::Radar { source, .. } => *source,
        }
    }

    /// When a sampled event was read from its upstream (stage timings).
    pub fn read_at(&self) -> Option<std::time::Instant> {
        match self {
            SourceInput::Redis { input, .. } => input.read_at(),
            SourceInput::Radar { .. } => None,
        }
    }
}

/// Why a publish failed; the HTTP API answers 503 with this text.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The upstream broker is unreachable right now; retry later.
    #[error("source unavailable: {0}")]
    Unavailable(String),
}

/// A pub/sub source, owned and driven by the hub thread.
/// A source's upstream connection handed to a shard ([`crate::router::ShardMsg::Read`]), so
/// that its events are read and routed on the shard's own runtime and reach the shard's own
/// connections without crossing a thread (decision 0017).
pub trait ShardReader: Send + std::fmt::Debug {
    /// Called once on the shard thread: the task that reads the connection until it ends.
    fn start(
        self: Box<Self>,
        inbox: crate::shard::run::OwnInbox,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;
}

pub trait Source: Send {
    /// A short name for logs and metrics (`memory`, `redis://host:6379/2`).
    fn name(&self) -> &str;
    /// Starts delivering messages on `channels`.
    fn subscribe(&mut self, channels: &[Bytes]);
    /// Stops delivering messages on `channels`.
    fn unsubscribe(&mut self, channels: &[Bytes]);
    /// Starts delivering messages on channels matching `patterns`.
    fn psubscribe(&mut self, patterns: &[Bytes]);
    /// Stops delivering messages for `patterns`.
    fn punsubscribe(&mut self, patterns: &[Bytes]);
    /// Publishes `payload` on `channel`.
    fn publish(&mut self, channel: Bytes, payload: Bytes) -> Result<(), SourceError>;
    /// Moves events that are ready into `out`. Sources that receive on their own thread send
    /// [`crate::router::UpstreamMsg`]s instead and leave this empty.
    fn poll_events(&mut self, out: &mut Vec<SourceEvent>);
    /// True when the source can watch keys (keyspace notifications with snapshots).
    fn supports_watch(&self) -> bool {
        false
    }
    /// Starts watching `keys`: a snapshot of each, then one [`SourceEvent::Key`] per change.
    fn watch(&mut self, _keys: &[Bytes]) {}
    /// Stops watching `keys`.
    fn unwatch(&mut self, _keys: &[Bytes]) {}
    /// Starts watching every key matching each glob in `patterns` (changes only).
    fn pwatch(&mut self, _patterns: &[Bytes]) {}
    /// Stops watching key globs.
    fn punwatch(&mut self, _patterns: &[Bytes]) {}
    /// Reads `key` once and reports it as a [`SourceEvent::Key`] (a snapshot on request).
    /// False when the read could not be queued (no key support, or the queue is full).
    fn read_key(&mut self, _key: &Bytes) -> bool {
        false
    }
    /// Reads the members of the set `set`, then the hash `prefix + member + suffix` of each,
    /// and reports them as one [`SourceEvent::Index`]. False when it could not be queued.
    fn read_index(&mut self, _set: &Bytes, _prefix: &Bytes, _suffix: &Bytes) -> bool {
        false
    }
    /// Interprets input from the source's own threads, appending events to route.
    fn handle_input(&mut self, _input: SourceInput, _out: &mut Vec<SourceEvent>) {}
    /// The door through which the source's own threads route their input themselves, under
    /// the hub's lock, instead of waking the hub thread (opened by the hub when it starts).
    /// `None`: everything comes on the hub's channel, as [`crate::router::UpstreamMsg`]s.
    fn hub_door(&self) -> Option<&crate::router::hub::HubDoor> {
        None
    }
}
