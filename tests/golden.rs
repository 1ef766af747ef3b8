//! Golden packet tables: for every forwarding method x protocol x direction x address family, an
//! input frame, the expected verdict and the expected output frame. Frames are built and checked
//! with etherparse, never with xvs's own wire code.

use std::time::{Duration, Instant};

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use xvs::config;
use xvs::pipeline::{Frame, HEADROOM, Verdict};
use xvs::replay::Offline;
use xvs::stats::DropReason;

const LB0: [u8; 6] = [2, 0, 0, 0, 1, 1];
const LB1: [u8; 6] = [2, 0, 0, 0, 2, 1];
const CLI: [u8; 6] = [2, 0, 0, 0, 1, 2];
const RS: [u8; 6] = [2, 0, 0, 0, 2, 0x11];

const CIP4: [u8; 4] = [198, 18, 1, 2];
const RIP4: [u8; 4] = [198, 18, 2, 11];
const DIP4: [u8; 4] = [198, 18, 2, 1];
const LIP4: [u8; 4] = [198, 18, 3, 1];
const CPORT: u16 = 40000;

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

const CONFIG: &str = include_str!("data/golden.toml");

#[derive(Clone, Copy, Debug, PartialEq)]
enum P {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug)]
enum Ip {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

/// TCP flags used in the tables.
#[derive(Clone, Copy, Debug)]
enum Seg {
    Syn,
    SynAck,
    Ack,
}

const PAYLOAD: &[u8] = b"xvs golden payload";

/// A whole Ethernet frame built by etherparse.
#[allow(clippy::too_many_arguments)]
fn frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    ip: Ip,
    ttl: u8,
    p: P,
    sport: u16,
    dport: u16,
    seg: Seg,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac);
    let b = match ip {
        Ip::V4(s, d) => b.ipv4(s, d, ttl),
        Ip::V6(s, d) => b.ipv6(s, d, ttl),
    };
    let mut out = Vec::new();
    match p {
        P::Udp => b.udp(sport, dport).write(&mut out, payload).unwrap(),
        P::Tcp => {
            let t = b.tcp(sport, dport, 1000, 64240);
            let t = match seg {
                Seg::Syn => t.syn(),
                Seg::SynAck => t.syn().ack(1001),
                Seg::Ack => t.ack(1001),
            };
            t.write(&mut out, payload).unwrap()
        }
    }
    out
}

fn director() -> Offline {
    let cfg = config::parse(CONFIG, "golden.toml").unwrap_or_else(|e| panic!("{e}"));
    Offline::new(&cfg, &[]).unwrap()
}

/// Runs one frame through the pipeline; returns the verdict and the frame it leaves behind.
fn run(d: &mut Offline, input: &[u8], in_port: u16, now: Instant) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; HEADROOM + 2048];
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut f = Frame::new(&mut buf, HEADROOM, input.len());
    let v = d.pipeline.process(&mut f, in_port, now);
    (v, f.bytes().to_vec())
}

/// A frame from the client (TTL 64, port CPORT, a SYN if TCP) to IPv4 address `dst`.
fn from_client4(dst: [u8; 4], p: P, dport: u16, payload: &[u8]) -> Vec<u8> {
    frame(CLI, LB0, Ip::V4(CIP4, dst), 64, p, CPORT, dport, Seg::Syn, payload)
}

/// The transport source port of a frame, read by etherparse.
fn sport_of(frame: &[u8]) -> u16 {
    match SlicedPacket::from_ethernet(frame).unwrap().transport.unwrap() {
        TransportSlice::Tcp(t) => t.source_port(),
        TransportSlice::Udp(u) => u.source_port(),
        other => panic!("not TCP/UDP: {other:?}"),
    }
}

/// Asserts that etherparse accepts a frame and that its IPv4 and TCP/UDP checksums are right.
fn assert_checksums(frame: &[u8]) {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let (src, dst, v4) = match &s.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
            (ip.header().source().to_vec(), ip.header().destination().to_vec(), true)
        }
        Some(NetSlice::Ipv6(ip)) => (ip.header().source().to_vec(), ip.header().destination().to_vec(), false),
        other => panic!("no IP: {other:?}"),
    };
    match s.transport {
        Some(TransportSlice::Tcp(t)) => {
            let h = t.to_header();
            let want = if v4 {
                h.calc_checksum_ipv4_raw(src.try_into().unwrap(), dst.try_into().unwrap(), t.payload())
                    .unwrap()
            } else {
                h.calc_checksum_ipv6_raw(src.try_into().unwrap(), dst.try_into().unwrap(), t.payload())
                    .unwrap()
            };
            assert_eq!(h.checksum, want, "TCP checksum");
        }
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            let want = if v4 {
                h.calc_checksum_ipv4_raw(src.try_into().unwrap(), dst.try_into().unwrap(), u.payload())
                    .unwrap()
            } else {
                h.calc_checksum_ipv6_raw(src.try_into().unwrap(), dst.try_into().unwrap(), u.payload())
                    .unwrap()
            };
            assert_eq!(h.checksum, want, "UDP checksum");
        }
        _ => {}
    }
}

struct Case {
    name: &'static str,
    p: P,
    client: Ip,
    /// The packet the real server receives, as (src, dst) addresses; `None` for TUN (checked apart).
    to_rs: Ip,
    vport: u16,
    rport: u16,
    method: &'static str,
}

