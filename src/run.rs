//! `xvs run`: the director. The control thread (this one) owns the configuration, builds service
//! table snapshots from it and from the kernel's interfaces, routes and neighbours, publishes them
//! to the workers, answers signals, and reports counters; the workers forward.
//!
//! Signals: SIGINT/SIGTERM stop cleanly (workers joined, XDP/tc programs detached); SIGHUP re-reads
//! the configuration file and swaps the service table without touching connections (a bad file is
//! refused and the running configuration stays).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::check::HealthChecks;
use crate::config::{self, Config, IoMode, Workers as WorkerSpec, XdpMode as CfgXdpMode};
use crate::conn::ConnTable;
use crate::ctl;
use crate::io::netlink::{self, NUD_VALID, Rtnl};
use crate::io::{IoConfig, IoCounters, IoKind, Process, Workers, XdpMode};
use crate::pipeline::{Frame, Pipeline, Published, Verdict};
use crate::service::{DestIds, Port, ServiceTable};
use crate::stats::{DestStats, Stats};
use crate::types::{Addr, DestCounters, Mac, Prefix};

/// Why the director could not start. The message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not root.
    #[error("xvs run needs root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW, CAP_SYS_ADMIN): run it with sudo")]
    NotRoot,
    /// The configuration was refused.
    #[error("{0}")]
    Config(config::ConfigErrors),
    /// An interface of the configuration does not exist here.
    #[error("interface '{0}' (from [[interface]]) does not exist in this network namespace")]
    NoInterface(String),
    /// The configuration has no interface.
    #[error("the configuration declares no [[interface]]: xvs needs to know where to receive and send")]
    NoPorts,
    #[error("netlink: {0}")]
    Netlink(crate::io::IoError),
    #[error("packet I/O: {0}")]
    Io(crate::io::IoError),
    #[error("signals: {0}")]
    Signal(std::io::Error),
    #[error("VRRP: {0}")]
    Vrrp(String),
}

/// VRRP runs on a thread of its own, as keepalived runs it in a process of its own: its timers
/// (10 ms adverts) must not wait behind health checks, netlink dumps or reloads.
struct VrrpThread {
    handle: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    events: std::sync::mpsc::Receiver<crate::vrrp::Event>,
    /// Every address some instance manages: services on them are served only while it is master.
    managed: HashSet<IpAddr>,
    /// Addresses of the instances that are master now.
    masters: HashSet<IpAddr>,
    /// Every instance's status, as of the VRRP thread's last loop.
    status: Arc<Mutex<Vec<crate::vrrp::InstanceStatus>>>,
    /// Mastership changes taken, to be logged once the snapshot that follows them is published.
    log: Vec<String>,
}

