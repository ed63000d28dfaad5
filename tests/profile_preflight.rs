//! Preflight profile (COMPAT.md P1–P9, H1, R1) against a real redis-server with keyspace
//! notifications: the checklist snapshot on open, an update per keyspace change, lock styles
//! (the default serves the old page's fixed keys and preflight.js's file names; `legacy` and
//! `dynamic` stay byte-exact), `/health` over HTTP and WebSocket, the JSON heartbeat, 1,000
//! clients on one run with one render per event, and a Redis restart.

mod common;

use std::net::SocketAddr;

use common::{Client, Gateway, RedisServer};
use serde_json::{Value, json};

fn preflight(gw: &Gateway, run: &str) -> Client {
    connect(
        gw.route_addr("preflight"),
        &format!("/weppcloud-microservices/preflight/{run}"),
    )
}

fn connect(addr: SocketAddr, path: &str) -> Client {
    Client::connect(addr, path)
}

const LEGACY_ALL_FALSE: &str = r#"{"type": "preflight", "checklist": {"sbs_map": false, "channels": false, "outlet": false, "subcatchments": false, "landuse": false, "soils": false, "climate": false, "rap_ts": false, "wepp": false, "observed": false, "debris": false, "watar": false, "dss_export": false}, "lock_statuses": {"watershed": false, "climate": false, "wepp": false, "soils": false, "landuse": false, "disturbed": false}}"#;

#[test]
fn snapshot_first_then_an_update_per_change_in_python_json_format() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    // A run that does not exist yet: everything false, exactly as json.dumps wrote it.
    let mut c = preflight(&gw, "fresh-run");
    assert_eq!(c.recv_text(), LEGACY_ALL_FALSE);
    redis.cmd(&["HSET", "fresh-run", "timestamps:build_channels", "100"]);
    let update: Value = serde_json::from_str(&c.recv_text()).expect("json");
    assert_eq!(update["type"], "preflight");
    assert_eq!(update["checklist"]["channels"], true);
    assert_eq!(update["checklist"]["outlet"], false);

    // The redisprep.dump example from the seed: timestamps decide every item.
    redis.cmd(&[
        "HSET",
        "run;;batch_1.x",
        "attrs:loaded",
        "true",
        "attrs:has_sbs",
        "false",
        "timestamps:build_channels",
        "1712028840",
        "timestamps:set_outlet",
        "1712515206",
        "timestamps:abstract_watershed",
        "1712515226",
        "timestamps:build_landuse",
        "1712535023",
        "timestamps:build_soils",
        "1712535083",
        "timestamps:build_climate",
        "1712515667",
        "timestamps:run_wepp",
        "1714168234",
        "locked:climate",
        "true",
    ]);
    // Percent-encoded in the URL, decoded to the key.
    let mut d = preflight(&gw, "run%3B%3Bbatch_1.x");
    let snap: Value = serde_json::from_str(&d.recv_text()).expect("json");
    let expected_checklist = json!({
        "sbs_map": false, "channels": true, "outlet": true, "subcatchments": true,
        "landuse": true, "soils": true, "climate": true, "rap_ts": false, "wepp": true,
        "observed": false, "debris": false, "watar": false, "dss_export": false
    });
    assert_eq!(snap["checklist"], expected_checklist);
    assert_eq!(snap["lock_statuses"]["climate"], true);
    assert_eq!(snap["lock_statuses"]["wepp"], false);
    // soils needs build_soils > build_landuse too: make landuse newer than soils.
    redis.cmd(&[
        "HSET",
        "run;;batch_1.x",
        "timestamps:build_landuse",
        "1712535090",
    ]);
    let update: Value = serde_json::from_str(&d.recv_text()).expect("json");
    assert_eq!(update["checklist"]["soils"], false);
    assert_eq!(update["checklist"]["landuse"], true);
    // ... and wepp needs run_wepp newer than all three (still true), dss_export after wepp.
    assert_eq!(update["checklist"]["wepp"], true);
    redis.cmd(&["HDEL", "run;;batch_1.x", "timestamps:run_wepp"]);
    let update: Value = serde_json::from_str(&d.recv_text()).expect("json");
    assert_eq!(update["checklist"]["wepp"], false);
    redis.cmd(&["DEL", "run;;batch_1.x"]);
    assert_eq!(d.recv_text(), LEGACY_ALL_FALSE);
}

