//! Counters and their Prometheus rendering.
//!
//! Every counter has exactly one writing thread: a shard writes its own [`ShardStats`], the hub
//! thread writes [`HubStats`], each registry thread its [`RegistryStats`]. A single writer needs no atomic read-modify-write, so
//! [`Counter::add`] is a relaxed load plus a relaxed store (two plain `mov`s on x86), and any
//! thread may read a snapshot at any time. This keeps the hot path free of locked instructions
//! while `/metrics`, served by whichever shard got the request, still sees every shard.
//!
//! The one exception is [`SharedCounter`], for rare refusals that any of several threads may
//! count (a full echo-store queue seen by a radar feed or a shard): a locked add, off the hot
//! path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A single-writer counter or gauge. Only the owning thread may call the mutators.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Single writer only: concurrent writers would lose updates.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts `n` (gauges). Single writer only.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// Subtracts one (gauges).
    #[inline]
    pub fn dec(&self) {
        self.sub(1);
    }

    /// Sets a gauge. Single writer only.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// The current value; any thread.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A counter several threads may add to: one locked add (`fetch_add`) per event. Only for rare
/// events off the hot path (a refused request, a dropped write), where finding the one writing
/// thread would cost more than the lock.
#[derive(Debug, Default)]
pub struct SharedCounter(AtomicU64);

impl SharedCounter {
    /// Adds one; any thread.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// The current value; any thread.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One event in this many gets stage timestamps (`ringcast_stage_*_seconds`). Sampling keeps the
/// cost off the hot path: unsampled events carry an empty `Option<Instant>` and pay one branch
/// per stage (see docs/BENCHMARKS.md for the measured overhead).
pub const STAGE_SAMPLE_EVERY: u64 = 64;

/// Upper bounds of the latency histogram buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000,
];

/// A single-writer latency histogram with fixed buckets ([`LATENCY_BUCKETS_US`]).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; 16],
    /// Observations above the last bound.
    overflow: Counter,
    sum_us: Counter,
}

impl Histogram {
    /// Records one observation. Single writer only.
    pub fn observe(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        match LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            Some(i) => self.buckets[i].inc(),
            None => self.overflow.inc(),
        }
        self.sum_us.add(us);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(Counter::get).sum::<u64>() + self.overflow.get()
    }
}

/// Per-message stage timings, sampled (`--stage-sample`), from the moment the event was read
/// from the source.
#[derive(Debug, Default)]
pub struct StageTimes {
    /// Read → the shard started delivering it (hub and inbox queueing included).
    pub dispatch: Histogram,
    /// Read → the `writev` carrying it to the probed subscriber was submitted.
    pub write_submit: Histogram,
    /// Read → that `writev` completed.
    pub write_complete: Histogram,
}

/// What one shard counts. Written only by that shard's thread.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Open connections (HTTP and WebSocket) on this shard. Gauge.
    pub connections: Counter,
    /// Open WebSocket connections on this shard. Gauge.
    pub websockets: Counter,
    /// Connection-topic subscription pairs. Gauge.
    pub subscriptions: Counter,
    /// Distinct channels and patterns with a subscriber on this shard. Gauge.
    pub topics: Counter,
    /// Client messages received (text and binary).
    pub messages_in: Counter,
    /// Bytes read from client sockets.
    pub bytes_in: Counter,
    /// Frames queued to clients.
    pub messages_out: Counter,
    /// Bytes written to client sockets.
    pub bytes_out: Counter,
    /// Write submissions (one `writev` per connection per flush).
    pub writes: Counter,
    /// Of `writes`, those the shard made itself at the end of an inbox turn (`Shard::flush_turn`).
    pub direct_writes: Counter,
    /// Direct flushes that left frames for the connection's write loop (socket buffer full, or
    /// an error for the loop to meet).
    pub direct_writes_handed_over: Counter,
    /// WebSockets that gave up their task while quiet (`conn::dormant`). Gauge.
    pub dormant: Counter,
    /// Dormant WebSockets given a task again.
    pub resumes: Counter,
    /// Connections closed because their outbox passed `max-outbox-bytes`.
    pub slow_consumer_closes: Counter,
    /// Connections cut off in the HTTP phase after `idle-timeout` of silence.
    pub idle_closes: Counter,
    /// Pings sent (protocol pings, or `{"type":"ping"}` on JSON-heartbeat routes).
    pub pings: Counter,
    /// WebSockets closed (4001) because a ping went unanswered for the pong timeout.
    pub pong_timeout_closes: Counter,
    /// Connections closed for a protocol error, bad UTF-8 or an oversized message.
    pub protocol_closes: Counter,
    /// Connections refused because the shard was at its connection cap.
    pub rejected_connections: Counter,
    /// Connections whose handling panicked: dropped alone, the shard goes on.
    pub connection_panics: Counter,
    /// Connections accepted at the descriptor limit only to be answered 503 and closed.
    pub fd_limit_refusals: Counter,
    /// Requests answered with an HTTP error (bad handshake, 404, ...).
    pub http_errors: Counter,
    /// Interest updates waiting because the hub channel was full. Gauge.
    pub hub_backlog: Counter,
    /// Event-stream API requests answered 503 because a registry queue was full.
    pub registry_busy: Counter,
    /// Sampled stage timings of events this shard delivered.
    pub stages: StageTimes,
    /// Engine.IO / Socket.IO sessions owned by this shard.
    pub eio: EioStats,
    /// Refusals at the edge, by reason (`ringcast_refused_total`).
    pub refused: crate::limits::RefusedStats,
    /// Access control: refused tokens, denied names, expiries, refreshes.
    pub auth: AuthStats,
}

