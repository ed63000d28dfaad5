//! Routes, listeners and presets.
//!
//! A *route* binds a listener address and a path glob to a profile (native, preflight, status,
//! bess or ess_api), the sources it reads, a heartbeat style and limits. Routes come from four layers,
//! merged key by key, highest first:
//!
//! 1. `--route NAME.KEY=VALUE` flags (repeatable);
//! 2. `RINGCAST_ROUTE_<NAME>_<KEY>` environment variables (for routes the layers below name);
//! 3. `[[route]]` tables in the config file (a table named like a preset route overrides only
//!    the keys it sets);
//! 4. the preset (`--preset weppcloud` or `bess`), itself TOML text ([`preset_toml`]);
//!
//! then per-key defaults that depend on the profile. A preset also brings its `[[source]]`
//! tables: with `--redis URL` the URL gives every preset source its host, port and credentials
//! while each keeps its own database (the bess source takes the URL's database).
//!
//! The result is a list of [`RouteConfig`]s, validated: unique names, known sources, a Redis
//! source for the profiles that read keys, heartbeat knobs of at least
//! [`super::MIN_HEARTBEAT`].
//!
//! The `ess_api` profile (the Squonk2 ESS internal REST API) also takes a `registry` key (its
//! SQLite file, default [`DEFAULT_REGISTRY`]) and the original's `ESS_INGRESS_LOCATION` and
//! `ESS_INGRESS_SECURE` variables ([`Ingress`]), read by the caller through its environment
//! lookup and passed in [`RouteDefaults`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Origin, Raw, SourceConfig};
use crate::profile::preflight::{LockStyle, PreflightOptions};
use crate::source::redis::RedisUrl;

/// What a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// ringcast's own protocol (commands, `?subscribe=`, `?format=raw`).
    Native,
    /// weppcloud Preflight: a run's checklist from its Redis hash.
    Preflight,
    /// weppcloud Status: one pub/sub channel per connection, wrapped in `{"type":"status"}`.
    Status,
    /// WebsocketServerMS: battery snapshot and updates.
    Bess,
    /// Squonk2 ESS public WebSocket: one RabbitMQ stream per socket, from a chosen offset.
    Ess,
    /// Squonk2 ESS internal REST API (`/event-stream/…`): plain HTTP over the route's
    /// registry, no WebSocket.
    EssApi,
    /// Engine.IO v4 / Socket.IO v5 at the route's path (websocket and long-polling): every
    /// event of the route's `channels` is broadcast to every client as event `<channel>`
    /// (`42["<channel>",<payload>]`). With `echoes_db`, also `GET /echoes` (SuperDARN).
    SocketIo,
}

impl Profile {
    fn parse(s: &str) -> Option<Profile> {
        Some(match s {
            "native" => Profile::Native,
            "preflight" => Profile::Preflight,
            "status" => Profile::Status,
            "bess" => Profile::Bess,
            "ess" => Profile::Ess,
            "ess_api" => Profile::EssApi,
            "socketio" => Profile::SocketIo,
            _ => return None,
        })
    }

    /// The profile's name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Native => "native",
            Profile::Preflight => "preflight",
            Profile::Status => "status",
            Profile::Bess => "bess",
            Profile::Ess => "ess",
            Profile::EssApi => "ess_api",
            Profile::SocketIo => "socketio",
        }
    }
}

/// How a route checks that clients are alive. Either way the rule is the same: a ping every
/// `ping_interval`, and a close (4001) once a ping has gone unanswered for `pong_timeout`; a
/// client that answers pings may stay silent for ever. The styles differ in what a ping is and
/// what answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// WebSocket ping frames (uvicorn's, Centrifugo's and uWS's); any input answers them.
    Ws,
    /// Text `{"type":"ping"}` (the weppcloud services'); only `{"type":"pong"}` (or `init`)
    /// answers it.
    Json,
}

impl Heartbeat {
    /// The rule in one line, for `--print-config`.
    pub fn rule(self, ping_interval: Duration, pong_timeout: Duration) -> String {
        let (ping, answer) = match self {
            Heartbeat::Ws => ("a WebSocket ping", "any frame"),
            Heartbeat::Json => ("{\"type\":\"ping\"}", "only {\"type\":\"pong\"} or init"),
        };
        format!(
            "{ping} every {}; closed (4001) when one stays unanswered for {} ({answer} \
             answers); a client that answers may stay silent for ever",
            super::duration_text(ping_interval),
            super::duration_text(pong_timeout),
        )
    }
}

/// The registry file of an `ess_api` route without a `registry` key, relative to the working
/// directory.
pub const DEFAULT_REGISTRY: &str = "event-streams.db";

/// The WebSocket address the ESS API hands out (`location`), from the original's variables:
/// `ESS_INGRESS_LOCATION` (default [`Ingress::DEFAULT_LOCATION`]) and `ESS_INGRESS_SECURE`
/// (`yes` means `wss`, anything else `ws`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingress {
    /// `host[:port]` as clients reach the public WebSocket listener.
    pub location: String,
    /// `wss` rather than `ws`.
    pub secure: bool,
}

impl Ingress {
    /// The original's default location.
    pub const DEFAULT_LOCATION: &str = "localhost:8080";

    /// From the two variables' values (unset: `None`).
    pub fn from_env(location: Option<String>, secure: Option<String>) -> Ingress {
        Ingress {
            location: location.unwrap_or_else(|| Ingress::DEFAULT_LOCATION.to_owned()),
            secure: secure.as_deref() == Some("yes"),
        }
    }

