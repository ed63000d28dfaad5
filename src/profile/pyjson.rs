//! Python compatibility helpers: JSON written the way Python's `json.dumps` writes it with its
//! default settings, and the grammar of Python's `int()`.
//!
//! The legacy weppcloud services (preflight, status) build every frame with a bare
//! `json.dumps(obj)`. Its defaults are `ensure_ascii=True` and the separators `", "` between
//! items and `": "` between a key and its value, so a drop-in must write
//! `{"type": "status", "data": "caf\u00e9"}`, not the compact `{"type":"status","data":"café"}`.
//! Clients parse JSON, so only byte-exact tests depend on this, but byte-exact is cheap.
//!
//! Invariants:
//!
//! - Pure functions: they only append to the caller's buffer, never clear it, and never panic.
//! - [`write_str`] output is pure ASCII and valid JSON for any input bytes. Invalid UTF-8
//!   becomes U+FFFD (one per maximal invalid subpart, as Python's `errors="replace"` does).
//!
//! Used from whichever thread renders a legacy frame; there is no shared state.

/// Separator between the items of an object or array, as `json.dumps` writes it by default.
pub const ITEM_SEP: &[u8] = b", ";

/// Separator between a key and its value, as `json.dumps` writes it by default.
pub const KEY_SEP: &[u8] = b": ";

/// Lowercase hex digits, as Python's `\u` escapes use them.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string literal, quotes included, exactly as Python's
/// `json.dumps(s)` writes it (`ensure_ascii=True`).
///
/// `"` and `\` get a backslash; `\n`, `\r`, `\t`, `\b` and `\f` use their short forms; every
/// other character outside printable ASCII (`0x20..=0x7e`) becomes `\uXXXX` in lowercase hex,
/// with a surrogate pair above U+FFFF. That includes DEL (0x7f): CPython's encoder escapes it
/// (`json.dumps("\x7f") == '"\\u007f"'`). Invalid UTF-8 is written as `\ufffd`.
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    for chunk in s.utf8_chunks() {
        write_valid(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            write_u_escape(out, 0xFFFD);
        }
    }
    out.push(b'"');
}

/// Appends `true` or `false`.
pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Writes `x` as Python's `repr(float)` (and `json.dumps`) does.
pub fn write_float(out: &mut Vec<u8>, x: f64) {
    if x.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if x.is_infinite() {
        out.extend_from_slice(if x > 0.0 { b"Infinity" } else { b"-Infinity" });
        return;
    }
    // Shortest round-trip digits, as Python's repr: `d.ddde±x`.
    let sci = format!("{x:e}");
    let (sign, sci) = match sci.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", sci.as_str()),
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let decpt = exp + 1; // value = 0.DIGITS × 10^decpt
    out.extend_from_slice(sign.as_bytes());
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(
                b'0',
                usize::try_from(-decpt).unwrap_or(0),
            ));
            out.extend_from_slice(digits.as_bytes());
        } else if decpt >= n {
            out.extend_from_slice(digits.as_bytes());
            out.extend(std::iter::repeat_n(
                b'0',
                usize::try_from(decpt - n).unwrap_or(0),
            ));
            out.extend_from_slice(b".0");
        } else {
            let (a, b) = digits.split_at(usize::try_from(decpt).unwrap_or(0));
            out.extend_from_slice(a.as_bytes());
            out.push(b'.');
            out.extend_from_slice(b.as_bytes());
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.extend_from_slice(first.as_bytes());
        if !rest.is_empty() {
            out.push(b'.');
            out.extend_from_slice(rest.as_bytes());
        }
        let e = decpt - 1;
        out.extend_from_slice(
            format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()).as_bytes(),
        );
    }
}

/// Splits an already trimmed Python integer literal into its sign and its digits.
///
/// Accepts what base-10 `int()` accepts once surrounding whitespace is gone: an optional `+`
/// or `-`, then ASCII digits, with single underscores allowed between digits (`1_000`). The
/// returned digits may still hold underscores and leading zeros. Returns `None` for anything
/// else, including the empty string.
pub(crate) fn split_int_literal(s: &[u8]) -> Option<(bool, &[u8])> {
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    let well_formed = digits.first().is_some_and(u8::is_ascii_digit)
        && digits.last().is_some_and(u8::is_ascii_digit)
        && digits.iter().all(|&b| b.is_ascii_digit() || b == b'_')
        && !digits.windows(2).any(|w| w == b"__");
    well_formed.then_some((negative, digits))
}

