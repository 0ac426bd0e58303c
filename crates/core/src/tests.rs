//! Scripted conversations with the surrogate, in virtual time.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use vmnap_wire::smol::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet,
    Icmpv6Repr, IpAddress, Ipv4Packet, Ipv6Packet, NdiscRepr, TcpPacket, UdpPacket,
};
use vmnap_wire::vlan::LinkRepr;

use crate::classify::{self, Net, Transport as T};
use crate::respond::{self, Route, Segment};
use crate::*;

mod admission;
mod health;
mod sequence;

const GUEST_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 1, 1]);
const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0xcc, 1]);
const GUEST_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const OTHER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);
const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

fn spec(vlan: u16) -> GuestSpec {
    GuestSpec {
        vlan,
        ipv6: vec![GUEST_V6],
        wake_on: vec![
            PortRule {
                transport: Transport::Tcp,
                port: 80,
            },
            PortRule {
                transport: Transport::Udp,
                port: 9000,
            },
        ],
        answers: Answers {
            tcp_echo: true,
            udp_echo: true,
            ..Answers::DEFAULT
        },
        ..GuestSpec::new("web1", GUEST_MAC, GUEST_V4)
    }
}

/// A surrogate with one guest, asleep since `t = 0`.
fn asleep(vlan: u16) -> (Surrogate, GuestId) {
    let mut s = Surrogate::new(7);
    let id = s.add_guest(spec(vlan)).expect("fresh surrogate");
    s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
        .expect("awake guest");
    (s, id)
}

fn link(vlan: u16, dst: EthernetAddress) -> LinkRepr {
    LinkRepr::new(dst, CLIENT_MAC, vlan, 0)
}

fn arp_request(vlan: u16, target: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: CLIENT_MAC,
        source_protocol_addr: CLIENT_V4,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let l = LinkRepr {
        ethertype: 0x0806,
        ..link(vlan, EthernetAddress::BROADCAST)
    };
    let mut out = vec![0u8; l.header_len() + repr.buffer_len()];
    let at = l.emit(&mut out);
    repr.emit(&mut ArpPacket::new_unchecked(&mut out[at..]));
    out
}

fn to_guest_v4(vlan: u16) -> Route {
    Route::V4 {
        link: link(vlan, GUEST_MAC),
        src: CLIENT_V4,
        dst: GUEST_V4,
    }
}

fn to_guest_v6() -> Route {
    Route::V6 {
        link: link(0, GUEST_MAC),
        src: CLIENT_V6,
        dst: GUEST_V6,
    }
}

fn ping_v4(vlan: u16, seq: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let repr = Icmpv4Repr::EchoRequest {
        ident: 0x1234,
        seq_no: seq,
        data: b"vmnap-ping",
    };
    // Build a request with the same machinery as replies, then flip the type.
    respond::echo_reply(&mut out, &to_guest_v4(vlan), 0x1234, seq, b"vmnap-ping");
    let at = LinkRepr::parse(&out).expect("built").header_len() + 20;
    let mut icmp = Icmpv4Packet::new_unchecked(&mut out[at..]);
    repr.emit(&mut icmp, &smoltcp::phy::ChecksumCapabilities::default());
    out
}

fn segment(route: &Route, seg: Segment<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    respond::tcp(&mut out, route, &seg);
    out
}

pub(super) fn syn(port: u16) -> Vec<u8> {
    segment(
        &to_guest_v4(0),
        Segment {
            src_port: 40000,
            dst_port: port,
            seq: 1000,
            syn: true,
            window: 64240,
            mss: Some(1460),
            ..Segment::default()
        },
    )
}

fn udp_v4(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    respond::udp(&mut out, &to_guest_v4(0), 5000, port, payload);
    out
}

fn handle(s: &mut Surrogate, at_ms: u64, frame: &[u8], r: &mut Recorder) {
    s.handle_frame(Instant::from_millis(at_ms), VirtioNetHdr::NONE, frame, r);
}

fn only_sent(r: &Recorder) -> Parsed {
    assert_eq!(
        r.sent.len(),
        1,
        "expected one frame out, got {}",
        r.sent.len()
    );
    Parsed(r.sent[0].clone())
}

struct Parsed(Vec<u8>);

impl Parsed {
    fn net(&self) -> Net<'_> {
        classify::parse(&self.0)
            .expect("the surrogate's frames parse")
            .net
    }
    fn link(&self) -> LinkRepr {
        LinkRepr::parse(&self.0).expect("the surrogate's frames parse")
    }
}

#[test]
fn sleeping_guest_arp_request_is_answered_with_guest_mac() {
    let (mut s, id) = asleep(0);
    let mut r = Recorder::default();
    handle(&mut s, 1, &arp_request(0, GUEST_V4), &mut r);
    let out = only_sent(&r);
    assert_eq!(out.link().src, GUEST_MAC);
    assert_eq!(out.link().dst, CLIENT_MAC);
    match out.net() {
        Net::Arp {
            op,
            sender_mac,
            sender_ip,
            target_ip,
        } => {
            assert_eq!(op, ArpOperation::Reply);
            assert_eq!(
                (sender_mac, sender_ip, target_ip),
                (GUEST_MAC, GUEST_V4, CLIENT_V4)
            );
        }
        other => panic!("not ARP: {other:?}"),
    }
    assert_eq!(r.verdicts, [(Some(id), Verdict::Answered(AnswerKind::Arp))]);
    assert!(r.wakes.is_empty());
    assert_eq!(s.queue_depth(id), Some((0, 0)));
}

#[test]
fn arp_for_another_host_is_ignored_and_never_wakes() {
    let (mut s, _) = asleep(0);
    let mut r = Recorder::default();
    handle(&mut s, 1, &arp_request(0, OTHER_V4), &mut r);
    assert!(r.sent.is_empty());
    assert!(r.wakes.is_empty());
    assert_eq!(
        r.verdicts,
        [(None, Verdict::Ignored(IgnoreReason::NotForSleepingGuest))]
    );
}

