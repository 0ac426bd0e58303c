//! Real labs in real namespaces: needs root, `ip`, `nsenter`, `ping`, `curl`, `tcpdump`.
//! A missing tool or missing root fails the test with a message (it is never skipped).
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vmnap_lab::{check_tools, CgroupKind, GuestSpec, Lab, LabOptions};

fn lab(kind: CgroupKind) -> Lab {
    check_tools(&["ping", "curl", "tcpdump"]).unwrap_or_else(|e| panic!("{e}"));
    Lab::new(LabOptions {
        prefix: None,
        workload: vec![env!("CARGO_BIN_EXE_vmnap-lab-guest").into()],
        cgroup: kind,
    })
    .unwrap_or_else(|e| panic!("Lab::new: {e}"))
}

fn v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

/// 2001:db8::N with N written in decimal digits (v6(12) is 2001:db8::12).
fn v6(n: u16) -> Ipv6Addr {
    let seg = u16::from_str_radix(&n.to_string(), 16).unwrap();
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, seg)
}

fn guest(name: &str, n: u8, vlan: u16) -> GuestSpec {
    GuestSpec {
        name: name.into(),
        ipv4: v4(n),
        ipv6: v6(n.into()),
        mac: [0x02, 0, 0, 0, 0, n],
        vlan,
        http_port: Some(8080),
        udp_log_port: Some(9000),
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ping(lab: &Lab, ns: &str, to: &str, six: bool) -> Output {
    let mut argv = vec!["ping", "-c", "1", "-W", "2", to];
    if six {
        argv.insert(1, "-6");
    }
    lab.exec(ns, &argv).unwrap()
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

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What must be gone once a lab is dropped.
#[derive(Debug, Default)]
struct Footprint {
    namespaces: Vec<String>,
    cgroup_parent: PathBuf,
    pids: Vec<u32>,
    dir: PathBuf,
}

fn footprint(lab: &Lab, extra_pids: &[u32]) -> Footprint {
    let mut pids: Vec<u32> = lab.guests().iter().map(|g| g.workload_pid).collect();
    pids.extend_from_slice(extra_pids);
    Footprint {
        namespaces: lab.namespaces(),
        cgroup_parent: lab.cgroup_parent().to_path_buf(),
        pids,
        dir: lab.dir().to_path_buf(),
    }
}

fn assert_gone(f: &Footprint) {
    assert!(!f.namespaces.is_empty());
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    for ns in &f.namespaces {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} left behind:\n{list}"
        );
        assert!(!Lab::netns_path(ns).exists());
    }
    assert!(
        !f.cgroup_parent.exists(),
        "cgroup {} left behind",
        f.cgroup_parent.display()
    );
    for pid in &f.pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still exists"
        );
    }
    assert!(!f.dir.exists(), "{} left behind", f.dir.display());
}

