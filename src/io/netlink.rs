//! Next hops from the kernel: links, addresses, routes (main table) and neighbours, read with
//! rtnetlink dumps over a raw `NETLINK_ROUTE` socket (small, synchronous, no async runtime).
//!
//! The parsers take the bytes of a dump and never panic: a truncated or odd message is skipped.
//! The lead turns the plain structs into the data plane's snapshot.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::IoError;
use crate::types::{Mac, Prefix};

/// A network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// None for links without an Ethernet address (lo has all zeros, kept as such).
    pub mac: Option<Mac>,
    pub mtu: u32,
    /// IFF_UP.
    pub up: bool,
    /// Number of receive queues (IFLA_NUM_RX_QUEUES; 1 when not reported).
    pub rx_queues: u32,
}

/// An address configured on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// A unicast route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination prefix (0.0.0.0/0 or ::/0 for a default route).
    pub dst: Prefix,
    /// Next hop; None for a directly connected prefix.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
}

/// A neighbour (ARP or NDP) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighEntry {
    pub ifindex: u32,
    pub addr: IpAddr,
    /// None while the kernel is still resolving (INCOMPLETE) or after a failure.
    pub mac: Option<Mac>,
    /// NUD state bits (`NUD_REACHABLE` 0x02, `NUD_STALE` 0x04, `NUD_PERMANENT` 0x80, ...).
    pub state: u16,
}

/// NUD state: entry resolved and usable (reachable, stale, delay, probe, permanent, noarp).
pub const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The route attributes `(type, payload)` in `b`.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let ty = u16_at(b, 2)? & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some((ty, payload))
    })
}

/// The netlink messages `(type, body)` in one received buffer.
fn messages(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u32_at(b, 0)? as usize;
        let ty = u16_at(b, 4)?;
        if len < NLMSG_HDR || len > b.len() {
            return None;
        }
        let body = &b[NLMSG_HDR..len];
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some((ty, body))
    })
}

