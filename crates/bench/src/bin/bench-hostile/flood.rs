//! The `flood` scenario: floods at sleeping guests, and a ping to one that nobody attacks.
//!
//! A namespace lab of `--guests N` guests (default 20; each serving HTTP on port 80 in its
//! own cgroup, `wake_on = ["tcp/80", "udp/9000"]`) on one bridge with the real daemon, all
//! put to sleep through the API; an attacking client `c0` (198.18.1.100) and a pinging
//! client `c1` (198.18.1.101) on the same bridge. The guests are named for what is done to
//! them: `ping` is pinged and attacked by nobody, each hping3 stage below floods the guest
//! named after it, and the rest (`scan01`, ...) meet only the nmap scans, which cover the
//! guests' /24 except `ping`.
//!
//! `--secs S` (default 60) is cut into ten stages of S/10, one after the other, each one
//! attack from `c0`: `hping3 --flood` with SYNs to a closed port (81), FINs, ACKs, 100-byte
//! data segments (PSH+ACK), the same segments cut into 16-byte IP fragments (`-f`), first
//! fragments that never complete (`-x`: More Fragments set), Xmas segments (FIN+PSH+URG and
//! the two reserved bits, `-X -Y`), all to port 80 but the first; then `nmap -sA`, `-sF`
//! and `-sX` of the /24, run again and again until the stage's time is up. None of these is a
//! SYN to a `wake_on` port, so none should wake a guest. Between stages the bench waits for
//! the wakes a stage began to finish, reads `/metrics`, and puts every guest that woke back
//! to sleep, so that each stage meets sleeping guests only.
//!
//! Throughout, from `c1`, an ICMP echo request to `ping` every 5 ms on a raw socket; a
//! round trip runs from just before `send(2)` to the kernel's receive timestamp of the reply
//! (`SO_TIMESTAMPNS`), so that this process's own scheduling after the reply arrived is
//! not counted. A request without a reply 1 s after the last one was sent is lost (and
//! counts as never answered in the p99). 2 s of it before the first stage are the baseline.
//! The daemon's `VmRSS`, private memory (`Private_Clean` + `Private_Dirty` of
//! `smaps_rollup`) and threads are read every 100 ms during the stages.
//!
//! At the end the stage `syn81` was aimed at (the control) gets one real connection to port
//! 80 from `c0`: it must wake, by `tcp-syn`. Prints per stage the frames the attacker sent and
//! got back (its `eth0` counters), the ping round trips, the guests woken and why, and what
//! the daemon answered, queued and dropped (the differences of its `/metrics` counters); then
//! each guest's wakes and last cause from the API, and a summary beside issue 11's targets: ✔
//! or ✘ where the target is a number, nothing where it is not. Nothing fails on a figure.
//!
//! `--daemon-answers` sets `[surrogate] in_kernel = false`, so that the daemon, not the
//! kernel's eBPF responder, answers the pings (and ARP), from the worker the flood presses on.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, Ipv4Packet};
use vmnap_api::{self as api, GuestStatus, Request, State};
use vmnap_bench::{in_netns, median, ms, quantile, NamespaceLab};

use super::USAGE;

/// What the attacking client does in a stage.
#[derive(Debug, Clone, Copy)]
enum Attack {
    /// `hping3 --flood -q -n ARGS IP` at the guest named after the stage.
    Hping(&'static [&'static str]),
    /// `nmap SCAN ...` of the guests' /24 but the pinged guest, again and again.
    Nmap(&'static str),
}

/// One stage of the flood.
#[derive(Debug, Clone, Copy)]
struct Stage {
    /// The stage's name; an hping3 stage's target guest has this name too.
    name: &'static str,
    attack: Attack,
    /// What it sends, for people.
    what: &'static str,
}

/// The stages, in order.
const STAGES: [Stage; 10] = [
    Stage {
        name: "syn81",
        attack: Attack::Hping(&["-S", "-p", "81"]),
        what: "SYNs to closed port 81 (the control: one real SYN to port 80 at the end)",
    },
    Stage {
        name: "fin80",
        attack: Attack::Hping(&["-F", "-p", "80"]),
        what: "FINs to port 80",
    },
    Stage {
        name: "ack80",
        attack: Attack::Hping(&["-A", "-p", "80"]),
        what: "ACKs to port 80",
    },
    Stage {
        name: "data80",
        attack: Attack::Hping(&["-P", "-A", "-d", "100", "-p", "80"]),
        what: "100-byte data segments (PSH+ACK) to port 80",
    },
    Stage {
        name: "frag80",
        attack: Attack::Hping(&["-f", "-A", "-d", "100", "-p", "80"]),
        what: "ACK + 100 bytes to port 80 in 16-byte IP fragments",
    },
    Stage {
        name: "mf80",
        attack: Attack::Hping(&["-x", "-A", "-d", "100", "-p", "80"]),
        what: "ACK + 100 bytes to port 80 with More Fragments set: first fragments only",
    },
    Stage {
        name: "xmas80",
        attack: Attack::Hping(&["-F", "-P", "-U", "-X", "-Y", "-p", "80"]),
        what: "Xmas segments (FIN+PSH+URG, both reserved bits) to port 80",
    },
    Stage {
        name: "nmap-sA",
        attack: Attack::Nmap("-sA"),
        what: "ACK scan of 1,000 ports on each guest",
    },
    Stage {
        name: "nmap-sF",
        attack: Attack::Nmap("-sF"),
        what: "FIN scan of 1,000 ports on each guest",
    },
    Stage {
        name: "nmap-sX",
        attack: Attack::Nmap("-sX"),
        what: "Xmas scan of 1,000 ports on each guest",
    },
];

/// The guest that is pinged and that no stage attacks.
const PINGED: &str = "ping";
/// The guest that gets one real connection to port 80 after the flood.
const CONTROL: &str = "syn81";
/// nmap's `--min-rate`: probes a second at least, so that a scan presses as a flood does.
const NMAP_MIN_RATE: &str = "2000";
/// How often the pinging client sends an echo request.
const PING_EVERY: Duration = Duration::from_millis(5);
/// How long the pings run before the first stage, as a baseline.
const BASELINE: Duration = Duration::from_secs(2);
/// How long after the last echo request a reply may still come.
const PING_GRACE: Duration = Duration::from_secs(1);
/// How often the daemon's memory and threads are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long the bench waits for guests to wake, or fall asleep, between stages.
const SETTLE: Duration = Duration::from_secs(20);
const PING_TARGET_MS: f64 = 1.0;

