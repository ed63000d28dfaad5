//! The ZMQ radar feed (the Canadian radars, `CANADA_ADDR`): a thread (`radar-zmq`) with one
//! `SUB` socket connected to the publisher and subscribed to everything. Each message is two
//! parts, `[site name (UTF-8), zlib(DMAP record)]`; the record is inflated (at most
//! [`MAX_RECORD_BYTES`]) and handed to the shared record pipeline ([`RecordSink`]) with that
//! site's [`SiteState`], so a ZMQ site's events are the same `<site>` and `<site>/echoes` as a
//! TCP feed's.
//!
//! Thread: this feed's own thread, which runs a small current-thread tokio runtime for the
//! `zeromq` crate (never a shard or the hub). It is the single writer of its
//! [`RadarStats`](crate::metrics::RadarStats) (site label [`STATS_LABEL`]) and owns one
//! [`SiteState`] per site it has seen, at most [`MAX_SITES`].
//!
//! Failures, none of which stops the feed:
//! - a failed connect (the first one included: the original gave up) or a lost publisher:
//!   a fresh socket after the same capped, jittered backoff as a TCP feed (100 ms doubling to
//!   [`BACKOFF_MAX`]; back to 100 ms once a connection delivered a record). Within one connect
//!   attempt (bounded by [`CONNECT_TIMEOUT`]) the `zeromq` crate itself retries a refused
//!   connect every 1.4 to 5 s;
//! - a message that is not exactly two parts, or whose site is empty, not UTF-8 or not a plain
//!   name ([`site_name`]): counted as a frame error and skipped;
//! - a record that is not zlib data or inflates above [`MAX_RECORD_BYTES`] (a zlib bomb):
//!   counted as a zlib error and skipped, without inflating past the cap;
//! - a bad DMAP record or one without a field the event needs: as for a TCP feed;
//! - a new site beyond [`MAX_SITES`]: its records are counted (`sites_dropped`) and skipped.
//!
//! Each failure is logged at most once per [`LOG_EVERY`](super::pipeline::LOG_EVERY).
//!
//! Known limit: the `zeromq` crate has no `ZMQ_MAXMSGSIZE`, so a publisher can make the socket
//! buffer one very large message before it reaches us. The publisher is the operator's own
//! (`CANADA_ADDR`), as it was for the original. There is no read timeout either: a quiet
//! publisher is not a dead one for ZMQ, and a lost TCP connection is seen by the socket.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Sender;
use futures::StreamExt;
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv, SubSocket};

use super::config::ZmqAddr;
use super::connex::DEFAULT_MAX_FRAME_BYTES;
pub use super::feed::{BACKOFF_MAX, CONNECT_TIMEOUT};
use super::pipeline::{Handled, RecordSink, SiteState};
use crate::metrics::Metrics;
use crate::router::UpstreamMsg;
use crate::source::redis::Backoff;

/// Largest inflated record: 1 MiB, the largest payload a TCP feed accepts
/// ([`DEFAULT_MAX_FRAME_BYTES`]). Inflating stops one byte past it, so a zlib bomb costs at
/// most this much memory.
pub const MAX_RECORD_BYTES: usize = DEFAULT_MAX_FRAME_BYTES;

/// Most distinct sites the feed keeps state for: 256 (SuperDARN has about 40 radars). A site
/// past the cap is dropped and counted, so a publisher that invents names cannot grow memory.
pub const MAX_SITES: usize = 256;

/// Longest site name: 32 bytes (site codes are three letters).
pub const MAX_SITE_BYTES: usize = 32;

/// The ZMQ feed's `site` label in the `ringcast_site_radar_*` metrics.
pub const STATS_LABEL: &str = "canada";

/// What the ZMQ feed thread needs.
pub type ZmqSettings = super::pipeline::FeedSettings<ZmqAddr>;

/// Starts the feed's thread, named `radar-zmq`. It runs until the hub is gone.
pub fn spawn(
    settings: ZmqSettings,
    hub: Sender<UpstreamMsg>,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let sink = RecordSink::new(
        settings.source,
        settings.stats,
        hub,
        metrics,
        settings.echo_sink,
        STATS_LABEL,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let endpoint = settings.upstream.endpoint();
    std::thread::Builder::new()
        .name("radar-zmq".into())
        .spawn(move || runtime.block_on(ZmqFeed::new(sink).run(endpoint)))
}

/// Why a connection ended.
enum End {
    /// Reconnect (the reason is logged).
    Lost(String),
    /// The hub is gone: the process is stopping.
    HubGone,
}

/// Why a record was not inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZlibError {
    /// Not a zlib stream (or a truncated one).
    #[error("not zlib data: {0}")]
    Corrupt(String),
    /// It inflates above [`MAX_RECORD_BYTES`].
    #[error("inflates above {0} bytes")]
    TooLarge(usize),
}

