//! Radar feeds (SuperDARN, issue 12): raw binary sources that are not brokers. A feed thread
//! reads records (RST "connex" frames over TCP, [`feed`], or ZMQ multipart
//! `[site, zlib(record)]`, [`zmq`]) and hands each one to the shared record pipeline
//! ([`pipeline`]), which decodes the DMAP record ([`dmap`]), renders it once
//! ([`crate::profile::superdarn`]), calls the [`pipeline::EchoSink`] hook for echo counts and
//! sends the events to the hub.
//!
//! All feeds run as one [`source::RadarSource`] the hub drives, each feed on its own thread.
//!
//! Thread: the types here are plain values and the decoders are pure (any thread); [`feed`]
//! runs one thread per TCP radar, [`zmq`] one thread (with a current-thread tokio runtime) for
//! the ZMQ publisher, [`source`] lives on the hub thread.

pub mod config;
pub mod connex;
pub mod dmap;
pub mod feed;
pub mod pipeline;
pub mod source;
pub mod zmq;
