//! Real QEMU guests (TCG, the project's own image) driven over QMP by the real daemon.

mod common;

use std::time::Duration;

use vmnap_lab::{cmdline, pids_mentioning};

use common::{
    assert_thousand_in_order, clock_behind_ms, curl, curl_counting_syns, need,
    send_thousand_datagrams, text, Setup,
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
    thousand_datagrams_in_order(&Setup::with_vms(&["vm1"], ""), || {});
}

/// vm1 of `s` put to sleep (and `asleep` run), then sent 1,000 datagrams: they reach it in
/// order, exactly once, with one wake.
fn thousand_datagrams_in_order(s: &Setup, asleep: impl FnOnce()) {
    let ip = s.vm_ip("vm1");
    assert!(s
        .run(0, &["ping", "-c", "1", "-W", "2", &ip])
        .status
        .success());
    s.vmnap(&["sleep", "vm1"]);
    asleep();
    send_thousand_datagrams(s, &ip);
    let vm = s.lab.vm("vm1").expect("vm").clone();
    assert_thousand_in_order(Duration::from_secs(60), || vm.udp_lines());
    assert_eq!(s.awake("vm1")["wakes"], 1);
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
    assert_eq!(s.awake("vm1")["wakes"], 20);
}

/// Ends, by PID, the QEMU a save-mode backend started (the daemon's child, not the lab's).
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in pids_mentioning(&self.0) {
            // SAFETY: kill(2) on a PID found just above; a race at worst hits nothing.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

#[test]
fn qmp_save_mode_ends_qemu_while_asleep_and_curl_brings_it_back_with_one_syn() {
    need(&["curl", "tcpdump"]);
    // Boot as usual, then hand vmnap the same command line for restores (without the QMP
    // socket the backend adds itself).
    let mut s = Setup::with_vms(&["vm1"], "");
    let vm = s.lab.vm("vm1").expect("vm").clone();
    let mut argv = cmdline(vm.pid);
    let at = argv
        .iter()
        .position(|a| a.starts_with("unix:") && a.contains(&*vm.qmp.to_string_lossy()))
        .expect("the lab's -qmp argument");
    argv.drain(at - 1..=at);
    let state = s.lab.dir().join("vm1.state");
    let _reaper = KillOnDrop(s.lab.dir().display().to_string());
    let quoted: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    let extra = format!(
        "mode = \"save\"\nqemu_command = [{}]\nstate_file = \"{}\"",
        quoted.join(", "),
        state.display()
    );
    let config = std::fs::read_to_string(&s.config).expect("config");
    // Sampled often: the backend keeps its QMP connection open before the sleep, as it
    // does for any guest that has been awake a while.
    std::fs::write(
        &s.config,
        format!(
            "[idle]\ninterval = \"200ms\"\n{}",
            config.replace("backend = \"qmp\"", &format!("backend = \"qmp\"\n{extra}"))
        ),
    )
    .expect("config");
    let pid = s.daemon.take().expect("running");
    s.lab.kill(pid);
    s.start_daemon();
    std::thread::sleep(Duration::from_secs(1));

    s.vmnap(&["sleep", "vm1"]);
    assert!(!s.lab.is_running(vm.pid), "QEMU still runs while asleep");
    assert!(state.exists(), "no state file");
    let (body, syns) = curl_counting_syns(&s, &vm.ipv4.to_string());
    assert_eq!(body, "hello from vm1\n", "{}", s.daemon_log());
    assert_eq!(syns, 1, "the client retransmitted its SYN");
    assert!(s.vm_status("vm1").contains("\"running\""));
    let st = s.status("vm1");
    assert_eq!(
        (st["wakes"].as_u64(), st["backend"].as_str()),
        (Some(1), Some("qmp-save")),
        "{st}"
    );
}

#[test]
fn a_qemu_guest_stopped_with_a_request_it_has_not_answered_is_woken_again_at_once() {
    need(&["nc", "curl"]);
    let mut s = Setup::with_vms(&["vm1"], "");
    let ip = s.vm_ip("vm1");
    // A request not over yet: the guest's server has taken in its first lines and waits for
    // the blank line that ends it. Its kernel has acknowledged them; nothing more comes. nc
    // reads them from a FIFO this test holds open (so it sends no FIN), and it is the
    // process the lab ends, so that the connection ends with it.
    let fifo = s.lab.dir().join("request.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let script = format!("exec nc {ip} 80 < {}", fifo.display());
    let client = s
        .lab
        .spawn_in(
            &s.client(0),
            &["sh".as_ref(), "-c".as_ref(), script.as_ref()],
        )
        .expect("nc");
    let mut request = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("the FIFO");
    std::io::Write::write_all(&mut request, b"GET / HTTP/1.1\r\nHost: vm1\r\n").expect("write");
    // Under TCG the guest takes a moment to acknowledge.
    std::thread::sleep(Duration::from_secs(2));
    let sleep = vmnap_api::call(
        &s.socket,
        &vmnap_api::Request::Sleep {
            guest: "vm1".into(),
        },
    )
    .expect("the daemon answers");
    let vmnap_api::Response::Error { message } = sleep else {
        panic!("the sleep went ahead: {sleep:?}\n{}", s.daemon_log());
    };
    assert!(
        message.contains("still had work") && message.contains("not answered"),
        "{message}"
    );
    // The refusal is told once the guest is found stopped with work; it has its network
    // back a moment later.
    let st = s.awake("vm1");
    assert_eq!(
        (st["state"].as_str(), st["last_wake_cause"].as_str()),
        (Some("awake"), Some("in-flight")),
        "{st}"
    );
    assert!(s.vm_status("vm1").contains("\"running\""));

    // Once the client has gone, nothing is left unanswered, and the guest sleeps.
    drop(request);
    s.lab.kill(client);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.vmnap(&["sleep", "vm1"]).trim(), "vm1 is asleep");
    let (body, _) = curl(&s, &format!("http://{ip}/"));
    assert_eq!(body, "hello from vm1\n");
}

/// Waits up to `secs` for `f` to give `Some`.
fn wait_some<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_paged_out_qemu_guest_gives_its_ram_back_and_is_woken_by_curl_with_one_syn() {
    need(&["curl", "tcpdump", "nc"]);
    const RAM: u64 = 128 << 20;
    let s = Setup::with_file_backed_vms(&["vm1"], "mode = \"pageout\"\n");
    let ip = s.vm_ip("vm1");
    // check-config finds its RAM file through QEMU, beside the running daemon.
    let check = check_config(&s);
    assert!(
        check.contains("guest vm1: page-out ready")
            && check.contains("its RAM is /var/tmp/vmnap-test-")
            && check.contains("vm1.ram (128 MiB), mapped shared by process"),
        "{check}"
    );
    // The guest writes 40% of its RAM, as a guest at work would: the page-out has that to
    // write back.
    let out = s.run(0, &["sh", "-c", &format!("echo 40 | nc -w 60 {ip} 8")]);
    assert!(text(&out).contains("dirtied"), "{}", text(&out));
    s.vmnap(&["sleep", "vm1"]);
    assert!(s.vm_status("vm1").contains("\"paused\""));
    // The page-out runs once the guest is asleep; the status says what it freed.
    let freed = wait_some("the page-out", 60, || {
        s.status("vm1")["memory_freed_bytes"]
            .as_u64()
            .filter(|&b| b > 0)
    });
    assert!(freed >= RAM / 4, "freed only {freed} bytes");
    let vm = s.lab.vm("vm1").expect("vm").clone();
    let ram = vmnap_host::pageout::RamFile::find_in(vm.pid).expect("the RAM file, mapped by QEMU");
    let resident = ram.resident().expect("resident");
    assert!(
        resident.cached <= RAM / 50,
        "more than 2% of the guest's RAM is in host memory asleep: {resident:?}"
    );
    assert!(
        !ram.huge_pages_advised().expect("smaps"),
        "vmnap run-qemu left QEMU's huge-page advice in place"
    );
    let st = s.status("vm1");
    let page_out = st["page_out"].as_str().unwrap_or_default();
    assert!(page_out.starts_with("ready"), "{st}");
    assert!(!page_out.contains("huge pages"), "{st}");
    assert_eq!(st["backend"], "qmp-pageout", "{st}");
    // Answered while asleep without bringing its RAM back.
    let ping = s.run(0, &["ping", "-c", "2", "-i", "0.2", "-W", "2", &ip]);
    assert!(ping.status.success(), "{}", text(&ping));
    // A new connection wakes it with its first SYN, and it serves from RAM read back.
    let (body, syns) = curl_counting_syns(&s, &ip);
    assert_eq!(body, "hello from vm1\n");
    assert_eq!(syns, 1, "the client retransmitted its SYN");
    assert!(s.vm_status("vm1").contains("\"running\""));
    assert_eq!(s.status("vm1")["wakes"], 1);
    // What came back is read with the next sample ([idle] interval, 5 s).
    let back = wait_some("the memory back", 30, || {
        s.status("vm1")["memory_back_bytes"].as_u64()
    });
    assert!(back > 0 && back < freed, "back {back} of {freed} freed");
    let events = text(
        &std::process::Command::new(env!("CARGO_BIN_EXE_vmnap"))
            .args(["events", "vm1", "--socket"])
            .arg(&s.socket)
            .output()
            .expect("vmnap events"),
    );
    assert!(events.contains("paged out:"), "{events}");
}

#[test]
fn a_thousand_datagrams_reach_a_paged_out_qemu_guest_in_order_exactly_once() {
    let s = Setup::with_file_backed_vms(&["vm1"], "mode = \"pageout\"\n");
    thousand_datagrams_in_order(&s, || {
        wait_some("the page-out", 60, || {
            s.status("vm1")["memory_freed_bytes"]
                .as_u64()
                .filter(|&b| b > 0)
        });
    });
}

#[test]
fn a_page_out_a_crash_cut_short_is_done_again_by_the_next_run() {
    need(&["curl", "tcpdump"]);
    const RAM: u64 = 128 << 20;
    let mut s = Setup::with_file_backed_vms(&["vm1"], "mode = \"pageout\"\n");
    let ip = s.vm_ip("vm1");
    s.vmnap(&["sleep", "vm1"]);
    // The daemon dies once the journal has the guest asleep, its page-out begun or not.
    let pid = s.daemon.take().expect("running");
    // SAFETY: kill(2) on the daemon this test started (by PID); reaped just below.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    s.lab.kill(pid);
    // Whatever it took out, the guest's RAM is all in host memory again (read, as a
    // backup would), as after a crash before the page-out.
    let vm = s.lab.vm("vm1").expect("vm").clone();
    let ram = vmnap_host::pageout::RamFile::find_in(vm.pid).expect("the RAM file");
    std::io::copy(
        &mut std::fs::File::open(ram.path()).expect("open the RAM file"),
        &mut std::io::sink(),
    )
    .expect("read the RAM file");
    let before = ram.resident().expect("resident");
    assert!(before.cached >= RAM * 9 / 10, "{before:?}");
    // The next run finds it asleep in the journal, stands in for it, and pages it out.
    s.start_daemon();
    assert_eq!(s.status("vm1")["state"], "sleeping");
    wait_some("the page-out", 60, || {
        let r = ram.resident().expect("resident");
        (r.cached <= RAM / 50).then_some(())
    });
    assert!(
        s.daemon_log().contains("the guest's RAM paged out"),
        "{}",
        s.daemon_log()
    );
    let (body, syns) = curl_counting_syns(&s, &ip);
    assert_eq!(body, "hello from vm1\n");
    assert_eq!(syns, 1, "the client retransmitted its SYN");
}

/// `vmnap check-config` on the setup's config: its output; it must succeed.
fn check_config(s: &Setup) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmnap"))
        .arg("check-config")
        .arg(&s.config)
        .output()
        .expect("vmnap check-config");
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

#[test]
fn a_guest_whose_ram_is_not_a_shared_file_is_told_by_check_config_and_sleeps_paused() {
    need(&["curl", "tcpdump"]);
    let s = Setup::with_vms(&["vm1"], "mode = \"pageout\"\n");
    let ip = s.vm_ip("vm1");
    let check = check_config(&s);
    assert!(
        check.contains("guest vm1: page-out cannot apply, it would sleep paused:")
            && check.contains("memory-backend-file,share=on"),
        "{check}"
    );
    // The status says so too, from its first sample ([idle] interval, 5 s), before any
    // sleep.
    wait_some("the status to say why", 30, || {
        let st = s.status("vm1");
        st["page_out"]
            .as_str()
            .is_some_and(|p| p.starts_with("unavailable, it sleeps paused"))
            .then_some(())
    });
    s.vmnap(&["sleep", "vm1"]);
    assert!(s.vm_status("vm1").contains("\"paused\""));
    let st = s.status("vm1");
    let page_out = st["page_out"].as_str().unwrap_or_default();
    assert!(
        page_out.starts_with("unavailable, it sleeps paused"),
        "{st}"
    );
    let (body, syns) = curl_counting_syns(&s, &ip);
    assert_eq!(body, "hello from vm1\n");
    assert_eq!(syns, 1, "the client retransmitted its SYN");
}

/// The guest's clock minus the host's, in milliseconds, read through its agent's socket
/// (`guest-sync`, then `guest-get-time`) between two readings of the host's clock.
fn guest_clock_offset_ms(agent: &std::path::Path) -> Option<f64> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(agent).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut w = stream.try_clone().ok()?;
    let mut r = BufReader::new(stream);
    w.write_all(b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":4242}}\n")
        .ok()?;
    let mut line = String::new();
    while !line.contains("4242") {
        line.clear();
        r.read_line(&mut line).ok()?;
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
            * 1000.0
    };
    let before = now();
    w.write_all(b"{\"execute\":\"guest-get-time\"}\n").ok()?;
    line.clear();
    r.read_line(&mut line).ok()?;
    let after = now();
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    Some(v["return"].as_f64()? / 1e6 - (before + after) / 2.0)
}

