//! UTC civil time for the SuperDARN renderers: the proleptic Gregorian calendar, Python's
//! `datetime.isoformat()` layout, SQLAlchemy's text layout of a `DateTime` column in SQLite,
//! and the ISO 8601 date-times the `/echoes` API accepts ([`parse_iso`]).
//!
//! Thread: pure, any thread.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days in month `m` (1 to 12) of year `y`.
pub(crate) fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A UTC wall-clock time to the microsecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    pub micro: i64,
}

impl Civil {
    /// The UTC time of `t` (before 1970 too).
    pub fn from_system_time(t: SystemTime) -> Self {
        let micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
        };
        let days = micros.div_euclid(86_400_000_000);
        let in_day = micros.rem_euclid(86_400_000_000);
        let (year, month, day) = civil_from_days(days);
        let secs = in_day / 1_000_000;
        Civil {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            micro: in_day % 1_000_000,
        }
    }

    /// Appends Python's `isoformat()` of the naive datetime: `YYYY-MM-DDTHH:MM:SS`, then
    /// `.ffffff` only when the microsecond is not 0.
    pub fn write_iso(&self, out: &mut String) {
        use std::fmt::Write;
        let Civil {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micro,
        } = *self;
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
        );
        if micro != 0 {
            let _ = write!(out, ".{micro:06}");
        }
    }
}

impl Civil {
    /// Microseconds since 1970-01-01T00:00:00 (negative before), this being UTC.
    pub fn unix_micros(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400 + self.hour * 3_600 + self.minute * 60 + self.second;
        secs * 1_000_000 + self.micro
    }

    /// Appends the text SQLAlchemy stores for a `DateTime` in SQLite, which is what the
    /// original's `echo_counts.timestamp` holds: `YYYY-MM-DD HH:MM:SS.ffffff`, always six
    /// digits. Fixed width, so text order is time order (SQLite compares the column as text).
    pub fn write_sql(&self, out: &mut String) {
        use std::fmt::Write;
        let Civil {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micro,
        } = *self;
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micro:06}"
        );
    }
}

