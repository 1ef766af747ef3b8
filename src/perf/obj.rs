//! A loaded BPF object of the performance lab (`bpf/gen.c`, `bpf/sink.c`, `bpf/redir.c`): one
//! program, its maps by name, and attach helpers that undo themselves on drop.
//!
//! Why libbpf (as `io::xdp`): BTF map definitions and map relocations need its ELF loader.

use std::ffi::CString;
use std::os::fd::RawFd;

use libbpf_sys as bpf;

use super::GenError;

/// One program of one embedded object, loaded; closed on drop.
pub struct BpfObject {
    obj: *mut bpf::bpf_object,
    /// File descriptor of the loaded program.
    pub prog_fd: RawFd,
}

// SAFETY: the object pointer is only used through `&self`/drop; libbpf objects have no thread
// affinity, and the maps and programs are used through their file descriptors.
unsafe impl Send for BpfObject {}
// SAFETY: as above; every method only reads the pointer or passes fds to syscalls.
unsafe impl Sync for BpfObject {}

pub(crate) fn bpf_err(what: impl Into<String>, rc: i32) -> GenError {
    GenError::Sys {
        what: what.into(),
        err: std::io::Error::from_raw_os_error(rc.abs()),
    }
}

impl BpfObject {
    /// Opens `bpf/NAME.c`'s object and loads only program `prog`.
    pub fn load(name: &'static str, prog: &str) -> Result<BpfObject, GenError> {
        let elf = crate::bpf::object(name).ok_or(GenError::NoObject(name))?;
        // SAFETY: `elf` is a static byte slice that outlives the call; libbpf copies what it keeps.
        let obj = unsafe { bpf::bpf_object__open_mem(elf.as_ptr().cast(), elf.len() as _, std::ptr::null()) };
        if obj.is_null() {
            return Err(GenError::Sys {
                what: format!("open BPF object {name}"),
                err: std::io::Error::last_os_error(),
            });
        }
        let mut o = BpfObject { obj, prog_fd: -1 };
        let want = CString::new(prog).map_err(|_| GenError::Bad("program name has a NUL".into()))?;
        // SAFETY: `o.obj` is a live, opened object; iterating with a null start is documented.
        let mut p = unsafe { bpf::bpf_object__next_program(o.obj, std::ptr::null_mut()) };
        let mut found = false;
        while !p.is_null() {
            // SAFETY: `p` is a program of `o.obj`; its name is a NUL-terminated string it owns.
            let n = unsafe { std::ffi::CStr::from_ptr(bpf::bpf_program__name(p)) };
            let me = n == want.as_c_str();
            found |= me;
            // SAFETY: `p` belongs to the not yet loaded object.
            unsafe { bpf::bpf_program__set_autoload(p, me) };
            // SAFETY: as above.
            p = unsafe { bpf::bpf_object__next_program(o.obj, p) };
        }
        if !found {
            return Err(GenError::Bad(format!("BPF object {name} lacks program {prog}")));
        }
        // SAFETY: `o.obj` is a live, opened object.
        let rc = unsafe { bpf::bpf_object__load(o.obj) };
        if rc != 0 {
            return Err(bpf_err(format!("load BPF program {prog} (needs root or CAP_BPF)"), rc));
        }
        // SAFETY: `o.obj` is loaded and has program `want` (checked above).
        o.prog_fd = unsafe { bpf::bpf_program__fd(bpf::bpf_object__find_program_by_name(o.obj, want.as_ptr())) };
        Ok(o)
    }

    /// File descriptor of map `name`.
    pub fn map(&self, name: &str) -> Result<RawFd, GenError> {
        let c = CString::new(name).map_err(|_| GenError::Bad("map name has a NUL".into()))?;
        // SAFETY: `self.obj` is loaded; `c` is NUL-terminated; a null map is checked.
        let m = unsafe { bpf::bpf_object__find_map_by_name(self.obj, c.as_ptr()) };
        if m.is_null() {
            return Err(GenError::Bad(format!("BPF object lacks map {name}")));
        }
        // SAFETY: `m` is a map of the loaded object.
        Ok(unsafe { bpf::bpf_map__fd(m) })
    }
}

impl Drop for BpfObject {
    fn drop(&mut self) {
        // SAFETY: `self.obj` came from `bpf_object__open_mem` and is closed exactly once.
        unsafe { bpf::bpf_object__close(self.obj) };
    }
}

/// Writes `value` under `key` into array or hash map `fd`.
///
/// # Safety
/// `K` and `V` must have exactly the map's key and value sizes.
pub unsafe fn update<K, V>(fd: RawFd, key: &K, value: &V) -> Result<(), GenError> {
    // SAFETY: the caller guarantees the sizes; the pointers are valid for the call.
    let rc = unsafe { bpf::bpf_map_update_elem(fd, (key as *const K).cast(), (value as *const V).cast(), 0) };
    if rc != 0 {
        Err(bpf_err("update BPF map", rc))
    } else {
        Ok(())
    }
}

