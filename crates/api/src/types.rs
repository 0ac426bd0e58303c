//! The API's types: what the daemon answers and what it takes, as JSON.

use serde::{Deserialize, Serialize};

/// A request, as `vmnap`'s commands make them; [`crate::call`] sends it as the matching HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Put a guest to sleep (`POST /v1/guests/{name}/sleep`).
    Sleep {
        /// The guest's name.
        guest: String,
    },
    /// Wake a guest (`POST /v1/guests/{name}/wake`).
    Wake {
        /// The guest's name.
        guest: String,
    },
    /// Keep a guest awake however idle it is (`POST /v1/guests/{name}/pin`).
    Pin {
        /// The guest's name.
        guest: String,
    },
    /// Let a pinned guest sleep when idle again (`POST /v1/guests/{name}/unpin`).
    Unpin {
        /// The guest's name.
        guest: String,
    },
    /// Every guest's state and counters (`GET /v1/guests`).
    Status,
}

/// The daemon's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// Done; what happened, for people.
    Done {
        /// E.g. `web1 is asleep`.
        message: String,
    },
    /// Every guest.
    Status {
        /// One entry per guest, in config order.
        guests: Vec<GuestStatus>,
    },
    /// Refused or failed.
    Error {
        /// Why, naming the guest.
        message: String,
    },
}

/// Where a guest is in its sleep and wake, as the API shows it: the daemon's finer phases
/// (claiming, cutting, replaying ...) fold into these four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Running, and owning its addresses.
    Awake,
    /// Being put to sleep.
    FallingAsleep,
    /// Stopped; the surrogate answers for it.
    Sleeping,
    /// Being woken, or having its held frames replayed.
    Waking,
}

impl State {
    /// Its name on the wire and for people: `awake`, `falling-asleep`, `sleeping`, `waking`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Awake => "awake",
            State::FallingAsleep => "falling-asleep",
            State::Sleeping => "sleeping",
            State::Waking => "waking",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One guest as `vmnap status` shows it (`GET /v1/guests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestStatus {
    /// Its name.
    pub name: String,
    /// Where it is in its sleep and wake.
    pub state: State,
    /// The bridge it is on.
    pub bridge: String,
    /// Its backend.
    pub backend: String,
    /// Completed wakes.
    pub wakes: u64,
    /// Wakes that failed (each is retried).
    pub wake_failures: u64,
    /// Frames the surrogate answered in its name.
    pub answered_frames: u64,
    /// Frames held for it (all time).
    pub queued_frames: u64,
    /// Frames held for it now.
    pub queue_depth: u64,
    /// Frames replayed into it.
    pub replayed_frames: u64,
    /// Frames dropped by a policy.
    pub dropped_frames: u64,
    /// How long the last wake took (from the frame, or
    /// request, that caused it to the guest's first answer after the replay), in
    /// milliseconds.
    pub last_wake_ms: Option<f64>,
    /// What caused the last wake.
    pub last_wake_cause: Option<String>,
    /// Seconds it has been asleep, if it is.
    pub asleep_for_s: Option<f64>,
    /// Seconds it has been idle, if it is awake and sleeps on its own.
    pub idle_for_s: Option<f64>,
    /// Pinned awake (`vmnap pin`).
    pub pinned: bool,
    /// Host memory its sleep gives back now, in bytes: what a save or a page-out freed while
    /// it sleeps, 0 while it is awake or when its sleep keeps its memory (pause, freeze);
    /// `None`: not known yet (it is read with the guest's CPU time, every `[idle]
    /// interval`).
    pub memory_freed_bytes: Option<u64>,
    /// Since its last wake from a page-out: the host memory its RAM holds again, in bytes
    /// (what it touched, and what readahead brought with it), read every `[idle]
    /// interval` while it is awake. `None`: not woken from a page-out, or not read yet.
    #[serde(default)]
    pub memory_back_bytes: Option<u64>,
    /// For a guest in mode `pageout`, whether its RAM can be paged out (`ready`, with what
    /// makes a wake bring back more than it touches, or `unavailable` and why, and then it
    /// sleeps paused); `None` for other guests, or before its first sample.
    #[serde(default)]
    pub page_out: Option<String>,
    /// CPU-hours its sleep has saved since the daemon started: time asleep times the CPU it
    /// used while awake just before. An estimate; `None`: its CPU use is not known yet.
    pub cpu_hours_freed: Option<f64>,
    /// The addresses learned from its own traffic (ARP, neighbour discovery, DHCP) beside
    /// its configured ones, answered for while it sleeps; at most 4 of each family, the
    /// latest seen last.
    #[serde(default)]
    pub learned_addresses: Vec<String>,
}

/// A change of a guest's state: from `at_ms` on, asleep or not.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Asleep from then on (`false`: awake).
    pub asleep: bool,
}

