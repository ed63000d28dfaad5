//! Plain HTTP on the WebSocket port: health, metrics and demo page (whose URL the start-up log
//! prints), 404/405/426 errors, the publish API's bearer key and body checks (401/400/413), and
//! keep-alive.

mod common;

use std::io::Write as _;
use std::net::TcpStream;

use common::{Gateway, Response, TIMEOUT, http_raw, parse_http_response, read_http_response};
use serde_json::{Value, json};

/// One request with `Connection: close`, parsed with its headers.
fn request(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        gw.addr,
        body.len()
    )
    .into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    let raw = http_raw(gw.addr, &req);
    let (resp, used) = parse_http_response(&raw)
        .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(&raw)));
    assert_eq!(used, raw.len(), "bytes after the response");
    resp
}

fn json_body(resp: &Response) -> Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&resp.body)))
}

#[test]
fn healthz_metrics_and_demo_page() {
    let gw = Gateway::start(&["--shards", "2"]);
    let health = request(&gw, "GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.header("content-type"), Some("application/json"));
    assert_eq!(json_body(&health), json!({"status": "ok"}));

    let metrics = request(&gw, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("# TYPE ringcast_connections gauge"), "{text}");
    for shard in 0..2 {
        let series = format!("ringcast_shard_connections{{shard=\"{shard}\"}}");
        assert!(
            ringcast::metrics::value(&text, &series).is_some(),
            "{series} missing"
        );
    }
    assert!(ringcast::metrics::value(&text, "ringcast_shard_connections{shard=\"2\"}").is_none());
    // The request being answered is itself an open connection.
    assert!(ringcast::metrics::value(&text, "ringcast_connections").unwrap() >= 1);

    let page = request(&gw, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("<html"));
    // The start-up log says where the demo page is, with the port actually bound.
    let want = format!("demo page: http://{}/", gw.addr);
    assert!(
        gw.log.lock().unwrap().iter().any(|l| l.ends_with(&want)),
        "no {want:?} line"
    );
    assert_eq!(gw.metric("ringcast_http_errors_total"), 0);
}

#[test]
fn unknown_paths_wrong_methods_and_missing_upgrades() {
    let gw = Gateway::start(&["--shards", "1"]);
    let nf = request(&gw, "GET", "/nope", &[], b"");
    assert_eq!(nf.status, 404);
    assert_eq!(json_body(&nf), json!({"error": "not found"}));

    let ws = request(&gw, "GET", "/ws", &[], b"");
    assert_eq!(ws.status, 426);
    assert_eq!(ws.header("upgrade"), Some("websocket"));

    let del = request(&gw, "DELETE", "/healthz", &[], b"");
    assert_eq!(del.status, 405);
    assert_eq!(json_body(&del), json!({"error": "method not allowed"}));
    let get_publish = request(&gw, "GET", "/api/publish", &[], b"");
    assert_eq!(get_publish.status, 405);

    // An upgrade to a path with no WebSocket route.
    let up = request(
        &gw,
        "GET",
        "/elsewhere",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    );
    assert_eq!(up.status, 404);
    assert_eq!(gw.metric("ringcast_http_errors_total"), 5);
}

#[test]
fn publish_requires_the_bearer_key_and_a_valid_body() {
    let gw = Gateway::start(&[
        "--shards",
        "2",
        "--api-key",
        "k1",
        "--max-message-bytes",
        "1KiB",
    ]);
    let mut sub = gw.ws("/ws?subscribe=api");
    assert_eq!(sub.recv_json()["op"], "subscribed");
    let body = br#"{"channel":"api","data":{"n":1}}"#;

    let none = request(&gw, "POST", "/api/publish", &[], body);
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = request(
        &gw,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer k2")],
        body,
    );
    assert_eq!(wrong.status, 401);
    let not_bearer = request(
        &gw,
        "POST",
        "/api/publish",
        &[("Authorization", "k1")],
        body,
    );
    assert_eq!(not_bearer.status, 401);

    let auth = [("Authorization", "Bearer k1")];
    let bad = request(&gw, "POST", "/api/publish", &auth, b"{\"channel\":");
    assert_eq!(bad.status, 400);
    assert!(
        json_body(&bad)["error"]
            .as_str()
            .unwrap()
            .starts_with("bad body")
    );
    let no_channel = request(
        &gw,
        "POST",
        "/api/publish",
        &auth,
        br#"{"channel":"","data":1}"#,
    );
    assert_eq!(no_channel.status, 400);

    let big = format!(r#"{{"channel":"api","data":"{}"}}"#, "x".repeat(1024));
    let too_big = request(&gw, "POST", "/api/publish", &auth, big.as_bytes());
    assert_eq!(too_big.status, 413);

    // None of the refused publishes reached the subscriber: the accepted one is the first event.
    let ok = request(&gw, "POST", "/api/publish", &auth, body);
    assert_eq!(ok.status, 200);
    assert_eq!(json_body(&ok), json!({"ok": true}));
    assert_eq!(sub.recv_json(), json!({"channel": "api", "data": {"n": 1}}));
    assert_eq!(gw.metric("ringcast_publishes_total"), 1);
    assert_eq!(gw.metric("ringcast_http_errors_total"), 6);
}

#[test]
fn keep_alive_answers_several_requests_on_one_connection() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = Vec::new();

    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_http_response(&mut s, &mut buf);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), Some("keep-alive"));
    assert_eq!(first.body, b"{\"status\":\"ok\"}");

    // The same connection: an error keeps it open too, and a pipelined pair is answered in order.
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let second = read_http_response(&mut s, &mut buf);
    assert_eq!(second.status, 404);
    assert_eq!(second.header("connection"), Some("keep-alive"));
    let third = read_http_response(&mut s, &mut buf);
    assert_eq!(third.status, 200);
    assert!(
        String::from_utf8(third.body)
            .unwrap()
            .contains("# TYPE ringcast_connections gauge")
    );

    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let last = read_http_response(&mut s, &mut buf);
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
    // Then the server closes.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut rest).unwrap();
    assert!(rest.is_empty() && buf.is_empty(), "{rest:?}");
}

