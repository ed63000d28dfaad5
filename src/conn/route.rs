//! The HTTP phase of connections on route listeners: the WebSocket upgrade into a profile, and
//! the few plain HTTP answers those listeners give (`/health`).
//!
//! What each profile does at the upgrade (COMPAT.md rows P1–P4, S1–S2, W1–W2):
//! - **preflight**: the run id is the last percent-decoded path segment; the connection watches
//!   that key of the route's source, rendered as a checklist, and the current checklist is
//!   its first frame. `…/health` answers the text `OK` and closes.
//! - **status**: the last segment must be `<runid>:<channel>` (exactly one `:`); the
//!   connection subscribes to that channel. Anything else is accepted and closed at once
//!   (1000, with the reason [`STATUS_PATH_REASON`]), as the original did. `…/health` answers
//!   `OK` and closes.
//! - **bess**: the connection subscribes to `battery:*:data` and gets the snapshot of every
//!   battery first (its updates are held until the snapshot arrives).
//! - **native**: the native protocol, with `?subscribe=` and `?format=raw`.
//!
//! A route with `auth = "jwt"` admits an upgrade only with a valid token (HTTP 401), and every
//! route refuses (HTTP 403) an upgrade whose implied subscription (the Preflight run key, the
//! Status channel, the BESS pattern) its grants or allow lists do not cover; see
//! [`super::admission`]. Health checks need no token.

use bytes::Bytes;

use super::ConnKind;
use super::io::{Next, Step, finish_error};
use super::native;
use crate::config::Profile;
use crate::http;
use crate::profile;
use crate::protocol::CloseCode;
use crate::router::table::ConnKey;
use crate::router::{Format, TopicKind};
use crate::rt::TcpStream;
use crate::shard::{CLOSE_GRACE, ShardRef};
use crate::ws::frame::{self, OpCode};
use crate::ws::handshake;

/// The close reason for a Status path whose last segment is not `<runid>:<channel>`. The code is
/// 1000 (the original closed such sockets normally); [`CloseCode::Normal`]'s generic reason
/// would not tell the client what was wrong with its URL.
pub const STATUS_PATH_REASON: &str = "status path must end in <runid>:<channel>";

/// What the upgrade leads to.
enum Action {
    /// Send `OK` and close (health checks over WebSocket).
    Health,
    /// Watch this key (Preflight run id).
    Watch(Bytes),
    /// Subscribe to this channel (Status).
    Channel(Bytes),
    /// BESS: battery pattern plus snapshot.
    Bess,
    /// Native protocol.
    Native,
    /// Accept and close at once (a malformed Status path).
    CloseNow,
}

