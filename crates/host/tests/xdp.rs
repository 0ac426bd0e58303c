//! The in-kernel responder on a real kernel: real clients (`arping`, `ping`) in a namespace
//! of their own, a bridge in another, and the responder for the surrogate's veth end, as
//! the daemon has it, at either hook:
//!
//! ```text
//!   client ns              surrogate ns
//!   xc 198.18.7.1/24 ⇄ xb ─ xbr (bridge) ─ xp ⇄ xs
//!                                            ↑    ↑ Hook::GenericXdp
//!                                            Hook::PeerEgress (tcx)
//! ```
//!
//! Most tests run once per hook, each on a lab of its own.
//!
//! Every link is made inside the test's two namespaces (named with the PID and the test's
//! tag), so the host's namespace is never touched and the names need only be unique there;
//! dropping the namespaces removes everything.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{any_within, buffer, recv_until, Netns};
use vmnap_core::{Cut, GuestSpec, Recorder, Surrogate};
use vmnap_host::xdp::{Answered, Answers, AttachError, Decision, Hook, Responder, Vlans};
use vmnap_host::PacketSocket;
use vmnap_wire::vnet::VirtioNetHdr;
use vmnap_wire::{Mac, MacAddr};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);
/// An address in the subnet that nobody has.
const NOBODY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 3);
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x07, 0x02];
/// The MAC the client's interface is given.
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x07, 0x01];
const BOTH: Answers = Answers {
    arp: true,
    echo: true,
};
/// Both hooks, the daemon's choice first.
const HOOKS: [Hook; 2] = [Hook::PeerEgress, Hook::GenericXdp];

/// Fails the test, saying what is missing, unless `arping` and `ping` are installed.
fn require_clients() {
    for (tool, package) in [("arping", "iputils-arping"), ("ping", "iputils-ping")] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "these tests need `{tool}` in PATH: install the Debian package {package}"
        );
    }
}

/// The two namespaces and their links.
struct Lab {
    client: Netns,
    surrogate: Netns,
}

