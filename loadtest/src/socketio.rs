//! The `socketio` subcommand (issue 12): one radar record broadcast to N Socket.IO clients, as
//! the SuperDARN real-time server does it, against ringcast (`--preset superdarn`) or the
//! original's stack (python-socketio under eventlet), measured the same way.
//!
//! 1. Connect `--clients` N websocket Socket.IO clients (`socketio_client.rs`) in batches of
//!    `--batch`, each batch complete (connected or failed) before the next starts; then wait
//!    until the server's `/metrics` (`--metrics`) counts at least as many Engine.IO sessions
//!    as connected, and `--settle-s` more for the server to go quiet.
//! 2. Sample the server (`--server-pid`: utime + stime from `/proc/PID/stat`, and per thread
//!    from `schedstat`), the load test itself and the host's CPU pressure.
//! 3. One publisher connection sends `--events` M `POST` requests to `--publish`, body
//!    `{"channel":"<channel>","data":<event>}`, at `--rate` events a second (event `k` due
//!    `k / rate` after the first; replies are read on their own task, so a slow server does
//!    not slow the schedule). Each event is one fitacf record of `nrang` 75
//!    (`radar_payload.rs`) stamped with its send time and sequence number.
//! 4. The interval ends when every connected client has every event, or `--drain-s` after
//!    the last send, or when every client has dropped. Sample again; the report gives
//!    delivered, missing and out-of-order events, latency percentiles, the server's CPU per
//!    delivered packet and the load test's own CPU.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::ess::RssWatch;
use crate::latency::Recorder;
use crate::payload::now_ns;
use crate::radar_payload;
use crate::scrape::{self, Counters};
use crate::socketio_client::{self, Outcome, Shared};
use crate::socketio_report::{Reading, Report};
use crate::url::Url;
use crate::wire;

/// How long to wait for the server's session count to reach the connected clients.
const SESSIONS_WAIT: Duration = Duration::from_secs(60);

/// Flags of `ringcast-loadtest socketio`.
#[derive(clap::Args, Debug)]
pub struct SocketIoArgs {
    /// The Socket.IO server: `ws://IP:PORT[/path/]` (path default `/socket.io/`).
    #[arg(long)]
    pub target: String,
    /// Where events are published: `http://IP:PORT/api/publish` (ringcast's native listener,
    /// or the Python peer's route of the same name).
    #[arg(long)]
    pub publish: String,
    /// `http://IP:PORT` serving `GET /metrics` with the open sessions
    /// (`ringcast_eio_sessions` or `eio_sessions`); without it the clients' own count is used.
    #[arg(long)]
    pub metrics: Option<String>,
    /// The server's pid: CPU time (total and per thread) and RSS from `/proc/PID`.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// A name for the server in the report (`ringcast`, `python-socketio`, …).
    #[arg(long, default_value = "server")]
    pub label: String,
    #[arg(long, default_value_t = 1_000)]
    pub clients: usize,
    /// Clients connecting at once; each batch completes before the next starts.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Events published.
    #[arg(long, default_value_t = 200)]
    pub events: u64,
    /// Events a second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// The event's name (the radar's site code).
    #[arg(long, default_value = "sas")]
    pub channel: String,
    /// Echoes in the record (gates with data, out of 75).
    #[arg(long, default_value_t = 15)]
    pub echoes: usize,
    /// Seconds to wait after all clients connected before publishing.
    #[arg(long, default_value_t = 2.0)]
    pub settle_s: f64,
    /// Seconds to wait after the last send for the last deliveries.
    #[arg(long, default_value_t = 30.0)]
    pub drain_s: f64,
    /// Tokio worker threads of the load test.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Print one JSON line instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs the `socketio` subcommand and prints its report.
pub fn main(args: SocketIoArgs) -> anyhow::Result<()> {
    let nofile = crate::sys::raise_nofile_limit()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("loadtest-worker")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = rt.block_on(execute(&args, nofile))?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.human());
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

async fn execute(args: &SocketIoArgs, nofile: u64) -> anyhow::Result<Report> {
    let target = Url::parse(&args.target)?;
    let addr = resolve(&target).await?;
    let path = match target.path.as_str() {
        "/" => "/socket.io/".to_owned(),
        p => p.to_owned(),
    };
    let shared = Arc::new(Shared {
        addr,
        host: format!("{}:{}", target.host, addr.port()),
        path,
        events: args.events,
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        delivered: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        published: AtomicU64::new(0),
        last_send_ns: AtomicU64::new(0),
        dropped: AtomicUsize::new(0),
        latency: Recorder::new(16),
    });
    let body = radar_payload::record_body(&args.channel, args.echoes);
    let mut report = Report::new(args, nofile, &body);

    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let clients = connect_all(args, &shared, &stop_rx).await;
    report.set_connects(&shared, t0.elapsed().as_secs_f64());
    let connected = shared.connected.load(Ordering::Relaxed);
    report.server_sessions = wait_sessions(args, connected).await;
    tokio::time::sleep(Duration::from_secs_f64(args.settle_s)).await;

    let counters_before = scrape_counters(args).await;
    let reading = Reading::start(args.server_pid, RssWatch::start(args.server_pid))?;
    let publish = Url::parse(&args.publish)?;
    let publisher = tokio::spawn(publish_events(
        publish,
        args.channel.clone(),
        body,
        args.events,
        args.rate,
        shared.clone(),
    ));
    let expected = connected as u64 * args.events;
    wait_deliveries(args, &shared, &publisher, expected).await;
    let measured = reading.finish()?;
    report.dropped_in_interval = shared.dropped.load(Ordering::Relaxed);
    let counters_after = scrape_counters(args).await;
    let published = match publisher.await {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("publisher task: {e}")),
    };
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::with_capacity(clients.len());
    for c in clients {
        if let Ok(o) = c.await {
            outcomes.push(o);
        }
    }
    report.set_published(published);
    report.set_outcomes(&outcomes, &shared);
    report.set_measured(measured, &shared);
    if let (Some(b), Some(a)) = (counters_before, counters_after) {
        report.set_counters(&a.since(&b));
    }
    report.finish();
    Ok(report)
}

