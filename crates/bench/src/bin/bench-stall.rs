//! `bench-stall`: what the other guests and the API see while one guest wakes under traffic
//! that never pauses.
//!
//! Builds a lab of three namespace guests (`busy`, `q1`, `q2`; HTTP on port 80, UDP on port
//! 9000) and one client, and runs the real `vmnap` daemon on its bridge (`--vmnap PATH`,
//! default: `vmnap` next to this executable). All three are put to sleep. Then `--rounds R`
//! times (default 10), for one second each:
//! - from the client, `ping` to `q1` every 2 ms, and `arping -c 1` to `q2` again and again
//!   (arping takes no interval under a second): both are answered by vmnap, from the worker
//!   that is waking `busy`;
//! - here, `vmnap status` (`GET /v1/guests` on the API socket) every 2 ms;
//! - from 150 ms on, a thread in the client's namespace sends `busy` a UDP datagram on its
//!   wake port every 500 us for 700 ms: it wakes `busy`, and since its traffic never pauses
//!   for the 2 ms the hand-back waits for, the wake waits out its whole quiet moment (500 ms)
//!   and hands `busy`'s MAC back under traffic.
//!
//! `busy` is put back to sleep between rounds. A first round without the stream (nothing
//! wakes) is the baseline. Prints p50, p99 and max of the ping and arping round trips and of
//! the status calls, during the wakes and in the baseline, and how many wakes switched under
//! traffic (from the daemon's log). Needs root.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_api::Request;
use vmnap_api::State;
use vmnap_bench::{in_netns, ms, print_latencies, NamespaceLab};

const WINDOW: Duration = Duration::from_secs(1);
const STREAM_FROM: Duration = Duration::from_millis(150);
const STREAM_FOR: Duration = Duration::from_millis(700);
const STREAM_EVERY: Duration = Duration::from_micros(500);
const PROBES: &str = "450";
const USAGE: &str = "usage: bench-stall [--vmnap PATH] [--rounds R]   (needs root)";

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}

/// The round trips (ms) a `ping` or `arping` printed: the numbers before `ms` in its reply
/// lines (`time=0.123 ms`, `0.123ms`).
fn round_trips(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter(|l| l.contains("bytes from") || l.contains("reply from"))
        .filter_map(|l| {
            let at = l.rfind("ms")?;
            let head = l[..at].trim_end();
            let num = head
                .rsplit(|c: char| c == '=' || c.is_whitespace())
                .next()?;
            num.parse().ok()
        })
        .collect()
}

/// Starts a command in the client's namespace; its output, once it ends.
fn spawn_in(client: &str, argv: &[&str]) -> anyhow::Result<std::process::Child> {
    Command::new("ip")
        .args(["netns", "exec", client])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", argv[0]))
}

/// One window: pings, arpings and status calls, and (with `stream`) the datagrams that wake
/// `busy`. Returns the ping, arping and status latencies (ms).
fn window(
    lab: &NamespaceLab,
    stream: Option<SocketAddr>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let q1 = lab.guests[1].ipv4.to_string();
    let q2 = lab.guests[2].ipv4.to_string();
    let ping = spawn_in(
        &lab.client,
        &["ping", "-n", "-i", "0.002", "-c", PROBES, "-W", "1", &q1],
    )?;
    let client = lab.client.clone();
    let arping = std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
        let start = Instant::now();
        let mut rtts = Vec::new();
        while start.elapsed() < WINDOW {
            let out = spawn_in(
                &client,
                &["arping", "-c", "1", "-w", "1", "-I", "eth0", &q2],
            )?
            .wait_with_output()?;
            let got = round_trips(&String::from_utf8_lossy(&out.stdout));
            if got.is_empty() {
                bail!(
                    "arping {q2} got no answer: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            rtts.extend(got);
        }
        Ok(rtts)
    });
    let sent = Arc::new(AtomicBool::new(false));
    let streamer = stream.map(|to| {
        let sent = Arc::clone(&sent);
        in_netns(&lab.client, move || -> anyhow::Result<u64> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            std::thread::sleep(STREAM_FROM);
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < STREAM_FOR {
                socket.send_to(&n.to_be_bytes(), to)?;
                n += 1;
                // Paced to a schedule: a late datagram is followed by the next one at once,
                // so the gaps stay far below the 2 ms the hand-back waits for.
                let next = start + STREAM_EVERY * (n as u32);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            sent.store(true, Ordering::Relaxed);
            Ok(n)
        })
    });
    let mut status = Vec::new();
    let start = Instant::now();
    while start.elapsed() < WINDOW {
        let t = Instant::now();
        vmnap_bench::status(&lab.socket)?;
        status.push(ms(t.elapsed()));
        std::thread::sleep(Duration::from_millis(2));
    }
    if let Some(s) = streamer {
        s.join()
            .map_err(|_| anyhow::anyhow!("the stream's thread panicked"))???;
    }
    let ping = ping.wait_with_output()?;
    let arpings = arping
        .join()
        .map_err(|_| anyhow::anyhow!("the arping thread panicked"))??;
    let pings = round_trips(&String::from_utf8_lossy(&ping.stdout));
    if pings.len() < PROBES.parse::<usize>()? {
        bail!(
            "ping got {} answers of {PROBES}: {}",
            pings.len(),
            String::from_utf8_lossy(&ping.stderr)
        );
    }
    Ok((pings, arpings, status))
}

