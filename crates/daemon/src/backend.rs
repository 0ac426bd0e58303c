//! The guests' backend calls, on a bounded pool of threads shared by every bridge's worker.
//!
//! A libvirt managed save takes seconds, and a worker must go on answering for every other
//! guest meanwhile, so backend calls never run on a worker. Nor does each guest get a thread
//! of its own: 10,000 guests put to sleep at once would be 10,000 threads. A [`Pool`] runs
//! them on at most [`MAX_THREADS`] threads, started as work comes and ended after
//! [`IDLE_EXIT`] without any, so a daemon whose guests all sleep runs none.
//!
//! Each guest's calls run one at a time and in the order they were asked for: a guest has a
//! queue of its own and stands in the pool's line at most once. It goes back to the end of
//! the line after each call, so one guest's calls cannot hold a thread while others wait.
//! Wakes go first: a guest whose next call resumes it, or looks inside it to finish a sleep,
//! stands in the urgent line, ahead of suspends and samples.
//!
//! A guest whose RAM was paged out gets it back as it touches it, a page fault and a read
//! at a time. So a little after each wake from a page-out ([`WAKE_SET_AFTER`]; the worker
//! asks, with [`Op::ReadWakeSet`]) the guest's slot reads what that wake touched
//! ([`PageOut::touched`]), and before the next resume from a page-out it starts reading
//! back all that the last two wakes touched ([`PageOut::prefetch`]), side by side: a wake
//! then waits about as long as one read, not one read for each page it needs.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mio::Waker;
use tracing::{debug, warn};
use vmnap_hypervisor::{
    Backend, InspectError, PageOut, PagedOut, ResumeError, SuspendError, TcpWork,
};

use vmnap_core::HoldBudget;

use crate::error::chain;
use crate::gate::ResumeGate;
use crate::hooks::{Hook, Hooks};

/// A request to a guest's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Suspend,
    Resume,
    /// Read the guest's CPU time.
    Sample,
    /// Read what the stopped guest still has to do.
    Inspect,
    /// Take the sleeping guest's RAM out of host memory, with what its suspend found
    /// ([`Backend::page_out`]), apart from the backend's lock, until done or cancelled
    /// ([`GuestBackend::cancel_page_out`]).
    PageOut,
    /// Start writing the idle guest's changed RAM back, without waiting.
    WriteBack,
    /// Read what the guest touched since its resume from a page-out, for the next one.
    ReadWakeSet,
    /// Run its `before_sleep` hook (whose failure vetoes the sleep about to begin).
    BeforeSleep,
    /// Run its `after_wake` hook.
    AfterWake,
    /// Set the woken guest's clock to the host's ([`Backend::set_clock`]).
    SetClock,
}

impl Op {
    /// A wake waits for it: resume, or the look inside that ends a sleep.
    fn is_urgent(self) -> bool {
        matches!(self, Op::Resume | Op::Inspect)
    }
}

/// What a suspend found about paging the guest's RAM out ([`Backend::page_out`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PageOutFound {
    /// The backend's sleep keeps the guest's memory.
    None,
    /// It can, with these caveats (empty: none).
    Ready(Vec<String>),
    /// It cannot, for this reason: the guest sleeps paused.
    Unavailable(String),
}

/// What a backend call reports back.
#[derive(Debug)]
pub(crate) enum Done {
    Suspended(Result<(), SuspendError>, PageOutFound),
    /// The guest's RAM paged out (or as far as it went before a wake), or why not; with
    /// what its backend found to page it out with, when it was asked for that first (a
    /// guest found asleep at start).
    PagedOut(Option<PageOutFound>, Result<PagedOut, String>),
    /// What the backend found to page the guest's RAM out with, and whether a write-back
    /// started (or why not).
    WroteBack(PageOutFound, Result<(), String>),
    /// Resumed, with the guest's port now if the backend says it changed, and how long the
    /// backend took.
    Resumed(Result<Option<String>, ResumeError>, Duration),
    /// The guest's CPU time, and the memory its sleep would give back; at its first sample,
    /// also what its backend found to page its RAM out with (so that the status says it
    /// before any sleep).
    Sampled(Option<Duration>, Option<u64>, Option<PageOutFound>),
    /// What the stopped guest still has to do (`None`: the backend cannot tell).
    Inspected(Option<Result<TcpWork, InspectError>>),
    /// What its wake from a page-out touched: the bytes kept for the next, or why none.
    WakeSetRead(Result<u64, String>),
    /// A hook ran: whether it succeeded, or why not.
    Hooked(Hook, Result<(), String>),
    /// The woken guest's clock was set (with how far behind it was, in milliseconds, when
    /// known), or why not; `None`: it has no agent.
    ClockSet(Option<Result<Option<f64>, String>>),
}

