//! The TCP connections a guest has open, followed from the segments on its port that open,
//! carry and end them (the daemon sees SYN, FIN, RST and PSH segments, either way, while
//! the guest is awake).
//!
//! Two things are decided from it:
//! - **Keep-awake:** an open connection on one of the guest's keep-awake ports keeps it
//!   awake. A connection counts once it has carried data, either way; a SYN alone (which
//!   anyone can send, from any address) counts only for [`PENDING_TTL`], the time a guest's
//!   kernel keeps resending its SYN-ACK to a peer that never answers. (It is still known,
//!   for admission, until it ends or room is needed: a connection may stay silent.)
//! - **Wake admission:** while the guest sleeps, a segment that opens nothing (data, FIN,
//!   a bare ACK) wakes it only for a connection it has; for one it does not have, the
//!   surrogate answers with a RST, as the guest's kernel would.
//!
//! The table is sure of itself only once it has followed the guest for long enough, or
//! learned its connections from a record (the journal, or a backend that lists the
//! guest's sockets): see [`Connections::trust_from`]. Until then, and if it ever had to
//! refuse a connection for room, an unknown connection is given the benefit of the doubt.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::classify;
use crate::guest::{PortRule, Transport as Proto};
use crate::tcp::FlowKey;
use crate::time::Instant;

/// Connections followed at most per guest. Past it the table stops being sure: unknown
/// connections are then treated as the guest's.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long a connection that has only been asked for (a SYN, and perhaps the guest's
/// SYN-ACK) counts: Linux resends a SYN-ACK 5 times, 63 s in all, before it gives up.
pub const PENDING_TTL: Duration = Duration::from_secs(75);

/// A connection, from the guest's side: its address and port, and the peer's.
pub use crate::tcp::FlowKey as Flow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Only asked for, at this time: no data has crossed it yet.
    pending: Option<Instant>,
    /// The guest has sent its FIN.
    fin_out: bool,
    /// The peer has sent its FIN.
    fin_in: bool,
}

/// What a guest's port has shown of its connections. Ordered by addresses: a peer cannot
/// choose flows that collide, and the order does not depend on the run.
#[derive(Debug, Default, Clone)]
pub struct Connections {
    flows: BTreeMap<FlowKey, Entry>,
    /// A connection was not recorded for lack of room since the table was last empty.
    overflowed: bool,
    /// From when the table is sure that it knows every connection ([`Self::trust_from`]).
    trusted_from: Option<Instant>,
}

impl Connections {
    /// Takes note of a segment seen at `now` on the guest's port: `to_guest` if the bridge
    /// was sending it to the guest, else the guest sent it. A SYN asks for a connection;
    /// data, either way, shows one that is open (and so also teaches the table connections
    /// that were open before it began to follow the guest); the two FINs, or a RST, end it.
    /// Anything but TCP, and a frame that does not parse, is ignored. Returns whether it is
    /// the guest serving someone: a SYN-ACK or data from it.
    pub fn observe(&mut self, frame: &[u8], to_guest: bool, now: Instant) -> bool {
        let Some((src, dst, seg)) = classify::tcp(frame) else {
            return false;
        };
        let serves =
            !to_guest && !seg.rst && (seg.ack.is_some() && seg.syn || !seg.payload.is_empty());
        self.follow(to_guest, src, dst, &seg, now);
        serves
    }

