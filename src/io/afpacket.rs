//! AF_PACKET backend: one raw packet socket per interface per worker, for drivers or kernels
//! without AF_XDP. Frames arrive in a `TPACKET_V2` receive ring mapped into the worker (no system
//! call and no socket-queue skb per received frame: the kernel copies each frame into the ring in
//! its receive path, the worker polls the ring) and leave batched with `sendmmsg`.
//!
//! A packet socket receives a *copy*: the kernel still gets the frame. So that the kernel does not
//! answer or forward the frames xvs serves as well, the AF_PACKET backend attaches the same filter
//! program as a tc ingress classifier (`xvs_tc` in `bpf/xvs_xdp.c`) that drops exactly those
//! frames; packet taps run before tc ingress, so xvs has its copy by then. Frames the pipeline
//! passes to the kernel need nothing: the kernel already has them (counted as `passed`).
//! With several workers the sockets of one interface form a `PACKET_FANOUT_HASH` group, so each
//! flow goes to one worker. Own transmissions are not looped back (`PACKET_IGNORE_OUTGOING`).
//! VLAN tags are stripped by the kernel before a packet socket sees the frame.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::worker::IoCounters;
use super::{IoConfig, IoError, Process, ifindex};
use crate::pipeline::{Frame, Verdict};

/// Buffer per frame and the headroom in front of the packet (as much as AF_XDP gives).
const BUF: usize = 4096;
const HEADROOM: usize = 256;
const PACKET_IGNORE_OUTGOING: i32 = 23;
const PACKET_QDISC_BYPASS: i32 = 20;
const PACKET_FANOUT: i32 = 18;
const PACKET_FANOUT_HASH: i32 = 0;
/// `TPACKET_V2` ring geometry: 4 KiB slots (a 1500-byte-MTU frame and its header need about
/// 1.6 KiB; frames up to 3.8 KiB fit, longer ones are dropped and counted as `too_big`), 2048
/// slots per socket (8 MiB).
const RING_SLOT: usize = 4096;
const RING_SLOTS: usize = 2048;
const RING_BLOCK: usize = 1 << 16;
/// `tp_status` bit: the kernel stripped a VLAN tag into `tp_vlan_tci`.
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// `enum tpacket_versions` value of `TPACKET_V2`.
const TPACKET_V2: i32 = 1;

/// A `TPACKET_V2` receive ring mapped from the socket: slot `i` starts with a `tpacket2_hdr`
/// whose `tp_status` says who owns it (`TP_STATUS_USER`: the worker; 0: the kernel).
struct RxRing {
    map: *mut u8,
    len: usize,
    next: usize,
}

// SAFETY: the mapping belongs to this ring alone; the worker that owns the backend is the only
// user-space reader, and slots are handed back and forth through `tp_status` with
// acquire/release ordering.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Sets up and maps the ring of socket `fd` (before it is bound).
    fn new(fd: i32) -> Result<RxRing, IoError> {
        if !setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V2) {
            return Err(IoError::sys("PACKET_VERSION TPACKET_V2"));
        }
        let req = libc::tpacket_req {
            tp_block_size: RING_BLOCK as u32,
            tp_block_nr: (RING_SLOTS * RING_SLOT / RING_BLOCK) as u32,
            tp_frame_size: RING_SLOT as u32,
            tp_frame_nr: RING_SLOTS as u32,
        };
        // SAFETY: `req` is a live tpacket_req of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                (&req as *const libc::tpacket_req).cast(),
                std::mem::size_of::<libc::tpacket_req>() as u32,
            )
        };
        if rc != 0 {
            return Err(IoError::sys("PACKET_RX_RING"));
        }
        let len = RING_SLOTS * RING_SLOT;
        // SAFETY: maps the ring just configured on `fd`; the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(IoError::sys("mmap of the AF_PACKET receive ring"));
        }
        Ok(RxRing {
            map: map.cast(),
            len,
            next: 0,
        })
    }

    /// The status word of slot `i`, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: slot `i < RING_SLOTS` starts inside the mapping, 4 KiB aligned, with
        // `tp_status` (a u32) first; the kernel accesses it only as a u32 too.
        unsafe { AtomicU32::from_ptr(self.map.add(i * RING_SLOT).cast()) }
    }

    /// The next frame the kernel has handed over: its header and its bytes (valid until
    /// [`RxRing::release`]).
    fn peek(&self) -> Option<(libc::tpacket2_hdr, &[u8])> {
        if self.status(self.next).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the slot is ours (TP_STATUS_USER, acquired above); its header is a plain
        // tpacket2_hdr at the slot's start.
        let h = unsafe { std::ptr::read_volatile(self.map.add(self.next * RING_SLOT).cast::<libc::tpacket2_hdr>()) };
        let (mac, snap) = (usize::from(h.tp_mac), h.tp_snaplen as usize);
        let data = if mac.checked_add(snap).is_some_and(|e| e <= RING_SLOT) {
            // SAFETY: `mac + snap` lies within this slot of the mapping, checked just above.
            unsafe { std::slice::from_raw_parts(self.map.add(self.next * RING_SLOT + mac), snap) }
        } else {
            &[]
        };
        Some((h, data))
    }

    /// Hands the current slot back to the kernel and moves on.
    fn release(&mut self) {
        self.status(self.next).store(0, Ordering::Release);
        self.next = (self.next + 1) % RING_SLOTS;
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, no longer referenced.
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
}

