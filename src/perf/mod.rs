//! The performance lab's traffic tools: `xvs gen`, an in-kernel generator, and `xvs sink`, a
//! counting sink with latency figures. `bench/perf.rs` drives both against every contender.
//!
//! The generator runs `bpf/gen.c` with `BPF_PROG_TEST_RUN` and `BPF_F_TEST_XDP_LIVE_FRAMES`: the
//! kernel builds frames from a template page, runs the program on each (it rewrites the headers,
//! varies the flow and stamps the time) and transmits them with XDP_TX out of the chosen
//! interface, in batches of 64, without a socket or a copy through user space. On this project's
//! 2-core machine that sends several Mpps per core, more than any forwarder under test; AF_XDP
//! copy mode on veth (about 1 Mpps per core) would not saturate a director. A frame sent by XDP
//! into a veth is dropped unless the peer runs NAPI (GRO on, or an XDP program there).

pub mod hist;
pub mod obj;
pub mod packet;
pub mod sink;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use libbpf_sys as bpf;

use obj::{BpfObject, ifindex, update};
use packet::{GenCfg, GenProto, Template};

/// Why the generator or the sink could not run.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// A system call or libbpf call failed.
    #[error("{what}: {err}")]
    Sys {
        /// What was being done.
        what: String,
        /// The OS error.
        err: std::io::Error,
    },
    /// The BPF object is not built into this binary.
    #[error("BPF object {0} is not built in (clang missing when xvs was built?)")]
    NoObject(&'static str),
    /// A bad option.
    #[error("{0}")]
    Bad(String),
}

/// Parses `02:00:00:00:01:01`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address (six hex bytes with colons)"));
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(format!("{s:?} is not a MAC address"));
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
    }
    Ok(m)
}

/// `xvs gen` options.
#[derive(Clone, Debug, clap::Args)]
pub struct GenArgs {
    /// Interface to send out of (in the current namespace); its peer must run NAPI (GRO or XDP).
    #[arg(long)]
    pub dev: String,
    /// Destination MAC (the next hop: the director's client-side interface).
    #[arg(long, value_parser = parse_mac)]
    pub dst_mac: [u8; 6],
    /// Source MAC; the interface's own when absent.
    #[arg(long, value_parser = parse_mac)]
    pub src_mac: Option<[u8; 6]>,
    /// Base source address; its last 16 bits and the source port vary per flow
    /// (default 198.19.0.0, or 2001:2:0:ff:: when --dst is IPv6).
    #[arg(long)]
    pub src: Option<IpAddr>,
    /// Destination address (a VIP, or a real server for plain routing).
    #[arg(long)]
    pub dst: IpAddr,
    /// Destination port.
    #[arg(long, default_value_t = 7)]
    pub dport: u16,
    /// Frame kind.
    #[arg(long, value_enum, default_value_t = GenProto::Udp)]
    pub proto: GenProto,
    /// Distinct flows (source address and port pairs), picked at random per frame.
    #[arg(long, default_value_t = 1000)]
    pub flows: u32,
    /// A new random flow every frame (about 2^32 of them): new connections.
    #[arg(long)]
    pub new_flows: bool,
    /// Cycle through the --flows in order (each flow once per round: fills a table).
    #[arg(long)]
    pub sequential: bool,
    /// Frame size in bytes, without FCS (60..=1514); the payload starts with a timestamp when
    /// there is room for one.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Frames per second over all threads; 0: as fast as possible. Paced frame by frame in the
    /// kernel, evenly spaced; when a CPU was busy elsewhere for more than 8 intervals the missed
    /// slots are skipped rather than sent in a burst, so the report's count and seconds give the
    /// rate achieved.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Stop after this many frames.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds (default 10 when --count is absent; at most 3600).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Sending threads, each pinned to its own CPU (0, 1, ...).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// What a generator run did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenReport {
    /// Frames sent.
    pub sent: u64,
    /// Seconds spent sending.
    pub secs: f64,
}

impl GenReport {
    /// Millions of frames per second.
    pub fn mpps(&self) -> f64 {
        self.sent as f64 / self.secs.max(1e-9) / 1e6
    }

    /// The line `xvs gen` prints: `sent=N secs=S mpps=M`.
    pub fn line(&self) -> String {
        format!("sent={} secs={:.3} mpps={:.3}", self.sent, self.secs, self.mpps())
    }
}

/// The MAC address of `dev` in the current namespace.
fn own_mac(dev: &str) -> Result<[u8; 6], GenError> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{dev}/address")).map_err(|err| GenError::Sys {
        what: format!("read the MAC address of {dev}"),
        err,
    })?;
    parse_mac(s.trim()).map_err(GenError::Bad)
}