/// Upgrades a request that matched route `index`.
pub(super) async fn upgrade(
    shard: &ShardRef,
    key: ConnKey,
    stream: &TcpStream,
    req: &http::Request<'_>,
    index: usize,
    pending: &[u8],
) -> Step {
    let config = shard.borrow().config.clone();
    let Some(route) = config.routes.get(index) else {
        return finish_error(shard, stream, 500, "route vanished").await;
    };
    if !route.origins.is_empty()
        && let Some(origin) = req.header("origin")
        && !route.origins.iter().any(|o| o.as_bytes() == origin)
    {
        return finish_error(shard, stream, 403, "origin not allowed").await;
    }
    let segment = profile::last_segment(req.path);
    let action = match route.profile {
        Profile::Preflight | Profile::Status if segment == b"health" => Action::Health,
        Profile::Preflight if segment.is_empty() => {
            return finish_error(shard, stream, 404, "no run id in the path").await;
        }
        Profile::Preflight => Action::Watch(Bytes::from(segment)),
        Profile::Status if segment.iter().filter(|&&b| b == b':').count() == 1 => {
            Action::Channel(Bytes::from(segment))
        }
        Profile::Status => Action::CloseNow,
        Profile::Bess => Action::Bess,
        Profile::Ess => return super::ess::upgrade(shard, key, stream, req, index, pending).await,
        Profile::Native => Action::Native,
        // `io::respond` sends every request on such routes to `conn::ess_api` or `conn::eio`
        // before it looks at upgrades, so this is not reached.
        Profile::EssApi | Profile::SocketIo => {
            return finish_error(shard, stream, 404, "no WebSocket route at this path").await;
        }
    };
    // Health checks stay open: a probe carries no token.
    let admitted = if let Action::Health = action {
        super::admission::Admitted {
            auth: None,
            subprotocol: None,
        }
    } else {
        match super::admission::admit(shard, stream, req, &route.access).await {
            Ok(a) => a,
            Err(step) => return step,
        }
    };
    // The subscription the URL implies must be allowed too (403 otherwise).
    let implied = match &action {
        Action::Watch(run) => Some((TopicKind::Key, run.clone(), "watch")),
        Action::Channel(channel) => Some((TopicKind::Channel, channel.clone(), "subscribe to")),
        Action::Bess => Some((
            TopicKind::Pattern,
            Bytes::from_static(profile::bess::CHANNEL_PATTERN.as_bytes()),
            "subscribe to",
        )),
        Action::Health | Action::Native | Action::CloseNow => None,
    };
    if let Some((kind, name, what)) = implied {
        let name = String::from_utf8_lossy(&name);
        if !admitted.allows(&route.access, kind, &name) {
            return super::admission::forbid(shard, stream, what, &name).await;
        }
    }
    let response = match handshake::accept(req) {
        Ok(r) => admitted.response(r),
        Err(e) => return finish_error(shard, stream, 400, &e.to_string()).await,
    };
    let format = match route.profile {
        Profile::Preflight => Format::Preflight(route.preflight),
        Profile::Status => Format::Status,
        Profile::Bess => Format::Bess,
        Profile::Native if req.query_param("format").is_some_and(|f| f == "raw") => Format::Raw,
        Profile::Native | Profile::Ess | Profile::EssApi | Profile::SocketIo => Format::Json,
    };
    let kind = ConnKind::Route {
        route: u16::try_from(index).unwrap_or(u16::MAX),
        format,
    };
    let leftover = pending[req.head_len..].to_vec();
    let mut out = response.to_vec();
    let refused = {
        let mut s = shard.borrow_mut();
        // Counted as a WebSocket before anything is written to it.
        s.upgraded(key, kind);
        if let Some(conn) = s.conns.get_mut(key) {
            conn.outbox.set_cap(route.max_outbox_bytes);
            conn.auth = admitted.auth;
        }
        match &action {
            Action::Health => {
                out.extend_from_slice(&frame::encode(OpCode::Text, b"OK"));
                false
            }
            Action::Watch(run) => {
                let source = s.source_of(Some(index), run, true);
                let refused = s.subscribe_in(key, source, TopicKind::Key, run).is_err();
                // The cached checklist if another client watches the run, else the watch's
                // first read: either way it is the first frame.
                s.request_snapshot(key, run.clone(), true);
                refused
            }
            Action::Channel(channel) => {
                let source = s.source_of(Some(index), channel, false);
                s.subscribe_in(key, source, TopicKind::Channel, channel)
                    .is_err()
            }
            Action::Bess => {
                let pattern = Bytes::from_static(profile::bess::CHANNEL_PATTERN.as_bytes());
                let source = s.source_of(Some(index), &pattern, false);
                let refused = s
                    .subscribe_in(key, source, TopicKind::Pattern, &pattern)
                    .is_err();
                s.request_snapshot(
                    key,
                    Bytes::from_static(profile::bess::IDS_KEY.as_bytes()),
                    false,
                );
                refused
            }
            Action::Native => {
                let acks = format == Format::Json;
                if let Some(list) = req.query_param("subscribe") {
                    native::subscribe_from_url(
                        &mut s,
                        key,
                        TopicKind::Channel,
                        &list,
                        acks,
                        &mut out,
                    );
                }
                if let Some(list) = req.query_param("watch") {
                    native::subscribe_from_url(&mut s, key, TopicKind::Key, &list, acks, &mut out);
                }
                false
            }
            Action::CloseNow => false,
        }
    };
    if stream.write_all(Bytes::from(out)).await.is_err() {
        return Step::Finish(Next::Done);
    }
    if let Action::CloseNow = action {
        let close = frame::close(CloseCode::Normal.code(), STATUS_PATH_REASON);
        shard.borrow_mut().close_quietly(key, Some(close));
        return Step::Finish(Next::Upgrade(leftover));
    }
    let code = match action {
        Action::Health => Some(CloseCode::Normal),
        _ if refused => Some(CloseCode::PolicyViolation),
        _ => None,
    };
    if let Some(code) = code {
        shard.borrow_mut().close(key, code, CLOSE_GRACE);
    }
    Step::Finish(Next::Upgrade(leftover))
}

/// Plain HTTP on a route listener: `GET /health` (any prefix) answers `OK`; a path some route
/// serves answers 426; anything else 404.
pub(super) fn plain(
    shard: &ShardRef,
    req: &http::Request<'_>,
    listener: usize,
    keep_alive: bool,
) -> Bytes {
    let health = profile::last_segment(req.path) == b"health";
    if health && matches!(req.method, "GET" | "HEAD") {
        return http::response(200, "text/plain; charset=utf-8", b"OK", keep_alive);
    }
    shard.borrow().stats().http_errors.inc();
    let routed = super::io::find_route(&shard.borrow(), listener, req.path).is_some();
    if routed {
        return http::json_error(
            426,
            "this path speaks WebSocket: send an upgrade request",
            keep_alive,
        );
    }
    http::json_error(404, "not found", keep_alive)
}
