//! The guests the daemon manages now: the bridges' workers and each guest's policy.
//!
//! The server's connections read it; the reloader alone writes it. It sits below both, so
//! that neither has to know the other's insides.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use vmnap_api::Policy;

use crate::bridge::BridgeHandle;

/// The workers and policies, each behind its own lock.
#[derive(Debug)]
pub(crate) struct Registry {
    handles: RwLock<Vec<BridgeHandle>>,
    policies: RwLock<BTreeMap<String, Policy>>,
}

impl Registry {
    pub(crate) fn new(handles: Vec<BridgeHandle>, policies: BTreeMap<String, Policy>) -> Self {
        Registry {
            handles: RwLock::new(handles),
            policies: RwLock::new(policies),
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

    /// Guest `name`'s policy, if it is configured.
    pub(crate) fn policy(&self, name: &str) -> Option<Policy> {
        // A reload that panicked left the map whole: it is replaced in one assignment.
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        policies.get(name).cloned()
    }

    /// Replaces every policy at once.
    pub(crate) fn set_policies(&self, policies: BTreeMap<String, Policy>) {
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = policies;
    }

    /// The workers, for shutdown.
    pub(crate) fn into_workers(self) -> Vec<BridgeHandle> {
        self.handles.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}