#[test]
fn head_gets_headers_without_a_body() {
    let gw = Gateway::start(&["--shards", "1"]);
    // Keep-alive: a body after a HEAD response would be read as the start of the next response.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut raw);
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        rest.starts_with("HTTP/1.1 404 "),
        "bytes between the HEAD response and the next one: {rest:?}"
    );
}

/// `n` pipelined `POST /api/publish` requests on channel `channel`, data 0..n.
fn pipelined_publishes(channel: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let body = format!(r#"{{"channel":"{channel}","data":{i}}}"#);
        out.extend_from_slice(
            format!(
                "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    out
}

#[test]
fn pipelined_requests_are_answered_in_order_before_an_upgrade_or_an_error() {
    let gw = Gateway::start(&["--shards", "1"]);
    let mut sub = gw.ws("/ws?subscribe=pipe");
    assert_eq!(sub.recv_json()["op"], "subscribed");

    // Twenty publishes and a WebSocket upgrade in one write: twenty 200s, then the 101.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = Vec::new();
    let mut reqs = pipelined_publishes("pipe", 20);
    reqs.extend_from_slice(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    s.write_all(&reqs).unwrap();
    for i in 0..20 {
        let r = read_http_response(&mut s, &mut buf);
        assert_eq!(r.status, 200, "answer {i}");
        assert_eq!(json_body(&r), json!({"ok": true}), "answer {i}");
    }
    let upgrade = read_http_response(&mut s, &mut buf);
    assert_eq!(upgrade.status, 101);
    for i in 0..20 {
        assert_eq!(sub.recv_json(), json!({"channel": "pipe", "data": i}));
    }

    // Five publishes and a request with a bad Content-Length: five 200s, the 400, the end.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = Vec::new();
    let mut reqs = pipelined_publishes("pipe", 5);
    reqs.extend_from_slice(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n");
    s.write_all(&reqs).unwrap();
    for i in 0..5 {
        assert_eq!(
            read_http_response(&mut s, &mut buf).status,
            200,
            "answer {i}"
        );
    }
    assert_eq!(read_http_response(&mut s, &mut buf).status, 400);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut rest).unwrap();
    assert!(rest.is_empty() && buf.is_empty(), "{rest:?}");
    for i in 0..5 {
        assert_eq!(sub.recv_json(), json!({"channel": "pipe", "data": i}));
    }
}
