//! The thin I/O around the instances: raw IP protocol 112 sockets (one receiving socket per
//! interface and family, one sending socket per instance bound to its source address), VIPs through
//! rtnetlink, gratuitous ARP and unsolicited neighbour advertisements through AF_PACKET, tracked
//! interfaces (rtnetlink link dumps) and tracked scripts (child processes watched through pidfds,
//! no thread), notify scripts. Everything waits in one `ppoll(2)` in [`Engine::poll`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::config::vrrp::{Notify, VrrpInstance};
use crate::io::netlink::Rtnl;
use crate::io::{self as xio, IoError};
use crate::types::Mac;
use crate::wire::arp::ArpRepr;
use crate::wire::{checksum, ip_proto, ipv4};

use super::instance::{Action, Counters, GarpConfig, Input, Instance, InstanceConfig, Received, State, validate};
use super::packet::{MCAST_V4, MCAST_V6, TTL, Version, VrrpRepr};

/// Why the engine cannot start.
#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    /// Interface lookup, socket or netlink setup failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The instance's interface has no address of the VIPs' family to send from.
    #[error(
        "vrrp_instance {instance}: interface {interface} has no {family} address to send from (set unicast_src_ip)"
    )]
    NoSource {
        instance: String,
        interface: String,
        family: &'static str,
    },
}

/// A mastership change, for the director's control thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The instance became master: serve these VIPs.
    Master { instance: String, vips: Vec<IpAddr> },
    /// The instance became backup: stop serving them.
    Backup { instance: String, vips: Vec<IpAddr> },
    /// The instance went to FAULT: stop serving them.
    Fault { instance: String, vips: Vec<IpAddr> },
    /// The instance stopped (shutdown).
    Stopped { instance: String, vips: Vec<IpAddr> },
}

/// What `xvs ctl` and the logs show about an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub state: State,
    /// Base priority.
    pub priority: u8,
    /// With tracking weights applied.
    pub effective_priority: u8,
    /// The current master's address, if known (ours when master).
    pub master: Option<IpAddr>,
    pub accept: bool,
    pub counters: Counters,
}

/// Counters of packets that reached no instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Adverts for a VRID no instance on that interface has.
    pub unknown_vrid: u64,
    /// Too short to hold a VRID, or an unparsable IP header.
    pub malformed: u64,
    pub send_errors: u64,
    pub netlink_errors: u64,
}

struct Slot {
    inst: Instance,
    cfg: VrrpInstance,
    /// Where the VIPs go and GARP/NA leave: the interface, or its virtual MAC macvlan.
    ifindex: u32,
    /// Where adverts are sent and received: the virtual MAC macvlan unless `vmac_xmit_base`.
    adv_ifindex: u32,
    mac: Option<Mac>,
    send: OwnedFd,
    group: Option<usize>,
    /// (own fault, weight delta) from tracking.
    track: (bool, i32),
}

struct RxSocket {
    fd: OwnedFd,
    ifindex: u32,
    v6: bool,
}

struct Script {
    name: String,
    argv: Vec<String>,
    interval: Duration,
    timeout: Duration,
    weight: i32,
    rise: u32,
    fall: u32,
    /// Up, as keepalived starts scripts (no `init_fail`); the first result decides at once, later
    /// ones flip it after `rise` or `fall` in a row.
    ok: bool,
    known: bool,
    streak: u32,
    next_run: Instant,
    running: Option<(Child, Option<OwnedFd>, Instant)>,
}

/// All VRRP instances of a configuration and their I/O.
pub struct Engine {
    slots: Vec<Slot>,
    rx: Vec<RxSocket>,
    groups: Vec<(String, Vec<usize>, Notify)>,
    scripts: Vec<Script>,
    rtnl: Rtnl,
    packet: Option<OwnedFd>,
    children: Vec<Child>,
    links_at: Instant,
    /// Link change notifications (RTMGRP_LINK): a tracked interface going down is seen at once
    /// rather than at the next periodic dump (every 0.5 s).
    link_events: Option<OwnedFd>,
    links_up: HashMap<String, bool>,
    started: bool,
    stopped: bool,
    counters: EngineCounters,
    buf: Vec<u8>,
    vmacs: Vmacs,
}

/// The virtual MAC interfaces this engine created, removed when it is dropped (also when
/// `Engine::new` fails half way), with the base interfaces' ARP settings it changed.
#[derive(Default)]
struct Vmacs {
    links: Vec<(String, u32)>,
    restore: Vec<(String, String)>,
}

impl Vmacs {
    fn remove(&mut self, rtnl: Option<&mut Rtnl>) {
        if self.links.is_empty() && self.restore.is_empty() {
            return;
        }
        let mut own = if rtnl.is_none() { Rtnl::open().ok() } else { None };
        let rtnl = rtnl.or(own.as_mut());
        if let Some(r) = rtnl {
            for (name, ifindex) in self.links.drain(..) {
                if let Err(e) = r.link_del(ifindex) {
                    tracing::warn!("VRRP: removing {name}: {e}");
                }
            }
        }
        for (path, old) in self.restore.drain(..) {
            let _ = std::fs::write(&path, old);
        }
    }
}

