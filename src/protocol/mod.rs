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
//! ```
//!
//! `id` is optional and may be any JSON number or string. Replies echo its exact text (`1.50`
//! stays `1.50`). Unknown members are ignored. Channel and pattern names are 1 to
//! [`MAX_TOPIC_BYTES`] bytes of UTF-8 with no control characters.
//!
//! Server to client, replies ([`reply`]):
//!
//! ```text
//! {"op":"subscribed","channel":"a","id":1}
//! {"op":"unsubscribed","channel":"a","id":2}
//! {"op":"psubscribed","pattern":"news.*","id":3}
//! {"op":"punsubscribed","pattern":"news.*","id":4}
//! {"op":"pong","id":5}
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
//! ```
//!
//! A payload that is valid JSON is embedded byte for byte. Any other payload is sent as a JSON
//! string, with invalid UTF-8 replaced by U+FFFD.
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
pub use envelope::{MAX_JSON_DEPTH, is_json, render_event, write_json_string};
pub use glob::{MAX_GLOB_NESTING, glob_match};
pub use reply::{AckOp, render_ack, render_command_error, render_error, render_pong};
