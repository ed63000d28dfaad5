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

use crate::profile::preflight::LockStyle;
pub use topic::{LocalTopicId, ShardId, TopicKind};

/// How a connection wants events rendered. The hub renders each event once per format that
/// some subscriber wants, in the whole process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The native JSON envelope `{"channel":…,"data":…}`.
    Json,
    /// The payload bytes verbatim, one frame each.
    Raw,
    /// weppcloud Status: `{"type": "status", "data": …}`.
    Status,
    /// WebsocketServerMS: a channel message triggers a re-read of the battery hash.
    Bess,
    /// weppcloud Preflight: the run hash rendered as a checklist.
    Preflight(crate::profile::preflight::PreflightOptions),
    /// Socket.IO broadcast `42["<channel>",<payload>]` as one WebSocket text frame; a polling
    /// body takes the same bytes past the frame header ([`crate::ws::frame::payload_of`]).
    SocketIo,
}

impl Format {
    /// How many formats there are (the width of a [`FormatSet`]): four, plus one Preflight
    /// format per checklist style (2) and lock style (3), plus Socket.IO.
    pub const COUNT: usize = 11;

    /// The format's bit in a [`FormatSet`].
    pub fn index(self) -> usize {
        match self {
            Format::Json => 0,
            Format::Raw => 1,
            Format::Status => 2,
            Format::Bess => 3,
            Format::Preflight(o) => {
                4 + usize::from(o.extended) * LockStyle::ALL.len() + o.locks.index()
            }
            Format::SocketIo => 10,
        }
    }

    /// The format with bit `i`.
    pub fn from_index(i: usize) -> Option<Format> {
        use crate::profile::preflight::PreflightOptions;
        Some(match i {
            0 => Format::Json,
            1 => Format::Raw,
            2 => Format::Status,
            3 => Format::Bess,
            10 => Format::SocketIo,
            4..10 => {
                let styles = LockStyle::ALL.len();
                Format::Preflight(PreflightOptions {
                    extended: (i - 4) / styles == 1,
                    locks: *LockStyle::ALL.get((i - 4) % styles)?,
                })
            }
            _ => return None,
        })
    }
}

/// A set of [`Format`]s, as a bitmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FormatSet(u16);

// Every format needs a bit of the mask.
const _: () = assert!(Format::COUNT <= u16::BITS as usize);

impl FormatSet {
    /// No format: the shard has no subscriber left for the topic.
    pub const EMPTY: FormatSet = FormatSet(0);

    /// Adds `f`.
    pub fn with(self, f: Format) -> FormatSet {
        FormatSet(self.0 | 1 << f.index())
    }

    /// True when `f` is in the set.
    pub fn contains(self, f: Format) -> bool {
        self.0 & (1 << f.index()) != 0
    }

    /// True when the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The union of two sets.
    pub fn union(self, other: FormatSet) -> FormatSet {
        FormatSet(self.0 | other.0)
    }

    /// The formats in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Format> {
        (0..Format::COUNT)
            .filter(move |i| self.0 & (1 << i) != 0)
            .filter_map(Format::from_index)
    }
}

/// One event's frames, one per format some recipient on the shard wants. Almost every event
/// has one format, kept inline; more spill into a vector.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    first: Option<(Format, Bytes)>,
    rest: Vec<(Format, Bytes)>,
}

impl Frames {
    /// No frame yet.
    pub fn new() -> Self {
        Frames::default()
    }

    /// Adds the frame for `f`.
    pub fn push(&mut self, f: Format, frame: Bytes) {
        if self.first.is_none() {
            self.first = Some((f, frame));
        } else {
            self.rest.push((f, frame));
        }
    }

    /// The frame for `f`, if it was encoded.
    pub fn get(&self, f: Format) -> Option<&Bytes> {
        match &self.first {
            Some((g, b)) if *g == f => Some(b),
            Some(_) => self.rest.iter().find(|(g, _)| *g == f).map(|(_, b)| b),
            None => None,
        }
    }

    /// Every `(format, frame)`.
    pub fn iter(&self) -> impl Iterator<Item = (Format, &Bytes)> {
        self.first
            .iter()
            .chain(self.rest.iter())
            .map(|(f, b)| (*f, b))
    }

    /// True when no frame was encoded.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// A copy holding only the formats in `set` (refcount clones, no byte copies).
    pub fn subset(&self, set: FormatSet) -> Frames {
        let mut out = Frames::new();
        for (f, b) in self.first.iter().chain(self.rest.iter()) {
            if set.contains(*f) {
                out.push(*f, b.clone());
            }
        }
        out
    }
}

/// A source's position in the hub's list: topics are per source, so two routes can watch the
/// same key name in two Redis databases.
pub type SourceId = u16;

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
        /// For a watcher's cached value: the watched topic on that shard. The shard drops the
        /// frame if the connection already got a newer one for that topic.
        watch: Option<LocalTopicId>,
    },
    /// A replay source's output for the one connection it serves (see [`crate::source::replay`]).
    Replay {
        /// The connection.
        conn: ConnRef,
        /// Frames, or the end of the consumer.
        event: crate::source::replay::ReplayEvent,
    },
    /// Another shard received a request for an Engine.IO session this shard owns: serve the
    /// connection from here on, starting with the bytes already read (the whole request).
    Adopt {
        /// The client's socket (a duplicate descriptor; the sender dropped its own).
        stream: std::net::TcpStream,
        /// Bytes read so far and not yet answered.
        pending: Vec<u8>,
        /// The index of the listener that accepted it (the same on every shard).
        listener: u8,
        /// The client's address (the PROXY header's source where the listener expects one).
        peer: std::net::SocketAddr,
    },
    /// A source's connection to read on this shard's runtime from now on (decision 0017).
    Read(Box<dyn crate::source::ShardReader>),
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
    /// The source serving the topic.
    pub source: SourceId,
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
        /// The source serving the channel.
        source: SourceId,
        /// The channel.
        channel: Bytes,
        /// The payload.
        payload: Bytes,
    },
    /// Input from a source's own threads (Redis pushes, key reads, ...).
    Source(crate::source::SourceInput),
    /// A connection wants the current value of `key` once, rendered in `format`. For
    /// [`Format::Bess`], `key` is the set of battery ids and the snapshot covers every battery.
    Snapshot {
        /// The connection's shard.
        shard: ShardId,
        /// The connection.
        conn: ConnRef,
        /// The source to read from.
        source: SourceId,
        /// The format the connection wants.
        format: Format,
        /// The key.
        key: Bytes,
        /// True when the connection also watches the key: if nothing is cached yet, the first
        /// read of the watch reaches it anyway.
        watcher: bool,
    },
    /// Stop the hub thread.
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_index_round_trips_and_fits_a_format_set() {
        for i in 0..Format::COUNT {
            let f = Format::from_index(i).expect("a format per index");
            assert_eq!(f.index(), i, "{f:?}");
            assert!(FormatSet::EMPTY.with(f).contains(f));
        }
        assert_eq!(Format::from_index(Format::COUNT), None);
    }
}
