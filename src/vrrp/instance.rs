//! One virtual router: the sans-IO state machine of RFC 5798 section 6.4, plus the FAULT state and
//! the preemption rules (`nopreempt`, `preempt_delay`) that keepalived adds.
//!
//! Inputs are `(now, Input)`; outputs are [`Action`]s pushed onto a caller's list and the next
//! deadline ([`Instance::next_deadline`]). The instance owns no socket and no clock: the engine in
//! `vrrp::io` turns actions into packets, netlink requests and child processes, and the tests
//! drive it on a virtual clock.
//!
//! Received advertisements go through [`validate`] first; a rejected one is counted by its
//! [`Reject`] reason and never reaches the state machine.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::{ChecksumForm, PacketError, TTL, Version, VrrpRepr};

/// The priority of the address owner: master at once, never preempted.
pub const PRIORITY_OWNER: u8 = 255;
/// The priority a master sends when it stops, so that backups take over after Skew_Time.
pub const PRIORITY_STOP: u8 = 0;

/// RFC 5798 section 6.4 states, plus FAULT (a tracked interface or script failed: no adverts, no VIPs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl State {
    /// keepalived's word, as notify scripts receive it.
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// What the state machine needs to know about one virtual router (resolved configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceConfig {
    pub name: String,
    pub version: Version,
    pub vrid: u8,
    /// Base priority 1..=255 (255: address owner).
    pub priority: u8,
    /// Advertisement_Interval in centiseconds (v2: a multiple of 100).
    pub adver_int_cs: u16,
    /// `state MASTER`: start as master rather than wait Master_Down_Interval as a backup.
    pub start_master: bool,
    /// Preempt_Mode (keepalived's default true; `nopreempt` clears it).
    pub preempt: bool,
    /// keepalived's `preempt_delay`: after startup (and after first seeing a lower-priority master)
    /// lower-priority adverts are still obeyed for this long.
    pub preempt_delay: Duration,
    /// Accept_Mode: the master accepts packets for VIPs it does not own. The engine reports it; the
    /// data plane applies it.
    pub accept: bool,
    /// Our primary address: the source of our adverts and the tie-breaker.
    pub primary: IpAddr,
    /// The virtual addresses (one family, the primary's).
    pub vips: Vec<IpAddr>,
    /// Only adverts from these sources are accepted when not empty (`unicast_peer`).
    pub unicast_peers: Vec<IpAddr>,
    /// GARP/NA repetition as keepalived's `garp_master_*` options.
    pub garp: GarpConfig,
    /// The v3 IPv4 checksum form sent (received adverts may use either).
    pub checksum_form: ChecksumForm,
}

/// Gratuitous ARP / unsolicited NA on becoming master: `repeat` at once, `repeat` again after
/// `delay` (none when zero), then `refresh_repeat` every `refresh` (none when zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarpConfig {
    pub delay: Duration,
    pub repeat: u32,
    pub refresh: Duration,
    pub refresh_repeat: u32,
}

impl Default for GarpConfig {
    /// keepalived's defaults.
    fn default() -> GarpConfig {
        GarpConfig {
            delay: Duration::from_secs(5),
            repeat: 5,
            refresh: Duration::ZERO,
            refresh_repeat: 1,
        }
    }
}

/// Why an advertisement is rejected. Every reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    /// TTL or hop limit is not 255 (the advert crossed a router).
    #[error("TTL/hop limit is not 255")]
    Ttl,
    /// Not a well-formed advertisement (truncated, bad type, length, auth, family).
    #[error("malformed")]
    Malformed,
    /// Version 2 or 3, but not the instance's.
    #[error("version differs from the instance's")]
    Version,
    /// The VRID is not the instance's.
    #[error("VRID differs")]
    Vrid,
    /// The checksum does not verify.
    #[error("bad checksum")]
    Checksum,
    /// The address count differs from the instance's number of VIPs.
    #[error("address count differs from the configured VIPs")]
    AddressCount,
    /// v2 only: the advertisement interval differs from ours (RFC 3768 section 7.1).
    #[error("advertisement interval differs (v2)")]
    Interval,
    /// Sent from an address not in `unicast_peer`.
    #[error("source is not a configured unicast peer")]
    UnknownPeer,
    /// Our own advert, looped back.
    #[error("our own advertisement")]
    Own,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 9] = [
        Reject::Ttl,
        Reject::Malformed,
        Reject::Version,
        Reject::Vrid,
        Reject::Checksum,
        Reject::AddressCount,
        Reject::Interval,
        Reject::UnknownPeer,
        Reject::Own,
    ];
    /// The counter slot.
    pub fn index(self) -> usize {
        Reject::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
    /// A short name for status output.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Ttl => "ttl",
            Reject::Malformed => "malformed",
            Reject::Version => "version",
            Reject::Vrid => "vrid",
            Reject::Checksum => "checksum",
            Reject::AddressCount => "address_count",
            Reject::Interval => "interval",
            Reject::UnknownPeer => "unknown_peer",
            Reject::Own => "own",
        }
    }
}

