//! `bench-wake`: wake-and-serve for a namespace guest, measured with the real daemon.
//!
//! Builds a lab (one guest `web1` serving HTTP on port 80 in its own cgroup, one client),
//! runs the real `vmnap` daemon on its bridge (`--vmnap PATH`, default: `vmnap` next to this
//! executable), then:
//! - 50 rounds: `vmnap sleep web1` through the API, then from the client namespace
//!   `curl -s -o /dev/null -w '%{time_starttransfer}' http://GUEST/`: the time to the first
//!   byte of a new connection to the sleeping guest (the first SYN wakes it and is replayed);
//!   after each, `last_wake_ms` from the daemon's status (from the frame that caused the
//!   wake to the guest's first answer after the replay);
//! - 50 rounds of the same curl to the awake guest;
//! - with the daemon stopped, 50 freezes and thaws of the guest's cgroup done here, timing
//!   the thaw until `cgroup.events` says `frozen 0` (v1: `freezer.state` says `THAWED`),
//!   polling without sleeping: the backend's own resume time.
//!
//! Prints median, p90 and min of each, the ratio sleeping/awake, and
//! median(sleeping) - median(awake) - median(thaw): what vmnap adds to the client's wait on
//! top of the backend. Needs root.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_api::Request;
use vmnap_api::State;
use vmnap_bench::{median, min, ms, quantile};
use vmnap_lab::{CgroupKind, GuestSpec, Lab, LabOptions};
use vmnap_wire::Mac;

const ROUNDS: usize = 50;
const GUEST: &str = "web1";

