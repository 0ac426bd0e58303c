//! Requests a guest has taken in and not answered yet, as its traffic shows them.
//!
//! A guest stopped right after its kernel acknowledged a request, and before it answered,
//! strands that request: the client waits in silence, and nothing comes that would wake the
//! guest. Where the backend can look inside a stopped guest (a namespace guest's sockets,
//! through `sock_diag`), it says so itself. A QEMU guest's kernel stops with it, so for it
//! the daemon follows its port instead: a segment with data for the guest opens a request on
//! its connection, and data, a FIN or an RST from the guest (or a FIN or RST from the
//! client) closes it. What is still open, and recent, when the guest has been stopped is
//! work in flight, and the guest is woken again at once.
//!
//! This is a heuristic of request and answer: an upload that the guest only acknowledges
//! counts as unanswered until it has been quiet for the window, which errs on the side of
//! keeping the guest awake.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::classify;
use crate::tcp::FlowKey;
use crate::time::Instant;

/// Connections followed at most per guest; past it new requests are not recorded (the
/// guest, with that many unanswered, has work in flight anyway).
pub const MAX_REQUESTS: usize = 4096;

/// The unanswered requests on one guest's port: by connection, when data last came for it.
/// Ordered by addresses, as [`crate::conntrack::Connections`] is: a peer cannot choose
/// flows that collide, and the order does not depend on the run.
#[derive(Debug, Clone, Default)]
pub struct Unanswered {
    open: BTreeMap<FlowKey, Instant>,
}

impl Unanswered {
    /// Nothing followed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes note of a frame seen on the guest's port at `now`: `to_guest` if the bridge was
    /// sending it to the guest, else the guest sent it. Anything but TCP is ignored, and so
    /// is a frame that does not parse.
    pub fn observe(&mut self, frame: &[u8], to_guest: bool, now: Instant) {
        let Some((src, dst, seg)) = classify::tcp(frame) else {
            return;
        };
        let flow = if to_guest {
            FlowKey {
                local: dst,
                local_port: seg.dst_port,
                peer: src,
                peer_port: seg.src_port,
            }
        } else {
            FlowKey {
                local: src,
                local_port: seg.src_port,
                peer: dst,
                peer_port: seg.dst_port,
            }
        };
        if seg.fin || seg.rst || seg.syn || !to_guest && !seg.payload.is_empty() {
            // The connection ends or starts over, or the guest answered.
            self.open.remove(&flow);
            return;
        }
        if to_guest && !seg.payload.is_empty() {
            if self.open.len() >= MAX_REQUESTS && !self.open.contains_key(&flow) {
                return;
            }
            self.open.insert(flow, now);
        }
    }

    /// How many connections have a request that came within `window` before `now` and has
    /// not been answered. Older ones are forgotten.
    pub fn count(&mut self, now: Instant, window: Duration) -> usize {
        self.open
            .retain(|_, at| now.saturating_since(*at) <= window);
        self.open.len()
    }
}
