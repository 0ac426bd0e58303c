//! The vmnap daemon: drives one surrogate per bridge from real sockets, runs the sleep and
//! wake sequences against the guests' backends, and serves its HTTP API ([`vmnap_api`]) on a
//! unix socket and, where configured, on TCP.
//!
//! It decides nothing about frames itself (that is `vmnap-core`), makes no syscall itself
//! (that is `vmnap-host` and `vmnap-hypervisor`), and parses no config text (that is
//! `vmnap-config`). Each bridge gets a worker thread that owns its surrogate, its capture
//! socket and its guests, and publishes what happens to them on an [`events::EventBus`] as it
//! happens; the API threads (one per connection) only pass requests to the workers and
//! stream the bus.

#![forbid(unsafe_code)]

mod backend;
mod backoff;
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
mod error;
pub mod events;
#[cfg(feature = "libvirt")]
mod follow;
mod gate;
mod hooks;
mod journal;
mod learn;
pub mod metrics;
pub mod page;
mod ports;
pub mod probe;
mod registry;
mod reload;
mod schedule;
mod server;
mod start;
mod tls;

use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};
use vmnap_config::{Builtin, Config};

use vmnap_api::http::{self, Conn};

use crate::bridge::Command;
use crate::events::EventBus;
use crate::registry::Registry;
use crate::server::Server;

pub use crate::error::StartError;
pub use crate::start::{open_backend, BackendFactory, Opened};

/// The backends this build has: libvirt with the cargo feature `libvirt` (a default feature),
/// cgroup and QMP always. Configs are read for it ([`Config::load_for`]), so that a guest whose
/// backend is missing is refused with its file, line and key.
pub const BUILTIN: Builtin = Builtin {
    libvirt: cfg!(feature = "libvirt"),
};

pub use bridge::port_names;

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

/// Allocations of this size or more are mapped on their own, and returned whole when freed
/// ([`vmnap_host::memory::map_large_allocations`]).
const LARGE_ALLOCATION: u32 = 128 * 1024;

