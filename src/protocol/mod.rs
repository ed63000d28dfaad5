//! The native protocol, version 1: client commands, replies, event envelopes, glob patterns and
//! close codes.
//!
//! Everything here is pure: bytes in, bytes or values out, no I/O, no clocks, no shared state.
//! Commands and replies are handled on the shard thread that owns the connection. Envelopes are
//! rendered once per publish wherever the publish is encoded (encode-once), never once per
//! subscriber.
//!
//! # Wire format
//!
//! Every message is one WebSocket text frame holding one JSON object.
//!
//! Client to server ([`command`]):
//!
//! ```text
//! {"op":"subscribe","channel":"a","id":1}
//! {"op":"unsubscribe","channel":"a","id":2}
//! {"op":"psubscribe","pattern":"news.*","id":3}
//! {"op":"punsubscribe","pattern":"news.*","id":4}
//! {"op":"ping","id":5}
//! {"op":"watch","key":"user:1","id":6}
//! {"op":"unwatch","key":"user:1","id":7}
//! {"op":"subscribe","channel":"a","snapshot":"user:1","id":8}
//! ```
//!
//! `id` is optional and may be any JSON number or string. Replies echo its exact text (`1.50`
//! stays `1.50`). Unknown members are ignored, as are known members a command does not use.
//! Channel names, patterns and keys (`key`, and `snapshot` on `subscribe`, which is optional)
//! are 1 to [`MAX_TOPIC_BYTES`] bytes of UTF-8 with no control characters.
//!
//! Server to client, replies ([`reply`]):
//!
//! ```text
//! {"op":"subscribed","channel":"a","id":1}
//! {"op":"unsubscribed","channel":"a","id":2}
//! {"op":"psubscribed","pattern":"news.*","id":3}
//! {"op":"punsubscribed","pattern":"news.*","id":4}
//! {"op":"pong","id":5}
//! {"op":"watched","key":"user:1","id":6}
//! {"op":"unwatched","key":"user:1","id":7}
//! {"op":"error","id":1,"code":"bad_channel","message":"\"channel\" must not be empty"}
//! ```
//!
//! `id` is left out when the request had none, or for an error, when it could not be read. The
//! error codes are listed in [`codes`]. A bad command gets an error reply and never closes the
//! connection.
//!
//! Server to client, events ([`envelope`]):
//!
//! ```text
//! {"channel":"a","data":<payload>}
//! {"channel":"news.x","pattern":"news.*","data":<payload>}
//! {"key":"user:1","type":"hash","value":{"name":"ann"}}
//! ```
//!
//! A payload that is valid JSON is embedded byte for byte. Any other payload is sent as a JSON
//! string, with invalid UTF-8 replaced by U+FFFD.
//!
//! A key event carries the value of a watched key (or a `subscribe` snapshot). `type` is the
//! Redis type name (`string`, `hash`, `list`, `set`, `zset`, `stream`, `none`). `value` is a
//! string for `string`, an object of strings for `hash`, an array of strings for `list` and
//! `set`, an array of `[member, score]` pairs for `zset` (a score that is not a JSON number,
//! such as `inf`, is a string), and `null` for `none`.
//!
//! Closing ([`close`]): the server closes with a [`CloseCode`]. Each code has a fixed reason
//! and advice on whether to reconnect.
//!
//! Patterns ([`glob`]) follow Redis `PSUBSCRIBE` matching, byte for byte.

pub mod close;
pub mod command;
pub mod envelope;
pub mod glob;
pub mod reply;

pub use close::CloseCode;
pub use command::{
    Command, CommandError, ErrorCode, MAX_TOPIC_BYTES, Request, RequestId, TopicError, check_topic,
    codes, parse_command,
};
pub use envelope::{
    event_len_hint, is_json, render_event, render_key_event, render_key_value_hash,
    render_string_array, render_zset, write_json_string,
};
pub use glob::{MAX_GLOB_NESTING, glob_match};
pub use reply::{
    AckOp, render_ack, render_command_error, render_error, render_pong, render_refreshed,
};
