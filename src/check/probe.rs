//! One health probe in flight: a non-blocking TCP connect, HTTP GET or HTTPS GET, or a check
//! program. The engine polls the probe's descriptor and calls [`Probe::advance`] whenever it is
//! ready (or at any time: every step tolerates `WouldBlock`); the probe never blocks.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rustls::pki_types::ServerName;
use socket2::{Domain, Protocol, Socket, Type};

use super::state::Outcome;
use crate::config::{Check, CheckKind, HttpCheck, MiscCheck, Url};

/// Most of a response kept for its status and digest; a longer body is a failure.
const MAX_RESPONSE: usize = 1 << 20;

/// A probe in flight.
pub struct Probe {
    deadline: Instant,
    timeout: Duration,
    what: What,
}

enum What {
    /// Connecting (TCP_CHECK), or any HTTP(S) exchange for the URL at `url`.
    Net {
        stream: TcpStream,
        connected: bool,
        http: Option<Box<Http>>,
    },
    Misc {
        child: Child,
        /// Readable when the child exits (pidfd); `None` where pidfd_open is missing: polled.
        pidfd: Option<OwnedFd>,
        dynamic: bool,
    },
}

/// The HTTP side of a probe.
struct Http {
    check: HttpCheck,
    url: usize,
    request: Vec<u8>,
    sent: usize,
    response: Vec<u8>,
    tls: Option<rustls::ClientConnection>,
    tls_config: Option<Arc<rustls::ClientConfig>>,
}

/// What a probe asks of poll(2).
pub struct Interest {
    pub fd: RawFd,
    pub events: i16,
}

impl Probe {
    /// Starts a probe of `check` at `now`; a failure to even start is an immediate outcome.
    pub fn start(check: &Check, tls: Option<Arc<rustls::ClientConfig>>, now: Instant) -> Result<Probe, Outcome> {
        let what = match &check.kind {
            CheckKind::Misc(m) => spawn(m).map_err(|e| Outcome::Down(format!("cannot run '{}': {e}", m.path)))?,
            kind => {
                let stream = connect(check.connect, check.bind)
                    .map_err(|e| Outcome::Down(format!("connect: {}", reason(&e))))?;
                let http = match kind {
                    CheckKind::Http(h) => Some(Box::new(Http::new(h.clone(), 0, check.connect, tls)?)),
                    _ => None,
                };
                What::Net {
                    stream,
                    connected: false,
                    http,
                }
            }
        };
        Ok(Probe {
            deadline: now + check.timeout,
            timeout: check.timeout,
            what,
        })
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The descriptor and events to wait for; `None` for a check program without a pidfd.
    pub fn interest(&self) -> Option<Interest> {
        match &self.what {
            What::Net {
                stream,
                connected,
                http,
            } => {
                let events = match (connected, http) {
                    (false, _) => libc::POLLOUT,
                    (true, None) => libc::POLLOUT,
                    (true, Some(h)) => h.events(),
                };
                Some(Interest {
                    fd: stream.as_raw_fd(),
                    events,
                })
            }
            What::Misc { pidfd, .. } => pidfd.as_ref().map(|fd| Interest {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
            }),
        }
    }

    /// Makes what progress it can; `Some` when the probe is over. Past the deadline it is a failure.
    pub fn advance(&mut self, check: &Check, now: Instant) -> Option<Outcome> {
        let out = match &mut self.what {
            What::Net {
                stream,
                connected,
                http,
            } => {
                let step = net_step(stream, connected, http);
                match step {
                    Ok(Step::Done) => Some(Outcome::Up { weight: None }),
                    Ok(Step::NextUrl(u)) => {
                        // Each URL on its own connection, as keepalived does, with a fresh deadline.
                        let Some(h) = http.take() else {
                            return Some(Outcome::Down("internal: no HTTP state".into()));
                        };
                        match connect(check.connect, check.bind) {
                            Ok(s) => match Http::new(h.check, u, check.connect, h.tls_config) {
                                Ok(nh) => {
                                    *stream = s;
                                    *connected = false;
                                    *http = Some(Box::new(nh));
                                    self.deadline = now + self.timeout;
                                    None
                                }
                                Err(o) => Some(o),
                            },
                            Err(e) => Some(Outcome::Down(format!("connect: {}", reason(&e)))),
                        }
                    }
                    Ok(Step::Pending) => None,
                    Err(why) => Some(Outcome::Down(why)),
                }
            }
            What::Misc { child, dynamic, .. } => match child.try_wait() {
                Ok(Some(status)) => Some(misc_outcome(status, *dynamic)),
                Ok(None) => None,
                Err(e) => Some(Outcome::Down(format!("wait: {e}"))),
            },
        };
        if out.is_none() && now >= self.deadline {
            return Some(Outcome::Down(self.timed_out()));
        }
        out
    }

    fn timed_out(&mut self) -> String {
        let t = self.timeout.as_secs_f64();
        match &mut self.what {
            What::Net { connected: false, .. } => format!("connect timed out after {t} s"),
            What::Net { http: None, .. } => format!("timed out after {t} s"),
            What::Net { http: Some(h), .. } => {
                format!("no complete answer to GET {} within {t} s", h.check.urls[h.url].path)
            }
            What::Misc { child, .. } => {
                kill_group(child);
                format!("did not finish within {t} s (killed)")
            }
        }
    }
}

impl Drop for Probe {
    /// A check program is never left behind.
    fn drop(&mut self) {
        if let What::Misc { child, .. } = &mut self.what
            && let Ok(None) = child.try_wait()
        {
            kill_group(child);
        }
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory preconditions; the child leads its own process group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A short reason for an I/O error ("connection refused", not "Connection refused (os error 111)").
fn reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        _ => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_lowercase()
        }
    }
}

