//! Squonk2 Event Stream Service (ESS), the public WebSocket (COMPAT.md section 6.2, rows Q2, Q3,
//! Q6): the `stream_from_*` query, in the original's order of checks, and its close codes and
//! reasons byte for byte. The messages themselves are rendered by the replay source
//! ([`crate::source::replay`]), which knows their offsets and chunk timestamps.
//!
//! The original (FastAPI) declares `stream_from_ordinal` and `stream_from_timestamp` as integer
//! query parameters, so a value that is not an integer fails validation *before* the socket is
//! accepted (HTTP 403). After the accept it counts the parameters that are *truthy* in Python:
//! `0` and the empty string count as "not given", so `stream_from_ordinal=0` reads new messages
//! only. Two or more, or a datetime it cannot parse, close with 1002.
//!
//! Thread: pure, any thread (the shard that upgrades the connection).

use super::pyjson;
use crate::source::replay::{ReplayEnd, StartAt};

/// Close reason when more than one `stream_from_*` is given (code 1002).
pub const TOO_MANY_REASON: &str = "Cannot provide more than one 'stream_from_' variable";
/// Close reason for a `stream_from_datetime` that does not parse (code 1002).
pub const BAD_DATETIME_REASON: &str = "Unable to parse stream_from_datetime value";
/// Close reason when the stream ends: `POISON`, a `DELETE`, or a newer socket (code 1000).
pub const DELETED_REASON: &str = "The stream has been deleted";

/// The `stream_from_*` query parameters as given (percent-decoded).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamFrom<'a> {
    /// `stream_from_ordinal`.
    pub ordinal: Option<&'a str>,
    /// `stream_from_timestamp`, epoch milliseconds.
    pub timestamp: Option<&'a str>,
    /// `stream_from_datetime`, as python-dateutil reads it.
    pub datetime: Option<&'a str>,
}

/// Refused before the accept: the handshake gets HTTP 403, as FastAPI's validation error does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream_from_{0} must be an integer")]
pub struct NotAnInteger(pub &'static str);

/// Where to start, decided after the accept; `Err` is the close frame's code and reason.
pub type Start = Result<StartAt, (u16, &'static str)>;

impl StreamFrom<'_> {
    /// The pre-accept check (validation of the integer parameters); `Ok` holds what the
    /// post-accept step ([`StreamFrom::start`]) needs.
    pub fn validate(&self) -> Result<(Option<i64>, Option<i64>), NotAnInteger> {
        let int = |v: Option<&str>, name| match v {
            None => Ok(None),
            Some(v) => python_int(v).map(Some).ok_or(NotAnInteger(name)),
        };
        Ok((
            int(self.ordinal, "ordinal")?,
            int(self.timestamp, "timestamp")?,
        ))
    }

    /// The post-accept step: the offset to read from, or the close that the original sent.
    pub fn start(&self, ordinal: Option<i64>, timestamp: Option<i64>) -> Start {
        let datetime = self.datetime.filter(|d| !d.is_empty());
        let ordinal = ordinal.filter(|&n| n != 0);
        let timestamp = timestamp.filter(|&t| t != 0);
        let given = usize::from(datetime.is_some())
            + usize::from(ordinal.is_some())
            + usize::from(timestamp.is_some());
        if given > 1 {
            return Err((1002, TOO_MANY_REASON));
        }
        if let Some(d) = datetime {
            return parse_datetime_ms(d)
                .map(StartAt::Timestamp)
                .ok_or((1002, BAD_DATETIME_REASON));
        }
        // A negative ordinal is not an offset RabbitMQ accepts: start at the first message.
        Ok(match (ordinal, timestamp) {
            (Some(n), _) => StartAt::Offset(u64::try_from(n).unwrap_or(0)),
            (_, Some(t)) => StartAt::Timestamp(t),
            _ => StartAt::Next,
        })
    }
}

/// The close code and reason for the end of a consumer, for the socket of event stream `uuid`.
pub fn end_close(end: ReplayEnd, uuid: &str) -> (u16, String) {
    match end {
        ReplayEnd::NotFound => (1013, format!("EventStream {uuid} cannot be found")),
        ReplayEnd::Deleted | ReplayEnd::Replaced => (1000, DELETED_REASON.to_owned()),
        ReplayEnd::Failed => (1011, format!("EventStream {uuid} failed upstream")),
    }
}

/// The close reason for a uuid the registry does not know (code 1000).
pub fn unknown_reason(uuid: &str) -> String {
    format!("Connect for unknown EventStream {uuid}")
}

/// Python's `int(str)` as pydantic applies it to a query parameter: surrounding whitespace,
/// then the literal grammar of [`pyjson::split_int_literal`] (sign, digits, single `_`).
fn python_int(v: &str) -> Option<i64> {
    let (negative, digits) = pyjson::split_int_literal(v.trim().as_bytes())?;
    let digits: String = digits
        .iter()
        .filter(|&&b| b != b'_')
        .map(|&b| char::from(b))
        .collect();
    let n: i64 = digits.parse().ok()?;
    Some(if negative { -n } else { n })
}

/// `stream_from_datetime` as the original used it: parsed by python-dateutil, then
/// `time.mktime(dt.timetuple()) * 1000` in a UTC container, so any timezone offset is dropped
/// (the wall time is read as UTC) and sub-seconds are lost. This reads the ISO 8601 forms
/// clients send (`2024-05-01`, `2024-05-01T10:20`, `2024-05-01 10:20:30.5+02:00`, `…Z`);
/// anything else is `None` (close 1002), where dateutil guesses more freely.
pub fn parse_datetime_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim_start())),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1..=12).contains(&m) || day < 1 || day > days_in_month(y, m) {
        return None;
    }
    let (mut hh, mut mm, mut ss) = (0, 0, 0);
    if let Some(t) = time {
        // The offset (`Z`, `+02:00`, `-0500`) is dropped, as mktime on a naive tuple does.
        let clock = t.split(['Z', 'z', '+', '-']).next()?;
        let clock = clock.split('.').next()?;
        let mut parts = clock.split(':');
        hh = num(parts.next()?, 2)?;
        mm = parts.next().map_or(Some(0), |p| num(p, 2))?;
        ss = parts.next().map_or(Some(0), |p| num(p, 2))?;
        if parts.next().is_some() || hh > 23 || mm > 59 || ss > 59 {
            return None;
        }
    }
    let days = days_from_civil(y, m, day);
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1_000)
}

