//! The `run` subcommand: one scenario from start to report.
//!
//! 1. Raise the open-file limit, start a tokio runtime with `--client-threads` workers.
//! 2. **Connect**: spawn every client; measure connections per second (first spawn to last
//!    successful subscribe ack).
//! 3. **Idle** (`--idle`): hold the connections for `--duration` s; the gateway's RSS before
//!    connecting and at the end give the RSS per idle connection. With `--touch`, one event is
//!    first published to every channel and the hold starts once every reading client has
//!    received one (connections that have been used, not fresh ones).
//! 4. **Publish**: publishers start at once; the measured window is
//!    `[start + warmup, start + warmup + duration)` by send time `t`. The gateway and the load
//!    test are sampled at the window's start and again after the drain (until every expected
//!    event arrived, or none arrived for a second).
//! 5. Stop the clients, merge their counts and histograms, build the [`Report`].
//!
//! With `--churn-pct-per-min` readers reconnect while the publishers run, and with
//! `--sample-every` the gateway's RSS and descriptors are sampled from before the first connect
//! to after the clients left (see `soak.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, watch};

use crate::clients::{self, ClientSetup, Live, Outcome, Plan};
use crate::floor;
use crate::latency;
use crate::payload::now_ns;
use crate::procfs::{self, Pid, Sample};
use crate::progress::Progress;
use crate::publisher::{self, Job, PubStats};
use crate::report::Report;
use crate::scrape::{self, Counters};
use crate::settings::{self, Config, Settings};
use crate::soak::{self, Phase, Sampler};
use crate::sys;

/// A load test thread above this share of a core may be the bottleneck.
const SATURATED_PCT: f64 = 90.0;
/// Run-queue wait above this share of the window means the host is short of CPU.
const CONTENDED_SHARE: f64 = 0.1;
/// A gateway that read more than this from clients before an idle run is not fresh.
const FRESH_BYTES_IN: u64 = 16 * 1024;
/// The drain ends when no event arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(1);
/// How far ahead of the publishers' start their pacing clock begins.
const PACING_LEAD: Duration = Duration::from_millis(100);
/// The drain ends after this long in any case.
const DRAIN_MAX: Duration = Duration::from_secs(15);
/// `--touch`: how long one round waits for every reading client to have an event.
const TOUCH_ROUND: Duration = Duration::from_secs(10);
/// `--touch`: rounds of one publish per channel at most (a publish racing a channel's first
/// subscribe upstream may be missed, see `docs/PROTOCOL.md`; the next round covers it).
const TOUCH_ROUNDS: u32 = 3;

/// Runs the `run` subcommand and prints its report.
pub fn main(flags: Settings) -> anyhow::Result<()> {
    let cfg = Config::resolve(flags)?;
    if let Some(cpus) = &cfg.pin_cores {
        sys::pin_to_cpus(cpus)?;
    }
    let nofile = sys::raise_nofile_limit()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.client_threads)
        .thread_name("loadtest-worker")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = rt.block_on(execute(&cfg, nofile))?;
    if cfg.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.human());
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Both process samples taken at one moment.
struct Snapshot {
    gateway: Option<Sample>,
    me: Sample,
    threads: std::collections::HashMap<u32, u64>,
    pressure_us: Option<u64>,
    counters: Option<Counters>,
}

impl Snapshot {
    /// Samples both processes; `counters`: also scrape the gateway's `/metrics`.
    async fn take(cfg: &Config, counters: bool) -> anyhow::Result<Snapshot> {
        let gateway = cfg
            .server_pid
            .map(|pid| Sample::take(Pid::Other(pid)))
            .transpose()?;
        let me = Sample::take(Pid::Me)?;
        let threads = procfs::my_thread_ticks();
        let pressure_us = procfs::host_cpu_pressure_us();
        let counters = if counters {
            scrape::fetch(cfg.target.addr, &cfg.target.host).await.ok()
        } else {
            None
        };
        Ok(Snapshot {
            gateway,
            me,
            threads,
            pressure_us,
            counters,
        })
    }
}

