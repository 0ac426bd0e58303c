//! The daemon as a whole: many guests, the v1 freezer, stopping, and config errors.

mod common;

use common::{need, text, Setup, VMNAP};

#[test]
fn fifty_guests_asleep_at_once_are_each_answered_and_one_wakes_alone() {
    need(&["arping", "curl"]);
    let names: Vec<String> = (1..=50).map(|n| format!("g{n}")).collect();
    let guests: Vec<(&str, u16)> = names.iter().map(|n| (n.as_str(), 0)).collect();
    let s = Setup::new(&guests, "");
    for name in &names {
        s.vmnap(&["sleep", name]);
    }
    let iface = s.client_if(0);
    for name in &names {
        let ip = s.guest_ip(name);
        let out = s.run(0, &["arping", "-c", "1", "-w", "2", "-I", &iface, &ip]);
        assert!(out.status.success(), "{name} not answered: {}", text(&out));
        assert!(
            text(&out).to_lowercase().contains(&s.guest_mac(name)),
            "{name} answered with the wrong MAC: {}",
            text(&out)
        );
    }
    let out = s.run(
        0,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            &format!("http://{}/", s.guest_ip("g17")),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from g17\n",
        "{}",
        text(&out)
    );
    for name in &names {
        let st = if name == "g17" {
            s.awake(name)
        } else {
            s.status(name)
        };
        if name == "g17" {
            assert_eq!(
                (st["state"].as_str(), st["wakes"].as_u64()),
                (Some("awake"), Some(1)),
                "{st}"
            );
        } else {
            assert_eq!(
                (st["state"].as_str(), st["wakes"].as_u64()),
                (Some("sleeping"), Some(0)),
                "{st}"
            );
            assert!(s.frozen(name), "{name} thawed");
        }
    }
    // The others still answer after the wake.
    let out = s.run(
        0,
        &[
            "arping",
            "-c",
            "1",
            "-w",
            "2",
            "-I",
            &iface,
            &s.guest_ip("g18"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_guest_in_a_v1_freezer_sleeps_and_wakes() {
    need(&["curl", "ping"]);
    let s = Setup::with_cgroup(&[("web1", 0)], "", vmnap_lab::CgroupKind::V1);
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    assert!(s
        .run(0, &["ping", "-c", "2", "-W", "2", &ip])
        .status
        .success());
    assert!(s.frozen("web1"));
    let out = s.run(
        0,
        &["curl", "-sS", "--max-time", "10", &format!("http://{ip}/")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from web1\n",
        "{}",
        text(&out)
    );
    assert!(!s.frozen("web1"));
    assert_eq!(s.awake("web1")["wakes"], 1);
}

#[test]
fn sigterm_wakes_sleeping_guests_and_removes_the_surrogate_port() {
    need(&["curl"]);
    let mut s = Setup::new(&[("web1", 0), ("web2", 0)], "");
    s.sleep("web1");
    s.sleep("web2");
    let host = s.lab.host_netns().to_owned();
    let links = text(
        &s.lab
            .exec(&host, &["ip", "-o", "link", "show"])
            .expect("ip link"),
    );
    assert!(links.contains("vmnap"), "no surrogate port: {links}");
    let pid = s.daemon.take().expect("running");
    s.lab.kill(pid); // SIGTERM first
    assert!(!s.frozen("web1") && !s.frozen("web2"), "guests left frozen");
    let links = text(
        &s.lab
            .exec(&host, &["ip", "-o", "link", "show"])
            .expect("ip link"),
    );
    assert!(
        !links.contains("vmnap"),
        "the surrogate port was left behind: {links}"
    );
    let fdb = text(
        &s.lab
            .exec(&host, &["bridge", "fdb", "show", "br", "br0"])
            .expect("bridge fdb"),
    );
    assert!(
        !fdb.contains("sticky"),
        "a static entry was left behind: {fdb}"
    );
    // Both answer by themselves again.
    for g in ["web1", "web2"] {
        let out = s.run(
            0,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{}/", s.guest_ip(g)),
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("hello from {g}\n"),
            "{}",
            text(&out)
        );
    }
    assert!(
        s.daemon_log().contains("vmnap stopped"),
        "{}",
        s.daemon_log()
    );
}

#[test]
fn check_config_exits_64_naming_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("vmnap-cc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[guest]]\nname = \"web1\"\nbridge = \"br0\"\ninterface = \"vg-web1\"\nmac = \"02:00:00:00:01\"\n\
         ipv4 = [\"198.18.0.11\"]\nbackend = \"cgroup\"\ncgroup = \"/sys/fs/cgroup/x\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(VMNAP)
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains(&format!("{}:5:", bad.display())),
        "no file and line: {err}"
    );
    assert!(err.contains("guest[0].mac"), "no key: {err}");
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "[api]\nsockett = \"/run/x.sock\"\n").expect("write");
    let out = std::process::Command::new(VMNAP)
        .arg("check-config")
        .arg(&unknown)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sockett"));
    let good = dir.join("good.toml");
    std::fs::write(&good, "[api]\nsocket = \"/run/vmnap/x.sock\"\n").expect("write");
    let out = std::process::Command::new(VMNAP)
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `run` refuses a bad config the same way, before touching anything.
    let out = std::process::Command::new(VMNAP)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// SIGKILL: no chance to clean up.
fn kill_hard(s: &mut Setup) {
    let pid = s.daemon.take().expect("running");
    // SAFETY: kill(2) on the daemon this test started (by PID).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    s.lab.kill(pid); // reaps it
}

#[test]
fn a_guest_resumed_by_hand_while_the_daemon_was_down_is_left_running_after_a_restart() {
    need(&["ping", "curl"]);
    let mut s = Setup::new(&[("web1", 0)], "");
    s.sleep("web1");
    kill_hard(&mut s);
    // Its owner thaws it by hand while no daemon runs.
    let g = s.lab.guest("web1").expect("guest").clone();
    let thawed = match std::fs::write(g.cgroup.join("cgroup.freeze"), "0") {
        Ok(()) => Ok(()),
        Err(_) => std::fs::write(g.cgroup.join("freezer.state"), "THAWED"),
    };
    thawed.expect("thaw the guest's cgroup");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.frozen("web1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the cgroup stays frozen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.start_daemon();
    // The journal said asleep; the backend says it runs, and it is left to run.
    let st = s.status("web1");
    assert_eq!(st["state"], "awake", "{st}");
    assert!(
        s.daemon_log().contains("its backend says it runs"),
        "{}",
        s.daemon_log()
    );
    let ip = s.guest_ip("web1");
    let out = s.run(
        0,
        &["curl", "-sS", "--max-time", "10", &format!("http://{ip}/")],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web1\n");
    assert_eq!(s.status("web1")["wakes"], 0, "reached without a wake");
    // Nothing claims its MAC: no sticky entry of vmnap's on the bridge.
    let host = s.lab.host_netns().to_owned();
    let fdb = text(
        &s.lab
            .exec(&host, &["bridge", "fdb", "show", "br", "br0"])
            .expect("fdb"),
    );
    assert_eq!(fdb.matches("sticky").count(), 0, "{fdb}");
}

#[test]
fn a_daemon_killed_while_a_guest_sleeps_stands_in_again_after_a_restart() {
    need(&["ping", "curl"]);
    let mut s = Setup::new(&[("web1", 0)], "");
    s.sleep("web1");
    kill_hard(&mut s);
    assert!(s.frozen("web1"), "the guest was woken by the kill");
    let started = std::time::Instant::now();
    s.start_daemon();
    let ip = s.guest_ip("web1");
    let ping = s.run(0, &["ping", "-c", "1", "-W", "5", &ip]);
    assert!(
        ping.status.success(),
        "not answered after the restart: {}",
        text(&ping)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(s.frozen("web1"), "standing in again must not wake it");
    assert_eq!(s.status("web1")["state"], "sleeping");
    // Nothing of the killed run is left on the bridge: one surrogate port, one entry.
    let host = s.lab.host_netns().to_owned();
    let links = text(
        &s.lab
            .exec(&host, &["ip", "-o", "link", "show"])
            .expect("ip link"),
    );
    let ours = links.lines().filter(|l| l.contains("vmnap")).count();
    assert_eq!(ours, 2, "one veth pair: {links}");
    let fdb = text(
        &s.lab
            .exec(&host, &["bridge", "fdb", "show", "br", "br0"])
            .expect("fdb"),
    );
    assert_eq!(fdb.matches("sticky").count(), 1, "{fdb}");
    let out = s.run(
        0,
        &["curl", "-sS", "--max-time", "10", &format!("http://{ip}/")],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web1\n");
}

#[test]
fn with_on_restart_wake_a_guest_left_asleep_is_woken_after_a_restart() {
    need(&["curl"]);
    let mut s = Setup::new(&[("web1", 0)], "[state]\non_restart = \"wake\"\n---\n");
    s.sleep("web1");
    kill_hard(&mut s);
    s.start_daemon();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.status("web1")["state"] != "awake" {
        assert!(
            std::time::Instant::now() < deadline,
            "not woken: {}",
            s.status("web1")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!s.frozen("web1"));
    let host = s.lab.host_netns().to_owned();
    let link = text(
        &s.lab
            .exec(&host, &["bridge", "link", "show", "dev", "vg-web1"])
            .expect("bridge link"),
    );
    assert!(link.contains("forwarding"), "its port is still cut: {link}");
    let out = s.run(
        0,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{}/", s.guest_ip("web1")),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web1\n");
}

#[test]
fn with_on_stop_keep_asleep_sigterm_leaves_guests_asleep_and_a_restart_picks_them_up() {
    need(&["ping"]);
    let mut s = Setup::new(&[("web1", 0)], "[state]\non_stop = \"keep-asleep\"\n---\n");
    s.sleep("web1");
    let pid = s.daemon.take().expect("running");
    s.lab.kill(pid); // SIGTERM
    assert!(
        s.frozen("web1"),
        "SIGTERM woke a guest it should keep asleep"
    );
    s.start_daemon();
    let ping = s.run(0, &["ping", "-c", "1", "-W", "5", &s.guest_ip("web1")]);
    assert!(ping.status.success(), "{}", text(&ping));
    assert_eq!(s.status("web1")["state"], "sleeping");
}

/// The value of the series `name{labels}` in Prometheus text, if present.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_what_the_surrogate_and_the_wake_did() {
    need(&["curl", "ping", "nc"]);
    let s = Setup::new(&[("web1", 0)], "");
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    assert!(s
        .run(0, &["ping", "-c", "2", "-W", "2", &ip])
        .status
        .success());
    let _ = s.run(0, &["nc", "-z", "-w", "2", &ip, "5432"]);
    let out = s.run(
        0,
        &["curl", "-sS", "--max-time", "10", &format!("http://{ip}/")],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web1\n");
    let text = s.metrics();
    let families = text
        .lines()
        .filter(|l| l.starts_with("# TYPE vmnap_"))
        .count();
    assert_eq!(
        families,
        vmnap_daemon::metrics::declared_families().len(),
        "every family is declared:\n{text}"
    );
    let g = |rest: &str| series(&text, &format!("vmnap_guest_{rest}"));
    assert_eq!(
        g("wakes_total{guest=\"web1\",cause=\"tcp-syn\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        g("answered_frames_total{guest=\"web1\",protocol=\"icmp-echo\"}") >= Some(2.0),
        "{text}"
    );
    assert!(
        g("answered_frames_total{guest=\"web1\",protocol=\"tcp-reset\"}") >= Some(1.0),
        "{text}"
    );
    assert!(
        g("replayed_frames_total{guest=\"web1\"}") >= Some(1.0),
        "{text}"
    );
    assert_eq!(
        g("state{guest=\"web1\",state=\"awake\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        g("wake_and_serve_seconds_count{guest=\"web1\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        g("resume_seconds_count{guest=\"web1\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        g("asleep_seconds_total{guest=\"web1\"}") > Some(0.0),
        "{text}"
    );
}

#[test]
fn a_log_written_to_a_file_is_plain_text_without_colour_codes() {
    let s = Setup::new(&[("web1", 0)], "");
    s.vmnap(&["sleep", "web1"]);
    s.vmnap(&["wake", "web1"]);
    let log = s.daemon_log();
    // The daemon's stderr is a file here: lines read "<time>  INFO <target>: <message>".
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO ") && l.contains("asleep")),
        "no plain INFO line about the sleep:\n{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "escape codes in a log that is not a terminal:\n{log:?}"
    );
}
