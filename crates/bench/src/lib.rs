//! Helpers shared by vmnap's benchmark binaries: order statistics, the root check, finding
//! the `vmnap` binary, a lab of namespace guests with the daemon standing in for them,
//! threads in a lab's namespaces, ARP requests and their replies, and reading `/proc`.
//!
//! The binaries print figures measured in one run (medians, percentiles, ratios to the
//! targets of `docs/design.md`); they assert nothing about time.

pub mod ring;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_api::State;
use vmnap_api::{self as api, Request, Response};
use vmnap_lab::{GuestSpec, Lab, LabGuest, LabOptions};
use vmnap_wire::Mac;

/// A broadcast ARP request from (`mac`, `ip`) for `target`.
pub fn arp_request(mac: [u8; 6], ip: std::net::Ipv4Addr, target: std::net::Ipv4Addr) -> Vec<u8> {
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr, Ipv4Address,
    };
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: Ipv4Address::from(ip.octets()),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: Ipv4Address::from(target.octets()),
    };
    let mut buf = vec![0u8; 14 + repr.buffer_len()];
    EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
    repr.emit(&mut ArpPacket::new_unchecked(&mut buf[14..]));
    buf
}

/// Whether `frame` is an ARP reply sent to `mac` by the owner of `ip`.
pub fn is_arp_reply(frame: &[u8], mac: [u8; 6], ip: std::net::Ipv4Addr) -> bool {
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        Ipv4Address,
    };
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    eth.dst_addr() == EthernetAddress(mac)
        && eth.ethertype() == EthernetProtocol::Arp
        && ArpPacket::new_checked(eth.payload())
            .ok()
            .and_then(|p| ArpRepr::parse(&p).ok())
            .is_some_and(|r| {
                matches!(r, ArpRepr::EthernetIpv4 { operation: ArpOperation::Reply, source_protocol_addr, .. }
                    if source_protocol_addr == Ipv4Address::from(ip.octets()))
            })
}

/// The value at quantile `q` (0.0..=1.0) of `xs` (nearest rank; sorts a copy). NaN if empty.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    v[rank.saturating_sub(1).min(v.len() - 1)]
}

/// The median of `xs` (the mean of the two middle values for an even count). NaN if empty.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The smallest of `xs`. NaN if empty.
pub fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().reduce(f64::min).unwrap_or(f64::NAN)
}

/// Fails with a clear message unless the effective user is root.
pub fn need_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!("{what} needs root (effective uid is {euid}): it builds network namespaces, a bridge and cgroups");
    }
    Ok(())
}

/// The `vmnap` binary: `--vmnap PATH` if given in `args`, else `vmnap` next to this
/// executable (where `cargo build --release -p vmnap-cli` puts it).
pub fn vmnap_path(args: &[String]) -> anyhow::Result<PathBuf> {
    let given = args
        .iter()
        .position(|a| a == "--vmnap")
        .map(|i| {
            args.get(i + 1)
                .cloned()
                .context("--vmnap needs a path to the vmnap binary")
        })
        .transpose()?;
    let path = match given {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .context("cannot find this executable")?
            .parent()
            .context("this executable has no directory")?
            .join("vmnap"),
    };
    if !path.is_file() {
        bail!(
            "no vmnap binary at {} (build it with `cargo build --release -p vmnap-cli`, or pass --vmnap PATH)",
            path.display()
        );
    }
    Ok(path)
}

