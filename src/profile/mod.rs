//! Drop-in profiles: the wire contracts of the services ringcast replaces.
//!
//! A *route* (see [`crate::config::RouteConfig`]) binds a listener and a path pattern to a
//! profile. The native profile is ringcast's own protocol ([`crate::protocol`]); the others
//! reproduce, byte for byte where clients could tell, the Python services described in
//! `COMPAT.md`:
//!
//! - [`preflight`]: weppcloud Preflight, a run's readiness checklist from its Redis hash;
//! - [`status`]: weppcloud Status, Redis pub/sub messages wrapped in `{"type": "status", …}`;
//! - [`bess`]: WebsocketServerMS, battery hashes as integer JSON objects;
//! - [`squonk2`]: the Squonk2 Event Stream Service's public WebSocket (its messages come from a
//!   replay source, [`crate::source::replay`]);
//! - [`superdarn`]: the SuperDARN real-time server's Socket.IO events (one per fitacf record,
//!   rendered once on the radar feed's side) and its `/echoes` API bodies.
//!
//! Everything here is pure rendering and parsing; the hub renders each event once per
//! profile format ([`crate::router::Format`]), and the shard hands the frame to every client.

pub mod bess;
pub mod preflight;
pub mod pyjson;
pub mod squonk2;
pub mod status;
pub mod superdarn;

/// The JSON heartbeat the weppcloud clients answer: sent as is, compact, as the originals did.
pub const JSON_PING: &[u8] = br#"{"type":"ping"}"#;
/// Sent before the server closes a connection, on routes with `hangup = true`.
pub const JSON_HANGUP: &[u8] = br#"{"type":"hangup"}"#;

/// A BESS battery's hash key is `battery:<id>:data`: the prefix and suffix around the id.
pub const BESS_KEY_AFFIXES: (&[u8], &[u8]) = (b"battery:", b":data");

/// Wall-clock time in milliseconds since the Unix epoch (BESS `ws_timestamp`).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What a client message on a JSON-heartbeat route means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"type":"pong"}` or `{"type":"init"}`: the client is alive.
    Alive,
    /// Anything else, including invalid JSON: ignored, as the originals did.
    Ignored,
}

/// Classifies a text message from a Preflight or Status client.
pub fn classify(text: &[u8]) -> ClientMessage {
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(borrow, rename = "type")]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_slice::<Typed<'_>>(text) {
        Ok(Typed { kind: Some(k) }) if k == "pong" || k == "init" => ClientMessage::Alive,
        _ => ClientMessage::Ignored,
    }
}

/// Decodes `%XX` escapes in a path segment (as Tornado does for its path argument). Invalid
/// escapes are kept literally; the result is bytes, not necessarily UTF-8.
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The last segment of a request path (query excluded), percent-decoded and trimmed of ASCII
/// whitespace, as the legacy servers computed their run id. `/a/b/` gives an empty segment.
pub fn last_segment(path: &str) -> Vec<u8> {
    let path = path.split('?').next().unwrap_or("");
    let seg = path.rsplit('/').next().unwrap_or("");
    let decoded = percent_decode(seg);
    decoded.trim_ascii().to_vec()
}

/// Test helper: a hash's `(field, value)` pairs from string pairs.
#[cfg(test)]
pub(crate) fn test_hash(pairs: &[(&str, &str)]) -> Vec<(bytes::Bytes, bytes::Bytes)> {
    pairs
        .iter()
        .map(|&(f, v)| {
            (
                bytes::Bytes::from(f.to_owned()),
                bytes::Bytes::from(v.to_owned()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_messages() {
        assert_eq!(classify(br#"{"type":"pong"}"#), ClientMessage::Alive);
        assert_eq!(classify(br#"{"type": "init"}"#), ClientMessage::Alive);
        assert_eq!(classify(br#"{"type":"other"}"#), ClientMessage::Ignored);
        assert_eq!(classify(b"not json"), ClientMessage::Ignored);
        assert_eq!(classify(b"[1,2]"), ClientMessage::Ignored);
        assert_eq!(classify(br#"{"type":7}"#), ClientMessage::Ignored);
    }

    #[test]
    fn segments() {
        assert_eq!(last_segment("/weppcloud/preflight/run-1"), b"run-1");
        assert_eq!(last_segment("/x/a%3Bb%20c?q=1"), b"a;b c");
        assert_eq!(last_segment("/x/"), b"");
        assert_eq!(last_segment("/bad%zz"), b"bad%zz");
        assert_eq!(last_segment("/run%3Awepp"), b"run:wepp");
    }
}
