//! IP-in-IP tunnelling (`ip_vs_tunnel_xmit`, `ip_vs_tunnel_xmit_v6`): the whole packet is wrapped
//! in an outer header of its own family from the director (DIP) to the real server, IPv4 in IPv4
//! (protocol 4) or IPv6 in IPv6 (next header 41). Replies bypass the director.
//!
//! The outer header is written into the frame's headroom, so the packet is never copied. A packet
//! that would no longer fit the egress MTU is refused, as IPVS does: the client gets ICMP
//! "fragmentation needed" for an IPv4 packet with DF set (RFC 1191) and ICMPv6 "packet too big"
//! for any IPv6 one (RFC 8201), with the MTU that fits; an IPv4 packet without DF is dropped
//! (xvs does not fragment the outer packet).

use crate::pipeline::Frame;
use crate::service::Hop;
use crate::stats::DropReason;
use crate::types::{Addr, Mac};
use crate::wire::{EthernetRepr, Ipv4Repr, Ipv6Repr, checksum, ethertype, icmpv4, icmpv6, ip_proto, ipv4, ipv6};

/// Bytes the outer IPv4 header adds.
pub const OVERHEAD: usize = 20;
/// Bytes the outer IPv6 header adds.
pub const OVERHEAD_V6: usize = 40;

/// Why a packet could not be encapsulated.
#[derive(Debug, PartialEq, Eq)]
pub enum TunError {
    /// Too big for the egress MTU once wrapped (IPv4 with DF set, or IPv6): answer with
    /// [`too_big`], this MTU.
    FragNeeded(u16),
    Drop(DropReason),
}

/// Wraps the IP packet at `frame[l3..end]` (frame-relative offsets; the family of `rip`) for
/// `rip`, sent from `dip`.
pub fn encapsulate(
    frame: &mut Frame<'_>,
    l3: usize,
    end: usize,
    dip: Addr,
    rip: Addr,
    mtu: u16,
    hop: &Hop,
) -> Result<(), TunError> {
    let v4 = rip.is_v4();
    let overhead = if v4 { OVERHEAD } else { OVERHEAD_V6 };
    let inner_len = end - l3;
    // Hop limit and traffic class are copied from the inner header, as is DF for IPv4; an IPv6
    // packet is never fragmented on the way.
    let (ttl, df, tos) = if v4 {
        let ip = ipv4::Packet::new_unchecked(&frame.bytes()[l3..end]);
        (ip.ttl(), ip.dont_frag(), ip.dscp_ecn())
    } else {
        let ip = ipv6::Packet::new_unchecked(&frame.bytes()[l3..end]);
        (ip.hop_limit(), true, ip.traffic_class())
    };
    if inner_len + overhead > usize::from(mtu) {
        return Err(if df {
            TunError::FragNeeded(mtu.saturating_sub(overhead as u16))
        } else {
            TunError::Drop(DropReason::TooBig)
        });
    }
    // The new Ethernet header sits `overhead` bytes before the old one (any VLAN tag is dropped:
    // the pipeline only serves untagged frames), the outer header right before the inner packet.
    let inner_at = frame.start + l3;
    let Some(eth_at) = inner_at.checked_sub(overhead + 14) else {
        // No headroom to write the outer header into.
        return Err(TunError::Drop(DropReason::TooBig));
    };
    let eth = EthernetRepr {
        src: hop.src,
        dst: hop.dst,
        ethertype: if v4 { ethertype::IPV4 } else { ethertype::IPV6 },
        vlan: None,
    };
    eth.emit(&mut frame.buf[eth_at..eth_at + 14]);
    let outer = &mut frame.buf[eth_at + 14..inner_at];
    if v4 {
        Ipv4Repr {
            src: dip.to_ip4(),
            dst: rip.to_ip4(),
            protocol: ip_proto::IPIP,
            ttl,
            payload_len: inner_len,
            dont_frag: df,
            ident: 0,
            dscp_ecn: tos,
        }
        .emit(outer);
    } else {
        Ipv6Repr {
            src: dip.to_ip6(),
            dst: rip.to_ip6(),
            next_header: ip_proto::IPV6,
            hop_limit: ttl,
            payload_len: inner_len,
        }
        .emit(outer);
        ipv6::Packet::new_unchecked(outer).set_traffic_class(tos);
    }
    frame.start = eth_at;
    frame.len = 14 + overhead + inner_len;
    Ok(())
}

