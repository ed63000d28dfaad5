//! Drives tungstenite's [`WebSocketContext`] over in-memory buffers (sans-IO).
//!
//! The shard reads from the socket (readiness-driven, into its shared scratch buffer) and hands the
//! bytes to [`Codec::handle_input`]. tungstenite parses, unmasks, reassembles fragments, checks
//! UTF-8 and close codes, and answers pings and closes by writing into our in-memory `Write`
//! side. [`Codec::poll_output`] takes those replies so the caller can queue them in the
//! connection's outbox, behind any frames already queued, so the byte stream stays ordered.
//!
//! Owned by one connection on one shard thread. Holds at most [`TUNGSTENITE_READ_BUFFER`] bytes of
//! buffered input while idle (tungstenite's `in_buffer`), plus a partial message.
//!
//! [`Codec::at_rest`] tells when the codec holds nothing a fresh one would not (no partial frame,
//! no fragmented message, no reply waiting): the connection can then drop it and make a new one
//! for its next message, so a connection that has spoken once does not keep a codec for ever.

use std::io::{self, Read, Write};

use bytes::Bytes;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use crate::protocol::CloseCode;

/// tungstenite's own read-buffer capacity per connection. Its default (128 KiB) is far too big
/// for a gateway that holds many idle connections, and tungstenite zero-fills the whole buffer
/// on every read, so every byte of it is resident. 128 B keeps an idle connection small; a
/// larger frame makes tungstenite reserve that frame's length, so big messages still work (they
/// are copied in 128-byte steps from our input buffer).
pub const TUNGSTENITE_READ_BUFFER: usize = 128;

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message (UTF-8 checked by tungstenite).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// The client started or answered the close handshake; tungstenite has queued its reply.
    Close,
    /// A ping or pong: proof of life, already answered when needed.
    Control,
}

/// Why the client's input was rejected; maps to the close code we send.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The message (or a frame) is larger than `max-message-bytes`: close 1009.
    #[error("message too big: {0}")]
    TooBig(String),
    /// A text message or close reason is not valid UTF-8: close 1007.
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// Any other violation of RFC 6455 (unmasked frame, bad opcode, bad close code...): 1002.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The close handshake has finished; nothing more will be read.
    #[error("connection closed")]
    Closed,
}

impl CodecError {
    /// The close code to send the client for this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            CodecError::TooBig(_) => CloseCode::MessageTooBig,
            CodecError::InvalidUtf8 => CloseCode::InvalidPayload,
            CodecError::Protocol(_) => CloseCode::ProtocolError,
            CodecError::Closed => CloseCode::Normal,
        }
    }
}

/// In-memory stream that tungstenite reads from and writes to.
#[derive(Debug, Default)]
struct MemStream {
    input: Vec<u8>,
    pos: usize,
    output: Vec<u8>,
}

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.input[self.pos..];
        if rest.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the client's byte stream stands between frames, tracked from the frame headers alone
/// (tungstenite keeps the same state, but does not expose it).
#[derive(Debug, Default)]
struct Boundary {
    /// The header bytes seen of the frame being started (at most 14).
    header: [u8; 14],
    /// How many of `header` are filled; 0 between frames.
    have: u8,
    /// Payload bytes of the current frame still to come.
    left: u64,
    /// A data frame without FIN started a message whose last fragment has not come yet.
    fragmented: bool,
}

impl Boundary {
    /// Follows `data` through frame headers and payloads.
    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left).map_or(data.len(), |left| left.min(data.len()));
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header[usize::from(self.have)] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have < 2 {
                continue;
            }
            let (b0, b1) = (self.header[0], self.header[1]);
            let extended = match b1 & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let masked = if b1 & 0x80 != 0 { 4 } else { 0 };
            if usize::from(self.have) < 2 + extended + masked {
                continue;
            }
            self.left = match extended {
                2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                8 => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(&self.header[2..10]);
                    u64::from_be_bytes(len)
                }
                _ => u64::from(b1 & 0x7f),
            };
            // Data frames (continuation, text, binary: opcodes below 8) open or close a
            // fragmented message; control frames may come between its fragments.
            if b0 & 0x0f < 8 {
                self.fragmented = b0 & 0x80 == 0;
            }
            self.have = 0;
        }
    }

    /// Between frames and outside a fragmented message.
    fn at_rest(&self) -> bool {
        self.have == 0 && self.left == 0 && !self.fragmented
    }
}

