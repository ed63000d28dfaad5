//! The publishers' wire formats, written and parsed by hand: Redis `PUBLISH` in RESP, and
//! HTTP/1.1 `POST /api/publish` on a keep-alive connection. Both are pipelined, so the parsers
//! take a buffer that may hold several replies (or half of one) and report how many bytes the
//! first complete reply used.

use crate::payload::push_u64;

/// Appends `PUBLISH channel payload` as a RESP array of bulk strings.
pub fn write_resp_publish(buf: &mut Vec<u8>, channel: &[u8], payload: &[u8]) {
    write_resp_command(buf, &[b"PUBLISH", channel, payload]);
}

/// Appends any command as a RESP array of bulk strings.
pub fn write_resp_command(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.push(b'*');
    push_u64(buf, args.len() as u64);
    buf.extend_from_slice(b"\r\n");
    for arg in args {
        buf.push(b'$');
        push_u64(buf, arg.len() as u64);
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
}

/// Appends `POST path` with the body `{"channel":…,"data":<payload>}`.
pub fn write_http_publish(
    buf: &mut Vec<u8>,
    host: &str,
    path: &str,
    channel: &str,
    payload: &[u8],
) {
    const OPEN: &[u8] = b"{\"channel\":\"";
    const MID: &[u8] = b"\",\"data\":";
    let body_len = OPEN.len() + channel.len() + MID.len() + payload.len() + 1;
    buf.extend_from_slice(b"POST ");
    buf.extend_from_slice(path.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    buf.extend_from_slice(host.as_bytes());
    buf.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    push_u64(buf, body_len as u64);
    buf.extend_from_slice(b"\r\n\r\n");
    buf.extend_from_slice(OPEN);
    buf.extend_from_slice(channel.as_bytes());
    buf.extend_from_slice(MID);
    buf.extend_from_slice(payload);
    buf.push(b'}');
}

/// One complete reply at the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Bytes it took.
    pub len: usize,
    /// `None` for success, else a short description of the failure.
    pub error: Option<String>,
}

/// A reply that can never become valid, however many bytes follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbled(pub String);

/// Parses one RESP reply (`+…`, `-…`, `:…`, `$…`; what `AUTH` and `PUBLISH` answer).
/// `Ok(None)`: incomplete.
pub fn parse_resp_reply(buf: &[u8]) -> Result<Option<Reply>, Garbled> {
    let Some(eol) = find_crlf(buf) else {
        return Ok(None);
    };
    let line = &buf[1..eol];
    let after = eol + 2;
    match buf[0] {
        b'+' | b':' => Ok(Some(Reply {
            len: after,
            error: None,
        })),
        b'-' => Ok(Some(Reply {
            len: after,
            error: Some(String::from_utf8_lossy(line).into_owned()),
        })),
        b'$' => {
            let n: i64 = std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Garbled(format!("bad bulk length {line:?}")))?;
            let len = if n < 0 { after } else { after + n as usize + 2 };
            Ok((buf.len() >= len).then_some(Reply { len, error: None }))
        }
        other => Err(Garbled(format!(
            "unexpected RESP reply type {:?}",
            other as char
        ))),
    }
}

/// Parses one HTTP/1.1 response with a `Content-Length` body. `Ok(None)`: incomplete.
/// Any status but 200 is an error reply, described by its status and body.
pub fn parse_http_response(buf: &[u8]) -> Result<Option<Reply>, Garbled> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            return Err(Garbled("HTTP response head over 16 KiB".into()));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| Garbled("HTTP response head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| Garbled(format!("bad status line {status_line:?}")))?;
    let mut content_length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| Garbled(format!("bad content-length {value:?}")))?;
        }
    }
    let len = head_end + 4 + content_length;
    if buf.len() < len {
        return Ok(None);
    }
    let error = (status != 200).then(|| {
        let body = String::from_utf8_lossy(&buf[head_end + 4..len]);
        format!("HTTP {status} {}", body.trim())
    });
    Ok(Some(Reply { len, error }))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_publish_is_a_bulk_array() {
        let mut b = Vec::new();
        write_resp_publish(&mut b, b"ch1", b"{\"t\":1}");
        assert_eq!(
            b,
            b"*3\r\n$7\r\nPUBLISH\r\n$3\r\nch1\r\n$7\r\n{\"t\":1}\r\n"
        );
    }

    #[test]
    fn http_publish_has_a_matching_content_length() {
        let mut b = Vec::new();
        write_http_publish(&mut b, "127.0.0.1:80", "/api/publish", "ch0", b"{\"s\":1}");
        let text = String::from_utf8(b).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"));
        assert_eq!(body, "{\"channel\":\"ch0\",\"data\":{\"s\":1}}");
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn resp_replies() {
        let ok = |len| Ok(Some(Reply { len, error: None }));
        assert_eq!(parse_resp_reply(b":1\r\n:0\r\n"), ok(4));
        assert_eq!(parse_resp_reply(b"+OK\r\n"), ok(5));
        assert_eq!(parse_resp_reply(b":1\r"), Ok(None));
        assert_eq!(parse_resp_reply(b""), Ok(None));
        assert_eq!(parse_resp_reply(b"$3\r\nabc\r\n"), ok(9));
        assert_eq!(parse_resp_reply(b"$3\r\nab"), Ok(None));
        assert_eq!(parse_resp_reply(b"$-1\r\n"), ok(5));
        let err = parse_resp_reply(b"-NOAUTH Authentication required.\r\n").unwrap();
        assert_eq!(
            err.unwrap().error.as_deref(),
            Some("NOAUTH Authentication required.")
        );
        assert!(parse_resp_reply(b"*1\r\n").is_err());
    }

    #[test]
    fn http_responses() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\
                   connection: keep-alive\r\n\r\n{\"ok\":true}";
        let mut two = ok.to_vec();
        two.extend_from_slice(ok);
        let r = parse_http_response(&two).unwrap().unwrap();
        assert_eq!((r.len, r.error), (ok.len(), None));
        assert_eq!(parse_http_response(&ok[..ok.len() - 1]), Ok(None));
        assert_eq!(parse_http_response(&ok[..20]), Ok(None));
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\n{\"e\":\"x\"}";
        let r = parse_http_response(busy).unwrap().unwrap();
        assert_eq!(r.len, busy.len());
        assert_eq!(r.error.as_deref(), Some("HTTP 503 {\"e\":\"x\"}"));
        assert!(parse_http_response(b"SSH-2.0\r\n\r\n").is_err());
    }
}
