//! The Squonk2 ESS internal REST API (COMPAT.md 6.1, row Q1): request routing and response
//! rendering, as the original FastAPI app answered.
//!
//! Pure, any thread (the shard's connection task calls it, [`crate::conn::ess_api`] does the
//! I/O and asks the registry). [`parse`] turns a request into an [`ApiCall`] for the registry,
//! or into the immediate [`ApiResponse`] FastAPI/Starlette would give: 307 slash redirects,
//! 404, 405, and pydantic v2's 422 bodies. The `*_response` functions render the registry's
//! answers. JSON is written compactly, as Starlette's `JSONResponse` does
//! (`separators=(",", ":")`, `ensure_ascii=False`).
//!
//! Routing follows Starlette: the first route whose path and method match is called; else the
//! first whose path matches answers 405 with `allow`; else, for a path with (without) a final
//! `/` that matches without (with) it, a 307 to that path; else 404. So `GET
//! /event-stream/version` is a 405 (it matches `DELETE /event-stream/{es_id}`'s path), as COMPAT
//! says Starlette does. Known differences: the path is matched as sent (not percent-decoded);
//! a 422's `input` is the JSON as sent minus whitespace (Python re-serialises numbers and
//! escapes); pydantic's `url` field is left out; the `json_invalid` position and message are
//! derived from serde_json's and match Python's `json` for the common errors only.
//!
//! Length: past the 300-line guide because of the unit tests, one per documented answer.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::config::routes::Ingress;
use crate::store::registry::{EventStream, RegistryError};

/// Largest request body accepted, in bytes. Default 64 KiB. A `POST` body is one small JSON
/// object; anything larger is refused with 413 before it is read.
pub const MAX_BODY_BYTES: usize = 64 * 1_024;

/// `name` in the version answer. The original said `"Python FastAPI"`; ringcast names itself,
/// so an operator can tell which server answers (clients only read `protocol` and `version`).
pub const SERVER_NAME: &str = "ringcast";

/// One request, as the connection task read it.
#[derive(Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path, query excluded.
    pub path: &'a str,
    /// The query without `?`, empty if none (kept on redirects).
    pub query: &'a str,
    /// The `Host` header, for the absolute `location` of a redirect.
    pub host: Option<&'a [u8]>,
    /// The body (at most [`MAX_BODY_BYTES`]).
    pub body: &'a [u8],
}

/// What the registry must do for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCall {
    /// `GET /event-stream/version/` (no registry needed).
    Version,
    /// `POST /event-stream/`.
    Create {
        /// The body's `routing_key`.
        routing_key: String,
    },
    /// `GET /event-stream/`.
    List,
    /// `DELETE /event-stream/{id}`.
    Delete {
        /// The integer id.
        id: i64,
    },
}

/// A response, before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// The status code.
    pub status: u16,
    /// The JSON body; empty for 204 and 307 (which carry no content type either).
    pub body: Vec<u8>,
    /// `location` (307 only).
    pub location: Option<String>,
    /// `allow` (405 only).
    pub allow: Option<&'static str>,
}

impl ApiResponse {
    fn json(status: u16, body: Vec<u8>) -> ApiResponse {
        ApiResponse {
            status,
            body,
            location: None,
            allow: None,
        }
    }

    /// `{"detail":"<text>"}`.
    fn detail(status: u16, text: &str) -> ApiResponse {
        let mut body = b"{\"detail\":".to_vec();
        crate::protocol::write_json_string(&mut body, text.as_bytes());
        body.push(b'}');
        ApiResponse::json(status, body)
    }

    /// Renders the response; `HEAD` callers strip the body with [`super::head_only`].
    pub fn render(&self, keep_alive: bool) -> Bytes {
        let reason = ::http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        if !self.body.is_empty() {
            head.push_str("content-type: application/json\r\n");
        }
        // RFC 9110 §8.6: no content-length on a 204.
        if self.status != 204 {
            head.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        if let Some(location) = &self.location {
            head.push_str(&format!("location: {location}\r\n"));
        }
        if let Some(allow) = self.allow {
            head.push_str(&format!("allow: {allow}\r\n"));
        }
        let connection = if keep_alive { "keep-alive" } else { "close" };
        head.push_str(&format!("connection: {connection}\r\n\r\n"));
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }
}

/// Either a call for the registry or the answer itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Ask the registry (or, for [`ApiCall::Version`], answer with [`version_response`]).
    Call(ApiCall),
    /// Answer this at once.
    Answer(ApiResponse),
}

