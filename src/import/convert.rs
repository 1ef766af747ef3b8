//! keepalived.conf tree to xvs TOML. Each keepalived block becomes the xvs table of the same name
//! (see README "Configuration", "Health checks" and "VRRP"); every keyword is either written out,
//! folded into another (a real server's `connect_timeout` into its checkers), or reported with a
//! [`Warning`]. The TOML is written as text so that it can carry comments where the operator has
//! something to check.

use std::collections::{HashMap, HashSet};

use super::parse::Node;
use super::{Loc, Warning};

/// keepalived's `lb_algo` names that xvs schedules (`types::SchedKind`).
const SCHEDULERS: [&str; 10] = ["rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh", "fo"];

/// A TOML basic string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A number as TOML: an integer when it is one, so that integer-only keys accept it.
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// `key = value` lines of one table, in the order written, a later value replacing an earlier.
#[derive(Default, Clone)]
struct Table {
    keys: Vec<(String, String)>,
}

impl Table {
    fn set(&mut self, k: &str, v: String) {
        match self.keys.iter_mut().find(|(x, _)| x == k) {
            Some(slot) => slot.1 = v,
            None => self.keys.push((k.to_string(), v)),
        }
    }
    /// Sets `k` only when the table does not have it: inherited defaults.
    fn inherit(&mut self, k: &str, v: &str) {
        if !self.has(k) {
            self.keys.push((k.to_string(), v.to_string()));
        }
    }
    fn has(&self, k: &str) -> bool {
        self.keys.iter().any(|(x, _)| x == k)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.keys.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
    }
    fn write(&self, out: &mut String, indent: &str) {
        for (k, v) in &self.keys {
            out.push_str(&format!("{indent}{k} = {v}\n"));
        }
    }
}

/// What the whole conversion collects besides the text.
struct Cx<'w> {
    w: &'w mut Vec<Warning>,
    /// `vrrp_version` from global_defs.
    vrrp_version: Option<i64>,
    /// `vrrp_garp_*` from global_defs: defaults for every instance.
    garp: Table,
    /// Interfaces the configuration names, with where each was first seen.
    interfaces: Vec<(String, Loc)>,
    /// DPVS keepalived's `local_address_group`s, for FULLNAT's `laddr`.
    laddr_groups: HashMap<String, Vec<String>>,
}

impl Cx<'_> {
    fn warn(&mut self, n: &Node, msg: impl Into<String>) {
        self.w.push(Warning::new(n.loc, n.keyword.clone(), msg));
    }

    fn not_carried(&mut self, n: &Node, why: &str) {
        self.warn(n, format!("not carried over: {why}"));
    }

    /// A keyword nobody told us about: keepalived has hundreds, xvs a known few.
    fn unknown(&mut self, n: &Node, ctx: &str) {
        self.warn(n, format!("not carried over: no xvs counterpart in {ctx} (ignored)"));
    }

    fn no_block(&mut self, n: &Node) {
        if n.block.is_some() {
            self.warn(n, "unexpected block after this keyword; its contents are ignored");
        }
    }

    /// The one word after the keyword.
    fn arg<'n>(&mut self, n: &'n Node) -> Option<&'n str> {
        self.no_block(n);
        match n.args.as_slice() {
            [a] => Some(a),
            [] => {
                self.warn(n, "needs a value; ignored");
                None
            }
            [a, rest @ ..] => {
                self.warn(n, format!("extra words after '{a}' ignored: {}", rest.join(" ")));
                Some(a)
            }
        }
    }

    /// A command line: keepalived takes the rest of the line, quoted or not.
    fn command(&mut self, n: &Node) -> Option<String> {
        self.no_block(n);
        let s = n.args.join(" ");
        if s.trim().is_empty() {
            self.warn(n, "needs a command; ignored");
            return None;
        }
        Some(s)
    }

    fn int(&mut self, n: &Node, lo: i64, hi: i64) -> Option<String> {
        let a = self.arg(n)?;
        match a.parse::<i64>() {
            Ok(v) if (lo..=hi).contains(&v) => Some(v.to_string()),
            _ => {
                self.warn(n, format!("'{a}' is not an integer in {lo}..={hi}; ignored"));
                None
            }
        }
    }

    fn secs(&mut self, n: &Node) -> Option<String> {
        let a = self.arg(n)?;
        match a.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Some(num(v)),
            _ => {
                self.warn(n, format!("'{a}' is not a number of seconds; ignored"));
                None
            }
        }
    }

    /// A flag: present alone means on; keepalived also takes on/off, true/false, yes/no.
    fn flag(&mut self, n: &Node) -> Option<bool> {
        self.no_block(n);
        match n.args.first().map(|s| s.to_ascii_lowercase()).as_deref() {
            None | Some("on" | "true" | "yes" | "1") => Some(true),
            Some("off" | "false" | "no" | "0") => Some(false),
            Some(o) => {
                self.warn(n, format!("'{o}' is not on or off; ignored"));
                None
            }
        }
    }

    fn interface(&mut self, name: &str, loc: Loc) {
        if !self.interfaces.iter().any(|(n, _)| n == name) {
            self.interfaces.push((name.to_string(), loc));
        }
    }
}

fn children(n: &Node) -> &[Node] {
    n.block.as_deref().unwrap_or(&[])
}

