//! Radar feeds (SuperDARN, issue 12): raw binary sources that are not brokers. A feed thread
//! reads records (RST "connex" frames over TCP, or ZMQ multipart `[site, zlib(record)]`), decodes
//! each DMAP record ([`dmap`]) and hands it on to be rendered once per record
//! ([`crate::profile::superdarn`]).
//!
//! Thread: the types here are plain values; the decoders are pure (any thread).

pub mod config;
pub mod connex;
pub mod dmap;
