//! BPF programs that xvs loads into the kernel, compiled from `bpf/*.c` by build.rs.

include!(concat!(env!("OUT_DIR"), "/bpf_objects.rs"));

/// The ELF object compiled from `bpf/NAME.c`, if there is one.
pub fn object(name: &str) -> Option<&'static [u8]> {
    OBJECTS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
