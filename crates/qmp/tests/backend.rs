//! `QmpBackend` against a real QEMU: a q35 machine under TCG with no disk and no kernel (it
//! sits in firmware, which is enough to pause and to migrate).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmnap_hypervisor::Backend;
use vmnap_qmp::{chain, QmpBackend, ResumeError};

/// A temp dir and the backends under test; every QEMU they started is killed on drop,
/// also when the test fails.
struct Lab {
    dir: PathBuf,
    backends: Vec<QmpBackend>,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let dir = std::env::temp_dir().join(format!("vmnap-qmpb-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Lab {
            dir,
            backends: Vec::new(),
        }
    }

    fn argv() -> Vec<OsString> {
        let program = "qemu-system-x86_64";
        if std::process::Command::new(program)
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("{program} is missing: install the Debian package qemu-system-x86");
        }
        [
            program,
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-m",
            "64",
            "-nographic",
            "-nodefaults",
        ]
        .into_iter()
        .map(OsString::from)
        .collect()
    }

    fn save_backend(&self, guest: &str) -> QmpBackend {
        QmpBackend::save(
            guest,
            Self::argv(),
            self.dir.join("qmp.sock"),
            self.dir.join(format!("{guest}.state")),
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for b in &mut self.backends {
            if let Err(e) = b.kill() {
                eprintln!("cannot kill QEMU of {}: {e}", b.guest());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alive(pid: u32) -> bool {
    // Reaped by the backend, so a gone process has no /proc entry.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn pause_backend_stops_and_continues_a_running_guest() {
    let mut lab = Lab::new("pause");
    // The save backend only starts QEMU here; a pause backend drives it over its own link.
    let mut owner = lab.save_backend("owner");
    owner.start().expect("QEMU starts");
    let sock = owner.qmp_path().to_path_buf();
    lab.backends.push(owner);
    // QEMU serves one QMP client at a time: the owner lets go of its connection first.
    lab.backends[0].disconnect();

    let mut pause = QmpBackend::pause("web1", &sock);
    assert_eq!(pause.kind(), "qmp-pause");
    assert_eq!(pause.status().expect("status"), "running");
    // The vCPU threads' run time, from the host's view, grows while the guest runs.
    let before = pause
        .cpu_time()
        .expect("query-cpus-fast names the vCPU threads");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after = pause.cpu_time().expect("vCPU time");
    assert!(
        after > before,
        "vCPU time did not grow: {before:?} -> {after:?}"
    );
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        pause.suspend().expect("suspend");
        let suspended = t.elapsed();
        assert_eq!(pause.status().expect("status"), "paused");
        let t = Instant::now();
        pause.resume().expect("resume");
        times.push((suspended, t.elapsed()));
        assert_eq!(pause.status().expect("status"), "running");
    }
    times.sort();
    println!(
        "pause backend suspend / resume (stop or cont + query-status), median of 20: {:?} / {:?}",
        times[10].0, times[10].1
    );
    // Idempotent: suspending a paused guest and resuming a running one both succeed.
    pause.suspend().expect("suspend");
    pause.suspend().expect("suspend again");
    pause.resume().expect("resume");
    pause.resume().expect("resume again");
}

#[test]
fn save_backend_saves_to_a_file_ends_qemu_and_restores_running() {
    let mut lab = Lab::new("save");
    let state = lab.dir.join("db.state");
    lab.backends.push(lab.save_backend("db"));
    let b = &mut lab.backends[0];
    assert_eq!(b.kind(), "qmp-save");
    b.start().expect("QEMU starts");
    assert_eq!(b.status().expect("status"), "running");

    for round in 0..2 {
        let pid = b.pid().expect("QEMU runs");
        let t = Instant::now();
        b.suspend().expect("save");
        let saved = t.elapsed();
        assert!(!alive(pid), "QEMU {pid} still runs after the save");
        assert_eq!(b.pid(), None);
        let size = std::fs::metadata(&state).expect("state file").len();
        // Zero pages travel as flags: a guest idling in firmware saves to well under 1 MiB.
        assert!(size > 64 << 10, "state file is only {size} bytes");
        assert!(!lab.dir.join("db.state.partial").exists());
        assert!(b.status().is_err(), "no QMP while saved");

        let t = Instant::now();
        b.resume().expect("restore");
        let restored = t.elapsed();
        assert_eq!(b.status().expect("status"), "running");
        assert!(
            !state.exists(),
            "the state file is removed once the guest runs"
        );
        println!("round {round}: save {saved:?} ({size} bytes), restore to running {restored:?}");
    }
}

#[test]
fn a_guest_saved_while_paused_comes_back_running() {
    let mut lab = Lab::new("paused");
    lab.backends.push(lab.save_backend("p"));
    let b = &mut lab.backends[0];
    b.start().expect("QEMU starts");
    b.disconnect();
    let mut pause = QmpBackend::pause("p", b.qmp_path());
    pause.suspend().expect("pause");
    pause.disconnect();
    assert_eq!(b.status().expect("status"), "paused");
    b.suspend().expect("save");
    b.resume().expect("restore");
    assert_eq!(b.status().expect("status"), "running");
}

#[test]
fn a_new_backend_restores_from_an_existing_state_file() {
    let mut lab = Lab::new("restart");
    lab.backends.push(lab.save_backend("r"));
    lab.backends[0].start().expect("QEMU starts");
    lab.backends[0].suspend().expect("save");
    // As after a daemon restart: a fresh backend, same command line and file.
    lab.backends.push(lab.save_backend("r"));
    let b = &mut lab.backends[1];
    b.resume().expect("restore");
    assert_eq!(b.status().expect("status"), "running");
}

#[test]
fn a_corrupt_state_file_fails_the_restore_with_qemus_words_and_keeps_the_file() {
    let mut lab = Lab::new("corrupt");
    let state = lab.dir.join("c.state");
    std::fs::write(&state, b"not a migration stream").expect("write");
    lab.backends.push(lab.save_backend("c"));
    let b = &mut lab.backends[0];
    let err = b.try_resume().expect_err("corrupt state");
    let text = chain(&err);
    println!("{text}");
    assert!(matches!(err, ResumeError::Restore { .. }), "{text}");
    assert!(
        text.contains("guest c") && text.contains("c.state"),
        "{text}"
    );
    assert_eq!(b.pid(), None, "no QEMU left behind");
    assert!(state.exists());
}

#[test]
fn qemu_that_cannot_start_is_reported_with_its_stderr() {
    let mut lab = Lab::new("bad");
    let mut b = QmpBackend::save(
        "bad",
        vec!["qemu-system-x86_64".into(), "-no-such-option".into()],
        lab.dir.join("qmp.sock"),
        lab.dir.join("bad.state"),
    )
    .with_timeouts(vmnap_qmp::Timeouts {
        start: Duration::from_secs(5),
        ..Default::default()
    });
    let err = b.start().expect_err("bad option");
    let text = chain(&err);
    assert!(
        text.contains("guest bad") && text.contains("no-such-option"),
        "{text}"
    );
    lab.backends.push(b);
}
