//! Access control: who may connect, and what a connection may subscribe to, watch or publish.
//!
//! - [`Access`] is one listener's policy (the native listener's from `--auth`,
//!   `--allow-subscribe` and `--allow-watch`; a route's from its `auth`, `allow_subscribe` and
//!   `allow_watch` keys): whether a token is required, and the globs anonymous clients may use.
//! - [`Verifier`] checks a JWT (signature, `exp`, `nbf`, optional `aud`/`iss`) with the
//!   `jsonwebtoken` crate and turns its claims into [`Grants`].
//! - [`Grants`] are the globs one connection may use: `channels` (subscribe), `watch` (keys),
//!   `publish` (the HTTP API). Anonymous clients get the listener's allow lists as grants.
//! - [`token_of`] finds the token of a request: `?token=`, `Authorization: Bearer`, or the
//!   WebSocket subprotocol `ringcast.token.<jwt>`.
//!
//! **Thread:** the [`Verifier`] is built once per shard from the configuration and used only by
//! that shard's thread; [`Grants`] live in their connection's [`crate::conn::Conn`].
//!
//! **Invariants:** a token is never logged or rendered in a reply (errors name the reason only);
//! a connection with a token always has an expiry (`exp` is a required claim), enforced by the
//! shard's sweep (close 4003) unless a `refresh` replaced the token first.

pub mod config;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

pub use config::{Access, AuthMode, JwtKeys};

use crate::protocol::glob_match;
use crate::router::TopicKind;

/// Clock skew tolerated on `nbf` (a token minted by a server whose clock runs a little ahead),
/// in seconds. `exp` gets none: the gateway never serves a connection past its token's expiry.
pub const NBF_LEEWAY_SECS: u64 = 5;

/// The WebSocket subprotocol prefix that carries a token (browsers cannot set headers). The
/// whole subprotocol is echoed back in the 101 response.
pub const SUBPROTOCOL_PREFIX: &str = "ringcast.token.";

/// Why a token (or its absence) was refused. Each has a stable label for
/// `ringcast_auth_refused_total{reason=…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token in the request.
    Missing,
    /// Not a JWT, bad base64 or JSON, or a required claim (`exp`) is missing.
    Malformed,
    /// The header names an algorithm no configured key verifies.
    Algorithm,
    /// The signature does not verify with the configured key.
    Signature,
    /// `exp` is in the past.
    Expired,
    /// `nbf` is in the future (beyond [`NBF_LEEWAY_SECS`]).
    NotYetValid,
    /// `aud` does not name `--jwt-audience`.
    Audience,
    /// `iss` is not `--jwt-issuer`.
    Issuer,
}

impl Refusal {
    /// Every refusal, in metric order.
    pub const ALL: [Refusal; 8] = [
        Refusal::Missing,
        Refusal::Malformed,
        Refusal::Algorithm,
        Refusal::Signature,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::Audience,
        Refusal::Issuer,
    ];

    /// The metric label and log reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Algorithm => "algorithm",
            Refusal::Signature => "signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Audience => "audience",
            Refusal::Issuer => "issuer",
        }
    }

    /// A one-line message for the HTTP body and the log (never the token itself).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "missing token (?token=, Authorization: Bearer, or subprotocol)",
            Refusal::Malformed => "malformed token",
            Refusal::Algorithm => "token algorithm not accepted",
            Refusal::Signature => "bad token signature",
            Refusal::Expired => "token expired",
            Refusal::NotYetValid => "token not valid yet (nbf)",
            Refusal::Audience => "token audience not accepted",
            Refusal::Issuer => "token issuer not accepted",
        }
    }

    /// Index into [`Refusal::ALL`], for per-reason counters.
    pub fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// What one connection (or one publish) may do: glob lists in Redis `PSUBSCRIBE` syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The token's `sub`, for logs and to keep a `refresh` on the same subject.
    pub sub: Option<String>,
    /// Channel globs this connection may subscribe to.
    pub channels: Vec<String>,
    /// Key globs it may watch (and read as a `snapshot`).
    pub watch: Vec<String>,
    /// Channel globs it may publish to through the HTTP API.
    pub publish: Vec<String>,
    /// The token's `exp`, in seconds since the Unix epoch; `None` for anonymous grants.
    pub exp: Option<u64>,
}

impl Grants {
    /// Whether a subscription of `kind` to `name` is allowed.
    pub fn allows(&self, kind: TopicKind, name: &str) -> bool {
        allows(&self.channels, &self.watch, kind, name)
    }

    /// Whether publishing to `channel` is allowed.
    pub fn allows_publish(&self, channel: &str) -> bool {
        self.publish
            .iter()
            .any(|g| glob_match(g.as_bytes(), channel.as_bytes()))
    }

