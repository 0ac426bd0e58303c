//! Reloading the config while the daemon runs (`SIGHUP`, `vmnap reload`, `POST /v1/reload`).
//!
//! A reload reads the config file again and compares each guest's entry with the one running
//! (after `[libvirt] discover` and the `[idle]` defaults are applied to both):
//!
//! - a guest whose entry is the same is not touched: asleep it stays asleep, its queue and its
//!   counters stay;
//! - a guest whose policy alone changed (`wake_on`, `answer`, queue limits, `multicast`,
//!   health checks, `idle_after`, `min_awake`, `max_sleep`, `[idle] cpu_percent`) gets it
//!   in place, asleep or awake;
//! - a guest that is gone is woken if it is asleep and then no longer managed; a guest whose
//!   entry changed otherwise is handled the same way and then added again under its new entry;
//! - a new guest is added, awake.
//!
//! Nothing changes until the whole new config is known to work: it parses, every new or
//! changed guest's backend opens, its interface and bridge exist, and no two guests of a bridge
//! claim the same MAC or address. A config that fails any of this is refused, with the reason,
//! and the running one stays. Settings that only a restart can apply (`[api]`, `[state] dir`)
//! are kept and named in the answer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use tracing::{error, info, warn};
use vmnap_config::{BackendConfig, Config, GuestConfig};
use vmnap_core::Surrogate;

use vmnap_api::Reloaded;

use crate::backend::Pool;
use crate::bridge::{self, BridgeHandle, Command, GuestSetup};
use crate::error::{chain, StartError};
use crate::events::EventBus;
use crate::registry::Registry;
use crate::schedule::Timing;
use crate::start::{self, idle_policy, BackendFactory, Opened, Placed};

/// How long a reload waits for the guests it removes to wake.
const RETIRE_WAIT: Duration = Duration::from_secs(120);
/// How long a reload waits for a worker to answer anything else.
const WORKER_WAIT: Duration = Duration::from_secs(30);

/// Why a reload was refused or went wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// The daemon was not started from a file.
    #[error("this daemon was not started from a config file, so there is nothing to reload")]
    NoFile,
    /// The new config is invalid.
    #[error("the new config is refused, the running one stays: {0}")]
    Invalid(#[source] vmnap_config::ConfigError),
    /// The new config is valid but cannot run.
    #[error("the new config is refused, the running one stays: {0}")]
    Unusable(String),
    /// The new config was applied only in part.
    #[error("the new config was applied only in part: {0}")]
    Partial(String),
}

impl ReloadError {
    /// The HTTP status that goes with it.
    pub(crate) fn status(&self) -> u16 {
        match self {
            ReloadError::NoFile => 409,
            ReloadError::Invalid(_) | ReloadError::Unusable(_) => 422,
            ReloadError::Partial(_) => 500,
        }
    }
}

/// What the reloader knows of the config that runs.
#[derive(Debug)]
pub(crate) struct Running {
    /// The config, with discovered guests added.
    pub config: Config,
    /// Each running guest's bridge and MAC, by name.
    pub placed: BTreeMap<String, Placed>,
    /// The guests of `config` that `[libvirt] discover` found.
    pub discovered: BTreeSet<String>,
    /// Guests of the config file whose libvirt domain does not run (at start, at a reload,
    /// or let go since, [`Reloader::release`]): not in `config`; taken on when their domain
    /// starts ([`Reloader::rescan`]).
    pub waiting: Vec<GuestConfig>,
}

/// Reloads the config; one reload at a time.
pub(crate) struct Reloader<'a> {
    /// The config file; `None`: reloads are refused.
    pub path: Option<PathBuf>,
    pub backends: &'a BackendFactory,
    /// Where the backend calls of the guests it adds run.
    pub pool: Pool,
    pub running: Mutex<Running>,
}

impl std::fmt::Debug for Reloader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// How an entry changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Same,
    /// Only its policy (what the surrogate does for it, and its idleness): applied in place.
    Policy,
    /// Anything else (who it is, where, its backend): it is removed and added again.
    Replaced,
}

