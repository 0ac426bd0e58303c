//! `bench-memory`: the resident memory of the real `vmnap` daemon with 0, 1 and N
//! registered guests (`--guests N`, default 1,000), the N awake and then all asleep; and
//! the daemon's CPU, memory and threads while idle with those N guests asleep.
//!
//! The N guests are stand-ins, not namespaces with workloads: in a lab's host namespace, N
//! veth pairs whose host ends are enslaved to bridges of 1,000 ports each (the lab's `br0`,
//! then `br1`, `br2`, ... made here; a Linux bridge takes at most 1,024 ports, and the
//! daemon adds one to each), made with one `ip -batch`,
//! N empty cgroup directories under the lab's cgroup parent (an empty cgroup freezes at
//! once), and a config with N guests (MACs `02:00:00:b1:xx:yy`, addresses in
//! 198.19.0.0/16). The daemon (`--vmnap PATH`, default: `vmnap` next to this executable) is
//! started for each case; all guests are put to sleep through the API, by `--clients C`
//! threads at once (default 1) for the N case, which prints how long that took and the most
//! threads the daemon had meanwhile (`Threads` read every 10 ms); `VmRSS` and `VmHWM` are
//! read from `/proc/PID/status`, and the daemon's private memory (pages no other process
//! maps: `Private_Clean` + `Private_Dirty` of `/proc/PID/smaps_rollup`), which the target
//! of 10 MB + 4 KiB per guest is about. The N case also prints its start-up (from spawning the
//! daemon to its API listing all N) and a reload of the same config with all N asleep, and
//! the memory after an ARP request to each guest and after that reload.
//!
//! Idle: with all N asleep, after 15 s of settling and a status of all N, the daemon's `utime` + `stime` (fields
//! 14 and 15 of `/proc/PID/stat`, in clock ticks of `sysconf(_SC_CLK_TCK)`) and its
//! threads' run time (`/proc/PID/task/*/schedstat`, ns) are read at the start and the end
//! of a window of `--idle-secs S` (default 30) seconds with nothing on the network, and
//! printed as CPU-seconds per hour and percent of one core; `VmRSS` and `Threads` (from
//! `/proc/PID/status`) at both ends show whether memory or threads grow. All N must still
//! be asleep at both ends; the wakes during the window are counted. Then SIGTERM, with all
//! N asleep: how long until the daemon, which wakes them all first, has exited, the most
//! threads it had meanwhile, and how many of the N cgroups are still frozen after it.
//!
//! Everything made here (links, cgroup directories, the daemon) is removed again, also on
//! failure; the lab removes its namespaces. Needs root.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_api::Request;
use vmnap_api::State;
use vmnap_bench::{median, ms, proc_status_number, quantile};
use vmnap_lab::{Lab, LabOptions};
use vmnap_wire::Mac;

const USAGE: &str =
    "usage: bench-memory [--vmnap PATH] [--guests N (1000)] [--clients C (1)] [--idle-secs SECONDS (30)]   (needs root)";
/// The most guests: their addresses, 198.19.0.1 onwards, stay inside 198.19.0.0/16.
const MAX_GUESTS: usize = 65_534;
/// Time between putting the last guest to sleep and the start of the idle window.
const SETTLE: Duration = Duration::from_secs(15);
/// 10 MB, in the KiB that `/proc` calls kB.
const TARGET_DAEMON_KIB: f64 = 10_000_000.0 / 1024.0;
const TARGET_PER_GUEST_KIB: f64 = 4.0;

/// Guests per bridge: a Linux bridge takes at most 1,024 ports, and the daemon adds one.
const PORTS_PER_BRIDGE: usize = 1000;
/// How long an ARP request waits for its answer before it counts as lost.
const ARP_WAIT: Duration = Duration::from_millis(100);

/// Bridge `k`'s ARP client: the interface the bench sends from (the peer of a port it
/// enslaves to the bridge), its MAC and its address (in 198.18.255.0/24, outside the
/// guests' 198.19.0.0/16).
fn arp_client(k: usize) -> (String, [u8; 6], std::net::Ipv4Addr) {
    (
        format!("vq{k}p"),
        [0x02, 0, 0, 0xcc, 0, k as u8],
        std::net::Ipv4Addr::new(198, 18, 255, k as u8 + 1),
    )
}

