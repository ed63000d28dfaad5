//! The shard's thread: its runtime and the tasks that drive [`Shard`].
//!
//! Tasks on a shard thread:
//! - the accept loop (one listener per shard, `SO_REUSEPORT` spreads connections);
//! - the inbox loop: waits on the eventfd wake-up, then drains the hub's channel with `try_recv`
//!   in budgeted turns, so a burst never starves the connections' tasks;
//! - the sweep: pings, idle timeouts, closing deadlines, token expiry (4003), and retries of
//!   the hub backlog;
//! - one task per connection ([`crate::conn::io::serve`]).

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::Notify;

use super::{Shard, ShardRef};
use crate::config::Config;
use crate::conn::dormant::Doze;
use crate::conn::{ConnKind, ConnState};
use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::router::{ShardId, ShardMsg, UpstreamMsg};
use crate::rt::{self, Runtime, TcpListener, WakeReceiver};

/// Inbox messages handled before the inbox loop yields to other tasks.
const INBOX_BUDGET: usize = 64;

/// Everything a shard thread needs, built by [`crate::server`].
pub struct ShardSetup {
    /// The shard's id.
    pub id: ShardId,
    /// The configuration.
    pub config: Arc<Config>,
    /// This shard's listening sockets (bound with `SO_REUSEPORT`), one per listening
    /// address: the native listener first, then the routes' (see `Config::listeners`).
    pub listeners: Vec<std::net::TcpListener>,
    /// Hub → shard channel.
    pub inbox: Receiver<ShardMsg>,
    /// The wake-up paired with `inbox`.
    pub wake: WakeReceiver,
    /// Shard → hub channel.
    pub hub: Sender<UpstreamMsg>,
    /// All metrics.
    pub metrics: Arc<Metrics>,
    /// Set by the main thread to start graceful shutdown (followed by a wake-up).
    pub shutdown: Arc<AtomicBool>,
    /// Shard → replay source commands, when a route uses one.
    pub replay: Option<Sender<crate::source::replay::ReplayCmd>>,
    /// Each route's event-stream registry handle (parallel to `config.routes`).
    pub registries: Vec<Option<crate::store::registry::Registry>>,
    /// Every shard's inbox, indexed by shard id, for Engine.IO hand-offs.
    pub peers: Vec<crate::router::hub::ShardLink>,
    /// Each route's echo store (parallel to `config.routes`; socketio routes with `echoes_db`).
    pub echoes: Vec<Option<crate::store::echoes::EchoesHandle>>,
    /// The per-IP limits table, one for the process.
    pub per_ip: Arc<crate::limits::PerIp>,
}

/// Runs a shard on the current thread until graceful shutdown completes.
pub fn run(setup: ShardSetup, runtime: Runtime) -> io::Result<()> {
    let ShardSetup {
        id,
        config,
        listeners,
        inbox,
        wake,
        hub,
        metrics,
        shutdown,
        replay,
        registries,
        peers,
        echoes,
        per_ip,
    } = setup;
    crate::rt::set_read_size(config.read_buffer_bytes);
    runtime.block_on(async move {
        let mut wake = wake.into_listener()?;
        let mut state = Shard::new(id, config, hub, metrics);
        state.replays = super::replay::Replays::new(replay);
        state.registries = registries;
        state.peers = peers;
        state.echoes = echoes;
        state.per_ip = per_ip;
        state.eio_subscribe_routes();
        let shard = Rc::new(RefCell::new(state));
        let mut stops: Vec<Rc<Notify>> = Vec::with_capacity(listeners.len());
        for (i, listener) in listeners.into_iter().enumerate() {
            let stop = Rc::new(Notify::new());
            let index = u8::try_from(i).unwrap_or(u8::MAX);
            let listener = TcpListener::from_std(listener)?;
            rt::spawn(accept_loop(shard.clone(), listener, index, stop.clone()));
            stops.push(stop);
        }

        rt::spawn(sweep_loop(shard.clone()));
        rt::spawn(crate::conn::dormant::resume_loop(shard.clone()));
        let stalled = shard.borrow().config.debug_stall_shard == Some(usize::from(id.0));
        loop {
            wake.wait().await;
            if shutdown.load(Ordering::SeqCst) {
                break;
            }
            // Test hook (--debug-stall-shard): this shard never drains, so its inbox fills.
            if !stalled {
                drain_inbox(&shard, &inbox).await;
            }
        }
        graceful_shutdown(&shard, &stops).await;
        Ok(())
    })
}

