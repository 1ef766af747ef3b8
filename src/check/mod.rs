//! Health checks of the real servers, as keepalived's checkers do them: TCP connect, HTTP GET,
//! HTTPS GET (SSL_GET) and a check program (MISC_CHECK), each with keepalived's timing options.
//!
//! The control thread owns a [`HealthChecks`] and calls [`HealthChecks::poll`] in its loop; every
//! probe is a non-blocking socket or a child process waited on with poll(2), so hundreds of real
//! servers need no thread each. When a server's state changes, the control thread publishes a new
//! snapshot built from [`HealthChecks::effective`]: the configuration as health makes it (failed
//! servers removed or, with `inhibit_on_failure`, at weight 0; `misc_dynamic` weights; the sorry
//! server while the quorum is lost).

pub mod probe;
pub mod state;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use state::{Health, Outcome, Policy, Transition};

use crate::config::{Check, CheckKind, Config, RealServer};
use crate::types::Proto;
use probe::Probe;

/// A real server of a service: (protocol, VIP, port, server address, server port).
pub type ServerKey = (Proto, IpAddr, u16, IpAddr, u16);

/// SSL_GET settings that share one TLS client configuration: verify, CA file, SNI.
type TlsKey = (bool, Option<std::path::PathBuf>, bool);

/// One checker of one real server.
struct Entry {
    key: ServerKey,
    service: String,
    check: Check,
    health: Health,
    probe: Option<Probe>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Why TLS settings could not be built (a bad `ca_file`): every probe fails with it.
    tls_error: Option<String>,
}

/// What `xvs ctl health` shows of one checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckStatus {
    pub service: String,
    pub server: (IpAddr, u16),
    pub checker: &'static str,
    pub up: bool,
    pub last: Option<Outcome>,
}

/// Every checker of a configuration, and the quorum state of every service.
pub struct HealthChecks {
    entries: Vec<Entry>,
    /// Whether each service (protocol, VIP, port) has its quorum.
    quorum: HashMap<(Proto, IpAddr, u16), bool>,
    /// Notify and quorum scripts still running, reaped as they end.
    scripts: Vec<Child>,
    /// Servers whose state flipped in this poll, for their notify scripts.
    flipped: Vec<(ServerKey, bool)>,
    /// Transitions as log lines, for the caller to print (and for tests to read).
    pub log: Vec<String>,
}

fn server_key(vs: &crate::config::VirtualServer, rs: &RealServer) -> ServerKey {
    (vs.proto, vs.vip, vs.port, rs.addr, rs.port)
}

/// The server's notify_up or notify_down command.
fn notify_script(cfg: &Config, key: ServerKey, up: bool) -> Option<String> {
    cfg.services
        .iter()
        .filter(|vs| (vs.proto, vs.vip, vs.port) == (key.0, key.1, key.2))
        .flat_map(|vs| vs.real_servers.iter())
        .find(|rs| (rs.addr, rs.port) == (key.3, key.4))
        .and_then(|rs| {
            if up {
                rs.notify_up.clone()
            } else {
                rs.notify_down.clone()
            }
        })
}

fn endpoint(a: IpAddr, p: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{p}"),
        IpAddr::V6(a) => format!("[{a}]:{p}"),
    }
}

impl HealthChecks {
    /// The checkers of `cfg`, every first probe due at `now`.
    pub fn new(cfg: &Config, now: Instant) -> HealthChecks {
        let mut h = HealthChecks {
            entries: Vec::new(),
            quorum: HashMap::new(),
            scripts: Vec::new(),
            flipped: Vec::new(),
            log: Vec::new(),
        };
        h.reconfigure(cfg, now);
        h
    }

