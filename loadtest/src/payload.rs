//! The published payload and its cheap parse on the receiving side.
//!
//! Every payload is the JSON object `{"t":<ns>,"s":<seq>,"p":"xxx…"}`, padded with `x` to
//! `--payload-bytes`. `t` is the send time in nanoseconds since the UNIX epoch
//! (`CLOCK_REALTIME`, read by the publisher just before the message is written), `s` the
//! message's sequence number within its channel (0, 1, 2, …). The gateway embeds JSON payloads
//! verbatim, so a client receives `{"channel":"chK","data":{"t":…,"s":…,"p":"…"}}`. Clients do
//! not run a JSON parser per message: they find `"t":` and `"s":` and parse the digits after
//! them ([`parse_ts`]).

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the UNIX epoch (`CLOCK_REALTIME`).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Appends the payload for send time `t` and sequence `seq` to `buf`: exactly `payload_bytes`
/// bytes when that is at least the unpadded size, else the unpadded object (`"p":""`).
pub fn write_payload(buf: &mut Vec<u8>, t: u64, seq: u64, payload_bytes: usize) {
    let start = buf.len();
    buf.extend_from_slice(b"{\"t\":");
    push_u64(buf, t);
    buf.extend_from_slice(b",\"s\":");
    push_u64(buf, seq);
    buf.extend_from_slice(b",\"p\":\"");
    let used = buf.len() - start + 2;
    buf.resize(buf.len() + payload_bytes.saturating_sub(used), b'x');
    buf.extend_from_slice(b"\"}");
}

/// Appends the decimal digits of `v`.
pub fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// The `t` and `s` of a received event, found without a JSON parser. `None` when the message
/// is not one of ours (a reply, an error).
pub fn parse_ts(msg: &[u8]) -> Option<(u64, u64)> {
    let t_at = find(msg, b"\"t\":")? + 4;
    let (t, used) = parse_digits(&msg[t_at..])?;
    let rest = &msg[t_at + used..];
    let s_at = find(rest, b"\"s\":")? + 4;
    let (s, _) = parse_digits(&rest[s_at..])?;
    Some((t, s))
}

/// Position of the first `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while from + needle.len() <= hay.len() {
        let i = from
            + hay[from..=hay.len() - needle.len()]
                .iter()
                .position(|&b| b == first)?;
        if hay[i..].starts_with(needle) {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// Leading decimal digits of `b` (at least one) and how many bytes they took.
fn parse_digits(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b.iter().take(20) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        n += 1;
    }
    (n > 0).then_some((v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_size_and_parses_back() {
        let t = 1_760_000_000_123_456_789;
        for size in [0, 10, 40, 41, 200, 4096] {
            let mut buf = Vec::new();
            write_payload(&mut buf, t, 42, size);
            let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
            assert_eq!(v["t"], t);
            assert_eq!(v["s"], 42);
            let unpadded = format!("{{\"t\":{t},\"s\":42,\"p\":\"\"}}").len();
            assert_eq!(buf.len(), size.max(unpadded), "size {size}");
        }
    }

    #[test]
    fn parse_ts_reads_the_envelope() {
        let mut payload = Vec::new();
        write_payload(&mut payload, 1_700_000_000_000_000_001, 7, 200);
        let mut msg = b"{\"channel\":\"ch12\",\"data\":".to_vec();
        msg.extend_from_slice(&payload);
        msg.push(b'}');
        assert_eq!(parse_ts(&msg), Some((1_700_000_000_000_000_001, 7)));
        assert_eq!(
            parse_ts(b"{\"op\":\"subscribed\",\"channel\":\"ch0\",\"id\":1}"),
            None
        );
        assert_eq!(parse_ts(b"{\"t\":x}"), None);
        assert_eq!(parse_ts(b"{\"t\":1}"), None);
        assert_eq!(parse_ts(b"{\"t\":99999999999999999999999,\"s\":1}"), None);
        assert_eq!(parse_ts(b""), None);
    }

    #[test]
    fn push_u64_writes_decimal() {
        for v in [0, 9, 10, 12345, u64::MAX] {
            let mut b = Vec::new();
            push_u64(&mut b, v);
            assert_eq!(b, v.to_string().as_bytes());
        }
    }
}
