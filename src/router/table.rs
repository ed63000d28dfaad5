//! The shard-side subscriber table: which local connections want which topic.
//!
//! Owned by one shard thread; never shared. Topics are interned to [`LocalTopicId`]s (a slab slot
//! plus a generation), so a delivery from the hub is one slab index and a generation check, then
//! a walk over a dense set of connection keys.
//!
//! Each mutation reports whether the topic's [`FormatSet`] changed; the shard then tells the hub
//! (the hub only cares about the edges: first subscriber, last subscriber, a format appearing or
//! disappearing).

use std::collections::HashMap;

use bytes::Bytes;
use indexmap::IndexSet;
use slab::Slab;

use super::{Format, FormatSet, LocalTopicId, SourceId, TopicKind};

/// A connection's key in its shard's connection slab.
pub type ConnKey = usize;

type FastSet = IndexSet<ConnKey, foldhash::fast::RandomState>;

/// One interned topic on a shard.
#[derive(Debug)]
pub struct Entry {
    generation: u32,
    source: SourceId,
    kind: TopicKind,
    name: Bytes,
    /// Local subscribers, dense for fast iteration; O(1) insert and remove.
    subscribers: FastSet,
    /// Subscribers per [`Format`].
    per_format: [u32; Format::COUNT],
    /// Watchers that asked for the cached value and have had no frame of this topic yet.
    awaiting: Vec<ConnKey>,
}

impl Entry {
    /// The subscribers' connection keys.
    pub fn subscribers(&self) -> impl Iterator<Item = ConnKey> + '_ {
        self.subscribers.iter().copied()
    }

    /// The formats at least one subscriber wants.
    pub fn formats(&self) -> FormatSet {
        (0..Format::COUNT)
            .filter(|&i| self.per_format[i] > 0)
            .filter_map(Format::from_index)
            .fold(FormatSet::EMPTY, FormatSet::with)
    }

    /// The channel name or pattern.
    pub fn name(&self) -> &Bytes {
        &self.name
    }

    /// Channel or pattern.
    pub fn kind(&self) -> TopicKind {
        self.kind
    }

    /// The source the topic is served by.
    pub fn source(&self) -> SourceId {
        self.source
    }
}

/// What a subscribe or unsubscribe did.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The connection was already (or still not) subscribed: nothing changed.
    Unchanged,
    /// The subscription changed but the topic's formats did not: the hub need not know.
    Local(LocalTopicId),
    /// The topic's formats changed (empty means the topic is gone): tell the hub.
    Interest(LocalTopicId, FormatSet),
}

/// The table itself.
#[derive(Debug, Default)]
pub struct TopicTable {
    slots: Slab<Entry>,
    index: HashMap<(SourceId, TopicKind, Bytes), usize>,
    next_generation: u32,
}