#[test]
fn a_qemu_guest_woken_gets_the_hosts_time_through_its_agent() {
    need(&["curl"]);
    let s = Setup::with_vms(&["vm1"], "");
    let agent = s.lab.vm("vm1").expect("vm1").agent.clone();
    let before = wait_some("the guest agent", 30, || guest_clock_offset_ms(&agent));
    s.vmnap(&["sleep", "vm1"]);
    std::thread::sleep(Duration::from_secs(4));
    let (body, _) = curl(&s, &format!("http://{}/", s.vm_ip("vm1")));
    assert_eq!(body, "hello from vm1\n");
    wait_some("the clock set", 10, || {
        s.daemon_log()
            .contains("set the guest's clock to the host's")
            .then_some(())
    });
    let after = guest_clock_offset_ms(&agent).expect("the agent answers");
    eprintln!("before the sleep {before:.1} ms off; after the wake {after:.1} ms off");
    assert!(after.abs() < 250.0, "{after} ms off after the wake");
    // Paused 4 s, the guest had fallen behind by as much.
    let behind = clock_behind_ms(&s, "vm1");
    assert!(behind > 3000.0, "the clock was {behind} ms behind");
}

/// Sends `command` to the guest agent on `agent` (after a `guest-sync`) and returns its
/// `return`.
fn agent_call(agent: &std::path::Path, command: &serde_json::Value) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(agent).expect("the agent's socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    w.write_all(b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":4343}}\n")
        .expect("sync");
    let mut line = String::new();
    while !line.contains("4343") {
        line.clear();
        r.read_line(&mut line).expect("the sync's answer");
    }
    w.write_all(format!("{command}\n").as_bytes())
        .expect("command");
    line.clear();
    r.read_line(&mut line).expect("the answer");
    let mut v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert!(v.get("error").is_none(), "{command}: {line}");
    v["return"].take()
}

