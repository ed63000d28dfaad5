//! Persistent state that lives off the shards: files written by a thread of their own.
//!
//! - [`registry`]: the Squonk2 event-stream registry (SQLite), one thread per database file.
//! - [`shortuuid`]: the 22-character base57 ids the registry hands out.

pub mod registry;
pub mod shortuuid;
