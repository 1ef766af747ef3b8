//! The performance lab: `cargo bench --bench perf` (root; otherwise it says why and exits 0).
//!
//! For every contender it builds a fresh three-namespace topology (static neighbours, no ARP):
//!
//! ```text
//!  P-cli  cli0 198.18.1.2 ── lb0 198.18.1.1  [P-lb: the contender]  lb1 198.18.2.1 ── rs0 198.18.2.11-13  P-rs
//!         `xvs gen` (XDP_TX, core 0)                                                 `xvs sink` (tc or XDP)
//! ```
//!
//! (and the same in IPv6: 2001:2:0:1::/64, 2001:2:0:2::/64, VIP 2001:2::10, flows from 2001:2:0:ff::/64)
//!
//! and measures, with `xvs gen` sending and `xvs sink` counting on the real-server side:
//! forwarded Mpps of established UDP flows (1000 flows, 64-byte frames) per forwarding method,
//! and for NAT over IPv6 (84-byte frames: the same payload), new connections per second (TCP SYN, a new flow every frame), the drop ratio (1 - received /
//! sent), one-way latency p50/p99 at a light rate, 1 and 2 workers, and xvs's memory and rate with
//! 1M (and 10M) connections in its table. Contenders: xvs AF_XDP native and generic, xvs AF_PACKET,
//! nftables DNAT (numgen and jhash maps), plain kernel routing, the XDP redirect ceiling
//! (`bpf/redir.c`), the bare AF_XDP forwarder (xvs's I/O without the data plane, native and
//! generic), and the generator alone (its capacity). Every cell is the median of `RUNS` runs.
//! Last, the ratio targets are measured again in paired rounds (bare forwarder, xvs NAT and DR,
//! nftables, in turn within each round) so that the machine's drift between cells minutes apart
//! does not enter the ratios. Writes `bench/RESULTS.md` and `bench/perf.svg`.
//!
//! Environment: `XVS_PERF_SECS` (seconds per run, default 3), `XVS_PERF_RUNS` (default 3),
//! `XVS_PERF_QUICK=1` (1 s, 1 run, no 10M table: a smoke test), `XVS_PERF_10M=0` to skip the
//! 10M table, `XVS_PERF_ONLY=a,b` to run only contenders whose step name contains one of the
//! comma-separated substrings, `XVS_PERF_BATCH=N` for xvs's batch_size (64). Quick and partial
//! runs print their report without replacing `bench/RESULTS.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xvs::lab::netns::{self, Netns};
use xvs::perf::hist::median;

const XVS: &str = env!("CARGO_BIN_EXE_xvs");
const LB0_MAC: &str = "02:00:00:00:01:01";
const CLI_MAC: &str = "02:00:00:00:01:02";
const LB1_MAC: &str = "02:00:00:00:02:01";
const RS_MAC: &str = "02:00:00:00:02:02";
const RS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 2, 11),
    Ipv4Addr::new(198, 18, 2, 12),
    Ipv4Addr::new(198, 18, 2, 13),
];
/// The real servers' IPv6 addresses, beside `RS` on rs0.
const RS6: [&str; 3] = ["2001:2:0:2::11", "2001:2:0:2::12", "2001:2:0:2::13"];
/// The IPv6 NAT VIP (udp/7).
const VIP6: &str = "2001:2::10";
/// VIPs per method, as DESIGN.md's plan (all on udp/7 and tcp/7).
const VIPS: [(&str, &str); 4] = [
    ("NAT", "198.18.0.10"),
    ("FULLNAT", "198.18.0.11"),
    ("DR", "198.18.0.12"),
    ("TUN", "198.18.0.13"),
];
/// Light rate for the latency cells (frames per second).
const LIGHT_PPS: u64 = 10_000;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Opts {
    secs: f64,
    runs: usize,
    big: bool,
    only: Option<String>,
    /// A smoke test: its figures are printed but do not replace bench/RESULTS.md.
    quick: bool,
}

/// One measurement: what the generator sent and what the sink counted.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    sent: u64,
    gen_secs: f64,
    recv: u64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

impl Sample {
    fn offered_mpps(&self) -> f64 {
        self.sent as f64 / self.gen_secs.max(1e-9) / 1e6
    }
    fn fwd_mpps(&self) -> f64 {
        self.recv as f64 / self.gen_secs.max(1e-9) / 1e6
    }
    fn drop_ratio(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            1.0 - (self.recv as f64 / self.sent as f64).min(1.0)
        }
    }
}

/// A cell of the report: a contender, what was measured, the runs.
#[derive(Clone, Debug)]
struct Cell {
    contender: String,
    what: String,
    samples: Vec<Sample>,
    note: String,
}

