//! `bench-answers`: how fast vmnap answers ping and ARP for a sleeping guest, beside how fast
//! the guest's own kernel answers them when awake, through the same real bridge.
//!
//! Builds a namespace lab (one guest `web1`, one client `c0`) and runs the real daemon
//! (`--vmnap PATH`, default: `vmnap` next to this executable), twice: answering in the
//! kernel at its own port (the default), then also at every port of the bridge (`[surrogate]
//! in_kernel_at_every_port`). From the client's namespace, a packet socket with mapped rings
//! on its `eth0` ([`vmnap_bench::ring`]: a batch of requests is one system call, answers are
//! read with none) sends ICMP echo requests (or ARP requests) to the guest's address and
//! counts the answers, keeping `depth` requests in flight: one (each request waits for the
//! answer to the one before: the cost of one answer, end to end) and 64 (the rate under
//! load). Each cell runs `--secs S` seconds (default 2), first with the guest awake (its
//! kernel answers), then asleep (vmnap answers), on the same bridge. A request unanswered
//! for 100 ms is counted lost and replaced, so a lost answer cannot stall the pipeline.
//!
//! Prints answers per second and microseconds per answer for each cell, vmnap's rate as a
//! multiple of the kernel's, and the daemon's CPU time per answer (its threads' run time
//! from `schedstat` over the cell, divided by the answers): where that is well under the
//! microseconds per answer, the daemon waits, and the client or the wake-up is the limit
//! (answers given by the kernel's responder cost the daemon nothing). Issue 10's targets:
//! with one in flight at least the kernel's rate; with 64, at least three times it. Asserts
//! nothing about time. Needs root.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr,
    IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr,
};
use vmnap_api::State;
use vmnap_bench::ring::Ring;
use vmnap_bench::NamespaceLab;

const USAGE: &str = "usage: bench-answers [--vmnap PATH] [--secs S (2)]   (needs root)";

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Ping,
    Arp,
}

/// The client's and the guest's addresses.
#[derive(Debug, Clone, Copy)]
struct Ends {
    client_mac: [u8; 6],
    client_ip: Ipv4Addr,
    guest_mac: [u8; 6],
    guest_ip: Ipv4Addr,
}

/// One cell's outcome.
#[derive(Debug, Clone, Copy)]
struct Rate {
    answers: u64,
    lost: u64,
    secs: f64,
}

impl Rate {
    fn per_sec(self) -> f64 {
        self.answers as f64 / self.secs
    }
}

/// A request: an echo request with sequence number `seq`, or an ARP request.
fn request(ask: Ask, e: &Ends, seq: u16) -> Vec<u8> {
    let eth = |dst: EthernetAddress, ethertype, payload_len: usize| {
        let mut buf = vec![0u8; 14 + payload_len];
        EthernetRepr {
            src_addr: EthernetAddress(e.client_mac),
            dst_addr: dst,
            ethertype,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        buf
    };
    match ask {
        Ask::Arp => vmnap_bench::arp_request(e.client_mac, e.client_ip, e.guest_ip),
        Ask::Ping => {
            let icmp = Icmpv4Repr::EchoRequest {
                ident: 0x7a6e,
                seq_no: seq,
                data: b"vmnap-bench-answers",
            };
            let ip = Ipv4Repr {
                src_addr: Ipv4Address::from(e.client_ip.octets()),
                dst_addr: Ipv4Address::from(e.guest_ip.octets()),
                next_header: IpProtocol::Icmp,
                payload_len: icmp.buffer_len(),
                hop_limit: 64,
            };
            let caps = ChecksumCapabilities::default();
            let mut buf = eth(
                EthernetAddress(e.guest_mac),
                EthernetProtocol::Ipv4,
                ip.buffer_len() + icmp.buffer_len(),
            );
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[14..]), &caps);
            let at = 14 + ip.buffer_len();
            icmp.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[at..]), &caps);
            buf
        }
    }
}

