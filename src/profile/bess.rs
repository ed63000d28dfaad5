//! The WebsocketServerMS (battery / BESS) frames: battery hashes from Redis written as the
//! FastAPI service writes them (COMPAT 4.2, checklist rows W2 and W3).
//!
//! ```text
//! snapshot: {"battery:1:data":{"timestamp":1731801715542,"voltage":136,...},"battery:2:data":{...}}
//! update:   {"battery:7:data":{"timestamp":1731801715542,...,"ws_timestamp":1731801715600,"latency_ms":58}}
//! ```
//!
//! The producer (RedisBackendMS) keeps one hash per battery at [`data_key`], lists the ids in
//! the set [`IDS_KEY`], and after each `HSET` publishes `"updates"` on the hash's own name,
//! which [`CHANNEL_PATTERN`] matches. The service converts every hash value with Python's
//! `int()` and sends with Starlette's `send_json`: compact separators, UTF-8 left unescaped.
//!
//! Invariants:
//!
//! - Values are read as `int(bytes)` reads them: surrounding ASCII whitespace (space, `\t`,
//!   `\n`, `\v`, `\f`, `\r`), an optional `+` or `-`, ASCII digits with single underscores
//!   between them. Unlike Python, values must fit in `i64`; the producer's values always do
//!   (IngestorMS unpacks them from a `<BqHHhBB` struct).
//! - A value that is not an integer is left out of its object and counted (Python would raise
//!   and, for updates, kill its listener task). Every function returns that count so the
//!   caller can log it.
//! - Pure: no I/O, no clock (the caller passes the time), appends to the caller's buffer,
//!   never panics on any bytes. Field names and keys are written lossily (invalid UTF-8 becomes
//!   U+FFFD).

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::pyjson;
use crate::protocol::write_json_string;

/// The Redis set holding every battery id (`SMEMBERS` for the snapshot).
pub const IDS_KEY: &str = "info:batteries:ids";

/// The pub/sub pattern that matches every battery's update channel, including batteries added
/// after the gateway started (COMPAT W4).
pub const CHANNEL_PATTERN: &str = "battery:*:data";

/// The field that carries the producer's timestamp (ms since the epoch), used for latency.
const TIMESTAMP_FIELD: &[u8] = b"timestamp";

/// The fields an update adds; a hash field with either name is replaced, not duplicated.
const SERVER_FIELDS: [&[u8]; 2] = [b"ws_timestamp", b"latency_ms"];

/// Returns the hash key (and update channel) of battery `id`: `battery:<id>:data`.
///
/// The service reads the ids with `int()` and formats them back, so an id that reads as an
/// integer is written in canonical form (`"07"` gives `battery:7:data`). Any other id, where
/// Python would raise, is used as it is.
pub fn data_key(id: &[u8]) -> Bytes {
    let mut key = BytesMut::with_capacity(id.len() + 13);
    key.put_slice(b"battery:");
    match canonical_int(id) {
        Some((negative, digits)) => {
            if negative {
                key.put_u8(b'-');
            }
            if digits.is_empty() {
                key.put_u8(b'0');
            }
            key.extend(digits.iter().filter(|&&b| b != b'_'));
        }
        None => key.put_slice(id),
    }
    key.put_slice(b":data");
    key.freeze()
}

/// Appends one battery object, `{"timestamp":1731801715542,"voltage":136,...}`, in hash order
/// with every value as an integer, and returns how many fields were left out because their
/// value is not an integer.
///
/// With `now_ms` set (an update), `"ws_timestamp":now_ms` is appended and, when a `timestamp`
/// field read as an integer, `"latency_ms":now_ms - timestamp`. Hash fields named
/// `ws_timestamp` or `latency_ms` are then dropped in favour of the server's values.
pub fn write_battery(out: &mut Vec<u8>, fields: &[(Bytes, Bytes)], now_ms: Option<i64>) -> usize {
    let mut writer = ObjectWriter::open(out);
    let mut skipped = 0;
    let mut timestamp = None;
    for (name, value) in fields {
        if now_ms.is_some() && SERVER_FIELDS.contains(&&name[..]) {
            continue;
        }
        let Some(n) = parse_int(value) else {
            skipped += 1;
            continue;
        };
        if name == TIMESTAMP_FIELD {
            timestamp = Some(n);
        }
        writer.int_field(name, i128::from(n));
    }
    if let Some(now) = now_ms {
        writer.int_field(b"ws_timestamp", i128::from(now));
        if let Some(ts) = timestamp {
            writer.int_field(b"latency_ms", i128::from(now) - i128::from(ts));
        }
    }
    writer.close();
    skipped
}

