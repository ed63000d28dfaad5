//! One WebSocket connection: subscriptions at connect time, client commands, and events.
//!
//! Every connection task formats its own copy of each event's JSON and sends it with one
//! `send` (write + flush) per message: the straightforward design.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::hub::Hub;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// A reply to a command, or a URL subscription's ack (no id).
#[derive(Serialize)]
struct Reply<'a> {
    op: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

impl<'a> Reply<'a> {
    fn ok(op: &'a str, channel: Option<&'a str>, id: Option<&'a RawValue>) -> Self {
        Reply {
            op,
            channel,
            id,
            code: None,
            message: None,
        }
    }

    fn error(id: Option<&'a RawValue>, code: &'a str, message: &'a str) -> Self {
        Reply {
            op: "error",
            channel: None,
            id,
            code: Some(code),
            message: Some(message),
        }
    }

    fn to_message(&self) -> Message {
        Message::text(serde_json::to_string(self).expect("a reply always serializes"))
    }
}

#[derive(Serialize)]
struct Event<'a, D> {
    channel: &'a str,
    data: D,
}

/// `{"channel":…,"data":…}`: a payload that is one valid JSON value is embedded as is, anything
/// else becomes a JSON string (invalid UTF-8 replaced).
fn event_json(channel: &str, payload: &[u8]) -> String {
    let raw = std::str::from_utf8(payload)
        .ok()
        .and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
    match raw {
        Some(data) => serde_json::to_string(&Event { channel, data }),
        None => serde_json::to_string(&Event {
            channel,
            data: String::from_utf8_lossy(payload),
        }),
    }
    .expect("an event always serializes")
}

pub async fn run(mut ws: Ws, hub: Arc<Hub>, initial: Vec<String>) {
    let mut subs: StreamMap<String, BroadcastStream<Bytes>> = StreamMap::new();

    for channel in initial {
        let reply = match subscribe(&hub, &mut subs, &channel).await {
            Ok(()) => Reply::ok("subscribed", Some(&channel), None).to_message(),
            Err(e) => Reply::error(None, "internal", &e).to_message(),
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }

    loop {
        tokio::select! {
            incoming = ws.next() => {
                let reply = match incoming {
                    Some(Ok(Message::Text(text))) => {
                        handle_command(&hub, &mut subs, text.as_str()).await
                    }
                    Some(Ok(Message::Binary(_))) => {
                        Reply::error(None, "bad_json", "binary messages are not commands")
                            .to_message()
                    }
                    // Pings are answered and closes echoed by tungstenite itself.
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return,
                };
                if ws.send(reply).await.is_err() {
                    return;
                }
            }
            Some((channel, event)) = subs.next(), if !subs.is_empty() => {
                // A lagging receiver skips what it missed.
                let Ok(payload) = event else { continue };
                let text = event_json(&channel, &payload);
                if ws.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn subscribe(
    hub: &Hub,
    subs: &mut StreamMap<String, BroadcastStream<Bytes>>,
    channel: &str,
) -> Result<(), String> {
    if subs.contains_key(channel) {
        return Ok(());
    }
    let rx = hub
        .subscribe(channel)
        .await
        .map_err(|e| format!("redis subscribe failed: {e}"))?;
    subs.insert(channel.to_owned(), BroadcastStream::new(rx));
    Ok(())
}

/// Handles one text command and returns the reply.
async fn handle_command(
    hub: &Hub,
    subs: &mut StreamMap<String, BroadcastStream<Bytes>>,
    text: &str,
) -> Message {
    // Members by name, values as their raw text (so the id is echoed verbatim; last one wins).
    let Ok(fields) = serde_json::from_str::<HashMap<String, &RawValue>>(text) else {
        return Reply::error(None, "bad_json", "message is not a JSON object").to_message();
    };
    let id = fields.get("id").copied().filter(|id| {
        let first = id.get().as_bytes()[0];
        first == b'"' || first == b'-' || first.is_ascii_digit()
    });
    let string_field = |name: &str| -> Option<String> {
        fields
            .get(name)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    };
    let Some(op) = string_field("op") else {
        return Reply::error(id, "missing_field", "\"op\" must be a string").to_message();
    };
    match op.as_str() {
        "ping" => Reply::ok("pong", None, id).to_message(),
        "subscribe" | "unsubscribe" => {
            let Some(channel) = string_field("channel") else {
                return Reply::error(id, "missing_field", "\"channel\" must be a string")
                    .to_message();
            };
            if channel.is_empty() {
                return Reply::error(id, "bad_channel", "\"channel\" must not be empty")
                    .to_message();
            }
            if op == "subscribe" {
                match subscribe(hub, subs, &channel).await {
                    Ok(()) => Reply::ok("subscribed", Some(&channel), id).to_message(),
                    Err(e) => Reply::error(id, "internal", &e).to_message(),
                }
            } else if subs.remove(&channel).is_some() {
                Reply::ok("unsubscribed", Some(&channel), id).to_message()
            } else {
                Reply::error(id, "not_subscribed", "not subscribed to that channel").to_message()
            }
        }
        _ => Reply::error(id, "unknown_op", "unknown op").to_message(),
    }
}