fn ip(family: u8, b: &[u8]) -> Option<IpAddr> {
    match (i32::from(family), b.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        (libc::AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn mac(b: &[u8]) -> Option<Mac> {
    Some(Mac(b.try_into().ok()?))
}

/// Parses an RTM_NEWLINK body.
pub fn parse_link(b: &[u8]) -> Option<Link> {
    let ifindex = u32_at(b, 4)?;
    let flags = u32_at(b, 8)?;
    let mut l = Link {
        ifindex,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: flags & libc::IFF_UP as u32 != 0,
        rx_queues: 1,
    };
    for (ty, p) in attrs(b.get(16..)?) {
        match ty {
            1 => l.mac = mac(p),
            3 => l.name = String::from_utf8_lossy(p.split(|&c| c == 0).next().unwrap_or(&[])).into_owned(),
            4 => l.mtu = u32_at(p, 0).unwrap_or(0),
            32 => l.rx_queues = u32_at(p, 0).unwrap_or(1).max(1),
            _ => {}
        }
    }
    Some(l)
}

/// Parses an RTM_NEWADDR body (IFA_LOCAL preferred over IFA_ADDRESS, which is the peer on point-to-point links).
pub fn parse_addr(b: &[u8]) -> Option<IfAddr> {
    let family = *b.first()?;
    let prefix_len = *b.get(1)?;
    let ifindex = u32_at(b, 4)?;
    let (mut address, mut local) = (None, None);
    for (ty, p) in attrs(b.get(8..)?) {
        match ty {
            1 => address = ip(family, p),
            2 => local = ip(family, p),
            _ => {}
        }
    }
    Some(IfAddr {
        ifindex,
        addr: local.or(address)?,
        prefix_len,
    })
}

/// Parses an RTM_NEWROUTE body; None for other tables and non-unicast routes.
pub fn parse_route(b: &[u8]) -> Option<RouteEntry> {
    let family = *b.first()?;
    let dst_len = *b.get(1)?;
    let mut table = u32::from(*b.get(4)?);
    if *b.get(7)? != RTN_UNICAST {
        return None;
    }
    let (mut dst, mut gateway, mut oif) = (None, None, None);
    for (ty, p) in attrs(b.get(12..)?) {
        match ty {
            1 => dst = ip(family, p),
            4 => oif = u32_at(p, 0),
            5 => gateway = ip(family, p),
            15 => table = u32_at(p, 0).unwrap_or(table),
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN {
        return None;
    }
    let dst = dst.or(match i32::from(family) {
        libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        _ => None,
    })?;
    Some(RouteEntry {
        dst: Prefix {
            addr: dst,
            len: dst_len,
        },
        gateway,
        oif,
    })
}

/// Parses an RTM_NEWNEIGH body.
pub fn parse_neigh(b: &[u8]) -> Option<NeighEntry> {
    let family = *b.first()?;
    let ifindex = u32_at(b, 4)?;
    let state = u16_at(b, 8)?;
    let (mut addr, mut lladdr) = (None, None);
    for (ty, p) in attrs(b.get(12..)?) {
        match ty {
            1 => addr = ip(family, p),
            2 => lladdr = mac(p),
            _ => {}
        }
    }
    Some(NeighEntry {
        ifindex,
        addr: addr?,
        mac: lladdr,
        state,
    })
}

/// A `NETLINK_ROUTE` socket for dumps, in the network namespace of the calling thread.
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

impl Rtnl {
    /// Opens the socket.
    pub fn open() -> Result<Rtnl, IoError> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(IoError::sys("netlink socket"));
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
        // SAFETY: `tv` is a valid timeval of the size passed.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(Rtnl { fd, seq: 1 })
    }

    /// Sends a dump request of `ty` with the family-specific header `hdr`; returns the bodies of
    /// the `want` messages.
    fn dump(&mut self, ty: u16, want: u16, hdr: &[u8]) -> Result<Vec<Vec<u8>>, IoError> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDR + hdr.len();
        let mut req = Vec::with_capacity(len);
        req.extend_from_slice(&(len as u32).to_ne_bytes());
        req.extend_from_slice(&ty.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&self.seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(hdr);
        // SAFETY: `req` is a live buffer of the length passed; the kernel is the default destination.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(IoError::sys("netlink send"));
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(IoError::sys("netlink recv"));
            }
            for (mty, body) in messages(&buf[..n as usize]) {
                match mty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = u32_at(body, 0).map(|e| e as i32).unwrap_or(0);
                        if errno != 0 {
                            return Err(IoError::Sys {
                                what: "netlink dump".into(),
                                err: std::io::Error::from_raw_os_error(-errno),
                            });
                        }
                        return Ok(out);
                    }
                    t if t == want => out.push(body.to_vec()),
                    _ => {}
                }
            }
        }
    }

    /// All links.
    pub fn links(&mut self) -> Result<Vec<Link>, IoError> {
        let hdr = [0u8; 16];
        Ok(self
            .dump(RTM_GETLINK, RTM_NEWLINK, &hdr)?
            .iter()
            .filter_map(|b| parse_link(b))
            .collect())
    }

    /// All IPv4 and IPv6 addresses.
    pub fn addrs(&mut self) -> Result<Vec<IfAddr>, IoError> {
        let hdr = [0u8; 8];
        Ok(self
            .dump(RTM_GETADDR, RTM_NEWADDR, &hdr)?
            .iter()
            .filter_map(|b| parse_addr(b))
            .collect())
    }

    /// IPv4 and IPv6 unicast routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<RouteEntry>, IoError> {
        let mut out = Vec::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            let mut hdr = [0u8; 12];
            hdr[0] = family as u8;
            out.extend(
                self.dump(RTM_GETROUTE, RTM_NEWROUTE, &hdr)?
                    .iter()
                    .filter_map(|b| parse_route(b)),
            );
        }
        Ok(out)
    }

    /// IPv4 and IPv6 neighbours.
    pub fn neighbours(&mut self) -> Result<Vec<NeighEntry>, IoError> {
        let hdr = [0u8; 12];
        Ok(self
            .dump(RTM_GETNEIGH, RTM_NEWNEIGH, &hdr)?
            .iter()
            .filter_map(|b| parse_neigh(b))
            .collect())
    }
}

const RTM_DELADDR: u16 = 21;
const NLM_F_ACK: u16 = 4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const IFA_F_NODAD: u8 = 0x02;

