//! Dormant WebSockets: a quiet connection gives up its task and waits in its slab entry.
//!
//! A WebSocket's task (the read loop and the write loop, `conn::io`) is the largest thing an
//! idle connection holds: tokio's task cell, 512 bytes. Once a connection has been quiet for a
//! full sweep period (nothing read, nothing written by its write loop), the sweep asks it to
//! doze: its task moves the socket into the connection's slab entry ([`Conn::dormant`], 48
//! bytes in a box), leaves a [`waker`] for the connection in the two places a task would be
//! woken from (the reactor's read readiness and the write loop's slot, [`Conn::writer_waker`]),
//! and ends. Lone frames still reach a dormant connection through the shard's direct flush,
//! which needs no task. Anything else that would have woken the task (input, a close, our
//! shutdown of the socket, a stream of frames, a frame the socket buffer did not take) wakes
//! the connection's waker instead: it queues the connection's key here, and [`resume_loop`]
//! spawns a new task for it with the same socket.
//!
//! Only a connection at rest dozes (`conn::io::websocket` checks): open, nothing queued or in
//! flight, no codec (no partial message read), not discarding input. So the new task starts
//! from nothing but the socket.
//!
//! [`Conn::dormant`]: super::Conn::dormant
//! [`Conn::writer_waker`]: super::Conn::writer_waker

use std::cell::{Cell, RefCell};
use std::task::{Poll, RawWaker, RawWakerVTable, Waker};

use crate::router::table::ConnKey;
use crate::shard::ShardRef;

thread_local! {
    /// Keys of dormant connections whose waker was woken, for [`resume_loop`]. Each dormant
    /// connection leaves its waker in two places, each woken at most once before its task is
    /// back, so this holds at most two keys per connection.
    static WOKEN: RefCell<Vec<ConnKey>> = const { RefCell::new(Vec::new()) };
    /// The waker of this thread's [`resume_loop`] while it waits.
    static RESUMER: Cell<Option<Waker>> = const { Cell::new(None) };
}

/// The waker a dormant connection leaves behind: it carries the connection's slab key (not a
/// pointer) and, when woken, queues it for this thread's [`resume_loop`]. No allocation.
///
/// Only this shard's thread wakes it: the reactor that holds it for read readiness runs on
/// this thread's runtime, and the writer slot is in the shard's own state. (Woken elsewhere,
/// it would queue the key on that thread, where no resumer runs.)
pub fn waker(key: ConnKey) -> Waker {
    // SAFETY: the vtable's functions never dereference the data "pointer", which is the key;
    // clone returns the same raw waker, and wake and drop free nothing. So every contract of
    // `RawWaker` (thread safety included: the data is a plain integer) holds.
    unsafe { Waker::from_raw(raw(key)) }
}

fn raw(key: ConnKey) -> RawWaker {
    RawWaker::new(key as *const (), &VTABLE)
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(
    |data| RawWaker::new(data, &VTABLE),
    |data| woken(data as ConnKey),
    |data| woken(data as ConnKey),
    |_| {},
);

fn woken(key: ConnKey) {
    WOKEN.with(|q| q.borrow_mut().push(key));
    if let Some(resumer) = RESUMER.take() {
        resumer.wake();
    }
}

/// Gives every woken dormant connection a task again. Runs for the shard's life, one per shard
/// thread.
pub async fn resume_loop(shard: ShardRef) {
    let mut keys = Vec::new();
    loop {
        std::future::poll_fn(|cx| {
            if WOKEN.with(|q| q.borrow().is_empty()) {
                RESUMER.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        WOKEN.with(|q| std::mem::swap(&mut *q.borrow_mut(), &mut keys));
        let mut s = shard.borrow_mut();
        for key in keys.drain(..) {
            // A key queued twice, or whose connection left meanwhile, finds no dormant socket.
            let Some(conn) = s.conns.get_mut(key) else {
                continue;
            };
            let Some(stream) = conn.dormant.take() else {
                continue;
            };
            conn.writer_waker = None;
            conn.doze = Doze::Awake;
            s.stats().dormant.dec();
            s.stats().resumes.inc();
            crate::rt::spawn(super::io::resume(shard.clone(), key, *stream));
        }
    }
}

/// Where a connection is on its way to dozing; the sweep moves it along, activity moves it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Doze {
    /// Its task runs (or it is not a WebSocket).
    #[default]
    Awake,
    /// A sweep found it quiet; any read or write loop batch since sets it back to `Awake`.
    Quiet,
    /// Still quiet at the next sweep: its task was woken to doze, and does at its next poll
    /// if it is at rest.
    Asked,
    /// Its read loop found it at rest and ended; its write loop ends at its next poll, then
    /// the task parks the socket (or, if something came meanwhile, starts both loops again).
    Dozing,
    /// Its task ended; the socket is in [`super::Conn::dormant`].
    Dormant,
}

impl Doze {
    /// After input was read or the write loop took frames: back to `Awake`, unless the read
    /// loop already ended to doze (its task then checks again before parking).
    pub fn on_activity(self) -> Doze {
        match self {
            Doze::Dozing | Doze::Dormant => self,
            Doze::Awake | Doze::Quiet | Doze::Asked => Doze::Awake,
        }
    }
}
