//! `ringcast-loadtest floor`: the physical floor of a one-core fan-out over loopback TCP.
//!
//! # What it measures
//!
//! The gateway's cost to reach N subscribers cannot be lower than what the kernel charges for N
//! socket writes on the gateway's core. This subcommand measures that floor with nothing of
//! ringcast in the way:
//!
//! 1. It opens N loopback TCP pairs (a std listener on `127.0.0.1:0`, N connects, N accepts).
//!    The accepted end of each pair is the *sending* side (the gateway's end, `TCP_NODELAY`);
//!    the connecting end is the *receiving* side (the client's end).
//! 2. A reader thread pinned to `--reader-core` drains every receiving socket with epoll
//!    (level-triggered, non-blocking reads into one 256 KiB buffer) and counts the bytes. It
//!    blocks in `epoll_wait` when there is nothing to read, like a real client would.
//! 3. A sender thread pinned to `--sender-core` runs a tokio-uring runtime (4,096 submission
//!    entries, as the gateway's shards do). For each `--frames-per-write` setting K, a round
//!    spawns one task per connection; each task issues one `writev` of K shared
//!    `--message-bytes` frames (`bytes::Bytes` clones of one buffer, as the gateway's outbox
//!    holds `OutFrame`s). All N tasks are spawned before the runtime parks, so their writes
//!    share io_uring submissions (one `io_uring_enter` for up to 4,096 of them). A round is the
//!    equivalent of K published messages fanned out to N subscribers, batched per connection.
//!    K = 1 is "one send per connection".
//! 4. After each round the sender waits (outside the timed region) until the reader has
//!    received every byte, then starts the next. Before the first setting, 32 untimed one-frame
//!    rounds take every connection past TCP's quick-ACK start (see the caveats); one more
//!    warm-up round per setting is discarded. The figures are medians over `--rounds` rounds.
//!
//! # The three numbers
//!
//! "CPU work on the sender core" below is the sender thread's CPU time for the round
//! (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)` just before the first spawn and after the last
//! join) plus whatever the sender core's `ksoftirqd` ran from the start of the round until the
//! reader had every byte (softirq work the kernel deferred from the sender; read from
//! `/proc/<pid>/schedstat`, usually under 2% and left out, with a note, if /proc hides it).
//!
//! - `cost_per_send_us`: CPU work on the sender core divided by N, the number of `writev`s.
//!   This is what one write to one subscriber costs the gateway's core.
//! - `cost_per_message_us`: the same divided by N × K, the number of frames delivered. This is
//!   what batching buys; at K = 1 it equals the cost per send.
//! - `last_completion_us`: wall time from just before the first task is spawned (so before the
//!   first submission) to the completion of the last `writev` of the round. For one message
//!   fanned out to N subscribers (K = 1) this is the soonest the gateway's core can reach its
//!   last client. `print_human` also shows it divided by N: on a quiet core it matches the cost
//!   per send, because the core does nothing else during the round.
//!
//! # Why a loopback send costs microseconds
//!
//! On loopback the receiver's network processing runs on the sender's core: `loopback_xmit`
//! queues the skb to the sending CPU's backlog and the NET_RX softirq runs at the end of the send
//! (`local_bh_enable`), in the sending thread's context. So one send pays for the sender's TCP
//! output *and* the receiver's IP and TCP input, the socket enqueue and the wake-up of the reader
//! thread on the other core. The reader's core pays only for the `read(2)` copies and the window
//! updates they trigger. In a profile of a K = 1 round, `io_uring_enter` is about 90% of the
//! sender's time, nearly all of it in `tcp_sendmsg` and the loopback receive it runs. That is
//! why a 200-byte send costs several microseconds, and why a 1k-subscriber fan-out on one core
//! cannot reach its last client sooner than about a thousand times that. A gateway whose clients
//! are on other hosts pays less per send (their receive processing runs there); a gateway serving
//! load-test clients on the same host over loopback pays exactly this.
//!
//! # Caveats
//!
//! - The CPU work includes the runtime's own per-write work (task spawn and join, SQE and CQE
//!   handling), as the gateway's does: about a tenth of the sender's time.
//! - The thread's CPU time holds the softirq work only if the kernel charges softirqs run in task
//!   context to the task, as kernels without `CONFIG_IRQ_TIME_ACCOUNTING` do. With irq time
//!   accounting active, that time is accounted as softirq time instead and the costs leave most
//!   of the receive processing out; the round's wall time then far exceeds the measured CPU work
//!   and the run warns. `last_completion_us / N` is then the better cost per send.
//! - `last_completion_us` is wall time: if anything else runs on the sender core it grows, while
//!   the costs do not. The same warning fires when the measured CPU work is under 80% of the
//!   wall time, and says in how many rounds the sender was preempted (involuntary context
//!   switches from `getrusage(RUSAGE_THREAD)`). Give the sender a quiet core.
//! - The figures are for warm connections written to back to back (a round every few ms). A fresh
//!   receiver ACKs its first segments at once (quick-ACK mode, up to 16), and so does one that
//!   has received nothing for longer than its retransmission timeout (at least 200 ms); on
//!   loopback each of those ACKs is built and processed on the sender's core. Idle gaps also
//!   leave caches cold. On the 2-vCPU VM this was written on, a one-frame send cost 5.7 µs back
//!   to back, 8.5 µs with 100 ms idle between rounds and 10.5 µs with 300 ms, and about 12 µs on
//!   fresh connections. A gateway with sparse traffic pays more than this floor.
//! - Timers (delayed ACKs, retransmit timers) armed on the sender core may fire during a later
//!   round and be charged to it; a real gateway pays them too.
//! - Short writes cannot happen at these sizes (a round stays far below the socket buffers); if
//!   one does, the rest is resubmitted and costed into the round, and a warning says so.
//! - The sender and reader should be on different cores. On one core the reader's work competes
//!   with the sender's and the figures are no longer the floor (a warning says so).
//! - Each connection takes two file descriptors; the soft `RLIMIT_NOFILE` is raised to fit when
//!   the hard limit allows, and the run fails with a clear message when it does not.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;

