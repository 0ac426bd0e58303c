//! The answerable-frames filter on a real veth: which frames sent toward a guest reach a
//! passive capture.

mod common;

use std::time::{Duration, Instant};

use common::Netns;
use vmnap_host::bpf::answerable_to_guest;
use vmnap_host::{Netlink, PacketSocket};
use vmnap_wire::vnet::VirtioNetHdr;

/// A frame from 02:..:0a:01 with `ethertype` and `payload` (the L3 packet, checksums not
/// needed: the filter reads headers only), tagged by its last byte.
fn frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0x0b, 0x01, 0x02, 0, 0, 0, 0x0a, 0x01];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 0];
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0, 198, 18, 1, 100, 198, 18, 0, 11]);
    p.extend_from_slice(l4);
    p
}

fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, l4.len() as u8, next, 64];
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    p.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
    ]);
    p.extend_from_slice(l4);
    p
}

fn tcp(dst_port: u16) -> Vec<u8> {
    let mut t = vec![0x9c, 0x40];
    t.extend_from_slice(&dst_port.to_be_bytes());
    t.extend_from_slice(&[0; 16]);
    t
}

#[test]
fn only_answerable_frames_toward_the_guest_reach_the_capture() {
    let ns = Netns::new("bpf");
    ns.run(|| {
        let mut nl = Netlink::open().expect("netlink");
        nl.create_veth("a", "b").expect("veth");
        for name in ["a", "b"] {
            let i = nl.link_index(name).expect("index");
            nl.set_link_up(i, true).expect("up");
        }
        // Frames sent before the kernel has activated a new link's queue are dropped
        // without an error.
        std::thread::sleep(Duration::from_millis(100));
        let cap = PacketSocket::open_capture("a").expect("capture a");
        cap.attach_filter(&answerable_to_guest(&[8080, 8443]))
            .expect("filter");
        let tx = PacketSocket::open_sender("a").expect("sender a");
        let from_b = PacketSocket::open_sender("b").expect("sender b");
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("arp", frame(0x0806, &[0; 28]), true),
            ("icmp", frame(0x0800, &ipv4(1, 0, &[8, 0, 0, 0])), true),
            ("tcp to 8080", frame(0x0800, &ipv4(6, 0, &tcp(8080))), true),
            (
                "tcp to 8443",
                frame(0x0800, &ipv4(6, 0x4000, &tcp(8443))),
                true,
            ),
            ("tcp to 80", frame(0x0800, &ipv4(6, 0, &tcp(80))), false),
            (
                "fragment to 8080",
                frame(0x0800, &ipv4(6, 0x0010, &tcp(8080))),
                false,
            ),
            ("udp", frame(0x0800, &ipv4(17, 0, &[0; 8])), false),
            ("icmpv6", frame(0x86dd, &ipv6(58, &[128, 0, 0, 0])), true),
            ("tcp6 to 8080", frame(0x86dd, &ipv6(6, &tcp(8080))), true),
            ("tcp6 to 22", frame(0x86dd, &ipv6(6, &tcp(22))), false),
            ("lldp", frame(0x88cc, &[0; 20]), false),
        ];
        for (i, (_, f, _)) in cases.iter().enumerate() {
            let mut f = f.clone();
            f.push(i as u8);
            tx.send(&f, &VirtioNetHdr::NONE).expect("send");
        }
        // Arriving at `a` from its peer: not toward the guest, never taken.
        from_b
            .send(&frame(0x0806, &[0; 29]), &VirtioNetHdr::NONE)
            .expect("send from b");
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 70_000];
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match cap.recv(&mut buf).expect("recv") {
                Some(meta) => {
                    assert!(meta.outgoing, "an incoming frame passed the filter");
                    seen.push(usize::from(buf[meta.len - 1]));
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let want: Vec<usize> = (0..cases.len()).filter(|&i| cases[i].2).collect();
        let names = |ix: &[usize]| ix.iter().map(|&i| cases[i].0).collect::<Vec<_>>();
        assert_eq!(names(&seen), names(&want));
    });
}

