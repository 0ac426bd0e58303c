//! [`QmpBackend`]: a [`Backend`] for QEMU guests run without libvirt.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmnap_hypervisor::Backend;

use crate::client::{Qmp, QmpError};
use crate::pageout;
use vmnap_host::pageout::RamFile;

/// How long each step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// One QMP command, and connecting.
    pub command: Duration,
    /// A migration out to the state file, or in from it.
    pub migration: Duration,
    /// QEMU's QMP socket to answer after QEMU is started.
    pub start: Duration,
    /// QEMU to exit after `quit` (it is killed after that; the save still counts).
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            command: Duration::from_secs(5),
            migration: Duration::from_secs(120),
            start: Duration::from_secs(30),
            quit: Duration::from_secs(10),
        }
    }
}

/// How often migration and process state are polled.
const POLL: Duration = Duration::from_millis(5);
/// How much of QEMU's standard error is kept for error messages.
const STDERR_TAIL: usize = 4096;

/// Why QEMU could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The command line is empty.
    #[error("The QEMU command line is empty")]
    EmptyCommandLine,
    /// The program could not be run.
    #[error("Cannot run {}", .program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// QEMU exited before its QMP socket answered.
    #[error(
        "QEMU exited ({status}) before its QMP socket answered; its standard error ends: {stderr}"
    )]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// The QMP socket did not answer in time.
    #[error("QEMU's QMP socket did not answer within {timeout:?}")]
    NoSocket {
        /// How long the backend waited.
        timeout: Duration,
        /// The last attempt's error.
        #[source]
        source: QmpError,
    },
}

/// Failure of [`QmpBackend::start`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A pause backend does not start QEMU.
    #[error("Guest {guest} has a pause backend, which does not start QEMU")]
    PauseMode {
        /// The guest.
        guest: String,
    },
    /// This backend's QEMU is running already.
    #[error("QEMU of guest {guest} is running already")]
    AlreadyRunning {
        /// The guest.
        guest: String,
    },
    /// QEMU did not come up.
    #[error("Cannot start QEMU of guest {guest}")]
    Launch {
        /// The guest.
        guest: String,
        /// Why.
        #[source]
        source: Box<LaunchError>,
    },
}