    fn follow(
        &mut self,
        to_guest: bool,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        seg: &classify::TcpSegment<'_>,
        now: Instant,
    ) {
        let key = if to_guest {
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
        if seg.rst {
            self.flows.remove(&key);
            return;
        }
        if seg.syn {
            // A SYN from either side asks; a SYN-ACK to the guest answers the guest's own
            // SYN, which no one but the peer it went to could have seen: open.
            let answered = to_guest && seg.ack.is_some();
            match self.flows.get_mut(&key) {
                Some(e) if answered => e.pending = None,
                Some(_) => {}
                None => {
                    let pending = (!answered).then_some(now);
                    self.insert(key, pending, now);
                }
            }
            return;
        }
        let entry = match self.flows.get_mut(&key) {
            Some(e) => e,
            None if !seg.payload.is_empty() => {
                self.insert(key, None, now);
                match self.flows.get_mut(&key) {
                    Some(e) => e,
                    None => return,
                }
            }
            None => return,
        };
        if !seg.payload.is_empty() {
            entry.pending = None;
        }
        if seg.fin {
            if to_guest {
                entry.fin_in = true;
            } else {
                entry.fin_out = true;
            }
        }
        if entry.fin_in && entry.fin_out {
            self.flows.remove(&key);
        }
    }

    fn insert(&mut self, key: FlowKey, pending: Option<Instant>, now: Instant) {
        if self.flows.len() >= MAX_CONNECTIONS {
            self.forget_stale(now);
        }
        if self.flows.len() >= MAX_CONNECTIONS {
            // Full of connections that carried data or were asked for lately (a SYN flood
            // while the guest is awake): one is left out, so the table is no longer sure.
            self.overflowed = true;
            return;
        }
        self.flows.insert(
            key,
            Entry {
                pending,
                fin_out: false,
                fin_in: false,
            },
        );
    }

    /// Forgets the connections that were only asked for, longer than [`PENDING_TTL`] ago:
    /// when room is needed, since until then such a connection may still be the guest's
    /// (one that has said nothing yet).
    fn forget_stale(&mut self, now: Instant) {
        self.flows.retain(|_, e| {
            e.pending
                .is_none_or(|at| now.saturating_since(at) < PENDING_TTL)
        });
        if self.flows.is_empty() {
            self.overflowed = false;
        }
    }

    /// Records connections the guest has, from a record of them (the journal, a backend
    /// that lists the guest's sockets): open, as if they had carried data.
    pub fn learn(&mut self, flows: impl IntoIterator<Item = Flow>, now: Instant) {
        for key in flows {
            match self.flows.get_mut(&key) {
                Some(e) => e.pending = None,
                None => self.insert(key, None, now),
            }
        }
    }

    /// Says from when the table knows every connection the guest has: at once for a table
    /// learned from a record, after a while for one that began to follow a guest already
    /// running (whose older connections it learns only when they carry data), never
    /// (`None`) for a guest whose port cannot be followed.
    pub fn trust_from(&mut self, at: Option<Instant>) {
        self.trusted_from = at;
    }

    /// Whether the table knows, at `now`, every connection the guest has.
    pub fn is_sure(&self, now: Instant) -> bool {
        !self.overflowed && self.trusted_from.is_some_and(|t| now >= t)
    }

    /// Whether a segment of `key` that opens nothing is for a connection the guest may
    /// have: one the table knows, or any, while the table is not sure of itself.
    pub(crate) fn admits(&self, key: &FlowKey, now: Instant) -> bool {
        !self.is_sure(now) || self.flows.contains_key(key)
    }

    /// The guest's ports among `ports` (TCP rules) with a connection open at `now`: one
    /// that has carried data, or one asked for within [`PENDING_TTL`].
    pub fn open_ports(&self, now: Instant, ports: &[PortRule]) -> Vec<PortRule> {
        let mut open: Vec<PortRule> = self
            .flows
            .iter()
            .filter(|(_, e)| {
                e.pending
                    .is_none_or(|at| now.saturating_since(at) < PENDING_TTL)
            })
            .map(|(k, _)| PortRule {
                transport: Proto::Tcp,
                port: k.local_port,
            })
            .filter(|r| ports.contains(r))
            .collect();
        open.sort_unstable();
        open.dedup();
        open
    }

    /// The connections known now, in address order (for the journal).
    pub fn flows(&self) -> impl Iterator<Item = Flow> + '_ {
        self.flows.keys().copied()
    }

    /// How many connections are known.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// No connection is known.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}
