//! `ringcast --preset superdarn` serves the real Socket.IO clients as the SuperDARN original
//! does (COMPAT §5 and §10): socket.io-client 4.x on Node (websocket-only, as the documented
//! front-end, long-polling only, and the default polling then upgrade) and python-socketio 5.x
//! (websocket-only, and polling then upgrade) all receive the same `sas` events from one fake
//! radar's records, field by field equal to the values COMPAT §5.2 gives, then the `sas/echoes`
//! averages at the scan start; a hand-driven Engine.IO WebSocket sees the exact bytes; every
//! one of those clients answers the gateway's pings (interval and timeout scaled down) and stays
//! connected; and a browser Origin not on the allow-list is refused with 400 `"Not an accepted
//! origin."`.
//!
//! Each test starts its own gateway (two shards, so polling requests also land on the shard that
//! does not own their session) and its own fake radar. No sleeps: the tests wait for client lines
//! (`open`, `connected`, `upgrade`, events) with timeouts. See `tests/common/sio.rs` for what the
//! real clients need and how a missing one skips (or fails under `CI=true`).

mod common;
#[path = "common/radar.rs"]
mod radar;
#[path = "common/sio.rs"]
mod sio;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use common::{Gateway, TIMEOUT, read_http_response};
use radar::{FakeRadar, f32s, remove, set_array, set_scalar};
use ringcast::source::radar::dmap::{Record, Value};
use serde_json::{Value as Json, json};
use sio::{Lib, RawSio, SioClient};

/// The events every client listens to.
const EVENTS: [&str; 2] = ["sas", "sas/echoes"];

/// What the four records of [`records`] must become on the wire, worked out from COMPAT §5.2
/// and §10 (D2) by hand, not by ringcast: keys in the original's order, the float32 values
/// widened to doubles and printed as Python's `repr` (`0.0` for the zero fill), arrays of length
/// `nrang` with the echoes scattered by `slist`.
///
/// 1. Three echoes at gates 1, 3, 5; the `v` values are COMPAT §10's sample.
/// 2. No echoes (fitacf omits `slist`, `gflg`, `v`, `p_l`, `w_l`, `elv`): zero-filled gate
///    arrays, empty `gflg` and `v` (issue 12; the original sent nothing).
/// 3. Record 1 with `time.us = -1` (read as 0: `.000000`) and `noise.sky = -3.7` (`int()`
///    truncates toward zero: `-3`).
/// 4. A scan start (`scan == 1`), four echoes, `time.us = 999999`.
const WIRE: [&str; 4] = [
    r#"42["sas",{"site_name":"sas","beam":0,"cp":"stereoscan(153)","frang":180,"nave":22,"freq":10500,"noise":27,"nrang":8,"rsep":45,"stid":5,"scan":0,"gflg":[0,1,0],"v":[-2.277430534362793,7.722569465637207,17.722570419311523],"time":"2026-12-03 13:05:07.250000","elevation":[0.0,10.100000381469727,0.0,20.200000762939453,0.0,-3.299999952316284,0.0,0.0],"power":[0.0,3.299999952316284,0.0,12.699999809265137,0.0,1.100000023841858,0.0,0.0],"velocity":[0.0,-2.277430534362793,0.0,7.722569465637207,0.0,17.722570419311523,0.0,0.0],"width":[0.0,50.0,0.0,0.125,0.0,7.5,0.0,0.0],"g_scatter":[0,0,0,1,0,0,0,0]}]"#,
    r#"42["sas",{"site_name":"sas","beam":1,"cp":"stereoscan(153)","frang":180,"nave":22,"freq":10500,"noise":27,"nrang":8,"rsep":45,"stid":5,"scan":0,"gflg":[],"v":[],"time":"2026-12-03 13:05:07.250000","elevation":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0],"power":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0],"velocity":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0],"width":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0],"g_scatter":[0,0,0,0,0,0,0,0]}]"#,
    r#"42["sas",{"site_name":"sas","beam":2,"cp":"stereoscan(153)","frang":180,"nave":22,"freq":10500,"noise":-3,"nrang":8,"rsep":45,"stid":5,"scan":0,"gflg":[0,1,0],"v":[-2.277430534362793,7.722569465637207,17.722570419311523],"time":"2026-12-03 13:05:07.000000","elevation":[0.0,10.100000381469727,0.0,20.200000762939453,0.0,-3.299999952316284,0.0,0.0],"power":[0.0,3.299999952316284,0.0,12.699999809265137,0.0,1.100000023841858,0.0,0.0],"velocity":[0.0,-2.277430534362793,0.0,7.722569465637207,0.0,17.722570419311523,0.0,0.0],"width":[0.0,50.0,0.0,0.125,0.0,7.5,0.0,0.0],"g_scatter":[0,0,0,1,0,0,0,0]}]"#,
    r#"42["sas",{"site_name":"sas","beam":3,"cp":"stereoscan(153)","frang":180,"nave":22,"freq":10500,"noise":27,"nrang":8,"rsep":45,"stid":5,"scan":1,"gflg":[1,1,0,1],"v":[100.5,-0.10000000149011612,3.0,0.0],"time":"2026-12-03 13:05:07.999999","elevation":[1.5,0.0,2.5,0.0,3.5,0.0,4.5,0.0],"power":[9.899999618530273,0.0,8.800000190734863,0.0,7.699999809265137,0.0,6.599999904632568,0.0],"velocity":[100.5,0.0,-0.10000000149011612,0.0,3.0,0.0,0.0,0.0],"width":[0.25,0.0,0.5,0.0,0.75,0.0,1.0,0.0],"g_scatter":[1,0,1,0,0,0,1,0]}]"#,
];

