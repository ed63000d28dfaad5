//! Engine.IO v4 and Socket.IO v5 packets: decoding what clients send, encoding what we send.
//!
//! Pure, any thread. This file holds both layers' packet codecs, as STYLE.md 9.6 lays out
//! `packet.rs`; with its byte-exact tests it is longer than 300 lines.
//!
//! **Engine.IO** (engine.io-protocol v4, "Protocol"): a packet is one type digit, `0` open to
//! `6` noop, then optional text data. Over WebSocket it is one text frame; over polling one
//! segment of a body (see `payload.rs`). Binary packets (`b` + base64 over polling, binary
//! frames over WebSocket) are not supported: they decode as [`PacketError::Binary`].
//!
//! **Socket.IO** (socket.io-protocol v5, "Packet encoding"): the data of an Engine.IO message
//! (`4`) is `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`, namespace omitted for
//! `/`. [`SioPacket::decode`] follows socket.io-parser's decoder and its payload checks.
//!
//! Invariants:
//!
//! - Decoding never panics and never allocates except an event name that holds JSON escapes;
//!   everything else borrows from the input.
//! - Encodings are byte-exact against the specifications' examples and the SuperDARN captures
//!   (COMPAT 10): the open packet's keys are `sid, upgrades, pingTimeout, pingInterval,
//!   maxPayload` in that order, JSON is compact, strings are escaped as Python's `json.dumps`
//!   escapes them.
//! - No encoding contains the record separator `\x1e` (JSON never holds a raw control
//!   character, and namespaces with control characters are refused), so any of them can be a
//!   polling segment.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::config::EioConfig;
use super::sid::Sid;
use crate::profile::pyjson;

/// The Engine.IO packet types (engine.io-protocol v4, "Protocol").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    /// `0`: the handshake, server to client.
    Open = b'0',
    /// `1`: the transport can be closed.
    Close = b'1',
    /// `2`: heartbeat ping (server to client), or the upgrade probe `2probe` (client).
    Ping = b'2',
    /// `3`: heartbeat pong (client to server), or the probe answer `3probe` (server).
    Pong = b'3',
    /// `4`: a message; its data is a Socket.IO packet.
    Message = b'4',
    /// `5`: the client completes the upgrade to WebSocket.
    Upgrade = b'5',
    /// `6`: noop, releases a pending polling GET during the upgrade.
    Noop = b'6',
}

impl PacketType {
    /// The type for its wire digit.
    pub fn from_digit(b: u8) -> Option<PacketType> {
        Some(match b {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            _ => return None,
        })
    }
}

/// A decoded Engine.IO packet, borrowing its data from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The packet type.
    pub kind: PacketType,
    /// Everything after the type digit; empty when there is none (`probe` in `2probe`).
    pub data: &'a str,
}

/// Why bytes are not an Engine.IO packet. Always the peer's fault: close the session (engine.io
/// closes on a parse error; over polling the POST gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// No bytes at all (an empty frame or an empty polling segment).
    #[error("empty packet")]
    Empty,
    /// The first byte is not a type digit `0`..`6`.
    #[error("unknown packet type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A base64 binary packet (`b…`); binary data is not supported.
    #[error("binary packets are not supported")]
    Binary,
    /// The packet is not UTF-8 text.
    #[error("packet is not UTF-8")]
    NotUtf8,
}

impl<'a> Packet<'a> {
    /// Decodes one packet: a WebSocket text frame or one polling segment.
    pub fn decode(bytes: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        let (&first, rest) = bytes.split_first().ok_or(PacketError::Empty)?;
        if first == b'b' {
            return Err(PacketError::Binary);
        }
        let kind = PacketType::from_digit(first).ok_or(PacketError::UnknownType(first))?;
        let data = std::str::from_utf8(rest).map_err(|_| PacketError::NotUtf8)?;
        Ok(Packet { kind, data })
    }
}

