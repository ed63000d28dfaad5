//! The runtime seam: the only module that names the io_uring runtime (tokio-uring).
//!
//! Everything else uses these few types and functions, so the runtime can be replaced (an epoll
//! fallback is planned for hosts where io_uring is forbidden) by re-implementing this module.
//! Modelled on quinn's `runtime/` trait, but kept concrete: one backend today.
//!
//! Thread model: [`Runtime::block_on`] runs one single-threaded runtime on the calling thread.
//! Tasks spawned with [`spawn`] stay on that thread for their whole life, so shard state can be
//! `Rc<RefCell<…>>` with no locks.

mod wake;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::conn::outbox::OutFrame;

pub use wake::{WakeHandle, WakeListener, WakeReceiver, wake_pair};

/// io_uring submission-queue entries per shard. The kernel sizes the completion queue at twice
/// this and does not drop completions on overflow (IORING_FEAT_NODROP), so this bounds batching,
/// not the number of connections.
pub const RING_ENTRIES: u32 = 4096;

/// A single-threaded io_uring runtime.
pub struct Runtime(tokio_uring::Runtime);

impl Runtime {
    /// Sets up io_uring on this thread. Fails when the kernel or a seccomp profile forbids it.
    pub fn new() -> io::Result<Runtime> {
        tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES)).map(Runtime)
    }

    /// Runs `future` and every task it spawns until `future` completes.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }
}

/// Spawns a task on the current thread's runtime.
pub fn spawn<F: Future + 'static>(future: F) {
    drop(tokio_uring::spawn(future));
}

/// A listening socket owned by one shard.
pub struct TcpListener(tokio_uring::net::TcpListener);

impl TcpListener {
    /// Adopts a bound, listening std socket (non-blocking or not).
    pub fn from_std(listener: std::net::TcpListener) -> Self {
        TcpListener(tokio_uring::net::TcpListener::from_std(listener))
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = self.0.accept().await?;
        Ok((TcpStream::new(stream)?, addr))
    }
}

/// A connected socket. Writes pass buffers by ownership (completion I/O): the kernel holds the
/// buffer while the operation is in flight, and the call hands it back.
///
/// Reads are readiness-driven: the socket is registered with the runtime's reactor (epoll,
/// inside the same single-threaded runtime) and read, when readable, into one shard-wide
/// scratch buffer ([`TcpStream::read_available`]). So an idle connection holds no read buffer,
/// where an io_uring read would pin one per connection for as long as the peer stays silent.
/// (io_uring's provided-buffer rings would be the native answer; tokio-uring 0.5 has none.)
/// Writes go through io_uring.
pub struct TcpStream {
    /// Declared first so it deregisters from the reactor before `io` closes the descriptor.
    ready: tokio::io::unix::AsyncFd<Fd>,
    io: tokio_uring::net::TcpStream,
}

