//! Executes native-protocol v1 messages for one connection against its shard.

use bytes::Bytes;

use crate::protocol::{
    AckOp, Command, ErrorCode, RequestId, parse_command, render_ack, render_error, render_pong,
};
use crate::router::TopicKind;
use crate::router::table::ConnKey;
use crate::shard::Shard;

/// Handles one text message from a native client: a command, answered with an ack or an error.
/// A malformed or unknown command gets an error reply; the connection stays open.
///
/// With `command-rate`, every message takes a token from the connection's bucket; one that
/// finds it empty is not run and gets the `rate_limited` error (with its id, when it has one).
pub fn handle_text(shard: &mut Shard, key: ConnKey, text: &[u8]) {
    // Test hook, debug builds only (the test suite's binary): a panic inside one connection's
    // handling, to show that only that connection is lost (tests/fault_panic.rs).
    #[cfg(debug_assertions)]
    if text == DEBUG_PANIC {
        panic!("debug hook: {{\"op\":\"debug_panic\"}}");
    }
    let allowed = within_rate(shard, key);
    let mut scratch = text.to_vec();
    let reply = match parse_command(&mut scratch) {
        Ok(req) if !allowed => rate_limited(req.id.as_ref()),
        Err(e) if !allowed => rate_limited(e.id.as_ref()),
        Ok(req) => execute(shard, key, req.id.as_ref(), req.command),
        Err(e) => render_error(e.id.as_ref(), e.code, &e.message),
    };
    // Replies that were already queued in order (watch acks) come back empty.
    if !reply.is_empty() {
        shard.send_text(key, &reply);
    }
}

/// The message that panics its connection's handling in debug builds (a test hook; release
/// builds answer it as an unknown op).
pub const DEBUG_PANIC: &[u8] = br#"{"op":"debug_panic"}"#;
/// Takes a token for one command; false (counted) when `command-rate` is exhausted.
fn within_rate(shard: &mut Shard, key: ConnKey) -> bool {
    let Some(rate) = shard.config.command_rate else {
        return true;
    };
    let now = crate::limits::clock_ns();
    let allowed = shard
        .conns
        .get_mut(key)
        .is_none_or(|conn| conn.commands.take(rate, now));
    if !allowed {
        shard
            .stats()
            .refused
            .inc(crate::limits::Refusal::CommandRate);
    }
    allowed
}

fn rate_limited(id: Option<&RequestId>) -> String {
    render_error(
        id,
        ErrorCode::RateLimited,
        "command rate exceeded; slow down",
    )
}

/// Subscribes to channels (`?subscribe=a,b`) or watches keys (`?watch=k`) named in the URL at
/// connect time. Each one is acknowledged (JSON format only); the first refused name gets an
/// error reply and ends the list, so a hostile URL cannot queue thousands of errors.
///
/// Channel acks and errors are appended to `out` as complete frames, to go out in the same
/// write as the 101 response: an idle connection then never needs its outbox or a second write.
pub fn subscribe_from_url(
    shard: &mut Shard,
    key: ConnKey,
    kind: TopicKind,
    list: &str,
    acks: bool,
    out: &mut Vec<u8>,
) {
    let mut frames = 0;
    let mut reply = |text: &str| {
        let mut frame = crate::ws::frame::FrameBuilder::with_capacity(text.len());
        frame.payload().extend_from_slice(text.as_bytes());
        out.extend_from_slice(&frame.finish(crate::ws::frame::OpCode::Text));
        frames += 1;
    };
    for name in list.split(',').filter(|c| !c.is_empty()) {
        let kind = if kind.is_key() {
            TopicKind::for_key(name.as_bytes())
        } else {
            kind
        };
        match subscribe(shard, key, kind, name, None) {
            Ok(ack) if acks && !ack.is_empty() => reply(&ack),
            Ok(_) => {}
            Err(error) => {
                reply(&error);
                break;
            }
        }
    }
    shard.stats().messages_out.add(frames);
}

fn execute(shard: &mut Shard, key: ConnKey, id: Option<&RequestId>, cmd: Command) -> String {
    match cmd {
        Command::Subscribe {
            channel,
            snapshot: None,
        } => subscribe(shard, key, TopicKind::Channel, &channel, id).unwrap_or_else(|e| e),
        Command::Subscribe {
            channel,
            snapshot: Some(snapshot),
        } => {
            if !shard.metrics().redis_configured {
                return unsupported(id, "snapshot");
            }
            if !shard.allowed(key, TopicKind::Key, &snapshot) {
                return forbidden(id, "read the snapshot of", &snapshot);
            }
            match subscribe(shard, key, TopicKind::Channel, &channel, id) {
                Ok(ack) => {
                    // The ack goes first; the snapshot follows before any event.
                    shard.send_text(key, &ack);
                    shard.request_snapshot(key, Bytes::from(snapshot), false);
                    String::new()
                }
                Err(e) => e,
            }
        }
        Command::Watch { key: name } => {
            let kind = TopicKind::for_key(name.as_bytes());
            subscribe(shard, key, kind, &name, id).unwrap_or_else(|e| e)
        }
        Command::Unwatch { key: name } => {
            unsubscribe(shard, key, TopicKind::for_key(name.as_bytes()), &name, id)
        }
        Command::Psubscribe { pattern } => {
            subscribe(shard, key, TopicKind::Pattern, &pattern, id).unwrap_or_else(|e| e)
        }
        Command::Unsubscribe { channel } => {
            unsubscribe(shard, key, TopicKind::Channel, &channel, id)
        }
        Command::Punsubscribe { pattern } => {
            unsubscribe(shard, key, TopicKind::Pattern, &pattern, id)
        }
        Command::Ping => render_pong(id),
        Command::Refresh { token } => shard.refresh(key, &token, id),
    }
}

