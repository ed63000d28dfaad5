//! A few of the gateway's own counters from `GET /metrics`, read before and after the window so
//! the report can say where lost events went (a full shard inbox, a slow-consumer close, a hub
//! behind Redis). Best effort: when the scrape fails the fields are `null`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The counters the report uses (unlabelled totals over the shards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub queue_drops: u64,
    pub slow_consumer_closes: u64,
    pub redis_events_dropped: u64,
    /// Bytes read from clients since the gateway started: near 0 on a fresh gateway.
    pub bytes_in: u64,
    /// RabbitMQ stream source: chunks RabbitMQ delivered (the `ess` report's msgs per chunk).
    pub rabbit_chunks: u64,
    /// RabbitMQ stream source: messages turned into frames.
    pub rabbit_messages: u64,
    /// RabbitMQ stream source: deliveries retried because a shard inbox was full.
    pub rabbit_inbox_full_retries: u64,
    /// Open Engine.IO sessions (a gauge: `ringcast_eio_sessions`, or `eio_sessions` as the
    /// `socketio` subcommand's Python peer reports it).
    pub eio_sessions: u64,
    /// Frames queued to clients (`ringcast_messages_out_total`).
    pub messages_out: u64,
    /// Write submissions to clients (`ringcast_writes_total`).
    pub writes: u64,
    /// Of `writes`, those the shards made right after an inbox turn.
    pub direct_writes: u64,
}

impl Counters {
    /// `self - before`, per counter (saturating); gauges keep `self`'s value.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            queue_drops: self.queue_drops.saturating_sub(before.queue_drops),
            slow_consumer_closes: self
                .slow_consumer_closes
                .saturating_sub(before.slow_consumer_closes),
            redis_events_dropped: self
                .redis_events_dropped
                .saturating_sub(before.redis_events_dropped),
            bytes_in: self.bytes_in.saturating_sub(before.bytes_in),
            rabbit_chunks: self.rabbit_chunks.saturating_sub(before.rabbit_chunks),
            rabbit_messages: self.rabbit_messages.saturating_sub(before.rabbit_messages),
            rabbit_inbox_full_retries: self
                .rabbit_inbox_full_retries
                .saturating_sub(before.rabbit_inbox_full_retries),
            eio_sessions: self.eio_sessions,
            messages_out: self.messages_out.saturating_sub(before.messages_out),
            writes: self.writes.saturating_sub(before.writes),
            direct_writes: self.direct_writes.saturating_sub(before.direct_writes),
        }
    }
}

/// Fetches `/metrics` from the gateway at `addr` (`host` for the `Host` header).
pub async fn fetch(addr: SocketAddr, host: &str) -> anyhow::Result<Counters> {
    let work = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await?;
        anyhow::Ok(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .context("GET /metrics timed out")??;
    let text = String::from_utf8_lossy(&body);
    anyhow::ensure!(
        text.starts_with("HTTP/1.1 200"),
        "GET /metrics did not answer 200"
    );
    Ok(parse(&text))
}

/// Reads the counters from Prometheus text; missing ones are 0.
pub fn parse(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let v = v as u64;
        match name {
            "ringcast_queue_drops_total" => c.queue_drops = v,
            "ringcast_slow_consumer_closes_total" => c.slow_consumer_closes = v,
            "ringcast_redis_events_dropped_total" => c.redis_events_dropped = v,
            "ringcast_bytes_in_total" => c.bytes_in = v,
            "ringcast_rabbit_stream_chunks_total" => c.rabbit_chunks = v,
            "ringcast_rabbit_stream_messages_total" => c.rabbit_messages = v,
            "ringcast_rabbit_stream_inbox_full_retries_total" => c.rabbit_inbox_full_retries = v,
            "ringcast_eio_sessions" | "eio_sessions" => c.eio_sessions = v,
            "ringcast_messages_out_total" => c.messages_out = v,
            "ringcast_writes_total" => c.writes = v,
            "ringcast_direct_writes_total" => c.direct_writes = v,
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_totals_only() {
        let text = "# HELP ringcast_queue_drops_total x\n# TYPE ringcast_queue_drops_total counter\n\
                    ringcast_queue_drops_total 12\nringcast_shard_queue_drops_total{shard=\"0\"} 12\n\
                    ringcast_slow_consumer_closes_total 3\nringcast_connections 5\n\
                    ringcast_bytes_in_total 1e3\nringcast_eio_sessions 7\n\
                    ringcast_messages_out_total 900\nringcast_writes_total 30\n\
                    ringcast_direct_writes_total 20\n";
        let c = parse(text);
        assert_eq!(
            c,
            Counters {
                queue_drops: 12,
                slow_consumer_closes: 3,
                redis_events_dropped: 0,
                bytes_in: 1000,
                eio_sessions: 7,
                messages_out: 900,
                writes: 30,
                direct_writes: 20,
                ..Counters::default()
            }
        );
        let later = Counters {
            queue_drops: 20,
            ..c
        };
        assert_eq!(later.since(&c).queue_drops, 8);
    }
}
