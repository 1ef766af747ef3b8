//! ARP for Ethernet and IPv4 (RFC 826), enough to build gratuitous ARPs and read requests.

use std::net::Ipv4Addr;

use super::{Error, Result, be16, put16};
use crate::types::Mac;

pub const REQUEST: u16 = 1;
pub const REPLY: u16 = 2;
pub const PACKET_LEN: usize = 28;

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    /// Only Ethernet (htype 1) over IPv4 (ptype 0x0800) with the matching lengths is accepted.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(Error::Malformed);
        }
        Ok(Packet { buffer })
    }
    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
    pub fn sender_hw(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[8..14]);
        Mac(m)
    }
    pub fn sender_proto(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[14..18];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    pub fn target_hw(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[18..24]);
        Mac(m)
    }
    pub fn target_proto(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[24..28];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
}

/// A high-level description of an ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: u16,
    pub sender_hw: Mac,
    pub sender_proto: Ipv4Addr,
    pub target_hw: Mac,
    pub target_proto: Ipv4Addr,
}

impl ArpRepr {
    /// A gratuitous ARP announcing `addr` at `mac` (a request for our own address, as Linux and keepalived send).
    pub fn gratuitous(mac: Mac, addr: Ipv4Addr) -> ArpRepr {
        ArpRepr {
            operation: REQUEST,
            sender_hw: mac,
            sender_proto: addr,
            target_hw: Mac::BROADCAST,
            target_proto: addr,
        }
    }
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> ArpRepr {
        ArpRepr {
            operation: p.operation(),
            sender_hw: p.sender_hw(),
            sender_proto: p.sender_proto(),
            target_hw: p.target_hw(),
            target_proto: p.target_proto(),
        }
    }
    pub fn emit(&self, b: &mut [u8]) {
        let b = &mut b[..PACKET_LEN];
        put16(b, 0, 1);
        put16(b, 2, 0x0800);
        b[4] = 6;
        b[5] = 4;
        put16(b, 6, self.operation);
        b[8..14].copy_from_slice(&self.sender_hw.0);
        b[14..18].copy_from_slice(&self.sender_proto.octets());
        b[18..24].copy_from_slice(&self.target_hw.0);
        b[24..28].copy_from_slice(&self.target_proto.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gratuitous ARP keepalived 2.2.7 sent for its VIP (shared/vectors/vrrp/garp-vip.hex).
    const KEEPALIVED_GARP: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x2a, 0x98, 0x5e, 0x45, 0x90, 0xd9, 198, 19, 10, 100, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 198, 19, 10, 100,
    ];

    #[test]
    fn parses_and_rebuilds_a_gratuitous_arp() {
        let p = Packet::new_checked(&KEEPALIVED_GARP[..]).unwrap();
        let r = ArpRepr::parse(&p);
        assert_eq!(r.sender_proto, Ipv4Addr::new(198, 19, 10, 100));
        assert_eq!(r, ArpRepr::gratuitous(r.sender_hw, r.sender_proto));
        let mut b = [0u8; PACKET_LEN];
        r.emit(&mut b);
        assert_eq!(b, KEEPALIVED_GARP);
        for n in 0..PACKET_LEN {
            assert!(Packet::new_checked(&KEEPALIVED_GARP[..n]).is_err());
        }
    }
}
