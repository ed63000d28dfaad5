//! The ZMQ radar feed (`CANADA_ADDR`): a pyzmq `PUB` socket (libzmq, as the original's
//! publisher; `tests/data/zmq_pub.py`) sends `[site, zlib(DMAP record)]`, and a native client
//! subscribed to `sas` gets the rendered events. A corrupt zlib record and a 3-part message are
//! counted and the next good record still arrives; a publisher that is down when ringcast
//! starts is read once it comes up, and again after it restarts.
//!
//! The publisher repeats its current batch every 100 ms until told otherwise (ZMQ's slow
//! joiner: a subscription takes effect some time after the connect), and the test waits for
//! events and metrics, never sleeps. The Python is `RINGCAST_TEST_PYTHON` (default `python3`);
//! scripts/test installs pyzmq for it. Without pyzmq each test prints `SKIPPED` and passes,
//! except under `CI=true`.

mod common;
#[path = "common/radar.rs"]
mod radar;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::Gateway;
use radar::record;
use ringcast::source::radar::dmap::{self, Record};
use serde_json::{Value as Json, json};

/// Longest wait for the feed to (re)connect and the subscription to take: a connect attempt
/// lasts up to 10 s (the `zeromq` crate retries a refused connect within it every 1.4 to
/// 5 s), then the backoff (at most 5 s, ±25 %).
const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// The Python to run the publisher with.
fn python() -> String {
    std::env::var("RINGCAST_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// True when the Python imports zmq; otherwise prints `SKIPPED` (or, under `CI=true`, fails).
fn pyzmq_available(test: &str) -> bool {
    let ok = Command::new(python())
        .args(["-c", "import zmq"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {} cannot import zmq under CI=true (scripts/test installs pyzmq)",
        python()
    );
    eprintln!("SKIPPED {test}: {} cannot import zmq", python());
    false
}

/// The pyzmq publisher, killed on drop.
struct Publisher {
    child: Child,
    stdin: ChildStdin,
    port: u16,
}

impl Publisher {
    /// Binds on `port` (`None`: a free one) and returns once it is bound.
    fn start(port: Option<u16>) -> Publisher {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/zmq_pub.py");
        let mut cmd = Command::new(python());
        cmd.arg(script);
        if let Some(p) = port {
            cmd.arg(p.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the pyzmq publisher");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the publisher's port");
        let port = line.trim().parse().expect("the publisher prints its port");
        Publisher { child, stdin, port }
    }

    /// Sends `messages` (each a list of parts) every 100 ms from now on, instead of the
    /// previous batch.
    fn repeat(&mut self, messages: &[Vec<Part>]) {
        let mut text = String::new();
        for message in messages {
            let parts: Vec<String> = message.iter().map(Part::encode).collect();
            text.push_str(&parts.join(" "));
            text.push('\n');
        }
        text.push('\n');
        self.stdin
            .write_all(text.as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("write to the publisher");
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One part of a message, as the publisher sends it.
enum Part {
    /// These bytes.
    Raw(Vec<u8>),
    /// These bytes, zlib-compressed by the publisher (Python's `zlib.compress`).
    Zlib(Vec<u8>),
}

impl Part {
    fn encode(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        match self {
            Part::Raw(b) => hex(b),
            Part::Zlib(b) => format!("z:{}", hex(b)),
        }
    }
}

/// `[site, zlib(record)]`.
fn good(site: &str, r: &Record) -> Vec<Part> {
    vec![
        Part::Raw(site.as_bytes().to_vec()),
        Part::Zlib(dmap::write(r)),
    ]
}

/// Starts ringcast with `CANADA_ADDR` at `port` (the original's variable).
fn gateway(port: u16) -> Gateway {
    let addr = format!("127.0.0.1:{port}");
    Gateway::start_with_env(&["--shards", "1"], &[("CANADA_ADDR", &addr)])
}

/// A native client on `channels`, acks read.
fn subscriber(gw: &Gateway, channels: &[&str]) -> common::Client {
    let mut c = gw.ws(&format!("/ws?subscribe={}", channels.join(",")));
    for _ in channels {
        assert_eq!(c.recv_json()["op"], "subscribed");
    }
    c
}

/// The ZMQ feed's series `ringcast_site_radar_<name>{site="canada"}`.
fn zmq_metric(gw: &Gateway, name: &str) -> u64 {
    gw.metric(&format!("ringcast_site_radar_{name}{{site=\"canada\"}}"))
}

/// Waits until the ZMQ feed's `name` is at least `min`.
fn wait_metric(gw: &Gateway, name: &str, min: u64, within: Duration) {
    let start = Instant::now();
    while zmq_metric(gw, name) < min {
        assert!(start.elapsed() < within, "{name} stayed below {min}");
        std::thread::yield_now();
    }
}

/// Reads events until one on `channel` whose data satisfies `want` (the publisher repeats).
fn next_matching(c: &mut common::Client, channel: &str, want: impl Fn(&Json) -> bool) -> Json {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < CONNECT_WAIT,
            "no matching {channel} event"
        );
        let ev = c.recv_json();
        if ev["channel"] == channel && want(&ev["data"]) {
            return ev["data"].clone();
        }
    }
}

#[test]
fn zmq_records_reach_native_subscribers() {
    if !pyzmq_available("zmq_records_reach_native_subscribers") {
        return;
    }
    let mut publisher = Publisher::start(None);
    let gw = gateway(publisher.port);
    let mut c = subscriber(&gw, &["sas", "sas/echoes"]);
    wait_metric(&gw, "up", 1, CONNECT_WAIT);
    publisher.repeat(&[good("sas", &record(3, 0)), good("sas", &record(4, 1))]);

    let first = next_matching(&mut c, "sas", |d| d["beam"] == 3);
    assert_eq!(first["site_name"], "sas");
    assert_eq!(first["cp"], "stereoscan(153)");
    assert_eq!(first["freq"], 10_500);
    assert_eq!(first["noise"], 27);
    assert_eq!(first["nrang"], 8);
    assert_eq!(first["stid"], 5);
    assert_eq!(first["gflg"], json!([0, 1, 0]));
    assert_eq!(first["time"], "2026-12-03 13:05:07.250000");
    assert_eq!(
        first["power"],
        json!([0.0, 3.5, 0.0, 12.25, 0.0, 1.0, 0.0, 0.0])
    );
    let echoes = next_matching(&mut c, "sas/echoes", |_| true);
    assert_eq!(echoes["total_echoes"], 3);
    assert_eq!(echoes["ionospheric_echoes"], 2);
    assert_eq!(echoes["ground_scatter_echoes"], 1);

    // A corrupt zlib record and a 3-part message are counted; the next good record arrives.
    let site = Part::Raw(b"sas".to_vec());
    let three = vec![
        Part::Raw(b"sas".to_vec()),
        Part::Zlib(dmap::write(&record(5, 0))),
        Part::Raw(b"extra".to_vec()),
    ];
    publisher.repeat(&[
        vec![site, Part::Raw(b"not zlib at all".to_vec())],
        three,
        good("sas", &record(7, 0)),
    ]);
    next_matching(&mut c, "sas", |d| d["beam"] == 7);
    wait_metric(&gw, "zlib_errors_total", 1, CONNECT_WAIT);
    wait_metric(&gw, "frame_errors_total", 1, CONNECT_WAIT);
    assert!(gw.metric("ringcast_radar_records_total") >= 3);
    assert_eq!(zmq_metric(&gw, "dmap_errors_total"), 0);
}

#[test]
fn a_publisher_down_at_start_or_restarted_is_read_when_it_comes_up() {
    if !pyzmq_available("a_publisher_down_at_start_or_restarted_is_read_when_it_comes_up") {
        return;
    }
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
        probe.local_addr().expect("addr").port()
    };
    let gw = gateway(port);
    let mut c = subscriber(&gw, &["pgr"]);
    assert_eq!(zmq_metric(&gw, "up"), 0);

    let mut publisher = Publisher::start(Some(port));
    publisher.repeat(&[good("pgr", &record(2, 0))]);
    wait_metric(&gw, "up", 1, CONNECT_WAIT);
    let data = next_matching(&mut c, "pgr", |d| d["beam"] == 2);
    assert_eq!(data["site_name"], "pgr");

    // The publisher restarts: the feed sees it go, makes a new socket and reads on.
    drop(publisher);
    let start = Instant::now();
    while zmq_metric(&gw, "up") != 0 {
        assert!(
            start.elapsed() < CONNECT_WAIT,
            "the feed did not see the publisher go"
        );
        std::thread::yield_now();
    }
    let mut publisher = Publisher::start(Some(port));
    publisher.repeat(&[good("pgr", &record(8, 0))]);
    next_matching(&mut c, "pgr", |d| d["beam"] == 8);
    assert!(zmq_metric(&gw, "reconnects_total") >= 1);
}
