//! VRRP interop in namespaces: `xvs vrrp` against keepalived 2.2.7 (`keepalived -P`) and against
//! itself. Two "director" namespaces on a bridge namespace (198.18.5.0/24, 2001:2:0:5::/64), VIP
//! 198.18.5.100 / 2001:2:0:5::100. State is observed as the VIP appearing on or leaving an
//! interface; takeover times are measured from the kill to the VIP on the new master and printed.
//! Root only; skipped with a reason when not root or without keepalived (scripts/setup installs it).

mod vrrp_common;

use std::time::{Duration, Instant};

use vrrp_common::*;

#[test]
fn v3_ipv4_10ms_xvs_master_keepalived_backup_kill_preempt_stop() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let _ka = l.keepalived('b', &inst(100, "0.01", 3, VIP4));
    let mut x = l.xvs('a', &inst(150, "0.01", 3, VIP4));
    l.wait_master('a', VIP4, Duration::from_secs(5));
    l.stays_master('a', VIP4, Duration::from_millis(500));
    // Hard kill of the xvs master: its VIP stays on its (dead) interface, so watch b only.
    x.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while !l.has('b', VIP4) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t0.elapsed();
    eprintln!(
        "v3/10ms: keepalived took over {took:?} after SIGKILL of xvs (Master_Down_Interval {:?})",
        master_down(100, 1)
    );
    assert!(l.has('b', VIP4) && took <= master_down(100, 1) + SLACK, "{took:?}");
    x.wait();
    // xvs restarts (removing its stale VIP) and preempts the lower keepalived.
    let mut x = l.xvs('a', &inst(150, "0.01", 3, VIP4));
    let took = l.wait_master('a', VIP4, Duration::from_secs(3));
    eprintln!("v3/10ms: restarted xvs preempted in {took:?}");
    // Clean stop: priority 0, keepalived takes over after Skew_Time.
    x.signal(libc::SIGTERM);
    let took = l.wait_master('b', VIP4, Duration::from_secs(2));
    eprintln!("v3/10ms: keepalived took over {took:?} after SIGTERM of xvs (priority 0)");
    assert!(took <= Duration::from_millis(10) + SLACK, "{took:?}");
}

#[test]
fn v3_ipv4_10ms_keepalived_master_xvs_backup() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let mut ka = l.keepalived('a', &inst(150, "0.01", 3, VIP4));
    ka.ready();
    let _x = l.xvs('b', &inst(100, "0.01", 3, VIP4));
    l.wait_master('a', VIP4, Duration::from_secs(5));
    l.stays_master('a', VIP4, Duration::from_millis(500));
    ka.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while !l.has('b', VIP4) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t0.elapsed();
    eprintln!(
        "v3/10ms: xvs took over {took:?} after SIGKILL of keepalived (Master_Down_Interval {:?})",
        master_down(100, 1)
    );
    assert!(l.has('b', VIP4) && took <= master_down(100, 1) + SLACK, "{took:?}");
    // A hard kill sends no priority 0 (see Proc::signal): xvs waits out Master_Down_Interval from
    // keepalived's last advertisement, at most one advert_int (10 ms) before the signal, not
    // Skew_Time (6 ms).
    assert!(
        took >= master_down(100, 1) - Duration::from_millis(15),
        "too early for a hard kill: {took:?}"
    );
}

#[test]
fn v2_ipv4_1s_keepalived_master_clean_stop_then_xvs_nopreempt() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let mut ka = l.keepalived('a', &inst(150, "1", 2, VIP4));
    ka.ready();
    let _x = l.xvs('b', &inst(100, "1", 2, VIP4));
    l.wait_master('a', VIP4, Duration::from_secs(6));
    l.stays_master('a', VIP4, Duration::from_millis(1500));
    // Clean stop: keepalived sends priority 0; xvs takes over after Skew_Time (0.61 s).
    ka.signal(libc::SIGTERM);
    let took = l.wait_master('b', VIP4, Duration::from_secs(3));
    eprintln!("v2/1s: xvs took over {took:?} after SIGTERM of keepalived (priority 0)");
    assert!(took <= Duration::from_secs(1) + SLACK, "{took:?}");
    ka.wait();
    // keepalived returns with a higher priority but nopreempt: xvs stays master.
    let mut n = inst(150, "1", 2, VIP4);
    n.nopreempt = true;
    let _ka = l.keepalived('a', &n);
    l.stays_master('b', VIP4, Duration::from_millis(2500));
}

