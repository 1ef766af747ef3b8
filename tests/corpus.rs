//! Replays the committed fuzz corpus through the data plane with the fuzz target's invariants,
//! so that CI covers it without a fuzzer.

use xvs::replay::{Offline, exercise};

#[test]
fn fuzz_corpus_replays_cleanly() {
    let cfg = xvs::config::parse(include_str!("data/golden.toml"), "golden.toml").unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/pipeline");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let mut d = Offline::new(&cfg, &[]).unwrap();
        exercise(&mut d, &data);
        n += 1;
    }
    assert!(n >= 10, "the corpus holds only {n} inputs");
}

/// Writes the seed corpus: `XVS_WRITE_CORPUS=1 cargo test --test corpus write_seed_corpus -- --ignored`.
/// Seeds are the real keepalived captures of `../shared/vectors/vrrp` and frames for every
/// service of the golden configuration (each method, TCP and UDP, both families, replies, ICMP
/// errors, fragments, ARP), each alone and in short sequences that open a connection first.
#[test]
#[ignore]
fn write_seed_corpus() {
    use etherparse::PacketBuilder;
    if std::env::var_os("XVS_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/pipeline"));
    std::fs::create_dir_all(dir).unwrap();
    let (cli, lb0, lb1, rs) = (
        [2, 0, 0, 0, 1, 2],
        [2, 0, 0, 0, 1, 1],
        [2, 0, 0, 0, 2, 1],
        [2, 0, 0, 0, 2, 0x11],
    );
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let mut frames: Vec<(u8, Vec<u8>)> = Vec::new();
    let vectors = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors/vrrp");
    if let Ok(rd) = std::fs::read_dir(vectors) {
        for e in rd
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "hex"))
        {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let mut bytes = Vec::new();
            for line in text.lines().filter(|l| l.trim_start().starts_with("0x")) {
                let hex: String = line
                    .split_whitespace()
                    .skip(1)
                    .take_while(|w| w.len() == 4 || w.len() == 2)
                    .collect();
                bytes.extend((0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()));
            }
            frames.push((0, bytes));
        }
    }
    for vip in 10..=13u8 {
        for (port, tcp) in [(80u16, true), (7, false)] {
            let b = PacketBuilder::ethernet2(cli, lb0).ipv4([198, 18, 1, 2], [198, 18, 0, vip], 64);
            let mut f = Vec::new();
            if tcp {
                b.tcp(40000, port, 1, 1000).syn().write(&mut f, b"").unwrap();
            } else {
                b.udp(40000, port).write(&mut f, b"echo").unwrap();
            }
            frames.push((0, f));
        }
    }
    for vip in ["2001:2::10", "2001:2::11", "2001:2::12"] {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(cli, lb0)
            .ipv6(v6("2001:2:0:1::2"), v6(vip), 64)
            .tcp(40000, 80, 1, 1000)
            .syn()
            .write(&mut f, b"")
            .unwrap();
        frames.push((0, f));
    }
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(rs, lb1)
        .ipv4([198, 18, 2, 11], [198, 18, 1, 2], 64)
        .tcp(8080, 40000, 1, 1000)
        .syn()
        .ack(2)
        .write(&mut reply, b"")
        .unwrap();
    frames.push((1, reply));
    let mut icmp = Vec::new();
    let quote = &frames.iter().find(|f| f.1.len() > 40).unwrap().1[14..42];
    PacketBuilder::ethernet2(rs, lb1)
        .ipv4([198, 18, 2, 11], [198, 18, 1, 2], 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut icmp, quote)
        .unwrap();
    frames.push((1, icmp));
    let mut frag = frames[frames.len() - 3].1.clone();
    frag[20] |= 0x20;
    frames.push((0, frag));
    let mut n = 0;
    let mut write = |data: Vec<u8>| {
        std::fs::write(dir.join(format!("seed-{n:03}")), data).unwrap();
        n += 1;
    };
    // Each frame alone, then pairs (an opening frame, then another), in the exercise() format.
    for (port, f) in &frames {
        let mut d = vec![*port, 0];
        d.extend_from_slice(f);
        let mut one = vec![*port, (f.len() / 8) as u8];
        one.extend_from_slice(&f[..f.len() / 8 * 8]);
        write(d);
        write(one);
    }
    for w in frames.windows(2) {
        let (a, b) = (&w[0].1, &w[1].1);
        let mut d = vec![w[0].0, (a.len() / 8) as u8];
        d.extend_from_slice(&a[..a.len() / 8 * 8]);
        d.push(0);
        d.extend_from_slice(b);
        write(d);
    }
    // A UDP datagram to a NAT service in two fragments with valid headers: the first (padded to a
    // whole number of 8-byte words for the pair format), then the later one, together and alone.
    let mut dgram = Vec::new();
    PacketBuilder::ethernet2(cli, lb0)
        .ipv4([198, 18, 1, 2], [198, 18, 0, 10], 64)
        .udp(40000, 7)
        .write(&mut dgram, &[0x33; 56])
        .unwrap();
    let piece = |data: &[u8], word: u16| {
        let mut f = dgram[..34].to_vec();
        f[16..18].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        f[20..22].copy_from_slice(&word.to_be_bytes());
        let mut h = etherparse::Ipv4Header::from_slice(&f[14..]).unwrap().0;
        h.header_checksum = h.calc_header_checksum();
        f[14..34].copy_from_slice(&h.to_bytes());
        f.extend_from_slice(data);
        f
    };
    let mut first = piece(&dgram[34..66], 0x2000);
    first.extend_from_slice(&[0; 6]);
    let later = piece(&dgram[66..], 4);
    let mut pair = vec![0, (first.len() / 8) as u8];
    pair.extend_from_slice(&first);
    pair.push(0);
    pair.extend_from_slice(&later);
    std::fs::write(dir.join("seed-frag-pair"), pair).unwrap();
    let mut alone = vec![0, 0];
    alone.extend_from_slice(&later);
    std::fs::write(dir.join("seed-frag-later"), alone).unwrap();
}
