//! BESS profile, the WebsocketServerMS drop-in (COMPAT.md section 4, rows W1–W5), against a real
//! redis-server: the snapshot of every battery on connect, byte for byte as Starlette's
//! `send_json` writes it; an update per `PUBLISH battery:<id>:data` with `ws_timestamp` and
//! `latency_ms`; batteries added later; one client leaving never silencing the others (the
//! original's worst bug); 403 on other paths; client frames ignored; and 1,000 clients served
//! by one render per event.

mod common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Client, Gateway, RedisServer, Resp};
use serde_json::{Value, json};
use tungstenite::Message;

/// ringcast with the bess preset, its route on a free port, against `redis`.
fn bess(redis: &RedisServer) -> Gateway {
    Gateway::bess(redis, &[])
}

fn connect(gw: &Gateway) -> Client {
    Client::connect(gw.route_addr("bess"), "/ws")
}

/// The producer's `HSET battery:<id>:data` with the six fields of the README, in its order.
fn hset_battery(redis: &RedisServer, id: &str, values: [&str; 6]) {
    let key = format!("battery:{id}:data");
    let mut args = vec!["HSET", key.as_str()];
    for (field, value) in FIELDS.iter().zip(values) {
        args.extend([*field, value]);
    }
    assert!(matches!(redis.cmd(&args), Resp::Int(_)));
}

const FIELDS: [&str; 6] = [
    "timestamp",
    "voltage",
    "current",
    "temperature",
    "state_of_charge",
    "state_of_health",
];

const BATTERY_1: [&str; 6] = ["1731801715542", "136", "108", "347", "36", "49"];
const BATTERY_2: [&str; 6] = ["1731801715549", "130", "110", "340", "35", "48"];

/// `{"timestamp":…,"voltage":…,…}` as the original writes one battery (no server fields).
fn battery_json(values: [&str; 6]) -> String {
    let members: Vec<String> = FIELDS
        .iter()
        .zip(values)
        .map(|(f, v)| format!("\"{f}\":{v}"))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// [`battery_json`] parsed: for checks that do not depend on field order.
fn battery_value(values: [&str; 6]) -> Value {
    serde_json::from_str(&battery_json(values)).expect("json")
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    i64::try_from(since.as_millis()).expect("ms fit in i64")
}

/// Splits an update frame `{"<key>":{<fields>,"ws_timestamp":N,"latency_ms":M}}` into the
/// text of the hash fields (without braces) and N and M, checking the exact shape on the way:
/// compact, one battery, the server's two fields last.
fn split_update<'t>(frame: &'t str, key: &str) -> (&'t str, i64, i64) {
    let prefix = format!("{{\"{key}\":{{");
    let body = frame
        .strip_prefix(prefix.as_str())
        .and_then(|b| b.strip_suffix("}}"))
        .unwrap_or_else(|| panic!("not an update of {key}: {frame}"));
    let (fields, server) = body
        .split_once(",\"ws_timestamp\":")
        .unwrap_or_else(|| panic!("no ws_timestamp: {frame}"));
    let (ws, latency) = server
        .split_once(",\"latency_ms\":")
        .unwrap_or_else(|| panic!("no latency_ms after ws_timestamp: {frame}"));
    let ws = ws
        .parse()
        .unwrap_or_else(|_| panic!("ws_timestamp: {frame}"));
    let latency = latency
        .parse()
        .unwrap_or_else(|_| panic!("latency_ms: {frame}"));
    assert!(!frame.contains(' '), "not compact: {frame}");
    (fields, ws, latency)
}

/// The hash fields of an update, parsed, with N and M (see [`split_update`]).
fn update_fields(frame: &str, key: &str) -> (Value, i64, i64) {
    let (fields, ws, latency) = split_update(frame, key);
    let value = serde_json::from_str(&format!("{{{fields}}}"))
        .unwrap_or_else(|e| panic!("fields are not JSON ({e}): {frame}"));
    (value, ws, latency)
}

/// The status line of a raw WebSocket handshake to `path`.
fn handshake_status(addr: SocketAddr, path: &str) -> u16 {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let raw = common::http_raw(addr, req.as_bytes());
    common::parse_response(&raw).0
}

