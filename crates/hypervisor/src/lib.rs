//! Guest state control: the [`Backend`] trait that stops and resumes a guest, with an
//! implementation for guests that are network namespaces or containers ([`CgroupBackend`]:
//! freeze and thaw their cgroup) and a [`FakeBackend`] for tests.
//!
//! A backend only stops and resumes the guest's execution. It does not touch the network:
//! cutting the guest's port, moving its MAC and replaying its frames are the daemon's
//! sequence around these calls. Calls block until the guest is stopped or running (or the
//! backend gives up); the daemon decides on which thread they run.

#![forbid(unsafe_code)]

use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmnap_host::diag::DiagError;
pub use vmnap_host::diag::TcpWork;
use vmnap_host::{Cgroup, CgroupError, CgroupVersion};

/// Failure to stop a guest.
#[derive(Debug, thiserror::Error)]
pub enum SuspendError {
    /// The cgroup did not freeze.
    #[error("cannot freeze cgroup of guest {guest}")]
    Freeze {
        /// The guest.
        guest: String,
        /// Why.
        #[source]
        source: CgroupError,
    },
    /// A fake backend told to fail.
    #[error("fake backend of guest {guest} refused to suspend")]
    Fake {
        /// The guest.
        guest: String,
    },
    /// Another backend's failure.
    #[error("cannot stop guest {guest}")]
    Other {
        /// The guest.
        guest: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Failure to resume a guest.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The cgroup did not thaw.
    #[error("cannot thaw cgroup of guest {guest}")]
    Thaw {
        /// The guest.
        guest: String,
        /// Why.
        #[source]
        source: CgroupError,
    },
    /// A fake backend told to fail.
    #[error("fake backend of guest {guest} refused to resume")]
    Fake {
        /// The guest.
        guest: String,
    },
    /// Another backend's failure.
    #[error("cannot resume guest {guest}")]
    Other {
        /// The guest.
        guest: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Failure to read what a stopped guest still has to do.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The guest's network namespace could not be found or opened.
    #[error("cannot open the network namespace of guest {guest}")]
    Namespace {
        /// The guest.
        guest: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its sockets could not be read.
    #[error("cannot read the TCP sockets of guest {guest}")]
    Sockets {
        /// The guest.
        guest: String,
        /// Why.
        #[source]
        source: DiagError,
    },
}

/// How recently a peer's data must have come for a connection that has not answered it to
/// count as owing an answer ([`TcpWork::unanswered`]). A request being worked on is answered
/// within this time, or the guest is busy and its CPU keeps it awake; a connection whose peer
/// spoke last longer ago is one that expects no answer.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(10);

/// Failure to set a backend up for a guest.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The cgroup directory has no freezer.
    #[error("cannot use cgroup {dir} for guest {guest}")]
    Cgroup {
        /// The guest.
        guest: String,
        /// The directory from the config.
        dir: PathBuf,
        /// Why.
        #[source]
        source: CgroupError,
    },
}

/// Stops and resumes one guest's execution.
pub trait Backend: Send + std::fmt::Debug {
    /// A short name for logs and status: `cgroup`, `fake`.
    fn kind(&self) -> &'static str;
    /// Stops the guest; returns when it is stopped.
    fn suspend(&mut self) -> Result<(), SuspendError>;
    /// Resumes the guest; returns when it runs.
    fn resume(&mut self) -> Result<(), ResumeError>;
    /// The CPU time the guest has used so far, if the backend knows (for idleness). It may
    /// start again from zero when the guest's process is started anew.
    fn cpu_time(&mut self) -> Option<Duration> {
        None
    }
    /// The guest's port on the bridge now, if the backend knows and it may have changed (a
    /// guest started again from a save gets a new tap).
    fn interface(&mut self) -> Option<String> {
        None
    }
    /// The host memory the guest's sleep gives back, in bytes, read while it runs: what a
    /// save frees; 0 for a pause or a freeze, which keep the guest's memory. `None`: not
    /// known.
    fn memory_released_by_sleep(&mut self) -> Option<u64> {
        None
    }
    /// What the stopped guest's TCP sockets still have to do: a request its kernel took in
    /// just before the stop, or an answer not acknowledged yet, waits there with nothing to
    /// wake the guest for it. `None`: the backend cannot tell (the guest's kernel is stopped
    /// with it, or its sockets are the host's).
    fn work_in_flight(&mut self) -> Option<Result<TcpWork, InspectError>> {
        None
    }
    /// Whether the guest is stopped now, by anyone (asked at start, where the journal says
    /// vmnap left it asleep: someone may have resumed it meanwhile). `None`: the backend
    /// cannot tell.
    fn is_stopped(&mut self) -> Option<bool> {
        None
    }
    /// For a backend whose sleep also takes the stopped guest's RAM out of host memory
    /// (page-out): what does that, found or checked now. It is run once the guest is
    /// asleep, apart from the backend's other calls, so that a wake never waits for it
    /// more than a step. `None`: the sleep keeps the memory as it is. `Some(Err)`: the
    /// guest's RAM cannot be paged out (the reason is reported; the guest sleeps paused).
    fn page_out(&mut self) -> Option<Result<Arc<dyn PageOut>, PageOutUnavailable>> {
        None
    }
    /// Sets the woken guest's clock to the host's, through its guest agent: a guest
    /// paused wakes as far behind as it slept, and one restored from a save at the time of
    /// the save. Returns how far off the guest's clock was, in milliseconds (positive: it
    /// was behind), when the agent says. `None`: the guest has no agent (or its clock is
    /// the host's: a cgroup's).
    fn set_clock(&mut self) -> Option<Result<Option<f64>, String>> {
        None
    }
    /// Sends `command` (a JSON object of the QEMU guest agent's protocol) to the guest's
    /// agent and returns the agent's answer, waiting at most about `timeout`. `None`: the
    /// guest has no agent.
    fn agent_command(
        &mut self,
        _command: &str,
        _timeout: Duration,
    ) -> Option<Result<String, String>> {
        None
    }
}

/// A guest's RAM file as the daemon pages it out: the eviction, in steps; what is in host
/// memory (the file's pages in the page cache); the write-back of an idle guest; and what
/// makes a wake bring back more than the guest touches.
impl PageOut for vmnap_host::pageout::RamFile {
    fn page_out(
        &self,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<PagedOut, Box<dyn std::error::Error + Send + Sync>> {
        let e = self.evict_unless(cancel)?;
        Ok(PagedOut {
            before: e.before.cached,
            after: e.after.cached,
            written: e.before.dirty,
            write_back: e.write_back,
            took: e.took,
            cancelled: e.cancelled,
        })
    }

    fn resident(&self) -> Option<u64> {
        self.cached().ok()
    }

    fn start_write_back(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(vmnap_host::pageout::RamFile::start_write_back(self)?)
    }

    fn touched(&self) -> Result<Vec<Range<u64>>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(vmnap_host::pageout::RamFile::touched(self)?)
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} MiB), mapped shared by process {}",
            self.path().display(),
            self.len() >> 20,
            self.pid()
        )
    }

    fn prefetch(
        &self,
        ranges: &[Range<u64>],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(vmnap_host::pageout::RamFile::prefetch(self, ranges)?)
    }

    fn caveats(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.huge_pages_advised().unwrap_or(false) {
            out.push(
                "QEMU advised huge pages on the guest's RAM, so each page it touches after a \
                 page-out brings 4 MiB back: start QEMU with `vmnap run-qemu`"
                    .to_owned(),
            );
        }
        if self.on_tmpfs() {
            out.push(format!(
                "{} is on a tmpfs: a page-out moves its pages to swap, and without swap frees \
                 nothing; keep RAM files on a disk",
                self.path().display()
            ));
        }
        if let Some(kib) = self.readahead_kib().filter(|&k| k > 0) {
            out.push(format!(
                "the device of {} reads {kib} KiB ahead, so each page the guest touches after \
                 a page-out brings up to that much back: keep RAM files on a device with \
                 read_ahead_kb 0",
                self.path().display()
            ));
        }
        out
    }
}

