//! AF_XDP backend: per worker one UMEM shared by one socket per (interface, queue) the worker
//! serves, so that a frame moves from RX to TX by descriptor, never copied.
//!
//! Frame bookkeeping: every UMEM frame is at any time in exactly one place: the worker's free
//! list, a fill ring, an RX ring, a TX ring or a completion ring. Received frames go to a TX ring
//! (Forward, Reply) or back to the free list (Drop, PassToKernel, TX ring full); completions go
//! back to the free list; the fill rings are topped up from the free list every loop.

use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::time::Instant;

use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::worker::IoCounters;
use super::xdp::XdpProgram;
use super::{IoConfig, IoError, Process};
use crate::pipeline::{Frame, HEADROOM, Verdict};

/// Headroom the kernel leaves in front of every received frame (`XDP_PACKET_HEADROOM`); xvs
/// hands all of it to the pipeline.
const XDP_PACKET_HEADROOM: usize = 256;
const _: () = assert!(HEADROOM <= XDP_PACKET_HEADROOM);
/// UMEM frame size: a page per frame, 256 bytes of headroom, up to 3840 bytes of packet.
const FRAME_SIZE: u32 = 4096;
/// `SOL_XDP` and `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17): frames a copy-mode `sendto()` may send.
const SOL_XDP: i32 = 283;
const XDP_MAX_TX_SKB_BUDGET: i32 = 9;
/// TX kicks per loop at most: copy mode sends a bounded number of frames per wakeup.
const MAX_KICKS: usize = 8;

/// One AF_XDP socket: an (interface, queue) pair and its four rings.
struct XskSocket {
    port: u16,
    queue: u32,
    rx: RxQueue,
    tx: TxQueue,
    fq: FillQueue,
    cq: CompQueue,
    /// Frames placed on the TX ring that have not come back on the completion ring.
    in_flight: usize,
}

/// The AF_XDP sockets of one worker around one UMEM.
pub struct XskBackend {
    umem: Umem,
    socks: Vec<XskSocket>,
    /// For each port, the socket that transmits on it.
    tx_sock: Vec<usize>,
    free: Vec<FrameDesc>,
    rxbuf: Vec<FrameDesc>,
    /// Frames to transmit this loop, per socket.
    pending: Vec<Vec<FrameDesc>>,
    cqbuf: Vec<FrameDesc>,
    batch: usize,
    ring: u32,
    /// Whether the sockets are bound in zero-copy mode.
    pub zero_copy: bool,
}

fn set_int(fd: i32, level: i32, opt: i32, val: i32) -> bool {
    // SAFETY: `val` is a live i32 and its size is passed.
    let rc = unsafe { libc::setsockopt(fd, level, opt, (&val as *const i32).cast(), 4) };
    rc == 0
}

