//! The RST "connex" framing of a radar's TCP feed, decoded sans-IO: each frame is the magic
//! `49 08 1E 00` (`MSG_ID` 0x001e0849 of RST `connex.h`, little-endian), the payload length
//! (`u32` LE, the 8 header bytes excluded: `ConnexWriteMem`), then one DMAP record.
//!
//! Unlike the original (which skipped a bad length without draining its payload and so read
//! garbage for good), a bad magic or a length above [`ConnexDecoder::max_frame_bytes`] is a
//! [`FrameError`] the feed counts, after which the decoder resynchronises: it drops one byte and
//! scans for the next magic, never handing out a frame that does not start with one. A length of
//! 0 is a well-formed empty frame (RST's `ConnexReadMem` accepts it): it is skipped, without an
//! error, and counted in [`ConnexDecoder::empty_frames`].
//!
//! Invariants: the buffer never holds more than `8 + max_frame_bytes` bytes ([`handle_input`]
//! takes only what fits, and after [`poll_record`] returns `None` at least one byte fits); the
//! errors and frames out do not depend on how the input is split; a stated length is never an
//! allocation, only a wait for bytes that must fit in that bound anyway.
//!
//! Thread: pure, any thread (a TCP radar feed's thread).
//!
//! [`handle_input`]: ConnexDecoder::handle_input
//! [`poll_record`]: ConnexDecoder::poll_record

use bytes::{Buf, Bytes, BytesMut};

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = [0x49, 0x08, 0x1E, 0x00];

/// Bytes before the payload: magic and length.
pub const HEADER_BYTES: usize = 8;

/// Default longest payload accepted: 1 MiB. The original accepted 1..=10_000, which a fitacf
/// record with many echoes exceeds: a fitacf record carries about 31 `float` and 6 one- or
/// two-byte per-echo arrays (about 132 bytes per echo), so 75 ranges all with echoes is about
/// 9.9 kB of arrays alone plus about 1.5 kB of scalars, headers and `pwr0`, and 100- or
/// 225-range modes are 15 to 31 kB. 1 MiB leaves room for any such record (and rawacf) while
/// bounding a feed's buffer; a larger stated length is a resync, not an allocation.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

/// Why bytes on a feed were not a frame: the peer's fault (or a stream that was never connex).
/// The feed counts it; the decoder has already started to resynchronise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Where a frame should start, the bytes are not [`MAGIC`].
    #[error("bad connex magic")]
    BadMagic,
    /// The magic is there but the length is above the bound.
    #[error("connex length {len} above the bound")]
    BadLength {
        /// The length stated.
        len: u32,
    },
}

/// The decoder of one feed connection's byte stream (a new connection gets a new decoder).
#[derive(Debug)]
pub struct ConnexDecoder {
    /// Bytes received and not yet handed out or skipped.
    buf: BytesMut,
    /// Longest payload accepted.
    max_frame_bytes: usize,
    /// Set after a [`FrameError`] until the next magic is found.
    resyncing: bool,
    /// Bytes dropped while resynchronising, since creation.
    skipped_bytes: u64,
    /// Empty (length 0) frames skipped, since creation.
    empty_frames: u64,
}

impl ConnexDecoder {
    /// A decoder that accepts payloads of 1 to `max_frame_bytes` bytes.
    pub fn new(max_frame_bytes: usize) -> Self {
        let max_frame_bytes = max_frame_bytes.max(1);
        ConnexDecoder {
            buf: BytesMut::with_capacity(64 * 1024),
            max_frame_bytes,
            resyncing: false,
            skipped_bytes: 0,
            empty_frames: 0,
        }
    }

    /// The longest payload accepted.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Bytes the buffer can still take.
    pub fn space(&self) -> usize {
        (HEADER_BYTES + self.max_frame_bytes).saturating_sub(self.buf.len())
    }

    /// Appends as much of `data` as fits ([`Self::space`]) and returns how many bytes it took;
    /// the caller polls, then offers the rest.
    pub fn handle_input(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.space());
        self.buf
            .extend_from_slice(data.get(..n).unwrap_or_default());
        n
    }

    /// The next frame's payload, an error to count, or `None` until more input arrives.
    pub fn poll_record(&mut self) -> Option<Result<Bytes, FrameError>> {
        loop {
            if self.resyncing && !self.seek_magic() {
                return None;
            }
            let have = self.buf.len().min(MAGIC.len());
            if self.buf.get(..have) != MAGIC.get(..have) {
                return Some(Err(self.start_resync(FrameError::BadMagic)));
            }
            let len = self.buf.get(4..HEADER_BYTES)?;
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
            let Some(n) = usize::try_from(len)
                .ok()
                .filter(|&n| n <= self.max_frame_bytes)
            else {
                return Some(Err(self.start_resync(FrameError::BadLength { len })));
            };
            if n == 0 {
                self.buf.advance(HEADER_BYTES);
                self.empty_frames += 1;
                continue;
            }
            if self.buf.len() < HEADER_BYTES + n {
                self.buf.reserve(HEADER_BYTES + n - self.buf.len());
                return None;
            }
            let mut frame = self.buf.split_to(HEADER_BYTES + n);
            frame.advance(HEADER_BYTES);
            return Some(Ok(frame.freeze()));
        }
    }

    /// Bytes buffered: after the peer closes, more than 0 means it closed mid-frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes dropped while resynchronising, since creation.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    /// Empty (length 0) frames skipped, since creation.
    pub fn empty_frames(&self) -> u64 {
        self.empty_frames
    }

    fn start_resync(&mut self, e: FrameError) -> FrameError {
        self.skip(1);
        self.resyncing = true;
        e
    }

    fn skip(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.advance(n);
        self.skipped_bytes += u64::try_from(n).unwrap_or(u64::MAX);
    }

    /// Drops bytes up to the next magic; `true` when one starts the buffer. Keeps a tail that
    /// may be the start of a magic split across reads.
    fn seek_magic(&mut self) -> bool {
        if let Some(at) = self.buf.windows(MAGIC.len()).position(|w| w == MAGIC) {
            self.skip(at);
            self.resyncing = false;
            return true;
        }
        let keep = (1..MAGIC.len())
            .rev()
            .find(|&k| self.buf.len() >= k && self.buf.ends_with(&MAGIC[..k]))
            .unwrap_or(0);
        self.skip(self.buf.len() - keep);
        false
    }
}

