//! One bridge's worker: the surrogate's port, its capture loop, the sleep and wake sequences
//! of the bridge's guests, and their idleness.
//!
//! The worker owns everything about its bridge and runs on its own thread; the API talks to
//! it through [`BridgeHandle`]. Each guest's sleep and wake is the core's sequence
//! ([`vmnap_core::sequence`]): the worker feeds it frames, commands, backend results and the
//! time, and carries out the actions it returns. Backend calls (which can take seconds) run
//! on one thread per guest ([`crate::backend`]) and report back here; netlink calls and
//! frames sent are quick and done at once. The worker waits only in its poll, on its sockets
//! and the earliest deadline: never for a guest.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, error, info, info_span, warn};
use vmnap_config::GuestConfig;
use vmnap_core::idle::{Decision, IdlePolicy, IdleTracker, Sample};
use vmnap_core::inflight::Unanswered;
use vmnap_core::sequence::{Action, Asked, Cut, Done as Outcome, Notice, Phase, WakeReport};
use vmnap_core::{
    AnswerKind, GuestId, GuestSpec, GuestState, IgnoreReason, Instant, QueuedFrame, Sink,
    Surrogate, Verdict, VirtioNetHdr, WakeCause,
};
use vmnap_host::xdp::{self, Responder};
use vmnap_host::{FdbEntry, LinkStats, Netlink, PacketSocket, PortState, RecvError};
use vmnap_hypervisor::{Backend, PagedOut, ANSWER_WINDOW};
use vmnap_wire::MAX_FRAME_LEN;

use crate::backend::{Done, GuestBackend, Op, PageOutFound, Pool, Report, WAKE_SET_AFTER};
use crate::backoff::WakeJudge;
use crate::error::{chain, StartError};
use crate::events::{Event, EventBus};
use crate::gate::Entry as GateEntry;
use crate::hooks::{Hook, Hooks};
use crate::journal::{self, Entry, Journal};
use crate::learn;
use crate::metrics::{BridgeMetrics, GuestMetrics};
use crate::ports::EveryPort;
use crate::schedule::{Awake, Timing};
use vmnap_api::{GuestStatus, Transition, WakeRecord, LAST_WAKES};

const CAPTURE: Token = Token(0);
const WAKER: Token = Token(1);
/// The socket that hears link changes, with `[surrogate] in_kernel_at_every_port`.
const LINKS: Token = Token(2);
/// Guest `i`'s watch socket is `Token(FIRST_WATCH + i)`.
const FIRST_WATCH: usize = 3;
/// How often a resume that waits for the host's memory is tried again.
const MEMORY_RETRY: Duration = Duration::from_secs(1);
/// How often the counts of frames answered, queued and dropped become events, at most.
const TALLY_EVERY: Duration = Duration::from_secs(1);
/// Frames handled per readiness event before commands get a turn.
const BATCH: usize = 512;
/// How long shutdown waits for the guests it wakes.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// How a worker ends a sleep, wake or pin that the API asked for.
pub(crate) type Reply = Sender<Result<Answer, Refusal>>;

/// A sleep, wake or pin done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// It fell asleep.
    Asleep,
    /// It woke.
    Awake,
    /// Asked to wake, it was awake.
    AlreadyAwake,
    /// Asked to sleep, it already was asleep or on its way there.
    Already(GuestState),
    /// Kept awake however idle it is.
    Pinned,
    /// May sleep when idle again.
    Unpinned,
}

/// A sleep, wake or pin not done, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No guest of that name on this worker (a reload removed it meanwhile).
    NoSuchGuest,
    /// Pin or unpin of a guest that never sleeps on its own.
    NothingToPin,
    /// A reload is removing it.
    BeingRemoved,
    /// A reload removed it before the sleep or wake was over.
    Removed,
    /// Stopped, it still held this work, so it was woken again at once.
    WorkInFlight(String),
    /// Its backend could not stop it: why.
    DidNotSleep(String),
    /// A wake came before it was stopped.
    WokenFirst,
    /// Its sleep was called off before it was stopped.
    KeptRunning,
    /// Its backend could not resume it (it is retried): why.
    DidNotWake(String),
    /// Its `before_sleep` hook said no: what it said.
    Vetoed(String),
}

/// A request to a bridge worker.
#[derive(Debug)]
pub(crate) enum Command {
    Sleep {
        guest: String,
        reply: Reply,
    },
    Wake {
        guest: String,
        reply: Reply,
    },
    Pin {
        guest: String,
        pinned: bool,
        reply: Reply,
    },
    Status {
        reply: Sender<Vec<(usize, GuestStatus, History)>>,
    },
    Metrics {
        reply: Sender<MetricsReply>,
    },
    Shutdown {
        wake: bool,
        reply: Sender<()>,
    },
    /// A reload: no longer manage these guests, waking those asleep first; `reply` once all
    /// of them are gone.
    Retire {
        guests: Vec<String>,
        reply: Sender<()>,
    },
    /// libvirt says the guest's domain stopped (`saved`: it was saved) or was undefined
    /// outside vmnap: let it go at once, without waking it, unless it is a save of vmnap's
    /// own (the guest is not awake); `reply` with whether it was let go.
    #[cfg(feature = "libvirt")]
    Release {
        guest: String,
        reason: String,
        saved: bool,
        reply: Sender<bool>,
    },
    /// A reload: manage these guests too; `reply` with those that could not be added, and
    /// why.
    Adopt {
        guests: Vec<GuestSetup>,
        reply: Sender<Vec<(String, String)>>,
    },
    /// A reload: the guests' new positions in the config, idleness policies and (for those
    /// whose policy changed) entries, and the sampling interval; `reply` with the guests
    /// whose new entry could not be applied, and why.
    Update {
        orders: BTreeMap<String, usize>,
        idle: BTreeMap<String, Option<IdlePolicy>>,
        timing: BTreeMap<String, Timing>,
        policies: BTreeMap<String, GuestConfig>,
        interval: Duration,
        reply: Sender<Vec<(String, String)>>,
    },
}

/// A worker's metrics: each guest's (with its position in the config and its name), and the
/// bridge's.
pub(crate) type MetricsReply = (Vec<(usize, String, GuestMetrics)>, BridgeMetrics);

/// What a worker remembers of a guest's past: its sleeps and wakes over the last day and
/// its last wakes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct History {
    pub timeline: Vec<Transition>,
    pub last_wakes: Vec<WakeRecord>,
    /// When the worker took the guest on, in milliseconds since the Unix epoch.
    pub known_since_ms: u64,
}

/// How the API names a state.
pub(crate) fn api_state(state: GuestState) -> vmnap_api::State {
    match state {
        GuestState::Awake => vmnap_api::State::Awake,
        GuestState::FallingAsleep => vmnap_api::State::FallingAsleep,
        GuestState::Sleeping => vmnap_api::State::Sleeping,
        GuestState::Waking { .. } => vmnap_api::State::Waking,
    }
}

/// The API's end of a worker.
#[derive(Debug)]
pub(crate) struct BridgeHandle {
    pub bridge: String,
    pub guests: Vec<String>,
    commands: Sender<Command>,
    waker: Arc<Waker>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl BridgeHandle {
    pub(crate) fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok() && self.waker.wake().is_ok()
    }
}

/// A guest ready to run: its config, what the config left to the backend (bridge, port,
/// MAC), its idleness policy and its backend.
#[derive(Debug)]
pub(crate) struct GuestSetup {
    /// Position in the config, for status order.
    pub order: usize,
    pub config: GuestConfig,
    pub interface: String,
    pub mac: [u8; 6],
    pub idle: Option<IdlePolicy>,
    /// How long it may sleep, and its awake windows.
    pub timing: Timing,
    pub backend: Box<dyn Backend>,
}

/// What a daemon started after a crash does with a guest it finds asleep in its journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Stand in for it again.
    StandIn,
    /// Wake it.
    Wake,
}

/// Where the worker keeps its journal, and what to do with what it finds there.
#[derive(Debug, Clone)]
pub(crate) struct StateSetup {
    pub dir: PathBuf,
    pub recovery: Recovery,
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    /// The seed of its surrogate's keyed hashing and TCP sequence numbers.
    pub seed: u64,
    /// How often guests' idleness is sampled.
    pub interval: Duration,
    /// Its journal; `None`: it keeps none.
    pub state: Option<StateSetup>,
    /// Answer ARP and ping for sleeping guests in the kernel where it can (`[surrogate]
    /// in_kernel`).
    pub in_kernel: bool,
    /// Answer them also at the ingress of the bridge's other ports (`[surrogate]
    /// in_kernel_at_every_port`).
    pub in_kernel_at_every_port: bool,
    /// How long a guest it begins to follow awake is followed before its unknown
    /// connections no longer wake it (`[surrogate] learn_connections_for`).
    pub learn_connections_for: Duration,
}

/// Deadlines of guests: when, the guest's index, and the ticket of its backend then (an
/// index is reused once a guest leaves: the ticket tells the guest apart).
#[derive(Debug, Default)]
struct Due(Vec<(StdInstant, usize, u64)>);

impl Due {
    fn push(&mut self, at: StdInstant, index: usize, ticket: u64) {
        self.0.push((at, index, ticket));
    }

    /// Drops guest `index`'s deadlines.
    fn forget(&mut self, index: usize) {
        self.0.retain(|(_, i, _)| *i != index);
    }

    /// The earliest deadline.
    fn next(&self) -> Option<StdInstant> {
        self.0.iter().map(|(at, ..)| *at).min()
    }

    /// Takes out the deadlines at or before `now`: their guests' indices and tickets.
    fn take_due(&mut self, now: StdInstant) -> Vec<(usize, u64)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let (due, later) = std::mem::take(&mut self.0)
            .into_iter()
            .partition::<Vec<_>, _>(|(at, ..)| *at <= now);
        self.0 = later;
        due.into_iter().map(|(_, i, t)| (i, t)).collect()
    }
}

/// A guest as the worker runs it.
#[derive(Debug)]
struct Guest {
    id: GuestId,
    order: usize,
    name: String,
    interface: String,
    ifindex: u32,
    mac: [u8; 6],
    backend: GuestBackend,
    /// How long the last wake took, and what caused it.
    last_wake: Option<(Duration, WakeCause)>,
    asleep_since: Option<StdInstant>,
    /// The same, in milliseconds since the Unix epoch, for the journal.
    asleep_since_ms: Option<u64>,
    /// The frame that asked for the wake under way, described.
    wake_frame: Option<String>,
    /// How long the backend's last resume took.
    resume_took: Duration,
    /// The last error of a backend call or a step of a sleep, for the log and the answer to
    /// its waiters; then why the sleep under way ended awake, for its waiters once the guest
    /// has its network back.
    failure: Option<String>,
    /// Why its sleep was undone, for those who asked for it; told once its network is back.
    undone: Option<Refusal>,
    /// The socket on its port that replays and probes go out of, while it wakes.
    sender: Option<PacketSocket>,
    /// A CPU-time sample is out, with the time and port counters read when it was asked.
    sampling: Option<(Instant, LinkStats)>,
    /// API requests waiting for the sleep in progress.
    sleep_waiters: Vec<Reply>,
    /// API requests waiting for the wake in progress.
    wake_waiters: Vec<Reply>,
    /// Idleness, for guests that sleep on their own.
    idle: Option<IdleTracker>,
    /// How long it may sleep before it is woken, and its awake windows.
    timing: Timing,
    /// Whether it has a `before_sleep` hook, and an `after_wake` one.
    hooks: (bool, bool),
    /// Its `before_sleep` hook runs: those who asked for the sleep (none for idleness).
    vetting: Option<Vec<Reply>>,
    /// What Prometheus sees of it.
    metrics: GuestMetrics,
    /// A passive capture on its port, while it is awake and while it wakes, of the frames
    /// its port sends it that the surrogate could have answered (for the idleness policy),
    /// and of the TCP segments, either way, that open a connection, end a write or end a
    /// connection (SYN, PSH, FIN, RST): they teach the surrogate the guest's connections
    /// (`Surrogate::connections_mut`: keep-awake ports, and what may wake it asleep), tell
    /// whether a wake served anyone, and show the requests it has taken in and not answered
    /// (for backends that cannot look inside a stopped guest). A BPF filter keeps the rest
    /// in the kernel; one socket, so that a guest costs one descriptor, and a sleeping one
    /// none.
    watch: Option<PacketSocket>,
    /// The TCP ports of its health checks.
    health_ports: Vec<u16>,
    /// Its keep-awake ports: an open connection on one keeps it awake.
    keep_ports: Vec<vmnap_core::PortRule>,
    unanswered: Unanswered,
    /// A reload removes it once it is awake.
    retiring: bool,
    /// Its changes of state over the last day (and the one before, the state the day
    /// began in), and its last wakes.
    timeline: VecDeque<Transition>,
    last_wakes: VecDeque<WakeRecord>,
    /// Its CPU time at the last sample, and when that was taken; its CPU use (seconds a
    /// second) while last awake; the CPU time its past sleeps saved, by that measure.
    cpu_sample: Option<(StdInstant, Duration)>,
    cpu_rate: Option<f64>,
    cpu_saved: Duration,
    /// The memory its sleep gives back, as its backend last said (for a page-out, what
    /// its RAM holds in host memory, read while it is awake).
    memory_released: Option<u64>,
    /// Paging its RAM out while it sleeps.
    page_out: PageOutState,
    /// While it sleeps with its ARP and ping answered in the kernel: the answers the kernel
    /// gave for it that its figures count already.
    in_kernel: Option<xdp::Answered>,
    /// It has an entry in the journal.
    journaled: bool,
    /// It holds a place of the resume cap, for this much memory: its backend is resuming it.
    resuming: Option<u64>,
    /// Its resume waits for the host's memory (said once per wait).
    waits_for_memory: bool,
    /// What asked for the wake under way, if a frame did.
    wake_cause: Option<WakeCause>,
    /// Whether its recent wakes served anyone.
    judge: WakeJudge,
    /// When this worker took it on (milliseconds since the Unix epoch).
    known_since_ms: u64,
    /// The addresses it was seen to have beside its configured ones, the latest seen last
    /// (`None` until the first: boxed, as most guests' addresses are all configured).
    learned: Option<Box<[IpAddr]>>,
}

/// A step of a guest's sleep that waits for the journal to be on disk first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterJournal {
    /// Its port cut off the bridge.
    Cut,
    /// Its `vmnap sleep` callers told it is asleep.
    AnswerAsleep,
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How far back a guest's timeline goes.
const TIMELINE: Duration = Duration::from_secs(24 * 3600);

impl Guest {
    /// Notes that the guest is asleep (or awake) from now on.
    fn mark(&mut self, asleep: bool) {
        if self.timeline.back().is_some_and(|t| t.asleep == asleep) {
            return;
        }
        let now = unix_ms();
        self.timeline.push_back(Transition { at_ms: now, asleep });
        let start = now.saturating_sub(TIMELINE.as_millis() as u64);
        while self.timeline.len() > 1 && self.timeline[1].at_ms <= start {
            self.timeline.pop_front();
        }
    }

