use super::*;
use std::net::IpAddr;

fn a(s: &str) -> Addr {
    Addr::from(s.parse::<IpAddr>().unwrap())
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

fn table(max: usize, shards: usize) -> (ConnTable, Arc<DestCounters>) {
    let counters = Arc::new(DestCounters::new(16));
    (
        ConnTable::new(
            TableConfig {
                max_conns: max,
                shards,
                timeouts: Timeouts::default(),
            },
            counters.clone(),
        ),
        counters,
    )
}

fn new(method: Method, proto: Proto, client: u16) -> NewConn {
    NewConn {
        proto,
        method,
        caddr: a("198.19.0.1"),
        cport: client,
        vaddr: a("198.18.0.10"),
        vport: 80,
        daddr: a("198.18.2.11"),
        dport: 8080,
        dest_id: 1,
        persist_prefix: None,
    }
}

fn tin(n: &NewConn) -> Tuple {
    Tuple {
        proto: n.proto,
        src: n.caddr,
        sport: n.cport,
        dst: n.vaddr,
        dport: n.vport,
    }
}

fn tout(c: &Conn) -> Tuple {
    c.out_tuple()
}

#[test]
fn nat_both_directions_find_one_entry() {
    let (t, _) = table(1000, 8);
    let now = Instant::now();
    let n = new(Method::Nat, Proto::Tcp, 40000);
    let c = t.insert(&n, &[], SYN, now).unwrap();
    assert_eq!(c.state, TcpState::SynRecv);
    let back = Tuple {
        proto: Proto::Tcp,
        src: n.daddr,
        sport: 8080,
        dst: n.caddr,
        dport: 40000,
    };
    assert_eq!(t.lookup(Dir::Out, &back, SYN | ACK, now).unwrap().cport, 40000);
    assert_eq!(
        t.lookup(Dir::In, &tin(&n), ACK, now).unwrap().state,
        TcpState::Established
    );
    assert_eq!(t.len(), 1);
    // Another client port is another connection.
    assert!(
        t.lookup(Dir::In, &tin(&new(Method::Nat, Proto::Tcp, 40001)), ACK, now)
            .is_none()
    );
}

#[test]
fn fullnat_reply_lands_in_the_clients_shard() {
    let (t, _) = table(1 << 16, 64);
    let now = Instant::now();
    let laddrs = [a("198.18.3.1"), a("198.18.3.2")];
    for port in 1000..4000u16 {
        let n = new(Method::FullNat, Proto::Udp, port);
        let c = t.insert(&n, &laddrs, 0, now).unwrap();
        assert!(laddrs.contains(&c.laddr) && c.lport >= LPORT_MIN);
        assert_eq!(t.shard_for(Dir::Out, &tout(&c)), t.shard_for(Dir::In, &tin(&n)));
        assert_eq!(
            t.lookup(Dir::Out, &tout(&c), 0, now).unwrap(),
            t.peek(Dir::In, &tin(&n), now).unwrap()
        );
    }
    // Every (laddr, lport) is handed out once.
    let mut seen = std::collections::HashSet::new();
    t.for_each(now, |c, _| assert!(seen.insert((c.laddr, c.lport))));
    assert_eq!(seen.len(), 3000);
}

#[test]
fn laddr_exhaustion_and_reuse_after_expiry() {
    // One shard, so the pool holds every port of one address: 64512 of them.
    let (t, _) = table(1 << 20, 1);
    let now = Instant::now();
    let la = [a("198.18.3.1")];
    let mut last = None;
    for i in 0..=(u16::MAX - LPORT_MIN) as u32 {
        let mut n = new(Method::FullNat, Proto::Udp, (i % 60000) as u16 + 1);
        n.caddr = Addr::from_v4([198, 19, (i >> 16) as u8, (i >> 8) as u8]);
        last = Some(t.insert(&n, &la, 0, now).unwrap());
    }
    let extra = NewConn {
        caddr: a("198.19.255.255"),
        ..new(Method::FullNat, Proto::Udp, 1)
    };
    assert_eq!(t.insert(&extra, &la, 0, now), Err(InsertError::LaddrExhausted));
    let _ = last;
    // After the UDP timeout everything expires and the ports come back.
    let later = now + Duration::from_secs(301);
    while t.expire(later, 1 << 16) > 0 {}
    while t.expire(later, 1 << 16) > 0 {}
    assert_eq!(t.len(), 0);
    assert!(t.insert(&extra, &la, 0, later).is_ok());
}

#[test]
fn handshake_close_and_counters() {
    let (t, ctr) = table(1000, 4);
    let now = Instant::now();
    let n = new(Method::Nat, Proto::Tcp, 40000);
    t.insert(&n, &[], SYN, now).unwrap();
    assert_eq!((ctr.get(1).active(), ctr.get(1).inactive()), (0, 1));
    t.lookup(Dir::In, &tin(&n), ACK, now).unwrap();
    assert_eq!((ctr.get(1).active(), ctr.get(1).inactive()), (1, 0));
    let c = t.lookup(Dir::In, &tin(&n), FIN | ACK, now).unwrap();
    assert_eq!(c.state, TcpState::CloseWait);
    assert_eq!((ctr.get(1).active(), ctr.get(1).inactive()), (0, 1));
    let c = t.lookup(Dir::Out, &tout(&c), FIN | ACK, now).unwrap();
    assert_eq!(c.state, TcpState::TimeWait);
    // TIME_WAIT lasts 120 s: alive just before, gone just after.
    assert!(t.peek(Dir::In, &tin(&n), now + Duration::from_secs(119)).is_some());
    assert!(
        t.lookup(Dir::In, &tin(&n), ACK, now + Duration::from_secs(121))
            .is_none()
    );
    assert_eq!(t.len(), 0);
    assert_eq!((ctr.get(1).active(), ctr.get(1).inactive()), (0, 0));
}

#[test]
fn dr_uses_input_only_and_rst_closes() {
    let (t, _) = table(1000, 4);
    let now = Instant::now();
    let n = new(Method::Dr, Proto::Tcp, 40000);
    t.insert(&n, &[], SYN, now).unwrap();
    assert_eq!(
        t.lookup(Dir::In, &tin(&n), ACK, now).unwrap().state,
        TcpState::Established
    );
    assert_eq!(
        t.lookup(Dir::In, &tin(&n), FIN | ACK, now).unwrap().state,
        TcpState::FinWait
    );
    let c = t.lookup(Dir::In, &tin(&n), RST, now).unwrap();
    assert_eq!(c.state, TcpState::Close);
    assert!(t.peek(Dir::In, &tin(&n), now + Duration::from_secs(9)).is_some());
    assert!(t.peek(Dir::In, &tin(&n), now + Duration::from_secs(11)).is_none());
}

#[test]
fn expiry_sweep_with_budget() {
    let (t, ctr) = table(10_000, 4);
    let now = Instant::now();
    for p in 0..1000 {
        t.insert(&new(Method::Nat, Proto::Udp, p), &[], 0, now).unwrap();
    }
    assert_eq!(ctr.get(1).inactive(), 1000);
    // Nothing is due yet.
    for _ in 0..100 {
        assert_eq!(t.expire(now + Duration::from_secs(299), 64), 0);
    }
    let later = now + Duration::from_secs(301);
    let mut total = 0;
    for _ in 0..200 {
        let n = t.expire(later, 64);
        assert!(n <= 64);
        total += n;
    }
    assert_eq!(total, 1000);
    assert_eq!(t.len(), 0);
    assert_eq!(ctr.get(1).inactive(), 0);
}

#[test]
fn table_full_then_room_after_expiry() {
    let (t, _) = table(64, 1);
    let now = Instant::now();
    for p in 0..64 {
        t.insert(&new(Method::Nat, Proto::Udp, p), &[], 0, now).unwrap();
    }
    assert_eq!(
        t.insert(&new(Method::Nat, Proto::Udp, 999), &[], 0, now),
        Err(InsertError::Full)
    );
    assert_eq!(t.len(), 64);
    let later = now + Duration::from_secs(301);
    t.expire(later, 1000);
    assert!(t.insert(&new(Method::Nat, Proto::Udp, 999), &[], 0, later).is_ok());
}

#[test]
fn insert_race_returns_the_existing_connection() {
    let (t, _) = table(100, 4);
    let now = Instant::now();
    let n = new(Method::Nat, Proto::Tcp, 40000);
    let first = t.insert(&n, &[], SYN, now).unwrap();
    let mut other = n;
    other.daddr = a("198.18.2.12");
    assert_eq!(t.insert(&other, &[], SYN, now).unwrap(), first);
    assert_eq!(t.len(), 1);
}

#[test]
fn templates_live_while_they_control_connections() {
    let (t, _) = table(100, 4);
    let now = Instant::now();
    let masked = a("198.19.0.0");
    let (vip, rs) = (a("198.18.0.10"), a("198.18.2.12"));
    t.template_insert(Proto::Tcp, masked, vip, 80, 2, rs, 80, Duration::from_secs(30), now);
    assert_eq!(t.template_lookup(Proto::Tcp, masked, vip, 80, now), Some((2, rs, 80)));
    let mut n = new(Method::Nat, Proto::Tcp, 40000);
    n.persist_prefix = Some(16);
    n.daddr = rs;
    t.insert(&n, &[], SYN, now).unwrap();
    t.lookup(Dir::In, &tin(&n), ACK, now).unwrap();
    // Past the template's 30 s, but its established connection keeps it.
    let t60 = now + Duration::from_secs(60);
    assert!(t.template_lookup(Proto::Tcp, masked, vip, 80, t60).is_some());
    // Once the connection is gone, the template goes at its next check.
    t.remove(Dir::In, &tin(&n)).unwrap();
    assert!(t.template_lookup(Proto::Tcp, masked, vip, 80, t60).is_none());
}

#[test]
fn two_threads_share_the_table() {
    let (t, _) = table(100_000, 16);
    let t = Arc::new(t);
    let now = Instant::now();
    let hs: Vec<_> = (0..2u16)
        .map(|w| {
            let t = t.clone();
            std::thread::spawn(move || {
                for p in 0..5000u16 {
                    // Half the ports overlap between the threads: same tuple, one entry.
                    let port = if p % 2 == 0 { p } else { 10_000 + w * 10_000 + p };
                    let n = new(Method::FullNat, Proto::Tcp, port);
                    let c = t.insert(&n, &[a("198.18.3.1")], SYN, now).unwrap();
                    assert_eq!(t.lookup(Dir::Out, &c.out_tuple(), SYN | ACK, now).unwrap().cport, port);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(t.len(), 2500 + 2 * 2500);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, bool),
        Lookup(u16, u8),
        Remove(u16),
        Advance(u16),
        Expire(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..40, any::<bool>()).prop_map(|(p, f)| Op::Insert(p, f)),
            (0u16..40, any::<u8>()).prop_map(|(p, f)| Op::Lookup(p, f)),
            (0u16..40).prop_map(Op::Remove),
            (0u16..400).prop_map(Op::Advance),
            any::<u8>().prop_map(Op::Expire),
        ]
    }

    proptest! {
        /// Whatever happens, the index holds exactly one key per live connection (two for
        /// FULLNAT), each pointing at a slot whose key matches, and the counters equal a recount.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 1..200)) {
            let (t, ctr) = table(30, 2);
            let start = Instant::now();
            let mut now = start;
            for o in ops {
                match o {
                    Op::Insert(p, fnat) => {
                        let n = new(if fnat { Method::FullNat } else { Method::Nat }, Proto::Tcp, p);
                        let _ = t.insert(&n, &[a("198.18.3.1")], SYN, now);
                    }
                    Op::Lookup(p, f) => { let _ = t.lookup(Dir::In, &tin(&new(Method::Nat, Proto::Tcp, p)), f, now); }
                    Op::Remove(p) => { let _ = t.remove(Dir::In, &tin(&new(Method::Nat, Proto::Tcp, p))); }
                    Op::Advance(s) => now += Duration::from_secs(u64::from(s)),
                    Op::Expire(b) => { t.expire(now, usize::from(b)); }
                }
                let (mut active, mut inactive, mut live) = (0, 0, 0);
                for i in 0..t.shards.len() {
                    let s = t.lock(i);
                    let n = s.slab.iter().filter(|e| e.0.is_some()).count();
                    prop_assert_eq!(n, s.len);
                    // One key per connection, two for FULLNAT's.
                    let keys: usize = s.slab.iter().filter_map(|e| e.0).map(|h| if h.method == Method::FullNat { 2 } else { 1 }).sum();
                    prop_assert_eq!(s.index.len(), keys);
                    // Both directions of every live connection find its slot.
                    for (slot, c) in (0..s.slab.len()).filter_map(|i| Some((i as u32, s.slab.conn(i)?))) {
                        let (ti, to) = (c.in_tuple(), c.out_tuple());
                        prop_assert_eq!(t.find(&s, Dir::In, &ti, t.hash(Dir::In, &ti)), Some(slot));
                        prop_assert_eq!(t.find(&s, Dir::Out, &to, t.hash(Dir::Out, &to)), Some(slot));
                    }
                    for c in s.slab.iter().filter_map(|e| e.0) {
                        live += 1;
                        if c.active() { active += 1 } else { inactive += 1 }
                    }
                }
                prop_assert!(live <= 30);
                prop_assert_eq!((ctr.get(1).active(), ctr.get(1).inactive()), (active, inactive));
            }
        }
    }
}

/// Two threads sweeping at once still reach every shard (the cursor moves on exactly once).
#[test]
fn concurrent_sweeps_reach_every_shard() {
    let (t, _) = table(100_000, 8);
    let t = Arc::new(t);
    let now = Instant::now();
    for p in 0..4000 {
        t.insert(&new(Method::Nat, Proto::Udp, p), &[], 0, now).unwrap();
    }
    let later = now + Duration::from_secs(301);
    let hs: Vec<_> = (0..2)
        .map(|_| {
            let t = t.clone();
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    t.expire(later, 64);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(t.len(), 0);
}

#[test]
fn same_server_tuple_through_two_services_replaces_a_closing_connection_and_refuses_a_live_one() {
    let (t, counters) = table(1000, 8);
    let now = Instant::now();
    let first = new(Method::Nat, Proto::Tcp, 40000);
    let mut second = first;
    second.vport = 81;
    second.dest_id = 2;
    // The first is half open: the second (same client port, same server port) takes its place.
    let c1 = t.insert(&first, &[], SYN, now).unwrap();
    let c2 = t.insert(&second, &[], SYN, now).unwrap();
    assert_eq!(tout(&c1), tout(&c2));
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup(Dir::Out, &tout(&c2), SYN | ACK, now).unwrap().vport, 81);
    assert!(t.peek(Dir::In, &tin(&first), now).is_none());
    assert_eq!(counters.get(1).inactive.load(Ordering::Relaxed), 0);
    // Established: a third through the first service is refused while it lives.
    t.lookup(Dir::In, &tin(&second), ACK, now).unwrap();
    assert_eq!(t.insert(&first, &[], SYN, now), Err(InsertError::Conflict));
    // Once it closes, the port can be reused.
    t.lookup(Dir::In, &tin(&second), FIN | ACK, now).unwrap();
    t.lookup(Dir::Out, &tout(&c2), FIN | ACK, now).unwrap();
    assert!(t.insert(&first, &[], SYN, now).is_ok());
    assert_eq!(t.lookup(Dir::Out, &tout(&c1), SYN | ACK, now).unwrap().vport, 80);
}

#[test]
fn a_reused_tuple_replaces_its_expired_entry_before_any_sweep() {
    let (t, ctr) = table(1 << 10, 4);
    let now = Instant::now();
    let n = new(Method::Nat, Proto::Tcp, 4000);
    t.insert(&n, &[], SYN, now).unwrap();
    // SYN_RECV times out after 60 s; no sweep runs, and the client opens the tuple again.
    let later = now + Duration::from_secs(61);
    let c = t.insert(&n, &[], SYN, later).unwrap();
    assert_eq!(t.len(), 1);
    // The new connection's packets find it, both ways, and are not taken for the expired one.
    let got = t.lookup(Dir::In, &tin(&n), ACK, later).expect("the new connection");
    assert_eq!(
        (got.state, got.daddr, got.dport),
        (TcpState::Established, c.daddr, c.dport)
    );
    assert!(t.lookup(Dir::Out, &tout(&c), ACK, later).is_some());
    assert_eq!((ctr.get(1).active(), ctr.get(1).inactive()), (1, 0));
}

#[test]
fn batch_prefetch_hints_are_harmless_for_any_hash() {
    let (t, _) = table(1 << 10, 4);
    let now = Instant::now();
    let n = new(Method::Nat, Proto::Tcp, 4000);
    t.insert(&n, &[], SYN, now).unwrap();
    for h in [0, 1, u64::MAX, t.hash(Dir::In, &tin(&n)), 0xdead_beef_dead_beef] {
        t.prefetch(h);
        t.prefetch_entry(Dir::In, h);
        t.prefetch_entry(Dir::Out, h);
    }
    assert!(t.lookup(Dir::In, &tin(&n), ACK, now).is_some());
}

#[test]
fn a_large_table_is_prefetched_for_and_still_finds_every_connection() {
    let (t, _) = table(1 << 16, 1);
    let now = Instant::now();
    let conns: Vec<NewConn> = (0..8000u16)
        .map(|i| NewConn {
            caddr: a(&format!("198.19.{}.{}", i >> 8, i & 0xff)),
            ..new(Method::Nat, Proto::Tcp, 1024 + i)
        })
        .collect();
    assert!(!t.is_large(), "a new table is small");
    for n in &conns {
        t.insert(n, &[], SYN, now).unwrap();
    }
    assert!(t.is_large(), "8000 connections in one shard make a large table");
    for n in &conns {
        let h = t.hash(Dir::In, &tin(n));
        t.prefetch(h);
        t.prefetch_entry(Dir::In, h);
        let c = t.lookup_hashed(Dir::In, &tin(n), h, ACK, t.clock(now)).expect("found");
        assert_eq!((c.caddr, c.cport), (n.caddr, n.cport));
        assert!(t.lookup(Dir::Out, &tout(&c), ACK, now).is_some());
    }
}

/// Connection timers are 32-bit ticks compared with wrapping arithmetic: a timer set across the
/// wrap of the counter runs out when it should.
#[test]
fn timers_compare_across_the_wrap_of_the_tick_counter() {
    assert!(!expired(5, u32::MAX - 3), "set nine ticks ahead, across the wrap");
    assert!(expired(u32::MAX - 3, 5), "ran out nine ticks ago, across the wrap");
    assert!(expired(7, 7));
    assert!(!expired(8, 7));
    let ttl = 1000u32;
    let set = u32::MAX - 10;
    assert!(!expired(set.wrapping_add(ttl), set.wrapping_add(ttl - 1)));
    assert!(expired(set.wrapping_add(ttl), set.wrapping_add(ttl)));
}

/// A NAT TCP connection, established, and a flow cache that holds a copy of it.
fn cached(t: &ConnTable, now: Instant) -> (NewConn, FlowCache) {
    let n = new(Method::Nat, Proto::Tcp, 40000);
    t.insert(&n, &[], SYN, now).unwrap();
    let mut f = FlowCache::default();
    let c = f.lookup(t, Dir::In, &tin(&n), t.hash(Dir::In, &tin(&n)), ACK, t.clock(now));
    assert_eq!(c.unwrap().state, TcpState::Established);
    (n, f)
}

fn via(f: &mut FlowCache, t: &ConnTable, dir: Dir, tuple: &Tuple, flags: u8, now: Instant) -> Option<Conn> {
    f.lookup(t, dir, tuple, t.hash(dir, tuple), flags, t.clock(now))
}

#[test]
fn flow_cache_serves_both_directions_until_the_connection_goes() {
    let (t, _) = table(1000, 8);
    let now = Instant::now();
    let (n, mut f) = cached(&t, now);
    let c = via(&mut f, &t, Dir::In, &tin(&n), ACK, now).unwrap();
    assert_eq!(f.hits(), 1);
    assert_eq!((c.daddr, c.dport), (n.daddr, n.dport));
    // The reply is another key: the first one goes to the table, the next is a hit.
    for _ in 0..2 {
        assert_eq!(via(&mut f, &t, Dir::Out, &tout(&c), ACK, now).unwrap().cport, 40000);
    }
    assert_eq!(f.hits(), 2);
    // Another client port is not served by this copy.
    let other = tin(&new(Method::Nat, Proto::Tcp, 40001));
    assert!(via(&mut f, &t, Dir::In, &other, ACK, now).is_none());
    t.remove(Dir::In, &tin(&n)).unwrap();
    assert!(via(&mut f, &t, Dir::In, &tin(&n), ACK, now).is_none());
    assert!(via(&mut f, &t, Dir::Out, &tout(&c), ACK, now).is_none());
    assert_eq!(f.hits(), 2);
    assert_eq!(f.served(), 2);
}

#[test]
fn flow_cache_drops_a_copy_once_another_worker_changed_the_state() {
    let (t, _) = table(1000, 8);
    let now = Instant::now();
    let (n, mut a) = cached(&t, now);
    let mut b = FlowCache::default();
    assert_eq!(
        via(&mut b, &t, Dir::In, &tin(&n), ACK, now).unwrap().state,
        TcpState::Established
    );
    // A FIN never comes from a copy: it goes to the table, and the state changes there.
    assert_eq!(
        via(&mut b, &t, Dir::In, &tin(&n), FIN | ACK, now).unwrap().state,
        TcpState::CloseWait
    );
    let hits = a.hits();
    assert_eq!(
        via(&mut a, &t, Dir::In, &tin(&n), ACK, now).unwrap().state,
        TcpState::CloseWait
    );
    assert_eq!(a.hits(), hits, "the stale copy was not used");
}

#[test]
fn flow_cache_hits_never_let_a_connection_expire_early() {
    let (t, _) = table(1000, 8);
    let t0 = Instant::now();
    let (n, mut f) = cached(&t, t0);
    let ttl = Timeouts::default().tcp_established;
    let grace = Duration::from_nanos(u64::from(cache::GRACE) << TICK_SHIFT);
    let tick = Duration::from_nanos(1 << TICK_SHIFT);
    // Within the grace the packets are hits, and the table is not touched.
    let last = t0 + grace - tick * 2;
    assert!(via(&mut f, &t, Dir::In, &tin(&n), ACK, last).is_some());
    assert_eq!(f.hits(), 1);
    assert!(t.peek(Dir::In, &tin(&n), last + ttl - tick).is_some(), "expired early");
    assert!(
        t.peek(Dir::In, &tin(&n), t0 + ttl + grace + tick * 2).is_none(),
        "expired late"
    );
    // After it, the table is asked again, which moves the timer on.
    let later = t0 + grace * 2;
    assert!(via(&mut f, &t, Dir::In, &tin(&n), ACK, later).is_some());
    assert_eq!(f.hits(), 1);
    assert!(t.peek(Dir::In, &tin(&n), later + ttl - tick).is_some());
    // A plain lookup after a cached one does not move the timer back.
    let left = |at| t.entries(1, at)[0].1;
    let before = left(later);
    t.lookup(Dir::In, &tin(&n), ACK, later);
    assert_eq!(left(later), before);
}

#[test]
fn flow_cache_stands_aside_while_it_misses() {
    let (t, _) = table(1 << 20, 8);
    let now = Instant::now();
    let (n, mut f) = cached(&t, now);
    for i in 0..(1u32 << 16) {
        let stranger = Tuple {
            src: Addr::from(IpAddr::from([198, 19, (i >> 8) as u8, i as u8])),
            sport: 50000,
            ..tin(&n)
        };
        assert!(via(&mut f, &t, Dir::In, &stranger, ACK, now).is_none());
    }
    assert!(f.resting());
    let hits = f.hits();
    // Resting, it still finds connections, from the table.
    assert!(via(&mut f, &t, Dir::In, &tin(&n), ACK, now).is_some());
    assert_eq!(f.hits(), hits);
}
