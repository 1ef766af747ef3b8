//! The connection table (IPVS's `ip_vs_conn`): one table split into shards, each behind its own
//! short lock, indexed by both directions of every connection.
//!
//! **Both directions in one shard.** An inbound packet (client to VIP) picks its shard from its
//! source endpoint, an outbound one (real server to ...) from its destination endpoint. Under NAT
//! both are the client endpoint. Under FULLNAT the outbound destination is the local address and
//! port, and the pool hands out only ports whose (laddr, lport) hashes to the client's shard, so a
//! lookup in either direction takes exactly one lock and any worker can serve any packet.
//!
//! **Compact.** A shard holds a slab of entries and an [`index`] of slot numbers, with the
//! directions each key serves in the top two bits: one key per connection, as both directions are
//! found by the client endpoint, and two for FULLNAT (the inbound key and the local endpoint's);
//! key equality is checked against the slab entry. An entry is a 64-byte line that every packet
//! of the connection reads (endpoints, state, timer: a NAT, DR or TUN packet waits for one line of
//! its connection) and a 20-byte rest (FULLNAT's local endpoint, the persistence template), 84
//! bytes in all.
//!
//! **One hash per packet.** A packet is hashed once, on the endpoint that picks its shard (the
//! source of an inbound packet, the destination of an outbound one), with `ahash` and random keys
//! per table: client endpoints are chosen by attackers, and keyed hashing keeps them from aiming at
//! one shard or one probe chain. The same hash places the key in the shard's index. One client
//! endpoint talking to many virtual services gives keys with one hash; there are at most as many
//! as there are services.
//!
//! **Batches.** [`ConnTable::prefetch`] starts loading a key's bucket without taking the lock and
//! [`ConnTable::prefetch_entry`] the entry it points to, so that a worker can have the cache
//! misses of a whole batch in flight at once instead of waiting for them one packet at a time.

mod cache;
pub mod frag;
mod index;
mod slab;
mod state;

pub use cache::FlowCache;
pub use frag::{FragKey, FragTable};
pub use state::{TcpState, Way};

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use index::{Bucket, Index, prefetch};
use slab::Slab;

use crate::types::{Addr, DestCounters, Method, Proto, Timeouts};

/// Which way a packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the client to the VIP.
    In,
    /// From the real server back.
    Out,
}

/// A packet's 5-tuple as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub proto: Proto,
    pub src: Addr,
    pub sport: u16,
    pub dst: Addr,
    pub dport: u16,
}

#[derive(Clone, Copy, Debug)]
pub struct TableConfig {
    pub max_conns: usize,
    /// A power of two.
    pub shards: usize,
    pub timeouts: Timeouts,
}

/// What the pipeline decided for a new connection.
#[derive(Clone, Copy, Debug)]
pub struct NewConn {
    pub proto: Proto,
    pub method: Method,
    pub caddr: Addr,
    pub cport: u16,
    pub vaddr: Addr,
    pub vport: u16,
    pub daddr: Addr,
    pub dport: u16,
    pub dest_id: u32,
    /// Created from a persistence template keyed by the client address with this prefix length.
    pub persist_prefix: Option<u8>,
}

/// Why a connection could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The table is at its size limit.
    Full,
    /// No free local port in the FULLNAT pool.
    LaddrExhausted,
    /// An established connection has the same real-server-side tuple (see [`ConnTable::insert`]).
    Conflict,
}

/// One connection: the client, virtual, real-server and (FULLNAT) local endpoints and its state.
/// `Copy` and plain data, so that it can be serialised for synchronisation. The table stores it
/// as a [`Hot`] line and a [`Cold`] rest; this is the two put together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub caddr: Addr,
    pub vaddr: Addr,
    pub daddr: Addr,
    pub laddr: Addr,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    pub lport: u16,
    pub dest_id: u32,
    pub proto: Proto,
    pub method: Method,
    pub state: TcpState,
}

impl Conn {
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    fn in_tuple(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.caddr,
            sport: self.cport,
            dst: self.vaddr,
            dport: self.vport,
        }
    }

    /// Where the real server's packets go: the local endpoint under FULLNAT, the client otherwise.
    fn out_dst(&self) -> (Addr, u16) {
        if self.method == Method::FullNat {
            (self.laddr, self.lport)
        } else {
            (self.caddr, self.cport)
        }
    }

    fn out_tuple(&self) -> Tuple {
        let (a, p) = self.out_dst();
        Tuple {
            proto: self.proto,
            src: self.daddr,
            sport: self.dport,
            dst: a,
            dport: p,
        }
    }

    fn active(&self) -> bool {
        self.state == TcpState::Established
    }

    /// The tuple of this connection's packets that go `dir`.
    #[inline]
    fn tuple(&self, dir: Dir) -> Tuple {
        match dir {
            Dir::In => self.in_tuple(),
            Dir::Out => self.out_tuple(),
        }
    }
}

