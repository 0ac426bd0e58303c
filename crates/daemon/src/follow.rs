//! Following libvirt's domain lifecycle events, so that what an operator does outside vmnap
//! (`virsh start`, `shutdown`, `destroy`, `undefine`, `migrate`) is seen at once, without a
//! reload:
//!
//! - a domain that stops or is undefined outside vmnap lets its guest go
//!   ([`Command::Release`]), asleep or awake, without waking it: a `released` event says
//!   why, and the guest leaves the status. A stop that is a save while vmnap has the guest
//!   asleep, or is putting it to sleep, is vmnap's own (save mode) and changes nothing.
//! - a domain that starts while no guest runs it, and that the config covers (a `[[guest]]`
//!   names it, or `[libvirt] discover` selects it), is taken on: the config in force is
//!   applied again ([`Reloader::rescan`]), and an `adopted` event says so.
//! - when the connection is lost (libvirtd restarted), it is opened again, and the config
//!   applied again in case something started meanwhile.
//!
//! It runs on a thread of its own, which also runs libvirt's event loop: once that loop is
//! registered, libvirt's connections count on it to be kept alive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tracing::{debug, info, warn};
use vmnap_libvirt::{Lifecycle, LifecycleEvent, LifecycleEvents, Stopped};

use crate::bridge::Command;
use crate::error::chain;
use crate::events::EventBus;
use crate::registry::Registry;
use crate::reload::Reloader;

/// How long a worker may take to let a guest go.
const RELEASE_WAIT: Duration = Duration::from_secs(10);
/// The first wait before connecting again after a failure, doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Follows the lifecycle events of `uri`'s domains until `stop` is set.
pub(crate) fn run(
    uri: &str,
    registry: &Registry,
    reloader: &Reloader<'_>,
    bus: &EventBus,
    stop: &AtomicBool,
) {
    let mut retry = RETRY_FIRST;
    let mut connected_before = false;
    let mut said = false;
    while !stop.load(Ordering::Relaxed) {
        let mut events = match LifecycleEvents::open(uri) {
            Ok(e) => e,
            Err(e) => {
                if !said {
                    warn!(uri, error = %chain(&e), "cannot follow libvirt's domain events; trying again (until then, what is done outside vmnap is seen at the next reload)");
                    said = true;
                }
                std::thread::sleep(retry);
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        info!(uri, "following libvirt's domain events");
        retry = RETRY_FIRST;
        said = false;
        if connected_before {
            // Domains may have started while the connection was down.
            rescan(
                registry,
                reloader,
                bus,
                "libvirt is back, and its domain runs",
            );
        }
        connected_before = true;
        while !stop.load(Ordering::Relaxed) {
            match events.poll() {
                Ok(list) => handle(uri, &list, registry, reloader, bus),
                Err(e) => {
                    warn!(uri, error = %e, "lost libvirt's domain events; connecting again");
                    break;
                }
            }
        }
    }
}

/// What the events of one turn of the loop ask for, oldest first.
fn handle(
    uri: &str,
    list: &[LifecycleEvent],
    registry: &Registry,
    reloader: &Reloader<'_>,
    bus: &EventBus,
) {
    let mut rescan_for = None;
    for e in list {
        debug!(domain = %e.domain, what = ?e.what, "libvirt domain event");
        let guest = reloader.guest_of_domain(&e.domain);
        match e.what {
            Lifecycle::Stopped(how) => {
                // An event read late (behind a rescan) may be older than a start since: a
                // domain that runs now is not let go (its start comes next).
                let running_guest = match &guest {
                    Some((name, true)) if !runs_now(uri, &e.domain) => Some(name.clone()),
                    _ => None,
                };
                if let Some(name) = running_guest {
                    let reason = match how {
                        Stopped::Migrated => {
                            format!("its domain {} was migrated to another host", e.domain)
                        }
                        how => format!(
                            "its domain {} was {} outside vmnap",
                            e.domain,
                            how.describe()
                        ),
                    };
                    release(registry, reloader, &name, reason, how == Stopped::Saved);
                }
            }
            Lifecycle::Undefined => {
                if let Some((name, true)) = guest {
                    let reason = format!("its domain {} was undefined", e.domain);
                    release(registry, reloader, &name, reason, false);
                }
            }
            Lifecycle::Started(_) => {
                let covered = match guest {
                    Some((_, running)) => !running,
                    None => reloader.discovers(),
                };
                if covered {
                    rescan_for = Some(format!("its domain {} started", e.domain));
                }
            }
            _ => {}
        }
    }
    if let Some(reason) = rescan_for {
        rescan(registry, reloader, bus, &reason);
    }
}

/// Whether `domain` runs now, as libvirt says (`false` if it cannot be asked).
fn runs_now(uri: &str, domain: &str) -> bool {
    vmnap_libvirt::LibvirtDomain::open(uri, domain)
        .and_then(|mut d| d.state())
        .is_ok_and(|s| s == vmnap_libvirt::DomainState::Running)
}

/// Has guest `name`'s worker let it go (unless `saved` is vmnap's own save), then the
/// reloader forget it.
fn release(registry: &Registry, reloader: &Reloader<'_>, name: &str, reason: String, saved: bool) {
    let (tx, rx) = mpsc::channel();
    let sent = {
        let workers = registry.workers();
        workers
            .iter()
            .find(|h| h.guests.iter().any(|g| g == name))
            .is_some_and(|h| {
                h.send(Command::Release {
                    guest: name.to_owned(),
                    reason: reason.clone(),
                    saved,
                    reply: tx,
                })
            })
    };
    if !sent {
        return;
    }
    match rx.recv_timeout(RELEASE_WAIT) {
        Ok(true) => {
            info!(guest = %name, %reason, "guest let go");
            for h in registry.workers_mut().iter_mut() {
                h.guests.retain(|g| g != name);
            }
            reloader.release(name);
        }
        Ok(false) => debug!(guest = %name, "a save of vmnap's own; the guest stays"),
        Err(_) => {
            warn!(guest = %name, %reason, "the guest's worker did not answer; it is let go at the next reload")
        }
    }
}

fn rescan(registry: &Registry, reloader: &Reloader<'_>, bus: &EventBus, reason: &str) {
    match reloader.rescan(registry, bus, reason) {
        Ok(added) if added.is_empty() => debug!(reason, "nothing new to take on"),
        Ok(added) => debug!(?added, reason, "taken on"),
        Err(e) => warn!(error = %e, reason, "cannot take on what libvirt runs now"),
    }
}
