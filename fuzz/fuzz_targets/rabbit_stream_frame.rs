//! Arbitrary bytes through the RabbitMQ stream consumer's decoders: the frame splitter and
//! parser, the OsirisChunk reader, the AMQP 1.0 body extractor and the ESS transform. None of
//! them may panic, loop or allocate more than the input justifies.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringcast::source::rabbit_stream::codec::{ServerFrame, split_frame};
use ringcast::source::rabbit_stream::{amqp, chunk, transform};

fuzz_target!(|data: &[u8]| {
    // As a stream of frames from the server.
    let mut rest = data;
    while let Ok(Some((start, end))) = split_frame(rest, 1 << 20) {
        if let Ok(ServerFrame::Deliver { chunk: c, .. }) =
            ServerFrame::parse(Bytes::copy_from_slice(&rest[start..end]))
        {
            read_chunk(&c);
        }
        rest = &rest[end..];
    }
    // As a chunk, and as one AMQP 1.0 message.
    read_chunk(data);
    if let Ok(body) = amqp::body(data) {
        let _ = transform::transform(&body, 1, 2);
    }
    let _ = transform::transform(data, 3, 4);
});

fn read_chunk(bytes: &[u8]) {
    if let Ok(c) = chunk::parse(bytes) {
        for e in c.entries {
            if let chunk::Entry::Record { message, offset } = e
                && let Ok(body) = amqp::body(message)
            {
                let _ = transform::transform(&body, offset, c.header.timestamp);
            }
        }
    }
}
