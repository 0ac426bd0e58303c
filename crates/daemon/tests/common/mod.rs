//! The daemon in-process on a real bridge, with a fake backend: what the tests of this crate
//! share. The daemon runs in the lab's host namespace, on its own thread.

#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmnap_api::{self as api, Request, Response};
use vmnap_config::{Config, GuestConfig};
use vmnap_daemon::{Opened, StartError};
use vmnap_hypervisor::FakeBackend;
use vmnap_lab::{GuestSpec, Lab, LabOptions};

/// The daemon running on a lab; dropping it stops the daemon (waking web1), then the lab.
pub struct Running {
    pub lab: Lab,
    pub socket: PathBuf,
    pub fake: FakeBackend,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<std::thread::JoinHandle<Result<(), StartError>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A lab with guest `web1` (198.18.0.11, HTTP on port 80, `wake_on = ["tcp/80"]`, and
/// `extra` keys) and client `c0` (198.18.1.100), and the daemon on it, in-process, with
/// `fake` as web1's backend.
pub fn start(fake: FakeBackend, extra: &str) -> Running {
    start_many(fake, 1, "", extra)
}

/// As [`start`], with guests `web1` to `webN` (198.18.0.11 on, MACs 02:00:00:00:01:01 on),
/// all with `fake` as their backend, and `top` before the guests' tables.
pub fn start_many(fake: FakeBackend, n: u8, top: &str, extra: &str) -> Running {
    let mut lab = Lab::new(LabOptions::default()).unwrap_or_else(|e| panic!("lab: {e}"));
    let mut tables = String::new();
    for i in 1..=n {
        let g = lab
            .add_guest(GuestSpec {
                name: format!("web{i}"),
                ipv4: Ipv4Addr::new(198, 18, 0, 10 + i),
                ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(i)),
                mac: [0x02, 0, 0, 0, 1, i],
                vlan: 0,
                http_port: Some(80),
                udp_log_port: None,
            })
            .unwrap_or_else(|e| panic!("guest: {e}"))
            .clone();
        tables += &format!(
            "[[guest]]\nname = \"web{i}\"\nbridge = \"br0\"\ninterface = \"{}\"\n\
             mac = \"02:00:00:00:01:{i:02x}\"\nipv4 = [\"198.18.0.{}\"]\nbackend = \"cgroup\"\n\
             cgroup = \"{}\"\nwake_on = [\"tcp/80\"]\n{extra}\n",
            g.host_if,
            10 + i,
            g.cgroup.display()
        );
    }
    lab.add_client(
        "c0",
        Ipv4Addr::new(198, 18, 1, 100),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 0x100),
        0,
    )
    .unwrap_or_else(|e| panic!("client: {e}"));
    let socket = lab.dir().join("vmnap.sock");
    let text = format!(
        "{top}[state]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n{tables}",
        lab.dir().display(),
        socket.display(),
    );
    let config = Config::parse(&text, "test.toml".as_ref()).expect("valid config");
    let stop = Arc::new(AtomicBool::new(false));
    let host = lab.host_netns().to_owned();
    let (f, s) = (fake.clone(), Arc::clone(&stop));
    let thread = std::thread::spawn(move || {
        vmnap_lab::enter_netns(&host).expect("enter the lab's host namespace");
        let factory = move |g: &GuestConfig, _: &Config| -> Result<Opened, StartError> {
            Opened::from_config(g, Box::new(f.clone()))
        };
        vmnap_daemon::run_until(config, &factory, &s)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Running {
        lab,
        socket,
        fake,
        stop,
        thread: Some(thread),
    }
}

/// Puts guest `name` to sleep through the API; panics unless it is asleep.
pub fn sleep_guest(r: &Running, name: &str) {
    let answer = api::call(
        &r.socket,
        &Request::Sleep {
            guest: name.to_owned(),
        },
    )
    .expect("sleep");
    assert!(matches!(answer, Response::Done { .. }), "{answer:?}");
}

pub fn status(r: &Running) -> serde_json::Value {
    match api::call(&r.socket, &Request::Status).expect("status") {
        Response::Status { guests } => serde_json::to_value(&guests[0]).expect("json"),
        other => panic!("{other:?}"),
    }
}

/// The guest's status once no sleep or wake is under way (at most 5 s later): a client is
/// served before the wake that serves it ends (the bridge is switched back a moment later).
pub fn settled_status(r: &Running) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let st = status(r);
        let moving = st["state"] == "waking" || st["state"] == "falling-asleep";
        if !moving || std::time::Instant::now() > deadline {
            return st;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub fn curl(r: &Running) -> String {
    let ns = r.lab.client("c0").expect("client").netns.clone();
    let out = r
        .lab
        .exec(
            &ns,
            &["curl", "-sS", "--max-time", "10", "http://198.18.0.11/"],
        )
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
