//! Client helpers for the lab and the end-to-end tests: HTTP and UDP traffic to a service, counted
//! per answering real server. Each runs on a thread inside the given namespace (usually `P-cli`), with
//! every socket operation bounded by [`TIMEOUT`].

use std::collections::BTreeMap;
use std::io::{self, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::netns::{Netns, Result};
use super::serve::{pattern_byte, read_response};

/// Bound on every connect, read and write.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Answers counted by the real-server name they carried.
pub type Counts = BTreeMap<String, usize>;

fn invalid(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

fn connect(addr: SocketAddr) -> io::Result<(BufReader<TcpStream>, TcpStream)> {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok((BufReader::new(s.try_clone()?), s))
}

fn get(r: &mut BufReader<TcpStream>, w: &mut TcpStream, path: &str) -> io::Result<Vec<u8>> {
    write!(w, "GET {path} HTTP/1.1\r\nHost: xvs-lab\r\n\r\n")?;
    let (status, body) = read_response(r)?;
    if status != 200 {
        return Err(invalid(format!("GET {path}: status {status}")));
    }
    Ok(body)
}

fn server_name(body: &[u8]) -> String {
    String::from_utf8_lossy(body).trim_end().to_string()
}

/// `n` GETs of `/`, each on a new connection; counts per server name.
pub fn http_counts_here(addr: SocketAddr, n: usize) -> io::Result<Counts> {
    let mut counts = Counts::new();
    for _ in 0..n {
        let (mut r, mut w) = connect(addr)?;
        *counts.entry(server_name(&get(&mut r, &mut w, "/")?)).or_default() += 1;
    }
    Ok(counts)
}

/// `n` GETs of `/` on one connection; the one server name, or an error if any answer differs.
pub fn http_rounds_here(addr: SocketAddr, n: usize) -> io::Result<String> {
    let (mut r, mut w) = connect(addr)?;
    let first = server_name(&get(&mut r, &mut w, "/")?);
    for i in 1..n {
        let name = server_name(&get(&mut r, &mut w, "/")?);
        if name != first {
            return Err(invalid(format!("round {i} answered by {name}, round 0 by {first}")));
        }
    }
    Ok(first)
}

/// GETs `/bytes/len` and checks every byte; the number of bytes verified.
pub fn http_bytes_here(addr: SocketAddr, len: usize) -> io::Result<usize> {
    let (mut r, mut w) = connect(addr)?;
    let body = get(&mut r, &mut w, &format!("/bytes/{len}"))?;
    if body.len() != len {
        return Err(invalid(format!("got {} bytes, asked {len}", body.len())));
    }
    if let Some(i) = (0..len).find(|&i| body[i] != pattern_byte(i)) {
        return Err(invalid(format!("byte {i} is {}, not {}", body[i], pattern_byte(i))));
    }
    Ok(len)
}

/// `n` UDP echo requests, each from a new source port; counts per server name.
pub fn udp_counts_here(addr: SocketAddr, n: usize) -> io::Result<Counts> {
    udp_sized_here(addr, n, 0)
}

/// [`udp_counts_here`] with datagrams of at least `size` bytes: past the path MTU they travel in
/// fragments, the request and the echo.
pub fn udp_sized_here(addr: SocketAddr, n: usize, size: usize) -> io::Result<Counts> {
    let mut counts = Counts::new();
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal address")
    } else {
        "[::]:0".parse().expect("literal address")
    };
    let mut buf = vec![0u8; 65536];
    // Every socket stays open until the end: the kernel picks UDP source ports at random, and a
    // port closed and picked again would be the same flow to xvs (no new scheduling decision).
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.connect(addr)?;
        let mut payload = format!("xvs-lab {i}").into_bytes();
        let head = payload.len();
        payload.extend((head..size).map(pattern_byte));
        s.send(&payload)?;
        let got = s.recv(&mut buf)?;
        let echo = &buf[..got];
        let name = echo
            .strip_suffix(payload.as_slice())
            .and_then(|h| h.strip_suffix(b" "))
            .ok_or_else(|| {
                invalid(format!(
                    "echo of {} bytes {:?}... does not end with the {} bytes sent",
                    got,
                    String::from_utf8_lossy(&echo[..got.min(40)]),
                    payload.len()
                ))
            })?;
        *counts.entry(String::from_utf8_lossy(name).into_owned()).or_default() += 1;
        open.push(s);
    }
    Ok(counts)
}