#[test]
fn without_tcp_ports_no_tcp_passes() {
    let ns = Netns::new("bpf0");
    ns.run(|| {
        let mut nl = Netlink::open().expect("netlink");
        nl.create_veth("a", "b").expect("veth");
        for name in ["a", "b"] {
            let i = nl.link_index(name).expect("index");
            nl.set_link_up(i, true).expect("up");
        }
        // Frames sent before the kernel has activated a new link's queue are dropped
        // without an error.
        std::thread::sleep(Duration::from_millis(100));
        let cap = PacketSocket::open_capture("a").expect("capture a");
        cap.attach_filter(&answerable_to_guest(&[]))
            .expect("filter");
        let tx = PacketSocket::open_sender("a").expect("sender a");
        tx.send(&frame(0x0800, &ipv4(6, 0, &tcp(8080))), &VirtioNetHdr::NONE)
            .expect("send");
        tx.send(&frame(0x86dd, &ipv6(6, &tcp(8080))), &VirtioNetHdr::NONE)
            .expect("send");
        tx.send(&frame(0x0806, &[0; 28]), &VirtioNetHdr::NONE)
            .expect("send");
        let mut buf = vec![0u8; 70_000];
        let mut kinds = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            match cap.recv(&mut buf).expect("recv") {
                Some(_) => kinds.push(u16::from_be_bytes([buf[12], buf[13]])),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert_eq!(kinds, [0x0806]);
    });
}

fn tcp_flags(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    let mut t = src_port.to_be_bytes().to_vec();
    t.extend_from_slice(&dst_port.to_be_bytes());
    t.extend_from_slice(&[0; 8]);
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// Sends `cases` (name, toward the capture's side or from its peer, frame, whether it
/// should pass) across a fresh veth pair in namespace `ns`, and checks that a capture on `a`
/// with `filter` gets exactly those that should pass, in order.
fn only_these_pass(
    ns: &str,
    filter: &[vmnap_host::bpf::SockFilter],
    cases: &[(&str, bool, Vec<u8>, bool)],
) {
    let ns = Netns::new(ns);
    ns.run(|| {
        let mut nl = Netlink::open().expect("netlink");
        nl.create_veth("a", "b").expect("veth");
        for name in ["a", "b"] {
            let i = nl.link_index(name).expect("index");
            nl.set_link_up(i, true).expect("up");
        }
        std::thread::sleep(Duration::from_millis(100));
        let cap = PacketSocket::open_capture("a").expect("capture a");
        cap.attach_filter(filter).expect("filter");
        let tx = PacketSocket::open_sender("a").expect("sender a");
        let from_b = PacketSocket::open_sender("b").expect("sender b");
        for (i, (_, outgoing, f, _)) in cases.iter().enumerate() {
            let mut f = f.clone();
            f.push(i as u8);
            let sock = if *outgoing { &tx } else { &from_b };
            sock.send(&f, &VirtioNetHdr::NONE).expect("send");
        }
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 70_000];
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match cap.recv(&mut buf).expect("recv") {
                Some(meta) => seen.push(usize::from(buf[meta.len - 1])),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let want: Vec<usize> = (0..cases.len()).filter(|&i| cases[i].3).collect();
        let names = |ix: &[usize]| ix.iter().map(|&i| cases[i].0).collect::<Vec<_>>();
        assert_eq!(names(&seen), names(&want));
    });
}

#[test]
fn openings_ends_of_writes_and_of_connections_pass_in_both_directions_on_any_port() {
    use vmnap_host::bpf::tcp_flow_events;
    let (syn, syn_ack, ack, psh_ack, fin_ack, rst) = (0x02, 0x12, 0x10, 0x18, 0x11, 0x04);
    let cases: Vec<(&str, bool, Vec<u8>, bool)> = vec![
        (
            "request to 80",
            true,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(40000, 80, psh_ack))),
            true,
        ),
        (
            "bare ACK to 80",
            true,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(40000, 80, ack))),
            false,
        ),
        (
            "answer from 8443",
            false,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(8443, 40001, psh_ack))),
            true,
        ),
        (
            "FIN from 80",
            false,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(80, 40000, fin_ack))),
            true,
        ),
        (
            "RST to 5432",
            true,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(40002, 5432, rst))),
            true,
        ),
        (
            "SYN to 80",
            true,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(40003, 80, syn))),
            true,
        ),
        (
            "SYN-ACK from 80",
            false,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(80, 40003, syn_ack))),
            true,
        ),
        (
            "fragment",
            true,
            frame(0x0800, &ipv4(6, 0x0001, &tcp_flags(40004, 80, psh_ack))),
            false,
        ),
        (
            "request6 to 80",
            true,
            frame(0x86dd, &ipv6(6, &tcp_flags(40005, 80, psh_ack))),
            true,
        ),
        (
            "UDP",
            true,
            frame(0x0800, &ipv4(17, 0, &tcp_flags(40006, 80, psh_ack))),
            false,
        ),
        ("arp", true, frame(0x0806, &[0; 28]), false),
    ];
    only_these_pass("bpfp", &tcp_flow_events(), &cases);
}