/// The `sas/echoes` counts at record 4's scan start: the averages over the four records, the
/// scan start itself and the echo-less record included, each `int(sum / 4)`:
/// total (3+0+3+4)/4 = 2.5 → 2, ionospheric (2+0+2+1)/4 → 1, ground scatter (1+0+1+3)/4 → 1.
/// Leaving out the scan start would give 2, 1, 0; leaving out the echo-less record 3, 1, 1.
const ECHOES: (u64, u64, u64) = (2, 1, 1);

/// The four records [`WIRE`] describes, in order.
fn records() -> Vec<Record> {
    let mut first = radar::record(0, 0);
    set_array(
        &mut first,
        "v",
        f32s(&[-2.277_430_5, 7.722_569_5, 17.722_57]),
    );
    set_array(&mut first, "elv", f32s(&[10.1, 20.2, -3.3]));
    set_array(&mut first, "p_l", f32s(&[3.3, 12.7, 1.1]));
    set_array(&mut first, "w_l", f32s(&[50.0, 0.125, 7.5]));

    let mut no_echoes = radar::record(1, 0);
    remove(&mut no_echoes, &["slist", "gflg", "v", "p_l", "w_l", "elv"]);

    let mut negative_us = first.clone();
    set_scalar(&mut negative_us, "bmnum", Value::I16(2));
    set_scalar(&mut negative_us, "time.us", Value::I32(-1));
    set_scalar(&mut negative_us, "noise.sky", Value::F32(-3.7));

    let mut scan_start = radar::record(3, 1);
    set_scalar(&mut scan_start, "time.us", Value::I32(999_999));
    set_array(
        &mut scan_start,
        "slist",
        [0i16, 2, 4, 6].map(Value::I16).to_vec(),
    );
    set_array(
        &mut scan_start,
        "gflg",
        [1i8, 1, 0, 1].map(Value::I8).to_vec(),
    );
    set_array(&mut scan_start, "v", f32s(&[100.5, -0.1, 3.0, 0.0]));
    set_array(&mut scan_start, "elv", f32s(&[1.5, 2.5, 3.5, 4.5]));
    set_array(&mut scan_start, "p_l", f32s(&[9.9, 8.8, 7.7, 6.6]));
    set_array(&mut scan_start, "w_l", f32s(&[0.25, 0.5, 0.75, 1.0]));

    vec![first, no_echoes, negative_us, scan_start]
}

