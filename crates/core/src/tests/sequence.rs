//! The sleep and wake sequence, in virtual time.

use std::collections::BTreeMap;

use proptest::prelude::{any, Just, ProptestConfig, Strategy};
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use super::*;
use crate::sequence::{retry_delay, MAX_PROBES, MAX_RETRY_DELAY, QUIET_WAIT, REPLAY_RUN};

use crate::sequence::{PROBE_TIMEOUT, QUIET, SETTLE, UNDO_QUIET_WAIT};

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// A surrogate with one guest, awake, whose probes come from [`SURROGATE_MAC`].
fn awake() -> (Surrogate, GuestId) {
    let mut s = Surrogate::new(7);
    let id = s.add_guest(spec(0)).expect("fresh surrogate");
    s.set_probe_mac(SURROGATE_MAC);
    (s, id)
}

/// A surrogate with one guest, asleep since `t = 0` with its port disabled, whose probes
/// come from [`SURROGATE_MAC`].
fn sleeping() -> (Surrogate, GuestId) {
    let (mut s, id) = asleep(0);
    s.set_probe_mac(SURROGATE_MAC);
    (s, id)
}

/// An action as the tests compare it: a probe's bytes are checked once, where it is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Did {
    Claim,
    Cut,
    Suspend,
    Inspect,
    Resume,
    Restore(Cut),
    Replay(Vec<Vec<u8>>),
    Probe,
    HandBack,
    Notify(Notice),
}

/// Everything the surrogate has to be done for guest `id`, oldest first. Every action is
/// for `id`, and every probe is an ARP probe for the guest's address from the surrogate's
/// port.
fn did(s: &mut Surrogate, id: GuestId) -> Vec<Did> {
    actions(s)
        .into_iter()
        .map(|a| {
            assert_eq!(a.guest(), id, "{a:?}");
            match a {
                Action::Claim(_) => Did::Claim,
                Action::Cut(_) => Did::Cut,
                Action::Suspend(_) => Did::Suspend,
                Action::Inspect(_) => Did::Inspect,
                Action::Resume(_) => Did::Resume,
                Action::Restore(_, cut) => Did::Restore(cut),
                Action::Replay(_, run) => {
                    Did::Replay(run.iter().map(|f| f.bytes.to_vec()).collect())
                }
                Action::Probe(_, probe) => {
                    let parsed = classify::parse(&probe).expect("probes parse");
                    assert_eq!(
                        (parsed.link.dst, parsed.link.src),
                        (GUEST_MAC, SURROGATE_MAC)
                    );
                    assert!(
                        matches!(
                            parsed.net,
                            Net::Arp { op: ArpOperation::Request, sender_ip, target_ip, .. }
                                if sender_ip == Ipv4Addr::UNSPECIFIED && target_ip == GUEST_V4
                        ),
                        "not an ARP probe for the guest"
                    );
                    Did::Probe
                }
                Action::HandBack(_) => Did::HandBack,
                Action::Notify(_, notice) => Did::Notify(notice),
            }
        })
        .collect()
}

/// A unicast datagram to the guest that is held for it but does not wake it; `n` tells it
/// apart.
fn datagram(n: u32) -> Vec<u8> {
    udp_v4(5353, &n.to_be_bytes())
}

/// A TCP SYN to the guest's port 80, which wakes it; `n` tells it apart.
fn numbered_syn(n: u32) -> Vec<u8> {
    segment(
        &to_guest_v4(0),
        Segment {
            src_port: 40000,
            dst_port: 80,
            seq: n,
            syn: true,
            window: 64240,
            ..Segment::default()
        },
    )
}

/// A broadcast on the guest's VLAN, which never wakes it; `n` tells it apart.
fn broadcast(n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    respond::udp(
        &mut out,
        &Route::V4 {
            link: link(0, EthernetAddress::BROADCAST),
            src: CLIENT_V4,
            dst: Ipv4Addr::BROADCAST,
        },
        68,
        67,
        &n.to_be_bytes(),
    );
    out
}

/// The guest's answer to the probe out, at `at`.
fn answer_probe(s: &mut Surrogate, at: Instant) {
    s.handle_frame(
        at,
        VirtioNetHdr::NONE,
        &probe_answer(SURROGATE_MAC),
        &mut Recorder::default(),
    );
}

/// Waits, with everything relayed fenced, for the quiet moment [`QUIET`] after the last
/// relay at `last_relay`, and checks that the bridge is then switched back.
fn hand_back_when_quiet(s: &mut Surrogate, id: GuestId, last_relay: Instant) {
    let quiet = last_relay + QUIET;
    assert_eq!(s.poll_at(), Some(quiet), "waiting for a quiet moment");
    s.handle_timeout(quiet, &mut Recorder::default());
    assert_eq!(did(s, id), [Did::HandBack]);
    assert_eq!(s.phase(id), Some(Phase::HandingBack));
}

/// Takes the guest `id`, awake, to `Settling`: the sleep asked at `t` ms and claimed at
/// once. Nothing is cut yet; the cut is due [`SETTLE`] later, which is returned.
fn settling(s: &mut Surrogate, id: GuestId, t: u64) -> Instant {
    assert_eq!(s.sleep(id, ms(t)), Ok(Asked::Started));
    assert_eq!(did(s, id), [Did::Claim]);
    s.done(id, Done::Claimed { ok: true }, ms(t))
        .expect("claiming");
    assert!(did(s, id).is_empty(), "nothing is cut before SETTLE");
    assert_eq!(s.phase(id), Some(Phase::Settling));
    assert_eq!(s.state(id), Some(GuestState::FallingAsleep));
    let cut_at = ms(t) + SETTLE;
    assert_eq!(s.poll_at(), Some(cut_at));
    cut_at
}

/// Takes the guest `id`, awake, to `Cutting`: the sleep asked at `t` ms and claimed at once,
/// the cut asked at `t` + [`SETTLE`], which is returned.
fn cutting(s: &mut Surrogate, id: GuestId, t: u64) -> Instant {
    let cut_at = settling(s, id, t);
    s.handle_timeout(cut_at, &mut Recorder::default());
    assert_eq!(did(s, id), [Did::Cut]);
    assert_eq!(s.phase(id), Some(Phase::Cutting));
    assert_eq!(s.poll_at(), None, "the cut has no deadline here");
    cut_at
}

/// Takes the guest `id`, awake, through a successful sleep: asked and claimed at 0 ms, cut
/// (`cut`) at 2 ([`SETTLE`]), stopped at 3, found with no work left at 4.
fn fall_asleep(s: &mut Surrogate, id: GuestId, cut: Cut) {
    let cut_at = cutting(s, id, 0);
    assert_eq!(cut_at, ms(2));
    s.done(id, Done::Cut(Some(cut)), cut_at).expect("cutting");
    s.done(id, Done::Suspended { ok: true }, ms(3))
        .expect("suspending");
    s.done(id, Done::Inspected { busy: Some(false) }, ms(4))
        .expect("verifying");
    assert_eq!(
        did(s, id),
        [Did::Suspend, Did::Inspect, Did::Notify(Notice::FellAsleep)]
    );
    assert_eq!(s.phase(id), Some(Phase::Asleep));
}

/// Takes the guest `id` from awake to `Suspending` (asked and claimed at 0 ms, its port cut
/// at 2 ([`SETTLE`]) and disabled then).
fn suspending(s: &mut Surrogate, id: GuestId) {
    let cut_at = cutting(s, id, 0);
    assert_eq!(cut_at, ms(2));
    s.done(id, Done::Cut(Some(Cut::PortDisabled)), cut_at)
        .expect("cutting");
    assert_eq!(did(s, id), [Did::Suspend]);
    assert_eq!(s.phase(id), Some(Phase::Suspending));
}

fn queued(r: &Recorder, id: GuestId) -> bool {
    r.verdicts.contains(&(Some(id), Verdict::Queued))
}

#[test]
fn every_pair_of_phases_is_decided() {
    use Phase::*;
    // The same table as `Phase::valid_transition`, written out again on purpose: a change
    // to one must be made to the other.
    const ALLOWED: [(Phase, Phase); 22] = [
        (Awake, Claiming),
        (Awake, Asleep),
        (Claiming, Settling),
        (Claiming, Replaying),
        (Settling, Cutting),
        (Settling, Replaying),
        (Cutting, Suspending),
        (Cutting, Restoring),
        (Cutting, Replaying),
        (Suspending, Verifying),
        (Suspending, Resuming),
        (Suspending, Restoring),
        (Verifying, Asleep),
        (Verifying, Resuming),
        (Asleep, Resuming),
        (Resuming, Restoring),
        (Resuming, Replaying),
        (Resuming, Retrying),
        (Retrying, Resuming),
        (Restoring, Replaying),
        (Replaying, HandingBack),
        (HandingBack, Awake),
    ];
    // `ALL` holds every phase once, in declaration order: this match fails to compile when
    // a phase is added, and the loop fails when `ALL` misses or repeats one.
    let position = |p: Phase| match p {
        Awake => 0,
        Claiming => 1,
        Settling => 2,
        Cutting => 3,
        Suspending => 4,
        Verifying => 5,
        Asleep => 6,
        Resuming => 7,
        Retrying => 8,
        Restoring => 9,
        Replaying => 10,
        HandingBack => 11,
    };
    for (i, p) in Phase::ALL.into_iter().enumerate() {
        assert_eq!(position(p), i, "{p}");
    }
    for from in Phase::ALL {
        for to in Phase::ALL {
            assert_eq!(
                from.valid_transition(to),
                ALLOWED.contains(&(from, to)),
                "{from} -> {to}"
            );
        }
    }

    let states: Vec<_> = Phase::ALL.into_iter().map(Phase::state).collect();
    assert_eq!(
        states,
        [
            GuestState::Awake,
            GuestState::FallingAsleep,
            GuestState::FallingAsleep,
            GuestState::FallingAsleep,
            GuestState::Sleeping,
            GuestState::Sleeping,
            GuestState::Sleeping,
            GuestState::Waking { port_up: false },
            GuestState::Sleeping,
            GuestState::Waking { port_up: false },
            GuestState::Waking { port_up: true },
            GuestState::Waking { port_up: true },
        ]
    );

    // Every phase can be reached from Awake, and Awake from every phase: no phase is a
    // dead end.
    let reach = |from: Phase, forward: bool| {
        let mut seen = vec![from];
        let mut i = 0;
        while i < seen.len() {
            let at = seen[i];
            for p in Phase::ALL {
                let step = if forward {
                    at.valid_transition(p)
                } else {
                    p.valid_transition(at)
                };
                if step && !seen.contains(&p) {
                    seen.push(p);
                }
            }
            i += 1;
        }
        seen.sort();
        seen
    };
    assert_eq!(reach(Awake, true), Phase::ALL, "reachable from awake");
    assert_eq!(reach(Awake, false), Phase::ALL, "leading back to awake");
}

