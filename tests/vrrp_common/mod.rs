//! The VRRP namespace lab shared by `tests/vrrp_interop.rs`, `tests/vrrp_io.rs` and
//! `bench/failover.rs`: a bridge namespace with two "director" namespaces `a` (198.18.5.1) and `b`
//! (198.18.5.2) on 198.18.5.0/24 and 2001:2:0:5::/64, `xvs vrrp` and keepalived (`-P`) started
//! inside them, all removed on drop (also when a test or the bench panics); frame capture and
//! notify-script helpers for observing them.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xvs::lab::netns::{Netns, NetnsError, veth};

pub const XVS: &str = env!("CARGO_BIN_EXE_xvs");

pub fn runnable() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: not root");
        return false;
    }
    if Command::new("keepalived").arg("--version").output().is_err() {
        eprintln!("skipped: keepalived is not installed (scripts/setup installs it)");
        return false;
    }
    true
}

/// A per-run namespace prefix: `tag`, this process's id and a counter.
pub fn prefix(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bridge and two directors `a` (198.18.5.1, dev `va`) and `b` (198.18.5.2, dev `vb`).
pub struct Pair {
    pub p: String,
    // Drop order: directors first (their processes die with them), then the bridge.
    pub a: Netns,
    pub b: Netns,
    pub br: Netns,
    pub files: Vec<PathBuf>,
}

impl Pair {
    pub fn new() -> Pair {
        Pair::named(&prefix("xv"))
    }

    /// The lab with namespaces `{p}-br`, `{p}-a` and `{p}-b`.
    pub fn named(p: &str) -> Pair {
        let p = p.to_string();
        let ns = |role: &str| create(&format!("{p}-{role}"));
        let br = ns("br");
        let a = ns("a");
        let b = ns("b");
        // No duplicate address detection: link-local addresses usable at once, for both daemons.
        for ns in [&a, &b] {
            ns.sysctl(&[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ])
            .unwrap_or_else(|e| panic!("accept_dad=0 in {}: {e}", ns.name()));
        }
        let must = |r: Result<String, NetnsError>| r.unwrap_or_else(|e| panic!("setting up the VRRP lab: {e}"));
        must(br.ip(&["link", "add", "br0", "type", "bridge"]));
        must(br.ip(&["link", "set", "br0", "up"]));
        for (ns, dev, peer, n) in [(&a, "va", "pa", 1), (&b, "vb", "pb", 2)] {
            attach_to(&br, ns, dev, peer, n);
        }
        // Link-local addresses come with the link; wait until both have one (bounded).
        for _ in 0..200 {
            let ok = [(&a, "va"), (&b, "vb")].iter().all(|(ns, d)| {
                ns.ip(&["-6", "addr", "show", "dev", d, "scope", "link"])
                    .is_ok_and(|s| s.contains("fe80"))
            });
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Pair {
            p,
            a,
            b,
            br,
            files: Vec::new(),
        }
    }

    /// A further namespace `{p}-{role}` on the bridge, with 198.18.5.`n`/24 and
    /// 2001:2:0:5::`n`/64 on `dev` (its bridge port is `p{dev}`); the caller owns it.
    pub fn attach(&self, role: &str, dev: &str, n: u8) -> Netns {
        let ns = create(&format!("{}-{role}", self.p));
        attach_to(&self.br, &ns, dev, &format!("p{dev}"), n);
        ns
    }

    pub fn ns(&self, side: char) -> &Netns {
        if side == 'a' { &self.a } else { &self.b }
    }

    /// Writes `text` to the temporary file `{p}-{name}`, removed when the lab is dropped.
    pub fn file(&mut self, name: &str, text: &str) -> PathBuf {
        let f = std::env::temp_dir().join(format!("{}-{name}", self.p));
        std::fs::write(&f, text).unwrap_or_else(|e| panic!("writing {}: {e}", f.display()));
        if !self.files.contains(&f) {
            self.files.push(f.clone());
        }
        f
    }

    /// Starts `xvs vrrp` on `side`.
    pub fn xvs(&mut self, side: char, inst: &Inst) -> Proc {
        let dev = format!("v{side}");
        let mut t = format!(
            "{}[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"{dev}\"\nvirtual_router_id = 51\npriority = {}\nadvert_int = {}\nversion = {}\nvirtual_ipaddress = [\"{}\"]\n",
            inst.before, inst.priority, inst.advert, inst.version, inst.vip
        );
        if inst.nopreempt {
            t.push_str("nopreempt = true\n");
        }
        t.push_str(&inst.extra);
        self.xvs_raw(side, &t)
    }

    /// Starts `xvs vrrp` on `side` with configuration `t`.
    pub fn xvs_raw(&mut self, side: char, t: &str) -> Proc {
        let cfg = self.file(&format!("x{side}.toml"), t);
        let log = self.file(&format!("x{side}.log"), "");
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns(side).name(), XVS, "vrrp", "-c"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {XVS} vrrp: {e}"));
        Proc { child, vrrp_pid: None }
    }

    /// Starts keepalived (VRRP only) on `side`.
    pub fn keepalived(&mut self, side: char, inst: &Inst) -> Proc {
        let dev = format!("v{side}");
        let t = format!(
            "global_defs {{\n  max_auto_priority -1\n}}\n{}vrrp_instance VI_1 {{\n  state BACKUP\n  interface {dev}\n  virtual_router_id 51\n  priority {}\n  advert_int {}\n  version {}\n{}{}  virtual_ipaddress {{\n    {}\n  }}\n}}\n",
            inst.before,
            inst.priority,
            inst.advert,
            inst.version,
            if inst.nopreempt { "  nopreempt\n" } else { "" },
            inst.extra,
            inst.vip
        );
        let cfg = self.file(&format!("k{side}.conf"), &t);
        let pid = self.file(&format!("k{side}.pid"), "");
        let vpid = self.file(&format!("k{side}.vpid"), "");
        let log = self.file(&format!("k{side}.log"), "");
        let _ = std::fs::remove_file(&pid);
        let _ = std::fs::remove_file(&vpid);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns(side).name(),
                "keepalived",
                "-P",
                "-n",
                "-l",
                "-f",
            ])
            .arg(&cfg)
            .arg("-p")
            .arg(&pid)
            .arg("-r")
            .arg(&vpid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting keepalived: {e}"));
        Proc {
            child,
            vrrp_pid: Some(vpid),
        }
    }

    /// Whether `vip` is on `side`'s interface.
    pub fn has(&self, side: char, vip: &str) -> bool {
        self.has_on(side, &format!("v{side}"), vip)
    }

    /// Whether `vip` is on interface `dev` of `side`.
    pub fn has_on(&self, side: char, dev: &str, vip: &str) -> bool {
        let addr = vip.split('/').next().unwrap_or(vip);
        let out = self
            .ns(side)
            .ip(&["-br", "addr", "show", "dev", dev])
            .unwrap_or_default();
        out.split_whitespace().any(|w| w.split('/').next() == Some(addr))
    }

    /// Waits (bounded) until `vip` is on `side` and not on the other; the time it took.
    pub fn wait_master(&self, side: char, vip: &str, limit: Duration) -> Duration {
        let other = if side == 'a' { 'b' } else { 'a' };
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if self.has(side, vip) && !self.has(other, vip) {
                return t0.elapsed();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.dump();
        panic!("{side} did not become the only master of {vip} within {limit:?}");
    }

    /// Waits (bounded) until `vip` is on interface `dev` of `side` and not on `dev` of the other.
    pub fn wait_master_dev(&self, side: char, dev: &str, vip: &str, limit: Duration) -> Duration {
        let other = if side == 'a' { 'b' } else { 'a' };
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if self.has_on(side, dev, vip) && !self.has_on(other, dev, vip) {
                return t0.elapsed();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.dump();
        panic!("{side} did not become the only master of {vip} on {dev} within {limit:?}");
    }

    /// Whether `side` has a link named `dev`.
    pub fn has_link(&self, side: char, dev: &str) -> bool {
        self.ns(side).ip(&["link", "show", "dev", dev]).is_ok()
    }

    /// Asserts that `side` stays the only holder of `vip` for `d`.
    pub fn stays_master(&self, side: char, vip: &str, d: Duration) {
        let other = if side == 'a' { 'b' } else { 'a' };
        let t0 = Instant::now();
        while t0.elapsed() < d {
            if !self.has(side, vip) || self.has(other, vip) {
                self.dump();
                panic!("{side} lost {vip} after {:?}", t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn dump(&self) {
        for f in &self.files {
            if f.extension().is_some_and(|e| e == "log") {
                eprintln!(
                    "--- {}:\n{}",
                    f.display(),
                    std::fs::read_to_string(f).unwrap_or_default()
                );
            }
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

pub struct Inst {
    pub priority: u8,
    pub advert: String,
    pub version: u8,
    pub vip: &'static str,
    pub nopreempt: bool,
    /// More lines for the instance: TOML for xvs, keepalived syntax for keepalived.
    pub extra: String,
    /// Whole blocks before the instance (vrrp_script, global_defs additions for keepalived).
    pub before: String,
}

pub fn inst(priority: u8, advert: &str, version: u8, vip: &'static str) -> Inst {
    Inst {
        priority,
        advert: advert.to_string(),
        version,
        vip,
        nopreempt: false,
        extra: String::new(),
        before: String::new(),
    }
}

/// A running `xvs vrrp` or keepalived; killed when dropped.
pub struct Proc {
    pub child: Child,
    /// keepalived's VRRP child pid file.
    pub vrrp_pid: Option<PathBuf>,
}

impl Proc {
    /// Sends `sig`. For keepalived, SIGKILL is a hard failure of its VRRP child too: the parent
    /// is stopped first, so that it neither restarts the child nor, by dying first, lets the
    /// child's parent-death signal (SIGTERM) start a clean shutdown that sends priority 0 (a
    /// takeover after Skew_Time, not after Master_Down_Interval); then the child and the parent
    /// are killed.
    pub fn signal(&mut self, sig: i32) {
        let parent = self.child.id() as i32;
        let vrrp = self.vrrp_pid.as_ref().and_then(|f| {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        });
        let steps: Vec<(i32, i32)> = match (sig, vrrp) {
            (libc::SIGKILL, Some(v)) => vec![(parent, libc::SIGSTOP), (v, sig), (parent, sig)],
            _ => vec![(parent, sig)],
        };
        for (p, s) in steps {
            // SAFETY: plain syscall on a pid this test started.
            unsafe { libc::kill(p, s) };
        }
    }
    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self) {
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    /// Waits until keepalived wrote its VRRP child's pid (bounded).
    pub fn ready(&self) {
        if let Some(f) = &self.vrrp_pid {
            for _ in 0..300 {
                if std::fs::read_to_string(f).is_ok_and(|s| !s.trim().is_empty()) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Master_Down_Interval for a backup of `priority` with advert `cs` centiseconds.
pub fn master_down(priority: u32, cs: u32) -> Duration {
    Duration::from_micros(u64::from(3 * cs * 10_000 + (256 - priority) * cs * 10_000 / 256))
}

/// Skew_Time for a backup of `priority` with advert `cs` centiseconds.
pub fn skew_time(priority: u32, cs: u32) -> Duration {
    Duration::from_micros(u64::from((256 - priority) * cs * 10_000 / 256))
}

/// Creates the namespace `name`.
fn create(name: &str) -> Netns {
    Netns::create(name).unwrap_or_else(|e| panic!("creating namespace {name}: {e}"))
}

/// Puts `ns` on the bridge: veth `dev` in `ns`, `peer` in the bridge namespace, addresses `n`.
fn attach_to(br: &Netns, ns: &Netns, dev: &str, peer: &str, n: u8) {
    let must = |r: Result<(), NetnsError>| r.unwrap_or_else(|e| panic!("attaching {} to the bridge: {e}", ns.name()));
    must(veth(ns, dev, br, peer, 1));
    must(br.ip(&["link", "set", peer, "master", "br0"]).map(drop));
    must(
        ns.ip(&["addr", "add", &format!("198.18.5.{n}/24"), "dev", dev])
            .map(drop),
    );
    must(
        ns.ip(&["addr", "add", &format!("2001:2:0:5::{n}/64"), "dev", dev, "nodad"])
            .map(drop),
    );
}

/// Creates the log file `path` for a daemon's standard error.
fn log_file(path: &std::path::Path) -> std::fs::File {
    std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
}

pub const VIP4: &str = "198.18.5.100/24";
pub const VIP6: &str = "2001:2:0:5::100/64";
/// Slack for process scheduling on a busy 2-core machine and for the 2 ms observation step.
pub const SLACK: Duration = Duration::from_millis(400);

/// Frames seen on one interface of a namespace (an AF_PACKET socket, all protocols), collected by
/// a thread until dropped; the reading loop is bounded by a 50 ms receive timeout and a stop flag.
/// Captured frames with the time each was read.
pub type Frames = Vec<(Instant, Vec<u8>)>;

pub struct Capture {
    frames: Arc<Mutex<Frames>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    pub fn start(ns: &Netns, dev: &str) -> Capture {
        let dev = dev.to_string();
        let fd = ns
            .run(move || {
                let idx = xvs::io::ifindex(&dev).map_err(std::io::Error::other)?;
                // SAFETY: plain syscall; the result is checked.
                let raw = unsafe {
                    libc::socket(
                        libc::AF_PACKET,
                        libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                        i32::from((libc::ETH_P_ALL as u16).to_be()),
                    )
                };
                if raw < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: a fresh descriptor owned by nobody else.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                // SAFETY: all-zero is a valid sockaddr_ll.
                let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                ll.sll_family = libc::AF_PACKET as u16;
                ll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                ll.sll_ifindex = idx as i32;
                // SAFETY: `ll` is a valid sockaddr_ll of the size passed.
                let r = unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        (&ll as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 50_000,
                };
                // SAFETY: `tv` is a valid timeval of the size passed.
                unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&tv as *const libc::timeval).cast(),
                        std::mem::size_of::<libc::timeval>() as u32,
                    )
                };
                Ok(fd)
            })
            .unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, st) = (frames.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            let t0 = Instant::now();
            while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(120) {
                // SAFETY: `buf` is writable for its length.
                let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    f.lock().unwrap().push((Instant::now(), buf[..n as usize].to_vec()));
                }
            }
        });
        Capture {
            frames,
            stop,
            thread: Some(thread),
        }
    }

    /// The frames seen so far.
    pub fn frames(&self) -> Frames {
        self.frames.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.frames.lock().unwrap().clear();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The VRRP adverts (IPv4 protocol 112 or IPv6 next header 112) among `frames`: (source MAC,
/// VRID, priority).
pub fn adverts(frames: &[(Instant, Vec<u8>)]) -> Vec<([u8; 6], u8, u8)> {
    frames
        .iter()
        .filter_map(|(_, f)| {
            let ty = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
            let vrrp = match ty {
                0x0800 if *f.get(23)? == 112 => f.get(14 + usize::from(f[14] & 0xf) * 4..)?,
                0x86dd if *f.get(20)? == 112 => f.get(54..)?,
                _ => return None,
            };
            Some((f[6..12].try_into().ok()?, *vrrp.get(1)?, *vrrp.get(2)?))
        })
        .collect()
}

/// Writes an executable shell script that appends its arguments (after `tag`) to `out`.
pub fn recorder(l: &mut Pair, name: &str, out: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let f = l.file(name, &format!("#!/bin/sh\necho \"$*\" >> {}\n", out.display()));
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    f
}

/// Waits (bounded) until `file` has a line equal to `line`.
pub fn wait_line(file: &std::path::Path, line: &str, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if std::fs::read_to_string(file).is_ok_and(|s| s.lines().any(|l| l.trim() == line)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