/// io_uring submission-queue entries for the sender's ring (the gateway's `RING_ENTRIES`).
const RING_ENTRIES: u32 = 4096;
/// Untimed one-frame rounds before the first setting. A fresh TCP receiver ACKs its first
/// segments at once (quick-ACK mode, at most 16 of them); on loopback those ACKs are built and
/// processed on the sender's core, which makes the first rounds cost about 40% more per send.
const CONNECTION_WARMUP_ROUNDS: usize = 32;
/// Rounds run and discarded per setting before the measured ones.
const WARMUP_ROUNDS: usize = 1;
/// Most frames in one `writev` (Linux `IOV_MAX`).
const MAX_FRAMES_PER_WRITE: usize = 1024;
/// File descriptors kept free beyond the two per connection.
const SPARE_FDS: u64 = 64;
/// The longest the sender waits for the reader to drain a round.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The reader's read buffer.
const READ_BUF_BYTES: usize = 256 * 1024;
/// Below this ratio of measured CPU work on the sender core to round wall time, warn.
const MIN_BUSY_SHARE: f64 = 0.8;
/// From this share of the sender core's work done by its ksoftirqd, say so.
const KSOFTIRQD_NOTE_SHARE: f64 = 0.02;

#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// Connections (each gets one 200-byte message per round)
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Message size in bytes
    #[arg(long, default_value_t = 200)]
    pub message_bytes: usize,
    /// Frames per write: 1 = one send per connection; 8 and 64 = batched writes (writev of that many frames)
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub frames_per_write: Vec<usize>,
    /// Rounds to run per setting (report medians)
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Core to pin the sender to (the gateway's core); the reader goes on the other
    #[arg(long, default_value_t = 0)]
    pub sender_core: usize,
    /// Core to pin the draining reader to
    #[arg(long, default_value_t = 1)]
    pub reader_core: usize,
    /// Microseconds from the start of one round to the start of the next; 0 runs rounds back to
    /// back. Give it a scenario's publish interval to measure the floor at that scenario's pace
    #[arg(long, default_value_t = 0)]
    pub interval_us: u64,
    /// Connections written per round; 0 = all. Rounds take consecutive groups in turn, as a
    /// many-channels event reaches one channel's subscribers
    #[arg(long, default_value_t = 0)]
    pub group: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct FloorReport {
    pub connections: usize,
    pub message_bytes: usize,
    /// Connections written per round (all of them unless `--group` said otherwise).
    pub group: usize,
    /// Round start to round start, µs; 0 = back to back.
    pub interval_us: u64,
    pub results: Vec<FloorResult>,
}

#[derive(Debug, serde::Serialize)]
pub struct FloorResult {
    pub frames_per_write: usize,
    pub cost_per_send_us: f64,
    pub cost_per_message_us: f64,
    pub last_completion_us: f64,
    /// The 99th percentile of the rounds' last completions (the slowest rounds on a noisy host).
    pub last_completion_p99_us: f64,
    pub rounds: usize,
    /// Rounds that started late because the one before overran `interval_us`.
    pub late_rounds: usize,
}

impl FloorReport {
    /// Prints the report as a table on stdout.
    pub fn print_human(&self) {
        let pace = if self.interval_us == 0 {
            "back to back".to_string()
        } else {
            format!("a round every {} µs", self.interval_us)
        };
        println!(
            "floor: {} loopback TCP connections, {} written per round ({pace}), {}-byte messages, \
             one writev per connection per round",
            self.connections, self.group, self.message_bytes
        );
        println!(
            "{:>6} {:>16} {:>19} {:>18} {:>14} {:>14} {:>7}",
            "frames",
            "cost/send (µs)",
            "cost/message (µs)",
            "last done (µs)",
            "last p99 (µs)",
            "last/N (µs)",
            "rounds"
        );
        for r in &self.results {
            let wall_per_send = r.last_completion_us / self.group.max(1) as f64;
            println!(
                "{:>6} {:>16.3} {:>19.3} {:>18.1} {:>14.1} {:>14.3} {:>7}",
                r.frames_per_write,
                r.cost_per_send_us,
                r.cost_per_message_us,
                r.last_completion_us,
                r.last_completion_p99_us,
                wall_per_send,
                r.rounds
            );
            if r.late_rounds > 0 {
                println!(
                    "       ({} of {} rounds started late: the round before overran the interval)",
                    r.late_rounds, r.rounds
                );
            }
        }
        println!(
            "cost/send, cost/message: CPU work on the sender core per writev and per frame; \
             last done: first submission to last completion; medians (last p99: 99th percentile \
             over the rounds). last/N: last done / connections written per round."
        );
    }
}

/// Runs the floor measurement: sets up the pairs, runs every setting, tears down.
pub fn run(args: FloorArgs) -> anyhow::Result<FloorReport> {
    validate(&args)?;
    if args.sender_core == args.reader_core {
        eprintln!(
            "floor: warning: sender and reader share core {}; the figures will not be the floor",
            args.sender_core
        );
    }
    raise_nofile_limit(fds_needed(args.connections))?;

    let (senders, receivers) = connect_pairs(args.connections)?;

    let reader = Reader::spawn(receivers, args.reader_core)?;
    let sender = {
        let received = Arc::clone(&reader.received);
        let reader_done = Arc::clone(&reader.done);
        let args = args.clone();
        thread::Builder::new()
            .name("floor-sender".into())
            .spawn(move || sender_main(senders, &args, &received, &reader_done))
            .context("spawning the sender thread")
    };

    let sent = match sender {
        Ok(handle) => handle
            .join()
            .map_err(|_| anyhow::anyhow!("the sender thread panicked"))
            .and_then(|r| r),
        Err(e) => Err(e),
    };
    let read = reader.stop();

    let results = match (sent, read) {
        (Ok(results), Ok(())) => results,
        (Ok(_), Err(e)) => return Err(e.context("reader failed")),
        (Err(e), Ok(())) => return Err(e.context("sender failed")),
        (Err(e), Err(re)) => return Err(e.context(format!("sender failed (reader: {re:#})"))),
    };

    Ok(FloorReport {
        connections: args.connections,
        message_bytes: args.message_bytes,
        group: group_size(&args),
        interval_us: args.interval_us,
        results,
    })
}

fn validate(args: &FloorArgs) -> anyhow::Result<()> {
    ensure!(args.connections > 0, "--connections must be at least 1");
    ensure!(args.message_bytes > 0, "--message-bytes must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.group <= args.connections,
        "--group {} is more than --connections {}",
        args.group,
        args.connections
    );
    ensure!(
        !args.frames_per_write.is_empty(),
        "--frames-per-write needs at least one value"
    );
    for &k in &args.frames_per_write {
        ensure!(
            (1..=MAX_FRAMES_PER_WRITE).contains(&k),
            "--frames-per-write {k} is outside 1..={MAX_FRAMES_PER_WRITE} (IOV_MAX)"
        );
    }
    Ok(())
}

/// Connections written per round: `--group`, or all of them when it is 0.
fn group_size(args: &FloorArgs) -> usize {
    if args.group == 0 {
        args.connections
    } else {
        args.group
    }
}

/// File descriptors the run needs: two per connection plus spares (listener, epoll, io_uring,
/// stdio, the runtime's own).
pub(crate) fn fds_needed(connections: usize) -> u64 {
    (connections as u64)
        .saturating_mul(2)
        .saturating_add(SPARE_FDS)
}

/// Raises the soft `RLIMIT_NOFILE` to at least `needed`, up to the hard limit.
pub(crate) fn raise_nofile_limit(needed: libc::rlim_t) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    let (cur, max) = (lim.rlim_cur, lim.rlim_max);
    if cur == libc::RLIM_INFINITY || cur >= needed {
        return Ok(());
    }
    if max != libc::RLIM_INFINITY && max < needed {
        bail!(
            "need {needed} file descriptors (2 per connection) but the hard RLIMIT_NOFILE is {max}; \
             lower --connections or raise the limit (ulimit -Hn)"
        );
    }
    lim.rlim_cur = needed;
    // SAFETY: setrlimit reads the rlimit we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("raising RLIMIT_NOFILE from {cur} to {needed}"));
    }
    Ok(())
}

