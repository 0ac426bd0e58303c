//! The HTTP API against the real daemon on a real bridge: the daemon runs in-process with fake
//! backends, in the lab's host namespace, and the tests talk HTTP to it on its unix socket and
//! on a loopback TCP listener inside that namespace.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmnap_api::State;
use vmnap_api::{self as api, GuestDetail, GuestStatus, ROUTES};
use vmnap_api::{Event, Record};
use vmnap_config::{Config, GuestConfig};
use vmnap_daemon::{Opened, StartError};
use vmnap_hypervisor::FakeBackend;
use vmnap_lab::{GuestSpec, Lab, LabOptions};

const TOKEN: &str = "s3cret-token-for-tests";
const LISTEN: &str = "127.0.0.1:7070";

struct Running {
    lab: Lab,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), StartError>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A lab with `web1` (sleeps on its own after 10 minutes, so it can be pinned) and `web2`
/// (`idle_after = "off"`), and the daemon on it, with `api` added to its `[api]` table.
fn start(api: &str) -> Running {
    let mut lab = Lab::new(LabOptions::default()).unwrap_or_else(|e| panic!("lab: {e}"));
    let mut guests = String::new();
    for (i, name) in ["web1", "web2"].iter().enumerate() {
        let n = i as u8 + 1;
        let g = lab
            .add_guest(GuestSpec {
                name: (*name).into(),
                ipv4: Ipv4Addr::new(198, 18, 0, 10 + n),
                ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(n)),
                mac: [0x02, 0, 0, 0, 1, n],
                vlan: 0,
                http_port: Some(80),
                udp_log_port: None,
            })
            .unwrap_or_else(|e| panic!("guest: {e}"))
            .clone();
        guests.push_str(&format!(
            "[[guest]]\nname = \"{name}\"\nbridge = \"br0\"\ninterface = \"{}\"\n\
             mac = \"02:00:00:00:01:0{n}\"\nipv4 = [\"198.18.0.1{n}\"]\nbackend = \"cgroup\"\n\
             cgroup = \"{}\"\nwake_on = [\"tcp/80\"]\n{}",
            g.host_if,
            g.cgroup.display(),
            if n == 2 { "idle_after = \"off\"\n" } else { "" }
        ));
    }
    let socket = lab.dir().join("vmnap.sock");
    let text = format!(
        "[state]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n{api}\n{guests}",
        lab.dir().display(),
        socket.display()
    );
    let config = Config::parse(&text, "test.toml".as_ref()).expect("valid config");
    let stop = Arc::new(AtomicBool::new(false));
    let host = lab.host_netns().to_owned();
    let s = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        vmnap_lab::enter_netns(&host).expect("enter the lab's host namespace");
        let factory = move |g: &GuestConfig, _: &Config| -> Result<Opened, StartError> {
            Opened::from_config(g, Box::new(FakeBackend::new(&g.name)))
        };
        vmnap_daemon::run_until(config, &factory, &s)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Running {
        lab,
        socket,
        stop,
        thread: Some(thread),
    }
}

/// The daemon with the TCP listener at [`LISTEN`] and the token [`TOKEN`] in a file of a
/// directory of its own (named from `tag`; the caller removes it), readable by its owner
/// alone, as the daemon insists.
fn start_with_token(tag: &str) -> (Running, PathBuf) {
    let dir = std::env::temp_dir().join(format!("vmnap-api-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let r = start(&format!(
        "listen = \"{LISTEN}\"\ntoken_file = \"{}\"\n",
        token_file.display()
    ));
    (r, dir)
}

/// An answer: status, headers (lower-case names) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a refusal: `status` and a JSON `error` message.
    #[track_caller]
    fn refused(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let message = self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {self:?}"))
            .to_owned();
        assert!(!message.is_empty());
        message
    }
}

