//! A guest's place in the sleep and wake sequence.

use core::fmt;

/// Where a guest is between awake and asleep, as far as its frames are concerned: the
/// surrogate's handling of a frame for the guest follows from this alone. It follows from
/// the guest's [`Phase`](crate::Phase), which says where the sequence is in more detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestState {
    /// The guest runs and owns its address; the surrogate ignores its traffic.
    Awake,
    /// The surrogate has begun to take over: unicast frames that reach it are held for the
    /// guest, broadcasts are the guest's (its port is still up), nothing is answered.
    FallingAsleep,
    /// The guest is stopped and cut off; the surrogate answers, queues and wakes.
    Sleeping,
    /// The guest is being resumed. Until its port is back everything is queued and nothing
    /// answered; after, only unicast frames still reaching the surrogate are held, for relay.
    Waking {
        /// The guest's port is up again: broadcasts reach the guest directly.
        port_up: bool,
    },
}

impl GuestState {
    /// The name `vmnap status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestState::Awake => "awake",
            GuestState::FallingAsleep => "falling-asleep",
            GuestState::Sleeping => "sleeping",
            GuestState::Waking { .. } => "waking",
        }
    }
}

impl fmt::Display for GuestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::GuestState::{self, *};

    const ALL: [GuestState; 5] = [
        Awake,
        FallingAsleep,
        Sleeping,
        Waking { port_up: false },
        Waking { port_up: true },
    ];

    #[test]
    fn states_have_the_names_status_shows() {
        let names: Vec<_> = ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["awake", "falling-asleep", "sleeping", "waking", "waking"]
        );
    }
}
