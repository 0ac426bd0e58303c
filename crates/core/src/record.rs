//! A [`Sink`] that keeps everything it is told, for the core's tests, its fuzz targets and
//! any tool that drives a [`crate::Surrogate`] without a network.

use crate::guest::GuestId;
use crate::surrogate::Sink;
use crate::verdict::{Verdict, WakeCause};

/// Everything a surrogate sent and decided, in order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recorder {
    /// The frames it transmitted.
    pub sent: Vec<Vec<u8>>,
    /// Its verdicts, with the guest each was for.
    pub verdicts: Vec<(Option<GuestId>, Verdict)>,
    /// The wakes frames asked for.
    pub wakes: Vec<(GuestId, WakeCause)>,
}

impl Sink for Recorder {
    fn transmit(&mut self, frame: &[u8]) {
        self.sent.push(frame.to_vec());
    }

    fn verdict(&mut self, guest: Option<GuestId>, verdict: Verdict) {
        self.verdicts.push((guest, verdict));
    }

    fn wake(&mut self, guest: GuestId, cause: WakeCause, _frame: &[u8]) {
        self.wakes.push((guest, cause));
    }
}

impl Recorder {
    /// What it holds, leaving it empty.
    pub fn take(&mut self) -> Recorder {
        std::mem::take(self)
    }
}