fn parse_answer(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn exchange(stream: &mut (impl Read + Write), bytes: &[u8]) -> Answer {
    // The server may answer (and close) before reading all of a refused body.
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    parse_answer(&out)
}

/// Sends raw bytes on the unix socket and reads the answer.
fn raw(r: &Running, bytes: &[u8]) -> Answer {
    let mut s = UnixStream::connect(&r.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    exchange(&mut s, bytes)
}

fn req(r: &Running, method: &str, target: &str, body: Option<&str>) -> Answer {
    raw(r, request_bytes(method, target, body, None).as_bytes())
}

fn request_bytes(method: &str, target: &str, body: Option<&str>, token: Option<&str>) -> String {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: vmnap\r\n");
    if let Some(t) = token {
        text.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        text.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        text.push_str("\r\n");
    }
    text
}

/// Sends raw bytes to the TCP listener, from inside the lab's host namespace.
fn tcp(r: &Running, bytes: Vec<u8>) -> Answer {
    let host = r.lab.host_netns().to_owned();
    std::thread::spawn(move || {
        vmnap_lab::enter_netns(&host).expect("enter the lab's host namespace");
        let mut s = TcpStream::connect(LISTEN).expect("connect over TCP");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        exchange(&mut s, &bytes)
    })
    .join()
    .expect("TCP client")
}

fn events(r: &Running, guest: Option<&str>) -> Vec<Record> {
    let mut out = Vec::new();
    api::events(&r.socket, false, guest, |rec| {
        out.push(rec);
        true
    })
    .expect("events");
    out
}

#[test]
fn guests_are_listed_detailed_slept_woken_and_pinned_over_the_socket() {
    let r = start("");
    let list = req(&r, "GET", "/v1/guests", None);
    assert_eq!(list.status, 200, "{list:?}");
    assert!(list.head.contains("content-type: application/json"));
    let guests: Vec<GuestStatus> = serde_json::from_str(&list.body).expect("a list");
    let names: Vec<&str> = guests.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["web1", "web2"]);
    assert!(guests.iter().all(|g| g.state == State::Awake));

    let detail = req(&r, "GET", "/v1/guests/web1", None);
    assert_eq!(detail.status, 200, "{detail:?}");
    let d: GuestDetail = serde_json::from_str(&detail.body).expect("a detail");
    assert_eq!(d.status.name, "web1");
    assert_eq!(d.policy.backend, "cgroup");
    assert_eq!(d.policy.wake_on, ["tcp/80"]);
    assert_eq!(d.policy.answer, ["arp", "ndp", "icmp-echo"]);
    assert_eq!(d.policy.idle_after_s, Some(600.0));
    assert_eq!((d.policy.min_awake_s, d.policy.max_sleep_s), (0.0, None));
    assert_eq!(
        (d.policy.awake_during.len(), &d.policy.timezone),
        (0, &None)
    );
    assert_eq!(d.policy.mac, "02:00:00:00:01:01");
    assert_eq!(d.policy.ipv4, ["198.18.0.11"]);
    let web2 = api::guest(&r.socket, "web2").expect("web2");
    assert_eq!(web2.policy.idle_after_s, None);

    let sleep = req(&r, "POST", "/v1/guests/web1/sleep", None);
    assert_eq!(sleep.status, 200, "{sleep:?}");
    assert_eq!(sleep.json()["message"], "web1 is asleep");
    assert_eq!(
        api::guest(&r.socket, "web1").expect("web1").status.state,
        State::Sleeping
    );
    let wake = req(&r, "POST", "/v1/guests/web1/wake", Some("{\"wait\": true}"));
    assert_eq!(wake.status, 200, "{wake:?}");
    assert_eq!(wake.json()["message"], "web1 is awake");
    let d = api::guest(&r.socket, "web1").expect("web1");
    assert_eq!((d.status.state, d.status.wakes), (State::Awake, 1));
    assert_eq!(d.status.last_wake_cause.as_deref(), Some("requested"));

    // Without waiting: 202 at once, asleep soon after.
    let sleep = req(
        &r,
        "POST",
        "/v1/guests/web2/sleep",
        Some("{\"wait\": false}"),
    );
    assert_eq!(sleep.status, 202, "{sleep:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while api::guest(&r.socket, "web2").expect("web2").status.state != State::Sleeping {
        assert!(Instant::now() < deadline, "web2 did not fall asleep");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(req(&r, "POST", "/v1/guests/web2/wake", None).status, 200);

    let pin = req(&r, "POST", "/v1/guests/web1/pin", Some("{}"));
    assert_eq!(pin.status, 200, "{pin:?}");
    assert_eq!(pin.json()["message"], "web1 is pinned awake");
    assert!(api::guest(&r.socket, "web1").expect("web1").status.pinned);
    assert_eq!(req(&r, "POST", "/v1/guests/web1/unpin", None).status, 200);
    assert!(!api::guest(&r.socket, "web1").expect("web1").status.pinned);
    let never = req(&r, "POST", "/v1/guests/web2/pin", None).refused(409);
    assert!(never.contains("never sleeps on its own"), "{never}");

    let missing = req(&r, "GET", "/v1/guests/nope", None).refused(404);
    assert_eq!(missing, "no guest named nope");
    req(&r, "POST", "/v1/guests/nope/sleep", None).refused(404);
    // Started without a config file: there is nothing to reload, nor a log filter to set.
    let reload = req(&r, "POST", "/v1/reload", None).refused(409);
    assert!(
        reload.contains("not started from a config file"),
        "{reload}"
    );
    req(&r, "PUT", "/v1/log", Some("{\"filter\": \"debug\"}")).refused(409);

    // What happened, as events: web1 fell asleep and woke on request, then web2.
    // (Frames the guests send each other while one sleeps may add `queued` events.)
    let all = events(&r, None);
    let seen: Vec<(String, &str)> = all
        .iter()
        .filter_map(|rec| {
            let kind = match &rec.event {
                Event::FellAsleep { .. } => "fell-asleep",
                Event::Woke { cause, frame, .. } => {
                    assert_eq!(cause, "requested");
                    assert_eq!(frame, &None, "a requested wake has no frame");
                    "woke"
                }
                Event::BackendError { .. } => "backend-error",
                Event::SleepVetoed { .. } => "sleep-vetoed",
                Event::Adopted { .. } => "adopted",
                Event::Released { .. } => "released",
                Event::PagedOut { .. } => "paged-out",
                Event::Dropped { .. } => "dropped",
                Event::Answered { .. } | Event::Queued { .. } => return None,
            };
            Some((rec.event.guest().to_owned(), kind))
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("web1".to_owned(), "fell-asleep"),
            ("web1".to_owned(), "woke"),
            ("web2".to_owned(), "fell-asleep"),
            ("web2".to_owned(), "woke"),
        ],
        "{all:?}"
    );
    assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let only = events(&r, Some("web2"));
    assert!(only.len() >= 2, "{only:?}");
    assert!(only.iter().all(|rec| rec.event.guest() == "web2"));
    let unknown = api::events(&r.socket, false, Some("nope"), |_| true);
    assert!(
        matches!(unknown, Err(api::ClientError::Refused { status: 404, .. })),
        "{unknown:?}"
    );
}

#[test]
fn a_followed_event_stream_gets_events_as_they_happen() {
    let r = start("");
    let socket = r.socket.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = api::events(&socket, true, Some("web1"), |rec| tx.send(rec).is_ok());
    });
    // Let the subscriber attach before anything happens.
    std::thread::sleep(Duration::from_millis(300));
    // The next lifecycle event (frames the guests send meanwhile may be queued or answered).
    let next = || loop {
        let rec = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("an event while following");
        if !matches!(rec.event, Event::Answered { .. } | Event::Queued { .. }) {
            return rec;
        }
    };
    assert_eq!(req(&r, "POST", "/v1/guests/web1/sleep", None).status, 200);
    assert_eq!(
        next().event,
        Event::FellAsleep {
            guest: "web1".into()
        }
    );
    assert_eq!(req(&r, "POST", "/v1/guests/web1/wake", None).status, 200);
    let rec = next();
    assert!(matches!(rec.event, Event::Woke { .. }), "{rec:?}");
}

