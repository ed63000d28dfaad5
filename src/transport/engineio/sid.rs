//! Engine.IO session ids that name the shard owning the session.
//!
//! Pure, any thread. A polling request or the upgrading WebSocket may land on any shard
//! (`SO_REUSEPORT`); the sid in its query says which shard owns the session, so the receiving
//! shard can hand it over without a shared table.
//!
//! An id is 15 bytes written as 20 characters of URL-safe base64 (`A-Z a-z 0-9 - _`, no
//! padding), the same shape as engine.io's `base64id` and python-engineio's `generate_id` (12
//! random bytes and a 3-byte counter there). Here bytes `0..13` are random (104 bits from the OS,
//! `getrandom`) and bytes `13..15` are the owning shard's index, big-endian. The shard is not a
//! secret: a forged sid names a shard but still has to match a live session's random part.
//!
//! Invariants: a [`Sid`] always holds exactly [`LEN`] characters of [`ALPHABET`], so
//! [`Sid::as_str`] and [`Sid::shard`] cannot fail. Untrusted text becomes a `Sid` only through
//! [`Sid::parse`].

use std::fmt;

use crate::router::ShardId;

/// URL-safe base64 (RFC 4648 section 5), in value order.
pub const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Length of a sid in characters (15 bytes of base64).
pub const LEN: usize = 20;

/// Bytes behind a sid.
const RAW_LEN: usize = 15;

/// Random bytes at the front of a sid (104 bits).
const RANDOM_LEN: usize = 13;

/// A session id: 20 URL-safe base64 characters naming a session and its shard.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid {
    /// The text as sent on the wire; always [`LEN`] bytes of [`ALPHABET`].
    text: [u8; LEN],
}

/// A sid from the network that cannot be one of ours. The peer's fault (or a sid from another
/// server): answer 400 with the Engine.IO "Session ID unknown" body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SidError {
    /// Not [`LEN`] characters long.
    #[error("session id is not {LEN} characters long")]
    Length,
    /// A character outside URL-safe base64.
    #[error("session id has a character outside URL-safe base64")]
    Alphabet,
}

impl Sid {
    /// A new random sid owned by `shard`; `Err` only if the OS has no randomness to give.
    pub fn new(shard: ShardId) -> Result<Sid, getrandom::Error> {
        let mut raw = [0u8; RAW_LEN];
        getrandom::fill(&mut raw[..RANDOM_LEN])?;
        Ok(Sid::from_parts(&raw, shard))
    }

    /// The sid made of `random` (only its first 13 bytes are used) and `shard`; for tests and
    /// for callers with their own randomness.
    pub fn from_parts(random: &[u8; RAW_LEN], shard: ShardId) -> Sid {
        let mut raw = *random;
        raw[RANDOM_LEN..].copy_from_slice(&shard.0.to_be_bytes());
        let mut text = [0u8; LEN];
        for (group, out) in raw.chunks_exact(3).zip(text.chunks_exact_mut(4)) {
            let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
            for (i, slot) in out.iter_mut().enumerate() {
                // Each index is a 6-bit value, so it is in range of the 64-entry alphabet.
                *slot = ALPHABET[usize::from(sextet(n, i))];
            }
        }
        Sid { text }
    }

    /// Parses an untrusted sid (from a query string).
    pub fn parse(s: &[u8]) -> Result<Sid, SidError> {
        let text: [u8; LEN] = s.try_into().map_err(|_| SidError::Length)?;
        if text.iter().all(|&b| value(b).is_some()) {
            Ok(Sid { text })
        } else {
            Err(SidError::Alphabet)
        }
    }

    /// The shard that owns this session. It may be out of range for this process (a forged sid
    /// or one from a differently sized server): the router checks it against its shard count.
    pub fn shard(&self) -> ShardId {
        // The last 4 characters carry bytes 12..15: random, shard high, shard low.
        let n = self.text[LEN - 4..]
            .iter()
            .fold(0u32, |acc, &b| acc << 6 | u32::from(value(b).unwrap_or(0)));
        // `n` holds 24 bits; the low 16 are the shard.
        ShardId((n & 0xffff) as u16)
    }

    /// The sid as text.
    pub fn as_str(&self) -> &str {
        // Every byte is ASCII by construction, so this never fails; an empty string is returned
        // rather than panicking if that invariant were ever broken.
        std::str::from_utf8(&self.text).unwrap_or("")
    }

    /// The sid as bytes.
    pub fn as_bytes(&self) -> &[u8; LEN] {
        &self.text
    }
}

/// The `i`-th (0..4) 6-bit group of a 24-bit value, most significant first.
fn sextet(n: u32, i: usize) -> u8 {
    // Masked to 6 bits, so the narrowing cannot lose anything.
    ((n >> (18 - 6 * i)) & 0x3f) as u8
}

/// The 6-bit value of a base64url character.
fn value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_sids_are_20_url_safe_chars_and_name_their_shard() {
        for shard in [0u16, 1, 7, 255, 256, u16::MAX] {
            let sid = Sid::new(ShardId(shard)).unwrap();
            assert_eq!(sid.as_str().len(), LEN);
            assert!(sid.as_bytes().iter().all(|b| ALPHABET.contains(b)));
            assert_eq!(sid.shard(), ShardId(shard));
            assert_eq!(Sid::parse(sid.as_bytes()), Ok(sid));
        }
    }

    #[test]
    fn encoding_is_base64url_of_random_then_shard() {
        // base64url of 13 zero bytes then 0x01 0x02 is "AAAAAAAAAAAAAAAAAAEC".
        let sid = Sid::from_parts(&[0; RAW_LEN], ShardId(0x0102));
        assert_eq!(sid.as_str(), "AAAAAAAAAAAAAAAAAAEC");
        let sid = Sid::from_parts(&[0xff; RAW_LEN], ShardId(0xffff));
        assert_eq!(sid.as_str(), "____________________");
        assert_eq!(sid.shard(), ShardId(0xffff));
    }

    #[test]
    fn two_sids_differ() {
        let a = Sid::new(ShardId(3)).unwrap();
        let b = Sid::new(ShardId(3)).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn untrusted_sids_are_checked() {
        assert_eq!(Sid::parse(b""), Err(SidError::Length));
        assert_eq!(Sid::parse(b"lv_VI97HAXpY6yYWAAA"), Err(SidError::Length));
        assert_eq!(Sid::parse(b"lv_VI97HAXpY6yYWAAACx"), Err(SidError::Length));
        assert_eq!(Sid::parse(b"lv_VI97HAXpY6yYWAA+C"), Err(SidError::Alphabet));
        assert_eq!(Sid::parse(b"lv_VI97HAXpY6yYWAA%C"), Err(SidError::Alphabet));
        assert_eq!(
            Sid::parse("lv_VI97HAXpY6yYWAA\u{e9}".as_bytes()),
            Err(SidError::Alphabet)
        );
        // The spec's sample sid parses; its last bytes name shard 2.
        let sid = Sid::parse(b"lv_VI97HAXpY6yYWAAAC").unwrap();
        assert_eq!(sid.as_str(), "lv_VI97HAXpY6yYWAAAC");
        assert_eq!(sid.shard(), ShardId(2));
    }
}
