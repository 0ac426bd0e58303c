//! A guest's sleep and wake as one explicit sequence, driven without I/O.
//!
//! This module holds the sequence: its phases ([`Phase`]), what it asks the daemon to do
//! ([`Action`]) and what the daemon answers ([`Done`]), what it tells ([`Notice`]), and each
//! guest's place in it. The [`Surrogate`] drives it, in `src/surrogate/drive.rs`.
//!
//! Each guest is in one [`Phase`]. The daemon asks for a sleep or a wake
//! ([`Surrogate::sleep`], [`Surrogate::wake`]), frames ask for wakes on their own
//! ([`Surrogate::handle_frame`]), and the daemon reports what it was told to do
//! ([`Surrogate::done`]) and the passing of time ([`Surrogate::handle_timeout`]). What to do
//! next comes out of [`Surrogate::poll_action`], in order, and the next deadline out of
//! [`Surrogate::poll_at`]. Nothing here waits: a phase that waits for something (the
//! backend, a probe's answer, a quiet moment in the guest's traffic) is a phase with a
//! deadline.
//!
//! ```text
//! Awake ─sleep─▶ Claiming ─▶ Settling ─▶ Cutting ─▶ Suspending ─▶ Verifying ─▶ Asleep ─wake─▶ Resuming
//!   ▲                                                      │ (work in flight)           │ ▲
//!   │                                                      └──────────────────────────▶ │ │
//!   │                                                       Retrying ◀── (failed) ──────┘ │
//!   │                                                          └──────── (timer) ─────────┘
//!   └── HandingBack ◀── Replaying ◀── Restoring ◀── (resumed) ── Resuming
//! ```
//!
//! Once the backend has stopped the guest, what it still has to do is read where the
//! backend can tell ([`Action::Inspect`]): a request its kernel took in just before the cut,
//! or an answer it had not had acknowledged, would wait there with nothing to wake the guest
//! for it (its kernel would even retransmit into the cut port and back off). Such a guest is
//! woken again at once ([`WakeCause::InFlight`]); its clients wait a few milliseconds more.
//!
//! A wake asked for while the guest is still falling asleep cancels the sleep where it is
//! (before the backend was called, the guest never stopped: its network is handed back; once
//! the backend is stopping it, it is resumed as soon as it has stopped). A failed step of a
//! sleep hands the network back the same way. Every frame held for the guest, in whatever
//! phase it arrived, leaves through [`Action::Replay`], oldest first, exactly once.
//!
//! [`Surrogate`]: crate::Surrogate
//! [`Surrogate::sleep`]: crate::Surrogate::sleep
//! [`Surrogate::wake`]: crate::Surrogate::wake
//! [`Surrogate::handle_frame`]: crate::Surrogate::handle_frame
//! [`Surrogate::done`]: crate::Surrogate::done
//! [`Surrogate::handle_timeout`]: crate::Surrogate::handle_timeout
//! [`Surrogate::poll_action`]: crate::Surrogate::poll_action
//! [`Surrogate::poll_at`]: crate::Surrogate::poll_at

use core::fmt;
use std::collections::VecDeque;
use std::time::Duration;

use crate::guest::GuestId;
use crate::lifecycle::GuestState;
use crate::queue::QueuedFrame;
use crate::time::Instant;
use crate::verdict::WakeCause;

