//! Per-packet cost of the data plane, no NIC involved: `cargo bench --bench pipeline`.
//!
//! Cases (issue targets on the 2-core lab machine in brackets): established-flow NAT with a small
//! table [< 80 ns] and with 1M connections [< 250 ns], a new TCP connection [< 400 ns] (in a
//! table growing from empty, and in one at its working size where each replaces an expired one),
//! and established FULLNAT, DR and TUN. Frames go through in batches of 64 as a worker runs them
//! (each copied into its own buffer, since the rewrite is in place, then every frame looked at,
//! then each processed); the copy is included in the figure, which is per packet.
//!
//! The frames of the established cases lie side by side in one buffer in a scrambled flow order
//! and are read in buffer order, as a NIC's ring would hand them over: the frame itself is not a
//! cache miss, but the connection table is visited at random.
//!
//! `cargo bench --bench pipeline -- --ir CASE N` runs N packets of one case outside criterion, for
//! instruction counts that do not drift (CASE: nat, fullnat, dr, tun, new, nat1m; churn: new
//! connections in a table at its working size, each replacing an expired one; and idle: the data
//! plane's part of a worker loop that finds no frames):
//!
//!     valgrind --tool=callgrind --toggle-collect='pipeline::measure*' target/release/deps/pipeline-* --ir nat 100000

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use etherparse::PacketBuilder;
use xvs::config;
use xvs::pipeline::{Frame, HEADROOM, Verdict};
use xvs::replay::Offline;

const CLI: [u8; 6] = [2, 0, 0, 0, 1, 2];
const LB0: [u8; 6] = [2, 0, 0, 0, 1, 1];

fn config(max_conns: usize) -> config::Config {
    let text = format!(
        r#"
[conn]
max_conns = {max_conns}
[[interface]]
name = "lb0"
mac = "02:00:00:00:01:01"
address = ["198.18.1.1/24"]
[[interface]]
name = "lb1"
mac = "02:00:00:00:02:01"
address = ["198.18.2.1/24"]
[[route]]
prefix = "198.19.0.0/16"
via = "198.18.1.2"
interface = "lb0"
[[neighbour]]
address = "198.18.1.2"
mac = "02:00:00:00:01:02"
interface = "lb0"
{rs_neigh}
{services}
"#,
        rs_neigh = (11..=13)
            .map(|i| format!("[[neighbour]]\naddress = \"198.18.2.{i}\"\nmac = \"02:00:00:00:02:{i:02x}\"\ninterface = \"lb1\"\n"))
            .collect::<String>(),
        services = [("10", "NAT", ""), ("11", "FULLNAT", "laddr = [\"198.18.3.1\", \"198.18.3.2\", \"198.18.3.3\", \"198.18.3.4\"]"), ("12", "DR", ""), ("13", "TUN", "")]
            .iter()
            .map(|(v, kind, extra)| format!(
                "[[virtual_server]]\nvip = \"198.18.0.{v}\"\nport = 80\nprotocol = \"tcp\"\nlb_algo = \"wrr\"\nlb_kind = \"{kind}\"\n{extra}\nreal_server = [{{ address = \"198.18.2.11\", port = 80, weight = 3 }}, {{ address = \"198.18.2.12\", port = 80, weight = 2 }}, {{ address = \"198.18.2.13\", port = 80, weight = 1 }}]\n"
            ))
            .collect::<String>(),
    );
    config::parse(&text, "bench").unwrap_or_else(|e| panic!("{e}"))
}

/// A 64-byte TCP frame from generated client `i` (198.19.0.0/16, many ports) to VIP 198.18.0.`vip`.
fn tcp_frame(i: u32, vip: u8, syn: bool) -> Vec<u8> {
    let src = [198, 19, (i >> 8) as u8, i as u8];
    let sport = 1024 + (i >> 16) as u16;
    let b = PacketBuilder::ethernet2(CLI, LB0)
        .ipv4(src, [198, 18, 0, vip], 64)
        .tcp(sport, 80, 1, 64240);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut out = Vec::new();
    b.write(&mut out, &[0u8; 6]).unwrap();
    out
}

/// Frames per batch, as the workers' default `batch_size`; `XVS_BENCH_BATCH=1` runs one frame at
/// a time through one buffer (as this bench did before batches), for comparisons.
const BATCH_MAX: usize = 64;

