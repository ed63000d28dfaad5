//! SuperDARN echo counts (COMPAT §5.2, §5.3 and §10, D2 and D6): the `<site>/echoes` event
//! sent at each scan start, and the bodies of the `/echoes` HTTP API that serves the stored
//! counts.
//!
//! The original is `vtsuperdarn/superdarn-realtime-data`: `app/data_processing/process_echoes.py`
//! (`write_echo_counts`, `get_num_echoes`, `get_echo_counts`), `app/socket_server.py`
//! (`send_and_write_echo_counts`), `app/routes.py` (`echoes`, `convert_echo_counts_to_csv`) and
//! `app/models.py` (`EchoCounts.to_dict`). What it does, and so what this does:
//!
//! - Each record adds its counts to the site's buffer: total `len(gflg)`, ionospheric
//!   `gflg.count(0)`, ground scatter `gflg.count(1)` (other flag values count in the total only).
//! - A record with `scan == 1` (a scan start) is added first, then the averages
//!   `int(sum / records)` are emitted and stored, and the buffer is emptied: that record counts
//!   in the scan it closes, not in the next one.
//! - The event is `{"total_echoes":…,"ionospheric_echoes":…,"ground_scatter_echoes":…,
//!   "timestamp":"<UTC isoformat>"}`, compact, in that order; `isoformat()` of an aware UTC
//!   datetime, which leaves out `.ffffff` when the microsecond is 0.
//! - `/echoes` answers with Flask's JSON provider: compact, keys sorted, then a newline. The
//!   columns are the stored rows (the caller orders them by time), timestamps as the naive
//!   `isoformat()` that SQLite gave back (no offset). `save=true` gives CSV from Python's
//!   `csv.writer` (CRLF line ends).
//!
//! One difference, on purpose (issue 12): a record without `gflg` (no echoes) counts as a
//! record with 0 echoes. The original's KeyError skipped it entirely, so a scan start without
//! echoes emitted nothing and its record was left out of the average.
//!
//! Thread: pure, any thread (the counter belongs to the radar feed that owns its site).

use std::fmt::Write;
use std::time::SystemTime;

use super::utc::Civil;
use crate::source::radar::dmap::Record;

/// One site's echo counts since the previous scan start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoCounter {
    /// Sum of the buffered records' `len(gflg)`.
    total: u64,
    /// Sum of their `gflg == 0` counts.
    ionospheric: u64,
    /// Sum of their `gflg == 1` counts.
    ground: u64,
    /// How many records are buffered.
    records: u64,
}

/// The averaged counts of one scan, stamped with the time they were computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echoes {
    /// Average echoes per record.
    pub total_echoes: u64,
    /// Average ionospheric echoes (`gflg == 0`) per record.
    pub ionospheric_echoes: u64,
    /// Average ground scatter echoes (`gflg == 1`) per record.
    pub ground_scatter_echoes: u64,
    /// When the scan start arrived (UTC wall clock).
    pub timestamp: SystemTime,
}

impl EchoCounter {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `record`'s counts; on a scan start (`scan == 1`) returns the averages over the
    /// buffered records, that one included, stamped `now_utc`, and empties the buffer.
    pub fn handle_record(&mut self, record: &Record, now_utc: SystemTime) -> Option<Echoes> {
        let flags = record.array("gflg").map_or(&[][..], |a| &a.values[..]);
        let count = |flag: f64| flags.iter().filter(|v| v.as_f64() == Some(flag)).count();
        self.total = self.total.saturating_add(as_u64(flags.len()));
        self.ionospheric = self.ionospheric.saturating_add(as_u64(count(0.0)));
        self.ground = self.ground.saturating_add(as_u64(count(1.0)));
        self.records = self.records.saturating_add(1);
        // Python's `scan == 1` is true for 1 and 1.0 alike.
        if record.scalar("scan").and_then(|v| v.as_f64()) != Some(1.0) {
            return None;
        }
        // `records` is at least 1 here. Integer division is `int(sum / records)` for counts
        // far below 2^52, where the float quotient cannot round up to the next integer.
        let records = self.records.max(1);
        let echoes = Echoes {
            total_echoes: self.total / records,
            ionospheric_echoes: self.ionospheric / records,
            ground_scatter_echoes: self.ground / records,
            timestamp: now_utc,
        };
        *self = Self::default();
        Some(echoes)
    }
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The event name of a site's echo counts: `<site>/echoes`.
pub fn event_name(site: &str) -> String {
    format!("{site}/echoes")
}

impl Echoes {
    /// The `<site>/echoes` payload, e.g. `{"total_echoes":3,"ionospheric_echoes":2,
    /// "ground_scatter_echoes":1,"timestamp":"2026-12-03T13:56:16.790680+00:00"}`.
    pub fn render_event(&self) -> Vec<u8> {
        let mut s = String::with_capacity(128);
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            concat!(
                r#"{{"total_echoes":{},"ionospheric_echoes":{},"#,
                r#""ground_scatter_echoes":{},"timestamp":""#
            ),
            self.total_echoes, self.ionospheric_echoes, self.ground_scatter_echoes
        );
        Civil::from_system_time(self.timestamp).write_iso(&mut s);
        s.push_str("+00:00\"}");
        s.into_bytes()
    }
}