/// What went wrong while saving a guest's state.
#[derive(Debug, thiserror::Error)]
pub enum SaveFailure {
    /// A QMP exchange (`migrate`, `query-migrate`, `quit`) failed.
    #[error("QMP exchange failed")]
    Qmp(#[from] QmpError),
    /// The state file's path is not UTF-8 and cannot be put in QEMU's `exec:` command.
    #[error("The path is not UTF-8")]
    PathNotUtf8,
    /// The old state file or a partial one could not be removed.
    #[error("Cannot remove an old state file")]
    RemoveOld(#[source] io::Error),
    /// QEMU reported the migration failed or cancelled.
    #[error("Migration ended {status}: {desc}")]
    Migration {
        /// `failed` or `cancelled`.
        status: String,
        /// QEMU's `error-desc`, or empty.
        desc: String,
    },
    /// The migration did not complete in time (it was cancelled).
    #[error("Migration did not complete within {0:?}")]
    Timeout(Duration),
    /// Waiting for QEMU to exit failed.
    #[error("Cannot wait for QEMU to exit")]
    Wait(#[source] io::Error),
    /// The migration completed but the file is not there.
    #[error("The state file is missing after the migration completed")]
    NoFile,
}

/// Failure of [`QmpBackend::try_suspend`].
#[derive(Debug, thiserror::Error)]
pub enum SuspendError {
    /// `stop` or `query-status` failed.
    #[error("Cannot stop guest {guest}")]
    Stop {
        /// The guest.
        guest: String,
        /// Why.
        #[source]
        source: QmpError,
    },
    /// QEMU took `stop` but reports another state.
    #[error("Guest {guest} is {status} after stop")]
    StillRunning {
        /// The guest.
        guest: String,
        /// QEMU's run state.
        status: String,
    },
    /// A save backend has no QEMU running (never started, or saved already).
    #[error("Guest {guest} has no running QEMU to save")]
    NotRunning {
        /// The guest.
        guest: String,
    },
    /// The guest is stopped but its state was not saved; QEMU still holds it, paused.
    #[error("Cannot save guest {guest} to {}", .path.display())]
    Save {
        /// The guest.
        guest: String,
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<SaveFailure>,
    },
}

/// What went wrong while restoring a guest's state.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailure {
    /// QEMU did not come up.
    #[error("QEMU did not start")]
    Launch(#[from] LaunchError),
    /// A QMP exchange failed (QEMU exits by itself when it cannot load the state).
    #[error("QMP exchange failed")]
    Qmp(#[from] QmpError),
    /// The state file's path is not UTF-8.
    #[error("The path is not UTF-8")]
    PathNotUtf8,
    /// QEMU exited while loading the state.
    #[error("QEMU exited ({status}) while loading the state; its standard error ends: {stderr}")]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// QEMU reported the incoming migration failed.
    #[error("Incoming migration ended {status}: {desc}")]
    Migration {
        /// `failed` or `cancelled`.
        status: String,
        /// QEMU's `error-desc`, or empty.
        desc: String,
    },
    /// The incoming migration did not complete in time.
    #[error("Incoming migration did not complete within {0:?}")]
    Timeout(Duration),
}

/// Failure of [`QmpBackend::try_resume`].
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// `cont` or `query-status` failed.
    #[error("Cannot continue guest {guest}")]
    Cont {
        /// The guest.
        guest: String,
        /// Why.
        #[source]
        source: QmpError,
    },
    /// QEMU took `cont` but reports another state.
    #[error("Guest {guest} is {status} after cont")]
    NotRunning {
        /// The guest.
        guest: String,
        /// QEMU's run state.
        status: String,
    },
    /// A save backend without a running QEMU has no state file either.
    #[error("Guest {guest} has neither a running QEMU nor a state file {}", .path.display())]
    NoStateFile {
        /// The guest.
        guest: String,
        /// The state file expected.
        path: PathBuf,
    },
    /// Starting QEMU from the state file failed; the file is left in place.
    #[error("Cannot restore guest {guest} from {}", .path.display())]
    Restore {
        /// The guest.
        guest: String,
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<RestoreFailure>,
    },
}

/// A QEMU process this backend started.
#[derive(Debug)]
struct Qemu {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Qemu {
    /// The end of QEMU's standard error, after giving the reader a moment to finish.
    fn stderr_tail(&mut self) -> String {
        if let Some(reader) = self.stderr_reader.take() {
            let deadline = Instant::now() + Duration::from_millis(200);
            while !reader.is_finished() && Instant::now() < deadline {
                thread::sleep(POLL);
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        lock(&self.stderr).trim().to_owned()
    }

    /// Waits up to `timeout` for QEMU to exit.
    fn wait_exit(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(POLL);
        }
    }

    fn kill(&mut self) -> io::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
            self.child.wait()?;
        }
        Ok(())
    }
}

fn lock(m: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct SaveMode {
    argv: Vec<OsString>,
    state_file: PathBuf,
    qemu: Option<Qemu>,
}

/// Stops and resumes a QEMU guest over QMP, without libvirt. Three modes:
///
/// - **Pause** ([`QmpBackend::pause`]): `stop` and `cont` on a QEMU someone else started;
///   the guest keeps its memory. Each call confirms the new state with `query-status`.
/// - **Page-out** ([`QmpBackend::pageout`]): the same, and [`Backend::page_out`] hands the
///   daemon what takes the stopped guest's file-backed RAM out of host memory.
/// - **Save** ([`QmpBackend::save`]): the backend owns the QEMU process. It starts it from a
///   command line ([`QmpBackend::start`]), adding `-qmp unix:PATH,server=on,wait=off` itself
///   (the command line must not use that socket, nor `-daemonize`, nor `-incoming`). Suspend
///   is `stop`, `migrate` to `exec:cat > FILE.partial && mv -f FILE.partial FILE` (so the
///   file exists only once complete), polling `query-migrate` until it completes, then
///   `quit` and waiting for the process to exit: the guest's memory is freed. Resume starts
///   the same command line plus `-incoming "exec:cat FILE"`, waits for the QMP socket and for
///   the incoming migration to finish, sends `cont` (a guest saved paused comes back
///   paused), and removes the file. A new backend whose state file exists resumes from it,
///   so a sleeping guest survives a restart of the daemon.
///
/// The backend keeps one QMP connection open between calls (reconnecting once if QEMU
/// dropped it). QEMU serves one client per QMP socket: give vmnap its own `-qmp` socket.
/// Dropping the backend leaves QEMU running; [`QmpBackend::kill`] ends it.
#[derive(Debug)]
pub struct QmpBackend {
    guest: String,
    qmp_path: PathBuf,
    timeouts: Timeouts,
    conn: Option<Qmp>,
    save: Option<SaveMode>,
    pageout: Option<PageOutMode>,
    /// The unix socket of the guest's qemu-guest-agent, if it has one.
    agent: Option<PathBuf>,
}

/// Page-out mode: the guest's RAM file and QEMU, once found, and what was last said about
/// them in the log.
#[derive(Debug, Default)]
struct PageOutMode {
    found: Option<Arc<RamFile>>,
    notes: vmnap_hypervisor::PageOutNotes,
}

impl QmpBackend {
    /// A pause backend for `guest`, whose QEMU serves QMP on `qmp_path`. Connects on first
    /// use.
    pub fn pause(guest: &str, qmp_path: impl Into<PathBuf>) -> Self {
        Self {
            guest: guest.to_owned(),
            qmp_path: qmp_path.into(),
            timeouts: Timeouts::default(),
            conn: None,
            save: None,
            pageout: None,
            agent: None,
        }
    }

    /// The same, with the guest's qemu-guest-agent on the unix socket `agent`: a woken
    /// guest's clock is set through it ([`Backend::set_clock`]), and the daemon's hooks in the
    /// guest run through it ([`Backend::agent_command`]).
    pub fn with_agent(mut self, agent: impl Into<PathBuf>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// A page-out backend for `guest`, whose QEMU serves QMP on `qmp_path`: a pause, after
    /// which the daemon takes the guest's RAM out of host memory ([`Backend::page_out`]).
    /// The RAM must be a shared mapping of a file (`-object memory-backend-file,...,
    /// share=on`); it is found over QMP on first use, and again when QEMU changes.
    pub fn pageout(guest: &str, qmp_path: impl Into<PathBuf>) -> Self {
        Self {
            pageout: Some(PageOutMode::default()),
            ..Self::pause(guest, qmp_path)
        }
    }

    /// A save backend for `guest`: `qemu_argv` is QEMU's whole command line, program first,
    /// without `-qmp` for `qmp_path` (the backend adds it); the guest's state goes to
    /// `state_file` while it sleeps. Starts nothing: call [`QmpBackend::start`] to boot the
    /// guest, or [`Backend::resume`] to restore it from an existing state file.
    pub fn save(
        guest: &str,
        qemu_argv: Vec<OsString>,
        qmp_path: impl Into<PathBuf>,
        state_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            save: Some(SaveMode {
                argv: qemu_argv,
                state_file: state_file.into(),
                qemu: None,
            }),
            ..Self::pause(guest, qmp_path)
        }
    }

    /// Replaces the default [`Timeouts`].
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The guest's name.
    pub fn guest(&self) -> &str {
        &self.guest
    }

    /// The QMP socket.
    pub fn qmp_path(&self) -> &Path {
        &self.qmp_path
    }

    /// The PID of the QEMU this backend started and that still runs (save mode only).
    pub fn pid(&self) -> Option<u32> {
        self.save.as_ref()?.qemu.as_ref().map(|q| q.child.id())
    }

    /// Save mode: boots the guest fresh from its command line and waits until its QMP
    /// socket answers.
    pub fn start(&mut self) -> Result<(), StartError> {
        let guest = self.guest.clone();
        let Some(save) = self.save.as_mut() else {
            return Err(StartError::PauseMode { guest });
        };
        if save.qemu.is_some() {
            return Err(StartError::AlreadyRunning { guest });
        }
        let (qemu, qmp) = launch(&guest, &save.argv, &self.qmp_path, None, &self.timeouts)
            .map_err(|source| StartError::Launch {
                guest,
                source: Box::new(source),
            })?;
        save.qemu = Some(qemu);
        self.conn = Some(qmp);
        tracing::info!(guest = %self.guest, pid = self.pid(), "QEMU started");
        Ok(())
    }

    /// Kills the QEMU this backend started (save mode) and waits for it.
    pub fn kill(&mut self) -> io::Result<()> {
        self.conn = None;
        if let Some(mut qemu) = self.save.as_mut().and_then(|s| s.qemu.take()) {
            qemu.kill()?;
        }
        Ok(())
    }

    /// Closes the kept QMP connection, so that another client can use the socket; the next
    /// call connects again.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Page-out mode: the guest's RAM file and QEMU, as found before if QEMU is the same
    /// process, or found now. What stands in the way, or makes a wake costly, is logged
    /// when it changes.
    fn find_page_out(&mut self) -> Result<Arc<RamFile>, vmnap_hypervisor::PageOutUnavailable> {
        let found = self.locate_ram();
        let mode = self.pageout.get_or_insert_with(PageOutMode::default);
        let shown = found
            .as_ref()
            .map(|r| r.as_ref() as &dyn vmnap_hypervisor::PageOut);
        mode.notes.note(&self.guest, shown);
        if let Ok(ram) = &found {
            mode.found = Some(Arc::clone(ram));
        }
        found
    }

    fn locate_ram(&mut self) -> Result<Arc<RamFile>, vmnap_hypervisor::PageOutUnavailable> {
        let guest = self.guest.clone();
        let unavailable = |reason: String| vmnap_hypervisor::PageOutUnavailable {
            guest: guest.clone(),
            reason,
        };
        let conn = self.connection().map_err(|e| unavailable(chain(&e)))?;
        let pid_now = conn.peer().ok().map(|p| p.pid());
        let known = self.pageout.as_ref().and_then(|m| m.found.as_ref());
        if let Some(found) = known.filter(|f| Some(f.pid()) == pid_now) {
            return Ok(Arc::clone(found));
        }
        let conn = self.conn.as_mut().expect("connected above");
        pageout::find(conn).map_err(|e| unavailable(chain(&e)))
    }

    /// QEMU's run state from `query-status` (`running`, `paused`, `inmigrate`).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let v = self.run("query-status", None)?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }

    /// The CPU time the guest's vCPUs have used, from the host's view: the vCPU threads
    /// `query-cpus-fast` names, and the run time the kernel keeps for each
    /// (`/proc/TID/schedstat`, in nanoseconds). `None` if QEMU or the kernel does not say.
    pub fn vcpu_time(&mut self) -> Option<Duration> {
        let cpus = self.run("query-cpus-fast", None).ok()?;
        let mut total = Duration::ZERO;
        for cpu in cpus.as_array()? {
            let tid = cpu.get("thread-id")?.as_u64()?;
            let text = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).ok()?;
            let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
            total += Duration::from_nanos(ns);
        }
        Some(total)
    }

    /// Like [`Backend::suspend`], with this crate's detailed error.
    pub fn try_suspend(&mut self) -> Result<(), SuspendError> {
        match self.save.take() {
            None => self.stop_and_confirm(),
            Some(mut save) => {
                let r = self.suspend_save(&mut save);
                self.save = Some(save);
                r
            }
        }
    }

    /// Like [`Backend::resume`], with this crate's detailed error.
    pub fn try_resume(&mut self) -> Result<(), ResumeError> {
        match self.save.take() {
            None => self.cont_and_confirm(),
            Some(mut save) => {
                let r = self.resume_save(&mut save);
                self.save = Some(save);
                r
            }
        }
    }

    fn connection(&mut self) -> Result<&mut Qmp, QmpError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => Qmp::connect(&self.qmp_path, self.timeouts.command)?,
        };
        Ok(self.conn.insert(conn))
    }

    /// Runs a command, reconnecting once if a kept connection turns out to be dead.
    fn run(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let kept = self.conn.is_some();
        let result = self.connection()?.execute(command, arguments.clone());
        match result {
            Err(e) if e.is_disconnect() => {
                self.conn = None;
                if kept {
                    tracing::debug!(guest = %self.guest, error = %e, "QMP connection lost; reconnecting");
                    let result = self.connection()?.execute(command, arguments);
                    if matches!(&result, Err(e) if e.is_disconnect()) {
                        self.conn = None;
                    }
                    result
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    fn run_state(&mut self) -> Result<(bool, String), QmpError> {
        let v = self.run("query-status", None)?;
        let running = v.get("running").and_then(Value::as_bool).unwrap_or(false);
        let status = v
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        Ok((running, status))
    }

    fn stop_and_confirm(&mut self) -> Result<(), SuspendError> {
        let guest = self.guest.clone();
        let stop_error = |source| SuspendError::Stop {
            guest: guest.clone(),
            source,
        };
        self.run("stop", None).map_err(stop_error)?;
        let (running, status) = self.run_state().map_err(stop_error)?;
        if running {
            return Err(SuspendError::StillRunning {
                guest: self.guest.clone(),
                status,
            });
        }
        tracing::debug!(guest = %self.guest, %status, "guest stopped");
        Ok(())
    }

    fn cont_and_confirm(&mut self) -> Result<(), ResumeError> {
        let guest = self.guest.clone();
        let cont_error = |source| ResumeError::Cont {
            guest: guest.clone(),
            source,
        };
        self.run("cont", None).map_err(cont_error)?;
        let (running, status) = self.run_state().map_err(cont_error)?;
        if !running {
            return Err(ResumeError::NotRunning {
                guest: self.guest.clone(),
                status,
            });
        }
        tracing::debug!(guest = %self.guest, "guest running");
        Ok(())
    }

    fn suspend_save(&mut self, save: &mut SaveMode) -> Result<(), SuspendError> {
        // A QEMU this backend did not start (the operator's, at boot) is saved the same way,
        // through its QMP socket; only waiting for it to exit differs.
        // Through the kept connection if there is one: QEMU serves one client per QMP
        // socket, so a second connection would wait for a greeting that never comes.
        if save.qemu.is_none() && self.connection().is_err() {
            return Err(SuspendError::NotRunning {
                guest: self.guest.clone(),
            });
        }
        let started = Instant::now();
        self.stop_and_confirm()?;
        let guest = self.guest.clone();
        let path = save.state_file.clone();
        let save_error = |source| SuspendError::Save {
            guest: guest.clone(),
            path: path.clone(),
            source: Box::new(source),
        };
        let partial = partial_path(&save.state_file);
        let (Some(file_q), Some(partial_q)) = (sh_quote(&save.state_file), sh_quote(&partial))
        else {
            return Err(save_error(SaveFailure::PathNotUtf8));
        };
        for old in [&save.state_file, &partial] {
            match std::fs::remove_file(old) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(save_error(SaveFailure::RemoveOld(e)))
                }
                _ => {}
            }
        }
        let uri = format!("exec:cat > {partial_q} && mv -f {partial_q} {file_q}");
        if let Err(failure) = self.migrate_out(&uri) {
            // Leave QEMU paused with its guest, and no half-written file.
            if matches!(failure, SaveFailure::Timeout(_)) {
                let _ = self.run("migrate_cancel", None);
            }
            let _ = std::fs::remove_file(&partial);
            return Err(save_error(failure));
        }
        let migrated = started.elapsed();
        // Who QEMU is, to know when it has let go of its memory (not only of its socket).
        let peer = self.conn.as_ref().and_then(|c| c.peer().ok());
        match self.run("quit", None) {
            Ok(_) => {}
            Err(e) if e.is_disconnect() => {}
            Err(e) => return Err(save_error(SaveFailure::Qmp(e))),
        }
        self.conn = None;
        match save.qemu.as_mut() {
            Some(qemu) => match qemu.wait_exit(self.timeouts.quit) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(guest = %self.guest, timeout = ?self.timeouts.quit, "QEMU did not exit after quit; killing it");
                    qemu.kill().map_err(|e| save_error(SaveFailure::Wait(e)))?;
                }
                Err(e) => return Err(save_error(SaveFailure::Wait(e))),
            },
            // Not our child: it is gone when its process has exited (a zombie is gone
            // enough: its memory is freed), or, if the kernel did not say who it is,
            // when its QMP socket no longer answers.
            None => {
                let deadline = Instant::now() + self.timeouts.quit;
                let alive = |path: &Path| match peer {
                    Some(p) => !p.has_exited(),
                    None => std::os::unix::net::UnixStream::connect(path).is_ok(),
                };
                while alive(&self.qmp_path) {
                    if Instant::now() >= deadline {
                        return Err(save_error(SaveFailure::Wait(io::Error::other(
                            "QEMU still runs after quit",
                        ))));
                    }
                    thread::sleep(POLL);
                }
            }
        }
        save.qemu = None;
        // The `mv` runs after `cat` has written everything; QEMU may exit a moment before.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !save.state_file.exists() {
            if Instant::now() >= deadline {
                return Err(save_error(SaveFailure::NoFile));
            }
            thread::sleep(POLL);
        }
        tracing::info!(guest = %self.guest, migrated = ?migrated, total = ?started.elapsed(), file = %save.state_file.display(), "guest saved; QEMU exited");
        Ok(())
    }

