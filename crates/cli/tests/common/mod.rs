//! A lab with the real `vmnap` daemon running on its bridge.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use vmnap_lab::{GuestSpec, Lab, LabOptions};
use vmnap_wire::Mac;

pub const VMNAP: &str = env!("CARGO_BIN_EXE_vmnap");

/// A new lab (one at a time, see [`ONE_AT_A_TIME`]) whose guests run `vmnap lab-guest`.
fn new_lab(cgroup: vmnap_lab::CgroupKind) -> (Lab, std::sync::MutexGuard<'static, ()>) {
    let turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = Lab::new(LabOptions {
        workload: vec![VMNAP.into(), "lab-guest".into()],
        cgroup,
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("cannot build the lab: {e}"));
    (lab, turn)
}

/// The project's guest image, built or from the cache.
fn image() -> vmnap_lab::qemu::GuestImage {
    vmnap_lab::qemu::GuestImage::build()
        .unwrap_or_else(|e| panic!("cannot build the guest image: {e}"))
}

/// Adds the untagged client `c0`.
fn add_client_c0(lab: &mut Lab) {
    lab.add_client(
        "c0",
        Ipv4Addr::new(198, 18, 1, 100),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 0x100),
        0,
    )
    .unwrap_or_else(|e| panic!("cannot add client: {e}"));
}

/// Guest `n`'s addresses and MAC.
pub fn guest_spec(name: &str, n: u8) -> GuestSpec {
    GuestSpec {
        name: name.to_owned(),
        ipv4: Ipv4Addr::new(198, 18, 0, 10 + n),
        ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(n)),
        mac: [0x02, 0, 0, 0, 1, n],
        vlan: 0,
        http_port: Some(80),
        udp_log_port: Some(9000),
    }
}

/// One lab at a time: the machines are small (2 cores), and a test that measures loss must
/// not compete with nine others for the CPU.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Setup {
    pub lab: Lab,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub daemon: Option<u32>,
    /// Files of the test's outside the lab's directory, removed at the end.
    files: Vec<PathBuf>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// Extra `[[guest]]` keys for every guest.
pub const ECHO_ANSWERS: &str = r#"answer = ["arp", "ndp", "icmp-echo", "tcp-echo", "udp-echo"]"#;

impl Setup {
    /// A lab with `guests` (name, vlan) and one client per VLAN used, named `c<vlan>`.
    pub fn new(guests: &[(&str, u16)], extra: &str) -> Setup {
        Self::with_cgroup(guests, extra, vmnap_lab::CgroupKind::V2)
    }

