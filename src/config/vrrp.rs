//! VRRP configuration: `[[vrrp_instance]]`, `[[vrrp_sync_group]]` and `[[vrrp_script]]`, with
//! keepalived's key names where they apply, raw (serde, spanned) and resolved (validated, defaults
//! filled). Errors go through the same collector as the rest of the file: file:line: key: reason,
//! all at once.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::raw::S;
use super::resolve::Errs;
use crate::types::Prefix;
use crate::vrrp::packet::{ChecksumForm, Version};

/// keepalived's `vrrp_instance` block.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVrrpInstance {
    pub name: S<String>,
    /// MASTER or BACKUP (the initial state).
    pub state: Option<S<String>>,
    pub interface: S<String>,
    pub virtual_router_id: S<i64>,
    pub priority: Option<S<i64>>,
    /// Seconds; a float for v3 (0.01..=40.95), an integer for v2 (1..=255).
    pub advert_int: Option<S<toml::Value>>,
    pub version: Option<S<i64>>,
    #[serde(default)]
    pub virtual_ipaddress: Vec<S<String>>,
    pub unicast_src_ip: Option<S<String>>,
    #[serde(default)]
    pub unicast_peer: Vec<S<String>>,
    pub nopreempt: Option<S<bool>>,
    /// Seconds (float).
    pub preempt_delay: Option<S<toml::Value>>,
    pub accept: Option<S<bool>>,
    /// Seconds.
    pub garp_master_delay: Option<S<i64>>,
    pub garp_master_repeat: Option<S<i64>>,
    /// Seconds; 0 turns the refresh off.
    pub garp_master_refresh: Option<S<i64>>,
    pub garp_master_refresh_repeat: Option<S<i64>>,
    /// `true` (interface `vrrp.VRID`) or the macvlan's name, as keepalived's `use_vmac [NAME]`.
    pub use_vmac: Option<S<toml::Value>>,
    /// Adverts sent and received on the base interface instead of the virtual MAC one.
    pub vmac_xmit_base: Option<S<bool>>,
    /// Names, or `{ name, weight }` tables.
    #[serde(default)]
    pub track_interface: Vec<S<toml::Value>>,
    /// Names, or `{ name, weight }` tables (the weight overrides the script's).
    #[serde(default)]
    pub track_script: Vec<S<toml::Value>>,
    pub notify_master: Option<S<String>>,
    pub notify_backup: Option<S<String>>,
    pub notify_fault: Option<S<String>>,
    pub notify_stop: Option<S<String>>,
    pub notify: Option<S<String>>,
    /// xvs only: include the IPv4 pseudo-header in the v3 checksum (keepalived does; RFC 9568,
    /// Cisco and Juniper do not). Received adverts are accepted in both forms.
    pub checksum_pseudo_header: Option<S<bool>>,
}

/// keepalived's `vrrp_sync_group` block.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVrrpSyncGroup {
    pub name: S<String>,
    pub group: S<Vec<String>>,
    pub notify_master: Option<S<String>>,
    pub notify_backup: Option<S<String>>,
    pub notify_fault: Option<S<String>>,
    pub notify_stop: Option<S<String>>,
    pub notify: Option<S<String>>,
}

/// keepalived's `vrrp_script` block.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVrrpScript {
    pub name: S<String>,
    pub script: S<String>,
    /// Seconds between runs (float).
    pub interval: Option<S<toml::Value>>,
    /// Seconds a run may take (float); the interval when absent.
    pub timeout: Option<S<toml::Value>>,
    pub weight: Option<S<i64>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
}

/// Everything VRRP, resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vrrp {
    pub instances: Vec<VrrpInstance>,
    pub sync_groups: Vec<VrrpSyncGroup>,
    pub scripts: Vec<VrrpScript>,
}

