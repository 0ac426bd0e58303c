//! The vmnap daemon: drives one surrogate per bridge from real sockets, runs the sleep and
//! wake sequences against the guests' backends, and answers `vmnap` commands on a unix
//! socket.
//!
//! It decides nothing about frames itself (that is `vmnap-core`), makes no syscall itself
//! (that is `vmnap-host` and `vmnap-hypervisor`), and parses no config text (that is
//! `vmnap-config`). Each bridge gets a worker thread that owns its surrogate, its capture
//! socket and its guests; the API thread only passes requests to the workers.

#![forbid(unsafe_code)]

pub mod api;
mod backend;
mod bridge;
mod discover;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tracing::{error, info, warn};
use vmnap_config::{BackendConfig, Config, GuestConfig, SleepMode};
use vmnap_core::idle::IdlePolicy;
use vmnap_hypervisor::{Backend, CgroupBackend};

use crate::api::{GuestStatus, Request, Response};
use crate::bridge::{BridgeHandle, BridgeWorker, Command, GuestSetup};

pub use bridge::port_names;

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
    /// A guest's libvirt domain could not be reached.
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
    /// Another daemon answers on the socket.
    #[error("another vmnap daemon is already listening on {0}")]
    AlreadyRunning(PathBuf),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}

/// Runs the daemon until SIGTERM or SIGINT; wakes every guest it put to sleep before it
/// returns.
pub fn run(config: Config) -> Result<(), StartError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(StartError::Signals)?;
    }
    run_until(config, &open_backend, &stop)
}

/// A guest's backend, opened, with the guest's bridge, port and MAC (from the config, or
/// from the backend where the config leaves them out).
pub struct Opened {
    /// The backend.
    pub backend: Box<dyn Backend>,
    /// The bridge the guest's port is on.
    pub bridge: String,
    /// The guest's port on the bridge.
    pub interface: String,
    /// The guest's MAC.
    pub mac: [u8; 6],
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("backend", &self.backend.kind())
            .field("bridge", &self.bridge)
            .field("interface", &self.interface)
            .finish_non_exhaustive()
    }
}

impl Opened {
    /// `backend` for a guest whose config names its bridge, port and MAC.
    pub fn from_config(guest: &GuestConfig, backend: Box<dyn Backend>) -> Result<Self, StartError> {
        let missing = |key: &'static str| StartError::Incomplete {
            guest: guest.name.clone(),
            key,
        };
        Ok(Self {
            backend,
            bridge: guest.bridge.clone().ok_or_else(|| missing("bridge"))?,
            interface: guest
                .interface
                .clone()
                .ok_or_else(|| missing("interface"))?,
            mac: guest.mac.ok_or_else(|| missing("mac"))?,
        })
    }
}

/// Opens the backend a guest's config asks for.
pub fn open_backend(guest: &GuestConfig, config: &Config) -> Result<Opened, StartError> {
    match &guest.backend {
        BackendConfig::Cgroup { dir } => {
            let backend =
                CgroupBackend::open(&guest.name, dir.clone()).map_err(StartError::Backend)?;
            Opened::from_config(guest, Box::new(backend))
        }
        BackendConfig::Qmp {
            socket,
            mode,
            qemu_command,
            state_file,
        } => {
            let backend = match (mode, state_file) {
                (SleepMode::Save, Some(state)) => vmnap_qmp::QmpBackend::save(
                    &guest.name,
                    qemu_command.iter().map(Into::into).collect(),
                    socket.clone(),
                    state.clone(),
                ),
                _ => vmnap_qmp::QmpBackend::pause(&guest.name, socket.clone()),
            };
            Opened::from_config(guest, Box::new(backend))
        }
        BackendConfig::Libvirt { domain, mode } => {
            let mode = match mode {
                SleepMode::Pause => vmnap_libvirt::Mode::Pause,
                SleepMode::Save => vmnap_libvirt::Mode::Save,
            };
            let libvirt = |source| StartError::Libvirt {
                guest: guest.name.clone(),
                source,
            };
            let mut backend =
                vmnap_libvirt::LibvirtBackend::open(&guest.name, &config.libvirt.uri, domain, mode)
                    .map_err(libvirt)?;
            let interfaces = backend.domain().interfaces().map_err(libvirt)?;
            // The interface with the configured MAC, or else the first on a bridge.
            let iface = interfaces
                .iter()
                .find(|i| guest.mac.is_none_or(|m| m == i.mac) && i.bridge.is_some())
                .ok_or_else(|| StartError::NoDomainInterface {
                    guest: guest.name.clone(),
                    domain: domain.clone(),
                })?;
            let tap = guest
                .interface
                .clone()
                .or_else(|| iface.tap.clone())
                .ok_or_else(|| StartError::NotRunning {
                    guest: guest.name.clone(),
                    domain: domain.clone(),
                })?;
            Ok(Opened {
                bridge: guest
                    .bridge
                    .clone()
                    .or_else(|| iface.bridge.clone())
                    .unwrap_or_default(),
                interface: tap,
                mac: iface.mac,
                backend: Box::new(backend),
            })
        }
    }
}

/// Opens a guest's backend and finds its bridge, port and MAC.
pub type BackendFactory = dyn Fn(&GuestConfig, &Config) -> Result<Opened, StartError>;