/// How `new` (under `new_config`) differs from `old` (under `old_config`).
fn compare(
    old: &GuestConfig,
    old_config: &Config,
    new: &GuestConfig,
    new_config: &Config,
) -> Change {
    let uri = |g: &GuestConfig, c: &Config| match g.backend {
        BackendConfig::Libvirt { .. } => Some(c.libvirt.uri.clone()),
        _ => None,
    };
    // `new` with `old`'s policy: what must be equal for the guest to stay registered.
    let identity = GuestConfig {
        wake_on: old.wake_on.clone(),
        answer: old.answer,
        queue_frames: old.queue_frames,
        queue_bytes: old.queue_bytes,
        multicast: old.multicast,
        multicast_frames: old.multicast_frames,
        health: old.health.clone(),
        idle_after: old.idle_after,
        schedule: old.schedule.clone(),
        hooks: old.hooks.clone(),
        ..new.clone()
    };
    if identity != *old || uri(old, old_config) != uri(new, new_config) {
        Change::Replaced
    } else if old != new
        || idle_policy(old, old_config) != idle_policy(new, new_config)
        || Timing::of(old, old_config) != Timing::of(new, new_config)
    {
        Change::Policy
    } else {
        Change::Same
    }
}

/// `new`'s guests, each the equal entry of `old` where there is one.
fn keep_unchanged(old: Vec<GuestConfig>, new: Vec<GuestConfig>) -> Vec<GuestConfig> {
    let mut old: std::collections::HashMap<String, GuestConfig> =
        old.into_iter().map(|g| (g.name.clone(), g)).collect();
    new.into_iter()
        .map(|g| match old.remove(&g.name) {
            Some(kept) if kept == g => kept,
            _ => g,
        })
        .collect()
}

/// Makes `old` hold what `new` does, keeping its own entries where they are equal.
fn merge_placed(old: &mut BTreeMap<String, Placed>, new: BTreeMap<String, Placed>) {
    old.retain(|name, _| new.contains_key(name));
    for (name, p) in new {
        match old.get_mut(&name) {
            Some(kept) if *kept == p => {}
            Some(kept) => *kept = p,
            None => {
                old.insert(name, p);
            }
        }
    }
}

/// The settings of `new` that differ from `old` and need a restart.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |changed: bool, key: &str| {
        if changed {
            out.push(key.to_owned());
        }
    };
    check(old.api.socket != new.api.socket, "api.socket");
    check(
        old.api.socket_mode != new.api.socket_mode,
        "api.socket_mode",
    );
    check(old.api.listen != new.api.listen, "api.listen");
    check(old.api.token_file != new.api.token_file, "api.token_file");
    check(
        old.api.insecure_listen_without_tls != new.api.insecure_listen_without_tls,
        "api.insecure_listen_without_tls",
    );
    check(old.state.dir != new.state.dir, "state.dir");
    check(
        old.surrogate.in_kernel != new.surrogate.in_kernel,
        "surrogate.in_kernel",
    );
    check(
        old.surrogate.in_kernel_at_every_port != new.surrogate.in_kernel_at_every_port,
        "surrogate.in_kernel_at_every_port",
    );
    check(
        old.surrogate.learn_connections_for != new.surrogate.learn_connections_for,
        "surrogate.learn_connections_for",
    );
    check(
        old.wake.max_resuming != new.wake.max_resuming,
        "wake.max_resuming",
    );
    check(
        old.wake.resume_memory_reserve != new.wake.resume_memory_reserve,
        "wake.resume_memory_reserve",
    );
    check(
        old.surrogate.max_held_bytes != new.surrogate.max_held_bytes,
        "surrogate.max_held_bytes",
    );
    out
}

/// What a reload does to each guest, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Plan {
    added: Vec<String>,
    removed: Vec<String>,
    /// Let go and added again under the new entry.
    replaced: Vec<String>,
    /// Given the new policy in place.
    policy_changed: Vec<String>,
    unchanged: usize,
}

impl Plan {
    /// How `new` differs from `old`, guest by guest.
    fn of(old: &Config, new: &Config) -> Plan {
        let mut plan = Plan::default();
        let (old_names, new_names) = (old.guests_by_name(), new.guests_by_name());
        for g in &old.guests {
            match new_names.get(g.name.as_str()) {
                None => plan.removed.push(g.name.clone()),
                Some(n) => match compare(g, old, n, new) {
                    Change::Same => plan.unchanged += 1,
                    Change::Policy => plan.policy_changed.push(g.name.clone()),
                    Change::Replaced => plan.replaced.push(g.name.clone()),
                },
            }
        }
        plan.added = new
            .guests
            .iter()
            .filter(|g| !old_names.contains_key(g.name.as_str()))
            .map(|g| g.name.clone())
            .collect();
        plan
    }

