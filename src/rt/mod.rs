//! The runtime seam: the only module that names the io_uring runtime (tokio-uring).
//!
//! Everything else uses these few types and functions. Two backends sit behind them, chosen
//! once per process with [`select`] (`--io-backend`):
//!
//! - [`Backend::IoUring`]: tokio-uring's runtime (a current-thread tokio runtime plus a ring);
//!   accepts and writes are io_uring submissions.
//! - [`Backend::Epoll`]: a plain current-thread tokio runtime with a `LocalSet`; accepts and
//!   writes wait for readiness on the socket's reactor registration ([`epoll`]), for hosts
//!   where io_uring is forbidden.
//!
//! Reads, timers and task-local state are the same on both. Modelled on quinn's `runtime/`
//! trait, but kept concrete: an enum per type, matched per call.
//!
//! Thread model: [`Runtime::block_on`] runs one single-threaded runtime on the calling thread.
//! Tasks spawned with [`spawn`] stay on that thread for their whole life, so shard state can be
//! `Rc<RefCell<…>>` with no locks.

mod epoll;
mod sleep;
mod wake;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::Bytes;

use crate::conn::outbox::OutFrame;

pub use wake::{WakeHandle, WakeListener, WakeReceiver, wake_pair};

/// io_uring submission-queue entries per shard. The kernel sizes the completion queue at twice
/// this and does not drop completions on overflow (IORING_FEAT_NODROP), so this bounds batching,
/// not the number of connections.
pub const RING_ENTRIES: u32 = 4096;

/// Which runtime the shards run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// tokio-uring: io_uring for accepts and writes.
    IoUring,
    /// A plain tokio runtime: epoll readiness for everything.
    Epoll,
}

impl Backend {
    /// The name in logs and in `/metrics` (`ringcast_io_backend{backend="…"}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

/// The process's backend, set once by [`select`].
static BACKEND: OnceLock<Backend> = OnceLock::new();

/// Chooses the backend for every runtime this process creates from now on. The first call
/// wins; later calls return the backend already chosen.
pub fn select(backend: Backend) -> Backend {
    *BACKEND.get_or_init(|| backend)
}

/// The process's backend: io_uring unless [`select`] chose otherwise.
pub fn backend() -> Backend {
    BACKEND.get().copied().unwrap_or(Backend::IoUring)
}

/// Sets up io_uring once on this thread and drops it: the error names why it is unavailable.
pub fn probe_io_uring() -> io::Result<()> {
    tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES)).map(drop)
}

/// A single-threaded runtime of the process's [`backend`].
pub struct Runtime(Engine);

enum Engine {
    IoUring(tokio_uring::Runtime),
    Epoll(tokio::runtime::Runtime, tokio::task::LocalSet),
}

impl Runtime {
    /// Sets up the runtime on this thread. With io_uring, fails when the kernel or a seccomp
    /// profile forbids it.
    pub fn new() -> io::Result<Runtime> {
        Ok(Runtime(match backend() {
            Backend::IoUring => Engine::IoUring(tokio_uring::Runtime::new(
                tokio_uring::builder().entries(RING_ENTRIES),
            )?),
            Backend::Epoll => Engine::Epoll(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
                tokio::task::LocalSet::new(),
            ),
        }))
    }

    /// Runs `future` and every task it spawns until `future` completes.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        match &self.0 {
            Engine::IoUring(rt) => rt.block_on(future),
            Engine::Epoll(rt, local) => local.block_on(rt, future),
        }
    }
}

/// Spawns a task on the current thread's runtime.
pub fn spawn<F: Future + 'static>(future: F) {
    match backend() {
        Backend::IoUring => drop(tokio_uring::spawn(future)),
        Backend::Epoll => drop(tokio::task::spawn_local(future)),
    }
}

/// A listening socket owned by one shard.
pub enum TcpListener {
    /// Accepts through io_uring.
    IoUring(tokio_uring::net::TcpListener),
    /// Accepts when the reactor reports the socket readable.
    Epoll(tokio::io::unix::AsyncFd<std::net::TcpListener>),
}

