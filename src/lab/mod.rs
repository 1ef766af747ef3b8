//! The namespace lab (`xvs lab up|down|status|serve|client`): a client, a director, a switch and three
//! real servers in network namespaces, wired as DESIGN.md's address plan says.
//!
//! ```text
//!  P-cli            P-lb (director)                P-sw (bridge br0)         P-rs1..3
//!  cli0 ───────── lb0 [VIPs on lo] lb1 ───────── sw-lb1 ┬ sw-rs1 ───────── eth0
//!  198.18.1.2     198.18.1.1       198.18.2.1            ├ sw-rs2 ...        198.18.2.11..13
//! ```

pub mod client;
pub mod netns;
pub mod serve;

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::types::Method;
use netns::{Netns, NetnsError};

/// Namespace roles, in creation order; `lab down` removes only these names. `lb2`, the second
/// director, exists only in a lab built with [`LabOpts::ha`].
pub const ROLES: [&str; 7] = ["cli", "lb", "sw", "rs1", "rs2", "rs3", "lb2"];
/// HTTP port of the lab services and servers.
pub const HTTP_PORT: u16 = 80;
/// UDP echo port of the lab services and servers.
pub const UDP_PORT: u16 = 7;
/// Director's client-side address.
pub const LB0_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// Director's client-side IPv6 address.
pub const LB0_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
/// The client's address.
pub const CLI_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The client's IPv6 address.
pub const CLI_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2);
/// Director's server-side address (DIP).
pub const LB1_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// Director's server-side IPv6 address.
pub const LB1_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1);
/// The second director's client-side address (HA lab).
pub const LB2_0_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
/// The second director's server-side address (HA lab).
pub const LB2_1_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 3);
/// The floating client-side gateway of the HA lab, held by the VRRP master.
pub const GW0_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
/// The floating server-side gateway of the HA lab (the real servers' default route).
pub const GW1_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);

/// A virtual service of the lab plan (each is offered on tcp/80 and udp/7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabService {
    /// The virtual address.
    pub vip: IpAddr,
    /// How the director forwards to the real servers.
    pub method: Method,
}

/// A real server of the lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabServer {
    /// Name, namespace role and the name its servers answer with.
    pub name: String,
    /// IPv4 address on the server network.
    pub v4: Ipv4Addr,
    /// IPv6 address on the server network.
    pub v6: Ipv6Addr,
}

/// The lab's address plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Virtual services.
    pub services: Vec<LabService>,
    /// FULLNAT local addresses (owned by xvs, routed back by the real servers' default route).
    pub laddrs: Vec<IpAddr>,
    /// Real servers.
    pub servers: Vec<LabServer>,
}

impl Plan {
    /// DESIGN.md's plan: the virtual services and FULLNAT local addresses of the embedded
    /// configuration (`config/xvs.toml`, which the director runs on), and three real servers.
    pub fn design() -> Plan {
        // A constant of this binary, parsed by the configuration's own tests.
        let cfg = crate::config::parse(crate::config::DEFAULT, "config/xvs.toml")
            .unwrap_or_else(|e| panic!("the embedded configuration: {e}"));
        let mut services: Vec<LabService> = Vec::new();
        let mut laddrs: Vec<IpAddr> = Vec::new();
        for s in &cfg.services {
            let ls = LabService {
                vip: s.vip,
                method: s.method,
            };
            if !services.contains(&ls) {
                services.push(ls);
            }
            for a in &s.laddrs {
                if !laddrs.contains(a) {
                    laddrs.push(*a);
                }
            }
        }
        let servers = (1..=3u8)
            .map(|i| LabServer {
                name: format!("rs{i}"),
                v4: Ipv4Addr::new(198, 18, 2, 10 + i),
                v6: Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x10 + u16::from(i)),
            })
            .collect();
        Plan {
            services,
            laddrs,
            servers,
        }
    }

    /// The VIPs of services forwarded with `method`.
    pub fn vips(&self, method: Method) -> Vec<IpAddr> {
        self.services
            .iter()
            .filter(|s| s.method == method)
            .map(|s| s.vip)
            .collect()
    }
}