    /// When the token expires, on the shard's monotonic clock; `None` without an `exp`.
    pub fn expires_at(&self, now: Instant, now_unix: u64) -> Option<Instant> {
        self.exp
            .map(|exp| now + Duration::from_secs(exp.saturating_sub(now_unix)))
    }
}

/// Whether a subscription of `kind` to `name` is allowed by channel globs `channels` and key
/// globs `watch`.
///
/// An exact channel or key must match one glob. A pattern (`psubscribe`, or a watched key glob)
/// reaches names nobody can list in advance, so it is allowed only when it is one of the globs
/// itself, or when a glob is a plain prefix followed by `*` (`news:*`, or `*` alone) and the
/// pattern starts with that prefix: every name it can match then starts with the prefix too.
pub fn allows(channels: &[String], watch: &[String], kind: TopicKind, name: &str) -> bool {
    match kind {
        TopicKind::Channel => matches_any(channels, name),
        TopicKind::Key => matches_any(watch, name),
        TopicKind::Pattern => covers_any(channels, name),
        TopicKind::KeyPattern => covers_any(watch, name),
    }
}

fn matches_any(globs: &[String], name: &str) -> bool {
    globs
        .iter()
        .any(|g| glob_match(g.as_bytes(), name.as_bytes()))
}

fn covers_any(globs: &[String], pattern: &str) -> bool {
    globs.iter().any(|g| {
        if g == pattern {
            return true;
        }
        match g.strip_suffix('*') {
            Some(prefix)
                if !prefix
                    .bytes()
                    .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')) =>
            {
                pattern.starts_with(prefix)
            }
            _ => false,
        }
    })
}

/// The token of a request, and whether it came as a subprotocol (which the 101 must echo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The JWT text.
    pub token: String,
    /// The whole subprotocol (`ringcast.token.<jwt>`) when the token came that way.
    pub subprotocol: Option<String>,
}

/// Finds the token of a request: the `Sec-WebSocket-Protocol` entry `ringcast.token.<jwt>`
/// first (a client that offers it must get it back, so it wins), then `?token=`, then
/// `Authorization: Bearer`.
pub fn token_of(req: &crate::http::Request<'_>) -> Option<Presented> {
    if let Some((token, protocol)) = offered_subprotocol(req) {
        return Some(Presented {
            token: token.to_owned(),
            subprotocol: Some(protocol.to_owned()),
        });
    }
    if let Some(token) = req.query_param("token").filter(|t| !t.is_empty()) {
        return Some(Presented {
            token: token.into_owned(),
            subprotocol: None,
        });
    }
    let token = req.header("authorization").and_then(bearer)?;
    Some(Presented {
        token: token.to_owned(),
        subprotocol: None,
    })
}

/// The first `ringcast.token.<jwt>` entry of `Sec-WebSocket-Protocol`: (the token, the whole
/// subprotocol).
pub fn offered_subprotocol<'r>(req: &'r crate::http::Request<'_>) -> Option<(&'r str, &'r str)> {
    let protocols = std::str::from_utf8(req.header("sec-websocket-protocol")?).ok()?;
    protocols.split(',').map(str::trim).find_map(|p| {
        let token = p.strip_prefix(SUBPROTOCOL_PREFIX)?;
        (!token.is_empty()).then_some((token, p))
    })
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The claims ringcast reads; any others are ignored.
#[derive(serde::Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    exp: u64,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    watch: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// Verifies tokens with the configured keys: HMAC with `--jwt-secret` (HS256/384/512), and RSA
/// (RS256) or EC P-256 (ES256) with `--jwt-public-key`.
pub struct Verifier {
    /// One entry per configured key, with the algorithms it verifies.
    keys: Vec<(DecodingKey, Validation)>,
}