/// Inflates `data`, stopping one byte past `cap`.
pub fn inflate(data: &[u8], cap: usize) -> Result<Vec<u8>, ZlibError> {
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| ZlibError::Corrupt(e.to_string()))?;
    if out.len() > cap {
        return Err(ZlibError::TooLarge(cap));
    }
    Ok(out)
}

/// The site name of a message's first part: 1 to [`MAX_SITE_BYTES`] bytes of ASCII letters,
/// digits, `-`, `_` or `.` (so `<site>` and `<site>/echoes` are plain channel names, never
/// globs or paths).
pub fn site_name(part: &[u8]) -> Result<&str, &'static str> {
    if part.is_empty() {
        return Err("empty site name");
    }
    if part.len() > MAX_SITE_BYTES {
        return Err("site name too long");
    }
    let name = std::str::from_utf8(part).map_err(|_| "site name not UTF-8")?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(plain) {
        return Err("site name not a plain name");
    }
    Ok(name)
}

/// The feed's state across connections.
struct ZmqFeed {
    /// The shared record pipeline (stats, hub, warnings).
    sink: RecordSink,
    /// One state per site seen, at most [`MAX_SITES`] (kept across reconnects).
    sites: HashMap<String, SiteState>,
    /// A record arrived on the current connection (the backoff starts over after it).
    delivered: bool,
}

impl ZmqFeed {
    fn new(sink: RecordSink) -> ZmqFeed {
        ZmqFeed {
            sink,
            sites: HashMap::new(),
            delivered: false,
        }
    }

