//! Building the frames the surrogate sends in a guest's name.
//!
//! Each builder writes a whole frame into a caller's buffer (cleared first) with every
//! checksum computed, so the frame can go out without offloads.

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::phy::ChecksumCapabilities;
use vmnap_wire::smol::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetProtocol, Icmpv4DstUnreachable,
    Icmpv4Packet, Icmpv4Repr, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, IpAddress,
    IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr,
    RawHardwareAddress, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, TcpTimestampRepr, UdpPacket,
    UdpRepr,
};
use vmnap_wire::vlan::LinkRepr;

/// Hop limit of the IP packets the surrogate sends, as a Linux guest would.
const HOP_LIMIT: u8 = 64;

/// The addressing of a reply: link layer and one IP version's addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route {
    V4 {
        link: LinkRepr,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    V6 {
        link: LinkRepr,
        src: Ipv6Addr,
        dst: Ipv6Addr,
    },
}

impl Route {
    /// The reply route for a request that came with `link`, from `peer` to `guest`.
    pub(crate) fn reply_v4(link: &LinkRepr, guest: Ipv4Addr, peer: Ipv4Addr) -> Self {
        Route::V4 {
            link: link.reply(0),
            src: guest,
            dst: peer,
        }
    }

    pub(crate) fn reply_v6(link: &LinkRepr, guest: Ipv6Addr, peer: Ipv6Addr) -> Self {
        Route::V6 {
            link: link.reply(0),
            src: guest,
            dst: peer,
        }
    }

    fn addrs(&self) -> (IpAddress, IpAddress) {
        match *self {
            Route::V4 { src, dst, .. } => (src.into(), dst.into()),
            Route::V6 { src, dst, .. } => (src.into(), dst.into()),
        }
    }
}

fn checksums() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

fn start(out: &mut Vec<u8>, link: &LinkRepr, ethertype: EthernetProtocol, len: usize) -> usize {
    let link = LinkRepr {
        ethertype: ethertype.into(),
        ..*link
    };
    let header = link.header_len();
    out.clear();
    out.resize(header + len, 0);
    link.emit(out);
    header
}

/// Writes the link and IP headers for `route` and returns where the transport header starts.
fn ip(out: &mut Vec<u8>, route: &Route, proto: IpProtocol, hop_limit: u8, len: usize) -> usize {
    match *route {
        Route::V4 { link, src, dst } => {
            let repr = Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: proto,
                payload_len: len,
                hop_limit,
            };
            let at = start(out, &link, EthernetProtocol::Ipv4, repr.buffer_len() + len);
            let mut packet = Ipv4Packet::new_unchecked(&mut out[at..]);
            repr.emit(&mut packet, &checksums());
            packet.set_dont_frag(true);
            packet.fill_checksum();
            at + repr.buffer_len()
        }
        Route::V6 { link, src, dst } => {
            let repr = Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: proto,
                payload_len: len,
                hop_limit,
            };
            let at = start(out, &link, EthernetProtocol::Ipv6, repr.buffer_len() + len);
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[at..]));
            at + repr.buffer_len()
        }
    }
}

/// An ARP packet from `sender` to `target`, in a frame with `link`'s addresses and tag.
pub(crate) fn arp(
    out: &mut Vec<u8>,
    operation: ArpOperation,
    link: &LinkRepr,
    sender_mac: EthernetAddress,
    sender_ip: Ipv4Addr,
    target_mac: EthernetAddress,
    target_ip: Ipv4Addr,
) {
    let repr = ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr: sender_mac,
        source_protocol_addr: sender_ip,
        target_hardware_addr: target_mac,
        target_protocol_addr: target_ip,
    };
    let at = start(out, link, EthernetProtocol::Arp, repr.buffer_len());
    repr.emit(&mut ArpPacket::new_unchecked(&mut out[at..]));
}

/// A neighbour solicitation for `target`, without a link-layer address option (as duplicate
/// address detection sends it from the unspecified address).
pub(crate) fn neighbor_solicit(out: &mut Vec<u8>, route: &Route, target: Ipv6Addr) {
    let Route::V6 { src, dst, .. } = *route else {
        return;
    };
    let repr = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: None,
    });
    let at = ip(out, route, IpProtocol::Icmpv6, 255, repr.buffer_len());
    repr.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(&mut out[at..]),
        &checksums(),
    );
}

/// A neighbour advertisement for `target` with `guest_mac`, as the guest's kernel sends it:
/// solicited and to the soliciting node, or (for duplicate address detection, `solicited`
/// false) to all nodes.
pub(crate) fn neighbor_advert(
    out: &mut Vec<u8>,
    route: &Route,
    guest_mac: EthernetAddress,
    target: Ipv6Addr,
    solicited: bool,
) {
    let Route::V6 { src, dst, .. } = *route else {
        return;
    };
    let mut flags = NdiscNeighborFlags::OVERRIDE;
    if solicited {
        flags |= NdiscNeighborFlags::SOLICITED;
    }
    let repr = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags,
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(guest_mac)),
    });
    let at = ip(out, route, IpProtocol::Icmpv6, 255, repr.buffer_len());
    repr.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(&mut out[at..]),
        &checksums(),
    );
}