/// Opens `n` connected loopback pairs: (sending ends with `TCP_NODELAY`, non-blocking receiving
/// ends). Each connect is accepted before the next, so the listen backlog never fills.
pub(crate) fn connect_pairs(n: usize) -> anyhow::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let addr = listener.local_addr().context("listener address")?;
    let mut senders = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for i in 0..n {
        let client =
            TcpStream::connect(addr).with_context(|| format!("connecting pair {i} to {addr}"))?;
        let (server, peer) = listener
            .accept()
            .with_context(|| format!("accepting pair {i}"))?;
        let local = client.local_addr().context("client address")?;
        ensure!(peer == local, "pair {i}: accepted {peer}, expected {local}");
        server.set_nodelay(true).context("setting TCP_NODELAY")?;
        client
            .set_nonblocking(true)
            .context("making the receiving end non-blocking")?;
        senders.push(server);
        receivers.push(client);
    }
    Ok((senders, receivers))
}

/// Pins the calling thread to `core`.
fn pin_current_thread(core: usize) -> anyhow::Result<()> {
    ensure!(
        core < libc::CPU_SETSIZE as usize,
        "core {core} is beyond CPU_SETSIZE"
    );
    // SAFETY: cpu_set_t is plain data; CPU_SET and sched_setaffinity get valid pointers.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| {
            format!(
                "pinning to core {core} (this machine has {} usable cores)",
                thread::available_parallelism().map_or(1, |n| n.get())
            )
        });
    }
    Ok(())
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub(crate) fn thread_cpu_ns() -> anyhow::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(io::Error::last_os_error()).context("clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// The draining reader's thread and what it shares with a sender: the bytes it has counted,
/// whether it has ended, and the flag that ends it.
pub(crate) struct Reader {
    handle: thread::JoinHandle<anyhow::Result<()>>,
    pub(crate) received: Arc<AtomicU64>,
    pub(crate) done: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// Called by the reader with each connection's index and the bytes one read returned.
pub(crate) type OnRead = Box<dyn FnMut(usize, &[u8]) + Send>;

impl Reader {
    /// Starts [`reader_loop`] over `receivers` on a thread pinned to `core`.
    pub(crate) fn spawn(receivers: Vec<TcpStream>, core: usize) -> anyhow::Result<Reader> {
        Reader::spawn_with(receivers, core, None)
    }

    /// As [`Reader::spawn`], handing every read's bytes to `on_read` as well.
    pub(crate) fn spawn_with(
        receivers: Vec<TcpStream>,
        core: usize,
        on_read: Option<OnRead>,
    ) -> anyhow::Result<Reader> {
        let received = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (received, done, stop) = (received.clone(), done.clone(), stop.clone());
            thread::Builder::new()
                .name("floor-reader".into())
                .spawn(move || {
                    let res = reader_loop(receivers, core, &received, &stop, on_read);
                    done.store(true, Ordering::Release);
                    res
                })
                .context("spawning the floor's reader thread")?
        };
        Ok(Reader {
            handle,
            received,
            done,
            stop,
        })
    }

    /// Tells the reader to stop and waits for it.
    pub(crate) fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the floor's reader thread panicked"))
            .and_then(|r| r)
    }
}