    /// The guests that leave their worker: removed, or replaced.
    fn leaving(&self) -> BTreeSet<&String> {
        self.removed.iter().chain(&self.replaced).collect()
    }
}

/// The new and replaced guests' backends, opened before anything changes, and where every
/// guest of the new config is.
struct Opening {
    opened: BTreeMap<String, Opened>,
    /// Replaced guests whose backend opens only once they are awake (a saved libvirt domain
    /// has no tap while it sleeps).
    deferred: Vec<String>,
    /// New guests whose libvirt domain does not run: they wait for it.
    waiting: BTreeSet<String>,
    placed: BTreeMap<String, Placed>,
}

impl Reloader<'_> {
    /// Guest `name`'s policy, made from the config in force, if it runs.
    pub(crate) fn policy(&self, name: &str) -> Option<vmnap_api::Policy> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let placed = running.placed.get(name)?;
        let g = running.config.guest(name)?;
        Some(start::policy(g, &running.config, placed.mac))
    }

    /// Each running guest's sleep mode (`pause`, `save`), by name; `None` for a guest
    /// that has none (a cgroup's).
    pub(crate) fn modes(&self) -> std::collections::HashMap<String, Option<String>> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .config
            .guests
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.backend.mode().map(|m| m.as_str().to_owned()),
                )
            })
            .collect()
    }

    /// Reads the config file again and applies it; see the module's documentation.
    pub(crate) fn reload(
        &self,
        registry: &Registry,
        bus: &EventBus,
    ) -> Result<Reloaded, ReloadError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let new = Config::load_for(path, crate::BUILTIN).map_err(ReloadError::Invalid)?;
        self.apply(&mut running, new, registry, bus)
    }

    /// Applies the config in force again, with the guests that wait for their domains and
    /// `[libvirt] discover` asked again: takes on what libvirt runs now that the config
    /// covers (a domain started outside vmnap) and tells the event stream; returns the
    /// guests taken on.
    #[cfg(feature = "libvirt")]
    pub(crate) fn rescan(
        &self,
        registry: &Registry,
        bus: &EventBus,
        reason: &str,
    ) -> Result<Vec<String>, ReloadError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut new = running.config.clone();
        new.guests.retain(|g| !running.discovered.contains(&g.name));
        new.guests.extend(running.waiting.iter().cloned());
        let done = self.apply(&mut running, new, registry, bus)?;
        for guest in &done.added {
            info!(guest = %guest, reason, "taken on without a reload");
            bus.publish(vmnap_api::Event::Adopted {
                guest: guest.clone(),
                reason: reason.to_owned(),
            });
        }
        Ok(done.added)
    }

    /// Forgets guest `name`, which its worker let go ([`Command::Release`]): a guest of the
    /// config file waits for its domain to start again; a discovered one is found again
    /// when it does.
    #[cfg(feature = "libvirt")]
    pub(crate) fn release(&self, name: &str) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let Some(at) = running.config.guests.iter().position(|g| g.name == name) else {
            return;
        };
        let g = running.config.guests.remove(at);
        running.placed.remove(name);
        if !running.discovered.remove(name) {
            running.waiting.push(g);
        }
    }

    /// The guest whose libvirt domain is `domain`, running or waiting for it.
    #[cfg(feature = "libvirt")]
    pub(crate) fn guest_of_domain(&self, domain: &str) -> Option<(String, bool)> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let of = |g: &&GuestConfig| matches!(&g.backend, BackendConfig::Libvirt { domain: d, .. } if d == domain);
        if let Some(g) = running.config.guests.iter().find(of) {
            return Some((g.name.clone(), true));
        }
        running
            .waiting
            .iter()
            .find(of)
            .map(|g| (g.name.clone(), false))
    }

    /// Whether guest `name` of the config waits for its libvirt domain to run.
    pub(crate) fn is_waiting(&self, name: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.waiting.iter().any(|g| g.name == name)
    }

    /// Whether the config in force takes on domains it does not name (`[libvirt] discover`).
    #[cfg(feature = "libvirt")]
    pub(crate) fn discovers(&self) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.config.libvirt.discover.is_some()
    }

    /// The libvirt connection's URI, if any guest (or discovery) uses libvirt.
    #[cfg(feature = "libvirt")]
    pub(crate) fn libvirt_uri(&self) -> Option<String> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let uses = running.config.libvirt.discover.is_some()
            || running
                .config
                .guests
                .iter()
                .chain(&running.waiting)
                .any(|g| matches!(g.backend, BackendConfig::Libvirt { .. }));
        uses.then(|| running.config.libvirt.uri.clone())
    }

    /// Makes `new` the config in force; see the module's documentation.
    fn apply(
        &self,
        running: &mut Running,
        mut new: Config,
        registry: &Registry,
        bus: &EventBus,
    ) -> Result<Reloaded, ReloadError> {
        // Discovered guests whose domains are not running now (asleep, most likely) keep
        // their entries; a libvirt that cannot be asked refuses the reload rather than
        // dropping every discovered guest.
        let managed: Vec<GuestConfig> = running
            .config
            .guests
            .iter()
            .filter(|g| running.discovered.contains(&g.name))
            .cloned()
            .collect();
        let discovered: BTreeSet<String> = crate::discover::add_discovered(&mut new, &managed)
            .map_err(ReloadError::Unusable)?
            .into_iter()
            .collect();
        let restart = restart_needed(&running.config, &new);
        let mut plan = Plan::of(&running.config, &new);
        // Check that it all works before anything changes.
        let mut opening = self.open(&plan, &new, &running.placed)?;
        // New guests whose domains do not run wait for them, outside the config in force.
        // (Taken out in place: a copy of every entry, made among the parser's garbage, would
        // leave the heap in pieces.)
        let mut waiting = Vec::new();
        if !opening.waiting.is_empty() {
            let mut k = 0;
            while k < new.guests.len() {
                if opening.waiting.contains(&new.guests[k].name) {
                    waiting.push(new.guests.remove(k));
                } else {
                    k += 1;
                }
            }
        }
        plan.added.retain(|name| !opening.waiting.contains(name));
        for g in &waiting {
            warn!(guest = %g.name, "the guest's libvirt domain does not run; vmnap takes the guest on when it starts");
        }
        check_fit(&new, &opening.placed, &opening.opened)?;
        // Apply: first let go of the guests that leave or change (their MACs and addresses
        // may come back under the new entries), then add, then update the rest.
        let mut problems = retire(registry, &plan.leaving());
        let by_name = new.guests_by_name();
        for name in std::mem::take(&mut opening.deferred) {
            let g = by_name[name.as_str()];
            match (self.backends)(g, &new) {
                Ok(o) => {
                    let p = Placed {
                        bridge: o.bridge.clone(),
                        mac: o.mac,
                    };
                    opening.placed.insert(name.clone(), p);
                    opening.opened.insert(name, o);
                }
                Err(e) => problems.push(format!("guest {name}: {}", chain(&e))),
            }
        }
        let bridges_after: BTreeSet<String> =
            opening.placed.values().map(|p| p.bridge.clone()).collect();
        stop_empty_workers(registry, &bridges_after);
        problems.extend(adopt(registry, opening.opened, &new, bus, &self.pool));
        problems.extend(update(registry, &new, &plan.policy_changed));
        // What runs now is what the next reload compares with: a guest that could not be
        // added is left out of it, so that the next reload adds it.
        let runs: BTreeSet<String> = registry
            .workers()
            .iter()
            .flat_map(|h| h.guests.clone())
            .collect();
        let mut placed = opening.placed;
        new.guests.retain(|g| runs.contains(&g.name));
        placed.retain(|name, _| runs.contains(name));
        // Keep what only a restart applies.
        new.api = running.config.api.clone();
        new.state.dir = running.config.state.dir.clone();
        new.surrogate = running.config.surrogate;
        // The new config was read among the parser's garbage: what the daemon keeps of it
        // until the next reload is the old entry wherever a guest is unchanged, so that a
        // reload that changes one guest leaves one guest's worth behind, and the heap the
        // parser used can go back to the kernel.
        new.guests = keep_unchanged(std::mem::take(&mut running.config.guests), new.guests);
        running.config = new;
        merge_placed(&mut running.placed, placed);
        running.discovered = discovered.intersection(&runs).cloned().collect();
        running.waiting = waiting;
        let Plan {
            added,
            removed,
            replaced,
            policy_changed,
            unchanged,
        } = plan;
        let changed: Vec<String> = replaced.into_iter().chain(policy_changed).collect();
        let mut message = format!(
            "reloaded: {} added, {} removed, {} changed, {unchanged} unchanged",
            added.len(),
            removed.len(),
            changed.len()
        );
        if !restart.is_empty() {
            message.push_str(&format!(
                "; {} changed but need a restart to apply",
                restart.join(", ")
            ));
            warn!(keys = ?restart, "the new config changes settings that need a restart");
        }
        info!(?added, ?removed, ?changed, unchanged, "config reloaded");
        if !problems.is_empty() {
            error!(?problems, "the reload was applied only in part");
            return Err(ReloadError::Partial(problems.join("; ")));
        }
        Ok(Reloaded {
            message,
            added,
            removed,
            changed,
            unchanged,
            restart_needed: restart,
        })
    }

    /// Opens the backends of the new and replaced guests, and places every guest of `new`:
    /// where its backend says, or where it runs now. A replaced guest whose backend cannot
    /// be opened while it sleeps is opened once it is awake, where it was.
    fn open(
        &self,
        plan: &Plan,
        new: &Config,
        running: &BTreeMap<String, Placed>,
    ) -> Result<Opening, ReloadError> {
        let mut opened = BTreeMap::new();
        let mut deferred = Vec::new();
        let mut waiting = BTreeSet::new();
        let by_name = new.guests_by_name();
        let replaced: BTreeSet<&String> = plan.replaced.iter().collect();
        for name in plan.added.iter().chain(&plan.replaced) {
            let g = by_name[name.as_str()];
            match (self.backends)(g, new) {
                Ok(o) => {
                    opened.insert(name.clone(), o);
                }
                Err(StartError::NotRunning { .. }) if replaced.contains(name) => {
                    deferred.push(name.clone());
                }
                Err(StartError::NotRunning { .. }) => {
                    waiting.insert(name.clone());
                }
                Err(e) => {
                    return Err(ReloadError::Unusable(format!(
                        "guest {name}: {}",
                        chain(&e)
                    )))
                }
            }
        }
        let mut placed: BTreeMap<String, Placed> = BTreeMap::new();
        for g in new.guests.iter().filter(|g| !waiting.contains(&g.name)) {
            let p = match opened.get(&g.name) {
                Some(o) => Placed {
                    bridge: o.bridge.clone(),
                    mac: o.mac,
                },
                None => running.get(&g.name).cloned().ok_or_else(|| {
                    ReloadError::Unusable(format!("guest {} is not running", g.name))
                })?,
            };
            placed.insert(g.name.clone(), p);
        }
        Ok(Opening {
            opened,
            deferred,
            waiting,
            placed,
        })
    }
}

