//! Page-out as the daemon runs it: once a guest is asleep its RAM is paged out, apart from
//! the backend's other calls; a wake stops a page-out under way; the status, the events and
//! the metrics say what it freed and what came back; an idle guest's RAM is written back
//! before its sleep. The daemon runs in-process with a fake backend whose page-out takes the
//! time it is told (a real QEMU guest's is in vmnap-cli's tests/vm.rs), on a real bridge.

mod common;

use std::time::{Duration, Instant};

use common::{curl, settled_status, sleep_guest, start_many, status, Running};
use vmnap_api as api;
use vmnap_hypervisor::FakeBackend;

const MIB: u64 = 1 << 20;

/// web1, whose sleeps page `100 MiB` out in `time`; sampled every 200 ms.
fn start(time: Duration, extra: &str) -> (FakeBackend, Running) {
    let fake = FakeBackend::new("web1");
    {
        let mut s = fake.state();
        s.page_out = true;
        s.memory = 100 * MIB;
        s.page_out_time = time;
    }
    let r = start_many(
        fake.clone(),
        1,
        "[idle]\ninterval = \"200ms\"\n",
        &format!("idle_after = \"off\"\n{extra}"),
    );
    (fake, r)
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric(r: &Running, series: &str) -> f64 {
    let (_, body) = api::request(&r.socket, "GET", "/metrics", None).expect("scrape");
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn once_asleep_the_guests_ram_is_paged_out_and_the_figures_say_what_came_back() {
    let (fake, r) = start(Duration::from_millis(100), "");
    // Sampled awake: what its sleep would free.
    wait_for("a sample", || status(&r)["memory_freed_bytes"].as_u64());
    sleep_guest(&r, "web1");
    let freed = wait_for("the page-out", || {
        status(&r)["memory_freed_bytes"]
            .as_u64()
            .filter(|&b| b == 99 * MIB)
    });
    let st = status(&r);
    assert_eq!(st["page_out"], "ready", "{st}");
    assert_eq!(st["memory_back_bytes"], serde_json::Value::Null, "{st}");
    assert_eq!(
        metric(&r, "vmnap_guest_memory_freed_bytes{guest=\"web1\"}"),
        freed as f64
    );
    assert_eq!(metric(&r, "vmnap_memory_freed_bytes"), freed as f64);
    // Before any wake, a wake is reckoned to take 32 MiB back.
    assert_eq!(metric(&r, "vmnap_memory_to_wake_bytes"), (32 * MIB) as f64);
    assert_eq!(curl(&r), "hello from web1\n");
    let st = settled_status(&r);
    assert_eq!(st["state"], "awake", "{st}");
    assert_eq!(st["memory_freed_bytes"], 0, "{st}");
    // What came back (the fake brings 2 MiB back) is read with the next sample.
    let back = wait_for("the memory back", || {
        status(&r)["memory_back_bytes"].as_u64()
    });
    assert_eq!(back, 2 * MIB);
    assert_eq!(
        metric(&r, "vmnap_guest_memory_back_bytes{guest=\"web1\"}"),
        back as f64
    );
    assert_eq!(metric(&r, "vmnap_memory_to_wake_bytes"), 0.0, "none sleeps");
    let state = fake.state();
    assert_eq!((state.page_outs, state.page_outs_cancelled), (1, 0));
    drop(state);
    let mut paged_out = Vec::new();
    api::events(&r.socket, false, Some("web1"), |rec| {
        if let api::Event::PagedOut {
            freed_bytes,
            complete,
            ..
        } = rec.event
        {
            paged_out.push((freed_bytes, complete));
        }
        true
    })
    .expect("events");
    assert_eq!(paged_out, [(freed, true)]);
    // Asleep again, a wake is reckoned to take back what the last one did.
    sleep_guest(&r, "web1");
    wait_for("the second page-out", || {
        (fake.state().page_outs == 2).then_some(())
    });
    assert_eq!(metric(&r, "vmnap_memory_to_wake_bytes"), back as f64);
}

#[test]
fn a_wake_stops_a_page_out_under_way_and_does_not_wait_for_it() {
    let (fake, r) = start(Duration::from_secs(30), "");
    sleep_guest(&r, "web1");
    assert_eq!(status(&r)["state"], "sleeping");
    let started = Instant::now();
    assert_eq!(curl(&r), "hello from web1\n");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the wake waited for the whole page-out"
    );
    wait_for("the page-out to end", || {
        (fake.state().page_outs == 1).then_some(())
    });
    assert_eq!(fake.state().page_outs_cancelled, 1);
    let st = settled_status(&r);
    assert_eq!(
        (st["state"].as_str(), st["wakes"].as_u64()),
        (Some("awake"), Some(1))
    );
}

#[test]
fn an_idle_guests_ram_is_written_back_before_it_sleeps() {
    let fake = FakeBackend::new("web1");
    {
        let mut s = fake.state();
        s.page_out = true;
        s.memory = 100 * MIB;
    }
    // It has been suspended once, so its backend knows how to page it out.
    let r = start_many(
        fake.clone(),
        1,
        "[idle]\ninterval = \"200ms\"\n",
        "idle_after = \"3s\"\n",
    );
    let calls = wait_for("a sleep after a write-back", || {
        let calls = fake.state().calls.clone();
        calls.contains(&"suspend").then_some(calls)
    });
    let write_back = calls.iter().position(|c| *c == "write-back");
    let suspend = calls.iter().position(|c| *c == "suspend");
    assert!(
        write_back.is_some() && write_back < suspend,
        "no write-back before the sleep: {calls:?}"
    );
    drop(r);
}

#[test]
// Sets of one range are meant: they are lists of ranges.
#[allow(clippy::single_range_in_vec_init)]
fn a_resume_from_a_page_out_first_reads_back_what_the_last_two_wakes_touched() {
    let (fake, r) = start(Duration::from_millis(50), "");
    let calls_of = |what: &str| fake.state().calls.iter().filter(|c| **c == what).count();
    // Sleeps, is paged out, wakes, and stays awake until what it touched has been read.
    let round = |n: u32, touched: Vec<std::ops::Range<u64>>| {
        fake.state().touched = touched;
        sleep_guest(&r, "web1");
        wait_for("the page-out", || {
            (fake.state().page_outs == n).then_some(())
        });
        let read = calls_of("touched");
        assert_eq!(curl(&r), "hello from web1\n");
        wait_for("what the wake touched to be read", || {
            (calls_of("touched") > read).then_some(())
        });
        fake.state().prefetched.clone()
    };
    let a: Vec<std::ops::Range<u64>> = vec![0..4096, 8192..16384];
    let b = vec![MIB..MIB + 4096];
    let c = vec![2 * MIB..3 * MIB];
    // The first wake has nothing to go by.
    assert_eq!(round(1, a.clone()), Vec::<Vec<std::ops::Range<u64>>>::new());
    assert_eq!(round(2, b.clone()), std::slice::from_ref(&a));
    // Then the last two wakes' sets, the latest first.
    let both: Vec<_> = b.iter().chain(&a).cloned().collect();
    assert_eq!(round(3, c.clone()), [a.clone(), both]);
    // A guest that touched more than a wake needs (over 16 MiB) leaves no set: what its
    // next resume reads back is the set before it alone.
    let prefetched = round(4, vec![0..65 * MIB]);
    let latest: Vec<_> = c.iter().chain(&b).cloned().collect();
    assert_eq!(prefetched.last(), Some(&latest));
    sleep_guest(&r, "web1");
    wait_for("the page-out", || {
        (fake.state().page_outs == 5).then_some(())
    });
    assert_eq!(curl(&r), "hello from web1\n");
    wait_for("the fifth resume", || {
        (fake.state().prefetched.len() == 4).then_some(())
    });
    assert_eq!(fake.state().prefetched.last(), Some(&c));
    // Each just before its resume.
    let calls = fake.state().calls.clone();
    assert_eq!(
        calls.iter().filter(|c| **c == "prefetch").count(),
        4,
        "{calls:?}"
    );
    assert!(
        calls
            .windows(2)
            .filter(|w| w[0] == "prefetch")
            .all(|w| w[1] == "resume"),
        "{calls:?}"
    );
    drop(r);
}
