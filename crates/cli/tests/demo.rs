//! `vmnap demo` runs end to end and leaves nothing behind.

/// One demo at a time, so that counting namespaces means something.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn demo_wakes_the_sleeping_guest_with_curl_and_cleans_up() {
    let _turn = turn();
    let before = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmnap"))
        .arg("demo")
        .output()
        .expect("run the demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("web1 is asleep"), "{text}");
    assert!(text.contains("frozen: true"), "{text}");
    assert!(text.contains("\"hello from web1\""), "{text}");
    assert!(text.contains("after 1 wake(s)"), "{text}");
    let after = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    assert_eq!(
        before.stdout, after.stdout,
        "the demo left namespaces behind"
    );
}

#[test]
fn demo_interrupted_by_ctrl_c_removes_what_it_made() {
    let _turn = turn();
    let before = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vmnap"))
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the demo");
    // Interrupt it once its network exists (the first line is printed before it is built).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns");
        if now.stdout.len() > before.stdout.len() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().expect("the demo ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the demo ignored Ctrl-C");
    assert!(err.contains("interrupted"), "{err}");
    let after = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    assert_eq!(
        before.stdout, after.stdout,
        "the interrupted demo left namespaces behind"
    );
}
