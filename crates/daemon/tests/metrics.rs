//! The Prometheus text the daemon serves: exact encoding, label escaping, histogram buckets,
//! a parse by a Prometheus parser (and a strict one of the 0.0.4 grammar here), and which
//! series each event moves.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use vmnap_api::State;
use vmnap_core::{AnswerKind, DropReason, GuestState, IgnoreReason, Instant, Verdict, WakeCause};
use vmnap_daemon::metrics::{
    declared_families, encode, BridgeMetrics, DaemonMetrics, GuestMetrics, BUCKETS, CONTENT_TYPE,
    REPLAY_FAILED, STATES,
};

fn text(guests: &[(&str, &GuestMetrics)], bridges: &[(&str, &BridgeMetrics)]) -> String {
    let mut out = String::new();
    encode(&DaemonMetrics::default(), guests, bridges, &mut out);
    out
}

/// Label names and values, unescaped.
type Labels = Vec<(String, String)>;

/// One sample of the text: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `text` by the grammar of the text exposition format 0.0.4, strictly: every line is
/// a `# HELP`, a `# TYPE` or a sample; each family has one HELP and one TYPE, before its
/// samples, and its samples are together; label values use only the three escapes; a
/// histogram's buckets are cumulative and end in `+Inf`, equal to its `_count`. Returns the
/// families (name → type) in order and the samples.
fn parse_strict(text: &str) -> (Vec<(String, String)>, Vec<Sample>) {
    assert!(text.ends_with('\n'), "the text ends with a line feed");
    let mut families: Vec<(String, String)> = Vec::new();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a text");
            assert!(is_name(name), "{line}");
            assert!(!help.is_empty(), "{line}");
            let mut chars = help.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    assert!(matches!(chars.next(), Some('\\' | 'n')), "{line}");
                }
            }
            assert!(helped.insert(name.to_owned()), "a second HELP: {line}");
            assert!(
                families.iter().all(|(f, _)| f != name),
                "HELP after TYPE: {line}"
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            assert!(is_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(helped.contains(name), "TYPE without HELP: {line}");
            assert!(
                families.iter().all(|(f, _)| f != name),
                "a second TYPE: {line}"
            );
            families.push((name.to_owned(), kind.to_owned()));
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let sample = parse_sample(line);
            let (family, kind) = families.last().expect("a sample after a TYPE");
            let belongs = if kind == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| sample.name.strip_suffix(s) == Some(family))
            } else {
                &sample.name == family
            };
            assert!(belongs, "a sample outside its family: {line}");
            samples.push(sample);
        }
    }
    for (family, kind) in &families {
        if kind != "histogram" {
            continue;
        }
        let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for s in &samples {
            if s.name == format!("{family}_bucket") {
                let le = s.label("le").expect("a bucket has le");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le is a number")
                };
                let rest: Vec<_> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .cloned()
                    .collect();
                buckets.entry(rest).or_default().push((le, s.value));
            } else if s.name == format!("{family}_count") {
                counts.insert(s.labels.clone(), s.value);
            }
        }
        for (labels, b) in &buckets {
            assert!(
                b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family} {labels:?}"
            );
            let last = b.last().expect("buckets");
            assert_eq!(last.0, f64::INFINITY, "{family} ends in +Inf");
            assert_eq!(
                Some(&last.1),
                counts.get(labels),
                "{family}: +Inf is the count"
            );
        }
    }
    (families, samples)
}

