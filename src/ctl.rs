//! Operations: the admin socket that `xvs ctl` talks to, the ipvsadm-style tables it prints, and
//! the Prometheus text exposition.
//!
//! The protocol is deliberately plain: the client sends its arguments one per line and an empty
//! line; the server answers with an exit status on the first line and the text to print after it,
//! then closes. The control thread serves it between its other duties (accepting without
//! blocking), so answers always reflect one consistent moment.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::check::CheckStatus;
use crate::conn::Conn;
use crate::stats::{DestStats, Stats};
use crate::types::{Method, Proto};
use crate::vrrp::InstanceStatus;

/// Longest request accepted, and how long a client may take to send it.
const MAX_REQUEST: usize = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_millis(500);

/// What the server answers: the exit status for `xvs ctl` and the text it prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: i32,
    pub text: String,
}

impl Reply {
    pub fn ok(text: String) -> Reply {
        Reply { code: 0, text }
    }
    pub fn err(code: i32, text: impl Into<String>) -> Reply {
        Reply {
            code,
            text: text.into(),
        }
    }
}

/// The admin socket, removed when dropped.
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl AdminSocket {
    /// Binds `path` (its directory made 0700, the socket 0600: root only). A socket left by a dead
    /// director is replaced; one that answers belongs to a running director and is an error.
    pub fn bind(path: &Path) -> io::Result<AdminSocket> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} belongs to a running xvs", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(AdminSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The next client waiting now, with its request read; `None` when none is waiting. The
    /// caller answers through [`Pending::reply`] once it has acted on the request, so that a
    /// client sees its change in effect when it gets the answer.
    pub fn next(&self) -> Option<(Vec<String>, Pending)> {
        loop {
            let (stream, _) = self.listener.accept().ok()?;
            if let Ok(args) = read_request(&stream) {
                return Some((args, Pending { stream }));
            }
        }
    }

    /// Answers every client waiting now (at most 16), without waiting for new ones.
    pub fn serve(&self, mut answer: impl FnMut(&[String]) -> Reply) {
        for _ in 0..16 {
            let Some((args, p)) = self.next() else { return };
            p.reply(&answer(&args));
        }
    }
}

/// A client waiting for its answer.
pub struct Pending {
    stream: UnixStream,
}

impl Pending {
    pub fn reply(self, reply: &Reply) {
        let mut w = self.stream;
        let _ = write!(w, "{}\n{}", reply.code, reply.text).and_then(|_| w.flush());
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn read_request(stream: &UnixStream) -> io::Result<Vec<String>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut r = BufReader::new(stream.try_clone()?.take(MAX_REQUEST as u64));
    let mut args = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches('\n');
        if line.is_empty() {
            break;
        }
        args.push(line.to_string());
    }
    Ok(args)
}

/// Sends `args` to the director at `path` and returns its reply.
pub fn request(path: &Path, args: &[String]) -> io::Result<Reply> {
    if args.iter().any(|a| a.contains('\n')) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument holds a newline",
        ));
    }
    let mut s = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: {e} (is xvs run running, and are you root?)", path.display()),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = String::new();
    for a in args {
        req.push_str(a);
        req.push('\n');
    }
    req.push('\n');
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (code, text) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    let code = code
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "malformed reply"))?;
    Ok(Reply {
        code,
        text: text.to_string(),
    })
}

/// Per-second rates over the last estimation interval (ipvsadm --rate).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

impl Rates {
    /// The rates between two samples `secs` apart.
    pub fn between(old: &DestStats, new: &DestStats, secs: f64) -> Rates {
        let r = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs.max(1e-3)).round() as u64;
        Rates {
            cps: r(old.conns, new.conns),
            inpps: r(old.pkts_in, new.pkts_in),
            outpps: r(old.pkts_out, new.pkts_out),
            inbps: r(old.bytes_in, new.bytes_in),
            outbps: r(old.bytes_out, new.bytes_out),
        }
    }

    fn add(&mut self, o: &Rates) {
        self.cps += o.cps;
        self.inpps += o.inpps;
        self.outpps += o.outpps;
        self.inbps += o.inbps;
        self.outbps += o.outbps;
    }
}

/// One real server as the tables show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestRow {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub active: u64,
    pub inactive: u64,
    pub stats: DestStats,
    pub rates: Rates,
}

