//! The vmnap daemon: drives one surrogate per bridge from real sockets, runs the sleep and
//! wake sequences against the guests' backends, and serves its HTTP API ([`api`]) on a unix
//! socket and, where configured, on TCP.
//!
//! It decides nothing about frames itself (that is `vmnap-core`), makes no syscall itself
//! (that is `vmnap-host` and `vmnap-hypervisor`), and parses no config text (that is
//! `vmnap-config`). Each bridge gets a worker thread that owns its surrogate, its capture
//! socket and its guests, and publishes what happens to them on an [`events::EventBus`] as it
//! happens; the API threads (one per connection) only pass requests to the workers and
//! stream the bus.

#![forbid(unsafe_code)]

pub mod api;
mod backend;
mod bridge;
#[cfg(feature = "libvirt")]
mod discover;
#[cfg(not(feature = "libvirt"))]
mod discover {
    //! Without libvirt there are no domains to discover; a config that asks is refused by
    //! [`vmnap_config::Config::load_for`] with [`crate::BUILTIN`], and here again for one that
    //! was read without it.
    use vmnap_config::{Config, GuestConfig};

    pub(crate) fn add_discovered(
        config: &mut Config,
        _managed: &[GuestConfig],
    ) -> Result<Vec<String>, String> {
        match config.libvirt.discover {
            None => Ok(Vec::new()),
            Some(_) => Err(
                "cannot discover libvirt domains: this vmnap was built without \
                            libvirt (cargo feature `libvirt`)"
                    .into(),
            ),
        }
    }
}
pub mod events;
pub mod http;
mod journal;
pub mod metrics;
pub mod page;
mod reload;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};
use vmnap_config::{BackendConfig, Builtin, Config, GuestConfig, SleepMode};
use vmnap_hypervisor::{Backend, CgroupBackend};

use crate::bridge::{BridgeHandle, BridgeWorker, Command, GuestSetup};
use crate::events::EventBus;
use crate::http::Conn;

/// The backends this build has: libvirt with the cargo feature `libvirt` (a default feature),
/// cgroup and QMP always. Configs are read for it ([`Config::load_for`]), so that a guest whose
/// backend is missing is refused with its file, line and key.
pub const BUILTIN: Builtin = Builtin {
    libvirt: cfg!(feature = "libvirt"),
};

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
    /// Another daemon answers on the socket.
    #[error("another vmnap daemon is already listening on {0}")]
    AlreadyRunning(PathBuf),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}

/// Changes the daemon's log filter at run time (`PUT /v1/log`); the program that installed
/// the log subscriber makes one.
pub struct LogControl {
    filter: Mutex<String>,
    set: Box<SetFilter>,
}

/// Puts a log filter in force, or says why not.
type SetFilter = dyn Fn(&str) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("filter", &self.get())
            .finish_non_exhaustive()
    }
}

impl LogControl {
    /// A control whose filter is `filter` now and which `set` changes (it returns why a
    /// filter is refused).
    pub fn new(
        filter: &str,
        set: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            filter: Mutex::new(filter.to_owned()),
            set: Box::new(set),
        }
    }

    /// The filter in force.
    pub fn get(&self) -> String {
        self.filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `filter` in force, or says why not.
    pub fn set(&self, filter: &str) -> Result<(), String> {
        let mut current = self.filter.lock().unwrap_or_else(|e| e.into_inner());
        (self.set)(filter)?;
        *current = filter.to_owned();
        Ok(())
    }
}

/// How the daemon was started, beyond its config.
#[derive(Debug, Default)]
pub struct Options {
    /// The file the config came from: reloads read it again. `None`: reloads are refused.
    pub config_path: Option<PathBuf>,
    /// Changes the log filter at run time. `None`: `PUT /v1/log` is refused.
    pub log: Option<LogControl>,
    /// Set (by a `SIGHUP` handler) to ask for a reload.
    pub reload: Option<Arc<AtomicBool>>,
}

/// Runs the daemon until SIGTERM or SIGINT, reloading its config (from
/// `options.config_path`) on SIGHUP; wakes every guest it put to sleep before it returns
/// (unless `[state] on_stop` says otherwise).
pub fn run(config: Config, mut options: Options) -> Result<(), StartError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(StartError::Signals)?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .map_err(StartError::Signals)?;
    options.reload = Some(hup);
    run_with(config, &open_backend, &stop, options)
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
// `config` holds only the libvirt URI that a build without libvirt does not need.
#[cfg_attr(not(feature = "libvirt"), allow(unused_variables))]
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
        #[cfg(not(feature = "libvirt"))]
        BackendConfig::Libvirt { .. } => Err(StartError::NotBuiltIn {
            guest: guest.name.clone(),
            backend: "libvirt",
        }),
        #[cfg(feature = "libvirt")]
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
pub type BackendFactory = dyn Fn(&GuestConfig, &Config) -> Result<Opened, StartError> + Sync;