/// Why the lab could not be built or inspected.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A namespace operation failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A namespace of this prefix already exists.
    #[error("namespace {0} exists: run `xvs lab down --prefix` first")]
    Exists(String),
    /// The lab servers did not start listening in time.
    #[error("lab server {0} did not come up")]
    ServerDown(String),
}

/// How to build the lab.
#[derive(Clone, Debug)]
pub struct LabOpts {
    /// Namespace name prefix: namespaces are `PREFIX-cli`, `PREFIX-lb`, ...
    pub prefix: String,
    /// RX and TX queues of every veth.
    pub queues: u16,
    /// The xvs binary that runs `lab serve` in the real servers; `None` starts no servers.
    pub serve_exe: Option<PathBuf>,
    /// Two directors (`lb` and `lb2`) for VRRP: the client side becomes a bridge too (`br1` in
    /// `sw`), no VIP is put on the directors (VRRP adds them to the master's `lb0`), and the client
    /// and the real servers route through the floating gateways [`GW0_V4`] and [`GW1_V4`].
    /// IPv4 only.
    pub ha: bool,
}

/// A built lab; dropping it removes every namespace (and so every process) it created.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    plan: Plan,
    ns: Vec<Netns>,
}

fn v6_nodad(a: Ipv6Addr, len: u8, dev: &str) -> String {
    format!("addr add {a}/{len} dev {dev} nodad")
}

