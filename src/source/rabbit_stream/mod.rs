//! The RabbitMQ stream replay source (Squonk2 ESS): one consumer per WebSocket, reading one
//! RabbitMQ stream over the stream protocol (port 5552) from the offset the client chose, each
//! message transformed as the original did and delivered straight to the connection's shard.
//! It implements the seam in [`super::replay`].
//!
//! Threads (none of them a shard or the hub):
//! - the **driver** thread ([`driver`]) owns every consumer: it reads [`ReplayCmd`]s from the
//!   shards, writes every frame to RabbitMQ, turns delivered chunks into WebSocket frames
//!   ([`transform`]) and sends them to the shards' inboxes, with flow control (below);
//! - one **connection** thread per TCP connection ([`conn`]): connects, authenticates, tunes,
//!   opens the vhost, then reads frames and hands them to the driver; on any failure it tells
//!   the driver, waits a capped, jittered backoff and connects again. The pool grows by one
//!   connection per [`MAX_SUBSCRIPTIONS_PER_CONN`] consumers (subscription ids are a `u8`), up
//!   to [`MAX_CONNECTIONS`]; a consumer beyond that ends with [`ReplayEnd::Failed`].
//!
//! Flow control ("replayed at the rate the client reads"): RabbitMQ sends a chunk only against
//! a credit (1 credit = 1 chunk). The driver keeps, per consumer, the frames it sent to the
//! shard that the shard has not credited back yet ([`ReplayCmd::Credit`], sent by the shard
//! after writing them to the socket). It grants RabbitMQ one more credit only while nothing is
//! waiting for the shard's inbox, fewer than `max_in_flight_frames` frames are in flight, and
//! fewer than [`MAX_CHUNK_CREDIT`] credits are outstanding. A consumer whose client stops
//! reading therefore holds at most `max_in_flight_frames` frames plus [`MAX_CHUNK_CREDIT`]
//! chunks; RabbitMQ keeps the rest on disk.
//!
//! No loss, no duplicates: a chunk whose shard inbox is full stays queued on its consumer and
//! is retried (counted, never dropped); after a reconnect every consumer resubscribes from the
//! offset after the last message it processed, and records below that offset in a re-sent
//! chunk are skipped.
//!
//! One live consumer per stream across instances: with [`RabbitStreamSettings::lease`], every
//! chunk is checked against a Redis key before it is forwarded ([`crate::source::replay_lease`]).
//!
//! Metrics (written by the driver thread only): [`crate::metrics::RabbitStreamStats`].

pub mod amqp;
pub mod chunk;
pub mod codec;
mod conn;
mod consumer;
mod driver;
pub mod pyjson_object;
pub mod transform;
mod url;

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

pub use url::{AmqpUrl, UrlError};

use crate::metrics::Metrics;
use crate::router::hub::ShardLink;
use crate::source::replay::ReplayCmd;
#[cfg(doc)]
use crate::source::replay::ReplayEnd;
use crate::source::replay_lease::LeaseSettings;

/// Capacity of the shards → driver command channel. Shards use `try_send` and keep what does
/// not fit in their own backlog.
pub const COMMAND_QUEUE: usize = 4_096;

/// Capacity of the connection threads → driver channel, in frames. A connection thread blocks
/// when it is full (backpressure onto TCP, nothing dropped); credit already bounds what
/// RabbitMQ may send.
pub const EVENT_QUEUE: usize = 1_024;

/// Consumers per TCP connection (subscription ids are a `u8`; a few ids stay free for the
/// ones still closing).
pub const MAX_SUBSCRIPTIONS_PER_CONN: usize = 250;

/// TCP connections in the pool: 16 × 250 = 4,000 live consumers at most.
pub const MAX_CONNECTIONS: usize = 16;

/// Most chunks RabbitMQ may send a consumer ahead of its shard (the credit outstanding).
pub const MAX_CHUNK_CREDIT: u16 = 2;

/// The default stream protocol port.
pub const DEFAULT_STREAM_PORT: u16 = 5552;

/// How to reach RabbitMQ and how the source behaves.
#[derive(Debug, Clone)]
pub struct RabbitStreamSettings {
    /// Host, credentials and vhost (the URL's port is ignored).
    pub url: AmqpUrl,
    /// Stream protocol port (default 5552).
    pub port: u16,
    /// Shown by RabbitMQ as the connection's name (`connection_name` peer property);
    /// default `ringcast-stream`.
    pub connection_name: String,
    /// Log a stats line every this many messages delivered (default 800, the original's
    /// `ESS_MESSAGE_STATS_INTERVAL`; 0 disables it).
    pub stats_interval: u64,
    /// Frames a consumer may have sent to its shard and not had credited back before no more
    /// credit is granted to RabbitMQ (default 512). Lower: less memory per slow client; higher:
    /// more throughput per client.
    pub max_in_flight_frames: u32,
    /// Largest frame we accept (default 8 MiB); we answer RabbitMQ's `Tune` with the lower of
    /// this and its value, and refuse larger frames (the connection is reset).
    pub max_frame_bytes: u32,
    /// Heartbeat interval we accept at most (default 60 s; RabbitMQ proposes 60 s).
    pub heartbeat: Duration,
    /// TCP connect and handshake timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Cap of the reconnect backoff (default 5 s); it starts at 100 ms with ±25 % jitter.
    pub backoff_max: Duration,
    /// The Redis that holds one live consumer per stream across instances
    /// ([`crate::source::replay_lease`]); default none: the rule holds within this process only.
    pub lease: Option<LeaseSettings>,
}

impl RabbitStreamSettings {
    /// The defaults for RabbitMQ at `url` (`amqp://user:pass@host:port/vhost`).
    pub fn from_url(url: &str) -> Result<RabbitStreamSettings, UrlError> {
        Ok(RabbitStreamSettings {
            url: AmqpUrl::parse(url)?,
            port: DEFAULT_STREAM_PORT,
            connection_name: "ringcast-stream".to_string(),
            stats_interval: 800,
            max_in_flight_frames: 512,
            max_frame_bytes: 8 * 1024 * 1024,
            heartbeat: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            backoff_max: Duration::from_secs(5),
            lease: None,
        })
    }
}

/// The running source: a handle to its driver thread.
#[derive(Debug)]
pub struct RabbitStreamSource;

impl RabbitStreamSource {
    /// Starts the driver thread (which starts the connection threads) and returns the command
    /// channel for the shards and the driver's handle. Dropping every clone of the sender stops
    /// the source: it closes its connections and the thread ends.
    pub fn start(
        settings: RabbitStreamSettings,
        links: Vec<ShardLink>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Sender<ReplayCmd>, std::thread::JoinHandle<()>)> {
        let (tx, rx) = crossbeam_channel::bounded(COMMAND_QUEUE);
        let handle = driver::spawn(Arc::new(settings), links, metrics, rx)?;
        Ok((tx, handle))
    }
}
