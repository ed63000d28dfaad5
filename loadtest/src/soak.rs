//! What a long run (`loadtest/soak.sh`) needs on top of a publish run: churn, a time series of
//! the gateway's memory and descriptors, and the figures derived from it.
//!
//! - **Churn** (`--churn-pct-per-min P`): while the publishers run, one reading client every
//!   `60 / (clients × P / 100)` seconds is kicked (see `clients.rs`): it drops its connection,
//!   connects and subscribes again. Clients are kicked in id order (every client once before any
//!   twice), so over a run of M minutes about `P × M` % of them churn and the rest stay.
//! - **Samples** (`--sample-every S`): the gateway's `VmRSS` (`/proc/PID/status`) and its open
//!   descriptors (entries of `/proc/PID/fd`) every S seconds from before the first connect to
//!   after the clients left, each with its phase and the load test's open connections.
//! - **After the clients left**: the descriptor count is polled (every 100 ms, for at most
//!   [`FD_SETTLE`]) until it is back to its count before the first connect.
//! - **Drift**: `rss_drift_pct` = (last sample while the clients were connected − first sample
//!   in the measured window) / the latter × 100. The warm-up (`--warmup`) is what comes before.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::clients::Live;
use crate::procfs;

/// How long the descriptor count may take to come back after the clients left.
pub const FD_SETTLE: Duration = Duration::from_secs(15);

/// The phase a sample was taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Before the first client connected.
    Before,
    /// Connecting, or publishing before the measured window.
    Warmup,
    /// Inside the measured window (publishing and draining).
    Window,
    /// After every client left.
    Left,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::Warmup => "warmup",
            Phase::Window => "window",
            Phase::Left => "left",
        }
    }
}

/// One sample of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the first sample.
    pub t_s: f64,
    pub phase: Phase,
    pub rss_kib: u64,
    pub fds: u64,
    /// The load test's open connections to the gateway.
    pub clients: usize,
}

/// Open descriptors of `pid` (entries of `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| format!("reading {dir}"))?
        .count() as u64)
}

/// `VmRSS` of `pid`, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    procfs::parse_status_kib(&status, "VmRSS").with_context(|| format!("no VmRSS in {path}"))
}

/// The time series, filled by a background task.
pub struct Sampler {
    pid: u32,
    origin: Instant,
    points: Arc<Mutex<Vec<Point>>>,
    phase: Arc<Mutex<Phase>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Takes a first sample now, then one every `every` until [`Sampler::finish`].
    pub fn start(pid: u32, every: Duration, live: Arc<Live>) -> anyhow::Result<Sampler> {
        let origin = Instant::now();
        let points = Arc::new(Mutex::new(Vec::new()));
        let phase = Arc::new(Mutex::new(Phase::Before));
        let first = take(pid, origin, Phase::Before, 0)?;
        lock(&points).push(first);
        let task = {
            let (points, phase) = (points.clone(), phase.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let now_phase = *lock(&phase);
                    let open = live.open.load(Ordering::Relaxed);
                    match take(pid, origin, now_phase, open) {
                        Ok(p) => lock(&points).push(p),
                        Err(_) => return, // the gateway is gone; the run reports it
                    }
                }
            })
        };
        Ok(Sampler {
            pid,
            origin,
            points,
            phase,
            task,
        })
    }

    /// Later periodic samples carry `phase`.
    pub fn set_phase(&self, phase: Phase) {
        *lock(&self.phase) = phase;
    }

    /// Stops the periodic samples (the clients are about to leave).
    pub fn stop_periodic(&self) {
        self.task.abort();
    }

    /// After the clients left: waits (at most [`FD_SETTLE`]) until the descriptor count is
    /// back to its first sample's, takes the `left` sample and returns the series.
    pub async fn finish(self) -> anyhow::Result<Vec<Point>> {
        self.task.abort();
        let start_fds = lock(&self.points).first().map_or(0, |p| p.fds);
        let deadline = Instant::now() + FD_SETTLE;
        while fd_count(self.pid)? > start_fds && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let last = take(self.pid, self.origin, Phase::Left, 0)?;
        let mut points = std::mem::take(&mut *lock(&self.points));
        points.push(last);
        Ok(points)
    }
}