/// Sends one ICMP(v6) echo request to `to` with a raw socket and waits for the reply.
pub fn ping_here(to: IpAddr) -> io::Result<Duration> {
    let (domain, proto, req_type, rep_type) = match to {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128, 129),
    };
    let sock = socket2_raw(domain, proto)?;
    let ident = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![req_type, 0, 0, 0];
    pkt.extend_from_slice(&ident.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"xvs-lab-ping");
    if to.is_ipv4() {
        let c = !checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    } // the kernel fills the ICMPv6 checksum of raw ICMPv6 sockets
    let start = Instant::now();
    sock.send_to(&pkt, to)?;
    let mut buf = [0u8; 1500];
    while start.elapsed() < TIMEOUT {
        let n = sock.recv(&mut buf)?;
        // Raw IPv4 sockets hand over the IP header too; IPv6 ones do not.
        let icmp = if to.is_ipv4() {
            let ihl = usize::from(buf.first().copied().unwrap_or(0) & 0x0f) * 4;
            buf.get(ihl..n).unwrap_or(&[])
        } else {
            &buf[..n]
        };
        if icmp.len() >= 8 && icmp[0] == rep_type && icmp[4..6] == ident.to_be_bytes() {
            return Ok(start.elapsed());
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no echo reply"))
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A minimal raw ICMP socket (std has none).
struct RawSock(std::os::fd::OwnedFd);

fn socket2_raw(domain: i32, proto: i32) -> io::Result<RawSock> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket creation; the fd is owned by the returned value.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let s = RawSock(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    let tv = libc::timeval {
        tv_sec: TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: tv is a valid timeval for the duration of the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    Ok(s)
}

impl RawSock {
    fn send_to(&self, buf: &[u8], to: IpAddr) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let rc = match to {
            IpAddr::V4(a) => {
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: buf and sa are valid for the given lengths during the call.
                unsafe {
                    libc::sendto(
                        self.0.as_raw_fd(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        0,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                }
            }
            IpAddr::V6(a) => {
                let sa = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: 0,
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr { s6_addr: a.octets() },
                    sin6_scope_id: 0,
                };
                // SAFETY: buf and sa are valid for the given lengths during the call.
                unsafe {
                    libc::sendto(
                        self.0.as_raw_fd(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        0,
                        (&sa as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                }
            }
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: buf is valid for writes of its length during the call.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// [`http_counts_here`] inside namespace `ns`.
pub fn http_counts(ns: &Netns, addr: SocketAddr, n: usize) -> Result<Counts> {
    ns.run(move || http_counts_here(addr, n))
}

/// [`http_rounds_here`] inside namespace `ns`.
pub fn http_rounds(ns: &Netns, addr: SocketAddr, n: usize) -> Result<String> {
    ns.run(move || http_rounds_here(addr, n))
}

/// [`http_bytes_here`] inside namespace `ns`.
pub fn http_bytes(ns: &Netns, addr: SocketAddr, len: usize) -> Result<usize> {
    ns.run(move || http_bytes_here(addr, len))
}

/// [`udp_counts_here`] inside namespace `ns`.
pub fn udp_counts(ns: &Netns, addr: SocketAddr, n: usize) -> Result<Counts> {
    ns.run(move || udp_counts_here(addr, n))
}

/// [`udp_sized_here`] inside namespace `ns`.
pub fn udp_sized(ns: &Netns, addr: SocketAddr, n: usize, size: usize) -> Result<Counts> {
    ns.run(move || udp_sized_here(addr, n, size))
}

/// [`ping_here`] inside namespace `ns`.
pub fn ping(ns: &Netns, to: IpAddr) -> Result<Duration> {
    ns.run(move || ping_here(to))
}

#[cfg(test)]
mod tests {
    use super::super::serve::{ServeOpts, start};
    use super::*;

    #[test]
    fn helpers_against_local_servers() {
        let s = start(&ServeOpts {
            name: "rs5".into(),
            http_port: 0,
            udp_port: 0,
            https_port: None,
            ca_out: None,
        })
        .unwrap();
        let http: SocketAddr = ([127, 0, 0, 1], s.http.port()).into();
        let udp: SocketAddr = ([127, 0, 0, 1], s.udp.port()).into();
        assert_eq!(http_counts_here(http, 5).unwrap()["rs5"], 5);
        assert_eq!(http_rounds_here(http, 50).unwrap(), "rs5");
        assert_eq!(http_bytes_here(http, 1 << 20).unwrap(), 1 << 20);
        assert_eq!(udp_counts_here(udp, 5).unwrap()["rs5"], 5);
        assert_eq!(udp_sized_here(udp, 2, 5000).unwrap()["rs5"], 2);
    }

    #[test]
    fn checksum_of_known_header() {
        // RFC 1071 example words.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
    }
}
