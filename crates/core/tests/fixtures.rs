//! Real frames, replayed through the surrogate.
//!
//! Each capture in `fixtures/` holds a request a real kernel client sent to a guest in a
//! network namespace, followed by the guest kernel's own answer (see `fixtures/README.md`).
//! Here the guest is registered asleep with the capture's addresses, the request goes to
//! `Surrogate::handle_frame`, and the surrogate's answer is compared with the kernel's, byte
//! for byte apart from the fields that are the sender's free choice (IPv4 identification, the
//! don't-fragment bit of an echo reply, the IPv6 flow label) or that the kernel left to the
//! checksum offload.
//!
//! Every test also writes the conversation (request, surrogate's answer) as a pcap file under
//! `target/tmp/fixtures-replay/` (cargo's `CARGO_TARGET_TMPDIR`), so a person can open it in
//! Wireshark next to the original capture.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use vmnap_core::{
    AnswerKind, Answers, Cut, DropReason, GuestId, GuestSpec, GuestState, IgnoreReason, Instant,
    PortRule, Recorder, Surrogate, Transport, Verdict, VirtioNetHdr, WakeCause,
};
use vmnap_wire::checksum;
use vmnap_wire::smol::{
    EthernetAddress, Icmpv6Packet, Icmpv6Repr, Ipv4Packet, Ipv6Packet, NdiscNeighborFlags,
    NdiscRepr, TcpPacket, UdpPacket,
};
use vmnap_wire::vlan::LinkRepr;

mod support;
use support::pcap;

const GUEST_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0x01]);
const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0xcc, 0x01]);
const GUEST_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// Ethernet and IPv4 headers: where the transport header of the captured IPv4 frames starts.
const IPV4_PAYLOAD: usize = 14 + 20;

/// The frames of `fixtures/<name>`: the client's request first, then the guest kernel's
/// answer.
fn capture(name: &str) -> Vec<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let records = pcap::read(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        records.len(),
        2,
        "{name}: a request and the kernel's answer"
    );
    records.into_iter().map(|r| r.bytes).collect()
}

/// The guest of the captures, with every responder on and TCP port 80 as its service.
fn spec() -> GuestSpec {
    GuestSpec {
        ipv6: vec![GUEST_V6],
        wake_on: vec![PortRule {
            transport: Transport::Tcp,
            port: 80,
        }],
        answers: Answers {
            tcp_echo: true,
            udp_echo: true,
            ..Answers::DEFAULT
        },
        ..GuestSpec::new("fx-guest", GUEST_MAC, GUEST_V4)
    }
}

fn asleep(spec: GuestSpec) -> (Surrogate, GuestId) {
    let mut s = Surrogate::new(0x5eed);
    let id = s.add_guest(spec).expect("fresh surrogate");
    s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
        .expect("awake guest");
    (s, id)
}

/// The virtio-net header the kernel gives a frame whose TCP or UDP checksum it left to the
/// offload, as the daemon's `PACKET_VNET_HDR` socket reads it.
fn partial(csum_offset: u16) -> VirtioNetHdr {
    VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        csum_start: IPV4_PAYLOAD as u16,
        csum_offset,
        ..VirtioNetHdr::NONE
    }
}

/// Feeds `request` to a surrogate and writes the request and every frame it sent to
/// `target/tmp/fixtures-replay/<name>.pcap`, for Wireshark.
fn replay(
    name: &str,
    s: &mut Surrogate,
    vnet: VirtioNetHdr,
    request: &[u8],
    r: &mut Recorder,
) -> PathBuf {
    let before = r.sent.len();
    s.handle_frame(Instant::from_millis(1), vnet, request, r);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures-replay");
    std::fs::create_dir_all(&dir).expect("target/tmp is writable");
    let path = dir.join(format!("{name}.pcap"));
    let frames = std::iter::once((1_000, request))
        .chain(r.sent[before..].iter().map(|f| (1_001, f.as_slice())));
    std::fs::write(&path, pcap::write(frames)).expect("target/tmp is writable");
    path
}

fn only_sent(r: &Recorder) -> &[u8] {
    assert_eq!(r.sent.len(), 1, "one frame out, verdicts {:?}", r.verdicts);
    &r.sent[0]
}

fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_same_frame(ours: &[u8], kernels: &[u8], what: &str) {
    assert!(
        ours == kernels,
        "{what}: the surrogate's answer differs from the guest kernel's\n ours:   {}\n kernel: {}",
        hex(ours),
        hex(kernels)
    );
}