/// The README's snapshot and an update, byte for byte: members sorted by id, each battery's
/// fields in `HGETALL` order (insertion order for small hashes), values as integers.
fn snapshot_and_update_are_byte_exact(extra: &[&str]) {
    let redis = RedisServer::start();
    redis.cmd(&["SADD", "info:batteries:ids", "2", "1"]);
    hset_battery(&redis, "1", BATTERY_1);
    hset_battery(&redis, "2", BATTERY_2);
    let gw = Gateway::bess(&redis, extra);
    let mut c = connect(&gw);
    let expected = format!(
        "{{\"battery:1:data\":{},\"battery:2:data\":{}}}",
        battery_json(BATTERY_1),
        battery_json(BATTERY_2)
    );
    assert_eq!(
        expected,
        concat!(
            r#"{"battery:1:data":{"timestamp":1731801715542,"voltage":136,"current":108,"#,
            r#""temperature":347,"state_of_charge":36,"state_of_health":49},"#,
            r#""battery:2:data":{"timestamp":1731801715549,"voltage":130,"current":110,"#,
            r#""temperature":340,"state_of_charge":35,"state_of_health":48}}"#
        )
    );
    assert_eq!(c.recv_text(), expected);
    // A second client gets the same snapshot, read again.
    let mut d = connect(&gw);
    assert_eq!(d.recv_text(), expected);
    redis.wait_numpat(1);
    redis.cmd(&["HSET", "battery:2:data", "voltage", "140"]);
    redis.cmd(&["PUBLISH", "battery:2:data", "updates"]);
    let values = ["1731801715549", "140", "110", "340", "35", "48"];
    for client in [&mut c, &mut d] {
        let frame = client.recv_text();
        let (fields, ws, latency) = split_update(&frame, "battery:2:data");
        assert_eq!(format!("{{{fields}}}"), battery_json(values), "{frame}");
        assert_eq!(latency, ws - 1_731_801_715_549);
    }
}

/// RESP3 sends HGETALL as a map: its order must survive decoding (redis-protocol's
/// `index-map` feature; a `HashMap` shuffled the fields).
#[test]
fn snapshot_and_update_are_byte_exact_over_resp3() {
    snapshot_and_update_are_byte_exact(&[]);
}

#[test]
fn snapshot_and_update_are_byte_exact_over_resp2() {
    snapshot_and_update_are_byte_exact(&["--redis-resp", "2"]);
}

#[test]
fn snapshot_values_are_integers_and_members_sorted() {
    let redis = RedisServer::start();
    redis.cmd(&["SADD", "info:batteries:ids", "2", "1"]);
    hset_battery(&redis, "1", BATTERY_1);
    hset_battery(&redis, "2", BATTERY_2);
    let gw = bess(&redis);
    let mut c = connect(&gw);
    let text = c.recv_text();
    assert!(!text.contains(' '), "not compact: {text}");
    let one = text.find("\"battery:1:data\"").expect("battery 1");
    let two = text.find("\"battery:2:data\"").expect("battery 2");
    assert!(one < two, "members not sorted: {text}");
    let snapshot: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        snapshot,
        json!({
            "battery:1:data": battery_value(BATTERY_1),
            "battery:2:data": battery_value(BATTERY_2),
        })
    );
}

#[test]
fn no_batteries_is_an_empty_object() {
    let redis = RedisServer::start();
    let gw = bess(&redis);
    let mut c = connect(&gw);
    assert_eq!(c.recv_text(), "{}");
}

#[test]
fn publish_rereads_the_hash_and_adds_ws_timestamp_and_latency() {
    let redis = RedisServer::start();
    redis.cmd(&["SADD", "info:batteries:ids", "1"]);
    hset_battery(&redis, "1", BATTERY_1);
    let gw = bess(&redis);
    let mut c = connect(&gw);
    assert!(c.recv_text().starts_with("{\"battery:1:data\":{"));
    redis.wait_numpat(1);

    let produced = now_ms().to_string();
    let values = [produced.as_str(), "140", "108", "347", "36", "49"];
    hset_battery(&redis, "1", values);
    let before = now_ms();
    // The payload is ignored: the hash is re-read.
    redis.cmd(&["PUBLISH", "battery:1:data", "updates"]);
    let frame = c.recv_text();
    let after = now_ms();
    let (fields, ws, latency) = update_fields(&frame, "battery:1:data");
    assert_eq!(fields, battery_value(values), "{frame}");
    assert_eq!(fields["voltage"], 140, "{frame}");
    assert_eq!(latency, ws - produced.parse::<i64>().unwrap(), "{frame}");
    // The gateway's clock is this machine's: ws_timestamp falls inside the test's window.
    assert!(
        before - 2_000 <= ws && ws <= after + 2_000,
        "ws_timestamp {ws} outside [{before}, {after}]: {frame}"
    );
    assert!((0..5_000).contains(&latency), "{frame}");

    // The producer's old timestamp: the latency is simply the difference.
    hset_battery(&redis, "1", BATTERY_1);
    redis.cmd(&["PUBLISH", "battery:1:data", "anything at all"]);
    let frame = c.recv_text();
    let (fields, ws, latency) = update_fields(&frame, "battery:1:data");
    assert_eq!(fields, battery_value(BATTERY_1), "{frame}");
    assert_eq!(latency, ws - 1_731_801_715_542, "{frame}");
}

#[test]
fn a_battery_added_later_is_picked_up_without_reconnecting() {
    let redis = RedisServer::start();
    redis.cmd(&["SADD", "info:batteries:ids", "1"]);
    hset_battery(&redis, "1", BATTERY_1);
    let gw = bess(&redis);
    let mut c = connect(&gw);
    let snapshot = c.recv_text();
    assert!(!snapshot.contains("battery:3:data"), "{snapshot}");
    redis.wait_numpat(1);

    // What RedisBackendMS does for a new id.
    redis.cmd(&["SADD", "info:batteries:ids", "3"]);
    hset_battery(&redis, "3", BATTERY_2);
    redis.cmd(&["PUBLISH", "battery:3:data", "x"]);
    let frame = c.recv_text();
    let (fields, _, _) = update_fields(&frame, "battery:3:data");
    assert_eq!(fields, battery_value(BATTERY_2), "{frame}");
}

