//! The VRRP advertisement: version 2 (RFC 3768, IPv4 only) and version 3 (RFC 5798, IPv4 and IPv6).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! v3: |(rsvd) |     Max Adver Int     |          Checksum           |
//! v2: |   Auth Type   |   Adver Int   |          Checksum           |
//! |                 IPvX address(es) ...                           |
//! v2 only: 8 bytes of authentication data
//! ```
//!
//! The checksum differs between the versions and, for v3 over IPv4, between implementations: v2 sums
//! the VRRP message alone; v3 adds the IP pseudo-header (RFC 5798 section 5.2.8). keepalived does so
//! for IPv4 too, while Cisco, Juniper and RFC 9568 leave the pseudo-header out for IPv4. Parsing
//! accepts both for v3 IPv4 and reports which one matched; emitting takes the form as an argument.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{be16, checksum, ip_proto, put16};

mod field {
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v2: authentication type; v3: 4 reserved bits and the high bits of the interval.
    pub const AUTH_OR_INT: usize = 4;
    /// v2: the advertisement interval in seconds.
    pub const ADVER_INT_V2: usize = 5;
    pub const CHECKSUM: usize = 6;
    pub const ADDRS: usize = 8;
}

/// Length of the fixed header before the addresses.
pub const HEADER_LEN: usize = 8;
/// Length of the v2 authentication data after the addresses.
pub const AUTH_DATA_LEN: usize = 8;
/// The only VRRP packet type: advertisement.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// The multicast group of VRRP over IPv4.
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The multicast group of VRRP over IPv6.
pub const MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit of every VRRP packet, sent and required (RFC 5798 section 5.1.1.3).
pub const TTL: u8 = 255;

/// Why bytes are not a valid VRRP advertisement. Each is a receive-side drop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer bytes than the header, or than the address count and version need.
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    /// Version is neither 2 nor 3.
    #[error("unknown VRRP version {0}")]
    Version(u8),
    /// Type is not 1 (advertisement).
    #[error("unknown VRRP packet type {0}")]
    Type(u8),
    /// The length does not match the address count (more or fewer bytes than announced).
    #[error("length {len} does not match {count} addresses")]
    Length { len: usize, count: u8 },
    /// The checksum does not verify, in any accepted form.
    #[error("bad checksum")]
    Checksum,
    /// v2 over IPv6 does not exist.
    #[error("VRRPv2 is IPv4 only")]
    V2OverIpv6,
    /// v2 with authentication (simple password or AH), which RFC 5798 removed and xvs does not speak.
    #[error("unsupported v2 authentication type {0}")]
    Auth(u8),
    /// The source and destination addresses are of different families.
    #[error("source and destination address families differ")]
    Family,
}

/// VRRP protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, interval in seconds, checksum without pseudo-header.
    V2,
    /// RFC 5798: IPv4 and IPv6, interval in centiseconds, checksum with pseudo-header.
    V3,
}

impl Version {
    /// The number in the version field.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// How the v3 IPv4 checksum is computed: with the pseudo-header (RFC 5798, keepalived's default) or
/// without (RFC 9568, Cisco, Juniper). Irrelevant for v2 (never) and for IPv6 (always).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ChecksumForm {
    #[default]
    Pseudo,
    Plain,
}

