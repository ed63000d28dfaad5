//! A lean client WebSocket for the readers: the opening handshake by hand, then server frames
//! parsed in place in one buffer, no allocation or UTF-8 pass per message.
//!
//! The instrument has to be cheaper per message than the gateway it measures, or a max-rate run
//! measures the load test. With tokio-tungstenite the reader thread spent about 0.4 µs of its
//! own CPU per message, as much as the gateway spent sending it; this reader does the same work
//! (a `recv`, find the frame, find `"t":`) without a message object per frame.
//!
//! Server frames are never masked (RFC 6455 §5.1): a masked or oversized frame is an error.
//! Pings are answered (masked pong), a close is answered and reported; fragmented messages are
//! not reassembled (the gateways under test never fragment), their pieces count as "other".

use std::io;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest frame payload accepted.
const MAX_PAYLOAD: usize = 1 << 20;
/// Bytes read per `recv` at most.
const READ_CHUNK: usize = 64 * 1024;

/// What [`RawWs::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text message; its payload is `RawWs::payload()`.
    Text,
    /// A binary message, a continuation, or a pong.
    Other,
    /// A close frame with its code (answered already).
    Close(Option<u16>),
}

/// A client WebSocket over a plain `TcpStream`.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of unparsed input in `buf`.
    start: usize,
    /// Payload of the last frame returned.
    payload: (usize, usize),
}

impl RawWs {
    /// Sends the upgrade request for `path` on `host` and checks the `101`; bytes that came after
    /// the response head stay buffered.
    pub async fn handshake(mut stream: TcpStream, host: &str, path: &str) -> anyhow::Result<RawWs> {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .context("sending the upgrade")?;
        let mut buf = Vec::with_capacity(4096);
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                bail!("response head over 16 KiB");
            }
            if stream
                .read_buf(&mut buf)
                .await
                .context("reading the upgrade response")?
                == 0
            {
                bail!("closed during the handshake");
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            let line = head.lines().next().unwrap_or("").to_owned();
            bail!("upgrade refused: {line}");
        }
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        if !head.contains(&format!(
            "sec-websocket-accept: {}",
            accept.to_ascii_lowercase()
        )) {
            bail!("wrong Sec-WebSocket-Accept");
        }
        Ok(RawWs {
            stream,
            buf,
            start: head_end,
            payload: (0, 0),
        })
    }

    /// The payload of the frame [`next`](Self::next) returned last.
    pub fn payload(&self) -> &[u8] {
        &self.buf[self.payload.0..self.payload.1]
    }

    /// Sends a text message (masked, as a client must).
    pub async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        let frame = client_frame(0x1, text);
        self.stream.write_all(&frame).await
    }

    /// The next text, other or close frame; answers pings on the way. `Ok(None)` at EOF.
    /// Cancel-safe: input is only consumed when a whole frame is returned.
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        loop {
            match parse(&self.buf[self.start..])? {
                Some((opcode, from, to, used)) => {
                    let base = self.start;
                    self.start += used;
                    self.payload = (base + from, base + to);
                    match opcode {
                        0x1 => return Ok(Some(Frame::Text)),
                        0x9 => {
                            let pong = client_frame(0xA, &self.buf[base + from..base + to]);
                            self.stream.write_all(&pong).await?;
                        }
                        0x8 => {
                            let p = &self.buf[base + from..base + to];
                            let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                            let reply = client_frame(0x8, &p[..p.len().min(2)]);
                            let _ = self.stream.write_all(&reply).await;
                            return Ok(Some(Frame::Close(code)));
                        }
                        _ => return Ok(Some(Frame::Other)),
                    }
                }
                None => {
                    if self.start > 0 {
                        self.buf.drain(..self.start);
                        self.start = 0;
                        self.payload = (0, 0);
                    }
                    self.buf.reserve(READ_CHUNK);
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// One server frame at the start of `b`: opcode, payload range and bytes used; `None` when
/// incomplete.
fn parse(b: &[u8]) -> io::Result<Option<(u8, usize, usize, usize)>> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "masked server frame",
        ));
    }
    let (len, header) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (
                usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame over 1 MiB",
        ));
    }
    if b.len() < header + len {
        return Ok(None);
    }
    Ok(Some((b[0] & 0x0f, header, header + len, header + len)))
}

/// A masked client frame (mask key 0: valid, and the payload stays as is).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_medium_and_incomplete_frames() {
        assert_eq!(
            parse(&[0x81, 0x02, b'h', b'i']).unwrap(),
            Some((1, 2, 4, 4))
        );
        assert_eq!(parse(&[0x81, 0x02, b'h']).unwrap(), None);
        let mut medium = vec![0x82, 126, 0x01, 0x00];
        medium.extend(std::iter::repeat_n(7u8, 256));
        assert_eq!(parse(&medium).unwrap(), Some((2, 4, 260, 260)));
        assert_eq!(parse(&medium[..3]).unwrap(), None);
        assert!(
            parse(&[0x81, 0x82, 0, 0, 0, 0, 1, 2]).is_err(),
            "masked server frame"
        );
        let huge = [0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0];
        assert!(parse(&huge).is_err(), "over the cap");
    }

    #[test]
    fn client_frames_are_masked_with_a_zero_key() {
        assert_eq!(
            client_frame(0xA, b"ab"),
            vec![0x8A, 0x82, 0, 0, 0, 0, b'a', b'b']
        );
        let long = client_frame(0x1, &[1u8; 300]);
        assert_eq!(&long[..4], &[0x81, 0x80 | 126, 0x01, 0x2c]);
        assert_eq!(long.len(), 4 + 4 + 300);
    }
}