/// What a backend last said in the log about paging a guest's RAM out, so that it says it
/// again only when it changes.
#[derive(Debug, Default)]
pub struct PageOutNotes {
    said: Option<String>,
}

impl PageOutNotes {
    /// Logs what was found for `guest` (the page-out and its caveats, or why not), if it
    /// differs from what was said last.
    pub fn note(&mut self, guest: &str, found: Result<&dyn PageOut, &PageOutUnavailable>) {
        let said = match found {
            Ok(p) => p.caveats().join("; "),
            Err(e) => e.reason.clone(),
        };
        if self.said.as_deref() == Some(said.as_str()) {
            return;
        }
        match found {
            Ok(_) if said.is_empty() => {
                tracing::info!(guest = %guest, "the guest's RAM can be paged out")
            }
            Ok(_) => {
                tracing::warn!(guest = %guest, caveats = %said, "the guest's RAM can be paged out, at a cost")
            }
            Err(_) => {
                tracing::warn!(guest = %guest, reason = %said, "the guest's RAM cannot be paged out; it sleeps paused")
            }
        }
        self.said = Some(said);
    }
}

/// Why a guest's RAM cannot be paged out: said in the log and on the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot page guest {guest}'s RAM out: {reason}")]
pub struct PageOutUnavailable {
    /// The guest.
    pub guest: String,
    /// Why (its RAM is not a shared mapping of a file, the process cannot be read, ...).
    pub reason: String,
}

