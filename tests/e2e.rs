//! End to end in the namespace lab: `xvs run` forwarding real TCP and UDP traffic with every
//! method, over IPv4 and IPv6, on each packet I/O backend. Root only (namespaces, XDP); each test
//! builds its own lab with a per-run prefix and removes it, also when it fails.

mod common;

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::time::Duration;

use std::process::{Command, Stdio};

use common::{Director, XVS, root};
use xvs::lab::{self, client};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn counts(c: &client::Counts) -> Vec<usize> {
    ["rs1", "rs2", "rs3"]
        .iter()
        .map(|n| c.get(*n).copied().unwrap_or(0))
        .collect()
}

/// Every virtual service of the default configuration, over TCP and UDP: every request answered,
/// spread exactly as the scheduler promises (NAT v4 is wrr 3:2:1, the rest rr).
fn every_service(d: &Director, rounds: usize) {
    let cases = [
        ("198.18.0.10", vec![6, 4, 2]),
        ("198.18.0.11", vec![4, 4, 4]),
        ("198.18.0.12", vec![4, 4, 4]),
        ("198.18.0.13", vec![4, 4, 4]),
        ("[2001:2::10]", vec![4, 4, 4]),
        ("[2001:2::11]", vec![4, 4, 4]),
        ("[2001:2::12]", vec![4, 4, 4]),
        ("[2001:2::13]", vec![4, 4, 4]),
    ];
    for (vip, want) in cases {
        let http = client::http_counts(d.cli(), sa(&format!("{vip}:80")), 12)
            .unwrap_or_else(|e| panic!("http {vip}: {e}\n{}", d.log_text()));
        assert_eq!(counts(&http), want, "HTTP to {vip}");
        let udp = client::udp_counts(d.cli(), sa(&format!("{vip}:7")), 12)
            .unwrap_or_else(|e| panic!("udp {vip}: {e}\n{}", d.log_text()));
        assert_eq!(counts(&udp), want, "UDP to {vip}");
    }
    // A long-lived connection stays on its real server, for NAT, FULLNAT, DR and TUN.
    for vip in [
        "198.18.0.10",
        "198.18.0.11",
        "198.18.0.12",
        "198.18.0.13",
        "[2001:2::11]",
        "[2001:2::13]",
    ] {
        let server = client::http_rounds(d.cli(), sa(&format!("{vip}:80")), rounds)
            .unwrap_or_else(|e| panic!("rounds {vip}: {e}"));
        assert!(server.starts_with("rs"), "{server}");
    }
    // Datagrams past the links' 1500-byte MTU travel in fragments, to the real server and back,
    // through every method but TUN (a full-size fragment does not fit in a tunnel, and xvs does
    // not fragment the outer packet).
    for vip in [
        "198.18.0.10",
        "198.18.0.11",
        "198.18.0.12",
        "[2001:2::10]",
        "[2001:2::11]",
        "[2001:2::12]",
    ] {
        let udp = client::udp_sized(d.cli(), sa(&format!("{vip}:7")), 3, 4000)
            .unwrap_or_else(|e| panic!("4000-byte UDP to {vip}: {e}\n{}", d.log_text()));
        assert_eq!(udp.values().sum::<usize>(), 3, "4000-byte UDP to {vip}: {udp:?}");
    }
    // 1 MB arrives intact through each method (through TUN after the client learns the tunnel's
    // smaller MTU from xvs's "fragmentation needed" / "packet too big").
    for vip in [
        "198.18.0.10",
        "198.18.0.11",
        "198.18.0.12",
        "198.18.0.13",
        "[2001:2::10]",
        "[2001:2::13]",
    ] {
        assert_eq!(
            client::http_bytes(d.cli(), sa(&format!("{vip}:80")), 1 << 20).unwrap(),
            1 << 20,
            "1 MB via {vip}"
        );
    }
}

/// While xvs runs, the director answers ping on its own addresses and can make health-check-style
/// connections to the real servers itself.
fn director_stays_reachable(d: &Director) {
    client::ping(d.cli(), "198.18.1.1".parse().unwrap()).expect("ping director v4");
    client::ping(d.cli(), "2001:2:0:1::1".parse().unwrap()).expect("ping director v6");
    let direct = client::http_counts(d.lab.ns("lb"), sa("198.18.2.11:80"), 3).expect("director to rs1");
    assert_eq!(counts(&direct), vec![3, 0, 0]);
}

fn backend(global: &str, want_io: &str) {
    if !root() {
        return;
    }
    let mut d = Director::start(global, 1);
    assert!(d.log_text().contains(want_io), "{}", d.log_text());
    every_service(&d, 1000);
    director_stays_reachable(&d);
    let log = d.stop();
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("tx_full="), "{log}");
    assert!(!d.xdp_left(), "xvs left a program attached");
}

#[test]
fn af_xdp_native() {
    backend("workers = 1\nio = \"af_xdp\"\nxdp_mode = \"native\"", "AF_XDP");
}

