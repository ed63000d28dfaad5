//! SuperDARN real-time events (COMPAT §5.2 and §10, D2): one fitacf record rendered once, on the
//! source side, into the `<site>` event every Socket.IO client receives, and the Socket.IO
//! packet both transports send.
//!
//! The original is `vtsuperdarn/superdarn-realtime-data` (`app/data_processing/process_dmap.py`,
//! `dmap_to_json`, and `app/socket_server.py`, `send_data`). Its payload, and so this one, is a
//! compact JSON object (python-socketio's `json.dumps(…, separators=(",", ":"))`, `ensure_ascii`)
//! with the keys in this order:
//!
//! `site_name`, `beam` (`int(bmnum)`), `cp` (`"<name>(<cp>)"`, [`cp::cp_name`]), `frang`, `nave`,
//! `freq` (`int(tfreq)`), `noise` (`int(noise.sky)`, truncated), `nrang` (as is), `rsep`, `stid`,
//! `scan`, `gflg` and `v` (the per-echo arrays as they are), `time`
//! (`YYYY-MM-DD HH:MM:SS.ffffff` from `time.yr/mo/dy/hr/mt/sc/us`, a negative `us` read as 0),
//! then `elevation`, `power`, `velocity`, `width` (floats) and `g_scatter` (ints): arrays of
//! length `nrang`, zero-filled, with `elv`, `p_l`, `v`, `w_l` and `gflg` scattered to the gates
//! that `slist` names. Floats are `repr` of the double ([`write_float`]): a float32
//! widened, zero as `0.0`. `int()` truncates a float field toward zero.
//!
//! Where this differs from the original, on purpose:
//! - A record without echoes (fitacf then omits `slist`, `gflg`, `v`, `p_l`, `w_l`, `elv`) is
//!   sent with zero-filled gate arrays and empty `gflg` and `v` (issue 12); the original raised
//!   KeyError on `gflg` and sent nothing, leaving that beam blank. Each of those six arrays is
//!   optional on its own here: a record with `slist` but no `elv` (RST omits the
//!   cross-correlation arrays when `xcf` is off) is sent with zero elevations, where the
//!   original sent nothing.
//! - An `slist` entry outside `0..nrang` is skipped (its echo is not placed; nothing else
//!   changes). The original indexed a Python list with it: a negative entry wrote from the end,
//!   one past the end raised IndexError and nothing was sent. Skipped entries are not counted.
//! - A required scalar that is absent, or whose value `int()` or `datetime()` would refuse (a
//!   string, a non-finite float, a float for a time field or `cp`, a month of 13) is
//!   [`MissingField`]: nothing is sent, as the original's KeyError (or ValueError) meant. An
//!   `nrang` above [`MAX_NRANG`] is refused too, where the original would allocate it.
//! - Multi-dimensional arrays are read flat (fitacf's are one-dimensional).
//!
//! Thread: pure, any thread (the radar feed's thread renders each record once).

pub mod cp;
pub mod echoes;
pub(crate) mod utc;

use std::io::Write;

use bytes::Bytes;

use crate::profile::pyjson::{write_float, write_str};
use crate::source::radar::dmap::{Array, Record, Value};

/// The largest `nrang` rendered: 32,767, fitacf's type for it (`DMAP_SHORT`). The five gate
/// arrays cost about 4 bytes a gate each when empty, so the largest event is about 650 KB; a
/// bigger value (only a corrupt record has one) is refused as [`MissingField`] `nrang`.
pub const MAX_NRANG: i64 = 32_767;

/// A record the original could not render: a required scalar is absent or unusable. Upstream
/// data's fault; the caller counts it and skips the record. The record still goes to the
/// [`echoes::EchoCounter`], as the original's did after a KeyError.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fitacf record has no usable `{field}`")]
pub struct MissingField {
    /// The DMAP name of the first field missing, in the original's order of reading.
    pub field: &'static str,
}

