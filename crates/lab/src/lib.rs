//! vmnap-lab builds throwaway network labs for vmnap's integration tests and for
//! `vmnap demo`: a "host" network namespace holding a Linux bridge `br0`, guest and client
//! namespaces attached to it by veth pairs (optionally behind an 802.1Q VLAN subinterface),
//! one cgroup per guest (v2 or the v1 freezer) with a small guest workload (an HTTP server
//! and a UDP logger, see [`workload`]) started inside it, helpers to run commands and
//! long-running processes in those namespaces, and packet captures with `tcpdump`.
//! Everything it makes lives in namespaces it created, uses only 198.18.0.0/15,
//! 2001:db8::/32 and locally administered MACs, and is removed again when the [`Lab`] is
//! dropped (also while a test panics): processes are ended by PID, cgroups are thawed,
//! emptied and removed, namespaces are deleted. It does not touch the root namespace, does
//! not configure routing, NAT or firewalls, does not run vmnap itself and does not freeze
//! or wake guests (that is the daemon's job, or the test's). It shells out to `ip`,
//! `nsenter` and `tcpdump` and needs root.
//!
//! On kernels built without `CONFIG_VLAN_8021Q` (`ip link add ... type vlan` answers
//! "Unknown device type"), a VLAN guest's or client's `eth0.<vlan>` is one end of a veth
//! pair inside its namespace, and a small user-space relay ([`vlan_relay`], run by the
//! workload binary outside the guest's cgroup) tags and untags frames between it and
//! `eth0`. On the bridge the frames look the same as with kernel VLANs.
//!
//! Real QEMU guests (a tiny Debian kernel and busybox initramfs built by
//! `guest/build-image.sh`) join the bridge through taps: see [`qemu`] and [`Lab::add_vm`].
//! A lab can also run a libvirtd of its own and define libvirt domains on the bridge: see
//! [`libvirt`], [`Lab::start_libvirtd`] and [`Lab::define_domain`].

pub mod cgroup;
pub mod chaos;
pub mod libvirt;
pub mod qemu;
pub mod tools;
pub mod vlan_relay;
pub mod workload;

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use tools::{check_tools, debian_package, find_tool, MissingTool};
use tools::{is_executable, tool};
use vmnap_wire::Mac;

/// MAC address of the lab bridge `br0`.
pub const BRIDGE_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0xff, 0xff, 0xfe];
/// Name of the lab bridge in the host namespace.
pub const BRIDGE: &str = "br0";
/// Longest guest or client name (the host-side interface `vg-<name>` must fit in 15 bytes).
pub const MAX_NAME_LEN: usize = 12;
/// How long [`Lab::add_guest`] waits for the workload to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The process is not root.
    #[error(
        "vmnap-lab needs root (effective uid is {0}): it creates network namespaces and cgroups"
    )]
    NotRoot(u32),
    /// Tools the lab needs are not installed.
    #[error("missing tools: {}", format_missing(.0))]
    MissingTools(Vec<MissingTool>),
    /// No cgroup hierarchy of the wanted kind is mounted.
    #[error("no {0:?} cgroup hierarchy found in /proc/self/mountinfo (V2: a cgroup2 mount; V1: a cgroup mount with the freezer controller)")]
    NoCgroup(CgroupKind),
    /// An argument is not acceptable.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// What was checked.
        what: String,
        /// Why it was refused.
        why: String,
    },
    /// A namespace that this lab did not create was named.
    #[error("network namespace {0:?} does not belong to this lab")]
    ForeignNetns(String),
    /// Something of the same name exists already (for example a leftover of a killed run).
    #[error("{0} exists already (leftover of an earlier run? remove it by hand)")]
    Exists(String),
    /// A command exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// An I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

fn format_missing(m: &[MissingTool]) -> String {
    let mut s = String::new();
    for (i, t) in m.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "`{}` (Debian package {})", t.tool, t.package);
        if let Some(why) = &t.needed_for {
            let _ = write!(s, " needed for {why}");
        }
    }
    let pkgs: Vec<&str> = m.iter().map(|t| t.package.as_str()).collect();
    let _ = write!(s, "; install with: apt-get install {}", pkgs.join(" "));
    s
}

/// Moves the calling thread into the network namespace `netns` (one made by a lab); threads
/// it spawns afterwards start there too. Other threads stay where they are.
pub fn enter_netns(netns: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(Lab::netns_path(netns))?;
    // SAFETY: setns on the calling thread with a valid namespace fd, open for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The command line of process `pid`, one argument an entry (empty if it cannot be read).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The processes (other than this one) whose command line mentions `needle`: how a test
/// finds the QEMU a daemon under test started, to end it by PID.
pub fn pids_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| pid != std::process::id())
                .filter(|&pid| cmdline(pid).iter().any(|a| a.contains(needle)))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that the effective uid is 0.
pub fn check_root() -> Result<(), LabError> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Ok(())
    } else {
        Err(LabError::NotRoot(euid))
    }
}

/// Which cgroup hierarchy guests are placed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupKind {
    /// cgroup v2 (`cgroup.freeze`).
    #[default]
    V2,
    /// cgroup v1 freezer (`freezer.state`).
    V1,
}

