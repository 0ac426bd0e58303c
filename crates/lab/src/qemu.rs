//! Real QEMU guests on a lab's bridge.
//!
//! The guest is the project's own tiny image from `guest/build-image.sh` (see
//! `guest/README.md`): Debian's cloud kernel and a busybox initramfs that takes its
//! addresses from the kernel command line, serves `hello from NAME\n` over HTTP on port 80,
//! echoes TCP on port 7, writes every UDP datagram to port 9000 to its serial console as a
//! line `udp: PAYLOAD`, and prints [`READY_LINE`] there once all of them listen.
//! [`GuestImage::build`] runs the script (cached: a few milliseconds once built).
//!
//! [`Lab::add_vm`] creates a tap `vt-<name>` in the lab's host namespace, enslaves it to
//! `br0`, and starts `qemu-system-x86_64 -M q35 -accel tcg,tb-size=32 -m 128` inside that
//! namespace (`nsenter --net=...`), with a QMP socket and the serial console in the lab's
//! directory, and waits for the ready line. When the lab drops, QEMU is ended by PID and the
//! tap deleted. Guests run under TCG: on this project's machines `/dev/kvm` is a nested
//! (PVM) one that does not boot a stock kernel (see docs/design.md), so
//! [`Accel::Kvm`] is opt-in and nothing probes for it.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use vmnap_wire::Mac;

use crate::{
    check_addrs, check_name, invalid, io_err, lock, tool, Lab, LabError, MissingTool, Undo, BRIDGE,
};

/// The id of the memory backend of a guest with [`VmSpec::ram_file`].
pub const RAM_BACKEND: &str = "vmnap-ram";
/// The guest's RAM dirtier's port: send a percentage, it writes that share of its RAM
/// (see `guest/README.md`).
pub const DIRTY_PORT: u16 = 8;
/// The line the guest prints on its serial console once HTTP, TCP echo and the UDP logger
/// listen.
pub const READY_LINE: &str = "vmnap-guest ready";
/// How long [`Lab::add_vm`] waits for [`READY_LINE`].
pub const VM_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The guest's HTTP port.
pub const HTTP_PORT: u16 = 80;
/// The guest's TCP echo port.
pub const ECHO_PORT: u16 = 7;
/// The guest's UDP logger port.
pub const UDP_LOG_PORT: u16 = 9000;
/// Prefix of each UDP logger line on the console.
pub const UDP_LOG_PREFIX: &str = "udp: ";
/// Debian packages a QEMU guest needs (`apt-get install --no-install-recommends ...`):
/// QEMU, the static busybox of the initramfs, and a C compiler with a static libc for the
/// guest's UDP logger.
pub const APT_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "gcc", "libc6-dev"];

/// A built guest image: the kernel and initramfs to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs (gzipped newc cpio).
    pub initramfs: PathBuf,
}

impl GuestImage {
    /// `guest/build-image.sh` of the source tree this crate was built from.
    pub fn build_script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest/build-image.sh")
    }

    /// Builds (or finds cached) the guest image with [`GuestImage::build_script`], in
    /// `$VMNAP_IMAGE_DIR` (default `/var/cache/vmnap/images`). Fails, naming the Debian
    /// packages, if `busybox` or `cc` is missing.
    pub fn build() -> Result<GuestImage, LabError> {
        Self::build_with(&Self::build_script(), None)
    }

    /// Like [`GuestImage::build`] with another script and, if given, another cache
    /// directory (passed as `VMNAP_IMAGE_DIR`).
    pub fn build_with(script: &Path, image_dir: Option<&Path>) -> Result<GuestImage, LabError> {
        check_guest_tools(&["busybox", "cc"])?;
        let sh = tool("sh", "running guest/build-image.sh")?;
        let mut cmd = Command::new(&sh);
        cmd.arg(script).stdin(Stdio::null());
        if let Some(d) = image_dir {
            cmd.env("VMNAP_IMAGE_DIR", d);
        }
        let out = cmd
            .output()
            .map_err(io_err(format!("run {}", script.display())))?;
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: format!("sh {}", script.display()),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(PathBuf::from)
                .ok_or_else(|| {
                    invalid(
                        format!("output of {}", script.display()),
                        format!("no line {key}PATH in {text:?}"),
                    )
                })
        };
        let image = GuestImage {
            kernel: field("kernel=")?,
            initramfs: field("initramfs=")?,
        };
        image.check()?;
        Ok(image)
    }

    fn check(&self) -> Result<(), LabError> {
        for p in [&self.kernel, &self.initramfs] {
            if !p.is_file() {
                return Err(invalid(
                    format!("guest image file {}", p.display()),
                    "does not exist",
                ));
            }
            if p.to_string_lossy().contains(',') {
                return Err(invalid(
                    format!("guest image path {}", p.display()),
                    "contains a comma (QEMU option syntax)",
                ));
            }
        }
        Ok(())
    }
}

