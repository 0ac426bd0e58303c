//! The four tests per packet type (deconstruct, construct, parse, emit), on frames that real
//! kernel clients sent in a network namespace (see `crates/core/fixtures/README.md`).
//!
//! - deconstruct: the fields, read with the zero-copy views, are the captured ones;
//! - construct: the frame, written field by field with the views' setters, is the captured one;
//! - parse: the frame parses into the expected `LinkRepr` and smoltcp `Repr`s;
//! - emit: those `Repr`s emit the captured bytes (fields a `Repr` does not carry, such as the
//!   IPv4 identification or the IPv6 flow label, are set on the view afterwards).
//!
//! The TCP SYN and the UDP datagram were captured where the kernel sent them, with the
//! transport checksum left to the offload (`CHECKSUM_PARTIAL`): the field holds the
//! pseudo-header sum. The tests say so, and check that [`vmnap_wire::checksum::complete`]
//! turns it into the checksum smoltcp computes.

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::phy::ChecksumCapabilities;
use vmnap_wire::checksum::{self, ones_complement_sum};
use vmnap_wire::smol::{
    ArpHardware, ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetProtocol,
    Icmpv4Message, Icmpv4Packet, Icmpv4Repr, Icmpv6Message, Icmpv6Packet, Icmpv6Repr, IpAddress,
    IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, NdiscOption, NdiscOptionType,
    NdiscRepr, RawHardwareAddress, TcpControl, TcpOption, TcpPacket, TcpRepr, TcpSeqNumber,
    TcpTimestampRepr, UdpPacket, UdpRepr,
};
use vmnap_wire::vlan::LinkRepr;
use vmnap_wire::vnet::VirtioNetHdr;

#[path = "../../core/tests/support/pcap.rs"]
mod pcap;

const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0xcc, 0x01]);
const GUEST_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0x01]);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const GUEST_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
/// `ff02::1:ff00:11`, the guest's solicited-node group.
const GUEST_SOLICITED: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x11);

// arp.pcap #0: the client kernel resolving the guest for `ping`.
static ARP_REQUEST: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0xcc, 0x01, // dst, src
    0x08, 0x06, // ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet, IPv4, 6, 4, request
    0x02, 0x00, 0x00, 0x00, 0xcc, 0x01, 0xc6, 0x12, 0x00, 0x64, // sender
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc6, 0x12, 0x00, 0x0b, // target
];

// arp.pcap #1: the guest kernel's reply.
static ARP_REPLY: [u8; 42] = [
    0x02, 0x00, 0x00, 0x00, 0xcc, 0x01, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01, // dst, src
    0x08, 0x06, // ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, // Ethernet, IPv4, 6, 4, reply
    0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 0xc6, 0x12, 0x00, 0x0b, // sender
    0x02, 0x00, 0x00, 0x00, 0xcc, 0x01, 0xc6, 0x12, 0x00, 0x64, // target
];

// icmp_echo.pcap #0: `ping -c 1 198.18.0.11`.
static ICMP_ECHO_REQUEST: [u8; 98] = [
    0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0xcc, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x54, 0x7a, 0x03, 0x40, 0x00, 0x40, 0x01, 0x34, 0x12, 0xc6, 0x12, 0x00, 0x64, 0xc6, 0x12,
    0x00, 0x0b, 0x08, 0x00, 0x83, 0xb7, 0x0e, 0xd2, 0x00, 0x01, 0x32, 0xc1, 0x07, 0x6b, 0x00, 0x00,
    0x00, 0x00, 0x61, 0x76, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
    0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
    0x36, 0x37,
];

// icmpv6_echo.pcap #0: `ping -6 -c 1 2001:db8::11`.
static ICMPV6_ECHO_REQUEST: [u8; 118] = [
    0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0xcc, 0x01, 0x86, 0xdd, 0x60, 0x0b,
    0x34, 0x89, 0x00, 0x40, 0x3a, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x80, 0x00, 0x88, 0x77, 0x0e, 0xdc, 0x00, 0x01, 0x35, 0xc1,
    0x07, 0x6b, 0x00, 0x00, 0x00, 0x00, 0x84, 0xae, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11,
    0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21,
    0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31,
    0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
];

// ndp_ns.pcap #0: the client kernel resolving the guest for `ping -6`.
static NEIGHBOR_SOLICIT: [u8; 86] = [
    0x33, 0x33, 0xff, 0x00, 0x00, 0x11, 0x02, 0x00, 0x00, 0x00, 0xcc, 0x01, 0x86, 0xdd, 0x60, 0x00,
    0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0xff, 0x00, 0x00, 0x11, 0x87, 0x00, 0x4f, 0x09, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01,
    0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x01, 0x01,
    0x02, 0x00, 0x00, 0x00, 0xcc, 0x01,
];

// tcp_syn.pcap #0: `curl http://198.18.0.11:5432/`, checksum left to the offload.
static TCP_SYN: [u8; 74] = [
    0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0xcc, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x3c, 0x4e, 0x27, 0x40, 0x00, 0x40, 0x06, 0x60, 0x01, 0xc6, 0x12, 0x00, 0x64, 0xc6, 0x12,
    0x00, 0x0b, 0xb4, 0x94, 0x15, 0x38, 0x2a, 0xff, 0x60, 0x18, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02,
    0xfa, 0xf0, 0x8c, 0xc2, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0xa6, 0x09,
    0x13, 0xea, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
];

