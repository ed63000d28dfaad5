//! UTC civil time for the SuperDARN renderers: the proleptic Gregorian calendar and Python's
//! `datetime.isoformat()` layout.
//!
//! Thread: pure, any thread.

use std::time::{SystemTime, UNIX_EPOCH};

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
    use std::time::Duration;

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
}