#[test]
fn tcp_listener_refuses_requests_without_the_token() {
    let (r, dir) = start_with_token("token");
    let none = tcp(
        &r,
        request_bytes("GET", "/v1/guests", None, None).into_bytes(),
    );
    none.refused(401);
    assert!(none.head.contains("www-authenticate: bearer"), "{none:?}");
    let wrong = tcp(
        &r,
        request_bytes("GET", "/v1/guests", None, Some("s3cret-token-for-test5")).into_bytes(),
    );
    wrong.refused(401);
    // Refused before anything else, even on paths that do not exist or actions.
    tcp(&r, request_bytes("GET", "/nope", None, None).into_bytes()).refused(401);
    tcp(
        &r,
        request_bytes("POST", "/v1/guests/web1/sleep", None, None).into_bytes(),
    )
    .refused(401);
    assert_eq!(
        api::guest(&r.socket, "web1").expect("web1").status.state,
        State::Awake,
        "an unauthorized request acted"
    );
    let right = tcp(
        &r,
        request_bytes("GET", "/v1/guests", None, Some(TOKEN)).into_bytes(),
    );
    assert_eq!(right.status, 200, "{right:?}");
    assert_eq!(right.json().as_array().map(Vec::len), Some(2));
    // No browser takes a JSON answer for anything else; nor a refusal.
    assert!(
        right.head.contains("x-content-type-options: nosniff"),
        "{right:?}"
    );
    assert!(
        none.head.contains("x-content-type-options: nosniff"),
        "{none:?}"
    );
    assert_eq!(right.head.matches("x-content-type-options").count(), 1);
    let sleep = tcp(
        &r,
        request_bytes("POST", "/v1/guests/web1/sleep", None, Some(TOKEN)).into_bytes(),
    );
    assert_eq!(sleep.status, 200, "{sleep:?}");
    // A browser: told `Basic` too, it sends the token as the password of any user.
    assert!(none.head.contains("www-authenticate: basic"), "{none:?}");
    let basic = |user_password: &str| {
        use base64::Engine as _;
        let creds = base64::engine::general_purpose::STANDARD.encode(user_password);
        let text = format!("GET / HTTP/1.1\r\nHost: vmnap\r\nAuthorization: Basic {creds}\r\n\r\n");
        tcp(&r, text.into_bytes())
    };
    let page = basic(&format!("admin:{TOKEN}"));
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.head.contains("content-type: text/html"), "{page:?}");
    assert!(page.body.contains("web1") && page.body.contains("web2"));
    basic("admin:not-the-token").refused(401);
    basic(TOKEN).refused(401);
    // The unix socket needs no token.
    assert_eq!(req(&r, "GET", "/v1/guests", None).status, 200);
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP connection to the API from `source` (an address of the loopback network), made in
/// the calling thread's namespace.
fn connect_from(source: Ipv4Addr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let listen: std::net::SocketAddrV4 = LISTEN.parse().expect("an address");
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned here, with valid sockaddr_in values
    // and their size; the descriptor goes to the TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        let rc = libc::bind(fd, std::ptr::addr_of!(local).cast(), len);
        assert_eq!(
            rc,
            0,
            "bind to {source}: {}",
            std::io::Error::last_os_error()
        );
        let remote = sockaddr(*listen.ip(), listen.port());
        let rc = libc::connect(fd, std::ptr::addr_of!(remote).cast(), len);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

#[test]
fn slow_tcp_clients_cannot_take_the_unix_socket_or_hold_a_connection() {
    let (r, dir) = start_with_token("slow");
    let host = r.lab.host_netns().to_owned();
    // 8 addresses x 10 clients that begin a request and never finish it: more than the TCP
    // listener serves at once (64), and more than one address may have (8).
    let held = std::thread::spawn(move || {
        vmnap_lab::enter_netns(&host).expect("enter the lab's host namespace");
        let mut held = Vec::new();
        for a in 2..10u8 {
            for _ in 0..10 {
                let mut s = connect_from(Ipv4Addr::new(127, 0, 0, a));
                s.write_all(b"GET /v1/guests HTTP/1.1\r\nHost: vmnap\r\n")
                    .expect("write");
                held.push(s);
            }
        }
        held
    })
    .join()
    .expect("the slow clients");
    // While they hold every place the TCP listener has, the unix socket is served as ever.
    for _ in 0..20 {
        assert_eq!(req(&r, "GET", "/v1/guests", None).status, 200);
    }
    // Those refused were told so at once; the others still wait for the rest of their
    // heads (well within the 5 s they have).
    let mut refused = 0;
    for s in &held {
        s.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 1024];
        if let Ok(n) = (&*s).read(&mut buf) {
            assert_eq!(parse_answer(&buf[..n]).status, 503);
            refused += 1;
        }
    }
    assert_eq!(
        refused, 16,
        "8 addresses x 10 clients, 8 served from each: 16 refused at once"
    );
    drop(held);
    // Gone, they give their places back.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ok = tcp(
            &r,
            request_bytes("GET", "/v1/guests", None, Some(TOKEN)).into_bytes(),
        );
        if ok.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no place came back: {ok:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A client gets 408 once its time is up, however it trickles: a byte every 200 ms.
    let host = r.lab.host_netns().to_owned();
    let cut = std::thread::spawn(move || {
        vmnap_lab::enter_netns(&host).expect("enter the lab's host namespace");
        let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 11));
        s.write_all(b"GET /v1/guests HTTP/1.1\r\n").expect("write");
        let started = Instant::now();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while started.elapsed() < Duration::from_secs(30) {
            let _ = s.write_all(b"X");
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        (parse_answer(&out).status, started.elapsed())
    })
    .join()
    .expect("the trickling client");
    assert_eq!(cut.0, 408, "a trickling client is cut off");
    assert!(
        cut.1 < Duration::from_secs(15),
        "a trickling client held its connection {:?}",
        cut.1
    );
    // Without the token, a body is not waited for: the refusal comes at once, body or not.
    let unread = tcp(
        &r,
        b"POST /v1/guests/web1/sleep HTTP/1.1\r\nHost: vmnap\r\nContent-Length: 60000\r\n\r\n"
            .to_vec(),
    );
    unread.refused(401);
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn socket_is_mode_0600_and_other_users_cannot_connect() {
    let r = start("");
    let mode = std::fs::metadata(&r.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    // Make every directory above it traversable, so that only the socket's mode stands in
    // the way of another user.
    let mut opened = Vec::new();
    for dir in r.socket.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let before = meta.permissions().mode();
        if before & 0o001 == 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(before | 0o001))
                .expect("chmod");
            opened.push((dir.to_path_buf(), before));
        }
    }
    let as_nobody = |path: &Path| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["curl", "-sS", "--max-time", "5", "--unix-socket"])
            .arg(path)
            .arg("http://vmnap/v1/guests")
            .output()
            .expect("run curl as nobody")
    };
    let out = as_nobody(&r.socket);
    for (dir, before) in opened {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(before));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "another user reached the API: {out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        err.contains("Permission denied") || err.contains("Couldn't connect"),
        "{err}"
    );
    // Root, the daemon's user, still can.
    assert_eq!(req(&r, "GET", "/v1/guests", None).status, 200);
}