impl VrrpThread {
    fn start(cfg: &Config) -> Result<Option<VrrpThread>, RunError> {
        if cfg.vrrp.instances.is_empty() {
            return Ok(None);
        }
        let managed = cfg
            .vrrp
            .instances
            .iter()
            .flat_map(|i| i.vips.iter().map(|p| p.addr))
            .collect();
        let (ev_tx, events) = std::sync::mpsc::channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(Vec::new()));
        let (c, st, shared) = (cfg.clone(), stop.clone(), status.clone());
        let handle = std::thread::Builder::new()
            .name("vrrp".into())
            .spawn(move || {
                let mut engine = match crate::vrrp::Engine::new(&c) {
                    Ok(e) => {
                        let _ = ready_tx.send(Ok(()));
                        e
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                while !st.load(Ordering::Relaxed) {
                    for ev in engine.poll(Duration::from_millis(20)) {
                        let _ = ev_tx.send(ev);
                    }
                    if let Ok(mut s) = shared.lock() {
                        *s = engine.status();
                    }
                }
                // Priority 0 so that a backup takes over at once, VIPs removed, notify_stop.
                for ev in engine.shutdown() {
                    let _ = ev_tx.send(ev);
                }
            })
            .map_err(|e| RunError::Vrrp(e.to_string()))?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Some(VrrpThread {
                handle: Some(handle),
                stop,
                events,
                managed,
                masters: HashSet::new(),
                status,
                log: Vec::new(),
            })),
            Ok(Err(e)) => Err(RunError::Vrrp(e)),
            Err(_) => Err(RunError::Vrrp("the VRRP thread ended at start".into())),
        }
    }

    /// Takes the mastership changes that arrived; true if the served VIPs changed.
    fn follow(&mut self) -> bool {
        let mut changed = false;
        while let Ok(ev) = self.events.try_recv() {
            use crate::vrrp::Event;
            let (what, instance, vips, master) = match ev {
                Event::Master { instance, vips } => ("MASTER", instance, vips, true),
                Event::Backup { instance, vips } => ("BACKUP", instance, vips, false),
                Event::Fault { instance, vips } => ("FAULT", instance, vips, false),
                Event::Stopped { instance, vips } => ("STOP", instance, vips, false),
            };
            let list: Vec<String> = vips.iter().map(|v| v.to_string()).collect();
            self.log.push(format!(
                "vrrp: {instance} is {what}: {} the services on {}",
                if master { "serving" } else { "not serving" },
                list.join(", ")
            ));
            for v in vips {
                changed |= if master {
                    self.masters.insert(v)
                } else {
                    self.masters.remove(&v)
                };
            }
        }
        changed
    }

    /// The configuration without the services whose VIP belongs to an instance that is not master.
    fn served(&self, mut cfg: Config) -> Config {
        cfg.services
            .retain(|s| !self.managed.contains(&s.vip) || self.masters.contains(&s.vip));
        cfg
    }

    /// Every instance's status (none without VRRP).
    fn status_of(v: Option<&VrrpThread>) -> Vec<crate::vrrp::InstanceStatus> {
        v.and_then(|v| v.status.lock().ok().map(|s| s.clone()))
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.follow();
        for line in self.log.drain(..) {
            eprintln!("xvs: {line}");
        }
    }
}

impl Drop for VrrpThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How often the rates of `xvs ctl --rate` are estimated (IPVS's estimator also uses 2 s).
const RATE_EVERY: Duration = Duration::from_secs(2);
/// Most connections `xvs ctl -c` lists.
const MAX_LISTED_CONNS: usize = 100_000;

fn minus(a: &DestStats, b: &DestStats) -> DestStats {
    DestStats {
        conns: a.conns.saturating_sub(b.conns),
        pkts_in: a.pkts_in.saturating_sub(b.pkts_in),
        pkts_out: a.pkts_out.saturating_sub(b.pkts_out),
        bytes_in: a.bytes_in.saturating_sub(b.bytes_in),
        bytes_out: a.bytes_out.saturating_sub(b.bytes_out),
    }
}

/// The running table as `xvs ctl` and the metrics show it: the published snapshot's services and
/// real servers, with connection counts and (since the last `-Z`) traffic and rates.
fn rows(
    snap: &ServiceTable,
    counters: &DestCounters,
    total: &Stats,
    zero: &Stats,
    rates: &std::collections::HashMap<u32, ctl::Rates>,
) -> Vec<ctl::SvcRow> {
    let get = |s: &Stats, id: u32| s.dests.get(id as usize).copied().unwrap_or_default();
    snap.services
        .iter()
        .map(|s| ctl::SvcRow {
            name: s.name.clone(),
            proto: s.key.proto,
            vip: s.key.addr.to_ip(),
            port: s.key.port,
            sched: s.sched_kind.name(),
            method: s.method,
            persistent: s.persistence.map(|(t, len)| (t.as_secs(), len)),
            dests: s
                .dests
                .iter()
                .map(|d| ctl::DestRow {
                    addr: d.addr.to_ip(),
                    port: d.port,
                    weight: d.weight,
                    active: u64::from(counters.get(d.id).active()),
                    inactive: u64::from(counters.get(d.id).inactive.load(Ordering::Relaxed)),
                    stats: minus(&get(total, d.id), &get(zero, d.id)),
                    rates: rates.get(&d.id).copied().unwrap_or_default(),
                })
                .collect(),
        })
        .collect()
}

/// Asks the kernel to resolve every real server of `snap` whose MAC is not known yet (servers added
/// by a reload or by `xvs ctl`), so that their first packets are not dropped for want of one.
fn resolve_missing(snap: &ServiceTable) {
    for d in snap.services.iter().flat_map(|s| s.dests.iter()) {
        if snap.hop(d.addr) == Err(crate::stats::DropReason::NoNeighbour) {
            let _ = netlink::resolve(d.addr.to_ip());
        }
    }
}

/// Tells systemd (`Type=notify`) how the director is doing: `READY=1`, `RELOADING=1`,
/// `STOPPING=1`. Nothing happens when not started by systemd.
pub fn sd_notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let _ = sd_notify_to(std::path::Path::new(&path), state);
    }
}

