//! Latency recording: HDR histograms of publish-to-receive time in microseconds (3 significant
//! digits, 1 µs to 60 s), shared by the client tasks, and their percentile summary.
//!
//! A histogram of that range takes about 100 KiB, too much for one per client at 10k clients,
//! so clients record into a few mutex-guarded shards (client `i` uses shard `i mod n`). With
//! one worker thread the locks are never contended.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest recordable latency, in µs; larger values are recorded as this.
pub const MAX_US: u64 = 60_000_000;

/// A new, empty latency histogram.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Histograms shared by many recording tasks.
pub struct Recorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Recorder {
    pub fn new(shards: usize) -> Recorder {
        Recorder {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// Records `us` microseconds for client `client`.
    pub fn record(&self, client: usize, us: u64) {
        let shard = &self.shards[client % self.shards.len()];
        let mut h = shard.lock().unwrap_or_else(|e| e.into_inner());
        h.saturating_record(us.min(MAX_US));
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            let h = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.add(&*h).expect("same bounds");
        }
        all
    }
}

/// Percentiles of a latency histogram, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// The summary of `h`, or `None` when it recorded nothing.
pub fn summarize(h: &Histogram<u64>) -> Option<Summary> {
    if h.is_empty() {
        return None;
    }
    Some(Summary {
        count: h.len(),
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_one_to_ten_thousand() {
        let r = Recorder::new(3);
        for v in 1..=10_000u64 {
            r.record(v as usize, v);
        }
        let s = summarize(&r.merged()).unwrap();
        assert_eq!(s.count, 10_000);
        // 3 significant digits: within 0.1 %.
        let near = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001;
        assert!(near(s.p50, 5_000), "{s:?}");
        assert!(near(s.p90, 9_000), "{s:?}");
        assert!(near(s.p99, 9_900), "{s:?}");
        assert!(near(s.p999, 9_990), "{s:?}");
        assert!(near(s.max, 10_000), "{s:?}");
        assert!((s.mean - 5_000.5).abs() < 5.0, "{s:?}");
    }

    #[test]
    fn empty_and_out_of_range() {
        assert_eq!(summarize(&new_histogram()), None);
        let r = Recorder::new(1);
        r.record(0, u64::MAX);
        r.record(0, 0);
        let s = summarize(&r.merged()).unwrap();
        assert_eq!(s.count, 2);
        assert!(s.max >= MAX_US && s.max <= MAX_US + MAX_US / 1000);
    }
}