/// The Socket.IO packet types (socket.io-protocol v5, "Exchange protocol").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SioPacketType {
    /// `0`: connect to a namespace (client), or its acceptance with the socket's sid (server).
    Connect = b'0',
    /// `1`: leave a namespace.
    Disconnect = b'1',
    /// `2`: an event, `["name", args…]`.
    Event = b'2',
    /// `3`: the acknowledgement of an event that carried an ack id.
    Ack = b'3',
    /// `4`: the server refuses a namespace connection.
    ConnectError = b'4',
    /// `5`: an event with binary attachments (not supported beyond decoding its header).
    BinaryEvent = b'5',
    /// `6`: an acknowledgement with binary attachments (idem).
    BinaryAck = b'6',
}

impl SioPacketType {
    /// The type for its wire digit.
    pub fn from_digit(b: u8) -> Option<SioPacketType> {
        Some(match b {
            b'0' => SioPacketType::Connect,
            b'1' => SioPacketType::Disconnect,
            b'2' => SioPacketType::Event,
            b'3' => SioPacketType::Ack,
            b'4' => SioPacketType::ConnectError,
            b'5' => SioPacketType::BinaryEvent,
            b'6' => SioPacketType::BinaryAck,
            _ => return None,
        })
    }
}

/// The default namespace.
pub const DEFAULT_NAMESPACE: &str = "/";

/// The most digits of an ack id or attachment count we read (below `u64::MAX`).
const MAX_DIGITS: usize = 18;

/// A decoded Socket.IO packet, borrowing from the Engine.IO message data.
#[derive(Debug, Clone, PartialEq)]
pub struct SioPacket<'a> {
    /// The packet type.
    pub kind: SioPacketType,
    /// The namespace, `/` when the packet names none.
    pub namespace: &'a str,
    /// Binary attachments announced (`51-…`); 0 for the text types.
    pub attachments: u64,
    /// The acknowledgement id (`421[…]` has id 1), if any.
    pub ack_id: Option<u64>,
    /// The JSON payload text, validated as one JSON value, if any.
    pub data: Option<&'a str>,
    /// For events, the event name (the array's first element when it is a string).
    pub event: Option<Cow<'a, str>>,
}

/// Why a message is not a Socket.IO packet. Always the peer's fault: close the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SioError {
    /// The message is empty.
    #[error("empty Socket.IO packet")]
    Empty,
    /// The first character is not a type digit `0`..`6`.
    #[error("unknown Socket.IO packet type")]
    UnknownType,
    /// A binary packet without a valid `<count>-` attachment header.
    #[error("bad attachment count")]
    Attachments,
    /// A namespace with a control character, or an ack id too long for a `u64`.
    #[error("bad namespace or ack id")]
    Header,
    /// The payload is not JSON.
    #[error("payload is not JSON")]
    Json,
    /// The payload does not fit the type (an event must be a non-empty array whose first
    /// element is its name; a connect an object; a disconnect nothing).
    #[error("payload does not fit the packet type")]
    Payload,
}

