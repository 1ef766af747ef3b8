//! `xvs ctl` and the Prometheus metrics against a running director in the lab (root only): the
//! table in ipvsadm's layout, statistics after known traffic, connections, zeroing, health and
//! VRRP status, and the metric values.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;

use common::{Director, XVS, root};
use xvs::lab::client;

fn ctl(sock: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(XVS)
        .args(["ctl", "--socket", sock])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lines of `text` about one service: its own line and its real servers'.
fn service_block(text: &str, head: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for l in text.lines() {
        if l.starts_with(head) {
            inside = true;
        } else if !l.starts_with("  ->") {
            inside = false;
        }
        if inside {
            out.push(l.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    out
}

#[test]
fn ctl_and_metrics_show_the_running_director() {
    if !root() {
        return;
    }
    let sock = std::env::temp_dir().join(format!("xvs-ctl-test-{}/xvs.sock", std::process::id()));
    let sock_s = sock.display().to_string();
    let mut d = Director::start(
        &format!("workers = 1\nio = \"af_xdp\"\nadmin_socket = \"{sock_s}\"\nmetrics = \"127.0.0.1:9108\""),
        1,
    );
    let vip: SocketAddr = "198.18.0.10:80".parse().unwrap();
    let counts = client::http_counts(d.cli(), vip, 12).unwrap();
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![6, 4, 2]);

    let (code, table, _) = ctl(&sock_s, &["-L", "-n"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("IP Virtual Server version 1.2.1 (size="), "{table}");
    assert_eq!(
        service_block(&table, "TCP  198.18.0.10:80 "),
        vec![
            "TCP 198.18.0.10:80 wrr",
            "-> 198.18.2.11:80 Masq 3 0 6",
            "-> 198.18.2.12:80 Masq 2 0 4",
            "-> 198.18.2.13:80 Masq 1 0 2",
        ],
        "{table}"
    );
    assert!(
        table.contains("TCP  198.18.0.11:80 rr\n  -> 198.18.2.11:80               FullNat"),
        "{table}"
    );
    assert!(table.contains("UDP  [2001:2::10]:7 rr"), "{table}");

    // Statistics: connections per server exactly; each exchange has at least 4 packets each way.
    // Workers publish their counters every 100 ms: wait for them (at most 2 s).
    let t0 = std::time::Instant::now();
    let (stats, block, conns) = loop {
        let (_, stats, _) = ctl(&sock_s, &["-L", "-n", "--stats"]);
        let block = service_block(&stats, "TCP  198.18.0.10:80 ");
        let conns: Vec<u64> = block
            .iter()
            .map(|l| l.split(' ').rev().nth(4).unwrap().parse().unwrap())
            .collect();
        if conns.first() == Some(&12) || t0.elapsed() > std::time::Duration::from_secs(2) {
            break (stats, block, conns);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(conns, vec![12, 6, 4, 2], "{stats}\n{}", d.log_text());
    let inpkts: u64 = block[0].split(' ').rev().nth(3).unwrap().parse().unwrap();
    assert!(inpkts >= 12 * 4, "{stats}");

    let (_, conns, _) = ctl(&sock_s, &["-L", "-n", "-c"]);
    let to_vip = conns
        .lines()
        .filter(|l| l.starts_with("TCP") && l.contains(" 198.18.0.10:80 "))
        .count();
    assert_eq!(to_vip, 12, "{conns}");

    // Metrics, scraped inside the director's namespace.
    let body = d
        .lab
        .ns("lb")
        .run(|| {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9108")?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains(
            "xvs_real_server_connections_total{service=\"tcp 198.18.0.10:80\",vip=\"198.18.0.10:80\",server=\"198.18.2.11:80\"} 6\n"
        ),
        "{body}"
    );
    assert!(body.contains(
        "xvs_health_check_up{service=\"tcp 198.18.0.10:80\",server=\"198.18.2.11:80\",checker=\"TCP_CHECK\"} 1"
    ));
    assert!(body.contains("xvs_connections_created_total "));
    // Each exchange's request follows its handshake's last ACK on the same connection: served
    // by the flow cache.
    let hits: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("xvs_flow_cache_hits_total "))
        .and_then(|v| v.parse().ok())
        .expect("xvs_flow_cache_hits_total");
    assert!(hits > 0, "{body}");

    // -Z zeroes the traffic counters (connection counts are the table's, not counters).
    assert_eq!(ctl(&sock_s, &["-Z"]).0, 0);
    let (_, stats, _) = ctl(&sock_s, &["-L", "-n", "--stats"]);
    assert_eq!(
        service_block(&stats, "TCP  198.18.0.10:80 ")[0],
        "TCP 198.18.0.10:80 0 0 0 0 0"
    );

    let (code, counters, _) = ctl(&sock_s, &["counters"]);
    assert_eq!(code, 0);
    assert!(
        counters.starts_with("rx ") && counters.contains("\nconns created "),
        "{counters}"
    );
    let (code, health, _) = ctl(&sock_s, &["health"]);
    assert_eq!(code, 0);
    assert_eq!(
        health
            .lines()
            .filter(|l| l.contains("TCP_CHECK") && l.contains(" UP "))
            .count(),
        48,
        "{health}"
    );
    let (_, vrrp, _) = ctl(&sock_s, &["vrrp"]);
    assert!(vrrp.contains("no VRRP instances"), "{vrrp}");
    let (code, _, err) = ctl(&sock_s, &["--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown command"), "{err}");

    // Run-time changes, validated like a file.
    let ok = |args: &[&str]| {
        let (code, out, err) = ctl(&sock_s, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    };
    // A weight edit changes the spread: rs1 drained, wrr 2:1 over the rest.
    ok(&["-e", "-t", "198.18.0.10:80", "-r", "198.18.2.11:80", "-w", "0"]);
    let c = client::http_counts(d.cli(), vip, 12).unwrap();
    assert_eq!((c.get("rs1"), c.get("rs2"), c.get("rs3")), (None, Some(&8), Some(&4)));
    // A new service with two servers, on a port the servers do not listen on (NAT maps it).
    ok(&["-A", "-t", "198.18.0.10:8080", "-s", "rr", "-m"]);
    ok(&["-a", "-t", "198.18.0.10:8080", "-r", "198.18.2.11:80", "-m", "-w", "1"]);
    ok(&["-a", "-t", "198.18.0.10:8080", "-r", "198.18.2.12:80", "-m", "-w", "1"]);
    let c = client::http_counts(d.cli(), "198.18.0.10:8080".parse().unwrap(), 4).unwrap();
    assert_eq!((c.get("rs1"), c.get("rs2")), (Some(&2), Some(&2)));
    let (_, saved, _) = ctl(&sock_s, &["save"]);
    let saved_cfg = xvs::config::parse(&saved, "saved").unwrap();
    assert!(
        saved_cfg
            .services
            .iter()
            .any(|s| s.port == 8080 && s.real_servers.len() == 2)
    );
    // A server deleted with a connection open to it: the connection lives on, new ones avoid it.
    let (mut r, mut w, name) = d
        .cli()
        .run(|| {
            let s = std::net::TcpStream::connect("198.18.0.10:8080")?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
            let mut r = std::io::BufReader::new(s.try_clone()?);
            let mut w = s;
            w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let (_, body) = xvs::lab::serve::read_response(&mut r)?;
            Ok((r, w, String::from_utf8_lossy(&body).trim().to_string()))
        })
        .unwrap();
    let addr = if name == "rs1" {
        "198.18.2.11:80"
    } else {
        "198.18.2.12:80"
    };
    ok(&["-d", "-t", "198.18.0.10:8080", "-r", addr]);
    w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (status, body) = xvs::lab::serve::read_response(&mut r).unwrap();
    assert_eq!((status, String::from_utf8_lossy(&body).trim()), (200, name.as_str()));
    let c = client::http_counts(d.cli(), "198.18.0.10:8080".parse().unwrap(), 3).unwrap();
    assert_eq!(c.len(), 1);
    assert!(!c.contains_key(&name), "{c:?}");
    // Refused edits change nothing.
    let (code, _, err) = ctl(&sock_s, &["-a", "-t", "198.18.0.10:8080", "-r", "2001:2::5", "-w", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("refused") && err.contains("address family"), "{err}");
    ok(&["-D", "-t", "198.18.0.10:8080"]);
    let (_, table, _) = ctl(&sock_s, &["-L", "-n"]);
    assert!(!table.contains("198.18.0.10:8080"), "{table}");
    let (code, _, _) = ctl(&sock_s, &["reload"]);
    assert_eq!(code, 0);
    let log = d.stop();
    assert!(!sock.exists(), "the socket is removed at exit:\n{log}");
    let _ = std::fs::remove_dir_all(sock.parent().unwrap());
}
