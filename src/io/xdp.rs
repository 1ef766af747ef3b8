//! Loader for xvs's filter program (`bpf/xvs_xdp.c`): attaches it as XDP (AF_XDP backend) or as a
//! tc ingress classifier (AF_PACKET backend) and keeps its maps in step with the service table.
//!
//! Why libbpf's C API (through `libbpf-sys`, the same static libbpf that xsk-rs links): the object
//! needs ELF parsing, BTF map definitions and map relocations, which libbpf does correctly; raw
//! `bpf()` syscalls would mean re-implementing that loader.
//!
//! Each interface gets its own instance of the object, hence its own maps: the XSKMAP is indexed
//! by receive queue, and queue 0 of two interfaces needs two sockets.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::os::fd::RawFd;

use libbpf_sys as bpf;

use super::{IoError, XdpMode, ifindex};
use crate::types::{Addr, Proto};

/// Name of the XDP program in the object; also how a stale one left by a crashed xvs is recognised.
pub const XDP_PROG_NAME: &str = "xvs_xdp";
/// Name of the tc program in the object.
pub const TC_PROG_NAME: &str = "xvs_tc";
/// tc filter handle and priority xvs uses on clsact ingress (a stale filter there is replaced).
const TC_HANDLE: u32 = 0x7876;
const TC_PRIORITY: u32 = 0x7876;

/// `addrs` map flags; keep in step with `bpf/xvs_xdp.c`.
const ADDR_VIP: u8 = 1;
const ADDR_LADDR: u8 = 2;
const ADDR_NAT_RS: u8 = 4;
const ADDR_LOCAL: u8 = 8;

/// `struct xvs_l4_key`: address (16), port in network order (2), protocol (1), pad (1).
type L4Key = [u8; 20];

/// The frames the filter selects, in map-key form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSet {
    services: HashSet<L4Key>,
    nat_rs: HashSet<L4Key>,
    addrs: HashMap<[u8; 16], u8>,
}

fn l4_key(proto: Proto, addr: Addr, port: u16) -> L4Key {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&addr.0);
    k[16..18].copy_from_slice(&port.to_be_bytes());
    k[18] = proto.number();
    k
}

impl FilterSet {
    /// Keys for virtual services `(proto, vip, vport)`, FULLNAT local addresses and NAT real servers `(proto, rip, rport)`.
    /// `locals`: the director's own addresses, whose traffic from real servers is the kernel's.
    pub fn new(
        services: &[(Proto, Addr, u16)],
        laddrs: &[Addr],
        nat_rs: &[(Proto, Addr, u16)],
        locals: &[Addr],
    ) -> FilterSet {
        let mut s = FilterSet::default();
        for a in locals {
            *s.addrs.entry(a.0).or_default() |= ADDR_LOCAL;
        }
        for &(p, a, port) in services {
            s.services.insert(l4_key(p, a, port));
            *s.addrs.entry(a.0).or_default() |= ADDR_VIP;
        }
        for a in laddrs {
            *s.addrs.entry(a.0).or_default() |= ADDR_LADDR;
        }
        for &(p, a, port) in nat_rs {
            s.nat_rs.insert(l4_key(p, a, port));
            *s.addrs.entry(a.0).or_default() |= ADDR_NAT_RS;
        }
        s
    }
}

/// The map and program descriptors of one loaded object.
struct Object {
    obj: *mut bpf::bpf_object,
    prog_fd: RawFd,
    services: RawFd,
    nat_rs: RawFd,
    addrs: RawFd,
    xsks: RawFd,
}

fn bpf_err(what: impl Into<String>, rc: i32) -> IoError {
    IoError::Bpf {
        what: what.into(),
        err: std::io::Error::from_raw_os_error(rc.abs()),
    }
}

