//! A `/socket.io/` request as Engine.IO sees it: the query (`EIO`, `transport`, `sid`, `t`),
//! the method, the Origin rule, and the error answers.
//!
//! Pure, any thread (the shard that accepted the request calls it before routing by sid). With
//! engine.io's error table and one test per refusal it runs past 300 lines; the checks belong
//! together because their order decides which error a client sees.
//!
//! The checks run in this order, each answering 400 (engine.io's `verify` and `handshake`, with
//! python-engineio's Origin check first, as the SuperDARN original ran it):
//!
//! 1. Origin (COMPAT 10, D5): no `Origin` header, or an exact match in the route's allow-list;
//!    otherwise the body is `"Not an accepted origin."` (python-engineio's `_bad_request`,
//!    `json.dumps` of the message, `Content-Type: text/plain`).
//! 2. `OPTIONS` is a CORS preflight and needs nothing more.
//! 3. Query: a repeated `EIO`, `transport` or `sid`, or a JSONP `j` (not supported), is a bad
//!    request. `transport` must be `polling` or `websocket` (code 0). An Origin with a control
//!    character is a bad request (code 3). An `EIO` other than `4` is code 5.
//! 4. With a `sid`: it must have our shape (code 1, whether or not the session exists; the
//!    owning shard answers the same for a well-formed sid it does not know). A polling sid
//!    takes GET or POST; a `websocket` request must be an upgrade (code 3).
//! 5. Without one (a new session): GET only (code 2), a `websocket` transport must be an
//!    upgrade and a `polling` one must not (code 3), and `EIO` must be present (code 5).
//!
//! Error bodies are engine.io's: `{"code":N,"message":"…"}` with `Content-Type:
//! application/json` (`abortRequest`); on a failed WebSocket upgrade engine.io writes the bare
//! message instead ([`EioError::message`]).
//!
//! Invariants: parsing never panics and never allocates; values are compared as sent (no
//! percent-decoding: none of the values we accept contains a character that needs it).

use super::sid::Sid;

/// The allowed Origins of the SuperDARN original (COMPAT 5.1 and 10, D5), matched exactly.
///
/// The first seven are verbatim from `ALLOWED_ORIGINS` in `app/__init__.py` of
/// vtsuperdarn/superdarn-realtime-data at 13b80dfd. COMPAT 5.1 (read at HEAD `b7236ee`) adds
/// `superdarn.org` on the default port and 80 and the typo `superdar.org:81`; they are written
/// with the same `http://` scheme as the others (TODO(verify): check their exact strings
/// against `b7236ee`). Browsers never send a default port (`:80`), so those entries only match
/// hand-made clients, as in the original.
pub const SUPERDARN_ORIGINS: [&str; 10] = [
    "http://localhost:5002",
    "http://127.0.0.1:5002",
    "http://localhost",
    "http://127.0.0.1",
    "http://vt.superdarn.org",
    "http://vt.superdarn.org:80",
    "http://vt.superdarn.org:81",
    "http://superdarn.org",
    "http://superdarn.org:80",
    "http://superdar.org:81",
];

/// Which `Origin` headers a route accepts. A request without one is always accepted (python
/// and node clients send none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Any Origin (python-engineio's `cors_allowed_origins='*'`).
    Any,
    /// Exactly these Origins (scheme, host and port as the browser sends them).
    Exact(Vec<Box<str>>),
}

impl OriginPolicy {
    /// The SuperDARN default: [`SUPERDARN_ORIGINS`].
    pub fn superdarn() -> OriginPolicy {
        OriginPolicy::Exact(SUPERDARN_ORIGINS.iter().map(|&o| o.into()).collect())
    }

    /// Whether a request with this `Origin` header (or none) is accepted.
    pub fn allows(&self, origin: Option<&[u8]>) -> bool {
        match (self, origin) {
            (_, None) | (OriginPolicy::Any, _) => true,
            (OriginPolicy::Exact(list), Some(o)) => list.iter().any(|a| a.as_bytes() == o),
        }
    }
}

/// The HTTP methods Engine.IO distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET: a handshake, a long-poll, or a WebSocket upgrade.
    Get,
    /// POST: packets from a polling client.
    Post,
    /// OPTIONS: a CORS preflight.
    Options,
    /// Anything else.
    Other,
}

/// The parts of a `/socket.io/` request that Engine.IO reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: Method,
    /// The query string, without the `?`.
    pub query: &'a [u8],
    /// The `Origin` header, if sent.
    pub origin: Option<&'a [u8]>,
    /// Whether this is a valid WebSocket upgrade request (checked by `ws::handshake`).
    pub websocket_upgrade: bool,
}