#[test]
fn sleep_claims_settles_cuts_suspends_and_inspects_then_reports_the_guest_asleep() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    assert_eq!(s.sleep(id, ms(0)), Ok(Asked::Started));
    assert_eq!(did(&mut s, id), [Did::Claim]);
    assert_eq!(s.phase(id), Some(Phase::Claiming));
    assert_eq!(s.state(id), Some(GuestState::FallingAsleep));
    assert_eq!(s.poll_at(), None, "the claim has no deadline here");

    s.done(id, Done::Claimed { ok: true }, ms(1))
        .expect("claiming");
    // What was on its way to the guest is taken in through its port first.
    assert!(did(&mut s, id).is_empty(), "no cut before SETTLE");
    assert_eq!(s.phase(id), Some(Phase::Settling));
    assert_eq!(s.state(id), Some(GuestState::FallingAsleep));
    assert_eq!(s.poll_at(), Some(ms(1) + SETTLE));

    s.handle_timeout(ms(1) + SETTLE, &mut r);
    assert_eq!(did(&mut s, id), [Did::Cut]);
    assert_eq!(s.phase(id), Some(Phase::Cutting));
    assert_eq!(s.state(id), Some(GuestState::FallingAsleep));
    assert_eq!(s.poll_at(), None, "the cut has no deadline here");

    s.done(id, Done::Cut(Some(Cut::PortDisabled)), ms(4))
        .expect("cutting");
    assert_eq!(did(&mut s, id), [Did::Suspend]);
    assert_eq!(s.phase(id), Some(Phase::Suspending));
    // The surrogate stands in for the guest from the cut on, before the backend is done.
    assert_eq!(s.state(id), Some(GuestState::Sleeping));
    handle(&mut s, 4, &arp_request(0, GUEST_V4), &mut r);
    assert_eq!(r.verdicts, [(Some(id), Verdict::Answered(AnswerKind::Arp))]);

    s.done(id, Done::Suspended { ok: true }, ms(5))
        .expect("suspending");
    // Stopped, but not asleep yet: what it still has to do is read first.
    assert_eq!(did(&mut s, id), [Did::Inspect]);
    assert_eq!(s.phase(id), Some(Phase::Verifying));
    assert_eq!(s.state(id), Some(GuestState::Sleeping));
    assert_eq!(s.poll_at(), None, "the inspection has no deadline here");
    r.take();
    handle(&mut s, 5, &arp_request(0, GUEST_V4), &mut r);
    assert_eq!(r.verdicts, [(Some(id), Verdict::Answered(AnswerKind::Arp))]);

    s.done(id, Done::Inspected { busy: Some(false) }, ms(6))
        .expect("verifying");
    assert_eq!(did(&mut s, id), [Did::Notify(Notice::FellAsleep)]);
    assert_eq!(s.phase(id), Some(Phase::Asleep));
    assert_eq!(s.state(id), Some(GuestState::Sleeping));
    assert_eq!(s.poll_at(), None, "nothing to wait for");
}

#[test]
fn wake_while_claiming_cancels_the_sleep_and_replays_what_was_held() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    assert_eq!(s.sleep(id, ms(0)), Ok(Asked::Started));
    assert_eq!(did(&mut s, id), [Did::Claim]);
    handle(&mut s, 1, &datagram(1), &mut r);
    assert!(
        queued(&r, id),
        "unicast is held while the guest falls asleep"
    );
    assert_eq!(s.wake(id, WakeCause::Requested, ms(2)), Ok(Asked::Started));
    assert_eq!(s.wake(id, WakeCause::Requested, ms(2)), Ok(Asked::UnderWay));
    assert!(did(&mut s, id).is_empty(), "the claim is still out");

    s.done(id, Done::Claimed { ok: true }, ms(3))
        .expect("claiming");
    // Nothing was cut: no restore.
    assert_eq!(
        did(&mut s, id),
        [
            Did::Notify(Notice::SleepCancelled),
            Did::Replay(vec![datagram(1)]),
            Did::Probe
        ]
    );
    assert_eq!(s.phase(id), Some(Phase::Replaying));
    answer_probe(&mut s, ms(4));
    assert!(did(&mut s, id).is_empty());
    hand_back_when_quiet(&mut s, id, ms(3));
    s.done(id, Done::HandedBack, ms(6)).expect("handing back");
    assert_eq!(did(&mut s, id), [Did::Notify(Notice::Awake { wake: None })]);
    assert_eq!(s.phase(id), Some(Phase::Awake));
    assert_eq!(s.held(id).count(), 0);
}

#[test]
fn claimed_sleep_settles_for_settle_then_cuts_exactly_once() {
    assert_eq!(SETTLE, Duration::from_millis(2));
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    assert_eq!(s.sleep(id, ms(0)), Ok(Asked::Started));
    assert_eq!(did(&mut s, id), [Did::Claim]);
    s.done(id, Done::Claimed { ok: true }, ms(1))
        .expect("claiming");
    assert!(did(&mut s, id).is_empty(), "nothing asked on the claim");
    assert_eq!(s.phase(id), Some(Phase::Settling));
    assert_eq!(s.state(id), Some(GuestState::FallingAsleep));
    let cut_at = ms(1) + SETTLE;
    assert_eq!(s.poll_at(), Some(cut_at));

    // Meanwhile: a sleep asked is the one under way, the frames are held, nothing woken.
    assert_eq!(s.sleep(id, ms(2)), Ok(Asked::UnderWay));
    handle(&mut s, 2, &datagram(1), &mut r);
    assert!(queued(&r, id));
    assert!(r.wakes.is_empty());
    for at in [ms(1), ms(2), Instant::from_micros(cut_at.micros() - 1)] {
        s.handle_timeout(at, &mut r);
        assert!(did(&mut s, id).is_empty(), "no cut at {at}, before SETTLE");
        assert_eq!(s.phase(id), Some(Phase::Settling), "at {at}");
        assert_eq!(s.poll_at(), Some(cut_at), "at {at}");
    }

    s.handle_timeout(cut_at, &mut r);
    assert_eq!(did(&mut s, id), [Did::Cut]);
    assert_eq!(s.phase(id), Some(Phase::Cutting));
    assert_eq!(s.state(id), Some(GuestState::FallingAsleep));
    assert_eq!(s.poll_at(), None, "the cut has no deadline here");
    // The deadline is spent: later timeouts ask for nothing more.
    s.handle_timeout(cut_at + Duration::from_millis(10), &mut r);
    assert!(did(&mut s, id).is_empty(), "cut once");
    assert_eq!(s.phase(id), Some(Phase::Cutting));

    s.done(id, Done::Cut(Some(Cut::PortDisabled)), ms(20))
        .expect("cutting");
    assert_eq!(did(&mut s, id), [Did::Suspend]);
    assert_eq!(s.phase(id), Some(Phase::Suspending));
    assert_eq!(s.held(id).count(), 1);
}

#[test]
fn operator_wake_while_settling_cancels_the_sleep_at_once_with_nothing_to_restore() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    assert_eq!(s.sleep(id, ms(0)), Ok(Asked::Started));
    handle(&mut s, 0, &datagram(1), &mut r);
    s.done(id, Done::Claimed { ok: true }, ms(1))
        .expect("claiming");
    handle(&mut s, 2, &datagram(2), &mut r);
    assert!(queued(&r, id));
    assert_eq!(s.phase(id), Some(Phase::Settling));
    let mut all = did(&mut s, id);
    assert_eq!(all, [Did::Claim]);

    assert_eq!(s.wake(id, WakeCause::Requested, ms(2)), Ok(Asked::Started));
    // At once, not at the cut's deadline: nothing was cut, so nothing is restored.
    let cancelled = did(&mut s, id);
    assert_eq!(
        cancelled,
        [
            Did::Notify(Notice::SleepCancelled),
            Did::Replay(vec![datagram(1), datagram(2)]),
            Did::Probe
        ]
    );
    all.extend(cancelled);
    assert_eq!(s.phase(id), Some(Phase::Replaying));
    assert_eq!(s.state(id), Some(GuestState::Waking { port_up: true }));
    assert_eq!(
        s.poll_at(),
        Some(ms(2) + UNDO_QUIET_WAIT),
        "the undo's wait for a quiet moment, before the probe's deadline"
    );
    assert_eq!(s.wake(id, WakeCause::Requested, ms(2)), Ok(Asked::UnderWay));
    assert_eq!(
        s.sleep(id, ms(2)),
        Ok(Asked::Already(GuestState::Waking { port_up: true }))
    );
    assert!(r.wakes.is_empty(), "no frame asked for a wake");

    // The cut's deadline passes: nothing is cut.
    s.handle_timeout(ms(1) + SETTLE, &mut r);
    assert!(did(&mut s, id).is_empty(), "no cut once cancelled");
    answer_probe(&mut s, ms(3));
    assert!(did(&mut s, id).is_empty());
    hand_back_when_quiet(&mut s, id, ms(2));
    s.done(id, Done::HandedBack, ms(5)).expect("handing back");
    let end = did(&mut s, id);
    assert_eq!(end, [Did::Notify(Notice::Awake { wake: None })]);
    all.extend(end);
    assert!(
        !all.iter().any(|d| matches!(d, Did::Cut | Did::Suspend)),
        "{all:?}"
    );
    assert_eq!(s.phase(id), Some(Phase::Awake));
    assert_eq!(s.held(id).count(), 0);
    assert_eq!(s.poll_at(), None);
}

#[test]
fn a_called_off_sleep_under_traffic_that_never_pauses_hands_back_after_the_undo_wait() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    let _cut_at = settling(&mut s, id, 0);
    // A request calls the sleep off at 1 ms; then a datagram every millisecond, each relayed
    // once its probe is answered.
    handle(&mut s, 1, &numbered_syn(1), &mut r);
    let mut relayed = replayed(&actions(&mut s)).0;
    let mut sent = vec![numbered_syn(1)];
    let mut t = 1;
    while s.phase(id) == Some(Phase::Replaying) {
        answer_probe(&mut s, ms(t));
        t += 1;
        let frame = datagram(t as u32);
        handle(&mut s, t, &frame, &mut r);
        sent.push(frame);
        s.handle_timeout(ms(t), &mut r);
        relayed.extend(replayed(&actions_snapshot(&mut s, id)).0);
        assert!(t < 100, "still replaying after {t} ms");
    }
    // No quiet moment came: the MAC is handed back at the undo's wait, not after 500 ms.
    assert_eq!(s.phase(id), Some(Phase::HandingBack));
    assert_eq!(ms(t), ms(1) + UNDO_QUIET_WAIT);
    s.done(id, Done::HandedBack, ms(t)).expect("handing back");
    relayed.extend(replayed(&actions(&mut s)).0);
    assert_eq!(relayed, sent, "every frame relayed once, in order");
}

/// The actions out now, with the notices checked: only `NoQuietMoment` may come while
/// replaying under traffic.
fn actions_snapshot(s: &mut Surrogate, id: GuestId) -> Vec<Action> {
    let all = actions(s);
    for a in &all {
        if let Action::Notify(g, n) = a {
            assert_eq!(*g, id);
            assert_eq!(*n, Notice::NoQuietMoment);
        }
    }
    all
}

