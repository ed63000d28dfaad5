//! One TCP connection to RabbitMQ's stream port, on its own thread: connect, authenticate
//! (SASL PLAIN), tune, open the vhost, then read frames and pass them to the driver; on any
//! failure, report it, wait a capped jittered backoff, and start over.
//!
//! Only the driver writes to the socket once the connection is up (it gets a clone in
//! [`ConnEvent::Up`]), so frames from two threads never interleave; this thread writes only
//! during the handshake, before the driver knows the socket.
//!
//! Thread: the connection thread (blocking I/O is right here: it does one thing). It ends when
//! the driver drops its stop sender or its event receiver.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::RabbitStreamSettings;
use super::codec::{self, ClientFrame, CodecError, ServerFrame, code, key};
use crate::source::redis::Backoff;

/// Largest frame accepted before `Tune` (handshake answers are tiny).
const HANDSHAKE_MAX_FRAME: u32 = 1024 * 1024;

/// Socket read size.
const READ_CHUNK: usize = 64 * 1024;

/// What a connection thread tells the driver.
#[derive(Debug)]
pub enum ConnEvent {
    /// The connection is open; the driver writes through `writer` from now on.
    Up {
        /// A clone of the socket, for writing.
        writer: TcpStream,
        /// Negotiated heartbeat interval (`None`: no heartbeats).
        heartbeat: Option<Duration>,
    },
    /// A frame from the server.
    Frame(ServerFrame),
    /// The connection failed or was closed; no more frames come from it.
    Down {
        /// Why, for the log.
        reason: String,
    },
}

/// A [`ConnEvent`] from the connection at position `conn` in the pool.
#[derive(Debug)]
pub struct ConnMsg {
    /// The connection's position in the pool.
    pub conn: usize,
    /// What happened.
    pub event: ConnEvent,
}

/// Why a connection failed. Every variant ends the connection; the thread reconnects.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// TCP connect failed: RabbitMQ is down or unreachable.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The socket failed (or timed out: no heartbeat came).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// RabbitMQ sent bytes that are not the stream protocol, or too large a frame.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// RabbitMQ closed the connection.
    #[error("connection closed by RabbitMQ")]
    Closed,
    /// A handshake step was refused (credentials, vhost, mechanism): the operator's fault.
    #[error("{step} refused with response code {code:#06x}")]
    Refused {
        /// The step.
        step: &'static str,
        /// RabbitMQ's response code.
        code: u16,
    },
}

/// Starts the thread of connection `conn`.
pub fn spawn(
    conn: usize,
    settings: Arc<RabbitStreamSettings>,
    events: Sender<ConnMsg>,
    stop: Receiver<()>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("rabbit-stream-{conn}"))
        .spawn(move || run(conn, &settings, &events, &stop))
}

fn run(
    conn: usize,
    settings: &RabbitStreamSettings,
    events: &Sender<ConnMsg>,
    stop: &Receiver<()>,
) {
    let mut backoff = Backoff::new(settings.backoff_max);
    let send = |event| events.send(ConnMsg { conn, event }).is_ok();
    loop {
        let reason = match Wire::open(settings) {
            Ok((mut wire, heartbeat)) => {
                backoff.reset();
                let writer = match wire.stream.try_clone() {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!(conn, error = %e, "rabbit stream: cannot clone the socket");
                        continue;
                    }
                };
                tracing::info!(conn, rabbit = %settings.url, port = settings.port, "rabbit stream connection up");
                if !send(ConnEvent::Up { writer, heartbeat }) {
                    return;
                }
                match wire.read_loop(conn, events) {
                    Some(e) => e.to_string(),
                    None => return, // the driver is gone
                }
            }
            Err(e) => e.to_string(),
        };
        let delay = backoff.next_delay();
        tracing::warn!(conn, rabbit = %settings.url, error = %reason, retry_in = ?delay, "rabbit stream connection down");
        if !send(ConnEvent::Down { reason }) {
            return;
        }
        match stop.recv_timeout(delay) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// A socket with its read buffer.
struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    scratch: Box<[u8]>,
    max_frame: u32,
    next_corr: u32,
}

