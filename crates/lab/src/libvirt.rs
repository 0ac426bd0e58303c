//! A real libvirtd of the lab's own, and libvirt domains on the lab's bridge.
//!
//! [`Lab::start_libvirtd`] starts `libvirtd` (the monolithic daemon of Debian's
//! `libvirt-daemon`, with `libvirt-daemon-driver-qemu`) in the foreground as a child of the
//! test, in a private mount namespace and inside the lab's host network namespace:
//!
//! ```text
//! unshare --mount --propagation slave -- sh -c 'mount --bind ...; exec nsenter --net=/run/netns/HOST -- libvirtd -f /etc/libvirt/libvirtd.conf'
//! ```
//!
//! In that mount namespace `/run/libvirt`, `/var/lib/libvirt`, `/var/cache/libvirt`,
//! `/var/log/libvirt` and `/etc/libvirt` (and `/var/run/libvirt` where `/var/run` is not a
//! link to `/run`) are bind mounts of directories under `<lab dir>/libvirt/`, so labs never
//! share a socket, a domain, state or configuration with each other or with the machine.
//! The mounts exist only in that namespace and vanish with its last process (libvirtd and
//! its QEMUs). The propagation is `slave` so that network namespaces that other labs delete
//! in the root mount namespace are unmounted here too (a private copy would pin them).
//! `nsenter` (not `ip netns exec`) keeps the host's `/sys` (see docs/design.md).
//! The taps libvirt creates for `<interface type='bridge'>` land in the lab's host
//! namespace, beside `br0`. The mount points themselves must exist in the root file
//! system: missing ones are created (empty directories, left in place).
//!
//! The daemon's configuration is written to the lab's `etc`: `libvirtd.conf` (UNIX sockets
//! only, no authentication, rw socket mode 0700) and the `qemu.conf` that works without
//! systemd (user and group root, `dynamic_ownership = 0`, `remember_owner = 0`,
//! `security_driver = "none"`, `stdio_handler = "file"`, `namespaces = [ ]`,
//! `cgroup_controllers = [ ]`). The qemu driver refuses to start unless the user and group
//! `libvirt-qemu` exist; they are created (`groupadd -r`, `useradd -r`) if missing.
//!
//! Clients in the root mount namespace reach the daemon with the URI
//! `qemu:///system?socket=<lab dir>/libvirt/run/libvirt-sock` ([`Libvirtd::uri`]).
//!
//! The first domain start of a libvirtd probes QEMU's capabilities (several seconds under
//! TCG); the result is cached in the lab's `/var/cache/libvirt`. To pay that once per test
//! process rather than once per lab, the cache files of the first lab that has one are kept
//! in memory and copied into the cache directory of every later lab before its libvirtd
//! starts (libvirt checks their validity itself: binary times, versions, host CPU).
//!
//! [`Lab::define_domain`] defines and starts a domain booting the project's guest image
//! (see [`crate::qemu`]): `<domain type='qemu'>` (TCG, 32 MiB translation cache), q35,
//! 128 MiB, one virtio NIC on `br0` and the serial console appended to
//! `<lab dir>/<name>.console.log`.
//!
//! When the lab drops, every domain of its libvirtd is destroyed through `virsh`, the
//! daemon is ended by PID (SIGTERM, then SIGKILL), and any QEMU that is still there (found
//! through libvirt's pid files, and only if it is in the daemon's mount namespace) is
//! killed by PID.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use vmnap_wire::Mac;

use crate::qemu::{GuestImage, READY_LINE, UDP_LOG_PREFIX, VM_READY_TIMEOUT};
use crate::{
    check_addrs, check_name, find_tool, invalid, io_err, Lab, LabError, MissingTool, BRIDGE,
};

/// The Debian packages a lab's libvirtd needs (`apt-get install --no-install-recommends
/// ...`); not `libvirt-daemon-system`, which pulls in systemd, polkit and iptables.
pub const APT_PACKAGES: &[&str] = &[
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
];
/// How long [`Lab::start_libvirtd`] waits for the daemon to answer.
pub const LIBVIRTD_TIMEOUT: Duration = Duration::from_secs(30);
/// The `qemu.conf` written for the lab's libvirtd.
pub const QEMU_CONF: &str = "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\n\
remember_owner = 0\nsecurity_driver = \"none\"\nstdio_handler = \"file\"\n\
namespaces = [ ]\ncgroup_controllers = [ ]\n";
/// The `libvirtd.conf` written for the lab's libvirtd.
pub const LIBVIRTD_CONF: &str = "listen_tls = 0\nlisten_tcp = 0\nauth_unix_ro = \"none\"\n\
auth_unix_rw = \"none\"\nunix_sock_group = \"root\"\nunix_sock_ro_perms = \"0700\"\n\
unix_sock_rw_perms = \"0700\"\nunix_sock_admin_perms = \"0700\"\n";

