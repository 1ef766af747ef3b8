//! Namespace lab tests (root only): topology, lab servers, TUN decapsulation, DR preparation, and
//! removal of everything, also after a panic in the middle of `lab up`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use xvs::lab::{self, Lab, LabOpts, client, netns};

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        true
    } else {
        println!("skipped: not root");
        false
    }
}

fn prefix(tag: &str) -> String {
    format!("xt{}{tag}", std::process::id())
}

fn opts(prefix: &str) -> LabOpts {
    LabOpts {
        prefix: prefix.to_string(),
        queues: 2,
        serve_exe: Some(env!("CARGO_BIN_EXE_xvs").into()),
        ha: false,
    }
}

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// Sends `pkt` (a whole IPv4 packet, header included) with an IPPROTO_RAW socket.
fn send_raw(pkt: &[u8], to: Ipv4Addr) -> std::io::Result<()> {
    // SAFETY: plain socket creation, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: pkt and sa are valid for their lengths during the call.
    let rc = unsafe {
        libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd was opened above.
    unsafe { libc::close(fd) };
    if rc < 0 { Err(err) } else { Ok(()) }
}

#[test]
fn lab_topology_servers_tun_decap_and_dr_prep() {
    if !root() {
        return;
    }
    let p = prefix("a");
    let lab = Lab::up(&opts(&p), &mut |_| {}).expect("lab up");
    let plan = lab.plan().clone();

    // The client reaches the director's client side, both families.
    client::ping(lab.ns("cli"), lab::LB0_V4.into()).expect("ping lb0 v4");
    client::ping(lab.ns("cli"), lab::LB0_V6.into()).expect("ping lb0 v6");
    // The director answers on its VIPs (they are on its lo).
    client::ping(lab.ns("cli"), "198.18.0.10".parse().unwrap()).expect("ping VIP");

    // Each real server's servers answer from the director's namespace.
    let lb = lab.ns("lb");
    for s in &plan.servers {
        for ip in [IpAddr::V4(s.v4), IpAddr::V6(s.v6)] {
            let c = client::http_counts(lb, SocketAddr::new(ip, 80), 3).expect("http");
            assert_eq!(c.get(&s.name), Some(&3), "{ip}: {c:?}");
            let c = client::udp_counts(lb, SocketAddr::new(ip, 7), 3).expect("udp");
            assert_eq!(c.get(&s.name), Some(&3), "{ip}: {c:?}");
        }
    }
    let rs1 = SocketAddr::new(plan.servers[0].v4.into(), 80);
    assert_eq!(client::http_rounds(lb, rs1, 1000).expect("rounds"), "rs1");
    assert_eq!(client::http_bytes(lb, rs1, 1 << 20).expect("1 MB"), 1 << 20);

    // DR preparation on every real server: sysctls and the VIP on lo.
    for s in &plan.servers {
        let ns = lab.ns(&s.name);
        assert_eq!(ns.sysctl_get("net.ipv4.conf.all.arp_ignore").unwrap(), "1");
        assert_eq!(ns.sysctl_get("net.ipv4.conf.eth0.arp_announce").unwrap(), "2");
        let lo = ns.ip(&["addr", "show", "dev", "lo"]).unwrap();
        assert!(lo.contains("198.18.0.12/32") && lo.contains("2001:2::12/128"), "{lo}");
    }

    // TUN: an IPIP packet from the director to rs2 carrying a client datagram to the TUN VIP. The echo
    // goes from rs2 (source: the VIP) straight to the client through the director's kernel, which
    // routes DR and TUN replies (the lab keeps those VIPs off the director's lo for this).
    let vip = match plan.vips(xvs::types::Method::Tun)[0] {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!("the plan's TUN VIP is IPv4"),
    };
    assert_eq!(lb.sysctl_get("net.ipv4.ip_forward").unwrap(), "1");
    assert!(
        !lb.ip(&["addr", "show", "dev", "lo"])
            .unwrap()
            .contains(&format!("{vip}/32"))
    );
    let rs2 = plan.servers[1].v4;
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|sc| {
        let cli = lab.ns("cli");
        let rx = sc.spawn(move || {
            cli.run(move || {
                let s = UdpSocket::bind((lab::CLI_V4, 40007))?;
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                let _ = ready_tx.send(());
                let mut buf = [0u8; 256];
                let (n, from) = s.recv_from(&mut buf)?;
                Ok((buf[..n].to_vec(), from))
            })
        });
        ready_rx.recv_timeout(Duration::from_secs(3)).expect("listener ready");
        let mut udp = Vec::new();
        udp.extend_from_slice(&40007u16.to_be_bytes());
        udp.extend_from_slice(&7u16.to_be_bytes());
        udp.extend_from_slice(&(8u16 + 5).to_be_bytes());
        udp.extend_from_slice(&[0, 0]); // no UDP checksum (allowed in IPv4)
        udp.extend_from_slice(b"hello");
        let inner = ipv4(lab::CLI_V4, vip, 17, &udp);
        let outer = ipv4(lab::LB1_V4, rs2, 4, &inner);
        lb.run(move || send_raw(&outer, rs2)).expect("send IPIP");
        let (got, from) = rx.join().unwrap().expect("echo through the tunnel");
        assert_eq!(got, b"rs2 hello");
        assert_eq!(from, SocketAddr::from((vip, 7)), "the reply comes from the VIP");
    });
    lb.sysctl(&[("net.ipv4.ip_forward", "0")]).unwrap();
    lb.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"]).unwrap();

    // realserver clear undoes tun.
    let rs3 = lab.ns("rs3");
    rs3.run(move || xvs::realserver::clear(&[IpAddr::V4(vip)], Some("eth0")).map_err(std::io::Error::other))
        .unwrap();
    assert_eq!(rs3.sysctl_get("net.ipv4.conf.all.arp_ignore").unwrap(), "0");
    assert!(
        !rs3.ip(&["addr", "show", "dev", "lo"])
            .unwrap()
            .contains("198.18.0.13/32")
    );
    assert!(!rs3.run(|| Ok(xvs::realserver::decap_attached("eth0"))).unwrap());
    assert!(
        lab.ns("rs1")
            .run(|| Ok(xvs::realserver::decap_attached("eth0")))
            .unwrap()
    );

    drop(lab);
    assert!(netns::list(&format!("{p}-")).is_empty(), "drop removes every namespace");
}

