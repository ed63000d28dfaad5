//! One client connection: its state on the shard, and the task that serves it.
//!
//! - [`Conn`] is the connection's entry in the shard's `Slab`: its outbox, its subscriptions,
//!   its liveness clock and its close state. Only the owning shard thread touches it.
//! - [`io`] is the only code that does socket I/O for a connection: the HTTP phase, then the
//!   WebSocket read loop and write loop.
//! - [`outbox`] is the bounded queue of shared frames that the write loop flushes with `writev`.
//! - [`native`] executes native-protocol commands against the shard.
//! - `admission` checks the token of an upgrade on a `jwt` listener (401) and the
//!   subscription a profile route's URL implies (403); see [`crate::auth`].
//! - `ess_api` answers the Squonk2 ESS internal REST API on `ess_api` routes (the HTTP side of
//!   [`crate::http::ess_api`], with the registry behind it).
//!
//! State machine: `Http` → (`Open` → `Closing`) → removed. A connection enters `Closing` when a
//! close frame was queued (by either side) or the peer vanished; its outbox then refuses data, the
//! write loop flushes what is left and half-closes, and the read loop stops at the peer's close,
//! at EOF, or when the shard's sweep passes the closing deadline and shuts the socket down.

mod admission;
pub mod dormant;
mod eio;
mod ess;
pub mod ess_api;
pub mod io;
pub mod native;
pub mod outbox;
pub mod proxy;
mod route;

use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::router::{Format, LocalTopicId};
use crate::rt::SocketHandle;
use outbox::Outbox;

/// What a connection is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// Still in the HTTP phase (or a plain HTTP client).
    Http,
    /// A native-protocol WebSocket on the native listener that wants events in `format`.
    Native(Format),
    /// A WebSocket served by route `route` (an index into `Config::routes`), wanting events in
    /// `format`.
    Route {
        /// The route.
        route: u16,
        /// The format its events are rendered in.
        format: Format,
    },
    /// The conformance echo route.
    Echo,
    /// The WebSocket of an Engine.IO session (the probing one during an upgrade) on route
    /// `route`; `session` is its slot in the shard's session table.
    Eio {
        /// The route.
        route: u16,
        /// The session's slot.
        session: u32,
    },
    /// A polling GET parked on session slot `session` until it can be answered; back to
    /// [`ConnKind::Http`] once it is.
    EioGet {
        /// The session's slot.
        session: u32,
    },
    /// A WebSocket whose Engine.IO session ended (or whose upgrade was refused): it is closing
    /// and carries nothing.
    EioDetached,
}

impl ConnKind {
    /// Whether the connection is a WebSocket (counted in `ringcast_shard_websockets`).
    pub fn is_websocket(self) -> bool {
        !matches!(self, ConnKind::Http | ConnKind::EioGet { .. })
    }

    /// Whether the Engine.IO session, not the shard's sweep, runs its heartbeat.
    pub fn is_eio(self) -> bool {
        matches!(
            self,
            ConnKind::Eio { .. } | ConnKind::EioGet { .. } | ConnKind::EioDetached
        )
    }
}

/// Whether the connection is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Serving normally.
    Open,
    /// A close frame is queued or was received; the socket is shut down at `deadline` at the
    /// latest.
    Closing {
        /// When the sweep shuts the socket down regardless.
        deadline: Tick,
    },
}

/// A connection's clock reading: milliseconds since the process's first reading, in 4 bytes
/// instead of an `Instant`'s 16, because the slab holds one `Conn` per connection and the
/// clocks are only compared against timeouts of seconds. The count wraps after 49.7 days;
/// [`Tick::since`] and [`Tick::reached`] compare by wrapping difference, so they are right for
/// any two readings less than 24.8 days apart, which the idle, ping, pong and close timeouts
/// always are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick(NonZeroU32);

impl Tick {
    /// The reading at `t` (an instant over a second before the process's first reading counts
    /// as 1 ms).
    pub fn at(t: Instant) -> Tick {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        // A second before the first reading, so that instants taken just before it (an accept's
        // `now`) still read right.
        let epoch = *EPOCH.get_or_init(|| {
            let now = Instant::now();
            now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
        });
        // Truncation wraps the count; 0 is read as 1 ms, so `Option<Tick>` stays 4 bytes.
        let ms = t.saturating_duration_since(epoch).as_millis() as u32;
        Tick(NonZeroU32::new(ms).unwrap_or(NonZeroU32::MIN))
    }

    /// The reading now.
    pub fn now() -> Tick {
        Tick::at(Instant::now())
    }

    /// The reading's low 16 bits: milliseconds that wrap every 65.5 s, for gaps of a few
    /// milliseconds ([`Outbox::direct_within`](outbox::Outbox::direct_within)).
    pub fn millis16(self) -> u16 {
        self.0.get() as u16
    }

    /// The reading `d` after this one (to the millisecond).
    pub fn after(self, d: Duration) -> Tick {
        let ms = self.0.get().wrapping_add(d.as_millis() as u32);
        Tick(NonZeroU32::new(ms).unwrap_or(NonZeroU32::MIN))
    }

