//! Freezing and thawing the processes of a cgroup, v2 (`cgroup.freeze`) or v1 (the
//! `freezer` controller).
//!
//! Freezing stops a guest's processes, not its network namespace: the kernel of a frozen
//! namespace still answers ARP, ICMP and TCP handshakes.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which cgroup interface a [`Cgroup`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The unified hierarchy: `cgroup.freeze` and `cgroup.events`.
    V2,
    /// The v1 `freezer` controller: `freezer.state`.
    V1,
}

/// Errors from [`Cgroup`] operations. Each variant names the cgroup's directory.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The directory has neither `cgroup.freeze` nor `freezer.state`.
    #[error(
        "Cgroup {} has no freezer: neither cgroup.freeze (v2) nor freezer.state (v1) found",
        .dir.display()
    )]
    NoFreezer {
        /// The directory.
        dir: PathBuf,
    },
    /// Writing the freeze or thaw request failed.
    #[error("Could not {} cgroup {}", if *.freeze { "freeze" } else { "thaw" }, .dir.display())]
    Write {
        /// The directory.
        dir: PathBuf,
        /// Freeze (true) or thaw (false).
        freeze: bool,
        /// The error of the write.
        #[source]
        source: io::Error,
    },
    /// The cgroup did not reach the state asked for in time.
    #[error(
        "Cgroup {} was not {} after {timeout:?}",
        .dir.display(),
        if *.freeze { "frozen" } else { "thawed" }
    )]
    Timeout {
        /// The directory.
        dir: PathBuf,
        /// Freeze (true) or thaw (false).
        freeze: bool,
        /// How long the call waited.
        timeout: Duration,
    },
    /// Reading the freezer state failed.
    #[error("Could not read the freezer state of cgroup {}", .dir.display())]
    ReadState {
        /// The directory.
        dir: PathBuf,
        /// The error of the read.
        #[source]
        source: io::Error,
    },
    /// Reading `cgroup.procs` failed.
    #[error("Could not read the processes of cgroup {}", .dir.display())]
    Pids {
        /// The directory.
        dir: PathBuf,
        /// The error of the read.
        #[source]
        source: io::Error,
    },
}

/// A cgroup whose processes can be frozen and thawed.
#[derive(Debug, Clone)]
pub struct Cgroup {
    dir: PathBuf,
    version: CgroupVersion,
}

impl Cgroup {
    /// Opens the cgroup at `dir`, telling the version from its files: `cgroup.freeze`
    /// means v2, `freezer.state` v1.
    pub fn open(dir: &Path) -> Result<Self, CgroupError> {
        let version = if dir.join("cgroup.freeze").is_file() {
            CgroupVersion::V2
        } else if dir.join("freezer.state").is_file() {
            CgroupVersion::V1
        } else {
            return Err(CgroupError::NoFreezer {
                dir: dir.to_owned(),
            });
        };
        Ok(Self {
            dir: dir.to_owned(),
            version,
        })
    }

    /// The interface in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Freezes the cgroup's processes and waits up to `timeout` until all are frozen.
    pub fn freeze(&self, timeout: Duration) -> Result<(), CgroupError> {
        self.set(true, timeout)
    }

    /// Thaws the cgroup's processes and waits up to `timeout` until the cgroup reads thawed.
    pub fn thaw(&self, timeout: Duration) -> Result<(), CgroupError> {
        self.set(false, timeout)
    }

    /// Whether the cgroup is frozen (v2: `frozen 1` in `cgroup.events`; v1: `FROZEN`).
    /// A v1 cgroup still `FREEZING` is not frozen.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        let read_err = |source| CgroupError::ReadState {
            dir: self.dir.clone(),
            source,
        };
        match self.version {
            CgroupVersion::V2 => {
                let events =
                    std::fs::read_to_string(self.dir.join("cgroup.events")).map_err(read_err)?;
                Ok(events.lines().any(|l| l.trim() == "frozen 1"))
            }
            CgroupVersion::V1 => {
                let state =
                    std::fs::read_to_string(self.dir.join("freezer.state")).map_err(read_err)?;
                Ok(state.trim() == "FROZEN")
            }
        }
    }

    /// The CPU time the cgroup's processes have used: `usage_usec` of a v2 `cpu.stat`.
    /// `None` for a v1 freezer cgroup, which does not account CPU time.
    pub fn cpu_usage(&self) -> Option<std::time::Duration> {
        if self.version != CgroupVersion::V2 {
            return None;
        }
        let text = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        let usec = text.lines().find_map(|l| l.strip_prefix("usage_usec "))?;
        usec.trim()
            .parse()
            .ok()
            .map(std::time::Duration::from_micros)
    }

    /// The processes in the cgroup (`cgroup.procs`).
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let text = std::fs::read_to_string(self.dir.join("cgroup.procs")).map_err(|source| {
            CgroupError::Pids {
                dir: self.dir.clone(),
                source,
            }
        })?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn set(&self, freeze: bool, timeout: Duration) -> Result<(), CgroupError> {
        let (file, value) = match (self.version, freeze) {
            (CgroupVersion::V2, true) => ("cgroup.freeze", "1"),
            (CgroupVersion::V2, false) => ("cgroup.freeze", "0"),
            (CgroupVersion::V1, true) => ("freezer.state", "FROZEN"),
            (CgroupVersion::V1, false) => ("freezer.state", "THAWED"),
        };
        std::fs::write(self.dir.join(file), value).map_err(|source| CgroupError::Write {
            dir: self.dir.clone(),
            freeze,
            source,
        })?;
        // A freeze takes well under a millisecond when nothing resists: poll fast at first.
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        loop {
            if self.is_frozen()? == freeze {
                return Ok(());
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(CgroupError::Timeout {
                    dir: self.dir.clone(),
                    freeze,
                    timeout,
                });
            }
            std::thread::sleep(pause.min(timeout - elapsed));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_without_freezer_files_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("vmnap-h{}-nofreezer", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let err = Cgroup::open(&dir).expect_err("no freezer files");
        let _ = std::fs::remove_dir(&dir);
        let text = err.to_string();
        assert!(text.contains(&dir.display().to_string()), "{text}");
        assert!(
            text.contains("cgroup.freeze") && text.contains("freezer.state"),
            "{text}"
        );
    }
}
