//! Real QEMU guests (TCG, the project's own image) driven over QMP by the real daemon.

mod common;

use std::time::{Duration, Instant};

use common::{need, text, Setup};

fn curl(s: &Setup, ip: &str) -> (String, Duration) {
    let started = Instant::now();
    let out = s.run(
        0,
        &["curl", "-sS", "--max-time", "15", &format!("http://{ip}/")],
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed(),
    )
}

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
    let ns = s.client(0);
    let capture = s
        .lab
        .capture(
            &ns,
            &s.client_if(0),
            "tcp port 80 and tcp[tcpflags] & tcp-syn != 0",
        )
        .expect("tcpdump");
    let (body, _) = curl(&s, &ip);
    let lines = capture.stop().expect("capture");
    assert_eq!(body, "hello from vm1\n");
    let syns = lines.iter().filter(|l| l.contains("Flags [S]")).count();
    assert_eq!(
        syns,
        1,
        "the client retransmitted its SYN:\n{}",
        lines.join("\n")
    );
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
    let script = format!("for i in $(seq -w 1 1000); do printf \"$i\" > /dev/udp/{ip}/9000; done");
    assert!(s.run(0, &["bash", "-c", &script]).status.success());
    let vm = s.lab.vm("vm1").expect("vm").clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm.udp_lines().len() < 1000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let got = vm.udp_lines();
    let want: Vec<String> = (1..=1000).map(|i| format!("{i:04}")).collect();
    assert_eq!(got.len(), 1000, "losses or duplicates: {} lines", got.len());
    let first_wrong = got.iter().zip(&want).position(|(g, w)| g != w);
    let from = first_wrong.unwrap_or(0);
    assert_eq!(
        first_wrong,
        None,
        "out of order: {:?}",
        &got[from..(from + 10).min(got.len())]
    );
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
            let (body, took) = curl(&s, &ip);
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
