//! `bench-hostile`: what the daemon's own users, and the guests it stands in for, see while
//! hostile clients press on it. Three scenarios of issue 11, `slowloris`, `flood` and `storm`;
//! with none named, all run, one after the other, each in a lab of its own. All use the real
//! daemon (`--vmnap PATH`, default: `vmnap` next to this executable), assert nothing about
//! time and need root.
//!
//! # `slowloris`: the API under slow clients
//!
//! A namespace lab (one guest, `web1`) with the daemon serving its API on the unix socket and
//! on a TCP listener with a token, at 127.0.0.1:7071 in the lab's host namespace.
//! `--clients N` TCP clients (default 10,000), spread over `--sources A` loopback addresses
//! (127.0.x.y, default 1,250: eight clients each), each begin a request and never finish it:
//! a request line, then one header line a second. A client whose connection is answered
//! (503 at once, or 408 when its time is up) or closed connects again a second later, for
//! `--secs S` seconds (default 20). Meanwhile `vmnap status` is asked over the unix socket
//! every 20 ms, as root would, and timed; so it is for 2 s before, with no attacker, as a
//! baseline.
//!
//! Prints the status round trip p50/p99/max and the failed calls, with and without the
//! attack; what the attackers got (connections held, refused at once, cut off, connects
//! that did not complete within 200 ms); and the daemon's threads and resident memory at
//! most, and its CPU time during the attack. Issue 11's target: status p99 ≤ 50 ms
//! throughout.
//!
//! # `flood`: floods at sleeping guests
//!
//! See the `flood` module below: `--guests N` sleeping namespace guests (default 20), one
//! attacking client running `hping3 --flood` and `nmap` scans at them for `--secs S` seconds
//! (default 60), another pinging a guest nobody attacks. Issue 11's targets: no guest woken
//! except by a SYN to a `wake_on` port, ping p99 ≤ 1 ms during the flood, the daemon's memory
//! bounded. Needs `hping3` and `nmap`.
//!
//! # `storm`: a wake storm under a resume cap
//!
//! See the `storm` module: 200 sleeping guests woken at once under `[wake] max_resuming =
//! 10`. Issue 11's target: resumes in flight never above the cap; every client served or
//! refused visibly within its timeout.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_bench::NamespaceLab;

const USAGE: &str = "\
usage: bench-hostile [slowloris | flood | storm] [--vmnap PATH] [--secs S] [OPTIONS]   (needs root)

  With no scenario named, all three run: slowloris, flood, then storm.
  --vmnap PATH     the daemon to run (default: vmnap next to this executable)
  --secs S         how long the attack lasts (slowloris: 20; flood: 60, cut into 10 stages)

  slowloris: slow HTTP clients on the daemon's TCP API listener; `vmnap status` timed meanwhile
  --clients N      slow clients (10000)
  --sources A      loopback source addresses they are spread over (1250)

  flood: hping3 --flood and nmap -sA/-sF/-sX at sleeping guests; another sleeping guest pinged
  --guests N       namespace guests, 9 to 200 (20)
  --daemon-answers the daemon answers ARP and ping itself ([surrogate] in_kernel = false)
                   rather than the kernel's eBPF responder, the default
  (needs hping3 and nmap: apt-get install hping3 nmap)

  storm: every sleeping guest woken at once by one HTTP request each, under a resume cap
  --guests N       namespace guests, 2 to 200 (200; flood's default is 20)
  --cap C          [wake] max_resuming (10)
  --timeout T      each client's curl --max-time, seconds (20)";

/// Where the daemon's TCP listener is, in the lab's host namespace.
const LISTEN: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 7071);
/// How often `vmnap status` is asked.
const STATUS_EVERY: Duration = Duration::from_millis(20);
/// How long a connect may take before the client gives up on it (and tries again later).
const CONNECT_WAIT: Duration = Duration::from_millis(200);

/// What the attackers got, counted as it happens.
#[derive(Debug, Default)]
struct Tally {
    held: AtomicU64,
    held_most: AtomicU64,
    refused: AtomicU64,
    cut_off: AtomicU64,
    other: AtomicU64,
    connect_failed: AtomicU64,
}

/// The `k`th source address: 127.0.x.y from 127.0.0.2 on, never 127.0.0.1 (the listener's).
fn source(k: usize) -> Ipv4Addr {
    let n = (k + 2) as u32;
    Ipv4Addr::new(127, 0, (n >> 8) as u8, n as u8)
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A non-blocking TCP connection to the listener from `from`, or `None` if it did not
/// complete within [`CONNECT_WAIT`].
fn connect_from(from: Ipv4Addr) -> anyhow::Result<Option<TcpStream>> {
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned by the TcpStream made at once, with
    // valid sockaddr_in values and their size.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket");
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(from, 0);
        if libc::bind(fd, std::ptr::addr_of!(local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("bind to {from}"));
        }
        let remote = sockaddr(LISTEN.0, LISTEN.1);
        if libc::connect(fd, std::ptr::addr_of!(remote).cast(), len) != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            if libc::poll(&mut pfd, 1, CONNECT_WAIT.as_millis() as i32) != 1 {
                return Ok(None);
            }
            if stream.take_error().ok().flatten().is_some() {
                return Ok(None);
            }
        }
        Ok(Some(stream))
    }
}