/// The original's routes, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Version,
    Create,
    List,
    Delete,
}

const ROUTES: [Route; 4] = [Route::Version, Route::Create, Route::List, Route::Delete];

impl Route {
    /// Starlette's path match (`{es_id}` is one non-empty segment).
    fn matches(self, path: &str) -> bool {
        match self {
            Route::Version => path == "/event-stream/version/",
            Route::Create | Route::List => path == "/event-stream/",
            Route::Delete => path
                .strip_prefix("/event-stream/")
                .is_some_and(|id| !id.is_empty() && !id.contains('/')),
        }
    }

    /// The methods it answers (Starlette adds `HEAD` to every `GET` route).
    fn allow(self) -> &'static str {
        match self {
            Route::Version | Route::List => "GET, HEAD",
            Route::Create => "POST",
            Route::Delete => "DELETE",
        }
    }

    fn accepts(self, method: &str) -> bool {
        self.allow().split(", ").any(|m| m == method)
    }
}

/// Routes a request: a registry call, or the immediate answer.
pub fn parse(req: &ApiRequest<'_>) -> Parsed {
    let full = ROUTES
        .iter()
        .find(|r| r.matches(req.path) && r.accepts(req.method));
    match full {
        Some(Route::Version) => Parsed::Call(ApiCall::Version),
        Some(Route::List) => Parsed::Call(ApiCall::List),
        Some(Route::Create) => match routing_key(req.body) {
            Ok(routing_key) => Parsed::Call(ApiCall::Create { routing_key }),
            Err(answer) => Parsed::Answer(answer),
        },
        Some(Route::Delete) => {
            let id = req.path.strip_prefix("/event-stream/").unwrap_or_default();
            delete_id(id)
        }
        None => Parsed::Answer(unrouted(req)),
    }
}

/// 405, 307 or 404 for a request no route takes.
fn unrouted(req: &ApiRequest<'_>) -> ApiResponse {
    if let Some(route) = ROUTES.iter().find(|r| r.matches(req.path)) {
        let mut answer = ApiResponse::detail(405, "Method Not Allowed");
        answer.allow = Some(route.allow());
        return answer;
    }
    let toggled = match req.path.strip_suffix('/') {
        Some(shorter) => shorter.to_owned(),
        None => format!("{}/", req.path),
    };
    if req.path != "/" && ROUTES.iter().any(|r| r.matches(&toggled)) {
        let mut location = match req.host.and_then(|h| std::str::from_utf8(h).ok()) {
            Some(host) if !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic()) => {
                format!("http://{host}{toggled}")
            }
            _ => toggled,
        };
        if !req.query.is_empty() {
            location.push('?');
            location.push_str(req.query);
        }
        return ApiResponse {
            status: 307,
            body: Vec::new(),
            location: Some(location),
            allow: None,
        };
    }
    ApiResponse::detail(404, "Not Found")
}

/// `{es_id}` as pydantic parses an `int` from a path string.
fn delete_id(raw: &str) -> Parsed {
    let digits = raw.strip_prefix(['+', '-']).unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        let mut body = b"{\"detail\":[{\"type\":\"int_parsing\",\"loc\":[\"path\",\"es_id\"],\
            \"msg\":\"Input should be a valid integer, unable to parse string as an integer\",\
            \"input\":"
            .to_vec();
        crate::protocol::write_json_string(&mut body, raw.as_bytes());
        body.extend_from_slice(b"}]}");
        return Parsed::Answer(ApiResponse::json(422, body));
    }
    match raw.parse::<i64>() {
        Ok(id) => Parsed::Call(ApiCall::Delete { id }),
        // A valid integer no id can equal: unknown, shown as Python prints it.
        Err(_) => {
            let trimmed = digits.trim_start_matches('0');
            let sign = if raw.starts_with('-') { "-" } else { "" };
            Parsed::Answer(not_known(&format!("{sign}{trimmed}")))
        }
    }
}

fn not_known(id: &str) -> ApiResponse {
    ApiResponse::detail(404, &format!("EventStream {id} is not known"))
}

