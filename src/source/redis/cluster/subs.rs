//! A cluster's subscriptions: one subscriber thread per primary, and a manager thread that
//! keeps the topology fresh and re-homes what moved.
//!
//! Where a name is subscribed ([`place`]):
//! - keyspace channels and patterns (`__keyspace@…`, `__keyevent@…`) on **every** primary:
//!   notifications are node-local, and a key can live on any of them (or move);
//! - channels matching a `sharded_channels` glob with `SSUBSCRIBE` on the primary that owns the
//!   channel's slot (sharded pub/sub: `SPUBLISH` reaches only that shard);
//! - every other channel and pattern on one node, the *main* one: the cluster broadcasts an
//!   ordinary `PUBLISH` to every node, so one subscription sees everything.
//!
//! Each name is still subscribed once process-wide: the hub's refcounts ([`ClusterSubs::add`],
//! [`ClusterSubs::remove`]) are kept here, under one lock with the topology, the main node, the
//! node that holds each sharded subscription (its *home*), and each node's writer. A node
//! thread that (re)connects subscribes, under that lock, exactly what is placed on it, as the
//! single-Redis subscriber does for everything.
//!
//! Refresh ([`ClusterSubs::refresh`], on the manager thread): at start, every 30 s, and soon
//! after a `-MOVED` (command thread or a refused `SSUBSCRIBE`), a server-sent `sunsubscribe`
//! (a slot migrated away), or a lost node. It rediscovers the topology, starts a thread for a
//! new primary and retires one that left, moves the main node when it is down, and re-homes
//! only the sharded subscriptions whose slot changed owner. While anything is unplaced (a slot
//! with no owner, the main node gone), it retries every 250 ms to 2 s.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use super::{NodeAddr, Redirect, SLOTS, Topology, key_slot};
use crate::metrics::Metrics;
use crate::protocol::glob::glob_match;
use crate::router::UpstreamMsg;
use crate::source::SourceInput;
use crate::source::redis::conn::{RedisConn, RedisError};
use crate::source::redis::subscriber::{self, CHUNK, Control, Kind};
use crate::source::redis::{Backoff, Input, RedisSettings};

/// How often the topology is refreshed when nothing asks for it sooner.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// First retry delay while something is unplaced (doubles up to [`RETRY_MAX`]).
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Where a subscription lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The main node (ordinary pub/sub is broadcast across the cluster).
    Main,
    /// Every primary (keyspace notifications are node-local).
    Every,
    /// The primary owning this slot, with `SSUBSCRIBE`.
    Owner(u16),
}

/// Where `name` is subscribed, given the source's `sharded_channels` globs.
pub fn place(kind: Kind, name: &[u8], sharded: &[String]) -> Place {
    if name.starts_with(b"__keyspace@") || name.starts_with(b"__keyevent@") {
        return Place::Every;
    }
    if kind == Kind::Pattern && name.starts_with(b"__key") {
        return Place::Every;
    }
    if kind == Kind::Channel && is_sharded(name, sharded) {
        return Place::Owner(key_slot(name));
    }
    Place::Main
}

/// Whether `channel` is a sharded channel (published with `SPUBLISH`).
pub fn is_sharded(channel: &[u8], sharded: &[String]) -> bool {
    sharded.iter().any(|g| glob_match(g.as_bytes(), channel))
}

/// The command that subscribes (or unsubscribes) a name placed at `place`.
fn command(kind: Kind, place: Place, subscribe: bool) -> &'static [u8] {
    match (place, subscribe) {
        (Place::Owner(_), true) => b"SSUBSCRIBE",
        (Place::Owner(_), false) => b"SUNSUBSCRIBE",
        _ => kind.command(subscribe),
    }
}

/// What the hub, the node threads, the manager and the command thread share.
pub struct ClusterSubs {
    state: Mutex<State>,
    refresh: Sender<()>,
    settings: Arc<RedisSettings>,
    hub: Sender<UpstreamMsg>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    wanted: HashMap<(Kind, Bytes), u32>,
    topology: Topology,
    nodes: BTreeMap<NodeAddr, Node>,
    main: Option<NodeAddr>,
    /// Where each sharded channel is `SSUBSCRIBE`d now.
    homes: HashMap<Bytes, NodeAddr>,
    /// Refreshes failed in a row (the warning is logged on the first).
    failures: u32,
}