/// The reader: drains every receiving socket until `stop`, counting bytes into `received`.
fn reader_loop(
    mut streams: Vec<TcpStream>,
    core: usize,
    received: &AtomicU64,
    stop: &AtomicBool,
    mut on_read: Option<OnRead>,
) -> anyhow::Result<()> {
    pin_current_thread(core).context("reader")?;

    // SAFETY: epoll_create1 has no pointer arguments.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error()).context("epoll_create1");
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(raw) };

    for (i, s) in streams.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: both descriptors are open; `ev` is a valid epoll_event.
        if unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                s.as_raw_fd(),
                &mut ev,
            )
        } != 0
        {
            return Err(io::Error::last_os_error()).context("epoll_ctl(ADD)");
        }
    }

    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; READ_BUF_BYTES];
    while !stop.load(Ordering::Acquire) {
        // SAFETY: `events` has room for the count we pass.
        let n = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                20,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("epoll_wait");
        }
        for ev in &events[..n as usize] {
            let idx = { ev.u64 } as usize;
            let Some(stream) = streams.get_mut(idx) else {
                continue;
            };
            let mut got = 0u64;
            let mut eof = false;
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(k) => {
                        got += k as u64;
                        if let Some(f) = on_read.as_mut() {
                            f(idx, &buf[..k]);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("reading connection {idx}"));
                    }
                }
            }
            if got > 0 {
                received.fetch_add(got, Ordering::Release);
            }
            if eof {
                // The sending end closed (teardown, or the sender gave up): stop watching it so
                // level-triggered epoll does not report it forever. A missing byte count shows
                // up as a drain timeout on the sender's side.
                // SAFETY: both descriptors are open; DEL ignores the event pointer.
                unsafe {
                    libc::epoll_ctl(
                        epoll.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        stream.as_raw_fd(),
                        std::ptr::null_mut(),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Involuntary context switches of the calling thread so far (times it was preempted).
fn thread_preemptions() -> anyhow::Result<u64> {
    // SAFETY: rusage is plain data; getrusage writes into the one we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return Err(io::Error::last_os_error()).context("getrusage(RUSAGE_THREAD)");
    }
    Ok(ru.ru_nivcsw as u64)
}

/// The CPU time of the sender core's `ksoftirqd`, which runs the softirq work that the kernel
/// defers from the sender (the first field of `/proc/<pid>/schedstat`, in nanoseconds).
struct Ksoftirqd {
    schedstat: PathBuf,
}

impl Ksoftirqd {
    /// Finds `ksoftirqd/<core>`; `None` when /proc does not show it or has no schedstat.
    fn find(core: usize) -> Option<Ksoftirqd> {
        let want = format!("ksoftirqd/{core}");
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
                continue;
            };
            if comm.trim_end() == want {
                let k = Ksoftirqd {
                    schedstat: format!("/proc/{pid}/schedstat").into(),
                };
                return k.cpu_ns().map(|_| k);
            }
        }
        None
    }

    fn cpu_ns(&self) -> Option<u64> {
        parse_schedstat_runtime(&std::fs::read_to_string(&self.schedstat).ok()?)
    }
}

/// The run time in nanoseconds from a `/proc/<pid>/schedstat` line
/// (`<run ns> <wait ns> <timeslices>`).
fn parse_schedstat_runtime(line: &str) -> Option<u64> {
    line.split_whitespace().next()?.parse().ok()
}

/// One measured round.
#[derive(Debug, Clone)]
struct RoundSample {
    cpu_ns: u64,
    last_completion_ns: u64,
    /// Each connection's write completion, ns after the round's start.
    completions_ns: Vec<u64>,
    submissions: u64,
    /// Times the sender was preempted during the round (its wall time then includes other work).
    preemptions: u64,
}

