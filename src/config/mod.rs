//! Configuration: every knob of the gateway, resolved and checked once at startup.
//!
//! A [`Config`] is the complete, validated set of knobs. Each knob takes its value from the
//! first source that sets it, in this order:
//!
//! 1. a command-line flag (`--max-outbox-bytes 2MiB`),
//! 2. a `RINGCAST_*` environment variable (`RINGCAST_MAX_OUTBOX_BYTES=2MiB`; an empty variable
//!    counts as unset),
//! 3. the optional TOML file named by `--config FILE` or `RINGCAST_CONFIG`
//!    (`max_outbox_bytes = "2MiB"`),
//! 4. the built-in default (the `DEFAULT_*` constants below).
//!
//! `redis` has two more layers between the file and the default, so that the gateway finds the
//! same Redis as the services around it: `REDIS_URL` (same syntax as `--redis`; `REDIS_PASSWORD`
//! supplies the password when that URL has none), then the seed services' `REDIS_HOST`,
//! `REDIS_PORT`, `REDIS_DB` and `REDIS_PASS`. Unset, the embedded broker
//! is the source. `max_days_store_echoes` likewise falls back to the SuperDARN original's own
//! `MAX_DAYS_STORE_ECHOES` after the file.
//!
//! Sizes are a bare number of bytes or a number with `KiB`, `MiB` or `GiB`. `KB`, `MB` and `GB`
//! are accepted and mean the same binary units (1KB = 1024 bytes); units ignore case. Durations
//! are `250ms`, `25s`, `5m`, or a bare number of seconds. In the TOML file, sizes and durations
//! may be integers (bytes, seconds) or strings with a unit.
//!
//! Ownership: `main` builds the `Config` on its own thread before anything else starts
//! ([`Config::load`]). From then on it is read-only and cloned into whoever needs it; nothing
//! here runs on a shard.
//!
//! Invariants of a `Config` returned by [`Config::try_parse_from`]:
//! - every knob is inside the range its field documents; every interval and timeout the sweep
//!   enforces is at least [`MIN_HEARTBEAT`];
//! - `ws_path` and `echo_path` start with `/`, differ, and are not one of the built-in HTTP routes;
//! - the API key never appears in `Debug` output, in [`Config::to_toml`] or in an error, and
//!   the Redis password never appears in `Debug` output or in [`Config::to_toml`];
//! - `debug_stall_shard`, when set, is below `shards`.
//!
//! A bad value from any source is one [`ConfigError`] line naming the knob and the source;
//! [`Config::load`] prints it and exits with code 2. (A `Config` built by hand, for example
//! `Config { shards: 2, ..Config::default() }` in a test, is not checked.)
//!
//! Length: this file is past the 300-line guide on purpose. Each knob is declared once per
//! source (flag, file key, field, default) and those declarations, their parsers and their
//! tests are easier to keep in step side by side than spread over several files.

use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, Parser};
use serde::Deserialize;

use crate::source::radar::config::{TcpFeed, ZmqAddr, is_site_code, parse_radars, parse_zmq_addr};
use crate::source::redis::RedisUrl;

mod access;
pub mod routes;

pub use routes::{Heartbeat, Preset, Profile, RouteConfig};

const KIB: u64 = 1_024;
const MIB: u64 = 1_024 * KIB;
const GIB: u64 = 1_024 * MIB;

/// Default [`Config::listen`]: loopback only, so exposing the gateway is a deliberate choice.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8_080));
/// Default [`Config::max_message_bytes`]: 64 KiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1_024;
/// Default [`Config::max_outbox_bytes`]: 1 MiB.
pub const DEFAULT_MAX_OUTBOX_BYTES: usize = 1_024 * 1_024;
/// Default [`Config::ping_interval`]: 25 s, under the 30 s idle cut of common proxies.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);
/// Default [`Config::pong_timeout`]: 20 s, uvicorn's (and the `websockets` library's) default.
/// A protocol pong comes back in one round trip, even from a background browser tab.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`Config::idle_timeout`]: 60 s for a client to finish its HTTP request (or to send
/// the next one on a keep-alive connection).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`Config::ws_path`].
pub const DEFAULT_WS_PATH: &str = "/ws";
/// Default [`Config::log_level`].
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default [`Config::max_connections`], for the whole process.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default [`Config::max_subscriptions`], per connection.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1_024;
/// Default [`Config::shard_inbox`], in messages.
pub const DEFAULT_SHARD_INBOX: usize = 65_536;
/// Default [`Config::shutdown_timeout`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(4);
/// Default [`Config::read_buffer_bytes`]: 4 KiB.
pub const DEFAULT_READ_BUFFER_BYTES: usize = 4 * 1_024;
/// Default [`Config::redis_resp`]: RESP3, which falls back to RESP2 on servers without `HELLO`.
pub const DEFAULT_REDIS_RESP: u8 = 3;
/// Default [`Config::redis_backoff_max`]: 1 s, so clients see events again within about a
/// second of Redis coming back.
pub const DEFAULT_REDIS_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Default [`Config::redis_connect_timeout`]: 2 s.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default [`Config::head_timeout`]: 10 s for a client to send a whole request (haproxy's
/// usual `timeout http-request`); after it, 408 and close (slowloris).
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

const MAX_SHARDS: usize = 1_024;
const MAX_SHARD_INBOX: usize = 1 << 24;
/// The shortest ping interval, pong timeout or idle timeout, native or per route. The sweep that
/// enforces them runs every quarter of the shortest one, so a shorter value would mostly measure
/// the sweep (and ping a whole shard every few milliseconds).
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
const MIN_REDIS_BACKOFF_MAX: Duration = Duration::from_millis(100);
const MAX_REDIS_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
const MIN_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// HTTP routes served on the same port; `ws_path` and `echo_path` must not shadow them.
const RESERVED_PATHS: [&str; 3] = ["/healthz", "/metrics", "/api/publish"];
/// What `Debug` and [`Config::to_toml`] show instead of the API key.
pub(crate) const REDACTED: &str = "<redacted>";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The name used by `--log-format` and the TOML file.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Which I/O runtime the shards run on (`--io-backend`; see `src/rt/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring, or epoll with a warning when io_uring cannot be set up (the default).
    Auto,
    /// io_uring only: the start fails when it cannot be set up.
    IoUring,
    /// epoll (a plain tokio runtime), for hosts where io_uring is forbidden.
    Epoll,
}

impl IoBackend {
    /// The name used by `--io-backend` and the TOML file.
    pub fn as_str(self) -> &'static str {
        match self {
            IoBackend::Auto => "auto",
            IoBackend::IoUring => "io-uring",
            IoBackend::Epoll => "epoll",
        }
    }
}

/// Every knob of the gateway. See the module docs for where values come from.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the listeners bind (each shard binds its own with `SO_REUSEPORT`; an address
    /// another process listens on is refused at start). Default `127.0.0.1:8080`; port 0 asks
    /// the kernel for a free port (tests use this).
    pub listen: SocketAddr,
    /// Number of shard threads, 1..=1024. Default: the number of available CPUs (1 if unknown).
    /// More shards than cores only adds context switches; fewer leaves cores idle.
    pub shards: usize,
    /// Pin shard `i` to core `i`. Default false. Pinning keeps caches warm but fights other
    /// pinned processes on a shared host.
    pub pin_cores: bool,
    /// The shards' I/O runtime. Default [`IoBackend::Auto`]: io_uring, or epoll (with one
    /// warning naming the cause) when io_uring cannot be set up.
    pub io_backend: IoBackend,
    /// Largest client message, in bytes, 1 KiB..=64 MiB. Default 64 KiB. Larger allows bigger
    /// commands but lets one client make a shard buffer more.
    pub max_message_bytes: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer (close code 4000),
    /// at least 4 KiB. Default 1 MiB. Larger rides out longer stalls at the cost of memory per
    /// slow client.
    pub max_outbox_bytes: usize,
    /// How often the server sends a WebSocket ping, at least 100 ms. Default 25 s. Shorter finds
    /// dead peers sooner and costs a frame per connection per interval.
    pub ping_interval: Duration,
    /// A WebSocket that leaves a ping unanswered for this long is closed (close code 4001); a
    /// client that answers pings may stay silent for ever. At least 100 ms. Default 20 s.
    /// Shorter finds dead peers sooner but closes clients on a slow or lossy network.
    pub pong_timeout: Duration,
    /// A connection still in the HTTP phase (an unfinished request, an idle keep-alive) is cut
    /// off after this long without input. At least 100 ms. Default 60 s. WebSockets are not
    /// subject to it.
    pub idle_timeout: Duration,
    /// When set, `POST /api/publish` needs `Authorization: Bearer KEY`. Default none (no key
    /// needed). Non-empty printable ASCII without spaces; never printed.
    pub api_key: Option<String>,
    /// Path of a WebSocket echo endpoint, for testing clients. Default none (off). Starts with `/`.
    pub echo_path: Option<String>,
    /// Path of the WebSocket endpoint. Default `/ws`. Starts with `/`.
    pub ws_path: String,
    /// Log line format. Default [`LogFormat::Text`].
    pub log_format: LogFormat,
    /// Log filter, a `tracing` `EnvFilter` directive such as `info` or `ringcast=debug,warn`.
    /// Default `info`. The binary lets `RUST_LOG`, when set, override it (see `main.rs`).
    pub log_level: String,
    /// Open connections for the whole process, at least 1; each shard accepts up to
    /// `ceil(max_connections / shards)`. Default 100_000. Bounds memory and file descriptors.
    pub max_connections: usize,
    /// Channels plus patterns one connection may subscribe to, at least 1. Default 1_024.
    pub max_subscriptions: usize,
    /// Capacity of each bounded hub-to-shard channel, in messages, 16..=16_777_216. Default
    /// 65_536. When a shard's inbox is full its events are dropped and counted; larger absorbs
    /// longer bursts at the cost of memory and latency.
    pub shard_inbox: usize,
    /// How long graceful shutdown waits for clients to flush, at most 30 s. Default 4 s. The
    /// process exits within `shutdown_timeout` plus about 0.5 s.
    pub shutdown_timeout: Duration,
    /// Most bytes one read takes from a client socket, in bytes, 512..=8 KiB. Default 4 KiB.
    /// Reads go into one buffer per shard (connections hold no read buffer while idle), so this
    /// only trades read calls per large message against a few KiB per shard.
    pub read_buffer_bytes: usize,
    /// Redis server to use as the source, `redis://[user:pass@]host[:port][/db]`, or a Redis
    /// Cluster, `redis+cluster://[user:pass@]host:port[,host:port…]`. Default none:
    /// the embedded broker. After the flag, `RINGCAST_REDIS` and the file, `REDIS_URL` and then
    /// `REDIS_HOST`/`REDIS_PORT`/`REDIS_DB`/`REDIS_PASS` are tried. The password is never
    /// printed (`Debug` and [`Config::to_toml`] show the URL's `Display`, with `***`).
    pub redis: Option<RedisUrl>,
    /// Set `notify-keyspace-events` to include `KA` at startup, and again after every reconnect,
    /// on each source that serves keyspace watches. Default false: the server's setting is left
    /// alone (a warning names the source), and watches only see changes if an operator enabled
    /// the notifications. True needs `CONFIG SET` rights and changes the server
    /// for every client.
    pub redis_set_notify: bool,
    /// Read a single Redis's pub/sub connection on a shard's own runtime (source *i* on shard
    /// *i* mod shards), so its events reach that shard's clients without crossing a thread
    /// (decision 0017). Default true; false reads it on the source's subscriber thread, as
    /// before. A cluster's nodes are read on their own threads either way.
    pub redis_read_on_shard: bool,
    /// RESP protocol version, 2 or 3. Default 3, which falls back to 2 on servers without
    /// `HELLO`; 2 skips the `HELLO` round trip.
    pub redis_resp: u8,
    /// Cap of the reconnect backoff to Redis, 100 ms..=5 min. Default 1 s. The backoff starts
    /// at 100 ms and doubles up to this cap, with ±25 % jitter; a larger cap spares a struggling
    /// server but leaves subscribers without events for longer after it recovers.
    pub redis_backoff_max: Duration,
    /// Timeout of the TCP connect to Redis and of each read and write of the handshake,
    /// 100 ms..=60 s. Default 2 s. Shorter gives up on an unreachable server sooner (then the
    /// backoff applies); longer tolerates slow links.
    pub redis_connect_timeout: Duration,
    /// `radars.config.json` of the SuperDARN radar TCP feeds (`{"<site>": {"host": …,
    /// "port": …}}`). Default none: no radar feeds. When set, the file is read at startup (a
    /// missing or bad file stops the start, exit 2) and one radar source serves every feed in
    /// it: channel `<site>` (one event per fitacf record) and `<site>/echoes` (echo counts at
    /// each scan start), on every listener ([`Config::source_for`]).
    pub radars: Option<PathBuf>,
    /// The feeds read from [`Config::radars`], sorted by site (empty without it, or for `{}`).
    /// Derived; not a knob of its own.
    pub radar_feeds: Vec<TcpFeed>,
    /// The ZMQ PUB socket of the Canadian radars (`host:port` or `tcp://host:port`; the
    /// original's `CANADA_ADDR`, read after the file as a fallback). Default none: no ZMQ feed.
    /// When set, one SUB socket connects there (retrying while it is down) and every site it
    /// carries goes out as `<site>` and `<site>/echoes` from the radar source, which then exists
    /// even without `radars` ([`Config::radar_source`], [`Config::is_radar_channel`]).
    pub canada_addr: Option<ZmqAddr>,
    /// SuperDARN echo counts (`GET /echoes`) older than this many days are deleted, at start
    /// and then hourly ([`crate::store::echoes`]). Whole days, at least 1. Default 30, the
    /// original's (`None` keeps them for ever; no knob value gives it). After the flag, `RINGCAST_MAX_DAYS_STORE_ECHOES` and the file, the original's
    /// `MAX_DAYS_STORE_ECHOES` is read. Smaller bounds the file; larger keeps more history.
    pub max_days_store_echoes: Option<u32>,
    /// The native listener expects a PROXY protocol v1 or v2 header (from haproxy
    /// `send-proxy-v2`) before anything else; its address becomes the client's. Default false.
    /// Routes set it per route (`proxy_protocol = true`).
    pub proxy_protocol: bool,
    /// Open connections one client address may hold (IPv6: per /64), refused with HTTP 429
    /// past it. 0 (the default): no cap. Counted in a fixed table shared by the shards
    /// ([`crate::limits`]), where a hash collision can only refuse early.
    pub max_connections_per_ip: usize,
    /// New connections one client address may open per second, with a burst (`10/40`).
    /// Default none (no rate). Past it: HTTP 429.
    pub handshake_rate_per_ip: Option<crate::limits::Rate>,
    /// Native-protocol commands one connection may send per second, with a burst (`50/200`).
    /// Default none (no rate). Past it: the `rate_limited` error reply, command not run.
    pub command_rate: Option<crate::limits::Rate>,
    /// A client must send a whole request (the PROXY header, the head and any body) within
    /// this long of its connection (or of the request's first byte on keep-alive), else 408
    /// and close. At least 100 ms. Default 10 s.
    pub head_timeout: Duration,
    /// Test hook (hidden flag and variable only, never in the file): shard N never drains its
    /// inbox, to prove a stalled shard delays no one else. Default none. Must be below `shards`.
    pub debug_stall_shard: Option<usize>,
    /// Every Redis source, in routing order: the file's `[[source]]` tables, then `--redis` as
    /// the catch-all (with a preset: the preset's sources, addressed by `--redis`; squonk2 has
    /// none, so there `--redis` is the catch-all, and the first source holds the replay lease).
    /// Empty means the embedded broker. Derived; not a knob of its own.
    pub sources: Vec<SourceConfig>,
    /// `--preset`: a built-in set of routes and sources.
    pub preset: Option<Preset>,
    /// Routes on extra listeners (profiles), from the preset, `[[route]]` tables and `--route`.
    pub routes: Vec<RouteConfig>,
    /// `--print-config` (command line only): print [`Config::to_toml`] and exit 0.
    pub print_config: bool,
    /// The native listener's access policy (`--auth`, `--allow-subscribe`, `--allow-watch`).
    /// Default: no token, everything allowed.
    pub access: crate::auth::Access,
    /// The keys JWTs are verified with (`--jwt-secret`, `--jwt-public-key`, `--jwt-audience`,
    /// `--jwt-issuer`). Default none. The secret is never printed.
    pub jwt: crate::auth::JwtKeys,
    /// `--admin-listen`: where `/metrics` and `/healthz` are served instead of the native
    /// listener (which then answers 404 for them). Default none: served on the native listener.
    pub admin_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: DEFAULT_LISTEN,
            shards: default_shards(),
            pin_cores: false,
            io_backend: IoBackend::Auto,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_outbox_bytes: DEFAULT_MAX_OUTBOX_BYTES,
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            api_key: None,
            echo_path: None,
            ws_path: DEFAULT_WS_PATH.to_owned(),
            log_format: LogFormat::Text,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            shard_inbox: DEFAULT_SHARD_INBOX,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            read_buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
            redis: None,
            redis_set_notify: false,
            redis_read_on_shard: true,
            redis_resp: DEFAULT_REDIS_RESP,
            redis_backoff_max: DEFAULT_REDIS_BACKOFF_MAX,
            redis_connect_timeout: DEFAULT_REDIS_CONNECT_TIMEOUT,
            radars: None,
            radar_feeds: Vec::new(),
            canada_addr: None,
            max_days_store_echoes: Some(DEFAULT_MAX_DAYS_STORE_ECHOES),
            proxy_protocol: false,
            max_connections_per_ip: 0,
            handshake_rate_per_ip: None,
            command_rate: None,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            debug_stall_shard: None,
            sources: Vec::new(),
            preset: None,
            routes: Vec::new(),
            print_config: false,
            access: crate::auth::Access::default(),
            jwt: crate::auth::JwtKeys::default(),
            admin_listen: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("shards", &self.shards)
            .field("pin_cores", &self.pin_cores)
            .field("io_backend", &self.io_backend)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_outbox_bytes", &self.max_outbox_bytes)
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .field("echo_path", &self.echo_path)
            .field("ws_path", &self.ws_path)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("max_connections", &self.max_connections)
            .field("max_subscriptions", &self.max_subscriptions)
            .field("shard_inbox", &self.shard_inbox)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("read_buffer_bytes", &self.read_buffer_bytes)
            // The URL's Display hides the password.
            .field("redis", &self.redis.as_ref().map(RedisUrl::to_string))
            .field("redis_set_notify", &self.redis_set_notify)
            .field("redis_read_on_shard", &self.redis_read_on_shard)
            .field("redis_resp", &self.redis_resp)
            .field("redis_backoff_max", &self.redis_backoff_max)
            .field("redis_connect_timeout", &self.redis_connect_timeout)
            .field("radars", &self.radars)
            .field("radar_feeds", &self.radar_feeds)
            .field("canada_addr", &self.canada_addr)
            .field("max_days_store_echoes", &self.max_days_store_echoes)
            .field("proxy_protocol", &self.proxy_protocol)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("handshake_rate_per_ip", &self.handshake_rate_per_ip)
            .field("command_rate", &self.command_rate)
            .field("head_timeout", &self.head_timeout)
            .field("debug_stall_shard", &self.debug_stall_shard)
            .field("preset", &self.preset)
            .field("routes", &self.routes)
            .field("print_config", &self.print_config)
            .field("access", &self.access)
            .field("jwt", &self.jwt)
            .field("admin_listen", &self.admin_listen)
            .finish()
    }
}

