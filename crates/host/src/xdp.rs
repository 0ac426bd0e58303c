//! An in-kernel responder for sleeping guests: an eBPF program at the surrogate's veth end
//! that answers the two commonest questions put to a sleeping guest, ARP requests for its
//! IPv4 address and ICMP echo requests to it, before the frame reaches any socket.
//!
//! # Why in the kernel
//!
//! Without it every answer goes kernel → the daemon's `AF_PACKET` capture socket → its
//! worker thread → the core's surrogate → a packet socket → kernel; with one request in
//! flight that is about four times slower than the guest's own kernel answering. The
//! program answers in place, rewriting the request into the reply, before the frame reaches
//! the interface the capture socket is bound to; a frame it answers never reaches the
//! daemon, and its reply does not either. Everything else it passes on, and the daemon's
//! userspace path handles as before. The program answers only for the addresses in its
//! map, which the daemon fills ([`Responder::insert`]) when a guest is asleep and empties
//! ([`Responder::remove`]) before it wakes. Its answers do not pass through the core, so
//! they are not among the surrogate's verdicts: how many the kernel gave in a guest's name
//! is [`Responder::answered`].
//!
//! # Where it runs
//!
//! The surrogate's end is a veth whose peer is the bridge's port. The program runs at one
//! of two hooks ([`Hook`]), the first that the kernel and the link allow:
//! - **On the peer's egress**, with tcx (Linux 6.6): as the bridge is about to send a
//!   request to the surrogate, the program rewrites it into the reply and redirects that
//!   into the peer's receive path (`bpf_redirect`, `BPF_F_INGRESS`), so that the bridge
//!   takes it as sent by the surrogate. The request crosses neither the veth nor generic
//!   XDP, and the program sees a VLAN tag that the kernel carries beside the frame
//!   (`__sk_buff.vlan_present`). A frame whose headers are not all in the skb's linear
//!   part has them pulled in, and one that is a shared clone (a broadcast the bridge floods
//!   to several ports) is made private first, as the kernel does for any tc program that
//!   may write to a packet; other frames go on untouched, answered or not.
//! - **In generic XDP** on the surrogate's end, elsewhere: the reply goes back out of the
//!   interface (`XDP_TX`). The kernel first makes every frame that reaches the interface
//!   linear, private and given 256 bytes of headroom, copying it if need be (frames a
//!   bridge floods to several ports are shared clones), answered or not. Native XDP on a
//!   veth would transmit an `XDP_TX` frame through the peer's NAPI, which exists only
//!   when the peer has an XDP program or GRO of its own; generic mode works on any veth.
//!
//! Besides either, the same program can answer, with the same map, at the ingress of any
//! port of the bridge ([`Hook::PortIngress`], [`Responder::attach_port`], tcx): a request is
//! answered back out of the port it came in by (`bpf_redirect` to the port's transmit
//! path), before the bridge sees it. Neither the request nor the reply crosses the bridge,
//! which is about half of each answer's cost; but nothing the bridge would do to the
//! request happens (netfilter's bridge hooks, VLAN filtering, isolation, learning), so the
//! caller attaches only where the bridge would carry it unchanged.
//!
//! All are attached with a BPF link (`BPF_LINK_CREATE`), not netlink: the link lives as
//! long as its descriptor, so dropping the [`Responder`], or the daemon's death (its
//! descriptors close), detaches the program and leaves nothing behind. A tcx program goes
//! after those already on the peer's egress, and passes on what it does not answer with
//! `TCX_NEXT`, so that later ones run. A kernel without BPF links for XDP (before 5.9) is
//! refused with [`AttachError::Link`]; there is no fallback to netlink.
//!
//! # What it answers, and how that differs from the userspace surrogate
//!
//! It mirrors `vmnap_core`'s surrogate where it answers, byte for byte, and passes every
//! frame it is not sure of:
//! - An ARP request (Ethernet, IPv4, operation 1) for an address in the map whose entry
//!   answers ARP, not gratuitous (sender address ≠ target address; a probe from 0.0.0.0 is
//!   answered), sent to the broadcast address or the guest's MAC and not from the guest's
//!   MAC: the reply goes to the sender MAC of the ARP body, from the guest's MAC, with the
//!   guest's MAC and address as sender and the asker's as target.
//! - An ICMP echo request (type 8, code 0) in an untagged IPv4 packet without options,
//!   unfragmented, whose total length the frame holds and whose header checksum holds,
//!   sent to the guest's MAC and to an address in the map whose entry answers echo: the
//!   reply goes back to the sender's MAC from the guest's, with the addresses swapped, no
//!   DSCP or ECN, ID 0, DF set, TTL 64, a fresh header checksum, type 0, and the ICMP
//!   checksum updated for the changed type (RFC 1624).
//!
//! The differences: the userspace surrogate verifies the ICMP checksum of a request whose
//! virtio-net header says it is complete, and drops a bad one; the program cannot tell an
//! offloaded, unfinished checksum from a complete one, and does not sum the payload, so a
//! request with a bad ICMP checksum gets a reply carrying an equally bad one, which its
//! sender drops (ping computes its checksums in software, so the incremental update is
//! right for every request that matters). A frame padded past its IP packet keeps its
//! padding in the reply. ARP requests to a multicast address other than the broadcast, and
//! everything with an 802.1Q or 802.1ad tag, are left to userspace. And the program knows
//! the MACs of the guests in its map only: the core ignores every frame whose source MAC is
//! any registered guest's, so an awake guest's ARP request or ping for a sleeping one goes
//! unanswered in userspace, and is answered here.
//!
//! # VLANs in generic XDP: tags that are not in the frame
//!
//! The program keys its map by IPv4 address alone. A VLAN tag that the kernel carries
//! beside the frame (`skb->vlan_tci`: a bridge or a VLAN device sending over a veth, which
//! offloads tag insertion, leaves it there) is invisible to XDP in generic mode, and the
//! reply keeps that tag. So in XDP the program would answer a request from another VLAN for
//! a guest's address, which the userspace surrogate never does. To close that,
//! [`Responder::attach_with`] at [`Hook::GenericXdp`] turns VLAN tag insertion off on the
//! interface's veth peer when the peer is in the same network namespace: the peer then
//! writes each tag into the frame, where the program sees it and passes the frame on (the
//! capture socket still gets the frame with the tag stripped into its metadata, as
//! before). Where the peer is elsewhere, attach refuses with [`AttachError::VlanOffload`]
//! unless the caller says the link carries no VLAN traffic ([`Vlans::Absent`]). The peer's
//! offload is not turned back on at drop: a responder attached again meanwhile (at a
//! reload) would be left exposed, and software insertion of the rare tag costs next to
//! nothing. At [`Hook::PeerEgress`] none of this is needed. Either way, only guests without
//! a VLAN belong in the map.
//!
//! # The program
//!
//! It is assembled here, in Rust (a small encoder, `xdp/asm.rs`, and the listing,
//! `xdp/program.rs`, whose jumps name labels, one listing for both hooks), so no BPF
//! toolchain is needed to build vmnap. If a kernel's verifier refuses it,
//! [`AttachError::Load`] carries the end of the verifier's log. Its license string is the
//! project's, `Apache-2.0`: the kernel asks for a GPL-compatible one only of programs that
//! call GPL-only helpers, and this one calls `bpf_map_lookup_elem`, `bpf_skb_pull_data` and
//! `bpf_redirect`, which are not.

