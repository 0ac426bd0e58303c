//! `bench-crash`: how long after a `SIGKILL` every guest is answered again.
//!
//! Builds a lab (three namespace guests `g1`..`g3` serving HTTP on port 80 in their own
//! cgroups, one client), runs the real `vmnap` daemon on its bridge (`--vmnap PATH`,
//! default: `vmnap` next to this executable) with its journal in the lab's directory, then
//! `--kills N` times (default 200):
//! - for 100 to 1,200 ms a background thread sleeps and wakes random guests through the
//!   API every 10 to 250 ms, while another curls a random guest from the client every 50
//!   to 250 ms;
//! - one last command is sent and the daemon is killed with `SIGKILL`: half the time the
//!   command is the sleep of an awake guest and the kill comes 0 to 400 us after the
//!   journal shows the guest falling asleep (mid-way through the sleep's steps); otherwise
//!   it is any command and the kill comes 0 to 30 ms after it;
//! - the daemon is restarted and the client pings every guest at once (every 10 ms, up to
//!   10 s): the time from the `SIGKILL` to the last guest's first reply is the figure. A
//!   sleeping guest's cgroup is frozen, so its reply is vmnap's; an awake guest's is its
//!   own. Then the bridge is checked: one vmnap veth pair, a sticky entry (on vmnap's port)
//!   for each sleeping guest and none for awake ones, awake guests' ports forwarding and
//!   sleeping guests' disabled. A kill after which a guest stays silent or the bridge is
//!   wrong is printed (with the journal the killed daemon left) and counted; the guest is
//!   then slept and woken to go on.
//!
//! Prints the median, p90 and max time from `SIGKILL` to every guest answered, the
//! restart alone (spawn to API socket up), and how many curls started after a restart
//! (and done before the next kill) failed: that must be 0. `--seed S` replays a
//! schedule. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_api::{Request, State};
use vmnap_bench::{median, ms, quantile};
use vmnap_lab::chaos::{chaos, curl_trickle, into_a_sleep, Rng};
use vmnap_lab::{CgroupKind, GuestSpec, Lab, LabGuest, LabOptions};
use vmnap_wire::Mac;

const GUESTS: [&str; 3] = ["g1", "g2", "g3"];

/// Sends `vmnap sleep|wake GUEST` over the API, whatever comes of it.
fn command(socket: &Path, verb: &str, guest: &str) -> String {
    let request = if verb == "sleep" {
        Request::Sleep {
            guest: guest.into(),
        }
    } else {
        Request::Wake {
            guest: guest.into(),
        }
    };
    match vmnap_bench::call(socket, &request) {
        Ok(m) => m,
        Err(e) => format!("{e:#}"),
    }
}

