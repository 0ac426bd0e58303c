//! Freezing real cgroups, v2 and v1, with a child process in them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use vmnap_host::{Cgroup, CgroupVersion};

/// The mount point of the first mount with filesystem type `fstype` whose super options
/// contain `option` (if given), from /proc/self/mountinfo.
fn mount_of(fstype: &str, option: Option<&str>) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        let (ty, _src, opts) = (r.next()?, r.next()?, r.next().unwrap_or(""));
        let ok = ty == fstype && option.is_none_or(|o| opts.split(',').any(|x| x == o));
        ok.then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap_or("")))
    })
}

/// A cgroup directory with one busy child in it; on drop: thaw, kill the child by PID,
/// remove the directory.
struct Guard {
    dir: PathBuf,
    child: Child,
}

impl Guard {
    fn new(mount: &Path, tag: &str) -> Self {
        let dir = mount.join(format!("vmnap-h{}-{tag}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let child = match Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                panic!("spawn sh: {e}");
            }
        };
        let g = Self { dir, child };
        std::fs::write(g.dir.join("cgroup.procs"), g.child.id().to_string()).expect("move child");
        g
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.freeze"), "0");
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn state(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or("")
        .to_owned()
}

fn freeze_and_thaw(mount: &Path, tag: &str, version: CgroupVersion) {
    let g = Guard::new(mount, tag);
    let pid = g.child.id();
    let cg = Cgroup::open(&g.dir).expect("open");
    assert_eq!(cg.version(), version);
    assert_eq!(cg.dir(), g.dir);
    assert_eq!(cg.pids().expect("pids"), vec![pid]);
    assert!(!cg.is_frozen().expect("state"));

    let t = Instant::now();
    cg.freeze(Duration::from_secs(2)).expect("freeze");
    eprintln!("{version:?}: frozen in {:?}, {}", t.elapsed(), state(pid));
    assert!(cg.is_frozen().expect("state"));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cpu_ticks(pid), before, "a frozen process used CPU");
    assert!(!state(pid).contains("R (running)"), "{}", state(pid));
    if version == CgroupVersion::V1 {
        // The v1 freezer shows frozen tasks as D; v2 frozen tasks show S (in get_signal).
        assert!(state(pid).contains("D (disk sleep)"), "{}", state(pid));
    }

    cg.thaw(Duration::from_secs(2)).expect("thaw");
    assert!(!cg.is_frozen().expect("state"));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(cpu_ticks(pid) > before, "a thawed busy process used no CPU");
}

#[test]
fn v2_cgroup_freezes_and_thaws_its_process() {
    common::require(&[]);
    let mount = mount_of("cgroup2", None).expect("no cgroup2 mount in /proc/self/mountinfo");
    freeze_and_thaw(&mount, "v2", CgroupVersion::V2);
}

#[test]
fn v1_freezer_cgroup_freezes_and_thaws_its_process() {
    common::require(&[]);
    let mount = mount_of("cgroup", Some("freezer"))
        .expect("no cgroup v1 freezer mount in /proc/self/mountinfo");
    freeze_and_thaw(&mount, "v1", CgroupVersion::V1);
}

#[test]
fn open_on_a_plain_directory_names_it_and_what_was_looked_for() {
    let dir = std::env::temp_dir().join(format!("vmnap-h{}-plain", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let err = Cgroup::open(&dir).expect_err("no freezer files");
    let _ = std::fs::remove_dir(&dir);
    let text = err.to_string();
    assert!(text.contains(&*dir.to_string_lossy()), "{text}");
    assert!(
        text.contains("cgroup.freeze") && text.contains("freezer.state"),
        "{text}"
    );
}
