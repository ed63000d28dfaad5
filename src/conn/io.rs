//! The only code that does socket I/O for a connection.
//!
//! [`serve`] runs one accepted socket: the HTTP phase (plain routes, or the upgrade), then, for a
//! WebSocket, the read loop and the write loop side by side in the same task. Every `.await`
//! happens with no borrow of the shard held.

use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;

use super::{ConnKind, ConnState, native, proxy};
use crate::config::{Heartbeat, Profile};
use crate::http::{self, MAX_HEADERS, publish};
use crate::router::table::ConnKey;
use crate::router::{Format, TopicKind};
use crate::rt::{ReadOutcome, TcpStream};
use crate::shard::{CLOSE_GRACE, ShardRef};
use crate::ws::codec::{Codec, Incoming};
use crate::ws::frame::{self, OpCode};
use crate::ws::handshake;

/// What the HTTP phase decided.
pub(super) enum Next {
    /// The connection was upgraded to a WebSocket (its kind is set and it is counted);
    /// `leftover` bytes followed the request head.
    Upgrade(Vec<u8>),
    /// The connection is done.
    Done,
}

/// Serves one connection until it closes, then removes it from the shard.
pub fn serve(shard: ShardRef, key: ConnKey, stream: TcpStream) -> impl Future<Output = ()> {
    // Not an `async fn` around `serve_from`: that would nest one future in another and grow
    // every connection's task (measured: 656 bytes against 560).
    serve_from(shard, key, stream, Vec::new(), true)
}

/// Serves a connection another shard handed over (an Engine.IO request for a session this
/// shard owns), starting with the bytes it had read. A full shard refuses it (counted in
/// `ringcast_rejected_connections_total`), as its accept loop would.
pub fn adopt(
    shard: &ShardRef,
    stream: std::net::TcpStream,
    pending: Vec<u8>,
    listener: u8,
    peer: std::net::SocketAddr,
) {
    let mut s = shard.borrow_mut();
    if s.conns.len() >= s.max_conns {
        s.stats().rejected_connections.inc();
        return;
    }
    let stream = match TcpStream::from_std(stream) {
        Ok(st) => st,
        Err(e) => {
            tracing::warn!(error = %e, "cannot adopt a handed-over connection");
            return;
        }
    };
    stream.set_nodelay();
    let key = s.insert_conn(stream.handle(), listener, Instant::now());
    // The sending shard admitted this client and gave its per-IP slot back when it let go.
    let lease = s.per_ip.is_active().then(|| s.per_ip.lease(peer.ip()));
    s.conns[key].peer = peer;
    s.conns[key].ip_lease = lease;
    drop(s);
    crate::rt::spawn(serve_from(shard.clone(), key, stream, pending, false));
}

/// Removes a connection from its shard when its task ends, however it ends: normally, or by a
/// panic in its handling (a bug), which the runtime catches at the task: that connection is
/// dropped alone, counted in `ringcast_connection_panics_total`, and the shard goes on. A
/// connection that went dormant ([`super::dormant`]) stays.
struct Cleanup {
    shard: ShardRef,
    key: ConnKey,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Unwinding has dropped every borrow the panicking code held; a borrow still active
        // would mean the shard itself is mid-update, where leaving the entry is the safe choice.
        let Ok(mut s) = self.shard.try_borrow_mut() else {
            return;
        };
        if std::thread::panicking() {
            s.stats().connection_panics.inc();
            tracing::error!(
                "a connection's handling panicked; that connection is closed, the shard goes on"
            );
        } else if s.conns.get(self.key).is_some_and(|c| c.dormant.is_some()) {
            return;
        }
        s.remove(self.key);
    }
}

/// `fresh`: a connection just accepted here, which first passes [`proxy::admit`]; false for
/// one handed over by another shard, which did that already.
///
/// The HTTP phase's task. An upgrade hands the socket to a task of its own
/// ([`websocket`]), so that what an idle WebSocket's task holds is only the two loops: the
/// HTTP phase's state is boxed and gone by then. They are plain functions around
/// `async move` blocks, not `async fn`s: an `async fn` keeps its arguments twice in the state
/// machine (once as captured, once as locals), which cost 112 bytes here (measured with
/// `RUSTC_BOOTSTRAP=1 cargo rustc --lib -- -Zprint-type-sizes`).
#[allow(clippy::manual_async_fn)] // an async fn would keep its arguments twice (see above)
fn serve_from(
    shard: ShardRef,
    key: ConnKey,
    stream: TcpStream,
    pending: Vec<u8>,
    fresh: bool,
) -> impl Future<Output = ()> {
    async move {
        // Dropped when this task ends, unless the WebSocket's task took it over: the
        // connection leaves the shard.
        let cleanup = Cleanup {
            shard: shard.clone(),
            key,
        };
        // Boxed: its state (request parsing, headers) is dropped at the upgrade.
        let Next::Upgrade(leftover) =
            Box::pin(http_phase(&shard, key, &stream, pending, fresh)).await
        else {
            return;
        };
        // Bytes that came with the upgrade request: handled before the loops start, so the
        // read loop does not carry them.
        let mut codec = LazyCodec::default();
        let mut discard = false;
        let stopped =
            !leftover.is_empty() && !on_input(&shard, key, &mut codec, &leftover, &mut discard);
        drop(leftover);
        crate::rt::spawn(websocket(cleanup, stream, codec, discard, stopped));
    }
}