/// Why the configuration could not be built. Every variant is the operator's fault; `Display`
/// is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// clap's own outcome: `--help`, `--version`, an unknown flag, a missing value. Call
    /// [`clap::Error::exit`], which prints it and exits 0 for help/version, 2 otherwise.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// A knob's value is malformed or out of range.
    #[error("invalid value for {knob} ({origin}): {reason}")]
    Invalid {
        /// The knob, spelled as its flag without dashes (`max-outbox-bytes`).
        knob: &'static str,
        /// Where the bad value came from.
        origin: Origin,
        /// What is wrong, with an example of a good value. Never contains the API key.
        reason: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {} ({origin}): {error}", path.display())]
    ReadFile {
        /// The path as given.
        path: PathBuf,
        /// Where the path came from (`--config` or `RINGCAST_CONFIG`).
        origin: Origin,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The config file is not TOML, or has an unknown key or a misplaced table.
    #[error("config file {}{}: {message}", path.display(), line_suffix(*line))]
    File {
        /// The path as given.
        path: PathBuf,
        /// 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        /// The parser's message, on one line.
        message: String,
    },
}

/// Where a knob's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag; holds the flag name without dashes.
    Flag(&'static str),
    /// An environment variable; holds its name.
    Env(&'static str),
    /// The TOML config file at this path.
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(name) => write!(f, "flag --{name}"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|n| format!(", line {n}")).unwrap_or_default()
}

/// One knob's names in each source.
struct Knob {
    /// Flag without dashes, and the name used in errors (`max-outbox-bytes`).
    name: &'static str,
    /// Environment variable (`RINGCAST_MAX_OUTBOX_BYTES`).
    env: &'static str,
    /// TOML key and clap argument id (`max_outbox_bytes`).
    key: &'static str,
    /// The knob's value in the file, if the file sets it.
    in_file: fn(&FileConfig) -> Option<&toml::Value>,
}

/// `--config`, which names the file and so is not a file key itself.
const CONFIG: Knob = Knob {
    name: "config",
    env: "RINGCAST_CONFIG",
    key: "config",
    in_file: |_| None,
};

macro_rules! knobs {
    ($($konst:ident = $name:literal, $env:literal, $key:ident;)*) => {
        $(const $konst: Knob = Knob {
            name: $name,
            env: $env,
            key: stringify!($key),
            in_file: |f| f.$key.as_ref(),
        };)*
        /// The knobs that the file can set, in file order.
        #[cfg(test)]
        const FILE_KNOBS: &[Knob] = &[$($konst),*];
    };
}

knobs! {
    LISTEN = "listen", "RINGCAST_LISTEN", listen;
    SHARDS = "shards", "RINGCAST_SHARDS", shards;
    PIN_CORES = "pin-cores", "RINGCAST_PIN_CORES", pin_cores;
    IO_BACKEND = "io-backend", "RINGCAST_IO_BACKEND", io_backend;
    MAX_MESSAGE_BYTES = "max-message-bytes", "RINGCAST_MAX_MESSAGE_BYTES", max_message_bytes;
    MAX_OUTBOX_BYTES = "max-outbox-bytes", "RINGCAST_MAX_OUTBOX_BYTES", max_outbox_bytes;
    PING_INTERVAL = "ping-interval", "RINGCAST_PING_INTERVAL", ping_interval;
    PONG_TIMEOUT = "pong-timeout", "RINGCAST_PONG_TIMEOUT", pong_timeout;
    IDLE_TIMEOUT = "idle-timeout", "RINGCAST_IDLE_TIMEOUT", idle_timeout;
    API_KEY = "api-key", "RINGCAST_API_KEY", api_key;
    ECHO_PATH = "echo-path", "RINGCAST_ECHO_PATH", echo_path;
    WS_PATH = "ws-path", "RINGCAST_WS_PATH", ws_path;
    LOG_FORMAT = "log-format", "RINGCAST_LOG_FORMAT", log_format;
    LOG_LEVEL = "log-level", "RINGCAST_LOG_LEVEL", log_level;
    MAX_CONNECTIONS = "max-connections", "RINGCAST_MAX_CONNECTIONS", max_connections;
    MAX_SUBSCRIPTIONS = "max-subscriptions", "RINGCAST_MAX_SUBSCRIPTIONS", max_subscriptions;
    SHARD_INBOX = "shard-inbox", "RINGCAST_SHARD_INBOX", shard_inbox;
    SHUTDOWN_TIMEOUT = "shutdown-timeout", "RINGCAST_SHUTDOWN_TIMEOUT", shutdown_timeout;
    READ_BUFFER_BYTES = "read-buffer-bytes", "RINGCAST_READ_BUFFER_BYTES", read_buffer_bytes;
    REDIS = "redis", "RINGCAST_REDIS", redis;
    REDIS_SET_NOTIFY = "redis-set-notify", "RINGCAST_REDIS_SET_NOTIFY", redis_set_notify;
    REDIS_READ_ON_SHARD = "redis-read-on-shard", "RINGCAST_REDIS_READ_ON_SHARD",
        redis_read_on_shard;
    REDIS_RESP = "redis-resp", "RINGCAST_REDIS_RESP", redis_resp;
    REDIS_BACKOFF_MAX = "redis-backoff-max", "RINGCAST_REDIS_BACKOFF_MAX", redis_backoff_max;
    REDIS_CONNECT_TIMEOUT = "redis-connect-timeout", "RINGCAST_REDIS_CONNECT_TIMEOUT",
        redis_connect_timeout;
    RADARS = "radars", "RINGCAST_RADARS", radars;
    CANADA_ADDR = "canada-addr", "RINGCAST_CANADA_ADDR", canada_addr;
    MAX_DAYS_STORE_ECHOES = "max-days-store-echoes", "RINGCAST_MAX_DAYS_STORE_ECHOES",
        max_days_store_echoes;
    AUTH = "auth", "RINGCAST_AUTH", auth;
    ALLOW_SUBSCRIBE = "allow-subscribe", "RINGCAST_ALLOW_SUBSCRIBE", allow_subscribe;
    ALLOW_WATCH = "allow-watch", "RINGCAST_ALLOW_WATCH", allow_watch;
    JWT_SECRET = "jwt-secret", "RINGCAST_JWT_SECRET", jwt_secret;
    JWT_PUBLIC_KEY = "jwt-public-key", "RINGCAST_JWT_PUBLIC_KEY", jwt_public_key;
    JWT_AUDIENCE = "jwt-audience", "RINGCAST_JWT_AUDIENCE", jwt_audience;
    JWT_ISSUER = "jwt-issuer", "RINGCAST_JWT_ISSUER", jwt_issuer;
    ADMIN_LISTEN = "admin-listen", "RINGCAST_ADMIN_LISTEN", admin_listen;
    PROXY_PROTOCOL = "proxy-protocol", "RINGCAST_PROXY_PROTOCOL", proxy_protocol;
    MAX_CONNECTIONS_PER_IP = "max-connections-per-ip", "RINGCAST_MAX_CONNECTIONS_PER_IP",
        max_connections_per_ip;
    HANDSHAKE_RATE_PER_IP = "handshake-rate-per-ip", "RINGCAST_HANDSHAKE_RATE_PER_IP",
        handshake_rate_per_ip;
    COMMAND_RATE = "command-rate", "RINGCAST_COMMAND_RATE", command_rate;
    HEAD_TIMEOUT = "head-timeout", "RINGCAST_HEAD_TIMEOUT", head_timeout;
}

/// `--preset`: a knob of every layer, but tested on its own (it changes sources and routes,
/// which `every_knob_is_wired_to_its_flag_variable_and_key` does not model).
const PRESET: Knob = Knob {
    name: "preset",
    env: "RINGCAST_PRESET",
    key: "preset",
    in_file: |f| f.preset.as_ref(),
};

/// `--debug-stall-shard`, a test hook: a hidden flag and a variable, never a file key.
const DEBUG_STALL_SHARD: Knob = Knob {
    name: "debug-stall-shard",
    env: "RINGCAST_DEBUG_STALL_SHARD",
    key: "debug_stall_shard",
    in_file: |_| None,
};

/// The `canada-addr` fallback after the file: the SuperDARN original's `.env` variable.
const CANADA_ADDR_VAR: &str = "CANADA_ADDR";
/// The SuperDARN original's retention when `MAX_DAYS_STORE_ECHOES` is unset
/// (`os.getenv("MAX_DAYS_STORE_ECHOES", 30)` in its `app/utils.py`): 30 days.
pub const DEFAULT_MAX_DAYS_STORE_ECHOES: u32 = 30;

/// The `max_days_store_echoes` fallback after the file: the SuperDARN original's variable, so
/// its `.env` keeps working.
const ORIGINAL_MAX_DAYS_VAR: &str = "MAX_DAYS_STORE_ECHOES";

/// The `redis` fallback after the file: a URL, as other tools read it.
const REDIS_URL_VAR: &str = "REDIS_URL";
/// The password for a `REDIS_URL` that carries none (weppcloud's services set both).
const REDIS_PASSWORD_VAR: &str = "REDIS_PASSWORD";
/// The `redis` fallback after `REDIS_URL`: the seed services' variables. `REDIS_HOST` turns it
/// on; the others are optional (see [`RedisUrl::from_seed_env`]).
const REDIS_SEED_VARS: [&str; 4] = ["REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASS"];

const AFTER_HELP: &str = "\
Every option can also be set by its RINGCAST_* environment variable, or in the TOML file given \
by --config under its name in snake_case (max_outbox_bytes = \"1MiB\"). A flag beats the \
environment, which beats the file, which beats the default.
Sizes: bytes, or a number with KiB, MiB or GiB (KB, MB and GB mean the same binary units).
Durations: 250ms, 25s, 5m, or a bare number of seconds.
An invalid value or an unknown file key is reported on one line, with exit code 2.";

/// The command line; the doc comment on each field is its `--help` line. Values stay raw
/// strings with no clap default: parsing happens in [`Layers::resolve`] so a bad value gives
/// the same one-line error from any source, and an absent value lets the env, file and default
/// layers fill in. The `env` attributes document the variables in `--help`; the values
/// themselves are read through [`Layers::env`], so tests can supply an environment.
#[derive(Parser)]
#[command(
    name = "ringcast",
    version,
    about = "A thread-per-core io_uring WebSocket gateway",
    allow_negative_numbers = true,
    after_help = AFTER_HELP
)]
struct Cli {
    /// TOML file with any of the options below; unknown keys are an error [default: none]
    #[arg(long, env = "RINGCAST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, IP:PORT; port 0 picks a free port [default: 127.0.0.1:8080]
    #[arg(long, env = "RINGCAST_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Number of shard threads, 1 to 1024 [default: number of CPUs]
    #[arg(long, env = "RINGCAST_SHARDS", value_name = "N")]
    shards: Option<String>,
    /// Pin each shard thread to its own core (true/false/1/0; the bare flag means true)
    /// [default: false]
    #[arg(long, env = "RINGCAST_PIN_CORES", value_name = "BOOL")]
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    pin_cores: Option<String>,
    /// I/O runtime of the shards: auto (io_uring, or epoll with a warning when io_uring cannot
    /// be set up), io-uring (fail if unavailable) or epoll [default: auto]
    #[arg(long, env = "RINGCAST_IO_BACKEND", value_name = "BACKEND")]
    io_backend: Option<String>,
    /// Maximum size of one client message, in bytes (accepts 64KiB, 1MiB), 1KiB to 64MiB
    /// [default: 64KiB]
    #[arg(long, env = "RINGCAST_MAX_MESSAGE_BYTES", value_name = "SIZE")]
    max_message_bytes: Option<String>,
    /// Bytes queued for one client before it is closed as a slow consumer (code 4000), in
    /// bytes (accepts 512KiB, 1MiB), at least 4KiB [default: 1MiB]
    #[arg(long, env = "RINGCAST_MAX_OUTBOX_BYTES", value_name = "SIZE")]
    max_outbox_bytes: Option<String>,
    /// How often the server pings each client (accepts 250ms, 25s, 5m; a bare number is
    /// seconds), at least 100ms [default: 25s]
    #[arg(long, env = "RINGCAST_PING_INTERVAL", value_name = "DURATION")]
    ping_interval: Option<String>,
    /// Close a WebSocket that leaves a ping unanswered for this long (code 4001); a client
    /// that answers pings may stay silent for ever; at least 100ms [default: 20s]
    #[arg(long, env = "RINGCAST_PONG_TIMEOUT", value_name = "DURATION")]
    pong_timeout: Option<String>,
    /// Cut off a connection still in the HTTP phase (unfinished request, idle keep-alive)
    /// after this long without input; at least 100ms [default: 60s]
    #[arg(long, env = "RINGCAST_IDLE_TIMEOUT", value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Bearer key that POST /api/publish requires; never printed [default: none, no key
    /// needed]
    #[arg(
        long,
        env = "RINGCAST_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Path of a WebSocket echo endpoint for testing, starting with / [default: none, off]
    #[arg(long, env = "RINGCAST_ECHO_PATH", value_name = "PATH")]
    echo_path: Option<String>,
    /// Path of the WebSocket endpoint, starting with / [default: /ws]
    #[arg(long, env = "RINGCAST_WS_PATH", value_name = "PATH")]
    ws_path: Option<String>,
    /// Log format, text or json [default: text]
    #[arg(long, env = "RINGCAST_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter, a tracing EnvFilter directive such as info or ringcast=debug,warn; RUST_LOG,
    /// when set, overrides it [default: info]
    #[arg(long, env = "RINGCAST_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
    /// Maximum open connections for the whole process, split evenly over the shards, at
    /// least 1 [default: 100000]
    #[arg(long, env = "RINGCAST_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<String>,
    /// Maximum channels plus patterns one connection may subscribe to, at least 1
    /// [default: 1024]
    #[arg(long, env = "RINGCAST_MAX_SUBSCRIPTIONS", value_name = "N")]
    max_subscriptions: Option<String>,
    /// Capacity of each shard's inbox, in messages; events for a full inbox are dropped and
    /// counted, 16 to 16777216 [default: 65536]
    #[arg(long, env = "RINGCAST_SHARD_INBOX", value_name = "N")]
    shard_inbox: Option<String>,
    /// How long graceful shutdown waits for clients to flush (the process exits within this
    /// plus about 0.5s), at most 30s [default: 4s]
    #[arg(long, env = "RINGCAST_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    shutdown_timeout: Option<String>,
    /// Most bytes one read takes from a client socket, into the shard's shared read buffer
    /// (idle connections hold none), in bytes (accepts 4KiB), 512 to 8KiB [default: 4KiB]
    #[arg(long, env = "RINGCAST_READ_BUFFER_BYTES", value_name = "SIZE")]
    read_buffer_bytes: Option<String>,
    /// Redis server to use as the source, redis://[user:pass@]host[:port][/db], or a Redis Cluster,
    /// redis+cluster://[user:pass@]host:port[,host:port...]; the password is never printed. When unset here and in the file, REDIS_URL, then REDIS_HOST, REDIS_PORT,
    /// REDIS_DB and REDIS_PASS are tried [default: none, the embedded broker]
    #[arg(
        long,
        env = "RINGCAST_REDIS",
        value_name = "URL",
        hide_env_values = true
    )]
    redis: Option<String>,
    /// Set notify-keyspace-events to include KA at startup and after every reconnect when
    /// keyspace watches need it (true/false/1/0; the bare flag means true) [default: false]
    #[arg(long, env = "RINGCAST_REDIS_SET_NOTIFY", value_name = "BOOL")]
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    redis_set_notify: Option<String>,
    /// Read a single Redis's pub/sub connection on a shard's runtime instead of the source's
    /// own thread (true/false/1/0; the bare flag means true) [default: true]
    #[arg(long, env = "RINGCAST_REDIS_READ_ON_SHARD", value_name = "BOOL")]
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    redis_read_on_shard: Option<String>,
    /// Redis protocol version, 2 or 3; 3 falls back to 2 on servers without HELLO
    /// [default: 3]
    #[arg(long, env = "RINGCAST_REDIS_RESP", value_name = "2|3")]
    redis_resp: Option<String>,
    /// Cap of the Redis reconnect backoff, which starts at 100ms and doubles, with 25%
    /// jitter, 100ms to 5m [default: 1s]
    #[arg(long, env = "RINGCAST_REDIS_BACKOFF_MAX", value_name = "DURATION")]
    redis_backoff_max: Option<String>,
    /// Timeout of the TCP connect to Redis and of each step of the handshake, 100ms to 60s
    /// [default: 2s]
    #[arg(long, env = "RINGCAST_REDIS_CONNECT_TIMEOUT", value_name = "DURATION")]
    redis_connect_timeout: Option<String>,
    /// radars.config.json of the SuperDARN radar TCP feeds, {"<site>": {"host": …, "port": …}};
    /// each site's records go out on channel <site>, echo counts on <site>/echoes
    /// [default: none, no radar feeds]
    #[arg(long, env = "RINGCAST_RADARS", value_name = "FILE")]
    radars: Option<String>,
    /// ZMQ PUB socket of the Canadian SuperDARN radars, host:port or tcp://host:port (env
    /// CANADA_ADDR also works); each site's records go out on channel <site>, echo counts on
    /// <site>/echoes [default: none, no ZMQ feed]
    #[arg(long, env = "RINGCAST_CANADA_ADDR", value_name = "HOST:PORT")]
    canada_addr: Option<String>,
    /// Delete stored SuperDARN echo counts (GET /echoes) older than this many days, at start
    /// and hourly; whole days, at least 1. When unset here and in the file,
    /// MAX_DAYS_STORE_ECHOES (the original's variable) is read [default: 30, the original's]
    #[arg(long, env = "RINGCAST_MAX_DAYS_STORE_ECHOES", value_name = "DAYS")]
    max_days_store_echoes: Option<String>,
    /// Expect a PROXY protocol v1/v2 header (haproxy send-proxy-v2) on the native listener and
    /// take the client address from it; connections without one are closed (true/false/1/0;
    /// the bare flag means true) [default: false]
    #[arg(long, env = "RINGCAST_PROXY_PROTOCOL", value_name = "BOOL")]
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    proxy_protocol: Option<String>,
    /// Open connections one client address (IPv6: /64) may hold; past it HTTP 429; 0 is no cap
    /// [default: 0]
    #[arg(long, env = "RINGCAST_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    max_connections_per_ip: Option<String>,
    /// New connections per second one client address may open, RATE or RATE/BURST (10/40);
    /// past it HTTP 429; 0 is off [default: 0, off]
    #[arg(
        long,
        env = "RINGCAST_HANDSHAKE_RATE_PER_IP",
        value_name = "RATE[/BURST]"
    )]
    handshake_rate_per_ip: Option<String>,
    /// Native commands per second one connection may send, RATE or RATE/BURST (50/200); past it
    /// the rate_limited error reply; 0 is off [default: 0, off]
    #[arg(long, env = "RINGCAST_COMMAND_RATE", value_name = "RATE[/BURST]")]
    command_rate: Option<String>,
    /// Time a client has to send a whole request (PROXY header, head, body) from its connection
    /// or the request's first byte; then 408 and close; at least 100ms [default: 10s]
    #[arg(long, env = "RINGCAST_HEAD_TIMEOUT", value_name = "DURATION")]
    head_timeout: Option<String>,
    /// Built-in routes and sources for a drop-in replacement: weppcloud (Preflight on :9001,
    /// Status on :9002) or bess (WebsocketServerMS on :8001) [default: none]
    #[arg(long, env = "RINGCAST_PRESET", value_name = "NAME")]
    preset: Option<String>,
    /// Set one route key, NAME.KEY=VALUE (repeatable), e.g. preflight.listen=127.0.0.1:9101;
    /// env RINGCAST_ROUTE_<NAME>_<KEY> does the same [default: none]
    #[arg(long = "route", value_name = "NAME.KEY=VALUE")]
    route: Vec<String>,
    /// Test hook: shard N never drains its inbox, to prove a stalled shard delays no one else;
    /// must be below --shards [default: none]
    #[arg(
        long,
        env = "RINGCAST_DEBUG_STALL_SHARD",
        value_name = "N",
        hide = true
    )]
    debug_stall_shard: Option<String>,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    print_config: bool,
    /// Token check on the native listener: none, or jwt (HTTP 401 without a valid token)
    /// [default: none]
    #[arg(long, env = "RINGCAST_AUTH", value_name = "none|jwt")]
    auth: Option<String>,
    /// Channel globs anonymous clients of the native listener may subscribe to, comma-separated
    /// [default: *]
    #[arg(long, env = "RINGCAST_ALLOW_SUBSCRIBE", value_name = "GLOBS")]
    allow_subscribe: Option<String>,
    /// Key globs anonymous clients of the native listener may watch, comma-separated
    /// [default: *]
    #[arg(long, env = "RINGCAST_ALLOW_WATCH", value_name = "GLOBS")]
    allow_watch: Option<String>,
    /// HMAC secret that verifies HS256/HS384/HS512 tokens; never printed [default: none]
    #[arg(
        long,
        env = "RINGCAST_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// PEM file of the RSA (RS256) or EC P-256 (ES256) public key that verifies tokens
    /// [default: none]
    #[arg(long, env = "RINGCAST_JWT_PUBLIC_KEY", value_name = "FILE")]
    jwt_public_key: Option<String>,
    /// Accepted token audiences (aud), comma-separated [default: none, not checked]
    #[arg(long, env = "RINGCAST_JWT_AUDIENCE", value_name = "AUD")]
    jwt_audience: Option<String>,
    /// Accepted token issuers (iss), comma-separated [default: none, not checked]
    #[arg(long, env = "RINGCAST_JWT_ISSUER", value_name = "ISS")]
    jwt_issuer: Option<String>,
    /// Serve /metrics and /healthz on this address instead of the native listener (which then
    /// answers 404 for them) [default: none, served on the native listener]
    #[arg(long, env = "RINGCAST_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<String>,
}