fn curl_ttfb(lab: &Lab, client: &str, url: &str) -> anyhow::Result<f64> {
    let out = lab.exec(
        client,
        &[
            "curl",
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{time_starttransfer}",
            url,
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "curl {url} failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s: f64 = text
        .trim()
        .parse()
        .with_context(|| format!("curl printed {text:?}, not a time"))?;
    Ok(s * 1000.0)
}

fn is_frozen(dir: &Path, kind: CgroupKind) -> anyhow::Result<bool> {
    Ok(match kind {
        CgroupKind::V2 => std::fs::read_to_string(dir.join("cgroup.events"))?
            .lines()
            .any(|l| l.trim() == "frozen 1"),
        _ => std::fs::read_to_string(dir.join("freezer.state"))?.trim() == "FROZEN",
    })
}

/// Sets the freezer state and spins until the kernel reports it; returns how long it took.
fn set_frozen_timed(dir: &Path, kind: CgroupKind, frozen: bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    vmnap_lab::cgroup::set_frozen(dir, kind, frozen)
        .with_context(|| format!("cannot write the freezer state of {}", dir.display()))?;
    while is_frozen(dir, kind)? != frozen {
        if start.elapsed() > Duration::from_secs(5) {
            bail!("{} did not reach frozen={frozen} within 5 s", dir.display());
        }
        std::hint::spin_loop();
    }
    Ok(start.elapsed())
}

fn stats(name: &str, xs: &[f64]) {
    println!(
        "  {name:<46} median {:>8.3} ms   p90 {:>8.3} ms   min {:>8.3} ms   (n={})",
        median(xs),
        quantile(xs, 0.9),
        min(xs),
        xs.len()
    );
}

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: bench-wake [--vmnap PATH]   (needs root)");
        return Ok(());
    }
    vmnap_bench::need_root("bench-wake")?;
    let vmnap = vmnap_bench::vmnap_path(&args)?;
    vmnap_lab::check_tools(&["ip", "nsenter", "curl"])?;

    println!("bench-wake: wake-and-serve of a namespace guest (frozen cgroup) with the real vmnap daemon");
    println!(
        "  lab: bridge br0, guest {GUEST} (HTTP on :80, own cgroup), one client; daemon {}",
        vmnap.display()
    );
    println!("  sleeping: {ROUNDS} x (vmnap sleep {GUEST}; curl from the client) -> curl's time_starttransfer of a new connection");
    println!("  awake:    {ROUNDS} x the same curl to the awake guest");
    println!("  last_wake_ms: the daemon's own figure, frame that caused the wake -> the guest's first answer after the replay");
    println!("  thaw:     {ROUNDS} x freeze+thaw of the guest's cgroup here (daemon stopped), thaw write -> kernel reports thawed");
    println!("  target (docs/design.md): wake-and-serve <= 1.5 ms p50; added on top of the backend <= 1 ms p50\n");

    let mut lab = Lab::new(LabOptions {
        workload: vec![vmnap.clone().into(), "lab-guest".into()],
        ..LabOptions::default()
    })
    .context("cannot build the lab")?;
    let guest = lab
        .add_guest(GuestSpec {
            name: GUEST.into(),
            ipv4: Ipv4Addr::new(198, 18, 0, 11),
            ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11),
            mac: [0x02, 0, 0, 0, 1, 1],
            vlan: 0,
            http_port: Some(80),
            udp_log_port: None,
        })?
        .clone();
    let client = lab
        .add_client(
            "c0",
            Ipv4Addr::new(198, 18, 1, 100),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 0x100),
            0,
        )?
        .netns
        .clone();
    let socket = lab.dir().join("vmnap.sock");
    let config = lab.dir().join("vmnap.toml");
    let log: PathBuf = lab.dir().join("vmnap.log");
    std::fs::write(
        &config,
        format!(
            "[state]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n\n[[guest]]\nname = \"{GUEST}\"\nbridge = \"{}\"\ninterface = \"{}\"\n\
             mac = \"{}\"\nipv4 = [\"{}\"]\nipv6 = [\"{}\"]\nbackend = \"cgroup\"\ncgroup = \"{}\"\n\
             wake_on = [\"tcp/80\"]\n",
            lab.dir().display(),
            socket.display(),
            lab.bridge(),
            guest.host_if,
            Mac(guest.mac),
            guest.ipv4,
            guest.ipv6,
            guest.cgroup.display()
        ),
    )?;
    let daemon = vmnap_bench::start_daemon(
        &mut lab,
        &vmnap,
        &config,
        &socket,
        &log,
        Duration::from_secs(10),
    )?;
    let url = format!("http://{}/", guest.ipv4);
    let result = measure(&lab, &client, &url, &socket, &log);
    // SIGTERM: the daemon wakes the guest and removes its port.
    lab.kill(daemon);
    let (sleeping, awake, wakes, sleep_calls, slow) = result?;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut thaws = Vec::with_capacity(ROUNDS);
    let mut freezes = Vec::with_capacity(ROUNDS);
    let kind = lab.cgroup_kind();
    for _ in 0..ROUNDS {
        freezes.push(ms(set_frozen_timed(&guest.cgroup, kind, true)?));
        std::thread::sleep(Duration::from_millis(5));
        thaws.push(ms(set_frozen_timed(&guest.cgroup, kind, false)?));
        std::thread::sleep(Duration::from_millis(5));
    }

    println!(
        "results ({} cgroups, {} CPUs):",
        match kind {
            CgroupKind::V2 => "v2",
            _ => "v1",
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    stats("first byte, sleeping guest (curl)", &sleeping);
    stats("first byte, awake guest (curl)", &awake);
    stats("last_wake_ms (daemon status)", &wakes);
    stats("cgroup thaw (backend resume alone)", &thaws);
    stats("cgroup freeze", &freezes);
    stats("vmnap sleep (API call, round trip)", &sleep_calls);
    println!();
    println!(
        "  sleeping / awake first byte (medians):        {:.2}x  (+{:.3} ms)",
        median(&sleeping) / median(&awake),
        median(&sleeping) - median(&awake)
    );
    println!(
        "  wake-and-serve vs target 1.5 ms p50:          {:.2}x of the target",
        median(&sleeping) / 1.5
    );
    println!(
        "\n  rounds whose first byte took > 100 ms (a client retransmission: the first SYN was not served): {} of {ROUNDS}",
        slow.len()
    );
    for line in &slow {
        println!("    {line}");
    }
    println!(
        "  rounds whose last_wake_ms was > 10 ms: {} of {ROUNDS}",
        wakes.iter().filter(|w| **w > 10.0).count()
    );
    let problems: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    if !problems.is_empty() {
        println!(
            "  {} warning/error line(s) in the daemon's log; the first ones:",
            problems.len()
        );
        for l in problems.iter().take(3) {
            println!("    {}", vmnap_lab::chaos::strip_ansi(l));
        }
    }
    println!();
    // What the client waits for beyond an awake guest, less the thaw: vmnap's share.
    let added = median(&sleeping) - median(&awake) - median(&thaws);
    println!(
        "  vmnap adds on top of the thaw: median(sleeping) - median(awake) - median(thaw) = {:.3} - {:.3} - {:.3} = {:.3} ms  ({:.2}x of the 1 ms target)",
        median(&sleeping),
        median(&awake),
        median(&thaws),
        added,
        added / 1.0
    );
    Ok(())
}

/// Sleeping first bytes, awake first bytes, `last_wake_ms`, sleep call times, and notes on
/// the rounds whose first byte took over 100 ms.
type Figures = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<String>);