fn cases() -> Vec<Case> {
    let vip4 = |n: u8| [198, 18, 0, n];
    let vip6 = |n: u8| v6(&format!("2001:2::{n:x}"));
    let cip6 = v6("2001:2:0:1::2");
    let rip6 = v6("2001:2:0:2::11");
    let lip6 = v6("2001:2:0:3::1");
    let mut out = Vec::new();
    for p in [P::Tcp, P::Udp] {
        let (vport, nat_rport) = if p == P::Tcp { (80, 8080) } else { (7, 7007) };
        out.extend([
            Case {
                name: "NAT v4",
                p,
                client: Ip::V4(CIP4, vip4(10)),
                to_rs: Ip::V4(CIP4, RIP4),
                vport,
                rport: nat_rport,
                method: "NAT",
            },
            Case {
                name: "FULLNAT v4",
                p,
                client: Ip::V4(CIP4, vip4(11)),
                to_rs: Ip::V4(LIP4, RIP4),
                vport,
                rport: nat_rport,
                method: "FULLNAT",
            },
            Case {
                name: "DR v4",
                p,
                client: Ip::V4(CIP4, vip4(12)),
                to_rs: Ip::V4(CIP4, vip4(12)),
                vport,
                rport: vport,
                method: "DR",
            },
            Case {
                name: "TUN v4",
                p,
                client: Ip::V4(CIP4, vip4(13)),
                to_rs: Ip::V4(CIP4, vip4(13)),
                vport,
                rport: vport,
                method: "TUN",
            },
            Case {
                name: "NAT v6",
                p,
                client: Ip::V6(cip6, vip6(0x10)),
                to_rs: Ip::V6(cip6, rip6),
                vport,
                rport: nat_rport,
                method: "NAT",
            },
            Case {
                name: "FULLNAT v6",
                p,
                client: Ip::V6(cip6, vip6(0x11)),
                to_rs: Ip::V6(lip6, rip6),
                vport,
                rport: nat_rport,
                method: "FULLNAT",
            },
            Case {
                name: "DR v6",
                p,
                client: Ip::V6(cip6, vip6(0x12)),
                to_rs: Ip::V6(cip6, vip6(0x12)),
                vport,
                rport: vport,
                method: "DR",
            },
            Case {
                name: "TUN v6",
                p,
                client: Ip::V6(cip6, vip6(0x13)),
                to_rs: Ip::V6(cip6, vip6(0x13)),
                vport,
                rport: vport,
                method: "TUN",
            },
        ]);
    }
    out
}

/// What the director sends the real server for a TUN service: the client's packet (`input`, an
/// Ethernet frame) whole, behind an outer header of its family from the director's address on the
/// real servers' side, hop limit, traffic class and (IPv4) DF copied from the inner header.
fn tunnelled(input: &[u8]) -> Vec<u8> {
    let inner = &input[14..];
    let mut e = Vec::new();
    if input[12..14] == [0x08, 0x00] {
        let h = Ipv4Header::from_slice(inner).unwrap().0;
        let mut outer = Ipv4Header::new(inner.len() as u16, h.time_to_live, IpNumber::IPV4, DIP4, RIP4).unwrap();
        outer.dont_fragment = h.dont_fragment;
        outer.dscp = h.dscp;
        outer.ecn = h.ecn;
        outer.identification = 0;
        outer.header_checksum = outer.calc_header_checksum();
        Ethernet2Header {
            source: LB1,
            destination: RS,
            ether_type: EtherType::IPV4,
        }
        .write(&mut e)
        .unwrap();
        outer.write(&mut e).unwrap();
    } else {
        let h = etherparse::Ipv6Header::from_slice(inner).unwrap().0;
        let outer = etherparse::Ipv6Header {
            traffic_class: h.traffic_class,
            flow_label: Default::default(),
            payload_length: inner.len() as u16,
            next_header: IpNumber::IPV6_HEADER_HOP_BY_HOP,
            hop_limit: h.hop_limit,
            source: v6("2001:2:0:2::1"),
            destination: v6("2001:2:0:2::11"),
        };
        let mut outer = outer;
        outer.next_header = IpNumber(41);
        Ethernet2Header {
            source: LB1,
            destination: RS,
            ether_type: EtherType::IPV6,
        }
        .write(&mut e)
        .unwrap();
        outer.write(&mut e).unwrap();
    }
    e.extend_from_slice(inner);
    e
}

fn swap(ip: Ip) -> Ip {
    match ip {
        Ip::V4(s, d) => Ip::V4(d, s),
        Ip::V6(s, d) => Ip::V6(d, s),
    }
}

