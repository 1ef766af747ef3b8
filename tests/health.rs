//! Health checks end to end in the namespace lab (root only): for each checker type, a real
//! server's service is stopped and must stop getting new connections within
//! fall x interval + timeout while the others serve every request; started again, it is back
//! after rise x interval. Also: a connection open to a healthy server is not disturbed, the sorry
//! server takes a service whose servers are all down, and misc_dynamic weights change the spread.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Director, XVS, root};
use xvs::lab::client;
use xvs::lab::netns::NsChild;

/// Checks every 0.4 s; a server is down after 2 failures (retry 1) 0.2 s apart, each bounded by 0.4 s.
const INTERVAL: f64 = 0.4;
const TIMEOUT: f64 = 0.4;
const FALL: f64 = 2.0;
const RISE: f64 = 1.0;
/// Slack for a loaded 2-core machine: process start-up, the director's 50 ms loop, log writes.
const SLACK: f64 = 1.0;

const VIP: &str = "198.18.0.10";

fn server(addr: &str, port: u16, weight: u32, check: &str) -> String {
    format!(
        "  [[virtual_server.real_server]]\n  address = \"{addr}\"\n  port = {port}\n  weight = {weight}\n  {check}\n"
    )
}

fn service(port: u16, algo: &str, extra: &str, servers: &[String]) -> String {
    format!(
        "[[virtual_server]]\nname = \"svc{port}\"\nvip = \"{VIP}\"\nport = {port}\nlb_algo = \"{algo}\"\nlb_kind = \"NAT\"\ndelay_loop = {INTERVAL}\n{extra}\n{}\n",
        servers.concat()
    )
}

const RS: [&str; 3] = ["198.18.2.11", "198.18.2.12", "198.18.2.13"];

/// The lab's interfaces and one NAT service per checker type, all on the extra servers
/// (HTTP 8080, HTTPS 8443) that the test starts and stops, plus a sorry-server service.
fn config(flags: &str) -> String {
    let timing = format!("connect_timeout = {TIMEOUT}, retry = 1, delay_before_retry = 0.2");
    let each = |port: u16, check: &dyn Fn(usize) -> String| -> Vec<String> {
        (0..3).map(|i| server(RS[i], port, 1, &check(i))).collect()
    };
    let mut t = String::from(
        "[global]\nworkers = 1\nio = \"af_xdp\"\n\n[[interface]]\nname = \"lb0\"\naddress = [\"198.18.1.1/24\"]\n\n[[interface]]\nname = \"lb1\"\naddress = [\"198.18.2.1/24\"]\n\n",
    );
    t += &service(8080, "rr", "", &each(8080, &|_| format!("TCP_CHECK = {{ {timing} }}")));
    t += &service(
        8081,
        "rr",
        "",
        &each(8080, &|_| {
            format!("HTTP_GET = {{ url = [{{ path = \"/\", status_code = 200 }}], {timing} }}")
        }),
    );
    t += &service(
        8082,
        "rr",
        "",
        &each(8080, &|_| {
            format!("SSL_GET = {{ url = [{{ path = \"/\" }}], connect_port = 8443, {timing} }}")
        }),
    );
    // MISC_CHECK: the exit status is read from a file per server (missing: 0).
    t += &service(
        8083,
        "wrr",
        "",
        &each(8080, &|i| {
            format!(
                "MISC_CHECK = {{ misc_path = \"exit $(cat {flags}-rs{} 2>/dev/null || echo 0)\", misc_timeout = 1, misc_dynamic = true, retry = 0 }}",
                i + 1
            )
        }),
    );
    // rs1 and rs2 checked on port 9090 (a server the test starts and stops); rs3 is the sorry server.
    let sorry: Vec<String> = (0..2)
        .map(|i| {
            server(
                RS[i],
                8080,
                1,
                &format!("TCP_CHECK = {{ connect_port = 9090, {timing} }}"),
            )
        })
        .collect();
    t += &service(
        8084,
        "rr",
        "sorry_server = { address = \"198.18.2.13\", port = 8080 }",
        &sorry,
    );
    t
}

