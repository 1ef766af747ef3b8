//! Namespaces for the I/O tests: client -- forwarder -- server, all in 198.18.0.0/15, removed on
//! every exit path by an RAII guard. Names carry the pid and a counter so parallel tests and runs
//! never collide.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use xvs::io::{Process, rx_queues};
use xvs::pipeline::{Frame, Verdict};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Whether the tests can create namespaces; prints the skip reason when not.
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (network namespaces, XDP)");
        return false;
    }
    true
}

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run command");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three namespaces: `c` (client, c0 198.18.1.2), `f` (forwarder, f0 198.18.1.1, f1 198.18.2.1),
/// `s` (server, s0 198.18.2.11). The forwarder does not route (ip_forward 0): only xvs can.
pub struct Lab {
    pub c: String,
    pub f: String,
    pub s: String,
}

impl Lab {
    /// `queues`: RX/TX queues of every veth.
    pub fn new(queues: u32) -> Lab {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = format!("xvst{}-{n}", std::process::id());
        let lab = Lab {
            c: format!("{p}-c"),
            f: format!("{p}-f"),
            s: format!("{p}-s"),
        };
        for ns in [&lab.c, &lab.f, &lab.s] {
            sh(&["ip", "netns", "add", ns]);
        }
        let q = queues.to_string();
        let (c, f, s) = (lab.c.as_str(), lab.f.as_str(), lab.s.as_str());
        #[rustfmt::skip]
        let cmds: Vec<Vec<&str>> = vec![
            vec!["ip", "-n", c, "link", "add", "c0", "numtxqueues", &q, "numrxqueues", &q, "type", "veth", "peer", "name", "f0", "netns", f, "numtxqueues", &q, "numrxqueues", &q],
            vec!["ip", "-n", s, "link", "add", "s0", "numtxqueues", &q, "numrxqueues", &q, "type", "veth", "peer", "name", "f1", "netns", f, "numtxqueues", &q, "numrxqueues", &q],
            vec!["ip", "-n", c, "link", "set", "c0", "address", "02:00:00:00:01:02"],
            vec!["ip", "-n", f, "link", "set", "f0", "address", "02:00:00:00:01:01"],
            vec!["ip", "-n", f, "link", "set", "f1", "address", "02:00:00:00:02:01"],
            vec!["ip", "-n", s, "link", "set", "s0", "address", "02:00:00:00:02:0b"],
            vec!["ip", "-n", c, "addr", "add", "198.18.1.2/24", "dev", "c0"],
            vec!["ip", "-n", f, "addr", "add", "198.18.1.1/24", "dev", "f0"],
            vec!["ip", "-n", f, "addr", "add", "198.18.2.1/24", "dev", "f1"],
            vec!["ip", "-n", s, "addr", "add", "198.18.2.11/24", "dev", "s0"],
            vec!["ip", "-n", c, "link", "set", "c0", "up"],
            vec!["ip", "-n", f, "link", "set", "f0", "up"],
            vec!["ip", "-n", f, "link", "set", "f1", "up"],
            vec!["ip", "-n", s, "link", "set", "s0", "up"],
            vec!["ip", "-n", c, "link", "set", "lo", "up"],
            vec!["ip", "-n", f, "link", "set", "lo", "up"],
            vec!["ip", "-n", s, "link", "set", "lo", "up"],
            vec!["ip", "-n", c, "route", "add", "198.18.2.0/24", "via", "198.18.1.1"],
            vec!["ip", "-n", s, "route", "add", "default", "via", "198.18.2.1"],
        ];
        for cmd in &cmds {
            sh(cmd);
        }
        assert_eq!(in_ns(&lab.f, || rx_queues("f0")), queues);
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.c, &self.f, &self.s] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Moves the calling thread into namespace `ns` (threads it spawns afterwards start there too).
pub fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open netns");
    // SAFETY: `f` is an open namespace file; setns affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a fresh thread inside namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .expect("namespace thread")
}

/// A UDP socket without checksums: veth leaves them to offload, which AF_XDP copies do not finish.
pub fn udp(bind: &str) -> UdpSocket {
    let s = UdpSocket::bind(bind).expect("bind udp");
    let one: i32 = 1;
    // SAFETY: SO_NO_CHECK takes an int; `one` lives across the call.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&one as *const i32).cast(),
            4,
        )
    };
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

/// An echo server on `addr` in `ns`, running for at most `secs`; returns the datagrams it echoed.
pub fn echo_server(ns: &str, addr: &'static str, secs: u64) -> std::thread::JoinHandle<usize> {
    let ns = ns.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        enter(&ns);
        let s = udp(addr);
        tx.send(()).unwrap();
        let end = Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while Instant::now() < end {
            if let Ok((len, from)) = s.recv_from(&mut buf) {
                if &buf[..len] == b"stop" {
                    break;
                }
                let _ = s.send_to(&buf[..len], from);
                n += 1;
            }
        }
        n
    });
    rx.recv().unwrap();
    h
}

/// From namespace `ns`: send `count` datagrams to `to`, return how many distinct echoes came back.
pub fn client(ns: &str, bind: &'static str, to: SocketAddr, count: usize, cpu: Option<usize>) -> usize {
    in_ns(ns, move || {
        if let Some(c) = cpu {
            // SAFETY: cpu_set_t is plain old data; the set is fully initialised before use.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(c, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
        let s = udp(bind);
        let mut got = std::collections::HashSet::new();
        let end = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        for i in 0..count {
            let msg = format!("xvs-{i}");
            // Resend until echoed: the first datagram may wait for ARP.
            for _ in 0..10 {
                if Instant::now() > end {
                    break;
                }
                let _ = s.send_to(msg.as_bytes(), to);
                match s.recv_from(&mut buf) {
                    Ok((len, _)) => {
                        got.insert(buf[..len].to_vec());
                        if got.contains(msg.as_bytes()) {
                            break;
                        }
                    }
                    Err(_) => continue,
                }
            }
        }
        got.len()
    })
}

/// Forwards IPv4/UDP frames between port 0 (client side) and port 1 (server side), rewriting the
/// MACs; passes everything else to the kernel.
pub struct Swap;

const C_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
const F0_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const F1_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
const S_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x0b];

impl Process for Swap {
    fn process(&mut self, frame: &mut Frame<'_>, in_port: u16, _now: Instant) -> Verdict {
        let b = frame.bytes_mut();
        if b.len() < 34 || b[12..14] != [0x08, 0x00] || b[23] != 17 {
            return Verdict::PassToKernel;
        }
        let server = [198, 18, 2, 11];
        let ours = if in_port == 0 {
            b[30..34] == server
        } else {
            b[26..30] == server
        };
        if !ours {
            return Verdict::PassToKernel;
        }
        let (dst, src, out) = if in_port == 0 {
            (S_MAC, F1_MAC, 1)
        } else {
            (C_MAC, F0_MAC, 0)
        };
        b[0..6].copy_from_slice(&dst);
        b[6..12].copy_from_slice(&src);
        Verdict::Forward { port: out }
    }
    fn between_batches(&mut self, _now: Instant) {}
}