/// Guest `i`'s IPv4 address.
fn guest_ip(i: usize) -> std::net::Ipv4Addr {
    guest(i).3.parse().expect("a guest's address")
}

/// Asks each of the first `n` guests, one at a time, for its MAC (an ARP request from its
/// bridge's client) and times the answer; runs in the lab's host namespace. The answers'
/// round trips (ms), and how many were not answered within [`ARP_WAIT`].
fn arp_round_trips(n: usize) -> anyhow::Result<(Vec<f64>, usize)> {
    use std::os::fd::AsRawFd;
    use vmnap_host::PacketSocket;
    use vmnap_wire::vnet::VirtioNetHdr;
    let bridges = n.div_ceil(PORTS_PER_BRIDGE);
    let mut rtts = Vec::with_capacity(n);
    let mut lost = 0;
    let mut buf = vec![0u8; 70_000];
    for k in 0..bridges {
        let (interface, _, _) = arp_client(k);
        let rx = PacketSocket::open_capture(&interface)
            .with_context(|| format!("a capture socket on {interface}"))?;
        let tx = PacketSocket::open_sender(&interface)
            .with_context(|| format!("a sender on {interface}"))?;
        for i in k * PORTS_PER_BRIDGE..n.min((k + 1) * PORTS_PER_BRIDGE) {
            let (_, mac, ip) = arp_client(k);
            let request = vmnap_bench::arp_request(mac, ip, guest_ip(i));
            let sent = Instant::now();
            tx.send(&request, &VirtioNetHdr::NONE)
                .context("cannot send an ARP request")?;
            let answered = loop {
                let left = ARP_WAIT.saturating_sub(sent.elapsed());
                if left.is_zero() {
                    break false;
                }
                let mut pfd = libc::pollfd {
                    fd: rx.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd, valid for the call.
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
                let mut got = false;
                while let Ok(Some(meta)) = rx.recv(&mut buf) {
                    if !meta.outgoing
                        && vmnap_bench::is_arp_reply(&buf[..meta.len], mac, guest_ip(i))
                    {
                        got = true;
                    }
                }
                if got {
                    break true;
                }
            };
            if answered {
                rtts.push(ms(sent.elapsed()));
            } else {
                lost += 1;
            }
        }
    }
    Ok((rtts, lost))
}

/// Guest `i`: name, host-side interface, MAC, IPv4 address.
fn guest(i: usize) -> (String, String, String, String) {
    let n = i + 1;
    (
        format!("g{i:05}"),
        format!("vb{i:05}"),
        Mac([0x02, 0, 0, 0xb1, (i >> 8) as u8, i as u8]).to_string(),
        format!("198.19.{}.{}", n >> 8, n & 0xff),
    )
}

/// The lab plus what this benchmark adds to it; dropping it ends the daemon, removes the
/// cgroup directories and links made here, then the lab.
struct Bench {
    lab: Lab,
    daemon: Option<u32>,
    cgroups: Vec<PathBuf>,
    links: Vec<String>,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench")
            .field("daemon", &self.daemon)
            .field("cgroups", &self.cgroups.len())
            .field("links", &self.links.len())
            .finish()
    }
}