async fn drain_inbox(shard: &ShardRef, inbox: &Receiver<ShardMsg>) {
    let mut handled = 0;
    while let Ok(msg) = inbox.try_recv() {
        match msg {
            ShardMsg::Deliver {
                target,
                frames,
                stamp,
            } => shard.borrow_mut().deliver(target, frames, stamp),
            ShardMsg::Replay { conn, event } => shard.borrow_mut().handle_replay(conn, event),
            ShardMsg::Read(reader) => {
                let (own, stalled) = {
                    let s = shard.borrow();
                    (
                        s.own_wake(),
                        s.config.debug_stall_shard == Some(usize::from(s.id.0)),
                    )
                };
                match own {
                    Some(wake) => rt::spawn(reader.start(OwnInbox {
                        shard: shard.clone(),
                        inbox: inbox.clone(),
                        wake,
                        stalled,
                    })),
                    None => tracing::error!(
                        ?reader,
                        "a shard without its own wake-up cannot read a source"
                    ),
                }
            }
            ShardMsg::Adopt {
                stream,
                pending,
                listener,
                peer,
            } => crate::conn::io::adopt(shard, stream, pending, listener, peer),
            ShardMsg::DeliverTo {
                conn,
                frame,
                releases_held,
                watch,
            } => {
                let mut s = shard.borrow_mut();
                // A watcher's cached value is only for a watcher that has had no frame of
                // that topic yet (a fresher one may have overtaken it).
                if watch.is_none_or(|t| s.topics.take_awaiting(t, conn.key)) {
                    s.deliver_snapshot(conn, frame, releases_held);
                }
            }
        }
        handled += 1;
        if handled % INBOX_BUDGET == 0 {
            {
                let mut s = shard.borrow_mut();
                s.cork = true;
                s.flush_turn(false);
            }
            tokio::task::yield_now().await;
        }
    }
    let mut s = shard.borrow_mut();
    // A turn that found several messages means events are arriving faster than one per wake:
    // writers then cork (wait one scheduler round for more frames). A lone event goes out at
    // once.
    s.cork = handled > 1;
    s.flush_turn(true);
    s.flush_backlog();
    s.flush_replay();
}

/// A shard's own inbox, for a task on the shard that routes events itself ([`OwnInbox::route`]).
pub struct OwnInbox {
    shard: ShardRef,
    inbox: Receiver<ShardMsg>,
    wake: rt::WakeHandle,
    /// The `--debug-stall-shard` test hook holds this shard: its inbox is never drained.
    stalled: bool,
}

impl OwnInbox {
    /// Runs `route`, which queues messages on the shards' inboxes (this one's among them) and
    /// wakes the shards it queued for. For a `lone` event (the only one its read brought), this
    /// shard's share is then delivered at once, in this task: no eventfd write, no wake-up of
    /// the inbox loop. The wake-up is held meanwhile, so a sender on another thread does not
    /// write the eventfd either; once released, the inbox is drained once more for what such a
    /// sender queued. When a wake-up was already pending, the inbox loop delivers instead, as
    /// for any sender.
    ///
    /// Several events in one read mean they arrive faster than one a turn: they go through
    /// the eventfd and the inbox loop like any other sender's, so that the loop takes
    /// everything queued meanwhile in one drain and corks the writers (a saturated shard's
    /// batching; measured in BENCHMARKS, "Redis read on the shard").
    pub async fn route<R>(&self, lone: bool, route: impl FnOnce() -> R) -> R {
        if self.stalled || !lone {
            return route();
        }
        let pending = self.wake.hold();
        let routed = route();
        if !pending {
            drain_inbox(&self.shard, &self.inbox).await;
            self.wake.release();
            if !self.inbox.is_empty() {
                drain_inbox(&self.shard, &self.inbox).await;
            }
        }
        routed
    }
}