/// Runs `script` with `/bin/sh -c` in the guest through its agent, and waits for it.
fn in_guest(agent: &std::path::Path, script: &str) {
    let pid = agent_call(
        agent,
        &serde_json::json!({
            "execute": "guest-exec",
            "arguments": { "path": "/bin/sh", "arg": ["-c", script] },
        }),
    )["pid"]
        .as_i64()
        .expect("a pid");
    wait_some(script, 10, || {
        let s = agent_call(
            agent,
            &serde_json::json!({ "execute": "guest-exec-status", "arguments": { "pid": pid } }),
        );
        (s["exited"] == true).then_some(())
    });
}

#[test]
fn a_qemu_guest_inhibits_its_sleep_through_its_agent() {
    let s = Setup::with_vms(&["vm1"], "inhibit_file = \"/tmp/vmnap-inhibit\"\n");
    let agent = s.lab.vm("vm1").expect("vm1").agent.clone();
    wait_some("the guest agent", 30, || guest_clock_offset_ms(&agent));
    in_guest(&agent, "touch /tmp/vmnap-inhibit");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmnap"))
        .args(["sleep", "vm1", "--socket"])
        .arg(&s.socket)
        .output()
        .expect("vmnap sleep");
    let said = text(&out);
    assert!(
        !out.status.success()
            && said.contains(
                "vm1 stays awake: its sleep was vetoed by inhibit_file: /tmp/vmnap-inhibit exists in the guest"
            ),
        "{said}\n{}",
        s.daemon_log()
    );
    assert!(s.vm_status("vm1").contains("\"running\""));
    in_guest(&agent, "rm /tmp/vmnap-inhibit");
    s.vmnap(&["sleep", "vm1"]);
    assert!(s.vm_status("vm1").contains("\"paused\""));
}
