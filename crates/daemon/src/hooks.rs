//! A guest's hooks: commands run on the host before it sleeps (`before_sleep`, whose
//! failure vetoes the sleep) and after it wakes (`after_wake`). They run on the backend
//! pool, never on a worker, each in a process group of its own, killed whole at its
//! timeout ([`run_with_timeout`]).

use std::process::Command;

use vmnap_config::GuestHooks;
use vmnap_host::process::run_with_timeout;

/// A guest's hooks, as its backend's slot keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hooks {
    /// The guest's name, for the hooks' environment.
    pub guest: String,
    /// Its hooks and their timeout.
    pub config: GuestHooks,
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    BeforeSleep,
    AfterWake,
}

impl Hook {
    /// Its name, as the config and `VMNAP_EVENT` have it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Hook::BeforeSleep => "before-sleep",
            Hook::AfterWake => "after-wake",
        }
    }
}

impl Hooks {
    /// Runs `hook` (nothing to do when it is not configured: `Ok`), waits for it at most
    /// the timeout, and says why it failed: an exit that is not 0 (with the last line of its
    /// standard error), a signal, the timeout, or a program that cannot be started.
    pub(crate) fn run(&self, hook: Hook) -> Result<(), String> {
        let argv = match hook {
            Hook::BeforeSleep => &self.config.before_sleep,
            Hook::AfterWake => &self.config.after_wake,
        };
        let Some((program, args)) = argv.split_first() else {
            return Ok(());
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env("VMNAP_GUEST", &self.guest)
            .env("VMNAP_EVENT", hook.as_str());
        let ran = run_with_timeout(&mut command, self.config.timeout)
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let how = match ran.status {
            Some(status) if status.success() => return Ok(()),
            Some(status) => match status.code() {
                Some(code) => format!("{program} exited with {code}"),
                None => format!("{program} was ended by a signal ({status})"),
            },
            None => {
                return Err(format!(
                    "{program} did not end within {:?}, and was killed",
                    self.config.timeout
                ))
            }
        };
        Err(
            match ran.stderr.lines().rev().find(|l| !l.trim().is_empty()) {
                Some(line) => format!("{how}: {}", line.trim()),
                None => how,
            },
        )
    }
}
