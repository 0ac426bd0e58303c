//! rtnetlink on real links and a real bridge, in a namespace the test makes.

mod common;

use common::Netns;
use vmnap_host::{FdbEntry, Netlink, NetlinkError, PortState, VethPeer};

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0c, 0x01];
const MAC_TEXT: &str = "02:00:00:00:0c:01";

/// The line of `bridge fdb show br br0` for MAC, if any.
fn fdb_line(ns: &Netns) -> Option<String> {
    let out = ns.ip(&["exec", "bridge", "fdb", "show", "br", "br0"]);
    out.lines()
        .find(|l| l.starts_with(MAC_TEXT))
        .map(str::to_owned)
}

#[test]
fn links_bridge_ports_and_forwarding_entries() {
    let ns = Netns::new("nl1");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.run(|| {
        let mut nl = Netlink::open().expect("netlink");
        assert!(!nl.link_exists("p1").expect("exists"));
        nl.create_veth("p1", "q1").expect("veth 1");
        nl.create_veth("p2", "q2").expect("veth 2");
        assert!(nl.link_exists("p1").expect("exists"));
        let err = nl.create_veth("p1", "q9").expect_err("p1 exists");
        assert!(matches!(&err, NetlinkError::CreateVeth { source, .. } if source.raw_os_error() == Some(libc::EEXIST)), "{err}");
        assert!(err.to_string().contains("p1"), "{err}");
        let missing = nl.link_index("nope0").expect_err("no such link");
        assert!(missing.to_string().contains("nope0"), "{missing}");

        let br = nl.link_index("br0").expect("br0");
        let [p1, q1, p2, q2] = ["p1", "q1", "p2", "q2"].map(|n| nl.link_index(n).expect("index"));
        assert_ne!(p1, p2);
        assert_eq!(nl.veth_peer(p1).expect("peer"), VethPeer::Here(q1));
        assert_eq!(nl.veth_peer(q2).expect("peer"), VethPeer::Here(p2));
        assert_eq!(nl.veth_peer(br).expect("peer"), VethPeer::NotAVeth);
        nl.set_mac(br, [0x02, 0, 0, 0, 0x0b, 0xff]).expect("bridge mac");
        for i in [br, p1, q1, p2, q2] {
            assert!(!nl.link_is_up(i).expect("state") || i == br);
            nl.set_link_up(i, true).expect("up");
            assert!(nl.link_is_up(i).expect("state"));
        }
        nl.set_master(p1, br).expect("p1 master");
        nl.set_master(p2, br).expect("p2 master");
        nl.set_mtu(p1, 1400).expect("mtu");
        assert_eq!(nl.link_mtu(p1).expect("mtu"), 1400);
        assert_eq!(nl.fdb_port_of(br, MAC).expect("dump"), None);

        nl.fdb_replace(p1, MAC, 0, FdbEntry::StaticSticky).expect("static on p1");
        assert_eq!(nl.fdb_port_of(br, MAC).expect("dump"), Some(p1));
        let line = fdb_line(&ns).expect("entry in bridge fdb show");
        assert!(line.contains("dev p1") && line.contains("static") && line.contains("sticky"), "{line}");

        nl.fdb_replace(p2, MAC, 0, FdbEntry::Dynamic).expect("dynamic on p2");
        assert_eq!(nl.fdb_port_of(br, MAC).expect("dump"), Some(p2));
        let line = fdb_line(&ns).expect("entry in bridge fdb show");
        assert!(line.contains("dev p2") && !line.contains("static") && !line.contains("sticky"), "{line}");
        assert_eq!(ns.ip(&["exec", "bridge", "fdb", "show", "br", "br0"]).matches(MAC_TEXT).count(), 1);

        // A disabled port stays up but leaves the bridge; forwarding brings it back.
        nl.set_port_state(p2, PortState::Disabled).expect("disable p2");
        let link = ns.ip(&["exec", "bridge", "link", "show", "dev", "p2"]);
        assert!(link.contains("state disabled"), "{link}");
        assert!(nl.link_is_up(p2).expect("state"));
        nl.set_port_state(p2, PortState::Forwarding).expect("forward p2");
        let link = ns.ip(&["exec", "bridge", "link", "show", "dev", "p2"]);
        assert!(link.contains("state forwarding"), "{link}");

        nl.fdb_delete(p2, MAC, 0).expect("delete");
        assert_eq!(nl.fdb_port_of(br, MAC).expect("dump"), None);
        assert_eq!(fdb_line(&ns), None);
        nl.fdb_delete(p2, MAC, 0).expect("deleting an absent entry is fine");

        nl.set_master(p1, 0).expect("release p1");
        nl.set_link_up(p1, false).expect("down");
        assert!(!nl.link_is_up(p1).expect("state"));
        nl.delete_link(p1).expect("delete p1");
        assert!(!nl.link_exists("p1").expect("exists"));
        assert!(!nl.link_exists("q1").expect("peer went with it"));
    });
}

