//! Process set-up through libc: the open-file limit, CPU pinning, and source-address spreading
//! for very many loopback connections.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::bail;

/// Loopback connections per source address before the next one (`127.0.0.2`, …) is used. One
/// source address has about 28k ephemeral ports (`net.ipv4.ip_local_port_range`), so one
/// address cannot carry many more connections to a single gateway port.
pub const CONNS_PER_SOURCE_IP: usize = 30_000;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns the new soft limit.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: lim is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Pins the calling thread, and every thread it starts afterwards, to `cpus`.
pub fn pin_to_cpus(cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            if cpu >= libc::CPU_SETSIZE as usize {
                bail!("--pin-cores: CPU {cpu} out of range");
            }
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({cpus:?}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The source address client `i` binds before connecting to a loopback `target`, or `None`
/// to let the kernel choose (the first [`CONNS_PER_SOURCE_IP`] clients, and any non-loopback
/// target).
pub fn source_ip(i: usize, target: IpAddr) -> Option<Ipv4Addr> {
    let group = i / CONNS_PER_SOURCE_IP;
    if group == 0 || !target.is_loopback() || !target.is_ipv4() {
        return None;
    }
    let n = (group + 1) as u32; // 127.0.0.2, 127.0.0.3, …
    Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n))
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` on a socket about to be bound to port 0, so the port is
/// chosen at `connect` time per destination and bound sockets do not run out of ports.
pub fn set_bind_address_no_port(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: fd is an open socket; the option value is a valid c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_spread_past_30k() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(source_ip(0, lo), None);
        assert_eq!(source_ip(29_999, lo), None);
        assert_eq!(source_ip(30_000, lo), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_ip(95_000, lo), Some(Ipv4Addr::new(127, 0, 0, 4)));
        assert_eq!(source_ip(95_000, "10.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn nofile_limit_can_be_raised() {
        assert!(raise_nofile_limit().unwrap() > 0);
    }
}