impl Drop for Vmacs {
    fn drop(&mut self) {
        self.remove(None);
    }
}

/// keepalived's virtual MAC: 00:00:5e:00:01:VRID for IPv4, 00:00:5e:00:02:VRID for IPv6.
pub fn virtual_mac(vrid: u8, v6: bool) -> Mac {
    Mac([0, 0, 0x5e, 0, if v6 { 2 } else { 1 }, vrid])
}

/// Creates (replacing a stale one left by a killed run) the macvlan `name` on `base` with the
/// virtual MAC, private mode, up, with keepalived's ARP settings: the macvlan answers ARP for the
/// VIPs on it (arp_ignore 1), the base interface no longer answers for them (arp_ignore 1,
/// arp_filter 1, restored at shutdown).
fn create_vmac(
    rtnl: &mut Rtnl,
    vmacs: &mut Vmacs,
    name: &str,
    base: u32,
    base_name: &str,
    mac: Mac,
) -> Result<u32, IoError> {
    if let Ok(old) = xio::ifindex(name) {
        tracing::info!("VRRP: replacing the existing interface {name}");
        rtnl.link_del(old)?;
    }
    rtnl.macvlan_add(name, base, mac, crate::io::netlink::MACVLAN_MODE_PRIVATE)?;
    let ifindex = xio::ifindex(name)?;
    vmacs.links.push((name.to_string(), ifindex));
    let conf = |dev: &str, key: &str| format!("/proc/sys/net/ipv4/conf/{dev}/{key}");
    for (key, v) in [("arp_ignore", "1"), ("accept_local", "1"), ("rp_filter", "0")] {
        let _ = std::fs::write(conf(name, key), v);
    }
    for (key, v) in [("arp_ignore", "1"), ("arp_filter", "1")] {
        let path = conf(base_name, key);
        if vmacs.restore.iter().any(|(p, _)| *p == path) {
            continue;
        }
        if let Ok(old) = std::fs::read_to_string(&path) {
            if std::fs::write(&path, v).is_ok() {
                vmacs.restore.push((path, old.trim().to_string()));
            }
        }
    }
    Ok(ifindex)
}

fn sys<T: Ord + Default + Copy>(r: T, what: &str) -> Result<T, IoError> {
    if r < T::default() {
        Err(IoError::sys(what))
    } else {
        Ok(r)
    }
}

fn setopt<T>(fd: RawFd, level: i32, name: i32, v: &T, what: &str) -> Result<(), IoError> {
    // SAFETY: `v` is a live value of the size passed.
    let r = unsafe { libc::setsockopt(fd, level, name, (v as *const T).cast(), std::mem::size_of::<T>() as u32) };
    sys(r, what).map(drop)
}

fn socket(domain: i32, ty: i32, proto: i32) -> Result<OwnedFd, IoError> {
    // SAFETY: plain syscall; the result is checked.
    let raw = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, proto) };
    let raw = sys(raw, "socket")?;
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn bind_device(fd: RawFd, name: &str) -> Result<(), IoError> {
    // SAFETY: the name is a live buffer of the length passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as u32,
        )
    };
    sys(r, format!("SO_BINDTODEVICE {name}").as_str()).map(drop)
}

fn sockaddr6(a: Ipv6Addr, scope: u32) -> libc::sockaddr_in6 {
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    s.sin6_family = libc::AF_INET6 as u16;
    s.sin6_addr.s6_addr = a.octets();
    s.sin6_scope_id = if a.is_unicast_link_local() || a.is_multicast() {
        scope
    } else {
        0
    };
    s
}

fn sockaddr4(a: Ipv4Addr) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as u16;
    s.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
    s
}

/// The receiving socket of one interface and family: joined to the VRRP group, TTL/hop limit and
/// (IPv6) destination reported.
fn rx_socket(ifname: &str, ifindex: u32, v6: bool) -> Result<OwnedFd, IoError> {
    let fd = socket(
        if v6 { libc::AF_INET6 } else { libc::AF_INET },
        libc::SOCK_RAW,
        i32::from(ip_proto::VRRP),
    )?;
    let raw = fd.as_raw_fd();
    bind_device(raw, ifname)?;
    if v6 {
        setopt(
            raw,
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVHOPLIMIT,
            &1i32,
            "IPV6_RECVHOPLIMIT",
        )?;
        setopt(
            raw,
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            &1i32,
            "IPV6_RECVPKTINFO",
        )?;
        let m = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: MCAST_V6.octets(),
            },
            ipv6mr_interface: ifindex,
        };
        setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &m, "join ff02::12")?;
    } else {
        let m = libc::ip_mreqn {
            imr_multiaddr: libc::in_addr {
                s_addr: u32::from_ne_bytes(MCAST_V4.octets()),
            },
            imr_address: libc::in_addr { s_addr: 0 },
            imr_ifindex: ifindex as i32,
        };
        setopt(raw, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &m, "join 224.0.0.18")?;
    }
    Ok(fd)
}