/// The part of a connection that every packet reads, and the timer every packet writes: one
/// cache line of its own, so that an established NAT, DR or TUN packet waits for one line of its
/// connection (and FULLNAT's for two). The protocol is the state's (UDP has a state of its own).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(super) struct Hot {
    caddr: Addr,
    vaddr: Addr,
    daddr: Addr,
    cport: u16,
    vport: u16,
    dport: u16,
    method: Method,
    state: TcpState,
    dest_id: u32,
    /// Expiry on the table's clock in ticks (see [`tick`]), compared with wrapping arithmetic.
    expires: u32,
}

const _: () = assert!(size_of::<Option<Hot>>() == 64);

/// The rest of a connection: FULLNAT's local endpoint, and the template it counts in.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cold {
    laddr: Addr,
    lport: u16,
    /// Persistence prefix + 1, or 0 when no template controls this connection.
    persist: u8,
}

impl Cold {
    /// FULLNAT's local endpoint (unspecified for the other methods).
    fn local(&self) -> (Addr, u16) {
        (self.laddr, self.lport)
    }
}

/// Nanoseconds per tick of a connection's timer, 2^21 (about 2.1 ms): a 32-bit timer then spans
/// 104 days, compared with wrapping arithmetic, and timeouts are at most 30 days (the
/// configuration's limit), within half of that.
const TICK_SHIFT: u32 = 21;

/// The longest timer, a third of the counter's span (35 days): well within the half that wrapping
/// comparisons allow, and above the configuration's limit.
const MAX_TTL_TICKS: u32 = u32::MAX / 3;

/// The table's clock (nanoseconds since its epoch) in ticks, wrapping.
#[inline]
fn tick(now_ns: u64) -> u32 {
    (now_ns >> TICK_SHIFT) as u32
}

/// Whether a timer set to `expires` has run out at tick `now`.
#[inline]
fn expired(expires: u32, now: u32) -> bool {
    now.wrapping_sub(expires) as i32 >= 0
}

impl Hot {
    fn proto(&self) -> Proto {
        if self.state == TcpState::Udp {
            Proto::Udp
        } else {
            Proto::Tcp
        }
    }

    fn in_matches(&self, t: &Tuple) -> bool {
        self.proto() == t.proto
            && self.cport == t.sport
            && self.vport == t.dport
            && self.caddr == t.src
            && self.vaddr == t.dst
    }

    /// Whether `t` is this connection's outbound tuple; `local` gives FULLNAT's local endpoint
    /// (from the cold part, read for FULLNAT only).
    fn out_matches(&self, local: impl FnOnce() -> (Addr, u16), t: &Tuple) -> bool {
        if self.proto() != t.proto || self.dport != t.sport || self.daddr != t.src {
            return false;
        }
        let (a, p) = if self.method == Method::FullNat {
            local()
        } else {
            (self.caddr, self.cport)
        };
        p == t.dport && a == t.dst
    }

    fn way(&self, dir: Dir) -> Way {
        match (dir, self.method.two_way()) {
            (Dir::Out, _) => Way::Output,
            (Dir::In, true) => Way::Input,
            (Dir::In, false) => Way::InputOnly,
        }
    }

    fn active(&self) -> bool {
        self.state == TcpState::Established
    }

    /// The whole connection, FULLNAT's local endpoint from `local` (which only FULLNAT reads: the
    /// others have none).
    #[inline(always)]
    fn conn(&self, local: impl FnOnce() -> (Addr, u16)) -> Conn {
        let (laddr, lport) = if self.method == Method::FullNat {
            local()
        } else {
            (Addr::UNSPECIFIED, 0)
        };
        Conn {
            caddr: self.caddr,
            vaddr: self.vaddr,
            daddr: self.daddr,
            laddr,
            cport: self.cport,
            vport: self.vport,
            dport: self.dport,
            lport,
            dest_id: self.dest_id,
            proto: self.proto(),
            method: self.method,
            state: self.state,
        }
    }

    /// Time left at tick `now` (zero once expired).
    fn left(&self, now: u32) -> Duration {
        let t = self.expires.wrapping_sub(now) as i32;
        Duration::from_nanos((t.max(0) as u64) << TICK_SHIFT)
    }
}

impl Slab {
    /// FULLNAT's local endpoint of entry `s`, from its cold part.
    fn local(&self, s: usize) -> (Addr, u16) {
        self.cold(s).map_or((Addr::UNSPECIFIED, 0), Cold::local)
    }

