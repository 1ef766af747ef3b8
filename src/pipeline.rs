//! The per-worker data plane: one frame in, one verdict out.

/// Bytes of headroom the I/O shells leave in front of every received frame, so that TUN can
/// prepend an outer IPv4 (20) or IPv6 (40) header without copying the packet.
pub const HEADROOM: usize = 64;

/// A frame in a buffer with headroom: the packet is `buf[start..start + len]`.
///
/// The pipeline may move `start` back (encapsulation) or change `len`; the I/O shell transmits
/// whatever range the frame holds when the verdict is `Forward` or `Reply`.
pub struct Frame<'a> {
    pub buf: &'a mut [u8],
    pub start: usize,
    pub len: usize,
}

impl<'a> Frame<'a> {
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Frame<'a> {
        Frame { buf, start, len }
    }
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// What becomes of a frame. Every frame ends in exactly one verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame out of port `port`.
    Forward { port: u16 },
    /// Transmit the frame (rewritten into a reply, such as ICMP "fragmentation needed") out of the port it came in on.
    Reply,
    /// Not ours: hand the frame, untouched, to the kernel's stack.
    PassToKernel,
    /// Drop it, counted under the reason.
    Drop(crate::stats::DropReason),
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::conn::{Conn, ConnTable, Dir, FlowCache, FragKey, FragTable, InsertError, NewConn, Tuple};
use crate::sched::{SchedKey, Scheduler};
use crate::service::{Hop, ServiceTable, SvcKey};
use crate::stats::{DropReason, Stats};
use crate::types::{Addr, DestCounters, Mac, Method, Proto};
use crate::wire::{ethernet, ethertype, ip_proto, ipv4, ipv6, tcp, udp};
use crate::xmit::icmp::{self, Outer, Translation};
use crate::xmit::tun::{self, TunError};
use crate::xmit::{Parsed, dr, fullnat, nat, set_l2};

/// Where the control thread publishes service-table snapshots for the workers.
///
/// Workers look for a new snapshot every loop, busy or idle: they read the generation (a plain
/// load) and load the snapshot only when it changed, since `ArcSwap::load` costs an atomic
/// read-modify-write and a fence.
pub struct Published {
    table: ArcSwap<ServiceTable>,
    /// The generation of the snapshot stored last, written after it.
    generation: AtomicU64,
}

impl Published {
    pub fn new(snap: ServiceTable) -> Published {
        Published {
            generation: AtomicU64::new(snap.generation),
            table: ArcSwap::from_pointee(snap),
        }
    }

    /// Publishes a snapshot; its generation must differ from the last one's.
    pub fn store(&self, snap: ServiceTable) {
        let g = snap.generation;
        self.table.store(Arc::new(snap));
        self.generation.store(g, Ordering::Release);
    }

    /// The current snapshot.
    pub fn load_full(&self) -> Arc<ServiceTable> {
        self.table.load_full()
    }

