//! The RabbitMQ stream protocol, consumer side, as a sans-IO codec: frames the client sends are
//! encoded into a buffer ([`ClientFrame::encode`]), frames the server sends are cut out of a
//! read buffer ([`split_frame`]) and parsed ([`ServerFrame::parse`]). No sockets here.
//!
//! Wire format (`deps/rabbitmq_stream/docs/PROTOCOL.adoc` in rabbitmq-server): a `uint32` size,
//! then `key: uint16`, `version: uint16`, and the command's fields, all big-endian; strings are
//! an `int16` length and bytes, byte blobs an `int32` length and bytes, arrays an `int32` count.
//! A response's key is the request's key with the high bit set.
//!
//! Compatibility: this codec never sends `ExchangeCommandVersions` (key 0x001b). RabbitMQ 3.10
//! does not know it and closes the connection; without it every server (3.10, 3.11+) speaks
//! version 1 of every command, which is all this client needs.
//!
//! Invariants: every length read from the network is checked against what is left of the
//! frame before it is used (a short frame is [`CodecError::Truncated`], never a panic); a frame
//! larger than the negotiated maximum is refused before it is buffered
//! ([`CodecError::FrameTooLarge`]); no `as` on a peer-supplied length.
//!
//! Thread: pure, any thread (the connection threads and the driver of the stream source).

use bytes::Bytes;

/// Protocol version of every command this client sends and expects.
pub const VERSION_1: u16 = 1;

/// Command keys (requests; a response is `key | RESPONSE`).
pub mod key {
    /// `Subscribe`.
    pub const SUBSCRIBE: u16 = 0x0007;
    /// `Deliver` (server → client).
    pub const DELIVER: u16 = 0x0008;
    /// `Credit` (a response comes only for an error).
    pub const CREDIT: u16 = 0x0009;
    /// `Unsubscribe`.
    pub const UNSUBSCRIBE: u16 = 0x000c;
    /// `Metadata`.
    pub const METADATA: u16 = 0x000f;
    /// `MetadataUpdate` (server → client).
    pub const METADATA_UPDATE: u16 = 0x0010;
    /// `PeerProperties`.
    pub const PEER_PROPERTIES: u16 = 0x0011;
    /// `SaslHandshake`.
    pub const SASL_HANDSHAKE: u16 = 0x0012;
    /// `SaslAuthenticate`.
    pub const SASL_AUTHENTICATE: u16 = 0x0013;
    /// `Tune` (server first, the client answers with the same frame).
    pub const TUNE: u16 = 0x0014;
    /// `Open`.
    pub const OPEN: u16 = 0x0015;
    /// `Close` (either side).
    pub const CLOSE: u16 = 0x0016;
    /// `Heartbeat` (either side).
    pub const HEARTBEAT: u16 = 0x0017;
    /// The high bit that marks a response.
    pub const RESPONSE: u16 = 0x8000;
}

/// Response codes this client acts on (PROTOCOL.adoc, "Response Codes").
pub mod code {
    /// OK.
    pub const OK: u16 = 0x01;
    /// Stream does not exist.
    pub const STREAM_DOES_NOT_EXIST: u16 = 0x02;
    /// Subscription ID does not exist.
    pub const SUBSCRIPTION_ID_DOES_NOT_EXIST: u16 = 0x04;
    /// Stream not available (in `MetadataUpdate`: the stream was deleted or lost its leader).
    pub const STREAM_NOT_AVAILABLE: u16 = 0x06;
    /// Authentication failure.
    pub const AUTHENTICATION_FAILURE: u16 = 0x08;
    /// Virtual host access failure.
    pub const VIRTUAL_HOST_ACCESS_FAILURE: u16 = 0x0c;
}

/// Size of the length prefix of every frame.
pub const LENGTH_PREFIX: usize = 4;

