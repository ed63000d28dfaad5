//! The result of one `run`: every number, as one flat JSON object (`--json`, field names are
//! stable and documented in `loadtest/README.md`) or as an aligned human summary.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::latency::Summary;

/// One row of `samples`: `[t_s, phase, rss_kib, fds, clients]`.
pub type SampleRow = (f64, &'static str, u64, u64, usize);

/// Points in `latency_cdf`.
const CDF_POINTS: usize = 50;

/// Everything a run measured. Fields that do not apply (publishing in an idle run, gateway
/// figures without `--server-pid`) are `null` in JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    // What ran.
    pub scenario: Option<String>,
    pub description: Option<String>,
    /// `"publish"` or `"idle"`.
    pub mode: &'static str,
    pub target: String,
    pub subscribe: &'static str,
    pub publish: Option<&'static str>,
    pub clients: usize,
    pub channels: usize,
    pub slow_clients: usize,
    pub churn_pct_per_min: f64,
    pub rate: u64,
    pub payload_bytes: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub client_threads: usize,
    pub publishers: usize,

    // Connect phase.
    pub connected: usize,
    pub connect_failed: usize,
    pub connect_s: f64,
    pub connect_rate_per_s: f64,
    pub connect_error: Option<String>,

    // `--touch` (idle runs): one event per channel before the hold.
    /// Whether the idle connections were used (`--touch`) before the hold.
    pub touched: bool,
    /// Touch publishes accepted (one per channel and round), and the rounds it took.
    pub touch_published: Option<u64>,
    pub touch_rounds: Option<u32>,
    /// Reading clients that had received at least one event when the hold started.
    pub touched_clients: Option<usize>,
    /// Seconds from the first touch publish until every reading client had an event.
    pub touch_s: Option<f64>,

    // Publish and delivery, inside the measured window.
    pub window_s: Option<f64>,
    pub sent: Option<u64>,
    pub published: Option<u64>,
    pub publish_rate_per_s: Option<f64>,
    pub publish_errors: Option<u64>,
    pub publish_error: Option<String>,
    pub expected: Option<u64>,
    pub delivered: Option<u64>,
    pub lost: Option<u64>,
    pub loss_pct: Option<f64>,
    pub delivered_per_s: Option<f64>,
    pub channels_with_loss: Option<usize>,
    pub seq_gaps: u64,
    pub out_of_order: u64,
    pub other_messages: u64,
    pub dropped_clients: usize,
    pub dropped_slow_consumer: usize,
    /// Slow clients the gateway had closed by the end, and those closed with 4000.
    pub slow_closed: usize,
    pub slow_closed_4000: usize,

    // Churn and the clients that stayed.
    /// Churn kicks sent (`null` without churn).
    pub churn_kicks: Option<u64>,
    pub reconnects: u64,
    pub reconnect_failed: u64,
    pub churned_clients: usize,
    /// Readers that were never churned (connected the whole run unless the gateway dropped them).
    pub stayed_clients: usize,
    /// Stayers that received fewer in-window events than were published on their channel.
    pub stayers_with_loss: Option<usize>,
    pub stayed_seq_gaps: u64,

    // The gateway over time (`--sample-every`; `null` without it).
    /// `[t_s, phase, rss_kib, fds, clients]` rows.
    pub samples: Option<Vec<SampleRow>>,
    pub rss_after_warmup_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub rss_drift_pct: Option<f64>,
    pub rss_max_kib: Option<u64>,
    pub fds_before: Option<u64>,
    pub fds_max: Option<u64>,
    pub fds_after_clients_left: Option<u64>,
    pub rss_after_clients_left_kib: Option<u64>,

    // Latency, µs.
    pub latency_count: u64,
    pub latency_p50_us: Option<u64>,
    pub latency_p90_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
    pub latency_p999_us: Option<u64>,
    pub latency_max_us: Option<u64>,
    pub latency_mean_us: Option<f64>,
    /// `[latency_us, quantile]` pairs from the histogram, quantile ascending from 0 (the
    /// minimum) to 1 (the maximum), denser in the tail; `null` when nothing was received.
    pub latency_cdf: Option<Vec<(u64, f64)>>,
    /// The floor run during the window, halfway between publishes (`--floor-cores`).
    pub floor_interleaved: Option<crate::floor::InterleavedFloor>,
    /// `latency_p99_us` / the interleaved floor's median last completion.
    pub latency_p99_vs_interleaved_floor: Option<f64>,

    // The gateway (with --server-pid; counters from GET /metrics).
    pub gateway_pid: Option<u32>,
    pub gateway_cpu_s: Option<f64>,
    pub gateway_cpu_pct: Option<f64>,
    pub gateway_runqueue_wait_s: Option<f64>,
    pub gateway_rss_before_kib: Option<u64>,
    pub gateway_rss_after_kib: Option<u64>,
    pub delivered_per_gateway_cpu_s: Option<f64>,
    pub rss_per_idle_conn_bytes: Option<f64>,
    pub gateway_queue_drops: Option<u64>,
    pub gateway_slow_consumer_closes: Option<u64>,
    pub gateway_redis_events_dropped: Option<u64>,
    /// Frames the gateway queued, and its write submissions (of which direct: written by the
    /// shard right after an inbox turn), over the publish phase (warm-up included).
    pub gateway_frames_out: Option<u64>,
    pub gateway_writes: Option<u64>,
    pub gateway_direct_writes: Option<u64>,
    /// `gateway_frames_out / gateway_writes`.
    pub gateway_frames_per_write: Option<f64>,

    // The load test itself.
    pub loadtest_cpu_s: f64,
    pub loadtest_cpu_pct: f64,
    pub loadtest_runqueue_wait_s: Option<f64>,
    pub loadtest_max_thread_cpu_pct: f64,
    pub loadtest_rss_max_kib: u64,
    pub loadtest_saturated: bool,
    /// Share of the window in which some task of the host waited for a CPU (PSI), in %.
    pub host_cpu_pressure_pct: Option<f64>,
    pub nofile_limit: u64,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn set_latency(&mut self, s: Option<Summary>) {
        self.latency_count = s.map_or(0, |s| s.count);
        self.latency_p50_us = s.map(|s| s.p50);
        self.latency_p90_us = s.map(|s| s.p90);
        self.latency_p99_us = s.map(|s| s.p99);
        self.latency_p999_us = s.map(|s| s.p999);
        self.latency_max_us = s.map(|s| s.max);
        self.latency_mean_us = s.map(|s| s.mean);
    }

    /// Sets `samples` and the figures derived from them.
    pub fn set_samples(&mut self, points: &[crate::soak::Point]) {
        let f = crate::soak::figures(points);
        self.samples = Some(
            points
                .iter()
                .map(|p| (p.t_s, p.phase.name(), p.rss_kib, p.fds, p.clients))
                .collect(),
        );
        self.rss_after_warmup_kib = f.rss_after_warmup_kib;
        self.rss_end_kib = f.rss_end_kib;
        self.rss_drift_pct = f.rss_drift_pct;
        self.rss_max_kib = f.rss_max_kib;
        self.fds_before = f.fds_before;
        self.fds_max = f.fds_max;
        self.fds_after_clients_left = f.fds_after_clients_left;
        self.rss_after_clients_left_kib = f.rss_after_clients_left_kib;
    }

    /// Sets `latency_cdf` from the run's merged latency histogram.
    pub fn set_latency_cdf(&mut self, h: &Histogram<u64>) {
        self.latency_cdf = latency_cdf(h);
    }

    /// One JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// The aligned human summary.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("  {label:<20} {value}\n"));
        };
        let title = match (&self.scenario, self.publish) {
            (Some(s), Some(p)) => format!("{s} ({}, {p} publisher)", self.mode),
            (Some(s), None) => format!("{s} ({})", self.mode),
            (None, Some(p)) => format!("{} run, {p} publisher", self.mode),
            (None, None) => format!("{} run", self.mode),
        };
        line("scenario", title);
        if let Some(d) = &self.description {
            line("", d.clone());
        }
        line("target", self.target.clone());
        line(
            "clients",
            format!(
                "{} on {} channel(s), {} slow, subscribe by {}",
                self.clients, self.channels, self.slow_clients, self.subscribe
            ),
        );
        line(
            "connect",
            format!(
                "{} ok, {} failed in {:.2} s = {:.0} conn/s",
                self.connected, self.connect_failed, self.connect_s, self.connect_rate_per_s
            ),
        );
        if let Some(e) = &self.connect_error {
            line("first connect error", e.clone());
        }
        if let (Some(touched), Some(published)) = (self.touched_clients, self.touch_published) {
            line(
                "touch",
                format!(
                    "{published} publishes in {} round(s): {touched} clients had an event \
                     after {:.2} s",
                    self.touch_rounds.unwrap_or(0),
                    self.touch_s.unwrap_or(0.0)
                ),
            );
        }
        if let (Some(window), Some(published)) = (self.window_s, self.published) {
            let target = if self.rate == 0 {
                "max rate".to_string()
            } else {
                format!("target {}/s", self.rate)
            };
            line(
                "published",
                format!(
                    "{published} in {window:.2} s window ({:.0}/s, {target}), {} errors",
                    self.publish_rate_per_s.unwrap_or(0.0),
                    self.publish_errors.unwrap_or(0)
                ),
            );
            if let Some(e) = &self.publish_error {
                line("first publish error", e.clone());
            }
            line(
                "delivered",
                format!(
                    "{} of {} expected, lost {} ({:.3} %), {:.0} msgs/s",
                    self.delivered.unwrap_or(0),
                    self.expected.unwrap_or(0),
                    self.lost.unwrap_or(0),
                    self.loss_pct.unwrap_or(0.0),
                    self.delivered_per_s.unwrap_or(0.0)
                ),
            );
            line(
                "stream checks",
                format!(
                    "{} seq gaps, {} out of order, {} other msgs, {} clients dropped ({} as slow \
                     consumers), {} channels with loss",
                    self.seq_gaps,
                    self.out_of_order,
                    self.other_messages,
                    self.dropped_clients,
                    self.dropped_slow_consumer,
                    self.channels_with_loss.unwrap_or(0)
                ),
            );
            match self.latency_p50_us {
                Some(p50) => line(
                    "latency (µs)",
                    format!(
                        "p50 {p50}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.0}  (n={})",
                        self.latency_p90_us.unwrap_or(0),
                        self.latency_p99_us.unwrap_or(0),
                        self.latency_p999_us.unwrap_or(0),
                        self.latency_max_us.unwrap_or(0),
                        self.latency_mean_us.unwrap_or(0.0),
                        self.latency_count
                    ),
                ),
                None => line("latency (µs)", "no events received".to_string()),
            }
            if let Some(kicks) = self.churn_kicks {
                line(
                    "churn",
                    format!(
                        "{:.1} %/min: {kicks} kicks, {} reconnects, {} failed; {} clients \
                         churned, {} stayed, {} stayers with loss, {} stayer seq gaps",
                        self.churn_pct_per_min,
                        self.reconnects,
                        self.reconnect_failed,
                        self.churned_clients,
                        self.stayed_clients,
                        self.stayers_with_loss.unwrap_or(0),
                        self.stayed_seq_gaps
                    ),
                );
            }
            if self.slow_clients > 0 {
                line(
                    "slow clients",
                    format!(
                        "{} of {} closed by the gateway, {} with 4000",
                        self.slow_closed, self.slow_clients, self.slow_closed_4000
                    ),
                );
            }
            if let Some(f) = &self.floor_interleaved {
                line(
                    "floor (interleaved)",
                    format!(
                        "{} sends a round over {} rounds between publishes: last completion \
                         median {:.0} µs, p99 {:.0} µs; sends p99 {:.0} µs; {:.2} µs per send; \
                         latency p99 / floor = {}",
                        f.connections,
                        f.rounds,
                        f.last_completion_us,
                        f.last_completion_p99_us,
                        f.send_p99_us,
                        f.cost_per_send_us,
                        self.latency_p99_vs_interleaved_floor
                            .map_or("-".to_string(), |r| format!("{r:.2}x"))
                    ),
                );
            }
        } else if self.dropped_clients > 0 {
            line("dropped", format!("{} clients", self.dropped_clients));
        }
        match self.gateway_pid {
            Some(pid) => {
                line(
                    "gateway",
                    format!(
                        "pid {pid}: {:.2} CPU-s ({:.1} % of a core), {:.2} s waiting for a CPU, \
                         RSS {} -> {} KiB",
                        self.gateway_cpu_s.unwrap_or(0.0),
                        self.gateway_cpu_pct.unwrap_or(0.0),
                        self.gateway_runqueue_wait_s.unwrap_or(0.0),
                        self.gateway_rss_before_kib.unwrap_or(0),
                        self.gateway_rss_after_kib.unwrap_or(0)
                    ),
                );
                if let Some(v) = self.delivered_per_gateway_cpu_s {
                    line("per gateway CPU-s", format!("{v:.0} delivered msgs"));
                }
                if let Some(v) = self.rss_per_idle_conn_bytes {
                    line("RSS per idle conn", format!("{v:.0} bytes"));
                }
            }
            None => line(
                "gateway",
                "no --server-pid: CPU and RSS not measured".into(),
            ),
        }
        if let Some(samples) = &self.samples {
            let kib = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} KiB"));
            line(
                "gateway RSS",
                format!(
                    "{} samples: after warm-up {}, end {}, drift {}, max {}, after the clients \
                     left {}",
                    samples.len(),
                    kib(self.rss_after_warmup_kib),
                    kib(self.rss_end_kib),
                    self.rss_drift_pct
                        .map_or("-".to_string(), |d| format!("{d:+.2} %")),
                    kib(self.rss_max_kib),
                    kib(self.rss_after_clients_left_kib)
                ),
            );
            let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            line(
                "gateway fds",
                format!(
                    "{} before, max {}, {} after the clients left",
                    n(self.fds_before),
                    n(self.fds_max),
                    n(self.fds_after_clients_left)
                ),
            );
        }
        if let Some(drops) = self.gateway_queue_drops {
            line(
                "gateway counters",
                format!(
                    "{drops} queue drops, {} slow-consumer closes, {} Redis events dropped; \
                     {} frames in {} writes ({} direct), {:.1} frames per write",
                    self.gateway_slow_consumer_closes.unwrap_or(0),
                    self.gateway_redis_events_dropped.unwrap_or(0),
                    self.gateway_frames_out.unwrap_or(0),
                    self.gateway_writes.unwrap_or(0),
                    self.gateway_direct_writes.unwrap_or(0),
                    self.gateway_frames_per_write.unwrap_or(0.0)
                ),
            );
        }
        line(
            "load test",
            format!(
                "{:.2} CPU-s ({:.1} % of a core, busiest thread {:.1} %, {} worker thread(s)), \
                 {:.2} s waiting for a CPU, max RSS {} KiB",
                self.loadtest_cpu_s,
                self.loadtest_cpu_pct,
                self.loadtest_max_thread_cpu_pct,
                self.client_threads,
                self.loadtest_runqueue_wait_s.unwrap_or(0.0),
                self.loadtest_rss_max_kib
            ),
        );
        if let Some(p) = self.host_cpu_pressure_pct {
            line("host CPU pressure", format!("{p:.1} % of the window"));
        }
        for w in &self.warnings {
            out.push_str(&format!("  WARNING: {w}\n"));
        }
        out
    }
}