/// Raises this process's limit on open descriptors to at least `n`.
fn raise_nofile(n: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit");
        }
        if lim.rlim_cur >= n {
            return Ok(());
        }
        lim.rlim_cur = n;
        lim.rlim_max = lim.rlim_max.max(n);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot allow {n} open descriptors"));
        }
    }
    Ok(())
}

/// One slow client.
struct Slow {
    from: Ipv4Addr,
    stream: Option<TcpStream>,
    /// When it may connect again.
    retry_at: Instant,
}

/// Runs `clients` slow clients until `stop`; in the lab's host namespace.
fn attack(clients: usize, sources: usize, stop: &AtomicBool, tally: &Tally) -> anyhow::Result<()> {
    let mut slow: Vec<Slow> = (0..clients)
        .map(|k| Slow {
            from: source(k % sources),
            stream: None,
            retry_at: Instant::now(),
        })
        .collect();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        for c in &mut slow {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match &mut c.stream {
                None if Instant::now() >= c.retry_at => match connect_from(c.from)? {
                    Some(mut s) => {
                        let _ = s.write(b"GET /v1/guests HTTP/1.1\r\nHost: vmnap\r\n");
                        c.stream = Some(s);
                        let held = tally.held.fetch_add(1, Ordering::Relaxed) + 1;
                        tally.held_most.fetch_max(held, Ordering::Relaxed);
                    }
                    None => {
                        tally.connect_failed.fetch_add(1, Ordering::Relaxed);
                        c.retry_at = Instant::now() + Duration::from_secs(1);
                    }
                },
                None => {}
                Some(s) => {
                    // An answer, or the end: it was refused or cut off.
                    let ended =
                        match s.read(&mut buf) {
                            Ok(0) => Some(None),
                            Ok(n) => Some(std::str::from_utf8(&buf[..n]).ok().and_then(|t| {
                                t.get(9..12).and_then(|code| code.parse::<u16>().ok())
                            })),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                match s.write(b"X-Slow: 1\r\n") {
                                    Ok(_) => None,
                                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                                    Err(_) => Some(None),
                                }
                            }
                            Err(_) => Some(None),
                        };
                    if let Some(status) = ended {
                        match status {
                            Some(503) => tally.refused.fetch_add(1, Ordering::Relaxed),
                            Some(408) => tally.cut_off.fetch_add(1, Ordering::Relaxed),
                            _ => tally.other.fetch_add(1, Ordering::Relaxed),
                        };
                        tally.held.fetch_sub(1, Ordering::Relaxed);
                        c.stream = None;
                        c.retry_at = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
        }
        // A line a second from each.
        let rest = Duration::from_secs(1).saturating_sub(round.elapsed());
        let until = Instant::now() + rest;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// `vmnap status` every [`STATUS_EVERY`] for `secs`: the round trips (ms) and the failures.
fn statuses(socket: &std::path::Path, secs: Duration) -> (Vec<f64>, usize) {
    let (mut rtts, mut failed) = (Vec::new(), 0);
    let end = Instant::now() + secs;
    while Instant::now() < end {
        let t = Instant::now();
        match vmnap_bench::status(socket) {
            Ok(_) => rtts.push(vmnap_bench::ms(t.elapsed())),
            Err(_) => failed += 1,
        }
        std::thread::sleep(STATUS_EVERY);
    }
    (rtts, failed)
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let (slow, flood, storm) = match args.first().map(String::as_str) {
        Some("slowloris") => (true, false, false),
        Some("flood") => (false, true, false),
        Some("storm") => (false, false, true),
        Some(other) if !other.starts_with('-') => {
            bail!("no scenario {other:?}: slowloris, flood or storm (or none for all)\n{USAGE}")
        }
        _ => (true, true, true),
    };
    vmnap_bench::need_root("bench-hostile")?;
    let vmnap = vmnap_bench::vmnap_path(&args)?;
    // Both scenarios' flags are read before either runs, so that a bad one stops nothing
    // half-way; so are the flood's tools.
    let slow_opts = slow.then(|| slowloris_options(&args)).transpose()?;
    let flood_opts = flood.then(|| flood::Options::parse(&args)).transpose()?;
    // `--guests` is the flood's when all run: the storm keeps its own default then.
    let storm_args: Vec<String> = if flood { Vec::new() } else { args.clone() };
    let storm_opts = storm
        .then(|| storm::Options::parse(&storm_args))
        .transpose()?;
    if let Some(opts) = slow_opts {
        slowloris(&vmnap, opts)?;
    }
    if let Some(opts) = flood_opts {
        if slow {
            println!();
        }
        flood::run(&vmnap, &opts)?;
    }
    if let Some(opts) = storm_opts {
        if slow || flood {
            println!();
        }
        storm::run(&vmnap, &opts)?;
    }
    Ok(())
}

/// The slowloris's clients, source addresses and seconds.
fn slowloris_options(args: &[String]) -> anyhow::Result<(usize, usize, u64)> {
    let clients: usize = vmnap_bench::flag(args, "--clients", 10_000, USAGE)?;
    let sources: usize = vmnap_bench::flag(args, "--sources", 1_250, USAGE)?;
    let secs: u64 = vmnap_bench::flag(args, "--secs", 20, USAGE)?;
    if !(1..=100_000).contains(&clients) || !(1..=60_000).contains(&sources) {
        bail!("--clients must be 1 to 100000 and --sources 1 to 60000\n{USAGE}");
    }
    Ok((clients, sources, secs))
}

fn slowloris(
    vmnap: &std::path::Path,
    (clients, sources, secs): (usize, usize, u64),
) -> anyhow::Result<()> {
    raise_nofile(clients as u64 + 4096)?;
    let dir = std::env::temp_dir().join(format!("vmnap-bench-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let token = dir.join("token");
    std::fs::write(&token, "bench-hostile-token\n")?;
    // The daemon takes a token that its owner alone can read.
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let result = measure(vmnap, clients, sources, secs, &token);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(
    vmnap: &std::path::Path,
    clients: usize,
    sources: usize,
    secs: u64,
    token: &std::path::Path,
) -> anyhow::Result<()> {
    let api = format!(
        "listen = \"{}:{}\"\ntoken_file = \"{}\"",
        LISTEN.0,
        LISTEN.1,
        token.display()
    );
    let lab = NamespaceLab::start_with_api(vmnap, &["web1".to_owned()], "", &api)?;
    println!(
        "bench-hostile slowloris: the daemon's API while slow clients press on its TCP listener"
    );
    println!(
        "  lab: guest web1; daemon {}; TCP listener {}:{} with a token, in the lab's host namespace",
        vmnap.display(),
        LISTEN.0,
        LISTEN.1
    );
    println!("  attack: {clients} clients from {sources} loopback addresses, each a request line and then a header line a second, never done; reconnecting 1 s after being answered or closed; {secs} s");
    println!("  measured: `vmnap status` over the unix socket every {} ms, 2 s without the attack, then throughout it", STATUS_EVERY.as_millis());
    println!("  target (issue 11): status p99 <= 50 ms throughout\n");

    let (base, base_failed) = statuses(&lab.socket, Duration::from_secs(2));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let attacker = {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        vmnap_bench::in_netns(lab.lab.host_netns(), move || {
            attack(clients, sources, &stop, &tally)
        })
    };
    let pid = lab.daemon;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        std::thread::spawn(move || {
            let (mut threads, mut rss) = (0, 0);
            while sampling.load(Ordering::Relaxed) {
                threads = threads.max(vmnap_bench::proc_status_number(pid, "Threads").unwrap_or(0));
                rss = rss.max(vmnap_bench::proc_status_number(pid, "VmRSS").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            (threads, rss)
        })
    };
    let cpu0 = vmnap_bench::proc_cpu_seconds(pid)?;
    let (under, under_failed) = statuses(&lab.socket, Duration::from_secs(secs));
    let cpu = vmnap_bench::proc_cpu_seconds(pid)? - cpu0;
    stop.store(true, Ordering::Relaxed);
    let attacked = attacker
        .join()
        .map_err(|_| anyhow::anyhow!("the attacking thread panicked"))?;
    attacked??;
    sampling.store(false, Ordering::Relaxed);
    let (threads, rss_kb) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;

    let row = |name: &str, xs: &[f64], failed: usize| {
        println!(
            "  {name:<28} {:>5} calls, p50 {:>7.2} ms, p99 {:>7.2} ms, max {:>7.2} ms, {failed} failed",
            xs.len(),
            vmnap_bench::median(xs),
            vmnap_bench::quantile(xs, 0.99),
            xs.iter().copied().fold(f64::NAN, f64::max)
        );
    };
    println!("results (2 CPUs):");
    row("status, no attack", &base, base_failed);
    row("status, under attack", &under, under_failed);
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "  attackers: connections held at most {} ({} at the end); refused at once (503) {}; cut off at the deadline (408) {}; other ends {}; connects not done in {} ms {}",
        n(&tally.held_most),
        n(&tally.held),
        n(&tally.refused),
        n(&tally.cut_off),
        n(&tally.other),
        CONNECT_WAIT.as_millis(),
        n(&tally.connect_failed)
    );
    println!(
        "  daemon: at most {threads} threads and {:.1} MiB resident; {cpu:.2} CPU-s in the {secs} s",
        rss_kb as f64 / 1024.0
    );
    // A failed call counts as never answered.
    let mut all = under.clone();
    all.extend(std::iter::repeat_n(f64::INFINITY, under_failed));
    println!(
        "\n  target: status p99 <= 50 ms under attack (a failed call counting as never answered): {:.2} ms",
        vmnap_bench::quantile(&all, 0.99)
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}

mod flood;
mod storm;
