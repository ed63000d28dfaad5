//! Engine.IO sessions on a shard: the session table, broadcasts, the hand-off of requests to
//! the owning shard, and the glue between the pure [`Session`] state machine and connections.
//!
//! **Ownership.** A session lives on the shard its [`Sid`] names ([`Sid::shard`]). Its
//! transports are connections of that shard: the parked polling GET (kind
//! [`ConnKind::EioGet`]), and the WebSocket (kind [`ConnKind::Eio`], the probing one during an
//! upgrade). A request that reaches another shard is handed over whole (its socket and the
//! bytes read so far, [`crate::router::ShardMsg::Adopt`]) before anything is answered, so every answer comes
//! from the owner (`conn::eio`).
//!
//! **Broadcasts are encoded once.** At start-up each shard subscribes every `socketio` route's
//! `channels` in its topic table under a pseudo subscriber ([`route_key`]); the hub renders
//! each event once as the WebSocket frame `42["<channel>",<payload>]` ([`Format::SocketIo`]).
//! [`Shard::eio_broadcast`] pushes that same frame (an `Rc` clone) to every WebSocket session
//! and hands polling sessions the payload slice of the same buffer ([`frame::payload_of`]).
//!
//! **Bounds** (docs/BACKPRESSURE.md): at most `max_conns` sessions per shard (a handshake past
//! it gets 503, `ringcast_eio_sessions_refused_total`); each session's queue is bounded by the
//! route's `max_payload` and closes the session on overflow (counted by reason); a polling
//! session without a GET for ping interval + ping timeout is closed; a WebSocket session's
//! outbox is bounded like any connection's (slow consumer: the socket is closed, and with it
//! the session).
//!
//! **Timers.** The sweep calls [`Shard::eio_tick`]: each session whose
//! [`Session::poll_timeout`] has passed gets [`Session::handle_timeout`]. The sweep runs every
//! quarter of the shortest heartbeat knob, so a ping leaves at most that late.
//!
//! Thread: the shard's own; nothing here is shared.

use std::time::Instant;

use bytes::Bytes;
use slab::Slab;

use super::{CLOSE_GRACE, Shard};
use crate::conn::ConnKind;
use crate::conn::outbox::{OutFrame, SendStatus};
use crate::protocol::CloseCode;
use crate::router::table::{Change, ConnKey};
use crate::router::{Format, Interest, SourceId, TopicKind, UpstreamMsg};
use crate::transport::engineio::session::{
    CloseReason, OpenTransport, Session, SessionEvent, TransportState,
};
use crate::transport::engineio::sid::Sid;
use crate::ws::frame::{self, OpCode};

/// Topic-table subscriber keys at and above this stand for "every Socket.IO session of route
/// `key - ROUTE_KEY_BASE`" instead of a connection. Slab keys never come near it.
pub const ROUTE_KEY_BASE: ConnKey = usize::MAX - u16::MAX as usize;

/// The topic-table subscriber key of route `route`'s sessions.
pub fn route_key(route: usize) -> ConnKey {
    ROUTE_KEY_BASE + route
}

/// One session and the connections that carry it.
#[derive(Debug)]
pub struct EioEntry {
    /// The state machine.
    pub session: Session,
    /// The route (an index into `config.routes`).
    pub route: u16,
    /// The connection whose GET is parked waiting for packets.
    pub get: Option<ConnKey>,
    /// The body for that GET, set when it can be answered, taken by its task.
    pub response: Option<Bytes>,
    /// The session's WebSocket (the probing one during an upgrade).
    pub ws: Option<ConnKey>,
}

/// The sessions of one shard.
#[derive(Debug, Default)]
pub struct EioSessions {
    /// Sessions by slot (the slot is kept in [`ConnKind::Eio`] / [`ConnKind::EioGet`]).
    pub entries: Slab<EioEntry>,
    /// Slot by sid.
    by_sid: foldhash::HashMap<Sid, usize>,
}