/// A dormant connection's new task ([`super::dormant::resume_loop`]): a WebSocket at rest, so
/// with no codec and nothing to discard.
pub(super) fn resume(shard: ShardRef, key: ConnKey, stream: TcpStream) -> impl Future<Output = ()> {
    websocket(
        Cleanup { shard, key },
        stream,
        LazyCodec::default(),
        false,
        false,
    )
}

/// A WebSocket's task: the read loop and the write loop side by side, until both end, or until
/// the connection dozes ([`super::dormant`]): the sweep asked it to, and the read loop found it
/// at rest (open, nothing queued or in flight, no codec, not discarding) and both loops
/// returned. Then the socket moves into the connection's slab entry, the connection's waker is
/// left where the task's was, and the task ends.
///
/// This future is what a busy connection's task holds, so it is kept small
/// (`an_idle_connection_task_stays_small`).
#[allow(clippy::manual_async_fn)] // an async fn would keep its arguments twice (see serve_from)
fn websocket(
    cleanup: Cleanup,
    mut stream: TcpStream,
    codec: LazyCodec,
    discard: bool,
    stopped: bool,
) -> impl Future<Output = ()> {
    async move {
        let cleanup = cleanup;
        let (shard, key) = (&cleanup.shard, cleanup.key);
        let (mut codec, mut discard, mut stopped) = (codec, discard, stopped);
        loop {
            let reader = read_loop(shard, key, &stream, codec, discard, stopped);
            let writer = write_loop(shard, key, &stream);
            let (dozing, _) = tokio::join!(reader, writer);
            if !dozing {
                return;
            }
            let mut s = shard.borrow_mut();
            let Some(conn) = s.conns.get_mut(key) else {
                return;
            };
            // The read loop saw the connection at rest; the write loop may have taken frames
            // or met a close since: then the loops start again (the read loop held no codec,
            // so nothing is lost). Input that arrived meanwhile makes the sleeping socket
            // report at once.
            if conn.is_at_rest() {
                match stream.sleep(key) {
                    Ok(sleeping) => {
                        conn.writer_waker = Some(super::dormant::waker(key));
                        conn.doze = super::dormant::Doze::Dormant;
                        conn.dormant = Some(Box::new(sleeping));
                        s.stats().dormant.inc();
                        return;
                    }
                    Err(back) => stream = back,
                }
            }
            conn.doze = super::dormant::Doze::Awake;
            (codec, discard, stopped) = (LazyCodec::default(), false, false);
        }
    }
}

/// Whether the read loop of a WebSocket at rest should end for it to doze: the sweep asked, and
/// nothing is queued or in flight. Marks it [`Doze::Dozing`](super::dormant::Doze::Dozing), for
/// the write loop to end too.
fn doze_now(shard: &ShardRef, key: ConnKey) -> bool {
    let mut s = shard.borrow_mut();
    let Some(c) = s.conns.get_mut(key) else {
        return false;
    };
    let now = c.doze == super::dormant::Doze::Asked && c.is_at_rest() && c.held.is_none();
    if now {
        c.doze = super::dormant::Doze::Dozing;
    }
    now
}

/// Reads HTTP requests and answers them until an upgrade, an error or the client leaves.
///
/// Each request must be complete within `head-timeout` of the connection (the first one) or
/// of its own first byte (later ones on a keep-alive connection), else 408 and close
/// (slowloris; counted as `refused_total{reason="head_timeout"}`). Between requests,
/// `idle-timeout` applies (the shard's sweep).
async fn http_phase(
    shard: &ShardRef,
    key: ConnKey,
    stream: &TcpStream,
    mut pending: Vec<u8>,
    fresh: bool,
) -> Next {
    let (head_timeout, max_body) = {
        let s = shard.borrow();
        (s.config.head_timeout, s.config.max_message_bytes)
    };
    // The first request's deadline runs from the accept, the PROXY header included.
    let first = Instant::now() + head_timeout;
    if fresh && !proxy::admit(shard, key, stream, &mut pending, first).await {
        return Next::Done;
    }
    let mut deadline = Some(first);
    // A request head plus the largest body we accept; reading pauses past it and `respond`
    // answers 431/413.
    let limit = http::MAX_HEAD_BYTES + max_body;
    let mut eof = false;
    // Answers to pipelined requests, written together once no complete request is left.
    let mut unsent = Vec::new();
    loop {
        // Answer every complete request already buffered.
        loop {
            match respond(shard, key, stream, &mut pending, &mut unsent).await {
                Step::NeedMore => {
                    if !flush_unsent(stream, &mut unsent).await {
                        return Next::Done;
                    }
                    break;
                }
                Step::Continue => {
                    deadline = (!pending.is_empty()).then(|| Instant::now() + head_timeout);
                    continue;
                }
                Step::Finish(next) => return next,
            }
        }
        if eof {
            return Next::Done;
        }
        let mut got = 0;
        let mut on_data = |data: &[u8]| {
            pending.extend_from_slice(data);
            got += data.len();
            pending.len() < limit
        };
        let read = stream.read_available(&mut on_data);
        let outcome = match deadline {
            Some(at) => match tokio::time::timeout_at(at.into(), read).await {
                Ok(outcome) => outcome,
                Err(_) => return head_timed_out(shard, key, stream, pending.is_empty()).await,
            },
            None => read.await,
        };
        eof = outcome == ReadOutcome::Eof;
        if deadline.is_none() && !pending.is_empty() {
            deadline = Some(Instant::now() + head_timeout);
        }
        let mut s = shard.borrow_mut();
        s.stats().bytes_in.add(got as u64);
        if let Some(conn) = s.conns.get_mut(key) {
            conn.last_seen = crate::conn::Tick::now();
        }
    }
}

