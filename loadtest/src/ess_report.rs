//! The `ess` subcommand's measurements and report: the gateway's and the load test's CPU over
//! the measured interval (per gateway thread too), the gateway's RSS, rates, and warnings when
//! the figure may not measure the gateway. The samples are taken on the load test's runtime;
//! the report is pure. Every JSON field is in `loadtest/README.md`.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::ess::{EssArgs, Mode, ReadOutcome, RssWatch};
use crate::ess_body::BodyKind;
use crate::procfs::{self, Pid, Sample};

/// A load test thread above this share of a core may be the bottleneck.
const SATURATED_PCT: f64 = 90.0;

/// The gateway's readings at the start of the interval.
struct GatewayStart {
    pid: u32,
    sample: Sample,
    /// [`procfs::thread_cpu_ns`]: name and CPU ns per thread id.
    threads: HashMap<u32, (String, u64)>,
}

/// Samples taken at the start of the measured interval.
pub struct Reading {
    gateway: Option<GatewayStart>,
    broker: Option<(u32, Sample)>,
    me: Sample,
    my_threads: HashMap<u32, u64>,
    rss: Option<RssWatch>,
    at: Instant,
}

/// One gateway thread's CPU over the interval (threads of one name summed).
#[derive(Debug, Clone, Serialize)]
pub struct ThreadCpu {
    pub thread: String,
    /// From `schedstat` (ns), so the shares are exact where `gateway_cpu_s` is in ticks.
    pub cpu_s: f64,
    /// Share of the summed thread CPU time, in %.
    pub share_pct: f64,
}

/// What the interval measured.
pub struct Measured {
    read: ReadOutcome,
    wall_s: f64,
    gateway: Option<(Sample, Sample, Vec<ThreadCpu>)>,
    rss_max_kib: Option<u64>,
    /// The gateway's CPU seconds summed over its threads' `schedstat` (ns).
    sched_cpu_s: Option<f64>,
    broker_cpu_s: Option<f64>,
    me: (Sample, Sample),
    max_thread_pct: f64,
}

impl Reading {
    /// Samples the gateway (`--server-pid`), its threads, the broker (`--broker-pid`) and the
    /// load test now.
    pub fn start(args: &EssArgs, rss: Option<RssWatch>) -> anyhow::Result<Reading> {
        let broker = args
            .broker_pid
            .and_then(|p| Some((p, Sample::take(Pid::Other(p)).ok()?)));
        let gateway = args.server_pid.and_then(|p| {
            let s = Sample::take(Pid::Other(p)).ok()?;
            Some(GatewayStart {
                pid: p,
                sample: s,
                threads: procfs::thread_cpu_ns(p),
            })
        });
        Ok(Reading {
            gateway,
            broker,
            me: Sample::take(Pid::Me)?,
            my_threads: procfs::my_thread_ticks(),
            rss,
            at: Instant::now(),
        })
    }

    /// Samples again after `read` ended.
    pub fn finish(self, read: ReadOutcome) -> anyhow::Result<Measured> {
        let wall_s = self.at.elapsed().as_secs_f64();
        let me = Sample::take(Pid::Me)?;
        let max_thread_pct =
            procfs::busiest_thread_pct(&self.my_threads, &procfs::my_thread_ticks(), wall_s);
        let rss_max_kib = self.rss.map(RssWatch::finish);
        let broker_cpu_s = self
            .broker
            .and_then(|(pid, before)| Some(before.cpu_since(&Sample::take(Pid::Other(pid)).ok()?)));
        let mut sched_cpu_s = None;
        let gateway = match self.gateway {
            Some(GatewayStart {
                pid,
                sample: before,
                threads,
            }) => {
                let after = Sample::take(Pid::Other(pid))?;
                let per = procfs::thread_cpu_since(&threads, &procfs::thread_cpu_ns(pid));
                let total = per.iter().map(|t| t.1).sum::<f64>().max(1e-9);
                sched_cpu_s = Some(total);
                let per = per
                    .into_iter()
                    .map(|(thread, cpu_s)| ThreadCpu {
                        thread,
                        cpu_s,
                        share_pct: cpu_s / total * 100.0,
                    })
                    .collect();
                Some((before, after, per))
            }
            None => None,
        };
        Ok(Measured {
            read,
            wall_s,
            gateway,
            rss_max_kib,
            sched_cpu_s,
            broker_cpu_s,
            me: (self.me, me),
            max_thread_pct,
        })
    }
}