    /// Time from `earlier` to this reading; zero if `earlier` is later.
    pub fn since(self, earlier: Tick) -> Duration {
        let d = self.0.get().wrapping_sub(earlier.0.get()) as i32;
        Duration::from_millis(u64::try_from(d).unwrap_or(0))
    }

    /// True once this reading is at or past `deadline`.
    pub fn reached(self, deadline: Tick) -> bool {
        self.0.get().wrapping_sub(deadline.0.get()) as i32 >= 0
    }
}

/// Events held back for a connection while it waits for snapshots it asked for, boxed and made
/// only while one is pending, so the connections that never ask carry one pointer for it.
#[derive(Debug, Default)]
pub struct Held {
    /// Snapshots requested and not yet delivered (at least 1 while this exists).
    pub pending: u32,
    /// The events that arrived meanwhile, in order (bounded by [`MAX_HELD`]).
    pub frames: Vec<outbox::OutFrame>,
}

/// A connection's state on its shard.
pub struct Conn {
    /// Unique on this shard for the process's life (slab keys are reused).
    pub id: u64,
    /// Which of the shard's listeners accepted it (0: the native listener).
    pub listener: u8,
    /// What it serves.
    pub kind: ConnKind,
    /// Open or closing.
    pub state: ConnState,
    /// Frames waiting to be written.
    pub outbox: Outbox,
    /// The write loop's waker while it waits for frames (see [`Conn::wake_writer`]). A slot
    /// instead of a `Notify`: the waiting write loop then holds no waiter node, which keeps
    /// every connection's task a size step smaller.
    pub writer_waker: Option<std::task::Waker>,
    /// Wakes a parked Engine.IO polling GET (`conn::eio`); made by the first one to park, so
    /// other connections carry no allocation for it.
    pub parked: Option<Rc<Notify>>,
    /// Shuts the socket down from the shard (sweep, shutdown, slow consumer).
    pub socket: SocketHandle,
    /// Channels and patterns this connection is subscribed to, for cleanup on close.
    pub subscriptions: Vec<LocalTopicId>,
    /// When the client last sent anything in the HTTP phase. Drives `idle-timeout`, which
    /// applies to that phase only.
    pub last_seen: Tick,
    /// When the shard last pinged it. Drives `ping-interval`.
    pub last_ping: Tick,
    /// When the oldest ping the client has not answered yet was sent, or `None` when every
    /// ping was answered. The sweep closes the connection once this is `pong_timeout` old; a
    /// client that answers pings can stay silent for ever. What counts as an answer depends
    /// on the heartbeat style ([`crate::config::Heartbeat`]): any frame for protocol pings,
    /// `pong` or `init` for JSON pings.
    pub unanswered_ping: Option<Tick>,
    /// While snapshots are pending, the events held back so that the client sees each
    /// snapshot before any update; `None` otherwise.
    pub held: Option<Box<Held>>,
    /// Read time of a sampled event queued here: the next `writev` is timed against it.
    pub probe: Option<Instant>,
    /// The token's grants and expiry, for a connection that presented a JWT; `None` for
    /// anonymous clients, whom the listener's allow lists govern. Boxed: one pointer per
    /// anonymous connection.
    pub auth: Option<Box<crate::auth::ConnAuth>>,
    /// The client's address: the socket's peer, or the PROXY header's source on a listener
    /// that expects one ([`proxy`]). What logs and per-IP limits name.
    pub peer: std::net::SocketAddr,
    /// Its slot in the per-IP table while per-IP limits are on; dropped with the connection.
    pub ip_lease: Option<crate::limits::IpLease>,
    /// Its native-command budget (`command-rate`).
    pub commands: crate::limits::CommandBucket,
    /// How far a quiet WebSocket is on its way to giving up its task ([`dormant`]).
    pub doze: dormant::Doze,
    /// The socket of a dormant connection (one that gave up its task, [`dormant`]); `None`
    /// while a task serves it.
    pub dormant: Option<Box<crate::rt::Sleeping>>,
}

/// Most events held for a connection waiting for a snapshot; past it the connection is closed
/// as a slow consumer.
pub const MAX_HELD: usize = 1024;

impl Conn {
    /// A new connection in the HTTP phase.
    pub fn new(id: u64, listener: u8, socket: SocketHandle, outbox_cap: usize, now: Tick) -> Self {
        Conn {
            id,
            listener,
            kind: ConnKind::Http,
            state: ConnState::Open,
            outbox: Outbox::new(outbox_cap),
            writer_waker: None,
            parked: None,
            socket,
            subscriptions: Vec::new(),
            last_seen: now,
            last_ping: now,
            unanswered_ping: None,
            held: None,
            probe: None,
            auth: None,
            peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            ip_lease: None,
            commands: crate::limits::CommandBucket::default(),
            doze: dormant::Doze::Awake,
            dormant: None,
        }
    }

    /// Returns the buffers that only a busy connection needs, if it is quiet now: the outbox's
    /// queue and batch vector ([`Outbox::release`]). (Held events go with their box when the
    /// last pending snapshot arrives.) True when something was returned. Called by the shard's
    /// sweep.
    pub fn release_idle_buffers(&mut self) -> bool {
        self.outbox.release()
    }

