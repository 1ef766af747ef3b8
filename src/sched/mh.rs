//! Maglev hashing (`ip_vs_mh.c`, Eisenbud et al., NSDI 2016, section 3.4): a lookup table of a
//! prime size M in which every server claims slots along its own permutation
//! `(offset + j * skip) mod M`; the client address (and port with `opts.port`) hashes to a slot.
//! Removing one of N servers moves about 1/N of the clients, and little else.
//!
//! As in IPVS, servers take turns in proportion to `weight / gcd`, shifted right when the largest
//! ratio needs more than half the bits of M, so the table shares follow the weights; a drained
//! server is not in the table. With `opts.fallback` a slot naming an unavailable server is followed
//! by IPVS's probe sequence; since the table holds only available servers that happens only when
//! `schedule` sees weights that differ from those the table was built with.
//!
//! Deliberate differences: M is `opts.mh_table_size` (default 65537) rather than a compile-time
//! choice, rounded up to the next prime if it is not one; the permutation and lookup hashes are
//! fixed splitmix64-based hashes of the whole address (IPVS folds IPv6 addresses to 32 bits and
//! uses hsiphash with fixed keys), so tables and lookups are the same on every worker and restart.

use std::sync::Arc;

use super::{NONE, SchedKey, Scheduler, available, gcd_weight, hash_addr};
use crate::types::{Addr, Dest, DestCounters, SchedKind, SchedOpts};

/// Smallest and largest table sizes `build` accepts before rounding to a prime (IPVS: 251 to 131071;
/// the largest here costs 4 MiB per service).
const MIN_SIZE: u32 = 2;
const MAX_SIZE: u32 = 1 << 20;

/// Seeds of the three fixed hashes (arbitrary odd constants; changing one remaps every client).
const SEED_OFFSET: u64 = 0x2545_f491_4f6c_dd1d;
const SEED_SKIP: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_LOOKUP: u64 = 0xd6e8_feb8_6659_fd93;

/// Maglev-hash scheduler; the lookup table is shared by all forks.
#[derive(Clone, Debug)]
pub struct Mh {
    /// Server index per slot, [`NONE`] everywhere when no server is available.
    table: Arc<[u32]>,
    port: bool,
    fallback: bool,
}

fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// The table size used for a requested one: clamped to a sane range and rounded up to a prime.
pub fn table_size(requested: u32) -> u32 {
    let mut m = requested.clamp(MIN_SIZE, MAX_SIZE);
    while !is_prime(m) {
        m += 1;
    }
    m
}

/// The slot a client hashes to, perturbed by `offset` for the fallback probes as in IPVS.
#[inline]
fn lookup_hash(addr: &Addr, port: u16, offset: u32, m: u32) -> usize {
    let extra = u64::from(port) | (u64::from(offset) << 16);
    (hash_addr(addr, extra, SEED_LOOKUP) % u64::from(m)) as usize
}