    /// The CPU its sleeps have saved so far, the one under way included.
    /// The host memory its sleep gives back now, in `state`: what a save or this sleep's
    /// page-out freed while it sleeps, 0 awake or for a sleep that keeps its memory.
    fn memory_freed_now(&self, state: GuestState) -> Option<u64> {
        let known = self.memory_released.is_some() || self.page_out.ready();
        match &self.page_out.this_sleep {
            Some(p) if state == GuestState::Sleeping => Some(p.before.saturating_sub(p.after)),
            // Asleep without a page-out done yet: a save's, or nothing.
            _ if state == GuestState::Sleeping && !self.page_out.ready() => self.memory_released,
            _ => known.then_some(0),
        }
    }

    /// What came back since its wake from a page-out, while it is awake.
    fn memory_back(&self, state: GuestState) -> Option<u64> {
        (state == GuestState::Awake && self.page_out.woke_from)
            .then_some(self.page_out.back)
            .flatten()
    }

    /// The host memory its resume is reckoned to take: what its sleep freed comes back with
    /// the resume (a save), or as it touches it (a page-out: what came back after its last
    /// wake, or [`PAGE_OUT_WAKE_ESTIMATE`]).
    fn resume_cost(&self) -> u64 {
        if self.page_out.this_sleep.is_some() {
            self.page_out.back.unwrap_or(PAGE_OUT_WAKE_ESTIMATE)
        } else {
            self.memory_released.unwrap_or(0)
        }
    }

    fn cpu_hours_freed(&self) -> Option<f64> {
        let rate = self.cpu_rate?;
        let now = self
            .asleep_since
            .map_or(0.0, |t| t.elapsed().as_secs_f64() * rate);
        Some((self.cpu_saved.as_secs_f64() + now) / 3600.0)
    }

    /// The addresses it learned, the latest seen last.
    fn learned_list(&self) -> Vec<IpAddr> {
        self.learned
            .as_deref()
            .map(<[IpAddr]>::to_vec)
            .unwrap_or_default()
    }

    /// The VLAN of the guest's forwarding entry. Bridges without VLAN filtering (the only
    /// kind vmnap supports so far) keep one entry per MAC, whatever the tag.
    fn fdb_vid(&self) -> u16 {
        0
    }

    /// The socket on the guest's port for replays and probes, opened on first use in a wake.
    fn sender(&mut self) -> Option<&PacketSocket> {
        if self.sender.is_none() {
            match PacketSocket::open_sender(&self.interface) {
                Ok(s) => self.sender = Some(s),
                Err(e) => {
                    error!(guest = %self.name, error = %chain(&e), "cannot open the guest's port to replay into");
                }
            }
        }
        self.sender.as_ref()
    }

    fn answer_sleep(&mut self, result: &Result<Answer, Refusal>) {
        // Taken, not drained: a guest that waits for nothing keeps no buffer.
        for w in std::mem::take(&mut self.sleep_waiters) {
            let _ = w.send(result.clone());
        }
    }

    fn answer_wake(&mut self, result: &Result<Answer, Refusal>) {
        // Taken, not drained: a guest that waits for nothing keeps no buffer.
        for w in std::mem::take(&mut self.wake_waiters) {
            let _ = w.send(result.clone());
        }
    }
}

/// The worker's guests, each at the index of its [`GuestId`]: a removed guest leaves a hole
/// that the next one added fills, as in the surrogate. Each is boxed: a `Guest` is over a
/// kilobyte, and the vector's spare capacity should not be.
#[derive(Debug, Default)]
struct Guests(Vec<Option<Box<Guest>>>);

impl Guests {
    fn get_mut(&mut self, i: usize) -> Option<&mut Guest> {
        self.0.get_mut(i).and_then(Option::as_deref_mut)
    }

    fn iter(&self) -> impl Iterator<Item = &Guest> {
        self.0.iter().flatten().map(|g| &**g)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Guest> {
        self.0.iter_mut().flatten().map(|g| &mut **g)
    }

    /// The indices of the guests there are now.
    fn indices(&self) -> Vec<usize> {
        (0..self.0.len()).filter(|&i| self.0[i].is_some()).collect()
    }

    fn count(&self) -> usize {
        self.iter().count()
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|g| g.as_ref().is_some_and(|g| g.name == name))
    }

    fn put(&mut self, i: usize, guest: Guest) {
        if self.0.len() <= i {
            self.0.resize_with(i + 1, || None);
        }
        self.0[i] = Some(Box::new(guest));
    }

    fn take(&mut self, i: usize) -> Option<Guest> {
        self.0.get_mut(i).and_then(Option::take).map(|g| *g)
    }
}

impl std::ops::Index<usize> for Guests {
    type Output = Guest;

    fn index(&self, i: usize) -> &Guest {
        self.0[i].as_ref().expect("a guest at this index")
    }
}

impl std::ops::IndexMut<usize> for Guests {
    fn index_mut(&mut self, i: usize) -> &mut Guest {
        self.0[i].as_mut().expect("a guest at this index")
    }
}

/// The core's output, applied to the worker's sockets and counters.
struct WorkerSink<'a> {
    socket: &'a PacketSocket,
    guests: &'a mut Guests,
    bridge_metrics: &'a mut BridgeMetrics,
    woken: &'a mut Vec<Woken>,
    tally: &'a mut BTreeMap<(usize, Tally), u64>,
}

/// A wake a frame asked for: the guest, why, and the frame (described).
type Woken = (GuestId, WakeCause, String);

/// What the surrogate did with a guest's frames, counted between two event publications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tally {
    Answered(&'static str),
    Queued,
    Dropped(&'static str),
}

impl Sink for WorkerSink<'_> {
    fn transmit(&mut self, frame: &[u8]) {
        if let Err(e) = self.socket.send(frame, &VirtioNetHdr::NONE) {
            self.bridge_metrics.on_transmit_error();
            warn!(error = %e, "cannot send an answer");
        }
    }

    fn verdict(&mut self, guest: Option<GuestId>, verdict: Verdict) {
        let Some(g) = guest.and_then(|id| self.guests.get_mut(id.index())) else {
            self.bridge_metrics.on_verdict(verdict);
            return;
        };
        g.metrics.on_verdict(verdict);
        let i = g.id.index();
        match verdict {
            Verdict::Answered(kind) => {
                debug!(guest = %g.name, answer = kind.as_str(), "answered");
                *self
                    .tally
                    .entry((i, Tally::Answered(kind.as_str())))
                    .or_default() += 1;
            }
            Verdict::Queued => {
                *self.tally.entry((i, Tally::Queued)).or_default() += 1;
            }
            Verdict::Dropped(reason) => {
                debug!(guest = %g.name, reason = reason.as_str(), "dropped a frame");
                *self
                    .tally
                    .entry((i, Tally::Dropped(reason.as_str())))
                    .or_default() += 1;
            }
            // A resolution request for an awake guest: the surrogate could have answered
            // it, so it is no sign of work for the idleness policy.
            Verdict::Ignored(IgnoreReason::GuestReceivesDirectly) => {
                if let Some(idle) = g.idle.as_mut() {
                    idle.observe_answerable(1);
                }
            }
            Verdict::Ignored(_) => {}
        }
    }

    fn wake(&mut self, guest: GuestId, cause: WakeCause, frame: &[u8]) {
        self.woken.push((guest, cause, vmnap_core::describe(frame)));
    }
}

/// The worker itself.
pub(crate) struct BridgeWorker {
    bridge: String,
    /// The surrogate's end of its veth pair (not enslaved); frames are read and sent here.
    socket: PacketSocket,
    /// The enslaved end, to remove on shutdown (its peer goes with it).
    port_ifindex: u32,
    netlink: Netlink,
    surrogate: Surrogate,
    guests: Guests,
    /// Where the guests' backend calls run, where they report, and what wakes the worker.
    pool: Pool,
    /// Guests whose resume waits for a place of the resume cap, in the order they asked.
    waiting: VecDeque<usize>,
    /// Guests whose resume waits, until then, because their last wakes served nothing.
    backing_off: Vec<(StdInstant, usize, Option<WakeCause>)>,
    /// Guests resumed from a page-out, and when to read what the wake touched
    /// ([`Op::ReadWakeSet`]); with the ticket of their backend then.
    wake_sets_due: Due,
    /// Sleeping guests with a `max_sleep`, and when it is up; with the ticket of their
    /// backend then. An entry whose guest woke or was given another `max_sleep` meanwhile
    /// is checked and dropped (or put back) when it comes up.
    max_sleep_due: Due,
    /// Guests with awake windows, and when the next of them starts.
    window_due: Due,
    /// The addresses the bridge's ports were seen to use ([`learn`]).
    seen: learn::Seen,
    /// The host's own addresses, read at most every [`HOST_ADDRS_EVERY`], against which a
    /// learned address is checked.
    host_addrs: Option<(StdInstant, Vec<vmnap_host::addrs::HostAddr>)>,
    done_tx: Sender<Report>,
    waker: Arc<Waker>,
    /// A reload waiting for guests it removes to wake: who asked, told once they are gone.
    retiring: Vec<Sender<()>>,
    woken: Vec<Woken>,
    /// Where what happens to the guests is published, and what is not published yet.
    bus: EventBus,
    tally: BTreeMap<(usize, Tally), u64>,
    next_tally: StdInstant,
    epoch: StdInstant,
    buf: Vec<u8>,
    poll: Poll,
    commands: Receiver<Command>,
    done: Receiver<Report>,
    /// Idleness sampling: the interval and the next sample.
    interval: Duration,
    /// See [`WorkerSettings::learn_connections_for`].
    learn_connections_for: Duration,
    next_sample: StdInstant,
    /// Prometheus's view of the frames that concern no guest.
    bridge_metrics: BridgeMetrics,
    /// The thread that keeps and writes the journal of what has been done to the guests
    /// (`None`: it is kept nowhere).
    writer: Option<journal::Writer>,
    /// Where packet sockets go to be closed ([`start_closer`]), and the thread that closes
    /// them (joined at shutdown, so that the daemon does not exit while it closes).
    closer: Sender<PacketSocket>,
    closer_thread: Option<std::thread::JoinHandle<()>>,
    /// Steps waiting for the journal that announces them to be on disk: the guest, the
    /// number of that journal, and the step.
    after_journal: Vec<(usize, u64, AfterJournal)>,
    /// Shutting down: no guest is put to sleep any more.
    stopping: bool,
    /// The eBPF program at the surrogate's port that answers ARP and ping for sleeping
    /// guests in the kernel (`None`: the surrogate answers them, as everything else).
    kernel: Option<Responder>,
    /// The bridge's ports that the responder also answers at, followed
    /// (`[surrogate] in_kernel_at_every_port`).
    every_port: Option<EveryPort>,
    /// How many guests it answers for, the total of its answers when last read, and when to
    /// read it again: the guests' counts are read only when the total has moved.
    in_kernel: usize,
    kernel_total: xdp::Answered,
    next_kernel_check: StdInstant,
}

/// A guest's page-out: what its backend found to page its RAM out with, and what the
/// page-outs did.
#[derive(Debug, Default)]
struct PageOutState {
    /// What its backend last found to page its RAM out with: at its first sample, and at
    /// each suspend and write-back (`None`: not asked yet).
    found: Option<PageOutFound>,
    /// What this sleep's page-out did (`None` while awake, or none ran; boxed: few guests
    /// page out).
    this_sleep: Option<Box<PagedOut>>,
    /// It woke from a sleep whose page-out took its RAM out: what it holds since is what
    /// came back.
    woke_from: bool,
    /// What came back after its last wake from a page-out, as last read awake.
    back: Option<u64>,
    /// When its RAM was last written back while it idled awake.
    last_write_back: Option<StdInstant>,
}

impl PageOutState {
    /// What the status says about it: `None` for a guest whose sleep keeps its memory.
    fn describe(&self) -> Option<String> {
        match self.found.as_ref()? {
            PageOutFound::None => None,
            PageOutFound::Ready(caveats) if caveats.is_empty() => Some("ready".to_owned()),
            PageOutFound::Ready(caveats) => Some(format!("ready; {}", caveats.join("; "))),
            PageOutFound::Unavailable(reason) => {
                Some(format!("unavailable, it sleeps paused: {reason}"))
            }
        }
    }

    fn ready(&self) -> bool {
        matches!(self.found, Some(PageOutFound::Ready(_)))
    }
}

/// How much memory a resume after a page-out is reckoned to bring back before one has
/// been measured (a guest answering a new connection touched about 2 MiB of its RAM in
/// measurements; readahead can add to that).
const PAGE_OUT_WAKE_ESTIMATE: u64 = 32 << 20;

/// How long the host's addresses, read to check a learned address against, are trusted.
const HOST_ADDRS_EVERY: Duration = Duration::from_secs(10);

/// How long after a write-back of an idle guest's RAM the next may start.
const WRITE_BACK_EVERY: Duration = Duration::from_secs(30);

/// How often a worker reads its kernel responder's total, to count the answers it gave into
/// the guests' figures and events (reading the status or the metrics counts them at once).
/// Each read wakes the worker: with 10 bridges asleep, once a second would be most of the
/// daemon's idle CPU.
const KERNEL_CHECK_EVERY: Duration = Duration::from_secs(5);

/// How many addresses a bridge's kernel responder holds: a bridge takes at most 1,024
/// ports, and a guest may have a few addresses. Guests past it are answered by the surrogate.
const KERNEL_ADDRESSES: u32 = 4096;

/// The names of a bridge's surrogate port: the enslaved end and the end vmnap reads.
pub fn port_names(bridge_ifindex: u32) -> (String, String) {
    (
        format!("vmnap{bridge_ifindex}"),
        format!("vmnap{bridge_ifindex}s"),
    )
}