/// The `sas` payloads of [`WIRE`], parsed.
fn expected_sas() -> Vec<Json> {
    WIRE.iter()
        .map(|packet| {
            let array: Json = serde_json::from_str(&packet[2..]).expect("WIRE is JSON");
            assert_eq!(array[0], "sas");
            array[1].clone()
        })
        .collect()
}

/// A temporary SQLite path for the echo counts (the preset's default is `echoes.sqlite` in the
/// working directory), removed on drop.
struct EchoesDb(PathBuf);

impl EchoesDb {
    fn new(name: &str) -> EchoesDb {
        let path = std::env::temp_dir().join(format!(
            "ringcast-echoes-{}-{name}.sqlite",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        EchoesDb(path)
    }
}

impl Drop for EchoesDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// One test's world: a fake radar, the gateway reading it, the Socket.IO route's address.
struct World {
    radar: FakeRadar,
    gw: Gateway,
    addr: SocketAddr,
    _db: EchoesDb,
}

impl World {
    /// `--preset superdarn`, two shards, the route on a free loopback port, then `extra`.
    fn start(name: &str, extra: &[&str]) -> World {
        let radar = FakeRadar::start(name);
        let db = EchoesDb::new(name);
        let echoes_db = format!("superdarn.echoes_db={}", db.0.display());
        let mut args = vec![
            "--shards",
            "2",
            "--preset",
            "superdarn",
            "--radars",
            radar.arg(),
            "--route",
            "superdarn.listen=127.0.0.1:0",
            "--route",
            &echoes_db,
        ];
        args.extend_from_slice(extra);
        let gw = Gateway::start(&args);
        let addr = gw.route_addr("superdarn");
        World {
            radar,
            gw,
            addr,
            _db: db,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for ringcast's feed connection and sends the four records; returns the feed, to
    /// be kept open until the test ends (a close would only add a reconnect).
    #[must_use]
    fn send_records(&self) -> TcpStream {
        let mut feed = self.radar.accept();
        radar::send(&mut feed, &records());
        feed
    }
}

/// Waits until `client` joined the namespace and returns the transport it had then.
fn connected(client: &mut SioClient) -> String {
    let line = client.wait_for("connected", |v| v["connected"] == true);
    line["transport"].as_str().expect("transport").to_owned()
}

/// Asserts that `client` opened the session on `open` and then upgraded to WebSocket.
fn assert_upgraded(client: &mut SioClient, open: &str) {
    let first = client.wait_for("open", |v| v.get("open").is_some());
    assert_eq!(first["open"], open, "{}: {}", client.name, client.report());
    let upgrade = client.wait_for("upgrade", |v| v.get("upgrade").is_some());
    assert_eq!(
        upgrade["upgrade"],
        "websocket",
        "{}: {}",
        client.name,
        client.report()
    );
}

/// How two JSON numbers may differ and still be the same value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Numbers {
    /// Equal as doubles: JavaScript has one number type, so socket.io-client prints the double
    /// `0.0` as `0`.
    AsDoubles,
    /// Equal as JSON tokens, `0.0` is not `0`: python-socketio keeps floats floats.
    Exact,
}

impl Numbers {
    fn of(lib: Lib) -> Numbers {
        match lib {
            Lib::Node => Numbers::AsDoubles,
            Lib::Python => Numbers::Exact,
        }
    }
}

/// `client`'s first five events, in the order the gateway sent them as far as the library lets
/// the test see it. socket.io-client runs handlers in arrival order. python-engineio runs each
/// message's handler on a thread of its own (`_trigger_event('message', …, run_async=True)`), so
/// its handlers may run, and print, out of arrival order: its events are put back in send order
/// (`sas` by beam, then `sas/echoes`). Arrival order itself is checked on the raw and Node
/// clients.
fn events_in_send_order(client: &mut SioClient) -> Vec<(String, Json)> {
    let mut events = client.events(5);
    if client.lib == Lib::Python {
        events.sort_by_key(|(name, data)| (name == "sas/echoes", data["beam"].as_i64()));
    }
    events
}

fn same(a: &Json, b: &Json, numbers: Numbers) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) if numbers == Numbers::AsDoubles => {
            x.as_f64() == y.as_f64()
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q, numbers))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same(v, w, numbers)))
        }
        _ => a == b,
    }
}