/// One virtual service as the tables show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcRow {
    pub name: String,
    pub proto: Proto,
    pub vip: IpAddr,
    pub port: u16,
    pub sched: &'static str,
    pub method: Method,
    /// Persistence timeout in seconds, and the netmask's prefix length.
    pub persistent: Option<(u64, u8)>,
    pub dests: Vec<DestRow>,
}

impl SvcRow {
    fn stats(&self) -> DestStats {
        let mut s = DestStats::default();
        self.dests.iter().for_each(|d| s.merge(&d.stats));
        s
    }
    fn rates(&self) -> Rates {
        let mut r = Rates::default();
        self.dests.iter().for_each(|d| r.add(&d.rates));
        r
    }
}

fn endpoint(a: IpAddr, p: u16) -> String {
    SocketAddr::new(a, p).to_string()
}

fn forward(m: Method) -> &'static str {
    match m {
        Method::Nat => "Masq",
        Method::FullNat => "FullNat",
        Method::Dr => "Route",
        Method::Tun => "Tunnel",
    }
}

fn service_head(s: &SvcRow) -> String {
    format!("{}  {}", s.proto.name().to_uppercase(), endpoint(s.vip, s.port))
}

/// Which table `-L` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// `-L -n`: schedulers, weights and connection counts.
    Table,
    /// `--stats`: totals.
    Stats,
    /// `--rate`: per second.
    Rate,
}

/// ipvsadm's `-L -n`, `-L -n --stats` and `-L -n --rate`, in its layout. `size` is the connection
/// table's capacity (ipvsadm prints the hash table size there).
pub fn list(rows: &[SvcRow], size: usize, what: Listing) -> String {
    let mut o = format!("IP Virtual Server version 1.2.1 (size={size})\n");
    match what {
        Listing::Table => {
            o.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            o.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
            for s in rows {
                let flags = s
                    .persistent
                    .map(|(t, len)| {
                        let full = if s.vip.is_ipv4() { 32 } else { 128 };
                        if len == full {
                            format!(" persistent {t}")
                        } else {
                            format!(" persistent {t} mask /{len}")
                        }
                    })
                    .unwrap_or_default();
                let _ = writeln!(o, "{} {}{flags}", service_head(s), s.sched);
                for d in &s.dests {
                    let _ = writeln!(
                        o,
                        "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                        endpoint(d.addr, d.port),
                        forward(s.method),
                        d.weight,
                        d.active,
                        d.inactive
                    );
                }
            }
        }
        Listing::Stats => {
            o.push_str("Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n");
            o.push_str("  -> RemoteAddress:Port\n");
            let line = |o: &mut String, head: String, st: &DestStats| {
                let _ = writeln!(
                    o,
                    "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    st.conns, st.pkts_in, st.pkts_out, st.bytes_in, st.bytes_out
                );
            };
            for s in rows {
                line(&mut o, service_head(s), &s.stats());
                for d in &s.dests {
                    line(&mut o, format!("  -> {}", endpoint(d.addr, d.port)), &d.stats);
                }
            }
        }
        Listing::Rate => {
            o.push_str("Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n");
            o.push_str("  -> RemoteAddress:Port\n");
            let line = |o: &mut String, head: String, r: &Rates| {
                let _ = writeln!(
                    o,
                    "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    r.cps, r.inpps, r.outpps, r.inbps, r.outbps
                );
            };
            for s in rows {
                line(&mut o, service_head(s), &s.rates());
                for d in &s.dests {
                    line(&mut o, format!("  -> {}", endpoint(d.addr, d.port)), &d.rates);
                }
            }
        }
    }
    o
}

/// ipvsadm's `-L -n -c`: one line per connection with the time it has left.
pub fn connections(entries: &[(Conn, Duration)], more: bool) -> String {
    let mut o = String::from("IPVS connection entries\n");
    o.push_str("pro expire state       source             virtual            destination\n");
    for (c, left) in entries {
        let secs = left.as_secs();
        let _ = writeln!(
            o,
            "{:<3} {:02}:{:02}  {:<11} {:<18} {:<18} {}",
            c.proto.name().to_uppercase(),
            secs / 60,
            secs % 60,
            c.state.name(),
            endpoint(c.caddr.to_ip(), c.cport),
            endpoint(c.vaddr.to_ip(), c.vport),
            endpoint(c.daddr.to_ip(), c.dport),
        );
    }
    if more {
        o.push_str("(more connections not shown)\n");
    }
    o
}

