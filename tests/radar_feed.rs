//! Radar TCP feeds as a source (`--radars`): a fake radar in the test (a listener it controls)
//! sends connex frames of DMAP records; a native client subscribed to `sas` and `sas/echoes`
//! gets the rendered events. Bad bytes between records, a peer closing mid-frame and a radar
//! that is down when ringcast starts all end with the records flowing again.
//!
//! No sleeps as synchronisation: the test waits for acks, for the feed's connection (accepted
//! with a timeout), for metrics and for log lines.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Gateway, TIMEOUT};
use ringcast::source::radar::connex;
use ringcast::source::radar::dmap::{self, Array, Record, Value};
use serde_json::{Value as Json, json};

/// Longest wait for ringcast to (re)connect: the backoff is capped at 5 s (±25 %).
const CONNECT_WAIT: Duration = Duration::from_secs(20);

/// A radars.config.json naming `sas` at `addr`, removed on drop.
struct RadarsFile(PathBuf);

impl RadarsFile {
    fn new(name: &str, json: &str) -> RadarsFile {
        let path = std::env::temp_dir().join(format!(
            "ringcast-radars-{}-{name}.json",
            std::process::id()
        ));
        std::fs::write(&path, json).expect("write radars file");
        RadarsFile(path)
    }

    fn sas(name: &str, addr: SocketAddr) -> RadarsFile {
        let json = format!(
            r#"{{"sas": {{"host": "127.0.0.1", "port": {}}}}}"#,
            addr.port()
        );
        RadarsFile::new(name, &json)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for RadarsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The next connection ringcast makes to `listener`, within `within`.
fn accept(listener: &TcpListener, within: Duration) -> TcpStream {
    let l = listener.try_clone().expect("clone listener");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(l.accept().map(|(s, _)| s));
    });
    rx.recv_timeout(within)
        .expect("ringcast did not connect in time")
        .expect("accept")
}

/// A fitacf record of `sas` (8 gates, echoes at gates 1, 3, 5), beam `beam`, scan flag `scan`.
fn record(beam: i16, scan: i16) -> Record {
    let scalars = [
        ("time.yr", Value::I16(2026)),
        ("time.mo", Value::I16(12)),
        ("time.dy", Value::I16(3)),
        ("time.hr", Value::I16(13)),
        ("time.mt", Value::I16(5)),
        ("time.sc", Value::I16(7)),
        ("time.us", Value::I32(250_000)),
        ("bmnum", Value::I16(beam)),
        ("cp", Value::I16(153)),
        ("stid", Value::I16(5)),
        ("scan", Value::I16(scan)),
        ("tfreq", Value::I16(10_500)),
        ("noise.sky", Value::F32(27.9)),
        ("nave", Value::I16(22)),
        ("frang", Value::I16(180)),
        ("rsep", Value::I16(45)),
        ("nrang", Value::I16(8)),
    ];
    let f32s = |v: &[f32]| v.iter().map(|&x| Value::F32(x)).collect::<Vec<_>>();
    let arrays = [
        ("slist", [1i16, 3, 5].map(Value::I16).to_vec()),
        ("gflg", [0i8, 1, 0].map(Value::I8).to_vec()),
        ("v", f32s(&[-2.5, 7.75, 17.0])),
        ("elv", f32s(&[10.5, 20.25, -3.0])),
        ("p_l", f32s(&[3.5, 12.25, 1.0])),
        ("w_l", f32s(&[50.0, 0.125, 7.5])),
    ];
    Record {
        scalars: scalars
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect(),
        arrays: arrays
            .into_iter()
            .map(|(n, values)| {
                let dims = vec![u32::try_from(values.len()).expect("small")];
                (n.to_owned(), Array { dims, values })
            })
            .collect(),
    }
}

fn frame(r: &Record) -> Vec<u8> {
    connex::frame(&dmap::write(r))
}

/// A native client on `sas` and `sas/echoes`, acks read.
fn subscriber(gw: &Gateway) -> common::Client {
    let mut c = gw.ws("/ws?subscribe=sas,sas/echoes");
    for _ in 0..2 {
        assert_eq!(c.recv_json()["op"], "subscribed");
    }
    c
}

/// The next `sas` event's data.
fn next_record(c: &mut common::Client) -> Json {
    let ev = c.recv_json();
    assert_eq!(ev["channel"], "sas", "{ev}");
    ev["data"].clone()
}

/// Waits until a log line contains `needle`.
fn wait_log(gw: &Gateway, needle: &str) {
    let start = Instant::now();
    while !gw.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
        assert!(start.elapsed() < TIMEOUT, "no log line with {needle:?}");
        std::thread::yield_now();
    }
}

