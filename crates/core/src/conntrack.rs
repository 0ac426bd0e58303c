//! The connections a guest has open on its keep-awake ports, followed from the segments that
//! open and end them on its port (the daemon sees only those: SYN, FIN and RST).

use std::collections::BTreeMap;

use crate::classify;
use crate::guest::{PortRule, Transport as Proto};
use crate::tcp::FlowKey;

/// Connections followed at most per guest; past it new ones are not counted (the guest
/// stays awake anyway while it has that many).
pub const MAX_CONNECTIONS: usize = 4096;

/// Open connections to a guest's keep-awake ports. Ordered by their addresses: a peer cannot
/// choose flows that collide, and the order does not depend on the run.
#[derive(Debug, Default, Clone)]
pub struct ConnTracker {
    flows: BTreeMap<FlowKey, u16>,
}

impl ConnTracker {
    /// Takes note of a frame on the guest's port (either direction): a SYN to one of
    /// `ports` opens a connection, a FIN or RST either way ends it. Other frames are
    /// ignored.
    pub fn observe(&mut self, frame: &[u8], ports: &[PortRule]) {
        let Some((src, dst, seg)) = classify::tcp(frame) else {
            return;
        };
        let to_guest = FlowKey {
            local: dst,
            local_port: seg.dst_port,
            peer: src,
            peer_port: seg.src_port,
        };
        if seg.fin || seg.rst {
            let from_guest = FlowKey {
                local: src,
                local_port: seg.src_port,
                peer: dst,
                peer_port: seg.dst_port,
            };
            self.flows.remove(&to_guest);
            self.flows.remove(&from_guest);
            return;
        }
        let watched = ports
            .iter()
            .any(|r| r.transport == Proto::Tcp && r.port == seg.dst_port);
        if seg.syn && seg.ack.is_none() && watched && self.flows.len() < MAX_CONNECTIONS {
            self.flows.insert(to_guest, seg.dst_port);
        }
    }

    /// The ports with at least one open connection.
    pub fn open(&self) -> Vec<PortRule> {
        let mut ports: Vec<u16> = self.flows.values().copied().collect();
        ports.sort_unstable();
        ports.dedup();
        ports
            .into_iter()
            .map(|port| PortRule {
                transport: Proto::Tcp,
                port,
            })
            .collect()
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// No connection is open.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}