/// What one page-out did ([`PageOut::page_out`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedOut {
    /// The guest's RAM in host memory before, in bytes.
    pub before: u64,
    /// And after: what stays (0 when all went).
    pub after: u64,
    /// Bytes that had to be written back first.
    pub written: u64,
    /// How long the write-back took.
    pub write_back: Duration,
    /// How long the whole page-out took.
    pub took: Duration,
    /// It stopped early because the guest was woken meanwhile.
    pub cancelled: bool,
}

/// Takes a stopped guest's RAM out of host memory, and tells how much of it is there.
/// Shared between the backend and the pool thread that runs it.
pub trait PageOut: Send + Sync + std::fmt::Debug {
    /// Writes the guest's RAM back and drops it from host memory, in steps; stops between
    /// steps once `cancel` is set (the guest is being woken), with what it did so far.
    fn page_out(
        &self,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<PagedOut, Box<dyn std::error::Error + Send + Sync>>;
    /// The guest's RAM in host memory now, in bytes.
    fn resident(&self) -> Option<u64>;
    /// Starts writing the guest's changed RAM back, without waiting (while it idles awake,
    /// so that a page-out later has less to write).
    fn start_write_back(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// What makes a wake bring back more than the guest touches, one sentence each (empty
    /// when nothing does): shown on the status.
    fn caveats(&self) -> Vec<String> {
        Vec::new()
    }
    /// Where the guest's RAM is, in a few words (`vmnap check-config` says it).
    fn describe(&self) -> String {
        String::new()
    }
    /// The parts of the guest's RAM, as sorted, disjoint byte ranges, that it has touched
    /// since its RAM was last paged out: read a little after a wake, what that wake needed.
    /// Empty where this cannot be known.
    fn touched(&self) -> Result<Vec<Range<u64>>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Vec::new())
    }
    /// Starts reading these parts of the guest's RAM back into host memory, without
    /// waiting: just before a resume, with what its last wakes touched, so that its first
    /// steps find their memory read, or on its way, rather than reading it a page at a time.
    fn prefetch(
        &self,
        _ranges: &[Range<u64>],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}

/// How long a freeze or thaw may take before it counts as failed.
pub const CGROUP_TIMEOUT: Duration = Duration::from_secs(2);

/// A guest that is a network namespace or container: its processes live in one cgroup,
/// which is frozen while it sleeps (v2 `cgroup.freeze`, or the v1 freezer).
#[derive(Debug)]
pub struct CgroupBackend {
    guest: String,
    cgroup: Cgroup,
}

impl CgroupBackend {
    /// Opens the guest's cgroup directory and finds out which freezer it has.
    pub fn open(guest: &str, dir: PathBuf) -> Result<Self, OpenError> {
        let cgroup = Cgroup::open(&dir).map_err(|source| OpenError::Cgroup {
            guest: guest.to_owned(),
            dir,
            source,
        })?;
        Ok(Self {
            guest: guest.to_owned(),
            cgroup,
        })
    }

    /// The freezer in use.
    pub fn version(&self) -> CgroupVersion {
        self.cgroup.version()
    }
}

impl Backend for CgroupBackend {
    fn kind(&self) -> &'static str {
        "cgroup"
    }

    /// A frozen cgroup keeps all its memory.
    fn memory_released_by_sleep(&mut self) -> Option<u64> {
        Some(0)
    }