/// Runs the daemon until `stop` is set, with backends from `backends`; wakes every guest it
/// put to sleep before it returns. The network namespace is the calling thread's.
pub fn run_until(
    mut config: Config,
    backends: &BackendFactory,
    stop: &AtomicBool,
) -> Result<(), StartError> {
    discover::add_discovered(&mut config);
    let listener = bind(&config.api.socket)?;
    let mut handles = start_workers(&config, backends)?;
    vmnap_host::memory::release_free_memory();
    info!(socket = %config.api.socket.display(), guests = config.guests.len(), "vmnap is running");
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Socket {
            path: config.api.socket.clone(),
            source,
        })?;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => serve(stream, &handles),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Accept readiness and signals both end this wait early enough for people.
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => warn!(error = %e, "cannot accept an API connection"),
        }
    }
    info!("stopping: waking every guest vmnap put to sleep");
    for handle in &mut handles {
        let (tx, rx) = mpsc::channel();
        if handle.send(Command::Shutdown {
            wake: true,
            reply: tx,
        }) {
            let _ = rx.recv_timeout(Duration::from_secs(60));
        }
        if let Some(thread) = handle.thread.take() {
            let _ = thread.join();
        }
    }
    let _ = std::fs::remove_file(&config.api.socket);
    info!("vmnap stopped");
    Ok(())
}

fn bind(path: &Path) -> Result<UnixListener, StartError> {
    let err = |source| StartError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(StartError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

fn start_workers(
    config: &Config,
    backends: &BackendFactory,
) -> Result<Vec<BridgeHandle>, StartError> {
    let mut by_bridge: BTreeMap<String, Vec<GuestSetup>> = BTreeMap::new();
    for (order, guest) in config.guests.iter().enumerate() {
        let opened = backends(guest, config)?;
        let idle = guest.idle_after(&config.idle).map(|idle_after| IdlePolicy {
            cpu_percent: config.idle.cpu_percent,
            idle_after,
            keep_awake_while_connected: guest.keep_awake_while_connected.clone(),
        });
        by_bridge
            .entry(opened.bridge)
            .or_default()
            .push(GuestSetup {
                order,
                config: guest.clone(),
                interface: opened.interface,
                mac: opened.mac,
                idle,
                backend: opened.backend,
            });
    }
    let mut handles = Vec::new();
    for (bridge, guests) in by_bridge {
        let (worker, mut handle) =
            BridgeWorker::start(&bridge, guests, seed(), config.idle.interval)?;
        let name = format!("vmnap-{bridge}");
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || worker.run())
            .map_err(StartError::Poll)?;
        handle.thread = Some(thread);
        handles.push(handle);
    }
    Ok(handles)
}

/// A seed for TCP initial sequence numbers that differs between runs.
fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

/// Answers the requests on one API connection.
fn serve(stream: UnixStream, handles: &[BridgeHandle]) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => return warn!(error = %e, "cannot answer an API connection"),
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => handle(request, handles),
            Err(e) => Response::Error {
                message: format!("cannot read the request: {e}"),
            },
        };
        let mut text = serde_json::to_string(&response).expect("responses always serialize");
        text.push('\n');
        if writer.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

fn handle(request: Request, handles: &[BridgeHandle]) -> Response {
    match request {
        Request::Sleep { guest }
        | Request::Wake { guest }
        | Request::Pin { guest }
        | Request::Unpin { guest }
            if !handles.iter().any(|h| h.guests.contains(&guest)) =>
        {
            Response::Error {
                message: format!("no guest named {guest}"),
            }
        }
        Request::Sleep { guest } => one_guest(&guest, handles, |guest, reply| Command::Sleep {
            guest,
            reply,
        }),
        Request::Wake { guest } => one_guest(&guest, handles, |guest, reply| Command::Wake {
            guest,
            reply,
        }),
        Request::Pin { guest } => one_guest(&guest, handles, |guest, reply| Command::Pin {
            guest,
            pinned: true,
            reply,
        }),
        Request::Unpin { guest } => one_guest(&guest, handles, |guest, reply| Command::Pin {
            guest,
            pinned: false,
            reply,
        }),
        Request::Status => {
            let mut all: Vec<(usize, GuestStatus)> = Vec::new();
            for h in handles {
                let (tx, rx) = mpsc::channel();
                if h.send(Command::Status { reply: tx }) {
                    match rx.recv_timeout(Duration::from_secs(10)) {
                        Ok(list) => all.extend(list),
                        Err(_) => error!(bridge = %h.bridge, "the bridge's worker did not answer"),
                    }
                }
            }
            all.sort_by_key(|(order, _)| *order);
            Response::Status {
                guests: all.into_iter().map(|(_, s)| s).collect(),
            }
        }
    }
}

fn one_guest(
    guest: &str,
    handles: &[BridgeHandle],
    make: impl FnOnce(String, mpsc::Sender<Result<String, String>>) -> Command,
) -> Response {
    let Some(h) = handles.iter().find(|h| h.guests.iter().any(|g| g == guest)) else {
        return Response::Error {
            message: format!("no guest named {guest}"),
        };
    };
    let (tx, rx) = mpsc::channel();
    if !h.send(make(guest.to_owned(), tx)) {
        return Response::Error {
            message: format!("the worker of bridge {} has stopped", h.bridge),
        };
    }
    match rx.recv_timeout(api::CLIENT_TIMEOUT) {
        Ok(Ok(message)) => Response::Done { message },
        Ok(Err(message)) => Response::Error { message },
        Err(_) => Response::Error {
            message: format!("the worker of bridge {} did not answer", h.bridge),
        },
    }
}
