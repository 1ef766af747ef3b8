//! xvs: a Linux Virtual Server director in user space.
//!
//! The data plane is sans-IO: [`pipeline::Pipeline::process`] takes a frame and `now` and returns a
//! [`pipeline::Verdict`]; the I/O shells (AF_XDP, AF_PACKET, pcap replay) move frames in and out.

pub mod bpf;
pub mod check;
pub mod config;
pub mod conn;
pub mod ctl;
pub mod import;
pub mod io;
pub mod lab;
pub mod perf;
pub mod pipeline;
pub mod realserver;
pub mod replay;
pub mod run;
pub mod sched;
pub mod service;
pub mod stats;
pub mod types;
pub mod vrrp;
pub mod wire;
pub mod xmit;