impl Rtnl {
    /// Sends one request and waits for its acknowledgement; the kernel's errno on failure.
    fn request(&mut self, ty: u16, flags: u16, body: &[u8]) -> Result<(), std::io::Error> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDR + body.len();
        let mut req = Vec::with_capacity(len);
        req.extend_from_slice(&(len as u32).to_ne_bytes());
        req.extend_from_slice(&ty.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        req.extend_from_slice(&self.seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(body);
        // SAFETY: `req` is a live buffer of the length passed; the kernel is the default destination.
        if unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 8192];
        // Bounded: SO_RCVTIMEO (2 s) ends each recv; stale answers of older requests are skipped.
        for _ in 0..16 {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let b = &buf[..n as usize];
            let seq_ok = u32_at(b, 8) == Some(self.seq);
            for (mty, body) in messages(b) {
                if mty == NLMSG_ERROR && seq_ok {
                    let errno = u32_at(body, 0).map(|e| e as i32).unwrap_or(0);
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::from_raw_os_error(-errno))
                    };
                }
            }
        }
        Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
    }

    fn addr_body(ifindex: u32, p: Prefix) -> Vec<u8> {
        let (family, bytes, flags) = match p.addr {
            IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec(), 0),
            // No duplicate address detection: a VIP must answer at once, as keepalived does it.
            IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec(), IFA_F_NODAD),
        };
        let mut b = vec![family, p.len, flags, 0];
        b.extend_from_slice(&ifindex.to_ne_bytes());
        for ty in [2u16, 1] {
            b.extend_from_slice(&((4 + bytes.len()) as u16).to_ne_bytes());
            b.extend_from_slice(&ty.to_ne_bytes());
            b.extend_from_slice(&bytes);
        }
        b
    }

    /// Adds (or refreshes) address `p` on interface `ifindex`; an IPv6 one skips DAD.
    pub fn addr_add(&mut self, ifindex: u32, p: Prefix) -> Result<(), IoError> {
        let body = Self::addr_body(ifindex, p);
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &body)
            .map_err(|err| IoError::Sys {
                what: format!("add address {p} on ifindex {ifindex}"),
                err,
            })
    }

    /// Removes address `p` from interface `ifindex`; absent already is success.
    pub fn addr_del(&mut self, ifindex: u32, p: Prefix) -> Result<(), IoError> {
        let body = Self::addr_body(ifindex, p);
        match self.request(RTM_DELADDR, 0, &body) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) || e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            r => r.map_err(|err| IoError::Sys {
                what: format!("remove address {p} from ifindex {ifindex}"),
                err,
            }),
        }
    }
}

const RTM_DELLINK: u16 = 17;
const NLM_F_EXCL: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_MACVLAN_MODE: u16 = 1;
/// `MACVLAN_MODE_PRIVATE`: no traffic between macvlans of one lower device (keepalived's choice).
pub const MACVLAN_MODE_PRIVATE: u32 = 1;

fn put_attr(b: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    b.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(payload);
    b.resize(align4(b.len()), 0);
}

/// The RTM_NEWLINK body that creates macvlan `name` on `parent` with address `mac`, mode `mode`, up.
fn macvlan_body(name: &str, parent: u32, mac: Mac, mode: u32) -> Vec<u8> {
    let up = libc::IFF_UP as u32;
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&up.to_ne_bytes());
    b.extend_from_slice(&up.to_ne_bytes());
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    put_attr(&mut b, IFLA_IFNAME, &n);
    put_attr(&mut b, IFLA_LINK, &parent.to_ne_bytes());
    put_attr(&mut b, IFLA_ADDRESS, &mac.0);
    let mut data = Vec::new();
    put_attr(&mut data, IFLA_MACVLAN_MODE, &mode.to_ne_bytes());
    let mut info = Vec::new();
    put_attr(&mut info, IFLA_INFO_KIND, b"macvlan\0");
    put_attr(&mut info, IFLA_INFO_DATA | NLA_F_NESTED, &data);
    put_attr(&mut b, IFLA_LINKINFO | NLA_F_NESTED, &info);
    b
}

impl Rtnl {
    /// Creates macvlan interface `name` on `parent` with address `mac` and `mode`, up; fails with
    /// EEXIST when a link of that name exists.
    pub fn macvlan_add(&mut self, name: &str, parent: u32, mac: Mac, mode: u32) -> Result<(), IoError> {
        let body = macvlan_body(name, parent, mac, mode);
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &body)
            .map_err(|err| IoError::Sys {
                what: format!("create macvlan {name} on ifindex {parent}"),
                err,
            })
    }

    /// Removes link `ifindex`; absent already is success.
    pub fn link_del(&mut self, ifindex: u32) -> Result<(), IoError> {
        let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend_from_slice(&[0u8; 8]);
        match self.request(RTM_DELLINK, 0, &b) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            r => r.map_err(|err| IoError::Sys {
                what: format!("remove link ifindex {ifindex}"),
                err,
            }),
        }
    }
}

