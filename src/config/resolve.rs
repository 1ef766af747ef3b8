//! From raw TOML to the validated model: every check, every default, every error with its line.

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

use super::raw::{RawConfig, RawTimeouts, RawVirtualServer, S};
use super::*;
use crate::conn::MAX_SHARD_CONNS;

/// Collects errors against one file.
pub(super) struct Errs<'t> {
    file: &'t str,
    text: &'t str,
    pub(super) list: Vec<ConfigError>,
}

impl Errs<'_> {
    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }
    pub(super) fn at(&mut self, span: Range<usize>, key: impl Into<String>, reason: impl Into<String>) {
        let line = Some(self.line(&span));
        self.list.push(ConfigError {
            file: self.file.into(),
            line,
            key: key.into(),
            reason: reason.into(),
        });
    }
    /// An integer within `lo..=hi`, or an error.
    pub(super) fn int<T: TryFrom<i64>>(&mut self, v: &S<i64>, key: &str, lo: i64, hi: i64) -> Option<T> {
        let n = *v.get_ref();
        if n < lo || n > hi {
            self.at(v.span(), key, format!("{n} is out of range {lo}..={hi}"));
            return None;
        }
        T::try_from(n).ok()
    }
    pub(super) fn ip(&mut self, v: &S<String>, key: &str) -> Option<IpAddr> {
        match v.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.at(v.span(), key, format!("'{}' is not an IP address", v.get_ref()));
                None
            }
        }
    }
    pub(super) fn parse<T: std::str::FromStr<Err = String>>(&mut self, v: &S<String>, key: &str) -> Option<T> {
        match v.get_ref().parse() {
            Ok(x) => Some(x),
            Err(e) => {
                self.at(v.span(), key, e);
                None
            }
        }
    }
}

pub fn resolve(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut e = Errs {
        file,
        text,
        list: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(err) => {
            let line = err.span().map(|s| e.line(&s));
            let reason = err.message().to_string();
            return Err(ConfigErrors(vec![ConfigError {
                file: file.into(),
                line,
                key: String::new(),
                reason,
            }]));
        }
    };
    let global = global(&mut e, &raw);
    let workers = match &global.workers {
        Workers::Count(n) => *n,
        Workers::Cores(c) => c.len(),
    };
    let conn = conn(&mut e, &raw, workers);
    let interfaces = interfaces(&mut e, &raw);
    let names: HashSet<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
    let check_ifc = |e: &mut Errs, v: &S<String>, key: String| {
        if !names.is_empty() && !names.contains(v.get_ref().as_str()) {
            e.at(
                v.span(),
                key,
                format!("interface '{}' is not declared in [[interface]]", v.get_ref()),
            );
        }
        v.get_ref().clone()
    };
    let mut routes = Vec::new();
    for (i, r) in raw.route.iter().enumerate() {
        let r = r.get_ref();
        let k = format!("route[{i}]");
        let prefix = e.parse::<Prefix>(&r.prefix, &format!("{k}.prefix"));
        let via = r.via.as_ref().and_then(|v| e.ip(v, &format!("{k}.via")));
        if let (Some(p), Some(v)) = (prefix, via)
            && p.addr.is_ipv4() != v.is_ipv4()
        {
            e.at(
                r.via.as_ref().map(|v| v.span()).unwrap_or_default(),
                format!("{k}.via"),
                "gateway family differs from the prefix's",
            );
        }
        let interface = check_ifc(&mut e, &r.interface, format!("{k}.interface"));
        if let Some(prefix) = prefix {
            routes.push(Route { prefix, via, interface });
        }
    }
    let mut neighbours = Vec::new();
    for (i, n) in raw.neighbour.iter().enumerate() {
        let n = n.get_ref();
        let k = format!("neighbour[{i}]");
        let addr = e.ip(&n.address, &format!("{k}.address"));
        let mac = e.parse::<Mac>(&n.mac, &format!("{k}.mac"));
        let interface = check_ifc(&mut e, &n.interface, format!("{k}.interface"));
        if let (Some(addr), Some(mac)) = (addr, mac) {
            neighbours.push(Neighbour { addr, mac, interface });
        }
    }
    let mut services = Vec::new();
    let mut seen = HashSet::new();
    for (i, vs) in raw.virtual_server.iter().enumerate() {
        if let Some(s) = service(&mut e, vs.get_ref(), i) {
            if !seen.insert((s.proto, s.vip, s.port)) {
                e.at(
                    vs.span(),
                    format!("virtual_server[{i}]"),
                    format!("duplicate virtual server {} {}:{}", s.proto.name(), s.vip, s.port),
                );
            }
            services.push(s);
        }
    }
    let vrrp = super::vrrp::resolve(&mut e, &raw.vrrp_instance, &raw.vrrp_sync_group, &raw.vrrp_script);
    if e.list.is_empty() {
        Ok(Config {
            global,
            interfaces,
            routes,
            neighbours,
            conn,
            services,
            vrrp,
        })
    } else {
        e.list.sort_by_key(|x| x.line);
        Err(ConfigErrors(e.list))
    }
}

