//! `GET /echoes` of the SuperDARN profile (COMPAT §5.3 and §10, D6): the stored echo counts of
//! one site over a time window, as the original Flask app answered (`app/routes.py`,
//! `echoes`).
//!
//! Thread: the shard's connection task calls [`respond`]; the rows come from the echo store's
//! own thread ([`crate::store::echoes`]) through a bounded queue, so a shard never touches
//! SQLite. [`respond`] queues the query before it returns and its future borrows nothing, so
//! the caller may take the handle out of a `shard.borrow()` in the same `let`.
//!
//! What the original does, and so what this does:
//! - `site_name` (required; empty counts as missing: 400), `start`, `end` (ISO 8601, optional;
//!   empty counts as missing), `save` (`true` in any case gives CSV). The first value of a
//!   repeated parameter counts; values are percent-decoded, `+` as a space (so an offset's
//!   `+` must be sent as `%2B`).
//! - Errors in this order: no `site_name`, then a `start` or `end` that is not a date-time,
//!   then `start >= end` when both are given: 400 with the original's `{"message":…}` bodies.
//! - Without `end` the window ends now; without `start` it starts 24 h before its end. With
//!   only `start`, a `start` after now is no error: the window is empty (404).
//! - Rows with `start <= timestamp <= end`, in time order; none is 404; JSON by columns
//!   (`render_json`), or with `save=true` CSV (`render_csv`) with `Content-Type: text/csv` and
//!   `Content-Disposition: attachment; filename=my_data.csv`.
//!
//! Where this differs, on purpose:
//! - Dates are the ISO 8601 subset of [`parse_iso`]; `dateutil`'s free-form inputs answer 400.
//! - A date with an offset is converted to UTC, and one without is UTC. The original compared
//!   the wall-clock digits with the stored UTC ones, ignoring the offset, and answered 500 when
//!   one of `start` and `end` had an offset and the other had none.
//! - More than [`MAX_QUERY_ROWS`] rows in the window answers 400
//!   ([`EchoesError::TooManyEchoes`]); the original answered them all.
//! - A full store queue answers 503, and a stopped or failed store 500, both in the original's
//!   500 shape: `{"error":"<cause>","message":"Error fetching echo counts."}`.
//!
//! [`parse_iso`]: crate::profile::superdarn::utc::parse_iso
//! [`MAX_QUERY_ROWS`]: crate::store::echoes::MAX_QUERY_ROWS

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{query_param, response, response_with};
use crate::profile::superdarn::echoes::{
    CSV_CONTENT_DISPOSITION, CSV_CONTENT_TYPE, EchoesError, JSON_CONTENT_TYPE, render_csv,
    render_json,
};
use crate::profile::superdarn::utc::{parse_iso, system_time_from_micros};
use crate::store::echoes::{EchoStoreError, EchoesHandle, Window};

/// The default window: the 24 hours before its end, in microseconds.
const DEFAULT_WINDOW_MICROS: i64 = 24 * 3_600 * 1_000_000;

/// `Retry-After` of a 503, in seconds: the store's queue drains in well under a second.
const RETRY_AFTER: &str = "1";

/// True for the one path the original serves: `/echoes` (Flask's `/echoes/` is a 404).
pub fn is_echoes_path(path: &str) -> bool {
    path == "/echoes"
}

