//! The filter program is detached on drop, and a stale one left by a crashed xvs is replaced.

mod io_util;

use io_util::*;
use xvs::io::xdp::{XdpProgram, xvs_xdp_attached};
use xvs::io::{IoConfig, IoKind, Workers, XdpMode};

#[test]
fn xdp_program_detached_on_drop_and_stale_one_replaced() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    in_ns(&lab.f, || {
        let ifaces = vec!["f0".to_string(), "f1".to_string()];
        let p = XdpProgram::attach(&ifaces, XdpMode::Native).expect("attach");
        assert!(p.is_native(0) && p.is_native(1));
        assert!(xvs_xdp_attached("f0") && xvs_xdp_attached("f1"));
        drop(p);
        assert!(!xvs_xdp_attached("f0") && !xvs_xdp_attached("f1"));

        // A crashed xvs: the program stays attached with nobody to detach it.
        std::mem::forget(XdpProgram::attach(&ifaces, XdpMode::Generic).expect("attach"));
        assert!(xvs_xdp_attached("f0"));
        // The next start removes it and attaches afresh, here in the other mode.
        let p = XdpProgram::attach(&ifaces, XdpMode::Native).expect("replace stale");
        assert!(p.is_native(0));
        drop(p);
        assert!(!xvs_xdp_attached("f0") && !xvs_xdp_attached("f1"));
    });
}

#[test]
fn workers_detach_the_program_when_stopped() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    in_ns(&lab.f, || {
        let cfg = IoConfig {
            interfaces: vec!["f0".into(), "f1".into()],
            io: IoKind::AfXdp,
            cores: Some(vec![0]),
            umem_frames: 2048,
            ring_size: 256,
            idle_sleep: Some(std::time::Duration::from_micros(500)),
            ..Default::default()
        };
        let w = Workers::start(&cfg, |_| Swap).expect("start");
        assert!(xvs_xdp_attached("f0"));
        w.stop();
        assert!(!xvs_xdp_attached("f0") && !xvs_xdp_attached("f1"));
    });
}