/// Sends `state` to the notification socket at `path` (a leading `@` is the abstract namespace).
pub fn sd_notify_to(path: &Path, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_os_str().as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::from_abstract_name(name)?,
        None => UnixAddr::from_pathname(path)?,
    };
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// The I/O counters of all workers, summed.
fn io_total(workers: &Workers) -> IoCounters {
    let mut io = IoCounters::default();
    workers.counters().iter().for_each(|c| io.merge(c));
    io
}

/// Hands a snapshot to the workers and points the packet filter at what it serves; real servers it
/// adds have their MACs resolved at once.
fn publish(snap: ServiceTable, published: &Published, workers: &mut Workers) {
    resolve_missing(&snap);
    let (s, l, n, o) = snap.filter();
    published.store(snap);
    if let Err(e) = workers.set_filter(&s, &l, &n, &o) {
        eprintln!("xvs: cannot update the packet filter: {e}");
    }
}

/// How often the control thread looks at the kernel's neighbours and routes.
const NEIGH_REFRESH: Duration = Duration::from_secs(1);
/// How often workers publish their counters to the control thread.
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// What a worker shares with the control thread: counters and next hops to resolve.
#[derive(Default)]
struct Report {
    stats: Stats,
    unresolved: Vec<Addr>,
}

/// A worker's data plane plus its reporting.
struct Worker {
    pipeline: Pipeline,
    report: Arc<Mutex<Report>>,
    /// When the counters are next handed to the control thread.
    next_report: Instant,
}

impl Process for Worker {
    #[inline]
    fn process(&mut self, frame: &mut Frame<'_>, in_port: u16, now: Instant) -> Verdict {
        self.pipeline.process(frame, in_port, now)
    }

    #[inline]
    fn look_ahead(&mut self, frame: &[u8], now: Instant) {
        self.pipeline.look_ahead(frame, now);
    }

    fn between_batches(&mut self, now: Instant) {
        self.pipeline.between_batches(now);
        // An `Instant` compared, not a `duration_since` taken: this runs every loop.
        if now >= self.next_report {
            self.next_report = now + REPORT_EVERY;
            if let Ok(mut r) = self.report.lock() {
                r.stats.clone_from(self.pipeline.counters());
                r.unresolved.append(&mut self.pipeline.unresolved);
            }
        }
    }
}

impl Drop for Worker {
    /// The last counters reach the control thread when the worker stops.
    fn drop(&mut self) {
        if let Ok(mut r) = self.report.lock() {
            r.stats.clone_from(self.pipeline.counters());
        }
    }
}

/// The kernel's view of our ports: what the snapshot needs besides the configuration.
#[derive(Default, PartialEq)]
struct KernelView {
    ports: Vec<Port>,
    routes: Vec<(Prefix, u16, Option<IpAddr>)>,
    neigh: Vec<(u16, Addr, Mac)>,
}

impl KernelView {
    /// A service-table snapshot of `cfg` over these ports, routes and neighbours.
    fn snapshot(&self, cfg: &Config, ids: &mut DestIds, generation: u64) -> ServiceTable {
        ServiceTable::build(cfg, self.ports.clone(), &self.routes, &self.neigh, ids, generation)
    }

    /// The snapshot of `cfg` as health checks and VRRP make it: services of VIPs this director is
    /// not master for are left out; the return traffic of servers health checks took out is still
    /// recognised.
    fn healthy_snapshot(
        &self,
        cfg: &Config,
        health: &HealthChecks,
        vrrp: Option<&VrrpThread>,
        ids: &mut DestIds,
        generation: u64,
    ) -> ServiceTable {
        let mut eff = health.effective(cfg);
        if let Some(v) = vrrp {
            eff = v.served(eff);
        }
        let mut snap = self.snapshot(&eff, ids, generation);
        snap.keep_return_path(cfg);
        snap
    }
}