/// Runs the daemon until SIGTERM or SIGINT, reloading its config (from
/// `options.config_path`) on SIGHUP; wakes every guest it put to sleep before it returns
/// (unless `[state] on_stop` says otherwise).
pub fn run(config: Config, mut options: Options) -> Result<(), StartError> {
    vmnap_host::memory::limit_arenas(1);
    vmnap_host::memory::map_large_allocations(LARGE_ALLOCATION);
    // A guest holds a socket or two on its port (its connections, and while awake its
    // idleness): thousands of guests need more descriptors than a default soft limit.
    if let Err(e) = vmnap_host::process::raise_open_files_limit() {
        warn!(error = %e, "cannot raise the limit on open files; with many guests, some cannot be followed");
    }
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
    let tls = config
        .api
        .tls
        .as_ref()
        .map(tls::server_config)
        .transpose()?;
    // Another daemon on the socket is told as such, before the TCP port it may hold too;
    // the socket appears only once the rest is up (`publish`, below).
    let unpublished = bind(&config.api.socket, config.api.socket_mode)?;
    let tcp = match config.api.listen {
        Some(addr) => {
            if !addr.ip().is_loopback() && tls.is_none() {
                warn!(%addr, "the API listens beyond this host without TLS (insecure_listen_without_tls): its token and answers cross the network in clear");
            }
            Some(TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })?)
        }
        None => None,
    };
    let bus = EventBus::new();
    let pool = backend::Pool::new(
        config.wake.max_resuming,
        config.wake.resume_memory_reserve,
        config.surrogate.max_held_bytes,
    );
    let (handles, placed, waiting) = start::start_workers(&config, backends, &bus, &pool)?;
    let (waiting, runs): (Vec<_>, Vec<_>) = std::mem::take(&mut config.guests)
        .into_iter()
        .partition(|g| waiting.contains(&g.name));
    config.guests = runs;
    let bridges: Vec<&str> = handles.iter().map(|h| h.bridge.as_str()).collect();
    bridge::settle_orphan_journals(&config.state.dir, &bridges);
    // The socket appears once every guest is stood in for or watched: a client that sees it
    // sees a daemon at work.
    let listener = unpublished.publish()?;
    info!(
        socket = %config.api.socket.display(),
        listen = ?config.api.listen,
        guests = config.guests.len(),
        "vmnap is running"
    );
    let socket = config.api.socket.clone();
    // The config was read among the parser's garbage, freed since: a copy made now sits
    // in one piece, and the heap the original leaves goes back to the kernel.
    let running = reload::Running {
        config: config.clone(),
        placed,
        discovered,
        waiting,
    };
    drop(config);
    vmnap_host::memory::release_free_memory();
    let nonblocking = |r: std::io::Result<()>| {
        r.map_err(|source| StartError::Socket {
            path: socket.clone(),
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
    let resume_gate = std::sync::Arc::clone(pool.resume_gate());
    let hold_budget = std::sync::Arc::clone(pool.hold_budget());
    let reloader = reload::Reloader {
        path: options.config_path.clone(),
        backends,
        pool,
        running: Mutex::new(running),
    };
    let mut server = Server::new(Registry::new(handles), bus, token, stop);
    server.reloader = Some(&reloader);
    server.log = options.log.as_ref();
    server.resume_gate = Some(resume_gate);
    server.hold_budget = Some(hold_budget);
    let hup = options.reload.clone();
    let capacity = server::Capacity::default();
    std::thread::scope(|scope| {
        let server = &server;
        let capacity = &capacity;
        #[cfg(feature = "libvirt")]
        if let Some(uri) = reloader.libvirt_uri() {
            let reloader = &reloader;
            let spawned = std::thread::Builder::new()
                .name("vmnap-libvirt".into())
                .spawn_scoped(scope, move || {
                    follow::run(&uri, &server.registry, reloader, &server.bus, stop);
                });
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start a thread to follow libvirt's domain events");
            }
        }
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
            // The unix socket first, every connection waiting there: its clients (root, or
            // the socket's group) never queue behind whoever reaches the TCP port. Then a
            // few from TCP.
            let mut accepted = Vec::new();
            while accepted.len() < ACCEPT_BATCH {
                match listener.accept() {
                    Ok((s, _)) => accepted.push((Conn::Unix(s), None)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!(error = %e, "cannot accept an API connection");
                        break;
                    }
                }
            }
            if let Some(t) = &tcp {
                for _ in 0..ACCEPT_BATCH {
                    match t.accept() {
                        Ok((s, peer)) => {
                            let conn = match &tls {
                                Some(config) => {
                                    match rustls::ServerConnection::new(Arc::clone(config)) {
                                        Ok(session) => Conn::Tls(Box::new(
                                            rustls::StreamOwned::new(session, s),
                                        )),
                                        Err(e) => {
                                            warn!(error = %e, "cannot begin a TLS session");
                                            continue;
                                        }
                                    }
                                }
                                None => Conn::Tcp(s),
                            };
                            accepted.push((conn, Some(peer.ip())));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            warn!(error = %e, "cannot accept an API connection");
                            break;
                        }
                    }
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
            for (mut conn, peer) in accepted {
                let kind = if peer.is_some() {
                    server::Listener::Tcp
                } else {
                    server::Listener::Unix
                };
                let slot = match capacity.take(kind, peer) {
                    Ok(slot) => slot,
                    Err(why) => {
                        debug!(listener = ?kind, ?peer, why, "refusing an API connection");
                        // Never waiting for a client that does not read: the answer goes
                        // into the new socket's empty buffer, or nowhere.
                        let _ = conn.set_nonblocking(true);
                        let _ = http::write_response(&mut conn, &http::Response::error(503, why));
                        continue;
                    }
                };
                let spawned = std::thread::Builder::new()
                    .name("vmnap-api".into())
                    .spawn_scoped(scope, move || {
                        server.serve(conn, peer.is_some());
                        drop(slot);
                    });
                if let Err(e) = spawned {
                    warn!(error = %e, "cannot start a thread for an API connection");
                }
            }
        }
        Ok::<(), StartError>(())
    })?;
    let mut handles = server.registry.into_workers();
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
    let _ = std::fs::remove_file(&socket);
    info!("vmnap stopped");
    Ok(())
}

/// How long the accept loop waits for a client before it looks at the stop and reload flags.
const ACCEPT_WAIT: Duration = Duration::from_millis(100);
/// Connections taken from each listener per turn of the accept loop.
const ACCEPT_BATCH: usize = 16;

/// The bearer token in `path`, without surrounding whitespace.
fn read_token(path: &Path) -> Result<String, StartError> {
    let err = |message: String| StartError::Token {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mode = file
        .metadata()
        .map_err(|e| err(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "its mode is {:04o}: others than its owner can read or change it; `chmod 600 {}`",
            mode & 0o7777,
            path.display()
        )));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &file, &mut text).map_err(|e| err(e.to_string()))?;
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

/// The API socket, bound with its mode where nobody else can reach it, until
/// [`Unpublished::publish`] moves it to its path. Dropped unpublished, it is removed.
#[derive(Debug)]
struct Unpublished {
    listener: UnixListener,
    /// The private directory it is bound in, and its name there.
    private: PathBuf,
    made: PathBuf,
    path: PathBuf,
}

impl Unpublished {
    /// Moves the socket to its path, where clients find it.
    fn publish(self) -> Result<UnixListener, StartError> {
        std::fs::rename(&self.made, &self.path).map_err(|source| StartError::Socket {
            path: self.path.clone(),
            source,
        })?;
        let listener = self
            .listener
            .try_clone()
            .map_err(|source| StartError::Socket {
                path: self.path.clone(),
                source,
            })?;
        Ok(listener)
    }
}

impl Drop for Unpublished {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.private);
    }
}

