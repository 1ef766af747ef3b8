//! LVS schedulers: pick a real server for a new connection.
//!
//! One module per scheduler, named and behaving as IPVS's `net/netfilter/ipvs/ip_vs_<name>.c`;
//! each module's doc comment says where it deliberately differs. The control thread builds one
//! scheduler per service per snapshot with [`build`]; the `dests` slice it sees is the one every
//! later [`Scheduler::schedule`] call sees, so per-server precomputation (wrr's gcd and maximum
//! weight, the sh/dh bucket tables, the Maglev table) happens there, and `schedule` never allocates.
//!
//! IPVS's `IP_VS_DEST_F_OVERLOAD` (upper connection thresholds) has no equivalent here: a server
//! is unavailable exactly when its weight is 0.
//!
//! Hashing: sh, dh and mh hash client and server addresses with fixed functions and fixed seeds,
//! never a per-process random key, so that the same client maps to the same server on every worker
//! and after a restart. These hashes choose among servers, not hash-table slots, so an attacker who
//! predicts them gains nothing beyond choosing a server, which a client can do anyway.

use crate::types::{Addr, Dest, DestCounters, Proto, SchedKind, SchedOpts};

pub mod dh;
pub mod fo;
pub mod lc;
pub mod mh;
pub mod nq;
pub mod rr;
pub mod sed;
pub mod sh;
pub mod wlc;
pub mod wrr;

/// What a scheduler may look at for one new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SchedKey {
    /// Transport protocol of the service.
    pub proto: Proto,
    /// Client address.
    pub caddr: Addr,
    /// Client port.
    pub cport: u16,
    /// Virtual (service) address the client connected to.
    pub vaddr: Addr,
    /// Virtual port.
    pub vport: u16,
}

/// One LVS scheduler.
///
/// The control thread builds one per service per snapshot with [`build`]; each worker takes its
/// own copy with [`Scheduler::fork`] (sharing immutable parts such as the Maglev table through an
/// `Arc`) and calls [`Scheduler::schedule`] for each new connection.
pub trait Scheduler: Send + Sync {
    /// Index into `dests` of the chosen real server, or None when none is available.
    /// A weight of 0 means drained: never chosen for a new connection.
    fn schedule(&mut self, dests: &[Dest], loads: &DestCounters, key: &SchedKey) -> Option<usize>;
    /// A copy for another worker, with its own mutable state.
    fn fork(&self) -> Box<dyn Scheduler>;
    /// Which scheduler this is.
    fn kind(&self) -> SchedKind;
}

/// Builds the scheduler `kind` for a service whose real servers are `dests`.
pub fn build(kind: SchedKind, dests: &[Dest], opts: &SchedOpts) -> Box<dyn Scheduler> {
    match kind {
        SchedKind::Rr => Box::new(rr::Rr::new()),
        SchedKind::Wrr => Box::new(wrr::Wrr::new(dests)),
        SchedKind::Lc => Box::new(lc::Lc),
        SchedKind::Wlc => Box::new(wlc::Wlc),
        SchedKind::Sed => Box::new(sed::Sed),
        SchedKind::Nq => Box::new(nq::Nq),
        SchedKind::Sh => Box::new(sh::Sh::new(dests, opts)),
        SchedKind::Dh => Box::new(dh::Dh::new(dests)),
        SchedKind::Mh => Box::new(mh::Mh::new(dests, opts)),
        SchedKind::Fo => Box::new(fo::Fo),
    }
}

/// Whether `dests[i]` exists and may take new connections.
#[inline]
fn available(dests: &[Dest], i: usize) -> bool {
    dests.get(i).is_some_and(|d| d.weight > 0)
}

/// Greatest common divisor of the positive weights, or 0 when no weight is positive.
fn gcd_weight(dests: &[Dest]) -> u32 {
    fn gcd(mut a: u32, mut b: u32) -> u32 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    dests.iter().map(|d| d.weight).filter(|&w| w > 0).fold(0, gcd)
}

