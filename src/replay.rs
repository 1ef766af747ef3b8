//! Offline replay: the data plane run over a capture, clocked by the capture's timestamps.
//!
//! `xvs replay -c FILE IN.pcap OUT.pcap` shows what a configuration would do to real traffic:
//! every frame it would transmit is written to OUT with the input's timestamp, and a summary counts
//! verdicts and drop reasons. Neighbours are learnt from the capture as a switch learns MACs (the
//! source MAC of every frame whose source address is on a port's own subnet), so that a capture
//! taken on a director replays without a list of static neighbours.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

use crate::config::Config;
use crate::conn::ConnTable;
use crate::pipeline::{Frame, HEADROOM, Pipeline, Published, Verdict};
use crate::service::{DestIds, Port, ServiceTable, synthetic_mac};
use crate::stats::Stats;
use crate::types::{Addr, DestCounters, Mac};
use crate::wire::{ethernet, ethertype, ipv4, ipv6};

/// What a replay did.
#[derive(Debug, Default)]
pub struct Summary {
    pub stats: Stats,
    /// Frames written, per output port.
    pub per_port: Vec<(String, u64)>,
    pub neighbours_learnt: usize,
    pub conns_at_end: usize,
    /// Capture time covered.
    pub duration: Duration,
    /// Ports that had no MAC in the configuration and got a synthetic one.
    pub synthetic_macs: Vec<(String, Mac)>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "frames in      {:>10}   ({:.3} s of capture)",
            s.rx,
            self.duration.as_secs_f64()
        )?;
        writeln!(f, "forwarded      {:>10}", s.forwarded)?;
        for (name, n) in &self.per_port {
            writeln!(f, "  out {name:<10} {n:>10}")?;
        }
        writeln!(f, "replied        {:>10}", s.replied)?;
        writeln!(f, "to the kernel  {:>10}", s.passed)?;
        writeln!(f, "dropped        {:>10}", s.dropped_total())?;
        for (r, n) in s.drops() {
            writeln!(f, "  {:<20} {n:>10}", r.label())?;
        }
        writeln!(
            f,
            "connections    {:>10} created, {} in the table at the end",
            s.conns, self.conns_at_end
        )?;
        writeln!(
            f,
            "neighbours     {:>10} learnt from the capture",
            self.neighbours_learnt
        )?;
        for (name, mac) in &self.synthetic_macs {
            writeln!(f, "note: interface {name} has no mac in the config; used {mac}")?;
        }
        Ok(())
    }
}

/// Errors of a replay: files, not packets (packets only ever end in verdicts).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// cannot read {0}: {1}
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    /// cannot write {0}: {1}
    #[error("cannot write {0}: {1}")]
    Write(String, String),
    /// the configuration declares no [[interface]]: replay needs at least one port
    #[error("the configuration declares no [[interface]]: replay needs at least one port")]
    NoPorts,
}

/// The replay's state between frames: the data plane plus what it learnt.
struct Replayer<'c> {
    cfg: &'c Config,
    ports: Vec<Port>,
    ids: DestIds,
    published: Arc<Published>,
    pipeline: Pipeline,
    table: Arc<ConnTable>,
    known: HashSet<(u16, Addr)>,
    learnt: Vec<(u16, Addr, Mac)>,
    generation: u64,
}

/// A data plane with no I/O, built from a configuration alone: ports take the configured MACs
/// (synthetic ones where none is given); neighbours are the configured static ones plus `neigh`.
/// Replay, tests and benchmarks use it.
pub struct Offline {
    pub pipeline: Pipeline,
    pub table: Arc<ConnTable>,
    pub published: Arc<Published>,
    pub ports: Vec<Port>,
    pub ids: DestIds,
}