/// Sum over all CPUs of the `u64` at `key` of per-CPU array `fd`.
pub fn percpu_sum(fd: RawFd, key: u32) -> Result<u64, GenError> {
    let vals = percpu_values(fd, key)?;
    Ok(vals.iter().sum())
}

/// The per-CPU `u64` values at `key` of per-CPU array `fd` (a map of `u64` values).
pub fn percpu_values(fd: RawFd, key: u32) -> Result<Vec<u64>, GenError> {
    // SAFETY: the maps this is used on hold one u64 per CPU, 8 bytes as the kernel lays them out.
    unsafe { percpu_read::<u64>(fd, key) }
}

/// The values at `key` of per-CPU array `fd`, one `T` per possible CPU.
///
/// # Safety
/// `T` must be the map's value type, a multiple of 8 bytes (as the kernel lays per-CPU values out).
pub unsafe fn percpu_read<T: Copy + Default>(fd: RawFd, key: u32) -> Result<Vec<T>, GenError> {
    let mut vals = vec![T::default(); possible_cpus()?];
    // SAFETY: the caller guarantees the layout; `vals` has one value per possible CPU.
    let rc = unsafe { bpf::bpf_map_lookup_elem(fd, (&key as *const u32).cast(), vals.as_mut_ptr().cast()) };
    if rc != 0 {
        return Err(bpf_err("read per-CPU map", rc));
    }
    Ok(vals)
}

/// Writes `vals` (one per possible CPU) at `key` of per-CPU array `fd`.
///
/// # Safety
/// As [`percpu_read`].
pub unsafe fn percpu_write<T>(fd: RawFd, key: u32, vals: &[T]) -> Result<(), GenError> {
    if vals.len() != possible_cpus()? {
        return Err(GenError::Bad("per-CPU write: one value per possible CPU".into()));
    }
    // SAFETY: the caller guarantees the layout; `vals` has one value per possible CPU.
    let rc = unsafe { bpf::bpf_map_update_elem(fd, (&key as *const u32).cast(), vals.as_ptr().cast(), 0) };
    if rc != 0 {
        return Err(bpf_err("write per-CPU map", rc));
    }
    Ok(())
}

/// The kernel's count of possible CPUs (the length of a per-CPU map's value array).
pub fn possible_cpus() -> Result<usize, GenError> {
    // SAFETY: no arguments; returns the count or a negative error.
    let n = unsafe { bpf::libbpf_num_possible_cpus() };
    if n <= 0 {
        return Err(bpf_err("count possible CPUs", n));
    }
    Ok(n as usize)
}

/// A program attached to an interface through a BPF link (XDP, or tc ingress through tcx):
/// detached when the link's descriptor closes, on drop or when the process dies however it dies,
/// so that a killed sink or generator leaves no program behind on an interface (and no clsact
/// qdisc to create or remove).
pub struct BpfLink {
    fd: RawFd,
}

impl BpfLink {
    /// Attaches XDP program `prog_fd` to `ifindex`, native (driver) mode or generic.
    pub fn xdp(ifindex: u32, prog_fd: RawFd, native: bool) -> Result<BpfLink, GenError> {
        let mode = if native {
            bpf::XDP_FLAGS_DRV_MODE
        } else {
            bpf::XDP_FLAGS_SKB_MODE
        };
        Self::create(prog_fd, ifindex, bpf::BPF_XDP, mode, "XDP")
    }

    /// Attaches tc program `prog_fd` at the ingress of `ifindex` (tcx: kernel 6.6 or later).
    pub fn tc_ingress(ifindex: u32, prog_fd: RawFd) -> Result<BpfLink, GenError> {
        Self::create(prog_fd, ifindex, bpf::BPF_TCX_INGRESS, 0, "tcx ingress")
    }

    fn create(
        prog_fd: RawFd,
        ifindex: u32,
        attach: bpf::bpf_attach_type,
        flags: u32,
        what: &str,
    ) -> Result<BpfLink, GenError> {
        // SAFETY: bpf_link_create_opts is plain data; zero is its documented default.
        let mut opts: bpf::bpf_link_create_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of::<bpf::bpf_link_create_opts>() as _;
        opts.flags = flags;
        // SAFETY: `prog_fd` is a loaded program of the type `attach` takes; `opts` is sized and
        // outlives the call.
        let fd = unsafe { bpf::bpf_link_create(prog_fd, ifindex as i32, attach, &opts) };
        if fd < 0 {
            return Err(bpf_err(format!("attach {what} program to ifindex {ifindex}"), fd));
        }
        Ok(BpfLink { fd })
    }
}

impl Drop for BpfLink {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// The index of interface `name` in the current namespace.
pub fn ifindex(name: &str) -> Result<u32, GenError> {
    let c = CString::new(name).map_err(|_| GenError::Bad(format!("bad interface name {name:?}")))?;
    // SAFETY: `c` is NUL-terminated.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(GenError::Sys {
            what: format!("interface {name}"),
            err: std::io::Error::last_os_error(),
        });
    }
    Ok(i)
}