#[test]
fn every_method_protocol_direction_and_family() {
    let now = Instant::now();
    for c in cases() {
        let mut d = director();
        let ctx = format!("{} {:?}", c.name, c.p);
        // Inbound: client -> VIP.
        let input = frame(CLI, LB0, c.client, 64, c.p, CPORT, c.vport, Seg::Syn, PAYLOAD);
        let (v, out) = run(&mut d, &input, 0, now);
        assert_eq!(v, Verdict::Forward { port: 1 }, "{ctx}: inbound verdict");
        let expected = match c.method {
            "NAT" => frame(LB1, RS, c.to_rs, 63, c.p, CPORT, c.rport, Seg::Syn, PAYLOAD),
            "FULLNAT" => {
                let lport = sport_of(&out);
                assert!(lport >= 1024, "{ctx}: local port {lport}");
                frame(LB1, RS, c.to_rs, 63, c.p, lport, c.rport, Seg::Syn, PAYLOAD)
            }
            "DR" => frame(LB1, RS, c.to_rs, 64, c.p, CPORT, c.rport, Seg::Syn, PAYLOAD),
            "TUN" => tunnelled(&input),
            _ => unreachable!(),
        };
        assert_eq!(out, expected, "{ctx}: inbound frame");
        if c.method == "TUN" {
            // The inner packet, given an Ethernet header of its own, is the client's packet intact.
            let mut inner = out[..12].to_vec();
            inner.extend_from_slice(&input[12..]);
            assert_eq!(
                &out[out.len() - (input.len() - 14)..],
                &input[14..],
                "{ctx}: inner packet"
            );
            assert_checksums(&inner);
            continue;
        }
        assert_checksums(&out);

        // Further packets of the connection take the same way.
        let input2 = frame(CLI, LB0, c.client, 64, c.p, CPORT, c.vport, Seg::Ack, b"second");
        let (v2, out2) = run(&mut d, &input2, 0, now + Duration::from_millis(1));
        assert_eq!(v2, Verdict::Forward { port: 1 }, "{ctx}: second packet");
        assert_eq!(sport_of(&out2), sport_of(&out), "{ctx}: same local port");

        // Outbound: the real server's reply, only for the methods replies pass through.
        if c.method == "NAT" || c.method == "FULLNAT" {
            let rs_src_port = c.rport;
            let rs_dst_port = sport_of(&out);
            let reply = frame(
                RS,
                LB1,
                swap(c.to_rs),
                64,
                c.p,
                rs_src_port,
                rs_dst_port,
                Seg::SynAck,
                b"reply",
            );
            let (v, back) = run(&mut d, &reply, 1, now + Duration::from_millis(2));
            assert_eq!(v, Verdict::Forward { port: 0 }, "{ctx}: outbound verdict");
            let expected = frame(LB0, CLI, swap(c.client), 63, c.p, c.vport, CPORT, Seg::SynAck, b"reply");
            assert_eq!(back, expected, "{ctx}: outbound frame");
            assert_checksums(&back);
        }
    }
}

#[test]
fn ipv4_udp_without_a_checksum_stays_without_one() {
    let now = Instant::now();
    let c = cases()
        .into_iter()
        .find(|c| c.name == "NAT v4" && c.p == P::Udp)
        .unwrap();
    let mut input = frame(CLI, LB0, c.client, 64, c.p, CPORT, c.vport, Seg::Syn, PAYLOAD);
    // Ethernet 14 + IPv4 20: the UDP checksum is bytes 6-7 of the UDP header.
    input[40..42].copy_from_slice(&[0, 0]);
    let (v, out) = run(&mut director(), &input, 0, now);
    assert_eq!(v, Verdict::Forward { port: 1 });
    assert_eq!(&out[40..42], &[0, 0], "no checksum made up");
    assert_eq!(&out[30..34], &RIP4, "rewritten all the same");
}

#[test]
fn non_syn_without_connection_is_dropped_and_counted() {
    let mut d = director();
    let input = frame(
        CLI,
        LB0,
        Ip::V4(CIP4, [198, 18, 0, 10]),
        64,
        P::Tcp,
        CPORT,
        80,
        Seg::Ack,
        b"",
    );
    let (v, _) = run(&mut d, &input, 0, Instant::now());
    assert_eq!(v, Verdict::Drop(DropReason::NoConnection));
    assert_eq!(d.pipeline.stats.dropped[DropReason::NoConnection as usize], 1);
}

#[test]
fn ttl_one_is_not_routed() {
    let mut d = director();
    let input = frame(
        CLI,
        LB0,
        Ip::V4(CIP4, [198, 18, 0, 10]),
        1,
        P::Udp,
        CPORT,
        7,
        Seg::Syn,
        b"x",
    );
    assert_eq!(
        run(&mut d, &input, 0, Instant::now()).0,
        Verdict::Drop(DropReason::TtlExceeded)
    );
}

#[test]
fn not_ours_goes_to_the_kernel() {
    let mut d = director();
    let now = Instant::now();
    // A port of the VIP that is not a service (SSH to the director's VIP).
    let ssh = from_client4([198, 18, 0, 10], P::Tcp, 22, b"");
    assert_eq!(run(&mut d, &ssh, 0, now).0, Verdict::PassToKernel);
    // Ping to the VIP.
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLI, LB0)
        .ipv4(CIP4, [198, 18, 0, 10], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"ping")
        .unwrap();
    assert_eq!(run(&mut d, &ping, 0, now).0, Verdict::PassToKernel);
    // ARP.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLI);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLI);
    arp.extend_from_slice(&CIP4);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[198, 18, 1, 1]);
    assert_eq!(run(&mut d, &arp, 0, now).0, Verdict::PassToKernel);
    assert_eq!(d.pipeline.stats.passed, 3);
}

#[test]
fn truncated_frames_are_dropped_never_panic() {
    let mut d = director();
    let now = Instant::now();
    let full = from_client4([198, 18, 0, 10], P::Tcp, 80, PAYLOAD);
    for len in 0..full.len() {
        let (v, _) = run(&mut d, &full[..len], 0, now);
        assert!(
            matches!(v, Verdict::Drop(_) | Verdict::PassToKernel),
            "len {len}: {v:?}"
        );
    }
    let full6 = frame(
        CLI,
        LB0,
        Ip::V6(v6("2001:2:0:1::2"), v6("2001:2::10")),
        64,
        P::Udp,
        CPORT,
        7,
        Seg::Syn,
        PAYLOAD,
    );
    for len in 0..full6.len() {
        let (v, _) = run(&mut d, &full6[..len], 0, now);
        assert!(
            matches!(v, Verdict::Drop(_) | Verdict::PassToKernel),
            "v6 len {len}: {v:?}"
        );
    }
}