impl Offline {
    pub fn new(cfg: &Config, neigh: &[(u16, Addr, Mac)]) -> Result<Offline, ReplayError> {
        if cfg.interfaces.is_empty() {
            return Err(ReplayError::NoPorts);
        }
        let ports: Vec<Port> = cfg
            .interfaces
            .iter()
            .enumerate()
            .map(|(i, ifc)| Port {
                name: ifc.name.clone(),
                mac: ifc.mac.unwrap_or_else(|| synthetic_mac(i as u16)),
                addrs: ifc.addrs.clone(),
                mtu: ifc.mtu.unwrap_or(1500),
            })
            .collect();
        let mut ids = DestIds::default();
        let snap = ServiceTable::build(cfg, ports.clone(), &[], neigh, &mut ids, 1);
        let published = Arc::new(Published::new(snap));
        let counters = Arc::new(DestCounters::default());
        let table = Arc::new(ConnTable::new(cfg.conn.table(), counters.clone()));
        let pipeline = Pipeline::new(published.clone(), table.clone(), counters);
        Ok(Offline {
            pipeline,
            table,
            published,
            ports,
            ids,
        })
    }
}

impl<'c> Replayer<'c> {
    fn new(cfg: &'c Config) -> Result<Replayer<'c>, ReplayError> {
        let Offline {
            pipeline,
            table,
            published,
            ports,
            ids,
        } = Offline::new(cfg, &[])?;
        Ok(Replayer {
            cfg,
            ports,
            ids,
            published,
            pipeline,
            table,
            known: HashSet::new(),
            learnt: Vec::new(),
            generation: 1,
        })
    }

    /// Learns the frame's source MAC as the neighbour owning its source address, if that address is
    /// on one of the ports' own subnets; publishes a new snapshot when something new was learnt.
    fn learn(&mut self, frame: &[u8]) {
        let Ok(eth) = ethernet::Frame::new_checked(frame) else {
            return;
        };
        if eth.vlan_id().is_some() {
            return;
        }
        let l3 = &frame[eth.header_len()..];
        let src = match eth.ethertype() {
            ethertype::IPV4 => ipv4::Packet::new_checked(l3).map(|p| Addr::from(p.src_addr())).ok(),
            ethertype::IPV6 => ipv6::Packet::new_checked(l3).map(|p| Addr::from(p.src_addr())).ok(),
            _ => None,
        };
        let Some(src) = src else { return };
        let Some(port) = self
            .ports
            .iter()
            .position(|p| p.addrs.iter().any(|pf| pf.contains(src.to_ip())))
        else {
            return;
        };
        let port = port as u16;
        if self.known.insert((port, src)) {
            self.learnt.push((port, src, eth.src_addr()));
            self.generation += 1;
            let snap = ServiceTable::build(
                self.cfg,
                self.ports.clone(),
                &[],
                &self.learnt,
                &mut self.ids,
                self.generation,
            );
            self.published.store(snap);
            self.pipeline.refresh();
        }
    }

    /// The port a frame came in on: the one whose MAC it is addressed to, else the first.
    fn in_port(&self, frame: &[u8]) -> u16 {
        frame
            .get(..6)
            .and_then(|d| self.ports.iter().position(|p| p.mac.0 == d))
            .map(|i| i as u16)
            .unwrap_or(0)
    }
}

/// Replays `input` through the data plane configured by `cfg`, writing transmitted frames to `output`.
pub fn replay(cfg: &Config, input: &Path, output: &Path) -> Result<Summary, ReplayError> {
    let rd = |e: &dyn fmt::Display| ReplayError::Read(input.display().to_string(), e.to_string());
    let wr = |e: &dyn fmt::Display| ReplayError::Write(output.display().to_string(), e.to_string());
    let mut reader = PcapReader::new(BufReader::new(File::open(input).map_err(|e| rd(&e))?)).map_err(|e| rd(&e))?;
    let mut writer = PcapWriter::new(BufWriter::new(File::create(output).map_err(|e| wr(&e))?)).map_err(|e| wr(&e))?;

    let mut r = Replayer::new(cfg)?;
    let mut per_port = vec![0u64; r.ports.len()];
    let base = Instant::now();
    let mut first: Option<Duration> = None;
    let mut last = Duration::ZERO;
    let mut buf = vec![0u8; HEADROOM + 65536];
    let mut n = 0u64;
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|e| rd(&e))?;
        let t0 = *first.get_or_insert(pkt.timestamp);
        last = pkt.timestamp.saturating_sub(t0).max(last);
        let now = base + last;
        let len = pkt.data.len().min(buf.len() - HEADROOM);
        r.learn(&pkt.data[..len]);
        buf[HEADROOM..HEADROOM + len].copy_from_slice(&pkt.data[..len]);
        let in_port = r.in_port(&pkt.data[..len]);
        let mut frame = Frame::new(&mut buf, HEADROOM, len);
        let out_port = match r.pipeline.process(&mut frame, in_port, now) {
            Verdict::Forward { port } => Some(port),
            Verdict::Reply => Some(in_port),
            Verdict::PassToKernel | Verdict::Drop(_) => None,
        };
        if let Some(port) = out_port {
            if let Some(c) = per_port.get_mut(port as usize) {
                *c += 1;
            }
            let data = frame.bytes();
            writer
                .write_packet(&PcapPacket::new(pkt.timestamp, data.len() as u32, data))
                .map_err(|e| wr(&e))?;
        }
        n += 1;
        if n % 64 == 0 {
            r.pipeline.between_batches(now);
        }
    }
    r.pipeline.between_batches(base + last);
    Ok(Summary {
        stats: r.pipeline.counters().clone(),
        per_port: r.ports.iter().map(|p| p.name.clone()).zip(per_port).collect(),
        neighbours_learnt: r.learnt.len(),
        conns_at_end: r.table.len(),
        duration: last,
        synthetic_macs: cfg
            .interfaces
            .iter()
            .zip(&r.ports)
            .filter(|(i, _)| i.mac.is_none())
            .map(|(_, p)| (p.name.clone(), p.mac))
            .collect(),
    })
}

