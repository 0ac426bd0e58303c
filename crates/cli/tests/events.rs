//! `vmnap events` against the real daemon on a real bridge: what the worker publishes as it
//! happens — falling asleep, frames answered, queued and dropped with their reason, and the
//! wake with its cause and the frame that caused it.

mod common;

use common::{need, text, Setup};

/// `vmnap events --json [GUEST]`: the recent events, parsed.
fn events(s: &Setup, guest: Option<&str>) -> Vec<serde_json::Value> {
    let mut args = vec!["events", "--json"];
    args.extend(guest);
    s.vmnap(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn kinds(all: &[serde_json::Value]) -> Vec<&str> {
    all.iter()
        .map(|e| e["event"].as_str().expect("a kind"))
        .collect()
}

#[test]
fn events_tell_what_happened_with_the_frame_that_woke_the_guest() {
    need(&["ping", "curl", "socat"]);
    let s = Setup::new(&[("web1", 0)], "multicast = \"drop\"");
    s.sleep("web1");
    let ip = s.guest_ip("web1");
    // Answered: two pings.
    let out = s.run(0, &["ping", "-c", "2", "-i", "0.2", "-W", "2", &ip]);
    assert!(out.status.success(), "{}", text(&out));
    // Dropped by the multicast policy: a broadcast.
    let cmd = "printf 'b' | socat - UDP-DATAGRAM:198.19.255.255:9000,broadcast";
    let out = s.run(0, &["sh", "-c", cmd]);
    assert!(out.status.success(), "{}", text(&out));
    // Queued, then woken: an HTTP request.
    let (body, _) = common::curl(&s, &format!("http://{ip}/"));
    assert!(body.contains("hello from web1"), "{body}");

    // The wake goes on relaying until the client is quiet; the worker answers the status
    // request once it is over, so after it the wake's events are all out.
    assert_eq!(s.status("web1")["state"], "awake");
    let all = events(&s, Some("web1"));
    let k = kinds(&all);
    let at = |kind: &str| {
        k.iter()
            .position(|x| *x == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {all:#?}"))
    };
    assert!(at("fell-asleep") < at("answered"), "{k:?}");
    assert!(at("answered") < at("woke"), "{k:?}");
    assert!(at("queued") < at("woke"), "{k:?}");
    let pings: u64 = all
        .iter()
        .filter(|e| e["event"] == "answered" && e["protocol"] == "icmp-echo")
        .map(|e| e["frames"].as_u64().expect("frames"))
        .sum();
    assert_eq!(pings, 2, "{all:#?}");
    assert!(
        all.iter()
            .any(|e| e["event"] == "dropped" && e["reason"] == "multicast-policy"),
        "no drop by the multicast policy: {all:#?}"
    );
    let woke = &all[at("woke")];
    assert_eq!(woke["cause"], "tcp-syn", "{woke}");
    let frame = woke["frame"].as_str().expect("the frame that woke it");
    assert!(
        frame.starts_with("TCP SYN 198.18.1.100:") && frame.ends_with(&format!("> {ip}:80")),
        "{frame}"
    );
    assert!(woke["took_ms"].as_f64().is_some_and(|t| t > 0.0), "{woke}");
    // In order, and the text form says the same.
    assert!(all
        .windows(2)
        .all(|w| w[1]["seq"].as_u64() > w[0]["seq"].as_u64()));
    // The guest's detail keeps the wake, and the day's timeline has the sleep and the wake.
    let (status, body) = vmnap_daemon::api::request(&s.socket, "GET", "/v1/guests/web1", None)
        .expect("the daemon answers");
    assert_eq!(status, 200);
    let detail: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let last = &detail["last_wakes"][0];
    assert_eq!(last["cause"], "tcp-syn", "{detail:#}");
    assert_eq!(last["frame"], woke["frame"], "{detail:#}");
    let timeline: Vec<bool> = detail["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .map(|t| t["asleep"].as_bool().expect("asleep"))
        .collect();
    assert_eq!(timeline, [true, false], "{detail:#}");
    let plain = s.vmnap(&["events", "web1"]);
    assert!(
        plain.contains("woke (tcp-syn: TCP SYN 198.18.1.100:"),
        "{plain}"
    );
}
