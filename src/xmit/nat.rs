//! NAT (masquerading), as IPVS's `ip_vs_nat_xmit`: the destination becomes the real server on the
//! way in; the source becomes the VIP again on the way out.

use super::{Parsed, rewrite, set_l2};
use crate::conn::Conn;
use crate::service::Hop;

/// Client -> VIP:vport becomes client -> RIP:rport.
pub fn inbound(frame: &mut [u8], p: &Parsed, c: &Conn, hop: &Hop) {
    rewrite(frame, p, None, Some((c.daddr, c.dport)));
    set_l2(frame, hop);
}

/// RIP:rport -> client becomes VIP:vport -> client.
pub fn outbound(frame: &mut [u8], p: &Parsed, c: &Conn, hop: &Hop) {
    rewrite(frame, p, Some((c.vaddr, c.vport)), None);
    set_l2(frame, hop);
}
