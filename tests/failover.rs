//! Director failover end to end (root only): two `xvs run` directors in the HA lab share the VIPs
//! and the floating gateways with VRRP (advert 0.1 s); a client keeps making HTTP requests to a NAT
//! and a FULLNAT service while the master is killed (its links go down with it, as a dead box's
//! would), while it comes back and preempts, and while it stops cleanly (priority 0). The requests
//! keep succeeding once the backup has taken over; the gaps are measured and printed.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{XVS, prefix, root};
use xvs::lab::{Lab, LabOpts, serve};

/// VRRP advert interval (s) and the bound on one takeover: Master_Down_Interval
/// (3 x 0.1 s + skew) plus GARP, a snapshot publish and the client's retry, with room for a loaded
/// 2-core machine.
const ADVERT: f64 = 0.1;
const GAP_LIMIT: Duration = Duration::from_secs(3);

fn config(lb0: &str, lb1: &str, priority: u8) -> String {
    let rs: String = (11..=13)
        .map(|i| format!("  [[virtual_server.real_server]]\n  address = \"198.18.2.{i}\"\n  port = 80\n"))
        .collect();
    format!(
        r#"[global]
workers = 1
io = "af_xdp"

[[interface]]
name = "lb0"
address = ["{lb0}/24"]

[[interface]]
name = "lb1"
address = ["{lb1}/24"]

[[virtual_server]]
name = "nat"
vip = "198.18.0.10"
port = 80
lb_algo = "rr"
lb_kind = "NAT"
{rs}
[[virtual_server]]
name = "fullnat"
vip = "198.18.0.11"
port = 80
lb_algo = "rr"
lb_kind = "FULLNAT"
laddr = ["198.18.3.1"]
{rs}
[[vrrp_instance]]
name = "VI_CLI"
interface = "lb0"
virtual_router_id = 51
priority = {priority}
advert_int = {ADVERT}
virtual_ipaddress = ["198.18.1.254/24", "198.18.0.10/32", "198.18.0.11/32"]

[[vrrp_instance]]
name = "VI_SRV"
interface = "lb1"
virtual_router_id = 52
priority = {priority}
advert_int = {ADVERT}
virtual_ipaddress = ["198.18.2.254/24"]

[[vrrp_sync_group]]
name = "G"
group = ["VI_CLI", "VI_SRV"]
"#
    )
}