fn parse_sample(line: &str) -> Sample {
    let end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..end];
    assert!(is_name(name), "{line}");
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            let (key, r) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
            assert!(is_name(key), "label name in {line}");
            let mut value = String::new();
            let mut chars = r.char_indices();
            let after = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line}"),
                    },
                    Some((i, '"')) => break &r[i + 1..],
                    Some((_, '\n')) => panic!("raw line feed in {line}"),
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line}"),
                }
            };
            labels.push((key.to_owned(), value));
            if let Some(r) = after.strip_prefix(',') {
                rest = r;
            } else {
                rest = after.strip_prefix('}').unwrap_or_else(|| panic!("{line}"));
                break;
            }
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{line}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Every series of the text, `name{labels}` as written, and its value.
fn series(text: &str) -> BTreeMap<String, f64> {
    parse_strict(text);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("a value");
            (key.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// The series that `change` moves, with how much, when it is applied to guest `web`; guest
/// `db` and bridge `br0` are there to show that nothing else moves.
fn moved(change: impl FnOnce(&mut GuestMetrics, &mut BridgeMetrics)) -> BTreeMap<String, f64> {
    let mut web = GuestMetrics::new();
    let db = GuestMetrics::new();
    let mut br0 = BridgeMetrics::default();
    let before = series(&text(&[("web", &web), ("db", &db)], &[("br0", &br0)]));
    change(&mut web, &mut br0);
    let after = series(&text(&[("web", &web), ("db", &db)], &[("br0", &br0)]));
    let mut out = BTreeMap::new();
    for (key, a) in &after {
        let b = before.get(key).copied().unwrap_or(0.0);
        if *a != b || !before.contains_key(key) {
            out.insert(key.clone(), a - b);
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        out.insert(key.clone(), f64::NAN);
    }
    out
}

fn expect(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The series of histogram `family` for guest `web` that one observation of `le`'s bucket
/// moves: its bucket and every one above, the sum and the count.
fn histogram_moves(family: &str, le: &str, seconds: f64) -> Vec<(String, f64)> {
    let les: Vec<&str> = BUCKETS.iter().map(|(_, le)| *le).chain(["+Inf"]).collect();
    let from = les.iter().position(|l| *l == le).expect("a bucket");
    let mut out: Vec<(String, f64)> = les[from..]
        .iter()
        .map(|l| (format!("{family}_bucket{{guest=\"web\",le=\"{l}\"}}"), 1.0))
        .collect();
    out.push((format!("{family}_sum{{guest=\"web\"}}"), seconds));
    out.push((format!("{family}_count{{guest=\"web\"}}"), 1.0));
    out
}

#[test]
fn one_guest_and_one_bridge_encode_exactly() {
    let mut g = GuestMetrics::new();
    g.set_state(State::Sleeping);
    g.on_asleep(Instant::from_millis(1_000));
    g.on_awake(Instant::from_millis(3_500));
    g.on_wake_started(WakeCause::TcpSyn { port: 22 });
    g.on_woke(
        WakeCause::TcpSyn { port: 22 },
        Duration::from_millis(300),
        Duration::from_micros(1_500),
    );
    g.on_wake_failed();
    g.on_verdict(Verdict::Answered(AnswerKind::Arp));
    g.on_verdict(Verdict::Answered(AnswerKind::Arp));
    g.on_verdict(Verdict::Queued);
    g.on_verdict(Verdict::Dropped(DropReason::BadChecksum));
    g.on_replayed(1, 0);
    g.set_queue_depth(3);
    let b = BridgeMetrics {
        ignored_frames: 7,
        malformed_frames: 1,
        transmit_errors: 0,
        capture_drops: 0,
        in_kernel_ports: 2,
    };
    let expected = r#"# HELP vmnap_guest_state Whether the guest is in this state (1) or not (0).
# TYPE vmnap_guest_state gauge
vmnap_guest_state{guest="web",state="awake"} 0
vmnap_guest_state{guest="web",state="falling-asleep"} 0
vmnap_guest_state{guest="web",state="sleeping"} 1
vmnap_guest_state{guest="web",state="waking"} 0
# HELP vmnap_guest_asleep_seconds_total Time the guest has spent asleep.
# TYPE vmnap_guest_asleep_seconds_total counter
vmnap_guest_asleep_seconds_total{guest="web"} 2.5
# HELP vmnap_guest_wakes_started_total Wakes begun, by what caused them.
# TYPE vmnap_guest_wakes_started_total counter
vmnap_guest_wakes_started_total{guest="web",cause="tcp-syn"} 1
vmnap_guest_wakes_started_total{guest="web",cause="udp"} 0
vmnap_guest_wakes_started_total{guest="web",cause="tcp-data"} 0
vmnap_guest_wakes_started_total{guest="web",cause="resolution"} 0
vmnap_guest_wakes_started_total{guest="web",cause="requested"} 0
vmnap_guest_wakes_started_total{guest="web",cause="in-flight"} 0
vmnap_guest_wakes_started_total{guest="web",cause="max-sleep"} 0
vmnap_guest_wakes_started_total{guest="web",cause="awake-window"} 0
# HELP vmnap_guest_wakes_total Wakes that succeeded, by what caused them.
# TYPE vmnap_guest_wakes_total counter
vmnap_guest_wakes_total{guest="web",cause="tcp-syn"} 1
vmnap_guest_wakes_total{guest="web",cause="udp"} 0
vmnap_guest_wakes_total{guest="web",cause="tcp-data"} 0
vmnap_guest_wakes_total{guest="web",cause="resolution"} 0
vmnap_guest_wakes_total{guest="web",cause="requested"} 0
vmnap_guest_wakes_total{guest="web",cause="in-flight"} 0
vmnap_guest_wakes_total{guest="web",cause="max-sleep"} 0
vmnap_guest_wakes_total{guest="web",cause="awake-window"} 0
# HELP vmnap_guest_wake_failures_total Resumes that failed (each retry counts).
# TYPE vmnap_guest_wake_failures_total counter
vmnap_guest_wake_failures_total{guest="web"} 1
# HELP vmnap_guest_answered_frames_total Frames the surrogate answered in the guest's name, by protocol.
# TYPE vmnap_guest_answered_frames_total counter
vmnap_guest_answered_frames_total{guest="web",protocol="arp"} 2
vmnap_guest_answered_frames_total{guest="web",protocol="ndp"} 0
vmnap_guest_answered_frames_total{guest="web",protocol="icmp-echo"} 0
vmnap_guest_answered_frames_total{guest="web",protocol="icmpv6-echo"} 0
vmnap_guest_answered_frames_total{guest="web",protocol="tcp-reset"} 0
vmnap_guest_answered_frames_total{guest="web",protocol="tcp-echo"} 0
vmnap_guest_answered_frames_total{guest="web",protocol="udp-echo"} 0
vmnap_guest_answered_frames_total{guest="web",protocol="tcp-keepalive"} 0
vmnap_guest_answered_frames_total{guest="web",protocol="health-check"} 0
vmnap_guest_answered_frames_total{guest="web",protocol="connection-reset"} 0
# HELP vmnap_guest_queued_frames_total Frames held for the guest while it slept.
# TYPE vmnap_guest_queued_frames_total counter
vmnap_guest_queued_frames_total{guest="web"} 1
# HELP vmnap_guest_replayed_frames_total Held frames replayed to the guest when it woke.
# TYPE vmnap_guest_replayed_frames_total counter
vmnap_guest_replayed_frames_total{guest="web"} 1
# HELP vmnap_guest_dropped_frames_total Frames for the guest that were dropped, by reason.
# TYPE vmnap_guest_dropped_frames_total counter
vmnap_guest_dropped_frames_total{guest="web",reason="malformed"} 0
vmnap_guest_dropped_frames_total{guest="web",reason="queue-full"} 0
vmnap_guest_dropped_frames_total{guest="web",reason="multicast-queue-full"} 0
vmnap_guest_dropped_frames_total{guest="web",reason="multicast-policy"} 0
vmnap_guest_dropped_frames_total{guest="web",reason="bad-checksum"} 1
vmnap_guest_dropped_frames_total{guest="web",reason="echo-refused"} 0
vmnap_guest_dropped_frames_total{guest="web",reason="health-refused"} 0
vmnap_guest_dropped_frames_total{guest="web",reason="unknown-connection"} 0
vmnap_guest_dropped_frames_total{guest="web",reason="orphan-fragment"} 0
vmnap_guest_dropped_frames_total{guest="web",reason="foreign-address"} 0
vmnap_guest_dropped_frames_total{guest="web",reason="hold-budget"} 0
vmnap_guest_dropped_frames_total{guest="web",reason="replay-failed"} 0
# HELP vmnap_guest_queue_frames Frames held for the guest now.
# TYPE vmnap_guest_queue_frames gauge
vmnap_guest_queue_frames{guest="web"} 3
# HELP vmnap_guest_wake_and_serve_seconds Time from the first wake-worthy frame to the guest's first frame back.
# TYPE vmnap_guest_wake_and_serve_seconds histogram
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.0001"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.00025"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.0005"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.001"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.0025"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.005"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.01"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.025"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.05"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.1"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.25"} 0
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="0.5"} 1
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="1"} 1
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="2.5"} 1
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="5"} 1
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="10"} 1
vmnap_guest_wake_and_serve_seconds_bucket{guest="web",le="+Inf"} 1
vmnap_guest_wake_and_serve_seconds_sum{guest="web"} 0.3
vmnap_guest_wake_and_serve_seconds_count{guest="web"} 1
# HELP vmnap_guest_resume_seconds Time the backend took to resume the guest.
# TYPE vmnap_guest_resume_seconds histogram
vmnap_guest_resume_seconds_bucket{guest="web",le="0.0001"} 0
vmnap_guest_resume_seconds_bucket{guest="web",le="0.00025"} 0
vmnap_guest_resume_seconds_bucket{guest="web",le="0.0005"} 0
vmnap_guest_resume_seconds_bucket{guest="web",le="0.001"} 0
vmnap_guest_resume_seconds_bucket{guest="web",le="0.0025"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="0.005"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="0.01"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="0.025"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="0.05"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="0.1"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="0.25"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="0.5"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="1"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="2.5"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="5"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="10"} 1
vmnap_guest_resume_seconds_bucket{guest="web",le="+Inf"} 1
vmnap_guest_resume_seconds_sum{guest="web"} 0.0015
vmnap_guest_resume_seconds_count{guest="web"} 1
# HELP vmnap_guest_memory_freed_bytes Host memory the guest's sleep gives back now (a save or a page-out; 0 awake).
# TYPE vmnap_guest_memory_freed_bytes gauge
vmnap_guest_memory_freed_bytes{guest="web"} 0
# HELP vmnap_guest_memory_back_bytes Host memory the guest's RAM holds again since its last wake from a page-out.
# TYPE vmnap_guest_memory_back_bytes gauge
vmnap_guest_memory_back_bytes{guest="web"} 0
# HELP vmnap_bridge_ignored_frames_total Frames on the bridge for no guest that vmnap stands in for.
# TYPE vmnap_bridge_ignored_frames_total counter
vmnap_bridge_ignored_frames_total{bridge="br0"} 7
# HELP vmnap_bridge_malformed_frames_total Frames on the bridge for no guest that could not be read.
# TYPE vmnap_bridge_malformed_frames_total counter
vmnap_bridge_malformed_frames_total{bridge="br0"} 1
# HELP vmnap_bridge_transmit_errors_total Answers the surrogate could not send.
# TYPE vmnap_bridge_transmit_errors_total counter
vmnap_bridge_transmit_errors_total{bridge="br0"} 0
# HELP vmnap_bridge_capture_drops_total Frames for the bridge's sleeping guests the kernel dropped before vmnap read them.
# TYPE vmnap_bridge_capture_drops_total counter
vmnap_bridge_capture_drops_total{bridge="br0"} 0
# HELP vmnap_bridge_in_kernel_ports The bridge's ports, besides vmnap's, where the kernel answers ARP and ping for sleeping guests as requests come in.
# TYPE vmnap_bridge_in_kernel_ports gauge
vmnap_bridge_in_kernel_ports{bridge="br0"} 2
# HELP vmnap_resumes_in_flight Guests the backends are resuming now.
# TYPE vmnap_resumes_in_flight gauge
vmnap_resumes_in_flight 0
# HELP vmnap_resumes_in_flight_max The most guests the backends resumed at once since the daemon started.
# TYPE vmnap_resumes_in_flight_max gauge
vmnap_resumes_in_flight_max 0
# HELP vmnap_resume_cap The most guests the backends resume at once ([wake] max_resuming).
# TYPE vmnap_resume_cap gauge
vmnap_resume_cap 0
# HELP vmnap_held_bytes Bytes of frames held for all sleeping guests now.
# TYPE vmnap_held_bytes gauge
vmnap_held_bytes 0
# HELP vmnap_held_limit_bytes The budget of bytes held for all sleeping guests ([surrogate] max_held_bytes).
# TYPE vmnap_held_limit_bytes gauge
vmnap_held_limit_bytes 0
# HELP vmnap_memory_freed_bytes Host memory all sleeping guests' sleeps give back now.
# TYPE vmnap_memory_freed_bytes gauge
vmnap_memory_freed_bytes 0
# HELP vmnap_memory_to_wake_bytes Host memory that waking every sleeping guest would take back (a save's all, a page-out's what its last wake took).
# TYPE vmnap_memory_to_wake_bytes gauge
vmnap_memory_to_wake_bytes 0
"#;
    assert_eq!(text(&[("web", &g)], &[("br0", &b)]), expected);
}