fn batch() -> usize {
    std::env::var("XVS_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BATCH_MAX)
        .clamp(1, BATCH_MAX)
}

struct Bench {
    d: Offline,
    bufs: Vec<Vec<u8>>,
}

impl Bench {
    fn new(max_conns: usize) -> Bench {
        Bench {
            d: Offline::new(&config(max_conns), &[]).unwrap(),
            bufs: vec![vec![0u8; HEADROOM + 2048]; batch()],
        }
    }
    /// One frame on its own.
    fn run(&mut self, f: &[u8], now: Instant) -> Verdict {
        self.bufs[0][HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
        let mut fr = Frame::new(&mut self.bufs[0], HEADROOM, f.len());
        self.d.pipeline.process(&mut fr, 0, now)
    }
    /// One batch as a worker runs it: every frame into its buffer and looked at, then each
    /// processed. Returns how many were forwarded.
    #[inline]
    fn run_batch<'f>(&mut self, frames: impl Iterator<Item = &'f [u8]>, now: Instant) -> usize {
        let mut lens = [0usize; BATCH_MAX];
        let mut n = 0;
        for f in frames.take(self.bufs.len()) {
            let b = &mut self.bufs[n][HEADROOM..HEADROOM + f.len()];
            b.copy_from_slice(f);
            self.d.pipeline.look_ahead(b, now);
            lens[n] = f.len();
            n += 1;
        }
        let mut fwd = 0;
        for (buf, &len) in self.bufs.iter_mut().zip(&lens[..n]) {
            let mut fr = Frame::new(buf, HEADROOM, len);
            fwd += usize::from(matches!(
                self.d.pipeline.process(&mut fr, 0, now),
                Verdict::Forward { .. }
            ));
        }
        fwd
    }
    /// Opens `n` connections to `vip` and returns their established-flow frames.
    fn open(&mut self, n: u32, vip: u8, now: Instant) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let v = self.run(&tcp_frame(i, vip, true), now);
                assert!(matches!(v, Verdict::Forward { .. }), "open {i}: {v:?}");
                tcp_frame(i, vip, false)
            })
            .collect()
    }
}

/// `conns` open connections to `vip` and their established-flow frames, 64 bytes apart, in a
/// scrambled flow order.
fn established_setup(vip: u8, conns: u32) -> (Bench, Vec<u8>, usize, Instant) {
    let mut b = Bench::new((conns as usize * 2).max(1 << 16));
    let now = Instant::now();
    let flows = b.open(conns, vip, now);
    let len = flows[0].len();
    let n = flows.len();
    let mut store = vec![0u8; n * 64];
    // Position j holds flow (j * 7919) mod n: 7919 is prime and does not divide n, so every
    // flow appears once.
    for j in 0..n {
        let f = &flows[(j * 7919) % n];
        store[j * 64..j * 64 + len].copy_from_slice(f);
    }
    (b, store, len, now)
}

/// The batch of established-flow frames from position `k` of `store` on (wrapping).
fn store_batch(store: &[u8], len: usize, k: usize, batch: usize) -> impl Iterator<Item = &[u8]> {
    let n = store.len() / 64;
    (k..k + batch).map(move |j| {
        let j = j % n;
        &store[j * 64..j * 64 + len]
    })
}

/// Runs `count` established-flow packets from `store` (the instruction-count harness).
#[inline(never)]
fn measure(b: &mut Bench, store: &[u8], len: usize, count: usize, now: Instant) {
    let n = store.len() / 64;
    let mut k = 0;
    let mut fwd = 0;
    let batch = b.bufs.len();
    for _ in 0..count.div_ceil(batch) {
        fwd += b.run_batch(store_batch(store, len, k, batch), now);
        k = (k + batch) % n;
    }
    assert_eq!(fwd, count.div_ceil(batch) * batch, "every packet forwarded");
}

/// Runs one new connection per frame (the instruction-count harness).
#[inline(never)]
fn measure_new(b: &mut Bench, frames: &[Vec<u8>], now: Instant) {
    let mut fwd = 0;
    for batch in frames.chunks(b.bufs.len()) {
        fwd += b.run_batch(batch.iter().map(Vec::as_slice), now);
    }
    assert_eq!(fwd, frames.len(), "every connection opened");
}

/// New connections in a table at its working size, as a director's is once its table has grown:
/// each round first sweeps out the last round's connections (all expired by then) and then opens
/// as many new ones, so that slots and index buckets are reused, and the sweep that freed them is
/// counted with them.
struct Churn {
    b: Bench,
    /// Two sets of clients, used in turn.
    sets: [Vec<Vec<u8>>; 2],
    round: usize,
    open: usize,
    now: Instant,
}

impl Churn {
    /// A table filled with `n` connections (a round that is not measured).
    fn new(n: usize) -> Churn {
        let sets = [0, 1].map(|k| (0..n as u32).map(|i| tcp_frame(k * n as u32 + i, 10, true)).collect());
        let mut c = Churn {
            b: Bench::new(n.max(1 << 16) * 2),
            sets,
            round: 0,
            open: 0,
            now: Instant::now(),
        };
        c.round(n);
        c
    }

    /// Sweeps out the last round's connections and opens `n` new ones.
    fn round(&mut self, n: usize) {
        // Past every timeout of a connection that has seen only its SYN.
        self.now += Duration::from_secs(3600);
        let mut left = self.open;
        // The sweep as workers run it, 512 slots a step; bounded, should a connection stay.
        for _ in 0..(left + 1024) * 4 {
            if left == 0 {
                break;
            }
            left -= self.b.d.table.expire(self.now, 512);
        }
        assert_eq!(left, 0, "every connection of the last round swept out");
        let frames = &self.sets[self.round % 2][..n];
        self.round += 1;
        let mut fwd = 0;
        for batch in frames.chunks(self.b.bufs.len()) {
            fwd += self.b.run_batch(batch.iter().map(Vec::as_slice), self.now);
        }
        assert_eq!(fwd, n, "every connection opened");
        self.open = n;
    }
}