impl Default for ConnexDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

/// Frames `payload` as RST's `ConnexWriteMem` does: for tests and test feeds.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a decoder makes of `input` fed in `chunk`-byte reads.
    fn decode(input: &[u8], chunk: usize, max: usize) -> (Vec<Result<Bytes, FrameError>>, usize) {
        let mut d = ConnexDecoder::new(max);
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut rest = piece;
            while !rest.is_empty() {
                let took = d.handle_input(rest);
                rest = &rest[took..];
                while let Some(r) = d.poll_record() {
                    out.push(r);
                }
            }
        }
        (out, d.buffered())
    }

    fn ok(p: &[u8]) -> Result<Bytes, FrameError> {
        Ok(Bytes::copy_from_slice(p))
    }

    #[test]
    fn clean_stream_at_every_split() {
        let mut input = frame(b"one");
        input.extend(frame(&[7; 300]));
        input.extend(frame(b"x"));
        let want = vec![ok(b"one"), ok(&[7; 300]), ok(b"x")];
        for chunk in 1..=input.len() {
            assert_eq!(
                decode(&input, chunk, 1024),
                (want.clone(), 0),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn every_two_way_split_gives_the_same_frames() {
        let mut input = b"junk\x49\x08".to_vec();
        input.extend(frame(b"abc"));
        input.extend(frame(b"defg"));
        let whole = decode(&input, input.len(), 1024);
        for at in 0..=input.len() {
            let mut d = ConnexDecoder::new(1024);
            let mut out = Vec::new();
            for part in [&input[..at], &input[at..]] {
                assert_eq!(d.handle_input(part), part.len());
                out.extend(std::iter::from_fn(|| d.poll_record()));
            }
            assert_eq!((out, d.buffered()), whole, "split at {at}");
        }
    }

    #[test]
    fn garbage_before_and_between_frames_resyncs() {
        let mut input = b"garbage\x49\x08\x1e".to_vec();
        input.extend(frame(b"first"));
        input.extend_from_slice(&[0x49, 0x08, 0x00, 0xff, 0x00]);
        input.extend(frame(b"second"));
        for chunk in 1..=input.len() {
            let (out, left) = decode(&input, chunk, 1024);
            let want = vec![
                Err(FrameError::BadMagic),
                ok(b"first"),
                Err(FrameError::BadMagic),
                ok(b"second"),
            ];
            assert_eq!((out, left), (want, 0), "chunk {chunk}");
        }
    }

    #[test]
    fn a_wrong_length_resyncs_on_the_next_magic_not_after_its_payload() {
        // The original skipped a bad length without draining: here the next frame still comes
        // through although the bad frame's "payload" would have swallowed it.
        let mut input = MAGIC.to_vec();
        input.extend_from_slice(&5000_u32.to_le_bytes());
        input.extend(frame(b"good"));
        let (out, left) = decode(&input, 3, 100);
        assert_eq!(
            out,
            vec![Err(FrameError::BadLength { len: 5000 }), ok(b"good")]
        );
        assert_eq!(left, 0);
        let mut input = MAGIC.to_vec();
        input.extend_from_slice(&u32::MAX.to_le_bytes());
        input.extend(frame(b"good"));
        let (out, _) = decode(&input, input.len(), DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(
            out,
            vec![Err(FrameError::BadLength { len: u32::MAX }), ok(b"good")]
        );
    }

    #[test]
    fn empty_frames_are_skipped_in_sync() {
        let mut input = frame(b"");
        input.extend(frame(b"a"));
        let mut d = ConnexDecoder::new(16);
        d.handle_input(&input);
        assert_eq!(d.poll_record(), Some(ok(b"a")));
        assert_eq!((d.empty_frames(), d.skipped_bytes()), (1, 0));
    }

    #[test]
    fn truncated_tail_waits_and_is_visible() {
        let mut input = frame(b"whole");
        input.extend_from_slice(&frame(b"half a record")[..12]);
        let (out, left) = decode(&input, 5, 1024);
        assert_eq!(out, vec![ok(b"whole")]);
        assert_eq!(left, 12);
    }

    #[test]
    fn buffer_is_bounded_and_always_has_room_after_polling() {
        let mut d = ConnexDecoder::new(16);
        let big = frame(&[1; 16]);
        let mut input = big.clone();
        input.extend(big);
        assert_eq!(d.handle_input(&input), 24);
        assert_eq!(d.space(), 0);
        assert_eq!(d.poll_record(), Some(ok(&[1; 16])));
        assert_eq!(d.poll_record(), None);
        assert!(d.space() > 0);
        // Garbage without any magic is dropped, keeping at most a possible magic prefix.
        let mut d = ConnexDecoder::new(16);
        d.handle_input(&[0xAA; 24]);
        assert_eq!(d.poll_record(), Some(Err(FrameError::BadMagic)));
        assert_eq!(d.poll_record(), None);
        assert_eq!((d.buffered(), d.skipped_bytes()), (0, 24));
    }
}
