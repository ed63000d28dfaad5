//! The Squonk2 ESS internal REST API on an `ess_api` route: the shard-side glue between a
//! request, the pure [`crate::http::ess_api`] and the route's event-stream registry.
//!
//! Owner: the shard thread, inside a connection's task ([`super::io`]'s HTTP phase). The
//! registry answers on a oneshot ([`crate::store::registry::Pending`]); every `.await` here
//! happens with no borrow of the shard held (each borrow is its own `let` statement).
//!
//! Invariants:
//! - a body over [`http::ess_api::MAX_BODY_BYTES`] (or `max-message-bytes`, if lower) is
//!   answered 413 before it is read, and the connection is closed;
//! - a full registry queue is a 503 at once, counted in `registry_busy`; every answer of 400 or
//!   more counts in `http_errors`;
//! - a DELETE that removed a stream calls [`on_stream_deleted`] with its routing key before
//!   the 204 is sent.

use bytes::Bytes;

use crate::config::Profile;
use crate::http::{self, ess_api as api};
use crate::shard::{Shard, ShardRef};

/// What [`respond`] decided.
pub(super) enum Outcome {
    /// The body is not all here yet.
    NeedMore,
    /// Write `response`, drop `used` bytes of input, and close unless `keep_alive`.
    Reply {
        response: Bytes,
        used: usize,
        keep_alive: bool,
    },
}

/// The `ess_api` route on `listener` whose path glob matches `path`, if that is the route the
/// request goes to.
pub(super) fn route_of(shard: &ShardRef, listener: usize, path: &str) -> Option<usize> {
    if listener == 0 {
        return None;
    }
    let s = shard.borrow();
    let index = super::io::find_route(&s, listener, path)?;
    let route = s.config.routes.get(index)?;
    (route.profile == Profile::EssApi).then_some(index)
}

/// Answers one request on `ess_api` route `index`; `pending` holds the head and what followed.
pub(super) async fn respond(
    shard: &ShardRef,
    req: &http::Request<'_>,
    pending: &[u8],
    index: usize,
    max_body: usize,
    keep_alive: bool,
) -> Outcome {
    let cap = api::MAX_BODY_BYTES.min(max_body);
    let refuse = |answer: api::ApiResponse| {
        shard.borrow().stats().http_errors.inc();
        Outcome::Reply {
            response: answer.render(false),
            used: pending.len(),
            keep_alive: false,
        }
    };
    let body_len = match req.content_length() {
        Some(n) if n <= cap => n,
        Some(_) => return refuse(api::too_large_response()),
        None => return refuse(bad_request()),
    };
    let total = req.head_len + body_len;
    let Some(body) = pending.get(req.head_len..total) else {
        return Outcome::NeedMore;
    };
    let call = api::ApiRequest {
        method: req.method,
        path: req.path,
        query: req.query,
        host: req.header("host"),
        body,
    };
    let answer = match api::parse(&call) {
        api::Parsed::Answer(answer) => answer,
        api::Parsed::Call(call) => ask(shard, index, call).await,
    };
    if answer.status >= 400 {
        shard.borrow().stats().http_errors.inc();
    }
    let mut response = answer.render(keep_alive);
    if req.method == "HEAD" {
        response = http::head_only(response);
    }
    Outcome::Reply {
        response,
        used: total,
        keep_alive,
    }
}

/// Runs `call` against route `index`'s registry.
async fn ask(shard: &ShardRef, index: usize, call: api::ApiCall) -> api::ApiResponse {
    let route = {
        let s = shard.borrow();
        let registry = s.registry(index).cloned();
        let ingress = s.config.routes.get(index).and_then(|r| r.ingress.clone());
        registry.zip(ingress)
    };
    // Both are set for every ess_api route at start-up (`server::run`); a route without them
    // would be a bug of ours, answered 500 rather than a panic.
    let Some((registry, ingress)) = route else {
        return api::failed_response(crate::store::registry::RegistryError::Stopped);
    };
    let result = match call {
        api::ApiCall::Version => return api::version_response(),
        api::ApiCall::Create { routing_key } => match registry.create(routing_key) {
            Ok(pending) => pending.await.map(|s| api::created_response(&s, &ingress)),
            Err(e) => Err(e),
        },
        api::ApiCall::List => match registry.list() {
            Ok(pending) => pending.await.map(|all| api::list_response(&all, &ingress)),
            Err(e) => Err(e),
        },
        api::ApiCall::Delete { id } => match registry.delete(id) {
            Ok(pending) => pending.await.map(|key| {
                if let Some(key) = &key {
                    on_stream_deleted(&mut shard.borrow_mut(), key);
                }
                api::deleted_response(id, key.is_some())
            }),
            Err(e) => Err(e),
        },
    };
    result.unwrap_or_else(|e| {
        if e == crate::store::registry::RegistryError::Busy {
            shard.borrow().stats().registry_busy.inc();
        }
        api::failed_response(e)
    })
}

/// 400 for a `content-length` that is not a number.
fn bad_request() -> api::ApiResponse {
    api::ApiResponse {
        status: 400,
        body: br#"{"detail":"Bad Request"}"#.to_vec(),
        location: None,
        allow: None,
    }
}

/// Called on the shard that served the DELETE, once stream `routing_key` is gone from the
/// registry: the original then deleted the stream's memcached key, which told its live
/// WebSocket (on any worker) to stop. Here the replay source ends the consumer of that routing
/// key, whichever shard its socket is on, and that shard closes it (1000 `The stream has been
/// deleted`) at once, not on the next message as the original did. With a Redis lease the
/// source also deletes the stream's lease key, so a socket on another instance closes on its
/// next chunk ([`crate::source::replay_lease`]).
pub fn on_stream_deleted(shard: &mut Shard, routing_key: &str) {
    shard.replay_revoke(routing_key.to_owned());
}
