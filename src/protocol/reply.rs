//! Replies: the JSON text the server sends back to one client for one command (acks, `pong`,
//! errors).
//!
//! **Thread:** pure functions, called on the shard thread that owns the connection, at most once
//! per client command. Replies go to a single client, so each one is a fresh `String`; this is
//! not the fan-out path (see [`envelope`](super::envelope) for that).
//!
//! **Invariants:**
//! - Every reply is a complete, valid JSON object. Names and messages are escaped, and the
//!   request id is spliced in verbatim. That is safe because a [`RequestId`] only ever holds a
//!   JSON number or string.
//! - The member order is fixed and documented on each function, so replies are byte-stable for
//!   tests and clients that compare text.
//! - `id` is present exactly when the request had one.

use super::command::{Command, CommandError, ErrorCode, RequestId};
use super::envelope::write_json_string;

/// Which subscription or watch change an ack confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOp {
    /// Reply to `subscribe`: `{"op":"subscribed","channel":...}`.
    Subscribed,
    /// Reply to `unsubscribe`: `{"op":"unsubscribed","channel":...}`.
    Unsubscribed,
    /// Reply to `psubscribe`: `{"op":"psubscribed","pattern":...}`.
    Psubscribed,
    /// Reply to `punsubscribe`: `{"op":"punsubscribed","pattern":...}`.
    Punsubscribed,
    /// Reply to `watch`: `{"op":"watched","key":...}`.
    Watched,
    /// Reply to `unwatch`: `{"op":"unwatched","key":...}`.
    Unwatched,
}

impl AckOp {
    /// The ack for `command`, or `None` for [`Command::Ping`], which is answered with
    /// [`render_pong`].
    pub fn for_command(command: &Command) -> Option<AckOp> {
        match command {
            Command::Subscribe { .. } => Some(AckOp::Subscribed),
            Command::Unsubscribe { .. } => Some(AckOp::Unsubscribed),
            Command::Psubscribe { .. } => Some(AckOp::Psubscribed),
            Command::Punsubscribe { .. } => Some(AckOp::Punsubscribed),
            Command::Watch { .. } => Some(AckOp::Watched),
            Command::Unwatch { .. } => Some(AckOp::Unwatched),
            Command::Ping | Command::Refresh { .. } => None,
        }
    }

    /// The value of the `op` member, for example `"subscribed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckOp::Subscribed => "subscribed",
            AckOp::Unsubscribed => "unsubscribed",
            AckOp::Psubscribed => "psubscribed",
            AckOp::Punsubscribed => "punsubscribed",
            AckOp::Watched => "watched",
            AckOp::Unwatched => "unwatched",
        }
    }

    /// The member that names the subject: `"channel"`, `"pattern"` or `"key"`.
    pub fn name_key(self) -> &'static str {
        match self {
            AckOp::Subscribed | AckOp::Unsubscribed => "channel",
            AckOp::Psubscribed | AckOp::Punsubscribed => "pattern",
            AckOp::Watched | AckOp::Unwatched => "key",
        }
    }
}

/// Renders an ack: `{"op":"subscribed","channel":"a","id":1}`. The member naming the subject
/// is `channel`, `pattern` or `key` depending on `op` (see [`AckOp::name_key`]), and `id` is
/// left out when `None`.
pub fn render_ack(op: AckOp, name: &str, id: Option<&RequestId>) -> String {
    let mut out = Vec::with_capacity(40 + name.len() + id_len(id));
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(op.as_str().as_bytes());
    out.extend_from_slice(b"\",\"");
    out.extend_from_slice(op.name_key().as_bytes());
    out.extend_from_slice(b"\":");
    write_json_string(&mut out, name.as_bytes());
    push_id(&mut out, id);
    out.push(b'}');
    into_string(out)
}

/// Renders the answer to `ping`: `{"op":"pong","id":5}`, or `{"op":"pong"}` without an id.
pub fn render_pong(id: Option<&RequestId>) -> String {
    let mut out = Vec::with_capacity(24 + id_len(id));
    out.extend_from_slice(b"{\"op\":\"pong\"");
    push_id(&mut out, id);
    out.push(b'}');
    into_string(out)
}

/// Renders the answer to a successful `refresh`: `{"op":"refreshed","exp":1767225600,"id":5}`
/// (`exp` is the new token's, in seconds since the Unix epoch).
pub fn render_refreshed(exp: u64, id: Option<&RequestId>) -> String {
    let mut out = Vec::with_capacity(48 + id_len(id));
    out.extend_from_slice(b"{\"op\":\"refreshed\",\"exp\":");
    out.extend_from_slice(exp.to_string().as_bytes());
    push_id(&mut out, id);
    out.push(b'}');
    into_string(out)
}