/// Splits a frame's IP payload (transport header and data) into fragments of `chunk` bytes (a
/// multiple of 8) with identification `id`, as the sender's stack would; IPv4 or IPv6.
fn fragments(f: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    let v4 = f[12..14] == [0x08, 0x00];
    let hl = if v4 { 20 } else { 40 };
    let payload = &f[14 + hl..];
    let pieces: Vec<&[u8]> = payload.chunks(chunk).collect();
    let mut out = Vec::new();
    for (i, data) in pieces.iter().enumerate() {
        let off = i * chunk;
        let more = i + 1 < pieces.len();
        let mut fr = f[..14 + hl].to_vec();
        if v4 {
            fr[16..18].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
            fr[18..20].copy_from_slice(&(id as u16).to_be_bytes());
            let word = (off / 8) as u16 | if more { 0x2000 } else { 0 };
            fr[20..22].copy_from_slice(&word.to_be_bytes());
            let mut h = Ipv4Header::from_slice(&fr[14..]).unwrap().0;
            h.header_checksum = h.calc_header_checksum();
            fr[14..34].copy_from_slice(&h.to_bytes());
        } else {
            let next = fr[14 + 6];
            fr[14 + 4..14 + 6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
            fr[14 + 6] = 44;
            fr.extend_from_slice(&[next, 0]);
            fr.extend_from_slice(&(off as u16 | u16::from(more)).to_be_bytes());
            fr.extend_from_slice(&id.to_be_bytes());
        }
        fr.extend_from_slice(data);
        out.push(fr);
    }
    out
}

/// Puts fragments back together as the receiver's stack would: the first fragment's Ethernet and
/// IP headers around every fragment's data, each where its offset says.
fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let v4 = frags[0][12..14] == [0x08, 0x00];
    let (hl, data_at) = if v4 { (20, 34) } else { (40, 62) };
    let mut data = Vec::new();
    for fr in frags {
        let off = if v4 {
            usize::from(u16::from_be_bytes([fr[20], fr[21]]) & 0x1fff) * 8
        } else {
            usize::from(u16::from_be_bytes([fr[56], fr[57]]) & 0xfff8)
        };
        assert_eq!(off, data.len(), "fragments in order, none missing");
        data.extend_from_slice(&fr[data_at..]);
    }
    let mut whole = frags[0][..14 + hl].to_vec();
    if v4 {
        whole[16..18].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        whole[20..22].copy_from_slice(&[0, 0]);
        let mut h = Ipv4Header::from_slice(&whole[14..]).unwrap().0;
        h.header_checksum = h.calc_header_checksum();
        whole[14..34].copy_from_slice(&h.to_bytes());
    } else {
        whole[14 + 4..14 + 6].copy_from_slice(&(data.len() as u16).to_be_bytes());
        whole[14 + 6] = frags[0][54];
    }
    whole.extend_from_slice(&data);
    whole
}

/// The addresses and ports of a whole frame, read by etherparse.
fn endpoints(f: &[u8]) -> (Ip, u16, u16) {
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let ip = match &s.net {
        Some(NetSlice::Ipv4(ip)) => Ip::V4(ip.header().source(), ip.header().destination()),
        Some(NetSlice::Ipv6(ip)) => Ip::V6(ip.header().source(), ip.header().destination()),
        other => panic!("no IP: {other:?}"),
    };
    let (sp, dp) = match s.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        other => panic!("not TCP/UDP: {other:?}"),
    };
    (ip, sp, dp)
}

fn same_ip(a: Ip, b: Ip) -> bool {
    match (a, b) {
        (Ip::V4(a1, a2), Ip::V4(b1, b2)) => a1 == b1 && a2 == b2,
        (Ip::V6(a1, a2), Ip::V6(b1, b2)) => a1 == b1 && a2 == b2,
        _ => false,
    }
}

/// Runs every fragment through `d`, each expected to leave by `port`; returns what left.
fn run_fragments(d: &mut Offline, frags: &[Vec<u8>], in_port: u16, port: u16, now: Instant, ctx: &str) -> Vec<Vec<u8>> {
    frags
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (v, out) = run(d, f, in_port, now);
            assert_eq!(v, Verdict::Forward { port }, "{ctx}: fragment {i}");
            if f[12..14] == [0x08, 0x00] && out[12..14] == [0x08, 0x00] {
                let h = Ipv4Header::from_slice(&out[14..]).unwrap().0;
                assert_eq!(
                    h.header_checksum,
                    h.calc_header_checksum(),
                    "{ctx}: fragment {i} header checksum"
                );
            }
            out
        })
        .collect()
}