/// The TOML file. Keys are the knob names in snake_case. Values stay raw so that a bad one
/// gets the same error as from a flag; unknown keys are rejected by serde.
// `[[source]]` tables configure several Redis sources side by side (name, URL, channel and key
// globs; see `SourceConfig`); the `redis_*` knobs apply to all of them.
// `[[route]]` tables bind a listener and a path to a profile (see `routes`).
// `debug_stall_shard` is a test hook and deliberately not a key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<toml::Value>,
    shards: Option<toml::Value>,
    pin_cores: Option<toml::Value>,
    io_backend: Option<toml::Value>,
    max_message_bytes: Option<toml::Value>,
    max_outbox_bytes: Option<toml::Value>,
    ping_interval: Option<toml::Value>,
    pong_timeout: Option<toml::Value>,
    idle_timeout: Option<toml::Value>,
    api_key: Option<toml::Value>,
    echo_path: Option<toml::Value>,
    ws_path: Option<toml::Value>,
    log_format: Option<toml::Value>,
    log_level: Option<toml::Value>,
    max_connections: Option<toml::Value>,
    max_subscriptions: Option<toml::Value>,
    shard_inbox: Option<toml::Value>,
    shutdown_timeout: Option<toml::Value>,
    read_buffer_bytes: Option<toml::Value>,
    redis: Option<toml::Value>,
    redis_set_notify: Option<toml::Value>,
    redis_read_on_shard: Option<toml::Value>,
    redis_resp: Option<toml::Value>,
    redis_backoff_max: Option<toml::Value>,
    redis_connect_timeout: Option<toml::Value>,
    radars: Option<toml::Value>,
    canada_addr: Option<toml::Value>,
    proxy_protocol: Option<toml::Value>,
    max_connections_per_ip: Option<toml::Value>,
    handshake_rate_per_ip: Option<toml::Value>,
    command_rate: Option<toml::Value>,
    head_timeout: Option<toml::Value>,
    max_days_store_echoes: Option<toml::Value>,
    preset: Option<toml::Value>,
    auth: Option<toml::Value>,
    allow_subscribe: Option<toml::Value>,
    allow_watch: Option<toml::Value>,
    jwt_secret: Option<toml::Value>,
    jwt_public_key: Option<toml::Value>,
    jwt_audience: Option<toml::Value>,
    jwt_issuer: Option<toml::Value>,
    admin_listen: Option<toml::Value>,
    /// `[[route]]` tables: profiles on their own listeners.
    route: Option<Vec<toml::Table>>,
    /// `[[source]]` tables: several Redis sources side by side.
    source: Option<Vec<SourceTable>>,
}

/// One `[[source]]` table in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceTable {
    name: String,
    redis: String,
    #[serde(default, deserialize_with = "channel_globs")]
    channels: Vec<String>,
    #[serde(default, deserialize_with = "key_globs")]
    keys: Vec<String>,
    /// A Redis Cluster (same as a `redis+cluster://` URL).
    #[serde(default)]
    cluster: bool,
    /// Channels subscribed with `SSUBSCRIBE` on a cluster (sharded pub/sub).
    #[serde(default, deserialize_with = "sharded_globs")]
    sharded_channels: Vec<String>,
}

fn sharded_globs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    glob_list(d, "sharded_channels")
}

fn channel_globs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    glob_list(d, "channels")
}

fn key_globs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    glob_list(d, "keys")
}

/// A `[[source]]` list of globs under `key`. A bare string (`keys = "*"`) is a common slip;
/// its error shows the list form to write instead of serde's "expected a sequence".
fn glob_list<'de, D: serde::Deserializer<'de>>(d: D, key: &str) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    match toml::Value::deserialize(d)? {
        toml::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(glob) => Ok(glob),
                other => Err(D::Error::custom(format!(
                    "{key} must be a list of strings (globs); {other} is not a string"
                ))),
            })
            .collect(),
        toml::Value::String(glob) => Err(D::Error::custom(format!(
            "{key} is a list of globs: write {key} = [{glob:?}], not {key} = {glob:?}"
        ))),
        other => Err(D::Error::custom(format!(
            "{key} is a list of globs, e.g. {key} = [\"*\"], not {}",
            other.type_str()
        ))),
    }
}

/// A named Redis source from a `[[source]]` table. Channels (and patterns) whose name matches
/// one of `channels`, and keys matching one of `keys` (Redis glob syntax), are served by this
/// source; the first matching source wins, in file order, and `--redis` (if set) catches the
/// rest. A table with neither list serves everything.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SourceConfig {
    /// A short name for logs and metrics (`status`).
    pub name: String,
    /// Where Redis is.
    pub url: RedisUrl,
    /// Globs of the channels and patterns it serves.
    pub channels: Vec<String>,
    /// Globs of the keys it serves (watches and snapshots).
    pub keys: Vec<String>,
    /// On a Redis Cluster, globs of the channels that are sharded: subscribed with `SSUBSCRIBE`
    /// on the primary owning the channel's slot, published with `SPUBLISH`.
    pub sharded_channels: Vec<String>,
}

impl SourceConfig {
    /// A source from a `[[source]]` table's fields: with neither `channels` nor `keys` it
    /// serves everything.
    pub fn new(name: String, url: RedisUrl, channels: Vec<String>, keys: Vec<String>) -> Self {
        let everything = channels.is_empty() && keys.is_empty();
        let all = || vec!["*".to_owned()];
        SourceConfig {
            name,
            url,
            channels: if everything { all() } else { channels },
            keys: if everything { all() } else { keys },
            sharded_channels: Vec::new(),
        }
    }

    /// A catch-all source (the `--redis` one).
    pub fn catch_all(name: &str, url: RedisUrl) -> SourceConfig {
        SourceConfig {
            name: name.into(),
            url,
            channels: vec!["*".into()],
            keys: vec!["*".into()],
            sharded_channels: Vec::new(),
        }
    }
}

/// The name of the source that `--redis` configures.
pub const CATCH_ALL_SOURCE: &str = "redis";

/// Parses the `[[source]]` tables, then appends `--redis` as the catch-all.
fn sources(
    file: Option<&ConfigFile>,
    redis: Option<&RedisUrl>,
    preset: Option<Preset>,
) -> Result<Vec<SourceConfig>, ConfigError> {
    let mut out: Vec<SourceConfig> = Vec::new();
    // A preset's sources come first; a file table with the same name replaces one of them.
    let mut from_preset = preset.map_or_else(Vec::new, |p| routes::preset_sources(p, redis));
    if let Some(file) = file {
        for t in file.values.source.iter().flatten() {
            let invalid = |reason: String| ConfigError::Invalid {
                knob: "source",
                origin: Origin::File(file.path.clone()),
                reason,
            };
            from_preset.retain(|s| s.name != t.name);
            if let Some(reason) = bad_source_name(&t.name, &out) {
                return Err(invalid(reason));
            }
            let mut url = RedisUrl::parse(t.redis.trim()).map_err(|e| {
                invalid(format!(
                    "[[source]] {:?} redis: not a Redis URL: {e} (use \
                     redis://[user:pass@]host[:port][/db]; value not shown)",
                    t.name
                ))
            })?;
            if t.cluster && url.db != 0 {
                return Err(invalid(format!(
                    "[[source]] {:?}: cluster = true, but a Redis Cluster has only db 0",
                    t.name
                )));
            }
            url.cluster |= t.cluster;
            if !url.cluster && !t.sharded_channels.is_empty() {
                return Err(invalid(format!(
                    "[[source]] {:?}: sharded_channels needs a Redis Cluster \
                     (cluster = true or a redis+cluster:// URL)",
                    t.name
                )));
            }
            let mut source =
                SourceConfig::new(t.name.clone(), url, t.channels.clone(), t.keys.clone());
            source.sharded_channels = t.sharded_channels.clone();
            out.push(source);
        }
    }
    if let Some(p) = preset {
        // With a preset, `--redis` gave the preset's sources their address instead, unless the
        // preset has none (squonk2): then it is the catch-all, as without a preset (Squonk2
        // uses the first source for its one-socket-per-stream lease across instances).
        let own = !routes::preset_sources(p, None).is_empty();
        from_preset.append(&mut out);
        if !own && let Some(url) = redis {
            from_preset.push(SourceConfig::catch_all(CATCH_ALL_SOURCE, url.clone()));
        }
        return Ok(from_preset);
    }
    if let Some(url) = redis {
        out.push(SourceConfig::catch_all(CATCH_ALL_SOURCE, url.clone()));
    }
    Ok(out)
}

/// Why a `[[source]]` name cannot be used, given the tables before it; `None` when it can.
fn bad_source_name(name: &str, earlier: &[SourceConfig]) -> Option<String> {
    if name.is_empty() {
        Some("a [[source]] table has an empty name; give it one (name = \"status\")".to_owned())
    } else if name == CATCH_ALL_SOURCE {
        Some(format!(
            "source name {name:?} is reserved: it names the --redis source; pick another name"
        ))
    } else if earlier.iter().any(|s| s.name == name) {
        Some(format!(
            "source name {name:?} is used by two [[source]] tables; names must be unique"
        ))
    } else {
        None
    }
}

