//! VRRP (RFC 5798 v3, RFC 3768 v2), wire-compatible with keepalived: the advertisement format
//! (`packet`), the sans-IO per-instance state machine (`instance`) and the engine that drives the
//! instances over raw sockets, netlink and child processes (`io`).

pub mod instance;
pub mod io;
pub mod packet;

pub use instance::State;
pub use io::{Engine, EngineCounters, Event, InstanceStatus, VrrpError};

/// `xvs vrrp -c FILE`: only the VRRP engine, until SIGINT or SIGTERM; then every master sends
/// priority 0 and removes its VIPs (keepalived's `-P`).
pub fn run_standalone(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let cfg = crate::config::load(path)?;
    if cfg.vrrp.instances.is_empty() {
        return Err(format!("{}: no [[vrrp_instance]]", path.display()).into());
    }
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, term.clone())?;
    }
    let mut engine = Engine::new(&cfg)?;
    tracing::info!(
        "xvs vrrp: {} instance(s); SIGINT/SIGTERM stop",
        cfg.vrrp.instances.len()
    );
    while !term.load(Ordering::Relaxed) {
        // Short waits so that a signal is noticed quickly (ppoll is restarted by SA_RESTART).
        engine.poll(std::time::Duration::from_millis(100));
    }
    engine.shutdown();
    for s in engine.status() {
        let c = &s.counters;
        let rejected: Vec<String> = instance::Reject::ALL
            .iter()
            .filter(|r| c.rejected[r.index()] > 0)
            .map(|r| format!("{}={}", r.name(), c.rejected[r.index()]))
            .collect();
        tracing::info!(
            "VRRP {} stopped: rx {} tx {} master {} times, rejected [{}]",
            s.name,
            c.adverts_rx,
            c.adverts_tx,
            c.became_master,
            rejected.join(" ")
        );
    }
    Ok(())
}