/// Converts the tree; `name` is the file converted, for the header.
pub fn convert(nodes: &[Node], name: &str, warns: &mut Vec<Warning>) -> String {
    let mut cx = Cx {
        w: warns,
        vrrp_version: None,
        garp: Table::default(),
        interfaces: Vec::new(),
        laddr_groups: HashMap::new(),
    };
    let mut header = vec![format!("# Converted from {name} by `xvs import-keepalived`.")];
    let mut timeouts = Table::default();
    // global_defs and address groups first: they are defaults for what follows, wherever they sit.
    for n in nodes {
        match n.keyword.as_str() {
            "global_defs" => global_defs(&mut cx, n, &mut header, &mut timeouts),
            "local_address_group" => local_address_group(&mut cx, n),
            _ => {}
        }
    }
    let mut scripts = String::new();
    let mut instances = String::new();
    let mut groups: Vec<(&Node, Table)> = Vec::new();
    let mut services = String::new();
    let mut emitted_instances = HashSet::new();
    for n in nodes {
        match n.keyword.as_str() {
            "global_defs" | "local_address_group" => {}
            "vrrp_script" => {
                if let Some(t) = vrrp_script(&mut cx, n) {
                    scripts.push_str("\n[[vrrp_script]]\n");
                    t.write(&mut scripts, "");
                }
            }
            "vrrp_instance" => {
                if let Some((name, t)) = vrrp_instance(&mut cx, n) {
                    emitted_instances.insert(name);
                    instances.push_str("\n[[vrrp_instance]]\n");
                    t.write(&mut instances, "");
                }
            }
            "vrrp_sync_group" => {
                if let Some(t) = sync_group(&mut cx, n) {
                    groups.push((n, t));
                }
            }
            "virtual_server" => virtual_server(&mut cx, n, &mut services),
            "virtual_server_group" => cx.not_carried(
                n,
                "xvs has no virtual server groups: write one [[virtual_server]] per address and port",
            ),
            "static_ipaddress" | "static_routes" | "static_rules" => cx.not_carried(
                n,
                "xvs does not manage static addresses, routes or rules: configure them in the system",
            ),
            "vrrp_track_process" | "vrrp_track_file" | "track_file" | "vrrp_track_bfd" => {
                cx.not_carried(n, "xvs tracks interfaces and scripts only (a vrrp_script can do this)")
            }
            "bfd_instance" => cx.not_carried(n, "xvs has no BFD"),
            "SSL" => cx.not_carried(
                n,
                "SSL_GET client certificates are not supported (xvs checks need none; see verify_cert and ca_file)",
            ),
            "net_namespace" | "instance" | "use_pid_dir" | "linkbeat_use_polling" | "child_wait_time" => {
                cx.not_carried(n, "keepalived process option with no xvs counterpart")
            }
            _ => cx.unknown(n, "the top level"),
        }
    }

    // Sync groups last: their members must have been converted.
    let mut group_text = String::new();
    for (n, mut t) in groups {
        let members: Vec<String> = t
            .get("group")
            .map(|g| g.split('\u{0}').map(String::from).collect())
            .unwrap_or_default();
        let mut kept = Vec::new();
        for m in members {
            if emitted_instances.contains(&m) {
                kept.push(q(&m));
            } else {
                cx.warn(
                    n,
                    format!("member '{m}' is not a converted vrrp_instance; left out of the group"),
                );
            }
        }
        if kept.is_empty() {
            cx.warn(n, "no member left; sync group not carried over");
            continue;
        }
        t.set("group", format!("[{}]", kept.join(", ")));
        group_text.push_str("\n[[vrrp_sync_group]]\n");
        t.write(&mut group_text, "");
    }

    let mut out = String::new();
    for h in &header {
        out.push_str(h);
        out.push('\n');
    }
    out.push_str("# Read the warnings printed with it: each names a keepalived option that was not carried over.\n");
    if !timeouts.keys.is_empty() {
        out.push_str("\n[conn.timeouts]   # keepalived's lvs_timeouts\n");
        timeouts.write(&mut out, "");
    }
    interfaces(&mut cx, nodes, &mut out);
    out.push_str(&scripts);
    out.push_str(&instances);
    out.push_str(&group_text);
    out.push_str(&services);
    out
}

/// `[[interface]]` tables for the interfaces VRRP names: keepalived has no interface list.
fn interfaces(cx: &mut Cx, nodes: &[Node], out: &mut String) {
    if cx.interfaces.is_empty() {
        if let Some(vs) = nodes.iter().find(|n| n.keyword == "virtual_server") {
            cx.w.push(Warning::new(
                vs.loc,
                "interface",
                "keepalived.conf names no interface: add [[interface]] tables for the director's interfaces (client and real-server sides)",
            ));
        }
        return;
    }
    out.push_str(
        "\n# keepalived.conf has no interface list: these are the interfaces its VRRP instances and\n\
         # virtual addresses name. Check them, list the director's own addresses if they are to be\n\
         # fixed here (otherwise they are read from the system at run time), and add the interface\n\
         # that faces the real servers if it is another one.\n",
    );
    let ifs = std::mem::take(&mut cx.interfaces);
    for (name, loc) in &ifs {
        out.push_str(&format!("[[interface]]\nname = {}\n", q(name)));
        cx.w.push(Warning::new(
            *loc,
            "interface",
            format!(
                "[[interface]] '{name}' made from this mention: check it, its addresses and the server-side interface"
            ),
        ));
    }
}

fn global_defs(cx: &mut Cx, g: &Node, header: &mut Vec<String>, timeouts: &mut Table) {
    for n in children(g) {
        match n.keyword.as_str() {
            "router_id" => {
                if let Some(id) = cx.arg(n) {
                    header.push(format!("# keepalived router_id: {id}"));
                }
                cx.not_carried(n, "xvs has no router_id (kept as a comment)");
            }
            "vrrp_version" => {
                if let Some(v) = cx.int(n, 2, 3) {
                    cx.vrrp_version = v.parse().ok();
                }
            }
            "vrrp_garp_master_delay"
            | "vrrp_garp_master_repeat"
            | "vrrp_garp_master_refresh"
            | "vrrp_garp_master_refresh_repeat" => {
                if let Some(v) = cx.int(n, 0, 86400) {
                    cx.garp.set(&n.keyword["vrrp_".len()..], v);
                }
            }
            "lvs_timeouts" => lvs_timeouts(cx, n, timeouts),
            "notification_email"
            | "notification_email_from"
            | "smtp_server"
            | "smtp_connect_timeout"
            | "smtp_helo_name"
            | "email_faults" => {
                cx.not_carried(n, "xvs sends no e-mail: use notify scripts");
            }
            "vrrp_strict" => cx.not_carried(
                n,
                "xvs has no strict mode; it always refuses what it cannot do and never adds iptables rules",
            ),
            "enable_script_security" | "script_user" => {
                cx.no_block(n);
                cx.not_carried(
                    n,
                    "xvs runs scripts as its own user: check their ownership and permissions",
                );
            }
            "lvs_sync_daemon" | "lvs_sync_daemon_interface" => {
                cx.no_block(n);
                cx.not_carried(
                    n,
                    "connection synchronisation between directors is not implemented: connections open on a failed master are lost",
                )
            }
            "vrrp_mcast_group4" | "vrrp_mcast_group6" => {
                cx.no_block(n);
                cx.not_carried(n, "xvs uses the standard groups 224.0.0.18 and ff02::12")
            }
            "vrrp_iptables" | "vrrp_ipsets" | "vrrp_nftables" => {
                cx.no_block(n);
                cx.not_carried(n, "xvs adds no firewall rules")
            }
            _ => {
                cx.no_block(n);
                cx.unknown(n, "global_defs")
            }
        }
    }
}

