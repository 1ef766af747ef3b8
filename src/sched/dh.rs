//! Destination hashing (`ip_vs_dh.c`): the virtual address the client connected to picks one of
//! 256 buckets, each naming a server, so one destination always reaches one server (cache farms).
//!
//! Deliberate differences: the bucket is the top 8 bits of the multiplicative hash
//! (`hash_32(fold(vaddr), 8)`, as sh uses) rather than IPVS's low 8 bits, which depend only on
//! the address's last octet; the table is filled as `bucket_table` (in `sched/mod.rs`) describes.
//! As in IPVS, a client whose bucket names a drained server gets None.

use std::sync::Arc;

use super::{BUCKETS, NONE, SchedKey, Scheduler, available, bucket_table, fold_addr, hash_32_8};
use crate::types::{Dest, DestCounters, SchedKind};

/// Destination-hash scheduler; the bucket table is shared by all forks.
#[derive(Clone, Debug)]
pub struct Dh {
    table: Arc<[u32; BUCKETS]>,
}

impl Dh {
    /// Fills the bucket table from `dests`.
    pub fn new(dests: &[Dest]) -> Dh {
        Dh {
            table: Arc::new(bucket_table(dests)),
        }
    }
}

impl Scheduler for Dh {
    fn schedule(&mut self, dests: &[Dest], _loads: &DestCounters, key: &SchedKey) -> Option<usize> {
        let i = self.table[hash_32_8(fold_addr(&key.vaddr))];
        (i != NONE && available(dests, i as usize)).then_some(i as usize)
    }

    fn fork(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn kind(&self) -> SchedKind {
        SchedKind::Dh
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::types::Addr;

    fn vkey(n: u32) -> SchedKey {
        let b = n.to_be_bytes();
        SchedKey {
            vaddr: Addr::from_v4([198, 18 + (b[1] & 1), b[2], b[3]]),
            ..random_key(u64::from(n))
        }
    }

    #[test]
    fn same_destination_same_server_whatever_the_client() {
        let d = dests(&[1, 1, 1]);
        let l = loads(&[]);
        let mut a = Dh::new(&d);
        let mut b = Dh::new(&d).fork();
        for v in 0..500 {
            let want = a.schedule(&d, &l, &vkey(v));
            assert!(want.is_some());
            for c in 0..5u64 {
                let k = SchedKey {
                    caddr: random_key(c).caddr,
                    ..vkey(v)
                };
                assert_eq!(a.schedule(&d, &l, &k), want);
                assert_eq!(b.schedule(&d, &l, &k), want);
            }
        }
    }

    #[test]
    fn spreads_destinations_by_weight() {
        let d = dests(&[1, 3]);
        let l = loads(&[]);
        let mut s = Dh::new(&d);
        let mut h = [0u32; 2];
        for v in 0..20_000u32 {
            h[s.schedule(&d, &l, &vkey(v.wrapping_mul(2_654_435_761))).unwrap()] += 1;
        }
        let share = f64::from(h[1]) / 20_000.0;
        assert!((share - 0.75).abs() < 0.03, "{h:?}");
    }

    #[test]
    fn drained_server_refused() {
        let d = dests(&[1, 0]);
        let l = loads(&[]);
        let mut s = Dh::new(&d);
        for v in 0..1000 {
            assert_ne!(s.schedule(&d, &l, &vkey(v)), Some(1));
        }
    }
}