#[test]
fn bridge_ports_tell_whether_the_bridge_carries_their_frames_and_link_events_are_heard() {
    let ns = Netns::new("nl3");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "add", "br1", "type", "bridge"]);
    for (port, peer, bridge) in [
        ("p1", "q1", "br0"),
        ("p2", "q2", "br0"),
        ("p3", "q3", "br1"),
    ] {
        ns.ip(&["link", "add", port, "type", "veth", "peer", "name", peer]);
        ns.ip(&["link", "set", port, "master", bridge]);
        // A port without carrier (its veth peer down) is disabled.
        ns.ip(&["link", "set", peer, "up"]);
        ns.ip(&["link", "set", port, "up"]);
    }
    ns.ip(&["link", "set", "br0", "up"]);
    ns.run(|| {
        let mut nl = Netlink::open().expect("netlink");
        let [br0, p1, p2, p3] = ["br0", "p1", "p2", "p3"].map(|n| nl.link_index(n).expect("index"));
        let mut events = vmnap_host::LinkEvents::open().expect("link events");
        // A bridge without STP forwards on a port that is up at once.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let ports = loop {
            let ports = nl.bridge_ports(br0).expect("ports");
            if ports.iter().all(|p| p.forwards_freely()) || std::time::Instant::now() > deadline {
                break ports;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut found: Vec<u32> = ports.iter().map(|p| p.ifindex).collect();
        found.sort_unstable();
        assert_eq!(
            found,
            vec![p1.min(p2), p1.max(p2)],
            "br0's ports, not br1's ({p3}): {ports:?}"
        );
        assert!(ports.iter().all(|p| p.forwards_freely()), "{ports:?}");
        let settings = nl.bridge_settings(br0).expect("settings");
        assert!(
            !settings.vlan_filtering && !settings.nf_call,
            "{settings:?}"
        );

        common::run(&["bridge", "link", "set", "dev", "p1", "isolated", "on"]);
        // (This machine's kernel has no VLAN filtering to turn on.)
        common::run(&[
            "ip",
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "nf_call_arptables",
            "1",
        ]);
        let ports = nl.bridge_ports(br0).expect("ports");
        let p1_now = ports
            .iter()
            .find(|p| p.ifindex == p1)
            .expect("p1 is still a port");
        assert!(p1_now.isolated && !p1_now.forwards_freely(), "{p1_now:?}");
        assert!(nl.bridge_settings(br0).expect("settings").nf_call);

        // Each change was heard, with the port's bridge.
        let mut heard = Vec::new();
        events.drain(|c| heard.push(c)).expect("drain");
        assert!(
            heard
                .iter()
                .any(|c| c.ifindex == p1 && c.master == Some(br0) && !c.removed),
            "the isolation of p1 was not heard: {heard:?}"
        );
        common::run(&["ip", "link", "del", "p2"]);
        let mut heard = Vec::new();
        events.drain(|c| heard.push(c)).expect("drain");
        assert!(
            heard.iter().any(|c| c.ifindex == p2 && c.removed),
            "the removal of p2 was not heard: {heard:?}"
        );
        assert!(!nl
            .bridge_ports(br0)
            .expect("ports")
            .iter()
            .any(|p| p.ifindex == p2));
    });
}