/// A report to a worker: the guest's index there, the ticket of the [`GuestBackend`] that
/// made the call (an index is reused once a guest leaves), and what the call did.
pub(crate) type Report = (usize, u64, Done);

/// Threads a pool runs at most.
pub(crate) const MAX_THREADS: usize = 16;

/// How long a pool thread waits for work before it ends.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(10);

/// How long after a resume from a page-out what the guest has touched is read: what the
/// wake needed to answer (a guest answering a new connection touched about 2 MiB in tens
/// of milliseconds, in measurements), before the work that may follow it.
pub(crate) const WAKE_SET_AFTER: Duration = Duration::from_millis(300);

/// The most a wake set keeps: a guest that touched more in its first moments awake is
/// doing more than answering a wake, and reading all that back would hold up the next
/// resume; its next wake goes by the set before.
pub(crate) const WAKE_SET_MAX: u64 = 16 << 20;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A call that panicked left the backend as a failed call would, and every other change
    // under these locks is one push or pop.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The threads that run backend calls, and what every bridge's worker shares besides: the
/// cap on resumes ([`ResumeGate`]) and the budget of held frames ([`HoldBudget`]). Cheap to
/// clone; every clone is the same pool.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
    gate: Arc<ResumeGate>,
    held: Arc<HoldBudget>,
}

#[derive(Debug)]
struct PoolInner {
    line: Mutex<Line>,
    /// Signalled when a guest joins the line.
    work: Condvar,
    max_threads: usize,
    idle_exit: Duration,
}

/// The guests waiting for a thread, and the threads.
#[derive(Debug, Default)]
struct Line {
    urgent: VecDeque<Arc<Slot>>,
    normal: VecDeque<Arc<Slot>>,
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    /// The most threads that ran at once.
    peak: usize,
}

impl Pool {
    /// A pool of at most [`MAX_THREADS`] threads, none running yet, that resumes at most
    /// `max_resuming` guests at once, keeping `resume_memory_reserve` bytes of the host's
    /// memory available, for guests that hold at most `max_held_bytes` in all.
    pub(crate) fn new(
        max_resuming: usize,
        resume_memory_reserve: u64,
        max_held_bytes: usize,
    ) -> Self {
        Pool {
            gate: ResumeGate::new(max_resuming, resume_memory_reserve),
            held: HoldBudget::new(max_held_bytes),
            ..Self::with_limits(MAX_THREADS, IDLE_EXIT)
        }
    }

    /// The budget of the frames held for every guest.
    pub(crate) fn hold_budget(&self) -> &Arc<HoldBudget> {
        &self.held
    }

    /// Its cap on resumes.
    pub(crate) fn resume_gate(&self) -> &Arc<ResumeGate> {
        &self.gate
    }

    /// A pool of at most `max_threads`, each ending after `idle_exit` without work.
    pub(crate) fn with_limits(max_threads: usize, idle_exit: Duration) -> Self {
        Pool {
            inner: Arc::new(PoolInner {
                line: Mutex::new(Line::default()),
                work: Condvar::new(),
                max_threads: max_threads.max(1),
                idle_exit,
            }),
            gate: ResumeGate::new(
                vmnap_config::DEFAULT_MAX_RESUMING,
                vmnap_config::DEFAULT_RESUME_MEMORY_RESERVE,
            ),
            held: HoldBudget::new(vmnap_config::DEFAULT_MAX_HELD_BYTES),
        }
    }