/// The directories bind-mounted into libvirtd's mount namespace: (subdirectory of
/// `<lab dir>/libvirt`, mount point).
const MOUNTS: &[(&str, &str)] = &[
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("cache", "/var/cache/libvirt"),
    ("log", "/var/log/libvirt"),
    ("etc", "/etc/libvirt"),
];

/// Serialises `groupadd`/`useradd` within the process.
static USER_LOCK: Mutex<()> = Mutex::new(());
/// QEMU capabilities cache files (name, contents) of the first lab that produced them.
static CAPS_SEED: Mutex<Vec<(OsString, Vec<u8>)>> = Mutex::new(Vec::new());

/// A libvirtd started by [`Lab::start_libvirtd`]; ended when the lab drops.
#[derive(Debug)]
pub struct Libvirtd {
    child: Child,
    pid: u32,
    root: PathBuf,
    uri: String,
    socket: PathBuf,
    log: PathBuf,
    mnt_ns: String,
    virsh: PathBuf,
    start_time: Duration,
    seeded_caps: bool,
}

impl Libvirtd {
    /// The URI a client in the root mount namespace uses:
    /// `qemu:///system?socket=<lab dir>/libvirt/run/libvirt-sock`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The daemon's read-write UNIX socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// libvirtd's PID (its own: `unshare`, `sh` and `nsenter` exec into it).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `<lab dir>/libvirt`: `run`, `lib`, `cache`, `log` and `etc` are mounted over
    /// `/run/libvirt`, `/var/lib/libvirt`, `/var/cache/libvirt`, `/var/log/libvirt` and
    /// `/etc/libvirt` in the daemon's mount namespace.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The daemon's standard output and error.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The daemon's mount namespace as `/proc/PID/ns/mnt` names it (`mnt:[...]`).
    pub fn mnt_ns(&self) -> &str {
        &self.mnt_ns
    }

    /// From spawning the daemon to its first answer.
    pub fn start_time(&self) -> Duration {
        self.start_time
    }

    /// Whether the QEMU capabilities cache was seeded from an earlier lab of this process.
    pub fn seeded_caps(&self) -> bool {
        self.seeded_caps
    }

    /// Runs `virsh -c URI ARGS...`; fails unless it exits 0.
    pub fn virsh(&self, args: &[&str]) -> Result<Output, LabError> {
        virsh(&self.virsh, &self.uri, args)
    }

