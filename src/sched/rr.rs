//! Round robin (`ip_vs_rr.c`): servers in turn, skipping drained ones.

use super::{SchedKey, Scheduler};
use crate::types::{Dest, DestCounters, SchedKind};

/// Round-robin scheduler; each worker keeps its own position.
#[derive(Clone, Debug, Default)]
pub struct Rr {
    /// Index of the server chosen last; None before the first choice (IPVS's list head).
    last: Option<usize>,
}

impl Rr {
    /// A scheduler whose first choice is the first available server.
    pub fn new() -> Rr {
        Rr { last: None }
    }
}

impl Scheduler for Rr {
    fn schedule(&mut self, dests: &[Dest], _loads: &DestCounters, _key: &SchedKey) -> Option<usize> {
        let n = dests.len();
        let start = self.last.map_or(0, |l| l.wrapping_add(1));
        let found = (0..n).map(|k| (start + k) % n).find(|&i| dests[i].weight > 0)?;
        self.last = Some(found);
        Some(found)
    }

    fn fork(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn kind(&self) -> SchedKind {
        SchedKind::Rr
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn run(weights: &[u32], n: usize) -> Vec<Option<usize>> {
        let d = dests(weights);
        let l = loads(&[]);
        let mut s = Rr::new();
        (0..n).map(|i| s.schedule(&d, &l, &key(i as u64))).collect()
    }

    #[test]
    fn cycles_in_order() {
        let got = run(&[1, 1, 1], 7);
        let want = [0, 1, 2, 0, 1, 2, 0].map(Some);
        assert_eq!(got, want);
    }

    #[test]
    fn ignores_weight_size_but_skips_drained() {
        let got = run(&[5, 0, 1, 0], 5);
        assert_eq!(got, [0, 2, 0, 2, 0].map(Some));
    }

    #[test]
    fn forks_keep_their_own_position() {
        let d = dests(&[1, 1, 1]);
        let l = loads(&[]);
        let mut a = Rr::new();
        assert_eq!(a.schedule(&d, &l, &key(0)), Some(0));
        let mut b = a.fork();
        assert_eq!(a.schedule(&d, &l, &key(0)), Some(1));
        assert_eq!(b.schedule(&d, &l, &key(0)), Some(1));
        assert_eq!(b.schedule(&d, &l, &key(0)), Some(2));
        assert_eq!(a.schedule(&d, &l, &key(0)), Some(2));
    }

    #[test]
    fn survives_a_shorter_slice() {
        let l = loads(&[]);
        let mut s = Rr::new();
        let big = dests(&[1, 1, 1, 1]);
        for _ in 0..4 {
            s.schedule(&big, &l, &key(0));
        }
        assert_eq!(s.schedule(&dests(&[1, 1]), &l, &key(0)), Some(0));
    }
}
