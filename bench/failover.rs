//! VRRP failover time, an xvs pair against a keepalived pair in the same run:
//! `cargo bench --bench failover` (root, keepalived installed; otherwise it says why and exits 0).
//!
//! The lab of `tests/vrrp_common`: a bridge namespace, directors `a` (198.18.5.1, priority 150, the
//! master) and `b` (198.18.5.2, priority 100), and a client namespace (198.18.5.3). VRRPv3, VIP
//! 198.18.5.100, advert_int 0.1 s. Each director runs a tiny TCP server on 0.0.0.0 that answers a
//! request with its own name, so both contenders are measured with the same request and the
//! comparison is of VRRP failover alone. Each trial starts a fresh pair, waits until `a` is master
//! and serves the client, then, right after one of `a`'s advertisements (the same phase in every
//! trial), kills `a` (SIGKILL: hard failure; SIGTERM: clean stop, priority 0) and measures from the
//! signal to
//! - the first advertisement of `b` on the wire (an AF_PACKET socket in the bridge namespace), and
//! - the first request answered by `b`: the client retries TCP connect (20 ms timeout) + request +
//!   reply, an attempt every 2 ms (10 threads, each every 20 ms). After a SIGKILL the old master's kernel still holds the VIP and answers until
//!   the client follows the new master's gratuitous ARP, so "answered by `b`" is the figure.
//!
//! Environment: `XVS_FAILOVER_RUNS` (runs per contender and event, default 5),
//! `XVS_FAILOVER_ADVERT` (advert_int values in seconds, comma-separated, default `0.1`; `0.1,1`
//! adds the 1 s interval, about 4 minutes more), `XVS_BENCH_WRITE=1` writes `bench/FAILOVER.md`.

#[path = "../tests/vrrp_common/mod.rs"]
mod vrrp_common;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use xvs::lab::netns::Netns;

use vrrp_common::{Pair, Proc, inst, master_down, prefix, runnable, skew_time};

const VIP: &str = vrrp_common::VIP4;
const VIP_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 100);
const A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 1);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 2);
const VRID: u8 = 51;
const PORT: u16 = 8080;
const PRIO_MASTER: u8 = 150;
const PRIO_BACKUP: u8 = 100;
/// The client's connect timeout and the pace of its attempts.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(20);
const READ_TIMEOUT: Duration = Duration::from_millis(50);
const PACE: Duration = Duration::from_millis(2);
/// Client threads, each attempting every PROBERS × PACE, phases PACE apart.
const PROBERS: u32 = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Xvs,
    Keepalived,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Xvs => "xvs",
            Contender::Keepalived => "keepalived 2.2.7",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Event {
    Kill,
    Term,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Kill => "SIGKILL",
            Event::Term => "SIGTERM (priority 0)",
        }
    }
    fn signal(self) -> i32 {
        match self {
            Event::Kill => libc::SIGKILL,
            Event::Term => libc::SIGTERM,
        }
    }
}

/// One trial's figures, from the signal.
struct Sample {
    advert: Duration,
    request: Duration,
}

