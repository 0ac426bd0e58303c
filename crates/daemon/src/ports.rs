//! Answering in the kernel at every port of a bridge (`[surrogate] in_kernel_at_every_port`).
//!
//! The kernel's responder runs on the surrogate's port: a request crosses the bridge to it,
//! and its answer crosses back. Attached also at the ingress of the bridge's other ports,
//! it answers a request as it comes in, and neither crosses the bridge. That is the same
//! answer only where the bridge would have carried the request to the guest unchanged, so
//! a port is answered at only while the bridge forwards on it freely (in the forwarding
//! state, neither isolated nor locked), never on a bridge that filters VLANs, and never at
//! the surrogate's own port. The bridge tells of each port that is added, changes state or
//! flags, or leaves, and the port is attached or detached as it does, so that a guest's
//! tap created after the start, a sleeping guest's port (disabled while it sleeps), or a
//! port isolated by its owner is followed without a reload. A change of the bridge itself
//! (VLAN filtering turned on), or changes the kernel could not deliver, make the worker
//! read all the ports again.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vmnap_host::netlink::bridge_netfilter_on;
use vmnap_host::xdp::{Hook, Responder};
use vmnap_host::{LinkEvents, Netlink};

use crate::error::chain;

/// How long after a change of the bridge itself (or lost changes) its ports are read
/// again: a burst of changes is one reading.
const SETTLE: Duration = Duration::from_millis(100);

/// A bridge's ports, followed for the kernel's responder.
#[derive(Debug)]
pub(crate) struct EveryPort {
    bridge: String,
    bridge_ifindex: u32,
    /// The surrogate's port: answered at already, by the responder's own hook.
    own_port: u32,
    events: LinkEvents,
    /// When to read the ports again, if a change was heard.
    due: Option<Instant>,
    /// The bridge filtered VLANs at the last reading (said once per change).
    vlan_filtering: bool,
    /// The bridge's own netfilter calls were said to be on.
    said_nf_call: bool,
}

impl EveryPort {
    /// Starts answering at every port of `bridge` that allows it, with `responder`, if the
    /// responder runs with tcx (a kernel that has it) and the link events can be heard;
    /// otherwise says why and returns `None`, and the surrogate's port alone answers.
    pub(crate) fn start(
        bridge: &str,
        bridge_ifindex: u32,
        own_port: u32,
        netlink: &mut Netlink,
        responder: &mut Responder,
    ) -> Option<Self> {
        if responder.hook() != Hook::PeerEgress {
            warn!(%bridge, hook = %responder.hook(), "in_kernel_at_every_port needs tcx (Linux 6.6); answering at vmnap's port only");
            return None;
        }
        let events = match LinkEvents::open() {
            Ok(e) => e,
            Err(e) => {
                warn!(%bridge, error = %e, "cannot hear link changes; answering at vmnap's port only");
                return None;
            }
        };
        if bridge_netfilter_on() {
            warn!(%bridge, "bridged frames go to iptables or arptables (br_netfilter's bridge-nf-call-* sysctls): requests answered at the ports they come in by bypass those rules");
        }
        let mut ports = EveryPort {
            bridge: bridge.to_owned(),
            bridge_ifindex,
            own_port,
            events,
            due: None,
            vlan_filtering: false,
            said_nf_call: false,
        };
        ports.scan(netlink, responder);
        Some(ports)
    }

    /// The descriptor to poll for link changes.
    pub(crate) fn fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    /// Reads the link changes waiting. A message of the bridge's own about one of its
    /// ports (added, its state or flags changed) attaches or detaches that port at once; a
    /// port's removal detaches it; a change of the bridge itself, or changes lost, make a
    /// reading of all the ports due.
    pub(crate) fn heard(&mut self, responder: &mut Responder) {
        let (bridge, own) = (self.bridge_ifindex, self.own_port);
        let mut changes = Vec::new();
        let lost = self.events.drain(|c| changes.push(c)).unwrap_or_else(|e| {
            debug!(bridge = %self.bridge, error = %e, "cannot read link changes");
            true
        });
        let mut rescan = lost;
        for c in changes {
            if c.ifindex == bridge {
                rescan = true;
            } else if c.removed || c.master != Some(bridge) {
                // Gone, or no longer this bridge's port.
                responder.detach_port(c.ifindex);
            } else if let Some(port) = c.port {
                if port.ifindex == own || self.vlan_filtering || !port.forwards_freely() {
                    responder.detach_port(port.ifindex);
                } else if !responder.has_port(port.ifindex) {
                    self.attach(responder, port.ifindex);
                }
            }
        }
        if rescan && self.due.is_none() {
            self.due = Some(Instant::now() + SETTLE);
        }
    }

    fn attach(&self, responder: &mut Responder, port: u32) {
        if let Err(e) = responder.attach_port(port) {
            warn!(bridge = %self.bridge, port, error = %chain(&e), "cannot answer at the port; its requests are answered at vmnap's port");
        }
    }

    /// When the ports are next read, if a change is pending.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// Reads the ports again if that is due.
    pub(crate) fn tick(&mut self, netlink: &mut Netlink, responder: &mut Responder) {
        if self.due.is_some_and(|at| Instant::now() >= at) {
            self.due = None;
            self.scan(netlink, responder);
        }
    }

    /// Attaches the responder to every port that allows it and detaches it from the others.
    /// A failed reading leaves the ports as they were and is tried again.
    fn scan(&mut self, netlink: &mut Netlink, responder: &mut Responder) {
        let bridge = self.bridge.clone();
        let read = netlink
            .bridge_settings(self.bridge_ifindex)
            .and_then(|s| Ok((s, netlink.bridge_ports(self.bridge_ifindex)?)));
        let (settings, ports) = match read {
            Ok(r) => r,
            Err(e) => {
                warn!(%bridge, error = %chain(&e), "cannot read the bridge's ports; trying again");
                self.due = Some(Instant::now() + Duration::from_secs(1));
                return;
            }
        };
        if settings.nf_call && !self.said_nf_call {
            self.said_nf_call = true;
            warn!(%bridge, "the bridge hands bridged frames to iptables or arptables (nf_call_*): requests answered at the ports they come in by bypass those rules");
        }
        if settings.vlan_filtering != self.vlan_filtering {
            self.vlan_filtering = settings.vlan_filtering;
            if settings.vlan_filtering {
                warn!(%bridge, "the bridge filters VLANs: answering at vmnap's port only");
            }
        }
        let wanted: Vec<u32> = if settings.vlan_filtering {
            Vec::new()
        } else {
            ports
                .iter()
                .filter(|p| p.ifindex != self.own_port && p.forwards_freely())
                .map(|p| p.ifindex)
                .collect()
        };
        let gone: Vec<u32> = responder.ports().filter(|p| !wanted.contains(p)).collect();
        for p in &gone {
            responder.detach_port(*p);
        }
        let before = responder.port_count();
        for &p in &wanted {
            if !responder.has_port(p) {
                self.attach(responder, p);
            }
        }
        let now = responder.port_count();
        if !gone.is_empty() || now != before {
            info!(%bridge, ports = now, added = now - before, removed = gone.len(), "answering in the kernel at the bridge's ports");
        }
    }
}
