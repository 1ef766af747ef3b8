//! `xvs import-keepalived` on the keepalived.conf files under tests/data/keepalived: each converts,
//! xvs accepts the result, the key values arrive in the resolved model, and everything that could
//! not be carried over is named in a warning with its file and line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use xvs::config::{CheckKind, Config};
use xvs::import::{Conversion, convert_file};
use xvs::types::{Method, Proto, SchedKind};
use xvs::vrrp::packet::Version;

fn data(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keepalived")).join(name)
}

/// Converts a sample and parses the TOML with xvs's own loader.
fn import(name: &str) -> (Conversion, Config) {
    let conv = convert_file(&data(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        conv.refused.is_empty(),
        "{name}: refused: {:?}\n{}",
        conv.refused,
        conv.toml
    );
    let cfg = xvs::config::parse(&conv.toml, name).unwrap_or_else(|e| panic!("{name}: {e}\n{}", conv.toml));
    (conv, cfg)
}

/// The warning about `option` at `file:line` (file by its last path components).
fn warned(conv: &Conversion, at: &str, option: &str) -> String {
    conv.warnings
        .iter()
        .find(|w| w.at.ends_with(at) && w.option == option)
        .map(|w| w.to_string())
        .unwrap_or_else(|| {
            let all: Vec<String> = conv.warnings.iter().map(|w| w.to_string()).collect();
            panic!("no warning for {option} at {at}:\n{}", all.join("\n"))
        })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn xvs(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_xvs")).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn lvs_dr_pair_with_http_get() {
    let (conv, cfg) = import("lvs-dr-http.conf");
    let web = &cfg.services[0];
    assert_eq!((web.vip, web.port, web.proto), (ip("198.18.0.10"), 80, Proto::Tcp));
    assert_eq!((web.method, web.sched), (Method::Dr, SchedKind::Wrr));
    let p = web.persistence.as_ref().expect("persistence");
    assert_eq!((p.timeout, p.prefix_len), (Duration::from_secs(50), 24));
    let weights: Vec<u32> = web.real_servers.iter().map(|r| r.weight).collect();
    assert_eq!(weights, [3, 2]);
    assert!(web.real_servers[0].inhibit_on_failure);
    let c = &web.real_servers[0].checks[0];
    assert_eq!(c.timeout, secs(3.0));
    assert_eq!(c.policy.interval, secs(6.0));
    assert_eq!(c.policy.fall, 4, "nb_get_retry 3 is fall 4");
    assert_eq!(c.policy.retry_delay, secs(2.0));
    let CheckKind::Http(h) = &c.kind else { panic!("{c:?}") };
    assert_eq!(h.urls.len(), 2);
    assert!(h.urls[0].digest.is_some() && h.tls.is_none());
    assert_eq!(h.urls[1].status, [(200, 200)]);

    let tls = &cfg.services[1];
    assert_eq!(tls.sched, SchedKind::Sh);
    assert!(tls.sched_opts.port, "sh-port");
    let CheckKind::Http(h) = &tls.real_servers[0].checks[0].kind else {
        panic!()
    };
    assert!(h.tls.is_some());
    assert_eq!(h.virtualhost.as_deref(), Some("www.example.invalid"));
    assert_eq!(h.urls[0].status, [(200, 299)]);

    let vi = &cfg.vrrp.instances[0];
    assert_eq!((vi.vrid, vi.priority, vi.start_master), (51, 150, true));
    assert_eq!(vi.version, Version::V2, "keepalived's default version");
    assert_eq!(vi.advert_int_cs, 100);
    assert_eq!(vi.garp_master_delay, Duration::from_secs(2));
    assert_eq!(vi.notify.master.as_deref(), Some("/usr/local/bin/lvs-notify master"));
    assert_eq!(cfg.interfaces[0].name, "eth0");

    assert!(warned(&conv, "lvs-dr-http.conf:21", "authentication").contains("RFC 5798"));
    assert!(warned(&conv, "lvs-dr-http.conf:26", "198.18.0.10/24").contains("label eth0:1"));
    warned(&conv, "lvs-dr-http.conf:5", "notification_email");
    warned(&conv, "lvs-dr-http.conf:9", "smtp_server");
    warned(&conv, "lvs-dr-http.conf:11", "router_id");
    warned(&conv, "lvs-dr-http.conf:16", "interface");
    assert!(conv.toml.contains("# keepalived router_id: LVS_DR_1"));
}

#[test]
fn nat_with_tcp_check_sorry_server_and_quorum() {
    let (conv, cfg) = import("nat-tcp-quorum.conf");
    let db = &cfg.services[0];
    assert_eq!((db.method, db.sched, db.port), (Method::Nat, SchedKind::Wlc, 3306));
    assert_eq!((db.health.quorum, db.health.hysteresis), (2, 1));
    assert_eq!(db.health.quorum_down.as_deref(), Some("/usr/local/bin/db-quorum down"));
    let sorry = db.health.sorry_server.as_ref().expect("sorry server");
    assert_eq!((sorry.addr, sorry.port, sorry.inhibit), (ip("198.18.2.99"), 3306, true));
    let rs = &db.real_servers;
    assert_eq!(
        rs[0].notify_up.as_deref(),
        Some("/usr/local/bin/db-notify 198.18.2.21 up")
    );
    let tcp = &rs[0].checks[0];
    assert_eq!(tcp.kind, CheckKind::Tcp);
    assert_eq!(
        (tcp.timeout, tcp.policy.fall, tcp.policy.interval),
        (secs(2.0), 3, secs(3.0))
    );
    assert!(tcp.policy.alpha, "alpha is inherited from the virtual server");
    // Two checkers on one server; bindto; MISC_CHECK with misc_dynamic and its timeout.
    assert_eq!(rs[1].checks.len(), 2);
    assert_eq!(rs[1].checks[0].bind.map(|b| b.ip()), Some(ip("198.18.1.1")));
    let misc = &rs[1].checks[1];
    let CheckKind::Misc(m) = &misc.kind else {
        panic!("{misc:?}")
    };
    assert!(m.dynamic && m.path.contains("check-replica"));
    assert_eq!(misc.timeout, secs(5.0));
    assert_eq!(rs[2].checks[0].connect, "198.18.2.123:3307".parse().unwrap());
    assert_eq!(rs[2].weight, 2);

    let dns = &cfg.services[1];
    assert_eq!((dns.proto, dns.sched), (Proto::Udp, SchedKind::Rr));
    assert_eq!(dns.real_servers[0].checks[0].connect.port(), 53);

    let v6 = &cfg.services[2];
    assert_eq!((v6.vip, v6.sched), (ip("2001:2::20"), SchedKind::Lc));
    assert_eq!(v6.real_servers[0].port, 8080);
    let CheckKind::Http(h) = &v6.real_servers[0].checks[0].kind else {
        panic!()
    };
    assert!(h.http11);

    assert_eq!(cfg.conn.timeouts.tcp_established, Duration::from_secs(7200));
    assert_eq!(cfg.conn.timeouts.udp, Duration::from_secs(300));
    assert!(warned(&conv, "nat-tcp-quorum.conf:7", "interface").contains("names no interface"));
}

#[test]
fn vrrp_only_unicast_with_scripts_and_a_sync_group() {
    let (conv, cfg) = import("vrrp-unicast.conf");
    assert!(cfg.services.is_empty());
    let v = &cfg.vrrp;
    let haproxy = &v.scripts[0];
    assert_eq!(haproxy.argv, ["/usr/bin/pgrep", "-x", "haproxy"]);
    assert_eq!((haproxy.interval, haproxy.timeout), (secs(2.0), secs(1.0)));
    assert_eq!((haproxy.weight, haproxy.rise, haproxy.fall), (-30, 3, 2));
    let front = &v.instances[0];
    assert_eq!((front.vrid, front.priority, front.version), (61, 120, Version::V3));
    assert_eq!(front.advert_int_cs, 50);
    assert!(!front.preempt);
    assert_eq!(front.unicast_src_ip, Some(ip("198.18.1.2")));
    assert_eq!(front.unicast_peers, [ip("198.18.1.3")]);
    assert_eq!(front.vips.len(), 2);
    assert_eq!(front.garp_master_refresh, Duration::from_secs(60), "from global_defs");
    let tracks: Vec<(&str, Option<i32>)> = front
        .track_interfaces
        .iter()
        .map(|t| (t.name.as_str(), t.weight))
        .collect();
    assert_eq!(tracks, [("eth1", None), ("eth2", Some(-20))]);
    let scripts: Vec<(&str, Option<i32>)> = front
        .track_scripts
        .iter()
        .map(|t| (t.name.as_str(), t.weight))
        .collect();
    assert_eq!(scripts, [("chk_haproxy", None), ("chk_uplink", Some(20))]);
    let back = &v.instances[1];
    assert_eq!(back.preempt_delay, Duration::from_secs(30));
    assert_eq!(back.notify.any.as_deref(), Some("/usr/local/bin/gw-notify-any"));
    let v6 = &v.instances[2];
    assert!(v6.is_ipv6() && v6.start_master);
    assert_eq!(v6.priority, 200);
    let g = &v.sync_groups[0];
    assert_eq!((g.name.as_str(), g.instances.as_slice()), ("VG_GW", &[0, 1][..]));
    assert_eq!(g.notify.fault.as_deref(), Some("/usr/local/bin/gw-notify fault"));
    let names: Vec<&str> = cfg.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["eth0", "eth1"]);
    warned(&conv, "vrrp-unicast.conf:6", "enable_script_security");
    warned(&conv, "vrrp-unicast.conf:7", "script_user");
}

#[test]
fn include_globs_relative_to_the_including_file() {
    let (conv, cfg) = import("split/keepalived.conf");
    assert_eq!(cfg.vrrp.instances[0].vrid, 71);
    let web = &cfg.services[0];
    assert_eq!((web.method, web.sched), (Method::Tun, SchedKind::Rr));
    // servers/web-*.conf included from inside conf.d/10-web.conf's block, relative to conf.d/.
    let weights: Vec<(IpAddr, u32)> = web.real_servers.iter().map(|r| (r.addr, r.weight)).collect();
    assert_eq!(weights, [(ip("198.18.2.41"), 1), (ip("198.18.2.42"), 2)]);
    let dns = &cfg.services[1];
    assert_eq!(
        (dns.sched, dns.method, dns.proto),
        (SchedKind::Mh, Method::Dr, Proto::Udp)
    );
    assert!(dns.sched_opts.port && dns.sched_opts.fallback);
    assert!(matches!(dns.real_servers[0].checks[0].kind, CheckKind::Misc(_)));
    // conf.d/README does not match *.conf; warnings in included files name them.
    assert!(!conv.toml.contains("not included"));
    warned(&conv, "split/extra/vrrp.inc:3", "interface");
}

#[test]
fn unsupported_options_are_each_named() {
    let (conv, cfg) = import("unsupported.conf");
    let f = "unsupported.conf";
    for (line, opt, says) in [
        (4, "vrrp_strict", "strict"),
        (5, "lvs_sync_daemon", "synchronisation"),
        (6, "vrrp_skip_check_adv_addr", "not carried over"),
        (9, "virtual_server_group", "groups"),
        (23, "virtual_ipaddress_excluded", "not carried over"),
        (26, "smtp_alert", "e-mail"),
        (27, "frobnicate", "not carried over"),
        (30, "virtual_server", "firewall-mark"),
        (41, "virtual_server", "groups"),
        (50, "lb_algo", "lblc"),
        (53, "ops", "one-packet"),
        (56, "SMTP_CHECK", "not supported"),
        (62, "warmup", "warm-up"),
        (64, "TCP_CHECK", "one TCP_CHECK"),
        (67, "uthreshold", "thresholds"),
    ] {
        let w = warned(&conv, &format!("{f}:{line}"), opt);
        assert!(w.contains(says), "{w}");
    }
    // What could be carried over still is: one service, its first TCP_CHECK, the instance.
    assert_eq!(cfg.services.len(), 1);
    let s = &cfg.services[0];
    assert_eq!((s.port, s.sched), (25, SchedKind::Wlc));
    assert_eq!(s.real_servers[0].checks.len(), 1);
    assert_eq!(s.real_servers[0].checks[0].timeout, secs(2.0));
    // use_vmac is carried over (xvs makes the macvlan as keepalived does).
    assert_eq!(cfg.vrrp.instances[0].use_vmac.as_deref(), Some("vrrp.81"));
}

#[test]
fn dpvs_fullnat_local_address_group() {
    let (_, cfg) = import("fullnat-dpvs.conf");
    let s = &cfg.services[0];
    assert_eq!(s.method, Method::FullNat);
    assert_eq!(s.laddrs, [ip("198.18.3.1"), ip("198.18.3.2")]);
}

#[test]
fn cli_output_passes_xvs_check_and_strict_refuses_warnings() {
    let out = std::env::temp_dir().join(format!("xvs-import-{}.toml", std::process::id()));
    let out_s = out.to_str().unwrap();
    let src = data("lvs-dr-http.conf");
    let (code, stdout, stderr) = xvs(&["import-keepalived", src.to_str().unwrap(), "-o", out_s]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("lvs-dr-http.conf:21: authentication:"), "{stderr}");
    let (code, model, err) = xvs(&["check", "-c", out_s]);
    assert_eq!(code, 0, "{err}");
    assert!(model.contains("198.18.0.10:80"), "{model}");
    std::fs::remove_file(&out).unwrap();

    // --strict: the same warnings, exit 1, nothing written.
    let (code, stdout, stderr) = xvs(&["import-keepalived", "--strict", src.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty() && stderr.contains("--strict"), "{stderr}");

    // TOML on stdout without -o.
    let (code, stdout, _) = xvs(&["import-keepalived", data("fullnat-dpvs.conf").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("lb_kind = \"FULLNAT\""), "{stdout}");
}

#[test]
fn cli_parse_errors_exit_1_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("xvs-import-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "vrrp_instance VI_1 {\n  state MASTER\n").unwrap();
    let (code, stdout, stderr) = xvs(&["import-keepalived", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("bad.conf:1") && stderr.contains("never closed"),
        "{stderr}"
    );
    let (code, _, stderr) = xvs(&["import-keepalived", dir.join("missing.conf").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read"), "{stderr}");
    // Converted but refused by xvs (an instance without virtual_router_id is dropped with a warning;
    // a bad VRID value reaches xvs check): exit 1, the reason printed.
    std::fs::write(
        &bad,
        "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n 198.18.0.1\n 2001:2::1\n }\n}\n",
    )
    .unwrap();
    let (code, _, stderr) = xvs(&["import-keepalived", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("refused by xvs check") && stderr.contains("one family"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[path = "common/mod.rs"]
mod common;

/// The lab runs on an imported keepalived.conf: the converted file drives `xvs run` in the lab's
/// director, VRRP takes the VIP, and the NAT service spreads 12 requests 6/4/2 (wrr 3:2:1).
#[test]
fn the_lab_runs_on_an_imported_configuration() {
    if !common::root() {
        return;
    }
    let (conv, cfg) = import("lab-nat.conf");
    assert_eq!(cfg.vrrp.instances.len(), 2);
    let mut d = common::Director::with_config(&conv.toml, 1);
    let t = std::time::Instant::now();
    while !d.log_text().contains("VI_CLIENTS is MASTER") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = xvs::lab::client::http_counts(d.cli(), "198.18.0.10:80".parse().unwrap(), 12)
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_text()));
    let got: Vec<usize> = ["rs1", "rs2", "rs3"]
        .iter()
        .map(|n| c.get(*n).copied().unwrap_or(0))
        .collect();
    assert_eq!(got, vec![6, 4, 2], "{}", d.log_text());
    let log = d.stop();
    assert!(
        log.contains("3 health checkers") || log.contains("health checkers"),
        "{log}"
    );
}
