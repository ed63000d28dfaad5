//! ringcast: a thread-per-core io_uring WebSocket gateway.
//!
//! # Layout
//!
//! - [`auth`]: access control: listener policies, JWT verification, grants per connection.
//! - [`config`]: every knob, from CLI, `RINGCAST_*` environment variables, a TOML file, defaults.
//! - [`server`]: process lifecycle: binds listeners, starts the hub thread and the shards, waits
//!   for a signal, shuts down. `server/listen.rs` binds each address as one `SO_REUSEPORT`
//!   group that only this process joins.
//! - [`rt`]: the thin seam over the io_uring runtime (tokio-uring). Nothing else names it.
//! - [`shard`]: one OS thread per core; owns a listener, a `Slab` of connections and a
//!   subscriber table. Shards share nothing but messages on bounded channels.
//! - [`conn`]: one client connection: its state, its outbox of shared frames, its I/O loops,
//!   and each route profile's upgrade (`route.rs`, `ess.rs`) or HTTP API (`ess_api.rs`).
//! - [`ws`]: WebSocket pieces: handshake, the tungstenite codec driven over in-memory buffers,
//!   encode-once server frames.
//! - [`http`]: the plain HTTP routes on the same port (`/healthz`, `/metrics`, `/api/publish`, `/`,
//!   and SuperDARN's `GET /echoes`).
//! - [`router`]: topics and their interning, the hub (upstream side: interest and encode-once
//!   routing) and the shard-side subscriber table.
//! - [`source`]: where events come from. Pub/sub sources (`memory`, the embedded broker,
//!   `redis`, and `radar`, the SuperDARN TCP feeds on threads of their own) sit behind one trait
//!   driven by the hub; replay sources (`replay` is the seam,
//!   `rabbit_stream` the RabbitMQ streams of Squonk2) serve one connection each from a chosen
//!   offset, on threads of their own, straight to the shards; `replay_lease` holds one live
//!   consumer per stream across instances through a shared Redis (its own thread).
//! - [`profile`]: the drop-in wire contracts (Preflight, Status, BESS, Squonk2, SuperDARN): pure
//!   rendering and parsing.
//! - [`protocol`]: the native protocol v1: client commands, replies, event envelopes, close codes.
//! - [`metrics`]: single-writer per-shard counters and the Prometheus rendering.
//! - [`limits`]: what a hostile client meets: per-IP connection cap and handshake rate (one
//!   lock-free table shared by the shards), per-connection command rate, refusal counters.
//! - [`transport`]: how bytes reach a client whatever the profile: today `engineio` (Engine.IO
//!   v4 / Socket.IO v5: packets, polling payloads, the request parser, shard-naming sids and the
//!   session state machine, all pure); `ws` moves here later.
//! - [`store`]: state persisted off the shards: the Squonk2 event-stream registry (SQLite on a
//!   thread of its own) and its shortuuid ids, and the SuperDARN echo-count history behind
//!   `GET /echoes` (SQLite on a thread of its own, with retention).

pub mod auth;
pub mod config;
pub mod conn;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod profile;
pub mod protocol;
pub mod router;
pub mod rt;
pub mod server;
pub mod shard;
pub mod source;
pub mod store;
pub mod transport;
pub mod ws;