/// Tells each worker to let go of its guests among `leaving` (waking those asleep), and
/// waits for them, without holding the workers' list: the API goes on answering meanwhile.
/// Returns what did not happen in time.
fn retire(registry: &Registry, leaving: &BTreeSet<&String>) -> Vec<String> {
    let mut waits = Vec::new();
    for h in registry.workers_mut().iter_mut() {
        let names: Vec<String> = h
            .guests
            .iter()
            .filter(|n| leaving.contains(n))
            .cloned()
            .collect();
        if names.is_empty() {
            continue;
        }
        h.guests.retain(|n| !leaving.contains(n));
        let (tx, rx) = mpsc::channel();
        if h.send(Command::Retire {
            guests: names.clone(),
            reply: tx,
        }) {
            waits.push((names, rx));
        }
    }
    let mut problems = Vec::new();
    for (names, rx) in waits {
        if rx.recv_timeout(RETIRE_WAIT).is_err() {
            problems.push(format!(
                "{} did not wake within {} s to leave; they go once they do",
                names.join(", "),
                RETIRE_WAIT.as_secs()
            ));
        }
    }
    problems
}

/// Stops the workers left without guests on bridges the new config does not use: their
/// guests are awake by now (or the reload says which are not), and their ports go.
fn stop_empty_workers(registry: &Registry, bridges_after: &BTreeSet<String>) {
    let stopping: Vec<BridgeHandle> = {
        let mut handles = registry.workers_mut();
        let (keep, stop): (Vec<_>, Vec<_>) = handles
            .drain(..)
            .partition(|h| bridges_after.contains(&h.bridge) || !h.guests.is_empty());
        *handles = keep;
        stop
    };
    for mut h in stopping {
        info!(bridge = %h.bridge, "no guest left on the bridge; removing the surrogate's port");
        let (tx, rx) = mpsc::channel();
        if h.send(Command::Shutdown {
            wake: true,
            reply: tx,
        }) {
            let _ = rx.recv_timeout(RETIRE_WAIT);
        }
        if let Some(t) = h.thread.take() {
            let _ = t.join();
        }
    }
}