#[test]
fn syn_while_settling_is_held_and_cancels_the_sleep_at_once() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    let cut_at = settling(&mut s, id, 0);
    handle(&mut s, 1, &numbered_syn(1), &mut r);
    assert!(queued(&r, id), "held");
    assert!(r.sent.is_empty(), "not answered by the surrogate");
    assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 80 })]);
    assert_eq!(
        did(&mut s, id),
        [
            Did::Notify(Notice::SleepCancelled),
            Did::Replay(vec![numbered_syn(1)]),
            Did::Probe
        ]
    );
    assert_eq!(s.phase(id), Some(Phase::Replaying));

    // A second frame that would wake is held, asks nothing, and follows the first.
    r.take();
    handle(&mut s, 1, &udp_v4(9000, b"late"), &mut r);
    assert!(queued(&r, id));
    assert!(r.wakes.is_empty(), "the sleep is already cancelled");
    s.handle_timeout(cut_at, &mut r);
    assert!(did(&mut s, id).is_empty(), "no cut once cancelled");
    answer_probe(&mut s, ms(3));
    assert_eq!(
        did(&mut s, id),
        [Did::Replay(vec![udp_v4(9000, b"late")]), Did::Probe]
    );
    answer_probe(&mut s, ms(4));
    assert!(did(&mut s, id).is_empty());
    hand_back_when_quiet(&mut s, id, ms(3));
    s.done(id, Done::HandedBack, ms(6)).expect("handing back");
    assert_eq!(did(&mut s, id), [Did::Notify(Notice::Awake { wake: None })]);
    assert_eq!(s.phase(id), Some(Phase::Awake));
    assert_eq!(s.held(id).count(), 0);
}

#[test]
fn udp_to_a_wake_port_while_settling_cancels_the_sleep_the_same_way() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    settling(&mut s, id, 0);
    handle(&mut s, 1, &datagram(1), &mut r);
    handle(&mut s, 1, &udp_v4(9000, b"wake"), &mut r);
    assert_eq!(r.wakes, [(id, WakeCause::Udp { port: 9000 })]);
    assert_eq!(
        did(&mut s, id),
        [
            Did::Notify(Notice::SleepCancelled),
            Did::Replay(vec![datagram(1), udp_v4(9000, b"wake")]),
            Did::Probe
        ]
    );
    assert_eq!(s.phase(id), Some(Phase::Replaying));
}

#[test]
fn frame_that_does_not_wake_while_settling_is_held_and_the_sleep_goes_on() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    let cut_at = settling(&mut s, id, 0);
    handle(&mut s, 1, &datagram(1), &mut r);
    assert!(queued(&r, id), "held");
    assert!(r.wakes.is_empty(), "UDP to 5353 does not wake");
    assert!(did(&mut s, id).is_empty());
    assert_eq!(s.phase(id), Some(Phase::Settling));
    assert_eq!(s.poll_at(), Some(cut_at), "the deadline stands");

    s.handle_timeout(cut_at, &mut r);
    assert_eq!(did(&mut s, id), [Did::Cut]);
    s.done(id, Done::Cut(Some(Cut::PortDisabled)), ms(3))
        .expect("cutting");
    s.done(id, Done::Suspended { ok: true }, ms(4))
        .expect("suspending");
    s.done(id, Done::Inspected { busy: Some(false) }, ms(5))
        .expect("verifying");
    assert_eq!(
        did(&mut s, id),
        [Did::Suspend, Did::Inspect, Did::Notify(Notice::FellAsleep)]
    );
    assert_eq!(s.phase(id), Some(Phase::Asleep));
    assert_eq!(s.held(id).count(), 1, "still held, asleep");

    // Replayed at the wake, once, before the frame that caused it.
    handle(&mut s, 10, &numbered_syn(2), &mut r);
    assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 80 })]);
    assert_eq!(did(&mut s, id), [Did::Resume]);
    let report = finish_wake(&mut s, id, 10, vec![datagram(1), numbered_syn(2)]);
    assert_eq!(
        report,
        WakeReport {
            cause: WakeCause::TcpSyn { port: 80 },
            took: Duration::from_millis(3),
            handed_back_after: Duration::from_millis(5),
            replayed: 2,
            failed_tries: 0,
        }
    );
}

#[test]
fn wake_while_cutting_cancels_the_sleep_restores_the_port_and_replays() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    // Asked and claimed at 0 ms, cut asked at 2.
    cutting(&mut s, id, 0);
    handle(&mut s, 2, &datagram(1), &mut r);
    assert!(queued(&r, id));
    assert_eq!(s.wake(id, WakeCause::Requested, ms(3)), Ok(Asked::Started));
    assert!(did(&mut s, id).is_empty(), "the cut is still out");

    s.done(id, Done::Cut(Some(Cut::PortDisabled)), ms(4))
        .expect("cutting");
    assert_eq!(
        did(&mut s, id),
        [
            Did::Notify(Notice::SleepCancelled),
            Did::Restore(Cut::PortDisabled)
        ]
    );
    assert_eq!(s.phase(id), Some(Phase::Restoring));
    handle(&mut s, 5, &datagram(2), &mut r);
    s.done(id, Done::Restored, ms(6)).expect("restoring");
    assert_eq!(
        did(&mut s, id),
        [Did::Replay(vec![datagram(1), datagram(2)]), Did::Probe]
    );
    answer_probe(&mut s, ms(7));
    hand_back_when_quiet(&mut s, id, ms(6));
    s.done(id, Done::HandedBack, ms(9)).expect("handing back");
    assert_eq!(did(&mut s, id), [Did::Notify(Notice::Awake { wake: None })]);
    assert_eq!(s.phase(id), Some(Phase::Awake));
}

#[test]
fn operator_wake_while_suspending_resumes_as_soon_as_the_guest_has_stopped() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    suspending(&mut s, id);
    assert_eq!(s.wake(id, WakeCause::Requested, ms(3)), Ok(Asked::Started));
    handle(&mut s, 4, &datagram(1), &mut r);
    handle(&mut s, 5, &numbered_syn(2), &mut r);
    assert!(r.wakes.is_empty(), "the wake is already asked for");
    assert!(
        did(&mut s, id).is_empty(),
        "no resume while the suspend is out"
    );

    s.done(id, Done::Suspended { ok: true }, ms(6))
        .expect("suspending");
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::FellAsleep), Did::Resume]
    );
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(7),
    )
    .expect("resuming");
    assert_eq!(did(&mut s, id), [Did::Restore(Cut::PortDisabled)]);
    handle(&mut s, 8, &datagram(3), &mut r);
    assert!(
        did(&mut s, id).is_empty(),
        "nothing relayed before the port is back"
    );
    s.done(id, Done::Restored, ms(9)).expect("restoring");
    assert_eq!(
        did(&mut s, id),
        [
            Did::Replay(vec![datagram(1), numbered_syn(2), datagram(3)]),
            Did::Probe
        ]
    );
    answer_probe(&mut s, ms(10));
    hand_back_when_quiet(&mut s, id, ms(9));
    s.done(id, Done::HandedBack, ms(12)).expect("handing back");
    let report = WakeReport {
        cause: WakeCause::Requested,
        took: Duration::from_millis(7),
        handed_back_after: Duration::from_millis(9),
        replayed: 3,
        failed_tries: 0,
    };
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::Awake { wake: Some(report) })]
    );
}

#[test]
fn syn_while_suspending_resumes_as_soon_as_the_guest_has_stopped() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    suspending(&mut s, id);
    handle(&mut s, 3, &numbered_syn(1), &mut r);
    assert!(queued(&r, id));
    assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 80 })]);
    // A second frame that wakes is held and asks nothing more.
    handle(&mut s, 4, &udp_v4(9000, b"late"), &mut r);
    assert_eq!(r.wakes.len(), 1);
    assert!(
        did(&mut s, id).is_empty(),
        "no resume while the suspend is out"
    );

    s.done(id, Done::Suspended { ok: true }, ms(5))
        .expect("suspending");
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::FellAsleep), Did::Resume]
    );
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(6),
    )
    .expect("resuming");
    assert_eq!(did(&mut s, id), [Did::Restore(Cut::PortDisabled)]);
    s.done(id, Done::Restored, ms(7)).expect("restoring");
    assert_eq!(
        did(&mut s, id),
        [
            Did::Replay(vec![numbered_syn(1), udp_v4(9000, b"late")]),
            Did::Probe
        ]
    );
    answer_probe(&mut s, ms(8));
    hand_back_when_quiet(&mut s, id, ms(7));
    s.done(id, Done::HandedBack, ms(10)).expect("handing back");
    let report = WakeReport {
        cause: WakeCause::TcpSyn { port: 80 },
        took: Duration::from_millis(5),
        handed_back_after: Duration::from_millis(7),
        replayed: 2,
        failed_tries: 0,
    };
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::Awake { wake: Some(report) })]
    );
}

/// Takes the guest `id` from awake to `Verifying`: asked at 0 ms, claimed at 1, its port
/// disabled at 2, stopped at 3.
fn verifying(s: &mut Surrogate, id: GuestId) {
    suspending(s, id);
    s.done(id, Done::Suspended { ok: true }, ms(3))
        .expect("suspending");
    assert_eq!(did(s, id), [Did::Inspect]);
    assert_eq!(s.phase(id), Some(Phase::Verifying));
    assert_eq!(s.state(id), Some(GuestState::Sleeping));
}

/// Takes the guest `id`, whose resume is out, through the rest of a wake that works, with
/// `held` held for it: resumed at `t + 1` ms, its (disabled) port back at `t + 2`, the probe
/// after the replay answered at `t + 3`, the bridge switched back at the quiet moment after
/// the replay and that done at `t + 5`. Returns the wake's report.
fn finish_wake(s: &mut Surrogate, id: GuestId, t: u64, held: Vec<Vec<u8>>) -> WakeReport {
    assert_eq!(s.phase(id), Some(Phase::Resuming));
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(t + 1),
    )
    .expect("resuming");
    assert_eq!(did(s, id), [Did::Restore(Cut::PortDisabled)]);
    s.done(id, Done::Restored, ms(t + 2)).expect("restoring");
    assert_eq!(did(s, id), [Did::Replay(held), Did::Probe]);
    answer_probe(s, ms(t + 3));
    assert!(did(s, id).is_empty());
    hand_back_when_quiet(s, id, ms(t + 2));
    s.done(id, Done::HandedBack, ms(t + 5))
        .expect("handing back");
    let did = did(s, id);
    assert_eq!(s.phase(id), Some(Phase::Awake));
    assert_eq!(s.held(id).count(), 0);
    match did.as_slice() {
        [Did::Notify(Notice::Awake { wake: Some(report) })] => *report,
        other => panic!("{other:?}"),
    }
}