/// A config file that was read and parsed.
struct ConfigFile {
    path: PathBuf,
    values: FileConfig,
}

impl ConfigFile {
    fn read(path: PathBuf, origin: Origin) -> Result<ConfigFile, ConfigError> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                return Err(ConfigError::ReadFile {
                    path,
                    origin,
                    error,
                });
            }
        };
        ConfigFile::parse(path, &text)
    }

    fn parse(path: PathBuf, text: &str) -> Result<ConfigFile, ConfigError> {
        match toml::from_str::<FileConfig>(text) {
            Ok(values) => Ok(ConfigFile { path, values }),
            Err(e) => Err(ConfigError::File {
                line: e
                    .span()
                    .map(|span| 1 + text[..span.start].matches('\n').count()),
                message: e.message().trim().replace('\n', "; "),
                path,
            }),
        }
    }
}

/// The sources for one parse, highest precedence first.
struct Layers<'a> {
    /// Values given on the command line (never those clap took from the environment).
    flags: &'a dyn Fn(&Knob) -> Option<String>,
    /// Environment lookup by variable name.
    env: &'a dyn Fn(&str) -> Option<OsString>,
    file: Option<&'a ConfigFile>,
    /// `--route NAME.KEY=VALUE` flags, in order.
    route_flags: &'a [String],
}

/// A resolved knob and where its value came from.
struct Setting<T> {
    value: T,
    origin: Origin,
}

/// A raw value before parsing: text from a flag or variable, or a TOML value.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Text(&'a str),
    Toml(&'a toml::Value),
}

impl<'a> Raw<'a> {
    /// The value as text, when it is text: a flag, a variable, or a TOML string.
    fn text(self) -> Option<&'a str> {
        match self {
            Raw::Text(text) => Some(text),
            Raw::Toml(toml::Value::String(text)) => Some(text),
            Raw::Toml(_) => None,
        }
    }

    /// The value for an error message, quoted and always on one line.
    fn shown(self) -> String {
        match self {
            Raw::Text(text) => format!("{text:?}"),
            Raw::Toml(toml::Value::String(text)) => format!("{text:?}"),
            Raw::Toml(toml::Value::Integer(n)) => n.to_string(),
            Raw::Toml(toml::Value::Float(x)) => x.to_string(),
            Raw::Toml(toml::Value::Boolean(b)) => b.to_string(),
            Raw::Toml(toml::Value::Datetime(d)) => d.to_string(),
            Raw::Toml(toml::Value::Array(_)) => "an array".to_owned(),
            Raw::Toml(toml::Value::Table(_)) => "a table".to_owned(),
        }
    }
}