/// `CDF_POINTS` points `(latency_us, quantile)` of `h`: quantile 0 (the minimum), 0.05 to 0.95
/// in steps of 0.05, then 29 quantiles spread evenly in nines from 0.95 (1.3 nines) to 0.99999
/// (5 nines), then 1 (the maximum). `None` when `h` is empty.
pub fn latency_cdf(h: &Histogram<u64>) -> Option<Vec<(u64, f64)>> {
    if h.is_empty() {
        return None;
    }
    const BODY: usize = 20; // 0, 0.05, …, 0.95
    const TAIL: usize = CDF_POINTS - BODY - 1; // past 0.95, before the maximum
    let (first_nines, last_nines) = (-(0.05f64.log10()), 5.0);
    let body = (0..BODY).map(|i| i as f64 * 0.05);
    let tail = (1..=TAIL).map(|j| {
        let nines = first_nines + (last_nines - first_nines) * j as f64 / TAIL as f64;
        1.0 - 10f64.powf(-nines)
    });
    let points = body
        .chain(tail)
        .map(|q| (h.value_at_quantile(q), q))
        .chain(std::iter::once((h.max(), 1.0)))
        .collect();
    Some(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_flat_line_with_nulls() {
        let r = Report {
            mode: "idle",
            clients: 3,
            ..Report::default()
        };
        let json = r.to_json();
        assert!(!json.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["mode"], "idle");
        assert_eq!(v["clients"], 3);
        assert!(v["latency_p99_us"].is_null());
        assert!(v["delivered"].is_null());
        assert!(v.as_object().unwrap().values().all(|x| !x.is_object()));
        assert!(v["samples"].is_null() && v["rss_drift_pct"].is_null());
        assert!(v["latency_cdf"].is_null());
        assert_eq!(v["touched"], false);
        assert!(v["touched_clients"].is_null());
    }

    #[test]
    fn latency_cdf_is_monotone_and_ends_at_the_max() {
        assert_eq!(latency_cdf(&crate::latency::new_histogram()), None);
        let mut h = crate::latency::new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let cdf = latency_cdf(&h).unwrap();
        assert_eq!(cdf.len(), CDF_POINTS);
        assert_eq!(cdf[0], (1, 0.0));
        assert_eq!(cdf[CDF_POINTS - 1], (h.max(), 1.0));
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        let (v50, q50) = cdf[10];
        assert!((q50 - 0.5).abs() < 1e-12 && (4_990..=5_010).contains(&v50));
        let mut r = Report::default();
        r.set_latency_cdf(&h);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["latency_cdf"][CDF_POINTS - 1][1], 1.0);
    }

    #[test]
    fn human_summary_mentions_the_key_numbers() {
        let mut r = Report {
            mode: "publish",
            publish: Some("http"),
            window_s: Some(5.0),
            published: Some(5000),
            delivered: Some(1_000_000),
            expected: Some(1_000_000),
            gateway_pid: Some(7),
            delivered_per_gateway_cpu_s: Some(12345.0),
            warnings: vec!["something".into()],
            ..Report::default()
        };
        r.set_latency(Some(Summary {
            count: 10,
            p50: 111,
            p90: 222,
            p99: 333,
            p999: 444,
            max: 555,
            mean: 150.0,
        }));
        let text = r.human();
        for needle in [
            "p50 111",
            "p99.9 444",
            "12345 delivered",
            "WARNING: something",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