/// Whether `frame` is an answer to `ask` from the guest.
fn is_answer(ask: Ask, e: &Ends, frame: &[u8]) -> bool {
    if ask == Ask::Arp {
        return vmnap_bench::is_arp_reply(frame, e.client_mac, e.guest_ip);
    }
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if eth.dst_addr() != EthernetAddress(e.client_mac) {
        return false;
    }
    match (ask, eth.ethertype()) {
        (Ask::Ping, EthernetProtocol::Ipv4) => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                return false;
            };
            ip.next_header() == IpProtocol::Icmp
                && ip.src_addr() == Ipv4Address::from(e.guest_ip.octets())
                && Icmpv4Packet::new_checked(ip.payload()).is_ok_and(|p| {
                    p.msg_type() == smoltcp::wire::Icmpv4Message::EchoReply
                        && p.echo_ident() == 0x7a6e
                })
        }
        _ => false,
    }
}

/// Asks for `secs` seconds with `depth` requests in flight; runs in the client's namespace.
///
/// The client sends and reads through mapped rings ([`Ring`]): a batch of requests costs one
/// system call, and answers are read without one, so that the figures are the answerer's.
fn measure(ask: Ask, e: Ends, depth: usize, secs: f64) -> anyhow::Result<Rate> {
    let mut ring = Ring::open("eth0").context("a packet ring on eth0")?;
    // Built once, so that the client spends its time sending and reading.
    let requests: Vec<Vec<u8>> = (0..256u16).map(|seq| request(ask, &e, seq)).collect();
    let mut seq: usize = 0;
    let (mut answers, mut lost) = (0u64, 0u64);
    let mut in_flight = 0usize;
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(secs);
    let mut last_answer = Instant::now();
    while Instant::now() < end {
        while in_flight < depth {
            seq = seq.wrapping_add(1);
            ring.queue(&requests[seq % requests.len()])?;
            in_flight += 1;
        }
        ring.flush()?;
        let mut got = 0u64;
        if ring.drain(|frame| got += u64::from(is_answer(ask, &e, frame))) == 0 {
            ring.wait(10)?;
            ring.drain(|frame| got += u64::from(is_answer(ask, &e, frame)));
        }
        if got > 0 {
            answers += got;
            in_flight = in_flight.saturating_sub(got as usize);
            last_answer = Instant::now();
        } else if in_flight > 0 && last_answer.elapsed() > Duration::from_millis(100) {
            // Nothing came for a while: count the outstanding requests lost and go on.
            lost += in_flight as u64;
            in_flight = 0;
            last_answer = Instant::now();
        }
    }
    Ok(Rate {
        answers,
        lost,
        secs: started.elapsed().as_secs_f64(),
    })
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    vmnap_bench::need_root("bench-answers")?;
    let vmnap = vmnap_bench::vmnap_path(&args)?;
    let secs: f64 = vmnap_bench::flag(&args, "--secs", 2.0, USAGE)?;
    if !(0.1..=60.0).contains(&secs) {
        bail!("--secs must be 0.1 to 60\n{USAGE}");
    }
    println!("bench-answers: ping and ARP answered by a sleeping guest's stand-in (vmnap) and by the awake guest's own kernel, same bridge");
    println!("  each cell: {secs} s from a packet socket with mapped rings in the client's namespace, 1 or 64 requests in flight");
    println!("  target (issue 10): with 1 in flight >= the kernel's rate; with 64 >= 3x the kernel's rate\n");
    for every_port in [false, true] {
        one_lab(&vmnap, secs, every_port)?;
    }
    println!("\n  target: ratio >= 1.00x with 1 in flight, >= 3.00x with 64");
    Ok(())
}

