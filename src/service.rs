//! The service table: the immutable snapshot of everything the workers need to forward.
//!
//! The control thread builds a [`ServiceTable`] from the resolved configuration (plus the kernel's
//! interfaces, routes and neighbours at run time) and publishes it; workers swap it in between
//! batches. Nothing here changes once built.

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;
use std::time::Duration;

use hashbrown::{HashMap, HashSet};

use crate::config::Config;
use crate::sched::{self, Scheduler};
use crate::stats::DropReason;
use crate::types::{Addr, Dest, Mac, Method, Prefix, Proto, SchedKind};

/// What the kernel-side filter must steal: services, FULLNAT local addresses, NAT real servers.
pub type Filter = (Vec<(Proto, Addr, u16)>, Vec<Addr>, Vec<(Proto, Addr, u16)>, Vec<Addr>);

/// Key of a virtual service: protocol, VIP and port.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SvcKey {
    pub proto: Proto,
    pub addr: Addr,
    pub port: u16,
}

impl std::hash::Hash for SvcKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u128(u128::from_ne_bytes(self.addr.0));
        h.write_u32(u32::from(self.port) << 8 | u32::from(self.proto.number()));
    }
}

/// One virtual service in a snapshot.
pub struct Service {
    pub name: String,
    pub key: SvcKey,
    pub method: Method,
    pub sched_kind: SchedKind,
    /// The scheduler as built for this snapshot; each worker forks its own copy.
    pub sched: Box<dyn Scheduler>,
    pub dests: Vec<Dest>,
    /// Persistence: template timeout and the prefix length applied to the client address.
    pub persistence: Option<(Duration, u8)>,
    /// FULLNAT local addresses.
    pub laddrs: Vec<Addr>,
    pub expire_nodest_conn: bool,
}

/// An interface xvs sends and receives on, numbered in configuration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub mac: Mac,
    pub addrs: Vec<Prefix>,
    pub mtu: u16,
}

impl Port {
    /// The port's first address of the family of `like`, used as the source of tunnels and ICMP errors.
    pub fn addr_like(&self, like: Addr) -> Option<Addr> {
        self.addrs
            .iter()
            .map(|p| Addr::from(p.addr))
            .find(|a| a.is_v4() == like.is_v4())
    }
}

/// Where a frame goes next at layer 2. Aligned to 8 so that copies of it (and of results that
/// carry it) are whole 8-byte moves that later loads can forward from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct Hop {
    pub port: u16,
    pub src: Mac,
    pub dst: Mac,
}

#[derive(Clone, Debug)]
struct FibRoute {
    /// Network bits of the prefix in the 128-bit (IPv4-mapped) space.
    net: u128,
    mask: u128,
    len: u8,
    port: u16,
    via: Option<Addr>,
}

/// Routes and neighbours: longest-prefix match, then the next hop's MAC.
#[derive(Clone, Debug, Default)]
pub struct Fib {
    routes: Vec<FibRoute>,
    neigh: HashMap<(u16, Addr), Mac>,
}

fn bits(a: Addr) -> u128 {
    u128::from_be_bytes(a.0)
}

