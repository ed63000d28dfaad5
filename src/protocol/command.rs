//! Client commands: parsing one client text message into a typed [`Request`].
//!
//! A command is a JSON object such as `{"op":"subscribe","channel":"a","id":1}`. The parser
//! (`serde_json`, into borrowed raw members) checks the whole message against the JSON grammar
//! (the same as [`is_json`](super::is_json)), picks out the members `op`, `channel`, `pattern`, `key`,
//! `snapshot` and `id`, and ignores any others (and any of these that the command does not
//! use), so clients can add fields without breaking old servers.
//!
//! **Thread:** pure functions, called on the shard thread that owns the connection, once per
//! client text message. No I/O, no shared state.
//!
//! **Invariants:**
//! - A bad command is never a reason to disconnect. Every failure is a [`CommandError`] that the
//!   caller turns into an `error` reply (see [`render_command_error`](super::render_command_error)).
//! - A [`RequestId`] always holds the exact JSON text of a number or string from the client, so
//!   replies can splice it in as is and stay valid JSON.
//! - Channel names, patterns and keys in a [`Command`] are valid UTF-8, 1 to [`MAX_TOPIC_BYTES`]
//!   bytes, with no control characters (see [`check_topic`]).
//! - When a message is a JSON object with a usable `id`, every error for it carries that `id`.
//!   When the message is not valid JSON, its `id` is unknown and omitted.
//! - Duplicate members: the last one wins, as in JavaScript's `JSON.parse`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::envelope::is_json;

/// The longest channel name, pattern or key a client may use, in bytes of UTF-8. Default: 1024.
///
/// Names are stored once per topic and copied into every envelope, so a small bound keeps topic
/// tables and frames small. Redis allows far longer names; 1024 bytes covers real naming
/// schemes with room to spare.
pub const MAX_TOPIC_BYTES: usize = 1024;

/// The raw JSON text of a request id (a number such as `1` or `1.5`, or a string such as
/// `"abc"` with its quotes), echoed verbatim in replies.
///
/// [`parse_command`] only ever builds one from a valid JSON number or string. Code that builds
/// one by hand must keep to that, or replies stop being valid JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub Box<str>);

impl RequestId {
    /// The raw JSON text, ready to splice into a reply.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start receiving events published to `channel`.
    Subscribe {
        /// The exact channel name.
        channel: String,
        /// The optional `snapshot` member: a key whose current value the client wants along
        /// with the subscription. `None` when the member is absent. Checked with the same
        /// rules as [`Command::Watch`]'s key.
        snapshot: Option<String>,
    },
    /// Stop receiving events published to `channel`.
    Unsubscribe {
        /// The exact channel name.
        channel: String,
    },
    /// Start receiving events on every channel that matches a glob pattern
    /// (see [`glob_match`](super::glob_match)).
    Psubscribe {
        /// The glob pattern, compared byte for byte.
        pattern: String,
    },
    /// Stop receiving events through a pattern subscription.
    Punsubscribe {
        /// The pattern, exactly as it was subscribed.
        pattern: String,
    },
    /// Start receiving the value of a key each time it changes.
    Watch {
        /// The exact key name, checked with the same rules as channel names.
        key: String,
    },
    /// Stop watching a key.
    Unwatch {
        /// The key, exactly as it was watched.
        key: String,
    },
    /// Liveness check at the protocol level; the server answers `pong`.
    Ping,
    /// Replaces the connection's token before it expires (`{"op":"refresh","token":"…"}`);
    /// the server answers `refreshed`, or `error` with code `forbidden`.
    Refresh {
        /// The new JWT. Never echoed or logged.
        token: String,
    },
}

/// One parsed client message: the command and the id to echo in its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's request id, if it sent one.
    pub id: Option<RequestId>,
    /// What the client asked for.
    pub command: Command,
}

/// Stable wire strings of the error codes in `error` replies. Clients match on these, so they
/// never change meaning.
pub mod codes {
    /// The message is not valid JSON, or not a JSON object. The client should fix its encoder.
    pub const BAD_JSON: &str = "bad_json";
    /// `op` names no known command. The client may be newer than the server.
    pub const UNKNOWN_OP: &str = "unknown_op";
    /// A member the command needs is missing or has the wrong type.
    pub const MISSING_FIELD: &str = "missing_field";
    /// The channel, pattern or key (including a `subscribe`'s `snapshot`) is empty, longer
    /// than [`MAX_TOPIC_BYTES`](super::MAX_TOPIC_BYTES), or contains control characters.
    pub const BAD_CHANNEL: &str = "bad_channel";
    /// The connection is at its subscription limit. Unsubscribe from something first.
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    /// Unsubscribe from a channel or pattern this connection is not subscribed to, or unwatch a
    /// key it is not watching.
    pub const NOT_SUBSCRIBED: &str = "not_subscribed";
    /// The server failed. Not the client's fault; retrying later may work.
    pub const INTERNAL: &str = "internal";
    /// The connection's grants (its token's, or the listener's allow lists) do not allow the
    /// subscription or watch, or a `refresh` token was refused. The connection stays open.
    pub const FORBIDDEN: &str = "forbidden";
    /// The connection sent commands faster than `command-rate`; this one was not run. Slow
    /// down and retry.
    pub const RATE_LIMITED: &str = "rate_limited";
}

