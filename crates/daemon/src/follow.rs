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

/// What one event asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Let the guest go, for this reason (`saved`: the stop was a save).
    Release {
        guest: String,
        reason: String,
        saved: bool,
    },
    /// Apply the config again: a domain it covers started.
    Rescan(String),
    Nothing,
}

/// What event `e` asks, for `guest` (the guest of its domain, and whether it runs), given
/// whether discovery is on and whether the domain runs now (asked only for a stop of a
/// running guest's domain: an event read late, behind a rescan, may be older than a start
/// since, and a domain that runs now is not let go; its start comes next).
fn decide(
    e: &LifecycleEvent,
    guest: Option<(String, bool)>,
    discovers: bool,
    runs_now: impl FnOnce() -> bool,
) -> Decision {
    let domain = &e.domain;
    match (e.what, guest) {
        (Lifecycle::Stopped(how), Some((guest, true))) if !runs_now() => Decision::Release {
            guest,
            reason: match how {
                Stopped::Migrated => format!("its domain {domain} was migrated to another host"),
                how => format!("its domain {domain} was {} outside vmnap", how.describe()),
            },
            saved: how == Stopped::Saved,
        },
        (Lifecycle::Undefined, Some((guest, true))) => Decision::Release {
            guest,
            reason: format!("its domain {domain} was undefined"),
            saved: false,
        },
        (Lifecycle::Started(_), Some((_, false))) => {
            Decision::Rescan(format!("its domain {domain} started"))
        }
        (Lifecycle::Started(_), None) if discovers => {
            Decision::Rescan(format!("its domain {domain} started"))
        }
        _ => Decision::Nothing,
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
        match decide(e, guest, reloader.discovers(), || runs_now(uri, &e.domain)) {
            Decision::Release {
                guest,
                reason,
                saved,
            } => release(registry, reloader, &guest, reason, saved),
            Decision::Rescan(reason) => rescan_for = Some(reason),
            Decision::Nothing => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use vmnap_libvirt::Started;

    fn event(what: Lifecycle) -> LifecycleEvent {
        LifecycleEvent {
            domain: "d1".into(),
            what,
        }
    }

    #[test]
    fn stops_let_a_running_guest_go_and_starts_of_covered_domains_rescan() {
        let running = || Some(("web1".to_owned(), true));
        let release = |reason: &str, saved| Decision::Release {
            guest: "web1".into(),
            reason: reason.into(),
            saved,
        };
        let stopped = |how| event(Lifecycle::Stopped(how));
        assert_eq!(
            decide(&stopped(Stopped::Migrated), running(), false, || false),
            release("its domain d1 was migrated to another host", false)
        );
        assert_eq!(
            decide(&stopped(Stopped::Shutdown), running(), false, || false),
            release("its domain d1 was shut down outside vmnap", false)
        );
        assert_eq!(
            decide(&stopped(Stopped::Saved), running(), false, || false),
            release("its domain d1 was saved outside vmnap", true)
        );
        // Read late: the domain runs again by now.
        assert_eq!(
            decide(&stopped(Stopped::Destroyed), running(), false, || true),
            Decision::Nothing
        );
        // A guest that waits for its domain, or none at all, is not let go.
        let waiting = || Some(("web1".to_owned(), false));
        assert_eq!(
            decide(&stopped(Stopped::Destroyed), waiting(), false, || false),
            Decision::Nothing
        );
        assert_eq!(
            decide(&event(Lifecycle::Undefined), running(), false, || false),
            release("its domain d1 was undefined", false)
        );
        let started = event(Lifecycle::Started(Started::Booted));
        let rescan = Decision::Rescan("its domain d1 started".into());
        assert_eq!(decide(&started, waiting(), false, || true), rescan);
        assert_eq!(decide(&started, None, true, || true), rescan);
        assert_eq!(decide(&started, None, false, || true), Decision::Nothing);
        // vmnap's own wake from a save: the guest runs.
        let restored = event(Lifecycle::Started(Started::Restored));
        assert_eq!(
            decide(&restored, running(), true, || true),
            Decision::Nothing
        );
        assert_eq!(
            decide(&event(Lifecycle::Suspended), running(), true, || false),
            Decision::Nothing
        );
    }
}
