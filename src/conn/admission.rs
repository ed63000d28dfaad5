//! The token check at a WebSocket upgrade: a listener with `auth = jwt` admits a request only
//! with a valid token ([`crate::auth`]), and answers HTTP 401 otherwise, with one log line that
//! names the reason (never the token) and a count in `ringcast_auth_refused_total{reason=…}`.

use bytes::Bytes;

use super::io::{Step, finish_error};
use crate::auth::{Access, AuthMode, ConnAuth, Refusal};
use crate::http;
use crate::router::TopicKind;
use crate::rt::TcpStream;
use crate::shard::ShardRef;

/// A request the listener admits.
pub(super) struct Admitted {
    /// The token's grants and expiry; `None` for an anonymous client.
    pub auth: Option<Box<ConnAuth>>,
    /// The `ringcast.token.<jwt>` subprotocol to echo in the 101, when the token came that way.
    pub subprotocol: Option<String>,
}

impl Admitted {
    /// Whether this client may subscribe to (or watch) `name` on a listener with `access`.
    pub fn allows(&self, access: &Access, kind: TopicKind, name: &str) -> bool {
        match &self.auth {
            Some(auth) => auth.grants.allows(kind, name),
            None => access.allows(kind, name),
        }
    }

    /// The 101 response, with the token's subprotocol echoed when there is one.
    pub fn response(&self, response: Bytes) -> Bytes {
        match &self.subprotocol {
            Some(p) => crate::ws::handshake::with_subprotocol(response, p),
            None => response,
        }
    }

    /// Hands the grants to the connection, once it is upgraded.
    pub fn install(self, shard: &ShardRef, key: crate::router::table::ConnKey) {
        if let Some(conn) = shard.borrow_mut().conns.get_mut(key) {
            conn.auth = self.auth;
        }
    }
}

/// Checks `req` against `access`: `Ok` to go on with the upgrade, or the finished 401 step.
pub(super) async fn admit(
    shard: &ShardRef,
    stream: &TcpStream,
    req: &http::Request<'_>,
    access: &Access,
) -> Result<Admitted, Step> {
    if access.mode == AuthMode::None {
        // No token is checked here, but a browser that offered the token subprotocol fails
        // the connection unless the 101 names it, so it is echoed all the same.
        let subprotocol = crate::auth::offered_subprotocol(req).map(|(_, p)| p.to_owned());
        return Ok(Admitted {
            auth: None,
            subprotocol,
        });
    }
    let presented = crate::auth::token_of(req);
    let verdict = match &presented {
        None => {
            shard.borrow().stats().auth.refused[Refusal::Missing.index()].inc();
            Err(Refusal::Missing)
        }
        Some(p) => shard.borrow().verify_token(&p.token),
    };
    match verdict {
        Ok(grants) => {
            let expires = grants.expires_at(std::time::Instant::now(), crate::auth::unix_now());
            Ok(Admitted {
                auth: Some(Box::new(ConnAuth { grants, expires })),
                subprotocol: presented.and_then(|p| p.subprotocol),
            })
        }
        Err(r) => {
            tracing::info!(
                path = req.path,
                reason = r.as_str(),
                "websocket refused: {}",
                r.message()
            );
            Err(finish_error(shard, stream, 401, r.message()).await)
        }
    }
}

/// Refuses an upgrade whose implicit subscription the grants do not cover: HTTP 403, one log
/// line naming the name, counted in `ringcast_auth_forbidden_total`.
pub(super) async fn forbid(shard: &ShardRef, stream: &TcpStream, what: &str, name: &str) -> Step {
    shard.borrow().stats().auth.forbidden.inc();
    tracing::info!("websocket refused: not allowed to {what} {name:?}");
    finish_error(
        shard,
        stream,
        403,
        &format!("forbidden: not allowed to {what} {name:?}"),
    )
    .await
}
