//! VRRP behaviour with real I/O in namespaces (same layout as `tests/vrrp_interop.rs`): tracked
//! interfaces and scripts, notify scripts, sync groups, unicast peers, VRRPv3 at 1 s, and the
//! gratuitous ARP / unsolicited neighbour advertisements on the wire. Root only; skipped with a
//! reason when not root or without keepalived. Times are printed with `--nocapture`.

mod vrrp_common;

use std::path::Path;
use std::time::{Duration, Instant};

use vrrp_common::*;

/// Waits (bounded) until `cond` holds; the time it took, or None.
fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// An interface to track (a veth pair: the dummy driver may be missing), up.
fn dummy(l: &Pair, side: char, dev: &str) {
    let peer = format!("{dev}p");
    l.ns(side)
        .ip(&["link", "add", dev, "type", "veth", "peer", "name", &peer])
        .unwrap();
    l.ns(side).ip(&["link", "set", &peer, "up"]).unwrap();
    l.ns(side).ip(&["link", "set", dev, "up"]).unwrap();
}

fn lines(f: &Path) -> Vec<String> {
    std::fs::read_to_string(f)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

fn expect_line(l: &Pair, f: &Path, line: &str) {
    if !wait_line(f, line, Duration::from_secs(3)) {
        l.dump();
        panic!("no notify line '{line}' in {:?}", lines(f));
    }
}

fn mac_of(l: &Pair, side: char, dev: &str) -> [u8; 6] {
    let out = l.ns(side).ip(&["-br", "link", "show", "dev", dev]).unwrap();
    let m = out.split_whitespace().nth(2).unwrap();
    let v: Vec<u8> = m.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// A tracked interface going down faults xvs (the keepalived peer takes over) and coming back
/// lets it preempt; every notify script runs with keepalived's arguments.
#[test]
fn track_interface_fault_and_back_with_notify_scripts() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    dummy(&l, 'a', "t0");
    let out = l.file("notify.out", "");
    let rec = recorder(&mut l, "rec.sh", &out);
    let r = rec.display();
    let mut x = inst(150, "0.01", 3, VIP4);
    x.extra = format!(
        "track_interface = [\"t0\"]\nnotify_master = \"{r} master-only\"\nnotify_backup = \"{r} backup-only\"\nnotify_fault = \"{r} fault-only\"\nnotify_stop = \"{r} stop-only\"\nnotify = \"{r}\"\n"
    );
    let ka = l.keepalived('b', &inst(100, "0.01", 3, VIP4));
    ka.ready();
    let mut xa = l.xvs('a', &x);
    l.wait_master('a', VIP4, Duration::from_secs(5));
    expect_line(&l, &out, "master-only");
    expect_line(&l, &out, "INSTANCE VI_1 MASTER 150");
    l.ns('a').ip(&["link", "set", "t0", "down"]).unwrap();
    let took = l.wait_master('b', VIP4, Duration::from_secs(3));
    eprintln!("track_interface down: keepalived master after {took:?}");
    // Link changes are notified (RTMGRP_LINK): well under the 0.5 s periodic dump.
    assert!(took <= master_down(100, 1) + SLACK, "{took:?}");
    expect_line(&l, &out, "fault-only");
    expect_line(&l, &out, "INSTANCE VI_1 FAULT 150");
    l.stays_master('b', VIP4, Duration::from_millis(300));
    l.ns('a').ip(&["link", "set", "t0", "up"]).unwrap();
    let took = l.wait_master('a', VIP4, Duration::from_secs(3));
    eprintln!("track_interface up: xvs preempted back after {took:?}");
    expect_line(&l, &out, "backup-only");
    expect_line(&l, &out, "INSTANCE VI_1 BACKUP 150");
    xa.signal(libc::SIGTERM);
    xa.wait();
    expect_line(&l, &out, "stop-only");
    expect_line(&l, &out, "INSTANCE VI_1 STOP 150");
    let all = lines(&out);
    let order: Vec<&str> = all
        .iter()
        .filter(|x| x.starts_with("INSTANCE"))
        .map(|x| x.split(' ').nth(2).unwrap_or(""))
        .collect();
    // keepalived too reports the initial BACKUP.
    assert_eq!(
        order,
        ["BACKUP", "MASTER", "FAULT", "BACKUP", "MASTER", "STOP"],
        "{all:?}"
    );
}

/// A failing tracked script with a negative weight lowers the priority below the keepalived
/// peer's (which preempts); one with weight 0 faults the instance.
#[test]
fn track_script_weight_and_fault() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let f1 = std::env::temp_dir().join(format!("{}-down1", l.p));
    let f2 = std::env::temp_dir().join(format!("{}-down2", l.p));
    l.files.push(f1.clone());
    l.files.push(f2.clone());
    let mut x = inst(150, "0.01", 3, VIP4);
    x.before = format!(
        "[[vrrp_script]]\nname = \"w\"\nscript = \"test ! -e {}\"\ninterval = 0.05\nweight = -60\n\n[[vrrp_script]]\nname = \"f\"\nscript = \"test ! -e {}\"\ninterval = 0.05\nweight = 0\n\n",
        f1.display(),
        f2.display()
    );
    x.extra = "track_script = [\"w\", \"f\"]\n".into();
    let ka = l.keepalived('b', &inst(100, "0.01", 3, VIP4));
    ka.ready();
    let _xa = l.xvs('a', &x);
    l.wait_master('a', VIP4, Duration::from_secs(5));
    std::fs::write(&f1, "").unwrap();
    let took = l.wait_master('b', VIP4, Duration::from_secs(3));
    eprintln!("track_script weight -60 (150 -> 90 < 100): keepalived preempted after {took:?}");
    l.stays_master('b', VIP4, Duration::from_millis(300));
    std::fs::remove_file(&f1).unwrap();
    let took = l.wait_master('a', VIP4, Duration::from_secs(3));
    eprintln!("track_script back: xvs preempted after {took:?}");
    std::fs::write(&f2, "").unwrap();
    let took = l.wait_master('b', VIP4, Duration::from_secs(3));
    eprintln!("track_script weight 0: xvs FAULT, keepalived master after {took:?}");
    let log = std::fs::read_to_string(l.files.iter().find(|f| f.ends_with(format!("{}-xa.log", l.p))).unwrap())
        .unwrap_or_default();
    assert!(log.contains("FAULT"), "{log}");
    std::fs::remove_file(&f2).unwrap();
    l.wait_master('a', VIP4, Duration::from_secs(3));
}

