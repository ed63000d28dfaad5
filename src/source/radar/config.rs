//! Where the radar feeds come from, parsed from the original's configuration: the TCP feeds from
//! `radars.config.json` (`{"<site>": {"host": "…", "port": N}}`, `--radars FILE`) and the ZMQ
//! feed from `CANADA_ADDR` (`host:port`, as the original's `.env` holds it; the original put
//! `tcp://` in front itself, so a `tcp://` prefix is accepted too).
//!
//! Invariants: a parsed [`TcpFeed`] has a non-empty site and host and a port in 1..=65535;
//! feeds come out sorted by site (one per site: a repeated key keeps its last value, as Python's
//! `json.load` does); fields other than `host` and `port` are ignored, as the original ignored
//! them. Nothing here resolves names or connects: the feed threads do.
//!
//! Thread: pure, any thread (main, at start-up).

/// One radar's TCP feed (connex framing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpFeed {
    /// The site code (`sas`, `kod`): the Socket.IO event name of its records.
    pub site: String,
    /// Host name or address to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// The ZMQ SUB feed's publisher (`CANADA_ADDR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZmqAddr {
    /// Host name or address (an IPv6 address keeps its brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ZmqAddr {
    /// The ZMQ endpoint, `tcp://host:port`.
    pub fn endpoint(&self) -> String {
        format!("tcp://{}:{}", self.host, self.port)
    }
}

/// Why the radar configuration is unusable: the operator's fault. Start-up stops with the
/// message, which names the site and field (or the address) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadarConfigError {
    /// The file is not JSON.
    #[error("radars config is not JSON: {0}")]
    Json(String),
    /// The top level is not an object of sites.
    #[error("radars config must be an object {{\"<site>\": {{\"host\": …, \"port\": …}}}}")]
    NotAnObject,
    /// A site key is empty.
    #[error("radars config has an empty site name")]
    EmptySite,
    /// A site's value is not an object.
    #[error("radars config: site {site:?} must be an object with \"host\" and \"port\"")]
    SiteNotObject {
        /// The site.
        site: String,
    },
    /// A site's field is missing or has the wrong type or range.
    #[error("radars config: site {site:?} field {field:?} {problem}")]
    BadField {
        /// The site.
        site: String,
        /// `host` or `port`.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// `CANADA_ADDR` is not `host:port` or `tcp://host:port`.
    #[error("CANADA_ADDR {addr:?}: {problem} (expected host:port or tcp://host:port)")]
    BadZmqAddr {
        /// The value given.
        addr: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// True for a SuperDARN site code: three lowercase ASCII letters (`sas`, `kod`, `pgr`). With
/// `CANADA_ADDR` set, such channel names are routed to the radar source before any Redis glob
/// (`Config::is_radar_channel`), since the ZMQ feed's sites are only learnt from the wire.
pub fn is_site_code(name: &[u8]) -> bool {
    name.len() == 3 && name.iter().all(u8::is_ascii_lowercase)
}

/// Parses `radars.config.json`'s text into its feeds, sorted by site.
pub fn parse_radars(json: &str) -> Result<Vec<TcpFeed>, RadarConfigError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| RadarConfigError::Json(e.to_string()))?;
    let sites = value.as_object().ok_or(RadarConfigError::NotAnObject)?;
    sites.iter().map(|(site, v)| feed(site, v)).collect()
}

fn feed(site: &str, v: &serde_json::Value) -> Result<TcpFeed, RadarConfigError> {
    if site.is_empty() {
        return Err(RadarConfigError::EmptySite);
    }
    let fields = v
        .as_object()
        .ok_or_else(|| RadarConfigError::SiteNotObject {
            site: site.to_owned(),
        })?;
    let bad = |field, problem| RadarConfigError::BadField {
        site: site.to_owned(),
        field,
        problem,
    };
    let host = match fields.get("host") {
        None => return Err(bad("host", "is missing")),
        Some(h) => h.as_str().ok_or_else(|| bad("host", "must be a string"))?,
    };
    if host.is_empty() {
        return Err(bad("host", "is empty"));
    }
    let port = match fields.get("port") {
        None => return Err(bad("port", "is missing")),
        Some(p) => p
            .as_u64()
            .ok_or_else(|| bad("port", "must be an integer"))?,
    };
    let port = u16::try_from(port)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| bad("port", "must be in 1..=65535"))?;
    Ok(TcpFeed {
        site: site.to_owned(),
        host: host.to_owned(),
        port,
    })
}