    /// The generation of the snapshot published last: once this is seen, [`Published::load_full`]
    /// returns that snapshot or a later one.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCP_FIN: u8 = 0x01;

/// Connection slots each worker sweeps for expiry at a time, and how often: 512 every 1 ms is
/// half a million slots a second per worker (a 10M table in 20 s; a connection that times out is
/// also removed when its next packet finds it expired). Sweeping between every batch cost a third
/// of a busy worker's time in the performance lab.
const EXPIRE_BUDGET: usize = 512;
const EXPIRE_EVERY: Duration = Duration::from_millis(1);
/// Most next hops a worker remembers to ask the kernel to resolve.
const MAX_PENDING_RESOLVE: usize = 64;

type Step<T> = Result<T, Verdict>;

/// What a first look at a frame found, before any state is touched: its verdict already, or the
/// parsed packet with where its connection is (`h`, the connection table hash of its tuple).
#[derive(Clone, Copy)]
enum Class {
    Done(Verdict),
    /// To a virtual service (`si`).
    In {
        p: Parsed,
        proto: Proto,
        si: u32,
        h: u64,
    },
    /// From a NAT real server, or to a FULLNAT local address (`laddr`).
    Out {
        p: Parsed,
        proto: Proto,
        laddr: bool,
        h: u64,
    },
    /// An ICMP error, translated with the connection it quotes.
    Icmp(Outer),
}

/// A frame looked at ahead of its batch: where its bytes were (so that `process` can tell it is
/// the same frame) and what was found.
struct Ahead {
    /// The frame's address, only ever compared.
    at: usize,
    len: usize,
    class: Class,
}

/// Most frames looked at ahead; a batch larger than this is looked at in part.
const AHEAD_MAX: usize = 256;

/// One worker's data plane: its own scheduler state and counters, the shared connection table and
/// the current service-table snapshot.
pub struct Pipeline {
    published: Arc<Published>,
    snap: Arc<ServiceTable>,
    scheds: Vec<Box<dyn Scheduler>>,
    table: Arc<ConnTable>,
    counters: Arc<DestCounters>,
    pub stats: Stats,
    /// Next hops found missing, for the control thread to have the kernel resolve.
    pub unresolved: Vec<Addr>,
    /// Next hops recently used, valid for the current snapshot only.
    hops: Box<[Option<(Addr, Hop)>]>,
    /// Clients of new NAT and FULLNAT connections, with the MAC and port their first packet came
    /// from: a stand-in, for the replies, while the kernel resolves a neighbour it did not know.
    senders: Box<[Option<Sender>]>,
    /// When the next expiry sweep is due (at once when `None`).
    next_expire: Option<Instant>,
    /// The batch being processed, as [`Pipeline::look_ahead`] found it, and the next to process.
    ahead: Vec<Ahead>,
    next_ahead: usize,
    /// The connection table's clock for the last `now` seen.
    clock: Option<(Instant, u64)>,
    /// The ports of fragmented datagrams whose first fragment this worker forwarded.
    frags: FragTable,
    /// Copies of the connections this worker's packets found last.
    flows: FlowCache,
}

impl Pipeline {
    pub fn new(published: Arc<Published>, table: Arc<ConnTable>, counters: Arc<DestCounters>) -> Pipeline {
        let snap = published.load_full();
        let scheds = snap.services.iter().map(|s| s.sched.fork()).collect();
        Pipeline {
            published,
            snap,
            scheds,
            table,
            counters,
            stats: Stats::default(),
            unresolved: Vec::new(),
            hops: vec![None; HOP_CACHE].into_boxed_slice(),
            senders: vec![None; HOP_CACHE].into_boxed_slice(),
            next_expire: None,
            ahead: Vec::with_capacity(AHEAD_MAX),
            next_ahead: 0,
            clock: None,
            frags: FragTable::default(),
            flows: FlowCache::default(),
        }
    }

    /// Picks up a newer snapshot if one was published (workers call this between batches).
    pub fn refresh(&mut self) {
        if self.published.generation() != self.snap.generation {
            let new = self.published.load_full();
            // A service whose scheduler and real servers did not change keeps its scheduler state,
            // so that an unrelated change (a neighbour learnt, another service edited) does not
            // restart its rotation.
            let mut old: Vec<Option<Box<dyn Scheduler>>> =
                std::mem::take(&mut self.scheds).into_iter().map(Some).collect();
            self.scheds = new
                .services
                .iter()
                .map(|s| {
                    let same = self
                        .snap
                        .services
                        .iter()
                        .position(|o| o.key == s.key && o.sched_kind == s.sched_kind && o.dests == s.dests);
                    same.and_then(|i| old[i].take()).unwrap_or_else(|| s.sched.fork())
                })
                .collect();
            self.snap = new;
            self.hops.fill(None);
        }
    }

    /// Between batches: new snapshot, and (every [`EXPIRE_EVERY`]) a bounded sweep of expired
    /// connections.
    pub fn between_batches(&mut self, now: Instant) {
        self.refresh();
        if self.next_expire.is_none_or(|t| now >= t) {
            self.next_expire = Some(now + EXPIRE_EVERY);
            self.table.expire(now, EXPIRE_BUDGET);
        }
    }

    /// The worker's counters, brought up to date.
    pub fn counters(&mut self) -> &Stats {
        self.stats.flow_hits = self.flows.served();
        &self.stats
    }

    pub fn snapshot(&self) -> &Arc<ServiceTable> {
        &self.snap
    }

    /// Looks at one frame of a batch before any of the batch is processed: classifies it and
    /// starts loading its connection's index bucket. The I/O shells call it for every frame of a
    /// batch, in order, then [`Pipeline::process`] for each in the same order, so that the cache
    /// misses of a whole batch are in flight together. Once every frame is looked at, the first
    /// `process` call prefetches the connection entries the buckets point to. `now` is the time
    /// the batch will be processed at (a fragment is classified by what its datagram's first
    /// fragment left, which expires).
    ///
    /// While the connection table is small enough to stay in the cache there is nothing to
    /// prefetch, and frames are not looked at: `process` classifies them as it goes.
    #[inline]
    pub fn look_ahead(&mut self, frame: &[u8], now: Instant) {
        if self.next_ahead > 0 {
            // A new batch: whatever is left of the last one (not processed) is stale.
            self.ahead.clear();
            self.next_ahead = 0;
        }
        if self.ahead.len() < AHEAD_MAX && self.table.is_large() {
            self.look_at(frame, now);
        }
    }

