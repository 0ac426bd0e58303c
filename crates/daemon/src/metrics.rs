//! Prometheus metrics: the daemon's count of what the core decided and what the backends did,
//! and its encoding, by the `prometheus-client` crate, in the Prometheus text exposition
//! format, version 0.0.4.
//!
//! The core emits events ([`Verdict`]s, wakes); the daemon counts them here. There is no
//! global registry: each bridge worker owns one [`GuestMetrics`] per guest and one
//! [`BridgeMetrics`], in plain fields it updates on its own thread, without a lock or an
//! atomic, and [`encode`] turns copies of them into the text a scrape gets. Nothing here
//! reads a clock: time comes in as a [`vmnap_core::Instant`] or a [`Duration`] the caller
//! measured.
//!
//! # What the library writes, and what stays ours
//!
//! `prometheus-client` writes the text: the `# HELP` and `# TYPE` lines, each series' name
//! (with its family's unit and a counter's `_total`), the labels and their escaping, the
//! numbers, and a histogram's cumulative `_bucket` series with their `le` and `+Inf`, its
//! `_sum` and `_count`. For each scrape, [`encode`] builds a `Registry` holding one
//! `Collector` with the copies, which declares each family (`encode_descriptor`) and writes
//! each of its label sets as a `ConstCounter`, a `ConstGauge` or a [`Histogram`].
//!
//! The library also writes OpenMetrics text; we serve the 0.0.4 text, which every scraper
//! reads, and in which the series, `# TYPE` lines and `le` labels (`le="1"`, not
//! `le="1.0"`) are the ones served before the library wrote them (only a whole number of
//! seconds now reads `3.0`, not `3`).
//!
//! Ours, and why:
//! - the counts ([`GuestMetrics`], [`BridgeMetrics`], [`Histogram`]). The library's
//!   `Counter`, `Gauge` and `Histogram` are shared atomics (the histogram behind a mutex),
//!   for code that counts from many threads; here one worker counts and a scrape asks it for
//!   a copy, so plain fields are enough, and [`Histogram`] puts a [`Duration`] in its bucket
//!   without a float.
//! - the families and every value their labels take. The library's `Family` makes a
//!   series when its label set is first counted, and leaves out a family that has none; we
//!   want the opposite (below), so the collector writes them from the lists here.
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
//! | `vmnap_guest_memory_freed_bytes` | gauge | `guest`: host memory its sleep gives back now (a save, a page-out; 0 awake) |
//! | `vmnap_guest_memory_back_bytes` | gauge | `guest`: host memory its RAM holds again since its wake from a page-out |
//! | `vmnap_bridge_ignored_frames_total` | counter | `bridge` |
//! | `vmnap_bridge_malformed_frames_total` | counter | `bridge` |
//! | `vmnap_bridge_transmit_errors_total` | counter | `bridge` |
//! | `vmnap_bridge_capture_drops_total` | counter | `bridge`: frames the kernel dropped before the worker read them |
//! | `vmnap_bridge_in_kernel_ports` | gauge | `bridge`: the ports besides vmnap's where the kernel answers as requests come in (`[surrogate] in_kernel_at_every_port`) |
//! | `vmnap_resumes_in_flight` | gauge | none: guests the backends resume now (of all bridges) |
//! | `vmnap_resumes_in_flight_max` | gauge | none: the most at once since start |
//! | `vmnap_resume_cap` | gauge | none: `[wake] max_resuming` |
//! | `vmnap_held_bytes` | gauge | none: bytes held for all sleeping guests |
//! | `vmnap_held_limit_bytes` | gauge | none: `[surrogate] max_held_bytes` |
//! | `vmnap_memory_freed_bytes` | gauge | none: host memory all sleeping guests' sleeps give back now |
//! | `vmnap_memory_to_wake_bytes` | gauge | none: host memory waking them all would take back |
//!
//! The guest's state is a gauge per state rather than a numeric code, so that a query reads
//! `vmnap_guest_state{state="sleeping"} == 1` and a state added later changes no number.