fn connect(to: SocketAddr, bind: Option<SocketAddr>) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    if let Some(b) = bind {
        s.set_reuse_address(true)?;
        if b.ip() != IpAddr::from([0, 0, 0, 0]) && b.is_ipv4() {
            // The source may be a VIP that VRRP has not given us yet.
            s.set_freebind(true)?;
        }
        s.bind(&b.into())?;
    }
    match s.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

enum Step {
    Pending,
    Done,
    NextUrl(usize),
}

fn net_step(stream: &mut TcpStream, connected: &mut bool, http: &mut Option<Box<Http>>) -> Result<Step, String> {
    if !*connected {
        if let Some(e) = stream.take_error().map_err(|e| format!("connect: {}", reason(&e)))? {
            return Err(format!("connect: {}", reason(&e)));
        }
        match stream.peer_addr() {
            Ok(_) => *connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(Step::Pending),
            Err(e) => return Err(format!("connect: {}", reason(&e))),
        }
    }
    match http {
        None => Ok(Step::Done),
        Some(h) => h.step(stream),
    }
}

impl Http {
    fn new(
        check: HttpCheck,
        url: usize,
        to: SocketAddr,
        tls_config: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Http, Outcome> {
        let host = check.virtualhost.clone().unwrap_or_else(|| match to.ip() {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        });
        let (version, extra) = if check.http11 {
            ("HTTP/1.1", "Connection: close\r\n")
        } else {
            ("HTTP/1.0", "")
        };
        let request = format!(
            "GET {} {version}\r\nUser-Agent: xvs health check\r\nHost: {host}\r\n{extra}\r\n",
            check.urls[url].path
        )
        .into_bytes();
        let tls = match (&check.tls, &tls_config) {
            (Some(_), Some(cfg)) => {
                let name = check.virtualhost.clone().unwrap_or_else(|| to.ip().to_string());
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| Outcome::Down(format!("TLS: '{name}' is not a server name")))?;
                let mut conn =
                    rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| Outcome::Down(format!("TLS: {e}")))?;
                conn.writer()
                    .write_all(&request)
                    .map_err(|e| Outcome::Down(format!("TLS: {e}")))?;
                Some(conn)
            }
            (Some(_), None) => return Err(Outcome::Down("TLS: no client configuration".into())),
            _ => None,
        };
        Ok(Http {
            check,
            url,
            request,
            sent: 0,
            response: Vec::new(),
            tls,
            tls_config,
        })
    }

    fn events(&self) -> i16 {
        match &self.tls {
            Some(c) if c.wants_write() => libc::POLLIN | libc::POLLOUT,
            Some(_) => libc::POLLIN,
            None if self.sent < self.request.len() => libc::POLLOUT,
            None => libc::POLLIN,
        }
    }

    fn step(&mut self, stream: &mut TcpStream) -> Result<Step, String> {
        let mut eof = false;
        let mut buf = [0u8; 16384];
        match &mut self.tls {
            None => {
                while self.sent < self.request.len() {
                    match stream.write(&self.request[self.sent..]) {
                        Ok(n) => self.sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Pending),
                        Err(e) => return Err(format!("send: {}", reason(&e))),
                    }
                }
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => self.push(&buf[..n])?,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(format!("receive: {}", reason(&e))),
                    }
                }
            }
            Some(conn) => {
                loop {
                    let mut progress = false;
                    while conn.wants_write() {
                        match conn.write_tls(stream) {
                            Ok(_) => progress = true,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(format!("TLS send: {}", reason(&e))),
                        }
                    }
                    if conn.wants_read() {
                        match conn.read_tls(stream) {
                            Ok(0) => eof = true,
                            Ok(_) => {
                                progress = true;
                                conn.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(format!("TLS receive: {}", reason(&e))),
                        }
                    }
                    loop {
                        match conn.reader().read(&mut buf) {
                            Ok(0) => {
                                eof = true;
                                break;
                            }
                            Ok(n) => {
                                self.response.extend_from_slice(&buf[..n]);
                                if self.response.len() > MAX_RESPONSE {
                                    return Err(format!("answer longer than {MAX_RESPONSE} bytes"));
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            // The peer closed TCP without close_notify: judge what arrived.
                            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                                eof = true;
                                break;
                            }
                            Err(e) => return Err(format!("TLS: {e}")),
                        }
                    }
                    if eof || !progress {
                        break;
                    }
                }
            }
        }
        match judge(&self.response, &self.check.urls[self.url], eof)? {
            false => Ok(Step::Pending),
            true if self.url + 1 < self.check.urls.len() => Ok(Step::NextUrl(self.url + 1)),
            true => Ok(Step::Done),
        }
    }

    fn push(&mut self, b: &[u8]) -> Result<(), String> {
        self.response.extend_from_slice(b);
        if self.response.len() > MAX_RESPONSE {
            return Err(format!("answer longer than {MAX_RESPONSE} bytes"));
        }
        Ok(())
    }
}

