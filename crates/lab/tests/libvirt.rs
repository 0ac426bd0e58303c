//! A real libvirtd per lab and real libvirt domains (the project's guest image under TCG)
//! on the lab bridge. Needs root, `ip`, `nsenter`, `curl`, and the Debian packages
//! `libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients` plus those of the QEMU
//! guest (`qemu-system-x86 busybox-static gcc libc6-dev`). A missing tool fails the test
//! with a message naming the packages (it is never skipped). Timings are printed on
//! standard error (`cargo test -p vmnap-lab --test libvirt -- --nocapture`).
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vmnap_lab::libvirt::{check_libvirt_tools, DomainSpec, LabDomain, APT_PACKAGES};
use vmnap_lab::qemu::{GuestImage, UDP_LOG_PORT};
use vmnap_lab::{check_tools, CgroupKind, Lab, LabOptions};

fn image() -> GuestImage {
    static IMAGE: OnceLock<GuestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            GuestImage::build().unwrap_or_else(|e| panic!("building the guest image: {e}"))
        })
        .clone()
}

fn lab() -> Lab {
    check_tools(&["curl"]).unwrap_or_else(|e| panic!("{e}"));
    check_libvirt_tools().unwrap_or_else(|e| panic!("{e}"));
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

fn curl(lab: &Lab, ns: &str, ip: Ipv4Addr, max_time: &str) -> Output {
    lab.exec(
        ns,
        &[
            "curl",
            "-sS",
            "--max-time",
            max_time,
            &format!("http://{ip}/"),
        ],
    )
    .unwrap()
}

fn assert_serves(lab: &Lab, ns: &str, d: &LabDomain) {
    let out = curl(lab, ns, d.ipv4, "5");
    assert!(out.status.success(), "curl {}: {}", d.name, text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hello from {}", d.name)
    );
}

/// Polls curl with a short timeout until it answers; returns the time since `since`.
fn until_serves(lab: &Lab, ns: &str, d: &LabDomain, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = curl(lab, ns, d.ipv4, "2");
        if out.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("hello from {}", d.name)
            );
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{} never served: {}",
            d.name,
            text(&out)
        );
    }
}

fn links(lab: &Lab, ns: &str) -> String {
    let out = lab.exec_checked(ns, &["ip", "-o", "link", "show"]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_link(lab: &Lab, ns: &str, name: &str) -> bool {
    links(lab, ns).lines().any(|l| {
        l.split(": ")
            .nth(1)
            .is_some_and(|n| n.split('@').next() == Some(name))
    })
}

fn pid_alive(pid: u32) -> bool {
    // A zombie counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// PIDs of processes in mount namespace `ns` (`mnt:[...]`).
fn in_mnt_ns(ns: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                .is_ok_and(|l| l.to_string_lossy() == ns)
        })
        .collect()
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What must be gone once a lab dropped.
struct Leftovers {
    pids: Vec<u32>,
    mnt_ns: String,
    netns: Vec<String>,
    dir: PathBuf,
}

fn leftovers(lab: &Lab, domains: &[&LabDomain]) -> Leftovers {
    let d = lab.libvirtd().unwrap();
    let mut pids = vec![d.pid()];
    pids.extend(domains.iter().filter_map(|d| d.qemu_pid()));
    Leftovers {
        pids,
        mnt_ns: d.mnt_ns().to_string(),
        netns: lab.namespaces(),
        dir: lab.dir().to_path_buf(),
    }
}

fn assert_clean(l: &Leftovers) {
    wait_for("the lab's processes to be gone", 10, || {
        l.pids.iter().all(|p| !pid_alive(*p))
    });
    wait_for("libvirtd's mount namespace to be empty", 10, || {
        in_mnt_ns(&l.mnt_ns).is_empty()
    });
    for ns in &l.netns {
        assert!(!Lab::netns_path(ns).exists(), "netns {ns} left over");
    }
    assert!(!l.dir.exists(), "{} left over", l.dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = l.dir.to_string_lossy();
    assert!(
        !mounts.lines().any(|m| m.contains(&*dir)),
        "mount of {dir} in the root mount namespace:\n{mounts}"
    );
}

fn send_udp(ns: &str, to: Ipv4Addr, payload: &[u8]) {
    let file = std::fs::File::open(Lab::netns_path(ns)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only; the fd is valid for the call.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.send_to(payload, (to, UDP_LOG_PORT)).unwrap();
        })
        .join()
        .unwrap();
    });
}