fn take(pid: u32, origin: Instant, phase: Phase, clients: usize) -> anyhow::Result<Point> {
    Ok(Point {
        t_s: origin.elapsed().as_secs_f64(),
        phase,
        rss_kib: rss_kib(pid)?,
        fds: fd_count(pid)?,
        clients,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The figures a soak is judged by, from its samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// First sample in the measured window.
    pub rss_after_warmup_kib: Option<u64>,
    /// Last sample before the clients left.
    pub rss_end_kib: Option<u64>,
    pub rss_drift_pct: Option<f64>,
    pub rss_max_kib: Option<u64>,
    pub fds_before: Option<u64>,
    pub fds_max: Option<u64>,
    pub fds_after_clients_left: Option<u64>,
    pub rss_after_clients_left_kib: Option<u64>,
}

/// Derives the [`Figures`] from a series.
pub fn figures(points: &[Point]) -> Figures {
    let held: Vec<&Point> = points.iter().filter(|p| p.phase != Phase::Left).collect();
    let warm = points.iter().find(|p| p.phase == Phase::Window);
    let end = held.last().filter(|p| p.phase == Phase::Window);
    let left = points.iter().rev().find(|p| p.phase == Phase::Left);
    let rss_drift_pct = match (warm, end) {
        (Some(w), Some(e)) if w.rss_kib > 0 => {
            Some((e.rss_kib as f64 - w.rss_kib as f64) / w.rss_kib as f64 * 100.0)
        }
        _ => None,
    };
    Figures {
        rss_after_warmup_kib: warm.map(|p| p.rss_kib),
        rss_end_kib: end.map(|p| p.rss_kib),
        rss_drift_pct,
        rss_max_kib: held.iter().map(|p| p.rss_kib).max(),
        fds_before: points.first().map(|p| p.fds),
        fds_max: held.iter().map(|p| p.fds).max(),
        fds_after_clients_left: left.map(|p| p.fds),
        rss_after_clients_left_kib: left.map(|p| p.rss_kib),
    }
}

/// Writes the series as CSV: `t_s,phase,rss_kib,fds,clients`.
pub fn write_csv(points: &[Point], path: &Path) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(f, "t_s,phase,rss_kib,fds,clients")?;
    for p in points {
        writeln!(
            f,
            "{:.1},{},{},{},{}",
            p.t_s,
            p.phase.name(),
            p.rss_kib,
            p.fds,
            p.clients
        )?;
    }
    f.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads a CSV written by [`write_csv`].
pub fn read_csv(path: &Path) -> anyhow::Result<Vec<Point>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let bad = || {
            format!(
                "{}:{}: expected t_s,phase,rss_kib,fds,clients",
                path.display(),
                n + 1
            )
        };
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 5 {
            anyhow::bail!(bad());
        }
        let phase = match f[1] {
            "before" => Phase::Before,
            "warmup" => Phase::Warmup,
            "window" => Phase::Window,
            "left" => Phase::Left,
            _ => anyhow::bail!(bad()),
        };
        out.push(Point {
            t_s: f[0].parse().with_context(bad)?,
            phase,
            rss_kib: f[2].parse().with_context(bad)?,
            fds: f[3].parse().with_context(bad)?,
            clients: f[4].parse().with_context(bad)?,
        });
    }
    Ok(out)
}