impl TcpListener {
    /// Adopts a bound, listening std socket (non-blocking or not). Fails only when the epoll
    /// backend cannot register it with the reactor.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<Self> {
        Ok(match backend() {
            Backend::IoUring => {
                TcpListener::IoUring(tokio_uring::net::TcpListener::from_std(listener))
            }
            Backend::Epoll => {
                listener.set_nonblocking(true)?;
                let interest = tokio::io::Interest::READABLE;
                // SAFETY: the std listener owns its descriptor and never changes it; the
                // registration owns the listener, so the descriptor outlives the registration.
                let ready =
                    unsafe { tokio::io::unix::AsyncFd::register_with_interest(listener, interest) }
                        .map_err(|e| e.into_parts().1)?;
                TcpListener::Epoll(ready)
            }
        })
    }

    /// At the descriptor limit, turns away one waiting connection cleanly instead of leaving it
    /// in the backlog: the caller has just closed a reserve descriptor, so that `accept4` can
    /// succeed; the connection gets `503` and is closed at once. Non-blocking: false when
    /// nothing was waiting (or the accept failed anyway).
    pub fn shed_one(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            TcpListener::IoUring(l) => l.as_raw_fd(),
            TcpListener::Epoll(l) => l.get_ref().as_raw_fd(),
        };
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout never blocks.
        if unsafe { libc::poll(&mut poll, 1, 0) } != 1 {
            return false;
        }
        // SAFETY: `fd` is our listening socket; null address arguments are allowed.
        let conn = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if conn < 0 {
            return false;
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let stream = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(conn) };
        let _ = std::io::Write::write(
            &mut &stream,
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 35\r\n\r\nat the file descriptor limit, retry\n",
        );
        true
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        match self {
            TcpListener::IoUring(listener) => {
                let (stream, addr) = listener.accept().await?;
                Ok((TcpStream::new(Io::IoUring(stream))?, addr))
            }
            TcpListener::Epoll(listener) => {
                let (stream, addr) = epoll::accept(listener).await?;
                Ok((TcpStream::from_std(stream)?, addr))
            }
        }
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
/// Writes go through io_uring, or with the epoll backend wait for writable readiness on the
/// same registration.
pub struct TcpStream {
    /// Declared first so it deregisters from the reactor before `io` closes the descriptor.
    ready: tokio::io::unix::AsyncFd<Fd>,
    io: Io,
}

/// The socket itself, as each backend holds it.
enum Io {
    IoUring(tokio_uring::net::TcpStream),
    Epoll(std::net::TcpStream),
}

