//! `bench-herd`: many sleeping guests woken at the same moment, by as many clients.
//!
//! Builds a lab of `--guests N` namespace guests (default 100; HTTP on port 80, each in its
//! own cgroup) and one client, and runs the real `vmnap` daemon on its bridge (`--vmnap
//! PATH`, default: `vmnap` next to this executable). Then `--rounds R` times (default 3):
//! every guest is put to sleep through the API, and N threads in the client's namespace,
//! released together, each open a new connection to its own guest, send an HTTP request and
//! time the first byte of the answer. Then, for comparison, 20 times: one guest alone is put
//! to sleep and woken the same way.
//!
//! Prints p50, p99 and max of the first bytes (the herd's and the lone guest's), requests
//! that failed, and the TCP segments the client's kernel retransmitted (`RetransSegs` of its
//! namespace: SYNs included; a lost first SYN costs a client 1 s). Needs root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_api::State;
use vmnap_bench::{in_netns, ms, print_latencies, tcp_retransmitted, NamespaceLab};

const ALONE_ROUNDS: usize = 20;
const USAGE: &str = "usage: bench-herd [--vmnap PATH] [--guests N] [--rounds R]   (needs root)";

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}

/// Opens a connection to `addr`, sends an HTTP request and waits for the first byte of the
/// answer; returns the time that took (then reads the rest).
fn first_byte(addr: SocketAddr) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("cannot connect to {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut byte = [0u8; 1];
    let n = conn
        .read(&mut byte)
        .with_context(|| format!("no answer from {addr}"))?;
    let took = start.elapsed();
    if n == 0 {
        bail!("{addr} closed the connection without an answer");
    }
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest)
        .with_context(|| format!("the answer from {addr} was cut"))?;
    Ok(took)
}

/// The first bytes of one connection to each of `addrs` opened at the same moment from the
/// client's namespace, and how many segments the client retransmitted meanwhile.
fn herd(
    client: &str,
    addrs: &[SocketAddr],
) -> anyhow::Result<(Vec<anyhow::Result<Duration>>, u64)> {
    let barrier = Arc::new(Barrier::new(addrs.len() + 1));
    let before = in_netns(client, tcp_retransmitted)
        .join()
        .map_err(|_| anyhow::anyhow!("a thread panicked"))???;
    let threads: Vec<_> = addrs
        .iter()
        .map(|&addr| {
            let barrier = Arc::clone(&barrier);
            in_netns(client, move || {
                barrier.wait();
                first_byte(addr)
            })
        })
        .collect();
    // Every thread is in the namespace, its socket not yet open.
    barrier.wait();
    let results = threads
        .into_iter()
        .map(|t| match t.join() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(anyhow::anyhow!("a client thread panicked")),
        })
        .collect();
    let after = in_netns(client, tcp_retransmitted)
        .join()
        .map_err(|_| anyhow::anyhow!("a thread panicked"))???;
    Ok((results, after - before))
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    vmnap_bench::need_root("bench-herd")?;
    let vmnap = vmnap_bench::vmnap_path(&args)?;
    let n: usize = vmnap_bench::flag(&args, "--guests", 100, USAGE)?;
    let rounds: usize = vmnap_bench::flag(&args, "--rounds", 3, USAGE)?;
    if n == 0 || n > 200 {
        bail!("--guests must be 1 to 200");
    }
    vmnap_lab::check_tools(&["ip", "nsenter"])?;
    println!("bench-herd: {n} sleeping namespace guests woken at once by {n} clients, with the real vmnap daemon");
    println!("  {rounds} round(s): all {n} put to sleep, then {n} threads in the client's namespace, released together, each open a connection to its own guest and time the first byte of an HTTP answer");
    println!("  alone: {ALONE_ROUNDS} x one guest put to sleep and woken the same way");
    println!("  target (issue 9): every first byte arrives, 0 SYN retransmissions; p50/p99/max printed beside one guest alone\n");

    let names: Vec<String> = (0..n).map(|k| format!("h{k:03}")).collect();
    let t = Instant::now();
    let lab = NamespaceLab::start(&vmnap, &names, "")?;
    println!("  lab and daemon up in {:.1} s", t.elapsed().as_secs_f64());
    let addrs: Vec<SocketAddr> = lab
        .guests
        .iter()
        .map(|g| SocketAddr::new(g.ipv4.into(), 80))
        .collect();
    let fail = |e: anyhow::Error| {
        anyhow::anyhow!(
            "{e:#}\n--- daemon log (last lines) ---\n{}",
            vmnap_lab::chaos::log_tail(&lab.log_text(), 40)
        )
    };
    // Warm up: the client's neighbour entries, each guest's server.
    let (warm, _) = herd(&lab.client, &addrs).map_err(fail)?;
    if let Some(Err(e)) = warm.into_iter().find(|r| r.is_err()) {
        return Err(fail(e.context("warming up, with every guest awake")));
    }

    let mut firsts = Vec::new();
    let mut failed = Vec::new();
    let mut retransmitted = 0;
    for round in 0..rounds {
        lab.sleep_all(names.iter().map(String::as_str))
            .map_err(fail)?;
        lab.wait_all(State::Sleeping, Duration::from_secs(10))
            .map_err(fail)?;
        let (results, re) = herd(&lab.client, &addrs).map_err(fail)?;
        retransmitted += re;
        let mut round_firsts = Vec::new();
        for (k, r) in results.into_iter().enumerate() {
            match r {
                Ok(d) => round_firsts.push(ms(d)),
                Err(e) => failed.push(format!("round {round}, {}: {e:#}", names[k])),
            }
        }
        println!(
            "  round {round}: {} of {n} served, slowest first byte {:.1} ms, {re} segment(s) retransmitted",
            round_firsts.len(),
            round_firsts.iter().copied().fold(0.0, f64::max)
        );
        firsts.extend(round_firsts);
        lab.wait_all(State::Awake, Duration::from_secs(10))
            .map_err(fail)?;
    }

    let mut alone = Vec::new();
    let mut alone_retransmitted = 0;
    for _ in 0..ALONE_ROUNDS {
        lab.sleep_all([names[0].as_str()]).map_err(fail)?;
        let (results, re) = herd(&lab.client, &addrs[..1]).map_err(fail)?;
        alone_retransmitted += re;
        for r in results {
            alone.push(ms(r.map_err(fail)?));
        }
        lab.wait_all(State::Awake, Duration::from_secs(10))
            .map_err(fail)?;
    }

    println!(
        "\nresults ({} CPUs):",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_latencies(&format!("first byte, {n} guests woken at once"), &firsts);
    print_latencies("first byte, one guest woken alone", &alone);
    println!(
        "  requests that failed:                                 {} of {}",
        failed.len(),
        rounds * n
    );
    for f in failed.iter().take(5) {
        println!("    {f}");
    }
    println!(
        "  segments the clients retransmitted (SYNs included):  {retransmitted} in the herds, {alone_retransmitted} alone"
    );
    let log = lab.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    println!(
        "  warning/error lines in the daemon's log:              {}",
        warnings.len()
    );
    for w in warnings.iter().take(3) {
        println!("    {w}");
    }
    Ok(())
}
