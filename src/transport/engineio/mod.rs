//! Engine.IO v4 and Socket.IO v5 at `/socket.io/`, written from the two protocol specifications
//! (socketio/engine.io-protocol, socketio/socket.io-protocol).
//!
//! Pure, any thread: nothing here touches a socket or a clock; time comes in as an `Instant`.
//!
//! - [`packet`]: Engine.IO packets (`0`..`6`) and Socket.IO packets (`0`..`6`, namespace, ack
//!   id): borrowed decoding of what clients send, and the server's encodings, the broadcast
//!   event `42["<event>",<json>]` built once into [`bytes::Bytes`].
//! - [`payload`]: the polling body, packets joined by the record separator `\x1e`.
//! - [`handshake`]: the query of a `/socket.io/` request, the Engine.IO error bodies, and the
//!   Origin rule (the SuperDARN allow-list by default).
//! - [`sid`]: 20-character session ids that name the shard owning the session.
//! - [`config`]: the per-route knobs (ping interval and timeout, max payload, bounds).
//! - [`session`]: one Engine.IO session as a state machine (`handle_*` in, `poll_*` out):
//!   transports and the upgrade, the bounded queue for the next GET, the heartbeat, and the
//!   default namespace.
//!
//! The same encoded bytes (`42[…]`) are one WebSocket text frame and one segment of a polling
//! body, so a broadcast is encoded once and shared by every session on every shard.
//!
//! The shard side lives in [`crate::shard::eio`] (the session table, broadcasts, timers, the
//! hand-off of a request to the shard its sid names) and `conn::eio` (the HTTP requests and
//! the WebSocket transport).

pub mod config;
pub mod handshake;
pub mod packet;
pub mod payload;
pub mod session;
pub mod sid;
