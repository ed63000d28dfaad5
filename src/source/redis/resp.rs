//! RESP on the wire, through the `redis-protocol` crate: command encoding, reply decoding, and
//! the classification of pub/sub pushes.
//!
//! Pure: bytes in, values out. Decoding is zero-copy: a pub/sub payload is a `Bytes` view into
//! the socket's read buffer, and that view is what the hub renders into a frame (once).
//!
//! RESP2 and RESP3 decode into one [`Value`]; RESP3 pushes (`>`) and RESP2 arrays both classify
//! into [`PubSub`] the same way.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as Resp2Frame;
use redis_protocol::resp3::types::{BytesFrame as Resp3Frame, DecodedFrame};

/// Protocol version negotiated with `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// RESP2 (the default of every Redis; no `HELLO`).
    Resp2,
    /// RESP3 (`HELLO 3`): pushes are out-of-band frames.
    Resp3,
}

/// One decoded reply or push.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK`, or any simple string.
    Simple(Bytes),
    /// `-ERR ...`: an error reply.
    Error(String),
    /// `:1`.
    Int(i64),
    /// `$n`: a bulk string.
    Bulk(Bytes),
    /// `*n` (or a RESP3 set).
    Array(Vec<Value>),
    /// A RESP3 map, as key/value pairs in the order Redis sent them.
    Map(Vec<(Value, Value)>),
    /// A RESP3 push (`>`).
    Push(Vec<Value>),
    /// Null, in either protocol.
    Null,
    /// Other RESP3 scalars (double, boolean, big number), as text.
    Other(String),
}

/// Why bytes from Redis could not be decoded; the connection is reset.
#[derive(Debug, thiserror::Error)]
#[error("bad RESP from Redis: {0}")]
pub struct DecodeError(String);

impl DecodeError {
    /// A reply larger than we are willing to buffer.
    pub fn too_large() -> Self {
        DecodeError(format!(
            "reply larger than {} bytes",
            super::conn::MAX_REPLY_BYTES
        ))
    }
}

impl Value {
    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bulk(b) | Value::Simple(b) => Some(b),
            _ => None,
        }
    }
}