use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeCounterValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use vmnap_api::State;
use vmnap_core::{AnswerKind, DropReason, Instant, Verdict, WakeCause};

/// The `Content-Type` of the text [`encode`] writes: the library's, for the 0.0.4 format.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The values of the `state` label of `vmnap_guest_state`: the names of
/// [`vmnap_core::GuestState`] (its `as_str`), in the order of the sleep and wake sequence.
pub const STATES: [State; 4] = [
    State::Awake,
    State::FallingAsleep,
    State::Sleeping,
    State::Waking,
];

/// The `reason` label of `vmnap_guest_dropped_frames_total` for held frames that could not
/// be replayed to the guest when it woke (the core's [`DropReason`]s are the other values).
pub const REPLAY_FAILED: &str = "replay-failed";

/// The upper bounds of the histograms' buckets (inclusive, as Prometheus's `le` is), with
/// the `le` label the library writes for each: 0.1 ms to 10 s in steps of 1, 2.5, 5. Longer
/// times fall in `+Inf`.
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
    WakeCause::Requested,
    WakeCause::InFlight,
    WakeCause::MaxSleep,
    WakeCause::Window,
];

fn cause_index(cause: WakeCause) -> usize {
    match cause {
        WakeCause::TcpSyn { .. } => 0,
        WakeCause::Udp { .. } => 1,
        WakeCause::TcpData { .. } => 2,
        WakeCause::Resolution => 3,
        WakeCause::Requested => 4,
        WakeCause::InFlight => 5,
        WakeCause::MaxSleep => 6,
        WakeCause::Window => 7,
    }
}

/// Every [`AnswerKind`].
const ANSWER_KINDS: [AnswerKind; 10] = [
    AnswerKind::Arp,
    AnswerKind::Ndp,
    AnswerKind::IcmpEcho,
    AnswerKind::Icmpv6Echo,
    AnswerKind::TcpReset,
    AnswerKind::TcpEcho,
    AnswerKind::UdpEcho,
    AnswerKind::TcpKeepalive,
    AnswerKind::HealthCheck,
    AnswerKind::ConnectionReset,
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
        AnswerKind::ConnectionReset => 9,
    }
}

/// Every [`DropReason`].
const DROP_REASONS: [DropReason; 11] = [
    DropReason::Malformed,
    DropReason::QueueFull,
    DropReason::MulticastQueueFull,
    DropReason::MulticastPolicy,
    DropReason::BadChecksum,
    DropReason::EchoRefused,
    DropReason::HealthRefused,
    DropReason::UnknownConnection,
    DropReason::OrphanFragment,
    DropReason::ForeignAddress,
    DropReason::HoldBudget,
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
        DropReason::UnknownConnection => 7,
        DropReason::OrphanFragment => 8,
        DropReason::ForeignAddress => 9,
        DropReason::HoldBudget => 10,
    }
}