    /// The same, with guests in cgroups of the given hierarchy.
    pub fn with_cgroup(
        guests: &[(&str, u16)],
        extra: &str,
        cgroup: vmnap_lab::CgroupKind,
    ) -> Setup {
        let (lab, turn) = new_lab(cgroup);
        let mut s = Setup {
            socket: lab.dir().join("vmnap.sock"),
            config: lab.dir().join("vmnap.toml"),
            log: lab.dir().join("vmnap.log"),
            lab,
            daemon: None,
            files: Vec::new(),
            _turn: turn,
        };
        let mut vlans = vec![0u16];
        for (n, (name, vlan)) in guests.iter().enumerate() {
            let spec = GuestSpec {
                vlan: *vlan,
                ..guest_spec(name, n as u8 + 1)
            };
            s.lab
                .add_guest(spec)
                .unwrap_or_else(|e| panic!("cannot add guest {name}: {e}"));
            if !vlans.contains(vlan) {
                vlans.push(*vlan);
            }
        }
        for (i, vlan) in vlans.iter().enumerate() {
            let ipv4 = Ipv4Addr::new(198, 18, 1, 100 + i as u8);
            let ipv6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 0x100 + i as u16);
            s.lab
                .add_client(&format!("c{vlan}"), ipv4, ipv6, *vlan)
                .unwrap_or_else(|e| panic!("cannot add client: {e}"));
        }
        s.write_config(extra);
        s.start_daemon();
        s
    }

    /// A lab with QEMU guests `vms` (TCG, the project's image) driven over QMP, each with a
    /// second QMP socket (`<name>-test.qmp`) for the test, and one untagged client `c0`.
    pub fn with_vms(vms: &[&str], extra: &str) -> Setup {
        Self::with_vms_as(vms, extra, false)
    }

    /// [`Setup::with_vms`] with each guest's RAM in a file (`<lab dir>/<name>.ram`, shared)
    /// and QEMU started through `vmnap run-qemu`, as page-out sleep wants them.
    pub fn with_file_backed_vms(vms: &[&str], extra: &str) -> Setup {
        Self::with_vms_as(vms, extra, true)
    }

    fn with_vms_as(vms: &[&str], extra: &str, file_backed: bool) -> Setup {
        let (lab, turn) = new_lab(vmnap_lab::CgroupKind::V2);
        let mut s = Setup::around(lab, turn);
        let image = image();
        let mut text = String::new();
        for (n, name) in vms.iter().enumerate() {
            let n = n as u8 + 1;
            let mut spec = vmnap_lab::qemu::VmSpec::new(
                name,
                Ipv4Addr::new(198, 18, 0, 20 + n),
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20 + u16::from(n)),
                image.clone(),
            );
            let test_qmp = s.lab.dir().join(format!("{name}-test.qmp"));
            spec.extra_args = vec![
                "-qmp".into(),
                format!("unix:{},server=on,wait=off", test_qmp.display()).into(),
            ];
            if file_backed {
                // On a disk: /tmp may be a tmpfs, whose pages have nowhere to go. Removed
                // with the setup, whatever happens from here.
                let file =
                    PathBuf::from(format!("/var/tmp/vmnap-test-{}-{name}.ram", s.lab.prefix()));
                s.files.push(file.clone());
                spec.ram_file = Some(file);
                spec.wrapper = vec![env!("CARGO_BIN_EXE_vmnap").into(), "run-qemu".into()];
            }
            let vm = s
                .lab
                .add_vm(spec)
                .unwrap_or_else(|e| panic!("cannot boot {name}: {e}"));
            text += &format!(
                "\n[[guest]]\nname = \"{}\"\nbridge = \"br0\"\ninterface = \"{}\"\nmac = \"{}\"\n\
                 ipv4 = [\"{}\"]\nipv6 = [\"{}\"]\nbackend = \"qmp\"\nqmp = \"{}\"\n\
                 agent = \"{}\"\nwake_on = [\"tcp/80\", \"udp/9000\"]\n{}\n",
                vm.name,
                vm.tap,
                Mac(vm.mac),
                vm.ipv4,
                vm.ipv6,
                vm.qmp.display(),
                vm.agent.display(),
                extra,
            );
        }
        add_client_c0(&mut s.lab);
        let text = format!("[api]\nsocket = \"{}\"\n{text}", s.socket.display());
        std::fs::write(&s.config, text).expect("write the config");
        s.start_daemon();
        s
    }

    /// A lab with its own libvirtd and libvirt domains `domains` (the project's image, TCG)
    /// on its bridge, slept by `mode`; MAC, bridge and tap come from the domain XML. `extra`
    /// is as for [`Setup::new`].
    pub fn with_domains(domains: &[&str], mode: &str, extra: &str) -> Setup {
        let (mut lab, turn) = new_lab(vmnap_lab::CgroupKind::V2);
        let image = image();
        let (top, extra) = extra.split_once("---\n").unwrap_or(("", extra));
        let mut guests = String::new();
        for (n, name) in domains.iter().enumerate() {
            let n = n as u8 + 1;
            let mut spec = vmnap_lab::libvirt::DomainSpec::new(
                name,
                Ipv4Addr::new(198, 18, 0, 30 + n),
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x30 + u16::from(n)),
                image.clone(),
            );
            if mode == "pageout" {
                // As page-out wants it: RAM in a file, QEMU through `vmnap run-qemu`.
                spec.file_backed = true;
                spec.emulator_wrapper = vec![env!("CARGO_BIN_EXE_vmnap").into(), "run-qemu".into()];
            }
            let d = lab
                .define_domain(spec)
                .unwrap_or_else(|e| panic!("cannot start domain {name}: {e}"));
            guests += &format!(
                "\n[[guest]]\nname = \"{}\"\nipv4 = [\"{}\"]\nipv6 = [\"{}\"]\nbackend = \"libvirt\"\n\
                 domain = \"{}\"\nmode = \"{mode}\"\nwake_on = [\"tcp/80\", \"udp/9000\"]\n{}\n",
                d.name, d.ipv4, d.ipv6, d.name, extra,
            );
        }
        let uri = lab
            .libvirtd()
            .expect("started by define_domain")
            .uri()
            .to_owned();
        add_client_c0(&mut lab);
        let mut s = Setup::around(lab, turn);
        let text = format!(
            "[api]\nsocket = \"{}\"\n[libvirt]\nuri = \"{uri}\"\n{top}{guests}",
            s.socket.display()
        );
        std::fs::write(&s.config, text).expect("write the config");
        s.start_daemon();
        s
    }

    /// A libvirt domain of the lab.
    pub fn domain(&self, name: &str) -> vmnap_lab::libvirt::LabDomain {
        self.lab.domain(name).expect("a lab domain").clone()
    }

    /// `query-status` of VM `name` through the test's own QMP socket.
    pub fn vm_status(&self, name: &str) -> String {
        let socket = self.lab.dir().join(format!("{name}-test.qmp"));
        vmnap_lab::qemu::qmp_execute(&socket, "query-status")
            .unwrap_or_else(|e| panic!("query-status of {name}: {e}"))
    }

    pub fn vm_ip(&self, name: &str) -> String {
        self.lab.vm(name).expect("a lab VM").ipv4.to_string()
    }

    /// A setup around `lab`, before its config is written and its daemon started.
    fn around(lab: Lab, turn: std::sync::MutexGuard<'static, ()>) -> Setup {
        Setup {
            socket: lab.dir().join("vmnap.sock"),
            config: lab.dir().join("vmnap.toml"),
            log: lab.dir().join("vmnap.log"),
            lab,
            daemon: None,
            files: Vec::new(),
            _turn: turn,
        }
    }

    pub fn write_config(&self, extra: &str) {
        let mut text = format!("[api]\nsocket = \"{}\"\n", self.socket.display());
        // Top-level tables go before the guests; `extra` may start with them, separated
        // from the per-guest keys by a line `---`.
        let (top, extra) = extra.split_once("---\n").unwrap_or(("", extra));
        text += top;
        for g in self.lab.guests() {
            text += &format!(
                "\n[[guest]]\nname = \"{}\"\nbridge = \"{}\"\ninterface = \"{}\"\nmac = \"{}\"\n\
                 ipv4 = [\"{}\"]\nipv6 = [\"{}\"]\nvlan = {}\nbackend = \"cgroup\"\ncgroup = \"{}\"\n\
                 wake_on = [\"tcp/80\", \"udp/9000\"]\n{}\n",
                g.name,
                self.lab.bridge(),
                g.host_if,
                Mac(g.mac),
                g.ipv4,
                g.ipv6,
                g.vlan,
                g.cgroup.display(),
                extra,
            );
        }
        std::fs::write(&self.config, text).expect("write the config");
    }

    pub fn start_daemon(&mut self) {
        // The journal goes in the lab's directory: a test never sees another's.
        let text = std::fs::read_to_string(&self.config).expect("read the config");
        if !text.contains("\ndir = ") {
            let line = format!("dir = \"{}\"\n", self.lab.dir().display());
            let text = match text.find("[state]\n") {
                Some(at) => format!("{}{line}{}", &text[..at + 8], &text[at + 8..]),
                None => format!("[state]\n{line}{text}"),
            };
            std::fs::write(&self.config, text).expect("write the config");
        }
        let argv: Vec<&OsStr> = vec![
            VMNAP.as_ref(),
            "run".as_ref(),
            "--config".as_ref(),
            self.config.as_os_str(),
            "--log-level".as_ref(),
            "info".as_ref(),
        ];
        let pid = self
            .lab
            .spawn_in_host(&argv, Some(&self.log))
            .unwrap_or_else(|e| panic!("cannot start vmnap: {e}"));
        self.daemon = Some(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if !self.lab.is_running(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("vmnap did not come up; its log:\n{}", self.daemon_log());
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `vmnap ARGS --socket S`, expecting success.
    pub fn vmnap(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(VMNAP)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("run vmnap");
        assert!(
            out.status.success(),
            "vmnap {args:?} failed: {}\n{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.daemon_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self, guest: &str) -> serde_json::Value {
        let text = self.vmnap(&["status", "--json"]);
        let all: serde_json::Value = serde_json::from_str(&text).expect("status --json is JSON");
        all.as_array()
            .expect("an array")
            .iter()
            .find(|g| g["name"] == guest)
            .cloned()
            .unwrap_or_else(|| panic!("{guest} not in status: {text}"))
    }

    /// The daemon's metrics, scraped with curl over its socket as Prometheus would.
    pub fn metrics(&self) -> String {
        let scrape = std::process::Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&self.socket)
            .arg("http://vmnap/metrics")
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&scrape.stdout).into_owned();
        assert!(scrape.status.success(), "{text}");
        text
    }

    /// `guest`'s status once it is awake. A wake is over when the guest has its network
    /// back, after a quiet moment of at most 500 ms: a client can have its answer before.
    pub fn awake(&self, guest: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let st = self.status(guest);
            if st["state"] == "awake" {
                return st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{guest} not awake within 2 s: {st}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    pub fn sleep(&self, guest: &str) {
        self.vmnap(&["sleep", guest]);
        assert_eq!(self.status(guest)["state"], "sleeping");
        assert!(self.frozen(guest), "{guest}'s cgroup is not frozen");
    }

    pub fn frozen(&self, guest: &str) -> bool {
        let g = self.lab.guest(guest).expect("a lab guest");
        let events = std::fs::read_to_string(g.cgroup.join("cgroup.events"));
        match events {
            Ok(text) => text.lines().any(|l| l == "frozen 1"),
            Err(_) => std::fs::read_to_string(g.cgroup.join("freezer.state"))
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(false),
        }
    }

    pub fn client(&self, vlan: u16) -> String {
        self.lab
            .client(&format!("c{vlan}"))
            .expect("client")
            .netns
            .clone()
    }

    /// Runs a command in the VLAN's client namespace.
    pub fn run(&self, vlan: u16, argv: &[&str]) -> Output {
        let ns = self.client(vlan);
        self.lab
            .exec(&ns, argv)
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
    }

    pub fn guest_ip(&self, guest: &str) -> String {
        self.lab.guest(guest).expect("guest").ipv4.to_string()
    }

    pub fn guest_ip6(&self, guest: &str) -> String {
        self.lab.guest(guest).expect("guest").ipv6.to_string()
    }

    pub fn guest_mac(&self, guest: &str) -> String {
        Mac(self.lab.guest(guest).expect("guest").mac).to_string()
    }

    pub fn client_if(&self, vlan: u16) -> String {
        self.lab
            .client(&format!("c{vlan}"))
            .expect("client")
            .client_if()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon.take() {
            // SIGTERM: the daemon wakes its guests and removes its port.
            self.lab.kill(pid);
        }
        if std::thread::panicking() {
            eprintln!("--- vmnap log ---\n{}", self.daemon_log());
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Waits (at most 10 s, polling every 20 ms) until `done` holds, or fails naming `what`
/// with the daemon's log; how long it took.
pub fn until(what: &str, s: &Setup, done: impl Fn() -> bool) -> std::time::Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s\n{}",
            s.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// How far behind the daemon found a guest's clock when it set it after a wake (the last
/// `behind_ms` of its log for `guest`), in milliseconds.
pub fn clock_behind_ms(s: &Setup, guest: &str) -> f64 {
    let log = s.daemon_log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("set the guest's clock") && l.contains(&format!("guest={guest}")))
        .unwrap_or_else(|| panic!("the clock of {guest} was not set:\n{log}"));
    line.split("behind_ms=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| {
            v.trim_start_matches("Some(")
                .trim_end_matches(')')
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no behind_ms in {line}"))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn need(tools: &[&str]) {
    if let Err(e) = vmnap_lab::check_tools(tools) {
        panic!("{e}");
    }
}

pub fn _unused(_: &Path) {}

/// Runs curl in client `c0`: the body, and how long it took.
pub fn curl(s: &Setup, url: &str) -> (String, std::time::Duration) {
    let started = Instant::now();
    let out = s.run(0, &["curl", "-sS", "--max-time", "15", url]);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed(),
    )
}

/// curl to port 80 of `ip` with a capture on the client: the body and the SYNs it sent.
pub fn curl_counting_syns(s: &Setup, ip: &str) -> (String, usize) {
    let ns = s.client(0);
    let capture = s
        .lab
        .capture(
            &ns,
            &s.client_if(0),
            "tcp port 80 and tcp[tcpflags] & tcp-syn != 0",
        )
        .expect("tcpdump");
    let (body, _) = curl(s, &format!("http://{ip}/"));
    let lines = capture.stop().expect("capture");
    (
        body,
        lines.iter().filter(|l| l.contains("Flags [S]")).count(),
    )
}

/// Sends datagrams `0001`..`1000` from client `c0` to port 9000 of `ip`, one socket each.
pub fn send_thousand_datagrams(s: &Setup, ip: &str) {
    let script = format!("for i in $(seq -w 1 1000); do printf \"$i\" > /dev/udp/{ip}/9000; done");
    let out = s.run(0, &["bash", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Waits up to `timeout` for `lines()` to hold 1,000 lines, then checks they are `0001` to
/// `1000` in order, each once.
pub fn assert_thousand_in_order(timeout: std::time::Duration, lines: impl Fn() -> Vec<String>) {
    let deadline = Instant::now() + timeout;
    while lines().len() < 1000 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Anything after the thousandth would be a duplicate: give it time to show.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let got = lines();
    let want: Vec<String> = (1..=1000).map(|i| format!("{i:04}")).collect();
    assert_eq!(got.len(), 1000, "losses or duplicates: {} lines", got.len());
    let first_wrong = got.iter().zip(&want).position(|(g, w)| g != w);
    let from = first_wrong.unwrap_or(0);
    assert_eq!(
        first_wrong,
        None,
        "out of order from there: {:?}",
        &got[from..(from + 20).min(got.len())]
    );
}

/// A lab with its own libvirtd, the libvirt domains `domains` (name, and the XML put in its
/// `<metadata>`, if any) and client `c0`, and the daemon started with the config `[api]`,
/// `[libvirt] uri` and then `rest` (which says how domains are discovered; no `[[guest]]`).
pub fn setup_with_discovered_domains(domains: &[(&str, Option<&str>)], rest: &str) -> Setup {
    let (mut lab, turn) = new_lab(vmnap_lab::CgroupKind::V2);
    let image = image();
    for (n, (name, metadata)) in domains.iter().enumerate() {
        let n = n as u8 + 1;
        let mut spec = vmnap_lab::libvirt::DomainSpec::new(
            name,
            Ipv4Addr::new(198, 18, 0, 40 + n),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x40 + u16::from(n)),
            image.clone(),
        );
        spec.metadata = metadata.map(str::to_owned);
        lab.define_domain(spec)
            .unwrap_or_else(|e| panic!("cannot start domain {name}: {e}"));
    }
    let uri = lab
        .libvirtd()
        .expect("started by define_domain")
        .uri()
        .to_owned();
    add_client_c0(&mut lab);
    let mut s = Setup::around(lab, turn);
    let text = format!(
        "[api]\nsocket = \"{}\"\n[libvirt]\nuri = \"{uri}\"\n{rest}",
        s.socket.display()
    );
    std::fs::write(&s.config, text).expect("write the config");
    s.start_daemon();
    s
}
