//! The surrogate on a real bridge: the real daemon, real namespace guests, real clients.

mod common;

use common::{need, text, Setup};

/// Whether an XDP program is attached to any link in the lab's host namespace: only the
/// surrogate's port could have one.
/// Where the daemon's in-kernel responder runs, as its start-up line says: `None` if it has
/// none. Generic XDP is checked on the link too.
fn kernel_responder(s: &Setup) -> Option<String> {
    let log = s.daemon_log();
    let line = log
        .lines()
        .find(|l| l.contains("standing by on bridge"))
        .unwrap_or_else(|| panic!("no start-up line in the log:\n{log}"));
    let hook = line
        .split_once("in_kernel=")
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no in_kernel in {line:?}"));
    if hook == "no" {
        return None;
    }
    if hook == "generic XDP" {
        let out = s
            .lab
            .exec(s.lab.host_netns(), &["ip", "-d", "link", "show"])
            .expect("ip link show");
        assert!(text(&out).contains("prog/xdp"), "{line}\n{}", text(&out));
    } else {
        assert_eq!(hook, "tcx on the veth peer's egress", "{line}");
    }
    Some(hook)
}

/// A sleeping guest is answered for (ARP, NDP, ping, ping -6) with its own MAC, and stays
/// frozen; `extra` is the config's extra text.
fn answered_with_its_own_mac(extra: &str) -> Setup {
    need(&["arping", "ping"]);
    let s = Setup::new(&[("web1", 0)], extra);
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    let mac = s.guest_mac("web1");
    let iface = s.client_if(0);
    let out = s.run(0, &["arping", "-c", "3", "-w", "5", "-I", &iface, &ip]);
    let arping = text(&out);
    assert!(out.status.success(), "arping got no answer:\n{arping}");
    assert!(
        arping.to_lowercase().contains(&mac),
        "arping answered by another MAC than {mac}:\n{arping}"
    );
    let out = s.run(0, &["ping", "-c", "3", "-i", "0.2", "-W", "2", &ip]);
    assert!(out.status.success(), "ping failed:\n{}", text(&out));
    assert!(!text(&out).contains("DUP!"), "{}", text(&out));
    let ip6 = s.guest_ip6("web1");
    let out = s.run(0, &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", &ip6]);
    assert!(out.status.success(), "ping -6 failed:\n{}", text(&out));
    // The neighbour entry the client learned points at the guest's MAC.
    let neigh = text(&s.run(0, &["ip", "-6", "neigh", "show", &ip6]));
    assert!(
        neigh.contains(&mac),
        "NDP answered with another MAC: {neigh}"
    );
    assert!(s.frozen("web1"), "answering must not thaw the guest");
    let st = s.status("web1");
    assert_eq!(st["state"], "sleeping");
    assert_eq!(st["wakes"], 0);
    assert!(
        st["answered_frames"].as_u64().expect("a number") >= 9,
        "{st}"
    );
    s
}

#[test]
fn sleeping_guest_is_answered_in_the_kernel_with_its_own_mac_and_counted() {
    need(&["curl"]);
    let s = answered_with_its_own_mac("");
    assert!(kernel_responder(&s).is_some(), "no responder in the kernel");
    // The kernel's answers are counted as the surrogate's are: 3 ARP requests (and the one
    // ping asked, if its entry had gone) and 3 pings.
    let count = |protocol: &str| -> u64 {
        let metrics = s.metrics();
        let key =
            format!("vmnap_guest_answered_frames_total{{guest=\"web1\",protocol=\"{protocol}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {key} in:\n{metrics}")) as u64
    };
    assert_eq!(count("icmp-echo"), 3);
    assert!(
        (3..=4).contains(&count("arp")),
        "{} ARP answers",
        count("arp")
    );
    // Woken, it answers for itself: nothing is left in the kernel's map in its name.
    let (body, _) = common::curl(&s, &format!("http://{}/", s.guest_ip("web1")));
    assert_eq!(body, "hello from web1\n");
    s.awake("web1");
    let out = s.run(
        0,
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            &s.guest_ip("web1"),
        ],
    );
    assert!(out.status.success(), "ping failed:\n{}", text(&out));
    assert_eq!(
        count("icmp-echo"),
        3,
        "the awake guest's own answers were counted"
    );
}

