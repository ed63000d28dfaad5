//! Settings of one `run`: the scenario file, the flags that override it, and the resolved
//! [`Config`] the rest of the crate uses.
//!
//! A scenario file (`loadtest/scenarios/*.toml`) uses the same keys as the long flags, in
//! snake_case (`payload_bytes = 200`), plus an optional `description`. A flag beats the file,
//! which beats the default. Unknown keys in the file are an error, so a typo cannot silently
//! run the wrong test.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::url::Url;

/// How a client subscribes to its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscribeMode {
    /// `GET /ws?subscribe=chK`.
    Url,
    /// `{"op":"subscribe","channel":"chK","id":1}` after the handshake.
    Command,
}

impl SubscribeMode {
    pub fn name(self) -> &'static str {
        match self {
            SubscribeMode::Url => "url",
            SubscribeMode::Command => "command",
        }
    }
}

/// How events are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// `PUBLISH` straight to Redis (the gateway must run with `--redis`).
    Redis,
    /// `POST /api/publish` to the gateway.
    Http,
}

impl PublishMode {
    pub fn name(self) -> &'static str {
        match self {
            PublishMode::Redis => "redis",
            PublishMode::Http => "http",
        }
    }
}

/// Every knob of `run`, as flags and as scenario-file keys. `None` means "not given here".
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Scenario file (TOML, same keys as the long flags in snake_case); flags override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub scenario: Option<PathBuf>,
    /// Free text describing the scenario (file only).
    #[arg(skip)]
    pub description: Option<String>,
    /// Gateway WebSocket URL; `/ws` is appended when the URL has no path. [default: ws://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Number of WebSocket clients. [default: 100]
    #[arg(long, value_name = "N")]
    pub clients: Option<usize>,
    /// Channels `ch0..chN-1`; client i subscribes to `ch(i mod N)`. [default: 1]
    #[arg(long, value_name = "N")]
    pub channels: Option<usize>,
    /// Subscribe in the URL or with a command after connecting. [default: url]
    #[arg(long, value_enum)]
    pub subscribe: Option<SubscribeMode>,
    /// Publish through Redis (`--redis`) or `POST /api/publish` (`--http`). [default: http]
    #[arg(long, value_enum)]
    pub publish: Option<PublishMode>,
    /// Redis to `PUBLISH` to, `redis://[[user]:pass@]host[:port][/db]`.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Gateway HTTP base URL for `POST /api/publish`. [default: the target's host and port]
    #[arg(long, value_name = "URL")]
    pub http: Option<String>,
    /// Total published messages per second over all channels; 0 = as fast as possible. [default: 1000]
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<u64>,
    /// Measured window in seconds (with --idle: how long connections are held). [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Publishing before the measured window starts, in seconds (not with --idle). [default: 1]
    #[arg(long, value_name = "SECONDS")]
    pub warmup: Option<f64>,
    /// Size of each published payload (a JSON object, padded). [default: 200]
    #[arg(long, value_name = "N")]
    pub payload_bytes: Option<usize>,
    /// Fraction of clients that subscribe and then never read. [default: 0]
    #[arg(long, value_name = "F")]
    pub slow_fraction: Option<f64>,
    /// Exactly N clients subscribe and then never read (beats --slow-fraction).
    #[arg(long, value_name = "N")]
    pub slow_clients: Option<usize>,
    /// Receive buffer (`SO_RCVBUF`) of the slow clients' sockets, in bytes. [default: the kernel's]
    #[arg(long, value_name = "BYTES")]
    pub slow_rcvbuf: Option<usize>,
    /// Reading clients that disconnect and reconnect (resubscribing) per minute, in % of
    /// --clients, while publishing. [default: 0]
    #[arg(long, value_name = "PCT")]
    pub churn_pct_per_min: Option<f64>,
    /// Record the gateway's RSS and open descriptors every S seconds (needs --server-pid);
    /// 0 = off. [default: 0]
    #[arg(long, value_name = "S")]
    pub sample_every: Option<f64>,
    /// Also write those samples as CSV to FILE.
    #[arg(long, value_name = "FILE")]
    pub samples_csv: Option<PathBuf>,
    /// Connect and subscribe only, no publishing (RSS per idle connection).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub idle: Option<bool>,
    /// With --idle: after every client subscribed, publish one event to every channel (through
    /// --publish) and wait until every reading client has received one before holding idle, so
    /// the RSS is that of connections that have been used.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub touch: Option<bool>,
    /// Gateway process id, for its CPU time and RSS from /proc.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print one JSON line instead of the human summary.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub json: Option<bool>,
    /// Tokio worker threads for clients and publishers. [default: 1]
    #[arg(long, value_name = "N")]
    pub client_threads: Option<usize>,
    /// Pin the load test (all its threads) to these CPUs, e.g. `4` or `4,5` or `4-7`.
    #[arg(long, value_name = "CPUS")]
    pub pin_cores: Option<String>,
    /// Connections being set up at the same time (TCP + handshake + subscribe ack). [default: 512]
    #[arg(long, value_name = "N")]
    pub connect_concurrency: Option<usize>,
    /// Publisher connections; each owns the channels `c` with `c mod N == i`. [default: 1]
    #[arg(long, value_name = "N")]
    pub publishers: Option<usize>,
    /// Unanswered publishes allowed per publisher connection (pipelining depth). [default: 256]
    #[arg(long, value_name = "N")]
    pub pipeline: Option<usize>,
    /// Run the floor during the scenario, halfway between publishes: `SENDER,READER` cores
    /// (the gateway's and the load test's), one send to each of clients/channels loopback
    /// connections a round. Paced scenarios only.
    #[arg(long, value_name = "SENDER,READER")]
    pub floor_cores: Option<String>,
}