/// Frames replayed between two probes: a slow guest (a QEMU guest under TCG reads its tap
/// only as fast as it runs, and its tap holds 1,000 frames) is never sent more than it can
/// take in before it has answered.
pub const REPLAY_RUN: usize = 64;
/// How long the guest may take to answer a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(50);
/// Unanswered probes in a row after which the bridge is switched back regardless.
pub const MAX_PROBES: u32 = 4;
/// How long no frame for a waking guest must have been relayed before the bridge is
/// switched back to it: a frame still on its way to the surrogate at the switch would be
/// overtaken by a successor the bridge delivers directly.
pub const QUIET: Duration = Duration::from_millis(2);
/// How long a sleep waits between pointing the guest's MAC at the surrogate and cutting the
/// guest's port: frames already on their way to the guest are taken in, and answered
/// through its port, before the port goes (an answer sent into a cut port is lost, and a
/// lost SYN-ACK costs its client a second).
pub const SETTLE: Duration = Duration::from_millis(2);
/// How long handing the network back to a guest that never stopped (its sleep failed, or a
/// request called it off) waits for a quiet moment: it holds only what came since the claim,
/// and a request in progress, the usual reason for the call-off, seldom lets its traffic
/// pause. (Relaying for [`QUIET_WAIT`] there made every called-off sleep under 2,000
/// requests a second cost half a second of relayed traffic.)
pub const UNDO_QUIET_WAIT: Duration = Duration::from_millis(20);
/// How long a wake waits for a quiet moment before it switches the bridge under traffic.
pub const QUIET_WAIT: Duration = Duration::from_millis(500);
/// The unit of the delay before a failed resume is tried again: after `n` failures in a row
/// the delay is this times 2ⁿ (100 ms after the first), up to [`MAX_RETRY_DELAY`].
pub const RETRY_DELAY_UNIT: Duration = Duration::from_millis(50);
/// The longest delay between two tries of a resume.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Where a guest is in its sleep and wake sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// It runs and owns its address.
    Awake,
    /// The bridge's entry for its MAC is being pointed at the surrogate ([`Action::Claim`]).
    Claiming,
    /// Its MAC points at the surrogate; what was on its way to the guest is answered through
    /// its port before the cut ([`SETTLE`]).
    Settling,
    /// Its port is being taken off the bridge ([`Action::Cut`]).
    Cutting,
    /// The backend is stopping it ([`Action::Suspend`]); the surrogate already answers.
    Suspending,
    /// Stopped; what it still has to do is being read ([`Action::Inspect`]).
    Verifying,
    /// Stopped; the surrogate answers, holds and wakes.
    Asleep,
    /// The backend is resuming it ([`Action::Resume`]).
    Resuming,
    /// A resume failed; the surrogate stands in until the next try.
    Retrying,
    /// Its port is being put back on the bridge ([`Action::Restore`]).
    Restoring,
    /// What was held is being replayed into its port, fenced by probes, until a quiet moment.
    Replaying,
    /// The bridge's entry for its MAC is being pointed back at it ([`Action::HandBack`]).
    HandingBack,
}

impl Phase {
    /// Every phase.
    pub const ALL: [Phase; 12] = [
        Phase::Awake,
        Phase::Claiming,
        Phase::Settling,
        Phase::Cutting,
        Phase::Suspending,
        Phase::Verifying,
        Phase::Asleep,
        Phase::Resuming,
        Phase::Retrying,
        Phase::Restoring,
        Phase::Replaying,
        Phase::HandingBack,
    ];

    /// Whether the sequence may go from `self` to `to`.
    pub fn valid_transition(self, to: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, to),
            (Awake, Claiming)
                // Taken over from a journal: stood in for, or woken.
                | (Awake, Asleep)
                | (Claiming, Settling)
                | (Settling, Cutting)
                // A claim that failed, or a wake before the cut: nothing to restore.
                | (Claiming, Replaying)
                | (Settling, Replaying)
                | (Cutting, Suspending)
                | (Cutting, Restoring)
                | (Cutting, Replaying)
                | (Suspending, Verifying)
                | (Suspending, Resuming)
                // The backend could not stop it: it still runs.
                | (Suspending, Restoring)
                | (Verifying, Asleep)
                // It still had work, or a wake was asked meanwhile.
                | (Verifying, Resuming)
                | (Asleep, Resuming)
                | (Resuming, Restoring)
                // Resumed on a new port, which joined the bridge forwarding.
                | (Resuming, Replaying)
                | (Resuming, Retrying)
                | (Retrying, Resuming)
                | (Restoring, Replaying)
                | (Replaying, HandingBack)
                | (HandingBack, Awake)
        )
    }

    /// The state that decides what the surrogate does with the guest's frames.
    pub fn state(self) -> GuestState {
        match self {
            Phase::Awake => GuestState::Awake,
            Phase::Claiming | Phase::Settling | Phase::Cutting => GuestState::FallingAsleep,
            Phase::Suspending | Phase::Verifying | Phase::Asleep | Phase::Retrying => {
                GuestState::Sleeping
            }
            Phase::Resuming | Phase::Restoring => GuestState::Waking { port_up: false },
            Phase::Replaying | Phase::HandingBack => GuestState::Waking { port_up: true },
        }
    }

    /// Its name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Awake => "awake",
            Phase::Claiming => "claiming",
            Phase::Settling => "settling",
            Phase::Cutting => "cutting",
            Phase::Suspending => "suspending",
            Phase::Verifying => "verifying",
            Phase::Asleep => "asleep",
            Phase::Resuming => "resuming",
            Phase::Retrying => "retrying",
            Phase::Restoring => "restoring",
            Phase::Replaying => "replaying",
            Phase::HandingBack => "handing-back",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a sleeping guest's port is kept off the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cut {
    /// The bridge port is disabled; the link stays up, so the guest sees no carrier change.
    PortDisabled,
    /// The link is down (a bridge running the kernel's STP refuses to disable a port).
    LinkDown,
}