#[test]
fn an_awake_guest_is_answered_for_a_sleeping_one_and_wakes_it() {
    // The client is a guest of the same surrogate, awake: its frames are anyone's.
    let (mut s, id) = asleep(0);
    let peer = s
        .add_guest(GuestSpec::new("db1", CLIENT_MAC, CLIENT_V4))
        .expect("a second guest");
    let mut r = Recorder::default();
    handle(&mut s, 1, &arp_request(0, GUEST_V4), &mut r);
    handle(&mut s, 2, &ping_v4(0, 1), &mut r);
    assert_eq!(r.sent.len(), 2, "{:?}", r.verdicts);
    assert!(r.wakes.is_empty());
    handle(&mut s, 3, &syn(80), &mut r);
    assert_eq!(r.wakes.len(), 1, "{:?}", r.verdicts);
    assert_eq!(r.wakes[0].0, id);
    assert_eq!(s.state(peer), Some(GuestState::Awake));
}

#[test]
fn awake_guest_gets_no_answers() {
    let mut s = Surrogate::new(7);
    let id = s.add_guest(spec(0)).expect("fresh");
    let mut r = Recorder::default();
    handle(&mut s, 1, &arp_request(0, GUEST_V4), &mut r);
    handle(&mut s, 2, &ping_v4(0, 1), &mut r);
    handle(&mut s, 3, &syn(80), &mut r);
    assert!(r.sent.is_empty());
    assert!(r.wakes.is_empty());
    assert!(
        r.verdicts
            .iter()
            .all(|(_, v)| matches!(v, Verdict::Ignored(_))),
        "{:?}",
        r.verdicts
    );
    assert_eq!(s.state(id), Some(GuestState::Awake));
}

#[test]
fn guest_on_vlan_10_is_answered_only_on_vlan_10() {
    let (mut s, id) = asleep(10);
    let mut r = Recorder::default();
    handle(&mut s, 1, &arp_request(0, GUEST_V4), &mut r);
    handle(&mut s, 2, &arp_request(20, GUEST_V4), &mut r);
    handle(&mut s, 3, &ping_v4(0, 1), &mut r);
    assert!(r.sent.is_empty(), "answered off its VLAN");
    r.take();
    handle(&mut s, 4, &arp_request(10, GUEST_V4), &mut r);
    let out = only_sent(&r);
    assert_eq!(out.link().vlan, 10, "the answer carries the guest's tag");
    r.take();
    handle(&mut s, 5, &ping_v4(10, 1), &mut r);
    assert_eq!(only_sent(&r).link().vlan, 10);
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Answered(AnswerKind::IcmpEcho))]
    );
}

#[test]
fn ping_is_answered_with_the_same_ident_sequence_and_data() {
    let (mut s, _) = asleep(0);
    let mut r = Recorder::default();
    handle(&mut s, 1, &ping_v4(0, 42), &mut r);
    let out = only_sent(&r);
    let at = out.link().header_len();
    let ip = Ipv4Packet::new_checked(&out.0[at..]).expect("IPv4");
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GUEST_V4, CLIENT_V4));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).expect("ICMP");
    assert!(icmp.verify_checksum());
    let repr = Icmpv4Repr::parse(&icmp, &Default::default()).expect("echo reply");
    assert_eq!(
        repr,
        Icmpv4Repr::EchoReply {
            ident: 0x1234,
            seq_no: 42,
            data: b"vmnap-ping"
        }
    );
}

#[test]
fn ping_with_a_bad_checksum_is_dropped_and_counted() {
    let (mut s, id) = asleep(0);
    let mut frame = ping_v4(0, 1);
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    let mut r = Recorder::default();
    handle(&mut s, 1, &frame, &mut r);
    assert!(r.sent.is_empty());
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Dropped(DropReason::BadChecksum))]
    );
    // The same frame with the offload mark is not checked: its checksum was never computed.
    let mut r = Recorder::default();
    let partial = VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        ..VirtioNetHdr::NONE
    };
    s.handle_frame(Instant::from_millis(2), partial, &frame, &mut r);
    assert_eq!(r.sent.len(), 1);
}

fn neighbor_solicit(dst: Ipv6Addr, dst_mac: EthernetAddress, src: Ipv6Addr) -> Vec<u8> {
    let repr = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: GUEST_V6,
        lladdr: (!src.is_unspecified()).then(|| CLIENT_MAC.into()),
    });
    let route = Route::V6 {
        link: link(0, dst_mac),
        src,
        dst,
    };
    let mut out = Vec::new();
    // An echo reply of the right length gives the headers; the NS is written over it.
    respond::echo_reply(&mut out, &route, 0, 0, &vec![0; repr.buffer_len() - 8]);
    let at = LinkRepr::parse(&out).expect("built").header_len();
    let mut ip = Ipv6Packet::new_unchecked(&mut out[at..]);
    ip.set_hop_limit(255);
    let mut icmp = Icmpv6Packet::new_unchecked(&mut out[at + 40..]);
    repr.emit(&src, &dst, &mut icmp, &Default::default());
    out
}

#[test]
fn solicited_node_neighbor_solicitation_is_answered() {
    let (mut s, id) = asleep(0);
    let group = classify::solicited_node(GUEST_V6);
    let mut r = Recorder::default();
    handle(
        &mut s,
        1,
        &neighbor_solicit(
            group,
            EthernetAddress([0x33, 0x33, 0xff, 0, 0, 0x11]),
            CLIENT_V6,
        ),
        &mut r,
    );
    let out = only_sent(&r);
    assert_eq!((out.link().src, out.link().dst), (GUEST_MAC, CLIENT_MAC));
    let at = out.link().header_len();
    let ip = Ipv6Packet::new_checked(&out.0[at..]).expect("IPv6");
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.hop_limit()),
        (GUEST_V6, CLIENT_V6, 255)
    );
    let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("ICMPv6");
    assert!(icmp.verify_checksum(&GUEST_V6, &CLIENT_V6));
    match Icmpv6Repr::parse(&GUEST_V6, &CLIENT_V6, &icmp, &Default::default()).expect("NA") {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr,
        }) => {
            assert_eq!(target_addr, GUEST_V6);
            assert!(flags.contains(vmnap_wire::smol::NdiscNeighborFlags::SOLICITED));
            assert_eq!(
                lladdr.map(|l| l.as_bytes().to_vec()),
                Some(GUEST_MAC.as_bytes().to_vec())
            );
        }
        other => panic!("not an NA: {other:?}"),
    }
    assert_eq!(r.verdicts, [(Some(id), Verdict::Answered(AnswerKind::Ndp))]);
}

