//! The PROXY protocol (v1 text and v2 binary, haproxy's `send-proxy` / `send-proxy-v2`) on
//! listeners that expect it, and the per-IP admission that follows it: the edge of a fresh
//! connection, before its first HTTP request.
//!
//! Parsing is the `ppp` crate's ([`parse`] is pure, so it is unit-tested and fuzzable);
//! [`admit`] is the I/O shell, run by the connection's own task on its shard. Invariants:
//! - on a listener that expects it, nothing is served before a valid header: a missing,
//!   malformed or oversized one ([`MAX_HEADER_BYTES`]), or one not complete within
//!   `head-timeout`, closes the connection with a log line naming the peer, counted in
//!   `ringcast_refused_total{reason="proxy_header"}`;
//! - the header's source address replaces the socket's as the connection's client address
//!   (`Conn::peer`) before any limit or log uses it; a v2 `LOCAL` header (haproxy's health
//!   checks) or v1 `UNKNOWN` keeps the socket's own;
//! - bytes after the header stay in the connection's buffer for the HTTP phase.

use std::net::SocketAddr;
use std::time::Instant;

use ppp::v2;
use ppp::{HeaderResult, PartialResult, v1};

use crate::http;
use crate::limits::{Refusal, clock_ns};
use crate::router::table::ConnKey;
use crate::rt::{ReadOutcome, TcpStream};
use crate::shard::ShardRef;

/// Longest PROXY header accepted: 4 KiB. A v1 header is at most 107 bytes; a v2 header is 16
/// bytes plus addresses (at most 216) plus TLVs, which haproxy adds only when told to
/// (`proxy-v2-options`). Longer ones are refused rather than buffered.
pub const MAX_HEADER_BYTES: usize = 4 * 1_024;

/// The longest v1 line, CRLF included (the specification's 107 bytes).
const V1_MAX_BYTES: usize = 107;

/// What the start of a connection's bytes says.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Could still become a valid header: read more.
    Incomplete,
    /// A valid header of `len` bytes. `source` is the client's address, `None` for a v2
    /// `LOCAL` command or an unknown/unspecified family (keep the socket's address).
    Header {
        /// Bytes the header takes.
        len: usize,
        /// The client address it carries.
        source: Option<SocketAddr>,
    },
    /// Not a PROXY header, and more bytes cannot make it one.
    Invalid(String),
}

/// Parses a PROXY v1 or v2 header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    // ppp 2.3 calls a v1 line cut just after a space (`… 56324 `) invalid rather than partial;
    // TCP may cut anywhere, so a v1 line is only parsed once its newline (or 107 bytes, the
    // longest v1 line) is here.
    //
    // And a v1 line ends at its first CRLF: ppp, given more bytes than the line, may take a bare
    // LF as part of the line and look further for a CRLF, so the header found would depend on
    // how TCP cut the stream (found by the `proxy_header` fuzz target). Only the line itself is
    // handed to it, and a line not ended by CRLF is refused.
    let v1_start = buf.starts_with(b"PROXY") || b"PROXY".starts_with(buf);
    let buf = if v1_start {
        match buf.iter().position(|&b| b == b'\n') {
            None if buf.len() < V1_MAX_BYTES => return Parsed::Incomplete,
            None => return Parsed::Invalid("PROXY v1 line longer than 107 bytes".to_owned()),
            Some(nl) if nl >= V1_MAX_BYTES => {
                return Parsed::Invalid("PROXY v1 line longer than 107 bytes".to_owned());
            }
            Some(nl) if nl == 0 || buf[nl - 1] != b'\r' => {
                return Parsed::Invalid("PROXY v1 line not ended by CRLF".to_owned());
            }
            Some(nl) => &buf[..=nl],
        }
    } else {
        buf
    };
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return if v1_start {
            // A whole v1 line that still lacks parts (`PROXY TCP4 x\r\n`) cannot be completed.
            Parsed::Invalid("PROXY v1 line with missing fields".to_owned())
        } else if buf.len() >= MAX_HEADER_BYTES {
            Parsed::Invalid(format!("PROXY header longer than {MAX_HEADER_BYTES} bytes"))
        } else {
            Parsed::Incomplete
        };
    }
    match result {
        HeaderResult::V1(Ok(header)) => Parsed::Header {
            len: header.header.len(),
            source: match header.addresses {
                v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
                v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(header)) if header.len() > MAX_HEADER_BYTES => {
            Parsed::Invalid(format!("PROXY header longer than {MAX_HEADER_BYTES} bytes"))
        }
        HeaderResult::V2(Ok(header)) => Parsed::Header {
            len: header.len(),
            source: match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some((a.source_address, a.source_port).into())
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some((a.source_address, a.source_port).into())
                }
                (v2::Command::Proxy, _) => None,
            },
        },
        HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("not a PROXY header: {e}")),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("bad PROXY v2 header: {e}")),
    }
}

