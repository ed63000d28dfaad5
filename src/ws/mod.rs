//! WebSocket pieces, layered like tungstenite's own folders.
//!
//! - [`handshake`]: validates an upgrade request with tungstenite and renders the 101 response.
//! - [`codec`]: drives tungstenite's `WebSocketContext` over in-memory buffers, so the shard's
//!   socket reads feed it and its writes (pongs, close replies) land in the connection outbox.
//! - [`frame`]: encode-once server frames. Server frames are unmasked (RFC 6455 §5.1), so one
//!   encoding serves every recipient of a message.
//!
//! We use tungstenite for everything we *receive* (handshake validation, client frame parsing,
//! masking, fragmentation, UTF-8 and close-code checks) and our own [`frame`] encoder for
//! everything we *send*, because tungstenite's write path copies each message into each
//! connection's buffer, which is exactly the per-subscriber work we avoid.

pub mod codec;
pub mod frame;
pub mod handshake;