#[test]
fn v3_ipv6_10ms_keepalived_backup_preempted_by_xvs_and_stop() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let _ka = l.keepalived('b', &inst(100, "0.01", 3, VIP6));
    // keepalived alone becomes master.
    l.wait_master('b', VIP6, Duration::from_secs(5));
    // The higher-priority xvs arrives and preempts.
    let mut x = l.xvs('a', &inst(150, "0.01", 3, VIP6));
    let took = l.wait_master('a', VIP6, Duration::from_secs(3));
    eprintln!("v3/IPv6/10ms: xvs preempted keepalived in {took:?}");
    l.stays_master('a', VIP6, Duration::from_millis(500));
    x.signal(libc::SIGTERM);
    let took = l.wait_master('b', VIP6, Duration::from_secs(2));
    eprintln!("v3/IPv6/10ms: keepalived took over {took:?} after SIGTERM of xvs");
}

#[test]
fn xvs_with_xvs_v3_10ms() {
    if !runnable() {
        return;
    }
    let mut l = Pair::new();
    let mut a = l.xvs('a', &inst(150, "0.01", 3, VIP4));
    let _b = l.xvs('b', &inst(100, "0.01", 3, VIP4));
    l.wait_master('a', VIP4, Duration::from_secs(5));
    l.stays_master('a', VIP4, Duration::from_millis(500));
    a.signal(libc::SIGTERM);
    let took = l.wait_master('b', VIP4, Duration::from_secs(2));
    eprintln!("xvs/xvs v3/10ms: takeover {took:?} after SIGTERM (priority 0)");
    a.wait();
    let mut a = l.xvs('a', &inst(150, "0.01", 3, VIP4));
    l.wait_master('a', VIP4, Duration::from_secs(3));
    a.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while !l.has('b', VIP4) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t0.elapsed();
    eprintln!(
        "xvs/xvs v3/10ms: takeover {took:?} after SIGKILL (Master_Down_Interval {:?})",
        master_down(100, 1)
    );
    assert!(l.has('b', VIP4) && took <= master_down(100, 1) + SLACK, "{took:?}");
}