/// Whether each listener (indexed as `Config::listeners`) expects a PROXY header: the native
/// listener with `proxy-protocol`, a route's when any route on it has `proxy_protocol = true`.
pub fn listeners(config: &crate::config::Config) -> Vec<bool> {
    let mut out = vec![false; config.listeners().len()];
    if let Some(native) = out.first_mut() {
        *native = config.proxy_protocol;
    }
    for (route, index) in config.routes.iter().zip(config.route_listeners()) {
        if route.proxy_protocol
            && let Some(flag) = out.get_mut(index)
        {
            *flag = true;
        }
    }
    out
}

/// Runs the edge of a fresh connection: the PROXY header where its listener expects one
/// (leaving the bytes after it in `pending`), then the per-IP limits. False: the connection
/// was refused (answered or just closed, counted and logged) and must end.
pub(super) async fn admit(
    shard: &ShardRef,
    key: ConnKey,
    stream: &TcpStream,
    pending: &mut Vec<u8>,
    deadline: Instant,
) -> bool {
    let expects = {
        let s = shard.borrow();
        let listener = s.conns.get(key).map_or(0, |c| usize::from(c.listener));
        s.proxy_listeners.get(listener).copied().unwrap_or(false)
    };
    if expects && !read_header(shard, key, stream, pending, deadline).await {
        return false;
    }
    let refusal = {
        let mut s = shard.borrow_mut();
        let table = s.per_ip.clone();
        match s.conns.get_mut(key) {
            Some(conn) if table.is_active() => match table.admit(conn.peer.ip(), clock_ns()) {
                Ok(lease) => {
                    conn.ip_lease = Some(lease);
                    None
                }
                Err(why) => Some((why, conn.peer)),
            },
            _ => None,
        }
    };
    let Some((why, peer)) = refusal else {
        return true;
    };
    shard.borrow().stats().refused.inc(why);
    let message = match why {
        Refusal::HandshakeRate => "too many new connections from this address",
        _ => "too many connections from this address",
    };
    tracing::info!(%peer, reason = why.as_str(), "connection refused: 429");
    let body = format!("{{\"error\":\"{message}\"}}");
    let response = http::response_with(
        429,
        "application/json",
        &[("retry-after", b"1")],
        body.as_bytes(),
        false,
    );
    let _ = stream.write_all(response).await;
    false
}