    /// Classifies one frame of a batch ahead and starts loading its bucket.
    fn look_at(&mut self, frame: &[u8], now: Instant) {
        let class = self.classify(frame, now).unwrap_or_else(Class::Done);
        if let Class::In { h, .. } | Class::Out { h, .. } = class {
            self.table.prefetch(h);
        }
        self.ahead.push(Ahead {
            at: frame.as_ptr() as usize,
            len: frame.len(),
            class,
        });
    }

    /// Carries one frame from bytes in to a verdict out. Never panics on any input.
    pub fn process(&mut self, frame: &mut Frame<'_>, in_port: u16, now: Instant) -> Verdict {
        self.stats.rx += 1;
        let class = match self.ahead.get(self.next_ahead) {
            Some(a) if a.at == frame.bytes().as_ptr() as usize && a.len == frame.len => {
                if self.next_ahead == 0 {
                    self.prefetch_entries();
                }
                self.next_ahead += 1;
                Ok(self.ahead[self.next_ahead - 1].class)
            }
            Some(_) => {
                // Not the frame looked at next: the look-ahead no longer matches this batch.
                self.ahead.clear();
                self.next_ahead = 0;
                self.classify(frame.bytes(), now)
            }
            None => self.classify(frame.bytes(), now),
        };
        // The class by reference: it is large, and each move of it copies it.
        let v = match class {
            Ok(ref c) => match self.act(frame, c, in_port, now) {
                Ok(v) | Err(v) => v,
            },
            Err(v) => v,
        };
        match v {
            Verdict::Forward { .. } => self.stats.forwarded += 1,
            Verdict::Reply => self.stats.replied += 1,
            Verdict::PassToKernel => self.stats.passed += 1,
            Verdict::Drop(r) => self.stats.drop(r),
        }
        v
    }

    /// The second step of a batch's look-ahead: with the buckets loaded (or on their way), find
    /// the entries they point to and start loading those.
    fn prefetch_entries(&self) {
        for a in &self.ahead {
            match a.class {
                // A SYN to a service nearly always opens a connection: there is no entry to load.
                Class::In { p, .. } if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN => {}
                Class::In { h, .. } => self.table.prefetch_entry(Dir::In, h),
                Class::Out { h, .. } => self.table.prefetch_entry(Dir::Out, h),
                _ => {}
            }
        }
    }

    /// The connection table's clock for `now`, read once per batch.
    #[inline]
    fn clock(&mut self, now: Instant) -> u64 {
        match self.clock {
            Some((at, ns)) if at == now => ns,
            _ => {
                let ns = self.table.clock(now);
                self.clock = Some((now, ns));
                ns
            }
        }
    }

    /// Does what the look at a frame found: the connection lookup or a new one, and the rewrite.
    fn act(&mut self, frame: &mut Frame<'_>, class: &Class, in_port: u16, now: Instant) -> Step<Verdict> {
        match *class {
            Class::Done(v) => Ok(v),
            Class::In { ref p, proto, si, h } => self.inbound(frame, p, proto, si, h, in_port, now),
            Class::Out { ref p, proto, laddr, h } => {
                let now_ns = self.clock(now);
                match self
                    .flows
                    .lookup(&self.table, Dir::Out, &tuple(p, proto), h, p.tcp_flags, now_ns)
                {
                    Some(ref c) => self.outbound(frame, p, c),
                    // To a local address but no connection: nobody else can want it.
                    None if laddr => Err(drop(DropReason::NoConnection)),
                    None => Ok(Verdict::PassToKernel),
                }
            }
            Class::Icmp(o) => self.icmp_error(frame, o, now),
        }
    }

    fn classify(&mut self, b: &[u8], now: Instant) -> Step<Class> {
        let (l3, etype) = {
            let eth = ethernet::Frame::new_checked(b).map_err(|_| drop(DropReason::EthMalformed))?;
            // VLAN-tagged service traffic is not served yet: the kernel keeps tagged frames.
            if eth.vlan_id().is_some() {
                return Ok(Class::Done(Verdict::PassToKernel));
            }
            (eth.header_len(), eth.ethertype())
        };
        match etype {
            ethertype::IPV4 => self.ipv4(b, l3, now),
            ethertype::IPV6 => self.ipv6(b, l3, now),
            _ => Ok(Class::Done(Verdict::PassToKernel)),
        }
    }