/// Asserts `client` received the four `sas` events, field by field as [`WIRE`] says, then the
/// `sas/echoes` counts; returns the echoes' timestamp.
fn assert_events(client: &mut SioClient) -> String {
    let numbers = Numbers::of(client.lib);
    let events = events_in_send_order(client);
    for (i, want) in expected_sas().iter().enumerate() {
        let (name, got) = &events[i];
        assert_eq!(
            name,
            "sas",
            "{}: event {i}: {}",
            client.name,
            client.report()
        );
        let want = want.as_object().expect("object");
        let got_keys: Vec<&String> = got.as_object().expect("object payload").keys().collect();
        assert_eq!(
            got_keys,
            want.keys().collect::<Vec<_>>(),
            "{}: record {i}'s keys",
            client.name
        );
        for (field, value) in want {
            assert!(
                same(&got[field], value, numbers),
                "{}: record {i} field {field}: got {}, want {value}",
                client.name,
                got[field]
            );
        }
    }
    let (name, echoes) = &events[4];
    assert_eq!(name, "sas/echoes", "{}: {}", client.name, client.report());
    let (total, iono, ground) = ECHOES;
    assert_eq!(echoes["total_echoes"], total, "{}: {echoes}", client.name);
    assert_eq!(
        echoes["ionospheric_echoes"], iono,
        "{}: {echoes}",
        client.name
    );
    assert_eq!(
        echoes["ground_scatter_echoes"], ground,
        "{}: {echoes}",
        client.name
    );
    assert_eq!(echoes.as_object().map(|o| o.len()), Some(4), "{echoes}");
    let stamp = echoes["timestamp"].as_str().expect("timestamp").to_owned();
    assert_utc_isoformat(&stamp);
    stamp
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`: Python's `isoformat()` of an aware UTC datetime.
fn assert_utc_isoformat(stamp: &str) {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = stamp.strip_suffix("+00:00").is_some_and(|t| {
        let (date, time) = t.split_once('T').unwrap_or(("", ""));
        let (hms, micros) = time.split_once('.').unwrap_or((time, "000000"));
        let date: Vec<&str> = date.split('-').collect();
        let hms: Vec<&str> = hms.split(':').collect();
        date.len() == 3
            && date.iter().all(|p| digits(p))
            && hms.len() == 3
            && hms.iter().all(|p| digits(p) && p.len() == 2)
            && micros.len() == 6
            && digits(micros)
    });
    assert!(ok, "not a UTC isoformat timestamp: {stamp}");
}

#[test]
fn raw_engineio_websocket_sees_the_exact_bytes() {
    let world = World::start("raw", &[]);
    let mut raw = RawSio::connect(world.addr);
    // COMPAT §10: the open packet over the websocket transport, and the namespace reply.
    let open: Json = serde_json::from_str(&raw.open[1..]).expect("open packet JSON");
    let sid = open["sid"].as_str().expect("sid");
    assert_eq!(
        raw.open,
        format!(
            r#"0{{"sid":"{sid}","upgrades":[],"pingTimeout":20000,"pingInterval":25000,"maxPayload":1000000}}"#
        )
    );
    assert!(
        raw.connect.starts_with(r#"40{"sid":""#) && raw.connect.ends_with(r#""}"#),
        "{}",
        raw.connect
    );
    let _feed = world.send_records();
    for (i, want) in WIRE.iter().enumerate() {
        assert_eq!(
            raw.next_packet_or(&format!("record {i}")),
            *want,
            "record {i}"
        );
    }
    let echoes = raw.next_packet_or("the echoes event");
    let (total, iono, ground) = ECHOES;
    let head = format!(
        r#"42["sas/echoes",{{"total_echoes":{total},"ionospheric_echoes":{iono},"ground_scatter_echoes":{ground},"timestamp":""#
    );
    let stamp = echoes
        .strip_prefix(&head)
        .and_then(|rest| rest.strip_suffix(r#""}]"#))
        .unwrap_or_else(|| panic!("echoes event: {echoes}"));
    assert_utc_isoformat(stamp);
}

#[test]
fn node_socketio_client_websocket_polling_and_upgrade_get_the_same_events() {
    if !sio::available(Lib::Node, "node_socketio_client") {
        return;
    }
    let world = World::start("node", &[]);
    let url = world.url();
    let mut ws = SioClient::start(Lib::Node, &url, "websocket", 5, &EVENTS);
    let mut polling = SioClient::start(Lib::Node, &url, "polling", 5, &EVENTS);
    let mut upgraded = SioClient::start(Lib::Node, &url, "default", 5, &EVENTS);
    assert_eq!(connected(&mut ws), "websocket", "{}", ws.report());
    assert_eq!(connected(&mut polling), "polling", "{}", polling.report());
    connected(&mut upgraded);
    assert_upgraded(&mut upgraded, "polling");
    world.gw.wait_metric("ringcast_eio_sessions", |v| v == 3);

    let _feed = world.send_records();
    let stamps = [
        assert_events(&mut ws),
        assert_events(&mut polling),
        assert_events(&mut upgraded),
    ];
    assert!(
        stamps.iter().all(|s| *s == stamps[0]),
        "one broadcast: {stamps:?}"
    );
    assert!(
        !polling.seen.iter().any(|v| v.get("upgrade").is_some()),
        "polling-only upgraded: {}",
        polling.report()
    );
    assert_eq!(world.gw.metric("ringcast_eio_upgrades_total"), 1);
}

#[test]
fn python_socketio_client_websocket_and_upgrade_get_the_same_events() {
    if !sio::available(Lib::Python, "python_socketio_client") {
        return;
    }
    // python-socketio's websocket transport sends `Origin: http://<host>:<port>`, which the
    // SuperDARN allow-list refuses (as the original does): allow any Origin here.
    let world = World::start("python", &["--route", "superdarn.origins=*"]);
    let url = world.url();
    let mut ws = SioClient::start(Lib::Python, &url, "websocket", 5, &EVENTS);
    let mut upgraded = SioClient::start(Lib::Python, &url, "default", 5, &EVENTS);
    assert_eq!(connected(&mut ws), "websocket", "{}", ws.report());
    let first = ws.wait_for("open", |v| v.get("open").is_some());
    assert_eq!(first["open"], "websocket", "{}", ws.report());
    connected(&mut upgraded);
    assert_upgraded(&mut upgraded, "polling");
    world.gw.wait_metric("ringcast_eio_sessions", |v| v == 2);

    let _feed = world.send_records();
    let stamps = [assert_events(&mut ws), assert_events(&mut upgraded)];
    assert_eq!(stamps[0], stamps[1], "one broadcast");
    assert_eq!(world.gw.metric("ringcast_eio_upgrades_total"), 1);
}