/// IPVS's address fold for sh and dh: the IPv4 address, or the XOR of the four 32-bit words of
/// an IPv6 address, in host order.
#[inline]
fn fold_addr(a: &Addr) -> u32 {
    let w = |i: usize| u32::from_be_bytes([a.0[i], a.0[i + 1], a.0[i + 2], a.0[i + 3]]);
    if a.is_v4() { w(12) } else { w(0) ^ w(4) ^ w(8) ^ w(12) }
}

/// The kernel's `hash_32(val, 8)`: the top 8 bits of a multiplicative hash.
#[inline]
fn hash_32_8(val: u32) -> usize {
    (val.wrapping_mul(0x61c8_8647) >> 24) as usize
}

/// Number of buckets in the sh and dh tables (IPVS's `IP_VS_SH_TAB_SIZE`, `IP_VS_DH_TAB_SIZE`).
pub const BUCKETS: usize = 256;

/// Marks an empty bucket or Maglev slot.
const NONE: u32 = u32::MAX;

/// The sh/dh bucket table, laid out as IPVS's `ip_vs_sh_reassign` does: walking the servers
/// cyclically, each takes a run of consecutive buckets as long as its weight (here divided by the
/// gcd of the weights).
///
/// Deliberate differences: each server's total number of buckets is its weight's share of the 256
/// (largest remainder, at least one per available server while there are buckets), where IPVS keeps
/// cycling by raw weight, so 100:100 gives IPVS 156:100 and 1000:1 gives it 256:0. A drained server
/// holds exactly one bucket (IPVS: one per round), so that without fallback only its own few clients
/// are refused. With no available server every bucket is empty.
fn bucket_table(dests: &[Dest]) -> [u32; BUCKETS] {
    let mut table = [NONE; BUCKETS];
    let total: u64 = dests.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return table;
    }
    let mut quota = vec![0u64; dests.len()];
    let mut used = 0u64;
    for (q, d) in quota.iter_mut().zip(dests) {
        if d.weight == 0 && used < BUCKETS as u64 / 2 {
            *q = 1;
            used += 1;
        }
    }
    let r = BUCKETS as u64 - used;
    let mut up: Vec<usize> = (0..dests.len()).filter(|&i| dests[i].weight > 0).collect();
    for &i in &up {
        quota[i] = r * u64::from(dests[i].weight) / total;
    }
    let leftover = r - up.iter().map(|&i| quota[i]).sum::<u64>();
    up.sort_by_key(|&i| std::cmp::Reverse(r * u64::from(dests[i].weight) % total));
    for &i in up.iter().take(leftover as usize) {
        quota[i] += 1;
    }
    for k in 0..up.len() {
        let i = up[k];
        if quota[i] == 0 {
            let j = up.iter().copied().max_by_key(|&j| quota[j]).unwrap_or(i);
            if quota[j] > 1 {
                quota[j] -= 1;
                quota[i] = 1;
            }
        }
    }
    let g = u64::from(gcd_weight(dests).max(1));
    let run = |d: &Dest| (u64::from(d.weight) / g).max(1);
    let mut filled = 0;
    // The quotas sum to 256 and every round takes at least one bucket, so this ends.
    while filled < BUCKETS {
        for (i, d) in dests.iter().enumerate() {
            let take = run(d).min(quota[i]);
            quota[i] -= take;
            for _ in 0..take {
                // The index fits: the control plane never builds a service of 2^32 servers.
                table[filled] = i as u32;
                filled += 1;
            }
        }
    }
    table
}

