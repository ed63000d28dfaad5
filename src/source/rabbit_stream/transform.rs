//! The Squonk2 ESS message transform (COMPAT.md 6.2, "Message transform"), byte for byte:
//! one stream message's body, offset and chunk timestamp in, one complete WebSocket text frame
//! (or nothing) out.
//!
//! Rules, in the original's order: the body is decoded as UTF-8; exactly `POISON` ends the
//! consumer and forwards nothing; a body starting with `{` is parsed as JSON and re-written in
//! Python `json.dumps` style with `ess_ordinal` and `ess_timestamp` set
//! ([`super::pyjson_object`]), and dropped when it is not valid JSON; any other non-empty body
//! becomes `<body>|ordinal: N|timestamp: T`; an empty body is dropped.
//!
//! Thread: pure, any thread (the stream source's driver). The frame is encoded once here and
//! shared (`Bytes`) from then on.

use bytes::Bytes;

use super::pyjson_object;
use crate::ws::frame::{FrameBuilder, OpCode};

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    /// A complete text frame to send.
    Frame(Bytes),
    /// The body was `POISON`: the stream is being deleted; end the consumer.
    Poison,
    /// Nothing to send.
    Dropped(DropReason),
}

/// Why a message was dropped (each is counted; the last two are also logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// An empty body (the original drops these silently).
    Empty,
    /// The body is not UTF-8.
    InvalidUtf8,
    /// The body starts with `{` but is not JSON Python would accept.
    InvalidJson(pyjson_object::JsonError),
}

/// Transforms one message body.
pub fn transform(body: &[u8], ordinal: u64, timestamp_ms: i64) -> Transformed {
    let Ok(text) = std::str::from_utf8(body) else {
        return Transformed::Dropped(DropReason::InvalidUtf8);
    };
    if text == "POISON" {
        return Transformed::Poison;
    }
    if text.is_empty() {
        return Transformed::Dropped(DropReason::Empty);
    }
    let mut frame = FrameBuilder::with_capacity(text.len() + 48);
    if text.starts_with('{') {
        if let Err(e) = pyjson_object::write_with_ess(text, ordinal, timestamp_ms, frame.payload())
        {
            return Transformed::Dropped(DropReason::InvalidJson(e));
        }
    } else {
        use std::io::Write as _;
        let out = frame.payload();
        out.extend_from_slice(text.as_bytes());
        // Writing to a Vec cannot fail.
        let _ = write!(out, "|ordinal: {ordinal}|timestamp: {timestamp_ms}");
    }
    Transformed::Frame(frame.finish(OpCode::Text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame;

    fn text(t: Transformed) -> String {
        let Transformed::Frame(f) = t else {
            panic!("not a frame: {t:?}")
        };
        // Server frames here are short: a 2- or 4-byte header, no mask.
        assert_eq!(f[0], 0x81);
        let start = if f[1] == 126 { 4 } else { 2 };
        String::from_utf8(f[start..].to_vec()).expect("UTF-8")
    }

    #[test]
    fn json_bodies_get_ess_keys_in_python_style() {
        let body = "{\"message_type\":\"a.B\",\"message_body\":{\"x\":\"\u{e9}\",\"n\":1.5}}";
        assert_eq!(
            text(transform(body.as_bytes(), 3, 1_733_000_000_000)),
            r#"{"message_type": "a.B", "message_body": {"x": "\u00e9", "n": 1.5}, "ess_ordinal": 3, "ess_timestamp": 1733000000000}"#
        );
    }

    #[test]
    fn other_bodies_get_the_ordinal_and_timestamp_suffix() {
        let body = "accountserver.MerchantCharge|timestamp: \"2024\" caf\u{e9}";
        assert_eq!(
            text(transform(body.as_bytes(), 0, 5)),
            format!("{body}|ordinal: 0|timestamp: 5")
        );
    }

    #[test]
    fn the_frame_is_one_complete_text_frame() {
        let t = transform(b"x", 1, 2);
        assert_eq!(
            t,
            Transformed::Frame(frame::encode(OpCode::Text, b"x|ordinal: 1|timestamp: 2"))
        );
        let long = "y".repeat(70_000);
        assert!(
            matches!(transform(long.as_bytes(), 1, 2), Transformed::Frame(f) if f.len() > 70_000)
        );
    }

    #[test]
    fn poison_empty_invalid() {
        assert_eq!(transform(b"POISON", 1, 2), Transformed::Poison);
        assert_eq!(
            text(transform(b"POISON ", 1, 2)),
            "POISON |ordinal: 1|timestamp: 2"
        );
        assert_eq!(
            transform(b"", 1, 2),
            Transformed::Dropped(DropReason::Empty)
        );
        assert_eq!(
            transform(b"\xff", 1, 2),
            Transformed::Dropped(DropReason::InvalidUtf8)
        );
        assert!(matches!(
            transform(b"{nope", 1, 2),
            Transformed::Dropped(DropReason::InvalidJson(_))
        ));
    }
}
