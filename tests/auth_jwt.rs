//! JWT connection tokens and grants against the real gateway: HS256/384/512 tokens in the query,
//! an `Authorization: Bearer` header or the `ringcast.token.<jwt>` subprotocol (echoed in the
//! 101); RS256 and ES256 public keys (made with the openssl CLI at test time); 401 with a
//! counted reason for a missing, forged, expired, not-yet-valid, wrong-audience or
//! wrong-issuer token, never logging the token; grants and anonymous allow lists answered with
//! a `forbidden` error while the connection stays; close 4003 at `exp`, and a `refresh` that
//! keeps the connection and drops what the new token no longer allows; the publish API with a
//! JWT `publish` grant; `--admin-listen`; a `jwt` route; `--print-config` hiding the secret.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{Client, Gateway, RedisServer, TIMEOUT, TempPath};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-0123456789";

fn now() -> u64 {
    ringcast::auth::unix_now()
}

fn mint_with(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign")
}

fn mint(claims: Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    mint_with(Algorithm::HS256, &key, &claims)
}

/// A token for `sub` granting `channels`, valid for `secs` seconds.
fn token(channels: &[&str], secs: u64) -> String {
    mint(json!({"sub": "alice", "exp": now() + secs, "channels": channels}))
}

/// Publishes through the API with a token granted every channel (a `jwt` native listener
/// needs a credential for publishing too).
fn publish(gw: &Gateway, channel: &str, data: &Value) {
    let t = mint(json!({"exp": now() + 60, "publish": ["*"]}));
    let body = json!({"channel": channel, "data": data}).to_string();
    let auth = format!("Bearer {t}");
    let headers = [("Authorization", auth.as_str())];
    let (status, text) = gw.http("POST", "/api/publish", &headers, body.as_bytes());
    assert_eq!(status, 200, "{text}");
}