/// Why bytes could not be encoded or decoded. Every decode error is the peer's fault (or a
/// corrupted connection): the caller drops the connection and reconnects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The frame ended before the field `what`: the peer sent a malformed frame.
    #[error("frame truncated while reading {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// The frame announces more bytes than the negotiated maximum: refused unread.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced size.
        len: u64,
        /// Negotiated maximum.
        max: u32,
    },
    /// A string field is not UTF-8, or has a negative length where null is not allowed.
    #[error("bad string in {what}")]
    BadString {
        /// The field.
        what: &'static str,
    },
    /// A value to encode does not fit its field (our fault: a caller passed a string longer
    /// than 32,767 bytes); nothing was written.
    #[error("{what} too long to encode")]
    TooLong {
        /// The field.
        what: &'static str,
    },
}

/// Where a subscription starts (the `OffsetSpecification` of `Subscribe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first message still in the stream (type 1).
    First,
    /// The last chunk (type 2).
    Last,
    /// Only messages written after the subscription (type 3).
    Next,
    /// From this offset on (type 4); the server starts at the chunk holding it.
    Offset(u64),
    /// From the first chunk with a timestamp at or after this many ms since the epoch (type 5).
    Timestamp(i64),
}

/// A frame this client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// `PeerProperties` with our properties (`connection_name` shows in the management UI).
    PeerProperties {
        /// Correlation id.
        corr: u32,
        /// Key/value pairs.
        props: &'a [(&'a str, &'a str)],
    },
    /// `SaslHandshake`: asks for the server's mechanisms.
    SaslHandshake {
        /// Correlation id.
        corr: u32,
    },
    /// `SaslAuthenticate` with a mechanism and its opaque data (`\0user\0pass` for PLAIN).
    SaslAuthenticate {
        /// Correlation id.
        corr: u32,
        /// `PLAIN`.
        mechanism: &'a str,
        /// The SASL response.
        data: &'a [u8],
    },
    /// `Tune`: our answer to the server's (its values or lower).
    Tune {
        /// Maximum frame size in bytes (0: no limit).
        frame_max: u32,
        /// Heartbeat interval in seconds (0: none).
        heartbeat_s: u32,
    },
    /// `Open` a virtual host.
    Open {
        /// Correlation id.
        corr: u32,
        /// The vhost.
        vhost: &'a str,
    },
    /// `Metadata` for some streams (to learn whether they exist).
    Metadata {
        /// Correlation id.
        corr: u32,
        /// Stream names.
        streams: &'a [&'a str],
    },
    /// `Subscribe`.
    Subscribe {
        /// Correlation id.
        corr: u32,
        /// Our subscription id (unique per connection).
        sub: u8,
        /// The stream.
        stream: &'a str,
        /// Where to start.
        offset: OffsetSpec,
        /// Chunks the server may send before more credit.
        credit: u16,
    },
    /// `Credit`: the server may send `credit` more chunks for `sub`.
    Credit {
        /// Subscription id.
        sub: u8,
        /// Chunks.
        credit: u16,
    },
    /// `Unsubscribe`.
    Unsubscribe {
        /// Correlation id.
        corr: u32,
        /// Subscription id.
        sub: u8,
    },
    /// `Heartbeat`.
    Heartbeat,
    /// `Close` request.
    Close {
        /// Correlation id.
        corr: u32,
        /// Closing code (1: normal).
        code: u16,
        /// Reason.
        reason: &'a str,
    },
    /// The answer to the server's `Close`.
    CloseResponse {
        /// The server's correlation id.
        corr: u32,
        /// Response code (OK).
        code: u16,
    },
}

