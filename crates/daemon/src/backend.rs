//! Each guest's backend on a thread of its own: a libvirt managed save takes seconds, and the
//! bridge's worker must go on answering for every other guest meanwhile.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::Waker;
use tracing::warn;
use vmnap_hypervisor::{Backend, InspectError, ResumeError, SuspendError, TcpWork};

/// A request to a guest's backend thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Suspend,
    Resume,
    /// Read the guest's CPU time.
    Sample,
    /// Read what the stopped guest still has to do.
    Inspect,
}

/// What a backend thread reports back, with the guest's index in its worker.
#[derive(Debug)]
pub(crate) enum Done {
    Suspended(Result<(), SuspendError>),
    /// Resumed, with the guest's port now if the backend says it changed, and how long the
    /// backend took.
    Resumed(Result<Option<String>, ResumeError>, Duration),
    /// The guest's CPU time, and the memory its sleep would give back.
    Sampled(Option<Duration>, Option<u64>),
    /// What the stopped guest still has to do (`None`: the backend cannot tell).
    Inspected(Option<Result<TcpWork, InspectError>>),
}

/// The worker's end of a guest's backend thread. The thread is started when an operation
/// comes and ends after [`IDLE_EXIT`] without one, so a sleeping guest costs no thread (its
/// stack and allocator arena are most of what a guest would otherwise cost while asleep).
#[derive(Debug)]
pub(crate) struct BackendThread {
    shared: Arc<Shared>,
    name: String,
    index: usize,
    done: Sender<(usize, Done)>,
    waker: Arc<Waker>,
    kind: &'static str,
    looks_inside: bool,
}

/// What the worker and the thread share.
#[derive(Debug)]
struct Shared {
    backend: Mutex<Box<dyn Backend>>,
    runner: Mutex<Runner>,
}

/// The thread while it runs: its queue and its handle.
#[derive(Debug, Default)]
struct Runner {
    ops: Option<Sender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long a backend thread waits for another operation before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A thread that panicked mid-call left the backend as a failed call would.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BackendThread {
    /// The backend of guest `index` of a worker; results go to `done`, and `waker` wakes
    /// the worker. No thread runs until the first operation.
    pub(crate) fn spawn(
        name: &str,
        index: usize,
        backend: Box<dyn Backend>,
        done: Sender<(usize, Done)>,
        waker: Arc<Waker>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            kind: backend.kind(),
            looks_inside: backend.looks_inside(),
            shared: Arc::new(Shared {
                backend: Mutex::new(backend),
                runner: Mutex::new(Runner::default()),
            }),
            name: name.to_owned(),
            index,
            done,
            waker,
        })
    }

    /// The backend's kind, for status.
    pub(crate) fn kind(&self) -> &'static str {
        self.kind
    }

    /// Whether it can tell what a stopped guest still has to do ([`Op::Inspect`]).
    pub(crate) fn looks_inside(&self) -> bool {
        self.looks_inside
    }

    /// Queues `op`, starting the thread if it is not running; false if it cannot start.
    pub(crate) fn send(&self, op: Op) -> bool {
        let mut runner = lock(&self.shared.runner);
        if let Some(ops) = &runner.ops {
            return ops.send(op).is_ok();
        }
        // It ended on its own (idle, and detached itself): start another.
        let (tx, rx) = mpsc::channel::<Op>();
        let shared = Arc::clone(&self.shared);
        let (index, done, waker) = (self.index, self.done.clone(), Arc::clone(&self.waker));
        let spawned = std::thread::Builder::new()
            .name(format!("vmnap-be-{}", self.name))
            .spawn(move || run(&shared, &rx, index, &done, &waker));
        match spawned {
            Ok(t) => {
                let sent = tx.send(op).is_ok();
                runner.ops = Some(tx);
                runner.thread = Some(t);
                sent
            }
            Err(e) => {
                warn!(guest = %self.name, error = %e, "cannot start the backend's thread");
                false
            }
        }
    }
}

/// The thread: runs operations as they come, ends when idle or when the worker lets go.
fn run(
    shared: &Shared,
    rx: &Receiver<Op>,
    index: usize,
    done: &Sender<(usize, Done)>,
    waker: &Waker,
) {
    loop {
        let op = match rx.recv_timeout(IDLE_EXIT) {
            Ok(op) => op,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                // Ending under the runner's lock: the worker either queued an operation
                // before (taken here) or finds the thread gone and starts another.
                let mut runner = lock(&shared.runner);
                match rx.try_recv() {
                    Ok(op) => op,
                    Err(_) => {
                        runner.ops = None;
                        // Detach: a thread that ends unjoined keeps its stack mapped.
                        drop(runner.thread.take());
                        drop(runner);
                        // What the calls allocated is free now, in the allocator's arena
                        // for this thread: give it back.
                        vmnap_host::memory::release_free_memory();
                        return;
                    }
                }
            }
        };
        let result = {
            let mut backend = lock(&shared.backend);
            match op {
                Op::Suspend => Done::Suspended(backend.suspend()),
                Op::Resume => {
                    let started = std::time::Instant::now();
                    let r = backend.resume();
                    let took = started.elapsed();
                    Done::Resumed(r.map(|()| backend.interface()), took)
                }
                Op::Sample => Done::Sampled(backend.cpu_time(), backend.memory_released_by_sleep()),
                Op::Inspect => Done::Inspected(backend.work_in_flight()),
            }
        };
        if done.send((index, result)).is_err() {
            return;
        }
        if let Err(e) = waker.wake() {
            warn!(error = %e, "cannot wake the bridge's worker");
        }
    }
}

impl Drop for BackendThread {
    fn drop(&mut self) {
        // Closing the queue ends the thread once its current call returns.
        let thread = {
            let mut runner = lock(&self.shared.runner);
            runner.ops = None;
            runner.thread.take()
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}
