//! What `vmnap check-config` finds on the machine for a guest that sleeps by page-out:
//! whether its RAM is a file mapped shared, so that the mode can apply, and what would make
//! a wake bring back more than the guest touches.
//!
//! It looks without disturbing a daemon that runs: it speaks no QMP (a QEMU monitor serves
//! one client at a time, and the daemon is that client), it only connects to the monitor's
//! socket to learn QEMU's PID from the kernel, and it only reads from libvirt.

use std::fmt;

use vmnap_config::{BackendConfig, Config, GuestConfig, SleepMode};
use vmnap_hypervisor::PageOut;

use crate::error::chain;

/// What was found for one guest's page-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageOutCheck {
    /// The mode applies: where the RAM is, and what would make its wakes costly (empty:
    /// nothing).
    Ready {
        /// Where the RAM is ([`PageOut::describe`]).
        ram: String,
        /// One sentence each ([`PageOut::caveats`]).
        caveats: Vec<String>,
    },
    /// It cannot: the guest will sleep paused, for this reason.
    Unavailable(String),
    /// It cannot be told now (QEMU does not run, libvirt cannot be reached), for this reason.
    Unknown(String),
}

impl fmt::Display for PageOutCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageOutCheck::Ready { ram, caveats } if caveats.is_empty() => {
                write!(f, "page-out ready: its RAM is {ram}")
            }
            PageOutCheck::Ready { ram, caveats } => write!(
                f,
                "page-out ready, but {}; its RAM is {ram}",
                caveats.join("; ")
            ),
            PageOutCheck::Unavailable(why) => {
                write!(f, "page-out cannot apply, it would sleep paused: {why}")
            }
            PageOutCheck::Unknown(why) => write!(f, "page-out not checked: {why}"),
        }
    }
}

/// What the machine says of `guest`'s page-out; `None` for a guest whose sleep is not a
/// page-out.
// `config` holds only the libvirt URI, which a build without libvirt does not need.
#[cfg_attr(not(feature = "libvirt"), allow(unused_variables))]
pub fn check_page_out(guest: &GuestConfig, config: &Config) -> Option<PageOutCheck> {
    if guest.backend.mode() != Some(SleepMode::Pageout) {
        return None;
    }
    Some(match &guest.backend {
        BackendConfig::Cgroup { .. } => return None,
        BackendConfig::Qmp { socket, .. } => check_qmp(socket),
        #[cfg(feature = "libvirt")]
        BackendConfig::Libvirt { domain, .. } => check_libvirt(guest, &config.libvirt.uri, domain),
        #[cfg(not(feature = "libvirt"))]
        BackendConfig::Libvirt { .. } => {
            PageOutCheck::Unknown("this vmnap is built without libvirt".to_owned())
        }
    })
}

/// A QMP guest: QEMU is the process listening on the monitor's socket; its RAM, the file it
/// maps shared the most of.
fn check_qmp(socket: &std::path::Path) -> PageOutCheck {
    let stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            return PageOutCheck::Unknown(format!(
                "QEMU does not seem to run (cannot connect to {}: {e})",
                socket.display()
            ))
        }
    };
    let pid = match vmnap_host::process::Process::of_peer(&stream) {
        Ok(p) => p.pid(),
        Err(e) => {
            return PageOutCheck::Unknown(format!(
                "cannot tell which process listens on {}: {e}",
                socket.display()
            ))
        }
    };
    drop(stream);
    match vmnap_host::pageout::RamFile::find_in(pid) {
        Ok(ram) => PageOutCheck::Ready {
            ram: ram.describe(),
            caveats: ram.caveats(),
        },
        Err(e @ vmnap_host::pageout::PageOutError::Process { .. }) => {
            PageOutCheck::Unknown(format!(
                "{} (check-config needs root to read QEMU's mappings)",
                chain(&e)
            ))
        }
        Err(e) => PageOutCheck::Unavailable(format!(
            "{}: QEMU's RAM must be a file mapped shared (-object \
             memory-backend-file,share=on,mem-path=FILE,...)",
            chain(&e)
        )),
    }
}

/// A libvirt domain: its XML must back its memory with a file, shared; while it runs, its
/// QEMU is found as the daemon finds it (the process holding its tap).
#[cfg(feature = "libvirt")]
fn check_libvirt(guest: &GuestConfig, uri: &str, domain: &str) -> PageOutCheck {
    use vmnap_hypervisor::Backend;
    use vmnap_libvirt::{DomainState, LibvirtBackend, Mode};

    let unknown = |e: &dyn std::error::Error| PageOutCheck::Unknown(chain(e));
    let mut backend = match LibvirtBackend::open(&guest.name, uri, domain, Mode::Pageout) {
        Ok(b) => b,
        Err(e) => return unknown(&e),
    };
    let backing = match backend.domain().memory_backing() {
        Ok(b) => b,
        Err(e) => return unknown(&e),
    };
    if !backing.is_file_shared() {
        return PageOutCheck::Unavailable(format!(
            "domain {domain}'s memory is {} and {}: its XML needs <memoryBacking><source \
             type='file'/><access mode='shared'/></memoryBacking>",
            match backing.source.as_deref() {
                Some("file") => "file-backed".to_owned(),
                Some(other) => format!("{other}-backed"),
                None => "anonymous".to_owned(),
            },
            if backing.shared { "shared" } else { "private" },
        ));
    }
    match backend.domain().state() {
        Ok(DomainState::Running | DomainState::Paused) => {}
        Ok(_) => {
            return PageOutCheck::Unknown(format!(
                "domain {domain} does not run; its XML backs its memory with a file, shared"
            ))
        }
        Err(e) => return unknown(&e),
    }
    match backend.page_out() {
        Some(Ok(h)) => PageOutCheck::Ready {
            ram: h.describe(),
            caveats: h.caveats(),
        },
        Some(Err(e)) => PageOutCheck::Unavailable(e.reason),
        None => PageOutCheck::Unknown("the backend does not page out".to_owned()),
    }
}
