//! Plain HTTP on the WebSocket port: request parsing, routing and responses.
//!
//! Requests are parsed with `httparse` from the connection's read buffer; nothing here does I/O.
//! The connection task ([`crate::conn`]) reads, calls [`parse`], picks a route and writes the
//! response bytes this module renders.

pub mod echoes;
pub mod ess_api;
pub mod publish;

use std::borrow::Cow;

use bytes::Bytes;

/// Largest request head we accept. A longer head gets `431` and the connection is closed.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers we parse in one request.
pub const MAX_HEADERS: usize = 32;
/// The demo page served at `GET /`; see [`demo_page`].
const DEMO_PAGE: &str = include_str!("demo.html");

/// The demo page, connecting to the configured WebSocket path (`--ws-path`).
pub fn demo_page(ws_path: &str) -> String {
    let mut path = Vec::new();
    crate::protocol::write_json_string(&mut path, ws_path.as_bytes());
    // A JSON string inside <script>: escape `<` so no path can close the script element.
    let path = String::from_utf8_lossy(&path).replace('<', "\\u003c");
    DEMO_PAGE.replace("__RINGCAST_WS_PATH__", &path)
}

/// A parsed request head, borrowing from the read buffer.
#[derive(Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The request target as sent (`/ws?subscribe=a`).
    pub target: &'a str,
    /// The target's path (`/ws`).
    pub path: &'a str,
    /// The target's query without `?` (`subscribe=a`), empty if none.
    pub query: &'a str,
    /// HTTP minor version: 0 or 1.
    pub version: u8,
    /// The headers.
    pub headers: &'a [httparse::Header<'a>],
    /// Length of the head in bytes, including the final CRLF CRLF.
    pub head_len: usize,
}

/// Why a request could not be parsed; answered with `400` (or `431`) and a close.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The bytes are not HTTP/1.x.
    #[error("malformed HTTP request: {0}")]
    Malformed(httparse::Error),
    /// The head did not fit in [`MAX_HEAD_BYTES`].
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
}

impl ParseError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Malformed(_) => 400,
            ParseError::TooLarge => 431,
        }
    }
}