/// keepalived's use_vmac: both sides create `vrrp.51` with 00:00:5e:00:01:33 and send from it.
#[test]
fn v3_ipv4_vmac_xvs_and_keepalived_both_ways() {
    if !runnable() {
        return;
    }
    const VMAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 51];
    const DEV: &str = "vrrp.51";
    let mut l = Pair::new();
    let cap_a = Capture::start(&l.br, "pa");
    let cap_b = Capture::start(&l.br, "pb");
    let mut k = inst(100, "0.01", 3, VIP4);
    k.extra = "  use_vmac\n".into();
    let mut ka = l.keepalived('b', &k);
    ka.ready();
    let mut x = inst(150, "0.01", 3, VIP4);
    x.extra = "use_vmac = true\n".into();
    let mut xa = l.xvs('a', &x);
    let took = l.wait_master_dev('a', DEV, VIP4, Duration::from_secs(5));
    eprintln!("vmac: xvs master on {DEV} after {took:?}");
    assert!(
        !l.has('a', VIP4),
        "the VIP is on the macvlan, not on the base interface"
    );
    l.stays_master('a', VIP4, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(200));
    let from_a = adverts(&cap_a.frames());
    assert!(
        from_a.iter().any(|&(m, v, p)| m == VMAC && v == 51 && p == 150),
        "no advert from {VMAC:02x?}: {from_a:02x?}"
    );
    assert!(from_a.iter().all(|&(m, _, _)| m == VMAC), "{from_a:02x?}");
    // As in the keepalived capture vrrp-v3-vmac.hex: to 01:00:5e:00:00:12, TOS 0xc0, TTL 255.
    let frame = cap_a
        .frames()
        .into_iter()
        .map(|(_, f)| f)
        .find(|f| f.len() > 34 && f[23] == 112);
    let f = frame.expect("an advert frame");
    assert_eq!((&f[..6], f[15], f[22]), (&[1, 0, 0x5e, 0, 0, 0x12][..], 0xc0, 255));
    // The gratuitous ARP came from the virtual MAC too.
    let garp = cap_a
        .frames()
        .into_iter()
        .any(|(_, f)| f.len() >= 42 && f[12..14] == [8, 6] && f[6..12] == VMAC && f[22..28] == VMAC);
    assert!(garp, "no gratuitous ARP from the virtual MAC");
    // Killed: keepalived takes over on its own vrrp.51.
    xa.signal(libc::SIGKILL);
    let t0 = Instant::now();
    xa.wait();
    while !l.has_on('b', DEV, VIP4) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!("vmac: keepalived took over {:?} after SIGKILL of xvs", t0.elapsed());
    assert!(l.has_on('b', DEV, VIP4));
    cap_b.clear();
    std::thread::sleep(Duration::from_millis(200));
    let from_b = adverts(&cap_b.frames());
    assert!(
        from_b.iter().any(|&(m, v, p)| m == VMAC && v == 51 && p == 100),
        "{from_b:02x?}"
    );
    // xvs returns with a lower priority: the stale vrrp.51 of the killed run is replaced, and it
    // stays backup without the VIP.
    assert!(l.has_link('a', DEV));
    x.priority = 50;
    let mut xa = l.xvs('a', &x);
    std::thread::sleep(Duration::from_millis(500));
    assert!(l.has_link('a', DEV) && !l.has_on('a', DEV, VIP4) && l.has_on('b', DEV, VIP4));
    ka.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while !l.has_on('a', DEV, VIP4) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t0.elapsed();
    eprintln!("vmac: xvs took over {took:?} after SIGKILL of keepalived");
    assert!(
        l.has_on('a', DEV, VIP4) && took <= master_down(50, 1) + SLACK,
        "{took:?}"
    );
    cap_a.clear();
    std::thread::sleep(Duration::from_millis(200));
    let from_a = adverts(&cap_a.frames());
    assert!(from_a.iter().any(|&(m, _, p)| m == VMAC && p == 50), "{from_a:02x?}");
    // A clean stop removes the macvlan.
    xa.signal(libc::SIGTERM);
    xa.wait();
    assert!(!l.has_link('a', DEV), "{DEV} left behind");
}

/// use_vmac over IPv6: 00:00:5e:00:02:33 on the wire, xvs master then keepalived after a kill.
#[test]
fn v3_ipv6_vmac_xvs_and_keepalived() {
    if !runnable() {
        return;
    }
    const VMAC: [u8; 6] = [0, 0, 0x5e, 0, 2, 51];
    const DEV: &str = "vrrp.51";
    let mut l = Pair::new();
    let cap_a = Capture::start(&l.br, "pa");
    let mut k = inst(100, "0.01", 3, VIP6);
    k.extra = "  use_vmac\n".into();
    let ka = l.keepalived('b', &k);
    ka.ready();
    let mut x = inst(150, "0.01", 3, VIP6);
    x.extra = "use_vmac = true\n".into();
    let mut xa = l.xvs('a', &x);
    let took = l.wait_master_dev('a', DEV, VIP6, Duration::from_secs(5));
    eprintln!("vmac/IPv6: xvs master on {DEV} after {took:?}");
    l.stays_master('a', VIP6, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(200));
    let from_a = adverts(&cap_a.frames());
    assert!(
        from_a.iter().any(|&(m, v, p)| m == VMAC && v == 51 && p == 150),
        "{from_a:02x?}"
    );
    assert!(l.has_on('a', DEV, VIP6) && !l.has_on('b', DEV, VIP6));
    xa.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while !l.has_on('b', DEV, VIP6) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!(
        "vmac/IPv6: keepalived took over {:?} after SIGKILL of xvs",
        t0.elapsed()
    );
    assert!(l.has_on('b', DEV, VIP6));
}