/// IPVS's `ip_vs_mh_permutate` and `ip_vs_mh_populate` over `dests`.
fn populate(dests: &[Dest], m: u32) -> Vec<u32> {
    let mut table = vec![NONE; m as usize];
    let g = gcd_weight(dests);
    if g == 0 {
        return table;
    }
    let mw = dests.iter().map(|d| d.weight / g).max().unwrap_or(0);
    // Half of M's bits (IPVS: CONFIG_IP_VS_MH_TAB_INDEX / 2) bound the turns of the heaviest server.
    let tab_bits = (31 - m.leading_zeros()) / 2;
    let rshift = (32 - mw.leading_zeros()).saturating_sub(tab_bits);
    struct Setup {
        perm: u32,
        skip: u32,
        turns: u32,
    }
    let mut setup: Vec<Setup> = dests
        .iter()
        .map(|d| {
            let extra = u64::from(d.port);
            let offset = (hash_addr(&d.addr, extra, SEED_OFFSET) % u64::from(m)) as u32;
            let skip = (hash_addr(&d.addr, extra, SEED_SKIP) % u64::from(m - 1)) as u32 + 1;
            let turns = if d.weight == 0 {
                0
            } else {
                ((d.weight / g) >> rshift).max(1)
            };
            Setup {
                perm: offset,
                skip,
                turns,
            }
        })
        .collect();
    let mut taken = vec![false; m as usize];
    let mut filled = 0u32;
    // Each round gives every server its turns; at least one server has turns, so every round
    // fills at least one slot, and a prime M makes each permutation reach every free slot.
    'fill: loop {
        for (i, ds) in setup.iter_mut().enumerate() {
            for _ in 0..ds.turns {
                while taken[ds.perm as usize] {
                    ds.perm += ds.skip;
                    if ds.perm >= m {
                        ds.perm -= m;
                    }
                }
                taken[ds.perm as usize] = true;
                table[ds.perm as usize] = i as u32;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table
}

impl Mh {
    /// Builds the lookup table of size [`table_size`]`(opts.mh_table_size)` from `dests`.
    pub fn new(dests: &[Dest], opts: &SchedOpts) -> Mh {
        Mh {
            table: populate(dests, table_size(opts.mh_table_size)).into(),
            port: opts.port,
            fallback: opts.fallback,
        }
    }

    /// The size of the lookup table (a prime).
    pub fn size(&self) -> usize {
        self.table.len()
    }

    /// How many slots each of `n` servers holds (slots of indices >= `n` are not counted).
    pub fn slot_counts(&self, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in self.table.iter() {
            if let Some(x) = c.get_mut(i as usize) {
                *x += 1;
            }
        }
        c
    }
}

impl Scheduler for Mh {
    fn schedule(&mut self, dests: &[Dest], _loads: &DestCounters, key: &SchedKey) -> Option<usize> {
        let m = self.table.len() as u32;
        let port = if self.port { key.cport } else { 0 };
        let ihash = lookup_hash(&key.caddr, port, 0, m);
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
        (0..m)
            .map(|offset| {
                let roffset = (offset + ihash as u32) % m;
                self.table[lookup_hash(&key.caddr, port, roffset, m)] as usize
            })
            .find(|&i| available(dests, i))
    }

    fn fork(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn kind(&self) -> SchedKind {
        SchedKind::Mh
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn opts(size: u32) -> SchedOpts {
        SchedOpts {
            mh_table_size: size,
            ..SchedOpts::default()
        }
    }

    #[test]
    fn table_size_is_prime() {
        assert_eq!(table_size(65537), 65537);
        assert_eq!(table_size(251), 251);
        assert_eq!(table_size(65536), 65537);
        assert_eq!(table_size(0), 2);
        assert_eq!(table_size(u32::MAX), 1_048_583);
        let s = Mh::new(&dests(&[1, 1]), &SchedOpts::default());
        assert_eq!(s.size(), 65537);
        assert!(is_prime(s.size() as u32));
        assert!(is_prime(Mh::new(&dests(&[1]), &opts(1000)).size() as u32));
        assert!(!is_prime(65535) && is_prime(65521) && !is_prime(1) && is_prime(2));
    }

    #[test]
    fn table_shares_follow_weights() {
        for weights in [&[1, 1, 1, 1, 1][..], &[1, 2, 3], &[5, 0, 5, 10], &[100, 300]] {
            let d = dests(weights);
            let s = Mh::new(&d, &SchedOpts::default());
            let counts = s.slot_counts(d.len());
            assert_eq!(counts.iter().sum::<usize>(), s.size());
            let total: u32 = weights.iter().sum();
            for (i, &w) in weights.iter().enumerate() {
                let want = f64::from(w) / f64::from(total);
                let got = counts[i] as f64 / s.size() as f64;
                assert!((got - want).abs() < 0.01, "{weights:?} server {i}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn lookups_balanced_by_weight() {
        let d = dests(&[1, 2, 3, 2]);
        let l = loads(&[]);
        let n = 100_000;
        let h = histogram(&mut Mh::new(&d, &SchedOpts::default()), &d, &l, n, random_key);
        for (i, w) in [1.0, 2.0, 3.0, 2.0].into_iter().enumerate() {
            let got = h[i] as f64 / n as f64;
            assert!((got - w / 8.0).abs() < 0.01, "server {i}: {got}");
        }
    }

    #[test]
    fn stable_across_forks_and_rebuilds() {
        let d = dests(&[1, 2, 3]);
        let l = loads(&[]);
        let mut a = Mh::new(&d, &SchedOpts::default());
        let mut b = a.fork();
        let mut c = Mh::new(&d, &SchedOpts::default());
        for n in 0..5000 {
            let k = random_key(n);
            let want = a.schedule(&d, &l, &k);
            assert!(want.is_some());
            assert_eq!(b.schedule(&d, &l, &k), want);
            assert_eq!(c.schedule(&d, &l, &k), want);
        }
    }

    /// Dest id per key, for `n` keys.
    fn assignment(d: &[Dest], n: u64) -> Vec<u32> {
        let l = loads(&[]);
        let mut s = Mh::new(d, &SchedOpts::default());
        (0..n)
            .map(|k| d[s.schedule(d, &l, &random_key(k)).unwrap()].id)
            .collect()
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let n_keys = 100_000;
        for n in [3usize, 5, 10] {
            let all = dests(&vec![1; n]);
            let before = assignment(&all, n_keys);
            for gone in [0, n / 2, n - 1] {
                let mut rest = all.clone();
                rest.remove(gone);
                let after = assignment(&rest, n_keys);
                let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                let survivors_moved = before
                    .iter()
                    .zip(&after)
                    .filter(|(a, b)| **a != gone as u32 && a != b)
                    .count();
                let frac = moved as f64 / n_keys as f64;
                assert!(frac < 1.15 / n as f64, "n={n} gone={gone}: moved {frac}");
                // Every key of the removed server must move; survivors' keys almost all stay.
                assert!(frac > 0.7 / n as f64, "n={n} gone={gone}: moved {frac}");
                let sfrac = survivors_moved as f64 / n_keys as f64;
                assert!(sfrac < 0.015, "n={n} gone={gone}: survivors moved {sfrac}");
            }
        }
    }

    #[test]
    fn draining_is_like_removing() {
        let d = dests(&[1, 1, 1, 1]);
        let before = assignment(&d, 20_000);
        let mut drained = d.clone();
        drained[2].weight = 0;
        let after = assignment(&drained, 20_000);
        assert!(!after.contains(&2));
        let survivors_moved = before.iter().zip(&after).filter(|(a, b)| **a != 2 && a != b).count();
        assert!(survivors_moved < 20_000 / 30, "{survivors_moved}");
    }

    #[test]
    fn port_option() {
        let d = dests(&[1, 1, 1]);
        let l = loads(&[]);
        let base = key(3);
        let mut with = Mh::new(
            &d,
            &SchedOpts {
                port: true,
                ..SchedOpts::default()
            },
        );
        let mut without = Mh::new(&d, &SchedOpts::default());
        let mut seen = [false; 3];
        let first = without.schedule(&d, &l, &base);
        for p in 0..64 {
            let k = SchedKey {
                cport: 3000 + p,
                ..base
            };
            assert_eq!(without.schedule(&d, &l, &k), first);
            seen[with.schedule(&d, &l, &k).unwrap()] = true;
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn fallback_when_weights_change_after_build() {
        let built = dests(&[1, 1, 1]);
        let mut now = built.clone();
        now[0].weight = 0;
        let l = loads(&[]);
        let mut strict = Mh::new(&built, &opts(251));
        let mut fb = Mh::new(
            &built,
            &SchedOpts {
                fallback: true,
                ..opts(251)
            },
        );
        let mut refused = 0;
        for k in 0..3000 {
            let k = random_key(k);
            let got = fb.schedule(&now, &l, &k);
            assert!(matches!(got, Some(1 | 2)));
            match strict.schedule(&now, &l, &k) {
                None => refused += 1,
                Some(i) => assert_eq!(Some(i), got),
            }
        }
        assert!(refused > 600 && refused < 1400, "{refused}");
        // A slice shorter than the table's servers never indexes out of bounds.
        assert!(fb.schedule(&now[1..2], &l, &key(1)).is_none_or(|i| i == 0));
    }

    #[test]
    fn tiny_table_with_more_servers_than_slots() {
        let d = dests(&[1; 7]);
        let s = Mh::new(&d, &opts(3));
        assert_eq!(s.size(), 3);
        assert_eq!(s.slot_counts(7).iter().filter(|&&c| c > 0).count(), 3);
    }
}
