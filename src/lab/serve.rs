//! The lab's real-server applications (`xvs lab serve`): a threaded HTTP/1.1 server that names its
//! host, and a UDP echo server that prefixes its name; optionally the same HTTP server over TLS
//! (rustls, with a certificate from a throwaway lab CA) for SSL_GET checks. Nothing is logged per
//! request.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Largest `/bytes/N` body served, so a request cannot make the server allocate without bound.
pub const MAX_BYTES: usize = 64 << 20;
/// Most concurrent HTTP connections; more are closed at once rather than spawning threads.
const MAX_CONNS: usize = 512;
/// An idle keep-alive connection is closed after this long.
const IDLE: Duration = Duration::from_secs(30);
/// Longest request head accepted.
const MAX_HEAD: usize = 8192;

/// Byte `i` of the deterministic `/bytes/N` body (251 is prime, so shifts and repeats show).
pub fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// What to serve and where.
#[derive(Clone, Debug)]
pub struct ServeOpts {
    /// Name answered by `GET /` and prefixed to UDP echoes.
    pub name: String,
    /// TCP port of the HTTP server (0 picks one).
    pub http_port: u16,
    /// UDP port of the echo server (0 picks one).
    pub udp_port: u16,
    /// TCP port of the HTTPS server, if any (0 picks one).
    pub https_port: Option<u16>,
    /// Sign the HTTPS server's certificate (for the name [`TLS_NAME`]) with a new CA and write the
    /// CA's certificate (PEM) here; without it the certificate is self-signed.
    pub ca_out: Option<std::path::PathBuf>,
}

/// The name in the HTTPS server's certificate.
pub const TLS_NAME: &str = "xvs-lab";

/// Running servers: their bound addresses.
#[derive(Debug)]
pub struct Servers {
    /// Where the HTTP server listens.
    pub http: SocketAddr,
    /// Where the UDP echo server listens.
    pub udp: SocketAddr,
    /// Where the HTTPS server listens.
    pub https: Option<SocketAddr>,
}

/// Binds both servers on all addresses (IPv6 socket, dual stack) and serves them on background threads.
pub fn start(opts: &ServeOpts) -> io::Result<Servers> {
    let any = Ipv6Addr::UNSPECIFIED;
    let listener = TcpListener::bind((any, opts.http_port))?;
    let udp = UdpSocket::bind((any, opts.udp_port))?;
    let tls = match opts.https_port {
        Some(p) => Some((TcpListener::bind((any, p))?, tls_server(opts.ca_out.as_deref())?)),
        None => None,
    };
    let servers = Servers {
        http: listener.local_addr()?,
        udp: udp.local_addr()?,
        https: tls.as_ref().map(|t| t.0.local_addr()).transpose()?,
    };
    let name: Arc<str> = Arc::from(opts.name.as_str());
    let n = name.clone();
    thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || accept_loop(listener, n, None))?;
    if let Some((l, cfg)) = tls {
        let n = name.clone();
        thread::Builder::new()
            .name("https-accept".into())
            .spawn(move || accept_loop(l, n, Some(cfg)))?;
    }
    thread::Builder::new()
        .name("udp-echo".into())
        .spawn(move || udp_loop(udp, &name))?;
    Ok(servers)
}

/// Serves until killed.
pub fn serve(opts: &ServeOpts) -> io::Result<()> {
    start(opts)?;
    loop {
        thread::park();
    }
}

fn udp_loop(sock: UdpSocket, name: &str) {
    let pktinfo = enable_pktinfo(&sock).is_ok();
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(65536 + name.len() + 1);
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    let head = out.len();
    loop {
        let got = if pktinfo {
            recv_with_dst(&sock, &mut buf)
        } else {
            sock.recv_from(&mut buf).map(|(n, f)| (n, f, None))
        };
        let Ok((n, from, dst)) = got else {
            continue;
        };
        out.truncate(head);
        out.extend_from_slice(&buf[..n]);
        // A lost echo is the client's to notice; UDP promises nothing more.
        let _ = match dst {
            Some(dst) => send_from(&sock, &out, from, dst),
            None => sock.send_to(&out, from).map(drop),
        };
    }
}

