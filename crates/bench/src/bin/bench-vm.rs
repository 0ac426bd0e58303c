//! `bench-vm`: the figures of real QEMU guests (TCG, the project's image) with the real
//! daemon: wake-and-serve under libvirt `pause`, libvirt `save` and QMP `pause`, each beside
//! the backend's own resume time; the host memory a `save`-mode sleep frees; and the CPU the
//! daemon uses per sleeping guest per hour of idleness.
//!
//! Builds a lab (bridge `br0` in a namespace of its own, a libvirtd of its own, one client
//! `c0`), defines libvirt domains `d01` (slept in `pause` mode) and `d02` (`save` mode),
//! boots a QEMU guest `q01` driven over QMP (with a second QMP socket for this benchmark),
//! and runs the real `vmnap` daemon on the bridge (`--vmnap PATH`, default: `vmnap` next to
//! this executable). Then:
//!
//! 1. wake-and-serve, per guest: `--rounds` (30) times `vmnap sleep` through the API, then
//!    curl's `time_starttransfer` of a new connection from the client (the SYN wakes the
//!    guest and is replayed), then `last_wake_ms` from the daemon's status; the same number
//!    of curls to the awake guest; then, with the daemon stopped, the backend alone: the
//!    same calls vmnap makes (`virDomainSuspend`/`virDomainResume`, `virDomainManagedSave`
//!    then `virDomainCreate` from the managed save, both through `vmnap-libvirt`; QMP `stop`
//!    / `cont` on the second QMP socket), timing the resume call and then a curl's first
//!    byte. SYNs are counted on the client with tcpdump; a first byte over 900 ms means the
//!    client had to retransmit its SYN (initial RTO 1 s).
//! 2. memory, `--memory-rounds` (5) times: `d02`'s QEMU `VmRSS` and the host's
//!    `MemAvailable`/`MemFree` before `vmnap sleep d02`, and once QEMU has exited and the
//!    host has settled for a second, `MemAvailable`/`MemFree` again; then a curl wakes it.
//! 3. CPU while idle: `--idle-guests` (10) libvirt domains in `pause` mode (`d03`... are
//!    defined now), all put to sleep, and after 5 s of settling the daemon's `utime+stime`
//!    (`/proc/PID/stat`) and run time (`schedstat` of its threads, ns) over
//!    `--idle-window` (60) seconds with nothing on the network; the lab libvirtd's too.
//!
//! Prints medians, p90 and min; asserts nothing about time. Needs root, QEMU, libvirt,
//! curl and tcpdump.

use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_api::State;
use vmnap_api::{GuestStatus, Request};
use vmnap_bench::{median, meminfo_kb, min, ms, proc_status_number, quantile};
use vmnap_lab::libvirt::DomainSpec;
use vmnap_lab::qemu::{GuestImage, VmSpec};
use vmnap_lab::{Lab, LabOptions};
use vmnap_libvirt::LibvirtDomain;
use vmnap_wire::Mac;

/// A first byte later than this means the client retransmitted its SYN (initial RTO 1 s).
const RETRANSMIT_MS: f64 = 900.0;

const USAGE: &str = "usage: bench-vm [--vmnap PATH] [--rounds N (30)] [--memory-rounds N (5)] \
[--idle-guests N (10)] [--idle-window SECONDS (60)]   (needs root)";

#[derive(Debug)]
struct Opts {
    vmnap: PathBuf,
    rounds: usize,
    memory_rounds: usize,
    idle_guests: usize,
    idle_window: u64,
}

fn parse_opts(args: &[String]) -> anyhow::Result<Opts> {
    const WITH_VALUE: &[&str] = &[
        "--vmnap",
        "--rounds",
        "--memory-rounds",
        "--idle-guests",
        "--idle-window",
    ];
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
        rounds: vmnap_bench::flag(args, "--rounds", 30, USAGE)?,
        memory_rounds: vmnap_bench::flag(args, "--memory-rounds", 5, USAGE)?,
        idle_guests: vmnap_bench::flag(args, "--idle-guests", 10, USAGE)?,
        idle_window: vmnap_bench::flag(args, "--idle-window", 60, USAGE)?,
    };
    if opts.rounds == 0 || opts.memory_rounds == 0 || opts.idle_window == 0 {
        bail!("--rounds, --memory-rounds and --idle-window must be at least 1");
    }
    if !(2..=60).contains(&opts.idle_guests) {
        bail!("--idle-guests must be 2 to 60 (d01 and d02 are two of them)");
    }
    Ok(opts)
}

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}

