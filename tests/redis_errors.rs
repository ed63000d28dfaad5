//! Bad upstreams never crash the gateway: a wrong password gives a clear log line and retries;
//! a "Redis" that answers garbage is reset and reconnected; clients stay connected throughout.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::{Gateway, RedisServer, TIMEOUT};

#[test]
fn wrong_password_is_logged_clearly_and_retried() {
    let redis = RedisServer::start_with(&["--requirepass", "right"]);
    let url = format!("redis://:hunter2x@127.0.0.1:{}/0", redis.port);
    let gw = Gateway::redis_fast_retry(&url);
    gw.wait_log(&["authentication refused"], 2);
    assert!(
        !gw.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("hunter2x")),
        "password leaked to logs"
    );
    let (status, body) = gw.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
    assert!(body.contains("degraded"));
    let mut c = gw.ws("/ws?subscribe=x");
    assert_eq!(c.recv_json()["op"], "subscribed");
}

#[test]
fn garbage_from_redis_resets_the_connection_and_recovers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            // One thread per connection: the command connection (RESP2, no password, db 0)
            // sends nothing until it has a command, and must not hold up the others.
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"?this is not RESP\r\n\x00\xff");
            });
        }
    });
    let url = format!("redis://127.0.0.1:{port}/0");
    let gw = Gateway::redis_fast_retry(&url);
    let start = Instant::now();
    while accepted.load(Ordering::SeqCst) < 4 {
        assert!(
            start.elapsed() < TIMEOUT,
            "the upstream did not keep reconnecting"
        );
        std::thread::yield_now();
    }
    gw.wait_log(&["bad RESP"], 1);
    assert!(
        !gw.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("panicked"))
    );
    assert_eq!(gw.http("GET", "/healthz", &[], b"").0, 200);
}

#[test]
fn an_acl_user_can_authenticate() {
    let redis = RedisServer::start();
    let reply = redis.cmd(&[
        "ACL", "SETUSER", "app", "on", ">s3cret", "~*", "&*", "+@all",
    ]);
    assert_eq!(reply, common::Resp::Simple("OK".into()));
    for resp in ["2", "3"] {
        let url = format!("redis://app:s3cret@127.0.0.1:{}/0", redis.port);
        let gw = Gateway::start(&["--shards", "1", "--redis", &url, "--redis-resp", resp]);
        let mut c = gw.ws("/ws?subscribe=acl");
        assert_eq!(c.recv_json()["op"], "subscribed");
        redis.wait_numsub("acl", 1);
        redis.cmd(&["PUBLISH", "acl", "hi"]);
        assert_eq!(c.recv_json()["data"], "hi");
        assert!(
            !gw.log.lock().unwrap().iter().any(|l| l.contains("s3cret")),
            "password leaked"
        );
        drop(c);
        drop(gw);
        redis.wait_numsub("acl", 0);
    }
}
