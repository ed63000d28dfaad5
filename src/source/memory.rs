//! The embedded broker: in-process pub/sub with Redis semantics, so ringcast runs with no Redis.
//!
//! Owned by the hub thread. A publish is matched against the subscribed channels and patterns
//! synchronously and its events wait in `ready` until the hub polls them, which it does right
//! after each publish, so publish order is delivery order.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

use super::{Source, SourceError, SourceEvent};
use crate::protocol::glob_match;

/// Most events waiting to be polled; the hub polls after every publish, so this only bounds a
/// misbehaving caller. Past it the oldest events are dropped.
const MAX_READY: usize = 65_536;

/// In-process pub/sub.
#[derive(Debug, Default)]
pub struct MemorySource {
    channels: HashSet<Bytes>,
    patterns: Vec<Bytes>,
    ready: VecDeque<SourceEvent>,
}

impl MemorySource {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Source for MemorySource {
    fn name(&self) -> &str {
        "memory"
    }

    fn subscribe(&mut self, channels: &[Bytes]) {
        self.channels.extend(channels.iter().cloned());
    }

    fn unsubscribe(&mut self, channels: &[Bytes]) {
        for c in channels {
            self.channels.remove(c);
        }
    }

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

    fn publish(&mut self, channel: Bytes, payload: Bytes) -> Result<(), SourceError> {
        if self.channels.contains(&channel) {
            self.ready.push_back(SourceEvent::Message {
                channel: channel.clone(),
                payload: payload.clone(),
            });
        }
        for pattern in &self.patterns {
            if glob_match(pattern, &channel) {
                self.ready.push_back(SourceEvent::PMessage {
                    pattern: pattern.clone(),
                    channel: channel.clone(),
                    payload: payload.clone(),
                });
            }
        }
        while self.ready.len() > MAX_READY {
            self.ready.pop_front();
        }
        Ok(())
    }

    fn poll_events(&mut self, out: &mut Vec<SourceEvent>) {
        out.extend(self.ready.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_and_pattern_subscribers_both_get_events() {
        let mut m = MemorySource::new();
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        m.subscribe(&[b("news.x")]);
        m.psubscribe(&[b("news.*")]);
        m.publish(b("news.x"), b("1")).unwrap();
        m.publish(b("other"), b("2")).unwrap();
        let mut out = Vec::new();
        m.poll_events(&mut out);
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[1], SourceEvent::PMessage { pattern, .. } if pattern == &b("news.*"))
        );
        m.unsubscribe(&[b("news.x")]);
        m.punsubscribe(&[b("news.*")]);
        m.publish(b("news.x"), b("3")).unwrap();
        out.clear();
        m.poll_events(&mut out);
        assert!(out.is_empty());
    }
}
