//! Where Redis is: `redis://[user:pass@]host:port/db`, a Redis Cluster
//! `redis+cluster://[user:pass@]host:port[,host:port…]`, or the seed services' variables.

use std::fmt;

use super::cluster::NodeAddr;

/// A parsed Redis address and credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database index for `SELECT` and for `__keyspace@<db>__` channels.
    pub db: u32,
    /// ACL user, if any (`AUTH user pass`).
    pub user: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// A Redis Cluster: `host:port` is the first seed node, these are the others (empty for one
    /// seed). False for a single Redis.
    pub cluster: bool,
    /// More seed nodes of a cluster, tried in order after `host:port` for the topology.
    pub seeds: Vec<NodeAddr>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for RedisUrl {
    /// Shows the address without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = match (&self.user, &self.password) {
            (Some(u), _) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (None, None) => String::new(),
        };
        let scheme = if self.cluster {
            "redis+cluster"
        } else {
            "redis"
        };
        write!(f, "{scheme}://{user}{}", self.authority())?;
        for seed in &self.seeds {
            write!(f, ",{seed}")?;
        }
        write!(f, "/{}", self.db)
    }
}

impl RedisUrl {
    /// Parses `redis://[user:pass@]host[:port][/db]` or
    /// `redis+cluster://[user:pass@]host[:port][,host[:port]…]` (a cluster has only db 0).
    pub fn parse(s: &str) -> Result<RedisUrl, String> {
        if s.starts_with("rediss://") || s.starts_with("rediss+cluster://") {
            return Err("rediss:// (TLS) is not supported yet, only plain redis://".into());
        }
        let (cluster, rest) = match s.strip_prefix("redis+cluster://") {
            Some(rest) => (true, rest),
            None => (
                false,
                s.strip_prefix("redis://")
                    .ok_or("must start with redis:// or redis+cluster://")?,
            ),
        };
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (hp, db.parse().map_err(|_| format!("bad db {db:?}"))?),
            None => (hostpart, 0),
        };
        let mut nodes = hostport.split(',').map(node);
        let NodeAddr { host, port } = nodes.next().ok_or("missing host")??;
        let seeds = nodes.collect::<Result<Vec<NodeAddr>, String>>()?;
        if !cluster && !seeds.is_empty() {
            return Err("several hosts: a Redis Cluster is redis+cluster://h1:p1,h2:p2".into());
        }
        if cluster && db != 0 {
            return Err(format!("a Redis Cluster has only db 0, not {db}"));
        }
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some(("", p)) => (None, Some(decode(p))),
                Some((u, p)) => (Some(decode(u)), Some(decode(p))),
                None => (Some(decode(a)), None),
            },
        };
        Ok(RedisUrl {
            host,
            port,
            db,
            user,
            password,
            cluster,
            seeds,
        })
    }

    /// Builds a URL from the seed services' `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB` and
    /// `REDIS_PASS`, read through `env`; `None` when `REDIS_HOST` is unset.
    pub fn from_seed_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<RedisUrl>, String> {
        let Some(host) = env("REDIS_HOST").filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        let port = match env("REDIS_PORT").filter(|p| !p.is_empty()) {
            Some(p) => p
                .parse()
                .map_err(|_| format!("REDIS_PORT {p:?} is not a port"))?,
            None => 6379,
        };
        let db = match env("REDIS_DB").filter(|d| !d.is_empty()) {
            Some(d) => d
                .parse()
                .map_err(|_| format!("REDIS_DB {d:?} is not a number"))?,
            None => 0,
        };
        let password = env("REDIS_PASS").filter(|p| !p.is_empty());
        Ok(Some(RedisUrl {
            host,
            port,
            db,
            user: None,
            password,
            cluster: false,
            seeds: Vec::new(),
        }))
    }

    /// `host:port`, for connecting.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same credentials at another node (a cluster's primary).
    pub fn at(&self, node: &NodeAddr) -> RedisUrl {
        RedisUrl {
            host: node.host.clone(),
            port: node.port,
            seeds: Vec::new(),
            ..self.clone()
        }
    }

    /// Every seed node: `host:port` first, then [`seeds`](Self::seeds).
    pub fn seed_nodes(&self) -> Vec<NodeAddr> {
        let first = NodeAddr {
            host: self.host.clone(),
            port: self.port,
        };
        std::iter::once(first)
            .chain(self.seeds.iter().cloned())
            .collect()
    }
}

/// `host[:port]` (`[v6]:port` too); the port defaults to 6379.
fn node(hostport: &str) -> Result<NodeAddr, String> {
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            (h, p.parse().map_err(|_| format!("bad port {p:?}"))?)
        }
        _ => (hostport, 6379),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("missing host".into());
    }
    Ok(NodeAddr {
        host: host.to_owned(),
        port,
    })
}

fn decode(s: &str) -> String {
    crate::http::percent_decode(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        let u = RedisUrl::parse("redis://app:s%40cret@10.0.0.1:6380/2").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("app"), Some("s@cret"))
        );
        assert_eq!((u.host.as_str(), u.port, u.db), ("10.0.0.1", 6380, 2));
        let u = RedisUrl::parse("redis://:pw@localhost").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref(), u.port, u.db),
            (None, Some("pw"), 6379, 0)
        );
        assert!(RedisUrl::parse("http://x").is_err());
        assert!(RedisUrl::parse("redis://h:notaport").is_err());
        let tls = RedisUrl::parse("rediss://h:6380").unwrap_err();
        assert!(
            tls.contains("rediss:// (TLS) is not supported yet"),
            "{tls}"
        );
        assert_eq!(u.to_string(), "redis://:***@localhost:6379/0");
        assert!(RedisUrl::parse("redis://a:1,b:2").is_err());
    }

    #[test]
    fn cluster_urls() {
        let u = RedisUrl::parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2,[::1]:7002").unwrap();
        assert!(u.cluster);
        assert_eq!((u.host.as_str(), u.port), ("10.0.0.1", 7000));
        let seeds: Vec<String> = u.seed_nodes().iter().map(|n| n.to_string()).collect();
        assert_eq!(seeds, ["10.0.0.1:7000", "10.0.0.2:6379", "[::1]:7002"]);
        assert_eq!(
            u.to_string(),
            "redis+cluster://:***@10.0.0.1:7000,10.0.0.2:6379,[::1]:7002/0"
        );
        let at = u.at(&u.seed_nodes()[2]);
        assert_eq!(
            (at.host.as_str(), at.port, at.password.as_deref()),
            ("::1", 7002, Some("pw"))
        );
        assert!(at.seeds.is_empty() && at.cluster);
        let err = RedisUrl::parse("redis+cluster://h:1/3").unwrap_err();
        assert!(err.contains("only db 0"), "{err}");
        assert_eq!(RedisUrl::parse("redis://[::1]:7000").unwrap().host, "::1");
    }

    #[test]
    fn seed_variables() {
        let env = |k: &str| match k {
            "REDIS_HOST" => Some("r".to_string()),
            "REDIS_DB" => Some("2".to_string()),
            "REDIS_PASS" => Some("p".to_string()),
            _ => None,
        };
        let u = RedisUrl::from_seed_env(env).unwrap().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.db, u.password.as_deref()),
            ("r", 6379, 2, Some("p"))
        );
        assert_eq!(RedisUrl::from_seed_env(|_| None).unwrap(), None);
    }
}