/// The sending socket of one instance: bound to its source address and interface, TTL/hop limit
/// 255, TOS/traffic class 0xc0 as keepalived, no multicast loopback.
fn tx_socket(ifname: &str, ifindex: u32, src: IpAddr) -> Result<OwnedFd, IoError> {
    let v6 = src.is_ipv6();
    let fd = socket(
        if v6 { libc::AF_INET6 } else { libc::AF_INET },
        libc::SOCK_RAW,
        i32::from(ip_proto::VRRP),
    )?;
    let raw = fd.as_raw_fd();
    bind_device(raw, ifname)?;
    // Nothing is read from it; keep what the kernel queues for it small.
    setopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &256i32, "SO_RCVBUF")?;
    let ttl = i32::from(TTL);
    match src {
        IpAddr::V4(a) => {
            setopt(raw, libc::IPPROTO_IP, libc::IP_TOS, &0xc0i32, "IP_TOS")?;
            setopt(raw, libc::IPPROTO_IP, libc::IP_TTL, &ttl, "IP_TTL")?;
            setopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &ttl, "IP_MULTICAST_TTL")?;
            setopt(
                raw,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_LOOP,
                &0i32,
                "IP_MULTICAST_LOOP",
            )?;
            let m = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: ifindex as i32,
            };
            setopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &m, "IP_MULTICAST_IF")?;
            let sa = sockaddr4(a);
            // SAFETY: `sa` is a valid sockaddr_in of the size passed.
            let r = unsafe {
                libc::bind(
                    raw,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            sys(r, &format!("bind {a}"))?;
        }
        IpAddr::V6(a) => {
            setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &0xc0i32, "IPV6_TCLASS")?;
            // A link-local address may still be tentative (DAD) when we start: bind anyway.
            setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, &1i32, "IPV6_FREEBIND")?;
            setopt(
                raw,
                libc::IPPROTO_IPV6,
                libc::IPV6_UNICAST_HOPS,
                &ttl,
                "IPV6_UNICAST_HOPS",
            )?;
            setopt(
                raw,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_HOPS,
                &ttl,
                "IPV6_MULTICAST_HOPS",
            )?;
            setopt(
                raw,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_LOOP,
                &0i32,
                "IPV6_MULTICAST_LOOP",
            )?;
            setopt(
                raw,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                &(ifindex as i32),
                "IPV6_MULTICAST_IF",
            )?;
            let sa = sockaddr6(a, ifindex);
            // SAFETY: `sa` is a valid sockaddr_in6 of the size passed.
            let r = unsafe {
                libc::bind(
                    raw,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as u32,
                )
            };
            sys(r, &format!("bind {a}"))?;
        }
    }
    Ok(fd)
}

/// A netlink socket subscribed to link changes (None if it cannot be had: the periodic dumps remain).
fn link_monitor() -> Option<OwnedFd> {
    let fd = socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE).ok()?;
    // SAFETY: all-zero is a valid sockaddr_nl.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = libc::RTMGRP_LINK as u32;
    // SAFETY: `sa` is a valid sockaddr_nl of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    (r == 0).then_some(fd)
}

/// A pidfd that becomes readable when `pid` exits (None on kernels without pidfd_open).
fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative result is a fresh descriptor owned by nobody else.
    (r >= 0).then(|| unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

fn spawn(argv: &[String], extra: &[&str]) -> std::io::Result<Child> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    Command::new(prog)
        .args(args)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// The unsolicited neighbour advertisement for `target` from `mac` (RFC 4861 7.2.6): to all nodes,
/// override flag, target link-layer address option.
fn unsolicited_na(mac: Mac, target: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut f = Vec::with_capacity(14 + 40 + 32);
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&32u16.to_be_bytes());
    f.extend_from_slice(&[ip_proto::ICMPV6, 255]);
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&all_nodes.octets());
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac.0);
    let sum = checksum::sum(&icmp) + checksum::pseudo_v6(target, all_nodes, ip_proto::ICMPV6, 32);
    icmp[2..4].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    f.extend_from_slice(&icmp);
    f
}

fn garp_frame(mac: Mac, vip: Ipv4Addr) -> Vec<u8> {
    let arp = ArpRepr::gratuitous(mac, vip);
    let mut f = vec![0u8; 14 + 28];
    f[..6].copy_from_slice(&Mac::BROADCAST.0);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    arp.emit(&mut f[14..]);
    f
}

