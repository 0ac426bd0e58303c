//! The libvirt backend: puts a libvirt domain to sleep by pausing it in memory
//! (`virDomainSuspend`) or by saving it to disk (`virDomainManagedSave`, which ends its QEMU
//! process and frees its memory), and wakes it again. It also reads what vmnap needs to know
//! about a domain from its XML (MAC, bridge, tap) and the domain's CPU time for idleness, and
//! lists the domains of a connection for discovery ([`list_domains`]: all, or those carrying a
//! metadata element of a given namespace, with the settings of that element and the addresses
//! of libvirt's DHCP leases).
//!
//! It follows the domains' lifecycle events ([`LifecycleEvents`]): started, stopped,
//! defined, undefined, by anyone.
//!
//! libvirt calls block (a managed save takes seconds); callers run them off any thread that
//! must stay responsive. The connection is opened again once if a call fails because
//! libvirtd went away and came back. This crate does not touch the network: cutting the
//! guest's port and replaying its frames are the daemon's.
//!
//! libvirt is not linked: the first connection loads `libvirt.so.0` (`dlopen`), so that a
//! vmnap without libvirt guests neither needs libvirt nor carries it in memory, and a machine
//! without it gets [`LibvirtError::Library`], which says what to install. All `unsafe` is in
//! one module under the safe handles [`Connect`] and [`Domain`].

#![deny(unsafe_code)]

pub mod discover;
mod events;
#[allow(unsafe_code)]
mod ffi;
pub mod xml;

use std::time::Duration;

use std::sync::Arc;

use vmnap_host::pageout::RamFile;
use vmnap_hypervisor::{
    Backend, PageOut, PageOutNotes, PageOutUnavailable, ResumeError, SuspendError,
};

pub use discover::{
    list_domains, parse_metadata, DiscoveredDomain, GuestMetadata, Lease, MetadataError, Selector,
};
pub use events::{Lifecycle, LifecycleEvent, LifecycleEvents, Started, Stopped};
pub use ffi::{Connect, Domain, DomainInfo, InterfaceAddresses, LoadError, VirError};
pub use xml::{parse_interfaces, parse_memory_backing, DomainInterface, MemoryBacking, XmlError};

/// How a domain sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Paused in memory: the fastest wake; its memory stays allocated.
    Pause,
    /// Saved to disk by libvirt (managed save) and started from it on wake: its memory is
    /// freed while it sleeps.
    Save,
    /// Paused, and its RAM (a file mapped shared: `<memoryBacking><source type='file'/>
    /// <access mode='shared'/>`) paged out of host memory while it sleeps; resumed on wake,
    /// its RAM coming back as it touches it.
    Pageout,
}

/// Failure to reach a domain.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// libvirt itself could not be loaded (not installed, or too old).
    #[error(transparent)]
    Library(#[from] LoadError),
    /// No connection to libvirt.
    #[error("cannot connect to libvirt at {uri}")]
    Connect {
        /// The URI.
        uri: String,
        /// libvirt's message.
        #[source]
        source: VirError,
    },
    /// No such domain.
    #[error("libvirt at {uri} has no domain {domain}")]
    NoDomain {
        /// The URI.
        uri: String,
        /// The domain.
        domain: String,
        /// libvirt's message.
        #[source]
        source: VirError,
    },
    /// A call on the domain failed.
    #[error("libvirt refused to {action} domain {domain}")]
    Call {
        /// What was asked: `suspend`, `resume`, `save`, `start`, `describe`, ...
        action: &'static str,
        /// The domain.
        domain: String,
        /// libvirt's message.
        #[source]
        source: VirError,
    },
    /// The domain's XML did not say what vmnap needs.
    #[error("cannot read the network interfaces of domain {domain}")]
    Xml {
        /// The domain.
        domain: String,
        /// Why.
        #[source]
        source: XmlError,
    },
}

/// What a domain is doing, as libvirt says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    /// Running.
    Running,
    /// Paused (by vmnap or anyone).
    Paused,
    /// Not running (shut off, or saved).
    ShutOff,
    /// Anything else libvirt reports (crashed, shutting down, ...): the raw state number.
    Other(u32),
}

/// Our name for libvirt's state number.
pub(crate) fn state_of(state: u32) -> DomainState {
    match state {
        ffi::VIR_DOMAIN_RUNNING => DomainState::Running,
        ffi::VIR_DOMAIN_PAUSED | ffi::VIR_DOMAIN_PMSUSPENDED => DomainState::Paused,
        ffi::VIR_DOMAIN_SHUTOFF => DomainState::ShutOff,
        other => DomainState::Other(other),
    }
}

/// A connection to one domain, opened again when it breaks.
#[derive(Debug)]
pub struct LibvirtDomain {
    uri: String,
    name: String,
    conn: Option<Connect>,
}

