//! Arbitrary bytes as what Redis sends, through the RESP decoder (`source::redis::resp::decode`,
//! RESP2 or RESP3 as the first byte picks) and the pub/sub classifier, fed in reads whose sizes
//! the next bytes choose, as `redis::conn::Conn::read` feeds it. It may not panic or allocate
//! more than the input justifies; the values and the error must be the same as when the whole
//! input is given at once. A command the encoder writes must decode back to its arguments.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringcast::source::redis::resp::{self, Proto, PubSub, Value};

fn run(proto: Proto, data: &[u8], sizes: &[u8]) -> (Vec<Value>, bool) {
    let mut buf = BytesMut::new();
    let mut values = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let want = sizes
            .get(i % sizes.len().max(1))
            .map_or(rest.len(), |&s| usize::from(s) + 1);
        i += 1;
        let (chunk, tail) = rest.split_at(want.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match resp::decode(proto, &mut buf) {
                Ok(Some(v)) => values.push(v),
                Ok(None) => break,
                Err(_) => return (values, true),
            }
        }
    }
    (values, false)
}

fuzz_target!(|input: &[u8]| {
    let Some((&pick, input)) = input.split_first() else {
        return;
    };
    let proto = if pick & 1 == 0 {
        Proto::Resp2
    } else {
        Proto::Resp3
    };
    let (sizes, data) = input.split_at(input.len().min(usize::from(pick >> 1 & 7)));
    let (values, failed) = run(proto, data, &[]);
    assert_eq!(run(proto, data, sizes), (values.clone(), failed));
    for v in values {
        if let PubSub::Reply(r) = resp::classify(v.clone()) {
            // Only values that are not pub/sub traffic come back untouched.
            assert!(matches!(r, Value::Array(_)) || r == v);
        }
    }

    // A command of arguments cut from the input at each NUL.
    let args: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let mut out = BytesMut::new();
    resp::encode_command(&mut out, &args);
    let want = Value::Array(
        args.iter()
            .map(|a| Value::Bulk(Bytes::copy_from_slice(a)))
            .collect(),
    );
    for proto in [Proto::Resp2, Proto::Resp3] {
        let mut buf = out.clone();
        assert_eq!(
            resp::decode(proto, &mut buf).ok().flatten().as_ref(),
            Some(&want)
        );
        assert!(buf.is_empty());
    }
});
