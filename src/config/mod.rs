//! Configuration: TOML read into raw serde structs (`raw`), then resolved into the validated model
//! below that the rest of xvs uses. A file is accepted whole or refused whole, with every error
//! found, each naming the file, the line, the key and the reason.

mod check;
mod raw;
mod resolve;
pub mod vrrp;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::types::{Mac, Method, Prefix, Proto, SchedKind, SchedOpts, Timeouts};

/// The embedded default configuration: the lab's address plan, one service per method.
pub const DEFAULT: &str = include_str!("../../config/xvs.toml");

/// The resolved, validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub global: Global,
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
    pub conn: ConnSettings,
    pub services: Vec<VirtualServer>,
    /// VRRP instances, sync groups and scripts (`[[vrrp_instance]]` and friends).
    pub vrrp: vrrp::Vrrp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    pub workers: Workers,
    pub io: IoMode,
    pub xdp_mode: XdpMode,
    pub batch_size: usize,
    /// The Unix socket `xvs ctl` talks to (root only).
    pub admin_socket: std::path::PathBuf,
    /// Where Prometheus metrics are served over HTTP (`GET /metrics`); off when absent.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Where the admin socket is unless `[global] admin_socket` says.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/xvs/xvs.sock";

/// How many workers, or on which cores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workers {
    Count(usize),
    Cores(Vec<usize>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    Auto,
    AfXdp,
    AfPacket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// Read from the system at run time when absent.
    pub mac: Option<Mac>,
    pub addrs: Vec<Prefix>,
    pub mtu: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: Prefix,
    pub via: Option<IpAddr>,
    pub interface: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub addr: IpAddr,
    pub mac: Mac,
    pub interface: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnSettings {
    pub max_conns: usize,
    /// A power of two.
    pub shards: usize,
    pub timeouts: Timeouts,
}

impl ConnSettings {
    /// The connection table's settings.
    pub fn table(&self) -> crate::conn::TableConfig {
        crate::conn::TableConfig {
            max_conns: self.max_conns,
            shards: self.shards,
            timeouts: self.timeouts,
        }
    }
}

/// A virtual service (keepalived's `virtual_server`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualServer {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub proto: Proto,
    pub sched: SchedKind,
    pub sched_opts: SchedOpts,
    pub method: Method,
    pub persistence: Option<Persistence>,
    /// FULLNAT local addresses.
    pub laddrs: Vec<IpAddr>,
    pub expire_nodest_conn: bool,
    pub real_servers: Vec<RealServer>,
    /// Health checking of the real servers as a whole: quorum and the sorry server.
    pub health: ServiceHealth,
}

/// keepalived's service-level health options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHealth {
    /// Sum of the weights of live real servers under which the service has lost its quorum.
    pub quorum: u32,
    /// Quorum is regained at `quorum + hysteresis` and lost under `quorum - hysteresis`.
    pub hysteresis: u32,
    /// Run (through `sh -c`) when the quorum is regained, and when it is lost.
    pub quorum_up: Option<String>,
    pub quorum_down: Option<String>,
    /// Takes the service while the quorum is lost.
    pub sorry_server: Option<SorryServer>,
}

impl Default for ServiceHealth {
    fn default() -> Self {
        ServiceHealth {
            quorum: 1,
            hysteresis: 0,
            quorum_up: None,
            quorum_down: None,
            sorry_server: None,
        }
    }
}

/// keepalived's `sorry_server IP PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SorryServer {
    pub addr: IpAddr,
    pub port: u16,
    /// Keep it in the table with weight 0 while the quorum holds (keepalived's `sorry_server_inhibit`).
    pub inhibit: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub timeout: Duration,
    /// Prefix length applied to the client address.
    pub prefix_len: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServer {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    /// On failure keep the server with weight 0 (its connections drain) instead of removing it.
    pub inhibit_on_failure: bool,
    /// Run (through `sh -c`) when the server comes up or goes down.
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
    /// The server is up when every one of its checkers says so; none means always up.
    pub checks: Vec<Check>,
}

/// One checker of a real server (keepalived's `TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `MISC_CHECK`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub kind: CheckKind,
    /// Where to connect: the real server's address and port unless `connect_ip`/`connect_port` say.
    pub connect: std::net::SocketAddr,
    /// Source address and port (`bindto`, `bind_port`).
    pub bind: Option<std::net::SocketAddr>,
    /// Whole-probe deadline: connect, request and answer (`connect_timeout`).
    pub timeout: Duration,
    pub policy: crate::check::Policy,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// Every URL answers with an expected status (and digest): HTTP_GET, or SSL_GET when `tls` is set.
    Http(HttpCheck),
    /// A program's exit status says (MISC_CHECK).
    Misc(MiscCheck),
}