/// A request Engine.IO accepts, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EioRequest {
    /// `GET ?EIO=4&transport=polling`: open a polling session; answer its open packet.
    OpenPolling,
    /// Upgrade `?EIO=4&transport=websocket`: open a WebSocket-only session.
    OpenWebSocket,
    /// `GET …&transport=polling&sid=…`: a long-poll for the session's packets.
    Poll(Sid),
    /// `POST …&transport=polling&sid=…`: packets from the client.
    Post(Sid),
    /// Upgrade `…&transport=websocket&sid=…`: the WebSocket that upgrades a polling session.
    Upgrade(Sid),
    /// `OPTIONS`: a CORS preflight, answered 200 with the CORS headers.
    Preflight,
}

/// engine.io's error codes (`Server.errors`), each with its message (`Server.errorMessages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[repr(u8)]
pub enum EioError {
    /// 0: `transport` is missing or names no transport we serve. The client's fault.
    #[error("Transport unknown")]
    UnknownTransport = 0,
    /// 1: the sid is malformed or names no live session (closed, expired, or another
    /// server's). The client should open a new session.
    #[error("Session ID unknown")]
    UnknownSid = 1,
    /// 2: a new session asked for with another method than GET. The client's fault.
    #[error("Bad handshake method")]
    BadHandshakeMethod = 2,
    /// 3: anything else malformed (a repeated key, JSONP, a WebSocket transport without an
    /// upgrade, a second GET while one is pending, a bad POST body). The client's fault.
    #[error("Bad request")]
    BadRequest = 3,
    /// 4: refused by policy (answered 403). Not used by the SuperDARN profile yet.
    #[error("Forbidden")]
    Forbidden = 4,
    /// 5: `EIO` is missing or not `4`. The client's fault (an Engine.IO v3 client).
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion = 5,
}

impl EioError {
    /// The numeric code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// engine.io's message for the code.
    pub const fn message(self) -> &'static str {
        match self {
            EioError::UnknownTransport => "Transport unknown",
            EioError::UnknownSid => "Session ID unknown",
            EioError::BadHandshakeMethod => "Bad handshake method",
            EioError::BadRequest => "Bad request",
            EioError::Forbidden => "Forbidden",
            EioError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// The HTTP response body, `{"code":N,"message":"…"}` (engine.io's `abortRequest`).
    pub const fn body(self) -> &'static str {
        match self {
            EioError::UnknownTransport => r#"{"code":0,"message":"Transport unknown"}"#,
            EioError::UnknownSid => r#"{"code":1,"message":"Session ID unknown"}"#,
            EioError::BadHandshakeMethod => r#"{"code":2,"message":"Bad handshake method"}"#,
            EioError::BadRequest => r#"{"code":3,"message":"Bad request"}"#,
            EioError::Forbidden => r#"{"code":4,"message":"Forbidden"}"#,
            EioError::UnsupportedProtocolVersion => {
                r#"{"code":5,"message":"Unsupported protocol version"}"#
            }
        }
    }

    /// The HTTP status: 403 for [`EioError::Forbidden`], 400 otherwise.
    pub const fn status(self) -> u16 {
        match self {
            EioError::Forbidden => 403,
            _ => 400,
        }
    }
}

/// Why a `/socket.io/` request is refused before it reaches a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The Origin is not allowed. A browser page from another site; answer 400 with
    /// [`ORIGIN_REFUSED_BODY`] as `text/plain`.
    #[error("Not an accepted origin.")]
    OriginRefused,
    /// An Engine.IO error: answer [`EioError::status`] with [`EioError::body`].
    #[error(transparent)]
    Eio(#[from] EioError),
}

/// The body python-engineio answers a refused Origin with: the message as a JSON string.
pub const ORIGIN_REFUSED_BODY: &str = r#""Not an accepted origin.""#;

impl RequestError {
    /// The HTTP status (400, or 403 for [`EioError::Forbidden`]).
    pub const fn status(self) -> u16 {
        match self {
            RequestError::OriginRefused => 400,
            RequestError::Eio(e) => e.status(),
        }
    }

    /// The response body.
    pub const fn body(self) -> &'static str {
        match self {
            RequestError::OriginRefused => ORIGIN_REFUSED_BODY,
            RequestError::Eio(e) => e.body(),
        }
    }

    /// The response `Content-Type`.
    pub const fn content_type(self) -> &'static str {
        match self {
            RequestError::OriginRefused => "text/plain",
            RequestError::Eio(_) => "application/json",
        }
    }
}