#[test]
fn the_content_type_is_the_text_format_0_0_4() {
    // The library's constant: a new version of it must not change what scrapers are told.
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
}

#[test]
fn with_no_guest_and_no_bridge_every_family_is_declared_and_only_the_daemons_are_written() {
    let out = text(&[], &[]);
    let (families, samples) = parse_strict(&out);
    let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "vmnap_resumes_in_flight",
            "vmnap_resumes_in_flight_max",
            "vmnap_resume_cap",
            "vmnap_held_bytes",
            "vmnap_held_limit_bytes",
            "vmnap_memory_freed_bytes",
            "vmnap_memory_to_wake_bytes"
        ],
        "{out}"
    );
    let names: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, declared_families());
    assert_eq!(out.lines().count(), 2 * declared_families().len() + 7);
}

#[test]
fn the_hosts_memory_is_the_sum_of_the_guests() {
    let mut a = GuestMetrics::new();
    a.set_memory(100, 0, 30);
    let mut b = GuestMetrics::new();
    b.set_memory(50, 7, 0);
    let mut out = String::new();
    encode(
        &DaemonMetrics::default(),
        &[("a", &a), ("b", &b)],
        &[],
        &mut out,
    );
    for line in [
        "vmnap_guest_memory_freed_bytes{guest=\"a\"} 100\n",
        "vmnap_guest_memory_back_bytes{guest=\"b\"} 7\n",
        "vmnap_memory_freed_bytes 150\n",
        "vmnap_memory_to_wake_bytes 30\n",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
}

#[test]
fn the_daemons_resume_figures_are_written_as_given() {
    let mut out = String::new();
    let daemon = DaemonMetrics {
        resumes_in_flight: 3,
        resumes_in_flight_max: 10,
        resume_cap: 10,
        held_bytes: 1500,
        held_bytes_limit: 1 << 20,
    };
    encode(&daemon, &[], &[], &mut out);
    for line in [
        "vmnap_resumes_in_flight 3\n",
        "vmnap_resumes_in_flight_max 10\n",
        "vmnap_resume_cap 10\n",
        "vmnap_held_bytes 1500\n",
        "vmnap_held_limit_bytes 1048576\n",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
}

#[test]
fn declared_families_are_prefixed_and_end_in_a_unit_or_total() {
    let out = text(&[], &[]);
    let (families, _) = parse_strict(&out);
    for (name, kind) in families {
        assert!(name.starts_with("vmnap_"), "{name}");
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "{name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
            // Gauges of a count or a state: no unit, and never `_total`.
            "gauge" => assert!(!name.ends_with("_total"), "{name}"),
            other => panic!("{name} is a {other}"),
        }
    }
}

#[test]
fn guest_name_with_quote_backslash_and_newline_is_escaped() {
    let name = "we\"b\\1\nx";
    let g = GuestMetrics::new();
    let b = BridgeMetrics::default();
    let out = text(&[(name, &g)], &[("br\"0", &b)]);
    assert!(
        out.contains("vmnap_guest_queue_frames{guest=\"we\\\"b\\\\1\\nx\"} 0\n"),
        "{out}"
    );
    assert!(
        out.contains("vmnap_bridge_transmit_errors_total{bridge=\"br\\\"0\"} 0\n"),
        "{out}"
    );
    // No raw line feed got in: as many lines as for a plain name.
    let plain = text(&[("web", &g)], &[("br0", &b)]);
    assert_eq!(out.lines().count(), plain.lines().count());
    let (_, samples) = parse_strict(&out);
    for s in samples.iter().filter(|s| !s.labels.is_empty()) {
        let label = s.label("guest").or(s.label("bridge"));
        assert!(
            label == Some(name) || label == Some("br\"0"),
            "{s:?} did not read back"
        );
    }
}

#[test]
fn histogram_buckets_are_inclusive_cumulative_and_end_in_inf() {
    let mut g = GuestMetrics::new();
    for micros in [0, 100, 101, 1_000_000, 10_000_000, 10_000_001] {
        let d = Duration::from_micros(micros);
        g.on_woke(WakeCause::Requested, d, d);
    }
    let h = g.resume();
    assert_eq!(h.count(), 6);
    assert_eq!(h.sum(), Duration::from_micros(21_000_202));
    // 0 and 100 µs in the first bucket (le is inclusive), 101 µs in the second, 1 s in
    // "1", 10 s in "10", 10.000001 s only in +Inf.
    let mut expected = [0; BUCKETS.len() + 1];
    for (i, (bound, _)) in BUCKETS.iter().enumerate() {
        expected[i] = [0u64, 100, 101, 1_000_000, 10_000_000, 10_000_001]
            .iter()
            .filter(|m| Duration::from_micros(**m) <= *bound)
            .count() as u64;
    }
    expected[BUCKETS.len()] = 6;
    assert_eq!(h.cumulative(), expected);
    assert_eq!(&expected[..4], &[2, 3, 3, 3]);
    assert_eq!(expected[BUCKETS.len() - 4], 4, "le=1");
    assert_eq!(expected[BUCKETS.len() - 1], 5, "le=10");

    let out = text(&[("web", &g)], &[]);
    for family in [
        "vmnap_guest_resume_seconds",
        "vmnap_guest_wake_and_serve_seconds",
    ] {
        for line in [
            format!("{family}_bucket{{guest=\"web\",le=\"0.0001\"}} 2\n"),
            format!("{family}_bucket{{guest=\"web\",le=\"0.00025\"}} 3\n"),
            format!("{family}_bucket{{guest=\"web\",le=\"1\"}} 4\n"),
            format!("{family}_bucket{{guest=\"web\",le=\"10\"}} 5\n"),
            format!("{family}_bucket{{guest=\"web\",le=\"+Inf\"}} 6\n"),
            format!("{family}_sum{{guest=\"web\"}} 21.000202\n"),
            format!("{family}_count{{guest=\"web\"}} 6\n"),
        ] {
            assert!(out.contains(&line), "{line} not in\n{out}");
        }
    }
}

/// Guests and a bridge with some of everything.
fn busy() -> (Vec<(String, GuestMetrics)>, BridgeMetrics) {
    let mut guests = Vec::new();
    for (i, name) in ["web", "db", "ci-runner-3"].into_iter().enumerate() {
        let mut g = GuestMetrics::new();
        let t0 = Instant::from_millis(1_000 * i as u64);
        g.on_asleep(t0);
        g.on_verdict(Verdict::Answered(AnswerKind::IcmpEcho));
        g.on_verdict(Verdict::Queued);
        g.on_verdict(Verdict::Dropped(DropReason::QueueFull));
        g.on_wake_started(WakeCause::Udp { port: 53 });
        g.on_wake_failed();
        g.on_woke(
            WakeCause::Udp { port: 53 },
            Duration::from_millis(40 * (i as u64 + 1)),
            Duration::from_millis(3),
        );
        g.on_replayed(1, u64::from(i == 2));
        g.on_awake(t0 + Duration::from_secs(90));
        g.set_state(STATES[i]);
        g.set_queue_depth(i);
        guests.push((name.to_owned(), g));
    }
    let bridge = BridgeMetrics {
        ignored_frames: 12,
        malformed_frames: 2,
        transmit_errors: 1,
        capture_drops: 3,
        in_kernel_ports: 4,
    };
    (guests, bridge)
}

#[test]
fn text_parses_with_a_prometheus_parser_and_has_every_declared_family() {
    let (guests, bridge) = busy();
    let refs: Vec<(&str, &GuestMetrics)> = guests.iter().map(|(n, g)| (n.as_str(), g)).collect();
    let other = BridgeMetrics::default();
    let out = text(&refs, &[("br0", &bridge), ("br1", &other)]);

    let (families, strict) = parse_strict(&out);
    let names: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, declared_families());

    let scrape = prometheus_parse::Scrape::parse(out.lines().map(|l| Ok(l.to_owned())))
        .expect("the text parses");
    for family in declared_families() {
        assert!(scrape.docs.contains_key(&family), "no HELP for {family}");
        let present = scrape.samples.iter().any(|s| s.metric == family);
        assert!(present, "no sample of {family}");
    }
    // What the parser read agrees with the strict reading, value for value.
    for s in strict.iter().filter(|s| {
        !["_bucket", "_sum", "_count"]
            .iter()
            .any(|x| s.name.ends_with(x))
    }) {
        let found = scrape.samples.iter().find(|p| {
            p.metric == s.name
                && s.labels
                    .iter()
                    .all(|(k, v)| p.labels.get(k) == Some(v.as_str()))
        });
        let value = match found.map(|p| &p.value) {
            Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v)) => *v,
            other => panic!("{s:?} read as {other:?}"),
        };
        assert_eq!(value, s.value, "{s:?}");
    }
    let resume = scrape
        .samples
        .iter()
        .find(|p| p.metric == "vmnap_guest_resume_seconds" && p.labels.get("guest") == Some("db"));
    match resume.map(|p| &p.value) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            assert_eq!(buckets.len(), BUCKETS.len() + 1);
            let le_5ms = buckets
                .iter()
                .find(|b| b.less_than == 0.005)
                .expect("le 0.005");
            assert_eq!(le_5ms.count, 1.0);
        }
        other => panic!("resume histogram read as {other:?}"),
    }
}

