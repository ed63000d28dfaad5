//! The WebSocket clients: connect (optionally from a spread source address), subscribe, wait
//! for the ack, then read events until told to stop, timing each one.
//!
//! Each client is one tokio task. A semaphore bounds how many are in their connect phase (TCP
//! connect, WebSocket handshake, subscribe ack) at once. Slow clients stop after the ack: they
//! keep the socket open and never read it again (when the run stops they read what is left, for
//! a bounded time, to see whether the gateway closed them and with which code). Readers keep
//! per-client counts and record each in-window event's latency into the shared [`Recorder`].
//!
//! **Churn**: a reader kicked through its [`Notify`] in `Live::churn` drops its connection and
//! connects and subscribes again (through the same semaphore). From its first churn on it is no
//! longer a *stayer*: its events count as received but not as delivered (a publish racing its
//! new subscribe may be missed, see `docs/PROTOCOL.md`), and it leaves its channel's reader count,
//! so loss is accounted over the clients that stayed connected the whole run.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpSocket;
use tokio::sync::{Notify, Semaphore, watch};

use crate::latency::Recorder;
use crate::payload::{now_ns, parse_ts};
use crate::settings::SubscribeMode;
use crate::sys;
use crate::ws::{Frame, RawWs};

/// How long one client may take to connect, upgrade and get its subscribe ack.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// When the run stops, how long a slow client reads what is left looking for the gateway's close.
const SLOW_DRAIN: Duration = Duration::from_secs(2);

/// What every client shares, fixed before the first connects.
pub struct ClientSetup {
    pub addr: SocketAddr,
    /// `host:port`.
    pub host: String,
    /// WebSocket path, without a query.
    pub path: String,
    pub subscribe: SubscribeMode,
    /// Channel names, `ch0..chN-1`.
    pub channels: Vec<String>,
    /// `SO_RCVBUF` of slow clients' sockets (`--slow-rcvbuf`).
    pub slow_rcvbuf: Option<usize>,
}

/// What clients report while they run.
pub struct Live {
    pub connected: AtomicUsize,
    pub failed: AtomicUsize,
    /// Nanoseconds from `connect_start` to the last successful connect.
    pub last_connect_ns: AtomicU64,
    pub connect_start: Instant,
    /// First connect error seen, for the report.
    pub first_error: Mutex<Option<String>>,
    /// Events with `t` inside the window, over all clients.
    pub delivered: AtomicU64,
    /// Every event received, window or not (for the progress display).
    pub received: AtomicU64,
    /// Clients that have received at least one event (`--touch` waits on it).
    pub with_event: AtomicUsize,
    /// Receive time (ns since the epoch) of the latest in-window event.
    pub last_in_window_ns: AtomicU64,
    /// Measured window `[start, end)` in ns since the epoch, by publish time `t`.
    /// `u64::MAX` until the run sets them.
    pub window_start_ns: AtomicU64,
    pub window_end_ns: AtomicU64,
    /// Per channel: connected clients that read (not slow) and have not churned.
    pub readers: Vec<AtomicU64>,
    pub latency: Recorder,
    /// Connections open right now (slow and churned clients included).
    pub open: AtomicUsize,
    /// One churn kick per client (empty without churn).
    pub churn: Vec<Notify>,
    /// Reconnects after a churn that got their subscribe ack, and those that failed.
    pub reconnects: AtomicU64,
    pub reconnect_failed: AtomicU64,
}

impl Live {
    /// `churn_clients`: how many clients can be kicked (0 without churn).
    pub fn new(channels: usize, latency_shards: usize, churn_clients: usize) -> Live {
        Live {
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            last_connect_ns: AtomicU64::new(0),
            connect_start: Instant::now(),
            first_error: Mutex::new(None),
            delivered: AtomicU64::new(0),
            received: AtomicU64::new(0),
            with_event: AtomicUsize::new(0),
            last_in_window_ns: AtomicU64::new(0),
            window_start_ns: AtomicU64::new(u64::MAX),
            window_end_ns: AtomicU64::new(u64::MAX),
            readers: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            latency: Recorder::new(latency_shards),
            open: AtomicUsize::new(0),
            churn: (0..churn_clients).map(|_| Notify::new()).collect(),
            reconnects: AtomicU64::new(0),
            reconnect_failed: AtomicU64::new(0),
        }
    }

    fn fail(&self, err: anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("{err:#}"));
        }
    }
}