/// A datagram too large for the link, in fragments, through every method, protocol, direction and
/// family: each fragment is forwarded as it comes, and what the real server (or the client) puts
/// back together is the datagram rewritten as a whole one would be, its transport checksum right.
#[test]
fn fragmented_datagrams_follow_their_connection() {
    let now = Instant::now();
    let big: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 1) as u8).collect();
    for c in cases() {
        let mut d = director();
        let ctx = format!("{} {:?} fragmented", c.name, c.p);
        let input = frame(CLI, LB0, c.client, 64, c.p, CPORT, c.vport, Seg::Syn, &big);
        let frags = fragments(&input, 1232, 0x4242);
        assert_eq!(frags.len(), 3, "{ctx}");
        let out = run_fragments(&mut d, &frags, 0, 1, now, &ctx);
        if c.method == "TUN" {
            // Each fragment travels whole inside its own outer header.
            for (i, (f, o)) in frags.iter().zip(&out).enumerate() {
                assert!(*o == tunnelled(f), "{ctx}: fragment {i} tunnelled");
            }
            continue;
        }
        for o in &out {
            assert_eq!(&o[..6], &RS, "{ctx}: to the real server's MAC");
        }
        let whole = reassemble(&out);
        assert_checksums(&whole);
        let (ip, sport, dport) = endpoints(&whole);
        assert!(same_ip(ip, c.to_rs), "{ctx}: addresses {ip:?}");
        assert_eq!(dport, c.rport, "{ctx}: real server port");
        if c.method == "FULLNAT" {
            assert!(sport >= 1024 && sport != CPORT, "{ctx}: local port {sport}");
        } else {
            assert_eq!(sport, CPORT, "{ctx}: client port");
        }
        assert!(whole.ends_with(&big), "{ctx}: data intact");

        // The reply, as large, through the methods replies pass through.
        if c.method == "NAT" || c.method == "FULLNAT" {
            let reply = frame(RS, LB1, swap(c.to_rs), 64, c.p, c.rport, sport, Seg::SynAck, &big);
            let back = run_fragments(&mut d, &fragments(&reply, 1232, 0x5151), 1, 0, now, &ctx);
            let whole = reassemble(&back);
            assert_checksums(&whole);
            let (ip, sp, dp) = endpoints(&whole);
            assert!(same_ip(ip, swap(c.client)), "{ctx}: reply addresses {ip:?}");
            assert_eq!((sp, dp), (c.vport, CPORT), "{ctx}: reply ports");
            assert!(whole.ends_with(&big), "{ctx}: reply data intact");
        }
    }
}

/// A later fragment is followed only after its own datagram's first, and not for ever.
#[test]
fn a_later_fragment_needs_its_first() {
    let mut d = director();
    let now = Instant::now();
    let big = vec![0x5a; 2000];
    let input = from_client4([198, 18, 0, 10], P::Udp, 7, &big);
    let frags = fragments(&input, 1232, 7);
    // Before its first: not followed, dropped (the datagram is for a VIP) and counted.
    assert_eq!(run(&mut d, &frags[1], 0, now).0, Verdict::Drop(DropReason::Fragment));
    assert_eq!(d.pipeline.stats.dropped[DropReason::Fragment as usize], 1);
    assert_eq!(run(&mut d, &frags[0], 0, now).0, Verdict::Forward { port: 1 });
    assert_eq!(run(&mut d, &frags[1], 0, now).0, Verdict::Forward { port: 1 });
    // Another identification is another datagram.
    let other = fragments(&input, 1232, 8);
    assert_eq!(run(&mut d, &other[1], 0, now).0, Verdict::Drop(DropReason::Fragment));
    // Past the reassembly timeout the first fragment is forgotten.
    let late = now + Duration::from_secs(31);
    assert_eq!(run(&mut d, &frags[1], 0, late).0, Verdict::Drop(DropReason::Fragment));
    // A fragment for nobody here is the kernel's, first or later.
    let theirs = from_client4([198, 18, 9, 9], P::Udp, 7, &big);
    for f in fragments(&theirs, 1232, 9) {
        assert_eq!(run(&mut d, &f, 0, now).0, Verdict::PassToKernel);
    }
}

/// A first fragment must hold the whole transport header (RFC 1858's tiny fragments are refused);
/// fragments of other protocols for a VIP are not followed.
#[test]
fn tiny_and_other_fragments_for_a_vip_are_dropped() {
    let mut d = director();
    let now = Instant::now();
    let input = from_client4([198, 18, 0, 10], P::Tcp, 80, PAYLOAD);
    // 8 bytes of a 20-byte TCP header in the first fragment.
    let tiny = fragments(&input, 8, 11);
    assert_eq!(run(&mut d, &tiny[0], 0, now).0, Verdict::Drop(DropReason::L4Malformed));
    assert_eq!(run(&mut d, &tiny[1], 0, now).0, Verdict::Drop(DropReason::Fragment));
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLI, LB0)
        .ipv4(CIP4, [198, 18, 0, 10], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, &[0x11; 1500])
        .unwrap();
    let pieces = fragments(&ping, 1232, 12);
    assert_eq!(run(&mut d, &pieces[0], 0, now).0, Verdict::Drop(DropReason::Fragment));
}

#[test]
fn tun_too_big_with_df_gets_fragmentation_needed() {
    let mut d = director();
    // 1500-byte IP packet with DF (etherparse sets DF): 20 more bytes do not fit a 1500 MTU.
    let payload = vec![0x5a; 1500 - 20 - 8];
    let input = from_client4([198, 18, 0, 13], P::Udp, 7, &payload);
    assert!(Ipv4Header::from_slice(&input[14..]).unwrap().0.dont_fragment);
    let (v, out) = run(&mut d, &input, 0, Instant::now());
    assert_eq!(v, Verdict::Reply);
    let s = SlicedPacket::from_ethernet(&out).unwrap();
    let eth = Ethernet2Header::from_slice(&out).unwrap().0;
    assert_eq!((eth.source, eth.destination), (LB0, CLI));
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header().destination(), CIP4);
    assert_eq!(ip.header().source(), [198, 18, 1, 1]);
    let Some(TransportSlice::Icmpv4(icmp)) = &s.transport else {
        panic!("not ICMP: {:?}", s.transport)
    };
    use etherparse::icmpv4::DestUnreachableHeader;
    assert_eq!(
        icmp.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1480
        })
    );
    let h = icmp.header();
    assert_eq!(h.checksum, h.icmp_type.calc_checksum(icmp.payload()));
    // The quote starts with the client's own IP header.
    assert_eq!(&icmp.payload()[..20], &input[14..34]);
}

