//! Worker threads: one per configured core, pinned, busy-polling its sockets in batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::afpacket::PacketBackend;
use super::afxdp::XskBackend;
use super::xdp::XdpProgram;
use super::{IoConfig, IoError, IoKind, Process, rx_queues};
use crate::types::{Addr, Proto};

/// I/O counters of one worker (the pipeline counts verdicts and drop reasons itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Frames received.
    pub rx: u64,
    /// Frames placed on a TX ring (AF_XDP) or sent (AF_PACKET).
    pub tx: u64,
    /// Frames dropped because the TX ring or socket buffer was full.
    pub tx_full: u64,
    /// `PassToKernel` verdicts the backend could not honour (AF_XDP cannot re-inject).
    pub pass_unavailable: u64,
    /// `PassToKernel` verdicts on AF_PACKET, where the kernel has its own copy already.
    pub passed: u64,
    /// `Forward` to a port that does not exist.
    pub bad_port: u64,
    /// A received frame or a verdict's frame range that does not fit the buffer.
    pub too_big: u64,
    /// Failed TX wakeups (`sendto`) other than "try again".
    pub tx_kick_err: u64,
    /// Kernel: frames dropped for lack of a socket or a filter (XDP_STATISTICS rx_dropped).
    pub rx_dropped: u64,
    /// Kernel: frames dropped because the RX ring (AF_XDP) or receive ring (AF_PACKET) was full.
    pub rx_ring_full: u64,
    /// Kernel: times the fill ring was empty.
    pub fill_ring_empty: u64,
    /// Poll loops run.
    pub loops: u64,
}

impl IoCounters {
    /// Add another worker's counters into these.
    pub fn merge(&mut self, o: &IoCounters) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.tx_full += o.tx_full;
        self.pass_unavailable += o.pass_unavailable;
        self.passed += o.passed;
        self.bad_port += o.bad_port;
        self.too_big += o.too_big;
        self.tx_kick_err += o.tx_kick_err;
        self.rx_dropped += o.rx_dropped;
        self.rx_ring_full += o.rx_ring_full;
        self.fill_ring_empty += o.fill_ring_empty;
        self.loops += o.loops;
    }
}

/// The socket set of one worker.
pub enum Backend {
    /// AF_XDP sockets on one UMEM.
    Xdp(XskBackend),
    /// AF_PACKET sockets, one per interface.
    Packet(PacketBackend),
}

impl Backend {
    fn poll<P: Process + ?Sized>(&mut self, p: &mut P, c: &mut IoCounters, now: Instant) -> usize {
        match self {
            Backend::Xdp(b) => b.poll(p, c, now),
            Backend::Packet(b) => b.poll(p, c, now),
        }
    }
    fn ring_stats(&self, c: &mut IoCounters) {
        match self {
            Backend::Xdp(b) => b.ring_stats(c),
            Backend::Packet(b) => b.ring_stats(c),
        }
    }
}

/// What the filter selects: virtual services `(proto, vip, vport)`, FULLNAT local addresses, NAT real servers `(proto, rip, rport)`.
pub type FilterLists<'a> = (
    &'a [(Proto, Addr, u16)],
    &'a [Addr],
    &'a [(Proto, Addr, u16)],
    &'a [Addr],
);

/// How often a worker publishes its counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(10);
/// Empty loops in a row after which an idle worker yields its core briefly.
const IDLE_LOOPS: u32 = 1024;

/// Runs one worker until `stop` is set: `between_batches`, poll and process, publish counters.
pub fn run_worker<P: Process + ?Sized>(
    backend: &mut Backend,
    p: &mut P,
    stop: &AtomicBool,
    shared: &Mutex<IoCounters>,
    idle_sleep: Option<Duration>,
) {
    let mut c = IoCounters::default();
    let mut next_publish = Instant::now();
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Before the batch, not after: a worker that slept while idle must not serve the first
        // frames after it with the snapshot it had before the sleep.
        p.between_batches(now);
        let n = backend.poll(p, &mut c, now);
        c.loops += 1;
        if n == 0 {
            idle += 1;
            if idle >= IDLE_LOOPS {
                idle = 0;
                match idle_sleep {
                    Some(d) => std::thread::sleep(d),
                    None => std::thread::yield_now(),
                }
            }
        } else {
            idle = 0;
        }
        if now >= next_publish {
            next_publish = now + PUBLISH_EVERY;
            backend.ring_stats(&mut c);
            if let Ok(mut s) = shared.lock() {
                *s = c.clone();
            }
        }
    }
    backend.ring_stats(&mut c);
    if let Ok(mut s) = shared.lock() {
        *s = c;
    }
}

