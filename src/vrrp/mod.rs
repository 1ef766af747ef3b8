//! VRRP (RFC 5798 v3, RFC 3768 v2), wire-compatible with keepalived: the advertisement format
//! (`packet`), the sans-IO per-instance state machine (`instance`) and the engine that drives the
//! instances over raw sockets, netlink and child processes (`io`).

pub mod instance;
pub mod packet;
