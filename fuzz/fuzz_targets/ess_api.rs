//! Arbitrary bytes as a request to a Squonk2 ESS route: its `stream_from_*` query parameters
//! (`profile::squonk2::StreamFrom`, validated before the accept, resolved after it, and
//! `parse_datetime_ms`), and the ESS HTTP API (`http::ess_api::parse` and the response it
//! renders). The bytes are parsed as a request head by `http::parse` when they are one (the
//! rest is the body), else taken as a query string. Nothing may panic; a rendered response is
//! one well-formed head (no request bytes break a header line) with the right content-length;
//! a datetime that parses formats back to the same instant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::http::ess_api::{self, ApiRequest, MAX_BODY_BYTES};
use ringcast::http::{self, MAX_HEADERS};
use ringcast::profile::squonk2::{StreamFrom, parse_datetime_ms};

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match http::parse(data, &mut headers) {
        Ok(Some(req)) => {
            let param = |name| req.query_param(name).map(|v| v.into_owned());
            stream_from(
                param("stream_from_ordinal").as_deref(),
                param("stream_from_timestamp").as_deref(),
                param("stream_from_datetime").as_deref(),
            );
            let body = &data[req.head_len..];
            api(&ApiRequest {
                method: req.method,
                path: req.path,
                query: req.query,
                host: req.header("host"),
                body: &body[..body.len().min(MAX_BODY_BYTES)],
            });
        }
        _ => {
            let query = String::from_utf8_lossy(data);
            let param = |name| http::query_param(&query, name).map(|v| v.into_owned());
            stream_from(
                param("stream_from_ordinal").as_deref(),
                param("stream_from_timestamp").as_deref(),
                param("stream_from_datetime").as_deref(),
            );
            datetime(&query);
        }
    }
});

fn stream_from(ordinal: Option<&str>, timestamp: Option<&str>, datetime: Option<&str>) {
    let from = StreamFrom {
        ordinal,
        timestamp,
        datetime,
    };
    if let Ok((o, t)) = from.validate() {
        let _ = from.start(o, t);
    }
    if let Some(d) = datetime {
        self::datetime(d);
    }
}

fn datetime(s: &str) {
    let Some(ms) = parse_datetime_ms(s) else {
        return;
    };
    assert_eq!(ms % 1000, 0, "sub-seconds are dropped");
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let again = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    );
    assert_eq!(parse_datetime_ms(&again), Some(ms), "{s:?} read as {again}");
}

/// The civil date of a day count from 1970-01-01 (Howard Hinnant's `civil_from_days`), written
/// here independently of the code under test.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn api(req: &ApiRequest<'_>) {
    let answer = match ess_api::parse(req) {
        ess_api::Parsed::Answer(answer) => answer,
        ess_api::Parsed::Call(_) => return,
    };
    let rendered = answer.render(true);
    let end = rendered
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a rendered head ends with an empty line")
        + 4;
    let (head, body) = rendered.split_at(end);
    assert_eq!(body, &answer.body[..]);
    let head = &head[..head.len() - 2];
    assert!(head.starts_with(format!("HTTP/1.1 {} ", answer.status).as_bytes()));
    for line in head.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert_eq!(line.last(), Some(&b'\r'), "a bare LF in {head:?}");
        assert!(
            !line[..line.len() - 1].contains(&b'\r'),
            "a bare CR in {head:?}"
        );
    }
    if answer.status != 204 {
        let want = format!("content-length: {}\r\n", body.len());
        assert!(head.windows(want.len()).any(|w| w == want.as_bytes()));
    }
}
