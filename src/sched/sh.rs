//! Source hashing (`ip_vs_sh.c`): the client address (and port with `opts.port`) picks one of 256
//! buckets, each naming a server; the same client always reaches the same server while the set
//! of servers is unchanged.
//!
//! The bucket hash is IPVS's own (`hash_32(port + fold(addr), 8)`), so for equal tables a client
//! lands in the same bucket as under IPVS. As in IPVS a drained server keeps a bucket: without
//! `opts.fallback` its clients get None (they are not silently moved to another server); with it,
//! the other buckets are tried in IPVS's order. The table is filled as `bucket_table` (in
//! `sched/mod.rs`) describes: shares exact to a bucket where IPVS's are not, a deliberate difference.

use std::sync::Arc;

use super::{BUCKETS, NONE, SchedKey, Scheduler, available, bucket_table, fold_addr, hash_32_8};
use crate::types::{Addr, Dest, DestCounters, SchedKind, SchedOpts};

/// Source-hash scheduler; the bucket table is shared by all forks.
#[derive(Clone, Debug)]
pub struct Sh {
    table: Arc<[u32; BUCKETS]>,
    port: bool,
    fallback: bool,
}

/// IPVS's `ip_vs_sh_hashkey`.
#[inline]
fn hashkey(addr: &Addr, port: u16, offset: usize) -> usize {
    (offset + hash_32_8(u32::from(port).wrapping_add(fold_addr(addr)))) % BUCKETS
}

impl Sh {
    /// Fills the bucket table from `dests`.
    pub fn new(dests: &[Dest], opts: &SchedOpts) -> Sh {
        Sh {
            table: Arc::new(bucket_table(dests)),
            port: opts.port,
            fallback: opts.fallback,
        }
    }
}

impl Scheduler for Sh {
    fn schedule(&mut self, dests: &[Dest], _loads: &DestCounters, key: &SchedKey) -> Option<usize> {
        let port = if self.port { key.cport } else { 0 };
        let ihash = hashkey(&key.caddr, port, 0);
        let first = self.table[ihash];
        if first == NONE {
            return None;
        }
        if available(dests, first as usize) {
            return Some(first as usize);
        }
        if !self.fallback {
            return None;
        }
        (0..BUCKETS)
            .map(|offset| self.table[hashkey(&key.caddr, port, (offset + ihash) % BUCKETS)] as usize)
            .find(|&i| available(dests, i))
    }

    fn fork(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn kind(&self) -> SchedKind {
        SchedKind::Sh
    }
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::super::testutil::*;
    use super::*;

    fn opts(fallback: bool, port: bool) -> SchedOpts {
        SchedOpts {
            fallback,
            port,
            ..SchedOpts::default()
        }
    }

    #[test]
    fn same_client_same_server_across_forks_and_rebuilds() {
        let d = dests(&[1, 2, 3]);
        let l = loads(&[]);
        let o = opts(false, false);
        let mut a = Sh::new(&d, &o);
        let mut b = a.fork();
        let mut c = build(SchedKind::Sh, &d, &o);
        for n in 0..2000 {
            let k = random_key(n);
            let want = a.schedule(&d, &l, &k);
            assert!(want.is_some());
            assert_eq!(b.schedule(&d, &l, &k), want);
            assert_eq!(c.schedule(&d, &l, &k), want);
            // Without the port option the client's port does not matter.
            let other_port = SchedKey {
                cport: k.cport ^ 0x5555,
                ..k
            };
            assert_eq!(a.schedule(&d, &l, &other_port), want);
        }
    }

    #[test]
    fn port_option_spreads_one_client() {
        let d = dests(&[1, 1, 1, 1]);
        let l = loads(&[]);
        let mut s = Sh::new(&d, &opts(false, true));
        let base = key(7);
        let mut seen = [false; 4];
        for p in 0..64u16 {
            let k = SchedKey {
                cport: 2000 + p,
                ..base
            };
            let i = s.schedule(&d, &l, &k).unwrap();
            assert_eq!(s.schedule(&d, &l, &k), Some(i));
            seen[i] = true;
        }
        assert_eq!(seen, [true; 4]);
    }

    #[test]
    fn spreads_by_weight() {
        let d = dests(&[3, 2, 1]);
        let l = loads(&[]);
        let n = 60_000;
        let h = histogram(&mut Sh::new(&d, &opts(false, false)), &d, &l, n, random_key);
        // Buckets: 128, 85, 43 of 256.
        for (i, share) in [(0, 128.0 / 256.0), (1, 85.0 / 256.0), (2, 43.0 / 256.0)] {
            let got = h[i] as f64 / n as f64;
            assert!((got - share).abs() < 0.03, "server {i}: {got} vs {share}");
        }
        assert_eq!(h[3], 0);
    }

    #[test]
    fn drained_bucket_refuses_without_fallback_and_moves_with_it() {
        let d = dests(&[1, 0, 1]);
        let l = loads(&[]);
        let mut strict = Sh::new(&d, &opts(false, false));
        let mut fb = Sh::new(&d, &opts(true, false));
        let (mut refused, mut total) = (0, 0);
        for n in 0..5000 {
            let k = random_key(n);
            let s = strict.schedule(&d, &l, &k);
            let f = fb.schedule(&d, &l, &k);
            assert!(f.is_some_and(|i| i != 1));
            match s {
                None => refused += 1,
                Some(i) => assert_eq!(f, Some(i)),
            }
            total += 1;
        }
        // The drained server holds one bucket of 256.
        assert!(refused > 0 && refused < total / 50, "{refused}/{total}");
    }

    #[test]
    fn ipv6_clients_are_hashed() {
        let d = dests(&[1, 1]);
        let l = loads(&[]);
        let mut s = Sh::new(&d, &opts(false, false));
        let mut seen = [0u32; 2];
        for n in 0..200u8 {
            let mut a = [0x20, 0x01, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            a[15] = n;
            let k = SchedKey {
                caddr: Addr::from_v6(a),
                ..key(0)
            };
            seen[s.schedule(&d, &l, &k).unwrap()] += 1;
        }
        assert!(seen[0] > 50 && seen[1] > 50, "{seen:?}");
    }
}