impl Lab {
    /// Builds the lab. `progress` is told each step as it completes; if anything fails (or
    /// `progress` panics) the namespaces built so far are removed.
    pub fn up(opts: &LabOpts, progress: &mut dyn FnMut(&str)) -> Result<Lab, LabError> {
        let plan = Plan::design();
        let name = |role: &str| format!("{}-{role}", opts.prefix);
        if let Some(n) = ROLES
            .iter()
            .map(|r| name(r))
            .find(|n| Path::new("/run/netns").join(n).exists())
        {
            return Err(LabError::Exists(n));
        }
        let mut lab = Lab {
            prefix: opts.prefix.clone(),
            plan,
            ns: Vec::new(),
        };
        for role in ROLES.iter().filter(|r| opts.ha || **r != "lb2") {
            let ns = Netns::create(&name(role))?;
            // Before any interface exists, so that every new one inherits them.
            ns.sysctl(&[
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
            ])?;
            lab.ns.push(ns);
        }
        progress("namespaces");

        let q = opts.queues.max(1).to_string();
        let mut links = if opts.ha {
            vec![
                ("cli", "cli0", "sw", "sw-cli"),
                ("lb", "lb0", "sw", "sw-lb0"),
                ("lb2", "lb0", "sw", "sw-lb20"),
                ("lb", "lb1", "sw", "sw-lb1"),
                ("lb2", "lb1", "sw", "sw-lb21"),
            ]
        } else {
            vec![("cli", "cli0", "lb", "lb0"), ("lb", "lb1", "sw", "sw-lb1")]
        };
        let sw_ports: Vec<String> = lab.plan.servers.iter().map(|s| format!("sw-{}", s.name)).collect();
        for (s, port) in lab.plan.servers.iter().zip(&sw_ports) {
            links.push((s.name.as_str(), "eth0", "sw", port.as_str()));
        }
        let batch: Vec<String> = links
            .iter()
            .map(|(a, ad, b, bd)| {
                format!(
                    "link add {ad} netns {} numtxqueues {q} numrxqueues {q} type veth peer name {bd} netns {} numtxqueues {q} numrxqueues {q}",
                    name(a),
                    name(b)
                )
            })
            .collect();
        netns::run_cmd(&["ip", "-batch", "-"], Some(&(batch.join("\n") + "\n")))?;
        progress("veths");

        // Switch: a bridge joining the director's server side and the real servers (and in the HA
        // lab a second one joining the client and both directors' client sides).
        let mut sw = vec!["link add br0 type bridge".to_string(), "link set br0 up".to_string()];
        let server_side: &[&str] = if opts.ha { &["sw-lb1", "sw-lb21"] } else { &["sw-lb1"] };
        for port in server_side.iter().copied().chain(sw_ports.iter().map(String::as_str)) {
            sw.push(format!("link set {port} master br0"));
            sw.push(format!("link set {port} up"));
        }
        if opts.ha {
            sw.push("link add br1 type bridge".into());
            sw.push("link set br1 up".into());
            for port in ["sw-cli", "sw-lb0", "sw-lb20"] {
                sw.push(format!("link set {port} master br1"));
                sw.push(format!("link set {port} up"));
            }
        }
        lab.ns("sw").ip_batch(&sw)?;
        lab.ns("sw").sysctl(&[("net.ipv6.conf.all.disable_ipv6", "1")])?;
        progress("switch");

        // Client.
        let (gw0, gw1) = if opts.ha { (GW0_V4, GW1_V4) } else { (LB0_V4, LB1_V4) };
        let mut cli = vec![
            "link set cli0 address 02:00:00:00:01:02".to_string(),
            "link set cli0 up".into(),
            format!("addr add {CLI_V4}/24 dev cli0"),
            v6_nodad(CLI_V6, 64, "cli0"),
            format!("route add default via {gw0}"),
        ];
        if !opts.ha {
            cli.push(format!("route add default via {LB0_V6}"));
        }
        lab.ns("cli").ip_batch(&cli)?;
        progress("client");

        // Director.
        let lb = lab.ns("lb");
        let mut cmds = vec![
            "link set lb0 address 02:00:00:00:01:01".to_string(),
            "link set lb1 address 02:00:00:00:02:01".to_string(),
            "link set lb0 up".into(),
            "link set lb1 up".into(),
            format!("addr add {LB0_V4}/24 dev lb0"),
            v6_nodad(LB0_V6, 64, "lb0"),
            format!("addr add {LB1_V4}/24 dev lb1"),
            v6_nodad(LB1_V6, 64, "lb1"),
        ];
        // NAT and FULLNAT VIPs live on the director (it answers ping on them). DR and TUN VIPs live
        // on the real servers, whose replies the director's kernel routes back to the client: with
        // those VIPs on its own lo it would drop the replies as martians. In the HA lab VRRP puts
        // the VIPs on the master.
        for s in lab.plan.services.iter().filter(|s| s.method.two_way() && !opts.ha) {
            cmds.push(match s.vip {
                IpAddr::V4(a) => format!("addr add {a}/32 dev lo"),
                IpAddr::V6(a) => v6_nodad(a, 128, "lo"),
            });
        }
        lb.ip_batch(&cmds)?;
        let mut directors = vec!["lb"];
        if opts.ha {
            lab.ns("lb2").ip_batch(&[
                "link set lb0 address 02:00:00:00:01:03".to_string(),
                "link set lb1 address 02:00:00:00:02:03".to_string(),
                "link set lb0 up".into(),
                "link set lb1 up".into(),
                format!("addr add {LB2_0_V4}/24 dev lb0"),
                format!("addr add {LB2_1_V4}/24 dev lb1"),
            ])?;
            directors.push("lb2");
        }
        for d in &directors {
            lab.ns(d).sysctl(&[
                // xvs forwards what it serves (the XDP program steals it); the kernel routes the rest,
                // which in the lab is the DR and TUN replies from the real servers to the client.
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.conf.lb0.rp_filter", "0"),
                ("net.ipv4.conf.lb1.rp_filter", "0"),
            ])?;
        }
        // A frame XDP-redirected into a veth is dropped unless the receiving peer runs NAPI, which GRO
        // turns on: set it on both ends of both director links so every direction works.
        let mut gro = vec![("lb", "lb0"), ("lb", "lb1"), ("cli", "cli0"), ("sw", "sw-lb1")];
        if opts.ha {
            gro.extend([
                ("lb2", "lb0"),
                ("lb2", "lb1"),
                ("sw", "sw-lb0"),
                ("sw", "sw-lb20"),
                ("sw", "sw-lb21"),
            ]);
        }
        for (role, dev) in gro {
            lab.ns(role).set_gro(dev, true)?;
        }
        // veth leaves TCP/UDP checksums to offload (CHECKSUM_PARTIAL), and AF_XDP copies see them
        // unfinished: the senders whose traffic xvs rewrites must compute them in software.
        for (role, dev) in [("cli", "cli0")]
            .into_iter()
            .chain(lab.plan.servers.iter().map(|s| (s.name.as_str(), "eth0")))
        {
            lab.ns(role).exec(&["ethtool", "-K", dev, "tx", "off"])?;
        }
        progress("director");

        // Real servers.
        let dr = lab.plan.vips(Method::Dr);
        let tun = lab.plan.vips(Method::Tun);
        for (i, s) in lab.plan.servers.iter().enumerate() {
            let ns = lab.ns(&s.name);
            ns.ip_batch(&[
                format!("link set eth0 address 02:00:00:00:02:{:02x}", 0x11 + i),
                "link set eth0 up".into(),
                format!("addr add {}/24 dev eth0", s.v4),
                v6_nodad(s.v6, 64, "eth0"),
                format!("route add default via {gw1}"),
                format!("route add default via {LB1_V6}"),
            ])?;
            let (dr, tun) = (dr.clone(), tun.clone());
            ns.run(move || {
                crate::realserver::dr(&dr).map_err(io::Error::other)?;
                crate::realserver::tun(&tun, "eth0").map_err(io::Error::other)
            })?;
            progress(&s.name);
        }

        if let Some(exe) = &opts.serve_exe {
            lab.start_servers(exe)?;
            progress("servers");
        }
        Ok(lab)
    }

