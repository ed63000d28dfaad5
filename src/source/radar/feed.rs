//! One radar TCP feed: a thread (`radar-<site>`) that connects to the radar's connex server,
//! decodes frames ([`ConnexDecoder`]) and hands each payload to the shared record pipeline
//! ([`RecordSink`]), which decodes the DMAP record, renders `<site>` and, at scan starts,
//! `<site>/echoes`, and sends both to the hub.
//!
//! Thread: this feed's own thread, which blocks on its socket (never a shard or the hub). It is
//! the single writer of its [`RadarStats`](crate::metrics::RadarStats) and owns its site's
//! [`SiteState`].
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
//! Backpressure: as [`super::pipeline`] says (a full hub channel drops and counts the event).

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::Sender;

use super::config::TcpFeed;
use super::connex::{ConnexDecoder, FrameError};
pub use super::pipeline::LOG_EVERY;
use super::pipeline::{Handled, RecordSink, SiteState};
use crate::metrics::Metrics;
use crate::router::UpstreamMsg;
use crate::source::redis::Backoff;

/// A connection that delivers no byte for this long is dropped and reconnected: 20 s, the
/// original's socket timeout. Shorter finds a dead radar sooner but cuts a quiet one.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Timeout of one TCP connect attempt: 10 s. Longer tolerates slow links; shorter retries a
/// black-holed address sooner.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Cap of the reconnect backoff: 5 s. A radar that comes back is read again within about 5 s;
/// a lower cap costs a connect attempt more often while it is down.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Bytes one read takes from the socket: 64 KiB.
const READ_CHUNK: usize = 64 * 1_024;

/// What a TCP feed thread needs.
pub type FeedSettings = super::pipeline::FeedSettings<TcpFeed>;

/// Starts the feed's thread, named `radar-<site>`. It runs until the hub is gone.
pub fn spawn(
    settings: FeedSettings,
    hub: Sender<UpstreamMsg>,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let sink = RecordSink::new(
        settings.source,
        settings.stats,
        hub,
        metrics,
        settings.echo_sink.clone(),
        &settings.upstream.site,
    )?;
    std::thread::Builder::new()
        .name(format!("radar-{}", settings.upstream.site))
        .spawn(move || run(settings.upstream, sink))
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
    /// Where the radar is.
    feed: TcpFeed,
    /// The shared record pipeline (stats, hub, warnings).
    sink: RecordSink,
    /// The site's channels and echo counts (kept across reconnects).
    site: SiteState,
    /// A record arrived on the current connection (the backoff starts over after it).
    delivered: bool,
}

fn run(tcp: TcpFeed, sink: RecordSink) {
    let site = tcp.site.clone();
    let mut feed = Feed {
        site: SiteState::new(&site),
        feed: tcp,
        sink,
        delivered: false,
    };
    let mut backoff = Backoff::new(BACKOFF_MAX);
    let mut attempted = false;
    loop {
        let addr = format!("{}:{}", feed.feed.host, feed.feed.port);
        match connect(&addr) {
            Ok(stream) => {
                if attempted {
                    feed.sink.stats().reconnects.inc();
                }
                tracing::info!(site = %site, %addr, "radar feed connected");
                feed.sink.stats().up.set(1);
                feed.delivered = false;
                let end = feed.read_loop(stream);
                feed.sink.stats().up.set(0);
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
                .sink
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
    /// Reads frames until the connection ends.
    fn read_loop(&mut self, mut stream: TcpStream) -> End {
        let mut decoder = ConnexDecoder::default();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => {
                    if decoder.buffered() > 0 {
                        self.sink.stats().frame_errors.inc();
                        let partial = decoder.buffered();
                        self.sink.warn(
                            self.site.site(),
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

    /// Hands one frame's payload to the pipeline; false when the hub is gone.
    fn handle_frame(&mut self, frame: Result<Bytes, FrameError>) -> bool {
        match frame {
            Ok(payload) => match self.sink.handle_record(&mut self.site, &payload) {
                Handled::Record => {
                    self.delivered = true;
                    true
                }
                Handled::Bad => true,
                Handled::HubGone => false,
            },
            Err(e) => {
                self.sink.stats().frame_errors.inc();
                self.sink.warn(
                    self.site.site(),
                    &format!("bad frame: {e}; resynchronising"),
                );
                true
            }
        }
    }
}