    /// Threads running now, and the most that ran at once.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn threads(&self) -> (usize, usize) {
        let line = lock(&self.inner.line);
        (line.threads, line.peak)
    }

    /// Guests waiting in line.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        let line = lock(&self.inner.line);
        line.urgent.len() + line.normal.len()
    }

    /// Puts `slot` in line, starting a thread if none is free and the pool has room. False
    /// if no thread runs and none can be started (the call would never run).
    fn enqueue(&self, slot: Arc<Slot>, urgent: bool) -> bool {
        let mut line = lock(&self.inner.line);
        if self.join(&mut line, slot, urgent) {
            return true;
        }
        if line.threads >= self.inner.max_threads {
            return true;
        }
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name("vmnap-backend".into())
            .spawn(move || pool.run());
        match spawned {
            Ok(_) => {
                line.threads += 1;
                line.peak = line.peak.max(line.threads);
                true
            }
            Err(e) => {
                warn!(error = %e, threads = line.threads, "cannot start a backend thread");
                if line.threads == 0 {
                    // Nobody would take it: leave the line as it was.
                    if urgent {
                        line.urgent.pop_back();
                    } else {
                        line.normal.pop_back();
                    }
                    return false;
                }
                true
            }
        }
    }

    /// A pool thread: takes the next guest in line, runs one of its calls, puts it back in
    /// line if it has more; ends after `idle_exit` without work.
    fn run(self) {
        loop {
            let slot = {
                let mut line = lock(&self.inner.line);
                loop {
                    if let Some(s) = line.urgent.pop_front().or_else(|| line.normal.pop_front()) {
                        break s;
                    }
                    line.idle += 1;
                    let (l, waited) = self
                        .inner
                        .work
                        .wait_timeout(line, self.inner.idle_exit)
                        .unwrap_or_else(|e| e.into_inner());
                    line = l;
                    line.idle -= 1;
                    if waited.timed_out() && line.urgent.is_empty() && line.normal.is_empty() {
                        line.threads -= 1;
                        drop(line);
                        // What the calls allocated is free now, in this thread's arena of
                        // the allocator: give it back.
                        vmnap_host::memory::release_free_memory();
                        return;
                    }
                }
            };
            let Some(op) = slot.next() else {
                continue;
            };
            slot.run(op);
            if let Some(urgent) = slot.again() {
                self.requeue(slot, urgent);
            }
        }
    }

    /// Puts a guest that has more calls back at the end of its line; a thread is free to
    /// take it, this one at least.
    fn requeue(&self, slot: Arc<Slot>, urgent: bool) {
        let mut line = lock(&self.inner.line);
        self.join(&mut line, slot, urgent);
    }

    /// Puts `slot` at the end of its line and wakes a waiting thread; false if none waits.
    fn join(&self, line: &mut Line, slot: Arc<Slot>, urgent: bool) -> bool {
        if urgent {
            line.urgent.push_back(slot);
        } else {
            line.normal.push_back(slot);
        }
        if line.idle == 0 {
            return false;
        }
        self.inner.work.notify_one();
        true
    }
}

/// One guest's backend and its queue of calls.
#[derive(Debug)]
struct Slot {
    backend: Mutex<Box<dyn Backend>>,
    /// What the last suspend found to page the guest's RAM out with.
    page_out: Mutex<Option<Arc<dyn PageOut>>>,
    /// Set when the guest is woken: a page-out under way stops at its next step.
    cancel_page_out: AtomicBool,
    /// Its backend has been asked what pages its RAM out (at its first sample, or sleep).
    page_out_asked: AtomicBool,
    /// What its wakes from a page-out touched, read back before the next such resume
    /// (`None` until its first page-out: boxed, as few guests page out).
    wake_set: Mutex<Option<Box<WakeSet>>>,
    /// Its hooks (`None`: it has none).
    hooks: Mutex<Option<Box<Hooks>>>,
    calls: Mutex<Calls>,
    index: usize,
    ticket: u64,
    report: Sender<Report>,
    waker: Arc<Waker>,
}

/// What a guest's wakes from a page-out touched (see the module's documentation).
#[derive(Debug, Default)]
struct WakeSet {
    /// What the last two such wakes touched, as byte ranges of its RAM, the latest first.
    touched: [Box<[Range<u64>]>; 2],
    /// Its RAM was paged out (all, or some before a wake stopped it): the next resume
    /// prefetches.
    paged_out: bool,
}

impl WakeSet {
    /// What a resume now reads back: both sets (overlaps are the backend's to join).
    fn to_prefetch(&self) -> Vec<Range<u64>> {
        self.touched
            .iter()
            .flat_map(|t| t.iter().cloned())
            .collect()
    }