    /// `ws[s]://<location>/event-stream/<uuid>`.
    pub fn url(&self, uuid: &str) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}/event-stream/{uuid}", self.location)
    }
}

impl Default for Ingress {
    fn default() -> Ingress {
        Ingress::from_env(None, None)
    }
}

/// One validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Its name (`preflight`), for logs and overrides.
    pub name: String,
    /// The address it listens on.
    pub listen: SocketAddr,
    /// Redis-style glob over the request path (query excluded).
    pub path: String,
    /// What it serves.
    pub profile: Profile,
    /// Indexes into [`super::Config::sources`]; empty means every source.
    pub sources: Vec<usize>,
    /// Heartbeat style.
    pub heartbeat: Heartbeat,
    /// How often to ping.
    pub ping_interval: Duration,
    /// Close a client that leaves a ping unanswered for this long.
    pub pong_timeout: Duration,
    /// Send `{"type":"hangup"}` before the server closes a connection.
    pub hangup: bool,
    /// Preflight checklist and lock styles.
    pub preflight: PreflightOptions,
    /// Allowed `Origin` values; empty allows any (requests without `Origin` are always allowed).
    pub origins: Vec<String>,
    /// Per-connection outbox cap.
    pub max_outbox_bytes: usize,
    /// `ess`: the RabbitMQ URL (`ESS_AMPQ_URL`): host, user, password and vhost; its port is
    /// ignored, streams use `stream_port`.
    pub amqp: Option<String>,
    /// `ess`: the RabbitMQ stream-protocol port. Default 5552.
    pub stream_port: u16,
    /// `ess`: log a stats line every this many messages (`ESS_MESSAGE_STATS_INTERVAL`).
    /// Default 800, as the original.
    pub stats_interval: u64,
    /// `ess_api` only: the event-stream registry's SQLite file (`registry` key, default
    /// [`DEFAULT_REGISTRY`]); `None` for the other profiles.
    pub registry: Option<PathBuf>,
    /// `ess_api` only: how the streams' WebSocket `location` is written.
    pub ingress: Option<Ingress>,
    /// `socketio` only: the Engine.IO knobs (`ping_interval` → pingInterval, `pong_timeout`
    /// → pingTimeout, `max_payload`); `None` for the other profiles.
    pub eio: Option<crate::transport::engineio::config::EioConfig>,
    /// `socketio`: the channel globs broadcast to every client. Default `["*"]`.
    pub channels: Vec<String>,
    /// `socketio`: the SQLite file of the echo counts served at `GET /echoes`; `None`: no
    /// `/echoes` (404).
    pub echoes_db: Option<PathBuf>,
    /// Token requirement and anonymous allow lists (`auth`, `allow_subscribe`, `allow_watch`).
    /// Default: no token, everything allowed. Only native, preflight, status and bess routes
    /// may change it.
    pub access: crate::auth::Access,
    /// The route's listener expects a PROXY protocol v1/v2 header first (haproxy
    /// `send-proxy-v2`). Default false. Routes sharing a listener: any one turns it on for all.
    pub proxy_protocol: bool,
}

/// A built-in set of routes and sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// weppcloud Preflight on :9001 (db 0) and Status on :9002 (db 2).
    Weppcloud,
    /// WebsocketServerMS on :8001 at `/ws`.
    Bess,
    /// Squonk2 ESS: the public WebSocket on :8080 (`/event-stream/*`) and the internal REST
    /// API on :8081; RabbitMQ from `ESS_AMPQ_URL`.
    Squonk2,
    /// SuperDARN real-time data: Socket.IO at `/socket.io/` and `GET /echoes` on :5003; radar
    /// feeds from `radars.config.json` (cwd) and `CANADA_ADDR`.
    Superdarn,
}

impl Preset {
    /// Parses a preset name.
    pub(super) fn parse(raw: Raw<'_>) -> Result<Preset, String> {
        match raw.text().map(str::trim) {
            Some("weppcloud") => Ok(Preset::Weppcloud),
            Some("bess") => Ok(Preset::Bess),
            Some("squonk2") => Ok(Preset::Squonk2),
            Some("superdarn") => Ok(Preset::Superdarn),
            _ => Err(format!(
                "{} is not a preset (use weppcloud, bess, squonk2 or superdarn)",
                raw.shown()
            )),
        }
    }

    /// The preset's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Weppcloud => "weppcloud",
            Preset::Bess => "bess",
            Preset::Squonk2 => "squonk2",
            Preset::Superdarn => "superdarn",
        }
    }

    /// The native listener's default with this preset: 127.0.0.1:9090 for squonk2, whose
    /// public WebSocket takes 8080 (the native default), else [`super::DEFAULT_LISTEN`].
    pub fn native_listen(self) -> SocketAddr {
        match self {
            Preset::Squonk2 => SocketAddr::from(([127, 0, 0, 1], 9_090)),
            _ => super::DEFAULT_LISTEN,
        }
    }
}