/// One completed wake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WakeRecord {
    /// When it completed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What caused it (`tcp-syn`, `udp`, `requested`, ...).
    pub cause: String,
    /// The frame that caused it, described, when a frame did.
    pub frame: Option<String>,
    /// From the cause to the guest's first answer after the replay, in milliseconds.
    pub took_ms: f64,
}

/// A guest's policy, from its config (`GET /v1/guests/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// `cgroup`, `libvirt` or `qmp`.
    pub backend: String,
    /// `pause`, `pageout` or `save` (libvirt and QMP guests).
    pub mode: Option<String>,
    /// What wakes it, like `tcp/80`.
    pub wake_on: Vec<String>,
    /// What the surrogate answers for it: `arp`, `ndp`, `icmp-echo`, `tcp-echo`, `udp-echo`.
    pub answer: Vec<String>,
    /// Seconds it must stay idle before it is put to sleep; `None`: only when told.
    pub idle_after_s: Option<f64>,
    /// Seconds after a wake before idleness may put it back to sleep (0: none).
    #[serde(default)]
    pub min_awake_s: f64,
    /// Seconds it may sleep before it is woken for its upkeep; `None`: until something
    /// wakes it.
    #[serde(default)]
    pub max_sleep_s: Option<f64>,
    /// Its awake windows, like `Mon,Tue,Wed,Thu,Fri 08:00-18:00`.
    #[serde(default)]
    pub awake_during: Vec<String>,
    /// The time zone of its windows; `None`: the host's.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Ports whose open connections keep it awake.
    pub keep_awake_while_connected: Vec<String>,
    /// Its MAC address.
    pub mac: String,
    /// Its IPv4 addresses.
    pub ipv4: Vec<String>,
    /// Its IPv6 addresses.
    pub ipv6: Vec<String>,
    /// Its VLAN (0: untagged).
    pub vlan: u16,
    /// Frames held for it at most while it wakes.
    pub queue_frames: usize,
    /// Bytes held for it at most while it wakes.
    pub queue_bytes: usize,
    /// `queue` or `drop`: broadcast and multicast while it sleeps.
    pub multicast: String,
    /// TCP ports of its health checks.
    pub health_ports: Vec<u16>,
}

/// One guest in detail: its status and its policy (`GET /v1/guests/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestDetail {
    /// As in the list.
    #[serde(flatten)]
    pub status: GuestStatus,
    /// From its config.
    pub policy: Policy,
    /// Its changes of state over the last day, oldest first (the first may be older: the
    /// state the day began in).
    pub timeline: Vec<Transition>,
    /// Its last wakes, oldest first (at most [`LAST_WAKES`]).
    pub last_wakes: Vec<WakeRecord>,
}

/// How many wakes a guest's detail lists.
pub const LAST_WAKES: usize = 10;

/// The answer to `POST /v1/reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// What happened, for people.
    pub message: String,
    /// Guests added.
    pub added: Vec<String>,
    /// Guests no longer managed (woken first if they were asleep).
    pub removed: Vec<String>,
    /// Guests whose entry changed: given the new policy in place (asleep or awake) when only
    /// their policy changed, else woken if asleep and added again.
    pub changed: Vec<String>,
    /// How many guests were left as they were.
    pub unchanged: usize,
    /// Changed settings that only a restart applies, like `api.listen`.
    pub restart_needed: Vec<String>,
}

/// The daemon's log filter (`GET` and `PUT /v1/log`), in `tracing`'s `EnvFilter` syntax:
/// `debug`, or `info,vmnap_daemon=trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFilter {
    /// The filter.
    pub filter: String,
}

/// The answer to an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// What happened, for people, like `web1 is asleep`.
    pub message: String,
}

/// The body of every refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Why, for people.
    pub error: String,
}

/// The body of `POST /v1/guests/{name}/sleep` and `/wake` (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Answer when the sleep or wake is over (the default), or at once with 202.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

/// A route the server has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path, with `{name}` for a guest's name, as in the OpenAPI document.
    pub path: &'static str,
}

/// Every route the server has; requests are matched against these and nothing else.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/guests",
    },
    Route {
        method: "GET",
        path: "/v1/guests/{name}",
    },
    Route {
        method: "POST",
        path: "/v1/guests/{name}/sleep",
    },
    Route {
        method: "POST",
        path: "/v1/guests/{name}/wake",
    },
    Route {
        method: "POST",
        path: "/v1/guests/{name}/pin",
    },
    Route {
        method: "POST",
        path: "/v1/guests/{name}/unpin",
    },
    Route {
        method: "POST",
        path: "/v1/reload",
    },
    Route {
        method: "GET",
        path: "/v1/log",
    },
    Route {
        method: "PUT",
        path: "/v1/log",
    },
    Route {
        method: "GET",
        path: "/v1/events",
    },
    Route {
        method: "GET",
        path: "/metrics",
    },
    Route {
        method: "GET",
        path: "/",
    },
];