/// The report: one flat JSON object (`gateway_threads` is the one array).
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub body: BodyKind,
    pub body_bytes: usize,
    pub messages: u64,
    pub read_rate: Option<u64>,
    pub publish_s: Option<f64>,
    pub publish_rate_per_s: Option<f64>,
    pub frames_expected: u64,
    pub frames: u64,
    pub out_of_order: u64,
    pub other_frames: u64,
    pub close_code: Option<u16>,
    pub closed_early: bool,
    pub wall_s: f64,
    pub first_frame_s: f64,
    pub msgs_per_s: f64,
    pub gateway_cpu_s: Option<f64>,
    pub gateway_cpu_pct: Option<f64>,
    pub msgs_per_gateway_cpu_s: Option<f64>,
    pub gateway_us_per_msg: Option<f64>,
    pub gateway_runqueue_wait_s: Option<f64>,
    pub gateway_rss_before_kib: Option<u64>,
    pub gateway_rss_max_kib: Option<u64>,
    pub gateway_rss_after_kib: Option<u64>,
    pub gateway_hwm_kib: Option<u64>,
    pub gateway_sched_cpu_s: Option<f64>,
    pub msgs_per_gateway_sched_cpu_s: Option<f64>,
    pub gateway_threads: Vec<ThreadCpu>,
    pub broker_cpu_pct: Option<f64>,
    pub slow_consumer_closes: Option<u64>,
    /// From `/metrics`, over the run (publish included): RabbitMQ chunks delivered, messages
    /// turned into frames, their ratio, and shard-inbox-full retries.
    pub rabbit_chunks: Option<u64>,
    pub rabbit_messages: Option<u64>,
    pub msgs_per_chunk: Option<f64>,
    pub rabbit_inbox_full_retries: Option<u64>,
    pub loadtest_cpu_s: f64,
    pub loadtest_cpu_pct: f64,
    pub loadtest_max_thread_cpu_pct: f64,
    pub loadavg: String,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn new(args: &EssArgs) -> Report {
        let expected = match args.mode {
            Mode::Live => args.messages,
            Mode::Replay | Mode::Slow => args.messages.saturating_sub(1),
        };
        Report {
            mode: args.mode,
            body: args.body,
            body_bytes: args.body_bytes,
            messages: args.messages,
            read_rate: (args.mode == Mode::Slow).then_some(args.read_rate),
            publish_s: None,
            publish_rate_per_s: None,
            frames_expected: expected,
            frames: 0,
            out_of_order: 0,
            other_frames: 0,
            close_code: None,
            closed_early: false,
            wall_s: 0.0,
            first_frame_s: 0.0,
            msgs_per_s: 0.0,
            gateway_cpu_s: None,
            gateway_cpu_pct: None,
            msgs_per_gateway_cpu_s: None,
            gateway_us_per_msg: None,
            gateway_runqueue_wait_s: None,
            gateway_rss_before_kib: None,
            gateway_rss_max_kib: None,
            gateway_rss_after_kib: None,
            gateway_hwm_kib: None,
            gateway_sched_cpu_s: None,
            msgs_per_gateway_sched_cpu_s: None,
            gateway_threads: Vec::new(),
            broker_cpu_pct: None,
            slow_consumer_closes: None,
            rabbit_chunks: None,
            rabbit_messages: None,
            msgs_per_chunk: None,
            rabbit_inbox_full_retries: None,
            loadtest_cpu_s: 0.0,
            loadtest_cpu_pct: 0.0,
            loadtest_max_thread_cpu_pct: 0.0,
            loadavg: String::new(),
            warnings: Vec::new(),
        }
    }

    /// The pre-publish (replay, slow) took `s` seconds.
    pub fn set_publish(&mut self, s: f64) {
        self.publish_s = Some(s);
        self.publish_rate_per_s = Some(self.messages as f64 / s.max(1e-9));
    }

    pub fn set_reading(&mut self, m: Measured) {
        let r = &m.read;
        self.frames = r.frames;
        self.out_of_order = r.out_of_order;
        self.other_frames = r.other_frames;
        self.close_code = r.closed.flatten();
        self.closed_early = r.closed.is_some();
        self.first_frame_s = r.first_frame_s;
        self.wall_s = m.wall_s;
        self.msgs_per_s = r.frames as f64 / m.wall_s.max(1e-9);
        if let Some((before, after, threads)) = m.gateway {
            let cpu = before.cpu_since(&after);
            self.gateway_cpu_s = Some(cpu);
            self.gateway_cpu_pct = Some(cpu / m.wall_s.max(1e-9) * 100.0);
            self.msgs_per_gateway_cpu_s = (cpu > 0.0).then(|| r.frames as f64 / cpu);
            self.gateway_us_per_msg = (r.frames > 0).then(|| cpu * 1e6 / r.frames as f64);
            self.gateway_runqueue_wait_s = before.runqueue_wait_since(&after);
            self.gateway_rss_before_kib = Some(before.rss_kib);
            self.gateway_rss_after_kib = Some(after.rss_kib);
            self.gateway_hwm_kib = Some(after.hwm_kib);
            self.gateway_threads = threads;
        }
        self.gateway_rss_max_kib = m.rss_max_kib;
        self.gateway_sched_cpu_s = m.sched_cpu_s;
        self.msgs_per_gateway_sched_cpu_s = m.sched_cpu_s.map(|c| r.frames as f64 / c);
        self.broker_cpu_pct = m.broker_cpu_s.map(|c| c / m.wall_s.max(1e-9) * 100.0);
        let (me0, me1) = m.me;
        self.loadtest_cpu_s = me0.cpu_since(&me1);
        self.loadtest_cpu_pct = self.loadtest_cpu_s / m.wall_s.max(1e-9) * 100.0;
        self.loadtest_max_thread_cpu_pct = m.max_thread_pct;
    }

    /// The gateway's counter increases over the run.
    pub fn set_counters(&mut self, c: &crate::scrape::Counters) {
        self.slow_consumer_closes = Some(c.slow_consumer_closes);
        self.rabbit_chunks = Some(c.rabbit_chunks);
        self.rabbit_messages = Some(c.rabbit_messages);
        self.msgs_per_chunk =
            (c.rabbit_chunks > 0).then(|| c.rabbit_messages as f64 / c.rabbit_chunks as f64);
        self.rabbit_inbox_full_retries = Some(c.rabbit_inbox_full_retries);
    }

    /// Reads the load average and adds the warnings.
    pub fn finish(&mut self) {
        self.loadavg = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        self.warnings = self.check();
    }

    fn check(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.frames < self.frames_expected {
            w.push(format!(
                "only {} of {} frames arrived",
                self.frames, self.frames_expected
            ));
        }
        if self.out_of_order > 0 {
            w.push(format!("{} frames out of order", self.out_of_order));
        }
        if self.closed_early {
            w.push(format!(
                "the gateway closed the socket ({:?})",
                self.close_code
            ));
        }
        if self.loadtest_max_thread_cpu_pct > SATURATED_PCT {
            w.push(format!(
                "a load test thread used {:.0} % of a core: the client may be the bottleneck",
                self.loadtest_max_thread_cpu_pct
            ));
        }
        if let (Some(pct), false) = (self.gateway_cpu_pct, self.mode == Mode::Slow)
            && pct < SATURATED_PCT
        {
            w.push(format!(
                "the gateway used {pct:.0} % of a core: something else (client, RabbitMQ, \
                 host) set the pace"
            ));
        }
        if let (Some(q), true) = (self.gateway_runqueue_wait_s, self.wall_s > 0.0)
            && q / self.wall_s > 0.1
        {
            w.push(format!(
                "the gateway's threads waited {q:.2} s for a CPU ({:.0} % of the interval)",
                q / self.wall_s * 100.0
            ));
        }
        w
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
        s += &format!(
            "ess {:?} {:?} {} B, {} messages published{}\n",
            self.mode,
            self.body,
            self.body_bytes,
            self.messages,
            self.publish_rate_per_s.map_or(String::new(), |r| format!(
                " at {r:.0}/s (before connecting)"
            ))
        );
        s += &format!(
            "frames         {} of {} in {:.3} s ({:.0} msgs/s; first after {:.3} s), \
             {} out of order, close {:?}\n",
            self.frames,
            self.frames_expected,
            self.wall_s,
            self.msgs_per_s,
            self.first_frame_s,
            self.out_of_order,
            self.close_code
        );
        s += &format!(
            "gateway        {} CPU-s ({} % of a core), {} msgs per CPU-s, {} µs per msg; \
             by schedstat {} CPU-s, {} msgs per CPU-s\n",
            opt(self.gateway_cpu_s, 3),
            opt(self.gateway_cpu_pct, 0),
            opt(self.msgs_per_gateway_cpu_s, 0),
            opt(self.gateway_us_per_msg, 2),
            opt(self.gateway_sched_cpu_s, 3),
            opt(self.msgs_per_gateway_sched_cpu_s, 0)
        );
        s += &format!(
            "broker         {} % of a core\n",
            opt(self.broker_cpu_pct, 0)
        );
        for t in &self.gateway_threads {
            s += &format!(
                "  thread       {:<20} {:.3} CPU-s ({:.0} %)\n",
                t.thread, t.cpu_s, t.share_pct
            );
        }
        let kib = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        s += &format!(
            "gateway RSS    before {} KiB, max {} KiB, after {} KiB, VmHWM {} KiB\n",
            kib(self.gateway_rss_before_kib),
            kib(self.gateway_rss_max_kib),
            kib(self.gateway_rss_after_kib),
            kib(self.gateway_hwm_kib)
        );
        s += &format!(
            "load test      {:.3} CPU-s ({:.0} % of a core, busiest thread {:.0} %); loadavg {}\n",
            self.loadtest_cpu_s,
            self.loadtest_cpu_pct,
            self.loadtest_max_thread_cpu_pct,
            self.loadavg
        );
        for w in &self.warnings {
            s += &format!("warning: {w}\n");
        }
        s
    }
}
