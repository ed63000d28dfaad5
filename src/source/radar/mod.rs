//! Radar feeds (SuperDARN, issue 12): raw binary sources that are not brokers. A feed thread
//! reads records (RST "connex" frames over TCP, or ZMQ multipart `[site, zlib(record)]`), decodes
//! each DMAP record ([`dmap`]) and hands it on to be rendered once per record
//! ([`crate::profile::superdarn`]).
//!
//! The TCP feeds run as one [`source::RadarSource`] the hub drives, each feed on its own
//! thread ([`feed`]).
//!
//! Thread: the types here are plain values and the decoders are pure (any thread); [`feed`]
//! runs one thread per radar, [`source`] lives on the hub thread.

pub mod config;
pub mod connex;
pub mod dmap;
pub mod feed;
pub mod pipeline;
pub mod source;
pub mod zmq;