/// Options of [`Lab::new`].
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Prefix of every global name (namespaces, cgroup dir). `None`: generated, unique per
    /// process and lab (`vl<pid%100000>-<counter>`).
    pub prefix: Option<String>,
    /// Program and leading arguments that run a guest workload (for example
    /// `[path/to/vmnap, "lab-guest"]`); the lab appends the workload flags. Empty: the
    /// `vmnap-lab-guest` binary next to the current executable (or one directory up).
    pub workload: Vec<OsString>,
    /// The cgroup hierarchy for guests.
    pub cgroup: CgroupKind,
}

/// What [`Lab::add_guest`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    /// Name (1 to 12 of `[A-Za-z0-9_-]`), unique among the lab's guests.
    pub name: String,
    /// IPv4 address in 198.18.0.0/15 (configured as /15).
    pub ipv4: Ipv4Addr,
    /// IPv6 address in 2001:db8::/32 (configured as /64, `nodad`).
    pub ipv6: Ipv6Addr,
    /// Locally administered unicast MAC of the guest's addressed interface.
    pub mac: [u8; 6],
    /// 0: untagged; otherwise the addresses live on `eth0.<vlan>`.
    pub vlan: u16,
    /// Port of the workload's HTTP server.
    pub http_port: Option<u16>,
    /// Port of the workload's UDP logger (the log file is [`LabGuest::udp_log`]).
    pub udp_log_port: Option<u16>,
}

/// A guest of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabGuest {
    /// Name.
    pub name: String,
    /// Its network namespace (`<prefix>g<name>`).
    pub netns: String,
    /// Host-side veth `vg-<name>` in the host namespace, enslaved to the bridge.
    pub host_if: String,
    /// MAC of the addressed interface (`eth0`, or `eth0.<vlan>`).
    pub mac: [u8; 6],
    /// IPv4 address.
    pub ipv4: Ipv4Addr,
    /// IPv6 address.
    pub ipv6: Ipv6Addr,
    /// VLAN id (0: untagged).
    pub vlan: u16,
    /// Its cgroup directory (`<mount>/<prefix>/<name>`).
    pub cgroup: PathBuf,
    /// PID of the workload (it is in [`LabGuest::cgroup`] from its first instruction).
    pub workload_pid: u32,
    /// The UDP log file, if `udp_log_port` was given.
    pub udp_log: Option<PathBuf>,
}

impl LabGuest {
    /// The interface in the guest namespace that carries the addresses.
    pub fn guest_if(&self) -> String {
        addressed_if(self.vlan)
    }
}

/// A client of the lab (a namespace with addresses, no workload, no cgroup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabClient {
    /// Name.
    pub name: String,
    /// Its network namespace (`<prefix>c<name>`).
    pub netns: String,
    /// IPv4 address.
    pub ipv4: Ipv4Addr,
    /// IPv6 address.
    pub ipv6: Ipv6Addr,
    /// VLAN id (0: untagged).
    pub vlan: u16,
    /// Host-side veth `vc-<name>` in the host namespace.
    pub host_if: String,
    /// MAC of the addressed interface (`02:00:00:cc:00:<n>`).
    pub mac: [u8; 6],
}

impl LabClient {
    /// The interface in the client namespace that carries the addresses.
    pub fn client_if(&self) -> String {
        addressed_if(self.vlan)
    }
}

fn addressed_if(vlan: u16) -> String {
    if vlan == 0 {
        "eth0".to_string()
    } else {
        format!("eth0.{vlan}")
    }
}

/// A process the lab started and has not reaped yet.
#[derive(Debug)]
struct Proc {
    child: Child,
    what: String,
}

type Procs = Arc<Mutex<Vec<Proc>>>;

fn lock(p: &Procs) -> MutexGuard<'_, Vec<Proc>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

fn take_proc(procs: &Procs, pid: u32) -> Option<Proc> {
    let mut g = lock(procs);
    let i = g.iter().position(|p| p.child.id() == pid)?;
    Some(g.remove(i))
}

/// SIGTERM, wait up to `grace`, SIGKILL, reap. Holding the unreaped `Child` guarantees the
/// PID was not reused.
fn terminate(p: &mut Proc, grace: Duration) -> Result<(), String> {
    if let Ok(Some(_)) = p.child.try_wait() {
        return Ok(());
    }
    let pid = p.child.id();
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = p.child.try_wait() {
            return Ok(());
        }
        sleep(Duration::from_millis(5));
    }
    p.child
        .kill()
        .map_err(|e| format!("SIGKILL {} (pid {pid}): {e}", p.what))?;
    p.child
        .wait()
        .map(|_| ())
        .map_err(|e| format!("wait {} (pid {pid}): {e}", p.what))
}