#[test]
fn either_of_two_programs_passes_what_one_of_them_passes_and_drops_the_rest() {
    use vmnap_host::bpf::{answerable_to_guest, either, tcp_flow_events};
    let (syn, psh_ack, ack) = (0x02, 0x18, 0x10);
    let cases: Vec<(&str, bool, Vec<u8>, bool)> = vec![
        // The first program's: answerable frames to the guest.
        ("ARP to the guest", true, frame(0x0806, &[0; 28]), true),
        (
            "bare ACK to health port 8080",
            true,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(40000, 8080, ack))),
            true,
        ),
        // The second's: flow events, either way.
        (
            "SYN from the guest",
            false,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(40001, 80, syn))),
            true,
        ),
        (
            "data to port 80",
            true,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(40002, 80, psh_ack))),
            true,
        ),
        // Neither's.
        (
            "bare ACK to port 80",
            true,
            frame(0x0800, &ipv4(6, 0, &tcp_flags(40003, 80, ack))),
            false,
        ),
        (
            "UDP",
            true,
            frame(0x0800, &ipv4(17, 0, &tcp_flags(40004, 80, psh_ack))),
            false,
        ),
        ("ARP from the guest", false, frame(0x0806, &[0; 28]), false),
    ];
    let p = either(&answerable_to_guest(&[8080]), &tcp_flow_events());
    only_these_pass("bpfe", &p, &cases);
}

#[test]
fn the_guests_own_arp_and_icmpv6_and_dhcp_answers_to_it_pass_and_nothing_else() {
    use vmnap_host::bpf::guest_addresses;
    // UDP source 67, destination `port`, then 8 bytes of payload.
    let udp = |port: u16| {
        let mut u = vec![0, 67];
        u.extend_from_slice(&port.to_be_bytes());
        u.extend_from_slice(&[0; 12]);
        u
    };
    let cases: Vec<(&str, bool, Vec<u8>, bool)> = vec![
        ("ARP from the guest", false, frame(0x0806, &[0; 28]), true),
        ("ARP to the guest", true, frame(0x0806, &[0; 28]), false),
        (
            "neighbour solicitation from the guest",
            false,
            frame(0x86dd, &ipv6(58, &[135, 0, 0, 0, 0, 0, 0, 0])),
            true,
        ),
        (
            "ICMPv6 to the guest",
            true,
            frame(0x86dd, &ipv6(58, &[135, 0, 0, 0, 0, 0, 0, 0])),
            false,
        ),
        (
            "DHCP answer to the guest",
            true,
            frame(0x0800, &ipv4(17, 0, &udp(68))),
            true,
        ),
        (
            "DHCP answer fragment",
            true,
            frame(0x0800, &ipv4(17, 0x2000 | 1, &udp(68))),
            false,
        ),
        (
            "other UDP to the guest",
            true,
            frame(0x0800, &ipv4(17, 0, &udp(53))),
            false,
        ),
        (
            "UDP to 68 from the guest",
            false,
            frame(0x0800, &ipv4(17, 0, &udp(68))),
            false,
        ),
        (
            "TCP from the guest",
            false,
            frame(0x0800, &ipv4(6, 0, &tcp(80))),
            false,
        ),
    ];
    only_these_pass("bpfa", &guest_addresses(), &cases);
}