impl Settings {
    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Settings::from_toml(&text).with_context(|| format!("in scenario {}", path.display()))
    }

    /// Parses scenario TOML.
    pub fn from_toml(text: &str) -> anyhow::Result<Settings> {
        Ok(toml::from_str(text)?)
    }

    /// `self` (the flags) over `file`: each knob set here wins.
    pub fn over(self, file: Settings) -> Settings {
        Settings {
            scenario: self.scenario.or(file.scenario),
            description: self.description.or(file.description),
            target: self.target.or(file.target),
            clients: self.clients.or(file.clients),
            channels: self.channels.or(file.channels),
            subscribe: self.subscribe.or(file.subscribe),
            publish: self.publish.or(file.publish),
            redis: self.redis.or(file.redis),
            http: self.http.or(file.http),
            rate: self.rate.or(file.rate),
            duration: self.duration.or(file.duration),
            warmup: self.warmup.or(file.warmup),
            payload_bytes: self.payload_bytes.or(file.payload_bytes),
            slow_fraction: self.slow_fraction.or(file.slow_fraction),
            slow_clients: self.slow_clients.or(file.slow_clients),
            slow_rcvbuf: self.slow_rcvbuf.or(file.slow_rcvbuf),
            churn_pct_per_min: self.churn_pct_per_min.or(file.churn_pct_per_min),
            sample_every: self.sample_every.or(file.sample_every),
            samples_csv: self.samples_csv.or(file.samples_csv),
            idle: self.idle.or(file.idle),
            touch: self.touch.or(file.touch),
            server_pid: self.server_pid.or(file.server_pid),
            json: self.json.or(file.json),
            client_threads: self.client_threads.or(file.client_threads),
            pin_cores: self.pin_cores.or(file.pin_cores),
            connect_concurrency: self.connect_concurrency.or(file.connect_concurrency),
            publishers: self.publishers.or(file.publishers),
            pipeline: self.pipeline.or(file.pipeline),
            floor_cores: self.floor_cores.or(file.floor_cores),
        }
    }
}

/// A resolved host endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL as given.
    pub url: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// `host:port`, for `Host` headers.
    pub host: String,
    /// The path part (always starts with `/`).
    pub path: String,
    /// User and password from the URL, if any.
    pub user: Option<String>,
    pub password: Option<String>,
}