// udp.pcap #0: `printf 'vmnap fixture\n' | nc -u 198.18.0.11 7`, checksum left to the offload.
static UDP_DATAGRAM: [u8; 56] = [
    0x02, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0xcc, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x2a, 0x0d, 0x42, 0x40, 0x00, 0x40, 0x11, 0xa0, 0xed, 0xc6, 0x12, 0x00, 0x64, 0xc6, 0x12,
    0x00, 0x0b, 0xc7, 0xcc, 0x00, 0x07, 0x00, 0x16, 0x8c, 0xbb, 0x76, 0x6d, 0x6e, 0x61, 0x70, 0x20,
    0x66, 0x69, 0x78, 0x74, 0x75, 0x72, 0x65, 0x0a,
];

const ETH: usize = 14;
const IPV4: usize = ETH + 20;
const IPV6: usize = ETH + 40;

/// The payload of the two echo requests: `ping`'s timestamp and its 0x10.. pattern.
fn ping_data(frame: &[u8], at: usize) -> &[u8] {
    &frame[at..]
}

fn link(dst: EthernetAddress, src: EthernetAddress, ethertype: EthernetProtocol) -> LinkRepr {
    LinkRepr::new(dst, src, 0, ethertype.into())
}

fn client_link(dst: EthernetAddress, ethertype: EthernetProtocol) -> LinkRepr {
    link(dst, CLIENT_MAC, ethertype)
}

/// What a Linux sender leaves in a TCP or UDP checksum field for the offload to finish: the
/// one's-complement sum of the pseudo-header, not complemented.
fn partial_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, len: usize) -> u16 {
    let len = u16::try_from(len).expect("a small segment");
    ones_complement_sum(
        &[
            &src.octets()[..],
            &dst.octets()[..],
            &[0, u8::from(proto)],
            &len.to_be_bytes(),
        ]
        .concat(),
    )
}

fn ignored() -> ChecksumCapabilities {
    ChecksumCapabilities::ignored()
}

/// Writes an IPv4 header field by field with the view's setters, as Linux sent it.
fn construct_ipv4(frame: &mut [u8], ident: u16, proto: IpProtocol, src: Ipv4Addr, dst: Ipv4Addr) {
    let total = u16::try_from(frame.len() - ETH).expect("a small packet");
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH..]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_dscp(0);
    ip.set_ecn(0);
    ip.set_total_len(total);
    ip.set_ident(ident);
    ip.clear_flags();
    ip.set_dont_frag(true);
    ip.set_frag_offset(0);
    ip.set_hop_limit(64);
    ip.set_next_header(proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
}

/// Writes an IPv6 header field by field with the view's setters.
fn construct_ipv6(frame: &mut [u8], flow: u32, hop_limit: u8, src: Ipv6Addr, dst: Ipv6Addr) {
    let payload = u16::try_from(frame.len() - IPV6).expect("a small packet");
    let mut ip = Ipv6Packet::new_unchecked(&mut frame[ETH..]);
    ip.set_version(6);
    ip.set_traffic_class(0);
    ip.set_flow_label(flow);
    ip.set_payload_len(payload);
    ip.set_next_header(IpProtocol::Icmpv6);
    ip.set_hop_limit(hop_limit);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
}

/// Emits a link header and an IPv4 `Repr`, with the identification Linux chose.
fn emit_ipv4(frame: &mut [u8], link: &LinkRepr, repr: &Ipv4Repr, ident: u16) {
    assert_eq!(link.emit(frame), ETH);
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH..]);
    repr.emit(&mut ip, &ChecksumCapabilities::default());
    ip.set_ident(ident);
    ip.fill_checksum();
}

#[test]
fn static_frames_are_the_captured_ones() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/fixtures/");
    let first = |file: &str| {
        let bytes = std::fs::read(format!("{dir}{file}")).expect("fixture present");
        let records = pcap::read(&bytes).expect("a pcap file");
        records.into_iter().map(|r| r.bytes).collect::<Vec<_>>()
    };
    let arp = first("arp.pcap");
    assert_eq!(arp[0], ARP_REQUEST);
    assert_eq!(arp[1], ARP_REPLY);
    assert_eq!(first("icmp_echo.pcap")[0], ICMP_ECHO_REQUEST);
    assert_eq!(first("icmpv6_echo.pcap")[0], ICMPV6_ECHO_REQUEST);
    assert_eq!(first("ndp_ns.pcap")[0], NEIGHBOR_SOLICIT);
    assert_eq!(first("tcp_syn.pcap")[0], TCP_SYN);
    assert_eq!(first("udp.pcap")[0], UDP_DATAGRAM);
}

// ---- ARP request ----

fn arp_request_repr() -> ArpRepr {
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: CLIENT_MAC,
        source_protocol_addr: CLIENT_V4,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: GUEST_V4,
    }
}

#[test]
fn arp_request_fields_read_as_captured() {
    let l = LinkRepr::parse(&ARP_REQUEST).expect("Ethernet");
    assert_eq!(
        (l.dst, l.src, l.vlan),
        (EthernetAddress::BROADCAST, CLIENT_MAC, 0)
    );
    assert_eq!(l.ethertype, 0x0806);
    let arp = ArpPacket::new_checked(&ARP_REQUEST[ETH..]).expect("ARP");
    assert_eq!(arp.hardware_type(), ArpHardware::Ethernet);
    assert_eq!(arp.protocol_type(), EthernetProtocol::Ipv4);
    assert_eq!((arp.hardware_len(), arp.protocol_len()), (6, 4));
    assert_eq!(arp.operation(), ArpOperation::Request);
    assert_eq!(arp.source_hardware_addr(), CLIENT_MAC.as_bytes());
    assert_eq!(arp.source_protocol_addr(), CLIENT_V4.octets());
    assert_eq!(arp.target_hardware_addr(), [0; 6]);
    assert_eq!(arp.target_protocol_addr(), GUEST_V4.octets());
}