/// `lvs_timeouts tcp N tcpfin N udp N`.
fn lvs_timeouts(cx: &mut Cx, n: &Node, t: &mut Table) {
    cx.no_block(n);
    let mut it = n.args.chunks(2);
    for pair in &mut it {
        match pair {
            [k, v] if matches!(k.as_str(), "tcp" | "tcpfin" | "udp") => match v.parse::<u32>() {
                Ok(s) if s > 0 => t.set(k, s.to_string()),
                _ => cx.warn(n, format!("{k} '{v}' is not a number of seconds; ignored")),
            },
            _ => cx.warn(
                n,
                format!("'{}' is not tcp, tcpfin or udp with seconds; ignored", pair.join(" ")),
            ),
        }
    }
}

/// DPVS keepalived's `local_address_group NAME { ADDR [DEV] ... }`, FULLNAT's local addresses.
fn local_address_group(cx: &mut Cx, n: &Node) {
    let Some(name) = n.args.first().cloned() else {
        cx.warn(n, "needs a name; ignored");
        return;
    };
    let mut addrs = Vec::new();
    for a in children(n) {
        if a.args.len() > 1 || a.block.is_some() {
            cx.warn(a, "only the address is carried over (xvs picks the interface by route)");
        }
        addrs.push(a.keyword.clone());
    }
    cx.laddr_groups.insert(name, addrs);
}

fn vrrp_script(cx: &mut Cx, s: &Node) -> Option<Table> {
    let name = s.args.first().cloned();
    let Some(name) = name else {
        cx.warn(s, "needs a name; script not carried over");
        return None;
    };
    let mut t = Table::default();
    t.set("name", q(&name));
    for n in children(s) {
        match n.keyword.as_str() {
            "script" => {
                if let Some(c) = cx.command(n) {
                    t.set("script", q(&c));
                }
            }
            "interval" | "timeout" => {
                if let Some(v) = cx.secs(n) {
                    t.set(&n.keyword, v);
                }
            }
            "weight" => {
                let w = n.args.first().and_then(|a| a.parse::<i64>().ok());
                match (w, n.args.get(1).map(String::as_str)) {
                    (Some(w), None) => t.set("weight", w.to_string()),
                    (Some(w), Some("reverse")) => {
                        t.set("weight", w.to_string());
                        cx.warn(n, "'reverse' is not supported: the weight applies as without it");
                    }
                    _ => cx.warn(n, format!("'{}' is not an integer weight; ignored", n.args.join(" "))),
                }
            }
            "rise" | "fall" => {
                if let Some(v) = cx.int(n, 1, 1000) {
                    t.set(&n.keyword, v);
                }
            }
            "user" => cx.not_carried(n, "xvs runs scripts as its own user"),
            "init_fail" => cx.not_carried(n, "xvs starts every script as succeeding until it runs"),
            _ => cx.unknown(n, "vrrp_script"),
        }
    }
    if !t.has("script") {
        cx.warn(s, format!("vrrp_script '{name}' has no script; not carried over"));
        return None;
    }
    Some(t)
}

fn track_list(cx: &mut Cx, n: &Node, what: &str) -> Option<String> {
    let mut items = Vec::new();
    if n.block.is_none() {
        cx.warn(n, format!("want a block of {what} names; ignored"));
        return None;
    }
    for m in children(n) {
        match m.args.as_slice() {
            [] => items.push(q(&m.keyword)),
            [w, v] if w == "weight" && v.parse::<i64>().is_ok() => {
                items.push(format!("{{ name = {}, weight = {} }}", q(&m.keyword), v))
            }
            [w, v, r] if w == "weight" && r == "reverse" && v.parse::<i64>().is_ok() => {
                cx.warn(m, "'reverse' is not supported: the weight applies as without it");
                items.push(format!("{{ name = {}, weight = {} }}", q(&m.keyword), v))
            }
            other => {
                cx.warn(
                    m,
                    format!("'{}' not understood; tracked without a weight", other.join(" ")),
                );
                items.push(q(&m.keyword));
            }
        }
        if m.block.is_some() {
            cx.warn(m, "unexpected block; ignored");
        }
    }
    Some(format!("[{}]", items.join(", ")))
}

