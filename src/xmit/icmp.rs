//! ICMP and ICMPv6 errors that quote a connection's packet (port unreachable, fragmentation needed /
//! packet too big, time exceeded, parameter problem) are translated like the connection they
//! belong to, as IPVS's `ip_vs_nat_icmp`/`ip_vs_in_icmp` do: the outer header and the quoted header
//! are both rewritten, so that each side sees an error about the packet it actually sent.

use crate::types::{Addr, Proto};
use crate::wire::{checksum, icmpv4, icmpv6, ip_proto, ipv4, ipv6};

/// The endpoints of the packet an ICMP error quotes, with where its headers sit in the frame.
#[derive(Clone, Copy, Debug)]
pub struct Quoted {
    pub proto: Proto,
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    /// Frame offset of the quoted IP header and its length.
    ip_at: usize,
    ihl: usize,
    /// Bytes of the quoted transport header present (at least 8).
    l4_avail: usize,
}

/// Whether an ICMPv4 type is an error that quotes a packet.
pub fn is_error_v4(t: u8) -> bool {
    matches!(t, icmpv4::DEST_UNREACH | icmpv4::TIME_EXCEEDED | icmpv4::PARAM_PROBLEM)
}

/// Whether an ICMPv6 type is an error that quotes a packet.
pub fn is_error_v6(t: u8) -> bool {
    matches!(
        t,
        icmpv6::DEST_UNREACH | icmpv6::PACKET_TOO_BIG | icmpv6::TIME_EXCEEDED | icmpv6::PARAM_PROBLEM
    )
}

/// Parses the packet quoted by an ICMP error whose message occupies `frame[icmp_at..end]`.
///
/// Quoted packets are truncated by design (their length fields describe the original), so the
/// checked views, which insist on whole packets, do not fit; the fields are read from fixed
/// offsets after checking that the bytes are there. Only TCP and UDP quotes are of interest.
pub fn parse_quote(frame: &[u8], icmp_at: usize, end: usize, v6: bool) -> Option<Quoted> {
    let ip_at = icmp_at + 8;
    let q = frame.get(ip_at..end)?;
    let (proto, src, dst, ihl) = if v6 {
        if q.len() < 40 || q[0] >> 4 != 6 {
            return None;
        }
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&q[8..24]);
        d.copy_from_slice(&q[24..40]);
        (q[6], Addr::from_v6(s), Addr::from_v6(d), 40)
    } else {
        if q.len() < 20 || q[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(q[0] & 0x0f) * 4;
        if ihl < 20 || q.len() < ihl {
            return None;
        }
        // A quoted non-first fragment has no transport header to translate.
        if u16::from_be_bytes([q[6], q[7]]) & 0x1fff != 0 {
            return None;
        }
        (
            q[9],
            Addr::from_v4([q[12], q[13], q[14], q[15]]),
            Addr::from_v4([q[16], q[17], q[18], q[19]]),
            ihl,
        )
    };
    let proto = Proto::from_number(proto)?;
    let l4 = q.get(ihl..)?;
    if l4.len() < 8 {
        return None;
    }
    Some(Quoted {
        proto,
        src,
        dst,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        ip_at,
        ihl,
        l4_avail: l4.len(),
    })
}

/// The outer packet carrying an ICMP error.
#[derive(Clone, Copy, Debug)]
pub struct Outer {
    pub l3: usize,
    pub icmp_at: usize,
    pub end: usize,
    pub v6: bool,
    pub src: Addr,
    pub dst: Addr,
    pub ttl: u8,
}

/// New values for the outer addresses and the quoted endpoints; `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Translation {
    pub outer_src: Option<Addr>,
    pub outer_dst: Option<Addr>,
    pub quoted_src: Option<(Addr, u16)>,
    pub quoted_dst: Option<(Addr, u16)>,
}

/// Applies a translation: quoted header and ports (with the quoted IPv4 header checksum and, where
/// quoted, the transport checksum), outer addresses, TTL decrement, and the ICMP checksum.
pub fn translate(frame: &mut [u8], o: &Outer, q: &Quoted, t: &Translation) {
    let v6 = o.v6;
    let alen = if v6 { 16 } else { 4 };
    let off = if v6 { 0 } else { 12 };
    let (qsrc_at, qdst_at) = if v6 {
        (q.ip_at + 8, q.ip_at + 24)
    } else {
        (q.ip_at + 12, q.ip_at + 16)
    };
    let l4_at = q.ip_at + q.ihl;
    // The quoted transport checksum covers the quoted addresses (pseudo header) and ports.
    let csum_at = match q.proto {
        Proto::Udp => Some(l4_at + 6),
        Proto::Tcp if q.l4_avail >= 18 => Some(l4_at + 16),
        Proto::Tcp => None,
    };
    let mut l4c = csum_at.map(|at| u16::from_be_bytes([frame[at], frame[at + 1]]));
    let udp_zero = q.proto == Proto::Udp && l4c == Some(0) && !v6;
    for (new, addr_at, port_at) in [(t.quoted_src, qsrc_at, l4_at), (t.quoted_dst, qdst_at, l4_at + 2)] {
        if let Some((a, port)) = new {
            let old_port = u16::from_be_bytes([frame[port_at], frame[port_at + 1]]);
            if let Some(c) = l4c.as_mut() {
                *c = checksum::update(*c, &frame[addr_at..addr_at + alen], &a.0[off..]);
                *c = checksum::update16(*c, old_port, port);
            }
            frame[addr_at..addr_at + alen].copy_from_slice(&a.0[off..]);
            frame[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
        }
    }
    if let (Some(at), Some(c)) = (csum_at, l4c) {
        let c = if udp_zero {
            0
        } else if c == 0 && q.proto == Proto::Udp {
            0xffff
        } else {
            c
        };
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    if !v6 {
        let mut qip = ipv4::Packet::new_unchecked(&mut frame[q.ip_at..q.ip_at + q.ihl]);
        qip.fill_checksum();
    }

    let src = t.outer_src.unwrap_or(o.src);
    let dst = t.outer_dst.unwrap_or(o.dst);
    if v6 {
        let mut ip = ipv6::Packet::new_unchecked(&mut frame[o.l3..o.end]);
        ip.set_src_addr(src.to_ip6());
        ip.set_dst_addr(dst.to_ip6());
        ip.set_hop_limit(o.ttl - 1);
        let len = (o.end - o.icmp_at) as u32;
        let mut icmp = icmpv6::Packet::new_unchecked(&mut frame[o.icmp_at..o.end]);
        icmp.fill_checksum(checksum::pseudo_v6(src.to_ip6(), dst.to_ip6(), ip_proto::ICMPV6, len));
    } else {
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[o.l3..o.end]);
        ip.set_src_addr(src.to_ip4());
        ip.set_dst_addr(dst.to_ip4());
        ip.set_ttl(o.ttl - 1);
        ip.fill_checksum();
        let mut icmp = icmpv4::Packet::new_unchecked(&mut frame[o.icmp_at..o.end]);
        icmp.fill_checksum();
    }
}
