//! WebSocket close codes the server sends, each with a short reason and advice on reconnecting.
//!
//! This is the one place where the reasons for ending a connection become close codes (style
//! rule 9.3.4). Codes 1000 to 1011 are the RFC 6455 registry. Codes 4000 and up are the private
//! range (RFC 6455 section 7.4.2) and are ringcast's own.
//!
//! **Thread:** plain values, used on the shard thread that owns the connection when it decides
//! to close.
//!
//! **Invariants:** every [`CloseCode::reason`] fits in a close frame (at most 123 bytes, because
//! the frame payload is limited to 125 and the code takes 2). The numbers never change meaning,
//! since clients decide whether to reconnect from them.
//!
//! TODO(errors land per layer): add `From<ws::Error>` and similar mappings here as those error
//! types appear, so no other module picks close codes by hand.

use std::fmt;

/// Why the server closes a connection, as sent in the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// 1000: a normal close with no error (for example the client asked to close). The client
    /// reconnects only if it still wants events.
    Normal = 1000,
    /// 1001: the server is shutting down or restarting. Not the client's fault; reconnect with
    /// backoff, possibly to another instance.
    GoingAway = 1001,
    /// 1002: the client broke the WebSocket protocol (bad framing, unmasked frames and so on).
    /// The client's fault; it should not reconnect until fixed.
    ProtocolError = 1002,
    /// 1007: a text message was not valid UTF-8. The client's fault.
    InvalidPayload = 1007,
    /// 1008: the client broke a server policy (for example it kept sending bad commands). The
    /// client's fault.
    PolicyViolation = 1008,
    /// 1009: a client message was larger than the server accepts. The client's fault; it must
    /// send smaller messages.
    MessageTooBig = 1009,
    /// 1011: the server hit an internal error. Our fault; reconnect with backoff.
    InternalError = 1011,
    /// 4000: the client read too slowly and its outbox went over the limit, so events would
    /// have been lost. Reconnect with backoff, and read faster or subscribe to less.
    SlowConsumer = 4000,
    /// 4001: the client did not answer a ping within the pong timeout (a protocol pong or any
    /// frame, or `{"type":"pong"}` on JSON-heartbeat routes), so it is taken for dead. A client
    /// that answers pings is never closed for being quiet. Reconnect when needed.
    PongTimeout = 4001,
    /// 4003: the connection's token reached its `exp` and no `refresh` replaced it. Get a new
    /// token, then reconnect (or send `refresh` before `exp` next time).
    TokenExpired = 4003,
}

impl CloseCode {
    /// Every close code, for tests and documentation.
    pub const ALL: [CloseCode; 10] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::SlowConsumer,
        CloseCode::PongTimeout,
        CloseCode::TokenExpired,
    ];

    /// The numeric code for the close frame.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The code for a number, or `None` if ringcast never sends it.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A short reason for the close frame, at most 123 bytes of UTF-8.
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "websocket protocol error",
            CloseCode::InvalidPayload => "invalid utf-8 in text message",
            CloseCode::PolicyViolation => "policy violation",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InternalError => "internal server error",
            CloseCode::SlowConsumer => "slow consumer: outbox limit exceeded",
            CloseCode::PongTimeout => "pong timeout",
            CloseCode::TokenExpired => "token expired",
        }
    }

    /// What a client should do next, for documentation, logs and client libraries.
    pub const fn reconnect_advice(self) -> &'static str {
        match self {
            CloseCode::Normal => "reconnect only if the application still needs events",
            CloseCode::GoingAway | CloseCode::InternalError => "reconnect with backoff",
            CloseCode::ProtocolError
            | CloseCode::InvalidPayload
            | CloseCode::PolicyViolation
            | CloseCode::MessageTooBig => "do not reconnect without fixing the client",
            CloseCode::SlowConsumer => {
                "reconnect with backoff; read faster or subscribe to fewer channels"
            }
            CloseCode::PongTimeout => "reconnect when needed; answer pings to stay connected",
            CloseCode::TokenExpired => {
                "get a fresh token, then reconnect; send refresh before exp to stay connected"
            }
        }
    }

    /// True when the close is the client's fault, so reconnecting unchanged would fail again.
    pub const fn is_client_fault(self) -> bool {
        matches!(
            self,
            CloseCode::ProtocolError
                | CloseCode::InvalidPayload
                | CloseCode::PolicyViolation
                | CloseCode::MessageTooBig
        )
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.code()
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable() {
        let numbers: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            numbers,
            [1000, 1001, 1002, 1007, 1008, 1009, 1011, 4000, 4001, 4003]
        );
        assert_eq!(u16::from(CloseCode::SlowConsumer), 4000);
    }

    #[test]
    fn reasons_fit_in_a_close_frame() {
        for code in CloseCode::ALL {
            let reason = code.reason();
            assert!(!reason.is_empty(), "{code:?}");
            assert!(reason.len() <= 123, "{code:?}: {} bytes", reason.len());
            assert!(!code.reconnect_advice().is_empty(), "{code:?}");
        }
    }

    #[test]
    fn codes_are_sendable() {
        // RFC 6455 7.4.1: 1004, 1005, 1006 and 1015 must never be sent; 1000-2999 and
        // 4000-4999 are the ranges in use.
        for code in CloseCode::ALL {
            let n = code.code();
            assert!(![1004, 1005, 1006, 1015].contains(&n), "{code:?}");
            assert!(
                (1000..3000).contains(&n) || (4000..5000).contains(&n),
                "{code:?}"
            );
        }
    }

    #[test]
    fn from_code_round_trips() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(code.code()), Some(code));
        }
        assert_eq!(CloseCode::from_code(1005), None);
        assert_eq!(CloseCode::from_code(0), None);
    }

    #[test]
    fn advice_matches_fault() {
        for code in CloseCode::ALL {
            let says_fix = code.reconnect_advice().contains("fixing the client");
            assert_eq!(says_fix, code.is_client_fault(), "{code:?}");
        }
        assert_eq!(
            CloseCode::GoingAway.reconnect_advice(),
            "reconnect with backoff"
        );
    }

    #[test]
    fn display() {
        assert_eq!(CloseCode::PongTimeout.to_string(), "4001 (pong timeout)");
    }
}
