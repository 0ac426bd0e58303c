//! Wakes that serve nothing back off: a guest woken again and again by frames it then
//! refuses (SYNs to a port nothing listens on, segments of connections it no longer has,
//! a scanner's probes) is woken later and later, so that a stranger cannot keep it from
//! sleeping, or keep the host reading it back from save.
//!
//! A wake for a TCP SYN or TCP data is judged by what the guest sends in the
//! [`SERVE_WINDOW`] after it is awake: a SYN-ACK or data serves someone; nothing, or only
//! RSTs, serves no one. Other wakes are not judged (the daemon does not follow UDP). From
//! the [`FREE_USELESS`]th useless wake in a row, the next wake for a frame waits
//! [`FIRST_WAIT`], doubling with each further one up to [`MAX_WAIT`], counted from the last
//! useless wake; its frames are held meanwhile (a client's SYN is sent again and gets
//! through). A wake that serves clears the count. Wakes asked through the API never wait.

use std::time::{Duration, Instant};

use vmnap_core::WakeCause;

/// How long after a wake the guest has to answer.
pub(crate) const SERVE_WINDOW: Duration = Duration::from_secs(3);
/// Useless wakes in a row that cost nothing.
pub(crate) const FREE_USELESS: u32 = 2;
/// The wait after [`FREE_USELESS`] useless wakes.
pub(crate) const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);

/// One guest's record of its recent wakes.
#[derive(Debug, Clone, Default)]
pub(crate) struct WakeJudge {
    /// Useless wakes in a row.
    useless: u32,
    /// When the last of them was judged.
    last_useless: Option<Instant>,
    /// A wake is being judged (from its resume: the guest may answer during its replay).
    judging: bool,
    /// Until when the guest may answer, once it is awake.
    deadline: Option<Instant>,
}

impl WakeJudge {
    /// The backend is resuming the guest for `cause` (`None`: asked through the API).
    pub(crate) fn begin(&mut self, cause: Option<WakeCause>) {
        self.judging = matches!(
            cause,
            Some(WakeCause::TcpSyn { .. } | WakeCause::TcpData { .. })
        );
        self.deadline = None;
    }

    /// The guest is awake, at `now`.
    pub(crate) fn woke(&mut self, now: Instant) {
        if self.judging {
            self.deadline = Some(now + SERVE_WINDOW);
        }
    }

    /// The guest has sent a SYN-ACK or data: its wake served someone.
    pub(crate) fn served(&mut self) {
        self.judging = false;
        self.deadline = None;
        self.useless = 0;
        self.last_useless = None;
    }

    /// Judges a wake whose window has passed at `now`: returns the useless wakes in a row
    /// if it was one.
    pub(crate) fn judge(&mut self, now: Instant) -> Option<u32> {
        let until = self
            .deadline
            .filter(|until| self.judging && *until <= now)?;
        self.judging = false;
        self.deadline = None;
        self.useless = self.useless.saturating_add(1);
        self.last_useless = Some(until);
        Some(self.useless)
    }

    /// Until when a wake for `cause` (`None`: asked through the API) waits, if it does.
    pub(crate) fn hold_until(&self, cause: Option<WakeCause>) -> Option<Instant> {
        let framed = matches!(
            cause,
            Some(
                WakeCause::TcpSyn { .. }
                    | WakeCause::TcpData { .. }
                    | WakeCause::Udp { .. }
                    | WakeCause::Resolution
            )
        );
        let over = self.useless.checked_sub(FREE_USELESS).filter(|_| framed)?;
        let wait = FIRST_WAIT
            .checked_mul(1 << over.min(16))
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT);
        Some(self.last_useless? + wait)
    }

    /// Useless wakes in a row.
    pub(crate) fn useless(&self) -> u32 {
        self.useless
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: Option<WakeCause> = Some(WakeCause::TcpSyn { port: 80 });

    fn useless_wakes(j: &mut WakeJudge, t0: Instant, n: u32) -> Instant {
        let mut at = t0;
        for _ in 0..n {
            j.begin(SYN);
            j.woke(at);
            at += SERVE_WINDOW;
            j.judge(at).expect("judged useless");
        }
        at
    }

    #[test]
    fn waits_begin_after_the_free_useless_wakes_and_double_up_to_the_cap() {
        let t0 = Instant::now();
        let mut j = WakeJudge::default();
        let at = useless_wakes(&mut j, t0, FREE_USELESS - 1);
        assert_eq!(
            j.hold_until(SYN),
            None,
            "{} useless wakes are free",
            FREE_USELESS - 1
        );
        let at = useless_wakes(&mut j, at, 1);
        assert_eq!(j.hold_until(SYN), Some(at + FIRST_WAIT));
        let at = useless_wakes(&mut j, at, 1);
        assert_eq!(j.hold_until(SYN), Some(at + 2 * FIRST_WAIT));
        let at = useless_wakes(&mut j, at, 30);
        assert_eq!(j.hold_until(SYN), Some(at + MAX_WAIT));
        assert_eq!(j.hold_until(None), None, "an operator's wake never waits");
    }

    #[test]
    fn a_wake_that_serves_clears_the_record_and_others_are_not_judged() {
        let t0 = Instant::now();
        let mut j = WakeJudge::default();
        let at = useless_wakes(&mut j, t0, 5);
        j.begin(Some(WakeCause::TcpData { port: 22 }));
        j.served(); // during the replay, before the guest is called awake
        j.woke(at);
        assert_eq!(j.judge(at + SERVE_WINDOW), None);
        assert_eq!((j.useless(), j.hold_until(SYN)), (0, None));
        j.begin(Some(WakeCause::Udp { port: 53 }));
        j.woke(at);
        assert_eq!(j.judge(at + SERVE_WINDOW), None, "UDP is not followed");
        j.begin(SYN);
        assert_eq!(j.judge(at + MAX_WAIT), None, "not awake yet");
        j.woke(at);
        assert_eq!(
            j.judge(at + Duration::from_secs(1)),
            None,
            "still in its window"
        );
    }
}
