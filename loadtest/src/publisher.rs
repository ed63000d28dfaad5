//! The publishers: pipelined Redis `PUBLISH` or HTTP `POST /api/publish` connections, paced to
//! a rate (or as fast as the pipeline allows), stamping each payload with its send time.
//!
//! Publisher connection `j` of `P` owns the channels `c` with `c mod P == j` and takes `1/P` of
//! the rate, so each channel's sequence numbers are sent in order on one connection. A writer
//! loop builds batches of requests and writes each batch at once; a reader task parses the
//! replies in order and counts, per channel, the publishes that were accepted and whose `t` is
//! inside the measured window. A semaphore bounds unanswered requests (`--pipeline`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::Semaphore;

use crate::pace::Pacer;
use crate::payload::{now_ns, write_payload};
use crate::settings::{Endpoint, PublishMode};
use crate::wire::{self, Garbled, Reply};

/// Most requests written in one batch.
const BATCH_MAX: usize = 256;

/// How long to wait for the last replies after the window closed.
const REPLY_GRACE: Duration = Duration::from_secs(10);

/// Counts shared by all publisher connections (and read live by the run).
pub struct PubStats {
    /// Per channel: accepted publishes with `t` inside the window.
    pub accepted_in_window: Vec<AtomicU64>,
    /// Every request written.
    pub sent: AtomicU64,
    /// Requests answered with an error (HTTP status other than 200, RESP `-ERR`).
    pub errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl PubStats {
    pub fn new(channels: usize) -> PubStats {
        PubStats {
            accepted_in_window: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    fn error(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(msg);
        }
    }
}

/// One publisher connection's job.
pub struct Job {
    pub mode: PublishMode,
    pub endpoint: Endpoint,
    /// Global channel indexes this connection owns, and all channel names.
    pub owned: Vec<usize>,
    pub names: Arc<Vec<String>>,
    /// This connection's share of the rate, messages per second; 0 = as fast as possible.
    pub rate: f64,
    pub payload_bytes: usize,
    pub pipeline: usize,
    /// Window by send time, ns since the epoch: stop publishing at `window_end_ns`.
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    /// The pacing clock: send k is due at `origin + (k + 1) / rate` (shared by all publishers
    /// and the interleaved floor, which runs halfway between sends).
    pub origin: Instant,
}

/// What the reader needs to know about each request, in send order.
enum Pending {
    /// A publish on this channel; `true` when its `t` is inside the window.
    Publish(usize, bool),
    /// A set-up command (`AUTH`), whose failure is fatal.
    Setup,
}

/// Runs one publisher connection until the window ends and its replies are in.
pub async fn run(job: Job, stats: Arc<PubStats>) -> anyhow::Result<()> {
    let stream = TcpStream::connect(job.endpoint.addr)
        .await
        .with_context(|| format!("connecting to {}", job.endpoint.url))?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let queue = Arc::new(Mutex::new(VecDeque::<Pending>::new()));
    let window = Arc::new(Semaphore::new(job.pipeline));

    let mut buf = Vec::with_capacity(BATCH_MAX * (job.payload_bytes + 128));
    // tokio's timer would wake once a millisecond and send the events due in it back to back.
    let mut pacer = Pacer::new().context("a timerfd for the publisher's pacing")?;
    if job.mode == PublishMode::Redis
        && let Some(password) = &job.endpoint.password
    {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &job.endpoint.user {
            args.push(user.as_bytes());
        }
        args.push(password.as_bytes());
        wire::write_resp_command(&mut buf, &args);
        queue.lock().unwrap().push_back(Pending::Setup);
    }

    let reader = tokio::spawn(read_replies(
        rd,
        job.mode,
        queue.clone(),
        window.clone(),
        stats.clone(),
    ));

    let mut seq = vec![0u64; job.owned.len()];
    let mut next = 0usize; // index into owned, round robin
    let mut sent: u64 = 0;
    let started = job.origin;
    let mut payload = Vec::with_capacity(job.payload_bytes + 64);
    let mut metas = Vec::with_capacity(BATCH_MAX);
    loop {
        let due = if job.rate > 0.0 {
            let target = (started.elapsed().as_secs_f64() * job.rate) as u64;
            if target <= sent {
                let at = started + Duration::from_secs_f64((sent + 1) as f64 / job.rate);
                let end_in = Duration::from_nanos(job.window_end_ns.saturating_sub(now_ns()));
                pacer
                    .sleep_until(at.min(Instant::now() + end_in))
                    .await
                    .context("waiting on the publisher's timerfd")?;
                if now_ns() >= job.window_end_ns {
                    break;
                }
                continue;
            }
            ((target - sent) as usize).min(BATCH_MAX)
        } else {
            BATCH_MAX
        };
        // Write in batches: when the pipeline is (nearly) full, wait until a quarter of it
        // is free rather than sending one request per reply.
        let low = (job.pipeline / 4).max(1);
        let free = window.available_permits();
        let want = if free >= due || free >= low {
            due.min(free)
        } else {
            due.min(low)
        };
        match window.acquire_many(want as u32).await {
            Ok(permit) => permit.forget(),
            Err(_) => break, // the reader failed
        }
        let n = want;
        let mut built = 0;
        let mut window_over = false;
        while built < n {
            let t = now_ns();
            if t >= job.window_end_ns {
                window_over = true;
                break;
            }
            let k = next;
            next = (next + 1) % job.owned.len();
            let channel = job.owned[k];
            payload.clear();
            write_payload(&mut payload, t, seq[k], job.payload_bytes);
            seq[k] += 1;
            let name = &job.names[channel];
            match job.mode {
                PublishMode::Redis => wire::write_resp_publish(&mut buf, name.as_bytes(), &payload),
                PublishMode::Http => wire::write_http_publish(
                    &mut buf,
                    &job.endpoint.host,
                    &job.endpoint.path,
                    name,
                    &payload,
                ),
            }
            metas.push(Pending::Publish(channel, t >= job.window_start_ns));
            built += 1;
        }
        window.add_permits(n - built);
        sent += built as u64;
        stats.sent.fetch_add(built as u64, Ordering::Relaxed);
        // A failed write means a broken connection: the reader reports why.
        if !buf.is_empty() && flush(&mut wr, &mut buf, &queue, &mut metas).await.is_err() {
            break;
        }
        if window_over {
            break;
        }
    }

    // Wait for the replies still in flight, then stop the reader.
    let all = job.pipeline as u32;
    match tokio::time::timeout(REPLY_GRACE, window.acquire_many(all)).await {
        Ok(Ok(_)) => {
            reader.abort();
            Ok(())
        }
        // The reader closed the semaphore: it failed.
        Ok(Err(_)) => match reader.await {
            Ok(result) => result,
            Err(e) => bail!("publisher reader failed: {e}"),
        },
        Err(_) => {
            reader.abort();
            let missing = queue.lock().unwrap_or_else(|e| e.into_inner()).len();
            stats.error(format!(
                "{missing} publishes unanswered {REPLY_GRACE:?} after the window"
            ));
            Ok(())
        }
    }
}

/// Queues the batch's metadata (before the bytes go out, so the reader always finds it),
/// then writes the batch.
async fn flush(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    buf: &mut Vec<u8>,
    queue: &Mutex<VecDeque<Pending>>,
    metas: &mut Vec<Pending>,
) -> anyhow::Result<()> {
    queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(metas.drain(..));
    wr.write_all(buf).await.context("writing publishes")?;
    buf.clear();
    Ok(())
}

/// Reads replies in order, matching each with its request, until the connection fails; then
/// closes `window` so the writer stops waiting for it.
async fn read_replies(
    rd: OwnedReadHalf,
    mode: PublishMode,
    queue: Arc<Mutex<VecDeque<Pending>>>,
    window: Arc<Semaphore>,
    stats: Arc<PubStats>,
) -> anyhow::Result<()> {
    let result = read_loop(rd, mode, &queue, &window, &stats).await;
    window.close();
    result
}

async fn read_loop(
    mut rd: OwnedReadHalf,
    mode: PublishMode,
    queue: &Mutex<VecDeque<Pending>>,
    window: &Semaphore,
    stats: &PubStats,
) -> anyhow::Result<()> {
    let parse: fn(&[u8]) -> Result<Option<Reply>, Garbled> = match mode {
        PublishMode::Redis => wire::parse_resp_reply,
        PublishMode::Http => wire::parse_http_response,
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = rd.read(&mut chunk).await.context("reading replies")?;
        if n == 0 {
            bail!("publisher connection closed by the peer");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        while used < buf.len() {
            let Some(reply) = parse(&buf[used..]).map_err(|Garbled(e)| anyhow::anyhow!(e))? else {
                break;
            };
            used += reply.len;
            match q.pop_front() {
                Some(Pending::Publish(channel, in_window)) => {
                    window.add_permits(1);
                    match reply.error {
                        None if in_window => {
                            stats.accepted_in_window[channel].fetch_add(1, Ordering::Relaxed);
                        }
                        None => {}
                        Some(e) => stats.error(e),
                    }
                }
                Some(Pending::Setup) => {
                    if let Some(e) = reply.error {
                        bail!("Redis refused AUTH: {e}");
                    }
                }
                None => bail!("a reply arrived for no request"),
            }
        }
        drop(q);
        buf.drain(..used);
    }
}

/// What [`publish_once`] achieved.
#[derive(Debug, Clone, Default)]
pub struct OnceStats {
    /// Publishes answered with success.
    pub accepted: u64,
    /// Publishes refused, and the first refusal.
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Publishes one event to each of `names` on one connection (`--touch`), at most `pipeline`
/// unanswered at a time, and waits for every reply (each round within [`REPLY_GRACE`]).
pub async fn publish_once(
    mode: PublishMode,
    endpoint: &Endpoint,
    names: &[String],
    payload_bytes: usize,
    pipeline: usize,
) -> anyhow::Result<OnceStats> {
    let mut stream = TcpStream::connect(endpoint.addr)
        .await
        .with_context(|| format!("connecting to {}", endpoint.url))?;
    stream.set_nodelay(true)?;
    let parse: fn(&[u8]) -> Result<Option<Reply>, Garbled> = match mode {
        PublishMode::Redis => wire::parse_resp_reply,
        PublishMode::Http => wire::parse_http_response,
    };
    let mut out = OnceStats::default();
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    if mode == PublishMode::Redis
        && let Some(password) = &endpoint.password
    {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &endpoint.user {
            args.push(user.as_bytes());
        }
        args.push(password.as_bytes());
        wire::write_resp_command(&mut buf, &args);
        stream.write_all(&buf).await.context("sending AUTH")?;
        buf.clear();
        let reply = read_replies_once(&mut stream, parse, &mut replies, &mut chunk, 1).await?;
        if let Some(e) = reply.into_iter().next().and_then(|r| r.error) {
            bail!("Redis refused AUTH: {e}");
        }
    }
    let mut payload = Vec::with_capacity(payload_bytes + 64);
    for (round, group) in names.chunks(pipeline.max(1)).enumerate() {
        for (i, name) in group.iter().enumerate() {
            payload.clear();
            // Sequence numbers count up over the channels: each channel sees exactly one.
            write_payload(
                &mut payload,
                now_ns(),
                (round * pipeline + i) as u64,
                payload_bytes,
            );
            match mode {
                PublishMode::Redis => wire::write_resp_publish(&mut buf, name.as_bytes(), &payload),
                PublishMode::Http => wire::write_http_publish(
                    &mut buf,
                    &endpoint.host,
                    &endpoint.path,
                    name,
                    &payload,
                ),
            }
        }
        stream.write_all(&buf).await.context("writing publishes")?;
        buf.clear();
        let got = tokio::time::timeout(
            REPLY_GRACE,
            read_replies_once(&mut stream, parse, &mut replies, &mut chunk, group.len()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("publishes unanswered after {REPLY_GRACE:?}"))??;
        for reply in got {
            match reply.error {
                None => out.accepted += 1,
                Some(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                }
            }
        }
    }
    Ok(out)
}

/// Reads until `n` complete replies are parsed; `pending` keeps the bytes of a reply split
/// across reads (at most one reply's worth, since no more than `n` were asked for).
async fn read_replies_once(
    stream: &mut TcpStream,
    parse: fn(&[u8]) -> Result<Option<Reply>, Garbled>,
    pending: &mut Vec<u8>,
    chunk: &mut [u8],
    n: usize,
) -> anyhow::Result<Vec<Reply>> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let read = stream.read(chunk).await.context("reading replies")?;
        if read == 0 {
            bail!("publisher connection closed by the peer");
        }
        pending.extend_from_slice(&chunk[..read]);
        let mut used = 0;
        while got.len() < n {
            let Some(reply) = parse(&pending[used..]).map_err(|Garbled(e)| anyhow::anyhow!(e))?
            else {
                break;
            };
            used += reply.len;
            got.push(reply);
        }
        pending.drain(..used);
    }
    Ok(got)
}