/// Adds the `opened` guests of `new`, bridge by bridge: to the bridge's worker, or to a new
/// one. Returns what could not be added, and why.
fn adopt(
    registry: &Registry,
    mut opened: BTreeMap<String, Opened>,
    new: &Config,
    bus: &EventBus,
    pool: &Pool,
) -> Vec<String> {
    let mut by_bridge: BTreeMap<String, Vec<GuestSetup>> = BTreeMap::new();
    for (order, g) in new.guests.iter().enumerate() {
        let Some(o) = opened.remove(&g.name) else {
            continue;
        };
        by_bridge.entry(o.bridge).or_default().push(GuestSetup {
            order,
            config: g.clone(),
            interface: o.interface,
            mac: o.mac,
            idle: idle_policy(g, new),
            timing: Timing::of(g, new),
            backend: o.backend,
        });
    }
    let mut problems = Vec::new();
    let mut handles = registry.workers_mut();
    for (bridge, setups) in by_bridge {
        let names: Vec<String> = setups.iter().map(|s| s.config.name.clone()).collect();
        if let Some(h) = handles.iter_mut().find(|h| h.bridge == bridge) {
            let (tx, rx) = mpsc::channel();
            if !h.send(Command::Adopt {
                guests: setups,
                reply: tx,
            }) {
                problems.push(format!("the worker of bridge {bridge} has stopped"));
                continue;
            }
            match rx.recv_timeout(WORKER_WAIT) {
                Ok(failed) => {
                    h.guests.extend(
                        names
                            .into_iter()
                            .filter(|n| failed.iter().all(|(f, _)| f != n)),
                    );
                    problems.extend(
                        failed
                            .into_iter()
                            .map(|(name, why)| format!("guest {name}: {why}")),
                    );
                }
                Err(_) => problems.push(format!("the worker of bridge {bridge} did not answer")),
            }
            continue;
        }
        match start::start_worker(&bridge, setups, new, bus, pool) {
            Ok(handle) => {
                info!(%bridge, "standing by on a new bridge");
                handles.push(handle);
            }
            Err(e) => problems.push(format!("bridge {bridge}: {}", chain(&e))),
        }
    }
    problems
}

