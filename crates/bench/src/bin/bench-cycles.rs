//! `bench-cycles`: sleep and wake cycles under HTTP load that never stops.
//!
//! Builds a lab of one namespace guest `web1` (HTTP on port 80, in its own cgroup) and one
//! client, and runs the real `vmnap` daemon on its bridge (`--vmnap PATH`, default: `vmnap`
//! next to this executable). Four threads in the client's namespace make HTTP/1.0 requests
//! to `web1`, each on a new connection, with a 3 s timeout, for the whole run, each waiting
//! 0 to 2 × `--gap-ms G` ms (default 1) before its next request (`--gap-ms 0`: back to
//! back). Meanwhile `--cycles N` times (default 200), `vmnap sleep web1` is asked through the
//! API (whatever requests are in flight at that moment) until the guest is stopped, then the
//! next request wakes it, and the next cycle comes 0 to 20 ms after it is awake again.
//!
//! A sleep that a request interrupts before the guest is stopped is called off (the guest
//! has work): it is asked again 1 ms later, and counted. A guest stopped with work in flight
//! is woken again at once, which counts as a cycle.
//!
//! Prints the requests made, those that failed (no connection, no byte of the answer, an
//! answer cut short) with the first ones described, the slowest request, p50 and p99, the
//! TCP segments the client's kernel and the guest's kernel retransmitted (SYNs included), and
//! how the sleeps ended. Needs root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_api::State;
use vmnap_api::{self as api, Request, Response};
use vmnap_bench::{in_netns, ms, print_latencies, tcp_retransmitted, NamespaceLab, Rng};

const CLIENTS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(3);
const ANSWER: &[u8] = b"hello from web1\n";
const USAGE: &str = "usage: bench-cycles [--vmnap PATH] [--cycles N] [--gap-ms G]   (needs root)";

/// One request: when it started (since the run began), how long it took, and how it failed.
#[derive(Debug, Clone)]
struct Record {
    at: Duration,
    took: Duration,
    failure: Option<String>,
}

