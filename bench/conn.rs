//! The connection table alone: `cargo bench --bench conn`.
//!
//! Prints the memory per connection at 1M and 10M entries (the table's own accounting and the
//! process's resident-set growth, which also counts allocator overhead), then measures a lookup
//! of a random existing connection at 1k, 1M and 10M entries, and insert+remove churn.
//! Target: at most 160 bytes per connection; lookups at 1M within the pipeline's 250 ns budget.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xvs::conn::{ConnTable, Dir, NewConn, TableConfig, Tuple};
use xvs::types::{Addr, DestCounters, Method, Proto, Timeouts};

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(0)
        * 4096
}

/// Client `i`: addresses in 198.19.0.0/16, then more ports.
fn client(i: u32) -> (Addr, u16) {
    (
        Addr::from_v4([198, 19, (i >> 8) as u8, i as u8]),
        1024 + (i >> 16) as u16,
    )
}

fn new_conn(i: u32) -> NewConn {
    let (caddr, cport) = client(i);
    NewConn {
        proto: Proto::Udp,
        method: Method::Nat,
        caddr,
        cport,
        vaddr: Addr::from_v4([198, 18, 0, 10]),
        vport: 53,
        daddr: Addr::from_v4([198, 18, 2, 11 + (i % 3) as u8]),
        dport: 53,
        dest_id: i % 3,
        persist_prefix: None,
    }
}

fn tuple(i: u32) -> Tuple {
    let n = new_conn(i);
    Tuple {
        proto: n.proto,
        src: n.caddr,
        sport: n.cport,
        dst: n.vaddr,
        dport: n.vport,
    }
}

fn filled(n: u32) -> (ConnTable, Instant) {
    // 64 shards as a director with several workers would have; small tables get fewer, as the
    // configuration's default gives them, so that no shard is full before the table is.
    let shards = if n >= 100_000 { 64 } else { 4 };
    let cfg = TableConfig {
        max_conns: n as usize + (n as usize / 4) + 4096,
        shards,
        timeouts: Timeouts::default(),
    };
    let t = ConnTable::new(cfg, Arc::new(DestCounters::default()));
    let now = Instant::now();
    for i in 0..n {
        t.insert(&new_conn(i), &[], 0, now).expect("room for every connection");
    }
    (t, now)
}

fn memory() {
    for n in [1_000_000u32, 10_000_000] {
        let before = rss_bytes();
        let t0 = Instant::now();
        let (t, _) = filled(n);
        let took = t0.elapsed();
        let after = rss_bytes();
        println!(
            "conn table: {n:>9} connections: {:.1} bytes/conn (table accounting), {:.1} bytes/conn (RSS growth), filled in {:.2} s ({:.0} ns/insert)",
            t.memory_bytes() as f64 / f64::from(n),
            after.saturating_sub(before) as f64 / f64::from(n),
            took.as_secs_f64(),
            took.as_nanos() as f64 / f64::from(n),
        );
        drop(t);
    }
}

fn lookups(c: &mut Criterion) {
    // `cargo test --all-targets` runs this without `--bench`, only to see that it works: filling
    // 10M entries there would cost the suite two minutes.
    let full = std::env::args().any(|a| a == "--bench");
    if full {
        memory();
    }
    let sizes: &[u32] = if full {
        &[1_000, 1_000_000, 10_000_000]
    } else {
        &[1_000, 10_000]
    };
    let mut g = c.benchmark_group("conn");
    g.throughput(Throughput::Elements(1));
    for &n in sizes {
        let (t, now) = filled(n);
        let mut i = 0u32;
        g.bench_function(format!("lookup_{n}"), |b| {
            b.iter(|| {
                // A scrambled walk over all entries: no two consecutive lookups are neighbours.
                i = (i.wrapping_mul(1_664_525).wrapping_add(1_013_904_223)) % n;
                black_box(t.lookup(Dir::In, &tuple(i), 0, now))
            })
        });
    }
    let (t, now) = filled(100_000);
    let mut i = 100_000u32;
    g.bench_function("insert_remove_churn_100k", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let _ = black_box(t.insert(&new_conn(i), &[], 0, now));
            black_box(t.remove(Dir::In, &tuple(i)))
        })
    });
    g.finish();
}

criterion_group! {
    name = conn;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = lookups
}
criterion_main!(conn);
