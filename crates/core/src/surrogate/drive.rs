//! The surrogate's side of the sleep and wake sequence: the requests that start a sleep or a
//! wake, the outcomes of the actions the sequence asked for, its deadlines and the frames
//! that move it on, and the actions that come out of it. The sequence itself (its phases,
//! actions, outcomes and notices, and each guest's place in it) is in `crate::sequence`,
//! whose documentation describes the whole.

use std::collections::VecDeque;

use super::Surrogate;
use crate::guest::GuestId;
use crate::lifecycle::GuestState;
use crate::queue::QueuedFrame;
use crate::sequence::{
    retry_delay, Action, Asked, Cut, Done, LifecycleError, Notice, Phase, WakeReport, WakeRun,
    MAX_PROBES, PROBE_TIMEOUT, QUIET_WAIT, REPLAY_RUN, SETTLE, UNDO_QUIET_WAIT,
};
use crate::time::Instant;
use crate::verdict::WakeCause;

impl Surrogate {
    /// A guest's phase.
    pub fn phase(&self, id: GuestId) -> Option<Phase> {
        self.guest(id).map(|g| g.seq.phase)
    }

    /// How guest `id`'s port is cut off the bridge, while it is.
    pub fn cut(&self, id: GuestId) -> Option<Cut> {
        self.guest(id).and_then(|g| g.seq.cut)
    }

    /// The next thing to do, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Asks for guest `id` to be put to sleep at `now`.
    pub fn sleep(&mut self, id: GuestId, now: Instant) -> Result<Asked, LifecycleError> {
        let g = self.guest_mut(id)?;
        Ok(match g.seq.phase {
            Phase::Awake => {
                self.enter(id, Phase::Claiming, now);
                self.actions.push_back(Action::Claim(id));
                Asked::Started
            }
            Phase::Claiming
            | Phase::Settling
            | Phase::Cutting
            | Phase::Suspending
            | Phase::Verifying
                if !g.seq.wake_asked =>
            {
                Asked::UnderWay
            }
            p => Asked::Already(p.state()),
        })
    }

    /// Asks for guest `id` to be woken at `now`, for `cause`. A wake asked while it falls
    /// asleep cancels the sleep; one asked while a failed resume waits for its next try is
    /// tried at once if an operator asked ([`WakeCause::Requested`]), and otherwise waits
    /// for the try (the frame is held meanwhile).
    pub fn wake(
        &mut self,
        id: GuestId,
        cause: WakeCause,
        now: Instant,
    ) -> Result<Asked, LifecycleError> {
        let g = self.guest_mut(id)?;
        let run = WakeRun {
            cause,
            started: now,
            served: None,
            replayed: 0,
        };
        Ok(match g.seq.phase {
            Phase::Awake => Asked::Already(GuestState::Awake),
            // Nothing is cut yet: the sleep is called off at once.
            Phase::Settling => {
                self.notify(id, Notice::SleepCancelled);
                self.undo(id, now);
                Asked::Started
            }
            Phase::Claiming | Phase::Cutting | Phase::Suspending | Phase::Verifying
                if !g.seq.wake_asked =>
            {
                g.seq.wake_asked = true;
                g.seq.wake = Some(run);
                Asked::Started
            }
            Phase::Claiming | Phase::Cutting | Phase::Suspending | Phase::Verifying => {
                Asked::UnderWay
            }
            Phase::Asleep => {
                g.seq.wake = Some(run);
                self.resume(id, now);
                Asked::Started
            }
            Phase::Retrying if cause == WakeCause::Requested => {
                self.resume(id, now);
                Asked::UnderWay
            }
            Phase::Retrying
            | Phase::Resuming
            | Phase::Restoring
            | Phase::Replaying
            | Phase::HandingBack => Asked::UnderWay,
        })
    }

    /// Takes over guest `id`, awake as far as the surrogate knew, as a guest found asleep
    /// (a journal left by an earlier run says so) with its port cut `cut`: the surrogate
    /// stands in for it from `now`.
    pub fn stand_in(
        &mut self,
        id: GuestId,
        cut: Option<Cut>,
        now: Instant,
    ) -> Result<(), LifecycleError> {
        let from = self.guest_mut(id)?.seq.phase;
        if from != Phase::Awake {
            return Err(LifecycleError::InvalidTransition {
                guest: self.name(id).to_owned(),
                from,
                to: Phase::Asleep,
            });
        }
        self.enter(id, Phase::Asleep, now);
        self.guest_mut(id)?.seq.cut = cut;
        Ok(())
    }

