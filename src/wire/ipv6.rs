//! IPv6 (RFC 8200), with the extension-header chain walked to the upper-layer header.

use std::net::Ipv6Addr;

use super::{Error, Result, be16, be32, ip_proto, put16, put32};

mod field {
    pub const VER_TC_FL: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: core::ops::Range<usize> = 8..24;
    pub const DST: core::ops::Range<usize> = 24..40;
}

pub const HEADER_LEN: usize = 40;
/// Most extension headers walked before giving up (a chain longer than this is refused).
const MAX_EXT_HEADERS: usize = 8;

/// A Fragment extension header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Offset in bytes.
    pub offset: u16,
    pub more: bool,
    pub ident: u32,
}

/// Where the upper-layer header starts, and whether the packet is a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    pub proto: u8,
    /// Offset from the start of the IPv6 header.
    pub offset: usize,
    pub fragment: Option<Fragment>,
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view of bytes from the network: version 6 and the payload length within the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        if b.len() < HEADER_LEN + usize::from(be16(b, field::LENGTH)) {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }
    pub fn traffic_class(&self) -> u8 {
        ((be32(self.buffer.as_ref(), field::VER_TC_FL) >> 20) & 0xff) as u8
    }
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FL) & 0x000f_ffff
    }
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// Walks hop-by-hop, routing, fragment, destination-options and AH headers to the first
    /// other header. A chain that runs past the payload or is too long is malformed.
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let b = self.payload();
        let mut next = self.next_header();
        let mut off = 0usize;
        let mut fragment = None;
        for _ in 0..MAX_EXT_HEADERS {
            let len = match next {
                ip_proto::HOPOPT | ip_proto::IPV6_ROUTE | ip_proto::IPV6_OPTS => {
                    let h = b.get(off..off + 2).ok_or(Error::Malformed)?;
                    (usize::from(h[1]) + 1) * 8
                }
                ip_proto::AH => {
                    let h = b.get(off..off + 2).ok_or(Error::Malformed)?;
                    (usize::from(h[1]) + 2) * 4
                }
                ip_proto::IPV6_FRAG => {
                    let h = b.get(off..off + 8).ok_or(Error::Malformed)?;
                    let v = u16::from_be_bytes([h[2], h[3]]);
                    fragment = Some(Fragment {
                        offset: v & 0xfff8,
                        more: v & 1 != 0,
                        ident: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    });
                    8
                }
                proto => {
                    return Ok(UpperLayer {
                        proto,
                        offset: HEADER_LEN + off,
                        fragment,
                    });
                }
            };
            if off + len > b.len() {
                return Err(Error::Malformed);
            }
            next = b[off];
            off += len;
        }
        Err(Error::Malformed)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }
    /// Sets the traffic class, keeping the version and flow label.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = be32(self.buffer.as_ref(), field::VER_TC_FL);
        put32(
            self.buffer.as_mut(),
            field::VER_TC_FL,
            (w & !(0xff << 20)) | (u32::from(tc) << 20),
        );
    }
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }
}

/// A high-level description of an IPv6 header (no extension headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub payload_len: usize,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Ipv6Repr> {
        Ok(Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            payload_len: usize::from(p.payload_len()),
        })
    }
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    /// Writes the 40-byte header into the start of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        let b = &mut b[..HEADER_LEN];
        b[..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
        put16(b, field::LENGTH, self.payload_len as u16);
        b[field::NXT_HDR] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn udp6(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv6(a("2001:2:0:1::2").octets(), a("2001:2::10").octets(), 64)
            .udp(40000, 7)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    #[test]
    fn parses_etherparse_packet() {
        let b = udp6(b"hi");
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.src_addr(), a("2001:2:0:1::2"));
        assert_eq!(p.dst_addr(), a("2001:2::10"));
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(
            p.upper_layer().unwrap(),
            UpperLayer {
                proto: ip_proto::UDP,
                offset: 40,
                fragment: None
            }
        );
    }

    /// Inserts a hop-by-hop (8 bytes), a destination-options (16 bytes) and a fragment header.
    #[test]
    fn walks_extension_headers() {
        let base = udp6(b"hi");
        let mut b = base[..40].to_vec();
        b[6] = ip_proto::HOPOPT;
        b.extend_from_slice(&[ip_proto::IPV6_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        b.extend_from_slice(&[ip_proto::IPV6_FRAG, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&[ip_proto::UDP, 0, 0x00, 0x01, 0, 0, 0, 42]);
        b.extend_from_slice(&base[40..]);
        let plen = (b.len() - 40) as u16;
        b[4..6].copy_from_slice(&plen.to_be_bytes());
        let ul = Packet::new_checked(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(ul.proto, ip_proto::UDP);
        assert_eq!(ul.offset, 40 + 8 + 16 + 8);
        assert_eq!(
            ul.fragment,
            Some(Fragment {
                offset: 0,
                more: true,
                ident: 42
            })
        );
        // Cut the chain short: malformed, not a panic.
        for n in 41..72 {
            let mut c = b[..n].to_vec();
            let plen = (n - 40) as u16;
            c[4..6].copy_from_slice(&plen.to_be_bytes());
            assert!(Packet::new_checked(&c[..]).unwrap().upper_layer().is_err(), "{n}");
        }
    }

    #[test]
    fn rejects_truncated() {
        let b = udp6(b"hello");
        for n in 0..b.len() {
            assert!(Packet::new_checked(&b[..n]).is_err(), "{n}");
        }
    }

    proptest! {
        #[test]
        fn repr_roundtrip(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), nh in any::<u8>(), hl in any::<u8>(), plen in 0usize..200) {
            let r = Ipv6Repr { src: src.into(), dst: dst.into(), next_header: nh, hop_limit: hl, payload_len: plen };
            let mut b = vec![0u8; HEADER_LEN + plen];
            r.emit(&mut b);
            prop_assert_eq!(Ipv6Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(p) = Packet::new_checked(&b[..]) {
                let _ = (p.src_addr(), p.dst_addr(), p.traffic_class(), p.flow_label(), p.upper_layer());
            }
        }
    }
}