#[test]
fn guest_found_busy_is_resumed_at_once_for_work_in_flight() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    verifying(&mut s, id);
    handle(&mut s, 4, &datagram(1), &mut r);
    assert!(queued(&r, id), "held while the guest is inspected");
    assert!(r.wakes.is_empty());
    assert!(did(&mut s, id).is_empty(), "the inspection is still out");

    s.done(id, Done::Inspected { busy: Some(true) }, ms(20))
        .expect("verifying");
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::WorkInFlight), Did::Resume],
        "resumed at once, and never reported asleep"
    );
    assert_eq!(s.phase(id), Some(Phase::Resuming));
    assert_eq!(s.state(id), Some(GuestState::Waking { port_up: false }));
    assert!(r.wakes.is_empty(), "no frame asked for this wake");
    assert_eq!(
        s.wake(id, WakeCause::Requested, ms(20)),
        Ok(Asked::UnderWay)
    );
    assert_eq!(
        s.sleep(id, ms(20)),
        Ok(Asked::Already(GuestState::Waking { port_up: false }))
    );

    // Timed from the inspection's outcome (20 ms), not from the stop (3 ms).
    let report = finish_wake(&mut s, id, 20, vec![datagram(1)]);
    assert_eq!(
        report,
        WakeReport {
            cause: WakeCause::InFlight,
            took: Duration::from_millis(3),
            handed_back_after: Duration::from_millis(5),
            replayed: 1,
            failed_tries: 0,
        }
    );
}

#[test]
fn guest_found_busy_whose_resume_fails_keeps_waking_for_work_in_flight() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    verifying(&mut s, id);
    s.done(id, Done::Inspected { busy: Some(true) }, ms(10))
        .expect("verifying");
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::WorkInFlight), Did::Resume]
    );
    s.done(
        id,
        Done::Resumed {
            ok: false,
            new_port: false,
        },
        ms(11),
    )
    .expect("resuming");
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::WakeFailed {
            tries: 1,
            retry_in: retry_delay(1)
        })]
    );
    assert_eq!(s.phase(id), Some(Phase::Retrying));
    // A SYN meanwhile is held and starts nothing of its own.
    handle(&mut s, 20, &numbered_syn(1), &mut r);
    assert!(queued(&r, id));
    assert!(r.wakes.is_empty());
    let due = ms(11) + retry_delay(1);
    assert_eq!(s.poll_at(), Some(due));
    s.handle_timeout(due, &mut r);
    assert_eq!(did(&mut s, id), [Did::Resume]);
    let t = due.micros() / 1000;
    let report = finish_wake(&mut s, id, t, vec![numbered_syn(1)]);
    assert_eq!(
        report,
        WakeReport {
            cause: WakeCause::InFlight,
            took: Duration::from_millis(t + 3 - 10),
            handed_back_after: Duration::from_millis(t + 5 - 10),
            replayed: 1,
            failed_tries: 1,
        }
    );
}

#[test]
fn guest_found_idle_or_not_known_to_be_busy_falls_asleep() {
    for busy in [Some(false), None] {
        let (mut s, id) = awake();
        let mut r = Recorder::default();
        verifying(&mut s, id);
        handle(&mut s, 4, &datagram(1), &mut r);
        assert!(queued(&r, id));
        s.done(id, Done::Inspected { busy }, ms(5))
            .expect("verifying");
        assert_eq!(
            did(&mut s, id),
            [Did::Notify(Notice::FellAsleep)],
            "busy {busy:?}"
        );
        assert_eq!(s.phase(id), Some(Phase::Asleep));
        assert_eq!(s.state(id), Some(GuestState::Sleeping));
        assert_eq!(s.poll_at(), None, "busy {busy:?}: nothing to wait for");
        assert_eq!(s.held(id).count(), 1, "still held");
        assert_eq!(s.sleep(id, ms(6)), Ok(Asked::Already(GuestState::Sleeping)));

        // It sleeps until something asks for it, as any sleeping guest.
        handle(&mut s, 30, &numbered_syn(2), &mut r);
        assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 80 })]);
        assert_eq!(did(&mut s, id), [Did::Resume]);
        let report = finish_wake(&mut s, id, 30, vec![datagram(1), numbered_syn(2)]);
        assert_eq!(
            report,
            WakeReport {
                cause: WakeCause::TcpSyn { port: 80 },
                took: Duration::from_millis(3),
                handed_back_after: Duration::from_millis(5),
                replayed: 2,
                failed_tries: 0,
            },
            "busy {busy:?}"
        );
    }
}

#[test]
fn wake_asked_while_verifying_waits_for_the_inspection_then_resumes_for_its_cause() {
    for busy in [Some(true), Some(false), None] {
        for operator in [true, false] {
            let case = format!("busy {busy:?}, operator {operator}");
            let (mut s, id) = awake();
            let mut r = Recorder::default();
            verifying(&mut s, id);
            let cause = if operator {
                assert_eq!(s.wake(id, WakeCause::Requested, ms(4)), Ok(Asked::Started));
                handle(&mut s, 4, &numbered_syn(1), &mut r);
                assert!(r.wakes.is_empty(), "{case}: the wake is already asked for");
                WakeCause::Requested
            } else {
                handle(&mut s, 4, &numbered_syn(1), &mut r);
                assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 80 })], "{case}");
                WakeCause::TcpSyn { port: 80 }
            };
            assert!(queued(&r, id), "{case}");
            // Nothing more asks for a wake: one is asked for.
            handle(&mut s, 5, &udp_v4(9000, b"late"), &mut r);
            assert_eq!(r.wakes.len(), usize::from(!operator), "{case}");
            assert_eq!(
                s.wake(id, WakeCause::Requested, ms(5)),
                Ok(Asked::UnderWay),
                "{case}"
            );
            assert_eq!(
                s.sleep(id, ms(5)),
                Ok(Asked::Already(GuestState::Sleeping)),
                "{case}: the wake asked for ends the sleep"
            );
            assert!(
                did(&mut s, id).is_empty(),
                "{case}: no resume while the inspection is out"
            );
            assert_eq!(s.phase(id), Some(Phase::Verifying), "{case}");

            s.done(id, Done::Inspected { busy }, ms(6))
                .expect("verifying");
            assert_eq!(
                did(&mut s, id),
                [Did::Notify(Notice::FellAsleep), Did::Resume],
                "{case}"
            );
            let report = finish_wake(&mut s, id, 6, vec![numbered_syn(1), udp_v4(9000, b"late")]);
            // The wake asked for, timed from when it was asked (4 ms), whatever the guest held.
            assert_eq!(
                report,
                WakeReport {
                    cause,
                    took: Duration::from_millis(5),
                    handed_back_after: Duration::from_millis(7),
                    replayed: 2,
                    failed_tries: 0,
                },
                "{case}"
            );
        }
    }
}

#[test]
fn sleep_asked_while_verifying_is_already_under_way() {
    for busy in [Some(true), Some(false), None] {
        let (mut s, id) = awake();
        verifying(&mut s, id);
        assert_eq!(s.sleep(id, ms(4)), Ok(Asked::UnderWay), "busy {busy:?}");
        assert!(did(&mut s, id).is_empty(), "busy {busy:?}: nothing asked");
        assert_eq!(s.phase(id), Some(Phase::Verifying));
        s.done(id, Done::Inspected { busy }, ms(5))
            .expect("verifying");
        if busy == Some(true) {
            assert_eq!(
                did(&mut s, id),
                [Did::Notify(Notice::WorkInFlight), Did::Resume]
            );
            assert_eq!(
                s.sleep(id, ms(6)),
                Ok(Asked::Already(GuestState::Waking { port_up: false }))
            );
        } else {
            assert_eq!(did(&mut s, id), [Did::Notify(Notice::FellAsleep)]);
            assert_eq!(s.sleep(id, ms(6)), Ok(Asked::Already(GuestState::Sleeping)));
        }
    }
}

#[test]
fn failed_suspend_restores_the_port_and_hands_the_network_back() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    suspending(&mut s, id);
    handle(&mut s, 3, &datagram(1), &mut r);
    assert!(queued(&r, id));
    s.done(id, Done::Suspended { ok: false }, ms(4))
        .expect("suspending");
    assert_eq!(
        did(&mut s, id),
        [
            Did::Notify(Notice::SleepFailed),
            Did::Restore(Cut::PortDisabled)
        ]
    );
    s.done(id, Done::Restored, ms(5)).expect("restoring");
    assert_eq!(
        did(&mut s, id),
        [Did::Replay(vec![datagram(1)]), Did::Probe]
    );
    answer_probe(&mut s, ms(6));
    hand_back_when_quiet(&mut s, id, ms(5));
    s.done(id, Done::HandedBack, ms(8)).expect("handing back");
    assert_eq!(did(&mut s, id), [Did::Notify(Notice::Awake { wake: None })]);
    assert_eq!(s.phase(id), Some(Phase::Awake));
}

#[test]
fn failed_claim_hands_the_network_back_without_a_restore() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    assert_eq!(s.sleep(id, ms(0)), Ok(Asked::Started));
    handle(&mut s, 1, &datagram(1), &mut r);
    s.done(id, Done::Claimed { ok: false }, ms(2))
        .expect("claiming");
    assert_eq!(
        did(&mut s, id),
        [
            Did::Claim,
            Did::Notify(Notice::SleepFailed),
            Did::Replay(vec![datagram(1)]),
            Did::Probe
        ]
    );
    answer_probe(&mut s, ms(3));
    hand_back_when_quiet(&mut s, id, ms(2));
    s.done(id, Done::HandedBack, ms(5)).expect("handing back");
    assert_eq!(did(&mut s, id), [Did::Notify(Notice::Awake { wake: None })]);
    assert_eq!(s.phase(id), Some(Phase::Awake));
}

#[test]
fn failed_cut_hands_the_network_back_without_a_restore() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    // Asked and claimed at 0 ms, cut asked at 2.
    cutting(&mut s, id, 0);
    handle(&mut s, 2, &datagram(1), &mut r);
    s.done(id, Done::Cut(None), ms(3)).expect("cutting");
    assert_eq!(
        did(&mut s, id),
        [
            Did::Notify(Notice::SleepFailed),
            Did::Replay(vec![datagram(1)]),
            Did::Probe
        ]
    );
    answer_probe(&mut s, ms(4));
    hand_back_when_quiet(&mut s, id, ms(3));
    s.done(id, Done::HandedBack, ms(6)).expect("handing back");
    assert_eq!(did(&mut s, id), [Did::Notify(Notice::Awake { wake: None })]);
    assert_eq!(s.phase(id), Some(Phase::Awake));
}

#[test]
fn retry_delay_doubles_from_100_ms_up_to_the_cap() {
    let delays: Vec<_> = (1..=9).map(retry_delay).collect();
    let expected: Vec<_> = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        .map(Duration::from_millis)
        .to_vec();
    assert_eq!(delays, expected);
    assert_eq!(MAX_RETRY_DELAY, Duration::from_secs(5));
    assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
}

