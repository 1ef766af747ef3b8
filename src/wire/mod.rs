//! Wire formats: zero-copy views over bytes (the hot path) and small `Repr` values (for building
//! frames and for tests), one module per protocol, in the manner of smoltcp's `wire`.
//!
//! Every view has a `new_checked` constructor for bytes from the network: once it returns `Ok`, no
//! getter can panic. `new_unchecked` is for bytes the caller has already validated.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use ethernet::EthernetRepr;
pub use ipv4::Ipv4Repr;
pub use ipv6::Ipv6Repr;
pub use tcp::TcpRepr;
pub use udp::UdpRepr;

/// Why bytes are not a valid packet of a protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fewer bytes than the header or a length field needs.
    #[error("truncated")]
    Truncated,
    /// A field holds an impossible value (version, header length, length field).
    #[error("malformed")]
    Malformed,
}

pub type Result<T> = core::result::Result<T, Error>;

/// IP protocol numbers (IANA).
pub mod ip_proto {
    pub const HOPOPT: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6: u8 = 41;
    pub const IPV6_ROUTE: u8 = 43;
    pub const IPV6_FRAG: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_NONXT: u8 = 59;
    pub const IPV6_OPTS: u8 = 60;
    pub const VRRP: u8 = 112;
}

/// EtherType values.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
