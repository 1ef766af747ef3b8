//! FULLNAT (DPVS's `dp_vs_xmit_fnat`): both ends rewritten, so the real server sees a local address
//! of the director as the client and needs no route back through it.

use super::{Parsed, rewrite, set_l2};
use crate::conn::Conn;
use crate::service::Hop;

/// CIP:cport -> VIP:vport becomes LIP:lport -> RIP:rport.
pub fn inbound(frame: &mut [u8], p: &Parsed, c: &Conn, hop: &Hop) {
    rewrite(frame, p, Some((c.laddr, c.lport)), Some((c.daddr, c.dport)));
    set_l2(frame, hop);
}

/// RIP:rport -> LIP:lport becomes VIP:vport -> CIP:cport.
pub fn outbound(frame: &mut [u8], p: &Parsed, c: &Conn, hop: &Hop) {
    rewrite(frame, p, Some((c.vaddr, c.vport)), Some((c.caddr, c.cport)));
    set_l2(frame, hop);
}
