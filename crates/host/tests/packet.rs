//! AF_PACKET sockets on real veth pairs, in namespaces the tests make.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{any_within, buffer, recv_until, Netns};
use vmnap_host::{Netlink, PacketSocket};
use vmnap_wire::smol::{IpAddress, Ipv4Packet, UdpPacket};
use vmnap_wire::vnet::VirtioNetHdr;

const SRC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];

/// A veth pair a <-> b, MTU 9000, up, in `ns`.
fn veth_pair(ns: &Netns) {
    ns.run(|| {
        let mut nl = Netlink::open().expect("netlink");
        nl.create_veth("a", "b").expect("veth");
        for name in ["a", "b"] {
            let i = nl.link_index(name).expect("index");
            nl.set_mtu(i, 9000).expect("mtu");
            nl.set_link_up(i, true).expect("up");
        }
        // The kernel activates a new link's queue asynchronously (linkwatch); frames sent
        // before that are dropped without an error, and under load it can take a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        for name in ["a", "b"] {
            let i = nl.link_index(name).expect("index");
            while !nl.link_is_running(i).expect("state") && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    });
}

fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&SRC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC);
    f.extend_from_slice(&[198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 198, 18, 0, 2]);
    f
}

fn from_src(frame: &[u8]) -> bool {
    frame.get(6..12) == Some(&SRC[..])
}

#[test]
fn arp_and_jumbo_frames_cross_a_veth_whole() {
    let ns = Netns::new("pk1");
    veth_pair(&ns);
    ns.run(|| {
        let cap_b = PacketSocket::open_capture("b").expect("capture b");
        let cap_a = PacketSocket::open_capture("a").expect("capture a");
        let tx = PacketSocket::open_sender("a").expect("sender a");
        assert_eq!(tx.name(), "a");
        assert_eq!(
            cap_b.ifindex(),
            Netlink::open().expect("nl").link_index("b").expect("b")
        );
        let mut buf = buffer();

        let arp = arp_request();
        tx.send(&arp, &VirtioNetHdr::NONE).expect("send arp");
        let meta = recv_until(&cap_b, &mut buf, |f, _| from_src(f));
        assert_eq!(&buf[..meta.len], &arp[..]);
        assert!(!meta.outgoing);
        assert_eq!(meta.vnet, VirtioNetHdr::NONE);
        // Another socket's frame is seen, as outgoing, by a capture on the sending side.
        let meta = recv_until(&cap_a, &mut buf, |f, _| from_src(f));
        assert!(meta.outgoing);
        assert_eq!(&buf[..meta.len], &arp[..]);

        let mut jumbo = vec![0x02, 0, 0, 0, 0x0b, 0x01];
        jumbo.extend_from_slice(&SRC);
        jumbo.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
        jumbo.extend((0..9000u32).map(|i| (i % 251) as u8));
        assert_eq!(jumbo.len(), 9014);
        tx.send(&jumbo, &VirtioNetHdr::NONE).expect("send jumbo");
        let meta = recv_until(&cap_b, &mut buf, |f, _| from_src(f));
        assert_eq!(meta.len, 9014);
        assert!(
            buf[..meta.len] == jumbo[..],
            "jumbo frame changed on the way"
        );

        // A capture socket does not see the frames it sends itself.
        while cap_a.recv(&mut buf).expect("drain").is_some() {}
        cap_a
            .send(&arp, &VirtioNetHdr::NONE)
            .expect("send on capture");
        recv_until(&cap_b, &mut buf, |f, _| from_src(f));
        assert!(!any_within(
            &cap_a,
            &mut buf,
            Duration::from_millis(200),
            |f, _| from_src(f)
        ));
    });
}

#[test]
fn vlan_tag_stripped_by_veth_is_put_back() {
    let ns = Netns::new("pk2");
    veth_pair(&ns);
    ns.run(|| {
        let cap = PacketSocket::open_capture("b").expect("capture b");
        let tx = PacketSocket::open_sender("a").expect("sender a");
        let mut buf = buffer();
        for (tpid, tci) in [(0x8100u16, 0x600au16), (0x88a8, 0x0064)] {
            let arp = arp_request();
            let mut tagged = arp[..12].to_vec();
            tagged.extend_from_slice(&tpid.to_be_bytes());
            tagged.extend_from_slice(&tci.to_be_bytes());
            tagged.extend_from_slice(&arp[12..]);
            tx.send(&tagged, &VirtioNetHdr::NONE).expect("send tagged");
            let meta = recv_until(&cap, &mut buf, |f, _| from_src(f));
            assert_eq!(&buf[..meta.len], &tagged[..], "tpid {tpid:#06x}");
        }
    });
}