/// The replies of a client whose MAC the kernel has not resolved yet are not lost: the MAC its
/// first packet came from stands in for a while, for a client on that port's own network only,
/// and the kernel is asked to resolve it all the same.
#[test]
fn replies_reach_a_client_the_kernel_has_not_resolved_yet() {
    let client_neighbour =
        "[[neighbour]]\naddress = \"198.18.1.2\"\nmac = \"02:00:00:00:01:02\"\ninterface = \"lb0\"\n";
    assert!(CONFIG.contains(client_neighbour));
    let text = CONFIG.replace(client_neighbour, "");
    let cfg = config::parse(&text, "golden.toml").unwrap_or_else(|e| panic!("{e}"));
    let mut d = Offline::new(&cfg, &[]).unwrap();
    let now = Instant::now();
    let request = from_client4([198, 18, 0, 10], P::Udp, 7, b"q");
    assert_eq!(run(&mut d, &request, 0, now).0, Verdict::Forward { port: 1 });
    let reply = frame(RS, LB1, Ip::V4(RIP4, CIP4), 64, P::Udp, 7007, CPORT, Seg::Syn, b"a");
    let (v, back) = run(&mut d, &reply, 1, now + Duration::from_millis(1));
    assert_eq!(v, Verdict::Forward { port: 0 });
    assert_eq!((&back[..6], &back[6..12]), (&CLI[..], &LB0[..]), "to the client's MAC");
    assert_checksums(&back);
    assert!(
        d.pipeline.unresolved.iter().any(|a| a.0[12..] == CIP4),
        "resolution asked for"
    );
    // Not for ever: after a few seconds only the kernel's answer counts.
    let late = now + Duration::from_secs(6);
    assert_eq!(run(&mut d, &reply, 1, late).0, Verdict::Drop(DropReason::NoNeighbour));

    // A sender that claims an address of another port's network is not believed.
    let mut d = Offline::new(&cfg, &[]).unwrap();
    let spoofed = frame(
        CLI,
        LB0,
        Ip::V4([198, 18, 2, 50], [198, 18, 0, 10]),
        64,
        P::Udp,
        CPORT,
        7,
        Seg::Syn,
        b"q",
    );
    assert_eq!(run(&mut d, &spoofed, 0, now).0, Verdict::Forward { port: 1 });
    let reply = frame(
        RS,
        LB1,
        Ip::V4(RIP4, [198, 18, 2, 50]),
        64,
        P::Udp,
        7007,
        CPORT,
        Seg::Syn,
        b"a",
    );
    assert_eq!(run(&mut d, &reply, 1, now).0, Verdict::Drop(DropReason::NoNeighbour));
}

/// IPv6 is never fragmented on the way: a packet that does not fit the tunnel gets ICMPv6 "packet
/// too big" with the MTU that fits, quoting as much of it as fits in 1280 bytes.
#[test]
fn tun_v6_too_big_gets_packet_too_big() {
    let mut d = director();
    let cip6 = v6("2001:2:0:1::2");
    // A 1500-byte IPv6 packet: 40 more bytes do not fit a 1500 MTU.
    let payload = vec![0x5a; 1500 - 40 - 8];
    let input = frame(
        CLI,
        LB0,
        Ip::V6(cip6, v6("2001:2::13")),
        64,
        P::Udp,
        CPORT,
        7,
        Seg::Syn,
        &payload,
    );
    let (v, out) = run(&mut d, &input, 0, Instant::now());
    assert_eq!(v, Verdict::Reply);
    assert_eq!(out.len(), 1280 + 14, "as much quoted as fits the minimum MTU");
    let s = SlicedPacket::from_ethernet(&out).unwrap();
    let eth = Ethernet2Header::from_slice(&out).unwrap().0;
    assert_eq!((eth.source, eth.destination), (LB0, CLI));
    let Some(NetSlice::Ipv6(ip)) = &s.net else {
        panic!("not IPv6")
    };
    assert_eq!(ip.header().destination(), cip6);
    assert_eq!(ip.header().source(), v6("2001:2:0:1::1"));
    let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else {
        panic!("not ICMPv6: {:?}", s.transport)
    };
    assert_eq!(icmp.icmp_type(), etherparse::Icmpv6Type::PacketTooBig { mtu: 1460 });
    let h = icmp.header();
    let want = h
        .icmp_type
        .calc_checksum(ip.header().source(), ip.header().destination(), icmp.payload())
        .unwrap();
    assert_eq!(h.checksum, want);
    assert_eq!(
        &icmp.payload()[..40],
        &input[14..54],
        "the quote starts with the client's header"
    );
}