/// What the daemon is to do next, from
/// [`Surrogate::poll_action`](crate::Surrogate::poll_action). Each action but
/// [`Action::Replay`], [`Action::Probe`] and [`Action::Notify`] is answered with its
/// [`Done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Point the bridge's entry for the guest's MAC at the surrogate's port (static, so the
    /// guest's own frames cannot move it), handle every frame captured until then, and
    /// report [`Done::Claimed`].
    Claim(GuestId),
    /// Take the guest's port off the bridge; report [`Done::Cut`] with how.
    Cut(GuestId),
    /// Have the backend stop the guest; report [`Done::Suspended`].
    Suspend(GuestId),
    /// Have the backend read what the stopped guest still has to do; report
    /// [`Done::Inspected`].
    Inspect(GuestId),
    /// Have the backend resume the guest; report [`Done::Resumed`].
    Resume(GuestId),
    /// Put the guest's port back on the bridge, undoing this cut; report [`Done::Restored`].
    Restore(GuestId, Cut),
    /// Send these held frames into the guest's port, in this order.
    Replay(GuestId, VecDeque<QueuedFrame>),
    /// Send this probe into the guest's port. Its answer, when it reaches the surrogate's
    /// port, shows that the guest has taken in everything sent into its port before it.
    Probe(GuestId, Vec<u8>),
    /// Point the bridge's entry for the guest's MAC back at the guest's port (dynamic),
    /// handle every frame captured until then, and report [`Done::HandedBack`].
    HandBack(GuestId),
    /// Something others want to know happened.
    Notify(GuestId, Notice),
}

impl Action {
    /// The guest the action is for.
    pub fn guest(&self) -> GuestId {
        match self {
            Action::Claim(id)
            | Action::Cut(id)
            | Action::Suspend(id)
            | Action::Inspect(id)
            | Action::Resume(id)
            | Action::Restore(id, _)
            | Action::Replay(id, _)
            | Action::Probe(id, _)
            | Action::HandBack(id)
            | Action::Notify(id, _) => *id,
        }
    }
}

/// The outcome of an [`Action`], for [`Surrogate::done`](crate::Surrogate::done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// [`Action::Claim`] done (`ok`) or failed.
    Claimed {
        /// The entry points at the surrogate.
        ok: bool,
    },
    /// [`Action::Cut`] done, and how (`None`: failed; the port is on the bridge).
    Cut(Option<Cut>),
    /// [`Action::Suspend`] done (`ok`) or failed (the guest still runs).
    Suspended {
        /// The guest is stopped.
        ok: bool,
    },
    /// [`Action::Inspect`] done: whether the guest still has work (`None`: the backend cannot
    /// tell, or failed to).
    Inspected {
        /// It has work in flight.
        busy: Option<bool>,
    },
    /// [`Action::Resume`] done (`ok`) or failed (the guest is still stopped).
    Resumed {
        /// The guest runs.
        ok: bool,
        /// It runs on a new port, which joined the bridge forwarding (a QEMU process
        /// started again from a save): there is no cut to undo.
        new_port: bool,
    },
    /// [`Action::Restore`] done. A failure is the daemon's to report; the sequence goes on,
    /// since holding the guest's traffic longer would not bring the port back.
    Restored,
    /// [`Action::HandBack`] done (or failed: the guest's first frame out teaches the bridge).
    HandedBack,
}

/// What happened to a guest, in [`Action::Notify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The backend has stopped it and it had no work left: it is asleep.
    FellAsleep,
    /// The backend has stopped it, but it still had work; it is woken again at once.
    WorkInFlight,
    /// A step of its sleep failed; its network is being handed back and it keeps running.
    SleepFailed,
    /// A wake was asked for before the backend was called; its network is being handed back.
    SleepCancelled,
    /// A resume failed; the next try is in `retry_in`.
    WakeFailed {
        /// Failed tries in a row.
        tries: u32,
        /// The delay until the next.
        retry_in: Duration,
    },
    /// The guest did not answer [`MAX_PROBES`] probes in a row; the bridge is switched back
    /// without proof that it has taken in what was replayed.
    ProbesUnanswered,
    /// No quiet moment came in [`QUIET_WAIT`]; the bridge is switched back under traffic.
    NoQuietMoment,
    /// It is awake and owns its address again: with `wake`, after a wake; without, after a
    /// sleep that failed or was cancelled.
    Awake {
        /// The wake, if there was one.
        wake: Option<WakeReport>,
    },
}

