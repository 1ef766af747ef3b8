//! A shard's connection index: open addressing over cache-line buckets, so that the one line a
//! lookup needs first has an address computable from the hash alone, and can be prefetched for a
//! whole batch of packets before any of them is looked up (what `hashbrown` does not expose).
//!
//! Each 64-byte bucket holds ten entries, a 16-bit tag from the hash beside a 32-bit value (the
//! slab slot), and an overflow count: how many entries whose probe passed this bucket live
//! further on (as in folly's F14). The ten tags are compared at once, a lookup stops at the first
//! bucket with no overflow, so a miss costs one line in the common case, and a removal needs no
//! tombstones: it takes its entry out and lowers the counts on its probe path. The table doubles
//! at eight entries per bucket.

/// Entries per bucket.
const WAYS: usize = 10;
/// Average entries per bucket before the index doubles (8 of 10: probes stay short).
const MAX_LOAD: usize = 8;
/// Buckets of a new index.
const MIN_BUCKETS: usize = 8;

const _: () = assert!(size_of::<Bucket>() == 64);

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub(super) struct Bucket {
    /// 0 when the way is free (a tag is never 0).
    tags: [u16; WAYS],
    /// Saturates, as F14's: a count at its maximum is never lowered again (probes just go on).
    overflow: u16,
    _pad: u16,
    values: [u32; WAYS],
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

/// 16 bits of the hash, mixed so that they do not repeat the bits that chose the shard or the
/// bucket; bit 0 set so that no tag is 0.
#[inline]
fn tag(h: u64) -> u16 {
    ((h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as u16) | 1
}

/// Way masks hold two bits per way (as SSE2's byte mask of 16-bit lanes gives them): way `i` is
/// bits `2i` and `2i + 1`.
#[inline]
fn first_way(m: u32) -> usize {
    ((m.trailing_zeros() / 2) as usize).min(WAYS - 1)
}

#[inline]
fn without_first(m: u32) -> u32 {
    m & !(3 << (m.trailing_zeros() & !1))
}

impl Bucket {
    /// The ways that hold tag `t` (a way mask).
    #[inline]
    fn matching(&self, t: u16) -> u32 {
        let tail = (u32::from(self.tags[8] == t) * 0x3_0000) | (u32::from(self.tags[9] == t) * 0xc_0000);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `tags` is 20 bytes, of which the first 16 are read; SSE2 is part of x86_64.
        let head = unsafe {
            use std::arch::x86_64::{__m128i, _mm_cmpeq_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi16};
            let v = _mm_loadu_si128(self.tags.as_ptr().cast::<__m128i>());
            _mm_movemask_epi8(_mm_cmpeq_epi16(v, _mm_set1_epi16(t as i16))) as u32
        };
        #[cfg(not(target_arch = "x86_64"))]
        let head = self.tags[..8]
            .iter()
            .enumerate()
            .fold(0u32, |m, (i, &x)| m | u32::from(x == t) * (3 << (2 * i)));
        head | tail
    }
}

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
    #[inline(always)]
    pub fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(h);
        let mut b = self.home(h);
        for _ in 0..=self.mask {
            let bk = &self.buckets[b];
            let mut m = bk.matching(t);
            while m != 0 {
                let v = bk.values[first_way(m)];
                if eq(v) {
                    return Some(v);
                }
                m = without_first(m);
            }
            if bk.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// Makes room for `n` more entries: when they would pass the load limit, the index is
    /// replaced by one twice the size, which `fill` fills with every stored entry again (the
    /// caller walks its slab in order for them, rather than the index reading the slab at random).
    /// Returns whether it did (the buckets moved).
    pub fn reserve(&mut self, n: usize, fill: impl FnOnce(&mut Index)) -> bool {
        if self.len + n <= self.buckets.len() * MAX_LOAD {
            return false;
        }
        let mut new = Index::with_buckets((self.len + n).div_ceil(MAX_LOAD).max(self.buckets.len() * 2));
        fill(&mut new);
        debug_assert_eq!(new.len, self.len, "every entry placed again");
        *self = new;
        true
    }

    /// Adds `v` under hash `h`, in room made by [`Index::reserve`].
    pub fn insert(&mut self, h: u64, v: u32) {
        debug_assert!(self.len < self.buckets.len() * MAX_LOAD, "reserve first");
        self.place(h, v);
    }

    /// Stores an entry in the first free way on its probe path (the load limit keeps ways free).
    fn place(&mut self, h: u64, v: u32) {
        let t = tag(h);
        let mut b = self.home(h);
        for _ in 0..=self.mask {
            let bk = &mut self.buckets[b];
            let free = bk.matching(0);
            if free != 0 {
                let i = first_way(free);
                bk.tags[i] = t;
                bk.values[i] = v;
                self.len += 1;
                return;
            }
            bk.overflow = bk.overflow.saturating_add(1);
            b = (b + 1) & self.mask;
        }
        unreachable!("an index below its load limit has a free way");
    }

    /// Removes value `v` stored under hash `h`; false when it is not there.
    pub fn remove(&mut self, h: u64, v: u32) -> bool {
        let t = tag(h);
        let home = self.home(h);
        let mut b = home;
        for _ in 0..=self.mask {
            let bk = &mut self.buckets[b];
            let mut m = bk.matching(t);
            while m != 0 {
                let i = first_way(m);
                if bk.values[i] == v {
                    bk.tags[i] = 0;
                    self.len -= 1;
                    let mut k = home;
                    while k != b {
                        let o = &mut self.buckets[k].overflow;
                        if *o != u16::MAX {
                            *o -= 1;
                        }
                        k = (k + 1) & self.mask;
                    }
                    return true;
                }
                m = without_first(m);
            }
            if bk.overflow == 0 {
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

    /// Inserts as the connection table does: room first, from every value stored so far.
    fn add(ix: &mut Index, live: &HashMap<u32, bool>, h: impl Fn(u32) -> u64, v: u32) {
        ix.reserve(1, |new| {
            for (&v, _) in live.iter().filter(|e| *e.1) {
                new.insert(h(v), v);
            }
        });
        ix.insert(h(v), v);
    }

    #[test]
    fn insert_find_remove_with_overflow_and_growth() {
        let mut ix = Index::default();
        let mut live: HashMap<u32, bool> = HashMap::new();
        for v in 0..5000u32 {
            add(&mut ix, &live, crowded, v);
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
                .all(|b| b.overflow == 0 && b.tags.iter().all(|&t| t == 0))
        );
    }

    #[test]
    fn equal_hashes_are_told_apart_by_the_predicate() {
        let mut ix = Index::default();
        let mut live = HashMap::new();
        for v in 0..100u32 {
            add(&mut ix, &live, |_| 42, v);
            live.insert(v, true);
        }
        for v in 0..100u32 {
            assert_eq!(ix.find(42, |x| x == v), Some(v));
        }
        assert_eq!(ix.find(42, |x| x == 100), None);
        assert_eq!(ix.find(43, |_| true), None);
    }

    #[test]
    fn every_way_is_matched_and_freed() {
        let mut b = Bucket::default();
        assert_eq!(b.matching(0), 0xf_ffff, "all ten ways free");
        for i in 0..WAYS {
            b.tags[i] = 7;
            let m = b.matching(7);
            assert_eq!(first_way(m), 0);
            let mut ways = vec![];
            let mut m = m;
            while m != 0 {
                ways.push(first_way(m));
                m = without_first(m);
            }
            assert_eq!(ways, (0..=i).collect::<Vec<_>>());
            assert_eq!(b.matching(0).count_ones() as usize, 2 * (WAYS - 1 - i));
        }
    }

    #[test]
    fn a_saturated_overflow_count_stays_and_keeps_its_chain_reachable() {
        let mut ix = Index::default();
        let mut live = HashMap::new();
        // 60 values on 5 home buckets of 10 ways: chains overflow.
        for v in 0..60u32 {
            add(&mut ix, &live, crowded, v);
            live.insert(v, true);
        }
        let home = crowded(0) as usize & ix.mask;
        assert!(ix.buckets[home].overflow > 0);
        ix.buckets[home].overflow = u16::MAX;
        for v in (0..60u32).step_by(2) {
            assert!(ix.remove(crowded(v), v));
        }
        assert_eq!(ix.buckets[home].overflow, u16::MAX, "never lowered once saturated");
        for v in 0..60u32 {
            assert_eq!(ix.find(crowded(v), |x| x == v), (v % 2 == 1).then_some(v), "value {v}");
        }
    }

    #[test]
    fn grows_at_the_load_limit() {
        let mut ix = Index::default();
        let mut live = HashMap::new();
        let h = |v: u32| u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for v in 0..(MIN_BUCKETS * MAX_LOAD) as u32 {
            add(&mut ix, &live, h, v);
            live.insert(v, true);
        }
        assert_eq!(ix.buckets.len(), MIN_BUCKETS);
        add(&mut ix, &live, h, 1000);
        assert_eq!(ix.buckets.len(), MIN_BUCKETS * 2);
        for v in (0..(MIN_BUCKETS * MAX_LOAD) as u32).chain([1000]) {
            assert_eq!(ix.find(h(v), |x| x == v), Some(v));
        }
        assert_eq!(ix.memory_bytes(), MIN_BUCKETS * 2 * 64);
    }
}
