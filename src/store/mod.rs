//! Persistent state that lives off the shards: files written by a thread of their own.
//!
//! - [`echoes`]: the SuperDARN echo-count history behind `GET /echoes` (SQLite), one thread.
//! - [`registry`]: the Squonk2 event-stream registry (SQLite), one thread per database file.
//! - [`shortuuid`]: the 22-character base57 ids the registry hands out.

pub mod echoes;
pub mod registry;
pub mod shortuuid;
