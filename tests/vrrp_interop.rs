//! VRRP interop in namespaces: `xvs vrrp` against keepalived 2.2.7 (`keepalived -P`) and against
//! itself. Two "director" namespaces on a bridge namespace (198.18.5.0/24, 2001:2:0:5::/64), VIP
//! 198.18.5.100 / 2001:2:0:5::100. State is observed as the VIP appearing on or leaving an
//! interface; takeover times are measured from the kill to the VIP on the new master and printed.
//! Root only; skipped with a reason when not root or without keepalived (scripts/setup installs it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use xvs::lab::netns::{Netns, veth};

const XVS: &str = env!("CARGO_BIN_EXE_xvs");

fn runnable() -> bool {
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

fn prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "xv{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bridge and two directors `a` (198.18.5.1, dev `va`) and `b` (198.18.5.2, dev `vb`).
struct Pair {
    p: String,
    // Drop order: directors first (their processes die with them), then the bridge.
    a: Netns,
    b: Netns,
    _br: Netns,
    files: Vec<PathBuf>,
}

impl Pair {
    fn new() -> Pair {
        let p = prefix();
        let br = Netns::create(&format!("{p}-br")).unwrap();
        let a = Netns::create(&format!("{p}-a")).unwrap();
        let b = Netns::create(&format!("{p}-b")).unwrap();
        // No duplicate address detection: link-local addresses usable at once, for both daemons.
        for ns in [&a, &b] {
            ns.sysctl(&[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ])
            .unwrap();
        }
        br.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
        br.ip(&["link", "set", "br0", "up"]).unwrap();
        for (ns, dev, peer, n) in [(&a, "va", "pa", 1), (&b, "vb", "pb", 2)] {
            veth(ns, dev, &br, peer, 1).unwrap();
            br.ip(&["link", "set", peer, "master", "br0"]).unwrap();
            ns.ip(&["addr", "add", &format!("198.18.5.{n}/24"), "dev", dev])
                .unwrap();
            ns.ip(&["addr", "add", &format!("2001:2:0:5::{n}/64"), "dev", dev, "nodad"])
                .unwrap();
        }
        // Link-local addresses come with the link; wait until both have one (bounded).
        for _ in 0..200 {
            let ok = [(&a, "va"), (&b, "vb")].iter().all(|(ns, d)| {
                ns.ip(&["-6", "addr", "show", "dev", d, "scope", "link"])
                    .unwrap()
                    .contains("fe80")
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
            _br: br,
            files: Vec::new(),
        }
    }

    fn ns(&self, side: char) -> &Netns {
        if side == 'a' { &self.a } else { &self.b }
    }

    fn file(&mut self, name: &str, text: &str) -> PathBuf {
        let f = std::env::temp_dir().join(format!("{}-{name}", self.p));
        std::fs::write(&f, text).unwrap();
        self.files.push(f.clone());
        f
    }

    /// Starts `xvs vrrp` on `side`.
    fn xvs(&mut self, side: char, inst: &Inst) -> Proc {
        let dev = format!("v{side}");
        let mut t = format!(
            "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"{dev}\"\nvirtual_router_id = 51\npriority = {}\nadvert_int = {}\nversion = {}\nvirtual_ipaddress = [\"{}\"]\n",
            inst.priority, inst.advert, inst.version, inst.vip
        );
        if inst.nopreempt {
            t.push_str("nopreempt = true\n");
        }
        let cfg = self.file(&format!("x{side}.toml"), &t);
        let log = self.file(&format!("x{side}.log"), "");
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns(side).name(), XVS, "vrrp", "-c"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, vrrp_pid: None }
    }

    /// Starts keepalived (VRRP only) on `side`.
    fn keepalived(&mut self, side: char, inst: &Inst) -> Proc {
        let dev = format!("v{side}");
        let t = format!(
            "global_defs {{\n  max_auto_priority -1\n}}\nvrrp_instance VI_1 {{\n  state BACKUP\n  interface {dev}\n  virtual_router_id 51\n  priority {}\n  advert_int {}\n  version {}\n{}  virtual_ipaddress {{\n    {}\n  }}\n}}\n",
            inst.priority,
            inst.advert,
            inst.version,
            if inst.nopreempt { "  nopreempt\n" } else { "" },
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
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child,
            vrrp_pid: Some(vpid),
        }
    }

    /// Whether `vip` is on `side`'s interface.
    fn has(&self, side: char, vip: &str) -> bool {
        let addr = vip.split('/').next().unwrap_or(vip);
        let out = self
            .ns(side)
            .ip(&["-br", "addr", "show", "dev", &format!("v{side}")])
            .unwrap_or_default();
        out.split_whitespace().any(|w| w.split('/').next() == Some(addr))
    }

    /// Waits (bounded) until `vip` is on `side` and not on the other; the time it took.
    fn wait_master(&self, side: char, vip: &str, limit: Duration) -> Duration {
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

    /// Asserts that `side` stays the only holder of `vip` for `d`.
    fn stays_master(&self, side: char, vip: &str, d: Duration) {
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

    fn dump(&self) {
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

struct Inst {
    priority: u8,
    advert: &'static str,
    version: u8,
    vip: &'static str,
    nopreempt: bool,
}

fn inst(priority: u8, advert: &'static str, version: u8, vip: &'static str) -> Inst {
    Inst {
        priority,
        advert,
        version,
        vip,
        nopreempt: false,
    }
}

/// A running `xvs vrrp` or keepalived; killed when dropped.
struct Proc {
    child: Child,
    /// keepalived's VRRP child pid file.
    vrrp_pid: Option<PathBuf>,
}

impl Proc {
    fn signal(&mut self, sig: i32) {
        // keepalived: the parent first, so that it does not restart its VRRP child.
        let mut pids = vec![self.child.id() as i32];
        if sig == libc::SIGKILL
            && let Some(f) = &self.vrrp_pid
            && let Some(p) = std::fs::read_to_string(f)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        {
            pids.push(p);
        }
        for p in pids {
            // SAFETY: plain syscall on a pid this test started.
            unsafe { libc::kill(p, sig) };
        }
    }
    /// Waits (bounded) for the process to exit.
    fn wait(&mut self) {
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    /// Waits until keepalived wrote its VRRP child's pid (bounded).
    fn ready(&self) {
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
fn master_down(priority: u32, cs: u32) -> Duration {
    Duration::from_micros(u64::from(3 * cs * 10_000 + (256 - priority) * cs * 10_000 / 256))
}

const VIP4: &str = "198.18.5.100/24";
const VIP6: &str = "2001:2:0:5::100/64";
/// Slack for process scheduling on a busy 2-core machine and for the 2 ms observation step.
const SLACK: Duration = Duration::from_millis(400);

#[test]
fn v3_ipv4_10ms_xvs_master_keepalived_backup_kill_preempt_stop() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let _ka = l.keepalived('b', &inst(100, "0.01", 3, VIP4));
    let mut x = l.xvs('a', &inst(150, "0.01", 3, VIP4));
    l.wait_master('a', VIP4, Duration::from_secs(5));
    l.stays_master('a', VIP4, Duration::from_millis(500));
    // Hard kill of the xvs master: its VIP stays on its (dead) interface, so watch b only.
    x.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while !l.has('b', VIP4) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t0.elapsed();
    eprintln!(
        "v3/10ms: keepalived took over {took:?} after SIGKILL of xvs (Master_Down_Interval {:?})",
        master_down(100, 1)
    );
    assert!(l.has('b', VIP4) && took <= master_down(100, 1) + SLACK, "{took:?}");
    x.wait();
    // xvs restarts (removing its stale VIP) and preempts the lower keepalived.
    let mut x = l.xvs('a', &inst(150, "0.01", 3, VIP4));
    let took = l.wait_master('a', VIP4, Duration::from_secs(3));
    eprintln!("v3/10ms: restarted xvs preempted in {took:?}");
    // Clean stop: priority 0, keepalived takes over after Skew_Time.
    x.signal(libc::SIGTERM);
    let took = l.wait_master('b', VIP4, Duration::from_secs(2));
    eprintln!("v3/10ms: keepalived took over {took:?} after SIGTERM of xvs (priority 0)");
    assert!(took <= Duration::from_millis(10) + SLACK, "{took:?}");
}

#[test]
fn v3_ipv4_10ms_keepalived_master_xvs_backup() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let mut ka = l.keepalived('a', &inst(150, "0.01", 3, VIP4));
    ka.ready();
    let _x = l.xvs('b', &inst(100, "0.01", 3, VIP4));
    l.wait_master('a', VIP4, Duration::from_secs(5));
    l.stays_master('a', VIP4, Duration::from_millis(500));
    ka.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while !l.has('b', VIP4) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t0.elapsed();
    eprintln!(
        "v3/10ms: xvs took over {took:?} after SIGKILL of keepalived (Master_Down_Interval {:?})",
        master_down(100, 1)
    );
    assert!(l.has('b', VIP4) && took <= master_down(100, 1) + SLACK, "{took:?}");
}

#[test]
fn v2_ipv4_1s_keepalived_master_clean_stop_then_xvs_nopreempt() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let mut ka = l.keepalived('a', &inst(150, "1", 2, VIP4));
    ka.ready();
    let _x = l.xvs('b', &inst(100, "1", 2, VIP4));
    l.wait_master('a', VIP4, Duration::from_secs(6));
    l.stays_master('a', VIP4, Duration::from_millis(1500));
    // Clean stop: keepalived sends priority 0; xvs takes over after Skew_Time (0.61 s).
    ka.signal(libc::SIGTERM);
    let took = l.wait_master('b', VIP4, Duration::from_secs(3));
    eprintln!("v2/1s: xvs took over {took:?} after SIGTERM of keepalived (priority 0)");
    assert!(took <= Duration::from_secs(1) + SLACK, "{took:?}");
    ka.wait();
    // keepalived returns with a higher priority but nopreempt: xvs stays master.
    let mut n = inst(150, "1", 2, VIP4);
    n.nopreempt = true;
    let _ka = l.keepalived('a', &n);
    l.stays_master('b', VIP4, Duration::from_millis(2500));
}

#[test]
fn v3_ipv6_10ms_keepalived_backup_preempted_by_xvs_and_stop() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let _ka = l.keepalived('b', &inst(100, "0.01", 3, VIP6));
    // keepalived alone becomes master.
    l.wait_master('b', VIP6, Duration::from_secs(5));
    // The higher-priority xvs arrives and preempts.
    let mut x = l.xvs('a', &inst(150, "0.01", 3, VIP6));
    let took = l.wait_master('a', VIP6, Duration::from_secs(3));
    eprintln!("v3/IPv6/10ms: xvs preempted keepalived in {took:?}");
    l.stays_master('a', VIP6, Duration::from_millis(500));
    x.signal(libc::SIGTERM);
    let took = l.wait_master('b', VIP6, Duration::from_secs(2));
    eprintln!("v3/IPv6/10ms: keepalived took over {took:?} after SIGTERM of xvs");
}

#[test]
fn xvs_with_xvs_v3_10ms() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let mut a = l.xvs('a', &inst(150, "0.01", 3, VIP4));
    let _b = l.xvs('b', &inst(100, "0.01", 3, VIP4));
    l.wait_master('a', VIP4, Duration::from_secs(5));
    l.stays_master('a', VIP4, Duration::from_millis(500));
    a.signal(libc::SIGTERM);
    let took = l.wait_master('b', VIP4, Duration::from_secs(2));
    eprintln!("xvs/xvs v3/10ms: takeover {took:?} after SIGTERM (priority 0)");
    a.wait();
    let mut a = l.xvs('a', &inst(150, "0.01", 3, VIP4));
    l.wait_master('a', VIP4, Duration::from_secs(3));
    a.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while !l.has('b', VIP4) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t0.elapsed();
    eprintln!(
        "xvs/xvs v3/10ms: takeover {took:?} after SIGKILL (Master_Down_Interval {:?})",
        master_down(100, 1)
    );
    assert!(l.has('b', VIP4) && took <= master_down(100, 1) + SLACK, "{took:?}");
}