/// What a preset expands to, as config-file TOML (also shown in docs/MIGRATING.md).
pub fn preset_toml(preset: Preset) -> &'static str {
    match preset {
        Preset::Weppcloud => {
            r#"
[[source]]
name = "preflight"
redis = "redis://127.0.0.1:6379/0"
keys = ["*"]

[[source]]
name = "status"
redis = "redis://127.0.0.1:6379/2"
channels = ["*"]

[[route]]
name = "preflight"
listen = "0.0.0.0:9001"
path = "/*"
profile = "preflight"
sources = ["preflight"]
heartbeat = "json"
ping_interval = "30s"
pong_timeout = "65s"
hangup = false
checklist = "legacy"
locks = "both"

[[route]]
name = "status"
listen = "0.0.0.0:9002"
path = "/*"
profile = "status"
sources = ["status"]
heartbeat = "json"
ping_interval = "30s"
pong_timeout = "65s"
hangup = false
"#
        }
        Preset::Bess => {
            r#"
[[source]]
name = "bess"
redis = "redis://127.0.0.1:6379/0"

[[route]]
name = "bess"
listen = "0.0.0.0:8001"
path = "/ws"
profile = "bess"
sources = ["bess"]
heartbeat = "ws"
ping_interval = "20s"
pong_timeout = "20s"
"#
        }
        Preset::Squonk2 => {
            r#"
[[route]]
name = "ess"
listen = "0.0.0.0:8080"
path = "/event-stream/*"
profile = "ess"
heartbeat = "ws"
ping_interval = "20s"
pong_timeout = "20s"
stream_port = 5552
stats_interval = 800

[[route]]
name = "ess_api"
listen = "0.0.0.0:8081"
path = "/*"
profile = "ess_api"
"#
        }
        Preset::Superdarn => {
            r#"
[[route]]
name = "superdarn"
listen = "0.0.0.0:5003"
path = "/socket.io/"
profile = "socketio"
ping_interval = "25s"
pong_timeout = "20s"
max_payload = 1000000
channels = ["*"]
origins = ["http://localhost:5002", "http://127.0.0.1:5002", "http://localhost", "http://127.0.0.1", "http://vt.superdarn.org", "http://vt.superdarn.org:80", "http://vt.superdarn.org:81", "http://superdarn.org", "http://superdarn.org:80", "http://superdar.org:81"]
echoes_db = "echoes.sqlite"
"#
        }
    }
}

/// The keys a `[[route]]` table may set.
pub const ROUTE_KEYS: &[&str] = &[
    "name",
    "listen",
    "path",
    "profile",
    "sources",
    "heartbeat",
    "ping_interval",
    "pong_timeout",
    "hangup",
    "checklist",
    "locks",
    "origins",
    "max_outbox_bytes",
    "amqp",
    "stream_port",
    "stats_interval",
    "registry",
    "max_payload",
    "channels",
    "echoes_db",
    "auth",
    "allow_subscribe",
    "allow_watch",
    "proxy_protocol",
];

/// A route's raw settings, each with where it came from.
#[derive(Debug, Clone, Default)]
pub struct RawRoute {
    /// The route name.
    pub name: String,
    /// `key → (value, origin)`; later layers overwrite.
    pub values: Vec<(String, toml::Value, Origin)>,
}

impl RawRoute {
    fn set(&mut self, key: &str, value: toml::Value, origin: Origin) {
        self.values.retain(|(k, _, _)| k != key);
        self.values.push((key.to_owned(), value, origin));
    }

    fn get(&self, key: &str) -> Option<(&toml::Value, &Origin)> {
        self.values
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, o)| (v, o))
    }
}

/// An error about one route key.
#[derive(Debug)]
pub struct RouteError {
    /// Where the bad value came from.
    pub origin: Origin,
    /// One line.
    pub reason: String,
}

fn err(origin: &Origin, reason: String) -> RouteError {
    RouteError {
        origin: origin.clone(),
        reason,
    }
}

/// Merges route tables (`layer` in precedence order, lowest first) into `routes`.
pub fn merge_tables(
    routes: &mut Vec<RawRoute>,
    tables: &[toml::Table],
    origin: &Origin,
) -> Result<(), RouteError> {
    for t in tables {
        let Some(name) = t.get("name").and_then(|v| v.as_str()) else {
            return Err(err(origin, "a [[route]] table needs a name".into()));
        };
        check_name(name).map_err(|r| err(origin, r))?;
        for key in t.keys() {
            if !ROUTE_KEYS.contains(&key.as_str()) {
                return Err(err(
                    origin,
                    format!(
                        "route {name:?}: unknown key {key:?} (known: {})",
                        ROUTE_KEYS.join(", ")
                    ),
                ));
            }
        }
        let route = find_or_add(routes, name);
        for (k, v) in t {
            if k != "name" {
                route.set(k, v.clone(), origin.clone());
            }
        }
    }
    Ok(())
}

fn find_or_add<'a>(routes: &'a mut Vec<RawRoute>, name: &str) -> &'a mut RawRoute {
    let pos = match routes.iter().position(|r| r.name == name) {
        Some(p) => p,
        None => {
            routes.push(RawRoute {
                name: name.to_owned(),
                values: Vec::new(),
            });
            routes.len() - 1
        }
    };
    &mut routes[pos]
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "route name {name:?} must be lowercase letters, digits and _"
        ));
    }
    Ok(())
}

