//! One radar TCP feed: a thread (`radar-<site>`) that connects to the radar's connex server,
//! decodes frames ([`ConnexDecoder`]) and DMAP records ([`dmap::parse`]), renders each fitacf
//! record once ([`render_site`]) and, at scan starts, the echo counts ([`EchoCounter`]), and
//! hands both to the hub as [`SourceInput::Radar`] events on channels `<site>` and
//! `<site>/echoes`.
//!
//! Thread: this feed's own thread, which blocks on its socket (never a shard or the hub). It is
//! the single writer of its [`RadarStats`] and owns its site's [`EchoCounter`].
//!
//! Failures, none of which stops the feed:
//! - a failed connect (the first one included: the original gave up), an EOF, a read error or
//!   [`READ_TIMEOUT`] without data: reconnect after a capped, jittered backoff (100 ms doubling
//!   to [`BACKOFF_MAX`], ±25 %; it goes back to 100 ms once a connection delivered a record);
//! - a peer that closes in the middle of a frame: the partial frame is discarded and counted
//!   as a frame error;
//! - a bad magic or length: counted; the decoder resynchronises on the next magic;
//! - a frame that is not DMAP, or a record without a field the event needs: counted and
//!   skipped, with at most one log line per [`LOG_EVERY`] naming the site.
//!
//! Backpressure: events go to the hub with `try_send`; when the hub channel is full the event
//! is dropped and counted (`ringcast_radar_events_dropped_total`), as the Redis subscriber
//! does, so a busy hub never stalls the feed's socket (docs/BACKPRESSURE.md).

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};

use super::config::TcpFeed;
use super::connex::{ConnexDecoder, FrameError};
use super::dmap;
use crate::metrics::{Metrics, RadarStats};
use crate::profile::superdarn::echoes::{self, EchoCounter};
use crate::profile::superdarn::render_site;
use crate::router::UpstreamMsg;
use crate::source::redis::Backoff;
use crate::source::{SourceEvent, SourceInput};

/// A connection that delivers no byte for this long is dropped and reconnected: 20 s, the
/// original's socket timeout. Shorter finds a dead radar sooner but cuts a quiet one.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Timeout of one TCP connect attempt: 10 s. Longer tolerates slow links; shorter retries a
/// black-holed address sooner.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Cap of the reconnect backoff: 5 s. A radar that comes back is read again within about 5 s;
/// a lower cap costs a connect attempt more often while it is down.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// At most one warning per feed per this long (10 s) for bad frames, records or connects; the
/// line says how many were not logged. The metrics count every one.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Bytes one read takes from the socket: 64 KiB.
const READ_CHUNK: usize = 64 * 1_024;

/// What a feed thread needs.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// The radar source's position among the hub's sources.
    pub source: usize,
    /// This feed's position in [`Metrics::radar`].
    pub stats: usize,
    /// Where the radar is.
    pub feed: TcpFeed,
}

/// Starts the feed's thread, named `radar-<site>`. It runs until the hub is gone.
pub fn spawn(
    settings: FeedSettings,
    hub: Sender<UpstreamMsg>,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    if settings.stats >= metrics.radar.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("no radar metrics for feed {}", settings.feed.site),
        ));
    }
    std::thread::Builder::new()
        .name(format!("radar-{}", settings.feed.site))
        .spawn(move || run(settings, hub, metrics))
}

/// Why a connection ended.
enum End {
    /// Reconnect (the reason is logged).
    Lost(String),
    /// The hub is gone: the process is stopping.
    HubGone,
}

/// The feed's state across connections.
struct Feed {
    settings: FeedSettings,
    hub: Sender<UpstreamMsg>,
    metrics: Arc<Metrics>,
    /// `<site>`.
    channel: Bytes,
    /// `<site>/echoes`.
    echoes_channel: Bytes,
    /// The site's echo counts since the last scan start (kept across reconnects).
    counter: EchoCounter,
    /// Rate limit of the warnings.
    log: LogLimit,
    /// A record arrived on the current connection (the backoff starts over after it).
    delivered: bool,
}

