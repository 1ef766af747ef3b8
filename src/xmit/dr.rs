//! Direct routing (`ip_vs_dr_xmit`): the IP packet is untouched; only the Ethernet destination
//! changes to the real server's MAC on the shared segment. Replies bypass the director.

use super::set_l2;
use crate::service::Hop;

pub fn inbound(frame: &mut [u8], hop: &Hop) {
    set_l2(frame, hop);
}
