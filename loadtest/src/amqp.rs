//! The `ess` scenario's publisher: AMQP 0-9-1 with lapin, as the Squonk2 Account Server
//! publishes. It declares the direct, durable exchange `event-streams`, a fresh stream queue
//! (`x-queue-type: stream`) bound to it with its own name as the routing key, and publishes
//! with publisher confirms, at most [`CONFIRM_WINDOW`] unconfirmed at a time. Owned by the
//! load test's tokio runtime (lapin runs its own I/O thread besides).

use std::collections::VecDeque;

use anyhow::Context;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::publisher_confirm::PublisherConfirm;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

/// The exchange the Account Server publishes to.
pub const EXCHANGE: &str = "event-streams";
/// Unconfirmed publishes allowed at once (default 8,192 messages): enough to keep RabbitMQ
/// busy, few enough that lapin's buffers stay small.
const CONFIRM_WINDOW: usize = 8_192;

/// `url` with `%2F` for an empty vhost (`amqp://host/` and `amqp://host`).
fn default_vhost(url: &str) -> String {
    let authority_end = url
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| url[start..].find('/').map(|i| start + i));
    match authority_end {
        None => format!("{url}/%2F"),
        Some(i) if url[i + 1..].is_empty() || url[i + 1..].starts_with('?') => {
            format!("{}/%2F{}", &url[..i], &url[i + 1..])
        }
        Some(_) => url.to_owned(),
    }
}

/// One AMQP connection with one confirming channel.
pub struct Publisher {
    conn: Connection,
    channel: Channel,
}

impl Publisher {
    /// Connects to `url` (`amqp://user:pass@host[:port]/[vhost]`) and declares the exchange.
    /// An empty vhost means `/`, as for the gateway's `ESS_AMPQ_URL` (lapin would ask for "").
    pub async fn connect(url: &str) -> anyhow::Result<Publisher> {
        let url = default_vhost(url);
        let url = url.as_str();
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .with_context(|| format!("AMQP connect to {url}"))?;
        let channel = conn.create_channel().await.context("AMQP channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("confirm.select")?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                EXCHANGE,
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
            .context("declaring the event-streams exchange")?;
        Ok(Publisher { conn, channel })
    }

    /// Declares the stream queue `name` and binds it to the exchange by its name.
    pub async fn declare_stream(&self, name: &str) -> anyhow::Result<()> {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(name, durable, args)
            .await
            .with_context(|| format!("declaring stream {name}"))?;
        self.channel
            .queue_bind(
                name,
                EXCHANGE,
                name,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("binding the stream")?;
        Ok(())
    }

    /// Publishes `count` bodies made by `body(i)` with routing key `stream`, as fast as the
    /// broker confirms them; returns when every one is confirmed.
    pub async fn publish(
        &self,
        stream: &str,
        count: u64,
        mut body: impl FnMut(u64) -> Vec<u8>,
    ) -> anyhow::Result<()> {
        let mut pending: VecDeque<PublisherConfirm> = VecDeque::new();
        for i in 0..count {
            if pending.len() >= CONFIRM_WINDOW
                && let Some(c) = pending.pop_front()
            {
                c.await.context("publisher confirm")?;
            }
            let c = self
                .channel
                .basic_publish(
                    EXCHANGE,
                    stream,
                    BasicPublishOptions::default(),
                    &body(i),
                    BasicProperties::default(),
                )
                .await
                .context("basic.publish")?;
            pending.push_back(c);
        }
        for c in pending {
            c.await.context("publisher confirm")?;
        }
        Ok(())
    }

    /// Deletes the stream queue `name` (its messages go with it) and closes the connection.
    pub async fn delete_and_close(self, name: &str) -> anyhow::Result<()> {
        self.channel
            .queue_delete(name, QueueDeleteOptions::default())
            .await
            .with_context(|| format!("deleting stream {name}"))?;
        let _ = self.conn.close(200, "done").await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_vhost_is_the_default_one() {
        let d = |u| default_vhost(u);
        assert_eq!(d("amqp://g:g@127.0.0.1/"), "amqp://g:g@127.0.0.1/%2F");
        assert_eq!(d("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672/%2F");
        assert_eq!(d("amqp://h/?heartbeat=5"), "amqp://h/%2F?heartbeat=5");
        assert_eq!(d("amqp://h/%2F"), "amqp://h/%2F");
        assert_eq!(d("amqp://h/squonk"), "amqp://h/squonk");
    }
}
