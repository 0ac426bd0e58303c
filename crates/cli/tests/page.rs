//! The status page end to end: `vmnap status --serve` relays the daemon's page, curl reads
//! it, headless Chromium renders it, and OCR finds the guests' names in the screenshot.
//!
//! Chromium, curl and the relay run in the lab's host namespace, which has loopback and the
//! lab's bridge and no way out: the browser can reach nothing but the page. Needs
//! `apt-get install chromium tesseract-ocr`; without them the test fails, saying so.

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{need, text, Setup, VMNAP};

/// Words tesseract reads back reliably.
const GUESTS: [&str; 3] = ["orchard", "lantern", "harbor"];
/// The relay's port in the lab's host namespace: a namespace of its own, where nothing else
/// listens on TCP.
const LAB_PORT: u16 = 8086;
/// How long Chromium may take to write its screenshot.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process in a process group of its own, ended (the whole group, by its id) when
/// dropped, also when the test panics.
struct KillOnDrop {
    child: Child,
}

impl KillOnDrop {
    /// Starts `cmd` in a new process group.
    fn spawn(mut cmd: Command, what: &str) -> KillOnDrop {
        cmd.stdin(Stdio::null()).process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        KillOnDrop { child }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("PIDs fit in an i32")
    }

    /// Sends `signal` to the process alone.
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Its exit status, waiting at most `timeout`; `None` if it is still running.
    fn wait_for(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the process group this test made for its child (its PGID is
            // the child's PID, which is not reaped yet, so not reused).
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// Fails, naming the packages, unless Chromium and tesseract are installed.
fn need_browser_and_ocr() {
    if let Err(e) = vmnap_lab::check_tools(&["chromium", "tesseract"]) {
        panic!("the status page test needs a browser and OCR: {e}");
    }
}

/// `ip netns exec NS ARGS` as a command, for programs the lab does not track.
fn in_netns(netns: &str, argv: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).args(argv);
    cmd
}

/// curl with everything it got (`-i`: status line and headers too), never through a proxy.
fn curl_args(url: &str, extra: &[&'static str]) -> Vec<String> {
    let mut argv: Vec<String> = ["curl", "-sS", "-i", "--noproxy", "*", "--max-time", "10"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.push(url.to_owned());
    argv
}

/// Runs `cmd` until it succeeds (for at most 10 s), as long as `server` runs.
fn until_answering(server: &mut KillOnDrop, log: &Path, mut cmd: impl FnMut() -> Output) -> Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cmd();
        if out.status.success() {
            return out;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "vmnap status --serve ended ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the status page never answered: {}\n{}",
            text(&out),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The width and height of the PNG `bytes`, checking its signature and header.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "the screenshot is not a PNG ({} bytes)",
        bytes.len()
    );
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    (be(16), be(20))
}

#[test]
fn the_status_page_shows_every_guest_in_a_real_browser() {
    need(&["curl"]);
    need_browser_and_ocr();
    let guests: Vec<(&str, u16)> = GUESTS.iter().map(|g| (*g, 0)).collect();
    let s = Setup::new(&guests, "");
    s.sleep("lantern");
    let host = s.lab.host_netns().to_owned();
    let dir = s.lab.dir().to_owned();
    let url = format!("http://127.0.0.1:{LAB_PORT}/");

    let log = dir.join("serve.log");
    let mut serve = in_netns(
        &host,
        &[VMNAP, "status", "--serve", &format!("127.0.0.1:{LAB_PORT}")],
    );
    serve
        .arg("--socket")
        .arg(&s.socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the relay's log"));
    let mut serve = KillOnDrop::spawn(serve, "vmnap status --serve");
    let curl = curl_args(&url, &[]);
    let curl: Vec<&str> = curl.iter().map(String::as_str).collect();
    let out = until_answering(&mut serve, &log, || {
        in_netns(&host, &curl).output().expect("run curl")
    });

    // a) The HTML names every guest, and the one asleep as such.
    let page = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"),
        "{page}"
    );
    for name in GUESTS {
        assert!(page.contains(name), "{name} is not on the page: {page}");
    }
    assert!(
        page.contains(">sleeping<"),
        "no guest shown sleeping: {page}"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&format!("serving the status page on {url}")),
        "the relay did not say where it serves"
    );

    // b) Chromium renders it to a PNG, reaching nothing but the page.
    let shot = dir.join("status-page.png");
    let profile = dir.join("chromium");
    let browser_log = dir.join("chromium.log");
    std::fs::create_dir(&profile).expect("create Chromium's profile directory");
    let screenshot = format!("--screenshot={}", shot.display());
    let user_data = format!("--user-data-dir={}", profile.display());
    let mut browser = in_netns(
        &host,
        &[
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-proxy-server",
            "--hide-scrollbars",
            &user_data,
            "--window-size=1280,900",
            &screenshot,
            &url,
        ],
    );
    // Its caches and config go in the lab's directory too, not in root's home.
    browser
        .env("HOME", &profile)
        .env("XDG_CACHE_HOME", profile.join("cache"))
        .env("XDG_CONFIG_HOME", profile.join("config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&browser_log).expect("create Chromium's log"));
    let mut browser = KillOnDrop::spawn(browser, "chromium");
    let said = || std::fs::read_to_string(&browser_log).unwrap_or_default();
    let Some(status) = browser.wait_for(BROWSER_TIMEOUT) else {
        panic!(
            "chromium took more than {BROWSER_TIMEOUT:?} to take the screenshot: {}",
            said()
        );
    };
    drop(browser);
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        status.success() && !png.is_empty(),
        "chromium wrote no screenshot ({status}): {}",
        said()
    );
    let (width, height) = png_size(&png);
    assert_eq!((width, height), (1280, 900), "the screenshot's size");
    assert!(
        png.len() > 20_000,
        "a {}-byte screenshot is too small to show a page",
        png.len()
    );
    if let Some(keep) = std::env::var_os("VMNAP_PAGE_SCREENSHOT") {
        std::fs::copy(&shot, &keep).expect("copy the screenshot to VMNAP_PAGE_SCREENSHOT");
    }

    // c) OCR reads every guest's name off the screenshot.
    let out = Command::new("tesseract")
        .arg(&shot)
        .arg("stdout")
        .stdin(Stdio::null())
        .output()
        .expect("run tesseract");
    assert!(out.status.success(), "tesseract failed: {}", text(&out));
    let seen = String::from_utf8_lossy(&out.stdout).to_lowercase();
    for name in GUESTS {
        assert!(
            seen.contains(name),
            "OCR did not find {name} in the screenshot {}; it read:\n{seen}",
            shot.display()
        );
    }
}

/// A directory of the test's own under the temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "vmnap-page-{what}-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port on 127.0.0.1 that nothing listens on (as of now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port on 127.0.0.1")
        .port()
}

/// curl on this machine's loopback.
fn curl_local(url: &str, extra: &[&'static str]) -> Output {
    let argv = curl_args(url, extra);
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

#[test]
fn without_a_daemon_the_page_is_a_502_naming_the_socket() {
    need(&["curl"]);
    let dir = TempDir::new("502");
    let socket = dir.0.join("nobody-here.sock");
    let log = dir.0.join("serve.log");
    let port = free_port();
    let mut serve = Command::new(VMNAP);
    serve
        .args([
            "status",
            "--serve",
            &format!("127.0.0.1:{port}"),
            "--socket",
        ])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the relay's log"));
    let mut serve = KillOnDrop::spawn(serve, "vmnap status --serve");
    let url = format!("http://127.0.0.1:{port}/");
    let out = until_answering(&mut serve, &log, || curl_local(&url, &[]));

    let page = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(page.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{page}");
    assert!(
        page.contains(&format!(
            "The vmnap daemon at <code>{}</code> is not answering",
            socket.display()
        )),
        "{page}"
    );

    let out = curl_local(&format!("{url}favicon.ico"), &[]);
    let reply = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");

    let out = curl_local(&url, &["-X", "POST"]);
    let reply = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        reply.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{reply}"
    );
    assert!(reply.contains("\r\nAllow: GET\r\n"), "{reply}");

    // Ctrl-C ends it cleanly.
    serve.signal(libc::SIGINT);
    let status = serve
        .wait_for(Duration::from_secs(10))
        .expect("vmnap status --serve did not stop on SIGINT");
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn an_address_in_use_is_refused_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let addr = taken.local_addr().expect("its address");
    let dir = TempDir::new("in-use");
    let out = Command::new(VMNAP)
        .args(["status", "--serve", &addr.to_string(), "--socket"])
        .arg(dir.0.join("vmnap.sock"))
        .stdin(Stdio::null())
        .output()
        .expect("run vmnap");
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot serve the status page on {addr}")),
        "{err}"
    );
}