/// An ICMP error from the real server about a packet the director sent it is translated back to
/// the client: outer source and quoted destination become the VIP again.
#[test]
fn icmp_port_unreachable_from_a_nat_real_server() {
    use etherparse::icmpv4::DestUnreachableHeader;
    let mut d = director();
    let now = Instant::now();
    let vip = [198, 18, 0, 10];
    let input = frame(CLI, LB0, Ip::V4(CIP4, vip), 64, P::Udp, CPORT, 7, Seg::Syn, PAYLOAD);
    let (_, to_rs) = run(&mut d, &input, 0, now);
    // The real server quotes what it got: IP header + 8 bytes of UDP.
    let quote = to_rs[14..14 + 28].to_vec();
    let mut err = Vec::new();
    PacketBuilder::ethernet2(RS, LB1)
        .ipv4(RIP4, CIP4, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        ))
        .write(&mut err, &quote)
        .unwrap();
    let (v, out) = run(&mut d, &err, 1, now);
    assert_eq!(v, Verdict::Forward { port: 0 });
    // Expected: the error the client would get had it talked to the VIP directly.
    let orig_quote = input[14..14 + 28].to_vec();
    // The quoted header's TTL is the one the real server saw (63), the rest is the client's packet.
    let mut q = orig_quote;
    q[8] = 63;
    let mut h = Ipv4Header::from_slice(&q).unwrap().0;
    h.header_checksum = h.calc_header_checksum();
    q[..20].copy_from_slice(&h.to_bytes());
    let mut expected = Vec::new();
    PacketBuilder::ethernet2(LB0, CLI)
        .ipv4(vip, CIP4, 63)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        ))
        .write(&mut expected, &q)
        .unwrap();
    assert_eq!(out, expected);
}

/// The same over IPv6 with FULLNAT: both quoted endpoints and the outer destination are restored.
#[test]
fn icmpv6_port_unreachable_from_a_fullnat_real_server() {
    use etherparse::icmpv6::DestUnreachableCode;
    let mut d = director();
    let now = Instant::now();
    let (cip, vip, rip) = (v6("2001:2:0:1::2"), v6("2001:2::11"), v6("2001:2:0:2::11"));
    let input = frame(CLI, LB0, Ip::V6(cip, vip), 64, P::Udp, CPORT, 7, Seg::Syn, PAYLOAD);
    let (_, to_rs) = run(&mut d, &input, 0, now);
    let lip = v6("2001:2:0:3::1");
    let quote = to_rs[14..14 + 48].to_vec();
    let mut err = Vec::new();
    PacketBuilder::ethernet2(RS, LB1)
        .ipv6(rip, lip, 64)
        .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
            DestUnreachableCode::Port,
        ))
        .write(&mut err, &quote)
        .unwrap();
    let (v, out) = run(&mut d, &err, 1, now);
    assert_eq!(v, Verdict::Forward { port: 0 });
    let s = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &s.net else {
        panic!("not IPv6")
    };
    assert_eq!((ip.header().source(), ip.header().destination()), (vip, cip));
    let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else {
        panic!("not ICMPv6")
    };
    let h = icmp.header();
    assert_eq!(h.checksum, h.icmp_type.calc_checksum(vip, cip, icmp.payload()).unwrap());
    // Quoted: client -> VIP with the client's ports, as the client sent it (hop limit aside).
    let qh = etherparse::Ipv6Header::from_slice(icmp.payload()).unwrap().0;
    assert_eq!((qh.source, qh.destination), (cip, vip));
    let qudp = &icmp.payload()[40..48];
    assert_eq!(u16::from_be_bytes([qudp[0], qudp[1]]), CPORT);
    assert_eq!(u16::from_be_bytes([qudp[2], qudp[3]]), 7);
}

/// The real server a frame was sent to, read by etherparse.
fn dst_of(frame: &[u8]) -> [u8; 4] {
    match SlicedPacket::from_ethernet(frame).unwrap().net {
        Some(NetSlice::Ipv4(ip)) => ip.header().destination(),
        other => panic!("not IPv4: {other:?}"),
    }
}

/// A persistent service sends every connection of one client network to the same real server
/// while its template lives (rr would otherwise rotate), and other networks are scheduled anew.
#[test]
fn persistence_keeps_a_client_network_on_one_server() {
    let mut d = director();
    let now = Instant::now();
    let vip = [198, 18, 0, 20];
    let open = |d: &mut Offline, src: [u8; 4], port: u16, at: Instant| {
        let f = frame(CLI, LB0, Ip::V4(src, vip), 64, P::Tcp, port, 80, Seg::Syn, b"");
        let (v, out) = run(d, &f, 0, at);
        assert_eq!(v, Verdict::Forward { port: 1 });
        dst_of(&out)
    };
    let first = open(&mut d, CIP4, 40000, now);
    for (i, src) in [CIP4, CIP4, [198, 18, 1, 77], [198, 18, 1, 200]]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            open(&mut d, src, 40001 + i as u16, now),
            first,
            "same /24 -> same server"
        );
    }
    // Another /24 is scheduled by rr: the next server, not the first.
    assert_ne!(open(&mut d, [198, 19, 0, 1], 40100, now), first);
}

/// Runs frames as a worker's batch: every frame looked at ahead, then each processed, in `order`.
fn run_batch(d: &mut Offline, inputs: &[(Vec<u8>, u16)], order: &[usize], now: Instant) -> Vec<(Verdict, Vec<u8>)> {
    let mut bufs: Vec<Vec<u8>> = inputs
        .iter()
        .map(|(f, _)| {
            let mut b = vec![0u8; HEADROOM + 2048];
            b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
            b
        })
        .collect();
    for (b, (f, _)) in bufs.iter().zip(inputs) {
        d.pipeline.look_ahead(&b[HEADROOM..HEADROOM + f.len()], now);
    }
    let mut out = vec![(Verdict::PassToKernel, Vec::new()); inputs.len()];
    for &i in order {
        let mut f = Frame::new(&mut bufs[i], HEADROOM, inputs[i].0.len());
        let v = d.pipeline.process(&mut f, inputs[i].1, now);
        out[i] = (v, f.bytes().to_vec());
    }
    out
}

