//! Libvirt domains discovered by their metadata element (a libvirtd of the test's own, QEMU
//! under TCG, the project's image): only the tagged domain becomes a guest, with the
//! addresses and settings its element gives, and it sleeps, stays asleep through a reload,
//! and wakes on curl.

mod common;

use common::{curl_counting_syns, need, setup_with_discovered_domains, text};

const NS: &str = "https://example.org/vmnap";

#[test]
fn only_the_domain_with_the_metadata_element_is_a_guest_and_it_sleeps_and_wakes_on_curl() {
    need(&["curl", "ping", "tcpdump", "virsh"]);
    // d1 gets 198.18.0.41 (see `setup_with_discovered_domains`), which its element says;
    // d2 carries no vmnap element.
    let tagged = format!(
        "<vmnap:guest xmlns:vmnap='{NS}' mode='pause' ipv4='198.18.0.41' \
         ipv6='2001:db8::41' wake_on='tcp/80 udp/9000'/>"
    );
    let other = "<other:note xmlns:other='https://example.org/other'>not vmnap's</other:note>";
    let rest =
        format!("discover = {{ metadata = \"{NS}\" }}\n[libvirt.defaults]\nidle_after = \"off\"\n");
    let s = setup_with_discovered_domains(&[("d1", Some(&tagged)), ("d2", Some(other))], &rest);

    let status = s.vmnap(&["status", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    let names: Vec<&str> = all
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, ["d1"], "{status}\n{}", s.daemon_log());
    let log = s.daemon_log();
    assert!(log.contains("discovered a libvirt domain"), "{log}");
    assert!(
        log.contains("no metadata element in namespace https://example.org/vmnap"),
        "d2's skip is not logged: {log}"
    );

    let d1 = s.domain("d1");
    let ip = d1.ipv4.to_string();
    assert_eq!(ip, "198.18.0.41");
    s.vmnap(&["sleep", "d1"]);
    assert_eq!(s.status("d1")["state"], "sleeping");
    assert_eq!(d1.state().expect("virsh domstate"), "paused");
    let ping = s.run(0, &["ping", "-c", "2", "-i", "0.2", "-W", "2", &ip]);
    assert!(
        ping.status.success(),
        "the surrogate did not answer: {}",
        text(&ping)
    );
    assert_eq!(d1.state().expect("state"), "paused", "a ping woke it");
    // A reload finds d1 paused, so discovery cannot read its tap: it keeps the guest it
    // manages, asleep.
    let reloaded = s.vmnap(&["reload"]);
    assert!(
        reloaded.contains("0 added, 0 removed, 0 changed, 1 unchanged"),
        "{reloaded}\n{}",
        s.daemon_log()
    );
    assert_eq!(s.status("d1")["state"], "sleeping");
    assert_eq!(d1.state().expect("state"), "paused", "the reload woke it");
    let (body, syns) = curl_counting_syns(&s, &ip);
    assert_eq!(body, "hello from d1\n", "{}", s.daemon_log());
    assert_eq!(syns, 1, "the client retransmitted its SYN");
    assert_eq!(d1.state().expect("state"), "running");
    let st = s.status("d1");
    assert_eq!(
        (st["wakes"].as_u64(), st["backend"].as_str()),
        (Some(1), Some("libvirt-pause")),
        "{st}"
    );
    assert_eq!(s.domain("d2").state().expect("state"), "running");
}