impl Verifier {
    /// The verifier for `keys`, or `None` when no key is configured. `Err` names what is wrong
    /// with the public key (never the secret).
    pub fn new(keys: &JwtKeys) -> Result<Option<Verifier>, String> {
        let mut out = Vec::new();
        let validation = |algs: &[Algorithm]| {
            let mut v = Validation::new(algs[0]);
            v.algorithms = algs.to_vec();
            v.leeway = NBF_LEEWAY_SECS;
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp"]);
            if keys.audience.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&keys.audience);
            }
            if !keys.issuer.is_empty() {
                v.set_issuer(&keys.issuer);
            }
            v
        };
        if let Some(secret) = &keys.secret {
            let key = DecodingKey::from_secret(secret.as_bytes())
                .map_err(|e| format!("unusable secret: {e}"))?;
            out.push((
                key,
                validation(&[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]),
            ));
        }
        if let Some(pem) = &keys.public_key_pem {
            let key = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                (k, validation(&[Algorithm::RS256]))
            } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                (k, validation(&[Algorithm::ES256]))
            } else {
                return Err("is not an RSA or EC (P-256) public key in PEM".to_owned());
            };
            out.push(key);
        }
        Ok((!out.is_empty()).then_some(Verifier { keys: out }))
    }

    /// Verifies `token` at `now_unix` and returns its grants.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Grants, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
        let (key, validation) = self
            .keys
            .iter()
            .find(|(_, v)| v.algorithms.contains(&header.alg))
            .ok_or(Refusal::Algorithm)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => Refusal::Signature,
                ErrorKind::ExpiredSignature => Refusal::Expired,
                ErrorKind::ImmatureSignature => Refusal::NotYetValid,
                ErrorKind::InvalidAudience => Refusal::Audience,
                ErrorKind::InvalidIssuer => Refusal::Issuer,
                ErrorKind::InvalidAlgorithm => Refusal::Algorithm,
                _ => Refusal::Malformed,
            })?;
        let claims = data.claims;
        // jsonwebtoken applies its leeway to `exp` too; ringcast does not.
        if claims.exp <= now_unix {
            return Err(Refusal::Expired);
        }
        Ok(Grants {
            sub: claims.sub,
            channels: claims.channels,
            watch: claims.watch,
            publish: claims.publish,
            exp: Some(claims.exp),
        })
    }
}

/// The authorization state of a connection that presented a token.
#[derive(Debug, Clone)]
pub struct ConnAuth {
    /// What the token grants.
    pub grants: Grants,
    /// When the sweep closes the connection (4003) unless a `refresh` moved it.
    pub expires: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn channels_and_keys_match_their_own_globs() {
        let channels = globs(&["news:*", "chat"]);
        let watch = globs(&["run:42"]);
        assert!(allows(&channels, &watch, TopicKind::Channel, "news:a"));
        assert!(allows(&channels, &watch, TopicKind::Channel, "chat"));
        assert!(!allows(&channels, &watch, TopicKind::Channel, "chatter"));
        assert!(!allows(&channels, &watch, TopicKind::Channel, "run:42"));
        assert!(allows(&channels, &watch, TopicKind::Key, "run:42"));
        assert!(!allows(&channels, &watch, TopicKind::Key, "news:a"));
    }

    #[test]
    fn a_pattern_needs_a_glob_that_covers_it() {
        let channels = globs(&["news:*", "a?c", "*"]);
        assert!(covers_any(&channels[..1], "news:*"));
        assert!(covers_any(&channels[..1], "news:sport:*"));
        // `news:?` matches "news:*" as text, but would not cover every channel `news:*` does.
        assert!(!covers_any(&globs(&["news:?"]), "news:*"));
        assert!(!covers_any(&channels[..1], "*"));
        assert!(covers_any(&channels[1..2], "a?c"));
        assert!(!covers_any(&channels[1..2], "a*c"));
        assert!(covers_any(&channels[2..], "anything*"));
    }

    #[test]
    fn bearer_takes_the_scheme_case_insensitively() {
        assert_eq!(bearer(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
    }

    fn hs(secret: &str) -> Verifier {
        let keys = JwtKeys {
            secret: Some(secret.to_owned()),
            ..JwtKeys::default()
        };
        Verifier::new(&keys).expect("valid").expect("configured")
    }

    fn mint(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("key"),
        )
        .expect("sign")
    }

    #[test]
    fn verify_maps_each_failure_to_its_reason() {
        let v = hs("k");
        let now = unix_now();
        let ok = mint(
            "k",
            serde_json::json!({"sub":"u","exp":now+60,"channels":["a*"]}),
        );
        let grants = v.verify(&ok, now).expect("valid");
        assert_eq!(grants.sub.as_deref(), Some("u"));
        assert_eq!(grants.channels, vec!["a*".to_owned()]);
        let wrong = mint("other", serde_json::json!({"exp":now+60}));
        assert_eq!(v.verify(&wrong, now), Err(Refusal::Signature));
        let old = mint("k", serde_json::json!({"exp":now-1}));
        assert_eq!(v.verify(&old, now), Err(Refusal::Expired));
        let later = mint("k", serde_json::json!({"exp":now+60,"nbf":now+60}));
        assert_eq!(v.verify(&later, now), Err(Refusal::NotYetValid));
        let skew = mint("k", serde_json::json!({"exp":now+60,"nbf":now+2}));
        assert!(v.verify(&skew, now).is_ok(), "within the nbf leeway");
        let no_exp = mint("k", serde_json::json!({"sub":"u"}));
        assert_eq!(v.verify(&no_exp, now), Err(Refusal::Malformed));
        assert_eq!(v.verify("not a jwt", now), Err(Refusal::Malformed));
    }
}