#[test]
fn arp_request_built_field_by_field_matches_capture() {
    let mut frame = [0u8; 42];
    client_link(EthernetAddress::BROADCAST, EthernetProtocol::Arp).emit(&mut frame);
    let mut arp = ArpPacket::new_unchecked(&mut frame[ETH..]);
    arp.set_hardware_type(ArpHardware::Ethernet);
    arp.set_protocol_type(EthernetProtocol::Ipv4);
    arp.set_hardware_len(6);
    arp.set_protocol_len(4);
    arp.set_operation(ArpOperation::Request);
    arp.set_source_hardware_addr(CLIENT_MAC.as_bytes());
    arp.set_source_protocol_addr(&CLIENT_V4.octets());
    arp.set_target_hardware_addr(&[0; 6]);
    arp.set_target_protocol_addr(&GUEST_V4.octets());
    assert_eq!(frame, ARP_REQUEST);
}

#[test]
fn arp_request_parses_to_repr() {
    assert_eq!(
        LinkRepr::parse(&ARP_REQUEST),
        Ok(client_link(
            EthernetAddress::BROADCAST,
            EthernetProtocol::Arp
        ))
    );
    let arp = ArpPacket::new_checked(&ARP_REQUEST[ETH..]).expect("ARP");
    assert_eq!(ArpRepr::parse(&arp), Ok(arp_request_repr()));
}

#[test]
fn arp_request_repr_emits_captured_bytes() {
    let repr = arp_request_repr();
    let mut frame = vec![0u8; ETH + repr.buffer_len()];
    let at = client_link(EthernetAddress::BROADCAST, EthernetProtocol::Arp).emit(&mut frame);
    repr.emit(&mut ArpPacket::new_unchecked(&mut frame[at..]));
    assert_eq!(frame, ARP_REQUEST);
}

// ---- ARP reply ----

fn arp_reply_repr() -> ArpRepr {
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: GUEST_MAC,
        source_protocol_addr: GUEST_V4,
        target_hardware_addr: CLIENT_MAC,
        target_protocol_addr: CLIENT_V4,
    }
}

#[test]
fn arp_reply_fields_read_as_captured() {
    let l = LinkRepr::parse(&ARP_REPLY).expect("Ethernet");
    assert_eq!((l.dst, l.src, l.ethertype), (CLIENT_MAC, GUEST_MAC, 0x0806));
    let arp = ArpPacket::new_checked(&ARP_REPLY[ETH..]).expect("ARP");
    assert_eq!(arp.operation(), ArpOperation::Reply);
    assert_eq!(arp.source_hardware_addr(), GUEST_MAC.as_bytes());
    assert_eq!(arp.source_protocol_addr(), GUEST_V4.octets());
    assert_eq!(arp.target_hardware_addr(), CLIENT_MAC.as_bytes());
    assert_eq!(arp.target_protocol_addr(), CLIENT_V4.octets());
}

#[test]
fn arp_reply_built_field_by_field_matches_capture() {
    let mut frame = [0u8; 42];
    link(CLIENT_MAC, GUEST_MAC, EthernetProtocol::Arp).emit(&mut frame);
    let mut arp = ArpPacket::new_unchecked(&mut frame[ETH..]);
    arp.set_hardware_type(ArpHardware::Ethernet);
    arp.set_protocol_type(EthernetProtocol::Ipv4);
    arp.set_hardware_len(6);
    arp.set_protocol_len(4);
    arp.set_operation(ArpOperation::Reply);
    arp.set_source_hardware_addr(GUEST_MAC.as_bytes());
    arp.set_source_protocol_addr(&GUEST_V4.octets());
    arp.set_target_hardware_addr(CLIENT_MAC.as_bytes());
    arp.set_target_protocol_addr(&CLIENT_V4.octets());
    assert_eq!(frame, ARP_REPLY);
}

#[test]
fn arp_reply_parses_to_repr() {
    assert_eq!(
        LinkRepr::parse(&ARP_REPLY),
        Ok(link(CLIENT_MAC, GUEST_MAC, EthernetProtocol::Arp))
    );
    let arp = ArpPacket::new_checked(&ARP_REPLY[ETH..]).expect("ARP");
    assert_eq!(ArpRepr::parse(&arp), Ok(arp_reply_repr()));
}

#[test]
fn arp_reply_repr_emits_captured_bytes() {
    let repr = arp_reply_repr();
    let mut frame = vec![0u8; ETH + repr.buffer_len()];
    let at = link(CLIENT_MAC, GUEST_MAC, EthernetProtocol::Arp).emit(&mut frame);
    repr.emit(&mut ArpPacket::new_unchecked(&mut frame[at..]));
    assert_eq!(frame, ARP_REPLY);
}

// ---- ICMP echo request ----

const PING_IDENT: u16 = 0x0ed2;
const PING_IP_IDENT: u16 = 0x7a03;

fn icmp_ip_repr() -> Ipv4Repr {
    Ipv4Repr {
        src_addr: CLIENT_V4,
        dst_addr: GUEST_V4,
        next_header: IpProtocol::Icmp,
        payload_len: 64,
        hop_limit: 64,
    }
}

fn icmp_echo_repr() -> Icmpv4Repr<'static> {
    Icmpv4Repr::EchoRequest {
        ident: PING_IDENT,
        seq_no: 1,
        data: ping_data(&ICMP_ECHO_REQUEST, IPV4 + 8),
    }
}

