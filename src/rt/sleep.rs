//! Sleeping sockets: connections parked without a reactor registration (`conn::dormant`).
//!
//! tokio's reactor keeps 256 bytes of state per registered socket (`ScheduledIo`, 128-aligned,
//! in an `Arc`), for as long as the socket is registered. A sleeping socket gives that up: it
//! is added instead to one epoll instance per thread (this module's, itself registered once with
//! the reactor), with `EPOLLONESHOT` and its token as the event's data, which costs no
//! user-space memory per socket. The set is level-triggered, so a socket that was readable
//! already when it was added reports at once; one-shot, so it reports once, until
//! [`Sleeping::wake`] takes it out and registers it with the reactor again.

use std::cell::OnceCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;

/// Most events one `epoll_wait` takes; more are taken by the next call.
const EVENTS: usize = 256;

thread_local! {
    /// This thread's epoll instance of sleeping sockets, made on first use (inside the
    /// runtime: the reactor registration needs it).
    static SET: OnceCell<AsyncFd<OwnedFd>> = const { OnceCell::new() };
}

/// Runs `f` with this thread's set, making it if needed.
fn with_set<R>(f: impl FnOnce(&AsyncFd<OwnedFd>) -> io::Result<R>) -> io::Result<R> {
    SET.with(|cell| {
        if cell.get().is_none() {
            // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new
            // descriptor that nothing else owns.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: see above.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let interest = tokio::io::Interest::READABLE;
            // SAFETY: the registration owns the descriptor and never changes it, so it stays
            // open and the same for the registration's whole life.
            let ready = unsafe { AsyncFd::register_with_interest(owned, interest) }
                .map_err(|e| e.into_parts().1)?;
            let _ = cell.set(ready);
        }
        match cell.get() {
            Some(set) => f(set),
            None => Err(io::ErrorKind::Other.into()),
        }
    })
}

/// Adds `fd` to this thread's set: it reports `token` once it is readable (input, EOF, a
/// reset, or our own shutdown of it).
pub(super) fn add(fd: RawFd, token: usize) -> io::Result<()> {
    with_set(|set| {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: token as u64,
        };
        // SAFETY: both descriptors are open (the set's is owned by the thread-local, `fd` by the
        // caller); `event` is a valid epoll_event that the kernel only reads.
        let rc = unsafe { libc::epoll_ctl(set.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
}

/// Takes `fd` out of this thread's set (before it is registered with the reactor again).
pub(super) fn remove(fd: RawFd) {
    let _ = with_set(|set| {
        // SAFETY: both descriptors are open; a null event is allowed for EPOLL_CTL_DEL.
        // ENOENT (never added, or the set was remade) is harmless.
        unsafe {
            libc::epoll_ctl(
                set.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
        Ok(())
    });
}

/// Ready with the tokens of sleeping sockets that became readable, appended to `out`; pending
/// (with the task's waker left with the reactor) while none did.
pub fn poll_ready(cx: &mut Context<'_>, out: &mut Vec<usize>) -> Poll<()> {
    let polled = with_set(|set| {
        let before = out.len();
        loop {
            let mut guard = match set.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(out.len() > before),
            };
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
            // SAFETY: the set's descriptor is open; the kernel writes at most `EVENTS` entries
            // into the array; a zero timeout never blocks.
            let n =
                unsafe { libc::epoll_wait(set.as_raw_fd(), events.as_mut_ptr(), EVENTS as i32, 0) };
            let n = match usize::try_from(n) {
                Ok(n) => n,
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
            };
            out.extend(events[..n].iter().map(|e| e.u64 as usize));
            if n < EVENTS {
                // Drained: wait for the next edge (a report that came meanwhile keeps the
                // readiness set, and the loop takes it).
                guard.clear_ready();
                if out.len() > before {
                    return Ok(true);
                }
            }
        }
    });
    match polled {
        Ok(true) => Poll::Ready(()),
        Ok(false) => Poll::Pending,
        Err(e) => {
            // Not expected on a valid epoll instance; the sockets in it stay asleep until
            // something else wakes them (a frame, a close), so say so once.
            static LOGGED: std::sync::Once = std::sync::Once::new();
            LOGGED.call_once(|| {
                tracing::error!(error = %e, "the set of sleeping connections failed; they wake only for frames and closes");
            });
            Poll::Pending
        }
    }
}
