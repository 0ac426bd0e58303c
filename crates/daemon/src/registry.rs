//! The guests the daemon manages now: the bridges' workers, each with its guests' names.
//!
//! The server's connections read it; the reloader alone writes it. It sits below both, so
//! that neither has to know the other's insides.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::bridge::BridgeHandle;

/// The workers, behind a lock. (Each guest's policy is made from the config when asked
/// for: kept, it was half a kilobyte a guest.)
#[derive(Debug)]
pub(crate) struct Registry {
    handles: RwLock<Vec<BridgeHandle>>,
}

impl Registry {
    pub(crate) fn new(handles: Vec<BridgeHandle>) -> Self {
        Registry {
            handles: RwLock::new(handles),
        }
    }

    /// The bridges' workers, as the last reload left them.
    pub(crate) fn workers(&self) -> RwLockReadGuard<'_, Vec<BridgeHandle>> {
        // A reload that panicked left the list whole: each change is one push or removal.
        self.handles.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The bridges' workers, for a reload to add and remove some.
    pub(crate) fn workers_mut(&self) -> RwLockWriteGuard<'_, Vec<BridgeHandle>> {
        self.handles.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a worker runs guest `name`.
    pub(crate) fn has_guest(&self, name: &str) -> bool {
        self.workers()
            .iter()
            .any(|h| h.guests.iter().any(|g| g == name))
    }

    /// The workers, for shutdown.
    pub(crate) fn into_workers(self) -> Vec<BridgeHandle> {
        self.handles.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}