fn state_of(socket: &Path, guest: &str) -> anyhow::Result<vmnap_api::GuestStatus> {
    vmnap_bench::status(socket)?
        .into_iter()
        .find(|g| g.name == guest)
        .with_context(|| format!("{guest} is not in the daemon's status"))
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    vmnap_bench::need_root("bench-stall")?;
    let vmnap = vmnap_bench::vmnap_path(&args)?;
    let rounds: usize = vmnap_bench::flag(&args, "--rounds", 10, USAGE)?;
    vmnap_lab::check_tools(&["ip", "nsenter", "ping", "arping"])?;
    println!("bench-stall: other sleeping guests and the API while one guest wakes under traffic that never pauses");
    println!("  each round, 1 s: ping q1 every 2 ms and arping q2 (one at a time) from the client (vmnap answers both), vmnap status every 2 ms here;");
    println!("  from 150 ms, a UDP datagram to busy's wake port every 500 us for 700 ms: busy wakes, waits out its quiet moment, and is handed back under traffic");
    println!("  {rounds} round(s), after one baseline round without the stream");
    println!(
        "  target (issue 9): ping and arping p99 <= 1 ms, status p99 <= 10 ms, during the wakes\n"
    );

    let names: Vec<String> = ["busy", "q1", "q2"].map(String::from).to_vec();
    let lab = NamespaceLab::start(&vmnap, &names, "")?;
    let fail = |e: anyhow::Error| anyhow::anyhow!("{e:#}\n--- daemon log ---\n{}", lab.log_text());
    lab.sleep_all(names.iter().map(String::as_str))
        .map_err(fail)?;
    let (base_ping, base_arping, base_status) = window(&lab, None).map_err(fail)?;
    let busy = SocketAddr::new(lab.guests[0].ipv4.into(), 9000);
    let (mut pings, mut arpings, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
    let mut woken = 0;
    for round in 0..rounds {
        let before = state_of(&lab.socket, "busy")?.wakes;
        if state_of(&lab.socket, "busy")?.state != State::Sleeping {
            vmnap_bench::call(
                &lab.socket,
                &Request::Sleep {
                    guest: "busy".into(),
                },
            )
            .map_err(fail)?;
        }
        for q in ["q1", "q2"] {
            let st = state_of(&lab.socket, q)?;
            if st.state != State::Sleeping {
                bail!("round {round}: {q} is {}, not sleeping", st.state);
            }
        }
        let (p, a, s) = window(&lab, Some(busy)).map_err(fail)?;
        pings.extend(p);
        arpings.extend(a);
        statuses.extend(s);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let st = state_of(&lab.socket, "busy")?;
            if st.state == State::Awake && st.wakes > before {
                woken += 1;
                break;
            }
            if Instant::now() > deadline {
                bail!("round {round}: busy did not wake: {st:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let log = lab.log_text();
    let under_traffic = log
        .lines()
        .filter(|l| l.contains("switching under traffic"))
        .count();

    println!(
        "results ({} CPUs):",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(" during the wakes of busy ({woken} of {rounds} rounds woke it; {under_traffic} wake(s) handed back under traffic):");
    print_latencies("ping q1 (answered by vmnap)", &pings);
    print_latencies("arping q2 (answered by vmnap)", &arpings);
    print_latencies("vmnap status (GET /v1/guests)", &statuses);
    println!(" baseline (no wake):");
    print_latencies("ping q1 (answered by vmnap)", &base_ping);
    print_latencies("arping q2 (answered by vmnap)", &base_arping);
    print_latencies("vmnap status (GET /v1/guests)", &base_status);
    println!(
        "\n  p99 vs target, during the wakes: ping {:.2}x of 1 ms, arping {:.2}x of 1 ms, status {:.2}x of 10 ms",
        vmnap_bench::quantile(&pings, 0.99),
        vmnap_bench::quantile(&arpings, 0.99),
        vmnap_bench::quantile(&statuses, 0.99) / 10.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::round_trips;

    #[test]
    fn round_trips_are_read_from_ping_and_arping() {
        let ping = "PING 198.18.0.11 (198.18.0.11) 56(84) bytes of data.\n\
                    64 bytes from 198.18.0.11: icmp_seq=1 ttl=64 time=0.133 ms\n\
                    64 bytes from 198.18.0.11: icmp_seq=2 ttl=64 time=1.5 ms\n\n\
                    rtt min/avg/max/mdev = 0.133/0.147/0.161/0.011 ms\n";
        assert_eq!(round_trips(ping), [0.133, 1.5]);
        let arping = "ARPING 198.18.0.12 from 198.18.1.100 eth0\n\
                      Unicast reply from 198.18.0.12 [02:00:00:00:02:02]  0.716ms\n\
                      Sent 1 probes (1 broadcast(s))\n";
        assert_eq!(round_trips(arping), [0.716]);
    }
}