    /// Reports the outcome of an action for guest `id` at `now`.
    pub fn done(&mut self, id: GuestId, done: Done, now: Instant) -> Result<(), LifecycleError> {
        let phase = self.guest_mut(id)?.seq.phase;
        match (phase, done) {
            (Phase::Claiming, Done::Claimed { ok: true }) => {
                if self.guest_mut(id)?.seq.wake_asked {
                    self.notify(id, Notice::SleepCancelled);
                    self.undo(id, now);
                } else {
                    self.enter(id, Phase::Settling, now);
                    self.guest_mut(id)?.seq.cut_at = now + SETTLE;
                }
            }
            (Phase::Claiming, Done::Claimed { ok: false }) | (Phase::Cutting, Done::Cut(None)) => {
                self.notify(id, Notice::SleepFailed);
                self.undo(id, now);
            }
            (Phase::Cutting, Done::Cut(Some(cut))) => {
                let g = self.guest_mut(id)?;
                g.seq.cut = Some(cut);
                if g.seq.wake_asked {
                    self.notify(id, Notice::SleepCancelled);
                    self.undo(id, now);
                } else {
                    self.enter(id, Phase::Suspending, now);
                    self.actions.push_back(Action::Suspend(id));
                }
            }
            (Phase::Suspending, Done::Suspended { ok: true }) => {
                let g = self.guest_mut(id)?;
                if std::mem::take(&mut g.seq.wake_asked) {
                    self.notify(id, Notice::FellAsleep);
                    self.resume(id, now);
                } else {
                    self.enter(id, Phase::Verifying, now);
                    self.actions.push_back(Action::Inspect(id));
                }
            }
            (Phase::Verifying, Done::Inspected { busy }) => {
                let g = self.guest_mut(id)?;
                if std::mem::take(&mut g.seq.wake_asked) {
                    // A wake asked meanwhile: it goes ahead, whatever the guest held.
                    self.notify(id, Notice::FellAsleep);
                    self.resume(id, now);
                } else if busy == Some(true) {
                    g.seq.wake = Some(WakeRun {
                        cause: WakeCause::InFlight,
                        started: now,
                        served: None,
                        replayed: 0,
                    });
                    self.notify(id, Notice::WorkInFlight);
                    self.resume(id, now);
                } else {
                    self.notify(id, Notice::FellAsleep);
                    self.enter(id, Phase::Asleep, now);
                }
            }
            (Phase::Suspending, Done::Suspended { ok: false }) => {
                self.notify(id, Notice::SleepFailed);
                self.undo(id, now);
            }
            (Phase::Resuming, Done::Resumed { ok: true, new_port }) => {
                let g = self.guest_mut(id)?;
                g.seq.retry_at = None;
                if new_port {
                    g.seq.cut = None;
                }
                self.restore(id, now);
            }
            (Phase::Resuming, Done::Resumed { ok: false, .. }) => {
                let g = self.guest_mut(id)?;
                g.seq.tries += 1;
                let tries = g.seq.tries;
                let retry_in = retry_delay(tries);
                g.seq.retry_at = Some(now + retry_in);
                self.enter(id, Phase::Retrying, now);
                self.notify(id, Notice::WakeFailed { tries, retry_in });
            }
            (Phase::Restoring, Done::Restored) => {
                let g = self.guest_mut(id)?;
                let link_down = g.seq.cut.take() == Some(Cut::LinkDown);
                self.replay(id, now, !link_down);
            }
            (Phase::HandingBack, Done::HandedBack) => {
                let rest = self.guest_mut(id)?.queue.take();
                self.relay(id, rest);
                self.enter(id, Phase::Awake, now);
                let g = self.guest_mut(id)?;
                let seq = std::mem::take(&mut g.seq);
                let wake = seq.wake.map(|w| WakeReport {
                    cause: w.cause,
                    took: w.served.unwrap_or(now) - w.started,
                    handed_back_after: now - w.started,
                    replayed: w.replayed,
                    failed_tries: seq.tries,
                });
                self.notify(id, Notice::Awake { wake });
            }
            (phase, done) => {
                return Err(LifecycleError::Unexpected {
                    guest: self.name(id).to_owned(),
                    phase,
                    done,
                })
            }
        }
        Ok(())
    }

