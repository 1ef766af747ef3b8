//! `xvs replay` as a user runs it: a capture in, the frames xvs would send out, and a summary.

use std::fs::File;
use std::process::Command;
use std::time::Duration;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

#[test]
fn replay_writes_what_would_be_sent_and_counts_verdicts() {
    let dir = std::env::temp_dir().join(format!("xvs-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("in.pcap"), dir.join("out.pcap"));
    let (cli, lb0) = ([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 1, 1]);
    let mut frames = Vec::new();
    // A UDP datagram to the NAT VIP, one to the FULLNAT VIP, one to a port that is no service,
    // and a truncated frame.
    for (vip, port) in [
        ([198, 18, 0, 10], 7u16),
        ([198, 18, 0, 11], 7),
        ([198, 18, 0, 10], 9999),
    ] {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(cli, lb0)
            .ipv4([198, 18, 1, 2], vip, 64)
            .udp(40000, port)
            .write(&mut f, b"hello")
            .unwrap();
        frames.push(f);
    }
    frames.push(frames[0][..30].to_vec());
    {
        let mut w = PcapWriter::new(File::create(&input).unwrap()).unwrap();
        for (i, f) in frames.iter().enumerate() {
            w.write_packet(&PcapPacket::new(Duration::from_millis(i as u64), f.len() as u32, f))
                .unwrap();
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_xvs"))
        .args([
            "replay",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden.toml"),
        ])
        .args([&input, &output])
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.contains("frames in               4"), "{summary}");
    assert!(summary.contains("forwarded               2"), "{summary}");
    assert!(summary.contains("to the kernel           1"), "{summary}");
    assert!(summary.contains("ipv4_malformed"), "{summary}");
    let mut r = PcapReader::new(File::open(&output).unwrap()).unwrap();
    let mut dsts = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let s = SlicedPacket::from_ethernet(&p.data).unwrap();
        let Some(NetSlice::Ipv4(ip)) = s.net else {
            panic!("not IPv4")
        };
        dsts.push((ip.header().source(), ip.header().destination()));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // NAT keeps the client's address; FULLNAT replaces it with the local address.
    assert_eq!(
        dsts,
        vec![([198, 18, 1, 2], [198, 18, 2, 11]), ([198, 18, 3, 1], [198, 18, 2, 11])]
    );
}
