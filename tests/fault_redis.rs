//! Fault injection on the Redis upstream (issue 14, point 8), with a real redis-server:
//! - stopped with `SIGSTOP` for 10 s, then `SIGCONT`: no client is dropped, `/healthz` reports
//!   degraded while Redis is stalled (found by the deadline on a `PING`, since the TCP
//!   connection stays up), and the events published after the resume arrive, in order;
//! - restarted with another password: a clear log line, retries, and recovery (resubscribed,
//!   events flow) once the password is put back.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Gateway, RedisClient, RedisServer, Resp, TIMEOUT};
use serde_json::json;

/// How long a stall lasts, as the issue asks.
const STALL: Duration = Duration::from_secs(10);

fn health(gw: &Gateway) -> String {
    let (status, body) = gw.http("GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{body}");
    body
}

fn wait_health(gw: &Gateway, needle: &str) {
    let start = Instant::now();
    while !health(gw).contains(needle) {
        assert!(
            start.elapsed() < TIMEOUT,
            "/healthz never said {needle}: {}",
            health(gw)
        );
        std::thread::yield_now();
    }
}

/// Every client answers a ping: it is still connected and served.
fn all_alive(clients: &mut [Client]) {
    for c in clients.iter_mut() {
        c.command(json!({"op": "ping", "id": 7}));
        assert_eq!(c.recv_json()["op"], "pong");
    }
}

#[test]
fn a_stalled_redis_degrades_health_drops_no_client_and_loses_nothing_after() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&["--shards", "2", "--redis", &redis.url(0)]);
    let mut clients: Vec<Client> = (0..20)
        .map(|_| {
            let mut c = gw.ws("/ws?subscribe=ev");
            assert_eq!(c.recv_json()["op"], "subscribed");
            c
        })
        .collect();
    redis.wait_numsub("ev", 1);
    wait_health(&gw, "\"ok\"");

    redis.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    // The TCP connection is intact: only the unanswered PING tells.
    wait_health(&gw, "degraded");
    // Logged (the log is read from the gateway's stderr by another thread: wait for it).
    gw.wait_log(&["redis stopped answering"], 1);
    all_alive(&mut clients);
    // Hold the stall for the whole 10 s, then resume.
    std::thread::sleep(STALL.saturating_sub(stopped.elapsed()));
    all_alive(&mut clients);
    redis.signal(libc::SIGCONT);
    wait_health(&gw, "\"ok\"");
    assert_eq!(
        gw.metric("ringcast_redis_reconnects_total"),
        0,
        "the connection was kept"
    );

    let mut publisher = RedisClient::connect(redis.port);
    for i in 0..100 {
        assert!(matches!(
            publisher.cmd(&["PUBLISH", "ev", &i.to_string()]),
            Resp::Int(1)
        ));
    }
    for c in &mut clients {
        for i in 0..100 {
            assert_eq!(c.recv_json(), json!({"channel": "ev", "data": i}));
        }
    }
}

#[test]
fn a_redis_restarted_with_another_password_recovers_once_it_is_fixed() {
    let mut redis = RedisServer::start_with(&["--requirepass", "first"]);
    let url = format!("redis://:first@127.0.0.1:{}/0", redis.port);
    let gw = Gateway::redis_fast_retry(&url);
    let mut c = gw.ws("/ws?subscribe=ev");
    assert_eq!(c.recv_json()["op"], "subscribed");
    wait_health(&gw, "\"ok\"");

    redis.restart_with(&["--requirepass", "second"]);
    wait_health(&gw, "degraded");
    // Logged clearly, and retried.
    gw.wait_log(&["authentication refused"], 2);
    assert!(
        !gw.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("first") && !l.contains("***") && l.contains("redis://")),
        "the password reached the log"
    );
    c.command(json!({"op": "ping"}));
    assert_eq!(c.recv_json()["op"], "pong");

    // The operator puts the password back: the gateway reconnects and resubscribes.
    let mut admin = RedisClient::connect(redis.port);
    assert_eq!(admin.cmd(&["AUTH", "second"]), Resp::Simple("OK".into()));
    assert_eq!(
        admin.cmd(&["CONFIG", "SET", "requirepass", "first"]),
        Resp::Simple("OK".into())
    );
    wait_health(&gw, "\"ok\"");
    let start = Instant::now();
    loop {
        if let Resp::Array(items) = admin.cmd(&["PUBSUB", "NUMSUB", "ev"])
            && items.get(1) == Some(&Resp::Int(1))
        {
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "never resubscribed");
        std::thread::yield_now();
    }
    admin.cmd(&["PUBLISH", "ev", "\"back\""]);
    assert_eq!(c.recv_json(), json!({"channel": "ev", "data": "back"}));
}
