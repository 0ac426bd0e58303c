//! `bench-core`: how many frames per second `vmnap_core::Surrogate::handle_frame` answers
//! on one core, and how much heap the core keeps per sleeping guest.
//!
//! Cases: ARP requests and ICMP echo requests for sleeping guests, with 1 and with 1,000
//! sleeping guests registered (with 1,000, the frames cycle through every guest, so each
//! frame looks up a different guest). The sink discards the answers but reads every byte of
//! them, so nothing is optimised away. Each case runs several rounds of about a second; the
//! median frames/s is printed with its ratio to the targets of `docs/design.md` (200k ARP/s,
//! 160k ICMP/s on one core). Heap per sleeping guest is measured with a counting global
//! allocator: the live bytes added by building 1,000 guest specs, `add_guest`,
//! `stand_in` (a guest found asleep), divided by 1,000. Needs no privileges.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant as StdInstant};

use smoltcp::phy::ChecksumCapabilities;
use vmnap_core::{
    Cut, GuestId, GuestSpec, Instant, MacAddr, Sink, Surrogate, Verdict, VirtioNetHdr, WakeCause,
};
use vmnap_wire::smol::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, Icmpv4Packet, Icmpv4Repr, IpProtocol,
    Ipv4Packet, Ipv4Repr,
};
use vmnap_wire::vlan::LinkRepr;

/// Counts live heap bytes and allocations, then defers to the system allocator.
#[derive(Debug)]
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract; the
// counters have no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0xcc, 1]);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 100);
const ROUNDS: usize = 7;
const ROUND: Duration = Duration::from_secs(1);
/// Frames handled between two looks at the clock.
const BATCH: usize = 1024;
const TARGET_ARP: f64 = 200_000.0;
const TARGET_ICMP: f64 = 160_000.0;

/// Discards what the surrogate sends, but reads every byte of it and counts verdicts.
#[derive(Debug, Default)]
struct Discard {
    bytes: u64,
    checksum: u64,
    answered: u64,
    other: u64,
    wakes: u64,
}

impl Sink for Discard {
    fn transmit(&mut self, frame: &[u8]) {
        let frame = black_box(frame);
        self.bytes += frame.len() as u64;
        self.checksum = frame
            .iter()
            .fold(self.checksum, |a, b| a.rotate_left(5) ^ u64::from(*b));
    }
    fn verdict(&mut self, _guest: Option<GuestId>, verdict: Verdict) {
        match verdict {
            Verdict::Answered(_) => self.answered += 1,
            _ => self.other += 1,
        }
    }
    fn wake(&mut self, _guest: GuestId, _cause: WakeCause, _frame: &[u8]) {
        self.wakes += 1;
    }
}

/// Guest `i`'s MAC (02:00:00:b0:hi:lo) and IPv4 address (198.19.hi.lo + 1).
fn guest_addr(i: u32) -> (MacAddr, Ipv4Addr) {
    let [_, _, hi, lo] = i.to_be_bytes();
    let n = i + 1;
    let [_, _, nhi, nlo] = n.to_be_bytes();
    (
        EthernetAddress([0x02, 0, 0, 0xb0, hi, lo]),
        Ipv4Addr::new(198, 19, nhi, nlo),
    )
}

fn spec(i: u32) -> GuestSpec {
    let (mac, ip) = guest_addr(i);
    GuestSpec::new(&format!("g{i}"), mac, ip)
}

/// A surrogate with `n` guests, all asleep.
fn asleep(n: u32) -> anyhow::Result<Surrogate> {
    let mut s = Surrogate::new(0x5eed);
    for i in 0..n {
        let id = s.add_guest(spec(i))?;
        s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)?;
    }
    Ok(s)
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: CLIENT_MAC,
        source_protocol_addr: CLIENT_V4,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let link = LinkRepr::new(EthernetAddress::BROADCAST, CLIENT_MAC, 0, 0x0806);
    let mut out = vec![0u8; link.header_len() + repr.buffer_len()];
    let at = link.emit(&mut out);
    repr.emit(&mut ArpPacket::new_unchecked(&mut out[at..]));
    out
}

