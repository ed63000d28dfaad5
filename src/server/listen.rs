//! The listening sockets: one `SO_REUSEPORT` group per address that only this process's
//! shards join, and how the listeners are named in errors and in the start-up log (the demo
//! page's URL, a note for routes on all interfaces).
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
    if let Some(admin) = config.admin_listener().and_then(|i| names.get_mut(i)) {
        admin.push("--admin-listen".to_owned());
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

/// The demo page's URL on the native listener `addr` (as bound, so port 0 shows the real
/// port); an all-interfaces address shows as loopback, which a browser on this host can open.
pub(super) fn demo_url(addr: SocketAddr) -> String {
    let mut shown = addr;
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            shown.set_ip(std::net::Ipv6Addr::LOCALHOST.into());
        }
        _ => {}
    }
    format!("http://{shown}/")
}

/// The start-up note for a route listening on all interfaces (the presets do, as the originals
/// did), since the native listener's default is loopback only.
pub(super) fn all_interfaces_note(route: &str, addr: SocketAddr) -> String {
    let loopback = match addr {
        SocketAddr::V4(a) => SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, a.port())),
        SocketAddr::V6(a) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
    };
    format!(
        "route {route:?} listens on {addr} (all interfaces, as the original did; set \
         --route {route}.listen={loopback} for loopback only)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_url_is_one_a_local_browser_can_open() {
        let url = |a: &str| demo_url(a.parse().expect("addr"));
        assert_eq!(url("127.0.0.1:8080"), "http://127.0.0.1:8080/");
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080/");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080/");
        assert_eq!(url("10.1.2.3:80"), "http://10.1.2.3:80/");
    }

    #[test]
    fn an_all_interfaces_route_says_how_to_keep_it_local() {
        let note = all_interfaces_note("preflight", "0.0.0.0:9001".parse().expect("addr"));
        assert_eq!(
            note,
            "route \"preflight\" listens on 0.0.0.0:9001 (all interfaces, as the original did; \
             set --route preflight.listen=127.0.0.1:9001 for loopback only)"
        );
        let v6 = all_interfaces_note("bess", "[::]:8001".parse().expect("addr"));
        assert!(v6.contains("--route bess.listen=[::1]:8001"), "{v6}");
    }
}