/// One client's plan.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub id: usize,
    pub channel: usize,
    pub slow: bool,
    pub source_ip: Option<std::net::Ipv4Addr>,
}

/// One client's outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub channel: usize,
    pub slow: bool,
    pub connected: bool,
    /// The gateway closed the connection (or it failed) before the run ended.
    pub dropped: bool,
    /// It was churned at least once (so it is not a stayer).
    pub churned: bool,
    /// The close code the gateway sent, if it sent one (4000: slow consumer).
    pub close_code: Option<u16>,
    /// Events with `t` inside the window.
    pub delivered: u64,
    /// Sequence numbers skipped (a jump from `s` to `s + k + 1` counts `k`), all events.
    pub gaps: u64,
    /// Events whose `s` was not above the previous one (repeats or reordering).
    pub out_of_order: u64,
    /// Text messages that were not events (no `"t":`), and binary messages.
    pub other: u64,
    /// Events received, window or not.
    pub events: u64,
}

/// Runs one client until `stop` turns true.
pub async fn run(
    plan: Plan,
    setup: Arc<ClientSetup>,
    live: Arc<Live>,
    gate: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut out = Outcome {
        channel: plan.channel,
        slow: plan.slow,
        ..Outcome::default()
    };
    let Some(mut ws) = connect_bounded(&plan, &setup, &gate)
        .await
        .map_err(|e| live.fail(e))
        .ok()
    else {
        return out;
    };
    out.connected = true;
    live.open.fetch_add(1, Ordering::Relaxed);
    if !plan.slow {
        live.readers[plan.channel].fetch_add(1, Ordering::Relaxed);
    }
    live.connected.fetch_add(1, Ordering::Relaxed);
    let at = live.connect_start.elapsed().as_nanos() as u64;
    live.last_connect_ns.fetch_max(at, Ordering::Relaxed);

    if plan.slow {
        // Keep the socket open, never read it; at the end, see whether the gateway closed it.
        let _ = stop.wait_for(|&s| s).await;
        drain_slow(&mut ws, &mut out).await;
        drop(ws);
        live.open.fetch_sub(1, Ordering::Relaxed);
        return out;
    }
    loop {
        let kicked = read_events(plan, &mut ws, &live, &mut stop, &mut out).await;
        drop(ws);
        live.open.fetch_sub(1, Ordering::Relaxed);
        if !kicked {
            return out;
        }
        if !out.churned {
            // No longer a stayer: it leaves the expected count, so what it delivered so far
            // leaves the delivered count (else it would hide a stayer's loss).
            out.churned = true;
            live.readers[plan.channel].fetch_sub(1, Ordering::Relaxed);
            live.delivered.fetch_sub(out.delivered, Ordering::Relaxed);
            out.delivered = 0;
        }
        let again = tokio::select! {
            _ = stop.wait_for(|&s| s) => return out,
            r = connect_bounded(&plan, &setup, &gate) => r,
        };
        match again {
            Ok(new) => {
                live.reconnects.fetch_add(1, Ordering::Relaxed);
                live.open.fetch_add(1, Ordering::Relaxed);
                ws = new;
            }
            Err(_) => {
                live.reconnect_failed.fetch_add(1, Ordering::Relaxed);
                return out;
            }
        }
    }
}

/// [`connect`] inside the connect semaphore and [`CONNECT_TIMEOUT`].
async fn connect_bounded(
    plan: &Plan,
    setup: &ClientSetup,
    gate: &Semaphore,
) -> anyhow::Result<RawWs> {
    let _permit = gate.acquire().await;
    match tokio::time::timeout(CONNECT_TIMEOUT, connect(plan, setup)).await {
        Ok(r) => r,
        Err(_) => bail!("no subscribe ack within {CONNECT_TIMEOUT:?}"),
    }
}

/// Reads what a slow client left unread, for at most [`SLOW_DRAIN`] and until a second of
/// silence: a close frame or the end of the stream means the gateway closed it.
async fn drain_slow(ws: &mut RawWs, out: &mut Outcome) {
    let deadline = tokio::time::Instant::now() + SLOW_DRAIN;
    loop {
        let quiet = tokio::time::Instant::now() + Duration::from_secs(1);
        match tokio::time::timeout_at(deadline.min(quiet), ws.next()).await {
            Err(_) => return,
            Ok(Ok(Some(Frame::Close(code)))) => {
                out.close_code = code;
                out.dropped = true;
                return;
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) | Ok(Err(_)) => {
                out.dropped = true;
                return;
            }
        }
    }
}