/// Cores for `workers` threads out of `available`: core 0 is left to the control plane and the
/// kernel when there are more cores than workers.
pub fn choose_cores(available: &[usize], workers: usize) -> Vec<usize> {
    if available.is_empty() {
        return Vec::new();
    }
    let pool = if available.len() > workers && available.len() > 1 {
        &available[1..]
    } else {
        available
    };
    (0..workers).map(|i| pool[i % pool.len()]).collect()
}

/// Queues of `queues_per_port` that worker `w` of `workers` serves: queue q goes to worker q mod workers.
pub fn assign_queues(queues_per_port: &[u32], w: usize, workers: usize) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    for (port, &n) in queues_per_port.iter().enumerate() {
        for q in 0..n {
            if q as usize % workers == w {
                out.push((port as u16, q));
            }
        }
    }
    out
}

/// The running workers and the filter program; dropping stops the threads, then detaches the program.
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counters: Vec<Arc<Mutex<IoCounters>>>,
    filter: Option<XdpProgram>,
    kind: IoKind,
}

impl Workers {
    /// Attaches the filter, opens the sockets and starts `cfg.workers` threads, each running the
    /// `Process` that `make(worker_index)` returns. `io = auto` falls back to AF_PACKET when AF_XDP fails.
    pub fn start<P, F>(cfg: &IoConfig, mut make: F) -> Result<Workers, IoError>
    where
        P: Process + 'static,
        F: FnMut(usize) -> P,
    {
        Self::start_with(cfg, None, &mut make)
    }

