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
