//! The cost of per-stage latency sampling (`ringcast_stage_*_seconds`), which issue 4 asks to be
//! measured: what a sampled event pays (`Instant::now()` at the source, then one `elapsed()`
//! and a histogram update per stage), and the amortised cost per event at the shipped rate of
//! one event in [`STAGE_SAMPLE_EVERY`] (the counter check every event pays, plus 1/64 of a
//! sampled event).
//!
//! Single-threaded and without sockets: it isolates the instructions sampling adds to the
//! path, not the path itself (see `router_publish` for that).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::metrics::{Histogram, STAGE_SAMPLE_EVERY};

/// What one event goes through: the source's sampling decision, then four stage observations
/// when it carries a stamp (hub, dispatch, write submitted, write completed).
fn event(seen: &mut u64, stages: &[Histogram; 4]) {
    *seen += 1;
    let stamp = seen.is_multiple_of(STAGE_SAMPLE_EVERY).then(Instant::now);
    let stamp = black_box(stamp);
    if let Some(t) = stamp {
        for h in stages {
            h.observe(t.elapsed());
        }
    }
}

fn bench(c: &mut Criterion) {
    let stages: [Histogram; 4] = Default::default();
    let mut g = c.benchmark_group("stage_sampling");
    g.throughput(Throughput::Elements(1));
    g.bench_function("per_event_at_1_in_64", |b| {
        let mut seen = 0u64;
        b.iter(|| event(&mut seen, &stages))
    });
    g.bench_function("sampled_event", |b| {
        b.iter(|| {
            let t = black_box(Instant::now());
            for h in &stages {
                h.observe(t.elapsed());
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
