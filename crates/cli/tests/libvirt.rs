//! Real libvirt domains (QEMU under TCG, the project's image, a libvirtd of the test's own)
//! put to sleep and woken by the real daemon.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_thousand_in_order, clock_behind_ms, curl, curl_counting_syns, need,
    send_thousand_datagrams, text, until, Setup,
};

#[test]
fn pause_mode_stands_in_for_the_domain_and_curl_wakes_it_with_one_syn() {
    need(&["curl", "ping", "tcpdump", "virsh"]);
    let s = Setup::with_domains(&["d1"], "pause", "");
    let d = s.domain("d1");
    s.vmnap(&["sleep", "d1"]);
    assert_eq!(d.state().expect("virsh domstate"), "paused");
    let ip = d.ipv4.to_string();
    let ping = s.run(0, &["ping", "-c", "3", "-i", "0.2", "-W", "2", &ip]);
    assert!(ping.status.success(), "{}", text(&ping));
    assert_eq!(d.state().expect("state"), "paused", "a ping woke it");
    let (body, syns) = curl_counting_syns(&s, &ip);
    assert_eq!(body, "hello from d1\n");
    assert_eq!(syns, 1, "the client retransmitted its SYN");
    assert_eq!(d.state().expect("state"), "running");
    let st = s.status("d1");
    assert_eq!(
        (st["wakes"].as_u64(), st["backend"].as_str()),
        (Some(1), Some("libvirt-pause")),
        "{st}"
    );
    // Its memory is anonymous: check-config, asked about page-out for it, says why not
    // from the domain's XML.
    let text = std::fs::read_to_string(&s.config).expect("read the config");
    assert!(text.contains("mode = \"pause\""), "{text}");
    let pageout = s.config.with_file_name("pageout.toml");
    std::fs::write(
        &pageout,
        text.replace("mode = \"pause\"", "mode = \"pageout\""),
    )
    .expect("write");
    let check = check_config(&pageout);
    assert!(
        check.contains(
            "guest d1: page-out cannot apply, it would sleep paused: domain d1's memory is \
             anonymous and private: its XML needs <memoryBacking>"
        ),
        "{check}"
    );
}

/// `vmnap check-config FILE`: its output; it must succeed.
fn check_config(file: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmnap"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("vmnap check-config");
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

#[test]
fn save_mode_ends_the_qemu_process_and_curl_brings_it_back_with_one_syn() {
    need(&["curl", "tcpdump", "virsh"]);
    let s = Setup::with_domains(&["d1"], "save", "");
    let d = s.domain("d1");
    let pid = d.qemu_pid().expect("a running QEMU");
    s.vmnap(&["sleep", "d1"]);
    assert_eq!(d.state().expect("state"), "shut off");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU still runs while asleep"
    );
    assert_eq!(
        d.current_tap().expect("domiflist"),
        None,
        "the tap outlived QEMU"
    );
    let (body, syns) = curl_counting_syns(&s, &d.ipv4.to_string());
    assert_eq!(body, "hello from d1\n");
    assert_eq!(syns, 1, "the client retransmitted its SYN");
    assert_eq!(d.state().expect("state"), "running");
    assert!(d.qemu_pid().is_some_and(|p| p != pid), "QEMU came back");
    let st = s.status("d1");
    assert_eq!(
        (st["wakes"].as_u64(), st["backend"].as_str()),
        (Some(1), Some("libvirt-save")),
        "{st}"
    );
}

