//! A single Redis's pub/sub connection read on a shard's own runtime (decision 0017).
//!
//! The subscriber thread still connects, hands-shakes, resubscribes and reconnects (all of it
//! blocking, with backoff), and keeps the write side for `SUBSCRIBE`, `UNSUBSCRIBE` and `PING`.
//! Once subscribed it hands the read side to a shard ([`ShardRead`], through the shard's inbox)
//! and only supervises: it pings after `PING_WHEN_IDLE` of silence, reports a stall after
//! `REPLY_DEADLINE` ([`Liveness`], as when the thread reads), and reconnects when the shard
//! reports the connection's end.
//!
//! On the shard, a task reads whatever the socket has, decodes it with the same code as the
//! thread ([`Pushes`]), routes it under the hub's lock through the [`HubDoor`], and delivers
//! what the shard itself got at once ([`OwnInbox::route`]): an event to this shard's clients
//! crosses no thread and writes no eventfd. Other shards are woken as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::{RecvTimeoutError, SendTimeoutError, Sender, bounded};

use super::conn::{MAX_REPLY_BYTES, RedisConn, RedisError};
use super::resp::{self, DecodeError, Proto};
use super::subscriber::{BATCH, Control, Liveness, Pushes, SubShared, TICK, hand_over_to};
use crate::metrics::Metrics;
use crate::router::hub::{HubDoor, ShardLink};
use crate::router::{ShardMsg, UpstreamMsg};
use crate::rt::{ReadOutcome, TcpStream};
use crate::shard::run::OwnInbox;
use crate::source::{ShardReader, SourceInput};

/// How long the subscriber thread waits for room in the shard's inbox to hand the connection
/// over before it gives up and reconnects.
const HANDOVER_WAIT: Duration = Duration::from_secs(5);

/// Bytes read from the socket before what was read is decoded and routed (one turn's worth).
const READ_AHEAD: usize = 256 * 1024;

/// When the shard last read anything from the connection, for the supervisor's pings.
#[derive(Debug)]
struct Heard {
    base: Instant,
    /// Nanoseconds since `base`.
    at: AtomicU64,
}

impl Heard {
    fn new() -> Heard {
        Heard {
            base: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.at.store(ns, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.at.load(Ordering::Relaxed))
    }
}

/// The read side of a subscribed connection, on its way to a shard.
pub struct ShardRead {
    stream: std::net::TcpStream,
    /// Bytes read during the handshake and not decoded yet.
    buf: BytesMut,
    proto: Proto,
    index: usize,
    hub: Sender<UpstreamMsg>,
    door: HubDoor,
    metrics: Arc<Metrics>,
    heard: Arc<Heard>,
    /// Why the connection ended, for the subscriber thread (capacity 1, sent once).
    done: Sender<RedisError>,
}

impl std::fmt::Debug for ShardRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRead")
            .field("source", &self.index)
            .finish_non_exhaustive()
    }
}

impl ShardReader for ShardRead {
    fn start(
        self: Box<Self>,
        inbox: OwnInbox,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        Box::pin(self.run(inbox))
    }
}

impl ShardRead {
    async fn run(self: Box<Self>, inbox: OwnInbox) {
        let ShardRead {
            stream,
            mut buf,
            proto,
            index,
            hub,
            door,
            metrics,
            heard,
            done,
        } = *self;
        let err = match TcpStream::from_std_reader(stream) {
            Ok(stream) => {
                let mut reader = Reader {
                    pushes: Pushes::new(index, &metrics),
                    batch: Vec::new(),
                    hub: &hub,
                    door: &door,
                    metrics: &metrics,
                    inbox: &inbox,
                };
                let err = reader.read(&stream, &mut buf, proto, &heard).await;
                reader.route().await;
                // Both descriptors must close for Redis to see the end: make sure it does.
                stream.shutdown();
                err
            }
            Err(e) => RedisError::Io(e),
        };
        let _ = done.try_send(err);
    }
}

struct Reader<'a> {
    pushes: Pushes<'a>,
    batch: Vec<SourceInput>,
    hub: &'a Sender<UpstreamMsg>,
    door: &'a HubDoor,
    metrics: &'a Metrics,
    inbox: &'a OwnInbox,
}