/// The sender thread: pins itself, starts a tokio-uring runtime and runs every setting.
fn sender_main(
    streams: Vec<TcpStream>,
    args: &FloorArgs,
    received: &AtomicU64,
    reader_done: &AtomicBool,
) -> anyhow::Result<Vec<FloorResult>> {
    pin_current_thread(args.sender_core).context("sender")?;
    let core = args.sender_core;
    let ksoftirqd = Ksoftirqd::find(core);
    if ksoftirqd.is_none() {
        eprintln!(
            "floor: note: ksoftirqd/{core} is not visible in /proc; the costs are the sender \
             thread's CPU time alone"
        );
    }
    let rt = tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES))
        .context("starting io_uring (is io_uring allowed here?)")?;
    rt.block_on(async {
        let streams = uring_streams(streams);
        let message = Bytes::from(vec![b'x'; args.message_bytes]);
        let mut expected = warm_up(&streams, &message, received, reader_done).await?;
        let mut results = Vec::with_capacity(args.frames_per_write.len());

        let groups: Vec<&[Rc<tokio_uring::net::TcpStream>]> =
            streams.chunks(group_size(args).max(1)).collect();
        let interval = Duration::from_micros(args.interval_us);
        // One lap over the groups (one round when every connection is written each round) at
        // the measured pace, so that every measured send follows the same idle gap.
        let warmup_rounds = WARMUP_ROUNDS.max(groups.len());

        for &k in &args.frames_per_write {
            let mut next_start: Option<Instant> = None;
            let mut late_rounds = 0usize;
            let mut per_send = Vec::with_capacity(args.rounds);
            let mut per_message = Vec::with_capacity(args.rounds);
            let mut last = Vec::with_capacity(args.rounds);
            let mut busy_shares = Vec::with_capacity(args.rounds);
            let mut ksoftirqd_shares = Vec::with_capacity(args.rounds);
            let mut extra_submissions = 0u64;
            let mut preempted_rounds = 0usize;

            for round in 0..warmup_rounds + args.rounds {
                if !interval.is_zero() {
                    let now = Instant::now();
                    let start = match next_start {
                        Some(at) if at > now => {
                            thread::sleep(at - now);
                            at
                        }
                        Some(_) => {
                            if round >= warmup_rounds {
                                late_rounds += 1;
                            }
                            now
                        }
                        None => now,
                    };
                    next_start = Some(start + interval);
                }
                let conns = groups[round % groups.len()];
                let n = conns.len();
                let ks0 = ksoftirqd.as_ref().and_then(Ksoftirqd::cpu_ns);
                let sample = run_round(conns, &message, k).await?;
                expected += (n * k * args.message_bytes) as u64;
                wait_drained(received, expected, reader_done)
                    .with_context(|| format!("frames_per_write {k}, round {round}"))?;
                // Until the reader has every byte, all of the round's receive processing is done.
                let ks_ns = match (ks0, ksoftirqd.as_ref().and_then(Ksoftirqd::cpu_ns)) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => 0,
                };
                if round < warmup_rounds {
                    continue;
                }
                extra_submissions += sample.submissions.saturating_sub(n as u64);
                if sample.preemptions > 0 {
                    preempted_rounds += 1;
                }
                let core_ns = sample.cpu_ns + ks_ns;
                let core_us = core_ns as f64 / 1_000.0;
                per_send.push(core_us / n as f64);
                per_message.push(core_us / (n * k) as f64);
                last.push(sample.last_completion_ns as f64 / 1_000.0);
                if sample.last_completion_ns > 0 {
                    busy_shares.push(core_ns as f64 / sample.last_completion_ns as f64);
                }
                if core_ns > 0 {
                    ksoftirqd_shares.push(ks_ns as f64 / core_ns as f64);
                }
            }

            if extra_submissions > 0 {
                eprintln!(
                    "floor: warning: frames_per_write {k}: {extra_submissions} short writes were \
                     resubmitted"
                );
            }
            if let Some(share) = median(&mut ksoftirqd_shares)
                && share >= KSOFTIRQD_NOTE_SHARE
            {
                eprintln!(
                    "floor: note: frames_per_write {k}: ksoftirqd/{core} did {:.0}% of the sender \
                     core's work (softirqs the kernel deferred); it is counted in the costs",
                    share * 100.0
                );
            }
            if let Some(share) = median(&mut busy_shares)
                && share < MIN_BUSY_SHARE
            {
                eprintln!(
                    "floor: warning: frames_per_write {k}: the measured CPU work on core {core} is \
                     only {:.0}% of the round's wall time (the sender was preempted in \
                     {preempted_rounds} of {} rounds). Either other tasks ran on core {core} \
                     (last_completion is inflated; give the sender a quiet core), or this kernel \
                     accounts softirq time separately (CONFIG_IRQ_TIME_ACCOUNTING) and the costs \
                     leave out the loopback receive work (last_completion / connections is then \
                     the better cost per send).",
                    share * 100.0,
                    args.rounds
                );
            }

            results.push(FloorResult {
                frames_per_write: k,
                cost_per_send_us: median(&mut per_send).unwrap_or(f64::NAN),
                cost_per_message_us: median(&mut per_message).unwrap_or(f64::NAN),
                last_completion_us: median(&mut last).unwrap_or(f64::NAN),
                last_completion_p99_us: percentile(&mut last, 0.99).unwrap_or(f64::NAN),
                rounds: args.rounds,
                late_rounds,
            });
        }
        Ok(results)
    })
}

