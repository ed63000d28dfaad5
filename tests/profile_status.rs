//! Status profile (COMPAT.md S1–S4, H1–H2) against a real redis-server: the status envelope with
//! the message byte for byte, percent-decoded `<runid>:<channel>` paths, malformed paths
//! accepted and closed (1000, with a reason saying what the path lacks), one Redis subscription
//! per channel for all its clients (released when the last one leaves), and `hangup` off by
//! default.

mod common;

use common::{Client, Gateway, RedisServer};
use serde_json::Value;

fn status(gw: &Gateway, last_segment: &str) -> Client {
    Client::connect(
        gw.route_addr("status"),
        &format!("/weppcloud-microservices/status/{last_segment}"),
    )
}

#[test]
fn messages_arrive_wrapped_and_byte_for_byte() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    // encodeURIComponent(runid) + ":" + encodeURIComponent(channel), as status_stream.js does.
    let mut c = status(&gw, "my%20run%3B%3Bb:wepp");
    redis.wait_numsub("my run;;b:wepp", 1);
    let trigger = "rq:42 TRIGGER   wepp WEPP_RUN_TASK_COMPLETED";
    redis.cmd(&["PUBLISH", "my run;;b:wepp", trigger]);
    // Python json.dumps formatting, exactly.
    assert_eq!(
        c.recv_text(),
        format!(r#"{{"type": "status", "data": "{trigger}"}}"#)
    );
    for message in [
        "line one\nline two\ttabbed \"quoted\" back\\slash",
        "rq:7 EXCEPTION run_wepp(my run)",
        "unicode: é ü 雨 🌧",
        "",
    ] {
        redis.cmd(&["PUBLISH", "my run;;b:wepp", message]);
        let text = c.recv_text();
        assert!(
            text.is_ascii(),
            "non-ASCII is escaped as json.dumps does: {text}"
        );
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["type"], "status");
        assert_eq!(v["data"].as_str(), Some(message));
    }
}

#[test]
fn a_malformed_path_is_accepted_then_closed() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    for bad in ["no-colon", "a:b:c", ""] {
        let mut c = status(&gw, bad);
        // Code 1000 as the original, with a reason that says what is wrong with the URL.
        match c.ws.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1000, "path segment {bad:?}");
                assert_eq!(
                    frame.reason.as_str(),
                    "status path must end in <runid>:<channel>",
                    "path segment {bad:?}"
                );
            }
            other => panic!("path segment {bad:?}: expected a close frame, got {other:?}"),
        }
    }
    // The listener still serves good paths.
    let mut ok = status(&gw, "r:climate");
    redis.wait_numsub("r:climate", 1);
    redis.cmd(&["PUBLISH", "r:climate", "done"]);
    assert_eq!(ok.recv_text(), r#"{"type": "status", "data": "done"}"#);
}

#[test]
fn one_redis_subscription_serves_every_client_and_is_released_by_the_last() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    let mut clients: Vec<Client> = (0..30).map(|_| status(&gw, "run1:wepp")).collect();
    redis.wait_numsub("run1:wepp", 1);
    redis.cmd(&["PUBLISH", "run1:wepp", "hello"]);
    for c in &mut clients {
        assert_eq!(c.recv_text(), r#"{"type": "status", "data": "hello"}"#);
    }
    // Still exactly one subscription (the original opened one pubsub per client).
    redis.wait_numsub("run1:wepp", 1);
    for mut c in clients.drain(..) {
        c.ws.close(None).expect("close");
        while c.ws.read().is_ok() {}
    }
    redis.wait_numsub("run1:wepp", 0);
}

#[test]
fn no_hangup_by_default_and_hangup_when_asked() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &[]);
    let mut c = status(&gw, "r:x");
    redis.wait_numsub("r:x", 1);
    gw.signal(libc::SIGTERM);
    // The close comes with no `{"type":"hangup"}` before it: StatusStream would stop for good.
    match c.ws.read().expect("a frame") {
        tungstenite::Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected the close frame first, got {other:?}"),
    }

    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(&redis, &["--route", "status.hangup=true"]);
    let mut c = status(&gw, "r:y");
    redis.wait_numsub("r:y", 1);
    gw.signal(libc::SIGTERM);
    assert_eq!(c.recv_text(), r#"{"type":"hangup"}"#);
    assert_eq!(c.expect_close(), 1001);
}