impl Object {
    /// Opens and loads a fresh instance of `xvs_xdp.o`, keeping only program `prog`.
    fn load(prog: &str) -> Result<Object, IoError> {
        let elf = crate::bpf::object("xvs_xdp").ok_or(IoError::NoObject("xvs_xdp"))?;
        // SAFETY: `elf` is a static byte slice that outlives the call; libbpf copies what it keeps.
        let obj = unsafe { bpf::bpf_object__open_mem(elf.as_ptr().cast(), elf.len() as _, std::ptr::null()) };
        if obj.is_null() {
            return Err(IoError::sys("open BPF object xvs_xdp"));
        }
        let mut o = Object {
            obj,
            prog_fd: -1,
            services: -1,
            nat_rs: -1,
            addrs: -1,
            xsks: -1,
        };
        for name in [XDP_PROG_NAME, TC_PROG_NAME] {
            let c = std::ffi::CString::new(name).expect("program names have no NUL");
            // SAFETY: `o.obj` is a live object; `c` is NUL-terminated.
            let p = unsafe { bpf::bpf_object__find_program_by_name(o.obj, c.as_ptr()) };
            if p.is_null() {
                return Err(IoError::Config(format!("BPF object lacks program {name}")));
            }
            // SAFETY: `p` belongs to the not yet loaded object `o.obj`.
            unsafe { bpf::bpf_program__set_autoload(p, name == prog) };
        }
        // SAFETY: `o.obj` is a live, opened object.
        let rc = unsafe { bpf::bpf_object__load(o.obj) };
        if rc != 0 {
            return Err(bpf_err(format!("load BPF program {prog} (needs root or CAP_BPF)"), rc));
        }
        let c = std::ffi::CString::new(prog).expect("program names have no NUL");
        // SAFETY: `o.obj` is loaded; the program exists (checked above).
        o.prog_fd = unsafe { bpf::bpf_program__fd(bpf::bpf_object__find_program_by_name(o.obj, c.as_ptr())) };
        let map_fd = |name: &CStr| -> Result<RawFd, IoError> {
            // SAFETY: `o.obj` is loaded; `name` is NUL-terminated; a null map is checked.
            let m = unsafe { bpf::bpf_object__find_map_by_name(o.obj, name.as_ptr()) };
            if m.is_null() {
                return Err(IoError::Config(format!("BPF object lacks map {name:?}")));
            }
            // SAFETY: `m` is a map of the loaded object.
            Ok(unsafe { bpf::bpf_map__fd(m) })
        };
        o.services = map_fd(c"services")?;
        o.nat_rs = map_fd(c"nat_rs")?;
        o.addrs = map_fd(c"addrs")?;
        o.xsks = map_fd(c"xsks_map")?;
        Ok(o)
    }

    /// Moves the maps from `old` to `new`: inserts first, then deletes what went away.
    fn apply(&self, old: &FilterSet, new: &FilterSet) -> Result<(), IoError> {
        let one = 1u8;
        for (fd, o, n) in [
            (self.services, &old.services, &new.services),
            (self.nat_rs, &old.nat_rs, &new.nat_rs),
        ] {
            for k in n.difference(o) {
                update(fd, k, &one)?;
            }
            for k in o.difference(n) {
                delete(fd, k);
            }
        }
        for (k, v) in &new.addrs {
            if old.addrs.get(k) != Some(v) {
                update(self.addrs, k, v)?;
            }
        }
        for k in old.addrs.keys().filter(|k| !new.addrs.contains_key(*k)) {
            delete(self.addrs, k);
        }
        Ok(())
    }
}

fn update<K, V>(fd: RawFd, k: &K, v: &V) -> Result<(), IoError> {
    // SAFETY: `k` and `v` point to values of the map's key and value sizes (checked by the layout
    // of `struct xvs_l4_key`/`xvs_addr_key` and `__u8`/`__u32` values in bpf/xvs_xdp.c).
    let rc = unsafe { bpf::bpf_map_update_elem(fd, (k as *const K).cast(), (v as *const V).cast(), 0) };
    if rc != 0 {
        Err(bpf_err("update BPF map", rc))
    } else {
        Ok(())
    }
}