fn jwt_gateway(extra: &[&str]) -> Gateway {
    let mut args = vec!["--shards", "2", "--auth", "jwt", "--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    Gateway::start(&args)
}

/// Opens a WebSocket with extra request headers; `Err(status)` when the upgrade is refused.
fn try_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, Option<String>), u16> {
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    match tungstenite::client(req, stream) {
        Ok((ws, resp)) => {
            let proto = resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().expect("ascii").to_owned());
            Ok((Client { ws }, proto))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(resp.status().as_u16())
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

fn connect(gw: &Gateway, path: &str) -> Client {
    try_connect(gw.addr, path, &[]).expect("upgrade").0
}

fn refused(gw: &Gateway, reason: &str) -> u64 {
    gw.metric(&format!(
        "ringcast_auth_refused_total{{reason=\"{reason}\"}}"
    ))
}

#[test]
fn a_token_is_taken_from_the_query_a_bearer_header_or_the_subprotocol() {
    let gw = jwt_gateway(&[]);
    let t = token(&["news"], 60);
    let mut c = connect(&gw, &format!("/ws?token={t}"));
    c.subscribe("news");

    let bearer = format!("Bearer {t}");
    let (mut c, proto) =
        try_connect(gw.addr, "/ws", &[("Authorization", &bearer)]).expect("bearer");
    assert_eq!(proto, None);
    c.subscribe("news");

    let offered = format!("ringcast.token.{t}");
    let (mut c, proto) = try_connect(
        gw.addr,
        "/ws",
        &[("Sec-WebSocket-Protocol", &format!("other, {offered}"))],
    )
    .expect("subprotocol");
    assert_eq!(proto.as_deref(), Some(offered.as_str()), "echoed back");
    c.subscribe("news");

    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
        let t = mint_with(alg, &key, &json!({"exp": now() + 60, "channels": ["*"]}));
        connect(&gw, &format!("/ws?token={t}")).subscribe("any");
    }
    // A listener without tokens still echoes the offered subprotocol (browsers need it).
    let open = Gateway::start(&[]);
    let (_, proto) =
        try_connect(open.addr, "/ws", &[("Sec-WebSocket-Protocol", &offered)]).expect("open");
    assert_eq!(proto.as_deref(), Some(offered.as_str()));
    // Without a token the native listener refuses the upgrade.
    assert_eq!(try_connect(gw.addr, "/ws", &[]).err(), Some(401));
    assert_eq!(refused(&gw, "missing"), 1);
}

#[test]
fn bad_tokens_get_401_with_a_counted_reason_and_are_never_logged() {
    let gw = jwt_gateway(&["--jwt-audience", "ringcast", "--jwt-issuer", "issuer"]);
    let good = |extra: Value| {
        let mut claims = json!({"exp": now() + 60, "aud": "ringcast", "iss": "issuer"});
        for (k, v) in extra.as_object().expect("object") {
            claims[k] = v.clone();
        }
        claims
    };
    let forged = mint_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret").expect("key"),
        &good(json!({})),
    );
    let cases = [
        (forged, "signature"),
        (mint(good(json!({"exp": now() - 1}))), "expired"),
        (mint(good(json!({"nbf": now() + 3600}))), "not_yet_valid"),
        (mint(good(json!({"aud": "someone-else"}))), "audience"),
        (mint(good(json!({"iss": "mallory"}))), "issuer"),
        ("not.a.jwt".to_owned(), "malformed"),
    ];
    for (t, reason) in &cases {
        let before = refused(&gw, reason);
        let status = try_connect(gw.addr, &format!("/ws?token={t}"), &[]).err();
        assert_eq!(status, Some(401), "{reason}");
        assert_eq!(refused(&gw, reason), before + 1, "{reason}");
    }
    // The good token passes the audience and issuer checks.
    connect(&gw, &format!("/ws?token={}", mint(good(json!({})))));
    // Each refusal is logged with its reason (read from stderr by another thread: wait).
    for (_, reason) in &cases {
        gw.wait_log(&[&format!("reason=\"{reason}\"")], 1);
    }
    let log = gw.log.lock().unwrap();
    for (t, _) in &cases {
        assert!(!log.iter().any(|l| l.contains(t.as_str())), "token logged");
    }
}

