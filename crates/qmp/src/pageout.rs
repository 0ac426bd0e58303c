//! Page-out for a QEMU guest driven over QMP: its RAM file is found through QMP (the
//! memory backends QEMU lists, and the file of the one that is shared), its QEMU process
//! through the QMP socket's peer; [`vmnap_host::pageout::RamFile`] does the rest.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use vmnap_host::pageout::RamFile;

use crate::client::{Qmp, QmpError};

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
pub(crate) fn find(qmp: &mut Qmp) -> Result<Arc<RamFile>, FindError> {
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
        match RamFile::open(pid, &PathBuf::from(&path)) {
            Ok(ram) => return Ok(Arc::new(ram)),
            // QEMU's path, as QEMU sees it: in another mount namespace or root it may not
            // be this one's. The file QEMU maps shared the most of is the same file.
            Err(vmnap_host::pageout::PageOutError::Open { .. }) => match RamFile::find_in(pid) {
                Ok(ram) => return Ok(Arc::new(ram)),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(FindError::NoSharedFile, FindError::Host))
}