impl std::os::fd::AsRawFd for Io {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Io::IoUring(s) => s.as_raw_fd(),
            Io::Epoll(s) => s.as_raw_fd(),
        }
    }
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
    fn new(io: Io) -> io::Result<TcpStream> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&io);
        let interest = match io {
            Io::IoUring(_) => tokio::io::Interest::READABLE,
            Io::Epoll(_) => tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE,
        };
        // SAFETY: `fd` belongs to `io`, which the returned `TcpStream` owns next to the
        // registration and drops after it (field order), so the descriptor stays open and the
        // same for the registration's whole life.
        let ready = unsafe { tokio::io::unix::AsyncFd::register_with_interest(Fd(fd), interest) }
            .map_err(|e| e.into_parts().1)?;
        Ok(TcpStream { ready, io })
    }

    /// Adopts a connected std socket (one handed over by another shard, or accepted).
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        TcpStream::new(match backend() {
            Backend::IoUring => Io::IoUring(tokio_uring::net::TcpStream::from_std(stream)),
            Backend::Epoll => Io::Epoll(stream),
        })
    }

    /// Adopts a connected std socket that this thread will only read ([`read_available`]
    /// reads with `MSG_DONTWAIT`), leaving its blocking flag alone: that flag belongs to the
    /// socket, not the descriptor, and another thread may write it through a duplicate with
    /// blocking writes (a Redis source's subscription commands, decision 0017).
    ///
    /// [`read_available`]: Self::read_available
    pub fn from_std_reader(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        TcpStream::new(match backend() {
            Backend::IoUring => Io::IoUring(tokio_uring::net::TcpStream::from_std(stream)),
            Backend::Epoll => Io::Epoll(stream),
        })
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
                        Ok(n) => Ok(Some((on_data(&scratch[..n]), n < scratch.len()))),
                    }
                })
            });
            match got {
                // A short read emptied the socket's queue: what arrives after it raises a new
                // edge on the (edge-triggered) registration, so readiness can be cleared now
                // instead of by a second `recv` that finds nothing (tokio's own `TcpStream`
                // does the same). A peer's FIN seen with the data stays recorded (clearing
                // keeps "read closed"), so the next call reads the end at once.
                Ok(Ok(Some((true, true)))) => {
                    guard.clear_ready();
                    return ReadOutcome::Drained;
                }
                Ok(Ok(Some((true, false)))) => continue,
                Ok(Ok(Some((false, _)))) => return ReadOutcome::Stopped,
                Ok(Ok(None)) => return ReadOutcome::Eof,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(_)) => return ReadOutcome::Eof,
                // Would block: readiness was cleared; the caller waits for the next edge.
                Err(_) => return ReadOutcome::Drained,
            }
        }
    }

    /// Ready once the socket is readable (or its registration failed, which the next
    /// [`read_available`](Self::read_available) reports as EOF); readiness is kept for that read.
    pub fn poll_readable(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.ready.poll_read_ready(cx).map(drop)
    }

    /// Parks the socket without a reactor registration (its 256 bytes are freed), in this
    /// thread's set of sleeping sockets, which reports `token` once the socket is readable
    /// (input, EOF, a reset, or our own shutdown of it), at once if it is readable already; see
    /// [`poll_sleepers`]. Gives the stream back, unchanged, if the socket cannot be added.
    pub fn sleep(self, token: usize) -> Result<Sleeping, TcpStream> {
        use std::os::fd::AsRawFd;
        if sleep::add(self.io.as_raw_fd(), token).is_err() {
            return Err(self);
        }
        let TcpStream { ready, io } = self;
        // Deregisters from the reactor; the descriptor stays open in `io`.
        drop(ready);
        Ok(Sleeping(io))
    }

    /// Writes `buf` fully.
    pub async fn write_all(&self, buf: Bytes) -> io::Result<()> {
        match &self.io {
            Io::IoUring(io) => io.write_all(buf).await.0,
            Io::Epoll(_) => epoll::write_all(&self.ready, &buf).await,
        }
    }

    /// One vectored write of all `frames` (a single submission or syscall); returns bytes
    /// written, which may be fewer than the total, and the vector for reuse.
    pub async fn writev(&self, frames: Vec<OutFrame>) -> (io::Result<usize>, Vec<OutFrame>) {
        match &self.io {
            Io::IoUring(io) => io.writev(frames).await,
            Io::Epoll(_) => {
                let res = epoll::writev(&self.ready, &frames).await;
                (res, frames)
            }
        }
    }

    /// Shuts down both directions: any read or write in flight completes at once.
    pub fn shutdown(&self) {
        // ENOTCONN after the peer already left is expected and harmless.
        let _ = self.shutdown_how(std::net::Shutdown::Both);
    }

    /// Sends FIN: the peer reads EOF after everything written so far. Reads still work.
    pub fn shutdown_write(&self) {
        let _ = self.shutdown_how(std::net::Shutdown::Write);
    }

    fn shutdown_how(&self, how: std::net::Shutdown) -> io::Result<()> {
        match &self.io {
            Io::IoUring(io) => io.shutdown(how),
            Io::Epoll(io) => io.shutdown(how),
        }
    }

    /// A handle that can shut this socket down from elsewhere on the shard.
    pub fn handle(&self) -> SocketHandle {
        use std::os::fd::AsRawFd;
        SocketHandle(self.io.as_raw_fd())
    }

    /// Disables Nagle's algorithm: we batch writes ourselves.
    pub fn set_nodelay(&self) {
        let _ = match &self.io {
            Io::IoUring(io) => io.set_nodelay(true),
            Io::Epoll(io) => io.set_nodelay(true),
        };
    }
}

/// A socket parked by [`TcpStream::sleep`]: open, in this thread's set of sleeping sockets, with
/// no reactor registration. Dropping it closes the socket.
pub struct Sleeping(Io);

