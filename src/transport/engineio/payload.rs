//! The polling payload: Engine.IO packets joined by the record separator `\x1e`
//! (engine.io-protocol v4, "Packet encoding / HTTP long-polling").
//!
//! Pure, any thread. A POST body is decoded into packets ([`decode`]); a GET response body is
//! made of already-encoded packets ([`encode`]).
//!
//! Invariants:
//!
//! - [`decode`] checks the whole body before the caller sees a packet: its size against the
//!   route's `max_payload_bytes`, UTF-8, and every segment (none empty, none binary, each a
//!   known type). A body is applied entirely or not at all.
//! - [`encode`] allocates once: one buffer of exactly the body's length. A single packet is
//!   returned as is, a refcount clone with no copy, so a broadcast event reaches a polling
//!   client as the same bytes every other client shares.

use bytes::{BufMut, Bytes, BytesMut};

use super::packet::{Packet, PacketError};

/// The record separator between packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// Why a POST body is refused. Always the peer's fault: answer 400 and close the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The body is larger than the route's `max_payload_bytes`.
    #[error("payload of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not UTF-8 text.
    #[error("payload is not UTF-8")]
    NotUtf8,
    /// A packet of the body is bad (an empty body is one empty segment).
    #[error("packet {index} of the payload: {error}")]
    Packet {
        /// The packet's position, from 0.
        index: usize,
        /// What is wrong with it.
        error: PacketError,
    },
}

/// A checked POST body: iterate it for its packets.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    /// The body, known to be UTF-8 with only valid segments.
    body: &'a [u8],
}

/// Checks a POST body and returns it for iteration.
pub fn decode(body: &[u8], max_payload_bytes: usize) -> Result<Payload<'_>, PayloadError> {
    if body.len() > max_payload_bytes {
        return Err(PayloadError::TooLarge {
            len: body.len(),
            max: max_payload_bytes,
        });
    }
    // Whole-body UTF-8 check: the separator is ASCII, so every segment is UTF-8 too.
    std::str::from_utf8(body).map_err(|_| PayloadError::NotUtf8)?;
    for (index, segment) in body.split(|&b| b == SEPARATOR).enumerate() {
        Packet::decode(segment).map_err(|error| PayloadError::Packet { index, error })?;
    }
    Ok(Payload { body })
}

impl<'a> Payload<'a> {
    /// The packets, in order.
    pub fn packets(&self) -> impl Iterator<Item = Packet<'a>> + use<'a> {
        // Every segment decoded in `decode`, so `ok()` drops nothing.
        self.body
            .split(|&b| b == SEPARATOR)
            .filter_map(|s| Packet::decode(s).ok())
    }
}

/// One GET response body from already-encoded packets, joined by [`SEPARATOR`].
///
/// `packets` is walked twice (length, then copy), so it must be cheap to clone, such as an
/// iterator over a `VecDeque<Bytes>`. An empty list gives an empty body; callers never send
/// one (a pending GET waits until there is a packet).
pub fn encode<'a, I>(packets: I) -> Bytes
where
    I: Iterator<Item = &'a Bytes> + Clone,
{
    let mut count = 0usize;
    let mut len = 0usize;
    let mut only = None;
    for p in packets.clone() {
        count += 1;
        len += p.len();
        only = Some(p);
    }
    match (count, only) {
        (1, Some(p)) => p.clone(),
        (0, _) => Bytes::new(),
        _ => {
            let mut out = BytesMut::with_capacity(len + count - 1);
            for (i, p) in packets.enumerate() {
                if i > 0 {
                    out.put_u8(SEPARATOR);
                }
                out.put_slice(p);
            }
            out.freeze()
        }
    }
}

/// The body's length once `packet_len` bytes more are appended to a body of `body_len`
/// holding `count` packets; what the session's byte bound counts.
pub fn grown_len(body_len: usize, count: usize, packet_len: usize) -> usize {
    body_len
        .saturating_add(packet_len)
        .saturating_add(usize::from(count > 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::engineio::packet::PacketType;

    fn kinds(body: &[u8]) -> Vec<(PacketType, String)> {
        decode(body, 1_000_000)
            .unwrap()
            .packets()
            .map(|p| (p.kind, p.data.to_owned()))
            .collect()
    }

    #[test]
    fn decodes_the_spec_examples() {
        // engine.io-protocol v4: `4hello\x1e2\x1e4world`.
        assert_eq!(
            kinds(b"4hello\x1e2\x1e4world"),
            [
                (PacketType::Message, "hello".to_owned()),
                (PacketType::Ping, String::new()),
                (PacketType::Message, "world".to_owned()),
            ]
        );
        // socket.io-protocol v5 sample session, request 5.
        let p = kinds(b"42[\"hello\"]\x1e42[\"world\"]");
        assert_eq!(p[1], (PacketType::Message, "2[\"world\"]".to_owned()));
        assert_eq!(kinds(b"40"), [(PacketType::Message, "0".to_owned())]);
        assert_eq!(kinds("4\u{20ac}".as_bytes())[0].1, "\u{20ac}");
    }

    #[test]
    fn bad_bodies_are_refused_whole() {
        let err = |body: &[u8]| decode(body, 16).unwrap_err();
        assert_eq!(
            err(b""),
            PayloadError::Packet {
                index: 0,
                error: PacketError::Empty
            }
        );
        assert_eq!(
            err(b"4a\x1e"),
            PayloadError::Packet {
                index: 1,
                error: PacketError::Empty
            }
        );
        assert_eq!(
            err(b"\x1e4a"),
            PayloadError::Packet {
                index: 0,
                error: PacketError::Empty
            }
        );
        assert_eq!(
            err(b"4a\x1e\x1e3"),
            PayloadError::Packet {
                index: 1,
                error: PacketError::Empty
            }
        );
        assert_eq!(
            err(b"4hello\x1ebAQIDBA=="),
            PayloadError::Packet {
                index: 1,
                error: PacketError::Binary
            }
        );
        assert_eq!(
            err(b"abc"),
            PayloadError::Packet {
                index: 0,
                error: PacketError::UnknownType(b'a')
            }
        );
        assert_eq!(err(b"4\xff"), PayloadError::NotUtf8);
        assert_eq!(
            err(&[b'4'; 17]),
            PayloadError::TooLarge { len: 17, max: 16 }
        );
        assert!(decode(&[b'4'; 16], 16).is_ok());
    }

    #[test]
    fn encodes_with_separators_and_one_buffer() {
        let packets = [
            Bytes::from_static(b"4hello"),
            Bytes::from_static(b"2"),
            Bytes::from_static(b"4world"),
        ];
        let body = encode(packets.iter());
        assert_eq!(body, &b"4hello\x1e2\x1e4world"[..]);
        assert_eq!(kinds(&body).len(), 3);
        assert_eq!(encode([].iter()), Bytes::new());
    }

    #[test]
    fn a_single_packet_is_shared_not_copied() {
        let event = Bytes::from(b"42[\"sas\",{}]".to_vec());
        let body = encode(std::iter::once(&event));
        assert_eq!(body.as_ptr(), event.as_ptr());
    }

    #[test]
    fn grown_len_counts_separators() {
        assert_eq!(grown_len(0, 0, 5), 5);
        assert_eq!(grown_len(5, 1, 1), 7);
        assert_eq!(grown_len(usize::MAX, 3, 1), usize::MAX);
    }
}
