//! Cross-thread wake-up for a shard: an eventfd that the shard reads through io_uring.
//!
//! The hub thread calls [`WakeHandle::wake`] after queueing messages on a shard's crossbeam
//! channel; the shard awaits [`WakeListener::wait`] and then drains the channel with `try_recv`.
//! A shard never blocks on the channel itself.
//!
//! To keep syscalls per batch rather than per message, an atomic `armed` flag records whether a
//! wake-up is already pending: only the first `wake` after the shard consumed the last one writes
//! the eventfd. The shard clears the flag *before* draining, so a message sent after the drain
//! started either is seen by that drain or writes the eventfd again. Nothing is lost.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

/// The sending side; cheap to clone, any thread.
#[derive(Debug, Clone)]
pub struct WakeHandle(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    fd: OwnedFd,
    pending: AtomicBool,
}

/// The receiving side before it reaches its shard thread (`Send`).
#[derive(Debug)]
pub struct WakeReceiver {
    shared: Arc<Shared>,
    file: File,
}

impl WakeReceiver {
    /// Registers the receiving side with the current thread's runtime.
    pub fn into_listener(self) -> WakeListener {
        WakeListener {
            shared: self.shared,
            file: tokio_uring::fs::File::from_std(self.file),
            buf: Some(vec![0; 8]),
        }
    }
}

/// The receiving side, owned by one shard thread.
pub struct WakeListener {
    shared: Arc<Shared>,
    file: tokio_uring::fs::File,
    buf: Option<Vec<u8>>,
}

/// Creates a connected pair.
pub fn wake_pair() -> io::Result<(WakeHandle, WakeReceiver)> {
    // SAFETY: eventfd has no memory-safety preconditions; we check the result.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // The listener reads through its own duplicate so each side owns exactly one descriptor.
    let read_side = File::from(owned.try_clone()?);
    let shared = Arc::new(Shared {
        fd: owned,
        pending: AtomicBool::new(false),
    });
    let receiver = WakeReceiver {
        shared: shared.clone(),
        file: read_side,
    };
    Ok((WakeHandle(shared), receiver))
}

impl WakeHandle {
    /// Wakes the shard unless a wake-up is already pending.
    pub fn wake(&self) {
        if self.0.pending.swap(true, SeqCst) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own. An eventfd write only
        // fails if the counter would overflow, which cannot happen with a reader draining it.
        unsafe {
            libc::write(self.0.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}

impl WakeListener {
    /// Waits for a wake-up. Afterwards the caller must drain its channel.
    pub async fn wait(&mut self) {
        let buf = self.buf.take().unwrap_or_else(|| vec![0; 8]);
        let (res, buf) = self.file.read_at(buf, 0).await;
        self.buf = Some(buf);
        if let Err(e) = res {
            tracing::warn!(error = %e, "eventfd read failed");
        }
        self.shared.pending.store(false, SeqCst);
    }
}