/// A received VRRP message with what the IP header said about it.
#[derive(Clone, Copy, Debug)]
pub struct Received<'a> {
    pub ttl: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IP payload.
    pub payload: &'a [u8],
}

/// The receive checks of RFC 5798 section 7.1 (and RFC 3768's for v2) for instance `cfg`.
pub fn validate(cfg: &InstanceConfig, rx: &Received<'_>) -> Result<VrrpRepr, Reject> {
    if rx.ttl != TTL {
        return Err(Reject::Ttl);
    }
    let (adv, _form) = VrrpRepr::parse(rx.payload, rx.src, rx.dst).map_err(|e| match e {
        PacketError::Checksum => Reject::Checksum,
        PacketError::Version(_) => Reject::Version,
        _ => Reject::Malformed,
    })?;
    if adv.version != cfg.version {
        return Err(Reject::Version);
    }
    if adv.vrid != cfg.vrid {
        return Err(Reject::Vrid);
    }
    if rx.src == cfg.primary {
        return Err(Reject::Own);
    }
    if !cfg.unicast_peers.is_empty() && !cfg.unicast_peers.contains(&rx.src) {
        return Err(Reject::UnknownPeer);
    }
    if adv.addrs.len() != cfg.vips.len() {
        return Err(Reject::AddressCount);
    }
    if adv.version == Version::V2 && adv.interval_cs() != u32::from(cfg.adver_int_cs) {
        return Err(Reject::Interval);
    }
    Ok(adv)
}

/// An input to the state machine.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// The Startup event.
    Startup,
    /// The Shutdown event (a master sends priority 0).
    Shutdown,
    /// A validated advertisement from `src`.
    Advert { src: IpAddr, adv: &'a VrrpRepr },
    /// Tracked interfaces and scripts changed: `delta` is added to the base priority; `fault` puts
    /// the instance in FAULT until it clears.
    Tracked { delta: i32, fault: bool },
    /// The sync group wants this instance master now (another member became master).
    GroupMaster,
    /// The sync group wants this instance backup now (another member lost mastership).
    GroupBackup,
}

/// What the engine must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority.
    Send { priority: u8 },
    /// Add the VIPs to the interface.
    AddVips,
    /// Remove the VIPs from the interface.
    RemoveVips,
    /// Send `count` gratuitous ARPs / unsolicited NAs for every VIP.
    Garp { count: u32 },
    /// The state changed; run the notify scripts and report it.
    Transition {
        from: State,
        to: State,
        reason: &'static str,
    },
    /// The instance stopped (notify_stop).
    Stopped,
}

/// Counters of one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub adverts_rx: u64,
    pub adverts_tx: u64,
    pub priority_zero_rx: u64,
    pub priority_zero_tx: u64,
    pub became_master: u64,
    pub released_master: u64,
    /// Rejected adverts by [`Reject::index`].
    pub rejected: [u64; Reject::ALL.len()],
}

/// One virtual router's state.
#[derive(Debug)]
pub struct Instance {
    cfg: InstanceConfig,
    state: State,
    delta: i32,
    fault: bool,
    /// Master_Adver_Interval (v3: learned from the master), centiseconds.
    master_adver_int_cs: u16,
    master_addr: Option<IpAddr>,
    adver_at: Option<Instant>,
    master_down_at: Option<Instant>,
    garp_at: Option<Instant>,
    refresh_at: Option<Instant>,
    /// Until when lower-priority masters are still obeyed (`preempt_delay`).
    preempt_at: Option<Instant>,
    counters: Counters,
}

