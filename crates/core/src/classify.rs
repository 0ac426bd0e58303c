//! Reading a frame far enough to decide what to do with it.
//!
//! Parsing never panics and never allocates; anything that does not hold together is
//! [`Malformed`]. Checksums are not verified here: frames from veths and taps often carry
//! checksums the kernel has not computed yet, and only the responders need them right.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vmnap_wire::smol::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetProtocol, Icmpv4Message,
    Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet, NdiscRepr,
    RawHardwareAddress, TcpOption, TcpPacket, UdpPacket,
};
use vmnap_wire::vlan::LinkRepr;

use crate::guest::Transport as Proto;

/// The frame does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A frame, read as far as the surrogate needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parsed<'a> {
    pub link: LinkRepr,
    pub net: Net<'a>,
}

/// The network layer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Net<'a> {
    Arp {
        op: ArpOperation,
        sender_mac: EthernetAddress,
        sender_ip: Ipv4Addr,
        target_ip: Ipv4Addr,
    },
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        /// The IPv4 packet, header and payload (for checksum checks by the responders).
        transport: Transport<'a>,
    },
    Ipv6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        transport: Transport<'a>,
    },
    /// Not IP or ARP.
    Other,
}

/// The transport layer, with the bytes of its header and payload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Transport<'a> {
    Tcp(TcpSegment<'a>),
    Udp {
        src_port: u16,
        dst_port: u16,
        payload: &'a [u8],
        raw: &'a [u8],
    },
    Echo {
        ident: u16,
        seq: u16,
        data: &'a [u8],
        raw: &'a [u8],
    },
    NeighborSolicit {
        target: Ipv6Addr,
        source_lladdr: Option<EthernetAddress>,
    },
    NeighborAdvert {
        target: Ipv6Addr,
    },
    /// ICMP or ICMPv6 the surrogate does not answer (including NDP other than solicitations).
    OtherIcmp,
    /// A fragment of a larger datagram.
    Fragment(Fragment),
    /// Extension headers other than a fragment's, other protocols: the surrogate cannot
    /// look inside.
    Opaque,
}

/// A fragment: which datagram it belongs to, and for the first one, what that datagram
/// opens, as far as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragment {
    /// The datagram's identification (IPv4's 16 bits, or IPv6's 32).
    pub id: u32,
    /// It is the first fragment (offset 0), the one with the transport header.
    pub first: bool,
    /// For a first fragment of TCP or UDP: what its transport header says, as far as the
    /// fragment holds it.
    pub head: Option<FragmentHead>,
}

/// The start of a TCP or UDP header, in a first fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragmentHead {
    pub proto: Proto,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP's flags, if the fragment reaches them.
    pub tcp_flags: Option<u8>,
}

impl FragmentHead {
    /// A TCP SYN without ACK: it opens a connection.
    pub fn opens(&self) -> bool {
        self.tcp_flags.is_some_and(|f| f & 0x12 == 0x02)
    }
}

/// The transport header at the start of the first fragment of a datagram of `protocol`.
fn fragment_head(protocol: IpProtocol, head: &[u8]) -> Option<FragmentHead> {
    let proto = match protocol {
        IpProtocol::Udp => Proto::Udp,
        IpProtocol::Tcp => Proto::Tcp,
        _ => return None,
    };
    Some(FragmentHead {
        proto,
        src_port: u16::from_be_bytes([*head.first()?, *head.get(1)?]),
        dst_port: u16::from_be_bytes([*head.get(2)?, *head.get(3)?]),
        tcp_flags: (proto == Proto::Tcp)
            .then(|| head.get(13).copied())
            .flatten(),
    })
}

/// A TCP segment's fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpSegment<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: Option<u32>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub window: u16,
    pub mss: Option<u16>,
    pub timestamp: Option<(u32, u32)>,
    pub payload: &'a [u8],
    /// Header and payload, for checksum checks.
    pub raw: &'a [u8],
}

pub(crate) fn parse(frame: &[u8]) -> Result<Parsed<'_>, Malformed> {
    let link = LinkRepr::parse(frame).map_err(|_| Malformed)?;
    let payload = frame.get(link.header_len()..).ok_or(Malformed)?;
    let net = match EthernetProtocol::from(link.ethertype) {
        EthernetProtocol::Arp => parse_arp(payload)?,
        EthernetProtocol::Ipv4 => parse_ipv4(payload)?,
        EthernetProtocol::Ipv6 => parse_ipv6(payload)?,
        _ => Net::Other,
    };
    Ok(Parsed { link, net })
}

fn parse_arp(bytes: &[u8]) -> Result<Net<'_>, Malformed> {
    let packet = ArpPacket::new_checked(bytes).map_err(|_| Malformed)?;
    match ArpRepr::parse(&packet).map_err(|_| Malformed)? {
        ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } => Ok(Net::Arp {
            op: operation,
            sender_mac: source_hardware_addr,
            sender_ip: source_protocol_addr,
            target_ip: target_protocol_addr,
        }),
        _ => Err(Malformed),
    }
}