/// Turns the frame into the answer to a packet too big for the tunnel, for the sender of the IP
/// packet at `frame[l3..end]` (`from`'s family is the packet's), sent from `from` with MTU `mtu`:
/// ICMP "fragmentation needed" (type 3, code 4) quoting as much as fits in 576 bytes (RFC 1812
/// 4.3.2.3), or ICMPv6 "packet too big" (type 2) quoting as much as fits in the minimum MTU, 1280
/// (RFC 4443 2.4). The frame goes back out of the port it came in on.
pub fn too_big(frame: &mut Frame<'_>, l3: usize, end: usize, from: Addr, our_mac: Mac, mtu: u16) {
    let v4 = from.is_v4();
    let (ip_len, limit) = if v4 { (20, 576) } else { (40, 1280) };
    let msg_at = 14 + ip_len;
    let start = frame.start;
    // The answer is written over the frame; the buffer bounds what it can quote.
    let room = frame.buf.len().saturating_sub(start + msg_at + 8);
    let qlen = (end - l3).min(limit - ip_len - 8).min(room);
    let (client, client_mac) = {
        let b = frame.bytes();
        let client = if v4 {
            Addr::from(ipv4::Packet::new_unchecked(&b[l3..end]).src_addr())
        } else {
            Addr::from(ipv6::Packet::new_unchecked(&b[l3..end]).src_addr())
        };
        (client, crate::wire::ethernet::Frame::new_unchecked(b).src_addr())
    };
    // The quote moves forward, over itself: a memmove.
    frame.buf.copy_within(start + l3..start + l3 + qlen, start + msg_at + 8);
    let buf = &mut frame.buf[start..];
    EthernetRepr {
        src: our_mac,
        dst: client_mac,
        ethertype: if v4 { ethertype::IPV4 } else { ethertype::IPV6 },
        vlan: None,
    }
    .emit(&mut buf[..14]);
    let len = 8 + qlen;
    let msg_end = msg_at + len;
    buf[msg_at..msg_at + 8].fill(0);
    if v4 {
        Ipv4Repr {
            src: from.to_ip4(),
            dst: client.to_ip4(),
            protocol: ip_proto::ICMP,
            ttl: 64,
            payload_len: len,
            dont_frag: false,
            ident: 0,
            dscp_ecn: 0,
        }
        .emit(&mut buf[14..msg_at]);
        let mut icmp = icmpv4::Packet::new_unchecked(&mut buf[msg_at..msg_end]);
        icmp.set_msg_type(icmpv4::DEST_UNREACH);
        icmp.set_code(icmpv4::FRAG_NEEDED);
        icmp.set_next_hop_mtu(mtu);
        icmp.fill_checksum();
    } else {
        Ipv6Repr {
            src: from.to_ip6(),
            dst: client.to_ip6(),
            next_header: ip_proto::ICMPV6,
            hop_limit: 64,
            payload_len: len,
        }
        .emit(&mut buf[14..msg_at]);
        let mut icmp = icmpv6::Packet::new_unchecked(&mut buf[msg_at..msg_end]);
        icmp.set_msg_type(icmpv6::PACKET_TOO_BIG);
        icmp.set_code(0);
        icmp.set_mtu(u32::from(mtu));
        icmp.fill_checksum(checksum::pseudo_v6(
            from.to_ip6(),
            client.to_ip6(),
            ip_proto::ICMPV6,
            len as u32,
        ));
    }
    frame.len = msg_end;
}