#[test]
fn every_declared_family_moves() {
    let moved = moved(|g, b| {
        g.set_state(State::Sleeping);
        g.on_asleep(Instant::from_millis(0));
        g.on_awake(Instant::from_millis(10));
        g.on_wake_started(WakeCause::Requested);
        g.on_woke(
            WakeCause::Requested,
            Duration::from_millis(1),
            Duration::from_millis(1),
        );
        g.on_wake_failed();
        g.on_verdict(Verdict::Answered(AnswerKind::Ndp));
        g.on_verdict(Verdict::Queued);
        g.on_verdict(Verdict::Dropped(DropReason::Malformed));
        g.on_replayed(1, 1);
        g.set_queue_depth(1);
        g.set_memory(1, 2, 3);
        b.on_verdict(Verdict::Ignored(IgnoreReason::NotForSleepingGuest));
        b.on_verdict(Verdict::Dropped(DropReason::Malformed));
        b.on_transmit_error();
        b.capture_drops += 1;
        b.in_kernel_ports += 1;
    });
    // The daemon's own figures are not moved by events: they are read off its resume cap
    // and its hold budget (`the_daemons_resume_figures_are_written_as_given`), or summed
    // over the guests (`the_hosts_memory_is_the_sum_of_the_guests`).
    for family in declared_families().into_iter().filter(|f| {
        !f.starts_with("vmnap_resume")
            && !f.starts_with("vmnap_held")
            && !f.starts_with("vmnap_memory_")
    }) {
        let hit = moved.keys().any(|k| {
            let name = &k[..k.find('{').expect("labels")];
            name == family
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family.as_str()))
        });
        assert!(hit, "{family} never moved");
    }
}