    /// Keeps `touched` as the latest set, the latest before it as the other.
    fn push(&mut self, touched: Vec<Range<u64>>) {
        self.touched.swap(0, 1);
        self.touched[0] = touched.into_boxed_slice();
    }
}

#[derive(Debug, Default)]
struct Calls {
    queue: VecDeque<Op>,
    /// In the pool's line, or running a call.
    scheduled: bool,
    /// Its guest has left: calls not started are dropped.
    closed: bool,
}

impl Slot {
    /// The next call to run, or `None` (and out of line) when there is none.
    fn next(&self) -> Option<Op> {
        let mut calls = lock(&self.calls);
        let op = calls.queue.pop_front();
        if op.is_none() {
            calls.scheduled = false;
        }
        op
    }

    /// After a call: whether the guest has more, and in which line they go (`None`: none,
    /// and it is out of line).
    fn again(&self) -> Option<bool> {
        let mut calls = lock(&self.calls);
        match calls.queue.front() {
            Some(op) => Some(op.is_urgent()),
            None => {
                calls.scheduled = false;
                None
            }
        }
    }

    fn run(&self, op: Op) {
        if op == Op::PageOut {
            // A guest found asleep at start was not suspended by this run: its backend is
            // asked now what pages it out.
            let mut found = None;
            if lock(&self.page_out).is_none() {
                let f = self.find_page_out(&mut lock(&self.backend));
                found = Some(f);
            }
            // Apart from the backend's lock: a resume never waits for more than a step.
            let handle = lock(&self.page_out).clone();
            let done = match handle {
                _ if self.cancel_page_out.load(Ordering::Relaxed) => Done::PagedOut(
                    found,
                    Err("the guest was woken before its RAM was paged out".to_owned()),
                ),
                Some(h) => {
                    let r = h.page_out(&self.cancel_page_out);
                    // Even a page-out a wake stopped took some of the RAM out.
                    lock(&self.wake_set).get_or_insert_default().paged_out = true;
                    Done::PagedOut(found, r.map_err(|e| chain(e.as_ref())))
                }
                None => Done::PagedOut(
                    found,
                    Err("nothing to page the guest's RAM out with".to_owned()),
                ),
            };
            self.report(done);
            return;
        }
        if op == Op::ReadWakeSet {
            self.report(Done::WakeSetRead(self.read_wake_set()));
            return;
        }
        if let Some(hook) = match op {
            Op::BeforeSleep => Some(Hook::BeforeSleep),
            Op::AfterWake => Some(Hook::AfterWake),
            _ => None,
        } {
            // Apart from the backend's lock, from a copy: a hook may take its timeout.
            let hooks = lock(&self.hooks).clone();
            let r = hooks.map_or(Ok(()), |h| {
                h.run(hook)?;
                // The part in the guest talks to it through its backend.
                let mut backend = lock(&self.backend);
                h.run_in_guest(hook, backend.as_mut())
            });
            self.report(Done::Hooked(hook, r));
            return;
        }
        let done = {
            let mut backend = lock(&self.backend);
            match op {
                Op::Suspend => {
                    let r = backend.suspend();
                    let found = match r {
                        Ok(()) => self.find_page_out(&mut backend),
                        Err(_) => {
                            *lock(&self.page_out) = None;
                            PageOutFound::None
                        }
                    };
                    Done::Suspended(r, found)
                }
                Op::WriteBack => match backend.page_out() {
                    Some(Ok(h)) => {
                        drop(backend);
                        let r = h.start_write_back().map_err(|e| chain(e.as_ref()));
                        Done::WroteBack(PageOutFound::Ready(h.caveats()), r)
                    }
                    Some(Err(e)) => {
                        Done::WroteBack(PageOutFound::Unavailable(e.reason.clone()), Err(e.reason))
                    }
                    None => Done::WroteBack(
                        PageOutFound::None,
                        Err("the guest's sleep keeps its memory".to_owned()),
                    ),
                },
                Op::PageOut | Op::ReadWakeSet | Op::BeforeSleep | Op::AfterWake => {
                    unreachable!("handled above")
                }
                Op::SetClock => Done::ClockSet(backend.set_clock()),
                Op::Resume => {
                    let started = Instant::now();
                    let from_page_out = self.prefetch();
                    let r = backend.resume();
                    let took = started.elapsed();
                    if r.is_ok() && from_page_out {
                        if let Some(set) = lock(&self.wake_set).as_mut() {
                            set.paged_out = false;
                        }
                    }
                    Done::Resumed(r.map(|()| backend.interface()), took)
                }
                Op::Sample => {
                    let found = (!self.page_out_asked.load(Ordering::Relaxed))
                        .then(|| self.find_page_out(&mut backend));
                    Done::Sampled(
                        backend.cpu_time(),
                        backend.memory_released_by_sleep(),
                        found,
                    )
                }
                Op::Inspect => Done::Inspected(backend.work_in_flight()),
            }
        };
        self.report(done);
    }

