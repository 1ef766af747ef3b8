//! Packet rewrites, one module per LVS forwarding method (as IPVS's `ip_vs_xmit.c` divides them),
//! plus the translation of ICMP errors that quote a connection's packet.
//!
//! Every function here works on a frame that the pipeline has already validated and parsed into a
//! [`Parsed`]: offsets are known to be in bounds, so the views are built with `new_unchecked`.

pub mod dr;
pub mod fullnat;
pub mod icmp;
pub mod nat;
pub mod tun;

use crate::service::Hop;
use crate::types::Addr;
use crate::wire::{checksum, ethernet, ip_proto, ipv4, ipv6, tcp, udp};

/// What the pipeline learnt about a TCP or UDP packet while validating it. Offsets are from the
/// start of the frame (32 bits: a smaller `Parsed` is cheaper to move, and a packet ends within
/// 64 KiB of its frame's start).
#[derive(Clone, Copy, Debug)]
pub struct Parsed {
    pub l3: u32,
    pub l4: u32,
    /// End of the IP packet (Ethernet padding excluded).
    pub end: u32,
    pub v6: bool,
    pub proto: u8,
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// TTL or hop limit as received.
    pub ttl: u8,
    /// A fragment after the first of its datagram: it has no transport header (the ports are its
    /// first fragment's), and only its IP header is rewritten.
    pub later_fragment: bool,
}

/// Sets the Ethernet addresses for the next hop.
#[inline]
pub fn set_l2(frame: &mut [u8], hop: &Hop) {
    let mut eth = ethernet::Frame::new_unchecked(frame);
    eth.set_dst_addr(hop.dst);
    eth.set_src_addr(hop.src);
}

/// Rewrites the source and/or destination endpoint of a TCP or UDP packet, decrementing the TTL
/// (the caller has checked it is > 1) and updating checksums incrementally (RFC 1624). A later
/// fragment has its addresses rewritten only: the transport header and its checksum, which covers
/// the whole datagram, are in the first fragment.
///
/// Every changed word goes into one ones-complement delta (`~old + new`, eqn. 3): the address
/// part is shared by the IPv4 header checksum and the L4 checksum (whose pseudo header covers
/// the addresses), the ports are added for L4 only, the TTL for the header only; each checksum is
/// folded once.
#[inline(always)]
pub fn rewrite(frame: &mut [u8], p: &Parsed, src: Option<(Addr, u16)>, dst: Option<(Addr, u16)>) {
    let mut addrs = 0u32;
    let mut ports = 0u32;
    if let Some((a, port)) = src {
        addrs += addr_delta(&p.src, &a, p.v6);
        ports += u32::from(!p.sport) + u32::from(port);
    }
    if let Some((a, port)) = dst {
        addrs += addr_delta(&p.dst, &a, p.v6);
        ports += u32::from(!p.dport) + u32::from(port);
    }
    let (l3, seg) = frame[..p.end as usize].split_at_mut(p.l4 as usize);
    let l3 = &mut l3[p.l3 as usize..];
    if p.v6 {
        let mut ip = ipv6::Packet::new_unchecked(l3);
        if let Some((a, _)) = src {
            ip.set_src_addr(a.to_ip6());
        }
        if let Some((a, _)) = dst {
            ip.set_dst_addr(a.to_ip6());
        }
        ip.set_hop_limit(p.ttl - 1);
    } else {
        let mut ip = ipv4::Packet::new_unchecked(l3);
        // TTL shares a word with the protocol: the word goes down by 0x0100.
        let ttl = u32::from(!(u16::from(p.ttl) << 8)) + u32::from(u16::from(p.ttl - 1) << 8);
        ip.set_checksum(checksum::finish(u32::from(!ip.checksum()) + ttl + addrs));
        if let Some((a, _)) = src {
            ip.set_src_addr(a.to_ip4());
        }
        if let Some((a, _)) = dst {
            ip.set_dst_addr(a.to_ip4());
        }
        ip.set_ttl(p.ttl - 1);
    }
    if p.later_fragment {
        return;
    }
    let l4 = |old: u16| checksum::finish(u32::from(!old) + addrs + ports);
    if p.proto == ip_proto::TCP {
        let mut t = tcp::Packet::new_unchecked(seg);
        if let Some((_, port)) = src {
            t.set_src_port(port);
        }
        if let Some((_, port)) = dst {
            t.set_dst_port(port);
        }
        t.set_checksum(l4(t.checksum()));
    } else {
        let mut u = udp::Packet::new_unchecked(seg);
        if let Some((_, port)) = src {
            u.set_src_port(port);
        }
        if let Some((_, port)) = dst {
            u.set_dst_port(port);
        }
        // IPv4 UDP without a checksum stays without one; a computed 0 is sent as all ones.
        let old = u.checksum();
        u.set_checksum(match l4(old) {
            _ if old == 0 && !p.v6 => 0,
            0 => 0xffff,
            new => new,
        });
    }
}

/// `~old + new` summed over the 16-bit words of an address (4 bytes for IPv4, 16 for IPv6), not
/// folded: at most 16 words of 0xffff, far from overflowing a `u32`.
#[inline]
fn addr_delta(old: &Addr, new: &Addr, v6: bool) -> u32 {
    // ~w = 0xffff - w for every word of the old address; a folded sum is the same modulo 0xffff.
    if v6 {
        8 * 0xffff - checksum::sum(&old.0) + checksum::sum(&new.0)
    } else {
        let words = |a: &Addr| {
            let x = u32::from_be_bytes([a.0[12], a.0[13], a.0[14], a.0[15]]);
            (x >> 16) + (x & 0xffff)
        };
        2 * 0xffff - words(old) + words(new)
    }
}