#[test]
fn two_guests_and_a_client() {
    let mut lab = lab(CgroupKind::V2);
    let g1 = lab.add_guest(guest("g1", 11, 0)).unwrap().clone();
    let g2 = lab.add_guest(guest("g2", 12, 0)).unwrap().clone();
    let c = lab.add_client("c1", v4(100), v6(100), 0).unwrap().clone();
    assert_eq!(g1.netns, format!("{}gg1", lab.prefix()));
    assert_eq!(g1.host_if, "vg-g1");
    assert_eq!(c.netns, format!("{}cc1", lab.prefix()));
    assert_eq!(lab.host_netns(), format!("{}h", lab.prefix()));
    assert_eq!(lab.bridge(), "br0");
    assert_eq!(
        lab.link_mac(lab.host_netns(), "br0").unwrap(),
        vmnap_lab::BRIDGE_MAC
    );
    assert_eq!(lab.link_mac(&g1.netns, "eth0").unwrap(), g1.mac);
    // The workload is in its cgroup.
    let procs = std::fs::read_to_string(g1.cgroup.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == g1.workload_pid.to_string()),
        "{procs}"
    );

    let cap = lab.capture(lab.host_netns(), "vg-g1", "icmp").unwrap();
    for g in [&g1, &g2] {
        let o = ping(&lab, &c.netns, &g.ipv4.to_string(), false);
        assert!(o.status.success(), "ping {}: {}", g.ipv4, text(&o));
        let o = ping(&lab, &c.netns, &g.ipv6.to_string(), true);
        assert!(o.status.success(), "ping -6 {}: {}", g.ipv6, text(&o));
    }
    let lines = cap.stop().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ICMP echo request") && l.contains("198.18.0.100 > 198.18.0.11")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("198.18.0.12")),
        "g2 traffic on g1's port: {lines:#?}"
    );

    let o = curl(&lab, &c.netns, "http://198.18.0.11:8080/", "5");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello from g1\n");
    let o = curl(&lab, &c.netns, "http://[2001:db8::12]:8080/x", "5");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello from g2\n");
    // Keep-alive: two requests on one connection.
    let o = lab
        .exec(
            &c.netns,
            &[
                "curl",
                "-sS",
                "-v",
                "--max-time",
                "5",
                "http://198.18.0.11:8080/a",
                "http://198.18.0.11:8080/b",
            ],
        )
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello from g1\nhello from g1\n"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "{err}"
    );
    // Connection: close is honoured.
    let o = lab
        .exec(
            &c.netns,
            &[
                "curl",
                "-sS",
                "-i",
                "--max-time",
                "5",
                "-H",
                "Connection: close",
                "http://198.18.0.11:8080/",
            ],
        )
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Connection: close"), "{}", text(&o));
    assert!(out.contains("Content-Length: 14"), "{}", text(&o));

    // UDP, from a thread inside the client namespace, over IPv4 and IPv6.
    in_netns(&c.netns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"one", "198.18.0.11:9000").unwrap();
        s.send_to(b"two", "198.18.0.11:9000").unwrap();
        let s6 = UdpSocket::bind("[::]:0").unwrap();
        s6.send_to(b"three", "[2001:db8::11]:9000").unwrap();
    });
    let log = g1.udp_log.clone().unwrap();
    assert!(log.starts_with(lab.dir()));
    wait_for("udp log", || {
        std::fs::read_to_string(&log).unwrap_or_default() == "one\ntwo\nthree\n"
    });

    // Only the lab's own namespaces are accepted.
    assert!(lab.exec("not-a-lab-ns", &["true"]).is_err());
    let f = footprint(&lab, &[]);
    drop(lab);
    assert_gone(&f);
}

#[test]
fn vlan_guest_is_reachable_only_on_its_vlan() {
    let mut lab = lab(CgroupKind::V2);
    let g = lab.add_guest(guest("gv", 21, 10)).unwrap().clone();
    let tagged = lab.add_client("cv", v4(110), v6(110), 10).unwrap().clone();
    let untagged = lab.add_client("cu", v4(111), v6(111), 0).unwrap().clone();
    assert_eq!(g.guest_if(), "eth0.10");
    assert_eq!(lab.link_mac(&g.netns, "eth0.10").unwrap(), g.mac);

    let cap = lab.capture(lab.host_netns(), "vg-gv", "").unwrap();
    let o = ping(&lab, &tagged.netns, "198.18.0.21", false);
    assert!(o.status.success(), "{}", text(&o));
    let o = ping(&lab, &tagged.netns, "2001:db8::21", true);
    assert!(o.status.success(), "{}", text(&o));
    let o = curl(&lab, &tagged.netns, "http://198.18.0.21:8080/", "5");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello from gv\n",
        "{}",
        text(&o)
    );
    let lines = cap.stop_with(&["-e"]).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("vlan 10") && l.contains("02:00:00:00:00:15")),
        "{lines:#?}"
    );

    let o = ping(&lab, &untagged.netns, "198.18.0.21", false);
    assert!(
        !o.status.success(),
        "untagged client reached VLAN guest: {}",
        text(&o)
    );
    let o = curl(&lab, &untagged.netns, "http://198.18.0.21:8080/", "1");
    assert!(!o.status.success(), "{}", text(&o));
}

