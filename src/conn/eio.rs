//! The HTTP phase of `socketio` routes: Engine.IO handshakes, long-polling GET and POST, CORS,
//! the WebSocket transport's upgrade, and the hand-off of a request to the shard owning its
//! session (see [`crate::shard::eio`] for the session side).
//!
//! Order of the checks is python-engineio's (`handshake::parse_request`): Origin first (400
//! `"Not an accepted origin."`), then the query; then, for a request naming a session, the
//! owner: a sid of another shard hands the connection over before anything is answered.
//!
//! Polling answers are `200` with `Content-Type: text/plain; charset=UTF-8` (the packets), or
//! `text/plain` `OK` for a POST and a preflight; errors are engine.io's JSON bodies. With an
//! allowed `Origin`, answers carry python-engineio's CORS headers: `Access-Control-Allow-Origin`
//! (the Origin itself), `Access-Control-Allow-Credentials: true`, and for `OPTIONS`
//! `Access-Control-Allow-Methods: OPTIONS, GET, POST` plus the requested headers echoed.
//!
//! A parked GET keeps reading its socket while it waits, so a client that leaves releases the
//! session's GET at once (the session then waits `ping_interval + ping_timeout` for another).
//!
//! Thread: the shard's own; every `.await` happens with no borrow of the shard held.

use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::TrySendError;

use super::ConnKind;
use super::io::{Next, Step};
use crate::http;
use crate::router::ShardMsg;
use crate::router::table::ConnKey;
use crate::rt::{ReadOutcome, TcpStream};
use crate::shard::ShardRef;
use crate::shard::eio::OpenError;
use crate::transport::engineio::handshake::{
    self, EioError, EioRequest, Method, OriginPolicy, RequestError, RequestHead,
};
use crate::transport::engineio::session::OpenTransport;
use crate::ws::frame::{self, OpCode};

/// The polling body's content type (python-engineio's `_ok` with packets).
const PACKETS: &str = "text/plain; charset=UTF-8";

/// The route serving `path` on `listener` if it is a `socketio` route.
pub(super) fn route_of(s: &crate::shard::Shard, listener: usize, path: &str) -> Option<usize> {
    let index = super::io::find_route(s, listener, path)?;
    (s.config.routes.get(index)?.profile == crate::config::Profile::SocketIo).then_some(index)
}

/// The echo store of the socketio route on `listener`, if it has one (`GET /echoes`).
pub(super) fn echo_store(
    s: &crate::shard::Shard,
    listener: usize,
) -> Option<crate::store::echoes::EchoesHandle> {
    s.config
        .routes
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            r.profile == crate::config::Profile::SocketIo
                && s.route_listeners.get(*i) == Some(&listener)
        })
        .find_map(|(i, _)| s.echoes.get(i).cloned().flatten())
}

/// Whether `origin` may use route `index` (no Origin always may; `*` or an empty list allows
/// any).
fn origin_allowed(s: &crate::shard::Shard, index: usize, origin: Option<&[u8]>) -> bool {
    let Some(route) = s.config.routes.get(index) else {
        return false;
    };
    match origin {
        None => true,
        Some(o) => {
            route.origins.is_empty() || route.origins.iter().any(|a| a == "*" || a.as_bytes() == o)
        }
    }
}

/// python-engineio's CORS headers for an allowed request.
fn cors_headers<'r>(req: &'r http::Request<'_>, allowed: bool) -> Vec<(&'static str, &'r [u8])> {
    let mut headers = Vec::new();
    if let Some(origin) = req.header("origin").filter(|_| allowed) {
        headers.push(("access-control-allow-origin", origin));
    }
    if req.method == "OPTIONS" {
        headers.push((
            "access-control-allow-methods",
            b"OPTIONS, GET, POST".as_slice(),
        ));
        if let Some(h) = req.header("access-control-request-headers") {
            headers.push(("access-control-allow-headers", h));
        }
    }
    headers.push(("access-control-allow-credentials", b"true".as_slice()));
    headers
}

