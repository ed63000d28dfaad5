//! Where RabbitMQ is, from an AMQP URL (`ESS_AMPQ_URL` in the original):
//! `amqp://user:pass@host:port/vhost`.
//!
//! The original's rules (COMPAT.md 6.2, "RabbitMQ"): host, user, password and vhost come from
//! the URL; **the port is ignored** (streams use their own port, 5552 by default); the vhost
//! is the path without its leading `/`, percent-decoded (`%2f` is `/`), or `/` when there is no
//! path. Credentials are percent-decoded too; without them RabbitMQ's default `guest`/`guest`
//! is used, as pika and rstream do.
//!
//! Thread: pure, any thread (main, when reading the configuration).

use std::fmt;

/// A parsed AMQP URL.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    /// Host name or IP (brackets removed from an IPv6 literal).
    pub host: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Virtual host.
    pub vhost: String,
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for AmqpUrl {
    /// Shows the address without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "amqp://{}:***@{} vhost={:?}",
            self.user, self.host, self.vhost
        )
    }
}

/// Why an AMQP URL was refused (the operator's configuration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `amqp://` (or `amqps://`, which is not supported yet).
    #[error("must start with amqp:// (amqps:// is not supported)")]
    Scheme,
    /// No host.
    #[error("no host")]
    NoHost,
    /// A `%` not followed by two hex digits, or a decoded value that is not UTF-8.
    #[error("bad percent-encoding in {0}")]
    Percent(&'static str),
}

impl AmqpUrl {
    /// Parses `amqp://[user[:pass]@]host[:port][/vhost][?query]`.
    pub fn parse(s: &str) -> Result<AmqpUrl, UrlError> {
        let rest = s.strip_prefix("amqp://").ok_or(UrlError::Scheme)?;
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (auth, hostport) = match authority.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, authority),
        };
        let (user, password) = match auth {
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (decode(u, "user")?, decode(p, "password")?),
                None => (decode(a, "user")?, String::new()),
            },
            None => ("guest".to_string(), "guest".to_string()),
        };
        let host = if let Some(v6) = hostport.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            hostport.split(':').next().unwrap_or("")
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let vhost = match path {
            None | Some("") => "/".to_string(),
            Some(p) => decode(p, "vhost")?,
        };
        Ok(AmqpUrl {
            host: host.to_string(),
            user,
            password,
            vhost,
        })
    }
}

/// Percent-decodes `s`.
fn decode(s: &str, what: &'static str) -> Result<String, UrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(UrlError::Percent(what))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::Percent(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, user: &str, password: &str, vhost: &str) -> AmqpUrl {
        AmqpUrl {
            host: host.into(),
            user: user.into(),
            password: password.into(),
            vhost: vhost.into(),
        }
    }

    #[test]
    fn the_original_rules() {
        assert_eq!(
            AmqpUrl::parse("amqp://es:cheddar1963@localhost:5672"),
            Ok(url("localhost", "es", "cheddar1963", "/"))
        );
        assert_eq!(
            AmqpUrl::parse("amqp://u:p@rabbit:1234/"),
            Ok(url("rabbit", "u", "p", "/"))
        );
        assert_eq!(
            AmqpUrl::parse("amqp://u:p@rabbit/squonk2"),
            Ok(url("rabbit", "u", "p", "squonk2"))
        );
        assert_eq!(
            AmqpUrl::parse("amqp://u:p@rabbit:5672/%2f"),
            Ok(url("rabbit", "u", "p", "/"))
        );
        assert_eq!(
            AmqpUrl::parse("amqp://u:p%40ss@h/v%2Fx?heartbeat=5"),
            Ok(url("h", "u", "p@ss", "v/x"))
        );
        assert_eq!(
            AmqpUrl::parse("amqp://[::1]:5672/"),
            Ok(url("::1", "guest", "guest", "/"))
        );
        assert_eq!(
            AmqpUrl::parse("amqp://h"),
            Ok(url("h", "guest", "guest", "/"))
        );
    }

    #[test]
    fn bad_urls() {
        assert_eq!(AmqpUrl::parse("amqps://h"), Err(UrlError::Scheme));
        assert_eq!(AmqpUrl::parse("http://h"), Err(UrlError::Scheme));
        assert_eq!(AmqpUrl::parse("amqp://u:p@:5672/"), Err(UrlError::NoHost));
        assert_eq!(
            AmqpUrl::parse("amqp://h/%zz"),
            Err(UrlError::Percent("vhost"))
        );
        assert_eq!(
            AmqpUrl::parse("amqp://h/%ff"),
            Err(UrlError::Percent("vhost"))
        );
        assert!(!format!("{:?}", AmqpUrl::parse("amqp://u:secret@h").unwrap()).contains("secret"));
    }
}
