//! The idleness policy: when an awake guest has done nothing worth staying awake for.
//!
//! An [`IdleTracker`] per guest takes the guest's counters on an interval ([`Sample`]s, read by
//! the daemon from libvirt domain stats, QMP or the guest's cgroup) and the number of frames the
//! guest received that the surrogate could have answered itself
//! ([`IdleTracker::observe_answerable`]), and says after each sample whether the guest is
//! [`Busy`](Decision::Busy), [`Idle`](Decision::Idle) for how long, or should now
//! [`Sleep`](Decision::Sleep). It reads no clock and no counter itself: every time and figure
//! comes in as an argument, so the policy is tested in virtual time.
//!
//! # What counts as activity
//!
//! The time between two samples is an *interval*. An interval is quiet when, over it,
//!
//! - the guest burned less CPU than [`IdlePolicy::cpu_percent`] (CPU time over wall time, as
//!   a share of one core: 100 % is one core fully used; a guest with several vCPUs can reach
//!   more than 100 %);
//! - every frame the guest received was one the surrogate could have answered itself (ARP,
//!   NDP, ping, configured health checks): *real* frames are the guest's received frames
//!   minus the answerable ones;
//! - the sample that ends it shows no open connection on a port of
//!   [`IdlePolicy::keep_awake_while_connected`];
//! - the guest is not pinned ([`IdleTracker::pin`]), and its counters did not go back.
//!
//! Frames the guest sent do not count: a guest that answers ARP or pings itself, or sends a
//! log line now and then, is still idle. They are reported in the figures.
//!
//! Any interval that is not quiet restarts the idle clock at the end of that interval (the
//! tracker cannot know when, inside the interval, the activity stopped). A guest is told to
//! sleep at the first quiet sample at which it has been idle for at least
//! [`IdlePolicy::idle_after`].
//!
//! # Sampling interval
//!
//! Decisions are only made when a sample comes in, so with samples every `interval`:
//!
//! - the decision comes at most one interval after `idle_after` has passed since the idle
//!   clock started (at the first sample, at [`IdleTracker::reset`], at
//!   [`IdleTracker::unpin`], or at the end of the last busy interval): exactly at
//!   `idle_after` when it is a multiple of the interval, otherwise at the next sample;
//! - measured from the guest's last actual activity, which can lie anywhere in the busy
//!   interval before, the decision comes after at least `idle_after` and less than
//!   `idle_after` plus two intervals (plus one when `idle_after` is a multiple of the
//!   interval).
//!
//! The first sample (after [`IdleTracker::new`] or [`IdleTracker::reset`]) only sets the
//! baseline: it never decides `Sleep`, even when the idle clock started long before.
//!
//! # Counter resets
//!
//! A guest started again from a managed save starts its counters (CPU time, interface
//! counters) at zero. A sample whose CPU time or frame counters are lower than the previous
//! sample's, or whose time is earlier, becomes the new baseline and counts as activity
//! ([`BusyReason::CountersReset`]): the guest was restarted behind the tracker's back, which is
//! not idleness.

use core::fmt;
use std::time::Duration;

use crate::guest::PortRule;
use crate::time::Instant;

/// When a guest counts as idle. One per guest; the daemon fills it from the config (global
/// defaults under `[idle]`, overridden per guest).
#[derive(Debug, Clone, PartialEq)]
pub struct IdlePolicy {
    /// An interval counts as idle only below this share of one core, in percent (2.0: the
    /// guest used less than 20 ms of CPU time per second). A NaN threshold is never met.
    pub cpu_percent: f64,
    /// How long a guest must stay idle before it is put to sleep.
    pub idle_after: Duration,
    /// After a wake ([`IdleTracker::reset`]), the guest is not told to sleep before this
    /// long, however idle (against a guest flapping between asleep and awake). Zero: no
    /// minimum.
    pub min_awake: Duration,
    /// An open connection on one of these local ports of the guest keeps it awake.
    pub keep_awake_while_connected: Vec<PortRule>,
}