/// What one request leads to, decided with the shard borrowed and no `.await`.
enum Plan {
    /// Write `response`, drop `used` bytes, then go on (or close).
    Reply {
        response: Bytes,
        used: usize,
        keep_alive: bool,
    },
    /// The request is not complete yet.
    NeedMore,
    /// Answer an Engine.IO (or Origin) refusal, with these CORS headers, and close.
    Refuse(RequestError, Vec<(&'static str, Vec<u8>)>),
    /// Answer with this status and body and close.
    Fail(u16, &'static str, &'static [u8]),
    /// Another shard owns the session: hand the connection over.
    HandOff(usize),
    /// A GET parked on session `slot`: wait for its packets.
    Park {
        slot: usize,
        used: usize,
        keep_alive: bool,
        cors: Vec<(&'static str, Vec<u8>)>,
    },
    /// Write the 101 (and the open packet), drop the `usize` bytes of the request, and serve
    /// the WebSocket.
    Upgrade(Bytes, usize),
}

/// Answers one request on `socketio` route `index`; `pending` holds it (and maybe more).
pub(super) async fn respond(
    shard: &ShardRef,
    key: ConnKey,
    stream: &TcpStream,
    index: usize,
    pending: &mut Vec<u8>,
) -> Step {
    let plan = plan(shard, key, index, pending);
    match plan {
        Plan::NeedMore => Step::NeedMore,
        Plan::Reply {
            response,
            used,
            keep_alive,
        } => {
            pending.drain(..used.min(pending.len()));
            if stream.write_all(response).await.is_err() || !keep_alive {
                return Step::Finish(Next::Done);
            }
            Step::Continue
        }
        Plan::Refuse(e, cors) => refuse(shard, stream, e, &cors).await,
        Plan::Fail(status, content_type, body) => {
            finish(shard, stream, status, content_type, body).await
        }
        Plan::HandOff(owner) => hand_off(shard, key, stream, pending, owner).await,
        Plan::Park {
            slot,
            used,
            keep_alive,
            cors,
        } => {
            pending.drain(..used.min(pending.len()));
            let Some(body) = wait_for_packets(shard, key, stream, slot, pending).await else {
                return Step::Finish(Next::Done);
            };
            let headers: Vec<(&str, &[u8])> =
                cors.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            let response = reply(200, PACKETS, &headers, &body, keep_alive);
            if stream.write_all(response).await.is_err() || !keep_alive {
                return Step::Finish(Next::Done);
            }
            Step::Continue
        }
        Plan::Upgrade(response, used) => {
            pending.drain(..used.min(pending.len()));
            if stream.write_all(response).await.is_err() {
                return Step::Finish(Next::Done);
            }
            Step::Finish(Next::Upgrade(std::mem::take(pending)))
        }
    }
}

/// Decides what to do with the request at the front of `pending`.
fn plan(shard: &ShardRef, key: ConnKey, index: usize, pending: &[u8]) -> Plan {
    let mut headers = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let req = match http::parse(pending, &mut headers) {
        Ok(Some(req)) => req,
        Ok(None) => return Plan::NeedMore,
        Err(_) => return Plan::Refuse(EioError::BadRequest.into(), Vec::new()),
    };
    let mut s = shard.borrow_mut();
    let keep_alive = req.keep_alive();
    let origin = req.header("origin");
    let allowed = origin_allowed(&s, index, origin);
    let head = RequestHead {
        method: match req.method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        },
        query: req.query.as_bytes(),
        origin,
        websocket_upgrade: req.is_websocket_upgrade(),
    };
    let policy = if allowed {
        OriginPolicy::Any
    } else {
        OriginPolicy::Exact(Vec::new())
    };
    let cors = cors_headers(&req, allowed);
    let owned: Vec<(&'static str, Vec<u8>)> = cors.iter().map(|(n, v)| (*n, v.to_vec())).collect();
    // python-engineio adds its CORS headers to error answers too (not to an Origin refusal).
    let refused = |e: RequestError| Plan::Refuse(e, owned.clone());
    let request = match handshake::parse_request(&head, &policy) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let now = Instant::now();
    // A request naming another shard's session goes to that shard, whole.
    if let EioRequest::Poll(sid) | EioRequest::Post(sid) | EioRequest::Upgrade(sid) = request {
        let owner = usize::from(sid.shard().0);
        if owner != usize::from(s.id.0) {
            if owner >= s.peers.len() {
                return refused(EioError::UnknownSid.into());
            }
            return Plan::HandOff(owner);
        }
    }
    let used = req.head_len;
    let ok = |response| Plan::Reply {
        response,
        used,
        keep_alive,
    };
    match request {
        EioRequest::Preflight => ok(reply(200, "text/plain", &cors, b"OK", keep_alive)),
        EioRequest::OpenPolling => match s.eio_open(index, OpenTransport::Polling, now) {
            Ok((_, open)) => ok(reply(200, PACKETS, &cors, &open, keep_alive)),
            Err(e) => open_failed(e),
        },
        EioRequest::OpenWebSocket => {
            let Ok(accept) = crate::ws::handshake::accept(&req) else {
                return refused(EioError::BadRequest.into());
            };
            match s.eio_open(index, OpenTransport::WebSocket, now) {
                Ok((slot, open)) => {
                    attach_ws(&mut s, key, index, slot);
                    let mut out = accept.to_vec();
                    out.extend_from_slice(&frame::encode(OpCode::Text, &open));
                    Plan::Upgrade(Bytes::from(out), used)
                }
                Err(e) => open_failed(e),
            }
        }
        EioRequest::Upgrade(sid) => {
            let Ok(accept) = crate::ws::handshake::accept(&req) else {
                return refused(EioError::BadRequest.into());
            };
            let Some(slot) = s.eio.lookup(&sid) else {
                return refused(EioError::UnknownSid.into());
            };
            let started = match s.eio.entries.get_mut(slot) {
                Some(e) if e.ws.is_none() && usize::from(e.route) == index => {
                    e.session.handle_ws_open(now).map_err(|e| e.eio_error())
                }
                _ => Err(EioError::BadRequest),
            };
            match started {
                Ok(()) => {
                    attach_ws(&mut s, key, index, slot);
                    Plan::Upgrade(accept, used)
                }
                Err(e) => refused(e.into()),
            }
        }
        EioRequest::Poll(sid) => {
            let Some(slot) = s.eio.lookup(&sid) else {
                return refused(EioError::UnknownSid.into());
            };
            if let Err(e) = s.eio_park_get(slot, key, now) {
                return refused(e.eio_error().into());
            }
            Plan::Park {
                slot,
                used,
                keep_alive,
                cors: owned.clone(),
            }
        }
        EioRequest::Post(sid) => {
            let max = s
                .config
                .routes
                .get(index)
                .and_then(|r| r.eio.as_ref())
                .map_or(0, |c| c.max_payload_bytes);
            let Some(len) = req.content_length().filter(|&n| n <= max) else {
                return refused(EioError::BadRequest.into());
            };
            let total = req.head_len + len;
            if pending.len() < total {
                return Plan::NeedMore;
            }
            let Some(slot) = s.eio.lookup(&sid) else {
                return refused(EioError::UnknownSid.into());
            };
            let result = match s.eio.entries.get_mut(slot) {
                Some(e) => e.session.handle_post(&pending[req.head_len..total], now),
                None => Err(crate::transport::engineio::session::SessionError::Closed),
            };
            s.eio_pump(slot, now);
            match result {
                Ok(()) => Plan::Reply {
                    response: reply(200, "text/plain", &cors, b"OK", keep_alive),
                    used: total,
                    keep_alive,
                },
                Err(e) => refused(e.eio_error().into()),
            }
        }
    }
}

/// Waits until the parked GET of `key` can be answered; `None` when the client left first.
async fn wait_for_packets(
    shard: &ShardRef,
    key: ConnKey,
    stream: &TcpStream,
    slot: usize,
    pending: &mut Vec<u8>,
) -> Option<Bytes> {
    // Pipelined bytes are kept for after the answer, up to a request head's worth.
    let limit = http::MAX_HEAD_BYTES;
    let mut reading = true;
    loop {
        let notify = {
            let mut s = shard.borrow_mut();
            if let Some(body) = s.eio_take_response(slot, key) {
                return Some(body);
            }
            let parked = s.eio.entries.get(slot).is_some_and(|e| e.get == Some(key));
            if !parked {
                return None;
            }
            s.conns
                .get_mut(key)?
                .parked
                .get_or_insert_with(Default::default)
                .clone()
        };
        if !reading {
            notify.notified().await;
            continue;
        }
        let mut on_data = |d: &[u8]| {
            pending.extend_from_slice(d);
            pending.len() < limit
        };
        let outcome = tokio::select! {
            _ = notify.notified() => None,
            r = stream.read_available(&mut on_data) => Some(r),
        };
        match outcome {
            // The client left: `Shard::remove` releases the GET.
            Some(ReadOutcome::Eof) => return None,
            Some(ReadOutcome::Stopped) => reading = false,
            Some(ReadOutcome::Drained) | None => {}
        }
    }
}

/// Makes connection `key` the WebSocket of session `slot` and counts it as a WebSocket.
fn attach_ws(s: &mut crate::shard::Shard, key: ConnKey, index: usize, slot: usize) {
    if let Some(e) = s.eio.entries.get_mut(slot) {
        e.ws = Some(key);
    }
    s.upgraded(
        key,
        ConnKind::Eio {
            route: u16::try_from(index).unwrap_or(u16::MAX),
            session: u32::try_from(slot).unwrap_or(u32::MAX),
        },
    );
}

/// Hands the connection to shard `owner` (its socket and every byte read so far).
async fn hand_off(
    shard: &ShardRef,
    key: ConnKey,
    stream: &TcpStream,
    pending: &mut Vec<u8>,
    owner: usize,
) -> Step {
    let Ok(socket) = stream.try_clone_std() else {
        return finish(
            shard,
            stream,
            500,
            "text/plain",
            b"cannot hand the request over",
        )
        .await;
    };
    let (link, listener, peer) = {
        let s = shard.borrow();
        let listener = s.conns.get(key).map_or(0, |c| c.listener);
        let peer = s
            .conns
            .get(key)
            .map_or(([0, 0, 0, 0], 0).into(), |c| c.peer);
        (s.peers.get(owner).cloned(), listener, peer)
    };
    let Some(link) = link else {
        return refuse(shard, stream, EioError::UnknownSid.into(), &[]).await;
    };
    let msg = ShardMsg::Adopt {
        stream: socket,
        pending: std::mem::take(pending),
        listener,
        peer,
    };
    match link.tx.try_send(msg) {
        Ok(()) => {
            link.wake.wake();
            shard.borrow().stats().eio.handoffs.inc();
            // Only this descriptor closes when the connection task ends; the owner serves the
            // socket from here on.
            Step::Finish(Next::Done)
        }
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            shard.borrow().stats().eio.handoff_drops.inc();
            finish(
                shard,
                stream,
                503,
                "text/plain",
                b"the shard that owns the Engine.IO session is overloaded; retry",
            )
            .await
        }
    }
}

fn open_failed(e: OpenError) -> Plan {
    match e {
        OpenError::Full => Plan::Fail(
            503,
            "text/plain",
            b"too many Engine.IO sessions on this server; retry later",
        ),
        OpenError::Random => Plan::Fail(500, "text/plain", b"cannot make a session id"),
    }
}

/// Answers an Engine.IO refusal (or the Origin's) and closes the connection.
async fn refuse(
    shard: &ShardRef,
    stream: &TcpStream,
    e: RequestError,
    cors: &[(&'static str, Vec<u8>)],
) -> Step {
    let headers: Vec<(&str, &[u8])> = {
        let s = shard.borrow();
        s.stats().http_errors.inc();
        match e {
            RequestError::OriginRefused => {
                s.stats().eio.origin_refused.inc();
                Vec::new()
            }
            RequestError::Eio(_) => {
                s.stats().eio.bad_requests.inc();
                cors.iter().map(|(n, v)| (*n, v.as_slice())).collect()
            }
        }
    };
    let response = reply(
        e.status(),
        e.content_type(),
        &headers,
        e.body().as_bytes(),
        false,
    );
    let _ = stream.write_all(response).await;
    Step::Finish(Next::Done)
}

async fn finish(
    shard: &ShardRef,
    stream: &TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Step {
    shard.borrow().stats().http_errors.inc();
    let _ = stream
        .write_all(reply(status, content_type, &[], body, false))
        .await;
    Step::Finish(Next::Done)
}

/// A complete response with `headers` added.
fn reply(
    status: u16,
    content_type: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
    keep_alive: bool,
) -> Bytes {
    http::response_with(status, content_type, headers, body, keep_alive)
}