fn vrrp_instance(cx: &mut Cx, inst: &Node) -> Option<(String, Table)> {
    let Some(name) = inst.args.first().cloned() else {
        cx.warn(inst, "needs a name; instance not carried over");
        return None;
    };
    let mut t = Table::default();
    t.set("name", q(&name));
    let mut vips: Vec<(String, Loc)> = Vec::new();
    let mut ifc: Option<String> = None;
    let mut vip_devs: Vec<(String, Loc)> = Vec::new();
    let mut mcast_src: Option<String> = None;
    for n in children(inst) {
        match n.keyword.as_str() {
            "state" => {
                if let Some(s) = cx.arg(n) {
                    let s = s.to_ascii_uppercase();
                    if s == "MASTER" || s == "BACKUP" {
                        t.set("state", q(&s));
                    } else {
                        cx.warn(n, format!("'{s}' is not MASTER or BACKUP; BACKUP assumed"));
                    }
                }
            }
            "interface" => {
                if let Some(i) = cx.arg(n) {
                    ifc = Some(i.to_string());
                    cx.interface(i, n.loc);
                    t.set("interface", q(i));
                }
            }
            "virtual_router_id" => {
                if let Some(v) = cx.int(n, 1, 255) {
                    t.set("virtual_router_id", v);
                }
            }
            "priority" => {
                if let Some(v) = cx.int(n, 1, 255) {
                    t.set("priority", v);
                }
            }
            "advert_int" => {
                if let Some(v) = cx.secs(n) {
                    t.set("advert_int", v);
                }
            }
            "version" => {
                if let Some(v) = cx.int(n, 2, 3) {
                    t.set("version", v);
                }
            }
            "virtual_ipaddress" => {
                for a in children(n) {
                    vips.push((a.keyword.clone(), a.loc));
                    let mut words = a.args.iter();
                    while let Some(w) = words.next() {
                        match w.as_str() {
                            "dev" => {
                                if let Some(d) = words.next() {
                                    vip_devs.push((d.clone(), a.loc));
                                }
                            }
                            "label" | "brd" | "broadcast" | "scope" | "preferred_lft" => {
                                let v = words.next().map(String::as_str).unwrap_or("");
                                cx.warn(a, format!("'{w} {v}' not carried over: xvs adds the address with the defaults"));
                            }
                            "no_track" => cx.warn(a, "'no_track' not carried over: every address is tracked"),
                            other => cx.warn(a, format!("'{other}' not carried over")),
                        }
                    }
                    if a.block.is_some() {
                        cx.warn(a, "unexpected block; ignored");
                    }
                }
                if n.block.is_none() {
                    cx.warn(n, "want a block of addresses; ignored");
                }
            }
            "virtual_ipaddress_excluded" => cx.not_carried(
                n,
                "xvs adds only the advertised virtual_ipaddress; add these with a notify script or in the system",
            ),
            "virtual_routes" | "virtual_rules" => {
                cx.not_carried(n, "xvs adds no routes or rules on transitions: use a notify script")
            }
            "unicast_src_ip" => {
                if let Some(a) = cx.arg(n) {
                    t.set("unicast_src_ip", q(a));
                }
            }
            "mcast_src_ip" => {
                if let Some(a) = cx.arg(n) {
                    mcast_src = Some(a.to_string());
                    cx.warn(n, "carried over as unicast_src_ip (xvs's source address for adverts, multicast or unicast)");
                }
            }
            "unicast_peer" => {
                let mut peers = Vec::new();
                for p in children(n) {
                    peers.push(q(&p.keyword));
                    // `unicast_peer { A B }` on one line lists both; other words are options.
                    let (addrs, opts): (Vec<&String>, Vec<&String>) =
                        p.args.iter().partition(|a| a.parse::<std::net::IpAddr>().is_ok());
                    peers.extend(addrs.into_iter().map(|a| q(a)));
                    if !opts.is_empty() {
                        cx.warn(p, format!("'{}' not carried over; only addresses are", opts.into_iter().cloned().collect::<Vec<_>>().join(" ")));
                    }
                }
                if n.block.is_none() {
                    cx.warn(n, "want a block of addresses; ignored");
                } else {
                    t.set("unicast_peer", format!("[{}]", peers.join(", ")));
                }
            }
            "nopreempt" => {
                if cx.flag(n) == Some(true) {
                    t.set("nopreempt", "true".into());
                }
            }
            "preempt" => {
                cx.no_block(n);
            }
            "preempt_delay" => {
                if let Some(v) = cx.secs(n) {
                    t.set("preempt_delay", v);
                }
            }
            "accept" => {
                if let Some(v) = cx.flag(n) {
                    t.set("accept", v.to_string());
                }
            }
            "no_accept" => {
                cx.no_block(n);
                t.set("accept", "false".into());
            }
            "garp_master_delay" | "garp_master_repeat" | "garp_master_refresh" | "garp_master_refresh_repeat" => {
                if let Some(v) = cx.int(n, 0, 86400) {
                    t.set(&n.keyword, v);
                }
            }
            "track_interface" => {
                if let Some(v) = track_list(cx, n, "interface") {
                    t.set("track_interface", v);
                }
            }
            "track_script" => {
                if let Some(v) = track_list(cx, n, "vrrp_script") {
                    t.set("track_script", v);
                }
            }
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                if let Some(c) = cx.command(n) {
                    t.set(&n.keyword, q(&c));
                }
            }
            "authentication" => cx.warn(
                n,
                "not carried over: VRRP authentication is ignored as in RFC 5798 (v3); xvs sends none and \
                 refuses v2 adverts that carry it, so keepalived peers must drop it too",
            ),
            "use_vmac" => {
                cx.no_block(n);
                // keepalived: `use_vmac` alone names the macvlan vrrp.VRID; `use_vmac NAME` names it.
                match n.args.first() {
                    Some(name) => t.set("use_vmac", q(name)),
                    None => t.set("use_vmac", "true".into()),
                }
            }
            "vmac_xmit_base" => {
                cx.no_block(n);
                t.set("vmac_xmit_base", "true".into());
            }
            "lvs_sync_daemon_interface" => cx.not_carried(
                n,
                "connection synchronisation between directors is not implemented: connections open on a failed master are lost",
            ),
            "smtp_alert" => cx.not_carried(n, "xvs sends no e-mail: use notify scripts"),
            "garp_lower_prio_delay" | "garp_lower_prio_repeat" | "lower_prio_no_advert" | "higher_prio_send_advert" => {
                cx.not_carried(n, "xvs does not send gratuitous ARP on lower-priority adverts")
            }
            "track_process" | "track_file" | "track_bfd" => {
                cx.not_carried(n, "xvs tracks interfaces and scripts only (a vrrp_script can do this)")
            }
            "dont_track_primary" => cx.not_carried(
                n,
                "xvs always tracks the instance's interface: its loss is a FAULT",
            ),
            _ => {
                cx.no_block(n);
                cx.unknown(n, "vrrp_instance")
            }
        }
    }
    if let (Some(src), false) = (mcast_src, t.has("unicast_src_ip")) {
        t.set("unicast_src_ip", q(&src));
    }
    for (d, loc) in vip_devs {
        if ifc.as_deref() != Some(d.as_str()) {
            cx.w.push(Warning::new(
                loc,
                "virtual_ipaddress",
                format!(
                    "'dev {d}' not carried over: xvs adds every virtual address to the instance's interface ({})",
                    ifc.as_deref().unwrap_or("none")
                ),
            ));
            cx.interface(&d, loc);
        }
    }
    let v6 = vips.first().is_some_and(|(a, _)| a.contains(':'));
    if vips.is_empty() {
        cx.warn(
            inst,
            format!("vrrp_instance '{name}' has no virtual_ipaddress; not carried over"),
        );
        return None;
    }
    t.set(
        "virtual_ipaddress",
        format!("[{}]", vips.iter().map(|(a, _)| q(a)).collect::<Vec<_>>().join(", ")),
    );
    for k in ["interface", "virtual_router_id"] {
        if !t.has(k) {
            cx.warn(inst, format!("vrrp_instance '{name}' has no {k}; not carried over"));
            return None;
        }
    }
    // keepalived's default is VRRPv2, except for IPv6 which only v3 carries; xvs's default is v3.
    if !t.has("version") {
        let v = cx.vrrp_version.unwrap_or(if v6 { 3 } else { 2 });
        t.set("version", v.to_string());
    }
    for (k, v) in cx.garp.keys.clone() {
        t.inherit(&k, &v);
    }
    Some((name, t))
}