fn delete<K>(fd: RawFd, k: &K) {
    // SAFETY: `k` points to a value of the map's key size. A missing key is not an error here.
    unsafe { bpf::bpf_map_delete_elem(fd, (k as *const K).cast()) };
}

impl Drop for Object {
    fn drop(&mut self) {
        // SAFETY: `self.obj` came from `bpf_object__open_mem` and is closed exactly once.
        unsafe { bpf::bpf_object__close(self.obj) };
    }
}

/// Where one instance is attached.
enum Hook {
    Xdp { ifindex: u32, flags: u32 },
    Tc { hook: bpf::bpf_tc_hook, created: bool },
}

struct Attached {
    iface: String,
    hook: Hook,
    obj: Object,
}

/// xvs's filter program attached to every configured interface; detached on drop.
pub struct XdpProgram {
    ports: Vec<Attached>,
    current: FilterSet,
}

// SAFETY: the raw `bpf_object` pointers are only used through `&mut self`/drop; libbpf objects
// have no thread affinity.
unsafe impl Send for XdpProgram {}

/// Name of the program with id `id`, if it still exists.
fn prog_name(id: u32) -> Option<String> {
    // SAFETY: plain syscall wrapper; a negative return is checked.
    let fd = unsafe { bpf::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return None;
    }
    // SAFETY: bpf_prog_info is plain old data; all-zero is a valid value.
    let mut info: bpf::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<bpf::bpf_prog_info>() as u32;
    // SAFETY: `info` is writable for `len` bytes; `fd` is a program fd we own and close below.
    let rc = unsafe { bpf::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return None;
    }
    let bytes: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Id of the XDP program attached to `ifindex` in mode `flags` (0: none).
pub fn attached_xdp_id(ifindex: u32, flags: u32) -> u32 {
    let mut id = 0u32;
    // SAFETY: `id` is a valid out pointer.
    let rc = unsafe { bpf::bpf_xdp_query_id(ifindex as i32, flags as i32, &mut id) };
    if rc != 0 { 0 } else { id }
}

/// Whether an XDP program named `xvs_xdp` is attached to interface `iface` (either mode).
pub fn xvs_xdp_attached(iface: &str) -> bool {
    let Ok(i) = ifindex(iface) else { return false };
    [bpf::XDP_FLAGS_SKB_MODE, bpf::XDP_FLAGS_DRV_MODE].into_iter().any(|f| {
        let id = attached_xdp_id(i, f);
        id != 0 && prog_name(id).as_deref() == Some(XDP_PROG_NAME)
    })
}

/// Removes an `xvs_xdp` program left on `ifindex` by an xvs that did not exit cleanly; refuses to
/// touch anybody else's program.
fn remove_stale_xdp(iface: &str, ifindex: u32) -> Result<(), IoError> {
    for flags in [bpf::XDP_FLAGS_SKB_MODE, bpf::XDP_FLAGS_DRV_MODE] {
        let id = attached_xdp_id(ifindex, flags);
        if id == 0 {
            continue;
        }
        if prog_name(id).as_deref() != Some(XDP_PROG_NAME) {
            return Err(IoError::ForeignXdp(iface.into(), id));
        }
        tracing::warn!(iface, id, "removing a stale xvs XDP program (xvs did not exit cleanly)");
        // SAFETY: plain netlink request; no pointers besides the null opts.
        let rc = unsafe { bpf::bpf_xdp_detach(ifindex as i32, flags, std::ptr::null()) };
        if rc != 0 {
            return Err(bpf_err(format!("detach stale XDP program from {iface}"), rc));
        }
    }
    Ok(())
}

impl XdpProgram {
    /// Loads the program and attaches it as XDP to every interface in `ifaces` (port order).
    pub fn attach(ifaces: &[String], mode: XdpMode) -> Result<XdpProgram, IoError> {
        let mut ports = Vec::with_capacity(ifaces.len());
        for iface in ifaces {
            let idx = ifindex(iface)?;
            remove_stale_xdp(iface, idx)?;
            let obj = Object::load(XDP_PROG_NAME)?;
            let tries: &[u32] = match mode {
                XdpMode::Native => &[bpf::XDP_FLAGS_DRV_MODE],
                XdpMode::Generic => &[bpf::XDP_FLAGS_SKB_MODE],
                XdpMode::Auto => &[bpf::XDP_FLAGS_DRV_MODE, bpf::XDP_FLAGS_SKB_MODE],
            };
            let mut last = 0;
            let mut done = None;
            for &f in tries {
                let flags = f | bpf::XDP_FLAGS_UPDATE_IF_NOEXIST;
                // SAFETY: `obj.prog_fd` is a loaded XDP program; opts may be null.
                last = unsafe { bpf::bpf_xdp_attach(idx as i32, obj.prog_fd, flags, std::ptr::null()) };
                if last == 0 {
                    done = Some(f);
                    break;
                }
            }
            let flags = done.ok_or_else(|| bpf_err(format!("attach XDP program to {iface}"), last))?;
            tracing::info!(
                iface,
                mode = if flags == bpf::XDP_FLAGS_DRV_MODE {
                    "native"
                } else {
                    "generic"
                },
                "attached xvs XDP program"
            );
            ports.push(Attached {
                iface: iface.clone(),
                hook: Hook::Xdp { ifindex: idx, flags },
                obj,
            });
        }
        Ok(XdpProgram {
            ports,
            current: FilterSet::default(),
        })
    }

    /// Loads the program and attaches it as a tc (clsact) ingress filter that drops the frames xvs
    /// serves, for the AF_PACKET backend. A stale filter of a crashed xvs (same handle) is replaced.
    pub fn attach_tc(ifaces: &[String]) -> Result<XdpProgram, IoError> {
        let mut ports = Vec::with_capacity(ifaces.len());
        for iface in ifaces {
            let idx = ifindex(iface)?;
            let obj = Object::load(TC_PROG_NAME)?;
            let hook = bpf::bpf_tc_hook {
                sz: std::mem::size_of::<bpf::bpf_tc_hook>() as _,
                ifindex: idx as i32,
                attach_point: bpf::BPF_TC_INGRESS,
                ..Default::default()
            };
            let mut h = hook;
            // SAFETY: `h` is a valid, sized hook description.
            let rc = unsafe { bpf::bpf_tc_hook_create(&mut h) };
            let created = rc == 0;
            if rc != 0 && rc != -libc::EEXIST {
                return Err(bpf_err(format!("create clsact qdisc on {iface}"), rc));
            }
            let mut opts = tc_opts();
            opts.prog_fd = obj.prog_fd;
            opts.flags = bpf::BPF_TC_F_REPLACE;
            // SAFETY: `h` and `opts` are valid, sized descriptions; prog_fd is a loaded tc program.
            let rc = unsafe { bpf::bpf_tc_attach(&h, &mut opts) };
            if rc != 0 {
                return Err(bpf_err(format!("attach tc filter to {iface}"), rc));
            }
            tracing::info!(iface, "attached xvs tc ingress filter");
            ports.push(Attached {
                iface: iface.clone(),
                hook: Hook::Tc { hook: h, created },
                obj,
            });
        }
        Ok(XdpProgram {
            ports,
            current: FilterSet::default(),
        })
    }

    /// Selects exactly these services, FULLNAT local addresses and NAT real servers from now on.
    pub fn set_filter(
        &mut self,
        services: &[(Proto, Addr, u16)],
        laddrs: &[Addr],
        nat_rs: &[(Proto, Addr, u16)],
        locals: &[Addr],
    ) -> Result<(), IoError> {
        let new = FilterSet::new(services, laddrs, nat_rs, locals);
        for p in &self.ports {
            p.obj.apply(&self.current, &new)?;
        }
        self.current = new;
        Ok(())
    }

    /// Points receive queue `queue` of port `port` at the AF_XDP socket `fd`.
    pub fn register_xsk(&self, port: usize, queue: u32, fd: RawFd) -> Result<(), IoError> {
        let p = self
            .ports
            .get(port)
            .ok_or_else(|| IoError::Config(format!("no port {port}")))?;
        let v = fd as u32;
        update(p.obj.xsks, &queue, &v)
    }

    /// Whether port `port` runs in native (driver) XDP mode.
    pub fn is_native(&self, port: usize) -> bool {
        matches!(self.ports.get(port).map(|p| &p.hook), Some(Hook::Xdp { flags, .. }) if *flags == bpf::XDP_FLAGS_DRV_MODE)
    }
}

fn tc_opts() -> bpf::bpf_tc_opts {
    bpf::bpf_tc_opts {
        sz: std::mem::size_of::<bpf::bpf_tc_opts>() as _,
        handle: TC_HANDLE,
        priority: TC_PRIORITY,
        ..Default::default()
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        for p in &mut self.ports {
            match &mut p.hook {
                Hook::Xdp { ifindex, flags } => {
                    // SAFETY: plain netlink request; opts may be null.
                    let rc = unsafe { bpf::bpf_xdp_detach(*ifindex as i32, *flags, std::ptr::null()) };
                    if rc != 0 {
                        tracing::warn!(iface = p.iface, rc, "detaching XDP program failed");
                    }
                }
                Hook::Tc { hook, created } => {
                    let opts = tc_opts();
                    // SAFETY: `hook` and `opts` are valid, sized descriptions.
                    unsafe { bpf::bpf_tc_detach(hook, &opts) };
                    if *created {
                        // SAFETY: as above; destroys the clsact qdisc this instance created.
                        unsafe { bpf::bpf_tc_hook_destroy(hook) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout_matches_the_c_struct() {
        let a = Addr::from_v4([198, 18, 0, 10]);
        let k = l4_key(Proto::Udp, a, 53);
        assert_eq!(&k[..16], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 10]);
        assert_eq!(&k[16..], &[0, 53, 17, 0]);
    }

    #[test]
    fn filter_set_merges_address_flags() {
        let vip = Addr::from_v4([198, 18, 0, 10]);
        let lip = Addr::from_v4([198, 18, 3, 1]);
        let s = FilterSet::new(
            &[(Proto::Tcp, vip, 80), (Proto::Udp, vip, 53)],
            &[lip, vip],
            &[(Proto::Tcp, lip, 8080)],
            &[Addr::from_v4([198, 18, 2, 1])],
        );
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.addrs[&vip.0], ADDR_VIP | ADDR_LADDR);
        assert_eq!(s.addrs[&lip.0], ADDR_LADDR | ADDR_NAT_RS);
        assert!(s.nat_rs.contains(&l4_key(Proto::Tcp, lip, 8080)));
        assert_eq!(s.addrs[&Addr::from_v4([198, 18, 2, 1]).0], ADDR_LOCAL);
    }

    /// Runs frame `f` through the loaded tc program: whether it would be dropped for xvs.
    fn steals(o: &Object, f: &[u8]) -> bool {
        let mut opts = bpf::bpf_test_run_opts {
            sz: std::mem::size_of::<bpf::bpf_test_run_opts>() as _,
            data_in: f.as_ptr().cast(),
            data_size_in: f.len() as u32,
            repeat: 1,
            ..Default::default()
        };
        // SAFETY: `opts` is sized; `f` outlives the call; no output buffers are given.
        let rc = unsafe { bpf::bpf_prog_test_run_opts(o.prog_fd, &mut opts) };
        assert_eq!(rc, 0, "BPF_PROG_TEST_RUN");
        opts.retval == 2 // TC_ACT_SHOT
    }

    /// An Ethernet + IPv4 frame around `l4` (protocol `proto`) with the given fragment word.
    fn v4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (20 + l4.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(l4);
        f
    }

    /// An Ethernet + IPv6 frame with a fragment header (offset in bytes, M flag) before `l4`.
    fn v6_fragment(src: [u8; 16], dst: [u8; 16], proto: u8, id: u32, offset: u16, more: bool, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((8 + l4.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[44, 64]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&[proto, 0]);
        f.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(l4);
        f
    }

    /// The filter follows a TCP/UDP datagram's fragments from its first one: the later fragments
    /// of a datagram xvs serves are stolen with it, any other fragment stays the kernel's.
    #[test]
    fn fragments_follow_their_first_fragment() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let o = Object::load(TC_PROG_NAME).expect("load the tc program");
        let (cip, vip, rip) = ([198, 18, 1, 2], [198, 18, 0, 10], [198, 18, 2, 11]);
        let set = FilterSet::new(
            &[(Proto::Udp, Addr::from_v4(vip), 53)],
            &[],
            &[(Proto::Udp, Addr::from_v4(rip), 5353)],
            &[],
        );
        o.apply(&FilterSet::default(), &set).unwrap();
        let udp = |sport: u16, dport: u16| {
            let mut h = [0u8; 16];
            h[..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[4..6].copy_from_slice(&3000u16.to_be_bytes());
            h
        };
        let later = [0x5au8; 16];
        const MF: u16 = 0x2000;
        // A later fragment before its first: the kernel's.
        assert!(!steals(&o, &v4_frame(cip, vip, 17, 7, 185, &later)));
        // The first fragment to the service, then its later ones (the last has MF clear).
        assert!(steals(&o, &v4_frame(cip, vip, 17, 7, MF, &udp(40000, 53))));
        assert!(steals(&o, &v4_frame(cip, vip, 17, 7, MF | 185, &later)));
        assert!(steals(&o, &v4_frame(cip, vip, 17, 7, 370, &later)));
        // Another datagram (identification) of the same pair, and one to a port that is no service.
        assert!(!steals(&o, &v4_frame(cip, vip, 17, 8, 185, &later)));
        assert!(!steals(&o, &v4_frame(cip, vip, 17, 9, MF, &udp(40000, 54))));
        assert!(!steals(&o, &v4_frame(cip, vip, 17, 9, 185, &later)));
        // Same identification, other protocol: not the same datagram; ICMP fragments stay the kernel's.
        assert!(!steals(&o, &v4_frame(cip, vip, 6, 7, 185, &later)));
        assert!(!steals(&o, &v4_frame(cip, vip, 1, 7, MF, &later)));
        // A NAT real server's fragmented reply.
        assert!(steals(&o, &v4_frame(rip, cip, 17, 300, MF, &udp(5353, 40000))));
        assert!(steals(&o, &v4_frame(rip, cip, 17, 300, 185, &later)));

        // IPv6: the same through a fragment header.
        let (c6, v6) = (
            "2001:2:0:1::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            "2001:2::10".parse::<std::net::Ipv6Addr>().unwrap().octets(),
        );
        let set6 = FilterSet::new(&[(Proto::Udp, Addr(v6), 53)], &[], &[], &[]);
        o.apply(&set, &set6).unwrap();
        assert!(!steals(&o, &v6_fragment(c6, v6, 17, 70000, 1448, false, &later)));
        assert!(steals(&o, &v6_fragment(c6, v6, 17, 70000, 0, true, &udp(40000, 53))));
        assert!(steals(&o, &v6_fragment(c6, v6, 17, 70000, 1448, false, &later)));
        assert!(!steals(&o, &v6_fragment(c6, v6, 17, 70001, 1448, false, &later)));
        // The IPv4 service is gone: a new datagram to it is the kernel's.
        assert!(!steals(&o, &v4_frame(cip, vip, 17, 10, MF, &udp(40000, 53))));
    }
}
