//! Real QEMU guests (built by `guest/build-image.sh`) on a lab bridge. Needs root, `ip`,
//! `nsenter`, `ping`, `curl`, and the Debian packages `qemu-system-x86 busybox-static gcc
//! libc6-dev`. A missing tool fails the test with a message naming the packages (it is
//! never skipped).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vmnap_lab::qemu::{GuestImage, VmSpec, ECHO_PORT, READY_LINE, UDP_LOG_PORT};
use vmnap_lab::{check_tools, CgroupKind, Lab, LabError, LabOptions};

/// Builds the image once per test process (the script itself is cached across runs).
fn image() -> GuestImage {
    static IMAGE: OnceLock<GuestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            GuestImage::build().unwrap_or_else(|e| panic!("building the guest image: {e}"))
        })
        .clone()
}

fn lab() -> Lab {
    check_tools(&["ping", "curl"]).unwrap_or_else(|e| panic!("{e}"));
    Lab::new(LabOptions {
        prefix: None,
        workload: vec![env!("CARGO_BIN_EXE_vmnap-lab-guest").into()],
        cgroup: CgroupKind::V2,
    })
    .unwrap_or_else(|e| panic!("Lab::new: {e}"))
}

fn v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

fn v6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n)
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn curl(lab: &Lab, ns: &str, url: &str, max_time: &str) -> Output {
    lab.exec(ns, &["curl", "-sS", "-g", "--max-time", max_time, url])
        .unwrap()
}

/// Runs `f` on a thread that has joined network namespace `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(Lab::netns_path(ns)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only; the fd is valid for the call.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The test's own QMP exchange: greeting, `qmp_capabilities`, then `execute`; returns the
/// reply to `execute`.
fn qmp(socket: &Path, execute: &str) -> String {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"QMP\""), "greeting: {line}");
    let mut reply = |w: &mut UnixStream, msg: &str| -> String {
        w.write_all(msg.as_bytes()).unwrap();
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).unwrap() > 0, "QMP closed");
            if !line.contains("\"event\"") {
                return line;
            }
        }
    };
    let caps = reply(&mut w, "{\"execute\":\"qmp_capabilities\"}\n");
    assert!(caps.contains("\"return\""), "qmp_capabilities: {caps}");
    reply(&mut w, &format!("{{\"execute\":\"{execute}\"}}\n"))
}

fn is_qemu(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("qemu-system"))
        .unwrap_or(false)
}

#[test]
fn image_builds_and_is_cached() {
    let first = image();
    assert!(first.kernel.is_file() && first.initramfs.is_file());
    let t = Instant::now();
    let again = GuestImage::build().unwrap();
    let cached = t.elapsed();
    assert_eq!(again, first);
    assert!(
        cached < Duration::from_secs(1),
        "cached build took {cached:?}"
    );
    // The script's own output: exactly the two paths.
    let out = Command::new("sh")
        .arg(GuestImage::build_script())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "kernel={}\ninitramfs={}\n",
            first.kernel.display(),
            first.initramfs.display()
        )
    );
}