impl XskBackend {
    /// Opens one socket per `(port, queue)` in `queues` on a fresh UMEM and registers each in the
    /// XSKMAP of `prog`. Zero-copy bind is tried first, copy mode second.
    pub fn new(cfg: &IoConfig, prog: &XdpProgram, queues: &[(u16, u32)]) -> Result<XskBackend, IoError> {
        let bad = |what: String| IoError::Config(what);
        let ring = QueueSize::new(cfg.ring_size).map_err(|e| bad(format!("ring_size: {e}")))?;
        let frames = NonZeroU32::new(cfg.umem_frames).ok_or_else(|| bad("umem_frames is 0".into()))?;
        let ucfg = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| bad(format!("frame size: {e}")))?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .frame_headroom(0)
            .build()
            .map_err(|e| bad(format!("UMEM: {e}")))?;
        let (umem, free) = Umem::new(ucfg, frames, false).map_err(|e| IoError::Xsk {
            iface: "-".into(),
            queue: 0,
            reason: format!("UMEM: {e}"),
        })?;
        let mut socks = Vec::with_capacity(queues.len());
        let mut zero_copy = true;
        for &(port, queue) in queues {
            let iface = cfg
                .interfaces
                .get(usize::from(port))
                .ok_or_else(|| bad(format!("no interface for port {port}")))?;
            let name: xsk_rs::config::Interface = iface.parse().map_err(|_| IoError::NoInterface(iface.clone()))?;
            let mut res = Err(String::new());
            // Only the first socket's bind flags count: the others share its UMEM and mode.
            let modes: &[BindFlags] = if socks.is_empty() {
                &[BindFlags::XDP_ZEROCOPY, BindFlags::XDP_COPY]
            } else {
                &[BindFlags::empty()]
            };
            for &mode in modes {
                let scfg = SocketConfig::builder()
                    .rx_queue_size(ring)
                    .tx_queue_size(ring)
                    .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                    .bind_flags(mode | BindFlags::XDP_USE_NEED_WAKEUP)
                    .build();
                // SAFETY: every socket is created with XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD, which
                // is what xsk-rs requires for sockets sharing a UMEM.
                match unsafe { Socket::new(scfg, &umem, &name, queue) } {
                    Ok(s) => {
                        if mode.bits() == BindFlags::XDP_COPY.bits() {
                            zero_copy = false;
                        }
                        res = Ok(s);
                        break;
                    }
                    Err(e) => res = Err(e.to_string()),
                }
            }
            let (tx, rx, fqcq) = res.map_err(|reason| IoError::Xsk {
                iface: iface.clone(),
                queue,
                reason,
            })?;
            let (fq, cq) = fqcq.ok_or_else(|| IoError::Xsk {
                iface: iface.clone(),
                queue,
                reason: "socket shares a fill ring with another on the same queue".into(),
            })?;
            let fd = rx.fd().as_raw_fd();
            // Where refused (older kernels), copy mode sends 32 frames per wakeup: we kick more.
            set_int(fd, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, cfg.ring_size as i32);
            set_int(fd, libc::SOL_SOCKET, libc::SO_PREFER_BUSY_POLL, 1);
            set_int(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL, 20);
            set_int(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL_BUDGET, cfg.batch as i32);
            prog.register_xsk(usize::from(port), queue, fd)?;
            tracing::info!(iface, queue, zero_copy, "AF_XDP socket bound");
            socks.push(XskSocket {
                port,
                queue,
                rx,
                tx,
                fq,
                cq,
                in_flight: 0,
            });
        }
        let mut tx_sock = Vec::with_capacity(cfg.interfaces.len());
        for p in 0..cfg.interfaces.len() {
            let i = socks
                .iter()
                .position(|s| usize::from(s.port) == p)
                .ok_or_else(|| bad(format!("worker has no socket on port {p}")))?;
            tx_sock.push(i);
        }
        let n = socks.len();
        let mut b = XskBackend {
            umem,
            socks,
            tx_sock,
            free,
            rxbuf: vec![FrameDesc::default(); cfg.batch],
            pending: vec![Vec::with_capacity(cfg.batch * 2); n],
            cqbuf: vec![FrameDesc::default(); cfg.ring_size as usize],
            batch: cfg.batch,
            ring: cfg.ring_size,
            zero_copy,
        };
        // Give each fill ring at most half its share of the UMEM, keeping the rest for TX.
        let share = (b.free.len() / (2 * n.max(1))).min(cfg.ring_size as usize);
        for s in 0..n {
            b.refill(s, share);
        }
        Ok(b)
    }

    fn refill(&mut self, s: usize, max: usize) {
        let sock = &mut self.socks[s];
        let k = self.free.len().min(sock.fq.nb_free(self.ring) as usize).min(max);
        if k == 0 {
            return;
        }
        let from = self.free.len() - k;
        // SAFETY: frames on the free list belong to this UMEM and are owned by nobody else.
        let p = unsafe { sock.fq.produce(&self.free[from..]) };
        self.free.truncate(self.free.len() - p);
    }

    /// Completions back to the free list, fill rings topped up.
    fn reclaim(&mut self) {
        for s in 0..self.socks.len() {
            let sock = &mut self.socks[s];
            if sock.in_flight > 0 {
                // SAFETY: the completion ring returns frames of this UMEM that the kernel is done with.
                let c = unsafe { sock.cq.consume(&mut self.cqbuf) };
                sock.in_flight = sock.in_flight.saturating_sub(c);
                self.free.extend_from_slice(&self.cqbuf[..c]);
            }
            self.refill(s, self.batch * 4);
        }
    }

    /// One loop: receive a batch on every socket, process each frame, transmit, kick.
    /// Returns the number of frames received.
    pub fn poll<P: Process + ?Sized>(&mut self, proc_: &mut P, c: &mut IoCounters, now: Instant) -> usize {
        self.reclaim();
        let mut total = 0;
        for s in 0..self.socks.len() {
            // SAFETY: RX descriptors are frames of this UMEM, now owned by us.
            let r = unsafe { self.socks[s].rx.consume(&mut self.rxbuf) };
            if r == 0 {
                if self.socks[s].fq.needs_wakeup() {
                    let _ = self.socks[s].rx.poll(0);
                }
                continue;
            }
            total += r;
            c.rx += r as u64;
            let in_port = self.socks[s].port;
            for desc in &self.rxbuf[..r] {
                // SAFETY: as in `process_one`: the frame is ours until it goes to a TX or fill ring.
                let data = unsafe { self.umem.data(desc) };
                proc_.look_ahead(data.contents(), now);
            }
            for i in 0..r {
                let mut desc = self.rxbuf[i];
                let out = self.process_one(&mut desc, in_port, s, proc_, c, now);
                match out {
                    Some(t) => self.pending[t].push(desc),
                    None => self.free.push(desc),
                }
            }
        }
        self.transmit(c);
        total
    }

    /// Runs the pipeline on one frame; `Some(socket)` to transmit on, `None` to free it.
    fn process_one<P: Process + ?Sized>(
        &mut self,
        desc: &mut FrameDesc,
        in_port: u16,
        in_sock: usize,
        proc_: &mut P,
        c: &mut IoCounters,
        now: Instant,
    ) -> Option<usize> {
        // SAFETY: `desc` came off our RX ring, so we own its frame exclusively until we hand it
        // to a TX or fill ring.
        let mut data = unsafe { self.umem.data_mut(desc) };
        let len = data.contents().len();
        let cap = data.cursor().buf_len();
        let ptr = data.contents_mut().as_mut_ptr();
        // SAFETY: a UMEM frame is laid out as XDP_PACKET_HEADROOM bytes (our frame_headroom is 0)
        // followed by `cap` bytes of packet space, all inside the UMEM mapping; we own the whole
        // frame (see above) and `data` is not used while `buf` lives.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr.sub(XDP_PACKET_HEADROOM), XDP_PACKET_HEADROOM + cap) };
        let mut frame = Frame::new(buf, XDP_PACKET_HEADROOM, len);
        let verdict = proc_.process(&mut frame, in_port, now);
        let t = match verdict {
            Verdict::Forward { port } => match self.tx_sock.get(usize::from(port)) {
                Some(&t) => t,
                None => {
                    c.bad_port += 1;
                    return None;
                }
            },
            Verdict::Reply => in_sock,
            Verdict::PassToKernel => {
                // AF_XDP cannot give a frame back to the stack; the XDP program keeps these rare.
                c.pass_unavailable += 1;
                return None;
            }
            Verdict::Drop(_) => return None,
        };
        let (start, len) = (frame.start, frame.len);
        if start.checked_add(len).is_none_or(|end| end > frame.buf.len()) || len > cap {
            c.too_big += 1;
            return None;
        }
        if start != XDP_PACKET_HEADROOM {
            // An xsk-rs descriptor keeps its data address, so an encapsulated or decapsulated
            // packet is moved back to it: one memmove, only when the start moved.
            frame.buf.copy_within(start..start + len, XDP_PACKET_HEADROOM);
        }
        // SAFETY: as above; `buf` is no longer used.
        unsafe { self.umem.data_mut(desc) }.cursor().set_pos(len);
        Some(t)
    }

    fn transmit(&mut self, c: &mut IoCounters) {
        for s in 0..self.socks.len() {
            let sock = &mut self.socks[s];
            let pend = &mut self.pending[s];
            if !pend.is_empty() {
                // SAFETY: pending frames are ours and hold a packet of the length set above.
                let t = unsafe { sock.tx.produce(pend) };
                c.tx += t as u64;
                sock.in_flight += t;
                if t < pend.len() {
                    c.tx_full += (pend.len() - t) as u64;
                    self.free.extend_from_slice(&pend[t..]);
                }
                pend.clear();
            }
            if sock.in_flight > 0 && sock.tx.needs_wakeup() {
                // Copy mode sends a bounded number of frames per wakeup: kick until the ring drains.
                for _ in 0..MAX_KICKS {
                    if sock.tx.wakeup().is_err() {
                        c.tx_kick_err += 1;
                        break;
                    }
                    if sock.tx.nb_free_exact() >= self.ring {
                        break;
                    }
                }
            }
        }
    }

    /// Adds the kernel's per-socket ring statistics (XDP_STATISTICS) into `c`.
    pub fn ring_stats(&self, c: &mut IoCounters) {
        c.rx_dropped = 0;
        c.rx_ring_full = 0;
        c.fill_ring_empty = 0;
        for s in &self.socks {
            if let Ok(st) = s.rx.fd().xdp_statistics() {
                c.rx_dropped += st.rx_dropped();
                c.rx_ring_full += st.rx_ring_full();
                c.fill_ring_empty += st.rx_fill_ring_empty_descs();
            }
        }
    }

    /// The (port, queue) pairs this backend serves.
    pub fn queues(&self) -> Vec<(u16, u32)> {
        self.socks.iter().map(|s| (s.port, s.queue)).collect()
    }
}