/// How a guest of the benchmark sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LibvirtPause,
    LibvirtSave,
    QmpPause,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::LibvirtPause => "libvirt pause",
            Kind::LibvirtSave => "libvirt save",
            Kind::QmpPause => "QMP pause",
        }
    }

    fn backend_calls(self) -> &'static str {
        match self {
            Kind::LibvirtPause => "virDomainSuspend / virDomainResume",
            Kind::LibvirtSave => "virDomainManagedSave / virDomainCreate from the managed save",
            Kind::QmpPause => "QMP stop / cont (second QMP socket)",
        }
    }
}

#[derive(Debug, Clone)]
struct Target {
    kind: Kind,
    name: String,
    ip: Ipv4Addr,
}

impl Target {
    fn url(&self) -> String {
        format!("http://{}/", self.ip)
    }
}

/// The lab, the daemon's files, and the daemon if it runs.
struct Bench {
    lab: Lab,
    vmnap: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    daemon: Option<u32>,
    client_ns: String,
    client_if: String,
    uri: String,
    /// Warning and error lines of every daemon run so far.
    problems: Vec<String>,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench")
            .field("lab", &self.lab.dir())
            .field("daemon", &self.daemon)
            .finish_non_exhaustive()
    }
}

impl Bench {
    fn start_daemon(&mut self, config: &str) -> anyhow::Result<u32> {
        self.stop_daemon();
        std::fs::write(&self.config, config)
            .with_context(|| format!("cannot write {}", self.config.display()))?;
        let pid = vmnap_bench::start_daemon(
            &mut self.lab,
            &self.vmnap,
            &self.config,
            &self.socket,
            &self.log,
            Duration::from_secs(20),
        )?;
        self.daemon = Some(pid);
        Ok(pid)
    }

    fn stop_daemon(&mut self) {
        if let Some(pid) = self.daemon.take() {
            // SIGTERM: the daemon wakes what it put to sleep and removes its port.
            self.lab.kill(pid);
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            self.problems.extend(
                log.lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .map(vmnap_lab::chaos::strip_ansi),
            );
        }
    }