    fn ipv4(&mut self, b: &[u8], l3: usize, now: Instant) -> Step<Class> {
        let ip = ipv4::Packet::new_checked(&b[l3..]).map_err(|_| drop(DropReason::Ipv4Malformed))?;
        if !ip.verify_checksum() {
            return Err(drop(DropReason::Ipv4Checksum));
        }
        let (src, dst) = (Addr::from(ip.src_addr()), Addr::from(ip.dst_addr()));
        let (l4, end, proto, ttl) = (
            l3 + ip.header_len(),
            l3 + usize::from(ip.total_len()),
            ip.protocol(),
            ip.ttl(),
        );
        match proto {
            ip_proto::TCP | ip_proto::UDP => {
                let mut p = Parsed {
                    l3: l3 as u32,
                    l4: l4 as u32,
                    end: end as u32,
                    v6: false,
                    proto,
                    src,
                    dst,
                    sport: 0,
                    dport: 0,
                    tcp_flags: 0,
                    ttl,
                    later_fragment: false,
                };
                if ip.is_fragment() {
                    p.later_fragment = ip.frag_offset() != 0;
                    return self.follow(b, p, u32::from(ip.ident()), now);
                }
                self.l4(b, &mut p, true)?;
                self.transport(p)
            }
            _ if ip.is_fragment() => Ok(Class::Done(self.unfollowed(dst))),
            ip_proto::ICMP => {
                let t = *b.get(l4).ok_or_else(|| drop(DropReason::IcmpMalformed))?;
                if !icmp::is_error_v4(t) {
                    return Ok(Class::Done(Verdict::PassToKernel));
                }
                Ok(Class::Icmp(Outer {
                    l3,
                    icmp_at: l4,
                    end,
                    v6: false,
                    src,
                    dst,
                    ttl,
                }))
            }
            _ => Ok(Class::Done(Verdict::PassToKernel)),
        }
    }

    fn ipv6(&mut self, b: &[u8], l3: usize, now: Instant) -> Step<Class> {
        let ip = ipv6::Packet::new_checked(&b[l3..]).map_err(|_| drop(DropReason::Ipv6Malformed))?;
        let (src, dst) = (Addr::from(ip.src_addr()), Addr::from(ip.dst_addr()));
        let end = l3 + 40 + usize::from(ip.payload_len());
        let ttl = ip.hop_limit();
        let ul = ip.upper_layer().map_err(|_| drop(DropReason::Ipv6Malformed))?;
        let l4 = l3 + ul.offset;
        match ul.proto {
            ip_proto::TCP | ip_proto::UDP => {
                let mut p = Parsed {
                    l3: l3 as u32,
                    l4: l4 as u32,
                    end: end as u32,
                    v6: true,
                    proto: ul.proto,
                    src,
                    dst,
                    sport: 0,
                    dport: 0,
                    tcp_flags: 0,
                    ttl,
                    later_fragment: false,
                };
                if let Some(f) = ul.fragment {
                    p.later_fragment = f.offset != 0;
                    return self.follow(b, p, f.ident, now);
                }
                self.l4(b, &mut p, true)?;
                self.transport(p)
            }
            _ if ul.fragment.is_some() => Ok(Class::Done(self.unfollowed(dst))),
            ip_proto::ICMPV6 => {
                let t = *b
                    .get(l4)
                    .filter(|_| l4 < end)
                    .ok_or_else(|| drop(DropReason::IcmpMalformed))?;
                if !icmp::is_error_v6(t) {
                    return Ok(Class::Done(Verdict::PassToKernel));
                }
                Ok(Class::Icmp(Outer {
                    l3,
                    icmp_at: l4,
                    end,
                    v6: true,
                    src,
                    dst,
                    ttl,
                }))
            }
            _ => Ok(Class::Done(Verdict::PassToKernel)),
        }
    }

    /// A fragment xvs does not follow (of another protocol, or a later one whose first fragment
    /// it has not seen): dropped when it is for a VIP or a local address, else the kernel's.
    fn unfollowed(&self, dst: Addr) -> Verdict {
        if self.snap.is_vip(dst) || self.snap.is_laddr(dst) {
            drop(DropReason::Fragment)
        } else {
            Verdict::PassToKernel
        }
    }

    /// Classifies a fragment of a TCP or UDP datagram (identification `id`) as its datagram's
    /// first fragment was (see [`crate::conn::frag`]). The first is classified by its own ports,
    /// which it must hold whole (RFC 1858's tiny fragments are malformed), and leaves them for the
    /// later ones; a later one is classified by those ports, as any packet that carried them.
    #[cold]
    fn follow(&mut self, b: &[u8], mut p: Parsed, id: u32, now: Instant) -> Step<Class> {
        let now_ns = self.clock(now);
        let key = FragKey {
            src: p.src,
            dst: p.dst,
            id,
            proto: p.proto,
        };
        if p.later_fragment {
            let Some((sport, dport)) = self.frags.ports(&key, now_ns) else {
                return Ok(Class::Done(self.unfollowed(p.dst)));
            };
            (p.sport, p.dport) = (sport, dport);
        } else {
            self.l4(b, &mut p, false)?;
        }
        let class = self.transport(p)?;
        if !p.later_fragment && matches!(class, Class::In { .. } | Class::Out { .. }) {
            self.frags.insert(key, p.sport, p.dport, now_ns);
        }
        Ok(class)
    }