    fn migrate_out(&mut self, uri: &str) -> Result<(), SaveFailure> {
        self.run("migrate", Some(json!({ "uri": uri })))?;
        let deadline = Instant::now() + self.timeouts.migration;
        loop {
            let info = self.run("query-migrate", None)?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some(status @ ("failed" | "cancelled")) => {
                    return Err(SaveFailure::Migration {
                        status: status.to_owned(),
                        desc: error_desc(&info),
                    })
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(SaveFailure::Timeout(self.timeouts.migration));
            }
            thread::sleep(POLL);
        }
    }

    fn resume_save(&mut self, save: &mut SaveMode) -> Result<(), ResumeError> {
        if save.qemu.is_some() {
            return self.cont_and_confirm();
        }
        // No file but a QEMU answering (the operator's, or one a crash left running): it was
        // never saved, or was restored already; make sure it runs.
        if !save.state_file.exists() && Qmp::connect(&self.qmp_path, self.timeouts.command).is_ok()
        {
            return self.cont_and_confirm();
        }
        if !save.state_file.exists() {
            return Err(ResumeError::NoStateFile {
                guest: self.guest.clone(),
                path: save.state_file.clone(),
            });
        }
        let started = Instant::now();
        let guest = self.guest.clone();
        let path = save.state_file.clone();
        let restore_error = |source| ResumeError::Restore {
            guest: guest.clone(),
            path: path.clone(),
            source: Box::new(source),
        };
        let Some(file_q) = sh_quote(&save.state_file) else {
            return Err(restore_error(RestoreFailure::PathNotUtf8));
        };
        let incoming = format!("exec:cat {file_q}");
        let (qemu, qmp) = launch(
            &self.guest,
            &save.argv,
            &self.qmp_path,
            Some(&incoming),
            &self.timeouts,
        )
        .map_err(|e| restore_error(RestoreFailure::Launch(e)))?;
        save.qemu = Some(qemu);
        self.conn = Some(qmp);
        if let Err(failure) = self.migrate_in() {
            self.conn = None;
            // QEMU exits by itself when the state does not load: say why.
            let failure = match save.qemu.as_mut() {
                Some(qemu) if !matches!(failure, RestoreFailure::Timeout(_)) => {
                    match qemu.wait_exit(Duration::from_millis(500)) {
                        Ok(Some(status)) => RestoreFailure::Exited {
                            status,
                            stderr: qemu.stderr_tail(),
                        },
                        _ => failure,
                    }
                }
                _ => failure,
            };
            if let Some(mut qemu) = save.qemu.take() {
                if let Err(e) = qemu.kill() {
                    tracing::warn!(guest = %self.guest, error = %e, "cannot kill QEMU after a failed restore");
                }
            }
            return Err(restore_error(failure));
        }
        let restored = started.elapsed();
        self.cont_and_confirm()?;
        if let Err(e) = std::fs::remove_file(&save.state_file) {
            tracing::warn!(guest = %self.guest, error = %e, file = %save.state_file.display(), "cannot remove the state file of a resumed guest");
        }
        tracing::info!(guest = %self.guest, restored = ?restored, total = ?started.elapsed(), pid = save.qemu.as_ref().map(|q| q.child.id()), "guest restored");
        Ok(())
    }