/// A fixed 64-bit mixer (the splitmix64 finaliser): fast, and the same in every process.
#[inline]
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Hashes a full 16-byte address and a 64-bit extra word (port, offset) under a fixed `seed`.
#[inline]
fn hash_addr(a: &Addr, extra: u64, seed: u64) -> u64 {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a.0[..8]);
    lo.copy_from_slice(&a.0[8..]);
    let h = mix64(seed ^ u64::from_be_bytes(hi));
    let h = mix64(h ^ u64::from_be_bytes(lo));
    mix64(h ^ extra.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by the schedulers' tests.

    use super::*;
    use std::sync::atomic::Ordering;

    /// Real servers 198.18.2.11, .12, ... (then 198.18.3.11, ...) port 80 with the given weights; ids are the indices.
    pub fn dests(weights: &[u32]) -> Vec<Dest> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Dest {
                id: i as u32,
                addr: Addr::from_v4([198, 18, 2 + (i / 200) as u8, 11 + (i % 200) as u8]),
                port: 80,
                weight,
            })
            .collect()
    }

    /// Counters with `(active, inactive)` for ids 0, 1, ...
    pub fn loads(counts: &[(u32, u32)]) -> DestCounters {
        let c = DestCounters::new(64);
        for (i, &(a, n)) in counts.iter().enumerate() {
            c.get(i as u32).active.store(a, Ordering::Relaxed);
            c.get(i as u32).inactive.store(n, Ordering::Relaxed);
        }
        c
    }

    /// A client key to the VIP 198.18.0.1:80 from an address drawn from `n`.
    pub fn key(n: u64) -> SchedKey {
        let b = n.to_be_bytes();
        SchedKey {
            proto: Proto::Tcp,
            caddr: Addr::from_v4([198, 18 + (b[4] & 1), b[6], b[7]]),
            cport: u16::from_be_bytes([b[2], b[3]]) | 1024,
            vaddr: Addr::from_v4([198, 18, 0, 1]),
            vport: 80,
        }
    }

    /// A random-looking IPv4 or IPv6 client key, deterministic in `n`.
    pub fn random_key(n: u64) -> SchedKey {
        let r = mix64(n.wrapping_add(0x1234_5678));
        let b = r.to_be_bytes();
        let caddr = if r & 1 == 0 {
            Addr::from_v4([198, 18 + (b[0] & 1), b[1], b[2]])
        } else {
            let mut a = [0u8; 16];
            a[..6].copy_from_slice(&[0x20, 0x01, 0x00, 0x02, 0x00, 0x00]);
            a[8..].copy_from_slice(&mix64(r).to_be_bytes());
            Addr::from_v6(a)
        };
        SchedKey {
            proto: Proto::Tcp,
            caddr,
            cport: u16::from_be_bytes([b[3], b[4]]),
            vaddr: Addr::from_v4([198, 18, 0, 1]),
            vport: 80,
        }
    }

    /// Runs `n` schedules and returns how many each server got (index `len` counts None).
    pub fn histogram(
        s: &mut dyn Scheduler,
        dests: &[Dest],
        loads: &DestCounters,
        n: u64,
        keyf: fn(u64) -> SchedKey,
    ) -> Vec<u64> {
        let mut h = vec![0u64; dests.len() + 1];
        for i in 0..n {
            match s.schedule(dests, loads, &keyf(i)) {
                Some(d) => h[d] += 1,
                None => h[dests.len()] += 1,
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    fn opts(fallback: bool, port: bool) -> SchedOpts {
        SchedOpts {
            fallback,
            port,
            ..SchedOpts::default()
        }
    }

    #[test]
    fn every_kind_builds_and_reports_its_kind() {
        let d = dests(&[1, 2]);
        for kind in SchedKind::ALL {
            let s = build(kind, &d, &SchedOpts::default());
            assert_eq!(s.kind(), kind);
            assert_eq!(s.fork().kind(), kind);
        }
    }

    #[test]
    fn none_for_empty_or_all_drained() {
        let l = loads(&[(3, 1), (0, 0), (9, 9)]);
        for kind in SchedKind::ALL {
            for fallback in [false, true] {
                let o = opts(fallback, true);
                let mut s = build(kind, &[], &o);
                assert_eq!(s.schedule(&[], &l, &key(1)), None, "{kind:?} empty");
                let d = dests(&[0, 0, 0]);
                let mut s = build(kind, &d, &o);
                for i in 0..300 {
                    assert_eq!(s.schedule(&d, &l, &key(i)), None, "{kind:?} drained");
                }
            }
        }
    }

    #[test]
    fn single_server_always_chosen() {
        let d = dests(&[7]);
        let l = loads(&[(100, 5)]);
        for kind in SchedKind::ALL {
            let mut s = build(kind, &d, &opts(false, false));
            for i in 0..50 {
                assert_eq!(s.schedule(&d, &l, &random_key(i)), Some(0), "{kind:?}");
            }
        }
    }

    #[test]
    fn bucket_table_follows_weights() {
        let t = bucket_table(&dests(&[3, 2, 1]));
        assert_eq!(&t[..8], &[0, 0, 0, 1, 1, 2, 0, 0]);
        let count = |t: &[u32; BUCKETS], i: u32| t.iter().filter(|&&x| x == i).count();
        assert_eq!([count(&t, 0), count(&t, 1), count(&t, 2)], [128, 85, 43]);
        // A drained server holds one bucket.
        let t = bucket_table(&dests(&[2, 0, 2]));
        assert_eq!(&t[..4], &[0, 1, 2, 0]);
        assert_eq!([count(&t, 0), count(&t, 1), count(&t, 2)], [128, 1, 127]);
        // Equal large weights share evenly; a huge ratio still leaves the small server a bucket.
        let t = bucket_table(&dests(&[100, 100, 100]));
        assert_eq!([count(&t, 0), count(&t, 1), count(&t, 2)], [86, 85, 85]);
        let t = bucket_table(&dests(&[100, 100]));
        assert_eq!([count(&t, 0), count(&t, 1)], [128, 128]);
        let t = bucket_table(&dests(&[1000, 1]));
        assert_eq!([count(&t, 0), count(&t, 1)], [255, 1]);
        // More servers than buckets: every bucket is used, none twice.
        let t = bucket_table(&dests(&vec![1; 300]));
        assert!(t.iter().enumerate().all(|(i, &x)| x == i as u32));
        assert_eq!(bucket_table(&dests(&[0, 0])), [NONE; BUCKETS]);
        assert_eq!(bucket_table(&[]), [NONE; BUCKETS]);
    }

    #[test]
    fn fixed_hashes_are_stable() {
        // Pinned values: a change here moves every sh/mh client after an upgrade.
        let a = Addr::from_v4([198, 18, 1, 2]);
        assert_eq!(fold_addr(&a), 0xc612_0102);
        assert_eq!(hash_32_8(0xc612_0102), 231);
        let v6 = Addr::from_v6([0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(fold_addr(&v6), 0x2001_0002 ^ 1);
        assert_eq!(hash_addr(&a, 80, 1), 0x7800_afe6_b4d6_c558);
        assert_ne!(hash_addr(&a, 80, 1), hash_addr(&a, 81, 1));
        assert_ne!(hash_addr(&a, 80, 1), hash_addr(&a, 80, 2));
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever is returned is a server with weight > 0; None only when no weight is > 0.
        /// sh without fallback, and dh, may also answer None when the hashed bucket is a drained
        /// server's.
        #[test]
        fn chosen_server_is_available(
            weights in proptest::collection::vec(prop_oneof![Just(0u32), 1u32..5, Just(u32::MAX)], 0..12),
            counts in proptest::collection::vec((0u32..1000, 0u32..1000), 12),
            fallback in any::<bool>(),
            port in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let d = dests(&weights);
            let l = loads(&counts);
            let any_up = weights.iter().any(|&w| w > 0);
            let mut o = opts(fallback, port);
            o.mh_table_size = 251;
            for kind in SchedKind::ALL {
                let mut s = build(kind, &d, &o).fork();
                for i in 0..40 {
                    match s.schedule(&d, &l, &random_key(seed.wrapping_add(i))) {
                        Some(i) => prop_assert!(d[i].weight > 0, "{:?} chose drained {}", kind, i),
                        None => prop_assert!(
                            !any_up || kind == SchedKind::Dh || (kind == SchedKind::Sh && !fallback),
                            "{:?} gave None with {:?}", kind, weights
                        ),
                    }
                }
            }
        }
    }
}