impl TopicTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of interned topics.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no topic has a subscriber.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The entry for `id`, unless it is stale.
    pub fn get(&self, id: LocalTopicId) -> Option<&Entry> {
        self.slots
            .get(id.slot as usize)
            .filter(|e| e.generation == id.generation)
    }

    /// The id of a topic, if it has a local subscriber.
    pub fn lookup(&self, source: SourceId, kind: TopicKind, name: &[u8]) -> Option<LocalTopicId> {
        let slot = *self
            .index
            .get(&(source, kind, Bytes::copy_from_slice(name)))?;
        Some(LocalTopicId {
            slot: slot as u32,
            generation: self.slots[slot].generation,
        })
    }

    /// Subscribes `conn` (which wants `format`) to a topic.
    pub fn subscribe(
        &mut self,
        source: SourceId,
        kind: TopicKind,
        name: &Bytes,
        conn: ConnKey,
        format: Format,
    ) -> Change {
        let slot = match self.index.get(&(source, kind, name.clone())) {
            Some(&slot) => slot,
            None => {
                self.next_generation = self.next_generation.wrapping_add(1);
                let slot = self.slots.insert(Entry {
                    generation: self.next_generation,
                    source,
                    kind,
                    name: name.clone(),
                    subscribers: FastSet::default(),
                    per_format: [0; Format::COUNT],
                    awaiting: Vec::new(),
                });
                self.index.insert((source, kind, name.clone()), slot);
                slot
            }
        };
        let entry = &mut self.slots[slot];
        let id = LocalTopicId {
            slot: slot as u32,
            generation: entry.generation,
        };
        if !entry.subscribers.insert(conn) {
            return Change::Unchanged;
        }
        let before = entry.formats();
        entry.per_format[format.index()] += 1;
        let after = entry.formats();
        if before == after {
            Change::Local(id)
        } else {
            Change::Interest(id, after)
        }
    }

    /// Marks `conn` as waiting for its first frame of topic `id` (a watcher's snapshot).
    pub fn await_first(&mut self, id: LocalTopicId, conn: ConnKey) {
        if let Some(e) = self
            .slots
            .get_mut(id.slot as usize)
            .filter(|e| e.generation == id.generation)
            && !e.awaiting.contains(&conn)
        {
            e.awaiting.push(conn);
        }
    }

    /// True (and forgets it) when `conn` still waits for its first frame of topic `id`.
    pub fn take_awaiting(&mut self, id: LocalTopicId, conn: ConnKey) -> bool {
        let Some(e) = self
            .slots
            .get_mut(id.slot as usize)
            .filter(|e| e.generation == id.generation)
        else {
            return false;
        };
        match e.awaiting.iter().position(|&c| c == conn) {
            Some(p) => {
                e.awaiting.swap_remove(p);
                true
            }
            None => false,
        }
    }

    /// A frame of topic `id` reached every subscriber: nobody waits for a first frame now.
    pub fn delivered(&mut self, id: LocalTopicId) {
        if let Some(e) = self
            .slots
            .get_mut(id.slot as usize)
            .filter(|e| e.generation == id.generation && !e.awaiting.is_empty())
        {
            e.awaiting.clear();
        }
    }

    /// Unsubscribes `conn` (which wanted `format`) from the topic `id`.
    pub fn unsubscribe(&mut self, id: LocalTopicId, conn: ConnKey, format: Format) -> Change {
        let Some(entry) = self.slots.get_mut(id.slot as usize) else {
            return Change::Unchanged;
        };
        if entry.generation != id.generation || !entry.subscribers.swap_remove(&conn) {
            return Change::Unchanged;
        }
        entry.awaiting.retain(|&c| c != conn);
        let before = entry.formats();
        entry.per_format[format.index()] -= 1;
        let after = entry.formats();
        if entry.subscribers.is_empty() {
            let entry = self.slots.remove(id.slot as usize);
            self.index.remove(&(entry.source, entry.kind, entry.name));
            return Change::Interest(id, FormatSet::EMPTY);
        }
        if before == after {
            Change::Local(id)
        } else {
            Change::Interest(id, after)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_reported_once() {
        let mut t = TopicTable::new();
        let a = Bytes::from_static(b"a");
        let Change::Interest(id, f) = t.subscribe(0, TopicKind::Channel, &a, 1, Format::Json)
        else {
            panic!("first subscriber must be an interest edge")
        };
        assert!(f.contains(Format::Json) && !f.contains(Format::Raw));
        assert_eq!(
            t.subscribe(0, TopicKind::Channel, &a, 2, Format::Json),
            Change::Local(id)
        );
        assert_eq!(
            t.subscribe(0, TopicKind::Channel, &a, 2, Format::Json),
            Change::Unchanged
        );
        assert!(
            matches!(t.subscribe(0, TopicKind::Channel, &a, 3, Format::Raw), Change::Interest(_, f) if f.contains(Format::Raw))
        );
        assert_eq!(t.get(id).unwrap().subscribers().count(), 3);
        assert!(
            matches!(t.unsubscribe(id, 3, Format::Raw), Change::Interest(_, f) if !f.contains(Format::Raw))
        );
        assert_eq!(t.unsubscribe(id, 1, Format::Json), Change::Local(id));
        assert_eq!(t.unsubscribe(id, 1, Format::Json), Change::Unchanged);
        assert_eq!(
            t.unsubscribe(id, 2, Format::Json),
            Change::Interest(id, FormatSet::EMPTY)
        );
        assert!(t.is_empty());
    }

    #[test]
    fn stale_ids_do_not_match_a_reused_slot() {
        let mut t = TopicTable::new();
        let a = Bytes::from_static(b"a");
        let b = Bytes::from_static(b"b");
        let Change::Interest(old, _) = t.subscribe(0, TopicKind::Channel, &a, 1, Format::Json)
        else {
            panic!()
        };
        t.unsubscribe(old, 1, Format::Json);
        let Change::Interest(new, _) = t.subscribe(0, TopicKind::Channel, &b, 1, Format::Json)
        else {
            panic!()
        };
        assert_eq!(old.slot, new.slot);
        assert!(t.get(old).is_none());
        assert_eq!(t.get(new).unwrap().name(), &b);
        assert_eq!(t.lookup(0, TopicKind::Channel, b"b"), Some(new));
        assert_eq!(t.lookup(0, TopicKind::Pattern, b"b"), None);
    }
}
