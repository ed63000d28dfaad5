//! The access-control knobs (`--auth`, `--allow-subscribe`, `--allow-watch`, `--jwt-*`,
//! `--admin-listen`): parsing and the checks that involve routes. What the values mean is in
//! [`crate::auth`].

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{
    ADMIN_LISTEN, ALLOW_SUBSCRIBE, ALLOW_WATCH, AUTH, ConfigError, JWT_AUDIENCE, JWT_ISSUER,
    JWT_PUBLIC_KEY, JWT_SECRET, Layers, Origin, Raw,
};
use crate::auth::{Access, AuthMode, JwtKeys};
use crate::config::{Profile, RouteConfig};

/// The native listener's policy, the process's keys and the admin address, from every layer.
pub(super) fn resolve(
    layers: &Layers<'_>,
) -> Result<(Access, JwtKeys, Option<SocketAddr>), ConfigError> {
    let defaults = Access::default();
    let access = Access {
        mode: layers.value(&AUTH, AuthMode::None, auth_mode)?,
        allow_subscribe: layers.value(&ALLOW_SUBSCRIBE, defaults.allow_subscribe, glob_list)?,
        allow_watch: layers.value(&ALLOW_WATCH, defaults.allow_watch, glob_list)?,
    };
    let secret = layers.value(&JWT_SECRET, None, |r| secret(r).map(Some))?;
    let public_key = layers.resolve(&JWT_PUBLIC_KEY, None, |r| pem_file(r).map(Some))?;
    let key_origin = public_key.origin;
    let (public_key, public_key_pem) = match public_key.value {
        Some((path, pem)) => (Some(path), Some(pem)),
        None => (None, None),
    };
    let keys = JwtKeys {
        secret,
        public_key,
        public_key_pem,
        audience: layers.value(&JWT_AUDIENCE, Vec::new(), glob_list)?,
        issuer: layers.value(&JWT_ISSUER, Vec::new(), glob_list)?,
    };
    if keys.public_key_pem.is_some()
        && let Err(reason) = crate::auth::Verifier::new(&keys)
    {
        return Err(ConfigError::Invalid {
            knob: JWT_PUBLIC_KEY.name,
            origin: key_origin,
            reason,
        });
    }
    let admin = layers.value(&ADMIN_LISTEN, None, |r| super::socket_addr(r).map(Some))?;
    Ok((access, keys, admin))
}

/// Checks that involve the routes: a `jwt` listener needs a key, and the profiles that cannot
/// apply grants refuse `auth` and the allow lists.
pub(super) fn check(
    access: &Access,
    keys: &JwtKeys,
    routes: &[RouteConfig],
) -> Result<(), ConfigError> {
    let needs_key = |origin: Origin, who: String| ConfigError::Invalid {
        knob: AUTH.name,
        origin,
        reason: format!("{who} is jwt but neither --jwt-secret nor --jwt-public-key is set"),
    };
    if access.mode == AuthMode::Jwt && !keys.configured() {
        return Err(needs_key(Origin::Default, "the native listener".to_owned()));
    }
    for r in routes {
        if r.access.mode == AuthMode::Jwt && !keys.configured() {
            return Err(needs_key(Origin::Default, format!("route {:?}", r.name)));
        }
        let unsupported = matches!(
            r.profile,
            Profile::Ess | Profile::EssApi | Profile::SocketIo
        );
        if unsupported && r.access.is_restricted() {
            return Err(ConfigError::Invalid {
                knob: "route",
                origin: Origin::Default,
                reason: format!(
                    "route {:?} (profile {}): auth, allow_subscribe and allow_watch are only \
                     supported on native, preflight, status and bess routes",
                    r.name,
                    r.profile.as_str()
                ),
            });
        }
    }
    Ok(())
}

/// `none` or `jwt`.
pub(super) fn auth_mode(raw: Raw<'_>) -> Result<AuthMode, String> {
    raw.text()
        .and_then(AuthMode::parse)
        .ok_or_else(|| format!("{} is not none or jwt", raw.shown()))
}

/// A list of globs: a TOML array of strings, or comma-separated text. Each glob must be a
/// valid topic name (1 to 1024 bytes, no control characters).
pub(super) fn glob_list(raw: Raw<'_>) -> Result<Vec<String>, String> {
    let items: Vec<String> = match raw {
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{v} is not a string"))
            })
            .collect::<Result<_, _>>()?,
        _ => raw
            .text()
            .ok_or_else(|| format!("{} is not a list of globs", raw.shown()))?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    for glob in &items {
        crate::protocol::check_topic(glob).map_err(|e| format!("glob {glob:?} {e}"))?;
    }
    Ok(items)
}