impl Instance {
    pub fn new(cfg: InstanceConfig) -> Instance {
        Instance {
            master_adver_int_cs: cfg.adver_int_cs,
            cfg,
            state: State::Initialize,
            delta: 0,
            fault: false,
            master_addr: None,
            adver_at: None,
            master_down_at: None,
            garp_at: None,
            refresh_at: None,
            preempt_at: None,
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &InstanceConfig {
        &self.cfg
    }
    pub fn state(&self) -> State {
        self.state
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// The address of the current master (ours when master), if known.
    pub fn master_addr(&self) -> Option<IpAddr> {
        match self.state {
            State::Master => Some(self.cfg.primary),
            State::Backup => self.master_addr,
            _ => None,
        }
    }
    /// Counts a rejected advertisement.
    pub fn count_reject(&mut self, r: Reject) {
        self.counters.rejected[r.index()] += 1;
    }
    /// Counts a sent advertisement (the engine calls it once the packet is out).
    pub fn count_sent(&mut self, priority: u8) {
        self.counters.adverts_tx += 1;
        if priority == PRIORITY_STOP {
            self.counters.priority_zero_tx += 1;
        }
    }

    /// The priority in use: base plus tracking, kept within 1..=254 unless the owner is untouched.
    pub fn effective_priority(&self) -> u8 {
        if self.cfg.priority == PRIORITY_OWNER && self.delta == 0 {
            return PRIORITY_OWNER;
        }
        (i32::from(self.cfg.priority) + self.delta).clamp(1, 254) as u8
    }

    /// Advertisement_Interval.
    fn adver_interval(&self) -> Duration {
        cs(self.cfg.adver_int_cs)
    }

    /// Skew_Time: v3 `((256 - Priority) * Master_Adver_Interval) / 256` centiseconds; v2
    /// `(256 - Priority) / 256` seconds. Computed in microseconds, as keepalived does.
    pub fn skew_time(&self) -> Duration {
        let p = 256 - u64::from(self.effective_priority());
        match self.cfg.version {
            Version::V3 => Duration::from_micros(p * u64::from(self.master_adver_int_cs) * 10_000 / 256),
            Version::V2 => Duration::from_micros(p * 1_000_000 / 256),
        }
    }

    /// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time` (v2: with Advertisement_Interval,
    /// which must equal the master's).
    pub fn master_down_interval(&self) -> Duration {
        let base = match self.cfg.version {
            Version::V3 => cs(self.master_adver_int_cs),
            Version::V2 => self.adver_interval(),
        };
        base * 3 + self.skew_time()
    }

    /// The earliest pending timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.adver_at, self.master_down_at, self.garp_at, self.refresh_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Handles an input at `now`, pushing what to do onto `out`.
    pub fn handle(&mut self, now: Instant, input: Input<'_>, out: &mut Vec<Action>) {
        match input {
            Input::Startup => self.startup(now, out),
            Input::Shutdown => self.shutdown(out),
            Input::Advert { src, adv } => self.advert(now, src, adv, out),
            Input::Tracked { delta, fault } => self.tracked(now, delta, fault, out),
            Input::GroupMaster => {
                if self.state == State::Backup {
                    self.become_master(now, "sync group member became master", out);
                }
            }
            Input::GroupBackup => {
                if self.state == State::Master {
                    self.become_backup(now, "sync group member left master", out);
                }
            }
        }
    }

    /// Fires every timer due at `now`; safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.master_down_at.is_some_and(|t| t <= now) && self.state == State::Backup {
            // RFC 5798 6.4.2: "If the Master_Down_Timer fires" -> send an advert, GARP, Master.
            self.become_master(now, "master down timer expired", out);
        }
        if let Some(t) = self.adver_at
            && t <= now
            && self.state == State::Master
        {
            // 6.4.3: "If the Adver_Timer fires": send an advert, reset the timer.
            out.push(Action::Send {
                priority: self.effective_priority(),
            });
            self.adver_at = Some(next_after(t, self.adver_interval(), now));
        }
        if self.garp_at.is_some_and(|t| t <= now) {
            self.garp_at = None;
            if self.state == State::Master {
                out.push(Action::Garp {
                    count: self.cfg.garp.repeat,
                });
            }
        }
        if let Some(t) = self.refresh_at
            && t <= now
        {
            if self.state == State::Master {
                out.push(Action::Garp {
                    count: self.cfg.garp.refresh_repeat,
                });
                self.refresh_at = Some(next_after(t, self.cfg.garp.refresh, now));
            } else {
                self.refresh_at = None;
            }
        }
    }

    /// 6.4.1 Initialize: "If the Startup event is received".
    fn startup(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state != State::Initialize {
            return;
        }
        if self.fault {
            self.set_state(State::Fault, "tracked interface or script down at startup", out);
            return;
        }
        self.master_adver_int_cs = self.cfg.adver_int_cs;
        // The reboot case: a preempt_delay counts from startup, so a restarted higher-priority
        // router does not take over before its delay, whatever its `state`.
        self.preempt_at = (self.cfg.preempt_delay > Duration::ZERO).then(|| now + self.cfg.preempt_delay);
        let owner = self.effective_priority() == PRIORITY_OWNER;
        // `state MASTER` only shortcuts the wait when preemption is allowed now: with nopreempt or a
        // pending preempt_delay a restarted router must first listen for a current master.
        if owner || (self.cfg.start_master && self.cfg.preempt && self.preempt_at.is_none()) {
            self.become_master(
                now,
                if owner {
                    "address owner (priority 255)"
                } else {
                    "configured state MASTER"
                },
                out,
            );
        } else {
            self.master_down_at = Some(now + self.master_down_interval());
            self.set_state(State::Backup, "startup", out);
        }
    }

    /// 6.4.2 and 6.4.3: "If the Shutdown event is received".
    fn shutdown(&mut self, out: &mut Vec<Action>) {
        if self.state == State::Master {
            out.push(Action::Send {
                priority: PRIORITY_STOP,
            });
            out.push(Action::RemoveVips);
        }
        self.clear_timers();
        if self.state != State::Initialize {
            self.set_state(State::Initialize, "shutdown", out);
        }
        out.push(Action::Stopped);
    }

    fn advert(&mut self, now: Instant, src: IpAddr, adv: &VrrpRepr, out: &mut Vec<Action>) {
        self.counters.adverts_rx += 1;
        if adv.priority == PRIORITY_STOP {
            self.counters.priority_zero_rx += 1;
        }
        let ours = self.effective_priority();
        match self.state {
            State::Backup => {
                if adv.priority == PRIORITY_STOP {
                    // 6.4.2: "If the Priority in the ADVERTISEMENT is zero, then: Set the
                    // Master_Down_Timer to Skew_Time."
                    self.master_down_at = Some(now + self.skew_time());
                    return;
                }
                let delaying = self.preempt_at.is_some_and(|t| now < t);
                // 6.4.2: "If Preempt_Mode is False, or if the Priority in the ADVERTISEMENT is
                // greater than or equal to the local Priority, then" follow the master.
                if !self.cfg.preempt || adv.priority >= ours || delaying {
                    if self.cfg.version == Version::V3 {
                        // "Set Master_Adver_Interval to Adver Interval contained in the ADVERTISEMENT".
                        self.master_adver_int_cs = adv.adver_int.max(1);
                    }
                    self.master_addr = Some(src);
                    self.master_down_at = Some(now + self.master_down_interval());
                }
                // "Else (Priority less than local Priority and Preempt_Mode True): discard" — the
                // Master_Down_Timer then fires and this router preempts.
            }
            State::Master => {
                if adv.priority == PRIORITY_STOP {
                    // 6.4.3: "If the Priority in the ADVERTISEMENT is zero, then: Send an
                    // ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval".
                    out.push(Action::Send { priority: ours });
                    self.adver_at = Some(now + self.adver_interval());
                    return;
                }
                // "If the Priority in the ADVERTISEMENT is greater than the local Priority, or the
                // Priority is equal and the primary IPvX Address of the sender is greater than the
                // local primary IPvX Address": Backup.
                if adv.priority > ours || (adv.priority == ours && addr_gt(src, self.cfg.primary)) {
                    if self.cfg.version == Version::V3 {
                        self.master_adver_int_cs = adv.adver_int.max(1);
                    }
                    self.master_addr = Some(src);
                    self.become_backup(now, "higher priority advertisement received", out);
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    fn tracked(&mut self, now: Instant, delta: i32, fault: bool, out: &mut Vec<Action>) {
        self.delta = delta;
        let was = self.fault;
        self.fault = fault;
        match (was, fault, self.state) {
            (_, true, State::Master) => {
                // Leaving master for FAULT: hand over at once, like a shutdown.
                out.push(Action::Send {
                    priority: PRIORITY_STOP,
                });
                out.push(Action::RemoveVips);
                self.clear_timers();
                self.set_state(State::Fault, "tracked interface or script failed", out);
            }
            (_, true, State::Backup) => {
                self.clear_timers();
                self.set_state(State::Fault, "tracked interface or script failed", out);
            }
            (true, false, State::Fault) => {
                self.master_adver_int_cs = self.cfg.adver_int_cs;
                self.master_down_at = Some(now + self.master_down_interval());
                self.set_state(State::Backup, "tracked interfaces and scripts recovered", out);
            }
            _ => {}
        }
    }

    fn become_master(&mut self, now: Instant, reason: &'static str, out: &mut Vec<Action>) {
        out.push(Action::Send {
            priority: self.effective_priority(),
        });
        out.push(Action::AddVips);
        out.push(Action::Garp {
            count: self.cfg.garp.repeat,
        });
        self.master_down_at = None;
        self.preempt_at = None;
        self.adver_at = Some(now + self.adver_interval());
        self.garp_at = (self.cfg.garp.delay > Duration::ZERO).then(|| now + self.cfg.garp.delay);
        self.refresh_at = (self.cfg.garp.refresh > Duration::ZERO).then(|| now + self.cfg.garp.refresh);
        self.counters.became_master += 1;
        self.set_state(State::Master, reason, out);
    }

    fn become_backup(&mut self, now: Instant, reason: &'static str, out: &mut Vec<Action>) {
        out.push(Action::RemoveVips);
        self.clear_timers();
        self.master_down_at = Some(now + self.master_down_interval());
        self.counters.released_master += 1;
        self.set_state(State::Backup, reason, out);
    }

    fn clear_timers(&mut self) {
        self.adver_at = None;
        self.master_down_at = None;
        self.garp_at = None;
        self.refresh_at = None;
    }

    fn set_state(&mut self, to: State, reason: &'static str, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        out.push(Action::Transition { from, to, reason });
    }
}

fn cs(n: u16) -> Duration {
    Duration::from_millis(u64::from(n) * 10)
}

/// The next period boundary after `now`, skipping missed periods rather than bursting.
fn next_after(t: Instant, period: Duration, now: Instant) -> Instant {
    let next = t + period;
    if next > now { next } else { now + period }
}

/// Compares addresses as unsigned integers in network order (RFC 5798 6.4.3).
fn addr_gt(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets() > b.octets(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets() > b.octets(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::packet::MCAST_V4;

    const ME: &str = "198.18.5.1";
    const PEER: &str = "198.18.5.2";

    fn cfg(version: Version, priority: u8, adver_int_cs: u16) -> InstanceConfig {
        InstanceConfig {
            name: "VI_1".into(),
            version,
            vrid: 51,
            priority,
            adver_int_cs,
            start_master: false,
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept: false,
            primary: ME.parse().unwrap(),
            vips: vec!["198.18.5.100".parse().unwrap()],
            unicast_peers: vec![],
            garp: GarpConfig::default(),
            checksum_form: ChecksumForm::Pseudo,
        }
    }

    fn adv(version: Version, priority: u8, adver_int: u16) -> VrrpRepr {
        VrrpRepr {
            version,
            vrid: 51,
            priority,
            adver_int,
            addrs: vec!["198.18.5.100".parse().unwrap()],
        }
    }

    /// A virtual clock and an instance.
    struct Sim {
        t0: Instant,
        now: Instant,
        i: Instance,
    }

    impl Sim {
        fn new(c: InstanceConfig) -> Sim {
            let t0 = Instant::now();
            Sim {
                t0,
                now: t0,
                i: Instance::new(c),
            }
        }
        fn at(&self) -> Duration {
            self.now - self.t0
        }
        fn input(&mut self, input: Input<'_>) -> Vec<Action> {
            let mut out = Vec::new();
            self.i.handle(self.now, input, &mut out);
            out
        }
        fn from(&mut self, src: &str, a: &VrrpRepr) -> Vec<Action> {
            let src = src.parse().unwrap();
            self.input(Input::Advert { src, adv: a })
        }
        /// Advances to `t` (since start), firing every timer on the way.
        fn run_to(&mut self, t: Duration) -> Vec<Action> {
            let mut out = Vec::new();
            let end = self.t0 + t;
            for _ in 0..100_000 {
                match self.i.next_deadline() {
                    Some(d) if d <= end => {
                        self.now = self.now.max(d);
                        self.i.handle_timeout(self.now, &mut out);
                    }
                    _ => break,
                }
            }
            self.now = self.now.max(end);
            out
        }
    }

    fn transitions(a: &[Action]) -> Vec<(State, State)> {
        a.iter()
            .filter_map(|x| match x {
                Action::Transition { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn skew_and_master_down_interval_follow_the_rfc() {
        // v3, priority 100, 1 s: skew = (156 * 100 / 256) cs = 0.609375 s; down = 3.609375 s.
        let i = Instance::new(cfg(Version::V3, 100, 100));
        assert_eq!(i.skew_time(), Duration::from_micros(609_375));
        assert_eq!(i.master_down_interval(), Duration::from_micros(3_609_375));
        // v3, 10 ms, priority 200: skew = 56 * 1 / 256 cs = 2187 us.
        let i = Instance::new(cfg(Version::V3, 200, 1));
        assert_eq!(i.skew_time(), Duration::from_micros(2_187));
        assert_eq!(i.master_down_interval(), Duration::from_micros(32_187));
        // v2 in seconds: priority 100: skew = 156/256 s.
        let i = Instance::new(cfg(Version::V2, 100, 100));
        assert_eq!(i.skew_time(), Duration::from_micros(609_375));
        assert_eq!(i.master_down_interval(), Duration::from_micros(3_609_375));
    }

    #[test]
    fn startup_goes_backup_then_master_when_nobody_advertises() {
        let mut s = Sim::new(cfg(Version::V3, 100, 100));
        let a = s.input(Input::Startup);
        assert_eq!(transitions(&a), vec![(State::Initialize, State::Backup)]);
        assert!(!a.contains(&Action::AddVips));
        let a = s.run_to(Duration::from_millis(3_609));
        assert!(a.is_empty());
        let a = s.run_to(Duration::from_millis(3_610));
        assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
        assert_eq!(
            a[..3],
            [
                Action::Send { priority: 100 },
                Action::AddVips,
                Action::Garp { count: 5 }
            ]
        );
        assert_eq!(s.i.counters().became_master, 1);
        // Adverts every interval from then on, GARPs again after garp_master_delay (5 s).
        let a = s.run_to(Duration::from_millis(3_610 + 5_000));
        let sends = a.iter().filter(|x| matches!(x, Action::Send { .. })).count();
        assert_eq!(sends, 5);
        assert!(a.contains(&Action::Garp { count: 5 }));
    }

    #[test]
    fn owner_and_state_master_start_as_master() {
        let mut s = Sim::new(cfg(Version::V3, 255, 100));
        let a = s.input(Input::Startup);
        assert_eq!(transitions(&a), vec![(State::Initialize, State::Master)]);
        assert_eq!(a[0], Action::Send { priority: 255 });
        let mut c = cfg(Version::V3, 100, 100);
        c.start_master = true;
        let mut s = Sim::new(c);
        assert_eq!(
            transitions(&s.input(Input::Startup)),
            vec![(State::Initialize, State::Master)]
        );
    }

    #[test]
    fn backup_follows_a_higher_master_and_learns_its_interval() {
        let mut s = Sim::new(cfg(Version::V3, 100, 100));
        s.input(Input::Startup);
        // The master advertises every 50 cs: Master_Down_Interval shrinks to 1.5 s + skew.
        s.run_to(Duration::from_secs(1));
        s.from(PEER, &adv(Version::V3, 150, 50));
        assert_eq!(s.i.master_down_interval(), Duration::from_micros(1_500_000 + 304_687));
        assert_eq!(s.i.master_addr(), Some(PEER.parse().unwrap()));
        // Adverts keep coming: no transition.
        for k in 1..10u64 {
            let a = s.run_to(Duration::from_millis(1000 + 500 * k));
            assert!(a.is_empty());
            s.from(PEER, &adv(Version::V3, 150, 50));
        }
        // They stop (hard kill): master after Master_Down_Interval since the last one.
        let last = s.at();
        let a = s.run_to(last + Duration::from_micros(1_804_686));
        assert!(a.is_empty());
        let a = s.run_to(last + Duration::from_micros(1_804_688));
        assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
    }

    #[test]
    fn priority_zero_makes_the_backup_take_over_after_skew_time() {
        let mut s = Sim::new(cfg(Version::V3, 100, 100));
        s.input(Input::Startup);
        s.from(PEER, &adv(Version::V3, 150, 100));
        let t = s.at();
        s.from(PEER, &adv(Version::V3, 0, 100));
        assert_eq!(s.i.counters().priority_zero_rx, 1);
        let a = s.run_to(t + Duration::from_micros(609_374));
        assert!(a.is_empty());
        let a = s.run_to(t + Duration::from_micros(609_375));
        assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
    }

    #[test]
    fn master_yields_to_higher_priority_and_to_equal_priority_with_higher_address() {
        let mut c = cfg(Version::V3, 100, 100);
        c.start_master = true;
        let mut s = Sim::new(c.clone());
        s.input(Input::Startup);
        // Lower priority: discarded, still master.
        assert!(s.from(PEER, &adv(Version::V3, 50, 100)).is_empty());
        // Equal priority from a lower address: ours wins.
        assert!(s.from("198.18.5.0", &adv(Version::V3, 100, 100)).is_empty());
        // Equal priority, higher address: back off.
        let a = s.from(PEER, &adv(Version::V3, 100, 100));
        assert_eq!(a[0], Action::RemoveVips);
        assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
        assert_eq!(s.i.counters().released_master, 1);
        // Higher priority also.
        let mut s = Sim::new(c);
        s.input(Input::Startup);
        let a = s.from(PEER, &adv(Version::V3, 101, 100));
        assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
    }

    #[test]
    fn master_answers_priority_zero_with_an_advert_at_once() {
        let mut c = cfg(Version::V3, 100, 100);
        c.start_master = true;
        let mut s = Sim::new(c);
        s.input(Input::Startup);
        s.run_to(Duration::from_millis(300));
        let a = s.from(PEER, &adv(Version::V3, 0, 100));
        assert_eq!(a, vec![Action::Send { priority: 100 }]);
        // The Adver_Timer restarted from now.
        assert_eq!(s.i.next_deadline(), Some(s.now + Duration::from_secs(1)));
    }

    #[test]
    fn shutdown_of_a_master_sends_priority_zero_and_removes_the_vips() {
        let mut c = cfg(Version::V3, 100, 100);
        c.start_master = true;
        let mut s = Sim::new(c);
        s.input(Input::Startup);
        let a = s.input(Input::Shutdown);
        assert_eq!(
            a,
            vec![
                Action::Send { priority: 0 },
                Action::RemoveVips,
                Action::Transition {
                    from: State::Master,
                    to: State::Initialize,
                    reason: "shutdown"
                },
                Action::Stopped
            ]
        );
        assert_eq!(s.i.next_deadline(), None);
        // A backup shuts down quietly.
        let mut s = Sim::new(cfg(Version::V3, 100, 100));
        s.input(Input::Startup);
        let a = s.input(Input::Shutdown);
        assert!(!a.iter().any(|x| matches!(x, Action::Send { .. })));
        assert_eq!(s.i.state(), State::Initialize);
    }

    #[test]
    fn preempt_and_nopreempt() {
        // Preempt (default): a lower master is ignored, so this backup takes over.
        let mut s = Sim::new(cfg(Version::V3, 150, 100));
        s.input(Input::Startup);
        s.from(PEER, &adv(Version::V3, 100, 100));
        assert_eq!(s.i.master_addr(), None);
        let a = s.run_to(Duration::from_secs(4));
        assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
        // nopreempt: a lower master keeps its place as long as it advertises.
        let mut c = cfg(Version::V3, 150, 100);
        c.preempt = false;
        let mut s = Sim::new(c);
        s.input(Input::Startup);
        for k in 0..20u64 {
            let a = s.run_to(Duration::from_millis(k * 1000));
            assert!(transitions(&a).is_empty());
            s.from(PEER, &adv(Version::V3, 100, 100));
        }
        assert_eq!(s.i.state(), State::Backup);
    }

    #[test]
    fn reboot_with_nopreempt_and_state_master_listens_first() {
        // The higher-priority router restarts with `state MASTER` and nopreempt: it must not start
        // as master over the current (lower) one.
        let mut c = cfg(Version::V3, 200, 100);
        c.start_master = true;
        c.preempt = false;
        let mut s = Sim::new(c);
        let a = s.input(Input::Startup);
        assert_eq!(transitions(&a), vec![(State::Initialize, State::Backup)]);
        for k in 0..10u64 {
            s.from(PEER, &adv(Version::V3, 100, 100));
            assert!(transitions(&s.run_to(Duration::from_millis(k * 1000 + 999))).is_empty());
        }
    }

    #[test]
    fn preempt_delay_counts_from_startup_then_preempts() {
        let mut c = cfg(Version::V3, 200, 100);
        c.start_master = true;
        c.preempt_delay = Duration::from_secs(10);
        let mut s = Sim::new(c);
        // Rebooted: even with state MASTER it starts as backup while the delay runs.
        let a = s.input(Input::Startup);
        assert_eq!(transitions(&a), vec![(State::Initialize, State::Backup)]);
        let mut took_over = None;
        for k in 0..20u64 {
            let a = s.run_to(Duration::from_millis(k * 1000));
            if transitions(&a).contains(&(State::Backup, State::Master)) {
                took_over = Some(s.at());
                break;
            }
            s.from(PEER, &adv(Version::V3, 100, 100));
        }
        // Obeys the lower master until 10 s, then ignores it and takes over a Master_Down_Interval later.
        let t = took_over.expect("preempted");
        let down = Duration::from_micros(3_000_000 + 56 * 1_000_000 / 256);
        assert!(t >= Duration::from_secs(10) && t <= Duration::from_secs(9) + down + Duration::from_secs(1));
        // No delay at all once the delay is over: a later lower advert is simply discarded.
        assert!(s.from(PEER, &adv(Version::V3, 100, 100)).is_empty());
    }

    #[test]
    fn tracked_fault_and_weight() {
        let mut c = cfg(Version::V3, 100, 100);
        c.start_master = true;
        let mut s = Sim::new(c);
        s.input(Input::Startup);
        // A weight lowers the advertised priority.
        s.input(Input::Tracked {
            delta: -30,
            fault: false,
        });
        assert_eq!(s.i.effective_priority(), 70);
        let a = s.run_to(Duration::from_millis(1000));
        assert_eq!(a, vec![Action::Send { priority: 70 }]);
        // Now a higher-priority peer (80) wins.
        let a = s.from(PEER, &adv(Version::V3, 80, 100));
        assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
        // Fault from backup: no timers.
        let a = s.input(Input::Tracked { delta: 0, fault: true });
        assert_eq!(transitions(&a), vec![(State::Backup, State::Fault)]);
        assert_eq!(s.i.next_deadline(), None);
        assert!(s.from(PEER, &adv(Version::V3, 80, 100)).is_empty());
        // Recovered: backup again, waiting Master_Down_Interval.
        let a = s.input(Input::Tracked { delta: 0, fault: false });
        assert_eq!(transitions(&a), vec![(State::Fault, State::Backup)]);
        // Fault from master: priority 0 first, VIPs removed.
        let mut c = cfg(Version::V3, 100, 100);
        c.start_master = true;
        let mut s = Sim::new(c);
        s.input(Input::Startup);
        let a = s.input(Input::Tracked { delta: 0, fault: true });
        assert_eq!(a[..2], [Action::Send { priority: 0 }, Action::RemoveVips]);
        assert_eq!(transitions(&a), vec![(State::Master, State::Fault)]);
        // Fault at startup.
        let mut s = Sim::new(cfg(Version::V3, 100, 100));
        s.input(Input::Tracked { delta: 0, fault: true });
        assert_eq!(
            transitions(&s.input(Input::Startup)),
            vec![(State::Initialize, State::Fault)]
        );
    }

    #[test]
    fn priority_is_clamped_and_owner_kept_only_untouched() {
        let mut i = Instance::new(cfg(Version::V3, 250, 100));
        let mut out = Vec::new();
        i.handle(
            Instant::now(),
            Input::Tracked {
                delta: 50,
                fault: false,
            },
            &mut out,
        );
        assert_eq!(i.effective_priority(), 254);
        i.handle(
            Instant::now(),
            Input::Tracked {
                delta: -300,
                fault: false,
            },
            &mut out,
        );
        assert_eq!(i.effective_priority(), 1);
        let i = Instance::new(cfg(Version::V3, 255, 100));
        assert_eq!(i.effective_priority(), 255);
    }

    #[test]
    fn sync_group_inputs() {
        let mut s = Sim::new(cfg(Version::V3, 100, 100));
        s.input(Input::Startup);
        let a = s.input(Input::GroupMaster);
        assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
        let a = s.input(Input::GroupBackup);
        assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
        // Idempotent.
        assert!(s.input(Input::GroupBackup).is_empty());
    }

    #[test]
    fn garp_refresh_repeats_while_master() {
        let mut c = cfg(Version::V3, 100, 100);
        c.start_master = true;
        c.garp = GarpConfig {
            delay: Duration::ZERO,
            repeat: 2,
            refresh: Duration::from_secs(3),
            refresh_repeat: 1,
        };
        let mut s = Sim::new(c);
        let a = s.input(Input::Startup);
        assert!(a.contains(&Action::Garp { count: 2 }));
        let a = s.run_to(Duration::from_secs(10));
        assert_eq!(a.iter().filter(|x| **x == Action::Garp { count: 1 }).count(), 3);
    }

    #[test]
    fn timeouts_are_safe_early_and_twice() {
        let mut s = Sim::new(cfg(Version::V3, 100, 100));
        s.input(Input::Startup);
        let mut out = Vec::new();
        s.i.handle_timeout(s.now, &mut out);
        s.i.handle_timeout(s.now, &mut out);
        assert!(out.is_empty());
        s.run_to(Duration::from_secs(4));
        let n = s.i.counters().became_master;
        let mut out = Vec::new();
        s.i.handle_timeout(s.now, &mut out);
        s.i.handle_timeout(s.now, &mut out);
        assert_eq!(s.i.counters().became_master, n);
        assert!(out.is_empty());
    }

    #[test]
    fn v2_backup_uses_its_own_interval() {
        let mut s = Sim::new(cfg(Version::V2, 100, 100));
        s.input(Input::Startup);
        s.from(PEER, &adv(Version::V2, 150, 1));
        assert_eq!(s.i.master_down_interval(), Duration::from_micros(3_609_375));
    }

    fn rx<'a>(ttl: u8, src: &str, payload: &'a [u8]) -> Received<'a> {
        Received {
            ttl,
            src: src.parse().unwrap(),
            dst: MCAST_V4.into(),
            payload,
        }
    }

    fn bytes(a: &VrrpRepr, src: &str) -> Vec<u8> {
        let mut b = vec![0; a.buffer_len()];
        a.emit(&mut b, src.parse().unwrap(), MCAST_V4.into(), ChecksumForm::Pseudo);
        b
    }

    #[test]
    fn validate_rejects_by_reason() {
        let c = cfg(Version::V3, 100, 100);
        let good = bytes(&adv(Version::V3, 150, 100), PEER);
        assert_eq!(validate(&c, &rx(255, PEER, &good)), Ok(adv(Version::V3, 150, 100)));
        assert_eq!(validate(&c, &rx(254, PEER, &good)), Err(Reject::Ttl));
        assert_eq!(
            validate(&c, &rx(255, ME, &bytes(&adv(Version::V3, 150, 100), ME))),
            Err(Reject::Own)
        );
        // The checksum covers the source address, so the same bytes from elsewhere fail.
        assert_eq!(validate(&c, &rx(255, "198.18.5.3", &good)), Err(Reject::Checksum));
        assert_eq!(
            validate(&c, &rx(255, PEER, &bytes(&adv(Version::V2, 150, 1), PEER))),
            Err(Reject::Version)
        );
        let mut other = adv(Version::V3, 150, 100);
        other.vrid = 52;
        assert_eq!(validate(&c, &rx(255, PEER, &bytes(&other, PEER))), Err(Reject::Vrid));
        let mut two = adv(Version::V3, 150, 100);
        two.addrs.push("198.18.5.101".parse().unwrap());
        assert_eq!(
            validate(&c, &rx(255, PEER, &bytes(&two, PEER))),
            Err(Reject::AddressCount)
        );
        assert_eq!(validate(&c, &rx(255, PEER, &good[..5])), Err(Reject::Malformed));
        let mut bad = good.clone();
        bad[0] = 0x51;
        assert_eq!(validate(&c, &rx(255, PEER, &bad)), Err(Reject::Version));
        // v2: an interval other than ours is refused.
        let c2 = cfg(Version::V2, 100, 100);
        let v2 = bytes(&adv(Version::V2, 150, 2), PEER);
        assert_eq!(validate(&c2, &rx(255, PEER, &v2)), Err(Reject::Interval));
        // Unicast peers: others refused.
        let mut cu = cfg(Version::V3, 100, 100);
        cu.unicast_peers = vec!["198.18.5.3".parse().unwrap()];
        assert_eq!(validate(&cu, &rx(255, PEER, &good)), Err(Reject::UnknownPeer));
        // Each reason has its own counter.
        let mut i = Instance::new(c);
        i.count_reject(Reject::Ttl);
        i.count_reject(Reject::Checksum);
        i.count_reject(Reject::Checksum);
        assert_eq!(i.counters().rejected[Reject::Checksum.index()], 2);
        assert_eq!(i.counters().rejected[Reject::Ttl.index()], 1);
    }
}