impl Endpoint {
    fn parse(url: &str, scheme: &str, default_port: u16) -> anyhow::Result<Endpoint> {
        let u = Url::parse(url)?;
        if u.scheme != scheme {
            bail!("{url}: expected a {scheme}:// URL");
        }
        let port = u.port.unwrap_or(default_port);
        let host = format!("{}:{port}", u.host);
        let addr = (u.host.as_str(), port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .find(SocketAddr::is_ipv4)
            .with_context(|| format!("{host} has no IPv4 address"))?;
        Ok(Endpoint {
            url: url.to_string(),
            addr,
            host,
            path: u.path,
            user: u.user,
            password: u.password,
        })
    }
}

/// The resolved configuration of one `run`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Scenario name (the file stem), if a file was used.
    pub scenario: Option<String>,
    pub description: Option<String>,
    /// WebSocket endpoint; `path` is the WebSocket path without a query.
    pub target: Endpoint,
    pub clients: usize,
    pub channels: usize,
    pub subscribe: SubscribeMode,
    pub publish: PublishMode,
    /// Where publishes go: the Redis server, or the gateway's HTTP port with the publish path.
    pub publish_to: Option<Endpoint>,
    pub rate: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub payload_bytes: usize,
    pub slow_fraction: f64,
    /// `--slow-clients`: an exact count that beats `slow_fraction`.
    pub slow_count: Option<usize>,
    pub slow_rcvbuf: Option<usize>,
    pub churn_pct_per_min: f64,
    /// Seconds between gateway samples; 0 = no sampling.
    pub sample_every_s: f64,
    pub samples_csv: Option<PathBuf>,
    pub idle: bool,
    /// `--touch`: one event per channel before the idle hold.
    pub touch: bool,
    pub server_pid: Option<u32>,
    pub json: bool,
    pub client_threads: usize,
    pub pin_cores: Option<Vec<usize>>,
    pub connect_concurrency: usize,
    pub publishers: usize,
    pub pipeline: usize,
    /// `--floor-cores`: (sender core, reader core) of the interleaved floor.
    pub floor_cores: Option<(usize, usize)>,
}

