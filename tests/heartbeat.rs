//! The heartbeat rule (PROTOCOL.md, "Liveness"): every WebSocket is pinged each ping interval and
//! closed with 4001 once a ping has gone unanswered for the pong timeout, never before; a client
//! that answers pings but never sends a data frame (a browser) stays connected for ever, on the
//! native listener and on `--preset bess` (where a 20 s / 20 s default once closed every browser
//! before its first ping); `idle-timeout` cuts off only connections still in the HTTP phase.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Gateway, RawWs, RedisServer, TIMEOUT};
use serde_json::json;
use tungstenite::Message;

const PING: Duration = Duration::from_millis(300);
const PONG_TIMEOUT: Duration = Duration::from_millis(1_500);

/// Reads frames from a client that answers nothing until the server's close frame: the close
/// code and reason, the pings seen, and the time from the first ping to the close.
fn wait_for_close(ws: &mut RawWs) -> (u16, Vec<u8>, u32, Duration) {
    let mut first_ping: Option<Instant> = None;
    let mut pings = 0;
    loop {
        let frame = ws.read_frame().expect("a frame before EOF");
        match frame.opcode {
            0x9 => {
                assert!(frame.payload.is_empty(), "{frame:?}");
                first_ping.get_or_insert_with(Instant::now);
                pings += 1;
            }
            0x8 => {
                let since = first_ping
                    .expect("closed before it was ever pinged")
                    .elapsed();
                let code = frame.close_code().expect("a close code");
                return (code, frame.payload[2..].to_vec(), pings, since);
            }
            0x1 => {} // data (a BESS snapshot): not an answer to anything
            _ => panic!("unexpected frame {frame:?}"),
        }
    }
}

/// Asserts a close that came one pong timeout after the first unanswered ping, not before.
/// `start` was taken before connecting, `ping` is the ping interval.
fn assert_pong_timeout(close: (u16, Vec<u8>, u32, Duration), start: Instant, ping: Duration) {
    // Pings go on while one is unanswered (they keep proxies from idling the connection out).
    let min_pings = if ping < PONG_TIMEOUT { 2 } else { 1 };
    let (code, reason, pings, since_first_ping) = close;
    let elapsed = start.elapsed();
    assert_eq!((code, reason.as_slice()), (4001, &b"pong timeout"[..]));
    // The gateway's clock starts after `start`; its first ping is one interval later and the
    // close at least one pong timeout after that.
    assert!(
        elapsed >= ping + PONG_TIMEOUT,
        "closed {elapsed:?} after connecting"
    );
    // Seen from the client, less the first ping's delivery time; a late sweep on a loaded
    // machine may add to it, but not a second pong timeout.
    assert!(
        since_first_ping + Duration::from_millis(250) >= PONG_TIMEOUT
            && since_first_ping < PONG_TIMEOUT * 2 + Duration::from_secs(1),
        "closed {since_first_ping:?} after the first ping"
    );
    assert!(pings >= min_pings, "{pings} pings");
}

#[test]
fn an_unanswered_ping_closes_after_the_pong_timeout_while_a_quiet_answering_client_stays() {
    let gw = Gateway::start(&[
        "--shards",
        "1",
        "--ping-interval",
        "300ms",
        "--pong-timeout",
        "1500ms",
        "--idle-timeout",
        "200ms",
    ]);

    // The answering client subscribes by URL and never sends a data frame: tungstenite queues
    // the pong when it reads a ping and writes it at the start of the next `read()`.
    let mut live = gw.ws("/ws?subscribe=still");
    assert_eq!(live.recv_json()["op"], "subscribed");
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

    let start = Instant::now();
    let mut silent = RawWs::connect(gw.addr, "/ws");
    let close = wait_for_close(&mut silent);
    assert_pong_timeout(close, start, PING);
    // After the close frame the gateway half-closes: EOF, with nothing after the close.
    assert_eq!(silent.read_frame(), None);
    drop(silent);
    gw.wait_metric("ringcast_websockets", |n| n == 1);
    assert_eq!(gw.metric("ringcast_pong_timeout_closes_total"), 1);
    // The HTTP-phase idle timeout (200 ms) never applied to either WebSocket.
    assert_eq!(gw.metric("ringcast_idle_closes_total"), 0);

    // The quiet client outlived the silent one by far more than its idle and pong timeouts,
    // and still gets events.
    gw.publish("still", &json!("here"));
    let (live_pings, text, _live) = live.join().expect("live client thread");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).expect("json"),
        json!({"channel": "still", "data": "here"})
    );
    assert!(live_pings >= 5, "live client saw {live_pings} pings");
    assert_eq!(gw.metric("ringcast_pong_timeout_closes_total"), 1);
    assert_eq!(gw.metric("ringcast_websockets"), 1);
}

/// `--preset bess` with its default's shape (pong timeout equal to the ping interval, as
/// uvicorn's 20 s / 20 s), scaled down.
fn bess(redis: &RedisServer) -> Gateway {
    Gateway::bess(
        redis,
        &[
            "--route",
            "bess.ping_interval=1500ms",
            "--route",
            "bess.pong_timeout=1500ms",
        ],
    )
}

#[test]
fn bess_keeps_a_browser_like_client_through_many_pings_and_closes_one_that_never_answers() {
    let redis = RedisServer::start();
    redis.cmd(&["SADD", "info:batteries:ids", "1"]);
    redis.cmd(&["HSET", "battery:1:data", "voltage", "130"]);
    let gw = bess(&redis);
    let addr = gw.route_addr("bess");

    // A browser: reads the snapshot, answers pings (tungstenite does, as a browser's network
    // stack does), sends nothing else.
    let mut browser = common::Client::connect(addr, "/ws");
    let snapshot = browser.recv_text();
    assert!(snapshot.contains("battery:1:data"), "{snapshot}");
    let start = Instant::now();
    let mut silent = RawWs::connect(addr, "/ws");
    let browser = std::thread::spawn(move || {
        let mut pings = 0;
        while pings < 3 {
            match browser.ws.read().expect("browser read") {
                Message::Ping(_) => pings += 1,
                other => panic!("browser got {other:?} before three pings"),
            }
        }
        browser
    });
    // Under the old rule (silence counted) both clients were closed at the first ping.
    assert_pong_timeout(
        wait_for_close(&mut silent),
        start,
        Duration::from_millis(1_500),
    );
    let mut browser = browser.join().expect("browser thread");
    redis.cmd(&["HSET", "battery:1:data", "voltage", "131"]);
    redis.cmd(&["PUBLISH", "battery:1:data", "updated"]);
    let update = browser.recv_text();
    assert!(update.contains("\"voltage\":131"), "{update}");
    assert_eq!(gw.metric("ringcast_pong_timeout_closes_total"), 1);
}

#[test]
fn idle_timeout_cuts_off_an_unfinished_http_request() {
    let gw = Gateway::start(&["--shards", "1", "--idle-timeout", "300ms"]);
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let start = Instant::now();
    let mut buf = [0u8; 64];
    // The gateway shuts the socket down without a response.
    assert_eq!(s.read(&mut buf).expect("EOF, not a timeout"), 0);
    assert!(start.elapsed() >= Duration::from_millis(300));
    gw.wait_metric("ringcast_idle_closes_total", |n| n == 1);
}
