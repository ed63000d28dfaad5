//! A connection's outbound queue: shared frames waiting for one vectored write.
//!
//! Frames arrive as [`OutFrame`]s: a shard-local refcount (`Rc`, no atomic operation) on the one
//! encoded `Bytes` of a message, plus how much of it is already written. The writer takes every
//! queued frame (up to [`MAX_IOVECS`]) into one `writev`, so a connection costs one submission
//! per flush however many frames are pending (uWS corking, without the copy).
//!
//! The queue is bounded by bytes (`max-outbox-bytes`), counting frames in flight too. A data
//! frame past the cap is refused with [`SendStatus::Overflow`], and the shard closes the
//! connection as a slow consumer. Control frames (pongs, pings, close) bypass the cap: they are
//! tiny, and the close frame must still go out when closing for overflow.
//!
//! Memory: the queue's buffer and the writer's batch vector (kept here between writes, so a busy
//! connection allocates neither per write) are what a busy connection needs; [`Outbox::release`]
//! returns both once it is idle, which the shard's sweep does for every quiet connection.

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

/// Most frames in one `writev` (Linux `IOV_MAX`).
pub const MAX_IOVECS: usize = 1024;

/// One queued frame: a shared, encoded frame and the offset of its first unwritten byte.
#[derive(Debug, Clone)]
pub struct OutFrame {
    frame: Rc<Bytes>,
    offset: usize,
}

impl OutFrame {
    /// Wraps a frame for this shard. Clone it (a non-atomic refcount bump) per recipient.
    pub fn new(frame: Bytes) -> Self {
        OutFrame {
            frame: Rc::new(frame),
            offset: 0,
        }
    }

    /// The whole shared frame (written or not).
    pub fn bytes(&self) -> &Bytes {
        &self.frame
    }

    /// The unwritten bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.frame[self.offset..]
    }

    /// Unwritten length.
    pub fn len(&self) -> usize {
        self.frame.len() - self.offset
    }

    /// True when fully written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Result of queueing a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Queued. `wake_writer` is true when the writer was idle and must be woken.
    Queued {
        /// The queue was empty and nothing was in flight.
        wake_writer: bool,
    },
    /// Refused: the cap would be exceeded. Policy: close the connection as a slow consumer.
    Overflow,
    /// Refused: the connection is closing.
    Closed,
}

/// The queue.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<OutFrame>,
    /// The batch vector of the last `writev`, emptied, for the next one.
    spare: Vec<OutFrame>,
    queued_bytes: usize,
    inflight_bytes: usize,
    cap: usize,
    closed: bool,
    /// When the shard last wrote this outbox's frames itself (the direct flush, decision
    /// 0014), in milliseconds of [`Tick`](crate::conn::Tick), wrapping: the direct flush
    /// leaves a connection written this recently to its write loop (a stream). In the padding
    /// after `closed`: no bytes added.
    direct_ms: u16,
}