    /// Waits until QEMU has left the `inmigrate` state.
    fn migrate_in(&mut self) -> Result<(), RestoreFailure> {
        let deadline = Instant::now() + self.timeouts.migration;
        loop {
            let (_, status) = self.run_state()?;
            if status != "inmigrate" {
                let info = self.run("query-migrate", None)?;
                return match info.get("status").and_then(Value::as_str) {
                    Some(status @ ("failed" | "cancelled")) => Err(RestoreFailure::Migration {
                        status: status.to_owned(),
                        desc: error_desc(&info),
                    }),
                    _ => Ok(()),
                };
            }
            if Instant::now() >= deadline {
                return Err(RestoreFailure::Timeout(self.timeouts.migration));
            }
            thread::sleep(POLL);
        }
    }
}

/// How many times a wake's clock setting is tried, [`CLOCK_RETRY`] apart: an agent
/// restored from a save may not answer at once.
const CLOCK_TRIES: u32 = 5;
const CLOCK_RETRY: Duration = Duration::from_millis(200);
/// How long one clock reading or setting may take.
const CLOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// The host's clock, in nanoseconds since the Unix epoch.
fn host_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

impl Backend for QmpBackend {
    fn agent_command(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Option<Result<String, String>> {
        let socket = self.agent.as_ref()?;
        Some(crate::agent::command(socket, command, timeout))
    }

    /// `guest-get-time` (for how far behind it was), then `guest-set-time` with the host's
    /// time to the nanosecond.
    fn set_clock(&mut self) -> Option<Result<Option<f64>, String>> {
        let socket = self.agent.clone()?;
        let mut last = String::new();
        for attempt in 0..CLOCK_TRIES {
            if attempt > 0 {
                thread::sleep(CLOCK_RETRY);
            }
            let get = r#"{"execute":"guest-get-time"}"#;
            let behind = crate::agent::command(&socket, get, CLOCK_TIMEOUT)
                .and_then(|a| crate::agent::returned(&a))
                .ok()
                .and_then(|v| v.as_i64())
                .map(|guest| (host_ns() - i128::from(guest)) as f64 / 1e6);
            let set =
                json!({ "execute": "guest-set-time", "arguments": { "time": host_ns() as i64 } });
            match crate::agent::command(&socket, &set.to_string(), CLOCK_TIMEOUT)
                .and_then(|a| crate::agent::returned(&a))
            {
                Ok(_) => return Some(Ok(behind)),
                Err(e) => last = e,
            }
        }
        Some(Err(last))
    }

    fn kind(&self) -> &'static str {
        if self.save.is_some() {
            "qmp-save"
        } else if self.pageout.is_some() {
            "qmp-pageout"
        } else {
            "qmp-pause"
        }
    }