    /// Follows a new configuration: checkers that did not change keep their state and their
    /// probe in flight; new ones start as keepalived starts them (up, or down under `alpha`).
    pub fn reconfigure(&mut self, cfg: &Config, now: Instant) {
        let mut old: Vec<Option<Entry>> = std::mem::take(&mut self.entries).into_iter().map(Some).collect();
        let mut tls_cache: HashMap<TlsKey, Result<Arc<rustls::ClientConfig>, String>> = HashMap::new();
        for vs in &cfg.services {
            for rs in &vs.real_servers {
                let key = server_key(vs, rs);
                for check in &rs.checks {
                    let kept = old
                        .iter_mut()
                        .find(|o| o.as_ref().is_some_and(|o| o.key == key && o.check == *check))
                        .and_then(Option::take);
                    let entry = match kept {
                        Some(mut e) => {
                            e.service.clone_from(&vs.name);
                            e
                        }
                        None => {
                            let tls = match &check.kind {
                                CheckKind::Http(h) => h.tls.as_ref().map(|t| {
                                    tls_cache
                                        .entry((t.verify, t.ca_file.clone(), t.sni))
                                        .or_insert_with(|| probe::tls_config(t.verify, t.ca_file.as_deref(), t.sni))
                                        .clone()
                                }),
                                _ => None,
                            };
                            let (tls, tls_error) = match tls {
                                Some(Ok(c)) => (Some(c), None),
                                Some(Err(e)) => (None, Some(format!("TLS settings: {e}"))),
                                None => (None, None),
                            };
                            Entry {
                                key,
                                service: vs.name.clone(),
                                check: check.clone(),
                                health: Health::new(check.policy, now),
                                probe: None,
                                tls,
                                tls_error,
                            }
                        }
                    };
                    self.entries.push(entry);
                }
            }
        }
        // Quorum starts from the current health, without running scripts.
        let mut quorum = HashMap::new();
        for vs in &cfg.services {
            let k = (vs.proto, vs.vip, vs.port);
            let have = self.weight_sum(vs);
            let ok = self.quorum.get(&k).copied().unwrap_or(have >= vs.health.quorum);
            quorum.insert(k, ok);
        }
        self.quorum = quorum;
    }

    /// Whether every checker of the server says up (a server without checkers is always up),
    /// and its `misc_dynamic` weight if one was given.
    pub fn server(&self, key: &ServerKey) -> (bool, Option<u32>) {
        let mut up = true;
        let mut weight = None;
        for e in self.entries.iter().filter(|e| e.key == *key) {
            up &= e.health.is_up();
            weight = e.health.weight().or(weight);
        }
        (up, weight)
    }

    fn weight_sum(&self, vs: &crate::config::VirtualServer) -> u32 {
        vs.real_servers
            .iter()
            .map(|rs| match self.server(&server_key(vs, rs)) {
                (true, w) => w.unwrap_or(rs.weight),
                (false, _) => 0,
            })
            .sum()
    }

    /// Whether the service has its quorum.
    pub fn has_quorum(&self, proto: Proto, vip: IpAddr, port: u16) -> bool {
        self.quorum.get(&(proto, vip, port)).copied().unwrap_or(true)
    }

    /// The configuration as health makes it, for the next snapshot.
    pub fn effective(&self, cfg: &Config) -> Config {
        let mut out = cfg.clone();
        for vs in &mut out.services {
            let mut servers = Vec::with_capacity(vs.real_servers.len());
            for rs in &vs.real_servers {
                match self.server(&server_key(vs, rs)) {
                    (true, w) => servers.push(RealServer {
                        weight: w.unwrap_or(rs.weight),
                        ..rs.clone()
                    }),
                    (false, _) if rs.inhibit_on_failure => servers.push(RealServer {
                        weight: 0,
                        ..rs.clone()
                    }),
                    (false, _) => {}
                }
            }
            let quorum = self.has_quorum(vs.proto, vs.vip, vs.port);
            if let Some(s) = vs.health.sorry_server {
                let sorry = RealServer {
                    addr: s.addr,
                    port: s.port,
                    weight: 1,
                    inhibit_on_failure: false,
                    notify_up: None,
                    notify_down: None,
                    checks: Vec::new(),
                };
                if !quorum {
                    // keepalived: without quorum the sorry server takes the whole service.
                    servers.clear();
                    servers.push(sorry);
                } else if s.inhibit && !servers.iter().any(|r| r.addr == s.addr && r.port == s.port) {
                    servers.push(RealServer { weight: 0, ..sorry });
                }
            }
            vs.real_servers = servers;
        }
        out
    }

