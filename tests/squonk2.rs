//! `ringcast --preset squonk2` end to end, as the Account Server and a `ws_listener.py`-style
//! client use it, against a real RabbitMQ with the stream plugin: an event stream created over
//! the internal REST API replays from an ordinal (inclusive), from 0 (new messages only), from a
//! timestamp and from a datetime; JSON and text bodies are transformed byte for byte; the checks
//! run in the original's order with its close codes and reasons; a newer socket, `POISON` and a
//! `DELETE` close the older socket with 1000 at once; and 5,000 messages a second for ten
//! seconds reach one socket with no loss, in order. Without RabbitMQ each test prints `SKIPPED`
//! and passes, except under `CI=true`, where it fails.

mod common;
#[path = "common/ess.rs"]
mod ess;
#[path = "common/rabbit.rs"]
mod rabbit;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Client, RawWs, http, http_raw, parse_http_response};
use ess::{Ess, until_live};
use rabbit::Publisher;

/// An instance with a registry in a fresh directory, removed on drop.
struct Rig {
    ess: Ess,
    dir: PathBuf,
}

impl std::ops::Deref for Rig {
    type Target = Ess;
    fn deref(&self) -> &Ess {
        &self.ess
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(name: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("ringcast-squonk2-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    Rig {
        ess: Ess::start(&dir, &[]),
        dir,
    }
}

/// Reads text frames until `n` arrived.
fn texts(c: &mut Client, n: usize) -> Vec<String> {
    (0..n).map(|_| c.recv_text()).collect()
}

/// `(body, ordinal, timestamp)` of a text-transformed frame `body|ordinal: N|timestamp: T`.
fn split(t: &str) -> (String, u64, i64) {
    let (rest, ts) = t.rsplit_once("|timestamp: ").expect("timestamp suffix");
    let (body, ord) = rest.rsplit_once("|ordinal: ").expect("ordinal suffix");
    (
        body.to_owned(),
        ord.parse().expect("N"),
        ts.parse().expect("T"),
    )
}

fn bodies(prefix: &str, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| format!("{prefix}{i}").into_bytes()).collect()
}

#[test]
fn replays_from_an_ordinal_zero_a_timestamp_and_a_datetime() {
    if !rabbit::available("replays") {
        return;
    }
    let ess = start("replay");
    let mut p = Publisher::connect();
    let stream = p.stream("replay");
    let (_, path) = ess.create(&stream);
    let before = ringcast::profile::now_ms() - 1_000;
    p.publish(&stream, &bodies("m", 0..5));

    // Inclusive: offset 2 is the third message.
    let mut c = ess.connect(&format!("{path}?stream_from_ordinal=2"));
    let got: Vec<_> = texts(&mut c, 3).iter().map(|t| split(t)).collect();
    assert_eq!(
        got.iter()
            .map(|(b, o, _)| (b.as_str(), *o))
            .collect::<Vec<_>>(),
        [("m2", 2), ("m3", 3), ("m4", 4)]
    );
    assert!(got.iter().all(|(_, _, ts)| *ts >= before), "{got:?}");
    drop(c);

    // A timestamp before the first chunk, and a datetime in the past: everything.
    for query in [
        format!("stream_from_timestamp={before}"),
        "stream_from_datetime=2001-02-03T04:05:06%2B02:00".to_owned(),
    ] {
        let mut c = ess.connect(&format!("{path}?{query}"));
        let got: Vec<_> = texts(&mut c, 5).iter().map(|t| split(t).0).collect();
        assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"], "{query}");
    }

    // 0 means "not given" (Python truthiness): new messages only.
    let mut c = ess.connect(&format!("{path}?stream_from_ordinal=0"));
    let first = until_live(&p, &stream, &mut c);
    assert!(first[0].starts_with("marker"), "{first:?}");
    p.publish(&stream, &bodies("after", 0..2));
    let mut rest = Vec::new();
    while rest.len() < 2 {
        let (body, _, _) = split(&c.recv_text());
        if body.starts_with("after") {
            rest.push(body);
        }
    }
    assert_eq!(rest, ["after0", "after1"]);
}

#[test]
fn json_and_text_bodies_are_transformed_byte_for_byte() {
    if !rabbit::available("transforms") {
        return;
    }
    let ess = start("transform");
    let mut p = Publisher::connect();
    let stream = p.stream("transform");
    let (_, path) = ess.create(&stream);
    let json = r#"{"message_type":"accountserver.MerchantCharge","message_body":{"b":[1,2.5,null,true],"é":"ünï ✓ 😀","a":{"z":1,"y":"x"}}}"#;
    p.publish(
        &stream,
        &[
            json.as_bytes().to_vec(),
            b"{not json".to_vec(),
            Vec::new(),
            "accountserver.MerchantCharge|timestamp: \"2024\" merchant_kind: \"DM\" ✓"
                .as_bytes()
                .to_vec(),
        ],
    );
    // Ordinal 1 is inclusive: the JSON message at offset 0 is not sent.
    let mut c = ess.connect(&format!("{path}?stream_from_ordinal=1"));
    let (body, ordinal, ts) = split(&c.recv_text());
    assert_eq!(
        ordinal, 3,
        "the invalid JSON (1) and empty (2) bodies were dropped"
    );
    assert_eq!(
        body,
        "accountserver.MerchantCharge|timestamp: \"2024\" merchant_kind: \"DM\" ✓"
    );
    assert!((ringcast::profile::now_ms() - ts).abs() < 600_000, "{ts}");
    drop(c);
    // From a timestamp: the JSON message at offset 0 too, in json.dumps style (key order
    // kept, ASCII escapes, `, ` and `: `), with the ess_ fields last.
    let mut c = ess.connect(&format!("{path}?stream_from_timestamp=1"));
    let frame = c.recv_text();
    let expected = "{\"message_type\": \"accountserver.MerchantCharge\", \"message_body\": {\"b\": \
                    [1, 2.5, null, true], \"\\u00e9\": \"\\u00fcn\\u00ef \\u2713 \\ud83d\\ude00\", \
                    \"a\": {\"z\": 1, \"y\": \"x\"}}, \"ess_ordinal\": 0, \"ess_timestamp\": ";
    let ts = frame
        .strip_prefix(expected)
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{frame}"));
    let ts: i64 = ts.parse().expect("a chunk timestamp in ms");
    assert!((ringcast::profile::now_ms() - ts).abs() < 600_000, "{ts}");
    let (_, ordinal, _) = split(&c.recv_text());
    assert_eq!(ordinal, 3);
}

/// The status line of a WebSocket handshake to `path`.
fn handshake_status(addr: SocketAddr, path: &str) -> u16 {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let raw = http_raw(addr, req.as_bytes());
    parse_http_response(&raw).expect("a response").0.status
}

/// Accepts, then reads until the close frame: its code and reason.
fn close_of(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut ws = RawWs::connect(addr, path);
    loop {
        let f = ws.read_frame().expect("a close frame before EOF");
        if f.opcode == 0x8 {
            let code = f.close_code().expect("code");
            return (code, String::from_utf8_lossy(&f.payload[2..]).into_owned());
        }
    }
}

#[test]
fn each_check_closes_as_the_original_did_in_its_order() {
    if !rabbit::available("checks") {
        return;
    }
    let ess = start("checks");
    let mut p = Publisher::connect();
    let stream = p.stream("checks");
    let (_, path) = ess.create(&stream);
    let (_, missing) = ess.create("ringcast-test-no-such-stream");
    let uuid = missing.rsplit('/').next().expect("uuid");

    // 1. Not an integer: refused before the accept.
    assert_eq!(
        handshake_status(ess.ws, &format!("{path}?stream_from_ordinal=x")),
        403
    );
    assert_eq!(
        handshake_status(ess.ws, &format!("{path}?stream_from_timestamp=1.5")),
        403
    );
    // 3. After the accept: two at once, a bad datetime; checked before the uuid.
    let too_many = "Cannot provide more than one 'stream_from_' variable".to_owned();
    assert_eq!(
        close_of(
            ess.ws,
            "/event-stream/nope?stream_from_ordinal=1&stream_from_timestamp=2"
        ),
        (1002, too_many)
    );
    assert_eq!(
        close_of(ess.ws, &format!("{path}?stream_from_datetime=someday")),
        (
            1002,
            "Unable to parse stream_from_datetime value".to_owned()
        )
    );
    // 4. Unknown uuid, 5. a stream RabbitMQ does not have.
    assert_eq!(
        close_of(ess.ws, "/event-stream/AbCdEfGhIjKlMnOpQrStUv"),
        (
            1000,
            "Connect for unknown EventStream AbCdEfGhIjKlMnOpQrStUv".to_owned()
        )
    );
    assert_eq!(
        close_of(ess.ws, &missing),
        (1013, format!("EventStream {uuid} cannot be found"))
    );
}

#[test]
fn a_newer_socket_poison_and_delete_each_close_the_live_one_at_once() {
    if !rabbit::available("knockout") {
        return;
    }
    let ess = start("knockout");
    let mut p = Publisher::connect();
    let deleted = "The stream has been deleted".to_owned();

    // A newer socket on the same routing key closes the older one, with no message needed.
    let stream = p.stream("newer");
    let (id, path) = ess.create(&stream);
    let mut old = ess.connect(&path);
    until_live(&p, &stream, &mut old);
    let mut new = ess.connect(&path);
    assert_eq!(old.expect_close(), 1000);
    until_live(&p, &stream, &mut new);

    // A DELETE of the event stream closes its live socket at once.
    let (status, _) = http(ess.api, "DELETE", &format!("/event-stream/{id}"), &[], b"");
    assert_eq!(status, 204);
    assert_eq!(new.expect_close(), 1000);

    // POISON: nothing forwarded, the socket closed with the same reason.
    let stream = p.stream("poison");
    let (_, path) = ess.create(&stream);
    p.publish(
        &stream,
        &[b"before".to_vec(), b"POISON".to_vec(), b"after".to_vec()],
    );
    let mut ws = RawWs::connect(ess.ws, &format!("{path}?stream_from_timestamp=1"));
    let first = ws.read_frame().expect("a frame");
    assert!(String::from_utf8_lossy(&first.payload).starts_with("before|ordinal: 0|"));
    let close = ws.read_frame().expect("the close");
    assert_eq!(close.close_code(), Some(1000));
    assert_eq!(String::from_utf8_lossy(&close.payload[2..]), deleted);
}

#[test]
fn five_thousand_messages_a_second_for_ten_seconds_arrive_in_order() {
    if !rabbit::available("rate") {
        return;
    }
    let ess = start("rate");
    let mut p = Publisher::connect();
    let stream = p.stream("rate");
    let (_, path) = ess.create(&stream);
    let mut c = ess.connect(&path);
    let markers = until_live(&p, &stream, &mut c).len();
    const TOTAL: usize = 50_000;
    const BATCH: usize = 500; // every 100 ms: 5,000 a second
    let reader = std::thread::spawn(move || {
        let mut next = 0usize;
        while next < TOTAL {
            let t = c.recv_text();
            let (body, _, _) = split(&t);
            if body.starts_with("marker") {
                continue;
            }
            assert_eq!(body, format!("r{next}"), "lost or out of order");
            next += 1;
        }
        next
    });
    let start = Instant::now();
    for b in 0..TOTAL / BATCH {
        p.publish(&stream, &bodies("r", b * BATCH..(b + 1) * BATCH));
        let due = start + Duration::from_millis(100 * (b as u64 + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait); // pacing the publisher, not synchronisation
        }
    }
    assert_eq!(reader.join().expect("reader"), TOTAL);
    assert!(markers >= 1);
    assert_eq!(ess.gw.metric("ringcast_slow_consumer_closes_total"), 0);
}