/// Pings each client must see in the heartbeat test: at the scaled-down interval (250 ms) they
/// span 5 s, longer than the scaled-down pong timeout (3 s), so a session whose pongs the
/// gateway missed would be closed before the last one.
const PINGS: usize = 20;

#[test]
fn real_clients_answer_pings_on_every_transport_and_stay_connected() {
    let node = sio::available(Lib::Node, "real_clients_answer_pings (node)");
    let python = sio::available(Lib::Python, "real_clients_answer_pings (python)");
    // The interval and timeout scaled down from 25 s and 20 s, keeping their meaning; any
    // Origin, for python-socketio's websocket transport.
    let world = World::start(
        "heartbeat",
        &[
            "--route",
            "superdarn.ping_interval=250ms",
            "--route",
            "superdarn.pong_timeout=3s",
            "--route",
            "superdarn.origins=*",
        ],
    );
    let url = world.url();
    let mut clients = Vec::new();
    for transports in ["websocket", "polling", "default"]
        .into_iter()
        .filter(|_| node)
    {
        clients.push(SioClient::start(Lib::Node, &url, transports, 5, &EVENTS));
    }
    for transports in ["websocket", "default"].into_iter().filter(|_| python) {
        clients.push(SioClient::start(Lib::Python, &url, transports, 5, &EVENTS));
    }
    for c in &mut clients {
        connected(c);
    }
    for c in &mut clients {
        c.wait_count("ping", PINGS, |v| v["ping"] == true);
    }
    let timeouts = r#"ringcast_eio_session_closes_total{reason="ping_timeout"}"#;
    assert_eq!(world.gw.metric(timeouts), 0);
    assert_eq!(
        world.gw.metric("ringcast_eio_sessions"),
        clients.len() as u64
    );

    // Still connected: the records reach every one of them.
    let _feed = world.send_records();
    for c in &mut clients {
        assert_events(c);
    }
}