#[test]
fn icmp_echo_request_fields_read_as_captured() {
    let l = LinkRepr::parse(&ICMP_ECHO_REQUEST).expect("Ethernet");
    assert_eq!((l.dst, l.src, l.ethertype), (GUEST_MAC, CLIENT_MAC, 0x0800));
    let ip = Ipv4Packet::new_checked(&ICMP_ECHO_REQUEST[ETH..]).expect("IPv4");
    assert_eq!((ip.version(), ip.header_len(), ip.total_len()), (4, 20, 84));
    assert_eq!(
        (ip.ident(), ip.dont_frag(), ip.more_frags()),
        (PING_IP_IDENT, true, false)
    );
    assert_eq!((ip.hop_limit(), ip.next_header()), (64, IpProtocol::Icmp));
    assert_eq!((ip.src_addr(), ip.dst_addr()), (CLIENT_V4, GUEST_V4));
    assert!(ip.verify_checksum());
    let icmp = Icmpv4Packet::new_checked(ip.payload()).expect("ICMP");
    assert_eq!(
        (icmp.msg_type(), icmp.msg_code()),
        (Icmpv4Message::EchoRequest, 0)
    );
    assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (PING_IDENT, 1));
    assert_eq!(icmp.checksum(), 0x83b7);
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.data().len(), 56);
}

#[test]
fn icmp_echo_request_built_field_by_field_matches_capture() {
    let mut frame = [0u8; 98];
    client_link(GUEST_MAC, EthernetProtocol::Ipv4).emit(&mut frame);
    construct_ipv4(
        &mut frame,
        PING_IP_IDENT,
        IpProtocol::Icmp,
        CLIENT_V4,
        GUEST_V4,
    );
    let mut icmp = Icmpv4Packet::new_unchecked(&mut frame[IPV4..]);
    icmp.set_msg_type(Icmpv4Message::EchoRequest);
    icmp.set_msg_code(0);
    icmp.set_echo_ident(PING_IDENT);
    icmp.set_echo_seq_no(1);
    icmp.data_mut()
        .copy_from_slice(ping_data(&ICMP_ECHO_REQUEST, IPV4 + 8));
    icmp.fill_checksum();
    assert_eq!(frame, ICMP_ECHO_REQUEST);
}

#[test]
fn icmp_echo_request_parses_to_repr() {
    assert_eq!(
        LinkRepr::parse(&ICMP_ECHO_REQUEST),
        Ok(client_link(GUEST_MAC, EthernetProtocol::Ipv4))
    );
    let ip = Ipv4Packet::new_checked(&ICMP_ECHO_REQUEST[ETH..]).expect("IPv4");
    let caps = ChecksumCapabilities::default();
    assert_eq!(Ipv4Repr::parse(&ip, &caps), Ok(icmp_ip_repr()));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).expect("ICMP");
    assert_eq!(Icmpv4Repr::parse(&icmp, &caps), Ok(icmp_echo_repr()));
}

#[test]
fn icmp_echo_request_repr_emits_captured_bytes() {
    let mut frame = [0u8; 98];
    let l = client_link(GUEST_MAC, EthernetProtocol::Ipv4);
    emit_ipv4(&mut frame, &l, &icmp_ip_repr(), PING_IP_IDENT);
    icmp_echo_repr().emit(
        &mut Icmpv4Packet::new_unchecked(&mut frame[IPV4..]),
        &ChecksumCapabilities::default(),
    );
    assert_eq!(frame, ICMP_ECHO_REQUEST);
}

// ---- ICMPv6 echo request ----

const PING6_IDENT: u16 = 0x0edc;
const PING6_FLOW: u32 = 0xb3489;

fn icmpv6_ip_repr() -> Ipv6Repr {
    Ipv6Repr {
        src_addr: CLIENT_V6,
        dst_addr: GUEST_V6,
        next_header: IpProtocol::Icmpv6,
        payload_len: 64,
        hop_limit: 64,
    }
}

fn icmpv6_echo_repr() -> Icmpv6Repr<'static> {
    Icmpv6Repr::EchoRequest {
        ident: PING6_IDENT,
        seq_no: 1,
        data: ping_data(&ICMPV6_ECHO_REQUEST, IPV6 + 8),
    }
}

#[test]
fn icmpv6_echo_request_fields_read_as_captured() {
    let l = LinkRepr::parse(&ICMPV6_ECHO_REQUEST).expect("Ethernet");
    assert_eq!((l.dst, l.src, l.ethertype), (GUEST_MAC, CLIENT_MAC, 0x86dd));
    let ip = Ipv6Packet::new_checked(&ICMPV6_ECHO_REQUEST[ETH..]).expect("IPv6");
    assert_eq!(
        (ip.version(), ip.traffic_class(), ip.flow_label()),
        (6, 0, PING6_FLOW)
    );
    assert_eq!(
        (ip.payload_len(), ip.next_header()),
        (64, IpProtocol::Icmpv6)
    );
    assert_eq!(ip.hop_limit(), 64);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (CLIENT_V6, GUEST_V6));
    let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("ICMPv6");
    assert_eq!(
        (icmp.msg_type(), icmp.msg_code()),
        (Icmpv6Message::EchoRequest, 0)
    );
    assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (PING6_IDENT, 1));
    assert_eq!(icmp.checksum(), 0x8877);
    assert!(icmp.verify_checksum(&CLIENT_V6, &GUEST_V6));
    assert_eq!(icmp.payload().len(), 56);
}

#[test]
fn icmpv6_echo_request_built_field_by_field_matches_capture() {
    let mut frame = [0u8; 118];
    client_link(GUEST_MAC, EthernetProtocol::Ipv6).emit(&mut frame);
    construct_ipv6(&mut frame, PING6_FLOW, 64, CLIENT_V6, GUEST_V6);
    let mut icmp = Icmpv6Packet::new_unchecked(&mut frame[IPV6..]);
    icmp.set_msg_type(Icmpv6Message::EchoRequest);
    icmp.set_msg_code(0);
    icmp.set_echo_ident(PING6_IDENT);
    icmp.set_echo_seq_no(1);
    icmp.payload_mut()
        .copy_from_slice(ping_data(&ICMPV6_ECHO_REQUEST, IPV6 + 8));
    icmp.fill_checksum(&CLIENT_V6, &GUEST_V6);
    assert_eq!(frame, ICMPV6_ECHO_REQUEST);
}