/// One virtual router on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpInstance {
    pub name: String,
    /// `state MASTER`.
    pub start_master: bool,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub version: Version,
    /// Centiseconds (v2: a multiple of 100).
    pub advert_int_cs: u16,
    /// All of one family; a bare address is a /32 or /128.
    pub vips: Vec<Prefix>,
    pub unicast_src_ip: Option<IpAddr>,
    pub unicast_peers: Vec<IpAddr>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub accept: bool,
    pub garp_master_delay: Duration,
    pub garp_master_repeat: u32,
    pub garp_master_refresh: Duration,
    pub garp_master_refresh_repeat: u32,
    /// The macvlan interface with the virtual MAC (00:00:5e:00:01:VRID, IPv6 00:00:5e:00:02:VRID)
    /// that holds the VIPs and sends the adverts: keepalived's `use_vmac`.
    pub use_vmac: Option<String>,
    /// keepalived's `vmac_xmit_base`: adverts from the base interface and its own MAC.
    pub vmac_xmit_base: bool,
    pub track_interfaces: Vec<Track>,
    pub track_scripts: Vec<Track>,
    pub notify: Notify,
    pub checksum_form: ChecksumForm,
}

impl VrrpInstance {
    /// The family of the VIPs (and of every address the instance sends from or to).
    pub fn is_ipv6(&self) -> bool {
        self.vips.first().is_some_and(|p| p.addr.is_ipv6())
    }
}

/// A tracked interface or script. `weight` 0 (the default for interfaces) means FAULT on failure;
/// otherwise the weight adds to the priority (positive: while up; negative: while down).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub name: String,
    /// For scripts, None uses the script's own weight.
    pub weight: Option<i32>,
}

/// Notify scripts, run with keepalived's arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    pub stop: Option<String>,
    /// Called on every change with the state as an argument.
    pub any: Option<String>,
}

/// Instances that change state together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpSyncGroup {
    pub name: String,
    /// Indices into [`Vrrp::instances`].
    pub instances: Vec<usize>,
    pub notify: Notify,
}

/// A periodic check whose result changes priorities or causes FAULT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpScript {
    pub name: String,
    /// The command line, split on whitespace as keepalived does (no shell).
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub weight: i32,
    pub rise: u32,
    pub fall: u32,
}

/// Seconds as an integer or a float, within `lo..=hi`, rounded to centiseconds.
fn seconds(e: &mut Errs, v: &S<toml::Value>, key: &str, lo: f64, hi: f64) -> Option<Duration> {
    let s = match v.get_ref() {
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        other => {
            e.at(
                v.span(),
                key,
                format!("want seconds (a number), got {}", other.type_str()),
            );
            return None;
        }
    };
    if !(lo..=hi).contains(&s) || !s.is_finite() {
        e.at(v.span(), key, format!("{s} is out of range {lo}..={hi} seconds"));
        return None;
    }
    Some(Duration::from_millis((s * 100.0).round() as u64 * 10))
}

fn notify(e: &mut Errs, k: &str, fields: [(&Option<S<String>>, &str); 5]) -> Notify {
    let mut out = [None, None, None, None, None];
    for (slot, (v, name)) in out.iter_mut().zip(fields) {
        if let Some(v) = v {
            if v.get_ref().trim().is_empty() {
                e.at(v.span(), format!("{k}.{name}"), "empty script");
            } else {
                *slot = Some(v.get_ref().clone());
            }
        }
    }
    let [master, backup, fault, stop, any] = out;
    Notify {
        master,
        backup,
        fault,
        stop,
        any,
    }
}

/// A `"name"` or `{ name = "x", weight = -10 }` entry.
fn track(e: &mut Errs, v: &S<toml::Value>, key: &str) -> Option<Track> {
    match v.get_ref() {
        toml::Value::String(s) if !s.is_empty() => Some(Track {
            name: s.clone(),
            weight: None,
        }),
        toml::Value::Table(t) => {
            let name = t.get("name").and_then(|n| n.as_str());
            let weight = t.get("weight").map(|w| w.as_integer());
            let extra = t.keys().find(|k| *k != "name" && *k != "weight");
            match (name, weight, extra) {
                (_, _, Some(x)) => e.at(
                    v.span(),
                    key,
                    format!("unknown field `{x}`, expected `name` or `weight`"),
                ),
                (None, _, _) => e.at(v.span(), key, "missing `name`"),
                (_, Some(None), _) => e.at(v.span(), key, "`weight` must be an integer"),
                (Some(n), Some(Some(w)), _) if !(-253..=253).contains(&w) => {
                    e.at(v.span(), key, format!("weight {w} of '{n}' is out of range -253..=253"))
                }
                (Some(n), w, _) => {
                    return Some(Track {
                        name: n.to_string(),
                        weight: w.flatten().map(|w| w as i32),
                    });
                }
            }
            None
        }
        _ => {
            e.at(v.span(), key, "want a name or { name, weight }");
            None
        }
    }
}