/// `xvs ctl health`: every checker with its state and last result.
pub fn health(st: &[CheckStatus]) -> String {
    let mut o = String::from("Service / real server                         Checker    State  Last result\n");
    if st.is_empty() {
        o.push_str("(no health checks configured)\n");
    }
    for c in st {
        let last = match &c.last {
            None => "not checked yet".to_string(),
            Some(crate::check::Outcome::Up { weight: None }) => "ok".into(),
            Some(crate::check::Outcome::Up { weight: Some(w) }) => format!("ok, weight {w}"),
            Some(crate::check::Outcome::Down(why)) => why.clone(),
        };
        let who = format!("{} {}", c.service, endpoint(c.server.0, c.server.1));
        let _ = writeln!(
            o,
            "{who:<45} {:<10} {:<6} {last}",
            c.checker,
            if c.up { "UP" } else { "DOWN" }
        );
    }
    o
}

/// `xvs ctl vrrp`: every instance with its state, priorities and master.
pub fn vrrp(st: &[InstanceStatus]) -> String {
    let mut o = String::from("Instance         Interface  VRID State   Prio Eff  Master            Adverts rx/tx\n");
    if st.is_empty() {
        o.push_str("(no VRRP instances configured)\n");
    }
    for i in st {
        let _ = writeln!(
            o,
            "{:<16} {:<10} {:<4} {:<7} {:<4} {:<4} {:<17} {}/{}",
            i.name,
            i.interface,
            i.vrid,
            format!("{:?}", i.state).to_uppercase(),
            i.priority,
            i.effective_priority,
            i.master.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            i.counters.adverts_rx,
            i.counters.adverts_tx
        );
    }
    o
}

