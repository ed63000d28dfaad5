//! The `ess` subcommand: one RabbitMQ stream to one WebSocket through `ringcast --preset
//! squonk2`, as the Squonk2 Account Server and a `ws_listener.py` client use it. Owned by the
//! load test's tokio runtime.
//!
//! 1. Declare a fresh stream queue bound to `event-streams` (as the Account Server does) and
//!    `POST /event-stream/` its routing key to the gateway's internal API for the uuid.
//! 2. **replay** and **slow**: publish `--messages` bodies with publisher confirms, as fast as
//!    RabbitMQ takes them, *before* connecting; then connect to
//!    `/event-stream/<uuid>?stream_from_ordinal=1` and read until the N − 1 messages from
//!    offset 1 arrived, checking that the ordinals follow 1, 2, 3, …. **slow** reads at
//!    `--read-rate` frames a second (the replay should follow the reader, RSS bounded, no
//!    close). **live**: connect first (RabbitMQ `next`), publish markers until one arrives,
//!    then publish N at the broker's rate while reading them.
//! 3. Sample the gateway (`/proc/PID`: CPU of every thread, RSS every 20 ms, `VmHWM` reset
//!    before) and the load test itself from just before the connect (replay, slow) or the
//!    first publish (live) to the last frame; delete the stream; print the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::amqp::Publisher;
use crate::ess_body::{self, BodyKind};
use crate::ess_report::{Reading, Report};
use crate::procfs::{self, Pid, Sample};
use crate::scrape;
use crate::url::Url;
use crate::ws::{Frame, RawWs};

/// How often the gateway's RSS is read during the measured interval.
const RSS_EVERY: Duration = Duration::from_millis(20);
/// Live mode: how long to wait for each marker before publishing the next (100 at most).
const MARKER_WAIT: Duration = Duration::from_millis(300);

/// What the run does; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Replay,
    Live,
    Slow,
}

/// Flags of `ringcast-loadtest ess`.
#[derive(clap::Args, Debug)]
pub struct EssArgs {
    /// RabbitMQ's AMQP 0-9-1 URL (the gateway reads the same broker over port 5552).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2F")]
    pub amqp: String,
    /// The gateway's `ess_api` route: `http://IP:PORT`.
    #[arg(long)]
    pub api: String,
    /// The gateway's `ess` route: `ws://IP:PORT`.
    #[arg(long)]
    pub ws: String,
    #[arg(long, value_enum, default_value = "replay")]
    pub mode: Mode,
    /// Messages published (replay and slow read the N − 1 from offset 1).
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    #[arg(long, value_enum, default_value = "json")]
    pub body: BodyKind,
    /// Size of each published body, in bytes (at least its fixed part, about 195 bytes).
    #[arg(long, default_value_t = 200)]
    pub body_bytes: usize,
    /// Slow mode: frames the client reads per second.
    #[arg(long, default_value_t = 2_000)]
    pub read_rate: u64,
    /// The gateway's pid: CPU per thread, RSS and peak RSS from `/proc/PID`.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// RabbitMQ's pid (`beam.smp`): its CPU over the same interval, to see whether the
    /// broker set the pace.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// The gateway's main listener (`http://IP:PORT`) for `GET /metrics` (slow-consumer closes).
    #[arg(long)]
    pub metrics: Option<String>,
    /// Give up reading after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// Print one JSON line instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs the `ess` subcommand and prints its report.
pub fn main(args: EssArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("loadtest-worker")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = rt.block_on(execute(&args))?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.human());
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn execute(args: &EssArgs) -> anyhow::Result<Report> {
    let api = Url::parse(&args.api)?;
    let ws = Url::parse(&args.ws)?;
    let publisher = Publisher::connect(&args.amqp).await?;
    let nanos = crate::payload::now_ns();
    let stream = format!("ringcast-loadtest-ess-{}-{nanos}", std::process::id());
    publisher.declare_stream(&stream).await?;
    let result = measure(args, &api, &ws, &publisher, &stream).await;
    publisher.delete_and_close(&stream).await?;
    result
}

async fn measure(
    args: &EssArgs,
    api: &Url,
    ws: &Url,
    publisher: &Publisher,
    stream: &str,
) -> anyhow::Result<Report> {
    let uuid = create_event_stream(api, stream).await?;
    let (kind, size) = (args.body, args.body_bytes);
    let mut report = Report::new(args);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let counters_before = scrape_counters(args).await;
    let reading = if args.mode == Mode::Live {
        let mut c = connect(ws, &format!("/event-stream/{uuid}")).await?;
        let marker = until_live(&mut c, publisher, stream).await?;
        let before = Reading::start(args, RssWatch::start(args.server_pid))?;
        let publish = publisher.publish(stream, args.messages, |i| ess_body::body(kind, i, size));
        let read = read_frames(&mut c, marker + 1, args.messages, None, deadline);
        let (published, read) = tokio::join!(publish, read);
        published?;
        before.finish(read?)
    } else {
        let t = Instant::now();
        publisher
            .publish(stream, args.messages, |i| ess_body::body(kind, i, size))
            .await?;
        report.set_publish(t.elapsed().as_secs_f64());
        let before = Reading::start(args, RssWatch::start(args.server_pid))?;
        let path = format!("/event-stream/{uuid}?stream_from_ordinal=1");
        let mut c = connect(ws, &path).await?;
        let pace = (args.mode == Mode::Slow).then_some(args.read_rate);
        let read = read_frames(&mut c, 1, args.messages.saturating_sub(1), pace, deadline).await;
        before.finish(read?)
    };
    let counters_after = scrape_counters(args).await;
    report.set_reading(reading?);
    if let (Some(b), Some(a)) = (counters_before, counters_after) {
        report.set_counters(&a.since(&b));
    }
    report.finish();
    Ok(report)
}

/// `POST /event-stream/` with `routing_key`; the uuid (last segment of `location`).
async fn create_event_stream(api: &Url, routing_key: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({ "routing_key": routing_key }).to_string();
    let req = format!(
        "POST /event-stream/ HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        host = api.host,
        len = body.len()
    );
    let mut s = TcpStream::connect((api.host.as_str(), api.port.unwrap_or(80)))
        .await
        .context("connecting to the ess_api route")?;
    s.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp);
    let (head, json) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 201") {
        bail!("POST /event-stream/ answered {head:?} {json}");
    }
    let v: serde_json::Value = serde_json::from_str(json).context("POST answer not JSON")?;
    let location = v["location"]
        .as_str()
        .context("no location in the answer")?;
    let uuid = location.rsplit('/').next().unwrap_or_default();
    anyhow::ensure!(!uuid.is_empty(), "location {location:?} has no uuid");
    Ok(uuid.to_owned())
}

