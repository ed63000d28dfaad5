//! A JSON object read the way Python's `json.loads` reads it and written back the way
//! `json.dumps` writes it, with `ess_ordinal` and `ess_timestamp` set: the Squonk2 ESS
//! transform of a JSON body, byte for byte.
//!
//! What Python does, and so what this does:
//! - keys keep their order; a duplicate key keeps its first position and takes the last value
//!   (a `dict` built pair by pair); setting `ess_ordinal`/`ess_timestamp` appends them last
//!   unless the object already had them, where they stay in place;
//! - strings are written `ensure_ascii`: printable ASCII as is, `\"` `\\` `\n` `\r` `\t` `\b`
//!   `\f`, everything else `\uXXXX` in lowercase hex, with surrogate pairs above U+FFFF (lone
//!   surrogates from `\ud800` escapes survive as they are);
//! - integers keep their digits (`-0` becomes `0`; more than 4,300 digits is an error, as
//!   Python's `int()` limit); numbers with a fraction or exponent become floats written as
//!   `repr(float)` (`1e+16`, `1e-05`, `100000.0`, `Infinity` on overflow); `NaN`, `Infinity`,
//!   `-Infinity` are accepted and written back;
//! - separators `", "` and `": "`; raw control characters in strings, trailing commas, single
//!   quotes, leading zeros and extra data are errors, as in Python.
//!
//! Bounds: nesting deeper than [`MAX_DEPTH`] is refused (Python would hit its recursion limit
//! near 1,000 and raise; either way the message is dropped).
//!
//! Thread: pure, any thread (the stream source's driver).

use indexmap::IndexMap;

use crate::profile::pyjson::{ITEM_SEP, KEY_SEP, write_float};

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 512;

/// Python's default limit on the digits of an `int` parsed from text.
pub const MAX_INT_DIGITS: usize = 4_300;

/// Why a body is not the JSON Python would accept (the publisher's fault; the message is
/// dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {at}: {what}")]
pub struct JsonError {
    /// Byte position in the body.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

/// A parsed value; scalars are kept already rendered.
#[derive(Debug)]
enum Value {
    Scalar(Vec<u8>),
    Array(Vec<Value>),
    Object(IndexMap<Vec<u8>, Value>),
}

/// Parses `src` (a JSON object), sets `ess_ordinal` and `ess_timestamp`, and appends the
/// result in `json.dumps` style to `out`. On error `out` may hold a partial write; the caller
/// discards it.
pub fn write_with_ess(
    src: &str,
    ordinal: u64,
    timestamp_ms: i64,
    out: &mut Vec<u8>,
) -> Result<(), JsonError> {
    let mut p = Parser {
        s: src.as_bytes(),
        pos: 0,
    };
    p.ws();
    if p.peek() != Some(b'{') {
        return Err(p.err("expected an object"));
    }
    let mut value = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("extra data"));
    }
    if let Value::Object(map) = &mut value {
        map.insert(b"\"ess_ordinal\"".to_vec(), scalar(ordinal));
        map.insert(b"\"ess_timestamp\"".to_vec(), scalar(timestamp_ms));
    }
    write(&value, out);
    Ok(())
}

