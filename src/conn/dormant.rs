//! Dormant WebSockets: a quiet connection gives up its task and its reactor registration, and
//! waits in its slab entry.
//!
//! A WebSocket's task (the read loop and the write loop, `conn::io`) and its socket's reactor
//! registration were the largest things an idle connection held: tokio's task cell, 512 bytes,
//! and its `ScheduledIo`, 256. Once a connection has been quiet for a full sweep period
//! (nothing read, nothing written by its write loop), the sweep asks it to doze: its task puts
//! the socket to sleep ([`TcpStream::sleep`]: out of the reactor, into the shard thread's epoll
//! set of sleeping sockets, which costs no user-space memory per socket), keeps it in the
//! connection's slab entry ([`Conn::dormant`], a 16-byte box), leaves a [`waker`] for the
//! connection in the write loop's slot ([`Conn::writer_waker`]), and ends. Lone frames still
//! reach a dormant connection through the shard's direct flush, which needs no task. What would
//! have woken the task wakes the connection instead: the socket becoming readable (input, a
//! close, EOF, our shutdown of it) reports the connection's key from the sleeping set, and a
//! stream of frames, a frame the socket buffer did not take, or a close wakes its waker, which
//! queues the key here. [`resume_loop`] then registers the socket with the reactor again and
//! spawns a new task for it.
//!
//! Only a connection at rest dozes (`conn::io::websocket` checks): open, nothing queued or in
//! flight, no codec (no partial message read), not discarding input. So the new task starts
//! from nothing but the socket.
//!
//! [`TcpStream::sleep`]: crate::rt::TcpStream::sleep
//! [`Conn::dormant`]: super::Conn::dormant
//! [`Conn::writer_waker`]: super::Conn::writer_waker

use std::cell::{Cell, RefCell};
use std::task::{Poll, RawWaker, RawWakerVTable, Waker};

use crate::router::table::ConnKey;
use crate::shard::ShardRef;

thread_local! {
    /// Keys of dormant connections whose waker was woken, for [`resume_loop`]. A dormant
    /// connection's waker sits in one place, its writer slot, which a wake empties, so this
    /// holds at most one key per connection.
    static WOKEN: RefCell<Vec<ConnKey>> = const { RefCell::new(Vec::new()) };
    /// The waker of this thread's [`resume_loop`] while it waits.
    static RESUMER: Cell<Option<Waker>> = const { Cell::new(None) };
}

/// The waker a dormant connection leaves behind: it carries the connection's slab key (not a
/// pointer) and, when woken, queues it for this thread's [`resume_loop`]. No allocation.
///
/// Only this shard's thread wakes it: the writer slot that holds it is in the shard's own
/// state. (Woken elsewhere, it would queue the key on that thread, where no resumer runs.)
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

/// Gives every woken dormant connection (its socket readable, or its waker woken) a task
/// again. Runs for the shard's life, one per shard thread. A connection whose socket cannot be
/// registered with the reactor again is closed, with a log line that names it.
pub async fn resume_loop(shard: ShardRef) {
    let mut keys = Vec::new();
    loop {
        std::future::poll_fn(|cx| {
            // Sockets that became readable, then wakers that were woken.
            let readable = crate::rt::poll_sleepers(cx, &mut keys).is_ready();
            let woken = WOKEN.with(|q| {
                let mut q = q.borrow_mut();
                let any = !q.is_empty();
                keys.append(&mut q);
                any
            });
            if readable || woken {
                Poll::Ready(())
            } else {
                RESUMER.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        let mut s = shard.borrow_mut();
        for key in keys.drain(..) {
            // A key queued twice, or whose connection left meanwhile, finds no dormant socket.
            let Some(conn) = s.conns.get_mut(key) else {
                continue;
            };
            let Some(sleeping) = conn.dormant.take() else {
                continue;
            };
            conn.writer_waker = None;
            conn.doze = Doze::Awake;
            s.stats().dormant.dec();
            match sleeping.wake() {
                Ok(stream) => {
                    s.stats().resumes.inc();
                    crate::rt::spawn(super::io::resume(shard.clone(), key, stream));
                }
                Err(e) => {
                    // The socket is closed: the connection ends here.
                    let peer = s.conns.get(key).map(|c| c.peer);
                    tracing::warn!(conn = key, peer = ?peer, error = %e, "cannot register a waking connection with the reactor; closed");
                    s.remove(key);
                }
            }
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
    /// Its task ended; the socket sleeps in [`super::Conn::dormant`].
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