fn run(settings: FeedSettings, hub: Sender<UpstreamMsg>, metrics: Arc<Metrics>) {
    let site = settings.feed.site.clone();
    let mut feed = Feed {
        channel: Bytes::from(site.clone()),
        echoes_channel: Bytes::from(echoes::event_name(&site)),
        settings,
        hub,
        metrics,
        counter: EchoCounter::new(),
        log: LogLimit::default(),
        delivered: false,
    };
    let mut backoff = Backoff::new(BACKOFF_MAX);
    let mut attempted = false;
    loop {
        let addr = format!("{}:{}", feed.settings.feed.host, feed.settings.feed.port);
        match connect(&addr) {
            Ok(stream) => {
                if attempted {
                    feed.stats().reconnects.inc();
                }
                tracing::info!(site = %site, %addr, "radar feed connected");
                feed.stats().up.set(1);
                feed.delivered = false;
                let end = feed.read_loop(stream);
                feed.stats().up.set(0);
                if feed.delivered {
                    backoff.reset();
                }
                match end {
                    End::HubGone => return,
                    End::Lost(why) => {
                        tracing::warn!(site = %site, %addr, reason = %why, "radar feed lost")
                    }
                }
            }
            Err(e) => feed
                .log
                .warn(&site, &format!("connect to {addr} failed: {e}")),
        }
        attempted = true;
        std::thread::sleep(backoff.next_delay());
    }
}

/// Connects to the first address of `addr` that answers, each attempt bounded.
fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(READ_TIMEOUT))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Feed {
    fn stats(&self) -> &RadarStats {
        // In range: `spawn` checked it, and `Metrics::radar` never changes size.
        &self.metrics.radar[self.settings.stats]
    }

    /// Reads frames until the connection ends.
    fn read_loop(&mut self, mut stream: TcpStream) -> End {
        let mut decoder = ConnexDecoder::default();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => {
                    if decoder.buffered() > 0 {
                        self.stats().frame_errors.inc();
                        let site = self.settings.feed.site.clone();
                        let partial = decoder.buffered();
                        self.log.warn(
                            &site,
                            &format!("peer closed mid-frame; {partial} bytes discarded"),
                        );
                    }
                    return End::Lost("closed by the radar".into());
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return End::Lost(format!("no data for {READ_TIMEOUT:?}"));
                }
                Err(e) => return End::Lost(e.to_string()),
            };
            let mut data = buf.get(..n).unwrap_or_default();
            while !data.is_empty() {
                let took = decoder.handle_input(data);
                data = data.get(took..).unwrap_or_default();
                while let Some(frame) = decoder.poll_record() {
                    if !self.handle_frame(frame) {
                        return End::HubGone;
                    }
                }
                if took == 0 {
                    // Cannot happen: after `poll_record` returns `None` a byte always fits.
                    return End::Lost("connex decoder full".into());
                }
            }
        }
    }

    /// Decodes, renders and hands on one frame; false when the hub is gone.
    fn handle_frame(&mut self, frame: Result<Bytes, FrameError>) -> bool {
        let site = self.settings.feed.site.clone();
        let payload = match frame {
            Ok(p) => p,
            Err(e) => {
                self.stats().frame_errors.inc();
                self.log
                    .warn(&site, &format!("bad frame: {e}; resynchronising"));
                return true;
            }
        };
        let record = match dmap::parse(&payload) {
            Ok(r) => r,
            Err(e) => {
                self.stats().dmap_errors.inc();
                self.log.warn(&site, &format!("bad DMAP record: {e}"));
                return true;
            }
        };
        self.delivered = true;
        let echoes = self.counter.handle_record(&record, SystemTime::now());
        match render_site(&site, &record) {
            Ok(json) => {
                self.stats().records.inc();
                if !self.send(self.channel.clone(), json) {
                    return false;
                }
            }
            Err(e) => {
                self.stats().skipped_records.inc();
                self.log.warn(&site, &format!("record skipped: {e}"));
            }
        }
        match echoes {
            Some(e) => self.send(self.echoes_channel.clone(), e.render_event()),
            None => true,
        }
    }

    /// Hands one event to the hub; a full hub channel drops it (counted). False when the hub
    /// is gone.
    fn send(&self, channel: Bytes, payload: Vec<u8>) -> bool {
        let msg = UpstreamMsg::Source(SourceInput::Radar {
            source: self.settings.source,
            event: SourceEvent::Message {
                channel,
                payload: Bytes::from(payload),
            },
        });
        match self.hub.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.stats().events_dropped.inc();
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// At most one warning per [`LOG_EVERY`]; the next one says how many were left out.
#[derive(Debug, Default)]
struct LogLimit {
    /// When the last line was written.
    last: Option<Instant>,
    /// Warnings not written since then.
    suppressed: u64,
}

impl LogLimit {
    fn warn(&mut self, site: &str, what: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(site, suppressed = self.suppressed, "radar feed: {what}");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited() {
        let mut l = LogLimit::default();
        l.warn("sas", "one");
        l.warn("sas", "two");
        l.warn("sas", "three");
        assert_eq!(l.suppressed, 2);
    }
}
