//! The QMP client against a real QEMU (`-machine none`), and against fake servers for the
//! failures QEMU does not produce on demand.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use vmnap_qmp::{Qmp, QmpError};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A temp dir removed on drop, and a QEMU killed by PID on drop.
struct Lab {
    dir: PathBuf,
    qemu: Option<Child>,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let dir = std::env::temp_dir().join(format!("vmnap-qmp-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Lab { dir, qemu: None }
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    /// QEMU without a machine, serving QMP on `sock()`.
    fn start_qemu(&mut self) -> &Path {
        let sock = self.sock();
        let child = Command::new("qemu-system-x86_64")
            .args(["-machine", "none", "-nodefaults", "-nographic", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run qemu-system-x86_64 ({e}): install the Debian package qemu-system-x86")
            });
        self.qemu = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        while !sock.exists() {
            assert!(Instant::now() < deadline, "QEMU made no QMP socket");
            thread::sleep(Duration::from_millis(5));
        }
        &self.dir
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.qemu.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn status(qmp: &mut Qmp) -> String {
    qmp.execute("query-status", None).expect("query-status")["status"]
        .as_str()
        .expect("status string")
        .to_owned()
}

#[test]
fn qemu_answers_commands_errors_and_events_then_eof_on_quit() {
    let mut lab = Lab::new("client");
    lab.start_qemu();
    let sock = lab.sock();
    let mut qmp = Qmp::connect(&sock, TIMEOUT).expect("connects");
    let version = qmp.greeting().version.expect("greeting has a version");
    assert!(version.major >= 6, "{version:?}");

    let v = qmp.execute("query-version", None).expect("query-version");
    assert_eq!(v["qemu"]["major"], json!(version.major));
    assert_eq!(status(&mut qmp), "running");

    let err = qmp
        .execute("no-such-command", None)
        .expect_err("unknown command");
    match &err {
        QmpError::Command { class, command, .. } => {
            assert_eq!(class, "CommandNotFound");
            assert_eq!(command, "no-such-command");
        }
        other => panic!("not a command error: {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&sock.display().to_string()) && text.contains("no-such-command"),
        "{text}"
    );

    let err = qmp
        .execute("migrate", Some(json!({"uri": 3})))
        .expect_err("bad argument type");
    assert!(
        matches!(err, QmpError::Command { ref class, .. } if class == "GenericError"),
        "{err:?}"
    );

    // stop / cont: the state changes, with STOP and RESUME events.
    let mut rounds = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        qmp.execute("stop", None).expect("stop");
        let stop = t.elapsed();
        assert_eq!(status(&mut qmp), "paused");
        let t = Instant::now();
        qmp.execute("cont", None).expect("cont");
        rounds.push((stop, t.elapsed()));
        assert_eq!(status(&mut qmp), "running");
    }
    let names: Vec<String> = qmp.events().map(|e| e.name).collect();
    assert_eq!(names.len(), 40, "{names:?}");
    assert!(
        names.chunks(2).all(|p| p == ["STOP", "RESUME"]),
        "{names:?}"
    );
    rounds.sort();
    println!(
        "stop / cont round trip, median of 20: {:?} / {:?}",
        rounds[10].0, rounds[10].1
    );

    qmp.execute("stop", None).expect("stop");
    let e = qmp.wait_event("STOP", TIMEOUT).expect("STOP event");
    assert!(e.timestamp.is_some());
    let err = qmp
        .wait_event("RESUME", Duration::from_millis(100))
        .expect_err("no resume");
    assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");

    // quit: QEMU answers, then closes; the next command meets the EOF.
    let _ = qmp.execute("quit", None);
    let err = qmp.execute("query-status", None).expect_err("QEMU is gone");
    assert!(matches!(err, QmpError::Eof { .. }), "{err:?}");
    assert!(err.to_string().contains("query-status"), "{err}");
    let exited = lab.qemu.as_mut().expect("child").wait().expect("wait");
    assert!(exited.success(), "{exited}");
}

#[test]
fn connect_to_a_missing_socket_names_it() {
    let err = Qmp::connect("/nonexistent/vmnap.sock", TIMEOUT).expect_err("no socket");
    assert!(matches!(err, QmpError::Connect { .. }));
    assert!(err.to_string().contains("/nonexistent/vmnap.sock"), "{err}");
}

/// A server that accepts one client, sends `script`, then waits `hold` before closing.
fn fake_server(lab: &Lab, script: &'static [u8], hold: Duration) -> thread::JoinHandle<()> {
    let listener = UnixListener::bind(lab.sock()).expect("bind");
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.write_all(script).expect("write");
        thread::sleep(hold);
    })
}

#[test]
fn silent_server_times_out_on_the_greeting() {
    let lab = Lab::new("silent");
    let server = fake_server(&lab, b"", Duration::from_millis(500));
    let err = Qmp::connect(lab.sock(), Duration::from_millis(100)).expect_err("no greeting");
    assert!(
        matches!(err, QmpError::Timeout { ref command, .. } if command == "greeting"),
        "{err:?}"
    );
    server.join().expect("server");
}

#[test]
fn garbage_is_a_protocol_error_and_close_is_eof() {
    let lab = Lab::new("garbage");
    let server = fake_server(&lab, b"\x00\xffnot json\r\n", Duration::ZERO);
    let err = Qmp::connect(lab.sock(), TIMEOUT).expect_err("garbage");
    assert!(matches!(err, QmpError::Protocol { .. }), "{err:?}");
    server.join().expect("server");
    drop(lab);

    let lab = Lab::new("eof");
    let server = fake_server(&lab, b"{\"QMP\": {\"version\": {}}}\r\n", Duration::ZERO);
    let err = Qmp::connect(lab.sock(), TIMEOUT).expect_err("closed");
    assert!(
        matches!(err, QmpError::Eof { ref command, .. } if command == "qmp_capabilities"),
        "{err:?}"
    );
    server.join().expect("server");
}

#[test]
fn events_before_the_answer_are_queued_and_stale_answers_skipped() {
    let lab = Lab::new("events");
    let server = fake_server(
        &lab,
        b"{\"QMP\": {}}\r\n{\"return\": {}, \"id\": 1}\r\n{\"event\": \"A\"}\r\n{\"return\": 5, \"id\": 99}\r\n{\"event\": \"B\"}\r\n{\"return\": 7, \"id\": 2}\r\n{\"event\": \"C\"}\r\n",
        Duration::from_millis(300),
    );
    let mut qmp = Qmp::connect(lab.sock(), TIMEOUT).expect("connects");
    assert_eq!(qmp.execute("x", None).expect("answer"), json!(7));
    assert_eq!(qmp.wait_event("C", TIMEOUT).expect("C").name, "C");
    let names: Vec<String> = qmp.events().map(|e| e.name).collect();
    assert_eq!(names, ["A", "B"]);
    assert_eq!(qmp.dropped_events(), 0);
    server.join().expect("server");
}