struct PacketSocket {
    // Declared before `fd`: unmapped before the socket closes.
    rx: RxRing,
    fd: OwnedFd,
}

/// The AF_PACKET sockets of one worker, one per interface (index = port).
pub struct PacketBackend {
    socks: Vec<PacketSocket>,
    bufs: Vec<Box<[u8; BUF]>>,
    lens: Vec<usize>,
    /// Per port: indices into `bufs` of frames to send, and their (start, len).
    pending: Vec<Vec<(usize, usize, usize)>>,
    /// `sendmmsg` vectors, refilled per send (kept to keep allocation off the packet path).
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    batch: usize,
}

// SAFETY: the raw pointers in `iov` and `msgs` point into `bufs` (boxes this backend owns) and are
// rewritten before every use; they carry no tie to the thread that wrote them.
unsafe impl Send for PacketBackend {}

fn setsockopt_int(fd: i32, level: i32, opt: i32, v: i32) -> bool {
    // SAFETY: `v` is a live i32 and its size is passed.
    unsafe { libc::setsockopt(fd, level, opt, (&v as *const i32).cast(), 4) == 0 }
}

impl PacketBackend {
    /// Opens worker `worker`'s sockets on every configured interface.
    pub fn new(cfg: &IoConfig, worker: usize) -> Result<PacketBackend, IoError> {
        let mut socks = Vec::with_capacity(cfg.interfaces.len());
        for iface in &cfg.interfaces {
            let idx = ifindex(iface)?;
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain syscall; the result is checked.
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
            if raw < 0 {
                return Err(IoError::sys(format!("AF_PACKET socket on {iface}")));
            }
            // SAFETY: `raw` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let rx = RxRing::new(raw)?;
            // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = idx as i32;
            // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
            let rc = unsafe {
                libc::bind(
                    raw,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(IoError::sys(format!("bind AF_PACKET socket to {iface}")));
            }
            if !setsockopt_int(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1) {
                return Err(IoError::sys("PACKET_IGNORE_OUTGOING"));
            }
            setsockopt_int(raw, libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1);
            setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20);
            setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 16 << 20);
            setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_BUSY_POLL, 20);
            if cfg.workers > 1 {
                // Group id: per interface and per process, so two xvs never share a group.
                let group = ((idx as i32 ^ std::process::id() as i32) & 0xffff) | (PACKET_FANOUT_HASH << 16);
                if !setsockopt_int(raw, libc::SOL_PACKET, PACKET_FANOUT, group) {
                    return Err(IoError::sys(format!("PACKET_FANOUT on {iface}")));
                }
            }
            tracing::info!(iface, worker, "AF_PACKET socket bound");
            socks.push(PacketSocket { rx, fd });
        }
        let batch = cfg.batch;
        Ok(PacketBackend {
            pending: vec![Vec::with_capacity(batch); socks.len()],
            iov: Vec::with_capacity(batch),
            msgs: Vec::with_capacity(batch),
            socks,
            bufs: (0..batch).map(|_| Box::new([0u8; BUF])).collect(),
            lens: vec![0; batch],
            batch,
        })
    }

    /// One loop: a batch from each interface's ring, process, `sendmmsg` per egress port.
    pub fn poll<P: Process + ?Sized>(&mut self, p: &mut P, c: &mut IoCounters, now: Instant) -> usize {
        let mut total = 0;
        for s in 0..self.socks.len() {
            let n = self.recv(s, c);
            total += n;
            c.rx += n as u64;
            for i in 0..n {
                if let Some(f) = self.bufs[i].get(HEADROOM..HEADROOM + self.lens[i]) {
                    p.look_ahead(f, now);
                }
            }
            for i in 0..n {
                let mut frame = Frame::new(&mut self.bufs[i][..], HEADROOM, self.lens[i]);
                let v = p.process(&mut frame, s as u16, now);
                let (start, len) = (frame.start, frame.len);
                let out = match v {
                    Verdict::Forward { port } => usize::from(port),
                    Verdict::Reply => s,
                    Verdict::PassToKernel => {
                        c.passed += 1;
                        continue;
                    }
                    Verdict::Drop(_) => continue,
                };
                if out >= self.socks.len() {
                    c.bad_port += 1;
                    continue;
                }
                if start.checked_add(len).is_none_or(|e| e > BUF) {
                    c.too_big += 1;
                    continue;
                }
                self.pending[out].push((i, start, len));
            }
            // Send before the next interface's receive reuses the buffers.
            for o in 0..self.socks.len() {
                self.send(o, c);
            }
        }
        total
    }

    /// Copies up to a batch of frames out of socket `s`'s ring into the buffers (with the
    /// pipeline's headroom in front) and hands their slots back at once.
    fn recv(&mut self, s: usize, c: &mut IoCounters) -> usize {
        let ring = &mut self.socks[s].rx;
        let mut n = 0;
        while n < self.batch {
            let Some((h, data)) = ring.peek() else { break };
            if h.tp_status & TP_STATUS_VLAN_VALID != 0 {
                // VLAN-tagged service traffic is not served yet; the kernel has its own copy.
                c.passed += 1;
            } else if data.is_empty() || h.tp_snaplen != h.tp_len || data.len() > BUF - HEADROOM {
                c.too_big += 1;
            } else {
                self.bufs[n][HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
                self.lens[n] = data.len();
                n += 1;
            }
            ring.release();
        }
        n
    }

    /// Adds the frames the kernel dropped because a ring was full (PACKET_STATISTICS counts
    /// since its last read).
    pub fn ring_stats(&self, c: &mut IoCounters) {
        for s in &self.socks {
            // SAFETY: tpacket_stats is plain old data; all-zero is valid.
            let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::tpacket_stats>() as u32;
            // SAFETY: `st` and `len` are live and describe a buffer of that size.
            let rc = unsafe {
                libc::getsockopt(
                    s.fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_STATISTICS,
                    (&mut st as *mut libc::tpacket_stats).cast(),
                    &mut len,
                )
            };
            if rc == 0 {
                c.rx_ring_full += u64::from(st.tp_drops);
            }
        }
    }

    fn send(&mut self, o: usize, c: &mut IoCounters) {
        if self.pending[o].is_empty() {
            return;
        }
        self.iov.clear();
        self.iov
            .extend(self.pending[o].iter().map(|&(i, start, len)| libc::iovec {
                iov_base: self.bufs[i][start..].as_mut_ptr().cast(),
                iov_len: len,
            }));
        self.msgs.clear();
        self.msgs.extend(self.iov.iter_mut().map(|v| {
            // SAFETY: mmsghdr is plain old data; all-zero is valid.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        }));
        let msgs = &mut self.msgs;
        let mut off = 0;
        while off < msgs.len() {
            // SAFETY: the headers point at ranges of `self.bufs` checked against BUF above.
            let r = unsafe {
                libc::sendmmsg(
                    self.socks[o].fd.as_raw_fd(),
                    msgs[off..].as_mut_ptr(),
                    (msgs.len() - off) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                break;
            }
            off += r as usize;
        }
        c.tx += off as u64;
        c.tx_full += (msgs.len() - off) as u64;
        self.pending[o].clear();
    }
}