fn global(e: &mut Errs, raw: &RawConfig) -> Global {
    let mut g = Global {
        workers: Workers::Count(1),
        io: IoMode::Auto,
        xdp_mode: XdpMode::Auto,
        batch_size: 64,
        admin_socket: DEFAULT_ADMIN_SOCKET.into(),
        metrics: None,
    };
    let Some(r) = &raw.global else { return g };
    if let Some(v) = &r.admin_socket {
        if v.get_ref().starts_with('/') {
            g.admin_socket = v.get_ref().into();
        } else {
            e.at(v.span(), "global.admin_socket", "must be an absolute path");
        }
    }
    if let Some(v) = &r.metrics {
        match v.get_ref().parse::<std::net::SocketAddr>() {
            Ok(a) => g.metrics = Some(a),
            Err(_) => e.at(
                v.span(),
                "global.metrics",
                format!("'{}' is not an address:port such as 127.0.0.1:9108", v.get_ref()),
            ),
        }
    }
    match (&r.workers, &r.cores) {
        (Some(w), Some(c)) => e.at(
            c.span(),
            "global.cores",
            format!("give either workers ({}) or cores, not both", w.get_ref()),
        ),
        (Some(w), None) => {
            if let Some(n) = e.int::<usize>(w, "global.workers", 1, 256) {
                g.workers = Workers::Count(n);
            }
        }
        (None, Some(c)) => {
            let cores: Vec<usize> = c.get_ref().iter().filter_map(|&n| usize::try_from(n).ok()).collect();
            let unique: HashSet<_> = cores.iter().collect();
            if cores.is_empty() || cores.len() != c.get_ref().len() || unique.len() != cores.len() {
                e.at(
                    c.span(),
                    "global.cores",
                    "want a non-empty list of distinct core numbers",
                );
            } else {
                g.workers = Workers::Cores(cores);
            }
        }
        (None, None) => {}
    }
    if let Some(v) = &r.io {
        match v.get_ref().as_str() {
            "auto" => g.io = IoMode::Auto,
            "af_xdp" => g.io = IoMode::AfXdp,
            "af_packet" => g.io = IoMode::AfPacket,
            o => e.at(
                v.span(),
                "global.io",
                format!("'{o}' is not one of auto, af_xdp, af_packet"),
            ),
        }
    }
    if let Some(v) = &r.xdp_mode {
        match v.get_ref().as_str() {
            "auto" => g.xdp_mode = XdpMode::Auto,
            "native" => g.xdp_mode = XdpMode::Native,
            "generic" => g.xdp_mode = XdpMode::Generic,
            o => e.at(
                v.span(),
                "global.xdp_mode",
                format!("'{o}' is not one of auto, native, generic"),
            ),
        }
    }
    if let Some(v) = &r.batch_size
        && let Some(n) = e.int::<usize>(v, "global.batch_size", 1, 1024)
    {
        g.batch_size = n;
    }
    g
}

