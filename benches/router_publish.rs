//! A router publish to 1, 100 and 10k subscribers: the real hub-to-shard path, minus sockets.
//!
//! What it measures (`router/publish_{1,100,10k}_subs`, `Throughput::Elements(N)`, so criterion
//! reports deliveries per second): one publish through the real types, on one thread:
//!
//! 1. `Hub::handle(UpstreamMsg::Publish { .. })` and `Hub::finish_batch()`: the publish goes
//!    to the embedded [`MemorySource`] (the only source, so picking
//!    the source is one `*` glob match), the hub looks the channel up, renders the JSON
//!    envelope **once**, and `try_send`s one `ShardMsg::Deliver` into the shard's bounded
//!    crossbeam inbox, then wakes the shard;
//! 2. the shard's inbox turn: `try_recv` each `ShardMsg::Deliver` and call `Shard::deliver`,
//!    which walks the topic's subscriber set and pushes an `OutFrame` clone into each
//!    connection's [`Outbox`](ringcast::conn::outbox::Outbox), waking its (absent) writer;
//! 3. the writers' side, emulated: each connection's outbox is emptied with `take_batch` and
//!    `complete` with the batch's full length, as if its `writev` had written everything.
//!
//! `router/route_and_deliver_10k_subs` is the 10k case with step 3 run but not timed
//! (`iter_custom`), which splits the figure into router and emulated writers.
//!
//! Setup (not timed): a `Hub` with a `MemorySource` and one `ShardLink` (a crossbeam channel of
//! `Config::shard_inbox` messages and a real `rt::wake_pair()`), a `Shard` built with
//! `Shard::new`, and N connections added with `Shard::insert_conn(SocketHandle::DETACHED, ..)`,
//! made native JSON WebSockets (`ConnKind::Native(Format::Json)`) and subscribed with
//! `Shard::subscribe`. The resulting `UpstreamMsg::Interest` is forwarded from the hub channel
//! into `Hub::handle`, as the hub thread would. `max_outbox_bytes` is 1 GiB so that nothing is
//! ever closed as a slow consumer.
//!
//! Stand-ins and what they leave out, so the figures are not over-read:
//!
//! - Connections have `SocketHandle::DETACHED` and no I/O task: step 3 stands in for the
//!   per-connection write loop, minus the `writev` submission itself (see `benches/outbox.rs`).
//! - The wake-up: `WakeHandle::wake` writes the eventfd only when no wake-up is pending, and only
//!   the shard's `WakeListener` (an io_uring read, which needs the shard's runtime) clears the
//!   pending flag. Here no listener runs, so after the first iteration `wake` is one atomic swap.
//!   The real path adds one 8-byte eventfd `write(2)` per publish batch per shard, and the
//!   shard's wake-up; both are per shard, not per subscriber.
//! - Hub and shard run on one thread here; in the server they are two threads, so the
//!   crossbeam hop also costs a cache-line transfer there.
//!
//! Figures, including the cost per delivery at 10k subscribers, are in `docs/BENCHMARKS.md`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel::{Receiver, bounded};
use ringcast::config::Config;
use ringcast::conn::ConnKind;
use ringcast::conn::outbox::OutFrame;
use ringcast::metrics::Metrics;
use ringcast::protocol::is_json;
use ringcast::router::hub::{Hub, ShardLink};
use ringcast::router::{Format, ShardId, ShardMsg, TopicKind, UpstreamMsg};
use ringcast::rt::{SocketHandle, WakeReceiver, wake_pair};
use ringcast::shard::Shard;
use ringcast::source::memory::MemorySource;

/// The channel every subscriber listens on.
const CHANNEL: &[u8] = b"market.btc-usd.trades";

/// Outbox cap for the bench: large enough that no connection ever overflows.
const MAX_OUTBOX_BYTES: usize = 1 << 30;

/// Same capacity as `server::HUB_CHANNEL`.
const HUB_CHANNEL: usize = 65_536;

/// Subscriber counts, with the suffix used in bench names.
const SIZES: [(usize, &str); 3] = [(1, "1"), (100, "100"), (10_000, "10k")];

/// A JSON object of exactly `len` bytes (`len` >= 80), shaped like a market-data event.
fn json_payload(len: usize) -> Bytes {
    let head = br#"{"seq":1234567,"symbol":"BTC-USD","price":"64012.55","size":"0.0125","pad":""#;
    let tail = br#""}"#;
    assert!(len >= head.len() + tail.len(), "payload too short");
    let mut out = head.to_vec();
    out.resize(len - tail.len(), b'x');
    out.extend_from_slice(tail);
    assert!(is_json(&out), "payload must be embedded verbatim");
    Bytes::from(out)
}