/// Parses `CANADA_ADDR`: `host:port` or `tcp://host:port` (`[v6]:port` for IPv6).
pub fn parse_zmq_addr(addr: &str) -> Result<ZmqAddr, RadarConfigError> {
    let bad = |problem| RadarConfigError::BadZmqAddr {
        addr: addr.to_owned(),
        problem,
    };
    let trimmed = addr.trim();
    let rest = trimmed.strip_prefix("tcp://").unwrap_or(trimmed);
    if rest.contains("://") {
        return Err(bad("only tcp:// is supported"));
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 address needs brackets"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| bad("port must be in 1..=65535"))?;
    Ok(ZmqAddr {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(site: &str, host: &str, port: u16) -> TcpFeed {
        TcpFeed {
            site: site.into(),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn the_original_format() {
        let json = r#"{"sas": {"host": "10.0.0.5", "port": 6032},
                       "kod": {"host": "kod.example", "port": 1024, "note": "ignored"}}"#;
        let want = vec![
            tcp("kod", "kod.example", 1024),
            tcp("sas", "10.0.0.5", 6032),
        ];
        assert_eq!(parse_radars(json), Ok(want));
        assert_eq!(parse_radars("{}"), Ok(vec![]));
    }

    #[test]
    fn errors_name_the_site_and_field() {
        let err = |json: &str| parse_radars(json).map_err(|e| e.to_string()).unwrap_err();
        assert!(err("{").starts_with("radars config is not JSON"));
        assert!(err("[]").contains("must be an object"));
        assert!(err(r#"{"sas": 5}"#).contains(r#"site "sas" must be an object"#));
        assert_eq!(
            err(r#"{"sas": {"port": 1}}"#),
            r#"radars config: site "sas" field "host" is missing"#
        );
        assert!(err(r#"{"sas": {"host": 7, "port": 1}}"#).contains(r#""host" must be a string"#));
        assert!(err(r#"{"sas": {"host": "", "port": 1}}"#).contains(r#""host" is empty"#));
        assert!(err(r#"{"sas": {"host": "h"}}"#).contains(r#""port" is missing"#));
        assert!(err(r#"{"sas": {"host": "h", "port": "1"}}"#).contains("must be an integer"));
        assert!(err(r#"{"sas": {"host": "h", "port": -1}}"#).contains("must be an integer"));
        assert!(err(r#"{"sas": {"host": "h", "port": 70000}}"#).contains("1..=65535"));
        assert!(err(r#"{"sas": {"host": "h", "port": 0}}"#).contains("1..=65535"));
        assert!(err(r#"{"": {"host": "h", "port": 1}}"#).contains("empty site"));
    }

    #[test]
    fn canada_addr_with_or_without_tcp() {
        let want = ZmqAddr {
            host: "zmq.example".into(),
            port: 5555,
        };
        assert_eq!(parse_zmq_addr("zmq.example:5555"), Ok(want.clone()));
        assert_eq!(parse_zmq_addr("tcp://zmq.example:5555"), Ok(want.clone()));
        assert_eq!(want.endpoint(), "tcp://zmq.example:5555");
        let v6 = parse_zmq_addr("[::1]:5555");
        assert_eq!(v6.map(|a| a.endpoint()), Ok("tcp://[::1]:5555".to_owned()));
    }

    #[test]
    fn bad_canada_addrs() {
        for (addr, problem) in [
            ("zmq.example", "no port"),
            (":5555", "no host"),
            ("h:0", "port must be in 1..=65535"),
            ("h:x", "port must be in 1..=65535"),
            ("h:70000", "port must be in 1..=65535"),
            ("ipc://h:1", "only tcp:// is supported"),
            ("::1:5555", "an IPv6 address needs brackets"),
        ] {
            let e = parse_zmq_addr(addr);
            assert_eq!(
                e,
                Err(RadarConfigError::BadZmqAddr {
                    addr: addr.into(),
                    problem
                })
            );
        }
    }
}