/// The extra servers of one real server: HTTP on `http`, and HTTPS on 8443 when asked.
fn start_server(d: &Director, rs: usize, http: u16, https: bool) -> NsChild {
    let name = format!("rs{}", rs + 1);
    let port = http.to_string();
    let mut argv = vec![
        XVS,
        "lab",
        "serve",
        "--name",
        &name,
        "--http-port",
        &port,
        "--udp-port",
        "0",
    ];
    if https {
        argv.extend(["--https-port", "8443"]);
    }
    let child = d.lab.ns(&name).spawn(&argv).expect("start server");
    // Wait until it listens (asked from inside its own namespace).
    let addr: SocketAddr = format!("{}:{http}", RS[rs]).parse().unwrap();
    let t = Instant::now();
    while d
        .lab
        .ns(&name)
        .run(move || Ok(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err()))
        .unwrap()
    {
        assert!(t.elapsed() < Duration::from_secs(5), "{name}:{http} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn vip(port: u16) -> SocketAddr {
    format!("{VIP}:{port}").parse().unwrap()
}

/// `n` requests to the service, every one answered; per-server counts [rs1, rs2, rs3].
fn spread(d: &mut Director, port: u16, n: usize) -> [usize; 3] {
    let c = match client::http_counts(d.cli(), vip(port), n) {
        Ok(c) => c,
        // Stopping prints the director's counters, drops by reason included.
        Err(e) => panic!("GET {VIP}:{port}: {e}\n{}", d.stop()),
    };
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    [get("rs1"), get("rs2"), get("rs3")]
}

/// Sets the exit status that rs`n`'s MISC_CHECK reads; atomically, so a check never reads half a write.
fn misc_status(flags: &str, n: usize, status: &str) {
    let tmp = format!("{flags}-tmp");
    std::fs::write(&tmp, status).unwrap();
    std::fs::rename(&tmp, format!("{flags}-rs{n}")).unwrap();
}

/// Where the director's log ends now: what happens after is looked for from there on.
fn mark(d: &Director) -> usize {
    d.log_text().len()
}

/// Waits until the director's log has `line` after `from`; the time it took.
fn wait_log(d: &Director, line: &str, from: usize, limit: f64) -> f64 {
    let t = Instant::now();
    loop {
        if d.log_text().get(from..).is_some_and(|s| s.contains(line)) {
            return t.elapsed().as_secs_f64();
        }
        assert!(
            t.elapsed().as_secs_f64() < limit + 5.0,
            "never saw {line:?}:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until every server that went down while the test servers were starting is back.
fn settle(d: &Director) {
    std::thread::sleep(Duration::from_secs_f64(2.0 * INTERVAL + TIMEOUT));
    let t = Instant::now();
    loop {
        let log = d.log_text();
        if log.matches(" is DOWN").count() == log.matches(" is UP").count()
            && log.matches("quorum lost").count() == log.matches("quorum regained").count()
        {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "servers did not settle:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn checkers_drive_the_backend_set() {
    if !root() {
        return;
    }
    let flags = std::env::temp_dir().join(format!("xvs-health-{}", std::process::id()));
    let flags = flags.display().to_string();
    let mut d = Director::with_config(&config(&flags), 1);
    let mut servers: Vec<Option<NsChild>> = (0..3).map(|i| Some(start_server(&d, i, 8080, true))).collect();
    let mut probes: Vec<Option<NsChild>> = (0..2).map(|i| Some(start_server(&d, i, 9090, false))).collect();
    // The director started checking before the servers listened: let the early failures recover.
    settle(&d);

    // Everything up: rr spreads evenly.
    for port in [8080, 8081, 8082, 8083] {
        assert_eq!(spread(&mut d, port, 9), [3, 3, 3], "service {port}:\n{}", d.log_text());
    }
    assert_eq!(
        spread(&mut d, 8084, 4),
        [2, 2, 0],
        "the sorry server is out while the quorum holds"
    );

    // A connection open to a healthy server (rs2 or rs3).
    let keep = d
        .cli()
        .run(|| {
            for _ in 0..6 {
                let s = std::net::TcpStream::connect_timeout(&vip(8080), client::TIMEOUT)?;
                s.set_read_timeout(Some(client::TIMEOUT))?;
                let mut r = std::io::BufReader::new(s.try_clone()?);
                let mut w = s;
                std::io::Write::write_all(&mut w, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
                let (_, body) = xvs::lab::serve::read_response(&mut r)?;
                if body != b"rs1\n" {
                    return Ok((r, w, body));
                }
            }
            Err(std::io::Error::other("never reached rs2 or rs3"))
        })
        .unwrap();
    let (mut kr, mut kw, kname) = keep;

    // rs1's HTTP and HTTPS stop: TCP_CHECK, HTTP_GET and SSL_GET must take it out in time.
    let m = mark(&d);
    servers[0] = None;
    let bound = FALL * INTERVAL + TIMEOUT + SLACK;
    for svc in ["svc8080", "svc8081", "svc8082"] {
        let took = wait_log(&d, &format!("real server 198.18.2.11:8080 of {svc} is DOWN"), m, bound);
        eprintln!("{svc}: rs1 out after at most {took:.2} s (bound {bound:.1} s)");
        assert!(took <= bound, "{svc} took {took:.2} s:\n{}", d.log_text());
    }
    for port in [8080, 8081, 8082] {
        let s = spread(&mut d, port, 12);
        assert_eq!(s[0], 0, "service {port} still sends to rs1: {s:?}");
        assert_eq!(s[1] + s[2], 12);
    }
    // The open connection to a healthy server still answers, on the same server.
    for _ in 0..3 {
        std::io::Write::write_all(&mut kw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (status, body) = xvs::lab::serve::read_response(&mut kr).unwrap();
        assert_eq!((status, &body), (200, &kname));
    }

    // Back: within rise x interval.
    let m = mark(&d);
    servers[0] = Some(start_server(&d, 0, 8080, true));
    let bound = RISE * INTERVAL + TIMEOUT + SLACK;
    for svc in ["svc8080", "svc8081", "svc8082"] {
        let took = wait_log(&d, &format!("real server 198.18.2.11:8080 of {svc} is UP"), m, bound);
        assert!(took <= bound, "{svc} took {took:.2} s to come back");
    }
    for port in [8080, 8081, 8082] {
        assert_eq!(spread(&mut d, port, 9), [3, 3, 3], "service {port}");
    }

    // MISC_CHECK: exit 1 takes rs2 out; misc_dynamic exit 12 gives it weight 10; exit 0 restores 1.
    let m = mark(&d);
    misc_status(&flags, 2, "1");
    wait_log(&d, "real server 198.18.2.12:8080 of svc8083 is DOWN", m, bound);
    assert_eq!(spread(&mut d, 8083, 8), [4, 0, 4]);
    let m = mark(&d);
    misc_status(&flags, 2, "12");
    wait_log(&d, "real server 198.18.2.12:8080 of svc8083 is UP", m, bound);
    assert_eq!(
        spread(&mut d, 8083, 12),
        [1, 10, 1],
        "misc_dynamic weight 10 against 1 and 1"
    );
    let m = mark(&d);
    misc_status(&flags, 2, "0");
    wait_log(&d, "configured weight restored", m, bound);
    assert_eq!(spread(&mut d, 8083, 9), [3, 3, 3]);

    // Sorry server: both checked servers down, rs3 takes the service; one back, it leaves.
    let m = mark(&d);
    probes[0] = None;
    probes[1] = None;
    wait_log(&d, "svc8084: quorum lost", m, FALL * INTERVAL + TIMEOUT + SLACK);
    assert_eq!(spread(&mut d, 8084, 6), [0, 0, 6], "the sorry server takes it all");
    let m = mark(&d);
    probes[1] = Some(start_server(&d, 1, 9090, false));
    wait_log(&d, "svc8084: quorum regained", m, RISE * INTERVAL + TIMEOUT + SLACK);
    assert_eq!(spread(&mut d, 8084, 4), [0, 4, 0]);

    let log = d.stop();
    assert!(!log.contains("panicked"), "{log}");
    for i in 1..=3 {
        let _ = std::fs::remove_file(format!("{flags}-rs{i}"));
    }
    drop(probes);
    drop(servers);
}
