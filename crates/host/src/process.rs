//! The process at the other end of a unix socket, and whether it has exited.
//!
//! A backend that did not start the process it controls (a QEMU started by someone else,
//! reached through its QMP socket) cannot `waitpid` for it. What it can do is ask the
//! kernel who holds the socket (`SO_PEERCRED`), and then read `/proc/PID/stat` until the
//! process is gone or a zombie. A closed listening socket is not enough: a process closes
//! its sockets while it exits, a moment before it has let go of its memory.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// One process, named by its PID and its start time (so a reused PID is not mistaken
/// for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pid: u32,
    start: u64,
}

impl Process {
    /// The process that created the peer end of `stream`.
    pub fn of_peer(stream: &UnixStream) -> io::Result<Process> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `cred` and `len` are valid for writes of the size passed; the fd is open
        // for the duration of the call because `stream` is borrowed.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let pid = u32::try_from(cred.pid)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| io::Error::other("the socket's peer has no PID in this namespace"))?;
        Process::of_pid(pid)
    }

    /// The process now running as `pid`.
    pub fn of_pid(pid: u32) -> io::Result<Process> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let (_, start) = parse_stat(&stat)
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: unexpected format")))?;
        Ok(Process { pid, start })
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True once the process has exited: it is gone, a zombie, or its PID now names
    /// another process.
    pub fn has_exited(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => match parse_stat(&stat) {
                Some((state, start)) => start != self.start || matches!(state, 'Z' | 'X' | 'x'),
                None => false,
            },
            Err(e) => e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH),
        }
    }
}

/// The state letter and start time (field 22, in clock ticks since boot) of a
/// `/proc/PID/stat` line. The command name (field 2) may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 lie between the state (field 3) and the start time (field 22).
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parentheses_in_the_name_is_read() {
        let line =
            "4242 (qemu (x) y) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21\n";
        assert_eq!(parse_stat(line), Some(('Z', 987654)));
    }

    #[test]
    fn short_stat_is_not_read() {
        assert_eq!(parse_stat("1 (init) S 0 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn this_process_is_running_and_its_peer_is_itself() {
        let me = Process::of_pid(std::process::id()).expect("own stat");
        assert!(!me.has_exited());
        let (a, _b) = UnixStream::pair().expect("pair");
        assert_eq!(
            Process::of_peer(&a).expect("peer").pid(),
            std::process::id()
        );
    }

    #[test]
    fn a_reaped_child_has_exited() {
        let mut child = std::process::Command::new("true").spawn().expect("true");
        // Until the wait below the child is at worst a zombie, so its stat is there.
        let p = Process::of_pid(child.id()).expect("child stat");
        child.wait().expect("wait");
        assert!(p.has_exited());
    }

    #[test]
    fn a_zombie_has_exited() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .expect("sleep");
        let p = Process::of_pid(child.id()).expect("child stat");
        assert!(!p.has_exited());
        // Not reaped: the child stays a zombie until the wait below.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !p.has_exited() {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().expect("wait");
    }
}

/// Raises this process's soft limit on open descriptors to its hard limit, and returns the
/// limit now in force. A daemon with a socket or two per guest needs thousands, and a
/// service manager's default soft limit is often 1,024 (systemd's `LimitNOFILE=1024:524288`).
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod limit_tests {
    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_one() {
        let now = super::raise_open_files_limit().expect("rlimit");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!((now, limit.rlim_cur), (limit.rlim_max, limit.rlim_max));
    }
}

/// The processes that hold the tap device `ifname` open (for a libvirt guest: its QEMU),
/// found in `/proc/*/fdinfo`, where the kernel names the interface of each tun/tap
/// descriptor (`iff:`). Processes that cannot be read are skipped.
pub fn holding_tap(ifname: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            // The tun device itself (char 10:200), whatever path the opener saw it under
            // (from another mount namespace or root it reads as another path, or none).
            let is_tun = std::fs::metadata(fd.path()).is_ok_and(|m| {
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                m.file_type().is_char_device() && m.rdev() == libc::makedev(10, 200)
            });
            is_tun
                && std::fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .is_ok_and(|info| {
                    info.lines()
                        .any(|l| l.strip_prefix("iff:").is_some_and(|v| v.trim() == ifname))
                })
        });
        if holds {
            out.push(pid);
        }
    }
    out
}

/// How a command run by [`run_with_timeout`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// Its PID, the id of its process group.
    pub pid: u32,
    /// Its exit status; `None` when it did not end in time and its process group was
    /// killed.
    pub status: Option<std::process::ExitStatus>,
    /// The first 4 KiB of what it wrote to its standard error before it ended.
    pub stderr: String,
}

/// Runs `command` (its standard input and output on /dev/null, its standard error read)
/// in a process group of its own, and waits for it at most `timeout`; past that the whole
/// group is killed. Its standard error is read once it has ended, without waiting for a
/// process it left behind that holds the pipe; one that writes more than a pipe holds
/// (64 KiB) before it ends waits, and so times out. `Err` if it cannot be started.
pub fn run_with_timeout(
    command: &mut std::process::Command,
    timeout: std::time::Duration,
) -> io::Result<Ran> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    const KEPT: usize = 4096;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait()? {
            Some(status) => break Some(status),
            None if started.elapsed() >= timeout => {
                // SAFETY: kill(2) on the process group of a child of ours that is not
                // reaped yet, so its id (the group's) is not reused.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    };
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        let fd = pipe.as_raw_fd();
        // SAFETY: fcntl(2) on the pipe's descriptor, which `pipe` owns.
        unsafe {
            libc::fcntl(
                fd,
                libc::F_SETFL,
                libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
            )
        };
        let mut buf = [0u8; KEPT];
        while stderr.len() < KEPT {
            match pipe.read(&mut buf[..KEPT - stderr.len()]) {
                Ok(0) | Err(_) => break,
                Ok(n) => stderr.extend_from_slice(&buf[..n]),
            }
        }
    }
    Ok(Ran {
        pid: child.id(),
        status,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

#[cfg(test)]
mod run_tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::run_with_timeout;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_command_ends_with_its_status_and_standard_error() {
        let ran = run_with_timeout(
            &mut sh("echo first >&2; echo why >&2; exit 3"),
            Duration::from_secs(5),
        )
        .expect("run");
        assert_eq!(ran.status.and_then(|s| s.code()), Some(3));
        assert_eq!(ran.stderr, "first\nwhy\n");
        let ran = run_with_timeout(&mut sh("true"), Duration::from_secs(5)).expect("run");
        assert!(ran.status.is_some_and(|s| s.success()));
        assert!(run_with_timeout(
            &mut Command::new("/nonexistent/hook"),
            Duration::from_secs(1)
        )
        .is_err());
    }

    #[test]
    fn past_its_timeout_the_whole_group_is_killed_and_a_process_left_behind_is_not_waited_for() {
        let started = Instant::now();
        // The shell, and a child of its that would outlive it.
        let ran = run_with_timeout(&mut sh("sleep 30 & sleep 30"), Duration::from_millis(300))
            .expect("run");
        assert_eq!(ran.status, None);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // A command that ends while something it started still holds its standard error.
        let started = Instant::now();
        let ran = run_with_timeout(
            &mut sh("echo gone >&2; sleep 3 & exit 1"),
            Duration::from_secs(10),
        )
        .expect("run");
        assert_eq!(ran.status.and_then(|s| s.code()), Some(1));
        assert_eq!(ran.stderr, "gone\n");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
