//! A gateway refuses to start on an address another process already listens on, a second
//! ringcast included (whose shards would otherwise join the first one's `SO_REUSEPORT` group
//! and split its clients): exit code 1 and exactly one stderr line naming the address and the
//! listener that wanted it. The first gateway keeps serving, and its shards still share one
//! port.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};

use common::Gateway;

fn refused(args: &[&str]) -> (Option<i32>, String) {
    common::run_to_exit(args)
}

#[test]
fn a_second_gateway_on_the_same_address_exits_1_with_one_line() {
    let first = Gateway::start(&["--shards", "2"]);
    let addr = first.addr.to_string();
    let (code, stderr) = refused(&["--listen", &addr, "--shards", "2"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!("ringcast: {addr} is already in use by another process (--listen)\n")
    );
    // The first one still has the port to itself and serves.
    let mut c = first.ws("/ws?subscribe=still");
    assert_eq!(c.recv_json()["op"], "subscribed");
    first.publish("still", &serde_json::json!("here"));
    assert_eq!(c.recv_json()["data"], "here");
}

#[test]
fn every_shard_still_shares_the_kernel_chosen_port() {
    // The first socket listens before it turns SO_REUSEPORT on; the other shards must still
    // join its group, or they would never see a client.
    let gw = Gateway::start(&["--shards", "2"]);
    let clients: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(gw.addr).expect("connect"))
        .collect();
    gw.wait_metric("ringcast_connections", |n| n >= 64);
    for shard in 0..2 {
        let series = format!("ringcast_shard_connections{{shard=\"{shard}\"}}");
        // 64 connections hashed over two sockets: both get some, but for a 2^-63 chance.
        assert!(gw.metric(&series) > 0, "{series} got no connection");
    }
    drop(clients);
}

#[test]
fn a_route_address_held_by_another_process_exits_1_with_one_line() {
    // A plain listener (no SO_REUSEPORT), as most other servers hold their port.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = taken.local_addr().expect("addr");
    let route_listen = format!("mine.listen={addr}");
    let (code, stderr) = refused(&[
        "--listen",
        "127.0.0.1:0",
        "--route",
        "mine.profile=native",
        "--route",
        &route_listen,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!("ringcast: {addr} is already in use by another process (route \"mine\")\n")
    );
}