/// What one shard counts about access control ([`crate::auth`]).
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Tokens refused (HTTP 401 at an upgrade or a publish, `forbidden` on `refresh`), per
    /// [`crate::auth::Refusal`] (indexed by [`crate::auth::Refusal::index`]).
    pub refused: [Counter; 8],
    /// Subscriptions, watches, snapshots, upgrades and publishes refused because the grants do
    /// not cover the name (`forbidden` error reply, or HTTP 403).
    pub forbidden: Counter,
    /// Connections closed (4003) when their token expired.
    pub expired_closes: Counter,
    /// Tokens replaced by a `refresh`.
    pub refreshes: Counter,
    /// `refresh` requests refused (bad token, another subject, or a listener without tokens).
    pub refreshes_refused: Counter,
    /// Subscriptions and watches dropped because a refreshed token no longer allows them.
    pub revoked: Counter,
}

/// What one shard counts about its Engine.IO sessions (`socketio` routes).
#[derive(Debug, Default)]
pub struct EioStats {
    /// Open sessions. Gauge.
    pub sessions: Counter,
    /// Sessions opened (handshakes answered).
    pub opened: Counter,
    /// Polling GETs parked waiting for packets. Gauge.
    pub parked_gets: Counter,
    /// Handshakes refused because the shard held `max-connections / shards` sessions (503).
    pub sessions_refused: Counter,
    /// Requests for another shard's session handed to it (socket and bytes read so far).
    pub handoffs: Counter,
    /// Hand-offs refused because the owner's inbox was full (answered 503).
    pub handoff_drops: Counter,
    /// Requests refused for their Origin (400 `"Not an accepted origin."`).
    pub origin_refused: Counter,
    /// Requests answered with an Engine.IO error body (unknown sid, bad request, ...).
    pub bad_requests: Counter,
    /// Upgrades from polling to WebSocket completed.
    pub upgrades: Counter,
    /// Sessions closed by the client (`1`, or its transport went away).
    pub closes_client: Counter,
    /// Sessions closed because a ping went unanswered for pingTimeout.
    pub closes_ping_timeout: Counter,
    /// Polling sessions closed after ping interval + timeout without a GET.
    pub closes_poll_timeout: Counter,
    /// Sessions closed because their queue passed `max_payload` (policy: close).
    pub closes_overflow: Counter,
    /// Sessions closed for a bad packet or a second concurrent GET.
    pub closes_bad_request: Counter,
    /// Sessions closed by the server (shutdown).
    pub closes_server: Counter,
}

/// What the hub thread counts. Written only by the hub thread.
#[derive(Debug)]
pub struct HubStats {
    /// Messages received from sources (after the source's own filtering).
    pub events: Counter,
    /// Publishes accepted by the embedded broker or forwarded to a source.
    pub publishes: Counter,
    /// Frames encoded (once per event per format, never per subscriber).
    pub frames_encoded: Counter,
    /// BESS battery re-reads skipped because the command queue was full.
    pub bess_reads_skipped: Counter,
    /// Key-watch frames not sent because they were byte-identical to the frame the key's
    /// watchers were last sent in that format (one per watched key and format).
    pub key_frames_suppressed: Counter,
    /// Channels and patterns with at least one subscriber anywhere. Gauge.
    pub topics: Counter,
    /// Sampled: read from the source → the hub started routing it.
    pub stage_hub: Histogram,
    /// Events dropped because a shard's inbox was full, per shard.
    pub inbox_drops: Vec<Counter>,
}

/// What the Redis source's threads count. Each counter names its one writing thread.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// 1 while the subscriber connection is up (subscriber thread). Gauge.
    pub up: Counter,
    /// Successful reconnects after a lost connection (subscriber thread).
    pub reconnects: Counter,
    /// Pushes received from Redis (subscriber thread).
    pub events: Counter,
    /// Pushes dropped because the hub channel was full (subscriber thread).
    pub events_dropped: Counter,
    /// Key reads performed for watches and snapshots (command thread).
    pub key_reads: Counter,
    /// Key reads skipped because the command queue was full (hub thread).
    pub key_reads_skipped: Counter,
    /// Publishes that failed or were dropped while Redis was down (command thread).
    pub publish_errors: Counter,
    /// Redis Cluster: topology refreshes that succeeded (cluster manager thread).
    pub cluster_refreshes: Counter,
    /// Redis Cluster: `-MOVED` and `-ASK` redirections followed (command thread).
    pub cluster_redirects: Counter,
    /// Redis Cluster: sharded subscriptions moved to another primary after a slot migration.
    pub cluster_rehomed: Counter,
    /// Redis Cluster: primaries whose subscriber connection is up. Gauge.
    pub cluster_nodes: Counter,
}

