//! Checkers against real sockets and programs on this host (loopback, no root needed), and the
//! engine's effect on the configuration.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use super::probe::{Probe, judge, misc_outcome};
use super::*;
use crate::config::{self, Url};
use crate::lab::serve::{self, ServeOpts};

fn md5hex(b: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// One check parsed from a TOML fragment for a real server at `addr`.
fn check(addr: SocketAddr, block: &str) -> Check {
    let text = format!(
        "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = {port}\n[[virtual_server.real_server]]\naddress = \"{ip}\"\nport = {port}\n{block}\n",
        ip = addr.ip(),
        port = addr.port()
    );
    let mut c = config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}\n{text}"));
    c.services.remove(0).real_servers.remove(0).checks.remove(0)
}

/// Runs one probe to its end.
fn probe(c: &Check) -> Outcome {
    let tls = match &c.kind {
        CheckKind::Http(h) => h
            .tls
            .as_ref()
            .map(|t| probe::tls_config(t.verify, t.ca_file.as_deref(), t.sni).unwrap()),
        _ => None,
    };
    let start = Instant::now();
    let mut p = match Probe::start(c, tls, start) {
        Ok(p) => p,
        Err(o) => return o,
    };
    loop {
        let now = Instant::now();
        if let Some(o) = p.advance(c, now) {
            return o;
        }
        assert!(now - start < Duration::from_secs(10), "probe never ended");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn lab_server(name: &str, https: bool, ca: Option<std::path::PathBuf>) -> serve::Servers {
    serve::start(&ServeOpts {
        name: name.into(),
        http_port: 0,
        udp_port: 0,
        https_port: https.then_some(0),
        ca_out: ca,
    })
    .unwrap()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port with nothing listening on it.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `N` distinct ports nothing listens on: bound all at once, then released (two calls of
/// `closed_port` can get the same port back).
fn closed_ports<const N: usize>() -> [u16; N] {
    let ls: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| ls[i].local_addr().unwrap().port())
}

const UP: Outcome = Outcome::Up { weight: None };

#[test]
fn tcp_check_connects_or_names_the_refusal() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = check(l.local_addr().unwrap(), "TCP_CHECK = { connect_timeout = 2 }");
    assert_eq!(probe(&c), UP);
    let c = check(local(closed_port()), "TCP_CHECK = { connect_timeout = 2 }");
    assert_eq!(probe(&c), Outcome::Down("connect: connection refused".into()));
}

#[test]
fn tcp_check_uses_connect_port_and_times_out_on_a_full_backlog() {
    use socket2::{Domain, Socket, Type};
    // A listener with a backlog of 0 that never accepts: once its queue is full, new handshakes
    // are never answered (the SYNs are dropped), so a check can only time out.
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&local(0).into()).unwrap();
    s.listen(0).unwrap();
    let addr: SocketAddr = s.local_addr().unwrap().as_socket().unwrap();
    // connect_port overrides the server's port.
    let c = check(
        local(closed_port()),
        &format!(
            "TCP_CHECK = {{ connect_port = {}, connect_timeout = 0.3 }}",
            addr.port()
        ),
    );
    assert_eq!(c.connect, addr);
    let mut fillers = Vec::new();
    let mut timed_out = false;
    for _ in 0..8 {
        match probe(&c) {
            Outcome::Up { .. } => {}
            Outcome::Down(r) => {
                assert_eq!(r, "connect timed out after 0.3 s");
                timed_out = true;
                break;
            }
        }
        // Keep one more connection queued.
        fillers.push(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)));
    }
    assert!(timed_out, "the backlog never filled");
}

