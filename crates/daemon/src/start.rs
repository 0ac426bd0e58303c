//! Starting guests: opening their backends, placing them on their bridges, and starting
//! one worker per bridge. Both the start-up and a reload start workers through here.

use std::collections::BTreeMap;

use vmnap_api::Policy;
use vmnap_config::{BackendConfig, Config, GuestConfig, SleepMode};
use vmnap_core::idle::IdlePolicy;
use vmnap_hypervisor::{Backend, CgroupBackend};
use vmnap_wire::Mac;

use crate::backend::Pool;
use crate::bridge::{self, BridgeHandle, BridgeWorker, GuestSetup};
use crate::error::StartError;
use crate::events::EventBus;
use crate::schedule::Timing;

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
            agent,
        } => {
            let backend = match (mode, state_file) {
                (SleepMode::Save, Some(state)) => vmnap_qmp::QmpBackend::save(
                    &guest.name,
                    qemu_command.iter().map(Into::into).collect(),
                    socket.clone(),
                    state.clone(),
                ),
                (SleepMode::Pageout, _) => {
                    vmnap_qmp::QmpBackend::pageout(&guest.name, socket.clone())
                }
                _ => vmnap_qmp::QmpBackend::pause(&guest.name, socket.clone()),
            };
            let backend = match agent {
                Some(path) => backend.with_agent(path.clone()),
                None => backend,
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
                SleepMode::Pageout => vmnap_libvirt::Mode::Pageout,
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

/// Where a running guest is: its bridge and its MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placed {
    pub bridge: String,
    pub mac: [u8; 6],
}

/// The idleness policy a guest runs with under `config`.
pub(crate) fn idle_policy(guest: &GuestConfig, config: &Config) -> Option<IdlePolicy> {
    guest.idle_after(&config.idle).map(|idle_after| IdlePolicy {
        cpu_percent: config.idle.cpu_percent,
        idle_after,
        min_awake: guest.min_awake(&config.idle),
        keep_awake_while_connected: guest.keep_awake_while_connected.clone(),
    })
}

/// Where workers keep their journals, and what they do with what they find there.
pub(crate) fn settings(config: &Config) -> bridge::WorkerSettings {
    bridge::WorkerSettings {
        seed: seed(),
        interval: config.idle.interval,
        state: Some(bridge::StateSetup {
            dir: config.state.dir.clone(),
            recovery: match config.state.on_restart {
                vmnap_config::OnRestart::StandIn => bridge::Recovery::StandIn,
                vmnap_config::OnRestart::Wake => bridge::Recovery::Wake,
            },
        }),
        in_kernel: config.surrogate.in_kernel,
        in_kernel_at_every_port: config.surrogate.in_kernel_at_every_port,
        learn_connections_for: config.surrogate.learn_connections_for,
    }
}

/// The workers, where each guest is, and the guests whose libvirt domain does not run
/// (they wait for it: [`crate::reload::Running::waiting`]).
pub(crate) type Started = (Vec<BridgeHandle>, BTreeMap<String, Placed>, Vec<String>);

pub(crate) fn start_workers(
    config: &Config,
    backends: &BackendFactory,
    bus: &EventBus,
    pool: &Pool,
) -> Result<Started, StartError> {
    let mut by_bridge: BTreeMap<String, Vec<GuestSetup>> = BTreeMap::new();
    let mut placed = BTreeMap::new();
    let mut waiting = Vec::new();
    for (order, guest) in config.guests.iter().enumerate() {
        let opened = match backends(guest, config) {
            Ok(o) => o,
            Err(StartError::NotRunning { .. }) => {
                tracing::warn!(guest = %guest.name, "the guest's libvirt domain does not run; vmnap takes the guest on when it starts");
                waiting.push(guest.name.clone());
                continue;
            }
            Err(e) => return Err(e),
        };
        placed.insert(
            guest.name.clone(),
            Placed {
                bridge: opened.bridge.clone(),
                mac: opened.mac,
            },
        );
        let idle = idle_policy(guest, config);
        let timing = Timing::of(guest, config);
        by_bridge
            .entry(opened.bridge)
            .or_default()
            .push(GuestSetup {
                order,
                config: guest.clone(),
                interface: opened.interface,
                mac: opened.mac,
                idle,
                timing,
                backend: opened.backend,
            });
    }
    let mut handles = Vec::new();
    for (bridge, guests) in by_bridge {
        handles.push(start_worker(&bridge, guests, config, bus, pool)?);
    }
    Ok((handles, placed, waiting))
}

/// What the API shows of a guest's config.
pub(crate) fn policy(guest: &GuestConfig, config: &Config, mac: [u8; 6]) -> Policy {
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
    Policy {
        backend: guest.backend.kind().to_owned(),
        mode: guest.backend.mode().map(|m| m.as_str().to_owned()),
        wake_on: rules(&guest.wake_on),
        answer,
        idle_after_s: guest.idle_after(&config.idle).map(|d| d.as_secs_f64()),
        min_awake_s: guest.min_awake(&config.idle).as_secs_f64(),
        max_sleep_s: guest.max_sleep(&config.idle).map(|d| d.as_secs_f64()),
        awake_during: guest
            .awake_during(&config.idle)
            .0
            .iter()
            .map(ToString::to_string)
            .collect(),
        timezone: guest.timezone(&config.idle).map(str::to_owned),
        keep_awake_while_connected: rules(&guest.keep_awake_while_connected),
        mac: Mac(mac).to_string(),
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

/// Starts the worker of `bridge` with `guests`, on a thread of its own.
pub(crate) fn start_worker(
    bridge: &str,
    guests: Vec<GuestSetup>,
    config: &Config,
    bus: &EventBus,
    pool: &Pool,
) -> Result<BridgeHandle, StartError> {
    let (worker, mut handle) =
        BridgeWorker::start(bridge, guests, settings(config), bus.clone(), pool.clone())?;
    let thread = std::thread::Builder::new()
        .name(format!("vmnap-{bridge}"))
        .spawn(move || worker.run())
        .map_err(StartError::Poll)?;
    handle.thread = Some(thread);
    Ok(handle)
}
