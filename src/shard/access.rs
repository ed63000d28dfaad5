//! Access control on the shard: which grants govern a connection, the `refresh` command, and
//! the expiry of tokens (run by the sweep).
//!
//! **Thread:** the owning shard's. **Invariant:** a connection with a token is closed (4003) by
//! the first sweep at or after its expiry, unless a `refresh` moved the expiry first; a refresh
//! drops, with a notice, every subscription the new grants no longer allow.

use std::time::Instant;

use super::{CLOSE_GRACE, Shard};
use crate::auth::{Access, ConnAuth, Refusal};
use crate::conn::Conn;
use crate::protocol::{
    AckOp, CloseCode, ErrorCode, RequestId, render_ack, render_error, render_refreshed,
};
use crate::router::TopicKind;
use crate::router::table::ConnKey;

impl Shard {
    /// The access policy of the listener (or route) a connection came in on.
    pub fn access_of(&self, conn: &Conn) -> &Access {
        conn.route()
            .and_then(|r| self.config.routes.get(r))
            .map_or(&self.config.access, |r| &r.access)
    }

    /// Whether connection `key` may subscribe to (or watch) `name`: its token's grants, or its
    /// listener's allow lists when it has no token. Counts a refusal.
    pub fn allowed(&self, key: ConnKey, kind: TopicKind, name: &str) -> bool {
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        let ok = match &conn.auth {
            Some(auth) => auth.grants.allows(kind, name),
            None => self.access_of(conn).allows(kind, name),
        };
        if !ok {
            self.stats().auth.forbidden.inc();
        }
        ok
    }

    /// Verifies `token` now; counts and logs a refusal (never the token).
    pub fn verify_token(&self, token: &str) -> Result<crate::auth::Grants, Refusal> {
        let result = match &self.verifier {
            Some(v) => v.verify(token, crate::auth::unix_now()),
            None => Err(Refusal::Algorithm),
        };
        if let Err(r) = result {
            self.stats().auth.refused[r.index()].inc();
        }
        result
    }

    /// Handles `{"op":"refresh","token":…}`: a valid token for the same subject replaces the
    /// grants and the expiry, and subscriptions the new grants do not allow are dropped with an
    /// `unsubscribed` / `punsubscribed` / `unwatched` notice, sent before the `refreshed` reply.
    pub fn refresh(&mut self, key: ConnKey, token: &str, id: Option<&RequestId>) -> String {
        let refuse = |s: &Shard, message: &str| {
            s.stats().auth.refreshes_refused.inc();
            render_error(id, ErrorCode::Forbidden, message)
        };
        let Some(conn) = self.conns.get(key) else {
            return String::new();
        };
        let Some(old_sub) = conn.auth.as_ref().map(|a| a.grants.sub.clone()) else {
            return refuse(self, "refresh needs a connection made with a token");
        };
        let grants = match self.verify_token(token) {
            Ok(g) => g,
            Err(r) => {
                tracing::info!(conn = key, reason = r.as_str(), "token refresh refused");
                return refuse(self, &format!("refresh refused: {}", r.message()));
            }
        };
        if grants.sub != old_sub {
            return refuse(self, "refresh refused: the token is for another subject");
        }
        let exp = grants.exp.unwrap_or(0);
        let expires = grants.expires_at(Instant::now(), crate::auth::unix_now());
        let revoked: Vec<(TopicKind, String)> = self
            .conns
            .get(key)
            .map(|c| {
                c.subscriptions
                    .iter()
                    .filter_map(|id| self.topics.get(*id))
                    .map(|e| (e.kind(), String::from_utf8_lossy(e.name()).into_owned()))
                    .filter(|(kind, name)| !grants.allows(*kind, name))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(conn) = self.conns.get_mut(key) {
            conn.auth = Some(Box::new(ConnAuth { grants, expires }));
        }
        for (kind, name) in revoked {
            if self.unsubscribe(key, kind, name.as_bytes()) {
                self.stats().auth.revoked.inc();
                let op = match kind {
                    TopicKind::Channel => AckOp::Unsubscribed,
                    TopicKind::Pattern => AckOp::Punsubscribed,
                    TopicKind::Key | TopicKind::KeyPattern => AckOp::Unwatched,
                };
                self.send_text(key, &render_ack(op, &name, None));
            }
        }
        self.stats().auth.refreshes.inc();
        render_refreshed(exp, id)
    }

    /// Closes (4003) every open connection whose token expired by `now`. Called by the sweep.
    pub fn expire_tokens(&mut self, now: Instant) {
        if self.verifier.is_none() {
            // No key, no tokens: nothing can expire.
            return;
        }
        let expired: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_open())
            .filter(|(_, c)| {
                c.auth
                    .as_ref()
                    .and_then(|a| a.expires)
                    .is_some_and(|t| now >= t)
            })
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            self.stats().auth.expired_closes.inc();
            self.close(key, CloseCode::TokenExpired, CLOSE_GRACE);
        }
    }
}