/// Renders the `<site>` event's payload for one record (see the module doc for the rules).
pub fn render_site(site: &str, record: &Record) -> Result<Vec<u8>, MissingField> {
    let s = Scalars::read(record)?;
    let gates = Gates::scatter(record, s.nrang);
    let mut out = Vec::with_capacity(512 + gates.power.len() * 40);
    out.extend_from_slice(b"{\"site_name\":");
    write_str(&mut out, site.as_bytes());
    write_int_field(&mut out, "beam", s.beam);
    key(&mut out, "cp");
    write_str(
        &mut out,
        format!("{}({})", cp::cp_name(s.cp), s.cp).as_bytes(),
    );
    write_int_field(&mut out, "frang", s.frang);
    write_int_field(&mut out, "nave", s.nave);
    write_int_field(&mut out, "freq", s.freq);
    write_int_field(&mut out, "noise", s.noise);
    write_int_field(&mut out, "nrang", s.nrang);
    write_int_field(&mut out, "rsep", s.rsep);
    write_int_field(&mut out, "stid", s.stid);
    write_int_field(&mut out, "scan", s.scan);
    key(&mut out, "gflg");
    write_values(&mut out, record.array("gflg"));
    key(&mut out, "v");
    write_values(&mut out, record.array("v"));
    key(&mut out, "time");
    write_str(&mut out, s.time.as_bytes());
    gates.write(&mut out);
    out.push(b'}');
    Ok(out)
}

/// The Socket.IO v5 broadcast of `payload` as event `event` on the default namespace:
/// `42["<event>",<payload>]` (Engine.IO message `4`, Socket.IO event `2`), the event name
/// written as python-socketio writes it (`ensure_ascii`). Encoded once: it is both the
/// WebSocket text frame's body and the long-polling segment.
pub fn event_packet(event: &str, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + event.len() + 8);
    out.extend_from_slice(b"42[");
    write_str(&mut out, event.as_bytes());
    out.push(b',');
    out.extend_from_slice(payload);
    out.push(b']');
    Bytes::from(out)
}

/// The scalars of the payload, read (and checked) before anything is written.
struct Scalars {
    nrang: i64,
    beam: i64,
    cp: i64,
    frang: i64,
    nave: i64,
    freq: i64,
    noise: i64,
    rsep: i64,
    stid: i64,
    scan: i64,
    /// `YYYY-MM-DD HH:MM:SS.ffffff`.
    time: String,
}

impl Scalars {
    fn read(record: &Record) -> Result<Self, MissingField> {
        let int = |field| {
            record
                .scalar(field)
                .and_then(py_int)
                .ok_or(MissingField { field })
        };
        let exact = |field| exact_int(record, field);
        let nrang = exact("nrang")?;
        if nrang > MAX_NRANG {
            return Err(MissingField { field: "nrang" });
        }
        Ok(Scalars {
            nrang,
            beam: int("bmnum")?,
            cp: exact("cp")?,
            frang: int("frang")?,
            nave: int("nave")?,
            freq: int("tfreq")?,
            noise: int("noise.sky")?,
            rsep: int("rsep")?,
            stid: int("stid")?,
            scan: int("scan")?,
            time: format_time(record)?,
        })
    }
}

/// A scalar that must be an integer type (`nrang` is used as a list length, `cp` as a dict key,
/// the time fields as `datetime()` arguments, which refuse floats).
fn exact_int(record: &Record, field: &'static str) -> Result<i64, MissingField> {
    record
        .scalar(field)
        .and_then(Value::as_i64)
        .ok_or(MissingField { field })
}

/// Python's `int(x)` of a DMAP value: integers as they are, finite floats truncated toward
/// zero. `None` where Python raises (non-finite floats, strings) or the result leaves `i64`.
fn py_int(v: &Value) -> Option<i64> {
    match *v {
        Value::F32(_) | Value::F64(_) => {
            let t = v.as_f64()?.trunc();
            // 2^63 is exact as an f64; anything in [-2^63, 2^63) converts exactly.
            (t.is_finite() && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&t))
                .then_some(t as i64)
        }
        _ => v.as_i64(),
    }
}

