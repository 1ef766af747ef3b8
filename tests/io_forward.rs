//! AF_XDP (native, generic) and AF_PACKET workers forward UDP through a forwarder namespace while
//! the kernel keeps answering what the filter leaves to it.

mod io_util;

use std::net::SocketAddr;
use std::sync::mpsc;

use io_util::*;
use xvs::io::{IoConfig, IoKind, Workers, XdpMode};
use xvs::types::{Addr, Proto};

const SERVER: &str = "198.18.2.11:9000";

fn cfg(io: IoKind, mode: XdpMode, workers: usize) -> IoConfig {
    IoConfig {
        interfaces: vec!["f0".into(), "f1".into()],
        workers,
        cores: Some(vec![0; workers]),
        io,
        xdp_mode: mode,
        batch: 32,
        umem_frames: 4096,
        ring_size: 512,
        idle_sleep: Some(std::time::Duration::from_micros(200)),
    }
}

/// Starts workers inside the forwarder namespace; they (and the filter) live until `stop` is sent.
fn start_in_forwarder(
    lab: &Lab,
    c: IoConfig,
) -> (
    mpsc::Sender<()>,
    std::thread::JoinHandle<Vec<xvs::io::IoCounters>>,
    IoKind,
) {
    let f = lab.f.clone();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        enter(&f);
        let server: Addr = "198.18.2.11".parse::<std::net::IpAddr>().unwrap().into();
        let svc = [(Proto::Udp, server, 9000)];
        let w = Workers::start_filtered(&c, (&svc, &[], &svc, &[]), |_| Swap).expect("start workers");
        ready_tx.send(w.kind()).unwrap();
        let _ = stop_rx.recv_timeout(std::time::Duration::from_secs(20));
        w.stop()
    });
    let kind = ready_rx.recv().expect("workers started");
    (stop_tx, h, kind)
}

fn forward_both_ways(io: IoKind, mode: XdpMode) {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let echo = echo_server(&lab.s, "198.18.2.11:9000", 8);
    let own = echo_server(&lab.f, "198.18.1.1:7000", 8);
    let (stop, h, kind) = start_in_forwarder(&lab, cfg(io, mode, 1));
    assert_eq!(
        kind,
        if io == IoKind::AfPacket {
            IoKind::AfPacket
        } else {
            IoKind::AfXdp
        }
    );
    let to: SocketAddr = SERVER.parse().unwrap();
    let got = client(&lab.c, "198.18.1.2:0", to, 20, None);
    // Not selected by the filter: the forwarder's own UDP service (and ARP before it) stay with the kernel.
    let own_got = client(&lab.c, "198.18.1.2:0", "198.18.1.1:7000".parse().unwrap(), 3, None);
    stop.send(()).unwrap();
    let counters = h.join().unwrap();
    let _ = in_ns(&lab.s, || {
        udp("198.18.2.11:0").send_to(b"stop", "198.18.2.11:9000").map(|_| ())
    });
    let _ = in_ns(&lab.f, || {
        udp("198.18.1.1:0").send_to(b"stop", "198.18.1.1:7000").map(|_| ())
    });
    let echoed = echo.join().unwrap();
    let own_echoed = own.join().unwrap();
    assert_eq!(got, 20, "all datagrams echoed through xvs ({counters:?})");
    assert!(echoed >= 20);
    assert_eq!(own_got, 3, "the kernel still answers its own address");
    assert!(own_echoed >= 3);
    let rx: u64 = counters.iter().map(|c| c.rx).sum();
    let tx: u64 = counters.iter().map(|c| c.tx).sum();
    assert!(rx >= 40 && tx >= 40, "{counters:?}");
    if io != IoKind::AfPacket {
        // Only what the filter selects reaches AF_XDP: everything received was forwarded.
        assert_eq!(rx, tx, "{counters:?}");
        assert_eq!(counters.iter().map(|c| c.pass_unavailable).sum::<u64>(), 0);
    }
}

#[test]
fn af_xdp_native_forwards_and_kernel_keeps_the_rest() {
    forward_both_ways(IoKind::AfXdp, XdpMode::Native);
}

#[test]
fn af_xdp_generic_forwards_and_kernel_keeps_the_rest() {
    forward_both_ways(IoKind::AfXdp, XdpMode::Generic);
}

#[test]
fn af_packet_forwards_and_kernel_keeps_the_rest() {
    forward_both_ways(IoKind::AfPacket, XdpMode::Auto);
}

#[test]
fn two_workers_on_two_queue_veths_both_get_frames() {
    if !root_or_skip() {
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs to send on two veth queues");
        return;
    }
    let lab = Lab::new(2);
    // Without XPS veth picks the queue by flow hash; with it, by sending CPU (CPU n -> queue n).
    for q in 0..2 {
        let path = format!("/sys/class/net/c0/queues/tx-{q}/xps_cpus");
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.c,
            "sh",
            "-c",
            &format!("echo {} > {path}", 1 << q),
        ]);
    }
    let echo = echo_server(&lab.s, "198.18.2.11:9000", 8);
    let mut c = cfg(IoKind::AfXdp, XdpMode::Auto, 2);
    c.cores = Some(vec![0, 1]);
    let (stop, h, _) = start_in_forwarder(&lab, c);
    let to: SocketAddr = SERVER.parse().unwrap();
    // veth has no RSS: a frame lands on the queue of the sending CPU (mod queue count).
    let a = client(&lab.c, "198.18.1.2:0", to, 10, Some(0));
    let b = client(&lab.c, "198.18.1.2:0", to, 10, Some(1));
    stop.send(()).unwrap();
    let counters = h.join().unwrap();
    let _ = in_ns(&lab.s, || {
        udp("198.18.2.11:0").send_to(b"stop", "198.18.2.11:9000").map(|_| ())
    });
    echo.join().unwrap();
    assert_eq!((a, b), (10, 10), "{counters:?}");
    assert_eq!(counters.len(), 2);
    assert!(counters.iter().all(|c| c.rx > 0 && c.tx > 0), "{counters:?}");
}