/// Reads events until the run stops or the connection ends (`false`), or until the client is
/// kicked for churn (`true`).
async fn read_events(
    plan: Plan,
    ws: &mut RawWs,
    live: &Live,
    stop: &mut watch::Receiver<bool>,
    out: &mut Outcome,
) -> bool {
    let mut next_seq: Option<u64> = None;
    // One stop future for the whole loop: building and registering a fresh `wait_for` per
    // message cost about a fifth of this thread's CPU (perf, fanout-throughput), which made
    // the load test, not the gateway, the bottleneck. The churn kick likewise.
    let stopped = stop.wait_for(|&s| s);
    tokio::pin!(stopped);
    let kick = live.churn.get(plan.id);
    let kicked = async {
        match kick {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(kicked);
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut stopped => return false,
            _ = &mut kicked => return true,
            msg = ws.next() => msg,
        };
        match msg {
            Ok(Some(Frame::Text)) => {}
            Ok(Some(Frame::Other)) => {
                out.other += 1;
                continue;
            }
            Ok(Some(Frame::Close(code))) => {
                out.close_code = code;
                continue; // answered; the stream ends next
            }
            Err(_) | Ok(None) => {
                out.dropped = true;
                return false;
            }
        }
        let now = now_ns();
        live.received.fetch_add(1, Ordering::Relaxed);
        let Some((t, s)) = parse_ts(ws.payload()) else {
            out.other += 1;
            continue;
        };
        out.events += 1;
        if out.events == 1 {
            live.with_event.fetch_add(1, Ordering::Relaxed);
        }
        match next_seq {
            Some(n) if s < n => out.out_of_order += 1,
            Some(n) => out.gaps += s - n,
            None => {}
        }
        next_seq = Some(next_seq.map_or(s + 1, |n| n.max(s + 1)));
        if out.churned {
            continue;
        }
        let start = live.window_start_ns.load(Ordering::Relaxed);
        let end = live.window_end_ns.load(Ordering::Relaxed);
        if t >= start && t < end {
            out.delivered += 1;
            live.delivered.fetch_add(1, Ordering::Relaxed);
            live.last_in_window_ns.fetch_max(now, Ordering::Relaxed);
            live.latency.record(plan.id, now.saturating_sub(t) / 1_000);
        }
    }
}

/// TCP connect (bound to `plan.source_ip` if set), WebSocket upgrade, subscribe, ack.
async fn connect(plan: &Plan, setup: &ClientSetup) -> anyhow::Result<RawWs> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .context("socket")?;
    socket.set_nonblocking(true)?;
    if plan.slow
        && let Some(bytes) = setup.slow_rcvbuf
    {
        socket
            .set_recv_buffer_size(bytes)
            .context("SO_RCVBUF for a slow client")?;
    }
    if let Some(ip) = plan.source_ip {
        sys::set_bind_address_no_port(socket.as_raw_fd()).context("IP_BIND_ADDRESS_NO_PORT")?;
        socket
            .bind(&SocketAddr::new(ip.into(), 0).into())
            .with_context(|| format!("binding source address {ip}"))?;
    }
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    let stream = socket
        .connect(setup.addr)
        .await
        .with_context(|| format!("connecting to {}", setup.addr))?;
    stream.set_nodelay(true)?;

    let channel = &setup.channels[plan.channel];
    let path = match setup.subscribe {
        SubscribeMode::Url => format!("{}?subscribe={channel}", setup.path),
        SubscribeMode::Command => setup.path.clone(),
    };
    let mut ws = RawWs::handshake(stream, &setup.host, &path)
        .await
        .context("WebSocket handshake")?;
    if setup.subscribe == SubscribeMode::Command {
        let cmd = format!("{{\"op\":\"subscribe\",\"channel\":\"{channel}\",\"id\":1}}");
        ws.send_text(cmd.as_bytes())
            .await
            .context("sending subscribe")?;
    }
    loop {
        match ws.next().await.context("waiting for the subscribe ack")? {
            Some(Frame::Text) => {
                let text = ws.payload();
                if contains(text, b"\"op\":\"subscribed\"") {
                    return Ok(ws);
                }
                if contains(text, b"\"op\":\"error\"") {
                    bail!("subscribe refused: {}", String::from_utf8_lossy(text));
                }
            }
            Some(Frame::Close(code)) => bail!("closed before the ack: {code:?}"),
            Some(Frame::Other) => {}
            None => bail!("closed before the subscribe ack"),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