#[test]
fn sleeping_guest_is_answered_by_the_daemon_when_in_kernel_is_off() {
    let s = answered_with_its_own_mac("[surrogate]\nin_kernel = false\n---\n");
    assert_eq!(
        kernel_responder(&s),
        None,
        "a responder in the kernel with in_kernel = false"
    );
}

/// `vmnap_bridge_in_kernel_ports` for the lab's bridge.
fn ports_answered_at(s: &Setup) -> u64 {
    let key = format!(
        "vmnap_bridge_in_kernel_ports{{bridge=\"{}\"}} ",
        s.lab.bridge()
    );
    let metrics = s.metrics();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in:\n{metrics}"))
}

/// Runs a command in the lab's host namespace; panics unless it succeeds.
fn on_host(s: &Setup, argv: &[&str]) -> String {
    let out = s
        .lab
        .exec(s.lab.host_netns(), argv)
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(out.status.success(), "{argv:?}: {}", text(&out));
    text(&out)
}

#[test]
fn answered_in_the_kernel_at_every_port_a_request_needs_no_trip_to_vmnaps_port() {
    need(&["arping", "ping", "bridge"]);
    let mut s = Setup::new(
        &[("web1", 0), ("web2", 0)],
        "[surrogate]\nin_kernel_at_every_port = true\n---\n",
    );
    // Awake, web1's port is one of three: web1's, web2's and the client's.
    wait_for("three ports answered at", 5, || ports_answered_at(&s) == 3);
    s.sleep("web1");
    // Asleep, its port is disabled, and left.
    wait_for("two ports answered at", 5, || ports_answered_at(&s) == 2);
    let ip = s.guest_ip("web1");
    let mac = s.guest_mac("web1");
    let links = on_host(&s, &["ip", "-o", "link", "show", "master", s.lab.bridge()]);
    let own = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .find(|n| n.starts_with("vmnap"))
        .unwrap_or_else(|| panic!("no vmnap port on the bridge:\n{links}"))
        .to_owned();
    // vmnap's own port cut off from the bridge: only an answer at the port the request came
    // in by can reach the client.
    on_host(&s, &["bridge", "link", "set", "dev", &own, "state", "0"]);
    let arping = |s: &Setup, netns: &str| {
        let out = s
            .lab
            .exec(netns, &["arping", "-c", "2", "-w", "3", "-I", "eth0", &ip])
            .expect("arping");
        (out.status.success(), text(&out))
    };
    assert_eq!(s.client_if(0), "eth0");
    let (ok, out) = arping(&s, &s.client(0));
    assert!(ok, "no answer with vmnap's port cut off:\n{out}");
    assert!(out.to_lowercase().contains(&mac), "{out}");
    let out = s.run(0, &["ping", "-c", "3", "-i", "0.2", "-W", "2", &ip]);
    assert!(out.status.success(), "ping failed:\n{}", text(&out));

    // A client that comes after the start is answered at its port as well.
    let c9 = s
        .lab
        .add_client(
            "c9",
            std::net::Ipv4Addr::new(198, 18, 1, 109),
            "2001:db8::1:109".parse().expect("address"),
            0,
        )
        .expect("client c9")
        .clone();
    wait_for("the new client's port", 5, || ports_answered_at(&s) == 3);
    let (ok, out) = arping(&s, &c9.netns);
    assert!(ok, "the new client got no answer:\n{out}");
    // Isolated, its port is left to the bridge, which carries nothing to vmnap's port now.
    on_host(
        &s,
        &[
            "bridge",
            "link",
            "set",
            "dev",
            &c9.host_if,
            "isolated",
            "on",
        ],
    );
    wait_for("the isolated port left", 5, || ports_answered_at(&s) == 2);
    let (ok, out) = arping(&s, &c9.netns);
    assert!(!ok, "answered at an isolated port:\n{out}");

    on_host(&s, &["bridge", "link", "set", "dev", &own, "state", "3"]);
    s.vmnap(&["wake", "web1"]);
    s.awake("web1");
    wait_for("web1's port answered at again", 5, || {
        ports_answered_at(&s) == 3
    });
    let st = s.status("web1");
    assert_eq!(st["wakes"], 1, "{st}");
}