impl Layers<'_> {
    /// Takes `knob` from the first layer that sets it and parses it with `parse`, which also
    /// checks the range. The default is not parsed: it is valid by construction.
    fn resolve<T>(
        &self,
        knob: &Knob,
        default: T,
        parse: impl FnOnce(Raw<'_>) -> Result<T, String>,
    ) -> Result<Setting<T>, ConfigError> {
        let text;
        let (raw, origin) = if let Some(flag) = (self.flags)(knob) {
            text = flag;
            (Raw::Text(&text), Origin::Flag(knob.name))
        } else if let Some(var) = self.env_text(knob)? {
            text = var;
            (Raw::Text(&text), Origin::Env(knob.env))
        } else if let Some((file, value)) = self
            .file
            .and_then(|f| Some((f, (knob.in_file)(&f.values)?)))
        {
            (Raw::Toml(value), Origin::File(file.path.clone()))
        } else {
            return Ok(Setting {
                value: default,
                origin: Origin::Default,
            });
        };
        match parse(raw) {
            Ok(value) => Ok(Setting { value, origin }),
            Err(reason) => Err(ConfigError::Invalid {
                knob: knob.name,
                origin,
                reason,
            }),
        }
    }

    /// The knob's environment variable; an empty one counts as unset.
    fn env_text(&self, knob: &Knob) -> Result<Option<String>, ConfigError> {
        self.env_var(knob.name, knob.env)
    }

    /// Environment variable `var`, read for the knob named `knob`; an empty one counts as
    /// unset.
    fn env_var(
        &self,
        knob: &'static str,
        var: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        match (self.env)(var) {
            Some(value) if !value.is_empty() => match value.into_string() {
                Ok(text) => Ok(Some(text)),
                Err(_) => Err(ConfigError::Invalid {
                    knob,
                    origin: Origin::Env(var),
                    reason: "is not valid UTF-8".to_owned(),
                }),
            },
            _ => Ok(None),
        }
    }

    /// `redis`: the usual layers, then `REDIS_URL`, then the seed services' variables, then
    /// none (the embedded broker).
    fn redis(&self) -> Result<Option<RedisUrl>, ConfigError> {
        let setting = self.resolve(&REDIS, None, |r| redis_url(r).map(Some))?;
        if setting.origin != Origin::Default {
            return Ok(setting.value);
        }
        let invalid = |origin, reason| ConfigError::Invalid {
            knob: REDIS.name,
            origin,
            reason,
        };
        if let Some(text) = self.env_var(REDIS.name, REDIS_URL_VAR)? {
            return match redis_url(Raw::Text(&text)) {
                // weppcloud's services read the password beside the URL (`REDIS_PASSWORD`).
                Ok(mut url) => {
                    if url.password.is_none() {
                        url.password = self.env_var(REDIS.name, REDIS_PASSWORD_VAR)?;
                    }
                    Ok(Some(url))
                }
                Err(reason) => Err(invalid(Origin::Env(REDIS_URL_VAR), reason)),
            };
        }
        let [host_var, ..] = REDIS_SEED_VARS;
        if self.env_var(REDIS.name, host_var)?.is_none() {
            return Ok(None);
        }
        let mut seed = Vec::with_capacity(REDIS_SEED_VARS.len());
        for var in REDIS_SEED_VARS {
            seed.push((var, self.env_var(REDIS.name, var)?));
        }
        let lookup = |name: &str| {
            seed.iter()
                .find(|(var, _)| *var == name)
                .and_then(|(_, value)| value.clone())
        };
        RedisUrl::from_seed_env(lookup).map_err(|reason| {
            // The reason starts with the variable at fault (`REDIS_PORT "x" is not a port`).
            let var = REDIS_SEED_VARS
                .into_iter()
                .find(|var| reason.starts_with(var))
                .unwrap_or(host_var);
            invalid(Origin::Env(var), reason)
        })
    }

    /// `canada-addr`: the usual layers, then the original's `CANADA_ADDR`, then none.
    fn canada_addr(&self) -> Result<Option<ZmqAddr>, ConfigError> {
        let setting = self.resolve(&CANADA_ADDR, None, |r| zmq_addr(r).map(Some))?;
        if setting.origin != Origin::Default {
            return Ok(setting.value);
        }
        match self.env_var(CANADA_ADDR.name, CANADA_ADDR_VAR)? {
            None => Ok(None),
            Some(text) => {
                zmq_addr(Raw::Text(&text))
                    .map(Some)
                    .map_err(|reason| ConfigError::Invalid {
                        knob: CANADA_ADDR.name,
                        origin: Origin::Env(CANADA_ADDR_VAR),
                        reason,
                    })
            }
        }
    }

    /// `max_days_store_echoes`: the usual layers, then the original's `MAX_DAYS_STORE_ECHOES`,
    /// then the original's default, [`DEFAULT_MAX_DAYS_STORE_ECHOES`].
    fn max_days_store_echoes(&self) -> Result<Option<u32>, ConfigError> {
        let knob = &MAX_DAYS_STORE_ECHOES;
        let setting = self.resolve(knob, None, |r| days(r).map(Some))?;
        if setting.origin != Origin::Default {
            return Ok(setting.value);
        }
        match self.env_var(knob.name, ORIGINAL_MAX_DAYS_VAR)? {
            Some(text) => days(Raw::Text(&text))
                .map(Some)
                .map_err(|reason| ConfigError::Invalid {
                    knob: knob.name,
                    origin: Origin::Env(ORIGINAL_MAX_DAYS_VAR),
                    reason,
                }),
            None => Ok(Some(DEFAULT_MAX_DAYS_STORE_ECHOES)),
        }
    }

    /// [`Layers::resolve`] for a knob whose origin is not needed afterwards.
    fn value<T>(
        &self,
        knob: &Knob,
        default: T,
        parse: impl FnOnce(Raw<'_>) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        Ok(self.resolve(knob, default, parse)?.value)
    }

    /// Resolves every knob, then the checks that involve two knobs. This is the table that
    /// ties each field to its default, parser and range.
    fn merge(&self, print_config: bool) -> Result<Config, ConfigError> {
        let ping_interval = self.resolve(&PING_INTERVAL, DEFAULT_PING_INTERVAL, |r| {
            duration(r, MIN_HEARTBEAT, Duration::MAX, DEFAULT_PING_INTERVAL)
        })?;
        let pong_timeout = self.value(&PONG_TIMEOUT, DEFAULT_PONG_TIMEOUT, |r| {
            duration(r, MIN_HEARTBEAT, Duration::MAX, DEFAULT_PONG_TIMEOUT)
        })?;
        let idle_timeout = self.value(&IDLE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, |r| {
            duration(r, MIN_HEARTBEAT, Duration::MAX, DEFAULT_IDLE_TIMEOUT)
        })?;
        let ws_path = self.resolve(&WS_PATH, DEFAULT_WS_PATH.to_owned(), url_path)?;
        let echo_path = self.resolve(&ECHO_PATH, None, |r| url_path(r).map(Some))?;
        if echo_path.value.as_deref() == Some(ws_path.value.as_str()) {
            return Err(ConfigError::Invalid {
                knob: ECHO_PATH.name,
                reason: format!("{:?} is also ws-path ({})", ws_path.value, ws_path.origin),
                origin: echo_path.origin,
            });
        }
        let shards = self.resolve(&SHARDS, default_shards(), |r| count(r, 1, MAX_SHARDS, 4))?;
        let debug_stall_shard = self.resolve(&DEBUG_STALL_SHARD, None, |r| {
            count(r, 0, usize::MAX, 0).map(Some)
        })?;
        if let Some(n) = debug_stall_shard.value
            && n >= shards.value
        {
            return Err(ConfigError::Invalid {
                knob: DEBUG_STALL_SHARD.name,
                reason: format!(
                    "{n} must be below shards ({}, from {})",
                    shards.value, shards.origin
                ),
                origin: debug_stall_shard.origin,
            });
        }
        let preset = self.value(&PRESET, None, |r| Preset::parse(r).map(Some))?;
        let mut radars = self.resolve(&RADARS, None, |r| radars_file(r).map(Some))?;
        // The SuperDARN original read radars.config.json from its working directory; so does
        // the preset, when the file is there (without it the server logs one line and serves
        // clients with no TCP feeds).
        if preset == Some(Preset::Superdarn)
            && radars.value.is_none()
            && Path::new(SUPERDARN_RADARS).exists()
        {
            let value = radars_file(Raw::Text(SUPERDARN_RADARS)).map_err(|reason| {
                ConfigError::Invalid {
                    knob: RADARS.name,
                    origin: Origin::Default,
                    reason,
                }
            })?;
            radars = Setting {
                value: Some(value),
                origin: Origin::Default,
            };
        }
        // A preset whose routes take 8080 moves the native listener out of their way.
        let default_listen = preset.map_or(DEFAULT_LISTEN, Preset::native_listen);
        let (access, jwt, admin_listen) = access::resolve(self)?;
        Ok(Config {
            listen: self.value(&LISTEN, default_listen, socket_addr)?,
            shards: shards.value,
            pin_cores: self.value(&PIN_CORES, false, boolean)?,
            io_backend: self.value(&IO_BACKEND, IoBackend::Auto, io_backend)?,
            max_message_bytes: self.value(&MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES, |r| {
                size(r, KIB, 64 * MIB, DEFAULT_MAX_MESSAGE_BYTES)
            })?,
            max_outbox_bytes: self.value(&MAX_OUTBOX_BYTES, DEFAULT_MAX_OUTBOX_BYTES, |r| {
                size(r, 4 * KIB, u64::MAX, DEFAULT_MAX_OUTBOX_BYTES)
            })?,
            ping_interval: ping_interval.value,
            pong_timeout,
            idle_timeout,
            api_key: self.value(&API_KEY, None, |r| api_key(r).map(Some))?,
            echo_path: echo_path.value,
            ws_path: ws_path.value,
            log_format: self.value(&LOG_FORMAT, LogFormat::Text, log_format)?,
            log_level: self.value(&LOG_LEVEL, DEFAULT_LOG_LEVEL.to_owned(), log_level)?,
            max_connections: self.value(&MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, |r| {
                count(r, 1, usize::MAX, DEFAULT_MAX_CONNECTIONS)
            })?,
            max_subscriptions: self.value(&MAX_SUBSCRIPTIONS, DEFAULT_MAX_SUBSCRIPTIONS, |r| {
                count(r, 1, usize::MAX, DEFAULT_MAX_SUBSCRIPTIONS)
            })?,
            shard_inbox: self.value(&SHARD_INBOX, DEFAULT_SHARD_INBOX, |r| {
                count(r, 16, MAX_SHARD_INBOX, DEFAULT_SHARD_INBOX)
            })?,
            shutdown_timeout: self.value(&SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT, |r| {
                duration(
                    r,
                    Duration::ZERO,
                    MAX_SHUTDOWN_TIMEOUT,
                    DEFAULT_SHUTDOWN_TIMEOUT,
                )
            })?,
            read_buffer_bytes: self.value(&READ_BUFFER_BYTES, DEFAULT_READ_BUFFER_BYTES, |r| {
                size(r, 512, 8 * KIB, DEFAULT_READ_BUFFER_BYTES)
            })?,
            redis: self.redis()?,
            redis_set_notify: self.value(&REDIS_SET_NOTIFY, false, boolean)?,
            redis_read_on_shard: self.value(&REDIS_READ_ON_SHARD, true, boolean)?,
            redis_resp: self.value(&REDIS_RESP, DEFAULT_REDIS_RESP, resp_version)?,
            redis_backoff_max: self.value(&REDIS_BACKOFF_MAX, DEFAULT_REDIS_BACKOFF_MAX, |r| {
                duration(
                    r,
                    MIN_REDIS_BACKOFF_MAX,
                    MAX_REDIS_BACKOFF_MAX,
                    DEFAULT_REDIS_BACKOFF_MAX,
                )
            })?,
            redis_connect_timeout: self.value(
                &REDIS_CONNECT_TIMEOUT,
                DEFAULT_REDIS_CONNECT_TIMEOUT,
                |r| {
                    duration(
                        r,
                        MIN_REDIS_CONNECT_TIMEOUT,
                        MAX_REDIS_CONNECT_TIMEOUT,
                        DEFAULT_REDIS_CONNECT_TIMEOUT,
                    )
                },
            )?,
            radars: radars.value.as_ref().map(|(path, _)| path.clone()),
            radar_feeds: radars.value.map(|(_, feeds)| feeds).unwrap_or_default(),
            canada_addr: self.canada_addr()?,
            max_days_store_echoes: self.max_days_store_echoes()?,
            proxy_protocol: self.value(&PROXY_PROTOCOL, false, boolean)?,
            max_connections_per_ip: self
                .value(&MAX_CONNECTIONS_PER_IP, 0, |r| count(r, 0, usize::MAX, 100))?,
            handshake_rate_per_ip: self.value(&HANDSHAKE_RATE_PER_IP, None, rate)?,
            command_rate: self.value(&COMMAND_RATE, None, rate)?,
            head_timeout: self.value(&HEAD_TIMEOUT, DEFAULT_HEAD_TIMEOUT, |r| {
                duration(r, MIN_HEARTBEAT, Duration::MAX, DEFAULT_HEAD_TIMEOUT)
            })?,
            debug_stall_shard: debug_stall_shard.value,
            print_config,
            sources: Vec::new(),
            preset,
            routes: Vec::new(),
            access,
            jwt,
            admin_listen,
        })
        .and_then(|mut config| {
            config.sources = sources(self.file, config.redis.as_ref(), config.preset)?;
            config.routes = self.routes(&config)?;
            access::check(&config.access, &config.jwt, &config.routes)?;
            Ok(config)
        })
    }

    /// Merges the route layers (preset < file < env < flags) and validates the result.
    fn routes(&self, config: &Config) -> Result<Vec<RouteConfig>, ConfigError> {
        let invalid = |e: routes::RouteError| ConfigError::Invalid {
            knob: "route",
            origin: e.origin,
            reason: e.reason,
        };
        let mut raw = Vec::new();
        if let Some(preset) = config.preset {
            let origin = Origin::Flag("preset");
            routes::merge_tables(&mut raw, &routes::preset_routes(preset), &origin)
                .map_err(invalid)?;
        }
        if let Some(file) = self.file
            && let Some(tables) = &file.values.route
        {
            routes::merge_tables(&mut raw, tables, &Origin::File(file.path.clone()))
                .map_err(invalid)?;
        }
        if config.preset == Some(Preset::Bess)
            && let Some(port) = self.env_var("route", "WS_PORT")?
        {
            // WebsocketServerMS's own .env: WS_HOST (default all interfaces) and WS_PORT.
            let host = self
                .env_var("route", "WS_HOST")?
                .unwrap_or_else(|| "0.0.0.0".to_owned());
            let addr = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            if let Some(r) = raw.iter_mut().find(|r| r.name == "bess") {
                r.values.retain(|(k, _, _)| k != "listen");
                r.values.push((
                    "listen".into(),
                    toml::Value::String(addr),
                    Origin::Env("WS_PORT"),
                ));
            }
        }
        if config.preset == Some(Preset::Squonk2) {
            // The original's own variables, below RINGCAST_ROUTE_* and flags.
            for (var, route, key) in [
                ("ESS_AMPQ_URL", "ess", "amqp"),
                ("ESS_MESSAGE_STATS_INTERVAL", "ess", "stats_interval"),
            ] {
                if let Some(value) = self.env_var("route", var)?
                    && let Some(r) = raw.iter_mut().find(|r| r.name == route)
                {
                    r.values.retain(|(k, _, _)| k != key);
                    r.values
                        .push((key.into(), toml::Value::String(value), Origin::Env(var)));
                }
            }
        }
        let env = |var: &'static str| self.env_var("route", var).ok().flatten();
        routes::merge_env(&mut raw, &env).map_err(invalid)?;
        routes::merge_flags(&mut raw, self.route_flags).map_err(invalid)?;
        let defaults = routes::RouteDefaults {
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            max_outbox_bytes: config.max_outbox_bytes,
            // The Squonk2 ESS's own variables, read as the original did (for ess_api routes).
            ingress: routes::Ingress::from_env(
                self.env_var("route", "ESS_INGRESS_LOCATION")?,
                self.env_var("route", "ESS_INGRESS_SECURE")?,
            ),
        };
        routes::resolve(&raw, &config.sources, &defaults).map_err(invalid)
    }
}

impl Config {
    /// Parses `args` (the first item is the program name), the real environment, and the config
    /// file if one is named. clap's own outcomes (unknown flag, `--help`, `--version`) come back
    /// as [`ConfigError::Clap`] so the caller can `e.exit()` them.
    pub fn try_parse_from<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Config::parse_with_env(args, &|name| std::env::var_os(name))
    }

    /// For `main`: parses `std::env::args_os()`. On a clap outcome, clap prints and exits (0 for
    /// help and version, 2 for usage errors); on any other error this prints
    /// `ringcast: <error>` to stderr and exits with code 2.
    pub fn load() -> Config {
        match Config::try_parse_from(std::env::args_os()) {
            Ok(config) => config,
            Err(ConfigError::Clap(e)) => e.exit(),
            Err(e) => {
                eprintln!("ringcast: {e}");
                std::process::exit(2)
            }
        }
    }

    /// The effective configuration as TOML, usable as a `--config` file. The API key shows as
    /// `"<redacted>"`; the Redis URL shows its password as `***`, with a comment saying so, so
    /// that line does not read back verbatim; unset optional knobs are comments;
    /// `debug_stall_shard` is left out (it is not a file key). Sizes use the largest exact unit
    /// and durations whole seconds, else milliseconds (anything finer is rounded down).
    pub fn to_toml(&self) -> String {
        use toml::Value;
        let text = |s: &str| Some(Value::String(s.to_owned()));
        let number = |n: usize| Some(Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
        let size = |n: usize| Some(size_value(n));
        let time = |d: Duration| text(&duration_text(d));
        let entries = [
            (LISTEN.key, text(&self.listen.to_string())),
            (SHARDS.key, number(self.shards)),
            (PIN_CORES.key, Some(Value::Boolean(self.pin_cores))),
            (IO_BACKEND.key, text(self.io_backend.as_str())),
            (MAX_MESSAGE_BYTES.key, size(self.max_message_bytes)),
            (MAX_OUTBOX_BYTES.key, size(self.max_outbox_bytes)),
            (PING_INTERVAL.key, time(self.ping_interval)),
            (PONG_TIMEOUT.key, time(self.pong_timeout)),
            (IDLE_TIMEOUT.key, time(self.idle_timeout)),
            (
                API_KEY.key,
                self.api_key.as_ref().and_then(|_| text(REDACTED)),
            ),
            (ECHO_PATH.key, self.echo_path.as_deref().and_then(text)),
            (WS_PATH.key, text(&self.ws_path)),
            (LOG_FORMAT.key, text(self.log_format.as_str())),
            (LOG_LEVEL.key, text(&self.log_level)),
            (MAX_CONNECTIONS.key, number(self.max_connections)),
            (MAX_SUBSCRIPTIONS.key, number(self.max_subscriptions)),
            (SHARD_INBOX.key, number(self.shard_inbox)),
            (SHUTDOWN_TIMEOUT.key, time(self.shutdown_timeout)),
            (READ_BUFFER_BYTES.key, size(self.read_buffer_bytes)),
            // Display hides the password.
            (
                REDIS.key,
                self.redis.as_ref().and_then(|u| text(&u.to_string())),
            ),
            (
                REDIS_SET_NOTIFY.key,
                Some(Value::Boolean(self.redis_set_notify)),
            ),
            (
                REDIS_READ_ON_SHARD.key,
                Some(Value::Boolean(self.redis_read_on_shard)),
            ),
            (REDIS_RESP.key, number(usize::from(self.redis_resp))),
            (REDIS_BACKOFF_MAX.key, time(self.redis_backoff_max)),
            (REDIS_CONNECT_TIMEOUT.key, time(self.redis_connect_timeout)),
            (
                RADARS.key,
                self.radars
                    .as_ref()
                    .and_then(|p| text(&p.display().to_string())),
            ),
            (
                CANADA_ADDR.key,
                self.canada_addr
                    .as_ref()
                    .and_then(|a| text(&format!("{}:{}", a.host, a.port))),
            ),
            (
                MAX_DAYS_STORE_ECHOES.key,
                self.max_days_store_echoes
                    .map(|d| Value::Integer(i64::from(d))),
            ),
            (
                PROXY_PROTOCOL.key,
                Some(Value::Boolean(self.proxy_protocol)),
            ),
            (
                MAX_CONNECTIONS_PER_IP.key,
                number(self.max_connections_per_ip),
            ),
            (
                HANDSHAKE_RATE_PER_IP.key,
                text(
                    &self
                        .handshake_rate_per_ip
                        .map_or("0".into(), |r| r.to_string()),
                ),
            ),
            (
                COMMAND_RATE.key,
                text(&self.command_rate.map_or("0".into(), |r| r.to_string())),
            ),
            (HEAD_TIMEOUT.key, time(self.head_timeout)),
            (PRESET.key, self.preset.and_then(|p| text(p.as_str()))),
        ];
        // Display prints `***` whenever the URL has credentials, even a user alone.
        let redis_redacted = self
            .redis
            .as_ref()
            .is_some_and(|u| u.password.is_some() || u.user.is_some());
        let mut out = String::from("# ringcast effective configuration\n");
        for (key, value) in entries {
            if key == REDIS.key && redis_redacted {
                out.push_str(
                    "# the redis password is redacted (shown as ***): put the real one back \
                     before using this file as --config\n",
                );
            }
            match value {
                Some(value) => out.push_str(&format!("{key} = {value}\n")),
                None => out.push_str(&format!("# {key} is not set\n")),
            }
        }
        // Top-level keys, so before the first table.
        out.push_str(&access::to_toml(&self.access, &self.jwt, self.admin_listen));
        for source in self.sources.iter().filter(|s| s.name != CATCH_ALL_SOURCE) {
            let list = |v: &[String]| {
                let items: Vec<String> = v.iter().map(|g| format!("{g:?}")).collect();
                format!("[{}]", items.join(", "))
            };
            out.push_str(&format!(
                "\n[[source]]\nname = {:?}\nredis = {:?}\nchannels = {}\nkeys = {}\n",
                source.name,
                source.url.to_string(),
                list(&source.channels),
                list(&source.keys)
            ));
        }
        out.push_str(&routes::to_toml(&self.routes, &self.sources));
        out
    }

    /// Every listening address: the native listener first, then each route's, then
    /// `--admin-listen`. Routes on the same fixed address share a listener; each route on port
    /// 0 gets its own.
    pub fn listeners(&self) -> Vec<SocketAddr> {
        let mut out = vec![self.listen];
        for r in &self.routes {
            if r.listen.port() == 0 || !out.contains(&r.listen) {
                out.push(r.listen);
            }
        }
        // `--admin-listen` always comes last, on a listener of its own.
        out.extend(self.admin_listen);
        out
    }

    /// The index of the `--admin-listen` listener in [`Config::listeners`], when set.
    pub fn admin_listener(&self) -> Option<usize> {
        self.admin_listen.map(|_| self.listeners().len() - 1)
    }

    /// The listener index of each route, parallel to [`Config::routes`].
    pub fn route_listeners(&self) -> Vec<usize> {
        let mut next_zero = 1;
        let listeners = self.listeners();
        self.routes
            .iter()
            .map(|r| {
                if r.listen.port() == 0 {
                    // Port-0 routes got one listener each, in route order.
                    let i = listeners
                        .iter()
                        .enumerate()
                        .skip(next_zero)
                        .find(|(_, a)| **a == r.listen)
                        .map_or(0, |(i, _)| i);
                    next_zero = i + 1;
                    i
                } else {
                    listeners.iter().position(|a| *a == r.listen).unwrap_or(0)
                }
            })
            .collect()
    }

    /// The source serving a channel (`key = false`) or key (`key = true`) for a connection on
    /// `route` (`None`: the native listener): the first of the route's sources whose globs
    /// match, else the route's first source; 0 without Redis sources (the embedded broker).
    ///
    /// A channel named after a radar site, or `<site>/echoes`, goes to the radar source
    /// ([`Config::radar_source`]) on every listener, before any glob: the radar source only
    /// has those channels, and no Redis glob can take them from it. With `canada_addr` the
    /// ZMQ sites are not known up front, so every channel shaped like a SuperDARN site code
    /// ([`is_site_code`]: `sas`, `sas/echoes`) counts as a radar channel
    /// ([`Config::is_radar_channel`]).
    pub fn source_for(&self, route: Option<&RouteConfig>, name: &[u8], key: bool) -> usize {
        if !key
            && let Some(radar) = self.radar_source()
            && self.is_radar_channel(name)
        {
            return radar;
        }
        let all: Vec<usize>;
        let candidates: &[usize] = match route {
            Some(r) if !r.sources.is_empty() => &r.sources,
            _ => {
                all = (0..self.sources.len()).collect();
                &all
            }
        };
        let Some(&first) = candidates.first() else {
            return 0;
        };
        candidates
            .iter()
            .copied()
            .find(|&i| {
                let s = &self.sources[i];
                let globs = if key { &s.keys } else { &s.channels };
                globs
                    .iter()
                    .any(|g| crate::protocol::glob_match(g.as_bytes(), name))
            })
            .unwrap_or(if route.is_some() {
                first
            } else {
                *candidates.last().unwrap_or(&first)
            })
    }

    /// The hub position of the radar source: after the Redis sources (or the embedded broker,
    /// at 0); `None` without radar feeds (TCP feeds from `radars` or the ZMQ `canada_addr`).
    pub fn radar_source(&self) -> Option<usize> {
        (!self.radar_feeds.is_empty() || self.canada_addr.is_some())
            .then_some(self.sources.len().max(1))
    }

    /// True for `<site>` and `<site>/echoes` of a configured TCP radar feed and, with
    /// `canada_addr` set, for any [`is_site_code`] site (three lowercase ASCII letters) and its
    /// `/echoes`: ZMQ sites are learnt from the wire, so their channels cannot be listed. A ZMQ
    /// site with another shape still reaches pattern subscriptions on the radar source (a
    /// route that subscribes `*` there gets every site).
    pub fn is_radar_channel(&self, name: &[u8]) -> bool {
        let tcp = self.radar_feeds.iter().any(|f| {
            let site = f.site.as_bytes();
            name == site || name.strip_prefix(site) == Some(b"/echoes")
        });
        let site = name.strip_suffix(b"/echoes").unwrap_or(name);
        tcp || (self.canada_addr.is_some() && is_site_code(site))
    }

    /// Whether source `index` may serve keyspace watches, so it needs `notify-keyspace-events`:
    /// it has key globs, or [`Config::source_for`] falls back to it for a key no glob takes
    /// (the last source for the native listener, a native or Preflight route's first source).
    /// A source that only serves channels and patterns is false.
    pub fn source_serves_watches(&self, index: usize) -> bool {
        let Some(source) = self.sources.get(index) else {
            return false;
        };
        if !source.keys.is_empty() {
            return true;
        }
        // A source whose key globs include `*` takes every key before any fallback.
        let catches_all = |ids: &[usize]| {
            ids.iter().any(|&i| {
                self.sources
                    .get(i)
                    .is_some_and(|s| s.keys.iter().any(|g| g == "*"))
            })
        };
        let all: Vec<usize> = (0..self.sources.len()).collect();
        if all.last() == Some(&index) && !catches_all(&all) {
            return true;
        }
        self.routes
            .iter()
            .filter(|r| matches!(r.profile, Profile::Native | Profile::Preflight))
            .any(|r| {
                let ids = if r.sources.is_empty() {
                    &all
                } else {
                    &r.sources
                };
                ids.first() == Some(&index) && !catches_all(ids)
            })
    }

    /// [`Config::try_parse_from`] with `env` as the whole environment, so tests need not touch
    /// the real one. clap may still read the real environment, but only values it took from
    /// the command line are used.
    fn parse_with_env<I, T>(
        args: I,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let flags = |knob: &Knob| flag_value::<String>(&matches, knob.key);
        let file_path = match flag_value::<PathBuf>(&matches, CONFIG.key) {
            Some(path) => Some((path, Origin::Flag(CONFIG.name))),
            None => env(CONFIG.env)
                .filter(|path| !path.is_empty())
                .map(|path| (PathBuf::from(path), Origin::Env(CONFIG.env))),
        };
        let file = match file_path {
            Some((path, origin)) => Some(ConfigFile::read(path, origin)?),
            None => None,
        };
        let print_config = flag_value::<bool>(&matches, "print_config").unwrap_or(false);
        let route_flags: Vec<String> = matches
            .get_many::<String>("route")
            .map(|v| v.cloned().collect())
            .unwrap_or_default();
        Layers {
            flags: &flags,
            env,
            file: file.as_ref(),
            route_flags: &route_flags,
        }
        .merge(print_config)
    }
}

/// A value typed on the command line; `None` when absent or when clap took it from the
/// environment (those are read through [`Layers::env`] instead).
fn flag_value<T: Clone + Send + Sync + 'static>(matches: &ArgMatches, id: &str) -> Option<T> {
    if matches.value_source(id) != Some(ValueSource::CommandLine) {
        return None;
    }
    matches.try_get_one::<T>(id).ok().flatten().cloned()
}

/// One shard per available CPU, 1 if that is unknown, never more than the maximum.
fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_SHARDS)
}

