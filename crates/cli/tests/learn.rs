//! Addresses learned from a guest's own traffic (the real daemon, namespace guests, iputils
//! `arping`): a guest that takes a new address while awake is answered for at it once asleep,
//! after a restart too; never at an address another port of the bridge used; and an address
//! learned for it is forgotten when another port uses it.

mod common;

use std::time::Duration;

use common::{need, text, until, Setup, ECHO_ANSWERS};

/// Guest `name`'s learned addresses, as the status says.
fn learned(s: &Setup, name: &str) -> Vec<String> {
    s.status(name)["learned_addresses"]
        .as_array()
        .expect("learned_addresses is an array")
        .iter()
        .map(|a| a.as_str().expect("an address").to_owned())
        .collect()
}

/// Runs `argv` in namespace `ns`, expecting success.
fn run_in(s: &Setup, ns: &str, argv: &[&str]) {
    let out = s.lab.exec(ns, argv).expect("run");
    assert!(out.status.success(), "{argv:?}: {}", text(&out));
}

/// Adds `addr` to the interface `dev` of namespace `ns`, and announces it (gratuitous ARP).
fn take_address(s: &Setup, ns: &str, dev: &str, addr: &str) {
    run_in(
        s,
        ns,
        &["ip", "addr", "add", &format!("{addr}/15"), "dev", dev],
    );
    run_in(
        s,
        ns,
        &["arping", "-U", "-c", "1", "-I", dev, "-s", addr, addr],
    );
}

/// Whether an ARP request for `addr` from the client is answered with `mac`.
fn answered_with(s: &Setup, addr: &str, mac: &str) -> bool {
    let out = s.run(
        0,
        &["arping", "-c", "1", "-w", "2", "-I", &s.client_if(0), addr],
    );
    out.status.success() && text(&out).to_lowercase().contains(mac)
}

#[test]
fn an_address_the_guest_takes_is_answered_for_asleep_and_never_one_another_port_used() {
    need(&["arping", "ip", "ping"]);
    let mut s = Setup::new(&[("web1", 0)], ECHO_ANSWERS);
    let guest = s.lab.guest("web1").expect("web1").clone();
    let (ns, dev) = (guest.netns.clone(), guest.guest_if());
    let mac = s.guest_mac("web1");
    let client_ns = s.client(0);
    let client_dev = s.client_if(0);
    assert_eq!(learned(&s, "web1"), Vec::<String>::new());

    // Awake, the guest takes a new address and says so: learned.
    take_address(&s, &ns, &dev, "198.18.0.77");
    until("198.18.0.77 learned", &s, || {
        learned(&s, "web1") == ["198.18.0.77"]
    });
    // An IPv6 address too, from the neighbour solicitation the guest sends from it.
    run_in(
        &s,
        &ns,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8::77/64",
            "dev",
            &dev,
            "nodad",
        ],
    );
    let client_ip6 = s.lab.client("c0").expect("c0").ipv6.to_string();
    let _ = s.lab.exec(
        &ns,
        &[
            "ping",
            "-6",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            "2001:db8::77",
            &client_ip6,
        ],
    );
    until("2001:db8::77 learned", &s, || {
        learned(&s, "web1") == ["198.18.0.77", "2001:db8::77"]
    });
    // The client's port uses 198.18.0.88 first; the guest takes it too: not learned.
    take_address(&s, &client_ns, &client_dev, "198.18.0.88");
    take_address(&s, &ns, &dev, "198.18.0.88");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        learned(&s, "web1"),
        ["198.18.0.77", "2001:db8::77"],
        "{}",
        s.daemon_log()
    );

    // Asleep: answered for at the learned address, with its MAC.
    s.vmnap(&["sleep", "web1"]);
    assert!(s.frozen("web1"));
    assert!(answered_with(&s, "198.18.0.77", &mac), "{}", s.daemon_log());
    // After a crash and a restart, from the journal.
    let pid = s.daemon.take().expect("running");
    // SAFETY: kill(2) on the daemon this test started, by its PID.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    s.lab.kill(pid);
    s.start_daemon();
    assert_eq!(s.status("web1")["state"], "sleeping");
    assert_eq!(learned(&s, "web1"), ["198.18.0.77", "2001:db8::77"]);
    assert!(answered_with(&s, "198.18.0.77", &mac), "{}", s.daemon_log());

    // Another port takes the learned address: the guest's claim on it is forgotten.
    take_address(&s, &client_ns, &client_dev, "198.18.0.77");
    until("198.18.0.77 forgotten", &s, || {
        learned(&s, "web1") == ["2001:db8::77"]
    });
    assert!(
        s.daemon_log()
            .contains("another port uses an address learned for the guest"),
        "{}",
        s.daemon_log()
    );
    // Its configured address is still answered for, and a ping still wakes nothing.
    assert!(answered_with(&s, &s.guest_ip("web1"), &mac));
    assert_eq!(s.status("web1")["state"], "sleeping");
}
