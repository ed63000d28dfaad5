//! Cross-thread wake-up for a shard: an eventfd that the shard reads through io_uring, or with
//! the epoll backend when the reactor reports it readable.
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
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The sending side; cheap to clone, any thread.
#[derive(Debug, Clone)]
pub struct WakeHandle(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    fd: OwnedFd,
    pending: AtomicBool,
    /// An alert ([`WakeHandle::alert`]) raised while a wake-up was pending, so that
    /// [`WakeHandle::release`] can deliver one that came during a hold: a flag such as the
    /// shutdown is seen only by the inbox loop, which only the eventfd wakes. A plain
    /// [`WakeHandle::wake`] does not set it: it follows a message, which the holder's second
    /// drain takes.
    missed: AtomicBool,
}

/// The receiving side before it reaches its shard thread (`Send`).
#[derive(Debug)]
pub struct WakeReceiver {
    shared: Arc<Shared>,
    file: File,
}

impl WakeReceiver {
    /// Registers the receiving side with the current thread's runtime.
    /// Fails only with the epoll backend, when the eventfd cannot be registered with the
    /// reactor.
    pub fn into_listener(self) -> io::Result<WakeListener> {
        let reader = match super::backend() {
            super::Backend::IoUring => Reader::IoUring {
                file: tokio_uring::fs::File::from_std(self.file),
                buf: Some(vec![0; 8]),
            },
            super::Backend::Epoll => {
                // The flag is on the shared file description, so the writer's side becomes
                // non-blocking too; an eventfd write only blocks at counter overflow anyway.
                set_nonblocking(&self.file)?;
                // SAFETY: the `File` owns its descriptor and never changes it; the registration
                // owns the `File`, so the descriptor stays open for the registration's life.
                let file =
                    unsafe { AsyncFd::register_with_interest(self.file, Interest::READABLE) }
                        .map_err(|e| e.into_parts().1)?;
                Reader::Epoll(file)
            }
        };
        Ok(WakeListener {
            shared: self.shared,
            reader,
        })
    }
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl(2) on a descriptor `file` owns; no memory is touched.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The receiving side, owned by one shard thread.
pub struct WakeListener {
    shared: Arc<Shared>,
    reader: Reader,
}

/// How the eventfd is read on each backend.
enum Reader {
    IoUring {
        file: tokio_uring::fs::File,
        buf: Option<Vec<u8>>,
    },
    Epoll(AsyncFd<File>),
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
        missed: AtomicBool::new(false),
    });
    let receiver = WakeReceiver {
        shared: shared.clone(),
        file: read_side,
    };
    Ok((WakeHandle(shared), receiver))
}

impl WakeHandle {
    /// Wakes the shard unless a wake-up is already pending. For a sender that has just queued
    /// a message on the shard's inbox: during a [`hold`](Self::hold) the message is taken by
    /// the holder's second drain, and nothing is written.
    pub fn wake(&self) {
        if self.0.pending.swap(true, SeqCst) {
            return;
        }
        self.write();
    }

    /// Wakes the shard for something no message carries (a flag the inbox loop reads when it
    /// runs, such as the shutdown): like [`wake`](Self::wake), and if a hold is on, its
    /// [`release`](Self::release) writes the eventfd, so the inbox loop runs and sees the flag.
    pub fn alert(&self) {
        self.0.missed.store(true, SeqCst);
        self.wake();
    }