impl GenArgs {
    /// The template these options describe.
    pub fn template(&self) -> Result<Template, GenError> {
        let src = self.src.unwrap_or(match self.dst {
            IpAddr::V4(_) => IpAddr::V4([198, 19, 0, 0].into()),
            IpAddr::V6(_) => IpAddr::V6([0x2001, 2, 0, 0xff, 0, 0, 0, 0].into()),
        });
        let src_mac = match self.src_mac {
            Some(m) => m,
            None => own_mac(&self.dev)?,
        };
        if self.flows == 0 && !self.new_flows {
            return Err(GenError::Bad("--flows must be at least 1".into()));
        }
        Ok(Template {
            dst_mac: self.dst_mac,
            src_mac,
            src,
            dst: self.dst,
            dport: self.dport,
            proto: self.proto,
            size: self.size,
            flows: if self.new_flows { 0 } else { self.flows },
            sequential: self.sequential,
        })
    }

    /// The run's bounds: (frames, time).
    fn bounds(&self) -> Result<(u64, Duration), GenError> {
        let secs = self
            .duration
            .unwrap_or(if self.count.is_some() { 3600.0 } else { 10.0 });
        if !(0.0..=3600.0).contains(&secs) {
            return Err(GenError::Bad(format!("--duration {secs} out of range 0..=3600")));
        }
        Ok((self.count.unwrap_or(u64::MAX), Duration::from_secs_f64(secs)))
    }
}

/// Frames (sent or, when not due, dropped) per test run: big enough to amortise the run's set-up
/// (tens of milliseconds), small enough to check the clock a few times per second.
const CHUNK: u64 = 1 << 18;

/// Sends what `args` asks for and reports how much went out.
pub fn generate(args: &GenArgs) -> Result<GenReport, GenError> {
    let t = args.template()?;
    let mut cfg = t.build()?;
    let (count, time) = args.bounds()?;
    let threads = args.threads.clamp(1, 64);
    let idx = ifindex(&args.dev)?;
    cfg.ifindex = idx;
    let obj = BpfObject::load("gen", "xvs_gen")?;
    // Attached to the loopback (generic mode; the program passes whatever arrives there), the
    // program stays in the kernel's XDP dispatcher, and each test run starts at once instead of
    // waiting for RCU grace periods to put it there and take it out: without this a run lost
    // 20-60 ms, and paced runs fell short of their rate. Not fatal when it fails (lo has a
    // program already): runs are slower to start, that is all.
    // A link, not a netlink attachment: it goes when the process does, even when killed.
    let _keep = match ifindex("lo").and_then(|lo| obj::BpfLink::xdp(lo, obj.prog_fd, false)) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %e, "could not keep the generator in the XDP dispatcher; test runs start slowly");
            None
        }
    };
    let cfg_fd = obj.map("gen_cfg")?;
    // SAFETY: `gen_cfg` is an array of one `struct gen_cfg`, which `GenCfg` mirrors (repr(C),
    // size checked by a test); the key is a u32.
    unsafe { update(cfg_fd, &0u32, &cfg)? };
    let mut frame = vec![0u8; t.size.max(60)];
    packet::finish(&cfg, &mut frame, packet::flow(&cfg, 0), 0);

    // Thread i runs on CPU cores[i % cores]; each CPU's pacing and budget are the sums of its
    // threads' shares (one thread per CPU unless --threads exceeds the CPUs).
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.is_empty() {
        return Err(GenError::Bad("no CPU to run the generator on".into()));
    }
    let per_thread = |i: usize, total: u64| total / threads as u64 + u64::from((i as u64) < total % threads as u64);
    let cpu_of = |i: usize| cores[i % cores.len()].id;
    let mut pace = vec![Pace::default(); obj::possible_cpus()?];
    let mut rates = vec![0u64; pace.len()];
    for i in 0..threads {
        let p = pace
            .get_mut(cpu_of(i))
            .ok_or_else(|| GenError::Bad(format!("CPU {} out of range", cpu_of(i))))?;
        p.limit = p.limit.saturating_add(per_thread(i, count));
        rates[cpu_of(i)] += per_thread(i, args.rate);
    }
    for (p, &r) in pace.iter_mut().zip(&rates) {
        if args.rate > 0 {
            // A CPU whose threads' share of the rate is 0 (--rate below --threads) sends nothing.
            p.interval_ns = 1_000_000_000 / r.max(1);
            if r == 0 {
                p.limit = 0;
            }
        }
    }
    let pace_fd = obj.map("gen_pace")?;
    // SAFETY: `gen_pace` is a per-CPU array of one `struct gen_pace`, which `Pace` mirrors.
    unsafe { obj::percpu_write(pace_fd, 0, &pace)? };

    let start = Instant::now();
    let results: Vec<Result<(), GenError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (obj, frame) = (&obj, &frame);
                let cpu = cpu_of(i);
                s.spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        return Err(GenError::Bad(format!(
                            "could not pin generator thread {i} to CPU {cpu}"
                        )));
                    }
                    send_loop(obj.prog_fd, pace_fd, cpu, frame, idx, start, time)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(GenError::Bad("a generator thread panicked".into())))
            })
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    for r in results {
        r?;
    }
    // SAFETY: as above.
    let sent = unsafe { obj::percpu_read::<Pace>(pace_fd, 0)? }
        .iter()
        .map(|p| p.sent)
        .sum();
    Ok(GenReport { sent, secs })
}