/// One round of [`Churn`] (the instruction-count harness).
#[inline(never)]
fn measure_churn(c: &mut Churn, n: usize) {
    c.round(n);
}

/// Runs `count` idle worker loops' data-plane part (the instruction-count harness); the clock
/// moves 100 ns a loop, so that the expiry sweep comes due as it would.
#[inline(never)]
fn measure_idle(b: &mut Bench, count: usize, start: Instant) {
    for i in 0..count {
        b.d.pipeline
            .between_batches(start + Duration::from_nanos(i as u64 * 100));
    }
}

fn established(c: &mut Criterion, name: &str, vip: u8, conns: u32) {
    let (mut b, store, len, now) = established_setup(vip, conns);
    let n = conns as usize;
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    let mut k = 0usize;
    // An iteration is one packet; they run in batches.
    g.bench_function(name, |bn| {
        bn.iter_custom(|iters| {
            let t = Instant::now();
            let batch = b.bufs.len();
            for _ in 0..iters.div_ceil(batch as u64) {
                black_box(b.run_batch(store_batch(&store, len, k, batch), now));
                k = (k + batch) % n;
            }
            t.elapsed()
        })
    });
    g.finish();
}

fn new_connections(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    let frames: Vec<Vec<u8>> = (0..200_000u32).map(|i| tcp_frame(i, 10, true)).collect();
    g.bench_function("nat_new_tcp_connection", |bn| {
        bn.iter_custom(|iters| {
            // A fresh director per round of 200k connections keeps the table from filling up.
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(frames.len() as u64) as usize;
                let mut b = Bench::new(1 << 20);
                let now = Instant::now();
                let t = Instant::now();
                for batch in frames[..n].chunks(b.bufs.len()) {
                    black_box(b.run_batch(batch.iter().map(Vec::as_slice), now));
                }
                total += t.elapsed();
                left -= n as u64;
            }
            total
        })
    });
    let rounds = 200_000;
    let mut churn = Churn::new(rounds);
    g.bench_function("nat_new_tcp_connection_steady", |bn| {
        bn.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(rounds as u64) as usize;
                let t = Instant::now();
                churn.round(n);
                total += t.elapsed();
                left -= n as u64;
            }
            total
        })
    });
    g.finish();
}

/// `--ir CASE N`: N packets of one case, no criterion; prints the wall time per packet too.
fn instruction_run(case: &str, count: usize) {
    let t = Instant::now();
    if case == "new" {
        let frames: Vec<Vec<u8>> = (0..count as u32).map(|i| tcp_frame(i, 10, true)).collect();
        let mut b = Bench::new(count.max(1 << 16) * 2);
        let t = Instant::now();
        measure_new(&mut b, &frames, Instant::now());
        println!(
            "new: {count} packets, {:.1} ns each",
            t.elapsed().as_nanos() as f64 / count as f64
        );
        return;
    }
    if case == "churn" {
        let mut c = Churn::new(count);
        let t = Instant::now();
        measure_churn(&mut c, count);
        println!(
            "churn: {count} packets, {:.1} ns each",
            t.elapsed().as_nanos() as f64 / count as f64
        );
        return;
    }
    if case == "idle" {
        // What the data plane costs a worker loop that finds no frames: its look for a new
        // snapshot and for expiry work, as `between_batches` runs every loop.
        let mut b = Bench::new(1 << 16);
        let start = Instant::now();
        let t = Instant::now();
        measure_idle(&mut b, count, start);
        println!(
            "idle: {count} loops, {:.1} ns each",
            t.elapsed().as_nanos() as f64 / count as f64
        );
        return;
    }
    let (vip, conns) = match case {
        "nat" => (10, 1000),
        "fullnat" => (11, 1000),
        "dr" => (12, 1000),
        "tun" => (13, 1000),
        "nat1m" => (10, 1_000_000),
        other => panic!("unknown case {other}: nat, fullnat, dr, tun, new, churn, nat1m, idle"),
    };
    let (mut b, store, len, now) = established_setup(vip, conns);
    let setup = t.elapsed();
    let t = Instant::now();
    measure(&mut b, &store, len, count, now);
    println!(
        "{case}: {count} packets, {:.1} ns each (setup {setup:?})",
        t.elapsed().as_nanos() as f64 / count as f64
    );
}

fn benches(c: &mut Criterion) {
    established(c, "nat_established_1k_conns", 10, 1000);
    established(c, "fullnat_established_1k_conns", 11, 1000);
    established(c, "dr_established_1k_conns", 12, 1000);
    established(c, "tun_established_1k_conns", 13, 1000);
    new_connections(c);
    established(c, "nat_established_1m_conns", 10, 1_000_000);
}

criterion_group! {
    name = pipeline;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--ir") {
        let case = args.get(at + 1).map_or("nat", String::as_str);
        let count = args.get(at + 2).and_then(|n| n.parse().ok()).unwrap_or(100_000);
        instruction_run(case, count);
        return;
    }
    pipeline();
    Criterion::default().configure_from_args().final_summary();
}