/// `time` as the original's `strftime('%Y-%m-%d %H:%M:%S.%f')`, with the checks `datetime()`
/// makes. `%Y` is not zero-padded below year 1000 (glibc, as CPython 3.11 on Linux writes it).
fn format_time(record: &Record) -> Result<String, MissingField> {
    let us = exact_int(record, "time.us")?.max(0);
    let yr = exact_int(record, "time.yr")?;
    let mo = exact_int(record, "time.mo")?;
    let dy = exact_int(record, "time.dy")?;
    let hr = exact_int(record, "time.hr")?;
    let mt = exact_int(record, "time.mt")?;
    let sc = exact_int(record, "time.sc")?;
    let checks = [
        ("time.yr", (1..=9999).contains(&yr)),
        ("time.mo", (1..=12).contains(&mo)),
        ("time.dy", dy >= 1 && dy <= utc::days_in_month(yr, mo)),
        ("time.hr", (0..=23).contains(&hr)),
        ("time.mt", (0..=59).contains(&mt)),
        ("time.sc", (0..=59).contains(&sc)),
        ("time.us", us <= 999_999),
    ];
    if let Some(&(field, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Err(MissingField { field });
    }
    Ok(format!(
        "{yr}-{mo:02}-{dy:02} {hr:02}:{mt:02}:{sc:02}.{us:06}"
    ))
}

/// The per-gate arrays, `nrang` long (empty for a negative `nrang`, as `[0.0] * -1` is).
struct Gates {
    elevation: Vec<f64>,
    power: Vec<f64>,
    velocity: Vec<f64>,
    width: Vec<f64>,
    g_scatter: Vec<i64>,
}

impl Gates {
    fn scatter(record: &Record, nrang: i64) -> Self {
        let len = usize::try_from(nrang).unwrap_or(0);
        let slist = record.array("slist");
        let floats = |name| scatter(record, slist, name, len, 0.0, Value::as_f64);
        Gates {
            elevation: floats("elv"),
            power: floats("p_l"),
            velocity: floats("v"),
            width: floats("w_l"),
            g_scatter: scatter(record, slist, "gflg", len, 0, py_int),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        for (name, values) in [
            ("elevation", &self.elevation),
            ("power", &self.power),
            ("velocity", &self.velocity),
            ("width", &self.width),
        ] {
            key(out, name);
            write_list(out, values, |out, &v| write_float(out, v));
        }
        key(out, "g_scatter");
        write_list(out, &self.g_scatter, |out, &v| write_int(out, v));
    }
}

/// `len` zeros with `name[i]` placed at gate `slist[i]`, pairwise as `zip` pairs them (the
/// shorter array ends it); a gate outside `0..len`, or a value `convert` refuses, is skipped.
fn scatter<T: Copy>(
    record: &Record,
    slist: Option<&Array>,
    name: &str,
    len: usize,
    zero: T,
    convert: fn(&Value) -> Option<T>,
) -> Vec<T> {
    let mut gates = vec![zero; len];
    let (Some(slist), Some(values)) = (slist, record.array(name)) else {
        return gates;
    };
    for (value, gate) in values.values.iter().zip(&slist.values) {
        let gate = gate.as_i64().and_then(|g| usize::try_from(g).ok());
        if let (Some(slot), Some(v)) = (gate.and_then(|g| gates.get_mut(g)), convert(value)) {
            *slot = v;
        }
    }
    gates
}

/// Writes `,"name":`.
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_int_field(out: &mut Vec<u8>, name: &str, v: i64) {
    key(out, name);
    write_int(out, v);
}

fn write_int(out: &mut Vec<u8>, v: i64) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{v}");
}

fn write_list<T>(out: &mut Vec<u8>, items: &[T], mut each: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(b']');
}

/// An array as numpy's `tolist()` and `json.dumps` write it (`[]` when it is absent).
fn write_values(out: &mut Vec<u8>, array: Option<&Array>) {
    let values = array.map_or(&[][..], |a| &a.values[..]);
    write_list(out, values, |out, v| match v {
        Value::F32(_) | Value::F64(_) => write_float(out, v.as_f64().unwrap_or(f64::NAN)),
        Value::Str(s) => write_str(out, s),
        // Writing to a Vec cannot fail.
        &Value::U64(u) => drop(write!(out, "{u}")),
        _ => write_int(out, v.as_i64().unwrap_or_default()),
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::radar::dmap::Array;

    /// A record from `(name, value)` scalars and `(name, values)` one-dimensional arrays.
    pub(crate) fn record(scalars: &[(&str, Value)], arrays: &[(&str, Vec<Value>)]) -> Record {
        Record {
            scalars: scalars
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect(),
            arrays: arrays
                .iter()
                .map(|(n, values)| {
                    let dims = vec![u32::try_from(values.len()).expect("small")];
                    let values = values.clone();
                    ((*n).to_owned(), Array { dims, values })
                })
                .collect(),
        }
    }

    pub(crate) fn f32s(v: &[f32]) -> Vec<Value> {
        v.iter().map(|&x| Value::F32(x)).collect()
    }

    pub(crate) fn i8s(v: &[i8]) -> Vec<Value> {
        v.iter().map(|&x| Value::I8(x)).collect()
    }

    fn i16s(v: &[i16]) -> Vec<Value> {
        v.iter().map(|&x| Value::I16(x)).collect()
    }

    /// The scalars of the capture in COMPAT §10 (sas, beam 0, stereoscan, 8 gates).
    fn scalars() -> Vec<(&'static str, Value)> {
        vec![
            ("time.yr", Value::I16(2026)),
            ("time.mo", Value::I16(12)),
            ("time.dy", Value::I16(3)),
            ("time.hr", Value::I16(13)),
            ("time.mt", Value::I16(5)),
            ("time.sc", Value::I16(7)),
            ("time.us", Value::I32(250_000)),
            ("bmnum", Value::I16(0)),
            ("cp", Value::I16(153)),
            ("stid", Value::I16(5)),
            ("scan", Value::I16(0)),
            ("tfreq", Value::I16(10_500)),
            ("noise.sky", Value::F32(27.9)),
            ("nave", Value::I16(22)),
            ("frang", Value::I16(180)),
            ("rsep", Value::I16(45)),
            ("nrang", Value::I16(8)),
        ]
    }

    fn echo_arrays() -> Vec<(&'static str, Vec<Value>)> {
        vec![
            ("slist", i16s(&[1, 3, 5])),
            ("gflg", i8s(&[0, 1, 0])),
            ("v", f32s(&[-2.277_430_5, 7.722_569_5, 17.722_57])),
            ("elv", f32s(&[10.1, 20.2, -3.3])),
            ("p_l", f32s(&[3.5, 12.25, 1e-05])),
            ("w_l", f32s(&[50.0, 0.125, 7.3])),
        ]
    }

    fn render(r: &Record) -> String {
        String::from_utf8(render_site("sas", r).expect("renders")).expect("ASCII")
    }

    fn with(
        mut scalars: Vec<(&'static str, Value)>,
        name: &str,
        v: Value,
    ) -> Vec<(&'static str, Value)> {
        if let Some(slot) = scalars.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = v;
        }
        scalars
    }

    #[test]
    fn record_with_echoes_is_rendered_as_the_original_did() {
        // Worked by hand from dmap_to_json, and checked against CPython 3.11 running it on
        // these values (float32 arrays widened as numpy's tolist() and float() do).
        let expected = concat!(
            r#"{"site_name":"sas","beam":0,"cp":"stereoscan(153)","frang":180,"nave":22,"#,
            r#""freq":10500,"noise":27,"nrang":8,"rsep":45,"stid":5,"scan":0,"gflg":[0,1,0],"#,
            r#""v":[-2.277430534362793,7.722569465637207,17.722570419311523],"#,
            r#""time":"2026-12-03 13:05:07.250000","#,
            r#""elevation":[0.0,10.100000381469727,0.0,20.200000762939453,0.0,"#,
            r#"-3.299999952316284,0.0,0.0],"#,
            r#""power":[0.0,3.5,0.0,12.25,0.0,9.999999747378752e-06,0.0,0.0],"#,
            r#""velocity":[0.0,-2.277430534362793,0.0,7.722569465637207,0.0,"#,
            r#"17.722570419311523,0.0,0.0],"#,
            r#""width":[0.0,50.0,0.0,0.125,0.0,7.300000190734863,0.0,0.0],"#,
            r#""g_scatter":[0,0,0,1,0,0,0,0]}"#
        );
        let got = render(&record(&scalars(), &echo_arrays()));
        assert_eq!(got, expected);
        // The capture's visible prefix (COMPAT §10) is this payload's.
        assert!(got.starts_with(concat!(
            r#"{"site_name":"sas","beam":0,"cp":"stereoscan(153)","frang":180,"nave":22,"#,
            r#""freq":10500,"noise":27,"nrang":8,"rsep":45,"stid":5,"scan":0,"gflg":[0,1,0],"#,
            r#""v":[-2.277430534362793,7.722569465637207,17.722570419311523],"#,
            r#""time":"2026-12-03 13:05:07.250000","elevation":[0.0,10.100000381469727,"#
        )));
        assert!(got.ends_with(r#""g_scatter":[0,0,0,1,0,0,0,0]}"#));
    }

    #[test]
    fn packet_is_a_socketio_event_encoded_once() {
        let p = event_packet("sas", br#"{"a":1}"#);
        assert_eq!(&p[..], br#"42["sas",{"a":1}]"#);
        let p = event_packet("sas/echoes", b"{}");
        assert_eq!(&p[..], br#"42["sas/echoes",{}]"#);
        // python-socketio writes with ensure_ascii.
        let p = event_packet("caf\u{e9}\"", b"0");
        assert_eq!(&p[..], br#"42["caf\u00e9\"",0]"#);
    }

    #[test]
    fn site_name_is_escaped_as_python_writes_it() {
        let out = render_site("k\u{f6}d", &record(&scalars(), &[])).expect("renders");
        assert!(out.starts_with(br#"{"site_name":"k\u00f6d","beam":0,"#));
    }

    #[test]
    fn record_without_echoes_is_sent_zero_filled() {
        let got = render(&record(&scalars(), &[]));
        let zeros = "[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0]";
        assert_eq!(
            got,
            format!(
                concat!(
                    r#"{{"site_name":"sas","beam":0,"cp":"stereoscan(153)","frang":180,"#,
                    r#""nave":22,"freq":10500,"noise":27,"nrang":8,"rsep":45,"stid":5,"#,
                    r#""scan":0,"gflg":[],"v":[],"time":"2026-12-03 13:05:07.250000","#,
                    r#""elevation":{z},"power":{z},"velocity":{z},"width":{z},"#,
                    r#""g_scatter":[0,0,0,0,0,0,0,0]}}"#
                ),
                z = zeros
            )
        );
    }

    #[test]
    fn each_echo_array_is_optional_on_its_own() {
        // slist present, elv absent (RST leaves out the xcf arrays): zero elevations only.
        let arrays: Vec<_> = echo_arrays()
            .into_iter()
            .filter(|(n, _)| *n != "elv")
            .collect();
        let got = render(&record(&scalars(), &arrays));
        assert!(got.contains(r#""elevation":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0],"#));
        assert!(got.contains(r#""power":[0.0,3.5,0.0,12.25,"#));
        // No slist: nothing is scattered, the raw arrays are still sent.
        let arrays: Vec<_> = echo_arrays()
            .into_iter()
            .filter(|(n, _)| *n != "slist")
            .collect();
        let got = render(&record(&scalars(), &arrays));
        assert!(got.contains(r#""gflg":[0,1,0],"v":[-2.277430534362793,"#));
        assert!(got.contains(r#""g_scatter":[0,0,0,0,0,0,0,0]}"#));
    }

    #[test]
    fn negative_microseconds_are_zero() {
        let s = with(scalars(), "time.us", Value::I32(-1_500));
        assert!(render(&record(&s, &[])).contains(r#""time":"2026-12-03 13:05:07.000000","#));
        let s = with(scalars(), "time.us", Value::I32(0));
        assert!(render(&record(&s, &[])).contains(r#""time":"2026-12-03 13:05:07.000000","#));
        let s = with(scalars(), "time.us", Value::I32(7));
        assert!(render(&record(&s, &[])).contains(r#""time":"2026-12-03 13:05:07.000007","#));
    }

    #[test]
    fn times_datetime_refuses_are_missing_fields() {
        let cases = [
            ("time.us", Value::I32(1_000_000)),
            ("time.mo", Value::I16(13)),
            ("time.dy", Value::I16(0)),
            ("time.hr", Value::I16(24)),
            ("time.mt", Value::I16(60)),
            ("time.sc", Value::I16(60)),
            ("time.yr", Value::I16(0)),
            // datetime() takes no floats.
            ("time.sc", Value::F32(7.0)),
        ];
        for (field, v) in cases {
            let r = record(&with(scalars(), field, v.clone()), &[]);
            assert_eq!(render_site("sas", &r), Err(MissingField { field }), "{v:?}");
        }
        // 2026 is not a leap year; 2024 is.
        let s = with(
            with(scalars(), "time.mo", Value::I16(2)),
            "time.dy",
            Value::I16(29),
        );
        let r = record(&s, &[]);
        assert_eq!(
            render_site("sas", &r),
            Err(MissingField { field: "time.dy" })
        );
        let s = with(s, "time.yr", Value::I16(2024));
        assert!(render(&record(&s, &[])).contains(r#""time":"2024-02-29 13:05:07.250000","#));
        // strftime's %Y is not zero-padded below 1000 (CPython 3.11, glibc).
        let s = with(scalars(), "time.yr", Value::I16(999));
        assert!(render(&record(&s, &[])).contains(r#""time":"999-12-03 13:05:07.250000","#));
    }

    #[test]
    fn slist_out_of_range_is_skipped() {
        let arrays = vec![
            ("slist", i16s(&[-1, 8, 2, 300, 7])),
            ("gflg", i8s(&[1, 1, 1, 1, 1])),
            ("p_l", f32s(&[1.0, 2.0, 3.0, 4.0, 5.0])),
        ];
        let got = render(&record(&scalars(), &arrays));
        assert!(got.contains(r#""power":[0.0,0.0,3.0,0.0,0.0,0.0,0.0,5.0],"#));
        assert!(got.contains(r#""g_scatter":[0,0,1,0,0,0,0,1]}"#));
        // Raw arrays are untouched.
        assert!(got.contains(r#""gflg":[1,1,1,1,1],"v":[],"#));
    }

    #[test]
    fn zip_stops_at_the_shorter_array_and_duplicates_keep_the_last() {
        let arrays = vec![("slist", i16s(&[4, 4, 6])), ("v", f32s(&[1.5, 2.5]))];
        let got = render(&record(&scalars(), &arrays));
        assert!(got.contains(r#""velocity":[0.0,0.0,0.0,0.0,2.5,0.0,0.0,0.0],"#));
    }

    #[test]
    fn nrang_bounds() {
        let arrays = echo_arrays();
        let s = with(scalars(), "nrang", Value::I16(0));
        let got = render(&record(&s, &arrays));
        assert!(got.contains(r#""nrang":0,"#));
        assert!(
            got.contains(r#""elevation":[],"power":[],"velocity":[],"width":[],"g_scatter":[]}"#)
        );
        // [0.0] * -3 is [] in Python; nrang is written as it is.
        let s = with(scalars(), "nrang", Value::I32(-3));
        let got = render(&record(&s, &[]));
        assert!(got.contains(r#""nrang":-3,"#) && got.ends_with(r#""g_scatter":[]}"#));
        let s = with(scalars(), "nrang", Value::I32(32_768));
        let r = record(&s, &arrays);
        assert_eq!(render_site("sas", &r), Err(MissingField { field: "nrang" }));
        let s = with(scalars(), "nrang", Value::F32(8.0));
        let r = record(&s, &arrays);
        assert_eq!(render_site("sas", &r), Err(MissingField { field: "nrang" }));
    }

    #[test]
    fn missing_scalars_are_reported_by_name() {
        for field in [
            "nrang",
            "bmnum",
            "cp",
            "frang",
            "nave",
            "tfreq",
            "noise.sky",
            "rsep",
            "stid",
            "scan",
            "time.us",
            "time.yr",
            "time.mo",
            "time.dy",
            "time.hr",
            "time.mt",
            "time.sc",
        ] {
            let s: Vec<_> = scalars().into_iter().filter(|(n, _)| *n != field).collect();
            let r = record(&s, &echo_arrays());
            assert_eq!(render_site("sas", &r), Err(MissingField { field }));
        }
        let r = record(&[], &[]);
        assert_eq!(render_site("sas", &r), Err(MissingField { field: "nrang" }));
    }

    #[test]
    fn int_fields_truncate_as_python_int_does() {
        let s = with(scalars(), "noise.sky", Value::F32(-0.7));
        assert!(render(&record(&s, &[])).contains(r#""noise":0,"#));
        let s = with(scalars(), "noise.sky", Value::F64(1e6 + 0.99));
        assert!(render(&record(&s, &[])).contains(r#""noise":1000000,"#));
        let s = with(scalars(), "bmnum", Value::F32(15.9));
        assert!(render(&record(&s, &[])).contains(r#""beam":15,"#));
        for bad in [
            Value::F32(f32::NAN),
            Value::F64(f64::INFINITY),
            Value::Str(b"27".to_vec()),
        ] {
            let r = record(&with(scalars(), "noise.sky", bad), &[]);
            assert_eq!(
                render_site("sas", &r),
                Err(MissingField { field: "noise.sky" })
            );
        }
    }

    #[test]
    fn cp_names_and_the_unknown_fallback() {
        let cp = |v: Value| render(&record(&with(scalars(), "cp", v), &[]));
        assert!(cp(Value::I16(-26401)).contains(r#""cp":"stereoscan(-26401)","#));
        assert!(cp(Value::I16(150)).contains(r#""cp":"normalscan(150)","#));
        assert!(cp(Value::I16(999)).contains(r#""cp":"unknown(999)","#));
        assert!(cp(Value::I16(-1)).contains(r#""cp":"unknown(-1)","#));
    }

    #[test]
    fn float_edge_cases_in_gate_arrays() {
        let arrays = vec![
            ("slist", i16s(&[0, 1, 2, 3, 4, 5, 6])),
            (
                "v",
                vec![
                    Value::F32(0.0),
                    Value::F32(-0.0),
                    Value::F32(-2.277_430_5),
                    Value::F64(1e-05),
                    Value::F64(1e16),
                    Value::F32(f32::MAX),
                    Value::I16(3),
                ],
            ),
        ];
        let got = render(&record(&scalars(), &arrays));
        assert!(got.contains(
            r#""v":[0.0,-0.0,-2.277430534362793,1e-05,1e+16,3.4028234663852886e+38,3],"#
        ));
        // float() of an int element is a float.
        assert!(got.contains(concat!(
            r#""velocity":[0.0,-0.0,-2.277430534362793,1e-05,1e+16,"#,
            r#"3.4028234663852886e+38,3.0,0.0],"#,
        )));
        // Non-finite floats: json.dumps writes them (allow_nan), as the original did.
        let arrays = vec![
            ("slist", i16s(&[0, 1])),
            ("v", f32s(&[f32::NAN, f32::NEG_INFINITY])),
        ];
        let got = render(&record(&scalars(), &arrays));
        assert!(got.contains(r#""v":[NaN,-Infinity],"#));
        assert!(got.contains(r#""velocity":[NaN,-Infinity,0.0,"#));
    }
}