    /// Does what the sequences have due at `now`: retries of failed resumes, probes that
    /// went unanswered, quiet moments reached.
    pub(super) fn sequence_timeout(&mut self, now: Instant) {
        let due: Vec<GuestId> = self
            .guest_ids()
            .filter(|id| {
                self.guest(*id)
                    .and_then(|g| g.seq.poll_at())
                    .is_some_and(|at| at <= now)
            })
            .collect();
        for id in due {
            let Ok(g) = self.guest_mut(id) else { continue };
            match g.seq.phase {
                Phase::Settling => {
                    self.enter(id, Phase::Cutting, now);
                    self.actions.push_back(Action::Cut(id));
                }
                Phase::Retrying => self.resume(id, now),
                Phase::Replaying => {
                    if now >= g.seq.quiet_by {
                        self.notify(id, Notice::NoQuietMoment);
                        self.hand_back(id, now);
                        continue;
                    }
                    if g.seq.probe_until.is_some_and(|at| at <= now) {
                        g.seq.probe_until = None;
                        g.seq.unanswered += 1;
                        if g.seq.unanswered >= MAX_PROBES {
                            self.notify(id, Notice::ProbesUnanswered);
                            self.hand_back(id, now);
                            continue;
                        }
                        self.pump(id, now);
                        continue;
                    }
                    // A quiet moment: everything relayed is fenced, nothing held, and no
                    // frame relayed for QUIET.
                    if g.queue.len() == 0 && g.seq.fenced && g.seq.primed {
                        self.hand_back(id, now);
                    }
                }
                _ => {}
            }
        }
    }

    /// The guest answered the probe out for it, at `now`.
    pub(super) fn probe_answered(&mut self, id: GuestId, now: Instant) {
        let Ok(g) = self.guest_mut(id) else { return };
        if g.seq.phase != Phase::Replaying || g.seq.probe_until.is_none() {
            return;
        }
        g.seq.probe_until = None;
        g.seq.unanswered = 0;
        if g.seq.primed {
            g.seq.fenced = true;
            if let Some(w) = g.seq.wake.as_mut() {
                w.served.get_or_insert(now);
            }
        } else {
            g.seq.primed = true;
        }
        self.pump(id, now);
    }

    /// A frame was held for the guest at `now`: while replaying, it is relayed at once
    /// unless a probe is out (then after its answer).
    pub(super) fn frame_held(&mut self, id: GuestId, now: Instant) {
        if self.phase(id) == Some(Phase::Replaying) {
            self.pump(id, now);
        }
    }

    /// Whether a frame that asks for a wake of guest `id` starts one now. While the guest
    /// falls asleep, such a frame (held for it) cancels the sleep: the guest has work.
    pub(super) fn wake_for_frame(&mut self, id: GuestId, cause: WakeCause, now: Instant) -> bool {
        let Ok(g) = self.guest_mut(id) else {
            return false;
        };
        let asks = match g.seq.phase {
            Phase::Asleep => true,
            Phase::Claiming
            | Phase::Settling
            | Phase::Cutting
            | Phase::Suspending
            | Phase::Verifying => !g.seq.wake_asked,
            _ => false,
        };
        asks && self.wake(id, cause, now).is_ok()
    }

    /// Moves guest `id` to phase `to`, which the sequence only ever asks for when it is valid.
    fn enter(&mut self, id: GuestId, to: Phase, now: Instant) {
        let Ok(g) = self.guest_mut(id) else { return };
        debug_assert!(
            g.seq.phase.valid_transition(to),
            "{} -> {to} for {}",
            g.seq.phase,
            g.spec.name
        );
        let was = g.seq.phase.state();
        g.seq.phase = to;
        if to.state() == GuestState::Sleeping && was != GuestState::Sleeping {
            g.asleep_since = now;
        }
        if matches!(to.state(), GuestState::Waking { .. })
            && !matches!(was, GuestState::Waking { .. })
        {
            // The surrogate's conversations in the guest's name end: the guest takes over.
            g.echo.clear();
            g.health.clear();
            g.keepalive = g.keepalive.hasher().map();
            g.barrier = None;
        }
    }