/// Appends an update frame, `{"<key>":{...ints...,"ws_timestamp":N,"latency_ms":N}}`, for the
/// hash `key` (given whole, e.g. `battery:7:data`) read at `now_ms`. Returns the number of
/// fields left out.
pub fn render_update(
    out: &mut Vec<u8>,
    key: &[u8],
    fields: &[(Bytes, Bytes)],
    now_ms: i64,
) -> usize {
    out.push(b'{');
    write_json_string(out, key);
    out.push(b':');
    let skipped = write_battery(out, fields, Some(now_ms));
    out.push(b'}');
    skipped
}

/// Appends the connect snapshot, `{"battery:1:data":{...},"battery:2:data":{...}}`, one entry
/// per `(key, hash fields)` in the given order, without `ws_timestamp` or `latency_ms`. `{}`
/// when there are no batteries. A key given twice is written once (the first), as a Python
/// dict keeps one entry per key. Returns the total number of fields left out.
pub fn render_snapshot(out: &mut Vec<u8>, batteries: &[(Bytes, Vec<(Bytes, Bytes)>)]) -> usize {
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(batteries.len());
    let mut skipped = 0;
    out.push(b'{');
    for (key, fields) in batteries {
        if !seen.insert(&key[..]) {
            continue;
        }
        if seen.len() > 1 {
            out.push(b',');
        }
        write_json_string(out, key);
        out.push(b':');
        skipped += write_battery(out, fields, None);
    }
    out.push(b'}');
    skipped
}

/// Reads a hash value as Python's `int(bytes)` does, limited to `i64`.
fn parse_int(value: &[u8]) -> Option<i64> {
    let (negative, digits) = canonical_int(value)?;
    let mut digits = digits
        .iter()
        .filter(|&&b| b != b'_')
        .map(|&b| i64::from(b - b'0'));
    // Accumulate towards the sign so that i64::MIN is reachable.
    digits.try_fold(0i64, |acc, d| {
        let acc = acc.checked_mul(10)?;
        if negative {
            acc.checked_sub(d)
        } else {
            acc.checked_add(d)
        }
    })
}

/// Splits a Python `int(bytes)` literal into its sign and significant digits (leading zeros
/// dropped, underscores kept). Zero is `(false, [])`.
fn canonical_int(raw: &[u8]) -> Option<(bool, &[u8])> {
    let (negative, digits) = pyjson::split_int_literal(trim_py_space(raw))?;
    let first = digits.iter().position(|&b| b != b'0' && b != b'_');
    let digits = first.map_or(&digits[..0], |i| &digits[i..]);
    Some((negative && !digits.is_empty(), digits))
}

/// Trims the whitespace Python's `int(bytes)` skips: ASCII whitespace plus vertical tab, which
/// `u8::is_ascii_whitespace` does not include.
fn trim_py_space(raw: &[u8]) -> &[u8] {
    let is_space = |b: &u8| b.is_ascii_whitespace() || *b == 0x0B;
    let start = raw.iter().position(|b| !is_space(b)).unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    raw.get(start..end).unwrap_or_default()
}

/// Writes the members of one compact JSON object, adding commas between them.
struct ObjectWriter<'o> {
    /// The caller's buffer.
    out: &'o mut Vec<u8>,
    /// Whether a member has been written (so the next one needs a comma).
    any: bool,
}

impl<'o> ObjectWriter<'o> {
    /// Writes `{` and starts an empty object.
    fn open(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, any: false }
    }

    /// Writes `"name":n`.
    fn int_field(&mut self, name: &[u8], n: i128) {
        if self.any {
            self.out.push(b',');
        }
        self.any = true;
        write_json_string(self.out, name);
        self.out.push(b':');
        write_int(self.out, n);
    }

    /// Writes `}`.
    fn close(self) {
        self.out.push(b'}');
    }
}