fn kernel_view(rtnl: &mut Rtnl, cfg: &Config) -> Result<KernelView, RunError> {
    let links = rtnl.links().map_err(RunError::Netlink)?;
    let addrs = rtnl.addrs().map_err(RunError::Netlink)?;
    let mut ifindex = Vec::new();
    let mut ports = Vec::new();
    for ifc in &cfg.interfaces {
        let link = links
            .iter()
            .find(|l| l.name == ifc.name)
            .ok_or_else(|| RunError::NoInterface(ifc.name.clone()))?;
        ifindex.push(link.ifindex);
        let mut prefixes = ifc.addrs.clone();
        for a in addrs.iter().filter(|a| a.ifindex == link.ifindex) {
            let p = Prefix {
                addr: a.addr,
                len: a.prefix_len,
            };
            if !prefixes.contains(&p) {
                prefixes.push(p);
            }
        }
        ports.push(Port {
            name: ifc.name.clone(),
            mac: ifc.mac.or(link.mac).unwrap_or_default(),
            addrs: prefixes,
            mtu: ifc.mtu.unwrap_or(link.mtu.min(u32::from(u16::MAX)) as u16),
        });
    }
    let port_of = |idx: u32| ifindex.iter().position(|&i| i == idx).map(|p| p as u16);
    let mut routes: Vec<_> = rtnl
        .routes()
        .map_err(RunError::Netlink)?
        .into_iter()
        .filter_map(|r| Some((r.dst, port_of(r.oif?)?, r.gateway)))
        .collect();
    routes.sort_by_key(|r| (r.0.addr, r.0.len, r.1));
    let mut neigh: Vec<_> = rtnl
        .neighbours()
        .map_err(RunError::Netlink)?
        .into_iter()
        .filter(|n| n.state & NUD_VALID != 0)
        .filter_map(|n| Some((port_of(n.ifindex)?, Addr::from(n.addr), n.mac?)))
        .collect();
    neigh.sort_by_key(|n| (n.0, n.1));
    Ok(KernelView { ports, routes, neigh })
}

fn io_config(cfg: &Config) -> IoConfig {
    let (workers, cores) = match &cfg.global.workers {
        WorkerSpec::Count(n) => (*n, None),
        WorkerSpec::Cores(c) => (c.len(), Some(c.clone())),
    };
    IoConfig {
        interfaces: cfg.interfaces.iter().map(|i| i.name.clone()).collect(),
        workers,
        cores,
        io: match cfg.global.io {
            IoMode::Auto => IoKind::Auto,
            IoMode::AfXdp => IoKind::AfXdp,
            IoMode::AfPacket => IoKind::AfPacket,
        },
        xdp_mode: match cfg.global.xdp_mode {
            CfgXdpMode::Auto => XdpMode::Auto,
            CfgXdpMode::Native => XdpMode::Native,
            CfgXdpMode::Generic => XdpMode::Generic,
        },
        batch: cfg.global.batch_size,
        ..IoConfig::default()
    }
}

/// Has the kernel resolve every real server's next hop before the workers start, so that the
/// first packets of the first connections are not dropped for want of a MAC (waits up to 2 s).
fn warm_neighbours(rtnl: &mut Rtnl, cfg: &Config, view: &mut KernelView) {
    let mut ids = DestIds::default();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let snap = view.snapshot(cfg, &mut ids, 0);
        let missing: Vec<Addr> = snap
            .services
            .iter()
            .flat_map(|s| s.dests.iter().map(|d| d.addr))
            .filter(|&a| snap.hop(a) == Err(crate::stats::DropReason::NoNeighbour))
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            if !missing.is_empty() {
                eprintln!(
                    "xvs: no MAC yet for {} real server(s), e.g. {}; they are retried",
                    missing.len(),
                    missing[0]
                );
            }
            return;
        }
        for a in &missing {
            let _ = netlink::resolve(a.to_ip());
        }
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(v) = kernel_view(rtnl, cfg) {
            *view = v;
        }
    }
}