impl Sleeping {
    /// Takes the socket out of the set and registers it with the reactor again. Fails only
    /// when the reactor cannot register it; the socket is then closed.
    pub fn wake(self) -> io::Result<TcpStream> {
        use std::os::fd::AsRawFd;
        sleep::remove(self.0.as_raw_fd());
        TcpStream::new(self.0)
    }
}

/// Ready with the tokens of sleeping sockets ([`TcpStream::sleep`]) that became readable,
/// appended to `out`; pending, with the task's waker kept, while none did.
pub fn poll_sleepers(cx: &mut std::task::Context<'_>, out: &mut Vec<usize>) -> std::task::Poll<()> {
    sleep::poll_ready(cx, out)
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

    /// Writes as much of `frames` (up to [`MAX_IOVECS`](crate::conn::outbox::MAX_IOVECS)) as
    /// the socket buffer takes now, with one non-blocking `sendmsg`, on either backend: the
    /// shard's direct flush, for a connection whose write loop is parked (see
    /// `Shard::flush_turn`). `WouldBlock` when the buffer is full; then the connection's write
    /// loop takes over. Only for a handle reached through the shard's slab (the type's
    /// invariant keeps the descriptor live).
    pub fn try_writev(self, frames: &[OutFrame]) -> io::Result<usize> {
        if self.0 < 0 {
            return Err(io::ErrorKind::NotConnected.into());
        }
        IOVECS.with(|iov| {
            let mut iov = iov.borrow_mut();
            iov.extend(
                frames
                    .iter()
                    .take(crate::conn::outbox::MAX_IOVECS)
                    .map(|f| libc::iovec {
                        iov_base: f.as_slice().as_ptr() as *mut libc::c_void,
                        iov_len: f.len(),
                    }),
            );
            let sent = loop {
                match epoll::send_now(self.0, &iov) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    sent => break sent,
                }
            };
            // No pointer into the frames outlives the call.
            iov.clear();
            sent
        })
    }
}

thread_local! {
    /// The iovec array of [`SocketHandle::try_writev`], kept empty between calls so that a
    /// direct flush allocates nothing.
    static IOVECS: std::cell::RefCell<Vec<libc::iovec>> = const { std::cell::RefCell::new(Vec::new()) };
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::{ReadOutcome, Runtime, TcpStream};

    /// A connected loopback pair: the client side (std) and the accepted side, adopted.
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    /// Reads once, failing the test rather than hanging if nothing comes.
    async fn read_once(stream: &TcpStream, got: &mut Vec<u8>) -> ReadOutcome {
        let mut on_data = |data: &[u8]| {
            got.extend_from_slice(data);
            true
        };
        let read = stream.read_available(&mut on_data);
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the read waited 10 s for input that had arrived")
    }

    /// A short read ends the call without a second `recv`; the peer's end, already queued
    /// behind the data, is read by the next call rather than lost with the cleared readiness.
    #[test]
    fn a_short_read_returns_and_the_end_queued_behind_it_is_still_read() {
        let (mut client, server) = pair();
        client.write_all(b"abc").expect("write");
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let rt = Runtime::new().expect("runtime");
        rt.block_on(async {
            let stream = TcpStream::from_std(server).expect("adopt");
            let mut got = Vec::new();
            assert_eq!(read_once(&stream, &mut got).await, ReadOutcome::Drained);
            assert_eq!(got, b"abc");
            assert_eq!(read_once(&stream, &mut got).await, ReadOutcome::Eof);
            assert_eq!(got, b"abc");
        });
    }

    /// Input that arrives after a short read cleared the readiness raises a new edge: the next
    /// call reads it.
    #[test]
    fn input_after_a_short_read_is_read_by_the_next_call() {
        let (mut client, server) = pair();
        let rt = Runtime::new().expect("runtime");
        rt.block_on(async {
            let stream = TcpStream::from_std(server).expect("adopt");
            let mut got = Vec::new();
            client.write_all(b"one").expect("write");
            assert_eq!(read_once(&stream, &mut got).await, ReadOutcome::Drained);
            assert_eq!(got, b"one");
            client.write_all(b"two").expect("write");
            assert_eq!(read_once(&stream, &mut got).await, ReadOutcome::Drained);
            assert_eq!(got, b"onetwo");
            drop(client);
            assert_eq!(read_once(&stream, &mut got).await, ReadOutcome::Eof);
        });
    }
}