/// A `?snapshot=K` in the URL: the key's current value before any event, when the name is
/// valid, a Redis source serves it and the grants allow watching it; a refused key gets a
/// `forbidden` error frame in `out`.
pub fn snapshot_from_url(shard: &mut Shard, key: ConnKey, name: String, out: &mut Vec<u8>) {
    if crate::protocol::check_topic(&name).is_err() || !shard.metrics().redis_configured {
        return;
    }
    if !shard.allowed(key, TopicKind::Key, &name) {
        let error = forbidden(None, "read the snapshot of", &name);
        let mut frame = crate::ws::frame::FrameBuilder::with_capacity(error.len());
        frame.payload().extend_from_slice(error.as_bytes());
        out.extend_from_slice(&frame.finish(crate::ws::frame::OpCode::Text));
        shard.stats().messages_out.inc();
        return;
    }
    shard.request_snapshot(key, Bytes::from(name), false);
}

/// The `forbidden` error reply for a name the grants do not cover.
fn forbidden(id: Option<&RequestId>, what: &str, name: &str) -> String {
    render_error(
        id,
        ErrorCode::Forbidden,
        &format!("not allowed to {what} {name:?}"),
    )
}

fn subscribe(
    shard: &mut Shard,
    key: ConnKey,
    kind: TopicKind,
    name: &str,
    id: Option<&RequestId>,
) -> Result<String, String> {
    if kind.is_key() && !shard.metrics().redis_configured {
        return Err(unsupported(id, "watch"));
    }
    if let Err(e) = crate::protocol::check_topic(name) {
        return Err(render_error(
            id,
            ErrorCode::BadChannel,
            &format!("name {e}"),
        ));
    }
    if !shard.allowed(key, kind, name) {
        let what = match kind {
            TopicKind::Channel | TopicKind::Pattern => "subscribe to",
            TopicKind::Key | TopicKind::KeyPattern => "watch",
        };
        return Err(forbidden(id, what, name));
    }
    let topic = Bytes::copy_from_slice(name.as_bytes());
    match shard.subscribe(key, kind, &topic) {
        Ok(()) => {
            let ack = render_ack(ack(kind, true), name, id);
            if kind == TopicKind::Key {
                // The ack first, then the current value, then every change.
                shard.send_text(key, &ack);
                shard.request_snapshot(key, topic, true);
                return Ok(String::new());
            }
            Ok(ack)
        }
        Err("too_many_subscriptions") => Err(render_error(
            id,
            ErrorCode::TooManySubscriptions,
            &format!(
                "at most {} subscriptions per connection",
                shard.config.max_subscriptions
            ),
        )),
        Err(_) => Err(render_error(
            id,
            ErrorCode::Internal,
            "connection is closing",
        )),
    }
}

fn unsubscribe(
    shard: &mut Shard,
    key: ConnKey,
    kind: TopicKind,
    name: &str,
    id: Option<&RequestId>,
) -> String {
    if shard.unsubscribe(key, kind, name.as_bytes()) {
        render_ack(ack(kind, false), name, id)
    } else {
        render_error(
            id,
            ErrorCode::NotSubscribed,
            &format!("not subscribed to {name:?}"),
        )
    }
}

fn ack(kind: TopicKind, subscribe: bool) -> AckOp {
    match (kind, subscribe) {
        (TopicKind::Channel, true) => AckOp::Subscribed,
        (TopicKind::Channel, false) => AckOp::Unsubscribed,
        (TopicKind::Pattern, true) => AckOp::Psubscribed,
        (TopicKind::Pattern, false) => AckOp::Punsubscribed,
        (TopicKind::Key | TopicKind::KeyPattern, true) => AckOp::Watched,
        (TopicKind::Key | TopicKind::KeyPattern, false) => AckOp::Unwatched,
    }
}

fn unsupported(id: Option<&RequestId>, what: &str) -> String {
    render_error(
        id,
        ErrorCode::Internal,
        &format!("{what} needs a Redis source (start with --redis)"),
    )
}