fn scalar(n: impl std::fmt::Display) -> Value {
    Value::Scalar(n.to_string().into_bytes())
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Scalar(b) => out.extend_from_slice(b),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(ITEM_SEP);
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(ITEM_SEP);
                }
                out.extend_from_slice(k);
                out.extend_from_slice(KEY_SEP);
                write(item, out);
            }
            out.push(b'}');
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError { at: self.pos, what }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        let hit = self.s[self.pos..].starts_with(lit);
        if hit {
            self.pos += lit.len();
        }
        hit
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deep"));
        }
        let lit = |s: &str| Ok(Value::Scalar(s.as_bytes().to_vec()));
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => {
                let mut out = Vec::new();
                self.string(&mut out)?;
                Ok(Value::Scalar(out))
            }
            _ if self.eat(b"null") => lit("null"),
            _ if self.eat(b"true") => lit("true"),
            _ if self.eat(b"false") => lit("false"),
            _ if self.eat(b"NaN") => lit("NaN"),
            _ if self.eat(b"Infinity") => lit("Infinity"),
            _ if self.eat(b"-Infinity") => lit("-Infinity"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err("expected a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.pos += 1;
        let mut map = IndexMap::new();
        self.ws();
        if self.eat(b"}") {
            return Ok(Value::Object(map));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a key"));
            }
            let mut key = Vec::new();
            self.string(&mut key)?;
            self.ws();
            if !self.eat(b":") {
                return Err(self.err("expected ':'"));
            }
            self.ws();
            let v = self.value(depth + 1)?;
            map.insert(key, v);
            self.ws();
            if self.eat(b"}") {
                return Ok(Value::Object(map));
            }
            if !self.eat(b",") {
                return Err(self.err("expected ',' or '}'"));
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat(b"]") {
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            if self.eat(b"]") {
                return Ok(Value::Array(items));
            }
            if !self.eat(b",") {
                return Err(self.err("expected ',' or ']'"));
            }
        }
    }

    /// Reads a string literal and writes it re-escaped, quotes included.
    fn string(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        self.pos += 1;
        out.push(b'"');
        loop {
            let rest = &self.s[self.pos..];
            let run = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
                .ok_or_else(|| self.err("unterminated string"))?;
            out.extend_from_slice(&rest[..run]);
            self.pos += run;
            match self.s[self.pos] {
                b'"' => {
                    self.pos += 1;
                    out.push(b'"');
                    return Ok(());
                }
                b'\\' => self.escape(out)?,
                b if b < 0x20 => return Err(self.err("control character in string")),
                _ => {
                    // Non-ASCII (or DEL): the input is a `str`, so this is a whole character.
                    let len = match self.s[self.pos] {
                        0x00..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    let c = self
                        .s
                        .get(self.pos..self.pos + len)
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|t| t.chars().next())
                        .ok_or_else(|| self.err("invalid UTF-8"))?;
                    self.pos += c.len_utf8();
                    write_char_escape(out, u32::from(c));
                }
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        let e = self.s.get(self.pos + 1).copied();
        self.pos += 2;
        let short: &[u8] = match e {
            Some(b'"') => b"\\\"",
            Some(b'\\') => b"\\\\",
            Some(b'/') => b"/",
            Some(b'b') => b"\\b",
            Some(b'f') => b"\\f",
            Some(b'n') => b"\\n",
            Some(b'r') => b"\\r",
            Some(b't') => b"\\t",
            Some(b'u') => {
                let hex = self
                    .s
                    .get(self.pos..self.pos + 4)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .ok_or_else(|| self.err("bad \\u escape"))?;
                let cp = hex.iter().fold(0u32, |acc, &h| acc * 16 + hex_value(h));
                self.pos += 4;
                write_char_escape(out, cp);
                return Ok(());
            }
            _ => return Err(self.err("invalid escape")),
        };
        out.extend_from_slice(short);
        Ok(())
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        let negative = self.eat(b"-");
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("expected a digit")),
        }
        let int_digits = self.pos - int_start;
        let mut float = false;
        if self.peek() == Some(b'.') && self.s.get(self.pos + 1).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
            self.digits();
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mark = self.pos;
            self.pos += 1;
            let _ = self.eat(b"+") || self.eat(b"-");
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.digits();
                float = true;
            } else {
                self.pos = mark; // Python's regex does not take a bare `e`: extra data follows.
            }
        }
        let text = &self.s[start..self.pos];
        if float {
            let t = std::str::from_utf8(text).map_err(|_| self.err("bad number"))?;
            let x: f64 = t.parse().map_err(|_| self.err("bad number"))?;
            let mut out = Vec::new();
            write_float(&mut out, x);
            return Ok(Value::Scalar(out));
        }
        if int_digits > MAX_INT_DIGITS {
            return Err(self.err("integer exceeds 4300 digits"));
        }
        Ok(Value::Scalar(if negative && text == b"-0" {
            b"0".to_vec()
        } else {
            text.to_vec()
        }))
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

fn hex_value(h: u8) -> u32 {
    match h {
        b'0'..=b'9' => u32::from(h - b'0'),
        b'a'..=b'f' => u32::from(h - b'a' + 10),
        _ => u32::from(h.to_ascii_lowercase().wrapping_sub(b'a')) + 10,
    }
}

/// Writes code point `cp` as Python's `ensure_ascii` does for a character outside printable
/// ASCII (or for any character that arrived as a `\u` escape).
fn write_char_escape(out: &mut Vec<u8>, cp: u32) {
    match cp {
        0x22 => out.extend_from_slice(b"\\\""),
        0x5c => out.extend_from_slice(b"\\\\"),
        0x0a => out.extend_from_slice(b"\\n"),
        0x0d => out.extend_from_slice(b"\\r"),
        0x09 => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        0x20..0x7f => out.push(u8::try_from(cp).unwrap_or(b'?')),
        0x1_0000.. => {
            let v = cp - 0x1_0000;
            u_escape(out, 0xd800 | (v >> 10));
            u_escape(out, 0xdc00 | (v & 0x3ff));
        }
        _ => u_escape(out, cp),
    }
}

fn u_escape(out: &mut Vec<u8>, unit: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        let nibble = usize::try_from((unit >> shift) & 0xf).unwrap_or(0);
        out.push(HEX[nibble]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ess(src: &str) -> Result<String, JsonError> {
        let mut out = Vec::new();
        write_with_ess(src, 7, 1_700_000_000_000, &mut out)?;
        Ok(String::from_utf8(out).expect("ASCII"))
    }

    #[test]
    fn appends_ess_keys_last_in_python_style() {
        assert_eq!(
            ess(r#"{"b":1,"a":{"z":[1,2,{}],"y":[]}}"#).unwrap(),
            r#"{"b": 1, "a": {"z": [1, 2, {}], "y": []}, "ess_ordinal": 7, "ess_timestamp": 1700000000000}"#
        );
        assert_eq!(
            ess("{}").unwrap(),
            r#"{"ess_ordinal": 7, "ess_timestamp": 1700000000000}"#
        );
        assert_eq!(
            ess(" \r\n{ \"k\" :\tnull } \n").unwrap(),
            r#"{"k": null, "ess_ordinal": 7, "ess_timestamp": 1700000000000}"#
        );
    }

    #[test]
    fn duplicate_and_existing_keys_behave_like_a_python_dict() {
        assert_eq!(
            ess(r#"{"a":1,"b":2,"a":3,"ess_ordinal":"x"}"#).unwrap(),
            r#"{"a": 3, "b": 2, "ess_ordinal": 7, "ess_timestamp": 1700000000000}"#
        );
    }

    #[test]
    fn strings_are_ascii_escaped() {
        assert_eq!(
            ess("{\"k\":\"caf\u{e9} \u{1f600} \\u00E9 \\ud83d\\ude00 \\ud800 \\/ \\\" \\\\ \\n\\r\\t\\b\\f \u{7f}\"}")
                .unwrap(),
            r#"{"k": "caf\u00e9 \ud83d\ude00 \u00e9 \ud83d\ude00 \ud800 / \" \\ \n\r\t\b\f \u007f", "ess_ordinal": 7, "ess_timestamp": 1700000000000}"#
        );
        assert_eq!(
            ess("{\"\\u0001\u{100}\":true}").unwrap(),
            r#"{"\u0001\u0100": true, "ess_ordinal": 7, "ess_timestamp": 1700000000000}"#
        );
    }

    #[test]
    fn numbers_are_written_as_python_writes_them() {
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            ("-12", "-12"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("1.0", "1.0"),
            ("-0.0", "-0.0"),
            ("1.5", "1.5"),
            ("1e5", "100000.0"),
            ("1E16", "1e+16"),
            ("1e15", "1000000000000000.0"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("1.25e-7", "1.25e-07"),
            ("123.456", "123.456"),
            ("0.1", "0.1"),
            ("1.5e300", "1.5e+300"),
            ("1e400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("NaN", "NaN"),
            ("-Infinity", "-Infinity"),
            ("3.141592653589793", "3.141592653589793"),
            ("2.5e-324", "5e-324"),
        ];
        for (src, want) in cases {
            let got = ess(&format!("{{\"n\":{src}}}")).unwrap();
            let want =
                format!(r#"{{"n": {want}, "ess_ordinal": 7, "ess_timestamp": 1700000000000}}"#);
            assert_eq!(got, want, "{src}");
        }
    }

    #[test]
    fn invalid_json_is_refused() {
        for bad in [
            "{",
            "{\"a\":1,}",
            "{'a':1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":tru}",
            "{\"a\":\"x\ty\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":1} x",
            "{\"a\":1}{}",
            "{a:1}",
            "{\"a\" 1}",
            "[1]",
            "{\"a\":[1,]}",
            "{\"a\":\"unterminated}",
        ] {
            assert!(ess(bad).is_err(), "{bad}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(600), "]".repeat(600));
        assert_eq!(ess(&deep).unwrap_err().what, "nested too deep");
        let ok_deep = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(ess(&ok_deep).is_ok());
        let long = format!("{{\"a\":{}}}", "9".repeat(4_301));
        assert!(ess(&long).is_err());
        let fine = format!("{{\"a\":{}}}", "9".repeat(4_300));
        assert!(ess(&fine).is_ok());
    }
}