/// The body's `routing_key`, or FastAPI's 422 (or 400) for the body.
fn routing_key(body: &[u8]) -> Result<String, ApiResponse> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(ApiResponse::detail(
            400,
            "There was an error parsing the body",
        ));
    };
    if text.trim().is_empty() {
        return Err(validation(
            "missing",
            "[\"body\"]",
            "Field required",
            "null",
        ));
    }
    if let Err(e) = serde_json::from_str::<&RawValue>(text) {
        return Err(json_invalid(text, &e));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with("null") {
        return Err(validation(
            "missing",
            "[\"body\"]",
            "Field required",
            "null",
        ));
    }
    if !trimmed.starts_with('{') {
        return Err(validation(
            "model_attributes_type",
            "[\"body\"]",
            "Input should be a valid dictionary or object to extract fields from",
            &minify(text),
        ));
    }
    // Valid JSON and an object: only a nesting deeper than serde's limit fails here.
    let fields: std::collections::BTreeMap<String, &RawValue> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => return Err(json_invalid(text, &e)),
    };
    let loc = "[\"body\",\"routing_key\"]";
    match fields.get("routing_key") {
        None => Err(validation("missing", loc, "Field required", &minify(text))),
        Some(raw) => serde_json::from_str::<String>(raw.get()).map_err(|_| {
            validation(
                "string_type",
                loc,
                "Input should be a valid string",
                &minify(raw.get()),
            )
        }),
    }
}

/// A 422 with one pydantic error; `loc` and `input` are JSON already.
fn validation(kind: &str, loc: &str, msg: &str, input: &str) -> ApiResponse {
    let body = format!(
        "{{\"detail\":[{{\"type\":\"{kind}\",\"loc\":{loc},\"msg\":\"{msg}\",\"input\":{input}}}]}}"
    );
    ApiResponse::json(422, body.into_bytes())
}

/// FastAPI's 422 for a body that is not JSON: `loc` is `["body", <char position>]`, `ctx.error`
/// Python's `json` message.
fn json_invalid(text: &str, e: &serde_json::Error) -> ApiResponse {
    let shown = e.to_string();
    let error = [
        ("trailing characters", "Extra data"),
        (
            "key must be a string",
            "Expecting property name enclosed in double quotes",
        ),
        ("expected `:`", "Expecting ':' delimiter"),
        ("expected `,`", "Expecting ',' delimiter"),
        (
            "EOF while parsing a string",
            "Unterminated string starting at",
        ),
        ("control character", "Invalid control character at"),
        ("invalid escape", "Invalid \\\\escape"),
    ]
    .iter()
    .find(|(serde, _)| shown.contains(serde))
    .map_or("Expecting value", |(_, python)| python);
    // serde counts lines from 1 and columns in bytes from 1; Python counts characters from 0.
    let line_start: usize = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum();
    let mut byte = (line_start + e.column().saturating_sub(1)).min(text.len());
    while !text.is_char_boundary(byte) {
        byte -= 1;
    }
    let pos = text[..byte].chars().count();
    let body = format!(
        "{{\"detail\":[{{\"type\":\"json_invalid\",\"loc\":[\"body\",{pos}],\
         \"msg\":\"JSON decode error\",\"input\":{{}},\"ctx\":{{\"error\":\"{error}\"}}}}]}}"
    );
    ApiResponse::json(422, body.into_bytes())
}

