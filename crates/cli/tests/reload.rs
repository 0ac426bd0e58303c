//! Reloading the config of the real daemon (`vmnap reload` and `SIGHUP`) on a real bridge with
//! namespace guests in cgroups: only the guests whose entries changed are touched, a broken or
//! unusable file changes nothing and says why, and the log filter changes at run time.

mod common;

use common::{need, text, Setup, VMNAP};

/// The config's text before the first guest, and each guest's block by name.
fn blocks(config: &str) -> (String, Vec<(String, String)>) {
    let mut parts = config.split("\n[[guest]]\n");
    let head = parts.next().unwrap_or_default().to_owned();
    let guests = parts
        .map(|b| {
            let name = b
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .and_then(|l| l.strip_suffix('"'))
                .expect("a guest block names its guest")
                .to_owned();
            (name, b.to_owned())
        })
        .collect();
    (head, guests)
}

fn join(head: &str, guests: &[(String, String)]) -> String {
    let mut out = head.to_owned();
    for (_, b) in guests {
        out.push_str("\n[[guest]]\n");
        out.push_str(b);
    }
    out
}

/// `vmnap ARGS --socket S`, whatever its outcome: success and what it printed.
fn try_vmnap(s: &Setup, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(VMNAP)
        .args(args)
        .arg("--socket")
        .arg(&s.socket)
        .output()
        .expect("run vmnap");
    (out.status.success(), text(&out))
}

fn names(s: &Setup) -> Vec<String> {
    let all: serde_json::Value =
        serde_json::from_str(&s.vmnap(&["status", "--json"])).expect("JSON");
    all.as_array()
        .expect("an array")
        .iter()
        .map(|g| g["name"].as_str().expect("a name").to_owned())
        .collect()
}

fn detail(s: &Setup, guest: &str) -> serde_json::Value {
    let (status, body) = vmnap_api::request(&s.socket, "GET", &format!("/v1/guests/{guest}"), None)
        .expect("the daemon answers");
    assert_eq!(status, 200);
    serde_json::from_slice(&body).expect("JSON")
}

fn pinged(s: &Setup, guest: &str) -> bool {
    let ip = s.guest_ip(guest);
    s.run(0, &["ping", "-c", "1", "-W", "2", &ip])
        .status
        .success()
}