/// The `/echoes` JSON body for stored rows (non-empty; see [`EchoesError::NoEchoes`]), in the
/// caller's order: `{"ground_scatter_echoes":[…],"ionospheric_echoes":[…],"timestamp":[…],
/// "total_echoes":[…]}` and a newline.
pub fn render_json(rows: &[Echoes]) -> Vec<u8> {
    let mut s = String::with_capacity(64 + rows.len() * 48);
    let ints = |s: &mut String, name: &str, f: fn(&Echoes) -> u64| {
        let _ = write!(s, "\"{name}\":[");
        for (i, row) in rows.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(s, "{sep}{}", f(row));
        }
        s.push(']');
    };
    s.push('{');
    ints(&mut s, "ground_scatter_echoes", |r| r.ground_scatter_echoes);
    s.push(',');
    ints(&mut s, "ionospheric_echoes", |r| r.ionospheric_echoes);
    s.push_str(",\"timestamp\":[");
    for (i, row) in rows.iter().enumerate() {
        s.push_str(if i > 0 { ",\"" } else { "\"" });
        Civil::from_system_time(row.timestamp).write_iso(&mut s);
        s.push('"');
    }
    s.push_str("],");
    ints(&mut s, "total_echoes", |r| r.total_echoes);
    s.push_str("}\n");
    s.into_bytes()
}

/// `Content-Type` of the CSV download (`save=true`), exactly as the original set it.
pub const CSV_CONTENT_TYPE: &str = "text/csv";
/// `Content-Disposition` of the CSV download.
pub const CSV_CONTENT_DISPOSITION: &str = "attachment; filename=my_data.csv";
/// `Content-Type` of every JSON body here (Flask's provider).
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The `/echoes?save=true` body: a header row, then one row per stored count, CRLF ends.
pub fn render_csv(rows: &[Echoes]) -> Vec<u8> {
    let mut s = String::with_capacity(64 + rows.len() * 40);
    s.push_str("timestamp,total_echoes,ionospheric_echoes,ground_scatter_echoes\r\n");
    for row in rows {
        Civil::from_system_time(row.timestamp).write_iso(&mut s);
        let _ = write!(
            s,
            ",{},{},{}\r\n",
            row.total_echoes, row.ionospheric_echoes, row.ground_scatter_echoes
        );
    }
    s.into_bytes()
}

/// Why `/echoes` answers with an error: the client's fault (400) or no data (404). The store's
/// own failures (503, 500) are answered by [`crate::http::echoes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoesError {
    /// No `site_name` parameter, or an empty one: 400.
    MissingSiteName,
    /// `start` or `end` that dateutil could not parse: 400.
    InvalidDateFormat,
    /// `start` not before `end`: 400.
    InvalidDateRange,
    /// No stored counts in the window: 404.
    NoEchoes,
    /// More stored counts in the window than one answer carries
    /// ([`crate::store::echoes::MAX_QUERY_ROWS`]): 400. Ours: the original answered them all,
    /// however many.
    TooManyEchoes,
}