#[test]
fn icmpv6_echo_request_parses_to_repr() {
    assert_eq!(
        LinkRepr::parse(&ICMPV6_ECHO_REQUEST),
        Ok(client_link(GUEST_MAC, EthernetProtocol::Ipv6))
    );
    let ip = Ipv6Packet::new_checked(&ICMPV6_ECHO_REQUEST[ETH..]).expect("IPv6");
    assert_eq!(Ipv6Repr::parse(&ip), Ok(icmpv6_ip_repr()));
    let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("ICMPv6");
    let caps = ChecksumCapabilities::default();
    assert_eq!(
        Icmpv6Repr::parse(&CLIENT_V6, &GUEST_V6, &icmp, &caps),
        Ok(icmpv6_echo_repr())
    );
}

#[test]
fn icmpv6_echo_request_repr_emits_captured_bytes() {
    let mut frame = [0u8; 118];
    client_link(GUEST_MAC, EthernetProtocol::Ipv6).emit(&mut frame);
    let mut ip = Ipv6Packet::new_unchecked(&mut frame[ETH..]);
    icmpv6_ip_repr().emit(&mut ip);
    // The flow label is not part of smoltcp's `Ipv6Repr`.
    ip.set_flow_label(PING6_FLOW);
    icmpv6_echo_repr().emit(
        &CLIENT_V6,
        &GUEST_V6,
        &mut Icmpv6Packet::new_unchecked(&mut frame[IPV6..]),
        &ChecksumCapabilities::default(),
    );
    assert_eq!(frame, ICMPV6_ECHO_REQUEST);
}

// ---- NDP neighbour solicitation ----

const SOLICITED_MAC: EthernetAddress = EthernetAddress([0x33, 0x33, 0xff, 0x00, 0x00, 0x11]);

fn ns_ip_repr() -> Ipv6Repr {
    Ipv6Repr {
        src_addr: CLIENT_V6,
        dst_addr: GUEST_SOLICITED,
        next_header: IpProtocol::Icmpv6,
        payload_len: 32,
        hop_limit: 255,
    }
}

fn ns_repr() -> Icmpv6Repr<'static> {
    Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: GUEST_V6,
        lladdr: Some(RawHardwareAddress::from(CLIENT_MAC)),
    })
}

#[test]
fn neighbor_solicit_fields_read_as_captured() {
    let l = LinkRepr::parse(&NEIGHBOR_SOLICIT).expect("Ethernet");
    assert_eq!(
        (l.dst, l.src, l.ethertype),
        (SOLICITED_MAC, CLIENT_MAC, 0x86dd)
    );
    assert!(l.dst.is_multicast());
    let ip = Ipv6Packet::new_checked(&NEIGHBOR_SOLICIT[ETH..]).expect("IPv6");
    assert_eq!(
        (ip.flow_label(), ip.hop_limit(), ip.payload_len()),
        (0, 255, 32)
    );
    assert_eq!((ip.src_addr(), ip.dst_addr()), (CLIENT_V6, GUEST_SOLICITED));
    let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("ICMPv6");
    assert_eq!(
        (icmp.msg_type(), icmp.msg_code()),
        (Icmpv6Message::NeighborSolicit, 0)
    );
    assert_eq!(icmp.target_addr(), GUEST_V6);
    assert!(icmp.verify_checksum(&CLIENT_V6, &GUEST_SOLICITED));
    let opt = NdiscOption::new_checked(&ip.payload()[24..]).expect("one option");
    assert_eq!(opt.option_type(), NdiscOptionType::SourceLinkLayerAddr);
    assert_eq!(opt.data_len(), 1);
    assert_eq!(opt.link_layer_addr().as_bytes(), CLIENT_MAC.as_bytes());
}

#[test]
fn neighbor_solicit_built_field_by_field_matches_capture() {
    let mut frame = [0u8; 86];
    client_link(SOLICITED_MAC, EthernetProtocol::Ipv6).emit(&mut frame);
    construct_ipv6(&mut frame, 0, 255, CLIENT_V6, GUEST_SOLICITED);
    let mut icmp = Icmpv6Packet::new_unchecked(&mut frame[IPV6..]);
    icmp.set_msg_type(Icmpv6Message::NeighborSolicit);
    icmp.set_msg_code(0);
    icmp.set_target_addr(GUEST_V6);
    let mut opt = NdiscOption::new_unchecked(&mut frame[IPV6 + 24..]);
    opt.set_option_type(NdiscOptionType::SourceLinkLayerAddr);
    opt.set_data_len(1);
    opt.set_link_layer_addr(RawHardwareAddress::from(CLIENT_MAC));
    Icmpv6Packet::new_unchecked(&mut frame[IPV6..]).fill_checksum(&CLIENT_V6, &GUEST_SOLICITED);
    assert_eq!(frame, NEIGHBOR_SOLICIT);
}

#[test]
fn neighbor_solicit_parses_to_repr() {
    assert_eq!(
        LinkRepr::parse(&NEIGHBOR_SOLICIT),
        Ok(client_link(SOLICITED_MAC, EthernetProtocol::Ipv6))
    );
    let ip = Ipv6Packet::new_checked(&NEIGHBOR_SOLICIT[ETH..]).expect("IPv6");
    assert_eq!(Ipv6Repr::parse(&ip), Ok(ns_ip_repr()));
    let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("ICMPv6");
    let caps = ChecksumCapabilities::default();
    assert_eq!(
        Icmpv6Repr::parse(&CLIENT_V6, &GUEST_SOLICITED, &icmp, &caps),
        Ok(ns_repr())
    );
}