/// Checks QEMU guest tools; the error names the Debian packages of all of [`APT_PACKAGES`]
/// that provide the missing ones.
fn check_guest_tools(tools: &[&str]) -> Result<(), LabError> {
    let missing: Vec<MissingTool> = tools
        .iter()
        .filter(|t| crate::find_tool(t).is_none())
        .map(|t| {
            let why = format!(
                "QEMU test guests (all of: apt-get install --no-install-recommends {})",
                APT_PACKAGES.join(" ")
            );
            MissingTool::of(t, Some(&why))
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError::MissingTools(missing))
    }
}

/// The accelerator of a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// `-accel tcg,tb-size=32`: works everywhere; a guest is ready 3 to 6 s after start.
    #[default]
    Tcg,
    /// `-accel kvm`: only where `/dev/kvm` really runs a stock kernel (not on nested PVM).
    Kvm,
}

/// What [`Lab::add_vm`] starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Name (1 to 12 of `[A-Za-z0-9_-]`), unique among the lab's VMs; the guest says
    /// `hello from NAME`.
    pub name: String,
    /// IPv4 address in 198.18.0.0/15 (configured as /15).
    pub ipv4: Ipv4Addr,
    /// IPv6 address in 2001:db8::/32 (configured as /64, no DAD).
    pub ipv6: Ipv6Addr,
    /// MAC of the guest's virtio-net NIC: `52:54:00:..` or `02:..`.
    pub mac: [u8; 6],
    /// Kernel and initramfs.
    pub image: GuestImage,
    /// Guest memory in MiB (128 is the smallest that boots).
    pub memory_mib: u32,
    /// Accelerator.
    pub accel: Accel,
    /// Extra QEMU arguments, appended last (for example `-incoming`).
    pub extra_args: Vec<OsString>,
    /// Wait for [`READY_LINE`] (true), or only for the QMP socket (false; for example for a
    /// guest restored with `-incoming`, which prints nothing new).
    pub wait_ready: bool,
    /// Programs to start QEMU through, with their arguments, before QEMU's command line (for
    /// example `vmnap run-qemu`); each must end by running the rest of its command line in
    /// its own place (`exec`), so that the PID is QEMU's.
    pub wrapper: Vec<OsString>,
    /// Back the guest's RAM with this file, shared (`-object memory-backend-file,
    /// id=vmnap-ram,size=<memory_mib>M,mem-path=FILE,share=on -machine
    /// memory-backend=vmnap-ram`), as page-out sleep needs; `None`: anonymous memory.
    pub ram_file: Option<PathBuf>,
}

