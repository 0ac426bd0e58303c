//! Wake admission: what a sleeping guest is woken for, and what is refused or dropped in its
//! name instead (segments of connections it does not have, orphan fragments, other
//! protocols, addresses that are not its own).

use vmnap_wire::smol::{IpProtocol, Ipv4Packet};
use vmnap_wire::vlan::LinkRepr;

use super::{
    asleep, handle, link, segment, tcp_of, to_guest_v4, udp_v4, Recorder, CLIENT_V4, GUEST_MAC,
    GUEST_V4, OTHER_V4,
};
use crate::conntrack::{Connections, PENDING_TTL};
use crate::respond::{self, Route, Segment};
use crate::*;

const SSH: PortRule = PortRule {
    transport: Transport::Tcp,
    port: 22,
};

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// A segment from the client to the guest's `port`, from client port 40000.
fn to_guest(port: u16, seg: Segment<'_>) -> Vec<u8> {
    segment(
        &to_guest_v4(0),
        Segment {
            src_port: 40000,
            dst_port: port,
            ..seg
        },
    )
}

/// The same connection's segment from the guest.
fn from_guest(port: u16, seg: Segment<'_>) -> Vec<u8> {
    segment(
        &Route::V4 {
            link: LinkRepr::new(super::CLIENT_MAC, GUEST_MAC, 0, 0),
            src: GUEST_V4,
            dst: CLIENT_V4,
        },
        Segment {
            src_port: port,
            dst_port: 40000,
            ..seg
        },
    )
}

fn syn() -> Segment<'static> {
    Segment {
        seq: 100,
        syn: true,
        ..Segment::default()
    }
}

fn data(payload: &'static [u8]) -> Segment<'static> {
    Segment {
        seq: 101,
        ack: Some(5001),
        payload,
        ..Segment::default()
    }
}

#[test]
fn a_connection_keeps_its_guest_awake_once_it_carried_data_and_a_bare_syn_only_for_a_while() {
    let mut c = Connections::default();
    c.observe(&to_guest(22, syn()), true, at(0));
    assert_eq!(c.open_ports(at(1_000), &[SSH]), [SSH], "asked for: counts");
    let expired = PENDING_TTL.as_millis() as u64 + 1;
    assert!(
        c.open_ports(at(expired), &[SSH]).is_empty(),
        "a SYN no one followed up (spoofed) keeps no one awake for ever"
    );
    // A real one: SYN, then data. It counts for as long as it is open.
    c.observe(&to_guest(22, data(b"ssh")), true, at(10));
    assert_eq!(c.open_ports(at(10 * 3_600_000), &[SSH]), [SSH]);
    assert!(
        c.open_ports(at(20), &[]).is_empty(),
        "not a keep-awake port"
    );
    // One FIN is half a close; both end it.
    let fin = Segment {
        seq: 200,
        ack: Some(300),
        fin: true,
        ..Segment::default()
    };
    c.observe(&from_guest(22, fin), false, at(30));
    assert_eq!(c.len(), 1, "half closed: the peer may still send");
    c.observe(&to_guest(22, fin), true, at(40));
    assert!(c.is_empty());
    // A RST ends it at once, either way.
    c.observe(&to_guest(22, data(b"x")), true, at(50));
    assert_eq!(
        c.len(),
        1,
        "data alone teaches a connection older than the watch"
    );
    c.observe(
        &from_guest(
            22,
            Segment {
                rst: true,
                ..Segment::default()
            },
        ),
        false,
        at(60),
    );
    assert!(c.is_empty());
}

/// A sleeping guest whose table is sure of itself from `t = 0`.
fn asleep_and_sure() -> (Surrogate, GuestId) {
    let (mut s, id) = asleep(0);
    s.connections_mut(id)
        .expect("guest")
        .trust_from(Some(Instant::ZERO));
    (s, id)
}

#[test]
fn segments_of_a_connection_the_guest_does_not_have_get_the_kernels_rst_and_never_wake() {
    let (mut s, id) = asleep_and_sure();
    let mut r = Recorder::default();
    // Data with an ACK (hping3 -PA): RST from the ACK's sequence number.
    handle(&mut s, 10_000, &to_guest(80, data(b"GET /")), &mut r);
    let (sport, dport, seq, ack, syn, fin, rst, payload) = tcp_of(&r.sent[0]);
    assert_eq!(
        (sport, dport, seq, ack, syn, fin, rst, payload.len()),
        (80, 40000, 5001, None, false, false, true, 0)
    );
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Answered(AnswerKind::ConnectionReset))]
    );
    // A FIN without ACK (Xmas, hping3 -F): RST/ACK of the FIN.
    r.take();
    let xmas = Segment {
        seq: 7,
        fin: true,
        ..Segment::default()
    };
    handle(&mut s, 10_001, &to_guest(80, xmas), &mut r);
    let (_, _, seq, ack, _, _, rst, _) = tcp_of(&r.sent[0]);
    assert_eq!((seq, ack, rst), (0, Some(8), true));
    // A bare ACK (hping3 -A, nmap -sA) long into the sleep, where a keepalive would be
    // answered: a RST too.
    r.take();
    let bare = Segment {
        seq: 99,
        ack: Some(77),
        ..Segment::default()
    };
    handle(&mut s, 60_000, &to_guest(22, bare), &mut r);
    let (_, _, seq, _, _, _, rst, _) = tcp_of(&r.sent[0]);
    assert_eq!((seq, rst), (77, true));
    // A RST is not answered; it is dropped and counted.
    r.take();
    let reset = Segment {
        seq: 5,
        rst: true,
        ..Segment::default()
    };
    handle(&mut s, 60_001, &to_guest(80, reset), &mut r);
    assert!(r.sent.is_empty());
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Dropped(DropReason::UnknownConnection))]
    );
    assert!(r.wakes.is_empty(), "nothing here asked for the guest");
    assert_eq!(s.queue_depth(id), Some((0, 0)), "and nothing was held");
}