#[test]
fn answered_verdict_moves_its_protocol_only() {
    let m = moved(|g, _| g.on_verdict(Verdict::Answered(AnswerKind::TcpKeepalive)));
    assert_eq!(
        m,
        expect(&[(
            "vmnap_guest_answered_frames_total{guest=\"web\",protocol=\"tcp-keepalive\"}",
            1.0
        )])
    );
}

#[test]
fn queued_verdict_moves_queued() {
    let m = moved(|g, _| g.on_verdict(Verdict::Queued));
    assert_eq!(
        m,
        expect(&[("vmnap_guest_queued_frames_total{guest=\"web\"}", 1.0)])
    );
}

#[test]
fn dropped_verdict_moves_its_reason_only() {
    let m = moved(|g, _| {
        g.on_verdict(Verdict::Dropped(DropReason::MulticastPolicy));
        g.on_verdict(Verdict::Dropped(DropReason::MulticastPolicy));
    });
    assert_eq!(
        m,
        expect(&[(
            "vmnap_guest_dropped_frames_total{guest=\"web\",reason=\"multicast-policy\"}",
            2.0
        )])
    );
}

#[test]
fn ignored_verdict_moves_nothing_of_the_guest() {
    let m = moved(|g, _| g.on_verdict(Verdict::Ignored(IgnoreReason::GuestReceivesDirectly)));
    assert!(m.is_empty(), "{m:?}");
}

