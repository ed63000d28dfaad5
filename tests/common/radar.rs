//! A fake SuperDARN radar for tests: a loopback listener that ringcast dials (`--radars FILE`,
//! a `radars.config.json` naming it), and fitacf DMAP records sent to it as RST connex frames,
//! through ringcast's own codecs (`ringcast::source::radar::{connex, dmap}`). Included with
//! `#[path = "common/radar.rs"] mod radar;` next to `common`.
//!
//! No sleeps: ringcast's connection is accepted on a helper thread and waited for with a
//! timeout.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use ringcast::source::radar::connex;
use ringcast::source::radar::dmap::{self, Array, Record, Value};

/// Longest wait for ringcast to (re)connect: the backoff is capped at 5 s (±25 %), and the
/// first attempt competes with the gateway's start on a busy machine.
pub const CONNECT_WAIT: Duration = Duration::from_secs(20);

/// A radars.config.json in the temp folder, removed on drop.
pub struct RadarsFile(PathBuf);

impl RadarsFile {
    /// Writes `json` to a file whose name carries the process id and `name`.
    pub fn new(name: &str, json: &str) -> RadarsFile {
        let path = std::env::temp_dir().join(format!(
            "ringcast-radars-{}-{name}.json",
            std::process::id()
        ));
        std::fs::write(&path, json).expect("write radars file");
        RadarsFile(path)
    }

    /// A file naming one radar, `sas`, at `127.0.0.1:<addr's port>`.
    pub fn sas(name: &str, addr: SocketAddr) -> RadarsFile {
        let json = format!(
            r#"{{"sas": {{"host": "127.0.0.1", "port": {}}}}}"#,
            addr.port()
        );
        RadarsFile::new(name, &json)
    }

    /// The path, for `--radars`.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for RadarsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The next connection ringcast makes to `listener`, within `within`.
pub fn accept(listener: &TcpListener, within: Duration) -> TcpStream {
    let l = listener.try_clone().expect("clone listener");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(l.accept().map(|(s, _)| s));
    });
    rx.recv_timeout(within)
        .expect("ringcast did not connect in time")
        .expect("accept")
}

/// One fake `sas` radar on a free loopback port and the radars file naming it.
pub struct FakeRadar {
    /// Where ringcast connects.
    pub listener: TcpListener,
    /// The file for `--radars`.
    pub file: RadarsFile,
}

impl FakeRadar {
    /// Binds `127.0.0.1:0` and writes a radars file (`name` keeps parallel tests' files apart).
    pub fn start(name: &str) -> FakeRadar {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake radar");
        let file = RadarsFile::sas(name, listener.local_addr().expect("addr"));
        FakeRadar { listener, file }
    }

    /// The radars file's path, for `--radars`.
    pub fn arg(&self) -> &str {
        self.file.arg()
    }

    /// ringcast's feed connection, within [`CONNECT_WAIT`].
    pub fn accept(&self) -> TcpStream {
        accept(&self.listener, CONNECT_WAIT)
    }
}

/// A fitacf record of `sas` (8 gates, echoes at gates 1, 3, 5), beam `beam`, scan flag `scan`.
pub fn record(beam: i16, scan: i16) -> Record {
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
    let mut r = Record {
        scalars: scalars
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect(),
        arrays: Vec::new(),
    };
    set_array(&mut r, "slist", [1i16, 3, 5].map(Value::I16).to_vec());
    set_array(&mut r, "gflg", [0i8, 1, 0].map(Value::I8).to_vec());
    set_array(&mut r, "v", f32s(&[-2.5, 7.75, 17.0]));
    set_array(&mut r, "elv", f32s(&[10.5, 20.25, -3.0]));
    set_array(&mut r, "p_l", f32s(&[3.5, 12.25, 1.0]));
    set_array(&mut r, "w_l", f32s(&[50.0, 0.125, 7.5]));
    r
}

/// `values` as DMAP floats.
pub fn f32s(values: &[f32]) -> Vec<Value> {
    values.iter().map(|&x| Value::F32(x)).collect()
}

/// Sets scalar `name` (replacing it, or adding it at the end).
pub fn set_scalar(r: &mut Record, name: &str, value: Value) {
    match r.scalars.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value,
        None => r.scalars.push((name.to_owned(), value)),
    }
}

/// Sets one-dimensional array `name` (replacing it, or adding it at the end).
pub fn set_array(r: &mut Record, name: &str, values: Vec<Value>) {
    let dims = vec![u32::try_from(values.len()).expect("small array")];
    let array = Array { dims, values };
    match r.arrays.iter_mut().find(|(n, _)| n == name) {
        Some((_, a)) => *a = array,
        None => r.arrays.push((name.to_owned(), array)),
    }
}

/// Removes the scalars and arrays called any of `names`.
pub fn remove(r: &mut Record, names: &[&str]) {
    r.scalars.retain(|(n, _)| !names.contains(&n.as_str()));
    r.arrays.retain(|(n, _)| !names.contains(&n.as_str()));
}

/// `r` as one connex frame (header, then the DMAP bytes).
pub fn frame(r: &Record) -> Vec<u8> {
    connex::frame(&dmap::write(r))
}

/// Sends `records` to ringcast, one connex frame each, in one write.
pub fn send(feed: &mut TcpStream, records: &[Record]) {
    let bytes: Vec<u8> = records.iter().flat_map(frame).collect();
    feed.write_all(&bytes).expect("send records to ringcast");
}