impl Config {
    /// Resolves flags over the scenario file (if any) over the defaults.
    pub fn resolve(flags: Settings) -> anyhow::Result<Config> {
        let scenario_path = flags.scenario.clone();
        let s = match &scenario_path {
            Some(path) => flags.over(Settings::from_file(path)?),
            None => flags,
        };
        let scenario = scenario_path.as_deref().and_then(|p| {
            p.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        });

        let target_url = s.target.as_deref().unwrap_or("ws://127.0.0.1:8080");
        let mut target = Endpoint::parse(target_url, "ws", 80)?;
        if target.path == "/" {
            target.path = "/ws".to_string();
        }
        let idle = s.idle.unwrap_or(false);
        let touch = s.touch.unwrap_or(false);
        let publish = s.publish.unwrap_or(PublishMode::Http);
        let publish_to = if idle && !touch {
            None
        } else {
            Some(match publish {
                PublishMode::Redis => {
                    let url = s
                        .redis
                        .as_deref()
                        .context("--publish redis needs --redis redis://HOST:PORT")?;
                    Endpoint::parse(url, "redis", 6379)?
                }
                PublishMode::Http => {
                    let url = match &s.http {
                        Some(url) => url.clone(),
                        None => format!("http://{}", target.host),
                    };
                    let mut ep = Endpoint::parse(&url, "http", 80)?;
                    if !ep.path.ends_with("/api/publish") {
                        ep.path = format!("{}/api/publish", ep.path.trim_end_matches('/'));
                    }
                    ep
                }
            })
        };

        let config = Config {
            scenario,
            description: s.description,
            target,
            clients: s.clients.unwrap_or(100),
            channels: s.channels.unwrap_or(1),
            subscribe: s.subscribe.unwrap_or(SubscribeMode::Url),
            publish,
            publish_to,
            rate: s.rate.unwrap_or(1000),
            duration_s: s.duration.unwrap_or(10.0),
            warmup_s: if idle { 0.0 } else { s.warmup.unwrap_or(1.0) },
            payload_bytes: s.payload_bytes.unwrap_or(200),
            slow_fraction: s.slow_fraction.unwrap_or(0.0),
            slow_count: s.slow_clients,
            slow_rcvbuf: s.slow_rcvbuf,
            churn_pct_per_min: s.churn_pct_per_min.unwrap_or(0.0),
            sample_every_s: s.sample_every.unwrap_or(0.0),
            samples_csv: s.samples_csv,
            idle,
            touch,
            server_pid: s.server_pid,
            json: s.json.unwrap_or(false),
            client_threads: s.client_threads.unwrap_or(1),
            pin_cores: s.pin_cores.as_deref().map(parse_cpu_list).transpose()?,
            connect_concurrency: s.connect_concurrency.unwrap_or(512),
            publishers: s.publishers.unwrap_or(1),
            pipeline: s.pipeline.unwrap_or(256),
            floor_cores: s.floor_cores.as_deref().map(parse_core_pair).transpose()?,
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.floor_cores.is_some() && (self.idle || self.rate == 0) {
            bail!("--floor-cores needs a paced publishing scenario (rate > 0, not idle)");
        }
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.channels == 0 {
            bail!("--channels must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.slow_fraction) {
            bail!("--slow-fraction must be between 0 and 1");
        }
        if self.slow_count.is_some_and(|n| n > self.clients) {
            bail!("--slow-clients must be at most --clients");
        }
        if !(self.churn_pct_per_min.is_finite() && (0.0..=100.0).contains(&self.churn_pct_per_min))
        {
            bail!("--churn-pct-per-min must be between 0 and 100");
        }
        if self.touch && !self.idle {
            bail!("--touch goes with --idle (a publishing run uses every connection anyway)");
        }
        if self.churn_pct_per_min > 0.0 && self.idle {
            bail!("--churn-pct-per-min needs a publishing run (not --idle)");
        }
        if !(self.sample_every_s.is_finite() && self.sample_every_s >= 0.0) {
            bail!("--sample-every must be a number of seconds, at least 0");
        }
        if self.samples_csv.is_some() && self.sample_every_s <= 0.0 {
            bail!("--samples-csv needs --sample-every");
        }
        if !(self.duration_s.is_finite() && self.duration_s >= 0.0) {
            bail!("--duration must be a number of seconds, at least 0");
        }
        if !(self.warmup_s.is_finite() && self.warmup_s >= 0.0) {
            bail!("--warmup must be a number of seconds, at least 0");
        }
        if self.client_threads == 0 || self.connect_concurrency == 0 {
            bail!("--client-threads and --connect-concurrency must be at least 1");
        }
        if self.publishers == 0 || self.pipeline == 0 {
            bail!("--publishers and --pipeline must be at least 1");
        }
        Ok(())
    }

    /// The WebSocket URL as a string, without a query.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.target.host, self.target.path)
    }

    /// Number of clients that never read.
    pub fn slow_clients(&self) -> usize {
        self.slow_count
            .unwrap_or_else(|| ((self.clients as f64) * self.slow_fraction).round() as usize)
    }
}

/// Parses a CPU list: `4`, `4,6`, `4-7`, `0,4-7`.
pub fn parse_cpu_list(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim) {
        let bad = || format!("--pin-cores {list:?}: expected CPUs like 4 or 4,5 or 4-7");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().with_context(bad)?,
                    b.trim().parse().with_context(bad)?,
                );
                if a > b {
                    bail!(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().with_context(bad)?),
        }
    }
    Ok(cpus)
}

/// Parses `--floor-cores SENDER,READER`.
fn parse_core_pair(text: &str) -> anyhow::Result<(usize, usize)> {
    let bad = || format!("--floor-cores {text:?}: expected two CPUs like 0,1");
    let (a, b) = text.split_once(',').with_context(bad)?;
    Ok((
        a.trim().parse().with_context(bad)?,
        b.trim().parse().with_context(bad)?,
    ))
}

