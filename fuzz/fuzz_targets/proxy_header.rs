//! Arbitrary bytes as the start of a connection on a listener that expects the PROXY protocol
//! (`ringcast::conn::proxy::parse`, over the `ppp` crate). It must not panic; a header it
//! accepts lies within the input and within the 4 KiB bound; and every prefix of an accepted
//! header is either incomplete or the same verdict, never a different header (bytes arrive in
//! any split).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::conn::proxy::{MAX_HEADER_BYTES, Parsed, parse};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Header { len, .. } => {
            assert!(len <= data.len() && len <= MAX_HEADER_BYTES);
            for cut in 0..len {
                assert!(
                    !matches!(parse(&data[..cut]), Parsed::Header { .. }),
                    "a shorter prefix parsed as a header"
                );
            }
        }
        Parsed::Incomplete => assert!(data.len() < MAX_HEADER_BYTES),
        Parsed::Invalid(_) => {}
    }
});