/// Everything the metrics show.
pub struct MetricsView<'a> {
    pub rows: &'a [SvcRow],
    pub stats: &'a Stats,
    pub io: &'a crate::io::IoCounters,
    pub conns: usize,
    pub capacity: usize,
    pub health: &'a [CheckStatus],
    pub vrrp: &'a [InstanceStatus],
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition (format 0.0.4) of `v`.
pub fn metrics(v: &MetricsView) -> String {
    let mut o = String::new();
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut o,
        "xvs_frames_received_total",
        "counter",
        "Frames the workers received.",
    );
    let _ = writeln!(o, "xvs_frames_received_total {}", v.stats.rx);
    family(&mut o, "xvs_frames_total", "counter", "Frames by verdict.");
    for (verdict, n) in [
        ("forwarded", v.stats.forwarded),
        ("replied", v.stats.replied),
        ("to_kernel", v.stats.passed),
        ("dropped", v.stats.dropped_total()),
    ] {
        let _ = writeln!(o, "xvs_frames_total{{verdict=\"{verdict}\"}} {n}");
    }
    family(&mut o, "xvs_dropped_total", "counter", "Dropped frames by reason.");
    for r in crate::stats::DropReason::ALL {
        let _ = writeln!(
            o,
            "xvs_dropped_total{{reason=\"{}\"}} {}",
            r.label(),
            v.stats.dropped[*r as usize]
        );
    }
    family(
        &mut o,
        "xvs_io_frames_total",
        "counter",
        "Frames moved by the packet I/O.",
    );
    let _ = writeln!(o, "xvs_io_frames_total{{direction=\"rx\"}} {}", v.io.rx);
    let _ = writeln!(o, "xvs_io_frames_total{{direction=\"tx\"}} {}", v.io.tx);
    family(
        &mut o,
        "xvs_io_tx_ring_full_total",
        "counter",
        "Times the transmit ring was full.",
    );
    let _ = writeln!(o, "xvs_io_tx_ring_full_total {}", v.io.tx_full);
    family(&mut o, "xvs_connections", "gauge", "Entries in the connection table.");
    let _ = writeln!(o, "xvs_connections {}", v.conns);
    family(
        &mut o,
        "xvs_connections_max",
        "gauge",
        "The connection table's size limit.",
    );
    let _ = writeln!(o, "xvs_connections_max {}", v.capacity);
    family(&mut o, "xvs_connections_created_total", "counter", "New connections.");
    let _ = writeln!(o, "xvs_connections_created_total {}", v.stats.conns);
    family(
        &mut o,
        "xvs_flow_cache_hits_total",
        "counter",
        "Connection lookups served by the workers' flow caches.",
    );
    let _ = writeln!(o, "xvs_flow_cache_hits_total {}", v.stats.flow_hits);

    let dest_labels = |s: &SvcRow, d: &DestRow| {
        format!(
            "service=\"{}\",vip=\"{}\",server=\"{}\"",
            label(&s.name),
            endpoint(s.vip, s.port),
            endpoint(d.addr, d.port)
        )
    };
    type Pick = fn(&DestRow) -> u64;
    let per_dest: [(&str, &str, &str, Pick); 8] = [
        (
            "xvs_real_server_connections_total",
            "counter",
            "Connections scheduled to the real server.",
            |d| d.stats.conns,
        ),
        (
            "xvs_real_server_packets_in_total",
            "counter",
            "Packets from clients forwarded to the real server.",
            |d| d.stats.pkts_in,
        ),
        (
            "xvs_real_server_packets_out_total",
            "counter",
            "Packets from the real server forwarded to clients.",
            |d| d.stats.pkts_out,
        ),
        (
            "xvs_real_server_bytes_in_total",
            "counter",
            "IP bytes from clients forwarded to the real server.",
            |d| d.stats.bytes_in,
        ),
        (
            "xvs_real_server_bytes_out_total",
            "counter",
            "IP bytes from the real server forwarded to clients.",
            |d| d.stats.bytes_out,
        ),
        (
            "xvs_real_server_active_connections",
            "gauge",
            "Established connections (ipvsadm ActiveConn).",
            |d| d.active,
        ),
        (
            "xvs_real_server_inactive_connections",
            "gauge",
            "Other connections (ipvsadm InActConn).",
            |d| d.inactive,
        ),
        (
            "xvs_real_server_weight",
            "gauge",
            "Weight in the running table (0: drained or failed with inhibit_on_failure).",
            |d| u64::from(d.weight),
        ),
    ];
    for (name, kind, help, pick) in per_dest {
        family(&mut o, name, kind, help);
        for s in v.rows {
            for d in &s.dests {
                let _ = writeln!(o, "{name}{{{}}} {}", dest_labels(s, d), pick(d));
            }
        }
    }
    family(
        &mut o,
        "xvs_health_check_up",
        "gauge",
        "1 when the checker says the real server is up.",
    );
    for c in v.health {
        let _ = writeln!(
            o,
            "xvs_health_check_up{{service=\"{}\",server=\"{}\",checker=\"{}\"}} {}",
            label(&c.service),
            endpoint(c.server.0, c.server.1),
            c.checker,
            u8::from(c.up)
        );
    }
    family(&mut o, "xvs_vrrp_state", "gauge", "1 for the instance's current state.");
    for i in v.vrrp {
        let cur = format!("{:?}", i.state).to_lowercase();
        for st in ["init", "backup", "master", "fault"] {
            let _ = writeln!(
                o,
                "xvs_vrrp_state{{instance=\"{}\",state=\"{st}\"}} {}",
                label(&i.name),
                u8::from(cur.starts_with(st))
            );
        }
    }
    family(&mut o, "xvs_vrrp_priority", "gauge", "Effective VRRP priority.");
    for i in v.vrrp {
        let _ = writeln!(
            o,
            "xvs_vrrp_priority{{instance=\"{}\"}} {}",
            label(&i.name),
            i.effective_priority
        );
    }
    o
}