    /// Entry `s` whole (`None` where the slot is free).
    fn conn(&self, s: usize) -> Option<Conn> {
        Some(self.get(s)?.conn(|| self.local(s)))
    }

    /// Entry `s` whole, if it is live at tick `now`.
    fn live(&self, s: usize, now: u32) -> Option<Conn> {
        self.get(s).filter(|h| !expired(h.expires, now))?;
        self.conn(s)
    }

    /// Every entry live at tick `now`, whole, with the time it has left.
    fn each_live(&self, now: u32) -> impl Iterator<Item = (Conn, Duration)> {
        self.iter().filter_map(move |(h, k)| {
            let h = h.filter(|h| !expired(h.expires, now))?;
            Some((h.conn(|| k.local()), h.left(now)))
        })
    }
}

/// An index value is a slab slot with the directions its key serves in the top two bits. Without
/// FULLNAT one key serves both: the inbound and the outbound tuple are found by the client's
/// endpoint, so the two would share a hash and a bucket.
const IN_KEY: u32 = 1 << 30;
const OUT_KEY: u32 = 1 << 31;
const SLOT_MASK: u32 = IN_KEY - 1;
/// The most slots a shard can have (what index values leave room for).
pub const MAX_SHARD_CONNS: usize = SLOT_MASK as usize + 1;
/// The index value bit of the keys that serve direction `dir`.
#[inline]
fn key_bit(dir: Dir) -> u32 {
    match dir {
        Dir::In => IN_KEY,
        Dir::Out => OUT_KEY,
    }
}

/// Index buckets of a shard from which the table counts as large (worth prefetching for): 1024
/// buckets (64 KiB) hold up to 8192 keys, one per connection (two for FULLNAT), and 8000
/// connections' entries take most of a megabyte.
const DEEP_BUCKETS: usize = 1024;
/// The expiry cursor counts slots: shard `i` owns cursor values `i * STRIDE ..`.
const STRIDE: usize = 1 << 32;
/// FULLNAT local ports come from this range.
const LPORT_MIN: u16 = 1024;

/// A persistence template (IPVS `IP_VS_CONN_F_TEMPLATE`): where a client (masked) was sent.
#[derive(Clone, Copy, Debug)]
struct Template {
    dest_id: u32,
    daddr: Addr,
    dport: u16,
    timeout: Duration,
    expires: u64,
    /// Connections created from it and still alive (IPVS `n_control`): it never expires while > 0.
    controls: u32,
}

type TemplateKey = (Proto, Addr, Addr, u16);

#[derive(Default)]
struct Shard {
    slab: Slab,
    free: Vec<u32>,
    index: Index,
    len: usize,
    /// Free local ports of this shard, per (protocol, local address).
    ports: HashMap<(Proto, Addr), Vec<u16>>,
    templates: HashMap<TemplateKey, Template>,
}

/// A shard's lock and, before it, what is read without the lock: where its index buckets are
/// (for prefetching) and its version (for flow caches). Those share a line that the lock's own
/// line does not invalidate at every lookup.
#[repr(C, align(64))]
struct ShardCell {
    buckets: AtomicPtr<Bucket>,
    bucket_mask: AtomicUsize,
    /// Raised, under the lock, whenever a connection of the shard goes or changes state: a copy
    /// of a connection taken at one version is what the table holds while the version stays.
    version: AtomicU32,
    shard: Line<Mutex<Shard>>,
}

/// A value on cache lines of its own.
#[repr(align(64))]
struct Line<T>(T);

impl ShardCell {
    fn new() -> ShardCell {
        let cell = ShardCell {
            buckets: AtomicPtr::default(),
            bucket_mask: AtomicUsize::default(),
            version: AtomicU32::default(),
            shard: Line(Mutex::new(Shard::default())),
        };
        cell.publish(&cell.shard.0.lock().unwrap_or_else(|p| p.into_inner()).index);
        cell
    }

    /// Marks every copy taken of the shard's connections as stale. With the lock held.
    #[inline]
    fn bump(&self) {
        let v = self.version.load(Ordering::Relaxed);
        self.version.store(v.wrapping_add(1), Ordering::Release);
    }

    /// Tells lock-free prefetches where the shard's index buckets now are.
    fn publish(&self, index: &Index) {
        let (p, m) = index.layout();
        self.buckets.store(p.cast_mut(), Ordering::Relaxed);
        self.bucket_mask.store(m, Ordering::Relaxed);
    }
}

