// The harness of the `parse_frame` fuzz target, shared with `crates/wire/tests/fuzz_seeds.rs`
// (both `include!` this file).
//
// Input: a frame. The link header goes through `LinkRepr::parse`, the payload through the
// smoltcp views and `Repr`s vmnap relies on (checksums ignored, as the core reads frames
// whose checksums may be left to the offload). Besides "does not panic", a parsed link
// header and a parsed ARP packet must emit back to the bytes they came from.

use smoltcp::phy::ChecksumCapabilities;
use vmnap_wire::smol::{
    ArpPacket, ArpRepr, EthernetProtocol, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr,
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpOption, TcpPacket,
    TcpRepr, UdpPacket, UdpRepr,
};
use vmnap_wire::vlan::LinkRepr;

pub fn run(frame: &[u8]) {
    let Ok(link) = LinkRepr::parse(frame) else {
        return;
    };
    let header = link.header_len();
    let mut out = vec![0u8; header];
    assert_eq!(link.emit(&mut out), header);
    let tagged = frame.get(12..14) == Some(&[0x81, 0x00][..]);
    assert_eq!(
        tagged,
        header == 18,
        "a tag, whatever its TCI, makes an 18-byte header"
    );
    assert_eq!(
        LinkRepr::parse(&out),
        Ok(link),
        "the link header round-trips"
    );
    assert_eq!(out[..], frame[..header], "the header's bytes round-trip");
    let Some(payload) = frame.get(header..) else {
        return;
    };
    let caps = ChecksumCapabilities::ignored();
    match EthernetProtocol::from(link.ethertype) {
        EthernetProtocol::Arp => {
            if let Ok(packet) = ArpPacket::new_checked(payload) {
                if let Ok(repr) = ArpRepr::parse(&packet) {
                    let mut out = vec![0u8; repr.buffer_len()];
                    repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
                    assert_eq!(out, payload[..repr.buffer_len()], "ARP round-trips");
                }
            }
        }
        EthernetProtocol::Ipv4 => {
            let Ok(packet) = Ipv4Packet::new_checked(payload) else {
                return;
            };
            let _ = packet.verify_checksum();
            if Ipv4Repr::parse(&packet, &caps).is_err() {
                return;
            }
            let (src, dst) = (packet.src_addr().into(), packet.dst_addr().into());
            transport(packet.next_header(), packet.payload(), &src, &dst, &caps);
            if packet.next_header() == IpProtocol::Icmp {
                if let Ok(icmp) = Icmpv4Packet::new_checked(packet.payload()) {
                    let _ = icmp.verify_checksum();
                    let _ = Icmpv4Repr::parse(&icmp, &caps);
                }
            }
        }
        EthernetProtocol::Ipv6 => {
            let Ok(packet) = Ipv6Packet::new_checked(payload) else {
                return;
            };
            if Ipv6Repr::parse(&packet).is_err() {
                return;
            }
            let (s6, d6) = (packet.src_addr(), packet.dst_addr());
            let (src, dst) = (s6.into(), d6.into());
            transport(packet.next_header(), packet.payload(), &src, &dst, &caps);
            if packet.next_header() == IpProtocol::Icmpv6 {
                if let Ok(icmp) = Icmpv6Packet::new_checked(packet.payload()) {
                    let _ = icmp.verify_checksum(&s6, &d6);
                    // Neighbour discovery included.
                    let _ = Icmpv6Repr::parse(&s6, &d6, &icmp, &caps);
                }
            }
        }
        _ => {}
    }
}

fn transport(
    proto: IpProtocol,
    bytes: &[u8],
    src: &IpAddress,
    dst: &IpAddress,
    caps: &ChecksumCapabilities,
) {
    match proto {
        IpProtocol::Tcp => {
            let Ok(packet) = TcpPacket::new_checked(bytes) else {
                return;
            };
            let _ = packet.verify_checksum(src, dst);
            let mut options = packet.options();
            while !options.is_empty() {
                match TcpOption::parse(options) {
                    Ok((_, TcpOption::EndOfList)) | Err(_) => break,
                    Ok((rest, _)) => options = rest,
                }
            }
            let _ = TcpRepr::parse(&packet, src, dst, caps);
        }
        IpProtocol::Udp => {
            let Ok(packet) = UdpPacket::new_checked(bytes) else {
                return;
            };
            let _ = packet.verify_checksum(src, dst);
            let _ = UdpRepr::parse(&packet, src, dst, caps);
        }
        _ => {}
    }
}