fn parse_ipv4(bytes: &[u8]) -> Result<Net<'_>, Malformed> {
    let packet = Ipv4Packet::new_checked(bytes).map_err(|_| Malformed)?;
    if packet.version() != 4 {
        return Err(Malformed);
    }
    let (src, dst) = (packet.src_addr(), packet.dst_addr());
    let header_len = usize::from(packet.header_len());
    let total = usize::from(packet.total_len());
    // GSO frames may carry a zero total length; their payload runs to the end of the frame.
    let end = if total == 0 { bytes.len() } else { total };
    let payload = bytes.get(header_len..end).ok_or(Malformed)?;
    let transport = if packet.more_frags() || packet.frag_offset() != 0 {
        let first = packet.frag_offset() == 0;
        Transport::Fragment(Fragment {
            id: u32::from(packet.ident()),
            first,
            head: first
                .then(|| fragment_head(packet.next_header(), payload))
                .flatten(),
        })
    } else {
        match packet.next_header() {
            IpProtocol::Tcp => parse_tcp(payload)?,
            IpProtocol::Udp => parse_udp(payload)?,
            IpProtocol::Icmp => {
                let icmp = Icmpv4Packet::new_checked(payload).map_err(|_| Malformed)?;
                match (icmp.msg_type(), icmp.msg_code()) {
                    (Icmpv4Message::EchoRequest, 0) => Transport::Echo {
                        ident: icmp.echo_ident(),
                        seq: icmp.echo_seq_no(),
                        data: icmp.data(),
                        raw: payload,
                    },
                    _ => Transport::OtherIcmp,
                }
            }
            _ => Transport::Opaque,
        }
    };
    Ok(Net::Ipv4 {
        src,
        dst,
        transport,
    })
}

fn parse_ipv6(bytes: &[u8]) -> Result<Net<'_>, Malformed> {
    let packet = Ipv6Packet::new_checked(bytes).map_err(|_| Malformed)?;
    if packet.version() != 6 {
        return Err(Malformed);
    }
    let (src, dst) = (packet.src_addr(), packet.dst_addr());
    let len = usize::from(packet.payload_len());
    let end = if len == 0 { bytes.len() } else { 40 + len };
    let payload = bytes.get(40..end).ok_or(Malformed)?;
    let transport = match packet.next_header() {
        IpProtocol::Tcp => parse_tcp(payload)?,
        IpProtocol::Udp => parse_udp(payload)?,
        IpProtocol::Icmpv6 => {
            let icmp = Icmpv6Packet::new_checked(payload).map_err(|_| Malformed)?;
            match (icmp.msg_type(), icmp.msg_code()) {
                (Icmpv6Message::EchoRequest, 0) => Transport::Echo {
                    ident: icmp.echo_ident(),
                    seq: icmp.echo_seq_no(),
                    data: icmp.payload(),
                    raw: payload,
                },
                (Icmpv6Message::NeighborSolicit, 0) => {
                    match NdiscRepr::parse(&icmp).map_err(|_| Malformed)? {
                        NdiscRepr::NeighborSolicit {
                            target_addr,
                            lladdr,
                        } => Transport::NeighborSolicit {
                            target: target_addr,
                            source_lladdr: lladdr.and_then(ethernet_lladdr),
                        },
                        _ => Transport::OtherIcmp,
                    }
                }
                (Icmpv6Message::NeighborAdvert, 0) => match NdiscRepr::parse(&icmp) {
                    Ok(NdiscRepr::NeighborAdvert { target_addr, .. }) => {
                        Transport::NeighborAdvert {
                            target: target_addr,
                        }
                    }
                    _ => Transport::OtherIcmp,
                },
                _ => Transport::OtherIcmp,
            }
        }
        IpProtocol::Ipv6Frag => {
            // next header, reserved, offset (13 bits) and flags, identification.
            let head = payload.get(..8).ok_or(Malformed)?;
            let offset = u16::from_be_bytes([head[2], head[3]]) >> 3;
            let first = offset == 0;
            Transport::Fragment(Fragment {
                id: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
                first,
                head: first
                    .then(|| fragment_head(IpProtocol::from(head[0]), &payload[8..]))
                    .flatten(),
            })
        }
        _ => Transport::Opaque,
    };
    Ok(Net::Ipv6 {
        src,
        dst,
        hop_limit: packet.hop_limit(),
        transport,
    })
}

fn ethernet_lladdr(raw: RawHardwareAddress) -> Option<EthernetAddress> {
    let bytes = raw.as_bytes();
    (bytes.len() == 6).then(|| EthernetAddress::from_bytes(bytes))
}

