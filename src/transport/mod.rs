//! How bytes reach a client, whatever the profile (STYLE.md 9.6).
//!
//! - [`engineio`]: Engine.IO v4 and Socket.IO v5 (the SuperDARN drop-in, issue 12): the pure
//!   codec, the polling payload, the request parser, shard-routing session ids and the session
//!   state machine; the shard side is `shard::eio` and `conn::eio`.
//!
//! TODO(layout, STYLE.md 9.6): today's `src/ws` (RFC 6455 handshake, codec, encode-once frames)
//! moves here as `transport/ws` in its own mechanical commit; `sse` follows later.
//!
//! **Thread:** nothing here owns a thread; see each module.

pub mod engineio;
