//! The cap on guests resuming at once, across every bridge's worker (`[wake] max_resuming`).
//!
//! A worker takes a place before it asks a backend to resume a guest, and gives it back when
//! the backend answers. A wake that finds no place waits in its worker's line, its guest's
//! traffic held for it as for any wake; when a place is given back, every worker is woken to
//! try its line again. So a storm of wakes (hundreds of guests at once, from save, each
//! reading its memory back) runs at most `max_resuming` resumes at a time.
//!
//! A resume that brings memory back (from a save: the memory the guest's sleep freed) also
//! needs room for it: it is let through only if the host's available memory, less what the
//! resumes under way will take, less its own, stays above `[wake] resume_memory_reserve`.
//! Otherwise it waits its turn, retried as resumes end and every second, since memory frees
//! up by itself too; one that could never fit still waits, and says so, rather than push
//! the host into swapping or its OOM killer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use mio::Waker;
use tracing::warn;

/// What [`ResumeGate::try_enter`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A place is taken.
    In,
    /// Every place is taken.
    Full,
    /// The host has not the memory for this resume now.
    Memory,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct ResumeGate {
    max: usize,
    in_flight: AtomicUsize,
    /// The most ever in flight at once.
    most: AtomicUsize,
    /// The memory the resumes in flight bring back, in bytes.
    bytes_in_flight: AtomicU64,
    /// What must stay available after them.
    reserve: u64,
    /// Held from the check of the host's memory to the count of what a resume takes, so
    /// that two workers cannot both find room for one.
    memory: Mutex<()>,
    /// The workers, to wake when a place is given back (those that have stopped drop out).
    workers: Mutex<Vec<Weak<Waker>>>,
}

impl ResumeGate {
    /// A gate of `max` places (at least one), that keeps `reserve` bytes of the host's
    /// memory available.
    pub(crate) fn new(max: usize, reserve: u64) -> Arc<Self> {
        Arc::new(ResumeGate {
            max: max.max(1),
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            bytes_in_flight: AtomicU64::new(0),
            reserve,
            memory: Mutex::new(()),
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

    /// Takes a place for a resume that brings `bytes` of memory back, if one is free and,
    /// for `bytes` above 0, the host's `available` memory (read by the caller) leaves the
    /// reserve after it and the resumes under way. [`Entry::Memory`] says it waits for
    /// memory.
    pub(crate) fn try_enter(&self, bytes: u64, available: impl FnOnce() -> u64) -> Entry {
        let _memory =
            (bytes > 0).then(|| self.memory.lock().unwrap_or_else(PoisonError::into_inner));
        if bytes > 0 {
            let committed = self.bytes_in_flight.load(Ordering::Acquire);
            let left = available().saturating_sub(committed);
            if left < bytes.saturating_add(self.reserve) {
                return Entry::Memory;
            }
        }
        let entered = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        match entered {
            Ok(before) => {
                self.most.fetch_max(before + 1, Ordering::Relaxed);
                self.bytes_in_flight.fetch_add(bytes, Ordering::AcqRel);
                Entry::In
            }
            Err(_) => Entry::Full,
        }
    }

    /// Gives back a place taken for `bytes`, and wakes the workers so that their waiting
    /// wakes may take it.
    pub(crate) fn leave(&self, bytes: u64) {
        self.bytes_in_flight.fetch_sub(bytes, Ordering::AcqRel);
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

    const GIB: u64 = 1 << 30;

    #[test]
    fn places_are_taken_up_to_the_cap_and_given_back() {
        let gate = ResumeGate::new(2, 0);
        let plenty = || u64::MAX;
        assert_eq!(gate.try_enter(0, plenty), Entry::In);
        assert_eq!(gate.try_enter(0, plenty), Entry::In);
        assert_eq!(gate.try_enter(0, plenty), Entry::Full, "past the cap");
        assert_eq!(gate.in_flight(), 2);
        gate.leave(0);
        assert_eq!(
            gate.try_enter(0, plenty),
            Entry::In,
            "a place given back is taken again"
        );
        gate.leave(0);
        gate.leave(0);
        assert_eq!((gate.in_flight(), gate.most(), gate.max()), (0, 2, 2));
    }

    #[test]
    fn a_resume_from_save_waits_until_the_host_has_its_memory_beside_the_reserve() {
        let gate = ResumeGate::new(16, GIB);
        // 10 GiB available: a 4 GiB guest fits (6 left, above the 1 GiB reserve)...
        assert_eq!(gate.try_enter(4 * GIB, || 10 * GIB), Entry::In);
        // ...a second one too (the first's 4 GiB counted, though not taken yet: 2 left)...
        assert_eq!(gate.try_enter(4 * GIB, || 10 * GIB), Entry::In);
        // ...a third not (-2).
        assert_eq!(gate.try_enter(4 * GIB, || 10 * GIB), Entry::Memory);
        // A pause gives nothing back and needs nothing: the cap alone counts for it.
        assert_eq!(gate.try_enter(0, || 0), Entry::In);
        gate.leave(0);
        // Once the first is back (its memory now in use, out of what is available), there
        // is room again only if the host has it.
        gate.leave(4 * GIB);
        assert_eq!(gate.try_enter(4 * GIB, || 6 * GIB), Entry::Memory);
        assert_eq!(gate.try_enter(4 * GIB, || 9 * GIB), Entry::In);
    }

    #[test]
    fn threads_racing_for_memory_never_take_more_than_there_is() {
        // Room for two 4 GiB resumes above the reserve, and 16 places.
        let gate = ResumeGate::new(16, GIB);
        let over = std::sync::atomic::AtomicBool::new(false);
        let inside = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..5_000 {
                        if gate.try_enter(4 * GIB, || 9 * GIB + GIB / 2) == Entry::In {
                            if inside.fetch_add(1, Ordering::AcqRel) >= 2 {
                                over.store(true, Ordering::Relaxed);
                            }
                            inside.fetch_sub(1, Ordering::AcqRel);
                            gate.leave(4 * GIB);
                        }
                    }
                });
            }
        });
        assert!(
            !over.load(Ordering::Relaxed),
            "more in than the memory allows"
        );
    }

    #[test]
    fn places_are_never_over_taken_by_threads_racing_for_them() {
        let gate = ResumeGate::new(3, 0);
        let over = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if gate.try_enter(0, || 0) == Entry::In {
                            if gate.in_flight() > 3 {
                                over.store(true, Ordering::Relaxed);
                            }
                            gate.leave(0);
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