/// The members are kept NUL-separated in `group` until the instances are known.
fn sync_group(cx: &mut Cx, g: &Node) -> Option<Table> {
    let Some(name) = g.args.first().cloned() else {
        cx.warn(g, "needs a name; sync group not carried over");
        return None;
    };
    let mut t = Table::default();
    t.set("name", q(&name));
    let mut members = Vec::new();
    for n in children(g) {
        match n.keyword.as_str() {
            "group" => {
                for m in children(n) {
                    members.push(m.keyword.clone());
                    members.extend(m.args.iter().cloned());
                }
                members.extend(n.args.iter().cloned());
            }
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                if let Some(c) = cx.command(n) {
                    t.set(&n.keyword, q(&c));
                }
            }
            "smtp_alert" => cx.not_carried(n, "xvs sends no e-mail: use notify scripts"),
            "global_tracking" | "sync_group_tracking_weight" => cx.not_carried(
                n,
                "tracking stays per instance; a member's FAULT faults the whole group",
            ),
            "track_interface" | "track_script" | "track_process" | "track_file" | "track_bfd" => {
                cx.not_carried(n, "xvs tracks per vrrp_instance: move this to each member")
            }
            _ => cx.unknown(n, "vrrp_sync_group"),
        }
    }
    if members.is_empty() {
        cx.warn(
            g,
            format!("sync group '{name}' has no group {{ }} of members; not carried over"),
        );
        return None;
    }
    t.set("group", members.join("\u{0}"));
    Some(t)
}

/// Checker options set on a virtual or real server, inherited by its checkers.
#[derive(Default, Clone)]
struct Inherit {
    check: Table,
    virtualhost: Option<String>,
}