fn parse_tcp(bytes: &[u8]) -> Result<Transport<'_>, Malformed> {
    let packet = TcpPacket::new_checked(bytes).map_err(|_| Malformed)?;
    let mut mss = None;
    let mut timestamp = None;
    let mut options = packet.options();
    while !options.is_empty() {
        let (rest, option) = TcpOption::parse(options).map_err(|_| Malformed)?;
        match option {
            TcpOption::EndOfList => break,
            TcpOption::MaxSegmentSize(v) => mss = Some(v),
            TcpOption::TimeStamp { tsval, tsecr } => timestamp = Some((tsval, tsecr)),
            _ => {}
        }
        options = rest;
    }
    Ok(Transport::Tcp(TcpSegment {
        src_port: packet.src_port(),
        dst_port: packet.dst_port(),
        seq: packet.seq_number().0 as u32,
        ack: packet.ack().then(|| packet.ack_number().0 as u32),
        syn: packet.syn(),
        fin: packet.fin(),
        rst: packet.rst(),
        psh: packet.psh(),
        window: packet.window_len(),
        mss,
        timestamp,
        payload: packet.payload(),
        raw: bytes,
    }))
}

fn parse_udp(bytes: &[u8]) -> Result<Transport<'_>, Malformed> {
    let packet = UdpPacket::new_checked(bytes).map_err(|_| Malformed)?;
    let len = usize::from(packet.len());
    // UDP GSO frames may carry a length that covers only the first segment.
    let raw = bytes.get(..len.max(8)).unwrap_or(bytes);
    Ok(Transport::Udp {
        src_port: packet.src_port(),
        dst_port: packet.dst_port(),
        payload: packet.payload(),
        raw,
    })
}

/// The addresses and segment of a TCP frame, over IPv4 or IPv6; `None` for anything else,
/// or a frame that does not parse.
pub(crate) fn tcp(frame: &[u8]) -> Option<(IpAddr, IpAddr, TcpSegment<'_>)> {
    match parse(frame).ok()?.net {
        Net::Ipv4 {
            src,
            dst,
            transport: Transport::Tcp(seg),
        } => Some((IpAddr::V4(src), IpAddr::V4(dst), seg)),
        Net::Ipv6 {
            src,
            dst,
            transport: Transport::Tcp(seg),
            ..
        } => Some((IpAddr::V6(src), IpAddr::V6(dst), seg)),
        _ => None,
    }
}

/// `ff02::1:ffXX:XXXX`, the solicited-node group of `addr`.
pub(crate) fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// A frame in one line, for people: `TCP SYN 198.18.1.100:40000 > 198.18.0.11:80`,
/// `UDP [2001:db8::1]:5000 > [2001:db8::2]:9000`, `ARP who-has 198.18.0.11`. Never fails:
/// a frame it cannot read is `malformed frame (N bytes)`.
pub fn describe(frame: &[u8]) -> String {
    let Ok(parsed) = parse(frame) else {
        return format!("malformed frame ({} bytes)", frame.len());
    };
    let vlan = match parsed.link.vlan {
        0 => String::new(),
        v => format!(" on VLAN {v}"),
    };
    let (src, dst, transport) = match parsed.net {
        Net::Arp { op, target_ip, .. } => {
            let what = match op {
                ArpOperation::Request => "who-has",
                ArpOperation::Reply => "reply for",
                _ => "other for",
            };
            return format!("ARP {what} {target_ip}{vlan}");
        }
        Net::Ipv4 {
            src,
            dst,
            transport,
        } => (src.to_string(), dst.to_string(), transport),
        Net::Ipv6 {
            src,
            dst,
            transport,
            ..
        } => (format!("[{src}]"), format!("[{dst}]"), transport),
        Net::Other => {
            return format!(
                "EtherType {:#06x} frame ({} bytes){vlan}",
                parsed.link.ethertype,
                frame.len()
            )
        }
    };
    let text = match transport {
        Transport::Tcp(t) => {
            let mut flags = Vec::new();
            for (on, name) in [
                (t.syn, "SYN"),
                (t.fin, "FIN"),
                (t.rst, "RST"),
                (t.psh, "PSH"),
            ] {
                if on {
                    flags.push(name);
                }
            }
            if t.ack.is_some() {
                flags.push("ACK");
            }
            let data = if t.payload.is_empty() {
                String::new()
            } else {
                format!(" with {} bytes", t.payload.len())
            };
            format!(
                "TCP {} {src}:{} > {dst}:{}{data}",
                flags.join("/"),
                t.src_port,
                t.dst_port
            )
        }
        Transport::Udp {
            src_port,
            dst_port,
            payload,
            ..
        } => format!(
            "UDP {src}:{src_port} > {dst}:{dst_port} with {} bytes",
            payload.len()
        ),
        Transport::Echo { .. } => format!("echo request {src} > {dst}"),
        Transport::NeighborSolicit { target, .. } => format!("NS who-has {target}"),
        Transport::NeighborAdvert { target } => format!("NA for {target}"),
        Transport::OtherIcmp => format!("ICMP {src} > {dst}"),
        Transport::Fragment(f) => format!(
            "IP {src} > {dst} ({} fragment of datagram {:#x})",
            if f.first { "first" } else { "later" },
            f.id
        ),
        Transport::Opaque => format!("IP {src} > {dst} (other protocol)"),
    };
    format!("{text}{vlan}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicited_node_group_keeps_the_low_24_bits() {
        let addr: Ipv6Addr = "2001:db8::12:3456".parse().expect("literal");
        assert_eq!(
            solicited_node(addr),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().expect("literal")
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&bytes);
        }
    }
}