mod asm;
mod program;
mod sys;
mod vlan;

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

use vmnap_wire::Mac;

/// The map's value for one sleeping guest, as the program reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    mac: [u8; 6],
    /// [`ANSWER_ARP`], [`ANSWER_ECHO`].
    flags: u8,
    _pad: u8,
    /// Answers given, counted by the program (atomically: it runs on all CPUs at once).
    arp_answers: u64,
    echo_answers: u64,
}

impl Entry {
    fn to_bytes(self) -> [u8; size_of::<Entry>()] {
        let mut out = [0u8; size_of::<Entry>()];
        out[..6].copy_from_slice(&self.mac);
        out[6] = self.flags;
        out[8..16].copy_from_slice(&self.arp_answers.to_ne_bytes());
        out[16..24].copy_from_slice(&self.echo_answers.to_ne_bytes());
        out
    }

    fn from_bytes(b: &[u8; size_of::<Entry>()]) -> Self {
        let u64_at = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_ne_bytes(w)
        };
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&b[..6]);
        Entry {
            mac,
            flags: b[6],
            _pad: 0,
            arp_answers: u64_at(8),
            echo_answers: u64_at(16),
        }
    }
}

const ANSWER_ARP: u8 = 1 << 0;
const ANSWER_ECHO: u8 = 1 << 1;
const KEY_SIZE: u32 = 4;
const PROGRAM_NAME: &str = "vmnap_respond";
const MAP_NAME: &str = "vmnap_sleeping";
/// The key of the entry that counts every answer the program gives, for any guest.
const TOTAL: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
const LICENSE: &CStr = c"Apache-2.0";
/// Room for the verifier's log of a refused program (it keeps the log's end).
const LOG_SIZE: usize = 1 << 20;
/// How much of the log's end an error carries.
const LOG_TAIL: usize = 4096;