fn virtual_server(cx: &mut Cx, vs: &Node, out: &mut String) {
    let rs_count = children(vs).iter().filter(|n| n.keyword == "real_server").count();
    let (vip, port) = match vs.args.as_slice() {
        [f, _] if f == "fwmark" => {
            cx.warn(
                vs,
                format!(
                    "not carried over: firewall-mark services are not supported by xvs (it matches address, port and protocol); its {rs_count} real server(s) are left out"
                ),
            );
            return;
        }
        [g, _] if g == "group" => {
            cx.warn(
                vs,
                format!(
                    "not carried over: xvs has no virtual server groups (write one [[virtual_server]] per address); its {rs_count} real server(s) are left out"
                ),
            );
            return;
        }
        [ip, port] => (ip.clone(), port.clone()),
        [ip] => {
            cx.warn(
                vs,
                format!("not carried over: {ip} has no port (all-port services are not supported)"),
            );
            return;
        }
        _ => {
            cx.warn(vs, format!("not carried over: '{}' is not IP PORT", vs.args.join(" ")));
            return;
        }
    };
    let Ok(port_n) = port.parse::<u16>() else {
        cx.warn(vs, format!("not carried over: '{port}' is not a port"));
        return;
    };
    let mut t = Table::default();
    t.set("vip", q(&vip));
    t.set("port", port_n.to_string());
    let mut inh = Inherit::default();
    let mut algo: Option<(String, Loc)> = None;
    let mut flags: Vec<(&'static str, &Node)> = Vec::new();
    let mut reals: Vec<&Node> = Vec::new();
    let mut laddr_group: Option<&Node> = None;
    let mut inhibit_all = false;
    for n in children(vs) {
        match n.keyword.as_str() {
            "delay_loop" => {
                if let Some(v) = cx.secs(n) {
                    t.set("delay_loop", v);
                }
            }
            "lb_algo" | "lvs_sched" => {
                if let Some(a) = cx.arg(n) {
                    algo = Some((a.to_ascii_lowercase(), n.loc));
                }
            }
            "lb_kind" | "lvs_method" => {
                if let Some(k) = cx.arg(n) {
                    let k = k.to_ascii_uppercase();
                    match k.as_str() {
                        "NAT" | "DR" | "TUN" => t.set("lb_kind", q(&k)),
                        "FNAT" | "FULLNAT" => t.set("lb_kind", q("FULLNAT")),
                        o => cx.warn(
                            n,
                            format!("'{o}' is not NAT, DR, TUN or FULLNAT; NAT (keepalived's default) used"),
                        ),
                    }
                }
            }
            "protocol" => {
                if let Some(p) = cx.arg(n) {
                    match p.to_ascii_lowercase().as_str() {
                        "tcp" => t.set("protocol", q("tcp")),
                        "udp" => t.set("protocol", q("udp")),
                        o => {
                            cx.warn(n, format!("not carried over: protocol {o} is not supported (tcp and udp are); the service is left out"));
                            return;
                        }
                    }
                }
            }
            "persistence_timeout" => {
                // keepalived's default when the keyword stands alone: 6 minutes.
                if n.args.is_empty() {
                    t.set("persistence_timeout", "360".into());
                } else if let Some(v) = cx.int(n, 0, 30 * 24 * 3600) {
                    t.set("persistence_timeout", v);
                }
            }
            "persistence_granularity" => {
                if let Some(v) = cx.arg(n) {
                    t.set("persistence_granularity", q(v));
                }
            }
            "quorum" => {
                if let Some(v) = cx.int(n, 1, 1 << 24) {
                    t.set("quorum", v);
                }
            }
            "hysteresis" => {
                if let Some(v) = cx.int(n, 0, 1 << 24) {
                    t.set("hysteresis", v);
                }
            }
            "quorum_up" | "quorum_down" => {
                if let Some(c) = cx.command(n) {
                    t.set(&n.keyword, q(&c));
                }
            }
            "sorry_server" => {
                cx.no_block(n);
                match n.args.as_slice() {
                    [a, p] if p.parse::<u16>().is_ok() => {
                        t.set("sorry_server", format!("{{ address = {}, port = {p} }}", q(a)))
                    }
                    [a] => t.set("sorry_server", format!("{{ address = {} }}", q(a))),
                    other => cx.warn(n, format!("'{}' is not IP [PORT]; ignored", other.join(" "))),
                }
            }
            "sorry_server_inhibit" => {
                if let Some(v) = cx.flag(n) {
                    t.set("sorry_server_inhibit", v.to_string());
                }
            }
            "alpha" => {
                if let Some(v) = cx.flag(n) {
                    t.set("alpha", v.to_string());
                }
            }
            "virtualhost" => inh.virtualhost = cx.arg(n).map(String::from),
            "connect_timeout" | "delay_before_retry" => {
                if let Some(v) = cx.secs(n) {
                    inh.check.set(&n.keyword, v);
                }
            }
            "retry" | "nb_get_retry" => {
                if let Some(v) = cx.int(n, 0, 1000) {
                    inh.check.set("retry", v);
                }
            }
            "inhibit_on_failure" => inhibit_all = cx.flag(n) == Some(true),
            "sh-port" | "mh-port" | "flag-2" => {
                cx.no_block(n);
                flags.push(("port", n));
            }
            "sh-fallback" | "mh-fallback" | "flag-1" => {
                cx.no_block(n);
                flags.push(("fallback", n));
            }
            "laddr_group_name" => {
                laddr_group = Some(n);
            }
            "real_server" => reals.push(n),
            "warmup" => cx.not_carried(n, "xvs checks every server from the start (no random warm-up delay)"),
            "omega" => cx.not_carried(n, "quorum_down does not run at exit in xvs"),
            "ha_suspend" => cx.not_carried(n, "xvs checks real servers whatever the VRRP state"),
            "ops" => cx.not_carried(
                n,
                "one-packet scheduling is not supported: UDP flows keep a connection entry",
            ),
            "persistence_engine" => cx.not_carried(n, "persistence engines (SIP) are not supported"),
            "smtp_alert" => cx.not_carried(n, "xvs sends no e-mail: use notify_up/notify_down"),
            "ip_family" => cx.no_block(n),
            "SMTP_CHECK" | "DNS_CHECK" | "BFD_CHECK" | "FILE_CHECK" | "PING_CHECK" | "UDP_CHECK" => cx.not_carried(
                n,
                "this checker is not supported (TCP_CHECK, HTTP_GET, SSL_GET and MISC_CHECK are)",
            ),
            _ => cx.unknown(n, "virtual_server"),
        }
    }
    match algo {
        Some((a, _)) if SCHEDULERS.contains(&a.as_str()) => t.set("lb_algo", q(&a)),
        Some((a, loc)) => {
            cx.w.push(Warning::new(
                loc,
                "lb_algo",
                format!("scheduler '{a}' is not supported (rr wrr lc wlc sed nq sh dh mh fo are); wlc used"),
            ));
            t.set("lb_algo", q("wlc"));
        }
        // keepalived leaves the scheduler to ipvsadm's default, wlc: say so.
        None => t.set("lb_algo", q("wlc")),
    }
    if !t.has("lb_kind") {
        t.set("lb_kind", q("NAT"));
    }
    let algo_name = t.get("lb_algo").unwrap_or_default().trim_matches('"').to_string();
    let mut sched_flags = Vec::new();
    for (f, n) in flags {
        if algo_name == "sh" || algo_name == "mh" {
            let s = q(&format!("{algo_name}-{f}"));
            if !sched_flags.contains(&s) {
                sched_flags.push(s);
            }
        } else {
            cx.warn(
                n,
                format!("not carried over: applies to the sh and mh schedulers only, not {algo_name}"),
            );
        }
    }
    if !sched_flags.is_empty() {
        t.set("sched_flags", format!("[{}]", sched_flags.join(", ")));
    }
    if t.get("lb_kind") == Some("\"FULLNAT\"") {
        match laddr_group {
            Some(n) => match cx.arg(n).and_then(|g| cx.laddr_groups.get(g).cloned()) {
                Some(addrs) => t.set(
                    "laddr",
                    format!("[{}]", addrs.iter().map(|a| q(a)).collect::<Vec<_>>().join(", ")),
                ),
                None => cx.warn(n, "no local_address_group of that name: set laddr by hand"),
            },
            None => cx.warn(
                vs,
                "FULLNAT needs local addresses: set laddr = [...] by hand (xvs check refuses the service until then)",
            ),
        }
    } else if let Some(n) = laddr_group {
        cx.warn(n, "not carried over: local addresses apply to FULLNAT only");
    }

    out.push_str("\n[[virtual_server]]\n");
    t.write(out, "");
    for r in reals {
        real_server(cx, r, &inh, inhibit_all, out);
    }
}

fn real_server(cx: &mut Cx, rs: &Node, vs_inh: &Inherit, inhibit_all: bool, out: &mut String) {
    let mut t = Table::default();
    match rs.args.as_slice() {
        [a, p] if p.parse::<u16>().is_ok() => {
            t.set("address", q(a));
            t.set("port", p.clone());
        }
        [a] => t.set("address", q(a)),
        other => {
            cx.warn(rs, format!("not carried over: '{}' is not IP [PORT]", other.join(" ")));
            return;
        }
    }
    if inhibit_all {
        t.set("inhibit_on_failure", "true".into());
    }
    let mut inh = vs_inh.clone();
    let mut checks: Vec<(&str, &Node)> = Vec::new();
    for n in children(rs) {
        match n.keyword.as_str() {
            "weight" => {
                if let Some(v) = cx.int(n, 0, 65535) {
                    t.set("weight", v);
                }
            }
            "inhibit_on_failure" => {
                if let Some(v) = cx.flag(n) {
                    t.set("inhibit_on_failure", v.to_string());
                }
            }
            "notify_up" | "notify_down" => {
                if let Some(c) = cx.command(n) {
                    t.set(&n.keyword, q(&c));
                }
            }
            "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" => {
                if let Some((_, first)) = checks.iter().find(|(k, _)| *k == n.keyword) {
                    let first_line = first.loc.line;
                    cx.warn(
                        n,
                        format!("not carried over: xvs takes one {} per real server (the one at line {first_line} is kept)", n.keyword),
                    );
                } else {
                    checks.push((n.keyword.as_str(), n));
                }
            }
            "connect_timeout" | "delay_before_retry" | "delay_loop" => {
                if let Some(v) = cx.secs(n) {
                    inh.check.set(&n.keyword, v);
                }
            }
            "retry" | "nb_get_retry" => {
                if let Some(v) = cx.int(n, 0, 1000) {
                    inh.check.set("retry", v);
                }
            }
            "alpha" => {
                if let Some(v) = cx.flag(n) {
                    inh.check.set("alpha", v.to_string());
                }
            }
            "virtualhost" => inh.virtualhost = cx.arg(n).map(String::from),
            "SMTP_CHECK" | "DNS_CHECK" | "BFD_CHECK" | "FILE_CHECK" | "PING_CHECK" | "UDP_CHECK" => cx.not_carried(
                n,
                "this checker is not supported (TCP_CHECK, HTTP_GET, SSL_GET and MISC_CHECK are): the server is checked by the others only",
            ),
            "uthreshold" | "lthreshold" => cx.not_carried(n, "connection thresholds are not supported"),
            "warmup" => cx.not_carried(n, "xvs checks every server from the start (no random warm-up delay)"),
            "smtp_alert" => cx.not_carried(n, "xvs sends no e-mail: use notify_up/notify_down"),
            _ => cx.unknown(n, "real_server"),
        }
    }
    out.push_str("  [[virtual_server.real_server]]\n");
    t.write(out, "  ");
    for (kind, n) in checks {
        if let Some(c) = checker(cx, kind, n, &inh) {
            out.push_str(&format!("  [virtual_server.real_server.{kind}]\n"));
            c.write(out, "  ");
        }
    }
}

fn checker(cx: &mut Cx, kind: &str, c: &Node, inh: &Inherit) -> Option<Table> {
    let misc = kind == "MISC_CHECK";
    let http = kind == "HTTP_GET" || kind == "SSL_GET";
    let mut t = Table::default();
    let mut urls = Vec::new();
    for n in children(c) {
        let k = n.keyword.as_str();
        match k {
            "connect_ip" | "bindto" if !misc => {
                if let Some(v) = cx.arg(n) {
                    t.set(k, q(v));
                }
            }
            "connect_port" | "bind_port" if !misc => {
                if let Some(v) = cx.int(n, 1, 65535) {
                    t.set(k, v);
                }
            }
            "connect_timeout" if !misc => {
                if let Some(v) = cx.secs(n) {
                    t.set(k, v);
                }
            }
            "connect_ip" | "bindto" | "connect_port" | "bind_port" | "connect_timeout" => {
                cx.not_carried(n, "MISC_CHECK connects nowhere (misc_timeout bounds the script)")
            }
            "retry" | "nb_get_retry" => {
                if let Some(v) = cx.int(n, 0, 1000) {
                    t.set("retry", v);
                }
            }
            "delay_before_retry" | "delay_loop" => {
                if let Some(v) = cx.secs(n) {
                    t.set(k, v);
                }
            }
            "alpha" => {
                if let Some(v) = cx.flag(n) {
                    t.set("alpha", v.to_string());
                }
            }
            "url" if http => {
                if let Some(u) = url(cx, n) {
                    urls.push(u);
                }
            }
            "virtualhost" if http => {
                if let Some(v) = cx.arg(n) {
                    t.set("virtualhost", q(v));
                }
            }
            "http_protocol" if http => {
                if let Some(v) = cx.arg(n) {
                    t.set("http_protocol", q(v));
                }
            }
            "enable_sni" if kind == "SSL_GET" => {
                if let Some(v) = cx.flag(n) {
                    t.set("enable_sni", v.to_string());
                }
            }
            "misc_path" if misc => {
                if let Some(v) = cx.command(n) {
                    t.set("misc_path", q(&v));
                }
            }
            "misc_timeout" if misc => {
                if let Some(v) = cx.secs(n) {
                    t.set("misc_timeout", v);
                }
            }
            "misc_dynamic" if misc => {
                if let Some(v) = cx.flag(n) {
                    t.set("misc_dynamic", v.to_string());
                }
            }
            "user" if misc => cx.not_carried(n, "xvs runs scripts as its own user"),
            "warmup" => cx.not_carried(n, "xvs checks every server from the start (no random warm-up delay)"),
            "fast_recovery" => cx.not_carried(n, "a down server comes back after `rise` successes, delay_loop apart"),
            "tls_compliant" => cx.not_carried(n, "xvs's SSL_GET always closes TLS properly"),
            "fwmark" | "bind_if" => cx.not_carried(n, "checker sockets are not marked or bound to a device"),
            _ => cx.unknown(n, kind),
        }
    }
    // Inherited from the real server, then the virtual server: keepalived's precedence.
    for (k, v) in &inh.check.keys {
        if misc && k == "connect_timeout" {
            continue;
        }
        t.inherit(k, v);
    }
    if http {
        if let Some(vh) = &inh.virtualhost {
            t.inherit("virtualhost", &q(vh));
        }
        if urls.is_empty() {
            cx.warn(
                c,
                "not carried over: an HTTP checker needs at least one url { path ... }",
            );
            return None;
        }
        t.set("url", format!("[{}]", urls.join(", ")));
    }
    if misc && !t.has("misc_path") {
        cx.warn(c, "not carried over: MISC_CHECK needs misc_path");
        return None;
    }
    Some(t)
}

/// `url { path P digest D status_code C... }` as an inline table.
fn url(cx: &mut Cx, u: &Node) -> Option<String> {
    let mut parts = Vec::new();
    let mut path = None;
    for n in children(u) {
        match n.keyword.as_str() {
            "path" => path = cx.arg(n).map(String::from),
            "digest" => {
                if let Some(d) = cx.arg(n) {
                    parts.push(format!("digest = {}", q(d)));
                }
            }
            "status_code" => {
                cx.no_block(n);
                let mut codes = Vec::new();
                for a in &n.args {
                    match a.parse::<u16>() {
                        Ok(c) => codes.push(c.to_string()),
                        Err(_) if a.contains('-') => codes.push(q(a)),
                        Err(_) => cx.warn(n, format!("'{a}' is not a status code; ignored")),
                    }
                }
                if !codes.is_empty() {
                    parts.push(format!("status_code = [{}]", codes.join(", ")));
                }
            }
            "regex" | "regex_no_match" | "regex_options" | "regex_stack" | "regex_min_offset" | "regex_max_offset" => {
                cx.not_carried(n, "body regular expressions are not supported (digest is)")
            }
            "virtualhost" => cx.not_carried(
                n,
                "a per-url virtualhost is not supported: set virtualhost on the checker",
            ),
            _ => cx.unknown(n, "url"),
        }
    }
    let Some(path) = path else {
        cx.warn(u, "not carried over: url has no path");
        return None;
    };
    parts.insert(0, format!("path = {}", q(&path)));
    Some(format!("{{ {} }}", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::super::convert_str;
    use proptest::prelude::*;

    fn conv(text: &str) -> super::super::Conversion {
        convert_str(text, "t.conf", None).expect("parses")
    }

    fn options(c: &super::super::Conversion) -> Vec<(String, String)> {
        c.warnings.iter().map(|w| (w.at.clone(), w.option.clone())).collect()
    }

    #[test]
    fn values_are_quoted_and_escaped_for_toml() {
        let c = conv(
            "vrrp_script s {\n script \"/bin/echo \\\"quoted\\\" \\\\ back\"\n}\n\
             vrrp_instance V { interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n 198.18.0.1\n }\n\
             notify_master /bin/notify with words\n track_script {\n s\n }\n}\n",
        );
        assert!(c.refused.is_empty(), "{:?}\n{}", c.refused, c.toml);
        let cfg = crate::config::parse(&c.toml, "t").unwrap();
        assert_eq!(cfg.vrrp.scripts[0].argv, ["/bin/echo", "\"quoted\"", "\\", "back"]);
        assert_eq!(
            cfg.vrrp.instances[0].notify.master.as_deref(),
            Some("/bin/notify with words")
        );
    }

    #[test]
    fn one_line_lists_flags_and_mcast_src_ip() {
        let c = conv(
            "vrrp_instance V {\n interface eth0\n virtual_router_id 9\n mcast_src_ip 198.18.1.1\n\
             unicast_peer { 198.18.1.2 198.18.1.3 }\n virtual_ipaddress {\n 198.18.0.1\n }\n nopreempt\n}\n\
             vrrp_sync_group G { group { V } }\n",
        );
        assert!(c.refused.is_empty(), "{:?}\n{}", c.refused, c.toml);
        let cfg = crate::config::parse(&c.toml, "t").unwrap();
        let i = &cfg.vrrp.instances[0];
        assert_eq!(i.unicast_peers.len(), 2);
        assert_eq!(i.unicast_src_ip, "198.18.1.1".parse().ok());
        assert!(!i.preempt);
        assert_eq!(cfg.vrrp.sync_groups[0].instances, [0]);
        assert!(options(&c).contains(&("t.conf:4".into(), "mcast_src_ip".into())));
    }

    #[test]
    fn missing_essentials_drop_the_block_with_a_warning() {
        let c = conv(
            "vrrp_instance V {\n virtual_router_id 9\n virtual_ipaddress {\n 198.18.0.1\n }\n}\n\
             vrrp_sync_group G {\n group {\n V\n }\n}\n\
             virtual_server 198.18.0.1 80 {\n real_server 198.18.2.1 80 {\n HTTP_GET {\n connect_timeout 1\n }\n\
             MISC_CHECK {\n misc_timeout 1\n }\n }\n}\n",
        );
        assert!(c.refused.is_empty(), "{:?}\n{}", c.refused, c.toml);
        let o = options(&c);
        for (at, opt) in [
            ("t.conf:1", "vrrp_instance"),
            ("t.conf:7", "vrrp_sync_group"),
            ("t.conf:14", "HTTP_GET"),
            ("t.conf:17", "MISC_CHECK"),
        ] {
            assert!(o.contains(&(at.into(), opt.into())), "{at} {opt}: {o:?}");
        }
    }

    #[test]
    fn inheritance_checker_over_real_server_over_virtual_server() {
        let c = conv(
            "virtual_server 198.18.0.1 80 {\n connect_timeout 7\n retry 4\n virtualhost vs.example\n\
             real_server 198.18.2.1 80 {\n connect_timeout 5\n HTTP_GET {\n url {\n path /\n }\n }\n\
             TCP_CHECK {\n connect_timeout 2\n }\n }\n}\n",
        );
        let cfg = crate::config::parse(&c.toml, "t").unwrap();
        let checks = &cfg.services[0].real_servers[0].checks;
        assert_eq!(checks[0].timeout, std::time::Duration::from_secs(2), "TCP_CHECK's own");
        assert_eq!(
            checks[1].timeout,
            std::time::Duration::from_secs(5),
            "the real server's"
        );
        assert_eq!(checks[1].policy.fall, 5, "the virtual server's retry 4");
        let crate::config::CheckKind::Http(h) = &checks[1].kind else {
            panic!()
        };
        assert_eq!(h.virtualhost.as_deref(), Some("vs.example"));
    }

    #[test]
    fn bad_values_warn_and_never_reach_the_toml() {
        let c = conv(
            "virtual_server 198.18.0.1 80 {\n delay_loop soon\n real_server 198.18.2.1 80 {\n weight heavy\n }\n}\n",
        );
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        let o = options(&c);
        assert!(o.contains(&("t.conf:2".into(), "delay_loop".into())), "{o:?}");
        assert!(o.contains(&("t.conf:4".into(), "weight".into())), "{o:?}");
    }

    proptest! {
        /// Whatever the input, conversion returns (an error or TOML) and never panics.
        #[test]
        fn conversion_never_panics(words in proptest::collection::vec(prop_oneof![
            Just("{"), Just("}"), Just("\n"), Just(" "), Just("\""),
            Just("virtual_server"), Just("real_server"), Just("vrrp_instance"), Just("vrrp_sync_group"),
            Just("group"), Just("TCP_CHECK"), Just("HTTP_GET"), Just("url"), Just("path"), Just("weight"),
            Just("virtual_ipaddress"), Just("track_script"), Just("fwmark"), Just("198.18.0.1"), Just("80"),
            Just("-1"), Just("x"), Just("dev"), Just("include"),
        ], 0..120)) {
            let _ = convert_str(&words.concat(), "t.conf", None);
        }

        #[test]
        fn random_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = convert_str(&String::from_utf8_lossy(&bytes), "t.conf", None);
        }
    }
}