/// Runs the daemon until `stop` is set, with backends from `backends`; wakes every guest it
/// put to sleep before it returns. The network namespace is the calling thread's.
pub fn run_until(
    config: Config,
    backends: &BackendFactory,
    stop: &AtomicBool,
) -> Result<(), StartError> {
    run_with(config, backends, stop, Options::default())
}

/// [`run_until`] with [`Options`].
pub fn run_with(
    mut config: Config,
    backends: &BackendFactory,
    stop: &AtomicBool,
    options: Options,
) -> Result<(), StartError> {
    let discovered = match discover::add_discovered(&mut config, &[]) {
        Ok(names) => names.into_iter().collect(),
        Err(e) => {
            warn!(error = %e, "cannot discover libvirt domains; going on with the configured guests only");
            std::collections::BTreeSet::new()
        }
    };
    let token = match &config.api.token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let listener = bind(&config.api.socket, config.api.socket_mode)?;
    let tcp = match config.api.listen {
        Some(addr) => {
            Some(TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })?)
        }
        None => None,
    };
    let bus = EventBus::new();
    let (handles, policies, placed) = start_workers(&config, backends, &bus)?;
    let bridges: Vec<&str> = handles.iter().map(|h| h.bridge.as_str()).collect();
    bridge::settle_orphan_journals(&config.state.dir, &bridges);
    vmnap_host::memory::release_free_memory();
    info!(
        socket = %config.api.socket.display(),
        listen = ?config.api.listen,
        guests = config.guests.len(),
        "vmnap is running"
    );
    let nonblocking = |r: std::io::Result<()>| {
        r.map_err(|source| StartError::Socket {
            path: config.api.socket.clone(),
            source,
        })
    };
    nonblocking(listener.set_nonblocking(true))?;
    if let Some(t) = &tcp {
        nonblocking(t.set_nonblocking(true))?;
    }
    // The accept loop sleeps in epoll until a client comes, waking every ACCEPT_WAIT to
    // look at the stop and reload flags (signals also end the wait early).
    let mut poll = mio::Poll::new().map_err(StartError::Poll)?;
    let mut ready = mio::Events::with_capacity(4);
    {
        use std::os::fd::AsRawFd;
        let registry = poll.registry();
        let fd = listener.as_raw_fd();
        registry
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(0),
                mio::Interest::READABLE,
            )
            .map_err(StartError::Poll)?;
        if let Some(t) = &tcp {
            let fd = t.as_raw_fd();
            registry
                .register(
                    &mut mio::unix::SourceFd(&fd),
                    mio::Token(1),
                    mio::Interest::READABLE,
                )
                .map_err(StartError::Poll)?;
        }
    }
    let reloader = reload::Reloader {
        path: options.config_path.clone(),
        backends,
        running: Mutex::new(reload::Running {
            config: config.clone(),
            placed,
            discovered,
        }),
    };
    let mut server = api::Server::new(handles, policies, bus, token, stop);
    server.reloader = Some(&reloader);
    server.log = options.log.as_ref();
    let hup = options.reload.clone();
    let active = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let server = &server;
        let active = &active;
        while !stop.load(Ordering::Relaxed) {
            if hup
                .as_ref()
                .is_some_and(|h| h.swap(false, Ordering::Relaxed))
            {
                info!("SIGHUP: reloading the config");
                let spawned = std::thread::Builder::new()
                    .name("vmnap-reload".into())
                    .spawn_scoped(scope, move || {
                        let answer = server.reload();
                        if answer.status == 200 {
                            info!("SIGHUP: the config is reloaded");
                        }
                    });
                if let Err(e) = spawned {
                    warn!(error = %e, "cannot start a thread for the reload");
                }
            }
            let mut accepted = Vec::new();
            match listener.accept() {
                Ok((s, _)) => accepted.push((Conn::Unix(s), false)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => warn!(error = %e, "cannot accept an API connection"),
            }
            if let Some(t) = &tcp {
                match t.accept() {
                    Ok((s, _)) => accepted.push((Conn::Tcp(s), true)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => warn!(error = %e, "cannot accept an API connection"),
                }
            }
            if accepted.is_empty() {
                // Every listener said WouldBlock: the next client is a new edge.
                if let Err(e) = poll.poll(&mut ready, Some(ACCEPT_WAIT)) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        warn!(error = %e, "cannot wait for API connections");
                        std::thread::sleep(ACCEPT_WAIT);
                    }
                }
                continue;
            }
            for (mut conn, over_tcp) in accepted {
                if active.load(Ordering::Relaxed) >= api::MAX_CONNECTIONS {
                    warn!("too many API connections; refusing one");
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
                    let busy = http::Response::error(503, "too many connections; try again");
                    let _ = http::write_response(&mut conn, &busy);
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let spawned = std::thread::Builder::new()
                    .name("vmnap-api".into())
                    .spawn_scoped(scope, move || {
                        server.serve(conn, over_tcp);
                        active.fetch_sub(1, Ordering::Relaxed);
                    });
                if let Err(e) = spawned {
                    active.fetch_sub(1, Ordering::Relaxed);
                    warn!(error = %e, "cannot start a thread for an API connection");
                }
            }
        }
        Ok::<(), StartError>(())
    })?;
    let mut handles = server.into_handles();
    let on_stop = reloader
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .config
        .state
        .on_stop;
    let wake = on_stop == vmnap_config::OnStop::Wake;
    if wake {
        info!("stopping: waking every guest vmnap put to sleep");
    } else {
        info!(
            "stopping: leaving sleeping guests asleep for the next start (on_stop = keep-asleep)"
        );
    }
    for handle in &mut handles {
        let (tx, rx) = mpsc::channel();
        if handle.send(Command::Shutdown { wake, reply: tx }) {
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

/// How long the accept loop waits for a client before it looks at the stop and reload flags.
const ACCEPT_WAIT: Duration = Duration::from_millis(100);

/// The bearer token in `path`, without surrounding whitespace.
fn read_token(path: &Path) -> Result<String, StartError> {
    let err = |message: String| StartError::Token {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("the file is empty".into()));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            "the token holds whitespace; write it on one line alone".into(),
        ));
    }
    Ok(token.to_owned())
}

