//! libvirt is loaded by the first connection, not before: a vmnap without libvirt guests
//! never maps it. (A test binary of its own, so that no other test has loaded it first.)

use vmnap_libvirt::{parse_interfaces, parse_metadata, LibvirtDomain, LibvirtError};

fn libvirt_mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .any(|l| l.contains("/libvirt.so"))
}

#[test]
fn libvirt_is_loaded_by_the_first_connection_and_not_before() {
    assert!(
        !libvirt_mapped(),
        "libvirt is mapped at start: it is linked"
    );
    // What needs no connection does not load it.
    parse_interfaces("<domain><devices/></domain>").expect("valid");
    parse_metadata(r#"<x:v xmlns:x="urn:x" mode="save"/>"#).expect("valid");
    assert!(!libvirt_mapped(), "loaded without a connection");

    let mut d = LibvirtDomain::open("test:///default", "test").expect("test driver");
    assert!(libvirt_mapped(), "a connection was opened without libvirt");
    d.cpu_time().expect("cpu time");

    // Loaded once for the process: a second connection, and a refused one, work as before.
    LibvirtDomain::open("test:///default", "test").expect("test driver");
    let e = LibvirtDomain::open("test:///default", "absent").expect_err("no such domain");
    assert!(matches!(e, LibvirtError::NoDomain { .. }), "{e:?}");
}
