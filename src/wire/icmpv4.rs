//! ICMP for IPv4 (RFC 792, RFC 1191 for "fragmentation needed").

use super::{Error, Result, be16, be32, checksum, put16};

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACH: u8 = 3;
pub const SOURCE_QUENCH: u8 = 4;
pub const REDIRECT: u8 = 5;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAM_PROBLEM: u8 = 12;

/// Destination-unreachable codes.
pub const NET_UNREACH: u8 = 0;
pub const HOST_UNREACH: u8 = 1;
pub const PROTO_UNREACH: u8 = 2;
pub const PORT_UNREACH: u8 = 3;
pub const FRAG_NEEDED: u8 = 4;

pub const HEADER_LEN: usize = 8;

/// A view of an ICMP message (the buffer is the whole message).
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
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
    /// The next-hop MTU of a "fragmentation needed" message.
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
    /// What follows the header: for errors, the quoted IP header and the start of its payload.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
    /// An error message, which quotes the packet that caused it.
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            DEST_UNREACH | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAM_PROBLEM
        )
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
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
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        put16(self.buffer.as_mut(), 4, 0);
        put16(self.buffer.as_mut(), 6, v);
    }
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frag_needed_agrees_with_etherparse() {
        let mut m = vec![0u8; 8 + 28];
        m[8] = 0x45;
        let mut p = Packet::new_unchecked(&mut m[..]);
        p.set_msg_type(DEST_UNREACH);
        p.set_code(FRAG_NEEDED);
        p.set_next_hop_mtu(1480);
        p.fill_checksum();
        let p = Packet::new_checked(&m[..]).unwrap();
        assert!(p.verify_checksum() && p.is_error());
        assert_eq!(p.next_hop_mtu(), 1480);
        let (h, rest) = etherparse::Icmpv4Header::from_slice(&m).unwrap();
        assert_eq!(
            h.icmp_type,
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1480 }
            )
        );
        assert_eq!(h.checksum, h.icmp_type.calc_checksum(rest));
    }

    #[test]
    fn truncated() {
        for n in 0..8 {
            assert!(Packet::new_checked(&[0u8; 8][..n]).is_err());
        }
    }
}