/// What one radar feed counts ([`crate::source::radar::feed`], or the ZMQ feed
/// [`crate::source::radar::zmq`] under the site label `canada`). Written only by that feed's
/// thread (`radar-<site>`, `radar-zmq`).
#[derive(Debug, Default)]
pub struct RadarStats {
    /// 1 while the feed's TCP connection (ZMQ: its publisher connection) is up. Gauge.
    pub up: Counter,
    /// Reconnects after a lost connection or a failed connect.
    pub reconnects: Counter,
    /// Records decoded, rendered and handed to the hub.
    pub records: Counter,
    /// Connex framing errors (bad magic, length above the bound) and peers that closed in the
    /// middle of a frame (the partial frame is discarded); ZMQ: messages that are not exactly
    /// `[site, zlib(record)]` (another number of parts, or a site name that is empty, not UTF-8
    /// or not a plain name).
    pub frame_errors: Counter,
    /// ZMQ messages whose record is not zlib data or inflates above the record cap (TCP feeds:
    /// always 0).
    pub zlib_errors: Counter,
    /// ZMQ records dropped because their site would pass the cap of distinct sites (TCP
    /// feeds: always 0).
    pub sites_dropped: Counter,
    /// Frames whose payload is not a DMAP record.
    pub dmap_errors: Counter,
    /// DMAP records skipped because a field the event needs is missing ([`MissingField`]).
    ///
    /// [`MissingField`]: crate::profile::superdarn::MissingField
    pub skipped_records: Counter,
    /// Events dropped because the hub channel was full.
    pub events_dropped: Counter,
}

/// What one event-stream registry thread counts ([`crate::store::registry`]). Written only by
/// that registry's thread.
#[derive(Debug, Default)]
pub struct RegistryStats {
    /// Requests handled (create, list, delete, lookup).
    pub requests: Counter,
    /// Requests that failed in SQLite (each also logged) and were answered 500.
    pub errors: Counter,
}

/// What the SuperDARN echo store counts ([`crate::store::echoes`]). The plain counters are
/// written only by its thread, `ringcast-echoes`; the two refusals by whoever was refused.
#[derive(Debug, Default)]
pub struct EchoesStats {
    /// Echo counts inserted (committed).
    pub rows_written: Counter,
    /// Rows deleted by retention (`max-days-store-echoes`).
    pub deleted: Counter,
    /// `/echoes` queries answered by the store thread (with rows, none, or too many).
    pub queries: Counter,
    /// SQLite failures (each logged): an insert, a query (answered 500) or a retention pass.
    pub errors: Counter,
    /// Echo counts not stored because the store's queue was full or the store had stopped.
    /// Written by the radar feed threads.
    pub dropped: SharedCounter,
    /// `/echoes` requests answered 503 because the store's queue was full. Written by shards.
    pub busy: SharedCounter,
}

/// What the RabbitMQ stream replay source counts. Written only by its driver thread.
#[derive(Debug, Default)]
pub struct RabbitStreamStats {
    /// Stream protocol connections up. Gauge.
    pub connections_up: Counter,
    /// Reconnects after a lost connection.
    pub reconnects: Counter,
    /// Live consumers (at most one per stream). Gauge.
    pub consumers: Counter,
    /// Chunks delivered by RabbitMQ.
    pub chunks: Counter,
    /// Messages transformed into frames and queued for a shard.
    pub messages: Counter,
    /// Bytes of those frames.
    pub bytes: Counter,
    /// Messages dropped: empty, not UTF-8, invalid JSON, unreadable or compressed.
    pub dropped: Counter,
    /// Deliveries refused by a full shard inbox and kept for a retry (policy: retry, never
    /// drop).
    pub inbox_full_retries: Counter,
}

/// What the replay lease counts ([`crate::source::replay_lease`]): one live consumer per stream
/// across instances that share a Redis. Each counter names its one writing thread.
#[derive(Debug, Default)]
pub struct ReplayLeaseStats {
    /// The lease's Redis connection is up (0 or 1). Gauge. Written by the lease thread.
    pub up: Counter,
    /// Checks Redis answered (one `GET` per chunk about to be forwarded). Lease thread.
    pub checks: Counter,
    /// Checks that found another consumer's token or no key: that consumer ended and its
    /// chunk was not forwarded. Lease thread.
    pub knockouts: Counter,
    /// `DEL`s of a deleted event stream's key that Redis confirmed. Lease thread.
    pub revokes: Counter,
    /// Redis failures: connects that failed, commands that failed or were refused, commands
    /// lost while Redis was unreachable. Lease thread.
    pub errors: Counter,
    /// Checks answered without Redis (it was unreachable, or the consumer's `SET` never
    /// reached it): the chunk was forwarded (fail open). Lease thread.
    pub unchecked: Counter,
    /// Lease commands refused by the full lease queue (a check is then skipped: fail open).
    /// Written by the replay source's driver thread.
    pub queue_full: Counter,
}