/// Asks for each datagram's destination address: a DR or TUN real server must answer from the VIP
/// it was addressed to, which a wildcard-bound socket does not do by itself.
fn enable_pktinfo(sock: &UdpSocket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the duration of the call on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Control buffer large enough for one `in6_pktinfo`, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

fn recv_with_dst(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<libc::in6_addr>)> {
    // SAFETY: all-zero is a valid sockaddr_in6, msghdr and control buffer.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut ctl = Cmsg([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.0.as_mut_ptr().cast();
    msg.msg_controllen = ctl.0.len();
    // SAFETY: every pointer in msg refers to a live local buffer of the stated length.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut dst = None;
    // SAFETY: msg was filled by recvmsg; the CMSG macros stay within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                dst = Some(info.ipi6_addr);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let ip = Ipv6Addr::from(from.sin6_addr.s6_addr);
    let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
    let from = SocketAddr::new(ip, u16::from_be(from.sin6_port));
    Ok((n as usize, from, dst))
}

fn send_from(sock: &UdpSocket, data: &[u8], to: SocketAddr, src: libc::in6_addr) -> io::Result<()> {
    let to6 = match to.ip() {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    // SAFETY: all-zero is a valid sockaddr_in6, msghdr and control buffer.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_port = to.port().to_be();
    sa.sin6_addr.s6_addr = to6.octets();
    let mut ctl = Cmsg([0; 64]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut sa as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) } as usize;
    // SAFETY: the control buffer (64 bytes) holds one in6_pktinfo cmsg; the kernel only reads
    // the buffers msg points to, all alive for the call. Interface 0 lets routing pick the way out.
    let n = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::IPPROTO_IPV6;
        (*c).cmsg_type = libc::IPV6_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
        let info = libc::in6_pktinfo {
            ipi6_addr: src,
            ipi6_ifindex: 0,
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
        libc::sendmsg(sock.as_raw_fd(), &msg, 0)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A server configuration for [`TLS_NAME`] and the loopback addresses: self-signed, or, when
/// `ca_out` is given, signed by a CA made on the spot whose certificate goes there (for clients
/// that verify).
fn tls_server(ca_out: Option<&std::path::Path>) -> io::Result<Arc<rustls::ServerConfig>> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let err = |e: rcgen::Error| io::Error::other(e.to_string());
    let key = KeyPair::generate().map_err(err)?;
    let leaf = CertificateParams::new(vec![TLS_NAME.to_string(), "127.0.0.1".into(), "::1".into()]).map_err(err)?;
    let chain = match ca_out {
        None => vec![leaf.self_signed(&key).map_err(err)?.der().clone()],
        Some(path) => {
            let ca_key = KeyPair::generate().map_err(err)?;
            let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name.push(rcgen::DnType::CommonName, "xvs lab CA");
            let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
            let cert = leaf.signed_by(&key, &ca_cert, &ca_key).map_err(err)?;
            std::fs::write(path, ca_cert.pem())?;
            vec![cert.der().clone(), ca_cert.der().clone()]
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, der.into())
        .map_err(io::Error::other)?;
    Ok(Arc::new(cfg))
}

fn accept_loop(listener: TcpListener, name: Arc<str>, tls: Option<Arc<rustls::ServerConfig>>) {
    let live = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if live.fetch_add(1, Ordering::Relaxed) >= MAX_CONNS {
            live.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let (name, conn_live, tls) = (name.clone(), live.clone(), tls.clone());
        let spawned = thread::Builder::new().spawn(move || {
            let _ = serve_conn(stream, &name, tls);
            conn_live.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            // The closure (and its counter decrement) never ran.
            live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A parsed request head: the target and whether the client asked to close.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    target: String,
    close: bool,
}

/// Reads one request head; `None` at a clean end of stream.
fn read_request<R: BufRead>(r: &mut R) -> io::Result<Option<Request>> {
    let mut line = String::new();
    let mut total = 0;
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    total += line.len();
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request line"));
    };
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        close: version == "HTTP/1.0",
    };
    loop {
        let mut h = String::new();
        let n = r.read_line(&mut h)?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request head"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            return Ok(Some(req));
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("connection") {
                let v = v.trim();
                if v.eq_ignore_ascii_case("close") {
                    req.close = true;
                } else if v.eq_ignore_ascii_case("keep-alive") {
                    req.close = false;
                }
            }
        }
    }
}

fn serve_conn(stream: TcpStream, name: &str, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    match tls {
        None => handle_conn(stream, name),
        Some(cfg) => {
            let conn = rustls::ServerConnection::new(cfg).map_err(io::Error::other)?;
            let mut s = rustls::StreamOwned::new(conn, stream);
            handle_conn(&mut s, name)?;
            s.conn.send_close_notify();
            s.flush()
        }
    }
}

fn handle_conn<S: Read + Write>(stream: S, name: &str) -> io::Result<()> {
    let mut r = BufReader::new(stream);
    let body_name = format!("{name}\n");
    while let Some(req) = read_request(&mut r)? {
        let w = r.get_mut();
        let conn = if req.close { "close" } else { "keep-alive" };
        if req.method != "GET" {
            write!(
                w,
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: {conn}\r\n\r\n"
            )?;
        } else if req.target == "/" {
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{body_name}",
                body_name.len()
            )?;
        } else if let Some(n) = req
            .target
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= MAX_BYTES)
        {
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: {conn}\r\n\r\n"
            )?;
            let mut chunk = [0u8; 16 * 251];
            let mut sent = 0;
            while sent < n {
                let len = chunk.len().min(n - sent);
                // The chunk length is a multiple of 251, so every chunk starts the pattern afresh.
                for (i, b) in chunk[..len].iter_mut().enumerate() {
                    *b = pattern_byte(sent + i);
                }
                w.write_all(&chunk[..len])?;
                sent += len;
            }
        } else {
            write!(
                w,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: {conn}\r\n\r\n"
            )?;
        }
        if req.close {
            break;
        }
    }
    Ok(())
}

