//! `vmnap demo`: the whole method on a throwaway network.
//!
//! Builds a bridge and three namespace guests serving HTTP (with `vmnap-lab`), starts the
//! daemon on it, puts one guest to sleep, pings it (vmnap answers; the guest stays frozen),
//! wakes it with `curl`, prints a timeline, and removes everything, also on Ctrl-C. It fails
//! (after removing everything) if any of that did not happen as it says.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_api::State;
use vmnap_api::{self as api, Request, Response};
use vmnap_lab::{GuestSpec, Lab, LabOptions};
use vmnap_wire::Mac;

pub fn run() -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("cannot catch Ctrl-C")?;
    }
    let check = || -> anyhow::Result<()> {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted; everything the demo made is being removed");
        }
        Ok(())
    };
    // What it runs besides itself, so that a missing one is named with its package up front.
    vmnap_lab::check_tools(&vmnap_lab::tools::demo_programs())
        .context("the demo needs these programs")?;
    let exe = std::env::current_exe().context("cannot find the vmnap binary")?;
    let t0 = Instant::now();
    let mut timeline: Vec<(Duration, String)> = Vec::new();
    let mut mark = |what: String| {
        println!("  {what}");
        timeline.push((t0.elapsed(), what));
    };
    println!("building a bridge with three namespace guests serving HTTP ...");
    let mut lab = Lab::new(LabOptions {
        workload: vec![exe.clone().into(), "lab-guest".into()],
        ..LabOptions::default()
    })
    .context("cannot build the demo network (the demo needs root)")?;
    for n in 1..=3u8 {
        lab.add_guest(GuestSpec {
            name: format!("web{n}"),
            ipv4: Ipv4Addr::new(198, 18, 0, 10 + n),
            ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(n)),
            mac: [0x02, 0, 0, 0, 1, n],
            vlan: 0,
            http_port: Some(80),
            udp_log_port: None,
        })?;
    }
    let client = lab
        .add_client(
            "client",
            Ipv4Addr::new(198, 18, 1, 100),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 0x100),
            0,
        )?
        .netns
        .clone();
    check()?;
    let socket = lab.dir().join("vmnap.sock");
    let config = lab.dir().join("vmnap.toml");
    let mut text = format!(
        "[state]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n",
        lab.dir().display(),
        socket.display()
    );
    for g in lab.guests() {
        text += &format!(
            "\n[[guest]]\nname = \"{}\"\nbridge = \"{}\"\ninterface = \"{}\"\nmac = \"{}\"\nipv4 = [\"{}\"]\n\
             ipv6 = [\"{}\"]\nbackend = \"cgroup\"\ncgroup = \"{}\"\nwake_on = [\"tcp/80\"]\n",
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
    let log = lab.dir().join("vmnap.log");
    let argv: Vec<&OsStr> = vec![
        exe.as_os_str(),
        "run".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    lab.spawn_in_host(&argv, Some(&log))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if Instant::now() > deadline {
            bail!(
                "the daemon did not start; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    mark("vmnap is running on br0, standing by for web1, web2, web3".into());
    let call = |r: Request| -> anyhow::Result<String> {
        match api::call(&socket, &r)? {
            Response::Done { message } => Ok(message),
            Response::Error { message } => bail!("{message}"),
            Response::Status { guests } => Ok(serde_json::to_string(&guests)?),
        }
    };
    let web1_status = || -> anyhow::Result<api::GuestStatus> {
        match api::call(&socket, &Request::Status)? {
            Response::Status { guests } => guests
                .into_iter()
                .find(|g| g.name == "web1")
                .context("the daemon does not list web1"),
            other => bail!("the daemon answered the status with {other:?}"),
        }
    };
    // What did not happen as the demo says it does: the demo then fails (after cleaning up).
    let mut wrong: Vec<String> = Vec::new();
    let web1 = lab.guest("web1").context("web1")?.clone();
    let ip = web1.ipv4.to_string();
    mark(call(Request::Sleep {
        guest: "web1".into(),
    })?);
    check()?;
    let answered_before = web1_status()?.answered_frames;
    let ping = lab.exec(&client, &["ping", "-c", "3", "-i", "0.2", "-W", "2", &ip])?;
    print!("{}", String::from_utf8_lossy(&ping.stdout));
    let frozen = std::fs::read_to_string(web1.cgroup.join("cgroup.events"))
        .map(|t| t.contains("frozen 1"))
        .unwrap_or(false);
    let asleep = web1_status()?;
    let answered = asleep.answered_frames.saturating_sub(answered_before);
    mark(format!(
        "ping {ip}: answered by vmnap with web1's MAC ({answered} frame(s) answered in its \
         name); web1's cgroup frozen: {frozen}"
    ));
    if !ping.status.success() || answered == 0 {
        wrong.push(format!(
            "vmnap did not answer the ping ({answered} frames answered)"
        ));
    }
    if !frozen || asleep.state != State::Sleeping {
        wrong.push(format!(
            "web1 was not asleep during the ping (state {}, frozen: {frozen})",
            asleep.state
        ));
    }
    check()?;
    let curl = lab.exec(
        &client,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{time_starttransfer}",
            &format!("http://{ip}/"),
        ],
    )?;
    let out = String::from_utf8_lossy(&curl.stdout).into_owned();
    let (body, ttfb) = out.rsplit_once('\n').unwrap_or((&out, "?"));
    let ttfb_ms = ttfb
        .trim()
        .parse::<f64>()
        .map(|s| format!("{:.1} ms", s * 1000.0))
        .unwrap_or_default();
    mark(format!(
        "curl http://{ip}/ -> {:?}, first byte after {ttfb_ms}",
        body.trim()
    ));
    if body.trim() != "hello from web1" {
        wrong.push(format!("curl got {:?}, not web1's page", body.trim()));
    }
    // curl has its answer once the guest has taken in what was held; the wake ends a moment
    // later, when the bridge has been switched back to the guest.
    let mut g = web1_status()?;
    let waking_since = Instant::now();
    while g.state == State::Waking && waking_since.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
        g = web1_status()?;
    }
    let took = g
        .last_wake_ms
        .map_or_else(|| "?".to_owned(), |ms| format!("{ms:.2}"));
    mark(format!(
        "web1 is {} after {} wake(s); the wake took {took} ms (cause: {}), {} held frame(s) replayed",
        g.state,
        g.wakes,
        g.last_wake_cause.as_deref().unwrap_or("?"),
        g.replayed_frames,
    ));
    if g.state != State::Awake || g.wakes != 1 {
        wrong.push(format!(
            "curl did not wake web1 (state {}, {} wakes)",
            g.state, g.wakes
        ));
    }
    println!("\ntimeline:");
    for (at, what) in &timeline {
        println!("  {:>8.1} ms  {what}", at.as_secs_f64() * 1000.0);
    }
    println!("\nremoving the bridge, namespaces, cgroups and processes the demo made ...");
    drop(lab);
    println!("done.");
    if !wrong.is_empty() {
        bail!("the demo did not go as it should: {}", wrong.join("; "));
    }
    Ok(())
}