/// All counters of the process.
#[derive(Debug)]
pub struct Metrics {
    /// One entry per shard, indexed by shard id.
    pub shards: Vec<ShardStats>,
    /// The hub's counters.
    pub hub: HubStats,
    /// One entry per Redis source, in source order (empty with the embedded broker).
    pub redis: Vec<RedisStats>,
    /// The Redis sources' names, for the `source` label.
    pub redis_names: Vec<String>,
    /// True when a Redis source is configured (health reports it).
    pub redis_configured: bool,
    /// One entry per radar feed, in site order (empty without `--radars`).
    pub radar: Vec<RadarStats>,
    /// The radar feeds' sites, for the `site` label.
    pub radar_sites: Vec<String>,
    /// One entry per event-stream registry, in start order (empty without `ess_api` routes).
    pub registries: Vec<RegistryStats>,
    /// The registries' database files, for the `file` label.
    pub registry_paths: Vec<String>,
    /// The RabbitMQ stream replay source's counters (zero when it is not configured).
    pub rabbit_stream: RabbitStreamStats,
    /// The replay lease's counters (zero when no Redis source is configured).
    pub replay_lease: ReplayLeaseStats,
    /// The SuperDARN echo store's counters (zero when it is not started).
    pub echoes: EchoesStats,
}

impl Metrics {
    /// Zeroed counters for `shards` shards and the named Redis sources.
    pub fn with_redis(shards: usize, names: Vec<String>) -> Self {
        Metrics {
            redis: names.iter().map(|_| RedisStats::default()).collect(),
            redis_configured: !names.is_empty(),
            redis_names: names,
            ..Metrics::new(shards)
        }
    }

    /// These counters plus one [`RegistryStats`] per registry file in `paths`.
    pub fn with_registries(self, paths: Vec<String>) -> Self {
        Metrics {
            registries: paths.iter().map(|_| RegistryStats::default()).collect(),
            registry_paths: paths,
            ..self
        }
    }

    /// These counters plus one [`RadarStats`] per radar feed site in `sites`.
    pub fn with_radars(self, sites: Vec<String>) -> Self {
        Metrics {
            radar: sites.iter().map(|_| RadarStats::default()).collect(),
            radar_sites: sites,
            ..self
        }
    }

    /// True when a configured Redis source is down: the service is degraded.
    pub fn degraded(&self) -> bool {
        self.redis.iter().any(|r| r.up.get() == 0)
    }

