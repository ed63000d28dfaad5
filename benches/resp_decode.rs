//! RESP decoding of pub/sub messages, in messages per second: the upstream's per-event cost
//! before the hub encodes a frame.
//!
//! Input: a buffer of N back-to-back `message` pushes (as a Redis pub/sub connection delivers
//! them under load), for 200-byte and 4 KiB JSON payloads, in RESP2 (arrays) and RESP3 (pushes).
//! One iteration decodes and classifies the whole buffer with the gateway's own functions
//! (`source::redis::resp::{decode, classify}`), which split each value off the buffer without
//! copying the payload. No socket is involved.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringcast::source::redis::resp::{self, Proto, PubSub};

const MESSAGES: usize = 1_000;

fn buffer(proto: Proto, payload_len: usize) -> BytesMut {
    let payload = format!(
        "{{\"seq\":1,\"data\":\"{}\"}}",
        "x".repeat(payload_len.saturating_sub(20))
    );
    let head = if proto == Proto::Resp3 { ">" } else { "*" };
    let one = format!(
        "{head}3\r\n$7\r\nmessage\r\n$12\r\nnews.updates\r\n${}\r\n{payload}\r\n",
        payload.len()
    );
    BytesMut::from(one.repeat(MESSAGES).as_bytes())
}

fn decode_all(mut buf: BytesMut, proto: Proto) -> usize {
    let mut n = 0;
    while let Ok(Some(v)) = resp::decode(proto, &mut buf) {
        if let PubSub::Message { payload, .. } = resp::classify(v) {
            n += payload.len();
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("resp_decode");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    for (proto, name) in [(Proto::Resp2, "resp2"), (Proto::Resp3, "resp3")] {
        for size in [200usize, 4096] {
            let input = buffer(proto, size);
            g.bench_with_input(
                BenchmarkId::new(name, format!("{size}B")),
                &input,
                |b, input| {
                    // The copy of the input happens in setup, outside the timing.
                    b.iter_batched(
                        || input.clone(),
                        |buf| black_box(decode_all(buf, proto)),
                        BatchSize::LargeInput,
                    )
                },
            );
        }
    }
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