/// A field of exactly `len` ASCII digits.
fn num(s: &str, len: usize) -> Option<i64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from<'a>(o: Option<&'a str>, t: Option<&'a str>, d: Option<&'a str>) -> StreamFrom<'a> {
        StreamFrom {
            ordinal: o,
            timestamp: t,
            datetime: d,
        }
    }

    fn start(f: &StreamFrom<'_>) -> Start {
        let (o, t) = f.validate().expect("valid");
        f.start(o, t)
    }

    #[test]
    fn integers_are_checked_before_the_accept() {
        assert_eq!(
            from(Some("1.5"), None, None).validate(),
            Err(NotAnInteger("ordinal"))
        );
        assert_eq!(
            from(None, Some("soon"), None).validate(),
            Err(NotAnInteger("timestamp"))
        );
        assert_eq!(
            from(Some(""), None, None).validate(),
            Err(NotAnInteger("ordinal"))
        );
        assert_eq!(
            from(Some(" 1_000 "), Some("-5"), None).validate(),
            Ok((Some(1_000), Some(-5)))
        );
        // A bad datetime is only found after the accept.
        assert!(from(None, None, Some("yesterday")).validate().is_ok());
    }

    #[test]
    fn offsets_follow_the_original() {
        assert_eq!(start(&from(None, None, None)), Ok(StartAt::Next));
        assert_eq!(start(&from(Some("7"), None, None)), Ok(StartAt::Offset(7)));
        // 0 is falsy in Python: "not given", so new messages only.
        assert_eq!(start(&from(Some("0"), None, None)), Ok(StartAt::Next));
        assert_eq!(
            start(&from(Some("0"), Some("5"), None)),
            Ok(StartAt::Timestamp(5))
        );
        assert_eq!(
            start(&from(None, Some("1700000000000"), None)),
            Ok(StartAt::Timestamp(1_700_000_000_000))
        );
        assert_eq!(
            start(&from(Some("1"), Some("2"), None)),
            Err((1002, TOO_MANY_REASON))
        );
        assert_eq!(
            start(&from(Some("1"), None, Some("2024-01-01"))),
            Err((1002, TOO_MANY_REASON))
        );
        assert_eq!(
            start(&from(None, None, Some("not a date"))),
            Err((1002, BAD_DATETIME_REASON))
        );
        assert_eq!(start(&from(None, None, Some(""))), Ok(StartAt::Next));
    }

    #[test]
    fn datetimes_drop_the_offset_and_the_fraction() {
        let base = parse_datetime_ms("2024-05-01T10:20:30").expect("iso");
        assert_eq!(base, 1_714_558_830_000);
        assert_eq!(
            parse_datetime_ms("2024-05-01 10:20:30.987+02:00"),
            Some(base)
        );
        assert_eq!(parse_datetime_ms("2024-05-01T10:20:30Z"), Some(base));
        assert_eq!(parse_datetime_ms("2024-05-01T10:20:30-0500"), Some(base));
        assert_eq!(parse_datetime_ms("1970-01-01"), Some(0));
        assert_eq!(parse_datetime_ms("2024-05-01T10:20"), Some(base - 30_000));
        for bad in [
            "2024-13-01",
            "2024-02-30",
            "24-05-01",
            "2024-05-01T25:00",
            "x",
            "",
        ] {
            assert_eq!(parse_datetime_ms(bad), None, "{bad}");
        }
        assert_eq!(parse_datetime_ms("2024-02-29"), Some(1_709_164_800_000));
    }

    #[test]
    fn close_codes_and_reasons_are_the_originals() {
        assert_eq!(
            end_close(ReplayEnd::NotFound, "abc"),
            (1013, "EventStream abc cannot be found".to_owned())
        );
        for end in [ReplayEnd::Deleted, ReplayEnd::Replaced] {
            assert_eq!(end_close(end, "abc"), (1000, DELETED_REASON.to_owned()));
        }
        assert_eq!(unknown_reason("abc"), "Connect for unknown EventStream abc");
    }
}
