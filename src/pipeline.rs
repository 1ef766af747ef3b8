//! The per-worker data plane: one frame in, one verdict out.

/// Bytes of headroom the I/O shells leave in front of every received frame, so that TUN can
/// prepend an outer IPv4 (20) or IPv6 (40) header without copying the packet.
pub const HEADROOM: usize = 64;

/// A frame in a buffer with headroom: the packet is `buf[start..start + len]`.
///
/// The pipeline may move `start` back (encapsulation) or change `len`; the I/O shell transmits
/// whatever range the frame holds when the verdict is `Forward` or `Reply`.
pub struct Frame<'a> {
    pub buf: &'a mut [u8],
    pub start: usize,
    pub len: usize,
}

impl<'a> Frame<'a> {
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> Frame<'a> {
        Frame { buf, start, len }
    }
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// What becomes of a frame. Every frame ends in exactly one verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame out of port `port`.
    Forward { port: u16 },
    /// Transmit the frame (rewritten into a reply, such as ICMP "fragmentation needed") out of the port it came in on.
    Reply,
    /// Not ours: hand the frame, untouched, to the kernel's stack.
    PassToKernel,
    /// Drop it, counted under the reason.
    Drop(crate::stats::DropReason),
}
