//! The limits a hostile client meets before and just after its handshake: open connections per
//! client address, a handshake rate per client address and a command rate per connection, plus
//! the counters of every refusal at the edge (`ringcast_refused_total{reason=…}`).
//!
//! Ownership: one [`PerIp`] table for the whole process, built by `server` and shared by `Arc`
//! with every shard (like the metrics). Shards share nothing else, so the table is lock-free: a
//! fixed array of atomic counters indexed by a keyed hash of the address
//! (docs/decisions/0009-per-ip-limits-in-a-shared-hashed-table.md). Invariants:
//! - memory is fixed at start ([`SLOTS`] slots), whatever the number of clients;
//! - two addresses that hash to one slot share its counters, so a collision can only refuse
//!   early (over-count), never let a client past its limit;
//! - a connection's slot is released exactly once, when its [`IpLease`] drops (with the
//!   connection's entry in the shard's slab).
//!
//! [`CommandBucket`] is per connection and lives in its `Conn` on one shard: no atomics.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::metrics::Counter;

/// Slots of the per-IP table: 16_384, 16 bytes each (256 KiB for the process). More slots
/// make collisions (two clients sharing one slot's counters) rarer; with 20_000 clients from
/// distinct addresses a slot holds about one client on average.
pub const SLOTS: usize = 16_384;

/// A token bucket's rate: `per_second` tokens a second, at most `burst` at once. Written
/// `RATE` or `RATE/BURST` (`10/40`); without a burst it is the rate itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second, at least 1.
    pub per_second: u32,
    /// Most tokens taken at once, at least 1.
    pub burst: u32,
}

impl Rate {
    /// Parses `RATE` or `RATE/BURST`, both whole numbers of at least 1.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let number = |t: &str| t.trim().parse::<u32>().ok().filter(|&n| n > 0);
        let (rate, burst) = match text.split_once('/') {
            Some((r, b)) => (number(r), number(b)),
            None => (number(text), number(text)),
        };
        match (rate, burst) {
            (Some(per_second), Some(burst)) => Ok(Rate { per_second, burst }),
            _ => Err(format!(
                "{text:?} is not RATE or RATE/BURST (whole numbers of at least 1, or 0 for off)"
            )),
        }
    }

    /// Nanoseconds between two tokens.
    fn interval_ns(self) -> u64 {
        1_000_000_000 / u64::from(self.per_second)
    }

    /// One step of GCRA, the token bucket as one timestamp: `tat` is the theoretical arrival
    /// time of the next token, `now` the clock. Returns the new `tat` when a token is free.
    fn admit(self, tat: u64, now: u64) -> Option<u64> {
        let next = tat.max(now).saturating_add(self.interval_ns());
        let window = self.interval_ns().saturating_mul(u64::from(self.burst));
        (next - now <= window).then_some(next)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.per_second, self.burst)
    }
}

/// Nanoseconds since the first call in this process: the clock of every bucket here.
pub fn clock_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A connection's command budget (native-protocol commands). Owned by its `Conn`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandBucket {
    tat: u64,
}

impl CommandBucket {
    /// Takes one token at `now` (from [`clock_ns`]); false when the bucket is empty.
    pub fn take(&mut self, rate: Rate, now: u64) -> bool {
        match rate.admit(self.tat, now) {
            Some(tat) => {
                self.tat = tat;
                true
            }
            None => false,
        }
    }
}

/// Why the edge refused a connection, a request or a command. Each reason is a label of
/// `ringcast_refused_total` and is documented in docs/PROTOCOL.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client address holds `max-connections-per-ip` connections already: HTTP 429.
    PerIpConnections,
    /// The client address opened connections faster than `handshake-rate-per-ip`: HTTP 429.
    HandshakeRate,
    /// A native command past `command-rate`: the `rate_limited` error reply.
    CommandRate,
    /// A request head over 8 KiB or 32 headers: HTTP 431.
    HeaderTooLarge,
    /// A request not complete within `head-timeout`: HTTP 408, then closed.
    HeadTimeout,
    /// A listener expecting the PROXY protocol got no valid header in time: closed.
    ProxyHeader,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 6] = [
        Refusal::PerIpConnections,
        Refusal::HandshakeRate,
        Refusal::CommandRate,
        Refusal::HeaderTooLarge,
        Refusal::HeadTimeout,
        Refusal::ProxyHeader,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerIpConnections => "per_ip_connections",
            Refusal::HandshakeRate => "handshake_rate",
            Refusal::CommandRate => "command_rate",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::HeadTimeout => "head_timeout",
            Refusal::ProxyHeader => "proxy_header",
        }
    }
}

