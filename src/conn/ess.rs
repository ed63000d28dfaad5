//! The WebSocket upgrade on a Squonk2 `ess` route (COMPAT.md 6.2, rows Q2, Q3, Q6): the
//! original's order of checks, then a replay consumer of the event stream's RabbitMQ stream.
//!
//! 1. `stream_from_ordinal` / `stream_from_timestamp` that are not integers: HTTP 403, before
//!    the accept (FastAPI's validation);
//! 2. the accept (101);
//! 3. more than one `stream_from_*`, or a datetime that does not parse: close 1002;
//! 4. a uuid the registry does not know: close 1000 `Connect for unknown EventStream <uuid>`;
//! 5. a stream RabbitMQ does not have: close 1013 (the replay source's `NotFound`);
//! 6. otherwise a consumer of the stream named by the routing key, which ends any older socket
//!    of the same routing key (close 1000 `The stream has been deleted`).
//!
//! Thread: the shard that owns the connection; the registry lookup is awaited with no borrow
//! of the shard held.

use bytes::Bytes;

use super::ConnKind;
use super::io::{Next, Step, finish_error};
use crate::http;
use crate::profile::squonk2::{self, StreamFrom};
use crate::router::Format;
use crate::router::table::ConnKey;
use crate::rt::TcpStream;
use crate::shard::ShardRef;
use crate::ws::handshake;

/// Upgrades a request that matched the `ess` route `index`.
pub(super) async fn upgrade(
    shard: &ShardRef,
    key: ConnKey,
    stream: &TcpStream,
    req: &http::Request<'_>,
    index: usize,
    pending: &[u8],
) -> Step {
    let param = |name| req.query_param(name).map(|v| v.into_owned());
    let (ordinal, timestamp, datetime) = (
        param("stream_from_ordinal"),
        param("stream_from_timestamp"),
        param("stream_from_datetime"),
    );
    let from = StreamFrom {
        ordinal: ordinal.as_deref(),
        timestamp: timestamp.as_deref(),
        datetime: datetime.as_deref(),
    };
    let (ordinal, timestamp) = match from.validate() {
        Ok(v) => v,
        Err(e) => return finish_error(shard, stream, 403, &e.to_string()).await,
    };
    let uuid = String::from_utf8_lossy(&crate::profile::last_segment(req.path)).into_owned();
    let response = match handshake::accept(req) {
        Ok(r) => r,
        Err(e) => return finish_error(shard, stream, 400, &e.to_string()).await,
    };
    let kind = ConnKind::Route {
        route: u16::try_from(index).unwrap_or(u16::MAX),
        format: Format::Json,
    };
    shard.borrow_mut().upgraded(key, kind);
    let leftover = pending[req.head_len..].to_vec();
    if stream
        .write_all(Bytes::from(response.to_vec()))
        .await
        .is_err()
    {
        return Step::Finish(Next::Done);
    }
    let start = match from.start(ordinal, timestamp) {
        Ok(start) => start,
        Err((code, reason)) => {
            shard.borrow_mut().close_with(key, code, reason);
            return Step::Finish(Next::Upgrade(leftover));
        }
    };
    let pending = shard
        .borrow()
        .registry(index)
        .cloned()
        .map(|r| r.lookup(uuid.clone()));
    let found = match pending {
        Some(Ok(pending)) => pending.await,
        Some(Err(e)) => Err(e),
        None => {
            shard
                .borrow_mut()
                .close_with(key, 1011, "no event stream registry");
            return Step::Finish(Next::Upgrade(leftover));
        }
    };
    match found {
        Ok(Some(es)) => shard
            .borrow_mut()
            .replay_subscribe(key, es.routing_key, start, &uuid),
        Ok(None) => shard
            .borrow_mut()
            .close_with(key, 1000, &squonk2::unknown_reason(&uuid)),
        Err(e) => {
            tracing::warn!(uuid, error = %e, "event stream lookup failed");
            shard
                .borrow_mut()
                .close_with(key, 1011, "event stream registry unavailable");
        }
    }
    Step::Finish(Next::Upgrade(leftover))
}