impl ClientFrame<'_> {
    /// Appends the frame, length prefix included, to `out`. On error `out` is unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = out.len();
        out.extend_from_slice(&[0; LENGTH_PREFIX]);
        if let Err(e) = self.encode_body(out) {
            out.truncate(start);
            return Err(e);
        }
        let Ok(len) = u32::try_from(out.len() - start - LENGTH_PREFIX) else {
            out.truncate(start);
            return Err(CodecError::TooLong { what: "frame" });
        };
        out[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let head = |out: &mut Vec<u8>, key: u16| {
            out.extend_from_slice(&key.to_be_bytes());
            out.extend_from_slice(&VERSION_1.to_be_bytes());
        };
        let corr_head = |out: &mut Vec<u8>, key: u16, corr: u32| {
            head(out, key);
            out.extend_from_slice(&corr.to_be_bytes());
        };
        match *self {
            ClientFrame::PeerProperties { corr, props } => {
                corr_head(out, key::PEER_PROPERTIES, corr);
                put_count(out, props.len())?;
                for (k, v) in props {
                    put_str(out, k, "property key")?;
                    put_str(out, v, "property value")?;
                }
            }
            ClientFrame::SaslHandshake { corr } => corr_head(out, key::SASL_HANDSHAKE, corr),
            ClientFrame::SaslAuthenticate {
                corr,
                mechanism,
                data,
            } => {
                corr_head(out, key::SASL_AUTHENTICATE, corr);
                put_str(out, mechanism, "mechanism")?;
                put_count(out, data.len())?;
                out.extend_from_slice(data);
            }
            ClientFrame::Tune {
                frame_max,
                heartbeat_s,
            } => {
                head(out, key::TUNE);
                out.extend_from_slice(&frame_max.to_be_bytes());
                out.extend_from_slice(&heartbeat_s.to_be_bytes());
            }
            ClientFrame::Open { corr, vhost } => {
                corr_head(out, key::OPEN, corr);
                put_str(out, vhost, "vhost")?;
            }
            ClientFrame::Metadata { corr, streams } => {
                corr_head(out, key::METADATA, corr);
                put_count(out, streams.len())?;
                for s in streams {
                    put_str(out, s, "stream")?;
                }
            }
            ClientFrame::Subscribe {
                corr,
                sub,
                stream,
                offset,
                credit,
            } => {
                corr_head(out, key::SUBSCRIBE, corr);
                out.push(sub);
                put_str(out, stream, "stream")?;
                put_offset(out, offset);
                out.extend_from_slice(&credit.to_be_bytes());
                put_count(out, 0)?; // no properties
            }
            ClientFrame::Credit { sub, credit } => {
                head(out, key::CREDIT);
                out.push(sub);
                out.extend_from_slice(&credit.to_be_bytes());
            }
            ClientFrame::Unsubscribe { corr, sub } => {
                corr_head(out, key::UNSUBSCRIBE, corr);
                out.push(sub);
            }
            ClientFrame::Heartbeat => head(out, key::HEARTBEAT),
            ClientFrame::Close { corr, code, reason } => {
                corr_head(out, key::CLOSE, corr);
                out.extend_from_slice(&code.to_be_bytes());
                put_str(out, reason, "close reason")?;
            }
            ClientFrame::CloseResponse { corr, code } => {
                corr_head(out, key::CLOSE | key::RESPONSE, corr);
                out.extend_from_slice(&code.to_be_bytes());
            }
        }
        Ok(())
    }
}