#[test]
fn neighbor_solicit_repr_emits_captured_bytes() {
    let mut frame = [0u8; 86];
    client_link(SOLICITED_MAC, EthernetProtocol::Ipv6).emit(&mut frame);
    ns_ip_repr().emit(&mut Ipv6Packet::new_unchecked(&mut frame[ETH..]));
    ns_repr().emit(
        &CLIENT_V6,
        &GUEST_SOLICITED,
        &mut Icmpv6Packet::new_unchecked(&mut frame[IPV6..]),
        &ChecksumCapabilities::default(),
    );
    assert_eq!(frame, NEIGHBOR_SOLICIT);
}

// ---- TCP SYN ----

const SYN_IP_IDENT: u16 = 0x4e27;
const SYN_SRC_PORT: u16 = 46228;
const SYN_ISN: u32 = 721_379_352;
const SYN_TSVAL: u32 = 2_785_612_778;

fn syn_ip_repr() -> Ipv4Repr {
    Ipv4Repr {
        src_addr: CLIENT_V4,
        dst_addr: GUEST_V4,
        next_header: IpProtocol::Tcp,
        payload_len: 40,
        hop_limit: 64,
    }
}

fn syn_repr() -> TcpRepr<'static> {
    TcpRepr {
        src_port: SYN_SRC_PORT,
        dst_port: 5432,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(SYN_ISN as i32),
        ack_number: None,
        window_len: 64240,
        window_scale: Some(10),
        max_seg_size: Some(1460),
        sack_permitted: true,
        sack_ranges: [None; 3],
        timestamp: Some(TcpTimestampRepr::new(SYN_TSVAL, 0)),
        payload: &[],
    }
}

/// Linux's SYN options, in Linux's order: MSS, SACK permitted, timestamps, NOP, window scale.
fn linux_syn_options(mut options: &mut [u8]) {
    for option in [
        TcpOption::MaxSegmentSize(1460),
        TcpOption::SackPermitted,
        TcpOption::TimeStamp {
            tsval: SYN_TSVAL,
            tsecr: 0,
        },
        TcpOption::NoOperation,
        TcpOption::WindowScale(10),
    ] {
        options = option.emit(options);
    }
    assert!(options.is_empty());
}

fn syn_partial_checksum() -> u16 {
    partial_checksum_v4(CLIENT_V4, GUEST_V4, IpProtocol::Tcp, 40)
}

#[test]
fn tcp_syn_fields_read_as_captured() {
    let l = LinkRepr::parse(&TCP_SYN).expect("Ethernet");
    assert_eq!((l.dst, l.src, l.ethertype), (GUEST_MAC, CLIENT_MAC, 0x0800));
    let ip = Ipv4Packet::new_checked(&TCP_SYN[ETH..]).expect("IPv4");
    assert_eq!(
        (ip.ident(), ip.dont_frag(), ip.total_len()),
        (SYN_IP_IDENT, true, 60)
    );
    assert_eq!(
        (ip.next_header(), ip.src_addr(), ip.dst_addr()),
        (IpProtocol::Tcp, CLIENT_V4, GUEST_V4)
    );
    assert!(ip.verify_checksum());
    let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
    assert_eq!((tcp.src_port(), tcp.dst_port()), (SYN_SRC_PORT, 5432));
    assert_eq!(tcp.seq_number(), TcpSeqNumber(SYN_ISN as i32));
    assert!(tcp.syn() && !tcp.ack() && !tcp.fin() && !tcp.rst() && !tcp.psh());
    assert_eq!(
        (tcp.header_len(), tcp.window_len(), tcp.urgent_at()),
        (40, 64240, 0)
    );
    // The checksum was left to the offload: it holds the pseudo-header sum and does not verify.
    assert_eq!(tcp.checksum(), 0x8cc2);
    assert_eq!(tcp.checksum(), syn_partial_checksum());
    assert!(!tcp.verify_checksum(&CLIENT_V4.into(), &GUEST_V4.into()));
    let mut options = tcp.options();
    let mut seen = Vec::new();
    while !options.is_empty() {
        let (rest, option) = TcpOption::parse(options).expect("well-formed options");
        seen.push(option);
        options = rest;
    }
    assert_eq!(
        seen,
        [
            TcpOption::MaxSegmentSize(1460),
            TcpOption::SackPermitted,
            TcpOption::TimeStamp {
                tsval: SYN_TSVAL,
                tsecr: 0
            },
            TcpOption::NoOperation,
            TcpOption::WindowScale(10),
        ]
    );
    assert!(tcp.payload().is_empty());
}

#[test]
fn tcp_syn_built_field_by_field_matches_capture() {
    let mut frame = [0u8; 74];
    client_link(GUEST_MAC, EthernetProtocol::Ipv4).emit(&mut frame);
    construct_ipv4(
        &mut frame,
        SYN_IP_IDENT,
        IpProtocol::Tcp,
        CLIENT_V4,
        GUEST_V4,
    );
    let mut tcp = TcpPacket::new_unchecked(&mut frame[IPV4..]);
    tcp.set_src_port(SYN_SRC_PORT);
    tcp.set_dst_port(5432);
    tcp.set_seq_number(TcpSeqNumber(SYN_ISN as i32));
    tcp.set_ack_number(TcpSeqNumber(0));
    tcp.set_header_len(40);
    tcp.clear_flags();
    tcp.set_syn(true);
    tcp.set_window_len(64240);
    tcp.set_urgent_at(0);
    linux_syn_options(tcp.options_mut());
    tcp.set_checksum(syn_partial_checksum());
    assert_eq!(frame, TCP_SYN);
}