    /// Names of the daemon's domains (`virsh list --all --name`).
    pub fn domain_names(&self) -> Result<Vec<String>, LabError> {
        let out = self.virsh(&["list", "--all", "--name"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }
}

fn virsh(virsh: &Path, uri: &str, args: &[&str]) -> Result<Output, LabError> {
    let out = Command::new(virsh)
        .arg("-q")
        .arg("-c")
        .arg(uri)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run virsh {}", args.join(" "))))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(LabError::Command {
            cmd: format!("virsh -c {uri} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// What [`Lab::define_domain`] defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// Domain name (1 to 12 of `[A-Za-z0-9_-]`), unique in the lab; the guest says
    /// `hello from NAME`.
    pub name: String,
    /// IPv4 address in 198.18.0.0/15 (configured as /15).
    pub ipv4: Ipv4Addr,
    /// IPv6 address in 2001:db8::/32 (configured as /64).
    pub ipv6: Ipv6Addr,
    /// MAC of the virtio NIC: `52:54:00:..` or `02:..`.
    pub mac: [u8; 6],
    /// Kernel and initramfs.
    pub image: GuestImage,
    /// Guest memory in MiB (128 is the smallest that boots).
    pub memory_mib: u32,
    /// XML put inside the domain's `<metadata>` as is (like
    /// `<vmnap:guest xmlns:vmnap="https://example.org/vmnap"/>`); `None`: no `<metadata>`.
    pub metadata: Option<String>,
    /// Its RAM a file mapped shared (`<memoryBacking><source type='file'/><access
    /// mode='shared'/></memoryBacking>`, in the lab libvirtd's `memory_backing_dir`), as
    /// page-out sleep needs.
    pub file_backed: bool,
    /// Run QEMU through this program (the domain's `<emulator>` is then a script of the
    /// lab's that runs `PROGRAM ARGS... QEMU "$@"`, such as `vmnap run-qemu`); empty: QEMU
    /// itself.
    pub emulator_wrapper: Vec<String>,
}

impl DomainSpec {
    /// A spec with the defaults: MAC `52:54:00:` followed by the last three bytes of
    /// `ipv4`, 128 MiB.
    pub fn new(name: &str, ipv4: Ipv4Addr, ipv6: Ipv6Addr, image: GuestImage) -> DomainSpec {
        let o = ipv4.octets();
        DomainSpec {
            name: name.to_string(),
            ipv4,
            ipv6,
            mac: [0x52, 0x54, 0x00, o[1], o[2], o[3]],
            image,
            memory_mib: 128,
            metadata: None,
            file_backed: false,
            emulator_wrapper: Vec::new(),
        }
    }
}

/// A libvirt domain of the lab (a snapshot taken when it became ready; taps change when
/// the domain is restarted, see [`LabDomain::current_tap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabDomain {
    /// Domain name.
    pub name: String,
    /// MAC of its NIC.
    pub mac: [u8; 6],
    /// IPv4 address.
    pub ipv4: Ipv4Addr,
    /// IPv6 address.
    pub ipv6: Ipv6Addr,
    /// Its tap in the lab's host namespace (`vnetN`, named by libvirt) when it became ready.
    pub tap: String,
    /// Serial console (`<lab dir>/<name>.console.log`, appended to across restarts).
    pub console: PathBuf,
    /// The URI of the lab's libvirtd.
    pub uri: String,
    /// libvirt's log of this domain's QEMU (`<lab dir>/libvirt/log/qemu/<name>.log`).
    pub qemu_log: PathBuf,
    /// libvirt's pid file of this domain's QEMU (`<lab dir>/libvirt/run/qemu/<name>.pid`).
    pub pidfile: PathBuf,
    /// The domain XML that was defined.
    pub xml: String,
    /// `virsh define`.
    pub define_time: Duration,
    /// From `virsh start` to [`READY_LINE`] on the console.
    pub boot_time: Duration,
    virsh: PathBuf,
}

impl LabDomain {
    /// Runs `virsh -c URI ARGS...`; fails unless it exits 0.
    pub fn virsh(&self, args: &[&str]) -> Result<Output, LabError> {
        virsh(&self.virsh, &self.uri, args)
    }

    /// Runs `virsh -c URI COMMAND NAME` (for example `suspend`, `resume`, `managedsave`,
    /// `start`, `destroy`) and returns how long it took.
    pub fn run(&self, command: &str) -> Result<Duration, LabError> {
        let t = Instant::now();
        self.virsh(&[command, &self.name])?;
        Ok(t.elapsed())
    }

    /// `virsh domstate NAME` (`running`, `paused`, `shut off`, ...).
    pub fn state(&self) -> Result<String, LabError> {
        let out = self.virsh(&["domstate", &self.name])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The domain's tap now, from `virsh domiflist` (`None` while it is not running).
    pub fn current_tap(&self) -> Result<Option<String>, LabError> {
        let out = self.virsh(&["domiflist", &self.name])?;
        Ok(parse_domiflist(
            &String::from_utf8_lossy(&out.stdout),
            &self.mac,
        ))
    }

    /// The PID of the domain's QEMU from libvirt's pid file, if it exists and names a
    /// running process.
    pub fn qemu_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// The serial console so far (lossy UTF-8; empty if unreadable).
    pub fn console_text(&self) -> String {
        read_lossy(&self.console)
    }

    /// The payloads the guest's UDP logger has written to the console so far, in order.
    pub fn udp_lines(&self) -> Vec<String> {
        self.console_text()
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix(UDP_LOG_PREFIX))
            .map(str::to_string)
            .collect()
    }
}

/// libvirt state of a lab (a field of [`Lab`]).
#[derive(Debug, Default)]
pub(crate) struct LabLibvirt {
    daemon: Option<Libvirtd>,
    domains: Vec<LabDomain>,
}

fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// The tap of the interface with MAC `mac` in `virsh -q domiflist` output (`-` while the
/// domain is not running: `None`).
fn parse_domiflist(text: &str, mac: &[u8; 6]) -> Option<String> {
    let want = Mac(*mac).to_string();
    text.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.len() >= 5 && cols[4].eq_ignore_ascii_case(&want) && cols[0] != "-")
            .then(|| cols[0].to_string())
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn check_domain_mac(mac: &[u8; 6]) -> Result<(), LabError> {
    if mac[0] == 0x02 || mac[..3] == [0x52, 0x54, 0x00] {
        Ok(())
    } else {
        Err(invalid(
            format!("MAC {}", Mac(*mac)),
            "a lab domain's MAC must start with 02: or 52:54:00:",
        ))
    }
}

/// The domain XML of [`Lab::define_domain`].
pub fn domain_xml(spec: &DomainSpec, emulator: &Path, console: &Path) -> String {
    let mut x = String::new();
    let p = |p: &Path| xml_escape(&p.to_string_lossy());
    let _ = write!(
        x,
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>{metadata}{backing}
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features>
    <tcg><tb-cache unit='MiB'>32</tb-cache></tcg>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    <interface type='bridge'>
      <source bridge='{bridge}'/>
      <mac address='{mac}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{console}' append='on'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <memballoon model='none'/>
  </devices>
</domain>
",
        name = xml_escape(&spec.name),
        mem = spec.memory_mib,
        backing = if spec.file_backed {
            "\n  <memoryBacking>\n    <source type='file'/>\n    <access mode='shared'/>\n  </memoryBacking>"
        } else {
            ""
        },
        metadata = spec
            .metadata
            .as_ref()
            .map(|m| format!("\n  <metadata>{m}</metadata>"))
            .unwrap_or_default(),
        kernel = p(&spec.image.kernel),
        initrd = p(&spec.image.initramfs),
        cmdline = xml_escape(&crate::qemu::kernel_cmdline(
            &spec.name, spec.ipv4, spec.ipv6
        )),
        emulator = p(emulator),
        bridge = BRIDGE,
        mac = Mac(spec.mac),
        console = p(console),
    );
    x
}

/// Checks that libvirtd, its QEMU driver, virsh, QEMU, `unshare` and `mount` are
/// installed; the error names each missing one with its Debian package, and
/// [`APT_PACKAGES`]. Tests call it first and fail (never skip) on an error.
pub fn check_libvirt_tools() -> Result<(), LabError> {
    libvirt_tools().map(|_| ())
}

/// Finds the libvirt tools; the error names [`APT_PACKAGES`].
fn libvirt_tools() -> Result<(PathBuf, PathBuf, PathBuf), LabError> {
    libvirt_tools_with(find_tool, qemu_driver_module().is_some())
}

fn libvirt_tools_with(
    find: impl Fn(&str) -> Option<PathBuf>,
    has_qemu_driver: bool,
) -> Result<(PathBuf, PathBuf, PathBuf), LabError> {
    let needed_for = format!(
        "a lab's libvirtd (apt-get install --no-install-recommends {})",
        APT_PACKAGES.join(" ")
    );
    let mut missing = Vec::new();
    let mut found = Vec::new();
    for t in [
        "libvirtd",
        "virsh",
        "qemu-system-x86_64",
        "unshare",
        "mount",
    ] {
        match find(t) {
            Some(p) => found.push(p),
            None => missing.push(MissingTool::of(t, Some(&needed_for))),
        }
    }
    if !has_qemu_driver {
        missing.push(MissingTool::of("libvirt_driver_qemu.so", Some(&needed_for)));
    }
    if !missing.is_empty() {
        return Err(LabError::MissingTools(missing));
    }
    let mut it = found.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(libvirtd), Some(virsh), Some(qemu)) => Ok((libvirtd, virsh, qemu)),
        _ => Err(invalid("libvirt tools", "not found")),
    }
}

