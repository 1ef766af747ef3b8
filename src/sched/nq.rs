//! Never queue (`ip_vs_nq.c`): an idle server (no active connections) at once, else as sed.
//!
//! The first idle available server in list order wins, whatever its weight, as in IPVS.

use super::sed::sed_overhead;
use super::{SchedKey, Scheduler};
use crate::types::{Dest, DestCounters, SchedKind};

/// Never-queue scheduler (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Nq;

impl Scheduler for Nq {
    fn schedule(&mut self, dests: &[Dest], loads: &DestCounters, _key: &SchedKey) -> Option<usize> {
        let mut least: Option<(usize, u64, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            if d.weight == 0 {
                continue;
            }
            if loads.get(d.id).active() == 0 {
                return Some(i);
            }
            let doh = sed_overhead(loads, d);
            let better = least
                .is_none_or(|(_, loh, lw)| u128::from(loh) * u128::from(d.weight) > u128::from(doh) * u128::from(lw));
            if better {
                least = Some((i, doh, d.weight));
            }
        }
        least.map(|(i, _, _)| i)
    }

    fn fork(&self) -> Box<dyn Scheduler> {
        Box::new(*self)
    }

    fn kind(&self) -> SchedKind {
        SchedKind::Nq
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn pick(weights: &[u32], counts: &[(u32, u32)]) -> Option<usize> {
        Nq.schedule(&dests(weights), &loads(counts), &key(0))
    }

    #[test]
    fn idle_server_first_whatever_its_weight() {
        // sed would pick server 1 ((2+1)/10 < (0+1)/1); nq takes the idle one.
        assert_eq!(pick(&[10, 1], &[(2, 0), (0, 500)]), Some(1));
        assert_eq!(pick(&[1, 1, 1], &[(1, 0), (0, 0), (0, 0)]), Some(1));
    }

    #[test]
    fn busy_servers_fall_back_to_sed() {
        assert_eq!(pick(&[1, 4], &[(1, 0), (3, 0)]), Some(1));
        assert_eq!(pick(&[1, 4], &[(1, 0), (8, 0)]), Some(0));
    }

    #[test]
    fn idle_but_drained_is_skipped() {
        assert_eq!(pick(&[0, 1], &[(0, 0), (7, 0)]), Some(1));
    }
}
