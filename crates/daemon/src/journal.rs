//! What the daemon has done to its guests, on disk, so that a daemon started after a crash
//! knows which guests it left asleep and what it changed on the bridge.
//!
//! One small JSON file per bridge worker, rewritten atomically (a temporary file, `fsync`,
//! `rename`, `fsync` of the directory) at each step of a sleep, and once a wake is done
//! (not before: a daemon that dies during a wake finds the guest asleep and stands in for
//! it, or wakes it, which is right either way). No file when every guest is awake.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a guest stands, as far as the daemon has changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The daemon is taking the guest's MAC and cutting its port.
    FallingAsleep,
    /// The guest is stopped and its port cut; the surrogate stands in.
    Asleep,
    /// The daemon is resuming the guest and handing its port back.
    Waking,
}

/// How the guest's port was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutKind {
    /// The bridge port was disabled.
    PortDisabled,
    /// The link was taken down.
    LinkDown,
}

/// One guest's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it stands.
    pub step: Step,
    /// Its port on the bridge.
    pub interface: String,
    /// How that port was cut, if it was.
    pub cut: Option<CutKind>,
    /// Its MAC, as the bridge's forwarding entry has it.
    pub mac: [u8; 6],
}

/// The journal of one bridge: an entry for every guest that is not simply awake.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The bridge.
    pub bridge: String,
    /// Entries by guest name.
    pub guests: BTreeMap<String, Entry>,
}

/// Failure to read or write the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read or written.
    #[error("cannot {action} the journal {path}")]
    Io {
        /// `read`, `write`, ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a journal.
    #[error("the journal {path} does not parse")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The journal file of `bridge` in `dir`.
pub fn path(dir: &Path, bridge: &str) -> PathBuf {
    dir.join(format!("journal-{bridge}.json"))
}

impl Journal {
    /// Reads the journal at `path`; an absent file is an empty journal.
    pub fn load(path: &Path) -> Result<Self, JournalError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| JournalError::Parse {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(JournalError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the journal to `path` atomically: a reader (or a daemon started after a crash)
    /// sees the old journal or the new one, never a part.
    /// An empty journal is no file at all.
    pub fn store(&self, path: &Path) -> Result<(), JournalError> {
        let io = |action, source| JournalError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        if self.guests.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", e)),
                _ => Ok(()),
            };
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("journals always serialize");
        let mut f = File::create(&tmp).map_err(|e| io("write", e))?;
        f.write_all(&text).map_err(|e| io("write", e))?;
        f.sync_all().map_err(|e| io("sync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_journal_loads_back_and_an_absent_one_is_empty() {
        let dir = std::env::temp_dir().join(format!("vmnap-journal-{}", std::process::id()));
        let p = path(&dir, "br0");
        assert_eq!(Journal::load(&p).expect("absent"), Journal::default());
        let mut j = Journal {
            bridge: "br0".into(),
            ..Journal::default()
        };
        j.guests.insert(
            "web1".into(),
            Entry {
                step: Step::Asleep,
                interface: "vg-web1".into(),
                cut: Some(CutKind::PortDisabled),
                mac: [2, 0, 0, 0, 1, 1],
            },
        );
        j.store(&p).expect("store");
        assert_eq!(Journal::load(&p).expect("load"), j);
        assert!(
            !p.with_extension("json.tmp").exists(),
            "no temporary file left"
        );
        let text = std::fs::read_to_string(&p).expect("text");
        assert!(
            text.contains("\"asleep\"") && text.contains("\"port-disabled\""),
            "{text}"
        );
        std::fs::write(&p, "{").expect("garble");
        assert!(matches!(Journal::load(&p), Err(JournalError::Parse { .. })));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