#[test]
fn failed_resumes_are_retried_after_doubling_delays_up_to_the_cap() {
    let (mut s, id) = sleeping();
    let mut r = Recorder::default();
    handle(&mut s, 1, &syn(80), &mut r);
    assert_eq!(did(&mut s, id), [Did::Resume]);
    let mut now = ms(1);
    for tries in 1..=9u32 {
        s.done(
            id,
            Done::Resumed {
                ok: false,
                new_port: false,
            },
            now,
        )
        .expect("resuming");
        let retry_in = retry_delay(tries);
        assert!(retry_in <= MAX_RETRY_DELAY);
        assert_eq!(
            did(&mut s, id),
            [Did::Notify(Notice::WakeFailed { tries, retry_in })]
        );
        assert_eq!(s.phase(id), Some(Phase::Retrying));
        assert_eq!(s.state(id), Some(GuestState::Sleeping));
        let due = now + retry_in;
        assert_eq!(s.poll_at(), Some(due));
        // Not a moment early.
        s.handle_timeout(Instant::from_micros(due.micros() - 1), &mut r);
        assert!(did(&mut s, id).is_empty());
        s.handle_timeout(due, &mut r);
        assert_eq!(did(&mut s, id), [Did::Resume]);
        assert_eq!(s.phase(id), Some(Phase::Resuming));
        now = due;
    }
    assert_eq!(
        retry_delay(9),
        MAX_RETRY_DELAY,
        "the last delays were capped"
    );
}

#[test]
fn syn_during_backoff_is_held_and_operator_wake_resumes_at_once() {
    let (mut s, id) = sleeping();
    let mut r = Recorder::default();
    handle(&mut s, 1, &syn(80), &mut r);
    assert_eq!(did(&mut s, id), [Did::Resume]);
    let failed = Done::Resumed {
        ok: false,
        new_port: false,
    };
    s.done(id, failed, ms(2)).expect("resuming");
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::WakeFailed {
            tries: 1,
            retry_in: Duration::from_millis(100)
        })]
    );

    // A SYN does not hurry the retry: it is held for the guest.
    r.take();
    handle(&mut s, 50, &numbered_syn(2), &mut r);
    assert!(queued(&r, id));
    assert!(r.wakes.is_empty());
    assert!(did(&mut s, id).is_empty());
    assert_eq!(s.poll_at(), Some(ms(102)));

    // An operator does.
    assert_eq!(
        s.wake(id, WakeCause::Requested, ms(60)),
        Ok(Asked::UnderWay)
    );
    assert_eq!(did(&mut s, id), [Did::Resume]);
    assert_eq!(s.phase(id), Some(Phase::Resuming));
    assert_eq!(s.poll_at(), None, "no retry left pending");

    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(61),
    )
    .expect("resuming");
    s.done(id, Done::Restored, ms(62)).expect("restoring");
    assert_eq!(
        did(&mut s, id),
        [
            Did::Restore(Cut::PortDisabled),
            Did::Replay(vec![syn(80), numbered_syn(2)]),
            Did::Probe
        ]
    );
}

#[test]
fn wake_report_counts_the_failed_resumes() {
    let (mut s, id) = sleeping();
    let mut r = Recorder::default();
    handle(&mut s, 1, &syn(80), &mut r);
    let failed = Done::Resumed {
        ok: false,
        new_port: false,
    };
    s.done(id, failed, ms(2)).expect("resuming");
    s.handle_timeout(ms(102), &mut r);
    s.done(id, failed, ms(103)).expect("resuming");
    s.handle_timeout(ms(303), &mut r);
    s.done(id, failed, ms(304)).expect("resuming");
    assert_eq!(
        s.wake(id, WakeCause::Requested, ms(400)),
        Ok(Asked::UnderWay)
    );
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(401),
    )
    .expect("resuming");
    s.done(id, Done::Restored, ms(402)).expect("restoring");
    actions(&mut s);
    answer_probe(&mut s, ms(403));
    hand_back_when_quiet(&mut s, id, ms(402));
    s.done(id, Done::HandedBack, ms(405)).expect("handing back");
    let report = actions(&mut s).into_iter().find_map(|a| match a {
        Action::Notify(_, Notice::Awake { wake }) => wake,
        _ => None,
    });
    assert_eq!(
        report,
        Some(WakeReport {
            cause: WakeCause::TcpSyn { port: 80 },
            took: Duration::from_millis(402),
            handed_back_after: Duration::from_millis(404),
            replayed: 1,
            failed_tries: 3,
        })
    );
}

#[test]
fn link_down_wake_replays_only_after_the_guest_answers_a_probe() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    fall_asleep(&mut s, id, Cut::LinkDown);
    handle(&mut s, 10, &syn(80), &mut r);
    assert_eq!(did(&mut s, id), [Did::Resume]);
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(11),
    )
    .expect("resuming");
    assert_eq!(did(&mut s, id), [Did::Restore(Cut::LinkDown)]);
    s.done(id, Done::Restored, ms(12)).expect("restoring");
    // The carrier came back: the way to the guest is proven before anything is sent.
    assert_eq!(did(&mut s, id), [Did::Probe]);
    handle(&mut s, 13, &datagram(1), &mut r);
    assert!(did(&mut s, id).is_empty(), "held until the first answer");
    answer_probe(&mut s, ms(14));
    assert_eq!(
        did(&mut s, id),
        [Did::Replay(vec![syn(80), datagram(1)]), Did::Probe]
    );
    answer_probe(&mut s, ms(15));
    assert!(did(&mut s, id).is_empty());
    hand_back_when_quiet(&mut s, id, ms(14));
    s.done(id, Done::HandedBack, ms(17)).expect("handing back");
    let report = WakeReport {
        cause: WakeCause::TcpSyn { port: 80 },
        // Its answer to the probe after the replay, not the one before it.
        took: Duration::from_millis(5),
        handed_back_after: Duration::from_millis(7),
        replayed: 2,
        failed_tries: 0,
    };
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::Awake { wake: Some(report) })]
    );
}

#[test]
fn link_down_wake_probes_again_when_a_probe_goes_unanswered() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    fall_asleep(&mut s, id, Cut::LinkDown);
    handle(&mut s, 10, &syn(80), &mut r);
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(11),
    )
    .expect("resuming");
    s.done(id, Done::Restored, ms(12)).expect("restoring");
    assert_eq!(
        did(&mut s, id),
        [Did::Resume, Did::Restore(Cut::LinkDown), Did::Probe]
    );
    let unanswered = ms(12) + PROBE_TIMEOUT;
    assert_eq!(s.poll_at(), Some(unanswered));
    s.handle_timeout(unanswered, &mut r);
    assert_eq!(did(&mut s, id), [Did::Probe], "probed again, nothing sent");
    answer_probe(&mut s, unanswered + Duration::from_millis(1));
    assert_eq!(did(&mut s, id), [Did::Replay(vec![syn(80)]), Did::Probe]);
}

#[test]
fn resume_on_a_new_port_replays_without_a_restore() {
    let (mut s, id) = sleeping();
    let mut r = Recorder::default();
    handle(&mut s, 1, &syn(80), &mut r);
    assert_eq!(did(&mut s, id), [Did::Resume]);
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: true,
        },
        ms(2),
    )
    .expect("resuming");
    assert_eq!(did(&mut s, id), [Did::Replay(vec![syn(80)]), Did::Probe]);
    assert_eq!(s.phase(id), Some(Phase::Replaying));
    assert_eq!(
        s.done(id, Done::Restored, ms(3)),
        Err(LifecycleError::Unexpected {
            guest: "web1".into(),
            phase: Phase::Replaying,
            done: Done::Restored,
        }),
        "there is no cut to undo"
    );
}

#[test]
fn unanswered_probes_hand_back_after_max_probes() {
    let (mut s, id) = sleeping();
    let mut r = Recorder::default();
    handle(&mut s, 1, &syn(80), &mut r);
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(2),
    )
    .expect("resuming");
    s.done(id, Done::Restored, ms(3)).expect("restoring");
    assert_eq!(
        did(&mut s, id),
        [
            Did::Resume,
            Did::Restore(Cut::PortDisabled),
            Did::Replay(vec![syn(80)]),
            Did::Probe
        ]
    );
    let mut now = ms(3);
    for _ in 1..MAX_PROBES {
        now = now + PROBE_TIMEOUT;
        assert_eq!(s.poll_at(), Some(now));
        s.handle_timeout(now, &mut r);
        assert_eq!(did(&mut s, id), [Did::Probe]);
    }
    now = now + PROBE_TIMEOUT;
    assert_eq!(s.poll_at(), Some(now));
    s.handle_timeout(now, &mut r);
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::ProbesUnanswered), Did::HandBack]
    );
    // A late answer changes nothing now.
    answer_probe(&mut s, now + Duration::from_millis(1));
    assert!(did(&mut s, id).is_empty());
    let handed_back = now + Duration::from_millis(2);
    s.done(id, Done::HandedBack, handed_back)
        .expect("handing back");
    // It answered no probe: the wake took until the bridge was switched back.
    let after = handed_back - ms(1);
    let report = WakeReport {
        cause: WakeCause::TcpSyn { port: 80 },
        took: after,
        handed_back_after: after,
        replayed: 1,
        failed_tries: 0,
    };
    assert_eq!(
        did(&mut s, id),
        [Did::Notify(Notice::Awake { wake: Some(report) })]
    );
}

#[test]
fn held_frames_are_replayed_in_runs_fenced_by_probes() {
    let (mut s, id) = sleeping();
    let mut r = Recorder::default();
    let mut held: Vec<_> = (0..100).map(datagram).collect();
    for frame in &held {
        handle(&mut s, 1, frame, &mut r);
    }
    handle(&mut s, 2, &syn(80), &mut r);
    held.push(syn(80));
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(3),
    )
    .expect("resuming");
    s.done(id, Done::Restored, ms(4)).expect("restoring");
    let rest = held.split_off(REPLAY_RUN);
    assert_eq!(
        did(&mut s, id),
        [
            Did::Resume,
            Did::Restore(Cut::PortDisabled),
            Did::Replay(held),
            Did::Probe
        ]
    );
    answer_probe(&mut s, ms(5));
    assert_eq!(did(&mut s, id), [Did::Replay(rest), Did::Probe]);
    answer_probe(&mut s, ms(6));
    assert!(did(&mut s, id).is_empty());
    hand_back_when_quiet(&mut s, id, ms(5));
}