impl Engine {
    /// Opens every socket and resolves every source address; instances start on the first poll.
    pub fn new(config: &Config) -> Result<Engine, VrrpError> {
        let v = &config.vrrp;
        let mut rtnl = Rtnl::open()?;
        let links = rtnl.links()?;
        let addrs = rtnl.addrs()?;
        let mut rx: Vec<RxSocket> = Vec::new();
        let mut slots = Vec::new();
        let mut vmacs = Vmacs::default();
        let now = Instant::now();
        for (n, c) in v.instances.iter().enumerate() {
            let ifindex = xio::ifindex(&c.interface)?;
            let v6 = c.is_ipv6();
            let (vip_ifindex, adv_ifindex, adv_name, mac) = match &c.use_vmac {
                Some(name) => {
                    let mac = virtual_mac(c.vrid, v6);
                    let vi = create_vmac(&mut rtnl, &mut vmacs, name, ifindex, &c.interface, mac)?;
                    if c.vmac_xmit_base {
                        (vi, ifindex, c.interface.clone(), Some(mac))
                    } else {
                        (vi, vi, name.clone(), Some(mac))
                    }
                }
                None => (
                    ifindex,
                    ifindex,
                    c.interface.clone(),
                    links.iter().find(|l| l.ifindex == ifindex).and_then(|l| l.mac),
                ),
            };
            let vip_addrs: Vec<IpAddr> = c.vips.iter().map(|p| p.addr).collect();
            // keepalived's choice: unicast_src_ip, else the interface's first address of the family
            // (IPv6: its link-local address), never one of our VIPs.
            let src = c.unicast_src_ip.or_else(|| {
                addrs
                    .iter()
                    .filter(|a| a.ifindex == ifindex && a.addr.is_ipv6() == v6 && !vip_addrs.contains(&a.addr))
                    .map(|a| a.addr)
                    .find(|a| match a {
                        IpAddr::V6(a) => a.is_unicast_link_local(),
                        IpAddr::V4(_) => true,
                    })
            });
            let Some(src) = src else {
                return Err(VrrpError::NoSource {
                    instance: c.name.clone(),
                    interface: c.interface.clone(),
                    family: if v6 { "IPv6 link-local" } else { "IPv4" },
                });
            };
            if !rx.iter().any(|r| r.ifindex == adv_ifindex && r.v6 == v6) {
                rx.push(RxSocket {
                    fd: rx_socket(&adv_name, adv_ifindex, v6)?,
                    ifindex: adv_ifindex,
                    v6,
                });
            }
            let send = tx_socket(&adv_name, adv_ifindex, src)?;
            let icfg = InstanceConfig {
                name: c.name.clone(),
                version: c.version,
                vrid: c.vrid,
                priority: c.priority,
                adver_int_cs: c.advert_int_cs,
                start_master: c.start_master,
                preempt: c.preempt,
                preempt_delay: c.preempt_delay,
                accept: c.accept,
                primary: src,
                vips: vip_addrs,
                unicast_peers: c.unicast_peers.clone(),
                garp: GarpConfig {
                    delay: c.garp_master_delay,
                    repeat: c.garp_master_repeat,
                    refresh: c.garp_master_refresh,
                    refresh_repeat: c.garp_master_refresh_repeat,
                },
                checksum_form: c.checksum_form,
            };
            let group = v.sync_groups.iter().position(|g| g.instances.contains(&n));
            slots.push(Slot {
                inst: Instance::new(icfg),
                cfg: c.clone(),
                ifindex: vip_ifindex,
                adv_ifindex,
                mac,
                send,
                group,
                track: (false, 0),
            });
        }
        let packet = if slots.is_empty() {
            None
        } else {
            Some(socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?)
        };
        let scripts = v
            .scripts
            .iter()
            .map(|s| Script {
                name: s.name.clone(),
                argv: s.argv.clone(),
                interval: s.interval,
                timeout: s.timeout,
                weight: s.weight,
                rise: s.rise,
                fall: s.fall,
                ok: true,
                known: false,
                streak: 0,
                next_run: now,
                running: None,
            })
            .collect();
        let groups = v
            .sync_groups
            .iter()
            .map(|g| (g.name.clone(), g.instances.clone(), g.notify.clone()))
            .collect();
        let mut e = Engine {
            slots,
            rx,
            groups,
            scripts,
            rtnl,
            packet,
            children: Vec::new(),
            links_at: now,
            link_events: link_monitor(),
            links_up: HashMap::new(),
            started: false,
            stopped: false,
            counters: EngineCounters::default(),
            buf: vec![0u8; 4096],
            vmacs,
        };
        // VIPs left behind by a previous run that was killed: a backup must not hold them.
        for i in 0..e.slots.len() {
            e.remove_vips(i);
        }
        Ok(e)
    }

