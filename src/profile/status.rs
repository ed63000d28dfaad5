//! The weppcloud status frame: one Redis pub/sub message (DB 2, channel `<runid>:<controller>`)
//! wrapped as the legacy Tornado status server wraps it.
//!
//! ```text
//! {"type": "status", "data": "rq:abc TRIGGER   wepp WEPP_RUN_TASK_COMPLETED"}
//! ```
//!
//! The legacy server (`status_server.py`, COMPAT 2.2) decodes the message as UTF-8 and sends
//! `json.dumps({"type": "status", "data": data})`, so the frame uses Python's default
//! separators and escapes everything outside printable ASCII (see [`super::pyjson`]).
//!
//! Invariants:
//!
//! - The message is never trimmed, split or normalised: a JSON parser gives back the published
//!   text exactly (COMPAT S4: the three-space `TRIGGER   ` convention, `EXCEPTION`, newlines,
//!   tabs, quotes, backslashes, any Unicode). Invalid UTF-8, where Python would fail to decode,
//!   becomes U+FFFD.
//! - Pure: appends to the caller's buffer, never panics. The frame is rendered once per
//!   published message and shared by every subscriber.

use super::pyjson;

/// Appends `{"type": "status", "data": "<message>"}` in Python `json.dumps` default style.
pub fn render(out: &mut Vec<u8>, message: &[u8]) {
    out.reserve(message.len() + 34);
    out.extend_from_slice(b"{\"type\": \"status\", \"data\": ");
    pyjson::write_str(out, message);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(message: &[u8]) -> String {
        let mut out = Vec::new();
        render(&mut out, message);
        String::from_utf8(out).expect("status frame is ASCII")
    }

    /// Parses the frame and returns its `data`, checking `type` on the way.
    fn data_of(frame: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(frame).expect("valid JSON");
        assert_eq!(value["type"], "status");
        assert_eq!(value.as_object().map(|o| o.len()), Some(2));
        value["data"].as_str().expect("data is a string").to_owned()
    }

    #[test]
    fn exact_bytes_match_python_json_dumps() {
        // json.dumps({"type": "status", "data": 'rq:1 TRIGGER   wepp X\n"é"\t\\'})
        let message = "rq:1 TRIGGER   wepp X\n\"\u{e9}\"\t\\";
        assert_eq!(
            rendered(message.as_bytes()),
            r#"{"type": "status", "data": "rq:1 TRIGGER   wepp X\n\"\u00e9\"\t\\"}"#
        );
        assert_eq!(rendered(b""), r#"{"type": "status", "data": ""}"#);
    }

    #[test]
    fn tricky_messages_round_trip_through_a_json_parser() {
        let messages = [
            "rq:7f3c TRIGGER   wepp WEPP_RUN_TASK_COMPLETED",
            "rq:7f3c TRIGGER   climate CLIMATE_BUILD_TASK_COMPLETED",
            "rq:7f3c EXCEPTION run_wepp_rq(my-run)",
            "rq:7f3c STARTED build_soils_rq(my-run)",
            "  leading and trailing spaces  ",
            "line one\nline two\r\nline three\n",
            "tabs\there\tand\\backslashes\\ and \"quotes\" and 'single'",
            "controls \u{0}\u{1}\u{8}\u{c}\u{1b}\u{1f}\u{7f} end",
            "unicode: caf\u{e9} \u{2014} \u{4e2d}\u{6587} \u{1F30A}\u{1F525} \u{10FFFF}",
            "json-looking {\"type\": \"ping\"} [1, 2]",
            "</script><script>alert(1)</script> \u{2028}\u{2029}",
        ];
        for message in messages {
            let frame = rendered(message.as_bytes());
            assert!(frame.is_ascii(), "{frame}");
            assert_eq!(data_of(&frame), message, "{frame}");
        }
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        let frame = rendered(b"bad \xff\xfe bytes \xc3");
        assert_eq!(data_of(&frame), "bad \u{FFFD}\u{FFFD} bytes \u{FFFD}");
    }

    #[test]
    fn appends_without_clearing() {
        let mut out = b"prefix|".to_vec();
        render(&mut out, b"x");
        assert_eq!(out, br#"prefix|{"type": "status", "data": "x"}"#);
    }
}
