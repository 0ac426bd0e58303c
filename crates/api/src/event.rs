//! What happens to the guests, as `GET /v1/events` streams it: one [`Record`] per line.

use serde::{Deserialize, Serialize};

/// Something that happened to a guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The guest is asleep: its backend stopped it and the surrogate stands in.
    FellAsleep {
        /// The guest.
        guest: String,
    },
    /// The guest is awake again and owns its address.
    Woke {
        /// The guest.
        guest: String,
        /// What woke it (`tcp-syn`, `udp`, `tcp-data`, `resolution`, `requested`,
        /// `in-flight`, `max-sleep`, `awake-window`).
        cause: String,
        /// The frame that woke it, summarized for people (like `TCP SYN to port 80`), when
        /// known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame: Option<String>,
        /// From the frame (or request) that caused the wake to the guest's first answer
        /// after the replay, in milliseconds, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        took_ms: Option<f64>,
    },
    /// The sleeping guest's RAM was taken out of host memory (page-out), or as much of it
    /// as was done before a wake stopped it.
    PagedOut {
        /// The guest.
        guest: String,
        /// Host memory it freed, in bytes.
        freed_bytes: u64,
        /// Changed RAM it wrote back first, in bytes.
        written_bytes: u64,
        /// How long it took, in milliseconds.
        took_ms: f64,
        /// It went to the end (`false`: a wake stopped it).
        complete: bool,
    },
    /// The guest's `before_sleep` hook vetoed a sleep: it stays awake (idleness asks again
    /// later).
    SleepVetoed {
        /// The guest.
        guest: String,
        /// What the hook said (its exit and the last line of its standard error), or that it
        /// timed out.
        reason: String,
    },
    /// vmnap took the guest on while it ran, without a reload: its libvirt domain, which
    /// the config covers, was started outside vmnap (or libvirt was back after a loss).
    Adopted {
        /// The guest.
        guest: String,
        /// Why (`its domain started`, ...).
        reason: String,
    },
    /// vmnap let the guest go, without waking it: its libvirt domain was shut down,
    /// destroyed, migrated away or undefined outside vmnap. It is taken on again if its
    /// domain starts on this host.
    Released {
        /// The guest.
        guest: String,
        /// Why (`its domain was shut down outside vmnap`, ...).
        reason: String,
    },
    /// The guest's backend failed to stop or resume it, or its `after_wake` hook failed.
    BackendError {
        /// The guest.
        guest: String,
        /// `suspend`, `resume`, `after-wake` or `set-clock` (the woken guest's clock, through
        /// its guest agent).
        operation: String,
        /// What went wrong.
        message: String,
    },
    /// The surrogate answered frames in the guest's name (one event per burst).
    Answered {
        /// The guest.
        guest: String,
        /// What answered: `arp`, `ndp`, `icmp-echo`, `icmpv6-echo`, `tcp-reset`, `tcp-echo`,
        /// `udp-echo`, `tcp-keepalive`, `health-check`.
        protocol: String,
        /// How many.
        frames: u64,
    },
    /// Frames for the guest were held, to be replayed when it wakes (one event per burst).
    Queued {
        /// The guest.
        guest: String,
        /// How many.
        frames: u64,
    },
    /// Frames for the guest were dropped.
    Dropped {
        /// The guest.
        guest: String,
        /// Why (a `DropReason` label like `queue-full`), when known; `None` when only the
        /// count is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// How many.
        frames: u64,
    },
}

impl Event {
    /// The guest it is about.
    pub fn guest(&self) -> &str {
        match self {
            Event::FellAsleep { guest }
            | Event::PagedOut { guest, .. }
            | Event::Woke { guest, .. }
            | Event::BackendError { guest, .. }
            | Event::SleepVetoed { guest, .. }
            | Event::Adopted { guest, .. }
            | Event::Released { guest, .. }
            | Event::Answered { guest, .. }
            | Event::Queued { guest, .. }
            | Event::Dropped { guest, .. } => guest,
        }
    }
}

/// An event as the bus hands it out: numbered and timed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Increases by one with each event published on this bus, from 1.
    pub seq: u64,
    /// When it was published, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}