/// A request not complete within `head-timeout`: 408 if it sent anything, then close.
async fn head_timed_out(shard: &ShardRef, key: ConnKey, stream: &TcpStream, silent: bool) -> Next {
    let peer = {
        let s = shard.borrow();
        s.stats().refused.inc(crate::limits::Refusal::HeadTimeout);
        s.conns.get(key).map(|c| c.peer)
    };
    tracing::debug!(peer = ?peer, silent, "request not complete within head-timeout: closed");
    if !silent {
        let response = http::json_error(408, "request not complete within head-timeout", false);
        let _ = stream.write_all(response).await;
    }
    Next::Done
}

pub(super) enum Step {
    NeedMore,
    Continue,
    Finish(Next),
}

/// Most bytes of answers held for one write while pipelined requests keep coming.
const UNSENT_MAX: usize = 64 * 1024;

/// Writes the answers held in `unsent` (pipelined requests' answers, in order); false when
/// the write failed.
async fn flush_unsent(stream: &TcpStream, unsent: &mut Vec<u8>) -> bool {
    if unsent.is_empty() {
        return true;
    }
    let out = Bytes::from(std::mem::take(unsent));
    stream.write_all(out).await.is_ok()
}

/// Answers the first complete request in `pending`. A plain request's answer on a keep-alive
/// connection is added to `unsent`, so a client that pipelines requests gets their answers in
/// one write instead of one write (and one completion to wait for) each; every other answer
/// writes `unsent` first, keeping the order.
async fn respond(
    shard: &ShardRef,
    key: ConnKey,
    stream: &TcpStream,
    pending: &mut Vec<u8>,
    unsent: &mut Vec<u8>,
) -> Step {
    if pending.is_empty() {
        return Step::NeedMore;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = match http::parse(pending, &mut headers) {
        Ok(Some(req)) => req,
        Ok(None) => return Step::NeedMore,
        Err(e) => {
            if e.status() == 431 {
                let s = shard.borrow();
                s.stats()
                    .refused
                    .inc(crate::limits::Refusal::HeaderTooLarge);
                let peer = s.conns.get(key).map(|c| c.peer);
                tracing::debug!(peer = ?peer, "request head too large: 431");
            }
            return finish_held_error(shard, stream, unsent, e.status(), &e.to_string()).await;
        }
    };
    let keep_alive = req.keep_alive();
    let (ws_path, echo_path, max_body) = {
        let s = shard.borrow();
        (
            s.config.ws_path.clone(),
            s.config.echo_path.clone(),
            s.config.max_message_bytes,
        )
    };
    let listener = shard
        .borrow()
        .conns
        .get(key)
        .map_or(0, |c| usize::from(c.listener));
    let echo_store = crate::http::echoes::is_echoes_path(req.path)
        .then(|| super::eio::echo_store(&shard.borrow(), listener))
        .flatten();
    let eio_route = super::eio::route_of(&shard.borrow(), listener, req.path);
    let ess_route = super::ess_api::route_of(shard, listener, req.path);
    // Only a plain request's answer joins the held ones: every other route writes its own
    // answer (or takes the connection over), after them.
    let plain = echo_store.is_none()
        && eio_route.is_none()
        && ess_route.is_none()
        && !req.is_websocket_upgrade();
    if !plain && !flush_unsent(stream, unsent).await {
        return Step::Finish(Next::Done);
    }
    // `GET /echoes` on a socketio route's listener with an echo store (SuperDARN, D6).
    if let Some(store) = echo_store {
        let Some(len) = req.content_length() else {
            return finish_error(shard, stream, 400, "bad content-length").await;
        };
        let used = req.head_len + len;
        if pending.len() < used {
            return Step::NeedMore;
        }
        let response = match req.method {
            "GET" | "HEAD" => {
                let head = req.method == "HEAD";
                let answer = crate::http::echoes::respond(
                    &store,
                    (!req.query.is_empty()).then_some(req.query),
                    std::time::SystemTime::now(),
                    keep_alive,
                );
                let response = answer.await;
                if head {
                    http::head_only(response)
                } else {
                    response
                }
            }
            // Flask's answers for the route's other methods.
            "OPTIONS" => http::response_with(
                200,
                "text/html; charset=utf-8",
                &[("allow", b"HEAD, OPTIONS, GET")],
                b"",
                keep_alive,
            ),
            _ => {
                shard.borrow().stats().http_errors.inc();
                http::response_with(
                    405,
                    "text/html; charset=utf-8",
                    &[("allow", b"HEAD, OPTIONS, GET")],
                    b"",
                    keep_alive,
                )
            }
        };
        pending.drain(..used);
        if stream.write_all(response).await.is_err() || !keep_alive {
            return Step::Finish(Next::Done);
        }
        return Step::Continue;
    }
    // Engine.IO (socketio routes) answers every request at its path, upgrades included.
    if let Some(index) = eio_route {
        return Box::pin(super::eio::respond(shard, key, stream, index, pending)).await;
    }
    // The Squonk2 ESS internal API answers every request on its route, upgrades included.
    if let Some(index) = ess_route {
        let answer =
            super::ess_api::respond(shard, &req, &pending[..], index, max_body, keep_alive);
        let (response, used, keep) = match Box::pin(answer).await {
            super::ess_api::Outcome::NeedMore => return Step::NeedMore,
            super::ess_api::Outcome::Reply {
                response,
                used,
                keep_alive,
            } => (response, used, keep_alive),
        };
        pending.drain(..used.min(pending.len()));
        if stream.write_all(response).await.is_err() || !keep {
            return Step::Finish(Next::Done);
        }
        return Step::Continue;
    }
    if req.is_websocket_upgrade() {
        let route = find_route(&shard.borrow(), listener, req.path);
        if let Some(route) = route {
            return super::route::upgrade(shard, key, stream, &req, route, pending).await;
        }
        if listener != 0 {
            return finish_error(shard, stream, 403, "no WebSocket route at this path").await;
        }
        let kind = if echo_path.as_deref() == Some(req.path) {
            ConnKind::Echo
        } else if req.path == ws_path {
            let raw = req.query_param("format").is_some_and(|f| f == "raw");
            ConnKind::Native(if raw { Format::Raw } else { Format::Json })
        } else {
            return finish_error(shard, stream, 404, "no WebSocket route at this path").await;
        };
        let admitted = if kind == ConnKind::Echo {
            super::admission::Admitted {
                auth: None,
                subprotocol: None,
            }
        } else {
            let config = shard.borrow().config.clone();
            match super::admission::admit(shard, stream, &req, &config.access).await {
                Ok(a) => a,
                Err(step) => return step,
            }
        };
        let response = match handshake::accept(&req) {
            Ok(r) => admitted.response(r),
            Err(e) => return finish_error(shard, stream, 400, &e.to_string()).await,
        };
        let subscribe = req.query_param("subscribe").map(|s| s.into_owned());
        let watch = req.query_param("watch").map(|s| s.into_owned());
        let snapshot = req.query_param("snapshot").map(|s| s.into_owned());
        let leftover = pending[req.head_len..].to_vec();
        // URL subscriptions are made now and acknowledged in the same write as the 101, so the
        // acks need no outbox; events queued meanwhile go out after it, from the outbox.
        let mut out = response.to_vec();
        // Counted as a WebSocket before anything is written to it.
        shard.borrow_mut().upgraded(key, kind);
        admitted.install(shard, key);
        if let ConnKind::Native(format) = kind {
            let mut s = shard.borrow_mut();
            let acks = format == Format::Json;
            if let Some(list) = subscribe {
                native::subscribe_from_url(&mut s, key, TopicKind::Channel, &list, acks, &mut out);
            }
            if let Some(list) = watch {
                native::subscribe_from_url(&mut s, key, TopicKind::Key, &list, acks, &mut out);
            }
            if let Some(snapshot) = snapshot {
                native::snapshot_from_url(&mut s, key, snapshot, &mut out);
            }
        }
        if stream.write_all(Bytes::from(out)).await.is_err() {
            return Step::Finish(Next::Done);
        }
        return Step::Finish(Next::Upgrade(leftover));
    }
    // Plain HTTP: wait for the whole body first.
    let Some(body_len) = req.content_length() else {
        return finish_held_error(shard, stream, unsent, 400, "bad content-length").await;
    };
    if body_len > max_body {
        let message = "body larger than max-message-bytes";
        return finish_held_error(shard, stream, unsent, 413, message).await;
    }
    let total = req.head_len + body_len;
    if pending.len() < total {
        return Step::NeedMore;
    }
    let body = &pending[req.head_len..total];
    let admin = shard.borrow().config.admin_listener();
    let mut response = if Some(listener) == admin {
        admin_route(shard, &req, keep_alive)
    } else if listener == 0 {
        route(shard, &req, body, keep_alive, &ws_path, admin.is_some())
    } else {
        super::route::plain(shard, &req, listener, keep_alive)
    };
    if req.method == "HEAD" {
        // RFC 9110 §9.3.2: same headers (content-length included), no content.
        response = http::head_only(response);
    }
    pending.drain(..total);
    unsent.extend_from_slice(&response);
    if !keep_alive {
        let _ = flush_unsent(stream, unsent).await;
        return Step::Finish(Next::Done);
    }
    if unsent.len() >= UNSENT_MAX && !flush_unsent(stream, unsent).await {
        return Step::Finish(Next::Done);
    }
    Step::Continue
}

/// The first route on `listener` whose path glob matches `path`.
pub(super) fn find_route(s: &crate::shard::Shard, listener: usize, path: &str) -> Option<usize> {
    s.config
        .routes
        .iter()
        .enumerate()
        .find(|(i, r)| {
            s.route_listeners.get(*i) == Some(&listener)
                && crate::protocol::glob_match(r.path.as_bytes(), path.as_bytes())
        })
        .map(|(i, _)| i)
}

pub(super) async fn finish_error(
    shard: &ShardRef,
    stream: &TcpStream,
    status: u16,
    message: &str,
) -> Step {
    shard.borrow().stats().http_errors.inc();
    let _ = stream
        .write_all(http::json_error(status, message, false))
        .await;
    Step::Finish(Next::Done)
}

/// [`finish_error`] on a connection holding answers: they go first, in the same write.
async fn finish_held_error(
    shard: &ShardRef,
    stream: &TcpStream,
    unsent: &mut Vec<u8>,
    status: u16,
    message: &str,
) -> Step {
    shard.borrow().stats().http_errors.inc();
    unsent.extend_from_slice(&http::json_error(status, message, false));
    let _ = flush_unsent(stream, unsent).await;
    Step::Finish(Next::Done)
}

/// `/healthz` and `/metrics`, on the native listener or on `--admin-listen`; `None` for any
/// other request.
fn admin_answer(shard: &ShardRef, req: &http::Request<'_>, keep_alive: bool) -> Option<Bytes> {
    let ok = |ct: &str, body: &[u8]| http::response(200, ct, body, keep_alive);
    match (req.method, req.path) {
        ("GET" | "HEAD", "/healthz") => {
            // Degraded (Redis down) still answers 200: clients stay connected and a liveness
            // probe must not restart the gateway; the body says what is wrong.
            let body: &[u8] = if shard.borrow().metrics().degraded() {
                b"{\"status\":\"degraded\",\"redis\":\"down\"}"
            } else {
                b"{\"status\":\"ok\"}"
            };
            Some(ok("application/json", body))
        }
        ("GET" | "HEAD", "/metrics") => {
            let text = shard.borrow().metrics().render();
            Some(ok("text/plain; version=0.0.4", text.as_bytes()))
        }
        _ => None,
    }
}

/// The `--admin-listen` listener: `/healthz` and `/metrics` only.
fn admin_route(shard: &ShardRef, req: &http::Request<'_>, keep_alive: bool) -> Bytes {
    if let Some(answer) = admin_answer(shard, req, keep_alive) {
        return answer;
    }
    shard.borrow().stats().http_errors.inc();
    match req.path {
        "/healthz" | "/metrics" => http::json_error(405, "method not allowed", keep_alive),
        _ => http::json_error(404, "not found", keep_alive),
    }
}

/// Answers a plain HTTP request. With `--admin-listen` (`admin_moved`), `/healthz` and
/// `/metrics` are not served here (404).
fn route(
    shard: &ShardRef,
    req: &http::Request<'_>,
    body: &[u8],
    keep_alive: bool,
    ws_path: &str,
    admin_moved: bool,
) -> Bytes {
    let ok = |ct: &str, body: &[u8]| http::response(200, ct, body, keep_alive);
    if !admin_moved && let Some(answer) = admin_answer(shard, req, keep_alive) {
        return answer;
    }
    let status = match (req.method, req.path) {
        (_, "/healthz" | "/metrics") if admin_moved => 404,
        ("GET" | "HEAD", "/") => {
            let page = http::demo_page(ws_path);
            return ok("text/html; charset=utf-8", page.as_bytes());
        }
        ("POST", "/api/publish") => return publish_route(shard, req, body, keep_alive),
        (_, p) if p == ws_path => 426,
        (_, "/healthz" | "/metrics" | "/" | "/api/publish") => 405,
        _ => 404,
    };
    shard.borrow().stats().http_errors.inc();
    let message = match status {
        426 => "this path speaks WebSocket: send an upgrade request",
        405 => "method not allowed",
        _ => "not found",
    };
    http::json_error(status, message, keep_alive)
}

fn publish_route(
    shard: &ShardRef,
    req: &http::Request<'_>,
    body: &[u8],
    keep_alive: bool,
) -> Bytes {
    let mut s = shard.borrow_mut();
    let grants = match publish_credential(&s, req) {
        Ok(grants) => grants,
        Err(message) => {
            s.stats().http_errors.inc();
            return http::json_error(401, message, keep_alive);
        }
    };
    let parsed = match publish::parse_body(body) {
        Ok(p) => p,
        Err(message) => {
            s.stats().http_errors.inc();
            return http::json_error(400, &message, keep_alive);
        }
    };
    if let Some(grants) = grants {
        let channel = String::from_utf8_lossy(&parsed.channel);
        if !grants.allows_publish(&channel) {
            s.stats().http_errors.inc();
            s.stats().auth.forbidden.inc();
            let message = format!("forbidden: the token may not publish to {channel:?}");
            return http::json_error(403, &message, keep_alive);
        }
    }
    if s.publish(parsed.channel, parsed.payload) {
        http::response(200, "application/json", b"{\"ok\":true}", keep_alive)
    } else {
        s.stats().http_errors.inc();
        http::json_error(
            503,
            "cannot publish now (Redis down or hub overloaded); retry",
            keep_alive,
        )
    }
}

/// Who may publish: `Ok(None)` for anyone (no `--api-key`, `--auth none`) or the API key;
/// `Ok(Some(grants))` for a JWT, whose `publish` globs must then cover the channel; `Err` (401)
/// with the message when a credential is needed and none is valid. A refused JWT is counted in
/// `ringcast_auth_refused_total`.
fn publish_credential(
    s: &crate::shard::Shard,
    req: &http::Request<'_>,
) -> Result<Option<crate::auth::Grants>, &'static str> {
    let header = req.header("authorization");
    if let Some(key) = s.config.api_key.as_deref()
        && publish::authorized(header, key)
    {
        return Ok(None);
    }
    let required = s.config.api_key.is_some() || s.config.access.mode == crate::auth::AuthMode::Jwt;
    if !required {
        return Ok(None);
    }
    match header.and_then(crate::auth::bearer) {
        Some(token) if s.verifier.is_some() => s
            .verify_token(token)
            .map(Some)
            .map_err(crate::auth::Refusal::message),
        Some(_) => Err("missing or wrong bearer key"),
        None => {
            s.stats().auth.refused[crate::auth::Refusal::Missing.index()].inc();
            Err("missing or wrong bearer key or token")
        }
    }
}