#[test]
fn http_get_checks_status_and_digest() {
    let s = lab_server("web1", false, None);
    let port = s.http.port();
    let ok = md5hex(b"web1\n");
    let c = check(
        local(port),
        &format!(
            "HTTP_GET = {{ url = [{{ path = \"/\", digest = \"{ok}\" }}, {{ path = \"/bytes/1000\", status_code = 200 }}] }}"
        ),
    );
    assert_eq!(probe(&c), UP);
    let c = check(
        local(port),
        &format!(
            "HTTP_GET = {{ url = [{{ path = \"/\", digest = \"{}\" }}] }}",
            md5hex(b"other\n")
        ),
    );
    assert!(matches!(probe(&c), Outcome::Down(r) if r.contains("digest")));
    let c = check(local(port), "HTTP_GET = { url = [{ path = \"/missing\" }] }");
    assert_eq!(
        probe(&c),
        Outcome::Down("GET /missing: status 404, expected 200-299".into())
    );
    let c = check(
        local(port),
        "HTTP_GET = { url = [{ path = \"/missing\", status_code = [\"400-404\"] }], http_protocol = \"1.1\" }",
    );
    assert_eq!(probe(&c), UP);
    let c = check(local(closed_port()), "HTTP_GET = { url = [{ path = \"/\" }] }");
    assert_eq!(probe(&c), Outcome::Down("connect: connection refused".into()));
}

#[test]
fn http_get_fails_on_a_server_that_accepts_and_says_nothing() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = check(
        l.local_addr().unwrap(),
        "HTTP_GET = { url = [{ path = \"/\" }], connect_timeout = 0.3 }",
    );
    let o = probe(&c);
    assert_eq!(o, Outcome::Down("no complete answer to GET / within 0.3 s".into()));
    drop(l);
}

#[test]
fn ssl_get_with_and_without_certificate_checks() {
    let dir = std::env::temp_dir().join(format!("xvs-ca-{}", std::process::id()));
    let s = lab_server("tls1", true, Some(dir.clone()));
    let port = s.https.unwrap().port();
    let digest = md5hex(b"tls1\n");
    // keepalived's default: any certificate, here one signed by an unknown CA...
    let c = check(
        local(port),
        &format!("SSL_GET = {{ url = [{{ path = \"/\", digest = \"{digest}\" }}] }}"),
    );
    assert_eq!(probe(&c), UP);
    // Verified against the lab CA, by name.
    let c = check(
        local(port),
        &format!(
            "SSL_GET = {{ url = [{{ path = \"/\" }}], verify_cert = true, ca_file = \"{}\", virtualhost = \"{}\" }}",
            dir.display(),
            serve::TLS_NAME
        ),
    );
    assert_eq!(probe(&c), UP);
    // A name the certificate does not have.
    let c = check(
        local(port),
        &format!(
            "SSL_GET = {{ url = [{{ path = \"/\" }}], verify_cert = true, ca_file = \"{}\", virtualhost = \"other.example\" }}",
            dir.display()
        ),
    );
    assert!(
        matches!(probe(&c), Outcome::Down(r) if r.starts_with("TLS")),
        "name mismatch must fail"
    );
    // ... or a self-signed one.
    let selfsigned = lab_server("tls2", true, None);
    let c = check(
        local(selfsigned.https.unwrap().port()),
        "SSL_GET = { url = [{ path = \"/\" }] }",
    );
    assert_eq!(probe(&c), UP);
    // Plain HTTP against the TLS port fails.
    let c = check(
        local(port),
        "HTTP_GET = { url = [{ path = \"/\" }], connect_timeout = 1 }",
    );
    assert!(matches!(probe(&c), Outcome::Down(_)));
    let _ = std::fs::remove_file(dir);
}