impl EioSessions {
    /// The slot of `sid`, if the session is here.
    pub fn lookup(&self, sid: &Sid) -> Option<usize> {
        self.by_sid.get(sid).copied()
    }

    /// How many sessions there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True with no session.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why a session could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The shard holds `max_conns` sessions already (503).
    Full,
    /// The OS gave no randomness for the sid (500).
    Random,
}

impl Shard {
    /// Subscribes every `socketio` route's channels on behalf of its sessions, once, at shard
    /// start (so the first session misses nothing that arrives after its `40`).
    pub fn eio_subscribe_routes(&mut self) {
        let config = self.config.clone();
        for (index, route) in config.routes.iter().enumerate() {
            if route.profile != crate::config::Profile::SocketIo {
                continue;
            }
            for glob in &route.channels {
                let name = Bytes::from(glob.clone());
                let kind = if glob.bytes().any(|b| matches!(b, b'*' | b'?' | b'[')) {
                    TopicKind::Pattern
                } else {
                    TopicKind::Channel
                };
                // The radar feeds serve a route that names no source of its own.
                let source = match config.radar_source() {
                    Some(radar) if route.sources.is_empty() => {
                        SourceId::try_from(radar).unwrap_or(0)
                    }
                    _ => self.source_of(Some(index), &name, false),
                };
                let key = route_key(index);
                if let Change::Interest(id, formats) =
                    self.topics
                        .subscribe(source, kind, &name, key, Format::SocketIo)
                {
                    self.tell_hub(UpstreamMsg::Interest(Interest {
                        shard: self.id,
                        source,
                        kind,
                        name,
                        target: id,
                        formats,
                    }));
                }
            }
        }
        self.sync_topic_gauge();
    }

    /// Opens a session on route `route`; returns its slot and the open packet.
    pub fn eio_open(
        &mut self,
        route: usize,
        on: OpenTransport,
        now: Instant,
    ) -> Result<(usize, Bytes), OpenError> {
        let Some(config) = self.config.routes.get(route).and_then(|r| r.eio.clone()) else {
            return Err(OpenError::Random);
        };
        if self.eio.len() >= self.max_conns {
            self.stats().eio.sessions_refused.inc();
            return Err(OpenError::Full);
        }
        let (Ok(sid), Ok(socket_sid)) = (Sid::new(self.id), Sid::new(self.id)) else {
            return Err(OpenError::Random);
        };
        let (session, open) = Session::open(sid, socket_sid, on, now, &config);
        let slot = self.eio.entries.insert(EioEntry {
            session,
            route: u16::try_from(route).unwrap_or(u16::MAX),
            get: None,
            response: None,
            ws: None,
        });
        self.eio.by_sid.insert(sid, slot);
        self.stats().eio.sessions.inc();
        self.stats().eio.opened.inc();
        Ok((slot, open))
    }