#[test]
fn data_on_a_connection_the_guest_had_when_it_fell_asleep_still_wakes_it() {
    let (mut s, id) = asleep_and_sure();
    // Seen on its port while it was awake: the handshake and a first command.
    let c = s.connections_mut(id).expect("guest");
    c.observe(&to_guest(22, syn()), true, Instant::ZERO);
    c.observe(&to_guest(22, data(b"ls\n")), true, Instant::ZERO);
    let mut r = Recorder::default();
    // An hour later, typed into.
    handle(&mut s, 3_600_000, &to_guest(22, data(b"uptime\n")), &mut r);
    assert_eq!(r.wakes, [(id, WakeCause::TcpData { port: 22 })]);
    assert_eq!(r.verdicts[0], (Some(id), Verdict::Queued));
    assert!(r.sent.is_empty(), "no RST for a connection the guest has");
}

#[test]
fn a_table_that_is_not_sure_yet_or_ran_out_of_room_lets_unknown_connections_wake() {
    let unknown = to_guest(80, data(b"GET /"));
    // Not trusted at all (the guest's port cannot be followed): as before admission.
    let (mut s, id) = asleep(0);
    let mut r = Recorder::default();
    handle(&mut s, 1_000, &unknown, &mut r);
    assert_eq!(r.wakes, [(id, WakeCause::TcpData { port: 80 })]);
    // Still learning (trusted from t = 2 s): the same; once sure, a RST.
    let (mut s, id) = asleep(0);
    s.connections_mut(id)
        .expect("guest")
        .trust_from(Some(at(2_000)));
    let mut r = Recorder::default();
    handle(&mut s, 1_000, &unknown, &mut r);
    assert_eq!(r.wakes.len(), 1);
    let (mut s, id) = asleep(0);
    s.connections_mut(id)
        .expect("guest")
        .trust_from(Some(at(2_000)));
    let mut r = Recorder::default();
    handle(&mut s, 2_000, &unknown, &mut r);
    assert!(r.wakes.is_empty());
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Answered(AnswerKind::ConnectionReset))]
    );
    // A table that had to refuse a connection for room is no longer sure.
    let (mut s, id) = asleep_and_sure();
    let c = s.connections_mut(id).expect("guest");
    for port in 0..=crate::conntrack::MAX_CONNECTIONS as u16 {
        let seg = segment(
            &to_guest_v4(0),
            Segment {
                src_port: 10_000 + port,
                dst_port: 22,
                ..data(b"x")
            },
        );
        c.observe(&seg, true, Instant::ZERO);
    }
    let mut r = Recorder::default();
    handle(&mut s, 1_000, &unknown, &mut r);
    assert_eq!(r.wakes.len(), 1, "an overflowing table cannot say no");
}