/// Resolves the three VRRP sections of `raw`.
pub(super) fn resolve(
    e: &mut Errs,
    instances: &[S<RawVrrpInstance>],
    groups: &[S<RawVrrpSyncGroup>],
    scripts: &[S<RawVrrpScript>],
) -> Vrrp {
    let mut out = Vrrp::default();
    let mut names = HashSet::new();
    for (i, s) in scripts.iter().enumerate() {
        let r = s.get_ref();
        let k = format!("vrrp_script[{i}]");
        if !names.insert(r.name.get_ref().clone()) {
            e.at(
                r.name.span(),
                format!("{k}.name"),
                format!("script '{}' is declared twice", r.name.get_ref()),
            );
        }
        let argv: Vec<String> = r.script.get_ref().split_whitespace().map(String::from).collect();
        if argv.is_empty() {
            e.at(r.script.span(), format!("{k}.script"), "empty script");
        }
        let interval = r
            .interval
            .as_ref()
            .and_then(|v| seconds(e, v, &format!("{k}.interval"), 0.01, 86400.0))
            .unwrap_or(Duration::from_secs(1));
        let timeout = r
            .timeout
            .as_ref()
            .and_then(|v| seconds(e, v, &format!("{k}.timeout"), 0.01, 86400.0))
            .unwrap_or(interval);
        let weight = r
            .weight
            .as_ref()
            .and_then(|v| e.int::<i32>(v, &format!("{k}.weight"), -253, 253))
            .unwrap_or(0);
        let rise = r
            .rise
            .as_ref()
            .and_then(|v| e.int::<u32>(v, &format!("{k}.rise"), 1, 1000))
            .unwrap_or(1);
        let fall = r
            .fall
            .as_ref()
            .and_then(|v| e.int::<u32>(v, &format!("{k}.fall"), 1, 1000))
            .unwrap_or(1);
        out.scripts.push(VrrpScript {
            name: r.name.get_ref().clone(),
            argv,
            interval,
            timeout,
            weight,
            rise,
            fall,
        });
    }

    let mut inames = HashSet::new();
    let mut routers = HashSet::new();
    for (i, s) in instances.iter().enumerate() {
        if let Some(inst) = instance(e, s, i, &names) {
            if !inames.insert(inst.name.clone()) {
                e.at(
                    s.get_ref().name.span(),
                    format!("vrrp_instance[{i}].name"),
                    format!("instance '{}' is declared twice", inst.name),
                );
            }
            if !routers.insert((inst.interface.clone(), inst.vrid, inst.is_ipv6())) {
                e.at(
                    s.get_ref().virtual_router_id.span(),
                    format!("vrrp_instance[{i}].virtual_router_id"),
                    format!(
                        "VRID {} is used twice on {} for the same family",
                        inst.vrid, inst.interface
                    ),
                );
            }
            out.instances.push(inst);
        }
    }

    let index: HashMap<&str, usize> = out
        .instances
        .iter()
        .enumerate()
        .map(|(n, x)| (x.name.as_str(), n))
        .collect();
    let mut member_of: HashMap<usize, String> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        let r = g.get_ref();
        let k = format!("vrrp_sync_group[{i}]");
        let mut members = Vec::new();
        for name in r.group.get_ref() {
            match index.get(name.as_str()) {
                None => e.at(
                    r.group.span(),
                    format!("{k}.group"),
                    format!("no vrrp_instance named '{name}'"),
                ),
                Some(&n) => {
                    if let Some(other) = member_of.insert(n, r.name.get_ref().clone()) {
                        e.at(
                            r.group.span(),
                            format!("{k}.group"),
                            format!("instance '{name}' is already in sync group '{other}'"),
                        );
                    }
                    members.push(n);
                }
            }
        }
        if r.group.get_ref().is_empty() {
            e.at(r.group.span(), format!("{k}.group"), "empty group");
        }
        let notify = notify(
            e,
            &k,
            [
                (&r.notify_master, "notify_master"),
                (&r.notify_backup, "notify_backup"),
                (&r.notify_fault, "notify_fault"),
                (&r.notify_stop, "notify_stop"),
                (&r.notify, "notify"),
            ],
        );
        out.sync_groups.push(VrrpSyncGroup {
            name: r.name.get_ref().clone(),
            instances: members,
            notify,
        });
    }
    out
}

