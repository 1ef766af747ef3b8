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
use crate::types::Addr;
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

/// Turns the frame into the answer to a packet too big for the tunnel: ICMP "fragmentation
/// needed" for IPv4, ICMPv6 "packet too big" for IPv6 (`from`'s family is the packet's).
pub fn too_big(frame: &mut Frame<'_>, l3: usize, end: usize, from: Addr, our_mac: crate::types::Mac, mtu: u16) {
    if from.is_v4() {
        frag_needed(frame, l3, end, from, our_mac, mtu);
    } else {
        packet_too_big(frame, l3, end, from, our_mac, mtu);
    }
}

/// Turns the frame into an ICMP "fragmentation needed" (type 3, code 4) for the sender of the
/// IPv4 packet at `frame[l3..end]`, quoting its header and the first bytes of its payload, sent from
/// `from` with next-hop MTU `mtu`. The frame goes back out of the port it came in on.
fn frag_needed(frame: &mut Frame<'_>, l3: usize, end: usize, from: Addr, our_mac: crate::types::Mac, mtu: u16) {
    // RFC 1812 4.3.2.3: quote as much as fits in 576 bytes.
    const MAX_QUOTE: usize = 576 - 20 - 8;
    let mut quote = [0u8; MAX_QUOTE];
    // The answer is written over the frame; the buffer bounds what it can quote.
    let room = frame.buf.len().saturating_sub(frame.start + 34 + 8);
    let qlen = (end - l3).min(MAX_QUOTE).min(room);
    quote[..qlen].copy_from_slice(&frame.bytes()[l3..l3 + qlen]);
    let (client, client_mac) = {
        let b = frame.bytes();
        let ip = ipv4::Packet::new_unchecked(&b[l3..end]);
        let eth = crate::wire::ethernet::Frame::new_unchecked(b);
        (ip.src_addr(), eth.src_addr())
    };
    let start = frame.start;
    let buf = &mut frame.buf[start..];
    EthernetRepr {
        src: our_mac,
        dst: client_mac,
        ethertype: ethertype::IPV4,
        vlan: None,
    }
    .emit(&mut buf[..14]);
    let ip = Ipv4Repr {
        src: from.to_ip4(),
        dst: client,
        protocol: ip_proto::ICMP,
        ttl: 64,
        payload_len: 8 + qlen,
        dont_frag: false,
        ident: 0,
        dscp_ecn: 0,
    };
    ip.emit(&mut buf[14..34]);
    let msg = &mut buf[34..34 + 8 + qlen];
    msg[..8].fill(0);
    msg[8..].copy_from_slice(&quote[..qlen]);
    let mut icmp = icmpv4::Packet::new_unchecked(msg);
    icmp.set_msg_type(icmpv4::DEST_UNREACH);
    icmp.set_code(icmpv4::FRAG_NEEDED);
    icmp.set_next_hop_mtu(mtu);
    icmp.fill_checksum();
    frame.len = 34 + 8 + qlen;
}

/// Turns the frame into an ICMPv6 "packet too big" (type 2) for the sender of the IPv6 packet at
/// `frame[l3..end]`, quoting as much of it as fits in the minimum MTU (RFC 4443 2.4), sent from
/// `from` with MTU `mtu`. The frame goes back out of the port it came in on.
fn packet_too_big(frame: &mut Frame<'_>, l3: usize, end: usize, from: Addr, our_mac: crate::types::Mac, mtu: u16) {
    const MIN_MTU: usize = 1280;
    const MAX_QUOTE: usize = MIN_MTU - 40 - 8;
    let start = frame.start;
    // The answer is written over the frame; the buffer bounds what it can quote.
    let room = frame.buf.len().saturating_sub(start + 14 + 40 + 8);
    let qlen = (end - l3).min(MAX_QUOTE).min(room);
    let mut quote = [0u8; MAX_QUOTE];
    quote[..qlen].copy_from_slice(&frame.bytes()[l3..l3 + qlen]);
    let (client, client_mac) = {
        let b = frame.bytes();
        let ip = ipv6::Packet::new_unchecked(&b[l3..end]);
        let eth = crate::wire::ethernet::Frame::new_unchecked(b);
        (ip.src_addr(), eth.src_addr())
    };
    let buf = &mut frame.buf[start..];
    EthernetRepr {
        src: our_mac,
        dst: client_mac,
        ethertype: ethertype::IPV6,
        vlan: None,
    }
    .emit(&mut buf[..14]);
    let len = 8 + qlen;
    Ipv6Repr {
        src: from.to_ip6(),
        dst: client,
        next_header: ip_proto::ICMPV6,
        hop_limit: 64,
        payload_len: len,
    }
    .emit(&mut buf[14..54]);
    let msg = &mut buf[54..54 + len];
    msg[..8].fill(0);
    msg[8..].copy_from_slice(&quote[..qlen]);
    let mut icmp = icmpv6::Packet::new_unchecked(msg);
    icmp.set_msg_type(icmpv6::PACKET_TOO_BIG);
    icmp.set_code(0);
    icmp.set_mtu(u32::from(mtu));
    icmp.fill_checksum(checksum::pseudo_v6(from.to_ip6(), client, ip_proto::ICMPV6, len as u32));
    frame.len = 54 + len;
}