#[test]
fn tcp_syn_parses_to_repr() {
    assert_eq!(
        LinkRepr::parse(&TCP_SYN),
        Ok(client_link(GUEST_MAC, EthernetProtocol::Ipv4))
    );
    let ip = Ipv4Packet::new_checked(&TCP_SYN[ETH..]).expect("IPv4");
    assert_eq!(
        Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()),
        Ok(syn_ip_repr())
    );
    let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
    let (src, dst) = (IpAddress::from(CLIENT_V4), IpAddress::from(GUEST_V4));
    // With checksum checks on, the offloaded SYN is refused; the fields parse without them.
    assert!(TcpRepr::parse(&tcp, &src, &dst, &ChecksumCapabilities::default()).is_err());
    assert_eq!(TcpRepr::parse(&tcp, &src, &dst, &ignored()), Ok(syn_repr()));
}

#[test]
fn tcp_syn_repr_emits_captured_bytes() {
    let mut frame = [0u8; 74];
    let l = client_link(GUEST_MAC, EthernetProtocol::Ipv4);
    emit_ipv4(&mut frame, &l, &syn_ip_repr(), SYN_IP_IDENT);
    let repr = syn_repr();
    assert_eq!(repr.buffer_len(), 40);
    let (src, dst) = (IpAddress::from(CLIENT_V4), IpAddress::from(GUEST_V4));
    let mut tcp = TcpPacket::new_unchecked(&mut frame[IPV4..]);
    repr.emit(&mut tcp, &src, &dst, &ignored());
    // smoltcp writes the same options in its own order (MSS, window scale, SACK permitted,
    // timestamps, end of list); Linux's order is put back here.
    linux_syn_options(tcp.options_mut());
    tcp.set_checksum(syn_partial_checksum());
    assert_eq!(frame, TCP_SYN);
}

#[test]
fn tcp_syn_in_smoltcps_option_order_parses_to_the_same_repr() {
    let mut frame = [0u8; 74];
    let l = client_link(GUEST_MAC, EthernetProtocol::Ipv4);
    emit_ipv4(&mut frame, &l, &syn_ip_repr(), SYN_IP_IDENT);
    let (src, dst) = (IpAddress::from(CLIENT_V4), IpAddress::from(GUEST_V4));
    let caps = ChecksumCapabilities::default();
    syn_repr().emit(
        &mut TcpPacket::new_unchecked(&mut frame[IPV4..]),
        &src,
        &dst,
        &caps,
    );
    assert_ne!(frame[IPV4 + 20..], TCP_SYN[IPV4 + 20..]);
    let tcp = TcpPacket::new_checked(&frame[IPV4..]).expect("TCP");
    assert_eq!(TcpRepr::parse(&tcp, &src, &dst, &caps), Ok(syn_repr()));
}

#[test]
fn completing_the_offloaded_syn_checksum_gives_the_real_one() {
    let mut frame = TCP_SYN;
    // What the kernel puts in the virtio-net header of this frame on a PACKET_VNET_HDR socket.
    let mut hdr = VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        csum_start: IPV4 as u16,
        csum_offset: 16,
        ..VirtioNetHdr::NONE
    };
    checksum::complete(&mut frame, &mut hdr).expect("offsets inside the frame");
    assert!(!hdr.needs_checksum());
    let tcp = TcpPacket::new_checked(&frame[IPV4..]).expect("TCP");
    assert!(tcp.verify_checksum(&CLIENT_V4.into(), &GUEST_V4.into()));
    // tcpdump's "incorrect -> 0xb1a0".
    assert_eq!(tcp.checksum(), 0xb1a0);
}

// ---- UDP datagram ----

const UDP_IP_IDENT: u16 = 0x0d42;
const UDP_SRC_PORT: u16 = 51148;
const UDP_PAYLOAD: &[u8] = b"vmnap fixture\n";

fn udp_ip_repr() -> Ipv4Repr {
    Ipv4Repr {
        src_addr: CLIENT_V4,
        dst_addr: GUEST_V4,
        next_header: IpProtocol::Udp,
        payload_len: 8 + UDP_PAYLOAD.len(),
        hop_limit: 64,
    }
}

fn udp_repr() -> UdpRepr {
    UdpRepr {
        src_port: UDP_SRC_PORT,
        dst_port: 7,
    }
}

fn udp_partial_checksum() -> u16 {
    partial_checksum_v4(CLIENT_V4, GUEST_V4, IpProtocol::Udp, 8 + UDP_PAYLOAD.len())
}

#[test]
fn udp_datagram_fields_read_as_captured() {
    let l = LinkRepr::parse(&UDP_DATAGRAM).expect("Ethernet");
    assert_eq!((l.dst, l.src, l.ethertype), (GUEST_MAC, CLIENT_MAC, 0x0800));
    let ip = Ipv4Packet::new_checked(&UDP_DATAGRAM[ETH..]).expect("IPv4");
    assert_eq!(
        (ip.ident(), ip.dont_frag(), ip.total_len()),
        (UDP_IP_IDENT, true, 42)
    );
    assert_eq!(
        (ip.next_header(), ip.src_addr(), ip.dst_addr()),
        (IpProtocol::Udp, CLIENT_V4, GUEST_V4)
    );
    let udp = UdpPacket::new_checked(ip.payload()).expect("UDP");
    assert_eq!(
        (udp.src_port(), udp.dst_port(), udp.len()),
        (UDP_SRC_PORT, 7, 22)
    );
    assert_eq!(udp.checksum(), 0x8cbb);
    assert_eq!(udp.checksum(), udp_partial_checksum());
    assert!(!udp.verify_checksum(&CLIENT_V4.into(), &GUEST_V4.into()));
    assert_eq!(udp.payload(), UDP_PAYLOAD);
}