/// The `code` of an `error` reply. Each variant says whose fault it is and what the client
/// should do. The wire strings are in [`codes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Client's fault: not valid JSON, or not an object. Fix the encoder; do not resend as is.
    BadJson,
    /// Client's fault, or a client newer than this server: `op` is not a known command.
    UnknownOp,
    /// Client's fault: a required member is missing or has the wrong type.
    MissingField,
    /// Client's fault: the channel name, pattern or key breaks the naming rules.
    BadChannel,
    /// A limit, not a fault: the connection holds the most subscriptions it may. Unsubscribe
    /// first.
    TooManySubscriptions,
    /// Client's mistake, harmless: unsubscribe from something not subscribed, or unwatch a key
    /// not watched.
    NotSubscribed,
    /// Server's fault. The request may be retried later.
    Internal,
    /// Not allowed: the grants do not cover the name, or a `refresh` token was refused. Do
    /// not retry unchanged.
    Forbidden,
    /// A limit, not a fault: commands came faster than `command-rate`. Retry later, slower.
    RateLimited,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownOp,
        ErrorCode::MissingField,
        ErrorCode::BadChannel,
        ErrorCode::TooManySubscriptions,
        ErrorCode::NotSubscribed,
        ErrorCode::Internal,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
    ];

    /// The stable wire string, for example `"bad_json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => codes::BAD_JSON,
            ErrorCode::UnknownOp => codes::UNKNOWN_OP,
            ErrorCode::MissingField => codes::MISSING_FIELD,
            ErrorCode::BadChannel => codes::BAD_CHANNEL,
            ErrorCode::TooManySubscriptions => codes::TOO_MANY_SUBSCRIPTIONS,
            ErrorCode::NotSubscribed => codes::NOT_SUBSCRIBED,
            ErrorCode::Internal => codes::INTERNAL,
            ErrorCode::Forbidden => codes::FORBIDDEN,
            ErrorCode::RateLimited => codes::RATE_LIMITED,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command that cannot be carried out. The caller answers with an `error` reply and keeps the
/// connection open.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// The request id to echo, when the message had a usable one.
    pub id: Option<RequestId>,
    /// What kind of failure, and so what the client should do.
    pub code: ErrorCode,
    /// A human-readable explanation for the `message` field of the reply.
    pub message: String,
}

impl CommandError {
    /// Builds an error for the request with `id`.
    pub fn new(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }
}

/// Why a channel name, pattern or key was refused. Always the client's fault; the reply code is
/// [`ErrorCode::BadChannel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The name is empty. Use at least one byte.
    #[error("must not be empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_BYTES`]. Use a shorter name.
    #[error("is longer than {MAX_TOPIC_BYTES} bytes")]
    TooLong,
    /// The name contains a control character (U+0000 to U+001F, U+007F to U+009F). Remove it.
    #[error("contains a control character")]
    ControlChar,
}

/// Checks a channel name, pattern or key against the naming rules: 1 to [`MAX_TOPIC_BYTES`]
/// bytes and no control characters. Other entry points (such as HTTP publish) use it too, so
/// every path applies the same rules.
pub fn check_topic(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        Err(TopicError::Empty)
    } else if name.len() > MAX_TOPIC_BYTES {
        Err(TopicError::TooLong)
    } else if name.chars().any(char::is_control) {
        Err(TopicError::ControlChar)
    } else {
        Ok(())
    }
}

