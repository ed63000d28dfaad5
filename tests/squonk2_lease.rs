//! Two `ringcast --preset squonk2` instances that share one Redis (`--redis`) and one registry
//! file keep one live socket per routing key between them (COMPAT.md Q7): a newer socket on
//! instance B takes the stream from a socket on instance A, which then closes with 1000 `The
//! stream has been deleted` on the stream's next message, without that message, while B's
//! socket gets it; and a `DELETE` through B's API closes a socket on A the same way on the
//! stream's next message. Without RabbitMQ each test prints `SKIPPED` and passes, except under
//! `CI=true`, where it fails.

mod common;
#[path = "common/ess.rs"]
mod ess;
#[path = "common/rabbit.rs"]
mod rabbit;

use std::path::Path;
use std::time::Instant;

use common::{Client, RedisServer, Resp, http};
use ess::{Ess, until_live};
use rabbit::Publisher;
use tungstenite::Message;

const DELETED: &str = "The stream has been deleted";

/// An instance sharing `redis` and the registry file in `dir` with the others.
fn start(redis: &RedisServer, dir: &Path) -> Ess {
    Ess::start(dir, &["--redis", &redis.url(0)])
}

/// Reads until the close frame: its code, its reason, and the texts before it.
fn close_of(c: &mut Client) -> (u16, String, Vec<String>) {
    let mut texts = Vec::new();
    loop {
        match c.ws.read() {
            Ok(Message::Text(t)) => texts.push(t.to_string()),
            Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string(), texts),
            Ok(_) => {}
            Err(e) => panic!("ended without a close frame: {e}"),
        }
    }
}

/// The next text that is not a marker.
fn next_non_marker(c: &mut Client) -> String {
    loop {
        let t = c.recv_text();
        if !t.starts_with("marker") {
            return t;
        }
    }
}

/// Waits until `key` is gone from Redis.
fn wait_deleted(redis: &RedisServer, key: &str) {
    let start = Instant::now();
    while redis.cmd(&["EXISTS", key]) != Resp::Int(0) {
        assert!(start.elapsed() < common::TIMEOUT, "{key} was never deleted");
        std::thread::yield_now();
    }
}

#[test]
fn a_socket_on_another_instance_or_a_delete_there_ends_the_older_socket_on_its_next_message() {
    if !rabbit::available("lease") {
        return;
    }
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("ringcast-squonk2-lease-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let a = start(&redis, &dir);
    let b = start(&redis, &dir);
    let mut p = Publisher::connect();

    // A newer socket on B takes the stream: A's socket ends on the next message, without it.
    let stream = p.stream("lease");
    let (_, path) = a.create(&stream);
    let mut on_a = Client::connect(a.ws, &path);
    until_live(&p, &stream, &mut on_a);
    let key = format!("ringcast:ess:{stream}");
    let Resp::Bulk(Some(token_a)) = redis.cmd(&["GET", &key]) else {
        panic!("no lease key {key}");
    };
    let mut on_b = Client::connect(b.ws, &path);
    until_live(&p, &stream, &mut on_b);
    let Resp::Bulk(Some(token_b)) = redis.cmd(&["GET", &key]) else {
        panic!("no lease key {key}");
    };
    assert_ne!(token_a, token_b, "B's socket holds the stream now");
    p.publish(&stream, &[b"for-b".to_vec()]);
    assert!(next_non_marker(&mut on_b).starts_with("for-b|ordinal: "));
    let (code, reason, texts) = close_of(&mut on_a);
    assert_eq!((code, reason.as_str()), (1000, DELETED));
    assert!(texts.iter().all(|t| t.starts_with("marker")), "{texts:?}");
    assert!(a.gw.metric("ringcast_replay_lease_knockouts_total") >= 1);
    assert!(a.gw.metric("ringcast_replay_lease_checks_total") >= 1);
    assert_eq!(a.gw.metric("ringcast_replay_lease_errors_total"), 0);

    // A DELETE through B's API closes a socket on A on the stream's next message.
    let first = stream;
    let stream = p.stream("lease-delete");
    let (id, path) = a.create(&stream);
    let mut on_a = Client::connect(a.ws, &path);
    until_live(&p, &stream, &mut on_a);
    let (status, _) = http(b.api, "DELETE", &format!("/event-stream/{id}"), &[], b"");
    assert_eq!(status, 204);
    wait_deleted(&redis, &format!("ringcast:ess:{stream}"));
    p.publish(&stream, &[b"after-delete".to_vec()]);
    let (code, reason, texts) = close_of(&mut on_a);
    assert_eq!((code, reason.as_str()), (1000, DELETED));
    assert!(texts.iter().all(|t| t.starts_with("marker")), "{texts:?}");
    assert_eq!(b.gw.metric("ringcast_replay_lease_revokes_total"), 1);

    // B's socket, which holds the first stream, still streams; B released nothing of A's.
    p.publish(&first, &[b"still-b".to_vec()]);
    assert!(next_non_marker(&mut on_b).starts_with("still-b|ordinal: "));
    assert_eq!(b.gw.metric("ringcast_replay_lease_knockouts_total"), 0);
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