/// One `xvs run` in a director namespace, killed on drop.
struct Run {
    ns: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Run {
    fn new(ns: &str, text: &str) -> Run {
        let dir = std::env::temp_dir();
        let config = dir.join(format!("{ns}.toml"));
        std::fs::write(&config, text).unwrap();
        let mut r = Run {
            ns: ns.into(),
            log: dir.join(format!("{ns}.log")),
            config,
            child: None,
        };
        r.start();
        r
    }

    fn start(&mut self) {
        let out = std::fs::File::create(&self.log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, XVS, "run", "-c"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_log("SIGTERM stop", Duration::from_secs(10));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, what: &str, limit: Duration) {
        let t = Instant::now();
        while !self.log().contains(what) {
            assert!(t.elapsed() < limit, "{}: no {what:?}:\n{}", self.ns, self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&mut self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: a signal to our own child (`ip netns exec` execs xvs in place).
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn wait_exit(&mut self) {
        if let Some(mut c) = self.child.take() {
            let t = Instant::now();
            while c.try_wait().unwrap().is_none() {
                assert!(t.elapsed() < Duration::from_secs(10), "{} did not stop", self.ns);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Requests made by the client while something happens: (start time, success).
struct Load {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<(Instant, bool)>>>,
}

/// One GET on a new connection, with short timeouts so that a failover shows as a short run of
/// failures rather than as one request stuck in retransmission.
fn get(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100))?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        let mut r = std::io::BufReader::new(s.try_clone()?);
        let mut w = s;
        std::io::Write::write_all(&mut w, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let (status, body) = serve::read_response(&mut r)?;
        Ok(status == 200 && body.starts_with(b"rs"))
    };
    attempt().unwrap_or(false)
}

impl Load {
    /// Alternates NAT and FULLNAT requests from the client namespace, for at most 30 s.
    fn start(lab: &Lab) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let path = format!("/run/netns/{}", lab.ns("cli").name());
        let handle = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(path).unwrap();
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let vips: [SocketAddr; 2] = ["198.18.0.10:80".parse().unwrap(), "198.18.0.11:80".parse().unwrap()];
            let t0 = Instant::now();
            let mut out = Vec::new();
            let mut i = 0;
            while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(30) {
                let t = Instant::now();
                let ok = get(vips[i % 2]);
                out.push((t, ok));
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            out
        });
        Load {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<(Instant, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// What the client saw from an event at `at` on: the outage (from the first failed request to
/// the first success after the last failure; zero if none failed), the time from the event to that
/// recovery, the failed requests, and the successes after the recovery.
struct Outage {
    outage: Duration,
    recovered_after: Duration,
    failed: usize,
    ok_after: usize,
}

fn outage(reqs: &[(Instant, bool)], at: Instant) -> Outage {
    let after: Vec<&(Instant, bool)> = reqs.iter().filter(|r| r.0 >= at).collect();
    let failed = after.iter().filter(|r| !r.1).count();
    let Some(last_fail) = after.iter().rposition(|r| !r.1) else {
        return Outage {
            outage: Duration::ZERO,
            recovered_after: Duration::ZERO,
            failed: 0,
            ok_after: after.len(),
        };
    };
    let first_fail = after.iter().position(|r| !r.1).unwrap_or(last_fail);
    let rec = after[last_fail..]
        .iter()
        .position(|r| r.1)
        .map(|k| last_fail + k)
        .unwrap_or_else(|| panic!("no request succeeded after the last failure ({} tried)", after.len()));
    Outage {
        outage: after[rec].0 - after[first_fail].0,
        recovered_after: after[rec].0 - at,
        failed,
        ok_after: after.len() - rec,
    }
}

/// Lets the load run for `wait` after the event at `at`.
fn settle(at: Instant, wait: Duration) {
    while at.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn report(what: &str, o: &Outage) {
    eprintln!(
        "{what}: {} requests failed, outage {:.0} ms, served again {:.0} ms after the event, then {} in a row succeeded",
        o.failed,
        o.outage.as_secs_f64() * 1e3,
        o.recovered_after.as_secs_f64() * 1e3,
        o.ok_after
    );
    assert!(o.outage < GAP_LIMIT, "{what}: outage {:?}", o.outage);
    assert!(o.ok_after >= 20, "{what}: too few requests after the recovery");
}

#[test]
fn requests_keep_succeeding_across_director_failover() {
    if !root() {
        return;
    }
    let p = prefix();
    let lab = Lab::up(
        &LabOpts {
            prefix: p.clone(),
            queues: 1,
            serve_exe: Some(XVS.into()),
            ha: true,
        },
        &mut |_| {},
    )
    .expect("lab up");
    let (n1, n2) = (lab.ns("lb").name().to_string(), lab.ns("lb2").name().to_string());
    let mut d1 = Run::new(&n1, &config("198.18.1.1", "198.18.2.1", 150));
    let d2 = Run::new(&n2, &config("198.18.1.3", "198.18.2.3", 100));
    d1.wait_log("VI_CLI is MASTER", Duration::from_secs(5));
    d1.wait_log("VI_SRV is MASTER", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !d2.log().contains("is MASTER"),
        "both masters:\n{}\n{}",
        d1.log(),
        d2.log()
    );

    // Hard failure of the master: its process dies and its links go down with it.
    let load = Load::start(&lab);
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    d1.signal(libc::SIGKILL);
    for dev in ["lb0", "lb1"] {
        lab.ns("lb").ip(&["link", "set", dev, "down"]).unwrap();
    }
    d2.wait_log("VI_CLI is MASTER", Duration::from_secs(5));
    settle(killed, Duration::from_secs(2));
    let o = outage(&load.finish(), killed);
    report("master killed", &o);
    assert!(o.recovered_after < GAP_LIMIT, "{}", d2.log());
    d1.wait_exit();

    // The old master returns (links up, xvs restarted) and preempts with its higher priority.
    for dev in ["lb0", "lb1"] {
        lab.ns("lb").ip(&["link", "set", dev, "up"]).unwrap();
    }
    let load = Load::start(&lab);
    std::thread::sleep(Duration::from_millis(300));
    let back = Instant::now();
    d1.start();
    d1.wait_log("VI_CLI is MASTER", Duration::from_secs(5));
    d2.wait_log("VI_CLI is BACKUP", Duration::from_secs(5));
    let preempted = Instant::now();
    settle(preempted, Duration::from_millis(1500));
    report("preemption by the returning master", &outage(&load.finish(), back));

    // Clean stop: priority 0 hands over at once.
    let load = Load::start(&lab);
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    d1.signal(libc::SIGTERM);
    d2.wait_log("VI_CLI is MASTER", Duration::from_secs(5));
    d1.wait_exit();
    settle(stopped, Duration::from_millis(1500));
    report("master stopped cleanly (priority 0)", &outage(&load.finish(), stopped));
    assert!(d1.log().contains("stopped"), "{}", d1.log());
    drop(d2);
    drop(lab);
}