async fn resolve(url: &Url) -> anyhow::Result<SocketAddr> {
    let port = url.port.unwrap_or(80);
    tokio::net::lookup_host((url.host.as_str(), port))
        .await?
        .next()
        .with_context(|| format!("{}:{port} does not resolve", url.host))
}

/// Starts the clients batch by batch; returns their tasks once every batch completed.
async fn connect_all(
    args: &SocketIoArgs,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    let mut tasks = Vec::with_capacity(args.clients);
    let batch = args.batch.max(1);
    let mut started = 0;
    while started < args.clients {
        let end = (started + batch).min(args.clients);
        for id in started..end {
            let (s, stop) = (shared.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                socketio_client::run(id, &s, stop).await
            }));
        }
        started = end;
        let deadline = Instant::now() + socketio_client::CONNECT_TIMEOUT + Duration::from_secs(5);
        while shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
            < started
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tasks
}

/// Polls `/metrics` until it counts at least `connected` sessions; the last count seen
/// (`None` without `--metrics` or when every scrape failed).
async fn wait_sessions(args: &SocketIoArgs, connected: usize) -> Option<u64> {
    args.metrics.as_ref()?;
    let deadline = Instant::now() + SESSIONS_WAIT;
    let mut seen = None;
    while Instant::now() < deadline {
        if let Some(c) = scrape_counters(args).await {
            seen = Some(c.eio_sessions);
            if c.eio_sessions >= connected as u64 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// Waits until `expected` deliveries arrived, `--drain-s` passed after the last send, or
/// every client dropped.
async fn wait_deliveries(
    args: &SocketIoArgs,
    shared: &Shared,
    publisher: &tokio::task::JoinHandle<anyhow::Result<PubOutcome>>,
    expected: u64,
) {
    let drain = Duration::from_secs_f64(args.drain_s);
    let mut sent_at: Option<Instant> = None;
    loop {
        if shared.delivered.load(Ordering::Relaxed) >= expected {
            break;
        }
        let connected = shared.connected.load(Ordering::Relaxed);
        if connected == 0 || shared.dropped.load(Ordering::Relaxed) >= connected {
            break;
        }
        let all_sent = shared.published.load(Ordering::Relaxed) >= args.events;
        if sent_at.is_none() && (all_sent || publisher.is_finished()) {
            sent_at = Some(Instant::now());
        }
        if sent_at.is_some_and(|t| t.elapsed() >= drain) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What the publisher saw.
#[derive(Debug, Default)]
pub struct PubOutcome {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The latest send after its due time, in ms (the schedule's worst slip).
    pub max_slip_ms: f64,
}

/// Sends `events` events at `rate` on one connection, replies read on their own task; then
/// waits for the replies, 60 s at most.
async fn publish_events(
    url: Url,
    channel: String,
    body: Vec<u8>,
    events: u64,
    rate: f64,
    shared: Arc<Shared>,
) -> anyhow::Result<PubOutcome> {
    let port = url.port.unwrap_or(80);
    let stream = TcpStream::connect((url.host.as_str(), port))
        .await
        .with_context(|| format!("connecting to the publish endpoint {}:{port}", url.host))?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let host = format!("{}:{port}", url.host);
    let replies = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(8192);
        let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
        while ok + errors < events {
            match wire::parse_http_response(&buf) {
                Ok(Some(reply)) => {
                    buf.drain(..reply.len);
                    match reply.error {
                        None => ok += 1,
                        Some(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(g) => {
                    first_error.get_or_insert(g.0);
                    break;
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    first_error.get_or_insert("the publish connection closed".to_owned());
                    break;
                }
                Ok(_) => {}
            }
        }
        (ok, errors, first_error)
    });
    let mut out = PubOutcome::default();
    let origin = Instant::now();
    let mut req = Vec::with_capacity(body.len() + 256);
    let mut event = Vec::with_capacity(body.len() + 64);
    for k in 0..events {
        let due = origin + Duration::from_secs_f64(k as f64 / rate.max(1e-9));
        tokio::time::sleep_until(due.into()).await;
        let slip = due.elapsed().as_secs_f64() * 1e3;
        out.max_slip_ms = out.max_slip_ms.max(slip);
        event.clear();
        req.clear();
        let t = now_ns();
        radar_payload::write_event(&mut event, t, k, &body);
        wire::write_http_publish(&mut req, &host, &url.path, &channel, &event);
        wr.write_all(&req).await.context("writing a publish")?;
        out.sent += 1;
        shared.last_send_ns.store(t, Ordering::Relaxed);
        shared.published.fetch_add(1, Ordering::Relaxed);
    }
    match tokio::time::timeout(Duration::from_secs(60), replies).await {
        Ok(Ok((ok, errors, first_error))) => {
            out.ok = ok;
            out.errors = errors;
            out.first_error = first_error;
        }
        Ok(Err(e)) => out.first_error = Some(format!("reply task: {e}")),
        Err(_) => out.first_error = Some("no reply to every publish within 60 s".to_owned()),
    }
    Ok(out)
}

async fn scrape_counters(args: &SocketIoArgs) -> Option<Counters> {
    let url = Url::parse(args.metrics.as_deref()?).ok()?;
    let addr = resolve(&url).await.ok()?;
    scrape::fetch(addr, &format!("{}:{}", url.host, addr.port()))
        .await
        .ok()
}
