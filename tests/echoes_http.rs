//! `GET /echoes` on `--preset superdarn` (COMPAT §5.3 and §10, D6), end to end: a fake radar's
//! scan start is stored by the running gateway and served back as JSON and CSV; every error
//! status; and the retention, on a file laid out as the original's `app/database.sqlite` with
//! one row older than the limit.
//!
//! No sleeps: the tests wait on `ringcast_echoes_*` metrics.

mod common;
#[path = "common/radar.rs"]
mod radar;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Gateway, TIMEOUT, read_http_response};
use radar::FakeRadar;
use serde_json::{Value, json};

/// A SQLite file in the temp directory, removed on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(tag: &str) -> TempDb {
        let path = std::env::temp_dir().join(format!(
            "ringcast-echoes-http-{}-{tag}.sqlite",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        TempDb(path)
    }

    fn route_arg(&self) -> String {
        format!("superdarn.echoes_db={}", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn get(addr: SocketAddr, target: &str) -> common::Response {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    read_http_response(&mut s, &mut Vec::new())
}

fn text(r: &common::Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// `t` as the naive ISO text the window parameters take (UTC).
fn iso(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let days = secs / 86_400;
    let (y, m, d) = civil(days as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's `civil_from_days`).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[test]
fn a_scan_start_is_stored_and_served_as_json_and_csv_with_every_error_status() {
    let fake = FakeRadar::start("echoes-http");
    let db = TempDb::new("served");
    let gw = Gateway::start(&[
        "--preset",
        "superdarn",
        "--route",
        "superdarn.listen=127.0.0.1:0",
        "--route",
        &db.route_arg(),
        "--radars",
        fake.arg(),
    ]);
    let addr = gw.route_addr("superdarn");
    let before = SystemTime::now() - Duration::from_secs(2);
    let mut feed = fake.accept();
    // Two records of one scan, then the next scan's start: the average of the three is stored
    // (3 echoes each: 2 ionospheric, 1 ground scatter).
    radar::send(
        &mut feed,
        &[
            radar::record(0, 0),
            radar::record(1, 0),
            radar::record(2, 1),
        ],
    );
    gw.wait_metric("ringcast_echoes_rows_written_total", |n| n == 1);
    let after = SystemTime::now() + Duration::from_secs(2);
    let window = format!("start={}&end={}", iso(before), iso(after));

    let r = get(addr, &format!("/echoes?site_name=sas&{window}"));
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(body["total_echoes"], json!([3]));
    assert_eq!(body["ionospheric_echoes"], json!([2]));
    assert_eq!(body["ground_scatter_echoes"], json!([1]));
    let stamp = body["timestamp"][0]
        .as_str()
        .expect("a timestamp")
        .to_owned();
    assert!(
        !stamp.contains('+') && stamp.contains('T'),
        "naive ISO: {stamp}"
    );
    // Keys sorted, as Flask's jsonify writes them.
    let raw = text(&r);
    let keys: Vec<&str> = raw
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|k| k.ends_with("echoes") || *k == "timestamp")
        .collect();
    assert_eq!(
        &keys[..4],
        [
            "ground_scatter_echoes",
            "ionospheric_echoes",
            "timestamp",
            "total_echoes"
        ]
    );
    // The default window is the last 24 hours: the row is in it.
    let r = get(addr, "/echoes?site_name=sas");
    assert_eq!(r.status, 200, "{}", text(&r));

    let r = get(addr, &format!("/echoes?site_name=sas&save=true&{window}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=my_data.csv")
    );
    assert_eq!(
        text(&r),
        format!(
            "timestamp,total_echoes,ionospheric_echoes,ground_scatter_echoes\r\n{stamp},3,2,1\r\n"
        )
    );

    let cases = [
        (
            "/echoes".to_owned(),
            400,
            "{\"message\":\"Missing required parameter: site_name\"}\n",
        ),
        (
            "/echoes?site_name=sas&start=yesterday-ish".to_owned(),
            400,
            "{\"message\":\"Invalid date format. Please use ISO format.\"}\n",
        ),
        (
            format!(
                "/echoes?site_name=sas&start={}&end={}",
                iso(after),
                iso(before)
            ),
            400,
            "{\"message\":\"Invalid date range. Start time must be before end time.\"}\n",
        ),
        (
            format!("/echoes?site_name=kod&{window}"),
            404,
            "{\"message\":\"No echoes found for the specified date range.\"}\n",
        ),
    ];
    for (target, status, body) in cases {
        let r = get(addr, &target);
        assert_eq!((r.status, text(&r).as_str()), (status, body), "{target}");
    }
    // Flask registers `/echoes` only.
    assert_eq!(get(addr, "/echoes/?site_name=sas").status, 404);
}

#[test]
fn retention_deletes_rows_older_than_the_limit_from_an_original_database() {
    let db = TempDb::new("retention");
    // The original's table (SQLAlchemy's layout) with one row 40 days old and one an hour old.
    {
        let conn = rusqlite::Connection::open(&db.0).expect("create the file");
        conn.execute_batch(
            "CREATE TABLE echo_counts (id INTEGER NOT NULL, site_name VARCHAR NOT NULL, \
             timestamp DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL, total_echoes INTEGER NOT \
             NULL, ionospheric_echoes INTEGER NOT NULL, ground_scatter_echoes INTEGER NOT NULL, \
             PRIMARY KEY (id))",
        )
        .expect("table");
        let now = SystemTime::now();
        for (age_hours, total) in [(40 * 24, 9), (1, 5)] {
            let t = now - Duration::from_secs(age_hours * 3600);
            let stamp = iso(t).replace('T', " ") + ".000000";
            conn.execute(
                "INSERT INTO echo_counts (site_name, timestamp, total_echoes, \
                 ionospheric_echoes, ground_scatter_echoes) VALUES ('sas', ?1, ?2, 0, 0)",
                rusqlite::params![stamp, total],
            )
            .expect("row");
        }
    }
    let gw = Gateway::start(&[
        "--preset",
        "superdarn",
        "--route",
        "superdarn.listen=127.0.0.1:0",
        "--route",
        &db.route_arg(),
    ]);
    // The original's default, 30 days, applies when nothing sets it; it runs at start.
    gw.wait_metric("ringcast_echoes_deleted_total", |n| n == 1);
    let addr = gw.route_addr("superdarn");
    let start = iso(SystemTime::now() - Duration::from_secs(60 * 24 * 3600));
    let r = get(addr, &format!("/echoes?site_name=sas&start={start}"));
    assert_eq!(r.status, 200, "{}", text(&r));
    let body: Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(
        body["total_echoes"],
        json!([5]),
        "only the recent row is left"
    );
}