    /// Zeroed counters for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| ShardStats::default()).collect(),
            hub: HubStats {
                events: Counter::default(),
                publishes: Counter::default(),
                frames_encoded: Counter::default(),
                bess_reads_skipped: Counter::default(),
                key_frames_suppressed: Counter::default(),
                topics: Counter::default(),
                stage_hub: Histogram::default(),
                inbox_drops: (0..shards).map(|_| Counter::default()).collect(),
            },
            redis: Vec::new(),
            redis_names: Vec::new(),
            redis_configured: false,
            radar: Vec::new(),
            radar_sites: Vec::new(),
            registries: Vec::new(),
            registry_paths: Vec::new(),
            rabbit_stream: RabbitStreamStats::default(),
            replay_lease: ReplayLeaseStats::default(),
            echoes: EchoesStats::default(),
        }
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        type Field = fn(&ShardStats) -> &Counter;
        let shard_metrics: [(&str, &str, &str, Field); 24] = [
            ("connections", "gauge", "Open TCP connections.", |s| {
                &s.connections
            }),
            ("websockets", "gauge", "Open WebSocket connections.", |s| {
                &s.websockets
            }),
            (
                "subscriptions",
                "gauge",
                "Connection-topic subscription pairs.",
                |s| &s.subscriptions,
            ),
            (
                "topics",
                "gauge",
                "Channels and patterns with a local subscriber.",
                |s| &s.topics,
            ),
            (
                "messages_in_total",
                "counter",
                "Client messages received.",
                |s| &s.messages_in,
            ),
            (
                "bytes_in_total",
                "counter",
                "Bytes read from clients.",
                |s| &s.bytes_in,
            ),
            (
                "messages_out_total",
                "counter",
                "Frames queued to clients.",
                |s| &s.messages_out,
            ),
            (
                "bytes_out_total",
                "counter",
                "Bytes written to clients.",
                |s| &s.bytes_out,
            ),
            (
                "writes_total",
                "counter",
                "writev submissions to clients.",
                |s| &s.writes,
            ),
            (
                "direct_writes_total",
                "counter",
                "Of the writes, those the shard made right after an inbox turn.",
                |s| &s.direct_writes,
            ),
            (
                "direct_writes_handed_over_total",
                "counter",
                "Direct writes that left frames for the connection's write loop (socket full).",
                |s| &s.direct_writes_handed_over,
            ),
            (
                "dormant_connections",
                "gauge",
                "Quiet WebSockets waiting without a task.",
                |s| &s.dormant,
            ),
            (
                "resumes_total",
                "counter",
                "Dormant WebSockets given a task again.",
                |s| &s.resumes,
            ),
            (
                "slow_consumer_closes_total",
                "counter",
                "Connections closed for exceeding max-outbox-bytes.",
                |s| &s.slow_consumer_closes,
            ),
            (
                "idle_closes_total",
                "counter",
                "Connections cut off in the HTTP phase by idle-timeout.",
                |s| &s.idle_closes,
            ),
            (
                "pings_total",
                "counter",
                "Pings sent to WebSocket clients.",
                |s| &s.pings,
            ),
            (
                "pong_timeout_closes_total",
                "counter",
                "WebSockets closed (4001) after a ping went unanswered for the pong timeout.",
                |s| &s.pong_timeout_closes,
            ),
            (
                "protocol_closes_total",
                "counter",
                "Connections closed for bad input.",
                |s| &s.protocol_closes,
            ),
            (
                "rejected_connections_total",
                "counter",
                "Connections refused at max-connections.",
                |s| &s.rejected_connections,
            ),
            (
                "connection_panics_total",
                "counter",
                "Connections dropped because their handling panicked (a bug: the shard goes on).",
                |s| &s.connection_panics,
            ),
            (
                "fd_limit_refusals_total",
                "counter",
                "Connections answered 503 and closed at the file descriptor limit.",
                |s| &s.fd_limit_refusals,
            ),
            (
                "http_errors_total",
                "counter",
                "HTTP error responses.",
                |s| &s.http_errors,
            ),
            (
                "hub_backlog",
                "gauge",
                "Interest updates waiting for the hub.",
                |s| &s.hub_backlog,
            ),
            (
                "registry_busy_total",
                "counter",
                "Event-stream API requests answered 503: registry queue full (policy: refuse).",
                |s| &s.registry_busy,
            ),
        ];
        for (name, kind, help, field) in shard_metrics {
            let per = self
                .shards
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("shard=\"{i}\""), field(s).get()));
            total_and_split(&mut out, name, "shard", kind, help, per);
        }
        self.render_eio(&mut out);
        self.render_auth(&mut out);
        crate::limits::render_refused(&mut out, self.shards.iter().map(|s| &s.refused));
        let drops = self.hub.inbox_drops.iter().enumerate();
        let drops = drops.map(|(i, c)| (format!("shard=\"{i}\""), c.get()));
        let help = "Events dropped because a shard inbox was full (policy: drop and count).";
        total_and_split(
            &mut out,
            "queue_drops_total",
            "shard",
            "counter",
            help,
            drops,
        );
        let hub = &self.hub;
        family(
            &mut out,
            "ringcast_events_total",
            "counter",
            "Events from sources.",
            &[("", hub.events.get())],
        );
        family(
            &mut out,
            "ringcast_publishes_total",
            "counter",
            "Publishes accepted.",
            &[("", hub.publishes.get())],
        );
        family(
            &mut out,
            "ringcast_frames_encoded_total",
            "counter",
            "Frames encoded (once per event and format).",
            &[("", hub.frames_encoded.get())],
        );
        family(
            &mut out,
            "ringcast_bess_reads_skipped_total",
            "counter",
            "BESS battery re-reads skipped because the Redis command queue was full.",
            &[("", hub.bess_reads_skipped.get())],
        );
        family(
            &mut out,
            "ringcast_key_frames_suppressed_total",
            "counter",
            "Key-watch frames not sent: identical to the last frame sent for that key and format.",
            &[("", hub.key_frames_suppressed.get())],
        );
        family(
            &mut out,
            "ringcast_hub_topics",
            "gauge",
            "Topics with a subscriber anywhere.",
            &[("", hub.topics.get())],
        );
        type RedisField = fn(&RedisStats) -> &Counter;
        let redis: [(&str, &str, &str, RedisField); 11] = [
            (
                "redis_up",
                "gauge",
                "1 while the Redis subscriber connection is up.",
                |r| &r.up,
            ),
            (
                "redis_reconnects_total",
                "counter",
                "Reconnects to Redis.",
                |r| &r.reconnects,
            ),
            (
                "redis_events_total",
                "counter",
                "Pushes received from Redis.",
                |r| &r.events,
            ),
            (
                "redis_events_dropped_total",
                "counter",
                "Pushes dropped because the hub channel was full.",
                |r| &r.events_dropped,
            ),
            (
                "redis_key_reads_total",
                "counter",
                "Key reads for watches and snapshots.",
                |r| &r.key_reads,
            ),
            (
                "redis_key_reads_skipped_total",
                "counter",
                "Key reads skipped because the command queue was full.",
                |r| &r.key_reads_skipped,
            ),
            (
                "redis_publish_errors_total",
                "counter",
                "Publishes that failed or were dropped while Redis was down.",
                |r| &r.publish_errors,
            ),
            (
                "redis_cluster_refreshes_total",
                "counter",
                "Redis Cluster topology refreshes (0 for a single Redis).",
                |r| &r.cluster_refreshes,
            ),
            (
                "redis_cluster_redirects_total",
                "counter",
                "Redis Cluster -MOVED and -ASK redirections followed by key reads and publishes.",
                |r| &r.cluster_redirects,
            ),
            (
                "redis_cluster_rehomed_total",
                "counter",
                "Sharded subscriptions moved to another primary after their slot migrated.",
                |r| &r.cluster_rehomed,
            ),
            (
                "redis_cluster_nodes",
                "gauge",
                "Redis Cluster primaries whose subscriber connection is up.",
                |r| &r.cluster_nodes,
            ),
        ];
        if !self.redis.is_empty() {
            for (name, kind, help, field) in redis {
                let per = self.redis.iter().zip(&self.redis_names);
                let per = per.map(|(r, n)| (format!("source=\"{n}\""), field(r).get()));
                total_and_split(&mut out, name, "source", kind, help, per);
            }
        }
        self.render_radar(&mut out);
        type RegistryField = fn(&RegistryStats) -> &Counter;
        let registry: [(&str, &str, RegistryField); 2] = [
            (
                "registry_requests_total",
                "Event-stream registry requests handled.",
                |r| &r.requests,
            ),
            (
                "registry_errors_total",
                "Event-stream registry requests that failed in SQLite (answered 500).",
                |r| &r.errors,
            ),
        ];
        if !self.registries.is_empty() {
            for (name, help, field) in registry {
                let per = self.registries.iter().zip(&self.registry_paths);
                let per = per.map(|(r, p)| (format!("file=\"{}\"", label(p)), field(r).get()));
                total_and_split(&mut out, name, "file", "counter", help, per);
            }
        }
        let r = &self.rabbit_stream;
        let rabbit: [(&str, &str, &str, &Counter); 8] = [
            (
                "rabbit_stream_connections_up",
                "gauge",
                "RabbitMQ stream protocol connections up.",
                &r.connections_up,
            ),
            (
                "rabbit_stream_reconnects_total",
                "counter",
                "Reconnects to the RabbitMQ stream port.",
                &r.reconnects,
            ),
            (
                "rabbit_stream_consumers",
                "gauge",
                "Live stream replay consumers (one per stream).",
                &r.consumers,
            ),
            (
                "rabbit_stream_chunks_total",
                "counter",
                "Chunks delivered by RabbitMQ.",
                &r.chunks,
            ),
            (
                "rabbit_stream_messages_total",
                "counter",
                "Stream messages transformed and queued for a shard.",
                &r.messages,
            ),
            (
                "rabbit_stream_bytes_total",
                "counter",
                "Bytes of stream frames queued for shards.",
                &r.bytes,
            ),
            (
                "rabbit_stream_dropped_total",
                "counter",
                "Stream messages dropped (empty, not UTF-8, invalid JSON, unreadable).",
                &r.dropped,
            ),
            (
                "rabbit_stream_inbox_full_retries_total",
                "counter",
                "Stream deliveries refused by a full shard inbox and retried (never dropped).",
                &r.inbox_full_retries,
            ),
        ];
        let l = &self.replay_lease;
        let lease: [(&str, &str, &str, &Counter); 7] = [
            (
                "replay_lease_up",
                "gauge",
                "The replay lease's Redis connection is up.",
                &l.up,
            ),
            (
                "replay_lease_checks_total",
                "counter",
                "Replay lease checks answered by Redis (one per chunk forwarded).",
                &l.checks,
            ),
            (
                "replay_lease_knockouts_total",
                "counter",
                "Replay consumers ended because Redis named another consumer or none.",
                &l.knockouts,
            ),
            (
                "replay_lease_revokes_total",
                "counter",
                "Replay lease keys deleted for a deleted event stream.",
                &l.revokes,
            ),
            (
                "replay_lease_errors_total",
                "counter",
                "Replay lease Redis failures (connects, commands, commands lost while down).",
                &l.errors,
            ),
            (
                "replay_lease_unchecked_total",
                "counter",
                "Replay chunks forwarded without a lease check (Redis unreachable: fail open).",
                &l.unchecked,
            ),
            (
                "replay_lease_queue_full_total",
                "counter",
                "Replay lease commands refused by the full lease queue (fail open).",
                &l.queue_full,
            ),
        ];
        for (name, kind, help, counter) in rabbit.into_iter().chain(lease) {
            family(
                &mut out,
                &format!("ringcast_{name}"),
                kind,
                help,
                &[("", counter.get())],
            );
        }
        self.render_echoes(&mut out);
        let stages: [(&str, &str, Vec<&Histogram>); 4] = [
            (
                "hub",
                "read from the source to hub routing",
                vec![&self.hub.stage_hub],
            ),
            (
                "dispatch",
                "read from the source to delivery on the shard",
                self.shards.iter().map(|s| &s.stages.dispatch).collect(),
            ),
            (
                "write_submit",
                "read from the source to the writev submission",
                self.shards.iter().map(|s| &s.stages.write_submit).collect(),
            ),
            (
                "write_complete",
                "read from the source to the writev completion",
                self.shards
                    .iter()
                    .map(|s| &s.stages.write_complete)
                    .collect(),
            ),
        ];
        for (stage, help, hists) in stages {
            histogram(&mut out, stage, help, &hists);
        }
        family(
            &mut out,
            "ringcast_io_backend",
            "gauge",
            "The shards' I/O runtime, named by the label (io_uring or epoll); always 1.",
            &[(&format!("backend=\"{}\"", crate::rt::backend().as_str()), 1)],
        );
        out
    }
}