/// Makes the kernel resolve `addr`'s MAC address: sends one empty UDP datagram to its discard
/// port (9) through a connected socket, which makes the kernel send ARP or a neighbour
/// solicitation; the answer appears in [`Rtnl::neighbours`]. The datagram itself is harmless.
pub fn resolve(addr: IpAddr) -> Result<(), IoError> {
    let bind: SocketAddr = match addr {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(bind).map_err(|err| IoError::Sys {
        what: "resolve: bind".into(),
        err,
    })?;
    s.connect((addr, 9)).map_err(|err| IoError::Sys {
        what: format!("resolve {addr}: connect"),
        err,
    })?;
    // EAGAIN or an ICMP error later are fine: the solicitation has gone out.
    let _ = s.send(&[]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + p.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(p);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn route_with_gateway_and_table_attribute() {
        let mut b = vec![libc::AF_INET as u8, 24, 0, 0, 254, 3, 0, RTN_UNICAST, 0, 0, 0, 0];
        b.extend(attr(1, &[198, 18, 2, 0]));
        b.extend(attr(5, &[198, 18, 1, 254]));
        b.extend(attr(4, &7u32.to_ne_bytes()));
        let r = parse_route(&b).unwrap();
        assert_eq!(r.dst, "198.18.2.0/24".parse().unwrap());
        assert_eq!(r.gateway, Some("198.18.1.254".parse().unwrap()));
        assert_eq!(r.oif, Some(7));
        // Another table via RTA_TABLE: not ours.
        b.extend(attr(15, &255u32.to_ne_bytes()));
        assert_eq!(parse_route(&b), None);
    }

    #[test]
    fn default_route_has_no_dst_attribute() {
        let mut b = vec![libc::AF_INET6 as u8, 0, 0, 0, 254, 3, 0, RTN_UNICAST, 0, 0, 0, 0];
        b.extend(attr(5, &"2001:2::1".parse::<Ipv6Addr>().unwrap().octets()));
        let r = parse_route(&b).unwrap();
        assert_eq!(r.dst, "::/0".parse().unwrap());
    }

    #[test]
    fn macvlan_request_layout() {
        let b = macvlan_body("vrrp.53", 7, Mac([0, 0, 0x5e, 0, 1, 0x35]), MACVLAN_MODE_PRIVATE);
        assert_eq!(u32_at(&b, 8), Some(libc::IFF_UP as u32));
        let a: Vec<(u16, &[u8])> = attrs(&b[16..]).collect();
        assert_eq!(a[0], (IFLA_IFNAME, &b"vrrp.53\0"[..]));
        assert_eq!(a[1], (IFLA_LINK, &7u32.to_ne_bytes()[..]));
        assert_eq!(a[2], (IFLA_ADDRESS, &[0, 0, 0x5e, 0, 1, 0x35][..]));
        assert_eq!(a[3].0, IFLA_LINKINFO);
        let info: Vec<(u16, &[u8])> = attrs(a[3].1).collect();
        assert_eq!(info[0], (IFLA_INFO_KIND, &b"macvlan\0"[..]));
        let data: Vec<(u16, &[u8])> = attrs(info[1].1).collect();
        assert_eq!(data, vec![(IFLA_MACVLAN_MODE, &1u32.to_ne_bytes()[..])]);
    }

    #[test]
    fn neigh_and_truncated_input() {
        let mut b = vec![libc::AF_INET as u8, 0, 0, 0];
        b.extend(3u32.to_ne_bytes());
        b.extend(0x80u16.to_ne_bytes());
        b.extend([0, 1]);
        b.extend(attr(1, &[198, 18, 2, 11]));
        b.extend(attr(2, &[2, 0, 0, 0, 2, 0x0b]));
        let n = parse_neigh(&b).unwrap();
        assert_eq!(n.addr, "198.18.2.11".parse::<IpAddr>().unwrap());
        assert_eq!(n.mac, Some(Mac([2, 0, 0, 0, 2, 0x0b])));
        assert_eq!((n.ifindex, n.state), (3, 0x80));
        // Every prefix of the message parses to something or nothing, never panics.
        for i in 0..b.len() {
            let _ = parse_neigh(&b[..i]);
            let _ = parse_route(&b[..i]);
            let _ = parse_link(&b[..i]);
            let _ = parse_addr(&b[..i]);
        }
        // An attribute claiming more bytes than there are ends the walk.
        let bad = [8u8, 0, 1, 0, 198];
        assert_eq!(attrs(&bad).count(), 0);
    }
}