#[test]
fn traffic_that_never_pauses_is_handed_back_at_quiet_wait_with_every_frame_relayed_once() {
    let (mut s, id) = sleeping();
    let mut r = Recorder::default();
    handle(&mut s, 1, &syn(80), &mut r);
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(1),
    )
    .expect("resuming");
    s.done(id, Done::Restored, ms(1)).expect("restoring");
    let mut sent = vec![syn(80)];
    let mut relayed = Vec::new();
    let mut handed_back = None;
    let mut notices = Vec::new();
    let mut probe_out = false;
    let mut collect = |s: &mut Surrogate,
                       at: Instant,
                       relayed: &mut Vec<Vec<u8>>,
                       handed_back: &mut Option<Instant>| {
        for d in did(s, id) {
            match d {
                Did::Restore(_) | Did::Resume => {}
                Did::Replay(run) => relayed.extend(run),
                Did::Probe => probe_out = true,
                Did::HandBack => *handed_back = Some(at),
                Did::Notify(n) => notices.push((at, n)),
                other => panic!("{other:?}"),
            }
        }
        std::mem::take(&mut probe_out)
    };
    assert!(collect(&mut s, ms(1), &mut relayed, &mut handed_back));
    let first_answer = ms(1) + Duration::from_micros(100);
    answer_probe(&mut s, first_answer);
    let mut answer = collect(&mut s, first_answer, &mut relayed, &mut handed_back);
    // A frame each millisecond, each probe answered 100 µs after it went out.
    for t in 2.. {
        let now = ms(t);
        while let Some(at) = s.poll_at().filter(|at| *at <= now) {
            s.handle_timeout(at, &mut r);
            answer |= collect(&mut s, at, &mut relayed, &mut handed_back);
        }
        if let Some(at) = handed_back {
            if now >= at + Duration::from_millis(2) {
                s.done(id, Done::HandedBack, now).expect("handing back");
                collect(&mut s, now, &mut relayed, &mut handed_back);
                break;
            }
        }
        r.take();
        handle(&mut s, t, &datagram(t as u32), &mut r);
        assert!(queued(&r, id), "at {now}");
        sent.push(datagram(t as u32));
        answer |= collect(&mut s, now, &mut relayed, &mut handed_back);
        if std::mem::take(&mut answer) {
            let at = now + Duration::from_micros(100);
            answer_probe(&mut s, at);
            answer = collect(&mut s, at, &mut relayed, &mut handed_back);
        }
        assert!(t < 1000, "never handed back");
    }
    let quiet_by = ms(1) + QUIET_WAIT;
    assert_eq!(
        handed_back,
        Some(quiet_by),
        "no hand back before QUIET_WAIT"
    );
    assert_eq!(relayed, sent, "every frame relayed once, in order");
    let handed_back_at = quiet_by + Duration::from_millis(2);
    let report = WakeReport {
        cause: WakeCause::TcpSyn { port: 80 },
        took: Duration::from_micros(100),
        handed_back_after: handed_back_at - ms(1),
        replayed: sent.len(),
        failed_tries: 0,
    };
    assert_eq!(
        notices,
        [
            (quiet_by, Notice::NoQuietMoment),
            (handed_back_at, Notice::Awake { wake: Some(report) })
        ]
    );
    assert_eq!(s.phase(id), Some(Phase::Awake));
}

/// Every outcome there is.
const EVERY_DONE: [Done; 16] = [
    Done::Claimed { ok: true },
    Done::Claimed { ok: false },
    Done::Cut(Some(Cut::PortDisabled)),
    Done::Cut(Some(Cut::LinkDown)),
    Done::Cut(None),
    Done::Suspended { ok: true },
    Done::Suspended { ok: false },
    Done::Inspected { busy: Some(true) },
    Done::Inspected { busy: Some(false) },
    Done::Inspected { busy: None },
    Done::Resumed {
        ok: true,
        new_port: false,
    },
    Done::Resumed {
        ok: true,
        new_port: true,
    },
    Done::Resumed {
        ok: false,
        new_port: false,
    },
    Done::Resumed {
        ok: false,
        new_port: true,
    },
    Done::Restored,
    Done::HandedBack,
];

/// Whether `done` is an outcome of the action that `phase` waits for.
fn asked_in(phase: Phase, done: Done) -> bool {
    matches!(
        (phase, done),
        (Phase::Claiming, Done::Claimed { .. })
            | (Phase::Cutting, Done::Cut(_))
            | (Phase::Suspending, Done::Suspended { .. })
            | (Phase::Verifying, Done::Inspected { .. })
            | (Phase::Resuming, Done::Resumed { .. })
            | (Phase::Restoring, Done::Restored)
            | (Phase::HandingBack, Done::HandedBack)
    )
}

/// A surrogate whose one guest was taken the usual way, one step a millisecond (and
/// [`SETTLE`] to settle), to `to`, with a datagram held on the way.
fn in_phase(to: Phase) -> (Surrogate, GuestId) {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    let resumed = |ok| Done::Resumed {
        ok,
        new_port: false,
    };
    for t in 1..20 {
        let phase = s.phase(id).expect("registered");
        if phase == to {
            actions(&mut s);
            return (s, id);
        }
        let now = ms(t);
        match phase {
            Phase::Awake => assert_eq!(s.sleep(id, now), Ok(Asked::Started)),
            Phase::Claiming => {
                handle(&mut s, t, &datagram(1), &mut r);
                s.done(id, Done::Claimed { ok: true }, now)
                    .expect("claiming");
            }
            Phase::Settling => {
                // Nothing to report: the cut comes at the deadline.
                let cut_at = s.poll_at().expect("the cut is due");
                assert!(cut_at >= now);
                s.handle_timeout(cut_at, &mut r);
            }
            Phase::Cutting => s
                .done(id, Done::Cut(Some(Cut::PortDisabled)), now)
                .expect("cutting"),
            Phase::Suspending => s
                .done(id, Done::Suspended { ok: true }, now)
                .expect("suspending"),
            Phase::Verifying => s
                .done(id, Done::Inspected { busy: Some(false) }, now)
                .expect("verifying"),
            Phase::Asleep => assert_eq!(s.wake(id, WakeCause::Requested, now), Ok(Asked::Started)),
            Phase::Resuming => s
                .done(id, resumed(to != Phase::Retrying), now)
                .expect("resuming"),
            Phase::Restoring => s.done(id, Done::Restored, now).expect("restoring"),
            Phase::Replaying => {
                answer_probe(&mut s, now);
                let quiet = s.poll_at().expect("a quiet moment ahead");
                s.handle_timeout(quiet, &mut r);
            }
            Phase::Retrying | Phase::HandingBack => unreachable!("{to} is not on the way"),
        }
    }
    panic!("{to} not reached");
}

#[test]
fn outcome_not_asked_for_is_refused_and_changes_nothing() {
    for phase in Phase::ALL {
        for done in EVERY_DONE {
            if asked_in(phase, done) {
                continue;
            }
            let (mut s, id) = in_phase(phase);
            let held = |s: &Surrogate| -> Vec<_> { s.held(id).cloned().collect() };
            let before = (s.phase(id), s.state(id), s.poll_at(), held(&s));
            assert_eq!(
                s.done(id, done, ms(100)),
                Err(LifecycleError::Unexpected {
                    guest: "web1".into(),
                    phase,
                    done
                }),
                "{done:?} in {phase}"
            );
            let after = (s.phase(id), s.state(id), s.poll_at(), held(&s));
            assert_eq!(after, before, "{done:?} in {phase}");
            assert_eq!(s.poll_action(), None, "{done:?} in {phase}");
        }
    }
}

#[test]
fn sleep_and_wake_requests_say_whether_they_started_anything() {
    let (mut s, id) = awake();
    assert_eq!(
        s.wake(id, WakeCause::Requested, ms(0)),
        Ok(Asked::Already(GuestState::Awake))
    );
    assert!(actions(&mut s).is_empty());

    assert_eq!(s.sleep(id, ms(1)), Ok(Asked::Started));
    assert_eq!(s.sleep(id, ms(2)), Ok(Asked::UnderWay), "claiming");
    s.done(id, Done::Claimed { ok: true }, ms(3))
        .expect("claiming");
    assert_eq!(s.sleep(id, ms(4)), Ok(Asked::UnderWay), "settling");
    assert_eq!(s.phase(id), Some(Phase::Settling));
    s.handle_timeout(ms(3) + SETTLE, &mut Recorder::default());
    assert_eq!(s.sleep(id, ms(5)), Ok(Asked::UnderWay), "cutting");
    s.done(id, Done::Cut(Some(Cut::PortDisabled)), ms(5))
        .expect("cutting");
    assert_eq!(s.sleep(id, ms(6)), Ok(Asked::UnderWay), "suspending");
    assert_eq!(did(&mut s, id), [Did::Claim, Did::Cut, Did::Suspend]);
    s.done(id, Done::Suspended { ok: true }, ms(7))
        .expect("suspending");
    assert_eq!(s.sleep(id, ms(7)), Ok(Asked::UnderWay), "verifying");
    assert_eq!(did(&mut s, id), [Did::Inspect]);
    s.done(id, Done::Inspected { busy: None }, ms(7))
        .expect("verifying");
    assert_eq!(did(&mut s, id), [Did::Notify(Notice::FellAsleep)]);

    assert_eq!(s.sleep(id, ms(8)), Ok(Asked::Already(GuestState::Sleeping)));
    assert_eq!(s.wake(id, WakeCause::Requested, ms(9)), Ok(Asked::Started));
    assert_eq!(
        s.wake(id, WakeCause::Requested, ms(10)),
        Ok(Asked::UnderWay)
    );
    assert_eq!(
        s.sleep(id, ms(10)),
        Ok(Asked::Already(GuestState::Waking { port_up: false }))
    );
    s.done(
        id,
        Done::Resumed {
            ok: false,
            new_port: false,
        },
        ms(11),
    )
    .expect("resuming");
    assert_eq!(
        s.sleep(id, ms(12)),
        Ok(Asked::Already(GuestState::Sleeping)),
        "retrying"
    );
    assert_eq!(
        s.wake(id, WakeCause::Requested, ms(13)),
        Ok(Asked::UnderWay)
    );
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(14),
    )
    .expect("resuming");
    s.done(id, Done::Restored, ms(15)).expect("restoring");
    assert_eq!(
        s.sleep(id, ms(16)),
        Ok(Asked::Already(GuestState::Waking { port_up: true }))
    );
    assert_eq!(
        s.wake(id, WakeCause::Requested, ms(16)),
        Ok(Asked::UnderWay)
    );
    assert_eq!(
        did(&mut s, id),
        [
            Did::Resume,
            Did::Notify(Notice::WakeFailed {
                tries: 1,
                retry_in: retry_delay(1)
            }),
            Did::Resume,
            Did::Restore(Cut::PortDisabled),
            Did::Probe
        ]
    );
}

