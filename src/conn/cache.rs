//! A worker's flow cache: copies of the connections its last packets found, in front of the
//! shared table (as Open vSwitch's exact-match cache sits in front of its classifier). A packet
//! of an established TCP or a UDP connection found here skips the shard's lock, its index and the
//! entry, and writes nothing shared.
//!
//! A copy is good while nothing changed it in the table. Each shard has a version that the table
//! raises, under the lock, whenever one of its connections goes or changes state; a copy is taken
//! with its shard's version and used only while the version stays. A hit does not touch the
//! connection's timer either: instead the lookup that took the copy set the timer [`GRACE`]
//! ticks beyond the timeout, the copy serves for at most that long, and the table never moves a
//! timer earlier while the state stays. A connection thus never expires before its timeout has
//! passed since its last packet, and at most `GRACE` (34 ms) after.
//!
//! Sets of four ways, picked by the client endpoint's hash; a packet with SYN, FIN or RST goes
//! to the table. So do all packets while the table is large (see [`ConnTable::is_large`]: tens of
//! thousands of connections, where the cache would miss), and for a while after a run of lookups
//! of which fewer than a third hit.

use super::{Conn, ConnTable, Dir, TcpState, Tuple, tick};
use crate::types::{Addr, Method, Proto};

/// Ticks a copy serves for after the lookup that took it (16 ticks, 34 ms).
pub const GRACE: u32 = 16;
const SETS: usize = 1024;
const WAYS: usize = 4;
/// Lookups per judgement of the hit rate.
const WINDOW: u64 = 1 << 16;
/// Lookups the cache stands aside for after a window with fewer hits than a third (where a miss
/// costs more than a hit saves).
const REST: u32 = 1 << 22;

#[derive(Clone, Copy)]
struct Flow {
    conn: Conn,
    dir: Dir,
    /// The shard's version when the copy was taken.
    version: u32,
    /// The tick it was taken at.
    at: u32,
}

/// One set: a tag from the hash of each way's flow (0 where the way is free), then the flows.
#[derive(Clone, Copy)]
struct Set {
    tags: [u32; WAYS],
    flows: [Flow; WAYS],
}

pub struct FlowCache {
    sets: Box<[Set]>,
    /// Hits and misses in the current window.
    hits: u64,
    misses: u64,
    /// Lookups left before the cache is tried again; 0 while it is in use.
    resting: u32,
    /// Hits before the current window.
    served: u64,
}

impl Default for FlowCache {
    fn default() -> FlowCache {
        let free = Flow {
            conn: Conn {
                caddr: Addr::UNSPECIFIED,
                vaddr: Addr::UNSPECIFIED,
                daddr: Addr::UNSPECIFIED,
                laddr: Addr::UNSPECIFIED,
                cport: 0,
                vport: 0,
                dport: 0,
                lport: 0,
                dest_id: 0,
                proto: Proto::Tcp,
                method: Method::Nat,
                state: TcpState::None,
            },
            dir: Dir::In,
            version: 0,
            at: 0,
        };
        FlowCache {
            sets: vec![
                Set {
                    tags: [0; WAYS],
                    flows: [free; WAYS]
                };
                SETS
            ]
            .into_boxed_slice(),
            hits: 0,
            misses: 0,
            resting: 0,
            served: 0,
        }
    }
}

/// The set of hash `h`, and the tag its flows have there (never 0).
#[inline(always)]
fn place(h: u64) -> (usize, u32) {
    ((h >> 20) as usize & (SETS - 1), (h >> 32) as u32 | 1)
}

impl FlowCache {
    /// Lookups served from the cache so far.
    pub fn served(&self) -> u64 {
        self.served + self.hits
    }

    /// [`ConnTable::lookup_hashed`], served from the cache where it can be.
    #[inline(always)]
    pub fn lookup(
        &mut self,
        table: &ConnTable,
        dir: Dir,
        t: &Tuple,
        h: u64,
        tcp_flags: u8,
        now_ns: u64,
    ) -> Option<Conn> {
        if self.resting > 0 || !TcpState::Established.keeps(tcp_flags) || table.is_large() {
            // Resting; SYN, FIN or RST, a change of state that raises the version anyway; or a
            // table with far more connections than the cache holds.
            self.resting = self.resting.saturating_sub(1);
            return table.lookup_hashed(dir, t, h, tcp_flags, now_ns);
        }
        let (s, tag) = place(h);
        let set = &self.sets[s];
        let way = (0..WAYS).find(|&w| {
            let f = &set.flows[w];
            set.tags[w] == tag && f.dir == dir && f.conn.tuple(dir) == *t
        });
        if let Some(f) = way.map(|w| &set.flows[w])
            && tick(now_ns).wrapping_sub(f.at) < GRACE
            && f.conn.state.keeps(tcp_flags)
            && table.version(h) == f.version
        {
            self.hits += 1;
            return Some(f.conn);
        }
        self.miss(table, dir, t, h, tcp_flags, now_ns, way)
    }

    /// A lookup the cache could not serve (`way`: where its flow's stale copy is): from the
    /// table, and the copy taken or dropped.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn miss(
        &mut self,
        table: &ConnTable,
        dir: Dir,
        t: &Tuple,
        h: u64,
        tcp_flags: u8,
        now_ns: u64,
        way: Option<usize>,
    ) -> Option<Conn> {
        let now = tick(now_ns);
        let (s, tag) = place(h);
        let set = &mut self.sets[s];
        let mut version = 0;
        let found = table.lookup_stamped(dir, t, h, tcp_flags, now_ns, GRACE, &mut version);
        match found {
            Some(conn) if conn.state.keeps(0) => {
                let w = way.unwrap_or_else(|| victim(set, now));
                set.tags[w] = tag;
                set.flows[w] = Flow {
                    conn,
                    dir,
                    version,
                    at: now,
                };
            }
            // Gone, or in a state that the next packets may change: no copy.
            _ => {
                if let Some(w) = way {
                    set.tags[w] = 0;
                }
            }
        }
        self.misses += 1;
        // Judged at the first miss after each window.
        if self.hits + self.misses >= WINDOW {
            if self.hits < self.misses / 2 {
                self.resting = REST;
            }
            self.served += self.hits;
            self.hits = 0;
            self.misses = 0;
        }
        found
    }
}

#[cfg(test)]
impl FlowCache {
    pub(super) fn hits(&self) -> u64 {
        self.hits
    }

    pub(super) fn resting(&self) -> bool {
        self.resting > 0
    }
}

/// The way a new copy takes: a free one, or the one taken longest ago.
#[inline]
fn victim(set: &Set, now: u32) -> usize {
    let age = |w: usize| {
        if set.tags[w] == 0 {
            u32::MAX
        } else {
            now.wrapping_sub(set.flows[w].at)
        }
    };
    (1..WAYS).fold(0, |v, w| if age(w) > age(v) { w } else { v })
}