impl Reader<'_> {
    /// Reads and routes until the connection fails; returns why.
    async fn read(
        &mut self,
        stream: &TcpStream,
        buf: &mut BytesMut,
        proto: Proto,
        heard: &Heard,
    ) -> RedisError {
        let mut eof = false;
        loop {
            loop {
                match resp::decode(proto, buf) {
                    Ok(Some(value)) => match self.pushes.take(value, proto, &mut |_: Control| {}) {
                        Ok(Some(input)) => self.batch.push(input),
                        Ok(None) => {}
                        Err(e) => return e,
                    },
                    Ok(None) => break,
                    Err(e) => return RedisError::Protocol(e),
                }
                if self.batch.len() >= BATCH {
                    self.route().await;
                }
            }
            let routed_any = !self.batch.is_empty();
            self.route().await;
            if eof {
                // What came with the end is routed; report it.
                return RedisError::Closed;
            }
            if routed_any {
                // Let the write loops and the inbox loop run before the next read: at
                // saturation what arrives meanwhile comes in one read, and the writers get
                // several frames a write.
                tokio::task::yield_now().await;
            }
            if buf.len() > MAX_REPLY_BYTES {
                return RedisError::Protocol(DecodeError::too_large());
            }
            let outcome = stream
                .read_available(&mut |data| {
                    buf.extend_from_slice(data);
                    buf.len() < READ_AHEAD
                })
                .await;
            heard.mark();
            eof = outcome == ReadOutcome::Eof;
        }
    }

    /// Routes the batch: under the hub's lock when the hub runs, this shard's share delivered
    /// at once; else on the hub's channel, never waiting for room.
    async fn route(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let (door, batch) = (self.door, &mut self.batch);
        let lone = batch.len() == 1;
        let routed = self.inbox.route(lone, || door.route(batch)).await;
        if !routed {
            hand_over_to(batch, self.hub, None, self.metrics, false);
        }
    }
}

/// How a connection read on a shard ended.
pub(super) enum Ended {
    /// The connection failed (or the shard could not take it in time): reconnect.
    Lost(RedisError),
    /// The shard has stopped (the process is shutting down): the subscriber thread ends.
    ShardGone,
}

/// On the subscriber thread: hands `conn`'s read side to `shard` and supervises it until the
/// shard reports its end; returns how it ended. `stalled` hears a stall and its end.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_on_shard(
    conn: RedisConn,
    shard: &ShardLink,
    shared: &SubShared,
    hub: &Sender<UpstreamMsg>,
    door: &HubDoor,
    metrics: &Arc<Metrics>,
    index: usize,
    stalled: &mut dyn FnMut(bool),
) -> Ended {
    let (stream, buf, proto) = conn.into_parts();
    let (done_tx, done_rx) = bounded(1);
    let heard = Arc::new(Heard::new());
    heard.mark();
    let reader = ShardRead {
        stream,
        buf,
        proto,
        index,
        hub: hub.clone(),
        door: door.clone(),
        metrics: metrics.clone(),
        heard: heard.clone(),
        done: done_tx,
    };
    match shard
        .tx
        .send_timeout(ShardMsg::Read(Box::new(reader)), HANDOVER_WAIT)
    {
        Ok(()) => {}
        Err(SendTimeoutError::Disconnected(_)) => return Ended::ShardGone,
        Err(SendTimeoutError::Timeout(_)) => {
            return Ended::Lost(RedisError::Io(std::io::Error::other(
                "the shard that reads this source did not take the connection (its inbox stayed full)",
            )));
        }
    }
    shard.wake.wake();
    let mut live = Liveness::new();
    loop {
        match done_rx.recv_timeout(TICK) {
            Ok(err) => return Ended::Lost(err),
            // The reading task was dropped with its shard's runtime.
            Err(RecvTimeoutError::Disconnected) => return Ended::ShardGone,
            Err(RecvTimeoutError::Timeout) => {}
        }
        live.heard(heard.last(), stalled);
        live.tick(&|| shared.ping(), stalled);
    }
}
