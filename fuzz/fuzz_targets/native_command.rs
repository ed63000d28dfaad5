//! Arbitrary bytes as a text message from a native-protocol client, through the command parser
//! (`protocol::parse_command`: serde_json into raw members, then the checks) and the JSON
//! validator it shares with event rendering (`protocol::is_json`: a first-byte check, then
//! serde_json's `IgnoredAny`), checked against `serde_json` parsing a `Value`:
//! - `is_json` agrees with it, except where a `Value` is narrower on purpose (numbers out of
//!   `f64` range, unpaired surrogate escapes, its recursion limit);
//! - text that is not JSON is a `bad_json` error; a JSON object never is; the parser never
//!   reports an internal error;
//! - a parsed command names the `op`, topic and `id` serde_json reads from the same text;
//! - the Preflight/Status message classifier and the topic check do not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::protocol::command::{Command, ErrorCode, check_topic, parse_command};
use ringcast::protocol::is_json;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let ours = is_json(data);
    let theirs = serde_json::from_slice::<Value>(data);
    match (&theirs, ours) {
        (Ok(_), true) | (Err(_), false) => {}
        (Ok(_), false) => panic!("is_json refuses JSON that serde_json reads"),
        (Err(e), true) => {
            let why = e.to_string();
            assert!(
                [
                    "number out of range",
                    "recursion limit exceeded",
                    "lone leading surrogate",
                    "unexpected end of hex escape",
                ]
                .iter()
                .any(|on_purpose| why.contains(on_purpose)),
                "is_json accepts what serde_json refuses: {why}"
            );
        }
    }

    let mut scratch = data.to_vec();
    let parsed = parse_command(&mut scratch);
    match &parsed {
        Err(e) => {
            assert_ne!(e.code, ErrorCode::Internal, "internal error: {}", e.message);
            let object = ours && data.trim_ascii_start().starts_with(b"{");
            assert_eq!(e.code == ErrorCode::BadJson, !object, "{}", e.message);
        }
        Ok(req) => {
            assert!(ours);
            // serde_json may refuse for its narrower limits only; then there is nothing to compare.
            let Ok(Value::Object(map)) = &theirs else {
                return;
            };
            let text = |k: &str| map.get(k).and_then(Value::as_str);
            let (op, topic) = match &req.command {
                Command::Subscribe { channel, snapshot } => {
                    assert_eq!(text("snapshot"), snapshot.as_deref());
                    ("subscribe", Some(("channel", channel)))
                }
                Command::Unsubscribe { channel } => ("unsubscribe", Some(("channel", channel))),
                Command::Psubscribe { pattern } => ("psubscribe", Some(("pattern", pattern))),
                Command::Punsubscribe { pattern } => ("punsubscribe", Some(("pattern", pattern))),
                Command::Watch { key } => ("watch", Some(("key", key))),
                Command::Unwatch { key } => ("unwatch", Some(("key", key))),
                Command::Ping => ("ping", None),
                Command::Refresh { token } => {
                    assert_eq!(text("token"), Some(token.as_str()));
                    ("refresh", None)
                }
            };
            assert_eq!(text("op"), Some(op));
            if let Some((field, name)) = topic {
                assert_eq!(text(field), Some(name.as_str()));
                assert!(check_topic(name).is_ok());
            }
            match (&req.id, map.get("id")) {
                (None, None) => {}
                (Some(id), Some(Value::String(s))) => {
                    assert_eq!(
                        serde_json::from_str::<String>(id.as_str()).ok().as_ref(),
                        Some(s)
                    );
                }
                (Some(_), Some(Value::Number(_))) => {}
                (id, v) => panic!("id {id:?} parsed from {v:?}"),
            }
        }
    }

    let _ = ringcast::profile::classify(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = check_topic(s);
    }
});