#[test]
fn udp_datagram_built_field_by_field_matches_capture() {
    let mut frame = [0u8; 56];
    client_link(GUEST_MAC, EthernetProtocol::Ipv4).emit(&mut frame);
    construct_ipv4(
        &mut frame,
        UDP_IP_IDENT,
        IpProtocol::Udp,
        CLIENT_V4,
        GUEST_V4,
    );
    let mut udp = UdpPacket::new_unchecked(&mut frame[IPV4..]);
    udp.set_src_port(UDP_SRC_PORT);
    udp.set_dst_port(7);
    udp.set_len(22);
    udp.payload_mut().copy_from_slice(UDP_PAYLOAD);
    udp.set_checksum(udp_partial_checksum());
    assert_eq!(frame, UDP_DATAGRAM);
}

#[test]
fn udp_datagram_parses_to_repr() {
    assert_eq!(
        LinkRepr::parse(&UDP_DATAGRAM),
        Ok(client_link(GUEST_MAC, EthernetProtocol::Ipv4))
    );
    let ip = Ipv4Packet::new_checked(&UDP_DATAGRAM[ETH..]).expect("IPv4");
    assert_eq!(
        Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()),
        Ok(udp_ip_repr())
    );
    let udp = UdpPacket::new_checked(ip.payload()).expect("UDP");
    let (src, dst) = (IpAddress::from(CLIENT_V4), IpAddress::from(GUEST_V4));
    assert!(UdpRepr::parse(&udp, &src, &dst, &ChecksumCapabilities::default()).is_err());
    assert_eq!(UdpRepr::parse(&udp, &src, &dst, &ignored()), Ok(udp_repr()));
}

#[test]
fn udp_datagram_repr_emits_captured_bytes() {
    let mut frame = [0u8; 56];
    let l = client_link(GUEST_MAC, EthernetProtocol::Ipv4);
    emit_ipv4(&mut frame, &l, &udp_ip_repr(), UDP_IP_IDENT);
    let (src, dst) = (IpAddress::from(CLIENT_V4), IpAddress::from(GUEST_V4));
    let mut udp = UdpPacket::new_unchecked(&mut frame[IPV4..]);
    udp_repr().emit(
        &mut udp,
        &src,
        &dst,
        UDP_PAYLOAD.len(),
        |p| p.copy_from_slice(UDP_PAYLOAD),
        &ignored(),
    );
    udp.set_checksum(udp_partial_checksum());
    assert_eq!(frame, UDP_DATAGRAM);
}

#[test]
fn completing_the_offloaded_udp_checksum_gives_the_real_one() {
    let mut frame = UDP_DATAGRAM;
    let mut hdr = VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        csum_start: IPV4 as u16,
        csum_offset: 6,
        ..VirtioNetHdr::NONE
    };
    checksum::complete(&mut frame, &mut hdr).expect("offsets inside the frame");
    let udp = UdpPacket::new_checked(&frame[IPV4..]).expect("UDP");
    assert!(udp.verify_checksum(&CLIENT_V4.into(), &GUEST_V4.into()));
    // tcpdump's "bad udp cksum 0x8cbb -> 0x9d10".
    assert_eq!(udp.checksum(), 0x9d10);
}

// ---- 802.1Q: the captured frames with a tag put back, as the daemon's sockets do ----

#[test]
fn every_captured_frame_round_trips_through_link_repr_tagged_and_untagged() {
    for frame in [
        &ARP_REQUEST[..],
        &ARP_REPLY,
        &ICMP_ECHO_REQUEST,
        &ICMPV6_ECHO_REQUEST,
        &NEIGHBOR_SOLICIT,
        &TCP_SYN,
        &UDP_DATAGRAM,
    ] {
        let repr = LinkRepr::parse(frame).expect("Ethernet");
        let mut out = vec![0u8; repr.header_len()];
        repr.emit(&mut out);
        assert_eq!(out, frame[..ETH]);

        let mut buf = vec![0u8; frame.len() + 4];
        buf[..frame.len()].copy_from_slice(frame);
        let tci = (3 << 13) | 42;
        let len = vmnap_wire::vlan::insert_tag(&mut buf, frame.len(), 0x8100, tci)
            .expect("room for the tag");
        let tagged = LinkRepr::parse(&buf[..len]).expect("tagged Ethernet");
        assert_eq!(
            tagged,
            LinkRepr {
                vlan: 42,
                priority: Some(3 << 1),
                ..repr
            }
        );
        assert_eq!(&buf[18..len], &frame[ETH..], "the payload follows the tag");
        let mut out = vec![0u8; tagged.header_len()];
        assert_eq!(tagged.emit(&mut out), 18);
        assert_eq!(out, buf[..18]);
    }
}

/// Regression: a priority tag with VID 0 and PCP 0 was read as no tag at all, so the payload
/// was taken from byte 14 (the TCI) instead of byte 18. Found by the `parse_frame` fuzz
/// target (`fuzz/seeds/parse_frame/regress-vid0-tag-qinq`).
#[test]
fn vid_0_pcp_0_tag_is_still_a_tag() {
    let mut buf = [0u8; 98 + 4];
    buf[..98].copy_from_slice(&ICMP_ECHO_REQUEST);
    let len = vmnap_wire::vlan::insert_tag(&mut buf, 98, 0x8100, 0x0000).expect("room");
    let link = LinkRepr::parse(&buf[..len]).expect("tagged Ethernet");
    assert_eq!(link.ethertype, 0x0800);
    assert_eq!(link.header_len(), 18, "the frame has a 4-byte tag");
}