impl Bench {
    /// Runs `ip -n HOST -batch -` with `script` as input.
    fn ip_batch(&self, script: &str, force: bool) -> anyhow::Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", self.lab.host_netns()]);
        if force {
            cmd.arg("-force");
        }
        let mut child = cmd
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run ip -batch")?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().context("ip's stdin")?;
            stdin.write_all(script.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() && !force {
            bail!(
                "ip -batch failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// SIGTERM to the daemon, which wakes every guest it put to sleep before it exits:
    /// how long until it has exited (up to 120 s, then SIGKILL), the most threads it had
    /// meanwhile (`Threads` every 10 ms), and how many of the first `n` guests' cgroups are
    /// still frozen after it.
    fn terminate_measured(&mut self, n: usize) -> anyhow::Result<Shutdown> {
        let pid = self.daemon.take().context("no daemon to stop")?;
        let process = vmnap_host::process::Process::of_pid(pid)
            .with_context(|| format!("the daemon, PID {pid}"))?;
        let started = Instant::now();
        // SAFETY: kill(2) on the daemon this benchmark started (by PID); it is not reaped
        // yet, so the PID is still its.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let mut threads_peak = 0;
        while !process.has_exited() {
            if started.elapsed() > Duration::from_secs(120) {
                self.lab.kill(pid);
                bail!("the daemon did not exit within 120 s of SIGTERM");
            }
            threads_peak = threads_peak.max(proc_status_number(pid, "Threads").unwrap_or(0));
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed();
        self.lab.kill(pid); // reaps it
        let still_frozen = (0..n)
            .filter(|&i| {
                let dir = self.lab.cgroup_parent().join(guest(i).0);
                is_frozen(&dir, self.lab.cgroup_kind())
            })
            .count();
        Ok(Shutdown {
            took,
            threads_peak,
            still_frozen,
        })
    }

    fn stop_daemon(&mut self) {
        if let Some(pid) = self.daemon.take() {
            // SIGTERM (the daemon wakes what it put to sleep), SIGKILL after 2 s.
            self.lab.kill(pid);
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop_daemon();
        for dir in self.cgroups.drain(..).rev() {
            let _ = vmnap_lab::cgroup::set_frozen(&dir, self.lab.cgroup_kind(), false);
            if let Err(e) = std::fs::remove_dir(&dir) {
                eprintln!("bench-memory: cannot remove {}: {e}", dir.display());
            }
        }
        if !self.links.is_empty() {
            let script: String = self
                .links
                .iter()
                .map(|l| format!("link del {l}\n"))
                .collect();
            if let Err(e) = self.ip_batch(&script, true) {
                eprintln!("bench-memory: cannot remove the veth pairs: {e:#}");
            }
            self.links.clear();
        }
        // Then the lab: its namespaces, cgroup parent and directory.
    }
}

#[derive(Debug, Clone, Copy)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
    anon_kb: u64,
    file_kb: u64,
    /// Pages no other process maps (`Private_Clean` + `Private_Dirty` of `smaps_rollup`).
    private_kb: u64,
    fds: usize,
    threads: u64,
}

/// `Private_Clean` + `Private_Dirty` of `/proc/PID/smaps_rollup`, in KiB.
fn private_kb(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok(field("Private_Clean:")? + field("Private_Dirty:")?)
}

fn mem(pid: u32) -> anyhow::Result<Mem> {
    Ok(Mem {
        rss_kb: proc_status_number(pid, "VmRSS")?,
        hwm_kb: proc_status_number(pid, "VmHWM")?,
        anon_kb: proc_status_number(pid, "RssAnon")?,
        file_kb: proc_status_number(pid, "RssFile")?,
        private_kb: private_kb(pid)?,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(Iterator::count)
            .unwrap_or(0),
        threads: proc_status_number(pid, "Threads")?,
    })
}

#[derive(Debug)]
struct Opts {
    vmnap: PathBuf,
    guests: usize,
    clients: usize,
    idle_secs: u64,
}

fn parse_opts(args: &[String]) -> anyhow::Result<Opts> {
    const WITH_VALUE: &[&str] = &["--vmnap", "--guests", "--clients", "--idle-secs"];
    let mut i = 0;
    while i < args.len() {
        if WITH_VALUE.contains(&args[i].as_str()) {
            i += 2;
        } else {
            bail!("unknown argument {:?}\n{USAGE}", args[i]);
        }
    }
    let opts = Opts {
        vmnap: vmnap_bench::vmnap_path(args)?,
        guests: vmnap_bench::flag(args, "--guests", 1000, USAGE)?,
        clients: vmnap_bench::flag(args, "--clients", 1, USAGE)?,
        idle_secs: vmnap_bench::flag(args, "--idle-secs", 30, USAGE)?,
    };
    if !(2..=MAX_GUESTS).contains(&opts.guests) {
        bail!("--guests must be 2 to {MAX_GUESTS} (the 1-guest case is measured anyway; addresses are in 198.19.0.0/16)");
    }
    if !(1..=64).contains(&opts.clients) {
        bail!("--clients must be 1 to 64");
    }
    if opts.idle_secs == 0 {
        bail!("--idle-secs must be at least 1");
    }
    Ok(opts)
}

/// The daemon over a quiet window with every guest asleep.
#[derive(Debug)]
struct Idle {
    window_s: f64,
    /// `utime` + `stime` used in the window, in seconds (clock-tick resolution).
    cpu_s: f64,
    /// Run time of its threads in the window (`schedstat`, ns resolution), in seconds.
    sched_s: f64,
    start: Mem,
    end: Mem,
    wakes: u64,
}

/// Every guest's wakes so far, summed; an error unless all `n` are asleep.
fn wakes_all_asleep(socket: &Path, n: usize) -> anyhow::Result<u64> {
    let all = vmnap_bench::status(socket)?;
    if let Some(g) = all.iter().find(|g| g.state != State::Sleeping) {
        bail!("{} is {}, not sleeping", g.name, g.state);
    }
    if all.len() != n {
        bail!("the daemon reports {} guests, not {n}", all.len());
    }
    Ok(all.iter().map(|g| g.wakes).sum())
}

/// Waits [`SETTLE`], then reads the daemon's CPU time and memory at the start and the end
/// of `window` with nothing on the network. The status calls that check the guests are
/// made outside the window.
fn idle(pid: u32, socket: &Path, n: usize, window: Duration) -> anyhow::Result<Idle> {
    std::thread::sleep(SETTLE);
    let wakes0 = wakes_all_asleep(socket, n)?;
    let t0 = Instant::now();
    let (c0, s0, start) = (
        vmnap_bench::proc_cpu_seconds(pid)?,
        vmnap_bench::proc_sched_seconds(pid)?,
        mem(pid)?,
    );
    std::thread::sleep(window);
    let (c1, s1, end) = (
        vmnap_bench::proc_cpu_seconds(pid)?,
        vmnap_bench::proc_sched_seconds(pid)?,
        mem(pid)?,
    );
    let window_s = t0.elapsed().as_secs_f64();
    let wakes1 = wakes_all_asleep(socket, n)?;
    Ok(Idle {
        window_s,
        cpu_s: c1 - c0,
        sched_s: s1 - s0,
        start,
        end,
        wakes: wakes1 - wakes0,
    })
}

/// Clock ticks per second, the unit of `utime` and `stime`.
fn clock_ticks() -> libc::c_long {
    // SAFETY: sysconf(3) has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
}

/// A SIGTERM with every guest asleep.
#[derive(Debug, Clone, Copy)]
struct Shutdown {
    took: Duration,
    threads_peak: u64,
    still_frozen: usize,
}

/// Whether the cgroup at `dir` is frozen (`cgroup.events` of v2, `freezer.state` of v1).
fn is_frozen(dir: &Path, kind: vmnap_lab::CgroupKind) -> bool {
    match kind {
        vmnap_lab::CgroupKind::V2 => std::fs::read_to_string(dir.join("cgroup.events"))
            .is_ok_and(|t| t.lines().any(|l| l == "frozen 1")),
        vmnap_lab::CgroupKind::V1 => {
            std::fs::read_to_string(dir.join("freezer.state")).is_ok_and(|t| t.trim() != "THAWED")
        }
    }
}

/// One run of the daemon: its memory with all guests registered (awake) and all asleep,
/// the `vmnap sleep` round trips in ms, and the idle window if one was asked for.
#[derive(Debug)]
struct Case {
    awake: Mem,
    asleep: Mem,
    /// From spawning the daemon to its API listing every guest.
    started_in: Duration,
    /// A reload of the same config, with all guests asleep.
    reload_in: Duration,
    calls: Vec<f64>,
    /// From the first `vmnap sleep` to the last answer.
    all_asleep_in: Duration,
    /// The most threads the daemon had meanwhile (sampled every 10 ms).
    threads_peak: u64,
    /// Given an idle window: each sleeping guest's ARP round trip (ms), and the unanswered.
    arp: Option<(Vec<f64>, usize)>,
    /// Given an idle window: the memory after the ARP round trips, and after the reload.
    after_arp: Option<Mem>,
    after_reload: Option<Mem>,
    idle: Option<Idle>,
    /// Given an idle window: the SIGTERM after it.
    shutdown: Option<Shutdown>,
}

/// The bridge of guest `i`, in the lab's host namespace: the lab's own for the first
/// [`PORTS_PER_BRIDGE`], then `br1`, `br2`, ... made here.
fn bridge_of(lab: &Lab, i: usize) -> String {
    match i / PORTS_PER_BRIDGE {
        0 => lab.bridge().to_owned(),
        k => format!("br{k}"),
    }
}

fn write_config(path: &Path, socket: &Path, lab: &Lab, n: usize) -> anyhow::Result<()> {
    let parent = lab.cgroup_parent();
    // The journal goes next to the socket, never in the host's /var/lib/vmnap.
    let dir = socket.parent().unwrap_or(Path::new("/tmp"));
    let mut text = format!(
        "[state]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n",
        dir.display(),
        socket.display()
    );
    for i in 0..n {
        let (name, interface, mac, ipv4) = guest(i);
        let bridge = bridge_of(lab, i);
        write!(
            text,
            "\n[[guest]]\nname = \"{name}\"\nbridge = \"{bridge}\"\ninterface = \"{interface}\"\n\
             mac = \"{mac}\"\nipv4 = [\"{ipv4}\"]\nbackend = \"cgroup\"\ncgroup = \"{}\"\n\
             wake_on = [\"tcp/80\"]\n",
            parent.join(&name).display()
        )?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Starts the daemon on a config with the first `n` guests, puts them all to sleep, reads
/// its memory before and after, then, given an `idle` window, its CPU and memory over it;
/// stops it.
fn run_case(
    b: &mut Bench,
    vmnap: &Path,
    n: usize,
    clients: usize,
    idle_window: Option<Duration>,
) -> anyhow::Result<Case> {
    let dir = b.lab.dir().to_path_buf();
    let socket = dir.join(format!("vmnap-{n}.sock"));
    let config = dir.join(format!("vmnap-{n}.toml"));
    let log = dir.join(format!("vmnap-{n}.log"));
    write_config(&config, &socket, &b.lab, n)?;
    let spawned = Instant::now();
    let pid = vmnap_bench::start_daemon(
        &mut b.lab,
        vmnap,
        &config,
        &socket,
        &log,
        Duration::from_secs(60),
    )?;
    b.daemon = Some(pid);
    // The socket is bound before the guests are set up; the API answers once they are.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if vmnap_bench::status(&socket).is_ok_and(|st| st.len() == n) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the daemon did not list its {n} guests within 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let started_in = spawned.elapsed();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "vmnap" {
        bail!("PID {pid} is {:?}, not the vmnap daemon", comm.trim());
    }
    std::thread::sleep(Duration::from_millis(300));
    let awake = mem(pid)?;
    // `clients` threads at once, guest i by client i % clients; a sampler reads the
    // daemon's threads meanwhile.
    let sampling = std::sync::atomic::AtomicBool::new(true);
    let started = Instant::now();
    let (calls, threads_peak, all_asleep_in) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(proc_status_number(pid, "Threads").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let socket = &socket;
                scope.spawn(move || -> anyhow::Result<Vec<f64>> {
                    let mut calls = Vec::new();
                    for i in (c..n).step_by(clients) {
                        let t = Instant::now();
                        vmnap_bench::call(socket, &Request::Sleep { guest: guest(i).0 })?;
                        calls.push(ms(t.elapsed()));
                    }
                    Ok(calls)
                })
            })
            .collect();
        let mut calls = Vec::with_capacity(n);
        let mut failed = None;
        for w in workers {
            match w.join() {
                Ok(Ok(c)) => calls.extend(c),
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some(anyhow::anyhow!("a client thread panicked")),
            }
        }
        let took = started.elapsed();
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().unwrap_or(0);
        match failed {
            Some(e) => Err(e),
            None => Ok((calls, peak, took)),
        }
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n--- daemon log ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    let sleeping = vmnap_bench::status(&socket)?
        .iter()
        .filter(|g| g.state == State::Sleeping)
        .count();
    if sleeping != n {
        bail!("{sleeping} of {n} guests are asleep after `vmnap sleep` for each");
    }
    std::thread::sleep(Duration::from_millis(300));
    let asleep = mem(pid)?;
    // Every sleeping guest asked for its MAC once, through its bridge, one at a time.
    let arp = if idle_window.is_some() {
        let netns = b.lab.host_netns().to_owned();
        Some(
            vmnap_bench::in_netns(&netns, move || arp_round_trips(n))
                .join()
                .map_err(|_| anyhow::anyhow!("the ARP client panicked"))???,
        )
    } else {
        None
    };
    let after_arp = idle_window.map(|_| mem(pid)).transpose()?;
    // A reload of the same file: every guest is compared and left as it is, asleep.
    let t = Instant::now();
    let reloaded = vmnap_api::reload(&socket).context("the reload")?;
    let reload_in = t.elapsed();
    if reloaded.unchanged != n {
        bail!("a reload of the same config changed something: {reloaded:?}");
    }
    let after_reload = idle_window.map(|_| mem(pid)).transpose()?;
    let idle = idle_window.map(|w| idle(pid, &socket, n, w)).transpose()?;
    let shutdown = if idle.is_some() {
        Some(b.terminate_measured(n)?)
    } else {
        b.stop_daemon();
        None
    };
    Ok(Case {
        awake,
        asleep,
        started_in,
        reload_in,
        calls,
        all_asleep_in,
        threads_peak,
        arp,
        after_arp,
        after_reload,
        idle,
        shutdown,
    })
}

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    vmnap_bench::need_root("bench-memory")?;
    let opts = parse_opts(&args)?;
    let (vmnap, n) = (opts.vmnap, opts.guests);
    vmnap_lab::check_tools(&["ip", "nsenter"])?;
    println!(
        "bench-memory: resident memory of the vmnap daemon (VmRSS, VmHWM from /proc/PID/status), and its CPU while idle"
    );
    println!("  cases: 0 guests; 1 guest; {n} guests, read once all are registered (awake) and once all are asleep");
    println!("  guests are stand-ins: veth pairs on the lab bridge (host ends enslaved) and empty cgroups, put to sleep through the API");
    println!(
        "  idle: with the {n} asleep, {} s quiet, then utime+stime (/proc/PID/stat, {} Hz ticks), thread run time (schedstat, ns),",
        SETTLE.as_secs(),
        clock_ticks()
    );
    println!(
        "        VmRSS and Threads (/proc/PID/status) at the start and the end of a {} s window with no traffic; default [idle] settings",
        opts.idle_secs
    );
    println!(
        "  target (docs/design.md): private memory <= 10 MB + 4 KiB per sleeping guest, besides its queue\n"
    );

    let lab = Lab::new(LabOptions {
        workload: vec![vmnap.clone().into(), "lab-guest".into()],
        ..LabOptions::default()
    })
    .context("cannot build the lab")?;
    let mut b = Bench {
        lab,
        daemon: None,
        cgroups: Vec::new(),
        links: Vec::new(),
    };
    let t = Instant::now();
    let mut script = String::new();
    let bridges = n.div_ceil(PORTS_PER_BRIDGE);
    for k in 1..bridges {
        writeln!(script, "link add br{k} type bridge")?;
        writeln!(script, "link set br{k} up")?;
        b.links.push(format!("br{k}"));
    }
    for k in 0..bridges {
        let (client, mac, _) = arp_client(k);
        writeln!(
            script,
            "link add vq{k} type veth peer name {client} address {}",
            Mac(mac)
        )?;
        b.links.push(format!("vq{k}"));
    }
    for i in 0..n {
        let (_, interface, mac, _) = guest(i);
        writeln!(
            script,
            "link add {interface} address {mac} type veth peer name {interface}p"
        )?;
        b.links.push(interface);
    }
    b.ip_batch(&script, false)?;
    let mut script = String::new();
    for i in 0..n {
        let (_, interface, _, _) = guest(i);
        writeln!(
            script,
            "link set {interface} master {}",
            bridge_of(&b.lab, i)
        )?;
        if i % PORTS_PER_BRIDGE == 0 {
            let (k, bridge) = (i / PORTS_PER_BRIDGE, bridge_of(&b.lab, i));
            writeln!(script, "link set vq{k} master {bridge}")?;
            writeln!(script, "link set vq{k} up")?;
            writeln!(script, "link set {} up", arp_client(k).0)?;
        }
        writeln!(script, "link set {interface}p up")?;
        writeln!(script, "link set {interface} up")?;
    }
    b.ip_batch(&script, false)?;
    for i in 0..n {
        let dir = b.lab.cgroup_parent().join(guest(i).0);
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        b.cgroups.push(dir);
    }
    println!(
        "  set-up: {n} veth pairs on {bridges} bridge(s) and {n} cgroups in {:.1} s\n",
        t.elapsed().as_secs_f64()
    );

    let zero = run_case(&mut b, &vmnap, 0, 1, None)?.awake;
    let one = run_case(&mut b, &vmnap, 1, 1, None)?.asleep;
    let window = Duration::from_secs(opts.idle_secs);
    let mut many = run_case(&mut b, &vmnap, n, opts.clients, Some(window))?;
    let idle = many.idle.context("the idle window was not measured")?;
    let (arp, arp_lost) = many
        .arp
        .take()
        .context("the ARP round trips were not measured")?;
    let shutdown = many.shutdown.context("the SIGTERM was not measured")?;
    let after_arp = many
        .after_arp
        .context("no memory after the ARP round trips")?;
    let after_reload = many.after_reload.context("no memory after the reload")?;
    let (many_awake, calls, all_asleep_in, threads_peak, started_in, reload_in, many) = (
        many.awake,
        many.calls,
        many.all_asleep_in,
        many.threads_peak,
        many.started_in,
        many.reload_in,
        many.asleep,
    );

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "  {:<24} {:>10} {:>10} {:>10} {:>10} {:>10} {:>6} {:>8}",
        "case", "VmRSS", "VmHWM", "RssAnon", "RssFile", "private", "fds", "threads"
    );
    for (name, m) in [
        ("0 guests".to_string(), zero),
        ("1 guest, asleep".to_string(), one),
        (format!("{n} guests, awake"), many_awake),
        (format!("{n} guests, asleep"), many),
        (format!("{n} asleep, ARP to each"), after_arp),
        (format!("{n} asleep, reloaded"), after_reload),
        (format!("{n} asleep, idle start"), idle.start),
        (format!("{n} asleep, idle end"), idle.end),
    ] {
        println!(
            "  {name:<24} {:>6.2} MiB {:>6.2} MiB {:>6.2} MiB {:>6.2} MiB {:>6.2} MiB {:>6} {:>8}",
            mib(m.rss_kb),
            mib(m.hwm_kb),
            mib(m.anon_kb),
            mib(m.file_kb),
            mib(m.private_kb),
            m.fds,
            m.threads
        );
    }
    let per_guest = (many.rss_kb as f64 - one.rss_kb as f64) / (n - 1) as f64;
    let per_sleep = (many.rss_kb as f64 - many_awake.rss_kb as f64) / n as f64;
    println!();
    println!(
        "  daemon with {n} sleeping guests vs 10 MB target: {:.2}x (VmRSS), {:.2}x (VmHWM)",
        many.rss_kb as f64 / TARGET_DAEMON_KIB,
        many.hwm_kb as f64 / TARGET_DAEMON_KIB
    );
    println!(
        "  per sleeping guest, (RSS {n} asleep - RSS 1 asleep) / {}: {per_guest:.2} KiB ({:.2}x of 4 KiB)",
        n - 1,
        per_guest / TARGET_PER_GUEST_KIB
    );
    println!(
        "  of which going to sleep, (RSS {n} asleep - RSS {n} awake) / {n}: {per_sleep:.2} KiB"
    );
    let budget = TARGET_DAEMON_KIB + TARGET_PER_GUEST_KIB * n as f64;
    println!(
        "  private memory with {n} asleep, once idle: {:.2} MiB vs 10 MB + 4 KiB x {n} = {:.2} MiB: {:.2}x",
        mib(idle.end.private_kb),
        budget / 1024.0,
        idle.end.private_kb as f64 / budget
    );
    // Backend threads end after 10 s without a call; what stays is the guests' own state.
    let settled = (idle.end.rss_kb as f64 - one.rss_kb as f64) / (n - 1) as f64;
    let settled_anon = (idle.end.anon_kb as f64 - one.anon_kb as f64) / (n - 1) as f64;
    println!(
        "  per sleeping guest once idle (backend threads ended), (RSS idle end - RSS 1 asleep) / {}: {settled:.2} KiB ({:.2}x of 4 KiB); RssAnon alone {settled_anon:.2} KiB",
        n - 1,
        settled / TARGET_PER_GUEST_KIB
    );
    println!(
        "  `vmnap sleep` round trip over the API with {n} guests, {} client(s) at once: median {:.3} ms, p90 {:.3} ms; all {n} asleep in {:.2} s; the daemon's threads meanwhile: at most {threads_peak}",
        opts.clients,
        median(&calls),
        quantile(&calls, 0.9),
        all_asleep_in.as_secs_f64()
    );

    println!(
        "  start-up with {n} guests (spawn to the API listing them all): {:.2} s; a reload of the same config with all {n} asleep: {:.3} s",
        started_in.as_secs_f64(),
        reload_in.as_secs_f64()
    );
    println!(
        "  ARP for each of the {n} sleeping guests, one at a time, from a port on its bridge: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {arp_lost} not answered within {} ms (target: p99 <= 1 ms)",
        median(&arp),
        quantile(&arp, 0.99),
        arp.iter().copied().fold(0.0, f64::max),
        ARP_WAIT.as_millis()
    );

    let per_hour = 3600.0 / idle.window_s;
    println!();
    println!(
        "  idle with {n} sleeping guests: window {:.1} s; wakes during it: {}",
        idle.window_s, idle.wakes
    );
    println!(
        "  daemon, utime+stime: {:.3} s in the window = {:.2} CPU-s per hour = {:.4}% of one core",
        idle.cpu_s,
        idle.cpu_s * per_hour,
        100.0 * idle.cpu_s / idle.window_s
    );
    println!(
        "  daemon, schedstat:   {:.4} s in the window = {:.2} CPU-s per hour = {:.4}% of one core",
        idle.sched_s,
        idle.sched_s * per_hour,
        100.0 * idle.sched_s / idle.window_s
    );
    println!(
        "  daemon VmRSS: {:.2} MiB at the start, {:.2} MiB at the end ({:+} KiB); threads: {} at the start, {} at the end",
        mib(idle.start.rss_kb),
        mib(idle.end.rss_kb),
        idle.end.rss_kb as i64 - idle.start.rss_kb as i64,
        idle.start.threads,
        idle.end.threads
    );
    println!();
    println!(
        "  SIGTERM with {n} asleep (the daemon wakes them all, then exits): gone in {:.2} s; its threads meanwhile: at most {}; cgroups still frozen after it: {} of {n}",
        shutdown.took.as_secs_f64(),
        shutdown.threads_peak,
        shutdown.still_frozen
    );
    println!("  (stand-ins never answer the probes that fence a replay: each wake waits out its probes, 4 x 50 ms, all of them at once)");
    drop(b);
    Ok(())
}
