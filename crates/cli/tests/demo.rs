//! `vmnap demo` runs end to end and leaves nothing behind.

#[test]
fn demo_wakes_the_sleeping_guest_with_curl_and_cleans_up() {
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
