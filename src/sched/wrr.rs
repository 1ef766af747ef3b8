//! Weighted round robin (`ip_vs_wrr.c`): IPVS's interleaved schedule over weight levels.
//!
//! The current weight `cw` starts at the maximum weight and drops by the gcd of the weights after
//! each pass over the list; a pass picks, in order, every server whose weight is at least `cw`.
//! Over one cycle of `sum(weight) / gcd` choices each server is chosen exactly `weight / gcd`
//! times, interleaved rather than in runs (5:3:1 gives A A A B A B A B C).

use super::{SchedKey, Scheduler, gcd_weight};
use crate::types::{Dest, DestCounters, SchedKind};

/// Weighted round-robin scheduler; each worker keeps its own position and current weight.
#[derive(Clone, Debug)]
pub struct Wrr {
    /// Server examined last; None is IPVS's list head (before the first server).
    cl: Option<usize>,
    /// Current weight.
    cw: i64,
    /// Maximum weight.
    mw: i64,
    /// Gcd of the positive weights: the step by which `cw` decreases.
    di: i64,
}

impl Wrr {
    /// Precomputes the maximum weight and gcd of `dests`.
    pub fn new(dests: &[Dest]) -> Wrr {
        Wrr {
            cl: None,
            cw: 0,
            mw: dests.iter().map(|d| i64::from(d.weight)).max().unwrap_or(0),
            di: i64::from(gcd_weight(dests).max(1)),
        }
    }
}

impl Scheduler for Wrr {
    fn schedule(&mut self, dests: &[Dest], _loads: &DestCounters, _key: &SchedKey) -> Option<usize> {
        let n = dests.len();
        if self.mw == 0 || n == 0 {
            return None;
        }
        // The heaviest server qualifies at every level, so a choice is at most the rest of this
        // pass, the head and one more pass away; the bound only guards against a foreign slice.
        for _ in 0..2 * (n + 1) + 1 {
            match self.cl {
                None => {
                    self.cl = Some(0);
                    self.cw -= self.di;
                    if self.cw <= 0 {
                        self.cw = self.mw;
                    }
                }
                Some(i) => self.cl = (i + 1 < n).then_some(i + 1),
            }
            if let Some(i) = self.cl {
                if i64::from(dests[i].weight) >= self.cw {
                    return Some(i);
                }
            }
        }
        None
    }

    fn fork(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn kind(&self) -> SchedKind {
        SchedKind::Wrr
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn sequence(weights: &[u32], n: usize) -> Vec<usize> {
        let d = dests(weights);
        let l = loads(&[]);
        let mut s = Wrr::new(&d);
        (0..n).map(|i| s.schedule(&d, &l, &key(i as u64)).unwrap()).collect()
    }

    /// Every whole cycle of `sum(w)/gcd` choices gives each server exactly `w/gcd`.
    fn assert_exact_cycles(weights: &[u32]) {
        let g = weights.iter().copied().filter(|&w| w > 0).fold(0, |a, b| {
            let (mut a, mut b) = (a, b);
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        });
        let cycle = weights.iter().map(|w| (w / g) as usize).sum::<usize>();
        let seq = sequence(weights, cycle * 3);
        for c in seq.chunks(cycle) {
            for (i, &w) in weights.iter().enumerate() {
                let got = c.iter().filter(|&&x| x == i).count();
                assert_eq!(got, (w / g) as usize, "weights {weights:?} server {i}");
            }
        }
    }

    #[test]
    fn exact_proportions_per_cycle() {
        for w in [
            &[5, 3, 1][..],
            &[1, 1],
            &[4, 0, 2],
            &[100, 1],
            &[2, 4, 6, 8],
            &[7],
            &[3, 0, 0, 9, 1],
        ] {
            assert_exact_cycles(w);
        }
    }

    #[test]
    fn interleaves_as_ipvs() {
        assert_eq!(sequence(&[5, 3, 1], 9), [0, 0, 0, 1, 0, 1, 0, 1, 2]);
        assert_eq!(sequence(&[4, 0, 2], 6), [0, 0, 2, 0, 0, 2]);
    }

    #[test]
    fn drained_server_never_chosen() {
        assert!(!sequence(&[0, 3, 0, 1], 100).iter().any(|&i| i == 0 || i == 2));
    }

    #[test]
    fn huge_weights_stay_cheap_and_exact() {
        let seq = sequence(&[u32::MAX, 1], 1000);
        assert!(seq.iter().all(|&i| i == 0));
    }

    #[test]
    fn forks_continue_independently() {
        let d = dests(&[2, 1]);
        let l = loads(&[]);
        let mut a = Wrr::new(&d);
        assert_eq!(a.schedule(&d, &l, &key(0)), Some(0));
        let mut b = a.fork();
        let ra: Vec<_> = (0..3).map(|_| a.schedule(&d, &l, &key(0))).collect();
        let rb: Vec<_> = (0..3).map(|_| b.schedule(&d, &l, &key(0))).collect();
        assert_eq!(ra, rb);
        assert_eq!(ra, [Some(0), Some(1), Some(0)]);
    }
}