/// The guest's counters at one moment, as the daemon read them from its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When the counters were read.
    pub at: Instant,
    /// The guest's cumulative CPU time (libvirt `cpu.time`, cgroup `cpu.stat` `usage_usec`).
    pub cpu_time: Duration,
    /// Frames the guest received, cumulative, counted on the guest's interface (libvirt's
    /// `net.N.rx.pkts`, which is the tap's `tx`).
    pub rx_frames: u64,
    /// Frames the guest sent, cumulative. Reported, not counted as activity.
    pub tx_frames: u64,
    /// The guest's local ports with an established connection at `at`, if the backend can
    /// tell; empty if it cannot (then [`IdlePolicy::keep_awake_while_connected`] has no
    /// effect).
    pub open_connections: Vec<PortRule>,
}

/// What the tracker made of a sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The guest did something in the interval that ended with this sample (or is pinned);
    /// its idle clock starts again at this sample.
    Busy {
        /// What it did: the first of pinned, counters reset, keep-awake connection, real
        /// traffic, CPU, in that order.
        reason: BusyReason,
    },
    /// The guest is idle, but not yet for long enough.
    Idle {
        /// How long it has been idle.
        idle_for: Duration,
        /// How much longer it must stay idle to be told to sleep (the decision comes at the
        /// first sample after that).
        sleep_in: Duration,
    },
    /// The guest has been idle for [`IdlePolicy::idle_after`]: put it to sleep. Returned once;
    /// after it, samples return [`Decision::AlreadyDecided`] until [`IdleTracker::reset`].
    Sleep {
        /// What the decision is based on, for the log.
        figures: SleepFigures,
    },
    /// [`Decision::Sleep`] was returned at `at` and the tracker has not been reset since: the
    /// sample was ignored.
    AlreadyDecided {
        /// When `Sleep` was returned.
        at: Instant,
    },
}

/// Why a guest is not idle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BusyReason {
    /// An operator pinned it awake.
    Pinned,
    /// It is in one of its awake windows (`awake_during`).
    Window,
    /// Its counters (or the sample time) went back: the guest was restarted, and this sample
    /// is the new baseline.
    CountersReset,
    /// It has an open connection on a keep-awake port.
    Connection(PortRule),
    /// It received frames the surrogate could not have answered.
    Traffic {
        /// How many, in the interval.
        frames: u64,
    },
    /// It used at least the threshold's share of CPU.
    Cpu {
        /// The share of one core over the interval, in percent (infinite for CPU time used in
        /// an interval of no wall time).
        percent: f64,
    },
}

impl BusyReason {
    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BusyReason::Pinned => "pinned",
            BusyReason::Window => "awake-window",
            BusyReason::CountersReset => "counters-reset",
            BusyReason::Connection(_) => "connection",
            BusyReason::Traffic { .. } => "traffic",
            BusyReason::Cpu { .. } => "cpu",
        }
    }
}

impl fmt::Display for BusyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusyReason::Pinned => f.write_str("pinned awake"),
            BusyReason::Window => f.write_str("in an awake window"),
            BusyReason::CountersReset => f.write_str("counters went back (guest restarted)"),
            BusyReason::Connection(rule) => write!(f, "open connection on {rule}"),
            BusyReason::Traffic { frames } => write!(f, "{frames} frames of real traffic"),
            BusyReason::Cpu { percent } => write!(f, "CPU at {percent:.2}% of one core"),
        }
    }
}

