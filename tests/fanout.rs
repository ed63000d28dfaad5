//! Fan-out: every subscriber on every shard gets every message exactly once and in order; many
//! channels and patterns route correctly; unsubscribe stops delivery; acks carry request ids.

mod common;

use common::{Client, Gateway};
use serde_json::{Value, json};

#[test]
fn five_hundred_clients_over_all_shards_get_every_message_in_order() {
    let gw = Gateway::start(&["--shards", "4"]);
    let mut clients: Vec<Client> = (0..500).map(|_| gw.ws("/ws?subscribe=fan")).collect();
    for c in &mut clients {
        let ack = c.recv_json();
        assert_eq!(ack, json!({"op": "subscribed", "channel": "fan"}));
    }
    for shard in 0..4 {
        let n = gw.metric(&format!("ringcast_shard_websockets{{shard=\"{shard}\"}}"));
        assert!(n > 0, "shard {shard} got no connections");
    }
    assert_eq!(gw.metric("ringcast_websockets"), 500);
    // The 500 WebSockets plus the HTTP connection asking for /metrics.
    assert_eq!(gw.metric("ringcast_connections"), 501);
    const N: u64 = 50;
    for i in 0..N {
        gw.publish("fan", &json!({"seq": i}));
    }
    for c in &mut clients {
        for i in 0..N {
            let ev = c.recv_json();
            assert_eq!(ev, json!({"channel": "fan", "data": {"seq": i}}));
        }
    }
    // Exactly once: a marker published after the run is the very next message everywhere.
    gw.publish("fan", &json!("end"));
    for c in &mut clients {
        assert_eq!(c.recv_json()["data"], "end");
    }
    // Encoded once per publish in the whole process, not per subscriber or per shard.
    assert_eq!(gw.metric("ringcast_frames_encoded_total"), N + 1);
    assert_eq!(
        gw.metric("ringcast_messages_out_total"),
        500 * (N + 1) + 500
    );
}

#[test]
fn many_channels_route_only_to_their_subscribers() {
    let gw = Gateway::start(&["--shards", "2"]);
    let mut clients: Vec<(usize, Client)> = (0..40)
        .map(|i| {
            let ch = i % 10;
            let mut c = gw.ws(&format!("/ws?subscribe=ch{ch}"));
            assert_eq!(c.recv_json()["op"], "subscribed");
            (ch, c)
        })
        .collect();
    for ch in 0..10 {
        gw.publish(&format!("ch{ch}"), &json!(ch));
    }
    for (ch, c) in &mut clients {
        let ev = c.recv_json();
        assert_eq!(ev["channel"], format!("ch{ch}"));
        assert_eq!(ev["data"], json!(*ch));
    }
    assert_eq!(gw.metric("ringcast_hub_topics"), 10);
}

#[test]
fn patterns_match_globs_and_name_the_pattern() {
    let gw = Gateway::start(&["--shards", "2"]);
    let mut c = gw.ws("/ws");
    c.command(json!({"op": "psubscribe", "pattern": "news.*", "id": 7}));
    assert_eq!(
        c.recv_json(),
        json!({"op": "psubscribed", "pattern": "news.*", "id": 7})
    );
    gw.publish("sport.x", &json!(0));
    gw.publish("news.eu", &json!({"h": 1}));
    assert_eq!(
        c.recv_json(),
        json!({"channel": "news.eu", "pattern": "news.*", "data": {"h": 1}})
    );
    c.command(json!({"op": "punsubscribe", "pattern": "news.*", "id": "p"}));
    assert_eq!(
        c.recv_json(),
        json!({"op": "punsubscribed", "pattern": "news.*", "id": "p"})
    );
}

#[test]
fn nothing_arrives_after_unsubscribe() {
    let gw = Gateway::start(&["--shards", "2"]);
    let mut c = gw.ws("/ws?subscribe=a,marker");
    c.recv_json();
    c.recv_json();
    gw.publish("a", &json!(1));
    assert_eq!(c.recv_json()["data"], 1);
    c.command(json!({"op": "unsubscribe", "channel": "a", "id": 2}));
    assert_eq!(
        c.recv_json(),
        json!({"op": "unsubscribed", "channel": "a", "id": 2})
    );
    gw.publish("a", &json!(2));
    gw.publish("marker", &json!("m"));
    // The marker was published after "a"; if "a" still arrived it would come first.
    assert_eq!(c.recv_json(), json!({"channel": "marker", "data": "m"}));
}

#[test]
fn acks_and_errors_carry_request_ids() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut c = gw.ws("/ws");
    c.command(json!({"op": "subscribe", "channel": "x", "id": 41}));
    assert_eq!(
        c.recv_json(),
        json!({"op": "subscribed", "channel": "x", "id": 41})
    );
    c.command(json!({"op": "ping", "id": "p1"}));
    assert_eq!(c.recv_json(), json!({"op": "pong", "id": "p1"}));
    c.command(json!({"op": "unsubscribe", "channel": "nope", "id": 42}));
    let err = c.recv_json();
    assert_eq!(
        (err["op"].clone(), err["id"].clone(), err["code"].clone()),
        (json!("error"), json!(42), json!("not_subscribed"))
    );
    c.command(json!({"op": "fly", "id": 43}));
    let err = c.recv_json();
    assert_eq!(
        (err["id"].clone(), err["code"].clone()),
        (json!(43), json!("unknown_op"))
    );
    c.send("{not json");
    let err: Value = c.recv_json();
    assert_eq!(err["code"], "bad_json");
    assert!(err.get("id").is_none());
    c.command(json!({"op": "subscribe", "id": 44}));
    let err = c.recv_json();
    assert_eq!(
        (err["id"].clone(), err["code"].clone()),
        (json!(44), json!("missing_field"))
    );
    // The connection survived all of that.
    gw.publish("x", &json!("still here"));
    assert_eq!(c.recv_json()["data"], "still here");
}

#[test]
fn raw_mode_forwards_payload_bytes_verbatim() {
    let gw = Gateway::start(&["--shards", "2"]);
    let mut raw = gw.ws("/ws?format=raw");
    raw.subscribe("r");
    let mut json_client = gw.ws("/ws?subscribe=r");
    json_client.recv_json();
    gw.publish("r", &json!("plain text"));
    gw.publish("r", &json!({"k": [1, 2]}));
    assert_eq!(raw.recv_text(), "plain text");
    assert_eq!(raw.recv_text(), r#"{"k":[1,2]}"#);
    assert_eq!(
        json_client.recv_json(),
        json!({"channel": "r", "data": "plain text"})
    );
    assert_eq!(
        json_client.recv_json(),
        json!({"channel": "r", "data": {"k": [1, 2]}})
    );
    // One frame per format per publish.
    assert_eq!(gw.metric("ringcast_frames_encoded_total"), 4);
}
