//! Arbitrary bytes as the head of a request on the WebSocket port, through what the accept path
//! runs on it: `http::parse` (httparse, the size caps, the path/query split), the header
//! helpers, the query parameters the upgrade reads, and the WebSocket handshake (tungstenite's
//! checks and the 101 response). Nothing may panic; a head it accepts must stay within
//! `MAX_HEAD_BYTES`, split back into its target, and no shorter prefix of it may parse as a
//! complete head; a 101 it renders must be one well-formed head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::http::{self, MAX_HEAD_BYTES, MAX_HEADERS};
use ringcast::ws::handshake;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = match http::parse(data, &mut headers) {
        Ok(Some(req)) => req,
        Ok(None) => {
            // Incomplete: the connection reads on, so it must be under the cap.
            assert!(data.len() < MAX_HEAD_BYTES);
            return;
        }
        Err(e) => {
            assert!(matches!(e.status(), 400 | 431));
            return;
        }
    };
    assert!(req.head_len <= data.len() && req.head_len <= MAX_HEAD_BYTES);
    if req.target.contains('?') {
        assert_eq!(format!("{}?{}", req.path, req.query), req.target);
    } else {
        assert_eq!((req.path, req.query), (req.target, ""));
    }
    // A head is complete at one place only: a prefix that ends before it is not a request.
    for cut in [req.head_len - 1, req.head_len / 2] {
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert!(!matches!(http::parse(&data[..cut], &mut h), Ok(Some(_))));
    }

    let _ = req.keep_alive();
    let _ = req.content_length();
    let _ = req.header("origin");
    for name in [
        "subscribe",
        "watch",
        "format",
        "token",
        "stream_from_ordinal",
    ] {
        let _ = req.query_param(name);
    }
    let _ = ringcast::profile::last_segment(req.path);

    let upgrade = req.is_websocket_upgrade();
    if let Ok(response) = handshake::accept(&req) {
        assert!(upgrade, "a 101 for a request without Upgrade: websocket");
        assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.ends_with(b"\r\n\r\n"));
        let head = &response[..response.len() - 2];
        // One header per line: no bare CR or LF from the request leaks into the response.
        for line in head.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert_eq!(line.last(), Some(&b'\r'));
            assert!(!line[..line.len() - 1].contains(&b'\r'));
        }
        let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
        assert!(lower.contains("sec-websocket-accept: "));
    }
});