#[test]
fn records_reach_native_subscribers_through_bad_bytes_and_reconnects() {
    let radar = TcpListener::bind("127.0.0.1:0").expect("bind fake radar");
    let file = RadarsFile::sas("flow", radar.local_addr().expect("addr"));
    let gw = Gateway::start(&["--shards", "1", "--radars", file.arg()]);
    let mut c = subscriber(&gw);
    let mut feed = accept(&radar, CONNECT_WAIT);

    let mut missing_nrang = record(9, 0);
    missing_nrang.scalars.retain(|(n, _)| n != "nrang");
    let mut bad_length = connex::MAGIC.to_vec();
    bad_length.extend_from_slice(&u32::MAX.to_le_bytes());
    bad_length.extend_from_slice(b"\0\0\0");
    let mut bytes = frame(&record(3, 0));
    bytes.extend_from_slice(b"garbage between records");
    bytes.extend(frame(&record(4, 0)));
    bytes.extend(bad_length);
    bytes.extend(connex::frame(b"not a DMAP record"));
    bytes.extend(frame(&missing_nrang));
    bytes.extend(frame(&record(5, 1)));
    feed.write_all(&bytes).expect("send records");

    let first = next_record(&mut c);
    assert_eq!(first["site_name"], "sas");
    assert_eq!(first["beam"], 3);
    assert_eq!(first["cp"], "stereoscan(153)");
    assert_eq!(first["frang"], 180);
    assert_eq!(first["nave"], 22);
    assert_eq!(first["freq"], 10_500);
    assert_eq!(first["noise"], 27);
    assert_eq!(first["nrang"], 8);
    assert_eq!(first["rsep"], 45);
    assert_eq!(first["stid"], 5);
    assert_eq!(first["scan"], 0);
    assert_eq!(first["gflg"], json!([0, 1, 0]));
    assert_eq!(first["time"], "2026-12-03 13:05:07.250000");
    assert_eq!(
        first["power"],
        json!([0.0, 3.5, 0.0, 12.25, 0.0, 1.0, 0.0, 0.0])
    );
    assert_eq!(first["g_scatter"], json!([0, 0, 0, 1, 0, 0, 0, 0]));
    assert_eq!(next_record(&mut c)["beam"], 4, "garbage lost a record");
    assert_eq!(next_record(&mut c)["beam"], 5, "a bad length lost a record");
    // The scan start closes a scan of four records of 3 echoes (1 ground scatter) each: the
    // record skipped for its missing `nrang` counts too, as in the original.
    let echoes = c.recv_json();
    assert_eq!(echoes["channel"], "sas/echoes", "{echoes}");
    assert_eq!(echoes["data"]["total_echoes"], 3);
    assert_eq!(echoes["data"]["ionospheric_echoes"], 2);
    assert_eq!(echoes["data"]["ground_scatter_echoes"], 1);
    assert!(echoes["data"]["timestamp"].as_str().is_some());

    let site = |name: &str| format!("ringcast_site_radar_{name}{{site=\"sas\"}}");
    assert_eq!(gw.metric(&site("records_total")), 3);
    assert_eq!(gw.metric(&site("frame_errors_total")), 2);
    assert_eq!(gw.metric(&site("dmap_errors_total")), 1);
    assert_eq!(gw.metric(&site("skipped_records_total")), 1);
    assert_eq!(gw.metric(&site("up")), 1);

    // The radar closes in the middle of a record: counted, then ringcast connects again.
    let half = frame(&record(6, 0));
    feed.write_all(&half[..half.len() / 2]).expect("send half");
    drop(feed);
    let mut feed = accept(&radar, CONNECT_WAIT);
    feed.write_all(&frame(&record(7, 0)))
        .expect("send after reconnect");
    assert_eq!(next_record(&mut c)["beam"], 7);
    assert_eq!(gw.metric(&site("frame_errors_total")), 3);
    assert_eq!(gw.metric(&site("reconnects_total")), 1);
    assert_eq!(gw.metric("ringcast_radar_records_total"), 4);
}

#[test]
fn a_radar_down_at_start_is_connected_when_it_comes_up() {
    let addr = {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind probe");
        probe.local_addr().expect("addr")
    };
    let file = RadarsFile::sas("late", addr);
    let gw = Gateway::start(&["--shards", "1", "--radars", file.arg()]);
    let mut c = subscriber(&gw);
    wait_log(&gw, &format!("connect to {addr} failed"));
    assert_eq!(gw.metric("ringcast_radar_up"), 0);

    let radar = TcpListener::bind(addr).expect("rebind the radar's port");
    let mut feed = accept(&radar, CONNECT_WAIT);
    feed.write_all(&frame(&record(2, 0))).expect("send");
    assert_eq!(next_record(&mut c)["beam"], 2);
    assert_eq!(gw.metric("ringcast_radar_up"), 1);
    assert_eq!(gw.metric("ringcast_radar_reconnects_total"), 1);
}

#[test]
fn a_missing_radars_file_is_one_line_and_exit_2() {
    let path = std::env::temp_dir().join(format!("ringcast-no-radars-{}.json", std::process::id()));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast"));
    let out = common::hermetic(&mut cmd)
        .args(["--listen", "127.0.0.1:0", "--radars"])
        .arg(&path)
        .output()
        .expect("run ringcast");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}