impl Lab {
    fn new(tag: &str) -> Self {
        require_clients();
        let lab = Lab {
            client: Netns::new(&format!("{tag}c")),
            surrogate: Netns::new(&format!("{tag}s")),
        };
        let (c, s) = (&lab.client, &lab.surrogate);
        common::run(&[
            "ip", "-n", &c.name, "link", "add", "xc", "type", "veth", "peer", "name", "xb",
            "netns", &s.name,
        ]);
        c.ip(&["link", "set", "xc", "address", &Mac(CLIENT_MAC).to_string()]);
        c.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "xc"]);
        s.ip(&["link", "add", "xs", "type", "veth", "peer", "name", "xp"]);
        s.ip(&["link", "add", "name", "xbr", "type", "bridge"]);
        s.ip(&["link", "set", "xb", "master", "xbr"]);
        s.ip(&["link", "set", "xp", "master", "xbr"]);
        for (ns, link) in [(c, "xc"), (s, "xb"), (s, "xp"), (s, "xs"), (s, "xbr")] {
            ns.ip(&["link", "set", link, "up"]);
        }
        // The kernel activates a link's queue asynchronously (linkwatch): frames sent
        // before that are dropped without an error.
        let deadline = Instant::now() + Duration::from_secs(3);
        for (ns, link) in [(c, "xc"), (s, "xb"), (s, "xp"), (s, "xs")] {
            while !ns.ip(&["link", "show", link]).contains("state UP") {
                assert!(Instant::now() < deadline, "{link} did not come up");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        lab
    }

    fn attach(&self, hook: Hook, vlans: Vlans) -> Responder {
        let r = self
            .surrogate
            .run(move || Responder::attach_with("xs", 64, vlans, hook))
            .unwrap_or_else(|e| panic!("attach ({hook}): {e}: {e:?}"));
        assert_eq!(r.hook(), hook);
        r
    }

    /// Runs a client program in the client namespace; its stdout, whatever its exit status.
    fn client(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("could not run {args:?}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `arping -c count` for `ip` (one request a second, the least its `-i` takes), waiting
    /// at most `wait_s`: the replies that came from the guest's MAC, and all replies.
    fn arping(&self, ip: Ipv4Addr, count: u32, wait_s: u32) -> (usize, usize) {
        let out = self.client(&[
            "arping",
            "-c",
            &count.to_string(),
            "-w",
            &wait_s.to_string(),
            "-I",
            "xc",
            &ip.to_string(),
        ]);
        let replies: Vec<&str> = out.lines().filter(|l| l.contains("reply from")).collect();
        let from_guest = replies
            .iter()
            .filter(|l| l.contains(&format!("[{}]", Mac(GUEST_MAC))))
            .count();
        (from_guest, replies.len())
    }

    /// `ping -c count` to `ip`: the replies received.
    fn ping(&self, ip: Ipv4Addr, count: u32) -> u32 {
        let out = self.client(&[
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.01",
            "-W",
            "1",
            "-w",
            "2",
            &ip.to_string(),
        ]);
        let line = out
            .lines()
            .find(|l| l.contains("received"))
            .unwrap_or_else(|| panic!("no summary in ping's output:\n{out}"));
        line.split(", ")
            .find_map(|part| part.strip_suffix(" received"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("unreadable ping summary {line:?}"))
    }
}

/// Runs `test` once per hook, each on a lab of its own (namespaces named from `tag`), with
/// the responder attached and the guest inserted, answering both.
fn each_hook(tag: &str, test: impl Fn(&Lab, &Responder)) {
    for (hook, letter) in HOOKS.into_iter().zip(['t', 'x']) {
        eprintln!("with the responder at {hook}");
        let lab = Lab::new(&format!("{tag}{letter}"));
        let r = lab.attach(hook, Vlans::Possible);
        r.insert(GUEST_IP, guest(), BOTH).expect("insert");
        test(&lab, &r);
    }
}

fn guest() -> Mac {
    Mac(GUEST_MAC)
}

fn answered(r: &Responder, ip: Ipv4Addr) -> Option<Answered> {
    r.answered(ip).expect("read the counts")
}

/// A frame whose sender is the client.
fn from_client(frame: &[u8]) -> bool {
    frame.get(6..12) == Some(&CLIENT_MAC[..])
}

fn ethertype_at(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

#[test]
fn sleeping_guest_arp_requests_are_answered_in_the_kernel_until_removed() {
    each_hook("xa", |lab, r| {
        let capture = lab
            .surrogate
            .run(|| PacketSocket::open_capture("xs").expect("capture on xs"));
        let mut buf = buffer();

        // The first request is broadcast, the next two go to the MAC the first reply gave.
        assert_eq!(lab.arping(GUEST_IP, 3, 4), (3, 3));
        assert_eq!(answered(r, GUEST_IP), Some(Answered { arp: 3, echo: 0 }));
        // Answered before any packet socket saw them; nor do they see the replies.
        assert!(
            !any_within(&capture, &mut buf, Duration::from_millis(100), |f, _| {
                from_client(f) || f.get(6..12) == Some(&GUEST_MAC[..])
            }),
            "an answered request or its reply reached the capture socket"
        );

        r.remove(GUEST_IP).expect("remove");
        assert_eq!(answered(r, GUEST_IP), None);
        r.remove(GUEST_IP)
            .expect("removing an absent address is no error");
        assert_eq!(lab.arping(GUEST_IP, 2, 1), (0, 0));
        // Now they reach userspace, as before.
        recv_until(&capture, &mut buf, |f, _| {
            from_client(f) && ethertype_at(f, 12) == 0x0806
        });
    });
}

#[test]
fn sleeping_guest_is_pinged_in_the_kernel_and_not_when_echo_is_off() {
    each_hook("xe", |lab, r| {
        // ping resolves the address first, which the program answers too.
        assert_eq!(lab.ping(GUEST_IP, 5), 5);
        assert_eq!(answered(r, GUEST_IP), Some(Answered { arp: 1, echo: 5 }));
        // The total counts every answer, for any guest, and is no guest's address.
        assert_eq!(r.total().expect("total"), Answered { arp: 1, echo: 5 });
        assert_eq!(answered(r, Ipv4Addr::UNSPECIFIED), None);
        assert!(r.insert(Ipv4Addr::UNSPECIFIED, guest(), BOTH).is_err());
        r.remove(Ipv4Addr::UNSPECIFIED).expect("a no-op");
        assert_eq!(r.total().expect("total"), Answered { arp: 1, echo: 5 });

        r.insert(
            GUEST_IP,
            guest(),
            Answers {
                arp: true,
                echo: false,
            },
        )
        .expect("insert again");
        assert_eq!(answered(r, GUEST_IP), Some(Answered::default()));
        assert_eq!(lab.ping(GUEST_IP, 3), 0);
        assert_eq!(answered(r, GUEST_IP).map(|a| a.echo), Some(0));
        assert_eq!(r.total().expect("total").echo, 5);
    });
}

#[test]
fn ping_to_an_address_not_in_the_map_is_passed_on() {
    each_hook("xn", |lab, r| {
        let capture = lab
            .surrogate
            .run(|| PacketSocket::open_capture("xs").expect("capture on xs"));
        // Resolved by hand to the guest's MAC, so that the echo request itself is sent.
        lab.client.ip(&[
            "neigh",
            "add",
            &NOBODY_IP.to_string(),
            "lladdr",
            &guest().to_string(),
            "dev",
            "xc",
        ]);
        assert_eq!(lab.ping(NOBODY_IP, 3), 0);
        assert_eq!(answered(r, GUEST_IP), Some(Answered::default()));
        assert_eq!(answered(r, NOBODY_IP), None);
        // Passed on: the capture socket, that is the daemon, gets it.
        let mut buf = buffer();
        recv_until(&capture, &mut buf, |f, _| {
            from_client(f)
                && ethertype_at(f, 12) == 0x0800
                && f.get(30..34) == Some(&NOBODY_IP.octets()[..])
        });
    });
}

/// An ARP request for the guest, from the client, tagged with `tpid` and VLAN 10.
fn tagged_arp_request(tpid: u16) -> Vec<u8> {
    let untagged = arp(
        1, [0xff; 6], CLIENT_MAC, CLIENT_MAC, CLIENT_IP, [0; 6], GUEST_IP,
    );
    let mut f = untagged[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&10u16.to_be_bytes());
    f.extend_from_slice(&untagged[12..]);
    f
}

/// Sends a tagged ARP request from the client (the tag in the frame: this kernel has no
/// 802.1Q devices), through the bridge, which moves the tag beside the frame as it
/// receives it. Returns whether the client got an answer from the guest's MAC.
fn tagged_request_is_answered(lab: &Lab, tpid: u16) -> bool {
    lab.client.run(|| {
        let capture = PacketSocket::open_capture("xc").expect("capture on xc");
        let sender = PacketSocket::open_sender("xc").expect("sender on xc");
        sender
            .send(&tagged_arp_request(tpid), &VirtioNetHdr::NONE)
            .expect("send");
        let mut buf = buffer();
        any_within(&capture, &mut buf, Duration::from_millis(300), |f, _| {
            f.get(6..12) == Some(&GUEST_MAC[..])
        })
    })
}

#[test]
fn vlan_tagged_arp_request_is_left_to_userspace_with_its_tag() {
    each_hook("xv", |lab, r| {
        let capture = lab
            .surrogate
            .run(|| PacketSocket::open_capture("xs").expect("capture on xs"));
        let mut buf = buffer();
        for tpid in [0x8100, 0x88a8] {
            assert!(!tagged_request_is_answered(lab, tpid), "tpid {tpid:#06x}");
            // The daemon's capture socket gets it, tag and all.
            let meta = recv_until(&capture, &mut buf, |f, _| from_client(f));
            assert_eq!(
                &buf[..meta.len],
                &tagged_arp_request(tpid)[..],
                "tpid {tpid:#06x}"
            );
        }
        assert_eq!(answered(r, GUEST_IP), Some(Answered::default()));
        // The same request untagged is answered.
        assert_eq!(lab.arping(GUEST_IP, 1, 2), (1, 1));
    });
}

/// The kernel fact behind [`Vlans`]: generic XDP does not see a tag carried beside the
/// frame, and its `XDP_TX` sends the reply with that tag. If this test fails, a kernel has
/// started showing such tags to XDP, and turning the peer's offload off is no longer
/// needed.
#[test]
fn generic_xdp_takes_a_tag_carried_beside_the_frame_for_untagged() {
    let lab = Lab::new("xk");
    // The peer keeps its offload: the bridge's tags stay beside the frame.
    let r = lab.attach(Hook::GenericXdp, Vlans::Absent);
    r.insert(GUEST_IP, guest(), BOTH).expect("insert");
    let reply = lab.client.run(|| {
        let capture = PacketSocket::open_capture("xc").expect("capture on xc");
        let sender = PacketSocket::open_sender("xc").expect("sender on xc");
        sender
            .send(&tagged_arp_request(0x8100), &VirtioNetHdr::NONE)
            .expect("send");
        let mut buf = buffer();
        let meta = recv_until(&capture, &mut buf, |f, _| {
            f.get(6..12) == Some(&GUEST_MAC[..])
        });
        buf[..meta.len].to_vec()
    });
    assert_eq!(answered(&r, GUEST_IP).map(|a| a.arp), Some(1));
    // Answered as if untagged, and sent back on VLAN 10 all the same.
    assert_eq!(ethertype_at(&reply, 12), 0x8100);
    assert_eq!(ethertype_at(&reply, 14) & 0x0fff, 10);
    assert_eq!(ethertype_at(&reply, 16), 0x0806);
}

/// On the peer's egress, the program sees such a tag, and leaves the frame to userspace:
/// no peer's offload needs touching.
#[test]
fn peer_egress_sees_a_tag_carried_beside_the_frame() {
    let lab = Lab::new("xg");
    let r = lab.attach(Hook::PeerEgress, Vlans::Absent);
    r.insert(GUEST_IP, guest(), BOTH).expect("insert");
    for tpid in [0x8100, 0x88a8] {
        assert!(!tagged_request_is_answered(&lab, tpid), "tpid {tpid:#06x}");
    }
    assert_eq!(answered(&r, GUEST_IP), Some(Answered::default()));
    assert_eq!(lab.arping(GUEST_IP, 1, 2), (1, 1));
}

#[test]
fn attach_refuses_a_veth_whose_peer_it_cannot_reach_unless_told_there_are_no_vlans() {
    let ns = Netns::new("xr");
    let other = Netns::new("xro");
    common::run(&[
        "ip",
        "-n",
        &ns.name,
        "link",
        "add",
        "xs",
        "type",
        "veth",
        "peer",
        "name",
        "xo",
        "netns",
        &other.name,
    ]);
    ns.ip(&["link", "set", "xs", "up"]);
    ns.ip(&["link", "add", "name", "xbr", "type", "bridge"]);
    ns.run(|| {
        match Responder::attach("xs", 8, Vlans::Possible) {
            Err(AttachError::VlanOffload { interface, .. }) => assert_eq!(interface, "xs"),
            other => panic!("attach with the peer elsewhere: {other:?}"),
        }
        match Responder::attach_with("xs", 8, Vlans::Absent, Hook::PeerEgress) {
            Err(e @ AttachError::NoPeer { .. }) => assert_eq!(
                e.to_string(),
                "xs is not a veth with its peer in this network namespace"
            ),
            other => panic!("attach to the peer's egress, elsewhere: {other:?}"),
        }
        match Responder::attach("xbr", 8, Vlans::Possible) {
            Err(AttachError::VlanOffload { .. }) => {}
            other => panic!("attach to a bridge: {other:?}"),
        }
        match Responder::attach("nonexistent0", 8, Vlans::Absent) {
            Err(e @ AttachError::NoSuchInterface { .. }) => {
                assert_eq!(e.to_string(), "Could not find interface nonexistent0")
            }
            other => panic!("attach to nothing: {other:?}"),
        }
        // Where the peer's egress cannot be had, generic XDP it is.
        let r = Responder::attach("xs", 8, Vlans::Absent).expect("attach without VLANs");
        assert_eq!(
            (r.interface(), r.capacity(), r.hook()),
            ("xs", 8, Hook::GenericXdp)
        );
        // One program per interface and mode.
        match Responder::attach("xs", 8, Vlans::Absent) {
            Err(AttachError::Link { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EBUSY))
            }
            other => panic!("second attach: {other:?}"),
        }
    });
}

#[test]
fn dropping_the_responder_detaches_it() {
    let lab = Lab::new("xd");
    let r = lab.attach(Hook::GenericXdp, Vlans::Possible);
    let shown = lab.surrogate.ip(&["-d", "link", "show", "xs"]);
    assert!(
        shown.contains("xdpgeneric") && shown.contains("prog/xdp"),
        "not attached:\n{shown}"
    );
    r.insert(GUEST_IP, guest(), BOTH).expect("insert");
    assert_eq!(lab.arping(GUEST_IP, 1, 2), (1, 1));
    drop(r);
    let shown = lab.surrogate.ip(&["-d", "link", "show", "xs"]);
    assert!(
        !shown.contains("xdp") && !shown.contains("prog/"),
        "still attached:\n{shown}"
    );
    assert_eq!(lab.arping(GUEST_IP, 1, 1), (0, 0));

    // At the peer's egress, where `ip link` shows nothing: answered, then not.
    let lab = Lab::new("xdt");
    let r = lab.attach(Hook::PeerEgress, Vlans::Possible);
    r.insert(GUEST_IP, guest(), BOTH).expect("insert");
    assert_eq!(lab.arping(GUEST_IP, 1, 2), (1, 1));
    drop(r);
    assert_eq!(lab.arping(GUEST_IP, 1, 1), (0, 0));
}

#[test]
fn a_full_map_refuses_another_guest_by_name() {
    let lab = Lab::new("xf");
    let r = lab
        .surrogate
        .run(|| Responder::attach("xs", 2, Vlans::Possible).expect("attach"));
    r.insert(Ipv4Addr::new(198, 18, 7, 10), guest(), BOTH)
        .expect("first");
    r.insert(Ipv4Addr::new(198, 18, 7, 11), guest(), BOTH)
        .expect("second");
    let e = r
        .insert(Ipv4Addr::new(198, 18, 7, 12), guest(), BOTH)
        .expect_err("third");
    assert_eq!(
        e.to_string(),
        "Could not add 198.18.7.12 to the kernel's responder on xs: it holds 2 guests already"
    );
    // Replacing one that is there still works.
    r.insert(Ipv4Addr::new(198, 18, 7, 11), guest(), Answers::default())
        .expect("replace");
}

// Frames, byte by byte, through BPF_PROG_TEST_RUN.

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn arp(
    oper: u16,
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = eth_dst.to_vec();
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&oper.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// The IPv4 header fields an echo frame varies.
#[derive(Clone, Copy)]
struct Ip {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    tos: u8,
    id: u16,
    flags: u16,
    ttl: u8,
}

fn echo(eth_dst: [u8; 6], eth_src: [u8; 6], ip: Ip, icmp_type: u8, data: &[u8]) -> Vec<u8> {
    let mut icmp = vec![icmp_type, 0, 0, 0, 0x12, 0x34, 0x00, 0x07];
    icmp.extend_from_slice(data);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut h = vec![0x45, ip.tos];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&ip.id.to_be_bytes());
    h.extend_from_slice(&ip.flags.to_be_bytes());
    h.extend_from_slice(&[ip.ttl, 1, 0, 0]);
    h.extend_from_slice(&ip.src.octets());
    h.extend_from_slice(&ip.dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = eth_dst.to_vec();
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&h);
    f.extend_from_slice(&icmp);
    f
}

const REQUEST_IP: Ip = Ip {
    src: CLIENT_IP,
    dst: GUEST_IP,
    tos: 0x10,
    id: 0xbeef,
    flags: 0,
    ttl: 63,
};

/// What the userspace surrogate sends for an echo request from the client with `data`.
fn expected_echo_reply(data: &[u8]) -> Vec<u8> {
    let ip = Ip {
        src: GUEST_IP,
        dst: CLIENT_IP,
        tos: 0,
        id: 0,
        flags: 0x4000,
        ttl: 64,
    };
    echo(CLIENT_MAC, GUEST_MAC, ip, 0, data)
}

/// What the program does with `frame`; `None` if the kernel will not test-run it. Linux
/// 6.18 refuses to give an skb program (the tc hook's) a frame whose ethertype is IPv4 or
/// IPv6 and which is shorter than that header; on the wire such a frame is passed, as the
/// program reads no byte it has not checked is there (the XDP run of the same frame shows
/// the listing's logic).
fn decide(r: &Responder, frame: &[u8]) -> Option<Decision> {
    let short_ip = match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.len() < 14 + 20,
        Some([0x86, 0xdd]) => frame.len() < 14 + 40,
        _ => false,
    };
    match r.try_frame(frame) {
        Ok(d) => Some(d),
        Err(e)
            if r.hook() == Hook::PeerEgress
                && short_ip
                && e.source.raw_os_error() == Some(libc::EINVAL) =>
        {
            None
        }
        Err(e) => panic!("test run ({}): {e}: {e:?}", r.hook()),
    }
}

/// The userspace surrogate, with the guest asleep and answering ARP and echo.
fn userspace() -> Surrogate {
    let mut s = Surrogate::new(1);
    let id = s
        .add_guest(GuestSpec::new("guest", MacAddr(GUEST_MAC), GUEST_IP))
        .expect("one guest");
    s.stand_in(id, Some(Cut::PortDisabled), vmnap_core::Instant::ZERO)
        .expect("asleep");
    s
}

/// What the userspace surrogate sends for `frame`, if anything.
fn userspace_reply(s: &mut Surrogate, frame: &[u8]) -> Option<Vec<u8>> {
    let mut sink = Recorder::default();
    s.handle_frame(
        vmnap_core::Instant::ZERO,
        VirtioNetHdr::NONE,
        frame,
        &mut sink,
    );
    assert!(
        sink.sent.len() <= 1,
        "{} answers to one frame",
        sink.sent.len()
    );
    sink.sent.pop()
}

/// Whether `xdp`, the program's reply to `request`, is the userspace surrogate's reply
/// `user` followed by what was left of the request past its length (the padding).
fn same_reply(xdp: &[u8], user: &[u8], request: &[u8]) -> bool {
    xdp.len() == request.len()
        && xdp.len() >= user.len()
        && xdp[..user.len()] == *user
        && xdp[user.len()..] == request[user.len()..]
}

#[test]
fn replies_are_byte_for_byte_those_of_the_userspace_surrogate() {
    each_hook("xb", |_, r| {
        let mut user = userspace();
        // Each answer, checked against the bytes written out here and against the core.
        let mut both = |frame: &[u8]| {
            let decision = decide(r, frame).expect("a frame the kernel runs");
            if let Decision::Reply(xdp) = &decision {
                let theirs = userspace_reply(&mut user, frame).expect("userspace answers too");
                assert!(
                    same_reply(xdp, &theirs, frame),
                    "kernel {xdp:02x?}\nuserspace {theirs:02x?}"
                );
            }
            decision
        };

        let request = arp(
            1, [0xff; 6], CLIENT_MAC, CLIENT_MAC, CLIENT_IP, [0; 6], GUEST_IP,
        );
        let reply = arp(
            2, CLIENT_MAC, GUEST_MAC, GUEST_MAC, GUEST_IP, CLIENT_MAC, CLIENT_IP,
        );
        assert_eq!(both(&request), Decision::Reply(reply.clone()));
        // Padded to the Ethernet minimum, to the guest's MAC: answered, padding kept.
        let mut padded = arp(
            1, GUEST_MAC, CLIENT_MAC, CLIENT_MAC, CLIENT_IP, [0; 6], GUEST_IP,
        );
        padded.resize(60, 0);
        let mut reply_padded = reply.clone();
        reply_padded.resize(60, 0);
        assert_eq!(both(&padded), Decision::Reply(reply_padded));
        // A probe (from 0.0.0.0), as duplicate address detection sends it.
        let probe = arp(
            1,
            [0xff; 6],
            CLIENT_MAC,
            CLIENT_MAC,
            Ipv4Addr::UNSPECIFIED,
            [0; 6],
            GUEST_IP,
        );
        let probe_reply = arp(
            2,
            CLIENT_MAC,
            GUEST_MAC,
            GUEST_MAC,
            GUEST_IP,
            CLIENT_MAC,
            Ipv4Addr::UNSPECIFIED,
        );
        assert_eq!(both(&probe), Decision::Reply(probe_reply));

        for len in [0, 1, 18, 56, 1472] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let request = echo(GUEST_MAC, CLIENT_MAC, REQUEST_IP, 8, &data);
            assert_eq!(
                both(&request),
                Decision::Reply(expected_echo_reply(&data)),
                "{len} bytes of data"
            );
        }
        // A request whose ICMP checksum is wrong gets a reply whose checksum is as wrong,
        // where the userspace surrogate drops it.
        let mut bad = echo(GUEST_MAC, CLIENT_MAC, REQUEST_IP, 8, b"abcd");
        bad[36] ^= 0x01;
        assert_eq!(userspace_reply(&mut user, &bad), None);
        match decide(r, &bad) {
            Some(Decision::Reply(reply)) => {
                assert_ne!(checksum(&reply[34..]), 0);
                assert_eq!(
                    checksum(&reply[14..34]),
                    0,
                    "the IP header's checksum holds"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(answered(r, GUEST_IP), Some(Answered { arp: 3, echo: 6 }));
    });
}

#[test]
fn frames_the_program_is_not_sure_of_are_passed_on() {
    each_hook("xp", |_, r| {
        let other_ip = Ipv4Addr::new(198, 18, 7, 9);
        r.insert(other_ip, guest(), Answers::default())
            .expect("insert one that answers nothing");
        let other_mac = [0x02, 0, 0, 0, 0x07, 0x63];
        let request = || {
            arp(
                1, [0xff; 6], CLIENT_MAC, CLIENT_MAC, CLIENT_IP, [0; 6], GUEST_IP,
            )
        };
        let ping = || echo(GUEST_MAC, CLIENT_MAC, REQUEST_IP, 8, b"0123456789");
        let with = |mut f: Vec<u8>, at: usize, bytes: &[u8]| {
            f[at..at + bytes.len()].copy_from_slice(bytes);
            f
        };
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("ARP reply", with(request(), 20, &[0, 2])),
            ("ARP, hardware type 6", with(request(), 14, &[0, 6])),
            ("ARP for IPv6", with(request(), 16, &[0x86, 0xdd])),
            ("ARP, hlen 8", with(request(), 18, &[8])),
            ("ARP, plen 16", with(request(), 19, &[16])),
            (
                "gratuitous ARP",
                arp(
                    1, [0xff; 6], CLIENT_MAC, CLIENT_MAC, GUEST_IP, [0; 6], GUEST_IP,
                ),
            ),
            ("ARP to another unicast MAC", with(request(), 0, &other_mac)),
            (
                "ARP to a multicast MAC",
                with(request(), 0, &[0x01, 0, 0x5e, 0, 0, 1]),
            ),
            ("ARP from the guest's MAC", with(request(), 6, &GUEST_MAC)),
            (
                "ARP for another address",
                with(request(), 38, &NOBODY_IP.octets()),
            ),
            (
                "ARP for a guest that does not answer ARP",
                with(request(), 38, &other_ip.octets()),
            ),
            ("echo to another MAC", with(ping(), 0, &other_mac)),
            ("echo to broadcast", with(ping(), 0, &[0xff; 6])),
            ("echo from the guest's MAC", with(ping(), 6, &GUEST_MAC)),
            (
                "echo to a guest that does not answer echo",
                echo(
                    GUEST_MAC,
                    CLIENT_MAC,
                    Ip {
                        dst: other_ip,
                        ..REQUEST_IP
                    },
                    8,
                    b"x",
                ),
            ),
            (
                "echo to another address",
                echo(
                    GUEST_MAC,
                    CLIENT_MAC,
                    Ip {
                        dst: NOBODY_IP,
                        ..REQUEST_IP
                    },
                    8,
                    b"x",
                ),
            ),
            (
                "echo reply",
                echo(GUEST_MAC, CLIENT_MAC, REQUEST_IP, 0, b"x"),
            ),
            (
                "ICMP timestamp",
                echo(GUEST_MAC, CLIENT_MAC, REQUEST_IP, 13, b"x"),
            ),
            ("echo, code 1", with(ping(), 35, &[1])),
            (
                "IPv4 header checksum wrong",
                with(ping(), 24, &[0xde, 0xad]),
            ),
            (
                "more fragments",
                echo(
                    GUEST_MAC,
                    CLIENT_MAC,
                    Ip {
                        flags: 0x2000,
                        ..REQUEST_IP
                    },
                    8,
                    b"x",
                ),
            ),
            (
                "fragment offset",
                echo(
                    GUEST_MAC,
                    CLIENT_MAC,
                    Ip {
                        flags: 0x0001,
                        ..REQUEST_IP
                    },
                    8,
                    b"x",
                ),
            ),
            ("UDP", with(ping(), 23, &[17])),
            ("IPv6 ethertype", with(ping(), 12, &[0x86, 0xdd])),
            ("LLDP", with(ping(), 12, &[0x88, 0xcc])),
        ];
        // Header fields that no longer hold together (checksum made to hold again where the
        // header changed, so that only the field is wrong).
        let fix = |mut f: Vec<u8>| {
            f[24..26].copy_from_slice(&[0, 0]);
            let c = checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            f
        };
        cases.push(("IPv6 version", fix(with(ping(), 14, &[0x65]))));
        cases.push(("IPv4 options (IHL 6)", fix(with(ping(), 14, &[0x46]))));
        let len = ping().len() as u16 - 14;
        cases.push((
            "total length past the frame",
            fix(with(ping(), 16, &(len + 1).to_be_bytes())),
        ));
        cases.push(("total length 0 (GSO)", fix(with(ping(), 16, &[0, 0]))));
        cases.push(("total length 27", fix(with(ping(), 16, &[0, 27]))));
        for tpid in [0x8100u16, 0x88a8] {
            cases.push(("tagged ARP request", tagged_arp_request(tpid)));
            let untagged = ping();
            let mut tagged = untagged[..12].to_vec();
            tagged.extend_from_slice(&tpid.to_be_bytes());
            tagged.extend_from_slice(&[0, 10]);
            tagged.extend_from_slice(&untagged[12..]);
            cases.push(("tagged echo request", tagged));
        }
        // Every frame cut short, down to an Ethernet header.
        for whole in [request(), ping()] {
            let needed = if whole == request() { 42 } else { whole.len() };
            for len in 14..needed {
                cases.push(("truncated", whole[..len].to_vec()));
            }
        }
        for (name, frame) in &cases {
            let decision = decide(r, frame);
            assert!(
                matches!(decision, None | Some(Decision::Pass)),
                "{name}: {frame:02x?}: {decision:?}"
            );
        }
        assert_eq!(answered(r, GUEST_IP), Some(Answered::default()));
        // And the unbroken ones are answered.
        assert!(matches!(decide(r, &request()), Some(Decision::Reply(_))));
        assert!(matches!(decide(r, &ping()), Some(Decision::Reply(_))));
    });
}

#[test]
fn arbitrary_bytes_are_passed_or_answered_never_dropped() {
    each_hook("xz", |_, r| {
        // Frames near the answerable ones, with random bytes changed (xorshift, fixed seed).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            arp(
                1, [0xff; 6], CLIENT_MAC, CLIENT_MAC, CLIENT_IP, [0; 6], GUEST_IP,
            ),
            echo(GUEST_MAC, CLIENT_MAC, REQUEST_IP, 8, b"0123456789abcdef"),
        ];
        let mut user = userspace();
        let mut replies = 0;
        for i in 0..4000 {
            let mut f = seeds[i % 2].clone();
            for _ in 0..(next() % 3) {
                let at = (next() as usize) % f.len();
                f[at] = next() as u8;
            }
            if next() % 4 == 0 {
                f.truncate(14 + (next() as usize) % (f.len() - 13));
            }
            match decide(r, &f) {
                None | Some(Decision::Pass) => {}
                Some(Decision::Reply(xdp)) => {
                    replies += 1;
                    // Whatever the kernel answers, userspace answers the same; but for a bad
                    // ICMP checksum, which it drops.
                    match userspace_reply(&mut user, &f) {
                        Some(theirs) => assert!(
                            same_reply(&xdp, &theirs, &f),
                            "request {f:02x?}\nkernel {xdp:02x?}\nuserspace {theirs:02x?}"
                        ),
                        None => assert!(
                            f[12..14] == [0x08, 0x00] && checksum(&f[34..]) != 0,
                            "only the kernel answers {f:02x?}"
                        ),
                    }
                }
                Some(Decision::Unexpected(action)) => panic!("action {action} for {f:02x?}"),
            }
        }
        assert!(replies > 400, "only {replies} of 4000 answered");
    });
}

#[test]
fn answered_at_the_client_port_the_request_never_crosses_the_bridge() {
    let lab = Lab::new("xi");
    // In generic XDP on the surrogate's end, so that what the bridge sends it is counted on
    // the way (a tcx program on its peer's egress takes frames before the veth counts
    // them).
    let mut r = lab.attach(Hook::GenericXdp, Vlans::Possible);
    r.insert(GUEST_IP, guest(), BOTH).expect("insert");
    let (xb, xp) = lab.surrogate.run(|| {
        let mut nl = vmnap_host::Netlink::open().expect("netlink");
        (
            nl.link_index("xb").expect("xb"),
            nl.link_index("xp").expect("xp"),
        )
    });
    // What the bridge sent to the surrogate's port.
    let to_surrogate = || {
        lab.surrogate.run(move || {
            vmnap_host::Netlink::open()
                .and_then(|mut nl| nl.link_stats(xp))
                .expect("stats")
                .tx_packets
        })
    };

    // At the surrogate's port: every request crosses the bridge to it.
    let before = to_surrogate();
    assert_eq!(lab.ping(GUEST_IP, 20), 20);
    assert!(
        to_surrogate() - before >= 20,
        "the requests went to the surrogate's port"
    );

    lab.surrogate
        .run(|| r.attach_port(xb))
        .expect("attach at xb");
    assert_eq!(r.ports().collect::<Vec<_>>(), vec![xb]);
    lab.surrogate
        .run(|| r.attach_port(xb))
        .expect("attaching again does nothing");
    let before = to_surrogate();
    let answers_before = answered(&r, GUEST_IP).expect("in the map");
    assert_eq!(lab.ping(GUEST_IP, 20), 20);
    assert_eq!(lab.arping(GUEST_IP, 2, 3), (2, 2));
    let crossed = to_surrogate() - before;
    assert!(
        crossed < 5,
        "{crossed} frames crossed the bridge to the surrogate's port"
    );
    let answers = answered(&r, GUEST_IP).expect("in the map");
    assert_eq!(
        answers.echo - answers_before.echo,
        20,
        "counted in the same map"
    );
    assert_eq!(answers.arp - answers_before.arp, 2);

    // An address not in the map goes on to the bridge.
    r.remove(GUEST_IP).expect("remove");
    assert_eq!(lab.arping(GUEST_IP, 1, 1), (0, 0));
    r.insert(GUEST_IP, guest(), BOTH).expect("insert");

    // Detached, the requests cross the bridge again, and are still answered.
    r.detach_port(xb);
    assert_eq!(r.ports().count(), 0);
    let before = to_surrogate();
    assert_eq!(lab.ping(GUEST_IP, 20), 20);
    assert!(to_surrogate() - before >= 20);
}
