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
    assert_eq!(s.awake("web1")["wakes"], 1);
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

#[test]
fn pings_and_health_checks_do_not_keep_a_guest_awake_and_are_answered_in_its_sleep() {
    need(&["curl", "ping"]);
    let extra = "[idle]\ninterval = \"200ms\"\nidle_after = \"1s\"\n---\n\
                 [[guest.health]]\nport = 8080\npath = \"/healthz\"\nbody = \"ok\"\n";
    let s = Setup::new(&[("web1", 0)], extra);
    let ip = s.guest_ip("web1");
    let ns = s.client(0);
    // A monitor that pings every 200 ms and health-checks every 300 ms, awake or not.
    let monitor = format!(
        "ping -q -i 0.2 -c 75 {ip} >/dev/null & \
         for i in $(seq 50); do curl -s -m 1 -o /dev/null http://{ip}:8080/healthz; sleep 0.3; done; wait"
    );
    let argv: Vec<&std::ffi::OsStr> = vec!["sh".as_ref(), "-c".as_ref(), monitor.as_ref()];
    s.lab.spawn_in(&ns, &argv).expect("start the monitor");
    let started = Instant::now();
    while state(&s, "web1") != "sleeping" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pings and health checks kept the guest awake: {}",
            s.status("web1")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = s.run(
        0,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{ip}:8080/healthz"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
    std::thread::sleep(Duration::from_secs(2));
    let st = s.status("web1");
    assert_eq!(
        (st["state"].as_str(), st["wakes"].as_u64()),
        (Some("sleeping"), Some(0)),
        "{st}"
    );
    assert!(st["answered_frames"].as_u64().expect("number") > 10, "{st}");
}

#[test]
fn an_open_connection_on_a_keep_awake_port_keeps_the_guest_awake_until_it_closes() {
    need(&["socat", "ss"]);
    // Idle after 2 s: room for the client to start on a loaded machine before the guest
    // would sleep anyway.
    let extra = "[idle]\ninterval = \"200ms\"\nidle_after = \"2s\"\n---\n\
                 keep_awake_while_connected = [\"tcp/80\"]\n";
    let s = Setup::new(&[("web1", 0)], extra);
    let ip = s.guest_ip("web1");
    let ns = s.client(0);
    // An idle connection held for 8 s, then closed.
    let hold = format!("sleep 8 | socat -t 1 - TCP:{ip}:80");
    let argv: Vec<&std::ffi::OsStr> = vec!["sh".as_ref(), "-c".as_ref(), hold.as_ref()];
    s.lab.spawn_in(&ns, &argv).expect("start the client");
    // From the moment the connection is up, the guest stays awake while it is.
    let spawned = Instant::now();
    loop {
        let est = s.run(0, &["ss", "-Htn", "state", "established", "dst", &ip]);
        if !String::from_utf8_lossy(&est.stdout).trim().is_empty() {
            break;
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(5),
            "the client did not connect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        assert_eq!(state(&s, "web1"), "awake", "asleep with a connection open");
        std::thread::sleep(Duration::from_millis(100));
    }
    while state(&s, "web1") != "sleeping" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "did not sleep after the connection closed: {}",
            s.status("web1")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits up to `secs` for `guest` to be in `want`, then returns its status.
fn wait_state(s: &Setup, guest: &str, want: &str, secs: u64) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let st = s.status(guest);
        if st["state"] == want {
            return st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{guest} was not {want} in {secs} s: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reload_gives_a_sleeping_guest_a_max_sleep_without_waking_it_and_then_it_is_woken() {
    need(&["curl"]);
    let s = Setup::new(
        &[("web1", 0)],
        "[idle]\ninterval = \"200ms\"\nidle_after = \"off\"\n---\n",
    );
    s.sleep("web1");
    // max_sleep added to its entry (the last table of the file) by a reload: the reload
    // wakes nobody, and the guest sleeps 3 s from when it fell asleep.
    let mut text = std::fs::read_to_string(&s.config).expect("config");
    text += "max_sleep = \"3s\"\n";
    std::fs::write(&s.config, text).expect("write");
    s.vmnap(&["reload"]);
    let st = s.status("web1");
    assert_eq!(
        (st["state"].as_str(), st["wakes"].as_u64()),
        (Some("sleeping"), Some(0)),
        "{st}"
    );
    assert!(s.frozen("web1"));
    let st = wait_state(&s, "web1", "awake", 15);
    assert_eq!(
        (st["wakes"].as_u64(), st["last_wake_cause"].as_str()),
        (Some(1), Some("max-sleep")),
        "{st}"
    );
    assert!(!s.frozen("web1"));
    assert!(
        s.daemon_log()
            .contains("asleep for its max_sleep; waking it"),
        "{}",
        s.daemon_log()
    );
    let events = s.vmnap(&["events", "web1"]);
    assert!(events.contains("max-sleep"), "{events}");
    // It serves as ever.
    let ip = s.guest_ip("web1");
    let out = s.run(
        0,
        &["curl", "-sS", "--max-time", "10", &format!("http://{ip}/")],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web1\n");
}

#[test]
fn min_awake_keeps_a_woken_guest_awake_that_idleness_would_put_back_to_sleep() {
    need(&["curl"]);
    let s = Setup::new(
        &[("web1", 0)],
        "[idle]\ninterval = \"200ms\"\nidle_after = \"1s\"\n---\nmin_awake = \"4s\"\n",
    );
    // Never woken yet: it falls asleep 1 s idle, min_awake or not.
    wait_state(&s, "web1", "sleeping", 10);
    let ip = s.guest_ip("web1");
    let out = s.run(
        0,
        &["curl", "-sS", "--max-time", "10", &format!("http://{ip}/")],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web1\n");
    let woken = Instant::now();
    // Idle again from the first second on, but awake for at least 4 s after the wake. (It
    // may still be handing its port back as curl's answer comes: "waking".)
    while woken.elapsed() < Duration::from_millis(3_000) {
        let st = s.status("web1");
        assert!(
            st["state"] == "awake" || st["state"] == "waking",
            "asleep before its min_awake: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_state(&s, "web1", "sleeping", 15);
    // (Counted from curl's answer, a little after the wake itself.)
    assert!(
        woken.elapsed() >= Duration::from_millis(3_500),
        "asleep {:?} after the wake",
        woken.elapsed()
    );
}

#[test]
fn max_sleep_counts_from_when_the_guest_fell_asleep_across_a_daemon_crash() {
    need(&["curl"]);
    let mut s = Setup::new(
        &[("web1", 0)],
        "[idle]\ninterval = \"200ms\"\nidle_after = \"off\"\n---\nmax_sleep = \"8s\"\n",
    );
    s.sleep("web1");
    let asleep = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let pid = s.daemon.take().expect("running");
    // SAFETY: kill(2) on the daemon this test started (by PID); reaped just below.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    s.lab.kill(pid);
    s.start_daemon();
    let restarted = Instant::now();
    assert_eq!(s.status("web1")["state"], "sleeping");
    let st = wait_state(&s, "web1", "awake", 20);
    assert_eq!(st["last_wake_cause"], "max-sleep", "{st}");
    // 8 s from the sleep (about 4 s after the restart), not 8 s from the restart.
    assert!(
        restarted.elapsed() < Duration::from_secs(6),
        "woken {:?} after the restart, {:?} after the sleep",
        restarted.elapsed(),
        asleep.elapsed()
    );
    assert!(asleep.elapsed() >= Duration::from_millis(7_500));
}

/// `HH:MM:SS` of `secs` seconds into a day (taken modulo a day).
fn hms(secs: i64) -> String {
    let s = secs.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[test]
fn awake_windows_hold_an_idle_guest_awake_and_wake_a_sleeping_one_at_their_start() {
    need(&["curl"]);
    let s = Setup::new(
        &[("web1", 0), ("web2", 0), ("web3", 0)],
        "[idle]\ninterval = \"200ms\"\nidle_after = \"off\"\n---\n",
    );
    s.sleep("web3");
    // Now, in UTC, as seconds of the day.
    let now = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        % 86_400) as i64;
    // A reload gives all three idle_after 1s; web1 a window around now, web3 one that
    // begins 8 s from now; web2 none.
    let text = std::fs::read_to_string(&s.config).expect("config");
    let mut parts = text.split("\n[[guest]]\n");
    let mut out = parts.next().expect("head").to_owned();
    for block in parts {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("a name");
        let extra = match name {
            "web1" => format!(
                "awake_during = [\"daily {}-{}\"]\ntimezone = \"UTC\"\n",
                hms(now - 60),
                hms(now + 600)
            ),
            "web3" => format!(
                "awake_during = [\"daily {}-{}\"]\ntimezone = \"UTC\"\n",
                hms(now + 8),
                hms(now + 600)
            ),
            _ => String::new(),
        };
        out += &format!("\n[[guest]]\n{block}idle_after = \"1s\"\n{extra}");
    }
    std::fs::write(&s.config, out).expect("write");
    s.vmnap(&["reload"]);
    let reloaded = Instant::now();
    // The reload woke nobody.
    assert_eq!(s.status("web3")["state"], "sleeping");
    // web2 falls asleep when idle; web1, as idle, is held awake by its window.
    wait_state(&s, "web2", "sleeping", 10);
    while reloaded.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            s.status("web1")["state"],
            "awake",
            "web1 fell asleep in its window"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // web3's window begins: it is woken, and held awake in it.
    let st = wait_state(&s, "web3", "awake", 20);
    assert_eq!(
        (st["wakes"].as_u64(), st["last_wake_cause"].as_str()),
        (Some(1), Some("awake-window")),
        "{st}"
    );
    assert!(
        reloaded.elapsed() >= Duration::from_secs(6),
        "woken {:?} after the reload, before its window",
        reloaded.elapsed()
    );
    assert!(
        s.daemon_log()
            .contains("an awake window begins; waking the guest"),
        "{}",
        s.daemon_log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.status("web3")["state"], "awake");
    assert_eq!(s.status("web1")["state"], "awake");
}

/// `vmnap sleep NAME`, whatever its outcome: success, and what it printed.
fn try_sleep(s: &Setup, guest: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmnap"))
        .args(["sleep", guest, "--socket"])
        .arg(&s.socket)
        .output()
        .expect("vmnap sleep");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_before_sleep_hook_vetoes_sleeps_until_it_agrees_and_an_after_wake_hook_runs() {
    need(&["curl"]);
    let s = Setup::new(
        &[("web1", 0)],
        "[idle]\ninterval = \"200ms\"\nidle_after = \"off\"\n---\n",
    );
    let dir = s.lab.dir().to_owned();
    let (allow, woke) = (dir.join("allow"), dir.join("woke"));
    // Hooks given by a reload, to the guest as it runs.
    let mut text = std::fs::read_to_string(&s.config).expect("config");
    text += &format!(
        "before_sleep = [\"sh\", \"-c\", \"test -e {} || {{ echo 'a backup runs' >&2; exit 3; }}\"]\n\
         after_wake = [\"sh\", \"-c\", \"echo $VMNAP_GUEST $VMNAP_EVENT > {}\"]\nhook_timeout = \"2s\"\n",
        allow.display(),
        woke.display()
    );
    std::fs::write(&s.config, &text).expect("write");
    s.vmnap(&["reload"]);
    let (ok, said) = try_sleep(&s, "web1");
    assert!(!ok, "the sleep was not vetoed: {said}");
    assert!(
        said.contains(
            "web1 stays awake: its sleep was vetoed by before_sleep: sh exited with 3: a backup runs"
        ),
        "{said}"
    );
    assert_eq!(s.status("web1")["state"], "awake");
    assert!(!s.frozen("web1"));
    let events = s.vmnap(&["events", "web1"]);
    assert!(
        events.contains("sleep vetoed by before_sleep: sh exited with 3: a backup runs"),
        "{events}"
    );
    // The hook agrees: the guest sleeps; a wake runs the other hook.
    std::fs::write(&allow, "").expect("allow");
    s.sleep("web1");
    assert!(s.frozen("web1"));
    assert!(!woke.exists());
    let ip = s.guest_ip("web1");
    let out = s.run(
        0,
        &["curl", "-sS", "--max-time", "10", &format!("http://{ip}/")],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web1\n");
    let started = Instant::now();
    while std::fs::read_to_string(&woke).unwrap_or_default() != "web1 after-wake\n" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "after_wake did not run: {:?}",
            std::fs::read_to_string(&woke)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A hook that does not end in its time is killed, and vetoes.
    let slow = text.replace("hook_timeout = \"2s\"", "hook_timeout = \"500ms\"\n") + "";
    let slow = slow.replace(
        &format!(
            "\"test -e {} || {{ echo 'a backup runs' >&2; exit 3; }}\"",
            allow.display()
        ),
        "\"sleep 30\"",
    );
    std::fs::write(&s.config, &slow).expect("write");
    s.vmnap(&["reload"]);
    let asked = Instant::now();
    let (ok, said) = try_sleep(&s, "web1");
    assert!(
        !ok && said.contains("sh did not end within 500ms, and was killed"),
        "{said}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(s.status("web1")["state"], "awake");
}