impl BridgeWorker {
    /// Sets up the surrogate's port on `bridge` and registers its guests; returns the worker
    /// (to run on its own thread) and its handle.
    pub(crate) fn start(
        bridge: &str,
        guests: Vec<GuestSetup>,
        settings: WorkerSettings,
        bus: EventBus,
        pool: Pool,
    ) -> Result<(BridgeWorker, BridgeHandle), StartError> {
        let WorkerSettings {
            seed,
            interval,
            state,
            in_kernel,
            in_kernel_at_every_port,
            learn_connections_for,
        } = settings;
        let mut netlink = Netlink::open().map_err(StartError::Netlink)?;
        let bridge_ifindex = netlink
            .link_index(bridge)
            .map_err(|source| StartError::NoBridge {
                bridge: bridge.to_owned(),
                source,
            })?;
        let (port, peer) = port_names(bridge_ifindex);
        let mac = surrogate_mac(bridge_ifindex);
        // A port left behind by a daemon that died is ours to replace.
        if netlink.link_exists(&port).map_err(StartError::Netlink)? {
            let stale = netlink.link_index(&port).map_err(StartError::Netlink)?;
            warn!(%bridge, %port, "removing the surrogate port a previous run left behind");
            netlink.delete_link(stale).map_err(StartError::Netlink)?;
        }
        let setup = |nl: &mut Netlink| -> Result<u32, vmnap_host::NetlinkError> {
            nl.create_veth(&port, &peer)?;
            let port_ix = nl.link_index(&port)?;
            let peer_ix = nl.link_index(&peer)?;
            nl.set_mac(peer_ix, mac)?;
            // The bridge's MTU is the smallest of its ports': match it, never lower it.
            let mtu = nl.link_mtu(bridge_ifindex)?;
            nl.set_mtu(port_ix, mtu)?;
            nl.set_mtu(peer_ix, mtu)?;
            nl.set_master(port_ix, bridge_ifindex)?;
            nl.set_link_up(peer_ix, true)?;
            nl.set_link_up(port_ix, true)?;
            Ok(port_ix)
        };
        let port_ifindex = setup(&mut netlink).map_err(|source| StartError::Port {
            bridge: bridge.to_owned(),
            source,
        })?;
        let socket = PacketSocket::open_capture(&peer).map_err(|source| StartError::Capture {
            bridge: bridge.to_owned(),
            source,
        })?;
        let mut kernel = if in_kernel {
            // The peer of the surrogate's end is the bridge's port, in this namespace: the
            // responder runs on its egress where the kernel has tcx, and in generic XDP on
            // the surrogate's end otherwise, after turning the port's VLAN offload off so
            // that tagged frames carry their tags.
            match Responder::attach(&peer, KERNEL_ADDRESSES, xdp::Vlans::Possible) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(%bridge, error = %chain(&e), "cannot answer ARP and ping in the kernel; the surrogate answers them itself");
                    None
                }
            }
        } else {
            None
        };
        let poll = Poll::new().map_err(StartError::Poll)?;
        poll.registry()
            .register(
                &mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&socket)),
                CAPTURE,
                Interest::READABLE,
            )
            .map_err(StartError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(StartError::Poll)?);
        pool.resume_gate().register(&waker);
        let (done_tx, done_rx) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let every_port = match kernel.as_mut() {
            Some(k) if in_kernel_at_every_port => {
                EveryPort::start(bridge, bridge_ifindex, port_ifindex, &mut netlink, k)
            }
            _ => None,
        };
        if let Some(ports) = &every_port {
            poll.registry()
                .register(&mut SourceFd(&ports.fd()), LINKS, Interest::READABLE)
                .map_err(StartError::Poll)?;
        }
        let in_kernel = kernel.as_ref().map(|k| k.hook().to_string());
        info!(%bridge, port = %port, guests = guests.len(), in_kernel = in_kernel.as_deref().unwrap_or("no"), "standing by on bridge");
        let journal_path = state.as_ref().map(|s| journal::path(&s.dir, bridge));
        let found = match &journal_path {
            Some(p) => Journal::load(p).unwrap_or_else(|e| {
                error!(error = %chain(&e), "cannot read the journal; starting without it");
                Journal::default()
            }),
            None => Journal::default(),
        };
        let (closer, closer_thread) = start_closer().map_err(StartError::Poll)?;
        let mut worker = BridgeWorker {
            bridge: bridge.to_owned(),
            socket,
            port_ifindex,
            netlink,
            surrogate: {
                let mut s = Surrogate::new(seed);
                s.set_hold_budget(Arc::clone(pool.hold_budget()));
                s
            },
            guests: Guests::default(),
            waiting: VecDeque::new(),
            backing_off: Vec::new(),
            wake_sets_due: Due::default(),
            max_sleep_due: Due::default(),
            window_due: Due::default(),
            seen: learn::Seen::default(),
            host_addrs: None,
            pool,
            done_tx,
            waker: Arc::clone(&waker),
            retiring: Vec::new(),
            woken: Vec::new(),
            bus,
            tally: BTreeMap::new(),
            next_tally: StdInstant::now(),
            epoch: StdInstant::now(),
            buf: vec![0; MAX_FRAME_LEN + 64],
            poll,
            commands: rx,
            done: done_rx,
            learn_connections_for,
            interval,
            next_sample: StdInstant::now() + interval,
            bridge_metrics: BridgeMetrics::default(),
            writer: match &journal_path {
                Some(p) => Some(
                    journal::Writer::start(p.clone(), bridge.to_owned(), Arc::clone(&waker))
                        .map_err(StartError::Poll)?,
                ),
                None => None,
            },
            after_journal: Vec::new(),
            closer,
            closer_thread: Some(closer_thread),
            stopping: false,
            kernel,
            every_port,
            in_kernel: 0,
            kernel_total: xdp::Answered::default(),
            next_kernel_check: StdInstant::now(),
        };
        worker.surrogate.set_probe_mac(vmnap_core::MacAddr(mac));
        for setup in guests {
            worker.adopt(setup)?;
        }
        let handle = BridgeHandle {
            bridge: bridge.to_owned(),
            guests: worker.guests.iter().map(|g| g.name.clone()).collect(),
            commands: tx,
            waker,
            thread: None,
        };
        let recovery = state.map_or(Recovery::Wake, |s| s.recovery);
        worker.recover(found, recovery);
        Ok((worker, handle))
    }

    /// Registers a guest, awake, with its backend on the pool, and opens its watches.
    fn adopt(&mut self, setup: GuestSetup) -> Result<(), StartError> {
        let name = setup.config.name.clone();
        let ifindex = self
            .netlink
            .link_index(&setup.interface)
            .map_err(|source| StartError::NoInterface {
                guest: name.clone(),
                source,
            })?;
        let id = self
            .surrogate
            .add_guest(spec_of(&setup.config, setup.mac))
            .map_err(StartError::Guest)?;
        let i = id.index();
        let hooks = hooks_of(&setup.config);
        let backend = GuestBackend::new(
            &self.pool,
            i,
            setup.backend,
            self.done_tx.clone(),
            Arc::clone(&self.waker),
        );
        let has_hooks = has_hooks(hooks.as_deref());
        backend.set_hooks(hooks);
        let mut guest = Guest {
            id,
            order: setup.order,
            name,
            interface: setup.interface,
            ifindex,
            mac: setup.mac,
            backend,
            last_wake: None,
            asleep_since: None,
            asleep_since_ms: None,
            wake_frame: None,
            resume_took: Duration::ZERO,
            failure: None,
            undone: None,
            sender: None,
            sampling: None,
            sleep_waiters: Vec::new(),
            wake_waiters: Vec::new(),
            idle: setup.idle.map(IdleTracker::new),
            timing: setup.timing,
            hooks: has_hooks,
            vetting: None,
            metrics: GuestMetrics::new(),
            watch: None,
            health_ports: setup.config.health.iter().map(|h| h.port).collect(),
            keep_ports: setup.config.keep_awake_while_connected.clone(),
            unanswered: Unanswered::new(),
            retiring: false,
            timeline: VecDeque::new(),
            last_wakes: VecDeque::new(),
            cpu_sample: None,
            cpu_rate: None,
            cpu_saved: Duration::ZERO,
            memory_released: None,
            page_out: PageOutState::default(),
            in_kernel: None,
            journaled: false,
            resuming: None,
            waits_for_memory: false,
            wake_cause: None,
            judge: WakeJudge::default(),
            known_since_ms: unix_ms(),
            learned: None,
        };
        let followed = open_watch(&self.poll, &mut guest, i, true);
        // A guest followed from now on may already have connections that say nothing: they
        // wake it, as any would, until it has been followed for the learning time.
        let now = self.now();
        let trust = followed.then(|| now + self.learn_connections_for);
        if let Some(c) = self.surrogate.connections_mut(id) {
            c.trust_from(trust);
        }
        self.guests.put(i, guest);
        self.watch_windows(i);
        Ok(())
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Records guest `i` in `state`, with its port cut as `cut` says (`None`: awake, nothing
    /// to remember), and hands the journal to its writer. Returns the number the writer
    /// reaches once the file holds it (0: nothing to wait for).
    fn journal(&mut self, i: usize, state: Option<(GuestState, Option<Cut>)>) -> u64 {
        if self.writer.is_none() {
            return 0;
        }
        let connections = match state {
            Some(_) => {
                // What its port showed last, before its sleep is written down.
                self.drain_watch(i);
                let now = self.now();
                self.surrogate
                    .connections(self.guests[i].id)
                    .filter(|c| c.is_sure(now))
                    .map(|c| {
                        c.flows()
                            .map(|f| {
                                [
                                    SocketAddr::new(f.local, f.local_port),
                                    SocketAddr::new(f.peer, f.peer_port),
                                ]
                            })
                            .collect()
                    })
            }
            None => None,
        };
        let g = &mut self.guests[i];
        let Some(writer) = self.writer.as_mut() else {
            return 0;
        };
        match state {
            Some((state, cut)) => {
                let entry = Entry {
                    state,
                    interface: g.interface.clone(),
                    cut,
                    mac: g.mac,
                    connections,
                    asleep_since_ms: (state == GuestState::Sleeping)
                        .then_some(g.asleep_since_ms)
                        .flatten(),
                    learned: g.learned_list(),
                };
                g.journaled = true;
                writer.put(g.name.clone(), entry)
            }
            None if g.journaled => {
                g.journaled = false;
                writer.remove(g.name.clone())
            }
            None => 0,
        }
    }

    /// Takes over what a previous run left, as its journal says: guests it left asleep are
    /// stood in for again (or woken), half-done steps are finished by waking, and ports of
    /// guests no longer configured are handed back to the bridge.
    fn recover(&mut self, found: Journal, recovery: Recovery) {
        for (name, entry) in found.guests {
            let cut = entry.cut;
            let Some(i) = self.find(&name) else {
                warn!(guest = %name, port = %entry.interface, "a guest of the journal is no longer configured; handing its port back");
                if let Ok(ifindex) = self.netlink.link_index(&entry.interface) {
                    let _ = match cut {
                        Some(Cut::PortDisabled) => {
                            self.netlink.set_port_state(ifindex, PortState::Forwarding)
                        }
                        Some(Cut::LinkDown) => self.netlink.set_link_up(ifindex, true),
                        None => Ok(()),
                    };
                }
                continue;
            };
            let id = self.guests[i].id;
            let now = self.now();
            // The journal says what vmnap left; the backend says what is. A guest someone
            // resumed meanwhile (virsh resume, a thaw by hand) runs: standing in for it would
            // cut it off, so its port is handed back and its entry dropped.
            if self.guests[i].backend.is_stopped_now() == Some(false) {
                warn!(guest = %name, state = %entry.state, "the journal has the guest asleep, but its backend says it runs (resumed outside vmnap?): handing its port back");
                let ifindex = self.guests[i].ifindex;
                let _ = self.netlink.set_port_state(ifindex, PortState::Forwarding);
                let _ = self.netlink.set_link_up(ifindex, true);
                self.guests[i].journaled = true;
                self.journal(i, None);
                continue;
            }
            if !entry.learned.is_empty() {
                // Answered for at the addresses it had learned, as before the restart.
                if let Err(e) = self.set_learned(i, entry.learned.clone()) {
                    warn!(guest = %name, error = %e, "cannot take back the addresses the journal says were learned for the guest");
                }
            }
            if self.surrogate.stand_in(id, cut, now).is_err() {
                continue;
            }
            if let (Some(flows), Some(c)) = (&entry.connections, self.surrogate.connections_mut(id))
            {
                // Asleep, the guest opened nothing since: the table is as sure as it was.
                c.learn(
                    flows
                        .iter()
                        .map(|[local, peer]| vmnap_core::conntrack::Flow {
                            local: local.ip(),
                            local_port: local.port(),
                            peer: peer.ip(),
                            peer_port: peer.port(),
                        }),
                    now,
                );
                c.trust_from(Some(now));
            }
            if entry.state == GuestState::Sleeping && recovery == Recovery::StandIn {
                let (mac, vid) = (self.guests[i].mac, self.guests[i].fdb_vid());
                match self
                    .netlink
                    .fdb_replace(self.port_ifindex, mac, vid, FdbEntry::StaticSticky)
                {
                    Ok(()) => {
                        info!(guest = %name, "found asleep by the journal; standing in again");
                        let g = &mut self.guests[i];
                        // A page-out the last run began may not have ended: it is done
                        // again (what is out already costs nothing), for guests whose
                        // sleep pages out.
                        g.page_out.this_sleep = None;
                        if !g.backend.send(Op::PageOut) {
                            warn!(guest = %name, "no backend thread to page the guest's RAM out; it sleeps paused");
                        }
                        // Asleep since the journal says, where it says.
                        let now_ms = unix_ms();
                        let since_ms = entry.asleep_since_ms.filter(|&t| t <= now_ms);
                        let asleep_for = Duration::from_millis(since_ms.map_or(0, |t| now_ms - t));
                        g.asleep_since = Some(
                            StdInstant::now()
                                .checked_sub(asleep_for)
                                .unwrap_or_else(StdInstant::now),
                        );
                        g.asleep_since_ms = Some(since_ms.unwrap_or(now_ms));
                        g.mark(true);
                        if let Some(w) = g.watch.take() {
                            close_watch(&self.poll, &self.closer, w);
                        }
                        self.answer_in_kernel(i);
                        self.watch_max_sleep(i);
                        self.journal(i, Some((GuestState::Sleeping, cut)));
                        continue;
                    }
                    Err(e) => {
                        error!(guest = %name, error = %chain(&e), "cannot claim the MAC of a guest found asleep; waking it");
                    }
                }
            }
            info!(guest = %name, state = %entry.state, "found in the journal; waking it");
            // A crash in the middle of a cut may leave the journal behind the port: hand the
            // port back both ways (each is harmless if it was not cut that way).
            let ifindex = self.guests[i].ifindex;
            let _ = self.netlink.set_port_state(ifindex, PortState::Forwarding);
            let _ = self.netlink.set_link_up(ifindex, true);
            self.journal(i, Some((entry.state, cut)));
            self.wake_guest(i, WakeCause::Requested);
        }
        // Entries of guests this run does not have are settled: write what is left.
        if let Some(w) = self.writer.as_mut() {
            w.flush();
        }
        self.run_actions();
    }

    /// Runs until told to shut down.
    pub(crate) fn run(mut self) {
        let span = info_span!("bridge", bridge = %self.bridge);
        let _enter = span.enter();
        let mut events = Events::with_capacity(8);
        loop {
            if !self.turn(&mut events, None) {
                return;
            }
            while let Ok(command) = self.commands.try_recv() {
                if let Command::Shutdown { wake, reply } = command {
                    self.shutdown(wake, &mut events);
                    let _ = reply.send(());
                    return;
                }
                self.command(command);
                self.run_actions();
            }
            self.settle_retiring();
        }
    }

    /// Waits for the sockets, the backends and the earliest deadline (at most `longest`),
    /// then handles what came and what is due, and carries out what the sequences ask.
    /// Returns `false` if the poll failed for good.
    fn turn(&mut self, events: &mut Events, longest: Option<Duration>) -> bool {
        let timeout = self
            .next_deadline()
            .map(|at| at.saturating_duration_since(StdInstant::now()));
        let timeout = match (timeout, longest) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (t, l) => t.or(l),
        };
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                error!(error = %e, "poll failed; the surrogate stops");
                return false;
            }
        }
        for event in events.iter() {
            if event.token() == LINKS {
                if let (Some(ports), Some(k)) = (self.every_port.as_mut(), self.kernel.as_mut()) {
                    ports.heard(k);
                }
            } else if let Some(i) = event.token().0.checked_sub(FIRST_WATCH) {
                self.drain_watch(i);
            }
        }
        self.drain_capture(BATCH);
        self.run_journaled();
        self.run_actions();
        self.run_timers();
        self.run_actions();
        self.run_done();
        self.run_actions();
        self.resume_waiting();
        true
    }

    fn next_deadline(&self) -> Option<StdInstant> {
        let core = self
            .surrogate
            .poll_at()
            .map(|at| self.epoch + Duration::from_micros(at.micros()));
        // Every awake guest is sampled: for idleness, and for what its sleep saves.
        let sample = (self.guests.count() > 0).then_some(self.next_sample);
        let tally = (!self.tally.is_empty()).then_some(self.next_tally);
        let kernel = (self.in_kernel > 0).then_some(self.next_kernel_check);
        let backing_off = self.backing_off.iter().map(|(until, ..)| *until).min();
        let wake_set = self.wake_sets_due.next();
        let max_sleep = self.max_sleep_due.next();
        let window = self.window_due.next();
        let ports = self.every_port.as_ref().and_then(EveryPort::deadline);
        // A resume waiting for memory is tried again every second: memory frees up by
        // itself too.
        let waiting = (!self.waiting.is_empty()).then(|| StdInstant::now() + MEMORY_RETRY);
        core.into_iter()
            .chain(sample)
            .chain(tally)
            .chain(kernel)
            .chain(backing_off)
            .chain(wake_set)
            .chain(max_sleep)
            .chain(window)
            .chain(ports)
            .chain(waiting)
            .min()
    }

    /// Handles up to `limit` frames waiting on the capture socket, and publishes what
    /// became of them.
    fn drain_capture(&mut self, limit: usize) {
        self.read_capture(limit);
        for (id, cause, frame) in std::mem::take(&mut self.woken) {
            let Some(g) = self.guests.get_mut(id.index()) else {
                continue;
            };
            info!(guest = %g.name, cause = cause.as_str(), %frame, "waking the guest");
            g.metrics.on_wake_started(cause);
            g.wake_frame = Some(frame);
            g.wake_cause = Some(cause);
        }
        if !self.tally.is_empty() && StdInstant::now() >= self.next_tally {
            self.publish_tally();
        }
    }

    /// Counts the frames the kernel dropped on the capture socket since the last look (the
    /// worker did not keep up with a flood): they never reached the surrogate, so they are
    /// counted here, and said, rather than lost silently.
    fn count_capture_drops(&mut self) {
        match self.socket.take_drops() {
            Ok(0) => {}
            Ok(n) => {
                self.bridge_metrics.capture_drops += n;
                warn!(dropped = n, total = self.bridge_metrics.capture_drops, "the kernel dropped frames for the bridge's sleeping guests before vmnap could read them");
            }
            Err(e) => debug!(error = %e, "cannot read the capture socket's statistics"),
        }
    }

    /// Publishes what the surrogate did with the guests' frames since the last call: at most
    /// every [`TALLY_EVERY`], and before any change of a guest's state, so that events stay
    /// in order.
    fn publish_tally(&mut self) {
        self.next_tally = StdInstant::now() + TALLY_EVERY;
        self.count_capture_drops();
        for ((i, tally), frames) in std::mem::take(&mut self.tally) {
            let Some(g) = self.guests.get_mut(i) else {
                continue;
            };
            let guest = g.name.clone();
            self.bus.publish(match tally {
                Tally::Answered(protocol) => Event::Answered {
                    guest,
                    protocol: protocol.to_owned(),
                    frames,
                },
                Tally::Queued => Event::Queued { guest, frames },
                Tally::Dropped(reason) => Event::Dropped {
                    guest,
                    reason: Some(reason.to_owned()),
                    frames,
                },
            });
        }
    }

    fn read_capture(&mut self, limit: usize) {
        for _ in 0..limit {
            let meta = match self.socket.recv(&mut self.buf) {
                Ok(Some(meta)) => meta,
                Ok(None) => return,
                Err(RecvError::LinkDown { .. }) => {
                    warn!("the surrogate's port went down");
                    continue;
                }
                Err(e @ RecvError::Truncated { .. }) => {
                    self.bridge_metrics.malformed_frames += 1;
                    warn!(error = %e, "dropped a frame too large to hold");
                    continue;
                }
                Err(e) => {
                    error!(error = %e, "cannot read from the surrogate's port");
                    return;
                }
            };
            if meta.outgoing {
                continue;
            }
            let frame = &self.buf[..meta.len];
            if let Some((addr, mac)) = learn::claim(frame) {
                self.saw(learn::vlan(frame), addr, mac);
            }
            let now = self.now();
            let mut sink = WorkerSink {
                socket: &self.socket,
                guests: &mut self.guests,
                bridge_metrics: &mut self.bridge_metrics,
                woken: &mut self.woken,
                tally: &mut self.tally,
            };
            self.surrogate
                .handle_frame(now, meta.vnet, &self.buf[..meta.len], &mut sink);
        }
    }

    /// Reads what guest `i`'s watch caught: answerable frames sent to it count for its
    /// idleness; TCP segments teach its connections and its unanswered requests, and one
    /// from it that serves someone clears its record of useless wakes.
    fn drain_watch(&mut self, i: usize) {
        let now = self.now();
        let Some(g) = self.guests.get_mut(i) else {
            return;
        };
        let Some(watch) = g.watch.as_ref() else {
            return;
        };
        let mut answerable = 0;
        let mut gone = false;
        // Addresses the guest showed it has, and those its port's peers did.
        let (mut own, mut others) = (Vec::new(), Vec::new());
        loop {
            match watch.recv(&mut self.buf) {
                Ok(Some(meta)) => {
                    let frame = &self.buf[..meta.len];
                    if let Some((addr, mac)) = learn::claim(frame) {
                        if mac == g.mac {
                            own.push(addr);
                        } else {
                            others.push((addr, mac));
                        }
                    }
                    // The host's side of the port sends what the guest receives.
                    if meta.outgoing && self.surrogate.answerable_while_awake(g.id, frame) {
                        answerable += 1;
                    }
                    g.unanswered.observe(frame, meta.outgoing, now);
                    if let Some(c) = self.surrogate.connections_mut(g.id) {
                        if c.observe(frame, meta.outgoing, now) {
                            g.judge.served();
                        }
                    }
                }
                Ok(None) => break,
                Err(RecvError::LinkDown { .. }) => continue,
                Err(e) => {
                    warn!(guest = %g.name, error = %chain(&e), "the watch on the guest's port ended: its unknown connections wake it from now on");
                    gone = true;
                    break;
                }
            }
        }
        if let Some(idle) = g.idle.as_mut() {
            idle.observe_answerable(answerable);
        }
        let vlan = self.surrogate.spec(g.id).map_or(0, |spec| spec.vlan);
        for (addr, mac) in others {
            self.saw(vlan, addr, mac);
        }
        for addr in own {
            self.learn(i, addr);
        }
        let Some(g) = self.guests.get_mut(i) else {
            return;
        };
        if gone {
            if let Some(w) = g.watch.take() {
                close_watch(&self.poll, &self.closer, w);
            }
            if let Some(c) = self.surrogate.connections_mut(g.id) {
                c.trust_from(None);
            }
        }
    }

    /// A port of VLAN `vlan` with `mac` was seen using `addr`: remembered, and a guest with
    /// another MAC that had it learned forgets it (it is that port's now).
    fn saw(&mut self, vlan: u16, addr: IpAddr, mac: [u8; 6]) {
        self.seen.saw(addr, mac);
        let Some(id) = self.surrogate.guest_with_address(vlan, addr) else {
            return;
        };
        let i = id.index();
        let Some(g) = self.guests.get_mut(i) else {
            return;
        };
        if g.mac == mac || !g.learned.as_ref().is_some_and(|l| l.contains(&addr)) {
            return;
        }
        let mut list = g.learned_list();
        list.retain(|a| *a != addr);
        if self.set_learned(i, list).is_ok() {
            let g = &self.guests[i];
            warn!(guest = %g.name, address = %addr, other_mac = %vmnap_wire::Mac(mac), "another port uses an address learned for the guest: no longer answered for");
        }
    }

    /// Guest `i` showed it has `addr`: learned, unless it is configured or learned already,
    /// another port was seen using it, or it is the host's own or outside the bridge's
    /// networks.
    fn learn(&mut self, i: usize, addr: IpAddr) {
        let Some(g) = self.guests.get_mut(i) else {
            return;
        };
        let Some(spec) = self.surrogate.spec(g.id) else {
            return;
        };
        let has = match addr {
            IpAddr::V4(a) => spec.ipv4.contains(&a),
            IpAddr::V6(a) => spec.ipv6.contains(&a),
        };
        if has {
            // Seen again: the latest seen is the last to go.
            if let Some(l) = g.learned.as_mut() {
                learn::refresh(l, addr);
            }
            return;
        }
        if let Some(other) = self.seen.other_than(addr, g.mac) {
            debug!(guest = %g.name, address = %addr, other_mac = %vmnap_wire::Mac(other), "not learned: another port used the address");
            return;
        }
        let host = match &self.host_addrs {
            Some((at, host)) if at.elapsed() < HOST_ADDRS_EVERY => host,
            _ => {
                let host = vmnap_host::addrs::host_addrs().unwrap_or_default();
                &self.host_addrs.insert((StdInstant::now(), host)).1
            }
        };
        if let Some(why) = learn::address_problem(addr, &self.bridge, host) {
            debug!(guest = %g.name, "not learned: {why}");
            return;
        }
        let mut list = g.learned_list();
        learn::remember(&mut list, addr);
        match self.set_learned(i, list) {
            Ok(()) => {
                let g = &self.guests[i];
                info!(guest = %g.name, address = %addr, "learned an address of the guest from its own traffic");
            }
            Err(e) => debug!(address = %addr, "not learned: {e}"),
        }
    }

    /// Gives guest `i` `learned` beside its configured addresses (what it had learned before
    /// is replaced), in the surrogate and, while it sleeps, in the kernel's answers.
    fn set_learned(&mut self, i: usize, learned: Vec<IpAddr>) -> Result<(), String> {
        let g = &self.guests[i];
        let spec = self
            .surrogate
            .spec(g.id)
            .ok_or_else(|| "not registered".to_owned())?;
        let old = g.learned.as_deref().unwrap_or_default();
        let keep = |a: IpAddr| !old.contains(&a);
        let mut v4: Vec<Ipv4Addr> = spec
            .ipv4
            .iter()
            .copied()
            .filter(|a| keep(IpAddr::V4(*a)))
            .collect();
        let mut v6: Vec<Ipv6Addr> = spec
            .ipv6
            .iter()
            .copied()
            .filter(|a| keep(IpAddr::V6(*a)))
            .collect();
        for a in &learned {
            match a {
                IpAddr::V4(a) => v4.push(*a),
                IpAddr::V6(a) => v6.push(*a),
            }
        }
        let in_kernel = g.in_kernel.is_some();
        self.answer_in_user_space(i);
        let id = self.guests[i].id;
        let r = self.surrogate.set_addresses(id, v4, v6);
        if in_kernel {
            self.answer_in_kernel(i);
        }
        r.map_err(|e| e.to_string())?;
        self.guests[i].learned = (!learned.is_empty()).then(|| learned.into_boxed_slice());
        Ok(())
    }

    fn run_timers(&mut self) {
        if !self.tally.is_empty() && StdInstant::now() >= self.next_tally {
            self.publish_tally();
        }
        let now = self.now();
        if self.surrogate.poll_at().is_some_and(|at| at <= now) {
            let mut sink = WorkerSink {
                socket: &self.socket,
                guests: &mut self.guests,
                bridge_metrics: &mut self.bridge_metrics,
                woken: &mut self.woken,
                tally: &mut self.tally,
            };
            self.surrogate.handle_timeout(now, &mut sink);
        }
        if StdInstant::now() >= self.next_sample {
            self.next_sample = StdInstant::now() + self.interval;
            self.sample_all();
        }
        if self.in_kernel > 0 && StdInstant::now() >= self.next_kernel_check {
            self.next_kernel_check = StdInstant::now() + KERNEL_CHECK_EVERY;
            let total = self.kernel.as_ref().and_then(|k| k.total().ok());
            if total.is_some_and(|t| t != self.kernel_total) {
                self.count_all_kernel_answers();
            }
        }
        if let (Some(ports), Some(k)) = (self.every_port.as_mut(), self.kernel.as_mut()) {
            ports.tick(&mut self.netlink, k);
            self.bridge_metrics.in_kernel_ports = k.port_count() as u64;
        }
        self.read_wake_sets();
        self.wake_overslept();
        self.open_windows();
    }

    /// Counts down to the start of guest `i`'s next awake window, if it has windows.
    fn watch_windows(&mut self, i: usize) {
        let g = &self.guests[i];
        if let Some(ahead) = g.timing.awake.as_deref().and_then(Awake::next_start) {
            self.window_due
                .push(StdInstant::now() + ahead, i, g.backend.ticket());
        }
    }

    /// Wakes the sleeping guests one of whose awake windows has begun, and counts down to
    /// their next.
    fn open_windows(&mut self) {
        for (i, ticket) in self.window_due.take_due(StdInstant::now()) {
            let Some(g) = self.guests.get_mut(i) else {
                continue;
            };
            if g.backend.ticket() != ticket {
                continue;
            }
            let Some(awake) = g.timing.awake.as_ref() else {
                continue;
            };
            // Early (a clock put back, a change of summer time): it is only counted again.
            if awake.contains_now() && self.surrogate.phase(g.id) == Some(Phase::Asleep) {
                info!(guest = %g.name, "an awake window begins; waking the guest");
                self.wake_guest(i, WakeCause::Window);
            }
            self.watch_windows(i);
        }
    }

    /// Counts guest `i`'s `max_sleep` from when it fell asleep.
    fn watch_max_sleep(&mut self, i: usize) {
        let g = &self.guests[i];
        if let (Some(max), Some(since)) = (g.timing.max_sleep, g.asleep_since) {
            self.max_sleep_due.push(since + max, i, g.backend.ticket());
        }
    }

    /// Wakes the sleeping guests whose `max_sleep` is up.
    fn wake_overslept(&mut self) {
        let now = StdInstant::now();
        for (i, ticket) in self.max_sleep_due.take_due(now) {
            let Some(g) = self.guests.get_mut(i) else {
                continue;
            };
            if g.backend.ticket() != ticket || self.surrogate.phase(g.id) != Some(Phase::Asleep) {
                continue;
            }
            let (Some(max), Some(since)) = (g.timing.max_sleep, g.asleep_since) else {
                continue;
            };
            if since + max > now {
                // Given a longer max_sleep since.
                self.max_sleep_due.push(since + max, i, ticket);
                continue;
            }
            info!(guest = %g.name, max_sleep_s = max.as_secs_f64(), "asleep for its max_sleep; waking it");
            self.wake_guest(i, WakeCause::MaxSleep);
        }
    }

    /// A reload's timing for each guest: a sleeping guest given a `max_sleep` (or another)
    /// has it counted from when it fell asleep; new awake windows are counted down to.
    /// Nobody is woken here.
    fn update_timing(&mut self, mut timing: BTreeMap<String, Timing>) {
        for i in self.guests.indices() {
            let g = &mut self.guests[i];
            let Some(new) = timing.remove(&g.name) else {
                continue;
            };
            if g.timing == new {
                continue;
            }
            info!(guest = %g.name, max_sleep_s = new.max_sleep.map(|d| d.as_secs_f64()), windows = new.awake.is_some(), "new max_sleep or awake windows");
            let (old_max, old_awake) = (g.timing.max_sleep, g.timing.awake.clone());
            g.timing = new;
            if g.timing.max_sleep != old_max && self.surrogate.phase(g.id) == Some(Phase::Asleep) {
                self.max_sleep_due.forget(i);
                self.watch_max_sleep(i);
            }
            if self.guests[i].timing.awake != old_awake {
                self.window_due.forget(i);
                self.watch_windows(i);
            }
        }
    }

    /// Asks the backends of guests resumed from a page-out [`WAKE_SET_AFTER`] ago what the
    /// wake touched (a guest asleep again by then, or gone, is left out).
    fn read_wake_sets(&mut self) {
        for (i, ticket) in self.wake_sets_due.take_due(StdInstant::now()) {
            let Some(g) = self.guests.get_mut(i) else {
                continue;
            };
            if g.backend.ticket() != ticket || self.surrogate.phase(g.id) != Some(Phase::Awake) {
                continue;
            }
            // Not sent: the next wake reads back a page at a time, as without.
            let _ = g.backend.send(Op::ReadWakeSet);
        }
    }

    /// Hands the backends' results to the sequences (and the samples to idleness).
    fn run_done(&mut self) {
        while let Ok((i, ticket, done)) = self.done.try_recv() {
            if self.guests.get_mut(i).map(|g| g.backend.ticket()) != Some(ticket) {
                // A call of a guest that has left (a sample, most likely) ended after it.
                debug!(slot = i, "a backend answered for a guest that is gone");
                continue;
            }
            match done {
                Done::Suspended(r, found) => {
                    let ok = r.is_ok();
                    let g = &mut self.guests[i];
                    g.failure = r.err().map(|e| chain(&e));
                    if ok {
                        g.page_out.found = Some(found);
                    }
                    self.outcome(i, Outcome::Suspended { ok });
                }
                Done::PagedOut(found, r) => self.paged_out(i, found, r),
                Done::WroteBack(found, r) => {
                    let g = &mut self.guests[i];
                    if let (Err(e), PageOutFound::Ready(_)) = (&r, &found) {
                        debug!(guest = %g.name, error = %e, "cannot write the idle guest's RAM back");
                    }
                    g.page_out.found = Some(found);
                }
                Done::Resumed(r, took) => self.resumed(i, r.map_err(|e| chain(&e)), took),
                Done::Hooked(hook, r) => self.hooked(i, hook, r),
                Done::ClockSet(r) => {
                    let g = &self.guests[i];
                    match r {
                        None => {}
                        Some(Ok(behind)) => {
                            info!(guest = %g.name, behind_ms = behind, "set the guest's clock to the host's");
                        }
                        Some(Err(why)) => {
                            warn!(guest = %g.name, error = %why, "cannot set the guest's clock");
                            self.bus.publish(Event::BackendError {
                                guest: g.name.clone(),
                                operation: "set-clock".into(),
                                message: why,
                            });
                        }
                    }
                }
                Done::WakeSetRead(r) => {
                    let g = &self.guests[i];
                    match r {
                        Ok(bytes) => {
                            debug!(guest = %g.name, kib = bytes >> 10, "read what the guest's wake touched, to read back before its next")
                        }
                        Err(e) => {
                            debug!(guest = %g.name, error = %e, "no set of what the guest's wake touched; its next wake reads a page at a time")
                        }
                    }
                }
                Done::Sampled(cpu, memory, found) => {
                    if let Some(found) = found {
                        self.guests[i].page_out.found = Some(found);
                    }
                    self.sampled(i, cpu, memory);
                }
                Done::Inspected(r) => {
                    if r.is_none() {
                        // What came before the stop may still wait in the socket.
                        self.drain_watch(i);
                    }
                    let now = self.now();
                    let g = &mut self.guests[i];
                    let busy = match r {
                        Some(Ok(work)) if !work.is_idle() => {
                            g.failure = Some(work.to_string());
                            Some(true)
                        }
                        Some(Ok(_)) => Some(false),
                        Some(Err(e)) => {
                            warn!(guest = %g.name, error = %chain(&e), "cannot tell whether the stopped guest still has work; taking it as asleep");
                            None
                        }
                        None if g.watch.is_some() => {
                            let n = g.unanswered.count(now, ANSWER_WINDOW);
                            if n > 0 {
                                g.failure =
                                    Some(format!("{n} request(s) taken in and not answered"));
                            }
                            Some(n > 0)
                        }
                        None => None,
                    };
                    self.outcome(i, Outcome::Inspected { busy });
                }
            }
            self.run_actions();
        }
    }

    /// Reports an action's outcome for guest `i` to its sequence.
    fn outcome(&mut self, i: usize, outcome: Outcome) {
        let now = self.now();
        if let Err(e) = self.surrogate.done(self.guests[i].id, outcome, now) {
            error!(guest = %self.guests[i].name, error = %e, "an outcome the sequence did not expect");
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.guests.position(name)
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Sleep { guest, reply } => match self.find(&guest) {
                Some(i) => self.sleep(i, Some(reply)),
                None => {
                    let _ = reply.send(Err(Refusal::NoSuchGuest));
                }
            },
            Command::Wake { guest, reply } => match self.find(&guest) {
                Some(i) => self.wake_command(i, reply),
                None => {
                    let _ = reply.send(Err(Refusal::NoSuchGuest));
                }
            },
            Command::Pin {
                guest,
                pinned,
                reply,
            } => {
                let now = self.now();
                let result = match self.find(&guest).map(|i| &mut self.guests[i]) {
                    None => Err(Refusal::NoSuchGuest),
                    Some(g) => match g.idle.as_mut() {
                        None => Err(Refusal::NothingToPin),
                        Some(idle) if pinned => {
                            idle.pin();
                            info!(guest = %guest, "pinned awake");
                            Ok(Answer::Pinned)
                        }
                        Some(idle) => {
                            idle.unpin(now);
                            info!(guest = %guest, "unpinned");
                            Ok(Answer::Unpinned)
                        }
                    },
                };
                let _ = reply.send(result);
            }
            Command::Status { reply } => {
                self.count_all_kernel_answers();
                let _ = reply.send(self.status());
            }
            Command::Metrics { reply } => {
                self.count_all_kernel_answers();
                let now = self.now();
                let mut guests = Vec::with_capacity(self.guests.count());
                for g in self.guests.iter_mut() {
                    let state = self.surrogate.state(g.id).unwrap_or(GuestState::Awake);
                    g.metrics.set_state(api_state(state));
                    let depth = self.surrogate.queue_depth(g.id).map_or(0, |d| d.0);
                    g.metrics.set_queue_depth(depth);
                    g.metrics.set_memory(
                        g.memory_freed_now(state).unwrap_or(0),
                        g.memory_back(state).unwrap_or(0),
                        if state == GuestState::Sleeping {
                            g.resume_cost()
                        } else {
                            0
                        },
                    );
                    g.metrics.count_asleep_until(now);
                    guests.push((g.order, g.name.clone(), g.metrics.clone()));
                }
                let _ = reply.send((guests, self.bridge_metrics.clone()));
            }
            Command::Retire { guests, reply } => self.retire(&guests, reply),
            #[cfg(feature = "libvirt")]
            Command::Release {
                guest,
                reason,
                saved,
                reply,
            } => {
                let released = match self.find(&guest) {
                    Some(i)
                        if saved
                            && self.surrogate.phase(self.guests[i].id) != Some(Phase::Awake) =>
                    {
                        false
                    }
                    Some(i) => {
                        self.remove(i, &reason);
                        self.bus.publish(Event::Released {
                            guest: guest.clone(),
                            reason,
                        });
                        true
                    }
                    None => false,
                };
                let _ = reply.send(released);
            }
            Command::Adopt { guests, reply } => {
                let mut failed = Vec::new();
                for setup in guests {
                    let name = setup.config.name.clone();
                    if self.find(&name).is_some() {
                        failed.push((
                            name,
                            "a guest of that name is still being removed (it has not woken yet); \
                             reload again once it has"
                                .to_owned(),
                        ));
                        continue;
                    }
                    match self.adopt(setup) {
                        Ok(()) => info!(guest = %name, "added by a reload"),
                        Err(e) => {
                            error!(guest = %name, error = %chain(&e), "cannot add the guest");
                            failed.push((name, chain(&e)));
                        }
                    }
                }
                let _ = reply.send(failed);
            }
            Command::Update {
                orders,
                idle,
                timing,
                policies,
                interval,
                reply,
            } => {
                let failed = self.apply_policies(policies);
                self.update(&orders, idle, interval);
                self.update_timing(timing);
                let _ = reply.send(failed);
            }
            Command::Shutdown { .. } => unreachable!("handled by the run loop"),
        }
    }

    /// Marks guests for removal and wakes those asleep; [`Self::settle_retiring`] removes each
    /// once it is awake.
    fn retire(&mut self, names: &[String], reply: Sender<()>) {
        for name in names {
            let Some(i) = self.find(name) else { continue };
            self.guests[i].retiring = true;
            if self.wake_guest(i, WakeCause::Requested) == Asked::Started {
                info!(guest = %name, "waking the guest before it leaves the config");
            }
        }
        self.run_actions();
        self.retiring.push(reply);
        self.settle_retiring();
    }

    /// Removes the retiring guests that are awake with nothing under way, and tells the
    /// reloads waiting once none is left.
    fn settle_retiring(&mut self) {
        if self.retiring.is_empty() {
            return;
        }
        for i in self.guests.indices() {
            let g = &self.guests[i];
            if g.retiring
                && g.sampling.is_none()
                && self.surrogate.phase(g.id) == Some(Phase::Awake)
            {
                self.remove(i, "removed by a reload");
            }
        }
        if !self.guests.iter().any(|g| g.retiring) {
            for r in self.retiring.drain(..) {
                let _ = r.send(());
            }
        }
    }

    /// Forgets guest `i` (awake, unless its domain is gone): its registration, its queue,
    /// its watches, its journal entry, its backend; `why`, for the log.
    fn remove(&mut self, i: usize, why: &str) {
        self.after_journal.retain(|(k, _, _)| *k != i);
        self.journal(i, None);
        if let Some(g) = self.guests.get_mut(i) {
            if self.surrogate.phase(g.id) != Some(Phase::Awake) {
                // Its MAC was claimed for the surrogate's port: the bridge learns its port
                // anew from its next frame (its domain's new tap, once it starts again).
                let (mac, vid) = (g.mac, g.fdb_vid());
                let _ = self.netlink.fdb_delete(self.port_ifindex, mac, vid);
            }
            self.answer_in_user_space(i);
        }
        let Some(mut g) = self.guests.take(i) else {
            return;
        };
        close_watches(&self.poll, &self.closer, &mut g);
        if let Some(bytes) = g.resuming {
            self.pool.resume_gate().leave(bytes);
        }
        let queued = self
            .surrogate
            .remove_guest(g.id)
            .map_or(0, |(_, queue)| queue.len());
        g.answer_sleep(&Err(Refusal::Removed));
        g.answer_wake(&Err(Refusal::Removed));
        info!(guest = %g.name, queued_frames_dropped = queued, "{why}; vmnap no longer manages it");
        // Dropping it drops its backend calls not started; the backend goes after the last.
    }

    /// Gives guests the policies of their new entries (whose identity is unchanged) in
    /// place; returns those that could not take them.
    fn apply_policies(&mut self, policies: BTreeMap<String, GuestConfig>) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        for (name, config) in policies {
            let Some(i) = self.find(&name) else {
                failed.push((name, "it is not on this bridge".to_owned()));
                continue;
            };
            // The kernel's entries follow the spec: taken back under the old, given again
            // under the new.
            let in_kernel = self.guests[i].in_kernel.is_some();
            self.answer_in_user_space(i);
            let g = &mut self.guests[i];
            let mut spec = spec_of(&config, g.mac);
            // What it learned stays learned.
            for a in g.learned.iter().flat_map(|l| l.iter()) {
                match a {
                    IpAddr::V4(a) => spec.ipv4.push(*a),
                    IpAddr::V6(a) => spec.ipv6.push(*a),
                }
            }
            let updated = self.surrogate.update_guest(g.id, spec);
            if in_kernel {
                self.answer_in_kernel(i);
            }
            if let Err(e) = updated {
                failed.push((name, e.to_string()));
                continue;
            }
            let g = &mut self.guests[i];
            info!(guest = %name, "new policy applied in place");
            let hooks = hooks_of(&config);
            g.hooks = has_hooks(hooks.as_deref());
            g.backend.set_hooks(hooks);
            g.keep_ports = config.keep_awake_while_connected.clone();
            let ports: Vec<u16> = config.health.iter().map(|h| h.port).collect();
            if ports != g.health_ports {
                // The watch's filter names the health-check ports: open it again.
                g.health_ports = ports;
                if g.watch.is_some() {
                    close_watches(&self.poll, &self.closer, g);
                    open_watch(&self.poll, g, i, true);
                }
            }
        }
        failed
    }

    /// Applies a reload's new positions, idleness policies and sampling interval.
    fn update(
        &mut self,
        orders: &BTreeMap<String, usize>,
        mut idle: BTreeMap<String, Option<IdlePolicy>>,
        interval: Duration,
    ) {
        let now = self.now();
        for i in self.guests.indices() {
            let g = &mut self.guests[i];
            if let Some(order) = orders.get(&g.name) {
                g.order = *order;
            }
            let Some(policy) = idle.remove(&g.name) else {
                continue;
            };
            if g.idle.as_ref().map(IdleTracker::policy) == policy.as_ref() {
                continue;
            }
            info!(guest = %g.name, idle_after_s = policy.as_ref().map(|p| p.idle_after.as_secs_f64()), "new idleness policy");
            let pinned = g.idle.as_ref().is_some_and(IdleTracker::is_pinned);
            let old = g.idle.take();
            g.idle = policy.map(|p| {
                let mut t = IdleTracker::new(p);
                if pinned {
                    t.pin();
                }
                t.reset(now);
                // min_awake still counts from the guest's last wake.
                if let Some(old) = &old {
                    t.awake_since_as(old);
                }
                t
            });
        }
        if interval != self.interval {
            self.interval = interval;
            self.next_sample = self.next_sample.min(StdInstant::now() + interval);
        }
    }

    fn wake_command(&mut self, i: usize, reply: Reply) {
        match self.wake_guest(i, WakeCause::Requested) {
            Asked::Already(_) => {
                let _ = reply.send(Ok(Answer::AlreadyAwake));
            }
            // Answered when it is awake.
            Asked::Started | Asked::UnderWay => self.guests[i].wake_waiters.push(reply),
        }
    }

    /// Asks guest `i`'s sequence for a wake, and counts one that starts.
    fn wake_guest(&mut self, i: usize, cause: WakeCause) -> Asked {
        let now = self.now();
        let g = &mut self.guests[i];
        let asked = self
            .surrogate
            .wake(g.id, cause, now)
            .unwrap_or(Asked::Already(GuestState::Awake));
        if asked == Asked::Started {
            g.metrics.on_wake_started(cause);
            g.wake_frame = None;
            g.wake_cause = None;
        }
        // An operator's wake does not wait for a frame's to be let through.
        if let Some(at) = self.backing_off.iter().position(|(_, b, _)| *b == i) {
            let (_, _, cause) = self.backing_off.swap_remove(at);
            info!(guest = %self.guests[i].name, "woken on request: its wait for backing off ends");
            self.guests[i].judge.begin(cause);
            self.resume_admitted(i);
        }
        asked
    }

    fn status(&self) -> Vec<(usize, GuestStatus, History)> {
        let now = self.now();
        self.guests
            .iter()
            .map(|g| {
                let phase = self.surrogate.phase(g.id).unwrap_or(Phase::Awake);
                // The backend is still stopping it: not asleep yet, as far as users go.
                let state = match phase {
                    Phase::Suspending => GuestState::FallingAsleep,
                    p => p.state(),
                };
                let depth = self.surrogate.queue_depth(g.id).map_or(0, |d| d.0);
                let status = GuestStatus {
                    name: g.name.clone(),
                    state: api_state(state),
                    bridge: self.bridge.clone(),
                    backend: g.backend.kind().to_owned(),
                    wakes: g.metrics.total_wakes(),
                    wake_failures: g.metrics.wake_failures(),
                    answered_frames: g.metrics.total_answered(),
                    queued_frames: g.metrics.queued(),
                    queue_depth: depth as u64,
                    replayed_frames: g.metrics.replayed(),
                    dropped_frames: g.metrics.total_dropped(),
                    last_wake_ms: g.last_wake.map(|w| w.0.as_secs_f64() * 1000.0),
                    last_wake_cause: g.last_wake.map(|w| w.1.as_str().to_owned()),
                    asleep_for_s: g.asleep_since.map(|t| t.elapsed().as_secs_f64()),
                    idle_for_s: (state == GuestState::Awake)
                        .then(|| g.idle.as_ref().map(|t| t.idle_for(now).as_secs_f64()))
                        .flatten(),
                    pinned: g.idle.as_ref().is_some_and(IdleTracker::is_pinned),
                    memory_freed_bytes: g.memory_freed_now(state),
                    memory_back_bytes: g.memory_back(state),
                    page_out: g.page_out.describe(),
                    cpu_hours_freed: g.cpu_hours_freed(),
                    learned_addresses: g
                        .learned
                        .iter()
                        .flat_map(|l| l.iter())
                        .map(ToString::to_string)
                        .collect(),
                };
                let history = History {
                    timeline: g.timeline.iter().copied().collect(),
                    last_wakes: g.last_wakes.iter().cloned().collect(),
                    known_since_ms: g.known_since_ms,
                };
                (g.order, status, history)
            })
            .collect()
    }

    /// Asks every awake guest that sleeps on its own for a sample: its port's counters now,
    /// its CPU time from its backend.
    fn sample_all(&mut self) {
        self.count_capture_drops();
        if self.stopping {
            return;
        }
        let now = self.now();
        for i in self.guests.indices() {
            let g = &self.guests[i];
            if g.sampling.is_some() || self.surrogate.phase(g.id) != Some(Phase::Awake) {
                continue;
            }
            let ifindex = g.ifindex;
            match self.netlink.link_stats(ifindex) {
                Ok(stats) => {
                    let g = &mut self.guests[i];
                    if g.backend.send(Op::Sample) {
                        g.sampling = Some((now, stats));
                    }
                }
                Err(e) => {
                    warn!(guest = %g.name, error = %chain(&e), "cannot read the guest's port counters")
                }
            }
        }
    }

    /// What a page-out of guest `i`'s RAM did.
    fn paged_out(&mut self, i: usize, found: Option<PageOutFound>, r: Result<PagedOut, String>) {
        let id = self.guests[i].id;
        let asleep = self.surrogate.phase(id) == Some(Phase::Asleep);
        let g = &mut self.guests[i];
        if let Some(found) = found {
            // Asked for a guest found asleep at start: a sleep that keeps the memory has
            // nothing to page out, and nothing to say.
            let none = found == PageOutFound::None;
            g.page_out.found = Some(found);
            if none {
                return;
            }
        }
        match r {
            Ok(p) => {
                let mib = |b: u64| b as f64 / f64::from(1 << 20);
                info!(
                    guest = %g.name,
                    freed_mib = mib(p.before.saturating_sub(p.after)),
                    left_mib = mib(p.after),
                    written_mib = mib(p.written),
                    write_back_s = p.write_back.as_secs_f64(),
                    took_s = p.took.as_secs_f64(),
                    cancelled = p.cancelled,
                    "the guest's RAM paged out"
                );
                g.page_out.this_sleep = Some(Box::new(p));
                self.bus.publish(Event::PagedOut {
                    guest: g.name.clone(),
                    freed_bytes: p.before.saturating_sub(p.after),
                    written_bytes: p.written,
                    took_ms: p.took.as_secs_f64() * 1000.0,
                    complete: !p.cancelled,
                });
            }
            Err(e) if !asleep => {
                debug!(guest = %g.name, error = %e, "the guest woke before its RAM was paged out");
            }
            Err(e) => {
                warn!(guest = %g.name, error = %e, "cannot page the guest's RAM out; it sleeps paused");
                g.failure = Some(format!("cannot page its RAM out: {e}"));
            }
        }
    }

    fn sampled(&mut self, i: usize, cpu: Option<Duration>, memory: Option<u64>) {
        let now = self.now();
        let id = self.guests[i].id;
        let awake = self.surrogate.phase(id) == Some(Phase::Awake);
        let g = &mut self.guests[i];
        let Some((at, stats)) = g.sampling.take() else {
            return;
        };
        if awake {
            if memory.is_some() {
                g.memory_released = memory;
                if g.page_out.woke_from {
                    g.page_out.back = memory;
                }
            }
            if let Some(cpu) = cpu {
                let now = StdInstant::now();
                if let Some((then, before)) = g.cpu_sample {
                    let wall = now.duration_since(then).as_secs_f64();
                    if cpu >= before && wall > 0.0 {
                        g.cpu_rate = Some((cpu - before).as_secs_f64() / wall);
                    }
                }
                g.cpu_sample = Some((now, cpu));
            }
        }
        let Some(idle) = g.idle.as_mut() else { return };
        if !awake {
            return;
        }

        // The host's side of the port: what it sends is what the guest receives.
        let sample = Sample {
            at,
            cpu_time: cpu.unwrap_or_default(),
            rx_frames: stats.tx_packets,
            tx_frames: stats.rx_packets,
            open_connections: self
                .surrogate
                .connections(g.id)
                .map(|c| c.open_ports(now, &g.keep_ports))
                .unwrap_or_default(),
        };
        // In an awake window, idleness does not put it to sleep.
        idle.hold(
            g.timing.awake.as_deref().is_some_and(Awake::contains_now),
            at,
        );
        match idle.sample(sample) {
            Decision::Sleep { figures } => {
                info!(guest = %g.name, %figures, "idle; putting the guest to sleep");
                self.sleep(i, None);
            }
            Decision::Busy { reason } => debug!(guest = %g.name, %reason, "busy"),
            Decision::Idle { idle_for, sleep_in } => {
                debug!(
                    guest = %g.name,
                    idle_for_s = idle_for.as_secs_f64(),
                    sleep_in_s = sleep_in.as_secs_f64(),
                    "idle"
                );
                // Idle for half its time already: its RAM is written back now, not waited
                // for, so that the page-out at its sleep has less to write.
                // A guest whose backend was not asked yet is asked now, once.
                let may = g.page_out.ready() || g.page_out.found.is_none();
                if idle_for >= sleep_in
                    && may
                    && g.page_out
                        .last_write_back
                        .is_none_or(|t| t.elapsed() >= WRITE_BACK_EVERY)
                    && g.backend.send(Op::WriteBack)
                {
                    g.page_out.last_write_back = Some(StdInstant::now());
                }
            }
            Decision::AlreadyDecided { .. } => {}
        }
    }

    /// Asks guest `i`'s sequence to put it to sleep; `reply` (if an operator asked) is
    /// answered once it is asleep, or did not fall asleep.
    fn sleep(&mut self, i: usize, reply: Option<Reply>) {
        if self.guests[i].retiring {
            if let Some(r) = reply {
                let _ = r.send(Err(Refusal::BeingRemoved));
            }
            return;
        }
        // An awake guest with a before_sleep hook sleeps once the hook says yes.
        let awake = self.surrogate.phase(self.guests[i].id) == Some(Phase::Awake);
        let g = &mut self.guests[i];
        if awake && g.hooks.0 {
            match g.vetting.as_mut() {
                Some(waiting) => waiting.extend(reply),
                None if g.backend.send(Op::BeforeSleep) => {
                    g.vetting = Some(reply.into_iter().collect());
                }
                None => {
                    if let Some(r) = reply {
                        let _ = r.send(Err(Refusal::DidNotSleep(
                            "no backend thread to run its before_sleep hook".into(),
                        )));
                    }
                }
            }
            return;
        }
        self.sleep_now(i, reply.into_iter().collect());
    }

    /// [`Self::sleep`], its hook (if any) passed.
    fn sleep_now(&mut self, i: usize, replies: Vec<Reply>) {
        let name = self.guests[i].name.clone();
        let now = self.now();
        match self.surrogate.sleep(self.guests[i].id, now) {
            Ok(Asked::Started | Asked::UnderWay) => self.guests[i].sleep_waiters.extend(replies),
            Ok(Asked::Already(state)) => {
                for r in replies {
                    let _ = r.send(Ok(Answer::Already(state)));
                }
            }
            Err(e) => error!(guest = %name, error = %e, "cannot put the guest to sleep"),
        }
    }

    /// What guest `i`'s hook did.
    fn hooked(&mut self, i: usize, hook: Hook, result: Result<(), String>) {
        let name = self.guests[i].name.clone();
        match hook {
            Hook::BeforeSleep => {
                let replies = self.guests[i].vetting.take().unwrap_or_default();
                match result {
                    Ok(()) => self.sleep_now(i, replies),
                    Err(why) => {
                        info!(guest = %name, reason = %why, "the sleep was vetoed; the guest stays awake");
                        let now = self.now();
                        if let Some(idle) = self.guests[i].idle.as_mut() {
                            // Idle again from now: asked again idle_after later.
                            idle.reset(now);
                        }
                        for r in replies {
                            let _ = r.send(Err(Refusal::Vetoed(why.clone())));
                        }
                        self.bus.publish(Event::SleepVetoed {
                            guest: name,
                            reason: why,
                        });
                    }
                }
            }
            Hook::AfterWake => {
                if let Err(why) = result {
                    warn!(guest = %name, error = %why, "a hook after the guest's wake failed");
                    self.bus.publish(Event::BackendError {
                        guest: name,
                        operation: "after-wake".into(),
                        message: why,
                    });
                }
            }
        }
    }

    /// Carries out what the sequences ask for, in order, until they ask for nothing more.
    /// Each action is quick (a netlink call, frames sent, a backend call handed to the
    /// guest's thread); none waits for the guest.
    fn run_actions(&mut self) {
        while let Some(action) = self.surrogate.poll_action() {
            let i = action.guest().index();
            if self.guests.get_mut(i).is_none() {
                error!(slot = i, ?action, "an action for a guest that is gone");
                continue;
            }
            match action {
                Action::Claim(_) => self.claim(i),
                Action::Cut(_) => self.cut(i),
                Action::Suspend(_) => self.backend_call(i, Op::Suspend),
                Action::Inspect(_) => self.backend_call(i, Op::Inspect),
                Action::Resume(_) => {
                    self.answer_in_user_space(i);
                    self.resume(i);
                }
                Action::Restore(_, cut) => self.restore(i, cut),
                Action::Replay(_, frames) => self.replay(i, frames),
                Action::Probe(_, probe) => self.probe(i, &probe),
                Action::HandBack(_) => self.hand_back(i),
                Action::Notify(_, notice) => self.notice(i, notice),
            }
        }
    }

    /// Points the bridge's entry for guest `i`'s MAC at the surrogate's port: from here
    /// unicast for the guest comes to the surrogate and is held for it. What was captured
    /// until then is handled before the cut (those broadcasts reached the guest too).
    fn claim(&mut self, i: usize) {
        self.journal(i, Some((GuestState::FallingAsleep, None)));
        let (mac, vid) = (self.guests[i].mac, self.guests[i].fdb_vid());
        let ok = match self
            .netlink
            .fdb_replace(self.port_ifindex, mac, vid, FdbEntry::StaticSticky)
        {
            Ok(()) => true,
            Err(e) => {
                self.guests[i].failure = Some(format!("cannot claim its MAC: {}", chain(&e)));
                false
            }
        };
        self.drain_capture(usize::MAX);
        self.outcome(i, Outcome::Claimed { ok });
    }

    /// Takes guest `i`'s port off the bridge. Disabling the bridge port keeps the link up,
    /// so the guest sees no carrier change; a bridge running the kernel's STP refuses that,
    /// and then the link goes down instead.
    fn cut(&mut self, i: usize) {
        // Journal the cut about to be made first: a crash right after it must not leave a
        // journal that says the port was never cut. The cut waits for the file (the worker
        // goes on meanwhile).
        let n = self.journal(
            i,
            Some((GuestState::FallingAsleep, Some(Cut::PortDisabled))),
        );
        self.once_journaled(i, n, AfterJournal::Cut);
    }

    /// Takes `step` for guest `i` once journal `n` is on disk: now if it is.
    fn once_journaled(&mut self, i: usize, n: u64, step: AfterJournal) {
        if self.writer.as_ref().is_some_and(|w| w.written() < n) {
            self.after_journal.push((i, n, step));
        } else {
            self.take_step(i, step);
        }
    }

    fn take_step(&mut self, i: usize, step: AfterJournal) {
        match step {
            AfterJournal::Cut => self.cut_now(i),
            AfterJournal::AnswerAsleep => self.guests[i].answer_sleep(&Ok(Answer::Asleep)),
        }
    }

    /// Makes the cuts whose journal is on disk now, and tells those who put a guest to sleep
    /// that it is asleep once its journal is.
    fn run_journaled(&mut self) {
        let Some(written) = self.writer.as_ref().map(journal::Writer::written) else {
            return;
        };
        let (ready, waiting) = std::mem::take(&mut self.after_journal)
            .into_iter()
            .partition(|(_, n, _)| *n <= written);
        self.after_journal = waiting;
        for (i, _, step) in ready {
            if self.guests.get_mut(i).is_some() {
                self.take_step(i, step);
            }
        }
    }

    fn cut_now(&mut self, i: usize) {
        let (name, ifindex) = (self.guests[i].name.clone(), self.guests[i].ifindex);
        let cut = match self.netlink.set_port_state(ifindex, PortState::Disabled) {
            Ok(()) => Ok(Cut::PortDisabled),
            Err(e) => {
                debug!(guest = %name, error = %chain(&e), "cannot disable the bridge port; taking the link down");
                self.netlink
                    .set_link_up(ifindex, false)
                    .map(|()| Cut::LinkDown)
            }
        };
        let cut = match cut {
            Ok(cut) => {
                self.journal(i, Some((GuestState::FallingAsleep, Some(cut))));
                // The claim again, now that the guest's port learns nothing more: the bridge
                // learns source MACs without the lock a netlink change takes, so a frame the
                // guest sent while the claim was being written can leave the entry static
                // and sticky on the guest's own port (seen under load: the guest then slept
                // with every frame for it dropped at its cut port).
                let (mac, vid) = (self.guests[i].mac, self.guests[i].fdb_vid());
                if let Err(e) =
                    self.netlink
                        .fdb_replace(self.port_ifindex, mac, vid, FdbEntry::StaticSticky)
                {
                    warn!(guest = %name, error = %chain(&e), "cannot claim the guest's MAC again after the cut");
                }
                Some(cut)
            }
            Err(e) => {
                self.guests[i].failure = Some(format!("cannot cut its port: {}", chain(&e)));
                None
            }
        };
        self.outcome(i, Outcome::Cut(cut));
    }

    /// Hands the ARP and ping answers of guest `i`, asleep, to the kernel's responder: one
    /// entry for each of its IPv4 addresses. A guest on a VLAN (the responder keys by
    /// address alone), or one the responder cannot take, stays with the surrogate, which
    /// answers the same.
    fn answer_in_kernel(&mut self, i: usize) {
        let Some(kernel) = &self.kernel else { return };
        let g = &mut self.guests[i];
        let Some(spec) = self.surrogate.spec(g.id) else {
            return;
        };
        let answers = xdp::Answers {
            arp: spec.answers.arp,
            echo: spec.answers.icmp_echo,
        };
        if g.in_kernel.is_some() || spec.vlan != 0 || answers == xdp::Answers::default() {
            return;
        }
        for (n, ip) in spec.ipv4.iter().enumerate() {
            if let Err(e) = kernel.insert(*ip, vmnap_wire::Mac(g.mac), answers) {
                warn!(guest = %g.name, %ip, error = %chain(&e), "cannot answer for the guest in the kernel; the surrogate answers for it");
                for ip in &spec.ipv4[..n] {
                    let _ = kernel.remove(*ip);
                }
                return;
            }
        }
        g.in_kernel = Some(xdp::Answered::default());
        self.in_kernel += 1;
    }

    /// Takes the answers of guest `i` back from the kernel's responder, before it wakes,
    /// counting what the kernel answered for it.
    fn answer_in_user_space(&mut self, i: usize) {
        if self.guests[i].in_kernel.is_none() {
            return;
        }
        self.count_kernel_answers(i);
        let (Some(kernel), Some(spec)) = (&self.kernel, self.surrogate.spec(self.guests[i].id))
        else {
            return;
        };
        let g = &mut self.guests[i];
        for ip in &spec.ipv4 {
            if let Err(e) = kernel.remove(*ip) {
                error!(guest = %g.name, %ip, error = %chain(&e), "cannot take the guest's address back from the kernel's responder");
            }
        }
        g.in_kernel = None;
        self.in_kernel -= 1;
    }

    /// [`Self::count_kernel_answers`] for every guest the kernel answers for.
    fn count_all_kernel_answers(&mut self) {
        let Some(total) = self.kernel.as_ref().and_then(|k| k.total().ok()) else {
            return;
        };
        self.kernel_total = total;
        if self.in_kernel == 0 {
            return;
        }
        for i in self.guests.indices() {
            if self.guests[i].in_kernel.is_some() {
                self.count_kernel_answers(i);
            }
        }
    }

    /// Adds to guest `i`'s figures the answers the kernel gave for it since they were last
    /// counted.
    fn count_kernel_answers(&mut self, i: usize) {
        let (Some(kernel), Some(counted)) = (&self.kernel, self.guests[i].in_kernel) else {
            return;
        };
        let Some(spec) = self.surrogate.spec(self.guests[i].id) else {
            return;
        };
        let mut now = xdp::Answered::default();
        for ip in &spec.ipv4 {
            if let Ok(Some(a)) = kernel.answered(*ip) {
                now.arp += a.arp;
                now.echo += a.echo;
            }
        }
        let g = &mut self.guests[i];
        for (kind, n) in [
            (AnswerKind::Arp, now.arp.saturating_sub(counted.arp)),
            (AnswerKind::IcmpEcho, now.echo.saturating_sub(counted.echo)),
        ] {
            if n > 0 {
                g.metrics.add_answered(kind, n);
                *self
                    .tally
                    .entry((i, Tally::Answered(kind.as_str())))
                    .or_default() += n;
            }
        }
        g.in_kernel = Some(now);
    }

    /// Hands a suspend, an inspection or a resume to guest `i`'s backend on the pool; its result
    /// comes back through [`Self::run_done`].
    fn backend_call(&mut self, i: usize, op: Op) {
        if self.guests[i].backend.send(op) {
            return;
        }
        if op == Op::Resume {
            self.resume_ended(i);
        }
        self.guests[i].failure = Some("its backend has stopped".into());
        let outcome = match op {
            Op::Resume => Outcome::Resumed {
                ok: false,
                new_port: false,
            },
            Op::Inspect => Outcome::Inspected { busy: None },
            Op::Suspend | Op::Sample => Outcome::Suspended { ok: false },
            // Never sent through here.
            Op::PageOut
            | Op::WriteBack
            | Op::ReadWakeSet
            | Op::BeforeSleep
            | Op::AfterWake
            | Op::SetClock => return,
        };
        self.outcome(i, outcome);
    }

    /// Has guest `i` resumed once a place of the resume cap is free: now, or from its
    /// worker's line ([`Self::resume_waiting`]). Its traffic is held meanwhile.
    fn resume(&mut self, i: usize) {
        let now = StdInstant::now();
        let g = &mut self.guests[i];
        if let Some(n) = g.judge.judge(now) {
            info!(guest = %g.name, useless = n, "its last wake served no one");
        }
        let cause = g.wake_cause.take();
        if let Some(until) = g.judge.hold_until(cause).filter(|u| *u > now) {
            info!(guest = %g.name, useless = g.judge.useless(), wait_s = (until - now).as_secs_f64(), "its last wakes served no one: this wake waits, its frames held");
            self.backing_off.push((until, i, cause));
            self.surrogate
                .set_waits_for_admission(self.guests[i].id, true);
            return;
        }
        g.judge.begin(cause);
        self.resume_admitted(i);
    }

    /// Has guest `i` resumed once a place of the resume cap is free, and the host has
    /// the memory it brings back.
    fn resume_admitted(&mut self, i: usize) {
        if !(self.waiting.is_empty() && self.try_resume(i)) {
            debug!(guest = %self.guests[i].name, in_flight = self.pool.resume_gate().in_flight(), "waits for a place to resume");
            self.waiting.push_back(i);
        }
    }

    /// Takes a place of the resume cap for guest `i` and hands its resume to the pool;
    /// `false` if there is none, or not the memory for it (said once per wait).
    fn try_resume(&mut self, i: usize) -> bool {
        let g = &mut self.guests[i];
        let bytes = g.resume_cost();
        // A page-out under way stops at its next step.
        g.backend.cancel_page_out();
        let available = || vmnap_host::memory::available().unwrap_or(u64::MAX);
        match self.pool.resume_gate().try_enter(bytes, available) {
            GateEntry::In => {
                g.resuming = Some(bytes);
                g.waits_for_memory = false;
                // Watched from now: what the guest answers during its replay (a SYN-ACK to
                // the SYN that woke it) tells whether its wake serves anyone. A guest resumed
                // from a save gets a new port, watched once it is known.
                open_watch(&self.poll, g, i, false);
                let id = g.id;
                self.surrogate.set_waits_for_admission(id, false);
                self.backend_call(i, Op::Resume);
                true
            }
            GateEntry::Full => false,
            GateEntry::Memory => {
                let id = g.id;
                if !std::mem::replace(&mut g.waits_for_memory, true) {
                    warn!(guest = %g.name, needs_mib = bytes >> 20, "its resume waits: the host has not the memory it brings back beside [wake] resume_memory_reserve; its traffic is held");
                }
                self.surrogate.set_waits_for_admission(id, true);
                false
            }
        }
    }

    /// Resumes the guests waiting in line, as far as the cap has places, after those whose
    /// wait for backing off is over join the line.
    fn resume_waiting(&mut self) {
        if !self.backing_off.is_empty() {
            let now = StdInstant::now();
            let (due, later): (Vec<_>, Vec<_>) = self
                .backing_off
                .drain(..)
                .partition(|(until, ..)| *until <= now);
            self.backing_off = later;
            for (_, i, cause) in due {
                let Some(g) = self.guests.get_mut(i) else {
                    continue;
                };
                if self.surrogate.phase(g.id) == Some(Phase::Resuming) {
                    g.judge.begin(cause);
                    self.resume_admitted(i);
                }
            }
        }
        // In order; one that waits for memory lets the others by, one that finds the cap
        // full stops the line.
        let mut line = std::mem::take(&mut self.waiting);
        while let Some(i) = line.pop_front() {
            let guest = self.guests.get_mut(i).map(|g| (g.id, g.resuming));
            let waits = guest.is_some_and(|(id, resuming)| {
                resuming.is_none() && self.surrogate.phase(id) == Some(Phase::Resuming)
            });
            if !waits || self.try_resume(i) {
                continue;
            }
            self.waiting.push_back(i);
            if self.pool.resume_gate().in_flight() >= self.pool.resume_gate().max() {
                break;
            }
        }
        self.waiting.extend(line);
    }

    /// Guest `i`'s backend has answered its resume: its place goes back.
    fn resume_ended(&mut self, i: usize) {
        if let Some(g) = self.guests.get_mut(i) {
            if let Some(bytes) = g.resuming.take() {
                self.pool.resume_gate().leave(bytes);
            }
        }
    }

    /// The backend has resumed guest `i`, or failed to.
    fn resumed(&mut self, i: usize, result: Result<Option<String>, String>, took: Duration) {
        self.resume_ended(i);
        self.guests[i].resume_took = took;
        let name = self.guests[i].name.clone();
        let interface = match result {
            Ok(interface) => interface,
            Err(e) => {
                self.guests[i].failure = Some(e);
                let failed = Outcome::Resumed {
                    ok: false,
                    new_port: false,
                };
                return self.outcome(i, failed);
            }
        };
        let g = &mut self.guests[i];
        g.page_out.woke_from = g.page_out.this_sleep.is_some();
        if g.page_out.woke_from {
            // What its RAM holds from here on came back after the page-out.
            g.page_out.back = None;
            g.memory_released = None;
            let ticket = g.backend.ticket();
            self.wake_sets_due
                .push(StdInstant::now() + WAKE_SET_AFTER, i, ticket);
        }
        let mut new_port = false;
        if let Some(new) = interface.filter(|n| *n != self.guests[i].interface) {
            match self.netlink.link_index(&new) {
                Ok(ifindex) => {
                    info!(guest = %name, old = %self.guests[i].interface, new = %new, "the guest has a new port");
                    let g = &mut self.guests[i];
                    g.interface = new;
                    g.ifindex = ifindex;
                    if let Some(s) = g.sender.take() {
                        close(&self.closer, s);
                    }
                    // A new port joins the bridge forwarding: nothing to restore.
                    new_port = true;
                    close_watches(&self.poll, &self.closer, g);
                    if !open_watch(&self.poll, g, i, true) {
                        if let Some(c) = self.surrogate.connections_mut(g.id) {
                            c.trust_from(None);
                        }
                    }
                }
                Err(e) => {
                    error!(guest = %name, port = %new, error = %chain(&e), "cannot find the guest's new port")
                }
            }
        }
        self.outcome(i, Outcome::Resumed { ok: true, new_port });
    }

    /// Puts guest `i`'s port back on the bridge, undoing `cut`.
    fn restore(&mut self, i: usize, cut: Cut) {
        let ifindex = self.guests[i].ifindex;
        let restored = match cut {
            Cut::PortDisabled => self.netlink.set_port_state(ifindex, PortState::Forwarding),
            Cut::LinkDown => self.netlink.set_link_up(ifindex, true),
        };
        if let Err(e) = restored {
            error!(guest = %self.guests[i].name, error = %chain(&e), "cannot bring the guest's port back");
        }
        self.outcome(i, Outcome::Restored);
    }

    /// Sends held frames into guest `i`'s port, in order.
    fn replay(&mut self, i: usize, frames: VecDeque<QueuedFrame>) {
        let g = &mut self.guests[i];
        let n = frames.len();
        let mut sent = 0;
        g.sender();
        if let Some(sender) = g.sender.as_ref() {
            for frame in &frames {
                match sender.send(&frame.bytes, &frame.vnet) {
                    Ok(()) => sent += 1,
                    Err(e) => {
                        warn!(guest = %g.name, error = %chain(&e), "a held frame could not be replayed")
                    }
                }
            }
        }
        g.metrics.on_replayed(sent as u64, 0);
        self.replay_failed(i, n - sent);
    }

    /// Sends a probe into guest `i`'s port. An answer is seen by the core among the frames
    /// captured; a probe lost is one unanswered, and the core sends another.
    fn probe(&mut self, i: usize, probe: &[u8]) {
        let g = &mut self.guests[i];
        g.sender();
        if let Some(sender) = g.sender.as_ref() {
            if let Err(e) = sender.send(probe, &VirtioNetHdr::NONE) {
                debug!(guest = %g.name, error = %chain(&e), "cannot send a probe");
            }
        }
    }

    /// Points the bridge's entry for guest `i`'s MAC back at its port, then handles what
    /// reached the surrogate before the switch (it is relayed after what came earlier).
    fn hand_back(&mut self, i: usize) {
        let g = &self.guests[i];
        let (ifindex, mac, vid) = (g.ifindex, g.mac, g.fdb_vid());
        if let Err(e) = self
            .netlink
            .fdb_replace(ifindex, mac, vid, FdbEntry::Dynamic)
        {
            // The guest's first frame out teaches the bridge anyway; until then frames for it
            // keep coming here. Removing our entry makes the bridge flood them meanwhile.
            warn!(guest = %g.name, error = %chain(&e), "cannot point the bridge back at the guest; removing vmnap's entry");
            let _ = self.netlink.fdb_delete(self.port_ifindex, mac, vid);
        }
        self.drain_capture(usize::MAX);
        self.outcome(i, Outcome::HandedBack);
    }

    /// Tells whoever needs to know what happened to guest `i`: its journal, its waiters, the
    /// log, the events and its figures.
    fn notice(&mut self, i: usize, notice: Notice) {
        let name = self.guests[i].name.clone();
        match notice {
            Notice::FellAsleep => {
                let cut = self.surrogate.cut(self.guests[i].id);
                self.guests[i].asleep_since_ms = Some(unix_ms());
                let n = self.journal(i, Some((GuestState::Sleeping, cut)));
                let now = self.now();
                let g = &mut self.guests[i];
                g.metrics.on_asleep(now);
                g.asleep_since = Some(StdInstant::now());
                g.mark(true);
                if let Some(w) = g.watch.take() {
                    close_watch(&self.poll, &self.closer, w);
                }
                self.answer_in_kernel(i);
                self.watch_max_sleep(i);
                info!(guest = %name, "guest is asleep");
                let g = &mut self.guests[i];
                g.page_out.this_sleep = None;
                if g.page_out.ready() && !g.backend.send(Op::PageOut) {
                    warn!(guest = %name, "no backend thread to page the guest's RAM out; it sleeps paused");
                }
                self.publish_tally();
                self.bus.publish(Event::FellAsleep {
                    guest: name.clone(),
                });
                // Those who asked hear it once the journal says so: a restart after a crash
                // then finds the guest asleep, as they were told.
                self.once_journaled(i, n, AfterJournal::AnswerAsleep);
            }
            Notice::WorkInFlight => {
                let g = &mut self.guests[i];
                let work = g.failure.take().unwrap_or_default();
                info!(guest = %name, %work, "stopped with work in flight; waking it again at once");
                g.metrics.on_wake_started(WakeCause::InFlight);
                g.wake_frame = None;
                g.answer_sleep(&Err(Refusal::WorkInFlight(work)));
            }
            Notice::SleepFailed => {
                let why = self.guests[i].failure.take().unwrap_or_default();
                error!(guest = %name, error = %why, "the guest did not fall asleep; handing its network back");
                self.publish_tally();
                self.bus.publish(Event::BackendError {
                    guest: name.clone(),
                    operation: "suspend".into(),
                    message: why.clone(),
                });
                // Its waiters are told once its network is back (`awake`).
                self.guests[i].undone = Some(Refusal::DidNotSleep(why));
            }
            Notice::SleepCancelled => {
                info!(guest = %name, "woken before it was stopped; handing its network back");
                self.guests[i].undone = Some(Refusal::WokenFirst);
            }
            Notice::WakeFailed { tries, retry_in } => {
                self.publish_tally();
                let g = &mut self.guests[i];
                let e = g.failure.take().unwrap_or_default();
                g.metrics.on_wake_failed();
                let retry_in_ms = retry_in.as_millis() as u64;
                error!(guest = %name, error = %e, tries, retry_in_ms, "wake failed; standing in again");
                self.bus.publish(Event::BackendError {
                    guest: name.clone(),
                    operation: "resume".into(),
                    message: format!("{e} (try {tries}; the next in {retry_in_ms} ms)"),
                });
                self.guests[i].answer_wake(&Err(Refusal::DidNotWake(e)));
            }
            Notice::ProbesUnanswered => {
                warn!(guest = %name, "the guest answered no probe; switching the bridge back anyway")
            }
            Notice::NoQuietMoment => warn!(
                guest = %name,
                wait_ms = vmnap_core::sequence::QUIET_WAIT.as_millis() as u64,
                "no quiet moment to hand the guest's MAC back in; switching under traffic"
            ),
            Notice::Awake { wake } => self.awake(i, wake),
        }
    }

    /// Guest `i` owns its address again, after a wake (`Some`) or a sleep that failed or was
    /// cancelled (`None`).
    fn awake(&mut self, i: usize, wake: Option<WakeReport>) {
        self.publish_tally();
        // The wake is over when the guest owns its address again: before the journal's write
        // (and its fsync) that only records it.
        self.journal(i, None);
        let now = self.now();
        let g = &mut self.guests[i];
        let name = g.name.clone();
        if let Some(s) = g.sender.take() {
            close(&self.closer, s);
        }
        match wake {
            Some(w) => {
                let took_ms = w.took.as_secs_f64() * 1000.0;
                info!(
                    guest = %name,
                    cause = w.cause.as_str(),
                    replayed = w.replayed,
                    took_ms,
                    handed_back_ms = w.handed_back_after.as_secs_f64() * 1000.0,
                    "guest is awake"
                );
                g.last_wake = Some((w.took, w.cause));
                g.judge.woke(StdInstant::now());
                if let (Some(since), Some(rate)) = (g.asleep_since, g.cpu_rate) {
                    g.cpu_saved += since.elapsed().mul_f64(rate);
                }
                // A guest started again from a save counts its CPU time from zero.
                g.cpu_sample = None;
                if g.last_wakes.len() == LAST_WAKES {
                    g.last_wakes.pop_front();
                }
                g.last_wakes.push_back(WakeRecord {
                    at_ms: unix_ms(),
                    cause: w.cause.as_str().to_owned(),
                    frame: g.wake_frame.clone(),
                    took_ms,
                });
                g.metrics.on_woke(w.cause, w.took, g.resume_took);
                self.bus.publish(Event::Woke {
                    guest: name.clone(),
                    cause: w.cause.as_str().to_owned(),
                    frame: g.wake_frame.take(),
                    took_ms: Some(took_ms),
                });
            }
            None => {
                info!(guest = %name, "the guest's network is handed back; it kept running");
                g.wake_frame = None;
                g.failure = None;
                let why = g.undone.take().unwrap_or(Refusal::KeptRunning);
                g.answer_sleep(&Err(why));
            }
        }
        let g = &mut self.guests[i];
        g.mark(false);
        g.metrics.on_awake(now);
        g.asleep_since = None;
        g.asleep_since_ms = None;
        // What asked for this wake is spent: a later resume the core asks for by itself
        // (work found in flight after a stop) must not be taken for a frame's.
        g.wake_cause = None;
        if let Some(idle) = g.idle.as_mut() {
            idle.reset(now);
        }
        if g.hooks.1 && !g.backend.send(Op::AfterWake) {
            warn!(guest = %g.name, "no backend thread to run the guest's after_wake hook");
        }
        // Its clock stood still while it slept (or went back to a save's): set it, after
        // the wake, which does not wait for it.
        if !g.backend.send(Op::SetClock) {
            warn!(guest = %g.name, "no backend thread to set the guest's clock");
        }
        open_watch(&self.poll, g, i, true);
        g.answer_wake(&Ok(Answer::Awake));
    }

    /// Counts and reports `lost` held frames of guest `i` that could not be replayed.
    fn replay_failed(&mut self, i: usize, lost: usize) {
        if lost == 0 {
            return;
        }
        let g = &mut self.guests[i];
        g.metrics.on_replayed(0, lost as u64);
        self.bus.publish(Event::Dropped {
            guest: g.name.clone(),
            reason: Some(crate::metrics::REPLAY_FAILED.to_owned()),
            frames: lost as u64,
        });
    }

    /// Stops the worker: with `wake`, wakes every guest first, standing in and relaying
    /// meanwhile, for at most [`SHUTDOWN_WAIT`] (a resume that fails is not tried again).
    fn shutdown(&mut self, wake: bool, events: &mut Events) {
        self.stopping = true;
        if wake {
            for i in self.guests.indices() {
                self.wake_guest(i, WakeCause::Requested);
            }
            self.run_actions();
            let deadline = StdInstant::now() + SHUTDOWN_WAIT;
            let settled = |p: Option<Phase>| {
                matches!(
                    p,
                    None | Some(Phase::Awake | Phase::Asleep | Phase::Retrying)
                )
            };
            while StdInstant::now() < deadline
                && !self
                    .guests
                    .iter()
                    .all(|g| settled(self.surrogate.phase(g.id)))
            {
                if !self.turn(events, Some(Duration::from_millis(100))) {
                    break;
                }
            }
        }
        let still_asleep: Vec<&str> = self
            .guests
            .iter()
            .filter(|g| self.surrogate.state(g.id) != Some(GuestState::Awake))
            .map(|g| g.name.as_str())
            .collect();
        if !still_asleep.is_empty() {
            warn!(guests = ?still_asleep, "leaving guests asleep");
        }
        if let Err(e) = self.netlink.delete_link(self.port_ifindex) {
            warn!(error = %chain(&e), "cannot remove the surrogate's port");
        }
        // The guests' sockets, closed side by side rather than one after another as the
        // guests are dropped (or as the process exits): 1,000 guests' took 12 s in turn.
        for i in self.guests.indices() {
            let g = &mut self.guests[i];
            close_watches(&self.poll, &self.closer, g);
            if let Some(s) = g.sender.take() {
                close(&self.closer, s);
            }
        }
        let (done, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.closer, done));
        if let Some(t) = self.closer_thread.take() {
            let _ = t.join();
        }
        info!(
            ignored = self.bridge_metrics.ignored_frames,
            malformed = self.bridge_metrics.malformed_frames,
            "surrogate stopped"
        );
    }
}

