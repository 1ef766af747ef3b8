//! Weighted failover (`ip_vs_fo.c`): every new connection to the available server with the
//! highest weight; the first such server on ties. When it is drained (weight 0) or removed, the
//! next snapshot's highest-weight server takes over.

use super::{SchedKey, Scheduler};
use crate::types::{Dest, DestCounters, SchedKind};

/// Weighted-failover scheduler (stateless).
#[derive(Clone, Copy, Debug, Default)]
pub struct Fo;

impl Scheduler for Fo {
    fn schedule(&mut self, dests: &[Dest], _loads: &DestCounters, _key: &SchedKey) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            if d.weight > best.map_or(0, |(_, w)| w) {
                best = Some((i, d.weight));
            }
        }
        best.map(|(i, _)| i)
    }

    fn fork(&self) -> Box<dyn Scheduler> {
        Box::new(*self)
    }

    fn kind(&self) -> SchedKind {
        SchedKind::Fo
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn pick(weights: &[u32]) -> Option<usize> {
        Fo.schedule(&dests(weights), &loads(&[(100, 0)]), &key(0))
    }

    #[test]
    fn highest_weight_whatever_the_load() {
        assert_eq!(pick(&[1, 5, 3]), Some(1));
        assert_eq!(pick(&[2, 5, 5]), Some(1));
    }

    #[test]
    fn fails_over_when_primary_drained() {
        assert_eq!(pick(&[10, 5, 3]), Some(0));
        assert_eq!(pick(&[0, 5, 3]), Some(1));
        assert_eq!(pick(&[0, 0, 3]), Some(2));
        assert_eq!(pick(&[0, 0, 0]), None);
    }
}