#[test]
fn af_xdp_generic() {
    backend("workers = 1\nio = \"af_xdp\"\nxdp_mode = \"generic\"", "AF_XDP");
}

#[test]
fn af_packet() {
    backend("workers = 1\nio = \"af_packet\"", "AF_PACKET");
}

/// Two workers on two-queue veths: clients sending from both CPUs land on both queues, both
/// workers carry traffic, and every connection (NAT and FULLNAT replies included) stays correct
/// whichever queue each of its packets arrives on.
#[test]
fn two_workers_on_two_queues() {
    if !root() {
        return;
    }
    let d = Director::start("workers = 2\nio = \"af_xdp\"", 2);
    // Transmit queue by sending CPU on the client's veth (veth has no RSS).
    for q in 0..2 {
        let path = format!("/sys/class/net/cli0/queues/tx-{q}/xps_cpus");
        d.cli()
            .exec(&["sh", "-c", &format!("echo {} > {path}", 1 << q)])
            .unwrap();
    }
    let prefix = d.lab.prefix().to_string();
    let runs: Vec<_> = ["0", "1"]
        .iter()
        .flat_map(|cpu| {
            ["198.18.0.10:80", "198.18.0.11:80"].map(|a| {
                Command::new("taskset")
                    .args([
                        "-c", cpu, XVS, "lab", "client", "--prefix", &prefix, "http", a, "-n", "30",
                    ])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
        })
        .collect();
    for c in runs {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let total: usize = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
            .sum();
        assert_eq!(total, 30);
    }
    let mut d = d;
    let log = d.stop();
    let per = log
        .lines()
        .find(|l| l.contains("per worker"))
        .unwrap_or_else(|| panic!("{log}"));
    let rx: Vec<u64> = per
        .rsplit(':')
        .next()
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(rx.len(), 2, "{per}");
    assert!(rx.iter().all(|&n| n > 0), "a worker carried nothing: {per}");
}

/// A director killed with SIGKILL leaves its XDP program behind; the next start replaces it,
/// forwards, and a clean stop leaves nothing.
#[test]
fn restart_after_sigkill() {
    if !root() {
        return;
    }
    let mut d = Director::start("workers = 1\nio = \"af_xdp\"", 1);
    d.signal(libc::SIGKILL);
    let _ = d.child.as_mut().unwrap().wait();
    d.child = None;
    assert!(
        d.xdp_left(),
        "SIGKILL should have left the program (else this test tests nothing)"
    );
    d.spawn();
    assert_eq!(
        counts(&client::http_counts(d.cli(), sa("198.18.0.11:80"), 3).unwrap()),
        vec![1, 1, 1]
    );
    d.stop();
    assert!(!d.xdp_left());
}

/// SIGHUP swaps in an edited configuration: an open connection keeps its real server and keeps
/// working; new connections follow the new weights; a broken file is refused and changes nothing.
#[test]
fn reload_keeps_connections() {
    if !root() {
        return;
    }
    let d = Director::start("workers = 1\nio = \"af_xdp\"", 1);
    // A keep-alive connection opened before the reload, from the client namespace.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (rtx, rrx) = std::sync::mpsc::channel::<String>();
    let ns = lab::netns::Netns::existing(d.cli().name());
    let conn = std::thread::spawn(move || {
        ns.run(move || {
            let mut s =
                std::net::TcpStream::connect_timeout(&"198.18.0.10:80".parse().unwrap(), Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            let ask = |s: &mut std::net::TcpStream| -> std::io::Result<String> {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
                let mut r = BufReader::new(s.try_clone()?);
                let (_, body) = lab::serve::read_response(&mut r)?;
                Ok(String::from_utf8_lossy(&body).trim().to_string())
            };
            let before = ask(&mut s)?;
            rtx.send(before.clone()).unwrap();
            rx.recv().unwrap();
            let after = ask(&mut s)?;
            Ok((before, after))
        })
    });
    let first = rrx.recv_timeout(Duration::from_secs(10)).expect("first answer");
    // Refused: a broken file.
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, good.replace("weight = 3", "weight = -3")).unwrap();
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.log_text().contains("reload refused"), "{}", d.log_text());
    // Accepted: NAT v4 becomes 1:1:1.
    std::fs::write(
        &d.config,
        good.replace("weight = 3", "weight = 1")
            .replace("weight = 2", "weight = 1"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.log_text().contains("reloaded"), "{}", d.log_text());
    tx.send(()).unwrap();
    let (before, after) = conn.join().unwrap().expect("the open connection survived the reload");
    assert_eq!((before.as_str(), after.as_str()), (first.as_str(), first.as_str()));
    let c = counts(&client::http_counts(d.cli(), sa("198.18.0.10:80"), 12).unwrap());
    assert_eq!(c.iter().sum::<usize>(), 12);
    assert!(c.iter().all(|&n| n == 4), "new weights not followed: {c:?}");
}
