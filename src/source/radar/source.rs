//! The radar source as the hub sees it: one [`Source`] over every TCP feed of
//! `radars.config.json` (`--radars`) and the ZMQ feed (`--canada-addr`). Its channels are the
//! site names (`sas`: one event per fitacf record) and `<site>/echoes` (the echo counts at each
//! scan start); `Config::source_for` sends those channel names here (for the ZMQ feed, whose
//! sites are learnt from the wire, every site-code-shaped name), so `?subscribe=sas` on the
//! native listener gets them. A pattern subscribed here (`*`) gets every site's events, ZMQ
//! sites of any name included.
//!
//! Thread: [`RadarSource`] lives on the hub thread; the feeds run on their own threads
//! ([`super::feed`]) and send each rendered event as [`SourceInput::Radar`]. Every event goes
//! out as a [`SourceEvent::Message`], and the hub's topic table drops those nobody subscribed
//! to. That table changes as soon as the hub reads an interest edge, while the source hears of
//! edges only when the hub flushes its batch, so filtering here would lose the first records
//! after a subscribe that shares a batch with them. Patterns (a [`SourceEvent::PMessage`] per
//! matching pattern) are matched here, as the embedded broker does; `source_for` sends a
//! pattern here only when it is literally a radar channel name. Records are rendered whether or
//! not anyone listens (once each, on the feed thread), so a subscriber joins at the next
//! record.
//!
//! The feeds are read-only: a publish on a radar channel is refused.

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Sender;

use super::config::{TcpFeed, ZmqAddr};
use super::feed::{self, FeedSettings};
use super::pipeline::EchoSink;
use super::zmq::{self, ZmqSettings};
use crate::metrics::Metrics;
use crate::protocol::glob_match;
use crate::router::UpstreamMsg;
use crate::source::{Source, SourceError, SourceEvent, SourceInput};

/// What [`RadarSource::start`] needs besides the hub and the metrics.
#[derive(Clone, Default)]
pub struct RadarSettings {
    /// The radar source's position among the hub's sources.
    pub source: usize,
    /// The TCP feeds, one thread each; feed `i` counts in `Metrics::radar[i]`.
    pub feeds: Vec<TcpFeed>,
    /// The ZMQ publisher (`CANADA_ADDR`), if any: one more thread, counting in
    /// `Metrics::radar[feeds.len()]` (site label [`zmq::STATS_LABEL`]).
    pub zmq: Option<ZmqAddr>,
    /// Called on a feed thread for each `<site>/echoes` event (see [`EchoSink`]); `None`: no
    /// hook.
    pub echo_sink: Option<EchoSink>,
}

impl std::fmt::Debug for RadarSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadarSettings")
            .field("source", &self.source)
            .field("feeds", &self.feeds)
            .field("zmq", &self.zmq)
            .field("echo_sink", &self.echo_sink.is_some())
            .finish()
    }
}

/// The hub-side radar source.
#[derive(Debug)]
pub struct RadarSource {
    /// `radar (sas, kod)`, for logs.
    name: String,
    /// Patterns someone subscribed to.
    patterns: Vec<Bytes>,
}

impl RadarSource {
    /// Starts one feed thread per entry of `settings.feeds` (whose stats are
    /// `Metrics::radar[i]`, in the same order) and returns the source at position
    /// `settings.source`.
    pub fn start(
        settings: RadarSettings,
        hub: Sender<UpstreamMsg>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<RadarSource> {
        for (stats, f) in settings.feeds.iter().enumerate() {
            let feed = FeedSettings {
                source: settings.source,
                stats,
                upstream: f.clone(),
                echo_sink: settings.echo_sink.clone(),
            };
            feed::spawn(feed, hub.clone(), metrics.clone())?;
        }
        if let Some(addr) = &settings.zmq {
            let zmq = ZmqSettings {
                source: settings.source,
                stats: settings.feeds.len(),
                upstream: addr.clone(),
                echo_sink: settings.echo_sink.clone(),
            };
            zmq::spawn(zmq, hub, metrics)?;
        }
        Ok(RadarSource::new(&settings.feeds, settings.zmq.as_ref()))
    }

    /// The source without its threads (tests feed it [`SourceInput::Radar`] by hand).
    pub fn new(feeds: &[TcpFeed], zmq: Option<&ZmqAddr>) -> RadarSource {
        let mut sites: Vec<String> = feeds.iter().map(|f| f.site.clone()).collect();
        if let Some(addr) = zmq {
            sites.push(format!("zmq {}", addr.endpoint()));
        }
        RadarSource {
            name: format!("radar ({})", sites.join(", ")),
            patterns: Vec::new(),
        }
    }
}

impl Source for RadarSource {
    fn name(&self) -> &str {
        &self.name
    }

