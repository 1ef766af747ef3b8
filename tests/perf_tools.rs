//! `xvs gen` and `xvs sink` between two namespaces of their own (root only): a paced run takes
//! the time its rate gives and arrives whole, a counted run stops at its count, and IPv6 frames
//! are counted as IPv4 ones are.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{XVS, prefix, root};
use xvs::lab::netns::{self, Netns};

const DST_MAC: &str = "02:00:00:00:01:01";

/// One generator at a time: both would run on the first CPU, each pacing the other's frames.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A generator namespace (g0) wired to a sink namespace (g1, GRO on so that XDP_TX frames are
/// received); both removed on drop.
struct Pair {
    sender: Netns,
    sink: Netns,
}

fn pair() -> Pair {
    let p = prefix();
    let sender = Netns::create(&format!("{p}-g")).unwrap();
    let sink = Netns::create(&format!("{p}-s")).unwrap();
    netns::veth(&sender, "g0", &sink, "g1", 1).unwrap();
    sender.ip_batch(&["link set g0 up".into()]).unwrap();
    sink.ip_batch(&[format!("link set g1 address {DST_MAC}"), "link set g1 up".into()])
        .unwrap();
    sink.set_gro("g1", true).unwrap();
    Pair { sender, sink }
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// Runs the generator with `args` while the sink counts; returns (sent, seconds, received,
/// median one-way latency in microseconds).
fn run(p: &Pair, args: &[&str]) -> (u64, f64, u64, f64) {
    let mut sink = Command::new("ip")
        .args([
            "netns",
            "exec",
            p.sink.name(),
            XVS,
            "sink",
            "--dev",
            "g1",
            "--hook",
            "tc",
        ])
        .args(["--duration", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let g = Command::new("ip")
        .args([
            "netns",
            "exec",
            p.sender.name(),
            XVS,
            "gen",
            "--dev",
            "g0",
            "--dst-mac",
            DST_MAC,
        ])
        .args(args)
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill has no memory effects; the child is ours and not yet reaped.
    unsafe { libc::kill(sink.id() as i32, libc::SIGINT) };
    let mut out = String::new();
    sink.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    sink.wait().unwrap();
    let g = String::from_utf8_lossy(&g.stdout).into_owned();
    (
        field(&g, "sent").unwrap_or_else(|| panic!("generator said {g:?}")) as u64,
        field(&g, "secs").unwrap(),
        field(&out, "packets").unwrap_or_else(|| panic!("sink said {out:?}")) as u64,
        field(&out, "p50_us").unwrap_or(f64::NAN),
    )
}

#[test]
fn paced_run_takes_its_time_and_arrives_whole() {
    if !root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let p = pair();
    // 20000 frames at 50000/s: 0.4 s. Unpaced, the generator sends them in a few milliseconds.
    // Sent in bursts (as when each test run took tens of milliseconds to start and the frames
    // due meanwhile left back to back), frames queue behind each other and the median one-way
    // latency is hundreds of microseconds; evenly spaced, a frame finds the path idle.
    let (sent, secs, recv, p50) = run(
        &p,
        &[
            "--dst",
            "198.18.0.10",
            "--flows",
            "100",
            "--count",
            "20000",
            "--rate",
            "50000",
            "--duration",
            "10",
        ],
    );
    assert_eq!(sent, 20000);
    assert!((0.35..3.0).contains(&secs), "20000 frames at 50000/s took {secs} s");
    assert_eq!(recv, 20000, "the sink counts every paced frame");
    assert!(p50 < 100.0, "median latency {p50} us: frames left in bursts");
}

#[test]
fn counted_ipv6_run_stops_at_its_count() {
    if !root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let p = pair();
    let (sent, _, recv, _) = run(
        &p,
        &[
            "--dst",
            "2001:2::10",
            "--size",
            "84",
            "--count",
            "3000",
            "--rate",
            "30000",
            "--duration",
            "10",
        ],
    );
    assert_eq!(sent, 3000);
    assert_eq!(recv, 3000);
}
