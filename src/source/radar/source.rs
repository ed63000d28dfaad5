//! The radar source as the hub sees it: one [`Source`] over every TCP feed of
//! `radars.config.json` (`--radars`). Its channels are the site names (`sas`: one event per
//! fitacf record) and `<site>/echoes` (the echo counts at each scan start); `Config::source_for`
//! sends exactly those channel names here, so `?subscribe=sas` on the native listener gets them.
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

use super::config::TcpFeed;
use super::feed::{self, FeedSettings};
use super::pipeline::EchoSink;
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
    /// Called on a feed thread for each `<site>/echoes` event (see [`EchoSink`]); `None`: no
    /// hook.
    pub echo_sink: Option<EchoSink>,
}

impl std::fmt::Debug for RadarSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadarSettings")
            .field("source", &self.source)
            .field("feeds", &self.feeds)
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
                feed: f.clone(),
                echo_sink: settings.echo_sink.clone(),
            };
            feed::spawn(feed, hub.clone(), metrics.clone())?;
        }
        Ok(RadarSource::new(&settings.feeds))
    }

    /// The source without its threads (tests feed it [`SourceInput::Radar`] by hand).
    pub fn new(feeds: &[TcpFeed]) -> RadarSource {
        let sites: Vec<&str> = feeds.iter().map(|f| f.site.as_str()).collect();
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
        let mut s = RadarSource::new(&feeds);
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
}