/// Reads until `pending` holds a whole PROXY header, then takes it out and records its source
/// address as the connection's peer. False when the header is missing, bad or late.
async fn read_header(
    shard: &ShardRef,
    key: ConnKey,
    stream: &TcpStream,
    pending: &mut Vec<u8>,
    deadline: Instant,
) -> bool {
    loop {
        let why = match parse(pending) {
            Parsed::Header { len, source } => {
                pending.drain(..len);
                let mut s = shard.borrow_mut();
                if let (Some(conn), Some(source)) = (s.conns.get_mut(key), source) {
                    conn.peer = source;
                }
                return true;
            }
            Parsed::Invalid(why) => why,
            Parsed::Incomplete => {
                let mut on_data = |data: &[u8]| {
                    pending.extend_from_slice(data);
                    pending.len() < MAX_HEADER_BYTES
                };
                let read = stream.read_available(&mut on_data);
                match tokio::time::timeout_at(deadline.into(), read).await {
                    Ok(ReadOutcome::Eof) if pending.is_empty() => {
                        "closed before sending a PROXY header".to_owned()
                    }
                    Ok(ReadOutcome::Eof) => "closed in the middle of its PROXY header".to_owned(),
                    Ok(_) => continue,
                    Err(_) => "no complete PROXY header within head-timeout".to_owned(),
                }
            }
        };
        let s = shard.borrow();
        s.stats().refused.inc(Refusal::ProxyHeader);
        let peer = s.conns.get(key).map(|c| c.peer);
        let listener = s.conns.get(key).map_or(0, |c| c.listener);
        tracing::warn!(peer = ?peer, listener, reason = %why, "PROXY protocol header refused");
        return false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
        out.extend_from_slice(addresses);
        out
    }

    /// Found by the `proxy_header` fuzz target: a v1 line ended by a bare LF was a 15-byte
    /// header when cut there, and a 52-byte one with the bytes after it (ppp looked on for a
    /// CRLF). Now the verdict is the same however the bytes are cut: refused.
    #[test]
    fn a_v1_line_needs_crlf_and_its_verdict_does_not_depend_on_the_cut() {
        let data = b"PROXY UNKNOWN \nRPROXY TCP4 192.02Y..X1 U\0\0\0=\0\x11\0W\0\n\r\n\r\n";
        for cut in 0..=data.len() {
            assert!(
                !matches!(parse(&data[..cut]), Parsed::Header { .. }),
                "cut {cut} parsed as a header"
            );
        }
        assert!(matches!(parse(data), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"PROXY UNKNOWN\r\nGET /"),
            Parsed::Header {
                len: 15,
                source: None
            }
        ));
    }

    #[test]
    fn v1_gives_the_source_and_leaves_the_request() {
        let raw = b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let Parsed::Header { len, source } = parse(raw) else {
            panic!("{:?}", parse(raw));
        };
        assert_eq!(&raw[len..len + 3], b"GET");
        assert_eq!(source, Some("192.0.2.1:56324".parse().unwrap()));
        let v6 = b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n";
        assert!(matches!(parse(v6), Parsed::Header { source: Some(a), .. } if a.is_ipv6()));
        assert!(matches!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header { source: None, .. }
        ));
    }

    #[test]
    fn v2_proxy_and_local() {
        let mut addrs = vec![198, 51, 100, 7, 10, 0, 0, 1];
        addrs.extend_from_slice(&40_000u16.to_be_bytes());
        addrs.extend_from_slice(&8_080u16.to_be_bytes());
        let mut raw = v2(1, 0x11, &addrs);
        let header_len = raw.len();
        raw.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&raw),
            Parsed::Header {
                len: header_len,
                source: Some("198.51.100.7:40000".parse().unwrap())
            }
        );
        // haproxy's health checks: LOCAL, whose addresses (if any) are not a client's.
        assert!(matches!(
            parse(&v2(0, 0x00, &[])),
            Parsed::Header { source: None, .. }
        ));
    }

    #[test]
    fn partial_headers_wait_and_garbage_is_refused() {
        let full = b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\n";
        for cut in 1..full.len() {
            assert_eq!(parse(&full[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        let v2_full = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        for cut in 1..v2_full.len() {
            assert_eq!(
                parse(&v2_full[..cut]),
                Parsed::Incomplete,
                "v2 cut at {cut}"
            );
        }
        for garbage in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 nonsense\r\n",
            b"\xff\xfe\x00",
            b"PROXY TCP4 192.0.2.1 10.0.0.1 99999 443\r\n",
        ] {
            assert!(matches!(parse(garbage), Parsed::Invalid(_)), "{garbage:?}");
        }
        // A v1 line that never ends.
        assert!(matches!(parse(&[b'P'; 200][..]), Parsed::Invalid(_)));
        let long = b"PROXY TCP4 "
            .iter()
            .copied()
            .chain([b'1'; 300])
            .collect::<Vec<_>>();
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }

    #[test]
    fn oversized_v2_is_refused() {
        let mut raw = v2(1, 0x11, &vec![0; MAX_HEADER_BYTES]);
        assert!(matches!(parse(&raw), Parsed::Invalid(_)));
        raw.truncate(MAX_HEADER_BYTES);
        assert!(matches!(parse(&raw), Parsed::Invalid(_)));
    }
}