#[test]
fn malformed_requests_get_4xx_with_a_message_and_the_daemon_keeps_serving() {
    let r = start("");
    let bad_json = req(&r, "POST", "/v1/guests/web1/sleep", Some("{\"wait\": tru"));
    assert!(bad_json.refused(400).contains("body"));
    req(&r, "POST", "/v1/guests/web1/sleep", Some("{\"colour\": 1}")).refused(400);
    req(&r, "POST", "/v1/guests/web1/sleep", Some("[1, 2]")).refused(400);
    req(&r, "POST", "/v1/guests/web1/pin", Some("{\"wait\": false}")).refused(400);
    assert!(req(&r, "GET", "/nope", None)
        .refused(404)
        .contains("no such path"));
    req(&r, "GET", "/v1/guests/", None).refused(404);
    req(&r, "GET", "/v1/guests/web1/sleep/now", None).refused(404);
    let wrong = req(&r, "DELETE", "/v1/guests", None);
    wrong.refused(405);
    assert!(wrong.head.contains("allow: get"), "{wrong:?}");
    let wrong = req(&r, "GET", "/v1/guests/web1/sleep", None);
    wrong.refused(405);
    assert!(wrong.head.contains("allow: post"), "{wrong:?}");
    req(&r, "POST", "/v1/events", None).refused(405);
    req(&r, "GET", "/v1/guests?colour=red", None).refused(400);
    req(&r, "GET", "/v1/events?follow=maybe", None).refused(400);
    // A body over 64 KiB, announced and sent.
    let huge = "x".repeat(vmnap_api::http::MAX_BODY + 1);
    let big = req(&r, "POST", "/v1/guests/web1/sleep", Some(&huge));
    assert!(big.refused(413).contains("65536"));
    // Garbage bytes, binary junk, a line that is not HTTP, an unfinished head.
    raw(&r, b"hello there\r\n\r\n").refused(400);
    raw(&r, &[0u8, 0xff, 0xfe, 0x80, b'\r', b'\n', b'\r', b'\n']).refused(400);
    raw(&r, b"{\"cmd\":\"status\"}\n").refused(400);
    raw(&r, b"GET /v1/guests HTTP/9.9\r\n\r\n").refused(505);
    raw(
        &r,
        b"POST /v1/reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .refused(411);
    let mut long = b"GET /v1/guests HTTP/1.1\r\nX-Long: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 20_000));
    long.extend_from_slice(b"\r\n\r\n");
    raw(&r, &long).refused(431);
    // A client that connects and goes without a word, and one that stops half-way.
    drop(UnixStream::connect(&r.socket).expect("connect"));
    {
        let mut s = UnixStream::connect(&r.socket).expect("connect");
        s.write_all(b"GET /v1/gue").expect("write");
    }
    // Many at once.
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let socket = r.socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(socket).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                exchange(&mut s, format!("JUNK {i}\r\n\r\n").as_bytes()).status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("client"), 400);
    }
    // Still serving, and still acting.
    assert_eq!(req(&r, "GET", "/v1/guests", None).status, 200);
    assert_eq!(req(&r, "POST", "/v1/guests/web1/sleep", None).status, 200);
    assert_eq!(req(&r, "POST", "/v1/guests/web1/wake", None).status, 200);
}

