//! Fault injection: the process at its file-descriptor limit (issue 14, point 8). The gateway
//! runs with `RLIMIT_NOFILE` lowered to a few dozen; clients connect until one is refused. A
//! refusal is clean (an HTTP 503 and a close, counted in `ringcast_fd_limit_refusals_total`,
//! never a hang in the backlog or a crash), the clients already connected keep being served,
//! and once some of them leave, new connections are served again.

mod common;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;

use common::{Client, Gateway, TIMEOUT, hermetic};
use serde_json::json;

/// Descriptors the gateway may hold: its own (listener, rings or epoll, eventfds, the
/// reserve, stdio) plus a couple of dozen clients.
const LIMIT: u64 = 48;

fn limited() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    hermetic(&mut cmd);
    // SAFETY: the closure only calls async-signal-safe setrlimit(2).
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Opens a WebSocket; `Err(status line)` when the server refuses the handshake.
fn try_connect(gw: &Gateway) -> Result<Client, String> {
    let stream = TcpStream::connect(gw.addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let url = format!("ws://{}/ws?subscribe=ev", gw.addr);
    match tungstenite::client(url.as_str(), stream) {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(format!("HTTP {}", resp.status().as_u16()))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn at_the_descriptor_limit_new_connections_are_refused_cleanly_and_served_again_later() {
    let gw = Gateway::start_command(&mut limited(), &["--shards", "1"]);
    let mut clients = Vec::new();
    let refusal = loop {
        assert!(
            clients.len() < LIMIT as usize,
            "never refused within the limit"
        );
        match try_connect(&gw) {
            Ok(mut c) => {
                assert_eq!(c.recv_json()["op"], "subscribed");
                clients.push(c);
            }
            Err(e) => break e,
        }
    };
    assert_eq!(refusal, "HTTP 503", "refused, but not cleanly");
    assert!(clients.len() >= 10, "only {} clients fit", clients.len());
    // A second attempt is refused the same way, and the process is alive.
    assert_eq!(try_connect(&gw).err().as_deref(), Some("HTTP 503"));
    // Those connected are still served: publish from one of them over the native protocol is
    // not possible, so free one descriptor for the HTTP publish first.
    drop(clients.pop());
    drop(clients.pop());
    let start = Instant::now();
    let mut published = false;
    while !published {
        let body = json!({"channel": "ev", "data": "still here"}).to_string();
        let (status, _) = common::http(gw.addr, "POST", "/api/publish", &[], body.as_bytes());
        published = status == 200;
        assert!(start.elapsed() < TIMEOUT, "the publish never got through");
    }
    for c in &mut clients {
        assert_eq!(
            c.recv_json(),
            json!({"channel": "ev", "data": "still here"})
        );
    }
    // Descriptors free up: new clients are served again.
    clients.truncate(clients.len() - 5);
    let start = Instant::now();
    let mut late = loop {
        if let Ok(c) = try_connect(&gw) {
            break c;
        }
        assert!(start.elapsed() < TIMEOUT, "never served again");
    };
    assert_eq!(late.recv_json()["op"], "subscribed");
    assert!(gw.metric("ringcast_fd_limit_refusals_total") >= 2);
    gw.wait_log(&["at the file descriptor limit"], 1);
}
