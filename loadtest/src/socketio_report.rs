//! The `socketio` subcommand's measurements and report: the server's CPU over the publish
//! interval (utime + stime from `/proc/PID/stat`, and the threads' `schedstat` as a check),
//! CPU per delivered packet, the load test's own CPU, latency percentiles, and warnings when
//! the figure may not measure the server. Every JSON field is in `loadtest/README.md`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use crate::ess::RssWatch;
use crate::latency::{self, Summary};
use crate::procfs::{self, Pid, Sample};
use crate::scrape::Counters;
use crate::socketio::{PubOutcome, SocketIoArgs};
use crate::socketio_client::{Outcome, Shared};

/// A load test thread above this share of a core may be the bottleneck.
const SATURATED_PCT: f64 = 90.0;

/// The server's pid, its sample and its threads' CPU ([`procfs::thread_cpu_ns`]).
type ServerStart = (u32, Sample, HashMap<u32, (String, u64)>);

/// Samples taken just before the first publish.
pub struct Reading {
    server: Option<ServerStart>,
    me: Sample,
    my_threads: HashMap<u32, u64>,
    pressure_us: Option<u64>,
    rss: Option<RssWatch>,
    at: Instant,
}

/// What the interval measured.
pub struct Measured {
    wall_s: f64,
    server: Option<(Sample, Sample)>,
    server_sched_cpu_s: Option<f64>,
    rss_max_kib: Option<u64>,
    me: (Sample, Sample),
    max_thread_pct: f64,
    pressure_pct: Option<f64>,
}

impl Reading {
    pub fn start(pid: Option<u32>, rss: Option<RssWatch>) -> anyhow::Result<Reading> {
        let server = pid.and_then(|p| {
            Some((
                p,
                Sample::take(Pid::Other(p)).ok()?,
                procfs::thread_cpu_ns(p),
            ))
        });
        Ok(Reading {
            server,
            me: Sample::take(Pid::Me)?,
            my_threads: procfs::my_thread_ticks(),
            pressure_us: procfs::host_cpu_pressure_us(),
            rss,
            at: Instant::now(),
        })
    }

    pub fn finish(self) -> anyhow::Result<Measured> {
        let wall_s = self.at.elapsed().as_secs_f64();
        let me = Sample::take(Pid::Me)?;
        let max_thread_pct =
            procfs::busiest_thread_pct(&self.my_threads, &procfs::my_thread_ticks(), wall_s);
        let pressure_pct = self
            .pressure_us
            .zip(procfs::host_cpu_pressure_us())
            .map(|(a, b)| b.saturating_sub(a) as f64 / 1e6 / wall_s.max(1e-9) * 100.0);
        let mut server_sched_cpu_s = None;
        let server = match self.server {
            Some((pid, before, threads)) => {
                let after = Sample::take(Pid::Other(pid))?;
                let per = procfs::thread_cpu_since(&threads, &procfs::thread_cpu_ns(pid));
                server_sched_cpu_s = Some(per.iter().map(|t| t.1).sum());
                Some((before, after))
            }
            None => None,
        };
        Ok(Measured {
            wall_s,
            server,
            server_sched_cpu_s,
            rss_max_kib: self.rss.map(RssWatch::finish),
            me: (self.me, me),
            max_thread_pct,
            pressure_pct,
        })
    }
}