/// Writes a key pair with the openssl CLI; returns (private PEM, public key file).
fn openssl_keys(tag: &TempPath, args: &[&str]) -> (Vec<u8>, String) {
    let private = format!("{}-private.pem", tag.0.display());
    let public = format!("{}-public.pem", tag.0.display());
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .expect("the openssl CLI (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let mut gen_args = vec!["genpkey"];
    gen_args.extend_from_slice(args);
    gen_args.extend_from_slice(&["-out", &private]);
    run(&gen_args);
    run(&["pkey", "-in", &private, "-pubout", "-out", &public]);
    let pem = std::fs::read(&private).expect("private key");
    let _ = std::fs::remove_file(&private);
    (pem, public)
}

type KeyFromPem = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;

#[test]
fn rs256_and_es256_tokens_verify_with_a_public_key() {
    let (rsa_tag, ec_tag) = (TempPath::new("jwt-rsa"), TempPath::new("jwt-ec"));
    let rsa = openssl_keys(
        &rsa_tag,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ec = openssl_keys(
        &ec_tag,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let cases = [
        (
            rsa,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem as KeyFromPem,
        ),
        (ec, Algorithm::ES256, EncodingKey::from_ec_pem as KeyFromPem),
    ];
    for ((private, public), alg, encoding) in cases {
        let gw = Gateway::start(&["--auth", "jwt", "--jwt-public-key", &public]);
        let key = encoding(&private).expect("private key");
        let t = mint_with(alg, &key, &json!({"exp": now() + 60, "channels": ["c"]}));
        let (mut c, _) = try_connect(gw.addr, &format!("/ws?token={t}"), &[])
            .unwrap_or_else(|s| panic!("{alg:?}: {s} {:?}", gw.log.lock().unwrap()));
        c.subscribe("c");
        // Algorithm confusion: an HMAC token keyed with the public key's text is refused.
        let pem = std::fs::read(&public).expect("public key");
        let hmac = EncodingKey::from_secret(&pem).expect("key");
        let t = mint_with(Algorithm::HS256, &hmac, &json!({"exp": now() + 60}));
        let status = try_connect(gw.addr, &format!("/ws?token={t}"), &[]).err();
        assert_eq!(status, Some(401), "{alg:?}");
        assert_eq!(refused(&gw, "algorithm"), 1);
        let _ = std::fs::remove_file(&public);
    }
}

#[test]
fn grants_decide_each_subscription_and_a_refusal_keeps_the_connection() {
    let gw = jwt_gateway(&[]);
    let t = mint(json!({
        "sub": "alice", "exp": now() + 60,
        "channels": ["news:*"], "watch": [], "publish": []
    }));
    let mut c = connect(&gw, &format!("/ws?token={t}"));
    c.subscribe("news:a");
    c.command(json!({"op": "subscribe", "channel": "chat", "id": 7}));
    let e = c.recv_json();
    assert_eq!(
        (e["op"].as_str(), e["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    assert_eq!(e["id"], 7);
    c.command(json!({"op": "psubscribe", "pattern": "*"}));
    assert_eq!(c.recv_json()["code"], "forbidden", "a wider pattern");
    c.command(json!({"op": "psubscribe", "pattern": "news:sport:*"}));
    assert_eq!(c.recv_json()["op"], "psubscribed");
    // Still connected and served.
    publish(&gw, "news:a", &json!(1));
    let event = c.recv_json();
    assert_eq!(
        (event["channel"].as_str(), &event["data"]),
        (Some("news:a"), &json!(1))
    );
    assert_eq!(gw.metric("ringcast_auth_forbidden_total"), 2);

    // URL subscriptions get the same error reply.
    let mut c = connect(&gw, &format!("/ws?token={t}&subscribe=news:b,chat"));
    assert_eq!(c.recv_json()["op"], "subscribed");
    let e = c.recv_json();
    assert_eq!(e["code"], "forbidden", "{e}");
    c.subscribe("news:c");
}

#[test]
fn anonymous_clients_get_the_allow_lists() {
    let gw = Gateway::start(&["--allow-subscribe", "public:*,lobby"]);
    let mut c = gw.ws("/ws?subscribe=lobby");
    assert_eq!(c.recv_json()["op"], "subscribed");
    c.subscribe("public:x");
    c.command(json!({"op": "subscribe", "channel": "private:x"}));
    assert_eq!(c.recv_json()["code"], "forbidden");
    c.command(json!({"op": "psubscribe", "pattern": "public:*"}));
    assert_eq!(c.recv_json()["op"], "psubscribed");
    // Without lists everything is allowed, as before.
    let open = Gateway::start(&[]);
    open.ws("/ws").subscribe("private:x");
}

#[test]
fn watches_and_snapshots_need_a_watch_grant() {
    let redis = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let gw = Gateway::start(&["--redis", &url, "--allow-watch", "public:*"]);
    let mut c = gw.ws("/ws?subscribe=c&snapshot=secret:1");
    assert_eq!(c.recv_json()["op"], "subscribed");
    let e = c.recv_json();
    assert_eq!(e["code"], "forbidden", "{e}");
    c.command(json!({"op": "subscribe", "channel": "d", "snapshot": "secret:1"}));
    assert_eq!(c.recv_json()["code"], "forbidden");
    c.command(json!({"op": "watch", "key": "secret:1"}));
    assert_eq!(c.recv_json()["code"], "forbidden");
    c.command(json!({"op": "watch", "key": "public:1"}));
    assert_eq!(c.recv_json()["op"], "watched");
    assert_eq!(gw.metric("ringcast_auth_forbidden_total"), 3);
}

#[test]
fn a_token_that_expires_closes_the_connection_with_4003() {
    let gw = jwt_gateway(&["--ping-interval", "1s"]);
    let mut c = connect(&gw, &format!("/ws?token={}", token(&["a"], 3)));
    c.subscribe("a");
    let started = Instant::now();
    loop {
        match c.ws.read().expect("open until the close frame") {
            tungstenite::Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 4003);
                assert_eq!(frame.reason.as_str(), "token expired");
                break;
            }
            _ => assert!(started.elapsed() < TIMEOUT, "never closed"),
        }
    }
    assert_eq!(gw.metric("ringcast_auth_expired_closes_total"), 1);
}

#[test]
fn a_refresh_before_exp_keeps_the_connection_and_drops_what_it_no_longer_allows() {
    let gw = jwt_gateway(&[]);
    let first = token(&["a", "b"], 4);
    let old_exp = now() + 4;
    let mut c = connect(&gw, &format!("/ws?token={first}"));
    c.subscribe("a");
    c.subscribe("b");
    // A token for someone else, or a bad one, is refused; the connection stays.
    let mallory = mint(json!({"sub": "mallory", "exp": now() + 60, "channels": ["*"]}));
    c.command(json!({"op": "refresh", "token": mallory, "id": 1}));
    assert_eq!(c.recv_json()["code"], "forbidden");
    c.command(json!({"op": "refresh", "token": "garbage", "id": 2}));
    assert_eq!(c.recv_json()["code"], "forbidden");

    c.command(json!({"op": "refresh", "token": token(&["a"], 60), "id": 3}));
    let notice = c.recv_json();
    assert_eq!(notice, json!({"op": "unsubscribed", "channel": "b"}));
    let reply = c.recv_json();
    assert_eq!(
        (reply["op"].as_str(), &reply["id"]),
        (Some("refreshed"), &json!(3))
    );
    assert!(reply["exp"].as_u64() > Some(old_exp));
    // Served past the first token's expiry: events on `a` keep coming, none on `b`.
    let mut n = 0;
    while now() <= old_exp + 1 {
        publish(&gw, "b", &json!(n));
        publish(&gw, "a", &json!(n));
        let event = c.recv_json();
        assert_eq!(
            (event["channel"].as_str(), &event["data"]),
            (Some("a"), &json!(n))
        );
        n += 1;
    }
    assert_eq!(gw.metric("ringcast_auth_expired_closes_total"), 0);
    assert_eq!(gw.metric("ringcast_auth_refreshes_total"), 1);
    assert_eq!(gw.metric("ringcast_auth_revoked_total"), 1);
}

#[test]
fn the_publish_api_takes_the_api_key_or_a_jwt_publish_grant() {
    let gw = jwt_gateway(&["--api-key", "the-api-key"]);
    let post = |auth: Option<&str>, channel: &str| {
        let body = json!({"channel": channel, "data": 1}).to_string();
        let header = auth.map(|a| format!("Bearer {a}"));
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|h| ("Authorization", h.as_str()))
            .collect();
        gw.http("POST", "/api/publish", &headers, body.as_bytes()).0
    };
    let writer = mint(json!({"exp": now() + 60, "publish": ["news:*"]}));
    assert_eq!(post(Some("the-api-key"), "anything"), 200);
    assert_eq!(post(Some(&writer), "news:a"), 200);
    assert_eq!(post(Some(&writer), "chat"), 403);
    assert_eq!(
        post(Some(&token(&["*"], 60)), "news:a"),
        403,
        "no publish grant"
    );
    assert_eq!(post(Some("wrong-key"), "news:a"), 401);
    assert_eq!(post(None, "news:a"), 401);
    let expired = mint(json!({"exp": now() - 5, "publish": ["*"]}));
    assert_eq!(post(Some(&expired), "news:a"), 401);
}

#[test]
fn admin_listen_moves_metrics_and_healthz() {
    let gw = Gateway::start(&["--admin-listen", "127.0.0.1:0"]);
    let admin: SocketAddr = {
        let log = gw.log.lock().unwrap();
        let line = log
            .iter()
            .find(|l| l.contains("admin ready listen="))
            .expect("admin line");
        let addr = line.split("listen=").nth(1).expect("listen=");
        addr.split_whitespace()
            .next()
            .expect("addr")
            .parse()
            .expect("addr")
    };
    for path in ["/metrics", "/healthz"] {
        assert_eq!(common::http(admin, "GET", path, &[], b"").0, 200, "{path}");
        assert_eq!(gw.http("GET", path, &[], b"").0, 404, "{path}");
    }
    assert_eq!(common::http(admin, "GET", "/", &[], b"").0, 404);
    // The public listener still serves WebSockets.
    gw.ws("/ws").subscribe("x");
}

#[test]
fn a_jwt_route_gates_the_upgrade_and_checks_the_implied_channel() {
    let gw = Gateway::start(&[
        "--jwt-secret",
        SECRET,
        "--route",
        "st.listen=127.0.0.1:0",
        "--route",
        "st.profile=status",
        "--route",
        "st.auth=jwt",
    ]);
    let addr = gw.route_addr("st");
    let t = token(&["run1:*"], 60);
    let (mut c, _) = try_connect(addr, &format!("/s/run1:wepp?token={t}"), &[]).expect("ok");
    gw.publish("run1:wepp", &json!("hello"));
    assert_eq!(c.recv_json()["type"], "status");
    let denied = try_connect(addr, &format!("/s/run2:wepp?token={t}"), &[]).err();
    assert_eq!(denied, Some(403));
    assert_eq!(try_connect(addr, "/s/run1:wepp", &[]).err(), Some(401));
    // Health checks need no token.
    let (mut c, _) = try_connect(addr, "/s/health", &[]).expect("health");
    assert_eq!(c.recv_text(), "OK");
}

#[test]
fn a_preflight_route_checks_the_run_key_against_the_watch_grant() {
    let redis = RedisServer::start();
    let gw = Gateway::weppcloud(
        &redis,
        &["--jwt-secret", SECRET, "--route", "preflight.auth=jwt"],
    );
    let addr = gw.route_addr("preflight");
    let t = mint(json!({"exp": now() + 60, "watch": ["mine;;*"]}));
    let path = |run: &str| format!("/weppcloud-microservices/preflight/{run}?token={t}");
    let (mut c, _) = try_connect(addr, &path("mine;;run1"), &[]).expect("granted");
    assert!(c.recv_text().starts_with(r#"{"type": "preflight""#));
    assert_eq!(
        try_connect(addr, &path("theirs;;run1"), &[]).err(),
        Some(403)
    );
    let bare = "/weppcloud-microservices/preflight/mine;;run1";
    assert_eq!(try_connect(addr, bare, &[]).err(), Some(401));
    // The status route of the same preset keeps its default: anyone may connect.
    let status = gw.route_addr("status");
    try_connect(status, "/weppcloud-microservices/status/any:wepp", &[]).expect("open");
}

#[test]
fn a_route_allow_list_limits_anonymous_clients() {
    let gw = Gateway::start(&[
        "--route",
        "st.listen=127.0.0.1:0",
        "--route",
        "st.profile=status",
        "--route",
        "st.allow_subscribe=public:*",
    ]);
    let addr = gw.route_addr("st");
    try_connect(addr, "/s/public:wepp", &[]).expect("allowed");
    assert_eq!(try_connect(addr, "/s/private:wepp", &[]).err(), Some(403));
    assert_eq!(gw.metric("ringcast_auth_forbidden_total"), 1);
}

#[test]
fn print_config_never_shows_the_secret() {
    let out = common::hermetic(&mut Command::new(env!("CARGO_BIN_EXE_ringcast")))
        .args(["--print-config", "--auth", "jwt"])
        .env("RINGCAST_JWT_SECRET", SECRET)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("auth = \"jwt\""), "{text}");
    assert!(text.contains("jwt_secret = \"<redacted>\""), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(SECRET));
}