/// Reads one HTTP/1.1 response with a Content-Length: (status, body).
pub fn read_response<R: BufRead>(r: &mut R) -> io::Result<(u16, Vec<u8>)> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut len = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(bad("truncated response head"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = Some(v.trim().parse::<usize>().map_err(|_| bad("bad length"))?);
            }
        }
    }
    let len = len.ok_or_else(|| bad("no content-length"))?;
    if len > MAX_BYTES {
        return Err(bad("response too large"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::Ipv4Addr;

    fn servers(name: &str) -> Servers {
        start(&ServeOpts {
            name: name.into(),
            http_port: 0,
            udp_port: 0,
            https_port: None,
            ca_out: None,
        })
        .unwrap()
    }

    fn get(r: &mut BufReader<TcpStream>, w: &mut TcpStream, path: &str) -> (u16, Vec<u8>) {
        write!(w, "GET {path} HTTP/1.1\r\nHost: lab\r\n\r\n").unwrap();
        read_response(r).unwrap()
    }

    fn connect(s: &Servers, v6: bool) -> (BufReader<TcpStream>, TcpStream) {
        let addr: SocketAddr = if v6 {
            (Ipv6Addr::LOCALHOST, s.http.port()).into()
        } else {
            (Ipv4Addr::LOCALHOST, s.http.port()).into()
        };
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (BufReader::new(w.try_clone().unwrap()), w)
    }

    #[test]
    fn keep_alive_connection_answers_many_rounds_over_both_families() {
        let s = servers("rs9");
        for v6 in [false, true] {
            let (mut r, mut w) = connect(&s, v6);
            for _ in 0..200 {
                assert_eq!(get(&mut r, &mut w, "/"), (200, b"rs9\n".to_vec()));
            }
        }
    }

    #[test]
    fn bytes_body_follows_the_pattern_and_unknown_paths_are_404() {
        let s = servers("rs9");
        let (mut r, mut w) = connect(&s, false);
        let (st, body) = get(&mut r, &mut w, "/bytes/100000");
        assert_eq!(st, 200);
        assert_eq!(body.len(), 100_000);
        assert!(body.iter().enumerate().all(|(i, b)| *b == pattern_byte(i)));
        assert_eq!(body[251], 0);
        assert_eq!(get(&mut r, &mut w, "/nope").0, 404);
        assert_eq!(get(&mut r, &mut w, "/bytes/999999999999").0, 404);
        assert_eq!(get(&mut r, &mut w, "/").1, b"rs9\n");
    }

    #[test]
    fn connection_close_ends_the_connection() {
        let s = servers("rs9");
        let (mut r, mut w) = connect(&s, false);
        write!(w, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut r).unwrap().1, b"rs9\n");
        let mut rest = Vec::new();
        assert_eq!(r.read_to_end(&mut rest).unwrap(), 0);
    }

    #[test]
    fn garbage_request_closes_without_killing_the_server() {
        let s = servers("rs9");
        let (mut r, mut w) = connect(&s, false);
        w.write_all(b"\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        let (mut r, mut w) = connect(&s, false);
        assert_eq!(get(&mut r, &mut w, "/").0, 200);
    }

    #[test]
    fn udp_echo_prefixes_the_name() {
        let s = servers("rs7");
        let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(b"ping 1", (Ipv4Addr::LOCALHOST, s.udp.port())).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"rs7 ping 1");
    }

    #[test]
    fn udp_echo_answers_from_the_address_it_was_sent_to() {
        // 127.0.0.2 is local but not the source routing would pick (127.0.0.1), like a VIP on lo.
        let s = servers("rs7");
        let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), s.udp.port()));
        c.send_to(b"x", to).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"rs7 x");
        assert_eq!(from, to);
    }

    #[test]
    fn request_head_parsing() {
        let mut r = io::Cursor::new(b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n".to_vec());
        let req = read_request(&mut r).unwrap().unwrap();
        assert_eq!(req.target, "/x");
        assert!(req.close, "HTTP/1.0 closes by default");
        let mut r = io::Cursor::new(b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec());
        assert!(read_request(&mut r).is_err(), "truncated head");
        let mut r = io::Cursor::new(Vec::new());
        assert!(read_request(&mut r).unwrap().is_none());
    }
}