/// Appends `n` in decimal without allocating.
fn write_int(out: &mut Vec<u8>, n: i128) {
    // u128::MAX has 39 digits.
    let mut buf = [0u8; 40];
    let mut pos = buf.len();
    let mut rest = n.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[pos..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::profile::test_hash as hash;

    fn sample() -> Vec<(Bytes, Bytes)> {
        hash(&[
            ("timestamp", "1731801715542"),
            ("voltage", "136"),
            ("current", "108"),
            ("temperature", "347"),
            ("state_of_charge", "36"),
            ("state_of_health", "49"),
        ])
    }

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).expect("frame is UTF-8")
    }

    #[test]
    fn battery_object_is_compact_ints_in_hash_order() {
        let mut out = Vec::new();
        assert_eq!(write_battery(&mut out, &sample(), None), 0);
        assert_eq!(
            text(out),
            concat!(
                r#"{"timestamp":1731801715542,"voltage":136,"current":108,"#,
                r#""temperature":347,"state_of_charge":36,"state_of_health":49}"#
            )
        );
    }

    #[test]
    fn values_are_read_like_python_int() {
        let run = hash(&[
            ("a", " 42\n"),
            ("b", "+7"),
            ("c", "-0012"),
            ("d", "1_000"),
            ("e", "\x0b5\x0c"),
            ("f", "-9223372036854775808"),
            ("g", "-0"),
        ]);
        let mut out = Vec::new();
        assert_eq!(write_battery(&mut out, &run, None), 0);
        assert_eq!(
            text(out),
            r#"{"a":42,"b":7,"c":-12,"d":1000,"e":5,"f":-9223372036854775808,"g":0}"#
        );
    }

    #[test]
    fn non_int_values_are_left_out_and_counted() {
        let run = hash(&[
            ("voltage", "136"),
            ("current", "1.5"),
            ("temperature", ""),
            ("mode", "idle"),
            ("big", "9223372036854775808"),
            ("bad", "1__0"),
            ("state_of_charge", "36"),
        ]);
        let mut out = Vec::new();
        assert_eq!(write_battery(&mut out, &run, None), 5);
        assert_eq!(text(out), r#"{"voltage":136,"state_of_charge":36}"#);
        let mut empty = Vec::new();
        assert_eq!(write_battery(&mut empty, &hash(&[("x", "nan")]), None), 1);
        assert_eq!(empty, b"{}");
    }

    #[test]
    fn update_adds_ws_timestamp_and_latency() {
        let mut out = Vec::new();
        let skipped = render_update(&mut out, b"battery:7:data", &sample(), 1_731_801_715_600);
        assert_eq!(skipped, 0);
        assert_eq!(
            text(out),
            concat!(
                r#"{"battery:7:data":{"timestamp":1731801715542,"voltage":136,"current":108,"#,
                r#""temperature":347,"state_of_charge":36,"state_of_health":49,"#,
                r#""ws_timestamp":1731801715600,"latency_ms":58}}"#
            )
        );
    }

    #[test]
    fn latency_needs_an_integer_timestamp() {
        for run in [hash(&[("voltage", "1")]), hash(&[("timestamp", "soon")])] {
            let mut out = Vec::new();
            render_update(&mut out, b"battery:1:data", &run, 100);
            let frame = text(out);
            assert!(frame.ends_with(r#""ws_timestamp":100}}"#), "{frame}");
            assert!(!frame.contains("latency_ms"));
        }
        let mut out = Vec::new();
        write_battery(&mut out, &hash(&[("timestamp", "150")]), Some(100));
        assert_eq!(
            text(out),
            r#"{"timestamp":150,"ws_timestamp":100,"latency_ms":-50}"#
        );
    }

    #[test]
    fn server_fields_replace_hash_fields_in_updates_only() {
        let run = hash(&[
            ("ws_timestamp", "1"),
            ("timestamp", "90"),
            ("latency_ms", "2"),
        ]);
        let mut update = Vec::new();
        assert_eq!(write_battery(&mut update, &run, Some(100)), 0);
        assert_eq!(
            text(update),
            r#"{"timestamp":90,"ws_timestamp":100,"latency_ms":10}"#
        );
        let mut snapshot = Vec::new();
        write_battery(&mut snapshot, &run, None);
        assert_eq!(
            text(snapshot),
            r#"{"ws_timestamp":1,"timestamp":90,"latency_ms":2}"#
        );
    }

    #[test]
    fn latency_does_not_overflow() {
        let run = hash(&[("timestamp", "-9223372036854775808")]);
        let mut out = Vec::new();
        write_battery(&mut out, &run, Some(i64::MAX));
        assert_eq!(
            text(out),
            concat!(
                r#"{"timestamp":-9223372036854775808,"ws_timestamp":9223372036854775807,"#,
                r#""latency_ms":18446744073709551615}"#
            )
        );
    }

    #[test]
    fn snapshot_shapes() {
        let mut empty = Vec::new();
        assert_eq!(render_snapshot(&mut empty, &[]), 0);
        assert_eq!(empty, b"{}");

        let batteries = vec![
            (data_key(b"1"), sample()),
            (data_key(b"2"), hash(&[("voltage", "12"), ("note", "x")])),
            (data_key(b"01"), hash(&[("voltage", "99")])),
        ];
        let mut out = Vec::new();
        assert_eq!(render_snapshot(&mut out, &batteries), 1);
        let frame = text(out);
        assert_eq!(
            frame,
            concat!(
                r#"{"battery:1:data":{"timestamp":1731801715542,"voltage":136,"current":108,"#,
                r#""temperature":347,"state_of_charge":36,"state_of_health":49},"#,
                r#""battery:2:data":{"voltage":12}}"#
            )
        );
        assert!(serde_json::from_str::<serde_json::Value>(&frame).is_ok());
    }

    #[test]
    fn names_are_written_as_compact_utf8_json() {
        let name = ["temp \"°C\"\n".as_bytes(), b"\xff"].concat();
        let run = vec![(Bytes::from(name), Bytes::from_static(b"5"))];
        let mut out = Vec::new();
        render_update(&mut out, "battery:é:data".as_bytes(), &run, 9);
        let frame = text(out);
        assert_eq!(
            frame,
            "{\"battery:é:data\":{\"temp \\\"°C\\\"\\n\u{FFFD}\":5,\"ws_timestamp\":9}}"
        );
    }

    #[test]
    fn data_key_canonicalises_integer_ids() {
        assert_eq!(data_key(b"7"), Bytes::from_static(b"battery:7:data"));
        assert_eq!(data_key(b" 007 "), Bytes::from_static(b"battery:7:data"));
        assert_eq!(data_key(b"0"), Bytes::from_static(b"battery:0:data"));
        assert_eq!(data_key(b"-0"), Bytes::from_static(b"battery:0:data"));
        assert_eq!(data_key(b"-1_2"), Bytes::from_static(b"battery:-12:data"));
        assert_eq!(data_key(b"abc"), Bytes::from_static(b"battery:abc:data"));
        assert_eq!(data_key(b""), Bytes::from_static(b"battery::data"));
        assert_eq!(
            data_key(b"123456789012345678901234567890"),
            Bytes::from_static(b"battery:123456789012345678901234567890:data")
        );
    }

    #[test]
    fn constants() {
        assert_eq!(IDS_KEY, "info:batteries:ids");
        assert_eq!(CHANNEL_PATTERN, "battery:*:data");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let fields: Vec<(Bytes, Bytes)> = (0u8..=255)
            .map(|b| (Bytes::from(vec![b]), Bytes::from(vec![b'1', b, b'2'])))
            .collect();
        let mut out = Vec::new();
        render_update(&mut out, b"\xff\x00", &fields, i64::MIN);
        let frame = String::from_utf8(out).expect("frame is UTF-8");
        assert!(serde_json::from_str::<serde_json::Value>(&frame).is_ok());
    }
}