    fn page_out(
        &mut self,
    ) -> Option<Result<Arc<dyn vmnap_hypervisor::PageOut>, vmnap_hypervisor::PageOutUnavailable>>
    {
        self.pageout.as_ref()?;
        Some(
            self.find_page_out()
                .map(|p| p as Arc<dyn vmnap_hypervisor::PageOut>),
        )
    }

    fn suspend(&mut self) -> Result<(), vmnap_hypervisor::SuspendError> {
        self.try_suspend()
            .map_err(|e| vmnap_hypervisor::SuspendError::Other {
                guest: self.guest.clone(),
                source: Box::new(e),
            })
    }

    fn cpu_time(&mut self) -> Option<Duration> {
        self.vcpu_time()
    }

    /// A save ends QEMU and frees what it holds (its resident memory, when this backend
    /// started it and so knows its PID); a page-out frees the guest's RAM in host memory
    /// (its file's pages); a pause keeps it.
    fn memory_released_by_sleep(&mut self) -> Option<u64> {
        if self.pageout.is_some() {
            return self.find_page_out().ok()?.cached().ok();
        }
        if self.save.is_none() {
            return Some(0);
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    fn resume(&mut self) -> Result<(), vmnap_hypervisor::ResumeError> {
        self.try_resume()
            .map_err(|e| vmnap_hypervisor::ResumeError::Other {
                guest: self.guest.clone(),
                source: Box::new(e),
            })
    }

    /// QEMU's run state, if it answers; in save mode, a QEMU that does not answer with a
    /// state file left is a saved guest.
    fn is_stopped(&mut self) -> Option<bool> {
        match self.run_state() {
            Ok((running, _)) => Some(!running),
            Err(_) => self
                .save
                .as_ref()
                .filter(|s| s.state_file.exists())
                .map(|_| true),
        }
    }
}

/// An error and its causes, joined with `: `.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn error_desc(info: &Value) -> String {
    info.get("error-desc")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Quotes a path for `/bin/sh`, or `None` if it is not UTF-8.
fn sh_quote(path: &Path) -> Option<String> {
    Some(format!("'{}'", path.to_str()?.replace('\'', r"'\''")))
}

/// The `-qmp` option value for a socket path (commas doubled, as QEMU's option syntax asks).
fn qmp_option(path: &Path) -> OsString {
    let mut opt = OsString::from("unix:");
    match path.to_str() {
        Some(s) => opt.push(s.replace(',', ",,")),
        None => opt.push(path.as_os_str()),
    }
    opt.push(",server=on,wait=off");
    opt
}

fn drain_stderr(guest: String, stderr: ChildStderr, tail: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            tracing::debug!(guest = %guest, "qemu: {line}");
            let mut tail = lock(&tail);
            tail.push_str(&line);
            tail.push('\n');
            if tail.len() > STDERR_TAIL {
                let mut cut = tail.len() - STDERR_TAIL;
                while !tail.is_char_boundary(cut) {
                    cut += 1;
                }
                tail.drain(..cut);
            }
        }
    })
}

