//! Everything from Debian that vmnap's build, demo, tests and benchmarks use, with the package
//! that ships it: the one table behind every "missing tool" message, and the one that
//! README.md's two install lists are checked against (`crates/lab/tests/readme.rs`), so that
//! neither can drift from what the code really runs.
//!
//! A program is looked up on `$PATH` (then `/usr/sbin`, `/sbin`, `/usr/bin`, `/bin`); asking
//! for one that is not in [`NEEDS`] is an error of its own, so a test cannot start using a new
//! tool without naming its package here.

use std::path::{Path, PathBuf};

use crate::LabError;

/// Where a package comes from on the machine the README's commands run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// In every Debian, even a minimal debootstrap (priority `required`): the README does not
    /// install it.
    Base,
    /// Part of what the README assumes besides Debian: the C compiler and libc that rustup's
    /// toolchain links with. The test command installs it anyway (the test guests need its
    /// static libc); the demo command does not.
    Toolchain,
    /// Installed by the README's commands.
    Installed,
}

/// What kind of thing is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A program run by name.
    Program,
    /// A file that is not a program (a driver module, a library).
    File,
}

/// One thing vmnap needs from Debian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The program's name, or what the file or build input is.
    pub name: &'static str,
    /// The Debian 12 package that ships it.
    pub package: &'static str,
    /// What it is.
    pub kind: Kind,
    /// Where the package comes from.
    pub source: Source,
    /// Whether `vmnap demo` (its build and its run) needs it; everything is needed by the tests.
    pub demo: bool,
    /// What uses it.
    pub used_for: &'static str,
}

const fn need(
    name: &'static str,
    package: &'static str,
    kind: Kind,
    source: Source,
    demo: bool,
    used_for: &'static str,
) -> Need {
    Need {
        name,
        package,
        kind,
        source,
        demo,
        used_for,
    }
}

use Kind::{File, Program};
use Source::{Base, Installed, Toolchain};

/// Everything the build, the demo, the tests and the benchmarks use from Debian.
#[rustfmt::skip]
pub const NEEDS: &[Need] = &[
    need("cc", "gcc", Program, Toolchain, true, "linking (rustup's toolchain) and the test guests' UDP logger"),
    need("libc.a", "libc6-dev", File, Toolchain, true, "linking, and the test guests' statically linked UDP logger"),
    // Labs: the demo's and the tests' networks.
    need("ip", "iproute2", Program, Installed, true, "namespaces, links, bridges"),
    need("bridge", "iproute2", Program, Installed, false, "reading the bridge's forwarding table"),
    need("ss", "iproute2", Program, Installed, false, "listing a client's connections"),
    need("nsenter", "util-linux", Program, Base, true, "running processes in namespaces"),
    need("unshare", "util-linux", Program, Base, false, "a lab's libvirtd in its own mount namespace"),
    need("flock", "util-linux", Program, Base, false, "guest/build-image.sh's cache lock"),
    need("setpriv", "util-linux", Program, Base, false, "an API client without root"),
    need("mount", "mount", Program, Base, false, "a lab's libvirtd in its own mount namespace"),
    need("umount", "mount", Program, Base, false, "bench-pageout's file system for RAM files"),
    need("losetup", "mount", Program, Base, false, "bench-pageout's file system for RAM files"),
    need("mkfs.ext4", "e2fsprogs", Program, Base, false, "bench-pageout's file system for RAM files"),
    need("sh", "dash", Program, Base, true, "guest workloads and scripts"),
    need("getent", "libc-bin", Program, Base, false, "looking up the libvirt-qemu user"),
    need("useradd", "passwd", Program, Base, false, "creating the libvirt-qemu user"),
    need("groupadd", "passwd", Program, Base, false, "creating the libvirt-qemu group"),
    need("dpkg-deb", "dpkg", Program, Base, false, "the test guests' kernel, and the .deb's contents"),
    need("apt-get", "apt", Program, Base, false, "downloading the test guests' kernel"),
    need("sysctl", "procps", Program, Installed, false, "settings of test namespaces"),
    // Real clients.
    need("ping", "iputils-ping", Program, Installed, true, "ICMP echo to sleeping guests"),
    need("curl", "curl", Program, Installed, true, "HTTP requests that wake guests"),
    need("arping", "iputils-arping", Program, Installed, false, "ARP requests to sleeping guests"),
    need("nc", "netcat-openbsd", Program, Installed, false, "TCP and UDP clients"),
    need("socat", "socat", Program, Installed, false, "UDP and TCP clients"),
    need("tcpdump", "tcpdump", Program, Installed, false, "captures (SYN retransmissions, frames)"),
    need("hping3", "hping3", Program, Installed, false, "crafted TCP segments, fragments and other protocols"),
    need("nmap", "nmap", Program, Installed, false, "bench-hostile's ACK, FIN and Xmas scans"),
    // Real guests.
    need("qemu-system-x86_64", "qemu-system-x86", Program, Installed, false, "QEMU test guests"),
    need("busybox", "busybox-static", Program, Installed, false, "the test guests' initramfs"),
    need("libvirt.so.0", "libvirt0", File, Installed, false, "libvirt guests: loaded when the daemon first opens a libvirt connection"),
    need("libvirtd", "libvirt-daemon", Program, Installed, false, "a lab's libvirtd"),
    need("libvirt_driver_qemu.so", "libvirt-daemon-driver-qemu", File, Installed, false, "a lab's libvirtd running QEMU domains"),
    need("virsh", "libvirt-clients", Program, Installed, false, "defining and inspecting libvirt domains"),
    // The status page and the package.
    need("chromium", "chromium", Program, Installed, false, "rendering the status page"),
    need("tesseract", "tesseract-ocr", Program, Installed, false, "reading the rendered status page"),
    need("systemd-analyze", "systemd", Program, Installed, false, "checking dist/vmnap.service"),
];