impl EchoesError {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            EchoesError::NoEchoes => 404,
            _ => 400,
        }
    }

    /// The JSON body, as Flask's `jsonify` writes it (newline included).
    pub fn body(self) -> &'static [u8] {
        match self {
            EchoesError::MissingSiteName => {
                b"{\"message\":\"Missing required parameter: site_name\"}\n"
            }
            EchoesError::InvalidDateFormat => {
                b"{\"message\":\"Invalid date format. Please use ISO format.\"}\n"
            }
            EchoesError::InvalidDateRange => {
                b"{\"message\":\"Invalid date range. Start time must be before end time.\"}\n"
            }
            EchoesError::NoEchoes => {
                b"{\"message\":\"No echoes found for the specified date range.\"}\n"
            }
            EchoesError::TooManyEchoes => {
                b"{\"message\":\"Too many echoes in the specified date range. \
                  Please use a shorter range.\"}\n"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::superdarn::tests::{f32s, i8s, record};
    use crate::source::radar::dmap::Value;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-12-03T13:56:16.790680Z, the capture's timestamp.
    fn at(micros_after: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(1_796_306_176_790_680 + micros_after)
    }

    fn rec(scan: i16, gflg: Option<&[i8]>) -> Record {
        let arrays = gflg.map(|g| vec![("gflg", i8s(g))]).unwrap_or_default();
        record(&[("scan", Value::I16(scan))], &arrays)
    }

    fn counts(e: Option<Echoes>) -> Option<(u64, u64, u64)> {
        e.map(|e| {
            (
                e.total_echoes,
                e.ionospheric_echoes,
                e.ground_scatter_echoes,
            )
        })
    }

    #[test]
    fn scan_start_averages_include_it_and_reset() {
        let mut c = EchoCounter::new();
        assert_eq!(c.handle_record(&rec(0, Some(&[0, 1, 0])), at(0)), None);
        assert_eq!(
            c.handle_record(&rec(0, Some(&[0, 0, 0, 0, 1])), at(1)),
            None
        );
        // Sums 9, 6, 3 over 3 records.
        let e = c.handle_record(&rec(1, Some(&[1])), at(2));
        assert_eq!(counts(e), Some((3, 2, 1)));
        assert_eq!(e.map(|e| e.timestamp), Some(at(2)));
        // The scan-start record is not carried into the next scan.
        let e = c.handle_record(&rec(1, Some(&[0, 0])), at(3));
        assert_eq!(counts(e), Some((2, 2, 0)));
    }

    #[test]
    fn averages_truncate_as_int_of_the_quotient() {
        let mut c = EchoCounter::new();
        c.handle_record(&rec(0, Some(&[0, 0, 0, 1])), at(0));
        c.handle_record(&rec(0, Some(&[0, 1])), at(0));
        // Sums 7, 4, 2 (a flag of 2 counts in the total only) over 3 records.
        let e = c.handle_record(&rec(1, Some(&[2])), at(0));
        assert_eq!(counts(e), Some((2, 1, 0)));
    }

    #[test]
    fn record_without_echoes_counts_as_zero() {
        let mut c = EchoCounter::new();
        c.handle_record(&rec(0, Some(&[0, 1, 0])), at(0));
        // No gflg: one more record with 0 echoes; sums 3, 2, 1 over 2 records.
        let e = c.handle_record(&rec(1, None), at(0));
        assert_eq!(counts(e), Some((1, 1, 0)));
        // A scan start without echoes on its own still emits.
        assert_eq!(
            counts(c.handle_record(&rec(1, None), at(0))),
            Some((0, 0, 0))
        );
    }

    #[test]
    fn scan_is_compared_as_python_compares_it() {
        let mut c = EchoCounter::new();
        let float_one = record(&[("scan", Value::F32(1.0))], &[("gflg", i8s(&[0]))]);
        assert_eq!(counts(c.handle_record(&float_one, at(0))), Some((1, 1, 0)));
        for scan in [
            Value::I16(0),
            Value::I16(2),
            Value::I16(-1),
            Value::F32(1.5),
        ] {
            let r = record(&[("scan", scan)], &[("gflg", i8s(&[0]))]);
            assert_eq!(c.handle_record(&r, at(0)), None);
        }
        assert_eq!(c.handle_record(&record(&[], &[]), at(0)), None);
        // Float flags equal to 0 and 1 count as they would in list.count().
        let r = record(
            &[("scan", Value::I16(1))],
            &[("gflg", f32s(&[0.0, 1.0, 0.5]))],
        );
        // Since the reset: four records of [0], one without gflg, this one: sums 7, 5, 1 over 6.
        assert_eq!(counts(c.handle_record(&r, at(0))), Some((1, 0, 0)));
    }

    #[test]
    fn event_payload_matches_the_capture() {
        let e = Echoes {
            total_echoes: 3,
            ionospheric_echoes: 2,
            ground_scatter_echoes: 1,
            timestamp: at(0),
        };
        assert_eq!(
            String::from_utf8(e.render_event()).expect("ASCII"),
            concat!(
                r#"{"total_echoes":3,"ionospheric_echoes":2,"ground_scatter_echoes":1,"#,
                r#""timestamp":"2026-12-03T13:56:16.790680+00:00"}"#
            )
        );
        assert_eq!(event_name("sas"), "sas/echoes");
    }

    #[test]
    fn event_timestamp_omits_zero_microseconds() {
        let e = Echoes {
            total_echoes: 0,
            ionospheric_echoes: 0,
            ground_scatter_echoes: 0,
            timestamp: UNIX_EPOCH + Duration::from_secs(1_796_306_176),
        };
        let body = String::from_utf8(e.render_event()).expect("ASCII");
        assert!(
            body.ends_with(r#""timestamp":"2026-12-03T13:56:16+00:00"}"#),
            "{body}"
        );
    }

    fn rows() -> Vec<Echoes> {
        vec![
            Echoes {
                total_echoes: 3,
                ionospheric_echoes: 2,
                ground_scatter_echoes: 1,
                timestamp: at(0),
            },
            Echoes {
                total_echoes: 40,
                ionospheric_echoes: 30,
                ground_scatter_echoes: 10,
                timestamp: UNIX_EPOCH + Duration::from_secs(1_796_306_236),
            },
        ]
    }

    #[test]
    fn echoes_json_is_flask_jsonify_of_the_columns() {
        assert_eq!(
            String::from_utf8(render_json(&rows())).expect("ASCII"),
            concat!(
                r#"{"ground_scatter_echoes":[1,10],"ionospheric_echoes":[2,30],"#,
                r#""timestamp":["2026-12-03T13:56:16.790680","2026-12-03T13:57:16"],"#,
                r#""total_echoes":[3,40]}"#,
                "\n"
            )
        );
        assert_eq!(
            render_json(&[]),
            concat!(
                r#"{"ground_scatter_echoes":[],"ionospheric_echoes":[],"timestamp":[],"#,
                r#""total_echoes":[]}"#,
                "\n"
            )
            .as_bytes()
        );
    }

    #[test]
    fn echoes_csv_is_python_csv_writer() {
        assert_eq!(
            String::from_utf8(render_csv(&rows())).expect("ASCII"),
            concat!(
                "timestamp,total_echoes,ionospheric_echoes,ground_scatter_echoes\r\n",
                "2026-12-03T13:56:16.790680,3,2,1\r\n",
                "2026-12-03T13:57:16,40,30,10\r\n"
            )
        );
        assert_eq!(CSV_CONTENT_TYPE, "text/csv");
        assert_eq!(CSV_CONTENT_DISPOSITION, "attachment; filename=my_data.csv");
    }

    #[test]
    fn error_bodies() {
        assert_eq!(EchoesError::MissingSiteName.status(), 400);
        assert_eq!(
            EchoesError::MissingSiteName.body(),
            b"{\"message\":\"Missing required parameter: site_name\"}\n"
        );
        assert_eq!(EchoesError::NoEchoes.status(), 404);
        assert_eq!(
            EchoesError::NoEchoes.body(),
            b"{\"message\":\"No echoes found for the specified date range.\"}\n"
        );
        assert_eq!(EchoesError::InvalidDateFormat.status(), 400);
        assert_eq!(EchoesError::InvalidDateRange.status(), 400);
        assert_eq!(EchoesError::TooManyEchoes.status(), 400);
        for e in [
            EchoesError::InvalidDateFormat,
            EchoesError::InvalidDateRange,
            EchoesError::TooManyEchoes,
        ] {
            let v: serde_json::Value = serde_json::from_slice(e.body()).expect("JSON");
            assert!(v["message"].is_string());
        }
    }
}