#[test]
fn duplicate_address_detection_is_defended_to_all_nodes() {
    let (mut s, _) = asleep(0);
    let group = classify::solicited_node(GUEST_V6);
    let mut r = Recorder::default();
    let ns = neighbor_solicit(
        group,
        EthernetAddress([0x33, 0x33, 0xff, 0, 0, 0x11]),
        Ipv6Addr::UNSPECIFIED,
    );
    handle(&mut s, 1, &ns, &mut r);
    let out = only_sent(&r);
    assert_eq!(out.link().dst, EthernetAddress([0x33, 0x33, 0, 0, 0, 1]));
    match out.net() {
        Net::Ipv6 { dst, .. } => assert_eq!(dst, "ff02::1".parse::<Ipv6Addr>().expect("literal")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ping6_is_answered() {
    let (mut s, id) = asleep(0);
    let mut out = Vec::new();
    respond::echo_reply(&mut out, &to_guest_v6(), 7, 9, b"six");
    let at = LinkRepr::parse(&out).expect("built").header_len() + 40;
    let repr = Icmpv6Repr::EchoRequest {
        ident: 7,
        seq_no: 9,
        data: b"six",
    };
    repr.emit(
        &CLIENT_V6,
        &GUEST_V6,
        &mut Icmpv6Packet::new_unchecked(&mut out[at..]),
        &Default::default(),
    );
    let mut r = Recorder::default();
    handle(&mut s, 1, &out, &mut r);
    let reply = only_sent(&r);
    let ip = Ipv6Packet::new_checked(&reply.0[14..]).expect("IPv6");
    let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("ICMPv6");
    assert_eq!(
        Icmpv6Repr::parse(&GUEST_V6, &CLIENT_V6, &icmp, &Default::default()).expect("checksum ok"),
        Icmpv6Repr::EchoReply {
            ident: 7,
            seq_no: 9,
            data: b"six"
        }
    );
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Answered(AnswerKind::Icmpv6Echo))]
    );
}

fn tcp_of(frame: &[u8]) -> (u16, u16, u32, Option<u32>, bool, bool, bool, Vec<u8>) {
    let at = LinkRepr::parse(frame).expect("built").header_len();
    let ip = Ipv4Packet::new_checked(&frame[at..]).expect("IPv4");
    let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
    assert!(tcp.verify_checksum(
        &IpAddress::Ipv4(ip.src_addr()),
        &IpAddress::Ipv4(ip.dst_addr())
    ));
    (
        tcp.src_port(),
        tcp.dst_port(),
        tcp.seq_number().0 as u32,
        tcp.ack().then(|| tcp.ack_number().0 as u32),
        tcp.syn(),
        tcp.fin(),
        tcp.rst(),
        tcp.payload().to_vec(),
    )
}

#[test]
fn syn_to_a_closed_port_gets_rst_ack_and_does_not_wake() {
    let (mut s, id) = asleep(0);
    let mut r = Recorder::default();
    handle(&mut s, 1, &syn(5432), &mut r);
    let (sport, dport, seq, ack, syn, _, rst, _) = tcp_of(&only_sent(&r).0);
    assert_eq!(
        (sport, dport, seq, ack, syn, rst),
        (5432, 40000, 0, Some(1001), false, true)
    );
    assert!(r.wakes.is_empty());
    assert_eq!(s.state(id), Some(GuestState::Sleeping));
}

#[test]
fn syn_to_a_wake_port_is_queued_and_wakes_the_guest() {
    let (mut s, id) = asleep(0);
    let mut r = Recorder::default();
    let frame = syn(80);
    handle(&mut s, 1, &frame, &mut r);
    assert!(r.sent.is_empty());
    assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 80 })]);
    assert_eq!(s.state(id), Some(GuestState::Waking { port_up: false }));
    // Nothing is answered while waking; everything is held, in order.
    handle(&mut s, 2, &arp_request(0, GUEST_V4), &mut r);
    handle(&mut s, 3, &ping_v4(0, 1), &mut r);
    assert!(r.sent.is_empty());
    let queued: Vec<_> = s.held(id).map(|f| f.bytes.to_vec()).collect();
    assert_eq!(queued, [frame, arp_request(0, GUEST_V4), ping_v4(0, 1)]);
}

#[test]
fn udp_to_a_wake_port_wakes_and_other_udp_is_queued_quietly() {
    let (mut s, id) = asleep(0);
    let mut r = Recorder::default();
    handle(&mut s, 1, &udp_v4(5353, b"x"), &mut r);
    assert!(r.wakes.is_empty());
    handle(&mut s, 2, &udp_v4(9000, b"0001"), &mut r);
    assert_eq!(r.wakes, [(id, WakeCause::Udp { port: 9000 })]);
    assert_eq!(s.queue_depth(id).map(|d| d.0), Some(2));
}

#[test]
fn udp_echo_on_port_7_answers_without_waking() {
    let (mut s, _) = asleep(0);
    let mut r = Recorder::default();
    handle(&mut s, 1, &udp_v4(7, b"hello"), &mut r);
    let out = only_sent(&r);
    let ip = Ipv4Packet::new_checked(&out.0[14..]).expect("IPv4");
    let udp = UdpPacket::new_checked(ip.payload()).expect("UDP");
    assert!(udp.verify_checksum(&IpAddress::Ipv4(GUEST_V4), &IpAddress::Ipv4(CLIENT_V4)));
    assert_eq!(
        (udp.src_port(), udp.dst_port(), udp.payload()),
        (7, 5000, &b"hello"[..])
    );
    assert!(r.wakes.is_empty());
}

