//! Shortest expected delay (`ip_vs_sed.c`): least `(active + 1) / weight`.
//!
//! Inactive connections are ignored, as in IPVS. Ratios are compared by cross-multiplication.

use super::wlc::least_ratio;
use super::{SchedKey, Scheduler};
use crate::types::{Dest, DestCounters, SchedKind};

/// The expected delay numerator: the new connection waits behind every active one.
#[inline]
pub(crate) fn sed_overhead(loads: &DestCounters, d: &Dest) -> u64 {
    u64::from(loads.get(d.id).active()) + 1
}

/// Shortest-expected-delay scheduler (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sed;

impl Scheduler for Sed {
    fn schedule(&mut self, dests: &[Dest], loads: &DestCounters, _key: &SchedKey) -> Option<usize> {
        least_ratio(dests, |d| sed_overhead(loads, d))
    }

    fn fork(&self) -> Box<dyn Scheduler> {
        Box::new(*self)
    }

    fn kind(&self) -> SchedKind {
        SchedKind::Sed
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn pick(weights: &[u32], counts: &[(u32, u32)]) -> Option<usize> {
        Sed.schedule(&dests(weights), &loads(counts), &key(0))
    }

    #[test]
    fn expected_delay() {
        // (0+1)/1 = 1 vs (2+1)/4 = 0.75: the busier but heavier server wins.
        assert_eq!(pick(&[1, 4], &[(0, 0), (2, 0)]), Some(1));
        // (0+1)/1 = 1 vs (4+1)/4 = 1.25.
        assert_eq!(pick(&[1, 4], &[(0, 0), (4, 0)]), Some(0));
        // All idle: the heaviest.
        assert_eq!(pick(&[1, 3, 2], &[]), Some(1));
    }

    #[test]
    fn inactive_ignored_and_drained_skipped() {
        assert_eq!(pick(&[1, 1], &[(1, 0), (1, 1000)]), Some(0));
        assert_eq!(pick(&[1, 1], &[(2, 0), (1, 1000)]), Some(1));
        assert_eq!(pick(&[0, 1], &[(0, 0), (9, 0)]), Some(1));
    }
}