/// Starts `vmnap run --config CONFIG` in the lab's host namespace (output to `log`) and
/// waits up to `timeout` until its API socket accepts connections. Returns its PID; the lab
/// ends it on drop if the caller does not.
pub fn start_daemon(
    lab: &mut Lab,
    vmnap: &Path,
    config: &Path,
    socket: &Path,
    log: &Path,
    timeout: Duration,
) -> anyhow::Result<u32> {
    let argv: Vec<&OsStr> = vec![
        vmnap.as_os_str(),
        "run".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--log-level".as_ref(),
        "info".as_ref(),
    ];
    let pid = lab
        .spawn_in_host(&argv, Some(log))
        .context("cannot start vmnap")?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(pid);
        }
        if !lab.is_running(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "vmnap did not come up within {timeout:?}; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// A lab of namespace guests, each serving HTTP on port 80 and logging UDP on port 9000 in
/// its own cgroup, one client `c0` (198.18.1.100), and the real daemon standing in for every
/// guest (cgroup backend; woken by TCP port 80 and UDP port 9000), its journal in the lab's
/// directory.
#[derive(Debug)]
pub struct NamespaceLab {
    /// The lab; dropping it ends the daemon and removes everything.
    pub lab: Lab,
    /// The guests, in the order asked for.
    pub guests: Vec<LabGuest>,
    /// The client's network namespace.
    pub client: String,
    /// The daemon's API socket, log and PID.
    pub socket: PathBuf,
    pub log: PathBuf,
    pub daemon: u32,
}

impl NamespaceLab {
    /// Builds the lab with guests named `names` (guest `k` has 198.18.0.(10 + k),
    /// 2001:db8::(0x100 + k) and MAC 02:00:00:00:02:k; at most 200) and starts the daemon
    /// `vmnap` with `extra` added to each guest's entry.
    pub fn start(vmnap: &Path, names: &[String], extra: &str) -> anyhow::Result<Self> {
        Self::start_with_api(vmnap, names, extra, "")
    }

    /// [`NamespaceLab::start`], with `api` added to the config's `[api]` table (lines such as
    /// `listen = "127.0.0.1:7071"`).
    pub fn start_with_api(
        vmnap: &Path,
        names: &[String],
        extra: &str,
        api: &str,
    ) -> anyhow::Result<Self> {
        if names.len() > 200 {
            bail!(
                "at most 200 guests in a namespace lab ({} asked)",
                names.len()
            );
        }
        let mut lab = Lab::new(LabOptions {
            workload: vec![vmnap.to_path_buf().into(), "lab-guest".into()],
            ..LabOptions::default()
        })
        .context("cannot build the lab")?;
        let mut guests = Vec::with_capacity(names.len());
        for (k, name) in names.iter().enumerate() {
            let k = u8::try_from(k).expect("at most 200 guests");
            guests.push(
                lab.add_guest(GuestSpec {
                    name: name.clone(),
                    ipv4: std::net::Ipv4Addr::new(198, 18, 0, 10 + k),
                    ipv6: std::net::Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0x100 + u16::from(k),
                    ),
                    mac: [0x02, 0, 0, 0, 2, k],
                    vlan: 0,
                    http_port: Some(80),
                    udp_log_port: Some(9000),
                })
                .with_context(|| format!("cannot add guest {name}"))?
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
        let log = lab.dir().join("vmnap.log");
        let mut text = format!(
            "[state]\ndir = \"{}\"\n\n[api]\nsocket = \"{}\"\n{api}\n",
            lab.dir().display(),
            socket.display()
        );
        for g in &guests {
            text += &format!(
                "\n[[guest]]\nname = \"{}\"\nbridge = \"{}\"\ninterface = \"{}\"\nmac = \"{}\"\n\
                 ipv4 = [\"{}\"]\nipv6 = [\"{}\"]\nbackend = \"cgroup\"\ncgroup = \"{}\"\n\
                 wake_on = [\"tcp/80\", \"udp/9000\"]\n{extra}",
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
        let up = Duration::from_secs(30);
        let daemon = start_daemon(&mut lab, vmnap, &config, &socket, &log, up)?;
        Ok(Self {
            lab,
            guests,
            client,
            socket,
            log,
            daemon,
        })
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Puts each of `names` to sleep through the API, one after the other.
    pub fn sleep_all<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
        for name in names {
            call(
                &self.socket,
                &Request::Sleep {
                    guest: name.to_owned(),
                },
            )?;
        }
        Ok(())
    }

    /// Waits up to `timeout` until every guest is `state`; returns their statuses then.
    pub fn wait_all(
        &self,
        state: State,
        timeout: Duration,
    ) -> anyhow::Result<Vec<api::GuestStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = status(&self.socket)?;
            if st.iter().all(|g| g.state == state) {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let off: Vec<String> = st
                    .iter()
                    .filter(|g| g.state != state)
                    .map(|g| format!("{} {}", g.name, g.state))
                    .collect();
                bail!("not {state} after {timeout:?}: {}", off.join(", "));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Runs `f` on a new thread inside the network namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        vmnap_lab::enter_netns(&netns)
            .with_context(|| format!("cannot enter the network namespace {netns}"))?;
        Ok(f())
    })
}

/// The TCP segments the calling thread's network namespace has retransmitted so far (SYNs
/// included): `RetransSegs` of `/proc/thread-self/net/snmp`.
pub fn tcp_retransmitted() -> anyhow::Result<u64> {
    let path = "/proc/thread-self/net/snmp";
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next(), tcp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Tcp lines in {path}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RetransSegs")
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no RetransSegs in {path}"))
}

/// Prints `name`: median, p99 and max of `xs` (milliseconds), and how many.
pub fn print_latencies(name: &str, xs: &[f64]) {
    println!(
        "  {name:<52} p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms   (n={})",
        median(xs),
        quantile(xs, 0.99),
        xs.iter().copied().fold(f64::NAN, f64::max),
        xs.len()
    );
}

/// The value after `name` on the command line (found as `--vmnap PATH` is), or `default`
/// if `name` is absent; a missing or unparsable value is an error ending with `usage`.
pub fn flag<T: std::str::FromStr>(
    args: &[String],
    name: &str,
    default: T,
    usage: &str,
) -> anyhow::Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => {
            let v = args
                .get(i + 1)
                .with_context(|| format!("{name} needs a value\n{usage}"))?;
            v.parse()
                .ok()
                .with_context(|| format!("{name} {v:?}: not a number\n{usage}"))
        }
    }
}

pub use vmnap_lab::chaos::Rng;

/// Sends one request to the daemon; a `Done` answer's message, a `Status` answer as JSON,
/// an `Error` answer as an error.
pub fn call(socket: &Path, request: &Request) -> anyhow::Result<String> {
    match api::call(socket, request).context("cannot talk to the daemon")? {
        Response::Done { message } => Ok(message),
        Response::Error { message } => bail!("the daemon refused {request:?}: {message}"),
        Response::Status { guests } => Ok(serde_json::to_string(&guests)?),
    }
}

/// Every guest's status, as `vmnap status --json` shows it.
pub fn status(socket: &Path) -> anyhow::Result<Vec<api::GuestStatus>> {
    match api::call(socket, &Request::Status).context("cannot talk to the daemon")? {
        Response::Status { guests } => Ok(guests),
        other => bail!("unexpected answer to status: {other:?}"),
    }
}

/// The number of a `/proc/PID/status` field: kB for `VmRSS`, `VmHWM`, `RssAnon`, ...; a
/// count for `Threads`.
pub fn proc_status_number(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .with_context(|| format!("no {field} in {path}"))
}

/// A process's CPU time so far, user plus system, summed over its threads (`utime` +
/// `stime` of `/proc/PID/stat`, in clock ticks of usually 10 ms), in seconds.
pub fn proc_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name is in parentheses and may hold spaces: count fields after the last `)`.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("no command name in {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("no field {} in {path}", i + 3))
    };
    let ticks = tick(11)? + tick(12)?;
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(ticks as f64 / hz)
}