#[test]
fn tcp_echo_conversation_handshake_data_and_close() {
    let (mut s, id) = asleep(0);
    let route = to_guest_v4(0);
    let seg = |seq, ack, syn, fin, payload: &'static [u8]| {
        segment(
            &route,
            Segment {
                src_port: 40001,
                dst_port: 7,
                seq,
                ack,
                syn,
                fin,
                window: 64240,
                payload,
                ..Segment::default()
            },
        )
    };
    let mut r = Recorder::default();
    handle(&mut s, 1, &seg(500, None, true, false, b""), &mut r);
    let (_, _, iss, ack, syn, _, _, _) = tcp_of(&only_sent(&r).0);
    assert!(syn);
    assert_eq!(ack, Some(501));
    r.take();
    handle(
        &mut s,
        2,
        &seg(501, Some(iss + 1), false, false, b""),
        &mut r,
    );
    assert!(
        r.sent.is_empty(),
        "a bare ACK of the handshake needs no answer"
    );
    handle(
        &mut s,
        3,
        &seg(501, Some(iss + 1), false, false, b"ping\n"),
        &mut r,
    );
    let (_, _, seq, ack, _, _, _, data) = tcp_of(&only_sent(&r).0);
    assert_eq!(
        (seq, ack, data.as_slice()),
        (iss + 1, Some(506), &b"ping\n"[..])
    );
    r.take();
    handle(
        &mut s,
        4,
        &seg(506, Some(iss + 6), false, true, b""),
        &mut r,
    );
    let (_, _, seq, ack, _, fin, _, _) = tcp_of(&only_sent(&r).0);
    assert_eq!((seq, ack, fin), (iss + 6, Some(507), true));
    r.take();
    handle(
        &mut s,
        5,
        &seg(507, Some(iss + 7), false, false, b""),
        &mut r,
    );
    assert!(r.sent.is_empty());
    assert!(r.wakes.is_empty(), "the echo service never wakes the guest");
    assert_eq!(s.state(id), Some(GuestState::Sleeping));
    assert_eq!(s.poll_at(), None, "the connection is gone");
}

/// What a surrogate sent and decided, in order.
type Transcript = (Vec<Vec<u8>>, Vec<(Option<GuestId>, Verdict)>);

/// A conversation of pings, an echo handshake from 50 ports and a wake, replayed into a fresh
/// surrogate with `seed`.
fn conversation(seed: u64) -> Transcript {
    let mut s = Surrogate::new(seed);
    let id = s.add_guest(spec(0)).expect("fresh surrogate");
    s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
        .expect("awake guest");
    let route = to_guest_v4(0);
    let mut r = Recorder::default();
    for port in 40_000..40_050u16 {
        let syn = Segment {
            src_port: port,
            dst_port: 7,
            seq: u32::from(port) * 1000,
            syn: true,
            window: 64240,
            ..Segment::default()
        };
        handle(
            &mut s,
            u64::from(port - 39_999),
            &segment(&route, syn),
            &mut r,
        );
        handle(&mut s, 100, &ping_v4(0, port), &mut r);
    }
    handle(&mut s, 200, &syn(80), &mut r);
    (r.sent, r.verdicts)
}

#[test]
fn one_seed_gives_the_same_answers_and_another_seed_other_sequence_numbers() {
    let (sent, verdicts) = conversation(7);
    assert_eq!(sent.len(), 100, "50 SYN-ACKs and 50 echo replies");
    assert_eq!(
        conversation(7),
        (sent.clone(), verdicts),
        "the same seed, the same run"
    );
    // Another seed: the same answers but for the initial sequence numbers.
    let other = conversation(8).0;
    // Untagged IPv4 frames: the protocol is byte 23.
    let syn_acks = |frames: &[Vec<u8>]| -> Vec<u32> {
        frames
            .iter()
            .filter(|f| f[23] == 6)
            .map(|f| tcp_of(f))
            .filter(|t| t.4)
            .map(|t| t.2)
            .collect()
    };
    let (a, b) = (syn_acks(&sent), syn_acks(&other));
    assert_eq!(a.len(), 50);
    assert!(a.iter().zip(&b).all(|(x, y)| x != y), "{a:?}\n{b:?}");
}

#[test]
fn tcp_echo_retransmits_unacknowledged_data() {
    let (mut s, _) = asleep(0);
    let route = to_guest_v4(0);
    let seg = |seq, ack, syn, payload: &'static [u8]| {
        segment(
            &route,
            Segment {
                src_port: 40002,
                dst_port: 7,
                seq,
                ack,
                syn,
                window: 64240,
                payload,
                ..Segment::default()
            },
        )
    };
    let mut r = Recorder::default();
    handle(&mut s, 0, &seg(1, None, true, b""), &mut r);
    let (_, _, iss, ..) = tcp_of(&r.sent[0]);
    handle(&mut s, 1, &seg(2, Some(iss + 1), false, b"abc"), &mut r);
    r.take();
    let due = s.poll_at().expect("data in flight");
    assert!(due <= Instant::from_millis(201));
    s.handle_timeout(due, &mut r);
    let (_, _, seq, _, _, _, _, data) = tcp_of(&only_sent(&r).0);
    assert_eq!((seq, data.as_slice()), (iss + 1, &b"abc"[..]));
}

