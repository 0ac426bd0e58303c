//! Backend failures on a real bridge: a failed wake is retried and reported, a failed sleep is
//! undone. The daemon runs in-process with fake backends, in the lab's host namespace.

mod common;

use common::{curl, settled_status, start, status};
use vmnap_api::{self as api, Request, Response};
use vmnap_hypervisor::FakeBackend;

#[test]
fn a_failed_wake_is_retried_reported_and_loses_nothing() {
    let r = start(FakeBackend::new("web1"), "");
    let answer = api::call(
        &r.socket,
        &Request::Sleep {
            guest: "web1".into(),
        },
    )
    .expect("sleep");
    assert!(matches!(answer, Response::Done { .. }), "{answer:?}");
    r.fake.state().fail_resumes = 2;
    // The SYN is held through two failed resumes (about 100 and 200 ms of backoff) and
    // replayed on the third; curl never notices.
    assert_eq!(curl(&r), "hello from web1\n");
    let st = settled_status(&r);
    assert_eq!(st["wake_failures"], 2, "{st}");
    assert_eq!(st["wakes"], 1, "{st}");
    assert_eq!(st["state"], "awake");
    assert_eq!(
        r.fake.state().calls,
        ["suspend", "resume", "resume", "resume"]
    );
}

#[test]
fn a_failed_sleep_is_undone_and_the_guest_stays_reachable() {
    let r = start(FakeBackend::new("web1"), "");
    r.fake.state().fail_suspends = 1;
    let answer = api::call(
        &r.socket,
        &Request::Sleep {
            guest: "web1".into(),
        },
    )
    .expect("sleep");
    match answer {
        Response::Error { message } => assert!(
            message.contains("web1") && message.contains("did not fall asleep"),
            "{message}"
        ),
        other => panic!("a failed sleep was reported as {other:?}"),
    }
    assert_eq!(status(&r)["state"], "awake");
    assert_eq!(curl(&r), "hello from web1\n");
    let host = r.lab.host_netns().to_owned();
    let fdb = r
        .lab
        .exec(&host, &["bridge", "fdb", "show", "br", "br0"])
        .expect("fdb");
    assert!(
        !String::from_utf8_lossy(&fdb.stdout).contains("sticky"),
        "vmnap's entry was left behind"
    );
}
