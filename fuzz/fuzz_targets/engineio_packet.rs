//! Arbitrary bytes through the Engine.IO / Socket.IO decoders: one packet (a WebSocket text
//! frame), a polling POST body, a `/socket.io/` request's query and Origin, a session id, and a
//! session fed the bytes as frames and bodies. None of them may panic or loop, and the session's
//! queue must stay within its bound.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringcast::router::ShardId;
use ringcast::transport::engineio::config::EioConfig;
use ringcast::transport::engineio::handshake::{Method, OriginPolicy, RequestHead, parse_request};
use ringcast::transport::engineio::packet::{Packet, PacketType, SioPacket};
use ringcast::transport::engineio::payload;
use ringcast::transport::engineio::session::{OpenTransport, Session};
use ringcast::transport::engineio::sid::Sid;

fuzz_target!(|data: &[u8]| {
    decode(data);
    request(data);
    if let Ok(sid) = Sid::parse(data) {
        assert_eq!(Sid::parse(sid.as_bytes()), Ok(sid));
        let _ = sid.shard();
    }
    session(data);
});

fn decode(data: &[u8]) {
    if let Ok(p) = Packet::decode(data)
        && p.kind == PacketType::Message
    {
        let _ = SioPacket::decode(p.data);
    }
    if let Ok(body) = payload::decode(data, 1 << 16) {
        for p in body.packets() {
            let _ = SioPacket::decode(p.data);
        }
    }
}

fn request(data: &[u8]) {
    // The first byte picks the method and whether it is an upgrade; the rest splits at a NUL
    // into the query and the Origin.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let method = [Method::Get, Method::Post, Method::Options, Method::Other][usize::from(pick & 3)];
    let (query, origin) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let head = RequestHead {
        method,
        query,
        origin,
        websocket_upgrade: pick & 4 != 0,
    };
    let _ = parse_request(&head, &OriginPolicy::superdarn());
    let _ = parse_request(&head, &OriginPolicy::Any);
}

fn session(data: &[u8]) {
    let config = EioConfig {
        max_buffered_bytes: 4_096,
        max_buffered_packets: 16,
        ..EioConfig::default()
    };
    let t0 = Instant::now();
    let sid = Sid::from_parts(&[7; 15], ShardId(1));
    for on in [OpenTransport::Polling, OpenTransport::WebSocket] {
        let (mut s, _) = Session::open(sid, sid, on, t0, &config);
        let event = bytes::Bytes::from_static(b"42[\"sas\",{}]");
        // Segments separated by 0xff are steps; each step's first byte picks the input.
        for (i, step) in data.split(|&b| b == 0xff).enumerate() {
            let now = t0 + Duration::from_millis(u64::try_from(i).unwrap_or(0) * 5_000);
            let Some((&op, arg)) = step.split_first() else {
                continue;
            };
            match op % 8 {
                0 => drop(s.handle_get()),
                1 => drop(s.handle_post(arg, now)),
                2 => drop(s.handle_ws_open(now)),
                3 => drop(s.handle_ws_text(arg, now)),
                4 => s.handle_ws_closed(),
                5 => drop(s.handle_broadcast(&event)),
                6 => s.handle_timeout(now),
                _ => s.handle_get_cancelled(now),
            }
            while s.poll_event().is_some() {}
            let _ = s.poll_get_response(now);
            while s.poll_ws_frame().is_some() {}
            assert!(s.queued_bytes() <= config.max_buffered_bytes);
        }
    }
}