#[test]
fn misc_check_exit_codes_and_timeout() {
    let at = local(80);
    assert_eq!(probe(&check(at, "MISC_CHECK = { misc_path = \"exit 0\" }")), UP);
    assert_eq!(
        probe(&check(at, "MISC_CHECK = { misc_path = \"exit 1\" }")),
        Outcome::Down("exit status 1".into())
    );
    assert_eq!(
        probe(&check(at, "MISC_CHECK = { misc_path = \"exit 7\" }")),
        Outcome::Down("exit status 7".into()),
        "without misc_dynamic any non-zero status is down"
    );
    assert_eq!(
        probe(&check(
            at,
            "MISC_CHECK = { misc_path = \"exit 7\", misc_dynamic = true }"
        )),
        Outcome::Up { weight: Some(5) }
    );
    let t0 = Instant::now();
    let o = probe(&check(
        at,
        "MISC_CHECK = { misc_path = \"sleep 30\", misc_timeout = 0.2 }",
    ));
    assert_eq!(o, Outcome::Down("did not finish within 0.2 s (killed)".into()));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn misc_outcome_mapping() {
    use std::os::unix::process::ExitStatusExt;
    let st = |code: i32| std::process::ExitStatus::from_raw(code << 8);
    assert_eq!(misc_outcome(st(0), true), UP);
    assert_eq!(misc_outcome(st(1), true), Outcome::Down("exit status 1".into()));
    assert_eq!(misc_outcome(st(2), true), Outcome::Up { weight: Some(0) });
    assert_eq!(misc_outcome(st(255), true), Outcome::Up { weight: Some(253) });
    assert_eq!(
        misc_outcome(std::process::ExitStatus::from_raw(9), false),
        Outcome::Down("killed by signal 9".into())
    );
}

#[test]
fn judge_reads_partial_answers() {
    let url = |digest: Option<[u8; 16]>| Url {
        path: "/".into(),
        status: vec![(200, 299)],
        digest,
    };
    assert_eq!(judge(b"HTTP/1.1 200 OK\r\nContent-Le", &url(None), false), Ok(false));
    assert_eq!(judge(b"HTTP/1.1 204 No\r\n\r\n", &url(None), false), Ok(true));
    assert!(judge(b"garbage\r\n\r\n", &url(None), false).is_err());
    assert!(judge(b"", &url(None), true).is_err());
    let d: [u8; 16] = {
        use md5::Digest;
        md5::Md5::digest(b"abc").into()
    };
    let r = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nab";
    assert_eq!(judge(r, &url(Some(d)), false), Ok(false));
    assert!(judge(r, &url(Some(d)), true).is_err(), "cut short");
    assert_eq!(
        judge(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", &url(Some(d)), false),
        Ok(true)
    );
    assert_eq!(
        judge(b"HTTP/1.0 200 OK\r\n\r\nabc", &url(Some(d)), false),
        Ok(false),
        "no length: read to the end"
    );
    assert_eq!(judge(b"HTTP/1.0 200 OK\r\n\r\nabc", &url(Some(d)), true), Ok(true));
}

/// A service of two local servers with fast checks, plus `extra` service-level keys.
fn two_servers(a: u16, b: u16, extra: &str, rs_extra: &str) -> Config {
    let text = format!(
        r#"[[virtual_server]]
vip = "198.18.0.10"
port = 80
delay_loop = 0.05
{extra}
[[virtual_server.real_server]]
address = "127.0.0.1"
port = {a}
weight = 3
{rs_extra}
TCP_CHECK = {{ connect_timeout = 0.5, retry = 0, delay_before_retry = 0.05 }}
[[virtual_server.real_server]]
address = "127.0.0.1"
port = {b}
weight = 2
{rs_extra}
TCP_CHECK = {{ connect_timeout = 0.5, retry = 0, delay_before_retry = 0.05 }}
"#
    );
    config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"))
}

/// Polls until a change, for at most 3 s.
fn until_change(h: &mut HealthChecks, cfg: &Config) {
    let t0 = Instant::now();
    while !h.poll(cfg, Duration::from_millis(20)) {
        assert!(t0.elapsed() < Duration::from_secs(3), "no change; log: {:?}", h.log);
    }
}

fn weights(c: &Config) -> Vec<(u16, u32)> {
    c.services[0].real_servers.iter().map(|r| (r.port, r.weight)).collect()
}

#[test]
fn a_dead_server_leaves_and_comes_back() {
    let la = TcpListener::bind("127.0.0.1:0").unwrap();
    let lb = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (la.local_addr().unwrap().port(), lb.local_addr().unwrap().port());
    let cfg = two_servers(a, b, "", "");
    let mut h = HealthChecks::new(&cfg, Instant::now());
    assert_eq!(h.len(), 2);
    assert_eq!(weights(&h.effective(&cfg)), vec![(a, 3), (b, 2)]);
    drop(lb);
    until_change(&mut h, &cfg);
    assert_eq!(weights(&h.effective(&cfg)), vec![(a, 3)]);
    assert!(
        h.log
            .iter()
            .any(|l| l.contains(&format!("127.0.0.1:{b}")) && l.contains("DOWN")),
        "{:?}",
        h.log
    );
    let st = h.status();
    assert_eq!(st.iter().filter(|s| s.up).count(), 1);
    let lb = TcpListener::bind(("127.0.0.1", b)).unwrap();
    until_change(&mut h, &cfg);
    assert_eq!(weights(&h.effective(&cfg)), vec![(a, 3), (b, 2)]);
    drop(lb);
}

#[test]
fn inhibit_on_failure_keeps_the_server_at_weight_zero() {
    let la = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = closed_port();
    let a = la.local_addr().unwrap().port();
    let cfg = two_servers(a, b, "", "inhibit_on_failure = true");
    let mut h = HealthChecks::new(&cfg, Instant::now());
    until_change(&mut h, &cfg);
    assert_eq!(weights(&h.effective(&cfg)), vec![(a, 3), (b, 0)]);
}

#[test]
fn sorry_server_and_quorum_scripts() {
    let dir = std::env::temp_dir().join(format!("xvs-quorum-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let [a, b] = closed_ports();
    let cfg = two_servers(
        a,
        b,
        &format!(
            "sorry_server = {{ address = \"127.0.0.9\", port = 8080 }}\nquorum_down = \"echo down >> {0}\"\nquorum_up = \"echo up >> {0}\"",
            dir.display()
        ),
        "",
    );
    let mut h = HealthChecks::new(&cfg, Instant::now());
    assert!(h.has_quorum(Proto::Tcp, "198.18.0.10".parse().unwrap(), 80));
    // Both fail; the quorum (1) is lost once both are down.
    let t0 = Instant::now();
    while h.has_quorum(Proto::Tcp, "198.18.0.10".parse().unwrap(), 80) {
        h.poll(&cfg, Duration::from_millis(20));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", h.log);
    }
    let eff = h.effective(&cfg);
    let rs = &eff.services[0].real_servers;
    assert_eq!(rs.len(), 1);
    assert_eq!((rs[0].addr, rs[0].port), ("127.0.0.9".parse().unwrap(), 8080));
    assert!(h.log.iter().any(|l| l.contains("quorum lost")), "{:?}", h.log);
    // One comes back: the quorum is regained and the sorry server leaves.
    let _l = TcpListener::bind(("127.0.0.1", a)).unwrap();
    let t0 = Instant::now();
    while !h.has_quorum(Proto::Tcp, "198.18.0.10".parse().unwrap(), 80) {
        h.poll(&cfg, Duration::from_millis(20));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", h.log);
    }
    assert_eq!(weights(&h.effective(&cfg)), vec![(a, 3)]);
    // Scripts ran (they are asynchronous: wait for the file).
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&dir).unwrap_or_default();
        if text == "down\nup\n" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "scripts wrote {text:?}");
        h.poll(&cfg, Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(dir);
}

#[test]
fn misc_dynamic_weight_reaches_the_configuration() {
    let text = r#"[[virtual_server]]
vip = "198.18.0.10"
port = 80
delay_loop = 0.05
[[virtual_server.real_server]]
address = "198.18.2.11"
weight = 1
MISC_CHECK = { misc_path = "exit 12", misc_dynamic = true }
"#;
    let cfg = config::parse(text, "t").unwrap();
    let mut h = HealthChecks::new(&cfg, Instant::now());
    until_change(&mut h, &cfg);
    assert_eq!(weights(&h.effective(&cfg)), vec![(80, 10)]);
}

#[test]
fn reconfigure_keeps_the_state_of_unchanged_checkers() {
    let la = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = closed_port();
    let a = la.local_addr().unwrap().port();
    let cfg = two_servers(a, b, "", "");
    let mut h = HealthChecks::new(&cfg, Instant::now());
    until_change(&mut h, &cfg);
    assert_eq!(weights(&h.effective(&cfg)), vec![(a, 3)]);
    // Same checks, another weight: the down server stays down.
    let cfg2 = two_servers(a, b, "quorum = 2", "");
    h.reconfigure(&cfg2, Instant::now());
    assert_eq!(weights(&h.effective(&cfg2)), vec![(a, 3)]);
    // A server without checkers is always up.
    let mut cfg3 = cfg2.clone();
    cfg3.services[0].real_servers[1].checks.clear();
    h.reconfigure(&cfg3, Instant::now());
    assert_eq!(weights(&h.effective(&cfg3)), vec![(a, 3), (b, 2)]);
}

#[test]
fn keepalived_defaults() {
    let c = check(local(80), "TCP_CHECK = {}");
    assert_eq!(c.kind, CheckKind::Tcp);
    assert_eq!(c.timeout, Duration::from_secs(5));
    assert_eq!(c.bind, None);
    assert_eq!(
        c.policy,
        Policy {
            interval: Duration::from_secs(60),
            retry_delay: Duration::from_secs(1),
            fall: 2,
            rise: 1,
            alpha: false
        }
    );
    let c = check(local(80), "MISC_CHECK = { misc_path = \"true\", delay_loop = 7 }");
    assert_eq!(
        c.timeout,
        Duration::from_secs(7),
        "misc_timeout defaults to the interval"
    );
    let c = check(
        local(80),
        "HTTP_GET = { url = [{ path = \"/\" }], nb_get_retry = 3, bindto = \"127.0.0.2\" }",
    );
    assert_eq!(c.policy.fall, 4);
    assert_eq!(c.bind, Some(SocketAddr::from(([127, 0, 0, 2], 0))));
    match c.kind {
        CheckKind::Http(h) => {
            assert_eq!(h.urls[0].status, vec![(200, 299)]);
            assert!(!h.http11 && h.tls.is_none());
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn hundreds_of_servers_on_one_thread() {
    // 300 real servers behind 300 listeners, checked every 50 ms by the calling thread alone.
    let listeners: Vec<TcpListener> = (0..300).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let mut text = String::from("[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\ndelay_loop = 0.05\n");
    for l in &listeners {
        text += &format!(
            "[[virtual_server.real_server]]\naddress = \"127.0.0.1\"\nport = {}\nTCP_CHECK = {{ connect_timeout = 1, retry = 0 }}\n",
            l.local_addr().unwrap().port()
        );
    }
    let cfg = config::parse(&text, "t").unwrap();
    let mut h = HealthChecks::new(&cfg, Instant::now());
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let before = threads();
    let t0 = Instant::now();
    while h.status().iter().any(|s| s.last.is_none()) {
        h.poll(&cfg, Duration::from_millis(20));
        assert!(t0.elapsed() < Duration::from_secs(5), "not every server was checked");
    }
    assert!(h.status().iter().all(|s| s.up && s.last == Some(UP)));
    assert!(threads() <= before, "the checks started threads");
    // Half of them go away: exactly those leave.
    let (gone, _kept): (Vec<_>, Vec<_>) = listeners.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    drop(gone);
    let t0 = Instant::now();
    while h.effective(&cfg).services[0].real_servers.len() != 150 {
        h.poll(&cfg, Duration::from_millis(20));
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{} left",
            h.effective(&cfg).services[0].real_servers.len()
        );
    }
}

proptest::proptest! {
    /// Whatever a real server answers, judging it never panics, and a complete 2xx answer
    /// without a digest passes.
    #[test]
    fn judge_never_panics(resp in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), eof: bool) {
        let url = Url { path: "/".into(), status: vec![(200, 299)], digest: Some([7; 16]) };
        let _ = judge(&resp, &url, eof);
        let plain = Url { digest: None, ..url };
        let _ = judge(&resp, &plain, eof);
        let mut ok = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
        ok.extend_from_slice(&resp);
        proptest::prop_assert_eq!(judge(&ok, &plain, eof), Ok(true));
    }
}