#[test]
fn data_on_an_open_connection_wakes_but_a_keepalive_probe_is_answered() {
    let (mut s, id) = asleep(0);
    let route = to_guest_v4(0);
    let ka = segment(
        &route,
        Segment {
            src_port: 40003,
            dst_port: 22,
            seq: 999,
            ack: Some(5000),
            window: 501,
            timestamp: Some((777, 555)),
            ..Segment::default()
        },
    );
    let mut r = Recorder::default();
    // In the first seconds of sleep a bare ACK is a late acknowledgement: held, not answered.
    handle(&mut s, 1000, &ka, &mut r);
    assert!(r.sent.is_empty());
    assert_eq!(r.verdicts, [(Some(id), Verdict::Queued)]);
    r.take();
    handle(&mut s, 60_000, &ka, &mut r);
    let (sport, dport, seq, ack, ..) = tcp_of(&only_sent(&r).0);
    assert_eq!((sport, dport, seq, ack), (22, 40003, 5000, Some(1000)));
    let out = &r.sent[0];
    let tcp = TcpPacket::new_checked(&out[34..]).expect("TCP");
    let ts = vmnap_wire::smol::TcpRepr::parse(
        &tcp,
        &IpAddress::Ipv4(GUEST_V4),
        &IpAddress::Ipv4(CLIENT_V4),
        &Default::default(),
    )
    .expect("valid")
    .timestamp
    .expect("timestamps echoed");
    assert_eq!((ts.tsval, ts.tsecr), (555, 777));
    // A second probe within a second is not answered again.
    r.take();
    handle(&mut s, 60_500, &ka, &mut r);
    assert!(r.sent.is_empty());
    assert!(r.wakes.is_empty());
    // Data wakes.
    let data = segment(
        &route,
        Segment {
            src_port: 40003,
            dst_port: 22,
            seq: 1000,
            ack: Some(5000),
            payload: b"ls\n",
            ..Segment::default()
        },
    );
    handle(&mut s, 61_000, &data, &mut r);
    assert_eq!(r.wakes, [(id, WakeCause::TcpData { port: 22 })]);
}

#[test]
fn broadcast_is_held_for_every_sleeping_guest_on_the_vlan_and_never_wakes() {
    let mut s = Surrogate::new(1);
    let a = s.add_guest(spec(0)).expect("fresh");
    let b = s
        .add_guest(GuestSpec {
            ipv6: vec![],
            ..GuestSpec::new("b", EthernetAddress([2, 0, 0, 0, 1, 2]), OTHER_V4)
        })
        .expect("distinct");
    let c = s
        .add_guest(GuestSpec {
            vlan: 5,
            ..GuestSpec::new("c", EthernetAddress([2, 0, 0, 0, 1, 3]), CLIENT_V4)
        })
        .expect("distinct");
    for id in [a, b, c] {
        s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
            .expect("awake");
    }
    let mut frame = Vec::new();
    respond::udp(
        &mut frame,
        &Route::V4 {
            link: link(0, EthernetAddress::BROADCAST),
            src: CLIENT_V4,
            dst: Ipv4Addr::BROADCAST,
        },
        68,
        67,
        b"dhcp",
    );
    let mut r = Recorder::default();
    handle(&mut s, 1, &frame, &mut r);
    assert_eq!(
        r.verdicts,
        [(Some(a), Verdict::Queued), (Some(b), Verdict::Queued)]
    );
    assert!(r.wakes.is_empty());
    assert_eq!(s.queue_depth(c), Some((0, 0)));
}

#[test]
fn multicast_past_its_share_is_dropped_and_counted_without_waking() {
    let mut s = Surrogate::new(1);
    let limits = QueueLimits {
        multicast_frames: 2,
        ..QueueLimits::default()
    };
    let id = s.add_guest(GuestSpec { limits, ..spec(0) }).expect("fresh");
    s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
        .expect("awake");
    let mut frame = Vec::new();
    respond::udp(
        &mut frame,
        &Route::V4 {
            link: link(0, EthernetAddress([1, 0, 0x5e, 0, 0, 0xfb])),
            src: CLIENT_V4,
            dst: Ipv4Addr::new(224, 0, 0, 251),
        },
        5353,
        5353,
        b"mdns",
    );
    let mut r = Recorder::default();
    for t in 0..3 {
        handle(&mut s, t, &frame, &mut r);
    }
    let verdicts: Vec<_> = r.verdicts.iter().map(|v| v.1).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Queued,
            Verdict::Queued,
            Verdict::Dropped(DropReason::MulticastQueueFull)
        ]
    );
    assert!(r.wakes.is_empty());
}

#[test]
fn queue_overflow_drops_the_newest_and_counts_it_without_a_wake() {
    let mut s = Surrogate::new(1);
    let limits = QueueLimits {
        frames: 3,
        ..QueueLimits::default()
    };
    let id = s.add_guest(GuestSpec { limits, ..spec(0) }).expect("fresh");
    s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
        .expect("awake");
    let mut r = Recorder::default();
    for n in 0..5u8 {
        handle(&mut s, u64::from(n), &udp_v4(5353, &[n]), &mut r);
    }
    let verdicts: Vec<_> = r.verdicts.iter().map(|v| v.1).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Queued,
            Verdict::Queued,
            Verdict::Queued,
            Verdict::Dropped(DropReason::QueueFull),
            Verdict::Dropped(DropReason::QueueFull)
        ]
    );
    assert!(
        r.wakes.is_empty(),
        "a flood of what wakes no one does not wake it by its volume"
    );
    let kept: Vec<u8> = s
        .held(id)
        .map(|f| *f.bytes.last().expect("payload"))
        .collect();
    assert_eq!(kept, [0, 1, 2], "the oldest frames are kept");
}

/// Everything the surrogate has to be done, oldest first.
fn actions(s: &mut Surrogate) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// The guest kernel's answer to an ARP probe from `from`.
fn probe_answer(from: EthernetAddress) -> Vec<u8> {
    let mut reply = Vec::new();
    respond::arp(
        &mut reply,
        ArpOperation::Reply,
        &LinkRepr::new(from, GUEST_MAC, 0, 0),
        GUEST_MAC,
        GUEST_V4,
        from,
        Ipv4Addr::UNSPECIFIED,
    );
    reply
}

/// The frames of the replays among `actions`, and how many probes there were.
fn replayed(actions: &[Action]) -> (Vec<Vec<u8>>, usize) {
    let mut frames = Vec::new();
    let mut probes = 0;
    for a in actions {
        match a {
            Action::Replay(_, run) => frames.extend(run.iter().map(|f| f.bytes.to_vec())),
            Action::Probe(..) => probes += 1,
            _ => {}
        }
    }
    (frames, probes)
}