    /// Reads the ports (and TCP flags) into `p`; a malformed header is dropped only when it is ours.
    /// `whole`: the segment is all there (not a first fragment), so a UDP length must match it.
    /// In place rather than by value: a `Parsed` moved through a `Result` is copied in pieces that
    /// the loads of its addresses cannot forward from.
    fn l4(&self, b: &[u8], p: &mut Parsed, whole: bool) -> Step<()> {
        let seg = b.get(p.l4 as usize..p.end as usize).unwrap_or(&[]);
        let ok = if p.proto == ip_proto::TCP {
            tcp::Packet::new_checked(seg)
                .map(|t| (t.src_port(), t.dst_port(), t.flags()))
                .ok()
        } else if whole {
            udp::Packet::new_checked(seg)
                .map(|u| (u.src_port(), u.dst_port(), 0))
                .ok()
        } else {
            udp::Packet::new_checked_header(seg)
                .map(|u| (u.src_port(), u.dst_port(), 0))
                .ok()
        };
        match ok {
            Some((s, d, f)) => {
                (p.sport, p.dport, p.tcp_flags) = (s, d, f);
                Ok(())
            }
            None if self.snap.is_vip(p.dst) || self.snap.is_laddr(p.dst) => Err(drop(DropReason::L4Malformed)),
            None => Err(Verdict::PassToKernel),
        }
    }

    /// Which way a TCP or UDP packet goes, and the hash its connection is found by.
    fn transport(&self, p: Parsed) -> Step<Class> {
        let Some(proto) = Proto::from_number(p.proto) else {
            return Ok(Class::Done(Verdict::PassToKernel));
        };
        if let Some(si) = self.snap.service(&SvcKey {
            proto,
            addr: p.dst,
            port: p.dport,
        }) {
            let h = self.table.hash_endpoint(&p.src, p.sport);
            return Ok(Class::In { p, proto, si, h });
        }
        let laddr = self.snap.is_laddr(p.dst);
        if laddr
            || self.snap.is_nat_dest(&SvcKey {
                proto,
                addr: p.src,
                port: p.sport,
            })
        {
            let h = self.table.hash_endpoint(&p.dst, p.dport);
            return Ok(Class::Out { p, proto, laddr, h });
        }
        Ok(Class::Done(Verdict::PassToKernel))
    }

    #[allow(clippy::too_many_arguments)]
    fn inbound(
        &mut self,
        frame: &mut Frame<'_>,
        p: &Parsed,
        proto: Proto,
        si: u32,
        h: u64,
        in_port: u16,
        now: Instant,
    ) -> Step<Verdict> {
        let t = tuple(p, proto);
        let now_ns = self.clock(now);
        // The found connection is used where it lies: a `Conn` is 80 bytes, and merging it with
        // a new one into one variable would copy it.
        let found = self.flows.lookup(&self.table, Dir::In, &t, h, p.tcp_flags, now_ns);
        let made;
        let c = match found {
            Some(ref c) => {
                if self.snap.services[si as usize].expire_nodest_conn && !self.snap.dest_alive(c.dest_id) {
                    self.table.remove(Dir::In, &t);
                    return Err(drop(DropReason::NoDest));
                }
                c
            }
            None => {
                // As IPVS: only a SYN opens a TCP connection.
                if proto == Proto::Tcp && p.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) != TCP_SYN {
                    return Err(drop(DropReason::NoConnection));
                }
                made = self.new_conn(p, proto, si, h, now)?;
                if made.method.two_way() {
                    self.remember_sender(frame.bytes(), p.src, in_port);
                }
                &made
            }
        };
        // NAT and FULLNAT route the packet; DR and TUN leave the client's IP header as it is.
        if c.method.two_way() {
            check_ttl(p)?;
        }
        let hop = self.hop(c.daddr)?;
        let len = u64::from(p.end - p.l3);
        let bytes = frame.bytes_mut();
        match c.method {
            Method::Nat => nat::inbound(bytes, p, c, &hop),
            Method::FullNat => fullnat::inbound(bytes, p, c, &hop),
            Method::Dr => dr::inbound(bytes, &hop),
            Method::Tun => {
                let v = self.tunnel(frame, p.l3 as usize, p.end as usize, c, &hop, in_port)?;
                if matches!(v, Verdict::Forward { .. }) {
                    self.count(c.dest_id, true, len);
                }
                return Ok(v);
            }
        }
        self.count(c.dest_id, true, len);
        Ok(Verdict::Forward { port: hop.port })
    }