/// The query keys Engine.IO reads, each at most once.
#[derive(Debug, Default)]
struct Query<'a> {
    /// `EIO`, the protocol version.
    eio: Option<&'a [u8]>,
    /// `transport`.
    transport: Option<&'a [u8]>,
    /// `sid`.
    sid: Option<&'a [u8]>,
}

/// Reads the query; a repeated key or JSONP (`j`) is a bad request. `t` (a cache buster),
/// `b64` and keys of the application are ignored.
fn parse_query(query: &[u8]) -> Result<Query<'_>, EioError> {
    let mut q = Query::default();
    for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let slot = match key {
            b"EIO" => &mut q.eio,
            b"transport" => &mut q.transport,
            b"sid" => &mut q.sid,
            b"j" => return Err(EioError::BadRequest),
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(EioError::BadRequest);
        }
    }
    Ok(q)
}

/// Whether an Origin holds only header value characters (engine.io's `checkInvalidHeaderChar`).
fn origin_chars_ok(origin: &[u8]) -> bool {
    origin
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

/// Checks a `/socket.io/` request and says what it asks for.
pub fn parse_request(
    head: &RequestHead<'_>,
    origins: &OriginPolicy,
) -> Result<EioRequest, RequestError> {
    if !origins.allows(head.origin) {
        return Err(RequestError::OriginRefused);
    }
    if head.method == Method::Options {
        return Ok(EioRequest::Preflight);
    }
    let q = parse_query(head.query)?;
    let websocket = match q.transport {
        Some(b"polling") => false,
        Some(b"websocket") => true,
        _ => return Err(EioError::UnknownTransport.into()),
    };
    if head.origin.is_some_and(|o| !origin_chars_ok(o)) {
        return Err(EioError::BadRequest.into());
    }
    if q.eio.is_some_and(|v| v != b"4") {
        return Err(EioError::UnsupportedProtocolVersion.into());
    }
    if let Some(raw) = q.sid {
        let sid = Sid::parse(raw).map_err(|_| EioError::UnknownSid)?;
        return match (websocket, head.websocket_upgrade, head.method) {
            (true, true, Method::Get) => Ok(EioRequest::Upgrade(sid)),
            (false, false, Method::Get) => Ok(EioRequest::Poll(sid)),
            (false, false, Method::Post) => Ok(EioRequest::Post(sid)),
            _ => Err(EioError::BadRequest.into()),
        };
    }
    if head.method != Method::Get {
        return Err(EioError::BadHandshakeMethod.into());
    }
    if websocket != head.websocket_upgrade {
        return Err(EioError::BadRequest.into());
    }
    if q.eio.is_none() {
        return Err(EioError::UnsupportedProtocolVersion.into());
    }
    Ok(if websocket {
        EioRequest::OpenWebSocket
    } else {
        EioRequest::OpenPolling
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "lv_VI97HAXpY6yYWAAAC";

    fn req(method: Method, query: &str, upgrade: bool) -> Result<EioRequest, RequestError> {
        let head = RequestHead {
            method,
            query: query.as_bytes(),
            origin: None,
            websocket_upgrade: upgrade,
        };
        parse_request(&head, &OriginPolicy::superdarn())
    }

    fn with_origin(origin: &[u8]) -> Result<EioRequest, RequestError> {
        let head = RequestHead {
            method: Method::Get,
            query: b"EIO=4&transport=polling",
            origin: Some(origin),
            websocket_upgrade: false,
        };
        parse_request(&head, &OriginPolicy::superdarn())
    }

    #[test]
    fn accepted_requests() {
        let sid = Sid::parse(SID.as_bytes()).unwrap();
        let get = Method::Get;
        assert_eq!(
            req(get, "EIO=4&transport=polling&t=N8hyd6w", false),
            Ok(EioRequest::OpenPolling)
        );
        assert_eq!(
            req(get, "EIO=4&transport=websocket", true),
            Ok(EioRequest::OpenWebSocket)
        );
        let poll = format!("EIO=4&transport=polling&t=N8hyd7H&sid={SID}");
        assert_eq!(req(get, &poll, false), Ok(EioRequest::Poll(sid)));
        assert_eq!(req(Method::Post, &poll, false), Ok(EioRequest::Post(sid)));
        let upgrade = format!("EIO=4&transport=websocket&sid={SID}");
        assert_eq!(req(get, &upgrade, true), Ok(EioRequest::Upgrade(sid)));
        assert_eq!(req(Method::Options, "", false), Ok(EioRequest::Preflight));
        // Keys in any order; application keys and b64 ignored.
        assert_eq!(
            req(get, "room=x&transport=polling&b64=1&EIO=4&", false),
            Ok(EioRequest::OpenPolling)
        );
    }

    #[test]
    fn engineio_errors() {
        let e = |m, q: &str, u| req(m, q, u).unwrap_err();
        let get = Method::Get;
        assert_eq!(e(get, "EIO=4", false), EioError::UnknownTransport.into());
        assert_eq!(
            e(get, "EIO=4&transport=abc", false),
            EioError::UnknownTransport.into()
        );
        assert_eq!(
            e(get, "EIO=4&transport=polling&sid=nope", false),
            EioError::UnknownSid.into()
        );
        assert_eq!(
            e(Method::Post, "EIO=4&transport=polling", false),
            EioError::BadHandshakeMethod.into()
        );
        assert_eq!(
            e(Method::Other, "EIO=4&transport=polling", false),
            EioError::BadHandshakeMethod.into()
        );
        assert_eq!(
            e(get, "EIO=4&transport=websocket", false),
            EioError::BadRequest.into()
        );
        assert_eq!(
            e(get, "EIO=4&transport=polling", true),
            EioError::BadRequest.into()
        );
        assert_eq!(
            e(get, "EIO=4&EIO=4&transport=polling", false),
            EioError::BadRequest.into()
        );
        assert_eq!(
            e(get, "EIO=4&transport=polling&j=0", false),
            EioError::BadRequest.into()
        );
        assert_eq!(
            e(get, "transport=polling", false),
            EioError::UnsupportedProtocolVersion.into()
        );
        assert_eq!(
            e(get, "EIO=3&transport=polling", false),
            EioError::UnsupportedProtocolVersion.into()
        );
        assert_eq!(
            e(get, "EIO=abc&transport=polling", false),
            EioError::UnsupportedProtocolVersion.into()
        );
        let ws_without_upgrade = format!("EIO=4&transport=websocket&sid={SID}");
        assert_eq!(
            e(get, &ws_without_upgrade, false),
            EioError::BadRequest.into()
        );
        let put = format!("EIO=4&transport=polling&sid={SID}");
        assert_eq!(e(Method::Other, &put, false), EioError::BadRequest.into());
    }

    #[test]
    fn error_bodies_are_engineio_s() {
        assert_eq!(
            EioError::UnknownTransport.body(),
            r#"{"code":0,"message":"Transport unknown"}"#
        );
        assert_eq!(
            EioError::UnknownSid.body(),
            r#"{"code":1,"message":"Session ID unknown"}"#
        );
        for e in [
            EioError::UnknownTransport,
            EioError::UnknownSid,
            EioError::BadHandshakeMethod,
            EioError::BadRequest,
            EioError::Forbidden,
            EioError::UnsupportedProtocolVersion,
        ] {
            let body = format!(r#"{{"code":{},"message":"{}"}}"#, e.code(), e.message());
            assert_eq!(e.body(), body);
            assert_eq!(e.to_string(), e.message());
            assert_eq!(e.status(), if e == EioError::Forbidden { 403 } else { 400 });
        }
        let refused = RequestError::OriginRefused;
        assert_eq!(
            (refused.status(), refused.body()),
            (400, "\"Not an accepted origin.\"")
        );
        assert_eq!(refused.content_type(), "text/plain");
    }

    #[test]
    fn origin_rule() {
        for o in SUPERDARN_ORIGINS {
            assert_eq!(
                with_origin(o.as_bytes()),
                Ok(EioRequest::OpenPolling),
                "{o}"
            );
        }
        for o in [
            &b"http://evil.example"[..],
            b"https://vt.superdarn.org",
            b"http://vt.superdarn.org:8080",
            b"http://VT.superdarn.org",
            b"http://localhost/",
            b"null",
            b"",
        ] {
            assert_eq!(with_origin(o), Err(RequestError::OriginRefused));
        }
        // No Origin is accepted (req sends none); Any accepts every well-formed Origin.
        assert!(OriginPolicy::Any.allows(Some(b"http://evil.example")));
        assert!(OriginPolicy::Exact(Vec::new()).allows(None));
        let head = RequestHead {
            method: Method::Get,
            query: b"EIO=4&transport=polling",
            origin: Some(b"http://a\x01b"),
            websocket_upgrade: false,
        };
        assert_eq!(
            parse_request(&head, &OriginPolicy::Any),
            Err(EioError::BadRequest.into())
        );
    }
}
