//! What can go wrong starting the daemon, and how errors are written out.

use std::path::PathBuf;

/// Failure to start the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No netlink socket.
    #[error("cannot open a netlink socket")]
    Netlink(#[source] vmnap_host::NetlinkError),
    /// A configured bridge does not exist.
    #[error("bridge {bridge} does not exist")]
    NoBridge {
        /// The bridge.
        bridge: String,
        /// Why.
        #[source]
        source: vmnap_host::NetlinkError,
    },
    /// A guest's interface does not exist.
    #[error("interface of guest {guest} does not exist")]
    NoInterface {
        /// The guest.
        guest: String,
        /// Why.
        #[source]
        source: vmnap_host::NetlinkError,
    },
    /// The surrogate's port could not be made.
    #[error("cannot set up the surrogate's port on bridge {bridge}")]
    Port {
        /// The bridge.
        bridge: String,
        /// Why.
        #[source]
        source: vmnap_host::NetlinkError,
    },
    /// The surrogate's port could not be opened.
    #[error("cannot capture on the surrogate's port on bridge {bridge}")]
    Capture {
        /// The bridge.
        bridge: String,
        /// Why.
        #[source]
        source: vmnap_host::OpenError,
    },
    /// A guest conflicts with another.
    #[error("cannot register guest")]
    Guest(#[source] vmnap_core::AddGuestError),
    /// A guest's backend could not be set up.
    #[error("cannot set up backend")]
    Backend(#[source] vmnap_hypervisor::OpenError),
    /// A guest's backend is not in this build (a cargo feature it was built without).
    #[error(
        "guest {guest} needs backend `{backend}`, which this vmnap was built without (cargo \
         feature `{backend}`)"
    )]
    NotBuiltIn {
        /// The guest.
        guest: String,
        /// The backend (and the cargo feature that has it).
        backend: &'static str,
    },
    /// A guest's libvirt domain could not be reached.
    #[cfg(feature = "libvirt")]
    #[error("cannot use the libvirt domain of guest {guest}")]
    Libvirt {
        /// The guest.
        guest: String,
        /// Why.
        #[source]
        source: vmnap_libvirt::LibvirtError,
    },
    /// A guest's domain has no interface on a bridge (with the configured MAC).
    #[error(
        "domain {domain} of guest {guest} has no interface on a bridge that vmnap can stand in on"
    )]
    NoDomainInterface {
        /// The guest.
        guest: String,
        /// The domain.
        domain: String,
    },
    /// A guest's domain is not running, so it has no tap yet.
    #[error("domain {domain} of guest {guest} is not running, so vmnap cannot find its tap; start it, or set `interface`")]
    NotRunning {
        /// The guest.
        guest: String,
        /// The domain.
        domain: String,
    },
    /// The config leaves out what this guest's backend cannot tell.
    #[error("guest {guest} needs `{key}` in the config")]
    Incomplete {
        /// The guest.
        guest: String,
        /// The key.
        key: &'static str,
    },
    /// The poller could not be made.
    #[error("cannot set up the event loop")]
    Poll(#[source] std::io::Error),
    /// The API socket could not be bound.
    #[error("cannot listen on {path}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TCP listener could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API token could not be read.
    #[error("cannot use the API token in {path}: {message}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The TLS certificate or key could not be used.
    #[error("cannot use the API's TLS file {path}: {message}")]
    Tls {
        /// The certificate or key file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Another daemon answers on the socket.
    #[error("another vmnap daemon is already listening on {0}")]
    AlreadyRunning(PathBuf),
    /// Something that is not a socket left by a daemon is at the socket's path; vmnap
    /// removes nothing else.
    #[error(
        "{path} exists and is not a stale vmnap socket ({what}); move it away or set [api] socket"
    )]
    NotOurSocket {
        /// The path.
        path: PathBuf,
        /// What is there.
        what: String,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}

/// An error and its sources, joined with `: `.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
