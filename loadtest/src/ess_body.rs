//! The `ess` scenario's message bodies, shaped like the Squonk2 Account Server's, and the
//! reading of `ess_ordinal` back out of the gateway's frames. Pure, any thread.
//!
//! JSON bodies are `{"message_type":"accountserver.MerchantCharge","message_body":{…}}`; text
//! bodies are the protobuf text form the Account Server also sends
//! (`accountserver.MerchantCharge|timestamp: "…" merchant_kind: "…" …`). Both carry their
//! sequence number and are padded (in the description) to the requested size.

/// Which body the publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyKind {
    /// A JSON object: the gateway re-renders it Python-style and appends `ess_ordinal`.
    Json,
    /// Text: the gateway appends `|ordinal: N|timestamp: T`.
    Text,
}

/// Body number `seq`, padded with `x` in its description to at least `bytes` bytes.
pub fn body(kind: BodyKind, seq: u64, bytes: usize) -> Vec<u8> {
    let (head, tail) = match kind {
        BodyKind::Json => (
            format!(
                "{{\"message_type\":\"accountserver.MerchantCharge\",\"message_body\":{{\
                 \"timestamp\":\"2026-12-03T15:41:20+00:00\",\
                 \"merchant_kind\":\"DATA_MANAGER\",\"merchant_id\":1,\"sqn\":{seq},\
                 \"cost\":\"0.25\",\"description\":\"Job "
            ),
            "\"}}",
        ),
        BodyKind::Text => (
            format!(
                "accountserver.MerchantCharge|timestamp: \"2026-12-03T15:41:20Z\" \
                 merchant_kind: \"DATA_MANAGER\" merchant_id: 1 sqn: {seq} cost: \"0.25\" \
                 description: \"Job "
            ),
            "\"",
        ),
    };
    let pad = bytes.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(head.len() + pad + tail.len());
    out.extend_from_slice(head.as_bytes());
    out.resize(head.len() + pad, b'x');
    out.extend_from_slice(tail.as_bytes());
    out
}

/// The ordinal the gateway appended to a frame: `"ess_ordinal": N` (JSON bodies) or
/// `|ordinal: N|` (text bodies), searched from the end.
pub fn ordinal(frame: &[u8]) -> Option<u64> {
    let at = rfind(frame, b"\"ess_ordinal\": ")
        .map(|i| i + 15)
        .or_else(|| rfind(frame, b"|ordinal: ").map(|i| i + 10))?;
    let digits = frame[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut n: u64 = 0;
    let mut any = false;
    for d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

/// The last position of `needle` in `hay`.
fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_requested_size_and_parse() {
        let j = body(BodyKind::Json, 42, 200);
        assert_eq!(j.len(), 200);
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(v["message_type"], "accountserver.MerchantCharge");
        assert_eq!(v["message_body"]["sqn"], 42);
        let t = body(BodyKind::Text, 7, 200);
        assert_eq!(t.len(), 200);
        assert!(t.starts_with(b"accountserver.MerchantCharge|timestamp: "));
        // Smaller than the fixed part: no padding, still whole.
        assert!(serde_json::from_slice::<serde_json::Value>(&body(BodyKind::Json, 1, 10)).is_ok());
    }

    #[test]
    fn ordinals_are_read_from_both_transforms() {
        assert_eq!(
            ordinal(br#"{"a": 1, "ess_ordinal": 123, "ess_timestamp": 17}"#),
            Some(123)
        );
        assert_eq!(ordinal(b"x|ordinal: 9|timestamp: 1700"), Some(9));
        assert_eq!(ordinal(b"no ordinal"), None);
        assert_eq!(ordinal(b"x|ordinal: |timestamp: 1"), None);
    }
}
