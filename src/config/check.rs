//! Health-check options: keepalived's `TCP_CHECK`, `HTTP_GET`, `SSL_GET` and `MISC_CHECK` blocks
//! (TOML tables of the same names under a `real_server`), and the service-level quorum, hysteresis
//! and sorry server. Defaults are keepalived's.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::raw::{RawCheck, RawRealServer, RawUrl, RawVirtualServer, S};
use super::resolve::Errs;
use super::*;
use crate::check::Policy;

/// keepalived's defaults.
const DELAY_LOOP: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY: u32 = 1;
const DELAY_BEFORE_RETRY: Duration = Duration::from_secs(1);

/// Seconds from an integer or a decimal, within `lo..=hi`.
pub(super) fn seconds(e: &mut Errs, v: &S<toml::Value>, key: &str, lo: f64, hi: f64) -> Option<Duration> {
    let x = match v.get_ref() {
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        other => {
            e.at(v.span(), key, format!("{other} is not a number of seconds"));
            return None;
        }
    };
    if !(lo..=hi).contains(&x) {
        e.at(v.span(), key, format!("{x} s is out of range {lo}..={hi}"));
        return None;
    }
    Some(Duration::from_secs_f64(x))
}

/// What every checker of a service inherits.
pub(super) struct Inherited {
    pub delay_loop: Duration,
    pub alpha: bool,
}

pub(super) fn inherited(e: &mut Errs, r: &RawVirtualServer, k: &str) -> Inherited {
    Inherited {
        delay_loop: r
            .delay_loop
            .as_ref()
            .and_then(|v| seconds(e, v, &format!("{k}.delay_loop"), 0.01, 86400.0))
            .unwrap_or(DELAY_LOOP),
        alpha: r.alpha.as_ref().is_some_and(|v| *v.get_ref()),
    }
}

/// Quorum, hysteresis, their scripts and the sorry server of a service.
pub(super) fn service_health(
    e: &mut Errs,
    r: &RawVirtualServer,
    k: &str,
    vip: Option<IpAddr>,
    port: Option<u16>,
    method: Option<Method>,
) -> ServiceHealth {
    let mut h = ServiceHealth::default();
    if let Some(v) = &r.quorum
        && let Some(q) = e.int::<u32>(v, &format!("{k}.quorum"), 1, 1 << 24)
    {
        h.quorum = q;
    }
    if let Some(v) = &r.hysteresis
        && let Some(n) = e.int::<u32>(v, &format!("{k}.hysteresis"), 0, 1 << 24)
    {
        if n >= h.quorum {
            e.at(
                v.span(),
                format!("{k}.hysteresis"),
                format!("{n} must be smaller than the quorum ({})", h.quorum),
            );
        }
        h.hysteresis = n;
    }
    h.quorum_up = script(e, r.quorum_up.as_ref(), &format!("{k}.quorum_up"));
    h.quorum_down = script(e, r.quorum_down.as_ref(), &format!("{k}.quorum_down"));
    let inhibit = r.sorry_server_inhibit.as_ref().is_some_and(|v| *v.get_ref());
    match &r.sorry_server {
        Some(s) => {
            let sk = format!("{k}.sorry_server");
            let raw = s.get_ref();
            let addr = e.ip(&raw.address, &format!("{sk}.address"));
            let sport = match &raw.port {
                Some(p) => e.int::<u16>(p, &format!("{sk}.port"), 1, 65535),
                None => port,
            };
            if let (Some(a), Some(v)) = (addr, vip)
                && a.is_ipv4() != v.is_ipv4()
            {
                e.at(
                    raw.address.span(),
                    format!("{sk}.address"),
                    format!("{a} is not of the VIP's address family"),
                );
            }
            if let (Some(Method::Dr | Method::Tun), Some(sp), Some(vp)) = (method, sport, port)
                && sp != vp
            {
                e.at(
                    s.span(),
                    format!("{sk}.port"),
                    format!("DR and TUN cannot change the port: {sp} differs from {vp}"),
                );
            }
            if let (Some(addr), Some(port)) = (addr, sport) {
                h.sorry_server = Some(SorryServer { addr, port, inhibit });
            }
        }
        None => {
            if let Some(v) = &r.sorry_server_inhibit {
                e.at(
                    v.span(),
                    format!("{k}.sorry_server_inhibit"),
                    "there is no sorry_server",
                );
            }
        }
    }
    h
}