impl Outbox {
    /// An empty outbox holding at most `cap` bytes of data frames.
    pub fn new(cap: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            spare: Vec::new(),
            queued_bytes: 0,
            inflight_bytes: 0,
            cap,
            closed: false,
            direct_ms: 0,
        }
    }

    /// Changes the cap (a route's own `max_outbox_bytes`, set at the upgrade).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Queues a data frame, subject to the cap.
    pub fn push(&mut self, frame: OutFrame) -> SendStatus {
        if self.closed {
            return SendStatus::Closed;
        }
        if self.queued_bytes + self.inflight_bytes + frame.len() > self.cap {
            return SendStatus::Overflow;
        }
        self.push_unchecked(frame)
    }

    /// Queues a control frame, ignoring the cap.
    pub fn push_control(&mut self, frame: OutFrame) -> SendStatus {
        if self.closed {
            return SendStatus::Closed;
        }
        self.push_unchecked(frame)
    }

    /// Queues `frame` as the last frame ever (a close frame): later pushes are refused.
    pub fn push_last(&mut self, frame: OutFrame) -> SendStatus {
        let status = self.push_control(frame);
        self.closed = true;
        status
    }

    /// Refuses every later push without queueing anything (the peer is gone or already closed).
    pub fn seal(&mut self) {
        self.closed = true;
    }

    fn push_unchecked(&mut self, frame: OutFrame) -> SendStatus {
        let wake_writer = self.queue.is_empty() && self.inflight_bytes == 0;
        self.queued_bytes += frame.len();
        self.queue.push_back(frame);
        SendStatus::Queued { wake_writer }
    }

    /// Drops every queued (not in-flight) frame; used before a slow-consumer close.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True when nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.inflight_bytes == 0
    }

    /// Frames queued (not in flight).
    pub fn queued_frames(&self) -> usize {
        self.queue.len()
    }

    /// True while a write of some of its frames is in flight.
    pub fn in_flight(&self) -> bool {
        self.inflight_bytes > 0
    }

    /// True once [`push_last`](Self::push_last) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Notes a direct write by the shard at `now_ms` (a [`Tick`](crate::conn::Tick)'s
    /// milliseconds, truncated).
    pub fn mark_direct(&mut self, now_ms: u16) {
        self.direct_ms = now_ms;
    }

    /// True when the shard wrote this outbox itself less than `gap_ms` milliseconds before
    /// `now_ms`. The clock wraps every 65.5 s, so a connection last written a multiple of that
    /// ago can read as recent: it then takes its write loop once, which is always correct.
    pub fn direct_within(&self, now_ms: u16, gap_ms: u16) -> bool {
        now_ms.wrapping_sub(self.direct_ms) < gap_ms
    }

    /// Bytes queued plus in flight.
    pub fn bytes(&self) -> usize {
        self.queued_bytes + self.inflight_bytes
    }

    /// Returns the queue's buffer and the spare batch vector when nothing is queued or in
    /// flight; true when there was something to return. The next push or write allocates
    /// again: call this for a connection that has gone quiet, not after every write.
    pub fn release(&mut self) -> bool {
        if !self.is_idle() || (self.queue.capacity() == 0 && self.spare.capacity() == 0) {
            return false;
        }
        self.queue = VecDeque::new();
        self.spare = Vec::new();
        true
    }

    /// Moves up to [`MAX_IOVECS`] frames into `batch` for one `writev`. An unallocated `batch`
    /// gets the vector [`complete`](Self::complete) kept from the last write.
    pub fn take_batch(&mut self, batch: &mut Vec<OutFrame>) {
        if batch.capacity() == 0 {
            *batch = std::mem::take(&mut self.spare);
        }
        self.take_batch_into(batch);
    }

    /// Moves up to [`MAX_IOVECS`] frames into `batch`, the caller's own vector (the shard's
    /// direct flush): unlike [`take_batch`](Self::take_batch), never this outbox's spare.
    pub fn take_batch_into(&mut self, batch: &mut Vec<OutFrame>) {
        let n = self.queue.len().min(MAX_IOVECS);
        for frame in self.queue.drain(..n) {
            self.queued_bytes -= frame.len();
            self.inflight_bytes += frame.len();
            batch.push(frame);
        }
    }

    /// [`complete`](Self::complete) for a batch from [`take_batch_into`](Self::take_batch_into):
    /// `batch` is emptied and its buffer stays with the caller.
    pub fn complete_into(&mut self, batch: &mut Vec<OutFrame>, written: usize) {
        self.account(batch, written);
    }

    /// Accounts a completed `writev` of `batch` that wrote `written` bytes: fully written frames
    /// are released, the rest go back to the front of the queue in order. Empties `batch` and
    /// keeps its buffer for the next [`take_batch`](Self::take_batch).
    pub fn complete(&mut self, batch: &mut Vec<OutFrame>, written: usize) {
        self.account(batch, written);
        if self.spare.capacity() < batch.capacity() {
            self.spare = std::mem::take(batch);
        }
    }

    /// Releases the fully written frames of `batch` and puts the rest back in front, in order.
    fn account(&mut self, batch: &mut Vec<OutFrame>, mut written: usize) {
        self.inflight_bytes = 0;
        let mut rest = Vec::new();
        for mut frame in batch.drain(..) {
            if written >= frame.len() {
                written -= frame.len();
            } else {
                frame.offset += written;
                written = 0;
                rest.push(frame);
            }
        }
        for frame in rest.into_iter().rev() {
            self.queued_bytes += frame.len();
            self.queue.push_front(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: usize) -> OutFrame {
        OutFrame::new(Bytes::from(vec![7u8; n]))
    }

    #[test]
    fn cap_counts_inflight_and_control_bypasses_it() {
        let mut o = Outbox::new(10);
        assert_eq!(o.push(f(6)), SendStatus::Queued { wake_writer: true });
        let mut batch = Vec::new();
        o.take_batch(&mut batch);
        assert_eq!(o.push(f(4)), SendStatus::Queued { wake_writer: false });
        assert_eq!(o.push(f(1)), SendStatus::Overflow);
        assert!(matches!(o.push_control(f(2)), SendStatus::Queued { .. }));
        assert!(matches!(o.push_last(f(2)), SendStatus::Queued { .. }));
        assert_eq!(o.push_control(f(1)), SendStatus::Closed);
    }

    #[test]
    fn partial_writes_resume_in_order() {
        let mut o = Outbox::new(1 << 20);
        for (i, n) in [3usize, 4, 5].into_iter().enumerate() {
            o.push(OutFrame::new(Bytes::from(vec![i as u8; n])));
        }
        let mut batch = Vec::new();
        o.take_batch(&mut batch);
        assert_eq!(batch.len(), 3);
        o.complete(&mut batch, 5); // all of frame 0, 2 bytes of frame 1
        assert_eq!(o.bytes(), 7);
        o.take_batch(&mut batch);
        let bytes: Vec<u8> = batch.iter().flat_map(|b| b.as_slice().to_vec()).collect();
        assert_eq!(bytes, [1, 1, 2, 2, 2, 2, 2]);
        o.complete(&mut batch, 7);
        assert!(o.is_idle());
    }

    #[test]
    fn the_batch_vector_is_kept_between_writes_and_released_when_idle() {
        let mut o = Outbox::new(1 << 20);
        o.push(f(3));
        let mut batch = Vec::new();
        o.take_batch(&mut batch);
        let buffer = batch.as_ptr();
        assert!(!o.release(), "a frame is in flight");
        o.complete(&mut batch, 3);
        assert_eq!(batch.capacity(), 0, "the outbox keeps the vector");
        o.push(f(2));
        o.take_batch(&mut batch);
        assert_eq!(
            batch.as_ptr(),
            buffer,
            "and hands it back for the next write"
        );
        o.complete(&mut batch, 2);
        assert!(o.is_idle());
        assert!(o.release());
        assert!(!o.release(), "nothing left to return");
        assert_eq!((o.queue.capacity(), o.spare.capacity()), (0, 0));
        // Still usable.
        assert_eq!(o.push(f(1)), SendStatus::Queued { wake_writer: true });
        assert!(!o.release(), "a frame is queued");
    }

    #[test]
    fn batches_are_capped_at_iov_max() {
        let mut o = Outbox::new(usize::MAX);
        for _ in 0..MAX_IOVECS + 5 {
            o.push(f(1));
        }
        let mut batch = Vec::new();
        o.take_batch(&mut batch);
        assert_eq!(batch.len(), MAX_IOVECS);
        o.complete(&mut batch, MAX_IOVECS);
        o.take_batch(&mut batch);
        assert_eq!(batch.len(), 5);
    }
}