/// Reads frames until the close handshake, an error, EOF, or a shutdown of the socket.
///
/// `codec` is created on the first byte from the client and dropped again whenever its input
/// ends on a message boundary: an idle connection, whether it never spoke (subscribed by URL)
/// or spoke and went quiet, then holds neither the codec nor its buffers. `discard`: after we
/// fail the connection, input is read and discarded until the peer leaves. `stopped`: the bytes
/// that came with the upgrade already ended reading.
#[allow(clippy::manual_async_fn)] // an async fn would keep its arguments twice (see serve_from)
fn read_loop<'a>(
    shard: &'a ShardRef,
    key: ConnKey,
    stream: &'a TcpStream,
    mut codec: LazyCodec,
    mut discard: bool,
    stopped: bool,
) -> impl Future<Output = bool> + 'a {
    async move {
        if stopped {
            return false;
        }
        loop {
            if codec.0.is_none() && !discard {
                // At rest: wait for input, or end for the connection to doze (`websocket`).
                let dozing = std::future::poll_fn(|cx| {
                    if doze_now(shard, key) {
                        // The write loop may have been polled already this round: again.
                        cx.waker().wake_by_ref();
                        return Poll::Ready(true);
                    }
                    stream.poll_readable(cx).map(|()| false)
                })
                .await;
                if dozing {
                    return true;
                }
            }
            let mut on_data = |data: &[u8]| on_input(shard, key, &mut codec, data, &mut discard);
            match stream.read_available(&mut on_data).await {
                ReadOutcome::Drained => {}
                ReadOutcome::Stopped => return false,
                ReadOutcome::Eof => break,
            }
        }
        // EOF or reset: the peer is gone. Nothing more can be delivered.
        shard.borrow_mut().close_quietly(key, None);
        false
    }
}