    fn write(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own. An eventfd write only
        // fails if the counter would overflow, which cannot happen with a reader draining it.
        unsafe {
            libc::write(self.0.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}

impl WakeHandle {
    /// For the shard that owns this wake-up, while it queues messages on its own inbox and
    /// drains them itself (a source read on the shard's ring, decision 0017): marks a wake-up
    /// as pending so that no sender writes the eventfd meanwhile. Returns true when one already
    /// was (the inbox loop will run anyway; [`release`](Self::release) must then not be called).
    pub fn hold(&self) -> bool {
        self.0.pending.swap(true, SeqCst)
    }

    /// Ends a [`hold`](Self::hold) that returned false. The caller must drain its inbox once
    /// more afterwards: a message queued while the hold was on did not write the eventfd. An
    /// [`alert`](Self::alert) raised during the hold is delivered now, so the inbox loop runs
    /// and sees what no message carries (the shutdown flag).
    pub fn release(&self) {
        self.0.pending.store(false, SeqCst);
        if self.0.missed.swap(false, SeqCst) {
            self.wake();
        }
    }
}

impl WakeListener {
    /// Waits for a wake-up. Afterwards the caller must drain its channel.
    pub async fn wait(&mut self) {
        let res = match &mut self.reader {
            Reader::IoUring { file, buf } => {
                let taken = buf.take().unwrap_or_else(|| vec![0; 8]);
                let (res, taken) = file.read_at(taken, 0).await;
                *buf = Some(taken);
                res.map(drop)
            }
            Reader::Epoll(file) => read_ready(file).await,
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "eventfd read failed");
        }
        self.shared.missed.store(false, SeqCst);
        self.shared.pending.store(false, SeqCst);
    }
}

/// Waits until the eventfd is readable and reads (so resets) its counter.
async fn read_ready(file: &AsyncFd<File>) -> io::Result<()> {
    loop {
        let mut guard = file.readable().await?;
        match guard.try_io(|f| f.get_ref().read(&mut [0; 8])) {
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(res) => return res.map(drop),
            // Would block: another wait consumed it; wait for the next write.
            Err(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the eventfd without blocking: true when a wake-up was written.
    fn written(receiver: &WakeReceiver) -> bool {
        let mut buf = [0u8; 8];
        match (&receiver.file).read(&mut buf) {
            Ok(n) => n == 8,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("eventfd read: {e}"),
        }
    }

    #[test]
    fn a_held_wake_up_writes_no_eventfd_until_released() {
        let (handle, receiver) = wake_pair().expect("eventfd");
        set_nonblocking(&receiver.file).expect("O_NONBLOCK");
        assert!(!handle.hold(), "nothing was pending");
        handle.wake();
        assert!(!written(&receiver), "a wake-up while held writes nothing");
        assert!(handle.hold(), "a second hold sees the first");
        handle.release();
        handle.wake();
        assert!(written(&receiver), "released: the next wake-up writes");
        handle.wake();
        assert!(!written(&receiver), "one write per pending wake-up");
    }

    /// An alert raised during a hold (the shutdown's) is not lost: the release writes the
    /// eventfd, so the inbox loop runs and checks its flags.
    #[test]
    fn an_alert_raised_during_a_hold_is_delivered_by_the_release() {
        let (handle, receiver) = wake_pair().expect("eventfd");
        set_nonblocking(&receiver.file).expect("O_NONBLOCK");
        assert!(!handle.hold());
        handle.clone().alert();
        assert!(!written(&receiver), "nothing written while held");
        handle.release();
        assert!(
            written(&receiver),
            "the release delivers the alert raised meanwhile"
        );
        // Without a hold an alert writes at once, and once.
        let (handle, receiver) = wake_pair().expect("eventfd");
        set_nonblocking(&receiver.file).expect("O_NONBLOCK");
        handle.alert();
        assert!(written(&receiver), "an alert writes");
        handle.alert();
        assert!(!written(&receiver), "still pending: not written again");
        // A hold and release with no wake-up in between writes nothing.
        let (handle, receiver) = wake_pair().expect("eventfd");
        set_nonblocking(&receiver.file).expect("O_NONBLOCK");
        assert!(!handle.hold());
        handle.release();
        assert!(!written(&receiver), "no wake-up asked for, none written");
    }

    /// A message's wake-up during a hold (the holder queueing its own share, decision 0017)
    /// writes nothing, then or at the release: the holder's drains take the message. Writing
    /// it cost every lone event an eventfd write and a second turn of the inbox loop.
    #[test]
    fn a_messages_wake_up_during_a_hold_writes_nothing() {
        let (handle, receiver) = wake_pair().expect("eventfd");
        set_nonblocking(&receiver.file).expect("O_NONBLOCK");
        assert!(!handle.hold());
        handle.clone().wake();
        handle.wake();
        assert!(!written(&receiver), "nothing written while held");
        handle.release();
        assert!(!written(&receiver), "nor by the release");
        handle.wake();
        assert!(written(&receiver), "released: the next wake-up writes");
    }
}
