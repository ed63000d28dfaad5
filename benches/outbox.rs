//! Outbox batching: K frames for one connection, queued and flushed, per frame.
//!
//! What it measures, for K = 1, 8 and 64 pending frames of about 240 bytes each (the envelope of a
//! 200-byte JSON payload, as the hub encodes it), with `Throughput::Elements(K)` so criterion
//! reports frames per second:
//!
//! - `shared`: ringcast's path. K shared frames are pushed into an [`Outbox`] (an `OutFrame`
//!   refcount clone each), the writer `take_batch`es them, builds the iovec list for one
//!   `writev` (tokio-uring builds a fresh `Vec<iovec>` per `writev`, so we do too), and
//!   `complete`s the batch with the total length. No payload byte is copied in user space; one
//!   write submission per flush.
//! - `copy_batched`: a tungstenite-style write buffer (`Vec<u8>`): each frame's bytes are copied
//!   into the buffer, then the buffer is written once (tungstenite `write` K times, then one
//!   `flush`; uWS corking). K copies, one submission.
//! - `copy_per_frame`: the same buffer, flushed after every frame (tungstenite `send`, which is
//!   `write` + `flush`). K copies, K submissions.
//!
//! Two sinks stand in for the socket, because the submissions are the point of batching and a
//! memory-only bench cannot show their cost:
//!
//! - `outbox/…`: no sink. A submission is only counted and the bytes are passed to `black_box`,
//!   so the figure is the user-space bookkeeping and copying alone.
//! - `outbox_devnull/…`: every submission is a real `writev(2)` / `write(2)` on `/dev/null`,
//!   which costs one kernel crossing and no copy. It is a stand-in, not a socket: an io_uring
//!   SQE for a TCP socket costs less to submit (batched across connections in one
//!   `io_uring_enter`) but more to execute (`tcp_sendmsg` copies into socket buffers). The count
//!   of submissions is the robust figure; the timing shows the order of magnitude.
//!
//! The number of write submissions and of bytes copied per K frames is a count, not a timing:
//! it is printed before each K's benches (`submissions per K frames: …`) and written down in
//! `docs/BENCHMARKS.md` with the timings.

use std::fs::File;
use std::hint::black_box;
use std::io::{IoSlice, Write};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use ringcast::conn::outbox::{OutFrame, Outbox, SendStatus};
use ringcast::protocol::{is_json, render_event};
use ringcast::ws::frame::{FrameBuilder, OpCode};

/// Frames pending per flush, with the suffix used in bench names.
const KS: [usize; 3] = [1, 8, 64];

/// The channel the frames belong to.
const CHANNEL: &[u8] = b"market.btc-usd.trades";

/// A tungstenite-sized write buffer (its default `write_buffer_size` is 128 KiB).
const WRITE_BUFFER: usize = 128 * 1_024;