fn put_offset(out: &mut Vec<u8>, spec: OffsetSpec) {
    let (kind, value): (u16, Option<[u8; 8]>) = match spec {
        OffsetSpec::First => (1, None),
        OffsetSpec::Last => (2, None),
        OffsetSpec::Next => (3, None),
        OffsetSpec::Offset(o) => (4, Some(o.to_be_bytes())),
        OffsetSpec::Timestamp(t) => (5, Some(t.to_be_bytes())),
    };
    out.extend_from_slice(&kind.to_be_bytes());
    if let Some(v) = value {
        out.extend_from_slice(&v);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), CodecError> {
    let len = i16::try_from(s.len()).map_err(|_| CodecError::TooLong { what })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_count(out: &mut Vec<u8>, n: usize) -> Result<(), CodecError> {
    let n = i32::try_from(n).map_err(|_| CodecError::TooLong { what: "array" })?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

/// Cuts the first complete frame off `buf`: `Ok(Some((start, end)))` is the frame's body
/// (after the length prefix) as a range of `buf`, `Ok(None)` means more bytes are needed. A
/// frame announcing more than `max_frame` bytes (prefix excluded) is an error at once, before
/// its bytes arrive.
pub fn split_frame(buf: &[u8], max_frame: u32) -> Result<Option<(usize, usize)>, CodecError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    if len > max_frame {
        return Err(CodecError::FrameTooLarge {
            len: u64::from(len),
            max: max_frame,
        });
    }
    let Ok(len) = usize::try_from(len) else {
        return Err(CodecError::FrameTooLarge {
            len: u64::from(len),
            max: max_frame,
        });
    };
    let end = LENGTH_PREFIX.saturating_add(len);
    Ok((buf.len() >= end).then_some((LENGTH_PREFIX, end)))
}

/// A frame the server sent, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// A response that carries only a code (PeerProperties, SaslAuthenticate, Open, Subscribe,
    /// Unsubscribe, Close); trailing fields (properties, SASL challenge) are skipped.
    Response {
        /// The request's key (without the response bit).
        key: u16,
        /// Correlation id.
        corr: u32,
        /// Response code.
        code: u16,
    },
    /// The answer to `SaslHandshake`.
    SaslMechanisms {
        /// Correlation id.
        corr: u32,
        /// Response code.
        code: u16,
        /// Mechanisms the server offers.
        mechanisms: Vec<String>,
    },
    /// The server's `Tune` proposal.
    Tune {
        /// Maximum frame size in bytes (0: no limit).
        frame_max: u32,
        /// Heartbeat interval in seconds (0: none).
        heartbeat_s: u32,
    },
    /// The answer to `Metadata`: each stream with its response code.
    Metadata {
        /// Correlation id.
        corr: u32,
        /// `(stream, code)`; code [`code::STREAM_DOES_NOT_EXIST`] when it does not exist.
        streams: Vec<(String, u16)>,
    },
    /// Something changed about a stream (deleted: [`code::STREAM_NOT_AVAILABLE`]).
    MetadataUpdate {
        /// What happened.
        code: u16,
        /// The stream.
        stream: String,
    },
    /// One chunk for a subscription: the raw OsirisChunk (see `chunk.rs`).
    Deliver {
        /// Subscription id.
        sub: u8,
        /// The chunk bytes, header included.
        chunk: Bytes,
    },
    /// A `Credit` failed (the server answers `Credit` only on error).
    CreditError {
        /// Response code.
        code: u16,
        /// Subscription id.
        sub: u8,
    },
    /// The server closes the connection; answer with [`ClientFrame::CloseResponse`].
    Close {
        /// Correlation id.
        corr: u32,
        /// Closing code.
        code: u16,
        /// Reason.
        reason: String,
    },
    /// `Heartbeat`.
    Heartbeat,
    /// A command this client does not use; ignored.
    Other {
        /// Its key.
        key: u16,
    },
}

impl ServerFrame {
    /// Parses one frame body (what [`split_frame`] cut out, without the length prefix).
    pub fn parse(body: Bytes) -> Result<ServerFrame, CodecError> {
        let mut r = Reader::new(&body);
        let key_raw = r.u16("key")?;
        let version = r.u16("version")?;
        Ok(match key_raw {
            key::DELIVER => {
                let sub = r.u8("subscription id")?;
                if version >= 2 {
                    r.u64("committed chunk id")?;
                }
                ServerFrame::Deliver {
                    sub,
                    chunk: body.slice(r.pos..),
                }
            }
            key::TUNE => ServerFrame::Tune {
                frame_max: r.u32("frame max")?,
                heartbeat_s: r.u32("heartbeat")?,
            },
            key::METADATA_UPDATE => ServerFrame::MetadataUpdate {
                code: r.u16("code")?,
                stream: r.string("stream")?,
            },
            key::HEARTBEAT => ServerFrame::Heartbeat,
            key::CLOSE => ServerFrame::Close {
                corr: r.u32("correlation id")?,
                code: r.u16("closing code")?,
                reason: r.string("closing reason")?,
            },
            k if k == key::CREDIT | key::RESPONSE => ServerFrame::CreditError {
                code: r.u16("code")?,
                sub: r.u8("subscription id")?,
            },
            k if k == key::METADATA | key::RESPONSE => parse_metadata(&mut r)?,
            k if k == key::SASL_HANDSHAKE | key::RESPONSE => {
                let corr = r.u32("correlation id")?;
                let code = r.u16("code")?;
                let n = r.count("mechanisms")?;
                let mut mechanisms = Vec::new();
                for _ in 0..n {
                    mechanisms.push(r.string("mechanism")?);
                }
                ServerFrame::SaslMechanisms {
                    corr,
                    code,
                    mechanisms,
                }
            }
            k if k & key::RESPONSE != 0 => ServerFrame::Response {
                key: k & !key::RESPONSE,
                corr: r.u32("correlation id")?,
                code: r.u16("code")?,
            },
            k => ServerFrame::Other { key: k },
        })
    }
}

fn parse_metadata(r: &mut Reader<'_>) -> Result<ServerFrame, CodecError> {
    let corr = r.u32("correlation id")?;
    let brokers = r.count("brokers")?;
    for _ in 0..brokers {
        r.u16("broker reference")?;
        r.string("broker host")?;
        r.u32("broker port")?;
    }
    let n = r.count("stream metadata")?;
    let mut streams = Vec::new();
    for _ in 0..n {
        let name = r.string("stream name")?;
        let code = r.u16("stream code")?;
        r.u16("leader reference")?;
        let replicas = r.count("replicas")?;
        for _ in 0..replicas {
            r.u16("replica reference")?;
        }
        streams.push((name, code));
    }
    Ok(ServerFrame::Metadata { corr, streams })
}

/// A bounds-checked big-endian reader over one frame or chunk.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    /// Bytes consumed so far.
    pub pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(CodecError::Truncated { what })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let bytes = self.take(N, what)?;
        bytes.try_into().map_err(|_| CodecError::Truncated { what })
    }

    /// A `uint8`.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A `uint16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        self.array(what).map(u16::from_be_bytes)
    }

    /// A `uint32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        self.array(what).map(u32::from_be_bytes)
    }

    /// A `uint64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// An `int64`.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, CodecError> {
        self.array(what).map(i64::from_be_bytes)
    }

    /// An array count (`int32`), checked to be non-negative and to leave at least one byte
    /// per element, so a hostile count cannot make the caller loop or allocate for nothing.
    pub fn count(&mut self, what: &'static str) -> Result<usize, CodecError> {
        let n = i32::from_be_bytes(self.array(what)?);
        let n = usize::try_from(n).map_err(|_| CodecError::Truncated { what })?;
        if n > self.remaining() {
            return Err(CodecError::Truncated { what });
        }
        Ok(n)
    }

    /// A `string` (`int16` length; null is read as empty).
    pub fn string(&mut self, what: &'static str) -> Result<String, CodecError> {
        let len = i16::from_be_bytes(self.array(what)?);
        if len == -1 {
            return Ok(String::new());
        }
        let len = usize::try_from(len).map_err(|_| CodecError::BadString { what })?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::BadString { what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: ClientFrame<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        f.encode(&mut out).expect("encodes");
        out
    }

    #[test]
    fn client_frames_match_the_protocol_reference() {
        let props = [("connection_name", "rc")];
        assert_eq!(
            encoded(ClientFrame::PeerProperties {
                corr: 1,
                props: &props
            }),
            b"\0\0\0\x21\x00\x11\0\x01\0\0\0\x01\0\0\0\x01\0\x0fconnection_name\0\x02rc"
        );
        assert_eq!(
            encoded(ClientFrame::SaslHandshake { corr: 2 }),
            b"\0\0\0\x08\x00\x12\0\x01\0\0\0\x02"
        );
        assert_eq!(
            encoded(ClientFrame::SaslAuthenticate {
                corr: 3,
                mechanism: "PLAIN",
                data: b"\0u\0p"
            }),
            b"\0\0\0\x17\x00\x13\0\x01\0\0\0\x03\0\x05PLAIN\0\0\0\x04\0u\0p"
        );
        assert_eq!(
            encoded(ClientFrame::Tune {
                frame_max: 1_048_576,
                heartbeat_s: 60
            }),
            b"\0\0\0\x0c\x00\x14\0\x01\x00\x10\x00\x00\0\0\0\x3c"
        );
        assert_eq!(
            encoded(ClientFrame::Open {
                corr: 4,
                vhost: "/"
            }),
            b"\0\0\0\x0b\x00\x15\0\x01\0\0\0\x04\0\x01/"
        );
        assert_eq!(
            encoded(ClientFrame::Metadata {
                corr: 5,
                streams: &["s"]
            }),
            b"\0\0\0\x0f\x00\x0f\0\x01\0\0\0\x05\0\0\0\x01\0\x01s"
        );
        assert_eq!(
            encoded(ClientFrame::Credit { sub: 7, credit: 2 }),
            b"\0\0\0\x07\x00\x09\0\x01\x07\0\x02"
        );
        assert_eq!(
            encoded(ClientFrame::Unsubscribe { corr: 6, sub: 7 }),
            b"\0\0\0\x09\x00\x0c\0\x01\0\0\0\x06\x07"
        );
        assert_eq!(encoded(ClientFrame::Heartbeat), b"\0\0\0\x04\x00\x17\0\x01");
        assert_eq!(
            encoded(ClientFrame::Close {
                corr: 8,
                code: 1,
                reason: "bye"
            }),
            b"\0\0\0\x0f\x00\x16\0\x01\0\0\0\x08\0\x01\0\x03bye"
        );
        assert_eq!(
            encoded(ClientFrame::CloseResponse { corr: 9, code: 1 }),
            b"\0\0\0\x0a\x80\x16\0\x01\0\0\0\x09\0\x01"
        );
    }

    #[test]
    fn subscribe_encodes_each_offset_specification() {
        let sub = |offset| {
            encoded(ClientFrame::Subscribe {
                corr: 1,
                sub: 2,
                stream: "s",
                offset,
                credit: 3,
            })
        };
        let head = b"\x00\x07\0\x01\0\0\0\x01\x02\0\x01s";
        let next = sub(OffsetSpec::Next);
        assert_eq!(&next[4..16], head);
        assert_eq!(&next[16..], b"\0\x03\0\x03\0\0\0\0");
        let off = sub(OffsetSpec::Offset(0x0102));
        assert_eq!(&off[16..], b"\0\x04\0\0\0\0\0\0\x01\x02\0\x03\0\0\0\0");
        let ts = sub(OffsetSpec::Timestamp(-1));
        assert_eq!(&ts[16..18], b"\0\x05");
        assert_eq!(&ts[18..26], &[0xff; 8]);
        assert_eq!(&sub(OffsetSpec::First)[16..18], b"\0\x01");
        assert_eq!(&sub(OffsetSpec::Last)[16..18], b"\0\x02");
        assert_eq!(u32::from_be_bytes(next[..4].try_into().unwrap()), 20);
    }

    #[test]
    fn a_too_long_string_is_refused_and_writes_nothing() {
        let long = "x".repeat(40_000);
        let mut out = b"keep".to_vec();
        let err = ClientFrame::Open {
            corr: 1,
            vhost: &long,
        }
        .encode(&mut out);
        assert_eq!(err, Err(CodecError::TooLong { what: "vhost" }));
        assert_eq!(out, b"keep");
    }

    #[test]
    fn split_frame_waits_for_whole_frames_and_refuses_big_ones() {
        assert_eq!(split_frame(b"\0\0", 100), Ok(None));
        assert_eq!(split_frame(b"\0\0\0\x04\x00\x17\0", 100), Ok(None));
        assert_eq!(
            split_frame(b"\0\0\0\x04\x00\x17\0\x01rest", 100),
            Ok(Some((4, 8)))
        );
        assert_eq!(
            split_frame(b"\xff\xff\xff\xff", 1_048_576),
            Err(CodecError::FrameTooLarge {
                len: 0xffff_ffff,
                max: 1_048_576
            })
        );
    }

    fn parse(b: &'static [u8]) -> Result<ServerFrame, CodecError> {
        ServerFrame::parse(Bytes::from_static(b))
    }

    #[test]
    fn server_frames_parse() {
        assert_eq!(
            parse(b"\x80\x11\0\x01\0\0\0\x01\0\x01\0\0\0\x01\0\x01k\0\x01v"),
            Ok(ServerFrame::Response {
                key: key::PEER_PROPERTIES,
                corr: 1,
                code: code::OK
            })
        );
        assert_eq!(
            parse(b"\x80\x12\0\x01\0\0\0\x02\0\x01\0\0\0\x02\0\x05PLAIN\0\x08AMQPLAIN"),
            Ok(ServerFrame::SaslMechanisms {
                corr: 2,
                code: 1,
                mechanisms: vec!["PLAIN".into(), "AMQPLAIN".into()]
            })
        );
        assert_eq!(
            parse(b"\x80\x13\0\x01\0\0\0\x03\0\x08"),
            Ok(ServerFrame::Response {
                key: key::SASL_AUTHENTICATE,
                corr: 3,
                code: code::AUTHENTICATION_FAILURE
            })
        );
        assert_eq!(
            parse(b"\x00\x14\0\x01\0\x10\0\0\0\0\0\x3c"),
            Ok(ServerFrame::Tune {
                frame_max: 1_048_576,
                heartbeat_s: 60
            })
        );
        assert_eq!(parse(b"\x00\x17\0\x01"), Ok(ServerFrame::Heartbeat));
        assert_eq!(
            parse(b"\x00\x16\0\x01\0\0\0\x09\0\x01\0\x02ok"),
            Ok(ServerFrame::Close {
                corr: 9,
                code: 1,
                reason: "ok".into()
            })
        );
        assert_eq!(
            parse(b"\x80\x09\0\x01\0\x04\x05"),
            Ok(ServerFrame::CreditError { code: 4, sub: 5 })
        );
        assert_eq!(
            parse(b"\x00\x10\0\x01\0\x06\0\x01s"),
            Ok(ServerFrame::MetadataUpdate {
                code: code::STREAM_NOT_AVAILABLE,
                stream: "s".into()
            })
        );
        assert_eq!(
            parse(b"\x00\x22\0\x01"),
            Ok(ServerFrame::Other { key: 0x22 })
        );
    }

    #[test]
    fn metadata_response_lists_brokers_and_streams() {
        let f = parse(
            b"\x80\x0f\0\x01\0\0\0\x05\0\0\0\x01\0\0\0\x09localhost\0\0\x15\xb0\
              \0\0\0\x02\0\x01a\0\x01\0\0\0\0\0\x01\0\0\0\x01b\0\x02\xff\xff\0\0\0\0",
        );
        assert_eq!(
            f,
            Ok(ServerFrame::Metadata {
                corr: 5,
                streams: vec![("a".into(), 1), ("b".into(), 2)]
            })
        );
    }

    #[test]
    fn deliver_keeps_the_chunk_bytes() {
        assert_eq!(
            parse(b"\x00\x08\0\x01\x03chunk"),
            Ok(ServerFrame::Deliver {
                sub: 3,
                chunk: Bytes::from_static(b"chunk")
            })
        );
        // Version 2 carries a committed chunk id before the chunk.
        assert_eq!(
            parse(b"\x00\x08\0\x02\x03\0\0\0\0\0\0\0\x01chunk"),
            Ok(ServerFrame::Deliver {
                sub: 3,
                chunk: Bytes::from_static(b"chunk")
            })
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert!(matches!(parse(b""), Err(CodecError::Truncated { .. })));
        assert!(matches!(
            parse(b"\x80\x07\0\x01\0\0"),
            Err(CodecError::Truncated { .. })
        ));
        // A string longer than the frame.
        assert!(matches!(
            parse(b"\x00\x10\0\x01\0\x06\x7f\xffs"),
            Err(CodecError::Truncated { .. })
        ));
        // A negative string length other than -1.
        assert!(matches!(
            parse(b"\x00\x10\0\x01\0\x06\xff\xfes"),
            Err(CodecError::BadString { .. })
        ));
        // Not UTF-8.
        assert!(matches!(
            parse(b"\x00\x10\0\x01\0\x06\0\x01\xff"),
            Err(CodecError::BadString { .. })
        ));
        // An array count far beyond the frame.
        assert!(matches!(
            parse(b"\x80\x0f\0\x01\0\0\0\x05\x7f\xff\xff\xff"),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            parse(b"\x80\x0f\0\x01\0\0\0\x05\xff\xff\xff\xff"),
            Err(CodecError::Truncated { .. })
        ));
    }
}