/// An ICMP echo request like `ping`'s (56 bytes of data), checksums filled in.
fn echo_request(mac: MacAddr, target: Ipv4Addr, seq: u16) -> Vec<u8> {
    let data: Vec<u8> = (0..56u8).collect();
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x1234,
        seq_no: seq,
        data: &data,
    };
    let ip = Ipv4Repr {
        src_addr: CLIENT_V4,
        dst_addr: target,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let link = LinkRepr::new(mac, CLIENT_MAC, 0, 0x0800);
    let caps = ChecksumCapabilities::default();
    let mut out = vec![0u8; link.header_len() + ip.buffer_len() + icmp.buffer_len()];
    let at = link.emit(&mut out);
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut out[at..]), &caps);
    let at = at + ip.buffer_len();
    icmp.emit(&mut Icmpv4Packet::new_unchecked(&mut out[at..]), &caps);
    out
}

/// Runs `frames` (cycling) through the surrogate for [`ROUNDS`] rounds of about [`ROUND`];
/// returns frames/s per round and the sink.
fn rounds(s: &mut Surrogate, frames: &[Vec<u8>]) -> (Vec<f64>, Discard) {
    let mut sink = Discard::default();
    let epoch = StdInstant::now();
    let mut rates = Vec::with_capacity(ROUNDS);
    let mut k = 0usize;
    for _ in 0..ROUNDS {
        let start = StdInstant::now();
        let mut handled = 0u64;
        loop {
            // The core's clock: microseconds since the start, read once per batch.
            let now = Instant::from_micros(epoch.elapsed().as_micros() as u64);
            for _ in 0..BATCH {
                s.handle_frame(now, VirtioNetHdr::NONE, black_box(&frames[k]), &mut sink);
                k += 1;
                if k == frames.len() {
                    k = 0;
                }
            }
            handled += BATCH as u64;
            if start.elapsed() >= ROUND {
                break;
            }
        }
        rates.push(handled as f64 / start.elapsed().as_secs_f64());
    }
    (rates, sink)
}

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}

fn run() -> anyhow::Result<()> {
    println!("bench-core: frames/s through vmnap_core::Surrogate::handle_frame on one thread");
    println!(
        "  {ROUNDS} rounds of ~{:.0} s per case; frames are prebuilt (ARP: broadcast who-has; ICMP: echo request, 56 data bytes)",
        ROUND.as_secs_f64()
    );
    println!(
        "  and cycle through every registered guest; the sink reads each answer and discards it."
    );
    println!("  target (docs/design.md): >= 200k ARP/s, >= 160k ICMP/s on one core\n");
    println!(
        "  {:<6} {:>7}  {:>12}  {:>12}  {:>12}  {:>9}",
        "frames", "guests", "median/s", "min/s", "max/s", "÷ target"
    );
    for (kind, target) in [("ARP", TARGET_ARP), ("ICMP", TARGET_ICMP)] {
        for n in [1u32, 1000] {
            let mut s = asleep(n)?;
            let frames: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let (mac, ip) = guest_addr(i);
                    if kind == "ARP" {
                        arp_request(ip)
                    } else {
                        echo_request(mac, ip, i as u16)
                    }
                })
                .collect();
            let (rates, sink) = rounds(&mut s, &frames);
            if sink.answered == 0 || sink.other != 0 || sink.wakes != 0 {
                anyhow::bail!(
                    "{kind} with {n} guest(s): the surrogate did not answer every frame ({} answered, {} other verdicts, {} wakes)",
                    sink.answered, sink.other, sink.wakes
                );
            }
            black_box(sink.checksum);
            let med = vmnap_bench::median(&rates);
            println!(
                "  {kind:<6} {n:>7}  {:>12.0}  {:>12.0}  {:>12.0}  {:>8.2}x",
                med,
                vmnap_bench::min(&rates),
                rates.iter().copied().fold(f64::MIN, f64::max),
                med / target
            );
        }
    }

    // Heap per sleeping guest.
    const N: u32 = 1000;
    let mut s = Surrogate::new(0x5eed);
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let allocs_before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..N {
        let id = s.add_guest(spec(i))?;
        s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)?;
    }
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    let allocs = ALLOCATIONS.load(Ordering::Relaxed) - allocs_before;
    black_box(&s);
    let per_guest = (after - before) as f64 / f64::from(N);
    println!("\nheap of the core per sleeping guest (counting allocator; live bytes after spec + add_guest + stand_in, {N} guests):");
    println!(
        "  {per_guest:.0} bytes/guest ({:.2} KiB; target <= 4 KiB besides the queue: {:.2}x of it), {:.1} allocations/guest, empty queues",
        per_guest / 1024.0,
        per_guest / 4096.0,
        allocs as f64 / f64::from(N)
    );
    Ok(())
}