/// The time `micros` microseconds after the epoch (before it when negative).
pub(crate) fn system_time_from_micros(micros: i64) -> SystemTime {
    let d = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + d
    } else {
        // Years 1 to 9999 are about 6e16 µs either side: always representable on Linux.
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

/// Parses an ISO 8601 date-time into microseconds since the epoch, UTC; `None` if it is not
/// one. Accepted, with surrounding whitespace:
///
/// - a date `YYYY-MM-DD` or `YYYYMMDD` (years 1 to 9999, as Python's `datetime`);
/// - optionally `T`, `t` or a space, then `HH`, `HH:MM`, `HH:MM:SS` or `HHMM`, `HHMMSS`, the
///   seconds optionally with a fraction (`.` or `,`, 1 or more digits; past the sixth it is
///   truncated, as `dateutil` does);
/// - optionally, after optional spaces, `Z` or an offset `±HH`, `±HH:MM`, `±HHMM`; a time
///   without one is UTC.
///
/// This is the ISO subset of what the original's `dateutil.parser.parse` took; its free-form
/// inputs (`Dec 3 2026`, `3/12/2026`, a time alone) are refused, so they answer 400 where the
/// original guessed.
pub(crate) fn parse_iso(text: &str) -> Option<i64> {
    let mut p = Cursor {
        s: text.trim().as_bytes(),
        i: 0,
    };
    let year = p.number(4)?;
    let extended = p.eat(b'-');
    let month = p.number(2)?;
    if extended && !p.eat(b'-') {
        return None;
    }
    let day = p.number(2)?;
    if !(1..=9_999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
    {
        return None;
    }
    let mut civil = Civil {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        micro: 0,
    };
    if matches!(p.peek(), Some(b'T' | b't' | b' '))
        && p.s.get(p.i + 1).is_some_and(u8::is_ascii_digit)
    {
        p.i += 1;
        p.time(&mut civil)?;
    }
    let offset = p.offset()?;
    if p.i != p.s.len() {
        return None;
    }
    Some(civil.unix_micros() - offset * 1_000_000)
}

/// A position in the text [`parse_iso`] reads.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Consumes `b` if it is next.
    fn eat(&mut self, b: u8) -> bool {
        let next = self.peek() == Some(b);
        self.i += usize::from(next);
        next
    }

    /// Exactly `n` ASCII digits.
    fn number(&mut self, n: usize) -> Option<i64> {
        let digits = self.s.get(self.i..self.i + n)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(digits.iter().fold(0, |v, d| v * 10 + i64::from(d - b'0')))
    }

    /// `HH[:MM[:SS[.f]]]` or `HH[MM[SS[.f]]]` into `c`.
    fn time(&mut self, c: &mut Civil) -> Option<()> {
        c.hour = self.number(2)?;
        let extended = self.eat(b':');
        if extended || self.peek().is_some_and(|b| b.is_ascii_digit()) {
            c.minute = self.number(2)?;
            let more = if extended {
                self.eat(b':')
            } else {
                self.peek().is_some_and(|b| b.is_ascii_digit())
            };
            if more {
                c.second = self.number(2)?;
                if self.eat(b'.') || self.eat(b',') {
                    c.micro = self.fraction()?;
                }
            }
        }
        (c.hour <= 23 && c.minute <= 59 && c.second <= 59).then_some(())
    }

    /// One or more digits after the decimal sign, as microseconds (truncated).
    fn fraction(&mut self) -> Option<i64> {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        let digits = &self.s[start..self.i];
        if digits.is_empty() {
            return None;
        }
        let micro = (0..6).fold(0, |v, k| {
            v * 10 + digits.get(k).map_or(0, |d| i64::from(d - b'0'))
        });
        Some(micro)
    }

    /// An optional UTC offset, in seconds east of UTC (0 when there is none).
    fn offset(&mut self) -> Option<i64> {
        let before = self.i;
        while self.eat(b' ') {}
        let sign = match self.peek() {
            Some(b'Z' | b'z') => {
                self.i += 1;
                return Some(0);
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => {
                self.i = before;
                return Some(0);
            }
        };
        self.i += 1;
        let hours = self.number(2)?;
        let minutes = if self.eat(b':') || self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.number(2)?
        } else {
            0
        };
        (hours <= 23 && minutes <= 59).then_some(sign * (hours * 3_600 + minutes * 60))
    }
}

/// Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `days` days after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(t: SystemTime) -> String {
        let mut s = String::new();
        Civil::from_system_time(t).write_iso(&mut s);
        s
    }

    #[test]
    fn isoformat_omits_zero_microseconds_as_python_does() {
        // datetime.fromtimestamp(1796306176.79068, timezone.utc) is 2026-12-03T13:56:16.790680
        let t = UNIX_EPOCH + Duration::from_micros(1_796_306_176_790_680);
        assert_eq!(iso(t), "2026-12-03T13:56:16.790680");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_306_176);
        assert_eq!(iso(t), "2026-12-03T13:56:16");
        let t = UNIX_EPOCH + Duration::from_micros(1_796_306_176_000_005);
        assert_eq!(iso(t), "2026-12-03T13:56:16.000005");
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(iso(UNIX_EPOCH), "1970-01-01T00:00:00");
        assert_eq!(
            iso(UNIX_EPOCH - Duration::from_micros(1)),
            "1969-12-31T23:59:59.999999"
        );
        // 2024-02-29T23:59:59 and 2000-03-01T00:00:00 (leap years).
        assert_eq!(
            iso(UNIX_EPOCH + Duration::from_secs(1_709_251_199)),
            "2024-02-29T23:59:59"
        );
        assert_eq!(
            iso(UNIX_EPOCH + Duration::from_secs(951_868_800)),
            "2000-03-01T00:00:00"
        );
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2026, 4), 30);
        assert_eq!(days_in_month(2026, 12), 31);
    }

    fn parsed(text: &str) -> Option<String> {
        parse_iso(text).map(|m| iso(system_time_from_micros(m)))
    }

    #[test]
    fn iso_dates_and_times_parse_to_utc() {
        let cases = [
            ("2026-12-03", "2026-12-03T00:00:00"),
            ("20261203", "2026-12-03T00:00:00"),
            ("2026-12-03T13:56", "2026-12-03T13:56:00"),
            ("2026-12-03T13", "2026-12-03T13:00:00"),
            ("2026-12-03 13:56:16", "2026-12-03T13:56:16"),
            ("2026-12-03t13:56:16", "2026-12-03T13:56:16"),
            ("20261203T135616", "2026-12-03T13:56:16"),
            ("2026-12-03T13:56:16.79068", "2026-12-03T13:56:16.790680"),
            (
                "2026-12-03T13:56:16,790680999",
                "2026-12-03T13:56:16.790680",
            ),
            ("2026-12-03T13:56:16Z", "2026-12-03T13:56:16"),
            ("2026-12-03T13:56:16+00:00", "2026-12-03T13:56:16"),
            ("2026-12-03T15:56:16+02:00", "2026-12-03T13:56:16"),
            ("2026-12-03T08:26:16-0530", "2026-12-03T13:56:16"),
            ("2026-12-03T23:00:00-03", "2026-12-04T02:00:00"),
            ("2026-12-03T13:56:16 +01:00", "2026-12-03T12:56:16"),
            ("  2026-12-03T13:56:16  ", "2026-12-03T13:56:16"),
            ("2024-02-29", "2024-02-29T00:00:00"),
            ("0001-01-01T00:00:00", "0001-01-01T00:00:00"),
            ("9999-12-31T23:59:59.999999", "9999-12-31T23:59:59.999999"),
            ("1969-12-31T23:59:59.5", "1969-12-31T23:59:59.500000"),
        ];
        for (text, want) in cases {
            assert_eq!(parsed(text).as_deref(), Some(want), "{text:?}");
        }
    }

    #[test]
    fn non_iso_or_out_of_range_is_refused() {
        let bad = [
            "",
            "yesterday",
            "Dec 3 2026",
            "3/12/2026",
            "2026-12",
            "2026-1203",
            "202612-03",
            "2026-13-01",
            "2026-00-10",
            "2026-02-29",
            "2026-12-32",
            "0000-01-01",
            "2026-12-03T24:00",
            "2026-12-03T13:60",
            "2026-12-03T13:56:60",
            "2026-12-03T13:5",
            "2026-12-03T13:56:16.",
            "2026-12-03T13:56:16+24:00",
            "2026-12-03T13:56:16+05:60",
            "2026-12-03T13:56:16+5",
            "2026-12-03T13:56:16 05:00",
            "2026-12-03T13:56:16Zjunk",
            "2026-12-03T",
            "2026-12-03X13:56",
            "２０２６-12-03",
        ];
        for text in bad {
            assert_eq!(parse_iso(text), None, "{text:?}");
        }
    }

    #[test]
    fn sql_layout_is_fixed_width_and_round_trips() {
        let t = UNIX_EPOCH + Duration::from_micros(1_796_306_176_790_680);
        let mut s = String::new();
        Civil::from_system_time(t).write_sql(&mut s);
        assert_eq!(s, "2026-12-03 13:56:16.790680");
        let mut s = String::new();
        Civil::from_system_time(UNIX_EPOCH + Duration::from_secs(1_796_306_176)).write_sql(&mut s);
        assert_eq!(s, "2026-12-03 13:56:16.000000");
        assert_eq!(parse_iso(&s), Some(1_796_306_176_000_000));
        for micros in [0, -1, 1_796_306_176_790_680, -62_135_596_800_000_000] {
            let c = Civil::from_system_time(system_time_from_micros(micros));
            assert_eq!(c.unix_micros(), micros);
        }
    }
}