#[test]
fn vm_serves_http_echo_udp_ping_and_pauses() {
    let image = image();
    let mut lab = lab();
    let client = lab.add_client("c1", v4(1), v6(1), 0).unwrap().clone();
    let vm = lab
        .add_vm(VmSpec::new("vm1", v4(21), v6(0x21), image))
        .unwrap_or_else(|e| panic!("add_vm: {e}"))
        .clone();
    eprintln!("vm1 ready after {:?} (pid {})", vm.boot_time, vm.pid);
    assert!(is_qemu(vm.pid));
    assert_eq!(vm.tap, "vt-vm1");
    assert_eq!(vm.mac, [0x52, 0x54, 0x00, 18, 0, 21]);
    assert!(vm.console_text().contains(READY_LINE));
    // Only emergencies reach the console after boot, so no late kernel message lands in the
    // middle of a UDP logger line.
    assert!(
        vm.console_text()
            .contains("vmnap-guest: kernel console level 1"),
        "console:\n{}",
        vm.console_text()
    );
    assert!(vm.qmp.exists());
    let host = lab.host_netns().to_string();
    let link = lab
        .exec_checked(&host, &["ip", "-o", "link", "show", "dev", "vt-vm1"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("master br0"),
        "{}",
        text(&link)
    );

    // HTTP over IPv4 and IPv6.
    let o = curl(&lab, &client.netns, "http://198.18.0.21/", "10");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello from vm1\n",
        "{}",
        text(&o)
    );
    let o = curl(&lab, &client.netns, "http://[2001:db8::21]/any/path", "10");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello from vm1\n",
        "{}",
        text(&o)
    );

    // ping over both.
    for (six, to) in [(false, "198.18.0.21"), (true, "2001:db8::21")] {
        let mut argv = vec!["ping", "-c", "2", "-W", "3", to];
        if six {
            argv.insert(1, "-6");
        }
        let o = lab.exec(&client.netns, &argv).unwrap();
        assert!(o.status.success(), "ping {to}: {}", text(&o));
    }

    // TCP echo and UDP, from a thread in the client namespace.
    let echoed = in_netns(&client.netns, || {
        let addr = SocketAddr::from((v4(21), ECHO_PORT));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"echo me\n").unwrap();
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf).unwrap();
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..3 {
            u.send_to(format!("datagram {i}\n").as_bytes(), (v4(21), UDP_LOG_PORT))
                .unwrap();
        }
        let u6 = UdpSocket::bind("[::]:0").unwrap();
        u6.send_to(b"over six", (v6(0x21), UDP_LOG_PORT)).unwrap();
        buf
    });
    assert_eq!(&echoed, b"echo me\n");
    let want = ["datagram 0", "datagram 1", "datagram 2", "over six"];
    wait_for("UDP lines on the console", 10, || vm.udp_lines().len() >= 4);
    let mut got = vm.udp_lines();
    got.sort();
    assert_eq!(got, want, "console:\n{}", vm.console_text());

    // QMP stop: the guest no longer answers; cont: it does again.
    let r = qmp(&vm.qmp, "stop");
    assert!(r.contains("\"return\""), "stop: {r}");
    assert!(qmp(&vm.qmp, "query-status").contains("\"paused\""));
    let o = curl(&lab, &client.netns, "http://198.18.0.21/", "2");
    assert_eq!(
        o.status.code(),
        Some(28),
        "curl to a paused guest: {}",
        text(&o)
    );
    let r = qmp(&vm.qmp, "cont");
    assert!(r.contains("\"return\""), "cont: {r}");
    let t = Instant::now();
    let o = curl(&lab, &client.netns, "http://198.18.0.21/", "10");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello from vm1\n",
        "{}",
        text(&o)
    );
    eprintln!("curl after cont: {:?}", t.elapsed());
    assert!(vm
        .qmp_execute("query-status")
        .unwrap()
        .contains("\"running\""));

    // Everything goes with the lab.
    let namespaces = lab.namespaces();
    let dir = lab.dir().to_path_buf();
    drop(lab);
    assert!(!is_qemu(vm.pid), "QEMU {} still runs", vm.pid);
    for ns in &namespaces {
        assert!(!Lab::netns_path(ns).exists(), "namespace {ns} left behind");
    }
    assert!(!dir.exists());
}

#[test]
fn failed_boot_shows_console_and_cleans_up() {
    let mut image = image();
    let mut lab = lab();
    // Not an initramfs: the kernel panics ("VFS: Unable to mount root fs"), and with
    // panic=-1 and -no-reboot QEMU exits.
    let bogus: PathBuf = lab.dir().join("bogus.cpio.gz");
    std::fs::write(&bogus, b"this is not an initramfs").unwrap();
    image.initramfs = bogus;
    let t = Instant::now();
    let e = lab
        .add_vm(VmSpec::new("bad", v4(31), v6(0x31), image.clone()))
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LabError::Command { .. }), "{msg}");
    assert!(msg.contains("console tail"), "{msg}");
    assert!(msg.to_lowercase().contains("panic"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(lab.vms().is_empty());
    let host = lab.host_netns().to_string();
    let o = lab
        .exec(&host, &["ip", "link", "show", "dev", "vt-bad"])
        .unwrap();
    assert!(!o.status.success(), "tap left behind: {}", text(&o));

    // Refusals before anything starts.
    let good = self::image();
    for (spec, what) in [
        (
            VmSpec::new("", v4(32), v6(0x32), good.clone()),
            "empty name",
        ),
        (
            VmSpec::new("waytoolongname", v4(32), v6(0x32), good.clone()),
            "long name",
        ),
        (
            VmSpec::new("x", Ipv4Addr::new(10, 0, 0, 1), v6(0x32), good.clone()),
            "address",
        ),
        (
            VmSpec {
                mac: [0x00, 0x16, 0x3e, 0, 0, 1],
                ..VmSpec::new("x", v4(32), v6(0x32), good.clone())
            },
            "MAC",
        ),
        (
            VmSpec::new(
                "x",
                v4(32),
                v6(0x32),
                GuestImage {
                    kernel: "/nonexistent/vmlinuz".into(),
                    initramfs: good.initramfs.clone(),
                },
            ),
            "kernel",
        ),
    ] {
        assert!(
            matches!(lab.add_vm(spec), Err(LabError::Invalid { .. })),
            "{what} accepted"
        );
    }
    let o = lab
        .exec(&host, &["ip", "-o", "link", "show", "type", "tun"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).trim().is_empty(),
        "taps left: {}",
        text(&o)
    );
}