    fn suspend(&mut self) -> Result<(), SuspendError> {
        self.cgroup
            .freeze(CGROUP_TIMEOUT)
            .map_err(|source| SuspendError::Freeze {
                guest: self.guest.clone(),
                source,
            })
    }

    fn resume(&mut self) -> Result<(), ResumeError> {
        self.cgroup
            .thaw(CGROUP_TIMEOUT)
            .map_err(|source| ResumeError::Thaw {
                guest: self.guest.clone(),
                source,
            })
    }

    fn is_stopped(&mut self) -> Option<bool> {
        self.cgroup.is_frozen().ok()
    }

    /// A frozen cgroup's processes are stopped but the kernel of its network namespace is
    /// not: its sockets are read through the namespace of the cgroup's first process. A guest
    /// without a namespace of its own (its sockets are the host's) cannot be told.
    fn work_in_flight(&mut self) -> Option<Result<TcpWork, InspectError>> {
        let namespace = |source| InspectError::Namespace {
            guest: self.guest.clone(),
            source,
        };
        let pid = match self.cgroup.pids() {
            Ok(pids) => *pids.first()?,
            Err(e) => return Some(Err(namespace(std::io::Error::other(e)))),
        };
        let path = format!("/proc/{pid}/ns/net");
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return Some(Err(namespace(e))),
        };
        let ours = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino());
        if file.metadata().map(|m| m.ino()).ok() == ours.ok() {
            return None;
        }
        Some(
            vmnap_host::diag::tcp_work_in(file, ANSWER_WINDOW).map_err(|source| {
                InspectError::Sockets {
                    guest: self.guest.clone(),
                    source,
                }
            }),
        )
    }
}

/// What a [`FakeBackend`] has been asked, and how it is to answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FakeState {
    /// Whether the fake guest is stopped.
    pub suspended: bool,
    /// Calls in order: `"suspend"`, `"resume"`, and of a page-out's `"write-back"`,
    /// `"touched"`, `"prefetch"`.
    pub calls: Vec<&'static str>,
    /// Fail this many of the next suspends.
    pub fail_suspends: u32,
    /// Fail this many of the next resumes.
    pub fail_resumes: u32,
    /// What [`Backend::work_in_flight`] says, once (then it cannot tell again).
    pub work_in_flight: Option<TcpWork>,
    /// How long each suspend and resume takes, as a slow hypervisor's would.
    pub delay: Duration,
    /// Resumes under way now (of every guest sharing this state).
    pub resuming: u32,
    /// The most resumes ever under way at once.
    pub most_resuming: u32,
    /// The memory each guest's sleep gives back, as a save's would (0: a pause's).
    pub memory: u64,
    /// Sleeps page the guest's RAM out ([`Backend::page_out`]): `memory` bytes of it, in
    /// steps of 10 ms over `page_out_time`, of which it keeps `memory / 100` and brings back
    /// `memory / 50` on a wake.
    pub page_out: bool,
    /// How long a page-out takes.
    pub page_out_time: Duration,
    /// Page-outs ended, and of those cancelled by a wake.
    pub page_outs: u32,
    pub page_outs_cancelled: u32,
    /// The guest's RAM in host memory now, as the fake page-out keeps it.
    pub resident: Option<u64>,
    /// What [`PageOut::touched`] says.
    pub touched: Vec<Range<u64>>,
    /// The ranges of each [`PageOut::prefetch`], in order.
    pub prefetched: Vec<Vec<Range<u64>>>,
}

/// The fake's page-out ([`FakeState::page_out`]).
#[derive(Debug)]
struct FakePageOut {
    state: Arc<Mutex<FakeState>>,
}

impl FakePageOut {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PageOut for FakePageOut {
    fn page_out(
        &self,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<PagedOut, Box<dyn std::error::Error + Send + Sync>> {
        let (memory, time) = {
            let s = self.state();
            (s.memory, s.page_out_time)
        };
        let started = std::time::Instant::now();
        let step = Duration::from_millis(10);
        let mut cancelled = false;
        while started.elapsed() < time {
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                cancelled = true;
                break;
            }
            std::thread::sleep(step);
        }
        let mut s = self.state();
        s.page_outs += 1;
        let after = if cancelled {
            s.page_outs_cancelled += 1;
            memory
        } else {
            memory / 100
        };
        s.resident = Some(after);
        Ok(PagedOut {
            before: memory,
            after,
            written: memory / 2,
            write_back: started.elapsed() / 2,
            took: started.elapsed(),
            cancelled,
        })
    }