/// A view of a VRRP message (the IP payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view of bytes from the network: version 2 or 3, type advertisement, and exactly as many
    /// bytes as the address count announces for `v6` (IPv6) or IPv4 addresses. After `Ok`, no
    /// getter panics.
    pub fn new_checked(buffer: T, v6: bool) -> Result<Packet<T>, PacketError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(PacketError::Truncated(b.len()));
        }
        let p = Packet { buffer };
        let version = p.version_number();
        if version != 2 && version != 3 {
            return Err(PacketError::Version(version));
        }
        if p.packet_type() != TYPE_ADVERTISEMENT {
            return Err(PacketError::Type(p.packet_type()));
        }
        if version == 2 && v6 {
            return Err(PacketError::V2OverIpv6);
        }
        let want = message_len(version == 2, v6, p.count());
        let len = p.buffer.as_ref().len();
        if len != want {
            return Err(PacketError::Length { len, count: p.count() });
        }
        Ok(p)
    }

    pub fn version_number(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }
    /// v2: the authentication type (0 = none).
    pub fn auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_OR_INT]
    }
    /// The advertisement interval in the version's unit: seconds (v2) or centiseconds (v3, 12 bits).
    pub fn adver_int(&self) -> u16 {
        let b = self.buffer.as_ref();
        if self.version_number() == 2 {
            u16::from(b[field::ADVER_INT_V2])
        } else {
            be16(b, field::AUTH_OR_INT) & 0x0fff
        }
    }
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// The raw address bytes: `count` addresses of 4 or 16 bytes.
    pub fn addr_bytes(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = if self.version_number() == 2 {
            b.len() - AUTH_DATA_LEN
        } else {
            b.len()
        };
        &b[field::ADDRS..end]
    }

    /// Which checksum form verifies for a message from `src` to `dst`, if any.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> Option<ChecksumForm> {
        let b = self.buffer.as_ref();
        let plain = checksum::sum(b);
        let len = b.len() as u16;
        match (self.version_number(), src, dst) {
            (2, _, _) => (checksum::fold(plain) == 0xffff).then_some(ChecksumForm::Plain),
            (_, IpAddr::V4(s), IpAddr::V4(d)) => {
                if checksum::fold(plain + checksum::pseudo_v4(s, d, ip_proto::VRRP, len)) == 0xffff {
                    Some(ChecksumForm::Pseudo)
                } else if checksum::fold(plain) == 0xffff {
                    Some(ChecksumForm::Plain)
                } else {
                    None
                }
            }
            (_, IpAddr::V6(s), IpAddr::V6(d)) => {
                let sum = plain + checksum::pseudo_v6(s, d, ip_proto::VRRP, u32::from(len));
                (checksum::fold(sum) == 0xffff).then_some(ChecksumForm::Pseudo)
            }
            _ => None,
        }
    }
}

/// Length of a message with `count` addresses.
pub fn message_len(v2: bool, v6: bool, count: u8) -> usize {
    let alen = if v6 { 16 } else { 4 };
    HEADER_LEN + usize::from(count) * alen + if v2 { AUTH_DATA_LEN } else { 0 }
}

/// A VRRP advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpRepr {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// The advertisement interval in the version's wire unit: seconds (v2, 8 bits) or centiseconds
    /// (v3, 12 bits). See [`VrrpRepr::interval_cs`].
    pub adver_int: u16,
    /// The virtual addresses, all of one family.
    pub addrs: Vec<IpAddr>,
}