/// The sharded connection table, shared by all workers.
pub struct ConnTable {
    shards: Box<[ShardCell]>,
    mask: usize,
    per_shard: usize,
    /// Each state's timeout in ticks, by `TcpState as usize`.
    ttl_ticks: [u32; TcpState::COUNT],
    hasher: ahash::RandomState,
    counters: Arc<DestCounters>,
    epoch: Instant,
    cursor: AtomicUsize,
}

impl ConnTable {
    pub fn new(cfg: TableConfig, counters: Arc<DestCounters>) -> ConnTable {
        let n = cfg.shards.max(1).next_power_of_two();
        ConnTable {
            shards: (0..n).map(|_| ShardCell::new()).collect(),
            mask: n - 1,
            // The config refuses more per shard than index values hold slots for.
            per_shard: cfg.max_conns.div_ceil(n).clamp(1, MAX_SHARD_CONNS),
            // Rounded up, and a tick more: the current tick is counted from its start, and a
            // connection must not expire early.
            ttl_ticks: std::array::from_fn(|i| {
                let ns = TcpState::ALL[i].timeout(&cfg.timeouts).as_nanos() as u64;
                (ns.div_ceil(1 << TICK_SHIFT) + 1).min(u64::from(MAX_TTL_TICKS)) as u32
            }),
            hasher: ahash::RandomState::new(),
            counters,
            epoch: Instant::now(),
            cursor: AtomicUsize::new(0),
        }
    }

    #[inline]
    fn ttl(&self, s: TcpState) -> u32 {
        self.ttl_ticks[s as usize]
    }

    /// The table's clock: nanoseconds since its epoch. Workers read it once per batch.
    pub fn clock(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The keyed hash of an endpoint: it picks the shard (bits 40 and up) and the index bucket
    /// (the low bits).
    #[inline]
    pub fn hash_endpoint(&self, a: &Addr, port: u16) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u128(u128::from_ne_bytes(a.0));
        h.write_u16(port);
        h.finish()
    }

    #[inline]
    fn shard_of_hash(&self, h: u64) -> usize {
        (h >> 40) as usize & self.mask
    }

    fn shard_of(&self, a: &Addr, port: u16) -> usize {
        self.shard_of_hash(self.hash_endpoint(a, port))
    }

    /// The hash a packet's tuple is found by in `dir`: that of the client side's endpoint (the
    /// source of an inbound packet, the destination of an outbound one).
    #[inline]
    pub fn hash(&self, dir: Dir, t: &Tuple) -> u64 {
        match dir {
            Dir::In => self.hash_endpoint(&t.src, t.sport),
            Dir::Out => self.hash_endpoint(&t.dst, t.dport),
        }
    }

