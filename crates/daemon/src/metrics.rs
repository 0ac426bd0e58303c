//! Prometheus metrics: the daemon's count of what the core decided and what the backends did,
//! and its encoding in the Prometheus text exposition format, version 0.0.4.
//!
//! The core emits events ([`Verdict`]s, wakes); the daemon counts them here. There is no
//! global registry: each bridge worker owns one [`GuestMetrics`] per guest and one
//! [`BridgeMetrics`], in plain fields, and [`encode`] turns copies of them into the text a
//! scrape gets. Nothing here reads a clock: time comes in as a [`vmnap_core::Instant`] or a
//! [`Duration`] the caller measured.
//!
//! # Families
//!
//! Every family is declared (`# HELP` and `# TYPE`) on every scrape, even with no guest, and
//! every label value a family can take is written for every guest, at zero until it moves,
//! so that a rate or an alert never has to wait for the first event. The list is
//! [`declared_families`]:
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `vmnap_guest_state` | gauge | `guest`, `state` (one of [`STATES`]): 1 for the state the guest is in, 0 for the others |
//! | `vmnap_guest_asleep_seconds_total` | counter | `guest` |
//! | `vmnap_guest_wakes_started_total` | counter | `guest`, `cause` ([`WakeCause::as_str`]) |
//! | `vmnap_guest_wakes_total` | counter | `guest`, `cause` |
//! | `vmnap_guest_wake_failures_total` | counter | `guest` |
//! | `vmnap_guest_answered_frames_total` | counter | `guest`, `protocol` ([`AnswerKind::as_str`]) |
//! | `vmnap_guest_queued_frames_total` | counter | `guest` |
//! | `vmnap_guest_replayed_frames_total` | counter | `guest` |
//! | `vmnap_guest_dropped_frames_total` | counter | `guest`, `reason` ([`DropReason::as_str`], or [`REPLAY_FAILED`]) |
//! | `vmnap_guest_queue_frames` | gauge | `guest` |
//! | `vmnap_guest_wake_and_serve_seconds` | histogram | `guest`, `le` ([`BUCKETS`]) |
//! | `vmnap_guest_resume_seconds` | histogram | `guest`, `le` |
//! | `vmnap_bridge_ignored_frames_total` | counter | `bridge` |
//! | `vmnap_bridge_malformed_frames_total` | counter | `bridge` |
//! | `vmnap_bridge_transmit_errors_total` | counter | `bridge` |
//!
//! The guest's state is a gauge per state rather than a numeric code, so that a query reads
//! `vmnap_guest_state{state="sleeping"} == 1` and a state added later changes no number.

use std::fmt::{self, Write};
use std::time::Duration;

use vmnap_core::{AnswerKind, DropReason, Instant, Verdict, WakeCause};

/// The `Content-Type` of the text [`encode`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The values of the `state` label of `vmnap_guest_state`: the names of
/// [`vmnap_core::GuestState`] (its `as_str`), in the order of the sleep and wake sequence.
pub const STATES: [&str; 4] = ["awake", "falling-asleep", "sleeping", "waking"];

/// The `reason` label of `vmnap_guest_dropped_frames_total` for held frames that could not
/// be replayed to the guest when it woke (the core's [`DropReason`]s are the other values).
pub const REPLAY_FAILED: &str = "replay-failed";

/// The upper bounds of the histograms' buckets (inclusive, as Prometheus's `le` is), with
/// their `le` label: 0.1 ms to 10 s in steps of 1, 2.5, 5. Longer times fall in `+Inf`.
pub const BUCKETS: [(Duration, &str); 16] = [
    (Duration::from_micros(100), "0.0001"),
    (Duration::from_micros(250), "0.00025"),
    (Duration::from_micros(500), "0.0005"),
    (Duration::from_millis(1), "0.001"),
    (Duration::from_micros(2_500), "0.0025"),
    (Duration::from_millis(5), "0.005"),
    (Duration::from_millis(10), "0.01"),
    (Duration::from_millis(25), "0.025"),
    (Duration::from_millis(50), "0.05"),
    (Duration::from_millis(100), "0.1"),
    (Duration::from_millis(250), "0.25"),
    (Duration::from_millis(500), "0.5"),
    (Duration::from_secs(1), "1"),
    (Duration::from_millis(2_500), "2.5"),
    (Duration::from_secs(5), "5"),
    (Duration::from_secs(10), "10"),
];

