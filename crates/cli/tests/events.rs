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

    // Once the guest is awake, the wake's events are all out.
    s.awake("web1");
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
    let (status, body) =
        vmnap_api::request(&s.socket, "GET", "/v1/guests/web1", None).expect("the daemon answers");
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

/// The sum of guest `web1`'s wake-and-serve histogram, in milliseconds.
fn histogram_sum_ms(s: &Setup) -> f64 {
    let (status, body) =
        vmnap_api::request(&s.socket, "GET", "/metrics", None).expect("GET /metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let line = text
        .lines()
        .find(|l| l.starts_with("vmnap_guest_wake_and_serve_seconds_sum{guest=\"web1\"}"))
        .unwrap_or_else(|| panic!("no wake-and-serve sum for web1 in:\n{text}"));
    let value: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a sample: {line}"));
    value * 1000.0
}

/// `took_ms` of the log's last `guest is awake` line.
fn logged_took_ms(s: &Setup) -> f64 {
    let log = s.daemon_log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("guest is awake") && l.contains("guest=web1"))
        .unwrap_or_else(|| panic!("no wake in the log:\n{log}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("took_ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no took_ms in: {line}"))
}

/// Seconds since the epoch of a `tcpdump -tt` line.
fn stamp(line: &str) -> f64 {
    line.split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no time stamp: {line}"))
}

#[test]
fn a_wake_has_one_duration_everywhere_and_it_is_what_the_client_sees() {
    need(&["curl", "tcpdump"]);
    let s = Setup::new(&[("web1", 0)], "");
    let ip = s.guest_ip("web1");
    let mut seen = Vec::new();
    for round in 0..3 {
        s.sleep("web1");
        let sum_before = histogram_sum_ms(&s);
        let capture = s
            .lab
            .capture(
                &s.client(0),
                &s.client_if(0),
                "tcp port 80 and tcp[tcpflags] & tcp-syn != 0",
            )
            .expect("tcpdump");
        let (body, _) = common::curl(&s, &format!("http://{ip}/"));
        assert!(body.contains("hello from web1"), "{body}");
        let lines = capture.stop_with(&["-tt"]).expect("capture");
        let syn = lines.iter().find(|l| l.contains("Flags [S],"));
        let syn_ack = lines.iter().find(|l| l.contains("Flags [S.],"));
        let (Some(syn), Some(syn_ack)) = (syn, syn_ack) else {
            panic!("round {round}: no SYN and SYN-ACK in the capture: {lines:#?}");
        };
        let client_ms = (stamp(syn_ack) - stamp(syn)) * 1000.0;

        // The worker answers the status request once the wake is over.
        let status = s.status("web1");
        assert_eq!(status["state"], "awake", "{status}");
        let status_ms = status["last_wake_ms"].as_f64().expect("last_wake_ms");
        let detail = vmnap_api::guest(&s.socket, "web1").expect("detail");
        let record = detail.last_wakes.last().expect("a wake record");
        let woke: Vec<serde_json::Value> = events(&s, Some("web1"))
            .into_iter()
            .filter(|e| e["event"] == "woke")
            .collect();
        assert_eq!(woke.len(), round + 1, "{woke:#?}");
        let event_ms = woke[round]["took_ms"].as_f64().expect("took_ms");
        let histogram_ms = histogram_sum_ms(&s) - sum_before;
        let log_ms = logged_took_ms(&s);

        // One duration: the API's, the event's, the log's and the histogram's agree (the
        // histogram's sum is in seconds, so it carries float rounding).
        for (what, ms) in [
            ("the wake record", record.took_ms),
            ("the event", event_ms),
            ("the log", log_ms),
            ("the histogram", histogram_ms),
        ] {
            assert!(
                (ms - status_ms).abs() < 0.01,
                "round {round}: {what} says {ms} ms, the status {status_ms} ms"
            );
        }
        seen.push((status_ms, client_ms));
    }
    // And it is the wake the client saw: from its SYN to the guest's SYN-ACK, give or take
    // what the daemon's own reading of the two frames adds or misses. A report padded by
    // anything after the guest's answer (a quiet moment, the handback, a socket close) is
    // off in every round, where scheduling noise is off in some.
    eprintln!("wake durations (vmnap ms, client ms): {seen:?}");
    let close = |(vmnap, client): &(f64, f64)| (vmnap - client).abs() <= 3.0_f64.max(client / 2.0);
    assert!(
        seen.iter().any(close),
        "vmnap's wake durations are not the client's (vmnap ms, client ms): {seen:?}"
    );
}