/// A tiny HTTP server for `GET /metrics`, polled by the control thread.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    pub fn bind(addr: SocketAddr) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(MetricsServer { listener })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers the scrapes waiting now (at most 8); `body` is called only if one is.
    pub fn serve(&self, mut body: impl FnMut() -> String) {
        for _ in 0..8 {
            let Ok((s, _)) = self.listener.accept() else { return };
            let _ = (|| -> io::Result<()> {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                let mut r = BufReader::new(s.try_clone()?.take(8192));
                let mut line = String::new();
                r.read_line(&mut line)?;
                // Skip the rest of the head.
                let mut h = String::new();
                while r.read_line(&mut h)? > 2 {
                    h.clear();
                }
                let mut w = s;
                let path = line.split_whitespace().nth(1).unwrap_or("");
                if line.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
                    let b = body();
                    write!(
                        w,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                        b.len()
                    )
                } else {
                    w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                }
            })();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<SvcRow> {
        let d = |last: u8, weight, active, conns| DestRow {
            addr: IpAddr::from([198, 18, 2, last]),
            port: 80,
            weight,
            active,
            inactive: 1,
            stats: DestStats {
                conns,
                pkts_in: conns * 6,
                pkts_out: conns * 4,
                bytes_in: conns * 398,
                bytes_out: conns * 478,
            },
            rates: Rates {
                cps: conns,
                ..Rates::default()
            },
        };
        vec![
            SvcRow {
                name: "web".into(),
                proto: Proto::Tcp,
                vip: IpAddr::from([198, 18, 0, 10]),
                port: 80,
                sched: "wrr",
                method: Method::Nat,
                persistent: None,
                dests: vec![d(11, 3, 2, 6), d(12, 0, 0, 4)],
            },
            SvcRow {
                name: "v6".into(),
                proto: Proto::Udp,
                vip: "2001:2::11".parse().unwrap(),
                port: 7,
                sched: "rr",
                method: Method::FullNat,
                persistent: Some((300, 64)),
                dests: vec![],
            },
        ]
    }

    #[test]
    fn list_is_ipvsadms_layout() {
        let want = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  198.18.0.10:80 wrr
  -> 198.18.2.11:80               Masq    3      2          1         
  -> 198.18.2.12:80               Masq    0      0          1         
UDP  [2001:2::11]:7 rr persistent 300 mask /64
";
        assert_eq!(list(&rows(), 4096, Listing::Table), want);
    }

    #[test]
    fn stats_and_rates_sum_the_servers() {
        let want = "IP Virtual Server version 1.2.1 (size=8)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  198.18.0.10:80                     10       60       40     3980     4780
  -> 198.18.2.11:80                      6       36       24     2388     2868
  -> 198.18.2.12:80                      4       24       16     1592     1912
UDP  [2001:2::11]:7                      0        0        0        0        0
";
        assert_eq!(list(&rows(), 8, Listing::Stats), want);
        let r = list(&rows(), 8, Listing::Rate);
        let line = r.lines().find(|l| l.starts_with("TCP  198.18.0.10:80")).unwrap();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            ["TCP", "198.18.0.10:80", "10", "0", "0", "0", "0"]
        );
        assert_eq!(line.len(), 33 + 5 * 9, "ipvsadm's widths");
        let old = DestStats {
            conns: 10,
            pkts_in: 100,
            ..DestStats::default()
        };
        let new = DestStats {
            conns: 30,
            pkts_in: 500,
            ..DestStats::default()
        };
        let r = Rates::between(&old, &new, 2.0);
        assert_eq!((r.cps, r.inpps, r.outpps), (10, 200, 0));
    }

    #[test]
    fn metrics_are_well_formed() {
        let stats = Stats {
            rx: 5,
            forwarded: 4,
            ..Stats::default()
        };
        let io = crate::io::IoCounters::default();
        let m = metrics(&MetricsView {
            rows: &rows(),
            stats: &stats,
            io: &io,
            conns: 3,
            capacity: 100,
            health: &[],
            vrrp: &[],
        });
        assert!(m.contains("xvs_frames_total{verdict=\"forwarded\"} 4\n"));
        assert!(m.contains(
            "xvs_real_server_connections_total{service=\"web\",vip=\"198.18.0.10:80\",server=\"198.18.2.11:80\"} 6\n"
        ));
        for line in m.lines() {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP xvs_") || line.starts_with("# TYPE xvs_"),
                    "{line}"
                );
                continue;
            }
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("xvs_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn socket_round_trip_and_permissions() {
        let dir = std::env::temp_dir().join(format!("xvs-ctl-{}", std::process::id()));
        let path = dir.join("xvs.sock");
        let sock = AdminSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(AdminSocket::bind(&path).is_err(), "a live socket is not taken over");
        let p = path.clone();
        let client = std::thread::spawn(move || request(&p, &["-L".into(), "-n".into()]).unwrap());
        let t0 = std::time::Instant::now();
        while !client.is_finished() && t0.elapsed() < Duration::from_secs(5) {
            sock.serve(|args| Reply::ok(format!("got {}\n", args.join(" "))));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(client.join().unwrap(), Reply::ok("got -L -n\n".into()));
        drop(sock);
        assert!(!path.exists());
        // A stale socket file (no listener) is replaced.
        let stale = UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(AdminSocket::bind(&path).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// ipvsadm's editing commands, long and short.
pub const EDITS: &[&str] = &[
    "-A",
    "--add-service",
    "-E",
    "--edit-service",
    "-D",
    "--delete-service",
    "-a",
    "--add-server",
    "-e",
    "--edit-server",
    "-d",
    "--delete-server",
];

/// A virtual service as ipvsadm names it: `-t|-u ADDR:PORT`.
fn service_arg(args: &[&str]) -> Result<(&'static str, SocketAddr), String> {
    for (i, a) in args.iter().enumerate() {
        let proto = match *a {
            "-t" | "--tcp-service" => "tcp",
            "-u" | "--udp-service" => "udp",
            _ => continue,
        };
        let v = args.get(i + 1).ok_or(format!("{a} needs ADDR:PORT"))?;
        let addr = v
            .parse::<SocketAddr>()
            .map_err(|_| format!("'{v}' is not ADDR:PORT ([ADDR]:PORT for IPv6)"))?;
        return Ok((proto, addr));
    }
    Err("name the virtual service with -t|-u ADDR:PORT".into())
}

/// The value after option `names`, if given.
fn opt<'a>(args: &[&'a str], names: &[&str]) -> Result<Option<&'a str>, String> {
    match args.iter().position(|a| names.contains(a)) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .copied()
            .filter(|v| !v.starts_with('-'))
            .map(Some)
            .ok_or(format!("{} needs a value", names[0])),
    }
}