/// Whether `resp` (so far) passes the URL's test: `Ok(false)` while more must be read,
/// `Err(reason)` when it failed.
pub fn judge(resp: &[u8], url: &Url, eof: bool) -> Result<bool, String> {
    let Some(head_end) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        if eof {
            return Err(if resp.is_empty() {
                format!("GET {}: connection closed without an answer", url.path)
            } else {
                format!("GET {}: malformed answer", url.path)
            });
        }
        return Ok(false);
    };
    let head = String::from_utf8_lossy(&resp[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let code = match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(c)) if v.starts_with("HTTP/") => c,
        _ => {
            return Err(format!(
                "GET {}: malformed status line '{}'",
                url.path,
                status_line.chars().take(60).collect::<String>()
            ));
        }
    };
    if !url.status.iter().any(|&(a, b)| (a..=b).contains(&code)) {
        let want: Vec<String> = url
            .status
            .iter()
            .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
            .collect();
        return Err(format!("GET {}: status {code}, expected {}", url.path, want.join(",")));
    }
    let Some(digest) = url.digest else {
        return Ok(true);
    };
    let body = &resp[head_end + 4..];
    let length = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(n) if body.len() < n && !eof => return Ok(false),
        Some(n) if body.len() < n => {
            return Err(format!(
                "GET {}: body cut short ({} of {n} bytes)",
                url.path,
                body.len()
            ));
        }
        None if !eof => return Ok(false),
        _ => {}
    }
    let body = &body[..length.unwrap_or(body.len()).min(body.len())];
    let got: [u8; 16] = Md5::digest(body).into();
    if got != digest {
        return Err(format!(
            "GET {}: digest {} differs from the expected {}",
            url.path,
            hex(&got),
            hex(&digest)
        ));
    }
    Ok(true)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn spawn(m: &MiscCheck) -> io::Result<What> {
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&m.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .spawn()?;
    Ok(What::Misc {
        pidfd: pidfd_open(child.id()),
        child,
        dynamic: m.dynamic,
    })
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// keepalived's reading of a check program's exit: 0 up, 1 down, and with `misc_dynamic` 2..=255
/// up with weight status - 2; without it any non-zero status is down.
pub fn misc_outcome(status: std::process::ExitStatus, dynamic: bool) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), dynamic) {
        (Some(0), _) => Outcome::Up { weight: None },
        (Some(c @ 2..=255), true) => Outcome::Up {
            weight: Some(c as u32 - 2),
        },
        (Some(c), _) => Outcome::Down(format!("exit status {c}")),
        (None, _) => Outcome::Down(format!("killed by signal {}", status.signal().unwrap_or(0))),
    }
}

/// TLS client settings for SSL_GET: without verification (keepalived's default), or against `ca_file`.
pub fn tls_config(
    verify: bool,
    ca_file: Option<&std::path::Path>,
    sni: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut cfg = if verify {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let path = ca_file.ok_or("verify_cert needs ca_file")?;
        for c in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))? {
            let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
            roots.add(c).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    };
    cfg.enable_sni = sni;
    Ok(Arc::new(cfg))
}

/// Accepts any certificate (the handshake signatures are still checked): SSL_GET without verify_cert.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