impl VrrpRepr {
    /// Parses and checks a message received from `src` for `dst` (the IP header's addresses, needed
    /// for the checksum); also says which checksum form matched.
    pub fn parse(bytes: &[u8], src: IpAddr, dst: IpAddr) -> Result<(VrrpRepr, ChecksumForm), PacketError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(PacketError::Family);
        }
        let v6 = src.is_ipv6();
        let p = Packet::new_checked(bytes, v6)?;
        let version = if p.version_number() == 2 {
            Version::V2
        } else {
            Version::V3
        };
        if version == Version::V2 && p.auth_type() != 0 {
            return Err(PacketError::Auth(p.auth_type()));
        }
        let form = p.verify_checksum(src, dst).ok_or(PacketError::Checksum)?;
        let addrs = if v6 {
            p.addr_bytes()
                .chunks_exact(16)
                .filter_map(|c| <[u8; 16]>::try_from(c).ok())
                .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .collect()
        } else {
            p.addr_bytes()
                .chunks_exact(4)
                .filter_map(|c| <[u8; 4]>::try_from(c).ok())
                .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .collect()
        };
        Ok((
            VrrpRepr {
                version,
                vrid: p.vrid(),
                priority: p.priority(),
                adver_int: p.adver_int(),
                addrs,
            },
            form,
        ))
    }

    /// The interval in centiseconds whatever the version.
    pub fn interval_cs(&self) -> u32 {
        match self.version {
            Version::V2 => u32::from(self.adver_int) * 100,
            Version::V3 => u32::from(self.adver_int),
        }
    }

    /// Bytes [`VrrpRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let v6 = self.addrs.first().is_some_and(|a| a.is_ipv6());
        message_len(self.version == Version::V2, v6, self.addrs.len().min(255) as u8)
    }

    /// Writes the message into the start of `b` (at least [`VrrpRepr::buffer_len`] bytes) with the
    /// checksum for `src` → `dst` in `form` (used only by v3 over IPv4). Addresses of the other
    /// family than `src`'s are skipped by the caller's configuration, never mixed here: the count is
    /// the number of addresses written.
    pub fn emit(&self, b: &mut [u8], src: IpAddr, dst: IpAddr, form: ChecksumForm) {
        let len = self.buffer_len();
        let b = &mut b[..len];
        b.fill(0);
        b[field::VER_TYPE] = (self.version.number() << 4) | TYPE_ADVERTISEMENT;
        b[field::VRID] = self.vrid;
        b[field::PRIORITY] = self.priority;
        b[field::COUNT] = self.addrs.len().min(255) as u8;
        match self.version {
            Version::V2 => {
                b[field::AUTH_OR_INT] = 0;
                b[field::ADVER_INT_V2] = self.adver_int.min(255) as u8;
            }
            Version::V3 => put16(b, field::AUTH_OR_INT, self.adver_int & 0x0fff),
        }
        let mut at = field::ADDRS;
        for a in self.addrs.iter().take(255) {
            match a {
                IpAddr::V4(a) => {
                    if let Some(s) = b.get_mut(at..at + 4) {
                        s.copy_from_slice(&a.octets());
                    }
                    at += 4;
                }
                IpAddr::V6(a) => {
                    if let Some(s) = b.get_mut(at..at + 16) {
                        s.copy_from_slice(&a.octets());
                    }
                    at += 16;
                }
            }
        }
        let mut sum = checksum::sum(b);
        match (self.version, src, dst, form) {
            (Version::V3, IpAddr::V4(s), IpAddr::V4(d), ChecksumForm::Pseudo) => {
                sum += checksum::pseudo_v4(s, d, ip_proto::VRRP, len as u16)
            }
            (Version::V3, IpAddr::V6(s), IpAddr::V6(d), _) => {
                sum += checksum::pseudo_v6(s, d, ip_proto::VRRP, len as u32)
            }
            _ => {}
        }
        put16(b, field::CHECKSUM, checksum::finish(sum));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ethernet, ipv4, ipv6};
    use proptest::prelude::*;

    /// The bytes of the first frame of a `tcpdump -XX` dump.
    fn hex_frame(dump: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for line in dump.lines().skip(1) {
            let Some((_, rest)) = line.trim_start().split_once(":  ") else {
                continue;
            };
            // The hex columns end where the two spaces before the ASCII column start.
            let hex = rest.split("  ").next().unwrap_or("");
            for group in hex.split_whitespace() {
                for i in (0..group.len()).step_by(2) {
                    out.push(u8::from_str_radix(&group[i..i + 2], 16).unwrap());
                }
            }
        }
        out
    }

    /// (src, dst, ttl, tos, vrrp bytes) of a captured frame.
    fn ip_parts(frame: &[u8]) -> (IpAddr, IpAddr, u8, u8, Vec<u8>) {
        let f = ethernet::Frame::new_checked(frame).unwrap();
        match f.ethertype() {
            0x0800 => {
                let p = ipv4::Packet::new_checked(f.payload()).unwrap();
                assert!(p.verify_checksum());
                assert_eq!(p.protocol(), ip_proto::VRRP);
                (
                    p.src_addr().into(),
                    p.dst_addr().into(),
                    p.ttl(),
                    p.dscp_ecn(),
                    p.payload().to_vec(),
                )
            }
            0x86dd => {
                let p = ipv6::Packet::new_checked(f.payload()).unwrap();
                assert_eq!(p.next_header(), ip_proto::VRRP);
                let tc = ((u16::from(frame[14] & 0x0f) << 4) | u16::from(frame[15] >> 4)) as u8;
                (
                    p.src_addr().into(),
                    p.dst_addr().into(),
                    p.hop_limit(),
                    tc,
                    p.payload().to_vec(),
                )
            }
            t => panic!("ethertype {t:#x}"),
        }
    }

    const VECTORS: [(&str, &str); 6] = [
        ("vrrp-v2", include_str!("../../tests/data/vrrp/vrrp-v2.hex")),
        ("vrrp-v2-prio0", include_str!("../../tests/data/vrrp/vrrp-v2-prio0.hex")),
        ("vrrp-v3", include_str!("../../tests/data/vrrp/vrrp-v3.hex")),
        ("vrrp-v3-1cs", include_str!("../../tests/data/vrrp/vrrp-v3-1cs.hex")),
        ("vrrp-v3-ipv6", include_str!("../../tests/data/vrrp/vrrp-v3-ipv6.hex")),
        ("vrrp-v3-vmac", include_str!("../../tests/data/vrrp/vrrp-v3-vmac.hex")),
    ];

    #[test]
    fn keepalived_captures_parse_with_fields_and_checksums() {
        let vip: IpAddr = "198.19.10.100".parse().unwrap();
        let vip6: IpAddr = "2001:2:0:10::100".parse().unwrap();
        let want = [
            ("vrrp-v2", Version::V2, 51, 150, 1, vip),
            ("vrrp-v2-prio0", Version::V2, 51, 0, 1, vip),
            ("vrrp-v3", Version::V3, 51, 150, 100, vip),
            ("vrrp-v3-1cs", Version::V3, 51, 150, 1, vip),
            ("vrrp-v3-ipv6", Version::V3, 52, 150, 100, vip6),
            (
                "vrrp-v3-vmac",
                Version::V3,
                53,
                150,
                100,
                "198.19.10.101".parse().unwrap(),
            ),
        ];
        for ((name, dump), (wname, version, vrid, prio, int, addr)) in VECTORS.iter().zip(want) {
            assert_eq!(*name, wname);
            let frame = hex_frame(dump);
            let (src, dst, ttl, tos, msg) = ip_parts(&frame);
            assert_eq!(ttl, TTL, "{name}");
            assert_eq!(tos, 0xc0, "{name}");
            let (r, form) = VrrpRepr::parse(&msg, src, dst).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.version, version, "{name}");
            assert_eq!(r.vrid, vrid, "{name}");
            assert_eq!(r.priority, prio, "{name}");
            assert_eq!(r.adver_int, int, "{name}");
            assert_eq!(r.addrs, vec![addr], "{name}");
            // keepalived includes the pseudo-header for v3 over IPv4.
            let want_form = if version == Version::V2 {
                ChecksumForm::Plain
            } else {
                ChecksumForm::Pseudo
            };
            assert_eq!(form, want_form, "{name}");
            // Emitting the parsed value reproduces the captured bytes.
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out, src, dst, form);
            assert_eq!(out, msg, "{name}");
            // A flipped bit anywhere is caught by the checksum or the structure checks.
            for i in 0..msg.len() {
                let mut bad = msg.clone();
                bad[i] ^= 0x10;
                assert!(VrrpRepr::parse(&bad, src, dst).is_err(), "{name} byte {i}");
            }
        }
    }

    #[test]
    fn v3_ipv4_without_pseudo_header_is_accepted() {
        let r = VrrpRepr {
            version: Version::V3,
            vrid: 7,
            priority: 100,
            adver_int: 100,
            addrs: vec!["198.18.5.100".parse().unwrap()],
        };
        let (s, d): (IpAddr, IpAddr) = ("198.18.5.1".parse().unwrap(), MCAST_V4.into());
        let mut b = vec![0; r.buffer_len()];
        r.emit(&mut b, s, d, ChecksumForm::Plain);
        assert_eq!(VrrpRepr::parse(&b, s, d), Ok((r.clone(), ChecksumForm::Plain)));
        r.emit(&mut b, s, d, ChecksumForm::Pseudo);
        assert_eq!(VrrpRepr::parse(&b, s, d), Ok((r, ChecksumForm::Pseudo)));
    }

    #[test]
    fn malformed_input_gives_typed_errors() {
        let frame = hex_frame(VECTORS[0].1);
        let (s, d, _, _, msg) = ip_parts(&frame);
        for n in 0..msg.len() {
            assert!(VrrpRepr::parse(&msg[..n], s, d).is_err());
        }
        assert_eq!(VrrpRepr::parse(&msg[..4], s, d), Err(PacketError::Truncated(4)));
        let mut bad = msg.clone();
        bad[0] = 0x41;
        assert_eq!(VrrpRepr::parse(&bad, s, d), Err(PacketError::Version(4)));
        let mut bad = msg.clone();
        bad[0] = 0x22;
        assert_eq!(VrrpRepr::parse(&bad, s, d), Err(PacketError::Type(2)));
        let mut bad = msg.clone();
        bad[3] = 2;
        assert_eq!(
            VrrpRepr::parse(&bad, s, d),
            Err(PacketError::Length { len: 20, count: 2 })
        );
        let mut bad = msg.clone();
        bad[6] ^= 1;
        assert_eq!(VrrpRepr::parse(&bad, s, d), Err(PacketError::Checksum));
        let mut bad = msg.clone();
        bad[4] = 1;
        assert_eq!(VrrpRepr::parse(&bad, s, d), Err(PacketError::Auth(1)));
        let v6: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(VrrpRepr::parse(&msg, v6, MCAST_V6.into()), Err(PacketError::V2OverIpv6));
        assert_eq!(VrrpRepr::parse(&msg, v6, d), Err(PacketError::Family));
    }

    fn arb_repr() -> impl Strategy<Value = (VrrpRepr, bool)> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            0usize..8,
        )
            .prop_flat_map(|(v3, v6, vrid, priority, int, n)| {
                let v6 = v6 && v3;
                let addrs = if v6 {
                    proptest::collection::vec(any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))), n).boxed()
                } else {
                    proptest::collection::vec(any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))), n).boxed()
                };
                addrs.prop_map(move |addrs| {
                    let r = VrrpRepr {
                        version: if v3 { Version::V3 } else { Version::V2 },
                        vrid,
                        priority,
                        adver_int: if v3 { int & 0x0fff } else { int & 0xff },
                        addrs,
                    };
                    (r, v6)
                })
            })
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip((r, v6) in arb_repr(), plain in any::<bool>()) {
            let (s, d): (IpAddr, IpAddr) = if v6 {
                ("fe80::1".parse().unwrap(), MCAST_V6.into())
            } else {
                ("198.18.5.1".parse().unwrap(), MCAST_V4.into())
            };
            let form = if plain { ChecksumForm::Plain } else { ChecksumForm::Pseudo };
            let mut b = vec![0; r.buffer_len()];
            r.emit(&mut b, s, d, form);
            let (back, _) = VrrpRepr::parse(&b, s, d).unwrap();
            prop_assert_eq!(back, r);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..128), v6 in any::<bool>()) {
            let (s, d): (IpAddr, IpAddr) = if v6 {
                ("fe80::1".parse().unwrap(), MCAST_V6.into())
            } else {
                ("198.18.5.1".parse().unwrap(), MCAST_V4.into())
            };
            let _ = VrrpRepr::parse(&b, s, d);
        }
    }
}
