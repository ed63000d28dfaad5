//! The Squonk2 ESS internal REST API on an `ess_api` route answers every call of COMPAT 6.1 with
//! the original's status codes and exact bodies over real HTTP, keeps its streams and its
//! ever-growing ids in the registry file across a restart (a deleted id is never handed out
//! again), survives malformed input, and refuses to start, with exit 1 and one line naming the
//! file, when the registry cannot be created.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::{Gateway, TIMEOUT, http, http_raw, parse_http_response, wait_exit};
use serde_json::Value;

/// A fresh directory for one test's config and registry.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringcast-ess-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes a config with one `ess_api` route on a free port using `registry`.
fn config(dir: &Path, registry: &Path) -> String {
    let path = dir.join("ringcast.toml");
    let text = format!(
        "[[route]]\nname = \"ess_api\"\nlisten = \"127.0.0.1:0\"\nprofile = \"ess_api\"\n\
         registry = {:?}\n",
        registry.display().to_string()
    );
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

const INGRESS: [(&str, &str); 2] = [
    ("ESS_INGRESS_LOCATION", "ess.example:443"),
    ("ESS_INGRESS_SECURE", "yes"),
];

fn start(config: &str) -> (Gateway, SocketAddr) {
    let gw = Gateway::start_with_env(&["--config", config], &INGRESS);
    let api = gw.route_addr("ess_api");
    (gw, api)
}

fn post(api: SocketAddr, routing_key: &str) -> (i64, String) {
    let body = serde_json::json!({ "routing_key": routing_key, "extra": true }).to_string();
    let (status, text) = http(api, "POST", "/event-stream/", &[], body.as_bytes());
    assert_eq!(status, 201, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 2, "{text}");
    let location = v["location"].as_str().expect("location").to_owned();
    let uuid = location
        .strip_prefix("wss://ess.example:443/event-stream/")
        .unwrap_or_else(|| panic!("{location}"));
    assert_eq!(uuid.len(), 22, "{uuid}");
    assert!(
        uuid.bytes()
            .all(|b| b.is_ascii_alphanumeric() && !b"01IOl".contains(&b))
    );
    (v["id"].as_i64().expect("id"), location)
}

#[test]
fn every_call_answers_as_the_original() {
    let dir = temp_dir("calls");
    let cfg = config(&dir, &dir.join("es.db"));
    let (gw, api) = start(&cfg);

    let (status, text) = http(api, "GET", "/event-stream/version/", &[], b"");
    assert_eq!(status, 200);
    let want = format!(
        r#"{{"protocol":"WEBSOCKET","name":"ringcast","version":"{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(text, want);

    let (a, loc_a) = post(api, "stream-a");
    let (b, loc_b) = post(api, "stream-b");
    assert!(b > a);
    let (status, text) = http(api, "GET", "/event-stream/", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        text,
        format!(
            r#"{{"event_streams":[{{"id":{a},"location":"{loc_a}","routing_key":"stream-a"}},{{"id":{b},"location":"{loc_b}","routing_key":"stream-b"}}]}}"#
        )
    );

    let raw = http_raw(
        api,
        format!("DELETE /event-stream/{a} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(raw.starts_with(b"HTTP/1.1 204 No Content\r\n"), "{raw:?}");
    assert!(raw.ends_with(b"\r\n\r\n"), "a 204 has no body: {raw:?}");
    assert_eq!(
        http(api, "DELETE", &format!("/event-stream/{a}"), &[], b""),
        (
            404,
            format!(r#"{{"detail":"EventStream {a} is not known"}}"#)
        )
    );
    let (status, text) = http(api, "DELETE", "/event-stream/not-an-id", &[], b"");
    assert_eq!(status, 422);
    assert_eq!(
        text,
        r#"{"detail":[{"type":"int_parsing","loc":["path","es_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"not-an-id"}]}"#
    );

    let raw = http_raw(
        api,
        format!("GET /event-stream HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let (redirect, _) = parse_http_response(&raw).expect("a response");
    assert_eq!(redirect.status, 307);
    assert_eq!(
        redirect.header("location"),
        Some(format!("http://{api}/event-stream/").as_str())
    );
    assert!(redirect.body.is_empty());

    let not_allowed = (405, r#"{"detail":"Method Not Allowed"}"#.to_owned());
    assert_eq!(
        http(api, "GET", "/event-stream/version", &[], b""),
        not_allowed
    );
    assert_eq!(http(api, "PUT", "/event-stream/", &[], b""), not_allowed);
    assert_eq!(
        http(api, "GET", "/elsewhere", &[], b""),
        (404, r#"{"detail":"Not Found"}"#.to_owned())
    );

    assert_eq!(
        http(api, "POST", "/event-stream/", &[], b"{\"name\": 1}"),
        (
            422,
            r#"{"detail":[{"type":"missing","loc":["body","routing_key"],"msg":"Field required","input":{"name":1}}]}"#
                .to_owned()
        )
    );
    let (status, text) = http(api, "POST", "/event-stream/", &[], b"{\"routing_key\": 7}");
    assert_eq!(status, 422);
    assert!(text.contains(r#""type":"string_type""#), "{text}");
    let (status, text) = http(api, "POST", "/event-stream/", &[], b"{nope");
    assert_eq!(status, 422);
    assert!(
        text.contains(r#""type":"json_invalid","loc":["body",1]"#),
        "{text}"
    );

    // Over 64 KiB: refused from the head alone, before the body is sent.
    let raw = http_raw(
        api,
        b"POST /event-stream/ HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n",
    );
    let (large, _) = parse_http_response(&raw).expect("a response");
    assert_eq!(large.status, 413);

    // One stream left, and the registry thread counted its requests.
    let (_, text) = http(api, "GET", "/event-stream/", &[], b"");
    assert_eq!(text.matches("\"id\"").count(), 1, "{text}");
    assert!(gw.metric("ringcast_registry_requests_total") >= 6);
    assert_eq!(gw.metric("ringcast_registry_errors_total"), 0);
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ids_survive_a_restart_and_are_never_reused() {
    let dir = temp_dir("restart");
    let cfg = config(&dir, &dir.join("es.db"));
    let (mut gw, api) = start(&cfg);
    let (first, loc_first) = post(api, "kept");
    let (last, _) = post(api, "deleted");
    assert_eq!(
        http(api, "DELETE", &format!("/event-stream/{last}"), &[], b"").0,
        204
    );
    gw.signal(libc::SIGTERM);
    assert!(wait_exit(&mut gw.child, TIMEOUT).success());

    let (_gw, api) = start(&cfg);
    let (_, text) = http(api, "GET", "/event-stream/", &[], b"");
    assert_eq!(
        text,
        format!(
            r#"{{"event_streams":[{{"id":{first},"location":"{loc_first}","routing_key":"kept"}}]}}"#
        )
    );
    let (next, _) = post(api, "new");
    assert!(next > last, "id {next} after a deleted {last}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_requests_never_kill_the_gateway() {
    let dir = temp_dir("fuzz");
    let cfg = config(&dir, &dir.join("es.db"));
    let (gw, api) = start(&cfg);
    let bodies: [&[u8]; 8] = [
        b"",
        b"{",
        b"\xff\xfe\x00",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        b"{\"routing_key\":\"\\ud800\"}",
        b"null",
        b"{\"routing_key\":{\"a\":[1,2]}}",
        b"\"routing_key\"",
    ];
    let paths = [
        "/event-stream/",
        "/event-stream",
        "/event-stream/%00",
        "/event-stream/99999999999999999999999999",
        "/event-stream/-1",
        "/event-stream//",
        "/",
        "/event-stream/version/x",
    ];
    let mut seed: u32 = 0x2545_f491;
    for path in paths {
        for body in bodies {
            for method in ["GET", "POST", "DELETE", "HEAD", "OPTIONS"] {
                let (status, _) = http(api, method, path, &[], body);
                assert!((200..600).contains(&status), "{method} {path}: {status}");
            }
        }
    }
    // Raw garbage: broken heads, lying lengths, binary noise.
    for i in 0..64u32 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let noise: Vec<u8> = (0..(seed % 200))
            .map(|j| (seed >> (j % 24)) as u8)
            .collect();
        let mut req = match i % 4 {
            0 => b"POST /event-stream/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n".to_vec(),
            1 => b"POST /event-stream/ HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(),
            2 => b"DELETE /event-stream/".to_vec(),
            _ => Vec::new(),
        };
        req.extend_from_slice(&noise);
        if i % 4 != 3 {
            req.extend_from_slice(b"\r\n\r\n");
        }
        let _ = http_raw(api, &req);
    }
    let (id, _) = post(api, "still-alive");
    assert!(id > 0);
    assert_eq!(gw.metric("ringcast_registry_errors_total"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unusable_registry_exits_1_with_one_line_naming_it() {
    let dir = temp_dir("unusable");
    let registry = dir.join("missing-dir").join("es.db");
    let cfg = config(&dir, &registry);
    let (code, stderr) = common::run_to_exit(&["--listen", "127.0.0.1:0", "--config", &cfg]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&registry.display().to_string()), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
