//! The surrogate: everything vmnap decides about a sleeping guest's traffic, with no I/O.
//!
//! A [`Surrogate`] stands in for the guests registered on one bridge. The daemon feeds it
//! every frame that reaches the surrogate's port, with the time, and it answers what it can
//! answer the way the guest's own kernel would (ARP, NDP, ICMP and ICMPv6 echo, RST for a
//! closed port, TCP and UDP echo, TCP keepalive probes, HTTP health checks), queues the rest, and says when a
//! frame is worth waking the guest for. It also keeps each guest's place in the sleep and wake
//! sequence ([`GuestState`]), which decides whether a frame is the guest's, the surrogate's to
//! answer, or to be relayed.
//!
//! What it does not do: open sockets, read clocks, draw random numbers, or call a backend.
//! Time comes in as an [`Instant`]; frames come in as byte slices and go out through a
//! [`Sink`]; bad network input is never an error, only a [`Verdict::Dropped`] with a
//! [`DropReason`]. Counting those verdicts is the daemon's job.

#![forbid(unsafe_code)]

mod classify;
pub mod conntrack;
mod echo;
mod guest;
mod hash;
mod health;
pub mod idle;
pub mod inflight;
mod lifecycle;
mod queue;
mod record;
mod respond;
pub mod schedule;
pub mod sequence;
mod surrogate;
mod tcp;
mod time;
mod verdict;

/// A frame in one line, for logs and events.
pub use classify::describe;
pub use guest::{
    Answers, GuestId, GuestSpec, HealthCheck, MulticastPolicy, ParsePortRuleError, PortRule,
    QueueLimits, Transport,
};
pub use lifecycle::GuestState;
pub use queue::{HoldBudget, QueuedFrame};
pub use record::Recorder;
pub use sequence::{Action, Asked, Cut, Done, LifecycleError, Notice, Phase, WakeReport};
pub use surrogate::{AddGuestError, Sink, Surrogate, UpdateGuestError};
pub use time::Instant;
pub use verdict::{AnswerKind, DropReason, IgnoreReason, Verdict, WakeCause};
pub use vmnap_wire::vnet::VirtioNetHdr;
pub use vmnap_wire::MacAddr;

#[cfg(test)]
mod tests;