/// The figures behind a [`Decision::Sleep`], over the idle window: the quiet intervals since
/// the idle clock last started.
#[derive(Debug, Clone, PartialEq)]
pub struct SleepFigures {
    /// How long the guest has been idle (at least [`IdlePolicy::idle_after`]).
    pub idle_for: Duration,
    /// The quiet intervals measured in the window.
    pub intervals: u32,
    /// Wall time covered by those intervals (less than `idle_for` when the idle clock started
    /// before the baseline sample, as after a reset).
    pub measured: Duration,
    /// CPU over the measured intervals, as a share of one core, in percent.
    pub cpu_percent: f64,
    /// The highest share of any single interval, in percent.
    pub peak_cpu_percent: f64,
    /// Frames the guest received in the window.
    pub rx_frames: u64,
    /// Of the frames the surrogate reported as answerable in the window, how many were
    /// matched against `rx_frames` (so `rx_frames - answerable_rx_frames` is the real traffic:
    /// always zero here).
    pub answerable_rx_frames: u64,
    /// Frames the guest sent in the window.
    pub tx_frames: u64,
}

impl fmt::Display for SleepFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "idle for {:.1}s: CPU {:.2}% of one core (peak {:.2}%) over {} intervals ({:.1}s), \
             {} frames received, {} of them answerable by the surrogate, {} sent",
            self.idle_for.as_secs_f64(),
            self.cpu_percent,
            self.peak_cpu_percent,
            self.intervals,
            self.measured.as_secs_f64(),
            self.rx_frames,
            self.answerable_rx_frames,
            self.tx_frames,
        )
    }
}

/// The counters of the previous sample.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    at: Instant,
    cpu_time: Duration,
    rx_frames: u64,
    tx_frames: u64,
}

/// Sums over the quiet intervals of the idle window.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    intervals: u32,
    wall: Duration,
    cpu: Duration,
    peak_cpu_percent: f64,
    rx_frames: u64,
    answerable_rx_frames: u64,
    tx_frames: u64,
}

/// One guest's idleness, sample by sample. See the [module documentation](self) for the
/// rules and the timing.
#[derive(Debug, Clone)]
pub struct IdleTracker {
    policy: IdlePolicy,
    pinned: bool,
    /// The previous sample; `None` until the first sample after `new` or `reset`.
    last: Option<Baseline>,
    /// Where the idle clock started; `None` before the first sample or reset.
    idle_since: Option<Instant>,
    window: Window,
    /// Answerable frames observed since the previous sample.
    answerable: u64,
    /// Answerable frames of the previous interval that its received frames did not account
    /// for: the surrogate may count a frame before the guest's counter does. Used in the next
    /// interval only.
    credit: u64,
    /// When `Sleep` was returned, until `reset`.
    decided: Option<Instant>,
    /// When it was last woken ([`IdleTracker::reset`]); `None` before that.
    awake_since: Option<Instant>,
    /// Held awake by an awake window ([`IdleTracker::hold`]).
    held: bool,
}