/// `K` distinct encoded frames, each the envelope of a 200-byte JSON payload.
fn frames(k: usize) -> Vec<OutFrame> {
    (0..k)
        .map(|i| {
            let seq = 1_000_000 + i;
            let head = format!(r#"{{"seq":{seq},"symbol":"BTC-USD","price":"64012.55","pad":""#);
            let mut payload = head.into_bytes();
            payload.resize(198, b'x');
            payload.extend_from_slice(br#""}"#);
            assert!(is_json(&payload));
            let mut b = FrameBuilder::with_capacity(payload.len() + CHANNEL.len() + 32);
            render_event(b.payload(), CHANNEL, None, &payload);
            OutFrame::new(b.finish(OpCode::Text))
        })
        .collect()
}

/// Where flushed bytes go: nowhere (count only) or `/dev/null` (a real syscall each).
struct Sink {
    file: Option<File>,
    /// Write submissions so far.
    submissions: u64,
    /// Payload bytes copied in user space so far.
    copied: u64,
}

impl Sink {
    fn counting() -> Sink {
        Sink {
            file: None,
            submissions: 0,
            copied: 0,
        }
    }

    fn dev_null() -> Sink {
        let file = File::options()
            .write(true)
            .open("/dev/null")
            .expect("open /dev/null");
        Sink {
            file: Some(file),
            ..Sink::counting()
        }
    }

    /// One vectored write of `iov`; returns the bytes written.
    fn writev(&mut self, iov: &[IoSlice<'_>]) -> usize {
        self.submissions += 1;
        match &mut self.file {
            Some(f) => f.write_vectored(iov).expect("writev /dev/null"),
            None => black_box(iov).iter().map(|s| s.len()).sum(),
        }
    }

    /// One plain write of `buf`; returns the bytes written.
    fn write(&mut self, buf: &[u8]) -> usize {
        self.submissions += 1;
        match &mut self.file {
            Some(f) => f.write(buf).expect("write /dev/null"),
            None => black_box(buf).len(),
        }
    }
}

/// ringcast's writer: queue shared frames, take them in one batch, one `writev`, complete.
struct Shared {
    outbox: Outbox,
    batch: Vec<OutFrame>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            outbox: Outbox::new(usize::MAX),
            batch: Vec::with_capacity(64),
        }
    }

    fn flush(&mut self, frames: &[OutFrame], sink: &mut Sink) {
        for f in frames {
            let status = self.outbox.push(f.clone());
            debug_assert!(matches!(status, SendStatus::Queued { .. }));
        }
        self.outbox.take_batch(&mut self.batch);
        let iov: Vec<IoSlice<'_>> = self
            .batch
            .iter()
            .map(|f| IoSlice::new(f.as_slice()))
            .collect();
        let written = sink.writev(&iov);
        drop(iov);
        self.outbox.complete(&mut self.batch, written);
        debug_assert!(self.outbox.is_idle(), "short write");
    }
}

/// A tungstenite-style `Vec<u8>` write buffer that every frame is copied into.
struct Copying {
    buf: Vec<u8>,
}

impl Copying {
    fn new() -> Copying {
        Copying {
            buf: Vec::with_capacity(WRITE_BUFFER),
        }
    }

    /// Copies all frames, then one write.
    fn flush_batched(&mut self, frames: &[OutFrame], sink: &mut Sink) {
        for f in frames {
            self.buf.extend_from_slice(f.as_slice());
            sink.copied += f.len() as u64;
        }
        let written = sink.write(&self.buf);
        debug_assert_eq!(written, self.buf.len(), "short write");
        self.buf.clear();
    }

    /// Copies and writes each frame on its own.
    fn flush_per_frame(&mut self, frames: &[OutFrame], sink: &mut Sink) {
        for f in frames {
            self.buf.extend_from_slice(f.as_slice());
            sink.copied += f.len() as u64;
            let written = sink.write(&self.buf);
            debug_assert_eq!(written, self.buf.len(), "short write");
            self.buf.clear();
        }
    }
}

/// Prints the submissions and copied bytes of one flush of `frames` on each path.
fn print_counts(frames: &[OutFrame]) {
    let total: usize = frames.iter().map(OutFrame::len).sum();
    let (mut a, mut b, mut c) = (Sink::counting(), Sink::counting(), Sink::counting());
    Shared::new().flush(frames, &mut a);
    Copying::new().flush_batched(frames, &mut b);
    Copying::new().flush_per_frame(frames, &mut c);
    println!(
        "submissions per K frames: K={k} ({total} B): shared {} submission(s), {} B copied; \
         copy_batched {} submission(s), {} B copied; copy_per_frame {} submission(s), {} B copied",
        a.submissions,
        a.copied,
        b.submissions,
        b.copied,
        c.submissions,
        c.copied,
        k = frames.len(),
    );
}

/// The three paths for every K, with `make_sink` as the stand-in for the socket.
fn paths(group: &mut BenchmarkGroup<'_, WallTime>, make_sink: fn() -> Sink, print: bool) {
    for k in KS {
        let frames = frames(k);
        if print {
            print_counts(&frames);
        }
        group.throughput(Throughput::Elements(k as u64));

        let (mut shared, mut sink) = (Shared::new(), make_sink());
        group.bench_function(format!("shared_{k}_frames"), |b| {
            b.iter(|| shared.flush(black_box(&frames), &mut sink))
        });

        let (mut copying, mut sink) = (Copying::new(), make_sink());
        group.bench_function(format!("copy_batched_{k}_frames"), |b| {
            b.iter(|| copying.flush_batched(black_box(&frames), &mut sink))
        });

        let (mut copying, mut sink) = (Copying::new(), make_sink());
        group.bench_function(format!("copy_per_frame_{k}_frames"), |b| {
            b.iter(|| copying.flush_per_frame(black_box(&frames), &mut sink))
        });
    }
}

fn outbox(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox");
    paths(&mut group, Sink::counting, true);
    group.finish();
}

fn outbox_devnull(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbox_devnull");
    paths(&mut group, Sink::dev_null, false);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = outbox, outbox_devnull
}
criterion_main!(benches);