impl VmSpec {
    /// A spec with the defaults: MAC `52:54:00:` followed by the last three bytes of
    /// `ipv4`, 128 MiB, TCG, no extra arguments, wait for ready.
    pub fn new(name: &str, ipv4: Ipv4Addr, ipv6: Ipv6Addr, image: GuestImage) -> VmSpec {
        let o = ipv4.octets();
        VmSpec {
            name: name.to_string(),
            ipv4,
            ipv6,
            mac: [0x52, 0x54, 0x00, o[1], o[2], o[3]],
            image,
            memory_mib: 128,
            accel: Accel::Tcg,
            extra_args: Vec::new(),
            wait_ready: true,
            wrapper: Vec::new(),
            ram_file: None,
        }
    }
}

/// A QEMU guest of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabVm {
    /// Name.
    pub name: String,
    /// Its tap `vt-<name>` in the lab's host namespace, enslaved to the bridge.
    pub tap: String,
    /// MAC of the guest's NIC.
    pub mac: [u8; 6],
    /// IPv4 address.
    pub ipv4: Ipv4Addr,
    /// IPv6 address.
    pub ipv6: Ipv6Addr,
    /// PID of `qemu-system-x86_64` (ended by the lab on drop, or by [`Lab::kill`]).
    pub pid: u32,
    /// QMP socket (`<lab dir>/<name>.qmp`).
    pub qmp: PathBuf,
    /// The guest agent's socket (`<lab dir>/<name>.qga`: its virtio-serial port
    /// `org.qemu.guest_agent.0`, where the image runs qemu-guest-agent).
    pub agent: PathBuf,
    /// Serial console log (`<lab dir>/<name>.console.log`).
    pub console: PathBuf,
    /// QEMU's own standard output and error (`<lab dir>/<name>.qemu.log`).
    pub qemu_log: PathBuf,
    /// From the start of QEMU to [`READY_LINE`] (or to the QMP socket, if not waited for).
    pub boot_time: Duration,
}

impl LabVm {
    /// The serial console so far (lossy UTF-8; empty if unreadable).
    pub fn console_text(&self) -> String {
        read_lossy(&self.console)
    }

    /// The payloads the guest's UDP logger has written to the console so far, in order
    /// (see `guest/README.md` for the escaping of non-printable bytes).
    pub fn udp_lines(&self) -> Vec<String> {
        self.console_text()
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix(UDP_LOG_PREFIX))
            .map(str::to_string)
            .collect()
    }

    /// Runs one QMP command on this guest, see [`qmp_execute`].
    pub fn qmp_execute(&self, command: &str) -> Result<String, LabError> {
        qmp_execute(&self.qmp, command)
    }
}

