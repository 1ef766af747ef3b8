//! The VRRP namespace lab shared by `tests/vrrp_interop.rs` and `bench/failover.rs`: a bridge
//! namespace with two "director" namespaces `a` (198.18.5.1) and `b` (198.18.5.2) on
//! 198.18.5.0/24 and 2001:2:0:5::/64, `xvs vrrp` and keepalived (`-P`) started inside them, all
//! removed on drop (also when a test or the bench panics).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use xvs::lab::netns::{Netns, veth};

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
    p: String,
    // Drop order: directors first (their processes die with them), then the bridge.
    pub a: Netns,
    pub b: Netns,
    pub br: Netns,
    files: Vec<PathBuf>,
}

impl Pair {
    pub fn new() -> Pair {
        Pair::named(&prefix("xv"))
    }

    /// The lab with namespaces `{p}-br`, `{p}-a` and `{p}-b`.
    pub fn named(p: &str) -> Pair {
        let p = p.to_string();
        let ns = |role: &str| {
            let name = format!("{p}-{role}");
            Netns::create(&name).unwrap_or_else(|e| panic!("creating namespace {name}: {e}"))
        };
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
        let must = |r: Result<String, _>| {
            r.unwrap_or_else(|e: xvs::lab::netns::NetnsError| panic!("setting up the VRRP lab: {e}"))
        };
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
        let name = format!("{}-{role}", self.p);
        let ns = Netns::create(&name).unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        attach_to(&self.br, &ns, dev, &format!("p{dev}"), n);
        ns
    }

    pub fn ns(&self, side: char) -> &Netns {
        if side == 'a' { &self.a } else { &self.b }
    }

    fn file(&mut self, name: &str, text: &str) -> PathBuf {
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
            .stderr(log_file(&log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {XVS} vrrp: {e}"));
        Proc { child, vrrp_pid: None }
    }

    /// Starts keepalived (VRRP only) on `side`.
    pub fn keepalived(&mut self, side: char, inst: &Inst) -> Proc {
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
        let addr = vip.split('/').next().unwrap_or(vip);
        let out = self
            .ns(side)
            .ip(&["-br", "addr", "show", "dev", &format!("v{side}")])
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
}

pub fn inst(priority: u8, advert: &str, version: u8, vip: &'static str) -> Inst {
    Inst {
        priority,
        advert: advert.to_string(),
        version,
        vip,
        nopreempt: false,
    }
}

/// A running `xvs vrrp` or keepalived; killed when dropped.
pub struct Proc {
    pub child: Child,
    /// keepalived's VRRP child pid file.
    vrrp_pid: Option<PathBuf>,
}

impl Proc {
    pub fn signal(&mut self, sig: i32) {
        let parent = self.child.id() as i32;
        let vrrp = self.vrrp_pid.as_ref().and_then(|f| {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        });
        // keepalived's hard kill: the parent is stopped first, so that it neither restarts its VRRP
        // child nor, by dying first, lets the child's parent-death signal (SIGTERM) start a clean
        // shutdown that sends priority 0; then the child and the parent are killed.
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

/// Puts `ns` on the bridge: veth `dev` in `ns`, `peer` in the bridge namespace, addresses `n`.
fn attach_to(br: &Netns, ns: &Netns, dev: &str, peer: &str, n: u8) {
    let must = |r: Result<_, xvs::lab::netns::NetnsError>| {
        r.unwrap_or_else(|e| panic!("attaching {} to the bridge: {e}", ns.name()))
    };
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

fn log_file(path: &std::path::Path) -> std::fs::File {
    std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
}