/// Settles the journals in `dir` of bridges that no worker runs on (a daemon that died, or
/// was stopped without waking, with guests asleep on a bridge the config no longer has):
/// hands the guests' ports back to their bridges, removes the surrogate's port left there,
/// and says which guests may still be stopped, since without their config vmnap cannot
/// wake them.
pub(crate) fn settle_orphan_journals(dir: &std::path::Path, running: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(bridge) = name
            .strip_prefix("journal-")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        if running.contains(&bridge) {
            continue;
        }
        let journal = match Journal::load(&path) {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %chain(&e), "cannot read the journal of a bridge vmnap no longer runs on");
                continue;
            }
        };
        let Ok(mut netlink) = Netlink::open() else {
            return;
        };
        for (guest, e) in &journal.guests {
            if let Ok(ifindex) = netlink.link_index(&e.interface) {
                let _ = netlink.set_port_state(ifindex, PortState::Forwarding);
                let _ = netlink.set_link_up(ifindex, true);
            }
            warn!(%guest, %bridge, port = %e.interface, state = %e.state, "a guest left asleep on a bridge no longer configured: its port is handed back, but vmnap no longer knows how to wake it; resume it by hand if it is still stopped");
        }
        if let Ok(bridge_ix) = netlink.link_index(bridge) {
            let (port, _) = port_names(bridge_ix);
            if let Ok(ix) = netlink.link_index(&port) {
                let _ = netlink.delete_link(ix);
            }
        }
        if let Err(e) = std::fs::remove_file(&path) {
            warn!(path = %path.display(), error = %e, "cannot remove a settled journal");
        }
    }
}