/// Parses a size: a number of bytes, optionally followed by `KiB`, `MiB`, `GiB` (or `KB`, `MB`,
/// `GB`, the same binary units), any case, spaces allowed around the unit. `None` if
/// malformed or past `u64`.
fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = split_number(text)?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "kib" | "kb" => KIB,
        "mib" | "mb" => MIB,
        "gib" | "gb" => GIB,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// Parses a duration: `250ms`, `25s`, `5m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = split_number(text)?;
    match unit.to_ascii_lowercase().as_str() {
        "" | "s" => Some(Duration::from_secs(number)),
        "ms" => Some(Duration::from_millis(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

/// Splits `" 64 KiB "` into `(64, "KiB")`. The number is plain ASCII digits.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(end);
    Some((digits.parse().ok()?, unit.trim_start()))
}

/// A size in its largest exact unit (`64KiB`), else plain bytes.
fn size_text(bytes: u64) -> String {
    for (unit, scale) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

/// A size for the TOML file: a string with a unit when one is exact, else an integer.
fn size_value(bytes: usize) -> toml::Value {
    let text = size_text(as_u64(bytes));
    match text.parse::<i64>() {
        Ok(n) => toml::Value::Integer(n),
        Err(_) => toml::Value::String(text),
    }
}

/// A duration in whole seconds (`25s`), else milliseconds (`250ms`).
fn duration_text(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Widens a `usize`; lossless on every target Rust supports (`usize` is at most 64 bits).
fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `Ok(value)` when `min <= value <= max`; else a message using `show` for the numbers.
fn in_range<T: PartialOrd + Copy>(
    value: T,
    min: T,
    max: T,
    show: fn(T) -> String,
) -> Result<T, String> {
    if value < min {
        Err(format!(
            "{} is below the minimum, {}",
            show(value),
            show(min)
        ))
    } else if value > max {
        Err(format!(
            "{} is above the maximum, {}",
            show(value),
            show(max)
        ))
    } else {
        Ok(value)
    }
}

fn size(raw: Raw<'_>, min: u64, max: u64, example: usize) -> Result<usize, String> {
    let bytes = match raw {
        Raw::Toml(toml::Value::Integer(n)) => u64::try_from(*n).ok(),
        _ => raw.text().and_then(parse_size),
    };
    let example = as_u64(example);
    let bytes = bytes.ok_or_else(|| {
        format!(
            "{} is not a size (use {example}, {})",
            raw.shown(),
            size_text(example)
        )
    })?;
    let bytes = in_range(bytes, min, max, size_text)?;
    usize::try_from(bytes)
        .map_err(|_| format!("{} is too large for this machine", size_text(bytes)))
}

fn duration(
    raw: Raw<'_>,
    min: Duration,
    max: Duration,
    example: Duration,
) -> Result<Duration, String> {
    let d = match raw {
        Raw::Toml(toml::Value::Integer(n)) => u64::try_from(*n).ok().map(Duration::from_secs),
        _ => raw.text().and_then(parse_duration),
    };
    let example = duration_text(example);
    let d = d.ok_or_else(|| {
        format!(
            "{} is not a duration (use {example}, 250ms, 5m; a bare number is seconds)",
            raw.shown()
        )
    })?;
    in_range(d, min, max, duration_text)
}

fn count(raw: Raw<'_>, min: usize, max: usize, example: usize) -> Result<usize, String> {
    let n = match raw {
        Raw::Toml(toml::Value::Integer(n)) => usize::try_from(*n).ok(),
        _ => raw.text().and_then(|text| text.trim().parse().ok()),
    };
    let n = n.ok_or_else(|| format!("{} is not a whole number (use {example})", raw.shown()))?;
    in_range(n, min, max, |n| n.to_string())
}

/// A whole number of days, at least 1 (`max_days_store_echoes`).
fn days(raw: Raw<'_>) -> Result<u32, String> {
    let n = count(raw, 1, usize::try_from(u32::MAX).unwrap_or(usize::MAX), 30)?;
    u32::try_from(n).map_err(|_| format!("{n} is above the maximum, {}", u32::MAX))
}

/// A token-bucket rate, `RATE` or `RATE/BURST`; `0` is off.
fn rate(raw: Raw<'_>) -> Result<Option<crate::limits::Rate>, String> {
    let text = match raw {
        Raw::Toml(toml::Value::Integer(n)) => n.to_string(),
        _ => raw
            .text()
            .ok_or_else(|| format!("{} is not RATE or RATE/BURST", raw.shown()))?
            .to_owned(),
    };
    if text.trim() == "0" {
        return Ok(None);
    }
    crate::limits::Rate::parse(&text).map(Some)
}

fn boolean(raw: Raw<'_>) -> Result<bool, String> {
    let b = match raw {
        Raw::Toml(toml::Value::Boolean(b)) => Some(*b),
        _ => raw
            .text()
            .and_then(|text| match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            }),
    };
    b.ok_or_else(|| {
        format!(
            "{} is not true or false (use true, false, 1, 0)",
            raw.shown()
        )
    })
}

fn socket_addr(raw: Raw<'_>) -> Result<SocketAddr, String> {
    raw.text()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| {
            format!(
                "{} is not an IP address and port (use 127.0.0.1:8080 or [::]:8080)",
                raw.shown()
            )
        })
}

/// A request path: starts with `/`, visible ASCII without `?` or `#`, not a built-in route.
fn url_path(raw: Raw<'_>) -> Result<String, String> {
    let path = raw
        .text()
        .ok_or_else(|| format!("{} is not a path (use /ws)", raw.shown()))?;
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with /"));
    }
    if let Some(c) = path
        .chars()
        .find(|&c| !c.is_ascii_graphic() || c == '?' || c == '#')
    {
        return Err(format!("{path:?} must not contain {c:?}"));
    }
    if RESERVED_PATHS.contains(&path) {
        return Err(format!("{path:?} is a built-in HTTP route"));
    }
    Ok(path.to_owned())
}

fn io_backend(raw: Raw<'_>) -> Result<IoBackend, String> {
    match raw
        .text()
        .map(|text| text.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("auto") => Ok(IoBackend::Auto),
        Some("io-uring" | "io_uring") => Ok(IoBackend::IoUring),
        Some("epoll") => Ok(IoBackend::Epoll),
        _ => Err(format!(
            "{} is not an I/O backend (use auto, io-uring or epoll)",
            raw.shown()
        )),
    }
}

fn log_format(raw: Raw<'_>) -> Result<LogFormat, String> {
    match raw
        .text()
        .map(|text| text.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        _ => Err(format!(
            "{} is not a log format (use text or json)",
            raw.shown()
        )),
    }
}

fn log_level(raw: Raw<'_>) -> Result<String, String> {
    let text = raw
        .text()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .ok_or_else(|| {
            format!(
                "{} is not a log filter (use info or ringcast=debug,warn)",
                raw.shown()
            )
        })?;
    match tracing_subscriber::EnvFilter::builder().parse(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(e) => Err(format!(
            "{text:?} is not a log filter: {}",
            e.to_string().replace('\n', " ")
        )),
    }
}

/// A Redis URL. Its text never goes into an error message: it may hold a password.
fn redis_url(raw: Raw<'_>) -> Result<RedisUrl, String> {
    let text = raw.text().ok_or_else(|| {
        format!(
            "{} is not a Redis URL (use redis://host:6379/0)",
            raw.shown()
        )
    })?;
    RedisUrl::parse(text.trim()).map_err(|reason| {
        format!(
            "not a Redis URL: {} (use redis://[user:pass@]host[:port][/db]; value not shown)",
            reason.replace('\n', " ")
        )
    })
}

/// The RESP protocol version: 2 or 3.
fn resp_version(raw: Raw<'_>) -> Result<u8, String> {
    let n = match raw {
        Raw::Toml(toml::Value::Integer(n)) => Some(*n),
        _ => raw.text().and_then(|text| text.trim().parse().ok()),
    };
    match n {
        Some(2) => Ok(2),
        Some(3) => Ok(3),
        _ => Err(format!(
            "{} is not a RESP version (use 2 or 3)",
            raw.shown()
        )),
    }
}

/// The API key. Its value never goes into an error message.
/// `radars`: the path of `radars.config.json`, read and parsed now, so a missing or bad file
/// is one line at startup that names it.
/// The radars file `--preset superdarn` reads from the working directory, as the original did.
pub const SUPERDARN_RADARS: &str = "radars.config.json";

fn radars_file(raw: Raw<'_>) -> Result<(PathBuf, Vec<TcpFeed>), String> {
    let path = raw
        .text()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "{} is not a file name (e.g. radars.config.json)",
                raw.shown()
            )
        })?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read radars file {}: {e}", path.display()))?;
    let feeds = parse_radars(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, feeds))
}

/// `canada-addr`: `host:port` or `tcp://host:port`.
fn zmq_addr(raw: Raw<'_>) -> Result<ZmqAddr, String> {
    let text = raw
        .text()
        .ok_or_else(|| format!("{} is not host:port", raw.shown()))?;
    parse_zmq_addr(text).map_err(|e| e.to_string())
}

