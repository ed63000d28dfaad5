//! Fault injection: a panic inside one connection's handling (the debug-build hook
//! `{"op":"debug_panic"}`, see `conn::native::DEBUG_PANIC`) drops that connection only. The
//! shard and every other client keep going: they still get publishes, new clients are served
//! on the same shard, the connection gauges come back down and the panic is counted.

mod common;

use common::{Gateway, TIMEOUT};
use serde_json::json;
use std::time::Instant;
use tungstenite::Message;

#[test]
fn a_panicking_connection_is_dropped_alone() {
    // One shard: the victim and the others share it.
    let gw = Gateway::start(&["--shards", "1"]);
    let mut victim = gw.ws("/ws?subscribe=news");
    assert_eq!(victim.recv_json()["op"], "subscribed");
    let mut others: Vec<_> = (0..3)
        .map(|_| {
            let mut c = gw.ws("/ws?subscribe=news");
            assert_eq!(c.recv_json()["op"], "subscribed");
            c
        })
        .collect();
    assert_eq!(gw.metric("ringcast_websockets"), 4);

    victim.send(r#"{"op":"debug_panic"}"#);
    // The victim's socket is closed under it: no more messages, then an error or EOF.
    let start = Instant::now();
    loop {
        match victim.ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(other) => panic!("the panicking connection sent {other:?}"),
        }
        assert!(start.elapsed() < TIMEOUT, "the victim was never closed");
    }
    gw.wait_metric("ringcast_connection_panics_total", |v| v == 1);
    gw.wait_metric("ringcast_websockets", |v| v == 3);
    gw.wait_metric("ringcast_subscriptions", |v| v == 3);

    // Everyone else goes on, and the shard takes new clients.
    gw.publish("news", &json!({"after": "panic"}));
    for c in &mut others {
        assert_eq!(
            c.recv_json(),
            json!({"channel": "news", "data": {"after": "panic"}})
        );
    }
    let mut late = gw.ws("/ws?subscribe=news");
    assert_eq!(late.recv_json()["op"], "subscribed");
    gw.publish("news", &json!(2));
    assert_eq!(late.recv_json(), json!({"channel": "news", "data": 2}));
    assert!(matches!(gw.http("GET", "/healthz", &[], b"").0, 200));
}