/// Writes a run of valid UTF-8, copying printable ASCII as is and escaping the rest.
fn write_valid(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut copied = 0;
    for (i, c) in s.char_indices() {
        if is_plain(c) {
            continue;
        }
        out.extend_from_slice(&bytes[copied..i]);
        write_escape(out, c);
        copied = i + c.len_utf8();
    }
    out.extend_from_slice(&bytes[copied..]);
}

/// Whether Python writes `c` unchanged: printable ASCII other than `"` and `\`.
fn is_plain(c: char) -> bool {
    matches!(c, ' '..='~') && c != '"' && c != '\\'
}

/// Writes the escape for one character that [`is_plain`] rejected.
fn write_escape(out: &mut Vec<u8>, c: char) {
    let short: &[u8] = match c {
        '"' => b"\\\"",
        '\\' => b"\\\\",
        '\n' => b"\\n",
        '\r' => b"\\r",
        '\t' => b"\\t",
        '\u{08}' => b"\\b",
        '\u{0c}' => b"\\f",
        _ => {
            let mut units = [0u16; 2];
            for &unit in c.encode_utf16(&mut units).iter() {
                write_u_escape(out, unit);
            }
            return;
        }
    };
    out.extend_from_slice(short);
}

/// Writes `\uXXXX` for one UTF-16 code unit, in lowercase hex.
fn write_u_escape(out: &mut Vec<u8>, unit: u16) {
    let nibble = |shift: u16| HEX[usize::from((unit >> shift) & 0xF)];
    out.extend_from_slice(&[b'\\', b'u', nibble(12), nibble(8), nibble(4), nibble(0)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(s: &[u8]) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).expect("write_str output must be ASCII")
    }

    #[test]
    fn plain_ascii_is_copied() {
        assert_eq!(py(b""), r#""""#);
        assert_eq!(py(b"hello world ~/"), r#""hello world ~/""#);
    }

    #[test]
    fn short_escapes_match_python() {
        assert_eq!(py(b"\"\\\n\r\t\x08\x0c"), r#""\"\\\n\r\t\b\f""#);
    }

    #[test]
    fn other_controls_and_del_use_lowercase_u_escapes() {
        // json.dumps("\x00\x1b\x1f\x7f") == '"\\u0000\\u001b\\u001f\\u007f"'
        assert_eq!(py(b"\x00\x1b\x1f\x7f"), r#""\u0000\u001b\u001f\u007f""#);
    }

    #[test]
    fn non_ascii_is_escaped_with_surrogate_pairs() {
        // json.dumps("caf\u00e9 \u20ac \U0001F600") in CPython.
        assert_eq!(
            py("caf\u{e9} \u{20ac} \u{1F600}".as_bytes()),
            r#""caf\u00e9 \u20ac \ud83d\ude00""#
        );
        assert_eq!(py("\u{FEFF}\u{ABCD}".as_bytes()), r#""\ufeff\uabcd""#);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        assert_eq!(py(b"a\xffb\xc3"), r#""a\ufffdb\ufffd""#);
        assert_eq!(py(b"\xe2\x82"), r#""\ufffd""#);
    }

    #[test]
    fn every_byte_round_trips_through_a_json_parser() {
        let all: Vec<u8> = (0..=0x7f).collect();
        let text = py(&all);
        let back: String = serde_json::from_str(&text).expect("valid JSON string");
        assert_eq!(back.as_bytes(), &all[..]);
        let unicode = "ünï 中文 🎉 \u{10FFFF}";
        let back: String = serde_json::from_str(&py(unicode.as_bytes())).expect("valid JSON");
        assert_eq!(back, unicode);
    }

    #[test]
    fn bools() {
        let mut out = Vec::new();
        write_bool(&mut out, true);
        out.extend_from_slice(ITEM_SEP);
        write_bool(&mut out, false);
        assert_eq!(out, b"true, false");
    }

    #[test]
    fn int_literal_grammar_matches_python() {
        assert_eq!(split_int_literal(b"12"), Some((false, &b"12"[..])));
        assert_eq!(split_int_literal(b"-0_7"), Some((true, &b"0_7"[..])));
        assert_eq!(split_int_literal(b"+1_000"), Some((false, &b"1_000"[..])));
        for bad in [
            &b""[..],
            b"+",
            b"-",
            b"_1",
            b"1_",
            b"1__0",
            b"+-1",
            b"+_1",
            b"0x1",
            b"1.0",
            b"1 2",
            b" 1",
        ] {
            assert_eq!(split_int_literal(bad), None, "{bad:?}");
        }
    }
}