/// The complete HTTP/1.1 response (status line, headers, body) to `GET /echoes?<query>`, with
/// `query` the raw query string without `?` (`None` when the target has none) and `now` the
/// wall clock (the default window ends then). The query is sent to the store before this
/// returns; the future only awaits its answer, so it holds no borrow. `HEAD` callers strip
/// the body with [`super::head_only`].
pub fn respond(
    store: &EchoesHandle,
    query: Option<&str>,
    now: SystemTime,
    keep_alive: bool,
) -> impl Future<Output = Bytes> + 'static {
    let asked = parse_query(query.unwrap_or(""), now)
        .map(|q| (q.save, store.query(&q.site, q.start, q.end)));
    async move {
        let (save, pending) = match asked {
            Ok(asked) => asked,
            Err(e) => return refused(e, keep_alive),
        };
        let answer = match pending {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(Window::Rows(rows)) if rows.is_empty() => refused(EchoesError::NoEchoes, keep_alive),
            Ok(Window::Rows(rows)) if save => response_with(
                200,
                CSV_CONTENT_TYPE,
                &[("content-disposition", CSV_CONTENT_DISPOSITION.as_bytes())],
                &render_csv(&rows),
                keep_alive,
            ),
            Ok(Window::Rows(rows)) => {
                response(200, JSON_CONTENT_TYPE, &render_json(&rows), keep_alive)
            }
            Ok(Window::TooMany) => refused(EchoesError::TooManyEchoes, keep_alive),
            Err(e) => store_failed(e, keep_alive),
        }
    }
}

/// A request, parsed: which rows to read and how to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EchoesQuery {
    /// `site_name`, non-empty.
    site: String,
    /// The window's first instant (included).
    start: SystemTime,
    /// The window's last instant (included).
    end: SystemTime,
    /// `save=true`: answer CSV.
    save: bool,
}

/// Reads the parameters as the original did, or the 400 it answered.
fn parse_query(query: &str, now: SystemTime) -> Result<EchoesQuery, EchoesError> {
    let param = |name| query_param(query, name).filter(|v| !v.is_empty());
    let site = param("site_name").ok_or(EchoesError::MissingSiteName)?;
    let date = |name| {
        param(name)
            .map(|v| parse_iso(&v).ok_or(EchoesError::InvalidDateFormat))
            .transpose()
    };
    let start = date("start")?;
    let end = date("end")?;
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        return Err(EchoesError::InvalidDateRange);
    }
    let end = end.unwrap_or_else(|| unix_micros(now));
    let start = start.unwrap_or(end.saturating_sub(DEFAULT_WINDOW_MICROS));
    let save = param("save").is_some_and(|v| v.to_lowercase() == "true");
    Ok(EchoesQuery {
        site: site.into_owned(),
        start: system_time_from_micros(start),
        end: system_time_from_micros(end),
        save,
    })
}

/// `t` in microseconds since the epoch (negative before).
fn unix_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

/// A 400 or 404 with the original's body.
fn refused(e: EchoesError, keep_alive: bool) -> Bytes {
    response(e.status(), JSON_CONTENT_TYPE, e.body(), keep_alive)
}