#[test]
fn wake_report_times_the_wake_from_its_frame_to_the_first_answer_and_to_the_hand_back() {
    let (mut s, id) = sleeping();
    let mut r = Recorder::default();
    handle(&mut s, 5, &datagram(1), &mut r);
    handle(&mut s, 10, &syn(80), &mut r);
    s.done(
        id,
        Done::Resumed {
            ok: true,
            new_port: false,
        },
        ms(20),
    )
    .expect("resuming");
    s.done(id, Done::Restored, ms(30)).expect("restoring");
    assert_eq!(
        did(&mut s, id),
        [
            Did::Resume,
            Did::Restore(Cut::PortDisabled),
            Did::Replay(vec![datagram(1), syn(80)]),
            Did::Probe
        ]
    );
    handle(&mut s, 35, &datagram(2), &mut r);
    answer_probe(&mut s, ms(40));
    handle(&mut s, 41, &datagram(3), &mut r);
    assert_eq!(
        did(&mut s, id),
        [Did::Replay(vec![datagram(2)]), Did::Probe]
    );
    answer_probe(&mut s, ms(45));
    assert_eq!(
        did(&mut s, id),
        [Did::Replay(vec![datagram(3)]), Did::Probe]
    );
    answer_probe(&mut s, ms(46));
    hand_back_when_quiet(&mut s, id, ms(45));
    // Still held while the bridge is switched back, and relayed once it is.
    handle(&mut s, 48, &datagram(4), &mut r);
    assert!(did(&mut s, id).is_empty());
    s.done(id, Done::HandedBack, ms(50)).expect("handing back");
    let report = WakeReport {
        cause: WakeCause::TcpSyn { port: 80 },
        took: Duration::from_millis(30),
        handed_back_after: Duration::from_millis(40),
        replayed: 5,
        failed_tries: 0,
    };
    assert_eq!(
        did(&mut s, id),
        [
            Did::Replay(vec![datagram(4)]),
            Did::Notify(Notice::Awake { wake: Some(report) })
        ]
    );
    assert_eq!(s.held(id).count(), 0);
}

#[test]
fn frame_that_wakes_held_while_falling_asleep_does_not_leave_the_guest_asleep() {
    let (mut s, id) = awake();
    let mut r = Recorder::default();
    // The cut is out (asked at 2 ms): the frame waits for it. (While settling, see
    // `syn_while_settling_is_held_and_cancels_the_sleep_at_once`.)
    cutting(&mut s, id, 0);
    handle(&mut s, 2, &udp_v4(9000, b"wake"), &mut r);
    assert!(queued(&r, id));
    assert_eq!(r.wakes, [(id, WakeCause::Udp { port: 9000 })]);
    assert!(actions(&mut s).is_empty(), "the cut is still out");
    s.done(id, Done::Cut(Some(Cut::PortDisabled)), ms(3))
        .expect("cutting");
    // The sleep is cancelled before the backend is called: the guest has work. Its port
    // comes back and the datagram is replayed to it.
    let did = actions(&mut s);
    assert_eq!(
        did[did.len() - 2..],
        [
            Action::Notify(id, Notice::SleepCancelled),
            Action::Restore(id, Cut::PortDisabled)
        ]
    );
    assert!(!did.iter().any(|a| matches!(a, Action::Suspend(_))));
    s.done(id, Done::Restored, ms(4)).expect("restoring");
    assert_eq!(replayed(&actions(&mut s)).0, [udp_v4(9000, b"wake")]);
}

/// One step of a random script.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A unicast datagram for the guest, held but not woken for.
    Datagram,
    /// A unicast datagram to a port that wakes the guest.
    WakingDatagram,
    /// A TCP SYN to a port that wakes the guest.
    Syn,
    /// A broadcast on the guest's VLAN.
    Broadcast,
    /// An operator asks for a sleep.
    Sleep,
    /// An operator asks for a wake.
    Wake,
    /// The action out, if any, ends: in success or not, on which cut, on a new port, with
    /// the guest found busy or not (or the backend unable to tell).
    Complete {
        ok: bool,
        link_down: bool,
        new_port: bool,
        busy: Option<bool>,
    },
    /// The outcome `EVERY_DONE[i]` is reported, asked for or not.
    Report(usize),
    /// The guest answers a probe, whether one is out or not.
    AnswerProbe,
    /// Time passes, in microseconds.
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    proptest::prop_oneof![
        3 => Just(Step::Datagram),
        1 => Just(Step::WakingDatagram),
        1 => Just(Step::Syn),
        1 => Just(Step::Broadcast),
        1 => Just(Step::Sleep),
        1 => Just(Step::Wake),
        5 => (
            proptest::bool::weighted(0.75),
            any::<bool>(),
            proptest::bool::weighted(0.2),
            proptest::prop_oneof![Just(Some(true)), Just(Some(false)), Just(None)],
        )
            .prop_map(|(ok, link_down, new_port, busy)| Step::Complete {
                ok,
                link_down,
                new_port,
                busy
            }),
        1 => (0..EVERY_DONE.len()).prop_map(Step::Report),
        2 => Just(Step::AnswerProbe),
        4 => proptest::prop_oneof![
            4 => 0..5_000u64,
            2 => 0..200_000u64,
            1 => 0..6_000_000u64,
        ]
        .prop_map(Step::Advance),
    ]
}

/// Executes what the surrogate asks for one guest, and checks it on the way.
struct Driver {
    s: Surrogate,
    id: GuestId,
    now: Instant,
    /// Frames sent so far, to number the next.
    frames: u32,
    /// The action out, which waits for its outcome.
    out: Option<Action>,
    phase: Phase,
    /// Frames the surrogate said it held, in the order it held them.
    queued: Vec<Vec<u8>>,
    /// Frames replayed, in order.
    replayed: Vec<Vec<u8>>,
    /// Frames replayed since the last `Notice::Awake`.
    replayed_since_awake: usize,
    /// Whether the wake under way is one for work found in flight (`Notice::WorkInFlight`
    /// since the last `Notice::Awake`).
    in_flight: bool,
    /// While settling: when the port is to be cut.
    cut_due: Option<Instant>,
    /// The deadline being handled, while one is.
    timeout: Option<Instant>,
    /// Every transition seen, and how often.
    transitions: BTreeMap<(Phase, Phase), usize>,
    /// Sleeps cancelled while settling, by an operator's wake and by a frame that wakes.
    settle_cancelled: (usize, usize),
}

/// The phase in which `action` waits for its outcome.
fn waiting_phase(action: &Action) -> Option<Phase> {
    match action {
        Action::Claim(_) => Some(Phase::Claiming),
        Action::Cut(_) => Some(Phase::Cutting),
        Action::Suspend(_) => Some(Phase::Suspending),
        Action::Inspect(_) => Some(Phase::Verifying),
        Action::Resume(_) => Some(Phase::Resuming),
        Action::Restore(..) => Some(Phase::Restoring),
        Action::HandBack(_) => Some(Phase::HandingBack),
        Action::Replay(..) | Action::Probe(..) | Action::Notify(..) => None,
    }
}

impl Driver {
    fn new() -> Self {
        let (s, id) = awake();
        Self {
            s,
            id,
            now: Instant::ZERO,
            frames: 0,
            out: None,
            phase: Phase::Awake,
            queued: Vec::new(),
            replayed: Vec::new(),
            replayed_since_awake: 0,
            in_flight: false,
            cut_due: None,
            timeout: None,
            transitions: BTreeMap::new(),
            settle_cancelled: (0, 0),
        }
    }

    fn run(&mut self, step: Step) {
        let n = self.frames;
        match step {
            Step::Datagram => self.frame(datagram(n), false),
            Step::WakingDatagram => self.frame(udp_v4(9000, &n.to_be_bytes()), true),
            Step::Syn => self.frame(numbered_syn(n), true),
            Step::Broadcast => self.frame(broadcast(n), false),
            Step::Sleep => {
                let asked = self.s.sleep(self.id, self.now).expect("registered");
                assert_eq!(asked == Asked::Started, self.phase == Phase::Awake);
                self.settle();
            }
            Step::Wake => self.wake(),
            Step::Complete {
                ok,
                link_down,
                new_port,
                busy,
            } => {
                let Some(out) = self.out.take() else { return };
                let cut = if link_down {
                    Cut::LinkDown
                } else {
                    Cut::PortDisabled
                };
                let done = match out {
                    Action::Claim(_) => Done::Claimed { ok },
                    Action::Cut(_) => Done::Cut(ok.then_some(cut)),
                    Action::Suspend(_) => Done::Suspended { ok },
                    Action::Inspect(_) => Done::Inspected { busy },
                    Action::Resume(_) => Done::Resumed { ok, new_port },
                    Action::Restore(..) => Done::Restored,
                    Action::HandBack(_) => Done::HandedBack,
                    other => unreachable!("{other:?} is not answered"),
                };
                self.s.done(self.id, done, self.now).expect("asked for");
                self.settle();
            }
            Step::Report(i) => {
                let done = EVERY_DONE[i];
                if asked_in(self.phase, done) {
                    return;
                }
                let before = self.snapshot();
                assert!(
                    matches!(
                        self.s.done(self.id, done, self.now),
                        Err(LifecycleError::Unexpected { .. })
                    ),
                    "{done:?} in {}",
                    self.phase
                );
                assert_eq!(self.snapshot(), before, "{done:?} changed something");
                assert_eq!(self.s.poll_action(), None, "{done:?} asked for something");
            }
            Step::AnswerProbe => self.frame(probe_answer(SURROGATE_MAC), false),
            Step::Advance(us) => {
                self.now = self.now + Duration::from_micros(us);
                self.catch_up();
            }
        }
    }

    fn snapshot(&self) -> (Option<Phase>, Option<Instant>, Vec<QueuedFrame>) {
        (
            self.s.phase(self.id),
            self.s.poll_at(),
            self.s.held(self.id).cloned().collect(),
        )
    }

    /// Sends `frame`, which asks for a wake if `wakes` (others may too, if the queue is
    /// full).
    fn frame(&mut self, frame: Vec<u8>, wakes: bool) {
        self.frames += 1;
        let before = self.phase;
        let mut r = Recorder::default();
        self.s
            .handle_frame(self.now, VirtioNetHdr::NONE, &frame, &mut r);
        if queued(&r, self.id) {
            self.queued.push(frame);
        }
        self.settle();
        if before == Phase::Settling {
            // A frame that wakes calls the sleep off at once; any other leaves it settling.
            let woke = !r.wakes.is_empty();
            assert!(woke || !wakes, "a frame that wakes did not, while settling");
            assert!(!woke || queued(&r, self.id), "a frame that wakes is held");
            assert_eq!(
                self.phase,
                if woke {
                    Phase::Replaying
                } else {
                    Phase::Settling
                },
                "a frame that {} while settling",
                if woke { "wakes" } else { "does not wake" }
            );
            self.settle_cancelled.1 += usize::from(woke);
        }
    }

    fn wake(&mut self) {
        let before = self.phase;
        let asked = self
            .s
            .wake(self.id, WakeCause::Requested, self.now)
            .expect("registered");
        assert_eq!(
            asked == Asked::Already(GuestState::Awake),
            self.phase == Phase::Awake
        );
        self.settle();
        if before == Phase::Settling {
            assert_eq!(asked, Asked::Started, "a wake while settling");
            assert_eq!(self.phase, Phase::Replaying, "a wake while settling");
            self.settle_cancelled.0 += 1;
        }
    }

