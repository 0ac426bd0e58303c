//! Test harness: network namespaces and commands, cleaned up by Drop guards.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use vmnap_host::PacketSocket;
use vmnap_host::RecvMeta;

/// Fails the test, saying what is missing, unless we are root and have the tools.
pub fn require(tools: &[&str]) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests need root (network namespaces, cgroups): run them as root"
    );
    for t in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            .unwrap_or(false);
        assert!(found, "these tests need the `{t}` tool in PATH (iproute2)");
    }
}

/// Runs a command, failing the test with its stderr if it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("could not run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace `vmnap-h<pid>-<tag>`, deleted (with all its links) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        require(&["ip", "bridge"]);
        let name = format!("vmnap-h{}-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        // No IPv6 chatter (router solicitations, DAD) on the test links.
        ns.ip(&["exec", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.ip(&[
            "exec",
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ns
    }

    /// `ip netns <args...>` prefixed with this namespace: `ip -n NS args` or `ip netns exec NS args`.
    pub fn ip(&self, args: &[&str]) -> String {
        if args.first() == Some(&"exec") {
            let mut v = vec!["ip", "netns", "exec", &self.name];
            v.extend_from_slice(&args[1..]);
            run(&v)
        } else {
            let mut v = vec!["ip", "-n", &self.name];
            v.extend_from_slice(args);
            run(&v)
        }
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: `file` is an open namespace file; setns only affects this thread.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Reads frames from `sock` until one satisfies `want`, for up to 2 s.
pub fn recv_until(
    sock: &PacketSocket,
    buf: &mut [u8],
    want: impl Fn(&[u8], &RecvMeta) -> bool,
) -> RecvMeta {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match sock.recv(buf).expect("recv") {
            Some(meta) if want(&buf[..meta.len], &meta) => return meta,
            Some(_) => {}
            None => {
                assert!(
                    Instant::now() < deadline,
                    "no matching frame on {} within 2 s",
                    sock.name()
                );
                let mut pfd = libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the call.
                unsafe { libc::poll(&mut pfd, 1, 50) };
            }
        }
    }
}

/// Whether any frame satisfying `want` arrives on `sock` within `wait`.
pub fn any_within(
    sock: &PacketSocket,
    buf: &mut [u8],
    wait: Duration,
    want: impl Fn(&[u8], &RecvMeta) -> bool,
) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match sock.recv(buf).expect("recv") {
            Some(meta) if want(&buf[..meta.len], &meta) => return true,
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    false
}

pub fn buffer() -> Vec<u8> {
    vec![0u8; vmnap_wire::MAX_FRAME_LEN + 16]
}
