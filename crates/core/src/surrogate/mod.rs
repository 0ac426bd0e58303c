//! The surrogate for the guests of one bridge: registration and the frame handler here, and
//! in [`drive`] each guest's way through the sleep and wake sequence (the requests that start
//! a sleep or a wake, the outcomes of the actions it asked for, its deadlines). The
//! sequence's own types are in [`crate::sequence`].

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use vmnap_wire::smol::{
    ArpOperation, EthernetAddress, Icmpv4Packet, Icmpv6Packet, IpAddress, TcpPacket, UdpPacket,
};
use vmnap_wire::vlan::LinkRepr;
use vmnap_wire::vnet::VirtioNetHdr;

use crate::classify::{self, Fragment, Net, Parsed, TcpSegment, Transport};
use crate::conntrack::Connections;
use crate::echo::Echo;
use crate::guest::{GuestId, GuestSpec, HealthCheck, MulticastPolicy, Transport as Proto};
use crate::hash::{Keyed, Map};
use crate::health::HttpHealth;
use crate::lifecycle::GuestState;
use crate::queue::{FrameQueue, HoldBudget, QueuedFrame, Refused};
use crate::respond::{self, Route, Segment};
use crate::sequence::{Action, LifecycleError, Sequence};
use crate::tcp::{FlowKey, Handled, TcpResponder};
use crate::time::Instant;
use crate::verdict::{AnswerKind, DropReason, IgnoreReason, Verdict, WakeCause};

mod drive;

/// The port of the echo services.
const ECHO_PORT: u16 = 7;
/// Pure ACKs in the first moments of sleep are late acknowledgements of the guest's last
/// data, not keepalive probes; they are held for the guest instead of answered.
const KEEPALIVE_GRACE: Duration = Duration::from_secs(5);
/// At most one keepalive answer per connection in this time, so that a peer that is not
/// probing cannot draw the surrogate into an exchange of ACKs.
const KEEPALIVE_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Connections whose keepalive answers are remembered per guest at most.
const KEEPALIVE_FLOWS: usize = 256;
/// Datagrams whose first fragment was held, remembered per guest at most: their other
/// fragments are held too, and fragments of any other datagram dropped.
const FRAGMENTED_DATAGRAMS: usize = 64;

/// Where the surrogate's decisions go: frames to send on the bridge, verdicts to count, and
/// wake requests to act on.
pub trait Sink {
    /// Sends `frame` on the bridge, in the guest's name. The frame is complete: its checksums
    /// are filled in.
    fn transmit(&mut self, frame: &[u8]);
    /// Records what happened to a frame (for one guest, or for none).
    fn verdict(&mut self, guest: Option<GuestId>, verdict: Verdict);
    /// Says that `frame` (held for the guest) has asked for `guest` to be woken, for `cause`.
    /// The wake itself comes out of [`Surrogate::poll_action`]; this is for the record.
    fn wake(&mut self, guest: GuestId, cause: WakeCause, frame: &[u8]);
}

/// Refusals of [`Surrogate::add_guest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddGuestError {
    /// Another guest on the same VLAN has this MAC.
    #[error("guest {guest}: MAC {mac} is already guest {other}'s on VLAN {vlan}")]
    MacTaken {
        /// The guest being added.
        guest: String,
        /// The guest that has it.
        other: String,
        /// The MAC.
        mac: EthernetAddress,
        /// The VLAN.
        vlan: u16,
    },
    /// Another guest on the same VLAN has this address.
    #[error("guest {guest}: address {addr} is already guest {other}'s on VLAN {vlan}")]
    AddressTaken {
        /// The guest being added.
        guest: String,
        /// The guest that has it.
        other: String,
        /// The address.
        addr: IpAddr,
        /// The VLAN.
        vlan: u16,
    },
    /// The MAC is a group address.
    #[error("guest {guest}: MAC {mac} is not a unicast address")]
    NotUnicast {
        /// The guest being added.
        guest: String,
        /// The MAC.
        mac: EthernetAddress,
    },
}

/// A new policy that cannot be applied to a registered guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateGuestError {
    /// No such guest.
    #[error("no guest with handle {0:?}")]
    UnknownGuest(GuestId),
    /// The new spec changes who the guest is (name, MAC, VLAN or addresses): remove it and
    /// add it again instead.
    #[error("guest {guest}: a new name, MAC, VLAN or address is a new guest")]
    NewIdentity {
        /// The guest.
        guest: String,
    },
    /// An address another guest of the same VLAN has.
    #[error("guest {guest}: address {addr} is guest {other}'s")]
    AddressTaken {
        /// The guest.
        guest: String,
        /// The guest that has it.
        other: String,
        /// The address.
        addr: IpAddr,
    },
}

#[derive(Debug)]
struct Guest {
    spec: GuestSpec,
    seq: Sequence,
    asleep_since: Instant,
    queue: FrameQueue,
    echo: TcpResponder<Echo>,
    /// The health checks of `spec`, shared with their connections.
    checks: Vec<Arc<HealthCheck>>,
    health: TcpResponder<HttpHealth>,
    keepalive: Map<FlowKey, Instant>,
    /// The MAC a barrier probe went out from, while its answer is awaited.
    barrier: Option<EthernetAddress>,
    /// Its TCP connections, as its port shows them: what decides whether a segment that
    /// opens nothing may wake it.
    conns: Connections,
    /// The latest datagrams (peer, identification) whose first fragment was held for it.
    fragments: VecDeque<(IpAddr, u32)>,
    /// Its wake waits for admission (backing off, or for the host's memory): what finds no
    /// room is refused visibly.
    waits_for_admission: bool,
}

/// Stands in for the guests of one bridge. See the crate documentation.
#[derive(Debug)]
pub struct Surrogate {
    seed: u64,
    guests: Vec<Option<Box<Guest>>>,
    by_mac: Map<(u16, EthernetAddress), GuestId>,
    by_ipv4: Map<(u16, Ipv4Addr), GuestId>,
    by_ipv6: Map<(u16, Ipv6Addr), GuestId>,
    by_vlan: Map<u16, Vec<GuestId>>,
    scratch: Vec<u8>,
    /// What the sequences want done, oldest first.
    actions: VecDeque<Action>,
    /// The source of probes: the MAC of the surrogate's port.
    probe_mac: EthernetAddress,
    /// What every guest's held bytes count against.
    budget: Arc<HoldBudget>,
}

