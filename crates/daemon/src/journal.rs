//! What the daemon has done to its guests, on disk, so that a daemon started after a crash
//! knows which guests it left asleep and what it changed on the bridge.
//!
//! One small JSON file per bridge worker, rewritten atomically (a temporary file, `fsync`,
//! `rename`, `fsync` of the directory) at each step of a sleep, and once a wake is done
//! (not before: a daemon that dies during a wake finds the guest asleep and stands in for
//! it, or wakes it, which is right either way). No file when every guest is awake.
//!
//! The worker never waits for the disk: a [`Writer`] thread keeps the journal, takes each
//! guest's change as it comes (one entry, not the whole journal: 10,000 sleeping guests would
//! otherwise copy it 10,000 times), writes it once for all the changes that came while it
//! wrote, and says up to which change the file holds. The one step that must be on disk
//! before it is taken, the cut of a guest's port, waits for that; the others may be lost in
//! a crash, which leaves the journal one step behind, and a daemon started after it finishes
//! that step by waking.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;

use mio::Waker;
use serde::{Deserialize, Serialize};
use tracing::{error, warn};
use vmnap_core::{Cut, GuestState};

/// The journal keeps the core's own values, [`GuestState`] and [`Cut`], under the names it
/// has always written: `falling-asleep` and `asleep`, `port-disabled` and `link-down`.
mod names {
    use serde::{Deserialize, Deserializer, Serializer};
    use vmnap_core::{Cut, GuestState};

    pub fn state_name(state: &GuestState) -> &'static str {
        match state {
            GuestState::Awake => "awake",
            GuestState::FallingAsleep => "falling-asleep",
            GuestState::Sleeping => "asleep",
            GuestState::Waking { .. } => "waking",
        }
    }

    pub(super) mod state {
        use super::*;

        pub fn serialize<S: Serializer>(state: &GuestState, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(state_name(state))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<GuestState, D::Error> {
            let name = String::deserialize(d)?;
            Ok(match name.as_str() {
                "awake" => GuestState::Awake,
                "falling-asleep" => GuestState::FallingAsleep,
                "asleep" => GuestState::Sleeping,
                "waking" => GuestState::Waking { port_up: false },
                other => {
                    return Err(serde::de::Error::unknown_variant(
                        other,
                        &["awake", "falling-asleep", "asleep", "waking"],
                    ))
                }
            })
        }
    }

    pub(super) mod cut {
        use super::*;

        pub fn serialize<S: Serializer>(cut: &Option<Cut>, s: S) -> Result<S::Ok, S::Error> {
            match cut {
                None => s.serialize_none(),
                Some(Cut::PortDisabled) => s.serialize_some("port-disabled"),
                Some(Cut::LinkDown) => s.serialize_some("link-down"),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cut>, D::Error> {
            match Option::<String>::deserialize(d)?.as_deref() {
                None => Ok(None),
                Some("port-disabled") => Ok(Some(Cut::PortDisabled)),
                Some("link-down") => Ok(Some(Cut::LinkDown)),
                Some(other) => Err(serde::de::Error::unknown_variant(
                    other,
                    &["port-disabled", "link-down"],
                )),
            }
        }
    }
}

/// One guest's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it stands: falling asleep or asleep (an awake guest has no entry).
    #[serde(rename = "step", with = "names::state")]
    pub state: GuestState,
    /// Its port on the bridge.
    pub interface: String,
    /// How that port was cut, if it was.
    #[serde(with = "names::cut")]
    pub cut: Option<Cut>,
    /// Its MAC, as the bridge's forwarding entry has it.
    pub mac: [u8; 6],
    /// Its TCP connections (its address and port, then the peer's) when vmnap knew them
    /// all; absent while it was still learning them. A guest stood in for again after a
    /// restart is woken only for these, and for new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<[SocketAddr; 2]>>,
    /// When it fell asleep, in milliseconds since the Unix epoch: a restart counts its
    /// `max_sleep`, and its time asleep, from then. Absent in journals of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asleep_since_ms: Option<u64>,
    /// The addresses learned from its traffic (beside its configured ones), answered for
    /// again after a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned: Vec<std::net::IpAddr>,
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
        let dir = path.parent().unwrap_or(Path::new("."));
        if self.guests.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", e)),
                Err(_) => Ok(()),
                // The removal is on disk only once the directory is: else a crash could bring
                // back a journal of guests that are awake and handed back.
                Ok(()) => File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io("sync the directory of", e)),
            };
        }
        std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("journals always serialize");
        let mut f = File::create(&tmp).map_err(|e| io("write", e))?;
        f.write_all(&text).map_err(|e| io("write", e))?;
        f.sync_all().map_err(|e| io("sync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync the directory of", e))
    }
}