#[test]
fn a_batch_gives_what_one_frame_at_a_time_gives_in_any_order() {
    let now = Instant::now();
    let cases = cases();
    // Each case from its own client port, so that the order they are processed in does not matter.
    let cport = |i: usize| CPORT + i as u16;
    let mut syns: Vec<(Vec<u8>, u16)> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                frame(CLI, LB0, c.client, 64, c.p, cport(i), c.vport, Seg::Syn, PAYLOAD),
                0,
            )
        })
        .collect();
    // Frames that are not served: garbage, a truncated one, one for no service.
    syns.push((vec![0xff; 20], 0));
    syns.push((syns[0].0[..30].to_vec(), 0));
    syns.push((from_client4([198, 18, 0, 99], P::Tcp, 80, PAYLOAD), 0));
    let mut acks: Vec<(Vec<u8>, u16)> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                frame(CLI, LB0, c.client, 64, c.p, cport(i), c.vport, Seg::Ack, b"second"),
                0,
            )
        })
        .collect();
    // NAT replies (their ports are known before the batch runs).
    for (i, c) in cases.iter().enumerate().filter(|(_, c)| c.method == "NAT") {
        acks.push((
            frame(
                RS,
                LB1,
                swap(c.to_rs),
                64,
                c.p,
                c.rport,
                cport(i),
                Seg::SynAck,
                b"reply",
            ),
            1,
        ));
    }
    let in_order = |n: usize| (0..n).collect::<Vec<_>>();

    let mut one = director();
    let mut batch = director();
    let mut shuffled = director();
    for inputs in [&syns, &acks] {
        let want: Vec<_> = inputs.iter().map(|(f, port)| run(&mut one, f, *port, now)).collect();
        let got = run_batch(&mut batch, inputs, &in_order(inputs.len()), now);
        // Processed in another order than looked at: each frame is still handled as itself.
        let reversed: Vec<usize> = (0..inputs.len()).rev().collect();
        let got_rev = run_batch(&mut shuffled, inputs, &reversed, now);
        for (i, w) in want.iter().enumerate() {
            let fullnat = cases.get(i).is_some_and(|c| c.method == "FULLNAT");
            for (g, how) in [(&got[i], "in order"), (&got_rev[i], "reversed")] {
                assert_eq!(g.0, w.0, "frame {i} {how}: verdict");
                // FULLNAT local ports depend on each table's random hash keys.
                if !fullnat {
                    assert_eq!(g.1, w.1, "frame {i} {how}: frame");
                }
            }
        }
        let forwarded = want.iter().filter(|w| matches!(w.0, Verdict::Forward { .. })).count();
        assert!(forwarded >= cases.len(), "{forwarded} forwarded");
    }
    let drops = |d: &Offline| d.pipeline.stats.drops().collect::<Vec<_>>();
    assert_eq!(drops(&one), drops(&batch));
    assert_eq!(drops(&one), drops(&shuffled));
}

#[test]
fn a_large_table_is_looked_at_ahead_and_answers_as_one_frame_at_a_time() {
    // One shard, so that a few thousand connections make the table large enough to prefetch for.
    let text = CONFIG.replace("max_conns = 1024", "max_conns = 65536\nshards = 1");
    let cfg = config::parse(&text, "golden.toml").unwrap_or_else(|e| panic!("{e}"));
    let new = || Offline::new(&cfg, &[]).unwrap();
    let (mut one, mut batch, mut reversed) = (new(), new(), new());
    let now = Instant::now();
    let nat = cases()
        .into_iter()
        .find(|c| c.name == "NAT v4" && c.p == P::Tcp)
        .unwrap();
    let n = 6000u16;
    for d in [&mut one, &mut batch, &mut reversed] {
        assert!(!d.table.is_large());
        for i in 0..n {
            let f = frame(CLI, LB0, nat.client, 64, nat.p, 20000 + i, nat.vport, Seg::Syn, PAYLOAD);
            assert_eq!(run(d, &f, 0, now).0, Verdict::Forward { port: 1 }, "SYN {i}");
        }
        assert!(d.table.is_large(), "{n} connections in one shard");
    }
    // Client ACKs and server replies of scattered connections, in batches of 64.
    let inputs: Vec<(Vec<u8>, u16)> = (0..256u16)
        .map(|k| {
            let port = 20000 + (k * 97) % n;
            if k % 3 == 0 {
                let f = frame(
                    RS,
                    LB1,
                    swap(nat.to_rs),
                    64,
                    nat.p,
                    nat.rport,
                    port,
                    Seg::SynAck,
                    b"reply",
                );
                (f, 1)
            } else {
                (
                    frame(CLI, LB0, nat.client, 64, nat.p, port, nat.vport, Seg::Ack, b"more"),
                    0,
                )
            }
        })
        .collect();
    for chunk in inputs.chunks(64) {
        let want: Vec<_> = chunk.iter().map(|(f, port)| run(&mut one, f, *port, now)).collect();
        let got = run_batch(&mut batch, chunk, &(0..chunk.len()).collect::<Vec<_>>(), now);
        assert!(want.iter().all(|w| matches!(w.0, Verdict::Forward { .. })));
        assert_eq!(got, want);
        // Processed in another order than looked at: each frame is still handled as itself.
        let got = run_batch(&mut reversed, chunk, &(0..chunk.len()).rev().collect::<Vec<_>>(), now);
        assert_eq!(got, want);
    }
}