async fn execute(cfg: &Config, nofile: u64) -> anyhow::Result<Report> {
    let mut report = base_report(cfg, nofile);
    if (cfg.clients as u64) + 64 > nofile {
        report.warnings.push(format!(
            "the open-file limit is {nofile}, below clients + 64: connects will fail"
        ));
    }
    if cfg.sample_every_s > 0.0 && cfg.server_pid.is_none() {
        anyhow::bail!("--sample-every needs --server-pid");
    }
    let names: Arc<Vec<String>> = Arc::new((0..cfg.channels).map(|c| format!("ch{c}")).collect());
    let slow = cfg.slow_clients();
    let plans: Vec<Plan> = (0..cfg.clients)
        .map(|i| Plan {
            id: i,
            channel: i % cfg.channels,
            slow: settings::is_slow(i, cfg.clients, slow),
            source_ip: sys::source_ip(i, cfg.target.addr.ip()),
        })
        .collect();

    // Connect.
    let before_connect = Snapshot::take(cfg, true).await?;
    let setup = Arc::new(ClientSetup {
        addr: cfg.target.addr,
        host: cfg.target.host.clone(),
        path: cfg.target.path.clone(),
        subscribe: cfg.subscribe,
        channels: names.to_vec(),
        slow_rcvbuf: cfg.slow_rcvbuf,
    });
    let churn_slots = if cfg.churn_pct_per_min > 0.0 {
        cfg.clients
    } else {
        0
    };
    let live = Arc::new(Live::new(cfg.channels, cfg.client_threads * 2, churn_slots));
    let sampler = match cfg.server_pid {
        Some(pid) if cfg.sample_every_s > 0.0 => Some(Sampler::start(
            pid,
            Duration::from_secs_f64(cfg.sample_every_s),
            live.clone(),
        )?),
        _ => None,
    };
    let set_phase = |phase| {
        if let Some(s) = &sampler {
            s.set_phase(phase);
        }
    };
    set_phase(Phase::Warmup);
    let gate = Arc::new(Semaphore::new(cfg.connect_concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);
    let handles: Vec<_> = plans
        .iter()
        .map(|&plan| {
            tokio::spawn(clients::run(
                plan,
                setup.clone(),
                live.clone(),
                gate.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let bar = Progress::count(cfg.clients as u64, "connect");
    loop {
        let ok = live.connected.load(Ordering::Relaxed);
        let failed = live.failed.load(Ordering::Relaxed);
        bar.set((ok + failed) as u64, format!("{failed} failed"));
        if ok + failed >= cfg.clients {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bar.finish();
    report.connected = live.connected.load(Ordering::Relaxed);
    report.connect_failed = live.failed.load(Ordering::Relaxed);
    report.connect_s = if report.connected > 0 {
        live.last_connect_ns.load(Ordering::Relaxed) as f64 / 1e9
    } else {
        live.connect_start.elapsed().as_secs_f64()
    };
    report.connect_rate_per_s = rate(report.connected as f64, report.connect_s);
    report.connect_error = live
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();

    let window = if cfg.idle {
        if cfg.touch {
            touch(cfg, &names, &plans, &live, &mut report).await?;
        }
        set_phase(Phase::Window);
        hold_idle(cfg).await;
        Window {
            start: before_connect,
            end: Snapshot::take(cfg, true).await?,
            channel_expected: Vec::new(),
            accepted: Vec::new(),
        }
    } else {
        let slow: Vec<bool> = plans.iter().map(|p| p.slow).collect();
        publish(cfg, &names, &live, slow, &set_phase, &mut report).await?
    };

    // Stop the clients and merge what they saw.
    if let Some(s) = &sampler {
        s.stop_periodic();
    }
    let _ = stop_tx.send(true);
    let outcomes: Vec<Outcome> = futures_util::future::join_all(handles)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    report.dropped_clients = outcomes.iter().filter(|o| o.dropped && !o.slow).count();
    report.dropped_slow_consumer = outcomes
        .iter()
        .filter(|o| o.dropped && !o.slow && o.close_code == Some(4000))
        .count();
    report.seq_gaps = outcomes.iter().map(|o| o.gaps).sum();
    report.out_of_order = outcomes.iter().map(|o| o.out_of_order).sum();
    report.other_messages = outcomes.iter().map(|o| o.other).sum();
    report.slow_closed = outcomes.iter().filter(|o| o.slow && o.dropped).count();
    report.slow_closed_4000 = outcomes
        .iter()
        .filter(|o| o.slow && o.dropped && o.close_code == Some(4000))
        .count();
    report.reconnects = live.reconnects.load(Ordering::Relaxed);
    report.reconnect_failed = live.reconnect_failed.load(Ordering::Relaxed);
    report.churned_clients = outcomes.iter().filter(|o| o.churned).count();
    let stayers: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.connected && !o.slow && !o.churned)
        .collect();
    report.stayed_clients = stayers.len();
    report.stayed_seq_gaps = stayers.iter().map(|o| o.gaps).sum();
    if !cfg.idle {
        report.stayers_with_loss = Some(
            stayers
                .iter()
                .filter(|o| o.delivered < window.accepted.get(o.channel).copied().unwrap_or(0))
                .count(),
        );
    }
    if let Some(s) = sampler {
        let points = s.finish().await?;
        if let Some(path) = &cfg.samples_csv {
            soak::write_csv(&points, path)?;
        }
        report.set_samples(&points);
    }
    if !cfg.idle {
        let hist = live.latency.merged();
        report.set_latency(latency::summarize(&hist));
        report.latency_p99_vs_interleaved_floor =
            match (&report.floor_interleaved, report.latency_p99_us) {
                (Some(f), Some(p99)) if f.last_completion_us > 0.0 => {
                    Some(p99 as f64 / f.last_completion_us)
                }
                _ => None,
            };
        report.set_latency_cdf(&hist);
    }
    finish(cfg, &mut report, &window, &outcomes);
    Ok(report)
}

/// `--touch`: publishes one event to every channel, then waits (a round at most
/// [`TOUCH_ROUND`]) until every connected reading client has received one; repeats up to
/// [`TOUCH_ROUNDS`] times. Clients that never got one are a warning, not an error: the RSS
/// figure is still reported, with `touched_clients` saying how many were used.
async fn touch(
    cfg: &Config,
    names: &[String],
    plans: &[Plan],
    live: &Live,
    report: &mut Report,
) -> anyhow::Result<()> {
    let endpoint = cfg
        .publish_to
        .as_ref()
        .context("no publish endpoint resolved")?;
    // Readers that connected (slow clients never read, so they cannot be waited for).
    let readers: usize = live
        .readers
        .iter()
        .map(|r| r.load(Ordering::Relaxed) as usize)
        .sum();
    let slow_connected = plans.iter().filter(|p| p.slow).count();
    let started = Instant::now();
    let bar = Progress::count(readers as u64, "touch");
    let mut published = 0;
    let mut rounds = 0;
    let mut done_at = None;
    while rounds < TOUCH_ROUNDS && done_at.is_none() {
        rounds += 1;
        let once = publisher::publish_once(
            cfg.publish,
            endpoint,
            names,
            cfg.payload_bytes,
            cfg.pipeline,
        )
        .await
        .context("publishing the touch events")?;
        published += once.accepted;
        if let Some(e) = once.first_error {
            report.warnings.push(format!(
                "{} touch publishes were refused (round {rounds}): {e}",
                once.errors
            ));
        }
        let deadline = Instant::now() + TOUCH_ROUND;
        loop {
            let got = live.with_event.load(Ordering::Relaxed);
            bar.set(got as u64, format!("round {rounds}"));
            if got >= readers {
                done_at = Some(started.elapsed());
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    bar.finish();
    let touched = live.with_event.load(Ordering::Relaxed);
    report.touch_published = Some(published);
    report.touch_rounds = Some(rounds);
    report.touched_clients = Some(touched);
    report.touch_s = Some(done_at.unwrap_or_else(|| started.elapsed()).as_secs_f64());
    if touched < readers {
        report.warnings.push(format!(
            "--touch: only {touched} of {readers} reading clients received an event in \
             {rounds} round(s); the figure mixes used and fresh connections"
        ));
    }
    if slow_connected > 0 {
        report.warnings.push(format!(
            "--touch: {slow_connected} slow clients never read their event; it stays queued"
        ));
    }
    Ok(())
}

/// Holds idle connections for `--duration` seconds.
async fn hold_idle(cfg: &Config) {
    let total = Duration::from_secs_f64(cfg.duration_s);
    let bar = Progress::timed(total.as_millis() as u64, "idle");
    let started = Instant::now();
    while started.elapsed() < total {
        bar.set(started.elapsed().as_millis() as u64, String::new());
        let left = total.saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
    bar.finish();
}

/// The measured window of a publish run.
struct Window {
    /// Snapshots at the window's start and after the drain.
    start: Snapshot,
    end: Snapshot,
    /// Per channel: accepted in-window publishes × reading subscribers.
    channel_expected: Vec<u64>,
    /// Per channel: accepted in-window publishes (what each stayer should have received).
    accepted: Vec<u64>,
}

/// Publishes through the warm-up and the window, then drains.
async fn publish(
    cfg: &Config,
    names: &Arc<Vec<String>>,
    live: &Arc<Live>,
    slow: Vec<bool>,
    set_phase: &dyn Fn(Phase),
    report: &mut Report,
) -> anyhow::Result<Window> {
    // The gateway's drop counters cover the whole publish phase, warm-up included: a client
    // closed as a slow consumer during the warm-up matters as much as one closed later.
    let counters_before = scrape::fetch(cfg.target.addr, &cfg.target.host).await.ok();
    let warmup_ns = (cfg.warmup_s * 1e9) as u64;
    let duration_ns = (cfg.duration_s * 1e9) as u64;
    let start_ns = now_ns() + warmup_ns;
    let end_ns = start_ns + duration_ns;
    live.window_start_ns.store(start_ns, Ordering::Relaxed);
    live.window_end_ns.store(end_ns, Ordering::Relaxed);

    let endpoint = cfg
        .publish_to
        .clone()
        .context("no publish endpoint resolved")?;
    let stats = Arc::new(PubStats::new(cfg.channels));
    let p = cfg.publishers.min(cfg.channels);
    // Every publisher paces from one clock, a little ahead so that all have connected.
    let origin = Instant::now() + PACING_LEAD;
    let floor = match cfg.floor_cores {
        Some((sender_core, reader_core)) => Some(
            floor::Interleaved::start(
                cfg.clients.div_ceil(cfg.channels),
                cfg.payload_bytes,
                sender_core,
                reader_core,
                floor::Schedule {
                    origin,
                    interval: Duration::from_secs_f64(p as f64 / cfg.rate as f64),
                    window_start_ns: start_ns,
                    window_end_ns: end_ns,
                },
            )
            .context("starting the interleaved floor")?,
        ),
        None => None,
    };
    let pubs: Vec<_> = (0..p)
        .map(|j| {
            let job = Job {
                mode: cfg.publish,
                endpoint: endpoint.clone(),
                owned: (j..cfg.channels).step_by(p).collect(),
                names: names.clone(),
                rate: cfg.rate as f64 / p as f64,
                payload_bytes: cfg.payload_bytes,
                pipeline: cfg.pipeline,
                window_start_ns: start_ns,
                window_end_ns: end_ns,
                origin,
            };
            tokio::spawn(publisher::run(job, stats.clone()))
        })
        .collect();

    let churn = (cfg.churn_pct_per_min > 0.0).then(|| {
        let until = Instant::now() + Duration::from_nanos(end_ns.saturating_sub(now_ns()));
        tokio::spawn(soak::churn(
            live.clone(),
            slow,
            cfg.churn_pct_per_min,
            until,
        ))
    });

    let total_ms = (warmup_ns + duration_ns) / 1_000_000;
    let bar = Progress::timed(total_ms, "publish");
    let show = |bar: &Progress| {
        let elapsed_ms = (now_ns().saturating_sub(start_ns - warmup_ns)) / 1_000_000;
        bar.set(
            elapsed_ms.min(total_ms),
            format!(
                "sent {}  received {}",
                stats.sent.load(Ordering::Relaxed),
                live.received.load(Ordering::Relaxed)
            ),
        );
    };
    while now_ns() < start_ns {
        show(&bar);
        let left = Duration::from_nanos(start_ns.saturating_sub(now_ns()));
        tokio::time::sleep(left.min(Duration::from_millis(50))).await;
    }
    set_phase(Phase::Window);
    let mut start = Snapshot::take(cfg, false).await?;
    start.counters = counters_before;
    while pubs.iter().any(|h| !h.is_finished()) {
        show(&bar);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish();
    if let Some(floor) = floor {
        // The sender stops at the window's end, which has passed: this joins at once.
        match tokio::task::spawn_blocking(move || floor.finish()).await {
            Ok(Ok(f)) => report.floor_interleaved = Some(f),
            Ok(Err(e)) => report
                .warnings
                .push(format!("the interleaved floor failed: {e:#}")),
            Err(e) => report
                .warnings
                .push(format!("the interleaved floor panicked: {e}")),
        }
    }
    for (j, h) in pubs.into_iter().enumerate() {
        let err = match h.await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("publisher {j} failed: {e:#}"),
            Err(e) => format!("publisher {j} panicked: {e}"),
        };
        report.warnings.push(err.clone());
        let mut first = stats.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(err);
    }

    // Expected deliveries, then drain until they are in or nothing moves.
    let accepted: Vec<u64> = stats
        .accepted_in_window
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let readers: Vec<u64> = live
        .readers
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .collect();
    let expected: u64 = accepted.iter().zip(&readers).map(|(a, r)| a * r).sum();
    let drain_started = Instant::now();
    let mut last = live.delivered.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while last < expected
        && last_change.elapsed() < DRAIN_QUIET
        && drain_started.elapsed() < DRAIN_MAX
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = live.delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    let end = Snapshot::take(cfg, true).await?;
    if let Some(task) = churn {
        report.churn_kicks = Some(task.await.unwrap_or(0));
    }

    let delivered = live.delivered.load(Ordering::Relaxed);
    let published: u64 = accepted.iter().sum();
    let last_rx = live.last_in_window_ns.load(Ordering::Relaxed);
    let window_s = (last_rx.saturating_sub(start_ns) as f64 / 1e9).max(cfg.duration_s);
    report.window_s = Some(window_s);
    report.sent = Some(stats.sent.load(Ordering::Relaxed));
    report.published = Some(published);
    report.publish_rate_per_s = Some(rate(published as f64, cfg.duration_s));
    report.publish_errors = Some(stats.errors.load(Ordering::Relaxed));
    report.publish_error = stats
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    report.expected = Some(expected);
    report.delivered = Some(delivered);
    let lost = expected.saturating_sub(delivered);
    report.lost = Some(lost);
    report.loss_pct = Some(if expected == 0 {
        0.0
    } else {
        lost as f64 / expected as f64 * 100.0
    });
    report.delivered_per_s = Some(rate(delivered as f64, window_s));
    Ok(Window {
        start,
        end,
        channel_expected: accepted.iter().zip(&readers).map(|(a, r)| a * r).collect(),
        accepted,
    })
}

/// The report's skeleton: what was asked for.
fn base_report(cfg: &Config, nofile: u64) -> Report {
    Report {
        scenario: cfg.scenario.clone(),
        description: cfg.description.clone(),
        mode: if cfg.idle { "idle" } else { "publish" },
        target: cfg.ws_url(),
        subscribe: cfg.subscribe.name(),
        publish: (!cfg.idle || cfg.touch).then(|| cfg.publish.name()),
        touched: cfg.touch,
        clients: cfg.clients,
        channels: cfg.channels,
        slow_clients: cfg.slow_clients(),
        churn_pct_per_min: cfg.churn_pct_per_min,
        rate: cfg.rate,
        payload_bytes: cfg.payload_bytes,
        warmup_s: cfg.warmup_s,
        duration_s: cfg.duration_s,
        client_threads: cfg.client_threads,
        publishers: cfg.publishers.min(cfg.channels),
        gateway_pid: cfg.server_pid,
        nofile_limit: nofile,
        ..Report::default()
    }
}

/// Fills in CPU, memory, per-channel loss and the warnings.
fn finish(cfg: &Config, r: &mut Report, window: &Window, outcomes: &[Outcome]) {
    let (start, end) = (&window.start, &window.end);
    if !cfg.idle {
        let expected = &window.channel_expected;
        let mut got = vec![0u64; cfg.channels];
        for o in outcomes.iter().filter(|o| !o.slow) {
            got[o.channel] += o.delivered;
        }
        r.channels_with_loss = Some(expected.iter().zip(&got).filter(|&(e, g)| g < e).count());
    }

    let wall = start.me.wall_since(&end.me);
    r.loadtest_cpu_s = start.me.cpu_since(&end.me);
    r.loadtest_cpu_pct = rate(r.loadtest_cpu_s, wall) * 100.0;
    r.loadtest_rss_max_kib = end.me.hwm_kib;
    let busiest = procfs::busiest_thread_pct(&start.threads, &end.threads, wall);
    r.loadtest_max_thread_cpu_pct = busiest;
    r.loadtest_runqueue_wait_s = start.me.runqueue_wait_since(&end.me);
    if let (Some(p0), Some(p1)) = (start.pressure_us, end.pressure_us) {
        r.host_cpu_pressure_pct = Some(rate(p1.saturating_sub(p0) as f64 / 1e6, wall) * 100.0);
    }
    r.loadtest_saturated = busiest > SATURATED_PCT;
    if r.loadtest_saturated {
        r.warnings.push(format!(
            "a load-test thread used {busiest:.0} % of a core: the load test, not the gateway, \
             may be the bottleneck (try --client-threads or a faster client machine)"
        ));
    }

    if let (Some(g0), Some(g1)) = (&start.gateway, &end.gateway) {
        let cpu = g0.cpu_since(g1);
        let pct = rate(cpu, g0.wall_since(g1)) * 100.0;
        r.gateway_cpu_s = Some(cpu);
        r.gateway_cpu_pct = Some(pct);
        r.gateway_runqueue_wait_s = g0.runqueue_wait_since(g1);
        r.gateway_rss_before_kib = Some(g0.rss_kib);
        r.gateway_rss_after_kib = Some(g1.rss_kib);
        if let Some(delivered) = r.delivered
            && cpu > 0.0
        {
            r.delivered_per_gateway_cpu_s = Some(delivered as f64 / cpu);
        }
        if cfg.idle && r.connected > 0 {
            let grown = (g1.rss_kib as f64 - g0.rss_kib as f64) * 1024.0;
            r.rss_per_idle_conn_bytes = Some(grown / r.connected as f64);
            // Memory freed by earlier connections stays in the process (the allocator keeps
            // it) and is reused, so only a fresh gateway gives the real figure.
            let served_before = start.counters.map(|c| c.bytes_in).unwrap_or(0);
            if served_before > FRESH_BYTES_IN || g0.hwm_kib > g0.rss_kib + g0.rss_kib / 10 + 1024 {
                r.warnings.push(format!(
                    "the gateway had already served clients ({served_before} bytes read, peak \
                     RSS {} KiB): it reuses their memory, so the RSS per idle connection is \
                     understated; restart the gateway before an idle run",
                    g0.hwm_kib
                ));
            }
        }
        if !cfg.idle && cfg.rate == 0 && pct < SATURATED_PCT {
            r.warnings.push(format!(
                "max-rate run, but the gateway used only {pct:.0} % of a core: this is not the \
                 gateway's limit (see the load test's CPU)"
            ));
        }
    } else {
        r.warnings
            .push("no --server-pid: the gateway's CPU and RSS were not measured".to_string());
    }

    let waits = [
        ("gateway", r.gateway_runqueue_wait_s),
        ("load test", r.loadtest_runqueue_wait_s),
    ];
    for (who, wait) in waits {
        if let Some(w) = wait
            && w > CONTENDED_SHARE * wall
        {
            r.warnings.push(format!(
                "the {who}'s threads waited {w:.2} s for a CPU in a {wall:.2} s window: the host \
                 is short of CPU, so these figures measure the host, not the gateway"
            ));
        }
    }

    if let (Some(c0), Some(c1)) = (start.counters, end.counters) {
        let d = c1.since(&c0);
        r.gateway_queue_drops = Some(d.queue_drops);
        r.gateway_slow_consumer_closes = Some(d.slow_consumer_closes);
        r.gateway_redis_events_dropped = Some(d.redis_events_dropped);
        r.gateway_frames_out = Some(d.messages_out);
        r.gateway_writes = Some(d.writes);
        r.gateway_direct_writes = Some(d.direct_writes);
        r.gateway_frames_per_write =
            (d.writes > 0).then(|| d.messages_out as f64 / d.writes as f64);
    }

    if r.connect_failed > 0 {
        r.warnings.push(format!(
            "{} of {} clients failed to connect",
            r.connect_failed, r.clients
        ));
    }
    if r.publish_errors.is_some_and(|e| e > 0) {
        r.warnings.push(format!(
            "{} publishes were refused",
            r.publish_errors.unwrap_or(0)
        ));
    }
    if r.dropped_clients > 0 {
        r.warnings.push(format!(
            "{} clients were disconnected during the run ({} closed as slow consumers, 4000)",
            r.dropped_clients, r.dropped_slow_consumer
        ));
    }
}

/// `n / secs`, or 0 for an empty interval.
fn rate(n: f64, secs: f64) -> f64 {
    if secs > 0.0 { n / secs } else { 0.0 }
}