/// One guest's change to the journal, or a request to write it as it is.
#[derive(Debug)]
enum Change {
    Put(String, Entry),
    Remove(String),
    Flush,
}

/// Writes a bridge's journal on a thread of its own (see the module documentation).
#[derive(Debug)]
pub(crate) struct Writer {
    tx: Option<Sender<(u64, Change)>>,
    written: Arc<AtomicU64>,
    handed: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread that keeps bridge `bridge`'s journal, empty, and writes it to
    /// `path`; `waker` is woken after each write.
    pub(crate) fn start(path: PathBuf, bridge: String, waker: Arc<Waker>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<(u64, Change)>();
        let written = Arc::new(AtomicU64::new(0));
        let done = Arc::clone(&written);
        let thread = std::thread::Builder::new()
            .name("vmnap-journal".into())
            .spawn(move || {
                let mut journal = Journal {
                    bridge,
                    guests: BTreeMap::new(),
                };
                let apply = |journal: &mut Journal, change| match change {
                    Change::Put(name, entry) => {
                        journal.guests.insert(name, entry);
                    }
                    Change::Remove(name) => {
                        journal.guests.remove(&name);
                    }
                    Change::Flush => {}
                };
                while let Ok((mut last, change)) = rx.recv() {
                    apply(&mut journal, change);
                    // The changes that came meanwhile are written at once: a group commit.
                    while let Ok((n, change)) = rx.try_recv() {
                        apply(&mut journal, change);
                        last = n;
                    }
                    if let Err(e) = journal.store(&path) {
                        error!(error = %crate::error::chain(&e), "cannot write the journal");
                    }
                    done.store(last, Ordering::Release);
                    if let Err(e) = waker.wake() {
                        warn!(error = %e, "cannot wake the bridge's worker");
                    }
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            written,
            handed: 0,
            thread: Some(thread),
        })
    }

    /// Hands over guest `name`'s entry, to be written; returns the change's number, which
    /// [`Self::written`] reaches once the file holds it.
    pub(crate) fn put(&mut self, name: String, entry: Entry) -> u64 {
        self.send(Change::Put(name, entry))
    }

    /// Hands over the removal of guest `name`'s entry; see [`Self::put`].
    pub(crate) fn remove(&mut self, name: String) -> u64 {
        self.send(Change::Remove(name))
    }

    /// Asks for the journal to be written as it is; see [`Self::put`].
    pub(crate) fn flush(&mut self) -> u64 {
        self.send(Change::Flush)
    }

    fn send(&mut self, change: Change) -> u64 {
        self.handed += 1;
        if let Some(tx) = &self.tx {
            if tx.send((self.handed, change)).is_err() {
                error!("the journal's writer has stopped; the journal is not kept");
                self.written.store(self.handed, Ordering::Release);
            }
        }
        self.handed
    }

    /// The number of the last journal written (a write that failed counts, and is logged).
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }
}

impl Drop for Writer {
    /// Writes what was handed over, then ends the thread.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
                state: GuestState::Sleeping,
                interface: "vg-web1".into(),
                cut: Some(Cut::PortDisabled),
                mac: [2, 0, 0, 0, 1, 1],
                connections: Some(vec![[
                    "198.18.0.11:22".parse().expect("address"),
                    "[2001:db8::1]:40000".parse().expect("address"),
                ]]),
                asleep_since_ms: Some(1_796_000_000_000),
                learned: vec!["198.18.0.77".parse().expect("address")],
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