/// One shard's refusal counters (single writer: that shard).
#[derive(Debug, Default)]
pub struct RefusedStats([Counter; 6]);

impl RefusedStats {
    /// Counts one refusal.
    pub fn inc(&self, why: Refusal) {
        self.0[why as usize].inc();
    }

    /// The count for one reason.
    pub fn get(&self, why: Refusal) -> u64 {
        self.0[why as usize].get()
    }
}

/// Appends `ringcast_refused_total{reason=…}`, summed over the shards.
pub fn render_refused<'a>(
    out: &mut String,
    shards: impl Iterator<Item = &'a RefusedStats> + Clone,
) {
    use std::fmt::Write as _;
    out.push_str(
        "# HELP ringcast_refused_total Connections, requests and commands refused at the edge, \
         by reason.\n# TYPE ringcast_refused_total counter\n",
    );
    for why in Refusal::ALL {
        let total: u64 = shards.clone().map(|s| s.get(why)).sum();
        let _ = writeln!(
            out,
            "ringcast_refused_total{{reason=\"{}\"}} {total}",
            why.as_str()
        );
    }
}

/// One slot of the per-IP table.
#[derive(Debug, Default)]
struct Slot {
    /// Open connections of the addresses hashing here.
    conns: AtomicU32,
    /// The handshake bucket's theoretical arrival time ([`Rate::admit`]).
    tat: AtomicU64,
}

/// Per-address limits shared by every shard.
#[derive(Debug)]
pub struct PerIp {
    slots: Box<[Slot]>,
    /// Keyed (SipHash, random keys per process), so a client cannot pick addresses that
    /// collide with a victim's slot.
    hasher: std::collections::hash_map::RandomState,
    /// `max-connections-per-ip`; 0: no cap.
    max_conns: u32,
    /// `handshake-rate-per-ip`; `None`: no rate.
    handshake: Option<Rate>,
}

impl PerIp {
    /// A table enforcing `max_conns` (0: off) and `handshake` (`None`: off). With neither,
    /// it holds no slots and [`PerIp::is_active`] is false: callers must not admit through it.
    pub fn new(max_conns: usize, handshake: Option<Rate>) -> PerIp {
        let active = max_conns > 0 || handshake.is_some();
        PerIp {
            slots: (0..if active { SLOTS } else { 0 })
                .map(|_| Slot::default())
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            max_conns: u32::try_from(max_conns).unwrap_or(u32::MAX),
            handshake,
        }
    }

    /// Which slot `ip` counts in. IPv4-mapped IPv6 counts as the IPv4 address; other IPv6
    /// addresses count per /64, the block one subscriber usually holds.
    fn slot(&self, ip: IpAddr) -> usize {
        let hash = match ip.to_canonical() {
            IpAddr::V4(v4) => self.hasher.hash_one(v4.octets()),
            IpAddr::V6(v6) => self.hasher.hash_one(&v6.octets()[..8]),
        };
        // SLOTS is a power of two: the low bits of a SipHash are uniform.
        (hash as usize) & (SLOTS - 1)
    }

    /// Admits a new connection from `ip` at `now` ([`clock_ns`]): takes a handshake token and a
    /// connection slot, or says which limit refused it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: u64) -> Result<IpLease, Refusal> {
        let index = self.slot(ip);
        let slot = &self.slots[index];
        if let Some(rate) = self.handshake {
            let mut tat = slot.tat.load(Relaxed);
            loop {
                let Some(next) = rate.admit(tat, now) else {
                    return Err(Refusal::HandshakeRate);
                };
                match slot.tat.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                    Ok(_) => break,
                    Err(seen) => tat = seen,
                }
            }
        }
        let before = slot.conns.fetch_add(1, Relaxed);
        let lease = IpLease {
            table: self.clone(),
            slot: index,
        };
        if self.max_conns > 0 && before >= self.max_conns {
            // Dropping the lease gives the slot back.
            return Err(Refusal::PerIpConnections);
        }
        Ok(lease)
    }

    /// Counts a connection from `ip` without checking any limit: a connection another shard
    /// admitted and handed over (an Engine.IO request for a session this shard owns).
    pub fn lease(self: &Arc<Self>, ip: IpAddr) -> IpLease {
        let index = self.slot(ip);
        self.slots[index].conns.fetch_add(1, Relaxed);
        IpLease {
            table: self.clone(),
            slot: index,
        }
    }

    /// Whether any per-IP limit is set (without one, admission skips the table).
    pub fn is_active(&self) -> bool {
        self.max_conns > 0 || self.handshake.is_some()
    }

    /// Open connections counted in `ip`'s slot (tests and diagnostics).
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.slots[self.slot(ip)].conns.load(Relaxed)
    }
}

