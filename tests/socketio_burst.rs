//! A burst of 200 radar records reaches 1,000 Socket.IO WebSocket clients of `--preset
//! superdarn`: every client gets every `sas` event, in order (`beam` counts the records), and
//! all get the same bytes (the broadcast is encoded once).
//!
//! The clients are written here, as Engine.IO v4 over hand-driven WebSockets (`RawSio`: the
//! open packet, `40`, the `40{"sid":…}` reply, a pong for every ping), four threads of 250
//! sockets each, read with poll(2). The burst is sent only once all 1,000 have their namespace
//! reply and the gateway's session gauge says 1,000; then each thread reads until each of its
//! sockets has 200 events, within a generous deadline for a busy two-core machine.

mod common;
#[path = "common/radar.rs"]
mod radar;
#[path = "common/sio.rs"]
mod sio;

use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Gateway, client_frame, parse_server_frame};
use radar::FakeRadar;
use sio::RawSio;

/// Socket.IO clients.
const CLIENTS: usize = 1_000;

/// Threads driving them, [`CLIENTS`] / [`THREADS`] sockets each.
const THREADS: usize = 4;

/// Records in the burst; record `i` has `bmnum = i`.
const RECORDS: usize = 200;

/// How long the threads may take to connect all their clients.
const CONNECT_WAIT: Duration = Duration::from_secs(120);

/// How long a thread may take to read the whole burst on all its sockets, from when it starts
/// reading: 200,000 events of ~600 bytes through a debug-build test on two busy cores.
const BURST_WAIT: Duration = Duration::from_secs(240);

/// What one client received: the `beam` of each `sas` event, and a hash of its bytes.
#[derive(Debug, Default)]
struct Received {
    beams: Vec<i64>,
    hashes: Vec<u64>,
}

/// One client socket in a thread's poll loop.
struct Sock {
    stream: TcpStream,
    /// Bytes read and not yet parsed into frames.
    buf: Vec<u8>,
    got: Received,
}

impl Sock {
    /// Reads what is there (the socket is nonblocking) and handles every whole frame.
    fn handle_readable(&mut self, id: usize) {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("client {id}: EOF after {} events", self.got.beams.len()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("client {id}: read: {e}"),
            }
        }
        let mut used = 0;
        while let Some((frame, len)) = parse_server_frame(&self.buf[used..]) {
            used += len;
            assert!(
                frame.fin && frame.opcode == 0x1,
                "client {id}: not a text frame after {} events: {frame:?}",
                self.got.beams.len()
            );
            self.handle_packet(id, &frame.payload);
        }
        self.buf.drain(..used);
    }

    fn handle_packet(&mut self, id: usize, packet: &[u8]) {
        if packet == b"2" {
            self.pong();
            return;
        }
        let head = br#"42["sas",{"site_name":"sas","beam":"#;
        let Some(rest) = packet.strip_prefix(&head[..]) else {
            panic!(
                "client {id}: unexpected packet after {} events: {}",
                self.got.beams.len(),
                String::from_utf8_lossy(packet)
            );
        };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let beam = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "client {id}: no beam in {}",
                    String::from_utf8_lossy(packet)
                )
            });
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        packet.hash(&mut hasher);
        self.got.beams.push(beam);
        self.got.hashes.push(hasher.finish());
    }

    /// Answers a ping. Blocking for the write: three bytes on a socket that has room.
    fn pong(&mut self) {
        self.stream.set_nonblocking(false).expect("blocking");
        self.stream
            .write_all(&client_frame(true, 0x1, b"3"))
            .expect("write pong");
        self.stream.set_nonblocking(true).expect("nonblocking");
    }

    fn done(&self) -> bool {
        self.got.beams.len() >= RECORDS
    }
}

/// Connects `n` clients, reports on `ready`, then reads until each has [`RECORDS`] events.
fn drive(addr: SocketAddr, first: usize, n: usize, ready: mpsc::Sender<usize>) -> Vec<Received> {
    let mut socks: Vec<Sock> = (0..n)
        .map(|_| {
            let (stream, buf) = RawSio::connect(addr).ws.into_parts();
            stream.set_nonblocking(true).expect("nonblocking");
            Sock {
                stream,
                buf,
                got: Received::default(),
            }
        })
        .collect();
    let _ = ready.send(n);
    let deadline = Instant::now() + BURST_WAIT;
    while !socks.iter().all(Sock::done) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "clients {first}..{}: events per client after {BURST_WAIT:?}: {:?}",
            first + n,
            socks.iter().map(|s| s.got.beams.len()).collect::<Vec<_>>()
        );
        let mut fds: Vec<libc::pollfd> = socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout_ms = left.as_millis().min(1_000) as i32;
        // SAFETY: poll(2) on `fds`, a live array of `fds.len()` pollfds of open sockets.
        let ready_fds =
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        assert!(ready_fds >= 0, "poll: {}", std::io::Error::last_os_error());
        for (i, fd) in fds.iter().enumerate() {
            if fd.revents != 0 {
                socks[i].handle_readable(first + i);
            }
        }
    }
    socks.into_iter().map(|s| s.got).collect()
}

/// A temporary SQLite path for the echo counts, removed on drop.
struct EchoesDb(PathBuf);

impl Drop for EchoesDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

#[test]
fn a_burst_of_200_records_reaches_1000_websocket_clients_in_order() {
    let radar = FakeRadar::start("burst");
    let db = EchoesDb(std::env::temp_dir().join(format!(
        "ringcast-echoes-{}-burst.sqlite",
        std::process::id()
    )));
    let echoes_db = format!("superdarn.echoes_db={}", db.0.display());
    let gw = Gateway::start(&[
        "--shards",
        "2",
        "--preset",
        "superdarn",
        "--radars",
        radar.arg(),
        "--route",
        "superdarn.listen=127.0.0.1:0",
        "--route",
        &echoes_db,
    ]);
    let addr = gw.route_addr("superdarn");
    let mut feed = radar.accept();

    let (ready_tx, ready) = mpsc::channel();
    let per_thread = CLIENTS / THREADS;
    let threads: Vec<JoinHandle<Vec<Received>>> = (0..THREADS)
        .map(|t| {
            let tx = ready_tx.clone();
            std::thread::spawn(move || drive(addr, t * per_thread, per_thread, tx))
        })
        .collect();
    drop(ready_tx);
    let start = Instant::now();
    let mut connected = 0;
    while connected < CLIENTS {
        let left = CONNECT_WAIT.saturating_sub(start.elapsed());
        match ready.recv_timeout(left) {
            Ok(n) => connected += n,
            // A thread that panicked while connecting: join it below for its message.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => {
                panic!("{connected} of {CLIENTS} clients connected after {CONNECT_WAIT:?}: {e}")
            }
        }
    }
    if connected < CLIENTS {
        for t in threads {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
        panic!("only {connected} of {CLIENTS} clients connected");
    }
    gw.wait_metric("ringcast_eio_sessions", |v| v == CLIENTS as u64);

    let records: Vec<_> = (0..RECORDS)
        .map(|i| radar::record(i16::try_from(i).expect("small"), 0))
        .collect();
    radar::send(&mut feed, &records);

    let mut all = Vec::with_capacity(CLIENTS);
    for t in threads {
        match t.join() {
            Ok(got) => all.extend(got),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    let want: Vec<i64> = (0..RECORDS as i64).collect();
    for (id, got) in all.iter().enumerate() {
        assert_eq!(
            got.beams, want,
            "client {id}: beams out of order or missing"
        );
        assert_eq!(
            got.hashes, all[0].hashes,
            "client {id}: other bytes than client 0"
        );
    }
}