    /// Nothing to do: the feeds read whether or not anyone listens (see the module doc).
    fn subscribe(&mut self, _channels: &[Bytes]) {}

    fn unsubscribe(&mut self, _channels: &[Bytes]) {}

    fn psubscribe(&mut self, patterns: &[Bytes]) {
        for p in patterns {
            if !self.patterns.contains(p) {
                self.patterns.push(p.clone());
            }
        }
    }

    fn punsubscribe(&mut self, patterns: &[Bytes]) {
        self.patterns.retain(|p| !patterns.contains(p));
    }

    fn publish(&mut self, _channel: Bytes, _payload: Bytes) -> Result<(), SourceError> {
        Err(SourceError::Unavailable(
            "radar channels are read-only".to_owned(),
        ))
    }

    fn poll_events(&mut self, _out: &mut Vec<SourceEvent>) {}

    fn handle_input(&mut self, input: SourceInput, out: &mut Vec<SourceEvent>) {
        let SourceInput::Radar {
            event: SourceEvent::Message { channel, payload },
            ..
        } = input
        else {
            return;
        };
        for pattern in &self.patterns {
            if glob_match(pattern, &channel) {
                out.push(SourceEvent::PMessage {
                    pattern: pattern.clone(),
                    channel: channel.clone(),
                    payload: payload.clone(),
                });
            }
        }
        out.push(SourceEvent::Message { channel, payload });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(channel: &'static str) -> SourceInput {
        SourceInput::Radar {
            source: 1,
            event: SourceEvent::Message {
                channel: Bytes::from_static(channel.as_bytes()),
                payload: Bytes::from_static(b"{}"),
            },
        }
    }

    #[test]
    fn messages_pass_patterns_match_and_publishes_are_refused() {
        let feeds = [TcpFeed {
            site: "sas".into(),
            host: "h".into(),
            port: 1,
        }];
        let mut s = RadarSource::new(&feeds, None);
        assert_eq!(s.name(), "radar (sas)");
        let mut out = Vec::new();
        s.handle_input(input("sas"), &mut out);
        assert_eq!(out.len(), 1);
        s.psubscribe(&[Bytes::from_static(b"sas/*")]);
        s.handle_input(input("sas/echoes"), &mut out);
        assert_eq!(out.len(), 3);
        assert!(matches!(&out[0], SourceEvent::Message { channel, .. } if channel == "sas"));
        assert!(matches!(&out[1], SourceEvent::PMessage { pattern, .. } if pattern == "sas/*"));
        assert!(matches!(&out[2], SourceEvent::Message { channel, .. } if channel == "sas/echoes"));
        s.punsubscribe(&[Bytes::from_static(b"sas/*")]);
        out.clear();
        s.handle_input(input("sas/echoes"), &mut out);
        assert_eq!(out.len(), 1);
        assert!(s.publish(Bytes::from_static(b"sas"), Bytes::new()).is_err());
    }

    #[test]
    fn a_star_pattern_gets_every_site_zmq_ones_included() {
        let addr = ZmqAddr {
            host: "h".into(),
            port: 1,
        };
        let mut s = RadarSource::new(&[], Some(&addr));
        assert_eq!(s.name(), "radar (zmq tcp://h:1)");
        s.psubscribe(&[Bytes::from_static(b"*")]);
        let mut out = Vec::new();
        for channel in ["pgr", "pgr/echoes", "new-site.2"] {
            s.handle_input(input(channel), &mut out);
        }
        let matched: Vec<&Bytes> = out
            .iter()
            .filter_map(|e| match e {
                SourceEvent::PMessage {
                    pattern, channel, ..
                } if pattern == "*" => Some(channel),
                _ => None,
            })
            .collect();
        assert_eq!(matched, ["pgr", "pgr/echoes", "new-site.2"]);
    }
}