/// An IPv4 fragment to the guest: `protocol`, datagram `ident`, at `offset` (in 8-byte
/// units), with `more` fragments to come, carrying `payload`.
fn fragment(protocol: u8, ident: u16, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let l = LinkRepr {
        ethertype: 0x0800,
        ..link(0, GUEST_MAC)
    };
    let mut out = vec![0u8; l.header_len() + 20 + payload.len()];
    let at = l.emit(&mut out);
    let mut ip = Ipv4Packet::new_unchecked(&mut out[at..]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len((20 + payload.len()) as u16);
    ip.set_ident(ident);
    ip.clear_flags();
    ip.set_more_frags(more);
    ip.set_frag_offset(offset * 8);
    ip.set_hop_limit(64);
    ip.set_next_header(IpProtocol::from(protocol));
    ip.set_src_addr(CLIENT_V4);
    ip.set_dst_addr(GUEST_V4);
    ip.fill_checksum();
    ip.payload_mut().copy_from_slice(payload);
    out
}

#[test]
fn fragments_are_held_with_their_first_one_dropped_without_it_and_wake_only_for_a_wake_port() {
    let (mut s, id) = asleep_and_sure();
    let mut r = Recorder::default();
    // A later fragment of a datagram whose first one never came (hping3 -f, a teardrop).
    handle(&mut s, 1_000, &fragment(17, 1, 3, false, &[0; 16]), &mut r);
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Dropped(DropReason::OrphanFragment))]
    );
    // A UDP datagram in two fragments to a port that does not wake: both held, no wake.
    r.take();
    let udp = udp_v4(5555, &[7; 32]);
    let head = &udp[34..34 + 24];
    handle(&mut s, 1_001, &fragment(17, 2, 0, true, head), &mut r);
    handle(&mut s, 1_002, &fragment(17, 2, 3, false, &[7; 16]), &mut r);
    assert_eq!(r.verdicts, [(Some(id), Verdict::Queued); 2]);
    assert!(r.wakes.is_empty());
    // One to the wake port 9000 wakes, as the whole datagram would.
    r.take();
    let udp = udp_v4(9000, &[7; 32]);
    handle(
        &mut s,
        1_003,
        &fragment(17, 3, 0, true, &udp[34..58]),
        &mut r,
    );
    assert_eq!(r.wakes, [(id, WakeCause::Udp { port: 9000 })]);
    // So does the first fragment of a SYN to a wake port, and not that of other segments.
    let (mut s, id) = asleep_and_sure();
    let mut r = Recorder::default();
    let syn80 = super::syn(80);
    handle(
        &mut s,
        1_000,
        &fragment(6, 4, 0, true, &syn80[34..58]),
        &mut r,
    );
    assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 80 })]);
    // The fragments of a segment of a connection the guest does not have (hping3 -f -A, or
    // -x: first fragments only) are dropped, the first as such, the rest as orphans.
    let (mut s, id) = asleep_and_sure();
    let mut r = Recorder::default();
    let ack80 = to_guest(80, data(b"GET / HTTP/1.1"));
    handle(
        &mut s,
        1_000,
        &fragment(6, 5, 0, true, &ack80[34..58]),
        &mut r,
    );
    handle(&mut s, 1_001, &fragment(6, 5, 3, false, &[0; 8]), &mut r);
    assert!(r.wakes.is_empty());
    assert_eq!(
        r.verdicts,
        [
            (Some(id), Verdict::Dropped(DropReason::UnknownConnection)),
            (Some(id), Verdict::Dropped(DropReason::OrphanFragment)),
        ]
    );
    assert_eq!(s.queue_depth(id), Some((0, 0)));
}

