//! Finding cgroup mounts and removing cgroups (thaw, kill members, rmdir).

use std::io;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{CgroupKind, LabError};

/// Finds the mount point of the cgroup hierarchy of `kind` in `/proc/self/mountinfo`:
/// the `cgroup2` mount for [`CgroupKind::V2`], the v1 `cgroup` mount with the `freezer`
/// controller for [`CgroupKind::V1`]. Prefers `/sys/fs/cgroup` and `/sys/fs/cgroup/unified`
/// when several match.
pub fn find_mount(kind: CgroupKind) -> Result<PathBuf, LabError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| LabError::Io {
        what: "read /proc/self/mountinfo".into(),
        source: e,
    })?;
    let found = parse_mountinfo(&text, kind);
    let preferred = [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/freezer",
    ];
    found
        .iter()
        .find(|p| preferred.iter().any(|q| Path::new(q) == p.as_path()))
        .or(found.first())
        .cloned()
        .ok_or(LabError::NoCgroup(kind))
}

/// Mount points of the hierarchies of `kind` listed in a mountinfo text.
pub(crate) fn parse_mountinfo(text: &str, kind: CgroupKind) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("");
        let _source = right.next();
        let super_opts = right.next().unwrap_or("");
        let hit = match kind {
            CgroupKind::V2 => fstype == "cgroup2",
            CgroupKind::V1 => fstype == "cgroup" && super_opts.split(',').any(|o| o == "freezer"),
        };
        if hit {
            out.push(PathBuf::from(unescape_mount(mount_point)));
        }
    }
    out
}

/// Undoes mountinfo's octal escapes (`\040` for space and so on).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes the freezer state of the cgroup at `dir`: `cgroup.freeze` (V2) or
/// `freezer.state` (V1).
pub fn set_frozen(dir: &Path, kind: CgroupKind, frozen: bool) -> io::Result<()> {
    match kind {
        CgroupKind::V2 => std::fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
        CgroupKind::V1 => std::fs::write(
            dir.join("freezer.state"),
            if frozen { "FROZEN" } else { "THAWED" },
        ),
    }
}

/// PIDs listed in the cgroup's `cgroup.procs`.
pub fn pids(dir: &Path) -> io::Result<Vec<u32>> {
    Ok(std::fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Thaws the cgroup and SIGKILLs its members until `cgroup.procs` is empty (at most
/// `timeout`). Does not remove the directory.
pub(crate) fn kill_members(dir: &Path, kind: CgroupKind, timeout: Duration) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    // A task frozen in a v1 freezer cannot die: thaw first.
    if let Err(e) = set_frozen(dir, kind, false) {
        return Err(format!("thaw {}: {e}", dir.display()));
    }
    if kind == CgroupKind::V2 && dir.join("cgroup.kill").exists() {
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    }
    let deadline = Instant::now() + timeout;
    loop {
        let members = pids(dir).map_err(|e| format!("read {}/cgroup.procs: {e}", dir.display()))?;
        if members.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{} still holds PIDs {members:?}", dir.display()));
        }
        for pid in members {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        sleep(Duration::from_millis(10));
    }
}

/// Removes a cgroup directory: kills its members, then `rmdir`s (retrying briefly while
/// the kernel still counts exiting tasks).
pub(crate) fn remove(dir: &Path, kind: CgroupKind) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    kill_members(dir, kind, Duration::from_secs(5))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                if Instant::now() > deadline {
                    return Err(format!("rmdir {}: {e}", dir.display()));
                }
                sleep(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PURE_V2: &str =
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn finds_mounts() {
        assert_eq!(
            parse_mountinfo(HYBRID, CgroupKind::V2),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        assert_eq!(
            parse_mountinfo(HYBRID, CgroupKind::V1),
            vec![PathBuf::from("/sys/fs/cgroup/freezer")]
        );
        assert_eq!(
            parse_mountinfo(PURE_V2, CgroupKind::V2),
            vec![PathBuf::from("/sys/fs/cgroup")]
        );
        assert!(parse_mountinfo(PURE_V2, CgroupKind::V1).is_empty());
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
    }
}