fn instance(e: &mut Errs, s: &S<RawVrrpInstance>, i: usize, scripts: &HashSet<String>) -> Option<VrrpInstance> {
    let r = s.get_ref();
    let k = format!("vrrp_instance[{i}]");
    let before = e.list.len();
    let name = r.name.get_ref().clone();
    if name.is_empty() {
        e.at(r.name.span(), format!("{k}.name"), "empty name");
    }
    let start_master = match r.state.as_ref().map(|v| (v, v.get_ref().to_ascii_uppercase())) {
        None => false,
        Some((_, st)) if st == "MASTER" => true,
        Some((_, st)) if st == "BACKUP" => false,
        Some((v, st)) => {
            e.at(
                v.span(),
                format!("{k}.state"),
                format!("'{st}' is not MASTER or BACKUP"),
            );
            false
        }
    };
    let interface = r.interface.get_ref().clone();
    if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ']) {
        e.at(
            r.interface.span(),
            format!("{k}.interface"),
            format!("'{interface}' is not a valid interface name"),
        );
    }
    let vrid = e.int::<u8>(&r.virtual_router_id, &format!("{k}.virtual_router_id"), 1, 255);
    let priority = r
        .priority
        .as_ref()
        .and_then(|v| e.int::<u8>(v, &format!("{k}.priority"), 1, 255))
        .unwrap_or(100);
    let version = match r.version.as_ref().map(|v| (v, *v.get_ref())) {
        None | Some((_, 3)) => Version::V3,
        Some((_, 2)) => Version::V2,
        Some((v, n)) => {
            e.at(v.span(), format!("{k}.version"), format!("{n} is not 2 or 3"));
            Version::V3
        }
    };
    let advert_int_cs = match (&r.advert_int, version) {
        (None, _) => 100,
        (Some(v), Version::V3) => seconds(e, v, &format!("{k}.advert_int"), 0.01, 40.95)
            .map(|d| (d.as_millis() / 10) as u16)
            .unwrap_or(100),
        (Some(v), Version::V2) => match v.get_ref() {
            toml::Value::Integer(n) if (1..=255).contains(n) => (*n as u16) * 100,
            toml::Value::Float(f) if f.fract() == 0.0 && (1.0..=255.0).contains(f) => (*f as u16) * 100,
            other => {
                e.at(
                    v.span(),
                    format!("{k}.advert_int"),
                    format!("VRRPv2 wants whole seconds 1..=255, got {other}"),
                );
                100
            }
        },
    };
    let mut vips = Vec::new();
    for (j, v) in r.virtual_ipaddress.iter().enumerate() {
        let key = format!("{k}.virtual_ipaddress[{j}]");
        let text = v.get_ref();
        let parsed = if text.contains('/') {
            e.parse::<Prefix>(v, &key)
        } else {
            e.ip(v, &key).map(|addr| Prefix {
                addr,
                len: if addr.is_ipv4() { 32 } else { 128 },
            })
        };
        if let Some(p) = parsed {
            if let Some(first) = vips.first().map(|x: &Prefix| x.addr)
                && first.is_ipv4() != p.addr.is_ipv4()
            {
                e.at(
                    v.span(),
                    &key,
                    "all addresses of an instance must be of one family (use two instances for IPv4 and IPv6)",
                );
            } else if p.addr.is_ipv6() && version == Version::V2 {
                e.at(v.span(), &key, "VRRPv2 is IPv4 only (use version = 3)");
            }
            vips.push(p);
        }
    }
    if r.virtual_ipaddress.is_empty() {
        e.at(
            s.span(),
            format!("{k}.virtual_ipaddress"),
            "an instance needs at least one virtual address",
        );
    } else if r.virtual_ipaddress.len() > 255 {
        e.at(
            s.span(),
            format!("{k}.virtual_ipaddress"),
            "at most 255 addresses fit in an advertisement",
        );
    }
    let v6 = vips.first().is_some_and(|p| p.addr.is_ipv6());
    let family = |e: &mut Errs, v: &S<String>, key: &str| {
        let a = e.ip(v, key)?;
        if a.is_ipv6() != v6 && !vips.is_empty() {
            e.at(v.span(), key, "address family differs from the virtual addresses'");
            return None;
        }
        Some(a)
    };
    let unicast_src_ip = r
        .unicast_src_ip
        .as_ref()
        .and_then(|v| family(e, v, &format!("{k}.unicast_src_ip")));
    let unicast_peers = r
        .unicast_peer
        .iter()
        .enumerate()
        .filter_map(|(j, v)| family(e, v, &format!("{k}.unicast_peer[{j}]")))
        .collect();
    let preempt = !r.nopreempt.as_ref().is_some_and(|v| *v.get_ref());
    let preempt_delay = r
        .preempt_delay
        .as_ref()
        .and_then(|v| seconds(e, v, &format!("{k}.preempt_delay"), 0.0, 1000.0))
        .unwrap_or_default();
    if priority == 255 && !preempt {
        if let Some(v) = &r.nopreempt {
            e.at(
                v.span(),
                format!("{k}.nopreempt"),
                "the address owner (priority 255) always preempts",
            );
        }
    }
    let secs = |e: &mut Errs, v: &Option<S<i64>>, name: &str, lo, hi, def| {
        v.as_ref()
            .and_then(|v| e.int::<u64>(v, &format!("{k}.{name}"), lo, hi))
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(def))
    };
    let garp_master_delay = secs(e, &r.garp_master_delay, "garp_master_delay", 0, 1000, 5);
    let garp_master_refresh = secs(e, &r.garp_master_refresh, "garp_master_refresh", 0, 86400, 0);
    let garp_master_repeat = r
        .garp_master_repeat
        .as_ref()
        .and_then(|v| e.int::<u32>(v, &format!("{k}.garp_master_repeat"), 1, 1000))
        .unwrap_or(5);
    let garp_master_refresh_repeat = r
        .garp_master_refresh_repeat
        .as_ref()
        .and_then(|v| e.int::<u32>(v, &format!("{k}.garp_master_refresh_repeat"), 1, 1000))
        .unwrap_or(1);
    let track_interfaces: Vec<Track> = r
        .track_interface
        .iter()
        .enumerate()
        .filter_map(|(j, v)| track(e, v, &format!("{k}.track_interface[{j}]")))
        .collect();
    let mut track_scripts = Vec::new();
    for (j, v) in r.track_script.iter().enumerate() {
        let key = format!("{k}.track_script[{j}]");
        if let Some(t) = track(e, v, &key) {
            if !scripts.contains(&t.name) {
                e.at(v.span(), &key, format!("no vrrp_script named '{}'", t.name));
            }
            track_scripts.push(t);
        }
    }
    let notify = notify(
        e,
        &k,
        [
            (&r.notify_master, "notify_master"),
            (&r.notify_backup, "notify_backup"),
            (&r.notify_fault, "notify_fault"),
            (&r.notify_stop, "notify_stop"),
            (&r.notify, "notify"),
        ],
    );
    let use_vmac = match r.use_vmac.as_ref().map(|v| (v, v.get_ref())) {
        None | Some((_, toml::Value::Boolean(false))) => None,
        Some((_, toml::Value::Boolean(true))) => Some(format!("vrrp.{}", vrid.unwrap_or(0))),
        Some((v, toml::Value::String(n))) => {
            let ok = !n.is_empty()
                && n.len() <= 15
                && n != "."
                && n != ".."
                && !n.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
            if !ok {
                e.at(
                    v.span(),
                    format!("{k}.use_vmac"),
                    format!("'{n}' is not an interface name (1 to 15 characters, no '/', ':' or spaces)"),
                );
            } else if *n == interface {
                e.at(
                    v.span(),
                    format!("{k}.use_vmac"),
                    "must differ from the instance's interface",
                );
            }
            Some(n.clone())
        }
        Some((v, _)) => {
            e.at(
                v.span(),
                format!("{k}.use_vmac"),
                "expected true, false or an interface name",
            );
            None
        }
    };
    let checksum_form = match r.checksum_pseudo_header.as_ref().map(|v| *v.get_ref()) {
        Some(false) => ChecksumForm::Plain,
        _ => ChecksumForm::Pseudo,
    };
    if e.list.len() != before {
        return None;
    }
    Some(VrrpInstance {
        name,
        start_master,
        interface,
        vrid: vrid?,
        priority,
        version,
        advert_int_cs,
        vips,
        unicast_src_ip,
        unicast_peers,
        preempt,
        preempt_delay,
        accept: r.accept.as_ref().is_some_and(|v| *v.get_ref()),
        garp_master_delay,
        garp_master_repeat,
        garp_master_refresh,
        garp_master_refresh_repeat,
        use_vmac,
        vmac_xmit_base: r.vmac_xmit_base.as_ref().is_some_and(|v| *v.get_ref()),
        track_interfaces,
        track_scripts,
        notify,
        checksum_form,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, parse};
    use super::*;

    fn errs(text: &str) -> Vec<ConfigError> {
        parse(text, "t.toml").expect_err("should be refused").0
    }

    const GOOD: &str = r#"
[[vrrp_script]]
name = "chk"
script = "/bin/true --quiet"
interval = 0.5
weight = -20
fall = 2

[[vrrp_instance]]
name = "VI_1"
state = "MASTER"
interface = "eth0"
virtual_router_id = 51
priority = 150
advert_int = 0.01
virtual_ipaddress = ["198.18.5.100", "198.18.5.101/24"]
unicast_peer = ["198.18.5.2"]
preempt_delay = 2.5
track_interface = ["eth1", { name = "eth2", weight = -10 }]
track_script = ["chk"]
notify_master = "/usr/local/bin/up"

[[vrrp_instance]]
name = "VI_6"
interface = "eth0"
virtual_router_id = 52
virtual_ipaddress = ["2001:2:0:5::100"]
nopreempt = true

[[vrrp_sync_group]]
name = "G"
group = ["VI_1", "VI_6"]
"#;

    #[test]
    fn keepalived_keys_resolve_with_defaults() {
        let c = parse(GOOD, "t").unwrap_or_else(|e| panic!("{e}"));
        let v = &c.vrrp;
        let a = &v.instances[0];
        assert!(a.start_master);
        assert_eq!(
            (a.vrid, a.priority, a.version, a.advert_int_cs),
            (51, 150, Version::V3, 1)
        );
        assert_eq!(a.vips[0].to_string(), "198.18.5.100/32");
        assert_eq!(a.vips[1].to_string(), "198.18.5.101/24");
        assert_eq!(a.preempt_delay, Duration::from_millis(2500));
        assert_eq!(
            a.track_interfaces[1],
            Track {
                name: "eth2".into(),
                weight: Some(-10)
            }
        );
        assert_eq!(a.notify.master.as_deref(), Some("/usr/local/bin/up"));
        assert_eq!((a.garp_master_delay, a.garp_master_repeat), (Duration::from_secs(5), 5));
        assert_eq!(a.checksum_form, ChecksumForm::Pseudo);
        let b = &v.instances[1];
        assert!(!b.preempt && b.is_ipv6() && !b.start_master);
        assert_eq!((b.priority, b.advert_int_cs), (100, 100));
        assert_eq!(v.sync_groups[0].instances, vec![0, 1]);
        let s = &v.scripts[0];
        assert_eq!(s.argv, vec!["/bin/true", "--quiet"]);
        assert_eq!(
            (s.interval, s.timeout, s.weight, s.rise, s.fall),
            (Duration::from_millis(500), Duration::from_millis(500), -20, 1, 2)
        );
    }

    const I: &str = "[[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"198.18.5.100\"]\n";

    #[test]
    fn use_vmac_default_name_given_name_and_bad_name() {
        let c = parse(&format!("{I}use_vmac = true\n"), "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.vrrp.instances[0].use_vmac.as_deref(), Some("vrrp.51"));
        assert!(!c.vrrp.instances[0].vmac_xmit_base);
        let c =
            parse(&format!("{I}use_vmac = \"vm1\"\nvmac_xmit_base = true\n"), "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.vrrp.instances[0].use_vmac.as_deref(), Some("vm1"));
        assert!(c.vrrp.instances[0].vmac_xmit_base);
        let c = parse(&format!("{I}use_vmac = false\n"), "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.vrrp.instances[0].use_vmac, None);
        for bad in ["\"a/b\"", "\"much-too-long-name\"", "3"] {
            let e = errs(&format!("{I}use_vmac = {bad}\n"));
            assert!(e.iter().any(|e| e.key.ends_with("use_vmac")), "{bad}: {e:?}");
        }
    }

    #[test]
    fn bad_vrrp_configs_name_key_reason_and_line() {
        let bad: &[(String, &str, &str, usize)] = &[
            (
                I.replace("= 51", "= 0"),
                "vrrp_instance[0].virtual_router_id",
                "out of range",
                4,
            ),
            (
                format!("{I}priority = 300\n"),
                "vrrp_instance[0].priority",
                "out of range",
                6,
            ),
            (format!("{I}version = 4\n"), "vrrp_instance[0].version", "not 2 or 3", 6),
            (
                format!("{I}advert_int = 41\n"),
                "vrrp_instance[0].advert_int",
                "out of range",
                6,
            ),
            (
                format!("{I}advert_int = 0.001\n"),
                "vrrp_instance[0].advert_int",
                "out of range",
                6,
            ),
            (
                format!("{I}version = 2\nadvert_int = 0.5\n"),
                "vrrp_instance[0].advert_int",
                "whole seconds",
                7,
            ),
            (
                format!("{I}state = \"LEADER\"\n"),
                "vrrp_instance[0].state",
                "not MASTER or BACKUP",
                6,
            ),
            (
                I.replace("198.18.5.100", "198.18.5.300"),
                "vrrp_instance[0].virtual_ipaddress[0]",
                "not an IP address",
                5,
            ),
            (
                I.replace("\"198.18.5.100\"", "\"198.18.5.100\", \"2001:2::1\""),
                "vrrp_instance[0].virtual_ipaddress[1]",
                "one family",
                5,
            ),
            (
                format!("{}version = 2\n", I.replace("198.18.5.100", "2001:2::1")),
                "vrrp_instance[0].virtual_ipaddress[0]",
                "IPv4 only",
                5,
            ),
            (
                format!("{I}unicast_peer = [\"2001:2::2\"]\n"),
                "vrrp_instance[0].unicast_peer[0]",
                "family differs",
                6,
            ),
            (
                format!("{I}track_script = [\"nope\"]\n"),
                "vrrp_instance[0].track_script[0]",
                "no vrrp_script named 'nope'",
                6,
            ),
            (
                format!("{I}track_interface = [{{ name = \"eth1\", weight = 300 }}]\n"),
                "vrrp_instance[0].track_interface[0]",
                "out of range",
                6,
            ),
            (
                format!("{I}priority = 255\nnopreempt = true\n"),
                "vrrp_instance[0].nopreempt",
                "always preempts",
                7,
            ),
            (
                format!("{I}notify_master = \" \"\n"),
                "vrrp_instance[0].notify_master",
                "empty script",
                6,
            ),
            (
                format!("{I}{}", I.replace("\"A\"", "\"B\"")),
                "vrrp_instance[1].virtual_router_id",
                "used twice",
                9,
            ),
            (format!("{I}{I}"), "vrrp_instance[1].name", "declared twice", 7),
            (
                format!("{I}[[vrrp_sync_group]]\nname = \"G\"\ngroup = [\"A\", \"Z\"]\n"),
                "vrrp_sync_group[0].group",
                "no vrrp_instance named 'Z'",
                8,
            ),
            (
                "[[vrrp_script]]\nname = \"s\"\nscript = \"\"\n".to_string(),
                "vrrp_script[0].script",
                "empty script",
                3,
            ),
            (
                "[[vrrp_script]]\nname = \"s\"\nscript = \"x\"\ninterval = \"1s\"\n".to_string(),
                "vrrp_script[0].interval",
                "want seconds",
                4,
            ),
        ];
        for (text, key, reason, line) in bad {
            let e = errs(text);
            assert!(
                e.iter()
                    .any(|x| x.key == *key && x.reason.contains(reason) && x.line == Some(*line)),
                "for {text:?} wanted {key} / {reason} / line {line}, got {e:#?}"
            );
        }
    }

    #[test]
    fn vrrp_errors_come_together_with_the_others() {
        let e = errs(&format!(
            "[global]\nworkers = 0\n{}",
            I.replace("= 51", "= 256").replace("198.18.5.100", "x")
        ));
        assert_eq!(e.len(), 3, "{e:#?}");
        let e = errs(
            "[[vrrp_instance]]\nname = \"A\"\ninterface = \"eth0\"\nvirtual_router_id = 1\nvirtual_ipaddress = [\"198.18.5.1\"]\nunknown = 1\n",
        );
        assert!(e[0].reason.contains("unknown field"), "{e:?}");
        assert_eq!(e[0].line, Some(6));
    }
}
