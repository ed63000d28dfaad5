//! One Socket.IO v5 client over the Engine.IO v4 websocket transport, as a browser started
//! with `transports: ['websocket']` (the SuperDARN page's documented client) behaves: open
//! `/socket.io/?EIO=4&transport=websocket`, read the open packet `0{…}`, send `40` (connect
//! to the default namespace), read `40{"sid":…}`, then read events, answering each ping `2`
//! with a pong `3`. No Origin header is sent (python-socketio and ringcast both accept that).
//!
//! Events are `42["<site>",{"t":…,"s":…,…}]`: the reader finds the stamp without a JSON
//! parser ([`crate::payload::parse_ts`]), records the latency into the shared histogram and
//! checks the sequence (each client must see 0, 1, 2, … in order).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpSocket;
use tokio::sync::watch;

use crate::latency::Recorder;
use crate::payload::{now_ns, parse_ts};
use crate::sys;
use crate::ws::{Frame, RawWs};

/// How long one client may take from the TCP connect to the namespace reply `40{…}`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What every client shares: where to connect and the live counters.
pub struct Shared {
    pub addr: SocketAddr,
    /// `host:port` for the `Host` header.
    pub host: String,
    /// The Engine.IO path, e.g. `/socket.io/`.
    pub path: String,
    /// Events the publisher sends (sequence numbers `0..events`).
    pub events: u64,
    pub connected: AtomicUsize,
    pub failed: AtomicUsize,
    pub first_error: Mutex<Option<String>>,
    /// Events with a sequence number below `events`, over all clients.
    pub delivered: AtomicU64,
    /// Receive time (ns since the epoch) of the latest delivery.
    pub last_delivery_ns: AtomicU64,
    /// Events the publisher has written, and when it wrote the last (ns since the epoch).
    pub published: AtomicU64,
    pub last_send_ns: AtomicU64,
    /// Clients whose socket closed (or failed) after they connected.
    pub dropped: AtomicUsize,
    pub latency: Recorder,
}

impl Shared {
    fn fail(&self, err: anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("{err:#}"));
        }
    }
}

/// One client's counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub connected: bool,
    pub delivered: u64,
    /// Events whose sequence number was below one already seen (late or repeated).
    pub out_of_order: u64,
    /// Pings answered.
    pub pongs: u64,
    /// Frames that were neither events, pings nor the connect packets.
    pub other: u64,
    /// The socket closed (or failed) before the run ended.
    pub dropped: bool,
    /// The close code, when the server sent a close frame.
    pub close_code: Option<u16>,
}

/// Runs client `id` until `stop` turns true.
pub async fn run(id: usize, shared: &Shared, mut stop: watch::Receiver<bool>) -> Outcome {
    let mut out = Outcome::default();
    let mut ws = match tokio::time::timeout(CONNECT_TIMEOUT, connect(id, shared)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            shared.fail(e);
            return out;
        }
        Err(_) => {
            shared.fail(anyhow::anyhow!("not connected within {CONNECT_TIMEOUT:?}"));
            return out;
        }
    };
    out.connected = true;
    shared.connected.fetch_add(1, Ordering::Relaxed);
    read_events(id, &mut ws, shared, &mut stop, &mut out).await;
    if out.dropped {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
    }
    out
}

async fn read_events(
    id: usize,
    ws: &mut RawWs,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    out: &mut Outcome,
) {
    let mut next_seq = 0u64;
    let stopped = stop.wait_for(|&s| s);
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut stopped => return,
            f = ws.next() => f,
        };
        match frame {
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
                return;
            }
        }
        let now = now_ns();
        let p = ws.payload();
        if p == b"2" {
            out.pongs += 1;
            if ws.send_text(b"3").await.is_err() {
                out.dropped = true;
                return;
            }
            continue;
        }
        let Some((t, s)) = p.starts_with(b"42[").then(|| parse_ts(p)).flatten() else {
            out.other += 1;
            continue;
        };
        if s < next_seq {
            out.out_of_order += 1;
        }
        next_seq = next_seq.max(s + 1);
        if s < shared.events {
            out.delivered += 1;
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            shared.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
            shared.latency.record(id, now.saturating_sub(t) / 1_000);
        }
    }
}

/// TCP connect, WebSocket upgrade, open packet, namespace connect and its reply.
async fn connect(id: usize, shared: &Shared) -> anyhow::Result<RawWs> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .context("socket")?;
    socket.set_nonblocking(true)?;
    if let Some(ip) = sys::source_ip(id, shared.addr.ip()) {
        sys::set_bind_address_no_port(socket.as_raw_fd()).context("IP_BIND_ADDRESS_NO_PORT")?;
        socket
            .bind(&SocketAddr::new(ip.into(), 0).into())
            .with_context(|| format!("binding source address {ip}"))?;
    }
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    let stream = socket
        .connect(shared.addr)
        .await
        .with_context(|| format!("connecting to {}", shared.addr))?;
    stream.set_nodelay(true)?;
    let path = format!("{}?EIO=4&transport=websocket", shared.path);
    let mut ws = RawWs::handshake(stream, &shared.host, &path)
        .await
        .context("WebSocket handshake")?;
    let open = next_text(&mut ws)
        .await
        .context("waiting for the open packet")?;
    if !open.starts_with(b"0{") {
        bail!("expected the open packet 0{{…}}, got {}", lossy(&open));
    }
    ws.send_text(b"40").await.context("sending 40")?;
    loop {
        let p = next_text(&mut ws)
            .await
            .context("waiting for the namespace reply 40{…}")?;
        if p.starts_with(b"40") {
            return Ok(ws);
        }
        if p == b"2" {
            ws.send_text(b"3").await?;
            continue;
        }
        bail!("expected 40{{\"sid\":…}}, got {}", lossy(&p));
    }
}

/// The next text frame's payload (other frames skipped); an error on close or EOF.
async fn next_text(ws: &mut RawWs) -> anyhow::Result<Vec<u8>> {
    loop {
        match ws.next().await? {
            Some(Frame::Text) => return Ok(ws.payload().to_vec()),
            Some(Frame::Other) => {}
            Some(Frame::Close(code)) => bail!("closed ({code:?})"),
            None => bail!("connection closed"),
        }
    }
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(&p[..p.len().min(120)]).into_owned()
}
