//! The backend against libvirt's test driver (`test:///default`: no daemon, a domain `test`
//! that runs; suspend, resume and managed save work on it).

use vmnap_hypervisor::Backend;
use vmnap_libvirt::{DomainState, LibvirtBackend, LibvirtDomain, LibvirtError, Mode};

const URI: &str = "test:///default";

/// The test driver's default instance is shared by the whole process: one test at a time,
/// each starting from a running domain.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fresh() -> std::sync::MutexGuard<'static, ()> {
    let turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut d = LibvirtDomain::open(URI, "test").expect("test driver");
    match d.state().expect("state") {
        DomainState::Paused => d.resume().expect("resume"),
        DomainState::ShutOff => d.start().expect("start"),
        _ => {}
    }
    turn
}

#[test]
fn pause_mode_suspends_and_resumes_the_domain() {
    let _turn = fresh();
    let mut backend = LibvirtBackend::open("web2", URI, "test", Mode::Pause).expect("test driver");
    assert_eq!(backend.kind(), "libvirt-pause");
    assert_eq!(
        backend.domain().state().expect("state"),
        DomainState::Running
    );
    backend.suspend().expect("suspend");
    assert_eq!(
        backend.domain().state().expect("state"),
        DomainState::Paused
    );
    backend.resume().expect("resume");
    assert_eq!(
        backend.domain().state().expect("state"),
        DomainState::Running
    );
}

#[test]
fn save_mode_saves_the_domain_and_starts_it_from_the_save() {
    let _turn = fresh();
    let mut backend = LibvirtBackend::open("web2", URI, "test", Mode::Save).expect("test driver");
    backend.suspend().expect("managed save");
    assert_eq!(
        backend.domain().state().expect("state"),
        DomainState::ShutOff
    );
    assert!(backend.domain().has_managed_save().expect("query"));
    backend.resume().expect("start from the save");
    assert_eq!(
        backend.domain().state().expect("state"),
        DomainState::Running
    );
    assert!(
        !backend.domain().has_managed_save().expect("query"),
        "the image is used up"
    );
}

#[test]
fn a_domain_saved_while_paused_comes_back_running() {
    let _turn = fresh();
    let mut domain = LibvirtDomain::open(URI, "test").expect("test driver");
    domain.suspend().expect("pause");
    domain.managed_save().expect("save");
    domain.start().expect("start");
    assert_eq!(domain.state().expect("state"), DomainState::Running);
}

#[test]
fn errors_name_the_uri_and_the_domain() {
    let _turn = fresh();
    let err = LibvirtDomain::open(URI, "no-such-domain").expect_err("absent");
    assert!(matches!(err, LibvirtError::NoDomain { .. }));
    assert!(
        err.to_string().contains("no-such-domain") && err.to_string().contains(URI),
        "{err}"
    );
    let mut backend = LibvirtBackend::open("web2", URI, "test", Mode::Pause).expect("test driver");
    // Resuming a running domain is nothing to do...
    backend.resume().expect("already running");
    // ... but a domain that is off cannot be resumed from a pause.
    backend.domain().managed_save().expect("save");
    let err = backend
        .resume()
        .expect_err("resuming a saved domain by pause fails");
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        text.contains("web2") && text.contains("resume") && text.contains("test"),
        "{text}"
    );
}

#[test]
fn cpu_time_and_interfaces_are_read() {
    let _turn = fresh();
    let mut domain = LibvirtDomain::open(URI, "test").expect("test driver");
    domain.cpu_time().expect("cpu time");
    let ifaces = domain.interfaces().expect("XML");
    assert!(!ifaces.is_empty(), "the test domain has an interface");
}

#[test]
fn lifecycle_events_name_the_domain_and_what_happened_to_it() {
    use vmnap_libvirt::{Connect, Lifecycle, LifecycleEvents, Started, Stopped};
    let _turn = fresh();
    let mut events = LifecycleEvents::open(URI).expect("subscribe");
    // Done through another connection, as a `virsh` of the operator's would.
    let conn = Connect::open(URI).expect("test driver");
    let d = conn.lookup_domain("test").expect("domain");
    d.destroy().expect("destroy");
    d.create().expect("start");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen.len() < 2 && std::time::Instant::now() < deadline {
        seen.extend(events.poll().expect("the event loop"));
    }
    let seen: Vec<(String, Lifecycle)> = seen.into_iter().map(|e| (e.domain, e.what)).collect();
    assert_eq!(
        seen,
        [
            ("test".to_owned(), Lifecycle::Stopped(Stopped::Destroyed)),
            ("test".to_owned(), Lifecycle::Started(Started::Booted)),
        ]
    );
    // With nothing happening, a turn of the loop returns empty within its tick.
    let started = std::time::Instant::now();
    assert_eq!(events.poll().expect("the event loop"), []);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