fn group_config(dev: &str, prio: u8, extra: &str, rec: &Path) -> String {
    let mut t = String::new();
    for (n, vrid, vip) in [(1, 51, "198.18.5.100/24"), (2, 52, "198.18.5.101/24")] {
        t.push_str(&format!(
            "[[vrrp_instance]]\nname = \"VI_{n}\"\ninterface = \"{dev}\"\nvirtual_router_id = {vrid}\npriority = {prio}\nadvert_int = 0.01\nvirtual_ipaddress = [\"{vip}\"]\n{}\n",
            if n == 1 { extra } else { "" }
        ));
    }
    t.push_str(&format!(
        "[[vrrp_sync_group]]\nname = \"G\"\ngroup = [\"VI_1\", \"VI_2\"]\nnotify = \"{}\"\n",
        rec.display()
    ));
    t
}

/// A sync group fails over together: a tracked interface of one member faults both, and both come
/// back; the group's notify script gets `GROUP G state priority`.
#[test]
fn sync_group_fails_over_together() {
    if !runnable() {
        return;
    }
    const VIP2: &str = "198.18.5.101/24";
    let mut l = Pair::new();
    dummy(&l, 'a', "t0");
    let out = l.file("group.out", "");
    let rec = recorder(&mut l, "grec.sh", &out);
    let tb = group_config("vb", 100, "", &rec);
    let _xb = l.xvs_raw('b', &tb);
    let ta = group_config("va", 150, "track_interface = [\"t0\"]", &rec);
    let _xa = l.xvs_raw('a', &ta);
    l.wait_master('a', VIP4, Duration::from_secs(5));
    l.wait_master('a', VIP2, Duration::from_secs(2));
    l.ns('a').ip(&["link", "set", "t0", "down"]).unwrap();
    let t1 = l.wait_master('b', VIP4, Duration::from_secs(3));
    let t2 = l.wait_master('b', VIP2, Duration::from_secs(1));
    eprintln!("sync group: VI_1 (tracked) moved after {t1:?}, VI_2 with it ({t2:?} later)");
    l.stays_master('b', VIP2, Duration::from_millis(300));
    expect_line(&l, &out, "GROUP G FAULT 150");
    expect_line(&l, &out, "GROUP G MASTER 100");
    l.ns('a').ip(&["link", "set", "t0", "up"]).unwrap();
    let t1 = l.wait_master('a', VIP4, Duration::from_secs(3));
    l.wait_master('a', VIP2, Duration::from_secs(1));
    eprintln!("sync group: both back after {t1:?}");
}