/// One thing to undo on drop, in reverse order of creation.
#[derive(Debug)]
enum Undo {
    Netns(String),
    CgroupDir(PathBuf),
    /// A guest workload: empty its cgroup (thaw, SIGKILL), then reap it.
    Workload {
        proc: Proc,
        cgroup: PathBuf,
    },
    Dir(PathBuf),
    /// A link in a namespace of the lab (a QEMU guest's tap): `ip -n NETNS link del NAME`.
    Link {
        netns: String,
        name: String,
    },
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Serialises `ip netns add/del` inside this process (the first `add` sets up the shared
/// `/run/netns` mount).
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A network lab. See the crate documentation. Dropping it removes everything.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    host_ns: String,
    cgroup_kind: CgroupKind,
    cgroup_parent: PathBuf,
    workload: Vec<OsString>,
    dir: PathBuf,
    ip: PathBuf,
    nsenter: PathBuf,
    sh: PathBuf,
    guests: Vec<LabGuest>,
    clients: Vec<LabClient>,
    vms: Vec<qemu::LabVm>,
    libvirt: libvirt::LabLibvirt,
    procs: Procs,
    undo: Vec<Undo>,
    captures: AtomicU32,
}

fn invalid(what: impl Into<String>, why: impl Into<String>) -> LabError {
    LabError::Invalid {
        what: what.into(),
        why: why.into(),
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

fn check_name(kind: &str, name: &str) -> Result<(), LabError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            format!("{kind} name {name:?}"),
            format!("want 1 to {MAX_NAME_LEN} of [A-Za-z0-9_-]"),
        ));
    }
    Ok(())
}

fn check_addrs(ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> Result<(), LabError> {
    let o = ipv4.octets();
    if !(o[0] == 198 && o[1] & 0xfe == 18)
        || ipv4 == Ipv4Addr::new(198, 18, 0, 0)
        || ipv4 == Ipv4Addr::new(198, 19, 255, 255)
    {
        return Err(invalid(
            format!("IPv4 address {ipv4}"),
            "must be a host address in 198.18.0.0/15",
        ));
    }
    let s = ipv6.segments();
    if s[0] != 0x2001 || s[1] != 0x0db8 {
        return Err(invalid(
            format!("IPv6 address {ipv6}"),
            "must be in 2001:db8::/32",
        ));
    }
    Ok(())
}

fn check_mac(mac: &[u8; 6]) -> Result<(), LabError> {
    if mac[0] & 0x01 != 0 || mac[0] & 0x02 == 0 {
        return Err(invalid(
            format!("MAC {}", Mac(*mac)),
            "must be a locally administered unicast address (02:...)",
        ));
    }
    Ok(())
}

fn check_vlan(vlan: u16) -> Result<(), LabError> {
    if vlan > 4094 {
        return Err(invalid(
            format!("VLAN {vlan}"),
            "must be 0 (untagged) or 1..=4094",
        ));
    }
    Ok(())
}

fn default_workload() -> Result<Vec<OsString>, LabError> {
    let exe = std::env::current_exe().map_err(io_err("find the current executable"))?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let cand = d.join("vmnap-lab-guest");
        if is_executable(&cand) {
            return Ok(vec![cand.into_os_string()]);
        }
        dir = d.parent();
    }
    Err(invalid(
        "workload",
        "LabOptions::workload is empty and no vmnap-lab-guest binary is next to the current executable; \
         pass e.g. env!(\"CARGO_BIN_EXE_vmnap-lab-guest\") or [vmnap, \"lab-guest\"]",
    ))
}