    /// Engine-wide counters.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// The state of every instance.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.slots
            .iter()
            .map(|s| InstanceStatus {
                name: s.cfg.name.clone(),
                interface: s.cfg.interface.clone(),
                vrid: s.cfg.vrid,
                state: s.inst.state(),
                priority: s.cfg.priority,
                effective_priority: s.inst.effective_priority(),
                master: s.inst.master_addr(),
                accept: s.cfg.accept,
                counters: s.inst.counters().clone(),
            })
            .collect()
    }

    /// The earliest instant anything is due.
    fn next_deadline(&self) -> Option<Instant> {
        let inst = self.slots.iter().filter_map(|s| s.inst.next_deadline());
        let scripts = self.scripts.iter().map(|s| match &s.running {
            Some((_, _, started)) => *started + s.timeout,
            None => s.next_run,
        });
        let links = (!self.slots.is_empty()).then_some(self.links_at);
        inst.chain(scripts).chain(links).min()
    }

    /// Waits up to `max_wait` for packets, timers and scripts, handles them, and returns the
    /// mastership changes. The first call starts the instances.
    pub fn poll(&mut self, max_wait: Duration) -> Vec<Event> {
        let mut events = Vec::new();
        if self.stopped {
            return events;
        }
        if !self.started {
            self.started = true;
            let now = Instant::now();
            self.check_tracking(now, &mut events);
            for i in 0..self.slots.len() {
                self.input(i, now, Input::Startup, &mut events);
            }
        }
        let now = Instant::now();
        let wait = self
            .next_deadline()
            .map_or(max_wait, |d| d.saturating_duration_since(now).min(max_wait));
        let mut fds: Vec<libc::pollfd> = self
            .rx
            .iter()
            .map(|r| libc::pollfd {
                fd: r.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if let Some(fd) = &self.link_events {
            fds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for s in &self.scripts {
            if let Some((_, Some(fd), _)) = &s.running {
                fds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        // SAFETY: `fds` is a live array of the length passed; `ts` a valid timespec.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
        if n > 0 {
            let ready: Vec<usize> = (0..self.rx.len())
                .filter(|&r| fds[r].revents & libc::POLLIN != 0)
                .collect();
            for r in ready {
                self.receive(r, &mut events);
            }
            if let Some(fd) = &self.link_events
                && fds.get(self.rx.len()).is_some_and(|p| p.revents & libc::POLLIN != 0)
            {
                // Drain (bounded; non-blocking), then dump the links now.
                for _ in 0..64 {
                    // SAFETY: `buf` is writable for its length.
                    let n = unsafe { libc::recv(fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
                    if n <= 0 {
                        break;
                    }
                }
                self.links_at = Instant::now();
            }
        }
        let now = Instant::now();
        let scripts_changed = self.run_scripts(now);
        if now >= self.links_at || scripts_changed {
            self.check_tracking(now, &mut events);
        }
        for i in 0..self.slots.len() {
            let mut actions = Vec::new();
            self.slots[i].inst.handle_timeout(now, &mut actions);
            self.apply(i, now, actions, &mut events);
        }
        self.children
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        events
    }

    /// Sends priority 0 from every master, removes the VIPs, runs notify_stop; idempotent.
    pub fn shutdown(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        if self.stopped {
            return events;
        }
        self.stopped = true;
        let now = Instant::now();
        for i in 0..self.slots.len() {
            self.input(i, now, Input::Shutdown, &mut events);
        }
        for s in &mut self.scripts {
            if let Some((mut c, _, _)) = s.running.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.vmacs.remove(Some(&mut self.rtnl));
        events
    }

    fn input(&mut self, i: usize, now: Instant, input: Input<'_>, events: &mut Vec<Event>) {
        let mut actions = Vec::new();
        self.slots[i].inst.handle(now, input, &mut actions);
        self.apply(i, now, actions, events);
    }

    /// Carries out an instance's actions; sync-group members follow a transition (bounded: a
    /// group input on a member already in the wanted state does nothing).
    fn apply(&mut self, i: usize, now: Instant, actions: Vec<Action>, events: &mut Vec<Event>) {
        let mut follow = Vec::new();
        for a in actions {
            match a {
                Action::Send { priority } => self.send(i, priority),
                Action::AddVips => self.add_vips(i),
                Action::RemoveVips => self.remove_vips(i),
                Action::Garp { count } => self.garp(i, count),
                Action::Transition { from, to, reason } => {
                    let s = &self.slots[i];
                    tracing::info!(
                        instance = %s.cfg.name,
                        from = from.name(),
                        to = to.name(),
                        priority = s.inst.effective_priority(),
                        "VRRP {} {} -> {}: {reason}",
                        s.cfg.name,
                        from.name(),
                        to.name()
                    );
                    let (instance, vips, group) = (s.cfg.name.clone(), s.inst.config().vips.clone(), s.group);
                    match to {
                        State::Master => events.push(Event::Master { instance, vips }),
                        State::Backup => events.push(Event::Backup { instance, vips }),
                        State::Fault => events.push(Event::Fault { instance, vips }),
                        State::Initialize => {}
                    }
                    if to != State::Initialize {
                        self.notify(i, to.name());
                    }
                    if let Some(g) = group {
                        match to {
                            State::Master => follow.push((g, Input::GroupMaster)),
                            State::Backup if from == State::Master => follow.push((g, Input::GroupBackup)),
                            _ => {}
                        }
                    }
                }
                Action::Stopped => {
                    let s = &self.slots[i];
                    events.push(Event::Stopped {
                        instance: s.cfg.name.clone(),
                        vips: s.inst.config().vips.clone(),
                    });
                    self.notify(i, "STOP");
                }
            }
        }
        for (g, input) in follow {
            let members = self.groups.get(g).map(|x| x.1.clone()).unwrap_or_default();
            for m in members.into_iter().filter(|&m| m != i) {
                let want = if matches!(input, Input::GroupMaster) {
                    State::Backup
                } else {
                    State::Master
                };
                if self.slots.get(m).is_some_and(|s| s.inst.state() == want) {
                    self.input(m, now, input, events);
                }
            }
        }
    }

    fn send(&mut self, i: usize, priority: u8) {
        let s = &mut self.slots[i];
        let c = s.inst.config();
        let adv = VrrpRepr {
            version: c.version,
            vrid: c.vrid,
            priority,
            adver_int: match c.version {
                Version::V2 => c.adver_int_cs / 100,
                Version::V3 => c.adver_int_cs,
            },
            addrs: c.vips.clone(),
        };
        let src = c.primary;
        let dsts: Vec<IpAddr> = if c.unicast_peers.is_empty() {
            vec![if src.is_ipv6() {
                MCAST_V6.into()
            } else {
                MCAST_V4.into()
            }]
        } else {
            c.unicast_peers.clone()
        };
        let form = c.checksum_form;
        let mut b = vec![0u8; adv.buffer_len()];
        let mut ok = true;
        for dst in dsts {
            adv.emit(&mut b, src, dst, form);
            let fd = s.send.as_raw_fd();
            let r = match dst {
                IpAddr::V4(d) => {
                    let sa = sockaddr4(d);
                    // SAFETY: `b` and `sa` are live for the call, of the sizes passed.
                    unsafe {
                        libc::sendto(
                            fd,
                            b.as_ptr().cast(),
                            b.len(),
                            0,
                            (&sa as *const libc::sockaddr_in).cast(),
                            std::mem::size_of::<libc::sockaddr_in>() as u32,
                        )
                    }
                }
                IpAddr::V6(d) => {
                    let sa = sockaddr6(d, s.adv_ifindex);
                    // SAFETY: as above.
                    unsafe {
                        libc::sendto(
                            fd,
                            b.as_ptr().cast(),
                            b.len(),
                            0,
                            (&sa as *const libc::sockaddr_in6).cast(),
                            std::mem::size_of::<libc::sockaddr_in6>() as u32,
                        )
                    }
                }
            };
            if r < 0 {
                ok = false;
                tracing::debug!(
                    "VRRP {}: send to {dst}: {}",
                    s.cfg.name,
                    std::io::Error::last_os_error()
                );
            }
        }
        if ok {
            s.inst.count_sent(priority);
        } else {
            self.counters.send_errors += 1;
        }
    }

    fn add_vips(&mut self, i: usize) {
        let (ifindex, vips) = (self.slots[i].ifindex, self.slots[i].cfg.vips.clone());
        for p in vips {
            if let Err(e) = self.rtnl.addr_add(ifindex, p) {
                self.counters.netlink_errors += 1;
                tracing::warn!("VRRP {}: {e}", self.slots[i].cfg.name);
            }
        }
    }

    fn remove_vips(&mut self, i: usize) {
        let (ifindex, vips) = (self.slots[i].ifindex, self.slots[i].cfg.vips.clone());
        for p in vips {
            if let Err(e) = self.rtnl.addr_del(ifindex, p) {
                self.counters.netlink_errors += 1;
                tracing::warn!("VRRP {}: {e}", self.slots[i].cfg.name);
            }
        }
    }

    fn garp(&mut self, i: usize, count: u32) {
        let s = &self.slots[i];
        let (Some(mac), Some(pk)) = (s.mac, &self.packet) else {
            return;
        };
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_ifindex = s.ifindex as i32;
        ll.sll_halen = 6;
        for p in &s.cfg.vips {
            let frame = match p.addr {
                IpAddr::V4(a) => garp_frame(mac, a),
                IpAddr::V6(a) => unsolicited_na(mac, a),
            };
            ll.sll_addr[..6].copy_from_slice(&frame[..6]);
            ll.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
            for _ in 0..count {
                // SAFETY: `frame` and `ll` are live for the call, of the sizes passed.
                let r = unsafe {
                    libc::sendto(
                        pk.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&ll as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                if r < 0 {
                    self.counters.send_errors += 1;
                }
            }
        }
    }

    /// keepalived's notify calls: the state's own script, then the generic one with
    /// `INSTANCE|GROUP name state priority`; a group's scripts when its first member changes.
    fn notify(&mut self, i: usize, state: &str) {
        let s = &self.slots[i];
        let prio = s.inst.effective_priority().to_string();
        let mut runs: Vec<(String, Vec<String>)> = Vec::new();
        let mut add = |n: &Notify, kind: &str, name: &str| {
            let own = match state {
                "MASTER" => &n.master,
                "BACKUP" => &n.backup,
                "FAULT" => &n.fault,
                _ => &n.stop,
            };
            if let Some(cmd) = own {
                runs.push((cmd.clone(), vec![]));
            }
            if let Some(cmd) = &n.any {
                runs.push((cmd.clone(), vec![kind.into(), name.into(), state.into(), prio.clone()]));
            }
        };
        add(&s.cfg.notify, "INSTANCE", &s.cfg.name);
        if let Some(g) = s.group
            && let Some((gname, members, gn)) = self.groups.get(g)
            && members.first() == Some(&i)
        {
            add(gn, "GROUP", gname);
        }
        for (cmd, extra) in runs {
            let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            match spawn(&argv, &extra) {
                Ok(c) => self.children.push(c),
                Err(e) => tracing::warn!("VRRP notify `{cmd}`: {e}"),
            }
        }
    }

    fn receive(&mut self, r: usize, events: &mut Vec<Event>) {
        // Bounded per wakeup so that timers are not starved by a flood.
        for _ in 0..64 {
            let got = if self.rx[r].v6 {
                self.recv_v6(r)
            } else {
                self.recv_v4(r)
            };
            let Some((ttl, src, dst, len, off)) = got else { return };
            let now = Instant::now();
            let payload = self.buf[off..off + len].to_vec();
            let Some(&vrid) = payload.get(1) else {
                self.counters.malformed += 1;
                continue;
            };
            let (ifindex, v6) = (self.rx[r].ifindex, self.rx[r].v6);
            let Some(i) = self
                .slots
                .iter()
                .position(|s| s.adv_ifindex == ifindex && s.cfg.is_ipv6() == v6 && s.cfg.vrid == vrid)
            else {
                self.counters.unknown_vrid += 1;
                continue;
            };
            let rx = Received {
                ttl,
                src,
                dst,
                payload: &payload,
            };
            match validate(self.slots[i].inst.config(), &rx) {
                Ok(adv) => self.input(i, now, Input::Advert { src, adv: &adv }, events),
                Err(reason) => {
                    tracing::debug!("VRRP {}: advert from {src} rejected: {reason}", self.slots[i].cfg.name);
                    self.slots[i].inst.count_reject(reason);
                }
            }
        }
    }

    /// One IPv4 datagram: (ttl, src, dst, payload length, payload offset in `buf`).
    fn recv_v4(&mut self, r: usize) -> Option<(u8, IpAddr, IpAddr, usize, usize)> {
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.rx[r].fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                return None;
            }
            let b = &self.buf[..n as usize];
            match ipv4::Packet::new_checked(b) {
                Ok(p) if p.protocol() == ip_proto::VRRP && !p.is_fragment() => {
                    let len = p.payload().len();
                    return Some((p.ttl(), p.src_addr().into(), p.dst_addr().into(), len, p.header_len()));
                }
                _ => self.counters.malformed += 1,
            }
        }
    }

    /// One IPv6 datagram, with the hop limit and destination from control messages.
    fn recv_v6(&mut self, r: usize) -> Option<(u8, IpAddr, IpAddr, usize, usize)> {
        let mut cbuf = [0u64; 32];
        // SAFETY: all-zero is a valid sockaddr_in6.
        let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: self.buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr; the pointers are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: `msg` points at live buffers of the lengths given.
        let n = unsafe { libc::recvmsg(self.rx[r].fd.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return None;
        }
        let (mut hops, mut dst) = (None, None);
        // SAFETY: the CMSG macros walk the control buffer the kernel filled, within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                        hops = Some(std::ptr::read_unaligned(data.cast::<i32>()))
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                        let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                        dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let src = Ipv6Addr::from(from.sin6_addr.s6_addr);
        // Without the hop limit, the packet cannot be checked: report 0, which fails the TTL check.
        let ttl = hops.and_then(|h| u8::try_from(h).ok()).unwrap_or(0);
        Some((ttl, src.into(), dst.unwrap_or(MCAST_V6).into(), n as usize, 0))
    }

    /// Starts due scripts, reaps finished ones, kills those past their timeout.
    fn run_scripts(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for s in &mut self.scripts {
            let result = match &mut s.running {
                Some((child, _, started)) => match child.try_wait() {
                    Ok(Some(st)) => Some(st.success()),
                    Ok(None) if now >= *started + s.timeout => {
                        let _ = child.kill();
                        let _ = child.wait();
                        tracing::warn!("vrrp_script {}: timed out", s.name);
                        Some(false)
                    }
                    Ok(None) => None,
                    Err(_) => Some(false),
                },
                None => {
                    if now >= s.next_run {
                        match spawn(&s.argv, &[]) {
                            Ok(c) => {
                                let fd = pidfd(c.id());
                                s.running = Some((c, fd, now));
                            }
                            Err(e) => {
                                tracing::warn!("vrrp_script {}: {e}", s.name);
                                s.next_run = now + s.interval;
                                changed |= s.ok;
                                s.ok = false;
                                s.known = true;
                            }
                        }
                    }
                    None
                }
            };
            if let Some(good) = result {
                s.running = None;
                s.next_run = now + s.interval;
                let need = if good { s.rise } else { s.fall };
                if !s.known || good == s.ok {
                    s.streak = 0;
                } else {
                    s.streak = s.streak.saturating_add(1);
                }
                if !s.known || s.streak >= need {
                    if s.ok != good || !s.known {
                        changed = true;
                        tracing::info!("vrrp_script {}: {}", s.name, if good { "success" } else { "failed" });
                    }
                    s.known = true;
                    s.ok = good;
                    s.streak = 0;
                }
            }
        }
        changed
    }

    /// Recomputes every instance's tracked priority delta and fault from links and scripts, with
    /// sync-group fault propagation, and feeds changes to the instances.
    fn check_tracking(&mut self, now: Instant, events: &mut Vec<Event>) {
        if now >= self.links_at {
            self.links_at = now + Duration::from_millis(500);
            if let Ok(links) = self.rtnl.links() {
                self.links_up = links.into_iter().map(|l| (l.name, l.up)).collect();
            }
        }
        let mut own: Vec<(bool, i32)> = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let up = |name: &str| self.links_up.get(name).copied().unwrap_or(false);
            let mut fault = !up(&s.cfg.interface);
            let mut delta = 0i32;
            for t in &s.cfg.track_interfaces {
                match (up(&t.name), t.weight.unwrap_or(0)) {
                    (false, 0) => fault = true,
                    (false, w) if w < 0 => delta += w,
                    (true, w) if w > 0 => delta += w,
                    _ => {}
                }
            }
            for t in &s.cfg.track_scripts {
                let Some(sc) = self.scripts.iter().find(|x| x.name == t.name) else {
                    continue;
                };
                match (sc.ok, t.weight.unwrap_or(sc.weight)) {
                    (false, 0) => fault = true,
                    (false, w) if w < 0 => delta += w,
                    (true, w) if w > 0 => delta += w,
                    _ => {}
                }
            }
            own.push((fault, delta));
        }
        for i in 0..self.slots.len() {
            let group_fault = self.slots[i]
                .group
                .and_then(|g| self.groups.get(g))
                .is_some_and(|(_, m, _)| m.iter().any(|&m| own.get(m).is_some_and(|o| o.0)));
            let want = (own[i].0 || group_fault, own[i].1);
            if want != self.slots[i].track {
                self.slots[i].track = want;
                self.input(
                    i,
                    now,
                    Input::Tracked {
                        delta: want.1,
                        fault: want.0,
                    },
                    events,
                );
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Prefix;
    use crate::wire::{arp, ethernet};

    #[test]
    fn garp_matches_keepalived_capture() {
        let mac = Mac([0x2a, 0x98, 0x5e, 0x45, 0x90, 0xd9]);
        let f = garp_frame(mac, Ipv4Addr::new(198, 19, 10, 100));
        let want: Vec<u8> = "ffffffffffff2a985e4590d908060001080006040001 2a985e4590d9c6130a64ffffffffffffc6130a64"
            .replace(' ', "")
            .as_bytes()
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect();
        assert_eq!(f, want);
        let e = ethernet::Frame::new_checked(&f[..]).unwrap();
        assert!(arp::Packet::new_checked(e.payload()).is_ok());
    }

    #[test]
    fn unsolicited_na_is_well_formed() {
        let mac = Mac([2, 0, 0, 0, 5, 1]);
        let t: Ipv6Addr = "2001:2:0:5::100".parse().unwrap();
        let f = unsolicited_na(mac, t);
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        match p.net {
            Some(etherparse::NetSlice::Ipv6(ip)) => {
                assert_eq!(ip.header().hop_limit(), 255);
                assert_eq!(ip.header().payload_length(), 32);
            }
            _ => panic!("not IPv6"),
        }
        let icmp = &f[54..];
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let sum = checksum::sum(icmp) + checksum::pseudo_v6(t, all, ip_proto::ICMPV6, 32);
        assert_eq!(checksum::fold(sum), 0xffff);
        assert_eq!(icmp[0], 136);
        assert_eq!(&icmp[8..24], &t.octets());
        let _ = Prefix {
            addr: t.into(),
            len: 128,
        };
    }
}