/// A process's time on a CPU so far in seconds, to the nanosecond: the first field of
/// `/proc/PID/task/TID/schedstat`, summed over its live threads (threads that exited are
/// not counted).
pub fn proc_sched_seconds(pid: u32) -> anyhow::Result<f64> {
    let dir = format!("/proc/{pid}/task");
    let mut ns: u64 = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let path = entry?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(&path) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .with_context(|| format!("no run time in {}", path.display()))?;
        }
    }
    Ok(ns as f64 / 1e9)
}

/// A field of `/proc/meminfo` in kB (`MemAvailable`, `MemFree`, `Cached`, ...).
pub fn meminfo_kb(field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .with_context(|| format!("no {field} in /proc/meminfo"))
}

/// Ends a benchmark: exit 0, or print `error: ...` with its causes (no backtrace) and exit 1.
pub fn finish(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Milliseconds in a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistics() {
        let xs = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&xs), 3.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(quantile(&xs, 0.9), 5.0);
        assert_eq!(quantile(&xs, 0.5), 3.0);
        assert_eq!(min(&xs), 1.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn proc_readers_read_this_process() {
        let me = std::process::id();
        assert!(proc_cpu_seconds(me).expect("stat") >= 0.0);
        assert!(proc_sched_seconds(me).expect("schedstat") > 0.0);
        assert!(meminfo_kb("MemAvailable").expect("meminfo") > 0);
    }
}