async fn accept_loop(shard: ShardRef, listener: TcpListener, index: u8, stop: Rc<Notify>) {
    let mut reserve = Reserve::open();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.notified() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let mut s = shard.borrow_mut();
                if s.conns.len() >= s.max_conns {
                    s.stats().rejected_connections.inc();
                    continue;
                }
                stream.set_nodelay();
                let key = s.insert_conn(stream.handle(), index, Instant::now());
                s.conns[key].peer = peer;
                drop(s);
                rt::spawn(crate::conn::io::serve(shard.clone(), key, stream));
            }
            Err(e) => accept_failed(&shard, &listener, &e, &mut reserve).await,
        }
    }
}

/// A descriptor kept open to be closed at the descriptor limit, so that one waiting connection
/// can be accepted and turned away cleanly (`503`) instead of waiting in the backlog.
struct Reserve {
    file: Option<std::fs::File>,
    /// When the limit was last logged (one line a second at most).
    logged: Option<Instant>,
}

impl Reserve {
    fn open() -> Reserve {
        Reserve {
            file: std::fs::File::open("/dev/null").ok(),
            logged: None,
        }
    }
}

/// An accept failed. At the descriptor limit (`EMFILE`, `ENFILE`): close the reserve, turn the
/// waiting connection away with 503 (`ringcast_fd_limit_refusals_total`), reopen the reserve.
/// Any other error, or no reserve: back off briefly instead of spinning. Logged once a second.
async fn accept_failed(
    shard: &ShardRef,
    listener: &TcpListener,
    e: &std::io::Error,
    reserve: &mut Reserve,
) {
    let at_limit = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    if reserve
        .logged
        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
    {
        reserve.logged = Some(Instant::now());
        if at_limit {
            tracing::warn!(error = %e, "at the file descriptor limit: new connections get 503 until descriptors free up");
        } else {
            tracing::warn!(error = %e, "accept failed");
        }
    }
    if at_limit && reserve.file.take().is_some() {
        let shed = listener.shed_one();
        reserve.file = std::fs::File::open("/dev/null").ok();
        if shed {
            shard.borrow().stats().fd_limit_refusals.inc();
            return;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Period of the sweep: a quarter of the shortest interval or timeout it enforces, at most once
/// a second. Every such knob is at least [`crate::config::MIN_HEARTBEAT`] (100 ms), so the
/// period is at least 25 ms and a deadline is missed by at most a quarter of itself.
pub fn sweep_period(config: &Config) -> Duration {
    let shortest = config
        .routes
        .iter()
        .map(|r| r.ping_interval.min(r.pong_timeout))
        .fold(
            config
                .ping_interval
                .min(config.pong_timeout)
                .min(config.idle_timeout),
            Duration::min,
        );
    (shortest / 4).min(Duration::from_secs(1))
}

async fn sweep_loop(shard: ShardRef) {
    let period = sweep_period(&shard.borrow().config);
    loop {
        tokio::time::sleep(period).await;
        sweep(&mut shard.borrow_mut(), Instant::now());
    }
}

/// Pings, pong timeouts, HTTP idle timeouts and closing deadlines for every connection.
///
/// The heartbeat rule (PROTOCOL.md, "Liveness"): a WebSocket is pinged every ping interval and
/// closed with 4001 once the oldest ping it has not answered is `pong_timeout` old. A client that
/// answers pings may stay silent for ever. `idle-timeout` applies to the HTTP phase only.
///
/// It also returns the buffers of open WebSockets that are quiet at that moment (nothing
/// queued or in flight; see [`crate::conn::Conn::release_idle_buffers`]): a connection that was
/// busy keeps them at most one sweep period after it went quiet. For [`TRIM_FOR`] after a sweep
/// that returned some, each sweep also asks the allocator to give freed memory back to the OS
/// ([`return_freed_memory`]).
fn sweep(s: &mut Shard, now: Instant) {
    s.flush_backlog();
    s.flush_replay();
    let idle = s.config.idle_timeout;
    let tick = crate::conn::Tick::at(now);
    let mut timed_out = Vec::new();
    let mut ping_keys = Vec::new();
    let Shard {
        conns,
        config,
        metrics,
        id,
        ..
    } = &mut *s;
    let stats = &metrics.shards[usize::from(id.0)];
    let mut released = 0usize;
    for (key, conn) in conns.iter_mut() {
        match conn.state {
            ConnState::Closing { deadline } if tick.reached(deadline) => conn.socket.shutdown(),
            ConnState::Closing { .. } => {}
            // A client that never finishes its request (or idles on keep-alive) is cut off.
            // Engine.IO connections: the session runs their heartbeat (`eio_tick` below).
            ConnState::Open if conn.kind.is_eio() => {}
            ConnState::Open if conn.kind == ConnKind::Http => {
                if tick.since(conn.last_seen) > idle {
                    stats.idle_closes.inc();
                    conn.socket.shutdown();
                }
            }
            ConnState::Open => {
                released += usize::from(conn.release_idle_buffers());
                // Quiet for a whole sweep period: its task is asked to doze (`conn::dormant`).
                match conn.doze {
                    Doze::Awake if conn.writer_waker.is_some() && conn.outbox.is_empty() => {
                        conn.doze = Doze::Quiet;
                    }
                    Doze::Quiet => {
                        conn.doze = Doze::Asked;
                        conn.wake_writer();
                        released += 1;
                    }
                    _ => {}
                }
                let beat = super::beat_of(config, conn.kind);
                if conn
                    .unanswered_ping
                    .is_some_and(|sent| tick.since(sent) >= beat.pong_timeout)
                {
                    timed_out.push(key);
                } else if tick.since(conn.last_ping) >= beat.ping_interval {
                    ping_keys.push(key);
                }
            }
        }
    }
    for key in ping_keys {
        s.ping(key, now);
    }
    s.flush_turn(true);
    for key in timed_out {
        s.stats().pong_timeout_closes.inc();
        s.close(key, CloseCode::PongTimeout, super::CLOSE_GRACE);
    }
    s.expire_tokens(now);
    s.eio_tick(now);
    if released > 0 {
        s.trim_until = Some(now + TRIM_FOR);
    }
    if s.trim_until.is_some_and(|until| now < until) {
        return_freed_memory();
    } else {
        s.trim_until = None;
    }
}

/// How long after a sweep that returned connection buffers the sweeps keep returning freed
/// memory to the OS: longer than mimalloc's purge delay (1 s in v3), which a page must have
/// sat free for before a non-forced collection purges it.
const TRIM_FOR: Duration = Duration::from_secs(3);

/// Asks the allocator to give memory freed on this process back to the OS now (mimalloc's
/// `mi_collect(false)`: empty pages whose purge delay has passed are decommitted).
///
/// mimalloc purges freed pages only from its own allocation and free paths, so a shard that has
/// gone quiet after a burst (every connection written to at once: thousands of in-flight
/// `writev` states) kept that burst's pages resident for as long as it stayed quiet: measured
/// 2026-12-04, about 500 B per connection on `idle-used-10k` (`MIMALLOC_PURGE_DELAY=0` took
/// RSS per used connection from 3,486 to 2,911 B). Harmless under another allocator (tests):
/// mimalloc then has almost nothing to collect.
fn return_freed_memory() {
    // The binary's global allocator; linked in the library too so that this symbol resolves.
    extern crate mimalloc as _;
    unsafe extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { mi_collect(false) }
}

/// Stops accepting, sends close 1001 to every client, and waits for them to flush and leave,
/// at most `shutdown-timeout`; then shuts down whatever is left.
async fn graceful_shutdown(shard: &ShardRef, stop_accept: &[Rc<Notify>]) {
    for stop in stop_accept {
        stop.notify_one();
    }
    let (deadline, drained) = {
        let mut s = shard.borrow_mut();
        s.shutting_down = true;
        s.eio_close_all(Instant::now());
        let timeout = s.config.shutdown_timeout;
        let keys: Vec<usize> = s.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match s.conns[key].kind {
                ConnKind::Http => s.conns[key].socket.shutdown(),
                // Its task answers the parked GET with the session's `1`, then the deadline
                // below ends the connection.
                ConnKind::EioGet { .. } => {}
                _ => s.close(key, CloseCode::GoingAway, timeout),
            }
        }
        (tokio::time::Instant::now() + timeout, s.drained.clone())
    };
    if !shard.borrow().conns.is_empty() {
        tokio::select! {
            _ = drained.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    let left: Vec<_> = shard.borrow().conns.iter().map(|(_, c)| c.socket).collect();
    if !left.is_empty() {
        for socket in &left {
            socket.shutdown();
        }
        let _ = tokio::time::timeout(Duration::from_millis(300), drained.notified()).await;
    }
}