/// Per-CPU pacing and frame budget of `bpf/gen.c` (`struct gen_pace`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pace {
    /// When the next frame is due (`bpf_ktime_get_ns`); 0: at once.
    next_ns: u64,
    /// Nanoseconds between two frames; 0: unpaced.
    interval_ns: u64,
    /// Frames transmitted.
    sent: u64,
    /// Frames to transmit in all.
    limit: u64,
}

/// One thread's sending loop on `cpu`: test runs of `CHUNK` frames (the program sends those due
/// and within the budget, and drops the rest) until the CPU's budget is spent or `start + time`.
fn send_loop(
    prog_fd: i32,
    pace_fd: i32,
    cpu: usize,
    frame: &[u8],
    ifindex: u32,
    start: Instant,
    time: Duration,
) -> Result<(), GenError> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    while start.elapsed() < time {
        let mut opts = bpf::bpf_test_run_opts {
            sz: std::mem::size_of::<bpf::bpf_test_run_opts>() as _,
            data_in: frame.as_ptr().cast(),
            data_size_in: frame.len() as u32,
            ctx_in: ctx.as_ptr().cast(),
            ctx_size_in: std::mem::size_of_val(&ctx) as u32,
            repeat: CHUNK as i32,
            flags: bpf::BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: 64,
            ..Default::default()
        };
        // SAFETY: `opts` is sized; `frame` and `ctx` outlive the call; no output buffers are given.
        let rc = unsafe { bpf::bpf_prog_test_run_opts(prog_fd, &mut opts) };
        if rc != 0 {
            return Err(obj::bpf_err(
                "BPF_PROG_TEST_RUN with live frames (kernel 5.18 or later)",
                rc,
            ));
        }
        // SAFETY: `gen_pace` is a per-CPU array of one `struct gen_pace`, which `Pace` mirrors.
        let p = unsafe { obj::percpu_read::<Pace>(pace_fd, 0)? };
        if p.get(cpu).is_none_or(|p| p.sent >= p.limit) {
            break;
        }
    }
    Ok(())
}

/// Re-exported for callers that only want the configuration (tests, tools).
pub fn config(args: &GenArgs) -> Result<GenCfg, GenError> {
    args.template()?.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct P {
        #[command(flatten)]
        g: GenArgs,
    }

    #[test]
    fn pace_mirrors_the_bpf_struct() {
        // struct gen_pace in bpf/gen.c: four __u64.
        assert_eq!(std::mem::size_of::<Pace>(), 32);
        assert_eq!(std::mem::align_of::<Pace>(), 8);
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:01:0a"), Ok([2, 0, 0, 0, 1, 10]));
        assert!(parse_mac("02:00:00:00:01").is_err());
        assert!(parse_mac("02:00:00:00:01:xyz").is_err());
        assert!(parse_mac("02:00:00:00:01:").is_err());
        assert!(parse_mac("").is_err());
    }

    #[test]
    fn options() {
        let p = P::try_parse_from([
            "x",
            "--dev",
            "cli0",
            "--dst-mac",
            "02:00:00:00:01:01",
            "--src-mac",
            "02:00:00:00:01:02",
            "--dst",
            "2001:2::10",
            "--proto",
            "syn",
            "--size",
            "90",
            "--new-flows",
            "--count",
            "5",
        ])
        .unwrap();
        let t = p.g.template().unwrap();
        assert_eq!(t.flows, 0);
        assert_eq!(t.src, "2001:2:0:ff::".parse::<IpAddr>().unwrap());
        assert_eq!(p.g.bounds().unwrap(), (5, Duration::from_secs(3600)));
        assert!(config(&p.g).is_ok());
        let p = P::try_parse_from([
            "x",
            "--dev",
            "d",
            "--dst-mac",
            "02:00:00:00:01:01",
            "--dst",
            "198.18.0.10",
        ])
        .unwrap();
        assert_eq!(p.g.bounds().unwrap(), (u64::MAX, Duration::from_secs(10)));
        let p = P::try_parse_from([
            "x",
            "--dev",
            "d",
            "--dst-mac",
            "02:00:00:00:01:01",
            "--dst",
            "198.18.0.10",
            "--duration=4000",
        ])
        .unwrap();
        assert!(p.g.bounds().is_err());
        assert!(P::try_parse_from(["x", "--dev", "d", "--dst-mac", "zz", "--dst", "198.18.0.10"]).is_err());
    }
}
