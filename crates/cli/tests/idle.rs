//! Guests falling asleep on their own, on a real bridge with the real daemon.

mod common;

use std::time::{Duration, Instant};

use common::{need, Setup};

/// `[idle]` for tests: decide every 200 ms, asleep after 1 s idle.
const FAST_IDLE: &str = "[idle]\ninterval = \"200ms\"\nidle_after = \"1s\"\n---\n";

fn state(s: &Setup, guest: &str) -> String {
    s.status(guest)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn an_idle_guest_falls_asleep_on_its_own_and_wakes_on_demand() {
    need(&["curl"]);
    let s = Setup::new(&[("web1", 0)], FAST_IDLE);
    let started = Instant::now();
    while state(&s, "web1") != "sleeping" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "an idle guest did not fall asleep in 10 s: {}",
            s.status("web1")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.frozen("web1"));
    assert!(
        s.daemon_log().contains("idle; putting the guest to sleep"),
        "{}",
        s.daemon_log()
    );
    let ip = s.guest_ip("web1");
    let out = s.run(
        0,
        &["curl", "-sS", "--max-time", "10", &format!("http://{ip}/")],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web1\n");
    assert_eq!(s.status("web1")["wakes"], 1);
}

#[test]
fn a_guest_that_keeps_serving_requests_never_falls_asleep_and_a_pinned_one_neither() {
    need(&["curl"]);
    let s = Setup::new(&[("web1", 0), ("web2", 0)], FAST_IDLE);
    s.vmnap(&["pin", "web2"]);
    let ip = s.guest_ip("web1");
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let out = s.run(
            0,
            &["curl", "-sS", "--max-time", "5", &format!("http://{ip}/")],
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web1\n");
        assert_eq!(state(&s, "web1"), "awake", "a busy guest fell asleep");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(s.status("web1")["wakes"], 0, "{}", s.status("web1"));
    let web2 = s.status("web2");
    assert_eq!(
        (web2["state"].as_str(), web2["pinned"].as_bool()),
        (Some("awake"), Some(true)),
        "{web2}"
    );
    // Unpinned, it sleeps.
    s.vmnap(&["unpin", "web2"]);
    let started = Instant::now();
    while state(&s, "web2") != "sleeping" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "web2 did not sleep after unpin"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