/// unicast_peer between xvs and keepalived: no multicast on the wire, and a killed xvs master is
/// replaced within Master_Down_Interval.
#[test]
fn unicast_peers_xvs_and_keepalived() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let cap = Capture::start(&l.br, "br0");
    let cap_a = Capture::start(&l.br, "pa");
    let mut k = inst(100, "0.01", 3, VIP4);
    k.extra = "  unicast_src_ip 198.18.5.2\n  unicast_peer {\n    198.18.5.1\n  }\n".into();
    let ka = l.keepalived('b', &k);
    ka.ready();
    let mut x = inst(150, "0.01", 3, VIP4);
    x.extra = "unicast_peer = [\"198.18.5.2\"]\n".into();
    let mut xa = l.xvs('a', &x);
    l.wait_master('a', VIP4, Duration::from_secs(5));
    l.stays_master('a', VIP4, Duration::from_millis(300));
    let mcast = cap
        .frames()
        .iter()
        .chain(cap_a.frames().iter())
        .filter(|(_, f)| f.len() > 34 && f[..6] == [1, 0, 0x5e, 0, 0, 0x12])
        .count();
    assert_eq!(mcast, 0, "multicast VRRP frames seen");
    let ads = adverts(&cap_a.frames());
    assert!(
        ads.iter().any(|&(_, v, p)| v == 51 && p == 150),
        "no unicast advert from xvs"
    );
    let ipdst = cap_a
        .frames()
        .into_iter()
        .find(|(_, f)| f.len() > 34 && f[12..14] == [8, 0] && f[23] == 112 && f[26..30] == [198, 18, 5, 1])
        .map(|(_, f)| [f[30], f[31], f[32], f[33]]);
    assert_eq!(ipdst, Some([198, 18, 5, 2]));
    xa.signal(libc::SIGKILL);
    let took = until(Duration::from_secs(3), || l.has('b', VIP4)).expect("keepalived took over");
    eprintln!(
        "unicast: keepalived took over {took:?} after SIGKILL of xvs (Master_Down_Interval {:?})",
        master_down(100, 1)
    );
    assert!(took <= master_down(100, 1) + SLACK, "{took:?}");
    xa.wait();
    let _xa = l.xvs('a', &x);
    let took = l.wait_master('a', VIP4, Duration::from_secs(3));
    eprintln!("unicast: restarted xvs preempted in {took:?}");
}

/// VRRPv3 at 1 s adverts: a killed xvs master is replaced by keepalived within
/// Master_Down_Interval (3.61 s for priority 100).
#[test]
fn v3_1s_keepalived_takes_over_from_killed_xvs() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let ka = l.keepalived('b', &inst(100, "1", 3, VIP4));
    ka.ready();
    let mut x = inst(150, "1", 3, VIP4);
    x.extra = "state = \"MASTER\"\n".into();
    let mut xa = l.xvs('a', &x);
    l.wait_master('a', VIP4, Duration::from_secs(5));
    l.stays_master('a', VIP4, Duration::from_millis(1200));
    xa.signal(libc::SIGKILL);
    let took = until(Duration::from_secs(6), || l.has('b', VIP4)).expect("keepalived took over");
    let md = master_down(100, 100);
    eprintln!("v3/1s: keepalived took over {took:?} after SIGKILL of xvs (Master_Down_Interval {md:?})");
    assert!(took <= md + SLACK, "{took:?}");
    assert!(took >= md - Duration::from_secs(1) - SLACK, "too early: {took:?}");
}

