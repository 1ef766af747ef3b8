//! The generator's template frame and its precomputed checksum parts (`struct gen_cfg` of
//! `bpf/gen.c`), and [`finish`], a Rust copy of the program's per-frame arithmetic for tests.

use std::net::IpAddr;

use super::GenError;

/// Bytes of template the BPF program copies at most (`HDR_MAX`).
pub const HDR_MAX: usize = 128;
/// Largest frame the generator sends (no jumbo frames on the lab's veths).
pub const MAX_SIZE: usize = 1514;

/// What each frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GenProto {
    /// UDP datagrams (established flows once a director has seen them).
    Udp,
    /// TCP SYN: with a new flow every frame, new connections.
    Syn,
    /// TCP ACK: established TCP flows.
    Ack,
}

/// `struct gen_cfg` of `bpf/gen.c`, byte for byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenCfg {
    /// Template headers.
    pub hdr: [u8; HDR_MAX],
    /// Bytes of `hdr` in use.
    pub hdr_len: u32,
    /// 0: a new random flow every frame; else the number of flows.
    pub flows: u32,
    /// 1: flows in order; 0: random.
    pub sequential: u32,
    /// Offset of the varied source-address word.
    pub saddr_off: u32,
    /// Offset of the source port.
    pub sport_off: u32,
    /// Offset of the timestamp, 0 when the frame has no room for one.
    pub ts_off: u32,
    /// Offset of the IPv4 header checksum, 0 for IPv6.
    pub ip_csum_off: u32,
    /// Offset of the L4 checksum.
    pub l4_csum_off: u32,
    /// IPv4 header sum without the checksum and the varied word.
    pub ip_sum: u32,
    /// Pseudo header and L4 sum without the checksum, varied words and timestamp.
    pub l4_sum: u32,
    /// First value of the varied address word.
    pub saddr_base: u32,
    /// 1 for UDP: a computed checksum of 0 goes out as 0xffff.
    pub udp_zero_ok: u32,
    /// The interface the generator transmits on (set by the generator; frames arriving on any
    /// other interface pass untouched).
    pub ifindex: u32,
}

/// What a template is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Destination MAC (the director's client-side interface).
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Base source address: the last 16 bits are varied per flow.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// Frame kind.
    pub proto: GenProto,
    /// Frame size without FCS.
    pub size: usize,
    /// 0: a new flow every frame; else the number of flows.
    pub flows: u32,
    /// Cycle through the flows in order instead of picking at random.
    pub sequential: bool,
}