/// `GET /socket.io/?EIO=4&transport=<transport>` with `origin` (and the upgrade headers for
/// `websocket`); the status and body.
fn handshake(addr: SocketAddr, transport: &str, origin: Option<&str>) -> (u16, String) {
    let mut req = format!(
        "GET /socket.io/?EIO=4&transport={transport} HTTP/1.1\r\nHost: {addr}\r\n\
         Connection: close\r\n"
    );
    if transport == "websocket" {
        req = req.replace("Connection: close", "Connection: Upgrade");
        req.push_str(
            "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n",
        );
    }
    if let Some(origin) = origin {
        req.push_str(&format!("Origin: {origin}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    s.write_all(req.as_bytes()).expect("write request");
    // One response (a 101 has no body): a refused upgrade need not close the connection.
    let resp = read_http_response(&mut s, &mut Vec::new());
    (
        resp.status,
        String::from_utf8_lossy(&resp.body).into_owned(),
    )
}

#[test]
fn a_browser_origin_off_the_allow_list_gets_400() {
    let world = World::start("origin", &[]);
    let addr = world.addr;
    let refused = (400, json!("Not an accepted origin.").to_string());
    for transport in ["polling", "websocket"] {
        for origin in [
            "http://evil.example",
            &format!("http://{addr}"),
            "https://vt.superdarn.org",
            "http://vt.superdarn.org:8080",
        ] {
            assert_eq!(
                handshake(addr, transport, Some(origin)),
                refused,
                "{transport} from {origin}"
            );
        }
    }
    assert_eq!(world.gw.metric("ringcast_eio_origin_refused_total"), 8);
    // On the list, or no Origin at all (not a browser): the handshake goes ahead.
    for origin in [
        Some("http://vt.superdarn.org:81"),
        Some("http://localhost:5002"),
        None,
    ] {
        let (status, body) = handshake(addr, "polling", origin);
        assert_eq!(status, 200, "polling from {origin:?}: {body}");
        assert!(body.starts_with("0{\"sid\":\""), "{body}");
        assert_eq!(handshake(addr, "websocket", origin).0, 101, "{origin:?}");
    }
}
