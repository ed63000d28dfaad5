//! Arbitrary bytes as what a WebSocket client sends after the upgrade, through the connection's
//! frame decoder (`ws::codec::Codec`: tungstenite over in-memory buffers), cut into reads whose
//! sizes the first bytes choose. It may not panic; text messages are valid UTF-8; the messages,
//! the error (as its close code) and the bytes it answers with (pongs, the close reply) must be
//! the same as when the whole input is given at once. The server's frame encoder must round-trip
//! any payload.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringcast::ws::codec::{Codec, Incoming};
use ringcast::ws::frame::{self, OpCode};

/// A small bound, so that fuzzed lengths hit both sides of it.
const MAX: usize = 256;

#[derive(Debug, PartialEq)]
struct Run {
    messages: Vec<Incoming>,
    error: Option<u16>,
    output: Vec<u8>,
}

fn run(data: &[u8], sizes: &[u8]) -> Run {
    let mut codec = Codec::new(MAX);
    let mut run = Run {
        messages: Vec::new(),
        error: None,
        output: Vec::new(),
    };
    let mut rest = data;
    let mut i = 0;
    'feed: while !rest.is_empty() {
        let want = sizes
            .get(i % sizes.len().max(1))
            .map_or(rest.len(), |&s| usize::from(s) + 1);
        i += 1;
        let (chunk, tail) = rest.split_at(want.min(rest.len()));
        rest = tail;
        codec.handle_input(chunk);
        loop {
            match codec.poll_message() {
                Ok(Some(m)) => {
                    if let Incoming::Text(t) = &m {
                        assert!(std::str::from_utf8(t).is_ok());
                    }
                    let closed = m == Incoming::Close;
                    run.messages.push(m);
                    if closed {
                        break 'feed;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    run.error = Some(e.close_code().code());
                    break 'feed;
                }
            }
        }
        while let Some(out) = codec.poll_output() {
            run.output.extend_from_slice(&out);
        }
    }
    while let Some(out) = codec.poll_output() {
        run.output.extend_from_slice(&out);
    }
    run
}

fuzz_target!(|input: &[u8]| {
    let (sizes, data) = input.split_at(input.len().min(4));
    let chunked = run(data, sizes);
    let whole = run(data, &[]);
    assert_eq!(chunked, whole);

    for opcode in [OpCode::Text, OpCode::Binary] {
        let f = frame::encode(opcode, data);
        assert_eq!(frame::payload_of(&f), Bytes::copy_from_slice(data));
    }
});
