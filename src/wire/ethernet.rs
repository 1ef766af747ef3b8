//! Ethernet II frames with up to two VLAN tags (802.1Q, 802.1ad).

use super::{Error, Result, be16, ethertype, put16};
use crate::types::Mac;

mod field {
    pub const DST: core::ops::Range<usize> = 0..6;
    pub const SRC: core::ops::Range<usize> = 6..12;
    pub const TYPE: usize = 12;
    pub const HEADER_LEN: usize = 14;
    pub const TAG_LEN: usize = 4;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = field::HEADER_LEN;

/// A view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
    /// Header length including tags, found by `new_checked` (14 for `new_unchecked`).
    header_len: usize,
}

fn is_tag(t: u16) -> bool {
    t == ethertype::VLAN || t == ethertype::QINQ
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// A view of bytes known to hold at least an untagged header.
    pub fn new_unchecked(buffer: T) -> Frame<T> {
        Frame {
            buffer,
            header_len: HEADER_LEN,
        }
    }

    /// A view of bytes from the network: the header and up to two VLAN tags must be present.
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let mut hl = HEADER_LEN;
        for _ in 0..2 {
            if !is_tag(be16(b, hl - 2)) {
                break;
            }
            hl += field::TAG_LEN;
            if b.len() < hl {
                return Err(Error::Truncated);
            }
        }
        Ok(Frame { buffer, header_len: hl })
    }

    pub fn dst_addr(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Mac(m)
    }

    pub fn src_addr(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Mac(m)
    }

    /// The EtherType of the payload, after any VLAN tags.
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), self.header_len - 2)
    }

    /// The VLAN id of the outer tag, if the frame is tagged.
    pub fn vlan_id(&self) -> Option<u16> {
        let b = self.buffer.as_ref();
        (self.header_len > HEADER_LEN).then(|| be16(b, field::TYPE + 2) & 0x0fff)
    }

    /// Header length including VLAN tags: 14, 18 or 22.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst_addr(&mut self, m: Mac) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0);
    }
    pub fn set_src_addr(&mut self, m: Mac) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len;
        &mut self.buffer.as_mut()[hl..]
    }
}

/// A high-level description of an Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src: Mac,
    pub dst: Mac,
    pub ethertype: u16,
    /// An 802.1Q tag with this VLAN id (priority 0).
    pub vlan: Option<u16>,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Result<EthernetRepr> {
        if f.header_len() > HEADER_LEN + field::TAG_LEN {
            // Double tags do not fit this representation.
            return Err(Error::Malformed);
        }
        Ok(EthernetRepr {
            src: f.src_addr(),
            dst: f.dst_addr(),
            ethertype: f.ethertype(),
            vlan: f.vlan_id(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + if self.vlan.is_some() { field::TAG_LEN } else { 0 }
    }

    /// Writes the header into the first `buffer_len()` bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        b[field::DST].copy_from_slice(&self.dst.0);
        b[field::SRC].copy_from_slice(&self.src.0);
        match self.vlan {
            Some(id) => {
                put16(b, 12, ethertype::VLAN);
                put16(b, 14, id & 0x0fff);
                put16(b, 16, self.ethertype);
            }
            None => put16(b, 12, self.ethertype),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TAGGED: [u8; 22] = [
        2, 0, 0, 0, 2, 1, 2, 0, 0, 0, 1, 2, 0x81, 0x00, 0x20, 0x64, 0x08, 0x00, 0x45, 0, 0, 20,
    ];

    #[test]
    fn untagged_and_tagged() {
        let f = Frame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.dst_addr(), Mac([2, 0, 0, 0, 2, 1]));
        assert_eq!(f.src_addr(), Mac([2, 0, 0, 0, 1, 2]));
        assert_eq!(f.vlan_id(), Some(100));
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0x45, 0, 0, 20]);
        let mut plain = TAGGED.to_vec();
        plain.drain(12..16);
        let f = Frame::new_checked(&plain[..]).unwrap();
        assert_eq!(
            (f.vlan_id(), f.header_len(), f.ethertype()),
            (None, 14, ethertype::IPV4)
        );
    }

    #[test]
    fn truncated_at_every_length() {
        for n in 0..18 {
            assert!(Frame::new_checked(&TAGGED[..n]).is_err(), "{n}");
        }
        assert!(Frame::new_checked(&TAGGED[..18]).is_ok());
    }

    #[test]
    fn repr_matches_etherparse() {
        let r = EthernetRepr {
            src: Mac([2, 0, 0, 0, 1, 2]),
            dst: Mac([2, 0, 0, 0, 2, 1]),
            ethertype: ethertype::IPV6,
            vlan: None,
        };
        let mut b = [0u8; 14];
        r.emit(&mut b);
        let e = etherparse::Ethernet2Header::from_slice(&b).unwrap().0;
        assert_eq!(e.source, r.src.0);
        assert_eq!(e.destination, r.dst.0);
        assert_eq!(e.ether_type.0, ethertype::IPV6);
    }

    proptest! {
        #[test]
        fn repr_roundtrip(src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(), et in 0x0600u16.., vlan in proptest::option::of(0u16..4096)) {
            prop_assume!(!is_tag(et));
            let r = EthernetRepr { src: Mac(src), dst: Mac(dst), ethertype: et, vlan };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut b);
            prop_assert_eq!(EthernetRepr::parse(&Frame::new_checked(&b[..]).unwrap()).unwrap(), r);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(f) = Frame::new_checked(&b[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.vlan_id(), f.payload().len());
            }
        }
    }
}