    /// Delivers one broadcast frame (`42[…]` as a WebSocket text frame) to every session of
    /// `route` connected to the default namespace.
    pub fn eio_broadcast(&mut self, route: usize, frame: &OutFrame, now: Instant) {
        let payload = frame::payload_of(frame.bytes());
        let mut delivered = 0u64;
        let mut overflowed = Vec::new();
        let mut touched = Vec::new();
        for (slot, e) in self.eio.entries.iter_mut() {
            if usize::from(e.route) != route || !e.session.is_connected() {
                continue;
            }
            let on_ws = e.session.transport() == TransportState::WebSocket;
            match (on_ws, e.ws) {
                (true, Some(key)) if e.session.queued_bytes() == 0 => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    match conn.outbox.push(frame.clone()) {
                        SendStatus::Queued { wake_writer } => {
                            delivered += 1;
                            if wake_writer {
                                conn.wake_writer();
                            }
                        }
                        SendStatus::Overflow => overflowed.push(key),
                        SendStatus::Closed => {}
                    }
                }
                _ => {
                    if e.session.handle_broadcast(&payload) {
                        delivered += 1;
                    }
                    touched.push(slot);
                }
            }
        }
        self.stats().messages_out.add(delivered);
        for key in overflowed {
            self.stats().slow_consumer_closes.inc();
            if let Some(conn) = self.conns.get_mut(key) {
                conn.outbox.clear();
            }
            self.close(key, CloseCode::SlowConsumer, CLOSE_GRACE);
        }
        for slot in touched {
            self.eio_pump(slot, now);
        }
    }

    /// Acts on everything the session at `slot` has to say: events, WebSocket frames, the
    /// parked GET's answer; drops the session once it is finished.
    pub fn eio_pump(&mut self, slot: usize, now: Instant) {
        let Some(e) = self.eio.entries.get_mut(slot) else {
            return;
        };
        let mut abort_ws = false;
        let mut closed = None;
        while let Some(event) = e.session.poll_event() {
            match event {
                SessionEvent::AbortUpgrade => abort_ws = true,
                SessionEvent::Closed(reason) => closed = Some(reason),
            }
        }
        let ws = e.ws;
        let mut frames = Vec::new();
        if ws.is_some() {
            while let Some(p) = e.session.poll_ws_frame() {
                frames.push(frame::encode(OpCode::Text, &p));
            }
        }
        let mut wake_get = None;
        if e.get.is_some()
            && e.response.is_none()
            && let Some(body) = e.session.poll_get_response(now)
        {
            e.response = Some(body);
            wake_get = e.get;
        }
        if let Some(key) = ws {
            for f in frames {
                self.send(key, f);
            }
        }
        if let Some(key) = wake_get
            && let Some(conn) = self.conns.get_mut(key)
        {
            conn.wake_writer();
        }
        if let Some(reason) = closed {
            self.count_close(reason);
        }
        if let Some(key) = ws
            && (abort_ws || closed.is_some())
        {
            if let Some(e) = self.eio.entries.get_mut(slot) {
                e.ws = None;
            }
            if let Some(conn) = self.conns.get_mut(key) {
                // The connection no longer carries the session: its removal must not touch it.
                conn.kind = ConnKind::EioDetached;
            }
            self.close(key, CloseCode::Normal, CLOSE_GRACE);
        }
        self.eio_reap(slot);
    }

    /// Drops the session at `slot` once it is closed and nothing is left to hand out.
    fn eio_reap(&mut self, slot: usize) {
        let done = self.eio.entries.get(slot).is_some_and(|e| {
            e.session.is_finished() && e.response.is_none() && e.ws.is_none() && e.get.is_none()
        });
        if done {
            let e = self.eio.entries.remove(slot);
            self.eio.by_sid.remove(&e.session.sid());
            self.stats().eio.sessions.dec();
        }
    }

    fn count_close(&self, reason: CloseReason) {
        let eio = &self.stats().eio;
        match reason {
            CloseReason::ClientClose | CloseReason::TransportClosed => eio.closes_client.inc(),
            CloseReason::PingTimeout => eio.closes_ping_timeout.inc(),
            CloseReason::PollTimeout => eio.closes_poll_timeout.inc(),
            CloseReason::Overflow => eio.closes_overflow.inc(),
            CloseReason::DuplicateGet | CloseReason::BadPacket => eio.closes_bad_request.inc(),
            CloseReason::ServerClose => eio.closes_server.inc(),
        }
    }

    /// Parks connection `key`'s GET on the session at `slot`; `Err` answers it at once.
    pub fn eio_park_get(
        &mut self,
        slot: usize,
        key: ConnKey,
        now: Instant,
    ) -> Result<(), crate::transport::engineio::session::SessionError> {
        let Some(e) = self.eio.entries.get_mut(slot) else {
            return Err(crate::transport::engineio::session::SessionError::Closed);
        };
        let result = e.session.handle_get();
        if result.is_ok() {
            self.metrics.shards[usize::from(self.id.0)]
                .eio
                .parked_gets
                .inc();
            e.get = Some(key);
            e.response = None;
            if let Some(conn) = self.conns.get_mut(key) {
                conn.kind = ConnKind::EioGet {
                    session: u32::try_from(slot).unwrap_or(u32::MAX),
                };
            }
        }
        self.eio_pump(slot, now);
        result
    }

    /// The answer for connection `key`'s parked GET, once there is one; the connection is back
    /// in the HTTP phase afterwards.
    pub fn eio_take_response(&mut self, slot: usize, key: ConnKey) -> Option<Bytes> {
        let e = self.eio.entries.get_mut(slot)?;
        if e.get != Some(key) {
            return None;
        }
        let body = e.response.take()?;
        e.get = None;
        self.metrics.shards[usize::from(self.id.0)]
            .eio
            .parked_gets
            .dec();
        if let Some(conn) = self.conns.get_mut(key) {
            conn.kind = ConnKind::Http;
            conn.last_seen = crate::conn::Tick::now();
        }
        self.eio_reap(slot);
        Some(body)
    }

    /// Connection `key` is going away: release whatever session it carried.
    pub(super) fn eio_conn_gone(&mut self, key: ConnKey, kind: ConnKind, now: Instant) {
        match kind {
            ConnKind::Eio { session, .. } => {
                let slot = session as usize;
                let Some(e) = self.eio.entries.get_mut(slot) else {
                    return;
                };
                if e.ws == Some(key) {
                    e.ws = None;
                    e.session.handle_ws_closed();
                    self.eio_pump(slot, now);
                }
            }
            ConnKind::EioGet { session } => {
                let slot = session as usize;
                let Some(e) = self.eio.entries.get_mut(slot) else {
                    return;
                };
                if e.get == Some(key) {
                    e.get = None;
                    e.response = None;
                    self.metrics.shards[usize::from(self.id.0)]
                        .eio
                        .parked_gets
                        .dec();
                    e.session.handle_get_cancelled(now);
                    self.eio_pump(slot, now);
                }
            }
            _ => {}
        }
    }

    /// A text frame on connection `key`, the WebSocket of the session at `slot`.
    pub fn eio_ws_text(&mut self, key: ConnKey, slot: usize, data: &[u8], now: Instant) {
        let Some(e) = self.eio.entries.get_mut(slot) else {
            return;
        };
        if e.ws != Some(key) {
            return;
        }
        let upgrading = e.session.transport() != TransportState::WebSocket;
        let result = e.session.handle_ws_text(data, now);
        let upgraded = upgrading && e.session.transport() == TransportState::WebSocket;
        // A refused probe leaves the session on polling: that socket is done.
        let drop_ws = result.is_err() && e.session.transport() != TransportState::WebSocket;
        if upgraded {
            self.stats().eio.upgrades.inc();
        }
        if drop_ws {
            if let Some(e) = self.eio.entries.get_mut(slot) {
                e.ws = None;
            }
            if let Some(conn) = self.conns.get_mut(key) {
                conn.kind = ConnKind::EioDetached;
            }
            self.stats().eio.bad_requests.inc();
            self.close(key, CloseCode::Normal, CLOSE_GRACE);
        }
        self.eio_pump(slot, now);
    }

    /// Timers: runs [`Session::handle_timeout`] on every session whose deadline has passed.
    pub fn eio_tick(&mut self, now: Instant) {
        if self.eio.is_empty() {
            return;
        }
        let due: Vec<usize> = self
            .eio
            .entries
            .iter()
            .filter(|(_, e)| e.session.poll_timeout().is_some_and(|t| t <= now))
            .map(|(slot, _)| slot)
            .collect();
        for slot in due {
            if let Some(e) = self.eio.entries.get_mut(slot) {
                e.session.handle_timeout(now);
            }
            self.eio_pump(slot, now);
        }
    }

    /// Ends every session (graceful shutdown): pending GETs get `1`, WebSockets close.
    pub fn eio_close_all(&mut self, now: Instant) {
        let slots: Vec<usize> = self.eio.entries.iter().map(|(s, _)| s).collect();
        for slot in slots {
            if let Some(e) = self.eio.entries.get_mut(slot) {
                e.session.handle_close();
            }
            self.eio_pump(slot, now);
        }
    }
}
