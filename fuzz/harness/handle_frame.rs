// The harness of the `handle_frame` fuzz target, shared word for word with the test
// `crates/core/tests/fuzz_seeds.rs` (both `include!` this file), so that CI runs the seed set
// through the same code the fuzzer does.
//
// Input: one byte of virtio-net header flags (bit 0: the checksum is left to the offload),
// then a frame. A surrogate with four guests in different states gets the frame, then its
// timers run and every guest's queue and every action is read.
//
// Invariants checked besides "does not panic":
// - every frame gets at least one verdict (the daemon's counters rely on it);
// - every frame the surrogate sends is a whole Ethernet frame from the MAC of a guest that
//   was asleep (or waking with its port down) when the frame came in: it never speaks for an
//   awake guest or for an address that is no guest's.

use std::net::{Ipv4Addr, Ipv6Addr};

use vmnap_core::{
    Action, Answers, Cut, GuestId, GuestSpec, GuestState, Instant, MulticastPolicy, PortRule,
    QueueLimits, Recorder, Surrogate, Transport, VirtioNetHdr,
};
use vmnap_wire::vlan::LinkRepr;
use vmnap_wire::MacAddr;

/// The MAC, VLAN and addresses of the guest in the fixture captures.
pub const FIXTURE_GUEST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x01]);

/// Four guests: the fixtures' guest, asleep, with every responder on; a guest on VLAN 10,
/// asleep, with a tiny queue and multicast dropped; an awake guest; a guest falling asleep.
pub fn surrogate() -> Surrogate {
    let mut s = Surrogate::new(0x5eed);
    let fixture = GuestSpec {
        ipv6: vec![Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11)],
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
        ..GuestSpec::new("fixture", FIXTURE_GUEST_MAC, Ipv4Addr::new(198, 18, 0, 11))
    };
    let tagged = GuestSpec {
        vlan: 10,
        ipv6: vec![Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11)],
        multicast: MulticastPolicy::Drop,
        limits: QueueLimits {
            frames: 2,
            bytes: 256,
            multicast_frames: 1,
        },
        ..GuestSpec::new("tagged", FIXTURE_GUEST_MAC, Ipv4Addr::new(198, 18, 0, 11))
    };
    let awake = GuestSpec::new(
        "awake",
        MacAddr([0x02, 0, 0, 0, 0x01, 0x03]),
        Ipv4Addr::new(198, 18, 0, 13),
    );
    let falling = GuestSpec {
        ipv6: vec![Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x14)],
        ..GuestSpec::new(
            "falling",
            MacAddr([0x02, 0, 0, 0, 0x01, 0x04]),
            Ipv4Addr::new(198, 18, 0, 14),
        )
    };
    let ids: Vec<GuestId> = [fixture, tagged, awake, falling]
        .into_iter()
        .map(|spec| s.add_guest(spec).expect("distinct guests"))
        .collect();
    for &id in &[ids[0], ids[1]] {
        s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
            .expect("awake guest");
    }
    s.sleep(ids[3], Instant::ZERO).expect("awake guest");
    while s.poll_action().is_some() {}
    s
}

/// Runs one input through a fresh surrogate; panics if an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&flags, frame)) = data.split_first() else {
        return;
    };
    let vnet = VirtioNetHdr {
        flags,
        ..VirtioNetHdr::NONE
    };
    let mut s = surrogate();
    // Late enough that keepalive probes are answered.
    let now = Instant::from_millis(60_000);
    let speakers: Vec<(u16, MacAddr)> = s
        .guest_ids()
        .filter(|id| {
            matches!(
                s.state(*id),
                Some(GuestState::Sleeping | GuestState::Waking { port_up: false })
            )
        })
        .filter_map(|id| s.spec(id).map(|spec| (spec.vlan, spec.mac)))
        .collect();

    let mut out = Recorder::default();
    s.handle_frame(now, vnet, frame, &mut out);
    assert!(!out.verdicts.is_empty(), "a frame without a verdict");
    if let Some(due) = s.poll_at() {
        s.handle_timeout(due, &mut out);
    }
    for frame in &out.sent {
        let link = LinkRepr::parse(frame).expect("the surrogate sends whole Ethernet frames");
        assert!(
            speakers.contains(&(link.vlan, link.src)),
            "sent from {} on VLAN {}, which is no sleeping guest's",
            link.src,
            link.vlan
        );
    }
    let ids: Vec<GuestId> = s.guest_ids().collect();
    let mut queued = 0usize;
    for id in ids {
        for q in s.held(id) {
            queued += q.bytes.len();
        }
        let _ = s.state(id);
    }
    // Only the sleeping guests are resumed, and only when a frame asked (the guest falling
    // asleep is told of a wake too, which cancels its sleep: it was never stopped).
    let resumes = std::iter::from_fn(|| s.poll_action())
        .filter(|a| matches!(a, Action::Resume(_)))
        .count();
    assert!(resumes <= out.wakes.len(), "a resume no frame asked for");
    assert!(resumes <= 2, "only the two sleeping guests can be resumed");
    let _ = queued;
}
