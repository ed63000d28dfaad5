//! The record pipeline every radar feed shares (TCP connex and ZMQ alike): one DMAP record in,
//! `<site>` and, at scan starts, `<site>/echoes` out to the hub. [`RecordSink::handle_record`]
//! decodes the record ([`dmap::parse`]), counts its echoes in the site's [`EchoCounter`]
//! ([`SiteState`]), renders the event once ([`render_site`]), calls the [`EchoSink`] hook for
//! each echoes event and sends both as [`SourceInput::Radar`].
//!
//! Thread: the feed's own thread (a [`RecordSink`] is owned by one feed, which is the single
//! writer of its [`RadarStats`]).
//!
//! Backpressure: events go to the hub with `try_send`; when the hub channel is full the event
//! is dropped and counted (`ringcast_radar_events_dropped_total`), as the Redis subscriber
//! does, so a busy hub never stalls a feed's socket (docs/BACKPRESSURE.md). The [`EchoSink`] is
//! called on the feed thread and must not block (hand the row to another thread).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};

use super::dmap;
use crate::metrics::{Metrics, RadarStats};
use crate::profile::superdarn::echoes::{self, EchoCounter, Echoes};
use crate::profile::superdarn::render_site;
use crate::router::UpstreamMsg;
use crate::source::{SourceEvent, SourceInput};

/// What a feed thread needs, whatever its upstream (`TcpFeed` for a radar's TCP feed,
/// `ZmqAddr` for the ZMQ publisher).
#[derive(Clone)]
pub struct FeedSettings<A> {
    /// The radar source's position among the hub's sources.
    pub source: usize,
    /// This feed's position in [`Metrics::radar`].
    pub stats: usize,
    /// Where the records come from.
    pub upstream: A,
    /// Called for each `<site>/echoes` event (see [`EchoSink`]).
    pub echo_sink: Option<EchoSink>,
}

impl<A: std::fmt::Debug> std::fmt::Debug for FeedSettings<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSettings")
            .field("source", &self.source)
            .field("stats", &self.stats)
            .field("upstream", &self.upstream)
            .field("echo_sink", &self.echo_sink.is_some())
            .finish()
    }
}

/// At most one warning per feed per this long (10 s) for bad frames, messages, records or
/// connects; the line says how many were not logged. The metrics count every one.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Called with the site and the counts whenever a `<site>/echoes` event is produced (an echo
/// store plugs in here). It runs on the feed's thread, so it must not block: queue the row for
/// another thread and return.
pub type EchoSink = Arc<dyn Fn(&str, &Echoes) + Send + Sync>;

/// One site's state: its channel names and its echo counts since the last scan start (kept
/// across reconnects).
#[derive(Debug)]
pub struct SiteState {
    /// The site code (`sas`).
    site: String,
    /// `<site>`.
    channel: Bytes,
    /// `<site>/echoes`.
    echoes_channel: Bytes,
    /// Echo counts since the last scan start.
    counter: EchoCounter,
}

impl SiteState {
    /// A site with no records yet.
    pub fn new(site: &str) -> SiteState {
        SiteState {
            site: site.to_owned(),
            channel: Bytes::from(site.to_owned()),
            echoes_channel: Bytes::from(echoes::event_name(site)),
            counter: EchoCounter::new(),
        }
    }

    /// The site code.
    pub fn site(&self) -> &str {
        &self.site
    }
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// It was a DMAP record: its events went to the hub (or were dropped, counted, when the
    /// hub channel was full, or skipped, counted, for a missing field).
    Record,
    /// Not a DMAP record: counted and logged.
    Bad,
    /// The hub is gone: the process is stopping.
    HubGone,
}

/// The shared tail of a feed: from a record's bytes to the hub.
pub struct RecordSink {
    /// The radar source's position among the hub's sources.
    source: usize,
    /// The hub's channel.
    hub: Sender<UpstreamMsg>,
    /// Where the feed's stats live.
    metrics: Arc<Metrics>,
    /// This feed's position in [`Metrics::radar`] (checked in range by [`RecordSink::new`]).
    stats: usize,
    /// Called for each echoes event.
    echo_sink: Option<EchoSink>,
    /// Rate limit of the feed's warnings.
    log: LogLimit,
}

impl std::fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSink")
            .field("source", &self.source)
            .field("stats", &self.stats)
            .field("echo_sink", &self.echo_sink.is_some())
            .finish()
    }
}