#[test]
fn wake_sequence_relays_only_unicast_once_the_port_is_up() {
    let (mut s, id) = asleep(0);
    let mut r = Recorder::default();
    handle(&mut s, 1, &syn(80), &mut r);
    assert_eq!(actions(&mut s), [Action::Resume(id)]);
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        Instant::from_millis(2),
    )
    .expect("resuming");
    assert_eq!(actions(&mut s), [Action::Restore(id, Cut::PortDisabled)]);
    s.done(id, Done::Restored, Instant::from_millis(3))
        .expect("restoring");
    assert_eq!(s.phase(id), Some(Phase::Replaying));
    assert_eq!(replayed(&actions(&mut s)), (vec![syn(80)], 1));
    // Broadcasts reach the guest directly now; unicast still reaching us is relayed, once
    // the probe out is answered.
    handle(&mut s, 4, &arp_request(0, GUEST_V4), &mut r);
    handle(&mut s, 5, &udp_v4(9000, b"late"), &mut r);
    assert_eq!(s.held(id).count(), 1);
    assert!(actions(&mut s).is_empty());
    handle(
        &mut s,
        6,
        &probe_answer(EthernetAddress([2, 0, 0, 0, 0, 0])),
        &mut r,
    );
    assert_eq!(replayed(&actions(&mut s)), (vec![udp_v4(9000, b"late")], 1));
    handle(
        &mut s,
        7,
        &probe_answer(EthernetAddress([2, 0, 0, 0, 0, 0])),
        &mut r,
    );
    assert!(actions(&mut s).is_empty());
    // Quiet since the last relay (at 6 ms) for QUIET: the bridge is switched back.
    let quiet = Instant::from_millis(6) + crate::sequence::QUIET;
    assert_eq!(s.poll_at(), Some(quiet));
    s.handle_timeout(quiet, &mut r);
    assert_eq!(actions(&mut s), [Action::HandBack(id)]);
    s.done(id, Done::HandedBack, Instant::from_millis(9))
        .expect("handing back");
    assert_eq!(s.state(id), Some(GuestState::Awake));
    let report = WakeReport {
        cause: WakeCause::TcpSyn { port: 80 },
        took: Duration::from_millis(5),
        handed_back_after: Duration::from_millis(8),
        replayed: 2,
        failed_tries: 0,
    };
    assert_eq!(
        actions(&mut s),
        [Action::Notify(id, Notice::Awake { wake: Some(report) })]
    );
}

#[test]
fn failed_wake_stands_in_again_and_keeps_the_queue() {
    let (mut s, id) = asleep(0);
    let mut r = Recorder::default();
    handle(&mut s, 1, &syn(80), &mut r);
    assert_eq!(actions(&mut s), [Action::Resume(id)]);
    s.done(
        id,
        Done::Resumed {
            ok: false,
            new_port: false,
        },
        Instant::from_millis(1),
    )
    .expect("resuming");
    let retry_in = Duration::from_millis(100);
    assert_eq!(
        actions(&mut s),
        [Action::Notify(
            id,
            Notice::WakeFailed { tries: 1, retry_in }
        )]
    );
    assert_eq!(s.state(id), Some(GuestState::Sleeping));
    assert_eq!(s.queue_depth(id).map(|d| d.0), Some(1));
    r.take();
    handle(&mut s, 2, &ping_v4(0, 1), &mut r);
    assert_eq!(r.sent.len(), 1);
    // Traffic that would wake it does not hurry the retry; the retry comes on time.
    handle(&mut s, 3, &syn(80), &mut r);
    assert!(actions(&mut s).is_empty());
    assert_eq!(s.poll_at(), Some(Instant::from_millis(1) + retry_in));
    s.handle_timeout(Instant::from_millis(101), &mut r);
    assert_eq!(actions(&mut s), [Action::Resume(id)]);
    assert_eq!(s.held(id).count(), 2);
}

#[test]
fn falling_asleep_holds_unicast_and_leaves_broadcast_to_the_guest() {
    let mut s = Surrogate::new(1);
    let id = s.add_guest(spec(0)).expect("fresh");
    assert_eq!(s.sleep(id, Instant::ZERO), Ok(Asked::Started));
    let mut r = Recorder::default();
    handle(&mut s, 1, &ping_v4(0, 1), &mut r);
    handle(&mut s, 2, &arp_request(0, GUEST_V4), &mut r);
    assert!(r.sent.is_empty());
    assert_eq!(
        r.verdicts,
        [
            (Some(id), Verdict::Queued),
            (
                Some(id),
                Verdict::Ignored(IgnoreReason::GuestReceivesDirectly)
            )
        ]
    );
}

#[test]
fn conflicting_guests_are_refused() {
    let mut s = Surrogate::new(1);
    s.add_guest(spec(0)).expect("fresh");
    let same_mac = GuestSpec::new("x", GUEST_MAC, OTHER_V4);
    assert!(matches!(
        s.add_guest(same_mac),
        Err(AddGuestError::MacTaken { .. })
    ));
    let same_ip = GuestSpec::new("y", EthernetAddress([2, 0, 0, 0, 9, 9]), GUEST_V4);
    assert!(matches!(
        s.add_guest(same_ip),
        Err(AddGuestError::AddressTaken { .. })
    ));
    // The same addresses on another VLAN are another network.
    s.add_guest(GuestSpec { vlan: 3, ..spec(0) })
        .expect("other VLAN");
}

#[test]
fn malformed_frame_to_a_sleeping_guest_is_dropped_and_counted() {
    let (mut s, id) = asleep(0);
    let mut frame = ping_v4(0, 1);
    frame.truncate(20);
    let mut r = Recorder::default();
    handle(&mut s, 1, &frame, &mut r);
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Dropped(DropReason::Malformed))]
    );
}

#[test]
fn classify_reads_the_frames_the_responders_build() {
    match classify::parse(&syn(80)).expect("valid").net {
        Net::Ipv4 {
            transport: T::Tcp(seg),
            ..
        } => assert!(seg.syn && seg.dst_port == 80),
        other => panic!("{other:?}"),
    }
    let _ = Duration::ZERO;
}

