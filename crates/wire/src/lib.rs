//! Packet views and checked values for the frames vmnap sees on a bridge.
//!
//! Where a well-kept parser exists this crate re-exports it: the Ethernet, ARP, IPv4, IPv6,
//! ICMP, ICMPv6/NDP, TCP and UDP views are smoltcp's `wire` module. This crate adds what
//! smoltcp lacks: 802.1Q tags ([`vlan`]), the virtio-net header that Linux puts in front of
//! frames on `PACKET_VNET_HDR` sockets ([`vnet`]), completion of offloaded checksums
//! ([`checksum`]), and MAC addresses written the way Linux and people write them ([`mac`]).
//!
//! Everything here is pure: no I/O, no clock, no allocation on the parse paths, and no input
//! makes any parser panic.

#![forbid(unsafe_code)]

pub mod checksum;
pub mod mac;
pub mod vlan;
pub mod vnet;

pub use mac::Mac;
pub use smoltcp::wire as smol;
pub use smoltcp::wire::EthernetAddress as MacAddr;

/// The largest frame vmnap handles: a 64 KiB GSO frame, its Ethernet header and one VLAN tag.
pub const MAX_FRAME_LEN: usize = 65_536 + 14 + 4;