/// Stops watching `w` (one of a guest's passive captures) and closes it.
fn close_watch(poll: &Poll, closer: &Sender<PacketSocket>, w: PacketSocket) {
    let _ = poll
        .registry()
        .deregister(&mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&w)));
    close(closer, w);
}

/// Closes a guest's passive watch.
fn close_watches(poll: &Poll, closer: &Sender<PacketSocket>, g: &mut Guest) {
    if let Some(w) = g.watch.take() {
        close_watch(poll, closer, w);
    }
}

/// Closes a packet socket on the closing thread ([`start_closer`]).
fn close(closer: &Sender<PacketSocket>, socket: PacketSocket) {
    // If the thread is gone, the socket is closed here.
    let _ = closer.send(socket);
}

/// Sockets closed side by side at most, in a burst.
const CLOSERS: usize = 32;

/// Starts the thread that closes the worker's packet sockets. Closing one waits for a grace
/// period of the network stack (`synchronize_net`: 5 to 20 ms measured here), which would
/// stall the worker: 100 guests waking together stood 1.2 s in line for it. Waits that
/// overlap share a grace period, so a burst is closed by up to [`CLOSERS`] threads at once,
/// started for it: 1,000 sockets took 12 s one after another and 0.8 s on 32 threads
/// here. The thread ends once the worker has let go of its end.
fn start_closer() -> std::io::Result<(Sender<PacketSocket>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<PacketSocket>();
    let thread = std::thread::Builder::new()
        .name("vmnap-closer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut burst = vec![first];
                burst.extend(rx.try_iter());
                close_all(burst);
            }
        })?;
    Ok((tx, thread))
}

