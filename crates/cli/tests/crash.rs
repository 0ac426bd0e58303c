//! Crash safety: the daemon is killed with SIGKILL at random moments while guests are put
//! to sleep and woken under HTTP traffic, and restarted each time.
//!
//! After each restart, within 5 s, every guest must be awake (its own kernel answers ping)
//! or asleep with vmnap answering ping for it; the bridge must hold exactly one vmnap veth
//! pair, sticky entries only for sleeping guests (at most one each), every awake guest's
//! port forwarding and every sleeping guest's port disabled; every curl started after the
//! restart (and done before the next kill) must succeed.
//!
//! `VMNAP_CRASH_KILLS` (default 200, about 3 minutes here) sets the number of kills,
//! `VMNAP_CRASH_SEED` the seed of the schedule (printed at the start, so a failure can be
//! replayed).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{need, text, Setup, VMNAP};
use vmnap_lab::chaos::{chaos, curl_trickle, into_a_sleep, log_tail, Rng};

const GUESTS: [&str; 3] = ["g1", "g2", "g3"];

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Runs `vmnap VERB GUEST --socket S`, whatever comes of it.
fn command(socket: &std::path::Path, verb: &str, guest: &str) -> std::io::Result<Child> {
    Command::new(VMNAP)
        .args([verb, guest, "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// `(name, state, wakes)` of every guest, or why not.
fn states(socket: &std::path::Path) -> Result<Vec<(String, String, u64)>, String> {
    let out = Command::new(VMNAP)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(text(&out));
    }
    let all: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
    let mut v: Vec<(String, String, u64)> = all
        .as_array()
        .ok_or("status is not an array")?
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap_or("?").to_owned(),
                g["state"].as_str().unwrap_or("?").to_owned(),
                g["wakes"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    Ok(v)
}

/// What the host namespace shows of the bridge.
#[derive(Debug, Clone)]
struct Bridge {
    links: String,
    fdb: String,
    ports: String,
    frozen: Vec<(String, bool)>,
    journal: String,
}

impl std::fmt::Display for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "frozen: {:?}", self.frozen)?;
        writeln!(f, "journal: {}", self.journal.trim())?;
        writeln!(f, "ip -o link:\n{}", self.links.trim_end())?;
        writeln!(f, "bridge fdb show br br0:\n{}", self.fdb.trim_end())?;
        write!(f, "bridge link:\n{}", self.ports.trim_end())
    }
}

fn bridge(s: &Setup) -> Bridge {
    let host = s.lab.host_netns().to_owned();
    let run = |argv: &[&str]| text(&s.lab.exec(&host, argv).expect("run in the host ns"));
    Bridge {
        links: run(&["ip", "-o", "link", "show"]),
        fdb: run(&["bridge", "fdb", "show", "br", s.lab.bridge()]),
        ports: run(&["bridge", "link", "show"]),
        frozen: GUESTS
            .iter()
            .map(|g| ((*g).to_owned(), s.frozen(g)))
            .collect(),
        journal: std::fs::read_to_string(s.lab.dir().join("journal-br0.json"))
            .unwrap_or_else(|_| "(none)".into()),
    }
}

/// What is wrong with the bridge given the guests' states, if anything.
fn problems(s: &Setup, states: &[(String, String, u64)], b: &Bridge) -> Vec<String> {
    let mut wrong = Vec::new();
    let ours: Vec<&str> = b.links.lines().filter(|l| l.contains("vmnap")).collect();
    if ours.len() != 2 {
        wrong.push(format!(
            "{} vmnap link(s), not one veth pair: {ours:?}",
            ours.len()
        ));
    }
    let port = ours
        .iter()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .find(|n| !n.ends_with('s'))
        .unwrap_or("vmnap?")
        .to_owned();
    for (name, state, _) in states {
        let mac = s.guest_mac(name);
        let sticky: Vec<&str> = b
            .fdb
            .lines()
            .filter(|l| l.starts_with(&mac) && l.contains("sticky"))
            .collect();
        let frozen = b.frozen.iter().any(|(g, f)| g == name && *f);
        let iface = format!("vg-{name}");
        let port_line = b
            .ports
            .lines()
            .find(|l| l.split(": ").nth(1).is_some_and(|n| n.starts_with(&iface)))
            .unwrap_or("");
        match state.as_str() {
            "awake" => {
                if !sticky.is_empty() {
                    wrong.push(format!(
                        "{name} is awake but has sticky entries: {sticky:?}"
                    ));
                }
                if frozen {
                    wrong.push(format!("{name} is awake by the daemon but frozen"));
                }
                if !port_line.contains("state forwarding") {
                    wrong.push(format!(
                        "{name} is awake but its port is not forwarding: {port_line:?}"
                    ));
                }
            }
            "sleeping" => {
                if sticky.len() > 1 {
                    wrong.push(format!(
                        "{name} has {} sticky entries: {sticky:?}",
                        sticky.len()
                    ));
                }
                if sticky.iter().any(|l| !l.contains(&format!("dev {port} "))) {
                    wrong.push(format!(
                        "{name}'s sticky entry is not on {port}: {sticky:?}"
                    ));
                }
                if sticky.is_empty() {
                    wrong.push(format!("{name} is sleeping but nobody claimed its MAC"));
                }
                if !frozen {
                    wrong.push(format!("{name} is sleeping by the daemon but not frozen"));
                }
                if !port_line.contains("state disabled") {
                    wrong.push(format!(
                        "{name} is sleeping but its port is not disabled: {port_line:?}"
                    ));
                }
            }
            other => wrong.push(format!("{name} is {other}")),
        }
    }
    wrong
}