fn mask_of(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl Fib {
    /// Adds a route; `prefix` in its own family's length (IPv4 /24 is /120 in the mapped space).
    pub fn add_route(&mut self, prefix: Prefix, port: u16, via: Option<IpAddr>) {
        let a = Addr::from(prefix.addr);
        let len = if a.is_v4() { prefix.len + 96 } else { prefix.len };
        let mask = mask_of(len);
        self.routes.push(FibRoute {
            net: bits(a) & mask,
            mask,
            len,
            port,
            via: via.map(Addr::from),
        });
        // Longest prefix first; among equals, the earliest added wins (stable sort).
        self.routes.sort_by_key(|r| std::cmp::Reverse(r.len));
    }

    pub fn add_neighbour(&mut self, port: u16, addr: Addr, mac: Mac) {
        self.neigh.insert((port, addr), mac);
    }

    /// The egress port and next-hop address for `dst`.
    pub fn route(&self, dst: Addr) -> Option<(u16, Addr)> {
        let d = bits(dst);
        self.routes
            .iter()
            .find(|r| d & r.mask == r.net)
            .map(|r| (r.port, r.via.unwrap_or(dst)))
    }

    pub fn neighbour(&self, port: u16, addr: Addr) -> Option<Mac> {
        self.neigh.get(&(port, addr)).copied()
    }
}

/// The immutable snapshot the workers forward with.
pub struct ServiceTable {
    pub services: Vec<Service>,
    index: HashMap<SvcKey, u32>,
    vips: HashSet<Addr>,
    laddrs: HashSet<Addr>,
    nat_dests: HashSet<SvcKey>,
    live_dests: HashSet<u32>,
    pub ports: Vec<Port>,
    pub fib: Fib,
    /// Increases with every snapshot published; workers compare it to know when to re-fork schedulers.
    pub generation: u64,
}

/// Stable real-server ids across snapshots: the same (service, address, port) keeps its id, so the
/// connection counters (`DestCounters`) follow the server through reloads.
#[derive(Default, Debug)]
pub struct DestIds {
    ids: StdHashMap<(SvcKey, Addr, u16), u32>,
}

impl DestIds {
    pub fn id(&mut self, svc: SvcKey, addr: Addr, port: u16) -> u32 {
        let next = self.ids.len() as u32;
        *self.ids.entry((svc, addr, port)).or_insert(next)
    }
}

/// A locally administered MAC for a port whose real MAC is unknown (offline replay): 02:58:56:00:00:NN.
pub fn synthetic_mac(port: u16) -> Mac {
    let [hi, lo] = port.to_be_bytes();
    Mac([0x02, 0x58, 0x56, 0x00, hi, lo])
}

impl ServiceTable {
    /// Builds a snapshot from a resolved configuration. `ports` are the interfaces with their MACs
    /// (from the system at run time, from the config or synthetic offline); `extra` routes and
    /// neighbours come from the kernel at run time.
    pub fn build(
        cfg: &Config,
        ports: Vec<Port>,
        extra_routes: &[(Prefix, u16, Option<IpAddr>)],
        extra_neigh: &[(u16, Addr, Mac)],
        ids: &mut DestIds,
        generation: u64,
    ) -> ServiceTable {
        let mut fib = Fib::default();
        for (i, p) in ports.iter().enumerate() {
            for a in &p.addrs {
                fib.add_route(*a, i as u16, None);
            }
        }
        let port_of = |name: &str| ports.iter().position(|p| p.name == name).map(|i| i as u16);
        for r in &cfg.routes {
            if let Some(port) = port_of(&r.interface) {
                fib.add_route(r.prefix, port, r.via);
            }
        }
        for &(prefix, port, via) in extra_routes {
            fib.add_route(prefix, port, via);
        }
        for &(port, addr, mac) in extra_neigh {
            fib.add_neighbour(port, addr, mac);
        }
        // Static neighbours from the file win over the kernel's.
        for n in &cfg.neighbours {
            if let Some(port) = port_of(&n.interface) {
                fib.add_neighbour(port, Addr::from(n.addr), n.mac);
            }
        }

        let mut t = ServiceTable {
            services: Vec::with_capacity(cfg.services.len()),
            index: HashMap::new(),
            vips: HashSet::new(),
            laddrs: HashSet::new(),
            nat_dests: HashSet::new(),
            live_dests: HashSet::new(),
            ports,
            fib,
            generation,
        };
        for vs in &cfg.services {
            let key = SvcKey {
                proto: vs.proto,
                addr: Addr::from(vs.vip),
                port: vs.port,
            };
            let dests: Vec<Dest> = vs
                .real_servers
                .iter()
                .map(|rs| {
                    let addr = Addr::from(rs.addr);
                    Dest {
                        id: ids.id(key, addr, rs.port),
                        addr,
                        port: rs.port,
                        weight: rs.weight,
                    }
                })
                .collect();
            for d in &dests {
                t.live_dests.insert(d.id);
                if vs.method == crate::types::Method::Nat {
                    t.nat_dests.insert(SvcKey {
                        proto: vs.proto,
                        addr: d.addr,
                        port: d.port,
                    });
                }
            }
            let laddrs: Vec<Addr> = vs.laddrs.iter().map(|&a| Addr::from(a)).collect();
            t.laddrs.extend(laddrs.iter().copied());
            t.vips.insert(key.addr);
            t.index.insert(key, t.services.len() as u32);
            t.services.push(Service {
                name: vs.name.clone(),
                key,
                method: vs.method,
                sched_kind: vs.sched,
                sched: sched::build(vs.sched, &dests, &vs.sched_opts),
                dests,
                persistence: vs.persistence.as_ref().map(|p| (p.timeout, p.prefix_len)),
                laddrs,
                expire_nodest_conn: vs.expire_nodest_conn,
            });
        }
        t
    }

    /// Keeps recognising the return traffic of every NAT real server `cfg` lists, also those that
    /// health checks took out of this snapshot: their connections live on (as in IPVS, unless
    /// `expire_nodest_conn`), and their replies must still be translated back.
    pub fn keep_return_path(&mut self, cfg: &Config) {
        for vs in cfg.services.iter().filter(|vs| vs.method == crate::types::Method::Nat) {
            for rs in &vs.real_servers {
                self.nat_dests.insert(SvcKey {
                    proto: vs.proto,
                    addr: Addr::from(rs.addr),
                    port: rs.port,
                });
            }
        }
    }

    /// The service a packet to (proto, addr, port) belongs to.
    #[inline]
    pub fn service(&self, key: &SvcKey) -> Option<u32> {
        self.index.get(key).copied()
    }
    pub fn is_vip(&self, a: Addr) -> bool {
        self.vips.contains(&a)
    }
    pub fn is_laddr(&self, a: Addr) -> bool {
        self.laddrs.contains(&a)
    }
    /// Whether (proto, addr, port) is a real server of a NAT service: its packets are return traffic.
    pub fn is_nat_dest(&self, key: &SvcKey) -> bool {
        self.nat_dests.contains(key)
    }
    /// Whether a connection's real server is still in this snapshot.
    pub fn dest_alive(&self, id: u32) -> bool {
        self.live_dests.contains(&id)
    }

    /// Next hop for any destination: route, then neighbour.
    #[inline]
    pub fn hop(&self, dst: Addr) -> Result<Hop, DropReason> {
        let (port, via) = self.fib.route(dst).ok_or(DropReason::NoRoute)?;
        let src = self.ports.get(port as usize).ok_or(DropReason::NoRoute)?.mac;
        let mac = self.fib.neighbour(port, via).ok_or(DropReason::NoNeighbour)?;
        Ok(Hop { port, src, dst: mac })
    }

    /// Every (proto, VIP, port), local address and NAT real server: what the XDP program must steal;
    /// and the director's own addresses, to which real servers' packets are the kernel's.
    pub fn filter(&self) -> Filter {
        let svcs = self
            .services
            .iter()
            .map(|s| (s.key.proto, s.key.addr, s.key.port))
            .collect();
        let mut laddrs: Vec<Addr> = self.laddrs.iter().copied().collect();
        laddrs.sort();
        let mut nat: Vec<_> = self.nat_dests.iter().map(|k| (k.proto, k.addr, k.port)).collect();
        nat.sort();
        let locals = self
            .ports
            .iter()
            .flat_map(|p| p.addrs.iter().map(|a| Addr::from(a.addr)))
            .collect();
        (svcs, laddrs, nat, locals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Addr {
        Addr::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn fib_longest_prefix_and_gateway() {
        let mut f = Fib::default();
        f.add_route("198.18.1.1/24".parse().unwrap(), 0, None);
        f.add_route("198.18.2.1/24".parse().unwrap(), 1, None);
        f.add_route("0.0.0.0/0".parse().unwrap(), 0, Some("198.18.1.254".parse().unwrap()));
        f.add_route("2001:2:0:1::1/64".parse().unwrap(), 0, None);
        assert_eq!(f.route(a("198.18.1.7")), Some((0, a("198.18.1.7"))));
        assert_eq!(f.route(a("198.18.2.11")), Some((1, a("198.18.2.11"))));
        assert_eq!(f.route(a("198.19.4.4")), Some((0, a("198.18.1.254"))));
        assert_eq!(f.route(a("2001:2:0:1::9")), Some((0, a("2001:2:0:1::9"))));
        // An IPv4 default route never matches IPv6.
        assert_eq!(f.route(a("2001:2:0:9::9")), None);
    }

    #[test]
    fn dest_ids_are_stable() {
        let mut ids = DestIds::default();
        let k = SvcKey {
            proto: Proto::Tcp,
            addr: a("198.18.0.10"),
            port: 80,
        };
        let x = ids.id(k, a("198.18.2.11"), 80);
        let y = ids.id(k, a("198.18.2.12"), 80);
        assert_ne!(x, y);
        assert_eq!(ids.id(k, a("198.18.2.11"), 80), x);
    }
}