/// One hub, one shard with `subs` subscribers of [`CHANNEL`], wired as the server wires them.
struct Rig {
    hub: Hub,
    shard: Shard,
    /// The shard's inbox.
    inbox: Receiver<ShardMsg>,
    /// Kept alive so the eventfd stays open; never read (see the module docs).
    _wake: WakeReceiver,
    /// Reused `writev` batch for the emulated writers.
    batch: Vec<OutFrame>,
    channel: Bytes,
    payload: Bytes,
}

impl Rig {
    fn new(subs: usize) -> Rig {
        let config = Config {
            shards: 1,
            max_outbox_bytes: MAX_OUTBOX_BYTES,
            max_connections: subs.max(1),
            ..Config::default()
        };
        let metrics = Arc::new(Metrics::new(1));
        let (hub_tx, hub_rx) = bounded::<UpstreamMsg>(HUB_CHANNEL);
        let (shard_tx, inbox) = bounded::<ShardMsg>(config.shard_inbox);
        let (wake, wake_rx) = wake_pair().expect("eventfd");
        let link = ShardLink { tx: shard_tx, wake };
        let source: Box<dyn ringcast::source::Source> = Box::new(MemorySource::new());
        let mut hub = Hub::new(vec![source], vec![link], metrics.clone());
        let mut shard = Shard::new(ShardId(0), Arc::new(config), hub_tx, metrics);

        let channel = Bytes::from_static(CHANNEL);
        let now = Instant::now();
        for _ in 0..subs {
            let key = shard.insert_conn(SocketHandle::DETACHED, 0, now);
            shard.conns[key].kind = ConnKind::Native(Format::Json);
            shard
                .subscribe(key, TopicKind::Channel, &channel)
                .expect("subscribe");
        }
        // The hub thread's turn: apply the interest edge, then subscribe the source.
        while let Ok(msg) = hub_rx.try_recv() {
            assert!(matches!(msg, UpstreamMsg::Interest(_)));
            hub.handle(msg);
        }
        hub.finish_batch();

        let mut rig = Rig {
            hub,
            shard,
            inbox,
            _wake: wake_rx,
            batch: Vec::with_capacity(64),
            channel,
            payload: json_payload(200),
        };
        assert_eq!(rig.publish(), subs, "every subscriber gets the event");
        rig
    }

    /// One publish, end to end; returns the number of frames the writers flushed.
    fn publish(&mut self) -> usize {
        self.route_and_deliver();
        self.flush_writers()
    }

    /// Steps 1 and 2: the hub routes one publish, the shard delivers it into the outboxes.
    fn route_and_deliver(&mut self) {
        self.hub.handle(UpstreamMsg::Publish {
            source: 0,
            channel: self.channel.clone(),
            payload: self.payload.clone(),
        });
        self.hub.finish_batch();
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                ShardMsg::Deliver {
                    target,
                    frames,
                    stamp,
                } => self.shard.deliver(target, frames, stamp),
                ShardMsg::DeliverTo { .. }
                | ShardMsg::Replay { .. }
                | ShardMsg::Adopt { .. }
                | ShardMsg::Read(_) => {
                    unreachable!("no snapshot, replay, hand-off or source is ever requested here")
                }
            }
        }
    }

    /// Step 3: the shard's direct flush, emulated: every connection the turn queued frames
    /// for writes its whole outbox in one (emulated) `writev`.
    fn flush_writers(&mut self) -> usize {
        let mut flushed = 0;
        let keys = std::mem::take(&mut self.shard.to_flush);
        for &key in &keys {
            let conn = &mut self.shard.conns[key];
            conn.outbox.take_batch_into(&mut self.batch);
            flushed += self.batch.len();
            let written = self.batch.iter().map(OutFrame::len).sum();
            conn.outbox.complete_into(&mut self.batch, written);
        }
        self.shard.to_flush = keys;
        self.shard.to_flush.clear();
        flushed
    }
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("router");
    for (subs, suffix) in SIZES {
        let mut rig = Rig::new(subs);
        group.throughput(Throughput::Elements(subs as u64));
        group.bench_function(format!("publish_{suffix}_subs"), |b| {
            b.iter(|| black_box(rig.publish()))
        });
    }
    // The same 10k publish with step 3 left out of the timing (it still runs, untimed), to show
    // how much of the figure above is the router and how much the emulated writers.
    let (subs, suffix) = SIZES[2];
    let mut rig = Rig::new(subs);
    group.throughput(Throughput::Elements(subs as u64));
    group.bench_function(format!("route_and_deliver_{suffix}_subs"), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                rig.route_and_deliver();
                timed += start.elapsed();
                black_box(rig.flush_writers());
            }
            timed
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = publish
}
criterion_main!(benches);
