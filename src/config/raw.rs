//! The TOML as written: serde structs that mirror the file, every value with its span so that an
//! error can name its line. Nothing here is validated beyond types; `resolve` does that.

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub global: Option<RawGlobal>,
    pub conn: Option<RawConn>,
    #[serde(default)]
    pub interface: Vec<S<RawInterface>>,
    #[serde(default)]
    pub route: Vec<S<RawRoute>>,
    #[serde(default)]
    pub neighbour: Vec<S<RawNeighbour>>,
    #[serde(default)]
    pub virtual_server: Vec<S<RawVirtualServer>>,
    #[serde(default)]
    pub vrrp_instance: Vec<S<super::vrrp::RawVrrpInstance>>,
    #[serde(default)]
    pub vrrp_sync_group: Vec<S<super::vrrp::RawVrrpSyncGroup>>,
    #[serde(default)]
    pub vrrp_script: Vec<S<super::vrrp::RawVrrpScript>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGlobal {
    pub workers: Option<S<i64>>,
    pub cores: Option<S<Vec<i64>>>,
    pub io: Option<S<String>>,
    pub xdp_mode: Option<S<String>>,
    pub batch_size: Option<S<i64>>,
    pub admin_socket: Option<S<String>>,
    pub metrics: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConn {
    pub max_conns: Option<S<i64>>,
    pub shards: Option<S<i64>>,
    pub timeouts: Option<RawTimeouts>,
}

/// Seconds; `tcp`, `tcpfin` and `udp` are ipvsadm's `--set` names.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub tcp: Option<S<i64>>,
    pub tcpfin: Option<S<i64>>,
    pub udp: Option<S<i64>>,
    pub syn_sent: Option<S<i64>>,
    pub syn_recv: Option<S<i64>>,
    pub time_wait: Option<S<i64>>,
    pub close: Option<S<i64>>,
    pub close_wait: Option<S<i64>>,
    pub last_ack: Option<S<i64>>,
    pub listen: Option<S<i64>>,
    pub synack: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterface {
    pub name: S<String>,
    pub mac: Option<S<String>>,
    #[serde(default)]
    pub address: Vec<S<String>>,
    pub mtu: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: S<String>,
    pub via: Option<S<String>>,
    pub interface: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNeighbour {
    pub address: S<String>,
    pub mac: S<String>,
    pub interface: S<String>,
}

/// keepalived's `virtual_server` block.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVirtualServer {
    pub name: Option<S<String>>,
    pub vip: S<String>,
    pub port: S<i64>,
    pub protocol: Option<S<String>>,
    pub lb_algo: Option<S<String>>,
    pub lb_kind: Option<S<String>>,
    pub persistence_timeout: Option<S<i64>>,
    /// An IPv4 netmask ("255.255.255.0") or a prefix length (24, "/24").
    pub persistence_granularity: Option<S<toml::Value>>,
    pub sched_flags: Option<S<Vec<String>>>,
    pub mh_table_size: Option<S<i64>>,
    pub laddr: Option<S<Vec<String>>>,
    pub expire_nodest_conn: Option<S<bool>>,
    /// Seconds between health checks of every real server (a checker may set its own).
    pub delay_loop: Option<S<toml::Value>>,
    pub alpha: Option<S<bool>>,
    pub quorum: Option<S<i64>>,
    pub hysteresis: Option<S<i64>>,
    pub quorum_up: Option<S<String>>,
    pub quorum_down: Option<S<String>>,
    pub sorry_server: Option<S<RawSorryServer>>,
    pub sorry_server_inhibit: Option<S<bool>>,
    #[serde(default)]
    pub real_server: Vec<S<RawRealServer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSorryServer {
    pub address: S<String>,
    pub port: Option<S<i64>>,
}

/// keepalived's `real_server` block.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRealServer {
    pub address: S<String>,
    pub port: Option<S<i64>>,
    pub weight: Option<S<i64>>,
    pub inhibit_on_failure: Option<S<bool>>,
    pub notify_up: Option<S<String>>,
    pub notify_down: Option<S<String>>,
    #[serde(rename = "TCP_CHECK")]
    pub tcp_check: Option<S<RawCheck>>,
    #[serde(rename = "HTTP_GET")]
    pub http_get: Option<S<RawCheck>>,
    #[serde(rename = "SSL_GET")]
    pub ssl_get: Option<S<RawCheck>>,
    #[serde(rename = "MISC_CHECK")]
    pub misc_check: Option<S<RawCheck>>,
}

/// Every option of every checker; `resolve` refuses those that do not apply to the block's kind.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub connect_ip: Option<S<String>>,
    pub connect_port: Option<S<i64>>,
    pub bindto: Option<S<String>>,
    pub bind_port: Option<S<i64>>,
    /// Seconds, integer or decimal.
    pub connect_timeout: Option<S<toml::Value>>,
    pub retry: Option<S<i64>>,
    /// keepalived's older name for `retry`.
    pub nb_get_retry: Option<S<i64>>,
    pub delay_before_retry: Option<S<toml::Value>>,
    pub delay_loop: Option<S<toml::Value>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub alpha: Option<S<bool>>,
    #[serde(default)]
    pub url: Vec<S<RawUrl>>,
    pub virtualhost: Option<S<String>>,
    pub http_protocol: Option<S<String>>,
    pub verify_cert: Option<S<bool>>,
    pub ca_file: Option<S<String>>,
    pub enable_sni: Option<S<bool>>,
    pub misc_path: Option<S<String>>,
    pub misc_timeout: Option<S<toml::Value>>,
    pub misc_dynamic: Option<S<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUrl {
    pub path: S<String>,
    /// A code, a "200-299" range, or a list of either.
    pub status_code: Option<S<toml::Value>>,
    pub digest: Option<S<String>>,
}
