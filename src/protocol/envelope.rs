//! Event envelopes: the JSON text a subscriber receives for one published event.
//!
//! An envelope is `{"channel":<name>,"data":<payload>}`, or
//! `{"channel":<name>,"pattern":<pattern>,"data":<payload>}` for a delivery through a pattern
//! subscription. A payload that is one valid JSON value is embedded byte for byte; anything else
//! becomes a JSON string.
//!
//! A key event, sent to clients that watch a key (or asked for a `snapshot` when subscribing), is
//! `{"key":<name>,"type":<redis type>,"value":<value>}`, rendered by [`render_key_event`]. The
//! value is built with [`render_key_value_hash`] (hash), [`render_string_array`] (list, set),
//! [`render_zset`] (sorted set), [`write_json_string`] (string), or is `null` (`type` `none`:
//! the key does not exist).
//!
//! **Thread:** pure functions with no state. [`render_event`] runs wherever a publish is encoded,
//! which is once per publish (encode-once), never once per subscriber. The result is shared by
//! every subscriber of the topic. The key-event functions likewise run once per key change or
//! snapshot read, not once per watcher.
//!
//! **Invariants:**
//! - Every envelope is valid JSON and valid UTF-8, so it can go out as a WebSocket text frame
//!   whatever bytes came from upstream. Invalid UTF-8 in names or non-JSON payloads is replaced
//!   with U+FFFD.
//! - A JSON payload is never re-encoded. Subscribers get exactly the bytes the publisher sent.
//! - Nothing here allocates except through growth of the caller's `out` buffer. These are
//!   hot-path functions.
//!
//! JSON validation ([`is_json`]) is `serde_json`'s: a first-byte check, then
//! `std::str::from_utf8` and `serde_json`'s value skipper (`IgnoredAny`). A hand-written scanner
//! did this until 2026-12; `benches/json_scan.rs` measured it at 0.78–1.32× serde_json on the
//! payloads the seeds send, short of the 1.5× that would justify keeping it (decision 0012).

use serde::de::IgnoredAny;

/// The bytes [`render_event`] writes when nothing needs escaping: size a buffer with it and
/// the envelope goes in without growing it.
pub fn event_len_hint(channel: &[u8], pattern: Option<&[u8]>, payload: &[u8]) -> usize {
    // Fixed text plus quotes is under 40 bytes. Escaping can make the strings longer, in which
    // case `Vec` grows again. That is rare and still correct.
    40 + channel.len() + pattern.map_or(0, <[u8]>::len) + payload.len()
}

/// Appends the JSON event envelope for one publish to `out`.
///
/// `pattern` is `Some` for a delivery through a pattern subscription. `channel` and `pattern`
/// are escaped as JSON strings, with invalid UTF-8 replaced lossily. `payload` is embedded
/// verbatim when [`is_json`] accepts it, otherwise it is written as a JSON string.
///
/// This is called once per publish (encode-once). It does not allocate apart from growing `out`,
/// and it reserves the likely size up front so that growth usually happens once.
pub fn render_event(out: &mut Vec<u8>, channel: &[u8], pattern: Option<&[u8]>, payload: &[u8]) {
    out.reserve(event_len_hint(channel, pattern, payload));

    out.extend_from_slice(b"{\"channel\":");
    write_json_string(out, channel);
    if let Some(pattern) = pattern {
        out.extend_from_slice(b",\"pattern\":");
        write_json_string(out, pattern);
    }
    out.extend_from_slice(b",\"data\":");
    if is_json(payload) {
        out.extend_from_slice(payload);
    } else {
        write_json_string(out, payload);
    }
    out.push(b'}');
}

