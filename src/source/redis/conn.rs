//! A blocking connection to Redis, owned by one upstream thread: connect, handshake (HELLO,
//! AUTH, SELECT), send pipelined commands, read values.
//!
//! Blocking I/O is right here: these threads are not shards, and each does one thing.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::BytesMut;

use super::RedisUrl;
use super::resp::{self, DecodeError, Proto, Value};

/// Largest reply we buffer (Redis's own `proto-max-bulk-len` default is 512 MiB; our events are
/// WebSocket messages, far smaller). Past it the connection is reset.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Why talking to Redis failed. Every variant resets the connection; the caller reconnects.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// TCP connect failed or timed out: Redis is down or unreachable.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// AUTH or HELLO was refused: fix the credentials.
    #[error("authentication refused: {0}")]
    Auth(String),
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// Redis closed the connection.
    #[error("connection closed by Redis")]
    Closed,
    /// Redis sent bytes that are not RESP (or an absurdly large reply).
    #[error(transparent)]
    Protocol(#[from] DecodeError),
    /// A command got an error reply.
    #[error("Redis replied with an error: {0}")]
    Reply(String),
}

/// One connection.
pub struct RedisConn {
    stream: TcpStream,
    /// Decoded values are split off the front of this buffer without copying.
    buf: BytesMut,
    /// Socket read scratch space.
    chunk: Box<[u8; 16 * 1024]>,
    out: BytesMut,
    /// The protocol negotiated.
    pub proto: Proto,
}

impl RedisConn {
    /// Connects and performs the handshake: `HELLO 3` (with AUTH) when `want` is RESP3, falling
    /// back to RESP2 for servers without HELLO; `AUTH` for RESP2; `SELECT db`.
    pub fn connect(
        url: &RedisUrl,
        want: Proto,
        timeout: Duration,
    ) -> Result<RedisConn, RedisError> {
        let addr = url.authority();
        let connect_err = |source| RedisError::Connect {
            addr: addr.clone(),
            source,
        };
        let target = addr
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| connect_err(io::Error::other("no address")))?;
        let stream = TcpStream::connect_timeout(&target, timeout).map_err(connect_err)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let _ = socket2::SockRef::from(&stream).set_keepalive(true);
        let mut conn = RedisConn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            chunk: Box::new([0; 16 * 1024]),
            out: BytesMut::new(),
            proto: Proto::Resp2,
        };
        conn.handshake(url, want)?;
        conn.stream.set_read_timeout(None)?;
        Ok(conn)
    }

    fn handshake(&mut self, url: &RedisUrl, want: Proto) -> Result<(), RedisError> {
        let user = url.user.as_deref().unwrap_or("default");
        let mut authed = false;
        if want == Proto::Resp3 {
            // The reply to HELLO 3 is already RESP3 (a map); an error reply parses either way.
            self.proto = Proto::Resp3;
            let reply = match &url.password {
                Some(pw) => self.call(&[b"HELLO", b"3", b"AUTH", user.as_bytes(), pw.as_bytes()]),
                None => self.call(&[b"HELLO", b"3"]),
            };
            match reply {
                Ok(_) => authed = true,
                Err(RedisError::Reply(e)) if is_auth_error(&e) => return Err(RedisError::Auth(e)),
                // Redis < 6 has no HELLO: stay on RESP2.
                Err(RedisError::Reply(_)) => self.proto = Proto::Resp2,
                Err(e) => return Err(e),
            }
        }
        if !authed && let Some(pw) = &url.password {
            let reply = match &url.user {
                Some(u) => self.call(&[b"AUTH", u.as_bytes(), pw.as_bytes()]),
                None => self.call(&[b"AUTH", pw.as_bytes()]),
            };
            match reply {
                Ok(_) => {}
                Err(RedisError::Reply(e)) => return Err(RedisError::Auth(e)),
                Err(e) => return Err(e),
            }
        }
        if url.db != 0 {
            self.call(&[b"SELECT", url.db.to_string().as_bytes()])?;
        }
        Ok(())
    }

    /// Queues a command; [`flush`](Self::flush) sends everything queued in one write.
    pub fn queue(&mut self, args: &[&[u8]]) {
        resp::encode_command(&mut self.out, args);
    }

    /// Writes every queued command.
    pub fn flush(&mut self) -> Result<(), RedisError> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends one command and reads its reply; an error reply becomes [`RedisError::Reply`].
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Value, RedisError> {
        self.queue(args);
        self.flush()?;
        match self.read()? {
            Value::Error(e) => Err(RedisError::Reply(e)),
            v => Ok(v),
        }
    }

    /// Reads the next value (reply or push).
    pub fn read(&mut self) -> Result<Value, RedisError> {
        loop {
            if let Some(v) = resp::decode(self.proto, &mut self.buf)? {
                return Ok(v);
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(RedisError::Protocol(DecodeError::too_large()));
            }
            let n = self.stream.read(&mut self.chunk[..])?;
            if n == 0 {
                return Err(RedisError::Closed);
            }
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
    }

    /// The next value already complete in the read buffer, without touching the socket.
    pub fn next_buffered(&mut self) -> Result<Option<Value>, RedisError> {
        Ok(resp::decode(self.proto, &mut self.buf)?)
    }

    /// Reads the next value (reply or push), waiting at most the socket's read timeout (set by
    /// [`set_read_tick`](Self::set_read_tick)): `Ok(None)` when it passed with no complete
    /// value. A partial value stays buffered for the next call.
    pub fn read_or_tick(&mut self) -> Result<Option<Value>, RedisError> {
        loop {
            if let Some(v) = resp::decode(self.proto, &mut self.buf)? {
                return Ok(Some(v));
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(RedisError::Protocol(DecodeError::too_large()));
            }
            match self.stream.read(&mut self.chunk[..]) {
                Ok(0) => return Err(RedisError::Closed),
                Ok(n) => self.buf.extend_from_slice(&self.chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Makes [`read_or_tick`](Self::read_or_tick) return after `tick` without data.
    pub fn set_read_tick(&self, tick: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(tick))
    }

    /// Bounds every later read and write by `timeout`, for a connection whose owner must not
    /// wait long on a Redis that stopped answering (the replay lease); a timeout is an
    /// [`RedisError::Io`], and the caller reconnects.
    pub fn set_io_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))
    }

    /// The socket, the bytes read and not yet decoded, and the protocol: the read side of the
    /// connection, to be read elsewhere (a shard, decision 0017).
    pub fn into_parts(self) -> (TcpStream, BytesMut, Proto) {
        (self.stream, self.buf, self.proto)
    }

    /// A second handle on the socket for writing from another thread.
    pub fn writer(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }
}

fn is_auth_error(e: &str) -> bool {
    e.starts_with("WRONGPASS")
        || e.starts_with("NOAUTH")
        || e.contains("invalid password")
        || e.starts_with("NOPERM")
}