    /// An error with the daemon's log appended.
    fn fail(&self, e: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "{e:#}\n--- daemon log ---\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn curl_ttfb(&self, url: &str) -> anyhow::Result<f64> {
        let out = self.lab.exec(
            &self.client_ns,
            &[
                "curl",
                "-s",
                "--max-time",
                "20",
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

    /// Runs `f` with tcpdump on the client counting the SYNs it sends to `ip` port 80.
    fn count_syns<T>(
        &self,
        ip: Ipv4Addr,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<(T, usize)> {
        let capture = self.lab.capture(
            &self.client_ns,
            &self.client_if,
            &format!("dst host {ip} and tcp dst port 80 and tcp[tcpflags] & tcp-syn != 0"),
        )?;
        let result = f();
        let lines = capture.stop()?;
        let syns = lines.iter().filter(|l| l.contains("Flags [S]")).count();
        Ok((result?, syns))
    }

    fn status(&self, guest: &str) -> anyhow::Result<GuestStatus> {
        vmnap_bench::status(&self.socket)?
            .into_iter()
            .find(|g| g.name == guest)
            .with_context(|| format!("{guest} is not in the daemon's status"))
    }

    fn sleep_guest(&self, guest: &str) -> anyhow::Result<f64> {
        let t = Instant::now();
        vmnap_bench::call(
            &self.socket,
            &Request::Sleep {
                guest: guest.into(),
            },
        )?;
        let took = ms(t.elapsed());
        let st = self.status(guest)?;
        if st.state != State::Sleeping {
            bail!("{guest} is {} after `vmnap sleep`", st.state);
        }
        Ok(took)
    }

    /// Waits until the daemon reports a wake of `guest` beyond `before` finished.
    fn wait_awake(&self, guest: &str, before: u64) -> anyhow::Result<GuestStatus> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.status(guest)?;
            if st.state == State::Awake && st.wakes > before {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("{guest} did not finish waking: {st:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Figures of the rounds through vmnap.
#[derive(Debug, Default)]
struct VmnapRounds {
    ttfb: Vec<f64>,
    last_wake: Vec<f64>,
    sleep_call: Vec<f64>,
    slow: Vec<String>,
    syns: usize,
    awake: Vec<f64>,
    awake_syns: usize,
}

fn vmnap_rounds(b: &Bench, t: &Target, rounds: usize) -> anyhow::Result<VmnapRounds> {
    let url = t.url();
    for _ in 0..3 {
        b.curl_ttfb(&url).map_err(|e| b.fail(e))?;
    }
    let mut r = VmnapRounds::default();
    let ((), syns) = b.count_syns(t.ip, || {
        for round in 0..rounds {
            let prev = b.status(&t.name)?;
            r.sleep_call.push(
                b.sleep_guest(&t.name)
                    .with_context(|| format!("round {round}"))?,
            );
            let ttfb = b.curl_ttfb(&url)?;
            r.ttfb.push(ttfb);
            let st = b.wait_awake(&t.name, prev.wakes)?;
            let wake_ms = st.last_wake_ms.context("no last_wake_ms after a wake")?;
            r.last_wake.push(wake_ms);
            if ttfb > RETRANSMIT_MS {
                r.slow.push(format!(
                    "round {round:>2}: first byte {ttfb:.1} ms, last_wake_ms {wake_ms:.1} (cause {}), {} frame(s) replayed",
                    st.last_wake_cause.as_deref().unwrap_or("?"),
                    st.replayed_frames - prev.replayed_frames,
                ));
            }
            // Let the guest settle before the next sleep, as between real requests.
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
    .map_err(|e| b.fail(e))?;
    r.syns = syns;
    let (awake, syns) = b
        .count_syns(t.ip, || {
            let mut v = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                v.push(b.curl_ttfb(&url)?);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(v)
        })
        .map_err(|e| b.fail(e))?;
    r.awake = awake;
    r.awake_syns = syns;
    Ok(r)
}

/// A backend driven here, without vmnap.
#[derive(Debug)]
enum Direct {
    Libvirt(Kind, LibvirtDomain),
    Qmp(PathBuf),
}

impl Direct {
    fn suspend(&mut self) -> anyhow::Result<()> {
        match self {
            Direct::Libvirt(Kind::LibvirtSave, d) => d.managed_save()?,
            Direct::Libvirt(_, d) => d.suspend()?,
            Direct::Qmp(socket) => {
                vmnap_lab::qemu::qmp_execute(socket, "stop")?;
            }
        }
        Ok(())
    }

    fn resume(&mut self) -> anyhow::Result<()> {
        match self {
            Direct::Libvirt(Kind::LibvirtSave, d) => d.start()?,
            Direct::Libvirt(_, d) => d.resume()?,
            Direct::Qmp(socket) => {
                vmnap_lab::qemu::qmp_execute(socket, "cont")?;
            }
        }
        Ok(())
    }
}

/// Figures of the backend alone.
#[derive(Debug, Default)]
struct DirectRounds {
    suspend: Vec<f64>,
    resume: Vec<f64>,
    ttfb: Vec<f64>,
    serve: Vec<f64>,
    syns: usize,
}

fn direct_rounds(
    b: &Bench,
    t: &Target,
    backend: &mut Direct,
    rounds: usize,
) -> anyhow::Result<DirectRounds> {
    let url = t.url();
    b.curl_ttfb(&url)?;
    let mut r = DirectRounds::default();
    let ((), syns) = b.count_syns(t.ip, || {
        for round in 0..rounds {
            let s = Instant::now();
            backend
                .suspend()
                .with_context(|| format!("round {round}: suspend {}", t.name))?;
            r.suspend.push(ms(s.elapsed()));
            std::thread::sleep(Duration::from_millis(50));
            let s = Instant::now();
            backend
                .resume()
                .with_context(|| format!("round {round}: resume {}", t.name))?;
            let resume = ms(s.elapsed());
            let ttfb = b.curl_ttfb(&url)?;
            r.resume.push(resume);
            r.ttfb.push(ttfb);
            r.serve.push(resume + ttfb);
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })?;
    r.syns = syns;
    Ok(r)
}

fn stats(name: &str, xs: &[f64]) {
    println!(
        "    {name:<52} median {:>9.2} ms   p90 {:>9.2} ms   min {:>9.2} ms   (n={})",
        median(xs),
        quantile(xs, 0.9),
        min(xs),
        xs.len()
    );
}

fn slow_count(xs: &[f64]) -> usize {
    xs.iter().filter(|x| **x > RETRANSMIT_MS).count()
}

fn first_line(argv: &[&str]) -> String {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    vmnap_bench::need_root("bench-vm")?;
    let opts = parse_opts(&args)?;
    vmnap_lab::check_tools(&["ip", "nsenter", "curl", "tcpdump", "virsh"])?;
    vmnap_lab::libvirt::check_libvirt_tools()?;
    let started = Instant::now();

    println!("bench-vm: real QEMU guests (TCG, the project's image: guest/build-image.sh) with the real vmnap daemon");
    println!(
        "  host: {} CPUs, {} MiB RAM; {}; {}; daemon {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        meminfo_kb("MemTotal")? / 1024,
        first_line(&["qemu-system-x86_64", "--version"]),
        first_line(&["libvirtd", "--version"]),
        opts.vmnap.display()
    );
    println!(
        "  lab: bridge br0 in a namespace of its own, a libvirtd of its own, client c0 (198.18.1.100); guests 128 MiB, 1 vCPU, q35, TCG"
    );
    println!(
        "  options: --rounds {} --memory-rounds {} --idle-guests {} --idle-window {}",
        opts.rounds, opts.memory_rounds, opts.idle_guests, opts.idle_window
    );

    eprintln!(
        "bench-vm: building the lab and booting d01, d02 (libvirt) and q01 (QMP) under TCG..."
    );
    let mut lab = Lab::new(LabOptions {
        workload: vec![OsString::from(&opts.vmnap), "lab-guest".into()],
        ..LabOptions::default()
    })
    .context("cannot build the lab")?;
    let image = GuestImage::build().context("cannot build the guest image")?;
    let mut boot_times = Vec::new();
    for n in 1..=2u8 {
        let d = lab.define_domain(domain_spec(n, &image))?;
        boot_times.push(ms(d.boot_time));
    }
    let test_qmp = lab.dir().join("q01-test.qmp");
    let mut spec = VmSpec::new(
        "q01",
        Ipv4Addr::new(198, 18, 0, 21),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x21),
        image.clone(),
    );
    spec.extra_args = vec![
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", test_qmp.display()).into(),
    ];
    let vm = lab.add_vm(spec)?.clone();
    boot_times.push(ms(vm.boot_time));
    let client = lab
        .add_client(
            "c0",
            Ipv4Addr::new(198, 18, 1, 100),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 0x100),
            0,
        )?
        .clone();
    let uri = lab
        .libvirtd()
        .context("libvirtd was started by define_domain")?
        .uri()
        .to_owned();
    let mut b = Bench {
        socket: lab.dir().join("vmnap.sock"),
        config: lab.dir().join("vmnap.toml"),
        log: lab.dir().join("vmnap.log"),
        lab,
        vmnap: opts.vmnap.clone(),
        daemon: None,
        client_ns: client.netns.clone(),
        client_if: client.client_if(),
        uri,
        problems: Vec::new(),
    };
    let domain_ip = |n: u8| Ipv4Addr::new(198, 18, 0, 30 + n);
    let targets = [
        Target {
            kind: Kind::LibvirtPause,
            name: "d01".into(),
            ip: domain_ip(1),
        },
        Target {
            kind: Kind::LibvirtSave,
            name: "d02".into(),
            ip: domain_ip(2),
        },
        Target {
            kind: Kind::QmpPause,
            name: "q01".into(),
            ip: vm.ipv4,
        },
    ];
    let mut config_a = format!(
        "[state]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n\n[libvirt]\nuri = \"{}\"\n",
        b.lab.dir().display(),
        b.socket.display(),
        b.uri
    );
    for (n, mode) in [(1u8, "pause"), (2, "save")] {
        config_a += &libvirt_guest(n, mode);
    }
    config_a += &format!(
        "\n[[guest]]\nname = \"q01\"\nbridge = \"{}\"\ninterface = \"{}\"\nmac = \"{}\"\n\
         ipv4 = [\"{}\"]\nipv6 = [\"{}\"]\nbackend = \"qmp\"\nqmp = \"{}\"\nwake_on = [\"tcp/80\"]\n",
        b.lab.bridge(),
        vm.tap,
        Mac(vm.mac),
        vm.ipv4,
        vm.ipv6,
        vm.qmp.display()
    );
    println!(
        "  boot to the guest's ready line: {} ms (d01, d02, q01)",
        boot_times
            .iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 1. wake-and-serve.
    eprintln!(
        "bench-vm: section 1, {} rounds per guest through vmnap...",
        opts.rounds
    );
    b.start_daemon(&config_a)?;
    let mut through_vmnap = Vec::new();
    for t in &targets {
        eprintln!("  {} ({})", t.kind.label(), t.name);
        through_vmnap
            .push(vmnap_rounds(&b, t, opts.rounds).with_context(|| format!("{} rounds", t.name))?);
    }
    b.stop_daemon();
    eprintln!("bench-vm: section 1, the backends alone (daemon stopped)...");
    let mut alone = Vec::new();
    for t in &targets {
        eprintln!("  {} ({})", t.kind.label(), t.name);
        let mut backend = match t.kind {
            Kind::QmpPause => Direct::Qmp(test_qmp.clone()),
            k => Direct::Libvirt(k, LibvirtDomain::open(&b.uri, &t.name)?),
        };
        alone.push(
            direct_rounds(&b, t, &mut backend, opts.rounds)
                .with_context(|| format!("{} without vmnap", t.name))?,
        );
    }
    print_wake(&targets, &through_vmnap, &alone, opts.rounds);

    // 2. memory.
    eprintln!(
        "bench-vm: section 2, {} save-mode sleeps of d02...",
        opts.memory_rounds
    );
    b.start_daemon(&config_a)?;
    let memory = memory_rounds(&b, &targets[1], opts.memory_rounds)?;
    b.stop_daemon();
    print_memory(&memory);

    // 3. CPU while idle.
    let n = opts.idle_guests;
    eprintln!(
        "bench-vm: section 3, {n} libvirt domains (booting d03 onwards), then {} s of idleness with all {n} asleep...",
        opts.idle_window
    );
    for i in 3..=n {
        b.lab.define_domain(domain_spec(i as u8, &image))?;
    }
    let mut config_b = format!(
        "[state]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n\n[libvirt]\nuri = \"{}\"\n",
        b.lab.dir().display(),
        b.socket.display(),
        b.uri
    );
    for i in 1..=n {
        config_b += &libvirt_guest(i as u8, "pause");
    }
    let daemon = b.start_daemon(&config_b)?;
    let idle = idle_cpu(&b, daemon, n, opts.idle_window).map_err(|e| b.fail(e))?;
    b.stop_daemon();
    print_idle(&idle, n, opts.idle_window);

    println!();
    if b.problems.is_empty() {
        println!("daemon logs: no warning or error lines");
    } else {
        println!(
            "daemon logs: {} warning/error line(s); the first ones:",
            b.problems.len()
        );
        for l in b.problems.iter().take(5) {
            println!("  {l}");
        }
    }
    println!(
        "bench-vm took {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn domain_spec(n: u8, image: &GuestImage) -> DomainSpec {
    DomainSpec::new(
        &format!("d{n:02}"),
        Ipv4Addr::new(198, 18, 0, 30 + n),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x30 + u16::from(n)),
        image.clone(),
    )
}

fn libvirt_guest(n: u8, mode: &str) -> String {
    format!(
        "\n[[guest]]\nname = \"d{n:02}\"\nipv4 = [\"198.18.0.{}\"]\nipv6 = [\"2001:db8::{:x}\"]\n\
         backend = \"libvirt\"\ndomain = \"d{n:02}\"\nmode = \"{mode}\"\nwake_on = [\"tcp/80\"]\n",
        30 + u16::from(n),
        0x30 + u16::from(n),
    )
}

fn print_wake(targets: &[Target], via: &[VmnapRounds], alone: &[DirectRounds], rounds: usize) {
    println!();
    println!("== 1. wake-and-serve: first byte of a new connection to a sleeping guest ==");
    println!("  how: {rounds} x (`vmnap sleep NAME` through the API; curl http://GUEST/ from c0; wait for the daemon to report the wake done);");
    println!("       the figure is curl's time_starttransfer (SYN sent -> first byte of the page), against the same curl to the awake guest;");
    println!("       last_wake_ms is the daemon's own (frame that caused the wake -> the guest's first answer after the replay), from `vmnap status --json`;");
    println!("       backend alone: daemon stopped, the calls vmnap makes, done {rounds} x here; 'resume call' times the call,");
    println!("       'resume call + first byte' adds curl's time_starttransfer of a curl started right after it returns;");
    println!("       SYNs to port 80 counted on c0 with tcpdump; a first byte > {RETRANSMIT_MS:.0} ms = a SYN retransmission (RTO 1 s)");
    for ((t, v), a) in targets.iter().zip(via).zip(alone) {
        println!();
        println!(
            "  {} (guest {}; backend: {})",
            t.kind.label(),
            t.name,
            t.kind.backend_calls()
        );
        stats("first byte, sleeping guest, through vmnap", &v.ttfb);
        stats("first byte, awake guest", &v.awake);
        stats("last_wake_ms (vmnap status --json)", &v.last_wake);
        stats("vmnap sleep (API call until it answers)", &v.sleep_call);
        stats("backend alone: resume call", &a.resume);
        stats("backend alone: resume call + first byte", &a.serve);
        stats("backend alone: suspend call", &a.suspend);
        println!(
            "    sleeping / awake first byte (medians): {:.1}x (+{:.2} ms); through vmnap - backend alone (medians): {:+.2} ms",
            median(&v.ttfb) / median(&v.awake),
            median(&v.ttfb) - median(&v.awake),
            median(&v.ttfb) - median(&a.serve)
        );
        println!(
            "    SYN retransmissions: first byte > {RETRANSMIT_MS:.0} ms in {} of {} sleeping rounds, {} of {} awake, {} of {} backend-alone; \
             SYNs seen: {} for {} connections (sleeping), {} for {} (awake), {} for {} (backend alone)",
            slow_count(&v.ttfb),
            v.ttfb.len(),
            slow_count(&v.awake),
            v.awake.len(),
            slow_count(&a.ttfb),
            a.ttfb.len(),
            v.syns,
            v.ttfb.len(),
            v.awake_syns,
            v.awake.len(),
            a.syns,
            a.ttfb.len()
        );
        for l in &v.slow {
            println!("      {l}");
        }
    }
    println!();
    println!("  summary, medians in ms:");
    println!(
        "    {:<14} {:>10} {:>8} {:>7} {:>13} {:>14} {:>12} {:>9}",
        "mode",
        "sleeping",
        "awake",
        "ratio",
        "last_wake_ms",
        "backend+serve",
        "resume call",
        "retrans."
    );
    for ((t, v), a) in targets.iter().zip(via).zip(alone) {
        println!(
            "    {:<14} {:>10.2} {:>8.2} {:>6.1}x {:>13.2} {:>14.2} {:>12.2} {:>9}",
            t.kind.label(),
            median(&v.ttfb),
            median(&v.awake),
            median(&v.ttfb) / median(&v.awake),
            median(&v.last_wake),
            median(&a.serve),
            median(&a.resume),
            format!("{}/{}", slow_count(&v.ttfb), v.ttfb.len())
        );
    }
}

/// The `/proc/meminfo` fields read before and after each sleep.
const MEMINFO: &[&str] = &[
    "MemAvailable",
    "MemFree",
    "AnonPages",
    "Cached",
    "Dirty",
    "Shmem",
];
/// The `/proc/PID/status` fields of QEMU read before each sleep.
const QEMU_STATUS: &[&str] = &["VmRSS", "RssAnon", "RssFile", "RssShmem"];

#[derive(Debug, Default)]
struct MemoryRound {
    /// [`QEMU_STATUS`] of the guest's QEMU, kB.
    qemu_kb: Vec<u64>,
    /// [`MEMINFO`] before the sleep, kB.
    before_kb: Vec<u64>,
    /// [`MEMINFO`] while asleep, kB.
    after_kb: Vec<u64>,
    save_file_kb: Option<u64>,
    exit_ms: f64,
}

fn meminfo_all() -> anyhow::Result<Vec<u64>> {
    MEMINFO.iter().map(|f| meminfo_kb(f)).collect()
}

fn memory_rounds(b: &Bench, t: &Target, rounds: usize) -> anyhow::Result<Vec<MemoryRound>> {
    let d = b
        .lab
        .domain(&t.name)
        .with_context(|| format!("no domain {}", t.name))?
        .clone();
    let save_file = b
        .lab
        .libvirtd()
        .context("no libvirtd")?
        .root()
        .join(format!("lib/qemu/save/{}.save", t.name));
    let url = t.url();
    let mut out = Vec::new();
    for round in 0..rounds {
        b.curl_ttfb(&url).map_err(|e| b.fail(e))?;
        std::thread::sleep(Duration::from_secs(2));
        let pid = d
            .qemu_pid()
            .with_context(|| format!("round {round}: {} has no running QEMU", t.name))?;
        let mut r = MemoryRound {
            qemu_kb: QEMU_STATUS
                .iter()
                .map(|f| proc_status_number(pid, f))
                .collect::<anyhow::Result<_>>()?,
            before_kb: meminfo_all()?,
            ..MemoryRound::default()
        };
        let before = b.status(&t.name)?.wakes;
        let s = Instant::now();
        b.sleep_guest(&t.name)
            .with_context(|| format!("round {round}"))
            .map_err(|e| b.fail(e))?;
        while Path::new(&format!("/proc/{pid}")).exists() {
            if s.elapsed() > Duration::from_secs(20) {
                bail!(
                    "round {round}: QEMU (pid {pid}) still runs 20 s after `vmnap sleep {}`",
                    t.name
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        r.exit_ms = ms(s.elapsed());
        std::thread::sleep(Duration::from_secs(1));
        r.after_kb = meminfo_all()?;
        r.save_file_kb = std::fs::metadata(&save_file).ok().map(|m| m.len() / 1024);
        b.curl_ttfb(&url).map_err(|e| b.fail(e))?;
        b.wait_awake(&t.name, before)?;
        out.push(r);
    }
    Ok(out)
}

fn print_memory(rounds: &[MemoryRound]) {
    let mib = |kb: u64| kb as f64 / 1024.0;
    let gained =
        |r: &MemoryRound, i: usize| (r.after_kb[i] as f64 - r.before_kb[i] as f64) / 1024.0;
    let max = |xs: &[f64]| xs.iter().copied().fold(f64::NAN, f64::max);
    println!();
    println!("== 2. host memory freed while a guest sleeps in save mode (libvirt managed save of d02, a 128 MiB guest) ==");
    println!("  how: {} x (curl, 2 s quiet; VmRSS/RssAnon/RssFile of d02's QEMU from /proc/PID/status and the host's /proc/meminfo;", rounds.len());
    println!("       `vmnap sleep d02`; wait until that QEMU PID is gone; 1 s quiet; /proc/meminfo again; curl wakes it)");
    println!("       the managed save image is written to the lab libvirtd's /var/lib/libvirt/qemu/save (on the host's disk, through");
    println!("       the page cache: 'Cached' grows by it while the guest sleeps); QEMU's RssFile (its binary and libraries) stays cached");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "    round {i}: QEMU VmRSS {:.1} MiB (anon {:.1}, file {:.1}, shmem {:.1}) | MemAvailable {:.1} -> {:.1} MiB | gained asleep: {} | save image {} | QEMU gone {:.0} ms after the sleep call",
            mib(r.qemu_kb[0]),
            mib(r.qemu_kb[1]),
            mib(r.qemu_kb[2]),
            mib(r.qemu_kb[3]),
            mib(r.before_kb[0]),
            mib(r.after_kb[0]),
            MEMINFO
                .iter()
                .enumerate()
                .map(|(j, f)| format!("{f} {:+.1}", gained(r, j)))
                .collect::<Vec<_>>()
                .join(", "),
            r.save_file_kb
                .map_or_else(|| "gone".to_string(), |kb| format!("{:.1} MiB", mib(kb))),
            r.exit_ms
        );
    }
    for (j, f) in QEMU_STATUS.iter().enumerate() {
        let xs: Vec<f64> = rounds.iter().map(|r| mib(r.qemu_kb[j])).collect();
        println!(
            "  QEMU {f:<9} before sleep:   median {:>7.1} MiB  (min {:.1}, max {:.1})",
            median(&xs),
            min(&xs),
            max(&xs)
        );
    }
    for (j, f) in MEMINFO.iter().enumerate() {
        let xs: Vec<f64> = rounds.iter().map(|r| gained(r, j)).collect();
        println!(
            "  host {f:<12} asleep - awake: median {:>+7.1} MiB  (min {:+.1}, max {:+.1}; spread {:.1} MiB)",
            median(&xs),
            min(&xs),
            max(&xs),
            max(&xs) - min(&xs)
        );
    }
    let avail: Vec<f64> = rounds.iter().map(|r| gained(r, 0)).collect();
    let anon: Vec<f64> = rounds.iter().map(|r| -gained(r, 2)).collect();
    let rss: Vec<f64> = rounds.iter().map(|r| mib(r.qemu_kb[0])).collect();
    let rss_anon: Vec<f64> = rounds.iter().map(|r| mib(r.qemu_kb[1])).collect();
    println!(
        "  => MemAvailable gained: median {:.1} MiB = {:.0}% of QEMU's VmRSS, {:.0}% of its RssAnon; host AnonPages dropped by {:.1} MiB (median)",
        median(&avail),
        100.0 * median(&avail) / median(&rss),
        100.0 * median(&avail) / median(&rss_anon),
        median(&anon)
    );
}

#[derive(Debug)]
struct IdleCpu {
    daemon_cpu_s: f64,
    daemon_sched_s: f64,
    libvirtd_cpu_s: f64,
    window_s: f64,
    daemon_rss_kb: u64,
    threads: u64,
    wakes_during: u64,
}

fn idle_cpu(b: &Bench, daemon: u32, n: usize, window: u64) -> anyhow::Result<IdleCpu> {
    let names: Vec<String> = (1..=n).map(|i| format!("d{i:02}")).collect();
    for name in &names {
        b.sleep_guest(name)?;
    }
    std::thread::sleep(Duration::from_secs(5));
    let wakes = |b: &Bench| -> anyhow::Result<u64> {
        let all = vmnap_bench::status(&b.socket)?;
        if let Some(g) = all.iter().find(|g| g.state != State::Sleeping) {
            bail!("{} is {}, not sleeping", g.name, g.state);
        }
        Ok(all.iter().map(|g| g.wakes).sum())
    };
    let libvirtd = b.lab.libvirtd().context("no libvirtd")?.pid();
    let wakes0 = wakes(b)?;
    let t0 = Instant::now();
    let (c0, s0, l0) = (
        vmnap_bench::proc_cpu_seconds(daemon)?,
        vmnap_bench::proc_sched_seconds(daemon)?,
        vmnap_bench::proc_cpu_seconds(libvirtd)?,
    );
    std::thread::sleep(Duration::from_secs(window));
    let (c1, s1, l1) = (
        vmnap_bench::proc_cpu_seconds(daemon)?,
        vmnap_bench::proc_sched_seconds(daemon)?,
        vmnap_bench::proc_cpu_seconds(libvirtd)?,
    );
    let window_s = t0.elapsed().as_secs_f64();
    let wakes1 = wakes(b)?;
    Ok(IdleCpu {
        daemon_cpu_s: c1 - c0,
        daemon_sched_s: s1 - s0,
        libvirtd_cpu_s: l1 - l0,
        window_s,
        daemon_rss_kb: proc_status_number(daemon, "VmRSS")?,
        threads: proc_status_number(daemon, "Threads")?,
        wakes_during: wakes1 - wakes0,
    })
}

fn print_idle(r: &IdleCpu, n: usize, window: u64) {
    let per_hour = 3600.0 / r.window_s;
    println!();
    println!("== 3. CPU used by vmnap per sleeping guest per hour of idleness ==");
    println!("  how: {n} libvirt domains (pause mode, real QEMU under TCG, the lab's libvirtd) all put to sleep with `vmnap sleep`, 5 s quiet,");
    println!("       then over {window} s with no traffic: the daemon's utime+stime (/proc/PID/stat, 10 ms ticks) and its threads' run time");
    println!("       (/proc/PID/task/*/schedstat, ns); per guest = the daemon's total / {n} (fixed costs included: an upper bound);");
    println!("       default [idle] settings (interval 5 s); libvirtd's utime+stime over the same window for context");
    println!(
        "  window {:.1} s; wakes during it: {}; daemon VmRSS {:.1} MiB, {} threads",
        r.window_s,
        r.wakes_during,
        r.daemon_rss_kb as f64 / 1024.0,
        r.threads
    );
    println!(
        "  daemon, utime+stime:  {:.3} s in the window = {:.2} CPU-s per hour in all = {:.3} CPU-s per sleeping guest per hour ({:.5}% of a core per guest)",
        r.daemon_cpu_s,
        r.daemon_cpu_s * per_hour,
        r.daemon_cpu_s * per_hour / n as f64,
        100.0 * r.daemon_cpu_s / r.window_s / n as f64
    );
    println!(
        "  daemon, schedstat:    {:.4} s in the window = {:.2} CPU-s per hour in all = {:.3} CPU-s per sleeping guest per hour ({:.5}% of a core per guest)",
        r.daemon_sched_s,
        r.daemon_sched_s * per_hour,
        r.daemon_sched_s * per_hour / n as f64,
        100.0 * r.daemon_sched_s / r.window_s / n as f64
    );
    println!(
        "  libvirtd, utime+stime: {:.3} s in the window = {:.2} CPU-s per hour (everything it did, for whatever client)",
        r.libvirtd_cpu_s,
        r.libvirtd_cpu_s * per_hour
    );
}
