//! `redis-hop`: the latency that Redis alone adds to an event, at a scenario's pace.
//!
//! `many-channels --publish redis` measures from the publisher's send to the client's receive,
//! so its p50 holds the Redis hop (the publisher's write, redis-server's wake-up and its write to
//! the subscriber, the subscriber's wake-up) before the gateway does anything. The paced floor
//! (`floor`) holds none of it. This subcommand measures that hop on its own: one publisher
//! thread sends `PUBLISH` at `--rate` on one connection (timestamped payloads of
//! `--payload-bytes`, as `run` sends them), one subscriber thread on its own connection reads the
//! pushes with a blocking read, as the gateway's subscriber thread does, and records the time from
//! the send to the read in an HDR histogram. The threads are pinned like the gateway's and the
//! load test's (`--subscriber-core`, `--publisher-core`); Redis stays wherever it runs.
//!
//! With `--relay-connections N` the subscriber is also a cost-free gateway: it writes each
//! event's payload to the next `--relay-group` of N loopback connections (one plain blocking
//! `write` each, drained by a reader thread on `--reader-core`, as the floor's are) and the
//! report gives its whole CPU time per send: the wake-up, the read, the parse and the sends,
//! with nothing else in the way. The paced floor (`floor --interval-us`) reads its CPU around
//! each round's sends only, so it leaves the first three out; this relay is the floor of a
//! gateway whose events arrive from Redis one at a time, at the same pace.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde::Serialize;

use crate::latency::new_histogram;
use crate::wire::write_resp_command;

/// The channel used; nothing else should publish on it.
const CHANNEL: &[u8] = b"ringcast-loadtest-redis-hop";
/// Digits of the send timestamp (nanoseconds since the start) at the front of each payload.
const STAMP_DIGITS: usize = 20;