fn wait_for(what: &str, timeout_s: u64, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
    while std::time::Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn closed_port_is_refused_at_once_and_the_guest_stays_asleep() {
    need(&["nc"]);
    let s = Setup::new(&[("web1", 0)], "");
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    for port in ["22", "5432", "8080"] {
        let out = s.run(0, &["nc", "-v", "-z", "-w", "5", &ip, port]);
        assert!(!out.status.success());
        assert!(
            text(&out).contains("refused"),
            "port {port} was not refused: {}",
            text(&out)
        );
    }
    let st = s.status("web1");
    assert_eq!(st["state"], "sleeping");
    assert_eq!(st["wakes"], 0);
    assert!(s.frozen("web1"));
}

#[test]
fn tcp_and_udp_echo_work_while_the_guest_sleeps() {
    need(&["nc"]);
    let s = Setup::new(&[("web1", 0)], common::ECHO_ANSWERS);
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    let out = s.run(
        0,
        &[
            "sh",
            "-c",
            &format!("printf 'hello over tcp\\n' | nc -N -w 5 {ip} 7"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello over tcp\n",
        "{}",
        text(&out)
    );
    let out = s.run(
        0,
        &[
            "sh",
            "-c",
            &format!("printf 'hello over udp' | nc -u -w 1 {ip} 7"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello over udp",
        "{}",
        text(&out)
    );
    let ip6 = s.guest_ip6("web1");
    let out = s.run(
        0,
        &["sh", "-c", &format!("printf 'six\\n' | nc -N -w 5 {ip6} 7")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "six\n",
        "{}",
        text(&out)
    );
    let st = s.status("web1");
    assert_eq!(st["state"], "sleeping");
    assert_eq!(st["wakes"], 0);
    assert!(s.frozen("web1"));
}

#[test]
fn curl_to_a_sleeping_guest_gets_the_page_with_a_single_syn() {
    need(&["curl", "tcpdump"]);
    let s = Setup::new(&[("web1", 0)], "");
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    let (body, syns) = common::curl_counting_syns(&s, &ip);
    assert_eq!(body, "hello from web1\n");
    assert_eq!(syns, 1, "the client retransmitted its SYN");
    let st = s.awake("web1");
    assert_eq!(st["wakes"], 1);
    assert_eq!(st["last_wake_cause"], "tcp-syn");
    assert!(!s.frozen("web1"));
}

fn udp_log(s: &Setup, guest: &str) -> Vec<String> {
    let path = s
        .lab
        .guest(guest)
        .expect("guest")
        .udp_log
        .clone()
        .expect("a UDP log");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_thousand_numbered_datagrams_reach_the_woken_guest_in_order_exactly_once() {
    let s = Setup::new(&[("web1", 0)], "");
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    // A client that talked to the guest before has its MAC already (answered by vmnap).
    assert!(s
        .run(0, &["ping", "-c", "1", "-W", "2", &ip])
        .status
        .success());
    common::send_thousand_datagrams(&s, &ip);
    common::assert_thousand_in_order(std::time::Duration::from_secs(20), || udp_log(&s, "web1"));
    let st = s.awake("web1");
    assert_eq!(st["wakes"], 1);
    assert_eq!(st["dropped_frames"], 0);
    assert!(st["replayed_frames"].as_u64().expect("number") >= 1, "{st}");
}

#[test]
fn broadcasts_are_replayed_and_arp_scans_and_pings_never_wake() {
    need(&["socat", "arping", "ping", "nc"]);
    let s = Setup::new(&[("web1", 0)], "");
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    let iface = s.client_if(0);
    for n in 1..=3 {
        let cmd =
            format!("printf 'broadcast-{n}' | socat - UDP-DATAGRAM:198.19.255.255:9000,broadcast");
        let out = s.run(0, &["sh", "-c", &cmd]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = s.run(
        0,
        &[
            "sh",
            "-c",
            "printf 'mdns' | socat - UDP-DATAGRAM:224.0.0.251:5353,ip-multicast-if=198.18.1.100",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // ARP for hosts that are not there, a port scan, and pings.
    let _ = s.run(
        0,
        &["arping", "-c", "2", "-w", "2", "-I", &iface, "198.18.0.99"],
    );
    let _ = s.run(0, &["nc", "-z", "-w", "2", &ip, "1-30"]);
    let _ = s.run(0, &["ping", "-c", "3", "-i", "0.2", &ip]);
    let st = s.status("web1");
    assert_eq!(st["state"], "sleeping", "{st}");
    assert_eq!(st["wakes"], 0);
    // Three broadcasts, one multicast, and the client's own IPv6 multicast.
    let held = st["queue_depth"].as_u64().expect("number");
    assert!(held >= 4, "{st}");
    s.vmnap(&["wake", "web1"]);
    wait_for("the broadcasts in the guest's log", 5, || {
        udp_log(&s, "web1").len() >= 3
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        udp_log(&s, "web1"),
        ["broadcast-1", "broadcast-2", "broadcast-3"]
    );
    assert_eq!(s.status("web1")["replayed_frames"], held);
}

#[test]
fn multicast_drop_policy_is_counted() {
    need(&["socat"]);
    let s = Setup::new(&[("web1", 0)], "multicast = \"drop\"");
    s.sleep("web1");
    for _ in 0..3 {
        let cmd = "printf 'x' | socat - UDP-DATAGRAM:198.19.255.255:9000,broadcast";
        assert!(s.run(0, &["sh", "-c", cmd]).status.success());
    }
    let st = s.status("web1");
    // The client's own IPv6 multicast (MLD, router solicitations) is dropped too.
    assert!(st["dropped_frames"].as_u64().expect("number") >= 3, "{st}");
    assert_eq!(st["queue_depth"], 0);
    assert_eq!(st["wakes"], 0);
}

#[test]
fn a_flood_past_the_queue_limit_is_dropped_and_counted_and_the_guest_sleeps_on() {
    let s = Setup::new(&[("web1", 0)], "queue_frames = 64\nmulticast_frames = 16");
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    let script = format!("for i in $(seq 1 2000); do printf \"$i\" > /dev/udp/{ip}/5353; done");
    assert!(s.run(0, &["bash", "-c", &script]).status.success());
    // Every datagram past the 64 held is dropped and counted: by the surrogate, or by the
    // kernel when the worker fell behind the burst (counted for the bridge). The worker may
    // still be reading the last of them.
    let capture_drops = |s: &Setup| -> u64 {
        let key = format!(
            "vmnap_bridge_capture_drops_total{{bridge=\"{}\"}} ",
            s.lab.bridge()
        );
        s.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    wait_for("the dropped datagrams counted", 5, || {
        s.status("web1")["dropped_frames"].as_u64().expect("number") + capture_drops(&s) >= 1900
    });
    let st = s.status("web1");
    assert_eq!(st["state"], "sleeping", "{st}");
    assert_eq!(st["wakes"], 0, "{st}");
    assert_eq!(st["queue_depth"], 64, "{st}");
    // What was held reaches the guest when something that wakes it comes.
    let (page, _) = common::curl(&s, &format!("http://{ip}/"));
    assert_eq!(page, "hello from web1\n");
    let pid = s.daemon.expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    assert!(
        rss_kb < 64 * 1024,
        "the daemon uses {rss_kb} kB after a flood"
    );
}

#[test]
fn an_awake_guest_gets_no_answers_from_the_surrogate() {
    need(&["ping"]);
    let s = Setup::new(&[("web1", 0)], "");
    let ip = s.guest_ip("web1");
    let out = s.run(0, &["ping", "-c", "5", "-i", "0.2", &ip]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("DUP!"), "{}", text(&out));
    // And after a sleep and a wake, the same.
    s.sleep("web1");
    s.vmnap(&["wake", "web1"]);
    let out = s.run(0, &["ping", "-c", "5", "-i", "0.2", &ip]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("DUP!"), "{}", text(&out));
    let st = s.status("web1");
    assert_eq!(st["state"], "awake");
    assert_eq!(st["answered_frames"], 0, "{st}");
}

#[test]
fn a_guest_on_vlan_10_is_answered_only_on_vlan_10() {
    need(&["arping", "ping"]);
    let s = Setup::new(&[("web1", 10)], "");
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    let untagged = s.run(
        0,
        &["arping", "-c", "2", "-w", "2", "-I", &s.client_if(0), &ip],
    );
    assert!(
        !untagged.status.success(),
        "answered off its VLAN: {}",
        text(&untagged)
    );
    let tagged = s.run(
        10,
        &["arping", "-c", "2", "-w", "3", "-I", &s.client_if(10), &ip],
    );
    assert!(
        tagged.status.success(),
        "not answered on VLAN 10: {}",
        text(&tagged)
    );
    assert!(text(&tagged).to_lowercase().contains(&s.guest_mac("web1")));
    let ping = s.run(10, &["ping", "-c", "2", "-W", "2", &ip]);
    assert!(ping.status.success(), "{}", text(&ping));
    assert_eq!(s.status("web1")["wakes"], 0);
}

#[test]
fn an_untagged_guest_is_not_answered_from_vlan_10_in_the_kernel_or_out() {
    need(&["arping", "ping"]);
    let s = Setup::new(&[("web1", 0), ("web2", 10)], "");
    s.sleep("web1");
    assert!(kernel_responder(&s).is_some(), "no responder in the kernel");
    let ip = s.guest_ip("web1");
    let tagged = s.run(
        10,
        &["arping", "-c", "2", "-w", "2", "-I", &s.client_if(10), &ip],
    );
    assert!(
        !tagged.status.success(),
        "answered from another VLAN: {}",
        text(&tagged)
    );
    // A ping that needs no ARP, to the guest's MAC, from VLAN 10.
    let mac = s.guest_mac("web1");
    let neigh = s.run(
        10,
        &[
            "ip",
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &mac,
            "dev",
            &s.client_if(10),
        ],
    );
    assert!(neigh.status.success(), "{}", text(&neigh));
    let ping = s.run(10, &["ping", "-c", "2", "-W", "1", &ip]);
    assert!(
        !ping.status.success(),
        "pinged from another VLAN: {}",
        text(&ping)
    );
    // Untagged, it is answered.
    let untagged = s.run(
        0,
        &["arping", "-c", "2", "-w", "3", "-I", &s.client_if(0), &ip],
    );
    assert!(untagged.status.success(), "{}", text(&untagged));
    assert_eq!(s.status("web1")["wakes"], 0);
}

#[test]
fn an_idle_connection_survives_the_guests_sleep_on_keepalives_answered_by_vmnap() {
    need(&["socat"]);
    let mut s = Setup::new(&[("web1", 0)], "");
    let ip = s.guest_ip("web1");
    let ns = s.client(0);
    let out = s.lab.dir().join("keepalive.out");
    // Connects now, says nothing for 22 s, then asks for the page. Keepalive probes from
    // 8 s on, every 2 s; two unanswered probes would kill the connection at about 12 s.
    let script = format!(
        "(sleep 22; printf 'GET / HTTP/1.1\\r\\nHost: web1\\r\\nConnection: close\\r\\n\\r\\n') \
         | socat -t 10 - TCP:{ip}:80,keepalive,keepidle=8,keepintvl=2,keepcnt=2 > {} 2>&1",
        out.display()
    );
    let argv: Vec<&std::ffi::OsStr> = vec!["bash".as_ref(), "-c".as_ref(), script.as_ref()];
    let pid = s.lab.spawn_in(&ns, &argv).expect("start the client");
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.sleep("web1");
    assert_page_on(&mut s, pid, &out);
    let st = s.awake("web1");
    assert_eq!(st["wakes"], 1, "{st}");
    assert_eq!(st["last_wake_cause"], "tcp-data", "{st}");
    assert!(
        st["answered_frames"].as_u64().expect("number") >= 2,
        "no keepalive answered: {st}"
    );
}

/// A connection from the client to web1's port 80, opened now (once it is up, this
/// returns) and silent for `secs` seconds, then asking for the page: the client's PID and
/// the file its answer goes to.
fn silent_connection(s: &mut Setup, secs: u32) -> (u32, std::path::PathBuf) {
    need(&["socat", "ss"]);
    let ip = s.guest_ip("web1");
    let out = s.lab.dir().join("conn.out");
    let script = format!(
        "(sleep {secs}; printf 'GET / HTTP/1.1\\r\\nHost: web1\\r\\nConnection: close\\r\\n\\r\\n') \
         | socat -t 10 - TCP:{ip}:80 > {} 2>&1",
        out.display()
    );
    let argv: Vec<&std::ffi::OsStr> = vec!["bash".as_ref(), "-c".as_ref(), script.as_ref()];
    let pid = s
        .lab
        .spawn_in(&s.client(0), &argv)
        .expect("start the client");
    wait_for("the client's connection", 5, || {
        let est = s.run(0, &["ss", "-Htn", "state", "established", "dst", &ip]);
        !String::from_utf8_lossy(&est.stdout).trim().is_empty()
    });
    (pid, out)
}

/// Waits (40 s at most) for the client `pid` of [`silent_connection`] to end, and checks
/// that it got the page.
fn assert_page_on(s: &mut Setup, pid: u32, out: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while s.lab.is_running(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let got = std::fs::read_to_string(out).unwrap_or_default();
    assert!(
        got.ends_with("hello from web1\n"),
        "the connection did not survive: {got:?}"
    );
}

/// The statistics line of an `hping3 -c N` run: how many answers came back.
fn hping3_answers(out: &std::process::Output) -> u64 {
    let all = text(out);
    all.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("packets transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no statistics from hping3:\n{all}"))
}

/// A metric's value for guest web1, 0 if absent.
fn guest_metric(s: &Setup, name: &str, label: &str) -> u64 {
    let want = format!("{name}{{guest=\"web1\",{label}}} ");
    s.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&want)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn segments_of_connections_the_guest_does_not_have_are_reset_and_wake_nothing_but_its_own_do() {
    need(&["hping3", "socat", "ss"]);
    let mut s = Setup::new(
        &[("web1", 0)],
        "[surrogate]\nlearn_connections_for = \"0s\"\n---\n",
    );
    let ip = s.guest_ip("web1");
    // A connection opened while the guest is awake, silent until the hostile traffic is over.
    let (pid, out) = silent_connection(&mut s, 15);
    s.sleep("web1");
    // What hping3 sends from new source ports: segments of no connection the guest has.
    for (what, flags) in [
        ("ACK", &["-A"][..]),
        ("FIN", &["-F"][..]),
        ("data", &["-P", "-A", "-d", "100"][..]),
        ("Xmas", &["-F", "-P", "-U"][..]),
    ] {
        let mut argv = vec!["hping3", "-q", "-c", "3", "-i", "u100000", "-p", "80"];
        argv.extend_from_slice(flags);
        argv.push(&ip);
        let got = s.run(0, &argv);
        assert_eq!(
            hping3_answers(&got),
            3,
            "{what}: not every segment was reset:\n{}",
            text(&got)
        );
    }
    // Fragments of a datagram whose first fragment never came, and another protocol.
    let orphans = s.run(
        0,
        &[
            "hping3", "-q", "-c", "3", "-i", "u100000", "--udp", "-p", "9", "-g", "64", &ip,
        ],
    );
    assert_eq!(hping3_answers(&orphans), 0, "{}", text(&orphans));
    let gre = s.run(
        0,
        &[
            "hping3", "-q", "-c", "2", "-i", "u100000", "-0", "-H", "47", &ip,
        ],
    );
    assert_eq!(hping3_answers(&gre), 0, "{}", text(&gre));
    let st = s.status("web1");
    assert_eq!(
        (st["state"].as_str(), st["wakes"].as_u64()),
        (Some("sleeping"), Some(0)),
        "{st}"
    );
    let resets = guest_metric(
        &s,
        "vmnap_guest_answered_frames_total",
        "protocol=\"connection-reset\"",
    );
    assert!(resets >= 12, "{resets} connection resets counted");
    let orphans = guest_metric(
        &s,
        "vmnap_guest_dropped_frames_total",
        "reason=\"orphan-fragment\"",
    );
    assert_eq!(orphans, 3, "orphan fragments counted");
    // The guest's own connection, typed into after all that, wakes it and is served.
    assert_page_on(&mut s, pid, &out);
    let st = s.awake("web1");
    assert_eq!(st["wakes"], 1, "{st}");
    assert_eq!(st["last_wake_cause"], "tcp-data", "{st}");
}

#[test]
fn a_sleeping_guests_connections_outlive_a_daemon_killed_and_started_again() {
    need(&["hping3", "socat", "ss"]);
    let mut s = Setup::new(
        &[("web1", 0)],
        "[surrogate]\nlearn_connections_for = \"0s\"\n---\n",
    );
    let ip = s.guest_ip("web1");
    let (pid, out) = silent_connection(&mut s, 12);
    s.sleep("web1");
    let daemon = s.daemon.take().expect("running");
    // SAFETY: kill(2) on the daemon this test started, by its PID.
    unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
    s.lab.kill(daemon);
    // The next daemon would take an hour to trust what it learns by itself: what it knows
    // at once comes from the journal.
    s.write_config("[surrogate]\nlearn_connections_for = \"1h\"\n---\n");
    s.start_daemon();
    assert_eq!(s.status("web1")["state"], "sleeping");
    let acks = s.run(
        0,
        &[
            "hping3", "-q", "-c", "3", "-i", "u100000", "-A", "-p", "80", &ip,
        ],
    );
    assert_eq!(
        hping3_answers(&acks),
        3,
        "ACKs of no connection were not reset:\n{}",
        text(&acks)
    );
    assert_page_on(&mut s, pid, &out);
    let st = s.awake("web1");
    assert_eq!(st["last_wake_cause"], "tcp-data", "{st}");
}

#[test]
fn frames_past_the_budget_shared_by_all_guests_are_dropped_and_counted_without_a_wake() {
    // Multicast is dropped by policy: the lab's own (an IPv6 router solicitation or MLD
    // report, at times) would otherwise be held for both guests, or dropped for the
    // budget, as it comes before or after the flood.
    let s = Setup::new(
        &[("web1", 0), ("web2", 0)],
        "[surrogate]\nmax_held_bytes = 70000\n---\nmulticast = \"drop\"\n",
    );
    s.sleep("web1");
    s.sleep("web2");
    // About 67 datagrams of 1 KB fill the budget; web1's own limit is 8 MiB.
    let flood = |ip: &str, n: u32| {
        let script =
            format!("for i in $(seq 1 {n}); do head -c 1000 /dev/zero > /dev/udp/{ip}/5353; done");
        assert!(s.run(0, &["bash", "-c", &script]).status.success());
    };
    flood(&s.guest_ip("web1"), 100);
    flood(&s.guest_ip("web2"), 5);
    let metric = |name: &str, guest: &str, label: &str| -> u64 {
        let want = format!("{name}{{guest=\"{guest}\",{label}}} ");
        s.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&want)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let dropped = "vmnap_guest_dropped_frames_total";
    assert!(metric(dropped, "web1", "reason=\"hold-budget\"") >= 30);
    // All of web2's datagrams come after the budget is spent: each is dropped, and it holds
    // nothing.
    assert_eq!(
        metric(dropped, "web2", "reason=\"hold-budget\""),
        5,
        "web2 holds nothing, but the budget is spent"
    );
    let depth: Option<u64> = s.metrics().lines().find_map(|l| {
        l.strip_prefix("vmnap_guest_queue_frames{guest=\"web2\"} ")?
            .trim()
            .parse()
            .ok()
    });
    assert_eq!(depth, Some(0), "web2 holds frames past the budget");
    let held: u64 = s
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("vmnap_held_bytes ")?.trim().parse().ok())
        .expect("vmnap_held_bytes");
    assert!((60_000..=70_000).contains(&held), "{held} bytes held");
    for guest in ["web1", "web2"] {
        assert_eq!(s.status(guest)["wakes"], 0);
    }
}

#[test]
fn a_guest_whose_wakes_serve_no_one_is_woken_later_and_later() {
    need(&["hping3"]);
    // Still learning its connections (the first hour), so a segment of a connection the
    // guest does not have wakes it; its kernel answers with a RST, which serves no one.
    let s = Setup::new(&[("web1", 0)], "");
    let ip = s.guest_ip("web1");
    for round in 1..=3 {
        s.sleep("web1");
        let out = s.run(
            0,
            &[
                "hping3", "-q", "-c", "1", "-P", "-A", "-d", "10", "-p", "80", &ip,
            ],
        );
        assert!(hping3_answers(&out) <= 1, "{}", text(&out));
        wait_for("the guest to wake", 15, || {
            s.status("web1")["state"] == "awake"
        });
        assert_eq!(s.status("web1")["wakes"], round);
        // Past the time a guest has to answer after its wake.
        std::thread::sleep(std::time::Duration::from_millis(3500));
    }
    let log = s.daemon_log();
    let waits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("this wake waits"))
        .collect();
    assert_eq!(
        waits.len(),
        1,
        "the third useless wake in a row waits, and only it:\n{log}"
    );
    assert!(waits[0].contains("useless=2"), "{}", waits[0]);
}