/// Feeds fuzz input to a data plane and checks what must hold for any input: the first byte picks
/// the ingress port, the rest is split into up to eight frames by length bytes (in units of 8 bytes; 0 = the rest) (so that sequences
/// exercise connection state). Panics, as a fuzz target should, when an invariant breaks:
/// a transmitted frame lies inside its buffer, is at least an Ethernet header long, goes to a port
/// that exists, and grows by at most a tunnel header.
pub fn exercise(d: &mut Offline, data: &[u8]) {
    let Some((&port, mut rest)) = data.split_first() else {
        return;
    };
    let in_port = u16::from(port) % d.ports.len() as u16;
    let now = Instant::now();
    let mut buf = vec![0u8; HEADROOM + 4096];
    for i in 0..8u64 {
        let Some((&n, tail)) = rest.split_first() else { break };
        // A length byte of 0 (or the eighth frame) takes the rest of the input.
        let n = if n == 0 || i == 7 {
            tail.len()
        } else {
            (usize::from(n) * 8).min(tail.len())
        };
        let (f, tail) = tail.split_at(n);
        rest = tail;
        let len = f.len().min(buf.len() - HEADROOM);
        buf[HEADROOM..HEADROOM + len].copy_from_slice(&f[..len]);
        let mut frame = Frame::new(&mut buf, HEADROOM, len);
        let v = d.pipeline.process(&mut frame, in_port, now + Duration::from_millis(i));
        if let Verdict::Forward { port } = v {
            assert!(
                usize::from(port) < d.ports.len(),
                "forward to port {port} of {}",
                d.ports.len()
            );
        }
        if matches!(v, Verdict::Forward { .. } | Verdict::Reply) {
            assert!(frame.start + frame.len <= frame.buf.len(), "frame outside its buffer");
            assert!(frame.len >= 14, "frame shorter than Ethernet");
            assert!(
                frame.len <= len + crate::xmit::tun::OVERHEAD_V6,
                "frame grew by {} bytes",
                frame.len - len
            );
        }
    }
}