/// Renders an error: `{"op":"error","id":1,"code":"bad_json","message":"..."}`. `id` comes
/// before `code` and is left out when `None`.
pub fn render_error(id: Option<&RequestId>, code: ErrorCode, message: &str) -> String {
    let mut out = Vec::with_capacity(48 + id_len(id) + message.len());
    out.extend_from_slice(b"{\"op\":\"error\"");
    push_id(&mut out, id);
    out.extend_from_slice(b",\"code\":\"");
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    write_json_string(&mut out, message.as_bytes());
    out.push(b'}');
    into_string(out)
}

/// Renders the error reply for a failed [`parse_command`](super::parse_command) (or any other
/// [`CommandError`]).
pub fn render_command_error(error: &CommandError) -> String {
    render_error(error.id.as_ref(), error.code, &error.message)
}

/// Bytes the id adds, for capacity estimates.
fn id_len(id: Option<&RequestId>) -> usize {
    id.map_or(0, |id| id.0.len() + 6)
}

/// Appends `,"id":<raw>` when there is an id.
fn push_id(out: &mut Vec<u8>, id: Option<&RequestId>) {
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id.0.as_bytes());
    }
}

/// Turns a rendered reply into a `String`. Every piece is UTF-8 (`&str` inputs, a `Box<str>`
/// id, ASCII syntax, and `write_json_string`, which always writes UTF-8), so the lossy arm never
/// runs. It is there so that a bug cannot panic a shard.
fn into_string(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::command::parse_command;

    fn id(raw: &str) -> RequestId {
        RequestId(raw.into())
    }

    #[test]
    fn acks_match_the_wire_format() {
        assert_eq!(
            render_ack(AckOp::Subscribed, "a", Some(&id("1"))),
            r#"{"op":"subscribed","channel":"a","id":1}"#
        );
        assert_eq!(
            render_ack(AckOp::Unsubscribed, "a", Some(&id("2"))),
            r#"{"op":"unsubscribed","channel":"a","id":2}"#
        );
        assert_eq!(
            render_ack(AckOp::Psubscribed, "news.*", Some(&id("3"))),
            r#"{"op":"psubscribed","pattern":"news.*","id":3}"#
        );
        assert_eq!(
            render_ack(AckOp::Punsubscribed, "news.*", Some(&id("4"))),
            r#"{"op":"punsubscribed","pattern":"news.*","id":4}"#
        );
        assert_eq!(
            render_ack(AckOp::Subscribed, "a", None),
            r#"{"op":"subscribed","channel":"a"}"#
        );
        assert_eq!(
            render_ack(AckOp::Watched, "NAME", Some(&id("1"))),
            r#"{"op":"watched","key":"NAME","id":1}"#
        );
        assert_eq!(
            render_ack(AckOp::Unwatched, "NAME", Some(&id("2"))),
            r#"{"op":"unwatched","key":"NAME","id":2}"#
        );
        assert_eq!(
            render_ack(AckOp::Watched, "k", None),
            r#"{"op":"watched","key":"k"}"#
        );
    }

    #[test]
    fn ack_names() {
        for (op, wire, key) in [
            (AckOp::Subscribed, "subscribed", "channel"),
            (AckOp::Unsubscribed, "unsubscribed", "channel"),
            (AckOp::Psubscribed, "psubscribed", "pattern"),
            (AckOp::Punsubscribed, "punsubscribed", "pattern"),
            (AckOp::Watched, "watched", "key"),
            (AckOp::Unwatched, "unwatched", "key"),
        ] {
            assert_eq!(op.as_str(), wire);
            assert_eq!(op.name_key(), key);
        }
    }

    #[test]
    fn watch_acks_escape_the_key_and_echo_the_id() {
        let ack = render_ack(AckOp::Unwatched, "k\"\\\n\u{e9}", Some(&id(r#""w\"1""#)));
        assert_eq!(
            ack,
            "{\"op\":\"unwatched\",\"key\":\"k\\\"\\\\\\n\u{e9}\",\"id\":\"w\\\"1\"}"
        );
        let value: serde_json::Value = serde_json::from_str(&ack).expect("valid JSON");
        assert_eq!(value["key"], "k\"\\\n\u{e9}");
        assert_eq!(value["id"], "w\"1");
    }

    #[test]
    fn pong() {
        assert_eq!(render_pong(Some(&id("5"))), r#"{"op":"pong","id":5}"#);
        assert_eq!(render_pong(None), r#"{"op":"pong"}"#);
    }

    #[test]
    fn errors() {
        assert_eq!(
            render_error(
                Some(&id("1")),
                ErrorCode::NotSubscribed,
                "not subscribed to \"a\""
            ),
            r#"{"op":"error","id":1,"code":"not_subscribed","message":"not subscribed to \"a\""}"#
        );
        assert_eq!(
            render_error(None, ErrorCode::BadJson, "message is not valid JSON"),
            r#"{"op":"error","code":"bad_json","message":"message is not valid JSON"}"#
        );
    }

    #[test]
    fn ids_are_echoed_verbatim() {
        for raw in ["1.5", "1.50", "1e2", "-0", r#""abc""#, r#""a\"b\u00e9""#] {
            assert_eq!(
                render_pong(Some(&id(raw))),
                format!(r#"{{"op":"pong","id":{raw}}}"#)
            );
        }
    }

    #[test]
    fn names_and_messages_are_escaped() {
        let ack = render_ack(AckOp::Subscribed, "q\"\\\u{e9}\u{1F600}", None);
        let value: serde_json::Value = serde_json::from_str(&ack).expect("valid JSON");
        assert_eq!(value["channel"], "q\"\\\u{e9}\u{1F600}");
        let error = render_error(None, ErrorCode::Internal, "line\nbreak\u{0}");
        let value: serde_json::Value = serde_json::from_str(&error).expect("valid JSON");
        assert_eq!(value["message"], "line\nbreak\u{0}");
    }

    #[test]
    fn ack_for_command() {
        assert_eq!(
            AckOp::for_command(&Command::Psubscribe {
                pattern: "p".into()
            }),
            Some(AckOp::Psubscribed)
        );
        assert_eq!(
            AckOp::for_command(&Command::Subscribe {
                channel: "c".into(),
                snapshot: Some("k".into())
            }),
            Some(AckOp::Subscribed)
        );
        assert_eq!(
            AckOp::for_command(&Command::Watch { key: "k".into() }),
            Some(AckOp::Watched)
        );
        assert_eq!(
            AckOp::for_command(&Command::Unwatch { key: "k".into() }),
            Some(AckOp::Unwatched)
        );
        assert_eq!(AckOp::for_command(&Command::Ping), None);
    }

    #[test]
    fn command_errors_round_trip_through_parse() {
        let mut text = br#"{"op":"subscribe","id":"r-1"}"#.to_vec();
        let error = parse_command(&mut text).expect_err("channel is missing");
        let reply = render_command_error(&error);
        assert_eq!(
            reply,
            r#"{"op":"error","id":"r-1","code":"missing_field","message":"\"channel\" must be a string"}"#
        );
    }

    #[test]
    fn watch_round_trips_through_parse() {
        for (text, reply) in [
            (
                r#"{"op":"watch","key":"NAME","id":1}"#,
                r#"{"op":"watched","key":"NAME","id":1}"#,
            ),
            (
                r#"{"op":"unwatch","key":"NAME","id":2}"#,
                r#"{"op":"unwatched","key":"NAME","id":2}"#,
            ),
        ] {
            let mut scratch = text.as_bytes().to_vec();
            let request = parse_command(&mut scratch).expect("valid command");
            let (Command::Watch { key } | Command::Unwatch { key }) = &request.command else {
                panic!("{text} parsed as {request:?}");
            };
            let op = AckOp::for_command(&request.command).expect("an ack");
            assert_eq!(render_ack(op, key, request.id.as_ref()), reply);
        }
        let mut text = br#"{"op":"watch","key":"","id":3}"#.to_vec();
        let error = parse_command(&mut text).expect_err("key is empty");
        assert_eq!(
            render_command_error(&error),
            r#"{"op":"error","id":3,"code":"bad_channel","message":"\"key\" must not be empty"}"#
        );
    }

    #[test]
    fn every_reply_is_valid_json_for_every_parsed_id() {
        for raw in [
            "0",
            "-1.5e-3",
            r#""""#,
            r#""\ud83d\ude00 \\ \"""#,
            "\"\u{e9}\"",
        ] {
            let mut text = format!(r#"{{"op":"ping","id":{raw}}}"#).into_bytes();
            let request = parse_command(&mut text).expect("valid ping");
            let id = request.id.as_ref();
            for reply in [
                render_pong(id),
                render_ack(AckOp::Psubscribed, "p.*", id),
                render_ack(AckOp::Watched, "k", id),
                render_error(id, ErrorCode::TooManySubscriptions, "limit is 100"),
            ] {
                let value: serde_json::Value = serde_json::from_str(&reply)
                    .unwrap_or_else(|e| panic!("{reply} is not JSON: {e}"));
                let expected: serde_json::Value = serde_json::from_str(raw).expect("valid id");
                assert_eq!(value["id"], expected, "{reply}");
            }
        }
    }
}