/// libvirt's QEMU driver module, `/usr/lib/<triplet>/libvirt/connection-driver/...`.
fn qemu_driver_module() -> Option<PathBuf> {
    let rel = "libvirt/connection-driver/libvirt_driver_qemu.so";
    let mut dirs = vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/lib64")];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        dirs.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with("-linux-gnu")),
        );
    }
    dirs.into_iter().map(|d| d.join(rel)).find(|p| p.is_file())
}

/// Creates the group and user `libvirt-qemu` if missing (the qemu driver refuses to start
/// without them).
fn ensure_libvirt_qemu_user() -> Result<(), LabError> {
    let _g = USER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let has = |db: &str| {
        Command::new("getent")
            .args([db, "libvirt-qemu"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // Exit status 9: exists already (another process was quicker).
    let run = |prog: &str, args: &[&str]| -> Result<(), LabError> {
        let path = find_tool(prog)
            .ok_or_else(|| LabError::MissingTools(vec![MissingTool::of(prog, None)]))?;
        let out = Command::new(&path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("run {prog}")))?;
        if out.status.success() || out.status.code() == Some(9) {
            Ok(())
        } else {
            Err(LabError::Command {
                cmd: format!("{prog} {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    };
    if !has("group") {
        run("groupadd", &["-r", "libvirt-qemu"])?;
    }
    if !has("passwd") {
        run(
            "useradd",
            &[
                "-r",
                "-g",
                "libvirt-qemu",
                "-M",
                "-d",
                "/var/lib/libvirt",
                "-s",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ],
        )?;
    }
    Ok(())
}

fn proc_mnt_ns(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}

fn caps_dir(root: &Path) -> PathBuf {
    root.join("cache/qemu/capabilities")
}

/// Copies the in-memory capabilities seed into a new lab's cache. Returns whether it did.
fn seed_caps(root: &Path) -> Result<bool, LabError> {
    let seed = CAPS_SEED.lock().unwrap_or_else(|e| e.into_inner());
    if seed.is_empty() {
        return Ok(false);
    }
    let dir = caps_dir(root);
    std::fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
    for (name, data) in seed.iter() {
        let p = dir.join(name);
        std::fs::write(&p, data).map_err(io_err(format!("write {}", p.display())))?;
    }
    Ok(true)
}

/// Keeps a lab's capabilities cache in memory if none is kept yet.
fn remember_caps(root: &Path) {
    let mut seed = CAPS_SEED.lock().unwrap_or_else(|e| e.into_inner());
    if !seed.is_empty() {
        return;
    }
    let Ok(rd) = std::fs::read_dir(caps_dir(root)) else {
        return;
    };
    for e in rd.flatten() {
        if e.path().extension().is_some_and(|x| x == "xml") {
            if let Ok(data) = std::fs::read(e.path()) {
                seed.push((e.file_name(), data));
            }
        }
    }
}

impl LabLibvirt {
    /// Destroys the domains, ends libvirtd and any QEMU left. Called first when the lab
    /// drops.
    pub(crate) fn shutdown(&mut self, report: &dyn Fn(String)) {
        let Some(mut d) = self.daemon.take() else {
            return;
        };
        // QEMUs by pid file, only those in the daemon's mount namespace.
        let qemu_pids = |d: &Libvirtd| -> Vec<u32> {
            let Ok(rd) = std::fs::read_dir(d.root.join("run/qemu")) else {
                return Vec::new();
            };
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|s| s.trim().parse::<u32>().ok())
                .filter(|pid| proc_mnt_ns(*pid).as_deref() == Some(d.mnt_ns.as_str()))
                .collect()
        };
        let before = qemu_pids(&d);
        if matches!(d.child.try_wait(), Ok(None)) {
            match d.virsh(&["list", "--name"]) {
                Ok(out) => {
                    for name in String::from_utf8_lossy(&out.stdout).lines() {
                        let name = name.trim();
                        if name.is_empty() {
                            continue;
                        }
                        if let Err(e) = d.virsh(&["destroy", name]) {
                            report(format!("virsh destroy {name}: {e}"));
                        }
                    }
                }
                Err(e) => report(format!("virsh list: {e}")),
            }
        }
        // The daemon, by PID (we hold its unreaped Child).
        if matches!(d.child.try_wait(), Ok(None)) {
            signal(d.pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(d.child.try_wait(), Ok(None)) {
                sleep(Duration::from_millis(10));
            }
            if matches!(d.child.try_wait(), Ok(None)) {
                report(format!("libvirtd (pid {}) ignored SIGTERM: SIGKILL", d.pid));
                let _ = d.child.kill();
                let _ = d.child.wait();
            }
        }
        // QEMUs that survived (not our children: libvirt daemonises them).
        for pid in before {
            if proc_mnt_ns(pid).as_deref() == Some(d.mnt_ns.as_str()) {
                report(format!("QEMU pid {pid} survived virsh destroy: SIGKILL"));
                signal(pid, libc::SIGKILL);
            }
        }
        self.domains.clear();
    }
}

impl Lab {
    /// The lab's libvirtd, if started.
    pub fn libvirtd(&self) -> Option<&Libvirtd> {
        self.libvirt.daemon.as_ref()
    }

    /// The libvirt domain called `name`.
    pub fn domain(&self, name: &str) -> Option<&LabDomain> {
        self.libvirt.domains.iter().find(|d| d.name == name)
    }

    /// All libvirt domains, in the order they were defined.
    pub fn domains(&self) -> &[LabDomain] {
        &self.libvirt.domains
    }

    /// Starts the lab's own libvirtd (see the [module documentation](self)) and returns once
    /// `virsh -c URI list` answers (at most [`LIBVIRTD_TIMEOUT`]). Returns the running one if
    /// it was started already. Fails, naming [`APT_PACKAGES`], if libvirt is not installed.
    pub fn start_libvirtd(&mut self) -> Result<&Libvirtd, LabError> {
        if self.libvirt.daemon.is_none() {
            let d = self.spawn_libvirtd()?;
            self.libvirt.daemon = Some(d);
        }
        self.libvirt
            .daemon
            .as_ref()
            .ok_or_else(|| invalid("libvirtd", "not started"))
    }

    /// Stops the lab's libvirtd (SIGTERM, by PID) without touching its domains, and starts
    /// it again with the same state directories: running domains are picked up again, as
    /// after a libvirtd restart on a real host.
    pub fn restart_libvirtd(&mut self) -> Result<&Libvirtd, LabError> {
        if let Some(mut d) = self.libvirt.daemon.take() {
            signal(d.pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(d.child.try_wait(), Ok(None)) {
                sleep(Duration::from_millis(10));
            }
            if matches!(d.child.try_wait(), Ok(None)) {
                signal(d.pid, libc::SIGKILL);
            }
            let _ = d.child.wait();
        }
        self.start_libvirtd()
    }

    fn spawn_libvirtd(&self) -> Result<Libvirtd, LabError> {
        let (libvirtd, virsh_path, _qemu) = libvirt_tools()?;
        let unshare = find_tool("unshare").ok_or_else(|| invalid("unshare", "not found"))?;
        ensure_libvirt_qemu_user()?;

        let root = self.dir.join("libvirt");
        let socket = root.join("run/libvirt-sock");
        if socket.as_os_str().len() > 100 {
            return Err(invalid(
                format!("lab directory {}", self.dir.display()),
                "too long for a unix socket path (set TMPDIR)",
            ));
        }
        let mut mounts: Vec<(PathBuf, PathBuf)> = MOUNTS
            .iter()
            .map(|(sub, at)| (root.join(sub), PathBuf::from(at)))
            .collect();
        let var_run_is_run = std::fs::canonicalize("/var/run")
            .is_ok_and(|p| p == Path::new("/run"))
            || std::fs::symlink_metadata("/var/run/libvirt")
                .is_ok_and(|m| m.file_type().is_symlink());
        if !var_run_is_run {
            mounts.push((root.join("run"), PathBuf::from("/var/run/libvirt")));
        }
        for (src, at) in &mounts {
            std::fs::create_dir_all(src).map_err(io_err(format!("create {}", src.display())))?;
            if !at.is_dir() {
                std::fs::create_dir_all(at)
                    .map_err(io_err(format!("create mount point {}", at.display())))?;
            }
        }
        for (name, text) in [("libvirtd.conf", LIBVIRTD_CONF), ("qemu.conf", QEMU_CONF)] {
            let p = root.join("etc").join(name);
            std::fs::write(&p, text).map_err(io_err(format!("write {}", p.display())))?;
        }
        let seeded_caps = seed_caps(&root)?;

        let log = root.join("libvirtd.log");
        let logf =
            std::fs::File::create(&log).map_err(io_err(format!("create {}", log.display())))?;
        let logf2 = logf.try_clone().map_err(io_err("dup libvirtd log"))?;
        // $1 nsenter, $2 netns path, $3 libvirtd, then pairs SOURCE MOUNTPOINT.
        let script = r#"set -e
ne=$1; ns=$2; lv=$3; shift 3
while [ $# -gt 0 ]; do mount --bind "$1" "$2"; shift 2; done
exec "$ne" --net="$ns" -- "$lv" -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid"#;
        let mut cmd = Command::new(&unshare);
        cmd.args(["--mount", "--propagation", "slave", "--"])
            .arg(&self.sh)
            .arg("-c")
            .arg(script)
            .arg("vmnap-lab-libvirtd")
            .arg(&self.nsenter)
            .arg(Self::netns_path(&self.host_ns))
            .arg(&libvirtd);
        for (src, at) in &mounts {
            cmd.arg(src).arg(at);
        }
        cmd.stdin(Stdio::null()).stdout(logf).stderr(logf2);
        let start = Instant::now();
        let child = cmd.spawn().map_err(io_err("spawn libvirtd"))?;
        let pid = child.id();
        let uri = format!("qemu:///system?socket={}", socket.display());
        let mut d = Libvirtd {
            child,
            pid,
            root,
            uri,
            socket,
            log,
            mnt_ns: String::new(),
            virsh: virsh_path,
            start_time: Duration::ZERO,
            seeded_caps,
        };
        let deadline = start + LIBVIRTD_TIMEOUT;
        let mut last_err = String::new();
        loop {
            if d.socket.exists() {
                match d.virsh(&["list", "--all"]) {
                    Ok(_) => break,
                    Err(e) => last_err = e.to_string(),
                }
            }
            let exited = d.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let msg = format!(
                    "libvirtd in lab {}: {}; last virsh error: {last_err}\n--- {}:\n{}",
                    self.prefix,
                    exited.map_or_else(
                        || format!("no answer within {LIBVIRTD_TIMEOUT:?}"),
                        |s| format!("exited ({s})")
                    ),
                    d.log.display(),
                    tail(&read_lossy(&d.log), 20)
                );
                // Dropping `d` without its LabLibvirt: end it here.
                let mut l = LabLibvirt {
                    daemon: Some(d),
                    domains: Vec::new(),
                };
                l.shutdown(&|e| eprintln!("vmnap-lab: {e}"));
                return Err(LabError::Timeout(msg));
            }
            sleep(Duration::from_millis(20));
        }
        d.start_time = start.elapsed();
        d.mnt_ns = proc_mnt_ns(pid).unwrap_or_default();
        Ok(d)
    }

    /// Defines and starts a libvirt domain on `br0` (XML: [`domain_xml`]) in the lab's
    /// libvirtd (started first if needed) and returns once its console shows
    /// [`READY_LINE`] (at most [`VM_READY_TIMEOUT`] plus the capabilities probe of the
    /// first start). On an error the domain is destroyed and undefined again.
    pub fn define_domain(&mut self, spec: DomainSpec) -> Result<&LabDomain, LabError> {
        check_name("domain", &spec.name)?;
        check_addrs(spec.ipv4, spec.ipv6)?;
        check_domain_mac(&spec.mac)?;
        if self.domain(&spec.name).is_some() {
            return Err(invalid(
                format!("domain name {:?}", spec.name),
                "already used",
            ));
        }
        if spec.memory_mib < 64 {
            return Err(invalid(
                format!("memory {} MiB", spec.memory_mib),
                "want at least 64 (128 to boot the Debian kernel)",
            ));
        }
        for p in [&spec.image.kernel, &spec.image.initramfs] {
            if !p.is_file() {
                return Err(invalid(
                    format!("guest image file {}", p.display()),
                    "does not exist",
                ));
            }
        }
        let (_, _, qemu) = libvirt_tools()?;
        self.start_libvirtd()?;
        let d = self
            .libvirt
            .daemon
            .as_ref()
            .ok_or_else(|| invalid("libvirtd", "not started"))?;

        let name = spec.name.clone();
        let console = self.dir.join(format!("{name}.console.log"));
        std::fs::File::create(&console).map_err(io_err(format!("create {}", console.display())))?;
        let emulator = if spec.emulator_wrapper.is_empty() {
            qemu
        } else {
            // libvirt takes one path: a script that runs the wrapper, then QEMU.
            let script = self.dir.join(format!("{name}.emulator"));
            let mut text = String::from("#!/bin/sh\nexec");
            for arg in spec
                .emulator_wrapper
                .iter()
                .chain([&qemu.to_string_lossy().into_owned()])
            {
                text.push_str(&format!(" '{}'", arg.replace('\'', "'\\''")));
            }
            text.push_str(" \"$@\"\n");
            std::fs::write(&script, text).map_err(io_err(format!("write {}", script.display())))?;
            std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io_err(format!("chmod {}", script.display())))?;
            script
        };
        let xml = domain_xml(&spec, &emulator, &console);
        let xml_path = self.dir.join(format!("{name}.domain.xml"));
        std::fs::write(&xml_path, &xml).map_err(io_err(format!("write {}", xml_path.display())))?;
        let xml_arg = xml_path.to_string_lossy().into_owned();

        let t = Instant::now();
        d.virsh(&["define", &xml_arg])?;
        let define_time = t.elapsed();
        let mut dom = LabDomain {
            name: name.clone(),
            mac: spec.mac,
            ipv4: spec.ipv4,
            ipv6: spec.ipv6,
            tap: String::new(),
            console: console.clone(),
            uri: d.uri.clone(),
            qemu_log: d.root.join(format!("log/qemu/{name}.log")),
            pidfile: d.root.join(format!("run/qemu/{name}.pid")),
            xml,
            define_time,
            boot_time: Duration::ZERO,
            virsh: d.virsh.clone(),
        };
        let undo = |dom: &LabDomain| {
            let _ = dom.virsh(&["destroy", &dom.name]);
            let _ = dom.virsh(&["undefine", "--managed-save", &dom.name]);
        };
        let start = Instant::now();
        if let Err(e) = dom.virsh(&["start", &name]) {
            let msg = format!(
                "{e}\n--- {}:\n{}",
                dom.qemu_log.display(),
                tail(&read_lossy(&dom.qemu_log), 15)
            );
            undo(&dom);
            return Err(LabError::Command {
                cmd: format!("virsh start {name}"),
                status: "failed".into(),
                stderr: msg,
            });
        }
        let deadline = Instant::now() + VM_READY_TIMEOUT;
        loop {
            if read_lossy(&console).contains(READY_LINE) {
                break;
            }
            let gone = dom.qemu_pid().is_none() && start.elapsed() > Duration::from_secs(2);
            if gone || Instant::now() > deadline {
                let msg = format!(
                    "domain {name}: {}\n--- {}:\n{}\n--- console tail ({}):\n{}",
                    if gone {
                        "QEMU is gone".to_string()
                    } else {
                        format!("no {READY_LINE:?} within {VM_READY_TIMEOUT:?}")
                    },
                    dom.qemu_log.display(),
                    tail(&read_lossy(&dom.qemu_log), 10),
                    console.display(),
                    tail(&read_lossy(&console), 30)
                );
                undo(&dom);
                return Err(LabError::Timeout(msg));
            }
            sleep(Duration::from_millis(20));
        }
        dom.boot_time = start.elapsed();
        dom.tap = dom
            .current_tap()?
            .ok_or_else(|| invalid(format!("domain {name}"), "has no tap in domiflist"))?;
        remember_caps(&d.root);
        self.libvirt.domains.push(dom);
        let i = self.libvirt.domains.len() - 1;
        Ok(&self.libvirt.domains[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_libvirt_names_packages() {
        let e = libvirt_tools_with(
            |t| (t != "libvirtd").then(|| PathBuf::from("/bin/true")),
            false,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("`libvirtd` (Debian package libvirt-daemon)"),
            "{msg}"
        );
        assert!(
            msg.contains("(Debian package libvirt-daemon-driver-qemu)"),
            "{msg}"
        );
        assert!(
            msg.contains("libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients"),
            "{msg}"
        );
        assert!(!msg.contains("libvirt-daemon-system"), "{msg}");
        let e = libvirt_tools_with(|t| (t != "qemu-system-x86_64").then(PathBuf::new), true)
            .unwrap_err();
        assert!(e.to_string().contains("qemu-system-x86"), "{e}");
        assert!(libvirt_tools_with(|_| Some(PathBuf::new()), true).is_ok());
    }

    #[test]
    fn parses_domiflist() {
        let mac = [0x52, 0x54, 0, 0x12, 0, 0x21];
        let running = " vnet2       bridge   br0      virtio   52:54:00:12:00:21\n";
        assert_eq!(parse_domiflist(running, &mac).as_deref(), Some("vnet2"));
        let off = " -           bridge   br0      virtio   52:54:00:12:00:21\n";
        assert_eq!(parse_domiflist(off, &mac), None);
        assert_eq!(parse_domiflist(running, &[2, 0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn xml() {
        let spec = DomainSpec::new(
            "d1",
            Ipv4Addr::new(198, 18, 0, 21),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x21),
            GuestImage {
                kernel: "/k/vmlinuz".into(),
                initramfs: "/k/i&.gz".into(),
            },
        );
        assert_eq!(spec.mac, [0x52, 0x54, 0, 18, 0, 21]);
        let x = domain_xml(
            &spec,
            Path::new("/usr/bin/qemu"),
            Path::new("/t/d1.console"),
        );
        assert!(x.contains("<domain type='qemu'>"), "{x}");
        assert!(x.contains("machine='q35'"), "{x}");
        assert!(x.contains("<source bridge='br0'/>"), "{x}");
        assert!(x.contains("<mac address='52:54:00:12:00:15'/>"), "{x}");
        assert!(x.contains("<initrd>/k/i&amp;.gz</initrd>"), "{x}");
        assert!(
            x.contains("vmnap.ip=198.18.0.21/15 vmnap.ip6=2001:db8::21/64"),
            "{x}"
        );
        assert!(check_domain_mac(&[0x52, 0x54, 0, 1, 2, 3]).is_ok());
        assert!(check_domain_mac(&[0x06, 0, 0, 1, 2, 3]).is_err());
    }
}