#[test]
fn captured_arp_request_is_answered_exactly_as_the_guest_kernel_did() {
    let [request, kernel_reply] = <[_; 2]>::try_from(capture("arp.pcap")).expect("two frames");
    let (mut s, id) = asleep(spec());
    let mut r = Recorder::default();
    replay("arp", &mut s, VirtioNetHdr::NONE, &request, &mut r);
    assert_eq!(r.verdicts, [(Some(id), Verdict::Answered(AnswerKind::Arp))]);
    assert!(r.wakes.is_empty());
    // Nothing in an ARP reply is the sender's free choice: every byte must match.
    assert_same_frame(only_sent(&r), &kernel_reply, "ARP reply");
    let link = LinkRepr::parse(only_sent(&r)).expect("Ethernet");
    assert_eq!((link.src, link.dst), (GUEST_MAC, CLIENT_MAC));
}

#[test]
fn captured_ping_is_answered_like_the_guest_kernel_apart_from_ip_id_and_df() {
    let [request, kernel_reply] = <[_; 2]>::try_from(capture("icmp_echo.pcap")).expect("two");
    let (mut s, id) = asleep(spec());
    let mut r = Recorder::default();
    replay("icmp_echo", &mut s, VirtioNetHdr::NONE, &request, &mut r);
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Answered(AnswerKind::IcmpEcho))]
    );
    let mut ours = only_sent(&r).to_vec();
    let kernel = Ipv4Packet::new_checked(&kernel_reply[14..]).expect("IPv4");
    let mut ip = Ipv4Packet::new_checked(&mut ours[14..]).expect("IPv4");
    assert!(ip.verify_checksum());
    // The identification is the sender's choice; Linux leaves DF off its echo replies
    // (they are sent from the ICMP socket without path MTU discovery), the surrogate sets it.
    assert!(ip.dont_frag());
    assert!(!kernel.dont_frag());
    ip.set_ident(kernel.ident());
    ip.set_dont_frag(kernel.dont_frag());
    ip.fill_checksum();
    assert_same_frame(&ours, &kernel_reply, "ICMP echo reply");
}

#[test]
fn captured_ping6_is_answered_like_the_guest_kernel_apart_from_the_flow_label() {
    let [request, kernel_reply] = <[_; 2]>::try_from(capture("icmpv6_echo.pcap")).expect("two");
    let (mut s, id) = asleep(spec());
    let mut r = Recorder::default();
    replay("icmpv6_echo", &mut s, VirtioNetHdr::NONE, &request, &mut r);
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Answered(AnswerKind::Icmpv6Echo))]
    );
    let mut ours = only_sent(&r).to_vec();
    let kernel = Ipv6Packet::new_checked(&kernel_reply[14..]).expect("IPv6");
    let mut ip = Ipv6Packet::new_checked(&mut ours[14..]).expect("IPv6");
    // Linux picks a flow label per socket; the surrogate sends 0, which RFC 6437 allows.
    assert_eq!(ip.flow_label(), 0);
    ip.set_flow_label(kernel.flow_label());
    assert_same_frame(&ours, &kernel_reply, "ICMPv6 echo reply");
}

#[test]
fn captured_solicited_node_neighbor_solicitation_gets_the_kernels_advertisement() {
    let [request, kernel_advert] = <[_; 2]>::try_from(capture("ndp_ns.pcap")).expect("two");
    let (mut s, id) = asleep(spec());
    let mut r = Recorder::default();
    replay("ndp_ns", &mut s, VirtioNetHdr::NONE, &request, &mut r);
    assert_eq!(r.verdicts, [(Some(id), Verdict::Answered(AnswerKind::Ndp))]);
    let ours = only_sent(&r);
    let ip = Ipv6Packet::new_checked(&ours[14..]).expect("IPv6");
    let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("ICMPv6");
    match Icmpv6Repr::parse(&GUEST_V6, &CLIENT_V6, &icmp, &Default::default()) {
        Ok(Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr,
        })) => {
            assert_eq!(
                flags,
                NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE
            );
            assert_eq!(target_addr, GUEST_V6);
            assert_eq!(
                lladdr.map(|l| l.as_bytes().to_vec()),
                Some(GUEST_MAC.as_bytes().to_vec())
            );
        }
        other => panic!("not a neighbour advertisement: {other:?}"),
    }
    assert_same_frame(ours, &kernel_advert, "neighbour advertisement");
}