impl Surrogate {
    /// An empty surrogate. `seed` keys its hash maps and the TCP initial sequence numbers:
    /// pass a random one. For one seed, the same frames at the same times give the same
    /// answers.
    pub fn new(seed: u64) -> Self {
        let keys = Keyed::maps(seed);
        Self {
            seed,
            guests: Vec::new(),
            by_mac: keys.map(),
            by_ipv4: keys.map(),
            by_ipv6: keys.map(),
            by_vlan: keys.map(),
            scratch: Vec::with_capacity(2048),
            actions: VecDeque::new(),
            probe_mac: EthernetAddress([0x02, 0, 0, 0, 0, 0]),
            budget: HoldBudget::new(usize::MAX),
        }
    }

    /// Has the guests added from now on hold their frames within `budget` too, besides
    /// their own limits: one budget shared by every bridge of a daemon bounds what all its
    /// guests hold together. A frame past it is dropped and counted
    /// ([`DropReason::HoldBudget`]); it wakes no one, since the bytes are not its guest's.
    pub fn set_hold_budget(&mut self, budget: Arc<HoldBudget>) {
        self.budget = budget;
    }

    /// Sets the MAC the probes of a wake come from: that of the port the surrogate reads,
    /// so that the guest's answers reach it.
    pub fn set_probe_mac(&mut self, mac: EthernetAddress) {
        self.probe_mac = mac;
    }

