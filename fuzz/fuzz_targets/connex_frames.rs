//! Arbitrary bytes through the connex frame decoder, cut into reads whose sizes the first bytes
//! choose. It may not panic or loop, its buffer stays within its bound, and the frames and
//! errors out must be the same as when the whole input is given at once.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringcast::source::radar::connex::{ConnexDecoder, FrameError, HEADER_BYTES};

/// A small bound, so that fuzzed lengths hit both sides of it.
const MAX: usize = 300;

fn run(data: &[u8], sizes: &[u8]) -> Vec<Result<Bytes, FrameError>> {
    let mut d = ConnexDecoder::new(MAX);
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let want = sizes
            .get(i % sizes.len().max(1))
            .map_or(rest.len(), |&s| usize::from(s) + 1);
        i += 1;
        let took = d.handle_input(&rest[..want.min(rest.len())]);
        rest = &rest[took..];
        assert!(d.buffered() <= HEADER_BYTES + MAX);
        while let Some(r) = d.poll_record() {
            out.push(r);
        }
        assert!(d.space() > 0);
    }
    for r in out.iter().flatten() {
        let _ = ringcast::source::radar::dmap::parse(r);
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let (sizes, data) = input.split_at(input.len().min(8));
    let chunked = run(data, sizes);
    let whole = run(data, &[]);
    assert_eq!(chunked, whole);
});