/// Kicks one reading client every `60 / (clients × pct / 100)` s, in id order skipping slow
/// ones, while the next kick is due before `until`; returns how many kicks it sent.
pub async fn churn(live: Arc<Live>, slow: Vec<bool>, pct_per_min: f64, until: Instant) -> u64 {
    let readers: Vec<usize> = (0..slow.len()).filter(|&i| !slow[i]).collect();
    let per_min = slow.len() as f64 * pct_per_min / 100.0;
    if readers.is_empty() || per_min <= 0.0 || live.churn.is_empty() {
        return 0;
    }
    let every = Duration::from_secs_f64(60.0 / per_min);
    let mut next = Instant::now() + every;
    let mut kicks = 0u64;
    loop {
        if next >= until {
            return kicks;
        }
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let id = readers[kicks as usize % readers.len()];
        live.churn[id].notify_one();
        kicks += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(t_s: f64, phase: Phase, rss_kib: u64, fds: u64) -> Point {
        Point {
            t_s,
            phase,
            rss_kib,
            fds,
            clients: 0,
        }
    }

    #[test]
    fn figures_from_a_series() {
        let series = [
            pt(0.0, Phase::Before, 5_000, 20),
            pt(10.0, Phase::Warmup, 90_000, 19_020),
            pt(20.0, Phase::Window, 100_000, 19_020),
            pt(30.0, Phase::Window, 100_500, 19_030),
            pt(40.0, Phase::Window, 100_800, 19_020),
            pt(45.0, Phase::Left, 60_000, 20),
        ];
        let f = figures(&series);
        assert_eq!(f.rss_after_warmup_kib, Some(100_000));
        assert_eq!(f.rss_end_kib, Some(100_800));
        assert!((f.rss_drift_pct.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(f.rss_max_kib, Some(100_800));
        assert_eq!(f.fds_before, Some(20));
        assert_eq!(f.fds_max, Some(19_030));
        assert_eq!(f.fds_after_clients_left, Some(20));
        assert_eq!(f.rss_after_clients_left_kib, Some(60_000));

        // No sample in the window: no drift rather than a wrong one.
        let short = [pt(0.0, Phase::Before, 1, 1), pt(1.0, Phase::Left, 1, 1)];
        assert_eq!(figures(&short).rss_drift_pct, None);
        assert_eq!(figures(&[]), Figures::default());
    }

    #[test]
    fn csv_round_trip_and_live_counts() {
        let dir = std::env::temp_dir().join(format!("soak-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.csv");
        let series = vec![
            pt(0.0, Phase::Before, 5_000, 20),
            pt(10.0, Phase::Window, 9_000, 120),
            pt(12.5, Phase::Left, 7_000, 20),
        ];
        write_csv(&series, &path).unwrap();
        assert_eq!(read_csv(&path).unwrap(), series);
        std::fs::write(&path, "t_s,phase,rss_kib,fds,clients\n1,nope,1,1,1\n").unwrap();
        assert!(read_csv(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();

        let me = std::process::id();
        assert!(fd_count(me).unwrap() >= 3);
        assert!(rss_kib(me).unwrap() > 0);
    }

    #[tokio::test]
    async fn churn_kicks_readers_in_order_at_the_rate() {
        // 100 clients at 600 %/min: a kick every 100 ms; client 1 is slow and never kicked.
        let live = Arc::new(Live::new(1, 1, 100));
        let mut slow = vec![false; 100];
        slow[1] = true;
        let until = Instant::now() + Duration::from_millis(350);
        let kicks = churn(live.clone(), slow, 600.0, until).await;
        assert!((1..=4).contains(&kicks), "{kicks} kicks in 350 ms");
        // Each kicked client holds a stored permit: 0, then 2, 3 (1 is slow), none past them.
        let kicked = |i: usize| {
            let n = live.churn[i].notified();
            futures_util::FutureExt::now_or_never(n).is_some()
        };
        assert!(kicked(0));
        assert!(!kicked(1));
        assert_eq!(kicked(2), kicks >= 2);
        assert!(!kicked(99));
        // Without churn slots nothing is kicked.
        let none = Arc::new(Live::new(1, 1, 0));
        assert_eq!(churn(none, vec![false; 10], 50.0, Instant::now()).await, 0);
    }
}