impl LibvirtDomain {
    /// Connects to `uri` and checks that `domain` exists.
    pub fn open(uri: &str, domain: &str) -> Result<Self, LibvirtError> {
        let mut this = Self {
            uri: uri.to_owned(),
            name: domain.to_owned(),
            conn: None,
        };
        this.domain()?;
        Ok(this)
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn connect(&mut self) -> Result<&Connect, LibvirtError> {
        if self.conn.is_none() {
            self.conn = Some(Connect::open(&self.uri)?);
        }
        Ok(self.conn.as_ref().expect("set just above"))
    }

    fn domain(&mut self) -> Result<Domain, LibvirtError> {
        let (uri, name) = (self.uri.clone(), self.name.clone());
        let conn = self.connect()?;
        conn.lookup_domain(&name)
            .map_err(|source| LibvirtError::NoDomain {
                uri,
                domain: name,
                source,
            })
    }

    /// Runs `f` on the domain; if it fails, reconnects once and tries again (libvirtd may
    /// have restarted).
    fn with_domain<T>(
        &mut self,
        action: &'static str,
        f: impl Fn(&Domain) -> Result<T, VirError>,
    ) -> Result<T, LibvirtError> {
        let first = self.domain().and_then(|d| {
            f(&d).map_err(|source| LibvirtError::Call {
                action,
                domain: self.name.clone(),
                source,
            })
        });
        match first {
            Ok(v) => Ok(v),
            Err(_) if self.reconnect() => {
                let d = self.domain()?;
                f(&d).map_err(|source| LibvirtError::Call {
                    action,
                    domain: self.name.clone(),
                    source,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Drops the connection if it no longer answers; returns whether it did.
    fn reconnect(&mut self) -> bool {
        let alive = self
            .conn
            .as_ref()
            .is_some_and(|c| c.is_alive().unwrap_or(false));
        if !alive {
            self.conn = None; // closed as it is dropped
        }
        !alive
    }

    /// The domain's state.
    pub fn state(&mut self) -> Result<DomainState, LibvirtError> {
        let state = self.with_domain("read the state of", Domain::state)?;
        Ok(state_of(state))
    }

    /// The CPU time the domain has used (since its QEMU process started).
    pub fn cpu_time(&mut self) -> Result<Duration, LibvirtError> {
        let info = self.with_domain("read the CPU time of", Domain::info)?;
        Ok(Duration::from_nanos(info.cpu_time_ns))
    }

    /// The memory the domain's guest has now, in bytes (its balloon's size).
    pub fn memory(&mut self) -> Result<u64, LibvirtError> {
        let info = self.with_domain("read the memory of", Domain::info)?;
        Ok(info.memory_kib.saturating_mul(1024))
    }

    /// The domain's network interfaces, from its live XML (the tap name is there only while
    /// it runs).
    pub fn interfaces(&mut self) -> Result<Vec<DomainInterface>, LibvirtError> {
        let text = self.with_domain("describe", Domain::xml_desc)?;
        parse_interfaces(&text).map_err(|source| LibvirtError::Xml {
            domain: self.name.clone(),
            source,
        })
    }

    /// How the domain's memory is backed, from its XML (live if it runs, else its
    /// definition).
    pub fn memory_backing(&mut self) -> Result<MemoryBacking, LibvirtError> {
        let text = self.with_domain("describe", Domain::xml_desc)?;
        parse_memory_backing(&text).map_err(|source| LibvirtError::Xml {
            domain: self.name.clone(),
            source,
        })
    }

    /// Whether the domain has a channel for a guest agent (`org.qemu.guest_agent.0`), from
    /// its XML.
    pub fn has_guest_agent(&mut self) -> Result<bool, LibvirtError> {
        let text = self.with_domain("describe", Domain::xml_desc)?;
        crate::xml::has_guest_agent(&text).map_err(|source| LibvirtError::Xml {
            domain: self.name.clone(),
            source,
        })
    }

    /// Sets the guest's clock to the host's through its agent; how far behind it was, in
    /// milliseconds, when the agent could say.
    pub fn sync_time(&mut self) -> Result<Option<f64>, LibvirtError> {
        let before = self
            .with_domain("read the guest clock of", Domain::time)
            .ok();
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
        };
        let behind = before.map(|b| (now().as_secs_f64() - b.as_secs_f64()) * 1000.0);
        self.with_domain("set the guest clock of", |d| d.set_time(now()))?;
        Ok(behind)
    }

    /// Sends `command` to the guest agent and returns its answer (the JSON text), waiting at
    /// most `timeout_s` seconds.
    pub fn agent_command(&mut self, command: &str, timeout_s: i32) -> Result<String, LibvirtError> {
        self.with_domain("talk to the guest agent of", |d| {
            d.agent_command(command, timeout_s)
        })
    }

    /// Pauses the domain.
    pub fn suspend(&mut self) -> Result<(), LibvirtError> {
        self.with_domain("suspend", Domain::suspend)
    }

    /// Continues a paused domain.
    pub fn resume(&mut self) -> Result<(), LibvirtError> {
        self.with_domain("resume", Domain::resume)
    }

    /// Saves the domain to libvirt's managed save image; its QEMU process ends.
    pub fn managed_save(&mut self) -> Result<(), LibvirtError> {
        self.with_domain("save", Domain::managed_save)
    }

    /// Whether the domain has a managed save image.
    pub fn has_managed_save(&mut self) -> Result<bool, LibvirtError> {
        self.with_domain("look for the saved image of", Domain::has_managed_save)
    }

    /// Starts the domain (from its managed save image, if it has one) and makes sure it runs:
    /// a domain saved while paused comes back paused.
    pub fn start(&mut self) -> Result<(), LibvirtError> {
        self.with_domain("start", Domain::create)?;
        if self.state()? == DomainState::Paused {
            self.resume()?;
        }
        Ok(())
    }
}

/// A libvirt domain as a vmnap [`Backend`].
#[derive(Debug)]
pub struct LibvirtBackend {
    guest: String,
    mode: Mode,
    domain: LibvirtDomain,
    /// Page-out mode: the domain's RAM file and QEMU, once found; what was last said about
    /// them in the log.
    ram: Option<Arc<RamFile>>,
    notes: PageOutNotes,
    /// Whether the domain has a guest agent channel, once looked at.
    agent: Option<bool>,
}

/// `VIR_ERR_AGENT_UNRESPONSIVE` (`virErrorNumber`): the guest agent is not connected or
/// does not answer.
const VIR_ERR_AGENT_UNRESPONSIVE: i32 = 86;

/// How many times a wake's clock setting is tried, [`CLOCK_RETRY`] apart: right after a
/// start from a save, the agent may not answer yet.
const CLOCK_TRIES: u32 = 5;
const CLOCK_RETRY: Duration = Duration::from_millis(200);

impl LibvirtBackend {
    /// The backend of `guest`, the domain `domain` at `uri`, sleeping by `mode`.
    pub fn open(guest: &str, uri: &str, domain: &str, mode: Mode) -> Result<Self, LibvirtError> {
        Ok(Self {
            guest: guest.to_owned(),
            mode,
            domain: LibvirtDomain::open(uri, domain)?,
            ram: None,
            notes: PageOutNotes::default(),
            agent: None,
        })
    }

    /// Page-out mode: the domain's RAM file and its QEMU, as found before if that QEMU
    /// still runs, or found now: the process holding the tap
    /// ([`vmnap_host::process::holding_tap`]), and the file it maps shared the most of
    /// ([`RamFile::find_in`]). What stands in the way, or makes a wake costly, is logged
    /// when it changes.
    fn find_ram(&mut self) -> Result<Arc<RamFile>, PageOutUnavailable> {
        let found = self.locate_ram();
        let shown = found.as_ref().map(|r| r.as_ref() as &dyn PageOut);
        self.notes.note(&self.guest, shown);
        if let Ok(ram) = &found {
            self.ram = Some(Arc::clone(ram));
        }
        found
    }

    fn locate_ram(&mut self) -> Result<Arc<RamFile>, PageOutUnavailable> {
        // The QEMU found before, while it runs: scanning every process's descriptors for
        // the tap's holder is for when the domain got a new QEMU.
        if let Some(ram) = self.ram.as_ref().filter(|r| r.process_alive()) {
            return Ok(Arc::clone(ram));
        }
        let guest = self.guest.clone();
        let unavailable = |reason: String| PageOutUnavailable {
            guest: guest.clone(),
            reason,
        };
        let tap = self
            .domain
            .interfaces()
            .map_err(|e| unavailable(e.to_string()))?
            .into_iter()
            .find_map(|i| i.tap)
            .ok_or_else(|| unavailable("the domain has no tap".to_owned()))?;
        let holders = vmnap_host::process::holding_tap(&tap);
        let pid = match holders.as_slice() {
            [pid] => *pid,
            [] => return Err(unavailable(format!("no process holds its tap {tap}"))),
            more => {
                return Err(unavailable(format!(
                    "{} processes hold its tap {tap}",
                    more.len()
                )))
            }
        };
        if let Some(ram) = self.ram.as_ref().filter(|r| r.pid() == pid) {
            return Ok(Arc::clone(ram));
        }
        RamFile::find_in(pid).map(Arc::new).map_err(|e| {
            unavailable(format!(
                "{e}: its RAM must be a file mapped shared (<memoryBacking><source \
                 type='file'/><access mode='shared'/></memoryBacking>)"
            ))
        })
    }

    /// The domain.
    pub fn domain(&mut self) -> &mut LibvirtDomain {
        &mut self.domain
    }

    /// How the domain sleeps.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

fn suspend_error(guest: &str, e: LibvirtError) -> SuspendError {
    SuspendError::Other {
        guest: guest.to_owned(),
        source: Box::new(e),
    }
}

fn resume_error(guest: &str, e: LibvirtError) -> ResumeError {
    ResumeError::Other {
        guest: guest.to_owned(),
        source: Box::new(e),
    }
}

impl Backend for LibvirtBackend {
    fn kind(&self) -> &'static str {
        match self.mode {
            Mode::Pause => "libvirt-pause",
            Mode::Save => "libvirt-save",
            Mode::Pageout => "libvirt-pageout",
        }
    }

    fn page_out(&mut self) -> Option<Result<Arc<dyn PageOut>, PageOutUnavailable>> {
        if self.mode != Mode::Pageout {
            return None;
        }
        Some(self.find_ram().map(|r| r as Arc<dyn PageOut>))
    }

    fn suspend(&mut self) -> Result<(), SuspendError> {
        let r = match self.mode {
            Mode::Pause | Mode::Pageout => self.domain.suspend(),
            Mode::Save => self.domain.managed_save(),
        };
        r.map_err(|e| suspend_error(&self.guest, e))
    }

    fn resume(&mut self) -> Result<(), ResumeError> {
        // Already running (a daemon started after a crash wakes what its journal says it left
        // asleep, whatever happened since): nothing to do.
        if self.domain.state().ok() == Some(DomainState::Running) {
            return Ok(());
        }
        let r = match self.mode {
            Mode::Pause | Mode::Pageout => self.domain.resume(),
            Mode::Save => self.domain.start(),
        };
        r.map_err(|e| resume_error(&self.guest, e))
    }

    fn cpu_time(&mut self) -> Option<Duration> {
        self.domain.cpu_time().ok()
    }

    /// Through libvirt (`virDomainQemuAgentCommand`), if the domain has an agent channel.
    fn agent_command(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Option<Result<String, String>> {
        if self.agent.is_none() {
            self.agent = self.domain.has_guest_agent().ok();
        }
        if self.agent != Some(true) {
            return None;
        }
        let seconds = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        Some(self.domain.agent_command(command, seconds).map_err(
            |e| match std::error::Error::source(&e) {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            },
        ))
    }

    /// Through the guest agent (`virDomainSetTime` with the host's time to the
    /// nanosecond), if the domain has an agent channel.
    fn set_clock(&mut self) -> Option<Result<Option<f64>, String>> {
        if self.agent.is_none() {
            self.agent = self.domain.has_guest_agent().ok();
        }
        if self.agent != Some(true) {
            return None;
        }
        let mut last = String::new();
        let mut only_not_connected = true;
        for attempt in 0..CLOCK_TRIES {
            if attempt > 0 {
                std::thread::sleep(CLOCK_RETRY);
            }
            match self.domain.sync_time() {
                Ok(behind) => return Some(Ok(behind)),
                Err(e) => {
                    only_not_connected &= matches!(
                        &e,
                        LibvirtError::Call { source, .. } if source.code() == VIR_ERR_AGENT_UNRESPONSIVE
                    );
                    last = match std::error::Error::source(&e) {
                        Some(s) => format!("{e}: {s}"),
                        None => e.to_string(),
                    }
                }
            }
        }
        // A channel with no agent behind it (none runs in the guest) is no agent: not an
        // error at every wake.
        (!only_not_connected).then_some(Err(last))
    }

    /// A managed save frees the guest's memory; a page-out its RAM file's pages; a pause
    /// keeps it.
    fn memory_released_by_sleep(&mut self) -> Option<u64> {
        match self.mode {
            Mode::Pause => Some(0),
            Mode::Save => self.domain.memory().ok(),
            Mode::Pageout => self.find_ram().ok()?.cached().ok(),
        }
    }

    fn interface(&mut self) -> Option<String> {
        let ifaces = self.domain.interfaces().ok()?;
        ifaces.into_iter().find_map(|i| i.tap)
    }

    /// Paused, or shut off with a managed save, is stopped; running, or shut off without a
    /// save (its owner shut it down), is not.
    fn is_stopped(&mut self) -> Option<bool> {
        match self.domain.state().ok()? {
            DomainState::Running => Some(false),
            DomainState::Paused => Some(true),
            DomainState::ShutOff => self.domain.has_managed_save().ok(),
            DomainState::Other(_) => None,
        }
    }
}
