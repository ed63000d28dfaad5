//! Liveness: the gateway pings every `--ping-interval`; a client that stays silent (answers no
//! ping) is closed with 4001 after `--idle-timeout`, while a client that answers pings stays open.

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, RawWs};
use serde_json::json;
use tungstenite::Message;

#[test]
fn a_silent_client_is_pinged_then_closed_with_4001_while_a_live_one_stays() {
    let gw = Gateway::start(&[
        "--shards",
        "1",
        "--ping-interval",
        "200ms",
        "--idle-timeout",
        "1s",
    ]);

    // The live client answers pings: tungstenite queues the pong when it reads a ping and
    // writes it at the start of the next `read()`, which this thread calls at once.
    let mut live = gw.ws("/ws");
    live.subscribe("still");
    let live = std::thread::spawn(move || {
        let mut pings = 0;
        loop {
            match live.ws.read().expect("live client read") {
                Message::Ping(p) => {
                    assert!(p.is_empty());
                    pings += 1;
                }
                Message::Text(t) => return (pings, t.to_string(), live),
                other => panic!("live client got {other:?}"),
            }
        }
    });

    // Taken before connecting: the gateway's idle clock starts later than this.
    let start = Instant::now();
    let mut silent = RawWs::connect(gw.addr, "/ws");
    let mut pings = 0;
    let close = loop {
        let frame = silent.read_frame().expect("a frame before EOF");
        match frame.opcode {
            0x9 => {
                assert!(frame.payload.is_empty(), "{frame:?}");
                pings += 1;
            }
            0x8 => break frame,
            _ => panic!("unexpected frame {frame:?}"),
        }
    };
    let elapsed = start.elapsed();
    assert_eq!(close.close_code(), Some(4001), "{close:?}");
    assert_eq!(&close.payload[2..], b"idle timeout");
    assert!(
        elapsed >= Duration::from_secs(1),
        "closed after {elapsed:?}"
    );
    assert!(pings >= 2, "only {pings} pings in {elapsed:?}");
    // After the close frame the gateway half-closes: EOF, with nothing after the close.
    assert_eq!(silent.read_frame(), None);
    // Once the silent client leaves too, only the live one is left.
    drop(silent);
    gw.wait_metric("ringcast_websockets", |n| n == 1);
    assert_eq!(gw.metric("ringcast_idle_closes_total"), 1);

    // The live client outlived the silent one and still gets events.
    gw.publish("still", &json!("here"));
    let (live_pings, text, _live) = live.join().expect("live client thread");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        json!({"channel": "still", "data": "here"})
    );
    assert!(live_pings >= 2, "live client saw {live_pings} pings");
    assert_eq!(gw.metric("ringcast_idle_closes_total"), 1);
    assert_eq!(gw.metric("ringcast_websockets"), 1);
}