/// What the program answers for one guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Answers {
    /// ARP requests for the guest's address.
    pub arp: bool,
    /// ICMP echo requests to the guest.
    pub echo: bool,
}

/// Answers the program gave in a guest's name since it was inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Answered {
    /// ARP replies.
    pub arp: u64,
    /// ICMP echo replies.
    pub echo: u64,
}

/// Whether the caller vouches that no VLAN traffic reaches the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vlans {
    /// Tagged frames may arrive: VLAN tag insertion must be turned off on the veth peer
    /// (attach does it when the peer is in this namespace, and refuses otherwise).
    Possible,
    /// No tagged frame can arrive (the link is the caller's own, untagged): the peer is
    /// left as it is.
    Absent,
}

/// Where the program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// On the transmit path of the interface's veth peer, with tcx (Linux 6.6): a request is
    /// answered as the peer is about to send it to the interface, and the reply goes into
    /// the peer's receive path, as if the interface had sent it. Sees VLAN tags kept beside
    /// the frame, and copies nothing it does not answer.
    PeerEgress,
    /// Generic XDP on the interface's receive path: every frame made linear and private
    /// first, and VLAN tag insertion turned off on the peer (see the module's
    /// documentation).
    GenericXdp,
    /// With tcx on the ingress of a bridge's port ([`Responder::attach_port`]), besides one
    /// of the two above: a request coming in by the port is answered back out of it before
    /// the bridge sees it.
    PortIngress,
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hook::PeerEgress => "tcx on the veth peer's egress",
            Hook::GenericXdp => "generic XDP",
            Hook::PortIngress => "tcx on a bridge port's ingress",
        })
    }
}

/// What the program did with a frame in [`Responder::try_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Passed on to the stack (`XDP_PASS`, `TCX_NEXT`): the userspace path decides.
    Pass,
    /// Answered (`XDP_TX`, or a redirect into the peer): the frame, rewritten into this
    /// reply, goes back.
    Reply(Vec<u8>),
    /// Any other action, which the program never returns.
    Unexpected(u32),
}

