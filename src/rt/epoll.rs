//! The epoll backend's accepts and writes: wait for readiness on the reactor registration, then
//! make the non-blocking syscall, and wait again on "would block".
//!
//! Writes use `sendmsg` with `MSG_NOSIGNAL` (a vectored write like `writev`, without SIGPIPE),
//! straight from the frames' own bytes: nothing is copied.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;

use super::Fd;
use crate::conn::outbox::{MAX_IOVECS, OutFrame};

/// Accepts one connection from a non-blocking listener.
pub(super) async fn accept(
    listener: &AsyncFd<std::net::TcpListener>,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut guard = listener.readable().await?;
        match guard.try_io(|l| l.get_ref().accept()) {
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(accepted) => return accepted,
            // Would block: readiness was cleared; wait for the next connection.
            Err(_) => continue,
        }
    }
}

/// Writes `buf` fully, waiting for writable readiness whenever the socket buffer is full.
pub(super) async fn write_all(ready: &AsyncFd<Fd>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let iov = [libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        }];
        let n = send(ready, &iov).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// One vectored write of up to [`MAX_IOVECS`] of `frames`; returns the bytes written, which may
/// be fewer than the total (the outbox keeps the rest).
pub(super) async fn writev(ready: &AsyncFd<Fd>, frames: &[OutFrame]) -> io::Result<usize> {
    let iov: Vec<libc::iovec> = frames
        .iter()
        .take(MAX_IOVECS)
        .map(|f| {
            let bytes = f.as_slice();
            libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            }
        })
        .collect();
    if iov.is_empty() {
        return Ok(0);
    }
    send(ready, &iov).await
}

/// Waits until the socket is writable and sends `iov` with one `sendmsg`.
async fn send(ready: &AsyncFd<Fd>, iov: &[libc::iovec]) -> io::Result<usize> {
    loop {
        let mut guard = ready.writable().await?;
        match guard.try_io(|fd| send_now(fd.get_ref().as_raw_fd(), iov)) {
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(result) => return result,
            // Would block: the socket buffer is full; wait for it to drain.
            Err(_) => continue,
        }
    }
}

/// One non-blocking `sendmsg` of `iov` on `fd`: what the socket buffer takes now, or
/// `WouldBlock` when it takes nothing.
pub(super) fn send_now(fd: std::os::fd::RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no name, no control data); the iovecs point into
    // buffers the caller borrows for this whole call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len();
    // SAFETY: sendmsg(2) only reads the live iovecs described by `msg`.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
