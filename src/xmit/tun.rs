//! IP-in-IP tunnelling (`ip_vs_tunnel_xmit`): the whole IPv4 packet is wrapped in an outer IPv4
//! header from the director (DIP) to the real server. Replies bypass the director.
//!
//! The outer header is written into the frame's headroom, so the packet is never copied. A packet
//! that would no longer fit the egress MTU is refused: with DF set the client gets ICMP
//! "fragmentation needed" with the MTU that fits (RFC 1191), as IPVS does.

use crate::pipeline::Frame;
use crate::service::Hop;
use crate::stats::DropReason;
use crate::types::Addr;
use crate::wire::{EthernetRepr, Ipv4Repr, ethertype, icmpv4, ip_proto, ipv4};

/// Bytes the outer IPv4 header adds.
pub const OVERHEAD: usize = 20;

/// Why a packet could not be encapsulated.
#[derive(Debug, PartialEq, Eq)]
pub enum TunError {
    /// Too big for the egress MTU once wrapped, DF set: answer with "fragmentation needed", this MTU.
    FragNeeded(u16),
    Drop(DropReason),
}

/// Wraps the IPv4 packet at `frame[l3..end]` (frame-relative offsets) for `rip`, sent from `dip`.
pub fn encapsulate(
    frame: &mut Frame<'_>,
    l3: usize,
    end: usize,
    dip: Addr,
    rip: Addr,
    mtu: u16,
    hop: &Hop,
) -> Result<(), TunError> {
    let inner_len = end - l3;
    let (ttl, df, tos) = {
        let ip = ipv4::Packet::new_unchecked(&frame.bytes()[l3..end]);
        (ip.ttl(), ip.dont_frag(), ip.dscp_ecn())
    };
    if inner_len + OVERHEAD > usize::from(mtu) {
        return Err(if df {
            TunError::FragNeeded(mtu.saturating_sub(OVERHEAD as u16))
        } else {
            TunError::Drop(DropReason::TooBig)
        });
    }
    // The new Ethernet header sits OVERHEAD bytes before the old one (any VLAN tag is dropped: the
    // pipeline only serves untagged frames), the outer IPv4 header right before the inner packet.
    let inner_at = frame.start + l3;
    let Some(eth_at) = inner_at.checked_sub(OVERHEAD + 14) else {
        // No headroom to write the outer header into.
        return Err(TunError::Drop(DropReason::TooBig));
    };
    let eth = EthernetRepr {
        src: hop.src,
        dst: hop.dst,
        ethertype: ethertype::IPV4,
        vlan: None,
    };
    eth.emit(&mut frame.buf[eth_at..eth_at + 14]);
    let outer = Ipv4Repr {
        src: dip.to_ip4(),
        dst: rip.to_ip4(),
        protocol: ip_proto::IPIP,
        ttl,
        payload_len: inner_len,
        dont_frag: df,
        ident: 0,
        dscp_ecn: tos,
    };
    outer.emit(&mut frame.buf[eth_at + 14..inner_at]);
    frame.start = eth_at;
    frame.len = 14 + OVERHEAD + inner_len;
    Ok(())
}

/// Turns the frame into an ICMP "fragmentation needed" (type 3, code 4) for the sender of the
/// IPv4 packet at `frame[l3..end]`, quoting its header and the first bytes of its payload, sent from
/// `from` with next-hop MTU `mtu`. The frame goes back out of the port it came in on.
pub fn frag_needed(frame: &mut Frame<'_>, l3: usize, end: usize, from: Addr, our_mac: crate::types::Mac, mtu: u16) {
    // RFC 1812 4.3.2.3: quote as much as fits in 576 bytes.
    const MAX_QUOTE: usize = 576 - 20 - 8;
    let mut quote = [0u8; MAX_QUOTE];
    let qlen = (end - l3).min(MAX_QUOTE);
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
