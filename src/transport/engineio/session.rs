//! One Engine.IO session as a pure state machine: `handle_*` inputs, `poll_*` outputs.
//!
//! **Thread:** owned by the shard its [`Sid`] names; never shared, never sent. Time comes in as
//! `Instant` arguments; the shard arms one timer at [`Session::poll_timeout`] and calls
//! [`Session::handle_timeout`] when it fires. This file is longer than 300 lines because the
//! transitions and their hostile-sequence tests belong together.
//!
//! **Transports** (engine.io-protocol v4, "Transports" and "Upgrade"): a session starts on
//! polling or on a WebSocket. A polling session upgrades when a WebSocket arrives with its sid
//! ([`Session::handle_ws_open`]): the client sends `2probe`, we answer `3probe` on that socket
//! and release a pending GET with `6` (noop); its `5` completes the upgrade and the queue then
//! flows to the WebSocket. Anything else on the probing socket, or no `5` within
//! `upgrade_timeout`, aborts the upgrade: that socket is closed ([`SessionEvent::AbortUpgrade`]
//! or an `Err` from [`Session::handle_ws_text`]) and the session stays on polling. A `5`
//! without a probe is refused the same way (stricter than engine.io, which accepts it).
//!
//! **Polling:** one GET may be pending. A second GET while one is pending closes the session
//! (the spec: "400 and close the session"): the pending GET gets `1`, the second gets 400.
//! After an upgrade, GET and POST get 400 (engine.io's transport mismatch) and the session
//! lives on. A POST body is checked whole at the Engine.IO level before any packet is applied
//! (400, session closed); a bad Socket.IO packet inside it closes the session when reached.
//!
//! **Heartbeat** ("Heartbeat"): `ping_interval` after the open (or after the last pong) we
//! queue `2`; no `3` within `ping_timeout` closes the session. A pong without a ping is
//! ignored, so it cannot postpone a later deadline. A client's plain `2` is answered `3`, as
//! python-engineio (the SuperDARN original) does; engine.io v4 would close instead.
//!
//! **Bounds and overflow policy** (docs/BACKPRESSURE.md): the queue for the next GET (or the
//! WebSocket) holds at most `max_buffered_bytes` (its body length, separators included) and
//! `max_buffered_packets`. A packet that does not fit **closes the session** with
//! [`CloseReason::Overflow`]: the queue is dropped, a pending GET gets `1`. The client received
//! an in-order prefix and reconnects. A polling session with no GET in progress for
//! `max_poll_gap` is closed ([`CloseReason::PollTimeout`]). The caller counts each
//! [`CloseReason`] in a metric and bounds the number of sessions.
//!
//! **Socket.IO:** only the default namespace `/`. `40` is answered `40{"sid":"…"}` with the
//! socket id given at open; another namespace gets `44/ns,"Unable to connect"`; `41` leaves.
//! Broadcasts reach a session only while it is connected to `/`. Client events and acks are
//! ignored without an ack: SuperDARN clients never emit, and python-socketio sends no ack for
//! an event without a handler (`_handle_event_internal`), nor handles one before a connect.
//!
//! **Invariants:** no input panics; after a close every `handle_*` answers
//! [`SessionError::Closed`] and nothing but the final packet (`1`, or `6` when the client
//! closed) comes out.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::config::EioConfig;
use super::handshake::EioError;
use super::packet::{
    self, CLOSE, DEFAULT_NAMESPACE, NOOP, PING, PONG, PONG_PROBE, Packet, PacketError, PacketType,
    SioError, SioPacket, SioPacketType,
};
use super::payload::{self, PayloadError};
use super::sid::Sid;

/// The `44` answer's text for a namespace we do not serve (python-socketio's `_handle_connect`;
/// the JS server sends `{"message":"Invalid namespace"}` instead).
pub const CONNECT_REFUSED: &str = "Unable to connect";

/// The transport a session is opened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenTransport {
    /// HTTP long-polling; the open packet is the handshake GET's body.
    Polling,
    /// A WebSocket-only session; the open packet is its first text frame.
    WebSocket,
}

/// Where the session's packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportState {
    /// Polling: packets wait for a GET.
    Polling,
    /// Polling, with a WebSocket probing to replace it.
    Upgrading {
        /// Whether `2probe` was answered (pending GETs are then released with `6`).
        probed: bool,
        /// When the upgrade is abandoned if `5` has not come.
        deadline: Instant,
    },
    /// A WebSocket (from the start or after the upgrade).
    WebSocket,
}