    /// Asks the backend what pages the stopped guest's RAM out, and keeps it for
    /// [`Op::PageOut`].
    fn find_page_out(&self, backend: &mut Box<dyn Backend>) -> PageOutFound {
        self.page_out_asked.store(true, Ordering::Relaxed);
        let (handle, found) = match backend.page_out() {
            None => (None, PageOutFound::None),
            Some(Ok(h)) => {
                let caveats = h.caveats();
                (Some(h), PageOutFound::Ready(caveats))
            }
            Some(Err(e)) => (None, PageOutFound::Unavailable(e.reason)),
        };
        *lock(&self.page_out) = handle;
        found
    }

    /// Before a resume: if the guest's RAM was paged out, starts reading back what its
    /// last wakes touched; whether it was.
    fn prefetch(&self) -> bool {
        let ranges = {
            let set = lock(&self.wake_set);
            match set.as_ref() {
                Some(set) if set.paged_out => set.to_prefetch(),
                _ => return false,
            }
        };
        let Some(h) = lock(&self.page_out).clone() else {
            return false;
        };
        if ranges.is_empty() {
            return true;
        }
        let bytes: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        match h.prefetch(&ranges) {
            Ok(()) => debug!(
                bytes,
                ranges = ranges.len(),
                "reading back what the guest's last wakes touched"
            ),
            Err(e) => {
                warn!(error = %chain(e.as_ref()), "cannot read back what the guest's last wakes touched; its wake reads a page at a time")
            }
        }
        true
    }

    /// [`Op::ReadWakeSet`]: reads what the guest has touched since its resume from a
    /// page-out, and keeps it for the next (an empty set if it is over [`WAKE_SET_MAX`] or
    /// cannot be read); the bytes it kept, or why none.
    fn read_wake_set(&self) -> Result<u64, String> {
        let Some(h) = lock(&self.page_out).clone() else {
            return Err("nothing to read the guest's RAM with".to_owned());
        };
        let touched = h.touched().map_err(|e| chain(e.as_ref()));
        let bytes: u64 = touched
            .as_ref()
            .map_or(0, |t| t.iter().map(|r| r.end - r.start).sum());
        let keep = match touched {
            Ok(t) if bytes <= WAKE_SET_MAX => Ok(t),
            Ok(_) => Err(format!(
                "it touched {} MiB, more than a wake needs",
                bytes >> 20
            )),
            Err(e) => Err(e),
        };
        let mut set = lock(&self.wake_set);
        let set = set.get_or_insert_default();
        match keep {
            Ok(t) => {
                set.push(t);
                Ok(bytes)
            }
            Err(e) => {
                set.push(Vec::new());
                Err(e)
            }
        }
    }

    fn report(&self, done: Done) {
        if self.report.send((self.index, self.ticket, done)).is_err() {
            // The worker has gone: nobody wants the rest.
            lock(&self.calls).queue.clear();
            return;
        }
        if let Err(e) = self.waker.wake() {
            warn!(error = %e, "cannot wake the bridge's worker");
        }
    }
}

/// Tickets of [`GuestBackend`]s: unique in the process.
static TICKETS: AtomicU64 = AtomicU64::new(1);

/// The worker's end of one guest's backend: its calls go to the pool, their reports to the
/// worker's channel.
#[derive(Debug)]
pub(crate) struct GuestBackend {
    slot: Arc<Slot>,
    pool: Pool,
    kind: &'static str,
}

