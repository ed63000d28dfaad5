//! Frame encoding: encode-once against per-subscriber, and the envelope renderer alone.
//!
//! What it measures:
//!
//! - `frame_encode/render_event_{200B,4KiB}`: [`render_event`] alone, writing the JSON envelope
//!   for a 200-byte and a 4 KiB JSON payload into a reused buffer (no allocation), so the figure
//!   is the renderer's cost: the `is_json` validation plus the copies. `Throughput::Bytes` is the
//!   payload size.
//! - `frame_encode/{encode_once,per_subscriber}_{100,1k}_subs`: one publish of a 200-byte JSON
//!   payload delivered to N subscribers. `Throughput::Elements(N)`, so criterion reports
//!   deliveries per second.
//!   - `encode_once` is what ringcast does: the hub renders the envelope once into a
//!     [`FrameBuilder`] and `finish`es it, the shard wraps the `Bytes` in one [`OutFrame`], and
//!     each subscriber gets an `OutFrame::clone` (a non-atomic refcount bump).
//!   - `per_subscriber` is the baseline that STYLE.md §9.4 asks us to keep visible: the
//!     mini-redis / tungstenite way, where every subscriber gets its own freshly rendered
//!     envelope and encoded frame (`FrameBuilder` + `render_event` + `finish` + `OutFrame::new`,
//!     N times).
//!
//! Stand-ins: a `Vec<OutFrame>` with room for N frames plays the N subscribers' outboxes. It
//! holds exactly what a real [`Outbox`](ringcast::conn::outbox::Outbox) would hold (an
//! `OutFrame` per subscriber), without the outbox's byte accounting, which is the same for both
//! variants and measured in `benches/outbox.rs`. The vector is cleared at the start of each
//! iteration, so every iteration also pays for releasing the previous iteration's frames, as the
//! writer does once a `writev` completes. No sockets, no channels: the hub-to-shard hop is
//! measured in `benches/router_publish.rs`.
//!
//! Figures and the encode-once / per-subscriber ratio are written down in `docs/BENCHMARKS.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::conn::outbox::OutFrame;
use ringcast::protocol::{is_json, render_event};
use ringcast::ws::frame::{FrameBuilder, OpCode};

/// The channel every event is published on.
const CHANNEL: &[u8] = b"market.btc-usd.trades";

/// Subscriber counts for the fan-out cases, with the suffix used in bench names.
const FANOUTS: [(usize, &str); 2] = [(100, "100"), (1_000, "1k")];

/// A JSON object of exactly `len` bytes (`len` >= 64), shaped like a market-data event.
fn json_payload(len: usize) -> Vec<u8> {
    let head = br#"{"seq":1234567,"symbol":"BTC-USD","price":"64012.55","size":"0.0125","pad":""#;
    let tail = br#""}"#;
    assert!(len >= head.len() + tail.len(), "payload too short");
    let mut out = head.to_vec();
    out.resize(len - tail.len(), b'x');
    out.extend_from_slice(tail);
    assert_eq!(out.len(), len);
    assert!(is_json(&out), "payload must be embedded verbatim");
    out
}

/// The encoded text frame of one event, as the hub builds it (`Hub::route`).
fn encode_event(channel: &[u8], payload: &[u8]) -> OutFrame {
    let mut b = FrameBuilder::with_capacity(payload.len() + channel.len() + 32);
    render_event(b.payload(), channel, None, payload);
    OutFrame::new(b.finish(OpCode::Text))
}

fn render_event_alone(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_encode");
    for (len, name) in [(200, "200B"), (4 * 1_024, "4KiB")] {
        let payload = json_payload(len);
        let mut out = Vec::with_capacity(len + CHANNEL.len() + 64);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("render_event_{name}"), |b| {
            b.iter(|| {
                out.clear();
                render_event(&mut out, black_box(CHANNEL), None, black_box(&payload));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let payload = json_payload(200);
    let mut group = c.benchmark_group("frame_encode");
    for (subs, suffix) in FANOUTS {
        let mut outboxes: Vec<OutFrame> = Vec::with_capacity(subs);
        group.throughput(Throughput::Elements(subs as u64));

        group.bench_function(format!("encode_once_{suffix}_subs"), |b| {
            b.iter(|| {
                outboxes.clear();
                let frame = encode_event(black_box(CHANNEL), black_box(&payload));
                for _ in 0..subs {
                    outboxes.push(frame.clone());
                }
                black_box(outboxes.len())
            })
        });

        group.bench_function(format!("per_subscriber_{suffix}_subs"), |b| {
            b.iter(|| {
                outboxes.clear();
                for _ in 0..subs {
                    outboxes.push(encode_event(black_box(CHANNEL), black_box(&payload)));
                }
                black_box(outboxes.len())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = render_event_alone, fanout
}
criterion_main!(benches);
