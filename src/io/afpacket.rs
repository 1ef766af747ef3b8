//! AF_PACKET backend: one raw packet socket per interface per worker, batched with
//! `recvmmsg`/`sendmmsg` (no syscall per packet), for drivers or kernels without AF_XDP.
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

struct PacketSocket {
    fd: OwnedFd,
}

/// The AF_PACKET sockets of one worker, one per interface (index = port).
pub struct PacketBackend {
    socks: Vec<PacketSocket>,
    bufs: Vec<Box<[u8; BUF]>>,
    lens: Vec<usize>,
    /// Per port: indices into `bufs` of frames to send, and their (start, len).
    pending: Vec<Vec<(usize, usize, usize)>>,
    batch: usize,
}

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
            socks.push(PacketSocket { fd });
        }
        let batch = cfg.batch;
        Ok(PacketBackend {
            pending: vec![Vec::with_capacity(batch); socks.len()],
            socks,
            bufs: (0..batch).map(|_| Box::new([0u8; BUF])).collect(),
            lens: vec![0; batch],
            batch,
        })
    }

    /// One loop: `recvmmsg` a batch per interface, process, `sendmmsg` per egress port.
    pub fn poll<P: Process + ?Sized>(&mut self, p: &mut P, c: &mut IoCounters, now: Instant) -> usize {
        let mut total = 0;
        for s in 0..self.socks.len() {
            let n = self.recv(s);
            total += n;
            c.rx += n as u64;
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

    fn recv(&mut self, s: usize) -> usize {
        let mut iov: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b[HEADROOM..].as_mut_ptr().cast(),
                iov_len: BUF - HEADROOM,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain old data; all-zero is valid.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: `msgs` holds `batch` headers whose iovecs point into `self.bufs`, alive and
        // not otherwise borrowed for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                self.socks[s].fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                self.batch as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        for (i, m) in msgs.iter().take(n).enumerate() {
            self.lens[i] = m.msg_len as usize;
        }
        n
    }

    fn send(&mut self, o: usize, c: &mut IoCounters) {
        if self.pending[o].is_empty() {
            return;
        }
        let mut iov: Vec<libc::iovec> = self.pending[o]
            .iter()
            .map(|&(i, start, len)| libc::iovec {
                iov_base: self.bufs[i][start..].as_mut_ptr().cast(),
                iov_len: len,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain old data; all-zero is valid.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
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