fn has(args: &[&str], names: &[&str]) -> bool {
    args.iter().any(|a| names.contains(a))
}

/// The forwarding method flag (`-g`, `-i`, `-m`, `--fullnat`), as keepalived's `lb_kind`.
fn method_arg(args: &[&str]) -> Option<&'static str> {
    if has(args, &["-g", "--gatewaying"]) {
        Some("DR")
    } else if has(args, &["-i", "--ipip"]) {
        Some("TUN")
    } else if has(args, &["-m", "--masquerading"]) {
        Some("NAT")
    } else if has(args, &["-b", "--fullnat"]) {
        Some("FULLNAT")
    } else {
        None
    }
}

fn same_ip(v: Option<&toml::Value>, ip: IpAddr) -> bool {
    v.and_then(|v| v.as_str()).and_then(|s| s.parse::<IpAddr>().ok()) == Some(ip)
}

fn find_service(doc: &mut toml::Table, proto: &str, vs: SocketAddr) -> Option<usize> {
    let list = doc.get("virtual_server")?.as_array()?;
    list.iter().position(|s| {
        let t = s.as_table();
        let p = t
            .and_then(|t| t.get("protocol"))
            .and_then(|v| v.as_str())
            .unwrap_or("tcp")
            .to_ascii_lowercase();
        same_ip(t.and_then(|t| t.get("vip")), vs.ip())
            && t.and_then(|t| t.get("port")).and_then(|v| v.as_integer()) == Some(i64::from(vs.port()))
            && p == proto
    })
}