fn frozen_guest(kind: CgroupKind) {
    let mut lab = lab(kind);
    let g = lab.add_guest(guest("gf", 31, 0)).unwrap().clone();
    let c = lab.add_client("cf", v4(130), v6(130), 0).unwrap().clone();
    let url = "http://198.18.0.31:8080/";
    let o = curl(&lab, &c.netns, url, "5");
    assert!(o.status.success(), "{}", text(&o));

    let (file, frozen, thawed) = match kind {
        CgroupKind::V2 => ("cgroup.freeze", "1", "0"),
        CgroupKind::V1 => ("freezer.state", "FROZEN", "THAWED"),
    };
    std::fs::write(g.cgroup.join(file), frozen).unwrap();
    if kind == CgroupKind::V2 {
        wait_for("frozen", || {
            std::fs::read_to_string(g.cgroup.join("cgroup.events"))
                .unwrap()
                .contains("frozen 1")
        });
    } else {
        wait_for("FROZEN", || {
            std::fs::read_to_string(g.cgroup.join("freezer.state"))
                .unwrap()
                .trim()
                == "FROZEN"
        });
    }
    let started = Instant::now();
    let o = curl(&lab, &c.netns, url, "1");
    assert!(
        !o.status.success(),
        "curl answered by a frozen guest: {}",
        text(&o)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The kernel still answers for a frozen guest.
    let o = ping(&lab, &c.netns, "198.18.0.31", false);
    assert!(o.status.success(), "{}", text(&o));

    std::fs::write(g.cgroup.join(file), thawed).unwrap();
    let o = curl(&lab, &c.netns, url, "5");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello from gf\n");

    // Freeze again and drop while frozen: cleanup must thaw, kill and remove.
    std::fs::write(g.cgroup.join(file), frozen).unwrap();
    let f = footprint(&lab, &[]);
    drop(lab);
    assert_gone(&f);
}

#[test]
fn frozen_guest_v2() {
    frozen_guest(CgroupKind::V2);
}

#[test]
fn frozen_guest_v1() {
    frozen_guest(CgroupKind::V1);
}

#[test]
fn spawned_processes_are_ended_by_pid() {
    let mut lab = lab(CgroupKind::V2);
    let c = lab.add_client("c", v4(140), v6(140), 0).unwrap().clone();
    let log = lab.dir().join("host.log");
    let sleep_host = lab
        .spawn_in_host(
            &[
                OsStr::new("sh"),
                OsStr::new("-c"),
                OsStr::new("ls /sys/fs/cgroup; echo hi >&2; exec sleep 1000"),
            ],
            Some(&log),
        )
        .unwrap();
    let sleep_client = lab
        .spawn_in(&c.netns, &[OsStr::new("sleep"), OsStr::new("1000")])
        .unwrap();
    wait_for("host log", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("hi")
    });
    // nsenter keeps the host's /sys, so cgroups are visible.
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .next()
        .unwrap_or("")
        .is_empty());
    assert!(lab.is_running(sleep_client));
    lab.kill(sleep_client);
    assert!(!Path::new(&format!("/proc/{sleep_client}")).exists());
    let f = footprint(&lab, &[sleep_host]);
    drop(lab);
    assert_gone(&f);
}

#[test]
fn everything_is_removed_when_a_test_panics() {
    let seen: Mutex<Option<Footprint>> = Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = lab(CgroupKind::V1);
        lab.add_guest(guest("gp", 41, 0)).unwrap();
        lab.add_guest(guest("gq", 42, 7)).unwrap();
        lab.add_client("cp", v4(150), v6(150), 7).unwrap();
        let pid = lab
            .spawn_in_host(&[OsStr::new("sleep"), OsStr::new("1000")], None)
            .unwrap();
        let _cap = lab.capture(lab.host_netns(), "br0", "").unwrap();
        std::fs::write(
            lab.guest("gp").unwrap().cgroup.join("freezer.state"),
            "FROZEN",
        )
        .unwrap();
        *seen.lock().unwrap() = Some(footprint(&lab, &[pid]));
        panic!("deliberate panic with the lab alive");
    }));
    assert!(result.is_err());
    let f = seen.lock().unwrap().take().unwrap();
    assert_eq!(f.namespaces.len(), 4);
    assert_gone(&f);
}