/// `(name, state)` of every guest, sorted.
fn states(socket: &Path) -> anyhow::Result<Vec<(String, State)>> {
    let mut v: Vec<(String, State)> = vmnap_bench::status(socket)?
        .into_iter()
        .map(|g| (g.name, g.state))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn is_frozen(dir: &Path, kind: CgroupKind) -> bool {
    match kind {
        CgroupKind::V2 => std::fs::read_to_string(dir.join("cgroup.events"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "frozen 1")),
        _ => std::fs::read_to_string(dir.join("freezer.state")).is_ok_and(|t| t.trim() == "FROZEN"),
    }
}

/// Pings every guest at once from the client (every 10 ms, up to `secs` seconds); the
/// guests that never answered.
fn ping_all(client: &str, guests: &[LabGuest], secs: u32) -> Vec<String> {
    let deadline = secs.to_string();
    let pings: Vec<(String, std::io::Result<Child>)> = guests
        .iter()
        .map(|g| {
            let ip = g.ipv4.to_string();
            let child = Command::new("ip")
                .args([
                    "netns", "exec", client, "ping", "-n", "-q", "-c", "1", "-i", "0.01",
                ])
                .args(["-w", &deadline, &ip])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            (g.name.clone(), child)
        })
        .collect();
    pings
        .into_iter()
        .filter_map(|(g, child)| match child.and_then(Child::wait_with_output) {
            Ok(out) if out.status.success() => None,
            _ => Some(g),
        })
        .collect()
}

/// What is wrong with the bridge given the guests' states (empty: nothing).
fn bridge_problems(lab: &Lab, guests: &[LabGuest], states: &[(String, State)]) -> Vec<String> {
    let host = lab.host_netns();
    let run = |argv: &[&str]| {
        lab.exec(host, argv)
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_else(|e| e.to_string())
    };
    let links = run(&["ip", "-o", "link", "show"]);
    let fdb = run(&["bridge", "fdb", "show", "br", lab.bridge()]);
    let ports = run(&["bridge", "link", "show"]);
    let mut wrong = Vec::new();
    let ours: Vec<&str> = links.lines().filter(|l| l.contains("vmnap")).collect();
    if ours.len() != 2 {
        wrong.push(format!("{} vmnap links, not one veth pair", ours.len()));
    }
    for g in guests {
        let state = states.iter().find(|(n, _)| *n == g.name).map(|(_, s)| *s);
        let mac = Mac(g.mac).to_string();
        let sticky = fdb
            .lines()
            .filter(|l| l.starts_with(&mac) && l.contains("sticky"))
            .count();
        let port = ports
            .lines()
            .find(|l| {
                l.split(": ")
                    .nth(1)
                    .is_some_and(|n| n.starts_with(&g.host_if))
            })
            .unwrap_or("");
        let frozen = is_frozen(&g.cgroup, lab.cgroup_kind());
        let ok = match state {
            Some(State::Awake) => sticky == 0 && !frozen && port.contains("state forwarding"),
            Some(State::Sleeping) => sticky == 1 && frozen && port.contains("state disabled"),
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "{} {state:?}: {sticky} sticky, frozen {frozen}, port {:?}",
                g.name,
                port.split("state ")
                    .nth(1)
                    .and_then(|s| s.split(' ').next())
                    .unwrap_or("?")
            ));
        }
    }
    wrong
}

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}