impl GuestBackend {
    /// The backend of guest `index` of a worker, run on `pool`; reports go to `report`, and
    /// `waker` wakes the worker.
    pub(crate) fn new(
        pool: &Pool,
        index: usize,
        backend: Box<dyn Backend>,
        report: Sender<Report>,
        waker: Arc<Waker>,
    ) -> Self {
        GuestBackend {
            kind: backend.kind(),
            slot: Arc::new(Slot {
                backend: Mutex::new(backend),
                page_out: Mutex::new(None),
                cancel_page_out: AtomicBool::new(false),
                page_out_asked: AtomicBool::new(false),
                wake_set: Mutex::new(None),
                hooks: Mutex::new(None),
                calls: Mutex::new(Calls::default()),
                index,
                ticket: TICKETS.fetch_add(1, Ordering::Relaxed),
                report,
                waker,
            }),
            pool: pool.clone(),
        }
    }

    /// The backend's kind, for status.
    pub(crate) fn kind(&self) -> &'static str {
        self.kind
    }

    /// Whether the guest is stopped now ([`Backend::is_stopped`]), asked here and now, not
    /// on the pool: only at start, before any call of the guest's is under way.
    pub(crate) fn is_stopped_now(&self) -> Option<bool> {
        self.slot
            .backend
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_stopped()
    }

    /// The ticket its reports carry.
    pub(crate) fn ticket(&self) -> u64 {
        self.slot.ticket
    }

    /// The guest's hooks from now on.
    pub(crate) fn set_hooks(&self, hooks: Option<Box<Hooks>>) {
        *lock(&self.slot.hooks) = hooks;
    }

    /// Stops a page-out of the guest's RAM at its next step (or before it starts): the
    /// guest is being woken. The next [`Op::PageOut`] sent clears it.
    pub(crate) fn cancel_page_out(&self) {
        self.slot.cancel_page_out.store(true, Ordering::Relaxed);
    }

    /// Queues `op` behind the guest's other calls; false if it can never run (no backend
    /// thread can be started).
    pub(crate) fn send(&self, op: Op) -> bool {
        if op == Op::PageOut {
            self.slot.cancel_page_out.store(false, Ordering::Relaxed);
        }
        {
            let mut calls = lock(&self.slot.calls);
            if calls.closed {
                return false;
            }
            calls.queue.push_back(op);
            if calls.scheduled {
                return true;
            }
            calls.scheduled = true;
        }
        if self.pool.enqueue(Arc::clone(&self.slot), op.is_urgent()) {
            return true;
        }
        let mut calls = lock(&self.slot.calls);
        calls.queue.clear();
        calls.scheduled = false;
        false
    }
}

