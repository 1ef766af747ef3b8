//! `xvs sink`: counts and drops the generator's traffic on an interface (`bpf/sink.c`) and reads
//! the latency histogram.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::GenError;
use super::hist::{BUCKETS, Histogram};
use super::obj::{BpfLink, BpfObject, ifindex, percpu_sum, percpu_values};

/// Where the sink program hooks in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkHook {
    /// tc ingress (a tcx link): cheapest behind forwarders that emit skbs.
    Tc,
    /// Native XDP: needed behind XDP_REDIRECT forwarders (the peer must run NAPI).
    Xdp,
}

/// Counters of the sink since it was attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// Frames counted (and dropped).
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames that carried a timestamp (latency samples).
    pub stamped: u64,
}

/// An attached sink; detached on drop (drop it in the namespace it was attached in).
pub struct Sink {
    obj: BpfObject,
    stats: RawFd,
    lat: RawFd,
    _xdp: Option<BpfLink>,
    _tc: Option<BpfLink>,
}

impl Sink {
    /// Attaches the sink to interface `dev` of the current namespace.
    pub fn attach(dev: &str, hook: SinkHook) -> Result<Sink, GenError> {
        let idx = ifindex(dev)?;
        let prog = match hook {
            SinkHook::Tc => "xvs_sink_tc",
            SinkHook::Xdp => "xvs_sink_xdp",
        };
        let obj = BpfObject::load("sink", prog)?;
        let stats = obj.map("sink_stats")?;
        let lat = obj.map("sink_lat")?;
        let (mut xdp, mut tc) = (None, None);
        match hook {
            SinkHook::Tc => tc = Some(BpfLink::tc_ingress(idx, obj.prog_fd)?),
            SinkHook::Xdp => xdp = Some(BpfLink::xdp(idx, obj.prog_fd, true)?),
        }
        Ok(Sink {
            obj,
            stats,
            lat,
            _xdp: xdp,
            _tc: tc,
        })
    }

    /// The counters so far.
    pub fn counts(&self) -> Result<SinkCounts, GenError> {
        Ok(SinkCounts {
            packets: percpu_sum(self.stats, 0)?,
            bytes: percpu_sum(self.stats, 1)?,
            stamped: percpu_sum(self.stats, 2)?,
        })
    }

    /// The latency histogram so far.
    pub fn latency(&self) -> Result<Histogram, GenError> {
        let mut counts = Vec::with_capacity(BUCKETS);
        for k in 0..BUCKETS as u32 {
            counts.push(percpu_values(self.lat, k)?.iter().sum());
        }
        Ok(Histogram { counts })
    }

    /// The program's file descriptor (kept for callers that want to inspect it).
    pub fn prog_fd(&self) -> RawFd {
        self.obj.prog_fd
    }
}

/// What `xvs sink` measured over its window.
#[derive(Clone, Debug)]
pub struct SinkReport {
    /// Counters over the window.
    pub counts: SinkCounts,
    /// Length of the window.
    pub secs: f64,
    /// Latency samples of the window.
    pub latency: Histogram,
}

impl SinkReport {
    /// The one line `xvs sink` prints: `packets=N secs=S mpps=M stamped=K p50_us=.. p99_us=..`.
    pub fn line(&self) -> String {
        let us = |q| {
            self.latency
                .quantile_ns(q)
                .map_or("-".to_string(), |n| format!("{:.2}", n as f64 / 1000.0))
        };
        format!(
            "packets={} bytes={} secs={:.3} mpps={:.3} stamped={} p50_us={} p99_us={}",
            self.counts.packets,
            self.counts.bytes,
            self.secs,
            self.counts.packets as f64 / self.secs.max(1e-9) / 1e6,
            self.counts.stamped,
            us(0.5),
            us(0.99)
        )
    }
}

/// Attaches to `dev`, counts for `secs` seconds (or until `stop` says so), detaches and reports.
pub fn run(dev: &str, hook: SinkHook, secs: f64, stop: &dyn Fn() -> bool) -> Result<SinkReport, GenError> {
    if !(0.0..=3600.0).contains(&secs) {
        return Err(GenError::Bad(format!("--duration {secs} out of range 0..=3600")));
    }
    let sink = Sink::attach(dev, hook)?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    while Instant::now() < end && !stop() {
        std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(SinkReport {
        counts: sink.counts()?,
        secs,
        latency: sink.latency()?,
    })
}