/// The senders' ends on the runtime of the calling thread.
fn uring_streams(streams: Vec<TcpStream>) -> Vec<Rc<tokio_uring::net::TcpStream>> {
    streams
        .into_iter()
        .map(|s| Rc::new(tokio_uring::net::TcpStream::from_std(s)))
        .collect()
}

/// Takes every connection past TCP's quick-ACK start before anything is measured: untimed
/// one-frame rounds over all of them. Returns the bytes the reader has counted so far.
async fn warm_up(
    streams: &[Rc<tokio_uring::net::TcpStream>],
    message: &Bytes,
    received: &AtomicU64,
    reader_done: &AtomicBool,
) -> anyhow::Result<u64> {
    let mut expected = 0u64;
    for round in 0..CONNECTION_WARMUP_ROUNDS {
        run_round(streams, message, 1).await?;
        expected += (streams.len() * message.len()) as u64;
        wait_drained(received, expected, reader_done)
            .with_context(|| format!("connection warm-up round {round}"))?;
    }
    Ok(expected)
}

/// One round: one `writev` of `k` frames on every connection, all in flight together.
async fn run_round(
    streams: &[Rc<tokio_uring::net::TcpStream>],
    message: &Bytes,
    k: usize,
) -> anyhow::Result<RoundSample> {
    // Build the batches outside the timed region (the gateway's outbox has them queued already).
    let batches: Vec<Vec<Bytes>> = streams.iter().map(|_| vec![message.clone(); k]).collect();

    let preempt0 = thread_preemptions()?;
    let cpu0 = thread_cpu_ns()?;
    let t0 = Instant::now();
    let handles: Vec<_> = streams
        .iter()
        .zip(batches)
        .map(|(stream, frames)| {
            let stream = Rc::clone(stream);
            tokio_uring::spawn(async move {
                let res = write_frames(&stream, frames).await;
                res.map(|submissions| (submissions, Instant::now()))
            })
        })
        .collect();
    let mut submissions = 0u64;
    let mut done = Vec::with_capacity(streams.len());
    for (i, h) in handles.into_iter().enumerate() {
        let (n, at) = h
            .await
            .map_err(|e| anyhow::anyhow!("write task {i} failed: {e}"))?
            .with_context(|| format!("connection {i}"))?;
        submissions += n;
        done.push(at);
    }
    let cpu1 = thread_cpu_ns()?;
    let preempt1 = thread_preemptions()?;

    let completions_ns: Vec<u64> = done
        .iter()
        .map(|t| u64::try_from(t.duration_since(t0).as_nanos()).unwrap_or(u64::MAX))
        .collect();
    Ok(RoundSample {
        cpu_ns: cpu1.saturating_sub(cpu0),
        last_completion_ns: completions_ns.iter().copied().max().unwrap_or(0),
        completions_ns,
        submissions,
        preemptions: preempt1.saturating_sub(preempt0),
    })
}

/// Writes all of `frames` with `writev`, resubmitting the rest after a short write. Returns the
/// number of submissions (1 unless a write was short).
async fn write_frames(
    stream: &tokio_uring::net::TcpStream,
    mut frames: Vec<Bytes>,
) -> anyhow::Result<u64> {
    let mut left: usize = frames.iter().map(Bytes::len).sum();
    let mut submissions = 0u64;
    while left > 0 {
        let (res, bufs) = stream.writev(frames).await;
        submissions += 1;
        let n = res.context("writev")?;
        ensure!(n > 0, "writev wrote nothing");
        left = left.saturating_sub(n);
        frames = remaining_after(bufs, n);
    }
    Ok(submissions)
}

/// The frames still to write after `written` bytes of `frames` went out.
fn remaining_after(frames: Vec<Bytes>, mut written: usize) -> Vec<Bytes> {
    let mut rest = Vec::new();
    for f in frames {
        if written >= f.len() {
            written -= f.len();
        } else if written > 0 {
            rest.push(f.slice(written..));
            written = 0;
        } else {
            rest.push(f);
        }
    }
    rest
}

/// Waits until the reader has counted `expected` bytes in all.
pub(crate) fn wait_drained(
    received: &AtomicU64,
    expected: u64,
    reader_done: &AtomicBool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let got = received.load(Ordering::Acquire);
        if got >= expected {
            ensure!(
                got == expected,
                "the reader got {got} bytes, more than the {expected} sent"
            );
            return Ok(());
        }
        if reader_done.load(Ordering::Acquire) {
            bail!("the reader stopped after {got} of {expected} bytes");
        }
        if start.elapsed() > DRAIN_TIMEOUT {
            bail!("timed out waiting for the reader: {got} of {expected} bytes");
        }
        thread::sleep(Duration::from_micros(50));
    }
}