async fn connect(ws: &Url, path: &str) -> anyhow::Result<RawWs> {
    let port = ws.port.unwrap_or(80);
    let s = TcpStream::connect((ws.host.as_str(), port))
        .await
        .context("connecting to the ess route")?;
    s.set_nodelay(true)?;
    RawWs::handshake(s, &format!("{}:{port}", ws.host), path).await
}

/// Publishes markers until the socket gets one; returns that frame's ordinal. From then on
/// the consumer is live and every later message reaches the socket.
async fn until_live(c: &mut RawWs, p: &Publisher, stream: &str) -> anyhow::Result<u64> {
    for i in 0..100 {
        let marker =
            format!("{{\"message_type\":\"loadtest.Marker\",\"message_body\":{{\"i\":{i}}}}}");
        p.publish(stream, 1, |_| marker.clone().into_bytes())
            .await?;
        if let Ok(frame) = tokio::time::timeout(MARKER_WAIT, c.next()).await {
            match frame? {
                Some(Frame::Text) => {
                    return ess_body::ordinal(c.payload()).context("marker without an ordinal");
                }
                other => bail!("waiting for a marker: {other:?}"),
            }
        }
    }
    bail!("no marker arrived in 100 tries")
}

/// What reading the frames found.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// Text frames read.
    pub frames: u64,
    /// Frames whose ordinal was not the one expected next (or had none).
    pub out_of_order: u64,
    /// Binary, continuation or pong frames.
    pub other_frames: u64,
    /// The close code, when the gateway closed the socket before the end.
    pub closed: Option<Option<u16>>,
    /// From the start of reading to the first frame.
    pub first_frame_s: f64,
}

/// Reads `count` text frames expecting ordinals `first`, `first + 1`, …; with `pace`, at
/// most that many frames a second (sleeping whenever 5 ms ahead of schedule).
async fn read_frames(
    c: &mut RawWs,
    first: u64,
    count: u64,
    pace: Option<u64>,
    deadline: Instant,
) -> anyhow::Result<ReadOutcome> {
    let start = Instant::now();
    let mut out = ReadOutcome::default();
    let mut expected = first;
    while out.frames < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, c.next())
            .await
            .with_context(|| format!("timed out after {} of {count} frames", out.frames))??;
        match frame {
            Some(Frame::Text) => {
                if out.frames == 0 {
                    out.first_frame_s = start.elapsed().as_secs_f64();
                }
                out.frames += 1;
                match ess_body::ordinal(c.payload()) {
                    Some(n) if n == expected => {}
                    Some(n) => {
                        out.out_of_order += 1;
                        expected = n;
                    }
                    None => out.out_of_order += 1,
                }
                expected += 1;
            }
            Some(Frame::Other) => out.other_frames += 1,
            Some(Frame::Close(code)) => {
                out.closed = Some(code);
                break;
            }
            None => {
                out.closed = Some(None);
                break;
            }
        }
        if let Some(rate) = pace {
            let due = start + Duration::from_secs_f64(out.frames as f64 / rate.max(1) as f64);
            if due > Instant::now() + Duration::from_millis(5) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
    }
    Ok(out)
}

async fn scrape_counters(args: &EssArgs) -> Option<scrape::Counters> {
    let url = Url::parse(args.metrics.as_deref()?).ok()?;
    let port = url.port.unwrap_or(80);
    let addr = tokio::net::lookup_host((url.host.as_str(), port))
        .await
        .ok()?
        .next()?;
    scrape::fetch(addr, &format!("{}:{port}", url.host))
        .await
        .ok()
}

/// Reads the gateway's `VmRSS` every [`RSS_EVERY`] on its own task, keeping the largest.
pub struct RssWatch {
    max_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    /// Resets the gateway's `VmHWM` (when allowed) and starts watching; `None` without a pid.
    pub fn start(pid: Option<u32>) -> Option<RssWatch> {
        let pid = pid?;
        procfs::reset_peak_rss(pid);
        let max_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max_kib.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Ok(sample) = Sample::take(Pid::Other(pid)) {
                    m.fetch_max(sample.rss_kib, Ordering::Relaxed);
                }
                tokio::time::sleep(RSS_EVERY).await;
            }
        });
        Some(RssWatch { max_kib, stop })
    }

    /// Stops watching; the largest `VmRSS` seen, in KiB.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.max_kib.load(Ordering::Relaxed)
    }
}
