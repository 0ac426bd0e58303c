//! The cap on guests resuming at once, across every bridge's worker (`[wake] max_resuming`).
//!
//! A worker takes a place before it asks a backend to resume a guest, and gives it back when
//! the backend answers. A wake that finds no place waits in its worker's line, its guest's
//! traffic held for it as for any wake; when a place is given back, every worker is woken to
//! try its line again. So a storm of wakes (hundreds of guests at once, from save, each
//! reading its memory back) runs at most `max_resuming` resumes at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use mio::Waker;
use tracing::warn;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct ResumeGate {
    max: usize,
    in_flight: AtomicUsize,
    /// The most ever in flight at once.
    most: AtomicUsize,
    /// The workers, to wake when a place is given back (those that have stopped drop out).
    workers: Mutex<Vec<Weak<Waker>>>,
}

impl ResumeGate {
    /// A gate of `max` places (at least one).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(ResumeGate {
            max: max.max(1),
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
        })
    }

    /// Has `waker` woken whenever a place is given back, for as long as it lives.
    pub(crate) fn register(&self, waker: &Arc<Waker>) {
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(waker));
    }

    /// Takes a place, if one is free.
    pub(crate) fn try_enter(&self) -> bool {
        let entered = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match entered {
            Ok(before) => {
                self.most.fetch_max(before + 1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives a place back, and wakes the workers so that their waiting wakes may take it.
    pub(crate) fn leave(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "a place given back that was not taken");
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        workers.retain(|w| match w.upgrade() {
            Some(w) => {
                if let Err(e) = w.wake() {
                    warn!(error = %e, "cannot wake a worker for its waiting resumes");
                }
                true
            }
            None => false,
        });
    }

    /// Resumes under way now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The most resumes ever under way at once.
    pub(crate) fn most(&self) -> usize {
        self.most.load(Ordering::Relaxed)
    }

    /// The cap.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_taken_up_to_the_cap_and_given_back() {
        let gate = ResumeGate::new(2);
        assert!(gate.try_enter());
        assert!(gate.try_enter());
        assert!(!gate.try_enter(), "past the cap");
        assert_eq!(gate.in_flight(), 2);
        gate.leave();
        assert!(gate.try_enter(), "a place given back is taken again");
        gate.leave();
        gate.leave();
        assert_eq!((gate.in_flight(), gate.most(), gate.max()), (0, 2, 2));
    }

    #[test]
    fn places_are_never_over_taken_by_threads_racing_for_them() {
        let gate = ResumeGate::new(3);
        let over = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if gate.try_enter() {
                            if gate.in_flight() > 3 {
                                over.store(true, Ordering::Relaxed);
                            }
                            gate.leave();
                        }
                    }
                });
            }
        });
        assert!(!over.load(Ordering::Relaxed));
        assert!(gate.most() <= 3);
        assert_eq!(gate.in_flight(), 0);
    }
}