#[test]
fn pageout_mode_takes_the_domains_ram_out_of_memory_and_curl_wakes_it_with_one_syn() {
    need(&["curl", "tcpdump", "virsh", "nc"]);
    const RAM: u64 = 128 << 20;
    let s = Setup::with_domains(&["d1"], "pageout", "");
    let d = s.domain("d1");
    let pid = d.qemu_pid().expect("a running QEMU");
    let ip = d.ipv4.to_string();
    // check-config finds the RAM file as the daemon does, beside it.
    let check = check_config(&s.config);
    assert!(
        check.contains("guest d1: page-out ready")
            && check.contains(&format!("(128 MiB), mapped shared by process {pid}")),
        "{check}"
    );
    let out = s.run(0, &["sh", "-c", &format!("echo 40 | nc -w 60 {ip} 8")]);
    assert!(text(&out).contains("dirtied"), "{}", text(&out));
    s.vmnap(&["sleep", "d1"]);
    assert_eq!(d.state().expect("state"), "paused");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let freed = loop {
        if let Some(b) = s.status("d1")["memory_freed_bytes"]
            .as_u64()
            .filter(|&b| b > 0)
        {
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no page-out: {}",
            s.status("d1")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(freed >= RAM / 4, "freed only {freed} bytes");
    // The domain's RAM file, found as vmnap finds it: QEMU holds the tap, the file is its
    // largest shared mapping.
    let ram = vmnap_host::pageout::RamFile::find_in(pid).expect("the domain's RAM file");
    assert_eq!(ram.len(), RAM);
    let resident = ram.resident().expect("resident");
    assert!(
        resident.cached <= RAM / 50,
        "more than 2% of the domain's RAM is in host memory asleep: {resident:?}"
    );
    assert!(
        !ram.huge_pages_advised().expect("smaps"),
        "run-qemu as <emulator> did not apply"
    );
    let st = s.status("d1");
    assert!(
        st["page_out"]
            .as_str()
            .is_some_and(|p| p.starts_with("ready")),
        "{st}"
    );
    assert_eq!(st["backend"], "libvirt-pageout", "{st}");
    let (body, syns) = curl_counting_syns(&s, &ip);
    assert_eq!(body, "hello from d1\n");
    assert_eq!(syns, 1, "the client retransmitted its SYN");
    assert_eq!(d.state().expect("state"), "running");
    assert_eq!(d.qemu_pid(), Some(pid), "the same QEMU resumed");
    assert_eq!(s.status("d1")["wakes"], 1);
}

#[test]
fn a_thousand_datagrams_reach_a_sleeping_libvirt_guest_in_order_exactly_once() {
    let s = Setup::with_domains(&["d1"], "pause", "");
    let d = s.domain("d1");
    let ip = d.ipv4.to_string();
    assert!(s
        .run(0, &["ping", "-c", "1", "-W", "2", &ip])
        .status
        .success());
    s.vmnap(&["sleep", "d1"]);
    send_thousand_datagrams(&s, &ip);
    assert_thousand_in_order(Duration::from_secs(60), || d.udp_lines());
}

#[test]
fn libvirtd_restarted_while_the_guest_sleeps_and_the_guest_still_wakes() {
    need(&["curl", "virsh"]);
    let mut s = Setup::with_domains(&["d1"], "pause", "");
    s.vmnap(&["sleep", "d1"]);
    s.lab.restart_libvirtd().expect("restart libvirtd");
    let d = s.domain("d1");
    assert_eq!(d.state().expect("state"), "paused");
    let (body, _) = curl(&s, &format!("http://{}/", d.ipv4));
    assert_eq!(body, "hello from d1\n", "{}", s.daemon_log());
    assert_eq!(d.state().expect("state"), "running");
}

/// The names in `vmnap status --json`.
fn listed(s: &Setup) -> Vec<String> {
    let text = s.vmnap(&["status", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&text).expect("status --json is JSON");
    all.as_array()
        .expect("an array")
        .iter()
        .map(|g| g["name"].as_str().expect("a name").to_owned())
        .collect()
}

#[test]
fn a_domain_stopped_or_started_outside_vmnap_is_let_go_or_taken_on_without_a_reload() {
    need(&["curl", "ping", "virsh"]);
    let mut s = Setup::with_domains(&["d1"], "pause", "");
    let d = s.domain("d1");
    let ip = d.ipv4.to_string();
    // Asleep, then destroyed behind vmnap's back: let go, not woken, and not answered for.
    s.vmnap(&["sleep", "d1"]);
    let out = d.virsh(&["destroy", "d1"]).expect("virsh destroy");
    assert!(out.status.success(), "{}", text(&out));
    let took = until("d1 let go", &s, || !listed(&s).contains(&"d1".to_owned()));
    eprintln!("destroyed asleep: gone from the status after {took:?}");
    assert_eq!(
        d.state().expect("state"),
        "shut off",
        "vmnap started it again"
    );
    let events = s.vmnap(&["events", "d1"]);
    assert!(
        events.contains("let go: its domain d1 was destroyed outside vmnap"),
        "{events}"
    );
    let ping = s.run(0, &["ping", "-c", "2", "-i", "0.3", "-W", "1", &ip]);
    assert!(
        !ping.status.success(),
        "vmnap still answers for a guest it let go: {}",
        text(&ping)
    );
    // Started outside vmnap: taken on again, awake, with its new tap; and it sleeps and
    // wakes as before.
    let out = d.virsh(&["start", "d1"]).expect("virsh start");
    assert!(out.status.success(), "{}", text(&out));
    let took = until("d1 taken on", &s, || listed(&s).contains(&"d1".to_owned()));
    eprintln!("started: in the status after {took:?}");
    assert_eq!(s.status("d1")["state"], "awake");
    let events = s.vmnap(&["events", "d1"]);
    assert!(
        events.contains("taken on: its domain d1 started"),
        "{events}"
    );
    let out = s.run(
        0,
        &[
            "curl",
            "-sS",
            "--retry",
            "30",
            "--retry-all-errors",
            "--retry-delay",
            "1",
            "--max-time",
            "60",
            &format!("http://{ip}/"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from d1\n",
        "{}",
        text(&out)
    );
    s.vmnap(&["sleep", "d1"]);
    let (body, _) = curl(&s, &format!("http://{ip}/"));
    assert_eq!(body, "hello from d1\n", "{}", s.daemon_log());
    // Awake, shut down by its owner (through its agent: the image has no ACPI): let go
    // the same way, not started again.
    // (Right after a wake, the agent may still be busy with vmnap's setting of the clock:
    // asked again.)
    let asked = Instant::now();
    loop {
        let out = d
            .virsh(&["shutdown", "d1", "--mode", "agent"])
            .expect("virsh shutdown");
        if out.status.success() {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "virsh shutdown: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = until("d1 let go again", &s, || {
        !listed(&s).contains(&"d1".to_owned())
    });
    eprintln!("shut down awake: gone from the status after {took:?}");
    let events = s.vmnap(&["events", "d1"]);
    assert!(
        events.contains("let go: its domain d1 was shut down outside vmnap"),
        "{events}"
    );
    assert_eq!(d.state().expect("state"), "shut off");
    // Off when the daemon starts: the daemon starts all the same, and takes the guest on
    // once its domain runs.
    let pid = s.daemon.take().expect("running");
    s.lab.kill(pid); // SIGTERM first
    s.start_daemon();
    assert_eq!(listed(&s), Vec::<String>::new());
    assert!(
        s.daemon_log().contains(
            "the guest's libvirt domain does not run; vmnap takes the guest on when it starts"
        ),
        "{}",
        s.daemon_log()
    );
    let out = d.virsh(&["start", "d1"]).expect("virsh start");
    assert!(out.status.success(), "{}", text(&out));
    let took = until("d1 taken on after the start", &s, || {
        listed(&s).contains(&"d1".to_owned())
    });
    eprintln!("started after the daemon: in the status after {took:?}");
}

#[test]
fn an_idle_libvirt_guest_falls_asleep_and_health_checks_and_pings_do_not_wake_it() {
    need(&["curl", "ping", "virsh"]);
    let extra = "[idle]\ninterval = \"500ms\"\nidle_after = \"3s\"\n---\n\
                 [[guest.health]]\nport = 8080\npath = \"/healthz\"\nbody = \"ok\"\n";
    let s = Setup::with_domains(&["d1"], "pause", extra);
    let d = s.domain("d1");
    let started = Instant::now();
    while s.status("d1")["state"] != "sleeping" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "did not fall asleep: {}",
            s.status("d1")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let slept_after = started.elapsed();
    assert_eq!(d.state().expect("state"), "paused");
    let ip = d.ipv4.to_string();
    for _ in 0..3 {
        let (body, _) = curl(&s, &format!("http://{ip}:8080/healthz"));
        assert_eq!(body, "ok");
        assert!(s
            .run(0, &["ping", "-c", "1", "-W", "2", &ip])
            .status
            .success());
    }
    assert_eq!(
        d.state().expect("state"),
        "paused",
        "a health check or ping woke it"
    );
    assert_eq!(s.status("d1")["wakes"], 0);
    eprintln!(
        "the idle guest fell asleep {slept_after:?} after the daemon started (idle_after 3 s)"
    );
}

#[test]
fn a_libvirt_guest_serving_requests_never_falls_asleep_nor_a_pinned_one() {
    need(&["curl", "virsh"]);
    let extra = "[idle]\ninterval = \"500ms\"\nidle_after = \"3s\"\n---\n";
    let s = Setup::with_domains(&["d1", "d2"], "pause", extra);
    s.vmnap(&["pin", "d2"]);
    let d1 = s.domain("d1");
    let d2 = s.domain("d2");
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let (body, _) = curl(&s, &format!("http://{}/", d1.ipv4));
        assert_eq!(body, "hello from d1\n");
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(
        d1.state().expect("state"),
        "running",
        "a busy guest fell asleep"
    );
    assert_eq!(
        d2.state().expect("state"),
        "running",
        "a pinned guest fell asleep"
    );
    assert_eq!(s.status("d1")["wakes"], 0);
    assert_eq!(s.status("d2")["pinned"], true);
}

#[test]
fn twenty_sleep_wake_cycles_of_a_libvirt_guest_under_a_trickle_lose_no_request() {
    need(&["curl", "virsh"]);
    let s = Setup::with_domains(&["d1"], "pause", "");
    let url = format!("http://{}/", s.domain("d1").ipv4);
    let mut slow = Vec::new();
    for round in 0..20 {
        s.vmnap(&["sleep", "d1"]);
        for _ in 0..3 {
            let (body, took) = curl(&s, &url);
            assert_eq!(body, "hello from d1\n", "round {round}: a request was lost");
            if took > Duration::from_millis(900) {
                slow.push((round, took));
            }
        }
    }
    assert!(
        slow.is_empty(),
        "requests that needed a retransmission: {slow:?}"
    );
    assert_eq!(s.awake("d1")["wakes"], 20);
}

/// How far guest `d`'s clock is from the host's, in milliseconds (positive: ahead), read
/// through its guest agent between two readings of the host's clock; `None` while its agent
/// does not answer.
fn guest_clock_offset_ms(d: &vmnap_lab::libvirt::LabDomain) -> Option<f64> {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
            * 1000.0
    };
    let before = now();
    let out = d
        .virsh(&[
            "qemu-agent-command",
            &d.name,
            r#"{"execute":"guest-get-time"}"#,
        ])
        .expect("virsh");
    let after = now();
    let text = String::from_utf8_lossy(&out.stdout);
    let ns: f64 = text
        .trim()
        .strip_prefix(r#"{"return":"#)?
        .strip_suffix('}')?
        .parse()
        .ok()?;
    Some(ns / 1e6 - (before + after) / 2.0)
}

/// A wake from a sleep of 4 s in `mode` sets the guest's clock through its agent: it was
/// behind by about the sleep (pause), or by the time since the save (save), and is within
/// 250 ms of the host's after (the reading itself spans a `virsh`, about 30 ms).
fn clock_is_set_after_a_wake(mode: &str) {
    need(&["curl", "virsh"]);
    let s = Setup::with_domains(&["d1"], mode, "");
    let d = s.domain("d1");
    let started = Instant::now();
    while guest_clock_offset_ms(&d).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the guest agent does not answer: {}",
            d.console_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    s.vmnap(&["sleep", "d1"]);
    std::thread::sleep(Duration::from_secs(4));
    let (body, _) = curl(&s, &format!("http://{}/", d.ipv4));
    assert_eq!(body, "hello from d1\n", "{}", s.daemon_log());
    let woke = Instant::now();
    until("the clock set", &s, || {
        s.daemon_log()
            .contains("set the guest's clock to the host's")
    });
    eprintln!("clock set {:?} after the answer", woke.elapsed());
    let behind = clock_behind_ms(&s, "d1");
    assert!(behind > 3000.0, "the clock was {behind} ms behind");
    let offset = guest_clock_offset_ms(&d).expect("the agent answers");
    eprintln!("{mode}: {behind:.0} ms behind before, {offset:.1} ms off after");
    assert!(offset.abs() < 250.0, "{offset} ms off after the wake");
}

#[test]
fn a_paused_guest_woken_gets_the_hosts_time_through_its_agent() {
    clock_is_set_after_a_wake("pause");
}

#[test]
fn a_saved_guest_woken_gets_the_hosts_time_through_its_agent() {
    clock_is_set_after_a_wake("save");
}

/// Runs `script` with `/bin/sh -c` in guest `d` through its agent and returns its standard
/// output once it has ended.
fn in_guest(d: &vmnap_lab::libvirt::LabDomain, script: &str) -> String {
    let exec = serde_json::json!({
        "execute": "guest-exec",
        "arguments": { "path": "/bin/sh", "arg": ["-c", script], "capture-output": true },
    });
    // The agent may be busy a moment (vmnap sets the clock after each wake): asked again.
    let asked = Instant::now();
    let out = loop {
        let out = d
            .virsh(&["qemu-agent-command", &d.name, &exec.to_string()])
            .expect("virsh");
        if out.status.success() {
            break out;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "guest-exec: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pid = answer["return"]["pid"].as_i64().expect("a pid");
    let status = serde_json::json!({ "execute": "guest-exec-status", "arguments": { "pid": pid } });
    let started = Instant::now();
    loop {
        let out = d
            .virsh(&["qemu-agent-command", &d.name, &status.to_string()])
            .expect("virsh");
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if s["return"]["exited"] == true {
            use base64::Engine as _;
            let data = s["return"]["out-data"].as_str().unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64");
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{script} did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_guest_vetoes_its_sleep_through_its_agent_and_hears_of_its_wake() {
    need(&["curl", "virsh"]);
    let extra = "inhibit_file = \"/tmp/vmnap-inhibit\"\n\
                 guest_before_sleep = [\"/bin/sh\", \"-c\", \"test ! -e /tmp/busy || { echo a backup runs >&2; exit 4; }\"]\n\
                 guest_after_wake = [\"/bin/sh\", \"-c\", \"echo $VMNAP_EVENT >> /tmp/woke\"]\n\
                 hook_timeout = \"5s\"\n";
    let s = Setup::with_domains(&["d1"], "pause", extra);
    let d = s.domain("d1");
    let started = Instant::now();
    while guest_clock_offset_ms(&d).is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "no agent");
        std::thread::sleep(Duration::from_millis(200));
    }
    let try_sleep = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmnap"))
            .args(["sleep", "d1", "--socket"])
            .arg(&s.socket)
            .output()
            .expect("vmnap sleep");
        (out.status.success(), text(&out))
    };
    // The inhibit file is there: vetoed, with why.
    in_guest(&d, "touch /tmp/vmnap-inhibit");
    let (ok, said) = try_sleep();
    assert!(
        !ok && said.contains(
            "d1 stays awake: its sleep was vetoed by inhibit_file: /tmp/vmnap-inhibit exists in the guest"
        ),
        "{said}\n{}",
        s.daemon_log()
    );
    assert_eq!(d.state().expect("state"), "running");
    // The hook in the guest says no: vetoed, with its reason.
    in_guest(&d, "rm /tmp/vmnap-inhibit; touch /tmp/busy");
    let (ok, said) = try_sleep();
    assert!(
        !ok && said.contains(
            "vetoed by guest_before_sleep: /bin/sh exited with 4 in the guest: a backup runs"
        ),
        "{said}"
    );
    let events = s.vmnap(&["events", "d1"]);
    assert!(
        events.contains("sleep vetoed by inhibit_file: /tmp/vmnap-inhibit exists in the guest")
            && events.contains("sleep vetoed by guest_before_sleep"),
        "{events}"
    );
    assert_eq!(d.state().expect("state"), "running");
    // Both agree: it sleeps; a wake runs the hook after it in the guest.
    in_guest(&d, "rm /tmp/busy");
    s.vmnap(&["sleep", "d1"]);
    assert_eq!(d.state().expect("state"), "paused");
    let (body, _) = curl(&s, &format!("http://{}/", d.ipv4));
    assert_eq!(body, "hello from d1\n", "{}", s.daemon_log());
    until("guest_after_wake ran", &s, || {
        in_guest(&d, "cat /tmp/woke 2>/dev/null") == "after-wake\n"
    });
}

#[test]
fn an_address_a_libvirt_guest_takes_is_answered_for_while_it_sleeps() {
    need(&["arping", "virsh"]);
    let s = Setup::with_domains(&["d1"], "pause", "");
    let d = s.domain("d1");
    let started = Instant::now();
    while guest_clock_offset_ms(&d).is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "no agent");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The guest takes 198.18.0.99 and announces it, as a DHCP client or an operator would.
    in_guest(
        &d,
        "ip addr add 198.18.0.99/15 dev eth0 && arping -U -c 1 -I eth0 -s 198.18.0.99 198.18.0.99",
    );
    until("198.18.0.99 learned", &s, || {
        s.status("d1")["learned_addresses"] == serde_json::json!(["198.18.0.99"])
    });
    s.vmnap(&["sleep", "d1"]);
    assert_eq!(d.state().expect("state"), "paused");
    let mac = vmnap_wire::Mac(d.mac).to_string().to_lowercase();
    let out = s.run(
        0,
        &[
            "arping",
            "-c",
            "1",
            "-w",
            "2",
            "-I",
            &s.client_if(0),
            "198.18.0.99",
        ],
    );
    assert!(
        out.status.success() && text(&out).to_lowercase().contains(&mac),
        "{}\n{}",
        text(&out),
        s.daemon_log()
    );
    assert_eq!(d.state().expect("state"), "paused", "the ARP woke it");
}