impl Metrics {
    /// The `ringcast_radar_*` families, with a `site` label (none without radar feeds).
    fn render_radar(&self, out: &mut String) {
        type RadarField = fn(&RadarStats) -> &Counter;
        let radar: [(&str, &str, &str, RadarField); 9] = [
            (
                "radar_up",
                "gauge",
                "1 while the radar feed's connection (TCP, or ZMQ to its publisher) is up.",
                |r| &r.up,
            ),
            (
                "radar_reconnects_total",
                "counter",
                "Reconnects of a radar feed after a lost connection or a failed connect.",
                |r| &r.reconnects,
            ),
            (
                "radar_records_total",
                "counter",
                "Radar records rendered and handed to the hub.",
                |r| &r.records,
            ),
            (
                "radar_frame_errors_total",
                "counter",
                "Connex framing errors and frames cut off by the peer closing; ZMQ messages \
                 not [site, zlib(record)].",
                |r| &r.frame_errors,
            ),
            (
                "radar_zlib_errors_total",
                "counter",
                "ZMQ radar records that are not zlib data or inflate above the record cap.",
                |r| &r.zlib_errors,
            ),
            (
                "radar_sites_dropped_total",
                "counter",
                "ZMQ radar records dropped because their site passes the cap of distinct sites.",
                |r| &r.sites_dropped,
            ),
            (
                "radar_dmap_errors_total",
                "counter",
                "Radar frames whose payload is not a DMAP record.",
                |r| &r.dmap_errors,
            ),
            (
                "radar_skipped_records_total",
                "counter",
                "Radar records skipped for a missing or unusable field.",
                |r| &r.skipped_records,
            ),
            (
                "radar_events_dropped_total",
                "counter",
                "Radar events dropped because the hub channel was full.",
                |r| &r.events_dropped,
            ),
        ];
        if self.radar.is_empty() {
            return;
        }
        for (name, kind, help, field) in radar {
            let per = self.radar.iter().zip(&self.radar_sites);
            let per = per.map(|(r, s)| (format!("site=\"{}\"", label(s)), field(r).get()));
            total_and_split(out, name, "site", kind, help, per);
        }
    }
}