impl<'a> SioPacket<'a> {
    /// Decodes the data of an Engine.IO message as socket.io-parser does.
    pub fn decode(s: &'a str) -> Result<SioPacket<'a>, SioError> {
        let (&first, _) = s.as_bytes().split_first().ok_or(SioError::Empty)?;
        let kind = SioPacketType::from_digit(first).ok_or(SioError::UnknownType)?;
        let mut rest = &s[1..];
        let mut attachments = 0;
        if matches!(kind, SioPacketType::BinaryEvent | SioPacketType::BinaryAck) {
            let (count, after) = rest.split_once('-').ok_or(SioError::Attachments)?;
            attachments = parse_digits(count).ok_or(SioError::Attachments)?;
            rest = after;
        }
        let mut namespace = DEFAULT_NAMESPACE;
        if rest.starts_with('/') {
            // Up to the comma, or to the end as socket.io-parser allows (`1/admin`).
            let (ns, after) = rest.split_once(',').unwrap_or((rest, ""));
            if ns.bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err(SioError::Header);
            }
            namespace = ns;
            rest = after;
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack_id = match digits {
            0 => None,
            _ => Some(parse_digits(&rest[..digits]).ok_or(SioError::Header)?),
        };
        rest = &rest[digits..];
        let data = match rest {
            "" => None,
            json => Some(
                serde_json::from_str::<&RawValue>(json)
                    .map_err(|_| SioError::Json)?
                    .get(),
            ),
        };
        let event = check_payload(kind, data)?;
        Ok(SioPacket {
            kind,
            namespace,
            attachments,
            ack_id,
            data,
            event,
        })
    }
}

/// socket.io-parser's `isPayloadValid`; returns the event name for events.
fn check_payload(
    kind: SioPacketType,
    data: Option<&str>,
) -> Result<Option<Cow<'_, str>>, SioError> {
    let first = data.map(|d| d.trim_start().as_bytes().first().copied().unwrap_or(b' '));
    let ok = match kind {
        SioPacketType::Connect => matches!(first, None | Some(b'{')),
        SioPacketType::Disconnect => first.is_none(),
        SioPacketType::ConnectError => matches!(first, Some(b'{' | b'"')),
        SioPacketType::Ack | SioPacketType::BinaryAck => first == Some(b'['),
        SioPacketType::Event | SioPacketType::BinaryEvent => {
            let raw = data.ok_or(SioError::Payload)?;
            let mut de = serde_json::Deserializer::from_str(raw);
            return match de.deserialize_seq(EventHead) {
                Ok(EventName::Text(name)) => Ok(Some(name)),
                Ok(EventName::Number) => Ok(None),
                Ok(EventName::Missing) | Err(_) => Err(SioError::Payload),
            };
        }
    };
    if ok { Ok(None) } else { Err(SioError::Payload) }
}

/// Reads a run of at most [`MAX_DIGITS`] ASCII digits; `None` for anything else.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > MAX_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The first element of an event array.
enum EventName<'a> {
    /// A string name, borrowed unless it held escapes.
    Text(Cow<'a, str>),
    /// A number (socket.io-parser accepts one; it names no event we know).
    Number,
    /// Not an array, or an empty one, or a first element of another kind.
    Missing,
}

/// Visits an event array: reads the first element, skips the rest without allocating.
struct EventHead;

impl<'de> Visitor<'de> for EventHead {
    type Value = EventName<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-empty array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element::<FirstElement<'de>>()?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(first.map_or(EventName::Missing, |f| f.0))
    }
}

/// The first element of an event array, as an [`EventName`].
struct FirstElement<'a>(EventName<'a>);

impl<'de> de::Deserialize<'de> for FirstElement<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FirstVisitor).map(FirstElement)
    }
}

/// Classifies the first element of an event array.
struct FirstVisitor;

