//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Partial sums are `u32` values kept folded below 2^16 plus a carry, so that a handful of them can
//! be added before [`fold`]/[`finish`] without overflow.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Ones-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded with zero),
/// folded to at most 16 bits. Sums 8 bytes at a time, then 4.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Adding 32-bit halves of a big-endian u64 keeps the 16-bit word alignment; the u64 cannot
        // overflow before 2^32 chunks.
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (v >> 32) + (v & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    // An IPv4 header without options is two chunks and this.
    if let [a, b, c, d, tail @ ..] = rest {
        acc += u64::from(u32::from_be_bytes([*a, *b, *c, *d]));
        rest = tail;
    }
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    // Fold 64 -> 16 bits with end-around carries.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut s = (acc & 0xffff) + ((acc >> 16) & 0xffff) + (acc >> 32);
    s = (s & 0xffff) + (s >> 16);
    s as u32
}

/// Folds a partial sum to 16 bits (not inverted).
#[inline]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for a partial sum: the ones complement of the folded sum.
#[inline]
pub fn finish(s: u32) -> u16 {
    !fold(s)
}

/// Partial sum of the IPv4 pseudo header (RFC 793, RFC 768).
#[inline]
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let (s, d) = (src.octets(), dst.octets());
    let words = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(proto),
        len,
    ];
    words.iter().map(|&w| u32::from(w)).sum()
}

/// Partial sum of the IPv6 pseudo header (RFC 8200 section 8.1).
#[inline]
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: u32) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + (len >> 16) + (len & 0xffff) + u32::from(proto)
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changed from `old` to `new`:
/// HC' = ~(~HC + ~m + m').
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    finish(u32::from(!csum) + u32::from(!old) + u32::from(new))
}

/// RFC 1624 eqn. 3 for an equal-length, even-length field (an address or a port) replaced.
#[inline]
pub fn update(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let mut acc = u32::from(!csum);
    for w in old.chunks_exact(2) {
        acc += u32::from(!u16::from_be_bytes([w[0], w[1]]));
    }
    finish(acc + sum(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The slow reference: byte pairs one at a time, RFC 1071 style.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for (i, b) in data.iter().enumerate() {
            s += if i % 2 == 0 { u32::from(*b) << 8 } else { u32::from(*b) };
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d)), 0xddf2);
        assert_eq!(finish(sum(&d)), !0xddf2);
    }

    #[test]
    fn ipv4_header_example() {
        // A well-known IPv4 header with checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(finish(sum(&h)), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(fold(sum(&h)), 0xffff);
    }

    proptest! {
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
            prop_assert_eq!(finish(sum(&data)), reference(&data));
        }

        #[test]
        fn incremental_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..200),
            at in any::<prop::sample::Index>(),
            new in any::<[u8; 16]>(),
            width in prop::sample::select(vec![2usize, 4, 16]),
        ) {
            prop_assume!(data.len() >= width);
            let start = at.index(data.len() - width + 1) & !1;
            prop_assume!(start + width <= data.len());
            let before = finish(sum(&data));
            let old = data[start..start + width].to_vec();
            data[start..start + width].copy_from_slice(&new[..width]);
            let after = finish(sum(&data));
            let inc = update(before, &old, &new[..width]);
            // 0x0000 and 0xffff are the same number in ones-complement arithmetic.
            prop_assert!(inc == after || (inc == 0xffff && after == 0) || (inc == 0 && after == 0xffff),
                "inc {:04x} full {:04x}", inc, after);
            if width == 2 {
                let inc16 = update16(before, u16::from_be_bytes([old[0], old[1]]), u16::from_be_bytes([new[0], new[1]]));
                prop_assert!(inc16 == after || (inc16 == 0xffff && after == 0) || (inc16 == 0 && after == 0xffff));
            }
        }
    }
}