    fn notify(&mut self, id: GuestId, notice: Notice) {
        self.actions.push_back(Action::Notify(id, notice));
    }

    fn resume(&mut self, id: GuestId, now: Instant) {
        self.enter(id, Phase::Resuming, now);
        if let Ok(g) = self.guest_mut(id) {
            g.seq.retry_at = None;
        }
        self.actions.push_back(Action::Resume(id));
    }

    /// Hands back the network of a guest that still runs (its sleep failed or was
    /// cancelled).
    fn undo(&mut self, id: GuestId, now: Instant) {
        if let Ok(g) = self.guest_mut(id) {
            // A wake asked for meanwhile is answered by the guest being awake; it reports no
            // wake, since the guest never stopped.
            g.seq.wake = None;
            g.seq.wake_asked = false;
        }
        self.restore(id, now);
    }

    /// Puts the guest's port back, if it was cut, then replays.
    fn restore(&mut self, id: GuestId, now: Instant) {
        let Ok(g) = self.guest_mut(id) else { return };
        match g.seq.cut {
            Some(cut) => {
                self.enter(id, Phase::Restoring, now);
                self.actions.push_back(Action::Restore(id, cut));
            }
            None => self.replay(id, now, true),
        }
    }

    fn replay(&mut self, id: GuestId, now: Instant, primed: bool) {
        self.enter(id, Phase::Replaying, now);
        let Ok(g) = self.guest_mut(id) else { return };
        g.seq.cut = None;
        g.seq.probe_until = None;
        g.seq.unanswered = 0;
        g.seq.primed = primed;
        g.seq.fenced = false;
        g.seq.last_relay = now;
        g.seq.quiet_by = now
            + if g.seq.wake.is_some() {
                QUIET_WAIT
            } else {
                UNDO_QUIET_WAIT
            };
        self.pump(id, now);
    }

    /// While replaying, with no probe out: relays the next run of held frames and fences it
    /// with a probe, or probes once more if what was relayed is not fenced yet. After a probe
    /// went unanswered nothing more is relayed until one is answered: the guest may not have
    /// taken in the last run yet.
    fn pump(&mut self, id: GuestId, now: Instant) {
        let Ok(g) = self.guest_mut(id) else { return };
        if g.seq.phase != Phase::Replaying || g.seq.probe_until.is_some() {
            return;
        }
        if g.seq.primed && g.seq.unanswered == 0 && g.queue.len() > 0 {
            let run = g.queue.take_oldest(REPLAY_RUN);
            g.seq.last_relay = now;
            g.seq.fenced = false;
            self.relay(id, run);
        } else if g.seq.primed && g.seq.fenced {
            return;
        }
        let from = self.probe_mac;
        match self.barrier_probe(id, from) {
            Some(probe) => {
                if let Ok(g) = self.guest_mut(id) {
                    g.seq.probe_until = Some(now + PROBE_TIMEOUT);
                }
                self.actions.push_back(Action::Probe(id, probe));
            }
            // A guest with no address cannot be probed: what was relayed is taken as in.
            None => {
                if let Ok(g) = self.guest_mut(id) {
                    g.seq.primed = true;
                    g.seq.fenced = true;
                    if g.queue.len() > 0 {
                        self.pump(id, now);
                    }
                }
            }
        }
    }

    fn relay(&mut self, id: GuestId, frames: VecDeque<QueuedFrame>) {
        if frames.is_empty() {
            return;
        }
        if let Ok(g) = self.guest_mut(id) {
            if let Some(w) = g.seq.wake.as_mut() {
                w.replayed += frames.len();
            }
        }
        self.actions.push_back(Action::Replay(id, frames));
    }

    fn hand_back(&mut self, id: GuestId, now: Instant) {
        self.enter(id, Phase::HandingBack, now);
        if let Ok(g) = self.guest_mut(id) {
            g.seq.probe_until = None;
            g.barrier = None;
        }
        self.actions.push_back(Action::HandBack(id));
    }
}