impl Cell {
    fn med(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(&self.samples.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    }
    fn med_opt(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        median(&self.samples.iter().filter_map(f).collect::<Vec<_>>())
    }
}

/// The contender's namespaces; removed on drop (also on panic).
struct Topo {
    cli: Netns,
    lb: Netns,
    rs: Netns,
}

fn topo(prefix: &str) -> Res<Topo> {
    let cli = Netns::create(&format!("{prefix}-cli"))?;
    let lb = Netns::create(&format!("{prefix}-lb"))?;
    let rs = Netns::create(&format!("{prefix}-rs"))?;
    netns::veth(&cli, "cli0", &lb, "lb0", 2)?;
    netns::veth(&lb, "lb1", &rs, "rs0", 2)?;
    cli.ip_batch(&[
        format!("link set cli0 address {CLI_MAC}"),
        "link set cli0 up".into(),
        "addr add 198.18.1.2/24 dev cli0".into(),
        "route add 198.18.0.0/15 via 198.18.1.1".into(),
        format!("neigh replace 198.18.1.1 lladdr {LB0_MAC} dev cli0 nud permanent"),
        "addr add 2001:2:0:1::2/64 dev cli0 nodad".into(),
    ])?;
    let mut l = vec![
        format!("link set lb0 address {LB0_MAC}"),
        format!("link set lb1 address {LB1_MAC}"),
        "link set lb0 up".into(),
        "link set lb1 up".into(),
        "addr add 198.18.1.1/24 dev lb0".into(),
        "addr add 198.18.2.1/24 dev lb1".into(),
        "route add 198.19.0.0/16 via 198.18.1.2".into(),
        format!("neigh replace 198.18.1.2 lladdr {CLI_MAC} dev lb0 nud permanent"),
        "addr add 2001:2:0:1::1/64 dev lb0 nodad".into(),
        "addr add 2001:2:0:2::1/64 dev lb1 nodad".into(),
        "route add 2001:2:0:ff::/64 via 2001:2:0:1::2".into(),
        format!("neigh replace 2001:2:0:1::2 lladdr {CLI_MAC} dev lb0 nud permanent"),
    ];
    for r in RS.iter().map(ToString::to_string).chain(RS6.map(String::from)) {
        l.push(format!("neigh replace {r} lladdr {RS_MAC} dev lb1 nud permanent"));
    }
    lb.ip_batch(&l)?;
    let mut r = vec![format!("link set rs0 address {RS_MAC}"), "link set rs0 up".into()];
    for a in RS {
        r.push(format!("addr add {a}/24 dev rs0"));
    }
    for a in RS6 {
        r.push(format!("addr add {a}/64 dev rs0 nodad"));
    }
    r.push("route add default via 198.18.2.1".into());
    r.push(format!(
        "neigh replace 198.18.2.1 lladdr {LB1_MAC} dev rs0 nud permanent"
    ));
    rs.ip_batch(&r)?;
    lb.sysctl(&[
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv4.conf.lb0.rp_filter", "0"),
        ("net.ipv4.conf.lb1.rp_filter", "0"),
        ("net.ipv4.ip_forward", "0"),
    ])?;
    // The generator's XDP_TX frames reach lb0 only if it runs NAPI: GRO on. rs0 has none, so
    // skb-emitting forwarders hand frames straight to the tc sink.
    lb.set_gro("lb0", true)?;
    rs.set_gro("rs0", false)?;
    Ok(Topo { cli, lb, rs })
}

/// Runs `argv` in namespace `ns` and returns its stdout, or its stderr as the error.
fn exec(ns: &Netns, argv: &[&str]) -> Res<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(argv)
        .output()?;
    if !out.status.success() {
        return Err(format!("{argv:?}: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
}

fn sigint(c: &Child) {
    // SAFETY: kill has no memory effects; `c` is our own child, not yet reaped.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
}

/// One run: the sink on rs0 (hook `hook`), the generator on cli0 with `gen` options for `secs`.
fn measure(t: &Topo, gargs: &[String], hook: &str, secs: f64) -> Res<Sample> {
    let mut sink = Command::new("ip")
        .args([
            "netns",
            "exec",
            t.rs.name(),
            XVS,
            "sink",
            "--dev",
            "rs0",
            "--hook",
            hook,
        ])
        .args(["--duration", &format!("{}", secs + 10.0)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(400));
    let mut argv: Vec<String> = ["gen", "--dev", "cli0", "--dst-mac", LB0_MAC, "--duration"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.push(format!("{secs}"));
    argv.extend(gargs.iter().cloned());
    let mut full = vec![XVS];
    full.extend(argv.iter().map(String::as_str));
    let g = exec(&t.cli, &full);
    std::thread::sleep(Duration::from_millis(300));
    sigint(&sink);
    let mut out = String::new();
    if let Some(mut o) = sink.stdout.take() {
        o.read_to_string(&mut out)?;
    }
    let mut err = String::new();
    if let Some(mut e) = sink.stderr.take() {
        e.read_to_string(&mut err)?;
    }
    sink.wait()?;
    let g = g?;
    let s = Sample {
        sent: field(&g, "sent").ok_or_else(|| format!("generator said {g:?}"))? as u64,
        gen_secs: field(&g, "secs").unwrap_or(secs),
        recv: field(&out, "packets").ok_or_else(|| format!("sink said {out:?} {err:?}"))? as u64,
        p50_us: field(&out, "p50_us"),
        p99_us: field(&out, "p99_us"),
    };
    Ok(s)
}

/// Established UDP flows to `dst` (1000 flows, 64-byte frames, full speed).
fn est(dst: &str, threads: usize) -> Vec<String> {
    let mut v: Vec<String> = ["--dst", dst, "--proto", "udp", "--flows", "1000", "--size", "64"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(["--threads".into(), threads.to_string()]);
    v
}

/// Established UDP flows to the IPv6 NAT VIP: 84-byte frames, the IPv4 cells' UDP payload under
/// an IPv6 header.
fn est6() -> Vec<String> {
    let mut v = est(VIP6, 1);
    v[7] = "84".into();
    v
}

fn syn(dst: &str, threads: usize) -> Vec<String> {
    let mut v: Vec<String> = ["--dst", dst, "--proto", "syn", "--new-flows", "--size", "64"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(["--threads".into(), threads.to_string()]);
    v
}

fn light(dst: &str) -> Vec<String> {
    let mut v = est(dst, 1);
    v.extend(["--rate".into(), LIGHT_PPS.to_string()]);
    v
}

/// Runs a cell `opts.runs` times and logs each run.
fn cell(o: &Opts, t: &Topo, contender: &str, what: &str, gargs: &[String], hook: &str) -> Cell {
    let mut samples = Vec::new();
    let mut note = String::new();
    for i in 0..o.runs {
        match measure(t, gargs, hook, o.secs) {
            Ok(s) => {
                eprintln!(
                    "perf: {contender:<28} {what:<16} run {}: sent {:.3} Mpps, received {:.3} Mpps, drop {:.1}%, p50 {:?} us p99 {:?} us",
                    i + 1,
                    s.offered_mpps(),
                    s.fwd_mpps(),
                    s.drop_ratio() * 100.0,
                    s.p50_us,
                    s.p99_us
                );
                samples.push(s);
            }
            Err(e) => {
                eprintln!("perf: {contender} {what} run {}: {e}", i + 1);
                note = format!("failed: {e}");
            }
        }
    }
    Cell {
        contender: contender.into(),
        what: what.into(),
        samples,
        note,
    }
}

/// A running `xvs run`, stopped (SIGTERM) on drop.
struct Director {
    child: Child,
    log: std::path::PathBuf,
}

impl Director {
    fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
    /// Stops its threads (SIGSTOP) while another contender is measured.
    fn pause(&self) {
        // SAFETY: kill has no memory effects; the child is ours and not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }
    /// Lets it run again (SIGCONT) and gives its workers a moment to poll.
    fn resume(&self) {
        // SAFETY: as in `pause`.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
        std::thread::sleep(Duration::from_millis(300));
    }
    /// Stops it and returns its last counters line.
    fn stop(mut self) -> String {
        self.resume();
        // SAFETY: kill has no memory effects; the child is ours and not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .rev()
            .find(|l| l.starts_with("xvs: stopped:"))
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// xvs's `batch_size` in the runs: `XVS_PERF_BATCH`, 64 by default.
fn batch() -> usize {
    std::env::var("XVS_PERF_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn xvs_config(io: &str, mode: &str, workers: usize, batch: usize, max_conns: u64) -> String {
    let cores = if workers == 1 { "[1]" } else { "[0, 1]" };
    let mut c = format!(
        "[global]\ncores = {cores}\nio = \"{io}\"\nxdp_mode = \"{mode}\"\nbatch_size = {batch}\n\n\
         [conn]\nmax_conns = {max_conns}\n\n\
         [[interface]]\nname = \"lb0\"\naddress = [\"198.18.1.1/24\", \"2001:2:0:1::1/64\"]\n\n\
         [[interface]]\nname = \"lb1\"\naddress = [\"198.18.2.1/24\", \"2001:2:0:2::1/64\"]\n\n\
         [[route]]\nprefix = \"198.19.0.0/16\"\nvia = \"198.18.1.2\"\ninterface = \"lb0\"\n\n\
         [[route]]\nprefix = \"2001:2:0:ff::/64\"\nvia = \"2001:2:0:1::2\"\ninterface = \"lb0\"\n\n\
         [[neighbour]]\naddress = \"198.18.1.2\"\nmac = \"{CLI_MAC}\"\ninterface = \"lb0\"\n\n\
         [[neighbour]]\naddress = \"2001:2:0:1::2\"\nmac = \"{CLI_MAC}\"\ninterface = \"lb0\"\n"
    );
    for r in RS6 {
        let _ = write!(
            c,
            "\n[[neighbour]]\naddress = \"{r}\"\nmac = \"{RS_MAC}\"\ninterface = \"lb1\"\n"
        );
    }
    let _ = write!(
        c,
        "\n[[virtual_server]]\nvip = \"{VIP6}\"\nport = 7\nprotocol = \"udp\"\nlb_algo = \"rr\"\nlb_kind = \"NAT\"\n"
    );
    for r in RS6 {
        let _ = write!(c, "  [[virtual_server.real_server]]\n  address = \"{r}\"\n  port = 7\n");
    }
    for r in RS {
        let _ = write!(
            c,
            "\n[[neighbour]]\naddress = \"{r}\"\nmac = \"{RS_MAC}\"\ninterface = \"lb1\"\n"
        );
    }
    for (method, vip) in VIPS {
        for proto in ["udp", "tcp"] {
            let _ = write!(
                c,
                "\n[[virtual_server]]\nvip = \"{vip}\"\nport = 7\nprotocol = \"{proto}\"\nlb_algo = \"rr\"\nlb_kind = \"{method}\"\n"
            );
            if method == "FULLNAT" {
                c.push_str("laddr = [\"198.18.3.1\"]\n");
            }
            for r in RS {
                let _ = write!(c, "  [[virtual_server.real_server]]\n  address = \"{r}\"\n  port = 7\n");
            }
        }
    }
    c
}

fn start_xvs(t: &Topo, name: &str, config: &str) -> Res<Director> {
    start_xvs_with(t, name, config, &[])
}

fn start_xvs_with(t: &Topo, name: &str, config: &str, extra: &[&str]) -> Res<Director> {
    let dir = std::env::temp_dir();
    let cfg = dir.join(format!("{}-{name}.toml", t.lb.name()));
    let log = dir.join(format!("{}-{name}.log", t.lb.name()));
    std::fs::write(&cfg, config)?;
    let child = Command::new("ip")
        .args(["netns", "exec", t.lb.name(), XVS, "run", "-c"])
        .arg(&cfg)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut d = Director { child, log };
    std::thread::sleep(Duration::from_millis(1500));
    if let Ok(Some(st)) = d.child.try_wait() {
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        return Err(format!("xvs run exited ({st}): {log}").into());
    }
    Ok(d)
}

/// Short runs that create the established flows of every VIP before measuring.
fn warm(t: &Topo) {
    for (_, vip) in VIPS {
        let mut g = est(vip, 1);
        g.extend(["--rate".into(), "200000".into()]);
        let _ = measure(t, &g, "tc", 0.3);
    }
    let mut g = est6();
    g.extend(["--rate".into(), "200000".into()]);
    let _ = measure(t, &g, "tc", 0.3);
}

#[derive(Default)]
struct Report {
    cells: Vec<Cell>,
    /// (contender, flows in table, RSS KiB before fill, RSS KiB after, entries, Mpps over a subset).
    tables: Vec<(String, u64, u64, u64, u64, Option<f64>)>,
    /// The paired rounds of the ratio targets.
    rounds: Vec<Round>,
    notes: Vec<String>,
}

/// One paired round: forwarded Mpps of each ratio target's contenders, measured one after another.
#[derive(Clone, Copy, Debug, Default)]
struct Round {
    bare: Option<f64>,
    nat: Option<f64>,
    dr: Option<f64>,
    nft: Option<f64>,
}

impl Round {
    fn nat_of_bare(&self) -> Option<f64> {
        Some(self.nat? / self.bare?)
    }
    fn dr_of_bare(&self) -> Option<f64> {
        Some(self.dr? / self.bare?)
    }
    fn nat_of_nft(&self) -> Option<f64> {
        Some(self.nat? / self.nft?)
    }
    fn dr_of_nft(&self) -> Option<f64> {
        Some(self.dr? / self.nft?)
    }
}

fn xvs_contender(o: &Opts, rep: &mut Report, idx: usize, name: &str, io: &str, mode: &str, workers: usize) -> Res<()> {
    let t = topo(&format!("xp{}-{idx}", std::process::id()))?;
    let d = start_xvs(&t, "xvs", &xvs_config(io, mode, workers, batch(), 16 << 20))?;
    warm(&t);
    let methods: &[(&str, &str)] = if mode == "native" && workers == 1 {
        &VIPS
    } else {
        &VIPS[..1]
    };
    let methods: Vec<(&str, &str)> = if workers == 1 && mode != "native" {
        vec![VIPS[0], VIPS[2]]
    } else {
        methods.to_vec()
    };
    for (m, vip) in methods {
        rep.cells
            .push(cell(o, &t, name, &format!("est {m}"), &est(vip, workers), "tc"));
    }
    if mode == "native" && workers == 1 {
        rep.cells.push(cell(o, &t, name, "est NAT IPv6", &est6(), "tc"));
    }
    if workers == 1 {
        rep.cells
            .push(cell(o, &t, name, "latency NAT", &light(VIPS[0].1), "tc"));
    }
    rep.cells
        .push(cell(o, &t, name, "new conn NAT", &syn(VIPS[0].1, workers), "tc"));
    let line = d.stop();
    rep.notes.push(format!("{name}: {line}"));
    Ok(())
}

/// The baseline of the 90 % target: `xvs run --bare-forward`, the same AF_XDP I/O (one worker,
/// the same filter, batch and XDP `mode`) with no data plane, each frame sent on to the sink.
fn bare_contender(o: &Opts, rep: &mut Report, idx: usize, mode: &str) -> Res<()> {
    let name = bare_name(mode);
    let t = topo(&format!("xp{}-{idx}", std::process::id()))?;
    let cfg = xvs_config("af_xdp", mode, 1, batch(), 1 << 16);
    let d = start_xvs_with(&t, "bare", &cfg, &["--bare-forward", RS_MAC])?;
    rep.cells
        .push(cell(o, &t, &name, "est forward", &est(VIPS[0].1, 1), "tc"));
    let line = d.stop();
    rep.notes.push(format!("{name}: {line}"));
    Ok(())
}

/// The bare forwarder's contender name in XDP `mode`.
fn bare_name(mode: &str) -> String {
    format!("bare AF_XDP {mode} forwarder (xvs I/O)")
}

/// xvs with 1M (and 10M) connections: fill with sequential flows at a rate it mostly forwards
/// (again, up to `FILL_PASSES` times, until 99 % of them are in the table: each pass creates the
/// flows an earlier one lost), read RSS and the table's size, then measure established traffic
/// over the first 100k flows.
fn table_contender(o: &Opts, rep: &mut Report, idx: usize) -> Res<()> {
    const FILL_PASSES: usize = 4;
    let name = "xvs af_xdp native";
    let t = topo(&format!("xp{}-{idx}", std::process::id()))?;
    let sock = std::env::temp_dir().join(format!("{}.sock", t.lb.name()));
    let sock = sock.to_string_lossy().into_owned();
    let cfg = xvs_config("af_xdp", "native", 1, 64, 12_000_000).replacen(
        "[global]\n",
        &format!("[global]\nadmin_socket = \"{sock}\"\n"),
        1,
    );
    let d = start_xvs(&t, "table", &cfg)?;
    let base = d.rss_kib().unwrap_or(0);
    let sizes: &[u64] = if o.big { &[1_000_000, 10_000_000] } else { &[1_000_000] };
    for &n in sizes {
        let fill_rate = 200_000u64;
        let secs = n as f64 / fill_rate as f64 + 1.0;
        let g: Vec<String> = vec![
            "--dst".into(),
            VIPS[0].1.into(),
            "--flows".into(),
            n.to_string(),
            "--sequential".into(),
            "--count".into(),
            n.to_string(),
            "--rate".into(),
            fill_rate.to_string(),
        ];
        let mut conns = 0;
        for pass in 1..=FILL_PASSES {
            let fill = measure(&t, &g, "tc", secs)?;
            conns = in_table(&t, &sock).unwrap_or(0);
            eprintln!(
                "perf: table fill {n}, pass {pass}: sent {} received {}, {conns} in the table",
                fill.sent, fill.recv
            );
            if conns * 100 >= n * 99 {
                break;
            }
        }
        let rss = d.rss_kib().unwrap_or(0);
        let mut sub = est(VIPS[0].1, 1);
        sub[5] = "100000".into();
        let c = cell(o, &t, name, &format!("est NAT, {}M conns", n / 1_000_000), &sub, "tc");
        let mpps = if c.samples.is_empty() {
            None
        } else {
            Some(c.med(Sample::fwd_mpps))
        };
        rep.tables.push((name.into(), n, base, rss, conns, mpps));
        rep.cells.push(c);
    }
    let line = d.stop();
    rep.notes.push(format!("{name} (table): {line}"));
    Ok(())
}

/// The connection count of the director in `t` (`xvs ctl counters`: "in table N").
fn in_table(t: &Topo, sock: &str) -> Option<u64> {
    let out = exec(&t.lb, &[XVS, "ctl", "--socket", sock, "counters"]).ok()?;
    let mut w = out.split_whitespace();
    while let Some(x) = w.next() {
        if x == "in" && w.next() == Some("table") {
            return w.next()?.parse().ok();
        }
    }
    None
}

fn nft_contender(o: &Opts, rep: &mut Report, idx: usize, kind: &str) -> Res<()> {
    let name = format!("nftables DNAT {kind}");
    let t = topo(&format!("xp{}-{idx}", std::process::id()))?;
    nft_dnat(&t, kind)?;
    warm(&t);
    rep.cells.push(cell(o, &t, &name, "est NAT", &est(VIPS[0].1, 1), "tc"));
    rep.cells.push(cell(o, &t, &name, "est NAT IPv6", &est6(), "tc"));
    if kind == "numgen" {
        rep.cells
            .push(cell(o, &t, &name, "latency NAT", &light(VIPS[0].1), "tc"));
    }
    rep.cells
        .push(cell(o, &t, &name, "new conn NAT", &syn(VIPS[0].1, 1), "tc"));
    let max = t.lb.sysctl_get("net.netfilter.nf_conntrack_max").unwrap_or_default();
    rep.notes.push(format!("{name}: nf_conntrack_max {max}"));
    Ok(())
}

/// Routing and nftables DNAT of the NAT VIPs (IPv4 udp/7 and tcp/7, IPv6 udp/7) in `t`'s
/// director namespace, picking the real server by `kind`: `numgen` (round robin) or `jhash` (a
/// hash of the client's address and port).
fn nft_dnat(t: &Topo, kind: &str) -> Res<()> {
    t.lb.sysctl(&[("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")])?;
    let rs4: Vec<String> = RS.iter().map(ToString::to_string).collect();
    let rs6: Vec<String> = RS6.iter().map(ToString::to_string).collect();
    let families: [(&str, &str, &[String], &[&str]); 2] =
        [("ip", VIPS[0].1, &rs4, &["udp", "tcp"]), ("ip6", VIP6, &rs6, &["udp"])];
    for (fam, vip, rs, protos) in families {
        let pick = if kind == "numgen" {
            "numgen inc mod 3".to_string()
        } else {
            format!("jhash {fam} saddr . @th,0,16 mod 3 seed 0xdeadbeef")
        };
        let map = format!("{{ 0 : {}, 1 : {}, 2 : {} }}", rs[0], rs[1], rs[2]);
        let rules: String = protos
            .iter()
            .map(|p| format!("    {fam} daddr {vip} {p} dport 7 dnat to {pick} map {map}\n"))
            .collect();
        let text = format!(
            "table {fam} xvs_perf {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{rules}  }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("{}-{fam}.nft", t.lb.name()));
        std::fs::write(&file, text)?;
        exec(&t.lb, &["nft", "-f", &file.to_string_lossy()])?;
    }
    Ok(())
}

/// The ratio targets measured in paired rounds. The machine's speed drifts over minutes, and the
/// contenders' own cells lie minutes apart: a ratio of their medians moves with the drift by as
/// much as the targets' margins. Here the bare forwarder, xvs (NAT and DR) and nftables numgen
/// DNAT each have their own namespaces for the whole step and are measured in turn in every
/// round, the director not being measured stopped (SIGSTOP), and the ratios are taken per round.
fn paired_contender(o: &Opts, rep: &mut Report, idx: usize) -> Res<()> {
    let base = format!("xp{}-{idx}", std::process::id());
    let tb = topo(&format!("{base}b"))?;
    let bare = start_xvs_with(
        &tb,
        "pbare",
        &xvs_config("af_xdp", "native", 1, batch(), 1 << 16),
        &["--bare-forward", RS_MAC],
    )?;
    bare.pause();
    let tx = topo(&format!("{base}x"))?;
    let xvs = start_xvs(&tx, "pxvs", &xvs_config("af_xdp", "native", 1, batch(), 16 << 20))?;
    warm(&tx);
    xvs.pause();
    let tn = topo(&format!("{base}n"))?;
    nft_dnat(&tn, "numgen")?;
    warm(&tn);
    let rounds = if o.runs >= 3 { 7 } else { o.runs };
    let run = |t: &Topo, what: &str, vip: &str| match measure(t, &est(vip, 1), "tc", o.secs) {
        Ok(s) => Some(s.fwd_mpps()),
        Err(e) => {
            eprintln!("perf: paired {what}: {e}");
            None
        }
    };
    for i in 0..rounds {
        let mut r = Round::default();
        // Rounds 2, 4, ... (`i` odd) run the contenders in the reverse order, so that a drift
        // within a round favours neither side of a ratio.
        let mut steps = [0, 1, 2];
        if i % 2 == 1 {
            steps.reverse();
        }
        for step in steps {
            match step {
                0 => {
                    bare.resume();
                    r.bare = run(&tb, "bare", VIPS[0].1);
                    bare.pause();
                }
                1 => {
                    xvs.resume();
                    if i % 2 == 0 {
                        r.nat = run(&tx, "NAT", VIPS[0].1);
                        r.dr = run(&tx, "DR", VIPS[2].1);
                    } else {
                        r.dr = run(&tx, "DR", VIPS[2].1);
                        r.nat = run(&tx, "NAT", VIPS[0].1);
                    }
                    xvs.pause();
                }
                _ => r.nft = run(&tn, "nftables", VIPS[0].1),
            }
        }
        eprintln!("perf: paired round {}: {r:?}", i + 1);
        rep.rounds.push(r);
    }
    for (name, d) in [("paired bare", bare), ("paired xvs", xvs)] {
        let line = d.stop();
        rep.notes.push(format!("{name}: {line}"));
    }
    Ok(())
}

fn routing_contender(o: &Opts, rep: &mut Report, idx: usize) -> Res<()> {
    let name = "kernel routing";
    let t = topo(&format!("xp{}-{idx}", std::process::id()))?;
    t.lb.sysctl(&[("net.ipv4.ip_forward", "1")])?;
    let dst = RS[0].to_string();
    rep.cells.push(cell(o, &t, name, "est routed", &est(&dst, 1), "tc"));
    rep.cells.push(cell(o, &t, name, "latency routed", &light(&dst), "tc"));
    Ok(())
}

/// The ceiling: `bpf/redir.c` on lb0 (native) redirecting to lb1; the sink must be XDP.
fn redirect_contender(o: &Opts, rep: &mut Report, idx: usize) -> Res<()> {
    let name = "XDP redirect (ceiling)";
    let t = topo(&format!("xp{}-{idx}", std::process::id()))?;
    let prog = t.lb.run(|| -> std::io::Result<_> {
        let e = |e: xvs::perf::GenError| std::io::Error::other(e.to_string());
        let obj = xvs::perf::obj::BpfObject::load("redir", "xvs_redir").map_err(e)?;
        let out = xvs::perf::obj::ifindex("lb1").map_err(e)?;
        let mut v = [0u8; 16];
        v[0..6].copy_from_slice(&[2, 0, 0, 0, 2, 2]);
        v[6..12].copy_from_slice(&[2, 0, 0, 0, 2, 1]);
        v[12..16].copy_from_slice(&out.to_ne_bytes());
        let fd = obj.map("redir_cfg").map_err(e)?;
        // SAFETY: `redir_cfg` is an array of one 16-byte struct (6 + 6 + u32), key u32.
        unsafe { xvs::perf::obj::update(fd, &0u32, &v).map_err(e)? };
        let idx = xvs::perf::obj::ifindex("lb0").map_err(e)?;
        // Both live until the measurements are done; the link detaches when dropped.
        let link = xvs::perf::obj::BpfLink::xdp(idx, obj.prog_fd, true).map_err(e)?;
        Ok((obj, link))
    })?;
    let dst = VIPS[0].1;
    rep.cells.push(cell(o, &t, name, "est redirect", &est(dst, 1), "xdp"));
    rep.cells
        .push(cell(o, &t, name, "latency redirect", &light(dst), "xdp"));
    drop(prog);
    Ok(())
}

/// The generator's capacity: the sink (XDP) on lb0 itself.
fn gen_contender(o: &Opts, rep: &mut Report, idx: usize) -> Res<()> {
    let t = topo(&format!("xp{}-{idx}", std::process::id()))?;
    // Put the sink where the director would be: swap the roles of lb and rs for this one.
    let swapped = Topo {
        cli: Netns::existing(t.cli.name()),
        lb: Netns::existing(t.rs.name()),
        rs: Netns::existing(t.lb.name()),
    };
    // `measure` attaches the sink to rs0 of the sink namespace: rename lb0 for these runs.
    t.lb.ip_batch(&[
        "link set lb0 down".into(),
        "link set lb0 name rs0".into(),
        "link set rs0 up".into(),
    ])?;
    for threads in [1, 2] {
        let c = cell(
            o,
            &swapped,
            "xvs gen alone",
            &format!("gen {threads} thread"),
            &est(VIPS[0].1, threads),
            "xdp",
        );
        rep.cells.push(c);
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let n = cpu.lines().filter(|l| l.starts_with("processor")).count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // `scripts/pgo` names the profile it builds with; a plain `cargo bench` has none.
    let build = match std::env::var("XVS_PGO_PROFILE") {
        Ok(_) => "release build with profile-guided optimisation (`scripts/pgo`)",
        Err(_) => "release build",
    };
    format!(
        "{model}, {n} CPUs, {} GiB memory; kernel {kernel}; {date}; {build}",
        mem / 1024 / 1024
    )
}

fn find<'a>(r: &'a Report, contender: &str, what: &str) -> Option<&'a Cell> {
    r.cells
        .iter()
        .find(|c| c.contender == contender && c.what == what && !c.samples.is_empty())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn write_results(o: &Opts, r: &Report) -> Res<String> {
    let mut s = String::new();
    writeln!(s, "# xvs performance lab: results\n")?;
    writeln!(
        s,
        "Written by `cargo bench --bench perf` (bench/perf.rs). Machine: {}.\n\n\
         Each figure is the **median of {} runs** of {} s (shared machine: expect noise of 10% or more between \
         runs). 64-byte frames, IPv4, except the IPv6 cells (84-byte frames: the same UDP payload). Established \
         flows: 1000 UDP flows from 198.19.0.0/16 (2001:2:0:ff::/64), picked at random per frame, created by a \
         warm-up before measuring. New connections: TCP SYN, a new flow (source address and \
         port) every frame, counted as SYNs forwarded per second. Latency: one-way, generator to sink \
         (bpf_ktime_get_ns in the payload) at {} frames/s, evenly spaced (the generator paces frame by frame), \
         256 ns buckets (upper edges).\n\n\
         Topology: `cli0` (generator, `xvs gen`, core 0) -> `lb0` [director namespace] `lb1` -> `rs0` (sink, \
         `xvs sink`: tc ingress, XDP for the redirect ceiling). xvs workers are pinned to core 1 (2 workers: \
         cores 0 and 1, shared with the generator). On veth the receive work of the director's interface \
         (NAPI, the XDP program, the AF_XDP copy) runs on the generator's core, and the sink's work on the \
         forwarder's core. So the kernel contenders (routing, nftables, XDP redirect) do all their work on \
         the generator's core, which throttles the generator to their pace (hence no drops) and leaves core 1 \
         idle, while xvs's worker has core 1 to itself besides: the kernel figures are one core shared with the \
         generator, xvs's are one core plus the receive work on the generator's core.\n",
        machine(),
        o.runs,
        o.secs,
        LIGHT_PPS
    )?;
    writeln!(s, "## Forwarding rate\n")?;
    writeln!(
        s,
        "| contender | cell | forwarded Mpps | offered Mpps | drop ratio | p50 / p99 us | note |"
    )?;
    writeln!(s, "| --- | --- | ---: | ---: | ---: | ---: | --- |")?;
    for c in &r.cells {
        if c.samples.is_empty() {
            writeln!(s, "| {} | {} | - | - | - | - | {} |", c.contender, c.what, c.note)?;
            continue;
        }
        let lat = if c.what.starts_with("latency") {
            format!(
                "{} / {}",
                fmt_opt(c.med_opt(|s| s.p50_us)),
                fmt_opt(c.med_opt(|s| s.p99_us))
            )
        } else {
            "-".into()
        };
        writeln!(
            s,
            "| {} | {} | {:.3} | {:.3} | {:.1}% | {} | {}{} |",
            c.contender,
            c.what,
            c.med(Sample::fwd_mpps),
            c.med(Sample::offered_mpps),
            c.med(Sample::drop_ratio) * 100.0,
            lat,
            if c.samples.len() < o.runs {
                format!("{} of {} runs ", c.samples.len(), o.runs)
            } else {
                String::new()
            },
            c.note
        )?;
    }
    writeln!(s, "\n![forwarded Mpps per contender](perf.svg)\n")?;
    writeln!(s, "## Connection table\n")?;
    writeln!(
        s,
        "| contender | connections | RSS before fill MiB | RSS after MiB | bytes per connection | est NAT Mpps over 100k of them |"
    )?;
    writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
    for (c, n, b, a, e, m) in &r.tables {
        let per = if *e > 0 {
            (a.saturating_sub(*b) * 1024) as f64 / *e as f64
        } else {
            f64::NAN
        };
        writeln!(
            s,
            "| {c} | {n} (filled: {e}) | {:.0} | {:.0} | {per:.0} | {} |",
            *b as f64 / 1024.0,
            *a as f64 / 1024.0,
            m.map_or("-".into(), |m| format!("{m:.3}"))
        )?;
    }
    if !o.big {
        writeln!(
            s,
            "\n10M connections: not measured in this run (XVS_PERF_10M=0 or quick mode)."
        )?;
    }
    if !r.rounds.is_empty() {
        writeln!(s, "\n## Paired rounds\n")?;
        writeln!(
            s,
            "The ratio targets once more, with the drift of the machine taken out: the bare forwarder, xvs AF_XDP native (NAT, DR) and nftables numgen DNAT each in their own namespaces, measured one after another in every round (the director not being measured is stopped), each ratio taken within its round. Odd rounds run bare, NAT, DR, nftables; even rounds the reverse, so that a drift within a round favours neither side of a ratio. Forwarded Mpps:\n"
        )?;
        writeln!(
            s,
            "| round | bare forwarder | xvs NAT | xvs DR | nftables numgen | NAT / bare | DR / bare | NAT / nftables | DR / nftables |"
        )?;
        writeln!(s, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
        let x = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}x"));
        for (i, q) in r.rounds.iter().enumerate() {
            writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                i + 1,
                fmt3(q.bare),
                fmt3(q.nat),
                fmt3(q.dr),
                fmt3(q.nft),
                x(q.nat_of_bare()),
                x(q.dr_of_bare()),
                x(q.nat_of_nft()),
                x(q.dr_of_nft())
            )?;
        }
    }
    writeln!(s, "\n## Targets\n")?;
    let f = |c: &str, w: &str| find(r, c, w).map(|c| c.med(Sample::fwd_mpps));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    let met = |a: Option<f64>, b: Option<f64>, k: f64| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => {
            if a >= k * b {
                "met"
            } else {
                "not met"
            }
        }
        _ => "not measured",
    };
    let nat = f("xvs af_xdp native", "est NAT");
    let dr = f("xvs af_xdp native", "est DR");
    let nft = omax(
        f("nftables DNAT numgen", "est NAT"),
        f("nftables DNAT jhash", "est NAT"),
    );
    let pk = f("xvs af_packet", "est NAT");
    let nc = f("xvs af_xdp native", "new conn NAT");
    let nftc = omax(
        f("nftables DNAT numgen", "new conn NAT"),
        f("nftables DNAT jhash", "new conn NAT"),
    );
    writeln!(s, "| target | figures | ratio | status |")?;
    writeln!(s, "| --- | --- | ---: | --- |")?;
    writeln!(
        s,
        "| AF_XDP NAT >= 1.5x nftables DNAT (best of numgen/jhash) | {} vs {} Mpps | {} | {} |",
        fmt3(nat),
        fmt3(nft),
        ratio(nat, nft),
        met(nat, nft, 1.5)
    )?;
    writeln!(
        s,
        "| AF_XDP DR >= 1.5x nftables DNAT | {} vs {} Mpps | {} | {} |",
        fmt3(dr),
        fmt3(nft),
        ratio(dr, nft),
        met(dr, nft, 1.5)
    )?;
    writeln!(
        s,
        "| AF_PACKET >= nftables DNAT | {} vs {} Mpps | {} | {} |",
        fmt3(pk),
        fmt3(nft),
        ratio(pk, nft),
        met(pk, nft, 1.0)
    )?;
    writeln!(
        s,
        "| new conn/s >= 1.5x nftables | {} vs {} M/s | {} | {} |",
        fmt3(nc),
        fmt3(nftc),
        ratio(nc, nftc),
        met(nc, nftc, 1.5)
    )?;
    for mode in ["native", "generic"] {
        let xvs = format!("xvs af_xdp {mode}");
        let worst = match (f(&xvs, "est NAT"), f(&xvs, "est DR")) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let bare = f(&bare_name(mode), "est forward");
        writeln!(
            s,
            "| AF_XDP {mode} NAT/DR >= 90% of a bare AF_XDP {mode} forwarder (same I/O, no data plane) | {} (worse of NAT, DR) vs {} Mpps | {} | {} |",
            fmt3(worst),
            fmt3(bare),
            ratio(worst, bare),
            met(worst, bare, 0.9)
        )?;
    }
    type RoundRatio = fn(&Round) -> Option<f64>;
    // NAT and DR are judged each by the median of its own per-round ratios: the median of a
    // per-round minimum of the two would be biased low by the noise alone.
    let paired: [(&str, RoundRatio, f64); 4] = [
        ("AF_XDP NAT >= 1.5x nftables numgen DNAT", Round::nat_of_nft, 1.5),
        ("AF_XDP DR >= 1.5x nftables numgen DNAT", Round::dr_of_nft, 1.5),
        ("AF_XDP NAT >= 90% of the bare forwarder", Round::nat_of_bare, 0.9),
        ("AF_XDP DR >= 90% of the bare forwarder", Round::dr_of_bare, 0.9),
    ];
    for (what, f, k) in paired {
        let v: Vec<f64> = r.rounds.iter().filter_map(f).collect();
        if let Some(m) = median(&v) {
            let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            writeln!(
                s,
                "| {what}, paired rounds | median of {} per-round ratios (from {lo:.2}x to {hi:.2}x) | {m:.2}x | {} |",
                v.len(),
                if m >= k { "met" } else { "not met" }
            )?;
        }
    }
    for (_, n, b, a, e, _) in &r.tables {
        if *n == 10_000_000 && *e > 0 {
            let per = (a.saturating_sub(*b) * 1024) as f64 / *e as f64;
            writeln!(
                s,
                "| <= 160 B/conn at 10M | {per:.0} B/conn | - | {} |",
                if per <= 160.0 { "met" } else { "not met" }
            )?;
        }
    }
    if !r.rounds.is_empty() {
        writeln!(
            s,
            "\nWhere a ratio from the separate cells and the same ratio from the paired rounds disagree, trust the paired rounds: their contenders were measured in turn, seconds apart, rather than minutes apart."
        )?;
    }
    writeln!(s, "\n## Director counters at exit\n")?;
    for n in &r.notes {
        writeln!(s, "- `{n}`")?;
    }
    Ok(s)
}

/// The larger of two optional figures.
fn omax(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn fmt3(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

/// Grouped bars: one group per cell kind, one bar per contender, forwarded Mpps.
fn svg(r: &Report) -> String {
    let cells: Vec<&Cell> = r
        .cells
        .iter()
        .filter(|c| !c.samples.is_empty() && !c.what.starts_with("latency"))
        .collect();
    let mut groups: BTreeMap<String, Vec<&Cell>> = BTreeMap::new();
    for c in &cells {
        let g = c.what.split(',').next().unwrap_or("").to_string();
        groups.entry(g).or_default().push(c);
    }
    let contenders: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for c in &cells {
            if !v.contains(&c.contender) {
                v.push(c.contender.clone());
            }
        }
        v
    };
    let colors = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
    ];
    let max = cells.iter().map(|c| c.med(Sample::fwd_mpps)).fold(0.1f64, f64::max) * 1.1;
    let (bw, gap, h, top, left): (f64, f64, f64, f64, f64) = (14.0, 24.0, 300.0, 30.0, 50.0);
    let mut x = left + gap;
    let mut bars = String::new();
    let mut labels = String::new();
    for (g, cs) in &groups {
        let start = x;
        for c in cs {
            let i = contenders.iter().position(|n| *n == c.contender).unwrap_or(0);
            let v = c.med(Sample::fwd_mpps);
            let bh = v / max * h;
            let _ = writeln!(
                bars,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw}\" height=\"{bh:.1}\" fill=\"{}\"><title>{} {}: {v:.3} Mpps</title></rect>",
                top + h - bh,
                colors[i % colors.len()],
                c.contender,
                c.what
            );
            x += bw;
        }
        let _ = writeln!(
            labels,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" transform=\"rotate(-35 {:.1} {:.1})\">{g}</text>",
            (start + x) / 2.0,
            top + h + 14.0,
            (start + x) / 2.0,
            top + h + 14.0
        );
        x += gap;
    }
    let width = x.max(400.0) + 260.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" font-family=\"sans-serif\">\n\
         <text x=\"{left}\" y=\"18\" font-size=\"13\">Forwarded Mpps (median), 64-byte frames (IPv6: 84); new conn: million SYN/s</text>\n",
        top + h + 90.0
    );
    for k in 0..=5 {
        let v = max * k as f64 / 5.0;
        let y = top + h - h * k as f64 / 5.0;
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{x:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{v:.2}</text>",
            left - 4.0,
            y + 3.0
        );
    }
    s.push_str(&bars);
    s.push_str(&labels);
    for (i, c) in contenders.iter().enumerate() {
        let y = top + 14.0 * i as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{c}</text>",
            x + 20.0,
            colors[i % colors.len()],
            x + 34.0,
            y + 9.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("perf: needs root (namespaces, BPF); skipped");
        return;
    }
    let env = |k: &str| std::env::var(k).ok();
    let quick = env("XVS_PERF_QUICK").is_some_and(|v| v == "1");
    let o = Opts {
        secs: env("XVS_PERF_SECS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 1.0 } else { 3.0 }),
        runs: env("XVS_PERF_RUNS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 1 } else { 3 })
            .max(1),
        big: !quick && env("XVS_PERF_10M").is_none_or(|v| v != "0"),
        only: env("XVS_PERF_ONLY"),
        quick,
    };
    let started = Instant::now();
    let mut rep = Report::default();
    type Step = Box<dyn Fn(&Opts, &mut Report, usize) -> Res<()>>;
    let steps: Vec<(&str, Step)> = vec![
        ("xvs gen alone", Box::new(gen_contender)),
        ("XDP redirect", Box::new(redirect_contender)),
        ("kernel routing", Box::new(routing_contender)),
        (
            "nftables numgen",
            Box::new(|o: &Opts, r: &mut Report, i| nft_contender(o, r, i, "numgen")),
        ),
        (
            "nftables jhash",
            Box::new(|o: &Opts, r: &mut Report, i| nft_contender(o, r, i, "jhash")),
        ),
        (
            "xvs af_xdp native",
            Box::new(|o: &Opts, r: &mut Report, i| xvs_contender(o, r, i, "xvs af_xdp native", "af_xdp", "native", 1)),
        ),
        (
            "xvs af_xdp native 2 workers",
            Box::new(|o: &Opts, r: &mut Report, i| {
                xvs_contender(o, r, i, "xvs af_xdp native, 2 workers", "af_xdp", "native", 2)
            }),
        ),
        (
            "xvs af_xdp generic",
            Box::new(|o: &Opts, r: &mut Report, i| {
                xvs_contender(o, r, i, "xvs af_xdp generic", "af_xdp", "generic", 1)
            }),
        ),
        (
            "xvs af_packet",
            Box::new(|o: &Opts, r: &mut Report, i| xvs_contender(o, r, i, "xvs af_packet", "af_packet", "auto", 1)),
        ),
        (
            "bare AF_XDP native forwarder",
            Box::new(|o: &Opts, r: &mut Report, i| bare_contender(o, r, i, "native")),
        ),
        (
            "bare AF_XDP generic forwarder",
            Box::new(|o: &Opts, r: &mut Report, i| bare_contender(o, r, i, "generic")),
        ),
        ("xvs table", Box::new(table_contender)),
        ("paired rounds", Box::new(paired_contender)),
    ];
    for gone in netns::remove_orphans("xp") {
        eprintln!("perf: removed {gone}, left by an earlier run that was killed");
    }
    for (i, (name, step)) in steps.iter().enumerate() {
        if o.only
            .as_deref()
            .is_some_and(|x| !x.split(',').any(|w| name.contains(w)))
        {
            continue;
        }
        eprintln!("perf: == {name} ({:.0} s so far)", started.elapsed().as_secs_f64());
        if let Err(e) = step(&o, &mut rep, i) {
            eprintln!("perf: {name}: {e}");
            rep.notes.push(format!("{name}: failed: {e}"));
        }
    }
    match write_results(&o, &rep) {
        Ok(text) => {
            print!("{text}");
            if o.only.is_none() && !o.quick {
                let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
                let _ = std::fs::write(dir.join("RESULTS.md"), &text);
                let _ = std::fs::write(dir.join("perf.svg"), svg(&rep));
                eprintln!("perf: wrote bench/RESULTS.md and bench/perf.svg");
            }
        }
        Err(e) => eprintln!("perf: {e}"),
    }
    eprintln!("perf: done in {:.0} s", started.elapsed().as_secs_f64());
}
