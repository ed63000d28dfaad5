//! The listening sockets: one `SO_REUSEPORT` group per address that only this process's
//! shards join, and how the listeners are named in errors and in the start-up log.
//!
//! Thread: main, at start-up only ([`super::run`]); the sockets then move to the shards.
//!
//! Invariants: every shard has one socket per address of [`Config::listeners`], all on the
//! same port (the kernel's pick for port 0); an address another process listens on is an
//! error ([`ServerError::AddrInUse`]), never a shared port.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::ServerError;
use crate::config::Config;

/// Listen backlog per shard socket, in connections. Default 4096: a burst of reconnecting
/// clients waits in the kernel instead of being refused; the kernel caps it at `somaxconn`.
const BACKLOG: i32 = 4096;

/// Who asked for each of [`Config::listeners`], for errors: `--listen` for the native one,
/// `route "NAME"` (names joined when routes share it) for the others.
pub(super) fn listener_names(config: &Config) -> Vec<String> {
    let mut names: Vec<Vec<String>> = config.listeners().iter().map(|_| Vec::new()).collect();
    if let Some(native) = names.first_mut() {
        native.push("--listen".to_owned());
    }
    for (route, &l) in config.routes.iter().zip(&config.route_listeners()) {
        if let Some(n) = names.get_mut(l) {
            n.push(format!("route {:?}", route.name));
        }
    }
    names.into_iter().map(|n| n.join(", ")).collect()
}

/// One socket per shard on `addr`, all in one `SO_REUSEPORT` group; with port 0 the first
/// socket picks the port and the others join it. `earlier` holds the addresses this process
/// already listens on; `listener` names who asked for `addr`, for errors.
///
/// The first socket binds and listens *without* `SO_REUSEPORT`. Linux refuses that when any
/// other socket listens on the address, with `SO_REUSEPORT` or not, so another process there
/// (a second ringcast above all) is [`ServerError::AddrInUse`] instead of a silent split of
/// clients between two gateways. The check and the claim are one `listen(2)`: two gateways
/// starting at once cannot both pass it. Only then is `SO_REUSEPORT` turned on for that socket,
/// and the other shards' sockets join its group (Linux forms the group when the second socket
/// listens). A process of the same user that sets `SO_REUSEPORT` itself could still join
/// later; a second ringcast cannot, since its own first socket is plain. `SO_REUSEADDR` stays
/// on, so connections in `TIME_WAIT` from a previous run do not count as "in use".
pub(super) fn bind(
    addr: SocketAddr,
    shards: usize,
    earlier: &[SocketAddr],
    listener: String,
) -> Result<Vec<std::net::TcpListener>, ServerError> {
    let in_use = |source: std::io::Error| {
        if source.kind() != std::io::ErrorKind::AddrInUse {
            return ServerError::Bind { addr, source };
        }
        match earlier.iter().find(|e| e.port() == addr.port()) {
            Some(&other) => ServerError::Overlap {
                addr,
                listener: listener.clone(),
                other,
            },
            None => ServerError::AddrInUse {
                addr,
                listener: listener.clone(),
            },
        }
    };
    let first = listen_socket(addr, false).map_err(in_use)?;
    first
        .set_reuse_port(true)
        .map_err(|source| ServerError::Bind { addr, source })?;
    let first: std::net::TcpListener = first.into();
    let actual = first
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(shards);
    out.push(first);
    for _ in 1..shards {
        let socket = listen_socket(actual, true).map_err(|source| ServerError::Bind {
            addr: actual,
            source,
        })?;
        out.push(socket.into());
    }
    Ok(out)
}

/// A listening TCP socket on `addr` with `SO_REUSEADDR`, and `SO_REUSEPORT` when `reuse_port`.
fn listen_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}
