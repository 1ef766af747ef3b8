//! Real-server preparation for DR and TUN services (`xvs realserver`), in the current namespace.
//!
//! DR and TUN real servers receive packets addressed to the VIP, so the VIP goes on `lo` and the host
//! must neither answer ARP for it on its wire (`arp_ignore=1`) nor use it as an ARP source
//! (`arp_announce=2`), or it would steal the VIP from the director. TUN additionally needs IP-in-IP
//! decapsulation (an outer IPv4 or IPv6 header); this kernel has no ipip or ip6_tunnel module, so a
//! tc ingress BPF program (`bpf/tun_decap.c`) strips the outer header.

use std::io;
use std::net::IpAddr;
use std::process::Command;

/// Preference and handle of our tc filter, so that `clear` removes exactly it.
const TC_PREF: &str = "49";

/// Why preparing or clearing a real server failed.
#[derive(Debug, thiserror::Error)]
pub enum RealserverError {
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    /// A sysctl could not be written.
    #[error("sysctl {key}: {source}")]
    Sysctl { key: String, source: io::Error },
    /// The BPF object could not be staged.
    #[error("tun_decap BPF object: {0}")]
    Object(String),
}

fn cmd(argv: &[&str]) -> Result<String, RealserverError> {
    let line = argv.join(" ");
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| RealserverError::Command {
            cmd: line.clone(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RealserverError::Command {
            cmd: line,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn sysctl(key: &str, value: &str) -> Result<(), RealserverError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(path, value).map_err(|source| RealserverError::Sysctl {
        key: key.to_string(),
        source,
    })
}

/// The interface names in this namespace's IPv4 configuration, `all` and `default` included.
fn ipv4_conf_names() -> Vec<String> {
    std::fs::read_dir("/proc/sys/net/ipv4/conf")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

fn host_prefix(vip: &IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// Sets the ARP behaviour DR and TUN need on every interface (`arp_ignore=1`, `arp_announce=2`).
pub fn set_arp(on: bool) -> Result<(), RealserverError> {
    let (ignore, announce) = if on { ("1", "2") } else { ("0", "0") };
    for name in ipv4_conf_names() {
        sysctl(&format!("net.ipv4.conf.{name}.arp_ignore"), ignore)?;
        sysctl(&format!("net.ipv4.conf.{name}.arp_announce"), announce)?;
    }
    Ok(())
}

/// Prepares a DR real server: the VIPs on `lo` and the ARP sysctls.
pub fn dr(vips: &[IpAddr]) -> Result<(), RealserverError> {
    set_arp(true)?;
    for vip in vips {
        cmd(&["ip", "addr", "replace", &host_prefix(vip), "dev", "lo"])?;
    }
    Ok(())
}

/// Prepares a TUN real server: as [`dr`], plus IP-in-IP decapsulation on `dev`'s ingress.
pub fn tun(vips: &[IpAddr], dev: &str) -> Result<(), RealserverError> {
    dr(vips)?;
    // The decapsulated packet arrives on `dev` with the client as source; strict reverse-path
    // filtering would drop it where the client is not routed out of `dev`.
    for name in ["all", "default", dev] {
        sysctl(&format!("net.ipv4.conf.{name}.rp_filter"), "0")?;
    }
    attach_decap(dev)
}

/// Loads `bpf/tun_decap.c` as a tc clsact ingress filter on `dev` (replacing an earlier one).
pub fn attach_decap(dev: &str) -> Result<(), RealserverError> {
    let obj =
        crate::bpf::object("tun_decap").ok_or_else(|| RealserverError::Object("not built into this binary".into()))?;
    // Unique per call: threads of one process (the tests) attach concurrently.
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("xvs-tun_decap-{}-{seq}.o", std::process::id()));
    std::fs::write(&path, obj).map_err(|e| RealserverError::Object(e.to_string()))?;
    let path_s = path.to_string_lossy().into_owned();
    let res = cmd(&["tc", "qdisc", "replace", "dev", dev, "clsact"]).and_then(|_| {
        cmd(&[
            "tc", "filter", "replace", "dev", dev, "ingress", "pref", TC_PREF, "handle", "1", "bpf", "da", "obj",
            &path_s, "sec", "tc",
        ])
    });
    let _ = std::fs::remove_file(&path);
    res.map(drop)
}

/// Whether our decapsulation filter is attached to `dev`.
pub fn decap_attached(dev: &str) -> bool {
    cmd(&["tc", "filter", "show", "dev", dev, "ingress"])
        .map(|s| s.contains("tun_decap"))
        .unwrap_or(false)
}

/// Undoes [`dr`] / [`tun`]: removes the VIPs from `lo`, the filter from `dev`, and resets the ARP
/// sysctls to the kernel defaults (0) once no VIPs are left.
pub fn clear(vips: &[IpAddr], dev: Option<&str>) -> Result<(), RealserverError> {
    for vip in vips {
        // Already absent is what we want.
        let _ = cmd(&["ip", "addr", "del", &host_prefix(vip), "dev", "lo"]);
    }
    if let Some(dev) = dev {
        let _ = cmd(&["tc", "filter", "del", "dev", dev, "ingress", "pref", TC_PREF]);
    }
    set_arp(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefixes_are_single_addresses() {
        assert_eq!(host_prefix(&"198.18.0.12".parse().unwrap()), "198.18.0.12/32");
        assert_eq!(host_prefix(&"2001:2::12".parse().unwrap()), "2001:2::12/128");
    }

    #[test]
    fn decap_object_is_embedded() {
        let obj = crate::bpf::object("tun_decap").expect("build.rs compiles bpf/tun_decap.c");
        assert_eq!(&obj[..4], b"\x7fELF");
    }
}