/// Every [`WakeCause`], one per label (the port a cause carries is not a label).
const WAKE_CAUSES: [WakeCause; 8] = [
    WakeCause::TcpSyn { port: 0 },
    WakeCause::Udp { port: 0 },
    WakeCause::TcpData { port: 0 },
    WakeCause::Resolution,
    WakeCause::Opaque,
    WakeCause::QueueFull,
    WakeCause::Requested,
    WakeCause::InFlight,
];

fn cause_index(cause: WakeCause) -> usize {
    match cause {
        WakeCause::TcpSyn { .. } => 0,
        WakeCause::Udp { .. } => 1,
        WakeCause::TcpData { .. } => 2,
        WakeCause::Resolution => 3,
        WakeCause::Opaque => 4,
        WakeCause::QueueFull => 5,
        WakeCause::Requested => 6,
        WakeCause::InFlight => 7,
    }
}

/// Every [`AnswerKind`].
const ANSWER_KINDS: [AnswerKind; 9] = [
    AnswerKind::Arp,
    AnswerKind::Ndp,
    AnswerKind::IcmpEcho,
    AnswerKind::Icmpv6Echo,
    AnswerKind::TcpReset,
    AnswerKind::TcpEcho,
    AnswerKind::UdpEcho,
    AnswerKind::TcpKeepalive,
    AnswerKind::HealthCheck,
];

fn answer_index(kind: AnswerKind) -> usize {
    match kind {
        AnswerKind::Arp => 0,
        AnswerKind::Ndp => 1,
        AnswerKind::IcmpEcho => 2,
        AnswerKind::Icmpv6Echo => 3,
        AnswerKind::TcpReset => 4,
        AnswerKind::TcpEcho => 5,
        AnswerKind::UdpEcho => 6,
        AnswerKind::TcpKeepalive => 7,
        AnswerKind::HealthCheck => 8,
    }
}

/// Every [`DropReason`].
const DROP_REASONS: [DropReason; 7] = [
    DropReason::Malformed,
    DropReason::QueueFull,
    DropReason::MulticastQueueFull,
    DropReason::MulticastPolicy,
    DropReason::BadChecksum,
    DropReason::EchoRefused,
    DropReason::HealthRefused,
];

fn drop_index(reason: DropReason) -> usize {
    match reason {
        DropReason::Malformed => 0,
        DropReason::QueueFull => 1,
        DropReason::MulticastQueueFull => 2,
        DropReason::MulticastPolicy => 3,
        DropReason::BadChecksum => 4,
        DropReason::EchoRefused => 5,
        DropReason::HealthRefused => 6,
    }
}