impl RecordSink {
    /// A sink for the feed whose stats are `metrics.radar[stats]`; an error when there is no
    /// such entry (`what` names the feed in it).
    pub fn new(
        source: usize,
        stats: usize,
        hub: Sender<UpstreamMsg>,
        metrics: Arc<Metrics>,
        echo_sink: Option<EchoSink>,
        what: &str,
    ) -> std::io::Result<RecordSink> {
        if stats >= metrics.radar.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no radar metrics for feed {what}"),
            ));
        }
        Ok(RecordSink {
            source,
            hub,
            metrics,
            stats,
            echo_sink,
            log: LogLimit::default(),
        })
    }

    /// The feed's counters.
    pub fn stats(&self) -> &RadarStats {
        // In range: `new` checked it, and `Metrics::radar` never changes size.
        &self.metrics.radar[self.stats]
    }

    /// A rate-limited warning naming `site`.
    pub fn warn(&mut self, site: &str, what: &str) {
        self.log.warn(site, what);
    }

    /// Decodes, renders and hands on one DMAP record of `site`.
    pub fn handle_record(&mut self, site: &mut SiteState, payload: &[u8]) -> Handled {
        let record = match dmap::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                self.stats().dmap_errors.inc();
                self.log.warn(&site.site, &format!("bad DMAP record: {e}"));
                return Handled::Bad;
            }
        };
        let echoes = site.counter.handle_record(&record, SystemTime::now());
        match render_site(&site.site, &record) {
            Ok(json) => {
                self.stats().records.inc();
                if !self.send(site.channel.clone(), json) {
                    return Handled::HubGone;
                }
            }
            Err(e) => {
                self.stats().skipped_records.inc();
                self.log.warn(&site.site, &format!("record skipped: {e}"));
            }
        }
        if let Some(e) = echoes {
            if let Some(hook) = &self.echo_sink {
                hook(&site.site, &e);
            }
            if !self.send(site.echoes_channel.clone(), e.render_event()) {
                return Handled::HubGone;
            }
        }
        Handled::Record
    }

    /// Hands one event to the hub; a full hub channel drops it (counted). False when the hub
    /// is gone.
    fn send(&self, channel: Bytes, payload: Vec<u8>) -> bool {
        let msg = UpstreamMsg::Source(SourceInput::Radar {
            source: self.source,
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
    use crate::source::radar::dmap::{Record, Value};
    use std::sync::Mutex;

    #[test]
    fn warnings_are_rate_limited() {
        let mut l = LogLimit::default();
        l.warn("sas", "one");
        l.warn("sas", "two");
        l.warn("sas", "three");
        assert_eq!(l.suppressed, 2);
    }

    #[test]
    fn a_bad_record_is_counted_and_no_sink_without_stats() {
        let (tx, _rx) = crossbeam_channel::bounded(4);
        let metrics = Arc::new(Metrics::new(1).with_radars(vec!["sas".into()]));
        assert!(RecordSink::new(1, 1, tx.clone(), metrics.clone(), None, "kod").is_err());
        let mut sink = RecordSink::new(1, 0, tx, metrics.clone(), None, "sas").expect("stats");
        let mut site = SiteState::new("sas");
        assert_eq!(sink.handle_record(&mut site, b"not dmap"), Handled::Bad);
        assert_eq!(metrics.radar[0].dmap_errors.get(), 1);
    }

    #[test]
    fn the_echo_sink_sees_each_echoes_event() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let metrics = Arc::new(Metrics::new(1).with_radars(vec!["sas".into()]));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_hook = seen.clone();
        let hook: EchoSink = Arc::new(move |site, e| {
            if let Ok(mut v) = seen_by_hook.lock() {
                v.push((site.to_owned(), e.render_event()));
            }
        });
        let mut sink = RecordSink::new(1, 0, tx, metrics, Some(hook), "sas").expect("stats");
        let mut site = SiteState::new("sas");
        // A record with only `scan`: not renderable (skipped), but it still starts a scan.
        let record = Record {
            scalars: vec![("scan".to_owned(), Value::I16(1))],
            arrays: Vec::new(),
        };
        let bytes = dmap::write(&record);
        assert_eq!(sink.handle_record(&mut site, &bytes), Handled::Record);
        let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "sas");
        let channels: Vec<Bytes> = rx
            .try_iter()
            .filter_map(|m| match m {
                UpstreamMsg::Source(SourceInput::Radar {
                    event: SourceEvent::Message { channel, .. },
                    ..
                }) => Some(channel),
                _ => None,
            })
            .collect();
        assert_eq!(channels, vec![Bytes::from_static(b"sas/echoes")]);
    }
}
