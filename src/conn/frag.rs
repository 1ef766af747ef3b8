//! Which connection a fragment belongs to, without reassembly (as Cilium follows IPv4 fragments).
//!
//! Only the first fragment of a TCP or UDP datagram carries the ports. When a worker forwards one,
//! it remembers the ports under the datagram's source, destination, protocol and identification;
//! the later fragments, which carry no ports, are looked up here and then take the path of any
//! packet with those ports: same connection, same real server. Each fragment is forwarded as it
//! comes. The first carries the transport checksum, which covers the whole datagram and is updated
//! for the new addresses and ports; the later ones change at the IP layer only.
//!
//! A later fragment that arrives before its first is not forwarded (there are no ports to find
//! its connection by). The fragments of one datagram reach one worker: receive hashing spreads
//! fragments by their addresses alone, and so does xvs's kernel filter, which follows them the same
//! way.
//!
//! Per worker, bounded and without locks: a direct-mapped table placed by a keyed hash (the keys
//! come from the network), where a datagram's entry lasts [`FRAG_TIMEOUT`] or until another takes
//! its slot.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::types::Addr;

/// How long the ports of a datagram are kept after its first fragment: the kernel's own
/// reassembly timeout (`net.ipv4.ipfrag_time`).
pub const FRAG_TIMEOUT: Duration = Duration::from_secs(30);
/// Datagrams followed at a time per worker.
const SLOTS: usize = 4096;

/// A fragmented datagram: addresses, protocol and identification (IPv4's 16 bits or IPv6's 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragKey {
    pub src: Addr,
    pub dst: Addr,
    pub id: u32,
    pub proto: u8,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    key: FragKey,
    sport: u16,
    dport: u16,
    /// On the connection table's clock; 0 for a slot never used.
    expires: u64,
}

/// One worker's followed datagrams.
pub struct FragTable {
    slots: Box<[Slot]>,
    hasher: ahash::RandomState,
}

impl Default for FragTable {
    fn default() -> FragTable {
        FragTable {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl FragTable {
    fn slot(&self, k: &FragKey) -> usize {
        let mut h = self.hasher.build_hasher();
        h.write(&k.src.0);
        h.write(&k.dst.0);
        h.write_u32(k.id);
        h.write_u8(k.proto);
        h.finish() as usize % SLOTS
    }

    /// Remembers the ports of the datagram whose first fragment this is, until `now_ns` +
    /// [`FRAG_TIMEOUT`] (nanoseconds on the connection table's clock).
    pub fn insert(&mut self, key: FragKey, sport: u16, dport: u16, now_ns: u64) {
        let i = self.slot(&key);
        self.slots[i] = Slot {
            key,
            sport,
            dport,
            expires: now_ns + FRAG_TIMEOUT.as_nanos() as u64,
        };
    }

    /// The ports of a later fragment's datagram, if its first fragment was forwarded lately.
    pub fn ports(&self, key: &FragKey, now_ns: u64) -> Option<(u16, u16)> {
        let s = &self.slots[self.slot(key)];
        (s.expires > now_ns && s.key == *key).then_some((s.sport, s.dport))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> FragKey {
        FragKey {
            src: Addr::from_v4([198, 18, 1, 2]),
            dst: Addr::from_v4([198, 18, 0, 10]),
            id,
            proto: 17,
        }
    }

    #[test]
    fn ports_are_found_by_the_whole_key_until_they_expire() {
        let mut t = FragTable::default();
        let s = 1_000_000_000;
        assert_eq!(t.ports(&key(7), s), None);
        t.insert(key(7), 40000, 53, s);
        assert_eq!(t.ports(&key(7), s + 1), Some((40000, 53)));
        assert_eq!(t.ports(&key(8), s + 1), None);
        assert_eq!(t.ports(&FragKey { proto: 6, ..key(7) }, s + 1), None);
        let swapped = FragKey {
            src: key(7).dst,
            dst: key(7).src,
            ..key(7)
        };
        assert_eq!(t.ports(&swapped, s + 1), None);
        let end = s + FRAG_TIMEOUT.as_nanos() as u64;
        assert_eq!(t.ports(&key(7), end - 1), Some((40000, 53)));
        assert_eq!(t.ports(&key(7), end), None);
        // A new first fragment with the same key (identification reused) replaces the ports.
        t.insert(key(7), 40001, 53, end);
        assert_eq!(t.ports(&key(7), end + 1), Some((40001, 53)));
    }

    #[test]
    fn the_table_is_bounded_and_keeps_the_latest() {
        let mut t = FragTable::default();
        for id in 0..100_000 {
            t.insert(key(id), (id % 60000) as u16, 53, 1);
        }
        assert_eq!(t.slots.len(), SLOTS);
        assert_eq!(t.ports(&key(99_999), 2), Some((39_999, 53)));
        let kept = (0..100_000).filter(|&id| t.ports(&key(id), 2).is_some()).count();
        assert!(kept <= SLOTS && kept > SLOTS / 2, "{kept}");
    }
}