    #[cfg(test)]
    fn shard_for(&self, dir: Dir, t: &Tuple) -> usize {
        self.shard_of_hash(self.hash(dir, t))
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A worker that panicked while holding a shard leaves plain data behind; keep serving.
        self.shards[i].shard.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts loading the index bucket of hash `h`, without the lock (the address is read from
    /// the shard's published layout; a stale one only wastes the prefetch).
    #[inline]
    pub fn prefetch(&self, h: u64) {
        let cell = &self.shards[self.shard_of_hash(h)];
        let base = cell.buckets.load(Ordering::Relaxed);
        let mask = cell.bucket_mask.load(Ordering::Relaxed);
        prefetch(base.wrapping_add(h as usize & mask));
    }

    /// The version of the shard of hash `h` (see [`FlowCache`]).
    #[inline]
    pub fn version(&self, h: u64) -> u32 {
        self.shards[self.shard_of_hash(h)].version.load(Ordering::Acquire)
    }

    /// Whether the table has grown past what stays in the cache (judged by one shard: keys spread
    /// evenly), so that batches are worth prefetching for, entries as well as buckets.
    #[inline]
    pub fn is_large(&self) -> bool {
        self.shards[0].bucket_mask.load(Ordering::Relaxed) >= DEEP_BUCKETS - 1
    }

    /// Starts loading the entry that hash `h` finds in `dir`, once its bucket is (being) loaded:
    /// takes the shard's lock, reads the bucket and prefetches the entry's hot line.
    pub fn prefetch_entry(&self, dir: Dir, h: u64) {
        let sh = self.lock(self.shard_of_hash(h));
        if let Some(e) = sh.index.find(h, |e| e & key_bit(dir) != 0) {
            prefetch(sh.slab.entry_ptr((e & SLOT_MASK) as usize));
        }
    }

    /// The index entries of the connection in `slot`, given `hin`, the hash of its inbound key,
    /// and FULLNAT's local endpoint (`None` for the other methods): one key for both directions,
    /// or FULLNAT's two (its outbound key is the local endpoint).
    #[inline]
    fn index_entries(&self, hin: u64, local: Option<(Addr, u16)>, slot: u32) -> impl Iterator<Item = (u64, u32)> {
        let out = local.map(|(a, p)| (self.hash_endpoint(&a, p), slot | OUT_KEY));
        let first = if out.is_some() { IN_KEY } else { IN_KEY | OUT_KEY };
        std::iter::once((hin, slot | first)).chain(out)
    }

    /// The index entries of the connection stored in `slot` as `h` and `k`.
    #[inline]
    fn stored_entries(&self, h: &Hot, k: &Cold, slot: u32) -> impl Iterator<Item = (u64, u32)> {
        let local = (h.method == Method::FullNat).then(|| k.local());
        self.index_entries(self.hash_endpoint(&h.caddr, h.cport), local, slot)
    }

    /// Finds the slot of the connection `t` belongs to in `dir`; `h` is `self.hash(dir, t)`.
    #[inline]
    fn find(&self, sh: &Shard, dir: Dir, t: &Tuple, h: u64) -> Option<u32> {
        sh.index
            .find(h, |e| {
                let s = (e & SLOT_MASK) as usize;
                e & key_bit(dir) != 0
                    && match sh.slab.get(s) {
                        Some(c) if dir == Dir::Out => c.out_matches(|| sh.slab.local(s), t),
                        Some(c) => c.in_matches(t),
                        None => false,
                    }
            })
            .map(|e| e & SLOT_MASK)
    }

    /// Finds the connection of a packet, applies the packet to its state (`tcp_flags`: the TCP
    /// flag byte, 0 for UDP), refreshes its timer and returns a copy.
    pub fn lookup(&self, dir: Dir, t: &Tuple, tcp_flags: u8, now: Instant) -> Option<Conn> {
        self.lookup_hashed(dir, t, self.hash(dir, t), tcp_flags, self.clock(now))
    }

    /// [`ConnTable::lookup`] with the tuple's hash and the clock already read.
    #[inline]
    pub fn lookup_hashed(&self, dir: Dir, t: &Tuple, h: u64, tcp_flags: u8, now_ns: u64) -> Option<Conn> {
        self.lookup_stamped(dir, t, h, tcp_flags, now_ns, 0, &mut 0)
    }

    /// [`ConnTable::lookup_hashed`] for a flow cache: also sets `version` to the shard's, and
    /// gives a connection left established (or UDP) `grace` ticks more than its timeout. A timer
    /// is never moved earlier while its state stays.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn lookup_stamped(
        &self,
        dir: Dir,
        t: &Tuple,
        h: u64,
        tcp_flags: u8,
        now_ns: u64,
        grace: u32,
        version: &mut u32,
    ) -> Option<Conn> {
        let si = self.shard_of_hash(h);
        let mut sh = self.lock(si);
        let slot = self.find(&sh, dir, t, h)?;
        let now = tick(now_ns);
        let c = sh.slab.get_mut(slot as usize)?.as_mut()?;
        if expired(c.expires, now) {
            let tpl = self.unlink(&mut sh, si, slot);
            drop(sh);
            self.release_template(tpl);
            return None;
        }
        let was = c.state;
        if c.state != TcpState::Udp {
            c.state = c.state.next(c.way(dir), tcp_flags);
        }
        // Steady: established or UDP, which later packets without SYN, FIN or RST leave as it is.
        let steady = c.state.keeps(0);
        let mut expires = now.wrapping_add(self.ttl(c.state));
        if steady {
            expires = expires.wrapping_add(grace);
        }
        if c.state != was {
            c.expires = expires;
            self.shards[si].bump();
        } else if !steady || expires.wrapping_sub(c.expires) as i32 > 0 {
            c.expires = expires;
        }
        let (was_active, now_active, dest_id) = (was == TcpState::Established, c.active(), c.dest_id);
        // Straight into the return value: a `Conn` is 80 bytes, and each extra move copies them.
        let c = *c;
        let out = Some(c.conn(|| sh.slab.local(slot as usize)));
        *version = self.shards[si].version.load(Ordering::Relaxed);
        drop(sh);
        if was_active != now_active {
            let ctr = self.counters.get(dest_id);
            let (from, to) = if was_active {
                (&ctr.active, &ctr.inactive)
            } else {
                (&ctr.inactive, &ctr.active)
            };
            from.fetch_sub(1, Ordering::Relaxed);
            to.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// The connection of a packet, without touching its state or timer (ICMP errors).
    pub fn peek(&self, dir: Dir, t: &Tuple, now: Instant) -> Option<Conn> {
        let now_ns = self.clock(now);
        let h = self.hash(dir, t);
        let sh = self.lock(self.shard_of_hash(h));
        let slot = self.find(&sh, dir, t, h)?;
        sh.slab.live(slot as usize, tick(now_ns))
    }

    /// Creates a connection in the state its first packet gives it. FULLNAT takes a local address
    /// from `laddrs` and a port of the client's shard. If another worker created the same inbound
    /// tuple meanwhile, that connection is returned instead.
    ///
    /// Without FULLNAT, two virtual services that share a real server port make the same
    /// real-server-side tuple when one client reuses its source port for both: the server cannot
    /// tell such connections apart, and neither could the reverse lookup. A new connection
    /// therefore replaces an old one on that tuple that is no longer established (closing,
    /// TIME_WAIT, half open, UDP), as the server's own stack would, and is refused while the old
    /// one is established.
    pub fn insert(&self, n: &NewConn, laddrs: &[Addr], tcp_flags: u8, now: Instant) -> Result<Conn, InsertError> {
        let h = self.hash_endpoint(&n.caddr, n.cport);
        self.insert_hashed(n, h, laddrs, tcp_flags, self.clock(now))
    }

    /// [`ConnTable::insert`] with the inbound tuple's hash and the clock already read.
    pub fn insert_hashed(
        &self,
        n: &NewConn,
        hin: u64,
        laddrs: &[Addr],
        tcp_flags: u8,
        now_ns: u64,
    ) -> Result<Conn, InsertError> {
        let tin = Tuple {
            proto: n.proto,
            src: n.caddr,
            sport: n.cport,
            dst: n.vaddr,
            dport: n.vport,
        };
        let si = self.shard_of_hash(hin);
        let mut sh = self.lock(si);
        // Templates of entries this insert removes are released once the shard is unlocked.
        let mut released = [None, None];
        let r = self.insert_locked(&mut sh, si, n, &tin, hin, laddrs, tcp_flags, now_ns, &mut released);
        drop(sh);
        for k in released.into_iter().flatten() {
            self.release_template(Some(k));
        }
        let (c, created) = r?;
        if !created {
            return Ok(c);
        }
        let ctr = self.counters.get(c.dest_id);
        if c.active() { &ctr.active } else { &ctr.inactive }.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = n.persist_prefix {
            let key = (n.proto, n.caddr.masked(p), n.vaddr, n.vport);
            let mut ts = self.lock(self.template_shard(&key));
            if let Some(t) = ts.templates.get_mut(&key) {
                t.controls += 1;
                t.expires = t.expires.max(now_ns + t.timeout.as_nanos() as u64);
            }
        }
        Ok(c)
    }

    /// The body of [`ConnTable::insert_hashed`], with shard `si` locked: the connection, and
    /// whether it is new (false: another worker created it first).
    #[allow(clippy::too_many_arguments)]
    fn insert_locked(
        &self,
        sh: &mut Shard,
        si: usize,
        n: &NewConn,
        tin: &Tuple,
        hin: u64,
        laddrs: &[Addr],
        tcp_flags: u8,
        now_ns: u64,
        released: &mut [Option<TemplateKey>; 2],
    ) -> Result<(Conn, bool), InsertError> {
        // An expired entry for the same tuple that no sweep has removed yet goes now: left in the
        // index, it would be found before the new one.
        let now = tick(now_ns);
        if let Some(slot) = self.find(sh, Dir::In, tin, hin) {
            match sh.slab.live(slot as usize, now) {
                Some(c) => return Ok((c, false)),
                None => released[0] = self.unlink(sh, si, slot),
            }
        }
        if sh.len >= self.per_shard {
            return Err(InsertError::Full);
        }
        // FULLNAT's local endpoint; the other methods have none.
        let local = if n.method == Method::FullNat {
            Some(self.take_lport(sh, si, n, laddrs).ok_or(InsertError::LaddrExhausted)?)
        } else {
            None
        };
        let (laddr, lport) = local.unwrap_or((Addr::UNSPECIFIED, 0));
        let mut h = Hot {
            caddr: n.caddr,
            vaddr: n.vaddr,
            daddr: n.daddr,
            cport: n.cport,
            vport: n.vport,
            dport: n.dport,
            method: n.method,
            state: if n.proto == Proto::Tcp {
                TcpState::None
            } else {
                TcpState::Udp
            },
            dest_id: n.dest_id,
            expires: 0,
        };
        if n.proto == Proto::Tcp {
            h.state = h.state.next(h.way(Dir::In), tcp_flags);
        }
        h.expires = now.wrapping_add(self.ttl(h.state));
        let cold = Cold {
            laddr,
            lport,
            persist: n.persist_prefix.map(|p| p + 1).unwrap_or(0),
        };
        let c = h.conn(|| (laddr, lport));
        // Without FULLNAT the outbound key is the client endpoint too: the same hash.
        if n.method != Method::FullNat
            && let Some(old) = self.find(sh, Dir::Out, &c.out_tuple(), hin)
            && let Some(o) = sh.slab.get(old as usize)
        {
            if !expired(o.expires, now) && o.active() {
                return Err(InsertError::Conflict);
            }
            released[1] = self.unlink(sh, si, old);
        }
        let slot = match sh.free.pop() {
            Some(s) => {
                if let Some(e) = sh.slab.get_mut(s as usize) {
                    *e = Some(h);
                }
                if let Some(e) = sh.slab.cold_mut(s as usize) {
                    *e = cold;
                }
                // The next connection of this shard takes the next free slot: its lines, long
                // unused, start loading now rather than stall that insert's stores.
                if let Some(&next) = sh.free.last() {
                    sh.slab.prefetch_slot(next as usize);
                }
                s
            }
            None => sh.slab.push(h, cold) as u32,
        };
        let Shard { index, slab, .. } = sh;
        let keys = 1 + usize::from(local.is_some());
        // Growing places every other connection's keys again, walking the slab in order.
        let grew = index.reserve(keys, |new| {
            for (s, (h, k)) in slab.iter().enumerate() {
                if let Some(h) = h
                    && s != slot as usize
                {
                    for (h, v) in self.stored_entries(h, k, s as u32) {
                        new.insert(h, v);
                    }
                }
            }
        });
        for (h, v) in self.index_entries(hin, local, slot) {
            index.insert(h, v);
        }
        if grew {
            self.shards[si].publish(index);
        }
        sh.len += 1;
        Ok((c, true))
    }

    /// Pops a free local port of shard `si`, trying the local addresses from one picked by the
    /// client address, so that clients spread over them.
    fn take_lport(&self, sh: &mut Shard, si: usize, n: &NewConn, laddrs: &[Addr]) -> Option<(Addr, u16)> {
        if laddrs.is_empty() {
            return None;
        }
        let start = (self.hasher.hash_one(n.caddr) as usize) % laddrs.len();
        for k in 0..laddrs.len() {
            let la = laddrs[(start + k) % laddrs.len()];
            let ports = sh.ports.entry((n.proto, la)).or_insert_with(|| {
                // Once per (protocol, address) and shard: the ports whose endpoint hashes here.
                (LPORT_MIN..=u16::MAX)
                    .rev()
                    .filter(|&p| self.shard_of(&la, p) == si)
                    .collect()
            });
            if let Some(p) = ports.pop() {
                return Some((la, p));
            }
        }
        None
    }

    /// Removes a slot's entry and its index entries; returns the template key it was controlled by.
    fn unlink(&self, sh: &mut Shard, si: usize, slot: u32) -> Option<TemplateKey> {
        let s = slot as usize;
        // The cold part first: once the hot part is taken, nothing may stop the keys' removal.
        let k = *sh.slab.cold(s)?;
        let h = sh.slab.get_mut(s)?.take()?;
        for (hash, v) in self.stored_entries(&h, &k, slot) {
            sh.index.remove(hash, v);
        }
        sh.free.push(slot);
        sh.len -= 1;
        self.shards[si].bump();
        if h.method == Method::FullNat
            && let Some(v) = sh.ports.get_mut(&(h.proto(), k.laddr))
        {
            v.push(k.lport);
        }
        let ctr = self.counters.get(h.dest_id);
        if h.active() { &ctr.active } else { &ctr.inactive }.fetch_sub(1, Ordering::Relaxed);
        (k.persist > 0).then(|| (h.proto(), h.caddr.masked(k.persist - 1), h.vaddr, h.vport))
    }

    fn template_shard(&self, k: &TemplateKey) -> usize {
        self.shard_of(&k.1, k.3)
    }

    fn release_template(&self, key: Option<TemplateKey>) {
        if let Some(key) = key {
            let mut ts = self.lock(self.template_shard(&key));
            if let Some(t) = ts.templates.get_mut(&key) {
                t.controls = t.controls.saturating_sub(1);
            }
        }
    }

    /// Removes the connection a packet belongs to.
    pub fn remove(&self, dir: Dir, t: &Tuple) -> Option<Conn> {
        let h = self.hash(dir, t);
        let si = self.shard_of_hash(h);
        let mut sh = self.lock(si);
        let slot = self.find(&sh, dir, t, h)?;
        let c = sh.slab.conn(slot as usize)?;
        let tpl = self.unlink(&mut sh, si, slot);
        drop(sh);
        self.release_template(tpl);
        Some(c)
    }

    /// The real server a persistent client was sent to, if its template lives.
    pub fn template_lookup(
        &self,
        proto: Proto,
        caddr_masked: Addr,
        vaddr: Addr,
        vport: u16,
        now: Instant,
    ) -> Option<(u32, Addr, u16)> {
        let key = (proto, caddr_masked, vaddr, vport);
        let now_ns = self.clock(now);
        let mut ts = self.lock(self.template_shard(&key));
        let t = *ts.templates.get(&key)?;
        if t.expires <= now_ns && t.controls == 0 {
            ts.templates.remove(&key);
            return None;
        }
        Some((t.dest_id, t.daddr, t.dport))
    }

    /// Records (or replaces) where a persistent client goes, for `timeout` after its last connection.
    #[allow(clippy::too_many_arguments)]
    pub fn template_insert(
        &self,
        proto: Proto,
        caddr_masked: Addr,
        vaddr: Addr,
        vport: u16,
        dest_id: u32,
        daddr: Addr,
        dport: u16,
        timeout: Duration,
        now: Instant,
    ) {
        let key = (proto, caddr_masked, vaddr, vport);
        let expires = self.clock(now) + timeout.as_nanos() as u64;
        let mut ts = self.lock(self.template_shard(&key));
        let controls = ts.templates.get(&key).map(|t| t.controls).unwrap_or(0);
        ts.templates.insert(
            key,
            Template {
                dest_id,
                daddr,
                dport,
                timeout,
                expires,
                controls,
            },
        );
    }

    /// Sweeps at most `budget` slots for expired connections, continuing where the last sweep
    /// stopped; returns how many expired. Workers call it between batches.
    pub fn expire(&self, now: Instant, budget: usize) -> usize {
        let now_ns = self.clock(now);
        let pos = self.cursor.fetch_add(budget, Ordering::Relaxed);
        // The cursor walks shard by shard; each shard's slab is scanned in budget-sized steps.
        let si = (pos / STRIDE) & self.mask;
        let mut sh = self.lock(si);
        let start = pos % STRIDE;
        if start >= sh.slab.len() {
            // This shard is done: move the cursor to the next one, and age its templates.
            // Unless another worker already moved it on.
            let next = ((si + 1) & self.mask) * STRIDE;
            let mask = self.mask;
            let _ = self.cursor.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                ((c / STRIDE) & mask == si).then_some(next)
            });
            sh.templates.retain(|_, t| t.expires > now_ns || t.controls > 0);
            return 0;
        }
        let end = (start + budget).min(sh.slab.len());
        let mut released = Vec::new();
        let mut n = 0;
        let now = tick(now_ns);
        for slot in start..end {
            if sh.slab.get(slot).is_some_and(|c| expired(c.expires, now)) {
                if let Some(k) = self.unlink(&mut sh, si, slot as u32) {
                    released.push(k);
                }
                n += 1;
            }
        }
        drop(sh);
        for k in released {
            self.release_template(Some(k));
        }
        n
    }

    pub fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` live connections with the time each has left, shard by shard (each shard
    /// locked briefly), for `xvs ctl -c`.
    pub fn entries(&self, limit: usize, now: Instant) -> Vec<(Conn, Duration)> {
        let now_ns = self.clock(now);
        let mut out = Vec::new();
        for i in 0..self.shards.len() {
            let sh = self.lock(i);
            for e in sh.slab.each_live(tick(now_ns)) {
                if out.len() >= limit {
                    return out;
                }
                out.push(e);
            }
        }
        out
    }

    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// Bytes allocated for entries, index, free lists, port pools and templates.
    pub fn memory_bytes(&self) -> usize {
        (0..self.shards.len())
            .map(|i| {
                let s = self.lock(i);
                s.slab.memory_bytes()
                    + s.index.memory_bytes()
                    + s.free.capacity() * 4
                    + s.ports.values().map(|v| v.capacity() * 2 + 64).sum::<usize>()
                    + s.templates.capacity() * (size_of::<TemplateKey>() + size_of::<Template>() + 1)
            })
            .sum::<usize>()
            + size_of::<Self>()
    }

    /// Every live connection with its time left, one shard lock at a time (for `ipvsadm -L -c`).
    pub fn for_each(&self, now: Instant, mut f: impl FnMut(&Conn, Duration)) {
        let now_ns = self.clock(now);
        for i in 0..self.shards.len() {
            let s = self.lock(i);
            for (c, left) in s.slab.each_live(tick(now_ns)) {
                f(&c, left);
            }
        }
    }
}

#[cfg(test)]
mod tests;