impl Metrics {
    /// The `ringcast_echoes_*` families (zero when the echo store is not started).
    fn render_echoes(&self, out: &mut String) {
        let e = &self.echoes;
        let echoes: [(&str, &str, u64); 6] = [
            (
                "echoes_rows_written_total",
                "SuperDARN echo counts stored.",
                e.rows_written.get(),
            ),
            (
                "echoes_dropped_total",
                "SuperDARN echo counts not stored: echo store queue full (policy: drop).",
                e.dropped.get(),
            ),
            (
                "echoes_deleted_total",
                "SuperDARN echo counts deleted by retention (max-days-store-echoes).",
                e.deleted.get(),
            ),
            (
                "echoes_queries_total",
                "GET /echoes queries answered by the echo store.",
                e.queries.get(),
            ),
            (
                "echoes_busy_total",
                "GET /echoes requests answered 503: echo store queue full (policy: refuse).",
                e.busy.get(),
            ),
            (
                "echoes_errors_total",
                "Echo store SQLite failures (logged; a failed query is answered 500).",
                e.errors.get(),
            ),
        ];
        for (name, help, value) in echoes {
            family(
                out,
                &format!("ringcast_{name}"),
                "counter",
                help,
                &[("", value)],
            );
        }
    }
}

/// `text` as a Prometheus label value: backslash, quote and newline escaped.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one Prometheus histogram `ringcast_stage_<stage>_seconds`, summing `hists`.
fn histogram(out: &mut String, stage: &str, help: &str, hists: &[&Histogram]) {
    let name = format!("ringcast_stage_{stage}_seconds");
    let _ = writeln!(
        out,
        "# HELP {name} Sampled latency, {help}.\n# TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += hists.iter().map(|h| h.buckets[i].get()).sum::<u64>();
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let count: u64 = hists.iter().map(|h| h.count()).sum();
    let sum_us: u64 = hists.iter().map(|h| h.sum_us.get()).sum();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {count}");
}

impl Metrics {
    /// The Engine.IO families: totals over the shards, closes split by reason.
    fn render_auth(&self, out: &mut String) {
        let refused: Vec<(String, u64)> = crate::auth::Refusal::ALL
            .iter()
            .map(|r| {
                let n = self.shards.iter().map(|s| s.auth.refused[r.index()].get());
                (format!("reason=\"{}\"", r.as_str()), n.sum())
            })
            .collect();
        let samples: Vec<(&str, u64)> = refused.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        family(
            out,
            "ringcast_auth_refused_total",
            "counter",
            "Tokens refused (401 at an upgrade or publish, forbidden on refresh), by reason.",
            &samples,
        );
        type Field = fn(&AuthStats) -> &Counter;
        let plain: [(&str, &str, Field); 5] = [
            (
                "ringcast_auth_forbidden_total",
                "Names refused because the grants do not cover them (forbidden reply or 403).",
                |a| &a.forbidden,
            ),
            (
                "ringcast_auth_expired_closes_total",
                "Connections closed (4003) at their token's exp.",
                |a| &a.expired_closes,
            ),
            (
                "ringcast_auth_refreshes_total",
                "Tokens replaced by a refresh.",
                |a| &a.refreshes,
            ),
            (
                "ringcast_auth_refreshes_refused_total",
                "Refresh requests refused.",
                |a| &a.refreshes_refused,
            ),
            (
                "ringcast_auth_revoked_total",
                "Subscriptions and watches dropped after a refresh no longer allowed them.",
                |a| &a.revoked,
            ),
        ];
        for (name, help, field) in plain {
            let n = self
                .shards
                .iter()
                .map(|s| field(&s.auth).get())
                .sum::<u64>();
            family(out, name, "counter", help, &[("", n)]);
        }
    }

    fn render_eio(&self, out: &mut String) {
        type Field = fn(&EioStats) -> &Counter;
        let sum = |f: Field| self.shards.iter().map(|s| f(&s.eio).get()).sum::<u64>();
        let plain: [(&str, &str, &str, Field); 9] = [
            ("eio_sessions", "gauge", "Open Engine.IO sessions.", |e| {
                &e.sessions
            }),
            (
                "eio_parked_gets",
                "gauge",
                "Long-polling GETs waiting for packets.",
                |e| &e.parked_gets,
            ),
            (
                "eio_sessions_opened_total",
                "counter",
                "Engine.IO sessions opened.",
                |e| &e.opened,
            ),
            (
                "eio_sessions_refused_total",
                "counter",
                "Engine.IO handshakes refused at the session cap (503).",
                |e| &e.sessions_refused,
            ),
            (
                "eio_handoffs_total",
                "counter",
                "Engine.IO requests handed to the shard owning their session.",
                |e| &e.handoffs,
            ),
            (
                "eio_handoff_drops_total",
                "counter",
                "Engine.IO hand-offs refused: the owner's inbox was full (503).",
                |e| &e.handoff_drops,
            ),
            (
                "eio_origin_refused_total",
                "counter",
                "Engine.IO requests refused for their Origin (400).",
                |e| &e.origin_refused,
            ),
            (
                "eio_bad_requests_total",
                "counter",
                "Engine.IO requests answered with an error body (400).",
                |e| &e.bad_requests,
            ),
            (
                "eio_upgrades_total",
                "counter",
                "Engine.IO sessions upgraded from polling to WebSocket.",
                |e| &e.upgrades,
            ),
        ];
        for (name, kind, help, field) in plain {
            family(
                out,
                &format!("ringcast_{name}"),
                kind,
                help,
                &[("", sum(field))],
            );
        }
        let reasons: [(&str, Field); 6] = [
            ("reason=\"client\"", |e| &e.closes_client),
            ("reason=\"ping_timeout\"", |e| &e.closes_ping_timeout),
            ("reason=\"poll_timeout\"", |e| &e.closes_poll_timeout),
            ("reason=\"overflow\"", |e| &e.closes_overflow),
            ("reason=\"bad_request\"", |e| &e.closes_bad_request),
            ("reason=\"server\"", |e| &e.closes_server),
        ];
        let samples: Vec<(&str, u64)> = reasons.iter().map(|(l, f)| (*l, sum(*f))).collect();
        family(
            out,
            "ringcast_eio_session_closes_total",
            "counter",
            "Engine.IO sessions closed, by reason.",
            &samples,
        );
    }
}

/// Writes `ringcast_<name>` (the total) and `ringcast_<split>_<name>{labels}` (one sample per
/// label set).
fn total_and_split(
    out: &mut String,
    name: &str,
    split: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, u64)>,
) {
    let samples: Vec<(String, u64)> = samples.collect();
    let total = samples.iter().map(|(_, v)| v).sum();
    family(out, &format!("ringcast_{name}"), kind, help, &[("", total)]);
    let per: Vec<(&str, u64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(out, &format!("ringcast_{split}_{name}"), kind, help, &per);
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Reads one sample from a rendering: `value(text, "ringcast_connections")`. For tests and tools.
pub fn value(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_per_shard_series() {
        let m = Metrics::new(2);
        m.shards[0].connections.add(3);
        m.shards[1].connections.add(4);
        m.shards[1].connections.dec();
        m.hub.inbox_drops[1].inc();
        let text = m.render();
        assert_eq!(value(&text, "ringcast_connections"), Some(6));
        assert_eq!(
            value(&text, "ringcast_shard_connections{shard=\"1\"}"),
            Some(3)
        );
        assert_eq!(value(&text, "ringcast_queue_drops_total"), Some(1));
        assert!(text.contains("# TYPE ringcast_bytes_out_total counter"));
    }

    #[test]
    fn echo_store_series_are_always_rendered() {
        let m = Metrics::new(1);
        m.echoes.rows_written.add(3);
        m.echoes.dropped.inc();
        m.echoes.busy.inc();
        m.echoes.busy.inc();
        let text = m.render();
        assert_eq!(value(&text, "ringcast_echoes_rows_written_total"), Some(3));
        assert_eq!(value(&text, "ringcast_echoes_dropped_total"), Some(1));
        assert_eq!(value(&text, "ringcast_echoes_busy_total"), Some(2));
        assert_eq!(value(&text, "ringcast_echoes_deleted_total"), Some(0));
        assert_eq!(value(&text, "ringcast_echoes_queries_total"), Some(0));
        assert_eq!(value(&text, "ringcast_echoes_errors_total"), Some(0));
    }
}