fn conn(e: &mut Errs, raw: &RawConfig, workers: usize) -> ConnSettings {
    let r = raw.conn.as_ref();
    let max_conns = r
        .and_then(|r| r.max_conns.as_ref())
        .and_then(|v| e.int::<usize>(v, "conn.max_conns", 1, 1 << 32))
        .unwrap_or(1 << 20);
    // Several shards per worker keep lock contention low; each shard keeps room for at least 1024.
    let derived = (workers * 8)
        .next_power_of_two()
        .clamp(8, 256)
        .min((max_conns / 1024).max(1).next_power_of_two());
    let shards = match r.and_then(|r| r.shards.as_ref()) {
        Some(v) => match e.int::<usize>(v, "conn.shards", 1, 65536) {
            Some(n) if n.is_power_of_two() && max_conns.div_ceil(n) > MAX_SHARD_CONNS => {
                e.at(
                    v.span(),
                    "conn.shards",
                    format!(
                        "{n} shards of {max_conns} connections hold more than {MAX_SHARD_CONNS} each; use at least {}",
                        max_conns.div_ceil(MAX_SHARD_CONNS).next_power_of_two()
                    ),
                );
                derived
            }
            Some(n) if n.is_power_of_two() => n,
            Some(n) => {
                e.at(v.span(), "conn.shards", format!("{n} is not a power of two"));
                derived
            }
            None => derived,
        },
        None => derived,
    };
    let timeouts = r
        .and_then(|r| r.timeouts.as_ref())
        .map(|t| timeouts(e, t))
        .unwrap_or_default();
    ConnSettings {
        max_conns,
        shards,
        timeouts,
    }
}

fn timeouts(e: &mut Errs, t: &RawTimeouts) -> Timeouts {
    let mut out = Timeouts::default();
    let fields: [(&Option<S<i64>>, &str, &mut Duration); 11] = [
        (&t.tcp, "tcp", &mut out.tcp_established),
        (&t.tcpfin, "tcpfin", &mut out.tcp_fin_wait),
        (&t.udp, "udp", &mut out.udp),
        (&t.syn_sent, "syn_sent", &mut out.tcp_syn_sent),
        (&t.syn_recv, "syn_recv", &mut out.tcp_syn_recv),
        (&t.time_wait, "time_wait", &mut out.tcp_time_wait),
        (&t.close, "close", &mut out.tcp_close),
        (&t.close_wait, "close_wait", &mut out.tcp_close_wait),
        (&t.last_ack, "last_ack", &mut out.tcp_last_ack),
        (&t.listen, "listen", &mut out.tcp_listen),
        (&t.synack, "synack", &mut out.tcp_synack),
    ];
    for (v, name, slot) in fields {
        if let Some(v) = v
            && let Some(s) = e.int::<u64>(v, &format!("conn.timeouts.{name}"), 1, 30 * 24 * 3600)
        {
            *slot = Duration::from_secs(s);
        }
    }
    out
}

fn interfaces(e: &mut Errs, raw: &RawConfig) -> Vec<Interface> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, ifc) in raw.interface.iter().enumerate() {
        let r = ifc.get_ref();
        let k = format!("interface[{i}]");
        let name = r.name.get_ref().clone();
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            e.at(
                r.name.span(),
                format!("{k}.name"),
                format!("'{name}' is not a valid interface name"),
            );
        } else if !names.insert(name.clone()) {
            e.at(
                r.name.span(),
                format!("{k}.name"),
                format!("interface '{name}' is declared twice"),
            );
        }
        let mac = r.mac.as_ref().and_then(|m| e.parse::<Mac>(m, &format!("{k}.mac")));
        let addrs = r
            .address
            .iter()
            .enumerate()
            .filter_map(|(j, a)| e.parse::<Prefix>(a, &format!("{k}.address[{j}]")))
            .collect();
        let mtu = r
            .mtu
            .as_ref()
            .and_then(|m| e.int::<u16>(m, &format!("{k}.mtu"), 576, 65535));
        out.push(Interface { name, mac, addrs, mtu });
    }
    out
}

fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d: &u32| d * d <= n).all(|d| n % d != 0)
}