/// Starts QEMU with `argv` plus its QMP socket (and `-incoming`), and connects.
fn launch(
    guest: &str,
    argv: &[OsString],
    qmp_path: &Path,
    incoming: Option<&str>,
    timeouts: &Timeouts,
) -> Result<(Qemu, Qmp), LaunchError> {
    let (program, args) = argv.split_first().ok_or(LaunchError::EmptyCommandLine)?;
    // A socket file left from an earlier QEMU would refuse connections until QEMU replaces
    // it; removing it first means the first successful connect is to the new QEMU.
    let _ = std::fs::remove_file(qmp_path);
    let mut command = Command::new(program);
    command
        .args(args)
        .arg("-qmp")
        .arg(qmp_option(qmp_path))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uri) = incoming {
        command.arg("-incoming").arg(uri);
    }
    let mut child = command.spawn().map_err(|source| LaunchError::Spawn {
        program: PathBuf::from(program),
        source,
    })?;
    let stderr = Arc::new(Mutex::new(String::new()));
    let stderr_reader = child
        .stderr
        .take()
        .map(|pipe| drain_stderr(guest.to_owned(), pipe, Arc::clone(&stderr)));
    let mut qemu = Qemu {
        child,
        stderr,
        stderr_reader,
    };
    let deadline = Instant::now() + timeouts.start;
    loop {
        match qemu.child.try_wait() {
            Ok(Some(status)) => {
                return Err(LaunchError::Exited {
                    status,
                    stderr: qemu.stderr_tail(),
                })
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(guest, error = %e, "cannot check whether QEMU runs"),
        }
        let last = match Qmp::connect(qmp_path, timeouts.command) {
            Ok(qmp) => return Ok((qemu, qmp)),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            let _ = qemu.kill();
            return Err(LaunchError::NoSocket {
                timeout: timeouts.start,
                source: last,
            });
        }
        thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(
            sh_quote(Path::new("/tmp/a b/it's")).as_deref(),
            Some(r"'/tmp/a b/it'\''s'")
        );
        assert_eq!(
            partial_path(Path::new("/x/g.state")),
            Path::new("/x/g.state.partial")
        );
    }

    #[test]
    fn commas_in_the_socket_path_are_doubled() {
        assert_eq!(
            qmp_option(Path::new("/run/a,b.sock")),
            OsString::from("unix:/run/a,,b.sock,server=on,wait=off")
        );
    }

    #[test]
    fn pause_backend_does_not_start_qemu() {
        let mut b = QmpBackend::pause("web1", "/nonexistent/qmp.sock");
        assert_eq!(b.kind(), "qmp-pause");
        let err = b.start().expect_err("pause mode");
        assert!(err.to_string().contains("web1"), "{err}");
    }

    #[test]
    fn errors_name_the_guest_and_the_socket() {
        let mut b = QmpBackend::pause("web1", "/nonexistent/qmp.sock");
        let text = chain(&b.try_suspend().expect_err("no socket"));
        assert!(
            text.contains("web1")
                && text.contains("/nonexistent/qmp.sock")
                && text.contains("stop"),
            "{text}"
        );
        let text = chain(&b.suspend().expect_err("no socket"));
        assert!(
            text.contains("web1") && text.contains("Cannot stop"),
            "{text}"
        );
    }

    #[test]
    fn save_backend_without_qemu_or_state_file_refuses_both_ways() {
        let mut b = QmpBackend::save(
            "db",
            vec!["qemu-system-x86_64".into()],
            "/nonexistent/qmp.sock",
            "/nonexistent/db.state",
        );
        assert_eq!(b.kind(), "qmp-save");
        assert!(matches!(
            b.try_suspend(),
            Err(SuspendError::NotRunning { .. })
        ));
        let err = b.try_resume().expect_err("no state");
        assert!(matches!(err, ResumeError::NoStateFile { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/db.state"));
    }
}