proptest::proptest! {
    #[test]
    fn no_frame_makes_the_handler_panic(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        partial in proptest::bool::ANY,
    ) {
        let (mut s, _) = asleep(0);
        let mut frame = bytes;
        // Aim half the inputs at the guest so that they get past the MAC lookup.
        if frame.len() > 12 && frame[0] & 1 == 0 {
            frame[..6].copy_from_slice(GUEST_MAC.as_bytes());
        }
        let vnet = if partial { VirtioNetHdr { flags: 1, ..VirtioNetHdr::NONE } } else { VirtioNetHdr::NONE };
        s.handle_frame(Instant::ZERO, vnet, &frame, &mut Recorder::default());
    }
}

const SURROGATE_MAC: EthernetAddress = EthernetAddress([0x02, 0x76, 0x6e, 0, 0, 1]);

#[test]
fn barrier_probe_is_an_arp_probe_and_the_guests_reply_is_reported() {
    let (mut s, id) = asleep(0);
    s.set_probe_mac(SURROGATE_MAC);
    assert_eq!(
        s.barrier_probe(id, SURROGATE_MAC),
        None,
        "only while waking with the port up"
    );
    let probe = replaying(&mut s, id);
    let parsed = classify::parse(&probe).expect("valid");
    assert_eq!(
        (parsed.link.dst, parsed.link.src),
        (GUEST_MAC, SURROGATE_MAC)
    );
    match parsed.net {
        Net::Arp {
            op,
            sender_mac,
            sender_ip,
            target_ip,
        } => {
            assert_eq!(op, ArpOperation::Request);
            assert_eq!(
                (sender_mac, sender_ip, target_ip),
                (SURROGATE_MAC, Ipv4Addr::UNSPECIFIED, GUEST_V4)
            );
        }
        other => panic!("not ARP: {other:?}"),
    }
    // The guest's kernel answers the probe to the prober's MAC.
    let reply = probe_answer(SURROGATE_MAC);
    let mut r = Recorder::default();
    let unanswered = Instant::from_millis(3) + crate::sequence::PROBE_TIMEOUT;
    assert_eq!(s.poll_at(), Some(unanswered));
    handle(&mut s, 4, &reply, &mut r);
    assert!(r.sent.is_empty());
    // Answered: what remains is the wait for a quiet moment, which has begun at 3 ms.
    assert_eq!(
        s.poll_at(),
        Some(Instant::from_millis(3) + crate::sequence::QUIET)
    );
    // An answer to no probe out changes nothing.
    handle(&mut s, 5, &reply, &mut r);
    assert!(actions(&mut s).is_empty());
    assert_eq!(
        s.poll_at(),
        Some(Instant::from_millis(3) + crate::sequence::QUIET)
    );
}

/// Wakes the sleeping guest `id` (asked at 1 ms; resumed at 2, its port back at 3) and
/// returns the probe it is sent once its (empty) queue is replayed.
fn replaying(s: &mut Surrogate, id: GuestId) -> Vec<u8> {
    assert_eq!(
        s.wake(id, WakeCause::Requested, Instant::from_millis(1)),
        Ok(Asked::Started)
    );
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        Instant::from_millis(2),
    )
    .expect("resuming");
    s.done(id, Done::Restored, Instant::from_millis(3))
        .expect("restoring");
    let mut probes = actions(s).into_iter().filter_map(|a| match a {
        Action::Probe(_, probe) => Some(probe),
        _ => None,
    });
    probes.next().expect("a probe")
}

#[test]
fn ipv6_only_guest_gets_a_dad_probe_and_its_advertisement_is_the_barrier() {
    let mut s = Surrogate::new(1);
    let id = s
        .add_guest(GuestSpec {
            ipv4: vec![],
            ..spec(0)
        })
        .expect("fresh");
    s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
        .expect("awake");
    s.set_probe_mac(SURROGATE_MAC);
    let probe = replaying(&mut s, id);
    match classify::parse(&probe).expect("valid").net {
        Net::Ipv6 {
            src,
            transport:
                T::NeighborSolicit {
                    target,
                    source_lladdr,
                },
            hop_limit,
            ..
        } => {
            assert!(src.is_unspecified());
            assert_eq!((target, source_lladdr, hop_limit), (GUEST_V6, None, 255));
        }
        other => panic!("not an NS: {other:?}"),
    }
    let mut na = Vec::new();
    let route = Route::V6 {
        link: LinkRepr::new(EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), GUEST_MAC, 0, 0),
        src: GUEST_V6,
        dst: "ff02::1".parse().expect("literal"),
    };
    respond::neighbor_advert(&mut na, &route, GUEST_MAC, GUEST_V6, false);
    assert_eq!(
        s.poll_at(),
        Some(Instant::from_millis(3) + crate::sequence::PROBE_TIMEOUT),
        "a probe out"
    );
    let mut r = Recorder::default();
    handle(&mut s, 4, &na, &mut r);
    assert_eq!(
        s.poll_at(),
        Some(Instant::from_millis(3) + crate::sequence::QUIET)
    );
}

#[test]
fn frames_to_an_awake_guest_that_the_surrogate_could_answer_are_recognised() {
    let mut s = Surrogate::new(1);
    let check = HealthCheck {
        port: 8080,
        path: "/healthz".into(),
        status: 200,
        body: "ok".into(),
    };
    let id = s
        .add_guest(GuestSpec {
            health: vec![check],
            ..spec(0)
        })
        .expect("fresh");
    let health = segment(
        &to_guest_v4(0),
        Segment {
            src_port: 40000,
            dst_port: 8080,
            seq: 1,
            syn: true,
            ..Segment::default()
        },
    );
    for (what, frame) in [
        ("ARP for its address", arp_request(0, GUEST_V4)),
        ("a ping", ping_v4(0, 1)),
        ("a health check", health),
    ] {
        assert!(s.answerable_while_awake(id, &frame), "{what}");
    }
    for (what, frame) in [
        ("ARP for another host", arp_request(0, OTHER_V4)),
        ("a SYN to its service", syn(80)),
        ("a datagram", udp_v4(9000, b"x")),
        ("a ping on another VLAN", ping_v4(7, 1)),
        ("garbage", vec![1, 2, 3]),
    ] {
        assert!(!s.answerable_while_awake(id, &frame), "{what}");
    }
}