#[test]
fn wake_started_moves_its_cause_only() {
    let m = moved(|g, _| g.on_wake_started(WakeCause::TcpData { port: 443 }));
    assert_eq!(
        m,
        expect(&[(
            "vmnap_guest_wakes_started_total{guest=\"web\",cause=\"tcp-data\"}",
            1.0
        )])
    );
}

#[test]
fn woke_moves_its_cause_and_both_histograms() {
    let m = moved(|g, _| {
        g.on_woke(
            WakeCause::Resolution,
            Duration::from_millis(20),
            Duration::from_micros(400),
        )
    });
    let mut want = vec![(
        "vmnap_guest_wakes_total{guest=\"web\",cause=\"resolution\"}".to_owned(),
        1.0,
    )];
    want.extend(histogram_moves(
        "vmnap_guest_wake_and_serve_seconds",
        "0.025",
        0.02,
    ));
    want.extend(histogram_moves(
        "vmnap_guest_resume_seconds",
        "0.0005",
        0.0004,
    ));
    assert_eq!(m, want.into_iter().collect());
}

#[test]
fn wake_failed_moves_failures() {
    let m = moved(|g, _| g.on_wake_failed());
    assert_eq!(
        m,
        expect(&[("vmnap_guest_wake_failures_total{guest=\"web\"}", 1.0)])
    );
}