    async fn run(mut self, endpoint: String) {
        let mut backoff = Backoff::new(BACKOFF_MAX);
        let mut attempted = false;
        loop {
            let mut options = SocketOptions::default();
            options.connect_timeout(CONNECT_TIMEOUT);
            let mut socket = SubSocket::with_options(options);
            let mut monitor = socket.monitor();
            let connected = match socket.connect(&endpoint).await {
                Ok(()) => socket.subscribe("").await,
                Err(e) => Err(e),
            };
            match connected {
                Ok(()) => {
                    if attempted {
                        self.sink.stats().reconnects.inc();
                    }
                    tracing::info!(%endpoint, "radar ZMQ feed connected");
                    self.sink.stats().up.set(1);
                    self.delivered = false;
                    let end = self.read_loop(&mut socket, &mut monitor).await;
                    self.sink.stats().up.set(0);
                    if self.delivered {
                        backoff.reset();
                    }
                    match end {
                        End::HubGone => return,
                        End::Lost(why) => {
                            tracing::warn!(%endpoint, reason = %why, "radar ZMQ feed lost")
                        }
                    }
                }
                Err(e) => self
                    .sink
                    .warn(STATS_LABEL, &format!("connect to {endpoint} failed: {e}")),
            }
            // Dropping the socket stops the crate's own reconnect task: ours is the backoff.
            drop(socket);
            attempted = true;
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Receives messages until the publisher is lost.
    async fn read_loop(
        &mut self,
        socket: &mut SubSocket,
        monitor: &mut futures::channel::mpsc::Receiver<SocketEvent>,
    ) -> End {
        loop {
            tokio::select! {
                message = socket.recv() => match message {
                    Ok(m) => {
                        if self.handle_message(&m.into_vec()) == Handled::HubGone {
                            return End::HubGone;
                        }
                    }
                    Err(e) => return End::Lost(e.to_string()),
                },
                event = monitor.next() => match event {
                    Some(SocketEvent::Disconnected(_)) => {
                        return End::Lost("publisher disconnected".into());
                    }
                    Some(_) => {}
                    None => return End::Lost("socket monitor closed".into()),
                },
            }
        }
    }

    /// Checks, inflates and hands on one message.
    fn handle_message(&mut self, parts: &[Bytes]) -> Handled {
        let [site, payload] = parts else {
            self.sink.stats().frame_errors.inc();
            let n = parts.len();
            self.sink.warn(
                STATS_LABEL,
                &format!("message of {n} parts, expected [site, zlib(record)]"),
            );
            return Handled::Bad;
        };
        let site = match site_name(site) {
            Ok(s) => s,
            Err(why) => {
                self.sink.stats().frame_errors.inc();
                self.sink.warn(STATS_LABEL, why);
                return Handled::Bad;
            }
        };
        let record = match inflate(payload, MAX_RECORD_BYTES) {
            Ok(r) => r,
            Err(e) => {
                self.sink.stats().zlib_errors.inc();
                self.sink.warn(site, &format!("bad zlib record: {e}"));
                return Handled::Bad;
            }
        };
        if !self.sites.contains_key(site) && self.sites.len() >= MAX_SITES {
            self.sink.stats().sites_dropped.inc();
            self.sink
                .warn(site, &format!("more than {MAX_SITES} sites; dropped"));
            return Handled::Bad;
        }
        let state = self
            .sites
            .entry(site.to_owned())
            .or_insert_with(|| SiteState::new(site));
        let handled = self.sink.handle_record(state, &record);
        if handled == Handled::Record {
            self.delivered = true;
        }
        handled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::radar::dmap::{self, Record, Value};
    use flate2::Compression;
    use flate2::write::ZlibEncoder;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    #[test]
    fn inflate_caps_bombs_and_refuses_garbage() {
        assert_eq!(inflate(&zlib(b"record"), 6), Ok(b"record".to_vec()));
        assert_eq!(inflate(&zlib(b"record"), 5), Err(ZlibError::TooLarge(5)));
        let bomb = zlib(&vec![0u8; 4 * MAX_RECORD_BYTES]);
        assert!(bomb.len() < 8_192, "compresses well");
        assert_eq!(
            inflate(&bomb, MAX_RECORD_BYTES),
            Err(ZlibError::TooLarge(MAX_RECORD_BYTES))
        );
        assert!(matches!(
            inflate(b"garbage", 10),
            Err(ZlibError::Corrupt(_))
        ));
        let cut = zlib(b"a longer record that gets cut");
        assert!(inflate(&cut[..cut.len() / 2], 100).is_err());
    }

    #[test]
    fn site_names_are_plain() {
        assert_eq!(site_name(b"sas"), Ok("sas"));
        assert_eq!(site_name(b"pgr-2_x.y"), Ok("pgr-2_x.y"));
        assert!(site_name(b"").is_err());
        assert!(site_name(&[b'a'; MAX_SITE_BYTES + 1]).is_err());
        assert!(site_name(b"\xff\xfe").is_err());
        for bad in [&b"sas/echoes"[..], b"s*", b"a b", b"s\n"] {
            assert!(site_name(bad).is_err(), "{bad:?}");
        }
    }

    fn feed() -> (
        ZmqFeed,
        Arc<Metrics>,
        crossbeam_channel::Receiver<UpstreamMsg>,
    ) {
        let (tx, rx) = crossbeam_channel::bounded(1_024);
        let metrics = Arc::new(Metrics::new(1).with_radars(vec![STATS_LABEL.into()]));
        let sink = RecordSink::new(1, 0, tx, metrics.clone(), None, STATS_LABEL);
        let sink = sink.unwrap_or_else(|e| panic!("{e}"));
        (ZmqFeed::new(sink), metrics, rx)
    }

    fn record() -> Vec<u8> {
        dmap::write(&Record {
            scalars: vec![("scan".to_owned(), Value::I16(0))],
            arrays: Vec::new(),
        })
    }

    #[test]
    fn messages_are_checked_and_counted() {
        let (mut f, metrics, _rx) = feed();
        let stats = &metrics.radar[0];
        let site = Bytes::from_static(b"sas");
        let good = Bytes::from(zlib(&record()));
        assert_eq!(f.handle_message(std::slice::from_ref(&site)), Handled::Bad);
        let three = [site.clone(), good.clone(), good.clone()];
        assert_eq!(f.handle_message(&three), Handled::Bad);
        let empty = [Bytes::new(), good.clone()];
        assert_eq!(f.handle_message(&empty), Handled::Bad);
        assert_eq!(stats.frame_errors.get(), 3);
        let bad_zlib = [site.clone(), Bytes::from_static(b"nope")];
        assert_eq!(f.handle_message(&bad_zlib), Handled::Bad);
        assert_eq!(stats.zlib_errors.get(), 1);
        let not_dmap = [site.clone(), Bytes::from(zlib(b"nope"))];
        assert_eq!(f.handle_message(&not_dmap), Handled::Bad);
        assert_eq!(stats.dmap_errors.get(), 1);
        // Renders nothing (no fields), but it is a record of site `sas`.
        assert_eq!(f.handle_message(&[site, good]), Handled::Record);
        assert_eq!(stats.skipped_records.get(), 1);
        assert!(f.delivered);
        assert_eq!(f.sites.len(), 1);
    }

    #[test]
    fn sites_are_capped() {
        let (mut f, metrics, _rx) = feed();
        let good = Bytes::from(zlib(&record()));
        for i in 0..MAX_SITES {
            let site = Bytes::from(format!("s{i}"));
            assert_eq!(f.handle_message(&[site, good.clone()]), Handled::Record);
        }
        let extra = [Bytes::from_static(b"extra"), good.clone()];
        assert_eq!(f.handle_message(&extra), Handled::Bad);
        assert_eq!(metrics.radar[0].sites_dropped.get(), 1);
        let known = [Bytes::from_static(b"s0"), good];
        assert_eq!(f.handle_message(&known), Handled::Record);
        assert_eq!(f.sites.len(), MAX_SITES);
    }
}