/// Measures the four cells on a lab of their own: the guest's kernel awake, then vmnap with
/// the guest asleep, answering at its own port or (`every_port`) at every port of the
/// bridge.
fn one_lab(vmnap: &std::path::Path, secs: f64, every_port: bool) -> anyhow::Result<()> {
    // A table of its own after the `[api]` lines that `start_with_api` writes.
    let tables = if every_port {
        "\n[surrogate]\nin_kernel_at_every_port = true\n"
    } else {
        ""
    };
    let lab = NamespaceLab::start_with_api(vmnap, &["web1".to_owned()], "", tables)?;
    let guest = &lab.guests[0];
    let client = lab
        .lab
        .client("c0")
        .context("the lab has no client c0")?
        .clone();
    let ends = Ends {
        client_mac: client.mac,
        client_ip: client.ipv4,
        guest_mac: guest.mac,
        guest_ip: guest.ipv4,
    };
    println!(
        "lab: bridge br0, guest web1 {}, client c0 {}; daemon {}; vmnap answers in the kernel at {}",
        guest.ipv4,
        client.ipv4,
        vmnap.display(),
        if every_port {
            "every port, as a request comes in ([surrogate] in_kernel_at_every_port = true)"
        } else {
            "its own port (the default)"
        }
    );
    let cells = [
        (Ask::Ping, 1),
        (Ask::Ping, 64),
        (Ask::Arp, 1),
        (Ask::Arp, 64),
    ];
    let mut kernel = Vec::new();
    for &(ask, depth) in &cells {
        let r = vmnap_bench::in_netns(&lab.client, move || measure(ask, ends, depth, secs))
            .join()
            .map_err(|_| anyhow::anyhow!("the client thread panicked"))???;
        kernel.push(r);
    }
    lab.sleep_all(["web1"])?;
    lab.wait_all(State::Sleeping, Duration::from_secs(10))?;
    if every_port {
        // The ports are followed by the bridge's worker; the client's is attached at start.
        let (status, m) = vmnap_api::request(&lab.socket, "GET", "/metrics", None)
            .context("cannot scrape the daemon's /metrics")?;
        if status != 200 {
            bail!("GET /metrics answered {status}");
        }
        let m = String::from_utf8_lossy(&m);
        let ports = m
            .lines()
            .find_map(|l| l.strip_prefix("vmnap_bridge_in_kernel_ports{bridge=\"br0\"} "))
            .map(str::trim);
        if ports.is_none_or(|p| p == "0") {
            bail!("vmnap answers at no port of br0 besides its own: {ports:?}");
        }
    }
    let mut vmnap_rates = Vec::new();
    let mut daemon_us = Vec::new();
    for &(ask, depth) in &cells {
        let before = vmnap_bench::proc_sched_seconds(lab.daemon)?;
        let r = vmnap_bench::in_netns(&lab.client, move || measure(ask, ends, depth, secs))
            .join()
            .map_err(|_| anyhow::anyhow!("the client thread panicked"))???;
        let used = vmnap_bench::proc_sched_seconds(lab.daemon)? - before;
        daemon_us.push(used * 1e6 / (r.answers.max(1) as f64));
        vmnap_rates.push(r);
    }
    let st = vmnap_bench::status(&lab.socket)?;
    if st.first().map(|g| g.state) != Some(State::Sleeping) {
        bail!("web1 woke during the benchmark: {st:?}");
    }
    println!(
        "  {:<16} {:>14} {:>10} {:>14} {:>10} {:>9} {:>14} {:>12}",
        "cell",
        "kernel /s",
        "us each",
        "vmnap /s",
        "us each",
        "ratio",
        "daemon CPU us",
        "lost k / v"
    );
    for (i, &(ask, depth)) in cells.iter().enumerate() {
        let (k, v) = (kernel[i], vmnap_rates[i]);
        let name = format!("{} x{depth}", if ask == Ask::Ping { "ping" } else { "arp" });
        println!(
            "  {name:<16} {:>14.0} {:>10.1} {:>14.0} {:>10.1} {:>8.2}x {:>14.2} {:>6} / {}",
            k.per_sec(),
            1e6 / k.per_sec().max(1e-9),
            v.per_sec(),
            1e6 / v.per_sec().max(1e-9),
            v.per_sec() / k.per_sec().max(1e-9),
            daemon_us[i],
            k.lost,
            v.lost
        );
    }
    println!();
    Ok(())
}

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}