/// Gives every worker the guests' new positions, idleness policies and sampling interval,
/// and the new entries of those in `policy_changed`. Returns what could not be applied.
fn update(registry: &Registry, new: &Config, policy_changed: &[String]) -> Vec<String> {
    let orders: BTreeMap<String, usize> = new
        .guests
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.clone(), i))
        .collect();
    let mut problems = Vec::new();
    for h in registry.workers().iter() {
        let idle = h
            .guests
            .iter()
            .filter_map(|n| new.guest(n).map(|g| (n.clone(), idle_policy(g, new))))
            .collect();
        let timing = h
            .guests
            .iter()
            .filter_map(|n| new.guest(n).map(|g| (n.clone(), Timing::of(g, new))))
            .collect();
        let policies = h
            .guests
            .iter()
            .filter(|n| policy_changed.contains(n))
            .filter_map(|n| new.guest(n).map(|g| (n.clone(), g.clone())))
            .collect();
        let (tx, rx) = mpsc::channel();
        if !h.send(Command::Update {
            orders: orders.clone(),
            idle,
            timing,
            policies,
            interval: new.idle.interval,
            reply: tx,
        }) {
            problems.push(format!("the worker of bridge {} has stopped", h.bridge));
            continue;
        }
        match rx.recv_timeout(WORKER_WAIT) {
            Ok(failed) => problems.extend(
                failed
                    .into_iter()
                    .map(|(name, why)| format!("guest {name}: {why}")),
            ),
            Err(_) => problems.push(format!("the worker of bridge {} did not answer", h.bridge)),
        }
    }
    problems
}