/// The entry for `name`, if the table has it.
pub fn lookup(name: &str) -> Option<&'static Need> {
    NEEDS.iter().find(|n| n.name == name)
}

/// The Debian package that ships `tool`, if the table has it.
pub fn debian_package(tool: &str) -> Option<&'static str> {
    lookup(tool).map(|n| n.package)
}

/// The packages the README's demo command must install: what the demo needs, less what every
/// Debian has and what the toolchain brings. Sorted, without repeats.
pub fn demo_packages() -> Vec<&'static str> {
    packages(|n| n.demo && n.source == Installed)
}

/// The programs `vmnap demo` runs (the table's demo programs, less the toolchain's).
pub fn demo_programs() -> Vec<&'static str> {
    NEEDS
        .iter()
        .filter(|n| n.demo && n.kind == Program && n.source != Toolchain)
        .map(|n| n.name)
        .collect()
}

/// The packages the README's test command must install: everything that is not in every
/// Debian. Sorted, without repeats.
pub fn test_packages() -> Vec<&'static str> {
    packages(|n| n.source != Base)
}

fn packages(take: impl Fn(&Need) -> bool) -> Vec<&'static str> {
    let mut p: Vec<&'static str> = NEEDS
        .iter()
        .filter(|n| take(n))
        .map(|n| n.package)
        .collect();
    p.sort_unstable();
    p.dedup();
    p
}

/// A tool that was not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingTool {
    /// The program (or file) name.
    pub tool: String,
    /// The Debian package that has it.
    pub package: String,
    /// What it is needed for, if known.
    pub needed_for: Option<String>,
}

impl MissingTool {
    /// `name`, missing, with its package from [`NEEDS`] and what it is needed for (the table's
    /// words unless `needed_for` says more).
    pub fn of(name: &str, needed_for: Option<&str>) -> MissingTool {
        let entry = lookup(name);
        MissingTool {
            tool: name.to_string(),
            package: entry.map_or("(unknown)", |n| n.package).to_string(),
            needed_for: needed_for.or(entry.map(|n| n.used_for)).map(str::to_string),
        }
    }
}

/// Finds `tool` in `$PATH`, then in `/usr/sbin`, `/sbin`, `/usr/bin`, `/bin`.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks that every program in `tools` is installed; the error names each missing one with
/// its Debian package. Tests call it first for what they use (`ping`, `curl`, `tcpdump`, ...)
/// and fail, never skip, on an error. A program that is not in [`NEEDS`] is refused as such.
pub fn check_tools(tools: &[&str]) -> Result<(), LabError> {
    if let Some(unknown) = tools.iter().find(|t| lookup(t).is_none()) {
        return Err(crate::invalid(
            format!("tool `{unknown}`"),
            "it is not in vmnap_lab::tools::NEEDS: add it there with its Debian package (and to \
             README.md's install list)",
        ));
    }
    let missing: Vec<MissingTool> = tools
        .iter()
        .filter(|t| find_tool(t).is_none())
        .map(|t| MissingTool::of(t, None))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError::MissingTools(missing))
    }
}

/// Finds `name`, or says that it is missing, with its package, and what for.
pub(crate) fn tool(name: &str, needed_for: &str) -> Result<PathBuf, LabError> {
    find_tool(name).ok_or_else(|| {
        let why = (!needed_for.is_empty()).then_some(needed_for);
        LabError::MissingTools(vec![MissingTool::of(name, why)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_named_in_the_table_is_there_once() {
        for (i, n) in NEEDS.iter().enumerate() {
            assert!(
                NEEDS[..i].iter().all(|m| m.name != n.name),
                "{} twice",
                n.name
            );
        }
        assert_eq!(debian_package("virsh"), Some("libvirt-clients"));
        assert_eq!(debian_package("busybox"), Some("busybox-static"));
        assert_eq!(debian_package("surely-not-a-tool-vmnap"), None);
    }

    #[test]
    fn a_missing_tool_names_its_package_and_an_unknown_one_is_refused() {
        let e = check_tools(&["ip", "surely-not-a-tool-vmnap"]).expect_err("unknown tool");
        let msg = e.to_string();
        assert!(
            msg.contains("surely-not-a-tool-vmnap") && msg.contains("vmnap_lab::tools::NEEDS"),
            "{msg}"
        );
        let e = LabError::MissingTools(vec![MissingTool::of("virsh", None)]);
        let msg = e.to_string();
        assert!(
            msg.contains("`virsh` (Debian package libvirt-clients)")
                && msg.contains("apt-get install libvirt-clients"),
            "{msg}"
        );
    }

    #[test]
    fn the_demo_installs_a_subset_of_what_the_tests_install() {
        let tests = test_packages();
        for p in demo_packages() {
            assert!(tests.contains(&p), "{p}");
        }
        // The demo has no libvirt guest, and building needs no libvirt.
        assert!(!demo_packages().iter().any(|p| p.starts_with("libvirt")));
        assert!(
            !demo_packages().contains(&"gcc"),
            "the toolchain brings gcc"
        );
        assert!(test_packages().contains(&"libc6-dev"));
        assert_eq!(demo_programs(), ["ip", "nsenter", "sh", "ping", "curl"]);
        assert!(
            !test_packages().contains(&"util-linux"),
            "every Debian has it"
        );
    }
}
