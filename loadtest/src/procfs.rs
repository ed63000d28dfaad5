//! CPU time, run-queue wait and memory of a process, from `/proc`.
//!
//! CPU seconds are `utime + stime` (fields 14 and 15 of `/proc/PID/stat`, in clock ticks of
//! `sysconf(_SC_CLK_TCK)`, summed over all threads); memory is `VmRSS` (and `VmHWM`, the peak)
//! from `/proc/PID/status`, in KiB. The run-queue wait is the second field of each thread's
//! `/proc/PID/task/TID/schedstat` (ns spent runnable but not running), summed: when it grows
//! as fast as the CPU time, the host is short of CPU and neither process can reach 100 %.
//! Sample before and after a window and subtract.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;

/// Which process to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// The load test itself (`/proc/self`).
    Me,
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Me => "/proc/self".to_string(),
            Pid::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// User plus system CPU time since the process started, in seconds.
    pub cpu_s: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
    /// Peak resident set size, in KiB.
    pub hwm_kib: u64,
    /// Time its threads waited for a CPU while runnable, in seconds (`None` without
    /// schedstats).
    pub runqueue_wait_s: Option<f64>,
}

impl Sample {
    /// Reads `/proc/PID/stat` and `/proc/PID/status` now.
    pub fn take(pid: Pid) -> anyhow::Result<Sample> {
        let dir = pid.dir();
        let stat = std::fs::read_to_string(format!("{dir}/stat"))
            .with_context(|| format!("reading {dir}/stat (is the process running?)"))?;
        let status = std::fs::read_to_string(format!("{dir}/status"))
            .with_context(|| format!("reading {dir}/status"))?;
        let ticks = parse_stat_cpu_ticks(&stat).context("parsing /proc/PID/stat")?;
        Ok(Sample {
            at: Instant::now(),
            cpu_s: ticks as f64 / clock_ticks_per_s(),
            rss_kib: parse_status_kib(&status, "VmRSS").unwrap_or(0),
            hwm_kib: parse_status_kib(&status, "VmHWM").unwrap_or(0),
            runqueue_wait_s: runqueue_wait_ns(&dir).map(|ns| ns as f64 / 1e9),
        })
    }

    /// Run-queue wait between `self` and `after`, in seconds.
    pub fn runqueue_wait_since(&self, after: &Sample) -> Option<f64> {
        Some((after.runqueue_wait_s? - self.runqueue_wait_s?).max(0.0))
    }

    /// CPU seconds used between `self` and the later sample `after`.
    pub fn cpu_since(&self, after: &Sample) -> f64 {
        (after.cpu_s - self.cpu_s).max(0.0)
    }

    /// Wall seconds between the two samples.
    pub fn wall_since(&self, after: &Sample) -> f64 {
        after.at.duration_since(self.at).as_secs_f64()
    }
}

/// Sum over the threads of `dir` (`/proc/PID`) of their run-queue wait, in ns.
fn runqueue_wait_ns(dir: &str) -> Option<u64> {
    let mut total = 0;
    let mut any = false;
    for entry in std::fs::read_dir(format!("{dir}/task")).ok()?.flatten() {
        if let Some(ns) = std::fs::read_to_string(entry.path().join("schedstat"))
            .ok()
            .and_then(|s| parse_schedstat_wait_ns(&s))
        {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

/// The run-queue wait (second field, ns) of a `schedstat` line: `run_ns wait_ns slices`.
pub fn parse_schedstat_wait_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Total microseconds in which some task of the host waited for a CPU (`some total=` of
/// `/proc/pressure/cpu`), or `None` without PSI.
pub fn host_cpu_pressure_us() -> Option<u64> {
    parse_pressure_some_total(&std::fs::read_to_string("/proc/pressure/cpu").ok()?)
}

/// The `total=` of the `some` line of a PSI file.
pub fn parse_pressure_some_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_ascii_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// CPU ticks of each thread of this process (`/proc/self/task/TID/stat`), by thread id.
pub fn my_thread_ticks() -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(ticks) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| parse_stat_cpu_ticks(&s))
        {
            out.insert(tid, ticks);
        }
    }
    out
}

/// The largest CPU share of one core (in %) any thread used between two
/// [`my_thread_ticks`] readings `wall_s` seconds apart.
pub fn busiest_thread_pct(
    before: &HashMap<u32, u64>,
    after: &HashMap<u32, u64>,
    wall_s: f64,
) -> f64 {
    if wall_s <= 0.0 {
        return 0.0;
    }
    let max_ticks = after
        .iter()
        .map(|(tid, &t)| t.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .max()
        .unwrap_or(0);
    max_ticks as f64 / clock_ticks_per_s() / wall_s * 100.0
}

/// CPU time of each thread of process `pid`, in ns, with the thread's name (`comm`), by
/// thread id: the first field of `/proc/PID/task/TID/schedstat` (exact), else utime + stime
/// from its `stat` (clock ticks, usually 10 ms). Threads that ended between the listing and
/// the read are left out.
pub fn thread_cpu_ns(pid: u32) -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    let ns_per_tick = 1e9 / clock_ticks_per_s();
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let name = std::fs::read_to_string(entry.path().join("comm"))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_default();
        let exact = std::fs::read_to_string(entry.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_ascii_whitespace().next()?.parse::<u64>().ok());
        let ns = exact.or_else(|| {
            let ticks =
                parse_stat_cpu_ticks(&std::fs::read_to_string(entry.path().join("stat")).ok()?)?;
            Some((ticks as f64 * ns_per_tick) as u64)
        });
        if let Some(ns) = ns {
            out.insert(tid, (name, ns));
        }
    }
    out
}