fn flag(args: &[String], name: &str) -> anyhow::Result<Option<u64>> {
    args.iter()
        .position(|a| a == name)
        .map(|i| {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} needs a number"))
        })
        .transpose()
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: bench-crash [--vmnap PATH] [--kills 200] [--seed S]   (needs root)");
        return Ok(());
    }
    vmnap_bench::need_root("bench-crash")?;
    let vmnap = vmnap_bench::vmnap_path(&args)?;
    vmnap_lab::check_tools(&["ip", "nsenter", "curl", "ping", "bridge"])?;
    let kills = flag(&args, "--kills")?.unwrap_or(200);
    let seed = match flag(&args, "--seed")? {
        Some(s) => s,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };

    println!("bench-crash: SIGKILL at random moments of sleep/wake cycles of 3 namespace guests under HTTP traffic, then restart");
    println!("  daemon {}; {kills} kills; --seed {seed}", vmnap.display());
    println!("  figure: SIGKILL -> restarted daemon -> every guest's first ping reply (vmnap's for a frozen guest, its own otherwise)\n");

    let mut lab = Lab::new(LabOptions {
        workload: vec![vmnap.clone().into(), "lab-guest".into()],
        ..LabOptions::default()
    })
    .context("cannot build the lab")?;
    let mut guests = Vec::new();
    for (n, name) in GUESTS.iter().enumerate() {
        let n = n as u8 + 1;
        guests.push(
            lab.add_guest(GuestSpec {
                name: (*name).into(),
                ipv4: std::net::Ipv4Addr::new(198, 18, 0, 10 + n),
                ipv6: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(n)),
                mac: [0x02, 0, 0, 0, 1, n],
                vlan: 0,
                http_port: Some(80),
                udp_log_port: None,
            })?
            .clone(),
        );
    }
    let client = lab
        .add_client(
            "c0",
            std::net::Ipv4Addr::new(198, 18, 1, 100),
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 0x100),
            0,
        )?
        .netns
        .clone();
    let socket = lab.dir().join("vmnap.sock");
    let config = lab.dir().join("vmnap.toml");
    let log: PathBuf = lab.dir().join("vmnap.log");
    let mut text = format!(
        "[state]\ndir = \"{}\"\n\n[api]\nsocket = \"{}\"\n",
        lab.dir().display(),
        socket.display()
    );
    for g in &guests {
        text += &format!(
            "\n[[guest]]\nname = \"{}\"\nbridge = \"{}\"\ninterface = \"{}\"\nmac = \"{}\"\n\
             ipv4 = [\"{}\"]\nipv6 = [\"{}\"]\nbackend = \"cgroup\"\ncgroup = \"{}\"\n\
             wake_on = [\"tcp/80\"]\n",
            g.name,
            lab.bridge(),
            g.host_if,
            Mac(g.mac),
            g.ipv4,
            g.ipv6,
            g.cgroup.display()
        );
    }
    std::fs::write(&config, text)?;
    let up = Duration::from_secs(10);
    let mut daemon = vmnap_bench::start_daemon(&mut lab, &vmnap, &config, &socket, &log, up)?;

    let mut rng = Rng(seed);
    let stop_curls = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::new()));
    let ips = guests
        .iter()
        .zip(GUESTS)
        .map(|(g, name)| (name, g.ipv4.to_string()))
        .collect();
    let trickle = curl_trickle(
        client.clone(),
        ips,
        rng.next(),
        stop_curls.clone(),
        records.clone(),
    );

    let mut lives: Vec<(Instant, Option<Instant>)> = vec![(Instant::now(), None)];
    let mut to_answer = Vec::new();
    let mut restarts = Vec::new();
    let mut bad = Vec::new();
    let started = Instant::now();
    for k in 0..kills {
        let (stop_tx, stop_rx) = mpsc::channel();
        let cycle = {
            let socket = socket.clone();
            chaos(&GUESTS, rng.next(), stop_rx, move |verb, guest| {
                command(&socket, verb, guest)
            })
        };
        std::thread::sleep(Duration::from_millis(rng.range(100, 1200)));
        let awake: Vec<&str> = match states(&socket) {
            Ok(st) => GUESTS
                .iter()
                .copied()
                .filter(|g| st.iter().any(|(n, s)| n == g && *s == State::Awake))
                .collect(),
            Err(_) => Vec::new(),
        };
        let journal = lab.dir().join("journal-br0.json");
        let into_sleep = rng.next() % 2 == 0 && !awake.is_empty();
        let (verb, guest) = if into_sleep {
            ("sleep", rng.pick(&awake))
        } else {
            let verb = if rng.next() % 2 == 0 { "sleep" } else { "wake" };
            (verb, rng.pick(&GUESTS))
        };
        let last = {
            let socket = socket.clone();
            std::thread::spawn(move || command(&socket, verb, guest))
        };
        let when = if into_sleep {
            into_a_sleep(&journal, guest, rng.range(0, 400))
        } else {
            let lag = rng.range(0, 30);
            std::thread::sleep(Duration::from_millis(lag));
            format!("SIGKILL {lag} ms later")
        };
        // SAFETY: kill(2) on the daemon this benchmark started (by PID).
        unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
        let killed = Instant::now();
        lab.kill(daemon); // reaps it
        if let Some(life) = lives.last_mut() {
            life.1 = Some(killed);
        }
        let _ = stop_tx.send(());
        let mut sequence = cycle
            .join()
            .map_err(|_| anyhow::anyhow!("the chaos thread panicked"))?;
        let end = last.join().unwrap_or_default();
        sequence.push(format!("{verb} {guest}, {when} -> {end}"));
        let journal = std::fs::read_to_string(lab.dir().join("journal-br0.json"))
            .unwrap_or_else(|_| "(none)".into());

        let spawn = Instant::now();
        daemon = vmnap_bench::start_daemon(&mut lab, &vmnap, &config, &socket, &log, up)?;
        restarts.push(ms(spawn.elapsed()));
        lives.push((spawn, None));
        let silent = ping_all(&client, &guests, 10);
        let answered = killed.elapsed();
        // The bridge, once no state moves (a curl may be waking a guest).
        let deadline = spawn + Duration::from_secs(5);
        let wrong = loop {
            let before = states(&socket)?;
            let wrong = bridge_problems(&lab, &guests, &before);
            if states(&socket)? == before && wrong.is_empty() || Instant::now() > deadline {
                break wrong;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if silent.is_empty() && answered < Duration::from_secs(5) {
            to_answer.push(ms(answered));
            if answered > Duration::from_millis(500) {
                println!(
                    "  kill {k}: every guest answered only after {:.0} ms\n    commands: {}\n    journal left: {}",
                    ms(answered),
                    sequence.join(" | "),
                    journal.split_whitespace().collect::<String>()
                );
            }
        }
        if !silent.is_empty() || !wrong.is_empty() || answered >= Duration::from_secs(5) {
            println!(
                "  kill {k}: silent {silent:?} ({:.0} ms), bridge: {wrong:?}\n    commands: {}\n    journal left: {}",
                ms(answered),
                sequence.join(" | "),
                journal.split_whitespace().collect::<String>()
            );
            bad.push(k);
            // Go on: a sleep and a wake of every guest hand each its port back.
            for g in GUESTS {
                command(&socket, "sleep", g);
                command(&socket, "wake", g);
            }
        }
        if (k + 1) % 50 == 0 {
            eprintln!(
                "  ... {} kills, {:.0} s",
                k + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    stop_curls.store(true, Ordering::Relaxed);
    trickle
        .join()
        .map_err(|_| anyhow::anyhow!("the curl thread panicked"))?;
    lab.kill(daemon); // SIGTERM: wakes the guests

    let records = records
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let (mut counted, mut spanning) = (0, 0);
    let mut failed = Vec::new();
    for r in &records {
        let Some((from, until)) = lives.iter().rev().find(|(from, _)| r.started >= *from) else {
            continue;
        };
        if until.is_some_and(|u| r.ended > u) {
            spanning += 1;
            continue;
        }
        counted += 1;
        if !r.ok {
            failed.push(format!(
                "    curl to {} started {:.0} ms after a restart, took {:.0} ms: {}",
                r.guest,
                ms(r.started - *from),
                ms(r.ended - r.started),
                r.said.trim()
            ));
        }
    }

    println!(
        "\nresults ({kills} kills, {:.0} s, --seed {seed}):",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  SIGKILL -> every guest answered    median {:>7.1} ms   p90 {:>7.1} ms   max {:>7.1} ms   (n={})",
        median(&to_answer),
        quantile(&to_answer, 0.9),
        quantile(&to_answer, 1.0),
        to_answer.len()
    );
    println!(
        "  restart (spawn -> API socket up)   median {:>7.1} ms   p90 {:>7.1} ms   max {:>7.1} ms",
        median(&restarts),
        quantile(&restarts, 0.9),
        quantile(&restarts, 1.0)
    );
    println!(
        "  kills after which a guest was silent >= 5 s or the bridge was wrong: {} {:?}",
        bad.len(),
        bad
    );
    println!(
        "  curls opened after a restart (done before the next kill): {counted}, failed: {}  (must be 0)",
        failed.len()
    );
    for f in failed.iter().take(10) {
        println!("{f}");
    }
    println!("  (not counted: {spanning} curls that were running at a kill or started before the restart was spawned)");
    if !failed.is_empty() || !bad.is_empty() {
        bail!(
            "{} failed connection(s) after a restart, {} bad restart(s)",
            failed.len(),
            bad.len()
        );
    }
    Ok(())
}