impl IdleTracker {
    /// A tracker for a guest under `policy`, awaiting its first sample.
    pub fn new(policy: IdlePolicy) -> Self {
        Self {
            policy,
            pinned: false,
            last: None,
            idle_since: None,
            window: Window::default(),
            answerable: 0,
            credit: 0,
            decided: None,
            awake_since: None,
            held: false,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &IdlePolicy {
        &self.policy
    }

    /// Counts `frames` that the guest received (or will have received by the next sample) and
    /// that the surrogate could have answered itself: ARP and NDP, echo requests, configured
    /// health checks. They are taken off the guest's received frames at the next sample.
    ///
    /// Read the guest's counters before taking the frames the surrogate has seen up to then;
    /// a frame the surrogate counts before the guest's counter shows it is carried over to
    /// the following interval (once; after that it expires, so that it cannot hide later
    /// traffic).
    pub fn observe_answerable(&mut self, frames: u64) {
        self.answerable = self.answerable.saturating_add(frames);
    }

    /// Takes the guest's counters at `sample.at` and decides. Samples are expected in time
    /// order, only while the guest is awake (the daemon stops sampling once it acts on
    /// [`Decision::Sleep`], and calls [`IdleTracker::reset`] when the guest is awake again).
    pub fn sample(&mut self, sample: Sample) -> Decision {
        let now = sample.at;
        if let Some(at) = self.decided {
            self.answerable = 0;
            return Decision::AlreadyDecided { at };
        }
        let answerable = core::mem::take(&mut self.answerable);
        let current = Baseline {
            at: now,
            cpu_time: sample.cpu_time,
            rx_frames: sample.rx_frames,
            tx_frames: sample.tx_frames,
        };
        let Some(last) = self.last.replace(current) else {
            // The first sample: only a baseline. What the surrogate saw before it may still
            // show up in the guest's counters of the first interval.
            self.credit = answerable;
            let since = *self.idle_since.get_or_insert(now);
            return match self.held_awake(&sample) {
                Some(reason) => self.busy(now, reason),
                None => self.idle(now, since),
            };
        };

        let went_back = now < last.at
            || sample.cpu_time < last.cpu_time
            || sample.rx_frames < last.rx_frames
            || sample.tx_frames < last.tx_frames;
        if went_back {
            self.credit = 0;
            let reason = if self.pinned {
                BusyReason::Pinned
            } else {
                BusyReason::CountersReset
            };
            return self.busy(now, reason);
        }

        let wall = now.saturating_since(last.at);
        let cpu = sample.cpu_time.saturating_sub(last.cpu_time);
        let rx = sample.rx_frames - last.rx_frames;
        let tx = sample.tx_frames - last.tx_frames;
        let cpu_percent = share_of_one_core(cpu, wall);

        // Answerable frames carried over from the previous interval are matched first; what
        // is left of them expires now.
        let from_credit = rx.min(self.credit);
        let unmatched = rx - from_credit;
        let from_current = unmatched.min(answerable);
        let real = unmatched - from_current;
        self.credit = answerable - from_current;

        let reason = self.held_awake(&sample).or(if real > 0 {
            Some(BusyReason::Traffic { frames: real })
        } else if cpu_percent < self.policy.cpu_percent {
            None
        } else {
            Some(BusyReason::Cpu {
                percent: cpu_percent,
            })
        });
        if let Some(reason) = reason {
            return self.busy(now, reason);
        }

        let w = &mut self.window;
        w.intervals = w.intervals.saturating_add(1);
        w.wall = w.wall.saturating_add(wall);
        w.cpu = w.cpu.saturating_add(cpu);
        w.peak_cpu_percent = w.peak_cpu_percent.max(cpu_percent);
        w.rx_frames = w.rx_frames.saturating_add(rx);
        w.answerable_rx_frames = w
            .answerable_rx_frames
            .saturating_add(from_credit + from_current);
        w.tx_frames = w.tx_frames.saturating_add(tx);

        let since = *self.idle_since.get_or_insert(now);
        let idle_for = now.saturating_since(since);
        if idle_for < self.policy.idle_after {
            return self.idle(now, since);
        }
        if let Some(awake) = self.awake_since.map(|w| now.saturating_since(w)) {
            if awake < self.policy.min_awake {
                return Decision::Idle {
                    idle_for,
                    sleep_in: self.policy.min_awake - awake,
                };
            }
        }
        self.decided = Some(now);
        let w = self.window;
        Decision::Sleep {
            figures: SleepFigures {
                idle_for,
                intervals: w.intervals,
                measured: w.wall,
                cpu_percent: share_of_one_core(w.cpu, w.wall),
                peak_cpu_percent: w.peak_cpu_percent,
                rx_frames: w.rx_frames,
                answerable_rx_frames: w.answerable_rx_frames,
                tx_frames: w.tx_frames,
            },
        }
    }

    /// Pins the guest awake: no sample decides `Sleep` until [`IdleTracker::unpin`], and the
    /// idle clock stands still. Does not undo a `Sleep` already returned.
    pub fn pin(&mut self) {
        self.pinned = true;
    }

    /// Lets the guest sleep again: the idle clock starts at `now`, so the guest sleeps
    /// [`IdlePolicy::idle_after`] after the unpin at the earliest. Does nothing if the guest
    /// is not pinned (the idle clock keeps running).
    pub fn unpin(&mut self, now: Instant) {
        if self.pinned {
            self.pinned = false;
            self.restart_clock(now);
        }
    }

    /// Whether the guest is pinned awake.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// Holds the guest awake while `held` (it is in an awake window): no sample decides
    /// `Sleep`, as for a pin. When the hold ends, at `now`, the idle clock starts again, so
    /// the guest sleeps [`IdlePolicy::idle_after`] after its window at the earliest.
    pub fn hold(&mut self, held: bool, now: Instant) {
        if self.held && !held {
            self.restart_clock(now);
        }
        self.held = held;
    }

    /// Starts over at `now`, after the guest was woken (or after the daemon gave up putting
    /// it to sleep): the next sample is a new baseline (a guest started from a managed save
    /// has new counters) and the idle clock starts at `now`. The pin is kept.
    pub fn reset(&mut self, now: Instant) {
        self.last = None;
        self.answerable = 0;
        self.credit = 0;
        self.decided = None;
        self.awake_since = Some(now);
        self.restart_clock(now);
    }

    /// When the guest was last woken ([`IdleTracker::reset`]), as `other` has it: a tracker
    /// made for a new policy keeps counting [`IdlePolicy::min_awake`] from the same wake.
    pub fn awake_since_as(&mut self, other: &IdleTracker) {
        self.awake_since = other.awake_since;
    }

    /// How long the guest has been idle at `now`, for `vmnap status`: from the start of the
    /// idle clock to `now`. Zero while pinned, and before the first sample.
    pub fn idle_for(&self, now: Instant) -> Duration {
        match self.idle_since {
            Some(since) if !self.pinned => now.saturating_since(since),
            _ => Duration::ZERO,
        }
    }

    /// When the guest will have been idle for [`IdlePolicy::idle_after`] if it stays idle:
    /// the first sample at or after this time decides `Sleep`. `None` while pinned, before the
    /// first sample, and once `Sleep` was returned.
    pub fn sleep_due(&self) -> Option<Instant> {
        match self.idle_since {
            Some(since) if !self.pinned && self.decided.is_none() => {
                let idle = since + self.policy.idle_after;
                Some(match self.awake_since {
                    Some(w) => idle.max(w + self.policy.min_awake),
                    None => idle,
                })
            }
            _ => None,
        }
    }

    /// Whether the guest is held awake regardless of its counters.
    fn held_awake(&self, sample: &Sample) -> Option<BusyReason> {
        if self.pinned {
            return Some(BusyReason::Pinned);
        }
        if self.held {
            return Some(BusyReason::Window);
        }
        sample
            .open_connections
            .iter()
            .find(|open| self.policy.keep_awake_while_connected.contains(open))
            .map(|&rule| BusyReason::Connection(rule))
    }

    fn busy(&mut self, now: Instant, reason: BusyReason) -> Decision {
        self.restart_clock(now);
        Decision::Busy { reason }
    }

    fn idle(&self, now: Instant, since: Instant) -> Decision {
        let idle_for = now.saturating_since(since);
        let awake_for = self.awake_since.map(|w| now.saturating_since(w));
        Decision::Idle {
            idle_for,
            sleep_in: self
                .policy
                .idle_after
                .saturating_sub(idle_for)
                .max(awake_for.map_or(Duration::ZERO, |a| self.policy.min_awake.saturating_sub(a))),
        }
    }

    fn restart_clock(&mut self, now: Instant) {
        self.idle_since = Some(now);
        self.window = Window::default();
    }
}

/// `cpu` over `wall`, in percent of one core; infinite for CPU time in no wall time, zero for
/// none.
fn share_of_one_core(cpu: Duration, wall: Duration) -> f64 {
    if cpu.is_zero() {
        0.0
    } else if wall.is_zero() {
        f64::INFINITY
    } else {
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    }
}
