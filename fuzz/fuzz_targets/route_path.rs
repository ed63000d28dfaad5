//! Arbitrary bytes as a route's path pattern and a request's path and query, through what turns
//! them into a route and its parameters: the route match (`protocol::glob_match`, as
//! `conn::io::find_route` calls it), the last path segment the profiles read (run id, Status
//! channel, ESS uuid: `profile::last_segment`), the two percent-decoders and the query
//! parameter lookup. Nothing may panic; every decoder inverts percent-encoding; a literal
//! pattern matches itself; the first query pair is what a lookup of its name finds.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use ringcast::http;
use ringcast::profile;
use ringcast::protocol::glob_match;

fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fuzz_target!(|data: &[u8]| {
    // `pattern NUL target`: the target splits into path and query as `http::parse` splits it.
    let (pattern, target) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"/*"[..], data),
    };
    let target = String::from_utf8_lossy(target);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));

    let matched = glob_match(pattern, path.as_bytes());
    if !path.is_empty() {
        assert!(glob_match(b"*", path.as_bytes()));
        let escaped: Vec<u8> = path.bytes().flat_map(|b| [b'\\', b]).collect();
        assert!(glob_match(&escaped, path.as_bytes()));
        if !path
            .bytes()
            .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        {
            assert!(glob_match(path.as_bytes(), path.as_bytes()));
        }
        let any: Vec<u8> = vec![b'?'; path.len()];
        assert!(glob_match(&any, path.as_bytes()));
    }
    if pattern.is_empty() {
        assert_eq!(matched, path.is_empty());
    }

    // The segment every profile reads: the last one, decoded and trimmed.
    let segment = profile::last_segment(path);
    let last = path.rsplit('/').next().unwrap_or("");
    assert_eq!(segment, profile::percent_decode(last).trim_ascii());
    let _ = segment.iter().filter(|&&b| b == b':').count() == 1;

    // Both decoders invert percent-encoding of any bytes.
    let raw = target.as_bytes();
    assert_eq!(profile::percent_decode(&encode(raw)), raw);
    assert_eq!(
        http::percent_decode(&encode(raw)),
        String::from_utf8_lossy(raw)
    );
    if !query.contains(['%', '+']) {
        assert!(matches!(http::percent_decode(query), Cow::Borrowed(q) if q == query));
    }

    // The query: the first pair's name finds the first pair's value.
    let first = query.split('&').next().unwrap_or("");
    let (k, v) = first.split_once('=').unwrap_or((first, ""));
    let name = http::percent_decode(k);
    assert_eq!(
        http::query_param(query, &name).as_deref(),
        Some(&*http::percent_decode(v))
    );
    for name in ["subscribe", "watch", "format", "EIO", "transport", "sid"] {
        if let Some(list) = http::query_param(query, name) {
            let _ = list.split(',').filter(|c| !c.is_empty()).count();
        }
    }
});