/// The guest image's kernel command line: console, and the name and addresses its init
/// reads (see `guest/README.md`).
pub(crate) fn kernel_cmdline(name: &str, ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> String {
    format!("console=ttyS0 panic=-1 vmnap.name={name} vmnap.ip={ipv4}/15 vmnap.ip6={ipv6}/64")
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

/// Connects to a QMP socket, reads the greeting, negotiates (`qmp_capabilities`), sends
/// `{"execute":"COMMAND"}` (or `command` itself if it starts with `{`), and returns the
/// response line (`{"return": ...}`); events in between are skipped. An `{"error": ...}`
/// response is an error. Times out after 10 s.
pub fn qmp_execute(socket: &Path, command: &str) -> Result<String, LabError> {
    let what = format!("QMP {} on {}", command, socket.display());
    let stream = UnixStream::connect(socket).map_err(io_err(format!("connect {what}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io_err(format!("set timeout for {what}")))?;
    let mut writer = stream
        .try_clone()
        .map_err(io_err(format!("clone {what}")))?;
    let mut reader = BufReader::new(stream);
    let read_reply = |reader: &mut BufReader<UnixStream>| -> Result<String, LabError> {
        loop {
            let mut line = String::new();
            let n = reader
                .read_line(&mut line)
                .map_err(io_err(format!("read {what}")))?;
            if n == 0 {
                return Err(invalid(what.clone(), "QEMU closed the QMP connection"));
            }
            if line.contains("\"return\"") || line.contains("\"QMP\"") {
                return Ok(line.trim().to_string());
            }
            if line.contains("\"error\"") {
                return Err(invalid(what.clone(), line.trim().to_string()));
            }
        }
    };
    read_reply(&mut reader)?; // greeting
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .map_err(io_err(format!("write {what}")))?;
    read_reply(&mut reader)?;
    let msg = if command.trim_start().starts_with('{') {
        format!("{}\n", command.trim())
    } else {
        format!("{{\"execute\":\"{command}\"}}\n")
    };
    writer
        .write_all(msg.as_bytes())
        .map_err(io_err(format!("write {what}")))?;
    read_reply(&mut reader)
}

fn check_vm_mac(mac: &[u8; 6]) -> Result<(), LabError> {
    if mac[0] == 0x02 || mac[..3] == [0x52, 0x54, 0x00] {
        Ok(())
    } else {
        Err(invalid(
            format!("MAC {}", Mac(*mac)),
            "a lab VM's MAC must start with 02: or 52:54:00:",
        ))
    }
}

impl Lab {
    /// The QEMU guest called `name`.
    pub fn vm(&self, name: &str) -> Option<&LabVm> {
        self.vms.iter().find(|v| v.name == name)
    }

    /// All QEMU guests, in the order they were added.
    pub fn vms(&self) -> &[LabVm] {
        &self.vms
    }

    /// Starts a QEMU guest on the bridge: tap `vt-<name>` (MAC `02:00:00:fa:00:<n>`, n = 1,
    /// 2, ... in order of addition) in the host namespace, enslaved to `br0` and up; then
    /// `qemu-system-x86_64 -M q35 -accel tcg,tb-size=32 -m 128 -nographic -kernel ...
    /// -initrd ... -append "console=ttyS0 ... vmnap.ip=..." -netdev tap,...,vhost=off
    /// -device virtio-net-pci,... -qmp unix:<dir>/<name>.qmp,server=on,wait=off`, and the guest
    /// agent's virtio-serial port on `<dir>/<name>.qga`, inside the
    /// host namespace, serial console to `<dir>/<name>.console.log`. Returns once the
    /// console shows [`READY_LINE`] (at most [`VM_READY_TIMEOUT`]; the error then carries
    /// the console's tail). On an error QEMU is ended and the tap deleted again.
    pub fn add_vm(&mut self, spec: VmSpec) -> Result<&LabVm, LabError> {
        check_name("VM", &spec.name)?;
        check_addrs(spec.ipv4, spec.ipv6)?;
        check_vm_mac(&spec.mac)?;
        if self.vm(&spec.name).is_some() {
            return Err(invalid(format!("VM name {:?}", spec.name), "already used"));
        }
        if spec.memory_mib < 64 {
            return Err(invalid(
                format!("memory {} MiB", spec.memory_mib),
                "want at least 64 (128 to boot the Debian kernel)",
            ));
        }
        spec.image.check()?;
        if let Some(f) = &spec.ram_file {
            if f.to_string_lossy().contains(',') {
                return Err(invalid(
                    format!("RAM file {}", f.display()),
                    "contains a comma (QEMU option syntax)",
                ));
            }
        }
        check_guest_tools(&["qemu-system-x86_64"])?;
        let qemu = tool("qemu-system-x86_64", "QEMU test guests")?;
        let idx =
            u8::try_from(self.vms.len() + 1).map_err(|_| invalid("VM count", "at most 255 VMs"))?;
        let name = spec.name.clone();
        let qmp = self.dir.join(format!("{name}.qmp"));
        let console = self.dir.join(format!("{name}.console.log"));
        let qemu_log = self.dir.join(format!("{name}.qemu.log"));
        if qmp.as_os_str().len() > 100 || self.dir.to_string_lossy().contains(',') {
            return Err(invalid(
                format!("lab directory {}", self.dir.display()),
                "too long for a unix socket path, or contains a comma (set TMPDIR)",
            ));
        }

        let tap = format!("vt-{name}");
        let h = self.host_ns.clone();
        self.ip(&["-n", &h, "tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.undo.push(Undo::Link {
            netns: h.clone(),
            name: tap.clone(),
        });
        let started = self.start_vm(&spec, &qemu, idx, &tap, &qmp, &console, &qemu_log);
        let (pid, boot_time) = match started {
            Ok(v) => v,
            Err((e, pid)) => {
                if let Some(pid) = pid {
                    self.kill(pid);
                }
                let _ = self.ip(&["-n", &h, "link", "del", &tap]);
                self.undo
                    .retain(|u| !matches!(u, Undo::Link { name, .. } if *name == tap));
                return Err(e);
            }
        };
        self.vms.push(LabVm {
            name,
            tap,
            mac: spec.mac,
            ipv4: spec.ipv4,
            ipv6: spec.ipv6,
            pid,
            agent: qmp.with_extension("qga"),
            qmp,
            console,
            qemu_log,
            boot_time,
        });
        let i = self.vms.len() - 1;
        Ok(&self.vms[i])
    }

    /// Plumbs the tap, starts QEMU and waits. On error, returns QEMU's PID if it started.
    #[allow(clippy::too_many_arguments)]
    fn start_vm(
        &self,
        spec: &VmSpec,
        qemu: &Path,
        idx: u8,
        tap: &str,
        qmp: &Path,
        console: &Path,
        qemu_log: &Path,
    ) -> Result<(u32, Duration), (LabError, Option<u32>)> {
        let h = self.host_ns.as_str();
        let tap_mac = Mac([0x02, 0x00, 0x00, 0xfa, 0x00, idx]).to_string();
        let plumb = [
            vec!["-n", h, "link", "set", tap, "address", &tap_mac],
            vec!["-n", h, "link", "set", tap, "master", BRIDGE],
            vec!["-n", h, "link", "set", tap, "up"],
        ];
        for args in &plumb {
            self.ip(args).map_err(|e| (e, None))?;
        }
        let _ = std::fs::remove_file(qmp);
        std::fs::File::create(console)
            .map_err(|e| (io_err(format!("create {}", console.display()))(e), None))?;

        let accel = match spec.accel {
            Accel::Tcg => "tcg,tb-size=32",
            Accel::Kvm => "kvm",
        };
        let append = kernel_cmdline(&spec.name, spec.ipv4, spec.ipv6);
        let mut serial = OsString::from("file:");
        serial.push(console);
        let mut qmp_arg = OsString::from("unix:");
        qmp_arg.push(qmp);
        qmp_arg.push(",server=on,wait=off");
        let mut agent = OsString::from("socket,id=qga0,server=on,wait=off,path=");
        agent.push(qmp.with_extension("qga"));
        let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no,vhost=off");
        let device = format!("virtio-net-pci,netdev=n0,mac={}", Mac(spec.mac));
        let mem = spec.memory_mib.to_string();
        let mut argv: Vec<&OsStr> = spec.wrapper.iter().map(OsString::as_os_str).collect();
        argv.extend([
            qemu.as_os_str(),
            "-name".as_ref(),
            spec.name.as_ref(),
            "-M".as_ref(),
            "q35".as_ref(),
            "-accel".as_ref(),
            accel.as_ref(),
            "-m".as_ref(),
            mem.as_ref(),
            "-nographic".as_ref(),
            "-no-reboot".as_ref(),
            "-monitor".as_ref(),
            "none".as_ref(),
            "-serial".as_ref(),
            serial.as_os_str(),
            "-kernel".as_ref(),
            spec.image.kernel.as_os_str(),
            "-initrd".as_ref(),
            spec.image.initramfs.as_os_str(),
            "-append".as_ref(),
            append.as_ref(),
            "-netdev".as_ref(),
            netdev.as_ref(),
            "-device".as_ref(),
            device.as_ref(),
            "-qmp".as_ref(),
            qmp_arg.as_os_str(),
            "-chardev".as_ref(),
            agent.as_os_str(),
            "-device".as_ref(),
            "virtio-serial-pci".as_ref(),
            "-device".as_ref(),
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0".as_ref(),
        ]);
        let ram = spec.ram_file.as_ref().map(|file| {
            let mut object = OsString::from(format!(
                "memory-backend-file,id={RAM_BACKEND},size={mem}M,share=on,mem-path="
            ));
            object.push(file);
            (object, format!("memory-backend={RAM_BACKEND}"))
        });
        if let Some((object, machine)) = &ram {
            argv.extend([
                "-object".as_ref(),
                object.as_os_str(),
                "-machine".as_ref(),
                machine.as_ref(),
            ]);
        }
        argv.extend(spec.extra_args.iter().map(OsString::as_os_str));
        let start = Instant::now();
        let pid = self
            .spawn_in_host(&argv, Some(qemu_log))
            .map_err(|e| (e, None))?;

        let deadline = start + VM_READY_TIMEOUT;
        loop {
            let ready = if spec.wait_ready {
                read_lossy(console).contains(READY_LINE)
            } else {
                qmp.exists()
            };
            if ready {
                return Ok((pid, start.elapsed()));
            }
            let exited = lock(&self.procs)
                .iter_mut()
                .find(|p| p.child.id() == pid)
                .and_then(|p| p.child.try_wait().ok().flatten());
            let problem = if let Some(status) = exited {
                Some(format!("QEMU of VM {} exited ({status})", spec.name))
            } else if Instant::now() > deadline {
                Some(format!(
                    "VM {} did not print {READY_LINE:?} within {VM_READY_TIMEOUT:?}",
                    spec.name
                ))
            } else {
                None
            };
            if let Some(what) = problem {
                let msg = format!(
                    "{what}\n--- QEMU ({}):\n{}\n--- console tail ({}):\n{}",
                    qemu_log.display(),
                    tail(&read_lossy(qemu_log), 10),
                    console.display(),
                    tail(&read_lossy(console), 30)
                );
                let e = if exited.is_some() {
                    LabError::Command {
                        cmd: format!("qemu-system-x86_64 for VM {}", spec.name),
                        status: "exited".into(),
                        stderr: msg,
                    }
                } else {
                    LabError::Timeout(msg)
                };
                return Err((e, Some(pid)));
            }
            sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_macs() {
        assert!(check_vm_mac(&[0x52, 0x54, 0, 1, 2, 3]).is_ok());
        assert!(check_vm_mac(&[0x02, 0, 0, 1, 2, 3]).is_ok());
        assert!(check_vm_mac(&[0x52, 0x55, 0, 1, 2, 3]).is_err());
        assert!(check_vm_mac(&[0x06, 0, 0, 1, 2, 3]).is_err());
    }

    #[test]
    fn default_spec() {
        let img = GuestImage {
            kernel: "k".into(),
            initramfs: "i".into(),
        };
        let s = VmSpec::new(
            "vm1",
            Ipv4Addr::new(198, 18, 0, 21),
            "2001:db8::21".parse().unwrap_or(Ipv6Addr::LOCALHOST),
            img,
        );
        assert_eq!(s.mac, [0x52, 0x54, 0x00, 18, 0, 21]);
        assert_eq!(s.memory_mib, 128);
        assert_eq!(s.accel, Accel::Tcg);
        assert!(s.wait_ready);
    }

    #[test]
    fn missing_tools_name_packages() {
        let e = check_guest_tools(&["surely-not-qemu-vmnap"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("surely-not-qemu-vmnap"), "{msg}");
        assert!(
            msg.contains("qemu-system-x86 busybox-static gcc libc6-dev"),
            "{msg}"
        );
        assert_eq!(
            crate::debian_package("qemu-system-x86_64"),
            Some("qemu-system-x86")
        );
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