/// Counters of all workers, summed, as printed by `--stats` and at exit.
pub fn format_counters(stats: &Stats, io: &IoCounters, conns: usize) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "rx {} forwarded {} replied {} to-kernel {} dropped {} | conns created {} in table {} flow-cache hits {} | io rx {} tx {} tx_full {} loops {}",
        stats.rx,
        stats.forwarded,
        stats.replied,
        stats.passed,
        stats.dropped_total(),
        stats.conns,
        conns,
        stats.flow_hits,
        io.rx,
        io.tx,
        io.tx_full,
        io.loops
    );
    for (r, n) in stats.drops() {
        let _ = write!(s, " {}={n}", r.label());
    }
    // What the kernel dropped before xvs saw it (AF_XDP and AF_PACKET ring statistics).
    for (what, n) in [
        ("kernel_rx_ring_full", io.rx_ring_full),
        ("kernel_fill_ring_empty", io.fill_ring_empty),
        ("kernel_rx_dropped", io.rx_dropped),
    ] {
        if n > 0 {
            let _ = write!(s, " {what}={n}");
        }
    }
    s
}

/// Options of `xvs run`.
pub struct RunOptions {
    pub config: Option<PathBuf>,
    /// Print the counters this often.
    pub stats_every: Option<Duration>,
    /// Benchmark baseline: the same packet I/O (workers, rings, filter) but no data plane; every
    /// frame the filter steals leaves by the other interface with this destination MAC. It tells
    /// what xvs's forwarding costs over its I/O alone.
    pub bare_forward: Option<Mac>,
}

/// The bare forwarder of [`RunOptions::bare_forward`]: one MAC write per frame.
struct BareForward {
    dst: Mac,
}

impl Process for BareForward {
    #[inline]
    fn process(&mut self, frame: &mut Frame<'_>, in_port: u16, _now: Instant) -> Verdict {
        let b = frame.bytes_mut();
        if b.len() < 14 {
            return Verdict::Drop(crate::stats::DropReason::EthMalformed);
        }
        b[..6].copy_from_slice(&self.dst.0);
        Verdict::Forward {
            port: u16::from(in_port == 0),
        }
    }

    fn between_batches(&mut self, _now: Instant) {}
}

/// Runs the bare forwarder until SIGINT/SIGTERM; prints the I/O counters at exit.
fn run_bare(cfg: &Config, dst: Mac) -> Result<(), RunError> {
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, term.clone()).map_err(RunError::Signal)?;
    }
    let mut rtnl = Rtnl::open().map_err(RunError::Netlink)?;
    let view = kernel_view(&mut rtnl, cfg)?;
    let snap = view.snapshot(cfg, &mut DestIds::default(), 0);
    let (s, l, n, o) = snap.filter();
    let iocfg = io_config(cfg);
    let workers = Workers::start_filtered(&iocfg, (&s, &l, &n, &o), |_| BareForward { dst }).map_err(RunError::Io)?;
    eprintln!("xvs: bare forwarder running (no data plane); SIGINT/SIGTERM stop");
    while !term.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let io = {
        let mut io = IoCounters::default();
        workers.stop().iter().for_each(|c| io.merge(c));
        io
    };
    eprintln!("xvs: stopped: {}", format_counters(&Stats::default(), &io, 0));
    Ok(())
}