/// One connection's WebSocket codec.
#[derive(Debug)]
pub struct Codec {
    ctx: WebSocketContext,
    io: MemStream,
    boundary: Boundary,
}

impl Codec {
    /// A server-role codec that rejects messages above `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(TUNGSTENITE_READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes));
        Self {
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            io: MemStream::default(),
            boundary: Boundary::default(),
        }
    }

    /// Feeds bytes read from the socket. Call [`poll_message`](Self::poll_message) until it
    /// returns `Ok(None)` afterwards.
    pub fn handle_input(&mut self, data: &[u8]) {
        if self.io.pos == self.io.input.len() {
            self.io.input.clear();
            self.io.pos = 0;
        }
        self.io.input.extend_from_slice(data);
        self.boundary.advance(data);
    }

    /// True when the input so far ends exactly after a complete message (or control frame) and
    /// nothing of it waits here. Ask after [`poll_message`](Self::poll_message) returned
    /// `Ok(None)` and [`poll_output`](Self::poll_output) took every reply: a new codec would
    /// then behave exactly as this one, as long as the close handshake has not started.
    pub fn at_rest(&self) -> bool {
        self.boundary.at_rest() && self.io.pos == self.io.input.len() && self.io.output.is_empty()
    }

    /// The next complete message, `Ok(None)` when more input is needed.
    pub fn poll_message(&mut self) -> Result<Option<Incoming>, CodecError> {
        use tungstenite::Message;
        let result = match self.ctx.read(&mut self.io) {
            Ok(Message::Text(t)) => Ok(Some(Incoming::Text(Bytes::from(t)))),
            Ok(Message::Binary(b)) => Ok(Some(Incoming::Binary(b))),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => Ok(Some(Incoming::Control)),
            Ok(Message::Close(_)) => Ok(Some(Incoming::Close)),
            Ok(Message::Frame(_)) => Ok(Some(Incoming::Control)),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(classify(e)),
        };
        if self.io.pos == self.io.input.len() {
            // Keep an idle connection's input buffer small: drop what a big message grew.
            self.io.pos = 0;
            if self.io.input.capacity() > TUNGSTENITE_READ_BUFFER {
                self.io.input = Vec::new();
            } else {
                self.io.input.clear();
            }
        }
        result
    }

    /// Bytes tungstenite wants sent (pongs, the close reply), if any.
    pub fn poll_output(&mut self) -> Option<Bytes> {
        // Pongs and close replies are queued inside tungstenite until a read or flush; flushing
        // an in-memory stream cannot fail with anything but "already closed", which we ignore.
        let _ = self.ctx.flush(&mut self.io);
        if self.io.output.is_empty() {
            None
        } else {
            Some(Bytes::from(std::mem::take(&mut self.io.output)))
        }
    }
}