/// A histogram of durations over [`BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last is `+Inf` alone.
    counts: [u64; BUCKETS.len() + 1],
    sum: Duration,
    count: u64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, value: Duration) {
        let bucket = BUCKETS
            .iter()
            .position(|(le, _)| value <= *le)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the observations.
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// The observations at or below each bound of [`BUCKETS`], then all of them (`+Inf`):
    /// the values of the `_bucket` series.
    pub fn cumulative(&self) -> [u64; BUCKETS.len() + 1] {
        let mut out = self.counts;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

/// One guest's metrics. The bridge worker owns it and calls its `on_*` methods as events
/// happen; [`encode`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestMetrics {
    state: String,
    asleep: Duration,
    asleep_since: Option<Instant>,
    wakes_started: [u64; WAKE_CAUSES.len()],
    wakes: [u64; WAKE_CAUSES.len()],
    wake_failures: u64,
    answered: [u64; ANSWER_KINDS.len()],
    queued: u64,
    replayed: u64,
    dropped: [u64; DROP_REASONS.len()],
    replay_failed: u64,
    queue_depth: u64,
    wake_and_serve: Histogram,
    resume: Histogram,
}

impl Default for GuestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestMetrics {
    /// A guest that is awake and has done nothing yet.
    pub fn new() -> Self {
        Self {
            state: STATES[0].to_owned(),
            asleep: Duration::ZERO,
            asleep_since: None,
            wakes_started: [0; WAKE_CAUSES.len()],
            wakes: [0; WAKE_CAUSES.len()],
            wake_failures: 0,
            answered: [0; ANSWER_KINDS.len()],
            queued: 0,
            replayed: 0,
            dropped: [0; DROP_REASONS.len()],
            replay_failed: 0,
            queue_depth: 0,
            wake_and_serve: Histogram::default(),
            resume: Histogram::default(),
        }
    }

    /// Counts what the surrogate did with one of the guest's frames: answered (by
    /// protocol), queued, or dropped (by reason). Ignored frames are not counted.
    pub fn on_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Answered(kind) => self.answered[answer_index(kind)] += 1,
            Verdict::Queued => self.queued += 1,
            Verdict::Dropped(reason) => self.dropped[drop_index(reason)] += 1,
            Verdict::Ignored(_) => {}
        }
    }

    /// Counts a wake begun for `cause`. Call it once per wake, not again for each retry
    /// after a failed resume.
    pub fn on_wake_started(&mut self, cause: WakeCause) {
        self.wakes_started[cause_index(cause)] += 1;
    }

    /// Counts a wake that succeeded, begun for `cause`: `wake_and_serve` is the wake's
    /// duration ([`vmnap_core::WakeReport::took`]: from the frame that caused it, or the
    /// request, to the guest's first answer after the replay), and `resume` the backend's
    /// own resume call.
    pub fn on_woke(&mut self, cause: WakeCause, wake_and_serve: Duration, resume: Duration) {
        self.wakes[cause_index(cause)] += 1;
        self.wake_and_serve.observe(wake_and_serve);
        self.resume.observe(resume);
    }

    /// Counts a resume that failed (each try counts).
    pub fn on_wake_failed(&mut self) {
        self.wake_failures += 1;
    }

    /// Counts the held frames replayed to the guest when it woke: `sent` reached it,
    /// `failed` could not be sent and are counted as dropped with reason [`REPLAY_FAILED`].
    pub fn on_replayed(&mut self, sent: u64, failed: u64) {
        self.replayed += sent;
        self.replay_failed += failed;
    }

    /// The guest fell asleep at `now`: time asleep counts from here. A second call while
    /// asleep changes nothing.
    pub fn on_asleep(&mut self, now: Instant) {
        if self.asleep_since.is_none() {
            self.asleep_since = Some(now);
        }
    }

    /// The guest is awake again at `now`: the time since [`Self::on_asleep`] is added to
    /// the time asleep. Does nothing if the guest was not asleep.
    pub fn on_awake(&mut self, now: Instant) {
        if let Some(since) = self.asleep_since.take() {
            self.asleep = self.asleep.saturating_add(now.saturating_since(since));
        }
    }

    /// Adds the time asleep so far, up to `now`, without ending the sleep. Call it before
    /// encoding, so that a guest asleep for a long time does not show zero until it wakes.
    pub fn count_asleep_until(&mut self, now: Instant) {
        if let Some(since) = self.asleep_since {
            self.asleep = self.asleep.saturating_add(now.saturating_since(since));
            self.asleep_since = Some(now.max(since));
        }
    }

    /// The number of frames held for the guest now.
    pub fn set_queue_depth(&mut self, frames: usize) {
        self.queue_depth = frames as u64;
    }

    /// The guest's state now, one of [`STATES`] (another name gets a series of its own).
    pub fn set_state(&mut self, state: &str) {
        if self.state != state {
            self.state.clear();
            self.state.push_str(state);
        }
    }

    /// The state last set.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// The time asleep counted so far.
    pub fn asleep(&self) -> Duration {
        self.asleep
    }

    /// Wakes begun for a cause with `cause`'s label.
    pub fn wakes_started(&self, cause: WakeCause) -> u64 {
        self.wakes_started[cause_index(cause)]
    }

    /// Wakes that succeeded, begun for a cause with `cause`'s label.
    pub fn wakes(&self, cause: WakeCause) -> u64 {
        self.wakes[cause_index(cause)]
    }

    /// Wakes that succeeded, whatever their cause.
    pub fn total_wakes(&self) -> u64 {
        self.wakes.iter().sum()
    }

    /// Resumes that failed.
    pub fn wake_failures(&self) -> u64 {
        self.wake_failures
    }

    /// Frames answered by `kind`'s responder.
    pub fn answered(&self, kind: AnswerKind) -> u64 {
        self.answered[answer_index(kind)]
    }

    /// Frames answered, by any responder.
    pub fn total_answered(&self) -> u64 {
        self.answered.iter().sum()
    }

    /// Frames queued.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Held frames replayed.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Frames dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[drop_index(reason)]
    }

    /// Frames dropped, for any reason, held frames that could not be replayed included.
    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().sum::<u64>() + self.replay_failed
    }

    /// Frames held now.
    pub fn queue_depth(&self) -> u64 {
        self.queue_depth
    }

    /// Wake-and-serve times.
    pub fn wake_and_serve(&self) -> &Histogram {
        &self.wake_and_serve
    }

    /// Backend resume times.
    pub fn resume(&self) -> &Histogram {
        &self.resume
    }
}