/// Errors from [`Responder::attach`].
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The interface name is empty, too long or has a NUL byte.
    #[error("Invalid interface name {0:?}")]
    InvalidName(String),
    /// No interface of that name exists in this network namespace.
    #[error("Could not find interface {interface}")]
    NoSuchInterface {
        /// The interface.
        interface: String,
        /// The error of the lookup.
        #[source]
        source: io::Error,
    },
    /// The map of sleeping guests could not be created (`capacity` 0 is refused).
    #[error("Could not create the XDP map of {capacity} sleeping guests for {interface}")]
    Map {
        /// The interface.
        interface: String,
        /// The entries asked for.
        capacity: u32,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The interface is not a veth whose peer is in this network namespace, which
    /// [`Hook::PeerEgress`] needs.
    #[error("{interface} is not a veth with its peer in this network namespace")]
    NoPeer {
        /// The interface.
        interface: String,
    },
    /// The kernel refused the program; `log` is the end of the verifier's log.
    #[error(
        "The kernel refused the responder ({hook}) for {interface}; the verifier's log ends:\n{log}"
    )]
    Load {
        /// The interface.
        interface: String,
        /// Where it was to run.
        hook: Hook,
        /// The end of the verifier's log (empty if the refusal came before the verifier).
        log: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// VLAN tag insertion could not be turned off on the interface's veth peer, or the
    /// peer is in another network namespace (see the module's documentation).
    #[error("Could not make the veth peer of {interface} put VLAN tags in the frame")]
    VlanOffload {
        /// The interface.
        interface: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The program could not be attached (`EBUSY`: another XDP program is on the interface
    /// in generic mode; `EINVAL`: the kernel has no BPF links for XDP, or no tcx).
    #[error("Could not attach the responder ({hook}) to {interface}")]
    Link {
        /// The interface.
        interface: String,
        /// Where it was to run.
        hook: Hook,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

/// Errors from changing or reading the responder's map.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// 0.0.0.0 is no guest's address: its entry holds the total of all answers.
    #[error("0.0.0.0 cannot be answered for by the kernel's responder on {interface}")]
    Unspecified {
        /// The interface.
        interface: String,
    },
    /// The map holds as many guests as it can.
    #[error("Could not add {ip} to the kernel's responder on {interface}: it holds {capacity} guests already")]
    Full {
        /// The interface.
        interface: String,
        /// The address.
        ip: Ipv4Addr,
        /// The map's capacity.
        capacity: u32,
    },
    /// The kernel refused the map operation.
    #[error("Could not {op} {ip} in the kernel's responder's map on {interface}")]
    Kernel {
        /// The interface.
        interface: String,
        /// `insert`, `remove` or `read`.
        op: &'static str,
        /// The address.
        ip: Ipv4Addr,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

/// Errors from [`Responder::try_frame`].
#[derive(Debug, thiserror::Error)]
#[error("Could not run the kernel's responder of {interface} on a frame of {len} bytes")]
pub struct TryFrameError {
    /// The interface.
    pub interface: String,
    /// The frame's length.
    pub len: usize,
    /// The kernel's error.
    #[source]
    pub source: io::Error,
}

/// The in-kernel responder for one interface, with its map of sleeping guests. Dropping
/// it detaches the program.
#[derive(Debug)]
pub struct Responder {
    /// The BPF link, held and never read: the program is attached while it is open.
    _link: OwnedFd,
    prog: OwnedFd,
    map: OwnedFd,
    ifindex: u32,
    interface: String,
    capacity: u32,
    hook: Hook,
    /// The program for bridge ports' ingress, loaded when first needed, and its links by
    /// port.
    ingress: Option<OwnedFd>,
    ports: std::collections::HashMap<u32, OwnedFd>,
}

impl Responder {
    /// Attaches where it costs least: on the interface's veth peer's egress
    /// ([`Hook::PeerEgress`]) where the kernel has tcx and the interface is a veth with its
    /// peer here, in generic XDP ([`Hook::GenericXdp`], see [`Responder::attach_with`])
    /// otherwise; [`Responder::hook`] says which. The error is generic XDP's.
    pub fn attach(interface: &str, capacity: u32, vlans: Vlans) -> Result<Self, AttachError> {
        Self::attach_with(interface, capacity, vlans, Hook::PeerEgress)
            .or_else(|_| Self::attach_with(interface, capacity, vlans, Hook::GenericXdp))
    }

    /// Loads the program with an empty map of room for `capacity` guests and attaches it
    /// with a BPF link at `hook`: for [`Hook::PeerEgress`], to the egress of the veth peer of
    /// `interface`, after the programs already there ([`AttachError::NoPeer`] if the
    /// interface is not a veth with its peer here; [`AttachError::Link`] with `EINVAL` on a
    /// kernel without tcx); for [`Hook::GenericXdp`], to `interface` in generic mode, after
    /// turning VLAN tag insertion off on its veth peer unless `vlans` is [`Vlans::Absent`]
    /// (see the module's documentation), failing with `EBUSY` ([`AttachError::Link`]) if
    /// another program is attached to the interface in generic mode. [`Hook::PortIngress`]
    /// is refused ([`AttachError::Link`] with `EINVAL`): it comes besides another, by
    /// [`Responder::attach_port`].
    pub fn attach_with(
        interface: &str,
        capacity: u32,
        vlans: Vlans,
        hook: Hook,
    ) -> Result<Self, AttachError> {
        let ifindex = ifindex_of(interface)?;
        let owned = || interface.to_owned();
        let peer = match hook {
            Hook::GenericXdp => None,
            Hook::PeerEgress => match crate::Netlink::open()
                .ok()
                .and_then(|mut nl| nl.veth_peer(ifindex).ok())
            {
                Some(crate::netlink::VethPeer::Here(peer)) => Some(peer),
                _ => return Err(AttachError::NoPeer { interface: owned() }),
            },
            Hook::PortIngress => {
                return Err(AttachError::Link {
                    interface: owned(),
                    hook,
                    source: io::Error::from_raw_os_error(libc::EINVAL),
                })
            }
        };
        // One entry more than asked for: the total, at 0.0.0.0.
        let map = sys::create_hash_map(
            MAP_NAME,
            KEY_SIZE,
            size_of::<Entry>() as u32,
            capacity.saturating_add(1),
        )
        .map_err(|source| AttachError::Map {
            interface: owned(),
            capacity,
            source,
        })?;
        sys::map_update(map.as_fd(), &TOTAL.octets(), &Entry::default().to_bytes()).map_err(
            |source| AttachError::Map {
                interface: owned(),
                capacity,
                source,
            },
        )?;
        let map_fd = std::os::fd::AsRawFd::as_raw_fd(&map);
        let link_error = |source| AttachError::Link {
            interface: owned(),
            hook,
            source,
        };
        let (prog, link) = match peer {
            Some(peer) => {
                let insns = program::build(map_fd, program::Hook::TcEgress { ifindex: peer });
                let prog = load(sys::Kind::TcxEgress, &insns, interface, hook)?;
                let link =
                    sys::link(sys::Kind::TcxEgress, prog.as_fd(), peer, 0).map_err(link_error)?;
                (prog, link)
            }
            None => {
                let insns = program::build(map_fd, program::Hook::Xdp);
                let prog = load(sys::Kind::Xdp, &insns, interface, hook)?;
                if vlans == Vlans::Possible {
                    vlan::tags_in_frame_on_peer(ifindex).map_err(|source| {
                        AttachError::VlanOffload {
                            interface: owned(),
                            source,
                        }
                    })?;
                }
                let link = sys::link(
                    sys::Kind::Xdp,
                    prog.as_fd(),
                    ifindex,
                    sys::XDP_FLAGS_SKB_MODE,
                )
                .map_err(link_error)?;
                (prog, link)
            }
        };
        Ok(Responder {
            _link: link,
            prog,
            map,
            ifindex,
            interface: owned(),
            capacity,
            hook,
            ingress: None,
            ports: std::collections::HashMap::new(),
        })
    }

    /// Also answers, for the same guests, on the ingress of the bridge port `ifindex` (tcx,
    /// Linux 6.6; [`Hook::PortIngress`]): a request coming in by that port is answered back
    /// out of it before the bridge sees it, so that neither the request nor the answer
    /// crosses the bridge. The caller vouches that the bridge would carry the request from
    /// that port to the guest and back, with nothing on the way that could drop it (no
    /// VLAN filtering, isolation or netfilter); the program itself leaves tagged frames to
    /// the bridge. One program serves every port, each attached by a BPF link of its own;
    /// attaching a port already attached does nothing. Dropping the responder detaches them
    /// all.
    pub fn attach_port(&mut self, ifindex: u32) -> Result<(), AttachError> {
        if self.ports.contains_key(&ifindex) {
            return Ok(());
        }
        if self.ingress.is_none() {
            let insns = program::build(
                std::os::fd::AsRawFd::as_raw_fd(&self.map),
                program::Hook::TcIngress,
            );
            self.ingress = Some(load(
                sys::Kind::TcxIngress,
                &insns,
                &self.interface,
                Hook::PortIngress,
            )?);
        }
        let prog = self.ingress.as_ref().expect("loaded above");
        let link =
            sys::link(sys::Kind::TcxIngress, prog.as_fd(), ifindex, 0).map_err(|source| {
                AttachError::Link {
                    interface: format!("the port of index {ifindex}"),
                    hook: Hook::PortIngress,
                    source,
                }
            })?;
        self.ports.insert(ifindex, link);
        Ok(())
    }

    /// Stops answering on the ingress of port `ifindex` (attached or not).
    pub fn detach_port(&mut self, ifindex: u32) {
        self.ports.remove(&ifindex);
    }

    /// How many ports it answers on besides its own hook.
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    /// Whether it answers on port `ifindex` besides its own hook.
    pub fn has_port(&self, ifindex: u32) -> bool {
        self.ports.contains_key(&ifindex)
    }

    /// The ports it answers on besides its own hook, in no order.
    pub fn ports(&self) -> impl Iterator<Item = u32> + '_ {
        self.ports.keys().copied()
    }

    /// Where the program runs.
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// Answers what `answers` says for `ip` as the guest with `mac`, counting from zero;
    /// replaces what was there for `ip`.
    pub fn insert(&self, ip: Ipv4Addr, mac: Mac, answers: Answers) -> Result<(), MapError> {
        if ip == TOTAL {
            return Err(MapError::Unspecified {
                interface: self.interface.clone(),
            });
        }
        let mut flags = 0;
        if answers.arp {
            flags |= ANSWER_ARP;
        }
        if answers.echo {
            flags |= ANSWER_ECHO;
        }
        let entry = Entry {
            mac: mac.0,
            flags,
            ..Entry::default()
        };
        sys::map_update(self.map.as_fd(), &ip.octets(), &entry.to_bytes()).map_err(|source| {
            if source.raw_os_error() == Some(libc::E2BIG) {
                MapError::Full {
                    interface: self.interface.clone(),
                    ip,
                    capacity: self.capacity,
                }
            } else {
                self.map_error("insert", ip, source)
            }
        })
    }

    /// Stops answering for `ip`. An address that is not there is no error.
    pub fn remove(&self, ip: Ipv4Addr) -> Result<(), MapError> {
        if ip == TOTAL {
            return Ok(());
        }
        match sys::map_delete(self.map.as_fd(), &ip.octets()) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                Err(self.map_error("remove", ip, e))
            }
            _ => Ok(()),
        }
    }

    /// All the answers the program has given, for any guest: one read tells whether any
    /// guest's counts have moved since the last.
    pub fn total(&self) -> Result<Answered, MapError> {
        Ok(self.answered_at(TOTAL)?.unwrap_or_default())
    }

    /// The answers given for `ip` since it was inserted, or `None` if it is not there.
    pub fn answered(&self, ip: Ipv4Addr) -> Result<Option<Answered>, MapError> {
        if ip == TOTAL {
            return Ok(None);
        }
        self.answered_at(ip)
    }

    fn answered_at(&self, ip: Ipv4Addr) -> Result<Option<Answered>, MapError> {
        let mut value = [0u8; size_of::<Entry>()];
        match sys::map_lookup(self.map.as_fd(), &ip.octets(), &mut value) {
            Ok(()) => {
                let entry = Entry::from_bytes(&value);
                Ok(Some(Answered {
                    arp: entry.arp_answers,
                    echo: entry.echo_answers,
                }))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(self.map_error("read", ip, e)),
        }
    }

    /// Runs the program once on `frame` without any interface (`BPF_PROG_TEST_RUN`), with
    /// the same map: what it would do with the frame, and the reply it would send. An
    /// answer counts as one.
    pub fn try_frame(&self, frame: &[u8]) -> Result<Decision, TryFrameError> {
        let mut out = vec![0u8; frame.len() + 256];
        let (action, len) =
            sys::test_run(self.prog.as_fd(), frame, &mut out).map_err(|source| TryFrameError {
                interface: self.interface.clone(),
                len: frame.len(),
                source,
            })?;
        let (pass, reply) = match self.hook {
            Hook::GenericXdp => (program::XDP_PASS, program::XDP_TX),
            Hook::PeerEgress | Hook::PortIngress => {
                (program::TCX_NEXT as u32, program::TC_ACT_REDIRECT)
            }
        };
        Ok(if action == pass {
            Decision::Pass
        } else if action == reply {
            out.truncate(len);
            Decision::Reply(out)
        } else {
            Decision::Unexpected(action)
        })
    }

    /// The interface the program is attached to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// How many guests the map holds at most.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    fn map_error(&self, op: &'static str, ip: Ipv4Addr, source: io::Error) -> MapError {
        MapError::Kernel {
            interface: self.interface.clone(),
            op,
            ip,
            source,
        }
    }
}

/// Loads `insns` as a program of `kind`; if the kernel refuses them, loads them again with
/// the verifier's log on (the first try spares its cost) to tell why.
fn load(
    kind: sys::Kind,
    insns: &[asm::Insn],
    interface: &str,
    hook: Hook,
) -> Result<OwnedFd, AttachError> {
    if let Ok(prog) = sys::load(kind, PROGRAM_NAME, insns, LICENSE, None) {
        return Ok(prog);
    }
    let mut log = vec![0u8; LOG_SIZE];
    sys::load(kind, PROGRAM_NAME, insns, LICENSE, Some(&mut log)).map_err(|source| {
        AttachError::Load {
            interface: interface.to_owned(),
            hook,
            log: log_tail(&log),
            source,
        }
    })
}

/// The end of a NUL-terminated verifier log, from a line's start.
fn log_tail(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let text = text.trim_end();
    if text.len() <= LOG_TAIL {
        return text.to_owned();
    }
    let mut start = text.len() - LOG_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let tail = &text[start..];
    match tail.find('\n') {
        Some(nl) => format!("...\n{}", &tail[nl + 1..]),
        None => tail.to_owned(),
    }
}

/// The index of `interface` in the calling thread's network namespace.
fn ifindex_of(interface: &str) -> Result<u32, AttachError> {
    if interface.is_empty() || interface.len() >= libc::IFNAMSIZ {
        return Err(AttachError::InvalidName(interface.to_owned()));
    }
    let c = std::ffi::CString::new(interface)
        .map_err(|_| AttachError::InvalidName(interface.to_owned()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(AttachError::NoSuchInterface {
            interface: interface.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_layout_is_what_the_program_reads() {
        assert_eq!(size_of::<Entry>(), 24);
        assert_eq!(std::mem::offset_of!(Entry, flags), 6);
        assert_eq!(std::mem::offset_of!(Entry, arp_answers), 8);
        assert_eq!(std::mem::offset_of!(Entry, echo_answers), 16);
        let e = Entry {
            mac: [2, 0, 0, 0, 7, 2],
            flags: ANSWER_ECHO,
            _pad: 0,
            arp_answers: 3,
            echo_answers: 1 << 40,
        };
        let back = Entry::from_bytes(&e.to_bytes());
        assert_eq!(
            (back.mac, back.flags, back.arp_answers, back.echo_answers),
            (e.mac, e.flags, 3, 1 << 40)
        );
    }

    /// Needs root (CAP_BPF), like the crate's integration tests.
    #[test]
    fn a_refused_program_comes_back_with_the_verifiers_log() {
        use asm::{Insn, R0, R1, R2};
        // Reads the frame without checking its end first.
        let bad = [
            Insn::ldx_w(R2, R1, 0),
            Insn::ldx_b(R0, R2, 12),
            Insn::exit(),
        ];
        match load(sys::Kind::Xdp, &bad, "xs0", Hook::GenericXdp) {
            Err(e @ AttachError::Load { .. }) => {
                let text = e.to_string();
                assert!(
                    text.starts_with(
                        "The kernel refused the responder (generic XDP) for xs0; the verifier's log ends:\n"
                    ),
                    "{text}"
                );
                assert!(text.contains("invalid access to packet"), "{text}");
                match e {
                    AttachError::Load { source, .. } => {
                        assert_eq!(source.raw_os_error(), Some(libc::EACCES), "{source}")
                    }
                    _ => unreachable!(),
                }
            }
            Err(e) => panic!("{e:?} (these tests need root)"),
            Ok(_) => panic!("the verifier took an unchecked packet read"),
        }
    }

    #[test]
    fn log_tail_keeps_whole_lines_from_the_end() {
        let mut log = Vec::new();
        for i in 0..2000 {
            log.extend_from_slice(format!("{i}: r3 = *(u16 *)(r7 +12)\n").as_bytes());
        }
        log.push(0);
        log.extend_from_slice(b"garbage after the NUL");
        let tail = log_tail(&log);
        assert!(tail.len() <= LOG_TAIL + 4, "{}", tail.len());
        assert!(tail.starts_with("...\n"));
        assert!(tail.ends_with("1999: r3 = *(u16 *)(r7 +12)"));
        assert_eq!(log_tail(b"short\n\0"), "short");
    }
}
