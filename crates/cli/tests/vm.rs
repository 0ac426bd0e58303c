//! Real QEMU guests (TCG, the project's own image) driven over QMP by the real daemon.

mod common;

use std::time::Duration;

use common::{
    assert_thousand_in_order, curl, curl_counting_syns, need, send_thousand_datagrams, text, Setup,
};

#[test]
fn a_paused_qemu_guest_is_stood_in_for_and_woken_by_curl_with_one_syn() {
    need(&["curl", "ping", "tcpdump"]);
    let s = Setup::with_vms(&["vm1"], "");
    s.vmnap(&["sleep", "vm1"]);
    assert!(
        s.vm_status("vm1").contains("\"paused\""),
        "{}",
        s.vm_status("vm1")
    );
    let ip = s.vm_ip("vm1");
    let ping = s.run(0, &["ping", "-c", "3", "-i", "0.2", "-W", "2", &ip]);
    assert!(ping.status.success(), "{}", text(&ping));
    assert!(
        s.vm_status("vm1").contains("\"paused\""),
        "a ping woke the guest"
    );
    let (body, syns) = curl_counting_syns(&s, &ip);
    assert_eq!(body, "hello from vm1\n");
    assert_eq!(syns, 1, "the client retransmitted its SYN");
    assert!(s.vm_status("vm1").contains("\"running\""));
    let st = s.status("vm1");
    assert_eq!(
        (st["wakes"].as_u64(), st["backend"].as_str()),
        (Some(1), Some("qmp-pause")),
        "{st}"
    );
}

#[test]
fn a_thousand_datagrams_reach_a_paused_qemu_guest_in_order_exactly_once() {
    let s = Setup::with_vms(&["vm1"], "");
    let ip = s.vm_ip("vm1");
    assert!(s
        .run(0, &["ping", "-c", "1", "-W", "2", &ip])
        .status
        .success());
    s.vmnap(&["sleep", "vm1"]);
    send_thousand_datagrams(&s, &ip);
    let vm = s.lab.vm("vm1").expect("vm").clone();
    assert_thousand_in_order(Duration::from_secs(60), || vm.udp_lines());
    assert_eq!(s.status("vm1")["wakes"], 1);
}

#[test]
fn twenty_sleep_wake_cycles_under_a_trickle_of_requests_lose_none() {
    need(&["curl"]);
    let s = Setup::with_vms(&["vm1"], "");
    let ip = s.vm_ip("vm1");
    let mut slow = Vec::new();
    for round in 0..20 {
        s.vmnap(&["sleep", "vm1"]);
        for _ in 0..3 {
            let (body, took) = curl(&s, &format!("http://{ip}/"));
            assert_eq!(
                body, "hello from vm1\n",
                "round {round}: a request was lost"
            );
            if took > Duration::from_millis(900) {
                slow.push((round, took));
            }
        }
    }
    assert!(
        slow.is_empty(),
        "requests that needed a retransmission: {slow:?}"
    );
    assert_eq!(s.status("vm1")["wakes"], 20);
}
