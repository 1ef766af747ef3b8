//! A small RAII toolkit for network namespaces: create, wire with veths and bridges, configure, run
//! commands inside, and remove everything on drop.
//!
//! Configuration goes through the `ip` tool (one `ip -n NS -batch -` per namespace and step), so every
//! change is a visible command that appears in the error when it fails. Only what `ip` cannot do
//! (sysctls, GRO, sockets of the lab clients) runs in a thread that entered the namespace with `setns`.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Where `ip netns add` mounts named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// What went wrong while building or using a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// A command could not be started at all.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn { cmd: String, source: io::Error },
    /// Entering a namespace or an operation inside it failed.
    #[error("{what} in namespace {ns}: {source}")]
    Inside {
        ns: String,
        what: String,
        source: io::Error,
    },
    /// A work thread inside a namespace panicked.
    #[error("work thread in namespace {0} panicked")]
    Panicked(String),
}

/// Result of namespace operations.
pub type Result<T, E = NetnsError> = std::result::Result<T, E>;

fn describe(argv: &[&str]) -> String {
    argv.join(" ")
}

/// Runs `argv` to completion, feeding `stdin`; success or the command line with its stderr.
pub fn run_cmd(argv: &[&str], stdin: Option<&str>) -> Result<Output> {
    let cmd = describe(argv);
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..])
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|source| NetnsError::Spawn {
        cmd: cmd.clone(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that exits early closes the pipe; its status and stderr tell why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| NetnsError::Spawn {
        cmd: cmd.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        let cmd = match stdin {
            Some(s) => format!("{cmd} <<< {}", s.trim_end().replace('\n', "; ")),
            None => cmd,
        };
        Err(NetnsError::Command {
            cmd,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A named network namespace, deleted (after killing every process inside) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    keep: bool,
}

impl Netns {
    /// Creates namespace `name` with `lo` up.
    pub fn create(name: &str) -> Result<Netns> {
        run_cmd(&["ip", "netns", "add", name], None)?;
        let ns = Netns {
            name: name.to_string(),
            keep: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on an existing namespace that is left in place when dropped.
    pub fn existing(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            keep: true,
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the namespace in place when this handle is dropped (`lab up` hands it to `lab down`).
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// Runs `ip -n NAME ARGS...` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        let out = run_cmd(&argv, None)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs several `ip` commands (one per line, without the leading `ip`) in one process.
    pub fn ip_batch(&self, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut script = lines.join("\n");
        script.push('\n');
        run_cmd(&["ip", "-n", &self.name, "-batch", "-"], Some(&script)).map(drop)
    }

    /// Runs `argv` inside the namespace (`ip netns exec`) to completion.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(argv);
        run_cmd(&full, None)
    }

    /// Starts `argv` inside the namespace; the child is killed when the returned guard drops.
    pub fn spawn(&self, argv: &[&str]) -> Result<NsChild> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(argv);
        let child = Command::new(full[0])
            .args(&full[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| NetnsError::Spawn {
                cmd: describe(&full),
                source,
            })?;
        Ok(NsChild { child: Some(child) })
    }

    /// Starts `argv` inside the namespace detached from this process (own session, no stdio): it
    /// outlives us and ends with the namespace's removal.
    pub fn spawn_detached(&self, argv: &[&str]) -> Result<u32> {
        use std::os::unix::process::CommandExt;
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(argv);
        let mut c = Command::new(full[0]);
        c.args(&full[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = c.spawn().map_err(|source| NetnsError::Spawn {
            cmd: describe(&full),
            source,
        })?;
        Ok(child.id())
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it opens live there.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        let path = Path::new(NETNS_DIR).join(&self.name);
        let name = self.name.clone();
        let handle = thread::spawn(move || -> Result<T> {
            let inside = |what: &str, source| NetnsError::Inside {
                ns: name.clone(),
                what: what.to_string(),
                source,
            };
            let file = File::open(&path).map_err(|e| inside("open", e))?;
            // SAFETY: the fd is a valid open namespace file for the duration of the call; setns
            // changes only this thread's namespace, and the thread ends with `f`.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(inside("setns", io::Error::last_os_error()));
            }
            f().map_err(|e| inside("work", e))
        });
        handle.join().map_err(|_| NetnsError::Panicked(self.name.clone()))?
    }

    /// Writes sysctls (`net.ipv4.ip_forward` style keys) of this namespace.
    pub fn sysctl(&self, pairs: &[(&str, &str)]) -> Result<()> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.run(move || {
            for (k, v) in &pairs {
                let path = format!("/proc/sys/{}", k.replace('.', "/"));
                std::fs::write(&path, v).map_err(|e| io::Error::new(e.kind(), format!("sysctl {k}={v}: {e}")))?;
            }
            Ok(())
        })
    }

    /// Reads one sysctl of this namespace.
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(move || Ok(std::fs::read_to_string(path)?.trim().to_string()))
    }

    /// Turns GRO on or off on `dev` (the ethtool ioctl: this machine has no ethtool binary).
    pub fn set_gro(&self, dev: &str, on: bool) -> Result<()> {
        let dev = dev.to_string();
        self.run(move || set_gro_here(&dev, on))
    }

    /// Process ids inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove(&self.name);
        }
    }
}

/// A child process inside a namespace, killed and reaped when dropped.
#[derive(Debug)]
pub struct NsChild {
    child: Option<Child>,
}

impl NsChild {
    /// The process id of `ip netns exec` (which execs the command, so it is the command's id).
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pids_in(name: &str) -> Vec<i32> {
    run_cmd(&["ip", "netns", "pids", name], None)
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process inside namespace `name` (each by its id) and deletes the namespace.
pub fn remove(name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut signal = libc::SIGTERM;
    loop {
        let pids = pids_in(name);
        if pids.is_empty() {
            break;
        }
        for p in pids {
            // SAFETY: kill has no memory effects; the ids were read just now from the namespace.
            unsafe { libc::kill(p, signal) };
        }
        if Instant::now() > deadline {
            signal = libc::SIGKILL;
        }
        thread::sleep(Duration::from_millis(20));
    }
    run_cmd(&["ip", "netns", "del", name], None).map(drop)
}

/// Names of the existing namespaces that start with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Removes namespaces named `{tag}{pid}-...` whose process `pid` is gone: what a run killed
/// before its drops ran (SIGKILL, a lost session) left behind. Returns the names removed.
pub fn remove_orphans(tag: &str) -> Vec<String> {
    list(tag)
        .into_iter()
        .filter(|n| {
            let digits: String = n[tag.len()..].chars().take_while(char::is_ascii_digit).collect();
            n[tag.len() + digits.len()..].starts_with('-')
                && digits
                    .parse::<u32>()
                    .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .filter(|n| remove(n).is_ok())
        .collect()
}

/// Creates a veth pair `a_dev` in `a` and `b_dev` in `b`, with `queues` RX and TX queues, both up.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str, queues: u16) -> Result<()> {
    let q = queues.max(1).to_string();
    run_cmd(
        &[
            "ip",
            "link",
            "add",
            a_dev,
            "netns",
            a.name(),
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b_dev,
            "netns",
            b.name(),
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ],
        None,
    )?;
    a.ip(&["link", "set", a_dev, "up"])?;
    b.ip(&["link", "set", b_dev, "up"])?;
    Ok(())
}

/// Sets GRO on `dev` in the calling thread's namespace with the legacy ethtool ioctl.
fn set_gro_here(dev: &str, on: bool) -> io::Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_SGRO: u32 = 0x2c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    if dev.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    let mut val = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: u32::from(on),
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut val,
        _pad: [0; 16],
    };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: plain socket creation; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `req` is a properly laid-out ifreq whose data pointer refers to `val`, both alive for
    // the call; the kernel reads and writes only those.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: fd was opened above and is not used afterwards.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(io::Error::new(err.kind(), format!("ethtool set gro {dev}: {err}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_of_dead_processes_are_removed_and_live_ones_kept() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        // A pid above any pid_max the kernel allows is never a live process.
        let dead = format!("xo4194305-{}", std::process::id());
        let live = format!("xo{}-t", std::process::id());
        let (d, l) = (Netns::create(&dead).unwrap(), Netns::create(&live).unwrap());
        let removed = remove_orphans("xo");
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!Path::new(NETNS_DIR).join(&dead).exists());
        assert!(Path::new(NETNS_DIR).join(&live).exists());
        drop((d, l));
    }

    #[test]
    fn failing_command_carries_command_and_stderr() {
        let e = run_cmd(&["ip", "link", "show", "dev", "xvs-no-such-if"], None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("ip link show dev xvs-no-such-if"), "{msg}");
        assert!(msg.to_lowercase().contains("not exist"), "{msg}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let e = run_cmd(&["/nonexistent/xvs-tool"], None).unwrap_err();
        assert!(matches!(e, NetnsError::Spawn { .. }), "{e}");
    }

    #[test]
    fn list_filters_by_prefix() {
        assert!(list("xvs-surely-no-namespace-has-this-prefix").is_empty());
    }
}