impl<'de> Visitor<'de> for FirstVisitor {
    type Value = EventName<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(EventName::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(EventName::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(EventName::Number)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(EventName::Number)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(EventName::Number)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(EventName::Missing)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(EventName::Missing)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(EventName::Missing)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(EventName::Missing)
    }
}

/// `2`: the server's heartbeat ping.
pub const PING: Bytes = Bytes::from_static(b"2");
/// `3`: the pong to a client's plain `2` (python-engineio answers one; see `session.rs`).
pub const PONG: Bytes = Bytes::from_static(b"3");
/// `3probe`: the answer to the upgrade probe.
pub const PONG_PROBE: Bytes = Bytes::from_static(b"3probe");
/// `6`: noop, releases a pending GET during the upgrade.
pub const NOOP: Bytes = Bytes::from_static(b"6");
/// `1`: close, sent when the server ends a session.
pub const CLOSE: Bytes = Bytes::from_static(b"1");

/// The open packet: `0{"sid":"…","upgrades":[…],"pingTimeout":…,"pingInterval":…,
/// "maxPayload":…}`, with `"upgrades":["websocket"]` when `offer_websocket`.
pub fn encode_open(sid: &Sid, offer_websocket: bool, config: &EioConfig) -> Bytes {
    let upgrades: &str = if offer_websocket {
        r#"["websocket"]"#
    } else {
        "[]"
    };
    let text = format!(
        r#"0{{"sid":"{sid}","upgrades":{upgrades},"pingTimeout":{},"pingInterval":{},"maxPayload":{}}}"#,
        config.ping_timeout_ms(),
        config.ping_interval_ms(),
        config.max_payload_bytes,
    );
    Bytes::from(text)
}

/// The acceptance of a namespace: `40{"sid":"…"}` (`40/admin,{"sid":"…"}` elsewhere than `/`).
/// socket.io-client 4.x takes the socket's id from it.
pub fn encode_connect(namespace: &str, socket_sid: &Sid) -> Bytes {
    let mut out = Vec::with_capacity(namespace.len() + 40);
    out.extend_from_slice(b"40");
    write_namespace(&mut out, namespace);
    out.extend_from_slice(br#"{"sid":""#);
    out.extend_from_slice(socket_sid.as_bytes());
    out.extend_from_slice(br#""}"#);
    Bytes::from(out)
}

/// A refused namespace: `44{"message":"…"}` (with `/ns,` elsewhere than `/`).
pub fn encode_connect_error(namespace: &str, message: &str) -> Bytes {
    let mut out = Vec::with_capacity(namespace.len() + message.len() + 20);
    out.extend_from_slice(b"44");
    write_namespace(&mut out, namespace);
    out.extend_from_slice(br#"{"message":"#);
    pyjson::write_str(&mut out, message.as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

/// A refused namespace as python-socketio (the SuperDARN original) answers it:
/// `44/ns,"<message>"`, the payload a JSON string, which socket.io-parser also accepts.
pub fn encode_connect_error_text(namespace: &str, message: &str) -> Bytes {
    let mut out = Vec::with_capacity(namespace.len() + message.len() + 6);
    out.extend_from_slice(b"44");
    write_namespace(&mut out, namespace);
    pyjson::write_str(&mut out, message.as_bytes());
    Bytes::from(out)
}

/// The server leaving a namespace: `41` (`41/ns,` elsewhere than `/`).
pub fn encode_disconnect(namespace: &str) -> Bytes {
    let mut out = Vec::with_capacity(namespace.len() + 3);
    out.extend_from_slice(b"41");
    write_namespace(&mut out, namespace);
    Bytes::from(out)
}

/// A broadcast event in the default namespace, `42["<event>",<payload>]`, built once.
///
/// `payload_json` must already be one serialised JSON value (the profile's renderer writes
/// it); it is copied in as is. The event name is escaped as Python's `json.dumps` does.
pub fn encode_event(event: &str, payload_json: &str) -> Bytes {
    let mut out = Vec::with_capacity(event.len() + payload_json.len() + 8);
    out.extend_from_slice(b"42[");
    pyjson::write_str(&mut out, event.as_bytes());
    out.push(b',');
    out.extend_from_slice(payload_json.as_bytes());
    out.push(b']');
    Bytes::from(out)
}

/// Writes the broadcast event `42["<event>",<payload>]` into `out` (the hub renders it once per
/// event, straight into the frame it shares with every session). `payload` is copied in when it
/// is one JSON value (a radar record as rendered by the profile); anything else (plain text
/// from a pub/sub channel) is sent as a JSON string, so the packet always parses.
pub fn write_event(out: &mut Vec<u8>, event: &[u8], payload: &[u8]) {
    out.reserve(event.len() + payload.len() + 8);
    out.extend_from_slice(b"42[");
    pyjson::write_str(out, event);
    out.push(b',');
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        out.extend_from_slice(payload);
    } else {
        pyjson::write_str(out, payload);
    }
    out.push(b']');
}

/// Writes `/ns,` for a namespace other than the default one.
fn write_namespace(out: &mut Vec<u8>, namespace: &str) {
    if namespace != DEFAULT_NAMESPACE {
        out.extend_from_slice(namespace.as_bytes());
        out.push(b',');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::ShardId;

    fn sio(s: &str) -> SioPacket<'_> {
        SioPacket::decode(s).unwrap()
    }

    #[test]
    fn engineio_packets_clients_send() {
        let cases: [(&[u8], PacketType, &str); 7] = [
            (b"2", PacketType::Ping, ""),
            (b"2probe", PacketType::Ping, "probe"),
            (b"3", PacketType::Pong, ""),
            (b"5", PacketType::Upgrade, ""),
            (b"6", PacketType::Noop, ""),
            (b"1", PacketType::Close, ""),
            (b"42[\"x\",1]", PacketType::Message, "2[\"x\",1]"),
        ];
        for (bytes, kind, data) in cases {
            assert_eq!(
                Packet::decode(bytes),
                Ok(Packet { kind, data }),
                "{bytes:?}"
            );
        }
        assert_eq!(Packet::decode(b"4hello").unwrap().data, "hello");
    }

    #[test]
    fn bad_engineio_packets_are_errors() {
        assert_eq!(Packet::decode(b""), Err(PacketError::Empty));
        assert_eq!(Packet::decode(b"7"), Err(PacketError::UnknownType(b'7')));
        assert_eq!(Packet::decode(b"abc"), Err(PacketError::UnknownType(b'a')));
        assert_eq!(Packet::decode(b"bAQIDBA=="), Err(PacketError::Binary));
        assert_eq!(Packet::decode(b"4\xff"), Err(PacketError::NotUtf8));
    }

    #[test]
    fn socketio_connect_disconnect_and_namespaces() {
        let p = sio("0");
        assert_eq!(
            (p.kind, p.namespace, p.ack_id, p.data),
            (SioPacketType::Connect, "/", None, None)
        );
        let p = sio("0/admin,");
        assert_eq!((p.kind, p.namespace), (SioPacketType::Connect, "/admin"));
        let p = sio(r#"0/admin,{"token":"123"}"#);
        assert_eq!(p.data, Some(r#"{"token":"123"}"#));
        let p = sio(r#"0{"token":"123"}"#);
        assert_eq!(p.namespace, "/");
        assert_eq!(sio("1").kind, SioPacketType::Disconnect);
        assert_eq!(sio("1/admin,").namespace, "/admin");
        // socket.io-parser also accepts a namespace that runs to the end.
        assert_eq!(sio("1/admin").namespace, "/admin");
    }

    #[test]
    fn socketio_events_and_ack_ids() {
        let p = sio(r#"2["foo"]"#);
        assert_eq!(
            (p.kind, p.ack_id, p.event.as_deref()),
            (SioPacketType::Event, None, Some("foo"))
        );
        let p = sio(r#"21["x"]"#);
        assert_eq!((p.ack_id, p.event.as_deref()), (Some(1), Some("x")));
        let p = sio(r#"2/admin,13["foo",{"a":[1,2]},3]"#);
        assert_eq!(
            (p.namespace, p.ack_id, p.event.as_deref()),
            ("/admin", Some(13), Some("foo"))
        );
        let p = sio(r#"2["caf\u00e9"]"#);
        assert_eq!(p.event.as_deref(), Some("café"));
        assert!(matches!(p.event, Some(Cow::Owned(_))));
        assert!(matches!(sio(r#"2["x"]"#).event, Some(Cow::Borrowed(_))));
        assert_eq!(sio("2[42]").event, None);
        let p = sio("312[]");
        assert_eq!((p.kind, p.ack_id), (SioPacketType::Ack, Some(12)));
        let p = sio(r#"51-["baz",{"_placeholder":true,"num":0}]"#);
        assert_eq!(
            (p.kind, p.attachments, p.event.as_deref()),
            (SioPacketType::BinaryEvent, 1, Some("baz"))
        );
        let p = sio(r#"61-15["bar",{"_placeholder":true,"num":0}]"#);
        assert_eq!(
            (p.kind, p.attachments, p.ack_id),
            (SioPacketType::BinaryAck, 1, Some(15))
        );
    }

    #[test]
    fn bad_socketio_packets_are_errors() {
        let cases = [
            ("", SioError::Empty),
            ("9", SioError::UnknownType),
            ("x", SioError::UnknownType),
            ("2", SioError::Payload),
            ("2[]", SioError::Payload),
            ("2{}", SioError::Payload),
            ("2[null]", SioError::Payload),
            ("2[[1]]", SioError::Payload),
            (r#"2["x""#, SioError::Json),
            (r#"2["x"]]"#, SioError::Json),
            ("1{}", SioError::Payload),
            ("0[]", SioError::Payload),
            ("3{}", SioError::Payload),
            (r#"5["x"]"#, SioError::Attachments),
            (r#"5x-["x"]"#, SioError::Attachments),
            ("21234567890123456789012[\"x\"]", SioError::Header),
            ("0/a\u{1e}b,", SioError::Header),
        ];
        for (s, err) in cases {
            assert_eq!(SioPacket::decode(s), Err(err), "{s:?}");
        }
    }

    #[test]
    fn open_packet_is_byte_exact() {
        let sid = Sid::parse(b"lv_VI97HAXpY6yYWAAAC").unwrap();
        let config = EioConfig::default();
        // COMPAT 10: the SuperDARN original over the websocket transport.
        assert_eq!(
            encode_open(&sid, false, &config),
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingTimeout":20000,"pingInterval":25000,"maxPayload":1000000}"#
        );
        assert_eq!(
            encode_open(&sid, true, &config),
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingTimeout":20000,"pingInterval":25000,"maxPayload":1000000}"#
        );
    }

    #[test]
    fn socketio_replies_are_byte_exact() {
        // socket.io-protocol v5 "Packet encoding" examples, with the Engine.IO `4` in front.
        let sid = Sid::parse(b"wZX3oN0bSVIhsaknAAAI").unwrap();
        assert_eq!(
            encode_connect("/", &sid),
            r#"40{"sid":"wZX3oN0bSVIhsaknAAAI"}"#
        );
        let sid = Sid::parse(b"oSO0OpakMV_3jnilAAAA").unwrap();
        assert_eq!(
            encode_connect("/admin", &sid),
            r#"40/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#
        );
        assert_eq!(
            encode_connect_error("/", "Not authorized"),
            r#"44{"message":"Not authorized"}"#
        );
        assert_eq!(
            encode_connect_error_text("/admin", "Unable to connect"),
            r#"44/admin,"Unable to connect""#
        );
        assert_eq!(encode_disconnect("/"), "41");
        assert_eq!(encode_disconnect("/admin"), "41/admin,");
        let generated = Sid::new(ShardId(0)).unwrap();
        assert_eq!(
            encode_connect("/", &generated).len(),
            r#"40{"sid":""}"#.len() + 20
        );
    }

    #[test]
    fn events_are_byte_exact() {
        assert_eq!(encode_event("hey", r#""Jude""#), r#"42["hey","Jude"]"#);
        // COMPAT 10: the sas/echoes event.
        let payload = r#"{"total_echoes":3,"ionospheric_echoes":2,"ground_scatter_echoes":1,"timestamp":"2026-12-03T13:56:16.790680+00:00"}"#;
        assert_eq!(
            encode_event("sas/echoes", payload),
            format!(r#"42["sas/echoes",{payload}]"#)
        );
        // Names are escaped as json.dumps escapes them.
        assert_eq!(
            encode_event("a\"b\\c\u{e9}", "0"),
            r#"42["a\"b\\c\u00e9",0]"#
        );
        // The encoding decodes back.
        let bytes = encode_event("x\ny", "[1]");
        let packet = Packet::decode(&bytes).unwrap();
        assert_eq!(packet.kind, PacketType::Message);
        assert_eq!(sio(packet.data).event.as_deref(), Some("x\ny"));
        assert!(!bytes.contains(&0x1e));
    }

    #[test]
    fn constant_packets() {
        assert_eq!(PING, "2");
        assert_eq!(PONG, "3");
        assert_eq!(PONG_PROBE, "3probe");
        assert_eq!(NOOP, "6");
        assert_eq!(CLOSE, "1");
    }

    #[test]
    fn write_event_copies_json_and_quotes_anything_else() {
        let mut out = Vec::new();
        write_event(&mut out, b"sas", br#"{"beam":1}"#);
        assert_eq!(out, br#"42["sas",{"beam":1}]"#);
        out.clear();
        write_event(&mut out, b"news", b"hello \"you\"");
        assert_eq!(out, br#"42["news","hello \"you\""]"#);
        out.clear();
        write_event(&mut out, b"a/echoes", b"{broken");
        assert_eq!(out, br#"42["a/echoes","{broken"]"#);
    }
}