/// One bridge's counts of the frames that concern no guest, and of the surrogate's failed
/// sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeMetrics {
    /// Frames for no guest the surrogate stands in for (or its own, come back).
    pub ignored_frames: u64,
    /// Frames for no guest that could not be read.
    pub malformed_frames: u64,
    /// Answers the surrogate could not send.
    pub transmit_errors: u64,
}

impl BridgeMetrics {
    /// Counts a verdict that names no guest: a drop is a malformed frame, anything else an
    /// ignored one.
    pub fn on_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Dropped(_) => self.malformed_frames += 1,
            _ => self.ignored_frames += 1,
        }
    }

    /// Counts an answer that could not be sent.
    pub fn on_transmit_error(&mut self) {
        self.transmit_errors += 1;
    }
}

/// A metric family: its name, type and help text.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const STATE: Family = Family {
    name: "vmnap_guest_state",
    kind: "gauge",
    help: "Whether the guest is in this state (1) or not (0).",
};
const ASLEEP: Family = Family {
    name: "vmnap_guest_asleep_seconds_total",
    kind: "counter",
    help: "Time the guest has spent asleep.",
};
const WAKES_STARTED: Family = Family {
    name: "vmnap_guest_wakes_started_total",
    kind: "counter",
    help: "Wakes begun, by what caused them.",
};
const WAKES: Family = Family {
    name: "vmnap_guest_wakes_total",
    kind: "counter",
    help: "Wakes that succeeded, by what caused them.",
};
const WAKE_FAILURES: Family = Family {
    name: "vmnap_guest_wake_failures_total",
    kind: "counter",
    help: "Resumes that failed (each retry counts).",
};
const ANSWERED: Family = Family {
    name: "vmnap_guest_answered_frames_total",
    kind: "counter",
    help: "Frames the surrogate answered in the guest's name, by protocol.",
};
const QUEUED: Family = Family {
    name: "vmnap_guest_queued_frames_total",
    kind: "counter",
    help: "Frames held for the guest while it slept.",
};
const REPLAYED: Family = Family {
    name: "vmnap_guest_replayed_frames_total",
    kind: "counter",
    help: "Held frames replayed to the guest when it woke.",
};
const DROPPED: Family = Family {
    name: "vmnap_guest_dropped_frames_total",
    kind: "counter",
    help: "Frames for the guest that were dropped, by reason.",
};
const QUEUE: Family = Family {
    name: "vmnap_guest_queue_frames",
    kind: "gauge",
    help: "Frames held for the guest now.",
};
const WAKE_AND_SERVE: Family = Family {
    name: "vmnap_guest_wake_and_serve_seconds",
    kind: "histogram",
    help: "Time from the first wake-worthy frame to the guest's first frame back.",
};
const RESUME: Family = Family {
    name: "vmnap_guest_resume_seconds",
    kind: "histogram",
    help: "Time the backend took to resume the guest.",
};
const IGNORED: Family = Family {
    name: "vmnap_bridge_ignored_frames_total",
    kind: "counter",
    help: "Frames on the bridge for no guest that vmnap stands in for.",
};
const MALFORMED: Family = Family {
    name: "vmnap_bridge_malformed_frames_total",
    kind: "counter",
    help: "Frames on the bridge for no guest that could not be read.",
};
const TRANSMIT_ERRORS: Family = Family {
    name: "vmnap_bridge_transmit_errors_total",
    kind: "counter",
    help: "Answers the surrogate could not send.",
};

