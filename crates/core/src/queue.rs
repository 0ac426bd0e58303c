//! A sleeping guest's held frames, bounded in frames and bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vmnap_wire::vnet::VirtioNetHdr;

use crate::guest::QueueLimits;
use crate::time::Instant;

/// One held frame, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedFrame {
    /// When it reached the surrogate.
    pub at: Instant,
    /// Its offloads, to be handed back to the kernel on replay.
    pub vnet: VirtioNetHdr,
    /// The frame. Shared: one broadcast is held once for every guest it is for.
    pub bytes: Arc<[u8]>,
}

/// A limit on the bytes held by many queues together: every guest of every bridge of a
/// daemon shares one, so that thousands of guests' own limits cannot add up past what the
/// host can spare. Shared between threads; a frame counts for each guest it is held for.
#[derive(Debug)]
pub struct HoldBudget {
    limit: usize,
    held: AtomicUsize,
}

impl HoldBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(HoldBudget {
            limit,
            held: AtomicUsize::new(0),
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn take(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Why a frame was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The frame or byte limit is reached.
    Full,
    /// The broadcast and multicast share is used up.
    MulticastFull,
    /// The budget shared by every guest is used up.
    Budget,
}

/// A FIFO of frames with limits; past a limit the newest frame is refused.
#[derive(Debug)]
pub(crate) struct FrameQueue {
    frames: VecDeque<QueuedFrame>,
    bytes: usize,
    multicast: usize,
    budget: Arc<HoldBudget>,
}

impl Default for FrameQueue {
    fn default() -> Self {
        FrameQueue::new(HoldBudget::new(usize::MAX))
    }
}

impl Drop for FrameQueue {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

impl FrameQueue {
    /// An empty queue whose bytes count against `budget`.
    pub(crate) fn new(budget: Arc<HoldBudget>) -> Self {
        FrameQueue {
            frames: VecDeque::new(),
            bytes: 0,
            multicast: 0,
            budget,
        }
    }

    pub(crate) fn push(
        &mut self,
        limits: &QueueLimits,
        frame: QueuedFrame,
        multicast: bool,
    ) -> Result<(), Refused> {
        let len = frame.bytes.len();
        if self.frames.len() >= limits.frames || self.bytes + len > limits.bytes {
            return Err(if multicast {
                Refused::MulticastFull
            } else {
                Refused::Full
            });
        }
        if multicast && self.multicast >= limits.multicast_frames {
            return Err(Refused::MulticastFull);
        }
        if !self.budget.take(len) {
            return Err(Refused::Budget);
        }
        if multicast {
            self.multicast += 1;
        }
        self.bytes += len;
        self.frames.push_back(frame);
        Ok(())
    }

    /// Takes every held frame, oldest first, and empties the queue.
    pub(crate) fn take(&mut self) -> VecDeque<QueuedFrame> {
        self.budget.give_back(self.bytes);
        self.bytes = 0;
        self.multicast = 0;
        std::mem::take(&mut self.frames)
    }

    /// Takes up to `n` of the oldest frames, oldest first. The multicast share is counted
    /// again from zero only once the queue is empty (frames do not say whether they were
    /// multicast): until then it counts at most the frames left.
    pub(crate) fn take_oldest(&mut self, n: usize) -> VecDeque<QueuedFrame> {
        if n >= self.frames.len() {
            return self.take();
        }
        let rest = self.frames.split_off(n);
        let taken = std::mem::replace(&mut self.frames, rest);
        let bytes = taken.iter().map(|f| f.bytes.len()).sum::<usize>();
        self.bytes -= bytes;
        self.budget.give_back(bytes);
        self.multicast = self.multicast.min(self.frames.len());
        taken
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &QueuedFrame> + '_ {
        self.frames.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8, len: usize) -> QueuedFrame {
        QueuedFrame {
            at: Instant::from_micros(u64::from(n)),
            vnet: VirtioNetHdr::NONE,
            bytes: vec![n; len].into(),
        }
    }

    #[test]
    fn frames_come_out_in_arrival_order() {
        let mut q = FrameQueue::default();
        let limits = QueueLimits::default();
        for n in 0..10 {
            q.push(&limits, frame(n, 60), false).expect("room");
        }
        let order: Vec<u8> = q.take().iter().map(|f| f.bytes[0]).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn oldest_frames_come_out_first_in_runs() {
        let mut q = FrameQueue::default();
        let limits = QueueLimits::default();
        for n in 0..10 {
            q.push(&limits, frame(n, 60), false).expect("room");
        }
        let first: Vec<u8> = q.take_oldest(4).iter().map(|f| f.bytes[0]).collect();
        assert_eq!(first, [0, 1, 2, 3]);
        assert_eq!((q.len(), q.bytes()), (6, 360));
        let rest: Vec<u8> = q.take_oldest(64).iter().map(|f| f.bytes[0]).collect();
        assert_eq!(rest, [4, 5, 6, 7, 8, 9]);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn newest_frame_is_refused_past_the_frame_limit() {
        let mut q = FrameQueue::default();
        let limits = QueueLimits {
            frames: 2,
            ..QueueLimits::default()
        };
        q.push(&limits, frame(1, 60), false).expect("room");
        q.push(&limits, frame(2, 60), false).expect("room");
        assert_eq!(q.push(&limits, frame(3, 60), false), Err(Refused::Full));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn newest_frame_is_refused_past_the_byte_limit() {
        let mut q = FrameQueue::default();
        let limits = QueueLimits {
            bytes: 100,
            ..QueueLimits::default()
        };
        q.push(&limits, frame(1, 60), false).expect("room");
        assert_eq!(q.push(&limits, frame(2, 60), false), Err(Refused::Full));
        q.push(&limits, frame(3, 40), false).expect("exactly fits");
        assert_eq!(q.bytes(), 100);
    }

    #[test]
    fn multicast_has_its_own_share() {
        let mut q = FrameQueue::default();
        let limits = QueueLimits {
            multicast_frames: 1,
            ..QueueLimits::default()
        };
        q.push(&limits, frame(1, 60), true).expect("room");
        assert_eq!(
            q.push(&limits, frame(2, 60), true),
            Err(Refused::MulticastFull)
        );
        q.push(&limits, frame(3, 60), false)
            .expect("unicast still fits");
    }

    #[test]
    fn queues_sharing_a_budget_hold_no_more_than_it_together_and_give_it_back() {
        let budget = HoldBudget::new(100);
        let limits = QueueLimits::default();
        let mut a = FrameQueue::new(Arc::clone(&budget));
        let mut b = FrameQueue::new(Arc::clone(&budget));
        a.push(&limits, frame(1, 60), false)
            .expect("within the budget");
        assert_eq!(
            b.push(&limits, frame(2, 60), false),
            Err(Refused::Budget),
            "b's own limits have room, the budget has not"
        );
        b.push(&limits, frame(3, 40), false)
            .expect("exactly the budget");
        assert_eq!(budget.held(), 100);
        a.take_oldest(1);
        assert_eq!(budget.held(), 40, "a replayed run gives its bytes back");
        a.push(&limits, frame(4, 60), false).expect("room again");
        drop(a);
        assert_eq!(
            budget.held(),
            40,
            "a queue dropped with frames gives them back"
        );
        b.take();
        assert_eq!(budget.held(), 0);
    }
}
