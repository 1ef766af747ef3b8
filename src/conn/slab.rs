//! A shard's connection entries, in chunks that are never moved: growing a `Vec` by reallocation
//! copies every entry each time (a third of a new connection's cost while a large table filled)
//! and needs room for both copies meanwhile.
//!
//! Chunks double from 1024 entries up to 16384 and stay at that size after, so that a small
//! table stays small and a large one wastes at most one partly filled chunk per shard.
//!
//! Each entry is two parts in parallel chunks: the [`Hot`] line every packet reads, aligned to a
//! cache line of its own, and the [`Cold`] rest.

use super::index::prefetch;
use super::{Cold, Hot};

/// Entries of the first chunk (and of the second).
const FIRST: usize = 1024;
const FIRST_SHIFT: u32 = FIRST.trailing_zeros();
/// Chunks stop doubling at `1 << LAST_SHIFT` entries.
const LAST_SHIFT: u32 = 14;
/// Chunks before the first of the largest size: 1024, 1024, 2048, 4096, 8192.
const GROWING: usize = (LAST_SHIFT - FIRST_SHIFT) as usize + 1;

#[derive(Default)]
pub(super) struct Slab {
    chunks: Vec<Box<[Option<Hot>]>>,
    colds: Vec<Box<[Cold]>>,
    len: usize,
}

/// The chunk and the place in it of entry `s`.
#[inline]
fn locate(s: usize) -> (usize, usize) {
    if s >> LAST_SHIFT == 0 {
        match s >> FIRST_SHIFT {
            0 => (0, s),
            q => {
                let k = (usize::BITS - q.leading_zeros()) as usize;
                (k, s - (FIRST << (k - 1)))
            }
        }
    } else {
        ((s >> LAST_SHIFT) + GROWING - 1, s & ((1 << LAST_SHIFT) - 1))
    }
}

fn chunk_len(k: usize) -> usize {
    if k == 0 {
        FIRST
    } else {
        FIRST << (k - 1).min(GROWING - 1)
    }
}

impl Slab {
    /// Entries ever used (live or free).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn capacity(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    /// Appends an entry; returns its slot.
    pub fn push(&mut self, h: Hot, c: Cold) -> usize {
        let s = self.len;
        let (k, i) = locate(s);
        if k == self.chunks.len() {
            self.chunks.push(vec![None; chunk_len(k)].into_boxed_slice());
            self.colds.push(vec![Cold::default(); chunk_len(k)].into_boxed_slice());
        }
        self.chunks[k][i] = Some(h);
        self.colds[k][i] = c;
        self.len += 1;
        s
    }

    #[inline]
    pub fn get(&self, s: usize) -> Option<&Hot> {
        let (k, i) = locate(s);
        self.chunks.get(k)?.get(i)?.as_ref()
    }

    #[inline]
    pub fn get_mut(&mut self, s: usize) -> Option<&mut Option<Hot>> {
        let (k, i) = locate(s);
        self.chunks.get_mut(k)?.get_mut(i)
    }

    /// The cold part of entry `s` (stale where the entry is free).
    #[inline]
    pub fn cold(&self, s: usize) -> Option<&Cold> {
        let (k, i) = locate(s);
        self.colds.get(k)?.get(i)
    }

    #[inline]
    pub fn cold_mut(&mut self, s: usize) -> Option<&mut Cold> {
        let (k, i) = locate(s);
        self.colds.get_mut(k)?.get_mut(i)
    }

    /// Where entry `s`'s hot line is, for a prefetch (null for a slot beyond the slab).
    #[inline]
    pub fn entry_ptr(&self, s: usize) -> *const Option<Hot> {
        let (k, i) = locate(s);
        self.chunks
            .get(k)
            .map_or(std::ptr::null(), |c| c.as_ptr().wrapping_add(i))
    }

    /// Starts loading both parts of entry `s`, about to be written.
    #[inline]
    pub fn prefetch_slot(&self, s: usize) {
        let (k, i) = locate(s);
        if let (Some(h), Some(c)) = (self.chunks.get(k), self.colds.get(k)) {
            prefetch(h.as_ptr().wrapping_add(i));
            prefetch(c.as_ptr().wrapping_add(i));
        }
    }

    /// Every slot in use, in order, with its cold part.
    pub fn iter(&self) -> impl Iterator<Item = (Option<&Hot>, &Cold)> {
        self.chunks
            .iter()
            .zip(&self.colds)
            .flat_map(|(h, c)| h.iter().map(Option::as_ref).zip(c.iter()))
            .take(self.len)
    }

    pub fn memory_bytes(&self) -> usize {
        self.capacity() * (size_of::<Option<Hot>>() + size_of::<Cold>())
            + self.chunks.capacity() * size_of::<Box<[Option<Hot>]>>()
            + self.colds.capacity() * size_of::<Box<[Cold]>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_one_to_one_onto_chunks_in_order() {
        let mut at = (0, 0);
        assert_eq!(locate(0), at);
        for s in 1..300_000 {
            let next = if at.1 + 1 < chunk_len(at.0) {
                (at.0, at.1 + 1)
            } else {
                (at.0 + 1, 0)
            };
            assert_eq!(locate(s), next, "slot {s}");
            at = next;
        }
        let sizes: Vec<usize> = (0..8).map(chunk_len).collect();
        assert_eq!(sizes, [1024, 1024, 2048, 4096, 8192, 16384, 16384, 16384]);
    }
}