/// One primary's subscriber thread, as the others see it.
struct Node {
    writer: Option<TcpStream>,
    retired: Arc<AtomicBool>,
    /// Its connection is up but Redis stopped answering (see `subscriber::REPLY_DEADLINE`).
    stalled: bool,
}

/// The slot a command's names must share: `SSUBSCRIBE` and `SUNSUBSCRIBE` take channels of one
/// slot only (Redis answers `-CROSSSLOT` otherwise); `None` for the other commands.
fn slot_group(cmd: &[u8], name: &[u8]) -> Option<u16> {
    matches!(cmd, b"SSUBSCRIBE" | b"SUNSUBSCRIBE").then(|| key_slot(name))
}

/// What one command line is grouped by: node, command and (for sharded commands) slot.
type Group = (NodeAddr, &'static [u8], Option<u16>);

/// Commands to write, grouped, so each becomes a few pipelined writes.
#[derive(Default)]
struct Outgoing(BTreeMap<Group, Vec<Bytes>>);

impl Outgoing {
    fn push(&mut self, node: &NodeAddr, cmd: &'static [u8], name: Bytes) {
        let slot = slot_group(cmd, &name);
        self.0
            .entry((node.clone(), cmd, slot))
            .or_default()
            .push(name);
    }

    /// Writes everything; a node whose write fails loses its writer (its thread reconnects
    /// and resubscribes what is placed on it).
    fn send(self, st: &mut State) {
        for ((node, cmd, _), names) in self.0 {
            if let Some(n) = st.nodes.get_mut(&node) {
                subscriber::send(&mut n.writer, cmd, &names);
            }
        }
    }
}

impl State {
    fn connected(&self, node: &NodeAddr) -> bool {
        self.nodes.get(node).is_some_and(|n| n.writer.is_some())
    }

    /// Queues the subscription of `name` wherever it is placed now (nodes without a writer
    /// subscribe it themselves when they connect).
    fn subscribe(&mut self, kind: Kind, name: &Bytes, sharded: &[String], out: &mut Outgoing) {
        let at = place(kind, name, sharded);
        let cmd = command(kind, at, true);
        match at {
            Place::Main => {
                if let Some(main) = self.main.clone().filter(|m| self.connected(m)) {
                    out.push(&main, cmd, name.clone());
                }
            }
            Place::Every => {
                for (addr, node) in &self.nodes {
                    if node.writer.is_some() {
                        out.push(addr, cmd, name.clone());
                    }
                }
            }
            Place::Owner(slot) => {
                if let Some(owner) = self.topology.owner(slot).cloned()
                    && self.connected(&owner)
                {
                    out.push(&owner, cmd, name.clone());
                    self.homes.insert(name.clone(), owner);
                }
            }
        }
    }

    fn unsubscribe(&mut self, kind: Kind, name: &Bytes, sharded: &[String], out: &mut Outgoing) {
        let at = place(kind, name, sharded);
        let cmd = command(kind, at, false);
        match at {
            Place::Main => {
                if let Some(main) = self.main.clone() {
                    out.push(&main, cmd, name.clone());
                }
            }
            Place::Every => {
                for addr in self.nodes.keys() {
                    out.push(addr, cmd, name.clone());
                }
            }
            Place::Owner(_) => {
                if let Some(home) = self.homes.remove(name) {
                    out.push(&home, cmd, name.clone());
                }
            }
        }
    }

    /// Whether every node is connected, the main one is chosen and every slot has an owner.
    fn healthy(&self) -> bool {
        !self.nodes.is_empty()
            && self.main.is_some()
            && self
                .nodes
                .values()
                .all(|n| n.writer.is_some() && !n.stalled)
            && self.topology.covered() == usize::from(SLOTS)
    }
}

impl ClusterSubs {
    /// Starts the manager thread (which discovers the topology and starts the node threads).
    pub fn start(
        settings: Arc<RedisSettings>,
        hub: Sender<UpstreamMsg>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<ClusterSubs>> {
        let (tx, rx) = bounded(1);
        let subs = Arc::new(ClusterSubs {
            state: Mutex::new(State::default()),
            refresh: tx,
            settings,
            hub,
            metrics,
        });
        let manager = subs.clone();
        std::thread::Builder::new()
            .name("ringcast-redis-cluster".into())
            .spawn(move || manager.manage(rx))?;
        Ok(subs)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is a few inserts or removes: a panic cannot leave it
        // half done in a way that matters, so a poisoned lock is still used.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sharded(&self) -> &[String] {
        &self.settings.sharded_channels
    }

    /// Asks the manager for a refresh soon (coalesced: one pending request is enough).
    pub fn request_refresh(&self) {
        let _ = self.refresh.try_send(());
    }

    /// The primary owning `key` now, or any primary, or the first seed.
    pub fn node_for(&self, key: &[u8]) -> NodeAddr {
        let st = self.lock();
        st.topology
            .owner_of(key)
            .or_else(|| st.topology.primaries().first().copied())
            .cloned()
            .unwrap_or_else(|| {
                let url = &self.settings.url;
                NodeAddr {
                    host: url.host.clone(),
                    port: url.port,
                }
            })
    }

    /// Adds one reference to each name; subscribes names that went 0 → 1 where they are
    /// placed. Returns the names that were already wanted.
    pub fn add(&self, kind: Kind, names: &[Bytes]) -> Vec<Bytes> {
        let mut st = self.lock();
        let mut out = Outgoing::default();
        let mut existing = Vec::new();
        for name in names {
            let count = st.wanted.entry((kind, name.clone())).or_insert(0);
            *count += 1;
            if *count == 1 {
                st.subscribe(kind, name, self.sharded(), &mut out);
            } else {
                existing.push(name.clone());
            }
        }
        out.send(&mut st);
        existing
    }

    /// Drops one reference to each name; unsubscribes names that went 1 → 0.
    pub fn remove(&self, kind: Kind, names: &[Bytes]) {
        let mut st = self.lock();
        let mut out = Outgoing::default();
        for name in names {
            let key = (kind, name.clone());
            let Some(count) = st.wanted.get_mut(&key) else {
                continue;
            };
            *count -= 1;
            if *count == 0 {
                st.wanted.remove(&key);
                st.unsubscribe(kind, name, self.sharded(), &mut out);
            }
        }
        out.send(&mut st);
    }

    /// The manager thread: refreshes at start, on request and every 30 s.
    fn manage(self: Arc<Self>, requests: Receiver<()>) {
        let mut wait = Duration::ZERO;
        let mut retry = RETRY_FIRST;
        loop {
            match requests.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.refresh() {
                wait = REFRESH_EVERY;
                retry = RETRY_FIRST;
            } else {
                wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }

    /// Rediscovers the topology and applies it; true when everything is placed.
    pub fn refresh(self: &Arc<Self>) -> bool {
        let candidates: Vec<NodeAddr> = {
            let st = self.lock();
            let mut c: Vec<NodeAddr> = st.topology.primaries().into_iter().cloned().collect();
            for seed in self.settings.url.seed_nodes() {
                if !c.contains(&seed) {
                    c.push(seed);
                }
            }
            c
        };
        let mut last_error = None;
        let topology = candidates.iter().find_map(|node| {
            let url = self.settings.url.at(node);
            match super::discover(&url, self.settings.connect_timeout) {
                Ok(t) if !t.ranges().is_empty() => Some(t),
                Ok(_) => {
                    last_error = Some(format!("{node}: no slot has a primary"));
                    None
                }
                Err(e) => {
                    last_error = Some(format!("{node}: {e}"));
                    None
                }
            }
        });
        let stats = &self.metrics.redis[self.settings.index];
        let mut st = self.lock();
        let Some(topology) = topology else {
            st.failures += 1;
            if st.failures == 1 {
                tracing::warn!(
                    redis = %self.settings.url,
                    error = last_error.as_deref().unwrap_or("no seed node"),
                    "redis cluster topology refresh failed; retrying"
                );
            }
            return false;
        };
        if st.failures > 0 {
            tracing::info!(redis = %self.settings.url, "redis cluster topology refreshed again");
        }
        st.failures = 0;
        stats.cluster_refreshes.inc();
        if st.topology != topology {
            tracing::info!(
                redis = %self.settings.url,
                primaries = topology.primaries().len(),
                slots_covered = topology.covered(),
                "redis cluster topology"
            );
        }
        st.topology = topology;
        let primaries: Vec<NodeAddr> = st.topology.primaries().into_iter().cloned().collect();
        // Primaries that left: retire their threads and forget what they held.
        let gone: Vec<NodeAddr> = st
            .nodes
            .keys()
            .filter(|n| !primaries.contains(n))
            .cloned()
            .collect();
        for addr in gone {
            if let Some(mut node) = st.nodes.remove(&addr) {
                node.retired.store(true, Ordering::Relaxed);
                if let Some(w) = node.writer.take() {
                    let _ = w.shutdown(std::net::Shutdown::Both);
                }
            }
            if st.main.as_ref() == Some(&addr) {
                st.main = None;
            }
            st.homes.retain(|_, home| *home != addr);
        }
        // New primaries: a thread each; it subscribes what is placed on it when it connects.
        for addr in primaries {
            if !st.nodes.contains_key(&addr) {
                let retired = Arc::new(AtomicBool::new(false));
                st.nodes.insert(
                    addr.clone(),
                    Node {
                        writer: None,
                        retired: retired.clone(),
                        stalled: false,
                    },
                );
                let me = self.clone();
                let name = format!("ringcast-redis-sub-{}", addr.port);
                let spawned = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || me.run_node(addr, retired));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a redis cluster subscriber thread");
                }
            }
        }
        let mut out = Outgoing::default();
        // The main node: keep it while it is connected, else move the ordinary subscriptions
        // to a connected primary (none connected: the first to connect becomes main).
        if !st.main.as_ref().is_some_and(|m| st.connected(m)) {
            let next = st
                .nodes
                .iter()
                .find(|(_, n)| n.writer.is_some())
                .map(|(a, _)| a.clone());
            if let Some(next) = next {
                tracing::info!(redis = %self.settings.url, node = %next, "redis cluster: ordinary subscriptions on this node now");
                let names: Vec<(Kind, Bytes)> = st
                    .wanted
                    .keys()
                    .filter(|(k, n)| place(*k, n, self.sharded()) == Place::Main)
                    .cloned()
                    .collect();
                for (kind, name) in names {
                    out.push(&next, kind.command(true), name);
                }
                st.main = Some(next);
            }
        }
        // Sharded subscriptions whose slot changed owner (or that have no home): re-home them.
        let sharded: Vec<Bytes> = st
            .wanted
            .keys()
            .filter(|(k, n)| matches!(place(*k, n, self.sharded()), Place::Owner(_)))
            .map(|(_, n)| n.clone())
            .collect();
        let mut moved = 0;
        for name in sharded {
            let owner = st.topology.owner_of(&name).cloned();
            let home = st.homes.get(&name).cloned();
            if home.is_some() && home == owner {
                continue;
            }
            if let Some(home) = home {
                out.push(&home, b"SUNSUBSCRIBE", name.clone());
                st.homes.remove(&name);
            }
            if let Some(owner) = owner.filter(|o| st.connected(o)) {
                out.push(&owner, b"SSUBSCRIBE", name.clone());
                st.homes.insert(name, owner);
                moved += 1;
            }
        }
        if moved > 0 {
            stats.cluster_rehomed.add(moved);
        }
        out.send(&mut st);
        let all_homed = st.wanted.keys().all(|(k, n)| {
            !matches!(place(*k, n, self.sharded()), Place::Owner(_)) || st.homes.contains_key(n)
        });
        self.set_up(&st);
        st.healthy() && all_homed
    }

    fn set_up(&self, st: &State) {
        let stats = &self.metrics.redis[self.settings.index];
        stats.up.set(u64::from(st.healthy()));
        let connected = st.nodes.values().filter(|n| n.writer.is_some()).count();
        stats.cluster_nodes.set(connected as u64);
    }

    /// One primary's subscriber thread: connect, subscribe what is placed here, read pushes;
    /// again after a loss, until the primary leaves the topology.
    fn run_node(self: Arc<Self>, addr: NodeAddr, retired: Arc<AtomicBool>) {
        let settings = RedisSettings {
            url: self.settings.url.at(&addr),
            ..(*self.settings).clone()
        };
        let stats = &self.metrics.redis[settings.index];
        let mut backoff = Backoff::new(settings.backoff_max);
        let mut connected_before = false;
        while !retired.load(Ordering::Relaxed) {
            let Some(mut conn) = crate::source::redis::connect_or_wait(
                &settings,
                &mut backoff,
                "cluster subscriber",
            ) else {
                self.request_refresh();
                continue;
            };
            if settings.serves_watches
                && let Err(e) = crate::source::redis::notify::check(&mut conn, &settings)
            {
                tracing::warn!(redis = %settings.url, error = %e, "redis notify-keyspace-events check failed");
                std::thread::sleep(backoff.next_delay());
                continue;
            }
            match self.attach(&addr, &retired, &mut conn) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(redis = %settings.url, error = %e, "redis resubscribe failed");
                    std::thread::sleep(backoff.next_delay());
                    continue;
                }
            }
            backoff.reset();
            if connected_before {
                stats.reconnects.inc();
                tracing::info!(redis = %settings.url, "reconnected to redis cluster node; resubscribed");
            } else {
                tracing::info!(redis = %settings.url, proto = ?conn.proto, "connected to redis cluster node");
            }
            connected_before = true;
            let err = subscriber::read_loop(
                settings.index,
                &mut conn,
                &self.hub,
                None,
                &self.metrics,
                &|| self.ping(&addr),
                &mut |c| self.control(&addr, c),
            );
            if retired.load(Ordering::Relaxed) {
                return;
            }
            tracing::warn!(redis = %settings.url, error = %err, "redis cluster subscriber connection lost");
            self.detach(&addr);
            let _ = self.hub.try_send(UpstreamMsg::Source(SourceInput::Redis {
                source: settings.index,
                input: Input::Down,
            }));
        }
    }

    /// Subscribes everything placed on `addr` and installs its writer, under the lock; false
    /// when the node was retired meanwhile.
    fn attach(
        &self,
        addr: &NodeAddr,
        retired: &AtomicBool,
        conn: &mut RedisConn,
    ) -> Result<bool, RedisError> {
        let mut st = self.lock();
        if retired.load(Ordering::Relaxed) || !st.nodes.contains_key(addr) {
            return Ok(false);
        }
        if st.main.is_none() {
            st.main = Some(addr.clone());
        }
        let mut by_cmd: BTreeMap<(&'static [u8], Option<u16>), Vec<Bytes>> = BTreeMap::new();
        let mut homes = Vec::new();
        for (kind, name) in st.wanted.keys() {
            let at = place(*kind, name, self.sharded());
            let here = match at {
                Place::Main => st.main.as_ref() == Some(addr),
                Place::Every => true,
                Place::Owner(slot) => st.topology.owner(slot) == Some(addr),
            };
            if here {
                let cmd = command(*kind, at, true);
                by_cmd
                    .entry((cmd, slot_group(cmd, name)))
                    .or_default()
                    .push(name.clone());
                if let Place::Owner(_) = at {
                    homes.push(name.clone());
                }
            }
        }
        for ((cmd, _), names) in &by_cmd {
            for chunk in names.chunks(CHUNK) {
                let mut args: Vec<&[u8]> = vec![cmd];
                args.extend(chunk.iter().map(|b| &b[..]));
                conn.queue(&args);
            }
        }
        conn.flush()?;
        let writer = conn.writer()?;
        for name in homes {
            st.homes.insert(name, addr.clone());
        }
        if let Some(node) = st.nodes.get_mut(addr) {
            node.writer = Some(writer);
        }
        self.set_up(&st);
        Ok(true)
    }

    /// Writes a `PING` on `addr`'s subscriber connection.
    fn ping(&self, addr: &NodeAddr) -> bool {
        let mut st = self.lock();
        st.nodes
            .get_mut(addr)
            .is_some_and(|n| subscriber::write_ping(&mut n.writer))
    }

    /// A node's connection was lost: nothing is subscribed there any more.
    fn detach(&self, addr: &NodeAddr) {
        let mut st = self.lock();
        if let Some(node) = st.nodes.get_mut(addr) {
            node.writer = None;
            node.stalled = false;
        }
        st.homes.retain(|_, home| home != addr);
        self.set_up(&st);
        drop(st);
        self.request_refresh();
    }

    /// What a node's connection said besides messages.
    fn control(&self, addr: &NodeAddr, control: Control) {
        match control {
            Control::Stalled(stalled) => {
                subscriber::stalled_log(&self.settings.url.at(addr), stalled);
                let mut st = self.lock();
                if let Some(node) = st.nodes.get_mut(addr) {
                    node.stalled = stalled;
                }
                self.set_up(&st);
            }
            Control::ShardUnsubscribed(name) => {
                let mut st = self.lock();
                let wanted = st.wanted.contains_key(&(Kind::Channel, name.clone()));
                if wanted && st.homes.get(&name) == Some(addr) {
                    // Not ours: the server dropped it (its slot migrated away). Re-home it.
                    st.homes.remove(&name);
                    drop(st);
                    tracing::info!(channel = %String::from_utf8_lossy(&name), node = %addr, "sharded subscription dropped by the node (slot moved); re-homing");
                    self.request_refresh();
                }
            }
            Control::Refused(error) => {
                if let Some(Redirect::Moved { slot, .. }) = Redirect::parse(&error) {
                    let mut st = self.lock();
                    st.homes
                        .retain(|name, home| !(home == addr && key_slot(name) == slot));
                    drop(st);
                    self.request_refresh();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places() {
        let sharded = vec!["orders:*".to_owned()];
        assert_eq!(
            place(Kind::Channel, b"__keyspace@0__:run:1", &sharded),
            Place::Every
        );
        assert_eq!(
            place(Kind::Pattern, b"__keyspace@0__:run:*", &sharded),
            Place::Every
        );
        assert_eq!(
            place(Kind::Channel, b"orders:7", &sharded),
            Place::Owner(key_slot(b"orders:7"))
        );
        // A pattern is never sharded: sharded pub/sub has no patterns.
        assert_eq!(place(Kind::Pattern, b"orders:*", &sharded), Place::Main);
        assert_eq!(place(Kind::Channel, b"news", &sharded), Place::Main);
        assert_eq!(
            command(Kind::Channel, Place::Owner(1), false),
            b"SUNSUBSCRIBE"
        );
        assert_eq!(command(Kind::Pattern, Place::Every, true), b"PSUBSCRIBE");
        // Sharded commands are grouped by slot (one slot per SSUBSCRIBE), others are not.
        assert_eq!(
            slot_group(b"SSUBSCRIBE", b"orders:7"),
            Some(key_slot(b"orders:7"))
        );
        assert_eq!(slot_group(b"SUNSUBSCRIBE", b"a"), Some(key_slot(b"a")));
        assert_eq!(slot_group(b"SUBSCRIBE", b"a"), None);
        let mut out = Outgoing::default();
        let node = NodeAddr {
            host: "h".into(),
            port: 1,
        };
        for name in ["orders:1", "orders:2", "{orders}:1", "{orders}:2"] {
            out.push(&node, b"SSUBSCRIBE", Bytes::from(name));
        }
        for name in ["a", "b"] {
            out.push(&node, b"SUBSCRIBE", Bytes::from(name));
        }
        let sizes: Vec<usize> = out.0.values().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 6);
        assert_eq!(
            out.0.len(),
            4,
            "orders:1, orders:2, {{orders}}:*, and one SUBSCRIBE"
        );
    }
}