fn bind(path: &Path, mode: u32) -> Result<UnixListener, StartError> {
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
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(listener)
}

/// Where workers keep their journals, and what they do with what they find there.
pub(crate) fn state_setup(config: &Config) -> bridge::StateSetup {
    bridge::StateSetup {
        dir: config.state.dir.clone(),
        recovery: match config.state.on_restart {
            vmnap_config::OnRestart::StandIn => bridge::Recovery::StandIn,
            vmnap_config::OnRestart::Wake => bridge::Recovery::Wake,
        },
    }
}

/// The workers, each guest's policy, and where each guest is.
type Started = (
    Vec<BridgeHandle>,
    BTreeMap<String, api::Policy>,
    BTreeMap<String, reload::Placed>,
);

fn start_workers(
    config: &Config,
    backends: &BackendFactory,
    bus: &EventBus,
) -> Result<Started, StartError> {
    let state = state_setup(config);
    let mut by_bridge: BTreeMap<String, Vec<GuestSetup>> = BTreeMap::new();
    let mut policies = BTreeMap::new();
    let mut placed = BTreeMap::new();
    for (order, guest) in config.guests.iter().enumerate() {
        let opened = backends(guest, config)?;
        policies.insert(guest.name.clone(), policy(guest, config, opened.mac));
        placed.insert(
            guest.name.clone(),
            reload::Placed {
                bridge: opened.bridge.clone(),
                mac: opened.mac,
            },
        );
        let idle = reload::idle_policy(guest, config);
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
        let (worker, mut handle) = BridgeWorker::start(
            &bridge,
            guests,
            seed(),
            config.idle.interval,
            Some(state.clone()),
            bus.clone(),
        )?;
        let name = format!("vmnap-{bridge}");
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || worker.run())
            .map_err(StartError::Poll)?;
        handle.thread = Some(thread);
        handles.push(handle);
    }
    Ok((handles, policies, placed))
}

/// What the API shows of a guest's config.
pub(crate) fn policy(guest: &GuestConfig, config: &Config, mac: [u8; 6]) -> api::Policy {
    let rules = |r: &[vmnap_core::PortRule]| r.iter().map(ToString::to_string).collect();
    let a = guest.answer;
    let answer = [
        (a.arp, "arp"),
        (a.ndp, "ndp"),
        (a.icmp_echo, "icmp-echo"),
        (a.tcp_echo, "tcp-echo"),
        (a.udp_echo, "udp-echo"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| name.to_owned())
    .collect();
    api::Policy {
        backend: guest.backend.kind().to_owned(),
        mode: guest.backend.mode().map(|m| m.as_str().to_owned()),
        wake_on: rules(&guest.wake_on),
        answer,
        idle_after_s: guest.idle_after(&config.idle).map(|d| d.as_secs_f64()),
        keep_awake_while_connected: rules(&guest.keep_awake_while_connected),
        mac: mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        ipv4: guest.ipv4.iter().map(ToString::to_string).collect(),
        ipv6: guest.ipv6.iter().map(ToString::to_string).collect(),
        vlan: guest.vlan,
        queue_frames: guest.queue_frames,
        queue_bytes: guest.queue_bytes,
        multicast: match guest.multicast {
            vmnap_core::MulticastPolicy::Queue => "queue",
            vmnap_core::MulticastPolicy::Drop => "drop",
        }
        .to_owned(),
        health_ports: guest.health.iter().map(|h| h.port).collect(),
    }
}

/// A seed for TCP initial sequence numbers that differs between runs.
pub(crate) fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}
