//! Radar TCP feeds as a source (`--radars`): a fake radar in the test (a listener it controls)
//! sends connex frames of DMAP records; a native client subscribed to `sas` and `sas/echoes`
//! gets the rendered events. Bad bytes between records, a peer closing mid-frame and a radar
//! that is down when ringcast starts all end with the records flowing again.
//!
//! No sleeps as synchronisation: the test waits for acks, for the feed's connection (accepted
//! with a timeout), for metrics and for log lines.

mod common;
#[path = "common/radar.rs"]
mod radar;

use std::io::Write;
use std::net::TcpListener;

use common::Gateway;
use radar::{CONNECT_WAIT, RadarsFile, accept, frame, record};
use ringcast::source::radar::connex;
use serde_json::{Value as Json, json};

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

#[test]
fn records_reach_native_subscribers_through_bad_bytes_and_reconnects() {
    let radar = TcpListener::bind("127.0.0.1:0").expect("bind fake radar");
    let file = RadarsFile::sas("flow", radar.local_addr().expect("addr"));
    let gw = Gateway::start(&["--shards", "1", "--radars", file.arg()]);
    let mut c = subscriber(&gw);
    let mut feed = accept(&radar, CONNECT_WAIT);

    let mut missing_nrang = record(9, 0);
    radar::remove(&mut missing_nrang, &["nrang"]);
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
    gw.wait_log(&[&format!("connect to {addr} failed")], 1);
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