#[derive(clap::Args, Debug)]
pub struct RedisHopArgs {
    /// Redis server
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Publishes per second (many-channels: 2000)
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Seconds of publishing
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Payload bytes (at least 20: the timestamp)
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Core for the subscriber thread (the gateway's core)
    #[arg(long, default_value_t = 0)]
    pub subscriber_core: usize,
    /// Core for the publisher thread (the load test's core)
    #[arg(long, default_value_t = 1)]
    pub publisher_core: usize,
    /// Relay each event, as a cost-free gateway would, to this many loopback connections (0:
    /// no relay); the report then gives the subscriber's CPU per send
    #[arg(long, default_value_t = 0)]
    pub relay_connections: usize,
    /// Relay connections written per event, consecutive groups in turn (many-channels: 10)
    #[arg(long, default_value_t = 10)]
    pub relay_group: usize,
    /// Core for the thread that drains the relay's connections (the load test's core)
    #[arg(long, default_value_t = 1)]
    pub reader_core: usize,
    /// Print one JSON line instead of the human summary
    #[arg(long)]
    pub json: bool,
}

/// What the relay (`--relay-connections`) measured.
#[derive(Debug, Serialize)]
pub struct RelayReport {
    pub connections: usize,
    pub group: usize,
    /// Writes done: one per connection per event.
    pub sends: u64,
    /// The subscriber thread's CPU time per send, µs: its whole CPU time (wake-ups, reads,
    /// parse, writes) over the events, divided by the writes.
    pub cpu_per_send_us: f64,
    /// From the publisher's send to the read at the receiving end (the relay's reader thread,
    /// on the load test's core), over every relayed payload: what a cost-free gateway scores
    /// where `run` measures a gateway's latency.
    pub latency_p50_us: u64,
    pub latency_p90_us: u64,
    pub latency_p99_us: u64,
    pub latency_p999_us: u64,
    /// Payloads whose timestamp was split across two reads, left out of the latency.
    pub unstamped: u64,
}

/// The relay's latency, taken at the receiving ends: each connection carries whole payloads
/// back to back, each starting with the publisher's timestamp.
struct RelayStamps {
    payload_bytes: u64,
    base: Instant,
    /// Bytes each connection has received so far.
    seen: Vec<u64>,
    hist: hdrhistogram::Histogram<u64>,
    unstamped: u64,
}

impl RelayStamps {
    fn read(&mut self, conn: usize, data: &[u8]) {
        let now = self.base.elapsed().as_nanos() as u64;
        let Some(seen) = self.seen.get_mut(conn) else {
            return;
        };
        let p = self.payload_bytes;
        // Where the first payload that starts in `data` starts.
        let mut at = ((p - *seen % p) % p) as usize;
        *seen += data.len() as u64;
        while at < data.len() {
            let sent = data
                .get(at..at + STAMP_DIGITS)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|t| t.parse::<u64>().ok());
            match sent {
                Some(sent) => {
                    self.hist
                        .saturating_record((now.saturating_sub(sent) / 1000).max(1));
                }
                None => self.unstamped += 1,
            }
            at += p as usize;
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RedisHopReport {
    pub rate: u64,
    pub payload_bytes: usize,
    pub published: u64,
    pub received: u64,
    pub latency_p50_us: u64,
    pub latency_p90_us: u64,
    pub latency_p99_us: u64,
    pub latency_p999_us: u64,
    pub latency_max_us: u64,
    /// The subscriber thread's CPU time per received event, µs: its wake-up, the `read` and the
    /// parse of the push. What any gateway pays per event to read it from Redis, on top of
    /// its sends (pinned to the gateway's core, like the gateway). With a relay, the relay's
    /// sends are in it too.
    pub subscriber_cpu_per_event_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayReport>,
}

pub fn main(args: RedisHopArgs) -> anyhow::Result<()> {
    let report = run(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "redis hop at {}/s, {} B: {} published, {} received; p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs; subscriber CPU {:.2} µs per event",
            report.rate,
            report.payload_bytes,
            report.published,
            report.received,
            report.latency_p50_us,
            report.latency_p90_us,
            report.latency_p99_us,
            report.latency_p999_us,
            report.latency_max_us,
            report.subscriber_cpu_per_event_us
        );
        if let Some(r) = &report.relay {
            println!(
                "relay to {} connections, {} per event: {} sends, {:.2} µs of the subscriber's CPU per send; at the receiving ends p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs ({} unstamped)",
                r.connections,
                r.group,
                r.sends,
                r.cpu_per_send_us,
                r.latency_p50_us,
                r.latency_p90_us,
                r.latency_p99_us,
                r.latency_p999_us,
                r.unstamped
            );
        }
    }
    Ok(())
}

fn connect(addr: &str, password: Option<&str>) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect to Redis at {addr}"))?;
    s.set_nodelay(true)?;
    if let Some(pw) = password {
        let mut buf = Vec::new();
        write_resp_command(&mut buf, &[b"AUTH", pw.as_bytes()]);
        s.write_all(&buf)?;
        let mut reply = [0u8; 64];
        let n = s.read(&mut reply)?;
        if !reply[..n].starts_with(b"+OK") {
            bail!(
                "AUTH refused: {}",
                String::from_utf8_lossy(&reply[..n]).trim()
            );
        }
    }
    Ok(s)
}

/// The first two elements of a RESP2 pub/sub push on [`CHANNEL`]: `*3 $N kind $N channel`.
fn push_head(kind: &[u8]) -> Vec<u8> {
    let mut head = b"*3\r\n".to_vec();
    for part in [kind, CHANNEL] {
        head.push(b'$');
        head.extend_from_slice(part.len().to_string().as_bytes());
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(part);
        head.extend_from_slice(b"\r\n");
    }
    head
}

fn run(args: &RedisHopArgs) -> anyhow::Result<RedisHopReport> {
    if args.payload_bytes < STAMP_DIGITS {
        bail!("--payload-bytes must be at least {STAMP_DIGITS}");
    }
    if args.rate == 0 {
        bail!("--rate must be above 0");
    }
    if args.relay_connections > 0 {
        ensure!(
            args.relay_group > 0 && args.relay_connections.is_multiple_of(args.relay_group),
            "--relay-group must divide --relay-connections ({}) into whole groups",
            args.relay_connections
        );
    }
    let url = crate::url::Url::parse(&args.redis)?;
    let addr = format!("{}:{}", url.host, url.port.unwrap_or(6379));
    let password = url.password.clone();
    let total = (args.rate as f64 * args.seconds).round().max(1.0) as u64;
    let base = Instant::now();

    // A push is `*3 $7 message $len channel $len payload`, the same length every time.
    let mut prefix = push_head(b"message");
    prefix.push(b'$');
    prefix.extend_from_slice(args.payload_bytes.to_string().as_bytes());
    prefix.extend_from_slice(b"\r\n");
    let push_len = prefix.len() + args.payload_bytes + 2;

    // The relay's loopback pairs: the subscriber writes the sending ends, a reader drains the
    // receiving ends on the load test's core.
    let (relay_out, reader) = if args.relay_connections > 0 {
        crate::floor::raise_nofile_limit(crate::floor::fds_needed(args.relay_connections))?;
        let (senders, receivers) = crate::floor::connect_pairs(args.relay_connections)?;
        let stamps = Arc::new(Mutex::new(RelayStamps {
            payload_bytes: args.payload_bytes as u64,
            base,
            seen: vec![0; args.relay_connections],
            hist: new_histogram(),
            unstamped: 0,
        }));
        let on_read = {
            let stamps = Arc::clone(&stamps);
            Box::new(move |conn: usize, data: &[u8]| {
                if let Ok(mut s) = stamps.lock() {
                    s.read(conn, data);
                }
            })
        };
        let reader = crate::floor::Reader::spawn_with(receivers, args.reader_core, Some(on_read))?;
        (senders, Some((reader, stamps)))
    } else {
        (Vec::new(), None)
    };
    let group = args.relay_group.max(1);
    let payload_bytes = args.payload_bytes;

    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let sub_core = args.subscriber_core;
    let sub_addr = addr.clone();
    let sub_pw = password.clone();
    let wait_for = Duration::from_secs_f64(args.seconds) + Duration::from_secs(5);
    let subscriber = std::thread::spawn(move || -> anyhow::Result<(u64, _, u64, u64)> {
        let mut relay_out = relay_out;
        crate::sys::pin_to_cpus(&[sub_core])?;
        let mut s = match connect(&sub_addr, sub_pw.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                return Err(e);
            }
        };
        let mut cmd = Vec::new();
        write_resp_command(&mut cmd, &[b"SUBSCRIBE", CHANNEL]);
        s.write_all(&cmd)?;
        // The confirmation: `*3 $9 subscribe $len channel :1`.
        let mut confirm = push_head(b"subscribe");
        confirm.extend_from_slice(b":1\r\n");
        let mut got = vec![0u8; confirm.len()];
        s.read_exact(&mut got)
            .context("reading the SUBSCRIBE reply")?;
        if got != confirm {
            bail!(
                "unexpected SUBSCRIBE reply: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
        let _ = ready_tx.send(Ok(()));
        s.set_read_timeout(Some(wait_for))?;
        let cpu0 = crate::floor::thread_cpu_ns()?;
        let mut hist = new_histogram();
        let mut buf = vec![0u8; 64 * 1024];
        let mut have = 0;
        let mut received = 0u64;
        let mut sends = 0u64;
        while received < total {
            let n = match s.read(&mut buf[have..]) {
                Ok(0) => bail!("Redis closed the subscriber connection"),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                Err(e) => return Err(e.into()),
            };
            let now = base.elapsed().as_nanos() as u64;
            have += n;
            let mut at = 0;
            while have - at >= push_len {
                let push = &buf[at..at + push_len];
                if !push.starts_with(&prefix) {
                    bail!(
                        "unexpected push from Redis: {:?}",
                        String::from_utf8_lossy(&push[..push.len().min(80)])
                    );
                }
                let stamp = &push[prefix.len()..prefix.len() + STAMP_DIGITS];
                let sent: u64 = std::str::from_utf8(stamp)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .context("a push without a timestamp")?;
                hist.saturating_record((now.saturating_sub(sent) / 1000).max(1));
                if !relay_out.is_empty() {
                    let to = relay_range(received, group, relay_out.len());
                    let first = to.start;
                    let payload = &push[prefix.len()..prefix.len() + payload_bytes];
                    for (i, out) in relay_out[to].iter_mut().enumerate() {
                        out.write_all(payload)
                            .with_context(|| format!("relay connection {}", first + i))?;
                        sends += 1;
                    }
                }
                received += 1;
                at += push_len;
            }
            buf.copy_within(at..have, 0);
            have -= at;
        }
        let cpu_ns = crate::floor::thread_cpu_ns()?.saturating_sub(cpu0);
        Ok((received, hist, cpu_ns, sends))
    });
    ready_rx
        .recv()
        .context("the subscriber thread ended before subscribing")??;

    crate::sys::pin_to_cpus(&[args.publisher_core])?;
    let mut publisher = connect(&addr, password.as_deref())?;
    // Replies (`:1`) are read on a thread of their own, so the publisher never waits for one.
    let mut replies = publisher.try_clone()?;
    let drain = std::thread::spawn(move || {
        let mut sink = [0u8; 4096];
        while matches!(replies.read(&mut sink), Ok(n) if n > 0) {}
    });
    let interval_ns = 1_000_000_000 / args.rate;
    let start = Instant::now();
    let mut payload = vec![b'x'; args.payload_bytes];
    let mut cmd = Vec::with_capacity(args.payload_bytes + 64);
    for i in 0..total {
        let due = start + Duration::from_nanos(interval_ns * i);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let stamp = base.elapsed().as_nanos() as u64;
        let digits = format!("{stamp:0width$}", width = STAMP_DIGITS);
        payload[..STAMP_DIGITS].copy_from_slice(digits.as_bytes());
        cmd.clear();
        write_resp_command(&mut cmd, &[b"PUBLISH", CHANNEL, &payload]);
        publisher.write_all(&cmd).context("PUBLISH")?;
    }
    let joined = subscriber
        .join()
        .map_err(|_| anyhow::anyhow!("the subscriber thread panicked"))
        .and_then(|r| r);
    let _ = publisher.shutdown(std::net::Shutdown::Both);
    let _ = drain.join();
    let relay = match reader {
        Some((reader, stamps)) => {
            // Every relayed byte must have reached its reader, or the sends were not all done.
            let drained = match &joined {
                Ok((_, _, _, sends)) => crate::floor::wait_drained(
                    &reader.received,
                    sends * args.payload_bytes as u64,
                    &reader.done,
                )
                .context("draining the relay's connections"),
                Err(_) => Ok(()),
            };
            let stopped = reader.stop().context("the relay's reader");
            drained?;
            stopped?;
            let (received, _, cpu_ns, sends) =
                joined.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
            ensure!(
                *sends == received * group as u64,
                "the relay wrote {sends} times for {received} events of {group}"
            );
            let stamps = stamps
                .lock()
                .map_err(|_| anyhow::anyhow!("the relay's reader panicked"))?;
            let q = |q: f64| stamps.hist.value_at_quantile(q);
            Some(RelayReport {
                connections: args.relay_connections,
                group,
                sends: *sends,
                cpu_per_send_us: *cpu_ns as f64 / 1_000.0 / (*sends).max(1) as f64,
                latency_p50_us: q(0.50),
                latency_p90_us: q(0.90),
                latency_p99_us: q(0.99),
                latency_p999_us: q(0.999),
                unstamped: stamps.unstamped,
            })
        }
        None => None,
    };
    let (received, hist, cpu_ns, _) = joined?;
    Ok(RedisHopReport {
        rate: args.rate,
        payload_bytes: args.payload_bytes,
        published: total,
        received,
        latency_p50_us: hist.value_at_quantile(0.50),
        latency_p90_us: hist.value_at_quantile(0.90),
        latency_p99_us: hist.value_at_quantile(0.99),
        latency_p999_us: hist.value_at_quantile(0.999),
        latency_max_us: hist.max(),
        subscriber_cpu_per_event_us: cpu_ns as f64 / 1_000.0 / received.max(1) as f64,
        relay,
    })
}

/// The relay connections event `event` goes to: consecutive groups of `group` in turn, as a
/// many-channels event reaches one channel's subscribers (`connections` is a multiple of
/// `group`).
fn relay_range(event: u64, group: usize, connections: usize) -> std::ops::Range<usize> {
    let groups = (connections / group).max(1) as u64;
    let first = (event % groups) as usize * group;
    first..(first + group).min(connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_events_take_the_groups_in_turn() {
        assert_eq!(relay_range(0, 10, 30), 0..10);
        assert_eq!(relay_range(1, 10, 30), 10..20);
        assert_eq!(relay_range(2, 10, 30), 20..30);
        assert_eq!(relay_range(3, 10, 30), 0..10);
        assert_eq!(relay_range(7, 1, 1), 0..1);
    }

    #[test]
    fn relay_stamps_are_found_across_reads_of_any_size() {
        let base = Instant::now();
        let mut stamps = RelayStamps {
            payload_bytes: 30,
            base,
            seen: vec![0; 2],
            hist: new_histogram(),
            unstamped: 0,
        };
        let payload = |sent: u64| format!("{sent:020}{}", "x".repeat(10)).into_bytes();
        // Connection 0: two payloads in one read, then one in reads of 25 and 5 bytes.
        let mut two = payload(0);
        two.extend(payload(0));
        stamps.read(0, &two);
        let three = payload(0);
        stamps.read(0, &three[..25]);
        stamps.read(0, &three[25..]);
        // Connection 1: a payload whose stamp is split (10 + 20 bytes).
        let four = payload(0);
        stamps.read(1, &four[..10]);
        stamps.read(1, &four[10..]);
        // And one whose stamp is not a number.
        stamps.read(1, &[b'y'; 30]);
        assert_eq!(stamps.hist.len(), 3);
        assert_eq!(stamps.unstamped, 2);
        assert_eq!(stamps.seen, vec![90, 60]);
    }

    /// A real redis-server on a free port: the relay writes every event to its group, the
    /// reader receives every byte (`run` fails otherwise), and the CPU per send is measured.
    #[test]
    fn the_relay_sends_every_event_to_its_group_through_a_real_redis() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        let args = RedisHopArgs {
            redis: format!("redis://127.0.0.1:{port}"),
            rate: 2000,
            seconds: 0.1,
            payload_bytes: 200,
            subscriber_core: 0,
            publisher_core: 1,
            relay_connections: 40,
            relay_group: 10,
            reader_core: 1,
            json: true,
        };
        let report = run(&args);
        let _ = server.kill();
        let _ = server.wait();
        let report = report.expect("the relay run");
        assert_eq!(report.received, 200);
        let relay = report.relay.expect("a relay report");
        assert_eq!(relay.sends, 200 * 10);
        assert!(relay.cpu_per_send_us > 0.0);
        // Every payload reached its reader stamped, and the latency is the publisher's send to
        // that read (under a second on any host).
        assert!(relay.latency_p50_us > 0 && relay.latency_p999_us < 1_000_000);
        assert!(relay.unstamped < relay.sends / 10);
    }

    #[test]
    fn push_heads_are_the_resp2_pushes_redis_sends() {
        assert_eq!(
            push_head(b"subscribe"),
            b"*3\r\n$9\r\nsubscribe\r\n$27\r\nringcast-loadtest-redis-hop\r\n"
        );
        assert!(push_head(b"message").starts_with(b"*3\r\n$7\r\nmessage\r\n$27\r\n"));
    }
}