    /// Counts a forwarded packet of real server `id`'s traffic.
    #[inline]
    fn count(&mut self, id: u32, inbound: bool, len: u64) {
        let d = self.stats.dest(id);
        if inbound {
            d.pkts_in += 1;
            d.bytes_in += len;
        } else {
            d.pkts_out += 1;
            d.bytes_out += len;
        }
    }

    fn outbound(&mut self, frame: &mut Frame<'_>, p: &Parsed, c: &Conn) -> Step<Verdict> {
        check_ttl(p)?;
        let hop = self.hop(c.caddr)?;
        let len = u64::from(p.end - p.l3);
        let bytes = frame.bytes_mut();
        match c.method {
            Method::Nat => nat::outbound(bytes, p, c, &hop),
            Method::FullNat => fullnat::outbound(bytes, p, c, &hop),
            // DR and TUN replies bypass the director; an entry for one is never found this way.
            Method::Dr | Method::Tun => return Ok(Verdict::PassToKernel),
        }
        self.count(c.dest_id, false, len);
        Ok(Verdict::Forward { port: hop.port })
    }

    fn tunnel(
        &mut self,
        frame: &mut Frame<'_>,
        l3: usize,
        end: usize,
        c: &Conn,
        hop: &Hop,
        in_port: u16,
    ) -> Step<Verdict> {
        let port = &self.snap.ports[hop.port as usize];
        let dip = port.addr_like(c.daddr).ok_or_else(|| drop(DropReason::NoRoute))?;
        match tun::encapsulate(frame, l3, end, dip, c.daddr, port.mtu, hop) {
            Ok(()) => Ok(Verdict::Forward { port: hop.port }),
            Err(TunError::Drop(r)) => Err(drop(r)),
            Err(TunError::FragNeeded(mtu)) => {
                let back = self
                    .snap
                    .ports
                    .get(in_port as usize)
                    .ok_or_else(|| drop(DropReason::NoRoute))?;
                // Answer from the director's own address on the client side, as a router would.
                let from = back.addr_like(c.caddr).unwrap_or(c.vaddr);
                tun::too_big(frame, l3, end, from, back.mac, mtu);
                Ok(Verdict::Reply)
            }
        }
    }

    fn new_conn(&mut self, p: &Parsed, proto: Proto, si: u32, h: u64, now: Instant) -> Step<Conn> {
        let now_ns = self.clock(now);
        let snap = &self.snap;
        let svc = &snap.services[si as usize];
        let key = SchedKey {
            proto,
            caddr: p.src,
            cport: p.sport,
            vaddr: p.dst,
            vport: p.dport,
        };
        let mut pick = || {
            self.scheds[si as usize]
                .schedule(&svc.dests, &self.counters, &key)
                .map(|i| &svc.dests[i])
                .map(|d| (d.id, d.addr, d.port))
                .ok_or_else(|| drop(DropReason::NoDest))
        };
        let (dest_id, daddr, dport) = match svc.persistence {
            None => pick()?,
            Some((timeout, plen)) => {
                let masked = p.src.masked(plen);
                // A template whose server was removed or drained is not followed (keepalived users
                // set IPVS's expire_quiescent_template for this; here it is the only behaviour).
                let usable = |id: u32| svc.dests.iter().any(|d| d.id == id && d.weight > 0);
                match self
                    .table
                    .template_lookup(proto, masked, p.dst, p.dport, now)
                    .filter(|t| usable(t.0))
                {
                    Some(t) => t,
                    None => {
                        let (id, a, port) = pick()?;
                        self.table
                            .template_insert(proto, masked, p.dst, p.dport, id, a, port, timeout, now);
                        (id, a, port)
                    }
                }
            }
        };
        let nc = NewConn {
            proto,
            method: svc.method,
            caddr: p.src,
            cport: p.sport,
            vaddr: p.dst,
            vport: p.dport,
            daddr,
            dport,
            dest_id,
            persist_prefix: svc.persistence.map(|(_, l)| l),
        };
        let c = self
            .table
            .insert_hashed(&nc, h, &svc.laddrs, p.tcp_flags, now_ns)
            .map_err(|e| {
                drop(match e {
                    InsertError::Full => DropReason::TableFull,
                    InsertError::LaddrExhausted => DropReason::LaddrExhausted,
                    InsertError::Conflict => DropReason::ConnConflict,
                })
            })?;
        self.stats.conns += 1;
        self.stats.dest(c.dest_id).conns += 1;
        Ok(c)
    }

