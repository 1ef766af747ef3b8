//! Packet I/O shells: AF_XDP and AF_PACKET workers around the sans-IO pipeline, xvs's own XDP/tc
//! filter program, and next hops read from the kernel over rtnetlink.
//!
//! The shells are thin: a worker receives a batch, hands each frame to [`Process::process`] and
//! moves the frame where the verdict says. Ports are numbered in the order of
//! [`IoConfig::interfaces`].

pub mod afpacket;
pub mod afxdp;
pub mod netlink;
pub mod worker;
pub mod xdp;

use std::time::Instant;

use crate::pipeline::{Frame, Verdict};

pub use worker::{IoCounters, Workers};
pub use xdp::{FilterSet, XdpProgram};

/// The data plane as the I/O workers see it.
pub trait Process: Send {
    /// One frame: `frame` has `pipeline::HEADROOM` bytes of headroom before `frame.start`; the verdict says where it goes.
    fn process(&mut self, frame: &mut Frame<'_>, in_port: u16, now: Instant) -> Verdict;
    /// Called for every frame of a batch, in order, before `process` is called for each in the
    /// same order: a chance to start loading what processing them will need. `now` is the time
    /// `process` will be given.
    fn look_ahead(&mut self, _frame: &[u8], _now: Instant) {}
    /// Called between batches: pick up a new snapshot, expire connections, flush counters.
    fn between_batches(&mut self, now: Instant);
}

/// Which packet I/O backend to run (config `io`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoKind {
    /// AF_XDP, falling back to AF_PACKET where no AF_XDP socket can be bound.
    #[default]
    Auto,
    /// AF_XDP only.
    AfXdp,
    /// AF_PACKET (batched raw sockets) with a tc ingress filter.
    AfPacket,
}

/// How the XDP program is attached (config `xdp_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode where the driver has it, generic (skb) mode otherwise.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// What the I/O shells need to know; the lead's resolved configuration fills it.
#[derive(Clone, Debug)]
pub struct IoConfig {
    /// Interface names; the index in this list is the port number.
    pub interfaces: Vec<String>,
    /// Number of worker threads.
    pub workers: usize,
    /// Cores to pin the workers to; `None`: chosen (core 0 left free where there are enough cores).
    pub cores: Option<Vec<usize>>,
    /// Backend.
    pub io: IoKind,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Frames per RX/TX batch.
    pub batch: usize,
    /// UMEM frames per worker (AF_XDP).
    pub umem_frames: u32,
    /// Descriptors per ring (AF_XDP rx, tx, fill, completion); a power of two.
    pub ring_size: u32,
    /// Sleep of an idle worker after 1024 empty loops; `None`: only yield (pure busy polling).
    pub idle_sleep: Option<std::time::Duration>,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            interfaces: Vec::new(),
            workers: 1,
            cores: None,
            io: IoKind::Auto,
            xdp_mode: XdpMode::Auto,
            batch: 64,
            umem_frames: 8192,
            ring_size: 2048,
            idle_sleep: None,
        }
    }
}

/// Errors of the I/O shells. The doc comment of each variant is its message.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// An interface named in the configuration does not exist.
    #[error("interface {0} not found")]
    NoInterface(String),
    /// The BPF object was not built into this binary.
    #[error("BPF object {0} missing from the build")]
    NoObject(&'static str),
    /// A libbpf call failed.
    #[error("{what}: {err}")]
    Bpf {
        what: String,
        #[source]
        err: std::io::Error,
    },
    /// Another (not xvs's) XDP program is attached to the interface.
    #[error("interface {0} already has a foreign XDP program attached (id {1}); remove it first")]
    ForeignXdp(String, u32),
    /// Creating or binding an AF_XDP socket failed.
    #[error("AF_XDP socket on {iface} queue {queue}: {reason}")]
    Xsk { iface: String, queue: u32, reason: String },
    /// A system call failed.
    #[error("{what}: {err}")]
    Sys {
        what: String,
        #[source]
        err: std::io::Error,
    },
    /// The configuration asks for something impossible.
    #[error("bad I/O configuration: {0}")]
    Config(String),
}

impl IoError {
    pub(crate) fn sys(what: impl Into<String>) -> IoError {
        IoError::Sys {
            what: what.into(),
            err: std::io::Error::last_os_error(),
        }
    }
}

/// The ifindex of interface `name`.
pub fn ifindex(name: &str) -> Result<u32, IoError> {
    let c = std::ffi::CString::new(name).map_err(|_| IoError::NoInterface(name.into()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(IoError::NoInterface(name.into()))
    } else {
        Ok(i)
    }
}

/// Number of RX queues of interface `name`, asked over rtnetlink (sysfs would show the
/// namespace it was mounted in, not the caller's); 1 when unknown.
pub fn rx_queues(name: &str) -> u32 {
    netlink::Rtnl::open()
        .and_then(|mut n| n.links())
        .ok()
        .and_then(|l| l.into_iter().find(|l| l.name == name))
        .map_or(1, |l| l.rx_queues)
}
