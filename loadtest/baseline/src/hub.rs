//! The Redis side: one pub/sub connection for the whole process, one `broadcast` channel per
//! topic, and a multiplexed connection for `PUBLISH`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::broadcast;

/// Capacity of each topic's broadcast channel. A receiver that falls further behind than this
/// skips the oldest events (tokio's `Lagged`).
const TOPIC_CAPACITY: usize = 1024;

pub struct Hub {
    /// Topics Redis has confirmed, by channel name. Read by the pub/sub reader for every event.
    topics: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
    /// The subscribing half of the pub/sub connection; the lock also makes sure a channel is
    /// subscribed in Redis only once.
    sink: tokio::sync::Mutex<PubSubSink>,
    publisher: MultiplexedConnection,
}

impl Hub {
    /// Connects to Redis and starts the task that reads the pub/sub stream.
    pub async fn connect(url: &str) -> redis::RedisResult<Arc<Hub>> {
        let client = redis::Client::open(url)?;
        let (sink, stream) = client.get_async_pubsub().await?.split();
        let publisher = client.get_multiplexed_async_connection().await?;
        let hub = Arc::new(Hub {
            topics: Mutex::new(HashMap::new()),
            sink: tokio::sync::Mutex::new(sink),
            publisher,
        });
        tokio::spawn(read_pubsub(hub.clone(), stream));
        Ok(hub)
    }

    /// A receiver for `channel`'s events. The first call for a channel subscribes in Redis and
    /// returns once Redis has confirmed it.
    pub async fn subscribe(&self, channel: &str) -> redis::RedisResult<broadcast::Receiver<Bytes>> {
        if let Some(tx) = self.topics.lock().unwrap().get(channel) {
            return Ok(tx.subscribe());
        }
        let mut sink = self.sink.lock().await;
        // Someone may have subscribed it while we waited for the lock.
        if let Some(tx) = self.topics.lock().unwrap().get(channel) {
            return Ok(tx.subscribe());
        }
        sink.subscribe(channel).await?;
        let (tx, rx) = broadcast::channel(TOPIC_CAPACITY);
        self.topics.lock().unwrap().insert(channel.to_owned(), tx);
        Ok(rx)
    }

    /// `PUBLISH channel payload`.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> redis::RedisResult<()> {
        let mut conn = self.publisher.clone();
        let _receivers: i64 = conn.publish(channel, payload).await?;
        Ok(())
    }
}

/// Forwards every Redis message into its topic's broadcast channel.
async fn read_pubsub(hub: Arc<Hub>, mut stream: PubSubStream) {
    while let Some(msg) = stream.next().await {
        let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
        if let Some(tx) = hub.topics.lock().unwrap().get(msg.get_channel_name()) {
            // An error only means nobody is subscribed right now.
            let _ = tx.send(payload);
        }
    }
    eprintln!("redis pub/sub connection closed; exiting");
    std::process::exit(1);
}