fn service(e: &mut Errs, r: &RawVirtualServer, i: usize) -> Option<VirtualServer> {
    let k = format!("virtual_server[{i}]");
    let before = e.list.len();
    let vip = e.ip(&r.vip, &format!("{k}.vip"));
    let port = e.int::<u16>(&r.port, &format!("{k}.port"), 1, 65535);
    let proto = match r.protocol.as_ref().map(|p| (p, p.get_ref().to_ascii_lowercase())) {
        None => Some(Proto::Tcp),
        Some((_, p)) if p == "tcp" => Some(Proto::Tcp),
        Some((_, p)) if p == "udp" => Some(Proto::Udp),
        Some((v, p)) => {
            e.at(v.span(), format!("{k}.protocol"), format!("'{p}' is not tcp or udp"));
            None
        }
    };
    let sched = match &r.lb_algo {
        None => Some(SchedKind::Wlc),
        Some(v) => e.parse::<SchedKind>(v, &format!("{k}.lb_algo")),
    };
    let method = match r.lb_kind.as_ref().map(|v| (v, v.get_ref().to_ascii_uppercase())) {
        None => Some(Method::Nat),
        Some((_, m)) if m == "NAT" => Some(Method::Nat),
        Some((_, m)) if m == "FULLNAT" || m == "FNAT" => Some(Method::FullNat),
        Some((_, m)) if m == "DR" => Some(Method::Dr),
        Some((_, m)) if m == "TUN" => Some(Method::Tun),
        Some((v, m)) => {
            e.at(
                v.span(),
                format!("{k}.lb_kind"),
                format!("'{m}' is not one of NAT, FULLNAT, DR, TUN"),
            );
            None
        }
    };
    let v4 = vip.map(|a| a.is_ipv4()).unwrap_or(true);

    let mut opts = SchedOpts::default();
    if let Some(flags) = &r.sched_flags {
        for f in flags.get_ref() {
            let ok = match (sched, f.as_str()) {
                (Some(SchedKind::Sh), "sh-port") | (Some(SchedKind::Mh), "mh-port") => {
                    opts.port = true;
                    true
                }
                (Some(SchedKind::Sh), "sh-fallback") | (Some(SchedKind::Mh), "mh-fallback") => {
                    opts.fallback = true;
                    true
                }
                _ => false,
            };
            if !ok {
                let name = sched.map(|s| s.name()).unwrap_or("?");
                e.at(flags.span(), format!("{k}.sched_flags"), format!("'{f}' does not apply to scheduler {name} (sh takes sh-port, sh-fallback; mh takes mh-port, mh-fallback)"));
            }
        }
    }
    if let Some(v) = &r.mh_table_size {
        if sched != Some(SchedKind::Mh) {
            e.at(
                v.span(),
                format!("{k}.mh_table_size"),
                "only the mh scheduler has a table",
            );
        } else if let Some(n) = e.int::<u32>(v, &format!("{k}.mh_table_size"), 2, 1 << 20) {
            if is_prime(n) {
                opts.mh_table_size = n;
            } else {
                e.at(
                    v.span(),
                    format!("{k}.mh_table_size"),
                    format!("{n} is not a prime (65537 and 4093 are)"),
                );
            }
        }
    }

    let max_prefix = if v4 { 32 } else { 128 };
    let prefix_len = match &r.persistence_granularity {
        None => max_prefix,
        Some(v) => {
            let key = format!("{k}.persistence_granularity");
            let parsed: Result<u8, String> = match v.get_ref() {
                toml::Value::Integer(n) => u8::try_from(*n).map_err(|_| format!("{n} is not a prefix length")),
                toml::Value::String(s) => match s.trim_start_matches('/').parse::<u8>() {
                    Ok(n) => Ok(n),
                    Err(_) => match s.parse::<std::net::Ipv4Addr>() {
                        Ok(m) if v4 => {
                            let bits = u32::from(m);
                            if bits.leading_ones() + bits.trailing_zeros() == 32 {
                                Ok(bits.leading_ones() as u8)
                            } else {
                                Err(format!("netmask {s} is not contiguous"))
                            }
                        }
                        _ => Err(format!("'{s}' is not a netmask or prefix length")),
                    },
                },
                other => Err(format!("{other} is not a netmask or prefix length")),
            };
            match parsed {
                Ok(n) if n <= max_prefix => n,
                Ok(n) => {
                    e.at(v.span(), key, format!("prefix length {n} is longer than {max_prefix}"));
                    max_prefix
                }
                Err(reason) => {
                    e.at(v.span(), key, reason);
                    max_prefix
                }
            }
        }
    };
    let persistence = match &r.persistence_timeout {
        Some(v) => e
            .int::<u64>(v, &format!("{k}.persistence_timeout"), 0, 30 * 24 * 3600)
            .filter(|&s| s > 0)
            .map(|s| Persistence {
                timeout: Duration::from_secs(s),
                prefix_len,
            }),
        None => None,
    };

    let mut laddrs = Vec::new();
    match (&r.laddr, method) {
        (Some(l), Some(Method::FullNat)) => {
            for (j, a) in l.get_ref().iter().enumerate() {
                match a.parse::<IpAddr>() {
                    Ok(a) if a.is_ipv4() == v4 => laddrs.push(a),
                    Ok(a) => e.at(
                        l.span(),
                        format!("{k}.laddr[{j}]"),
                        format!("{a} is not of the VIP's address family"),
                    ),
                    Err(_) => e.at(
                        l.span(),
                        format!("{k}.laddr[{j}]"),
                        format!("'{a}' is not an IP address"),
                    ),
                }
            }
            if l.get_ref().is_empty() {
                e.at(
                    l.span(),
                    format!("{k}.laddr"),
                    "FULLNAT needs at least one local address",
                );
            }
        }
        (Some(l), Some(_)) => e.at(
            l.span(),
            format!("{k}.laddr"),
            "local addresses apply to lb_kind FULLNAT only",
        ),
        (None, Some(Method::FullNat)) => e.at(
            r.vip.span(),
            format!("{k}.laddr"),
            "FULLNAT needs local addresses (laddr = [...])",
        ),
        _ => {}
    }

    let inherited = super::check::inherited(e, r, &k);
    let health = super::check::service_health(e, r, &k, vip, port, method);
    let mut real_servers = Vec::new();
    let mut seen = HashSet::new();
    for (j, rs) in r.real_server.iter().enumerate() {
        let rk = format!("{k}.real_server[{j}]");
        let rs = rs.get_ref();
        let addr = e.ip(&rs.address, &format!("{rk}.address"));
        let rport = match &rs.port {
            Some(p) => e.int::<u16>(p, &format!("{rk}.port"), 1, 65535),
            None => port,
        };
        let weight = match &rs.weight {
            Some(w) => e.int::<u32>(w, &format!("{rk}.weight"), 0, 65535),
            None => Some(1),
        };
        if let Some(a) = addr
            && a.is_ipv4() != v4
        {
            e.at(
                rs.address.span(),
                format!("{rk}.address"),
                format!("{a} is not of the VIP's address family"),
            );
        }
        if let (Some(Method::Dr | Method::Tun), Some(rp), Some(vp)) = (method, rport, port)
            && rp != vp
        {
            let span = rs.port.as_ref().map(|p| p.span()).unwrap_or(rs.address.span());
            e.at(
                span,
                format!("{rk}.port"),
                format!("DR and TUN cannot change the port: {rp} differs from the virtual server's {vp}"),
            );
        }
        let (checks, notify_up, notify_down) = super::check::server_checks(e, rs, &rk, addr, rport, &inherited);
        let inhibit_on_failure = rs.inhibit_on_failure.as_ref().is_some_and(|v| *v.get_ref());
        if let (Some(addr), Some(rport), Some(weight)) = (addr, rport, weight) {
            if !seen.insert((addr, rport)) {
                e.at(
                    rs.address.span(),
                    format!("{rk}.address"),
                    format!("real server {addr}:{rport} is listed twice"),
                );
            }
            real_servers.push(RealServer {
                addr,
                port: rport,
                weight,
                inhibit_on_failure,
                notify_up,
                notify_down,
                checks,
            });
        }
    }
    let expire_nodest_conn = r.expire_nodest_conn.as_ref().map(|v| *v.get_ref()).unwrap_or(false);
    if e.list.len() != before {
        return None;
    }
    let (vip, port, proto, sched, method) = (vip?, port?, proto?, sched?, method?);
    let name = r
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| match vip {
            IpAddr::V4(a) => format!("{} {a}:{port}", proto.name()),
            IpAddr::V6(a) => format!("{} [{a}]:{port}", proto.name()),
        });
    Some(VirtualServer {
        name,
        vip,
        port,
        proto,
        sched,
        sched_opts: opts,
        method,
        persistence,
        laddrs,
        expire_nodest_conn,
        real_servers,
        health,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<ConfigError> {
        parse(text, "t.toml").expect_err("should be refused").0
    }

    #[test]
    fn default_config_is_valid() {
        let c = parse(DEFAULT, "xvs.toml").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.services.len() >= 7);
        for m in [Method::Nat, Method::FullNat, Method::Dr, Method::Tun] {
            assert!(c.services.iter().any(|s| s.method == m), "{m:?}");
        }
    }

    #[test]
    fn minimal_service_gets_keepalived_defaults() {
        let c = parse(
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nreal_server = [{ address = \"198.18.2.11\" }]\n",
            "t",
        )
        .unwrap();
        let s = &c.services[0];
        assert_eq!((s.proto, s.sched, s.method), (Proto::Tcp, SchedKind::Wlc, Method::Nat));
        assert_eq!(
            s.real_servers,
            vec![RealServer {
                addr: "198.18.2.11".parse().unwrap(),
                port: 80,
                weight: 1,
                inhibit_on_failure: false,
                notify_up: None,
                notify_down: None,
                checks: vec![],
            }]
        );
        assert_eq!(s.health, ServiceHealth::default());
        assert_eq!(s.name, "tcp 198.18.0.10:80");
        assert_eq!(c.conn.max_conns, 1 << 20);
        assert!(c.conn.shards.is_power_of_two());
    }

    /// (config text, key, fragment of the reason, line)
    const BAD: &[(&str, &str, &str, usize)] = &[
        ("[global]\nworkers = 0\n", "global.workers", "out of range", 2),
        ("[global]\nworkers = 2\ncores = [1, 2]\n", "global.cores", "not both", 3),
        ("[global]\nio = \"dpdk\"\n", "global.io", "not one of", 2),
        ("[global]\nbatch_size = 4096\n", "global.batch_size", "out of range", 2),
        ("[conn]\nshards = 6\n", "conn.shards", "power of two", 2),
        (
            "[conn]\nmax_conns = 4294967296\nshards = 2\n",
            "conn.shards",
            "use at least 4",
            3,
        ),
        ("[conn]\nmax_conns = 0\n", "conn.max_conns", "out of range", 2),
        ("[conn.timeouts]\ntcp = 0\n", "conn.timeouts.tcp", "out of range", 2),
        (
            "[[interface]]\nname = \"lb0\"\nmac = \"02:00\"\n",
            "interface[0].mac",
            "not a MAC",
            3,
        ),
        (
            "[[interface]]\nname = \"lb0\"\naddress = [\"198.18.1.1/40\"]\n",
            "interface[0].address[0]",
            "prefix length",
            3,
        ),
        (
            "[[interface]]\nname = \"lb0\"\n[[interface]]\nname = \"lb0\"\n",
            "interface[1].name",
            "declared twice",
            4,
        ),
        (
            "[[interface]]\nname = \"lb0\"\n[[neighbour]]\naddress = \"198.18.2.11\"\nmac = \"02:00:00:00:02:11\"\ninterface = \"eth9\"\n",
            "neighbour[0].interface",
            "not declared",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.300\"\nport = 80\n",
            "virtual_server[0].vip",
            "not an IP address",
            2,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 0\n",
            "virtual_server[0].port",
            "out of range",
            3,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nprotocol = \"sctp\"\n",
            "virtual_server[0].protocol",
            "not tcp or udp",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nlb_algo = \"random\"\n",
            "virtual_server[0].lb_algo",
            "unknown scheduler",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nlb_kind = \"MAGIC\"\n",
            "virtual_server[0].lb_kind",
            "not one of",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.11\"\nport = 80\nlb_kind = \"FULLNAT\"\n",
            "virtual_server[0].laddr",
            "FULLNAT needs",
            2,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nladdr = [\"198.18.3.1\"]\n",
            "virtual_server[0].laddr",
            "FULLNAT only",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.11\"\nport = 80\nlb_kind = \"FULLNAT\"\nladdr = [\"2001:2:0:3::1\"]\n",
            "virtual_server[0].laddr[0]",
            "family",
            5,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.12\"\nport = 80\nlb_kind = \"DR\"\nreal_server = [{ address = \"198.18.2.11\", port = 8080 }]\n",
            "virtual_server[0].real_server[0].port",
            "cannot change the port",
            5,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nreal_server = [{ address = \"2001:2::1\" }]\n",
            "virtual_server[0].real_server[0].address",
            "family",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nreal_server = [{ address = \"198.18.2.11\", weight = 70000 }]\n",
            "virtual_server[0].real_server[0].weight",
            "out of range",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nreal_server = [{ address = \"198.18.2.11\" }, { address = \"198.18.2.11\" }]\n",
            "virtual_server[0].real_server[1].address",
            "listed twice",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nlb_algo = \"mh\"\nmh_table_size = 65536\n",
            "virtual_server[0].mh_table_size",
            "not a prime",
            5,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nlb_algo = \"rr\"\nsched_flags = [\"sh-port\"]\n",
            "virtual_server[0].sched_flags",
            "does not apply",
            5,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\npersistence_timeout = 60\npersistence_granularity = \"255.0.255.0\"\n",
            "virtual_server[0].persistence_granularity",
            "not contiguous",
            5,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n",
            "virtual_server[1]",
            "duplicate virtual server",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nTCP_CHECK = { url = [{ path = \"/\" }] }\n",
            "virtual_server[0].real_server[0].TCP_CHECK.url",
            "TCP_CHECK has no option url",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nHTTP_GET = { connect_timeout = 3 }\n",
            "virtual_server[0].real_server[0].HTTP_GET.url",
            "needs at least one url",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nHTTP_GET = { url = [{ path = \"index.html\" }] }\n",
            "virtual_server[0].real_server[0].HTTP_GET.url[0].path",
            "absolute path",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nHTTP_GET = { url = [{ path = \"/\", status_code = 700 }] }\n",
            "virtual_server[0].real_server[0].HTTP_GET.url[0].status_code",
            "not a status code",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nHTTP_GET = { url = [{ path = \"/\", digest = \"abc\" }] }\n",
            "virtual_server[0].real_server[0].HTTP_GET.url[0].digest",
            "MD5 digest",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nHTTP_GET = { url = [{ path = \"/\" }], http_protocol = \"2\" }\n",
            "virtual_server[0].real_server[0].HTTP_GET.http_protocol",
            "not 1.0",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nHTTP_GET = { url = [{ path = \"/\" }], verify_cert = true }\n",
            "virtual_server[0].real_server[0].HTTP_GET.verify_cert",
            "HTTP_GET has no option verify_cert",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nSSL_GET = { url = [{ path = \"/\" }], ca_file = \"/x.pem\" }\n",
            "virtual_server[0].real_server[0].SSL_GET.ca_file",
            "only with verify_cert",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nTCP_CHECK = { connect_timeout = 0 }\n",
            "virtual_server[0].real_server[0].TCP_CHECK.connect_timeout",
            "out of range",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nTCP_CHECK = { connect_timeout = \"3s\" }\n",
            "virtual_server[0].real_server[0].TCP_CHECK.connect_timeout",
            "not a number of seconds",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nTCP_CHECK = { retry = 2, fall = 3 }\n",
            "virtual_server[0].real_server[0].TCP_CHECK.fall",
            "not both",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nTCP_CHECK = { retry = 2, nb_get_retry = 3 }\n",
            "virtual_server[0].real_server[0].TCP_CHECK.retry",
            "not both",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nTCP_CHECK = { rise = 0 }\n",
            "virtual_server[0].real_server[0].TCP_CHECK.rise",
            "out of range",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nTCP_CHECK = { bindto = \"2001:2::1\" }\n",
            "virtual_server[0].real_server[0].TCP_CHECK.bindto",
            "not of the family",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nTCP_CHECK = { misc_path = \"true\" }\n",
            "virtual_server[0].real_server[0].TCP_CHECK.misc_path",
            "has no option misc_path",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nTCP_CHECK = { connect_time = 3 }\n",
            "",
            "unknown field `connect_time`",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nMISC_CHECK = { misc_timeout = 3 }\n",
            "virtual_server[0].real_server[0].MISC_CHECK.misc_path",
            "needs misc_path",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nMISC_CHECK = { misc_path = \"true\", connect_port = 80 }\n",
            "virtual_server[0].real_server[0].MISC_CHECK.connect_port",
            "MISC_CHECK has no option connect_port",
            6,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\ndelay_loop = -1\n",
            "virtual_server[0].delay_loop",
            "out of range",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nquorum = 2\nhysteresis = 2\n",
            "virtual_server[0].hysteresis",
            "smaller than the quorum",
            5,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nsorry_server = { address = \"2001:2::9\" }\n",
            "virtual_server[0].sorry_server.address",
            "address family",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nlb_kind = \"DR\"\nsorry_server = { address = \"198.18.2.9\", port = 8080 }\n",
            "virtual_server[0].sorry_server.port",
            "cannot change the port",
            5,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\nsorry_server_inhibit = true\n",
            "virtual_server[0].sorry_server_inhibit",
            "no sorry_server",
            4,
        ),
        (
            "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\n[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\nnotify_up = \" \"\n",
            "virtual_server[0].real_server[0].notify_up",
            "empty command",
            6,
        ),
    ];

    #[test]
    fn every_bad_config_names_its_key_reason_and_line() {
        for (text, key, reason, line) in BAD {
            let e = errs(text);
            assert!(
                e.iter()
                    .any(|x| x.key == *key && x.reason.contains(reason) && x.line == Some(*line)),
                "for {text:?} wanted {key} / {reason} / line {line}, got {e:#?}"
            );
        }
    }

    #[test]
    fn syntax_errors_and_unknown_keys_have_lines() {
        let e = errs("[global]\nworkers = 1\nweird_key = 3\n");
        assert_eq!(e[0].line, Some(3));
        assert!(e[0].reason.contains("unknown field"), "{}", e[0].reason);
        let e = errs("[[virtual_server]]\nvip = \"198.18.0.10\"\nport = = 80\n");
        assert_eq!(e[0].line, Some(3));
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let e = errs("[global]\nworkers = 0\n[[virtual_server]]\nvip = \"x\"\nport = 99999\n");
        assert_eq!(e.len(), 3, "{e:#?}");
        assert_eq!(e[0].to_string(), "t.toml:2: global.workers: 0 is out of range 1..=256");
    }

    #[test]
    fn persistence_granularity_forms() {
        let base = "[[virtual_server]]\nvip = \"198.18.0.10\"\nport = 80\npersistence_timeout = 300\n";
        for (g, want) in [("\"255.255.255.0\"", 24), ("16", 16), ("\"/20\"", 20)] {
            let c = parse(&format!("{base}persistence_granularity = {g}\n"), "t").unwrap();
            assert_eq!(
                c.services[0].persistence,
                Some(Persistence {
                    timeout: Duration::from_secs(300),
                    prefix_len: want
                })
            );
        }
    }

    #[test]
    fn display_is_ipvsadm_like() {
        let c = parse(
            "[[virtual_server]]\nvip = \"198.18.0.12\"\nport = 80\nlb_algo = \"rr\"\nlb_kind = \"DR\"\nreal_server = [{ address = \"198.18.2.11\", weight = 2 }]\n",
            "t",
        )
        .unwrap();
        let s = c.to_string();
        assert!(s.contains("TCP 198.18.0.12:80 rr   (tcp 198.18.0.12:80)"), "{s}");
        assert!(s.contains("  -> 198.18.2.11:80               Route   2"), "{s}");
    }
}