#[test]
fn small_buffer_reports_truncation() {
    let ns = Netns::new("pk3");
    veth_pair(&ns);
    ns.run(|| {
        let cap = PacketSocket::open_capture("b").expect("capture b");
        let tx = PacketSocket::open_sender("a").expect("sender a");
        let mut frame = arp_request();
        frame.resize(1000, 0);
        tx.send(&frame, &VirtioNetHdr::NONE).expect("send");
        let mut small = vec![0u8; 504];
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match cap.recv(&mut small) {
                Err(vmnap_host::RecvError::Truncated { len, capacity, .. }) => {
                    assert_eq!((len, capacity), (1000, 500));
                    break;
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                other => panic!("expected truncation, got {other:?}"),
            }
        }
    });
}

/// Two namespaces joined by a veth x (ns1, 02:..:01:01) <-> y (ns2).
fn two_namespaces() -> (Netns, Netns) {
    let ns1 = Netns::new("pk4a");
    let ns2 = Netns::new("pk4b");
    ns1.ip(&[
        "link",
        "add",
        "x",
        "address",
        "02:00:00:00:01:01",
        "type",
        "veth",
        "peer",
        "name",
        "y",
        "netns",
        &ns2.name,
    ]);
    ns1.ip(&["addr", "add", "198.18.0.1/24", "dev", "x"]);
    ns1.ip(&["link", "set", "x", "up"]);
    ns2.ip(&["addr", "add", "198.18.0.2/24", "dev", "y"]);
    ns2.ip(&["link", "set", "y", "up"]);
    ns2.ip(&[
        "neigh",
        "replace",
        "198.18.0.1",
        "lladdr",
        "02:00:00:00:01:01",
        "dev",
        "y",
    ]);
    (ns1, ns2)
}

fn udp_to(ns: &Netns, from: &str, to: &str, payload: &[u8]) {
    ns.run(|| {
        let s = UdpSocket::bind(format!("{from}:0")).expect("bind");
        s.send_to(payload, format!("{to}:9000")).expect("send_to");
    });
}

/// Checks the UDP datagram at `ip_at` in `frame`; returns whether its checksum verifies.
fn udp_checksum_ok(frame: &[u8], ip_at: usize) -> bool {
    let ip = Ipv4Packet::new_checked(&frame[ip_at..]).expect("ipv4");
    let (src, dst) = (
        IpAddress::from(ip.src_addr()),
        IpAddress::from(ip.dst_addr()),
    );
    let udp = UdpPacket::new_checked(ip.payload()).expect("udp");
    udp.verify_checksum(&src, &dst)
}

#[test]
fn kernel_udp_arrives_with_partial_checksum_that_complete_fixes() {
    let (ns1, ns2) = two_namespaces();
    let cap = ns1.run(|| PacketSocket::open_capture("x").expect("capture x"));
    let mut buf = buffer();
    let is_udp = |f: &[u8], at: usize| f.len() > at + 9 && f[at + 9] == 17;

    // Untagged.
    udp_to(&ns2, "198.18.0.2", "198.18.0.1", b"vmnap-untagged");
    let meta = recv_until(&cap, &mut buf, |f, _| {
        f[12..14] == [0x08, 0x00] && is_udp(f, 14)
    });
    let mut vnet = meta.vnet;
    eprintln!("untagged UDP from the kernel: {vnet:?}");
    assert!(vnet.needs_checksum(), "expected CHECKSUM_PARTIAL: {vnet:?}");
    assert_eq!((vnet.csum_start, vnet.csum_offset), (34, 6));
    let frame = &mut buf[..meta.len];
    vmnap_wire::checksum::complete(frame, &mut vnet).expect("complete");
    assert!(udp_checksum_ok(frame, 14));

    drop(cap);
}

#[test]
fn send_works_after_the_link_went_down_and_up() {
    let ns = Netns::new("pk5");
    veth_pair(&ns);
    ns.run(|| {
        let cap = PacketSocket::open_capture("b").expect("capture b");
        let tx = PacketSocket::open_sender("a").expect("sender a");
        // A capture socket on a: it holds a pending ENETDOWN after the flap.
        let cap_a = PacketSocket::open_capture("a").expect("capture a");
        let mut nl = Netlink::open().expect("netlink");
        let a = nl.link_index("a").expect("a");
        nl.set_link_up(a, false).expect("down");
        assert!(!nl.link_is_up(a).expect("state"));
        let err = tx
            .send(&arp_request(), &VirtioNetHdr::NONE)
            .expect_err("link is down");
        assert!(err.to_string().contains(" a"), "{err}");
        nl.set_link_up(a, true).expect("up");
        assert!(nl.link_is_up(a).expect("state"));
        let mut buf = buffer();
        for sock in [&tx, &cap_a] {
            let arp = arp_request();
            sock.send(&arp, &VirtioNetHdr::NONE)
                .expect("send after link-up");
            let meta = recv_until(&cap, &mut buf, |f, _| from_src(f));
            assert_eq!(&buf[..meta.len], &arp[..]);
        }
    });
}