/// Sum of the 16-bit words of `b` as they lie in memory (see `bpf/gen.c`), folded to 16 bits.
pub fn sum_words(b: &[u8]) -> u32 {
    let mut s: u64 = b
        .chunks(2)
        .map(|c| u64::from(u16::from_ne_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u32
}

fn fold(mut s: u32) -> u32 {
    s = (s & 0xffff) + (s >> 16);
    (s & 0xffff) + (s >> 16)
}

/// Whether `a` is in the benchmarking ranges 198.18.0.0/15 or 2001:2::/48.
pub fn benchmark_range(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.octets()[0] == 198 && (a.octets()[1] & 0xfe) == 18,
        IpAddr::V6(a) => a.segments()[..3] == [0x2001, 2, 0],
    }
}

/// The smallest frame for `proto` over IPv4 (`v6` false) or IPv6, timestamp included.
pub fn min_size(v6: bool, proto: GenProto) -> usize {
    14 + if v6 { 40 } else { 20 } + if proto == GenProto::Udp { 8 } else { 20 }
}

impl Template {
    /// The BPF configuration for this template, or why it cannot be sent.
    pub fn build(&self) -> Result<GenCfg, GenError> {
        let v6 = match (self.src, self.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => false,
            (IpAddr::V6(_), IpAddr::V6(_)) => true,
            _ => return Err(GenError::Bad("--src and --dst must be the same IP version".into())),
        };
        for a in [self.src, self.dst] {
            if !benchmark_range(a) {
                return Err(GenError::Bad(format!(
                    "{a} is outside the benchmarking ranges 198.18.0.0/15 and 2001:2::/48"
                )));
            }
        }
        let (ip_len, l4_len) = (
            if v6 { 40 } else { 20 },
            if self.proto == GenProto::Udp { 8 } else { 20 },
        );
        let l4 = 14 + ip_len;
        let hdr_len = l4 + l4_len;
        let size = self.size.max(60);
        if size < hdr_len || size > MAX_SIZE {
            return Err(GenError::Bad(format!(
                "--size {} out of range {}..={MAX_SIZE}",
                self.size,
                hdr_len.max(60)
            )));
        }
        let mut f = [0u8; HDR_MAX];
        f[0..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        let l4_total = (size - l4) as u16;
        let proto_num: u8 = if self.proto == GenProto::Udp { 17 } else { 6 };
        let saddr_off;
        let mut pseudo = Vec::with_capacity(40);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f[12..14].copy_from_slice(&[0x08, 0x00]);
                f[14] = 0x45;
                f[16..18].copy_from_slice(&((size - 14) as u16).to_be_bytes());
                f[20] = 0x40; // DF
                f[22] = 64;
                f[23] = proto_num;
                f[26..30].copy_from_slice(&s.octets());
                f[30..34].copy_from_slice(&d.octets());
                saddr_off = 28;
                pseudo.extend_from_slice(&f[26..34]);
                pseudo.extend_from_slice(&[0, proto_num]);
                pseudo.extend_from_slice(&l4_total.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f[12..14].copy_from_slice(&[0x86, 0xdd]);
                f[14] = 0x60;
                f[18..20].copy_from_slice(&l4_total.to_be_bytes());
                f[20] = proto_num;
                f[21] = 64;
                f[22..38].copy_from_slice(&s.octets());
                f[38..54].copy_from_slice(&d.octets());
                saddr_off = 36;
                pseudo.extend_from_slice(&f[22..54]);
                pseudo.extend_from_slice(&u32::from(l4_total).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, proto_num]);
            }
            _ => unreachable!("IP versions checked above"),
        }
        let saddr_base = u32::from(u16::from_be_bytes([f[saddr_off], f[saddr_off + 1]]));
        // The varied words are added per frame: leave them zero in the sums.
        f[saddr_off..saddr_off + 2].fill(0);
        let src_start = if v6 { 22 } else { 26 };
        pseudo[saddr_off - src_start..][..2].fill(0);
        f[l4 + 2..l4 + 4].copy_from_slice(&self.dport.to_be_bytes());
        let l4_csum_off = match self.proto {
            GenProto::Udp => {
                f[l4 + 4..l4 + 6].copy_from_slice(&l4_total.to_be_bytes());
                l4 + 6
            }
            GenProto::Syn | GenProto::Ack => {
                f[l4 + 4..l4 + 8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
                if self.proto == GenProto::Ack {
                    f[l4 + 8..l4 + 12].copy_from_slice(&0x0abc_def0u32.to_be_bytes());
                }
                f[l4 + 12] = 0x50;
                f[l4 + 13] = if self.proto == GenProto::Syn { 0x02 } else { 0x10 };
                f[l4 + 14..l4 + 16].copy_from_slice(&64240u16.to_be_bytes());
                l4 + 16
            }
        };
        let ip_sum = if v6 { 0 } else { sum_words(&f[14..34]) };
        let l4_sum = fold(sum_words(&pseudo) + sum_words(&f[l4..hdr_len]));
        let ts_off = if size >= hdr_len + 8 { hdr_len as u32 } else { 0 };
        Ok(GenCfg {
            hdr: f,
            hdr_len: hdr_len as u32,
            flows: self.flows,
            sequential: u32::from(self.sequential),
            saddr_off: saddr_off as u32,
            sport_off: l4 as u32,
            ts_off,
            ip_csum_off: if v6 { 0 } else { 24 },
            l4_csum_off: l4_csum_off as u32,
            ip_sum,
            l4_sum,
            saddr_base,
            udp_zero_ok: u32::from(self.proto == GenProto::Udp),
            ifindex: 0,
        })
    }
}

/// The (address word, source port) of flow `i` of an established-flows run (as `bpf/gen.c`).
pub fn flow(cfg: &GenCfg, i: u32) -> (u16, u16) {
    (
        ((cfg.saddr_base + i / 64512) & 0xffff) as u16,
        (1024 + i % 64512) as u16,
    )
}

/// What the BPF program does to one frame of `cfg.hdr_len`..: headers from the template, flow
/// `(a, p)`, timestamp `ts`, checksums. `frame` must be at least the template's size.
pub fn finish(cfg: &GenCfg, frame: &mut [u8], (a, p): (u16, u16), ts: u64) {
    let n = cfg.hdr_len as usize;
    frame[..n].copy_from_slice(&cfg.hdr[..n]);
    let (so, po) = (cfg.saddr_off as usize, cfg.sport_off as usize);
    frame[so..so + 2].copy_from_slice(&a.to_be_bytes());
    frame[po..po + 2].copy_from_slice(&p.to_be_bytes());
    let w = |f: &[u8], o: usize| u32::from(u16::from_ne_bytes([f[o], f[o + 1]]));
    let mut l4 = cfg.l4_sum + w(frame, so) + w(frame, po);
    if cfg.ts_off != 0 {
        let t = cfg.ts_off as usize;
        frame[t..t + 8].copy_from_slice(&ts.to_ne_bytes());
        l4 += (0..4).map(|k| w(frame, t + 2 * k)).sum::<u32>();
    }
    if cfg.ip_csum_off != 0 {
        let c = !(fold(cfg.ip_sum + w(frame, so)) as u16);
        let o = cfg.ip_csum_off as usize;
        frame[o..o + 2].copy_from_slice(&c.to_ne_bytes());
    }
    let mut c = !(fold(l4) as u16);
    if c == 0 && cfg.udp_zero_ok == 1 {
        c = 0xffff;
    }
    let o = cfg.l4_csum_off as usize;
    frame[o..o + 2].copy_from_slice(&c.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn template(src: &str, dst: &str, proto: GenProto, size: usize) -> Template {
        Template {
            dst_mac: [2, 0, 0, 0, 1, 1],
            src_mac: [2, 0, 0, 0, 1, 2],
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            dport: 7,
            proto,
            size,
            flows: 1000,
            sequential: false,
        }
    }

    /// Builds a frame like the BPF program does and checks it with etherparse's own checksums.
    fn check(t: &Template, flow_i: u32, ts: u64) {
        let cfg = t.build().unwrap();
        let mut f = vec![0u8; t.size.max(60)];
        finish(&cfg, &mut f, flow(&cfg, flow_i), ts);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let payload_at = cfg.hdr_len as usize;
        let (sport, ok) = match (&p.net, &p.transport) {
            (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u))) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                let c = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
                (u.source_port(), c == u.checksum())
            }
            (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tc))) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                let c = tc.to_header().calc_checksum_ipv4(&h, tc.payload()).unwrap();
                (tc.source_port(), c == tc.checksum())
            }
            (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Udp(u))) => {
                let h = ip.header().to_header();
                let c = u.to_header().calc_checksum_ipv6(&h, u.payload()).unwrap();
                (u.source_port(), c == u.checksum())
            }
            (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Tcp(tc))) => {
                let h = ip.header().to_header();
                let c = tc.to_header().calc_checksum_ipv6(&h, tc.payload()).unwrap();
                (tc.source_port(), c == tc.checksum())
            }
            other => panic!("unexpected parse {other:?}"),
        };
        assert!(ok, "L4 checksum of {t:?} flow {flow_i}");
        assert_eq!(sport, flow(&cfg, flow_i).1);
        if cfg.ts_off != 0 {
            assert_eq!(&f[payload_at..payload_at + 8], &ts.to_ne_bytes());
        }
    }

    #[test]
    fn checksums_hold_for_every_kind() {
        for (s, d) in [("198.19.0.0", "198.18.0.10"), ("2001:2:0:9::", "2001:2::10")] {
            for proto in [GenProto::Udp, GenProto::Syn, GenProto::Ack] {
                for size in [60, 64, 90, 128, 1514] {
                    if size < min_size(d.contains(':'), proto) {
                        assert!(template(s, d, proto, size).build().is_err());
                        continue;
                    }
                    let t = template(s, d, proto, size);
                    for (i, ts) in [
                        (0, 0),
                        (1, 1),
                        (64511, u64::MAX),
                        (64512, 0x1234_5678_9abc),
                        (999_999, 77),
                    ] {
                        check(&t, i, ts);
                    }
                }
            }
        }
    }

    #[test]
    fn frame_layout() {
        let t = template("198.19.0.0", "198.18.0.10", GenProto::Syn, 64);
        let c = t.build().unwrap();
        assert_eq!(c.hdr_len, 54);
        assert_eq!(c.ts_off, 54);
        assert_eq!(c.hdr[47], 0x02);
        assert_eq!(std::mem::size_of::<GenCfg>(), HDR_MAX + 13 * 4);
        let t = template("198.19.0.0", "198.18.0.10", GenProto::Syn, 60);
        assert_eq!(t.build().unwrap().ts_off, 0, "no room for a timestamp");
        assert_eq!(min_size(true, GenProto::Syn), 74);
    }

    #[test]
    fn flows_cover_more_than_one_port_range() {
        let c = template("198.19.0.5", "198.18.0.10", GenProto::Udp, 64)
            .build()
            .unwrap();
        assert_eq!(flow(&c, 0), (5, 1024));
        assert_eq!(flow(&c, 64512), (6, 1024));
        assert_eq!(flow(&c, 10_000_000), (5 + 155, 1024 + (10_000_000 % 64512) as u16));
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(template("198.19.0.0", "2001:2::1", GenProto::Udp, 64).build().is_err());
        assert!(template("10.0.0.1", "198.18.0.10", GenProto::Udp, 64).build().is_err());
        assert!(
            template("198.19.0.0", "198.18.0.10", GenProto::Udp, 9000)
                .build()
                .is_err()
        );
        assert!(template("2001:2::1", "2001:2::2", GenProto::Syn, 60).build().is_err());
    }
}
