//! Weighted least connections (`ip_vs_wlc.c`): least `overhead / weight`, the IPVS default.
//!
//! The ratios are compared by cross-multiplication, as IPVS does, in 128-bit arithmetic so that
//! large weights and counts cannot overflow. Ties go to the first server.

use super::lc::overhead;
use super::{SchedKey, Scheduler};
use crate::types::{Dest, DestCounters, SchedKind};

/// Weighted least-connection scheduler (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Wlc;

impl Scheduler for Wlc {
    fn schedule(&mut self, dests: &[Dest], loads: &DestCounters, _key: &SchedKey) -> Option<usize> {
        least_ratio(dests, |d| overhead(loads, d))
    }

    fn fork(&self) -> Box<dyn Scheduler> {
        Box::new(*self)
    }

    fn kind(&self) -> SchedKind {
        SchedKind::Wlc
    }
}

/// The available server with the least `cost(d) / d.weight`, the first on ties.
#[inline]
pub(crate) fn least_ratio(dests: &[Dest], cost: impl Fn(&Dest) -> u64) -> Option<usize> {
    let mut least: Option<(usize, u64, u32)> = None;
    for (i, d) in dests.iter().enumerate() {
        if d.weight == 0 {
            continue;
        }
        let doh = cost(d);
        // loh / lw > doh / dw  <=>  loh * dw > doh * lw, with both weights positive.
        let better =
            least.is_none_or(|(_, loh, lw)| u128::from(loh) * u128::from(d.weight) > u128::from(doh) * u128::from(lw));
        if better {
            least = Some((i, doh, d.weight));
        }
    }
    least.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn pick(weights: &[u32], counts: &[(u32, u32)]) -> Option<usize> {
        Wlc.schedule(&dests(weights), &loads(counts), &key(0))
    }

    #[test]
    fn overhead_per_weight() {
        // 4 active on weight 3 (341/unit) beats 2 active on weight 1 (512/unit).
        assert_eq!(pick(&[1, 3], &[(2, 0), (4, 0)]), Some(1));
        assert_eq!(pick(&[1, 3], &[(1, 0), (4, 0)]), Some(0));
        // Inactive connections count 1/256 of an active one.
        assert_eq!(pick(&[1, 1], &[(1, 10), (1, 9)]), Some(1));
        assert_eq!(pick(&[2, 1], &[(0, 0), (0, 0)]), Some(0));
    }

    #[test]
    fn drained_skipped_even_when_idle() {
        assert_eq!(pick(&[0, 1], &[(0, 0), (50, 50)]), Some(1));
    }

    #[test]
    fn no_overflow_with_huge_values() {
        let got = pick(&[u32::MAX, 1], &[(u32::MAX, u32::MAX), (u32::MAX, u32::MAX)]);
        assert_eq!(got, Some(0));
    }

    #[test]
    fn converges_to_weight_proportions() {
        let d = dests(&[3, 1]);
        let l = loads(&[(0, 0), (0, 0)]);
        let mut s = Wlc;
        for _ in 0..400 {
            let i = s.schedule(&d, &l, &key(0)).unwrap();
            l.get(d[i].id).active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(l.get(0).active(), 300);
        assert_eq!(l.get(1).active(), 100);
    }
}