    /// As [`Workers::start`], with the filter's initial content (so no frame of a service reaches the kernel at start).
    pub fn start_filtered<P, F>(cfg: &IoConfig, filter: FilterLists<'_>, mut make: F) -> Result<Workers, IoError>
    where
        P: Process + 'static,
        F: FnMut(usize) -> P,
    {
        Self::start_with(cfg, Some(filter), &mut make)
    }

    fn start_with<P, F>(cfg: &IoConfig, filter: Option<FilterLists<'_>>, make: &mut F) -> Result<Workers, IoError>
    where
        P: Process + 'static,
        F: FnMut(usize) -> P,
    {
        if cfg.workers == 0 || cfg.interfaces.is_empty() || cfg.batch == 0 {
            return Err(IoError::Config(
                "need at least one worker, one interface and a batch size".into(),
            ));
        }
        let (kind, prog, backends) = match cfg.io {
            IoKind::AfPacket => Self::open_packet(cfg, filter)?,
            IoKind::AfXdp => Self::open_xdp(cfg, filter)?,
            IoKind::Auto => match Self::open_xdp(cfg, filter) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "AF_XDP unavailable, falling back to AF_PACKET");
                    Self::open_packet(cfg, filter)?
                }
            },
        };
        let available: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let cores = cfg
            .cores
            .clone()
            .unwrap_or_else(|| choose_cores(&available, cfg.workers));
        tracing::info!(?kind, workers = cfg.workers, ?cores, "starting I/O workers");
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = Workers {
            stop: stop.clone(),
            threads: Vec::new(),
            counters: Vec::new(),
            filter: Some(prog),
            kind,
        };
        for (i, mut backend) in backends.into_iter().enumerate() {
            let mut p = make(i);
            let stop = stop.clone();
            let shared = Arc::new(Mutex::new(IoCounters::default()));
            w.counters.push(shared.clone());
            let core = cores.get(i).copied();
            let idle = cfg.idle_sleep;
            let t = std::thread::Builder::new()
                .name(format!("xvs-io-{i}"))
                .spawn(move || {
                    if let Some(id) = core
                        && !core_affinity::set_for_current(core_affinity::CoreId { id })
                    {
                        tracing::warn!(worker = i, core = id, "could not pin worker");
                    }
                    run_worker(&mut backend, &mut p, &stop, &shared, idle);
                })
                .map_err(|e| IoError::Sys {
                    what: "spawn worker".into(),
                    err: e,
                })?;
            w.threads.push(t);
        }
        Ok(w)
    }

    fn open_xdp(
        cfg: &IoConfig,
        filter: Option<FilterLists<'_>>,
    ) -> Result<(IoKind, XdpProgram, Vec<Backend>), IoError> {
        let mut prog = XdpProgram::attach(&cfg.interfaces, cfg.xdp_mode)?;
        if let Some((s, l, n, o)) = filter {
            prog.set_filter(s, l, n, o)?;
        }
        let queues: Vec<u32> = cfg.interfaces.iter().map(|i| rx_queues(i)).collect();
        let mut backends = Vec::with_capacity(cfg.workers);
        for w in 0..cfg.workers {
            let q = assign_queues(&queues, w, cfg.workers);
            backends.push(Backend::Xdp(XskBackend::new(cfg, &prog, &q)?));
        }
        Ok((IoKind::AfXdp, prog, backends))
    }

    fn open_packet(
        cfg: &IoConfig,
        filter: Option<FilterLists<'_>>,
    ) -> Result<(IoKind, XdpProgram, Vec<Backend>), IoError> {
        let mut prog = XdpProgram::attach_tc(&cfg.interfaces)?;
        if let Some((s, l, n, o)) = filter {
            prog.set_filter(s, l, n, o)?;
        }
        let mut backends = Vec::with_capacity(cfg.workers);
        for w in 0..cfg.workers {
            backends.push(Backend::Packet(PacketBackend::new(cfg, w)?));
        }
        Ok((IoKind::AfPacket, prog, backends))
    }

    /// The backend that runs: `AfXdp` or `AfPacket`.
    pub fn kind(&self) -> IoKind {
        self.kind
    }

    /// Replaces what the filter program selects (call again when the service table changes).
    pub fn set_filter(
        &mut self,
        services: &[(Proto, Addr, u16)],
        laddrs: &[Addr],
        nat_rs: &[(Proto, Addr, u16)],
        locals: &[Addr],
    ) -> Result<(), IoError> {
        match &mut self.filter {
            Some(f) => f.set_filter(services, laddrs, nat_rs, locals),
            None => Ok(()),
        }
    }

    /// Each worker's counters as last published (every 10 ms).
    pub fn counters(&self) -> Vec<IoCounters> {
        self.counters
            .iter()
            .map(|c| c.lock().map(|c| c.clone()).unwrap_or_default())
            .collect()
    }

    /// Stops and joins the workers, detaches the filter, and returns the final counters.
    pub fn stop(mut self) -> Vec<IoCounters> {
        self.shutdown();
        self.counters()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("an I/O worker panicked");
            }
        }
        self.filter = None;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_zero_is_left_free_when_there_are_spare_cores() {
        assert_eq!(choose_cores(&[0, 1, 2, 3], 2), vec![1, 2]);
        assert_eq!(choose_cores(&[0, 1, 2, 3], 3), vec![1, 2, 3]);
        // As many workers as cores: every core works, core 0 included.
        assert_eq!(choose_cores(&[0, 1], 2), vec![0, 1]);
        assert_eq!(choose_cores(&[0], 2), vec![0, 0]);
        assert_eq!(choose_cores(&[], 2), Vec::<usize>::new());
    }

    #[test]
    fn queues_are_spread_over_workers() {
        assert_eq!(assign_queues(&[2, 2], 0, 2), vec![(0, 0), (1, 0)]);
        assert_eq!(assign_queues(&[2, 2], 1, 2), vec![(0, 1), (1, 1)]);
        assert_eq!(assign_queues(&[1, 3], 0, 1), vec![(0, 0), (1, 0), (1, 1), (1, 2)]);
        // More workers than queues: the last worker gets nothing, which XskBackend refuses.
        assert_eq!(assign_queues(&[1], 1, 2), vec![]);
    }

    #[test]
    fn counters_merge() {
        let mut a = IoCounters {
            rx: 1,
            tx_full: 2,
            ..Default::default()
        };
        a.merge(&IoCounters {
            rx: 3,
            rx_ring_full: 4,
            ..Default::default()
        });
        assert_eq!((a.rx, a.tx_full, a.rx_ring_full), (4, 2, 4));
    }
}