/// Parses one client text message.
///
/// `text` may be modified (an in-place parser such as simd-json would), so callers pass a scratch
/// copy. serde_json only reads it; simd-json lost to it on every command measured
/// (`benches/json_scan.rs`), but the `&mut` keeps the signature stable for a parser that wins.
///
/// Errors carry the request id whenever the message is a JSON object with an `id` that is a
/// number or a string, even when the rest is wrong. An `id` of any other type is itself a
/// [`ErrorCode::MissingField`] error, without an id.
pub fn parse_command(text: &mut [u8]) -> Result<Request, CommandError> {
    let text: &[u8] = text;
    let members = Members::scan(text)
        .map_err(|message| CommandError::new(None, ErrorCode::BadJson, message))?;

    let id = match members.id {
        None => None,
        Some(raw) => match raw.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => Some(RequestId(raw.get().into())),
            _ => {
                return Err(CommandError::new(
                    None,
                    ErrorCode::MissingField,
                    "\"id\" must be a number or a string",
                ));
            }
        },
    };
    let fail = |code, message: String| Err(CommandError::new(id.clone(), code, message));

    let Some(op_raw) = members.op else {
        return fail(ErrorCode::MissingField, "missing \"op\"".to_owned());
    };
    // An op with an unpaired surrogate escape is no op this protocol knows.
    let op = match string_value(op_raw) {
        Ok(Some(op)) => op,
        Ok(None) => {
            return fail(
                ErrorCode::MissingField,
                "\"op\" must be a string".to_owned(),
            );
        }
        Err(Unpaired) => Cow::Borrowed(""),
    };
    let command = match &*op {
        "subscribe" => Command::Subscribe {
            channel: topic(members.channel, "channel", &id)?,
            snapshot: match members.snapshot {
                None => None,
                Some(raw) => Some(name(raw, "snapshot", "\"snapshot\" key", &id)?),
            },
        },
        "unsubscribe" => Command::Unsubscribe {
            channel: topic(members.channel, "channel", &id)?,
        },
        "psubscribe" => Command::Psubscribe {
            pattern: topic(members.pattern, "pattern", &id)?,
        },
        "punsubscribe" => Command::Punsubscribe {
            pattern: topic(members.pattern, "pattern", &id)?,
        },
        "watch" => Command::Watch {
            key: topic(members.key, "key", &id)?,
        },
        "unwatch" => Command::Unwatch {
            key: topic(members.key, "key", &id)?,
        },
        "ping" => Command::Ping,
        "refresh" => match members.token.map(string_value) {
            Some(Ok(Some(token))) if !token.is_empty() => Command::Refresh {
                token: token.into_owned(),
            },
            _ => {
                return fail(
                    ErrorCode::MissingField,
                    "\"token\" must be a non-empty string".to_owned(),
                );
            }
        },
        // The op is not echoed: it could be up to a whole message long.
        _ => {
            return fail(
                ErrorCode::UnknownOp,
                "unknown \"op\"; expected subscribe, unsubscribe, psubscribe, punsubscribe, \
                 watch, unwatch, ping or refresh"
                    .to_owned(),
            );
        }
    };
    Ok(Request { id, command })
}

/// The raw JSON text of the members this protocol reads, from the top-level object.
#[derive(Debug, Default)]
struct Members<'a> {
    /// Raw value of `op`.
    op: Option<&'a RawValue>,
    /// Raw value of `channel`.
    channel: Option<&'a RawValue>,
    /// Raw value of `pattern`.
    pattern: Option<&'a RawValue>,
    /// Raw value of `key`.
    key: Option<&'a RawValue>,
    /// Raw value of `snapshot`.
    snapshot: Option<&'a RawValue>,
    /// Raw value of `id`.
    id: Option<&'a RawValue>,
    /// Raw value of `token` (`refresh`).
    token: Option<&'a RawValue>,
}

/// The `bad_json` message for text that is not valid JSON.
const NOT_JSON: &str = "message is not valid JSON";