/// The WebSocket codec of one connection, made on first use and dropped when at rest.
#[derive(Default)]
struct LazyCodec(Option<Box<Codec>>);

impl LazyCodec {
    /// The codec, made now if there is none (`max`: the largest message it accepts).
    fn get(&mut self, max: usize) -> &mut Codec {
        self.0.get_or_insert_with(|| Box::new(Codec::new(max)))
    }

    /// Drops the codec when a new one would do the same (see [`Codec::at_rest`]).
    fn release_at_rest(&mut self) {
        if self.0.as_ref().is_some_and(|c| c.at_rest()) {
            self.0 = None;
        }
    }
}

/// Feeds input to the codec and acts on every complete message. False when reading should stop.
fn on_input(
    shard: &ShardRef,
    key: ConnKey,
    lazy: &mut LazyCodec,
    data: &[u8],
    discard: &mut bool,
) -> bool {
    let mut s = shard.borrow_mut();
    s.stats().bytes_in.add(data.len() as u64);
    let Some(conn) = s.conns.get_mut(key) else {
        return false;
    };
    conn.doze = conn.doze.on_activity();
    let kind = conn.kind;
    let open = conn.is_open();
    let profile = conn
        .route()
        .and_then(|r| s.config.routes.get(r))
        .map(|r| (r.profile, r.heartbeat));
    // With protocol pings any input answers them; on JSON-heartbeat routes only a pong (or
    // init) does.
    if profile.is_none_or(|(_, hb)| hb == Heartbeat::Ws)
        && let Some(conn) = s.conns.get_mut(key)
    {
        conn.answered();
    }
    if *discard {
        return true;
    }
    let codec = lazy.get(s.config.max_message_bytes);
    codec.handle_input(data);
    loop {
        let msg = match codec.poll_message() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                s.stats().protocol_closes.inc();
                let peer = s.conns.get(key).map(|c| c.peer);
                tracing::debug!(conn = key, peer = ?peer, error = %e, "closing connection for bad input");
                s.close(key, e.close_code(), CLOSE_GRACE);
                *discard = true;
                return true;
            }
        };
        let reply = codec.poll_output();
        match msg {
            Incoming::Close => {
                // The peer closed: queue tungstenite's close reply (unless we are the one
                // closing, in which case this was the answer to our close) and stop reading.
                s.close_quietly(key, if open { reply } else { None });
                return false;
            }
            Incoming::Control => {
                if let Some(r) = reply.filter(|_| open) {
                    s.send_control(key, r);
                }
            }
            Incoming::Text(t) | Incoming::Binary(t) if !open => drop(t),
            Incoming::Text(t) => {
                s.stats().messages_in.inc();
                match (kind, profile) {
                    (ConnKind::Echo, _) => s.send(key, frame::encode(OpCode::Text, &t)),
                    // Engine.IO packets of a session's WebSocket.
                    (ConnKind::Eio { session, .. }, _) => {
                        s.eio_ws_text(key, session as usize, &t, Instant::now());
                    }
                    (_, None | Some((Profile::Native, _))) => native::handle_text(&mut s, key, &t),
                    (_, Some((Profile::Preflight | Profile::Status, _))) => {
                        // `init` and `pong` are life; anything else, bad JSON included, is
                        // ignored as the originals did.
                        if crate::profile::classify(&t) == crate::profile::ClientMessage::Alive
                            && let Some(conn) = s.conns.get_mut(key)
                        {
                            conn.answered();
                        }
                    }
                    (
                        _,
                        Some((
                            Profile::Bess | Profile::Ess | Profile::EssApi | Profile::SocketIo,
                            _,
                        )),
                    ) => {}
                }
            }
            Incoming::Binary(b) => {
                s.stats().messages_in.inc();
                match (kind, profile) {
                    (ConnKind::Echo, _) => s.send(key, frame::encode(OpCode::Binary, &b)),
                    (_, Some((p, _))) if p != Profile::Native => {}
                    _ => s.send_text(
                        key,
                        &crate::protocol::render_error(
                            None,
                            crate::protocol::ErrorCode::BadJson,
                            "binary messages are not commands; send JSON text",
                        ),
                    ),
                }
            }
        }
    }
    // Once closing, the codec's close-handshake state matters: keep it.
    if open {
        lazy.release_at_rest();
    }
    true
}