    /// Translates an ICMP error that quotes a connection's packet, or leaves it to the kernel.
    fn icmp_error(&mut self, frame: &mut Frame<'_>, o: Outer, now: Instant) -> Step<Verdict> {
        let ours = self.snap.is_vip(o.dst) || self.snap.is_laddr(o.dst);
        let Some(q) = icmp::parse_quote(frame.bytes(), o.icmp_at, o.end, o.v6) else {
            return if ours {
                Err(drop(DropReason::IcmpMalformed))
            } else {
                Ok(Verdict::PassToKernel)
            };
        };
        // The quoted packet is one that went out; its reverse is the tuple that came in.
        let rev = Tuple {
            proto: q.proto,
            src: q.dst,
            sport: q.dport,
            dst: q.src,
            dport: q.sport,
        };
        // From the client's side, about a reply of ours, it goes to the real server; from the real
        // server's side, about a packet we sent it, it goes to the client.
        let dir = if self.snap.is_vip(q.src) {
            Dir::In
        } else if self.snap.is_laddr(q.src)
            || self.snap.is_nat_dest(&SvcKey {
                proto: q.proto,
                addr: q.dst,
                port: q.dport,
            })
        {
            Dir::Out
        } else {
            return Ok(Verdict::PassToKernel);
        };
        let Some(c) = self.table.peek(dir, &rev, now) else {
            return if ours {
                Err(drop(DropReason::IcmpNoConnection))
            } else {
                Ok(Verdict::PassToKernel)
            };
        };
        if o.ttl <= 1 {
            return Err(drop(DropReason::TtlExceeded));
        }
        let hop = self.hop(if dir == Dir::In { c.daddr } else { c.caddr })?;
        let t = match (dir, c.method) {
            (Dir::In, Method::Nat) => Translation {
                outer_dst: Some(c.daddr),
                quoted_src: Some((c.daddr, c.dport)),
                ..Default::default()
            },
            (Dir::In, Method::FullNat) => Translation {
                outer_src: Some(c.laddr),
                outer_dst: Some(c.daddr),
                quoted_src: Some((c.daddr, c.dport)),
                quoted_dst: Some((c.laddr, c.lport)),
            },
            (Dir::In, Method::Dr) => {
                set_l2(frame.bytes_mut(), &hop);
                return Ok(Verdict::Forward { port: hop.port });
            }
            (Dir::In, Method::Tun) => return self.tunnel(frame, o.l3, o.end, &c, &hop, 0),
            (Dir::Out, Method::Nat) => Translation {
                outer_src: Some(c.vaddr),
                quoted_dst: Some((c.vaddr, c.vport)),
                ..Default::default()
            },
            (Dir::Out, Method::FullNat) => Translation {
                outer_src: Some(c.vaddr),
                outer_dst: Some(c.caddr),
                quoted_src: Some((c.caddr, c.cport)),
                quoted_dst: Some((c.vaddr, c.vport)),
            },
            // DR and TUN replies bypass the director: no connection is found this way.
            (Dir::Out, Method::Dr | Method::Tun) => return Ok(Verdict::PassToKernel),
        };
        icmp::translate(frame.bytes_mut(), &o, &q, &t);
        set_l2(frame.bytes_mut(), &hop);
        Ok(Verdict::Forward { port: hop.port })
    }

    #[inline]
    fn hop(&mut self, dst: Addr) -> Step<Hop> {
        let slot = hop_slot(dst);
        if let Some((a, h)) = self.hops[slot]
            && a == dst
        {
            return Ok(h);
        }
        let found = self.snap.hop(dst);
        if let Ok(h) = found {
            self.hops[slot] = Some((dst, h));
        }
        found.or_else(|r| {
            if r == DropReason::NoNeighbour {
                if self.unresolved.len() < MAX_PENDING_RESOLVE && !self.unresolved.contains(&dst) {
                    self.unresolved.push(dst);
                }
                if let Some(h) = self.sender_hop(dst) {
                    return Ok(h);
                }
            }
            Err(drop(r))
        })
    }

    /// Remembers where a new connection's client sent its first packet from (see
    /// [`Pipeline::sender_hop`]). Out of line: a new connection's path is long enough.
    #[inline(never)]
    fn remember_sender(&mut self, frame: &[u8], addr: Addr, port: u16) {
        let now_ns = self.clock.map_or(0, |(_, ns)| ns);
        self.senders[hop_slot(addr)] = Some(Sender {
            addr,
            port,
            mac: ethernet::Frame::new_unchecked(frame).src_addr(),
            until: now_ns + SENDER_FOR.as_nanos() as u64,
        });
    }