#[test]
fn requests_are_open_until_the_guest_answers_and_recent_ones_count() {
    use crate::inflight::Unanswered;
    let window = Duration::from_secs(10);
    let at = Instant::from_millis;
    let to_guest = |src_port, payload: &[u8], fin: bool| {
        segment(
            &to_guest_v4(0),
            Segment {
                src_port,
                dst_port: 80,
                seq: 1,
                ack: Some(1),
                fin,
                payload,
                ..Segment::default()
            },
        )
    };
    let from_guest = |dst_port, payload: &[u8]| {
        segment(
            &Route::V4 {
                link: link(0, CLIENT_MAC),
                src: GUEST_V4,
                dst: CLIENT_V4,
            },
            Segment {
                src_port: 80,
                dst_port,
                seq: 9,
                ack: Some(2),
                payload,
                ..Segment::default()
            },
        )
    };
    let mut u = Unanswered::new();
    u.observe(&to_guest(40000, b"", false), true, at(0));
    assert_eq!(u.count(at(0), window), 0, "an ACK asks for nothing");
    u.observe(&to_guest(40000, b"GET / HTTP/1.1\r\n", false), true, at(0));
    u.observe(&to_guest(40001, b"GET / HTTP/1.1\r\n", false), true, at(5));
    assert_eq!(u.count(at(10), window), 2);
    u.observe(&from_guest(40000, b""), false, at(11));
    assert_eq!(
        u.count(at(11), window),
        2,
        "the guest's bare ACK answers nothing"
    );
    u.observe(&from_guest(40000, b"HTTP/1.1 200 OK\r\n"), false, at(12));
    assert_eq!(u.count(at(12), window), 1, "the guest's data answers");
    u.observe(&from_guest(40001, b"HTTP/1.1 200 OK\r\n"), false, at(13));
    assert_eq!(u.count(at(13), window), 0);
    u.observe(&to_guest(40002, b"GET", false), true, at(20));
    u.observe(&to_guest(40002, b"", true), true, at(21));
    assert_eq!(u.count(at(21), window), 0, "the client's FIN closes it");
    u.observe(&to_guest(40003, b"GET", false), true, at(30));
    assert_eq!(u.count(at(30) + window, window), 1);
    assert_eq!(
        u.count(at(31) + window, window),
        0,
        "older than the window: forgotten"
    );
    for garbage in [vec![], vec![1, 2, 3], udp_v4(80, b"GET"), ping_v4(0, 1)] {
        u.observe(&garbage, true, at(40));
    }
    assert_eq!(u.count(at(40), window), 0, "only TCP data counts");
}

#[test]
fn unanswered_requests_are_bounded() {
    use crate::inflight::{Unanswered, MAX_REQUESTS};
    let mut u = Unanswered::new();
    for port in 0..(MAX_REQUESTS as u16 + 10) {
        let frame = segment(
            &to_guest_v4(0),
            Segment {
                src_port: 1024 + port,
                dst_port: 80,
                seq: 1,
                ack: Some(1),
                payload: b"x",
                ..Segment::default()
            },
        );
        u.observe(&frame, true, Instant::ZERO);
    }
    assert_eq!(u.count(Instant::ZERO, Duration::from_secs(1)), MAX_REQUESTS);
}

#[test]
fn frames_are_described_in_one_line() {
    assert_eq!(
        crate::describe(&syn(80)),
        format!("TCP SYN {CLIENT_V4}:40000 > {GUEST_V4}:80")
    );
    assert_eq!(
        crate::describe(&udp_v4(9000, b"hello")),
        format!("UDP {CLIENT_V4}:5000 > {GUEST_V4}:9000 with 5 bytes")
    );
    assert_eq!(
        crate::describe(&arp_request(10, GUEST_V4)),
        format!("ARP who-has {GUEST_V4} on VLAN 10")
    );
    assert_eq!(
        crate::describe(&ping_v4(0, 1)),
        format!("echo request {CLIENT_V4} > {GUEST_V4}")
    );
    assert_eq!(crate::describe(&[0u8; 5]), "malformed frame (5 bytes)");
}

#[test]
fn a_sleeping_guest_takes_a_new_policy_in_place_but_not_a_new_identity() {
    let (mut s, id) = asleep(0);
    let mut r = Recorder::default();
    // Something held before the change stays held.
    handle(&mut s, 1, &udp_v4(5000, b"held"), &mut r);
    assert_eq!(s.queue_depth(id).map(|d| d.0), Some(1));
    let mut new = spec(0);
    new.wake_on = vec![PortRule {
        transport: Transport::Tcp,
        port: 8080,
    }];
    s.update_guest(id, new).expect("same identity");
    assert_eq!(s.state(id), Some(GuestState::Sleeping));
    assert_eq!(s.queue_depth(id).map(|d| d.0), Some(1));
    // Port 80 no longer wakes it: the SYN is refused in its name.
    handle(&mut s, 2, &syn(80), &mut r);
    assert!(r.wakes.is_empty(), "{:?}", r.wakes);
    let (_, _, _, _, syn_flag, _, rst, _) = tcp_of(&only_sent(&r.take()).0);
    assert!(rst && !syn_flag);
    // Port 8080 does.
    handle(&mut s, 3, &syn(8080), &mut r);
    assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 8080 })]);
    // Another address is another guest.
    let mut moved = spec(0);
    moved.ipv4 = vec![Ipv4Addr::new(198, 18, 0, 99)];
    assert_eq!(
        s.update_guest(id, moved),
        Err(crate::UpdateGuestError::NewIdentity {
            guest: "web1".into()
        })
    );
}