/// Closes `sockets`, up to [`CLOSERS`] at a time.
fn close_all(mut sockets: Vec<PacketSocket>) {
    if sockets.len() < 2 {
        return;
    }
    let share = sockets.len().div_ceil(CLOSERS);
    std::thread::scope(|scope| {
        while !sockets.is_empty() {
            let part: Vec<PacketSocket> = sockets.drain(..share.min(sockets.len())).collect();
            // A thread that cannot start leaves its share to be closed here, in turn.
            let _ = std::thread::Builder::new()
                .name("vmnap-closer".into())
                .spawn_scoped(scope, move || drop(part));
        }
    });
}

/// Opens guest `i`'s watch ([`Guest::watch`]) if it is not open. Returns whether it is
/// open: without it, the guest's pings and health checks count as activity, its keep-awake
/// ports keep nothing awake, its unknown connections wake it, and its sleeps cannot tell
/// whether they strand a request (unless its backend can look inside it).
///
/// A failure is logged as a warning if `loud`, else only for debugging.
fn open_watch(poll: &Poll, g: &mut Guest, i: usize, loud: bool) -> bool {
    if g.watch.is_some() {
        return true;
    }
    let filter = vmnap_host::bpf::either(
        &vmnap_host::bpf::either(
            &vmnap_host::bpf::answerable_to_guest(&g.health_ports),
            &vmnap_host::bpf::tcp_flow_events(),
        ),
        &vmnap_host::bpf::guest_addresses(),
    );
    match open_capture(poll, &g.interface, &filter, FIRST_WATCH + i) {
        Ok(w) => {
            g.watch = Some(w);
            true
        }
        Err(e) if loud => {
            warn!(guest = %g.name, error = %e, "cannot watch the guest's port: pings and health checks count as activity, keep_awake_while_connected has no effect, and segments of connections it does not have wake it");
            false
        }
        Err(e) => {
            debug!(guest = %g.name, error = %e, "cannot watch the guest's port yet");
            false
        }
    }
}

