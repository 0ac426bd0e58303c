//! Each guest's backend on a thread of its own: a libvirt managed save takes seconds, and the
//! bridge's worker must go on answering for every other guest meanwhile.

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use mio::Waker;
use tracing::warn;
use vmnap_hypervisor::{Backend, ResumeError, SuspendError};

/// A request to a guest's backend thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Suspend,
    Resume,
    /// Read the guest's CPU time.
    Sample,
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
}

/// The worker's end of a backend thread.
#[derive(Debug)]
pub(crate) struct BackendThread {
    ops: Option<Sender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
    kind: &'static str,
}

impl BackendThread {
    /// Starts the thread for guest `index` of a worker; results go to `done`, and `waker`
    /// wakes the worker.
    pub(crate) fn spawn(
        name: &str,
        index: usize,
        mut backend: Box<dyn Backend>,
        done: Sender<(usize, Done)>,
        waker: Arc<Waker>,
    ) -> std::io::Result<Self> {
        let kind = backend.kind();
        let (ops, rx) = mpsc::channel::<Op>();
        let thread = std::thread::Builder::new()
            .name(format!("vmnap-be-{name}"))
            .spawn(move || {
                for op in rx {
                    let result = match op {
                        Op::Suspend => Done::Suspended(backend.suspend()),
                        Op::Resume => {
                            let started = std::time::Instant::now();
                            let r = backend.resume();
                            let took = started.elapsed();
                            Done::Resumed(r.map(|()| backend.interface()), took)
                        }
                        Op::Sample => {
                            Done::Sampled(backend.cpu_time(), backend.memory_released_by_sleep())
                        }
                    };
                    if done.send((index, result)).is_err() {
                        return;
                    }
                    if let Err(e) = waker.wake() {
                        warn!(error = %e, "cannot wake the bridge's worker");
                    }
                }
            })?;
        Ok(Self {
            ops: Some(ops),
            thread: Some(thread),
            kind,
        })
    }

    /// The backend's kind, for status.
    pub(crate) fn kind(&self) -> &'static str {
        self.kind
    }

    /// Queues `op`; false if the thread is gone.
    pub(crate) fn send(&self, op: Op) -> bool {
        self.ops.as_ref().is_some_and(|o| o.send(op).is_ok())
    }
}

impl Drop for BackendThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its current call returns.
        self.ops = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