/// Why a session ended; the caller counts each in a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent `1`. Normal.
    ClientClose,
    /// No pong within `ping_timeout` of a ping. The client is gone or stalled.
    PingTimeout,
    /// A polling client made no GET for `max_poll_gap`. The client is gone.
    PollTimeout,
    /// The queue bound was hit (the overflow policy). A client that reads too slowly.
    Overflow,
    /// A second GET while one was pending. The client's fault.
    DuplicateGet,
    /// A packet or POST body the protocol does not allow. The client's fault.
    BadPacket,
    /// The session's WebSocket closed. Normal for a WebSocket client leaving.
    TransportClosed,
    /// The server closes the session (shutdown).
    ServerClose,
}

/// What the caller must act on besides responses and frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// Close the WebSocket that was probing; the session stays on polling.
    AbortUpgrade,
    /// The session is closed: deliver what [`Session::poll_get_response`] and
    /// [`Session::poll_ws_frame`] still return, then drop it once [`Session::is_finished`].
    Closed(CloseReason),
}

/// Why a request or frame is refused. [`SessionError::eio_error`] gives the HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session is closed: 400 "Session ID unknown"; the caller drops the session.
    #[error("session closed")]
    Closed,
    /// A polling request on a WebSocket session, or a frame outside an upgrade: 400 "Bad
    /// request"; the session lives on (the caller closes a stray WebSocket).
    #[error("request for the wrong transport")]
    WrongTransport,
    /// A second GET while one is pending: 400; the session is closed.
    #[error("a GET is already pending")]
    DuplicateGet,
    /// A bad POST body: 400; the session is closed.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// A bad packet on the WebSocket: the session is closed.
    #[error(transparent)]
    Packet(#[from] PacketError),
    /// A bad Socket.IO packet: the session is closed.
    #[error(transparent)]
    SocketIo(#[from] SioError),
    /// The upgrade is refused or aborted: close that WebSocket; the session stays on polling.
    #[error("upgrade refused")]
    Upgrade,
}

impl SessionError {
    /// The Engine.IO error to answer an HTTP request with.
    pub fn eio_error(&self) -> EioError {
        match self {
            SessionError::Closed => EioError::UnknownSid,
            _ => EioError::BadRequest,
        }
    }
}

/// One Engine.IO session (with its Socket.IO default-namespace state).
#[derive(Debug)]
pub struct Session {
    /// The Engine.IO session id (names the owning shard).
    sid: Sid,
    /// The Socket.IO socket id sent in `40{"sid":…}`.
    socket_sid: Sid,
    /// The route's knobs.
    config: EioConfig,
    /// Where packets go.
    transport: TransportState,
    /// Encoded packets waiting for the next GET or WebSocket write.
    queue: VecDeque<Bytes>,
    /// The polling body length of `queue` (packets plus separators); bounded.
    queued_bytes: usize,
    /// Whether a GET is parked waiting for packets.
    pending_get: bool,
    /// When a polling session without a pending GET is closed; `None` while a GET is pending
    /// or on a WebSocket.
    get_deadline: Option<Instant>,
    /// When the next ping is due (while no pong is awaited).
    next_ping: Instant,
    /// When the session closes if the pong has not come; `Some` while a pong is awaited.
    pong_deadline: Option<Instant>,
    /// The answer to `2probe`, waiting for the probing WebSocket.
    probe_reply: Option<Bytes>,
    /// Whether the client is connected to the default namespace (receives broadcasts).
    connected: bool,
    /// Why the session closed, once it has.
    closed: Option<CloseReason>,
    /// The last packet for a pending GET or the WebSocket after a close.
    final_packet: Option<Bytes>,
    /// Events not yet taken by [`Session::poll_event`] (at most one of each kind).
    abort_upgrade: bool,
    /// Whether [`SessionEvent::Closed`] was already reported.
    close_reported: bool,
}

impl Session {
    /// Opens a session at `now`; returns it and the open packet to send (the handshake GET's
    /// body, or the WebSocket's first frame).
    pub fn open(
        sid: Sid,
        socket_sid: Sid,
        on: OpenTransport,
        now: Instant,
        config: &EioConfig,
    ) -> (Session, Bytes) {
        let polling = on == OpenTransport::Polling;
        let open = packet::encode_open(&sid, polling && config.allow_upgrades, config);
        let session = Session {
            sid,
            socket_sid,
            config: config.clone(),
            transport: if polling {
                TransportState::Polling
            } else {
                TransportState::WebSocket
            },
            queue: VecDeque::new(),
            queued_bytes: 0,
            pending_get: false,
            get_deadline: polling.then(|| now + config.max_poll_gap),
            next_ping: now + config.ping_interval,
            pong_deadline: None,
            probe_reply: None,
            connected: false,
            closed: None,
            final_packet: None,
            abort_upgrade: false,
            close_reported: false,
        };
        (session, open)
    }

    /// The session id.
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// Where packets go now.
    pub fn transport(&self) -> TransportState {
        self.transport
    }

    /// Whether the client is connected to the default namespace.
    pub fn is_connected(&self) -> bool {
        self.connected && self.closed.is_none()
    }

    /// Why the session closed, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Whether the session is closed and has nothing left to deliver: drop it.
    pub fn is_finished(&self) -> bool {
        self.closed.is_some() && !self.pending_get && self.final_packet.is_none()
    }

    /// The bytes queued (as a polling body would hold them).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// A polling GET arrived. `Ok`: call [`Session::poll_get_response`]; if it gives nothing,
    /// park the request until it does.
    pub fn handle_get(&mut self) -> Result<(), SessionError> {
        self.check_polling()?;
        if self.pending_get {
            self.close(CloseReason::DuplicateGet);
            return Err(SessionError::DuplicateGet);
        }
        self.pending_get = true;
        self.get_deadline = None;
        Ok(())
    }

    /// The parked GET's connection went away before it was answered.
    pub fn handle_get_cancelled(&mut self, now: Instant) {
        if self.pending_get {
            self.pending_get = false;
            self.final_packet = None;
            if self.closed.is_none() {
                self.get_deadline = Some(now + self.config.max_poll_gap);
            }
        }
    }

    /// A polling POST with `body`. `Ok`: answer 200 (python-engineio's body is `OK`).
    pub fn handle_post(&mut self, body: &[u8], now: Instant) -> Result<(), SessionError> {
        self.check_polling()?;
        let decoded = match payload::decode(body, self.config.max_payload_bytes) {
            Ok(d) => d,
            Err(e) => {
                self.close(CloseReason::BadPacket);
                return Err(e.into());
            }
        };
        for p in decoded.packets() {
            self.handle_packet(p, now)?;
            if self.closed.is_some() {
                break;
            }
        }
        Ok(())
    }

    /// A WebSocket with this session's sid completed its handshake: start the upgrade.
    pub fn handle_ws_open(&mut self, now: Instant) -> Result<(), SessionError> {
        if self.closed.is_some() {
            return Err(SessionError::Closed);
        }
        if self.transport != TransportState::Polling || !self.config.allow_upgrades {
            return Err(SessionError::Upgrade);
        }
        let deadline = now + self.config.upgrade_timeout;
        self.transport = TransportState::Upgrading {
            probed: false,
            deadline,
        };
        Ok(())
    }

    /// A text frame on the session's WebSocket (the probing one during an upgrade).
    pub fn handle_ws_text(&mut self, frame: &[u8], now: Instant) -> Result<(), SessionError> {
        if self.closed.is_some() {
            return Err(SessionError::Closed);
        }
        match self.transport {
            TransportState::Polling => Err(SessionError::WrongTransport),
            TransportState::Upgrading { probed, .. } => self.handle_probe_frame(frame, probed),
            TransportState::WebSocket => match Packet::decode(frame) {
                Ok(p) => self.handle_packet(p, now),
                Err(e) => {
                    self.close(CloseReason::BadPacket);
                    Err(e.into())
                }
            },
        }
    }

    /// The session's WebSocket closed (or the probing one, during an upgrade).
    pub fn handle_ws_closed(&mut self) {
        match self.transport {
            TransportState::Upgrading { .. } => self.end_upgrade(false),
            TransportState::WebSocket => {
                self.close(CloseReason::TransportClosed);
                self.final_packet = None;
            }
            TransportState::Polling => {}
        }
    }

    /// A broadcast packet (an encoded `42[…]`, shared). Queued only while the client is
    /// connected to the default namespace; returns whether it was. An overflow closes the
    /// session.
    pub fn handle_broadcast(&mut self, packet: &Bytes) -> bool {
        self.is_connected() && self.enqueue(packet.clone())
    }

    /// The server ends the session (shutdown).
    pub fn handle_close(&mut self) {
        self.close(CloseReason::ServerClose);
    }

    /// Time passed: abandon a late upgrade, send a due ping, close on a missed pong or a
    /// missing GET.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if let TransportState::Upgrading { deadline, .. } = self.transport
            && now >= deadline
        {
            self.end_upgrade(true);
        }
        let ping_due = self.pong_deadline.is_none() && now >= self.next_ping;
        if self.pong_deadline.is_some_and(|d| now >= d) {
            return self.close(CloseReason::PingTimeout);
        }
        if ping_due && self.enqueue(PING) {
            self.pong_deadline = Some(now + self.config.ping_timeout);
        }
        if self.get_deadline.is_some_and(|d| now >= d) {
            self.close(CloseReason::PollTimeout);
        }
    }

    /// When [`Session::handle_timeout`] must next be called; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let heartbeat = self.pong_deadline.unwrap_or(self.next_ping);
        let upgrade = match self.transport {
            TransportState::Upgrading { deadline, .. } => Some(deadline),
            _ => None,
        };
        [Some(heartbeat), upgrade, self.get_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// The body for the parked GET, if it can be answered now; the GET is then no longer
    /// pending.
    pub fn poll_get_response(&mut self, now: Instant) -> Option<Bytes> {
        if !self.pending_get {
            return None;
        }
        let body = if self.closed.is_some() {
            self.final_packet.take().unwrap_or(CLOSE)
        } else if matches!(
            self.transport,
            TransportState::Upgrading { probed: true, .. } | TransportState::WebSocket
        ) {
            NOOP
        } else if self.queue.is_empty() {
            return None;
        } else {
            let body = payload::encode(self.queue.iter());
            self.queue.clear();
            self.queued_bytes = 0;
            body
        };
        self.pending_get = false;
        if self.closed.is_none() && !matches!(self.transport, TransportState::WebSocket) {
            self.get_deadline = Some(now + self.config.max_poll_gap);
        }
        Some(body)
    }

    /// The next text frame for the session's WebSocket (the probing one during an upgrade).
    pub fn poll_ws_frame(&mut self) -> Option<Bytes> {
        match self.transport {
            TransportState::Upgrading { .. } => self.probe_reply.take(),
            TransportState::Polling => None,
            TransportState::WebSocket if self.closed.is_some() => self.final_packet.take(),
            TransportState::WebSocket => {
                let frame = self.queue.pop_front()?;
                self.queued_bytes = match self.queue.len() {
                    0 => 0,
                    _ => self.queued_bytes.saturating_sub(frame.len() + 1),
                };
                Some(frame)
            }
        }
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        if self.abort_upgrade {
            self.abort_upgrade = false;
            return Some(SessionEvent::AbortUpgrade);
        }
        match self.closed {
            Some(reason) if !self.close_reported => {
                self.close_reported = true;
                Some(SessionEvent::Closed(reason))
            }
            _ => None,
        }
    }

    /// Refuses polling requests once closed or after the upgrade.
    fn check_polling(&self) -> Result<(), SessionError> {
        match (self.closed, self.transport) {
            (Some(_), _) => Err(SessionError::Closed),
            (None, TransportState::WebSocket) => Err(SessionError::WrongTransport),
            _ => Ok(()),
        }
    }

    /// A frame on the probing WebSocket: `2probe`, then `5`; anything else aborts.
    fn handle_probe_frame(&mut self, frame: &[u8], probed: bool) -> Result<(), SessionError> {
        match (Packet::decode(frame), probed) {
            (
                Ok(Packet {
                    kind: PacketType::Ping,
                    data: "probe",
                }),
                false,
            ) => {
                if let TransportState::Upgrading { deadline, .. } = self.transport {
                    self.transport = TransportState::Upgrading {
                        probed: true,
                        deadline,
                    };
                }
                self.probe_reply = Some(PONG_PROBE);
                Ok(())
            }
            (
                Ok(Packet {
                    kind: PacketType::Upgrade,
                    ..
                }),
                true,
            ) => {
                self.transport = TransportState::WebSocket;
                self.get_deadline = None;
                Ok(())
            }
            _ => {
                self.end_upgrade(false);
                Err(SessionError::Upgrade)
            }
        }
    }

    /// Back to polling; `report` asks the caller to close the probing WebSocket.
    fn end_upgrade(&mut self, report: bool) {
        self.transport = TransportState::Polling;
        self.probe_reply = None;
        self.abort_upgrade |= report;
    }

    /// One client packet on the established transport.
    fn handle_packet(&mut self, p: Packet<'_>, now: Instant) -> Result<(), SessionError> {
        match (p.kind, p.data) {
            // python-engineio echoes a client's ping; we answer `3probe` or `3` (any other
            // data is not echoed, so a client cannot make us allocate).
            (PacketType::Ping, "probe") => {
                self.enqueue(PONG_PROBE);
            }
            (PacketType::Ping, _) => {
                self.enqueue(PONG);
            }
            (PacketType::Pong, _) => {
                if self.pong_deadline.take().is_some() {
                    self.next_ping = now + self.config.ping_interval;
                }
            }
            (PacketType::Message, data) => return self.handle_message(data),
            (PacketType::Close, _) => self.close(CloseReason::ClientClose),
            // engine.io ignores these on an established transport.
            (PacketType::Open | PacketType::Upgrade | PacketType::Noop, _) => {}
        }
        Ok(())
    }

    /// A Socket.IO packet from the client.
    fn handle_message(&mut self, data: &str) -> Result<(), SessionError> {
        let p = match SioPacket::decode(data) {
            Ok(p) => p,
            Err(e) => {
                self.close(CloseReason::BadPacket);
                return Err(e.into());
            }
        };
        let default = p.namespace == DEFAULT_NAMESPACE;
        match p.kind {
            SioPacketType::Connect if default => {
                self.connected = true;
                self.enqueue(packet::encode_connect(DEFAULT_NAMESPACE, &self.socket_sid));
            }
            SioPacketType::Connect => {
                self.enqueue(packet::encode_connect_error_text(
                    p.namespace,
                    CONNECT_REFUSED,
                ));
            }
            SioPacketType::Disconnect if default => self.connected = false,
            _ => {}
        }
        Ok(())
    }

    /// Queues a packet, or closes the session on overflow; returns whether it was queued.
    fn enqueue(&mut self, packet: Bytes) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let grown = payload::grown_len(self.queued_bytes, self.queue.len(), packet.len());
        if grown > self.config.max_buffered_bytes
            || self.queue.len() >= self.config.max_buffered_packets
        {
            self.close(CloseReason::Overflow);
            return false;
        }
        self.queued_bytes = grown;
        self.queue.push_back(packet);
        true
    }

    /// Closes the session: drops the queue and keeps only the final packet.
    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(reason);
        self.queue.clear();
        self.queued_bytes = 0;
        self.pong_deadline = None;
        self.get_deadline = None;
        // engine.io releases a pending GET with `6` when the client closed, `1` otherwise.
        self.final_packet = Some(if reason == CloseReason::ClientClose {
            NOOP
        } else {
            CLOSE
        });
        if self.transport == TransportState::WebSocket && reason == CloseReason::ClientClose {
            self.final_packet = None;
        }
        if matches!(self.transport, TransportState::Upgrading { .. }) {
            self.end_upgrade(true);
        }
        if !self.pending_get && self.transport == TransportState::Polling {
            self.final_packet = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::router::ShardId;

    const S: Duration = Duration::from_secs(1);

    fn sids() -> (Sid, Sid) {
        (Sid::new(ShardId(1)).unwrap(), Sid::new(ShardId(1)).unwrap())
    }

    fn open_with(on: OpenTransport, config: &EioConfig) -> (Session, Instant) {
        let (sid, socket_sid) = sids();
        let t0 = Instant::now();
        (Session::open(sid, socket_sid, on, t0, config).0, t0)
    }

    fn open(on: OpenTransport) -> (Session, Instant) {
        open_with(on, &EioConfig::default())
    }

    /// A polling session connected to `/`, its `40{…}` already fetched.
    fn connected_polling() -> (Session, Instant) {
        let (mut s, t0) = open(OpenTransport::Polling);
        s.handle_post(b"40", t0).unwrap();
        s.handle_get().unwrap();
        assert!(s.poll_get_response(t0).unwrap().starts_with(b"40{"));
        (s, t0)
    }

    fn get(s: &mut Session, now: Instant) -> Option<Bytes> {
        s.handle_get().unwrap();
        s.poll_get_response(now)
    }

    fn event() -> Bytes {
        packet::encode_event("sas", "{}")
    }

    #[test]
    fn open_packets_offer_the_upgrade_only_on_polling() {
        let (sid, socket_sid) = sids();
        let config = EioConfig::default();
        let t0 = Instant::now();
        let (_, open) = Session::open(sid, socket_sid, OpenTransport::Polling, t0, &config);
        assert!(
            open.starts_with(format!(r#"0{{"sid":"{sid}","upgrades":["websocket"],"#).as_bytes())
        );
        let (s, open) = Session::open(sid, socket_sid, OpenTransport::WebSocket, t0, &config);
        assert!(open.starts_with(format!(r#"0{{"sid":"{sid}","upgrades":[],"#).as_bytes()));
        assert_eq!(s.transport(), TransportState::WebSocket);
        let no_upgrades = EioConfig {
            allow_upgrades: false,
            ..config
        };
        let (_, open) = Session::open(sid, socket_sid, OpenTransport::Polling, t0, &no_upgrades);
        assert!(open.windows(13).any(|w| w == br#""upgrades":[]"#));
    }

    #[test]
    fn namespace_connect_over_polling() {
        let (sid, socket_sid) = sids();
        let t0 = Instant::now();
        let config = EioConfig::default();
        let (mut s, _) = Session::open(sid, socket_sid, OpenTransport::Polling, t0, &config);
        // A GET with nothing queued is parked.
        s.handle_get().unwrap();
        assert_eq!(s.poll_get_response(t0), None);
        assert!(!s.handle_broadcast(&event()));
        s.handle_post(b"40", t0).unwrap();
        let body = s.poll_get_response(t0).unwrap();
        assert_eq!(body, format!(r#"40{{"sid":"{socket_sid}"}}"#));
        assert!(s.is_connected());
        // Broadcasts are now queued and joined into one body.
        assert!(s.handle_broadcast(&event()));
        assert!(s.handle_broadcast(&event()));
        assert_eq!(
            get(&mut s, t0).unwrap(),
            &b"42[\"sas\",{}]\x1e42[\"sas\",{}]"[..]
        );
        assert_eq!(s.queued_bytes(), 0);
        // Leaving the namespace stops them.
        s.handle_post(b"41", t0).unwrap();
        assert!(!s.handle_broadcast(&event()));
    }

    #[test]
    fn other_namespaces_are_refused_and_events_ignored() {
        let (mut s, t0) = connected_polling();
        s.handle_post(b"40/admin,\x1e42[\"x\",1]\x1e421[\"x\"]\x1e43[]", t0)
            .unwrap();
        let body = get(&mut s, t0).unwrap();
        assert_eq!(body, r#"44/admin,"Unable to connect""#);
        assert!(s.is_connected());
    }

    #[test]
    fn a_second_get_closes_the_session() {
        let (mut s, t0) = connected_polling();
        s.handle_get().unwrap();
        assert_eq!(s.handle_get(), Err(SessionError::DuplicateGet));
        assert_eq!(SessionError::DuplicateGet.eio_error(), EioError::BadRequest);
        assert_eq!(s.poll_get_response(t0), Some(CLOSE));
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::Closed(CloseReason::DuplicateGet))
        );
        assert_eq!(s.poll_event(), None);
        assert!(s.is_finished());
        assert_eq!(s.handle_get(), Err(SessionError::Closed));
        assert_eq!(SessionError::Closed.eio_error(), EioError::UnknownSid);
        assert_eq!(s.handle_post(b"3", t0), Err(SessionError::Closed));
    }

    #[test]
    fn bad_and_oversized_posts_close_the_session() {
        let (mut s, t0) = connected_polling();
        assert!(matches!(
            s.handle_post(b"abc", t0),
            Err(SessionError::Payload(_))
        ));
        assert_eq!(s.close_reason(), Some(CloseReason::BadPacket));

        let config = EioConfig {
            max_payload_bytes: 1_024,
            ..EioConfig::default()
        };
        let (mut s, t0) = open_with(OpenTransport::Polling, &config);
        let big = [b'4'; 1_025];
        let err = s.handle_post(&big, t0).unwrap_err();
        assert_eq!(
            err,
            SessionError::Payload(PayloadError::TooLarge {
                len: 1_025,
                max: 1_024
            })
        );
        assert_eq!(s.handle_get(), Err(SessionError::Closed));

        let (mut s, t0) = open(OpenTransport::Polling);
        assert!(matches!(
            s.handle_post(b"4x", t0),
            Err(SessionError::SocketIo(_))
        ));
        let (mut s, t0) = open(OpenTransport::Polling);
        assert!(matches!(
            s.handle_post(b"", t0),
            Err(SessionError::Payload(_))
        ));
        // A body is refused whole: the valid `40` before the bad segment is not applied.
        let (mut s, t0) = open(OpenTransport::Polling);
        assert!(s.handle_post(b"40\x1ebAQID", t0).is_err());
        assert!(!s.is_connected());
    }

    #[test]
    fn polling_requests_on_a_websocket_session_are_bad_requests() {
        let (mut s, t0) = open(OpenTransport::WebSocket);
        assert_eq!(s.handle_post(b"40", t0), Err(SessionError::WrongTransport));
        assert_eq!(s.handle_get(), Err(SessionError::WrongTransport));
        assert_eq!(
            SessionError::WrongTransport.eio_error(),
            EioError::BadRequest
        );
        assert_eq!(s.close_reason(), None);
        // And a second WebSocket for it is refused.
        assert_eq!(s.handle_ws_open(t0), Err(SessionError::Upgrade));
    }

    #[test]
    fn heartbeat_ping_pong() {
        let (mut s, t0) = connected_polling();
        assert_eq!(s.poll_timeout(), Some(t0 + 25 * S));
        s.handle_get().unwrap();
        s.handle_timeout(t0 + 25 * S);
        assert_eq!(s.poll_get_response(t0 + 25 * S), Some(PING));
        assert_eq!(s.poll_timeout(), Some(t0 + 45 * S));
        s.handle_post(b"3", t0 + 30 * S).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + 55 * S));
        s.handle_timeout(t0 + 44 * S);
        assert_eq!(s.close_reason(), None);
    }

    #[test]
    fn a_missed_pong_closes_the_session() {
        let (mut s, t0) = connected_polling();
        s.handle_get().unwrap();
        s.handle_timeout(t0 + 25 * S);
        assert_eq!(s.poll_get_response(t0 + 25 * S), Some(PING));
        s.handle_get().unwrap();
        s.handle_timeout(t0 + 45 * S);
        assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
        assert_eq!(s.poll_get_response(t0 + 45 * S), Some(CLOSE));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_pong_without_a_ping_does_not_count() {
        let (mut s, t0) = connected_polling();
        s.handle_post(b"3", t0 + S).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + 25 * S));
        s.handle_get().unwrap();
        s.handle_timeout(t0 + 25 * S);
        s.handle_timeout(t0 + 45 * S);
        assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
    }

    #[test]
    fn a_client_ping_is_answered() {
        let (mut s, t0) = connected_polling();
        s.handle_post(b"2\x1e2probe", t0).unwrap();
        assert_eq!(get(&mut s, t0).unwrap(), &b"3\x1e3probe"[..]);
    }

    #[test]
    fn no_get_for_the_poll_gap_closes_the_session() {
        let (mut s, t0) = connected_polling();
        s.handle_post(b"3", t0).unwrap();
        s.handle_timeout(t0 + 44 * S);
        assert_eq!(s.close_reason(), None);
        s.handle_post(b"3", t0 + 44 * S).unwrap();
        s.handle_timeout(t0 + 45 * S);
        assert_eq!(s.close_reason(), Some(CloseReason::PollTimeout));
        assert!(s.is_finished());
        // A parked GET stops the clock; a cancelled one restarts it.
        let (mut s, t0) = connected_polling();
        s.handle_get().unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + 25 * S));
        s.handle_get_cancelled(t0 + S);
        assert_eq!(s.poll_timeout(), Some(t0 + 25 * S));
        s.handle_timeout(t0 + 25 * S);
        s.handle_post(b"3", t0 + 26 * S).unwrap();
        s.handle_timeout(t0 + 46 * S);
        assert_eq!(s.close_reason(), Some(CloseReason::PollTimeout));
    }

    #[test]
    fn the_upgrade_sequence() {
        let (mut s, t0) = connected_polling();
        s.handle_get().unwrap();
        assert_eq!(s.poll_get_response(t0), None);
        s.handle_ws_open(t0).unwrap();
        assert!(matches!(
            s.transport(),
            TransportState::Upgrading { probed: false, .. }
        ));
        // Before the probe, polling still delivers.
        assert!(s.handle_broadcast(&event()));
        assert_eq!(s.poll_get_response(t0), Some(event()));
        s.handle_get().unwrap();
        s.handle_ws_text(b"2probe", t0).unwrap();
        assert_eq!(s.poll_ws_frame(), Some(PONG_PROBE));
        assert_eq!(s.poll_ws_frame(), None);
        // The pending GET is released with a noop; the next one too.
        assert_eq!(s.poll_get_response(t0), Some(NOOP));
        assert!(s.handle_broadcast(&event()));
        assert_eq!(get(&mut s, t0), Some(NOOP));
        s.handle_ws_text(b"5", t0).unwrap();
        assert_eq!(s.transport(), TransportState::WebSocket);
        // What was queued meanwhile goes to the WebSocket, one frame per packet.
        assert!(s.handle_broadcast(&event()));
        assert_eq!(s.poll_ws_frame(), Some(event()));
        assert_eq!(s.poll_ws_frame(), Some(event()));
        assert_eq!(s.poll_ws_frame(), None);
        assert_eq!(s.queued_bytes(), 0);
        // Polling is over for this session.
        assert_eq!(s.handle_get(), Err(SessionError::WrongTransport));
        assert_eq!(s.handle_ws_open(t0), Err(SessionError::Upgrade));
        // Heartbeat and messages on the WebSocket.
        s.handle_timeout(t0 + 25 * S);
        assert_eq!(s.poll_ws_frame(), Some(PING));
        s.handle_ws_text(b"3", t0 + 26 * S).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + 51 * S));
    }

    #[test]
    fn an_upgrade_without_probe_or_with_junk_is_aborted() {
        for frames in [
            &[&b"5"[..]][..],
            &[b"4hello"],
            &[b"2probe", b"2probe"],
            &[b""],
            &[b"3probe"],
        ] {
            let (mut s, t0) = connected_polling();
            s.handle_ws_open(t0).unwrap();
            let last = frames.len() - 1;
            for f in &frames[..last] {
                s.handle_ws_text(f, t0).unwrap();
            }
            assert_eq!(
                s.handle_ws_text(frames[last], t0),
                Err(SessionError::Upgrade),
                "{frames:?}"
            );
            assert_eq!(s.transport(), TransportState::Polling);
            assert_eq!(s.close_reason(), None);
            // Polling goes on.
            s.handle_post(b"3", t0).unwrap();
            assert_eq!(
                s.handle_ws_text(b"5", t0),
                Err(SessionError::WrongTransport)
            );
        }
    }

    #[test]
    fn a_late_or_doubled_upgrade_is_abandoned() {
        let (mut s, t0) = connected_polling();
        s.handle_ws_open(t0).unwrap();
        assert_eq!(s.handle_ws_open(t0), Err(SessionError::Upgrade));
        s.handle_ws_text(b"2probe", t0).unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + 10 * S));
        s.handle_timeout(t0 + 10 * S);
        assert_eq!(s.poll_event(), Some(SessionEvent::AbortUpgrade));
        assert_eq!(s.transport(), TransportState::Polling);
        assert_eq!(s.poll_ws_frame(), None);
        // The probing socket closing by itself also returns to polling, silently.
        s.handle_ws_open(t0 + 11 * S).unwrap();
        s.handle_ws_closed();
        assert_eq!(s.transport(), TransportState::Polling);
        assert_eq!(s.poll_event(), None);
        assert_eq!(s.close_reason(), None);
    }

    #[test]
    fn overflow_closes_the_session() {
        let config = EioConfig {
            max_buffered_bytes: 1_024,
            ..EioConfig::default()
        };
        let (mut s, t0) = open_with(OpenTransport::Polling, &config);
        s.handle_post(b"40", t0).unwrap();
        let big = packet::encode_event("x", &format!("\"{}\"", "a".repeat(900)));
        assert!(s.handle_broadcast(&big));
        assert!(!s.handle_broadcast(&big));
        assert_eq!(s.close_reason(), Some(CloseReason::Overflow));
        assert_eq!(s.queued_bytes(), 0);
        assert_eq!(s.handle_get(), Err(SessionError::Closed));

        let config = EioConfig {
            max_buffered_packets: 2,
            ..EioConfig::default()
        };
        let (mut s, t0) = open_with(OpenTransport::Polling, &config);
        s.handle_post(b"40", t0).unwrap();
        s.handle_get().unwrap();
        assert!(s.handle_broadcast(&event()));
        assert!(!s.handle_broadcast(&event()));
        assert_eq!(s.poll_get_response(t0), Some(CLOSE));
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::Closed(CloseReason::Overflow))
        );
    }

    #[test]
    fn a_client_close_releases_the_get_with_a_noop() {
        let (mut s, t0) = connected_polling();
        s.handle_get().unwrap();
        s.handle_post(b"1", t0).unwrap();
        assert_eq!(s.poll_get_response(t0), Some(NOOP));
        assert_eq!(s.close_reason(), Some(CloseReason::ClientClose));
        assert!(s.is_finished());
    }

    #[test]
    fn websocket_only_session() {
        let (mut s, t0) = open(OpenTransport::WebSocket);
        assert_eq!(s.poll_timeout(), Some(t0 + 25 * S));
        s.handle_ws_text(b"40", t0).unwrap();
        assert!(s.poll_ws_frame().unwrap().starts_with(br#"40{"sid":""#));
        assert!(s.handle_broadcast(&event()));
        assert_eq!(s.poll_ws_frame(), Some(event()));
        s.handle_ws_text(b"2", t0).unwrap();
        assert_eq!(s.poll_ws_frame(), Some(PONG));
        // Junk closes it; the client is told with `1`.
        assert_eq!(
            s.handle_ws_text(b"x", t0),
            Err(SessionError::Packet(PacketError::UnknownType(b'x')))
        );
        assert_eq!(s.poll_ws_frame(), Some(CLOSE));
        assert!(s.is_finished());
        assert_eq!(s.handle_ws_text(b"3", t0), Err(SessionError::Closed));
    }

    #[test]
    fn websocket_close_and_server_close() {
        let (mut s, t0) = open(OpenTransport::WebSocket);
        s.handle_ws_text(b"40", t0).unwrap();
        s.handle_ws_closed();
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::Closed(CloseReason::TransportClosed))
        );
        assert_eq!(s.poll_ws_frame(), None);
        assert!(s.is_finished());

        let (mut s, _) = open(OpenTransport::WebSocket);
        s.handle_close();
        assert_eq!(s.poll_ws_frame(), Some(CLOSE));
        assert!(s.is_finished());
        // A client `1` on a WebSocket needs no answer.
        let (mut s, t0) = open(OpenTransport::WebSocket);
        s.handle_ws_text(b"1", t0).unwrap();
        assert_eq!(s.poll_ws_frame(), None);
        assert!(s.is_finished());
    }

    #[test]
    fn closing_during_an_upgrade_aborts_it() {
        let (mut s, t0) = connected_polling();
        s.handle_ws_open(t0).unwrap();
        s.handle_get().unwrap();
        s.handle_close();
        assert_eq!(s.poll_event(), Some(SessionEvent::AbortUpgrade));
        assert_eq!(
            s.poll_event(),
            Some(SessionEvent::Closed(CloseReason::ServerClose))
        );
        assert_eq!(s.poll_get_response(t0), Some(CLOSE));
        assert!(s.is_finished());
        assert_eq!(s.handle_ws_open(t0), Err(SessionError::Closed));
    }
}