/// Appends the JSON event for the value of a watched key to `out`:
/// `{"key":"NAME","type":"hash","value":<value_json>}`.
///
/// `key` is escaped as a JSON string, with invalid UTF-8 replaced lossily. `kind` is the Redis
/// type name (`string`, `hash`, `list`, `set`, `zset`, `stream`, `none`); it is escaped too, so
/// any text is safe. `value_json` must already be one valid JSON value (build it with
/// [`render_key_value_hash`], [`render_string_array`], [`render_zset`] or
/// [`write_json_string`]) and is embedded verbatim; `None` writes `null`. Debug builds assert
/// that it is valid JSON.
///
/// No allocation apart from growing `out`.
pub fn render_key_event(out: &mut Vec<u8>, key: &[u8], kind: &str, value_json: Option<&[u8]>) {
    let value_len = value_json.map_or(4, <[u8]>::len);
    out.reserve(32 + key.len() + kind.len() + value_len);

    out.extend_from_slice(b"{\"key\":");
    write_json_string(out, key);
    out.extend_from_slice(b",\"type\":");
    write_json_string(out, kind.as_bytes());
    out.extend_from_slice(b",\"value\":");
    match value_json {
        Some(value) => {
            debug_assert!(is_json(value), "value_json must be valid JSON");
            out.extend_from_slice(value);
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// Appends a Redis hash as a JSON object of strings to `out`: `{"f":"v",...}`, in the order
/// given. Fields and values are escaped, with invalid UTF-8 replaced lossily. Duplicate fields
/// are written as given (Redis hashes have none). No allocation apart from growing `out`.
pub fn render_key_value_hash(out: &mut Vec<u8>, pairs: &[(&[u8], &[u8])]) {
    let text_len: usize = pairs.iter().map(|(f, v)| f.len() + v.len() + 6).sum();
    out.reserve(2 + text_len);

    out.push(b'{');
    for (i, (field, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, field);
        out.push(b':');
        write_json_string(out, value);
    }
    out.push(b'}');
}

/// Appends a JSON array of strings to `out`: `["a","b"]`, for a Redis list or set. Items are
/// escaped, with invalid UTF-8 replaced lossily. No allocation apart from growing `out`.
pub fn render_string_array(out: &mut Vec<u8>, items: &[&[u8]]) {
    let text_len: usize = items.iter().map(|item| item.len() + 3).sum();
    out.reserve(2 + text_len);

    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, item);
    }
    out.push(b']');
}

/// Appends a Redis sorted set to `out` as an array of `[member, score]` pairs, in the order
/// given: `[["member",1.5],...]`.
///
/// Members are escaped, with invalid UTF-8 replaced lossily. A score is Redis's text for it.
/// When that text is a JSON number it is embedded verbatim (`1.5`, `-2`, `1e+20`); anything
/// else, such as Redis's `inf` and `-inf`, becomes a JSON string. No allocation apart from
/// growing `out`.
pub fn render_zset(out: &mut Vec<u8>, pairs: &[(&[u8], &[u8])]) {
    let text_len: usize = pairs.iter().map(|(m, s)| m.len() + s.len() + 8).sum();
    out.reserve(2 + text_len);

    out.push(b'[');
    for (i, (member, score)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        write_json_string(out, member);
        out.push(b',');
        if is_json_number(score) {
            out.extend_from_slice(score);
        } else {
            write_json_string(out, score);
        }
        out.push(b']');
    }
    out.push(b']');
}

/// Returns true when `text` is exactly one JSON number, with no whitespace around it.
///
/// A JSON number starts with `-` or a digit and ends with a digit, so those two checks rule out
/// surrounding whitespace and leave serde_json to check the grammar in between.
fn is_json_number(text: &[u8]) -> bool {
    matches!(text.first(), Some(b'-' | b'0'..=b'9'))
        && matches!(text.last(), Some(b'0'..=b'9'))
        && serde_json::from_slice::<IgnoredAny>(text).is_ok()
}

/// Returns true when `payload` is exactly one valid JSON value (RFC 8259), with optional
/// whitespace around it, and valid UTF-8 throughout.
///
/// The check is `serde_json`'s, so it rejects trailing garbage, leading zeros (`01`), a lone
/// `-`, `1.`, `.5`, `NaN`/`Infinity`, bad escapes, raw control characters in strings, invalid
/// UTF-8 and a byte-order mark. Numbers are checked against the grammar only, not a range, so
/// `1e400` is accepted. Two things RFC 8259's grammar allows are accepted too, as Python's
/// `json` and JavaScript's `JSON.parse` accept them: an unpaired UTF-16 surrogate escape
/// (`"\ud800"`), and nesting of any depth (serde_json skips values iteratively, one byte of
/// state per level, and the payload's size is already capped).
///
/// Text whose first non-whitespace byte cannot start a JSON value (a log line, say) is refused
/// before the UTF-8 check: 7.5× faster than serde_json alone on such text (`benches/json_scan.rs`).
/// Allocates only for nested input (serde_json's small stack of open brackets, once per call).
pub fn is_json(payload: &[u8]) -> bool {
    let first = payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    matches!(
        first,
        Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
    ) && std::str::from_utf8(payload)
        .is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok())
}