/// Applies one of ipvsadm's editing commands (`-A`, `-E`, `-D`, `-a`, `-e`, `-d`) to the running
/// configuration as a TOML document. The caller validates the result exactly as a file is
/// validated and publishes it only if it is accepted. Returns what was done, for the reply.
pub fn edit(doc: &mut toml::Table, args: &[&str]) -> Result<String, String> {
    use toml::Value;
    let op = *args.first().ok_or("no command")?;
    let (proto, vs) = service_arg(args)?;
    doc.entry("virtual_server").or_insert_with(|| Value::Array(Vec::new()));
    let found = find_service(doc, proto, vs);
    let list = doc
        .get_mut("virtual_server")
        .and_then(Value::as_array_mut)
        .ok_or("virtual_server is not an array")?;
    let what = format!("{} {vs}", proto.to_uppercase());
    match op {
        "-A" | "--add-service" | "-E" | "--edit-service" => {
            let adding = op == "-A" || op == "--add-service";
            let idx = match (found, adding) {
                (Some(_), true) => return Err(format!("{what} exists (use -E to edit it)")),
                (None, false) => return Err(format!("no virtual service {what}")),
                (Some(i), false) => i,
                (None, true) => {
                    let mut t = toml::Table::new();
                    t.insert("vip".into(), Value::String(vs.ip().to_string()));
                    t.insert("port".into(), Value::Integer(i64::from(vs.port())));
                    t.insert("protocol".into(), Value::String(proto.into()));
                    t.insert("lb_kind".into(), Value::String("NAT".into()));
                    list.push(Value::Table(t));
                    list.len() - 1
                }
            };
            let t = list[idx].as_table_mut().ok_or("virtual_server entry is not a table")?;
            if let Some(s) = opt(args, &["-s", "--scheduler"])? {
                t.insert("lb_algo".into(), Value::String(s.into()));
            }
            if let Some(m) = method_arg(args) {
                t.insert("lb_kind".into(), Value::String(m.into()));
            }
            if let Some(l) = opt(args, &["--laddr"])? {
                let addrs = l.split(',').map(|a| Value::String(a.trim().into())).collect();
                t.insert("laddr".into(), Value::Array(addrs));
            }
            if has(args, &["-p", "--persistent"]) {
                let secs = opt(args, &["-p", "--persistent"]).ok().flatten().unwrap_or("300");
                let n: i64 = secs
                    .parse()
                    .map_err(|_| format!("'{secs}' is not a number of seconds"))?;
                t.insert("persistence_timeout".into(), Value::Integer(n));
            }
            if let Some(m) = opt(args, &["-M", "--netmask"])? {
                t.insert("persistence_granularity".into(), Value::String(m.into()));
            }
            Ok(format!("{} {what}", if adding { "added" } else { "edited" }))
        }
        "-D" | "--delete-service" => {
            let i = found.ok_or(format!("no virtual service {what}"))?;
            list.remove(i);
            Ok(format!("deleted {what}"))
        }
        "-a" | "--add-server" | "-e" | "--edit-server" | "-d" | "--delete-server" => {
            let i = found.ok_or(format!("no virtual service {what}"))?;
            let svc = list[i].as_table_mut().ok_or("virtual_server entry is not a table")?;
            let r = opt(args, &["-r", "--real-server"])?.ok_or("name the real server with -r ADDR[:PORT]")?;
            let (raddr, rport) = match r.parse::<SocketAddr>() {
                Ok(s) => (s.ip(), s.port()),
                Err(_) => (
                    r.trim_matches(|c| c == '[' || c == ']')
                        .parse::<IpAddr>()
                        .map_err(|_| format!("'{r}' is not ADDR[:PORT]"))?,
                    vs.port(),
                ),
            };
            if let Some(m) = method_arg(args) {
                let kind = svc
                    .get("lb_kind")
                    .and_then(|v| v.as_str())
                    .unwrap_or("NAT")
                    .to_ascii_uppercase();
                let kind = if kind == "FNAT" { "FULLNAT".into() } else { kind };
                if kind != m {
                    return Err(format!(
                        "{what} forwards with {kind}: xvs sets the method per virtual service (-E ... {})",
                        match m {
                            "DR" => "-g",
                            "TUN" => "-i",
                            "FULLNAT" => "--fullnat",
                            _ => "-m",
                        }
                    ));
                }
            }
            let servers = svc
                .entry("real_server")
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
                .ok_or("real_server is not an array")?;
            let pos = servers.iter().position(|s| {
                let t = s.as_table();
                same_ip(t.and_then(|t| t.get("address")), raddr)
                    && t.and_then(|t| t.get("port"))
                        .and_then(|v| v.as_integer())
                        .unwrap_or(i64::from(vs.port()))
                        == i64::from(rport)
            });
            let rs = SocketAddr::new(raddr, rport);
            let weight = opt(args, &["-w", "--weight"])?
                .map(|w| w.parse::<i64>().map_err(|_| format!("'{w}' is not a weight")))
                .transpose()?;
            match (op, pos) {
                ("-a" | "--add-server", Some(_)) => Err(format!("{rs} is already a real server of {what}")),
                ("-a" | "--add-server", None) => {
                    let mut t = toml::Table::new();
                    t.insert("address".into(), Value::String(raddr.to_string()));
                    t.insert("port".into(), Value::Integer(i64::from(rport)));
                    t.insert("weight".into(), Value::Integer(weight.unwrap_or(1)));
                    servers.push(Value::Table(t));
                    Ok(format!("added real server {rs} to {what}"))
                }
                (_, None) => Err(format!("{rs} is not a real server of {what}")),
                ("-e" | "--edit-server", Some(k)) => {
                    if let (Some(w), Some(t)) = (weight, servers[k].as_table_mut()) {
                        t.insert("weight".into(), Value::Integer(w));
                    }
                    Ok(format!("edited real server {rs} of {what}"))
                }
                (_, Some(k)) => {
                    servers.remove(k);
                    Ok(format!("deleted real server {rs} from {what}"))
                }
            }
        }
        other => Err(format!("unknown command {other}")),
    }
}