/// The HMAC secret: non-empty. Never echoed in errors.
fn secret(raw: Raw<'_>) -> Result<String, String> {
    match raw.text() {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        Some(_) => Err("must not be empty (value not shown)".to_owned()),
        None => Err("must be a string (value not shown)".to_owned()),
    }
}

/// A PEM file, read now: a missing file stops the start with its path and the I/O error.
fn pem_file(raw: Raw<'_>) -> Result<(PathBuf, Vec<u8>), String> {
    let path = raw
        .text()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("{} is not a file path", raw.shown()))?;
    let path = PathBuf::from(path);
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok((path, pem))
}

/// The TOML lines of these settings, for `--print-config`. The secret shows as `"<redacted>"`.
pub(super) fn to_toml(access: &Access, keys: &JwtKeys, admin: Option<SocketAddr>) -> String {
    let list = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|g| format!("{g:?}")).collect();
        format!("[{}]", items.join(", "))
    };
    let mut out = format!(
        "{} = \"{}\"\n{} = {}\n{} = {}\n",
        AUTH.key,
        access.mode.as_str(),
        ALLOW_SUBSCRIBE.key,
        list(&access.allow_subscribe),
        ALLOW_WATCH.key,
        list(&access.allow_watch),
    );
    let optional = |out: &mut String, key: &str, value: Option<String>| match value {
        Some(v) => out.push_str(&format!("{key} = {v}\n")),
        None => out.push_str(&format!("# {key} is not set\n")),
    };
    let secret = keys
        .secret
        .as_ref()
        .map(|_| format!("{:?}", super::REDACTED));
    optional(&mut out, JWT_SECRET.key, secret);
    let path = keys
        .public_key
        .as_ref()
        .map(|p| format!("{:?}", p.display().to_string()));
    optional(&mut out, JWT_PUBLIC_KEY.key, path);
    let aud = (!keys.audience.is_empty()).then(|| list(&keys.audience));
    optional(&mut out, JWT_AUDIENCE.key, aud);
    let iss = (!keys.issuer.is_empty()).then(|| list(&keys.issuer));
    optional(&mut out, JWT_ISSUER.key, iss);
    optional(
        &mut out,
        ADMIN_LISTEN.key,
        admin.map(|a| format!("\"{a}\"")),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use crate::auth::AuthMode;

    #[test]
    fn the_jwt_secret_is_never_shown() {
        let config =
            parse(&["--auth", "jwt"], &[("RINGCAST_JWT_SECRET", "s3cr3t-jwt")]).expect("valid");
        assert_eq!(config.access.mode, AuthMode::Jwt);
        for shown in [config.to_toml(), format!("{config:?}")] {
            assert!(!shown.contains("s3cr3t-jwt"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn jwt_auth_needs_a_key() {
        let e = parse(&["--auth", "jwt"], &[]).expect_err("no key");
        assert!(e.to_string().contains("--jwt-secret"), "{e}");
        let e = parse(
            &[
                "--route",
                "r.listen=127.0.0.1:0",
                "--route",
                "r.profile=native",
            ],
            &[],
        )
        .map(|c| c.routes.len());
        assert_eq!(e.expect("valid"), 1);
        let e = parse(
            &["--route", "r.listen=127.0.0.1:0", "--route", "r.auth=jwt"],
            &[("RINGCAST_ROUTE_R_PROFILE", "native")],
        )
        .expect_err("no key");
        assert!(e.to_string().contains("route \"r\""), "{e}");
    }

    #[test]
    fn profiles_that_cannot_apply_grants_refuse_them() {
        let e = parse(
            &[
                "--jwt-secret",
                "k",
                "--route",
                "s.listen=127.0.0.1:0",
                "--route",
                "s.profile=socketio",
                "--route",
                "s.auth=jwt",
            ],
            &[],
        )
        .expect_err("socketio cannot");
        assert!(e.to_string().contains("only supported on native"), "{e}");
    }

    #[test]
    fn a_bad_public_key_file_is_named() {
        let e = parse(&["--jwt-public-key", "/nonexistent/key.pem"], &[]).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/key.pem"), "{e}");
        let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let e = parse(&["--jwt-public-key", not_pem], &[]).expect_err("not a key");
        assert!(e.to_string().contains("jwt-public-key"), "{e}");
    }
}
