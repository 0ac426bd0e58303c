//! A guest's hooks: commands run on the host before it sleeps (`before_sleep`, whose
//! failure vetoes the sleep) and after it wakes (`after_wake`); and through its
//! qemu-guest-agent, inside it: its inhibit file, whose existence vetoes a sleep, and
//! `guest_before_sleep` and `guest_after_wake`. They run on the backend pool, never on a
//! worker; those on the host each in a process group of its own, killed whole at its
//! timeout ([`run_with_timeout`]); those in the guest waited for as long (the agent cannot
//! end them).

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;

use vmnap_config::GuestHooks;
use vmnap_host::process::run_with_timeout;
use vmnap_hypervisor::Backend;

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
        let key = match hook {
            Hook::BeforeSleep => "before_sleep",
            Hook::AfterWake => "after_wake",
        };
        self.run_on_host(hook).map_err(|e| format!("{key}: {e}"))
    }

    fn run_on_host(&self, hook: Hook) -> Result<(), String> {
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

/// How often a command run in the guest is asked whether it ended.
const EXEC_POLL: Duration = Duration::from_millis(50);

impl Hooks {
    /// The part of `hook` that runs inside the guest, through its agent (after [`Hooks::run`]'s
    /// part on the host): before a sleep, the inhibit file is looked for (its existence
    /// vetoes) and then `guest_before_sleep` runs; after a wake, `guest_after_wake`. `Ok`
    /// when there is nothing to do. A guest without an agent, or an agent that does not
    /// answer, fails it.
    pub(crate) fn run_in_guest(&self, hook: Hook, backend: &mut dyn Backend) -> Result<(), String> {
        let c = &self.config;
        let argv = match hook {
            Hook::BeforeSleep => &c.guest_before_sleep,
            Hook::AfterWake => &c.guest_after_wake,
        };
        let inhibit = match hook {
            Hook::BeforeSleep => c.inhibit_file.as_deref(),
            Hook::AfterWake => None,
        };
        if argv.is_empty() && inhibit.is_none() {
            return Ok(());
        }
        let mut agent = Agent {
            backend,
            timeout: c.timeout,
        };
        if let Some(path) = inhibit {
            match agent.file_exists(path) {
                Ok(false) => {}
                Ok(true) => return Err(format!("inhibit_file: {path} exists in the guest")),
                Err(e) => return Err(format!("inhibit_file: {e}")),
            }
        }
        let key = match hook {
            Hook::BeforeSleep => "guest_before_sleep",
            Hook::AfterWake => "guest_after_wake",
        };
        match argv.split_first() {
            Some((program, args)) => agent
                .exec(program, args, hook)
                .map_err(|e| format!("{key}: {e}")),
            None => Ok(()),
        }
    }
}

/// A guest's qemu-guest-agent, through its backend.
struct Agent<'a> {
    backend: &'a mut dyn Backend,
    timeout: Duration,
}

impl Agent<'_> {
    /// Sends `command` and returns the `return` of its answer, or what the agent said went
    /// wrong.
    fn call(&mut self, command: &serde_json::Value) -> Result<serde_json::Value, String> {
        let text = self
            .backend
            .agent_command(&command.to_string(), self.timeout)
            .ok_or_else(|| {
                "the guest has no agent (a libvirt domain needs a channel named \
                 org.qemu.guest_agent.0, and qemu-guest-agent running in the guest)"
                    .to_owned()
            })??;
        let mut answer: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("the guest agent's answer is not JSON ({e}): {text}"))?;
        if let Some(error) = answer.get("error") {
            return Err(format!(
                "the guest agent refused: {}",
                error["desc"].as_str().unwrap_or("no reason given")
            ));
        }
        Ok(answer["return"].take())
    }

    /// Whether `path` exists in the guest: it can be opened for reading (`guest-file-open`;
    /// an agent that cannot open it for another reason says so, and that counts as there).
    fn file_exists(&mut self, path: &str) -> Result<bool, String> {
        let open = serde_json::json!({
            "execute": "guest-file-open",
            "arguments": { "path": path, "mode": "r" },
        });
        match self.call(&open) {
            Ok(handle) => {
                let close = serde_json::json!({
                    "execute": "guest-file-close",
                    "arguments": { "handle": handle },
                });
                let _ = self.call(&close);
                Ok(true)
            }
            Err(e) if e.contains("No such file or directory") => Ok(false),
            Err(e) if e.starts_with("the guest agent refused") => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Runs `program args` in the guest (`guest-exec`) and waits for it at most the timeout
    /// (`guest-exec-status`); why it failed: its exit (with the last line of its standard
    /// error), a signal, or the timeout (the agent cannot end it: it runs on in the guest).
    fn exec(&mut self, program: &str, args: &[String], hook: Hook) -> Result<(), String> {
        let started = Instant::now();
        let exec = serde_json::json!({
            "execute": "guest-exec",
            "arguments": {
                "path": program,
                "arg": args,
                "env": [format!("VMNAP_EVENT={}", hook.as_str())],
                "capture-output": true,
            },
        });
        let pid = self.call(&exec)?["pid"]
            .as_i64()
            .ok_or_else(|| format!("the guest agent started {program} but gave no pid"))?;
        let status = serde_json::json!({
            "execute": "guest-exec-status",
            "arguments": { "pid": pid },
        });
        loop {
            let s = self.call(&status)?;
            if s["exited"].as_bool() == Some(true) {
                let stderr = s["err-data"]
                    .as_str()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let how = match (s["exitcode"].as_i64(), s["signal"].as_i64()) {
                    (Some(0), _) => return Ok(()),
                    (Some(code), _) => format!("{program} exited with {code} in the guest"),
                    (None, Some(signal)) => {
                        format!("{program} was ended by signal {signal} in the guest")
                    }
                    (None, None) => format!("{program} ended in the guest, with no exit status"),
                };
                return Err(match stderr.lines().rev().find(|l| !l.trim().is_empty()) {
                    Some(line) => format!("{how}: {}", line.trim()),
                    None => how,
                });
            }
            if started.elapsed() >= self.timeout {
                return Err(format!(
                    "{program} did not end within {:?} in the guest",
                    self.timeout
                ));
            }
            std::thread::sleep(EXEC_POLL);
        }
    }
}