/// Appends `s` to `out` as a JSON string literal, quotes included.
///
/// Escapes `"`, `\` and the C0 controls as RFC 8259 requires, using the short forms (`\n`,
/// `\t`, ...) where they exist and `\u00XX` otherwise. Invalid UTF-8 sequences become U+FFFD,
/// so the output is always valid UTF-8. No allocation apart from growing `out`.
pub fn write_json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    if core::str::from_utf8(s).is_ok() {
        write_escaped(out, s);
    } else {
        for chunk in s.utf8_chunks() {
            write_escaped(out, chunk.valid().as_bytes());
            if !chunk.invalid().is_empty() {
                out.extend_from_slice("\u{FFFD}".as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Marks bytes that need escaping in a JSON string. `0` means copy as is, `b'u'` means
/// `\u00XX`, and any other value is the letter of a short escape (`\n`, `\"`, ...).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0A] = b'n';
    table[0x0C] = b'f';
    table[0x0D] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Escapes valid UTF-8 `s` into `out`, without quotes. Copies runs that need no escaping in one
/// go.
fn write_escaped(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run_start = 0;
    for (i, &b) in s.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&s[run_start..i]);
        if escape == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xF)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&s[run_start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(channel: &[u8], pattern: Option<&[u8]>, payload: &[u8]) -> String {
        let mut out = Vec::new();
        render_event(&mut out, channel, pattern, payload);
        String::from_utf8(out).expect("envelope must be UTF-8")
    }

    fn json_string(s: &[u8]) -> String {
        let mut out = Vec::new();
        write_json_string(&mut out, s);
        String::from_utf8(out).expect("JSON string must be UTF-8")
    }

    #[test]
    fn accepts_valid_json() {
        let valid: &[&str] = &[
            "[]",
            "{}",
            "\"x\"",
            "\"\"",
            "-0.5e+10",
            "0",
            "-0",
            "1",
            "123456789012345678901234567890",
            "1e400",
            "1E-2",
            "0.0",
            "10.25e3",
            "true",
            "false",
            "null",
            " \t\r\n{\"a\" : [1, 2.5, \"s\", null, true, false, {\"b\":{}}]} \n",
            "[[[[[]]]]]",
            "{\"a\":{\"b\":{\"c\":[1,{\"d\":\"e\"}]}}}",
            "\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0041 \\u00e9 \\uD83D\\uDE00\"",
            "\"h\u{e9}llo w\u{f6}rld \u{1F600} \u{4e2d}\u{6587}\"",
            "\"\u{7f}\"",
            "[\"0123456789abcdef0123456789\\\"abcdef\"]",
            "{\"\":\"\"}",
            "[1,[2,[3]],{\"k\":[]}]",
        ];
        for text in valid {
            assert!(is_json(text.as_bytes()), "should accept {text:?}");
        }
    }

    #[test]
    fn rejects_invalid_json() {
        let invalid: &[&[u8]] = &[
            b"",
            b"   ",
            b"01",
            b"-01",
            b"-",
            b"1.",
            b".5",
            b"+1",
            b"1e",
            b"1e+",
            b"1.e5",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"tru",
            b"truex",
            b"nul",
            b"True",
            b"[1,]",
            b"[,1]",
            b"{\"a\":1,}",
            b"{\"a\"}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"{1:1}",
            b"[1 2]",
            b"[1}",
            b"{\"a\":1]",
            b"[",
            b"]",
            b"{",
            b"[1]]",
            b"{} {}",
            b"1 2",
            b"\"abc",
            b"\"a\\x\"",
            b"\"a\\u12\"",
            b"\"a\\u12G4\"",
            b"\"tab\there\"",
            b"\"nl\nhere\"",
            b"\"nul\x00here\"",
            b"\"bad utf8 \xff\"",
            b"\"truncated \xe2\x82\"",
            b"\"overlong \xc0\xaf\"",
            b"\"surrogate utf8 \xed\xa0\x80\"",
            b"\xef\xbb\xbf{}",
            b"hello",
            b"'single'",
            b"[1] x",
            b"\x00",
        ];
        for text in invalid {
            assert!(
                !is_json(text),
                "should reject {:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn invalid_utf8_outside_strings_is_rejected() {
        assert!(!is_json(b"[1,\xff]"));
        assert!(!is_json(b"1\xff"));
    }

    #[test]
    fn unpaired_surrogate_escapes_are_accepted_as_the_grammar_allows() {
        // RFC 8259 section 8.2: the grammar allows them; Python's json and JSON.parse accept them.
        for text in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#"["\ud800x"]"#,
        ] {
            assert!(is_json(text.as_bytes()), "should accept {text}");
        }
        assert!(!is_json(br#""\ud80""#), "a short escape is still refused");
    }

    #[test]
    fn deep_nesting_is_accepted_without_recursion() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(is_json(nested(1_000_000).as_bytes()));
        let objects = |depth: usize| format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert!(is_json(objects(10_000).as_bytes()));
        // Unbalanced at depth is still refused.
        let mut open = nested(1_000_000);
        open.pop();
        assert!(!is_json(open.as_bytes()));
    }

    #[test]
    fn text_that_is_not_json_is_refused_whatever_its_first_byte() {
        // Most never reach serde_json (the first-byte check); the log line starts like a number
        // and is refused by serde_json.
        for text in [
            &b"GET / HTTP/1.1"[..],
            b"2026-12-04 INFO ok",
            b"\xff\xfe",
            b"+1",
            b" x",
        ] {
            assert!(!is_json(text), "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn long_strings_hit_every_word_offset() {
        // The special byte at each offset of an eight-byte word (serde_json and std skip strings
        // a word at a time).
        for len in 0..40 {
            let body = "a".repeat(len);
            assert!(is_json(format!("\"{body}\"").as_bytes()), "len {len}");
            assert!(
                is_json(format!("\"{body}\\n{body}\"").as_bytes()),
                "len {len}"
            );
            assert!(
                !is_json(format!("\"{body}\n{body}\"").as_bytes()),
                "len {len}"
            );
            assert!(!is_json(format!("\"{body}").as_bytes()), "len {len}");
            let mut bad = format!("\"{body}\u{e9}{body}\"").into_bytes();
            assert!(is_json(&bad), "len {len}");
            // Cut the two-byte sequence in half.
            bad.remove(len + 2);
            assert!(!is_json(&bad), "len {len}");
        }
    }

    #[test]
    fn bytes_above_0x80_do_not_trip_the_control_test() {
        // 0xA2 - 0x20 = 0x82 has its high bit set, but a byte >= 0x80 is never a control.
        assert!(is_json(
            "\"\u{a2}\u{a2}\u{a2}\u{a2}\u{a2}\u{a2}\u{a2}\u{a2}\"".as_bytes()
        ));
        assert!(is_json(
            "\"\u{a0}\u{a0}\u{a0}\u{a0}\u{a0}\u{a0}\u{a0}\u{a0}\"".as_bytes()
        ));
    }

    #[test]
    fn event_embeds_json_payload_verbatim() {
        assert_eq!(
            event(b"a", None, b"{\"x\": 1.50}"),
            r#"{"channel":"a","data":{"x": 1.50}}"#
        );
        assert_eq!(event(b"a", None, b"42"), r#"{"channel":"a","data":42}"#);
        assert_eq!(event(b"a", None, b"\"s\""), r#"{"channel":"a","data":"s"}"#);
        assert_eq!(event(b"a", None, b"true"), r#"{"channel":"a","data":true}"#);
        // Surrounding whitespace is kept: byte for byte, and still valid JSON.
        assert_eq!(
            event(b"a", None, b" [1] \n"),
            "{\"channel\":\"a\",\"data\": [1] \n}"
        );
    }

    #[test]
    fn event_with_pattern() {
        assert_eq!(
            event(b"news.x", Some(b"news.*"), b"null"),
            r#"{"channel":"news.x","pattern":"news.*","data":null}"#
        );
    }

    #[test]
    fn non_json_payload_becomes_string() {
        assert_eq!(
            event(b"a", None, b"hello"),
            r#"{"channel":"a","data":"hello"}"#
        );
        assert_eq!(event(b"a", None, b""), r#"{"channel":"a","data":""}"#);
        assert_eq!(event(b"a", None, b"01"), r#"{"channel":"a","data":"01"}"#);
        assert_eq!(
            event(b"a", None, b"say \"hi\"\n"),
            r#"{"channel":"a","data":"say \"hi\"\n"}"#
        );
        assert_eq!(
            event(b"a", None, b"bad \xff utf8"),
            "{\"channel\":\"a\",\"data\":\"bad \u{FFFD} utf8\"}"
        );
    }

    #[test]
    fn names_are_escaped_lossily() {
        assert_eq!(
            event(b"a\"b\\c\xfe", Some(b"p\x01"), b"1"),
            "{\"channel\":\"a\\\"b\\\\c\u{FFFD}\",\"pattern\":\"p\\u0001\",\"data\":1}"
        );
    }

    #[test]
    fn every_envelope_is_valid_json() {
        let payloads: &[&[u8]] = &[b"1", b"x", b"\xff\xfe", b"{\"a\":[1,2]}", b"[", b"\x00\x1f"];
        let names: &[&[u8]] = &[b"a", b"", b"\"", b"\xc3", b"\xe2\x82\xac", b"\x7f\n"];
        for &payload in payloads {
            for &channel in names {
                for pattern in [None, Some(channel)] {
                    let text = event(channel, pattern, payload);
                    let value: serde_json::Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"));
                    let expected_data = if is_json(payload) {
                        serde_json::from_slice::<serde_json::Value>(payload).expect("valid")
                    } else {
                        serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
                    };
                    assert_eq!(value["data"], expected_data);
                    assert_eq!(value["channel"], *String::from_utf8_lossy(channel));
                }
            }
        }
    }

    #[test]
    fn write_json_string_escapes() {
        assert_eq!(json_string(b""), r#""""#);
        assert_eq!(json_string(b"plain"), r#""plain""#);
        assert_eq!(
            json_string(b"\"\\/\x08\x0c\n\r\t\x00\x1f\x7f"),
            "\"\\\"\\\\/\\b\\f\\n\\r\\t\\u0000\\u001f\x7f\""
        );
        assert_eq!(
            json_string("\u{e9}\u{1F600}".as_bytes()),
            "\"\u{e9}\u{1F600}\""
        );
        assert_eq!(
            json_string(b"\xff\xfeok\xc3"),
            "\"\u{FFFD}\u{FFFD}ok\u{FFFD}\""
        );
        // Round trip through serde_json for every byte value.
        let all: Vec<u8> = (0..=0x7f).collect();
        let text = json_string(&all);
        let back: String = serde_json::from_str(&text).expect("valid JSON string");
        assert_eq!(back.as_bytes(), &all[..]);
    }

    fn key_event(key: &[u8], kind: &str, value: Option<&[u8]>) -> String {
        let mut out = Vec::new();
        render_key_event(&mut out, key, kind, value);
        String::from_utf8(out).expect("key event must be UTF-8")
    }

    fn hash(pairs: &[(&[u8], &[u8])]) -> String {
        let mut out = Vec::new();
        render_key_value_hash(&mut out, pairs);
        String::from_utf8(out).expect("hash must be UTF-8")
    }

    fn array(items: &[&[u8]]) -> String {
        let mut out = Vec::new();
        render_string_array(&mut out, items);
        String::from_utf8(out).expect("array must be UTF-8")
    }

    fn zset(pairs: &[(&[u8], &[u8])]) -> String {
        let mut out = Vec::new();
        render_zset(&mut out, pairs);
        String::from_utf8(out).expect("zset must be UTF-8")
    }

    #[test]
    fn key_event_matches_the_wire_format() {
        assert_eq!(
            key_event(b"NAME", "hash", Some(br#"{"f":"v"}"#)),
            r#"{"key":"NAME","type":"hash","value":{"f":"v"}}"#
        );
        assert_eq!(
            key_event(b"gone", "none", None),
            r#"{"key":"gone","type":"none","value":null}"#
        );
        assert_eq!(
            key_event(b"n", "string", Some(br#""42""#)),
            r#"{"key":"n","type":"string","value":"42"}"#
        );
        // The value is embedded byte for byte, whitespace and number text included.
        assert_eq!(
            key_event(b"z", "zset", Some(b"[ [\"m\", 1.50] ]")),
            r#"{"key":"z","type":"zset","value":[ ["m", 1.50] ]}"#
        );
        // Appends to what is already there.
        let mut out = b"prefix".to_vec();
        render_key_event(&mut out, b"k", "list", Some(b"[]"));
        assert_eq!(out, br#"prefix{"key":"k","type":"list","value":[]}"#);
    }

    #[test]
    fn key_event_escapes_key_and_kind() {
        assert_eq!(
            key_event(b"a\"b\\c\n\xff", "t\"", None),
            "{\"key\":\"a\\\"b\\\\c\\n\u{FFFD}\",\"type\":\"t\\\"\",\"value\":null}"
        );
        let text = key_event("\u{e9}\u{1F600}\x01".as_bytes(), "set", Some(b"[\"x\"]"));
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["key"], "\u{e9}\u{1F600}\u{1}");
        assert_eq!(value["type"], "set");
        assert_eq!(value["value"], serde_json::json!(["x"]));
    }

    #[test]
    fn hash_renders_an_object_of_strings() {
        assert_eq!(hash(&[]), "{}");
        assert_eq!(hash(&[(b"f", b"v")]), r#"{"f":"v"}"#);
        assert_eq!(
            hash(&[(b"a", b"1"), (b"b", b"{\"x\":2}"), (b"", b"")]),
            r#"{"a":"1","b":"{\"x\":2}","":""}"#
        );
        assert_eq!(
            hash(&[
                (b"q\"\\", b"line\nbreak\x00"),
                (b"\xfe", "\u{e9}".as_bytes())
            ]),
            "{\"q\\\"\\\\\":\"line\\nbreak\\u0000\",\"\u{FFFD}\":\"\u{e9}\"}"
        );
        let mut out = b"x".to_vec();
        render_key_value_hash(&mut out, &[(b"k", b"v")]);
        assert_eq!(out, br#"x{"k":"v"}"#);
    }

    #[test]
    fn string_array_renders_strings() {
        assert_eq!(array(&[]), "[]");
        assert_eq!(array(&[b"a", b"b"]), r#"["a","b"]"#);
        assert_eq!(
            array(&[b"", b"1", b"\"\\", b"\t\xc3", "\u{1F600}".as_bytes()]),
            "[\"\",\"1\",\"\\\"\\\\\",\"\\t\u{FFFD}\",\"\u{1F600}\"]"
        );
        let mut out = b"x".to_vec();
        render_string_array(&mut out, &[b"y"]);
        assert_eq!(out, br#"x["y"]"#);
    }

    #[test]
    fn zset_embeds_numeric_scores_and_quotes_the_rest() {
        assert_eq!(zset(&[]), "[]");
        assert_eq!(
            zset(&[(b"member", b"1.5"), (b"b", b"-2"), (b"c", b"0")]),
            r#"[["member",1.5],["b",-2],["c",0]]"#
        );
        assert_eq!(
            zset(&[(b"big", b"1.0000000000000001e+20"), (b"small", b"-1E-5")]),
            r#"[["big",1.0000000000000001e+20],["small",-1E-5]]"#
        );
        assert_eq!(
            zset(&[(b"hi", b"inf"), (b"lo", b"-inf"), (b"nan", b"nan")]),
            r#"[["hi","inf"],["lo","-inf"],["nan","nan"]]"#
        );
        // Text that is not exactly one JSON number is a string: JSON of another type,
        // whitespace, leading zeros, a bare sign, a trailing dot, plus signs.
        for score in [
            &b"\"1\""[..],
            b"true",
            b"null",
            b"[1]",
            b" 1",
            b"1 ",
            b"01",
            b"-",
            b"1.",
            b"+1",
            b"",
            b"1e",
            b"1\xff",
        ] {
            let text = zset(&[(b"m", score)]);
            let value: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text} is not JSON: {e}"));
            assert!(
                value[0][1].is_string(),
                "{:?} gave {text}",
                String::from_utf8_lossy(score)
            );
        }
        assert_eq!(zset(&[(b"q\"\n\xff", b"2")]), "[[\"q\\\"\\n\u{FFFD}\",2]]");
        let mut out = b"x".to_vec();
        render_zset(&mut out, &[(b"m", b"1")]);
        assert_eq!(out, br#"x[["m",1]]"#);
    }

    #[test]
    fn key_values_nest_into_valid_key_events() {
        let names: &[&[u8]] = &[b"a", b"", b"\"", b"\xc3", b"\xe2\x82\xac", b"\x7f\n"];
        let pairs: Vec<(&[u8], &[u8])> = names.iter().map(|&n| (n, n)).collect();
        let scores: Vec<(&[u8], &[u8])> = names
            .iter()
            .zip([&b"1"[..], b"inf", b"-0.5", b"-inf", b"3e2", b"x"])
            .map(|(&n, s)| (n, s))
            .collect();
        let mut values: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut value = Vec::new();
        render_key_value_hash(&mut value, &pairs);
        values.push(("hash", value));
        let mut value = Vec::new();
        render_string_array(&mut value, names);
        values.push(("list", value));
        let mut value = Vec::new();
        render_zset(&mut value, &scores);
        values.push(("zset", value));
        let mut value = Vec::new();
        write_json_string(&mut value, b"str\xff");
        values.push(("string", value));
        for (kind, value) in &values {
            assert!(
                is_json(value),
                "{kind}: {:?}",
                String::from_utf8_lossy(value)
            );
            for &key in names {
                let text = key_event(key, kind, Some(value));
                let parsed: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"));
                assert_eq!(parsed["key"], *String::from_utf8_lossy(key));
                assert_eq!(parsed["type"], *kind);
                let expected: serde_json::Value =
                    serde_json::from_slice(value).expect("valid value");
                assert_eq!(parsed["value"], expected);
            }
        }
    }

    #[test]
    fn render_event_appends() {
        let mut out = b"prefix".to_vec();
        render_event(&mut out, b"c", None, b"1");
        assert_eq!(out, b"prefix{\"channel\":\"c\",\"data\":1}");
    }

    /// A small deterministic PRNG (xorshift64*), so the test needs no extra crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    /// Appends a random, usually valid, JSON value.
    fn gen_value(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
        const WS: &[&[u8]] = &[b"", b"", b"", b" ", b"\n", b"\t", b"\r\n  "];
        const NUMBERS: &[&[u8]] = &[
            b"0",
            b"-0",
            b"1",
            b"-12",
            b"3.25",
            b"-0.5e+10",
            b"1E5",
            b"2e-3",
            b"10",
            b"99999999",
            b"1.0",
            b"0.001",
        ];
        const STRINGS: &[&[u8]] = &[
            b"\"\"",
            b"\"abc\"",
            b"\"with space and a long-ish tail\"",
            b"\"esc \\\" \\\\ \\n \\u00e9 \\uD83D\\uDE00\"",
            "\"\u{e9}t\u{e9} \u{4e2d} \u{1F600}\"".as_bytes(),
            b"\"/\\/\"",
        ];
        out.extend_from_slice(rng.pick(WS));
        let choice = if depth >= 6 {
            rng.below(6)
        } else {
            rng.below(9)
        };
        match choice {
            0 | 1 => out.extend_from_slice(rng.pick(NUMBERS)),
            2 | 3 => out.extend_from_slice(rng.pick(STRINGS)),
            4 => out.extend_from_slice(rng.pick(&[&b"true"[..], b"false", b"null"])),
            5 => out.extend_from_slice(b"[]"),
            6 | 7 => {
                out.push(b'[');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(b',');
                    }
                    gen_value(rng, out, depth + 1);
                }
                out.push(b']');
            }
            _ => {
                out.push(b'{');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(rng.pick(WS));
                    out.extend_from_slice(rng.pick(STRINGS));
                    out.extend_from_slice(rng.pick(WS));
                    out.push(b':');
                    gen_value(rng, out, depth + 1);
                }
                out.push(b'}');
            }
        }
        out.extend_from_slice(rng.pick(WS));
    }

    /// Damages `input` in one of several ways, to produce near-miss invalid inputs.
    fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
        const BYTES: &[u8] = b"{}[],:\"\\ -+.0123456789eEtrufalsn\x00\x1f\n\xff\xc3\xa9\xedu";
        if input.is_empty() {
            input.push(rng.pick(BYTES));
            return;
        }
        let at = rng.below(input.len());
        match rng.below(4) {
            0 => input[at] = rng.pick(BYTES),
            1 => input.insert(at, rng.pick(BYTES)),
            2 => {
                input.remove(at);
            }
            _ => input.truncate(at),
        }
    }

    /// The oracle: `serde_json` parsing into a `Value`, which checks UTF-8 and builds the tree
    /// (so it also checks the first-byte shortcut). `None` when it fails only for what
    /// [`is_json`] accepts on purpose: a number beyond `f64`, an unpaired surrogate escape, or
    /// nesting beyond its recursion limit.
    fn serde_accepts(input: &[u8]) -> Option<bool> {
        match serde_json::from_slice::<serde_json::Value>(input) {
            Ok(_) => Some(true),
            Err(e) => {
                let why = e.to_string();
                let on_purpose = [
                    "number out of range",
                    "lone leading surrogate",
                    "unexpected end of hex escape",
                    "recursion limit exceeded",
                ];
                if on_purpose.iter().any(|p| why.starts_with(p)) {
                    None
                } else {
                    Some(false)
                }
            }
        }
    }

    #[test]
    fn agrees_with_serde_json_on_generated_inputs() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut valid, mut invalid, mut compared) = (0, 0, 0);
        for round in 0..3_000 {
            let mut input = Vec::new();
            gen_value(&mut rng, &mut input, 0);
            // Two thirds of the inputs get one to three mutations.
            if round % 3 != 0 {
                for _ in 0..=rng.below(3) {
                    mutate(&mut rng, &mut input);
                }
            }
            let Some(expected) = serde_accepts(&input) else {
                continue;
            };
            assert_eq!(
                is_json(&input),
                expected,
                "disagreement on {:?}",
                String::from_utf8_lossy(&input)
            );
            compared += 1;
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        assert!(compared > 2_900, "compared {compared}");
        assert!(
            valid > 1_000 && invalid > 500,
            "valid {valid}, invalid {invalid}"
        );
    }

    #[test]
    fn agrees_with_serde_json_on_random_short_inputs() {
        // Short strings over an alphabet of JSON-significant bytes hit odd corners.
        const ALPHABET: &[u8] = b"{}[],:\"\\ 0123-.eE+tfn\x01\xc3\xa9ux";
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let len = rng.below(8);
            let input: Vec<u8> = (0..len).map(|_| rng.pick(ALPHABET)).collect();
            if let Some(expected) = serde_accepts(&input) {
                assert_eq!(
                    is_json(&input),
                    expected,
                    "disagreement on {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }
}