/// Runs the director until SIGINT or SIGTERM.
pub fn run(opts: &RunOptions) -> Result<(), RunError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(RunError::NotRoot);
    }
    let load = |p: Option<&Path>| match p {
        Some(p) => config::load(p).map_err(RunError::Config),
        None => Ok(config::default_config()),
    };
    let mut cfg = load(opts.config.as_deref())?;
    // The running configuration as a TOML document too: `xvs ctl` edits it and `save` prints it.
    let document = |p: Option<&Path>| -> toml::Table {
        let text = match p {
            Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
            None => config::DEFAULT.to_string(),
        };
        toml::from_str(&text).unwrap_or_default()
    };
    let mut doc = document(opts.config.as_deref());
    if cfg.interfaces.is_empty() {
        return Err(RunError::NoPorts);
    }
    if let Some(dst) = opts.bare_forward {
        return run_bare(&cfg, dst);
    }
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, term.clone()).map_err(RunError::Signal)?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()).map_err(RunError::Signal)?;

    let mut rtnl = Rtnl::open().map_err(RunError::Netlink)?;
    let mut view = kernel_view(&mut rtnl, &cfg)?;
    let mut health = HealthChecks::new(&cfg, Instant::now());
    warm_neighbours(&mut rtnl, &health.effective(&cfg), &mut view);
    let mut vrrp = VrrpThread::start(&cfg)?;
    let mut ids = DestIds::default();
    let mut generation = 1;
    let snap = view.healthy_snapshot(&cfg, &health, vrrp.as_ref(), &mut ids, generation);
    let (svcs, laddrs, nat, locals) = snap.filter();
    let published = Arc::new(Published::new(snap));
    let counters = Arc::new(DestCounters::default());
    let table = Arc::new(ConnTable::new(cfg.conn.table(), counters.clone()));

    let iocfg = io_config(&cfg);
    let mut reports = Vec::new();
    let mut workers = Workers::start_filtered(&iocfg, (&svcs, &laddrs, &nat, &locals), |_| {
        let report = Arc::new(Mutex::new(Report::default()));
        reports.push(report.clone());
        Worker {
            pipeline: Pipeline::new(published.clone(), table.clone(), counters.clone()),
            report,
            next_report: Instant::now(),
        }
    })
    .map_err(RunError::Io)?;
    let kind = match workers.kind() {
        IoKind::AfXdp => "AF_XDP",
        _ => "AF_PACKET",
    };
    let names: Vec<&str> = cfg.interfaces.iter().map(|i| i.name.as_str()).collect();
    eprintln!(
        "xvs: running: {} services, {} worker(s) on {kind}, interfaces {}, {} health checkers, {} VRRP instances; SIGHUP reloads, SIGINT/SIGTERM stop",
        cfg.services.len(),
        iocfg.workers,
        names.join(", "),
        health.len(),
        cfg.vrrp.instances.len()
    );
    sd_notify("READY=1");

    let collect = |reports: &[Arc<Mutex<Report>>], unresolved: &mut HashSet<Addr>| {
        let mut total = Stats::default();
        for r in reports {
            if let Ok(mut r) = r.lock() {
                total.merge(&r.stats);
                unresolved.extend(r.unresolved.drain(..));
            }
        }
        total
    };
    let admin = match ctl::AdminSocket::bind(&cfg.global.admin_socket) {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!(
                "xvs: no admin socket, xvs ctl will not reach this director: {}: {e}",
                cfg.global.admin_socket.display()
            );
            None
        }
    };
    let metrics = match cfg.global.metrics.map(ctl::MetricsServer::bind) {
        Some(Ok(m)) => {
            if let Ok(a) = m.local_addr() {
                eprintln!("xvs: metrics at http://{a}/metrics");
            }
            Some(m)
        }
        Some(Err(e)) => {
            eprintln!("xvs: cannot serve metrics: {e}");
            None
        }
        None => None,
    };
    let mut zero = Stats::default();
    let mut last_rate = (Instant::now(), Stats::default());
    let mut rates: std::collections::HashMap<u32, ctl::Rates> = std::collections::HashMap::new();
    let mut last_neigh = Instant::now();
    let mut last_stats = Instant::now();
    let mut unresolved = HashSet::new();
    while !term.load(Ordering::Relaxed) {
        // The health checkers' sockets and programs are this loop's sleep.
        // With VRRP, mastership changes are looked at every 10 ms.
        let wait = Duration::from_millis(if vrrp.is_some() { 10 } else { 50 });
        let mut rebuild = health.poll(&cfg, wait);
        if let Some(v) = vrrp.as_mut() {
            rebuild |= v.follow();
        }
        if hup.swap(false, Ordering::Relaxed) {
            sd_notify("RELOADING=1");
            match load(opts.config.as_deref()) {
                Err(e) => {
                    eprintln!("xvs: reload refused, the running configuration stays:\n{e}");
                    sd_notify("READY=1");
                }
                Ok(new)
                    if new
                        .interfaces
                        .iter()
                        .map(|i| &i.name)
                        .ne(cfg.interfaces.iter().map(|i| &i.name)) =>
                {
                    eprintln!("xvs: reload refused: the interfaces changed, which needs a restart");
                    sd_notify("READY=1");
                }
                Ok(new) => {
                    if new.conn.max_conns != cfg.conn.max_conns || new.conn.shards != cfg.conn.shards {
                        eprintln!("xvs: note: [conn] max_conns and shards take effect at the next start");
                    }
                    if new.vrrp != cfg.vrrp {
                        eprintln!("xvs: note: VRRP changes take effect at the next start");
                    }
                    cfg = new;
                    doc = document(opts.config.as_deref());
                    health.reconfigure(&cfg, Instant::now());
                    rebuild = true;
                    eprintln!("xvs: reloaded: {} services", cfg.services.len());
                    sd_notify("READY=1");
                }
            }
        }
        collect(&reports, &mut unresolved);
        let mut refresh_now = false;
        for a in unresolved.drain() {
            eprintln!("xvs: no MAC for next hop {a}: asking the kernel to resolve it");
            let _ = netlink::resolve(a.to_ip());
            // Look again soon: the kernel usually answers within milliseconds.
            refresh_now = true;
        }
        if refresh_now {
            std::thread::sleep(Duration::from_millis(20));
        }
        if refresh_now || last_neigh.elapsed() >= NEIGH_REFRESH {
            last_neigh = Instant::now();
            match kernel_view(&mut rtnl, &cfg) {
                Ok(v) if v != view => {
                    view = v;
                    rebuild = true;
                }
                Ok(_) => {}
                Err(e) => eprintln!("xvs: cannot read the kernel's tables: {e}"),
            }
        }
        if rebuild {
            generation += 1;
            let snap = view.healthy_snapshot(&cfg, &health, vrrp.as_ref(), &mut ids, generation);
            publish(snap, &published, &mut workers);
        }
        // Transitions are logged once they are in effect: whoever reads the log and then sends
        // traffic sees the new backend set.
        for line in health.log.drain(..) {
            eprintln!("xvs: {line}");
        }
        for line in vrrp
            .as_mut()
            .map(|v| v.log.drain(..).collect::<Vec<_>>())
            .unwrap_or_default()
        {
            eprintln!("xvs: {line}");
        }
        if let Some(every) = opts.stats_every
            && last_stats.elapsed() >= every
        {
            last_stats = Instant::now();
            let stats = collect(&reports, &mut unresolved);
            eprintln!("xvs: {}", format_counters(&stats, &io_total(&workers), table.len()));
        }
        if last_rate.0.elapsed() >= RATE_EVERY {
            let total = collect(&reports, &mut unresolved);
            let secs = last_rate.0.elapsed().as_secs_f64();
            rates = total
                .dests
                .iter()
                .enumerate()
                .map(|(id, d)| {
                    let old = last_rate.1.dests.get(id).copied().unwrap_or_default();
                    (id as u32, ctl::Rates::between(&old, d, secs))
                })
                .collect();
            last_rate = (Instant::now(), total);
        }
        // At most 16 clients a round, so that the loop's other duties never starve.
        for _ in 0..16 {
            let Some((args, pending)) = admin.as_ref().and_then(|a| a.next()) else {
                break;
            };
            let mut edited = None;
            let reply = 'answer: {
                let total = collect(&reports, &mut unresolved);
                let snap = published.load_full();
                let rows = rows(&snap, &counters, &total, &zero, &rates);
                let mut args: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != "-n").collect();
                if args.first() == Some(&"-L") || args.first() == Some(&"-l") {
                    args.remove(0);
                }
                match args.as_slice() {
                    [] => ctl::Reply::ok(ctl::list(&rows, table.capacity(), ctl::Listing::Table)),
                    ["--stats"] => ctl::Reply::ok(ctl::list(&rows, table.capacity(), ctl::Listing::Stats)),
                    ["--rate"] => ctl::Reply::ok(ctl::list(&rows, table.capacity(), ctl::Listing::Rate)),
                    ["-c"] => {
                        let list = table.entries(MAX_LISTED_CONNS + 1, Instant::now());
                        let more = list.len() > MAX_LISTED_CONNS;
                        ctl::Reply::ok(ctl::connections(&list[..list.len().min(MAX_LISTED_CONNS)], more))
                    }
                    ["-Z"] => {
                        zero = total;
                        ctl::Reply::ok(String::new())
                    }
                    ["health"] => ctl::Reply::ok(ctl::health(&health.status())),
                    ["counters"] => {
                        let mut text = format_counters(&total, &io_total(&workers), table.len()).replace(" | ", "\n");
                        text.push('\n');
                        ctl::Reply::ok(text)
                    }
                    ["vrrp"] => ctl::Reply::ok(ctl::vrrp(&VrrpThread::status_of(vrrp.as_ref()))),
                    ["reload"] => {
                        hup.store(true, Ordering::Relaxed);
                        ctl::Reply::ok("reload requested: see the director's log for the result\n".into())
                    }
                    ["save"] => match toml::to_string(&doc) {
                        Ok(t) => ctl::Reply::ok(t),
                        Err(e) => ctl::Reply::err(1, format!("cannot write the configuration: {e}\n")),
                    },
                    [op, ..] if ctl::EDITS.contains(op) => {
                        // The same validation as a file; nothing changes unless all of it passes.
                        let mut new_doc = doc.clone();
                        let done = match ctl::edit(&mut new_doc, &args) {
                            Ok(d) => d,
                            Err(e) => break 'answer ctl::Reply::err(1, format!("xvs ctl: {e}\n")),
                        };
                        let parsed = toml::to_string(&new_doc)
                            .map_err(|e| e.to_string())
                            .and_then(|t| config::parse(&t, "xvs ctl").map_err(|e| e.to_string()));
                        match parsed {
                            Ok(new_cfg) => {
                                edited = Some((new_cfg, new_doc));
                                ctl::Reply::ok(format!("{done}\n"))
                            }
                            Err(e) => ctl::Reply::err(1, format!("xvs ctl: refused, nothing changed:\n{e}")),
                        }
                    }
                    other => ctl::Reply::err(
                        2,
                        format!(
                            "xvs ctl: unknown command {:?}; try -L -n, --stats, --rate, -c, -Z, -A/-E/-D, -a/-e/-d, counters, health, vrrp, reload, save\n",
                            other.join(" ")
                        ),
                    ),
                }
            };
            if let Some((new_cfg, new_doc)) = edited.take() {
                eprintln!(
                    "xvs: configuration changed by xvs ctl: {} services",
                    new_cfg.services.len()
                );
                cfg = new_cfg;
                doc = new_doc;
                health.reconfigure(&cfg, Instant::now());
                generation += 1;
                let snap = view.healthy_snapshot(&cfg, &health, vrrp.as_ref(), &mut ids, generation);
                publish(snap, &published, &mut workers);
            }
            pending.reply(&reply);
        }
        if let Some(m) = &metrics {
            m.serve(|| {
                let total = collect(&reports, &mut unresolved);
                let snap = published.load_full();
                let rows = rows(&snap, &counters, &total, &Stats::default(), &rates);
                let io = io_total(&workers);
                let st = VrrpThread::status_of(vrrp.as_ref());
                ctl::metrics(&ctl::MetricsView {
                    rows: &rows,
                    stats: &total,
                    io: &io,
                    conns: table.len(),
                    capacity: table.capacity(),
                    health: &health.status(),
                    vrrp: &st,
                })
            });
        }
    }
    sd_notify("STOPPING=1");
    // VRRP first: priority 0 lets a backup take over while the workers are still stopping.
    if let Some(mut v) = vrrp.take() {
        v.stop();
    }
    let io_final = workers.stop();
    let mut io = IoCounters::default();
    io_final.iter().for_each(|c| io.merge(c));
    let stats = collect(&reports, &mut HashSet::new());
    eprintln!("xvs: stopped: {}", format_counters(&stats, &io, table.len()));
    let per: Vec<String> = io_final.iter().map(|c| c.rx.to_string()).collect();
    eprintln!("xvs: frames received per worker: {}", per.join(" "));
    Ok(())
}

#[cfg(test)]
mod notify_tests {
    #[test]
    fn sd_notify_reaches_a_datagram_socket() {
        let path = std::env::temp_dir().join(format!("xvs-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        super::sd_notify_to(&path, "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&path);
    }
}