impl Wire {
    /// Connects and runs the handshake; returns the open connection and its heartbeat.
    fn open(s: &RabbitStreamSettings) -> Result<(Wire, Option<Duration>), ConnError> {
        let addr = format!("{}:{}", s.url.host, s.port);
        let connect_err = |source| ConnError::Connect {
            addr: addr.clone(),
            source,
        };
        let target = (s.url.host.as_str(), s.port)
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| connect_err(io::Error::other("no address")))?;
        let stream = TcpStream::connect_timeout(&target, s.connect_timeout).map_err(connect_err)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(s.connect_timeout))?;
        stream.set_write_timeout(Some(s.connect_timeout))?;
        let mut w = Wire {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            max_frame: HANDSHAKE_MAX_FRAME,
            next_corr: 1,
        };
        let heartbeat = w.handshake(s)?;
        // A silent server is dead after three missed heartbeats; without heartbeats, wait.
        w.stream.set_read_timeout(heartbeat.map(|h| h * 3))?;
        Ok((w, heartbeat))
    }

    fn handshake(&mut self, s: &RabbitStreamSettings) -> Result<Option<Duration>, ConnError> {
        let version = env!("CARGO_PKG_VERSION");
        let props = [
            ("connection_name", s.connection_name.as_str()),
            ("product", "ringcast"),
            ("version", version),
            ("platform", "Rust"),
        ];
        let corr = self.corr();
        self.send(ClientFrame::PeerProperties {
            corr,
            props: &props,
        })?;
        self.expect_ok(key::PEER_PROPERTIES, "peer properties")?;
        let corr = self.corr();
        self.send(ClientFrame::SaslHandshake { corr })?;
        loop {
            match self.recv()? {
                ServerFrame::SaslMechanisms {
                    code, mechanisms, ..
                } => {
                    if code != code::OK || !mechanisms.iter().any(|m| m == "PLAIN") {
                        return Err(ConnError::Refused {
                            step: "SASL PLAIN",
                            code,
                        });
                    }
                    break;
                }
                f => self.unexpected(f)?,
            }
        }
        let mut plain = vec![0];
        plain.extend_from_slice(s.url.user.as_bytes());
        plain.push(0);
        plain.extend_from_slice(s.url.password.as_bytes());
        let corr = self.corr();
        self.send(ClientFrame::SaslAuthenticate {
            corr,
            mechanism: "PLAIN",
            data: &plain,
        })?;
        self.expect_ok(key::SASL_AUTHENTICATE, "authentication")?;
        let heartbeat = loop {
            match self.recv()? {
                ServerFrame::Tune {
                    frame_max,
                    heartbeat_s,
                } => break self.tune(s, frame_max, heartbeat_s)?,
                f => self.unexpected(f)?,
            }
        };
        let corr = self.corr();
        self.send(ClientFrame::Open {
            corr,
            vhost: &s.url.vhost,
        })?;
        self.expect_ok(key::OPEN, "open vhost")?;
        Ok(heartbeat)
    }

    /// Answers `Tune` with the server's values or lower.
    fn tune(
        &mut self,
        s: &RabbitStreamSettings,
        frame_max: u32,
        heartbeat_s: u32,
    ) -> Result<Option<Duration>, ConnError> {
        let ours = s.max_frame_bytes.max(HANDSHAKE_MAX_FRAME);
        let frame_max = if frame_max == 0 {
            ours
        } else {
            frame_max.min(ours)
        };
        let our_hb = u32::try_from(s.heartbeat.as_secs()).unwrap_or(u32::MAX);
        let heartbeat_s = if heartbeat_s == 0 || our_hb == 0 {
            0
        } else {
            heartbeat_s.min(our_hb)
        };
        self.send(ClientFrame::Tune {
            frame_max,
            heartbeat_s,
        })?;
        self.max_frame = frame_max;
        Ok((heartbeat_s > 0).then(|| Duration::from_secs(u64::from(heartbeat_s))))
    }

    fn corr(&mut self) -> u32 {
        self.next_corr = self.next_corr.wrapping_add(1);
        self.next_corr
    }

    fn expect_ok(&mut self, want: u16, step: &'static str) -> Result<(), ConnError> {
        loop {
            match self.recv()? {
                ServerFrame::Response { key, code, .. } if key == want => {
                    return if code == code::OK {
                        Ok(())
                    } else {
                        Err(ConnError::Refused { step, code })
                    };
                }
                f => self.unexpected(f)?,
            }
        }
    }

    /// A frame the handshake did not expect: heartbeats are fine, a close ends it.
    fn unexpected(&mut self, f: ServerFrame) -> Result<(), ConnError> {
        match f {
            ServerFrame::Close { code, reason, .. } => {
                tracing::warn!(code, reason, "rabbit stream: closed during the handshake");
                Err(ConnError::Closed)
            }
            other => {
                tracing::debug!(frame = ?other, "rabbit stream: frame ignored during the handshake");
                Ok(())
            }
        }
    }

    fn send(&mut self, f: ClientFrame<'_>) -> Result<(), ConnError> {
        let mut out = Vec::with_capacity(64);
        f.encode(&mut out)?;
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// Reads the next frame.
    fn recv(&mut self) -> Result<ServerFrame, ConnError> {
        loop {
            if let Some((start, end)) = codec::split_frame(&self.buf, self.max_frame)? {
                let frame = self.buf.split_to(end).freeze().slice(start..);
                return Ok(ServerFrame::parse(frame)?);
            }
            let n = self.stream.read(&mut self.scratch)?;
            if n == 0 {
                return Err(ConnError::Closed);
            }
            self.buf.extend_from_slice(&self.scratch[..n]);
        }
    }

    /// Reads frames and passes them on until the connection fails (`Some(error)`) or the
    /// driver is gone (`None`).
    fn read_loop(&mut self, conn: usize, events: &Sender<ConnMsg>) -> Option<ConnError> {
        loop {
            match self.recv() {
                Ok(frame) => {
                    let msg = ConnMsg {
                        conn,
                        event: ConnEvent::Frame(frame),
                    };
                    if events.send(msg).is_err() {
                        return None;
                    }
                }
                Err(e) => return Some(e),
            }
        }
    }
}