/// When the floor's rounds run during a scenario (`run --floor-cores`): halfway between the
/// publisher's sends, so a round never overlaps a fan-out of the gateway on a quiet host.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The publisher's clock origin: its k-th send is due at `origin + k × interval`.
    pub origin: Instant,
    pub interval: Duration,
    /// Only rounds started inside `[window_start_ns, window_end_ns)` (ns since the epoch, the
    /// scenario's measured window) count; the floor stops at `window_end_ns`.
    pub window_start_ns: u64,
    pub window_end_ns: u64,
}

/// What the interleaved floor measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InterleavedFloor {
    pub connections: usize,
    /// Rounds inside the window.
    pub rounds: usize,
    /// Median and 99th percentile over those rounds of the last send's completion, µs.
    pub last_completion_us: f64,
    pub last_completion_p99_us: f64,
    /// CPU work on the sender core per send, median over the rounds, µs.
    pub cost_per_send_us: f64,
    /// The 99th percentile over every send of every round of its completion after the round's
    /// start, µs: what a gateway with no cost of its own would score as its latency p99.
    pub send_p99_us: f64,
}

/// The floor running beside a scenario: N loopback pairs, a sender pinned to the gateway's core
/// and a draining reader on the load test's, one round (one 200-byte send per connection) at
/// each [`Schedule`] slot. Comparing the gateway with this instead of a floor measured minutes
/// apart takes the host's drift out of the ratio: on the 2-vCPU VM the back-to-back floor for
/// 1k connections moved between 5.0 and 9.7 ms within five minutes.
pub struct Interleaved {
    sender: thread::JoinHandle<anyhow::Result<InterleavedSamples>>,
    reader: Reader,
    connections: usize,
}

impl Interleaved {
    /// Opens the pairs and starts both threads. The sender warms the connections up at once
    /// (untimed), then follows `schedule`.
    pub fn start(
        connections: usize,
        message_bytes: usize,
        sender_core: usize,
        reader_core: usize,
        schedule: Schedule,
    ) -> anyhow::Result<Interleaved> {
        ensure!(
            connections > 0,
            "the interleaved floor needs at least one connection"
        );
        ensure!(
            !schedule.interval.is_zero(),
            "the interleaved floor needs a paced scenario"
        );
        let (senders, receivers) = connect_pairs(connections)?;
        let reader = Reader::spawn(receivers, reader_core)?;
        let sender = {
            let received = Arc::clone(&reader.received);
            let reader_done = Arc::clone(&reader.done);
            // The sender stops on its own at the window's end; this flag only cuts it short.
            let stop = Arc::clone(&reader.stop);
            thread::Builder::new()
                .name("floor-sender".into())
                .spawn(move || {
                    interleaved_sender(
                        senders,
                        message_bytes,
                        sender_core,
                        schedule,
                        &received,
                        &reader_done,
                        &stop,
                    )
                })
                .context("spawning the floor's sender thread")?
        };
        Ok(Interleaved {
            sender,
            reader,
            connections,
        })
    }

    /// Waits for the sender to pass the window's end, stops the reader, and summarises.
    pub fn finish(self) -> anyhow::Result<InterleavedFloor> {
        let sent = self
            .sender
            .join()
            .map_err(|_| anyhow::anyhow!("the floor's sender thread panicked"));
        let read = self.reader.stop();
        let (samples, mut sends) = sent.and_then(|r| r)?;
        read.context("the floor's reader failed")?;
        let (mut last, mut cost): (Vec<f64>, Vec<f64>) = samples.into_iter().unzip();
        ensure!(
            !last.is_empty(),
            "the interleaved floor ran no round inside the window"
        );
        Ok(InterleavedFloor {
            connections: self.connections,
            rounds: last.len(),
            last_completion_us: median(&mut last).unwrap_or(f64::NAN),
            last_completion_p99_us: percentile(&mut last, 0.99).unwrap_or(f64::NAN),
            cost_per_send_us: median(&mut cost).unwrap_or(f64::NAN),
            send_p99_us: percentile(&mut sends, 0.99).unwrap_or(f64::NAN),
        })
    }
}

/// What the interleaved floor's sender collects: (last completion µs, CPU µs per send) per
/// in-window round, and every in-window send's completion after its round's start, µs.
type InterleavedSamples = (Vec<(f64, f64)>, Vec<f64>);

/// The interleaved floor's sender.
fn interleaved_sender(
    streams: Vec<TcpStream>,
    message_bytes: usize,
    core: usize,
    schedule: Schedule,
    received: &AtomicU64,
    reader_done: &AtomicBool,
    stop: &AtomicBool,
) -> anyhow::Result<InterleavedSamples> {
    pin_current_thread(core).context("floor sender")?;
    let rt = tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES))
        .context("starting io_uring (is io_uring allowed here?)")?;
    rt.block_on(async {
        let streams = uring_streams(streams);
        let message = Bytes::from(vec![b'x'; message_bytes]);
        let round_bytes = (streams.len() * message_bytes) as u64;
        let mut expected = warm_up(&streams, &message, received, reader_done).await?;
        let mut samples = Vec::new();
        let mut sends = Vec::new();
        for slot in 0u32.. {
            if stop.load(Ordering::Acquire) {
                break;
            }
            let at = schedule.origin + schedule.interval * slot + schedule.interval / 2;
            let now = Instant::now();
            if at < now {
                continue; // missed (warm-up ran long, or the last round overran): skip the slot
            }
            thread::sleep(at - now);
            let start_ns = crate::payload::now_ns();
            if start_ns >= schedule.window_end_ns {
                break;
            }
            let sample = run_round(&streams, &message, 1).await?;
            expected += round_bytes;
            wait_drained(received, expected, reader_done)
                .with_context(|| format!("interleaved floor round {slot}"))?;
            if start_ns >= schedule.window_start_ns {
                samples.push((
                    sample.last_completion_ns as f64 / 1_000.0,
                    sample.cpu_ns as f64 / 1_000.0 / streams.len() as f64,
                ));
                sends.extend(sample.completions_ns.iter().map(|&ns| ns as f64 / 1_000.0));
            }
        }
        Ok((samples, sends))
    })
}