    /// Registers a guest, awake.
    pub fn add_guest(&mut self, spec: GuestSpec) -> Result<GuestId, AddGuestError> {
        let vlan = spec.vlan;
        if !spec.mac.is_unicast() {
            return Err(AddGuestError::NotUnicast {
                guest: spec.name.clone(),
                mac: spec.mac,
            });
        }
        if let Some(other) = self.by_mac.get(&(vlan, spec.mac)) {
            return Err(AddGuestError::MacTaken {
                guest: spec.name.clone(),
                other: self.name(*other).to_owned(),
                mac: spec.mac,
                vlan,
            });
        }
        let taken = |addr: IpAddr, other: &GuestId| AddGuestError::AddressTaken {
            guest: spec.name.clone(),
            other: self.name(*other).to_owned(),
            addr,
            vlan,
        };
        for a in &spec.ipv4 {
            if let Some(other) = self.by_ipv4.get(&(vlan, *a)) {
                return Err(taken(IpAddr::V4(*a), other));
            }
        }
        for a in &spec.ipv6 {
            if let Some(other) = self.by_ipv6.get(&(vlan, *a)) {
                return Err(taken(IpAddr::V6(*a), other));
            }
        }
        let slot = self
            .guests
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.guests.len());
        let id = GuestId(u32::try_from(slot).expect("fewer than 4 billion guests"));
        self.by_mac.insert((vlan, spec.mac), id);
        for a in &spec.ipv4 {
            self.by_ipv4.insert((vlan, *a), id);
        }
        for a in &spec.ipv6 {
            self.by_ipv6.insert((vlan, *a), id);
        }
        self.by_vlan.entry(vlan).or_default().push(id);
        let checks = spec.health.iter().cloned().map(Arc::new).collect();
        let guest = Guest {
            spec,
            seq: Sequence::default(),
            asleep_since: Instant::ZERO,
            queue: FrameQueue::new(Arc::clone(&self.budget)),
            echo: TcpResponder::new(self.seed),
            checks,
            health: TcpResponder::new(self.seed),
            keepalive: Keyed::maps(self.seed).map(),
            barrier: None,
            conns: Connections::default(),
            fragments: VecDeque::new(),
            waits_for_admission: false,
        };
        if slot == self.guests.len() {
            self.guests.push(Some(Box::new(guest)));
        } else {
            self.guests[slot] = Some(Box::new(guest));
        }
        Ok(id)
    }

    /// Gives a registered guest a new policy (what wakes it, what is answered, its queue
    /// limits and multicast policy, its health checks), asleep or awake. Its identity (name,
    /// MAC, VLAN, addresses) must stay; what it holds stays held, and health-check
    /// connections already open finish under the check they began with.
    pub fn update_guest(&mut self, id: GuestId, spec: GuestSpec) -> Result<(), UpdateGuestError> {
        let guest = self
            .guests
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .ok_or(UpdateGuestError::UnknownGuest(id))?;
        let old = &guest.spec;
        if (&old.name, old.mac, old.vlan, &old.ipv4, &old.ipv6)
            != (&spec.name, spec.mac, spec.vlan, &spec.ipv4, &spec.ipv6)
        {
            return Err(UpdateGuestError::NewIdentity {
                guest: old.name.clone(),
            });
        }
        guest.checks = spec.health.iter().cloned().map(Arc::new).collect();
        guest.spec = spec;
        Ok(())
    }

    /// Gives a registered guest these addresses from now on (learned from its traffic, or
    /// forgotten), asleep or awake; refused, with nothing changed, if another guest of its
    /// VLAN has one of them.
    pub fn set_addresses(
        &mut self,
        id: GuestId,
        ipv4: Vec<Ipv4Addr>,
        ipv6: Vec<Ipv6Addr>,
    ) -> Result<(), UpdateGuestError> {
        let (name, vlan) = {
            let g = self.guest(id).ok_or(UpdateGuestError::UnknownGuest(id))?;
            (g.spec.name.clone(), g.spec.vlan)
        };
        let theirs = |owner: Option<&GuestId>| owner.filter(|o| **o != id).copied();
        let taken = ipv4
            .iter()
            .find_map(|a| theirs(self.by_ipv4.get(&(vlan, *a))).map(|o| (IpAddr::V4(*a), o)))
            .or_else(|| {
                ipv6.iter().find_map(|a| {
                    theirs(self.by_ipv6.get(&(vlan, *a))).map(|o| (IpAddr::V6(*a), o))
                })
            });
        if let Some((addr, other)) = taken {
            return Err(UpdateGuestError::AddressTaken {
                guest: name,
                other: self.name(other).to_owned(),
                addr,
            });
        }
        let guest = self.guests[id.index()].as_mut().expect("looked up above");
        for a in &guest.spec.ipv4 {
            self.by_ipv4.remove(&(vlan, *a));
        }
        for a in &guest.spec.ipv6 {
            self.by_ipv6.remove(&(vlan, *a));
        }
        for a in &ipv4 {
            self.by_ipv4.insert((vlan, *a), id);
        }
        for a in &ipv6 {
            self.by_ipv6.insert((vlan, *a), id);
        }
        guest.spec.ipv4 = ipv4;
        guest.spec.ipv6 = ipv6;
        Ok(())
    }

    /// The guest of VLAN `vlan` that has address `addr`, if one has.
    pub fn guest_with_address(&self, vlan: u16, addr: IpAddr) -> Option<GuestId> {
        match addr {
            IpAddr::V4(a) => self.by_ipv4.get(&(vlan, a)).copied(),
            IpAddr::V6(a) => self.by_ipv6.get(&(vlan, a)).copied(),
        }
    }

    /// Unregisters a guest; returns its spec and whatever it still had queued.
    pub fn remove_guest(&mut self, id: GuestId) -> Option<(GuestSpec, VecDeque<QueuedFrame>)> {
        let mut guest = self.guests.get_mut(id.index())?.take()?;
        let vlan = guest.spec.vlan;
        self.by_mac.remove(&(vlan, guest.spec.mac));
        for a in &guest.spec.ipv4 {
            self.by_ipv4.remove(&(vlan, *a));
        }
        for a in &guest.spec.ipv6 {
            self.by_ipv6.remove(&(vlan, *a));
        }
        if let Some(ids) = self.by_vlan.get_mut(&vlan) {
            ids.retain(|g| *g != id);
        }
        Some((guest.spec, guest.queue.take()))
    }

    /// The guests registered, in no particular order.
    pub fn guest_ids(&self) -> impl Iterator<Item = GuestId> + '_ {
        self.guests
            .iter()
            .enumerate()
            .filter(|(_, g)| g.is_some())
            .map(|(i, _)| GuestId(i as u32))
    }

    /// A guest's spec.
    pub fn spec(&self, id: GuestId) -> Option<&GuestSpec> {
        self.guest(id).map(|g| &g.spec)
    }

    /// A guest's state, as the surrogate's handling of its frames sees it.
    pub fn state(&self, id: GuestId) -> Option<GuestState> {
        self.guest(id).map(|g| g.seq.phase.state())
    }

    /// Frames and bytes a guest has queued now.
    pub fn queue_depth(&self, id: GuestId) -> Option<(usize, usize)> {
        self.guest(id).map(|g| (g.queue.len(), g.queue.bytes()))
    }

    /// The frames held for a guest now, oldest first. They leave only through
    /// [`Action::Replay`].
    pub fn held(&self, id: GuestId) -> impl Iterator<Item = &QueuedFrame> + '_ {
        self.guest(id).into_iter().flat_map(|g| g.queue.iter())
    }

    /// What a guest's port has shown of its TCP connections.
    pub fn connections(&self, id: GuestId) -> Option<&Connections> {
        self.guest(id).map(|g| &g.conns)
    }

    /// The same, to feed it: the daemon passes it the segments it sees on the guest's port
    /// while the guest is awake ([`Connections::observe`]), and says how far it can trust
    /// it ([`Connections::trust_from`]).
    pub fn connections_mut(&mut self, id: GuestId) -> Option<&mut Connections> {
        self.guest_mut(id).ok().map(|g| &mut g.conns)
    }

    /// Says whether guest `id`'s wake waits for admission (the daemon holds its resume
    /// back: its wakes served no one lately, or the host lacks the memory it brings back).
    /// Meanwhile a SYN or datagram that finds no room is refused visibly rather than
    /// dropped, since no wake is coming soon to serve its client's next try.
    pub fn set_waits_for_admission(&mut self, id: GuestId, waits: bool) {
        if let Ok(g) = self.guest_mut(id) {
            g.waits_for_admission = waits;
        }
    }

    fn guest(&self, id: GuestId) -> Option<&Guest> {
        self.guests.get(id.index()).and_then(Option::as_deref)
    }

    fn name(&self, id: GuestId) -> &str {
        self.guest(id).map_or("?", |g| g.spec.name.as_str())
    }

    fn guest_mut(&mut self, id: GuestId) -> Result<&mut Guest, LifecycleError> {
        self.guests
            .get_mut(id.index())
            .and_then(Option::as_deref_mut)
            .ok_or(LifecycleError::UnknownGuest(id))
    }

    /// A frame that makes a waking guest answer `from` through its network stack: an ARP
    /// probe (sender 0.0.0.0) for its first IPv4 address, or else a duplicate address
    /// detection solicitation for its first IPv6 address. Sent into the guest's port after the
    /// replay, its answer ([`Sink::barrier`]) shows that the guest has taken in everything
    /// replayed before it. Neither probe leaves state in the guest. `None` if the guest is
    /// not waking with its port up, or has no address.
    pub(crate) fn barrier_probe(&mut self, id: GuestId, from: EthernetAddress) -> Option<Vec<u8>> {
        let guest = self
            .guests
            .get_mut(id.index())
            .and_then(Option::as_deref_mut)?;
        if guest.seq.phase.state() != (GuestState::Waking { port_up: true }) {
            return None;
        }
        let spec = &guest.spec;
        let link = LinkRepr::new(spec.mac, from, spec.vlan, 0);
        let mut out = Vec::new();
        if let Some(ip) = spec.ipv4.first() {
            respond::arp(
                &mut out,
                ArpOperation::Request,
                &link,
                from,
                Ipv4Addr::UNSPECIFIED,
                EthernetAddress([0; 6]),
                *ip,
            );
        } else if let Some(ip) = spec.ipv6.first() {
            let route = Route::V6 {
                link,
                src: Ipv6Addr::UNSPECIFIED,
                dst: classify::solicited_node(*ip),
            };
            respond::neighbor_solicit(&mut out, &route, *ip);
        } else {
            return None;
        }
        guest.barrier = Some(from);
        Some(out)
    }

    fn is_barrier_answer(&mut self, id: GuestId, parsed: &Parsed<'_>) -> bool {
        let Some(guest) = self
            .guests
            .get_mut(id.index())
            .and_then(Option::as_deref_mut)
        else {
            return false;
        };
        let Some(from) = guest.barrier else {
            return false;
        };
        let answered = match parsed.net {
            Net::Arp {
                op: ArpOperation::Reply,
                ..
            } => parsed.link.dst == from,
            Net::Ipv6 {
                transport: Transport::NeighborAdvert { target },
                ..
            } => guest.spec.ipv6.first() == Some(&target),
            _ => false,
        };
        if answered {
            guest.barrier = None;
        }
        answered
    }

    /// Whether `frame`, on its way to the awake guest `id`, is one the surrogate would have
    /// answered itself had the guest slept: an ARP request or neighbour solicitation for
    /// its address, an echo request to it, or a TCP segment to one of its health checks (as
    /// the guest's answers allow). The idleness policy does not count these as work.
    pub fn answerable_while_awake(&self, id: GuestId, frame: &[u8]) -> bool {
        let Some(guest) = self.guest(id) else {
            return false;
        };
        let spec = &guest.spec;
        let Ok(parsed) = classify::parse(frame) else {
            return false;
        };
        if parsed.link.vlan != spec.vlan {
            return false;
        }
        let health = |port: u16| spec.health.iter().any(|h| h.port == port);
        match parsed.net {
            Net::Arp {
                op: ArpOperation::Request,
                target_ip,
                ..
            } => spec.answers.arp && spec.ipv4.contains(&target_ip),
            Net::Ipv4 { dst, transport, .. } if spec.ipv4.contains(&dst) => match transport {
                Transport::Echo { .. } => spec.answers.icmp_echo,
                Transport::Tcp(seg) => health(seg.dst_port),
                _ => false,
            },
            Net::Ipv6 { dst, transport, .. } => match transport {
                Transport::NeighborSolicit { target, .. } => {
                    spec.answers.ndp && spec.ipv6.contains(&target)
                }
                Transport::Echo { .. } => spec.answers.icmp_echo && spec.ipv6.contains(&dst),
                Transport::Tcp(seg) => spec.ipv6.contains(&dst) && health(seg.dst_port),
                _ => false,
            },
            _ => false,
        }
    }

    /// The earliest time [`Self::handle_timeout`] has work to do.
    pub fn poll_at(&self) -> Option<Instant> {
        self.guests
            .iter()
            .flatten()
            .flat_map(|g| [g.echo.poll_at(), g.health.poll_at(), g.seq.poll_at()])
            .flatten()
            .min()
    }

    /// Does what is due at `now`: the sequences' deadlines (see [`Self::poll_action`]),
    /// retransmissions of the echo service and the health checks, and forgetting their
    /// finished connections.
    pub fn handle_timeout(&mut self, now: Instant, sink: &mut impl Sink) {
        self.sequence_timeout(now);
        let scratch = &mut self.scratch;
        for guest in self.guests.iter_mut().flatten() {
            let mut tx = |route: &Route, seg: &Segment<'_>| {
                respond::tcp(scratch, route, seg);
                sink.transmit(scratch);
            };
            guest.echo.handle_timeout(now, &mut tx);
            guest.health.handle_timeout(now, &mut tx);
        }
    }

    /// Handles one frame that reached the surrogate's port at `now`. `vnet` is the frame's
    /// virtio-net header (its offloads).
    pub fn handle_frame(
        &mut self,
        now: Instant,
        vnet: VirtioNetHdr,
        frame: &[u8],
        sink: &mut impl Sink,
    ) {
        let parsed = match classify::parse(frame) {
            Ok(parsed) => parsed,
            Err(_) => {
                // Count it against the guest it was sent to, if that is plain.
                let guest = LinkRepr::parse(frame)
                    .ok()
                    .and_then(|l| self.by_mac.get(&(l.vlan, l.dst)).copied())
                    .filter(|id| self.state(*id) != Some(GuestState::Awake));
                sink.verdict(guest, Verdict::Dropped(DropReason::Malformed));
                return;
            }
        };
        let link = parsed.link;
        // A waking guest's answer to the probe that fences its replay. Any other frame from
        // a guest is what it would be from anyone: an awake guest that asks for a sleeping
        // one is answered, or wakes it.
        if let Some(id) = self.by_mac.get(&(link.vlan, link.src)).copied() {
            if self.is_barrier_answer(id, &parsed) {
                self.probe_answered(id, now);
                sink.verdict(None, Verdict::Ignored(IgnoreReason::NotForSleepingGuest));
                return;
            }
        }
        if link.dst.is_unicast() {
            match self.by_mac.get(&(link.vlan, link.dst)).copied() {
                Some(id) => self.unicast(now, id, vnet, frame, &parsed, sink),
                None => sink.verdict(None, Verdict::Ignored(IgnoreReason::NotForSleepingGuest)),
            }
        } else {
            self.group(now, vnet, frame, &parsed, sink);
        }
    }

    /// A frame to a group address: a resolution request for one guest, or a broadcast or
    /// multicast for every guest on the VLAN.
    fn group(
        &mut self,
        now: Instant,
        vnet: VirtioNetHdr,
        frame: &[u8],
        parsed: &Parsed<'_>,
        sink: &mut impl Sink,
    ) {
        let vlan = parsed.link.vlan;
        // Resolution requests concern the guest that has the address, and only it.
        let resolves = match parsed.net {
            Net::Arp {
                op: ArpOperation::Request,
                sender_ip,
                target_ip,
                ..
            } if sender_ip != target_ip => Some(self.by_ipv4.get(&(vlan, target_ip)).copied()),
            Net::Ipv6 {
                transport: Transport::NeighborSolicit { target, .. },
                ..
            } => Some(self.by_ipv6.get(&(vlan, target)).copied()),
            _ => None,
        };
        if let Some(target) = resolves {
            match target {
                Some(id) => match self.state(id) {
                    Some(GuestState::Sleeping) => self.respond(now, id, vnet, frame, parsed, sink),
                    Some(GuestState::Waking { port_up: false }) => {
                        self.enqueue(now, id, vnet, frame, false, sink)
                    }
                    _ => sink.verdict(
                        Some(id),
                        Verdict::Ignored(IgnoreReason::GuestReceivesDirectly),
                    ),
                },
                None => sink.verdict(None, Verdict::Ignored(IgnoreReason::NotForSleepingGuest)),
            }
            return;
        }
        // Solicited-node groups belong to the guests with a matching address only.
        let solicited = match parsed.net {
            Net::Ipv6 { dst, .. } if is_solicited_node(dst) => Some(dst),
            _ => None,
        };
        let mut shared: Option<Arc<[u8]>> = None;
        let mut any = false;
        let Some(ids) = self.by_vlan.get(&vlan) else {
            sink.verdict(None, Verdict::Ignored(IgnoreReason::NotForSleepingGuest));
            return;
        };
        for &id in ids {
            let Some(guest) = self
                .guests
                .get_mut(id.index())
                .and_then(Option::as_deref_mut)
            else {
                continue;
            };
            if !matches!(
                guest.seq.phase.state(),
                GuestState::Sleeping | GuestState::Waking { port_up: false }
            ) {
                continue;
            }
            if let Some(group) = solicited {
                if !guest
                    .spec
                    .ipv6
                    .iter()
                    .any(|a| classify::solicited_node(*a) == group)
                {
                    continue;
                }
            }
            any = true;
            let verdict = match guest.spec.multicast {
                MulticastPolicy::Drop => Verdict::Dropped(DropReason::MulticastPolicy),
                MulticastPolicy::Queue => {
                    let bytes = shared.get_or_insert_with(|| frame.into()).clone();
                    let queued = QueuedFrame {
                        at: now,
                        vnet,
                        bytes,
                    };
                    match guest.queue.push(&guest.spec.limits, queued, true) {
                        Ok(()) => Verdict::Queued,
                        Err(Refused::Budget) => Verdict::Dropped(DropReason::HoldBudget),
                        Err(_) => Verdict::Dropped(DropReason::MulticastQueueFull),
                    }
                }
            };
            sink.verdict(Some(id), verdict);
        }
        if !any {
            sink.verdict(None, Verdict::Ignored(IgnoreReason::NotForSleepingGuest));
        }
    }

    /// A frame to a guest's own MAC.
    fn unicast(
        &mut self,
        now: Instant,
        id: GuestId,
        vnet: VirtioNetHdr,
        frame: &[u8],
        parsed: &Parsed<'_>,
        sink: &mut impl Sink,
    ) {
        match self.state(id) {
            Some(GuestState::Sleeping) => self.respond(now, id, vnet, frame, parsed, sink),
            // Held for the guest: while it falls asleep its port no longer gets this MAC's
            // frames, and while it wakes they are relayed until the bridge has switched back.
            // One that would wake it asleep ends its sleep before it began: it has work.
            Some(GuestState::FallingAsleep) => {
                self.enqueue(now, id, vnet, frame, false, sink);
                let cause = self.guest(id).and_then(|g| wakes_for(&g.spec, parsed));
                if let Some(cause) = cause {
                    self.frame_wakes(now, id, cause, frame, sink);
                }
            }
            Some(GuestState::Waking { .. }) => self.enqueue(now, id, vnet, frame, false, sink),
            Some(GuestState::Awake) | None => {
                sink.verdict(None, Verdict::Ignored(IgnoreReason::NotForSleepingGuest))
            }
        }
    }

    /// Holds a frame for the guest, if its queue and the budget have room.
    fn enqueue(
        &mut self,
        now: Instant,
        id: GuestId,
        vnet: VirtioNetHdr,
        frame: &[u8],
        multicast: bool,
        sink: &mut impl Sink,
    ) {
        let Some(guest) = self
            .guests
            .get_mut(id.index())
            .and_then(Option::as_deref_mut)
        else {
            return;
        };
        let queued = QueuedFrame {
            at: now,
            vnet,
            bytes: frame.into(),
        };
        match guest.queue.push(&guest.spec.limits, queued, multicast) {
            Ok(()) => {
                sink.verdict(Some(id), Verdict::Queued);
                self.frame_held(id, now);
            }
            Err(Refused::Budget) => {
                sink.verdict(Some(id), Verdict::Dropped(DropReason::HoldBudget));
                self.refuse(id, frame, sink);
            }
            Err(Refused::MulticastFull) => {
                sink.verdict(Some(id), Verdict::Dropped(DropReason::MulticastQueueFull))
            }
            // Dropped and counted; it wakes the guest only if it is a frame that would
            // (then `enqueue_and_wake` does): a flood of what wakes no one must not wake it
            // by its volume.
            Err(Refused::Full) => {
                sink.verdict(Some(id), Verdict::Dropped(DropReason::QueueFull));
                self.refuse(id, frame, sink);
            }
        }
    }

    /// Refuses, visibly, a frame for guest `id` that found no room (its queue, or the
    /// budget all guests share), where its client would otherwise wait for nothing: a UDP
    /// datagram that does not wake the guest gets an ICMP port unreachable (it would have
    /// been held for the next wake, and is lost); while the guest's wake waits for
    /// admission ([`Self::set_waits_for_admission`]), a SYN gets a RST/ACK and any datagram
    /// an ICMP port unreachable. Otherwise a frame is only dropped (counted by the caller):
    /// a SYN that wakes the guest is sent again by its client and finds it awake, TCP sends
    /// again what it sent on a connection, and a frame to a group address gets no error.
    fn refuse(&mut self, id: GuestId, frame: &[u8], sink: &mut impl Sink) {
        let Some(guest) = self.guest(id) else { return };
        let waits = guest.waits_for_admission;
        let Ok(parsed) = classify::parse(frame) else {
            return;
        };
        let link = parsed.link;
        if !link.dst.is_unicast() {
            return;
        }
        let (route, transport) = match parsed.net {
            Net::Ipv4 {
                src,
                dst,
                transport,
            } if !dst.is_broadcast() && !dst.is_multicast() && !src.is_unspecified() => {
                (Route::reply_v4(&link, dst, src), transport)
            }
            Net::Ipv6 {
                src,
                dst,
                transport,
                ..
            } if !dst.is_multicast() && !src.is_unspecified() => {
                (Route::reply_v6(&link, dst, src), transport)
            }
            _ => return,
        };
        match transport {
            Transport::Tcp(seg) if waits && seg.syn && seg.ack.is_none() && !seg.rst => {
                respond::tcp(&mut self.scratch, &route, &reset_for(&seg));
            }
            Transport::Udp { dst_port, .. }
                if waits || !guest.spec.wakes_on(Proto::Udp, dst_port) =>
            {
                let ip = frame.get(link.header_len()..).unwrap_or_default();
                respond::port_unreachable(&mut self.scratch, &route, ip);
            }
            _ => return,
        }
        if !self.scratch.is_empty() {
            sink.transmit(&self.scratch);
        }
    }

    /// Holds a frame and wakes the guest for it.
    fn enqueue_and_wake(
        &mut self,
        now: Instant,
        id: GuestId,
        vnet: VirtioNetHdr,
        frame: &[u8],
        cause: WakeCause,
        sink: &mut impl Sink,
    ) {
        self.enqueue(now, id, vnet, frame, false, sink);
        self.frame_wakes(now, id, cause, frame, sink);
    }

    /// Wakes a sleeping guest for `frame` (or cancels its sleep, if the backend is still
    /// stopping it), unless a wake is already under way or waits for its retry.
    fn frame_wakes(
        &mut self,
        now: Instant,
        id: GuestId,
        cause: WakeCause,
        frame: &[u8],
        sink: &mut impl Sink,
    ) {
        if self.wake_for_frame(id, cause, now) {
            sink.wake(id, cause, frame);
        }
    }

    /// A frame for a sleeping guest: answer it, or hold it, and wake the guest if it asks
    /// for the guest itself.
    fn respond(
        &mut self,
        now: Instant,
        id: GuestId,
        vnet: VirtioNetHdr,
        frame: &[u8],
        parsed: &Parsed<'_>,
        sink: &mut impl Sink,
    ) {
        let Some(guest) = self.guest(id) else { return };
        let (mac, answers) = (guest.spec.mac, guest.spec.answers);
        let has_v4 = |a: &Ipv4Addr| guest.spec.ipv4.contains(a);
        let has_v6 = |a: &Ipv6Addr| guest.spec.ipv6.contains(a);
        let link = &parsed.link;
        let verify = !vnet.needs_checksum();
        match parsed.net {
            Net::Arp {
                op: ArpOperation::Request,
                sender_mac,
                sender_ip,
                target_ip,
            } if has_v4(&target_ip) => {
                if answers.arp {
                    respond::arp(
                        &mut self.scratch,
                        ArpOperation::Reply,
                        &LinkRepr {
                            src: mac,
                            dst: sender_mac,
                            ..*link
                        },
                        mac,
                        target_ip,
                        sender_mac,
                        sender_ip,
                    );
                    self.emit(id, AnswerKind::Arp, sink);
                } else {
                    self.enqueue_and_wake(now, id, vnet, frame, WakeCause::Resolution, sink);
                }
            }
            Net::Arp { .. } | Net::Other => self.enqueue(now, id, vnet, frame, false, sink),
            Net::Ipv4 {
                src,
                dst,
                transport,
            } => {
                if !has_v4(&dst) {
                    // A broadcast or multicast to the guest's MAC is for it; unicast for an
                    // address it does not have (it is not a router) is not.
                    if dst.is_broadcast() || dst.is_multicast() {
                        return self.enqueue(now, id, vnet, frame, false, sink);
                    }
                    return sink.verdict(Some(id), Verdict::Dropped(DropReason::ForeignAddress));
                }
                let route = Route::reply_v4(link, dst, src);
                self.transport(now, id, vnet, frame, route, transport, verify, sink);
            }
            Net::Ipv6 {
                src,
                dst,
                hop_limit,
                transport,
            } => {
                if let Transport::NeighborSolicit {
                    target,
                    source_lladdr,
                } = transport
                {
                    if !has_v6(&target) {
                        return self.enqueue(now, id, vnet, frame, false, sink);
                    }
                    if !answers.ndp {
                        return self.enqueue_and_wake(
                            now,
                            id,
                            vnet,
                            frame,
                            WakeCause::Resolution,
                            sink,
                        );
                    }
                    if hop_limit != 255 || (verify && !icmpv6_checksum_ok(src, dst, frame, link)) {
                        return sink.verdict(Some(id), Verdict::Dropped(DropReason::Malformed));
                    }
                    // Duplicate address detection: defend the address to all nodes.
                    let (to_ip, to_mac, solicited) = if src.is_unspecified() {
                        (ALL_NODES, EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), false)
                    } else {
                        (src, source_lladdr.unwrap_or(link.src), true)
                    };
                    let reply_link = LinkRepr {
                        dst: to_mac,
                        src: mac,
                        ..*link
                    };
                    let route = Route::V6 {
                        link: reply_link,
                        src: target,
                        dst: to_ip,
                    };
                    respond::neighbor_advert(&mut self.scratch, &route, mac, target, solicited);
                    return self.emit(id, AnswerKind::Ndp, sink);
                }
                if !has_v6(&dst) {
                    if dst.is_multicast() {
                        return self.enqueue(now, id, vnet, frame, false, sink);
                    }
                    return sink.verdict(Some(id), Verdict::Dropped(DropReason::ForeignAddress));
                }
                let route = Route::reply_v6(link, dst, src);
                self.transport(now, id, vnet, frame, route, transport, verify, sink);
            }
        }
    }

    /// Sends the frame in the scratch buffer and records the answer.
    fn emit(&mut self, id: GuestId, kind: AnswerKind, sink: &mut impl Sink) {
        sink.transmit(&self.scratch);
        sink.verdict(Some(id), Verdict::Answered(kind));
    }

    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        now: Instant,
        id: GuestId,
        vnet: VirtioNetHdr,
        frame: &[u8],
        route: Route,
        transport: Transport<'_>,
        verify: bool,
        sink: &mut impl Sink,
    ) {
        let Some(guest) = self.guest(id) else { return };
        let answers = guest.spec.answers;
        let (local, peer) = route_addrs(&route);
        match transport {
            Transport::Echo {
                ident,
                seq,
                data,
                raw,
            } => {
                if !answers.icmp_echo {
                    return self.enqueue(now, id, vnet, frame, false, sink);
                }
                let ok = match (local, peer) {
                    (IpAddr::V4(_), _) => Icmpv4Packet::new_unchecked(raw).verify_checksum(),
                    (IpAddr::V6(l), IpAddr::V6(p)) => {
                        Icmpv6Packet::new_unchecked(raw).verify_checksum(&p, &l)
                    }
                    _ => false,
                };
                if verify && !ok {
                    return sink.verdict(Some(id), Verdict::Dropped(DropReason::BadChecksum));
                }
                respond::echo_reply(&mut self.scratch, &route, ident, seq, data);
                let kind = if local.is_ipv4() {
                    AnswerKind::IcmpEcho
                } else {
                    AnswerKind::Icmpv6Echo
                };
                self.emit(id, kind, sink);
            }
            Transport::Udp {
                src_port,
                dst_port,
                payload,
                raw,
            } => {
                if dst_port == ECHO_PORT && answers.udp_echo {
                    let p = UdpPacket::new_unchecked(raw);
                    let ok = (local.is_ipv4() && p.checksum() == 0)
                        || p.verify_checksum(&IpAddress::from(peer), &IpAddress::from(local));
                    if verify && !ok {
                        return sink.verdict(Some(id), Verdict::Dropped(DropReason::BadChecksum));
                    }
                    respond::udp(&mut self.scratch, &route, ECHO_PORT, src_port, payload);
                    self.emit(id, AnswerKind::UdpEcho, sink);
                } else if guest.spec.wakes_on(Proto::Udp, dst_port) {
                    self.enqueue_and_wake(
                        now,
                        id,
                        vnet,
                        frame,
                        WakeCause::Udp { port: dst_port },
                        sink,
                    );
                } else {
                    self.enqueue(now, id, vnet, frame, false, sink);
                }
            }
            Transport::Tcp(seg) => self.tcp(now, id, vnet, frame, route, &seg, verify, sink),
            Transport::NeighborSolicit { .. }
            | Transport::NeighborAdvert { .. }
            | Transport::OtherIcmp => self.enqueue(now, id, vnet, frame, false, sink),
            Transport::Fragment(f) => self.fragment(now, id, vnet, frame, (local, peer), f, sink),
            // Another protocol, or headers the surrogate cannot look past: held, since it
            // cannot tell what the datagram asks of the guest, but it wakes no one.
            Transport::Opaque => self.enqueue(now, id, vnet, frame, false, sink),
        }
    }

    /// A fragment for a sleeping guest: the first one is held, and wakes the guest if its
    /// datagram is one that would (a SYN or datagram to a `wake_on` port), unless it is a
    /// TCP segment of a connection the guest does not have (dropped, with the rest of its
    /// datagram); the others are held if their first one was, and dropped if not, since the
    /// guest could not put their datagram together.
    #[allow(clippy::too_many_arguments)]
    fn fragment(
        &mut self,
        now: Instant,
        id: GuestId,
        vnet: VirtioNetHdr,
        frame: &[u8],
        (local, peer): (IpAddr, IpAddr),
        f: Fragment,
        sink: &mut impl Sink,
    ) {
        let Ok(guest) = self.guest_mut(id) else {
            return;
        };
        let datagram = (peer, f.id);
        if !f.first {
            if guest.fragments.contains(&datagram) {
                return self.enqueue(now, id, vnet, frame, false, sink);
            }
            return sink.verdict(Some(id), Verdict::Dropped(DropReason::OrphanFragment));
        }
        if let Some(h) = f.head.filter(|h| h.proto == Proto::Tcp && !h.opens()) {
            let key = FlowKey {
                local,
                local_port: h.dst_port,
                peer,
                peer_port: h.src_port,
            };
            if !guest.conns.admits(&key, now) {
                return sink.verdict(Some(id), Verdict::Dropped(DropReason::UnknownConnection));
            }
        }
        if guest.fragments.len() >= FRAGMENTED_DATAGRAMS {
            guest.fragments.pop_front();
        }
        guest.fragments.push_back(datagram);
        match fragment_wakes(&guest.spec, f) {
            Some(cause) => self.enqueue_and_wake(now, id, vnet, frame, cause, sink),
            None => self.enqueue(now, id, vnet, frame, false, sink),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp(
        &mut self,
        now: Instant,
        id: GuestId,
        vnet: VirtioNetHdr,
        frame: &[u8],
        route: Route,
        seg: &TcpSegment<'_>,
        verify: bool,
        sink: &mut impl Sink,
    ) {
        let (local, peer) = route_addrs(&route);
        let key = FlowKey {
            local,
            local_port: seg.dst_port,
            peer,
            peer_port: seg.src_port,
        };
        let checksum_ok = || {
            !verify
                || TcpPacket::new_unchecked(seg.raw)
                    .verify_checksum(&IpAddress::from(peer), &IpAddress::from(local))
        };
        let Some(guest) = self
            .guests
            .get_mut(id.index())
            .and_then(Option::as_deref_mut)
        else {
            return;
        };
        let opens = seg.syn && seg.ack.is_none();
        let to_echo = seg.dst_port == ECHO_PORT && guest.spec.answers.tcp_echo;
        if to_echo && (guest.echo.has(&key) || opens || guest.echo.acks_cookie(now, &key, seg)) {
            if !checksum_ok() {
                return sink.verdict(Some(id), Verdict::Dropped(DropReason::BadChecksum));
            }
            let scratch = &mut self.scratch;
            let handled = guest
                .echo
                .handle(now, key, route, seg, || Echo, &mut |r, s| {
                    respond::tcp(scratch, r, s);
                    sink.transmit(scratch);
                });
            let verdict = match handled {
                Handled::Answered => Verdict::Answered(AnswerKind::TcpEcho),
                Handled::Refused => Verdict::Dropped(DropReason::EchoRefused),
            };
            return sink.verdict(Some(id), verdict);
        }
        let check = guest.checks.iter().find(|c| c.port == seg.dst_port);
        let health_owns =
            guest.health.has(&key) || opens || guest.health.acks_cookie(now, &key, seg);
        if let Some(check) = check.filter(|_| health_owns) {
            if !checksum_ok() {
                return sink.verdict(Some(id), Verdict::Dropped(DropReason::BadChecksum));
            }
            let scratch = &mut self.scratch;
            let accept = || HttpHealth::new(Arc::clone(check));
            let handled = guest
                .health
                .handle(now, key, route, seg, accept, &mut |r, s| {
                    respond::tcp(scratch, r, s);
                    sink.transmit(scratch);
                });
            let verdict = match handled {
                Handled::Answered => Verdict::Answered(AnswerKind::HealthCheck),
                Handled::Refused => Verdict::Dropped(DropReason::HealthRefused),
            };
            return sink.verdict(Some(id), verdict);
        }
        if opens {
            if guest.spec.wakes_on(Proto::Tcp, seg.dst_port) {
                let cause = WakeCause::TcpSyn { port: seg.dst_port };
                return self.enqueue_and_wake(now, id, vnet, frame, cause, sink);
            }
            if !checksum_ok() {
                return sink.verdict(Some(id), Verdict::Dropped(DropReason::BadChecksum));
            }
            // A closed port: RST/ACK, as the guest's kernel answers.
            respond::tcp(&mut self.scratch, &route, &reset_for(seg));
            return self.emit(id, AnswerKind::TcpReset, sink);
        }
        if !guest.conns.admits(&key, now) {
            // Nothing the guest has: what its kernel would answer, and no wake.
            if !checksum_ok() {
                return sink.verdict(Some(id), Verdict::Dropped(DropReason::BadChecksum));
            }
            if seg.rst {
                return sink.verdict(Some(id), Verdict::Dropped(DropReason::UnknownConnection));
            }
            respond::tcp(&mut self.scratch, &route, &reset_for(seg));
            return self.emit(id, AnswerKind::ConnectionReset, sink);
        }
        if seg.rst || seg.syn {
            return self.enqueue(now, id, vnet, frame, false, sink);
        }
        let probe = seg.ack.is_some() && !seg.fin && !seg.psh && seg.payload.len() <= 1;
        if probe && now.saturating_since(guest.asleep_since) >= KEEPALIVE_GRACE {
            let recent = guest
                .keepalive
                .get(&key)
                .is_some_and(|at| now.saturating_since(*at) < KEEPALIVE_MIN_INTERVAL);
            if !recent
                && (guest.keepalive.len() < KEEPALIVE_FLOWS || guest.keepalive.contains_key(&key))
            {
                guest.keepalive.insert(key, now);
                // The guest's answer to a probe one byte behind its receive point: an ACK
                // of what it has, from where it is. The peer's own timestamp echo is the
                // last one the guest sent, so it passes the peer's PAWS check.
                let ack = Segment {
                    src_port: seg.dst_port,
                    dst_port: seg.src_port,
                    seq: seg.ack.unwrap_or(0),
                    ack: Some(seg.seq.wrapping_add(1)),
                    window: seg.window.max(1),
                    timestamp: seg.timestamp.map(|(tsval, tsecr)| (tsecr, tsval)),
                    ..Segment::default()
                };
                respond::tcp(&mut self.scratch, &route, &ack);
                return self.emit(id, AnswerKind::TcpKeepalive, sink);
            }
        }
        if seg.fin || !seg.payload.is_empty() {
            let cause = WakeCause::TcpData { port: seg.dst_port };
            return self.enqueue_and_wake(now, id, vnet, frame, cause, sink);
        }
        self.enqueue(now, id, vnet, frame, false, sink);
    }
}

/// Whether `parsed`, for a guest with `spec`, is a frame that would wake it were it asleep,
/// and why: the guest's own service asked for (a SYN to a port of `wake_on`, a datagram to
/// one), data on a connection, or what the surrogate cannot look into. Frames the surrogate
/// answers itself (echo, health checks, resolution, pings) are not.
fn wakes_for(spec: &GuestSpec, parsed: &Parsed<'_>) -> Option<WakeCause> {
    let transport = match &parsed.net {
        Net::Ipv4 { transport, .. } | Net::Ipv6 { transport, .. } => transport,
        Net::Arp { .. } | Net::Other => return None,
    };
    match transport {
        Transport::Tcp(seg) => {
            let answered = (seg.dst_port == ECHO_PORT && spec.answers.tcp_echo)
                || spec.health.iter().any(|h| h.port == seg.dst_port);
            if answered || seg.rst {
                None
            } else if seg.syn && seg.ack.is_none() {
                spec.wakes_on(Proto::Tcp, seg.dst_port)
                    .then_some(WakeCause::TcpSyn { port: seg.dst_port })
            } else {
                (seg.fin || !seg.payload.is_empty())
                    .then_some(WakeCause::TcpData { port: seg.dst_port })
            }
        }
        Transport::Udp { dst_port, .. } => {
            let echo = *dst_port == ECHO_PORT && spec.answers.udp_echo;
            (!echo && spec.wakes_on(Proto::Udp, *dst_port))
                .then_some(WakeCause::Udp { port: *dst_port })
        }
        Transport::Fragment(f) if f.first => fragment_wakes(spec, *f),
        _ => None,
    }
}

/// Whether the datagram of the first fragment `f` wakes a guest with `spec`.
fn fragment_wakes(spec: &GuestSpec, f: Fragment) -> Option<WakeCause> {
    let h = f.head?;
    let port = h.dst_port;
    match h.proto {
        Proto::Tcp if h.opens() => spec
            .wakes_on(Proto::Tcp, port)
            .then_some(WakeCause::TcpSyn { port }),
        Proto::Udp => spec
            .wakes_on(Proto::Udp, port)
            .then_some(WakeCause::Udp { port }),
        Proto::Tcp => None,
    }
}

/// The RST a guest's kernel sends for `seg`, a segment of no connection it has (RFC 9293,
/// 3.10.7.1): from `seg`'s acknowledgement number if it has one, else a RST/ACK of all it
/// carried (its SYN and FIN count one each).
fn reset_for(seg: &TcpSegment<'_>) -> Segment<'static> {
    let reply = Segment {
        src_port: seg.dst_port,
        dst_port: seg.src_port,
        rst: true,
        ..Segment::default()
    };
    match seg.ack {
        Some(ack) => Segment { seq: ack, ..reply },
        None => {
            let len = seg.payload.len() as u32 + u32::from(seg.syn) + u32::from(seg.fin);
            Segment {
                seq: 0,
                ack: Some(seg.seq.wrapping_add(len)),
                ..reply
            }
        }
    }
}

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn is_solicited_node(addr: Ipv6Addr) -> bool {
    let s = addr.segments();
    s[..6] == [0xff02, 0, 0, 0, 0, 1] && s[6] & 0xff00 == 0xff00
}

fn route_addrs(route: &Route) -> (IpAddr, IpAddr) {
    match *route {
        Route::V4 { src, dst, .. } => (IpAddr::V4(src), IpAddr::V4(dst)),
        Route::V6 { src, dst, .. } => (IpAddr::V6(src), IpAddr::V6(dst)),
    }
}

fn icmpv6_checksum_ok(src: Ipv6Addr, dst: Ipv6Addr, frame: &[u8], link: &LinkRepr) -> bool {
    let icmp = frame.get(link.header_len() + 40..).unwrap_or(&[]);
    icmp.len() >= 4 && Icmpv6Packet::new_unchecked(icmp).verify_checksum(&src, &dst)
}
