//! The cap on guests resuming at once (`[wake] max_resuming`): a storm of wakes runs at most
//! that many resumes at a time, and every client is served, none lost. The daemon runs
//! in-process with a slow fake backend (each resume takes 200 ms), on a real bridge.

mod common;

use std::time::Duration;

use common::start_many;
use vmnap_api::{self as api, Request, Response};
use vmnap_hypervisor::FakeBackend;

const GUESTS: u8 = 8;

#[test]
fn a_storm_of_wakes_resumes_at_most_the_cap_at_once_and_serves_every_client() {
    let fake = FakeBackend::new("any");
    let r = start_many(fake.clone(), GUESTS, "[wake]\nmax_resuming = 2\n", "");
    sleep_all(&r, GUESTS);
    fake.state().delay = Duration::from_millis(200);
    // Every guest asked for at once, by its own client; while they wait, the metrics show
    // the cap full.
    let pages = fetch_all(&r, GUESTS, || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = api::request(&r.socket, "GET", "/metrics", None).expect("scrape");
            if String::from_utf8_lossy(&body).contains("\nvmnap_resumes_in_flight 2\n") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never two resumes in flight"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page, &format!("hello from web{}\n", i + 1));
    }
    let state = fake.state();
    assert_eq!(
        state.calls.iter().filter(|c| **c == "resume").count(),
        usize::from(GUESTS)
    );
    assert_eq!(
        state.most_resuming, 2,
        "resumes at once, as the backend saw them"
    );
    drop(state);
    let (_, body) = api::request(&r.socket, "GET", "/metrics", None).expect("scrape");
    let body = String::from_utf8_lossy(&body).into_owned();
    for line in ["vmnap_resumes_in_flight_max 2\n", "vmnap_resume_cap 2\n"] {
        assert!(body.contains(line), "{line:?} not in the metrics");
    }
}

#[test]
fn resumes_from_save_wait_until_the_host_has_their_memory_beside_the_reserve() {
    const GIB: u64 = 1 << 30;
    let fake = FakeBackend::new("any");
    // Each guest's sleep gives back 4 GiB, as a save of a 4 GiB guest would; the reserve
    // leaves room for one of them in what the host has now (with 2 GiB to spare either way).
    fake.state().memory = 4 * GIB;
    let available = vmnap_host::memory::available().expect("MemAvailable");
    assert!(available > 8 * GIB, "this test needs 8 GiB available");
    let reserve = available - 6 * GIB;
    let top = format!(
        "[idle]\ninterval = \"200ms\"\n[wake]\nmax_resuming = 16\nresume_memory_reserve = {reserve}\n"
    );
    let r = start_many(fake.clone(), 2, &top, "idle_after = \"off\"\n");
    // Sampled at least once awake: the daemon knows what each sleep gives back.
    std::thread::sleep(Duration::from_millis(600));
    sleep_all(&r, 2);
    fake.state().delay = Duration::from_millis(300);
    let pages = fetch_all(&r, 2, || {});
    assert_eq!(pages, ["hello from web1\n", "hello from web2\n"]);
    assert_eq!(
        fake.state().most_resuming,
        1,
        "the second resume waited for the first's memory"
    );
}

/// Puts guests web1 to web`n` to sleep through the API.
#[test]
fn a_stop_that_wakes_every_guest_keeps_to_the_cap() {
    let fake = FakeBackend::new("any");
    let mut r = start_many(fake.clone(), GUESTS, "[wake]\nmax_resuming = 2\n", "");
    sleep_all(&r, GUESTS);
    fake.state().delay = Duration::from_millis(100);
    // The daemon stops as on SIGTERM, waking what it put to sleep (`on_stop = "wake"`).
    r.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ended = r.thread.take().expect("running").join().expect("no panic");
    assert!(ended.is_ok(), "{ended:?}");
    let state = fake.state();
    assert_eq!(
        state.calls.iter().filter(|c| **c == "resume").count(),
        usize::from(GUESTS),
        "every guest woken: {:?}",
        state.calls
    );
    assert_eq!(state.most_resuming, 2, "resumes at once during the stop");
}

fn sleep_all(r: &common::Running, n: u8) {
    for i in 1..=n {
        let answer = api::call(
            &r.socket,
            &Request::Sleep {
                guest: format!("web{i}"),
            },
        )
        .expect("sleep");
        assert!(matches!(answer, Response::Done { .. }), "{answer:?}");
    }
}

/// Asks guests web1 to web`n` for their pages at once, one client each, runs `meanwhile`
/// while they wait, and returns the pages in order.
fn fetch_all(r: &common::Running, n: u8, meanwhile: impl FnOnce()) -> Vec<String> {
    let ns = r.lab.client("c0").expect("client").netns.clone();
    std::thread::scope(|s| {
        let clients: Vec<_> = (1..=n)
            .map(|i| {
                let (lab, ns) = (&r.lab, &ns);
                s.spawn(move || {
                    let url = format!("http://198.18.0.{}/", 10 + i);
                    let out = lab
                        .exec(ns, &["curl", "-sS", "--max-time", "20", &url])
                        .expect("curl");
                    String::from_utf8_lossy(&out.stdout).into_owned()
                })
            })
            .collect();
        meanwhile();
        clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect()
    })
}