#[test]
fn dynamic_locks_and_extended_checklist_are_options() {
    let redis = RedisServer::start();
    redis.cmd(&[
        "HSET",
        "r1",
        "locked:wepp.nodb",
        "true",
        "locked:climate.nodb",
        "false",
        "timestamps:build_channels",
        "5",
    ]);
    let gw = Gateway::weppcloud(
        &redis,
        &[
            "--route",
            "preflight.locks=dynamic",
            "--route",
            "preflight.checklist=extended",
        ],
    );
    let mut c = preflight(&gw, "r1");
    let snap: Value = serde_json::from_str(&c.recv_text()).expect("json");
    assert_eq!(
        snap["lock_statuses"],
        json!({"wepp.nodb": true, "climate.nodb": false})
    );
    let checklist = snap["checklist"].as_object().expect("object");
    assert_eq!(checklist["channels"], true);
    // The extended key set is a superset of the legacy one.
    for key in ["sbs_map", "outlet", "dss_export", "rangeland_cover", "rhem"] {
        assert!(
            checklist.contains_key(key),
            "missing {key} in {checklist:?}"
        );
    }
}

/// The legacy checklist with every key false, then `lock_statuses` as given (already JSON).
fn all_false_with_locks(locks: &str) -> String {
    let checklist = LEGACY_ALL_FALSE
        .split(r#", "lock_statuses": "#)
        .next()
        .expect("checklist part");
    format!(r#"{checklist}, "lock_statuses": {locks}}}"#)
}

#[test]
fn the_default_locks_serve_the_old_page_and_the_current_preflight_js() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    let mut c = preflight(&gw, "locks");
    assert_eq!(c.recv_text(), LEGACY_ALL_FALSE);
    // Today's publisher writes file names: preflight.js finds `wepp.nodb`, the old page `wepp`.
    redis.cmd(&["HSET", "locks", "locked:wepp.nodb", "true"]);
    assert_eq!(
        c.recv_text(),
        all_false_with_locks(
            r#"{"watershed": false, "climate": false, "wepp": true, "soils": false, "landuse": false, "disturbed": false, "wepp.nodb": true}"#
        )
    );
    redis.cmd(&["HSET", "locks", "locked:wepp.nodb", "false"]);
    assert_eq!(
        c.recv_text(),
        all_false_with_locks(
            r#"{"watershed": false, "climate": false, "wepp": false, "soils": false, "landuse": false, "disturbed": false, "wepp.nodb": false}"#
        )
    );
    // The 2024 publisher's fixed name: one `wepp` key, true.
    redis.cmd(&["HSET", "locks", "locked:wepp", "true"]);
    assert_eq!(
        c.recv_text(),
        all_false_with_locks(
            r#"{"watershed": false, "climate": false, "wepp": true, "soils": false, "landuse": false, "disturbed": false, "wepp.nodb": false}"#
        )
    );
}

#[test]
fn explicit_legacy_and_dynamic_locks_stay_byte_exact() {
    let redis = RedisServer::start();
    redis.cmd(&[
        "HSET",
        "styles",
        "locked:wepp.nodb",
        "true",
        "locked:climate",
        "true",
    ]);
    let legacy = Gateway::weppcloud(&redis, &["--route", "preflight.locks=legacy"]);
    assert_eq!(
        preflight(&legacy, "styles").recv_text(),
        all_false_with_locks(
            r#"{"watershed": false, "climate": true, "wepp": false, "soils": false, "landuse": false, "disturbed": false}"#
        )
    );
    let dynamic = Gateway::weppcloud(&redis, &["--route", "preflight.locks=dynamic"]);
    assert_eq!(
        preflight(&dynamic, "styles").recv_text(),
        all_false_with_locks(r#"{"wepp.nodb": true, "climate": true}"#)
    );
}

#[test]
fn health_over_http_and_websocket() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    let addr = gw.route_addr("preflight");
    assert_eq!(
        common::http(addr, "GET", "/health", &[], b""),
        (200, "OK".to_string())
    );
    let mut ws = connect(addr, "/weppcloud-microservices/preflight/health");
    assert_eq!(ws.recv_text(), "OK");
    assert_eq!(ws.expect_close(), 1000);
    // Plain GET on a WebSocket path: 426, not a hang.
    assert_eq!(common::http(addr, "GET", "/x/run", &[], b"").0, 426);
}

#[test]
fn init_unknown_and_bad_json_are_ignored_and_pong_keeps_a_client_alive() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(
        &redis,
        &[
            "--route",
            "preflight.ping_interval=100ms",
            "--route",
            "preflight.pong_timeout=1500ms",
        ],
    );
    let mut live = preflight(&gw, "hb");
    let mut silent = preflight(&gw, "hb");
    assert_eq!(live.recv_text(), LEGACY_ALL_FALSE);
    assert_eq!(silent.recv_text(), LEGACY_ALL_FALSE);
    live.send(r#"{"type":"init"}"#);
    live.send("not json at all");
    live.send(r#"{"type":"whatever"}"#);
    // `live` answers every ping until `silent` is closed for its silence.
    let closer = std::thread::spawn(move || silent.expect_close());
    let mut pings = 0;
    while !closer.is_finished() {
        let text = live.recv_text();
        assert_eq!(text, r#"{"type":"ping"}"#);
        pings += 1;
        live.send(r#"{"type":"pong"}"#);
    }
    assert_eq!(closer.join().expect("closer"), 4001);
    assert!(pings >= 3, "only {pings} pings before the timeout");
    // `live` is still served: a change reaches it (pings may come first).
    redis.cmd(&["HSET", "hb", "attrs:has_sbs", "true"]);
    loop {
        let text = live.recv_text();
        if text.contains("\"preflight\"") {
            assert!(text.contains(r#""sbs_map": true"#), "{text}");
            break;
        }
        live.send(r#"{"type":"pong"}"#);
    }
}

#[test]
fn a_thousand_clients_on_one_run_get_each_update_rendered_once() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    let mut clients: Vec<Client> = (0..1000).map(|_| preflight(&gw, "big")).collect();
    for c in &mut clients {
        assert_eq!(c.recv_text(), LEGACY_ALL_FALSE);
    }
    let before = gw.metric("ringcast_frames_encoded_total");
    redis.cmd(&["HSET", "big", "timestamps:build_channels", "1"]);
    for c in &mut clients {
        let v: Value = serde_json::from_str(&c.recv_text()).expect("json");
        assert_eq!(v["checklist"]["channels"], true);
    }
    let rendered = gw.metric("ringcast_frames_encoded_total") - before;
    assert_eq!(rendered, 1, "the checklist must be rendered once per event");
}

#[test]
fn clients_stay_connected_through_a_redis_restart_and_get_a_fresh_checklist() {
    let mut redis = RedisServer::start();
    redis.cmd(&["HSET", "rr", "timestamps:build_channels", "7"]);
    let gw = Gateway::weppcloud(&redis, &["--redis-backoff-max", "200ms"]);
    let mut c = preflight(&gw, "rr");
    let first: Value = serde_json::from_str(&c.recv_text()).expect("json");
    assert_eq!(first["checklist"]["channels"], true);
    redis.kill9();
    redis.restart();
    // The restarted Redis is empty: the re-read after resubscribing says so.
    let fresh: Value = serde_json::from_str(&c.recv_text()).expect("json");
    assert_eq!(fresh["checklist"]["channels"], false);
    redis.cmd(&["HSET", "rr", "timestamps:build_channels", "8"]);
    let update: Value = serde_json::from_str(&c.recv_text()).expect("json");
    assert_eq!(update["checklist"]["channels"], true);
}

/// The status of a WebSocket handshake to `path` with `origin` (if any).
fn handshake_status(addr: SocketAddr, path: &str, origin: Option<&str>) -> u16 {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(common::TIMEOUT)).expect("timeout");
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    common::read_http_response(&mut s, &mut Vec::new()).status
}

#[test]
fn any_origin_by_default_and_an_optional_allow_list() {
    let redis = RedisServer::start();
    let open = Gateway::weppcloud(&redis, &[]);
    let addr = open.route_addr("preflight");
    assert_eq!(
        handshake_status(addr, "/p/r", Some("https://evil.example")),
        101
    );
    let strict = Gateway::weppcloud(
        &redis,
        &[
            "--route",
            "preflight.origins=https://wepp.cloud,https://dev.wepp.cloud",
        ],
    );
    let addr = strict.route_addr("preflight");
    assert_eq!(
        handshake_status(addr, "/p/r", Some("https://evil.example")),
        403
    );
    assert_eq!(
        handshake_status(addr, "/p/r", Some("https://dev.wepp.cloud")),
        101
    );
    assert_eq!(
        handshake_status(addr, "/p/r", None),
        101,
        "no Origin: not a browser"
    );
}

#[test]
fn kh_notifications_are_enough() {
    // wepppy's own Redis runs with `notify-keyspace-events Kh`.
    let redis = RedisServer::start_with(&["--notify-keyspace-events", "Kh"]);
    let gw = Gateway::weppcloud(&redis, &[]);
    let mut c = preflight(&gw, "kh");
    assert_eq!(c.recv_text(), LEGACY_ALL_FALSE);
    redis.cmd(&["HSET", "kh", "attrs:has_sbs", "true"]);
    let v: Value = serde_json::from_str(&c.recv_text()).expect("json");
    assert_eq!(v["checklist"]["sbs_map"], true);
    assert!(
        !gw.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("notifications are off")),
        "Kh must not be reported as off"
    );
}