fn bind(path: &Path, mode: u32) -> Result<Unpublished, StartError> {
    let err = |source| StartError::Socket {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    // Only a socket that nobody answers on, a previous run's, is removed.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Err(StartError::AlreadyRunning(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(err)?;
            }
            Err(e) => {
                return Err(StartError::NotOurSocket {
                    path: path.to_path_buf(),
                    what: format!("a socket that cannot be tried: {e}"),
                })
            }
        },
        Ok(meta) => {
            let what = if meta.is_dir() {
                "a directory"
            } else if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "a file"
            };
            return Err(StartError::NotOurSocket {
                path: path.to_path_buf(),
                what: what.into(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // Bound in a directory only its owner can enter, given its mode there, then moved into
    // place (`publish`): nobody can connect to it before it has its mode.
    let private = dir.join(format!(".vmnap-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(err)?;
    let made = private.join("s");
    let bound = UnixListener::bind(&made).and_then(|l| {
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(mode))?;
        Ok(l)
    });
    match bound {
        Ok(listener) => Ok(Unpublished {
            listener,
            private,
            made,
            path: path.to_path_buf(),
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&private);
            Err(err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmnap-lib-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = scratch("token");
        let path = dir.join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let e = read_token(&path).expect_err("refused");
            assert_eq!(
                e.to_string(),
                format!(
                    "cannot use the API token in {0}: its mode is {mode:04o}: others than its owner can read or change it; `chmod 600 {0}`",
                    path.display()
                )
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_token(&path).expect("taken"), "s3cret");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_socket_is_made_with_its_mode_and_only_a_stale_socket_is_replaced() {
        let dir = scratch("bind");
        let path = dir.join("vmnap.sock");
        // Something else at the path is left alone.
        std::fs::write(&path, "not a socket").expect("write");
        match bind(&path, 0o600) {
            Err(e @ StartError::NotOurSocket { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "{} exists and is not a stale vmnap socket (a file); move it away or set [api] socket",
                    path.display()
                )
            ),
            other => panic!("bound over a file: {other:?}"),
        }
        assert_eq!(
            std::fs::read_to_string(&path).expect("kept"),
            "not a socket"
        );
        std::fs::remove_file(&path).expect("remove");
        std::fs::create_dir(&path).expect("a directory");
        assert!(matches!(
            bind(&path, 0o600),
            Err(StartError::NotOurSocket { .. })
        ));
        std::fs::remove_dir(&path).expect("remove");
        // A socket someone answers on is another daemon's.
        let unpublished = bind(&path, 0o660).expect("bound");
        assert!(!path.exists(), "visible before it is published");
        let live = unpublished.publish().expect("published");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        assert!(matches!(
            bind(&path, 0o600),
            Err(StartError::AlreadyRunning(_))
        ));
        // One nobody answers on is a previous run's, and is replaced.
        drop(live);
        let again = bind(&path, 0o600)
            .and_then(Unpublished::publish)
            .expect("bound over a stale socket");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(again);
        // Nothing of the binding is left beside it.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("vmnap.sock")]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