fn script(e: &mut Errs, v: Option<&S<String>>, key: &str) -> Option<String> {
    let v = v?;
    if v.get_ref().trim().is_empty() {
        e.at(v.span(), key, "empty command");
        return None;
    }
    Some(v.get_ref().clone())
}

/// The checkers of one real server.
pub(super) fn server_checks(
    e: &mut Errs,
    rs: &RawRealServer,
    rk: &str,
    addr: Option<IpAddr>,
    port: Option<u16>,
    inh: &Inherited,
) -> (Vec<Check>, Option<String>, Option<String>) {
    let mut checks = Vec::new();
    let blocks = [
        ("TCP_CHECK", &rs.tcp_check),
        ("HTTP_GET", &rs.http_get),
        ("SSL_GET", &rs.ssl_get),
        ("MISC_CHECK", &rs.misc_check),
    ];
    for (name, block) in blocks {
        if let Some(b) = block
            && let Some(c) = one(e, name, b, &format!("{rk}.{name}"), addr, port, inh)
        {
            checks.push(c);
        }
    }
    let up = script(e, rs.notify_up.as_ref(), &format!("{rk}.notify_up"));
    let down = script(e, rs.notify_down.as_ref(), &format!("{rk}.notify_down"));
    (checks, up, down)
}

fn one(
    e: &mut Errs,
    name: &str,
    block: &S<RawCheck>,
    k: &str,
    addr: Option<IpAddr>,
    port: Option<u16>,
    inh: &Inherited,
) -> Option<Check> {
    let before = e.list.len();
    let c = block.get_ref();
    let misc = name == "MISC_CHECK";
    let http = name == "HTTP_GET" || name == "SSL_GET";
    let ssl = name == "SSL_GET";
    // Options that do not belong to this kind of checker.
    let span = |v: Option<std::ops::Range<usize>>| v;
    let misplaced: [(&str, Option<std::ops::Range<usize>>, bool); 14] = [
        ("connect_ip", span(c.connect_ip.as_ref().map(|v| v.span())), !misc),
        ("connect_port", span(c.connect_port.as_ref().map(|v| v.span())), !misc),
        ("bindto", span(c.bindto.as_ref().map(|v| v.span())), !misc),
        ("bind_port", span(c.bind_port.as_ref().map(|v| v.span())), !misc),
        (
            "connect_timeout",
            span(c.connect_timeout.as_ref().map(|v| v.span())),
            !misc,
        ),
        ("url", c.url.first().map(|v| v.span()), http),
        ("virtualhost", span(c.virtualhost.as_ref().map(|v| v.span())), http),
        ("http_protocol", span(c.http_protocol.as_ref().map(|v| v.span())), http),
        ("verify_cert", span(c.verify_cert.as_ref().map(|v| v.span())), ssl),
        ("ca_file", span(c.ca_file.as_ref().map(|v| v.span())), ssl),
        ("enable_sni", span(c.enable_sni.as_ref().map(|v| v.span())), ssl),
        ("misc_path", span(c.misc_path.as_ref().map(|v| v.span())), misc),
        ("misc_timeout", span(c.misc_timeout.as_ref().map(|v| v.span())), misc),
        ("misc_dynamic", span(c.misc_dynamic.as_ref().map(|v| v.span())), misc),
    ];
    for (opt, sp, allowed) in misplaced {
        if let (Some(sp), false) = (sp, allowed) {
            e.at(sp, format!("{k}.{opt}"), format!("{name} has no option {opt}"));
        }
    }

    let connect_ip = c.connect_ip.as_ref().and_then(|v| e.ip(v, &format!("{k}.connect_ip")));
    let connect_port = c
        .connect_port
        .as_ref()
        .and_then(|v| e.int::<u16>(v, &format!("{k}.connect_port"), 1, 65535));
    let connect = match (connect_ip.or(addr), connect_port.or(port)) {
        (Some(a), Some(p)) => Some(SocketAddr::new(a, p)),
        _ => None,
    };
    let bind_ip = c.bindto.as_ref().and_then(|v| e.ip(v, &format!("{k}.bindto")));
    let bind_port = c
        .bind_port
        .as_ref()
        .and_then(|v| e.int::<u16>(v, &format!("{k}.bind_port"), 1, 65535));
    let bind = match (bind_ip, bind_port, connect) {
        (None, None, _) => None,
        (Some(b), _, Some(to)) if b.is_ipv4() != to.is_ipv4() => {
            let sp = c.bindto.as_ref().map(|v| v.span()).unwrap_or(block.span());
            e.at(
                sp,
                format!("{k}.bindto"),
                format!("{b} is not of the family of {}", to.ip()),
            );
            None
        }
        (b, p, to) => {
            let unspecified = match to.map(|t| t.is_ipv4()) {
                Some(false) => IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
                _ => IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED),
            };
            Some(SocketAddr::new(b.unwrap_or(unspecified), p.unwrap_or(0)))
        }
    };

    let delay_loop = c
        .delay_loop
        .as_ref()
        .and_then(|v| seconds(e, v, &format!("{k}.delay_loop"), 0.01, 86400.0))
        .unwrap_or(inh.delay_loop);
    let timeout_raw = if misc { &c.misc_timeout } else { &c.connect_timeout };
    let timeout_key = if misc { "misc_timeout" } else { "connect_timeout" };
    let timeout = timeout_raw
        .as_ref()
        .and_then(|v| seconds(e, v, &format!("{k}.{timeout_key}"), 0.001, 3600.0))
        // keepalived's misc_timeout defaults to the check interval.
        .unwrap_or(if misc { delay_loop } else { CONNECT_TIMEOUT });
    let retry_delay = c
        .delay_before_retry
        .as_ref()
        .and_then(|v| seconds(e, v, &format!("{k}.delay_before_retry"), 0.0, 86400.0))
        .unwrap_or(DELAY_BEFORE_RETRY);
    let retry = match (&c.retry, &c.nb_get_retry) {
        (Some(a), Some(_)) => {
            e.at(a.span(), format!("{k}.retry"), "give retry or nb_get_retry, not both");
            None
        }
        (Some(v), None) => e.int::<u32>(v, &format!("{k}.retry"), 0, 1000),
        (None, Some(v)) => e.int::<u32>(v, &format!("{k}.nb_get_retry"), 0, 1000),
        (None, None) => None,
    };
    let fall = match (&c.fall, retry) {
        (Some(v), Some(_)) => {
            e.at(
                v.span(),
                format!("{k}.fall"),
                "give retry or fall, not both (fall = retry + 1)",
            );
            None
        }
        (Some(v), None) => e.int::<u32>(v, &format!("{k}.fall"), 1, 1000),
        (None, r) => Some(r.unwrap_or(RETRY) + 1),
    };
    let rise = match &c.rise {
        Some(v) => e.int::<u32>(v, &format!("{k}.rise"), 1, 1000),
        None => Some(1),
    };
    let alpha = c.alpha.as_ref().map_or(inh.alpha, |v| *v.get_ref());

    let kind = if misc {
        match &c.misc_path {
            Some(p) if !p.get_ref().trim().is_empty() => Some(CheckKind::Misc(MiscCheck {
                path: p.get_ref().clone(),
                dynamic: c.misc_dynamic.as_ref().is_some_and(|v| *v.get_ref()),
            })),
            Some(p) => {
                e.at(p.span(), format!("{k}.misc_path"), "empty command");
                None
            }
            None => {
                e.at(block.span(), format!("{k}.misc_path"), "MISC_CHECK needs misc_path");
                None
            }
        }
    } else if http {
        let mut urls = Vec::new();
        for (j, u) in c.url.iter().enumerate() {
            if let Some(u) = url(e, u, &format!("{k}.url[{j}]")) {
                urls.push(u);
            }
        }
        if c.url.is_empty() {
            e.at(
                block.span(),
                format!("{k}.url"),
                format!("{name} needs at least one url = [{{ path = \"/\" }}]"),
            );
        }
        let http11 = match &c.http_protocol {
            None => false,
            Some(v) => match v.get_ref().as_str() {
                "1.0" | "1.0C" => false,
                "1.1" => true,
                other => {
                    e.at(
                        v.span(),
                        format!("{k}.http_protocol"),
                        format!("'{other}' is not 1.0, 1.0C or 1.1"),
                    );
                    false
                }
            },
        };
        let tls = ssl.then(|| TlsCheck {
            verify: c.verify_cert.as_ref().is_some_and(|v| *v.get_ref()),
            ca_file: c.ca_file.as_ref().map(|v| v.get_ref().into()),
            sni: c.enable_sni.as_ref().is_none_or(|v| *v.get_ref()),
        });
        if let (Some(f), Some(t)) = (&c.ca_file, &tls)
            && !t.verify
        {
            e.at(
                f.span(),
                format!("{k}.ca_file"),
                "ca_file is used only with verify_cert = true",
            );
        }
        Some(CheckKind::Http(HttpCheck {
            urls,
            virtualhost: c.virtualhost.as_ref().map(|v| v.get_ref().clone()),
            http11,
            tls,
        }))
    } else {
        Some(CheckKind::Tcp)
    };
    if e.list.len() != before {
        return None;
    }
    Some(Check {
        kind: kind?,
        // MISC_CHECK connects nowhere; keep the server's address for the logs.
        connect: connect?,
        bind,
        timeout,
        policy: Policy {
            interval: delay_loop,
            retry_delay,
            fall: fall?,
            rise: rise?,
            alpha,
        },
    })
}

