//! Discovery against libvirt's test driver (`test:///default`: one running domain `test`,
//! shared by the whole process; this file defines two more and removes them again).

use vmnap_libvirt::{list_domains, Connect, Domain, DomainState, GuestMetadata, Selector};

const URI: &str = "test:///default";
const NS: &str = "https://example.org/vmnap";

fn domain_xml(name: &str, mac: &str, metadata: &str) -> String {
    format!(
        "<domain type='test'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
  <metadata>{metadata}</metadata>
  <devices>
    <interface type='bridge'>
      <source bridge='br0'/>
      <mac address='{mac}'/>
    </interface>
  </devices>
</domain>"
    )
}

/// Defines and starts the domains; undefines them when dropped.
struct Defined(Connect, Vec<Domain>);

impl Drop for Defined {
    fn drop(&mut self) {
        for d in &self.1 {
            let _ = d.destroy();
            let _ = d.undefine();
        }
    }
}

#[test]
fn all_takes_every_domain_and_metadata_only_the_tagged_ones_with_their_settings() {
    let conn = Connect::open(URI).expect("test driver");
    let mut defined = Defined(conn, Vec::new());
    let tagged = domain_xml(
        "tagged",
        "52:54:00:00:00:41",
        &format!(
            "<vmnap:guest xmlns:vmnap='{NS}' mode='save' ipv4='198.18.0.41' \
             wake_on='tcp/80 tcp/22'/>"
        ),
    );
    let other_ns = domain_xml(
        "plain",
        "52:54:00:00:00:42",
        "<other:thing xmlns:other='https://example.org/other'/>",
    );
    for xml in [tagged, other_ns] {
        let d = defined.0.define_domain(&xml).expect("define");
        d.create().expect("start");
        defined.1.push(d);
    }

    let all = list_domains(URI, &Selector::All).expect("list");
    let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
    for want in ["plain", "tagged", "test"] {
        assert!(names.contains(&want), "{names:?}");
    }
    assert!(all.iter().all(|d| d.selected));
    assert!(all.iter().all(|d| d.metadata.is_none()));

    let found = list_domains(URI, &Selector::Metadata(NS.into())).expect("list");
    let selected: Vec<&str> = found
        .iter()
        .filter(|d| d.selected)
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(selected, ["tagged"]);
    let t = found.iter().find(|d| d.name == "tagged").expect("listed");
    assert_eq!(t.state, DomainState::Running);
    assert_eq!(t.error, None);
    assert_eq!(
        t.metadata,
        Some(GuestMetadata {
            mode: Some("save".into()),
            ipv4: vec!["198.18.0.41".into()],
            wake_on: Some(vec!["tcp/80".into(), "tcp/22".into()]),
            ..GuestMetadata::default()
        })
    );
    assert_eq!(t.interfaces.len(), 1);
    assert_eq!(t.interfaces[0].mac, [0x52, 0x54, 0, 0, 0, 0x41]);
    assert_eq!(t.interfaces[0].bridge.as_deref(), Some("br0"));
    // The test driver makes up one lease per interface of a running domain.
    assert_eq!(t.lease_error, None);
    assert!(!t.leases.is_empty());
    assert!(
        t.leases.iter().all(|l| l.mac == t.interfaces[0].mac),
        "{:?}",
        t.leases
    );
    let plain = found.iter().find(|d| d.name == "plain").expect("listed");
    assert!(!plain.selected && plain.metadata.is_none());
    assert_eq!(plain.state, DomainState::Running);

    // A stopped domain is listed as such; a metadata element vmnap cannot read is reported.
    defined.1[0].destroy().expect("stop");
    let bad = domain_xml(
        "badmeta",
        "52:54:00:00:00:43",
        &format!("<vmnap:guest xmlns:vmnap='{NS}' colour='blue'/>"),
    );
    defined
        .1
        .push(defined.0.define_domain(&bad).expect("define"));
    let found = list_domains(URI, &Selector::Metadata(NS.into())).expect("list");
    let t = found.iter().find(|d| d.name == "tagged").expect("listed");
    assert_eq!(t.state, DomainState::ShutOff);
    let b = found.iter().find(|d| d.name == "badmeta").expect("listed");
    assert!(b.selected);
    let e = b.error.as_deref().expect("an error");
    assert!(e.contains("unknown attribute `colour`"), "{e}");
}

#[test]
fn a_connection_that_fails_names_the_uri() {
    let e = list_domains("test:///nonexistent/file.xml", &Selector::All).unwrap_err();
    assert!(
        e.to_string().contains("test:///nonexistent/file.xml"),
        "{e}"
    );
}