/// Checks that the new config can run as a whole: each bridge exists, each new guest's
/// interface exists, and no two guests of a bridge claim one MAC or address.
fn check_fit(
    new: &Config,
    placed: &BTreeMap<String, Placed>,
    opened: &BTreeMap<String, Opened>,
) -> Result<(), ReloadError> {
    let mut netlink = vmnap_host::Netlink::open()
        .map_err(|e| ReloadError::Unusable(format!("cannot open netlink: {}", chain(&e))))?;
    let mut trial: BTreeMap<&str, Surrogate> = BTreeMap::new();
    for g in &new.guests {
        let p = &placed[&g.name];
        let exists = |netlink: &mut vmnap_host::Netlink, what: &str, name: &str| {
            netlink.link_index(name).map(drop).map_err(|e| {
                ReloadError::Unusable(format!("{what} {name} of guest {}: {}", g.name, chain(&e)))
            })
        };
        if !trial.contains_key(p.bridge.as_str()) {
            exists(&mut netlink, "bridge", &p.bridge)?;
        }
        if let Some(o) = opened.get(&g.name) {
            exists(&mut netlink, "interface", &o.interface)?;
        }
        trial
            .entry(p.bridge.as_str())
            .or_insert_with(|| Surrogate::new(0))
            .add_guest(bridge::spec_of(g, p.mac))
            .map_err(|e| ReloadError::Unusable(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(guests: &str) -> Config {
        let text = format!("[api]\nsocket = \"/run/vmnap-test.sock\"\n{guests}");
        Config::parse(&text, std::path::Path::new("test.toml")).expect("a valid config")
    }

    #[test]
    fn what_is_kept_is_the_old_entry_wherever_a_guest_is_unchanged() {
        let old = config(&format!("{}{}", guest("a", 1, ""), guest("b", 2, "")));
        let new = config(&format!(
            "{}{}{}",
            guest("a", 1, ""),
            guest("b", 2, "idle_after = \"5m\"\n"),
            guest("c", 3, "")
        ));
        let old_a = old.guests[0].name.as_ptr();
        let new_guests = new.guests.clone();
        let new_b = new_guests[1].name.as_ptr();
        let kept = keep_unchanged(old.guests, new_guests);
        assert_eq!(kept, new.guests);
        assert_eq!(
            kept[0].name.as_ptr(),
            old_a,
            "a is unchanged: its old entry"
        );
        assert_eq!(kept[1].name.as_ptr(), new_b, "b changed: its new entry");

        let placed = |names: &[&str]| -> BTreeMap<String, Placed> {
            names
                .iter()
                .map(|n| {
                    let p = Placed {
                        bridge: "br0".into(),
                        mac: [2, 0, 0, 0, 1, 1],
                    };
                    (n.to_string(), p)
                })
                .collect()
        };
        let mut running = placed(&["a", "b"]);
        let old_a = running["a"].bridge.as_ptr();
        let mut next = placed(&["a", "c"]);
        next.get_mut("a").expect("a").mac[5] = 1;
        merge_placed(&mut running, next.clone());
        assert_eq!(running, next);
        assert_eq!(
            running["a"].bridge.as_ptr(),
            old_a,
            "a is unchanged: its old entry"
        );
    }

    fn guest(name: &str, n: u8, extra: &str) -> String {
        format!(
            "[[guest]]\nname = \"{name}\"\nbridge = \"br0\"\ninterface = \"vg-{name}\"\n\
             mac = \"02:00:00:00:01:{n:02x}\"\nipv4 = [\"198.18.0.{n}\"]\n\
             backend = \"cgroup\"\ncgroup = \"/sys/fs/cgroup/{name}\"\n{extra}\n"
        )
    }

    #[test]
    fn each_guest_is_kept_given_a_new_policy_replaced_removed_or_added() {
        let old = config(
            &[
                guest("same", 1, ""),
                guest("policy", 2, ""),
                guest("moved", 3, ""),
                guest("gone", 4, ""),
            ]
            .concat(),
        );
        let new = config(
            &[
                guest("same", 1, ""),
                guest("policy", 2, "multicast = \"drop\""),
                guest("moved", 3, "").replace("198.18.0.3", "198.18.0.33"),
                guest("new", 5, ""),
            ]
            .concat(),
        );
        let plan = Plan::of(&old, &new);
        assert_eq!(
            plan,
            Plan {
                added: vec!["new".into()],
                removed: vec!["gone".into()],
                replaced: vec!["moved".into()],
                policy_changed: vec!["policy".into()],
                unchanged: 1,
            }
        );
        let leaving: Vec<&String> = plan.leaving().into_iter().collect();
        assert_eq!(leaving, ["gone", "moved"]);
        assert_eq!(Plan::of(&new, &new).unchanged, 4);
    }
}