/// CPU seconds per thread name between two [`thread_cpu_ns`] readings (threads of one name
/// summed; threads that started in between count from 0), largest first.
pub fn thread_cpu_since(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
) -> Vec<(String, f64)> {
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    for (tid, (name, ns)) in after {
        let start = before.get(tid).map_or(0, |b| b.1);
        *by_name.entry(name.as_str()).or_default() += ns.saturating_sub(start);
    }
    let mut out: Vec<(String, f64)> = by_name
        .into_iter()
        .map(|(n, ns)| (n.to_owned(), ns as f64 / 1e9))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Resets the peak RSS (`VmHWM`) of `pid` to its current RSS (`echo 5 > clear_refs`, Linux
/// 4.0+; needs the right to ptrace it). False when that was refused.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `utime + stime`, in clock ticks, from the text of `/proc/PID/stat`.
///
/// The second field (the command name, in parentheses) may contain spaces and `)`, so the
/// fields are counted from the last `)`: the state is field 3, utime 14, stime 15.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The value in KiB of a `Key:   1234 kB` line of `/proc/PID/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_ascii_whitespace().next()?.parse().ok()
    })
}

/// `sysconf(_SC_CLK_TCK)`, usually 100.
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (ringcast shard) 0) S 1 4242 4242 0 -1 4194560 2530 0 0 0 \
                        1234 567 0 0 20 0 5 0 98765 123456789 2000 18446744073709551615 1 1 0 0 0 \
                        0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    const STATUS: &str = "Name:\tringcast\nUmask:\t0022\nState:\tS (sleeping)\n\
                          VmPeak:\t  200000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n\
                          RssAnon:\t    8000 kB\nThreads:\t5\n";

    #[test]
    fn stat_cpu_ticks_skip_a_tricky_comm() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some(1234 + 567));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn schedstat_and_pressure() {
        assert_eq!(
            parse_schedstat_wait_ns("5827219406 7375165401 7351\n"),
            Some(7_375_165_401)
        );
        assert_eq!(parse_schedstat_wait_ns("12"), None);
        let psi = "some avg10=64.85 avg60=65.44 avg300=51.51 total=1762771354\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_pressure_some_total(psi), Some(1_762_771_354));
        assert_eq!(parse_pressure_some_total("full total=3\n"), None);
    }

    #[test]
    fn status_fields() {
        assert_eq!(parse_status_kib(STATUS, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(STATUS, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(STATUS, "VmSwap"), None);
        assert_eq!(parse_status_kib(STATUS, "Vm"), None);
    }

    #[test]
    fn sampling_myself_works() {
        let a = Sample::take(Pid::Me).unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = Sample::take(Pid::Me).unwrap();
        assert!(a.rss_kib > 0);
        assert!(a.cpu_since(&b) >= 0.0);
        assert!(a.wall_since(&b) >= 0.0);
        let t = my_thread_ticks();
        assert!(!t.is_empty());
        assert!(busiest_thread_pct(&t, &t, 1.0) == 0.0);
    }

    #[test]
    fn thread_cpu_by_name() {
        let before = HashMap::from([(1, ("shard".to_owned(), 10)), (2, ("conn".to_owned(), 5))]);
        let after = HashMap::from([
            (1, ("shard".to_owned(), 10 + 300)),
            (2, ("conn".to_owned(), 5 + 100)),
            (3, ("conn".to_owned(), 100)),
        ]);
        let got = thread_cpu_since(&before, &after);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "shard");
        assert!((got[0].1 - 300e-9).abs() < 1e-15);
        assert!((got[1].1 - 200e-9).abs() < 1e-15);
        assert!(!thread_cpu_ns(std::process::id()).is_empty());
    }

    #[test]
    fn busiest_thread() {
        let before = HashMap::from([(1, 100), (2, 50)]);
        let after = HashMap::from([(1, 110), (2, 140), (3, 5)]);
        let pct = busiest_thread_pct(&before, &after, 1.0);
        assert!((pct - 90.0 * 100.0 / clock_ticks_per_s()).abs() < 1e-9);
    }
}