#[test]
fn libvirt_tools_message_names_packages() {
    assert_eq!(
        APT_PACKAGES,
        &[
            "libvirt-daemon",
            "libvirt-daemon-driver-qemu",
            "libvirt-clients"
        ]
    );
    // On this machine everything must be installed; the message is checked in the unit
    // tests of the module.
    check_libvirt_tools().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn libvirt_domain_serves_suspends_saves_restarts_and_is_cleaned_up() {
    let image = image();
    let mut lab = lab();
    let client = lab.add_client("c1", v4(1), v6(1), 0).unwrap().clone();
    let host = lab.host_netns().to_string();

    // Every frame on the bridge, to check the source MACs at the end.
    let cap = lab.capture(&host, "br0", "").unwrap();
    lab.start_libvirtd().unwrap();
    let d = lab.libvirtd().unwrap();
    eprintln!(
        "TIMING libvirtd start to answering: {:?} (caps seeded: {})",
        d.start_time(),
        d.seeded_caps()
    );
    let uri = d.uri().to_string();
    let socket = d.socket().to_path_buf();
    assert_eq!(uri, format!("qemu:///system?socket={}", socket.display()));
    assert!(socket.starts_with(lab.dir()));
    // `virsh -c URI list` works from the root mount namespace.
    let out = std::process::Command::new("virsh")
        .args(["-c", &uri, "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "virsh list: {}", text(&out));
    // The daemon's mounts are in its namespace only; the machine's /run/libvirt is not it.
    let mine = std::fs::read_to_string(format!("/proc/{}/mountinfo", d.pid())).unwrap();
    for at in ["/run/libvirt", "/var/lib/libvirt", "/etc/libvirt"] {
        assert!(
            mine.lines()
                .any(|l| l.split_whitespace().nth(4) == Some(at)),
            "no mount on {at} in libvirtd's namespace"
        );
    }
    let root_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!root_mounts
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some("/run/libvirt")));
    // It runs in the lab's host network namespace.
    let netns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let host_ns_id = std::fs::metadata(Lab::netns_path(&host)).unwrap();
    assert_eq!(
        netns_of(d.pid()).to_string_lossy(),
        format!("net:[{}]", std::os::unix::fs::MetadataExt::ino(&host_ns_id))
    );

    let t = Instant::now();
    let dom = lab
        .define_domain(DomainSpec::new("d1", v4(21), v6(0x21), image))
        .unwrap()
        .clone();
    eprintln!(
        "TIMING first domain: define {:?}, start to ready {:?}, total {:?}",
        dom.define_time,
        dom.boot_time,
        t.elapsed()
    );
    assert_eq!(dom.uri, uri);
    assert_eq!(dom.mac, [0x52, 0x54, 0x00, 18, 0, 21]);
    assert!(dom.console_text().contains("vmnap-guest ready"));
    // Its tap is beside the bridge, enslaved to it; not in the root namespace.
    assert!(has_link(&lab, &host, &dom.tap), "{}", links(&lab, &host));
    let out = lab
        .exec_checked(&host, &["ip", "-o", "link", "show", "dev", &dom.tap])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("master br0"),
        "{}",
        text(&out)
    );
    let root_links = std::process::Command::new("ip")
        .args(["-o", "link", "show", "dev", &dom.tap])
        .output()
        .unwrap();
    assert!(
        !root_links.status.success(),
        "tap {} in the root ns",
        dom.tap
    );
    let qemu1 = dom.qemu_pid().expect("QEMU pid");
    assert_eq!(
        std::fs::read_link(format!("/proc/{qemu1}/ns/mnt"))
            .unwrap()
            .to_string_lossy(),
        lab.libvirtd().unwrap().mnt_ns()
    );

    assert_serves(&lab, &client.netns, &dom);
    send_udp(&client.netns, dom.ipv4, b"hello-libvirt");
    wait_for("the udp line", 10, || {
        dom.udp_lines().iter().any(|l| l == "hello-libvirt")
    });

    // Suspend: curl times out. Resume: it answers again.
    let t_suspend = dom.run("suspend").unwrap();
    assert_eq!(dom.state().unwrap(), "paused");
    let out = curl(&lab, &client.netns, dom.ipv4, "2");
    assert!(
        !out.status.success(),
        "paused domain answered: {}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(28), "{}", text(&out));
    let since = Instant::now();
    let t_resume = dom.run("resume").unwrap();
    let t_answer = until_serves(&lab, &client.netns, &dom, since);
    eprintln!(
        "TIMING virsh suspend {t_suspend:?}, virsh resume {t_resume:?}, resume to answer {t_answer:?}"
    );

    // Managed save: QEMU ends, its tap goes; start brings both back and it serves again.
    let t_save = dom.run("managedsave").unwrap();
    assert_eq!(dom.state().unwrap(), "shut off");
    wait_for("QEMU to end after managedsave", 10, || !pid_alive(qemu1));
    assert!(!has_link(&lab, &host, &dom.tap), "{}", links(&lab, &host));
    assert_eq!(dom.current_tap().unwrap(), None);
    assert_eq!(dom.qemu_pid(), None);
    let out = curl(&lab, &client.netns, dom.ipv4, "2");
    assert!(
        !out.status.success(),
        "saved domain answered: {}",
        text(&out)
    );
    let since = Instant::now();
    let t_start = dom.run("start").unwrap();
    let t_answer2 = until_serves(&lab, &client.netns, &dom, since);
    eprintln!(
        "TIMING virsh managedsave {t_save:?}, virsh start (restore) {t_start:?}, start to answer {t_answer2:?}"
    );
    assert_eq!(dom.state().unwrap(), "running");
    let tap2 = dom.current_tap().unwrap().expect("tap after start");
    assert!(has_link(&lab, &host, &tap2), "{}", links(&lab, &host));
    let qemu2 = dom.qemu_pid().expect("QEMU pid after start");
    assert_ne!(qemu1, qemu2);
    assert!(dom.console_text().contains("vmnap-guest ready"));

    // Only the lab's MACs (02:... and 52:54:00:...) and broadcast/multicast destinations.
    let frames = cap.stop_with(&["-e"]).unwrap();
    assert!(frames.len() > 10, "{frames:?}");
    for f in &frames {
        let src = f.split_whitespace().nth(1).unwrap_or("");
        assert!(
            src.starts_with("02:") || src.starts_with("52:54:00:"),
            "frame from a foreign MAC: {f}"
        );
    }

    let left = leftovers(&lab, &[&dom]);
    let t = Instant::now();
    drop(lab);
    eprintln!("TIMING lab drop with a running domain: {:?}", t.elapsed());
    assert_clean(&left);
}

#[test]
fn two_labs_do_not_see_each_others_domains() {
    let image = image();
    let mut a = lab();
    let mut b = lab();
    let ca = a.add_client("ca", v4(1), v6(1), 0).unwrap().clone();
    let cb = b.add_client("cb", v4(1), v6(1), 0).unwrap().clone();
    let (ua, ub) = (
        a.start_libvirtd().unwrap().uri().to_string(),
        b.start_libvirtd().unwrap().uri().to_string(),
    );
    assert_ne!(ua, ub);
    // The same addresses and MAC in both labs: they are separate networks.
    let t = Instant::now();
    let da = a
        .define_domain(DomainSpec::new("da", v4(31), v6(0x31), image.clone()))
        .unwrap()
        .clone();
    eprintln!(
        "TIMING lab A domain: define {:?}, ready {:?}, total {:?} (caps seeded: {})",
        da.define_time,
        da.boot_time,
        t.elapsed(),
        a.libvirtd().unwrap().seeded_caps()
    );
    let t = Instant::now();
    let db = b
        .define_domain(DomainSpec::new("db", v4(31), v6(0x31), image))
        .unwrap()
        .clone();
    eprintln!(
        "TIMING lab B domain: define {:?}, ready {:?}, total {:?} (caps seeded: {})",
        db.define_time,
        db.boot_time,
        t.elapsed(),
        b.libvirtd().unwrap().seeded_caps()
    );
    assert_eq!(a.libvirtd().unwrap().domain_names().unwrap(), vec!["da"]);
    assert_eq!(b.libvirtd().unwrap().domain_names().unwrap(), vec!["db"]);
    assert!(a.libvirtd().unwrap().virsh(&["dominfo", "db"]).is_err());
    assert!(b.libvirtd().unwrap().virsh(&["dominfo", "da"]).is_err());
    assert_serves(&a, &ca.netns, &da);
    assert_serves(&b, &cb.netns, &db);
    // Pausing one leaves the other serving.
    da.run("suspend").unwrap();
    assert!(!curl(&a, &ca.netns, da.ipv4, "2").status.success());
    assert_serves(&b, &cb.netns, &db);
    da.run("resume").unwrap();
    until_serves(&a, &ca.netns, &da, Instant::now());

    let la = leftovers(&a, &[&da]);
    let lb = leftovers(&b, &[&db]);
    assert_ne!(la.mnt_ns, lb.mnt_ns);
    let t_destroy = da.run("destroy").unwrap();
    let t = Instant::now();
    drop(a);
    eprintln!(
        "TIMING virsh destroy {t_destroy:?}; lab drop without a running domain {:?}",
        t.elapsed()
    );
    // B is unaffected by A's going.
    assert_serves(&b, &cb.netns, &db);
    assert_eq!(b.libvirtd().unwrap().domain_names().unwrap(), vec!["db"]);
    assert_clean(&la);
    drop(b);
    assert_clean(&lb);
}