/// The flood's flags.
#[derive(Debug, Clone)]
pub struct Options {
    guests: usize,
    secs: u64,
    daemon_answers: bool,
    hping3: PathBuf,
    nmap: PathBuf,
}

impl Options {
    /// Reads `--guests`, `--secs` and `--daemon-answers`, and finds hping3 and nmap.
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let guests: usize = vmnap_bench::flag(args, "--guests", 20, USAGE)?;
        let secs: u64 = vmnap_bench::flag(args, "--secs", 60, USAGE)?;
        let hpings = STAGES
            .iter()
            .filter(|s| matches!(s.attack, Attack::Hping(_)))
            .count();
        // The pinged guest, one per hping3 stage, and at least one that only nmap meets.
        let fewest = hpings + 2;
        if !(fewest..=200).contains(&guests) {
            bail!("--guests must be {fewest} to 200 for the flood\n{USAGE}");
        }
        if secs == 0 {
            bail!("--secs must be at least 1\n{USAGE}");
        }
        let (hping3, nmap) = match (vmnap_lab::find_tool("hping3"), vmnap_lab::find_tool("nmap")) {
            (Some(h), Some(n)) => (h, n),
            (h, n) => {
                let missing = match (h, n) {
                    (None, None) => "hping3 and nmap are",
                    (None, _) => "hping3 is",
                    _ => "nmap is",
                };
                bail!(
                    "the flood scenario runs hping3 and nmap, and {missing} not installed: \
                         install hping3 and nmap: apt-get install hping3 nmap"
                );
            }
        };
        Ok(Self {
            guests,
            secs,
            daemon_answers: args.iter().any(|a| a == "--daemon-answers"),
            hping3,
            nmap,
        })
    }
}

// ---------------------------------------------------------------------------------
// Tools in the attacking client's namespace.

/// A program started in a lab namespace, its output going to a file. It is ended by its
/// PID (SIGINT, then SIGKILL after 3 s) when stopped, or when dropped, also on an error.
#[derive(Debug)]
struct Tool {
    child: Child,
    out: PathBuf,
}

impl Tool {
    fn start(netns: &str, argv: &[OsString], out: PathBuf) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let file2 = file.try_clone()?;
        // `ip netns exec` execs the program: the PID is the program's own.
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .spawn()
            .with_context(|| format!("cannot start {}", argv[0].to_string_lossy()))?;
        Ok(Self { child, out })
    }

    /// Whether it has ended, and how.
    fn ended(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Ends it if it runs (SIGINT, as Ctrl-C would, then SIGKILL) and reaps it.
    fn end(&mut self) {
        if self.ended().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet
        // (try_wait above saw it running), so the PID cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.ended().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        self.end();
    }
}

/// What one `nmap` run says: how many hosts were up.
fn nmap_hosts_up(output: &str) -> Option<u64> {
    output.lines().find_map(|l| {
        let rest = l.strip_prefix("Nmap done: ")?;
        let (_, after) = rest.split_once('(')?;
        after.split_whitespace().next()?.parse().ok()
    })
}