/// Whether client `i` of `clients` is one of the `slow` slow ones: exactly `slow` of them,
/// spread evenly (and so over every channel when there are enough).
pub fn is_slow(i: usize, clients: usize, slow: usize) -> bool {
    (i + 1) * slow / clients > i * slow / clients
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_cores_are_two_cpus() {
        assert_eq!(parse_core_pair("0,1").unwrap(), (0, 1));
        assert_eq!(parse_core_pair(" 3 , 2 ").unwrap(), (3, 2));
        assert!(parse_core_pair("0").is_err());
        assert!(parse_core_pair("0,x").is_err());
    }

    #[test]
    fn flags_beat_file_beat_defaults() {
        let file = Settings::from_toml(
            "description = \"x\"\nclients = 1000\nrate = 20\nduration = 20\nidle = false\n\
             subscribe = \"command\"\npayload_bytes = 300\n",
        )
        .unwrap();
        let flags = Settings {
            rate: Some(5),
            target: Some("ws://127.0.0.1:9000".into()),
            ..Settings::default()
        };
        let merged = flags.over(file);
        assert_eq!(merged.rate, Some(5));
        assert_eq!(merged.clients, Some(1000));
        assert_eq!(merged.duration, Some(20.0));
        let c = Config::resolve(merged).unwrap();
        assert_eq!(c.target.path, "/ws");
        assert_eq!(c.target.host, "127.0.0.1:9000");
        assert_eq!(c.subscribe, SubscribeMode::Command);
        assert_eq!(c.payload_bytes, 300);
        let http = c.publish_to.unwrap();
        assert_eq!(http.host, "127.0.0.1:9000");
        assert_eq!(http.path, "/api/publish");
    }

    #[test]
    fn touch_goes_with_idle_and_resolves_a_publisher() {
        let s = Settings {
            touch: Some(true),
            ..Settings::default()
        };
        assert!(Config::resolve(s).is_err());
        let s = Settings {
            idle: Some(true),
            ..Settings::default()
        };
        assert!(Config::resolve(s).unwrap().publish_to.is_none());
        let s = Settings {
            idle: Some(true),
            touch: Some(true),
            ..Settings::default()
        };
        let c = Config::resolve(s).unwrap();
        assert!(c.touch);
        assert_eq!(c.publish_to.unwrap().path, "/api/publish");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("4").unwrap(), vec![4]);
        assert_eq!(parse_cpu_list("0, 4-6").unwrap(), vec![0, 4, 5, 6]);
        assert!(parse_cpu_list("6-4").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Settings::from_toml("clientz = 3\n").is_err());
    }

    #[test]
    fn redis_needs_url() {
        let s = Settings {
            publish: Some(PublishMode::Redis),
            ..Settings::default()
        };
        assert!(Config::resolve(s).is_err());
        let s = Settings {
            publish: Some(PublishMode::Redis),
            redis: Some("redis://:secret@127.0.0.1:6390/2".into()),
            ..Settings::default()
        };
        let c = Config::resolve(s).unwrap();
        let r = c.publish_to.unwrap();
        assert_eq!(r.addr.port(), 6390);
        assert_eq!(r.password.as_deref(), Some("secret"));
    }

    #[test]
    fn slow_selection_is_exact_and_spread() {
        for (clients, slow) in [(1000, 50), (7, 3), (10, 0), (10, 10), (3, 1)] {
            let picked: Vec<usize> = (0..clients)
                .filter(|&i| is_slow(i, clients, slow))
                .collect();
            assert_eq!(picked.len(), slow, "{clients} {slow}");
        }
        // 5 % of 1000 on 1 channel: every 20th client.
        assert!(is_slow(19, 1000, 50) && !is_slow(18, 1000, 50));
    }

    #[test]
    fn every_scenario_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = Settings::from_file(&path).unwrap();
                let flags = Settings {
                    scenario: Some(path.clone()),
                    redis: Some("redis://127.0.0.1:6379".into()),
                    ..Settings::default()
                };
                Config::resolve(flags).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                assert!(
                    s.description.is_some(),
                    "{} has no description",
                    path.display()
                );
                n += 1;
            }
        }
        assert!(n >= 7, "only {n} scenarios");
    }
}
