//! Reloads under load: `cargo bench --bench reload` (root; otherwise it says why and exits 0).
//!
//! The namespace lab with `xvs run` on the embedded default configuration. The client keeps
//! `CONNS` keep-alive HTTP connections busy (request/response rounds, through the NAT and FULLNAT
//! services) and a UDP echo stream with sequence numbers (through NAT), for `SECS` seconds, twice:
//! once quietly, and once while the director is reloaded every 250 ms, alternately by SIGHUP with a
//! weight changed in the file and by `xvs ctl -e` (each reload publishes a new snapshot). Figures:
//! rounds and failed rounds, connections that broke, UDP echoes lost, and the director's drop
//! counters, for both phases side by side.
//!
//! Environment: `XVS_RELOAD_SECS` (seconds per phase, default 10).

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use xvs::lab::{Lab, LabOpts, serve};

const XVS: &str = env!("CARGO_BIN_EXE_xvs");
const CONNS: usize = 8;

#[derive(Default)]
struct Counts {
    rounds: AtomicU64,
    failed: AtomicU64,
    broken: AtomicU64,
    udp_sent: AtomicU64,
    udp_lost: AtomicU64,
    udp_late: AtomicU64,
}

/// Keep-alive rounds on one connection until `stop`; a failure breaks the connection (counted)
/// and a new one is opened.
fn tcp_load(vip: SocketAddr, stop: &AtomicBool, c: &Counts) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(s) = TcpStream::connect_timeout(&vip, Duration::from_secs(1)) else {
            c.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let Ok(rs) = s.try_clone() else { continue };
        let mut r = BufReader::new(rs);
        let mut w = s;
        let mut name: Option<Vec<u8>> = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let ok = w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_ok()
                && match serve::read_response(&mut r) {
                    // The same server every round: the connection was kept, not rescheduled.
                    Ok((200, body)) => name.get_or_insert_with(|| body.clone()) == &body,
                    _ => false,
                };
            if ok {
                c.rounds.fetch_add(1, Ordering::Relaxed);
            } else {
                c.failed.fetch_add(1, Ordering::Relaxed);
                c.broken.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// One echo at a time with a sequence number; an echo not back within 1 s is lost (one back after
/// 100 ms is counted as late too, to tell delay from loss on this busy 2-core machine).
fn udp_load(vip: SocketAddr, stop: &AtomicBool, c: &Counts) {
    let Ok(s) = UdpSocket::bind("0.0.0.0:0") else { return };
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 256];
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let msg = seq.to_string();
        c.udp_sent.fetch_add(1, Ordering::Relaxed);
        if s.send_to(msg.as_bytes(), vip).is_err() {
            c.udp_lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let sent = Instant::now();
        let deadline = sent + Duration::from_secs(1);
        let mut got = false;
        while Instant::now() < deadline {
            match s.recv(&mut buf) {
                // The echo is "rsN <msg>".
                Ok(n) if buf[..n].ends_with(msg.as_bytes()) => {
                    got = true;
                    break;
                }
                // An earlier echo arriving late, or the 100 ms read timeout: keep waiting.
                Ok(_) | Err(_) => continue,
            }
        }
        if !got {
            c.udp_lost.fetch_add(1, Ordering::Relaxed);
        } else if sent.elapsed() > Duration::from_millis(100) {
            c.udp_late.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The director's counters line at exit ("xvs: stopped: ..."), parsed into (dropped, reasons).
fn dropped(log: &str) -> (u64, String) {
    let Some(line) = log.lines().rev().find(|l| l.starts_with("xvs: stopped:")) else {
        return (u64::MAX, "no counters".into());
    };
    let n = line
        .split(" dropped ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    let reasons: Vec<&str> = line
        .split(" tx_full ")
        .nth(1)
        .map(|r| r.split_whitespace().skip(1).collect())
        .unwrap_or_default();
    (n, reasons.join(" "))
}

struct Phase {
    name: &'static str,
    reloads: u32,
    counts: Counts,
    dropped: u64,
    reasons: String,
}

fn phase(lab: &Lab, name: &'static str, secs: u64, reload: bool) -> Phase {
    let dir = std::env::temp_dir();
    let config = dir.join(format!("{}-reload.toml", lab.prefix()));
    let log = dir.join(format!("{}-reload.log", lab.prefix()));
    let sock = dir.join(format!("{}-reload.sock", lab.prefix()));
    let text = xvs::config::DEFAULT.replace(
        "batch_size = 64",
        &format!("batch_size = 64\nadmin_socket = \"{}\"", sock.display()),
    );
    std::fs::write(&config, &text).expect("write the configuration");
    let mut child: Child = Command::new("ip")
        .args(["netns", "exec", lab.ns("lb").name(), XVS, "run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log"))
        .spawn()
        .expect("start xvs");
    let t = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("SIGTERM stop")
    {
        assert!(t.elapsed() < Duration::from_secs(10), "xvs did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Warm up: the director learns the client's MAC from its first replies (the first one is
    // dropped as no_neighbour and resolved), so the measured phase starts from a steady state.
    let ctl_counters = || {
        Command::new(XVS)
            .args(["ctl", "--socket"])
            .arg(&sock)
            .arg("counters")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let _ = lab.ns("cli").run(|| {
        for vip in ["198.18.0.10:80", "198.18.0.11:80"] {
            let _ = xvs::lab::client::http_counts_here(vip.parse().unwrap(), 2);
        }
        let _ = xvs::lab::client::udp_counts_here("198.18.0.10:7".parse().unwrap(), 2);
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let before = ctl_counters();
    let dropped_before: u64 = before
        .split(" dropped ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for i in 0..CONNS {
        let (c, st) = (counts.clone(), stop.clone());
        let ns = lab.ns("cli").name().to_string();
        let vip: SocketAddr = if i % 2 == 0 { "198.18.0.10:80" } else { "198.18.0.11:80" }
            .parse()
            .unwrap();
        threads.push(std::thread::spawn(move || {
            let ns = xvs::lab::netns::Netns::existing(&ns);
            let _ = ns.run(move || {
                tcp_load(vip, &st, &c);
                Ok(())
            });
        }));
    }
    {
        let (c, st) = (counts.clone(), stop.clone());
        let ns = lab.ns("cli").name().to_string();
        threads.push(std::thread::spawn(move || {
            let ns = xvs::lab::netns::Netns::existing(&ns);
            let _ = ns.run(move || {
                udp_load("198.18.0.10:7".parse().unwrap(), &st, &c);
                Ok(())
            });
        }));
    }
    let start = Instant::now();
    let mut reloads = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(250));
        if !reload {
            continue;
        }
        reloads += 1;
        if reloads % 2 == 0 {
            // SIGHUP with the NAT weights changed in the file.
            let w = if reloads % 4 == 0 { "weight = 3" } else { "weight = 4" };
            let edited = text.replacen("weight = 3", w, 1);
            let _ = std::fs::write(&config, edited);
            // SAFETY: a signal to our own child (`ip netns exec` execs xvs in place).
            unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
        } else {
            let w = if reloads % 4 == 1 { "1" } else { "2" };
            let _ = Command::new(XVS)
                .args(["ctl", "--socket"])
                .arg(&sock)
                .args(["-e", "-t", "198.18.0.11:80", "-r", "198.18.2.12:80", "-w", w])
                .output();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let (dropped, reasons) = dropped(&text);
    let dropped = dropped.saturating_sub(dropped_before);
    let reasons = format!(
        "{reasons}; before the load: {}",
        before.lines().last().unwrap_or("").trim()
    );
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(&log);
    let counts = Arc::try_unwrap(counts).unwrap_or_default();
    Phase {
        name,
        reloads,
        counts,
        dropped,
        reasons,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench`: the suite has its own
        // tests, so a quick exit here.
        eprintln!("reload bench: run it with cargo bench --bench reload");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("reload bench: skipped: not root (namespaces and XDP)");
        return;
    }
    let secs: u64 = std::env::var("XVS_RELOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let lab = Lab::up(
        &LabOpts {
            prefix: format!("xrl{}", std::process::id() % 100_000),
            queues: 1,
            serve_exe: Some(XVS.into()),
            ha: false,
        },
        &mut |_| {},
    )
    .expect("lab up");
    let quiet = phase(&lab, "no reloads", secs, false);
    let busy = phase(&lab, "reload every 250 ms", secs, true);
    println!(
        "\nreload bench: {CONNS} keep-alive HTTP connections (NAT and FULLNAT) + one UDP echo stream, {secs} s per phase\n"
    );
    println!(
        "| phase | reloads | HTTP rounds | failed rounds | connections broken | UDP echoes | UDP lost (none in 1 s) | UDP late (> 100 ms) | director drops |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for p in [&quiet, &busy] {
        let c = &p.counts;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
            p.name,
            p.reloads,
            c.rounds.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.broken.load(Ordering::Relaxed),
            c.udp_sent.load(Ordering::Relaxed),
            c.udp_lost.load(Ordering::Relaxed),
            c.udp_late.load(Ordering::Relaxed),
            p.dropped,
            if p.reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.reasons)
            }
        );
    }
    drop(lab);
}