fn hex_frame(path: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with("0x")) {
        let hex = line.split_once(':').map(|x| x.1).unwrap_or("");
        for w in hex.split_whitespace().take_while(|w| w.len() == 4 || w.len() == 2) {
            if !w.chars().all(|c| c.is_ascii_hexdigit()) {
                break;
            }
            for i in (0..w.len()).step_by(2) {
                out.push(u8::from_str_radix(&w[i..i + 2], 16).unwrap());
            }
        }
    }
    out
}

/// Becoming master sends garp_master_repeat gratuitous ARPs in keepalived's format, and again
/// after garp_master_delay.
#[test]
fn garp_on_becoming_master_repeated() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let mac = mac_of(&l, 'a', "va");
    let cap = Capture::start(&l.br, "pa");
    let mut x = inst(150, "0.01", 3, VIP4);
    x.extra = "garp_master_repeat = 3\ngarp_master_delay = 1\n".into();
    let _xa = l.xvs('a', &x);
    let t0 = Instant::now();
    until(Duration::from_secs(3), || l.has('a', VIP4)).expect("master");
    std::thread::sleep(Duration::from_millis(1400).saturating_sub(t0.elapsed()));
    // keepalived's frame with our MAC and VIP 198.18.5.100.
    let mut want = hex_frame(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vrrp/garp-vip.hex"));
    assert_eq!(want.len(), 42);
    for o in [6, 22] {
        want[o..o + 6].copy_from_slice(&mac);
    }
    for o in [28, 38] {
        want[o..o + 4].copy_from_slice(&[198, 18, 5, 100]);
    }
    let garps: Vec<(Instant, Vec<u8>)> = cap
        .frames()
        .into_iter()
        .filter(|(_, f)| f.len() >= 14 && f[12..14] == [8, 6] && f[6..12] == mac)
        .collect();
    for (_, f) in &garps {
        assert_eq!(&f[..42], &want[..], "GARP differs from keepalived's");
    }
    assert_eq!(garps.len(), 6, "3 at once, 3 after garp_master_delay");
    let gap = garps[3].0 - garps[2].0;
    eprintln!("GARP: 3 + 3 frames as keepalived's, second burst {gap:?} after the first");
    assert!(
        gap >= Duration::from_millis(900) && gap <= Duration::from_millis(1400),
        "{gap:?}"
    );
}

/// Becoming master of an IPv6 VIP sends garp_master_repeat unsolicited neighbour advertisements.
#[test]
fn unsolicited_na_on_becoming_master() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let mac = mac_of(&l, 'a', "va");
    let cap = Capture::start(&l.br, "pa");
    let mut x = inst(150, "0.01", 3, VIP6);
    x.extra = "garp_master_repeat = 2\n".into();
    let _xa = l.xvs('a', &x);
    until(Duration::from_secs(3), || l.has('a', VIP6)).expect("master");
    std::thread::sleep(Duration::from_millis(300));
    let vip: std::net::Ipv6Addr = "2001:2:0:5::100".parse().unwrap();
    let nas: Vec<Vec<u8>> = cap
        .frames()
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| f.len() >= 86 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 136 && f[6..12] == mac)
        .filter(|f| f[62..78] == vip.octets())
        .collect();
    assert_eq!(nas.len(), 2, "garp_master_repeat NAs for the VIP");
    for f in &nas {
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[21], 255, "hop limit");
        assert_eq!(f[58] & 0x20, 0x20, "override flag");
        assert_eq!(&f[78..80], &[2, 1]);
        assert_eq!(&f[80..86], &mac);
    }
    eprintln!("NA: 2 unsolicited neighbour advertisements for {vip} from {mac:02x?}");
}
