//! The idleness policy in virtual time: a simulated guest whose counters the test drives, sampled
//! on a fixed interval, and the tracker's decisions.

use std::time::Duration;

use proptest::prelude::*;
use vmnap_core::idle::{BusyReason, Decision, IdlePolicy, IdleTracker, Sample};
use vmnap_core::{Instant, PortRule, Transport};

const INTERVAL: Duration = Duration::from_secs(5);
const IDLE_AFTER: Duration = Duration::from_secs(60);
/// What an idle TCG guest burns (measured on the project's machines): about 0.7 % of one core.
const IDLE_CPU_PER_INTERVAL: Duration = Duration::from_millis(35);

fn ssh() -> PortRule {
    PortRule {
        transport: Transport::Tcp,
        port: 22,
    }
}

fn policy() -> IdlePolicy {
    IdlePolicy {
        cpu_percent: 2.0,
        idle_after: IDLE_AFTER,
        min_awake: Duration::ZERO,
        keep_awake_while_connected: vec![ssh()],
    }
}

fn secs(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

/// A guest's counters, moved forward by the test, and a tracker sampling them.
struct Guest {
    tracker: IdleTracker,
    at: Instant,
    cpu_time: Duration,
    rx_frames: u64,
    tx_frames: u64,
    open_connections: Vec<PortRule>,
}

impl Guest {
    fn new() -> Self {
        Self::with_policy(policy())
    }

    fn with_policy(policy: IdlePolicy) -> Self {
        Self {
            tracker: IdleTracker::new(policy),
            at: Instant::ZERO,
            cpu_time: Duration::from_secs(100),
            rx_frames: 1000,
            tx_frames: 1000,
            open_connections: Vec::new(),
        }
    }

    fn sample(&mut self) -> Decision {
        self.tracker.sample(Sample {
            at: self.at,
            cpu_time: self.cpu_time,
            rx_frames: self.rx_frames,
            tx_frames: self.tx_frames,
            open_connections: self.open_connections.clone(),
        })
    }

    /// One interval of `interval` in which the guest uses `cpu` and receives `rx` frames, then
    /// a sample.
    fn step_by(&mut self, interval: Duration, cpu: Duration, rx: u64) -> Decision {
        self.at = self.at + interval;
        self.cpu_time += cpu;
        self.rx_frames += rx;
        self.sample()
    }

    /// One ordinary idle interval.
    fn idle_step(&mut self) -> Decision {
        self.step_by(INTERVAL, IDLE_CPU_PER_INTERVAL, 0)
    }

    /// Idle intervals until a `Sleep` (returning when it came) or until `limit`.
    fn run_idle_until_sleep(&mut self, limit: Instant) -> Option<Instant> {
        while self.at < limit {
            if let Decision::Sleep { .. } = self.idle_step() {
                return Some(self.at);
            }
        }
        None
    }
}

fn is_sleep(d: &Decision) -> bool {
    matches!(d, Decision::Sleep { .. })
}

#[test]
fn first_sample_only_sets_the_baseline_and_reports_idle_for_zero() {
    let mut g = Guest::new();
    assert_eq!(
        g.sample(),
        Decision::Idle {
            idle_for: Duration::ZERO,
            sleep_in: IDLE_AFTER
        }
    );
}

#[test]
fn idle_guest_sleeps_exactly_idle_after_its_first_sample() {
    let mut g = Guest::new();
    g.sample();
    for n in 1..12 {
        assert_eq!(
            g.idle_step(),
            Decision::Idle {
                idle_for: INTERVAL * n,
                sleep_in: IDLE_AFTER - INTERVAL * n
            },
            "after {n} intervals"
        );
    }
    let Decision::Sleep { figures } = g.idle_step() else {
        panic!("no sleep after idle_after");
    };
    assert_eq!(g.at, secs(60));
    assert_eq!(figures.idle_for, IDLE_AFTER);
    assert_eq!(figures.intervals, 12);
    assert_eq!(figures.measured, IDLE_AFTER);
    assert!((figures.cpu_percent - 0.7).abs() < 1e-9, "{figures:?}");
    assert!((figures.peak_cpu_percent - 0.7).abs() < 1e-9, "{figures:?}");
    assert_eq!(figures.rx_frames, 0);
}

#[test]
fn idle_guest_with_interval_not_dividing_idle_after_sleeps_within_one_interval_after_it() {
    let interval = Duration::from_secs(7);
    let mut g = Guest::new();
    g.sample();
    let slept = loop {
        let d = g.step_by(interval, Duration::from_millis(10), 0);
        if is_sleep(&d) {
            break g.at;
        }
        assert!(g.at < secs(120), "never slept");
    };
    // 60 s is not a multiple of 7 s: the first sample at or after it is at 63 s.
    assert_eq!(slept, secs(63));
    assert!(slept.saturating_since(Instant::ZERO) < IDLE_AFTER + interval);
}

#[test]
fn sleep_is_decided_once_and_later_samples_are_ignored_until_reset() {
    let mut g = Guest::new();
    g.sample();
    assert_eq!(g.run_idle_until_sleep(secs(600)), Some(secs(60)));
    for _ in 0..5 {
        assert_eq!(g.idle_step(), Decision::AlreadyDecided { at: secs(60) });
    }
    assert_eq!(g.tracker.sleep_due(), None);
}

#[test]
fn woken_guest_is_rebaselined_and_sleeps_again_idle_after_the_reset() {
    let mut g = Guest::new();
    g.sample();
    g.run_idle_until_sleep(secs(600));
    // Asleep for ten minutes, then woken at 670 s.
    g.at = secs(670);
    g.tracker.reset(g.at);
    g.at = secs(672);
    assert_eq!(
        g.sample(),
        Decision::Idle {
            idle_for: Duration::from_secs(2),
            sleep_in: Duration::from_secs(58)
        }
    );
    assert_eq!(g.tracker.sleep_due(), Some(secs(730)));
    // 672 + 12 * 5 = 732: the first sample at or after 730.
    assert_eq!(g.run_idle_until_sleep(secs(2000)), Some(secs(732)));
}

#[test]
fn after_a_wake_min_awake_holds_an_idle_guest_awake_and_not_before_any_wake() {
    let mut g = Guest::with_policy(IdlePolicy {
        min_awake: Duration::from_secs(300),
        ..policy()
    });
    // Never woken (as at the daemon's start): min_awake does not apply.
    g.sample();
    assert_eq!(g.run_idle_until_sleep(secs(600)), Some(secs(60)));
    // Woken at 100 s: idle from then on, but not told to sleep before 400 s.
    g.at = secs(100);
    g.tracker.reset(g.at);
    g.at = secs(102);
    assert_eq!(
        g.sample(),
        Decision::Idle {
            idle_for: Duration::from_secs(2),
            sleep_in: Duration::from_secs(298)
        }
    );
    assert_eq!(g.tracker.sleep_due(), Some(secs(400)));
    g.at = secs(197);
    assert_eq!(
        g.idle_step(),
        Decision::Idle {
            idle_for: Duration::from_secs(102),
            sleep_in: Duration::from_secs(198)
        }
    );
    // 202 + 40 * 5 = 402: the first sample at or after 400.
    assert_eq!(g.run_idle_until_sleep(secs(2000)), Some(secs(402)));
    // A tracker made for a new policy keeps counting from the same wake.
    let mut fresh = IdleTracker::new(IdlePolicy {
        min_awake: Duration::from_secs(300),
        ..policy()
    });
    fresh.reset(secs(500));
    let mut renewed = IdleTracker::new(IdlePolicy {
        min_awake: Duration::from_secs(600),
        ..policy()
    });
    renewed.reset(secs(700));
    renewed.awake_since_as(&fresh);
    assert_eq!(renewed.sleep_due(), Some(secs(1100)));
}

#[test]
fn an_awake_window_holds_an_idle_guest_and_its_end_restarts_the_idle_clock() {
    let mut g = Guest::new();
    g.sample();
    g.tracker.hold(true, g.at);
    while g.at < secs(600) {
        assert_eq!(
            g.idle_step(),
            Decision::Busy {
                reason: BusyReason::Window
            }
        );
    }
    assert_eq!(BusyReason::Window.to_string(), "in an awake window");
    // The window ends at 600 s: asleep idle_after later, not at once.
    g.tracker.hold(false, g.at);
    assert_eq!(g.run_idle_until_sleep(secs(2000)), Some(secs(660)));
}

#[test]
fn first_sample_after_reset_never_sleeps_even_if_idle_after_has_passed() {
    let mut g = Guest::new();
    g.tracker.reset(Instant::ZERO);
    g.at = secs(3600);
    assert!(matches!(g.sample(), Decision::Idle { .. }));
    assert!(is_sleep(&g.idle_step()));
}

#[test]
fn guest_with_steady_traffic_never_sleeps() {
    let mut g = Guest::new();
    g.sample();
    while g.at < secs(3600) {
        let d = g.step_by(INTERVAL, IDLE_CPU_PER_INTERVAL, 1);
        assert_eq!(
            d,
            Decision::Busy {
                reason: BusyReason::Traffic { frames: 1 }
            }
        );
    }
    assert_eq!(g.tracker.idle_for(g.at), Duration::ZERO);
}

#[test]
fn guest_above_cpu_threshold_never_sleeps() {
    let mut g = Guest::new();
    g.sample();
    while g.at < secs(3600) {
        // 150 ms in 5 s: 3 % of one core.
        let d = g.step_by(INTERVAL, Duration::from_millis(150), 0);
        let Decision::Busy {
            reason: BusyReason::Cpu { percent },
        } = d
        else {
            panic!("not busy on CPU: {d:?}");
        };
        assert!((percent - 3.0).abs() < 1e-9);
    }
}

#[test]
fn guest_exactly_at_cpu_threshold_is_busy() {
    let mut g = Guest::new();
    g.sample();
    // 100 ms in 5 s: 2 %, not under 2 %.
    let d = g.step_by(INTERVAL, Duration::from_millis(100), 0);
    assert!(
        matches!(
            d,
            Decision::Busy {
                reason: BusyReason::Cpu { .. }
            }
        ),
        "{d:?}"
    );
}

#[test]
fn guest_receiving_only_answerable_frames_sleeps_on_time() {
    let mut g = Guest::new();
    g.sample();
    let mut slept = None;
    while g.at < secs(600) {
        // Two ARP requests and a ping each interval, all of which the surrogate classified
        // as answerable; the guest answers them itself (tx), which does not count either.
        g.tracker.observe_answerable(3);
        g.tx_frames += 3;
        if let Decision::Sleep { figures } = g.step_by(INTERVAL, IDLE_CPU_PER_INTERVAL, 3) {
            assert_eq!(figures.rx_frames, 36);
            assert_eq!(figures.answerable_rx_frames, 36);
            assert_eq!(figures.tx_frames, 36);
            slept = Some(g.at);
            break;
        }
    }
    assert_eq!(slept, Some(secs(60)));
}

#[test]
fn real_frames_beside_answerable_ones_keep_guest_awake() {
    let mut g = Guest::new();
    g.sample();
    g.tracker.observe_answerable(3);
    assert_eq!(
        g.step_by(INTERVAL, IDLE_CPU_PER_INTERVAL, 5),
        Decision::Busy {
            reason: BusyReason::Traffic { frames: 2 }
        }
    );
}

#[test]
fn answerable_frame_counted_before_the_guest_counter_shows_it_still_sleeps() {
    let mut g = Guest::new();
    g.sample();
    for _ in 0..3 {
        g.idle_step();
    }
    // The surrogate counts an ARP request just before the sample at 20 s; the guest's counter
    // shows it only in the next interval.
    g.tracker.observe_answerable(1);
    assert!(matches!(g.idle_step(), Decision::Idle { .. }));
    assert!(matches!(
        g.step_by(INTERVAL, IDLE_CPU_PER_INTERVAL, 1),
        Decision::Idle { .. }
    ));
    assert_eq!(g.run_idle_until_sleep(secs(600)), Some(secs(60)));
}

#[test]
fn unmatched_answerable_frames_expire_after_one_interval_and_do_not_hide_later_traffic() {
    let mut g = Guest::new();
    g.sample();
    // 100 answerable frames the guest's counter never showed (say, they were dropped).
    g.tracker.observe_answerable(100);
    assert!(matches!(g.idle_step(), Decision::Idle { .. }));
    assert!(matches!(g.idle_step(), Decision::Idle { .. }));
    assert_eq!(
        g.step_by(INTERVAL, IDLE_CPU_PER_INTERVAL, 1),
        Decision::Busy {
            reason: BusyReason::Traffic { frames: 1 }
        }
    );
}

#[test]
fn burst_of_traffic_restarts_the_idle_clock() {
    let mut g = Guest::new();
    g.sample();
    for _ in 0..10 {
        g.idle_step();
    }
    g.step_by(INTERVAL, IDLE_CPU_PER_INTERVAL, 40);
    assert_eq!(g.at, secs(55));
    assert_eq!(g.tracker.idle_for(secs(57)), Duration::from_secs(2));
    assert_eq!(g.tracker.sleep_due(), Some(secs(115)));
    assert_eq!(g.run_idle_until_sleep(secs(600)), Some(secs(115)));
}

#[test]
fn pinned_guest_never_sleeps_and_reports_no_idle_time() {
    let mut g = Guest::new();
    g.tracker.pin();
    assert!(g.tracker.is_pinned());
    assert_eq!(
        g.sample(),
        Decision::Busy {
            reason: BusyReason::Pinned
        }
    );
    while g.at < secs(3600) {
        assert_eq!(
            g.idle_step(),
            Decision::Busy {
                reason: BusyReason::Pinned
            }
        );
    }
    assert_eq!(g.tracker.idle_for(g.at), Duration::ZERO);
    assert_eq!(g.tracker.sleep_due(), None);
}

#[test]
fn unpinned_guest_sleeps_idle_after_the_unpin() {
    let mut g = Guest::new();
    g.tracker.pin();
    g.sample();
    while g.at < secs(600) {
        g.idle_step();
    }
    g.tracker.unpin(secs(602));
    assert!(!g.tracker.is_pinned());
    assert_eq!(g.tracker.sleep_due(), Some(secs(662)));
    // Samples at 605, ..., 660 are not yet 60 s after the unpin; 665 is.
    assert_eq!(g.run_idle_until_sleep(secs(2000)), Some(secs(665)));
}

#[test]
fn unpin_of_a_guest_that_is_not_pinned_does_not_restart_the_idle_clock() {
    let mut g = Guest::new();
    g.sample();
    for _ in 0..6 {
        g.idle_step();
    }
    g.tracker.unpin(g.at);
    assert_eq!(g.run_idle_until_sleep(secs(600)), Some(secs(60)));
}

#[test]
fn open_connection_on_keep_awake_port_keeps_guest_awake() {
    let mut g = Guest::new();
    g.open_connections = vec![ssh()];
    g.sample();
    while g.at < secs(3600) {
        assert_eq!(
            g.idle_step(),
            Decision::Busy {
                reason: BusyReason::Connection(ssh())
            }
        );
    }
}

#[test]
fn open_connection_on_another_port_does_not_keep_guest_awake() {
    let mut g = Guest::new();
    g.open_connections = vec![
        PortRule {
            transport: Transport::Tcp,
            port: 80,
        },
        PortRule {
            transport: Transport::Udp,
            port: 22,
        },
    ];
    g.sample();
    assert_eq!(g.run_idle_until_sleep(secs(600)), Some(secs(60)));
}

#[test]
fn guest_sleeps_idle_after_its_keep_awake_connection_closed() {
    let mut g = Guest::new();
    g.open_connections = vec![ssh()];
    g.sample();
    while g.at < secs(300) {
        g.idle_step();
    }
    g.open_connections.clear();
    // The last sample with the connection was at 300 s.
    assert_eq!(g.run_idle_until_sleep(secs(2000)), Some(secs(360)));
}

#[test]
fn cpu_counter_going_back_is_a_reset_not_a_huge_delta() {
    let mut g = Guest::new();
    g.sample();
    for _ in 0..6 {
        g.idle_step();
    }
    // Restarted from a managed save behind the tracker's back: every counter starts again.
    g.cpu_time = Duration::from_millis(3);
    g.rx_frames = 0;
    g.tx_frames = 0;
    assert_eq!(
        g.idle_step(),
        Decision::Busy {
            reason: BusyReason::CountersReset
        }
    );
    // The new counters are the baseline: the next interval is measured from them.
    assert_eq!(
        g.idle_step(),
        Decision::Idle {
            idle_for: INTERVAL,
            sleep_in: IDLE_AFTER - INTERVAL
        }
    );
    assert_eq!(g.run_idle_until_sleep(secs(600)), Some(secs(95)));
}

#[test]
fn rx_counter_alone_going_back_is_a_reset() {
    let mut g = Guest::new();
    g.sample();
    g.rx_frames = 5;
    assert_eq!(
        g.idle_step(),
        Decision::Busy {
            reason: BusyReason::CountersReset
        }
    );
    g.tx_frames = 0;
    assert_eq!(
        g.idle_step(),
        Decision::Busy {
            reason: BusyReason::CountersReset
        }
    );
}

#[test]
fn sample_earlier_than_the_previous_one_is_a_reset() {
    let mut g = Guest::new();
    g.at = secs(100);
    g.sample();
    g.at = secs(50);
    assert_eq!(
        g.idle_step(),
        Decision::Busy {
            reason: BusyReason::CountersReset
        }
    );
    assert_eq!(g.run_idle_until_sleep(secs(600)), Some(secs(115)));
}

#[test]
fn cpu_time_in_a_zero_length_interval_is_busy_and_none_is_idle() {
    let mut g = Guest::new();
    g.sample();
    assert!(matches!(
        g.step_by(Duration::ZERO, Duration::ZERO, 0),
        Decision::Idle { .. }
    ));
    assert_eq!(
        g.step_by(Duration::ZERO, Duration::from_millis(1), 0),
        Decision::Busy {
            reason: BusyReason::Cpu {
                percent: f64::INFINITY
            }
        }
    );
}

#[test]
fn idle_for_is_zero_before_the_first_sample_and_grows_between_samples() {
    let mut g = Guest::new();
    assert_eq!(g.tracker.idle_for(secs(10)), Duration::ZERO);
    assert_eq!(g.tracker.sleep_due(), None);
    g.sample();
    g.idle_step();
    assert_eq!(g.tracker.idle_for(secs(7)), Duration::from_secs(7));
}

#[test]
fn zero_idle_after_sleeps_at_the_first_quiet_interval() {
    let mut g = Guest::with_policy(IdlePolicy {
        idle_after: Duration::ZERO,
        ..policy()
    });
    assert!(matches!(g.sample(), Decision::Idle { .. }));
    assert!(is_sleep(&g.idle_step()));
}

#[test]
fn busy_reasons_have_metric_labels_and_log_text() {
    assert_eq!(BusyReason::Traffic { frames: 3 }.as_str(), "traffic");
    assert_eq!(
        BusyReason::Connection(ssh()).to_string(),
        "open connection on tcp/22"
    );
    assert_eq!(
        BusyReason::Cpu { percent: 3.0 }.to_string(),
        "CPU at 3.00% of one core"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Sample {
        dt_ms: u64,
        cpu_ms: u64,
        rx: u64,
        tx: u64,
        answerable: u64,
        ssh_open: bool,
        counters_reset: bool,
    },
    Pin,
    Unpin,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (
            0u64..20_000,
            0u64..1_000,
            prop_oneof![3 => Just(0u64), 1 => 0u64..5, 1 => any::<u64>()],
            0u64..5,
            prop_oneof![3 => Just(0u64), 1 => 0u64..5, 1 => any::<u64>()],
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(dt_ms, cpu_ms, rx, tx, answerable, ssh_open, counters_reset)| Op::Sample {
                dt_ms,
                cpu_ms,
                rx,
                tx,
                answerable,
                ssh_open,
                counters_reset,
            }),
        1 => Just(Op::Pin),
        1 => Just(Op::Unpin),
        1 => Just(Op::Reset),
    ]
}

proptest! {
    /// Whatever the counters do (including wrapping to arbitrary values and going back), the
    /// tracker never panics, never decides `Sleep` while pinned, decides it at most once per
    /// reset, and only after `idle_after` of idleness.
    #[test]
    fn arbitrary_samples_never_panic_nor_sleep_while_pinned(
        ops in prop::collection::vec(op(), 0..200),
        idle_after_s in 0u64..120,
        cpu_percent in prop_oneof![Just(f64::NAN), 0.0f64..10.0],
    ) {
        let idle_after = Duration::from_secs(idle_after_s);
        let mut tracker = IdleTracker::new(IdlePolicy {
            cpu_percent,
            idle_after,
            min_awake: Duration::ZERO,
            keep_awake_while_connected: vec![ssh()],
        });
        let (mut at, mut cpu, mut rx, mut tx) = (Instant::ZERO, Duration::ZERO, 0u64, 0u64);
        let mut slept_since_reset = false;
        for op in ops {
            match op {
                Op::Sample { dt_ms, cpu_ms, rx: drx, tx: dtx, answerable, ssh_open, counters_reset } => {
                    at = at + Duration::from_millis(dt_ms);
                    if counters_reset {
                        (cpu, rx, tx) = (Duration::ZERO, 0, 0);
                    }
                    cpu += Duration::from_millis(cpu_ms);
                    rx = rx.wrapping_add(drx);
                    tx = tx.wrapping_add(dtx);
                    tracker.observe_answerable(answerable);
                    let pinned = tracker.is_pinned();
                    let idle_before = tracker.idle_for(at);
                    let decision = tracker.sample(Sample {
                        at,
                        cpu_time: cpu,
                        rx_frames: rx,
                        tx_frames: tx,
                        open_connections: if ssh_open { vec![ssh()] } else { Vec::new() },
                    });
                    if let Decision::Sleep { figures } = &decision {
                        prop_assert!(!pinned, "slept while pinned");
                        prop_assert!(!slept_since_reset, "slept twice without a reset");
                        prop_assert!(figures.idle_for >= idle_after);
                        prop_assert_eq!(figures.idle_for, idle_before);
                        prop_assert!(!ssh_open);
                        slept_since_reset = true;
                    }
                    if pinned {
                        let idle = matches!(decision, Decision::Idle { .. });
                        prop_assert!(!idle, "pinned guest reported idle");
                    }
                }
                Op::Pin => tracker.pin(),
                Op::Unpin => tracker.unpin(at),
                Op::Reset => {
                    tracker.reset(at);
                    slept_since_reset = false;
                }
            }
        }
    }
}