impl<'a> Members<'a> {
    /// Validates `text` as one JSON object and records the raw values of the members we read.
    /// The error is the message for a `bad_json` reply.
    fn scan(text: &'a [u8]) -> Result<Self, &'static str> {
        let utf8 = std::str::from_utf8(text).map_err(|_| NOT_JSON)?;
        serde_json::from_str(utf8).map_err(|e| match e.classify() {
            // The only type error is a top level that is not an object; if the text is valid
            // JSON, say what is wrong with it.
            serde_json::error::Category::Data if is_json(text) => "message must be a JSON object",
            _ => NOT_JSON,
        })
    }
}

/// A member name this protocol reads, or any other.
enum Member {
    Op,
    Channel,
    Pattern,
    Key,
    Snapshot,
    Id,
    Token,
    Other,
}

impl Member {
    /// Names the member whose raw name (a JSON string, quotes included) is `raw`. Read raw, with
    /// serde_json's own checks, so that a name holding an unpaired surrogate escape (which the
    /// JSON grammar allows) is just another unknown member.
    fn named(raw: &RawValue) -> Member {
        let Ok(Some(name)) = string_value(raw) else {
            return Member::Other;
        };
        match &*name {
            "op" => Member::Op,
            "channel" => Member::Channel,
            "pattern" => Member::Pattern,
            "key" => Member::Key,
            "snapshot" => Member::Snapshot,
            "id" => Member::Id,
            "token" => Member::Token,
            _ => Member::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    /// Duplicate members: the last one wins (a derived struct would refuse them).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Members::default();
                while let Some(name) = map.next_key::<&RawValue>()? {
                    let slot = match Member::named(name) {
                        Member::Op => &mut members.op,
                        Member::Channel => &mut members.channel,
                        Member::Pattern => &mut members.pattern,
                        Member::Key => &mut members.key,
                        Member::Snapshot => &mut members.snapshot,
                        Member::Id => &mut members.id,
                        Member::Token => &mut members.token,
                        Member::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(members)
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// Reads the required name member `field` (`"channel"`, `"pattern"` or `"key"`) and checks it.
fn topic(
    raw: Option<&RawValue>,
    field: &str,
    id: &Option<RequestId>,
) -> Result<String, CommandError> {
    let Some(raw) = raw else {
        return Err(not_a_string(field, id));
    };
    name(raw, field, &format!("\"{field}\""), id)
}

/// Decodes the raw value of the name member `field` and checks it with [`check_topic`]. A
/// value that is not a string is a [`ErrorCode::MissingField`] error. A name that breaks the
/// rules is a [`ErrorCode::BadChannel`] error whose message starts with `label`.
fn name(
    raw: &RawValue,
    field: &str,
    label: &str,
    id: &Option<RequestId>,
) -> Result<String, CommandError> {
    let name = match string_value(raw) {
        Ok(Some(name)) => name,
        Ok(None) => return Err(not_a_string(field, id)),
        Err(Unpaired) => {
            return Err(CommandError::new(
                id.clone(),
                ErrorCode::BadChannel,
                format!("{label} holds an unpaired UTF-16 surrogate escape"),
            ));
        }
    };
    match check_topic(&name) {
        Ok(()) => Ok(name.into_owned()),
        Err(problem) => Err(CommandError::new(
            id.clone(),
            ErrorCode::BadChannel,
            format!("{label} {problem}"),
        )),
    }
}

/// The [`ErrorCode::MissingField`] error for a member `field` that is absent or not a string.
fn not_a_string(field: &str, id: &Option<RequestId>) -> CommandError {
    CommandError::new(
        id.clone(),
        ErrorCode::MissingField,
        format!("\"{field}\" must be a string"),
    )
}

/// A string member held an unpaired UTF-16 surrogate escape (`"\ud800"`): valid JSON, but no
/// Rust string can hold it.
struct Unpaired;

/// Decodes a raw JSON value. `Ok(None)` when it is not a string. Borrows when there is no escape.
fn string_value(raw: &RawValue) -> Result<Option<Cow<'_, str>>, Unpaired> {
    let text = raw.get();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        None => Ok(None),
        Some(body) if !body.contains('\\') => Ok(Some(Cow::Borrowed(body))),
        // The raw value is a valid JSON string, so the only failure left is a lone surrogate.
        Some(_) => serde_json::from_str::<String>(text)
            .map(|s| Some(Cow::Owned(s)))
            .map_err(|_| Unpaired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, CommandError> {
        let mut scratch = text.as_bytes().to_vec();
        parse_command(&mut scratch)
    }

    fn ok(text: &str) -> Request {
        parse(text).unwrap_or_else(|e| panic!("{text}: {:?} {}", e.code, e.message))
    }

    fn err(text: &str) -> CommandError {
        match parse(text) {
            Ok(request) => panic!("{text} parsed as {request:?}"),
            Err(e) => e,
        }
    }

    fn id(raw: &str) -> Option<RequestId> {
        Some(RequestId(raw.into()))
    }

    #[test]
    fn parses_every_op() {
        assert_eq!(
            ok(r#"{"op":"subscribe","channel":"a","id":1}"#),
            Request {
                id: id("1"),
                command: Command::Subscribe {
                    channel: "a".into(),
                    snapshot: None,
                }
            }
        );
        assert_eq!(
            ok(r#"{"op":"unsubscribe","channel":"a","id":2}"#),
            Request {
                id: id("2"),
                command: Command::Unsubscribe {
                    channel: "a".into()
                }
            }
        );
        assert_eq!(
            ok(r#"{"op":"psubscribe","pattern":"news.*","id":3}"#),
            Request {
                id: id("3"),
                command: Command::Psubscribe {
                    pattern: "news.*".into()
                }
            }
        );
        assert_eq!(
            ok(r#"{"op":"punsubscribe","pattern":"news.*","id":4}"#),
            Request {
                id: id("4"),
                command: Command::Punsubscribe {
                    pattern: "news.*".into()
                }
            }
        );
        assert_eq!(
            ok(r#"{"op":"ping","id":5}"#),
            Request {
                id: id("5"),
                command: Command::Ping
            }
        );
        assert_eq!(
            ok(r#"{"op":"watch","key":"user:1","id":6}"#),
            Request {
                id: id("6"),
                command: Command::Watch {
                    key: "user:1".into()
                }
            }
        );
        assert_eq!(
            ok(r#"{"op":"unwatch","key":"user:1","id":7}"#),
            Request {
                id: id("7"),
                command: Command::Unwatch {
                    key: "user:1".into()
                }
            }
        );
        assert_eq!(
            ok(r#"{"op":"subscribe","channel":"a","snapshot":"KEY","id":8}"#),
            Request {
                id: id("8"),
                command: Command::Subscribe {
                    channel: "a".into(),
                    snapshot: Some("KEY".into()),
                }
            }
        );
    }

    #[test]
    fn id_is_optional() {
        assert_eq!(ok(r#"{"op":"ping"}"#).id, None);
    }

    #[test]
    fn id_is_kept_verbatim() {
        for raw in [
            "1",
            "-7",
            "1.5",
            "1.50",
            "1e2",
            "-0.5E+10",
            "123456789012345678901234567890",
            r#""abc""#,
            r#""""#,
            r#""a\"b\u00e9""#,
            "\"\u{e9}\u{1F600}\"",
        ] {
            let text = format!(r#"{{"op":"ping","id":{raw}}}"#);
            assert_eq!(ok(&text).id, id(raw), "{text}");
        }
    }

    #[test]
    fn id_of_wrong_type_is_missing_field_without_id() {
        for raw in ["null", "true", "false", "[1]", "{}"] {
            let e = err(&format!(r#"{{"op":"ping","id":{raw}}}"#));
            assert_eq!(e.code, ErrorCode::MissingField, "{raw}");
            assert_eq!(e.id, None, "{raw}");
        }
    }

    #[test]
    fn whitespace_member_order_and_extra_members() {
        let request = ok(
            " {\n \"id\" : \"x\" ,\t\"extra\":{\"deep\":[1,2,{}]}, \"channel\":\"c\",\"op\":\"subscribe\" }\r\n",
        );
        assert_eq!(request.id, id("\"x\""));
        assert_eq!(
            request.command,
            Command::Subscribe {
                channel: "c".into(),
                snapshot: None,
            }
        );
        // ping ignores channel and pattern.
        assert_eq!(
            ok(r#"{"op":"ping","channel":5,"pattern":null}"#).command,
            Command::Ping
        );
    }

    #[test]
    fn escaped_keys_and_values_are_decoded() {
        let request =
            ok(r#"{"\u006fp":"sub\u0073cribe","channel":"a\/b \u00e9 \ud83d\ude00 \"q\""}"#);
        assert_eq!(
            request.command,
            Command::Subscribe {
                channel: "a/b \u{e9} \u{1F600} \"q\"".into(),
                snapshot: None,
            }
        );
    }

    #[test]
    fn last_duplicate_member_wins() {
        assert_eq!(
            ok(r#"{"op":"subscribe","channel":"a","channel":"b","id":1,"id":2}"#),
            Request {
                id: id("2"),
                command: Command::Subscribe {
                    channel: "b".into(),
                    snapshot: None,
                }
            }
        );
    }

    #[test]
    fn bad_json_has_no_id() {
        for text in [
            "",
            "   ",
            "not json",
            r#"{"op":"ping","id":1"#,
            r#"{"op":"ping","id":1,}"#,
            r#"{"id":1,"op":"ping"} trailing"#,
            r#"{"id":1,"op":}"#,
            r#"{"id":1 "op":"ping"}"#,
            r#"{"id":01,"op":"ping"}"#,
            r#"{"id":1,"op":"ping\x"}"#,
            r#"{id:1}"#,
            "{\"op\":\"ping\",\"id\":\"\u{1}\"}",
            // A raw control character in a member name (found by the native_command fuzzer).
            "{\"op\u{0}\":\"subscribe\",\"channel\":\"\\ud800\"}",
        ] {
            let e = err(text);
            assert_eq!(e.code, ErrorCode::BadJson, "{text}");
            assert_eq!(e.id, None, "{text}");
            assert_eq!(e.message, NOT_JSON, "{text}");
        }
        let mut bad_utf8 = br#"{"op":"ping","x":"\xff"}"#.to_vec();
        assert_eq!(
            parse_command(&mut bad_utf8).map_err(|e| e.code).err(),
            Some(ErrorCode::BadJson)
        );
    }

    #[test]
    fn valid_json_that_is_not_an_object() {
        for text in ["[]", "1", "\"op\"", "null", r#"[{"op":"ping"}]"#] {
            let e = err(text);
            assert_eq!(e.code, ErrorCode::BadJson, "{text}");
            assert_eq!(e.message, "message must be a JSON object", "{text}");
        }
    }

    #[test]
    fn missing_or_mistyped_fields_keep_the_id() {
        for (text, message) in [
            (r#"{"id":7}"#, "missing \"op\""),
            (r#"{"id":7,"op":5}"#, "\"op\" must be a string"),
            (r#"{"id":7,"op":null}"#, "\"op\" must be a string"),
            (
                r#"{"id":7,"op":"subscribe"}"#,
                "\"channel\" must be a string",
            ),
            (
                r#"{"id":7,"op":"unsubscribe","channel":1}"#,
                "\"channel\" must be a string",
            ),
            (
                r#"{"id":7,"op":"psubscribe","channel":"a"}"#,
                "\"pattern\" must be a string",
            ),
            (
                r#"{"id":7,"op":"punsubscribe","pattern":["a"]}"#,
                "\"pattern\" must be a string",
            ),
        ] {
            let e = err(text);
            assert_eq!(e.code, ErrorCode::MissingField, "{text}");
            assert_eq!(e.id, id("7"), "{text}");
            assert_eq!(e.message, message, "{text}");
        }
    }

    #[test]
    fn unknown_op_keeps_the_id() {
        for op in ["\"Subscribe\"", "\"publish\"", "\"\"", "\"ping \""] {
            let e = err(&format!(r#"{{"op":{op},"id":"q"}}"#));
            assert_eq!(e.code, ErrorCode::UnknownOp, "{op}");
            assert_eq!(e.id, id("\"q\""), "{op}");
        }
    }

    #[test]
    fn bad_channel_names() {
        let long = "x".repeat(MAX_TOPIC_BYTES + 1);
        for (name, message) in [
            ("", "\"channel\" must not be empty"),
            (long.as_str(), "\"channel\" is longer than 1024 bytes"),
            ("a\\nb", "\"channel\" contains a control character"),
            ("a\\u0000", "\"channel\" contains a control character"),
            ("a\\u007f", "\"channel\" contains a control character"),
            ("a\\u0085", "\"channel\" contains a control character"),
        ] {
            let e = err(&format!(
                r#"{{"op":"subscribe","channel":"{name}","id":9}}"#
            ));
            assert_eq!(e.code, ErrorCode::BadChannel, "{name}");
            assert_eq!(e.id, id("9"));
            assert_eq!(e.message, message);
        }
        let e = err(r#"{"op":"psubscribe","pattern":""}"#);
        assert_eq!(e.code, ErrorCode::BadChannel);
        assert_eq!(e.message, "\"pattern\" must not be empty");
        assert_eq!(e.id, None);
    }

    #[test]
    fn topic_length_counts_utf8_bytes() {
        let max = "x".repeat(MAX_TOPIC_BYTES);
        assert_eq!(
            ok(&format!(r#"{{"op":"subscribe","channel":"{max}"}}"#)).command,
            Command::Subscribe {
                channel: max,
                snapshot: None
            }
        );
        // 512 two-byte characters fit, 513 do not.
        let fits = "\u{e9}".repeat(MAX_TOPIC_BYTES / 2);
        assert!(parse(&format!(r#"{{"op":"subscribe","channel":"{fits}"}}"#)).is_ok());
        let too_long = "\u{e9}".repeat(MAX_TOPIC_BYTES / 2 + 1);
        assert_eq!(
            err(&format!(r#"{{"op":"subscribe","channel":"{too_long}"}}"#)).code,
            ErrorCode::BadChannel
        );
        // Escapes count after decoding: six bytes of `\u0041` are one byte of name.
        let escaped = "\\u0041".repeat(MAX_TOPIC_BYTES);
        assert!(parse(&format!(r#"{{"op":"subscribe","channel":"{escaped}"}}"#)).is_ok());
    }

    #[test]
    fn check_topic_rules() {
        assert_eq!(check_topic("news.*"), Ok(()));
        assert_eq!(check_topic("\u{e9}t\u{e9} \u{1F600}"), Ok(()));
        assert_eq!(check_topic(""), Err(TopicError::Empty));
        assert_eq!(
            check_topic(&"a".repeat(MAX_TOPIC_BYTES + 1)),
            Err(TopicError::TooLong)
        );
        assert_eq!(check_topic("a\tb"), Err(TopicError::ControlChar));
        assert_eq!(check_topic("\u{9f}"), Err(TopicError::ControlChar));
    }

    #[test]
    fn watch_and_unwatch_echo_ids_and_decode_keys() {
        for raw in ["1.50", r#""w-1""#, "-3"] {
            for op in ["watch", "unwatch"] {
                let request = ok(&format!(r#"{{"id":{raw},"key":"k","op":"{op}"}}"#));
                assert_eq!(request.id, id(raw), "{op} {raw}");
            }
        }
        assert_eq!(
            ok(r#"{"op":"watch","key":"a\/b \u00e9 \ud83d\ude00 \"q\""}"#).command,
            Command::Watch {
                key: "a/b \u{e9} \u{1F600} \"q\"".into()
            }
        );
        // Last duplicate wins, and channel and pattern are ignored.
        assert_eq!(
            ok(r#"{"op":"unwatch","key":"a","key":"b","channel":5,"pattern":null}"#).command,
            Command::Unwatch { key: "b".into() }
        );
        // A key is not a channel: watch does not read "channel".
        let e = err(r#"{"op":"watch","channel":"a","id":1}"#);
        assert_eq!(e.code, ErrorCode::MissingField);
        assert_eq!(e.message, "\"key\" must be a string");
    }

    #[test]
    fn watch_key_missing_or_mistyped() {
        for text in [
            r#"{"op":"watch","id":3}"#,
            r#"{"op":"watch","key":null,"id":3}"#,
            r#"{"op":"unwatch","key":7,"id":3}"#,
            r#"{"op":"unwatch","key":["k"],"id":3}"#,
            r#"{"op":"watch","key":{"k":1},"id":3}"#,
        ] {
            let e = err(text);
            assert_eq!(e.code, ErrorCode::MissingField, "{text}");
            assert_eq!(e.id, id("3"), "{text}");
            assert_eq!(e.message, "\"key\" must be a string", "{text}");
        }
    }

    #[test]
    fn bad_keys() {
        let long = "k".repeat(MAX_TOPIC_BYTES + 1);
        for op in ["watch", "unwatch"] {
            for (name, message) in [
                ("", "\"key\" must not be empty"),
                (long.as_str(), "\"key\" is longer than 1024 bytes"),
                ("a\\tb", "\"key\" contains a control character"),
                ("a\\u009f", "\"key\" contains a control character"),
            ] {
                let e = err(&format!(r#"{{"op":"{op}","key":"{name}","id":"x"}}"#));
                assert_eq!(e.code, ErrorCode::BadChannel, "{op} {name}");
                assert_eq!(e.id, id("\"x\""), "{op} {name}");
                assert_eq!(e.message, message, "{op} {name}");
            }
        }
        let max = "k".repeat(MAX_TOPIC_BYTES);
        assert_eq!(
            ok(&format!(r#"{{"op":"watch","key":"{max}"}}"#)).command,
            Command::Watch { key: max }
        );
    }

    #[test]
    fn subscribe_snapshot() {
        // Absent means None.
        assert_eq!(
            ok(r#"{"op":"subscribe","channel":"a"}"#).command,
            Command::Subscribe {
                channel: "a".into(),
                snapshot: None,
            }
        );
        // Escapes are decoded; the snapshot key may differ from the channel.
        assert_eq!(
            ok(r#"{"snapshot":"h\u00e9:1","op":"subscribe","channel":"a"}"#).command,
            Command::Subscribe {
                channel: "a".into(),
                snapshot: Some("h\u{e9}:1".into()),
            }
        );
        // A non-string snapshot is a missing_field error that keeps the id.
        for raw in ["null", "1", "true", "[\"k\"]", "{}"] {
            let e = err(&format!(
                r#"{{"op":"subscribe","channel":"a","snapshot":{raw},"id":4}}"#
            ));
            assert_eq!(e.code, ErrorCode::MissingField, "{raw}");
            assert_eq!(e.id, id("4"), "{raw}");
            assert_eq!(e.message, "\"snapshot\" must be a string", "{raw}");
        }
        // A bad snapshot key is bad_channel, and the message says it is a key.
        let long = "s".repeat(MAX_TOPIC_BYTES + 1);
        for (name, message) in [
            ("", "\"snapshot\" key must not be empty"),
            (long.as_str(), "\"snapshot\" key is longer than 1024 bytes"),
            ("a\\nb", "\"snapshot\" key contains a control character"),
        ] {
            let e = err(&format!(
                r#"{{"op":"subscribe","channel":"a","snapshot":"{name}","id":5}}"#
            ));
            assert_eq!(e.code, ErrorCode::BadChannel, "{name}");
            assert_eq!(e.id, id("5"), "{name}");
            assert_eq!(e.message, message, "{name}");
        }
        // The channel is checked first.
        let e = err(r#"{"op":"subscribe","channel":"","snapshot":""}"#);
        assert_eq!(e.message, "\"channel\" must not be empty");
        let e = err(r#"{"op":"subscribe","snapshot":"k"}"#);
        assert_eq!(e.message, "\"channel\" must be a string");
    }

    #[test]
    fn other_commands_ignore_snapshot() {
        for (text, command) in [
            (
                r#"{"op":"unsubscribe","channel":"a","snapshot":5}"#,
                Command::Unsubscribe {
                    channel: "a".into(),
                },
            ),
            (
                r#"{"op":"psubscribe","pattern":"p*","snapshot":""}"#,
                Command::Psubscribe {
                    pattern: "p*".into(),
                },
            ),
            (
                r#"{"op":"punsubscribe","pattern":"p*","snapshot":null}"#,
                Command::Punsubscribe {
                    pattern: "p*".into(),
                },
            ),
            (
                r#"{"op":"watch","key":"k","snapshot":[]}"#,
                Command::Watch { key: "k".into() },
            ),
            (
                r#"{"op":"unwatch","key":"k","snapshot":"\u0001"}"#,
                Command::Unwatch { key: "k".into() },
            ),
            (r#"{"op":"ping","snapshot":{}}"#, Command::Ping),
        ] {
            assert_eq!(ok(text).command, command, "{text}");
        }
    }

    #[test]
    fn unknown_op_lists_every_op() {
        let e = err(r#"{"op":"watchx"}"#);
        assert_eq!(e.code, ErrorCode::UnknownOp);
        assert_eq!(
            e.message,
            "unknown \"op\"; expected subscribe, unsubscribe, psubscribe, punsubscribe, watch, \
             unwatch, ping or refresh"
        );
    }

    #[test]
    fn error_codes_are_stable() {
        let wire: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            wire,
            [
                "bad_json",
                "unknown_op",
                "missing_field",
                "bad_channel",
                "too_many_subscriptions",
                "not_subscribed",
                "internal",
                "forbidden",
                "rate_limited"
            ]
        );
        assert_eq!(ErrorCode::BadChannel.to_string(), "bad_channel");
    }

    #[test]
    fn command_error_displays_its_message() {
        let e = CommandError::new(None, ErrorCode::Internal, "boom");
        assert_eq!(e.to_string(), "boom");
    }

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).expect("valid JSON")
    }

    #[test]
    fn string_value_decodes_escapes_and_borrows_plain_text() {
        let value = |text| string_value(raw(text)).ok().flatten();
        assert_eq!(value(r#""plain""#).as_deref(), Some("plain"));
        assert!(matches!(value(r#""plain""#), Some(Cow::Borrowed(_))));
        assert_eq!(
            value(r#""\"\\\/\b\f\n\r\t\u0041\u00E9\uD83D\uDE00x""#).as_deref(),
            Some("\"\\/\u{8}\u{c}\n\r\tA\u{e9}\u{1F600}x")
        );
        assert_eq!(value("1"), None);
        assert_eq!(value("[\"a\"]"), None);
        for lone in [
            r#""\uD800""#,
            r#""\uD800\u0041""#,
            r#""\uDC00""#,
            r#""\uD800\uE000""#,
        ] {
            assert!(string_value(raw(lone)).is_err(), "{lone}");
        }
    }

    #[test]
    fn unpaired_surrogates_are_json_but_not_names() {
        // Valid JSON (RFC 8259's grammar allows them), so not bad_json.
        let e = err(r#"{"op":"subscribe","channel":"a\ud800","id":7}"#);
        assert_eq!(e.code, ErrorCode::BadChannel);
        assert_eq!(e.id, id("7"));
        assert_eq!(
            e.message,
            "\"channel\" holds an unpaired UTF-16 surrogate escape"
        );
        assert_eq!(err(r#"{"op":"\udc00","id":1}"#).code, ErrorCode::UnknownOp);
        assert_eq!(
            err(r#"{"op":"refresh","token":"\ud800"}"#).code,
            ErrorCode::MissingField
        );
        // In a member nobody reads, or in a member name, it is ignored.
        assert_eq!(
            ok(r#"{"op":"ping","x":"\ud800","\udbff":1,"id":1}"#),
            Request {
                id: id("1"),
                command: Command::Ping
            }
        );
    }

    #[test]
    fn deep_members_are_skipped_without_a_depth_limit() {
        let deep = format!(
            r#"{{"op":"ping","x":{}{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert_eq!(ok(&deep).command, Command::Ping);
    }

    #[test]
    fn never_panics_on_damaged_commands() {
        let base = br#"{"op":"psubscribe","pattern":"a.\u00e9*","id":"k\"1"}"#;
        let snapshot = br#"{"op":"subscribe","channel":"c","snapshot":"k\u00e9","id":2}"#;
        let watch = br#"{"op":"watch","key":"k.\u00e9","id":[1]}"#;
        for base in [&base[..], &snapshot[..], &watch[..]] {
            damage(base);
        }
    }

    /// Parses every prefix of `base`, and `base` with each byte replaced by each of a few
    /// troublesome bytes. None may panic or report an internal error.
    fn damage(base: &[u8]) {
        for cut in 0..=base.len() {
            let mut text = base[..cut].to_vec();
            let _ = parse_command(&mut text);
        }
        for at in 0..base.len() {
            for byte in [b'"', b'\\', b'{', b'}', b':', b',', 0xff, 0x00, b'u'] {
                let mut text = base.to_vec();
                text[at] = byte;
                if let Err(e) = parse_command(&mut text) {
                    assert_ne!(
                        e.code,
                        ErrorCode::Internal,
                        "{:?}",
                        String::from_utf8_lossy(&text)
                    );
                }
            }
        }
    }
}
