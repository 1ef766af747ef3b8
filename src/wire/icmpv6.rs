//! ICMPv6 (RFC 4443); the checksum covers the IPv6 pseudo header.

use super::{Error, Result, be16, be32, checksum, put16, put32};

pub const DEST_UNREACH: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const PARAM_PROBLEM: u8 = 4;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;

/// Destination-unreachable code: port unreachable.
pub const PORT_UNREACH: u8 = 4;

pub const HEADER_LEN: usize = 8;

/// A view of an ICMPv6 message (the buffer is the whole message).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    /// The MTU of a Packet Too Big message.
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    /// Error messages have types below 128 (RFC 4443 section 2.1).
    pub fn is_error(&self) -> bool {
        self.msg_type() < 128
    }
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::fold(pseudo + checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[0] = v;
    }
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[1] = v;
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 2, v);
    }
    pub fn set_mtu(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 4, v);
    }
    /// `pseudo`: checksum::pseudo_v6(src, dst, 58, message length).
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(pseudo + checksum::sum(self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn checksum_agrees_with_etherparse() {
        let s: Ipv6Addr = "2001:2:0:2::11".parse().unwrap();
        let d: Ipv6Addr = "2001:2:0:1::2".parse().unwrap();
        let mut m = vec![0u8; 8 + 48];
        m[8] = 0x60;
        let mut p = Packet::new_unchecked(&mut m[..]);
        p.set_msg_type(PACKET_TOO_BIG);
        p.set_mtu(1280);
        let pseudo = checksum::pseudo_v6(s, d, 58, 56);
        p.fill_checksum(pseudo);
        let p = Packet::new_checked(&m[..]).unwrap();
        assert!(p.verify_checksum(pseudo) && p.is_error());
        assert_eq!(p.mtu(), 1280);
        let (h, rest) = etherparse::Icmpv6Header::from_slice(&m).unwrap();
        assert_eq!(
            h.checksum,
            h.icmp_type.calc_checksum(s.octets(), d.octets(), rest).unwrap()
        );
    }
}
