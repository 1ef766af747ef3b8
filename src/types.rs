//! Small value types shared by the configuration, the schedulers, the connection table and the pipeline.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// An IPv4 or IPv6 address in one 16-byte form: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`).
///
/// The connection table and the schedulers key on this so that both families share one code path.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Addr(pub [u8; 16]);

/// One 128-bit write: a derived `Hash` would hash a length prefix and sixteen bytes (hot path).
impl std::hash::Hash for Addr {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u128(u128::from_ne_bytes(self.0));
    }
}

impl Addr {
    pub const UNSPECIFIED: Addr = Addr([0; 16]);

    #[inline]
    pub const fn from_v4(o: [u8; 4]) -> Addr {
        // Built in a register and stored whole: byte-wise stores of the prefix and the four
        // octets make the 8-byte loads that read the address back stall on store forwarding
        // (seen in the pipeline's profile).
        let low = u64::from_be_bytes([0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3]]);
        Addr((low as u128).to_be_bytes())
    }
    pub const fn from_v6(o: [u8; 16]) -> Addr {
        Addr(o)
    }
    pub fn is_v4(&self) -> bool {
        self.0[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
    }
    /// The four IPv4 octets; meaningful only when [`Addr::is_v4`].
    pub fn v4(&self) -> [u8; 4] {
        [self.0[12], self.0[13], self.0[14], self.0[15]]
    }
    /// The IPv4 address; meaningful only when [`Addr::is_v4`].
    #[inline]
    pub fn to_ip4(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.v4())
    }
    #[inline]
    pub fn to_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.0)
    }
    pub fn to_ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::from(self.v4()))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
    /// The address with all but the first `prefix` bits of its own family cleared.
    pub fn masked(&self, prefix: u8) -> Addr {
        let (start, bits) = if self.is_v4() { (12, 32u32) } else { (0, 128u32) };
        let keep = u32::from(prefix).min(bits);
        let mut out = *self;
        for (i, b) in out.0[start..].iter_mut().enumerate() {
            let lo = (i as u32) * 8;
            if keep <= lo {
                *b = 0;
            } else if keep < lo + 8 {
                *b &= 0xffu8 << (8 - (keep - lo));
            }
        }
        out
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(a) => Addr::from_v4(a.octets()),
            IpAddr::V6(a) => Addr::from_v6(a.octets()),
        }
    }
}
impl From<Ipv4Addr> for Addr {
    fn from(a: Ipv4Addr) -> Addr {
        Addr::from_v4(a.octets())
    }
}
impl From<Ipv6Addr> for Addr {
    fn from(a: Ipv6Addr) -> Addr {
        Addr::from_v6(a.octets())
    }
}
impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_ip().fmt(f)
    }
}
impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_ip().fmt(f)
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);
}
impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}
impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split([':', '-']) {
            if n == 6 || part.len() != 2 {
                return Err(format!("'{s}' is not a MAC address (want aa:bb:cc:dd:ee:ff)"));
            }
            out[n] = u8::from_str_radix(part, 16)
                .map_err(|_| format!("'{s}' is not a MAC address (want aa:bb:cc:dd:ee:ff)"))?;
            n += 1;
        }
        if n != 6 {
            return Err(format!("'{s}' is not a MAC address (want aa:bb:cc:dd:ee:ff)"));
        }
        Ok(Mac(out))
    }
}

/// An address prefix such as `198.18.1.1/24` (the address keeps its host bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                let (p, x) = (Addr::from(self.addr), Addr::from(a));
                p.masked(self.len) == x.masked(self.len)
            }
            _ => false,
        }
    }
}
impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not a prefix (want ADDRESS/LENGTH)"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("'{a}' is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = l
            .parse()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| format!("'{l}' is not a prefix length 0..={max}"))?;
        Ok(Prefix { addr, len })
    }
}
impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Transport protocol of a virtual service.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number (6 or 17).
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
    pub const fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// LVS forwarding method (keepalived's `lb_kind`, ipvsadm's `-m/-g/-i`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Method {
    /// Masquerading: destination rewritten to the real server, replies come back through the director.
    Nat,
    /// Full NAT: source rewritten to a local address as well, so the real server needs no special route.
    FullNat,
    /// Direct routing: only the destination MAC changes.
    Dr,
    /// IP-in-IP tunnelling to the real server.
    Tun,
}

impl Method {
    pub const fn name(self) -> &'static str {
        match self {
            Method::Nat => "NAT",
            Method::FullNat => "FULLNAT",
            Method::Dr => "DR",
            Method::Tun => "TUN",
        }
    }
    /// Whether replies pass back through the director.
    pub const fn two_way(self) -> bool {
        matches!(self, Method::Nat | Method::FullNat)
    }
}

/// LVS scheduler (keepalived's `lb_algo`, ipvsadm's `-s`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SchedKind {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Sed,
    Nq,
    Sh,
    Dh,
    Mh,
    Fo,
}