#[test]
fn one_client_leaving_never_unsubscribes_the_others() {
    let redis = RedisServer::start();
    redis.cmd(&["SADD", "info:batteries:ids", "1"]);
    hset_battery(&redis, "1", BATTERY_1);
    let gw = bess(&redis);
    let mut leaver = connect(&gw);
    let mut stayer = connect(&gw);
    leaver.recv_text();
    stayer.recv_text();
    redis.wait_numpat(1);

    drop(leaver);
    gw.wait_metric("ringcast_websockets", |v| v == 1);
    // Two rounds: an unsubscribe sent when the first client left would have reached Redis
    // before the second publish.
    for voltage in ["141", "142"] {
        let values = ["1731801715542", voltage, "108", "347", "36", "49"];
        hset_battery(&redis, "1", values);
        redis.cmd(&["PUBLISH", "battery:1:data", "updates"]);
        let frame = stayer.recv_text();
        let (fields, _, _) = update_fields(&frame, "battery:1:data");
        assert_eq!(fields, battery_value(values), "{frame}");
    }
    assert_eq!(redis.cmd(&["PUBSUB", "NUMPAT"]), Resp::Int(1));

    // The last client leaving drops the pattern.
    drop(stayer);
    gw.wait_metric("ringcast_websockets", |v| v == 0);
    redis.wait_numpat(0);
}

#[test]
fn other_paths_are_refused_with_403_at_the_handshake() {
    let redis = RedisServer::start();
    let gw = bess(&redis);
    let addr = gw.route_addr("bess");
    for path in ["/", "/other", "/ws/", "/ws/1", "/wss", "/WS", "/docs"] {
        assert_eq!(handshake_status(addr, path), 403, "path {path}");
    }
    // With its standard reason phrase, as every status ringcast sends.
    let req = format!(
        "GET /other HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let raw = common::http_raw(addr, req.as_bytes());
    assert!(
        raw.starts_with(b"HTTP/1.1 403 Forbidden\r\n"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // The query is not part of the path.
    let mut ws = common::RawWs::connect(addr, "/ws?battery=1");
    assert_eq!(ws.read_frame().expect("snapshot").payload, b"{}");
    // Plain HTTP on the route listener: health, and 426 on the WebSocket path.
    assert_eq!(
        common::http(addr, "GET", "/health", &[], b""),
        (200, "OK".to_string())
    );
    assert_eq!(common::http(addr, "GET", "/ws", &[], b"").0, 426);
}

#[test]
fn client_text_and_binary_frames_are_read_and_ignored() {
    let redis = RedisServer::start();
    redis.cmd(&["SADD", "info:batteries:ids", "1"]);
    hset_battery(&redis, "1", BATTERY_1);
    let gw = bess(&redis);
    let mut c = connect(&gw);
    c.send("hello");
    c.send(r#"{"type":"ping"}"#);
    c.ws.send(Message::binary(vec![0u8, 0xff, 1, 2]))
        .expect("send binary");
    // Frames sent before the snapshot arrived are fine too (G1): it still comes first.
    assert!(c.recv_text().starts_with("{\"battery:1:data\":{"));
    gw.wait_metric("ringcast_messages_in_total", |v| v == 3);
    assert_eq!(gw.metric("ringcast_websockets"), 1);
    redis.wait_numpat(1);

    redis.cmd(&["PUBLISH", "battery:1:data", "updates"]);
    let frame = c.recv_text();
    let (fields, _, _) = update_fields(&frame, "battery:1:data");
    assert_eq!(fields, battery_value(BATTERY_1), "{frame}");
}

#[test]
fn a_thousand_clients_get_each_update_rendered_once() {
    let redis = RedisServer::start();
    redis.cmd(&["SADD", "info:batteries:ids", "1"]);
    hset_battery(&redis, "1", BATTERY_1);
    let gw = bess(&redis);
    let mut clients: Vec<Client> = (0..1000).map(|_| connect(&gw)).collect();
    let snapshot = json!({ "battery:1:data": battery_value(BATTERY_1) });
    for c in &mut clients {
        assert_eq!(c.recv_json(), snapshot);
    }
    redis.wait_numpat(1);
    let before = gw.metric("ringcast_frames_encoded_total");
    redis.cmd(&["PUBLISH", "battery:1:data", "updates"]);
    let first = clients[0].recv_text();
    let (fields, _, _) = update_fields(&first, "battery:1:data");
    assert_eq!(fields, battery_value(BATTERY_1), "{first}");
    for c in &mut clients[1..] {
        // One render: every client gets the very same bytes, ws_timestamp included.
        assert_eq!(c.recv_text(), first);
    }
    let rendered = gw.metric("ringcast_frames_encoded_total") - before;
    assert_eq!(rendered, 1, "a BESS update must be rendered once per event");
}
