//! Page-out for a QEMU guest driven over QMP: its RAM file is found through QMP (the
//! memory backends QEMU lists, and the file of the one that is shared), its QEMU process
//! through the QMP socket's peer, and [`vmnap_host::pageout::RamFile`] does the rest.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::{json, Value};
use vmnap_host::pageout::RamFile;
use vmnap_hypervisor::{PageOut, PagedOut};

use crate::client::{Qmp, QmpError};

/// A guest's RAM file and its QEMU, as found over QMP.
#[derive(Debug)]
pub(crate) struct QmpPageOut {
    ram: RamFile,
}

impl QmpPageOut {
    /// QEMU's PID.
    pub(crate) fn pid(&self) -> u32 {
        self.ram.pid()
    }

    fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.ram.huge_pages_advised().unwrap_or(false) {
            out.push(
                "QEMU advised huge pages on the guest's RAM, so each page it touches after a \
                 page-out brings 4 MiB back: start QEMU with `vmnap run-qemu`"
                    .to_owned(),
            );
        }
        if let Some(kib) = self.ram.readahead_kib().filter(|&k| k > 0) {
            out.push(format!(
                "the device of {} reads {kib} KiB ahead, so each page the guest touches after \
                 a page-out brings up to that much back: keep RAM files on a device with \
                 read_ahead_kb 0",
                self.ram.path().display()
            ));
        }
        out
    }
}

impl PageOut for QmpPageOut {
    fn page_out(
        &self,
        cancel: &AtomicBool,
    ) -> Result<PagedOut, Box<dyn std::error::Error + Send + Sync>> {
        let e = self.ram.evict_unless(cancel)?;
        Ok(PagedOut {
            before: e.before.cached,
            after: e.after.cached,
            written: e.before.dirty,
            write_back: e.write_back,
            took: e.took,
            cancelled: e.cancelled,
        })
    }

    fn resident(&self) -> Option<u64> {
        self.ram.resident().ok().map(|r| r.cached)
    }

    fn start_write_back(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.ram.start_write_back()?)
    }

    fn caveats(&self) -> Vec<String> {
        self.notes()
    }
}

/// Why a guest's RAM file could not be found.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FindError {
    /// A QMP exchange failed.
    #[error("QMP: {0}")]
    Qmp(#[from] QmpError),
    /// The kernel did not say which process serves the QMP socket.
    #[error("cannot tell which process QEMU is: {0}")]
    Peer(std::io::Error),
    /// No memory backend is a shared mapping of a file.
    #[error(
        "its RAM is not a shared mapping of a file (give QEMU -object \
         memory-backend-file,id=ram0,size=...,mem-path=FILE,share=on -machine \
         memory-backend=ram0)"
    )]
    NoSharedFile,
    /// The file was found but cannot be used.
    #[error(transparent)]
    Host(#[from] vmnap_host::pageout::PageOutError),
}

/// Finds the guest's RAM file over `qmp`: the memory backends `query-memdev` lists that are
/// shared, and the first of those whose `mem-path` (`qom-get`) names a file that QEMU (the
/// socket's peer) maps shared.
pub(crate) fn find(qmp: &mut Qmp) -> Result<Arc<QmpPageOut>, FindError> {
    let pid = qmp.peer().map_err(FindError::Peer)?.pid();
    let memdevs = qmp.execute("query-memdev", None)?;
    let shared = memdevs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m.get("share").and_then(Value::as_bool) == Some(true))
        .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect::<Vec<_>>();
    let mut last = None;
    for id in shared {
        let path = qmp.execute(
            "qom-get",
            Some(json!({ "path": format!("/objects/{id}"), "property": "mem-path" })),
        );
        // A shared backend without a file (memory-backend-ram, memfd) has no mem-path.
        let Ok(Value::String(path)) = path else {
            continue;
        };
        match RamFile::open(pid, &PathBuf::from(path)) {
            Ok(ram) => return Ok(Arc::new(QmpPageOut { ram })),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(FindError::NoSharedFile, FindError::Host))
}