#[test]
fn captured_neighbor_solicitation_wakes_a_guest_that_answers_ndp_itself() {
    let [request, _] = <[_; 2]>::try_from(capture("ndp_ns.pcap")).expect("two");
    let answers = Answers {
        ndp: false,
        ..Answers::DEFAULT
    };
    let (mut s, id) = asleep(GuestSpec { answers, ..spec() });
    let mut r = Recorder::default();
    replay("ndp_ns_wakes", &mut s, VirtioNetHdr::NONE, &request, &mut r);
    assert!(r.sent.is_empty());
    assert_eq!(r.wakes, [(id, WakeCause::Resolution)]);
    let queued: Vec<_> = s.held(id).cloned().map(|f| f.bytes).collect();
    assert_eq!(queued.len(), 1);
    assert_eq!(&*queued[0], &request[..]);
}

#[test]
fn captured_syn_to_a_closed_port_gets_the_kernels_rst_ack() {
    let [syn, kernel_rst] = <[_; 2]>::try_from(capture("tcp_syn.pcap")).expect("two frames");
    let (mut s, id) = asleep(spec());
    let mut r = Recorder::default();
    // curl's SYN left the veth with its checksum to be filled in: the header says so.
    replay("tcp_syn", &mut s, partial(16), &syn, &mut r);
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Answered(AnswerKind::TcpReset))]
    );
    assert!(r.wakes.is_empty());
    assert_eq!(s.state(id), Some(GuestState::Sleeping));
    let ours = only_sent(&r);
    let tcp = TcpPacket::new_checked(&ours[IPV4_PAYLOAD..]).expect("TCP");
    assert!(tcp.rst() && tcp.ack() && !tcp.syn());
    assert!(tcp.verify_checksum(&GUEST_V4.into(), &CLIENT_V4.into()));
    // Linux's RST: IP id 0, DF, no options, window 0; the same bytes.
    assert_same_frame(ours, &kernel_rst, "RST/ACK");
}

#[test]
fn captured_syn_without_the_offload_mark_is_dropped_for_its_checksum() {
    let [syn, _] = <[_; 2]>::try_from(capture("tcp_syn.pcap")).expect("two frames");
    let (mut s, id) = asleep(spec());
    let mut r = Recorder::default();
    replay("tcp_syn_unmarked", &mut s, VirtioNetHdr::NONE, &syn, &mut r);
    assert!(r.sent.is_empty());
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Dropped(DropReason::BadChecksum))]
    );
    // Completed, the same SYN needs no mark.
    let mut completed = syn.clone();
    checksum::complete(&mut completed, &mut partial(16)).expect("offsets inside the frame");
    let mut r = Recorder::default();
    replay(
        "tcp_syn_completed",
        &mut s,
        VirtioNetHdr::NONE,
        &completed,
        &mut r,
    );
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Answered(AnswerKind::TcpReset))]
    );
}

#[test]
fn captured_syn_to_a_served_port_is_queued_and_wakes_the_guest() {
    let [syn, _] = <[_; 2]>::try_from(capture("tcp_syn.pcap")).expect("two frames");
    let mut spec = spec();
    spec.wake_on.push(PortRule {
        transport: Transport::Tcp,
        port: 5432,
    });
    let (mut s, id) = asleep(spec);
    let mut r = Recorder::default();
    replay("tcp_syn_wakes", &mut s, partial(16), &syn, &mut r);
    assert!(r.sent.is_empty());
    assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 5432 })]);
    assert_eq!(s.state(id), Some(GuestState::Waking { port_up: false }));
    let queued: Vec<_> = s.held(id).cloned().collect();
    assert_eq!(queued.len(), 1);
    assert_eq!(&*queued[0].bytes, &syn[..]);
    assert_eq!(
        queued[0].vnet,
        partial(16),
        "the offload mark is kept for replay"
    );
}

#[test]
fn captured_udp_to_the_echo_port_is_echoed_like_the_guests_echo_service() {
    let [datagram, kernel_echo] = <[_; 2]>::try_from(capture("udp.pcap")).expect("two frames");
    let (mut s, id) = asleep(spec());
    let mut r = Recorder::default();
    replay("udp", &mut s, partial(6), &datagram, &mut r);
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Answered(AnswerKind::UdpEcho))]
    );
    let ours = only_sent(&r);
    let udp = UdpPacket::new_checked(&ours[IPV4_PAYLOAD..]).expect("UDP");
    assert!(udp.verify_checksum(&GUEST_V4.into(), &CLIENT_V4.into()));
    // socat's echo left the guest with its checksum to the offload and its own IP id; with
    // the checksum completed and the id copied, the frames are the same.
    let mut kernel = kernel_echo.clone();
    checksum::complete(&mut kernel, &mut partial(6)).expect("offsets inside the frame");
    let mut ours = ours.to_vec();
    let mut ip = Ipv4Packet::new_checked(&mut ours[14..]).expect("IPv4");
    ip.set_ident(
        Ipv4Packet::new_checked(&kernel[14..])
            .expect("IPv4")
            .ident(),
    );
    ip.fill_checksum();
    assert_same_frame(&ours, &kernel, "UDP echo");
}