/// An ICMP or ICMPv6 echo reply.
pub(crate) fn echo_reply(out: &mut Vec<u8>, route: &Route, ident: u16, seq_no: u16, data: &[u8]) {
    match *route {
        Route::V4 { .. } => {
            let repr = Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            let at = ip(out, route, IpProtocol::Icmp, HOP_LIMIT, repr.buffer_len());
            repr.emit(
                &mut Icmpv4Packet::new_unchecked(&mut out[at..]),
                &checksums(),
            );
        }
        Route::V6 { src, dst, .. } => {
            let repr = Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            let at = ip(out, route, IpProtocol::Icmpv6, HOP_LIMIT, repr.buffer_len());
            repr.emit(
                &src,
                &dst,
                &mut Icmpv6Packet::new_unchecked(&mut out[at..]),
                &checksums(),
            );
        }
    }
}

/// A UDP datagram.
pub(crate) fn udp(out: &mut Vec<u8>, route: &Route, src_port: u16, dst_port: u16, data: &[u8]) {
    let repr = UdpRepr { src_port, dst_port };
    let (src, dst) = route.addrs();
    let at = ip(
        out,
        route,
        IpProtocol::Udp,
        HOP_LIMIT,
        repr.header_len() + data.len(),
    );
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut out[at..]),
        &src,
        &dst,
        data.len(),
        |p| p.copy_from_slice(data),
        &checksums(),
    );
}

/// The fields of a TCP segment the surrogate sends.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Segment<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: Option<u32>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub window: u16,
    pub mss: Option<u16>,
    pub timestamp: Option<(u32, u32)>,
    pub payload: &'a [u8],
}

/// A TCP segment.
pub(crate) fn tcp(out: &mut Vec<u8>, route: &Route, seg: &Segment<'_>) {
    let control = match (seg.syn, seg.fin, seg.rst) {
        (true, _, _) => TcpControl::Syn,
        (_, true, _) => TcpControl::Fin,
        (_, _, true) => TcpControl::Rst,
        _ if seg.payload.is_empty() => TcpControl::None,
        _ => TcpControl::Psh,
    };
    let repr = TcpRepr {
        src_port: seg.src_port,
        dst_port: seg.dst_port,
        control,
        seq_number: TcpSeqNumber(seg.seq as i32),
        ack_number: seg.ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: seg.window,
        window_scale: None,
        max_seg_size: seg.mss,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: seg
            .timestamp
            .map(|(tsval, tsecr)| TcpTimestampRepr::new(tsval, tsecr)),
        payload: seg.payload,
    };
    let (src, dst) = route.addrs();
    let at = ip(out, route, IpProtocol::Tcp, HOP_LIMIT, repr.buffer_len());
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut out[at..]),
        &src,
        &dst,
        &checksums(),
    );
}

/// An ICMP or ICMPv6 "port unreachable" for the IP packet `original` (its header and the
/// first 8 bytes of its payload, as RFC 792 and RFC 4443 ask for). Nothing is written if
/// `original` does not parse.
pub(crate) fn port_unreachable(out: &mut Vec<u8>, route: &Route, original: &[u8]) {
    out.clear();
    let ignored = ChecksumCapabilities::ignored();
    match *route {
        Route::V4 { .. } => {
            let Ok(packet) = Ipv4Packet::new_checked(original) else {
                return;
            };
            let Ok(header) = Ipv4Repr::parse(&packet, &ignored) else {
                return;
            };
            let payload = packet.payload();
            let repr = Icmpv4Repr::DstUnreachable {
                reason: Icmpv4DstUnreachable::PortUnreachable,
                header,
                data: &payload[..payload.len().min(8)],
            };
            let at = ip(out, route, IpProtocol::Icmp, HOP_LIMIT, repr.buffer_len());
            repr.emit(
                &mut Icmpv4Packet::new_unchecked(&mut out[at..]),
                &checksums(),
            );
        }
        Route::V6 { src, dst, .. } => {
            let Ok(packet) = Ipv6Packet::new_checked(original) else {
                return;
            };
            let Ok(header) = Ipv6Repr::parse(&packet) else {
                return;
            };
            let payload = packet.payload();
            let repr = Icmpv6Repr::DstUnreachable {
                reason: Icmpv6DstUnreachable::PortUnreachable,
                header,
                data: &payload[..payload.len().min(8)],
            };
            let at = ip(out, route, IpProtocol::Icmpv6, HOP_LIMIT, repr.buffer_len());
            repr.emit(
                &src,
                &dst,
                &mut Icmpv6Packet::new_unchecked(&mut out[at..]),
                &checksums(),
            );
        }
    }
}
