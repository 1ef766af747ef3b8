//! UDP datagrams (RFC 768).

use super::{Error, Result, be16, checksum, put16};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram (the buffer may extend past its length field).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(be16(b, field::LENGTH));
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if b.len() < len {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// The header at the start of a datagram's first fragment: whole, while the length it gives
    /// covers later fragments too.
    pub fn new_checked_header(buffer: T) -> Result<Packet<T>> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if usize::from(be16(b, field::LENGTH)) < HEADER_LEN {
            return Err(Error::Malformed);
        }
        Ok(Packet { buffer })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) == HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
    /// A zero checksum means "none" (IPv4 only; the caller knows the family).
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        self.checksum() == 0
            || checksum::fold(pseudo + checksum::sum(&self.buffer.as_ref()[..usize::from(self.len())])) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
    /// A computed 0 is sent as 0xffff (0 means "no checksum").
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let len = usize::from(self.len());
        let c = checksum::finish(pseudo + checksum::sum(&self.buffer.as_ref()[..len]));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

/// A high-level description of a UDP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

impl UdpRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, pseudo: u32) -> Result<UdpRepr> {
        if !p.verify_checksum(pseudo) {
            return Err(Error::Malformed);
        }
        Ok(UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload: p.payload().to_vec(),
        })
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
    pub fn emit(&self, b: &mut [u8], pseudo: u32) {
        let b = &mut b[..self.buffer_len()];
        put16(b, field::SRC_PORT, self.src_port);
        put16(b, field::DST_PORT, self.dst_port);
        put16(b, field::LENGTH, (HEADER_LEN + self.payload.len()) as u16);
        b[HEADER_LEN..].copy_from_slice(&self.payload);
        Packet::new_unchecked(b).fill_checksum(pseudo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    fn pseudo(len: usize) -> u32 {
        let s: Ipv6Addr = "2001:2:0:1::2".parse().unwrap();
        let d: Ipv6Addr = "2001:2::10".parse().unwrap();
        checksum::pseudo_v6(s, d, 17, len as u32)
    }

    #[test]
    fn rejects_bad_lengths() {
        let r = UdpRepr {
            src_port: 1,
            dst_port: 7,
            payload: b"echo".to_vec(),
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b, pseudo(12));
        for n in 0..b.len() {
            assert!(Packet::new_checked(&b[..n]).is_err(), "{n}");
        }
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
    }

    proptest! {
        #[test]
        fn repr_roundtrip_and_etherparse_checksum(sp in any::<u16>(), dp in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = UdpRepr { src_port: sp, dst_port: dp, payload };
            let mut b = vec![0u8; r.buffer_len()];
            let ps = pseudo(b.len());
            r.emit(&mut b, ps);
            prop_assert_eq!(UdpRepr::parse(&Packet::new_checked(&b[..]).unwrap(), pseudo(b.len())).unwrap(), r);
            let (h, rest) = etherparse::UdpHeader::from_slice(&b).unwrap();
            let s: Ipv6Addr = "2001:2:0:1::2".parse().unwrap();
            let d: Ipv6Addr = "2001:2::10".parse().unwrap();
            prop_assert_eq!(h.checksum, h.calc_checksum_ipv6_raw(s.octets(), d.octets(), rest).unwrap());
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(p) = Packet::new_checked(&b[..]) {
                let _ = (p.src_port(), p.dst_port(), p.payload().len(), p.verify_checksum(0));
            }
        }
    }
}
