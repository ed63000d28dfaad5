//! Python compatibility helpers: JSON written the way Python's `json.dumps` writes it with its
//! default settings (strings, booleans, floats as `repr(float)`), and the grammar of Python's
//! `int()`.
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
    let digits = half_even_digits(x.abs(), digits, decpt);
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

/// The digits CPython picks where Rust's differ: both write the shortest digits that round-trip,
/// closest to the exact value, but on an exact tie (the double's exact decimal expansion is one
/// digit longer and ends in 5) CPython's `_Py_dg_dtoa` rounds half to even and Rust rounds up.
/// Float32 values widened to doubles have short expansions, so ties are common among them:
/// `204.663238525390625` is `204.66323852539062` in Python and `…063` from Rust's `{:e}`. The
/// even neighbour is taken only when it round-trips too (below a power of two the gap is half as
/// wide: `2**-24` stays `5.960464477539063e-08`).
fn half_even_digits(abs: f64, digits: String, decpt: i32) -> String {
    let Some(exact) = exact_tie_significand(abs) else {
        return digits;
    };
    if exact.to_string().len() != digits.len() + 1 {
        return digits;
    }
    let low = exact / 10;
    let even = if low % 2 == 0 { low } else { low + 1 }.to_string();
    if even.len() != digits.len() || even == digits {
        return digits;
    }
    match format!("0.{even}e{decpt}").parse::<f64>() {
        Ok(back) if back == abs => even,
        _ => digits,
    }
}

/// The exact decimal significand of a finite `abs > 0` (its digits without trailing zeros) when
/// it ends in 5 and has at most 18 digits, the only case where a shortest repr can be a tie.
fn exact_tie_significand(abs: f64) -> Option<u128> {
    let bits = abs.to_bits();
    let biased = i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let fraction = bits & ((1 << 52) - 1);
    let (significand, exp2) = match biased {
        0 => (fraction, -1074),
        _ => (fraction | 1 << 52, biased - 1075),
    };
    if significand == 0 {
        return None;
    }
    let zeros = significand.trailing_zeros();
    let m = u128::from(significand >> zeros);
    let exp2 = exp2 + i32::try_from(zeros).unwrap_or(0);
    let t = if exp2 < 0 {
        // m·2^-k = m·5^k / 10^k; 5^26 alone has 19 digits.
        let k = exp2.unsigned_abs();
        if k > 25 {
            return None;
        }
        m * 5u128.pow(k)
    } else {
        // m·2^p ends in 5 after its zeros only as T·10^p, so 5^p divides m (< 2^53 < 5^23).
        let p = exp2.unsigned_abs();
        if p > 22 || m % 5u128.pow(p) != 0 {
            return None;
        }
        m / 5u128.pow(p)
    };
    (t % 10 == 5 && t < 10u128.pow(18)).then_some(t)
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

    fn float(v: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, v);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn floats_match_python_repr() {
        // json.dumps([...], separators=(",", ":")) in CPython 3.11.
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (9_999_999_999_999_998.0, "9999999999999998.0"),
            (123_456_789_012_345_678.0, "1.2345678901234568e+17"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for &(v, want) in cases {
            assert_eq!(float(v), want, "{v:e}");
        }
    }

    #[test]
    fn float32_values_are_widened_first() {
        // repr(float(numpy.float32(x))) in CPython.
        let cases: &[(f32, &str)] = &[
            (-2.277_430_5, "-2.277430534362793"),
            (10.1, "10.100000381469727"),
            (1e-05, "9.999999747378752e-06"),
            (0.3, "0.30000001192092896"),
            (f32::MAX, "3.4028234663852886e+38"),
            (1e-45, "1.401298464324817e-45"),
        ];
        for &(v, want) in cases {
            assert_eq!(float(f64::from(v)), want, "{v:e}");
        }
    }

    #[test]
    fn exact_ties_round_half_even_as_python_does() {
        // float32 values widened: the exact expansion ends in 5 one digit past the shortest.
        assert_eq!(float(f64::from(-204.663_24_f32)), "-204.66323852539062");
        assert_eq!(float(f64::from(588.515_44_f32)), "588.5154418945312");
        assert_eq!(float(f64::from(133.141_75_f32)), "133.14175415039062");
        // Below a power of two the lower neighbour does not round-trip: Python keeps ...063.
        assert_eq!(float(2f64.powi(-24)), "5.960464477539063e-08");
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(2.5), "2.5");
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