    /// Runs the checkers for at most `max_wait`: starts the probes that are due, waits for
    /// their sockets and programs, and records what ended. Returns whether any server or
    /// quorum changed state (the snapshot must be rebuilt with [`HealthChecks::effective`]).
    pub fn poll(&mut self, cfg: &Config, max_wait: Duration) -> bool {
        let now = Instant::now();
        let mut changed = false;
        for i in 0..self.entries.len() {
            let e = &mut self.entries[i];
            if e.probe.is_none() && e.health.due() <= now {
                let started = match &e.tls_error {
                    Some(why) => Err(Outcome::Down(why.clone())),
                    None => Probe::start(&e.check, e.tls.clone(), now),
                };
                match started {
                    Ok(p) => e.probe = Some(p),
                    Err(outcome) => changed |= self.finish(i, now, outcome),
                }
            }
        }
        // Wait for sockets and programs, but not past the next deadline or due probe.
        let mut wake = now + max_wait;
        let mut fds = Vec::new();
        let mut owners = Vec::new();
        let mut blind = false;
        for (i, e) in self.entries.iter().enumerate() {
            match &e.probe {
                Some(p) => {
                    wake = wake.min(p.deadline());
                    match p.interest() {
                        Some(int) => {
                            fds.push(libc::pollfd {
                                fd: int.fd,
                                events: int.events,
                                revents: 0,
                            });
                            owners.push(i);
                        }
                        None => blind = true,
                    }
                }
                None => wake = wake.min(e.health.due()),
            }
        }
        if blind {
            // A program without a pidfd is looked at every 10 ms.
            wake = wake.min(now + Duration::from_millis(10));
        }
        let ms = wake.saturating_duration_since(now).as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: fds is a live, correctly sized array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        let now = Instant::now();
        let ready: Vec<usize> = if n > 0 {
            fds.iter()
                .zip(&owners)
                .filter(|(f, _)| f.revents != 0)
                .map(|(_, &i)| i)
                .collect()
        } else {
            Vec::new()
        };
        for i in 0..self.entries.len() {
            let e = &mut self.entries[i];
            let Some(p) = e.probe.as_mut() else { continue };
            let is_ready = ready.contains(&i) || p.interest().is_none() || p.deadline() <= now;
            if !is_ready {
                continue;
            }
            if let Some(outcome) = p.advance(&e.check, now) {
                e.probe = None;
                changed |= self.finish(i, now, outcome);
            }
        }
        if changed {
            self.update_quorum(cfg);
            for (key, up) in std::mem::take(&mut self.flipped) {
                if let Some(s) = notify_script(cfg, key, up) {
                    self.run_script(&s);
                }
            }
        }
        self.scripts
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        changed
    }

    /// Records an outcome; true when the server's state or weight changed.
    fn finish(&mut self, i: usize, now: Instant, outcome: Outcome) -> bool {
        let key = self.entries[i].key;
        let before = self.server(&key);
        let e = &mut self.entries[i];
        let Some(t) = e.health.record(now, outcome) else {
            return false;
        };
        let (_, _, _, addr, port) = key;
        let mut line = format!(
            "health: {}: real server {}: {} {}: ",
            e.service,
            endpoint(addr, port),
            e.check.kind.name(),
            endpoint(e.check.connect.ip(), e.check.connect.port())
        );
        match &t {
            Transition::Up => {
                let _ = write!(line, "up after {} success(es)", e.health.policy().rise);
            }
            Transition::Down { reason, failures } => {
                let _ = write!(line, "down after {failures} failure(s): {reason}");
            }
            Transition::Weight(Some(w)) => {
                let _ = write!(line, "weight {w} (misc_dynamic)");
            }
            Transition::Weight(None) => line.push_str("configured weight restored (exit 0)"),
        }
        self.log.push(line);
        let after = self.server(&key);
        if before.0 != after.0 {
            self.flipped.push((key, after.0));
            self.log.push(format!(
                "health: real server {} of {} is {}",
                endpoint(addr, port),
                self.entries[i].service,
                if after.0 { "UP" } else { "DOWN" }
            ));
        }
        before != after
    }

    /// Runs notify scripts for servers whose state changed, and follows each service's quorum.
    fn update_quorum(&mut self, cfg: &Config) {
        for vs in &cfg.services {
            let k = (vs.proto, vs.vip, vs.port);
            let sum = self.weight_sum(vs);
            let q = &vs.health;
            let had = self.quorum.get(&k).copied().unwrap_or(true);
            let has = if had {
                sum >= q.quorum.saturating_sub(q.hysteresis)
            } else {
                sum >= q.quorum + q.hysteresis
            };
            if has != had {
                self.quorum.insert(k, has);
                self.log.push(format!(
                    "health: {}: quorum {} (live weight {sum}, quorum {}, hysteresis {}){}",
                    vs.name,
                    if has { "regained" } else { "lost" },
                    q.quorum,
                    q.hysteresis,
                    match (&q.sorry_server, has) {
                        (Some(s), false) => format!("; sorry server {} takes the service", endpoint(s.addr, s.port)),
                        (Some(_), true) => "; sorry server out".into(),
                        _ => String::new(),
                    }
                ));
                let script = if has { &q.quorum_up } else { &q.quorum_down };
                if let Some(s) = script {
                    self.run_script(s);
                }
            }
        }
    }

    fn run_script(&mut self, cmd: &str) {
        match Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
        {
            Ok(c) => self.scripts.push(c),
            Err(e) => self.log.push(format!("health: cannot run '{cmd}': {e}")),
        }
    }

    /// Every checker's state, for `xvs ctl health`.
    pub fn status(&self) -> Vec<CheckStatus> {
        self.entries
            .iter()
            .map(|e| CheckStatus {
                service: e.service.clone(),
                server: (e.key.3, e.key.4),
                checker: e.check.kind.name(),
                up: e.health.is_up(),
                last: e.health.last().cloned(),
            })
            .collect()
    }

    /// How many checkers there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