/// The OpenAPI document, read.
fn openapi() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/openapi.json");
    let text = std::fs::read_to_string(&path).expect("openapi.json");
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

/// The statuses the document lists for `method` on `path`.
fn listed(doc: &serde_json::Value, path: &str, method: &str) -> BTreeSet<u16> {
    doc["paths"][path][method.to_ascii_lowercase()]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} has no responses"))
        .keys()
        .map(|k| k.parse().expect("a status code"))
        .collect()
}

/// The property names of schema `name`.
fn properties(doc: &serde_json::Value, name: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {name}"))
        .keys()
        .cloned()
        .collect()
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

#[test]
fn openapi_document_matches_the_server() {
    let doc = openapi();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "post", "put", "patch", "delete", "head", "options"]
                .contains(&method.as_str())
            {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(
        documented, served,
        "the document and the server's routes differ"
    );

    let r = start("");
    let check = |method: &str, path: &str, target: &str, body: Option<&str>| {
        let answer = req(&r, method, target, body);
        let statuses = listed(&doc, path, method);
        assert!(
            statuses.contains(&answer.status),
            "{method} {target} answered {} which the document does not list for {path} ({statuses:?})",
            answer.status
        );
        answer
    };
    for (method, path) in &served {
        // As documented, with a guest that exists; events without following.
        let target = path.replace("{name}", "web1");
        let target = if path == "/v1/events" {
            format!("{target}?follow=false")
        } else {
            target
        };
        check(method, path, &target, None);
        // With a body the document allows.
        if method == "POST" {
            check(method, path, &target, Some("{}"));
            check(method, path, &target, Some("{\"not\": \"json"));
        }
        if path.contains("{name}") {
            check(method, path, &path.replace("{name}", "nope"), None);
        }
        check(
            method,
            path,
            &format!(
                "{target}{}colour=red",
                if target.contains('?') { "&" } else { "?" }
            ),
            None,
        );
        let other = if method == "GET" { "POST" } else { "GET" };
        let wrong = req(&r, other, &target, None);
        assert!(
            listed(&doc, path, method).contains(&wrong.status),
            "{other} {target} answered {}",
            wrong.status
        );
    }
    // Put the guest back to sleep for the body checks below.
    check(
        "POST",
        "/v1/guests/{name}/sleep",
        "/v1/guests/web1/sleep",
        None,
    );
    // The bodies have the documented fields, no more and no fewer.
    let list = check("GET", "/v1/guests", "/v1/guests", None).json();
    for g in list.as_array().expect("a list") {
        assert_eq!(keys(g), properties(&doc, "GuestStatus"));
    }
    let detail = check("GET", "/v1/guests/{name}", "/v1/guests/web1", None).json();
    assert_eq!(keys(&detail), properties(&doc, "GuestDetail"));
    assert_eq!(keys(&detail["policy"]), properties(&doc, "Policy"));
    let event_fields = properties(&doc, "Event");
    for rec in events(&r, None) {
        let v = serde_json::to_value(&rec).expect("json");
        assert!(keys(&v).is_subset(&event_fields), "{v}");
    }
}

#[test]
fn the_tcp_listener_speaks_tls_with_the_configured_certificate_and_only_tls() {
    let dir = std::env::temp_dir().join(format!("vmnap-api-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (token_file, cert, key) = (dir.join("token"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    std::fs::write(&cert, made.cert.pem()).expect("cert");
    std::fs::write(&key, made.key_pair.serialize_pem()).expect("key");
    for f in [&token_file, &key] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let r = start(&format!(
        "listen = \"{LISTEN}\"\ntoken_file = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        token_file.display(),
        cert.display(),
        key.display()
    ));
    let host = r.lab.host_netns().to_owned();
    let curl = |args: &[&str]| {
        let mut argv = vec!["curl", "-sS", "--max-time", "5"];
        argv.extend_from_slice(args);
        r.lab.exec(&host, &argv).expect("curl")
    };
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let https = format!("https://{LISTEN}/v1/guests");
    let cacert = cert.display().to_string();
    let ok = curl(&["--cacert", &cacert, "-H", &bearer, &https]);
    let body = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(body.contains("\"web1\""), "{body}");
    // The token is still asked for, inside TLS.
    let no_token = curl(&[
        "--cacert",
        &cacert,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &https,
    ]);
    assert_eq!(String::from_utf8_lossy(&no_token.stdout), "401");
    // A client that does not trust the certificate gives up, and one in clear text gets no
    // answer: the port speaks TLS only.
    let untrusted = curl(&["-H", &bearer, &https]);
    assert_eq!(
        untrusted.status.code(),
        Some(60),
        "curl: certificate not trusted"
    );
    let clear = curl(&["-H", &bearer, &format!("http://{LISTEN}/v1/guests")]);
    assert!(!clear.status.success());
    assert!(!String::from_utf8_lossy(&clear.stdout).contains("web1"));
    // And the listener keeps serving after both.
    let again = curl(&["--cacert", &cacert, "-H", &bearer, &https]);
    assert!(again.status.success());
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}
