//! Routing between the hub thread and the shards.
//!
//! Ownership: the hub thread owns [`hub::Hub`] (which shards want which topic, and the sources);
//! each shard owns its [`table::TopicTable`] (which local connections want which topic). They
//! talk only through the two message types here, on bounded crossbeam channels:
//!
//! - [`UpstreamMsg`], shard → hub: interest changes (a topic's local subscriber count went
//!   0 → 1, 1 → 0, or its set of wanted [`Format`]s changed) and publishes from the HTTP API.
//! - [`ShardMsg`], hub → shard: one event's frames for one local topic, already encoded.
//!
//! Invariants:
//! - A shard tells the hub the [`LocalTopicId`] it interned a topic to, so a delivery needs no
//!   name lookup on the shard. The id carries a generation: a delivery that raced with an
//!   unsubscribe cannot land on a reused slot.
//! - The hub encodes each event once per wanted format, in the whole process, and sends only to
//!   shards that have subscribers. Shards clone the `Bytes` (a refcount bump) per subscriber.

pub mod hub;
pub mod table;
pub mod topic;

use bytes::Bytes;

pub use topic::{LocalTopicId, ShardId, TopicKind};

/// How a connection wants events rendered. One encoding per format per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Format {
    /// The native JSON envelope `{"channel":…,"data":…}`.
    Json = 0,
    /// The payload bytes verbatim, one frame each.
    Raw = 1,
}

impl Format {
    /// Every format, in bit order.
    pub const ALL: [Format; 2] = [Format::Json, Format::Raw];
}

/// A set of [`Format`]s, as a bitmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FormatSet(u8);

impl FormatSet {
    /// No format: the shard has no subscriber left for the topic.
    pub const EMPTY: FormatSet = FormatSet(0);

    /// Adds `f`.
    pub fn with(self, f: Format) -> FormatSet {
        FormatSet(self.0 | 1 << f as u8)
    }

    /// True when `f` is in the set.
    pub fn contains(self, f: Format) -> bool {
        self.0 & (1 << f as u8) != 0
    }

    /// True when the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The union of two sets.
    pub fn union(self, other: FormatSet) -> FormatSet {
        FormatSet(self.0 | other.0)
    }
}

/// One event's frames, one per format some recipient on the shard wants.
#[derive(Debug, Clone, Default)]
pub struct Frames([Option<Bytes>; 2]);

impl Frames {
    /// Frames built from one optional frame per format.
    pub fn new(json: Option<Bytes>, raw: Option<Bytes>) -> Self {
        Frames([json, raw])
    }

    /// The frame for `f`, if it was encoded.
    pub fn get(&self, f: Format) -> Option<&Bytes> {
        self.0[f as usize].as_ref()
    }

    /// A copy holding only the formats in `set` (refcount clones, no byte copies).
    pub fn subset(&self, set: FormatSet) -> Frames {
        Frames(Format::ALL.map(|f| {
            if set.contains(f) {
                self.0[f as usize].clone()
            } else {
                None
            }
        }))
    }
}

/// A connection on a shard, by slab key and a per-shard unique id, so a message that raced with
/// the connection's close cannot reach a new connection in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// Slab key.
    pub key: usize,
    /// The connection's id, unique on its shard for the process's life.
    pub id: u64,
}

/// Hub → shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// Deliver one frame to one connection (a snapshot it asked for).
    DeliverTo {
        /// The connection.
        conn: ConnRef,
        /// The frame.
        frame: Bytes,
        /// True for a one-off snapshot the connection holds its events for (not for a watcher).
        releases_held: bool,
    },
    /// Deliver `frames` to every local subscriber of `target`.
    Deliver {
        /// The shard-local topic the frames belong to.
        target: LocalTopicId,
        /// The encoded frames.
        frames: Frames,
        /// When the event was read from its source, for sampled events (stage timings).
        stamp: Option<std::time::Instant>,
    },
}

/// A shard's interest in one channel or pattern changed.
#[derive(Debug, Clone)]
pub struct Interest {
    /// The shard whose interest changed.
    pub shard: ShardId,
    /// Channel or pattern.
    pub kind: TopicKind,
    /// The channel name or glob pattern.
    pub name: Bytes,
    /// The id the shard interned it to.
    pub target: LocalTopicId,
    /// The formats its subscribers want; empty means "no subscriber left".
    pub formats: FormatSet,
}

/// Shard → hub.
#[derive(Debug)]
pub enum UpstreamMsg {
    /// A change of interest; never dropped (shards queue it locally while the channel is full).
    Interest(Interest),
    /// Publish `payload` on `channel` through the configured source.
    Publish {
        /// The channel.
        channel: Bytes,
        /// The payload.
        payload: Bytes,
    },
    /// Input from a source's own threads (Redis pushes, key reads, ...).
    Source(crate::source::SourceInput),
    /// A connection wants the current value of `key` once.
    Snapshot {
        /// The connection's shard.
        shard: ShardId,
        /// The connection.
        conn: ConnRef,
        /// The key.
        key: Bytes,
        /// True when the connection also watches the key: if nothing is cached yet, the first
        /// read of the watch reaches it anyway.
        watcher: bool,
    },
    /// Stop the hub thread.
    Shutdown,
}