fn classify(e: WsError) -> CodecError {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            CodecError::TooBig(format!("{size} bytes > {max_size}"))
        }
        WsError::Capacity(other) => CodecError::TooBig(other.to_string()),
        WsError::Utf8(_) => CodecError::InvalidUtf8,
        WsError::Protocol(ProtocolError::InvalidCloseSequence) => {
            CodecError::Protocol("invalid close sequence".into())
        }
        WsError::Protocol(p) => CodecError::Protocol(p.to_string()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => CodecError::Closed,
        other => CodecError::Protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame (RFC 6455 §5.3).
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 65_535 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn text_split_across_reads_and_fragments() {
        let mut c = Codec::new(1024);
        let mut bytes = client_frame(false, 0x1, b"hel");
        bytes.extend(client_frame(true, 0x0, b"lo"));
        for b in &bytes {
            c.handle_input(std::slice::from_ref(b));
            if let Some(m) = c.poll_message().unwrap() {
                assert_eq!(m, Incoming::Text(Bytes::from_static(b"hello")));
                return;
            }
        }
        panic!("no message");
    }

    #[test]
    fn at_rest_only_between_whole_messages() {
        let mut c = Codec::new(1 << 20);
        assert!(c.at_rest());
        // A fragmented text message, a ping between its fragments, and a frame with a 16-bit
        // length, fed one byte at a time.
        let mut bytes = client_frame(false, 0x1, b"hel");
        bytes.extend(client_frame(true, 0x9, b"p"));
        bytes.extend(client_frame(true, 0x0, b"lo"));
        let long = vec![b'x'; 300];
        bytes.extend(client_frame(true, 0x1, &long));
        let ends = [
            bytes.len() - client_frame(true, 0x1, &long).len(),
            bytes.len(),
        ];
        for (i, b) in bytes.iter().enumerate() {
            c.handle_input(std::slice::from_ref(b));
            while c.poll_message().unwrap().is_some() {}
            let _ = c.poll_output();
            assert_eq!(c.at_rest(), ends.contains(&(i + 1)), "after byte {}", i + 1);
        }
        // A 64-bit length, and two messages in one read.
        let mut c = Codec::new(1 << 20);
        let big = vec![b'y'; 70_000];
        let mut bytes = client_frame(true, 0x2, &big);
        bytes.extend(client_frame(true, 0x1, b"hi"));
        c.handle_input(&bytes[..bytes.len() - 1]);
        assert_eq!(
            c.poll_message().unwrap(),
            Some(Incoming::Binary(Bytes::from(big)))
        );
        assert_eq!(c.poll_message().unwrap(), None);
        assert!(!c.at_rest(), "one byte of the text frame is missing");
        c.handle_input(&bytes[bytes.len() - 1..]);
        assert!(!c.at_rest(), "a message not taken yet");
        assert_eq!(
            c.poll_message().unwrap(),
            Some(Incoming::Text(Bytes::from_static(b"hi")))
        );
        assert_eq!(c.poll_message().unwrap(), None);
        assert!(c.at_rest());
    }

    #[test]
    fn ping_is_answered_with_pong() {
        let mut c = Codec::new(1024);
        c.handle_input(&client_frame(true, 0x9, b"p"));
        assert_eq!(c.poll_message().unwrap(), Some(Incoming::Control));
        let out = c.poll_output().unwrap();
        assert_eq!(&out[..], &[0x8a, 1, b'p']);
    }

    #[test]
    fn errors_map_to_close_codes() {
        let mut c = Codec::new(16);
        c.handle_input(&client_frame(true, 0x1, &[b'a'; 17]));
        assert_eq!(
            c.poll_message().unwrap_err().close_code(),
            CloseCode::MessageTooBig
        );

        let mut c = Codec::new(1024);
        c.handle_input(&client_frame(true, 0x1, &[0xff, 0xfe]));
        assert_eq!(
            c.poll_message().unwrap_err().close_code(),
            CloseCode::InvalidPayload
        );

        let mut c = Codec::new(1024);
        c.handle_input(&[0x81, 0x02, b'h', b'i']); // unmasked
        assert_eq!(
            c.poll_message().unwrap_err().close_code(),
            CloseCode::ProtocolError
        );
    }

    #[test]
    fn close_is_echoed() {
        let mut c = Codec::new(1024);
        c.handle_input(&client_frame(true, 0x8, &1000u16.to_be_bytes()));
        assert_eq!(c.poll_message().unwrap(), Some(Incoming::Close));
        let out = c.poll_output().unwrap();
        assert_eq!(out[0], 0x88);
    }
}