/// Runs `stage`'s attack from `netns` for `length`. For nmap, the runs that ended within
/// it and the hosts up in the last of them.
fn attack(
    opts: &Options,
    stage: &Stage,
    netns: &str,
    lab: &NamespaceLab,
    length: Duration,
    dir: &Path,
) -> anyhow::Result<Option<(u32, Option<u64>)>> {
    let until = Instant::now() + length;
    match stage.attack {
        Attack::Hping(args) => {
            let mut argv: Vec<OsString> = vec![
                opts.hping3.clone().into(),
                "--flood".into(),
                "-q".into(),
                "-n".into(),
            ];
            argv.extend(args.iter().map(OsString::from));
            argv.push(ip_of(lab, stage.name)?.to_string().into());
            let mut tool = Tool::start(netns, &argv, dir.join(format!("{}.out", stage.name)))?;
            while Instant::now() < until {
                if let Some(status) = tool.ended() {
                    bail!(
                        "hping3 ({}) ended by itself ({status}):\n{}",
                        stage.name,
                        tool.output()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tool.end();
            Ok(None)
        }
        Attack::Nmap(scan) => {
            let pinged = ip_of(lab, PINGED)?.to_string();
            let net = guests_net(lab)?;
            let argv: Vec<OsString> = [
                opts.nmap.as_os_str(),
                scan.as_ref(),
                "-n".as_ref(),
                "-T4".as_ref(),
                "--min-rate".as_ref(),
                NMAP_MIN_RATE.as_ref(),
                "--max-retries".as_ref(),
                "1".as_ref(),
                "--exclude".as_ref(),
                pinged.as_ref(),
                net.as_ref(),
            ]
            .into_iter()
            .map(OsString::from)
            .collect();
            let (mut runs, mut up) = (0, None);
            while Instant::now() < until {
                let out = dir.join(format!("{}.{runs}.out", stage.name));
                let mut tool = Tool::start(netns, &argv, out)?;
                let status = loop {
                    if let Some(status) = tool.ended() {
                        break Some(status);
                    }
                    if Instant::now() >= until {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                match status {
                    // Cut off at the end of the stage.
                    None => tool.end(),
                    Some(s) if s.success() => {
                        up = nmap_hosts_up(&tool.output()).or(up);
                        runs += 1;
                    }
                    Some(s) => bail!("nmap {scan} failed ({s}):\n{}", tool.output()),
                }
            }
            Ok(Some((runs, up)))
        }
    }
}

// ---------------------------------------------------------------------------------
// The pinging client.

/// CLOCK_REALTIME in nanoseconds: the clock of the kernel's receive timestamps.
fn realtime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) with a valid clock and a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// One echo request: when it was sent, and its round trip if a reply came.
#[derive(Debug, Clone, Copy)]
struct Probe {
    sent_ns: i64,
    rtt_ns: Option<i64>,
}

/// ICMP echo requests to one address at a fixed pace, and the replies, timed.
#[derive(Debug)]
struct Pinger {
    probes: Arc<Mutex<Vec<Probe>>>,
    sending: Arc<AtomicBool>,
    receiving: Arc<AtomicBool>,
    sender: std::thread::JoinHandle<()>,
    receiver: std::thread::JoinHandle<anyhow::Result<()>>,
}

/// A raw ICMP socket in `netns`, connected to `target` (so that it reads only what
/// `target` sends), with kernel receive timestamps and a 100 ms receive timeout.
fn icmp_socket(netns: &str, target: Ipv4Addr) -> anyhow::Result<OwnedFd> {
    in_netns(netns, move || -> anyhow::Result<OwnedFd> {
        // SAFETY: socket(2); the descriptor is owned by the OwnedFd at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("raw ICMP socket");
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let on: libc::c_int = 1;
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(target.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: setsockopt(2) and connect(2) on our socket, with values that live
        // through the calls and their true sizes.
        unsafe {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                std::ptr::addr_of!(on).cast(),
                std::mem::size_of_val(&on) as libc::socklen_t,
            ) != 0
            {
                return Err(std::io::Error::last_os_error()).context("SO_TIMESTAMPNS");
            }
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(timeout).cast(),
                std::mem::size_of_val(&timeout) as libc::socklen_t,
            ) != 0
            {
                return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO");
            }
            if libc::connect(
                fd,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of_val(&addr) as libc::socklen_t,
            ) != 0
            {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("connect to {target}"));
            }
        }
        Ok(sock)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread making the ICMP socket panicked"))?
    .context("cannot make the pinging socket")?
}

/// An ICMP echo request (no IP header: the kernel adds it).
fn echo_request(ident: u16, seq_no: u16) -> Vec<u8> {
    let mut data = [0u8; 56];
    data[..8].copy_from_slice(&u64::from(seq_no).to_be_bytes());
    let repr = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data: &data,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// The sequence number of an echo reply with identifier `ident` in `datagram` (an IPv4
/// packet, as a raw socket reads it), if it is one.
fn echo_reply_seq(datagram: &[u8], ident: u16) -> Option<u16> {
    let ip = Ipv4Packet::new_checked(datagram).ok()?;
    let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
    match Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).ok()? {
        Icmpv4Repr::EchoReply {
            ident: i, seq_no, ..
        } if i == ident => Some(seq_no),
        _ => None,
    }
}

/// The index of the latest of `n` probes whose sequence number (its index modulo
/// 2^16) is `seq`.
fn probe_index(n: usize, seq: u16) -> Option<usize> {
    let last = n.checked_sub(1)?;
    let back = usize::from((last as u16).wrapping_sub(seq));
    last.checked_sub(back)
}

impl Pinger {
    fn start(netns: &str, target: Ipv4Addr) -> anyhow::Result<Self> {
        let sock = Arc::new(icmp_socket(netns, target)?);
        let ident = std::process::id() as u16;
        let probes = Arc::new(Mutex::new(Vec::<Probe>::new()));
        let sending = Arc::new(AtomicBool::new(true));
        let receiving = Arc::new(AtomicBool::new(true));
        let sender = {
            let (sock, probes, sending) =
                (Arc::clone(&sock), Arc::clone(&probes), Arc::clone(&sending));
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut k: u32 = 0;
                while sending.load(Ordering::Relaxed) {
                    let packet = echo_request(ident, k as u16);
                    {
                        let mut p = probes.lock().unwrap_or_else(|e| e.into_inner());
                        p.push(Probe {
                            sent_ns: realtime_ns(),
                            rtt_ns: None,
                        });
                    }
                    // SAFETY: send(2) of a buffer that lives through the call. A request
                    // the kernel refuses (no ARP answer, a full queue) is a lost probe.
                    unsafe {
                        libc::send(sock.as_raw_fd(), packet.as_ptr().cast(), packet.len(), 0)
                    };
                    k += 1;
                    // Paced to a schedule, so that a late send does not slow the rest.
                    let next = start + PING_EVERY * k;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        };
        let receiver = {
            let (probes, receiving) = (Arc::clone(&probes), Arc::clone(&receiving));
            std::thread::spawn(move || receive(&sock, ident, &probes, &receiving))
        };
        Ok(Self {
            probes,
            sending,
            receiving,
            sender,
            receiver,
        })
    }

    /// Stops sending, waits [`PING_GRACE`] for late replies, and returns every probe.
    fn finish(self) -> anyhow::Result<Vec<Probe>> {
        self.sending.store(false, Ordering::Relaxed);
        self.sender
            .join()
            .map_err(|_| anyhow::anyhow!("the pinging thread panicked"))?;
        std::thread::sleep(PING_GRACE);
        self.receiving.store(false, Ordering::Relaxed);
        self.receiver
            .join()
            .map_err(|_| anyhow::anyhow!("the thread reading ping replies panicked"))??;
        let probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(probes.clone())
    }
}

/// Reads echo replies until `receiving` is cleared, and sets each probe's round trip from
/// its kernel receive timestamp.
fn receive(
    sock: &OwnedFd,
    ident: u16,
    probes: &Mutex<Vec<Probe>>,
    receiving: &AtomicBool,
) -> anyhow::Result<()> {
    let mut buf = [0u8; 2048];
    // u64s, so that the control messages are aligned as cmsghdr needs.
    let mut control = [0u64; 32];
    while receiving.load(Ordering::Relaxed) {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid (no name, no buffers); filled below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg(2) into buffers that msg points to and that outlive the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => continue,
                _ => return Err(e).context("cannot read ping replies"),
            }
        }
        let mut at = None;
        // SAFETY: the CMSG_* walk stays within msg_control as msg_controllen, set by the
        // kernel, bounds it; a timestamp's data is a timespec, read unaligned.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    at = Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let at = at.unwrap_or_else(realtime_ns);
        let Some(seq) = echo_reply_seq(&buf[..n as usize], ident) else {
            continue;
        };
        let mut p = probes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(probe) = probe_index(p.len(), seq).and_then(|i| p.get_mut(i)) {
            if probe.rtt_ns.is_none() {
                probe.rtt_ns = Some(at - probe.sent_ns);
            }
        }
    }
    Ok(())
}

/// The round trips (ms) of the probes sent in `[from, to)`, and how many of them got no
/// reply.
fn window(probes: &[Probe], (from, to): (i64, i64)) -> (Vec<f64>, usize) {
    let mut rtts = Vec::new();
    let mut lost = 0;
    for p in probes.iter().filter(|p| (from..to).contains(&p.sent_ns)) {
        match p.rtt_ns {
            Some(ns) => rtts.push(ns as f64 / 1e6),
            None => lost += 1,
        }
    }
    (rtts, lost)
}

/// p99 with each lost probe counted as never answered.
fn p99_with_lost(rtts: &[f64], lost: usize) -> f64 {
    let mut all = rtts.to_vec();
    all.extend(std::iter::repeat_n(f64::INFINITY, lost));
    quantile(&all, 0.99)
}

// ---------------------------------------------------------------------------------
// The daemon's memory and counters.

/// The daemon's memory and threads at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct Mem {
    rss_kb: u64,
    private_kb: u64,
    threads: u64,
}

impl Mem {
    fn read(pid: u32) -> anyhow::Result<Self> {
        let path = format!("/proc/{pid}/smaps_rollup");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok(Self {
            rss_kb: vmnap_bench::proc_status_number(pid, "VmRSS")?,
            private_kb: field("Private_Clean:")? + field("Private_Dirty:")?,
            threads: vmnap_bench::proc_status_number(pid, "Threads")?,
        })
    }

    fn max(self, o: Self) -> Self {
        Self {
            rss_kb: self.rss_kb.max(o.rss_kb),
            private_kb: self.private_kb.max(o.private_kb),
            threads: self.threads.max(o.threads),
        }
    }
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// One scrape of the daemon's `/metrics`: each series' name, labels and value.
#[derive(Debug, Default, Clone)]
struct Scrape(Vec<Series>);

/// One series of a scrape.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Scrape {
    fn take(socket: &Path) -> anyhow::Result<Self> {
        let (status, body) = api::request(socket, "GET", "/metrics", None)
            .context("cannot scrape the daemon's /metrics")?;
        if status != 200 {
            bail!("GET /metrics answered {status}");
        }
        Ok(Self::parse(&String::from_utf8_lossy(&body)))
    }

    /// The Prometheus text format, as far as the daemon writes it: `name{k="v",...} value`.
    fn parse(text: &str) -> Self {
        let mut series = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((head, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.trim_end_matches('}');
                    let labels = inner
                        .split(',')
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k.to_owned(), v.trim_matches('"').to_owned()))
                        })
                        .collect();
                    (name, labels)
                }
                None => (head, Vec::new()),
            };
            series.push(Series {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Self(series)
    }

    /// Whether the family `name` was served.
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }

    /// The series of `name` summed by the value of `label`.
    fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.0.iter().filter(|s| s.name == name) {
            if let Some((_, value)) = s.labels.iter().find(|(k, _)| k == label) {
                *out.entry(value.clone()).or_insert(0.0) += s.value;
            }
        }
        out
    }

    fn total(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

/// The counters of `name`, by `label`, that moved from `before` to `after`.
fn moved(before: &Scrape, after: &Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    let old = before.by(name, label);
    after
        .by(name, label)
        .into_iter()
        .map(|(k, v)| {
            let d = v - old.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// `a 3, b 1`, or `-` for none.
fn list(m: &BTreeMap<String, f64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const WAKES: &str = "vmnap_guest_wakes_started_total";
const WOKE: &str = "vmnap_guest_wakes_total";
const ANSWERED: &str = "vmnap_guest_answered_frames_total";
const QUEUED: &str = "vmnap_guest_queued_frames_total";
const DROPPED: &str = "vmnap_guest_dropped_frames_total";
const IGNORED: &str = "vmnap_bridge_ignored_frames_total";
const MALFORMED: &str = "vmnap_bridge_malformed_frames_total";
const CAPTURE_DROPS: &str = "vmnap_bridge_capture_drops_total";

/// What the daemon's counters say happened between two scrapes.
#[derive(Debug, Default, Clone)]
struct Counted {
    woken: BTreeMap<String, f64>,
    causes: BTreeMap<String, f64>,
    answered: BTreeMap<String, f64>,
    queued: f64,
    dropped: BTreeMap<String, f64>,
    /// Frames the bridge's surrogate ignored or found malformed.
    ignored: f64,
    /// Frames the kernel dropped before the daemon read them.
    kernel_dropped: f64,
}

impl Counted {
    fn between(before: &Scrape, after: &Scrape) -> Self {
        Self {
            woken: moved(before, after, WAKES, "guest"),
            causes: moved(before, after, WAKES, "cause"),
            answered: moved(before, after, ANSWERED, "protocol"),
            queued: after.total(QUEUED) - before.total(QUEUED),
            dropped: moved(before, after, DROPPED, "reason"),
            ignored: after.total(IGNORED) + after.total(MALFORMED)
                - before.total(IGNORED)
                - before.total(MALFORMED),
            kernel_dropped: after.total(CAPTURE_DROPS) - before.total(CAPTURE_DROPS),
        }
    }

    /// Every frame the daemon's counters account for: answered, queued, dropped, ignored,
    /// and dropped by the kernel before the daemon read them.
    fn frames(&self) -> f64 {
        self.answered.values().sum::<f64>()
            + self.queued
            + self.dropped.values().sum::<f64>()
            + self.ignored
            + self.kernel_dropped
    }
}

// ---------------------------------------------------------------------------------
// Between stages.

/// Waits until no guest is waking or falling asleep; every guest's status then.
fn wait_still(lab: &NamespaceLab) -> anyhow::Result<Vec<GuestStatus>> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let st = vmnap_bench::status(&lab.socket)?;
        let moving: Vec<String> = st
            .iter()
            .filter(|g| matches!(g.state, State::Waking | State::FallingAsleep))
            .map(|g| format!("{} {}", g.name, g.state))
            .collect();
        if moving.is_empty() {
            return Ok(st);
        }
        if Instant::now() > deadline {
            bail!("still moving after {SETTLE:?}: {}", moving.join(", "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Puts every guest in `st` that is awake back to sleep; their names.
fn put_back(lab: &NamespaceLab, st: &[GuestStatus]) -> anyhow::Result<Vec<String>> {
    let awake: Vec<String> = st
        .iter()
        .filter(|g| g.state == State::Awake)
        .map(|g| g.name.clone())
        .collect();
    for name in &awake {
        let mut tries = 0;
        loop {
            let asked = vmnap_bench::call(
                &lab.socket,
                &Request::Sleep {
                    guest: name.clone(),
                },
            );
            match asked {
                Ok(_) => break,
                Err(e) if tries >= 10 => {
                    return Err(e.context(format!("cannot put {name} back to sleep")))
                }
                Err(_) => tries += 1,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    lab.wait_all(State::Sleeping, SETTLE)?;
    Ok(awake)
}

// ---------------------------------------------------------------------------------
// The scenario.

/// Frames an interface has sent and received so far.
#[derive(Debug, Default, Clone, Copy)]
struct Frames {
    tx: u64,
    rx: u64,
}

/// [`Frames`] of `eth0` in `netns`, from `/proc/thread-self/net/dev` read there.
fn link_frames(netns: &str) -> anyhow::Result<Frames> {
    in_netns(netns, || -> anyhow::Result<Frames> {
        let path = "/proc/thread-self/net/dev";
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
        let fields: Vec<u64> = text
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("eth0:"))
            .with_context(|| format!("no eth0 in {path}"))?
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // Receive: bytes, packets, ... (8 fields); then transmit: bytes, packets, ...
        match (fields.get(1), fields.get(9)) {
            (Some(&rx), Some(&tx)) => Ok(Frames { tx, rx }),
            _ => bail!("eth0's line in {path} is short"),
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread reading {netns}'s counters panicked"))??
}

/// One stage's figures.
#[derive(Debug)]
struct Row {
    stage: Stage,
    target: String,
    /// Frames the attacker's `eth0` sent and received during the stage.
    frames: Frames,
    /// nmap runs that ended within the stage, and hosts up in the last of them.
    runs: Option<(u32, Option<u64>)>,
    /// When it ran, CLOCK_REALTIME ns.
    window: (i64, i64),
    counted: Counted,
    put_back: Vec<String>,
}

/// The control's connection after the flood.
#[derive(Debug)]
struct Control {
    first_byte_ms: f64,
    answered: bool,
    woke: bool,
    cause: String,
}

/// Everything measured, to be printed.
#[derive(Debug)]
struct Outcome {
    guests: usize,
    rows: Vec<Row>,
    probes: Vec<Probe>,
    baseline: (i64, i64),
    /// The daemon before the flood, at most during it (and how many samples), after
    /// it, and after the control's wake.
    mem: (Mem, Mem, u64, Mem, Mem),
    cpu_s: f64,
    stages_s: f64,
    /// `/metrics` before the flood, after it, and after the control.
    scrapes: (Scrape, Scrape, Scrape),
    status_before: Vec<GuestStatus>,
    status_end: Vec<GuestStatus>,
    control: Control,
}

/// Asks `to` for `/` on port 80 from `netns`: the first byte's wait (ms) and whether an
/// HTTP answer came.
fn control_request(netns: &str, to: SocketAddr) -> anyhow::Result<(f64, bool)> {
    in_netns(netns, move || -> anyhow::Result<(f64, bool)> {
        let t = Instant::now();
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))
            .with_context(|| format!("cannot connect to {to}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: control\r\n\r\n")?;
        let mut first = [0u8; 1];
        s.read_exact(&mut first)
            .with_context(|| format!("no answer from {to}"))?;
        let wait = ms(t.elapsed());
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        Ok((wait, first[0] == b'H' && rest.starts_with(b"TTP/")))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the control's client panicked"))??
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✔"
    } else {
        "✘"
    }
}

fn state_of(lab: &NamespaceLab, guest: &str) -> anyhow::Result<GuestStatus> {
    vmnap_bench::status(&lab.socket)?
        .into_iter()
        .find(|g| g.name == guest)
        .with_context(|| format!("{guest} is not in the daemon's status"))
}

fn ip_of(lab: &NamespaceLab, name: &str) -> anyhow::Result<Ipv4Addr> {
    lab.guests
        .iter()
        .find(|g| g.name == name)
        .map(|g| g.ipv4)
        .with_context(|| format!("no guest {name} in the lab"))
}

/// The guests' /24 (`198.18.0.0/24`).
fn guests_net(lab: &NamespaceLab) -> anyhow::Result<String> {
    let o = ip_of(lab, PINGED)?.octets();
    Ok(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
}

/// Builds the lab, runs the stages and the control, and prints the figures.
pub fn run(vmnap: &Path, opts: &Options) -> anyhow::Result<()> {
    let mut names: Vec<String> = vec![PINGED.to_owned()];
    names.extend(
        STAGES
            .iter()
            .filter(|s| matches!(s.attack, Attack::Hping(_)))
            .map(|s| s.name.to_owned()),
    );
    let scanned_only = opts.guests - names.len();
    names.extend((1..=scanned_only).map(|k| format!("scan{k:02}")));
    // A table of its own after the `[api]` lines that `start_with_api` writes. The
    // guests' connections are trusted at once, as they are once the daemon has followed
    // them for `learn_connections_for` (an hour): until then, a segment of a connection
    // a guest does not have still wakes it.
    let api = format!(
        "\n[surrogate]\nlearn_connections_for = \"0s\"\n{}",
        if opts.daemon_answers {
            "in_kernel = false\n"
        } else {
            ""
        }
    );
    let dir =
        std::env::temp_dir().join(format!("vmnap-bench-hostile-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The lab (namespaces, links, cgroups, the daemon) is removed when it drops, on an
    // error too; the tools running in it are ended by their PIDs before that.
    let result = NamespaceLab::start_with_api(vmnap, &names, "", &api).and_then(|mut lab| {
        measure(&mut lab, vmnap, opts, &names, &dir).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\n--- the daemon's log, last 40 lines ---\n{}",
                vmnap_lab::chaos::log_tail(&lab.log_text(), 40)
            )
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = result?;
    print_stages(&outcome);
    print_counters(&outcome);
    print_wakes(&outcome);
    print_summary(&outcome);
    Ok(())
}

/// What the run will do, printed before it starts.
fn intro(
    lab: &NamespaceLab,
    vmnap: &Path,
    opts: &Options,
    stage_len: Duration,
) -> anyhow::Result<()> {
    let pinged = ip_of(lab, PINGED)?;
    let net = guests_net(lab)?;
    println!("bench-hostile flood: floods from one client at sleeping guests, while another client pings a sleeping guest that nobody attacks");
    println!(
        "  lab: {} namespace guests on {} (HTTP on port 80, wake_on tcp/80 and udp/9000), all asleep; attacker c0 198.18.1.100, pinger c1 198.18.1.101",
        lab.guests.len(),
        lab.lab.bridge()
    );
    println!(
        "  daemon: {}; ARP and ping answered by {}",
        vmnap.display(),
        if opts.daemon_answers {
            "the daemon ([surrogate] in_kernel = false)"
        } else {
            "the kernel's eBPF responder (the default)"
        }
    );
    println!(
        "  connections: the guests' are trusted at once ([surrogate] learn_connections_for = \"0s\", as after the daemon's first hour with them)"
    );
    println!(
        "  stages, {:.1} s each, one after the other; guests a stage woke are put back to sleep before the next:",
        stage_len.as_secs_f64()
    );
    for s in &STAGES {
        let how = match s.attack {
            Attack::Hping(args) => {
                format!("hping3 --flood {} {}", args.join(" "), ip_of(lab, s.name)?)
            }
            Attack::Nmap(scan) => {
                format!("nmap {scan} -T4 --min-rate {NMAP_MIN_RATE} --max-retries 1 {net} --exclude {pinged}")
            }
        };
        println!("    {:<8} {how:<62} {}", s.name, s.what);
    }
    let hpings = STAGES
        .iter()
        .filter(|s| matches!(s.attack, Attack::Hping(_)))
        .count();
    println!(
        "  nmap runs again and again until its stage ends; {} guests meet only nmap; `{PINGED}` ({pinged}) is attacked by nobody",
        lab.guests.len() - 1 - hpings
    );
    println!(
        "  ping: ICMP echo to `{PINGED}` every {} ms from c1, timed from send(2) to the reply's kernel receive timestamp; {} s baseline before the flood",
        PING_EVERY.as_millis(),
        BASELINE.as_secs()
    );
    println!("  control: after the flood, one HTTP request to `{CONTROL}` port 80 from c0: it must wake (tcp-syn)");
    println!("  targets (issue 11): 0 guests woken except by SYNs to wake_on ports; ping p99 <= {PING_TARGET_MS} ms during the flood; daemon memory bounded\n");
    Ok(())
}

/// Puts the guests to sleep, pings, runs the stages and the control; prints only the
/// introduction.
fn measure(
    lab: &mut NamespaceLab,
    vmnap: &Path,
    opts: &Options,
    names: &[String],
    dir: &Path,
) -> anyhow::Result<Outcome> {
    let pinger_ns = lab
        .lab
        .add_client(
            "c1",
            Ipv4Addr::new(198, 18, 1, 101),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 0x101),
            0,
        )?
        .netns
        .clone();
    let lab = &*lab;
    let attacker_ns = lab.client.as_str();
    let stage_len = Duration::from_secs(opts.secs) / STAGES.len() as u32;
    intro(lab, vmnap, opts, stage_len)?;
    lab.sleep_all(names.iter().map(String::as_str))?;
    lab.wait_all(State::Sleeping, SETTLE)?;

    let pid = lab.daemon;
    let pinger = Pinger::start(&pinger_ns, ip_of(lab, PINGED)?)?;
    let base_from = realtime_ns();
    std::thread::sleep(BASELINE);
    let baseline = (base_from, realtime_ns());
    let mem_before = Mem::read(pid)?;
    let status_before = vmnap_bench::status(&lab.socket)?;
    let first = Scrape::take(&lab.socket)?;
    let cpu0 = vmnap_bench::proc_cpu_seconds(pid)?;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        std::thread::spawn(move || {
            let mut most = Mem::default();
            let mut n = 0u64;
            while sampling.load(Ordering::Relaxed) {
                if let Ok(m) = Mem::read(pid) {
                    most = most.max(m);
                    n += 1;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            (most, n)
        })
    };
    let mut rows = Vec::new();
    let mut before = first.clone();
    let mut stages_time = Duration::ZERO;
    let flooded = (|| -> anyhow::Result<()> {
        for stage in &STAGES {
            let from = realtime_ns();
            let t = Instant::now();
            let link0 = link_frames(attacker_ns)?;
            let runs = attack(opts, stage, attacker_ns, lab, stage_len, dir)?;
            let link1 = link_frames(attacker_ns)?;
            stages_time += t.elapsed();
            let window = (from, realtime_ns());
            let st = wait_still(lab)?;
            let after = Scrape::take(&lab.socket)?;
            let counted = Counted::between(&before, &after);
            let put = put_back(lab, &st)?;
            before = Scrape::take(&lab.socket)?;
            rows.push(Row {
                stage: *stage,
                target: match stage.attack {
                    Attack::Hping(_) => stage.name.to_owned(),
                    Attack::Nmap(_) => format!("/24 but {PINGED}"),
                },
                frames: Frames {
                    tx: link1.tx - link0.tx,
                    rx: link1.rx - link0.rx,
                },
                runs,
                window,
                counted,
                put_back: put,
            });
        }
        Ok(())
    })();
    sampling.store(false, Ordering::Relaxed);
    let (mem_most, samples) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the memory sampler panicked"))?;
    let cpu_s = vmnap_bench::proc_cpu_seconds(pid)? - cpu0;
    let probes = pinger.finish()?;
    flooded?;
    let after_flood = before;
    let mem_after_flood = Mem::read(pid)?;

    // The control: one real connection to port 80 of a guest that was flooded.
    let control_before = state_of(lab, CONTROL)?;
    let (first_byte_ms, answered) = control_request(
        attacker_ns,
        SocketAddr::new(ip_of(lab, CONTROL)?.into(), 80),
    )?;
    let deadline = Instant::now() + SETTLE;
    let control_after = loop {
        let g = state_of(lab, CONTROL)?;
        if (g.wakes > control_before.wakes && g.state == State::Awake) || Instant::now() > deadline
        {
            break g;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let last = Scrape::take(&lab.socket)?;
    let status_end = vmnap_bench::status(&lab.socket)?;
    let mem_end = Mem::read(pid)?;
    Ok(Outcome {
        guests: names.len(),
        rows,
        probes,
        baseline,
        mem: (mem_before, mem_most, samples, mem_after_flood, mem_end),
        cpu_s,
        stages_s: stages_time.as_secs_f64(),
        scrapes: (first, after_flood, last),
        status_before,
        status_end,
        control: Control {
            first_byte_ms,
            answered,
            woke: control_after.wakes > control_before.wakes,
            cause: control_after.last_wake_cause.unwrap_or_default(),
        },
    })
}

/// p50, p99 (lost = never answered), max and lost, as table columns.
fn ping_columns(rtts: &[f64], lost: usize) -> String {
    format!(
        "{:>6.3} {:>7.3} {:>7.3} {:>5}",
        median(rtts),
        p99_with_lost(rtts, lost),
        rtts.iter().copied().fold(f64::NAN, f64::max),
        lost
    )
}

fn print_stages(o: &Outcome) {
    println!("per stage:");
    println!("  sent, got: frames on the attacker's eth0; counted: the frames the daemon's /metrics account for (answered + queued + dropped + ignored + dropped by the kernel),");
    println!("  until a wake all of them should be (after it the guest's own port gets the rest); ping to `{PINGED}`: ms, a lost one counting as never (inf) in p99;");
    println!("  woken (guests whose wakes began, by cause), answered, queued, dropped: the daemon's /metrics over the stage");
    println!(
        "  {:<8} {:<14} {:>9} {:>8} {:>8}  {:>6} {:>7} {:>7} {:>5}  {:<26} {:<38} {:>7}  dropped",
        "stage",
        "target",
        "sent",
        "got",
        "counted",
        "p50",
        "p99",
        "max",
        "lost",
        "woken (cause)",
        "answered",
        "queued",
    );
    let (base, base_lost) = window(&o.probes, o.baseline);
    println!(
        "  {:<8} {:<14} {:>9} {:>8} {:>8}  {}",
        "baseline",
        "-",
        "-",
        "-",
        "-",
        ping_columns(&base, base_lost)
    );
    for r in &o.rows {
        let (rtts, lost) = window(&o.probes, r.window);
        let woken = if r.counted.woken.is_empty() {
            "0".to_owned()
        } else {
            format!("{} ({})", r.counted.woken.len(), list(&r.counted.causes))
        };
        println!(
            "  {:<8} {:<14} {:>9} {:>8} {:>8}  {}  {:<26} {:<38} {:>7}  {}",
            r.stage.name,
            r.target,
            r.frames.tx,
            r.frames.rx,
            r.counted.frames(),
            ping_columns(&rtts, lost),
            woken,
            list(&r.counted.answered),
            r.counted.queued,
            list(&r.counted.dropped)
        );
    }
    for r in &o.rows {
        if let Some((runs, up)) = r.runs {
            println!(
                "  {}: {runs} scan(s) of the /24 ended within the stage{}",
                r.stage.name,
                up.map_or_else(String::new, |n| format!(", {n} hosts up in the last"))
            );
        }
    }
    for r in o.rows.iter().filter(|r| !r.put_back.is_empty()) {
        let who = if r.put_back.len() + 1 == o.guests {
            format!("all {} but {PINGED}", r.put_back.len())
        } else {
            r.put_back.join(", ")
        };
        println!("  after {}: put back to sleep: {who}", r.stage.name);
    }
    if !o.scrapes.0.has(WAKES) {
        println!("  (the daemon's /metrics has no {WAKES}: the woken column cannot be read)");
    }
}

fn print_counters(o: &Outcome) {
    let (first, after_flood, _) = &o.scrapes;
    let flood = Counted::between(first, after_flood);
    println!("\nthe daemon's counters over the flood (all stages, /metrics):");
    println!("  answered: {}", list(&flood.answered));
    println!("  queued:   {}", flood.queued);
    println!("  dropped:  {}", list(&flood.dropped));
    println!(
        "  bridge:   ignored {}, malformed {}, dropped by the kernel before the daemon read them {}",
        after_flood.total(IGNORED) - first.total(IGNORED),
        after_flood.total(MALFORMED) - first.total(MALFORMED),
        flood.kernel_dropped
    );
    let sent: u64 = o.rows.iter().map(|r| r.frames.tx).sum();
    println!(
        "  all of these: {} of the {sent} frames the attacker sent",
        flood.frames()
    );
}

fn print_wakes(o: &Outcome) {
    println!(
        "\nwakes (the API's status at the end: wakes since all were put to sleep, last cause):"
    );
    let mut any = false;
    for g in &o.status_end {
        let was = o
            .status_before
            .iter()
            .find(|b| b.name == g.name)
            .map_or(0, |b| b.wakes);
        if g.wakes > was {
            any = true;
            println!(
                "  {:<8} {} wake(s), last {}{}",
                g.name,
                g.wakes - was,
                g.last_wake_cause.as_deref().unwrap_or("?"),
                if g.name == CONTROL {
                    "   (the control)"
                } else {
                    ""
                }
            );
        }
    }
    if !any {
        println!("  none");
    }
    let (first, _, last) = &o.scrapes;
    println!(
        "  by cause (/metrics, completed wakes): {}   expected: tcp-syn 1 (the control)",
        list(&moved(first, last, WOKE, "cause"))
    );
}

fn print_summary(o: &Outcome) {
    let (first, after_flood, _) = &o.scrapes;
    let flood_woken = moved(first, after_flood, WAKES, "guest");
    let flood_causes = moved(first, after_flood, WAKES, "cause");
    let (mut rtts, mut lost) = (Vec::new(), 0);
    for r in &o.rows {
        let (x, l) = window(&o.probes, r.window);
        rtts.extend(x);
        lost += l;
    }
    let (base, base_lost) = window(&o.probes, o.baseline);
    let p99 = p99_with_lost(&rtts, lost);
    let (before, most, samples, after, end) = o.mem;
    let private_target_kb = 10_000_000 / 1024 + 4 * o.guests as u64;
    let pinged = o.status_end.iter().find(|g| g.name == PINGED);
    let c = &o.control;

    println!(
        "\nsummary ({} CPUs; the daemon's memory read {samples} times during the flood):",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  {:<56} {:<48} {:<34}", "figure", "measured", "target");
    let line = |fig: &str, got: String, want: &str, ok: Option<bool>| {
        println!("  {fig:<56} {got:<48} {want:<34} {}", ok.map_or("", mark));
    };
    line(
        "guests woken during the flood",
        if flood_woken.is_empty() {
            "0".to_owned()
        } else {
            format!(
                "{} guests, {} wakes ({})",
                flood_woken.len(),
                flood_woken.values().sum::<f64>(),
                list(&flood_causes)
            )
        },
        "0",
        Some(flood_woken.is_empty()),
    );
    line(
        &format!("control `{CONTROL}`: one connection to port 80 after"),
        format!(
            "{}, first byte {:.2} ms{}",
            if c.woke {
                format!("woken ({})", c.cause)
            } else {
                "not woken".to_owned()
            },
            c.first_byte_ms,
            if c.answered { "" } else { ", no HTTP answer" }
        ),
        "woken by tcp-syn",
        Some(c.woke && c.cause == "tcp-syn" && c.answered),
    );
    line(
        &format!("ping `{PINGED}` (asleep) during the flood: p99"),
        format!(
            "{p99:.3} ms (p50 {:.3}, max {:.3})",
            median(&rtts),
            rtts.iter().copied().fold(f64::NAN, f64::max),
        ),
        &format!("<= {PING_TARGET_MS} ms (a lost ping: never)"),
        Some(p99 <= PING_TARGET_MS),
    );
    line(
        "  pings lost during the flood",
        format!("{lost} of {}", rtts.len() + lost),
        "",
        None,
    );
    line(
        "  the same before the flood: p99",
        format!(
            "{:.3} ms (p50 {:.3}; {base_lost} lost of {})",
            p99_with_lost(&base, base_lost),
            median(&base),
            base.len() + base_lost
        ),
        "",
        None,
    );
    line(
        &format!("  `{PINGED}` asleep throughout"),
        match pinged {
            Some(g) => format!("{}, {} wake(s)", g.state, g.wakes),
            None => "not in the status".to_owned(),
        },
        "sleeping, 0 wakes",
        Some(pinged.is_some_and(|g| g.state == State::Sleeping && g.wakes == 0)),
    );
    line(
        "daemon VmRSS: before / most during / after the flood",
        format!(
            "{:.1} / {:.1} / {:.1} MiB",
            mib(before.rss_kb),
            mib(most.rss_kb),
            mib(after.rss_kb)
        ),
        "bounded; printed",
        None,
    );
    line(
        "daemon private memory: before / most / after",
        format!(
            "{:.1} / {:.1} / {:.1} MiB",
            mib(before.private_kb),
            mib(most.private_kb),
            mib(after.private_kb)
        ),
        &format!(
            "<= 10 MB + 4 KiB x {} = {:.1} MiB",
            o.guests,
            mib(private_target_kb)
        ),
        Some(most.private_kb <= private_target_kb),
    );
    line(
        "daemon threads: before / most during the flood",
        format!("{} / {}", before.threads, most.threads),
        "",
        None,
    );
    line(
        "daemon CPU during the stages",
        format!("{:.1} CPU-s in {:.1} s", o.cpu_s, o.stages_s),
        "",
        None,
    );
    line(
        "  after the control's wake: VmRSS / private / threads",
        format!(
            "{:.1} MiB / {:.1} MiB / {}",
            mib(end.rss_kb),
            mib(end.private_kb),
            end.threads
        ),
        "",
        None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmap_hosts_up_is_read() {
        let nmap = "Read data files from: /usr/bin/../share/nmap\n\
                    Nmap done: 256 IP addresses (19 hosts up) scanned in 3.21 seconds\n";
        assert_eq!(nmap_hosts_up(nmap), Some(19));
        assert_eq!(nmap_hosts_up("Starting Nmap 7.93\n"), None);
    }

    #[test]
    fn echo_requests_round_trip_and_replies_are_found() {
        let req = echo_request(0x1234, 7);
        let icmp = Icmpv4Packet::new_checked(&req[..]).expect("an ICMP packet");
        assert!(icmp.verify_checksum());
        // The same bytes as a reply inside an IPv4 header, as a raw socket reads it.
        let mut reply = req.clone();
        reply[0] = 0;
        reply[2..4].fill(0);
        let sum = {
            let mut p = Icmpv4Packet::new_unchecked(&mut reply[..]);
            p.fill_checksum();
            p.checksum()
        };
        assert_ne!(sum, 0);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0, 198, 18, 0, 10, 198, 18, 1, 101,
        ];
        let total = (ip.len() + reply.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        {
            let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
            p.fill_checksum();
        }
        ip.extend_from_slice(&reply);
        assert_eq!(echo_reply_seq(&ip, 0x1234), Some(7));
        assert_eq!(echo_reply_seq(&ip, 0x4321), None);
    }

    #[test]
    fn replies_find_their_probe_across_the_sequence_wrap() {
        assert_eq!(probe_index(0, 0), None);
        assert_eq!(probe_index(10, 3), Some(3));
        assert_eq!(probe_index(10, 12), None);
        assert_eq!(probe_index(70_000, 1), Some(65_537));
        assert_eq!(probe_index(70_000, 4_463), Some(4_463 + 65_536));
    }

    #[test]
    fn metrics_text_is_summed_by_label() {
        let before = Scrape::parse(
            "# TYPE vmnap_guest_wakes_started_total counter\n\
             vmnap_guest_wakes_started_total{guest=\"a\",cause=\"tcp-syn\"} 1\n\
             vmnap_guest_wakes_started_total{guest=\"b\",cause=\"tcp-syn\"} 0\n\
             vmnap_guest_queued_frames_total{guest=\"a\"} 5\n",
        );
        let after = Scrape::parse(
            "vmnap_guest_wakes_started_total{guest=\"a\",cause=\"tcp-syn\"} 1\n\
             vmnap_guest_wakes_started_total{guest=\"b\",cause=\"tcp-syn\"} 2\n\
             vmnap_guest_wakes_started_total{guest=\"b\",cause=\"opaque\"} 1\n\
             vmnap_guest_queued_frames_total{guest=\"a\"} 9\n",
        );
        let c = Counted::between(&before, &after);
        assert_eq!(list(&c.woken), "b 3");
        assert_eq!(list(&c.causes), "opaque 1, tcp-syn 2");
        assert_eq!(c.queued, 4.0);
        assert!(before.has(WAKES));
        assert!(!before.has(DROPPED));
    }
}