/// The `q` quantile of `values` (nearest rank), sorting them in place. `None` when empty.
fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// The median of `values` (the mean of the middle two for an even count), sorting them in
/// place. `None` when empty. NaNs sort last.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_empty_is_none() {
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn median_of_odd_count_is_middle() {
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&mut [7.5]), Some(7.5));
    }

    #[test]
    fn median_of_even_count_is_mean_of_middle_two() {
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn median_ignores_one_outlier() {
        assert_eq!(median(&mut [5.0, 5.1, 4.9, 500.0, 5.0]), Some(5.0));
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.99), Some(198.0));
        assert_eq!(percentile(&mut v, 0.5), Some(100.0));
        assert_eq!(percentile(&mut [3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&mut [], 0.99), None);
    }

    #[test]
    fn interleaved_floor_runs_between_slots_inside_the_window() {
        let interval = Duration::from_millis(20);
        let origin = Instant::now() + Duration::from_millis(50);
        let now = crate::payload::now_ns();
        // Slots every 20 ms; the window holds the rounds from 0.3 s to 0.5 s from now.
        let schedule = Schedule {
            origin,
            interval,
            window_start_ns: now + 300_000_000,
            window_end_ns: now + 500_000_000,
        };
        let floor = Interleaved::start(8, 200, 0, 0, schedule).expect("start");
        let f = floor.finish().expect("finish");
        assert_eq!(f.connections, 8);
        // 200 ms of 20 ms slots: about 10 rounds, fewer if the host stalls a slot past its time.
        assert!((5..=11).contains(&f.rounds), "{} rounds", f.rounds);
        assert!(f.last_completion_us > 0.0 && f.last_completion_us.is_finite());
        assert!(f.last_completion_p99_us >= f.last_completion_us);
        assert!(f.cost_per_send_us > 0.0);
        assert!(f.send_p99_us > 0.0 && f.send_p99_us <= f.last_completion_p99_us);
    }

    #[test]
    fn group_size_zero_means_all() {
        let args = FloorArgs {
            connections: 30,
            message_bytes: 200,
            frames_per_write: vec![1],
            rounds: 3,
            sender_core: 0,
            reader_core: 1,
            interval_us: 0,
            group: 0,
        };
        assert_eq!(group_size(&args), 30);
        assert_eq!(group_size(&FloorArgs { group: 10, ..args }), 10);
    }

    #[test]
    fn remaining_after_full_write_is_empty() {
        let f = Bytes::from_static(b"abcd");
        assert!(remaining_after(vec![f.clone(), f], 8).is_empty());
    }

    #[test]
    fn remaining_after_short_write_keeps_the_tail() {
        let f = Bytes::from_static(b"abcd");
        let rest = remaining_after(vec![f.clone(), f.clone(), f], 6);
        assert_eq!(
            rest,
            vec![Bytes::from_static(b"cd"), Bytes::from_static(b"abcd")]
        );
    }

    #[test]
    fn remaining_after_frame_boundary() {
        let f = Bytes::from_static(b"abcd");
        let rest = remaining_after(vec![f.clone(), f.clone(), f], 4);
        assert_eq!(rest.len(), 2);
        assert_eq!(rest.iter().map(Bytes::len).sum::<usize>(), 8);
    }

    #[test]
    fn schedstat_runtime_is_the_first_field() {
        assert_eq!(
            parse_schedstat_runtime("1603665731 11606676685 20211\n"),
            Some(1_603_665_731)
        );
        assert_eq!(parse_schedstat_runtime(""), None);
        assert_eq!(parse_schedstat_runtime("x 1 2"), None);
    }

    #[test]
    fn fds_needed_counts_two_per_connection() {
        assert_eq!(fds_needed(1000), 2000 + SPARE_FDS);
        assert_eq!(fds_needed(usize::MAX), u64::MAX);
    }

    #[test]
    fn validate_rejects_bad_settings() {
        let ok = FloorArgs {
            connections: 10,
            message_bytes: 200,
            frames_per_write: vec![1, 8, 64],
            rounds: 3,
            sender_core: 0,
            reader_core: 1,
            interval_us: 0,
            group: 0,
        };
        assert!(validate(&ok).is_ok());
        assert!(
            validate(&FloorArgs {
                group: 11,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&FloorArgs {
                connections: 0,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&FloorArgs {
                rounds: 0,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&FloorArgs {
                frames_per_write: vec![],
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&FloorArgs {
                frames_per_write: vec![0],
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&FloorArgs {
                frames_per_write: vec![2000],
                ..ok
            })
            .is_err()
        );
    }
}