impl Drop for GuestBackend {
    fn drop(&mut self) {
        // Calls not started are dropped; a call under way ends, and its report is ignored
        // (its ticket is gone). The backend goes with the last reference.
        let mut calls = lock(&self.slot.calls);
        calls.closed = true;
        calls.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;
    use vmnap_hypervisor::FakeBackend;

    /// A pool's reports and a waker that wakes nothing anyone waits on.
    fn worker() -> (
        mpsc::Sender<Report>,
        mpsc::Receiver<Report>,
        Arc<Waker>,
        mio::Poll,
    ) {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let (tx, rx) = mpsc::channel();
        (tx, rx, waker, poll)
    }

    /// `n` guests on `pool`, each with a backend whose calls take `delay`.
    fn guests(
        pool: &Pool,
        n: usize,
        delay: Duration,
        tx: &mpsc::Sender<Report>,
        waker: &Arc<Waker>,
    ) -> Vec<GuestBackend> {
        (0..n)
            .map(|i| GuestBackend::new(pool, i, slow(delay), tx.clone(), Arc::clone(waker)))
            .collect()
    }

    /// A backend whose suspends and resumes take `delay`.
    fn slow(delay: Duration) -> Box<dyn Backend> {
        let b = FakeBackend::new("g");
        b.state().delay = delay;
        Box::new(b)
    }

    #[test]
    fn a_thousand_guests_asleep_at_once_use_at_most_the_pools_threads() {
        let pool = Pool::with_limits(4, Duration::from_secs(10));
        let (tx, rx, waker, _poll) = worker();
        let guests = guests(&pool, 1000, Duration::from_millis(1), &tx, &waker);
        for g in &guests {
            assert!(g.send(Op::Suspend));
        }
        let mut seen = vec![false; 1000];
        for _ in 0..1000 {
            let (i, ticket, done) = rx.recv_timeout(Duration::from_secs(20)).expect("a report");
            assert_eq!(ticket, guests[i].ticket());
            assert!(matches!(done, Done::Suspended(Ok(()), _)), "{done:?}");
            assert!(!seen[i], "guest {i} reported twice");
            seen[i] = true;
        }
        let (_, peak) = pool.threads();
        assert!(peak <= 4, "{peak} threads ran at once");
    }

    #[test]
    fn a_guests_calls_run_one_at_a_time_in_order() {
        let pool = Pool::with_limits(8, Duration::from_secs(10));
        let (tx, rx, waker, _poll) = worker();
        let g = GuestBackend::new(&pool, 0, slow(Duration::from_millis(5)), tx, waker);
        let ops = [
            Op::Suspend,
            Op::Inspect,
            Op::Resume,
            Op::Sample,
            Op::Suspend,
        ];
        for op in ops {
            assert!(g.send(op));
        }
        let got: Vec<&str> = (0..ops.len())
            .map(
                |_| match rx.recv_timeout(Duration::from_secs(5)).expect("a report").2 {
                    Done::Suspended(..) => "suspend",
                    Done::PagedOut(..) => "page-out",
                    Done::WakeSetRead(_) => "wake set",
                    Done::Hooked(..) => "hook",
                    Done::ClockSet(_) => "clock",
                    Done::WroteBack(..) => "write-back",
                    Done::Inspected(_) => "inspect",
                    Done::Resumed(..) => "resume",
                    Done::Sampled(..) => "sample",
                },
            )
            .collect();
        assert_eq!(got, ["suspend", "inspect", "resume", "sample", "suspend"]);
        assert_eq!(
            pool.threads().1,
            1,
            "one guest's calls never run side by side"
        );
    }

    #[test]
    fn wakes_go_ahead_of_sleeps_waiting_in_line() {
        let pool = Pool::with_limits(1, Duration::from_secs(10));
        let (tx, rx, waker, _poll) = worker();
        let guests = guests(&pool, 6, Duration::from_millis(20), &tx, &waker);
        // Guest 0's suspend takes the one thread; 1..5 wait; then guest 5 is asked to wake.
        assert!(guests[0].send(Op::Suspend));
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.waiting() > 0 {
            assert!(Instant::now() < deadline, "no thread took the first call");
            std::thread::yield_now();
        }
        for g in &guests[1..5] {
            assert!(g.send(Op::Suspend));
        }
        assert!(guests[5].send(Op::Resume));
        let order: Vec<usize> = (0..6)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("a report").0)
            .collect();
        assert_eq!(order[0], 0, "the call under way finishes first");
        assert_eq!(order[1], 5, "then the wake, ahead of the sleeps: {order:?}");
    }

    #[test]
    fn idle_threads_end_and_new_work_starts_them_again() {
        let pool = Pool::with_limits(2, Duration::from_millis(50));
        let (tx, rx, waker, _poll) = worker();
        let g = GuestBackend::new(&pool, 0, slow(Duration::ZERO), tx, waker);
        assert!(g.send(Op::Sample));
        rx.recv_timeout(Duration::from_secs(5)).expect("a report");
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.threads().0 > 0 {
            assert!(Instant::now() < deadline, "the idle thread never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(g.send(Op::Sample));
        rx.recv_timeout(Duration::from_secs(5))
            .expect("a report after the restart");
    }

    #[test]
    fn a_guest_that_left_makes_no_more_calls() {
        let pool = Pool::with_limits(1, Duration::from_secs(10));
        let (tx, rx, waker, _poll) = worker();
        let busy = GuestBackend::new(
            &pool,
            0,
            slow(Duration::from_millis(50)),
            tx.clone(),
            Arc::clone(&waker),
        );
        let leaving = GuestBackend::new(&pool, 1, slow(Duration::ZERO), tx, waker);
        assert!(busy.send(Op::Suspend));
        assert!(leaving.send(Op::Suspend));
        drop(leaving);
        let (i, ..) = rx.recv_timeout(Duration::from_secs(5)).expect("a report");
        assert_eq!(i, 0);
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the guest that left was called"
        );
    }
}