const FAMILIES: [Family; 15] = [
    STATE,
    ASLEEP,
    WAKES_STARTED,
    WAKES,
    WAKE_FAILURES,
    ANSWERED,
    QUEUED,
    REPLAYED,
    DROPPED,
    QUEUE,
    WAKE_AND_SERVE,
    RESUME,
    IGNORED,
    MALFORMED,
    TRANSMIT_ERRORS,
];

const FAMILY_NAMES: [&str; FAMILIES.len()] = {
    let mut names = [""; FAMILIES.len()];
    let mut i = 0;
    while i < FAMILIES.len() {
        names[i] = FAMILIES[i].name;
        i += 1;
    }
    names
};

/// The name of every metric family [`encode`] declares, in the order it writes them (a
/// histogram's name is its family's, without `_bucket`, `_sum` or `_count`).
pub fn declared_families() -> &'static [&'static str] {
    &FAMILY_NAMES
}

/// Writes the guests' metrics, each labelled `guest="NAME"`, and the bridges', each
/// labelled `bridge="NAME"`, to `out` in the Prometheus text exposition format 0.0.4
/// ([`CONTENT_TYPE`]). Every family in [`declared_families`] is declared, even when
/// `guests` or `bridges` is empty. Names are written as given (escaped), in the order given.
pub fn encode(
    guests: &[(&str, &GuestMetrics)],
    bridges: &[(&str, &BridgeMetrics)],
    out: &mut String,
) {
    write_all(guests, bridges, out).expect("writing to a String cannot fail");
}

fn write_all(
    guests: &[(&str, &GuestMetrics)],
    bridges: &[(&str, &BridgeMetrics)],
    out: &mut impl Write,
) -> fmt::Result {
    header(out, &STATE)?;
    for (name, g) in guests {
        for state in STATES {
            let value = u64::from(g.state == state);
            sample(out, STATE.name, name, Some(("state", state)), value)?;
        }
        if !STATES.contains(&g.state.as_str()) {
            sample(out, STATE.name, name, Some(("state", &g.state)), 1)?;
        }
    }
    header(out, &ASLEEP)?;
    for (name, g) in guests {
        sample(out, ASLEEP.name, name, None, g.asleep.as_secs_f64())?;
    }
    header(out, &WAKES_STARTED)?;
    for (name, g) in guests {
        for (cause, n) in WAKE_CAUSES.iter().zip(g.wakes_started) {
            sample(
                out,
                WAKES_STARTED.name,
                name,
                Some(("cause", cause.as_str())),
                n,
            )?;
        }
    }
    header(out, &WAKES)?;
    for (name, g) in guests {
        for (cause, n) in WAKE_CAUSES.iter().zip(g.wakes) {
            sample(out, WAKES.name, name, Some(("cause", cause.as_str())), n)?;
        }
    }
    header(out, &WAKE_FAILURES)?;
    for (name, g) in guests {
        sample(out, WAKE_FAILURES.name, name, None, g.wake_failures)?;
    }
    header(out, &ANSWERED)?;
    for (name, g) in guests {
        for (kind, n) in ANSWER_KINDS.iter().zip(g.answered) {
            sample(
                out,
                ANSWERED.name,
                name,
                Some(("protocol", kind.as_str())),
                n,
            )?;
        }
    }
    header(out, &QUEUED)?;
    for (name, g) in guests {
        sample(out, QUEUED.name, name, None, g.queued)?;
    }
    header(out, &REPLAYED)?;
    for (name, g) in guests {
        sample(out, REPLAYED.name, name, None, g.replayed)?;
    }
    header(out, &DROPPED)?;
    for (name, g) in guests {
        for (reason, n) in DROP_REASONS.iter().zip(g.dropped) {
            sample(
                out,
                DROPPED.name,
                name,
                Some(("reason", reason.as_str())),
                n,
            )?;
        }
        let reason = Some(("reason", REPLAY_FAILED));
        sample(out, DROPPED.name, name, reason, g.replay_failed)?;
    }
    header(out, &QUEUE)?;
    for (name, g) in guests {
        sample(out, QUEUE.name, name, None, g.queue_depth)?;
    }
    header(out, &WAKE_AND_SERVE)?;
    for (name, g) in guests {
        histogram(out, WAKE_AND_SERVE.name, name, &g.wake_and_serve)?;
    }
    header(out, &RESUME)?;
    for (name, g) in guests {
        histogram(out, RESUME.name, name, &g.resume)?;
    }
    bridge_family(out, &IGNORED, bridges, |b| b.ignored_frames)?;
    bridge_family(out, &MALFORMED, bridges, |b| b.malformed_frames)?;
    bridge_family(out, &TRANSMIT_ERRORS, bridges, |b| b.transmit_errors)
}

