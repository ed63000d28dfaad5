//! Encode-once server frames.
//!
//! A server-to-client frame is never masked, so the bytes of one message are identical for every
//! recipient. We therefore build each outgoing frame exactly once, as one contiguous
//! [`Bytes`] (header and payload), and hand every recipient a refcount clone.
//!
//! [`FrameBuilder`] lets a renderer write the payload straight into the final buffer: it reserves
//! room for the largest header up front, and [`FrameBuilder::finish`] writes the real header just
//! before the payload and slices it off. No copy of the payload is made after rendering.

use bytes::Bytes;

/// The largest server frame header: 2 bytes plus an 8-byte extended length (no mask).
pub const MAX_HEADER_LEN: usize = 10;

/// Frame opcodes we send (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// A UTF-8 text message.
    Text = 0x1,
    /// A binary message.
    Binary = 0x2,
    /// A close frame: a 2-byte code and an optional UTF-8 reason.
    Close = 0x8,
    /// A ping; the peer must answer with a pong.
    Ping = 0x9,
    /// A pong.
    Pong = 0xA,
}

/// Builds one frame in place: reserve the header, render the payload, then [`finish`](Self::finish).
#[derive(Debug)]
pub struct FrameBuilder {
    buf: Vec<u8>,
}

impl FrameBuilder {
    /// Starts a frame whose payload will be about `payload_hint` bytes long.
    pub fn with_capacity(payload_hint: usize) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER_LEN + payload_hint);
        buf.resize(MAX_HEADER_LEN, 0);
        Self { buf }
    }

    /// The payload buffer: append the payload to it.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes the header for a final (FIN) frame with `opcode` and returns the whole frame.
    pub fn finish(self, opcode: OpCode) -> Bytes {
        let mut buf = self.buf;
        let len = buf.len() - MAX_HEADER_LEN;
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = write_header(&mut header, opcode, len);
        let start = MAX_HEADER_LEN - header_len;
        buf[start..MAX_HEADER_LEN].copy_from_slice(&header[..header_len]);
        Bytes::from(buf).slice(start..)
    }
}

/// Writes a FIN, unmasked frame header for a payload of `len` bytes; returns the header length.
pub fn write_header(out: &mut [u8; MAX_HEADER_LEN], opcode: OpCode, len: usize) -> usize {
    out[0] = 0x80 | opcode as u8;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// The payload of a frame built here (unmasked, FIN), as a slice of the same buffer: a
/// refcount, never a copy. A polling body takes a Socket.IO packet this way from the
/// WebSocket frame the hub built once. Empty for bytes too short to be a frame.
pub fn payload_of(frame: &Bytes) -> Bytes {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        None => return Bytes::new(),
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
    };
    if frame.len() < header {
        return Bytes::new();
    }
    frame.slice(header..)
}

/// Encodes a complete frame from a payload slice (one copy of the payload).
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut b = FrameBuilder::with_capacity(payload.len());
    b.payload().extend_from_slice(payload);
    b.finish(opcode)
}

#[cfg(test)]
mod payload_of_tests {
    use super::*;

    #[test]
    fn payload_of_strips_every_header_size_without_copying() {
        for len in [0, 1, 125, 126, 65_535, 65_536, 70_000] {
            let payload = vec![b'x'; len];
            let frame = encode(OpCode::Text, &payload);
            let p = payload_of(&frame);
            assert_eq!(p.len(), len, "payload length {len}");
            assert_eq!(&p[..], &payload[..]);
            if len > 0 {
                assert_eq!(p.as_ptr(), frame[frame.len() - len..].as_ptr(), "a slice");
            }
        }
        assert!(payload_of(&Bytes::from_static(b"\x81")).is_empty());
    }
}

/// Encodes a text frame if `payload` is valid UTF-8, else a binary frame.
pub fn encode_auto(payload: &[u8]) -> Bytes {
    let opcode = if std::str::from_utf8(payload).is_ok() {
        OpCode::Text
    } else {
        OpCode::Binary
    };
    encode(opcode, payload)
}

/// Encodes a close frame with `code` and a reason (truncated to fit the 125-byte control limit).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut b = FrameBuilder::with_capacity(2 + end);
    b.payload().extend_from_slice(&code.to_be_bytes());
    b.payload().extend_from_slice(&reason.as_bytes()[..end]);
    b.finish(OpCode::Close)
}

/// An empty ping frame. Built once per shard and shared by every connection.
pub fn ping() -> Bytes {
    Bytes::from_static(&[0x80 | OpCode::Ping as u8, 0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::FrameHeader;

    fn parse(frame: &[u8]) -> (FrameHeader, u64, usize) {
        let mut cur = std::io::Cursor::new(frame);
        let (h, len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
        (h, len, cur.position() as usize)
    }

    #[test]
    fn header_sizes_match_tungstenite_parser() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = vec![b'x'; len];
            let frame = encode(OpCode::Text, &payload);
            let (h, plen, hlen) = parse(&frame);
            assert!(h.is_final);
            assert!(h.mask.is_none());
            assert_eq!(plen as usize, len, "len {len}");
            assert_eq!(frame.len(), hlen + len);
            assert_eq!(&frame[hlen..], &payload[..]);
        }
    }

    #[test]
    fn close_frame_carries_code_and_truncated_reason() {
        let long = "é".repeat(100);
        let frame = close(1001, &long);
        let (h, plen, hlen) = parse(&frame);
        assert_eq!(
            h.opcode,
            tungstenite::protocol::frame::coding::OpCode::Control(
                tungstenite::protocol::frame::coding::Control::Close
            )
        );
        assert!(plen <= 125);
        assert_eq!(&frame[hlen..hlen + 2], &1001u16.to_be_bytes());
        assert!(std::str::from_utf8(&frame[hlen + 2..]).is_ok());
    }

    #[test]
    fn auto_picks_binary_for_invalid_utf8() {
        assert_eq!(encode_auto(b"hi")[0], 0x81);
        assert_eq!(encode_auto(&[0xff, 0xfe])[0], 0x82);
    }
}
