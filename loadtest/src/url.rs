//! A minimal URL splitter for `scheme://[user[:password]@]host[:port][/path][?query]`: enough
//! for `ws://`, `http://` and `redis://` targets, with no URL crate.

use anyhow::{Context, bail};

/// The parts of a URL. `path` always starts with `/`; the query is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> anyhow::Result<Url> {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("{url}: not a URL (no scheme://)"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = path.split('?').next().unwrap_or("");
        let path = if path.is_empty() { "/" } else { path };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (
                    (!user.is_empty()).then(|| user.to_string()),
                    Some(pass.to_string()),
                ),
                None => (Some(u.to_string()), None),
            },
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .with_context(|| format!("{url}: bad port {p:?}"))?;
                (h, Some(port))
            }
            _ => (hostport, None),
        };
        if host.is_empty() {
            bail!("{url}: no host");
        }
        Ok(Url {
            scheme: scheme.to_ascii_lowercase(),
            user,
            password,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let u = Url::parse("ws://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port, u.path.as_str()),
            ("ws", "127.0.0.1", Some(8080), "/")
        );
        let u = Url::parse("ws://localhost:9/ws?subscribe=a").unwrap();
        assert_eq!((u.port, u.path.as_str()), (Some(9), "/ws"));
        let u = Url::parse("redis://user:pa:ss@10.0.0.1/2").unwrap();
        assert_eq!(u.user.as_deref(), Some("user"));
        assert_eq!(u.password.as_deref(), Some("pa:ss"));
        assert_eq!((u.port, u.path.as_str()), (None, "/2"));
        let u = Url::parse("redis://:secret@h:1").unwrap();
        assert_eq!((u.user, u.password.as_deref()), (None, Some("secret")));
        assert!(Url::parse("127.0.0.1:80").is_err());
        assert!(Url::parse("http://h:notaport/").is_err());
    }
}
