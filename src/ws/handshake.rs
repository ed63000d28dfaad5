//! The WebSocket opening handshake (RFC 6455 §4.2).
//!
//! The HTTP request has already been parsed by [`crate::http`]; here tungstenite validates it
//! (method, version, `Connection: Upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13`,
//! the key) and derives the accept key. We render the 101 response ourselves into one buffer.

use bytes::Bytes;

use crate::http::Request;

/// Why an upgrade request was refused; the caller answers HTTP 400 with this text.
#[derive(Debug, thiserror::Error)]
#[error("bad WebSocket handshake: {0}")]
pub struct HandshakeError(String);

/// Validates `req` as a WebSocket upgrade and returns the complete `101 Switching Protocols`
/// response.
pub fn accept(req: &Request<'_>) -> Result<Bytes, HandshakeError> {
    let mut builder = http::Request::builder().method(req.method).uri(req.target);
    builder = builder.version(if req.version == 1 {
        http::Version::HTTP_11
    } else {
        http::Version::HTTP_10
    });
    for h in req.headers {
        builder = builder.header(h.name, h.value);
    }
    let request = builder
        .body(())
        .map_err(|e| HandshakeError(e.to_string()))?;
    let response = tungstenite::handshake::server::create_response(&request)
        .map_err(|e| HandshakeError(e.to_string()))?;
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    for (name, value) in response.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Bytes::from(out))
}

/// `response` (a complete 101 from [`accept`]) with `Sec-WebSocket-Protocol: protocol` added,
/// for a client that offered it (RFC 6455 §4.2.2: the server names the one it selected).
pub fn with_subprotocol(response: Bytes, protocol: &str) -> Bytes {
    let head = response.strip_suffix(b"\r\n").unwrap_or(&response);
    let mut out = Vec::with_capacity(response.len() + protocol.len() + 28);
    out.extend_from_slice(head);
    out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
    out.extend_from_slice(protocol.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    Bytes::from(out)
}