fn measure(
    lab: &Lab,
    client: &str,
    url: &str,
    socket: &Path,
    log: &Path,
) -> anyhow::Result<Figures> {
    let fail = |e: anyhow::Error| {
        anyhow::anyhow!(
            "{e:#}\n--- daemon log ---\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    };
    // Warm up: the client's neighbour entry, the page cache, the server.
    for _ in 0..3 {
        curl_ttfb(lab, client, url).map_err(fail)?;
    }
    let mut sleeping = Vec::with_capacity(ROUNDS);
    let mut wakes = Vec::with_capacity(ROUNDS);
    let mut sleep_calls = Vec::with_capacity(ROUNDS);
    let mut slow = Vec::new();
    for round in 0..ROUNDS {
        let prev = guest_status(socket)?;
        let before = prev.wakes;
        let t = Instant::now();
        vmnap_bench::call(
            socket,
            &Request::Sleep {
                guest: GUEST.into(),
            },
        )
        .map_err(fail)?;
        sleep_calls.push(ms(t.elapsed()));
        let st = guest_status(socket)?;
        if st.state != State::Sleeping {
            bail!("round {round}: {GUEST} is {} after `vmnap sleep`", st.state);
        }
        let ttfb = curl_ttfb(lab, client, url).map_err(fail)?;
        sleeping.push(ttfb);
        // The wake finishes (MAC handed back) after a quiet moment; wait for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let st = loop {
            let st = guest_status(socket)?;
            if st.state == State::Awake && st.wakes > before {
                break st;
            }
            if Instant::now() > deadline {
                bail!("round {round}: {GUEST} did not finish waking: {st:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let wake_ms = st.last_wake_ms.context("no last_wake_ms after a wake")?;
        wakes.push(wake_ms);
        if ttfb > 100.0 {
            slow.push(format!(
                "round {round:>2}: first byte {ttfb:.1} ms, last_wake_ms {wake_ms:.3} (cause {}), {} frame(s) replayed, {} wake(s)",
                st.last_wake_cause.as_deref().unwrap_or("?"),
                st.replayed_frames - prev.replayed_frames,
                st.wakes - before,
            ));
        }
        // Let the guest settle before the next sleep, as between real requests.
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut awake = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        awake.push(curl_ttfb(lab, client, url).map_err(fail)?);
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((sleeping, awake, wakes, sleep_calls, slow))
}

fn guest_status(socket: &Path) -> anyhow::Result<vmnap_api::GuestStatus> {
    vmnap_bench::status(socket)?
        .into_iter()
        .find(|g| g.name == GUEST)
        .with_context(|| format!("{GUEST} is not in the daemon's status"))
}