#[test]
fn replayed_moves_replayed_and_replay_failures_as_drops() {
    let m = moved(|g, _| g.on_replayed(5, 2));
    assert_eq!(
        m,
        expect(&[
            ("vmnap_guest_replayed_frames_total{guest=\"web\"}", 5.0),
            (
                &format!(
                    "vmnap_guest_dropped_frames_total{{guest=\"web\",reason=\"{REPLAY_FAILED}\"}}"
                ),
                2.0
            ),
        ])
    );
}

#[test]
fn time_asleep_counts_from_asleep_to_awake() {
    let m = moved(|g, _| {
        g.on_asleep(Instant::from_millis(1_000));
        // A second report of the same sleep does not restart it.
        g.on_asleep(Instant::from_millis(2_000));
        g.on_awake(Instant::from_millis(4_250));
        // Awake again without a sleep: nothing to add.
        g.on_awake(Instant::from_millis(9_000));
    });
    assert_eq!(
        m,
        expect(&[("vmnap_guest_asleep_seconds_total{guest=\"web\"}", 3.25)])
    );
}

#[test]
fn time_asleep_shows_a_sleep_in_progress_once() {
    let mut g = GuestMetrics::new();
    g.on_asleep(Instant::from_millis(0));
    g.count_asleep_until(Instant::from_millis(1_500));
    assert_eq!(g.asleep(), Duration::from_millis(1_500));
    g.count_asleep_until(Instant::from_millis(2_000));
    assert_eq!(g.asleep(), Duration::from_millis(2_000));
    g.on_awake(Instant::from_millis(3_000));
    assert_eq!(g.asleep(), Duration::from_millis(3_000));
    // Awake: counting up to a later time adds nothing.
    g.count_asleep_until(Instant::from_millis(10_000));
    assert_eq!(g.asleep(), Duration::from_millis(3_000));
    let out = text(&[("web", &g)], &[]);
    // Seconds are a float: a whole number of them is written `3.0`.
    assert!(
        out.contains("vmnap_guest_asleep_seconds_total{guest=\"web\"} 3.0\n"),
        "{out}"
    );
}

