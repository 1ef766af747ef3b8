//! VRRP interop in namespaces: `xvs vrrp` against keepalived 2.2.7 (`keepalived -P`) and against
//! itself. Two "director" namespaces on a bridge namespace (198.18.5.0/24, 2001:2:0:5::/64), VIP
//! 198.18.5.100 / 2001:2:0:5::100. State is observed as the VIP appearing on or leaving an
//! interface; takeover times are measured from the kill to the VIP on the new master and printed.
//! Root only; skipped with a reason when not root or without keepalived (scripts/setup installs it).

mod vrrp_lab;

use std::time::{Duration, Instant};

use vrrp_lab::{Pair, inst, master_down, runnable};

const VIP4: &str = "198.18.5.100/24";
const VIP6: &str = "2001:2:0:5::100/64";
/// Slack for process scheduling on a busy 2-core machine and for the 2 ms observation step.
const SLACK: Duration = Duration::from_millis(400);

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