    /// Handles every deadline up to now, in order.
    fn catch_up(&mut self) {
        while let Some(at) = self.s.poll_at().filter(|at| *at <= self.now) {
            self.s.handle_timeout(at, &mut Recorder::default());
            self.timeout = Some(at);
            self.settle();
            self.timeout = None;
            assert!(
                self.s.poll_at().is_none_or(|next| next > at),
                "the deadline at {at} is still due once handled, in {}",
                self.phase
            );
        }
    }

    /// Takes what the surrogate asks for, and checks the phase it is in now.
    fn settle(&mut self) {
        let phase = self.s.phase(self.id).expect("registered");
        let from = self.phase;
        assert!(
            phase == from || from.valid_transition(phase),
            "{from} -> {phase}"
        );
        if phase != from {
            *self.transitions.entry((from, phase)).or_default() += 1;
        }
        self.phase = phase;
        assert_eq!(self.s.state(self.id), Some(phase.state()));
        // Settling: entered on a claim, left for the cut exactly at its deadline, or for a
        // wake before it.
        match (from == Phase::Settling, phase == Phase::Settling) {
            (false, true) => {
                assert_eq!(from, Phase::Claiming);
                let due = self.now + SETTLE;
                self.cut_due = Some(due);
                assert!(self.timeout.is_none(), "settling entered on a deadline");
                assert_eq!(self.s.poll_at(), Some(due), "the cut is due SETTLE on");
            }
            (true, true) => {
                assert_eq!(self.s.poll_at(), self.cut_due, "the cut's deadline moved");
            }
            (true, false) => {
                let due = self.cut_due.take().expect("entered");
                if phase == Phase::Cutting {
                    assert_eq!(self.timeout, Some(due), "cut before or after its deadline");
                } else {
                    assert_eq!(phase, Phase::Replaying);
                    assert!(self.timeout.is_none(), "cancelled on a deadline");
                    assert!(
                        self.now < due,
                        "cancelled at {} once the cut was due",
                        self.now
                    );
                }
            }
            (false, false) => assert!(self.cut_due.is_none()),
        }
        while let Some(action) = self.s.poll_action() {
            assert_eq!(action.guest(), self.id);
            match action {
                Action::Replay(_, run) => {
                    self.replayed_since_awake += run.len();
                    self.replayed.extend(run.iter().map(|f| f.bytes.to_vec()));
                }
                Action::Probe(..) => {}
                Action::Notify(_, Notice::Awake { wake }) => {
                    assert_eq!(phase, Phase::Awake);
                    if let Some(report) = wake {
                        assert_eq!(report.replayed, self.replayed_since_awake);
                        assert!(report.took <= report.handed_back_after, "{report:?}");
                        assert_eq!(
                            report.cause == WakeCause::InFlight,
                            self.in_flight,
                            "{report:?}"
                        );
                    } else {
                        assert!(!self.in_flight, "a wake for work in flight reported none");
                    }
                    self.replayed_since_awake = 0;
                    self.in_flight = false;
                }
                Action::Notify(_, Notice::WorkInFlight) => {
                    // Only the inspection finds work, and the guest is resumed for it at once.
                    assert_eq!(phase, Phase::Resuming);
                    assert!(!self.in_flight, "work in flight found twice in one wake");
                    self.in_flight = true;
                }
                Action::Notify(_, Notice::FellAsleep) => {
                    assert!(
                        matches!(phase, Phase::Asleep | Phase::Resuming),
                        "fell asleep, in {phase}"
                    );
                }
                Action::Notify(_, Notice::SleepCancelled) => {
                    // Before the cut there is nothing to restore; after it, the port is.
                    match from {
                        Phase::Claiming | Phase::Settling => assert_eq!(phase, Phase::Replaying),
                        Phase::Cutting => assert_eq!(phase, Phase::Restoring),
                        other => panic!("sleep cancelled in {other}"),
                    }
                }
                Action::Notify(..) => {}
                asked => {
                    if matches!(asked, Action::Cut(_)) {
                        assert_eq!(from, Phase::Settling, "a cut asked in {from}");
                    }
                    assert!(
                        !(matches!(asked, Action::Resume(_))
                            && matches!(self.out, Some(Action::Suspend(_) | Action::Inspect(_)))),
                        "a resume while the suspend or the inspection is out"
                    );
                    assert!(self.out.is_none(), "{asked:?} while {:?} is out", self.out);
                    self.out = Some(asked);
                }
            }
        }
        // The action out is the one the phase waits for, and only such a phase has one.
        assert_eq!(
            self.out.as_ref().and_then(waiting_phase),
            waiting_phase_of(phase),
            "{:?} out in {phase}",
            self.out
        );
    }

    /// Wakes the guest and does everything asked, successfully, until it is awake.
    fn wake_fully(&mut self) {
        self.wake();
        for _ in 0..100 {
            if self.phase == Phase::Awake {
                return;
            }
            self.now = self.now + Duration::from_millis(1);
            self.catch_up();
            if self.out.is_some() {
                self.run(Step::Complete {
                    ok: true,
                    link_down: false,
                    new_port: false,
                    busy: None,
                });
                continue;
            }
            match self.phase {
                Phase::Asleep | Phase::Retrying => self.wake(),
                Phase::Replaying => {
                    self.run(Step::AnswerProbe);
                    if let Some(at) = self.s.poll_at() {
                        self.now = self.now.max(at);
                    }
                    self.catch_up();
                }
                other => panic!("{other} waits for nothing"),
            }
        }
        panic!("not awake after 100 rounds, in {}", self.phase);
    }
}

/// The phase itself, if it waits for the outcome of an action.
fn waiting_phase_of(phase: Phase) -> Option<Phase> {
    matches!(
        phase,
        Phase::Claiming
            | Phase::Cutting
            | Phase::Suspending
            | Phase::Verifying
            | Phase::Resuming
            | Phase::Restoring
            | Phase::HandingBack
    )
    .then_some(phase)
}

impl Driver {
    /// A driver whose guest was put to sleep up to its settling (the claim a success), with
    /// frames held on the way.
    fn settling() -> Self {
        let mut d = Self::new();
        d.run(Step::Sleep);
        d.run(Step::Datagram);
        d.run(Step::Complete {
            ok: true,
            link_down: false,
            new_port: false,
            busy: None,
        });
        d.run(Step::Datagram);
        assert_eq!(d.phase, Phase::Settling);
        assert!(d.out.is_none(), "settling waits for no action");
        d
    }

    /// A driver whose guest was put to sleep, every step a success, up to the inspection
    /// (with its port cut `cut`), with frames held on the way.
    fn verifying(link_down: bool) -> Self {
        let mut d = Self::settling();
        d.run(Step::Advance(SETTLE.as_micros() as u64));
        assert_eq!(d.phase, Phase::Cutting);
        for _ in 0..2 {
            d.run(Step::Datagram);
            d.run(Step::Complete {
                ok: true,
                link_down,
                new_port: false,
                busy: None,
            });
        }
        assert_eq!(d.phase, Phase::Verifying);
        assert!(matches!(d.out, Some(Action::Inspect(_))));
        d
    }

    /// Wakes the guest fully, then checks that it is awake with nothing left and every frame
    /// held replayed exactly once, in order.
    fn finish(mut self) {
        self.wake_fully();
        assert_eq!(self.phase, Phase::Awake);
        assert!(self.out.is_none());
        assert!(
            !self.in_flight,
            "a wake for work in flight was not reported"
        );
        assert_eq!(self.s.held(self.id).count(), 0, "nothing held once awake");
        assert_eq!(self.s.poll_at(), None);
        assert_eq!(
            self.replayed.len(),
            self.queued.len(),
            "replayed {} of {} frames held",
            self.replayed.len(),
            self.queued.len()
        );
        assert!(
            self.replayed == self.queued,
            "the frames replayed are those held, in order"
        );
    }
}

proptest::proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_scripts_replay_every_held_frame_once_in_order_along_valid_transitions(
        steps in proptest::collection::vec(step(), 0..80),
    ) {
        let mut d = Driver::new();
        for step in steps {
            d.run(step);
        }
        d.finish();
    }

    /// The same, from a guest stopped and being inspected: random frames, wakes and sleeps
    /// race the inspection's outcome, busy or not.
    #[test]
    fn random_scripts_from_the_inspection_replay_every_held_frame_once_in_order(
        link_down in any::<bool>(),
        steps in proptest::collection::vec(step(), 0..40),
    ) {
        let mut d = Driver::verifying(link_down);
        for step in steps {
            d.run(step);
        }
        d.finish();
    }

    /// The same, from a guest settling: random frames, wakes, sleeps and short waits race
    /// the cut's deadline.
    #[test]
    fn random_scripts_from_settling_replay_every_held_frame_once_in_order(
        steps in proptest::collection::vec(settling_step(), 0..40),
    ) {
        let mut d = Driver::settling();
        for step in steps {
            d.run(step);
        }
        d.finish();
    }
}

/// A step of a script that starts settling: mostly steps short enough to race the cut.
fn settling_step() -> impl Strategy<Value = Step> {
    proptest::prop_oneof![
        3 => step(),
        1 => (0..=SETTLE.as_micros() as u64).prop_map(Step::Advance),
    ]
}

/// The random scripts, as the proptests above draw them (here from a fixed seed), reach
/// settling, and leave it every way there is: for the cut at its deadline, and for a
/// replay on an operator's wake or on a frame that wakes.
#[test]
fn random_scripts_settle_and_leave_settling_every_way() {
    let mut runner = TestRunner::deterministic();
    let scripts = proptest::collection::vec(step(), 0..80);
    let mut transitions = BTreeMap::<(Phase, Phase), usize>::new();
    let (mut by_wake, mut by_frame) = (0, 0);
    for _ in 0..512 {
        let steps = scripts.new_tree(&mut runner).expect("a script").current();
        let mut d = Driver::new();
        for step in steps {
            d.run(step);
        }
        for (t, n) in &d.transitions {
            *transitions.entry(*t).or_default() += n;
        }
        by_wake += d.settle_cancelled.0;
        by_frame += d.settle_cancelled.1;
        d.finish();
    }
    let seen = |from, to| transitions.get(&(from, to)).copied().unwrap_or(0);
    assert!(
        seen(Phase::Claiming, Phase::Settling) >= 50,
        "{transitions:?}"
    );
    assert!(
        seen(Phase::Settling, Phase::Cutting) >= 10,
        "{transitions:?}"
    );
    assert!(
        seen(Phase::Settling, Phase::Replaying) >= 10,
        "{transitions:?}"
    );
    assert!(
        by_wake >= 3 && by_frame >= 3,
        "wake {by_wake}, frame {by_frame}"
    );
    assert_eq!(by_wake + by_frame, seen(Phase::Settling, Phase::Replaying));
    // Every valid transition but the journal's (stand_in) is taken by some script.
    for from in Phase::ALL {
        for to in Phase::ALL {
            if from.valid_transition(to) && (from, to) != (Phase::Awake, Phase::Asleep) {
                assert!(seen(from, to) > 0, "{from} -> {to} never taken");
            }
        }
    }
}