/// The report: one flat JSON object (`latency_us` is the one nested object).
#[derive(Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub clients: usize,
    pub batch: usize,
    pub events: u64,
    pub rate: f64,
    pub channel: String,
    /// Bytes of one event's data (the record with its stamp).
    pub payload_bytes: usize,
    pub connected: usize,
    pub connect_failed: usize,
    pub first_connect_error: Option<String>,
    pub connect_s: f64,
    /// The server's own count of open sessions once the clients connected.
    pub server_sessions: Option<u64>,
    pub published: u64,
    pub publish_ok: u64,
    pub publish_errors: u64,
    pub publish_first_error: Option<String>,
    pub publish_max_slip_ms: f64,
    pub expected: u64,
    pub delivered: u64,
    pub missing: u64,
    pub out_of_order: u64,
    pub dropped_clients: usize,
    /// Of those, the clients closed before the measured interval ended (the others were
    /// closed while the load test waited for the last publish replies).
    pub dropped_in_interval: usize,
    pub close_codes: Vec<(u16, usize)>,
    pub pongs: u64,
    pub other_frames: u64,
    pub latency_us: Option<Summary>,
    /// From the first send to the end of the interval.
    pub wall_s: f64,
    /// From the last send to the last delivery, ms.
    pub drain_ms: Option<f64>,
    pub delivered_per_s: f64,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    pub server_us_per_delivery: Option<f64>,
    pub deliveries_per_server_cpu_s: Option<f64>,
    pub server_sched_cpu_s: Option<f64>,
    pub deliveries_per_server_sched_cpu_s: Option<f64>,
    pub server_runqueue_wait_s: Option<f64>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_max_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    pub slow_consumer_closes: Option<u64>,
    pub loadtest_cpu_s: f64,
    pub loadtest_cpu_pct: f64,
    pub loadtest_us_per_delivery: Option<f64>,
    pub loadtest_max_thread_cpu_pct: f64,
    pub host_cpu_pressure_pct: Option<f64>,
    pub nofile_limit: u64,
    pub loadavg_before: String,
    pub loadavg: String,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn new(args: &SocketIoArgs, nofile: u64, body: &[u8]) -> Report {
        let mut event = Vec::new();
        crate::radar_payload::write_event(&mut event, crate::payload::now_ns(), 0, body);
        Report {
            label: args.label.clone(),
            clients: args.clients,
            batch: args.batch,
            events: args.events,
            rate: args.rate,
            channel: args.channel.clone(),
            payload_bytes: event.len(),
            connected: 0,
            connect_failed: 0,
            first_connect_error: None,
            connect_s: 0.0,
            server_sessions: None,
            published: 0,
            publish_ok: 0,
            publish_errors: 0,
            publish_first_error: None,
            publish_max_slip_ms: 0.0,
            expected: 0,
            delivered: 0,
            missing: 0,
            out_of_order: 0,
            dropped_clients: 0,
            dropped_in_interval: 0,
            close_codes: Vec::new(),
            pongs: 0,
            other_frames: 0,
            latency_us: None,
            wall_s: 0.0,
            drain_ms: None,
            delivered_per_s: 0.0,
            server_cpu_s: None,
            server_cpu_pct: None,
            server_us_per_delivery: None,
            deliveries_per_server_cpu_s: None,
            server_sched_cpu_s: None,
            deliveries_per_server_sched_cpu_s: None,
            server_runqueue_wait_s: None,
            server_rss_before_kib: None,
            server_rss_max_kib: None,
            server_rss_after_kib: None,
            slow_consumer_closes: None,
            loadtest_cpu_s: 0.0,
            loadtest_cpu_pct: 0.0,
            loadtest_us_per_delivery: None,
            loadtest_max_thread_cpu_pct: 0.0,
            host_cpu_pressure_pct: None,
            nofile_limit: nofile,
            loadavg_before: loadavg(),
            loadavg: String::new(),
            warnings: Vec::new(),
        }
    }

    pub fn set_connects(&mut self, shared: &Shared, connect_s: f64) {
        self.connected = shared.connected.load(Ordering::Relaxed);
        self.connect_failed = shared.failed.load(Ordering::Relaxed);
        self.first_connect_error = shared
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.connect_s = connect_s;
        self.expected = self.connected as u64 * self.events;
    }

    pub fn set_published(&mut self, p: anyhow::Result<PubOutcome>) {
        match p {
            Ok(p) => {
                self.published = p.sent;
                self.publish_ok = p.ok;
                self.publish_errors = p.errors;
                self.publish_first_error = p.first_error;
                self.publish_max_slip_ms = p.max_slip_ms;
            }
            Err(e) => self.publish_first_error = Some(format!("{e:#}")),
        }
    }

    pub fn set_outcomes(&mut self, outcomes: &[Outcome], shared: &Shared) {
        let mut codes: HashMap<u16, usize> = HashMap::new();
        for o in outcomes.iter().filter(|o| o.connected) {
            self.delivered += o.delivered;
            self.out_of_order += o.out_of_order;
            self.pongs += o.pongs;
            self.other_frames += o.other;
            if o.dropped {
                self.dropped_clients += 1;
                *codes.entry(o.close_code.unwrap_or(0)).or_default() += 1;
            }
        }
        self.close_codes = codes.into_iter().collect();
        self.close_codes.sort_unstable();
        self.missing = self.expected.saturating_sub(self.delivered);
        self.latency_us = latency::summarize(&shared.latency.merged());
        let last = shared.last_delivery_ns.load(Ordering::Relaxed);
        let sent = shared.last_send_ns.load(Ordering::Relaxed);
        self.drain_ms = (last > 0 && sent > 0).then(|| last.saturating_sub(sent) as f64 / 1e6);
    }

    pub fn set_measured(&mut self, m: Measured, shared: &Shared) {
        // Deliveries inside the interval: all of them, as the interval ends after the last.
        let delivered = shared.delivered.load(Ordering::Relaxed);
        let per = |cpu: f64| (cpu > 0.0).then(|| delivered as f64 / cpu);
        self.wall_s = m.wall_s;
        self.delivered_per_s = delivered as f64 / m.wall_s.max(1e-9);
        if let Some((before, after)) = m.server {
            let cpu = before.cpu_since(&after);
            self.server_cpu_s = Some(cpu);
            self.server_cpu_pct = Some(cpu / m.wall_s.max(1e-9) * 100.0);
            self.server_us_per_delivery = (delivered > 0).then(|| cpu * 1e6 / delivered as f64);
            self.deliveries_per_server_cpu_s = per(cpu);
            self.server_runqueue_wait_s = before.runqueue_wait_since(&after);
            self.server_rss_before_kib = Some(before.rss_kib);
            self.server_rss_after_kib = Some(after.rss_kib);
        }
        self.server_sched_cpu_s = m.server_sched_cpu_s;
        self.deliveries_per_server_sched_cpu_s = m.server_sched_cpu_s.and_then(per);
        self.server_rss_max_kib = m.rss_max_kib;
        let (me0, me1) = m.me;
        self.loadtest_cpu_s = me0.cpu_since(&me1);
        self.loadtest_cpu_pct = self.loadtest_cpu_s / m.wall_s.max(1e-9) * 100.0;
        self.loadtest_us_per_delivery =
            (delivered > 0).then(|| self.loadtest_cpu_s * 1e6 / delivered as f64);
        self.loadtest_max_thread_cpu_pct = m.max_thread_pct;
        self.host_cpu_pressure_pct = m.pressure_pct;
    }

    pub fn set_counters(&mut self, c: &Counters) {
        self.slow_consumer_closes = Some(c.slow_consumer_closes);
    }

    /// Reads the load average and adds the warnings.
    pub fn finish(&mut self) {
        self.loadavg = loadavg();
        self.warnings = self.check();
    }

    fn check(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.connect_failed > 0 {
            w.push(format!(
                "{} of {} clients did not connect: {}",
                self.connect_failed,
                self.clients,
                self.first_connect_error.as_deref().unwrap_or("?")
            ));
        }
        if let Some(n) = self.server_sessions
            && n < self.connected as u64
        {
            w.push(format!(
                "the server counted {n} sessions for {} connected clients",
                self.connected
            ));
        }
        if self.missing > 0 {
            w.push(format!(
                "{} of {} deliveries missing",
                self.missing, self.expected
            ));
        }
        if self.out_of_order > 0 {
            w.push(format!("{} deliveries out of order", self.out_of_order));
        }
        if self.dropped_clients > 0 {
            w.push(format!(
                "{} clients were closed during the run, {} of them within the measured interval \
                 (close codes {:?}; 0 = no close frame)",
                self.dropped_clients, self.dropped_in_interval, self.close_codes
            ));
        }
        if self.publish_errors > 0 || self.publish_first_error.is_some() {
            w.push(format!(
                "publishing: {} errors, {}",
                self.publish_errors,
                self.publish_first_error.as_deref().unwrap_or("")
            ));
        }
        if self.publish_max_slip_ms > 50.0 {
            w.push(format!(
                "a publish left {:.0} ms late: the load test's runtime was busy",
                self.publish_max_slip_ms
            ));
        }
        if self.loadtest_max_thread_cpu_pct > SATURATED_PCT {
            w.push(format!(
                "a load test thread used {:.0} % of a core: the clients may be the bottleneck",
                self.loadtest_max_thread_cpu_pct
            ));
        }
        if let (Some(q), true) = (self.server_runqueue_wait_s, self.wall_s > 0.0)
            && q / self.wall_s > 0.1
        {
            w.push(format!(
                "the server's threads waited {q:.2} s for a CPU ({:.0} % of the interval)",
                q / self.wall_s * 100.0
            ));
        }
        w
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn human(&self) -> String {
        let opt = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
        let mut s = format!(
            "socketio {}: {} clients ({} connected in {:.1} s, server counts {}), {} events of \
             {} B at {}/s\n",
            self.label,
            self.clients,
            self.connected,
            self.connect_s,
            self.server_sessions
                .map_or("-".to_owned(), |n| n.to_string()),
            self.events,
            self.payload_bytes,
            self.rate
        );
        s += &format!(
            "deliveries     {} of {} ({} missing, {} out of order, {} clients dropped) in \
             {:.2} s; last {} ms after the last send\n",
            self.delivered,
            self.expected,
            self.missing,
            self.out_of_order,
            self.dropped_clients,
            self.wall_s,
            opt(self.drain_ms, 1)
        );
        if let Some(l) = &self.latency_us {
            s += &format!(
                "latency        p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs\n",
                l.p50, l.p99, l.p999, l.max
            );
        }
        s += &format!(
            "server         {} CPU-s ({} % of a core), {} µs per delivery, {} deliveries per \
             CPU-s; by schedstat {} CPU-s, {} per CPU-s\n",
            opt(self.server_cpu_s, 3),
            opt(self.server_cpu_pct, 0),
            opt(self.server_us_per_delivery, 2),
            opt(self.deliveries_per_server_cpu_s, 0),
            opt(self.server_sched_cpu_s, 3),
            opt(self.deliveries_per_server_sched_cpu_s, 0)
        );
        s += &format!(
            "load test      {:.3} CPU-s ({:.0} % of a core, busiest thread {:.0} %), {} µs per \
             delivery; host CPU pressure {} %; loadavg {} → {}\n",
            self.loadtest_cpu_s,
            self.loadtest_cpu_pct,
            self.loadtest_max_thread_cpu_pct,
            opt(self.loadtest_us_per_delivery, 2),
            opt(self.host_cpu_pressure_pct, 0),
            self.loadavg_before,
            self.loadavg
        );
        for w in &self.warnings {
            s += &format!("warning: {w}\n");
        }
        s
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