fn api_key(raw: Raw<'_>) -> Result<String, String> {
    match raw.text() {
        Some(key) if !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(key.to_owned())
        }
        Some(_) => Err("must be printable ASCII without spaces (value not shown)".to_owned()),
        None => Err("must be a string (value not shown)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Parses `args` (after the program name) with `vars` as the whole environment.
    pub(super) fn parse(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        let argv = std::iter::once("ringcast").chain(args.iter().copied());
        Config::parse_with_env(argv, &|name| vars.get(name).cloned())
    }

    /// The knob name, origin and full message of an `Invalid` error.
    fn invalid(result: Result<Config, ConfigError>) -> (&'static str, Origin, String) {
        match result {
            Err(e @ ConfigError::Invalid { .. }) => {
                let message = e.to_string();
                let ConfigError::Invalid { knob, origin, .. } = e else {
                    unreachable!()
                };
                (knob, origin, message)
            }
            other => panic!("expected an invalid-value error, got {other:?}"),
        }
    }

    /// A TOML file in the temp dir, removed on drop.
    struct TempToml(PathBuf);

    impl TempToml {
        fn new(tag: &str, text: &str) -> TempToml {
            let name = format!("ringcast-config-{}-{tag}.toml", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, text).expect("write temp config");
            TempToml(path)
        }

        fn arg(&self) -> &str {
            self.0.to_str().expect("temp path is UTF-8")
        }
    }

    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn radar_channels_go_to_the_radar_source_after_the_others() {
        let config = parse(&["--radars", RADARS_FIXTURE], &[]).expect("valid");
        assert_eq!(config.radar_source(), Some(1), "after the embedded broker");
        assert_eq!(config.source_for(None, b"sas", false), 1);
        assert_eq!(config.source_for(None, b"sas/echoes", false), 1);
        assert_eq!(config.source_for(None, b"sas/other", false), 0);
        assert_eq!(config.source_for(None, b"sas", true), 0, "keys never");
        let redis = "redis://10.0.0.1:6380";
        let with_redis = parse(&["--radars", RADARS_FIXTURE, "--redis", redis], &[]);
        let with_redis = with_redis.expect("valid");
        assert_eq!(with_redis.radar_source(), Some(1), "after the Redis source");
        assert_eq!(with_redis.source_for(None, b"sas", false), 1);
        assert_eq!(with_redis.source_for(None, b"news", false), 0);
    }

    #[test]
    fn canada_addr_makes_the_radar_source_and_takes_site_codes() {
        let config = parse(&[], &[("CANADA_ADDR", "zmq.example:5555")]).expect("valid");
        assert_eq!(config.canada_addr.as_ref().map(|a| a.port), Some(5_555));
        assert_eq!(config.radar_source(), Some(1), "without radars");
        assert_eq!(config.source_for(None, b"sas", false), 1);
        assert_eq!(config.source_for(None, b"pgr/echoes", false), 1);
        assert_eq!(config.source_for(None, b"news", false), 0);
        assert_eq!(config.source_for(None, b"SAS", false), 0);
        assert_eq!(config.source_for(None, b"sas", true), 0, "keys never");
        // The knob's own variable wins over the original's.
        let both = [
            ("RINGCAST_CANADA_ADDR", "tcp://a:1"),
            ("CANADA_ADDR", "b:2"),
        ];
        let config = parse(&[], &both).expect("valid");
        assert_eq!(
            config.canada_addr.map(|a| a.endpoint()),
            Some("tcp://a:1".into())
        );
        let (knob, origin, message) = invalid(parse(&[], &[("CANADA_ADDR", "nowhere")]));
        assert_eq!(knob, "canada-addr");
        assert_eq!(origin, Origin::Env("CANADA_ADDR"));
        assert!(message.contains("no port"), "{message}");
        let (knob, origin, _) = invalid(parse(&["--canada-addr", "ipc://x:1"], &[]));
        assert_eq!(knob, "canada-addr");
        assert_eq!(origin, Origin::Flag("canada-addr"));
    }

    #[test]
    fn an_empty_radars_file_gives_no_feeds_and_a_missing_one_names_itself() {
        let empty = TempToml::new("radars-empty", "{}");
        let config = parse(&["--radars", empty.arg()], &[]).expect("valid");
        assert!(config.radar_feeds.is_empty());
        assert_eq!(config.radar_source(), None);
        assert_eq!(config.source_for(None, b"sas", false), 0);
        let gone = std::env::temp_dir().join("ringcast-config-no-such-radars.json");
        let gone = gone.to_str().expect("UTF-8");
        let (knob, origin, message) = invalid(parse(&[], &[("RINGCAST_RADARS", gone)]));
        assert_eq!(knob, "radars");
        assert_eq!(origin, Origin::Env("RINGCAST_RADARS"));
        assert!(message.contains(gone), "{message}");
        let bad = TempToml::new("radars-bad", r#"{"sas": {"host": "h"}}"#);
        let (_, _, message) = invalid(parse(&["--radars", bad.arg()], &[]));
        assert!(message.contains(r#""port" is missing"#), "{message}");
    }

    #[test]
    fn echo_retention_is_whole_days_and_reads_the_originals_variable_last() {
        assert_eq!(
            parse(&[], &[]).expect("valid").max_days_store_echoes,
            Some(30),
            "the original's default"
        );
        let original = [("MAX_DAYS_STORE_ECHOES", "7")];
        let config = parse(&[], &original).expect("valid");
        assert_eq!(config.max_days_store_echoes, Some(7), "the original's .env");
        let file = TempToml::new("max-days", "max_days_store_echoes = 5\n");
        let config = parse(&["--config", file.arg()], &original).expect("valid");
        assert_eq!(
            config.max_days_store_echoes,
            Some(5),
            "file over the original's"
        );
        let ours = [
            ("RINGCAST_MAX_DAYS_STORE_ECHOES", "9"),
            ("MAX_DAYS_STORE_ECHOES", "x"),
        ];
        let config = parse(&[], &ours).expect("the original's is not read");
        assert_eq!(config.max_days_store_echoes, Some(9));
        let config = parse(&["--max-days-store-echoes", "4294967295"], &[]).expect("valid");
        assert_eq!(config.max_days_store_echoes, Some(u32::MAX));
        assert!(
            config
                .to_toml()
                .contains("\nmax_days_store_echoes = 4294967295\n")
        );
        assert!(
            parse(&[], &[])
                .expect("valid")
                .to_toml()
                .contains("\nmax_days_store_echoes = 30\n")
        );
        for bad in ["0", "-1", "1.5", "30d", "thirty", "4294967296"] {
            let (knob, origin, message) = invalid(parse(&["--max-days-store-echoes", bad], &[]));
            assert_eq!(knob, "max-days-store-echoes");
            assert_eq!(origin, Origin::Flag("max-days-store-echoes"));
            assert!(
                message.contains(bad) && !message.contains('\n'),
                "{message}"
            );
        }
        let (knob, origin, _) = invalid(parse(&[], &[("MAX_DAYS_STORE_ECHOES", "0")]));
        assert_eq!(knob, "max-days-store-echoes");
        assert_eq!(origin, Origin::Env("MAX_DAYS_STORE_ECHOES"));
        let file = TempToml::new("max-days-bad", "max_days_store_echoes = \"a week\"\n");
        let (_, origin, _) = invalid(parse(&["--config", file.arg()], &[]));
        assert_eq!(origin, Origin::File(file.0.clone()));
    }

    #[test]
    fn sizes_take_binary_units() {
        let cases = [
            ("0", 0),
            ("65536", 65_536),
            ("64KiB", 65_536),
            ("64kb", 65_536),
            (" 64 KiB ", 65_536),
            ("1MiB", 1_048_576),
            ("1MB", 1_048_576),
            ("2GiB", 2 * GIB),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Some(bytes), "{text:?}");
        }
        let bad = [
            "",
            "12x",
            "KiB",
            "-1",
            "+1",
            "1.5MiB",
            "1TiB",
            "99999999999999999999",
            "17179869184GiB",
        ];
        for text in bad {
            assert_eq!(parse_size(text), None, "{text:?}");
        }
    }

    #[test]
    fn durations_take_ms_s_m_or_bare_seconds() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("25s", Duration::from_secs(25)),
            ("5m", Duration::from_secs(300)),
            ("30", Duration::from_secs(30)),
            (" 2 s ", Duration::from_secs(2)),
        ];
        for (text, d) in cases {
            assert_eq!(parse_duration(text), Some(d), "{text:?}");
        }
        for text in [
            "",
            "s",
            "5h",
            "1.5s",
            "-1s",
            "5 minutes",
            "307445734561825861m",
        ] {
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
    }

    #[test]
    fn sizes_and_durations_print_in_their_largest_exact_unit() {
        assert_eq!(size_text(65_536), "64KiB");
        assert_eq!(size_text(1_048_576), "1MiB");
        assert_eq!(size_text(1_000), "1000");
        assert_eq!(size_value(1_000), toml::Value::Integer(1_000));
        assert_eq!(duration_text(Duration::from_secs(60)), "60s");
        assert_eq!(duration_text(Duration::from_millis(1_500)), "1500ms");
    }

    #[test]
    fn nothing_set_gives_the_defaults() {
        let config = parse(&[], &[]).expect("defaults are valid");
        assert_eq!(config, Config::default());
        assert!((1..=MAX_SHARDS).contains(&config.shards));
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let file = TempToml::new(
            "precedence",
            "shards = 3\nmax_outbox_bytes = \"2MiB\"\nping_interval = 10\nws_path = \"/file\"\n",
        );
        let env = [("RINGCAST_SHARDS", "5"), ("RINGCAST_PING_INTERVAL", "7s")];
        let config = parse(&["--config", file.arg(), "--shards", "7"], &env).expect("valid");
        assert_eq!(config.shards, 7, "flag over env and file");
        assert_eq!(
            config.ping_interval,
            Duration::from_secs(7),
            "env over file"
        );
        assert_eq!(config.max_outbox_bytes, 2 * 1_048_576, "file over default");
        assert_eq!(config.ws_path, "/file", "file over default");
        assert_eq!(
            config.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES,
            "default"
        );

        let config = parse(&["--config", file.arg()], &env).expect("valid");
        assert_eq!(config.shards, 5, "env over file");
        let config = parse(&["--config", file.arg()], &[]).expect("valid");
        assert_eq!(config.shards, 3, "file over default");
        assert_eq!(
            config.ping_interval,
            Duration::from_secs(10),
            "bare integer is seconds"
        );
    }

    #[test]
    fn config_file_can_come_from_env_and_empty_vars_are_unset() {
        let file = TempToml::new("from-env", "shards = 2\n");
        let config = parse(
            &[],
            &[("RINGCAST_CONFIG", file.arg()), ("RINGCAST_SHARDS", "")],
        );
        assert_eq!(config.expect("valid").shards, 2);
    }

    #[test]
    fn try_parse_from_reads_flags_and_file() {
        // Uses the real environment: only the flag layer and the file layer are asserted.
        let file = TempToml::new("try-parse", "log_format = \"json\"\n");
        let args = [
            "ringcast",
            "--config",
            file.arg(),
            "--listen",
            "127.0.0.1:0",
        ];
        let config = Config::try_parse_from(args).expect("valid");
        assert_eq!(config.listen, "127.0.0.1:0".parse().expect("literal"));
    }

    /// A valid, non-default value for every knob the file can set, as text.
    const EVERY_KNOB: &[(&Knob, &str)] = &[
        (&LISTEN, "0.0.0.0:0"),
        (&SHARDS, "2"),
        (&PIN_CORES, "true"),
        (&IO_BACKEND, "epoll"),
        (&MAX_MESSAGE_BYTES, "1MiB"),
        (&MAX_OUTBOX_BYTES, "8MiB"),
        (&PING_INTERVAL, "500ms"),
        (&PONG_TIMEOUT, "3s"),
        (&IDLE_TIMEOUT, "2s"),
        (&API_KEY, "sekrit-123"),
        (&ECHO_PATH, "/echo"),
        (&WS_PATH, "/socket"),
        (&LOG_FORMAT, "json"),
        (&LOG_LEVEL, "ringcast=debug,warn"),
        (&MAX_CONNECTIONS, "10"),
        (&MAX_SUBSCRIPTIONS, "20"),
        (&SHARD_INBOX, "30"),
        (&SHUTDOWN_TIMEOUT, "1s"),
        (&READ_BUFFER_BYTES, "8KiB"),
        (&REDIS, "redis://app:s3cret@10.0.0.1:6380/2"),
        (&REDIS_SET_NOTIFY, "true"),
        (&REDIS_READ_ON_SHARD, "false"),
        (&REDIS_RESP, "2"),
        (&REDIS_BACKOFF_MAX, "1m"),
        (&REDIS_CONNECT_TIMEOUT, "500ms"),
        (&RADARS, RADARS_FIXTURE),
        (&CANADA_ADDR, "tcp://zmq.example:5555"),
        (&MAX_DAYS_STORE_ECHOES, "30"),
        (&AUTH, "jwt"),
        (&ALLOW_SUBSCRIBE, "news:*,chat"),
        (&ALLOW_WATCH, "run:*"),
        (&JWT_SECRET, "jwt-sekrit"),
        (&JWT_PUBLIC_KEY, JWT_KEY_FIXTURE),
        (&JWT_AUDIENCE, "ringcast"),
        (&JWT_ISSUER, "issuer-a,issuer-b"),
        (&ADMIN_LISTEN, "127.0.0.1:0"),
        (&PROXY_PROTOCOL, "true"),
        (&MAX_CONNECTIONS_PER_IP, "7"),
        (&HANDSHAKE_RATE_PER_IP, "5/9"),
        (&COMMAND_RATE, "50"),
        (&HEAD_TIMEOUT, "3s"),
    ];

    /// An EC P-256 public key in PEM (ES256).
    const JWT_KEY_FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/jwt-es256-public.pem"
    );

    /// A radars.config.json with one feed, `sas` at 127.0.0.1:6032.
    const RADARS_FIXTURE: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/radars.config.json");

    #[test]
    fn every_knob_is_wired_to_its_flag_variable_and_key() {
        assert_eq!(EVERY_KNOB.len(), FILE_KNOBS.len());
        let mut args = Vec::new();
        for (knob, value) in EVERY_KNOB {
            args.push(format!("--{}", knob.name));
            args.push(value.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let from_flags = parse(&args, &[]).expect("valid flags");

        let vars: Vec<(&str, &str)> = EVERY_KNOB.iter().map(|(k, v)| (k.env, *v)).collect();
        let from_env = parse(&[], &vars).expect("valid env");

        let text: String = EVERY_KNOB
            .iter()
            .map(|(k, v)| format!("{} = {v:?}\n", k.key))
            .collect();
        let file = TempToml::new("every-knob", &text);
        let from_file = parse(&["--config", file.arg()], &[]).expect("valid file");

        assert_eq!(from_flags, from_env);
        assert_eq!(from_flags, from_file);
        let expected = Config {
            listen: "0.0.0.0:0".parse().expect("literal"),
            shards: 2,
            pin_cores: true,
            io_backend: IoBackend::Epoll,
            max_message_bytes: 1_048_576,
            max_outbox_bytes: 8 * 1_048_576,
            ping_interval: Duration::from_millis(500),
            pong_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(2),
            api_key: Some("sekrit-123".to_owned()),
            echo_path: Some("/echo".to_owned()),
            ws_path: "/socket".to_owned(),
            log_format: LogFormat::Json,
            log_level: "ringcast=debug,warn".to_owned(),
            max_connections: 10,
            max_subscriptions: 20,
            shard_inbox: 30,
            shutdown_timeout: Duration::from_secs(1),
            read_buffer_bytes: 8_192,
            redis: Some(RedisUrl {
                host: "10.0.0.1".to_owned(),
                port: 6380,
                db: 2,
                user: Some("app".to_owned()),
                password: Some("s3cret".to_owned()),
                cluster: false,
                seeds: Vec::new(),
            }),
            redis_set_notify: true,
            redis_read_on_shard: false,
            redis_resp: 2,
            redis_backoff_max: Duration::from_secs(60),
            redis_connect_timeout: Duration::from_millis(500),
            radars: Some(PathBuf::from(RADARS_FIXTURE)),
            radar_feeds: vec![TcpFeed {
                site: "sas".to_owned(),
                host: "127.0.0.1".to_owned(),
                port: 6_032,
            }],
            canada_addr: Some(ZmqAddr {
                host: "zmq.example".to_owned(),
                port: 5_555,
            }),
            max_days_store_echoes: Some(30),
            proxy_protocol: true,
            max_connections_per_ip: 7,
            handshake_rate_per_ip: Some(crate::limits::Rate {
                per_second: 5,
                burst: 9,
            }),
            command_rate: Some(crate::limits::Rate {
                per_second: 50,
                burst: 50,
            }),
            head_timeout: Duration::from_secs(3),
            debug_stall_shard: None,
            sources: Vec::new(),
            preset: None,
            routes: Vec::new(),
            print_config: false,
            access: crate::auth::Access {
                mode: crate::auth::AuthMode::Jwt,
                allow_subscribe: vec!["news:*".to_owned(), "chat".to_owned()],
                allow_watch: vec!["run:*".to_owned()],
            },
            jwt: crate::auth::JwtKeys {
                secret: Some("jwt-sekrit".to_owned()),
                public_key: Some(PathBuf::from(JWT_KEY_FIXTURE)),
                public_key_pem: Some(std::fs::read(JWT_KEY_FIXTURE).expect("fixture")),
                audience: vec!["ringcast".to_owned()],
                issuer: vec!["issuer-a".to_owned(), "issuer-b".to_owned()],
            },
            admin_listen: Some("127.0.0.1:0".parse().expect("literal")),
        };
        let expected = Config {
            sources: vec![SourceConfig::catch_all(
                CATCH_ALL_SOURCE,
                expected.redis.clone().expect("set above"),
            )],
            ..expected
        };
        assert_eq!(from_flags, expected);
    }

    #[test]
    fn knob_names_agree_with_the_command_line() {
        let command = Cli::command();
        for knob in FILE_KNOBS.iter().chain([&CONFIG, &DEBUG_STALL_SHARD]) {
            assert_eq!(knob.key, knob.name.replace('-', "_"));
            assert_eq!(knob.env, format!("RINGCAST_{}", knob.key.to_uppercase()));
            let arg = command.get_arguments().find(|a| a.get_id() == knob.key);
            let arg = arg.unwrap_or_else(|| panic!("no clap argument {}", knob.key));
            assert_eq!(arg.get_long(), Some(knob.name));
            assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(knob.env)));
        }
        command.debug_assert();
    }

    #[test]
    fn help_gives_every_knob_a_default() {
        let mut command = Cli::command();
        let help = command.render_long_help().to_string();
        for knob in FILE_KNOBS.iter().chain([&CONFIG]) {
            assert!(
                help.contains(&format!("--{}", knob.name)),
                "{} missing",
                knob.name
            );
            assert!(help.contains(knob.env), "{} missing", knob.env);
        }
        let defaults = command.get_arguments().filter(|a| {
            a.get_help()
                .is_some_and(|h| h.to_string().contains("[default: "))
        });
        assert_eq!(
            defaults.count(),
            FILE_KNOBS.len() + 4,
            "every knob but --print-config: --config, --preset, --route and the hidden \
             --debug-stall-shard included"
        );
        assert!(!help.contains("debug-stall-shard"), "{help}");
        assert!(!help.contains("RINGCAST_DEBUG_STALL_SHARD"), "{help}");
    }

    #[test]
    fn io_backend_defaults_to_auto_and_names_each_backend() {
        let backend = |args: &[&str]| parse(args, &[]).expect("valid").io_backend;
        assert_eq!(backend(&[]), IoBackend::Auto);
        assert_eq!(backend(&["--io-backend", "io-uring"]), IoBackend::IoUring);
        assert_eq!(backend(&["--io-backend", "io_uring"]), IoBackend::IoUring);
        assert_eq!(backend(&["--io-backend", "EPOLL"]), IoBackend::Epoll);
        let env = parse(&[], &[("RINGCAST_IO_BACKEND", "epoll")]).expect("valid");
        assert_eq!(env.io_backend, IoBackend::Epoll);
    }

    #[test]
    fn pin_cores_is_a_flag_that_also_takes_a_value() {
        assert!(parse(&["--pin-cores"], &[]).expect("valid").pin_cores);
        assert!(!parse(&["--pin-cores=false"], &[]).expect("valid").pin_cores);
        assert!(
            !parse(&[], &[("RINGCAST_PIN_CORES", "0")])
                .expect("valid")
                .pin_cores
        );
        assert!(
            parse(&[], &[("RINGCAST_PIN_CORES", "1")])
                .expect("valid")
                .pin_cores
        );
        assert!(parse(&["--print-config"], &[]).expect("valid").print_config);

        let config = parse(&["--redis-set-notify"], &[]).expect("valid");
        assert!(config.redis_set_notify);
        let config = parse(
            &["--redis-set-notify=0"],
            &[("RINGCAST_REDIS_SET_NOTIFY", "1")],
        );
        assert!(!config.expect("valid").redis_set_notify, "flag over env");
        assert!(!parse(&[], &[]).expect("valid").redis_set_notify);
    }

    /// The one-line message for a config file `text` that fails to load.
    fn file_error(tag: &str, text: &str) -> String {
        let file = TempToml::new(tag, text);
        match parse(&["--config", file.arg()], &[]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{text:?} was accepted"),
        }
    }

    #[test]
    fn cluster_sources_and_sharded_channels() {
        let file = TempToml::new(
            "cluster-sources",
            "[[source]]\nname = \"a\"\nredis = \"redis://h:7000\"\ncluster = true\n\
             sharded_channels = [\"orders:*\"]\n\n\
             [[source]]\nname = \"b\"\nredis = \"redis+cluster://h:7000,g:7001\"\n",
        );
        let config = parse(&["--config", file.arg()], &[]).expect("valid");
        assert!(config.sources[0].url.cluster);
        assert_eq!(config.sources[0].sharded_channels, ["orders:*"]);
        assert!(config.sources[1].url.cluster);
        assert_eq!(config.sources[1].url.seeds.len(), 1);
        assert!(config.sources[1].sharded_channels.is_empty());
        // A preset's sources take the cluster URL, all on db 0.
        let config = parse(
            &["--preset", "weppcloud", "--redis", "redis+cluster://h:7000"],
            &[],
        )
        .expect("valid");
        assert!(
            config
                .sources
                .iter()
                .all(|s| s.url.cluster && s.url.db == 0)
        );
        for (text, needle) in [
            (
                "[[source]]\nname = \"a\"\nredis = \"redis://h\"\nsharded_channels = [\"x\"]\n",
                "sharded_channels needs a Redis Cluster",
            ),
            (
                "[[source]]\nname = \"a\"\nredis = \"redis://h/2\"\ncluster = true\n",
                "only db 0",
            ),
            (
                "[[source]]\nname = \"a\"\nredis = \"redis+cluster://h/1\"\n",
                "only db 0",
            ),
        ] {
            let file = TempToml::new("cluster-bad", text);
            let err = parse(&["--config", file.arg()], &[]).expect_err(text);
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn only_sources_that_can_serve_watches_need_keyspace_events() {
        let file = TempToml::new(
            "watch-sources",
            "[[source]]\nname = \"keys\"\nredis = \"redis://h/0\"\nkeys = [\"run:*\"]\n\n\
             [[source]]\nname = \"pubsub\"\nredis = \"redis://h/2\"\nchannels = [\"*\"]\n",
        );
        // No glob takes every key: a native watch of `other` falls back to the last source.
        let config = parse(&["--config", file.arg()], &[]).expect("valid");
        assert!(config.source_serves_watches(0));
        assert!(config.source_serves_watches(1));
        // With --redis as the catch-all (keys = ["*"]), the pub/sub source never gets a key.
        let config = parse(&["--config", file.arg(), "--redis", "redis://h"], &[]).expect("valid");
        assert_eq!(config.sources.len(), 3);
        assert!(config.source_serves_watches(0));
        assert!(!config.source_serves_watches(1));
        assert!(config.source_serves_watches(2));
        // The weppcloud preset: Preflight watches, Status is pub/sub only.
        let config = parse(&["--preset", "weppcloud"], &[]).expect("valid");
        assert_eq!(config.sources[1].name, "status");
        assert!(config.source_serves_watches(0));
        assert!(!config.source_serves_watches(1));
        assert!(!config.source_serves_watches(9));
    }

    #[test]
    fn squonk2_takes_redis_as_the_catch_all_source_other_presets_address_theirs() {
        let amqp = ("ESS_AMPQ_URL", "amqp://u:p@r/v");
        let config = parse(
            &["--preset", "squonk2", "--redis", "redis://h:6400/3"],
            &[amqp],
        )
        .expect("ok");
        assert_eq!(config.sources.len(), 1);
        assert_eq!(config.sources[0].name, CATCH_ALL_SOURCE);
        assert_eq!(config.sources[0].url.to_string(), "redis://h:6400/3");
        let env = [amqp, ("REDIS_URL", "redis://e")];
        let config = parse(&["--preset", "squonk2"], &env).expect("ok");
        assert_eq!(config.sources[0].url.host, "e");
        let config = parse(&["--preset", "squonk2"], &[amqp]).expect("ok");
        assert!(config.sources.is_empty());
        let config = parse(&["--preset", "bess", "--redis", "redis://h"], &[]).expect("valid");
        assert_eq!(config.sources.len(), 1);
        assert_eq!(config.sources[0].name, "bess");
    }

    #[test]
    fn bad_source_tables_say_exactly_what_is_wrong() {
        let table = |name: &str| format!("[[source]]\nname = {name:?}\nredis = \"redis://h\"\n");
        let message = file_error("src-empty", &table(""));
        assert!(message.contains("has an empty name"), "{message}");
        assert!(!message.contains("reserved"), "{message}");

        let message = file_error("src-reserved", &table("redis"));
        assert!(
            message.contains("\"redis\" is reserved: it names the --redis source"),
            "{message}"
        );
        assert!(!message.contains("twice"), "{message}");

        let message = file_error("src-twice", &format!("{}{}", table("a"), table("a")));
        assert!(
            message.contains("\"a\" is used by two [[source]] tables"),
            "{message}"
        );
        assert!(!message.contains("reserved"), "{message}");

        let message = file_error("src-keys", &format!("{}keys = \"*\"\n", table("a")));
        assert!(
            message.contains("write keys = [\"*\"], not keys = \"*\""),
            "{message}"
        );
        assert!(message.contains(", line 4:"), "{message}");
        assert!(!message.contains("expected a sequence"), "{message}");
        let message = file_error("src-chan", &format!("{}channels = 3\n", table("a")));
        assert!(
            message.contains("channels = [\"*\"], not integer"),
            "{message}"
        );

        let tls = "[[source]]\nname = \"a\"\nredis = \"rediss://u:sekrit@h\"\n";
        let message = file_error("src-tls", tls);
        assert!(
            message.contains("[[source]] \"a\" redis: not a Redis URL"),
            "{message}"
        );
        assert!(
            message.contains("rediss:// (TLS) is not supported yet"),
            "{message}"
        );
        assert!(!message.contains("sekrit"), "{message}");
    }

    #[test]
    fn a_bad_value_names_the_knob_and_its_source() {
        let (knob, origin, message) = invalid(parse(&["--max-outbox-bytes", "12x"], &[]));
        assert_eq!(
            (knob, origin),
            ("max-outbox-bytes", Origin::Flag("max-outbox-bytes"))
        );
        assert_eq!(
            message,
            "invalid value for max-outbox-bytes (flag --max-outbox-bytes): \
             \"12x\" is not a size (use 1048576, 1MiB)"
        );

        let (_, _, message) = invalid(parse(&[], &[("RINGCAST_MAX_OUTBOX_BYTES", "12x")]));
        assert!(
            message.contains("(env RINGCAST_MAX_OUTBOX_BYTES)"),
            "{message}"
        );

        let file = TempToml::new("bad-value", "max_outbox_bytes = -5\n");
        let (knob, origin, message) = invalid(parse(&["--config", file.arg()], &[]));
        assert_eq!(
            (knob, origin),
            ("max-outbox-bytes", Origin::File(file.0.clone()))
        );
        assert!(message.contains("-5 is not a size"), "{message}");
    }

    #[test]
    fn out_of_range_and_malformed_values_are_rejected() {
        let cases = [
            ("listen", "localhost:80"),
            ("shards", "0"),
            ("shards", "1025"),
            ("pin-cores", "maybe"),
            ("io-backend", "kqueue"),
            ("max-message-bytes", "512"),
            ("max-message-bytes", "65MiB"),
            ("max-outbox-bytes", "1KiB"),
            ("ping-interval", "50ms"),
            ("idle-timeout", "soon"),
            ("echo-path", "/healthz"),
            ("ws-path", "ws"),
            ("ws-path", "/a b"),
            ("ws-path", "/ws?x"),
            ("log-format", "xml"),
            ("log-level", "ringcast=loud"),
            ("log-level", ""),
            ("max-connections", "0"),
            ("max-subscriptions", "-1"),
            ("shard-inbox", "8"),
            ("shutdown-timeout", "31s"),
            ("read-buffer-bytes", "256"),
            ("read-buffer-bytes", "16KiB"),
            ("redis", "localhost:6379"),
            ("redis", "http://x"),
            ("redis", "redis://h:notaport"),
            ("redis", "redis://"),
            ("redis-set-notify", "maybe"),
            ("redis-resp", "1"),
            ("redis-resp", "4"),
            ("redis-resp", "three"),
            ("redis-backoff-max", "99ms"),
            ("redis-backoff-max", "301s"),
            ("redis-connect-timeout", "50ms"),
            ("redis-connect-timeout", "61s"),
            ("debug-stall-shard", "-1"),
            ("debug-stall-shard", "x"),
        ];
        for (name, value) in cases {
            let flag = format!("--{name}");
            let (knob, _, message) = invalid(parse(&[&flag, value], &[]));
            assert_eq!(knob, name, "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn heartbeat_knobs_have_a_floor_and_no_longer_depend_on_each_other() {
        // A pong timeout shorter than the ping interval is fine (uvicorn's 20 s / 20 s is
        // equal); the idle timeout is for the HTTP phase and unrelated to pings.
        let config = parse(
            &[
                "--ping-interval",
                "60s",
                "--pong-timeout",
                "5s",
                "--idle-timeout",
                "1s",
            ],
            &[],
        )
        .expect("valid");
        assert_eq!(config.pong_timeout, Duration::from_secs(5));
        for knob in ["ping-interval", "pong-timeout", "idle-timeout"] {
            let flag = format!("--{knob}");
            let (name, _, message) = invalid(parse(&[&flag, "50ms"], &[]));
            assert_eq!(name, knob, "{message}");
            assert!(message.contains("100ms"), "{message}");
        }
    }

    #[test]
    fn echo_path_must_differ_from_ws_path() {
        let (knob, _, _) = invalid(parse(&["--echo-path", "/ws"], &[]));
        assert_eq!(knob, "echo-path");
    }

    #[test]
    fn the_api_key_is_never_shown() {
        let (_, _, message) = invalid(parse(&["--api-key", "sekrit 123"], &[]));
        assert!(!message.contains("sekrit"), "{message}");
        let file = TempToml::new("api-key", "api_key = 12345\n");
        let (_, _, message) = invalid(parse(&["--config", file.arg()], &[]));
        assert!(!message.contains("12345"), "{message}");

        let config = parse(&[], &[("RINGCAST_API_KEY", "sekrit-123")]).expect("valid");
        assert_eq!(config.api_key.as_deref(), Some("sekrit-123"));
        for shown in [format!("{config:?}"), config.to_toml()] {
            assert!(!shown.contains("sekrit"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn unknown_file_keys_and_bad_toml_are_one_line_errors() {
        let file = TempToml::new("unknown-key", "shards = 2\nmax_outbox = 1\n");
        let err = parse(&["--config", file.arg()], &[]).expect_err("unknown key");
        let message = err.to_string();
        assert!(
            matches!(err, ConfigError::File { line: Some(2), .. }),
            "{message}"
        );
        assert!(message.contains("unknown field `max_outbox`"), "{message}");
        assert!(!message.contains('\n'), "{message}");

        let file = TempToml::new("bad-toml", "shards = \n");
        let message = parse(&["--config", file.arg()], &[])
            .expect_err("bad toml")
            .to_string();
        assert!(
            message.starts_with("config file ") && !message.contains('\n'),
            "{message}"
        );

        let missing = std::env::temp_dir().join("ringcast-config-does-not-exist.toml");
        let err = parse(
            &[],
            &[("RINGCAST_CONFIG", missing.to_str().expect("UTF-8"))],
        );
        let message = err.expect_err("missing file").to_string();
        assert!(message.contains("(env RINGCAST_CONFIG)"), "{message}");
    }

    #[test]
    fn to_toml_reads_back_as_the_same_config() {
        let (_, key) = EVERY_KNOB[9];
        assert_eq!(key, "sekrit-123");
        let vars: Vec<(&str, &str)> = EVERY_KNOB.iter().map(|(k, v)| (k.env, *v)).collect();
        for config in [Config::default(), parse(&[], &vars).expect("valid")] {
            let text = config.to_toml();
            let file = ConfigFile::parse(PathBuf::from("printed.toml"), &text).expect("valid");
            let none = |_: &str| None;
            let no_flags = |_: &Knob| None;
            let layers = Layers {
                flags: &no_flags,
                env: &none,
                file: Some(&file),
                route_flags: &[],
            };
            let read_back = layers.merge(false).expect("valid");
            let expected_key = config.api_key.as_ref().map(|_| REDACTED.to_owned());
            // The password reads back as the `***` it was printed as.
            let expected_redis = config.redis.as_ref().map(|url| {
                let mut url = url.clone();
                url.password = url.password.as_ref().map(|_| "***".to_owned());
                url
            });
            // The JWT secret reads back as the placeholder it was printed as.
            let expected_jwt = crate::auth::JwtKeys {
                secret: config.jwt.secret.as_ref().map(|_| REDACTED.to_owned()),
                ..config.jwt.clone()
            };
            assert_eq!(
                read_back,
                Config {
                    api_key: expected_key,
                    jwt: expected_jwt,
                    sources: expected_redis
                        .iter()
                        .map(|u| SourceConfig::catch_all(CATCH_ALL_SOURCE, u.clone()))
                        .collect(),
                    redis: expected_redis,
                    ..config
                },
                "{text}"
            );
            // Printed again, it is the same text.
            assert_eq!(read_back.to_toml(), text);
        }
    }

    #[test]
    fn redis_password_completes_a_redis_url_without_one() {
        let pw = |env: &[(&str, &str)]| {
            parse(&[], env)
                .expect("valid")
                .redis
                .and_then(|u| u.password)
        };
        let both = [("REDIS_URL", "redis://h:6379/0"), ("REDIS_PASSWORD", "pw")];
        assert_eq!(pw(&both).as_deref(), Some("pw"));
        let own = [
            ("REDIS_URL", "redis://:mine@h:6379/0"),
            ("REDIS_PASSWORD", "pw"),
        ];
        assert_eq!(
            pw(&own).as_deref(),
            Some("mine"),
            "the URL's own password wins"
        );
        assert_eq!(pw(&both[..1]), None);
    }

    #[test]
    fn redis_comes_from_flag_env_file_then_redis_url_then_seed_variables() {
        let host = |config: Config| config.redis.map(|u| u.host);
        let file = TempToml::new("redis", "redis = \"redis://file:6379\"\n");
        let env = [
            ("RINGCAST_REDIS", "redis://env"),
            ("REDIS_URL", "redis://url"),
            ("REDIS_HOST", "seed"),
        ];
        let args = ["--config", file.arg(), "--redis", "redis://flag"];
        let config = parse(&args, &env).expect("valid");
        assert_eq!(host(config).as_deref(), Some("flag"));
        let config = parse(&args[..2], &env).expect("valid");
        assert_eq!(host(config).as_deref(), Some("env"), "env over file");
        let config = parse(&args[..2], &env[1..]).expect("valid");
        assert_eq!(host(config).as_deref(), Some("file"), "file over REDIS_URL");
        let config = parse(&[], &env[1..]).expect("valid");
        assert_eq!(
            host(config).as_deref(),
            Some("url"),
            "REDIS_URL over REDIS_HOST"
        );
        let config = parse(&[], &[("REDIS_URL", ""), ("REDIS_HOST", "seed")]);
        assert_eq!(host(config.expect("valid")).as_deref(), Some("seed"));
        assert_eq!(
            parse(&[], &[]).expect("valid").redis,
            None,
            "embedded broker"
        );
        assert_eq!(
            parse(&[], &[("REDIS_PORT", "7000")]).expect("valid").redis,
            None,
            "REDIS_HOST turns the seed variables on"
        );

        let seed = [
            ("REDIS_HOST", "seed"),
            ("REDIS_PORT", "7000"),
            ("REDIS_DB", "3"),
            ("REDIS_PASS", "sekrit"),
        ];
        let url = parse(&[], &seed).expect("valid").redis.expect("set");
        assert_eq!(
            (url.host.as_str(), url.port, url.db, url.password.as_deref()),
            ("seed", 7000, 3, Some("sekrit"))
        );
        let url = parse(&["--redis", " redis://:pw@[::1]:6380/1 "], &[]).expect("valid");
        let url = url.redis.expect("set");
        assert_eq!((url.host.as_str(), url.port, url.db), ("::1", 6380, 1));
    }

    #[test]
    fn a_bad_redis_value_names_its_variable_and_hides_the_password() {
        let (knob, origin, message) = invalid(parse(&["--redis", "redis://u:sekrit@h:x"], &[]));
        assert_eq!((knob, origin), ("redis", Origin::Flag("redis")));
        assert!(!message.contains("sekrit"), "{message}");
        assert!(message.contains("bad port"), "{message}");

        let (knob, origin, message) = invalid(parse(&[], &[("REDIS_URL", "http://sekrit@h")]));
        assert_eq!((knob, origin), ("redis", Origin::Env("REDIS_URL")));
        assert!(!message.contains("sekrit"), "{message}");

        let (_, _, message) = invalid(parse(&[], &[("REDIS_URL", "rediss://:sekrit@h")]));
        assert!(
            message.starts_with(
                "invalid value for redis (env REDIS_URL): not a Redis URL: \
                 rediss:// (TLS) is not supported yet"
            ),
            "{message}"
        );
        assert!(!message.contains("sekrit"), "{message}");

        let file = TempToml::new("bad-redis", "redis = 6379\n");
        let (knob, origin, _) = invalid(parse(&["--config", file.arg()], &[]));
        assert_eq!((knob, origin), ("redis", Origin::File(file.0.clone())));

        for (var, value) in [("REDIS_PORT", "port"), ("REDIS_DB", "one")] {
            let env = [
                ("REDIS_HOST", "seed"),
                ("REDIS_PASS", "sekrit"),
                (var, value),
            ];
            let (knob, origin, message) = invalid(parse(&[], &env));
            assert_eq!((knob, origin), ("redis", Origin::Env(var)), "{message}");
            assert!(!message.contains("sekrit"), "{message}");
        }
    }

    #[test]
    fn the_redis_password_is_never_shown() {
        let config = parse(&["--redis", "redis://app:sekrit@h:6380/2"], &[]).expect("valid");
        assert_eq!(
            config.redis.as_ref().and_then(|u| u.password.as_deref()),
            Some("sekrit")
        );
        let text = config.to_toml();
        for shown in [format!("{config:?}"), text.clone()] {
            assert!(!shown.contains("sekrit"), "{shown}");
            assert!(shown.contains("redis://app:***@h:6380/2"), "{shown}");
        }
        assert!(text.contains("# the redis password is redacted"), "{text}");

        let plain = parse(&["--redis", "redis://h"], &[])
            .expect("valid")
            .to_toml();
        assert!(plain.contains("redis = \"redis://h:6379/0\"\n"), "{plain}");
        assert!(!plain.contains("redacted"), "{plain}");
        let none = Config::default().to_toml();
        assert!(none.contains("# redis is not set\n"), "{none}");
    }

    #[test]
    fn redis_resp_and_durations_accept_their_bounds() {
        let config = parse(
            &[
                "--redis-resp",
                "2",
                "--redis-backoff-max",
                "100ms",
                "--redis-connect-timeout",
                "60s",
            ],
            &[],
        )
        .expect("valid");
        assert_eq!(config.redis_resp, 2);
        assert_eq!(config.redis_backoff_max, Duration::from_millis(100));
        assert_eq!(config.redis_connect_timeout, Duration::from_secs(60));
        let file = TempToml::new(
            "redis-bounds",
            "redis_resp = 3\nredis_backoff_max = \"5m\"\nredis_connect_timeout = \"100ms\"\n",
        );
        let config = parse(&["--config", file.arg()], &[]).expect("valid");
        assert_eq!(config.redis_resp, 3);
        assert_eq!(config.redis_backoff_max, Duration::from_secs(300));
        assert_eq!(config.redis_connect_timeout, Duration::from_millis(100));
        let config = Config::default();
        assert_eq!(
            (
                config.redis_resp,
                config.redis_backoff_max,
                config.redis_connect_timeout
            ),
            (3, DEFAULT_REDIS_BACKOFF_MAX, Duration::from_secs(2))
        );
    }

    #[test]
    fn debug_stall_shard_is_a_hidden_hook_below_shards() {
        let config = parse(&["--shards", "2", "--debug-stall-shard", "1"], &[]).expect("valid");
        assert_eq!(config.debug_stall_shard, Some(1));
        let env = [
            ("RINGCAST_SHARDS", "4"),
            ("RINGCAST_DEBUG_STALL_SHARD", "3"),
        ];
        assert_eq!(parse(&[], &env).expect("valid").debug_stall_shard, Some(3));
        assert_eq!(parse(&[], &[]).expect("valid").debug_stall_shard, None);

        let (knob, origin, message) =
            invalid(parse(&["--shards", "2", "--debug-stall-shard", "2"], &[]));
        assert_eq!(
            (knob, origin),
            ("debug-stall-shard", Origin::Flag("debug-stall-shard"))
        );
        assert!(
            message.contains("2 must be below shards (2, from flag --shards)"),
            "{message}"
        );

        let file = TempToml::new("stall", "debug_stall_shard = 0\n");
        let err = parse(&["--config", file.arg()], &[]).expect_err("not a file key");
        assert!(matches!(err, ConfigError::File { .. }), "{err}");
        let config = Config {
            debug_stall_shard: Some(0),
            ..Config::default()
        };
        assert!(!config.to_toml().contains("debug_stall_shard"));
    }

    #[test]
    fn clap_outcomes_come_back_as_clap_errors() {
        for (args, kind) in [
            (&["--help"][..], clap::error::ErrorKind::DisplayHelp),
            (&["--version"][..], clap::error::ErrorKind::DisplayVersion),
            (
                &["--no-such-flag"][..],
                clap::error::ErrorKind::UnknownArgument,
            ),
        ] {
            match parse(args, &[]) {
                Err(ConfigError::Clap(e)) => assert_eq!(e.kind(), kind),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }
}