/// Parses a request head from `buf`; `Ok(None)` means more bytes are needed.
pub fn parse<'b>(
    buf: &'b [u8],
    headers: &'b mut [httparse::Header<'b>; MAX_HEADERS],
) -> Result<Option<Request<'b>>, ParseError> {
    let mut req = httparse::Request::new(headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) if head_len > MAX_HEAD_BYTES => {
            Err(ParseError::TooLarge)
        }
        Ok(httparse::Status::Complete(head_len)) => {
            let target = req.path.unwrap_or("/");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            Ok(Some(Request {
                method: req.method.unwrap_or("GET"),
                target,
                path,
                query,
                version: req.version.unwrap_or(1),
                headers: req.headers,
                head_len,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => Err(ParseError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(ParseError::TooLarge),
        Err(e) => Err(ParseError::Malformed(e)),
    }
}

impl Request<'_> {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// True for a WebSocket upgrade request (`Upgrade: websocket`).
    pub fn is_websocket_upgrade(&self) -> bool {
        self.header("upgrade").is_some_and(|v| {
            v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        })
    }

    /// The declared body length (0 without the header); `None` if it is not a number.
    pub fn content_length(&self) -> Option<usize> {
        match self.header("content-length") {
            None => Some(0),
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        }
    }

    /// True when the client wants the connection kept open after the response.
    pub fn keep_alive(&self) -> bool {
        match self.header("connection") {
            Some(v) if v.eq_ignore_ascii_case(b"close") => false,
            Some(v) if v.eq_ignore_ascii_case(b"keep-alive") => true,
            _ => self.version == 1,
        }
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        query_param(self.query, name)
    }
}

/// The first value of parameter `name` in `query` (without `?`), percent-decoded; a name
/// without `=` has the value `""`. As Werkzeug's `request.args.get`.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k).as_ref() == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` (as a space); invalid escapes are kept literally and invalid
/// UTF-8 is replaced, so hostile input can never fail here.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

/// Renders a complete response with a body.
pub fn response(status: u16, content_type: &str, body: &[u8], keep_alive: bool) -> Bytes {
    response_with(status, content_type, &[], body, keep_alive)
}

/// [`response`] with extra `headers` (names in lower case, values as sent).
pub fn response_with(
    status: u16,
    content_type: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
    keep_alive: bool,
) -> Bytes {
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             connection: {}\r\ncache-control: no-store\r\n",
            reason(status),
            body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        )
        .as_bytes(),
    );
    if status == 426 {
        out.extend_from_slice(b"upgrade: websocket\r\n");
    }
    if status == 401 {
        out.extend_from_slice(b"www-authenticate: Bearer\r\n");
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Strips the body from a rendered response, keeping every header (for `HEAD`).
pub fn head_only(response: Bytes) -> Bytes {
    match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => response.slice(..end + 4),
        None => response,
    }
}

/// A JSON error body: `{"error":"..."}`.
pub fn json_error(status: u16, message: &str, keep_alive: bool) -> Bytes {
    let mut body = Vec::with_capacity(message.len() + 16);
    body.extend_from_slice(b"{\"error\":");
    crate::protocol::write_json_string(&mut body, message.as_bytes());
    body.push(b'}');
    response(status, "application/json", &body, keep_alive)
}

/// The standard reason phrase for `status` (RFC 9110 and its registry), from the `http` crate,
/// so every status ringcast sends reads as the code means (`403 Forbidden`). A code without a
/// registered phrase (none is sent today) gets an empty one, which HTTP/1.1 allows.
fn reason(status: u16) -> &'static str {
    ::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target_and_query() {
        let raw = b"GET /ws?subscribe=a%2Cb,c&format=raw HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\r\n";
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let req = parse(raw, &mut h).unwrap().unwrap();
        assert_eq!(req.path, "/ws");
        assert_eq!(req.query_param("subscribe").unwrap(), "a,b,c");
        assert_eq!(req.query_param("format").unwrap(), "raw");
        assert!(req.query_param("nope").is_none());
        assert!(req.is_websocket_upgrade());
        assert_eq!(req.head_len, raw.len());
    }

    #[test]
    fn partial_garbage_and_oversize() {
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert!(parse(b"GET / HTTP/1.1\r\nHost", &mut h).unwrap().is_none());
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert_eq!(
            parse(b"\x16\x03\x01garbage\r\n\r\n", &mut h)
                .unwrap_err()
                .status(),
            400
        );
        let big = vec![b'a'; MAX_HEAD_BYTES];
        let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = b"GET /".to_vec();
        req.extend_from_slice(&big);
        assert_eq!(parse(&req, &mut h).unwrap_err().status(), 431);
    }

    #[test]
    fn demo_page_connects_to_the_configured_path() {
        let page = demo_page("/socket");
        assert!(page.contains(r#"const WS_PATH = "/socket";"#));
        assert!(!page.contains("__RINGCAST_WS_PATH__"));
        let hostile = demo_page("/a</script><script>alert(1)");
        assert_eq!(
            hostile.matches("</script>").count(),
            page.matches("</script>").count()
        );
    }

    #[test]
    fn every_status_sent_has_its_standard_reason() {
        let cases = [
            (200, "OK"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (411, "Length Required"),
            (413, "Payload Too Large"),
            (426, "Upgrade Required"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (503, "Service Unavailable"),
        ];
        for (status, phrase) in cases {
            let head = response(status, "text/plain", b"", false);
            let want = format!("HTTP/1.1 {status} {phrase}\r\n");
            assert!(head.starts_with(want.as_bytes()), "{status}: {head:?}");
        }
        assert_eq!(reason(599), "");
    }

    #[test]
    fn percent_decoding_never_fails() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