/// Flushes the outbox with one `writev` per batch until the connection is closing and drained.
#[allow(clippy::manual_async_fn)] // an async fn would keep its arguments twice (see serve_from)
fn write_loop<'a>(
    shard: &'a ShardRef,
    key: ConnKey,
    stream: &'a TcpStream,
) -> impl Future<Output = ()> + 'a {
    async move {
        loop {
            // Wait for frames (or the close). The waker goes in the connection's slot, which
            // `Conn::wake_writer` empties; a `Notified` future here would put its waiter node in
            // every connection's task.
            let corked = {
                let mut waited = false;
                let present = std::future::poll_fn(|cx| {
                    let mut s = shard.borrow_mut();
                    let Some(conn) = s.conns.get_mut(key) else {
                        return Poll::Ready(false);
                    };
                    // The read loop ended for the connection to doze (`websocket`).
                    if conn.doze == super::dormant::Doze::Dozing {
                        return Poll::Ready(false);
                    }
                    if conn.outbox.is_empty()
                        && !conn.outbox.is_closed()
                        && conn.state == ConnState::Open
                    {
                        waited = true;
                        conn.writer_waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    Poll::Ready(true)
                })
                .await;
                if !present {
                    return;
                }
                waited && shard.borrow().cork
            };
            // Cork under load: let the tasks already scheduled on this shard (the inbox drain,
            // other requests) run once more before flushing, so one writev carries every frame
            // they queue; this multiplies frames per write. A lone event is written at once.
            if corked {
                tokio::task::yield_now().await;
            }
            // The batch vector lives in the outbox between writes (made on the first write,
            // returned by the sweep once the connection is quiet), not in this task. `probe`: a
            // sampled event is in this batch, its read time, for the write stage timings.
            let (batch, probe) = {
                let mut s = shard.borrow_mut();
                let Some(conn) = s.conns.get_mut(key) else {
                    return;
                };
                if conn.outbox.is_empty() {
                    if conn.outbox.is_closed() || conn.state != ConnState::Open {
                        // Everything, including our close frame, is written: half-close. The
                        // read loop ends at the peer's close or EOF, or the sweep shuts the
                        // socket down.
                        drop(s);
                        half_close(stream);
                        return;
                    }
                    // Emptied while corked (a slow-consumer clear): wait again.
                    continue;
                }
                conn.doze = conn.doze.on_activity();
                let mut batch = Vec::new();
                conn.outbox.take_batch(&mut batch);
                let probe = conn.probe.take();
                if let Some(stamp) = probe {
                    s.stats().stages.write_submit.observe(stamp.elapsed());
                }
                (batch, probe)
            };
            // Boxed: the in-flight write's state (about 130 bytes, and the probe) then lives
            // only while a write is in flight, instead of in every idle connection's task. One
            // allocation per writev, next to a syscall-sized operation.
            let ((res, mut batch), probe) =
                Box::pin(async move { (stream.writev(batch).await, probe) }).await;
            let mut s = shard.borrow_mut();
            match res {
                Ok(n) => {
                    s.stats().bytes_out.add(n as u64);
                    s.stats().writes.inc();
                    if let Some(stamp) = probe {
                        s.stats().stages.write_complete.observe(stamp.elapsed());
                    }
                    if let Some(conn) = s.conns.get_mut(key) {
                        conn.outbox.complete(&mut batch, n);
                        if conn.outbox.is_empty() && !s.replays.is_empty() {
                            s.replay_written(key);
                        }
                    }
                }
                Err(_) => {
                    batch.clear();
                    s.close_quietly(key, None);
                    if let Some(conn) = s.conns.get(key) {
                        conn.socket.shutdown();
                    }
                    return;
                }
            }
        }
    }
}