/// A passive capture of `interface` through `filter`, registered with `poll` as `token`.
fn open_capture(
    poll: &Poll,
    interface: &str,
    filter: &[vmnap_host::bpf::SockFilter],
    token: usize,
) -> Result<PacketSocket, String> {
    let w = PacketSocket::open_capture(interface).map_err(|e| chain(&e))?;
    w.attach_filter(filter).map_err(|e| e.to_string())?;
    poll.registry()
        .register(
            &mut SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&w)),
            Token(token),
            Interest::READABLE,
        )
        .map_err(|e| e.to_string())?;
    Ok(w)
}

/// The MAC of the surrogate's own end of its port on the bridge with `ifindex`: locally
/// administered, `02:76:6e` ("vn") and the index.
fn surrogate_mac(ifindex: u32) -> [u8; 6] {
    let i = ifindex.to_be_bytes();
    [0x02, 0x76, 0x6e, i[1], i[2], i[3]]
}

/// The core's view of a configured guest.
pub(crate) fn spec_of(c: &GuestConfig, mac: [u8; 6]) -> GuestSpec {
    GuestSpec {
        name: c.name.clone(),
        mac: vmnap_core::MacAddr(mac),
        vlan: c.vlan,
        ipv4: c.ipv4.clone(),
        ipv6: c.ipv6.clone(),
        wake_on: c.wake_on.clone(),
        answers: c.answer,
        health: c.health.clone(),
        multicast: c.multicast,
        limits: vmnap_core::QueueLimits {
            frames: c.queue_frames,
            bytes: c.queue_bytes,
            multicast_frames: c.multicast_frames,
        },
    }
}

/// A guest's hooks, from its entry (`None`: it has none).
fn hooks_of(config: &GuestConfig) -> Option<Box<Hooks>> {
    config.hooks.as_ref().map(|h| {
        Box::new(Hooks {
            guest: config.name.clone(),
            config: (**h).clone(),
        })
    })
}

/// Whether there is a `before_sleep` hook, and an `after_wake` one.
fn has_hooks(hooks: Option<&Hooks>) -> (bool, bool) {
    hooks.map_or((false, false), |h| {
        (h.config.runs_before_sleep(), h.config.runs_after_wake())
    })
}