#[test]
fn panic_in_the_middle_of_up_removes_everything() {
    if !root() {
        return;
    }
    let p = prefix("b");
    let mut o = opts(&p);
    o.serve_exe = None;
    let r = std::panic::catch_unwind(|| {
        Lab::up(&o, &mut |step| {
            if step == "rs2" {
                panic!("injected failure after {step}");
            }
        })
    });
    assert!(r.is_err());
    assert!(netns::list(&format!("{p}-")).is_empty(), "guard removed the namespaces");
}

#[test]
fn cli_up_status_down() {
    if !root() {
        return;
    }
    let p = prefix("c");
    let xvs = env!("CARGO_BIN_EXE_xvs");
    let run = |args: &[&str]| {
        let o = Command::new(xvs).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let up = run(&["lab", "up", "--prefix", &p]);
    assert!(up.contains("198.18.0.13") && up.contains("TUN"), "{up}");
    // A second `up` on the same prefix is refused and leaves the first lab alone.
    let again = Command::new(xvs).args(["lab", "up", "--prefix", &p]).output().unwrap();
    assert!(!again.status.success());
    let st = run(&["lab", "status", "--prefix", &p]);
    assert_eq!(st.matches("servers running").count(), 3, "{st}");
    let ping = run(&["lab", "client", "--prefix", &p, "ping", "198.18.1.1"]);
    assert!(ping.contains("reply"), "{ping}");
    let down = run(&["lab", "down", "--prefix", &p]);
    assert_eq!(down.matches("removed").count(), 6, "{down}");
    assert!(netns::list(&format!("{p}-")).is_empty());
    assert!(run(&["lab", "status", "--prefix", &p]).contains("absent"));
}