/// Everything measured for one contender, event and interval.
struct Series {
    cs: u16,
    who: Contender,
    event: Event,
    adverts: Vec<Duration>,
    requests: Vec<Duration>,
    failed: usize,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench`; the VRRP tests cover
        // the same ground, so the suite does not spend a minute here.
        eprintln!("failover bench: run it with cargo bench --bench failover");
        return;
    }
    eprintln!("failover bench: VRRPv3 failover of an xvs pair and a keepalived pair");
    if !runnable() {
        return;
    }
    let runs = env_runs();
    let intervals = match env_intervals() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("failover bench: {e}");
            std::process::exit(2);
        }
    };
    let mut l = Pair::named(&prefix("xf"));
    let client = l.attach("c", "vc", 3);
    let result = (|| -> Result<Vec<Series>, String> {
        let _sa = Server::start(&l.a, "a")?;
        let _sb = Server::start(&l.b, "b")?;
        let cap = Capture::start(&l.br)?;
        let mut all = Vec::new();
        for &cs in &intervals {
            let mut series: Vec<Series> = [Event::Kill, Event::Term]
                .into_iter()
                .flat_map(|event| {
                    [Contender::Xvs, Contender::Keepalived].map(|who| Series {
                        cs,
                        who,
                        event,
                        adverts: Vec::new(),
                        requests: Vec::new(),
                        failed: 0,
                    })
                })
                .collect();
            // Interleaved, so that a slow phase of the shared machine hits both contenders alike.
            for run in 1..=runs {
                for s in &mut series {
                    match trial(&mut l, &client, &cap, s.who, s.event, cs) {
                        Ok(x) => {
                            eprintln!(
                                "  advert {} s, {}, {}, run {run}: advert {}, request {}",
                                secs(cs),
                                s.who.name(),
                                s.event.name(),
                                ms(x.advert),
                                ms(x.request)
                            );
                            s.adverts.push(x.advert);
                            s.requests.push(x.request);
                        }
                        Err(e) => {
                            eprintln!(
                                "  advert {} s, {}, {}, run {run}: FAILED: {e}",
                                secs(cs),
                                s.who.name(),
                                s.event.name()
                            );
                            l.dump();
                            s.failed += 1;
                        }
                    }
                }
            }
            all.extend(series);
        }
        Ok(all)
    })();
    let series = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("failover bench: {e}");
            drop(client);
            drop(l);
            std::process::exit(1);
        }
    };
    let table = table(&series, &intervals, runs);
    println!("{table}");
    if std::env::var("XVS_BENCH_WRITE").is_ok_and(|v| v == "1") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/FAILOVER.md");
        match std::fs::write(path, report(&table)) {
            Ok(()) => eprintln!("failover bench: wrote {path}"),
            Err(e) => eprintln!("failover bench: cannot write {path}: {e}"),
        }
    }
}

fn env_runs() -> usize {
    std::env::var("XVS_FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(5, |n| n.clamp(1, 100))
}

/// The advert intervals to measure, in centiseconds.
fn env_intervals() -> Result<Vec<u16>, String> {
    let v = std::env::var("XVS_FAILOVER_ADVERT").unwrap_or_else(|_| "0.1".into());
    v.split(',')
        .map(|s| {
            let f: f64 = s
                .trim()
                .parse()
                .map_err(|_| format!("XVS_FAILOVER_ADVERT: {s:?} is not a number of seconds"))?;
            if !(0.01..=40.95).contains(&f) {
                return Err(format!("XVS_FAILOVER_ADVERT: {f} is outside 0.01..=40.95 s"));
            }
            Ok((f * 100.0).round() as u16)
        })
        .collect()
}

/// Starts a pair, makes `a` the master the client talks to, signals it and measures.
fn trial(l: &mut Pair, client: &Netns, cap: &Capture, who: Contender, event: Event, cs: u16) -> Result<Sample, String> {
    let advert = Duration::from_millis(u64::from(cs) * 10);
    let mdi = master_down(u32::from(PRIO_BACKUP), u32::from(cs));
    // A stale VIP (left on a SIGKILLed master) must not answer for the next trial.
    for side in ['a', 'b'] {
        let _ = l.ns(side).ip(&["addr", "del", VIP, "dev", &format!("v{side}")]);
    }
    let mut start = |side: char, prio: u8| -> Proc {
        let i = inst(prio, &secs(cs), 3, VIP);
        let p = match who {
            Contender::Xvs => l.xvs(side, &i),
            Contender::Keepalived => l.keepalived(side, &i),
        };
        // keepalived's VRRP child must be known before it can be killed with its parent.
        p.ready();
        p
    };
    let mut a = start('a', PRIO_MASTER);
    let b = start('b', PRIO_BACKUP);
    let limit = Duration::from_secs(5) + 4 * mdi;
    if !until(limit, || l.has('a', VIP) && !l.has('b', VIP)) {
        return Err(format!("a did not become the only master within {limit:?}"));
    }
    let reach = Duration::from_secs(3);
    match request_until(client, "a", reach)? {
        Some(_) => {}
        None => return Err(format!("the client was not served by a within {reach:?}")),
    }
    // Steady state: b has been a backup for a while and the master's gratuitous ARPs are over.
    thread::sleep((3 * advert).max(Duration::from_millis(500)));
    // The signal follows an advertisement of the master at once, so that the phase is the same in
    // every trial: after SIGKILL the backup waits a whole Master_Down_Interval (the worst case).
    cap.drain();
    if cap
        .first_advert(A_ADDR, Instant::now(), Instant::now() + 3 * advert)
        .is_none()
    {
        return Err(format!("no advertisement from a within {:?}", 3 * advert));
    }
    let t0 = Instant::now();
    a.signal(event.signal());
    let window = Duration::from_secs(2) + 2 * mdi;
    let probe = spawn_request(client, "b", t0, window);
    let seen = cap.first_advert(B_ADDR, t0, t0 + window);
    let served = probe
        .join()
        .map_err(|_| "the client thread panicked".to_string())?
        .map_err(|e| format!("client: {e}"))?;
    a.wait();
    drop(a);
    drop(b);
    let advert = seen.ok_or_else(|| format!("no advertisement from b within {window:?}"))?;
    let request = served.ok_or_else(|| format!("no request answered by b within {window:?}"))?;
    Ok(Sample { advert, request })
}

/// Polls `cond` every 2 ms for at most `limit`.
fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Retries the request from the client namespace until `want` answers; the time from `t0`.
fn request_until(client: &Netns, want: &'static str, limit: Duration) -> Result<Option<Duration>, String> {
    spawn_request(client, want, Instant::now(), limit)
        .join()
        .map_err(|_| "the client thread panicked".to_string())?
        .map_err(|e| format!("client: {e}"))
}

fn spawn_request(
    client: &Netns,
    want: &'static str,
    t0: Instant,
    limit: Duration,
) -> JoinHandle<Result<Option<Duration>, String>> {
    let name = client.name().to_string();
    thread::spawn(move || {
        let done = Arc::new(AtomicBool::new(false));
        let probers: Vec<_> = (0..PROBERS)
            .map(|i| {
                let ns = Netns::existing(&name);
                let done = done.clone();
                thread::spawn(move || ns.run(move || Ok(retry(want, t0, i * PACE, limit, &done))))
            })
            .collect();
        let mut first: Option<Duration> = None;
        for p in probers {
            let got = p
                .join()
                .map_err(|_| "a client thread panicked".to_string())?
                .map_err(|e| e.to_string())?;
            first = match (first, got) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(first)
    })
}

/// One prober inside the client namespace: an attempt every PROBERS × PACE from `t0 + phase` (the
/// probers' phases are PACE apart, so a connect that waits out its timeout costs no resolution),
/// bounded in time and count, until one is answered by `want` or another prober succeeded; the
/// time from `t0` to that answer.
fn retry(want: &str, t0: Instant, phase: Duration, limit: Duration, done: &AtomicBool) -> Option<Duration> {
    let vip = SocketAddr::from((VIP_ADDR, PORT));
    let period = PACE * PROBERS;
    let start = t0 + phase;
    let end = t0 + limit;
    let max_attempts = limit.as_millis() / period.as_millis() + 10;
    let mut next = start;
    let mut attempts = 0;
    while !done.load(Ordering::Relaxed) && Instant::now() < end && attempts < max_attempts {
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            thread::sleep(d);
        }
        let now = Instant::now();
        while next <= now {
            next += period;
        }
        attempts += 1;
        if request(vip).is_ok_and(|r| r == want) {
            done.store(true, Ordering::Relaxed);
            return Some(t0.elapsed());
        }
    }
    None
}

/// TCP connect, a short request, the server's name back.
fn request(vip: SocketAddr) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&vip, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.set_write_timeout(Some(READ_TIMEOUT))?;
    s.write_all(b"who\n")?;
    let mut reply = String::new();
    s.take(64).read_to_string(&mut reply)?;
    Ok(reply.trim().to_string())
}

/// A TCP server on 0.0.0.0:PORT inside a director namespace that answers with its name.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns, name: &'static str) -> Result<Server, String> {
        let listener = ns
            .run(|| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
                s.set_reuse_address(true)?;
                s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)).into())?;
                s.listen(1024)?;
                // accept(2) honours SO_RCVTIMEO: the loop sees `stop` at least every 100 ms.
                s.set_read_timeout(Some(Duration::from_millis(100)))?;
                Ok(s)
            })
            .map_err(|e| format!("server in {}: {e}", ns.name()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let mut c = TcpStream::from(c);
                        let _ = c.set_read_timeout(Some(READ_TIMEOUT));
                        let mut req = [0u8; 16];
                        if c.read(&mut req).is_ok() {
                            let _ = c.write_all(name.as_bytes());
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A VRRP advertisement seen on the bridge.
struct Seen {
    at: Instant,
    src: Ipv4Addr,
    vrid: u8,
    priority: u8,
}

/// Every IPv4 VRRP packet on every port of the bridge namespace (AF_PACKET, all interfaces).
struct Capture {
    rx: Receiver<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(br: &Netns) -> Result<Capture, String> {
        let sock = br
            .run(|| {
                let proto = i32::from((libc::ETH_P_IP as u16).to_be());
                let s = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(proto)))?;
                s.set_read_timeout(Some(Duration::from_millis(50)))?;
                s.set_recv_buffer_size(4 << 20)?;
                Ok(s)
            })
            .map_err(|e| format!("capture socket in {}: {e}", br.name()))?;
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut sock = sock;
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let n = match sock.read(&mut buf) {
                    Ok(n) => n,
                    Err(_) => continue,
                };
                let at = Instant::now();
                if let Some((src, vrid, priority)) = parse_vrrp(&buf[..n])
                    && tx
                        .send(Seen {
                            at,
                            src,
                            vrid,
                            priority,
                        })
                        .is_err()
                {
                    return;
                }
            }
        });
        Ok(Capture {
            rx,
            stop,
            thread: Some(thread),
        })
    }

    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// Time from `t0` to the first advertisement from `src` with a non-zero priority.
    fn first_advert(&self, src: Ipv4Addr, t0: Instant, deadline: Instant) -> Option<Duration> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(s) if s.at >= t0 && s.src == src && s.vrid == VRID && s.priority > 0 => {
                    return Some(s.at - t0);
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Source, VRID and priority of an IPv4 packet of protocol 112.
fn parse_vrrp(p: &[u8]) -> Option<(Ipv4Addr, u8, u8)> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    if p[0] >> 4 != 4 || ihl < 20 || p.len() < ihl + 8 || p[9] != 112 {
        return None;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    Some((src, p[ihl + 1], p[ihl + 2]))
}

fn secs(cs: u16) -> String {
    if cs % 100 == 0 {
        format!("{}", cs / 100)
    } else {
        format!("{}", f64::from(cs) / 100.0)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn ms_bare(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// Median, min and max in milliseconds, or dashes without samples.
fn stats(v: &[Duration]) -> [String; 3] {
    if v.is_empty() {
        return ["-".into(), "-".into(), "-".into()];
    }
    let mut s = v.to_vec();
    s.sort();
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    };
    [ms_bare(median), ms_bare(s[0]), ms_bare(s[n - 1])]
}

fn table(series: &[Series], intervals: &[u16], runs: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "VRRPv3, priorities {PRIO_MASTER}/{PRIO_BACKUP}, {runs} runs per row; milliseconds from the signal to the master."
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| advert_int | contender | event | ok/runs | first advert of new master: median | min | max | first request answered by new master: median | min | max | RFC 5798 expectation |"
    );
    let _ = writeln!(t, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for s in series {
        let [am, an, ax] = stats(&s.adverts);
        let [rm, rn, rx] = stats(&s.requests);
        let cs = u32::from(s.cs);
        let mdi = master_down(u32::from(PRIO_BACKUP), cs);
        let skew = skew_time(u32::from(PRIO_BACKUP), cs);
        let expect = match s.event {
            Event::Kill => format!("{} (Master_Down_Interval)", ms_bare(mdi)),
            Event::Term => format!("{} (Skew_Time)", ms_bare(skew)),
        };
        let _ = writeln!(
            t,
            "| {} s | {} | {} | {}/{} | {am} | {an} | {ax} | {rm} | {rn} | {rx} | {expect} |",
            secs(s.cs),
            s.who.name(),
            s.event.name(),
            s.adverts.len(),
            s.adverts.len() + s.failed,
        );
    }
    let _ = writeln!(t);
    for &cs in intervals {
        let c = u32::from(cs);
        let mdi = master_down(u32::from(PRIO_BACKUP), c);
        let skew = skew_time(u32::from(PRIO_BACKUP), c);
        let _ = writeln!(
            t,
            "advert_int {} s, backup priority {PRIO_BACKUP}: Skew_Time = (256 - {PRIO_BACKUP}) × advert_int / 256 = {}, \
             Master_Down_Interval = 3 × advert_int + Skew_Time = {}.",
            secs(cs),
            ms(skew),
            ms(mdi)
        );
    }
    let _ = writeln!(
        t,
        "\nThe signal is sent right after an advertisement of the master. After SIGKILL the backup's timer, \
         restarted by that advertisement, runs out after Master_Down_Interval (the worst case; a kill later in \
         the interval is detected up to one advert_int sooner). After SIGTERM the master sends priority 0 and \
         the backup takes over after Skew_Time. The request figure's resolution is about 2 ms: ten client \
         threads each make an attempt every 20 ms (connect timeout 20 ms), their phases 2 ms apart."
    );
    t
}

fn command_line(argv: &[&str]) -> String {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|e| format!("({} failed: {e})", argv[0]))
}

fn report(table: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "# VRRP failover: xvs and keepalived\n\n\
         `XVS_BENCH_WRITE=1 cargo bench --bench failover` (root; `bench/failover.rs` says how it measures).\n\n\
         - machine: {cores} cores, {cpu} (a shared VM)\n\
         - kernel: {}\n\
         - date: {}\n\
         - keepalived: {}\n\
         - xvs: {} (release build)\n\
         - client: TCP connect (timeout {} ms) + request + reply to the VIP, an attempt every {} ms, the same \
         for both contenders; a request counts when the new master answers it\n\n\
         {table}",
        command_line(&["uname", "-r"]),
        command_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
        command_line(&["keepalived", "--version"]),
        command_line(&["git", "-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"]),
        CONNECT_TIMEOUT.as_millis(),
        PACE.as_millis(),
    )
}
