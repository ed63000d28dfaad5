//! Identifiers that cross the shard/hub boundary.

/// A shard's index, `0..shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// Whether a topic is a channel name or a glob pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// An exact channel name.
    Channel,
    /// A Redis-style glob pattern (`news.*`).
    Pattern,
    /// A watched key: its value, then every change.
    Key,
    /// A watched key glob (`run:*`): every change of every matching key (no initial values).
    KeyPattern,
}

impl TopicKind {
    /// `Key`, or `KeyPattern` when `name` contains glob metacharacters (`*`, `?`, `[`).
    pub fn for_key(name: &[u8]) -> TopicKind {
        if name.iter().any(|b| matches!(b, b'*' | b'?' | b'[')) {
            TopicKind::KeyPattern
        } else {
            TopicKind::Key
        }
    }

    /// True for watched keys and key globs.
    pub fn is_key(self) -> bool {
        matches!(self, TopicKind::Key | TopicKind::KeyPattern)
    }
}

/// A topic interned on one shard: a slot in its table plus the slot's generation.
///
/// The generation makes ids unique over time: when a topic's last local subscriber leaves, its
/// slot may be reused, and a delivery still in flight for the old topic is recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalTopicId {
    /// Slot index in the shard's topic table.
    pub slot: u32,
    /// Generation of the slot when the topic was interned.
    pub generation: u32,
}