impl CheckKind {
    /// keepalived's name for the checker.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "TCP_CHECK",
            CheckKind::Http(h) if h.tls.is_some() => "SSL_GET",
            CheckKind::Http(_) => "HTTP_GET",
            CheckKind::Misc(_) => "MISC_CHECK",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    pub urls: Vec<Url>,
    /// Host header; the connect address when absent.
    pub virtualhost: Option<String>,
    /// Request line version: `HTTP/1.0` (keepalived's default) or `HTTP/1.1` (sent with Connection: close).
    pub http11: bool,
    pub tls: Option<TlsCheck>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub path: String,
    /// Inclusive ranges of accepted status codes (keepalived's default: any 2xx).
    pub status: Vec<(u16, u16)>,
    /// MD5 of the body, as keepalived's `genhash` prints it.
    pub digest: Option<[u8; 16]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCheck {
    /// Check the server's certificate chain and name (against `ca_file`); off by default, as keepalived's SSL_GET.
    pub verify: bool,
    pub ca_file: Option<std::path::PathBuf>,
    /// Server name sent in SNI (and checked when verifying): `virtualhost` or the connect address.
    pub sni: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiscCheck {
    /// A command line, run through `sh -c`.
    pub path: String,
    /// Exit 2..=255 means up with weight status - 2 (keepalived's `misc_dynamic`).
    pub dynamic: bool,
}

/// One problem with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted path of the key, such as `virtual_server[2].real_server[0].weight`.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: ", self.file, l)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.reason)
    }
}

/// Every problem found in a file; the file is refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and resolves a file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: None,
            key: String::new(),
            reason: format!("cannot read: {e}"),
        }])
    })?;
    parse(&text, &file)
}

/// Parses and resolves configuration text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    resolve::resolve(text, file)
}

/// The embedded default, resolved (it is tested to be valid).
pub fn default_config() -> Config {
    // Invariant: the `default_config_is_valid` test parses DEFAULT.
    parse(DEFAULT, "config/xvs.toml (embedded)").expect("the embedded default configuration is valid")
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.global;
        let workers = match &g.workers {
            Workers::Count(n) => format!("{n}"),
            Workers::Cores(c) => format!("{} on cores {c:?}", c.len()),
        };
        writeln!(
            f,
            "global: workers {workers}, io {:?}, xdp_mode {:?}, batch_size {}",
            g.io, g.xdp_mode, g.batch_size
        )?;
        let t = &self.conn.timeouts;
        writeln!(
            f,
            "conn: max_conns {}, shards {}, timeouts tcp {}s tcpfin {}s udp {}s",
            self.conn.max_conns,
            self.conn.shards,
            t.tcp_established.as_secs(),
            t.tcp_fin_wait.as_secs(),
            t.udp.as_secs()
        )?;
        for i in &self.interfaces {
            let addrs: Vec<String> = i.addrs.iter().map(|a| a.to_string()).collect();
            let mac = i
                .mac
                .map(|m| m.to_string())
                .unwrap_or_else(|| "(from the system)".into());
            writeln!(f, "interface {}: mac {mac}, addresses [{}]", i.name, addrs.join(", "))?;
        }
        for r in &self.routes {
            let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
            writeln!(f, "route {}{via} dev {}", r.prefix, r.interface)?;
        }
        for n in &self.neighbours {
            writeln!(f, "neighbour {} lladdr {} dev {}", n.addr, n.mac, n.interface)?;
        }
        writeln!(f, "Prot LocalAddress:Port Scheduler Flags")?;
        writeln!(f, "  -> RemoteAddress:Port           Forward Weight")?;
        for s in &self.services {
            let mut flags = Vec::new();
            if let Some(p) = &s.persistence {
                flags.push(format!("persistent {} mask /{}", p.timeout.as_secs(), p.prefix_len));
            }
            if s.sched_opts.fallback {
                flags.push(format!("{}-fallback", s.sched.name()));
            }
            if s.sched_opts.port {
                flags.push(format!("{}-port", s.sched.name()));
            }
            if !s.laddrs.is_empty() {
                let l: Vec<String> = s.laddrs.iter().map(|a| a.to_string()).collect();
                flags.push(format!("laddr {}", l.join(",")));
            }
            writeln!(
                f,
                "{} {} {} {}  ({})",
                s.proto.name().to_uppercase(),
                sock(s.vip, s.port),
                s.sched.name(),
                flags.join(" "),
                s.name
            )?;
            for r in &s.real_servers {
                let checks: Vec<String> = r
                    .checks
                    .iter()
                    .map(|c| match &c.kind {
                        CheckKind::Misc(_) => format!("{} every {:?}", c.kind.name(), c.policy.interval),
                        _ => format!(
                            "{} {} every {:?}",
                            c.kind.name(),
                            sock(c.connect.ip(), c.connect.port()),
                            c.policy.interval
                        ),
                    })
                    .collect();
                let checks = if checks.is_empty() {
                    String::new()
                } else {
                    format!("  checked by {}", checks.join(", "))
                };
                writeln!(
                    f,
                    "  -> {:<28} {:<7} {}{checks}",
                    sock(r.addr, r.port),
                    method_word(s.method),
                    r.weight
                )?;
            }
            if let Some(sorry) = &s.health.sorry_server {
                writeln!(f, "  sorry server {}", sock(sorry.addr, sorry.port))?;
            }
        }
        Ok(())
    }
}

/// ipvsadm's words for the forwarding method.
fn method_word(m: Method) -> &'static str {
    match m {
        Method::Nat => "Masq",
        Method::FullNat => "FullNat",
        Method::Dr => "Route",
        Method::Tun => "Tunnel",
    }
}

fn sock(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}
