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
/// start of the frame.
#[derive(Clone, Copy, Debug)]
pub struct Parsed {
    pub l3: usize,
    pub l4: usize,
    /// End of the IP packet (Ethernet padding excluded).
    pub end: usize,
    pub v6: bool,
    pub proto: u8,
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// TTL or hop limit as received.
    pub ttl: u8,
}

/// Sets the Ethernet addresses for the next hop.
#[inline]
pub fn set_l2(frame: &mut [u8], hop: &Hop) {
    let mut eth = ethernet::Frame::new_unchecked(frame);
    eth.set_dst_addr(hop.dst);
    eth.set_src_addr(hop.src);
}

/// Rewrites the source and/or destination endpoint of a TCP or UDP packet, decrementing the TTL
/// (the caller has checked it is > 1) and updating checksums incrementally (RFC 1624).
pub fn rewrite(frame: &mut [u8], p: &Parsed, src: Option<(Addr, u16)>, dst: Option<(Addr, u16)>) {
    // Fold every change into one delta for the L4 checksum: old words out, new words in.
    let mut l4_csum = l4_checksum(frame, p);
    let udp_zero = p.proto == ip_proto::UDP && l4_csum == 0 && !p.v6;
    if let Some((a, port)) = src {
        l4_csum = checksum::update(l4_csum, addr_bytes(&p.src, p.v6), addr_bytes(&a, p.v6));
        l4_csum = checksum::update16(l4_csum, p.sport, port);
    }
    if let Some((a, port)) = dst {
        l4_csum = checksum::update(l4_csum, addr_bytes(&p.dst, p.v6), addr_bytes(&a, p.v6));
        l4_csum = checksum::update16(l4_csum, p.dport, port);
    }
    if p.v6 {
        let mut ip = ipv6::Packet::new_unchecked(&mut frame[p.l3..p.end]);
        if let Some((a, _)) = src {
            ip.set_src_addr(a.to_ip6());
        }
        if let Some((a, _)) = dst {
            ip.set_dst_addr(a.to_ip6());
        }
        ip.set_hop_limit(p.ttl - 1);
    } else {
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[p.l3..p.end]);
        // The header checksum follows incrementally too: TTL shares a word with the protocol.
        let proto = u16::from(p.proto);
        let mut hc = checksum::update16(
            ip.checksum(),
            u16::from(p.ttl) << 8 | proto,
            u16::from(p.ttl - 1) << 8 | proto,
        );
        if let Some((a, _)) = src {
            hc = checksum::update(hc, addr_bytes(&p.src, false), addr_bytes(&a, false));
            ip.set_src_addr(a.to_ip4());
        }
        if let Some((a, _)) = dst {
            hc = checksum::update(hc, addr_bytes(&p.dst, false), addr_bytes(&a, false));
            ip.set_dst_addr(a.to_ip4());
        }
        ip.set_ttl(p.ttl - 1);
        ip.set_checksum(hc);
    }
    let seg = &mut frame[p.l4..p.end];
    if p.proto == ip_proto::TCP {
        let mut t = tcp::Packet::new_unchecked(seg);
        if let Some((_, port)) = src {
            t.set_src_port(port);
        }
        if let Some((_, port)) = dst {
            t.set_dst_port(port);
        }
        t.set_checksum(l4_csum);
    } else {
        let mut u = udp::Packet::new_unchecked(seg);
        if let Some((_, port)) = src {
            u.set_src_port(port);
        }
        if let Some((_, port)) = dst {
            u.set_dst_port(port);
        }
        // IPv4 UDP without a checksum stays without one; a computed 0 is sent as all ones.
        u.set_checksum(if udp_zero {
            0
        } else if l4_csum == 0 {
            0xffff
        } else {
            l4_csum
        });
    }
}

#[inline]
fn l4_checksum(frame: &[u8], p: &Parsed) -> u16 {
    let seg = &frame[p.l4..p.end];
    if p.proto == ip_proto::TCP {
        tcp::Packet::new_unchecked(seg).checksum()
    } else {
        udp::Packet::new_unchecked(seg).checksum()
    }
}

/// The address as it appears on the wire: 4 bytes for IPv4, 16 for IPv6.
#[inline]
pub fn addr_bytes(a: &Addr, v6: bool) -> &[u8] {
    if v6 { &a.0 } else { &a.0[12..] }
}