fn cmd_line(prog: &Path, args: &[&OsStr]) -> String {
    let mut s = prog.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn checked(prog: &Path, args: &[&OsStr], out: std::io::Result<Output>) -> Result<Output, LabError> {
    let out = out.map_err(io_err(format!("run `{}`", cmd_line(prog, args))))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(LabError::Command {
            cmd: cmd_line(prog, args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Lab {
    /// Creates the host namespace `<prefix>h` (lo up, IPv6 off by default for new links so
    /// the host side stays silent) with bridge `br0` (MAC [`BRIDGE_MAC`], STP off, forward
    /// delay 0, up) and the cgroup parent directory `<mount>/<prefix>`. Checks root and the
    /// tools (`ip`, `nsenter`, `sh`) first.
    pub fn new(opts: LabOptions) -> Result<Lab, LabError> {
        check_root()?;
        let mut missing = Vec::new();
        for (t, why) in [
            ("ip", "creating namespaces and links"),
            ("nsenter", "running processes in namespaces"),
            ("sh", "starting guest workloads"),
        ] {
            if let Err(LabError::MissingTools(m)) = tool(t, why) {
                missing.extend(m);
            }
        }
        if !missing.is_empty() {
            return Err(LabError::MissingTools(missing));
        }
        let ip = tool("ip", "")?;
        let nsenter = tool("nsenter", "")?;
        let sh = tool("sh", "")?;
        let mount = cgroup::find_mount(opts.cgroup)?;
        let workload = if opts.workload.is_empty() {
            default_workload()?
        } else {
            opts.workload
        };

        let prefix = match opts.prefix {
            Some(p) => {
                if p.is_empty()
                    || p.len() > 20
                    || !p
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(invalid(
                        format!("prefix {p:?}"),
                        "want 1 to 20 of [A-Za-z0-9_-]",
                    ));
                }
                p
            }
            None => loop {
                let n = COUNTER.fetch_add(1, Ordering::Relaxed);
                let p = format!("vl{}-{n}", std::process::id() % 100_000);
                let taken = Path::new("/run/netns").join(format!("{p}h")).exists()
                    || mount.join(&p).exists();
                if !taken {
                    break p;
                }
            },
        };
        let host_ns = format!("{prefix}h");
        let cgroup_parent = mount.join(&prefix);
        if Path::new("/run/netns").join(&host_ns).exists() {
            return Err(LabError::Exists(format!("network namespace {host_ns}")));
        }
        if cgroup_parent.exists() {
            return Err(LabError::Exists(format!(
                "cgroup {}",
                cgroup_parent.display()
            )));
        }

        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("vmnap-lab-{prefix}-{nanos:08x}"));
        std::fs::create_dir(&dir).map_err(io_err(format!("create {}", dir.display())))?;

        let mut lab = Lab {
            prefix,
            host_ns: host_ns.clone(),
            cgroup_kind: opts.cgroup,
            cgroup_parent: cgroup_parent.clone(),
            workload,
            dir: dir.clone(),
            ip,
            nsenter,
            sh,
            guests: Vec::new(),
            clients: Vec::new(),
            vms: Vec::new(),
            libvirt: libvirt::LabLibvirt::default(),
            procs: Arc::new(Mutex::new(Vec::new())),
            undo: vec![Undo::Dir(dir)],
            captures: AtomicU32::new(0),
        };
        // From here on, a `?` drops `lab`, which undoes what was done.
        std::fs::create_dir(&cgroup_parent)
            .map_err(io_err(format!("create cgroup {}", cgroup_parent.display())))?;
        lab.undo.push(Undo::CgroupDir(cgroup_parent));
        lab.add_netns(&host_ns)?;
        let h = host_ns.as_str();
        lab.sysctl(h, "net/ipv6/conf/default/disable_ipv6", "1")?;
        lab.ip(&["-n", h, "link", "set", "lo", "up"])?;
        lab.ip(&[
            "-n",
            h,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        lab.ip(&[
            "-n",
            h,
            "link",
            "set",
            BRIDGE,
            "address",
            &Mac(BRIDGE_MAC).to_string(),
        ])?;
        lab.ip(&["-n", h, "link", "set", BRIDGE, "up"])?;
        Ok(lab)
    }

    /// The prefix of every global name of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The host namespace (`<prefix>h`), which holds the bridge.
    pub fn host_netns(&self) -> &str {
        &self.host_ns
    }

    /// `/run/netns/<name>` of a namespace.
    pub fn netns_path(netns: &str) -> PathBuf {
        Path::new("/run/netns").join(netns)
    }

    /// The bridge (`br0`).
    pub fn bridge(&self) -> &str {
        BRIDGE
    }

    /// The cgroup kind of the guests.
    pub fn cgroup_kind(&self) -> CgroupKind {
        self.cgroup_kind
    }

    /// The lab's cgroup parent directory (`<mount>/<prefix>`).
    pub fn cgroup_parent(&self) -> &Path {
        &self.cgroup_parent
    }

    /// The lab's temporary directory (logs, captures, UDP logs); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The guest called `name`.
    pub fn guest(&self, name: &str) -> Option<&LabGuest> {
        self.guests.iter().find(|g| g.name == name)
    }

    /// All guests, in the order they were added.
    pub fn guests(&self) -> &[LabGuest] {
        &self.guests
    }

    /// The client called `name`.
    pub fn client(&self, name: &str) -> Option<&LabClient> {
        self.clients.iter().find(|c| c.name == name)
    }

    /// All clients, in the order they were added.
    pub fn clients(&self) -> &[LabClient] {
        &self.clients
    }

    /// Every namespace of this lab (host first).
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.host_ns.clone()];
        v.extend(self.guests.iter().map(|g| g.netns.clone()));
        v.extend(self.clients.iter().map(|c| c.netns.clone()));
        v
    }

    fn own_netns(&self, netns: &str) -> Result<(), LabError> {
        let ours = self
            .undo
            .iter()
            .any(|u| matches!(u, Undo::Netns(n) if n == netns));
        if ours {
            Ok(())
        } else {
            Err(LabError::ForeignNetns(netns.to_string()))
        }
    }

    fn ip(&self, args: &[&str]) -> Result<Output, LabError> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let out = Command::new(&self.ip)
            .args(&args)
            .stdin(Stdio::null())
            .output();
        checked(&self.ip, &args, out)
    }

    fn sysctl(&self, netns: &str, key: &str, value: &str) -> Result<(), LabError> {
        // `ip netns exec` remounts /sys and keeps /proc/sys per-namespace for net.
        let script = format!("echo {value} > /proc/sys/{key}");
        self.exec_checked(netns, &["sh", "-c", &script]).map(|_| ())
    }

    fn add_netns(&mut self, name: &str) -> Result<(), LabError> {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if Self::netns_path(name).exists() {
            return Err(LabError::Exists(format!("network namespace {name}")));
        }
        self.ip(&["netns", "add", name])?;
        self.undo.push(Undo::Netns(name.to_string()));
        Ok(())
    }

    /// Makes a namespace `netns` with lo up, connected to the bridge by a veth pair whose
    /// host side is `host_if` (MAC `host_mac`) and guest side `eth0`; addresses on `eth0`
    /// (MAC `mac`) or on `eth0.<vlan>` (MAC `mac`; `eth0` then gets `lower_mac`, no
    /// addresses and no IPv6).
    #[allow(clippy::too_many_arguments)]
    fn plumb(
        &mut self,
        netns: &str,
        host_if: &str,
        host_mac: [u8; 6],
        mac: [u8; 6],
        lower_mac: [u8; 6],
        vlan: u16,
        ipv4: Ipv4Addr,
        ipv6: Ipv6Addr,
    ) -> Result<(), LabError> {
        self.add_netns(netns)?;
        let h = self.host_ns.clone();
        self.ip(&["-n", netns, "link", "set", "lo", "up"])?;
        self.ip(&[
            "-n",
            &h,
            "link",
            "add",
            host_if,
            "address",
            &Mac(host_mac).to_string(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns,
        ])?;
        let eth0_mac = if vlan == 0 { mac } else { lower_mac };
        self.ip(&[
            "-n",
            netns,
            "link",
            "set",
            "eth0",
            "address",
            &Mac(eth0_mac).to_string(),
        ])?;
        let ifname = addressed_if(vlan);
        if vlan != 0 {
            self.sysctl(netns, "net/ipv6/conf/eth0/disable_ipv6", "1")?;
            self.ip(&["-n", netns, "link", "set", "eth0", "up"])?;
            let vid = vlan.to_string();
            let kernel_vlan = self.ip(&[
                "-n",
                netns,
                "link",
                "add",
                "link",
                "eth0",
                "name",
                &ifname,
                "address",
                &Mac(mac).to_string(),
                "type",
                "vlan",
                "id",
                &vid,
            ]);
            match kernel_vlan {
                Ok(_) => {}
                Err(LabError::Command { stderr, .. }) if stderr.contains("Unknown device type") => {
                    // No CONFIG_VLAN_8021Q: a veth pair plus a user-space tagging relay.
                    let relay_if = format!("vlr{vlan}");
                    self.ip(&[
                        "-n",
                        netns,
                        "link",
                        "add",
                        &ifname,
                        "address",
                        &Mac(mac).to_string(),
                        "type",
                        "veth",
                        "peer",
                        "name",
                        &relay_if,
                    ])?;
                    self.sysctl(
                        netns,
                        &format!("net/ipv6/conf/{relay_if}/disable_ipv6"),
                        "1",
                    )?;
                    self.ip(&["-n", netns, "link", "set", &relay_if, "up"])?;
                    self.ip(&["-n", netns, "link", "set", &ifname, "up"])?;
                    self.start_vlan_relay(netns, &relay_if, vlan)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.ip(&[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{ipv4}/15"),
            "dev",
            &ifname,
        ])?;
        self.ip(&[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{ipv6}/64"),
            "dev",
            &ifname,
            "nodad",
        ])?;
        self.ip(&["-n", netns, "link", "set", &ifname, "up"])?;
        self.ip(&["-n", &h, "link", "set", host_if, "master", BRIDGE])?;
        self.ip(&["-n", &h, "link", "set", host_if, "up"])?;
        Ok(())
    }

    /// Starts the user-space 802.1Q relay (see [`vlan_relay`]) between `eth0` and
    /// `relay_if` in `netns`, outside any guest cgroup, and waits until it runs.
    fn start_vlan_relay(&self, netns: &str, relay_if: &str, vlan: u16) -> Result<(), LabError> {
        let ready = self.dir.join(format!("{netns}.vlan{vlan}.ready"));
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", netns])
            .args(&self.workload)
            .args([
                "--vlan-relay",
                "eth0",
                relay_if,
                &vlan.to_string(),
                "--ready",
            ])
            .arg(&ready)
            .stdin(Stdio::null());
        let pid = self.spawn_tracked(cmd, format!("VLAN {vlan} relay in {netns}"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready.exists() {
            let exited = lock(&self.procs)
                .iter_mut()
                .find(|p| p.child.id() == pid)
                .map(|p| p.child.try_wait().ok().flatten());
            if let Some(Some(status)) = exited {
                return Err(LabError::Command {
                    cmd: format!("VLAN {vlan} relay in {netns}"),
                    status: status.to_string(),
                    stderr: "(see the test's stderr)".into(),
                });
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout(format!(
                    "VLAN {vlan} relay in {netns} did not start"
                )));
            }
            sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Adds a guest: namespace `<prefix>g<name>`, veth `vg-<name>` on the bridge, addresses,
    /// cgroup `<mount>/<prefix>/<name>`, and the workload started inside that cgroup from
    /// its first instruction. Returns once the workload listens.
    pub fn add_guest(&mut self, spec: GuestSpec) -> Result<&LabGuest, LabError> {
        check_name("guest", &spec.name)?;
        check_addrs(spec.ipv4, spec.ipv6)?;
        check_mac(&spec.mac)?;
        check_vlan(spec.vlan)?;
        if self.guest(&spec.name).is_some() {
            return Err(invalid(
                format!("guest name {:?}", spec.name),
                "already used",
            ));
        }
        let idx = u8::try_from(self.guests.len() + 1)
            .map_err(|_| invalid("guest count", "at most 255 guests"))?;
        let name = spec.name.clone();
        let netns = format!("{}g{name}", self.prefix);
        let host_if = format!("vg-{name}");
        self.plumb(
            &netns,
            &host_if,
            [0x02, 0x00, 0x00, 0xfe, 0x00, idx],
            spec.mac,
            [0x02, 0x00, 0x00, 0xfc, 0x00, idx],
            spec.vlan,
            spec.ipv4,
            spec.ipv6,
        )?;

        let cg = self.cgroup_parent.join(&name);
        std::fs::create_dir(&cg).map_err(io_err(format!("create cgroup {}", cg.display())))?;
        self.undo.push(Undo::CgroupDir(cg.clone()));

        let ready = self.dir.join(format!("{name}.ready"));
        let log = self.dir.join(format!("{name}.log"));
        let udp_log = spec
            .udp_log_port
            .map(|_| self.dir.join(format!("{name}.udp.log")));
        let mut workload_args: Vec<OsString> = self.workload.clone();
        workload_args.extend(["--name".into(), name.clone().into()]);
        if let Some(p) = spec.http_port {
            workload_args.extend(["--http".into(), p.to_string().into()]);
        }
        if let (Some(p), Some(f)) = (spec.udp_log_port, &udp_log) {
            let mut v = OsString::from(format!("{p}="));
            v.push(f.as_os_str());
            workload_args.extend(["--udp-log".into(), v]);
        }
        workload_args.extend(["--ready".into(), ready.clone().into_os_string()]);

        let logf = File::create(&log).map_err(io_err(format!("create {}", log.display())))?;
        let logf2 = logf.try_clone().map_err(io_err("dup log file"))?;
        let script =
            r#"cg=$1; ns=$2; ne=$3; shift 3; echo $$ > "$cg" && exec "$ne" --net="$ns" -- "$@""#;
        let child = Command::new(&self.sh)
            .arg("-c")
            .arg(script)
            .arg("vmnap-lab-guest")
            .arg(cg.join("cgroup.procs"))
            .arg(Self::netns_path(&netns))
            .arg(&self.nsenter)
            .args(&workload_args)
            .stdin(Stdio::null())
            .stdout(logf)
            .stderr(logf2)
            .spawn()
            .map_err(io_err("spawn guest workload with sh"))?;
        let pid = child.id();
        self.undo.push(Undo::Workload {
            proc: Proc {
                child,
                what: format!("workload of guest {name}"),
            },
            cgroup: cg.clone(),
        });

        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready.exists() {
            let exited = match self.undo.last_mut() {
                Some(Undo::Workload { proc, .. }) => proc.child.try_wait().ok().flatten(),
                _ => None,
            };
            if let Some(status) = exited {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(LabError::Command {
                    cmd: format!(
                        "workload of guest {name}: {}",
                        workload_args
                            .iter()
                            .map(|a| a.to_string_lossy())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    status: status.to_string(),
                    stderr: text.trim().to_string(),
                });
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout(format!(
                    "workload of guest {name} did not write {} within {READY_TIMEOUT:?} (log {})",
                    ready.display(),
                    log.display()
                )));
            }
            sleep(Duration::from_millis(5));
        }

        self.guests.push(LabGuest {
            name,
            netns,
            host_if,
            mac: spec.mac,
            ipv4: spec.ipv4,
            ipv6: spec.ipv6,
            vlan: spec.vlan,
            cgroup: cg,
            workload_pid: pid,
            udp_log,
        });
        let g = self.guests.len() - 1;
        Ok(&self.guests[g])
    }

    /// Adds a client: namespace `<prefix>c<name>`, veth `vc-<name>` on the bridge, MAC
    /// `02:00:00:cc:00:<n>` (n = 1, 2, ... in order of addition), addresses as for guests.
    pub fn add_client(
        &mut self,
        name: &str,
        ipv4: Ipv4Addr,
        ipv6: Ipv6Addr,
        vlan: u16,
    ) -> Result<&LabClient, LabError> {
        check_name("client", name)?;
        check_addrs(ipv4, ipv6)?;
        check_vlan(vlan)?;
        if self.client(name).is_some() {
            return Err(invalid(format!("client name {name:?}"), "already used"));
        }
        let idx = u8::try_from(self.clients.len() + 1)
            .map_err(|_| invalid("client count", "at most 255 clients"))?;
        let netns = format!("{}c{name}", self.prefix);
        let host_if = format!("vc-{name}");
        let mac = [0x02, 0x00, 0x00, 0xcc, 0x00, idx];
        self.plumb(
            &netns,
            &host_if,
            [0x02, 0x00, 0x00, 0xfd, 0x00, idx],
            mac,
            [0x02, 0x00, 0x00, 0xfb, 0x00, idx],
            vlan,
            ipv4,
            ipv6,
        )?;
        self.clients.push(LabClient {
            name: name.to_string(),
            netns,
            ipv4,
            ipv6,
            vlan,
            host_if,
            mac,
        });
        let c = self.clients.len() - 1;
        Ok(&self.clients[c])
    }

    /// Runs a command in namespace `netns` (`ip netns exec`, which also gives it the
    /// namespace's own `/sys`), waits, and returns its `Output` whatever its exit status.
    /// `netns` must be one of the lab's.
    pub fn exec(&self, netns: &str, argv: &[&str]) -> Result<Output, LabError> {
        self.own_netns(netns)?;
        if argv.is_empty() {
            return Err(invalid("argv", "empty"));
        }
        Command::new(&self.ip)
            .args(["netns", "exec", netns])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!(
                "run `ip netns exec {netns} {}`",
                argv.join(" ")
            )))
    }

    /// Like [`Lab::exec`] but fails unless the command exits 0.
    pub fn exec_checked(&self, netns: &str, argv: &[&str]) -> Result<Output, LabError> {
        let out = self.exec(netns, argv)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(LabError::Command {
                cmd: format!("ip netns exec {netns} {}", argv.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn spawn_tracked(&self, mut cmd: Command, what: String) -> Result<u32, LabError> {
        let child = cmd.spawn().map_err(io_err(format!("spawn {what}")))?;
        let pid = child.id();
        lock(&self.procs).push(Proc { child, what });
        Ok(pid)
    }

    /// Spawns a long-running process in the host namespace with
    /// `nsenter --net=/run/netns/HOST` (which keeps the root `/sys`, so it can freeze
    /// cgroups; `/sys/class/net` then shows the root namespace's links, so read links over
    /// netlink). Standard output and error go to `stderr_to` (created/truncated) or are
    /// inherited. The lab ends it by PID on drop if it still runs.
    pub fn spawn_in_host(
        &self,
        argv: &[&OsStr],
        stderr_to: Option<&Path>,
    ) -> Result<u32, LabError> {
        if argv.is_empty() {
            return Err(invalid("argv", "empty"));
        }
        let mut cmd = Command::new(&self.nsenter);
        let mut net = OsString::from("--net=");
        net.push(Self::netns_path(&self.host_ns));
        cmd.arg(net).arg("--").args(argv).stdin(Stdio::null());
        if let Some(p) = stderr_to {
            let f = File::create(p).map_err(io_err(format!("create {}", p.display())))?;
            let f2 = f.try_clone().map_err(io_err("dup stderr file"))?;
            cmd.stdout(f).stderr(f2);
        }
        let what = format!("{} (host ns)", cmd_line(Path::new(argv[0]), &argv[1..]));
        self.spawn_tracked(cmd, what)
    }

    /// Spawns a long-running process in namespace `netns` (`ip netns exec`; the PID is the
    /// program's own). Output is inherited. The lab ends it by PID on drop if it still runs.
    pub fn spawn_in(&self, netns: &str, argv: &[&OsStr]) -> Result<u32, LabError> {
        self.own_netns(netns)?;
        if argv.is_empty() {
            return Err(invalid("argv", "empty"));
        }
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", netns])
            .args(argv)
            .stdin(Stdio::null());
        let what = format!("{} (ns {netns})", cmd_line(Path::new(argv[0]), &argv[1..]));
        self.spawn_tracked(cmd, what)
    }

    /// Ends a process this lab started (by [`Lab::spawn_in_host`], [`Lab::spawn_in`], or a
    /// guest's workload): SIGTERM, wait up to 2 s, then SIGKILL; reaps it. A guest's
    /// cgroup is thawed first. Unknown PIDs are ignored (nothing is sent to them).
    pub fn kill(&mut self, pid: u32) {
        if let Some(mut p) = take_proc(&self.procs, pid) {
            if let Err(e) = terminate(&mut p, Duration::from_secs(2)) {
                eprintln!("vmnap-lab: {e}");
            }
            return;
        }
        let kind = self.cgroup_kind;
        for u in &mut self.undo {
            if let Undo::Workload { proc, cgroup } = u {
                if proc.child.id() == pid {
                    let _ = cgroup::set_frozen(cgroup, kind, false);
                    if let Err(e) = terminate(proc, Duration::from_secs(2)) {
                        eprintln!("vmnap-lab: {e}");
                    }
                    return;
                }
            }
        }
    }

    /// Whether a process this lab started is still running (not yet exited).
    pub fn is_running(&mut self, pid: u32) -> bool {
        if let Some(p) = lock(&self.procs).iter_mut().find(|p| p.child.id() == pid) {
            return matches!(p.child.try_wait(), Ok(None));
        }
        self.undo.iter_mut().any(|u| match u {
            Undo::Workload { proc, .. } if proc.child.id() == pid => {
                matches!(proc.child.try_wait(), Ok(None))
            }
            _ => false,
        })
    }

    /// Starts `tcpdump -i IFACE -nn -U --immediate-mode -Z root -w FILE FILTER` in `netns`
    /// and returns once it listens. [`Capture::stop`] ends it and decodes the file.
    pub fn capture(&self, netns: &str, iface: &str, filter: &str) -> Result<Capture, LabError> {
        self.own_netns(netns)?;
        let tcpdump = tool("tcpdump", "packet captures")?;
        let n = self.captures.fetch_add(1, Ordering::Relaxed) + 1;
        let file = self.dir.join(format!("cap{n}-{iface}.pcap"));
        let errf = self.dir.join(format!("cap{n}-{iface}.err"));
        let err = File::create(&errf).map_err(io_err(format!("create {}", errf.display())))?;
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", netns])
            .arg(&tcpdump)
            .args([
                "-i",
                iface,
                "-nn",
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
                "-w",
            ])
            .arg(&file);
        if !filter.trim().is_empty() {
            cmd.arg(filter);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let pid = self.spawn_tracked(cmd, format!("tcpdump -i {iface} in {netns}"))?;
        let capture = Capture {
            pid,
            file,
            tcpdump,
            procs: self.procs.clone(),
            stopped: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&errf).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(capture);
            }
            let exited = lock(&self.procs)
                .iter_mut()
                .find(|p| p.child.id() == pid)
                .map(|p| p.child.try_wait().ok().flatten());
            if let Some(Some(status)) = exited {
                return Err(LabError::Command {
                    cmd: format!("tcpdump -i {iface} in {netns}"),
                    status: status.to_string(),
                    stderr: text.trim().to_string(),
                });
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout(format!(
                    "tcpdump on {iface} in {netns} did not start"
                )));
            }
            sleep(Duration::from_millis(5));
        }
    }

    /// The MAC address of `iface` in `netns` (from `ip -o link show`).
    pub fn link_mac(&self, netns: &str, iface: &str) -> Result<[u8; 6], LabError> {
        self.own_netns(netns)?;
        let out = self.ip(&["-n", netns, "-o", "link", "show", "dev", iface])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .ok_or_else(|| {
                invalid(
                    format!("link {iface} in {netns}"),
                    "has no link/ether address",
                )
            })?;
        mac.parse::<Mac>()
            .map(|m| m.0)
            .map_err(|_| invalid(format!("MAC {mac:?}"), "unparsable"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let report = |e: String| eprintln!("vmnap-lab {}: cleanup: {e}", self.prefix);
        // libvirt domains and the lab's libvirtd first (they use the namespaces and dirs).
        self.libvirt.shutdown(&report);
        // Processes started after the topology (daemons, captures) go first.
        let procs: Vec<Proc> = lock(&self.procs).drain(..).collect();
        for mut p in procs.into_iter().rev() {
            if let Err(e) = terminate(&mut p, Duration::from_secs(2)) {
                report(e);
            }
        }
        let kind = self.cgroup_kind;
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Workload { mut proc, cgroup } => {
                    if let Err(e) = cgroup::kill_members(&cgroup, kind, Duration::from_secs(5)) {
                        report(e);
                    }
                    // It was SIGKILLed through the cgroup (or was never in it): make sure and reap.
                    if let Err(e) = terminate(&mut proc, Duration::ZERO) {
                        report(e);
                    }
                }
                Undo::CgroupDir(dir) => {
                    if let Err(e) = cgroup::remove(&dir, kind) {
                        report(e);
                    }
                }
                Undo::Netns(name) => {
                    let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = self.ip(&["netns", "del", &name]) {
                        report(e.to_string());
                    }
                }
                Undo::Link { netns, name } => {
                    // Gone already if its owner took it along; anything else is reported.
                    if let Err(e) = self.ip(&["-n", &netns, "link", "del", &name]) {
                        if !e.to_string().contains("Cannot find device") {
                            report(e.to_string());
                        }
                    }
                }
                Undo::Dir(dir) => {
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        report(format!("remove {}: {e}", dir.display()));
                    }
                }
            }
        }
    }
}

/// A running `tcpdump` started by [`Lab::capture`]. Dropping it without [`Capture::stop`]
/// ends tcpdump too.
#[derive(Debug)]
pub struct Capture {
    pid: u32,
    file: PathBuf,
    tcpdump: PathBuf,
    procs: Procs,
    stopped: bool,
}

impl Capture {
    /// The pcap file being written.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// tcpdump's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Ends tcpdump (by PID) and returns the decoded packets, one line each
    /// (`tcpdump -nn -r FILE`).
    pub fn stop(self) -> Result<Vec<String>, LabError> {
        self.stop_with(&[])
    }

    /// Like [`Capture::stop`], with extra arguments for the decoding run (for example
    /// `["-e"]` for link-level headers, MACs and VLAN tags, or `["-v"]`).
    pub fn stop_with(mut self, read_args: &[&str]) -> Result<Vec<String>, LabError> {
        // Let packets that are on their way reach tcpdump's buffer.
        sleep(Duration::from_millis(100));
        self.end();
        let mut args: Vec<&OsStr> = vec![OsStr::new("-nn")];
        args.extend(read_args.iter().map(OsStr::new));
        args.push(OsStr::new("-r"));
        args.push(self.file.as_os_str());
        let out = Command::new(&self.tcpdump)
            .args(&args)
            .stdin(Stdio::null())
            .output();
        let out = checked(&self.tcpdump, &args, out)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    fn end(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Some(mut p) = take_proc(&self.procs, self.pid) {
            if let Err(e) = terminate(&mut p, Duration::from_secs(2)) {
                eprintln!("vmnap-lab: {e}");
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(check_addrs(
            "198.18.0.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap()
        )
        .is_ok());
        assert!(check_addrs(
            "198.19.3.4".parse().unwrap(),
            "2001:db8:1::1".parse().unwrap()
        )
        .is_ok());
        assert!(check_addrs(
            "198.20.0.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap()
        )
        .is_err());
        assert!(check_addrs("10.0.0.1".parse().unwrap(), "2001:db8::1".parse().unwrap()).is_err());
        assert!(check_addrs(
            "198.18.0.1".parse().unwrap(),
            "2001:db9::1".parse().unwrap()
        )
        .is_err());
        assert!(check_mac(&[2, 0, 0, 0, 0, 1]).is_ok());
        assert!(check_mac(&[0x52, 0x54, 0, 0, 0, 1]).is_ok());
        assert!(check_mac(&[0, 0x16, 0x3e, 0, 0, 1]).is_err());
        assert!(check_mac(&[3, 0, 0, 0, 0, 1]).is_err());
        assert!(check_name("guest", "g1").is_ok());
        assert!(check_name("guest", "abcdefghijklm").is_err());
        assert!(check_name("guest", "a b").is_err());
        assert!(check_vlan(4095).is_err());
        assert_eq!(Mac(BRIDGE_MAC).to_string(), "02:00:00:ff:ff:fe");
    }
}
