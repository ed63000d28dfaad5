//! A RabbitMQ publisher for tests, as the Squonk2 Account Server publishes: AMQP 0-9-1 to the
//! direct, durable exchange `event-streams`, into stream queues (`x-queue-type: stream`) bound
//! with their own name as the routing key, with publisher confirms. Streams it declares are
//! deleted when it is dropped. Included with `#[path = "common/rabbit.rs"] mod rabbit;` by the
//! tests that need it, so the others do not link lapin.

#![allow(dead_code)]

use std::net::TcpStream;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

/// The RabbitMQ the tests use: `RINGCAST_TEST_AMQP_URL`, default the local guest account.
pub fn amqp_url() -> String {
    std::env::var("RINGCAST_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// True when RabbitMQ's stream port (5552) on the test host accepts connections. Without it a
/// test prints `SKIPPED` and passes, except under `CI=true`, where this fails.
pub fn available(test: &str) -> bool {
    let host = amqp_url()
        .split('@')
        .nth(1)
        .and_then(|h| h.split([':', '/']).next())
        .unwrap_or("127.0.0.1")
        .to_owned();
    if TcpStream::connect((host.as_str(), 5552)).is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: RabbitMQ stream port 5552 on {host} not reachable under CI=true \
         (scripts/test starts RabbitMQ and enables rabbitmq_stream)"
    );
    eprintln!("SKIPPED {test}: no RabbitMQ stream port at {host}:5552");
    false
}

/// An AMQP 0-9-1 connection with one confirming channel.
pub struct Publisher {
    rt: tokio::runtime::Runtime,
    _conn: Connection,
    channel: Channel,
    streams: Vec<String>,
}

impl Publisher {
    /// Connects and declares the `event-streams` exchange.
    pub fn connect() -> Publisher {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let uri = amqp_url().replace("/%2f", "/%2F");
        let (conn, channel) = rt.block_on(async {
            let c = Connection::connect(&uri, ConnectionProperties::default())
                .await
                .expect("AMQP connect");
            let ch = c.create_channel().await.expect("channel");
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirms");
            ch.exchange_declare(
                "event-streams",
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("exchange");
            (c, ch)
        });
        Publisher {
            rt,
            _conn: conn,
            channel,
            streams: Vec::new(),
        }
    }

    /// Declares a fresh stream queue with a unique name starting with `name`, bound to
    /// `event-streams` by its name; returns the name (the routing key).
    pub fn stream(&mut self, name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let stream = format!("ringcast-test-{name}-{}-{nanos}", std::process::id());
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        self.rt.block_on(async {
            self.channel
                .queue_declare(
                    &stream,
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    args,
                )
                .await
                .expect("declare stream");
            self.channel
                .queue_bind(
                    &stream,
                    "event-streams",
                    &stream,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind");
        });
        self.streams.push(stream.clone());
        stream
    }

    /// Publishes each body with the routing key `stream` and waits for the broker's confirms.
    pub fn publish(&self, stream: &str, bodies: &[Vec<u8>]) {
        self.rt.block_on(async {
            let mut confirms = Vec::new();
            for b in bodies {
                let c = self
                    .channel
                    .basic_publish(
                        "event-streams",
                        stream,
                        BasicPublishOptions::default(),
                        b,
                        BasicProperties::default(),
                    )
                    .await
                    .expect("publish");
                confirms.push(c);
            }
            for c in confirms {
                c.await.expect("confirm");
            }
        });
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.rt.block_on(async {
            for s in &self.streams {
                let _ = self
                    .channel
                    .queue_delete(s, QueueDeleteOptions::default())
                    .await;
            }
        });
    }
}