/// Applies `RINGCAST_ROUTE_<NAME>_<KEY>` variables for the routes already named.
pub fn merge_env(
    routes: &mut [RawRoute],
    env: &dyn Fn(&'static str) -> Option<String>,
) -> Result<(), RouteError> {
    for route in routes.iter_mut() {
        for key in ROUTE_KEYS.iter().filter(|k| **k != "name") {
            let var = format!(
                "RINGCAST_ROUTE_{}_{}",
                route.name.to_ascii_uppercase(),
                key.to_ascii_uppercase()
            );
            // Leaked once per variable name at startup: `Origin::Env` holds a `&'static str`.
            let var: &'static str = Box::leak(var.into_boxed_str());
            if let Some(value) = env(var) {
                route.set(key, toml::Value::String(value), Origin::Env(var));
            }
        }
    }
    Ok(())
}

/// Applies `--route NAME.KEY=VALUE` flags.
pub fn merge_flags(routes: &mut Vec<RawRoute>, flags: &[String]) -> Result<(), RouteError> {
    let origin = Origin::Flag("route");
    for flag in flags {
        let Some((target, value)) = flag.split_once('=') else {
            return Err(err(
                &origin,
                format!("{flag:?} is not NAME.KEY=VALUE (e.g. preflight.listen=127.0.0.1:9001)"),
            ));
        };
        let Some((name, key)) = target.split_once('.') else {
            return Err(err(&origin, format!("{flag:?} is not NAME.KEY=VALUE")));
        };
        check_name(name).map_err(|r| err(&origin, r))?;
        if key == "name" || !ROUTE_KEYS.contains(&key) {
            return Err(err(&origin, format!("{flag:?}: unknown route key {key:?}")));
        }
        find_or_add(routes, name).set(key, toml::Value::String(value.to_owned()), origin.clone());
    }
    Ok(())
}

/// Defaults that do not depend on the profile.
pub struct RouteDefaults {
    /// The native listener's ping interval (for `heartbeat = "ws"`).
    pub ping_interval: Duration,
    /// The native listener's pong timeout (for `heartbeat = "ws"`).
    pub pong_timeout: Duration,
    /// The process-wide outbox cap.
    pub max_outbox_bytes: usize,
    /// `ESS_INGRESS_LOCATION` and `ESS_INGRESS_SECURE`, for `ess_api` routes.
    pub ingress: Ingress,
}

/// Turns merged raw routes into validated [`RouteConfig`]s.
pub fn resolve(
    raw: &[RawRoute],
    sources: &[SourceConfig],
    defaults: &RouteDefaults,
) -> Result<Vec<RouteConfig>, RouteError> {
    let mut routes = raw
        .iter()
        .map(|r| resolve_one(r, sources, defaults))
        .collect::<Result<Vec<_>, _>>()?;
    // An `ess` route reads the registry its `ess_api` route writes unless it names its own, so
    // `--route ess_api.registry=/data/event-streams.db` moves both.
    let api = routes
        .iter()
        .find(|r| r.profile == Profile::EssApi)
        .and_then(|r| r.registry.clone());
    for (route, r) in routes.iter_mut().zip(raw) {
        if route.profile == Profile::Ess && r.get("registry").is_none() && api.is_some() {
            route.registry.clone_from(&api);
        }
    }
    Ok(routes)
}

fn resolve_one(
    r: &RawRoute,
    sources: &[SourceConfig],
    d: &RouteDefaults,
) -> Result<RouteConfig, RouteError> {
    let name = &r.name;
    let profile = optional(r, "profile", |raw| {
        raw.text().and_then(Profile::parse).ok_or_else(|| {
            format!(
                "{} is not native, preflight, status, bess, ess, ess_api or socketio",
                raw.shown()
            )
        })
    })?
    .ok_or_else(|| missing_profile(r))?;
    let listen = required(r, "listen", super::socket_addr)?;
    let json = matches!(profile, Profile::Preflight | Profile::Status);
    let heartbeat = optional(r, "heartbeat", |raw| match raw.text() {
        Some("json") => Ok(Heartbeat::Json),
        Some("ws") => Ok(Heartbeat::Ws),
        _ => Err(format!("{} is not json or ws", raw.shown())),
    })?;
    let route = RouteConfig {
        name: name.clone(),
        listen,
        path: optional(r, "path", |raw| {
            let p = raw.text().ok_or("is not a string")?;
            if p.starts_with('/') {
                Ok(p.to_owned())
            } else {
                Err(format!("{p:?} must start with /"))
            }
        })?
        .unwrap_or_else(|| "/*".to_owned()),
        profile,
        sources: optional(r, "sources", |raw| source_ids(raw, sources))?.unwrap_or_default(),
        heartbeat: heartbeat.unwrap_or(if json { Heartbeat::Json } else { Heartbeat::Ws }),
        ping_interval: optional(r, "ping_interval", |raw| {
            super::duration(
                raw,
                super::MIN_HEARTBEAT,
                Duration::MAX,
                Duration::from_secs(30),
            )
        })?
        .unwrap_or(if json {
            Duration::from_secs(30)
        } else {
            d.ping_interval
        }),
        pong_timeout: optional(r, "pong_timeout", |raw| {
            super::duration(
                raw,
                super::MIN_HEARTBEAT,
                Duration::MAX,
                Duration::from_secs(65),
            )
        })?
        .unwrap_or(if json {
            Duration::from_secs(65)
        } else {
            d.pong_timeout
        }),
        hangup: optional(r, "hangup", super::boolean)?.unwrap_or(false),
        preflight: PreflightOptions {
            extended: optional(r, "checklist", |raw| match raw.text() {
                Some("legacy") => Ok(false),
                Some("extended") => Ok(true),
                _ => Err(format!("{} is not legacy or extended", raw.shown())),
            })?
            .unwrap_or(false),
            locks: optional(r, "locks", |raw| {
                raw.text()
                    .and_then(LockStyle::parse)
                    .ok_or_else(|| format!("{} is not both, legacy or dynamic", raw.shown()))
            })?
            .unwrap_or_default(),
        },
        origins: optional(r, "origins", string_list)?.unwrap_or_default(),
        max_outbox_bytes: optional(r, "max_outbox_bytes", |raw| {
            super::size(raw, 4 * 1024, u64::MAX, 1 << 20)
        })?
        .unwrap_or(d.max_outbox_bytes),
        amqp: optional(r, "amqp", |raw| {
            let url = raw.text().ok_or("is not a string")?.trim();
            if crate::source::rabbit_stream::AmqpUrl::parse(url).is_ok() {
                Ok(url.to_owned())
            } else {
                Err(
                    "is not an AMQP URL: use amqp://user:pass@host[:port][/vhost] (value not \
                     shown)"
                        .to_owned(),
                )
            }
        })?,
        stream_port: optional(r, "stream_port", |raw| {
            let port = match raw {
                Raw::Toml(toml::Value::Integer(n)) => u16::try_from(*n).ok(),
                _ => raw.text().and_then(|t| t.trim().parse().ok()),
            };
            port.filter(|&p| p != 0)
                .ok_or_else(|| format!("{} is not a port (1 to 65535)", raw.shown()))
        })?
        .unwrap_or(5_552),
        stats_interval: optional(r, "stats_interval", |raw| {
            let n = match raw {
                Raw::Toml(toml::Value::Integer(n)) => u64::try_from(*n).ok(),
                _ => raw.text().and_then(|t| t.trim().parse().ok()),
            };
            n.filter(|&n| n > 0)
                .ok_or_else(|| format!("{} is not a positive number of messages", raw.shown()))
        })?
        .unwrap_or(800),
        registry: None,
        ingress: None,
        eio: None,
        channels: optional(r, "channels", string_list)?.unwrap_or_else(|| vec!["*".to_owned()]),
        proxy_protocol: optional(r, "proxy_protocol", super::boolean)?.unwrap_or(false),
        echoes_db: optional(r, "echoes_db", |raw| match raw.text() {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => Err(format!("{} is not a file path", raw.shown())),
        })?,
        access: crate::auth::Access {
            mode: optional(r, "auth", super::access::auth_mode)?.unwrap_or_default(),
            allow_subscribe: optional(r, "allow_subscribe", super::access::glob_list)?
                .unwrap_or_else(|| vec!["*".to_owned()]),
            allow_watch: optional(r, "allow_watch", super::access::glob_list)?
                .unwrap_or_else(|| vec!["*".to_owned()]),
        },
    };
    let max_payload = optional(r, "max_payload", |raw| {
        super::size(
            raw,
            crate::transport::engineio::config::MIN_PAYLOAD_BYTES as u64,
            u64::from(u32::MAX),
            1_000_000,
        )
    })?;
    let mut route = route;
    if profile == Profile::SocketIo {
        let defaults = crate::transport::engineio::config::EioConfig::default();
        let max_payload = max_payload.unwrap_or(defaults.max_payload_bytes);
        let eio = crate::transport::engineio::config::EioConfig {
            ping_interval: route.ping_interval,
            ping_timeout: route.pong_timeout,
            max_payload_bytes: max_payload,
            // One GET body never exceeds what the client accepts.
            max_buffered_bytes: max_payload,
            // python-engineio closes a polling session after ping interval + timeout without
            // a GET.
            max_poll_gap: route.ping_interval + route.pong_timeout,
            ..defaults
        };
        eio.validate()
            .map_err(|reason| err(&Origin::Default, format!("route {name:?}: {reason}")))?;
        route.eio = Some(eio);
    } else {
        for key in ["max_payload", "channels", "echoes_db"] {
            if let Some(origin) = origin_of(r, key) {
                return Err(err(
                    &origin,
                    format!("route {name:?} {key}: only the socketio profile has it"),
                ));
            }
        }
    }
    if profile == Profile::Ess && route.amqp.is_none() {
        return Err(err(
            &origin_of(r, "profile").unwrap_or(Origin::Default),
            format!(
                "route {name:?} (profile ess) needs a RabbitMQ URL: set ESS_AMPQ_URL \
                 (amqp://user:pass@host/vhost) or {name}.amqp"
            ),
        ));
    }
    let registry = optional(r, "registry", |raw| match raw.text() {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(format!("{} is not a file path", raw.shown())),
    })?;
    // The WebSocket route reads the registry the API route writes: the same file by default.
    let set = registry.is_some();
    if matches!(profile, Profile::EssApi | Profile::Ess) {
        route.registry = Some(registry.unwrap_or_else(|| PathBuf::from(DEFAULT_REGISTRY)));
    }
    if profile == Profile::EssApi {
        route.ingress = Some(d.ingress.clone());
    } else if set && profile != Profile::Ess {
        return Err(err(
            &origin_of(r, "registry").unwrap_or(Origin::Default),
            format!("route {name:?} registry: only the ess and ess_api profiles have a registry"),
        ));
    }
    if matches!(profile, Profile::Preflight | Profile::Bess) && sources.is_empty() {
        return Err(err(
            &origin_of(r, "profile").unwrap_or(Origin::Default),
            format!(
                "route {name:?}: the {} profile reads Redis keys: configure --redis or a [[source]]",
                profile.as_str()
            ),
        ));
    }
    Ok(route)
}

/// Where the route's `key` came from, if it is set.
fn origin_of(r: &RawRoute, key: &str) -> Option<Origin> {
    r.get(key).map(|(_, o)| o.clone())
}

/// Parses the route's `key` when set; an error names the route, the key and the value's origin.
fn optional<T>(
    r: &RawRoute,
    key: &str,
    parse: impl FnOnce(Raw<'_>) -> Result<T, String>,
) -> Result<Option<T>, RouteError> {
    let Some((value, origin)) = r.get(key) else {
        return Ok(None);
    };
    parse(Raw::Toml(value))
        .map(Some)
        .map_err(|reason| err(origin, format!("route {:?} {key}: {reason}", r.name)))
}

/// [`optional`] for a key the route must have.
fn required<T>(
    r: &RawRoute,
    key: &str,
    parse: impl FnOnce(Raw<'_>) -> Result<T, String>,
) -> Result<T, RouteError> {
    optional(r, key, parse)?.ok_or_else(|| RouteError {
        origin: r
            .values
            .first()
            .map_or(Origin::Default, |(_, _, o)| o.clone()),
        reason: format!("route {:?} has no {key}", r.name),
    })
}

/// The error for a route with no profile. Such a route is almost always a `--route NAME.KEY=…`
/// override of a preset route given without its `--preset`, so the error names the setting
/// that created the route and the preset that defines it, if any.
fn missing_profile(r: &RawRoute) -> RouteError {
    let name = &r.name;
    let (origin, subject) = match r.values.first() {
        Some((key, _, origin @ Origin::Flag(_))) => (
            origin.clone(),
            format!("--route {name}.{key}=… names route {name:?}, which has"),
        ),
        Some((_, _, origin)) => (origin.clone(), format!("route {name:?} has")),
        None => (Origin::Default, format!("route {name:?} has")),
    };
    let preset = [Preset::Weppcloud, Preset::Bess].into_iter().find(|&p| {
        preset_routes(p)
            .iter()
            .any(|t| t.get("name").and_then(|v| v.as_str()) == Some(name.as_str()))
    });
    let fix = match preset {
        Some(p) => format!("add --preset {}, or set {name}.profile", p.as_str()),
        None => format!("set {name}.profile"),
    };
    err(
        &origin,
        format!(
            "{subject} no profile: no --preset given defines this \
             route and no [[route]] table sets its profile ({fix} to native, preflight, status, \
             bess or ess_api)"
        ),
    )
}

/// Source names to indexes into `sources`.
fn source_ids(raw: Raw<'_>, sources: &[SourceConfig]) -> Result<Vec<usize>, String> {
    string_list(raw)?
        .into_iter()
        .map(|n| {
            sources.iter().position(|s| s.name == n).ok_or_else(|| {
                let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
                format!("no source named {n:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// A TOML array of strings, or a comma-separated string (from a flag or a variable).
fn string_list(raw: Raw<'_>) -> Result<Vec<String>, String> {
    match raw {
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{v} is not a string"))
            })
            .collect(),
        _ => Ok(raw
            .text()
            .ok_or_else(|| format!("{} is not a list", raw.shown()))?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
    }
}

/// The preset's sources, with `redis` (if given) supplying host, port and credentials. The
/// weppcloud sources keep their databases (on a Redis Cluster, which has only db 0, they all use
/// db 0); the bess source takes the URL's.
pub fn preset_sources(preset: Preset, redis: Option<&RedisUrl>) -> Vec<SourceConfig> {
    let parsed: PresetFile = match toml::from_str(preset_toml(preset)) {
        Ok(p) => p,
        Err(_) => return Vec::new(),
    };
    parsed
        .source
        .into_iter()
        .filter_map(|t| {
            let mut url = RedisUrl::parse(&t.redis).ok()?;
            if let Some(r) = redis {
                url.host = r.host.clone();
                url.port = r.port;
                url.user = r.user.clone();
                url.password = r.password.clone();
                url.cluster = r.cluster;
                url.seeds = r.seeds.clone();
                if preset == Preset::Bess || r.cluster {
                    // A Redis Cluster has only db 0.
                    url.db = r.db;
                }
            }
            Some(SourceConfig::new(t.name, url, t.channels, t.keys))
        })
        .collect()
}

/// The preset's route tables.
pub fn preset_routes(preset: Preset) -> Vec<toml::Table> {
    toml::from_str::<PresetFile>(preset_toml(preset))
        .map(|p| p.route)
        .unwrap_or_default()
}

/// A preset's TOML: the same `[[source]]` and `[[route]]` tables as a config file.
#[derive(serde::Deserialize)]
struct PresetFile {
    #[serde(default)]
    source: Vec<super::SourceTable>,
    #[serde(default)]
    route: Vec<toml::Table>,
}

/// Renders routes back as `[[route]]` tables (for `--print-config`).
pub fn to_toml(routes: &[RouteConfig], sources: &[SourceConfig]) -> String {
    let mut out = String::new();
    for r in routes {
        let names: Vec<String> = r
            .sources
            .iter()
            .filter_map(|&i| sources.get(i))
            .map(|s| format!("{:?}", s.name))
            .collect();
        let origins: Vec<String> = r.origins.iter().map(|o| format!("{o:?}")).collect();
        out.push_str(&format!(
            "\n[[route]]\nname = {:?}\nlisten = \"{}\"\npath = {:?}\nprofile = \"{}\"\nsources = [{}]\n\
             # heartbeat: {}\nheartbeat = \"{}\"\nping_interval = \"{}\"\npong_timeout = \"{}\"\nhangup = {}\n\
             checklist = \"{}\"\nlocks = \"{}\"\norigins = [{}]\nmax_outbox_bytes = {}\nproxy_protocol = {}\n",
            r.name,
            r.listen,
            r.path,
            r.profile.as_str(),
            names.join(", "),
            r.heartbeat.rule(r.ping_interval, r.pong_timeout),
            match r.heartbeat {
                Heartbeat::Ws => "ws",
                Heartbeat::Json => "json",
            },
            super::duration_text(r.ping_interval),
            super::duration_text(r.pong_timeout),
            r.hangup,
            if r.preflight.extended { "extended" } else { "legacy" },
            r.preflight.locks.as_str(),
            origins.join(", "),
            r.max_outbox_bytes,
            r.proxy_protocol,
        ));
        if r.access.is_restricted() {
            let list = |v: &[String]| {
                let items: Vec<String> = v.iter().map(|g| format!("{g:?}")).collect();
                items.join(", ")
            };
            out.push_str(&format!(
                "auth = \"{}\"\nallow_subscribe = [{}]\nallow_watch = [{}]\n",
                r.access.mode.as_str(),
                list(&r.access.allow_subscribe),
                list(&r.access.allow_watch)
            ));
        }
        if r.profile == Profile::Ess {
            if let Some(url) = &r.amqp {
                out.push_str(&format!("amqp = {:?}\n", mask_password(url)));
            }
            out.push_str(&format!(
                "stream_port = {}\nstats_interval = {}\n",
                r.stream_port, r.stats_interval
            ));
        }
        if let Some(eio) = &r.eio {
            let channels: Vec<String> = r.channels.iter().map(|c| format!("{c:?}")).collect();
            out.push_str(&format!(
                "# Engine.IO: pingInterval = ping_interval, pingTimeout = pong_timeout\n\
                 max_payload = {}\nchannels = [{}]\n",
                eio.max_payload_bytes,
                channels.join(", ")
            ));
            if let Some(db) = &r.echoes_db {
                out.push_str(&format!("echoes_db = {:?}\n", db.display().to_string()));
            }
        }
        if let Some(registry) = &r.registry {
            out.push_str(&format!(
                "registry = {:?}\n",
                registry.display().to_string()
            ));
        }
        if let Some(ingress) = &r.ingress {
            out.push_str(&format!(
                "# location: {} (ESS_INGRESS_LOCATION, ESS_INGRESS_SECURE)\n",
                ingress.url("<uuid>"),
            ));
        }
    }
    out
}

/// `url` with the password of its userinfo replaced, for printing.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:{}@{host}{path}", super::REDACTED)
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> RouteDefaults {
        RouteDefaults {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(20),
            max_outbox_bytes: 1 << 20,
            ingress: Ingress::default(),
        }
    }

    fn redis_source(name: &str) -> SourceConfig {
        SourceConfig::catch_all(name, RedisUrl::parse("redis://h:1/0").expect("url"))
    }

    fn tables(text: &str) -> Vec<toml::Table> {
        #[derive(serde::Deserialize)]
        struct F {
            route: Vec<toml::Table>,
        }
        toml::from_str::<F>(text).expect("toml").route
    }

    #[test]
    fn defaults_follow_the_profile() {
        let mut raw = Vec::new();
        let file = Origin::File("f.toml".into());
        let t = tables(
            "[[route]]\nname = \"p\"\nlisten = \"127.0.0.1:1\"\nprofile = \"preflight\"\n\
             [[route]]\nname = \"n\"\nlisten = \"127.0.0.1:2\"\nprofile = \"native\"\n",
        );
        merge_tables(&mut raw, &t, &file).expect("valid");
        let routes = resolve(&raw, &[redis_source("r")], &defaults()).expect("valid");
        assert_eq!(routes[0].heartbeat, Heartbeat::Json);
        assert_eq!(routes[0].ping_interval, Duration::from_secs(30));
        assert_eq!(routes[0].pong_timeout, Duration::from_secs(65));
        assert_eq!(routes[0].path, "/*");
        assert!(!routes[0].preflight.extended);
        assert_eq!(
            routes[0].preflight.locks,
            LockStyle::Both,
            "the fixed keys and every locked:* field"
        );
        assert_eq!(routes[1].heartbeat, Heartbeat::Ws);
        assert_eq!(
            routes[1].pong_timeout,
            Duration::from_secs(20),
            "--pong-timeout"
        );
    }

    #[test]
    fn later_layers_override_key_by_key() {
        let mut raw = Vec::new();
        let preset = Origin::Flag("preset");
        merge_tables(&mut raw, &preset_routes(Preset::Weppcloud), &preset).expect("preset");
        let file = Origin::File("f.toml".into());
        let t = tables("[[route]]\nname = \"preflight\"\nping_interval = \"5s\"\n");
        merge_tables(&mut raw, &t, &file).expect("file");
        merge_flags(&mut raw, &["preflight.hangup=true".to_owned()]).expect("flag");
        let sources = preset_sources(Preset::Weppcloud, None);
        let routes = resolve(&raw, &sources, &defaults()).expect("valid");
        let p = &routes[0];
        assert_eq!(p.listen.port(), 9001, "untouched preset key");
        assert_eq!(p.ping_interval, Duration::from_secs(5), "file over preset");
        assert!(p.hangup, "flag over everything");
        assert_eq!(
            p.preflight.locks,
            LockStyle::Both,
            "the preset's lock style"
        );
        assert_eq!(p.sources, vec![0]);
        assert_eq!(routes[1].sources, vec![1], "status reads the second source");
    }

    #[test]
    fn bad_routes_name_the_route_key_and_origin() {
        let reason = |text: &str, sources: &[SourceConfig]| {
            let mut raw = Vec::new();
            let file = Origin::File("f.toml".into());
            match merge_tables(&mut raw, &tables(text), &file) {
                Err(e) => e.reason,
                Ok(()) => match resolve(&raw, sources, &defaults()) {
                    Err(e) => {
                        assert_eq!(e.origin, file);
                        e.reason
                    }
                    Ok(_) => String::new(),
                },
            }
        };
        let r = [redis_source("r")];
        let base = "[[route]]\nname = \"x\"\nlisten = \"127.0.0.1:1\"\n";
        assert!(reason(&format!("{base}profile = \"nope\"\n"), &r).contains("\"x\" profile"));
        assert!(
            reason(&format!("{base}profile = \"status\"\nfoo = 1\n"), &r).contains("unknown key")
        );
        assert!(reason(base, &r).contains("has no profile"));
        // A `--route` override of a preset route given without its preset.
        let mut raw = Vec::new();
        merge_flags(&mut raw, &["preflight.listen=127.0.0.1:9001".to_owned()]).expect("merge");
        let e = resolve(&raw, &r, &defaults()).expect_err("no profile");
        assert_eq!(e.origin, Origin::Flag("route"));
        assert!(
            e.reason.starts_with(
                "--route preflight.listen=… names route \"preflight\", which has no profile: no \
                 --preset given defines this route"
            ),
            "{}",
            e.reason
        );
        assert!(
            e.reason
                .contains("add --preset weppcloud, or set preflight.profile"),
            "{}",
            e.reason
        );
        let mut raw = Vec::new();
        merge_flags(&mut raw, &["mine.listen=127.0.0.1:9001".to_owned()]).expect("merge");
        let e = resolve(&raw, &r, &defaults()).expect_err("no profile");
        assert!(
            e.reason.contains("(set mine.profile to native"),
            "{}",
            e.reason
        );
        let short = format!("{base}profile = \"status\"\npong_timeout = \"50ms\"\n");
        assert!(reason(&short, &r).contains("below the minimum, 100ms"));
        let equal = format!("{base}profile = \"status\"\nping_interval = 5\npong_timeout = 5\n");
        assert!(
            reason(&equal, &r).is_empty(),
            "a timeout may equal the interval"
        );
        let unknown = format!("{base}profile = \"status\"\nsources = [\"zz\"]\n");
        assert!(reason(&unknown, &r).contains("no source named \"zz\""));
        let no_redis = format!("{base}profile = \"bess\"\n");
        assert!(reason(&no_redis, &[]).contains("reads Redis keys"));
        assert!(
            reason(&format!("{base}profile = \"status\"\n"), &[]).is_empty(),
            "status needs no Redis"
        );
    }

    #[test]
    fn locks_takes_each_style_by_name_and_refuses_others() {
        let locks = |value: &str| {
            let mut raw = Vec::new();
            let text = format!(
                "[[route]]\nname = \"p\"\nlisten = \"127.0.0.1:1\"\nprofile = \"preflight\"\n\
                 locks = \"{value}\"\n"
            );
            merge_tables(&mut raw, &tables(&text), &Origin::File("f.toml".into()))
                .expect("known keys");
            resolve(&raw, &[redis_source("r")], &defaults())
                .map(|routes| routes[0].preflight.locks)
                .map_err(|e| e.reason)
        };
        for style in LockStyle::ALL {
            assert_eq!(locks(style.as_str()).ok(), Some(style));
        }
        let refused = locks("fixed").expect_err("not a style");
        assert!(refused.contains("\"p\" locks"), "{refused}");
        assert!(refused.contains("both, legacy or dynamic"), "{refused}");
    }

    #[test]
    fn ess_api_routes_get_a_registry_and_the_ingress() {
        let resolve_text = |text: &str, ingress: Ingress| {
            let mut raw = Vec::new();
            merge_tables(&mut raw, &tables(text), &Origin::File("f.toml".into()))?;
            let d = RouteDefaults {
                ingress,
                ..defaults()
            };
            resolve(&raw, &[], &d)
        };
        let base = "[[route]]\nname = \"api\"\nlisten = \"127.0.0.1:1\"\nprofile = \"ess_api\"\n";
        let r = resolve_text(base, Ingress::default()).expect("valid")[0].clone();
        assert_eq!(r.profile, Profile::EssApi);
        assert_eq!(r.registry, Some(PathBuf::from(DEFAULT_REGISTRY)));
        assert_eq!(
            r.ingress.expect("ingress").url("u"),
            "ws://localhost:8080/event-stream/u"
        );
        let secure = Ingress::from_env(Some("ess.example".into()), Some("yes".into()));
        let r = resolve_text(&format!("{base}registry = \"/tmp/x.db\"\n"), secure).expect("valid")
            [0]
        .clone();
        assert_eq!(r.registry, Some(PathBuf::from("/tmp/x.db")));
        assert_eq!(
            r.ingress.expect("ingress").url("u"),
            "wss://ess.example/event-stream/u"
        );
        assert!(!Ingress::from_env(None, Some("true".into())).secure);
        let native = "[[route]]\nname = \"n\"\nlisten = \"127.0.0.1:1\"\nprofile = \"native\"\n\
                      registry = \"x.db\"\n";
        let e = resolve_text(native, Ingress::default()).expect_err("not ess_api");
        assert!(
            e.reason.contains("only the ess and ess_api profiles"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn a_preset_redis_url_keeps_each_source_db() {
        let url = RedisUrl::parse("redis://:pw@10.0.0.9:6400/7").expect("url");
        let w = preset_sources(Preset::Weppcloud, Some(&url));
        assert_eq!((w[0].url.db, w[1].url.db), (0, 2));
        assert!(
            w.iter()
                .all(|s| s.url.host == "10.0.0.9" && s.url.port == 6400)
        );
        assert_eq!(w[0].url.password.as_deref(), Some("pw"));
        assert_eq!(preset_sources(Preset::Bess, Some(&url))[0].url.db, 7);
    }
}
