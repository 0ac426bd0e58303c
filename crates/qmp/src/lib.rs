//! QEMU control over QMP, for guests run without libvirt: a small blocking QMP client
//! ([`Qmp`]) on a unix socket, the wire format it speaks as pure functions ([`wire`]), and
//! [`QmpBackend`], a [`vmnap_hypervisor::Backend`] that pauses a guest (`stop` / `cont`),
//! pauses it and pages its file-backed RAM out of host memory (`pageout.rs`), or saves it to
//! a file and ends its QEMU process, restoring it by starting QEMU again with `-incoming`.
//!
//! It does not touch the network: cutting the guest's port, moving its MAC and replaying
//! its frames are the daemon's sequence around these calls. It does not configure the
//! guest's QEMU beyond adding its QMP socket and `-incoming` in save mode, and it does not
//! use an async runtime: every call blocks, with a timeout, on the caller's thread.

#![forbid(unsafe_code)]

mod agent;
mod backend;
mod client;
mod pageout;
pub mod wire;

pub use backend::{
    chain, LaunchError, QmpBackend, RestoreFailure, ResumeError, SaveFailure, StartError,
    SuspendError, Timeouts,
};
pub use client::{Qmp, QmpError, EVENT_QUEUE_LEN};
pub use wire::{Event, Greeting, Version};