/// 503 for a full queue (with `Retry-After`), 500 for a stopped or failed store; the body
/// names the cause in the shape of the original's 500.
fn store_failed(e: EchoStoreError, keep_alive: bool) -> Bytes {
    let mut body = b"{\"error\":".to_vec();
    crate::protocol::write_json_string(&mut body, e.to_string().as_bytes());
    body.extend_from_slice(b",\"message\":\"Error fetching echo counts.\"}\n");
    match e {
        EchoStoreError::Busy => response_with(
            503,
            JSON_CONTENT_TYPE,
            &[("retry-after", RETRY_AFTER.as_bytes())],
            &body,
            keep_alive,
        ),
        EchoStoreError::Stopped | EchoStoreError::Failed => {
            response(500, JSON_CONTENT_TYPE, &body, keep_alive)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::profile::superdarn::echoes::Echoes;
    use crate::store::echoes::{EchoStore, unserved};
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    /// 2026-12-03T13:56:16Z, "now" in these tests.
    const NOW: u64 = 1_796_306_176;
    const HOUR: u64 = 3_600;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn row(total: u64, timestamp: SystemTime) -> Echoes {
        Echoes {
            total_echoes: total,
            ionospheric_echoes: total / 2,
            ground_scatter_echoes: total / 4,
            timestamp,
        }
    }

    /// A store thread on a fresh file holding `rows` for site `sas`; removed on drop.
    struct Fixture {
        store: Option<EchoesHandle>,
        thread: Option<std::thread::JoinHandle<()>>,
        dir: PathBuf,
    }

    impl Fixture {
        fn new(name: &str, rows: &[Echoes]) -> Fixture {
            let dir = std::env::temp_dir().join(format!(
                "ringcast-http-echoes-{name}-{}-{:?}",
                std::process::id(),
                SystemTime::now()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let db = EchoStore::open(&dir.join("database.sqlite")).expect("open");
            let metrics = Arc::new(Metrics::new(1));
            let (store, thread) = db.start(None, metrics).expect("thread");
            for r in rows {
                store.record("sas", r);
            }
            Fixture {
                store: Some(store),
                thread: Some(thread),
                dir,
            }
        }

        fn get(&self, query: Option<&str>) -> String {
            let store = self.store.as_ref().expect("running");
            let answer = respond(store, query, at(NOW), true);
            String::from_utf8(block_on(answer).to_vec()).expect("UTF-8")
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            drop(self.store.take());
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// The full response the original's status and body give here.
    fn expected(status: &str, content_type: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             connection: keep-alive\r\ncache-control: no-store\r\n{extra}\r\n{body}",
            body.len()
        )
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    /// Rows an hour apart around now: 25 h ago, 23 h ago, 1 h ago, now, and 1 h ahead.
    fn day() -> Vec<Echoes> {
        vec![
            row(1, at(NOW - 25 * HOUR)),
            row(2, at(NOW - 23 * HOUR)),
            row(3, at(NOW - HOUR)),
            row(4, at(NOW)),
            row(5, at(NOW + HOUR)),
        ]
    }

    fn totals(response: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(body(response)).expect("JSON");
        v["total_echoes"].to_string()
    }

    #[test]
    fn only_echoes_is_the_path() {
        assert!(is_echoes_path("/echoes"));
        assert!(!is_echoes_path("/echoes/"));
        assert!(!is_echoes_path("/Echoes"));
        assert!(!is_echoes_path("/echoes/sas"));
    }

    #[test]
    fn default_window_is_the_last_24_hours_as_json() {
        let f = Fixture::new("default", &day());
        let got = f.get(Some("site_name=sas"));
        let json = concat!(
            r#"{"ground_scatter_echoes":[0,0,1],"ionospheric_echoes":[1,1,2],"#,
            r#""timestamp":["2026-12-02T14:56:16","2026-12-03T12:56:16","2026-12-03T13:56:16"],"#,
            r#""total_echoes":[2,3,4]}"#,
            "\n"
        );
        assert_eq!(got, expected("200 OK", "application/json", "", json));
    }

    #[test]
    fn start_and_end_bound_the_window_either_alone() {
        let f = Fixture::new("bounds", &day());
        let both = f.get(Some(
            "site_name=sas&start=2026-12-02T14:56:16Z&end=2026-12-03T12:56:16%2B00:00",
        ));
        assert_eq!(totals(&both), "[2,3]", "both bounds included");
        // Only start: up to now.
        let start = f.get(Some("site_name=sas&start=2026-12-01"));
        assert_eq!(totals(&start), "[1,2,3,4]");
        // Only end: the 24 hours before it.
        let end = f.get(Some("site_name=sas&end=2026-12-03T15:00:00"));
        assert_eq!(totals(&end), "[3,4,5]");
        // An offset is converted to UTC: 14:56:16+01:00 is 13:56:16Z.
        let offset = f.get(Some("site_name=sas&start=2026-12-03T14:56:16%2B01:00"));
        assert_eq!(totals(&offset), "[4]");
        // Empty parameters count as missing; the first of a repeated one counts.
        let empty = f.get(Some("site_name=sas&start=&end=&site_name=kod"));
        assert_eq!(totals(&empty), "[2,3,4]");
    }

    #[test]
    fn save_true_answers_the_csv_attachment() {
        let f = Fixture::new("csv", &day());
        let csv = concat!(
            "timestamp,total_echoes,ionospheric_echoes,ground_scatter_echoes\r\n",
            "2026-12-02T14:56:16,2,1,0\r\n",
            "2026-12-03T12:56:16,3,1,0\r\n",
            "2026-12-03T13:56:16,4,2,1\r\n"
        );
        let want = expected(
            "200 OK",
            "text/csv",
            "content-disposition: attachment; filename=my_data.csv\r\n",
            csv,
        );
        assert_eq!(f.get(Some("site_name=sas&save=true")), want);
        assert_eq!(f.get(Some("save=TRUE&site_name=sas")), want);
        let json = f.get(Some("site_name=sas&save=1"));
        assert!(
            json.contains("content-type: application/json\r\n"),
            "{json}"
        );
    }

    #[test]
    fn bad_requests_get_the_originals_400s_in_its_order() {
        let f = Fixture::new("400", &day());
        let cases = [
            (None, EchoesError::MissingSiteName),
            (Some(""), EchoesError::MissingSiteName),
            (Some("site_name="), EchoesError::MissingSiteName),
            (Some("start=yesterday"), EchoesError::MissingSiteName),
            (
                Some("site_name=sas&start=yesterday"),
                EchoesError::InvalidDateFormat,
            ),
            (
                Some("site_name=sas&end=2026-02-30"),
                EchoesError::InvalidDateFormat,
            ),
            (
                Some("site_name=sas&start=2026-12-03T10:00:00+02:00"),
                EchoesError::InvalidDateFormat,
            ),
            (
                Some("site_name=sas&start=nope&end=2026-12-01&start=2026-12-02"),
                EchoesError::InvalidDateFormat,
            ),
            (
                Some("site_name=sas&start=2026-12-03&end=2026-12-02"),
                EchoesError::InvalidDateRange,
            ),
            (
                Some("site_name=sas&start=2026-12-03T10:00Z&end=2026-12-03T11:00%2B01:00"),
                EchoesError::InvalidDateRange,
            ),
        ];
        for (query, error) in cases {
            let body = std::str::from_utf8(error.body()).expect("ASCII");
            let want = expected("400 Bad Request", "application/json", "", body);
            assert_eq!(f.get(query), want, "{query:?}");
        }
    }

    #[test]
    fn an_empty_window_is_404() {
        let f = Fixture::new("404", &day());
        let body = std::str::from_utf8(EchoesError::NoEchoes.body()).expect("ASCII");
        let want = expected("404 Not Found", "application/json", "", body);
        assert_eq!(f.get(Some("site_name=kod")), want, "another site");
        assert_eq!(
            f.get(Some("site_name=sas&start=2027-01-01")),
            want,
            "future"
        );
        assert_eq!(
            f.get(Some("site_name=sas&start=2026-12-01&end=2026-12-01T01:00")),
            want
        );
    }

    #[test]
    fn a_full_store_is_503_and_a_stopped_one_500_naming_the_cause() {
        let metrics = Arc::new(Metrics::new(1));
        let (store, rx) = unserved(1, metrics.clone());
        drop(store.query("sas", at(0), at(1)));
        let got = block_on(respond(&store, Some("site_name=sas"), at(NOW), false));
        let body = concat!(
            r#"{"error":"the echo store is busy","message":"Error fetching echo counts."}"#,
            "\n"
        );
        let want = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\ncache-control: no-store\r\n\
             retry-after: 1\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8_lossy(&got), want);
        assert_eq!(metrics.echoes.busy.get(), 1);
        drop(rx);
        let got = block_on(respond(&store, Some("site_name=sas"), at(NOW), true));
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{got}"
        );
        assert!(got.ends_with(concat!(
            r#"{"error":"the echo store has stopped","message":"Error fetching echo counts."}"#,
            "\n"
        )));
        let failed = store_failed(EchoStoreError::Failed, true);
        assert!(failed.starts_with(b"HTTP/1.1 500 "));
    }

    #[test]
    fn the_future_borrows_nothing_and_the_query_is_sent_at_once() {
        let (store, rx) = unserved(4, Arc::new(Metrics::new(1)));
        let answer = respond(&store, Some("site_name=sas"), at(NOW), true);
        drop(store);
        assert_eq!(rx.len(), 1, "queued before the first poll");
        drop(rx);
        let got = block_on(answer);
        assert!(got.starts_with(b"HTTP/1.1 500 "));
    }
}
