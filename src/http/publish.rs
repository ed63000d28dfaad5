//! `POST /api/publish`: body parsing and bearer-key check.
//!
//! The body is `{"channel":"a","data":…}`. A JSON string `data` is published as its text (so a
//! raw-mode subscriber receives `hello`, and a JSON subscriber `"data":"hello"`); any other JSON
//! value is published as its exact JSON text, which subscribers then get embedded as is.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::protocol::MAX_TOPIC_BYTES;

/// A validated publish request.
#[derive(Debug, PartialEq, Eq)]
pub struct Publish {
    /// The channel to publish on.
    pub channel: Bytes,
    /// The payload bytes as subscribers will receive them.
    pub payload: Bytes,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Parses a publish body; the error text is returned to the client with status 400.
pub fn parse_body(body: &[u8]) -> Result<Publish, String> {
    let parsed: Body<'_> = serde_json::from_slice(body).map_err(|e| format!("bad body: {e}"))?;
    if let Err(e) = crate::protocol::check_topic(&parsed.channel) {
        return Err(format!(
            "channel {e} (at most {MAX_TOPIC_BYTES} bytes, no control characters)"
        ));
    }
    let raw = parsed.data.get();
    let payload = if raw.starts_with('"') {
        let text: String = serde_json::from_str(raw).map_err(|e| format!("bad data: {e}"))?;
        Bytes::from(text)
    } else {
        Bytes::copy_from_slice(raw.as_bytes())
    };
    Ok(Publish {
        channel: Bytes::copy_from_slice(parsed.channel.as_bytes()),
        payload,
    })
}

/// True when `authorization` carries `Bearer <key>`; compared in constant time.
pub fn authorized(authorization: Option<&[u8]>, key: &str) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let Some(token) = value.strip_prefix(b"Bearer ") else {
        return false;
    };
    let token = token.trim_ascii();
    token.len() == key.len()
        && token
            .iter()
            .zip(key.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_unwrapped_and_json_kept_verbatim() {
        let p = parse_body(br#"{"channel":"a","data":"hi \"x\""}"#).unwrap();
        assert_eq!(&p.payload[..], br#"hi "x""#);
        let p = parse_body(br#"{"data": {"k": [1, 2]} ,"channel":"a"}"#).unwrap();
        assert_eq!(&p.payload[..], br#"{"k": [1, 2]}"#);
    }

    #[test]
    fn rejects_bad_bodies() {
        assert!(parse_body(b"nope").is_err());
        assert!(parse_body(br#"{"channel":"","data":1}"#).is_err());
        assert!(parse_body(br#"{"channel":"a"}"#).is_err());
    }

    #[test]
    fn bearer_check() {
        assert!(authorized(Some(b"Bearer k1"), "k1"));
        assert!(!authorized(Some(b"Bearer k2"), "k1"));
        assert!(!authorized(Some(b"k1"), "k1"));
        assert!(!authorized(None, "k1"));
    }
}
