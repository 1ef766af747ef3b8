//! A shard's connection index: open addressing over cache-line buckets, so that the one line a
//! lookup needs first has an address computable from the hash alone, and can be prefetched for a
//! whole batch of packets before any of them is looked up (what `hashbrown` does not expose).
//!
//! Each 64-byte bucket holds seven entries, a 32-bit tag from the hash beside a 32-bit value (the
//! slab slot), and an overflow count: how many entries whose probe passed this bucket live
//! further on (as in folly's F14). A lookup stops at the first bucket with no overflow, so a miss
//! costs one line in the common case, and a removal needs no tombstones: it takes its entry out
//! and lowers the counts on its probe path. The table doubles at six entries per bucket.

/// Entries per bucket.
const WAYS: usize = 7;
/// Average entries per bucket before the index doubles (6 of 7: probes stay short).
const MAX_LOAD: usize = 6;
/// Buckets of a new index.
const MIN_BUCKETS: usize = 8;

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub(super) struct Bucket {
    overflow: u32,
    _pad: u32,
    /// `tag << 32 | value`, or 0 when free (a tag is never 0).
    entries: [u64; WAYS],
}

pub(super) struct Index {
    buckets: Vec<Bucket>,
    mask: usize,
    len: usize,
}

impl Default for Index {
    fn default() -> Index {
        Index::with_buckets(MIN_BUCKETS)
    }
}

/// The high half of an entry: 32 bits of the hash, mixed so that they do not repeat the bits
/// that chose the shard or the bucket; bit 0 set so that no tag is 0.
#[inline]
fn tag(h: u64) -> u64 {
    ((h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) | 1) << 32
}

const TAG: u64 = 0xffff_ffff_0000_0000;

impl Index {
    fn with_buckets(n: usize) -> Index {
        let n = n.next_power_of_two();
        Index {
            buckets: vec![Bucket::default(); n],
            mask: n - 1,
            len: 0,
        }
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        h as usize & self.mask
    }

    /// Where the bucket of `h` is, for a prefetch: the bucket array and its mask.
    pub fn layout(&self) -> (*const Bucket, usize) {
        (self.buckets.as_ptr(), self.mask)
    }

    /// The first value stored under hash `h` that `eq` accepts.
    #[inline]
    pub fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag(h);
        let mut b = self.home(h);
        for _ in 0..=self.mask {
            let bk = &self.buckets[b];
            for &e in &bk.entries {
                if e & TAG == tag && eq(e as u32) {
                    return Some(e as u32);
                }
            }
            if bk.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// Adds `v` under hash `h`; `rehash` gives the hash of a stored value when the index grows.
    pub fn insert(&mut self, h: u64, v: u32, rehash: impl Fn(u32) -> u64) {
        if self.len >= self.buckets.len() * MAX_LOAD {
            self.grow(rehash);
        }
        self.place(h, v);
    }

    /// Stores an entry in the first free way on its probe path; the load limit keeps one free.
    fn place(&mut self, h: u64, v: u32) {
        let e = tag(h) | u64::from(v);
        let mut b = self.home(h);
        loop {
            let bk = &mut self.buckets[b];
            if let Some(x) = bk.entries.iter_mut().find(|x| **x == 0) {
                *x = e;
                self.len += 1;
                return;
            }
            bk.overflow += 1;
            b = (b + 1) & self.mask;
        }
    }

    fn grow(&mut self, rehash: impl Fn(u32) -> u64) {
        let mut new = Index::with_buckets(self.buckets.len() * 2);
        for bk in &self.buckets {
            for &e in bk.entries.iter().filter(|&&e| e != 0) {
                new.place(rehash(e as u32), e as u32);
            }
        }
        *self = new;
    }

    /// Removes value `v` stored under hash `h`; false when it is not there.
    pub fn remove(&mut self, h: u64, v: u32) -> bool {
        let e = tag(h) | u64::from(v);
        let home = self.home(h);
        let mut b = home;
        for _ in 0..=self.mask {
            if let Some(x) = self.buckets[b].entries.iter_mut().find(|x| **x == e) {
                *x = 0;
                self.len -= 1;
                let mut k = home;
                while k != b {
                    self.buckets[k].overflow -= 1;
                    k = (k + 1) & self.mask;
                }
                return true;
            }
            if self.buckets[b].overflow == 0 {
                return false;
            }
            b = (b + 1) & self.mask;
        }
        false
    }

    /// Entries stored.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<Bucket>()
    }
}

/// Starts loading the cache line at `p` (a hint: no fault, whatever `p` is).
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing architecturally and cannot fault, at any address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A hash with few distinct home buckets, so that probes overflow into the next buckets.
    fn crowded(v: u32) -> u64 {
        u64::from(v % 5).wrapping_mul(0x1234_5678_9abc_def1) ^ u64::from(v) << 40
    }

    #[test]
    fn insert_find_remove_with_overflow_and_growth() {
        let mut ix = Index::default();
        let mut live: HashMap<u32, bool> = HashMap::new();
        for v in 0..5000u32 {
            ix.insert(crowded(v), v, crowded);
            live.insert(v, true);
        }
        for v in (0..5000u32).step_by(3) {
            assert!(ix.remove(crowded(v), v));
            assert!(!ix.remove(crowded(v), v), "removed twice");
            live.insert(v, false);
        }
        for (&v, &there) in &live {
            assert_eq!(ix.find(crowded(v), |x| x == v), there.then_some(v), "value {v}");
        }
        assert_eq!(ix.len, live.values().filter(|&&t| t).count());
        // Everything removed: no overflow count is left behind.
        for v in 0..5000u32 {
            ix.remove(crowded(v), v);
        }
        assert_eq!(ix.len, 0);
        assert!(
            ix.buckets
                .iter()
                .all(|b| b.overflow == 0 && b.entries.iter().all(|&e| e == 0))
        );
    }

    #[test]
    fn equal_hashes_are_told_apart_by_the_predicate() {
        let mut ix = Index::default();
        for v in 0..100u32 {
            ix.insert(42, v, |_| 42);
        }
        for v in 0..100u32 {
            assert_eq!(ix.find(42, |x| x == v), Some(v));
        }
        assert_eq!(ix.find(42, |x| x == 100), None);
        assert_eq!(ix.find(43, |_| true), None);
    }

    #[test]
    fn grows_at_the_load_limit() {
        let mut ix = Index::default();
        let h = |v: u32| u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for v in 0..(MIN_BUCKETS * MAX_LOAD) as u32 {
            ix.insert(h(v), v, h);
        }
        assert_eq!(ix.buckets.len(), MIN_BUCKETS);
        ix.insert(h(1000), 1000, h);
        assert_eq!(ix.buckets.len(), MIN_BUCKETS * 2);
        assert_eq!(ix.memory_bytes(), MIN_BUCKETS * 2 * 64);
    }
}
