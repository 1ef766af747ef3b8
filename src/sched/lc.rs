//! Least connections (`ip_vs_lc.c`): the server with the least overhead `active * 256 + inactive`.
//!
//! Weights only matter as on/off: a drained server is skipped. Ties go to the first server.

use super::{SchedKey, Scheduler};
use crate::types::{Dest, DestCounters, SchedKind};

/// IPVS's `ip_vs_dest_conn_overhead`: an active connection costs 256 inactive ones.
#[inline]
pub(crate) fn overhead(loads: &DestCounters, d: &Dest) -> u64 {
    let c = loads.get(d.id);
    (u64::from(c.active()) << 8) + u64::from(c.inactive())
}

/// Least-connection scheduler (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Lc;

impl Scheduler for Lc {
    fn schedule(&mut self, dests: &[Dest], loads: &DestCounters, _key: &SchedKey) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if d.weight == 0 {
                continue;
            }
            let doh = overhead(loads, d);
            if least.is_none_or(|(_, loh)| doh < loh) {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
    }

    fn fork(&self) -> Box<dyn Scheduler> {
        Box::new(*self)
    }

    fn kind(&self) -> SchedKind {
        SchedKind::Lc
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn pick(weights: &[u32], counts: &[(u32, u32)]) -> Option<usize> {
        Lc.schedule(&dests(weights), &loads(counts), &key(0))
    }

    #[test]
    fn least_overhead_wins() {
        assert_eq!(pick(&[1, 1, 1], &[(3, 0), (1, 0), (2, 0)]), Some(1));
        // One active connection outweighs 255 inactive ones.
        assert_eq!(pick(&[1, 1], &[(1, 0), (0, 255)]), Some(1));
        assert_eq!(pick(&[1, 1], &[(1, 0), (0, 257)]), Some(0));
    }

    #[test]
    fn weight_is_ignored_except_zero() {
        assert_eq!(pick(&[100, 1], &[(5, 0), (4, 0)]), Some(1));
        assert_eq!(pick(&[1, 0], &[(5, 0), (0, 0)]), Some(0));
    }

    #[test]
    fn ties_go_to_the_first() {
        assert_eq!(pick(&[1, 1, 1], &[(2, 2), (1, 1), (1, 1)]), Some(1));
    }

    #[test]
    fn follows_changing_counts() {
        let d = dests(&[1, 1]);
        let l = loads(&[(0, 0), (0, 0)]);
        let mut s = Lc;
        for round in 0..10u32 {
            let i = s.schedule(&d, &l, &key(0)).unwrap();
            l.get(d[i].id).active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(i as u32, round % 2);
        }
    }
}