#[test]
fn a_reload_touches_only_the_guests_whose_entries_changed() {
    need(&["ping", "curl", "nc"]);
    let names_all = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let guests: Vec<(&str, u16)> = names_all.iter().map(|n| (*n, 0)).collect();
    let mut s = Setup::new(&guests, "");
    // Start over without `echo`, which a reload adds later.
    let pid = s.daemon.take().expect("running");
    s.lab.kill(pid);
    let full = std::fs::read_to_string(&s.config).expect("config");
    let (head, all) = blocks(&full);
    let first: Vec<(String, String)> = all.iter().filter(|(n, _)| n != "echo").cloned().collect();
    std::fs::write(&s.config, join(&head, &first)).expect("write");
    s.start_daemon();
    let before = ["alpha", "bravo", "charlie", "delta", "foxtrot"];
    assert_eq!(names(&s), before);
    for g in before {
        s.sleep(g);
    }

    // A broken file is refused with file, line and key; nothing changes.
    let broken = join(&head, &first).replace("vlan = 0", "vlan = \"zero\"");
    std::fs::write(&s.config, &broken).expect("write");
    let (ok, out) = try_vmnap(&s, &["reload"]);
    assert!(!ok, "a broken config was accepted: {out}");
    let file = s.config.display().to_string();
    assert!(out.contains(&file) && out.contains("vlan"), "{out}");
    assert!(out.contains("the running one stays"), "{out}");
    // A valid file that cannot run (a new guest's port does not exist) is refused too.
    let (_, echo) = all.iter().find(|(n, _)| n == "echo").expect("echo");
    let ghost = echo
        .replace("name = \"echo\"", "name = \"ghost\"")
        .replace("interface = \"", "interface = \"nope")
        .replace("198.18.0.15", "198.18.0.99")
        .replace("2001:db8::15", "2001:db8::99")
        .replace(":01:05\"", ":01:99\"");
    let mut unusable = first.clone();
    unusable.push(("ghost".into(), ghost));
    std::fs::write(&s.config, join(&head, &unusable)).expect("write");
    let (ok, out) = try_vmnap(&s, &["reload"]);
    assert!(!ok, "an unusable config was accepted: {out}");
    assert!(out.contains("ghost"), "{out}");
    assert_eq!(names(&s), before);
    for g in before {
        assert_eq!(
            s.status(g)["state"],
            "sleeping",
            "{g} after a refused reload"
        );
        assert!(s.frozen(g), "{g} was thawed by a refused reload");
    }

    // The real change: bravo goes; charlie loses its IPv6 address (a new identity: woken
    // and added again); delta's idle_after and foxtrot's wake_on change (policies: applied
    // while they sleep); echo comes; alpha stays as it was.
    let mut next: Vec<(String, String)> = Vec::new();
    for (name, block) in &all {
        let block = match name.as_str() {
            "bravo" => continue,
            "charlie" => block.replace("ipv6 = [\"2001:db8::13\"]", "ipv6 = []"),
            "delta" => format!("{block}idle_after = \"1h\"\n"),
            "foxtrot" => block.replace(
                "wake_on = [\"tcp/80\", \"udp/9000\"]",
                "wake_on = [\"tcp/8080\"]",
            ),
            _ => block.clone(),
        };
        next.push((name.clone(), block));
    }
    std::fs::write(&s.config, join(&head, &next)).expect("write");
    let out = s.vmnap(&["reload"]);
    assert!(
        out.contains("1 added, 1 removed, 3 changed, 1 unchanged"),
        "{out}"
    );
    assert_eq!(names(&s), ["alpha", "charlie", "delta", "echo", "foxtrot"]);
    // alpha: untouched, still asleep, frozen and answered for, never woken.
    assert_eq!(s.status("alpha")["state"], "sleeping");
    assert!(s.frozen("alpha"), "alpha was thawed");
    assert!(pinged(&s, "alpha"), "nobody answers for alpha");
    assert!(s.frozen("alpha"), "a ping woke alpha");
    assert_eq!(s.status("alpha")["wakes"], 0);
    // delta: the new policy in place, still asleep.
    assert_eq!(s.status("delta")["state"], "sleeping");
    assert!(s.frozen("delta"), "delta was thawed for an idleness change");
    assert_eq!(detail(&s, "delta")["policy"]["idle_after_s"], 3600.0);
    // bravo: woken and let go; it answers for itself on the bridge.
    assert!(!s.frozen("bravo"), "bravo was left frozen");
    let (page, _) = common::curl(&s, &format!("http://{}/", s.guest_ip("bravo")));
    assert!(page.contains("bravo"), "bravo does not serve: {page}");
    // charlie: woken, and back under its new entry.
    assert!(!s.frozen("charlie"), "charlie was left frozen");
    assert_eq!(s.status("charlie")["state"], "awake");
    assert_eq!(
        detail(&s, "charlie")["policy"]["ipv6"],
        serde_json::json!([])
    );
    // foxtrot: still asleep; port 80 no longer wakes it (refused in its name), 8080 does.
    assert_eq!(s.status("foxtrot")["state"], "sleeping");
    assert!(
        s.frozen("foxtrot"),
        "foxtrot was thawed for a policy change"
    );
    let fox = s.guest_ip("foxtrot");
    let _ = s.run(0, &["nc", "-z", "-w", "2", &fox, "80"]);
    assert!(s.frozen("foxtrot"), "a SYN to port 80 woke foxtrot");
    let url = format!("http://{fox}:8080/");
    let _ = s.run(0, &["curl", "-sS", "--max-time", "5", &url]);
    let st = s.awake("foxtrot");
    assert_eq!(
        (st["state"].as_str(), st["wakes"].as_u64()),
        (Some("awake"), Some(1)),
        "{st}"
    );
    assert_eq!(st["last_wake_cause"], "tcp-syn");
    // echo: managed like the others.
    s.sleep("echo");
    let (page, _) = common::curl(&s, &format!("http://{}/", s.guest_ip("echo")));
    assert!(
        page.contains("echo"),
        "echo does not serve after a wake: {page}"
    );
    s.awake("echo");

    // SIGHUP does the same: echo goes again.
    let without_echo: Vec<(String, String)> =
        next.iter().filter(|(n, _)| n != "echo").cloned().collect();
    std::fs::write(&s.config, join(&head, &without_echo)).expect("write");
    let pid = s.daemon.expect("running");
    // SAFETY: kill(2) on the daemon this test started, by PID.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while names(&s).contains(&"echo".to_owned()) {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload; log:\n{}",
            s.daemon_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(s.daemon_log().contains("config reloaded"));
    assert_eq!(s.status("alpha")["state"], "sleeping");
    assert!(s.frozen("alpha"), "alpha was thawed by SIGHUP");
}

#[test]
fn the_log_filter_changes_at_run_time() {
    let s = Setup::new(&[("web1", 0)], "");
    assert_eq!(s.vmnap(&["log-level"]).trim(), "info");
    let log_before = s.daemon_log();
    assert!(!log_before.contains("DEBUG"), "debug lines at info");
    assert_eq!(s.vmnap(&["log-level", "debug"]).trim(), "debug");
    assert_eq!(s.vmnap(&["log-level"]).trim(), "debug");
    // API requests are logged at debug.
    s.vmnap(&["status"]);
    assert!(
        s.daemon_log().contains("DEBUG"),
        "no debug lines after `log-level debug`:\n{}",
        s.daemon_log()
    );
    // A request's path is logged as one value: a `%0a` in it cannot forge a line.
    {
        use std::io::{Read, Write};
        let mut c = std::os::unix::net::UnixStream::connect(&s.socket).expect("connect");
        c.write_all(b"GET /v1/guests/x%0a2026-01-01T00:00:00Z%20ERROR%20FORGED HTTP/1.1\r\nHost: vmnap\r\n\r\n")
            .expect("write");
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }
    let log = s.daemon_log();
    assert!(log.contains("FORGED"), "the request was not logged:\n{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged log line:\n{log}"
    );
    let (ok, out) = try_vmnap(&s, &["log-level", "vmnap=loud"]);
    assert!(!ok, "a bad filter was accepted: {out}");
    assert!(out.contains("not a log filter"), "{out}");
    assert_eq!(s.vmnap(&["log-level"]).trim(), "debug");
    s.vmnap(&["log-level", "warn"]);
    let before = s.daemon_log().len();
    s.vmnap(&["sleep", "web1"]);
    let after = s.daemon_log();
    assert!(
        !after[before..].contains(" INFO "),
        "info lines at warn: {}",
        &after[before..]
    );
}