#[test]
fn queue_depth_is_a_gauge_that_goes_both_ways() {
    let m = moved(|g, _| g.set_queue_depth(9));
    assert_eq!(
        m,
        expect(&[("vmnap_guest_queue_frames{guest=\"web\"}", 9.0)])
    );
    let m = moved(|g, _| {
        g.set_queue_depth(9);
        g.set_queue_depth(0);
    });
    assert!(m.is_empty(), "{m:?}");
}

#[test]
fn state_moves_the_one_from_and_the_one_to() {
    let m = moved(|g, _| g.set_state(State::Waking));
    assert_eq!(
        m,
        expect(&[
            ("vmnap_guest_state{guest=\"web\",state=\"awake\"}", -1.0),
            ("vmnap_guest_state{guest=\"web\",state=\"waking\"}", 1.0),
        ])
    );
}

#[test]
fn states_are_the_core_lifecycle_names() {
    let core = [
        GuestState::Awake,
        GuestState::FallingAsleep,
        GuestState::Sleeping,
        GuestState::Waking { port_up: false },
    ]
    .map(GuestState::as_str);
    assert_eq!(STATES.map(State::as_str), core);
    assert_eq!(GuestMetrics::new().state(), State::Awake);
}

#[test]
fn bridge_verdicts_and_transmit_errors_move_the_bridge_series() {
    let m = moved(|_, b| {
        b.on_verdict(Verdict::Ignored(IgnoreReason::OwnFrame));
        b.on_verdict(Verdict::Dropped(DropReason::Malformed));
        b.on_transmit_error();
    });
    assert_eq!(
        m,
        expect(&[
            ("vmnap_bridge_ignored_frames_total{bridge=\"br0\"}", 1.0),
            ("vmnap_bridge_malformed_frames_total{bridge=\"br0\"}", 1.0),
            ("vmnap_bridge_transmit_errors_total{bridge=\"br0\"}", 1.0),
        ])
    );
}

#[test]
fn getters_agree_with_the_text() {
    let (guests, _) = busy();
    let (_, web) = &guests[0];
    assert_eq!(web.total_wakes(), 1);
    assert_eq!(web.wakes(WakeCause::Udp { port: 1 }), 1);
    assert_eq!(web.wakes_started(WakeCause::Udp { port: 1 }), 1);
    assert_eq!(web.wake_failures(), 1);
    assert_eq!(web.answered(AnswerKind::IcmpEcho), 1);
    assert_eq!(web.total_answered(), 1);
    assert_eq!(web.queued(), 1);
    assert_eq!(web.replayed(), 1);
    assert_eq!(web.dropped(DropReason::QueueFull), 1);
    assert_eq!(guests[2].1.total_dropped(), 2, "a replay failure is a drop");
    assert_eq!(web.asleep(), Duration::from_secs(90));
    assert_eq!(web.queue_depth(), 0);
    assert_eq!(web.wake_and_serve().count(), 1);
}
