//! The LVS TCP connection states and their transitions, as IPVS's `tcp_states` table in
//! `net/netfilter/ipvs/ip_vs_proto_tcp.c` (Linux 6.x), copied row for row.

use crate::types::Timeouts;
use std::time::Duration;

/// IPVS's `IP_VS_TCP_S_*`, plus one state for UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    None = 0,
    Established,
    SynSent,
    SynRecv,
    FinWait,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    SynAck,
    /// A UDP "connection": one state, the udp timeout.
    Udp,
}

use TcpState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI, SynRecv as SR,
    SynSent as SS, TimeWait as TW,
};

/// Which way a packet went, for choosing the table (IPVS `TCP_DIR_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Client to server, replies seen too (NAT, FULLNAT).
    Input,
    /// Server to client.
    Output,
    /// Client to server where replies bypass the director (DR, TUN).
    InputOnly,
}

/// Rows: syn, fin, ack, rst; columns: the current state NONE..SYNACK.
type Table = [[TcpState; 11]; 4];

const INPUT: Table = [
    /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
    /*fin*/ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
    /*ack*/ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
];

const OUTPUT: Table = [
    /*syn*/ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
    /*fin*/ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
    /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
    /*rst*/ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
];

const INPUT_ONLY: Table = [
    /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
    /*fin*/ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
    /*ack*/ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
];

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

impl TcpState {
    /// The state after a segment with `flags` went `way` (IPVS `set_tcp_state`): RST wins over
    /// SYN, SYN over FIN, FIN over ACK; a segment with none of them changes nothing.
    pub fn next(self, way: Way, flags: u8) -> TcpState {
        if self == TcpState::Udp {
            return self;
        }
        let row = if flags & RST != 0 {
            3
        } else if flags & SYN != 0 {
            0
        } else if flags & FIN != 0 {
            1
        } else if flags & ACK != 0 {
            2
        } else {
            return self;
        };
        let t = match way {
            Way::Input => &INPUT,
            Way::Output => &OUTPUT,
            Way::InputOnly => &INPUT_ONLY,
        };
        t[row][self as usize]
    }

    /// Whether a segment with `flags` leaves this state as it is whichever way it goes: UDP, or an
    /// established connection and a segment without SYN, FIN or RST. (A subset of what
    /// [`TcpState::next`] keeps, that a flow cache can tell without the table.)
    #[inline]
    pub fn keeps(self, flags: u8) -> bool {
        match self {
            TcpState::Udp => true,
            TcpState::Established => flags & (SYN | FIN | RST) == 0,
            _ => false,
        }
    }

    pub const COUNT: usize = 12;
    /// Every state, in `as usize` order.
    pub const ALL: [TcpState; TcpState::COUNT] = [
        TcpState::None,
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::SynAck,
        TcpState::Udp,
    ];

    /// How long a connection stays in this state without traffic.
    pub fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            TcpState::None => Duration::from_secs(2),
            TcpState::Established => t.tcp_established,
            TcpState::SynSent => t.tcp_syn_sent,
            TcpState::SynRecv => t.tcp_syn_recv,
            TcpState::FinWait => t.tcp_fin_wait,
            TcpState::TimeWait => t.tcp_time_wait,
            TcpState::Close => t.tcp_close,
            TcpState::CloseWait => t.tcp_close_wait,
            TcpState::LastAck => t.tcp_last_ack,
            TcpState::Listen => t.tcp_listen,
            TcpState::SynAck => t.tcp_synack,
            TcpState::Udp => t.udp,
        }
    }

    /// The name `ipvsadm -L -c` prints.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
            TcpState::Udp => "UDP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_state_in_discriminant_order() {
        // The connection table indexes its per-state timeouts by `state as usize` through ALL.
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s:?}");
        }
        assert_eq!(TcpState::Udp as usize, TcpState::COUNT - 1);
    }

    #[test]
    fn keeps_only_what_every_way_keeps() {
        let mut kept = 0;
        for s in TcpState::ALL {
            for flags in 0..=u8::MAX {
                if s.keeps(flags) {
                    kept += 1;
                    for way in [Way::Input, Way::Output, Way::InputOnly] {
                        assert_eq!(s.next(way, flags), s, "{s:?} {way:?} {flags:#x}");
                    }
                }
            }
        }
        // UDP keeps every flag byte; established keeps the 32 without SYN, FIN or RST.
        assert_eq!(kept, 256 + 32);
    }

    #[test]
    fn nat_handshake_and_close() {
        let s = TcpState::None.next(Way::Input, SYN);
        assert_eq!(s, SR);
        let s = s.next(Way::Output, SYN | ACK);
        assert_eq!(s, SR);
        let s = s.next(Way::Input, ACK);
        assert_eq!(s, ES);
        let s = s.next(Way::Input, FIN | ACK);
        assert_eq!(s, CW);
        let s = s.next(Way::Output, FIN | ACK);
        assert_eq!(s, TW);
        assert_eq!(s.next(Way::Input, ACK), TW);
    }

    #[test]
    fn dr_input_only() {
        let s = TcpState::None.next(Way::InputOnly, SYN);
        assert_eq!(s, SR);
        let s = s.next(Way::InputOnly, ACK);
        assert_eq!(s, ES);
        let s = s.next(Way::InputOnly, FIN | ACK);
        assert_eq!(s, FW);
        assert_eq!(s.next(Way::InputOnly, RST), CL);
    }

    #[test]
    fn rst_wins_and_no_flags_change_nothing() {
        assert_eq!(ES.next(Way::Input, RST | SYN | ACK), CL);
        assert_eq!(ES.next(Way::Input, 0x08), ES);
        assert_eq!(TcpState::Udp.next(Way::Input, RST), TcpState::Udp);
    }

    #[test]
    fn timeouts_follow_ipvs_defaults() {
        let t = Timeouts::default();
        assert_eq!(ES.timeout(&t), Duration::from_secs(900));
        assert_eq!(SR.timeout(&t), Duration::from_secs(60));
        assert_eq!(CL.timeout(&t), Duration::from_secs(10));
        assert_eq!(FW.timeout(&t), Duration::from_secs(120));
        assert_eq!(TcpState::Udp.timeout(&t), Duration::from_secs(300));
    }
}
