//! The access-control settings, as the configuration holds them: per listener ([`Access`]) and
//! for the process ([`JwtKeys`]). Parsing lives in `crate::config`; this file only says what the
//! values mean.
//!
//! **Thread:** plain values inside the shared, immutable `Config`.

use std::fmt;
use std::path::PathBuf;

use crate::router::TopicKind;

/// Whether a listener requires a token at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Anyone may connect; the listener's allow lists apply (the default).
    #[default]
    None,
    /// A valid JWT is required (HTTP 401 without one); its grants apply.
    Jwt,
}

impl AuthMode {
    /// Parses `none` or `jwt`.
    pub fn parse(text: &str) -> Option<AuthMode> {
        match text.trim() {
            "none" => Some(AuthMode::None),
            "jwt" => Some(AuthMode::Jwt),
            _ => None,
        }
    }

    /// The name used by `--auth` and the route key `auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Jwt => "jwt",
        }
    }
}

/// One listener's access policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Token required or not.
    pub mode: AuthMode,
    /// Channel globs anonymous clients may subscribe to. Default `["*"]` (everything).
    pub allow_subscribe: Vec<String>,
    /// Key globs anonymous clients may watch. Default `["*"]` (everything).
    pub allow_watch: Vec<String>,
}

impl Default for Access {
    fn default() -> Access {
        Access {
            mode: AuthMode::None,
            allow_subscribe: vec!["*".to_owned()],
            allow_watch: vec!["*".to_owned()],
        }
    }
}

impl Access {
    /// Whether an anonymous client may subscribe to (or watch) `name`.
    pub fn allows(&self, kind: TopicKind, name: &str) -> bool {
        super::allows(&self.allow_subscribe, &self.allow_watch, kind, name)
    }

    /// True when it differs from the default (for validation of profiles that cannot apply it).
    pub fn is_restricted(&self) -> bool {
        *self != Access::default()
    }
}

/// The keys tokens are verified with, and the optional claim checks. Process-wide.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct JwtKeys {
    /// `--jwt-secret`: the HMAC secret (HS256/384/512). Never logged or printed.
    pub secret: Option<String>,
    /// `--jwt-public-key`: the PEM file of the RSA (RS256) or EC P-256 (ES256) public key.
    pub public_key: Option<PathBuf>,
    /// That file's contents, read once at start-up.
    pub public_key_pem: Option<Vec<u8>>,
    /// `--jwt-audience`: accepted `aud` values; empty skips the check.
    pub audience: Vec<String>,
    /// `--jwt-issuer`: accepted `iss` values; empty skips the check.
    pub issuer: Vec<String>,
}

impl JwtKeys {
    /// True when some key is configured.
    pub fn configured(&self) -> bool {
        self.secret.is_some() || self.public_key_pem.is_some()
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key", &self.public_key)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}