/// Pings every guest at once from client `c0` (every 10 ms, up to `within`) and returns
/// when each has answered, or the guests that did not.
fn all_answered(s: &Setup, within: Duration) -> Result<(), Vec<String>> {
    let ns = s.client(0);
    let deadline = format!("{}", within.as_secs_f64().ceil().max(1.0));
    let pings: Vec<(&str, std::io::Result<Child>)> = GUESTS
        .iter()
        .map(|g| {
            let child = Command::new("ip")
                .args([
                    "netns", "exec", &ns, "ping", "-n", "-q", "-c", "1", "-i", "0.01",
                ])
                .args(["-w", &deadline, &s.guest_ip(g)])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            (*g, child)
        })
        .collect();
    let mut silent = Vec::new();
    for (g, child) in pings {
        match child.and_then(Child::wait_with_output) {
            Ok(out) if out.status.success() => {}
            Ok(out) => silent.push(format!("{g}: {}", text(&out).trim())),
            Err(e) => silent.push(format!("{g}: {e}")),
        }
    }
    if silent.is_empty() {
        Ok(())
    } else {
        Err(silent)
    }
}

/// SIGKILL to the daemon, then reap it.
fn kill_hard(s: &mut Setup) -> Instant {
    let pid = s.daemon.take().expect("running");
    // SAFETY: kill(2) on the daemon this test started (by PID).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let at = Instant::now();
    s.lab.kill(pid); // reaps it
    at
}

