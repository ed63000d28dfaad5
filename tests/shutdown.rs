//! Graceful shutdown: on SIGTERM or SIGINT every client gets close 1001 and the process exits
//! with status 0, promptly when clients answer and within `--shutdown-timeout` when one never
//! does.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Gateway, RawWs, wait_exit};

#[test]
fn sigterm_sends_1001_to_every_client_and_exits_0() {
    // A long shutdown timeout: exiting well within 5 s shows the gateway stops as soon as the
    // last client has answered, rather than waiting the timeout out.
    let mut gw = Gateway::start(&["--shards", "2", "--shutdown-timeout", "20s"]);
    let mut clients: Vec<Client> = (0..20).map(|_| gw.ws("/ws?subscribe=s")).collect();
    for c in &mut clients {
        assert_eq!(c.recv_json()["op"], "subscribed");
    }
    for shard in 0..2 {
        let n = gw.metric(&format!("ringcast_shard_websockets{{shard=\"{shard}\"}}"));
        assert!(n > 0, "shard {shard} got no connections");
    }
    let signalled = Instant::now();
    gw.signal(libc::SIGTERM);
    for c in &mut clients {
        assert_eq!(c.expect_close(), 1001);
        // Answer the close (tungstenite queued the reply when it read the close frame).
        c.ws.flush().expect("send the close reply");
    }
    let status = wait_exit(&mut gw.child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status}");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
}

#[test]
fn sigint_exits_0_within_the_timeout_when_a_client_never_answers() {
    let mut gw = Gateway::start(&["--shards", "2", "--shutdown-timeout", "1s"]);
    // Never reads, never answers the close.
    let mut deaf = RawWs::connect(gw.addr, "/ws");
    let mut polite = gw.ws("/ws");
    polite.subscribe("x");
    gw.wait_metric("ringcast_websockets", |n| n == 2);

    // Taken before the signal: the gateway's shutdown clock starts later than this.
    let signalled = Instant::now();
    gw.signal(libc::SIGINT);
    assert_eq!(polite.expect_close(), 1001);
    polite.ws.flush().expect("send the close reply");
    let status = wait_exit(&mut gw.child, Duration::from_secs(5));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    // The gateway waited for the deaf client, up to the timeout, before cutting it off.
    assert!(took >= Duration::from_secs(1), "exit after only {took:?}");

    // What the deaf client was sent: the close frame, then the end of the stream.
    let close = deaf.read_frame().expect("close frame");
    assert_eq!(close.close_code(), Some(1001), "{close:?}");
    assert_eq!(&close.payload[2..], b"server shutting down");
    assert_eq!(deaf.read_frame(), None);
}