    fn resident(&self) -> Option<u64> {
        let s = self.state();
        Some(s.resident.unwrap_or(s.memory))
    }

    fn start_write_back(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.state().calls.push("write-back");
        Ok(())
    }

    fn touched(&self) -> Result<Vec<Range<u64>>, Box<dyn std::error::Error + Send + Sync>> {
        let mut s = self.state();
        s.calls.push("touched");
        Ok(s.touched.clone())
    }

    fn prefetch(
        &self,
        ranges: &[Range<u64>],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut s = self.state();
        s.calls.push("prefetch");
        s.prefetched.push(ranges.to_vec());
        Ok(())
    }
}

/// A backend that stops nothing: it records calls and fails on request. Clones share state,
/// so a test keeps one and hands the other to the code under test.
#[derive(Debug, Clone, Default)]
pub struct FakeBackend {
    guest: String,
    state: Arc<Mutex<FakeState>>,
}

impl FakeBackend {
    /// A fake for `guest`, running.
    pub fn new(guest: &str) -> Self {
        Self {
            guest: guest.to_owned(),
            state: Arc::default(),
        }
    }

    /// The shared state.
    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock has failed already.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Backend for FakeBackend {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn is_stopped(&mut self) -> Option<bool> {
        Some(self.state().suspended)
    }

    fn memory_released_by_sleep(&mut self) -> Option<u64> {
        let s = self.state();
        Some(s.resident.unwrap_or(s.memory))
    }

    fn page_out(&mut self) -> Option<Result<Arc<dyn PageOut>, PageOutUnavailable>> {
        if !self.state().page_out {
            return None;
        }
        let fake: Arc<dyn PageOut> = Arc::new(FakePageOut {
            state: Arc::clone(&self.state),
        });
        Some(Ok(fake))
    }

    fn suspend(&mut self) -> Result<(), SuspendError> {
        let delay = self.state().delay;
        std::thread::sleep(delay);
        let mut s = self.state();
        s.calls.push("suspend");
        if s.fail_suspends > 0 {
            s.fail_suspends -= 1;
            return Err(SuspendError::Fake {
                guest: self.guest.clone(),
            });
        }
        s.suspended = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), ResumeError> {
        let delay = {
            let mut s = self.state();
            s.resuming += 1;
            s.most_resuming = s.most_resuming.max(s.resuming);
            s.delay
        };
        std::thread::sleep(delay);
        let mut s = self.state();
        s.resuming -= 1;
        s.calls.push("resume");
        if s.fail_resumes > 0 {
            s.fail_resumes -= 1;
            return Err(ResumeError::Fake {
                guest: self.guest.clone(),
            });
        }
        s.suspended = false;
        // What a wake after a page-out brings back.
        if s.page_out && s.resident.is_some() {
            s.resident = Some(s.memory / 50);
        }
        Ok(())
    }

    fn work_in_flight(&mut self) -> Option<Result<TcpWork, InspectError>> {
        self.state().work_in_flight.take().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_records_calls_and_fails_on_request() {
        let fake = FakeBackend::new("g");
        let mut backend: Box<dyn Backend> = Box::new(fake.clone());
        fake.state().fail_resumes = 1;
        backend.suspend().expect("suspends");
        assert!(fake.state().suspended);
        assert!(backend.resume().is_err());
        assert!(fake.state().suspended, "a failed resume leaves it stopped");
        backend.resume().expect("second try");
        assert_eq!(fake.state().calls, ["suspend", "resume", "resume"]);
        assert!(!fake.state().suspended);
    }

    #[test]
    fn cgroup_backend_refuses_a_directory_without_a_freezer() {
        let dir = std::env::temp_dir().join(format!("vmnap-hv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let err = CgroupBackend::open("web1", dir.clone()).expect_err("no freezer files");
        let text = err.to_string();
        std::fs::remove_dir(&dir).expect("cleanup");
        assert!(
            text.contains("web1") && text.contains(&dir.display().to_string()),
            "{text}"
        );
    }
}