fn request(addr: SocketAddr) -> Result<(), String> {
    let mut conn =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("no connection: {e}"))?;
    let deadline = Instant::now() + TIMEOUT;
    conn.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("request not sent: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        conn.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if answer.is_empty() => return Err(format!("no byte of the answer: {e}")),
            Err(e) => return Err(format!("answer cut after {} bytes: {e}", answer.len())),
        }
    }
    if answer.is_empty() {
        return Err("no byte of the answer".into());
    }
    if !answer.ends_with(ANSWER) {
        return Err(format!(
            "answer cut after {} bytes: {:?}",
            answer.len(),
            String::from_utf8_lossy(&answer)
        ));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: bench-cycles [--vmnap PATH] [--cycles N] [--gap-ms G]   (needs root)");
        return Ok(());
    }
    vmnap_bench::need_root("bench-cycles")?;
    let vmnap = vmnap_bench::vmnap_path(&args)?;
    let cycles: usize = vmnap_bench::flag(&args, "--cycles", 200, USAGE)?;
    let gap_us = vmnap_bench::flag::<u64>(&args, "--gap-ms", 1, USAGE)? * 1000;
    vmnap_lab::check_tools(&["ip", "nsenter"])?;
    println!("bench-cycles: {cycles} sleep/wake cycles of a namespace guest under HTTP load that never stops, with the real vmnap daemon");
    println!("  load: {CLIENTS} client threads, HTTP/1.0 on a new connection each, 0-{} ms between a client's requests, {} s timeout", 2 * gap_us / 1000, TIMEOUT.as_secs());
    println!("  cycles: vmnap sleep web1 (whatever is in flight; asked again 1 ms later while a request calls it off), the load wakes it, the next cycle 0-20 ms after it is awake");
    println!("  target (issue 9): 0 failed requests, 0 SYN retransmissions, the slowest request <= 1 s\n");

    let lab = NamespaceLab::start(&vmnap, &["web1".to_owned()], "")?;
    let fail = |e: anyhow::Error| anyhow::anyhow!("{e:#}\n--- daemon log ---\n{}", lab.log_text());
    let addr = SocketAddr::new(lab.guests[0].ipv4.into(), 80);
    let guest_netns = lab.guests[0].netns.clone();
    let joined = |h: std::thread::JoinHandle<anyhow::Result<anyhow::Result<u64>>>| {
        h.join()
            .map_err(|_| anyhow::anyhow!("a thread panicked"))??
    };
    let client_before = joined(in_netns(&lab.client, tcp_retransmitted))?;
    let guest_before = joined(in_netns(&guest_netns, tcp_retransmitted))?;

    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::<Record>::new()));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (stop, records) = (Arc::clone(&stop), Arc::clone(&records));
            let mut rng = Rng(c as u64 + 1);
            in_netns(&lab.client, move || {
                while !stop.load(Ordering::Relaxed) {
                    if gap_us > 0 {
                        let pause = rng.next() % (2 * gap_us);
                        std::thread::sleep(Duration::from_micros(pause));
                    }
                    let t = Instant::now();
                    let failure = request(addr).err();
                    let record = Record {
                        at: t.duration_since(started),
                        took: t.elapsed(),
                        failure,
                    };
                    records
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(record);
                }
            })
        })
        .collect();

    // The sleeps: how each ended, and when each was asked.
    let mut asleep = 0;
    let mut called_off = 0;
    let mut in_flight = 0;
    let mut other_refusals = Vec::new();
    let mut asked_at = Vec::new();
    let mut rng = Rng(0x5eed);
    let result = (|| -> anyhow::Result<()> {
        for cycle in 0..cycles {
            loop {
                asked_at.push(started.elapsed());
                match api::call(
                    &lab.socket,
                    &Request::Sleep {
                        guest: "web1".into(),
                    },
                )? {
                    Response::Done { .. } => {
                        asleep += 1;
                        break;
                    }
                    Response::Error { message } if message.contains("still had work") => {
                        in_flight += 1;
                        break;
                    }
                    Response::Error { message } if message.contains("woken before") => {
                        called_off += 1;
                    }
                    Response::Error { message } => other_refusals.push(message),
                    other => bail!("cycle {cycle}: the sleep was answered with {other:?}"),
                }
                if asked_at.len() > 100 * cycles {
                    bail!("cycle {cycle}: the guest never fell asleep under this load");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let st = vmnap_bench::status(&lab.socket)?;
                if st.first().is_some_and(|g| g.state == State::Awake) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("cycle {cycle}: web1 did not wake under load: {st:?}");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_micros(rng.next() % 20_000));
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
    }
    if result.is_err() {
        let records = records.lock().unwrap_or_else(|e| e.into_inner());
        let end = started.elapsed();
        let late: Vec<&Record> = records
            .iter()
            .filter(|r| r.at + Duration::from_secs(12) > end)
            .collect();
        eprintln!(
            "requests in the last 12 s: {} ({} failed); the last ones:",
            late.len(),
            late.iter().filter(|r| r.failure.is_some()).count()
        );
        let host = lab.lab.host_netns().to_owned();
        for argv in [
            &["bridge", "fdb", "show", "br", "br0"][..],
            &["bridge", "link"][..],
        ] {
            if let Ok(out) = lab.lab.exec(&host, argv) {
                eprintln!("{argv:?}:\n{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        for r in late.iter().rev().take(8) {
            eprintln!(
                "  at {:.3} s took {:.1} ms: {:?}",
                r.at.as_secs_f64(),
                ms(r.took),
                r.failure
            );
        }
    }
    result.map_err(fail)?;
    let client_re = joined(in_netns(&lab.client, tcp_retransmitted))? - client_before;
    let guest_re = joined(in_netns(&guest_netns, tcp_retransmitted))? - guest_before;
    let records = records.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let took: Vec<f64> = records.iter().map(|r| ms(r.took)).collect();
    let failed: Vec<&Record> = records.iter().filter(|r| r.failure.is_some()).collect();
    let slowest = records
        .iter()
        .max_by(|a, b| a.took.cmp(&b.took))
        .context("no request was made")?;

    println!(
        "results ({} CPUs, {:.1} s):",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  requests made:                          {}",
        records.len()
    );
    println!("  requests that failed:                   {}", failed.len());
    for r in failed.iter().take(5) {
        println!(
            "    at {:.3} s: {}",
            r.at.as_secs_f64(),
            r.failure.as_deref().unwrap_or("")
        );
    }
    print_latencies("request (connect to the whole answer)", &took);
    // The last sleep asked before the slowest request ended, from the request's start
    // (positive: the sleep began while the request was in flight).
    let sleep_offset = asked_at
        .iter()
        .filter(|a| **a <= slowest.at + slowest.took)
        .max()
        .map_or(f64::NAN, |a| ms(*a) - ms(slowest.at));
    println!(
        "  slowest request:                        {:.1} ms; the last sleep before its end was asked {sleep_offset:+.1} ms after it started",
        ms(slowest.took)
    );
    println!("  segments retransmitted (SYNs included): {client_re} by the clients, {guest_re} by the guest");
    println!(
        "  cycles: {cycles}: {asleep} fell asleep and were woken by a request, {in_flight} were stopped with work in flight and woken again at once"
    );
    println!(
        "  sleeps asked: {}; called off by a request before the stop: {called_off}; refused otherwise: {}",
        asked_at.len(),
        other_refusals.len()
    );
    for r in other_refusals.iter().take(3) {
        println!("    {r}");
    }
    Ok(())
}