fn bridge_family(
    out: &mut impl Write,
    family: &Family,
    bridges: &[(&str, &BridgeMetrics)],
    count: impl Fn(&BridgeMetrics) -> u64,
) -> fmt::Result {
    header(out, family)?;
    for (name, b) in bridges {
        write!(out, "{}{{bridge=\"", family.name)?;
        label_value(out, name)?;
        writeln!(out, "\"}} {}", count(b))?;
    }
    Ok(())
}

fn header(out: &mut impl Write, family: &Family) -> fmt::Result {
    out.write_str("# HELP ")?;
    out.write_str(family.name)?;
    out.write_char(' ')?;
    for c in family.help.chars() {
        match c {
            '\\' => out.write_str(r"\\")?,
            '\n' => out.write_str(r"\n")?,
            c => out.write_char(c)?,
        }
    }
    writeln!(out, "\n# TYPE {} {}", family.name, family.kind)
}

/// Writes a label value, escaped as the format asks: backslash, double quote and line feed.
fn label_value(out: &mut impl Write, value: &str) -> fmt::Result {
    for c in value.chars() {
        match c {
            '\\' => out.write_str(r"\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str(r"\n")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// Writes `name{guest="GUEST",KEY="VALUE"} value`, the second label only if there is one.
fn sample(
    out: &mut impl Write,
    name: &str,
    guest: &str,
    label: Option<(&str, &str)>,
    value: impl fmt::Display,
) -> fmt::Result {
    write!(out, "{name}{{guest=\"")?;
    label_value(out, guest)?;
    if let Some((key, v)) = label {
        write!(out, "\",{key}=\"")?;
        label_value(out, v)?;
    }
    writeln!(out, "\"}} {value}")
}

fn histogram(out: &mut impl Write, name: &str, guest: &str, h: &Histogram) -> fmt::Result {
    let bucket = format!("{name}_bucket");
    let les = BUCKETS.iter().map(|(_, le)| *le).chain(["+Inf"]);
    for (le, n) in les.zip(h.cumulative()) {
        sample(out, &bucket, guest, Some(("le", le)), n)?;
    }
    let sum = h.sum.as_secs_f64();
    sample(out, &format!("{name}_sum"), guest, None, sum)?;
    sample(out, &format!("{name}_count"), guest, None, h.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_lists_follow_the_index_functions() {
        for (i, c) in WAKE_CAUSES.iter().enumerate() {
            assert_eq!(cause_index(*c), i);
        }
        for (i, k) in ANSWER_KINDS.iter().enumerate() {
            assert_eq!(answer_index(*k), i);
        }
        for (i, r) in DROP_REASONS.iter().enumerate() {
            assert_eq!(drop_index(*r), i);
        }
    }

    #[test]
    fn bucket_labels_are_their_bounds_in_seconds() {
        for (bound, le) in BUCKETS {
            assert_eq!(le.parse::<f64>().unwrap(), bound.as_secs_f64(), "{le}");
        }
        assert!(BUCKETS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
