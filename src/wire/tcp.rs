//! TCP segments (RFC 9293): ports, flags and checksum; options are carried, not interpreted.

use super::{Error, Result, be16, be32, checksum, put16, put32};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

pub const HEADER_LEN: usize = 20;

/// Flag bits of [`Packet::flags`].
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// A view of a TCP segment (the buffer is the whole segment: header and payload).
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
        let p = Packet { buffer };
        let hl = p.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if p.buffer.as_ref().len() < hl {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF] >> 4) * 4
    }
    /// The low eight flag bits (CWR ECE URG ACK PSH RST SYN FIN).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
    /// `pseudo`: the pseudo-header sum (checksum::pseudo_v4/v6) for the whole segment's length.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::fold(pseudo + checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(pseudo + checksum::sum(self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

/// A high-level description of a TCP segment without options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload: Vec<u8>,
}

impl TcpRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, pseudo: u32) -> Result<TcpRepr> {
        if !p.verify_checksum(pseudo) {
            return Err(Error::Malformed);
        }
        Ok(TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq_number(),
            ack: p.ack_number(),
            flags: p.flags(),
            window: p.window_len(),
            payload: p.payload().to_vec(),
        })
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
    /// Writes the segment into `b[..buffer_len()]`, checksum from `pseudo`.
    pub fn emit(&self, b: &mut [u8], pseudo: u32) {
        let b = &mut b[..self.buffer_len()];
        put16(b, field::SRC_PORT, self.src_port);
        put16(b, field::DST_PORT, self.dst_port);
        put32(b, field::SEQ, self.seq);
        put32(b, field::ACK, self.ack);
        b[field::OFF] = 5 << 4;
        b[field::FLAGS] = self.flags;
        put16(b, field::WINDOW, self.window);
        put16(b, field::URGENT, 0);
        b[HEADER_LEN..].copy_from_slice(&self.payload);
        Packet::new_unchecked(b).fill_checksum(pseudo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

    fn pseudo(len: usize) -> u32 {
        checksum::pseudo_v4(SRC, DST, 6, len as u16)
    }

    #[test]
    fn parses_etherparse_segment() {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4(SRC.octets(), DST.octets(), 64)
            .tcp(40000, 80, 7, 512)
            .syn()
            .write(&mut v, b"abc")
            .unwrap();
        let seg = &v[20..];
        let p = Packet::new_checked(seg).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.seq_number()), (40000, 80, 7));
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst());
        assert_eq!(p.payload(), b"abc");
        assert!(p.verify_checksum(pseudo(seg.len())));
    }

    #[test]
    fn rejects_truncated_and_bad_offset() {
        let r = TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq: 0,
            ack: 0,
            flags: 2,
            window: 0,
            payload: vec![],
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b, pseudo(20));
        for n in 0..20 {
            assert!(Packet::new_checked(&b[..n]).is_err());
        }
        b[12] = 4 << 4;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[12] = 6 << 4;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);
    }

    proptest! {
        #[test]
        fn repr_roundtrip_and_etherparse_checksum(sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(),
                                                  flags in any::<u8>(), window in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = TcpRepr { src_port: sp, dst_port: dp, seq, ack, flags, window, payload };
            let mut b = vec![0u8; r.buffer_len()];
            let ps = pseudo(b.len());
            r.emit(&mut b, ps);
            let p = Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!(TcpRepr::parse(&p, pseudo(b.len())).unwrap(), r.clone());
            let (h, rest) = etherparse::TcpHeader::from_slice(&b).unwrap();
            prop_assert_eq!(h.checksum, h.calc_checksum_ipv4_raw(SRC.octets(), DST.octets(), rest).unwrap());
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = Packet::new_checked(&b[..]) {
                let _ = (p.src_port(), p.dst_port(), p.flags(), p.payload().len(), p.verify_checksum(0));
            }
        }
    }
}