/// A finished wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeReport {
    /// Why it woke.
    pub cause: WakeCause,
    /// The wake's duration: from the frame (or request) that caused it to the guest's first
    /// answer after the replay (its answer to the first probe sent after the frames held
    /// for it, so it had taken that frame in and answered it too). If it answered no probe,
    /// until the bridge was switched back.
    pub took: Duration,
    /// From the frame that caused it until the bridge was switched back to the guest.
    pub handed_back_after: Duration,
    /// Frames replayed into the guest's port.
    pub replayed: usize,
    /// Failed resumes before the one that worked.
    pub failed_tries: u32,
}

/// The answer to [`Surrogate::sleep`](crate::Surrogate::sleep) and
/// [`Surrogate::wake`](crate::Surrogate::wake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// Asked for now, first: a sleep of an awake guest; a wake of a guest asleep or falling
    /// asleep (the wake then waits for, or cancels, the sleep under way).
    Started,
    /// One is already under way that ends where asked: the asker is told by the next
    /// [`Notice::FellAsleep`], [`Notice::WorkInFlight`] or [`Notice::Awake`] (sleep), or the
    /// next [`Notice::Awake`] (wake).
    UnderWay,
    /// Nothing to do: the guest is in this state, which the request cannot change (awake
    /// for a wake; for a sleep: asleep, waking, or falling asleep with a wake already asked
    /// for, which ends the sleep).
    Already(GuestState),
}

/// A lifecycle step asked of a guest in a state that does not allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// No such guest.
    #[error("no guest with handle {0:?}")]
    UnknownGuest(GuestId),
    /// The step does not follow from the guest's phase.
    #[error("guest {guest} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The guest.
        guest: String,
        /// Its phase.
        from: Phase,
        /// The phase the step leads to.
        to: Phase,
    },
    /// An outcome reported for an action the guest's phase did not ask for.
    #[error("guest {guest} is {phase}; it asked for nothing that ends in {done:?}")]
    Unexpected {
        /// The guest.
        guest: String,
        /// Its phase.
        phase: Phase,
        /// The outcome.
        done: Done,
    },
}

/// A wake under way, or asked for while the guest still falls asleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WakeRun {
    pub(crate) cause: WakeCause,
    pub(crate) started: Instant,
    /// When the guest first answered a probe sent after a replay.
    pub(crate) served: Option<Instant>,
    pub(crate) replayed: usize,
}

/// A guest's sequence: its phase and what the phase waits for.
#[derive(Debug, Clone)]
pub(crate) struct Sequence {
    pub(crate) phase: Phase,
    /// How its port is cut, while it is.
    pub(crate) cut: Option<Cut>,
    /// The wake under way or asked for; `None` while a failed or cancelled sleep is undone.
    pub(crate) wake: Option<WakeRun>,
    /// A wake asked for while it falls asleep.
    pub(crate) wake_asked: bool,
    /// Failed resumes in a row, and when the next try is due.
    pub(crate) tries: u32,
    pub(crate) retry_at: Option<Instant>,
    /// While settling: when the port is cut.
    pub(crate) cut_at: Instant,
    /// While replaying: the probe out and when it counts as unanswered; probes unanswered
    /// in a row; whether a probe was answered before anything was replayed (after a carrier
    /// change the way back must be proven first); whether every frame relayed so far was
    /// fenced by an answered probe; when a frame was last relayed; when the wait for a
    /// quiet moment ends.
    pub(crate) probe_until: Option<Instant>,
    pub(crate) unanswered: u32,
    pub(crate) primed: bool,
    pub(crate) fenced: bool,
    pub(crate) last_relay: Instant,
    pub(crate) quiet_by: Instant,
}

impl Default for Sequence {
    fn default() -> Self {
        Self {
            phase: Phase::Awake,
            cut: None,
            wake: None,
            wake_asked: false,
            tries: 0,
            retry_at: None,
            cut_at: Instant::ZERO,
            probe_until: None,
            unanswered: 0,
            primed: false,
            fenced: false,
            last_relay: Instant::ZERO,
            quiet_by: Instant::ZERO,
        }
    }
}

impl Sequence {
    /// The next deadline of the phase.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Settling => Some(self.cut_at),
            Phase::Retrying => self.retry_at,
            Phase::Replaying => {
                let quiet = (self.probe_until.is_none() && self.primed && self.fenced)
                    .then_some(self.last_relay + QUIET);
                [self.probe_until, quiet, Some(self.quiet_by)]
                    .into_iter()
                    .flatten()
                    .min()
            }
            _ => None,
        }
    }
}

/// The delay before the next try of a resume that has failed `tries` times in a row.
pub fn retry_delay(tries: u32) -> Duration {
    RETRY_DELAY_UNIT
        .saturating_mul(1 << tries.min(7))
        .min(MAX_RETRY_DELAY)
}
