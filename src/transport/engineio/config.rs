//! The Engine.IO knobs of one route: what the open packet announces and the session's bounds.
//!
//! Pure values, built by main from the route's configuration and read by the shard that owns a
//! session. The defaults are the engine.io / python-engineio defaults that the SuperDARN server
//! ran with (COMPAT 5.1): ping every 25 s, 20 s for the pong, 1 MB payloads.
//!
//! Invariants: every duration is above zero and `max_payload_bytes` is at least
//! [`MIN_PAYLOAD_BYTES`]; [`EioConfig::validate`] checks it for the config layer.

use std::time::Duration;

/// The smallest `max_payload_bytes` accepted: room for an open packet and a namespace reply.
pub const MIN_PAYLOAD_BYTES: usize = 1_024;

/// Per-route Engine.IO settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EioConfig {
    /// How long after the open packet (or the last pong) the server sends a ping (`2`).
    /// Default 25 s. Announced as `pingInterval`. Shorter finds dead clients sooner at the cost
    /// of more traffic (and, over polling, more GET round trips).
    pub ping_interval: Duration,
    /// How long after a ping the client has to answer with a pong (`3`) before the session is
    /// closed. Default 20 s. Announced as `pingTimeout`.
    pub ping_timeout: Duration,
    /// The largest POST body accepted (python-engineio's `max_http_buffer_size`), and the
    /// `maxPayload` announced in the open packet. Default 1_000_000 bytes. A larger body is a
    /// client error: 400 and the session is closed.
    pub max_payload_bytes: usize,
    /// Bound on the bytes of encoded packets queued for one session's next GET (or its
    /// WebSocket): the sum of the packets' lengths plus one separator each. Default 1_000_000
    /// bytes, the same as `maxPayload`, so one GET body never exceeds what the client accepts.
    /// Overflow policy: the session is closed (see `session.rs` and docs/BACKPRESSURE.md).
    pub max_buffered_bytes: usize,
    /// Bound on the number of packets queued for one session. Default 4_096. Keeps the
    /// `VecDeque` small when a stalled client receives many tiny packets; overflow closes the
    /// session like `max_buffered_bytes` does.
    pub max_buffered_packets: usize,
    /// How long a polling session may go without a GET in progress before it is closed
    /// (python-engineio closes after `ping_interval + ping_timeout`). Default 45 s.
    pub max_poll_gap: Duration,
    /// How long the upgrade may take from the WebSocket's arrival to its `5` packet before that
    /// WebSocket is closed and the session stays on polling (engine.io's `upgradeTimeout`).
    /// Default 10 s.
    pub upgrade_timeout: Duration,
    /// Whether a polling session is offered the upgrade to WebSocket (`"upgrades":["websocket"]`
    /// in its open packet). Default true.
    pub allow_upgrades: bool,
}

impl Default for EioConfig {
    fn default() -> Self {
        EioConfig {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload_bytes: 1_000_000,
            max_buffered_bytes: 1_000_000,
            max_buffered_packets: 4_096,
            max_poll_gap: Duration::from_millis(45_000),
            upgrade_timeout: Duration::from_millis(10_000),
            allow_upgrades: true,
        }
    }
}

impl EioConfig {
    /// Checks the invariants; the error names the knob and says what is wrong (the operator's
    /// fault).
    pub fn validate(&self) -> Result<(), String> {
        let durations = [
            ("ping-interval", self.ping_interval),
            ("ping-timeout", self.ping_timeout),
            ("max-poll-gap", self.max_poll_gap),
            ("upgrade-timeout", self.upgrade_timeout),
        ];
        for (knob, d) in durations {
            if d.is_zero() {
                return Err(format!("{knob} must be above zero"));
            }
        }
        if self.max_payload_bytes < MIN_PAYLOAD_BYTES {
            return Err(format!(
                "max-payload must be at least {MIN_PAYLOAD_BYTES} bytes"
            ));
        }
        if self.max_buffered_bytes < MIN_PAYLOAD_BYTES || self.max_buffered_packets == 0 {
            return Err(format!(
                "the session queue needs at least {MIN_PAYLOAD_BYTES} bytes and one packet"
            ));
        }
        Ok(())
    }

    /// `ping_interval` in whole milliseconds, as the open packet announces it.
    pub fn ping_interval_ms(&self) -> u64 {
        u64::try_from(self.ping_interval.as_millis()).unwrap_or(u64::MAX)
    }

    /// `ping_timeout` in whole milliseconds, as the open packet announces it.
    pub fn ping_timeout_ms(&self) -> u64 {
        u64::try_from(self.ping_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_engineio_defaults_and_valid() {
        let c = EioConfig::default();
        assert_eq!(c.ping_interval_ms(), 25_000);
        assert_eq!(c.ping_timeout_ms(), 20_000);
        assert_eq!(c.max_payload_bytes, 1_000_000);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn zero_and_tiny_values_are_refused() {
        let c = EioConfig {
            ping_timeout: Duration::ZERO,
            ..EioConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("ping-timeout"));
        let c = EioConfig {
            max_payload_bytes: 10,
            ..EioConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("max-payload"));
        let c = EioConfig {
            max_buffered_packets: 0,
            ..EioConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
