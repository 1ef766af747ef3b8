//! Per-worker counters: verdicts and drop reasons. Each worker owns its own; readers sum them.

use std::fmt;

macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $name:ident => $label:literal, )*) => {
        /// Why a frame was dropped. Each reason has its own counter.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[doc = $doc])* $name, )*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            pub const COUNT: usize = DropReason::ALL.len();

            /// Short snake_case name, used in summaries and metric labels.
            pub const fn label(self) -> &'static str {
                match self { $(DropReason::$name => $label,)* }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header, or a truncated VLAN tag.
    EthMalformed => "eth_malformed",
    /// IPv4 header truncated, bad version, bad header length or total length.
    Ipv4Malformed => "ipv4_malformed",
    /// IPv4 header checksum wrong.
    Ipv4Checksum => "ipv4_checksum",
    /// IPv6 header or extension-header chain truncated or malformed.
    Ipv6Malformed => "ipv6_malformed",
    /// TCP or UDP header truncated or with an impossible length.
    L4Malformed => "l4_malformed",
    /// ICMP or ICMPv6 message truncated or quoting an unusable packet.
    IcmpMalformed => "icmp_malformed",
    /// A fragment for a virtual service or local address that xvs cannot follow: a later fragment
    /// whose first fragment it has not forwarded (lost, late or expired), or one of a protocol
    /// other than TCP and UDP. xvs forwards fragments without reassembling them.
    Fragment => "fragment",
    /// TTL or hop limit would reach zero when forwarded.
    TtlExceeded => "ttl_exceeded",
    /// A TCP segment for a virtual service that is neither a SYN nor part of a known connection.
    NoConnection => "no_connection",
    /// An ICMP error that quotes no known connection.
    IcmpNoConnection => "icmp_no_connection",
    /// No real server available (none configured, all weight 0, or all down).
    NoDest => "no_dest",
    /// The connection table is at its size limit.
    TableFull => "table_full",
    /// No free local address and port in the FULLNAT pool.
    LaddrExhausted => "laddr_exhausted",
    /// A new NAT/DR/TUN connection would look, from its real server, exactly like a live one
    /// (same client address and port to the same server port, through another virtual service).
    ConnConflict => "conn_conflict",
    /// No route to the next hop.
    NoRoute => "no_route",
    /// The next hop's MAC address is not known (yet).
    NoNeighbour => "no_neighbour",
    /// The rewritten packet would not fit in the buffer or the egress MTU.
    TooBig => "too_big",
    /// The I/O shell could not transmit (ring full).
    TxFull => "tx_full",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Traffic of one real server of one service (by its stable id), as ipvsadm --stats shows it:
/// connections, and packets and bytes (IP length) from clients (in) and to them (out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestStats {
    pub conns: u64,
    pub pkts_in: u64,
    pub pkts_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl DestStats {
    pub fn merge(&mut self, o: &DestStats) {
        self.conns += o.conns;
        self.pkts_in += o.pkts_in;
        self.pkts_out += o.pkts_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
}

/// Most real-server ids counted per worker (ids are dense, from `DestIds`).
pub const MAX_DEST_STATS: usize = 1 << 16;

/// Counters kept by one worker. Plain integers: only their owner writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx: u64,
    pub forwarded: u64,
    pub replied: u64,
    pub passed: u64,
    pub dropped: [u64; DropReason::COUNT],
    /// New connections created.
    pub conns: u64,
    /// Connection lookups served by the worker's flow cache (see `conn::FlowCache`).
    pub flow_hits: u64,
    /// Per real server, indexed by its id; grown on demand.
    pub dests: Vec<DestStats>,
}

impl Stats {
    pub fn drop(&mut self, r: DropReason) {
        self.dropped[r as usize] += 1;
    }
    /// The counters of real server `id` (ids past [`MAX_DEST_STATS`] share the last slot).
    #[inline]
    pub fn dest(&mut self, id: u32) -> &mut DestStats {
        let i = (id as usize).min(MAX_DEST_STATS - 1);
        if i >= self.dests.len() {
            self.dests.resize(i + 1, DestStats::default());
        }
        &mut self.dests[i]
    }
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
    /// Add another worker's counters into these.
    pub fn merge(&mut self, o: &Stats) {
        self.rx += o.rx;
        self.forwarded += o.forwarded;
        self.replied += o.replied;
        self.passed += o.passed;
        self.conns += o.conns;
        self.flow_hits += o.flow_hits;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped.iter()) {
            *a += b;
        }
        if self.dests.len() < o.dests.len() {
            self.dests.resize(o.dests.len(), DestStats::default());
        }
        for (a, b) in self.dests.iter_mut().zip(o.dests.iter()) {
            a.merge(b);
        }
    }
    /// Drop reasons with a non-zero count, in counter order.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.dropped[r as usize]))
            .filter(|&(_, n)| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_every_counter() {
        let mut a = Stats {
            rx: 1,
            ..Default::default()
        };
        a.drop(DropReason::NoDest);
        let mut b = Stats {
            rx: 2,
            forwarded: 2,
            flow_hits: 5,
            ..Default::default()
        };
        b.drop(DropReason::NoDest);
        b.drop(DropReason::TableFull);
        a.merge(&b);
        assert_eq!(a.rx, 3);
        assert_eq!(a.forwarded, 2);
        assert_eq!(a.flow_hits, 5);
        assert_eq!(
            a.drops().collect::<Vec<_>>(),
            vec![(DropReason::NoDest, 2), (DropReason::TableFull, 1)]
        );
        assert_eq!(a.dropped_total(), 3);
    }

    #[test]
    fn labels_are_unique() {
        let mut l: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        l.sort();
        l.dedup();
        assert_eq!(l.len(), DropReason::COUNT);
    }
}