/// Sends FIN after the last frame; reads continue until the peer closes too.
fn half_close(stream: &TcpStream) {
    stream.shutdown_write();
}

#[cfg(test)]
mod tests {
    /// A busy WebSocket's task; a quiet one gives it up (`conn::dormant`), so this is paid by
    /// the connections that are busy, and during the connect burst. Regressions here show up
    /// as RSS per used connection and in the connect burst's peak.
    #[test]
    fn an_idle_connection_task_stays_small() {
        let rt = crate::rt::Runtime::new().expect("io_uring");
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let l = crate::rt::TcpListener::from_std(listener).expect("listener");
            let client = std::thread::spawn(move || std::net::TcpStream::connect(addr));
            let (stream, _) = l.accept().await.expect("accept");
            let (tx, _rx) = crossbeam_channel::bounded(4);
            let shard = std::rc::Rc::new(std::cell::RefCell::new(crate::shard::Shard::new(
                crate::router::ShardId(0),
                std::sync::Arc::new(crate::config::Config::default()),
                tx,
                std::sync::Arc::new(crate::metrics::Metrics::new(1)),
            )));
            let mut count = 0;
            let mut on_data = |_: &[u8]| {
                count += 1;
                true
            };
            let read = std::mem::size_of_val(&stream.read_available(&mut on_data));
            let codec = super::LazyCodec::default();
            let reader =
                std::mem::size_of_val(&super::read_loop(&shard, 0, &stream, codec, false, false));
            let writer = std::mem::size_of_val(&super::write_loop(&shard, 0, &stream));
            let http = std::mem::size_of_val(&super::serve(shard.clone(), 0, stream));
            let l2 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr2 = l2.local_addr().expect("addr");
            let client2 = std::thread::spawn(move || std::net::TcpStream::connect(addr2));
            let (std_stream, _) = l2.accept().expect("accept");
            let stream = crate::rt::TcpStream::from_std(std_stream).expect("stream");
            let serve = std::mem::size_of_val(&super::resume(shard.clone(), 0, stream));
            println!("read_available {read}, read loop {reader}, write loop {writer}, HTTP phase {http}, WebSocket task {serve}");
            drop(client2.join());
            // Measured: 64, 216, 176, 560 bytes (was 216, 664, 304, 1136 before the lazy codec,
            // `poll_read_ready` and the boxed writev); on 2026-12-04, with the batch vector kept
            // in the outbox, 64, 216, 168, 616; then 64, 144, 64, 400 with the write loop's
            // waker slot instead of a `Notified`, and the three futures written as functions
            // around `async move` blocks (debug and release alike); then 64, 136, 64 and a
            // WebSocket task of 344 (HTTP phase 120) once the upgrade hands the socket to a task
            // of its own, which a quiet connection gives up (`conn::dormant`). The task's
            // allocation is this plus 104 bytes, in 128-byte steps (tokio's task cell is
            // 128-aligned): 512 bytes up to a 408-byte future, 640 up to 536, 768 up to 664.
            // The next step down (a 384-byte cell, for a future within 280 bytes: reached and
            // measured on 2026-12-04) buys nothing under mimalloc: its pages of non-power-of-two
            // blocks are not 128-aligned, so a 384-byte cell at 128-byte alignment is served
            // from the 512-byte bin.
            assert!(read <= 96, "read_available future: {read} bytes");
            assert!(reader <= 160, "read loop: {reader} bytes");
            assert!(writer <= 80, "write loop: {writer} bytes");
            assert!(serve <= 408, "WebSocket task: {serve} bytes");
            drop(client.join());
        });
    }
}