#[test]
fn other_protocols_are_held_without_waking_and_unicast_for_another_address_is_dropped() {
    let (mut s, id) = asleep_and_sure();
    let mut r = Recorder::default();
    // GRE to the guest: held, since vmnap cannot tell what it asks, but it wakes no one.
    handle(&mut s, 1_000, &fragment(47, 9, 0, false, &[0; 8]), &mut r);
    assert_eq!(r.verdicts, [(Some(id), Verdict::Queued)]);
    // A SYN to the guest's MAC for an address that is not the guest's.
    r.take();
    let foreign = segment(
        &Route::V4 {
            link: link(0, GUEST_MAC),
            src: CLIENT_V4,
            dst: OTHER_V4,
        },
        Segment {
            src_port: 40000,
            dst_port: 80,
            ..syn()
        },
    );
    handle(&mut s, 1_001, &foreign, &mut r);
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Dropped(DropReason::ForeignAddress))]
    );
    // A broadcast datagram to its MAC is still the guest's.
    r.take();
    let mut bcast = Vec::new();
    respond::udp(
        &mut bcast,
        &Route::V4 {
            link: link(0, GUEST_MAC),
            src: CLIENT_V4,
            dst: std::net::Ipv4Addr::BROADCAST,
        },
        68,
        67,
        b"dhcp",
    );
    handle(&mut s, 1_002, &bcast, &mut r);
    assert_eq!(r.verdicts, [(Some(id), Verdict::Queued)]);
    assert!(r.wakes.is_empty());
}

#[test]
fn frames_past_the_budget_shared_by_every_guest_are_dropped_counted_and_wake_no_one() {
    let mut s = Surrogate::new(7);
    // Room for a few frames in all: web1's own limit (8 MiB) is far away.
    let probe = udp_v4(5555, &[0; 100]);
    s.set_hold_budget(HoldBudget::new(3 * probe.len()));
    let id = s.add_guest(super::spec(0)).expect("fresh surrogate");
    s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
        .expect("awake guest");
    let mut r = Recorder::default();
    for n in 0..4 {
        handle(&mut s, 1_000 + n, &probe, &mut r);
    }
    assert_eq!(
        r.verdicts,
        [
            (Some(id), Verdict::Queued),
            (Some(id), Verdict::Queued),
            (Some(id), Verdict::Queued),
            (Some(id), Verdict::Dropped(DropReason::HoldBudget)),
        ]
    );
    assert!(r.wakes.is_empty(), "the budget is not the guest's to free");
    assert_eq!(s.queue_depth(id), Some((3, 3 * probe.len())));
}

#[test]
fn a_syn_or_datagram_that_finds_no_room_is_refused_visibly() {
    let mut s = Surrogate::new(7);
    let limits = QueueLimits {
        frames: 2,
        ..QueueLimits::default()
    };
    let id = s
        .add_guest(GuestSpec {
            limits,
            ..super::spec(0)
        })
        .expect("fresh surrogate");
    s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
        .expect("awake guest");
    let mut r = Recorder::default();
    for n in 0..2u8 {
        handle(&mut s, 1_000, &udp_v4(5353, &[n]), &mut r);
    }
    assert!(r.sent.is_empty(), "held while there is room");
    // A SYN to a wake port wakes the guest; with no room to hold it, it is dropped: its
    // client sends it again in a second and finds the guest awake.
    r.take();
    handle(&mut s, 1_001, &super::syn(80), &mut r);
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Dropped(DropReason::QueueFull))]
    );
    assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 80 })]);
    assert!(r.sent.is_empty());
    // While the wake waits for admission (the daemon holds it back), no wake is coming to
    // serve that next try: the client is told at once, RST/ACK of its SYN.
    s.set_waits_for_admission(id, true);
    r.take();
    handle(&mut s, 1_001, &super::syn(80), &mut r);
    let (sport, dport, _, ack, _, _, rst, _) = tcp_of(&r.sent[0]);
    assert_eq!((sport, dport, ack, rst), (80, 40000, Some(1001), true));
    s.set_waits_for_admission(id, false);
    // A datagram that would not wake the guest, and so would have waited for the next
    // wake: ICMP port unreachable, quoting its IP header and first 8 bytes.
    r.take();
    let datagram = udp_v4(5353, b"no room");
    handle(&mut s, 1_002, &datagram, &mut r);
    assert_eq!(r.sent.len(), 1);
    let out = &r.sent[0];
    let ip = Ipv4Packet::new_checked(&out[14..]).expect("IPv4");
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GUEST_V4, CLIENT_V4));
    let icmp = vmnap_wire::smol::Icmpv4Packet::new_checked(ip.payload()).expect("ICMP");
    assert!(icmp.verify_checksum());
    assert_eq!(
        (icmp.msg_type(), icmp.msg_code()),
        (vmnap_wire::smol::Icmpv4Message::DstUnreachable, 3)
    );
    assert_eq!(
        &icmp.data()[..28],
        &datagram[14..42],
        "its header and 8 bytes"
    );
}