#[test]
fn captured_udp_to_a_port_without_a_service_is_held_quietly() {
    let [datagram, _] = <[_; 2]>::try_from(capture("udp.pcap")).expect("two frames");
    let answers = Answers {
        udp_echo: false,
        ..Answers::DEFAULT
    };
    let (mut s, id) = asleep(GuestSpec { answers, ..spec() });
    let mut r = Recorder::default();
    replay("udp_held", &mut s, partial(6), &datagram, &mut r);
    assert!(r.sent.is_empty());
    assert!(r.wakes.is_empty());
    assert_eq!(r.verdicts, [(Some(id), Verdict::Queued)]);
}

#[test]
fn the_guest_kernels_own_answers_are_never_answered() {
    // The second frame of every capture came from the guest's MAC: flooded back to the
    // surrogate's port, it is the guest's own traffic.
    let (mut s, _) = asleep(spec());
    for name in [
        "arp.pcap",
        "icmp_echo.pcap",
        "icmpv6_echo.pcap",
        "ndp_ns.pcap",
        "tcp_syn.pcap",
        "udp.pcap",
    ] {
        let answer = &capture(name)[1];
        let mut r = Recorder::default();
        s.handle_frame(Instant::from_millis(1), VirtioNetHdr::NONE, answer, &mut r);
        assert!(r.sent.is_empty(), "{name}");
        assert!(r.wakes.is_empty(), "{name}");
        assert_eq!(
            r.verdicts,
            [(None, Verdict::Ignored(IgnoreReason::NotForSleepingGuest))],
            "{name}"
        );
    }
}

#[test]
fn captured_requests_get_no_answer_while_the_guest_is_awake() {
    let mut s = Surrogate::new(1);
    s.add_guest(spec()).expect("fresh surrogate");
    for (name, vnet) in [
        ("arp.pcap", VirtioNetHdr::NONE),
        ("icmp_echo.pcap", VirtioNetHdr::NONE),
        ("icmpv6_echo.pcap", VirtioNetHdr::NONE),
        ("ndp_ns.pcap", VirtioNetHdr::NONE),
        ("tcp_syn.pcap", partial(16)),
        ("udp.pcap", partial(6)),
    ] {
        let request = &capture(name)[0];
        let mut r = Recorder::default();
        s.handle_frame(Instant::from_millis(1), vnet, request, &mut r);
        assert!(r.sent.is_empty(), "{name}");
        assert!(
            r.verdicts
                .iter()
                .all(|(_, v)| matches!(v, Verdict::Ignored(_))),
            "{name}: {:?}",
            r.verdicts
        );
    }
}

#[test]
fn replayed_conversations_are_readable_pcap_files() {
    let (mut s, _) = asleep(spec());
    let [request, _] = <[_; 2]>::try_from(capture("arp.pcap")).expect("two frames");
    let mut r = Recorder::default();
    let path = replay("arp_readback", &mut s, VirtioNetHdr::NONE, &request, &mut r);
    let back = pcap::read(&std::fs::read(&path).expect("just written")).expect("a pcap file");
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].bytes, request);
    assert_eq!(back[1].bytes, r.sent[0]);
    assert_eq!(back[1].orig_len as usize, r.sent[0].len());
}

/// Bug (in `vmnap_wire::vlan::LinkRepr`, seen here): a frame with an 802.1Q tag of VID 0 and
/// PCP 0 is read as untagged with the inner ethertype, so the core parses the IP header from
/// the tag's TCI and drops the frame as malformed. The same ping with PCP 1 is answered.
#[test]
fn captured_ping_with_a_vid_0_priority_tag_is_answered() {
    let [request, _] = <[_; 2]>::try_from(capture("icmp_echo.pcap")).expect("two frames");
    for tci in [0x2000u16, 0x0000] {
        let mut buf = vec![0u8; request.len() + 4];
        buf[..request.len()].copy_from_slice(&request);
        let len = vmnap_wire::vlan::insert_tag(&mut buf, request.len(), 0x8100, tci)
            .expect("room for the tag");
        let (mut s, id) = asleep(spec());
        let mut r = Recorder::default();
        replay(
            &format!("icmp_echo_tci_{tci:04x}"),
            &mut s,
            VirtioNetHdr::NONE,
            &buf[..len],
            &mut r,
        );
        assert_eq!(
            r.verdicts,
            [(Some(id), Verdict::Answered(AnswerKind::IcmpEcho))],
            "TCI {tci:#06x}"
        );
    }
}