/// A raw descriptor for the reactor; owned by `TcpStream::io`.
struct Fd(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for Fd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// Default size of the shard-wide read scratch buffer (see [`set_read_size`]).
pub const SCRATCH_BYTES: usize = 4 * 1024;

thread_local! {
    /// The one read buffer of a shard thread, shared by all its connections: data is handed
    /// to the connection's callback and never kept here across an `.await`.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// Sets how many bytes one read takes (the `read-buffer-bytes` knob), for this thread.
pub fn set_read_size(bytes: usize) {
    SCRATCH.with(|s| *s.borrow_mut() = vec![0; bytes.max(1)]);
}

/// What [`TcpStream::read_available`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Everything available was read; call again to wait for more.
    Drained,
    /// The callback asked to stop.
    Stopped,
    /// The peer closed its side (or the socket was shut down).
    Eof,
}

impl TcpStream {
    fn new(io: tokio_uring::net::TcpStream) -> io::Result<TcpStream> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&io);
        // SAFETY: `fd` belongs to `io`, which the returned `TcpStream` owns next to the
        // registration and drops after it (field order), so the descriptor stays open and the
        // same for the registration's whole life.
        let ready = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(Fd(fd), tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(TcpStream { ready, io })
    }

    /// Adopts a connected std socket (one handed over by another shard).
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        TcpStream::new(tokio_uring::net::TcpStream::from_std(stream))
    }

    /// A second descriptor for the same socket, to hand the connection to another shard. The
    /// socket stays open until both are closed; this side must then only drop its stream
    /// (never [`TcpStream::shutdown`], which would end the connection for both).
    pub fn try_clone_std(&self) -> io::Result<std::net::TcpStream> {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is `self.io`'s, open for as long as `self` lives; the borrow
        // ends within this call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.io.as_raw_fd()) };
        let owned = fd.try_clone_to_owned()?;
        Ok(std::net::TcpStream::from(owned))
    }

    /// Waits until the socket is readable, then reads everything available, passing each
    /// chunk (borrowed from the shard's scratch buffer) to `on_data`, which returns false to
    /// stop. Errors other than "would block" count as end of stream.
    pub async fn read_available(&self, on_data: &mut dyn FnMut(&[u8]) -> bool) -> ReadOutcome {
        // `poll_read_ready` keeps the waker in the registration's reader slot, so waiting holds
        // no waiter node in this future: an idle connection's task stays small (measured: the
        // `readable()` future made this one 216 bytes).
        let ready = std::future::poll_fn(|cx| self.ready.poll_read_ready(cx)).await;
        let Ok(mut guard) = ready else {
            return ReadOutcome::Eof;
        };
        let fd = self.ready.get_ref().0;
        loop {
            let got = guard.try_io(|_| {
                SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    // SAFETY: recv(2) writes at most `len` bytes into the live buffer.
                    let n = unsafe {
                        libc::recv(
                            fd,
                            scratch.as_mut_ptr().cast(),
                            scratch.len(),
                            libc::MSG_DONTWAIT,
                        )
                    };
                    match usize::try_from(n) {
                        Err(_) => Err(io::Error::last_os_error()),
                        Ok(0) => Ok(None),
                        Ok(n) => Ok(Some(on_data(&scratch[..n]))),
                    }
                })
            });
            match got {
                Ok(Ok(Some(true))) => continue,
                Ok(Ok(Some(false))) => return ReadOutcome::Stopped,
                Ok(Ok(None)) => return ReadOutcome::Eof,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(_)) => return ReadOutcome::Eof,
                // Would block: readiness was cleared; the caller waits for the next edge.
                Err(_) => return ReadOutcome::Drained,
            }
        }
    }

    /// Writes `buf` fully.
    pub async fn write_all(&self, buf: Bytes) -> io::Result<()> {
        let (res, _) = self.io.write_all(buf).await;
        res
    }

    /// One vectored write of all `frames` (a single submission); returns bytes written, which
    /// may be fewer than the total, and the vector for reuse.
    pub async fn writev(&self, frames: Vec<OutFrame>) -> (io::Result<usize>, Vec<OutFrame>) {
        self.io.writev(frames).await
    }

    /// Shuts down both directions: any read or write in flight completes at once.
    pub fn shutdown(&self) {
        // ENOTCONN after the peer already left is expected and harmless.
        let _ = self.io.shutdown(std::net::Shutdown::Both);
    }

    /// Sends FIN: the peer reads EOF after everything written so far. Reads still work.
    pub fn shutdown_write(&self) {
        let _ = self.io.shutdown(std::net::Shutdown::Write);
    }

    /// A handle that can shut this socket down from elsewhere on the shard.
    pub fn handle(&self) -> SocketHandle {
        use std::os::fd::AsRawFd;
        SocketHandle(self.io.as_raw_fd())
    }

    /// Disables Nagle's algorithm: we batch writes ourselves.
    pub fn set_nodelay(&self) {
        let _ = self.io.set_nodelay(true);
    }
}

/// Lets the shard shut a connection's socket down (sweep deadlines, shutdown, slow consumers)
/// while the connection's own task owns the stream.
///
/// Validity: the connection task removes the connection from the shard's slab *before* it drops
/// the stream, so a handle reachable through the slab always names a live descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketHandle(std::os::fd::RawFd);

impl SocketHandle {
    /// A handle to no socket (benches and tests drive connections without sockets).
    pub const DETACHED: SocketHandle = SocketHandle(-1);

    /// Shuts down both directions: reads and writes in flight complete at once.
    pub fn shutdown(self) {
        if self.0 >= 0 {
            // SAFETY: shutdown(2) on a descriptor that is live (see the type's invariant); it
            // touches no memory. ENOTCONN after the peer left is expected and ignored.
            unsafe {
                libc::shutdown(self.0, libc::SHUT_RDWR);
            }
        }
    }
}

// SAFETY: an `OutFrame` owns a refcount on an immutable `Bytes`; the pointer stays valid and the
// bytes unchanged for as long as the `OutFrame` lives, including while the kernel holds it during
// a write. `Rc` makes it `!Send`, which is right: frames never leave their shard.
unsafe impl tokio_uring::buf::IoBuf for crate::conn::outbox::OutFrame {
    fn stable_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len()
    }

    fn bytes_total(&self) -> usize {
        self.len()
    }
}