/// One connection counted in its address's slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct IpLease {
    table: Arc<PerIp>,
    slot: usize,
}

impl Drop for IpLease {
    fn drop(&mut self) {
        self.table.slots[self.slot].conns.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn rates_parse_with_and_without_burst() {
        assert_eq!(
            Rate::parse("10/40"),
            Ok(Rate {
                per_second: 10,
                burst: 40
            })
        );
        assert_eq!(Rate::parse("5").map(|r| r.burst), Ok(5));
        for bad in ["", "0", "1/0", "x", "-1", "1/2/3", "1.5"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Rate::parse("3/7").map(|r| r.to_string()), Ok("3/7".into()));
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let rate = Rate::parse("2/3").unwrap();
        let mut b = CommandBucket::default();
        let now = 10 * SECOND;
        assert!((0..3).all(|_| b.take(rate, now)));
        assert!(!b.take(rate, now), "burst spent");
        assert!(!b.take(rate, now + SECOND / 4));
        assert!(b.take(rate, now + SECOND / 2), "one token every 500 ms");
        assert!(!b.take(rate, now + SECOND / 2));
        // A long pause refills to the burst, not beyond.
        let later = now + 100 * SECOND;
        assert_eq!((0..10).filter(|_| b.take(rate, later)).count(), 3);
    }

    #[test]
    fn the_connection_cap_counts_per_address_and_leases_give_back() {
        let table = Arc::new(PerIp::new(2, None));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = table.admit(a, 0).unwrap();
        let _second = table.admit(a, 0).unwrap();
        assert_eq!(table.admit(a, 0).unwrap_err(), Refusal::PerIpConnections);
        assert_eq!(table.open(a), 2, "a refusal takes no slot");
        drop(first);
        assert!(table.admit(a, 0).is_ok());
    }

    #[test]
    fn mapped_ipv4_and_one_ipv6_block_share_a_slot() {
        let table = Arc::new(PerIp::new(1, None));
        let _v4 = table.admit("192.0.2.7".parse().unwrap(), 0).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            table.admit(mapped, 0).unwrap_err(),
            Refusal::PerIpConnections
        );
        let _v6 = table.admit("2001:db8::1".parse().unwrap(), 0).unwrap();
        let same_64: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert_eq!(
            table.admit(same_64, 0).unwrap_err(),
            Refusal::PerIpConnections
        );
    }

    #[test]
    fn the_handshake_rate_refuses_past_the_burst() {
        let table = Arc::new(PerIp::new(0, Some(Rate::parse("1/2").unwrap())));
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let now = 5 * SECOND;
        let first = table.admit(ip, now).unwrap();
        let second = table.admit(ip, now).unwrap();
        assert_eq!(table.admit(ip, now).unwrap_err(), Refusal::HandshakeRate);
        let third = table.admit(ip, now + SECOND).unwrap();
        assert_eq!(table.open(ip), 3, "no cap: every admitted one is counted");
        drop((first, second, third));
        assert_eq!(table.open(ip), 0);
    }

    #[test]
    fn every_refusal_has_a_label() {
        let stats = RefusedStats::default();
        stats.inc(Refusal::HeadTimeout);
        let mut out = String::new();
        render_refused(&mut out, [&stats].into_iter());
        for why in Refusal::ALL {
            assert!(out.contains(&format!("reason=\"{}\"", why.as_str())));
        }
        assert!(out.contains("ringcast_refused_total{reason=\"head_timeout\"} 1"));
    }
}