fn url(e: &mut Errs, u: &S<RawUrl>, k: &str) -> Option<Url> {
    let r = u.get_ref();
    let path = r.path.get_ref();
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        e.at(
            r.path.span(),
            format!("{k}.path"),
            format!("'{path}' is not an absolute path without spaces"),
        );
    }
    let status = match &r.status_code {
        None => vec![(200, 299)],
        Some(v) => {
            let items: Vec<&toml::Value> = match v.get_ref() {
                toml::Value::Array(a) => a.iter().collect(),
                one => vec![one],
            };
            let mut out = Vec::new();
            for it in items {
                let range = match it {
                    toml::Value::Integer(n) => u16::try_from(*n).ok().map(|n| (n, n)),
                    toml::Value::String(s) => match s.split_once('-') {
                        Some((a, b)) => a.trim().parse().ok().zip(b.trim().parse().ok()),
                        None => s.trim().parse().ok().map(|n| (n, n)),
                    },
                    _ => None,
                };
                match range {
                    Some((a, b)) if (100..=599).contains(&a) && (a..=599).contains(&b) => out.push((a, b)),
                    _ => e.at(
                        v.span(),
                        format!("{k}.status_code"),
                        format!("{it} is not a status code (100..=599) or a range like \"200-299\""),
                    ),
                }
            }
            if out.is_empty() {
                e.at(v.span(), format!("{k}.status_code"), "no status code given");
            }
            out
        }
    };
    let digest = r.digest.as_ref().and_then(|d| {
        let s = d.get_ref();
        let parsed = (s.len() == 32)
            .then(|| {
                let mut out = [0u8; 16];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some(out)
            })
            .flatten();
        if parsed.is_none() {
            e.at(
                d.span(),
                format!("{k}.digest"),
                format!("'{s}' is not an MD5 digest (32 hex digits, as genhash prints)"),
            );
        }
        parsed
    });
    Some(Url {
        path: path.clone(),
        status,
        digest,
    })
}