    /// A reply's next hop while the kernel resolves it: the client's own MAC, as its first packet
    /// brought it, when the client is on the network of the port that packet came in on (not
    /// behind a router) and it came lately. Not cached: the kernel's answer, once published, is
    /// used instead. A host on that network could claim another's address this way, as it could
    /// with ARP; the claim stands only until the kernel has resolved the address.
    #[cold]
    fn sender_hop(&self, dst: Addr) -> Option<Hop> {
        let s = self.senders[hop_slot(dst)].filter(|s| s.addr == dst)?;
        let now_ns = self.clock.map_or(0, |(_, ns)| ns);
        let (port, via) = self.snap.fib.route(dst)?;
        if via != dst || port != s.port || s.until <= now_ns {
            return None;
        }
        Some(Hop {
            port,
            src: self.snap.ports.get(usize::from(port))?.mac,
            dst: s.mac,
        })
    }
}

/// A client seen opening a connection: see [`Pipeline::sender_hop`].
#[derive(Clone, Copy)]
struct Sender {
    addr: Addr,
    port: u16,
    mac: Mac,
    /// On the connection table's clock.
    until: u64,
}

/// How long a client's MAC from its first packet may stand in for a neighbour entry.
const SENDER_FOR: Duration = Duration::from_secs(5);

/// Slots of the per-worker next-hop cache (direct mapped).
const HOP_CACHE: usize = 256;

/// The cache slot of an address: a multiplicative hash of its last 32 bits. An attacker who aims
/// many clients at one slot only costs the director a route lookup per packet, as without a cache.
#[inline]
fn hop_slot(a: Addr) -> usize {
    let low = u32::from_ne_bytes([a.0[12], a.0[13], a.0[14], a.0[15]]);
    (low.wrapping_mul(0x9e37_79b1) >> 24) as usize % HOP_CACHE
}

/// A parsed TCP or UDP packet's 5-tuple.
fn tuple(p: &Parsed, proto: Proto) -> Tuple {
    Tuple {
        proto,
        src: p.src,
        sport: p.sport,
        dst: p.dst,
        dport: p.dport,
    }
}

fn drop(r: DropReason) -> Verdict {
    Verdict::Drop(r)
}

/// A routed packet needs a TTL left after the decrement.
fn check_ttl(p: &Parsed) -> Step<()> {
    if p.ttl <= 1 {
        Err(drop(DropReason::TtlExceeded))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::Offline;
    use crate::service::DestIds;

    /// The golden tests' director: a NAT service on 198.18.0.10:80 among others.
    const GOLDEN: &str = include_str!("../tests/data/golden.toml");

    fn syn(sport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 1, 1])
            .ipv4([198, 18, 1, 2], [198, 18, 0, 10], 64)
            .tcp(sport, 80, 1, 64240)
            .syn()
            .write(&mut out, &[])
            .unwrap();
        out
    }

    fn run(p: &mut Pipeline, f: &[u8], now: Instant) -> Verdict {
        let mut buf = vec![0u8; HEADROOM + f.len()];
        buf[HEADROOM..].copy_from_slice(f);
        p.process(&mut Frame::new(&mut buf, HEADROOM, f.len()), 0, now)
    }

    /// A published snapshot is taken up between batches, not in the middle of one, and only once
    /// its generation is seen.
    #[test]
    fn a_new_snapshot_is_taken_up_between_batches() {
        let cfg = crate::config::parse(GOLDEN, "golden.toml").unwrap();
        let mut o = Offline::new(&cfg, &[]).unwrap();
        let now = Instant::now();
        assert!(matches!(
            run(&mut o.pipeline, &syn(1000), now),
            Verdict::Forward { port: 1 }
        ));

        // The services go: the next snapshot serves nothing.
        let bare = &GOLDEN[..GOLDEN.find("[[virtual_server]]").unwrap()];
        let bare = crate::config::parse(bare, "golden.toml").unwrap();
        let next = o.pipeline.snapshot().generation + 1;
        let snap = ServiceTable::build(&bare, o.ports.clone(), &[], &[], &mut DestIds::default(), next);
        o.published.store(snap);
        assert_eq!(o.published.generation(), next);
        assert!(
            matches!(run(&mut o.pipeline, &syn(1001), now), Verdict::Forward { .. }),
            "within the batch, the old snapshot still serves"
        );
        o.pipeline.between_batches(now);
        assert_eq!(o.pipeline.snapshot().generation, next);
        assert_eq!(run(&mut o.pipeline, &syn(1002), now), Verdict::PassToKernel);
    }
}