#[cfg(test)]
mod edit_tests {
    use super::*;

    const BASE: &str = r#"
[[virtual_server]]
vip = "198.18.0.10"
port = 80
lb_algo = "wrr"
[[virtual_server.real_server]]
address = "198.18.2.11"
weight = 3
"#;

    fn run(doc: &mut toml::Table, cmd: &str) -> Result<crate::config::Config, String> {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        edit(doc, &args)?;
        let text = toml::to_string(doc).map_err(|e| e.to_string())?;
        crate::config::parse(&text, "xvs ctl").map_err(|e| e.to_string())
    }

    #[test]
    fn ipvsadm_edits_reach_the_resolved_configuration() {
        let mut doc: toml::Table = toml::from_str(BASE).unwrap();
        let c = run(&mut doc, "-a -t 198.18.0.10:80 -r 198.18.2.12:80 -m -w 2").unwrap();
        let w: Vec<u32> = c.services[0].real_servers.iter().map(|r| r.weight).collect();
        assert_eq!(w, vec![3, 2]);
        let c = run(&mut doc, "-e -t 198.18.0.10:80 -r 198.18.2.11 -w 0").unwrap();
        assert_eq!(c.services[0].real_servers[0].weight, 0);
        let c = run(&mut doc, "-A -u 198.18.0.20:53 -s sh -g -p 60").unwrap();
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[1].method, Method::Dr);
        assert_eq!(c.services[1].proto, Proto::Udp);
        assert_eq!(c.services[1].persistence.unwrap().timeout, Duration::from_secs(60));
        let c = run(&mut doc, "-E -t 198.18.0.10:80 -s rr").unwrap();
        assert_eq!(c.services[0].sched.name(), "rr");
        let c = run(&mut doc, "-d -t 198.18.0.10:80 -r 198.18.2.11:80").unwrap();
        assert_eq!(c.services[0].real_servers.len(), 1);
        let c = run(&mut doc, "-D -u 198.18.0.20:53").unwrap();
        assert_eq!(c.services.len(), 1);
    }

    #[test]
    fn bad_edits_are_refused_with_a_reason() {
        let mut doc: toml::Table = toml::from_str(BASE).unwrap();
        for (cmd, why) in [
            ("-a -t 198.18.0.10:80 -r 198.18.2.11:80", "already a real server"),
            ("-a -t 198.18.0.99:80 -r 198.18.2.11:80", "no virtual service"),
            ("-a -t 198.18.0.10:80 -r 198.18.2.12:80 -g", "forwards with NAT"),
            ("-A -t 198.18.0.10:80", "exists"),
            ("-d -t 198.18.0.10:80 -r 198.18.2.19", "not a real server"),
            ("-a -t 198.18.0.10:80", "-r ADDR"),
            ("-a -r 198.18.2.12", "-t|-u"),
            ("-a -t 198.18.0.10:80 -r 198.18.2.12 -w x", "not a weight"),
        ] {
            let e = run(&mut doc, cmd).unwrap_err();
            assert!(e.contains(why), "{cmd}: {e}");
        }
        // Accepted by the editor but refused by validation, like a bad file.
        let e = run(&mut doc, "-a -t 198.18.0.10:80 -r 2001:2::5 -w 1").unwrap_err();
        assert!(e.contains("address family"), "{e}");
        let e = run(&mut doc, "-A -t 198.18.0.30:80 -s nope").unwrap_err();
        assert!(e.contains("lb_algo"), "{e}");
    }
}