/// Valid JSON without the whitespace between tokens (Python's compact `json.dumps`).
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !c.is_ascii_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// 200 for `GET /event-stream/version/`.
pub fn version_response() -> ApiResponse {
    let body = format!(
        "{{\"protocol\":\"WEBSOCKET\",\"name\":\"{SERVER_NAME}\",\"version\":\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    ApiResponse::json(200, body.into_bytes())
}

/// 201 for a created stream.
pub fn created_response(stream: &EventStream, ingress: &Ingress) -> ApiResponse {
    let mut body = format!("{{\"id\":{},\"location\":", stream.id).into_bytes();
    crate::protocol::write_json_string(&mut body, ingress.url(&stream.uuid).as_bytes());
    body.push(b'}');
    ApiResponse::json(201, body)
}

/// 200 with every stream.
pub fn list_response(streams: &[EventStream], ingress: &Ingress) -> ApiResponse {
    let mut body = b"{\"event_streams\":[".to_vec();
    for (i, s) in streams.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(format!("{{\"id\":{},\"location\":", s.id).as_bytes());
        crate::protocol::write_json_string(&mut body, ingress.url(&s.uuid).as_bytes());
        body.extend_from_slice(b",\"routing_key\":");
        crate::protocol::write_json_string(&mut body, s.routing_key.as_bytes());
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    ApiResponse::json(200, body)
}

/// 204 when stream `id` was deleted, 404 when it was not known.
pub fn deleted_response(id: i64, deleted: bool) -> ApiResponse {
    if deleted {
        return ApiResponse {
            status: 204,
            body: Vec::new(),
            location: None,
            allow: None,
        };
    }
    not_known(&id.to_string())
}

/// 503 when the registry is busy, 500 when it failed or stopped.
pub fn failed_response(error: RegistryError) -> ApiResponse {
    match error {
        RegistryError::Busy => ApiResponse::detail(503, "Service Unavailable"),
        RegistryError::Stopped | RegistryError::Failed => {
            ApiResponse::detail(500, "Internal Server Error")
        }
    }
}

/// 413 for a body over [`MAX_BODY_BYTES`].
pub fn too_large_response() -> ApiResponse {
    ApiResponse::detail(413, "Request Entity Too Large")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(method: &'a str, path: &'a str, body: &'a [u8]) -> ApiRequest<'a> {
        ApiRequest {
            method,
            path,
            query: "",
            host: Some(b"api:8081"),
            body,
        }
    }

    fn answer(method: &str, path: &str, body: &[u8]) -> (u16, String) {
        match parse(&req(method, path, body)) {
            Parsed::Answer(a) => (a.status, String::from_utf8(a.body).expect("utf-8")),
            Parsed::Call(c) => panic!("{method} {path}: a call, {c:?}"),
        }
    }

    fn ingress(secure: bool) -> Ingress {
        Ingress {
            location: "ess.example:8080".into(),
            secure,
        }
    }

    #[test]
    fn the_four_calls() {
        let call = |m, p, b| parse(&req(m, p, b));
        assert_eq!(
            call("GET", "/event-stream/version/", b""),
            Parsed::Call(ApiCall::Version)
        );
        assert_eq!(
            call("HEAD", "/event-stream/", b""),
            Parsed::Call(ApiCall::List)
        );
        assert_eq!(
            call(
                "POST",
                "/event-stream/",
                br#"{"routing_key":"rk","x":[1, 2]}"#
            ),
            Parsed::Call(ApiCall::Create {
                routing_key: "rk".into()
            })
        );
        assert_eq!(
            call("DELETE", "/event-stream/42", b""),
            Parsed::Call(ApiCall::Delete { id: 42 })
        );
    }

    #[test]
    fn version_and_registry_answers_render_as_fastapi() {
        let v = String::from_utf8(version_response().body).expect("utf-8");
        assert_eq!(
            v,
            format!(
                r#"{{"protocol":"WEBSOCKET","name":"ringcast","version":"{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        );
        let s = EventStream {
            id: 7,
            uuid: "abc".into(),
            routing_key: "r\"k".into(),
        };
        let c = created_response(&s, &ingress(true));
        assert_eq!(c.status, 201);
        assert_eq!(
            c.body,
            br#"{"id":7,"location":"wss://ess.example:8080/event-stream/abc"}"#
        );
        let l = list_response(&[s.clone(), s], &ingress(false));
        let one =
            r#"{"id":7,"location":"ws://ess.example:8080/event-stream/abc","routing_key":"r\"k"}"#;
        assert_eq!(
            String::from_utf8(l.body).expect("utf-8"),
            format!(r#"{{"event_streams":[{one},{one}]}}"#)
        );
        assert_eq!(
            list_response(&[], &ingress(false)).body,
            br#"{"event_streams":[]}"#
        );
        let gone = deleted_response(3, true);
        assert_eq!((gone.status, gone.body.len()), (204, 0));
        assert!(
            !gone
                .render(true)
                .windows(14)
                .any(|w| w == b"content-length")
        );
        let unknown = deleted_response(3, false);
        assert_eq!(
            (unknown.status, unknown.body),
            (404, br#"{"detail":"EventStream 3 is not known"}"#.to_vec())
        );
        assert_eq!(failed_response(RegistryError::Busy).status, 503);
        assert_eq!(failed_response(RegistryError::Failed).status, 500);
        assert_eq!(too_large_response().status, 413);
    }

    #[test]
    fn delete_ids_parse_as_pydantic_ints() {
        let (status, body) = answer("DELETE", "/event-stream/abc", b"");
        assert_eq!(status, 422);
        assert_eq!(
            body,
            r#"{"detail":[{"type":"int_parsing","loc":["path","es_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"}]}"#
        );
        assert_eq!(answer("DELETE", "/event-stream/version", b"").0, 422);
        assert_eq!(
            answer("DELETE", "/event-stream/00099999999999999999999", b""),
            (
                404,
                r#"{"detail":"EventStream 99999999999999999999 is not known"}"#.into()
            )
        );
        assert_eq!(
            parse(&req("DELETE", "/event-stream/-3", b"")),
            Parsed::Call(ApiCall::Delete { id: -3 })
        );
    }

    #[test]
    fn slashes_methods_and_unknown_paths_as_starlette() {
        let r = match parse(&ApiRequest {
            query: "a=1",
            ..req("POST", "/event-stream", b"{}")
        }) {
            Parsed::Answer(a) => a,
            Parsed::Call(c) => panic!("{c:?}"),
        };
        assert_eq!(r.status, 307);
        assert_eq!(
            r.location.as_deref(),
            Some("http://api:8081/event-stream/?a=1")
        );
        let raw = r.render(false);
        assert!(raw.starts_with(b"HTTP/1.1 307 Temporary Redirect\r\n"));
        assert!(!raw.windows(12).any(|w| w == b"content-type"));
        assert_eq!(answer("GET", "/event-stream/version", b"").0, 405);
        assert_eq!(
            answer("PUT", "/event-stream/", b""),
            (405, r#"{"detail":"Method Not Allowed"}"#.into())
        );
        assert_eq!(answer("GET", "/event-stream/7/", b"").0, 307);
        assert_eq!(
            answer("GET", "/nope", b""),
            (404, r#"{"detail":"Not Found"}"#.into())
        );
        assert_eq!(answer("GET", "/", b"").0, 404);
        assert_eq!(answer("GET", "/event-stream/a/b", b"").0, 404);
        let no_host = ApiRequest {
            host: None,
            ..req("GET", "/event-stream", b"")
        };
        match parse(&no_host) {
            Parsed::Answer(a) => assert_eq!(a.location.as_deref(), Some("/event-stream/")),
            Parsed::Call(c) => panic!("{c:?}"),
        }
    }

    #[test]
    fn bad_bodies_get_pydantic_errors() {
        let post = |b: &[u8]| answer("POST", "/event-stream/", b);
        assert_eq!(
            post(br#"{"other": 1}"#),
            (
                422,
                r#"{"detail":[{"type":"missing","loc":["body","routing_key"],"msg":"Field required","input":{"other":1}}]}"#.into()
            )
        );
        assert_eq!(
            post(br#"{"routing_key": 5}"#).1,
            r#"{"detail":[{"type":"string_type","loc":["body","routing_key"],"msg":"Input should be a valid string","input":5}]}"#
        );
        assert!(
            post(br#"{"routing_key":null}"#)
                .1
                .contains(r#""input":null"#)
        );
        assert_eq!(
            post(b"").1,
            r#"{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}"#
        );
        assert_eq!(post(b"null").0, 422);
        assert!(
            post(b"[1, 2]")
                .1
                .contains(r#""type":"model_attributes_type","loc":["body"]"#)
        );
        assert_eq!(
            post(br#"{"name": "Test", "price": None}"#).1,
            r#"{"detail":[{"type":"json_invalid","loc":["body",26],"msg":"JSON decode error","input":{},"ctx":{"error":"Expecting value"}}]}"#
        );
        assert!(post(b"{} x").1.contains("Extra data"));
        assert!(post(b"{\"a\" 1}").1.contains("Expecting ':' delimiter"));
        assert_eq!(
            post(b"\xff\xfe"),
            (
                400,
                r#"{"detail":"There was an error parsing the body"}"#.into()
            )
        );
    }

    #[test]
    fn no_input_panics() {
        let samples: [&[u8]; 9] = [
            b"",
            b"{",
            b"\"",
            b"{\"routing_key\":\"\\",
            b"\x00",
            b"[[[[[[",
            b"{\"a\":\"\xc3\"}",
            b"\n\n\n}",
            b"{\"routing_key\":\"\xe2\x82\xac\"}",
        ];
        let paths = [
            "/",
            "/event-stream",
            "/event-stream/",
            "/event-stream/\u{e9}",
            "//",
            "",
        ];
        for body in samples {
            for path in paths {
                for method in ["GET", "POST", "DELETE", "HEAD", "X"] {
                    let _ = parse(&req(method, path, body));
                }
            }
        }
        assert_eq!(
            minify("{ \"a b\" : [ 1 , \"\\\" x\" ] }"),
            r#"{"a b":[1,"\" x"]}"#
        );
    }
}
