//! Domains' lifecycle events, as libvirt's event loop delivers them: what the daemon follows
//! so that a domain started, shut down, undefined or migrated outside vmnap is seen at once,
//! without a reload.

use std::sync::mpsc::{self, Receiver};

use crate::ffi::{self, LifecycleWatch};
use crate::LibvirtError;

/// How a domain started (`virDomainEventStartedDetailType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Booted (`virsh start`, autostart).
    Booted,
    /// Came in by migration.
    Migrated,
    /// Restored from a saved state (a managed save included: vmnap's own wakes in save mode).
    Restored,
    /// Reverted to a snapshot.
    FromSnapshot,
    /// Woken from a guest-side suspend.
    Wakeup,
    /// A detail this crate does not know.
    Other(i32),
}

/// How a domain stopped (`virDomainEventStoppedDetailType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Its guest shut down (`virsh shutdown`, or from inside).
    Shutdown,
    /// Destroyed (`virsh destroy`): pulled the plug.
    Destroyed,
    /// Crashed.
    Crashed,
    /// Migrated away to another host.
    Migrated,
    /// Saved to a file (a managed save included: vmnap's own sleeps in save mode).
    Saved,
    /// Its host-side emulator failed.
    Failed,
    /// Reverted to a snapshot of a stopped domain.
    FromSnapshot,
    /// A detail this crate does not know.
    Other(i32),
}

impl Stopped {
    /// How people say it.
    pub fn describe(self) -> &'static str {
        match self {
            Stopped::Shutdown => "shut down",
            Stopped::Destroyed => "destroyed",
            Stopped::Crashed => "crashed",
            Stopped::Migrated => "migrated away",
            Stopped::Saved => "saved",
            Stopped::Failed => "failed",
            Stopped::FromSnapshot => "reverted to a snapshot",
            Stopped::Other(_) => "stopped",
        }
    }
}

/// What happened to a domain (`virDomainEventType`, with its detail where it matters here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Defined, or its definition changed.
    Defined,
    /// Undefined.
    Undefined,
    /// Started.
    Started(Started),
    /// Paused.
    Suspended,
    /// Unpaused.
    Resumed,
    /// Stopped: its QEMU process is gone.
    Stopped(Stopped),
    /// Its guest began to shut down.
    Shutdown,
    /// Its guest suspended itself (to RAM or disk).
    PmSuspended,
    /// Its guest crashed, and the domain is kept crashed.
    Crashed,
    /// An event this crate does not know.
    Other(i32),
}

impl Lifecycle {
    /// The event for libvirt's event and detail numbers.
    pub fn from_raw(event: i32, detail: i32) -> Self {
        match event {
            0 => Lifecycle::Defined,
            1 => Lifecycle::Undefined,
            2 => Lifecycle::Started(match detail {
                0 => Started::Booted,
                1 => Started::Migrated,
                2 => Started::Restored,
                3 => Started::FromSnapshot,
                4 => Started::Wakeup,
                d => Started::Other(d),
            }),
            3 => Lifecycle::Suspended,
            4 => Lifecycle::Resumed,
            5 => Lifecycle::Stopped(match detail {
                0 => Stopped::Shutdown,
                1 => Stopped::Destroyed,
                2 => Stopped::Crashed,
                3 => Stopped::Migrated,
                4 => Stopped::Saved,
                5 => Stopped::Failed,
                6 => Stopped::FromSnapshot,
                d => Stopped::Other(d),
            }),
            6 => Lifecycle::Shutdown,
            7 => Lifecycle::PmSuspended,
            8 => Lifecycle::Crashed,
            e => Lifecycle::Other(e),
        }
    }
}

/// One domain's lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// The domain's name.
    pub domain: String,
    /// What happened.
    pub what: Lifecycle,
}

/// The lifecycle events of every domain of a connection.
///
/// Opening it registers libvirt's event loop for the whole process (once): connections
/// opened afterwards are kept alive by that loop, so whoever opens one keeps calling
/// [`LifecycleEvents::poll`] (from one thread) for as long as the process uses libvirt.
#[derive(Debug)]
pub struct LifecycleEvents {
    watch: LifecycleWatch,
    events: Receiver<LifecycleEvent>,
}

impl LifecycleEvents {
    /// Connects to `uri` and subscribes to its domains' lifecycle events.
    pub fn open(uri: &str) -> Result<Self, LibvirtError> {
        let (tx, events) = mpsc::channel();
        let watch = LifecycleWatch::open(
            uri,
            Box::new(move |domain, event, detail| {
                let _ = tx.send(LifecycleEvent {
                    domain,
                    what: Lifecycle::from_raw(event, detail),
                });
            }),
        )?;
        Ok(Self { watch, events })
    }

    /// Runs libvirt's event loop once, waiting for at most about a quarter of a second,
    /// and returns the events that came, oldest first; `Err` once the connection is lost
    /// (libvirtd went away: open another, and look again at what may have changed
    /// meanwhile).
    pub fn poll(&mut self) -> Result<Vec<LifecycleEvent>, crate::VirError> {
        ffi::run_event_loop()?;
        let events: Vec<LifecycleEvent> = self.events.try_iter().collect();
        if events.is_empty() && !self.watch.is_alive() {
            return Err(crate::VirError::lost());
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_numbers_are_named_as_libvirt_defines_them() {
        assert_eq!(
            Lifecycle::from_raw(2, 0),
            Lifecycle::Started(Started::Booted)
        );
        assert_eq!(
            Lifecycle::from_raw(2, 2),
            Lifecycle::Started(Started::Restored)
        );
        assert_eq!(
            Lifecycle::from_raw(5, 0),
            Lifecycle::Stopped(Stopped::Shutdown)
        );
        assert_eq!(
            Lifecycle::from_raw(5, 1),
            Lifecycle::Stopped(Stopped::Destroyed)
        );
        assert_eq!(
            Lifecycle::from_raw(5, 3),
            Lifecycle::Stopped(Stopped::Migrated)
        );
        assert_eq!(
            Lifecycle::from_raw(5, 4),
            Lifecycle::Stopped(Stopped::Saved)
        );
        assert_eq!(
            Lifecycle::from_raw(5, 9),
            Lifecycle::Stopped(Stopped::Other(9))
        );
        assert_eq!(Lifecycle::from_raw(1, 0), Lifecycle::Undefined);
        assert_eq!(Lifecycle::from_raw(3, 0), Lifecycle::Suspended);
        assert_eq!(Lifecycle::from_raw(42, 0), Lifecycle::Other(42));
    }
}