    /// The events held back while a snapshot is pending, or `None` when none is.
    pub fn holding(&mut self) -> Option<&mut Held> {
        self.held.as_deref_mut()
    }

    /// Wakes whatever waits for this connection's outbox: the write loop, or a parked
    /// Engine.IO polling GET. Call it when a push reports `wake_writer`, and when closing.
    pub fn wake_writer(&mut self) {
        if let Some(waker) = self.writer_waker.take() {
            waker.wake();
        }
        if let Some(parked) = &self.parked {
            parked.notify_one();
        }
    }

    /// The client answered our pings: the pong timeout stops running.
    pub fn answered(&mut self) {
        self.unanswered_ping = None;
    }

    /// Open with nothing queued or in flight and no close queued: what a connection must be to
    /// doze ([`dormant`]).
    pub fn is_at_rest(&self) -> bool {
        self.state == ConnState::Open
            && self.outbox.is_empty()
            && !self.outbox.in_flight()
            && !self.outbox.is_closed()
    }

    /// True while the connection serves normally.
    pub fn is_open(&self) -> bool {
        self.state == ConnState::Open
    }

    /// The format events must be rendered in, if it receives events.
    pub fn format(&self) -> Option<Format> {
        match self.kind {
            ConnKind::Native(f) | ConnKind::Route { format: f, .. } => Some(f),
            _ => None,
        }
    }

    /// The route serving it, if it came in through one.
    pub fn route(&self) -> Option<usize> {
        match self.kind {
            ConnKind::Route { route, .. } | ConnKind::Eio { route, .. } => Some(usize::from(route)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes behind the memory-per-connection breakdown in docs/BENCHMARKS.md (issue 15):
    /// `cargo test --lib conn::tests::sizes -- --nocapture` prints them. The slab holds one
    /// `Conn` per connection, so growth here is paid by every connection, idle or not.
    #[test]
    fn sizes() {
        use std::mem::size_of;
        let rows = [
            ("Conn (the slab entry)", size_of::<Conn>()),
            ("  Outbox", size_of::<Outbox>()),
            ("  ConnKind", size_of::<ConnKind>()),
            ("  ConnState", size_of::<ConnState>()),
            ("  Instant", size_of::<Instant>()),
            ("  SocketAddr (peer)", size_of::<std::net::SocketAddr>()),
            (
                "  Option<IpLease>",
                size_of::<Option<crate::limits::IpLease>>(),
            ),
            ("  CommandBucket", size_of::<crate::limits::CommandBucket>()),
            (
                "rt::Sleeping (boxed while dormant)",
                size_of::<crate::rt::Sleeping>(),
            ),
            ("OutFrame (per queued frame)", size_of::<outbox::OutFrame>()),
            (
                "Notify (Engine.IO parked GETs only; Rc adds 16)",
                size_of::<Notify>(),
            ),
            (
                "Codec (boxed while it exists)",
                size_of::<crate::ws::codec::Codec>(),
            ),
        ];
        for (name, bytes) in rows {
            println!("{name:<34} {bytes:>4} bytes");
        }
        // 320 bytes on 2026-12-04 (the outbox keeps the batch vector between writes); 336 with
        // the write loop's waker slot (16) and the Engine.IO `parked` notifier (8) instead of
        // an `Rc<Notify>` (8) for every connection: 16 bytes here for 48 of heap and 256 of
        // task cell per connection (`an_idle_connection_task_stays_small` in `conn::io`).
        // 264 with 4-byte `Tick`s for the four clocks and the held events boxed while a
        // snapshot is pending. 272 with a dormant connection's socket box (8; the doze state
        // fits in padding), for the 512-byte task cell a quiet connection no longer holds.
        let conn = size_of::<Conn>();
        assert!(conn <= 272, "Conn grew: {conn} bytes");
        assert_eq!(size_of::<Option<Tick>>(), 4);
    }

    #[test]
    fn ticks_compare_across_the_wrap() {
        let near_wrap = Tick(NonZeroU32::new(u32::MAX - 500).unwrap());
        let later = near_wrap.after(Duration::from_secs(2));
        assert!(later.0.get() < near_wrap.0.get(), "the count wrapped");
        assert_eq!(later.since(near_wrap), Duration::from_secs(2));
        assert!(later.reached(near_wrap));
        assert!(!near_wrap.reached(later));
        // An earlier reading read as later is zero, not 49 days.
        assert_eq!(near_wrap.since(later), Duration::ZERO);
    }

    #[test]
    fn ticks_follow_the_clock_to_the_millisecond() {
        let t0 = Instant::now();
        let a = Tick::at(t0);
        let b = Tick::at(t0 + Duration::from_millis(1500));
        assert_eq!(b.since(a), Duration::from_millis(1500));
        assert!(b.reached(a.after(Duration::from_millis(1500))));
        assert!(!b.reached(a.after(Duration::from_millis(1501))));
    }
}