impl SchedKind {
    pub const ALL: [SchedKind; 10] = [
        SchedKind::Rr,
        SchedKind::Wrr,
        SchedKind::Lc,
        SchedKind::Wlc,
        SchedKind::Sed,
        SchedKind::Nq,
        SchedKind::Sh,
        SchedKind::Dh,
        SchedKind::Mh,
        SchedKind::Fo,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            SchedKind::Rr => "rr",
            SchedKind::Wrr => "wrr",
            SchedKind::Lc => "lc",
            SchedKind::Wlc => "wlc",
            SchedKind::Sed => "sed",
            SchedKind::Nq => "nq",
            SchedKind::Sh => "sh",
            SchedKind::Dh => "dh",
            SchedKind::Mh => "mh",
            SchedKind::Fo => "fo",
        }
    }
}
impl FromStr for SchedKind {
    type Err = String;
    fn from_str(s: &str) -> Result<SchedKind, String> {
        SchedKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown scheduler '{s}' (one of rr, wrr, lc, wlc, sed, nq, sh, dh, mh, fo)"))
    }
}

/// A real server as the data plane sees it in one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    /// Stable identity across snapshots: index into [`DestCounters`]; a connection records it.
    pub id: u32,
    pub addr: Addr,
    pub port: u16,
    /// 0 drains the server: no new connections, existing ones continue.
    pub weight: u32,
}

/// Active and inactive connection counts of one real server, shared by all workers.
///
/// IPVS counts established TCP connections as active and every other connection as inactive;
/// lc, wlc, sed and nq schedule on these. Updated once per connection state change, never per packet.
#[derive(Default, Debug)]
pub struct DestCounter {
    pub active: AtomicU32,
    pub inactive: AtomicU32,
}

impl DestCounter {
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }
    pub fn inactive(&self) -> u32 {
        self.inactive.load(Ordering::Relaxed)
    }
}

/// Fixed arena of per-real-server counters, indexed by [`Dest::id`].
#[derive(Debug)]
pub struct DestCounters {
    slots: Box<[DestCounter]>,
}

impl DestCounters {
    /// Most real servers (over all services) a director can know in one process lifetime.
    pub const CAPACITY: usize = 65536;

    pub fn new(capacity: usize) -> DestCounters {
        DestCounters {
            slots: (0..capacity).map(|_| DestCounter::default()).collect(),
        }
    }
    /// The counter of `id`; ids past the capacity share a dummy slot rather than panic.
    pub fn get(&self, id: u32) -> &DestCounter {
        let last = self.slots.len() - 1;
        &self.slots[(id as usize).min(last)]
    }
}

impl Default for DestCounters {
    fn default() -> Self {
        DestCounters::new(DestCounters::CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_v4_mapped_and_masked() {
        let a = Addr::from("198.18.1.77".parse::<IpAddr>().unwrap());
        assert!(a.is_v4());
        assert_eq!(a.to_string(), "198.18.1.77");
        assert_eq!(a.masked(24).to_string(), "198.18.1.0");
        assert_eq!(a.masked(0).to_string(), "0.0.0.0");
        assert_eq!(a.masked(32), a);
        let b = Addr::from("2001:2::1:ff".parse::<IpAddr>().unwrap());
        assert!(!b.is_v4());
        assert_eq!(b.masked(64).to_string(), "2001:2::");
        assert_eq!(b.masked(124).to_string(), "2001:2::1:f0");
    }

    #[test]
    fn prefix_contains() {
        let p: Prefix = "198.18.2.1/24".parse().unwrap();
        assert!(p.contains("198.18.2.200".parse().unwrap()));
        assert!(!p.contains("198.18.3.1".parse().unwrap()));
        assert!(!p.contains("2001:2::1".parse().unwrap()));
        assert!("198.18.2.1/33".parse::<Prefix>().is_err());
    }

    #[test]
    fn mac_parse() {
        assert_eq!("02:00:00:00:01:0a".parse::<Mac>().unwrap(), Mac([2, 0, 0, 0, 1, 10]));
        assert!("02:00:00:00:01".parse::<Mac>().is_err());
        assert!("02:00:00:00:01:0g".parse::<Mac>().is_err());
    }
}

/// Connection timeouts per LVS state (ipvsadm `--set`, IPVS `tcp_timeouts`), defaults as IPVS's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: std::time::Duration,
    pub tcp_syn_sent: std::time::Duration,
    pub tcp_syn_recv: std::time::Duration,
    pub tcp_fin_wait: std::time::Duration,
    pub tcp_time_wait: std::time::Duration,
    pub tcp_close: std::time::Duration,
    pub tcp_close_wait: std::time::Duration,
    pub tcp_last_ack: std::time::Duration,
    pub tcp_listen: std::time::Duration,
    pub tcp_synack: std::time::Duration,
    pub udp: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        use std::time::Duration;
        let s = Duration::from_secs;
        Timeouts {
            tcp_established: s(15 * 60),
            tcp_syn_sent: s(2 * 60),
            tcp_syn_recv: s(60),
            tcp_fin_wait: s(2 * 60),
            tcp_time_wait: s(2 * 60),
            tcp_close: s(10),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_listen: s(2 * 60),
            tcp_synack: s(2 * 60),
            udp: s(5 * 60),
        }
    }
}

/// Scheduler options (ipvsadm `-b`, keepalived's `sh-port`, `sh-fallback`, `mh-port`, `mh-fallback`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedOpts {
    /// sh/mh: when the hashed real server is unavailable, try the next one instead of failing.
    pub fallback: bool,
    /// sh/mh: hash the client's port as well as its address.
    pub port: bool,
    /// mh: lookup table size, a prime.
    pub mh_table_size: u32,
}

impl Default for SchedOpts {
    fn default() -> Self {
        SchedOpts {
            fallback: false,
            port: false,
            mh_table_size: 65537,
        }
    }
}