    /// Starts `lab serve` in every real server and waits until each answers on its HTTP port.
    fn start_servers(&self, exe: &Path) -> Result<(), LabError> {
        let exe = exe.to_string_lossy();
        for s in &self.plan.servers {
            let port = HTTP_PORT.to_string();
            let udp = UDP_PORT.to_string();
            self.ns(&s.name).spawn_detached(&[
                &exe,
                "lab",
                "serve",
                "--name",
                &s.name,
                "--http-port",
                &port,
                "--udp-port",
                &udp,
            ])?;
        }
        for s in &self.plan.servers {
            let addr = SocketAddr::from((s.v4, HTTP_PORT));
            let up = self.ns(&s.name).run(move || {
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                        return Ok(true);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(false)
            })?;
            if !up {
                return Err(LabError::ServerDown(s.name.clone()));
            }
        }
        Ok(())
    }

    /// The namespace of `role` (`cli`, `lb`, `sw`, `rs1`, ...).
    ///
    /// # Panics
    /// If `role` is not one of [`ROLES`] or was not created yet: a programming error.
    pub fn ns(&self, role: &str) -> &Netns {
        let name = format!("{}-{role}", self.prefix);
        self.ns
            .iter()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("no lab namespace {name}"))
    }

    /// The address plan the lab was built with.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The namespace prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Leaves everything in place (for `xvs lab up`); `xvs lab down` removes it.
    pub fn keep(self) {
        for ns in self.ns {
            ns.keep();
        }
    }
}