#[test]
fn capture_reports_a_link_flap_once_then_reads_on() {
    let ns = Netns::new("pk6");
    veth_pair(&ns);
    ns.run(|| {
        let cap = PacketSocket::open_capture("b").expect("capture b");
        let tx = PacketSocket::open_sender("a").expect("sender a");
        let mut nl = Netlink::open().expect("netlink");
        let b = nl.link_index("b").expect("b");
        nl.set_link_up(b, false).expect("down");
        nl.set_link_up(b, true).expect("up");
        let mut buf = buffer();
        match cap.recv(&mut buf) {
            Err(vmnap_host::RecvError::LinkDown { .. }) => {}
            other => panic!("expected LinkDown, got {other:?}"),
        }
        // The veth peer's queue is activated by the link watcher, later: wait for it.
        let a = nl.link_index("a").expect("a");
        let t0 = std::time::Instant::now();
        while !nl.link_is_running(a).expect("a state") {
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "a not running 3 s after b came up"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!("a running {:?} after b came up", t0.elapsed());
        let arp = arp_request();
        tx.send(&arp, &VirtioNetHdr::NONE).expect("send");
        let meta = recv_until(&cap, &mut buf, |f, _| from_src(f));
        assert_eq!(&buf[..meta.len], &arp[..]);
    });
}

#[test]
fn many_frames_in_a_burst_are_all_sent() {
    let ns = Netns::new("pk7");
    veth_pair(&ns);
    ns.run(|| {
        let cap = PacketSocket::open_capture("b").expect("capture b");
        let tx = PacketSocket::open_sender("a").expect("sender a");
        let mut frame = arp_request();
        frame.resize(1500, 0);
        let n = 5000u32;
        for i in 0..n {
            frame[100..104].copy_from_slice(&i.to_be_bytes());
            tx.send(&frame, &VirtioNetHdr::NONE).expect("send in burst");
        }
        let mut buf = buffer();
        let mut seen = 0u32;
        while seen < n {
            let meta = recv_until(&cap, &mut buf, |f, _| from_src(f));
            assert_eq!(meta.len, 1500);
            assert_eq!(
                buf[100..104],
                seen.to_be_bytes(),
                "frames out of order or lost"
            );
            seen += 1;
        }
    });
}

/// A tagged UDP frame sent with a partial checksum (as a guest's virtio-net would) arrives
/// with its tag re-inserted and `csum_start` moved past it, so `complete` still fixes it.
/// (This kernel has no 8021q module, so a VLAN device cannot make such frames.)
#[test]
fn partial_checksum_offsets_follow_the_reinserted_tag() {
    let ns = Netns::new("pk8");
    veth_pair(&ns);
    ns.run(|| {
        let cap = PacketSocket::open_capture("b").expect("capture b");
        let tx = PacketSocket::open_sender("a").expect("sender a");
        let payload = b"vmnap-tagged-partial";
        let mut f = vec![0x02, 0, 0, 0, 0x0b, 0x01];
        f.extend_from_slice(&SRC);
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x08, 0x00]);
        let ip_len = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1,
        ];
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        let ip_sum = !vmnap_wire::checksum::ones_complement_sum(&ip);
        ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        f.extend_from_slice(&ip);
        let udp_len = (8 + payload.len()) as u16;
        let mut pseudo = vec![198, 18, 0, 2, 198, 18, 0, 1, 0, 17];
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        let partial = vmnap_wire::checksum::ones_complement_sum(&pseudo);
        f.extend_from_slice(&4000u16.to_be_bytes());
        f.extend_from_slice(&9000u16.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&partial.to_be_bytes());
        f.extend_from_slice(payload);
        let sent_vnet = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            csum_start: 38,
            csum_offset: 6,
            ..VirtioNetHdr::NONE
        };
        tx.send(&f, &sent_vnet).expect("send partial");
        let mut buf = buffer();
        let meta = recv_until(&cap, &mut buf, |fr, _| from_src(fr));
        eprintln!("tagged partial UDP as captured: {:?}", meta.vnet);
        assert_eq!(&buf[..meta.len], &f[..], "frame with tag as sent");
        let mut vnet = meta.vnet;
        assert!(vnet.needs_checksum());
        assert_eq!((vnet.csum_start, vnet.csum_offset), (38, 6));
        vmnap_wire::checksum::complete(&mut buf[..meta.len], &mut vnet).expect("complete");
        assert!(udp_checksum_ok(&buf[..meta.len], 18));
    });
}