/// Decodes one value from the front of `buf`, splitting it off; `Ok(None)` if incomplete.
pub fn decode(proto: Proto, buf: &mut BytesMut) -> Result<Option<Value>, DecodeError> {
    match proto {
        Proto::Resp2 => match redis_protocol::resp2::decode::decode_bytes_mut(buf) {
            Ok(Some((frame, _, _))) => Ok(Some(from_resp2(frame))),
            Ok(None) => Ok(None),
            Err(e) => Err(DecodeError(e.to_string())),
        },
        Proto::Resp3 => match redis_protocol::resp3::decode::streaming::decode_bytes_mut(buf) {
            Ok(Some((DecodedFrame::Complete(frame), _, _))) => from_resp3(frame).map(Some),
            Ok(Some((DecodedFrame::Streaming(_), _, _))) => {
                Err(DecodeError("streamed RESP3 frames are not expected".into()))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(DecodeError(e.to_string())),
        },
    }
}

fn from_resp2(frame: Resp2Frame) -> Value {
    match frame {
        Resp2Frame::SimpleString(b) => Value::Simple(b),
        Resp2Frame::Error(s) => Value::Error(s.to_string()),
        Resp2Frame::Integer(i) => Value::Int(i),
        Resp2Frame::BulkString(b) => Value::Bulk(b),
        Resp2Frame::Array(v) => Value::Array(v.into_iter().map(from_resp2).collect()),
        Resp2Frame::Null => Value::Null,
    }
}

fn from_resp3(frame: Resp3Frame) -> Result<Value, DecodeError> {
    let all = |v: Vec<Resp3Frame>| v.into_iter().map(from_resp3).collect::<Result<Vec<_>, _>>();
    Ok(match frame {
        Resp3Frame::BlobString { data, .. } => Value::Bulk(data),
        Resp3Frame::SimpleString { data, .. } => Value::Simple(data),
        Resp3Frame::VerbatimString { data, .. } => Value::Bulk(data),
        Resp3Frame::BlobError { data, .. } => Value::Error(String::from_utf8_lossy(&data).into()),
        Resp3Frame::SimpleError { data, .. } => Value::Error(data.to_string()),
        Resp3Frame::Number { data, .. } => Value::Int(data),
        Resp3Frame::Null => Value::Null,
        Resp3Frame::Array { data, .. } => Value::Array(all(data)?),
        Resp3Frame::Push { data, .. } => Value::Push(all(data)?),
        Resp3Frame::Set { data, .. } => Value::Array(all(data.into_iter().collect())?),
        // With its `index-map` feature redis-protocol keeps a map's order, but builds it from
        // the last pair to the first: reversing gives the order Redis sent (HGETALL's hash
        // order, which BESS renders). `resp3_map_and_set_keep_wire_order` checks it.
        Resp3Frame::Map { data, .. } => Value::Map(
            data.into_iter()
                .rev()
                .map(|(k, v)| Ok((from_resp3(k)?, from_resp3(v)?)))
                .collect::<Result<_, DecodeError>>()?,
        ),
        Resp3Frame::Double { data, .. } => Value::Other(data.to_string()),
        Resp3Frame::Boolean { data, .. } => Value::Other(data.to_string()),
        Resp3Frame::BigNumber { data, .. } => Value::Other(String::from_utf8_lossy(&data).into()),
        Resp3Frame::Hello { .. } | Resp3Frame::ChunkedString(_) => {
            return Err(DecodeError("unexpected frame kind".into()));
        }
    })
}

/// Appends a command (an array of bulk strings) to `out`. The encoding is the same in RESP2
/// and RESP3, so pipelines are just concatenations.
pub fn encode_command(out: &mut BytesMut, args: &[&[u8]]) {
    use std::io::Write as _;
    let mut head = Vec::with_capacity(16);
    let _ = write!(head, "*{}\r\n", args.len());
    out.extend_from_slice(&head);
    for a in args {
        head.clear();
        let _ = write!(head, "${}\r\n", a.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A pub/sub push, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum PubSub {
    /// `message <channel> <payload>`.
    Message {
        /// The channel.
        channel: Bytes,
        /// The payload.
        payload: Bytes,
    },
    /// `pmessage <pattern> <channel> <payload>`.
    PMessage {
        /// The pattern.
        pattern: Bytes,
        /// The channel.
        channel: Bytes,
        /// The payload.
        payload: Bytes,
    },
    /// `subscribe`/`psubscribe`/`unsubscribe`/`punsubscribe` confirmations, with the
    /// connection's subscription count after it.
    Confirm {
        /// Which command is confirmed (`subscribe`, ...).
        kind: Bytes,
        /// The channel or pattern.
        name: Bytes,
        /// Subscriptions on the connection afterwards.
        count: i64,
    },
    /// `pong` (a PING on a subscribed connection).
    Pong,
    /// Anything else: a reply to a regular command on a RESP3 connection.
    Reply(Value),
}

/// Classifies a value read from a subscribed connection.
pub fn classify(value: Value) -> PubSub {
    let mut items = match value {
        Value::Push(items) => items,
        Value::Array(items) if is_pubsub_array(&items) => items,
        other => return PubSub::Reply(other),
    };
    let kind = items
        .first()
        .and_then(Value::as_bytes)
        .cloned()
        .unwrap_or_default();
    // The parts after the kind are taken out of the decoded array (no second vector).
    match &kind[..] {
        b"message" | b"smessage" => PubSub::Message {
            channel: take_bytes(&mut items, 1),
            payload: take_bytes(&mut items, 2),
        },
        b"pmessage" => PubSub::PMessage {
            pattern: take_bytes(&mut items, 1),
            channel: take_bytes(&mut items, 2),
            payload: take_bytes(&mut items, 3),
        },
        b"pong" => PubSub::Pong,
        b"subscribe" | b"psubscribe" | b"unsubscribe" | b"punsubscribe" | b"ssubscribe"
        | b"sunsubscribe" => {
            let count = match items.get(2) {
                Some(Value::Int(n)) => *n,
                _ => 0,
            };
            PubSub::Confirm {
                kind,
                name: take_bytes(&mut items, 1),
                count,
            }
        }
        _ => PubSub::Reply(Value::Array(items)),
    }
}

/// The bytes of `items[i]`, taken out of it; empty if it has none.
fn take_bytes(items: &mut [Value], i: usize) -> Bytes {
    match items.get_mut(i) {
        Some(Value::Bulk(b) | Value::Simple(b)) => std::mem::take(b),
        _ => Bytes::new(),
    }
}

fn is_pubsub_array(items: &[Value]) -> bool {
    matches!(items.first().and_then(Value::as_bytes), Some(k) if matches!(&k[..],
        b"message" | b"pmessage" | b"smessage" | b"subscribe" | b"psubscribe" | b"unsubscribe"
        | b"punsubscribe" | b"pong" | b"ssubscribe" | b"sunsubscribe"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_message_is_zero_copy_and_classified() {
        let mut buf = BytesMut::from(&b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n*3"[..]);
        let v = decode(Proto::Resp2, &mut buf).unwrap().unwrap();
        assert_eq!(
            classify(v),
            PubSub::Message {
                channel: Bytes::from_static(b"ch"),
                payload: Bytes::from_static(b"hello")
            }
        );
        assert_eq!(&buf[..], b"*3");
        assert!(decode(Proto::Resp2, &mut buf).unwrap().is_none());
    }

    #[test]
    fn resp3_push_pmessage_and_confirm() {
        let mut buf = BytesMut::from(
            &b">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\na\r\n$1\r\nx\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"[..],
        );
        let v = decode(Proto::Resp3, &mut buf).unwrap().unwrap();
        assert!(matches!(classify(v), PubSub::PMessage { .. }));
        let v = decode(Proto::Resp3, &mut buf).unwrap().unwrap();
        assert!(matches!(classify(v), PubSub::Confirm { count: 1, .. }));
    }

    /// A RESP3 map (HGETALL, HELLO, CONFIG GET) keeps the order Redis sent, as a RESP2 array
    /// does: BESS writes a battery's fields in hash order. Found by `fuzz/resp_decode`, when
    /// redis-protocol decoded maps into a `HashMap` (random order on every decode).
    #[test]
    fn resp3_map_and_set_keep_wire_order() {
        let names = ["timestamp", "voltage", "current", "soc", "t", "a", "b", "c"];
        let mut wire = format!("%{}\r\n", names.len());
        for (i, n) in names.iter().enumerate() {
            wire.push_str(&format!("${}\r\n{n}\r\n:{i}\r\n", n.len()));
        }
        wire.push_str(&format!("~{}\r\n", names.len()));
        for n in names {
            wire.push_str(&format!("+{n}\r\n"));
        }
        let mut buf = BytesMut::from(wire.as_bytes());
        let Some(Value::Map(pairs)) = decode(Proto::Resp3, &mut buf).unwrap() else {
            panic!("not a map");
        };
        let keys: Vec<_> = pairs.iter().map(|(k, _)| k.as_bytes().unwrap()).collect();
        assert_eq!(keys, names.map(str::as_bytes));
        let Some(Value::Array(members)) = decode(Proto::Resp3, &mut buf).unwrap() else {
            panic!("not a set");
        };
        let members: Vec<_> = members.iter().map(|m| m.as_bytes().unwrap()).collect();
        assert_eq!(members, names.map(str::as_bytes));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut buf = BytesMut::from(&b"?garbage\r\n"[..]);
        assert!(decode(Proto::Resp2, &mut buf).is_err());
        let mut buf = BytesMut::from(&b"$-5\r\n"[..]);
        let _ = decode(Proto::Resp2, &mut buf);
    }

    #[test]
    fn commands_encode_as_bulk_arrays() {
        let mut out = BytesMut::new();
        encode_command(&mut out, &[b"SUBSCRIBE", b"a", b""]);
        assert_eq!(&out[..], b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$0\r\n\r\n");
    }
}