/// A histogram of durations over [`BUCKETS`].
///
/// Counted in 32 bits and summed in nanoseconds: two of these sit in every guest's figures,
/// and four billion wakes of one guest (136 years at one a second) cannot happen. The
/// counts saturate rather than wrap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last is `+Inf` alone.
    counts: [u32; BUCKETS.len() + 1],
    sum_ns: u64,
    count: u32,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, value: Duration) {
        let bucket = BUCKETS
            .iter()
            .position(|(le, _)| value <= *le)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.count = self.count.saturating_add(1);
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        u64::from(self.count)
    }

    /// The sum of the observations.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// The observations at or below each bound of [`BUCKETS`], then all of them (`+Inf`):
    /// the values of the `_bucket` series.
    pub fn cumulative(&self) -> [u64; BUCKETS.len() + 1] {
        let mut out = self.counts.map(u64::from);
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
    state: State,
    asleep: Duration,
    asleep_since: Option<Instant>,
    /// Wakes per cause, in 32 bits like the histograms' counts.
    wakes_started: [u32; WAKE_CAUSES.len()],
    wakes: [u32; WAKE_CAUSES.len()],
    wake_failures: u64,
    answered: [u64; ANSWER_KINDS.len()],
    queued: u64,
    replayed: u64,
    dropped: [u64; DROP_REASONS.len()],
    replay_failed: u64,
    queue_depth: u64,
    wake_and_serve: Histogram,
    resume: Histogram,
    memory_freed: u64,
    memory_back: u64,
    memory_to_wake: u64,
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
            state: State::Awake,
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
            memory_freed: 0,
            memory_back: 0,
            memory_to_wake: 0,
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
        let n = &mut self.wakes_started[cause_index(cause)];
        *n = n.saturating_add(1);
    }

    /// Counts a wake that succeeded, begun for `cause`: `wake_and_serve` is the wake's
    /// duration ([`vmnap_core::WakeReport::took`]: from the frame that caused it, or the
    /// request, to the guest's first answer after the replay), and `resume` the backend's
    /// own resume call.
    pub fn on_woke(&mut self, cause: WakeCause, wake_and_serve: Duration, resume: Duration) {
        let n = &mut self.wakes[cause_index(cause)];
        *n = n.saturating_add(1);
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

    /// The host memory the guest's sleep gives back now, what came back since its wake
    /// from a page-out, and what waking it would take (each in bytes, 0 if none or not
    /// known).
    pub fn set_memory(&mut self, freed: u64, back: u64, to_wake: u64) {
        self.memory_freed = freed;
        self.memory_back = back;
        self.memory_to_wake = to_wake;
    }

    /// The guest's state now.
    pub fn set_state(&mut self, state: State) {
        self.state = state;
    }

    /// The state last set.
    pub fn state(&self) -> State {
        self.state
    }

    /// The time asleep counted so far.
    pub fn asleep(&self) -> Duration {
        self.asleep
    }

    /// Wakes begun for a cause with `cause`'s label.
    pub fn wakes_started(&self, cause: WakeCause) -> u64 {
        u64::from(self.wakes_started[cause_index(cause)])
    }

    /// Wakes that succeeded, begun for a cause with `cause`'s label.
    pub fn wakes(&self, cause: WakeCause) -> u64 {
        u64::from(self.wakes[cause_index(cause)])
    }

    /// Wakes that succeeded, whatever their cause.
    pub fn total_wakes(&self) -> u64 {
        self.wakes.iter().copied().map(u64::from).sum()
    }

    /// Resumes that failed.
    pub fn wake_failures(&self) -> u64 {
        self.wake_failures
    }

    /// Counts `n` answers of `kind` given for the guest in the kernel.
    pub fn add_answered(&mut self, kind: AnswerKind, n: u64) {
        self.answered[answer_index(kind)] += n;
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
    /// Frames the kernel dropped on the capture socket before the worker read them.
    pub capture_drops: u64,
    /// The ports, besides the surrogate's, that the kernel's responder answers at.
    pub in_kernel_ports: u64,
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

/// The daemon's own figures, across its bridges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonMetrics {
    /// Guests the backends are resuming now.
    pub resumes_in_flight: u64,
    /// The most they ever resumed at once.
    pub resumes_in_flight_max: u64,
    /// The cap on resumes at once (`[wake] max_resuming`).
    pub resume_cap: u64,
    /// Bytes held for all sleeping guests now.
    pub held_bytes: u64,
    /// Their budget (`[surrogate] max_held_bytes`).
    pub held_bytes_limit: u64,
}

/// A metric family as the library declares it: its name without the unit and without a
/// counter's `_total` (the library adds both), its unit, type and help text.
struct Family {
    name: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    help: &'static str,
}

impl Family {
    /// The name the text gives the family in `# HELP` and `# TYPE`: `NAME_UNIT`, and
    /// `_total` after it for a counter.
    fn declared_name(&self) -> String {
        let mut name = self.name.to_owned();
        if let Some(unit) = &self.unit {
            name.push('_');
            name.push_str(unit.as_str());
        }
        if self.kind == MetricType::Counter {
            name.push_str("_total");
        }
        name
    }
}

static STATE: Family = Family {
    name: "vmnap_guest_state",
    unit: None,
    kind: MetricType::Gauge,
    help: "Whether the guest is in this state (1) or not (0).",
};
static ASLEEP: Family = Family {
    name: "vmnap_guest_asleep",
    unit: Some(Unit::Seconds),
    kind: MetricType::Counter,
    help: "Time the guest has spent asleep.",
};
static WAKES_STARTED: Family = Family {
    name: "vmnap_guest_wakes_started",
    unit: None,
    kind: MetricType::Counter,
    help: "Wakes begun, by what caused them.",
};
static WAKES: Family = Family {
    name: "vmnap_guest_wakes",
    unit: None,
    kind: MetricType::Counter,
    help: "Wakes that succeeded, by what caused them.",
};
static WAKE_FAILURES: Family = Family {
    name: "vmnap_guest_wake_failures",
    unit: None,
    kind: MetricType::Counter,
    help: "Resumes that failed (each retry counts).",
};
static ANSWERED: Family = Family {
    name: "vmnap_guest_answered_frames",
    unit: None,
    kind: MetricType::Counter,
    help: "Frames the surrogate answered in the guest's name, by protocol.",
};
static QUEUED: Family = Family {
    name: "vmnap_guest_queued_frames",
    unit: None,
    kind: MetricType::Counter,
    help: "Frames held for the guest while it slept.",
};
static REPLAYED: Family = Family {
    name: "vmnap_guest_replayed_frames",
    unit: None,
    kind: MetricType::Counter,
    help: "Held frames replayed to the guest when it woke.",
};
static DROPPED: Family = Family {
    name: "vmnap_guest_dropped_frames",
    unit: None,
    kind: MetricType::Counter,
    help: "Frames for the guest that were dropped, by reason.",
};
static QUEUE: Family = Family {
    name: "vmnap_guest_queue_frames",
    unit: None,
    kind: MetricType::Gauge,
    help: "Frames held for the guest now.",
};
static WAKE_AND_SERVE: Family = Family {
    name: "vmnap_guest_wake_and_serve",
    unit: Some(Unit::Seconds),
    kind: MetricType::Histogram,
    help: "Time from the first wake-worthy frame to the guest's first frame back.",
};
static RESUME: Family = Family {
    name: "vmnap_guest_resume",
    unit: Some(Unit::Seconds),
    kind: MetricType::Histogram,
    help: "Time the backend took to resume the guest.",
};
static CAPTURE_DROPS: Family = Family {
    name: "vmnap_bridge_capture_drops",
    unit: None,
    kind: MetricType::Counter,
    help: "Frames for the bridge's sleeping guests the kernel dropped before vmnap read them.",
};
static IN_KERNEL_PORTS: Family = Family {
    name: "vmnap_bridge_in_kernel_ports",
    unit: None,
    kind: MetricType::Gauge,
    help: "The bridge's ports, besides vmnap's, where the kernel answers ARP and ping for sleeping guests as requests come in.",
};
static RESUMING: Family = Family {
    name: "vmnap_resumes_in_flight",
    unit: None,
    kind: MetricType::Gauge,
    help: "Guests the backends are resuming now.",
};
static RESUMING_MAX: Family = Family {
    name: "vmnap_resumes_in_flight_max",
    unit: None,
    kind: MetricType::Gauge,
    help: "The most guests the backends resumed at once since the daemon started.",
};
static RESUME_CAP: Family = Family {
    name: "vmnap_resume_cap",
    unit: None,
    kind: MetricType::Gauge,
    help: "The most guests the backends resume at once ([wake] max_resuming).",
};
static MEMORY_FREED: Family = Family {
    name: "vmnap_guest_memory_freed",
    unit: Some(Unit::Bytes),
    kind: MetricType::Gauge,
    help: "Host memory the guest's sleep gives back now (a save or a page-out; 0 awake).",
};
static MEMORY_BACK: Family = Family {
    name: "vmnap_guest_memory_back",
    unit: Some(Unit::Bytes),
    kind: MetricType::Gauge,
    help: "Host memory the guest's RAM holds again since its last wake from a page-out.",
};
static HOST_MEMORY_FREED: Family = Family {
    name: "vmnap_memory_freed",
    unit: Some(Unit::Bytes),
    kind: MetricType::Gauge,
    help: "Host memory all sleeping guests' sleeps give back now.",
};
static HOST_MEMORY_TO_WAKE: Family = Family {
    name: "vmnap_memory_to_wake",
    unit: Some(Unit::Bytes),
    kind: MetricType::Gauge,
    help: "Host memory that waking every sleeping guest would take back (a save's all, a page-out's what its last wake took).",
};
static HELD_BYTES: Family = Family {
    name: "vmnap_held",
    unit: Some(Unit::Bytes),
    kind: MetricType::Gauge,
    help: "Bytes of frames held for all sleeping guests now.",
};
static HELD_BYTES_LIMIT: Family = Family {
    name: "vmnap_held_limit",
    unit: Some(Unit::Bytes),
    kind: MetricType::Gauge,
    help: "The budget of bytes held for all sleeping guests ([surrogate] max_held_bytes).",
};
static IGNORED: Family = Family {
    name: "vmnap_bridge_ignored_frames",
    unit: None,
    kind: MetricType::Counter,
    help: "Frames on the bridge for no guest that vmnap stands in for.",
};
static MALFORMED: Family = Family {
    name: "vmnap_bridge_malformed_frames",
    unit: None,
    kind: MetricType::Counter,
    help: "Frames on the bridge for no guest that could not be read.",
};
static TRANSMIT_ERRORS: Family = Family {
    name: "vmnap_bridge_transmit_errors",
    unit: None,
    kind: MetricType::Counter,
    help: "Answers the surrogate could not send.",
};

/// Every family, in the order [`encode`] writes them.
static FAMILIES: [&Family; 26] = [
    &STATE,
    &ASLEEP,
    &WAKES_STARTED,
    &WAKES,
    &WAKE_FAILURES,
    &ANSWERED,
    &QUEUED,
    &REPLAYED,
    &DROPPED,
    &QUEUE,
    &WAKE_AND_SERVE,
    &RESUME,
    &MEMORY_FREED,
    &MEMORY_BACK,
    &IGNORED,
    &MALFORMED,
    &TRANSMIT_ERRORS,
    &CAPTURE_DROPS,
    &IN_KERNEL_PORTS,
    &RESUMING,
    &RESUMING_MAX,
    &RESUME_CAP,
    &HELD_BYTES,
    &HELD_BYTES_LIMIT,
    &HOST_MEMORY_FREED,
    &HOST_MEMORY_TO_WAKE,
];

/// The name of every metric family [`encode`] declares (in `# HELP` and `# TYPE`), in the
/// order it writes them. A counter's name ends in `_total`, as its series' do; a histogram's
/// is its family's, without `_bucket`, `_sum` or `_count`.
pub fn declared_families() -> Vec<String> {
    FAMILIES.iter().map(|f| f.declared_name()).collect()
}

/// Writes the daemon's metrics, the guests', each labelled `guest="NAME"`, and the
/// bridges', each labelled `bridge="NAME"`, to `out` in the Prometheus text exposition format 0.0.4
/// ([`CONTENT_TYPE`]), by `prometheus-client`. Every family in [`declared_families`] is
/// declared, even when `guests` or `bridges` is empty. Names are written as given (escaped),
/// in the order given.
pub fn encode(
    daemon: &DaemonMetrics,
    guests: &[(&str, &GuestMetrics)],
    bridges: &[(&str, &BridgeMetrics)],
    out: &mut String,
) {
    // The registry keeps its collectors for as long as it lives, so it gets a copy.
    let scrape = Scrape {
        daemon: daemon.clone(),
        guests: guests
            .iter()
            .map(|(n, g)| ((*n).to_owned(), (*g).clone()))
            .collect(),
        bridges: bridges
            .iter()
            .map(|(n, b)| ((*n).to_owned(), (*b).clone()))
            .collect(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    prometheus_text::encode(out, &registry).expect("our collector writes only to a String");
}

/// One scrape's copy of the metrics, which writes every family on every scrape and every
/// label value of a family for every guest, at zero until it moves (the library's own
/// `Family` would write only the label sets used so far, and drop a family that has none).
#[derive(Debug)]
struct Scrape {
    daemon: DaemonMetrics,
    guests: Vec<(String, GuestMetrics)>,
    bridges: Vec<(String, BridgeMetrics)>,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        self.per_guest(e, &STATE, |f, guest, g| {
            for state in STATES {
                let value = ConstGauge::new(i64::from(g.state == state));
                sample(f, guest, Some(("state", state.as_str())), &value)?;
            }
            Ok(())
        })?;
        self.per_guest(e, &ASLEEP, |f, guest, g| {
            counter(f, guest, None, g.asleep.as_secs_f64())
        })?;
        self.per_guest(e, &WAKES_STARTED, |f, guest, g| {
            for (cause, n) in WAKE_CAUSES.iter().zip(g.wakes_started) {
                counter(f, guest, Some(("cause", cause.as_str())), u64::from(n))?;
            }
            Ok(())
        })?;
        self.per_guest(e, &WAKES, |f, guest, g| {
            for (cause, n) in WAKE_CAUSES.iter().zip(g.wakes) {
                counter(f, guest, Some(("cause", cause.as_str())), u64::from(n))?;
            }
            Ok(())
        })?;
        self.per_guest(e, &WAKE_FAILURES, |f, guest, g| {
            counter(f, guest, None, g.wake_failures)
        })?;
        self.per_guest(e, &ANSWERED, |f, guest, g| {
            for (kind, n) in ANSWER_KINDS.iter().zip(g.answered) {
                counter(f, guest, Some(("protocol", kind.as_str())), n)?;
            }
            Ok(())
        })?;
        self.per_guest(e, &QUEUED, |f, guest, g| counter(f, guest, None, g.queued))?;
        self.per_guest(e, &REPLAYED, |f, guest, g| {
            counter(f, guest, None, g.replayed)
        })?;
        self.per_guest(e, &DROPPED, |f, guest, g| {
            for (reason, n) in DROP_REASONS.iter().zip(g.dropped) {
                counter(f, guest, Some(("reason", reason.as_str())), n)?;
            }
            counter(f, guest, Some(("reason", REPLAY_FAILED)), g.replay_failed)
        })?;
        self.per_guest(e, &QUEUE, |f, guest, g| {
            sample(f, guest, None, &ConstGauge::new(g.queue_depth))
        })?;
        self.per_guest(e, &WAKE_AND_SERVE, |f, guest, g| {
            sample(f, guest, None, &g.wake_and_serve)
        })?;
        self.per_guest(e, &RESUME, |f, guest, g| sample(f, guest, None, &g.resume))?;
        let bytes = |b: u64| ConstGauge::new(i64::try_from(b).unwrap_or(i64::MAX));
        self.per_guest(e, &MEMORY_FREED, |f, guest, g| {
            sample(f, guest, None, &bytes(g.memory_freed))
        })?;
        self.per_guest(e, &MEMORY_BACK, |f, guest, g| {
            sample(f, guest, None, &bytes(g.memory_back))
        })?;
        self.per_bridge(e, &IGNORED, |b| b.ignored_frames)?;
        self.per_bridge(e, &MALFORMED, |b| b.malformed_frames)?;
        self.per_bridge(e, &TRANSMIT_ERRORS, |b| b.transmit_errors)?;
        self.per_bridge(e, &CAPTURE_DROPS, |b| b.capture_drops)?;
        self.per_bridge(e, &IN_KERNEL_PORTS, |b| b.in_kernel_ports)?;
        let d = &self.daemon;
        for (family, value) in [
            (&RESUMING, d.resumes_in_flight),
            (&RESUMING_MAX, d.resumes_in_flight_max),
            (&RESUME_CAP, d.resume_cap),
            (&HELD_BYTES, d.held_bytes),
            (&HELD_BYTES_LIMIT, d.held_bytes_limit),
            (
                &HOST_MEMORY_FREED,
                self.guests.iter().map(|(_, g)| g.memory_freed).sum(),
            ),
            (
                &HOST_MEMORY_TO_WAKE,
                self.guests.iter().map(|(_, g)| g.memory_to_wake).sum(),
            ),
        ] {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            ConstGauge::new(value).encode(declare(e, family)?)?;
        }
        Ok(())
    }
}

impl Scrape {
    /// Declares `family` and has `write` write each guest's samples of it.
    fn per_guest(
        &self,
        encoder: &mut DescriptorEncoder,
        family: &'static Family,
        mut write: impl FnMut(&mut MetricEncoder, &str, &GuestMetrics) -> fmt::Result,
    ) -> fmt::Result {
        let mut metric = declare(encoder, family)?;
        for (guest, g) in &self.guests {
            write(&mut metric, guest, g)?;
        }
        Ok(())
    }

    /// Declares `family`, a counter, and writes each bridge's `count`.
    fn per_bridge(
        &self,
        encoder: &mut DescriptorEncoder,
        family: &'static Family,
        count: impl Fn(&BridgeMetrics) -> u64,
    ) -> fmt::Result {
        let mut metric = declare(encoder, family)?;
        for (bridge, b) in &self.bridges {
            let labels = [("bridge", bridge.as_str())];
            let value = count(b);
            if family.kind == MetricType::Gauge {
                ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                    .encode(metric.encode_family(&labels)?)?;
            } else {
                ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Writes `family`'s `# HELP` and `# TYPE`; its samples follow, through the encoder returned.
fn declare<'s>(
    encoder: &'s mut DescriptorEncoder,
    family: &'static Family,
) -> Result<MetricEncoder<'s>, fmt::Error> {
    encoder.encode_descriptor(family.name, family.help, family.unit.as_ref(), family.kind)
}

/// Writes one sample of a guest's family (a counter, a gauge or a histogram), labelled
/// `guest`, and `label` if there is one.
fn sample(
    family: &mut MetricEncoder,
    guest: &str,
    label: Option<(&str, &str)>,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    match label {
        Some(label) => metric.encode(family.encode_family(&[("guest", guest), label])?),
        None => metric.encode(family.encode_family(&[("guest", guest)])?),
    }
}

/// Writes one sample of a guest's counter family.
fn counter(
    family: &mut MetricEncoder,
    guest: &str,
    label: Option<(&str, &str)>,
    value: impl EncodeCounterValue,
) -> fmt::Result {
    sample(family, guest, label, &ConstCounter::new(value))
}

/// Our histogram, written by the library: cumulative `_bucket` series (`le` from the bounds
/// of [`BUCKETS`], then `+Inf`), `_sum` in seconds and `_count`.
impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        // Upper bound and count of each bucket, not cumulative: the library adds them up.
        let buckets: [(f64, u64); BUCKETS.len() + 1] = std::array::from_fn(|i| {
            let bound = BUCKETS
                .get(i)
                .map_or(f64::INFINITY, |(le, _)| le.as_secs_f64());
            (bound, u64::from(self.counts[i]))
        });
        encoder.encode_histogram::<NoLabelSet>(
            self.sum().as_secs_f64(),
            self.count(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
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