#[test]
fn sigkill_at_random_moments_of_sleep_and_wake_cycles_leaves_every_guest_reachable() {
    need(&["ping", "curl", "bridge"]);
    let kills = env_number("VMNAP_CRASH_KILLS", 200);
    let seed = env_number(
        "VMNAP_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    eprintln!("crash test: {kills} kills, VMNAP_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let guests: Vec<(&str, u16)> = GUESTS.iter().map(|g| (*g, 0)).collect();
    let mut s = Setup::new(&guests, "");
    let socket = s.socket.clone();

    let stop_curls = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::new()));
    let ips = GUESTS.iter().map(|g| (*g, s.guest_ip(g))).collect();
    let trickle = curl_trickle(
        s.client(0),
        ips,
        rng.next(),
        stop_curls.clone(),
        records.clone(),
    );

    // Daemon lives: (restarted at, killed at).
    let mut lives: Vec<(Instant, Option<Instant>)> = vec![(Instant::now(), None)];
    let mut to_answer = Vec::new();
    for k in 0..kills {
        let (stop_tx, stop_rx) = mpsc::channel();
        let cycle = {
            let socket = socket.clone();
            chaos(
                &GUESTS,
                rng.next(),
                stop_rx,
                move |verb, guest| match command(&socket, verb, guest)
                    .and_then(Child::wait_with_output)
                {
                    Ok(out) => format!("{}: {}", out.status, text(&out).trim()),
                    Err(e) => e.to_string(),
                },
            )
        };
        std::thread::sleep(Duration::from_millis(rng.range(100, 1200)));
        // The last command, in flight when the kill comes: half the time the sleep of an
        // awake guest, killed 0 to 400 us after the daemon journals its start (mid-way
        // through its steps); otherwise any command, killed 0 to 30 ms after it is sent.
        let awake: Vec<&str> = match states(&socket) {
            Ok(st) => GUESTS
                .iter()
                .copied()
                .filter(|g| st.iter().any(|(n, state, _)| n == g && state == "awake"))
                .collect(),
            Err(_) => Vec::new(),
        };
        let journal = s.lab.dir().join("journal-br0.json");
        let (verb, guest, last, when) = if rng.next() % 2 == 0 && !awake.is_empty() {
            let guest = rng.pick(&awake);
            let last = command(&socket, "sleep", guest);
            let when = into_a_sleep(&journal, guest, rng.range(0, 400));
            ("sleep", guest, last, when)
        } else {
            let verb = if rng.next() % 2 == 0 { "sleep" } else { "wake" };
            let guest = rng.pick(&GUESTS);
            let last = command(&socket, verb, guest);
            let lag = rng.range(0, 30);
            std::thread::sleep(Duration::from_millis(lag));
            (verb, guest, last, format!("SIGKILL {lag} ms later"))
        };
        let killed = kill_hard(&mut s);
        if let Some(life) = lives.last_mut() {
            life.1 = Some(killed);
        }
        let _ = stop_tx.send(());
        let mut sequence = cycle.join().expect("the chaos thread");
        if let Ok(child) = last {
            let end = child
                .wait_with_output()
                .map(|o| text(&o).trim().to_owned())
                .unwrap_or_default();
            sequence.push(format!("{verb} {guest}, {when} -> {end}"));
        }
        let left = bridge(&s);
        let killed_log = s.daemon_log();
        let why = |what: String, now: Option<&Bridge>, log: &str| -> String {
            format!(
                "kill {k} (VMNAP_CRASH_SEED={seed}): {what}\n\
                 --- commands before the kill ---\n{}\n\
                 --- left by the killed daemon ---\n{left}\n\
                 --- now ---\n{}\n\
                 --- the killed daemon's log (tail) ---\n{}\n\
                 --- the restarted daemon's log (tail) ---\n{}",
                sequence.join("\n"),
                now.map_or_else(String::new, ToString::to_string),
                log_tail(&killed_log, 30),
                log_tail(log, 40),
            )
        };

        let restart = Instant::now();
        s.start_daemon();
        lives.push((restart, None));
        if let Err(silent) = all_answered(&s, Duration::from_secs(5)) {
            let b = bridge(&s);
            let (st, wrong) = match states(&socket) {
                Ok(st) => {
                    let wrong = problems(&s, &st, &b);
                    (format!("{st:?}"), wrong)
                }
                Err(e) => (e, Vec::new()),
            };
            panic!(
                "{}",
                why(
                    format!(
                        "not answered within 5 s of the restart: {silent:?}; states {st}; {wrong:?}"
                    ),
                    Some(&b),
                    &s.daemon_log()
                )
            );
        }
        to_answer.push(killed.elapsed().as_secs_f64() * 1000.0);
        // A consistent view (no state changed while it was taken) with nothing wrong, before
        // 5 s from the restart are up.
        let deadline = restart + Duration::from_secs(5);
        loop {
            let before = states(&socket);
            let b = bridge(&s);
            let after = states(&socket);
            let wrong = match (&before, &after) {
                (Ok(x), Ok(y)) if x == y => problems(&s, x, &b),
                _ => vec![format!("states changed: {before:?} then {after:?}")],
            };
            if wrong.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}",
                    why(
                        format!("5 s after the restart: {wrong:?}; states {after:?}"),
                        Some(&b),
                        &s.daemon_log()
                    )
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Everything awake again, every port forwarding, no entry left.
    for g in GUESTS {
        let _ = command(&socket, "wake", g).and_then(Child::wait_with_output);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = states(&socket).expect("status");
        let b = bridge(&s);
        let mut wrong = problems(&s, &st, &b);
        if st.iter().any(|(_, state, _)| state != "awake") {
            wrong.push(format!("not all awake: {st:?}"));
        }
        if b.ports.contains("state disabled") {
            wrong.push("a port is left disabled".into());
        }
        if b.fdb.contains("sticky") {
            wrong.push("a sticky entry is left".into());
        }
        if wrong.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after waking all: {wrong:?}\n{b}\n--- daemon log (tail) ---\n{}",
            log_tail(&s.daemon_log(), 40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_curls.store(true, Ordering::Relaxed);
    trickle.join().expect("the curl thread");
    for g in GUESTS {
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

    // Every curl that started after a restart and ended before the next kill succeeded.
    let records = records
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let t0 = lives[0].0;
    let mut counted = 0;
    let mut failed = Vec::new();
    let mut straddling_failed = 0;
    for r in &records {
        let life = lives
            .iter()
            .enumerate()
            .rev()
            .find(|(_, (from, _))| r.started >= *from);
        let Some((n, (from, until))) = life else {
            continue;
        };
        if until.is_some_and(|u| r.ended > u) {
            straddling_failed += usize::from(!r.ok);
            continue;
        }
        counted += 1;
        if !r.ok {
            failed.push(format!(
                "life {n}: curl to {} started {} ms after the restart (+{} ms), took {} ms: {}",
                r.guest,
                (r.started - *from).as_millis(),
                (r.started - t0).as_millis(),
                (r.ended - r.started).as_millis(),
                r.said.trim()
            ));
        }
    }
    to_answer.sort_by(f64::total_cmp);
    eprintln!(
        "crash test: {kills} kills; SIGKILL -> all answered: median {:.0} ms, max {:.0} ms; \
         {counted} curls within a daemon's life, {} failed; {straddling_failed} of those \
         that spanned a kill failed",
        to_answer
            .get(to_answer.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        to_answer.last().copied().unwrap_or(f64::NAN),
        failed.len(),
    );
    assert!(
        failed.is_empty(),
        "VMNAP_CRASH_SEED={seed}: connections opened after a restart failed:\n{}\n\
         --- daemon log (tail) ---\n{}",
        failed.join("\n"),
        log_tail(&s.daemon_log(), 40)
    );
    assert!(counted > 0, "no curl was counted");
}