/// Removes the lab namespaces of `prefix` (and the processes in them); returns the names removed.
pub fn down(prefix: &str) -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    for role in ROLES.iter().rev() {
        let name = format!("{prefix}-{role}");
        if Path::new("/run/netns").join(&name).exists() {
            netns::remove(&name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// A human-readable report of the lab of `prefix`: namespaces, addresses, servers.
pub fn status(prefix: &str) -> String {
    let mut out = String::new();
    for role in ROLES {
        let name = format!("{prefix}-{role}");
        if !Path::new("/run/netns").join(&name).exists() {
            if role != "lb2" {
                let _ = writeln!(out, "{name}: absent");
            }
            continue;
        }
        let ns = Netns::existing(&name);
        let addrs = ns.ip(&["-br", "addr"]).unwrap_or_else(|e| format!("{e}\n"));
        let pids = ns.pids();
        let serving = if role.starts_with("rs") {
            if pids.is_empty() {
                ", servers stopped"
            } else {
                ", servers running"
            }
        } else {
            ""
        };
        let _ = writeln!(out, "{name}: {} processes{serving}", pids.len());
        for line in addrs.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

/// What `xvs lab up` prints: the topology and commands to try.
pub fn describe(lab: &Lab) -> String {
    let p = lab.prefix();
    let mut out = format!(
        "lab {p} is up:\n  {p}-cli  cli0 {CLI_V4}/24 {CLI_V6}/64, default via the director\n  \
         {p}-lb   lb0 {LB0_V4}/24 {LB0_V6}/64, lb1 {LB1_V4}/24 {LB1_V6}/64, NAT/FULLNAT VIPs on lo, ip_forward on for DR/TUN replies\n  \
         {p}-sw   bridge br0: sw-lb1 and the real servers\n"
    );
    for s in &lab.plan().servers {
        let _ = writeln!(
            out,
            "  {p}-{}  eth0 {}/24 {}/64, HTTP :{HTTP_PORT} and UDP echo :{UDP_PORT}",
            s.name, s.v4, s.v6
        );
    }
    out.push_str("services (tcp/80, udp/7):\n");
    for s in &lab.plan().services {
        let _ = writeln!(out, "  {:<14} {}", s.vip.to_string(), s.method.name());
    }
    let _ = write!(
        out,
        "try (with xvs running in {p}-lb):\n  xvs lab client --prefix {p} http 198.18.0.10:80 -n 10\n  \
         ip netns exec {p}-lb curl -s http://198.18.2.12/\n  xvs lab status --prefix {p}\n  xvs lab down --prefix {p}\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_plan_uses_only_benchmark_ranges() {
        let p = Plan::design();
        let ok = |a: IpAddr| match a {
            IpAddr::V4(a) => a.octets()[0] == 198 && (a.octets()[1] & 0xfe) == 18,
            IpAddr::V6(a) => a.segments()[..3] == [0x2001, 2, 0],
        };
        assert!(p.services.iter().all(|s| ok(s.vip)));
        assert!(p.laddrs.iter().all(|a| ok(*a)));
        assert!(p.servers.iter().all(|s| ok(s.v4.into()) && ok(s.v6.into())));
        assert_eq!(
            p.vips(Method::Tun),
            vec![
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 13)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x13))
            ]
        );
        assert_eq!(p.vips(Method::Dr).len(), 2);
        assert_eq!(p.servers[2].v4, Ipv4Addr::new(198, 18, 2, 13));
        assert_eq!(p.services.len(), 8, "each VIP once, for its TCP and UDP services");
        assert_eq!(p.laddrs.len(), 2);
        // Every real server of the configuration is one of the lab's.
        let cfg = crate::config::parse(crate::config::DEFAULT, "xvs.toml").unwrap();
        for rs in cfg.services.iter().flat_map(|s| &s.real_servers) {
            assert!(
                p.servers
                    .iter()
                    .any(|s| IpAddr::from(s.v4) == rs.addr || IpAddr::from(s.v6) == rs.addr),
                "{}",
                rs.addr
            );
        }
    }
}
