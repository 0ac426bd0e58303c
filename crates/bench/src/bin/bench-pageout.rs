//! `bench-pageout`: page-out sleep beside pause and save, on the same guest at several RAM
//! sizes, through the real daemon: the guest's RAM in host memory while it sleeps, the first
//! byte of a new connection that wakes it, the memory back after that first answer, and the
//! time a sleep takes to free the memory, with and without the background write-back.
//!
//! Builds, once, a file system for RAM files as `README.md` recommends: an ext4 image on a
//! loop device with direct I/O, its `read_ahead_kb` set to 0, mounted in a directory of its
//! own (all removed at the end). Then for each size (`--sizes`, MiB, default
//! `128,1024,4096`) a lab (bridge `br0` in a namespace, client `c0`) with three QEMU guests
//! of the project's image under TCG: `pa` (anonymous RAM, `mode = "pause"`), `po` (RAM in a
//! file there, QEMU started through `vmnap run-qemu`, `mode = "pageout"`) and `sv`
//! (anonymous RAM, `mode = "save"`, its state file beside the RAM files), and the real
//! daemon (`--vmnap PATH`, default: `vmnap` next to this executable). Each round
//! (`--rounds`, 3) of each guest: the guest writes `--dirty` percent (40) of its RAM (its
//! port 8), then `vmnap sleep`; for `po` the page-out that follows is waited for; then curl's
//! first byte of a new connection from the client, which wakes it. `po` runs its rounds
//! twice: right after the guest wrote its RAM (the page-out writes it back), and once the
//! daemon's background write-back of an idle guest (after half its `idle_after`, 20 s here)
//! has left nothing dirty.
//!
//! Prints, per size and mode, medians over the rounds: the RAM in host memory while asleep
//! (`pa`: QEMU's resident memory; `po`: the RAM file's pages in the page cache; `sv`: none,
//! QEMU has exited), the first byte, the memory back right after it (`po`: the RAM file's
//! pages in the page cache, and of those the ones QEMU maps), the reads of the RAM disk
//! during the wake and their mean time, the time from `vmnap sleep` to the memory freed, the
//! MiB written, and the SYNs the client sent. The targets are judged on the rounds after the
//! idle write-back, as a guest that idleness puts to sleep has it; the rounds right after
//! the writes are printed beside them, with what the disk's reads took then. Asserts nothing
//! about time. Needs root, QEMU, curl, tcpdump, nc, losetup, mkfs.ext4, and about 3 GiB of free
//! disk per GiB of the largest guest.

use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vmnap_api::{self as api, GuestStatus, Request, State};
use vmnap_bench::{median, ms, proc_status_number};
use vmnap_host::pageout::RamFile;
use vmnap_lab::qemu::{GuestImage, VmSpec};
use vmnap_lab::{cmdline, pids_mentioning, Lab, LabOptions};
use vmnap_wire::Mac;

const USAGE: &str = "usage: bench-pageout [--vmnap PATH] [--sizes MIB,MIB,... (128,1024,4096)] \
[--rounds N (3)] [--dirty PERCENT (40)]   (needs root)";

const MIB: u64 = 1 << 20;

fn main() -> std::process::ExitCode {
    vmnap_bench::finish(run())
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    vmnap_bench::need_root("bench-pageout")?;
    let vmnap = vmnap_bench::vmnap_path(&args)?;
    let sizes_text: String = vmnap_bench::flag(&args, "--sizes", "128,1024,4096".into(), USAGE)?;
    let sizes: Vec<u32> = sizes_text
        .split(',')
        .map(|s| s.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--sizes {sizes_text:?}\n{USAGE}"))?;
    if sizes.is_empty() || sizes.iter().any(|&s| !(128..=16384).contains(&s)) {
        bail!("--sizes takes MiB from 128 to 16384\n{USAGE}");
    }
    let rounds: usize = vmnap_bench::flag(&args, "--rounds", 3, USAGE)?;
    let dirty: u32 = vmnap_bench::flag(&args, "--dirty", 40, USAGE)?;
    if rounds == 0 || dirty > 90 {
        bail!("--rounds must be at least 1, --dirty at most 90\n{USAGE}");
    }
    let image = GuestImage::build()?;
    let largest = u64::from(*sizes.iter().max().expect("not empty"));
    let disk = RamDisk::create(largest * MIB * 3 + 512 * MIB)?;
    println!("bench-pageout: page-out sleep beside pause and save, the project's TCG guest, the real daemon");
    println!(
        "  RAM files and state files on {} (ext4 on {}, direct I/O, read_ahead_kb 0); {rounds} round(s) a mode; the guest writes {dirty}% of its RAM before each sleep\n",
        disk.mount.display(),
        disk.device
    );
    let mut all = Vec::new();
    for &size in &sizes {
        let r = one_size(&vmnap, &image, &disk, size, rounds, dirty)
            .with_context(|| format!("the {size} MiB guests"))?;
        print_size(size, &r);
        all.push((size, r));
    }
    print_targets(&all);
    Ok(())
}

/// A file system for RAM files: an ext4 image on a loop device with direct I/O and no
/// readahead, mounted; everything undone on drop.
struct RamDisk {
    image: PathBuf,
    device: String,
    mount: PathBuf,
    mounted: bool,
}

impl RamDisk {
    fn create(bytes: u64) -> anyhow::Result<Self> {
        vmnap_lab::check_tools(&["mkfs.ext4", "losetup", "mount", "umount"])?;
        let base = std::env::temp_dir().join(format!("vmnap-bench-pageout-{}", std::process::id()));
        let mut disk = RamDisk {
            image: base.with_extension("img"),
            device: String::new(),
            mount: base,
            mounted: false,
        };
        let f = std::fs::File::create(&disk.image)
            .with_context(|| format!("cannot create {}", disk.image.display()))?;
        f.set_len(bytes)?;
        drop(f);
        sh(&["mkfs.ext4", "-q", "-F", &disk.image.to_string_lossy()])?;
        disk.device = sh(&[
            "losetup",
            "--direct-io=on",
            "-f",
            "--show",
            &disk.image.to_string_lossy(),
        ])?
        .trim()
        .to_owned();
        std::fs::create_dir_all(&disk.mount)?;
        sh(&["mount", &disk.device, &disk.mount.to_string_lossy()])?;
        disk.mounted = true;
        let name = disk.device.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/block/{name}/queue/read_ahead_kb"), "0")
            .with_context(|| format!("cannot set the readahead of {}", disk.device))?;
        Ok(disk)
    }
}

impl Drop for RamDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = sh(&["umount", &self.mount.to_string_lossy()]);
        }
        if !self.device.is_empty() {
            let _ = sh(&["losetup", "-d", &self.device]);
        }
        let _ = std::fs::remove_dir(&self.mount);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Runs a command; its standard output, or an error with its standard error.
fn sh(argv: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("cannot run {} (not installed?)", argv[0]))?;
    if !out.status.success() {
        bail!(
            "{argv:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One mode's rounds.
#[derive(Debug, Default)]
struct Rounds {
    /// The RAM in host memory while asleep, MiB.
    asleep_mib: Vec<f64>,
    /// First byte of the connection that woke it, ms.
    first_byte: Vec<f64>,
    /// The RAM file's pages in host memory right after the first answer, and of those
    /// mapped by QEMU, MiB (page-out only).
    back_mib: Vec<f64>,
    back_mapped_mib: Vec<f64>,
    /// From `vmnap sleep` to the memory freed, ms.
    to_free: Vec<f64>,
    /// Written back at the sleep, MiB.
    written_mib: Vec<f64>,
    /// The RAM disk's reads during the wake, and their mean time, ms (page-out only).
    wake_reads: Vec<f64>,
    read_ms: Vec<f64>,
    syns: usize,
}

#[derive(Debug, Default)]
struct SizeResult {
    pause: Rounds,
    pageout: Rounds,
    pageout_written_back: Rounds,
    save: Rounds,
}

struct Guests {
    lab: Lab,
    socket: PathBuf,
    client: String,
    daemon: Option<u32>,
    log: PathBuf,
    disk: DiskStat,
}

/// The RAM disk's block device, for its count of reads.
struct DiskStat {
    stat: PathBuf,
}

impl DiskStat {
    fn of(device: &str) -> Self {
        DiskStat {
            stat: Path::new("/sys/block")
                .join(device.trim_start_matches("/dev/"))
                .join("stat"),
        }
    }

    /// Reads completed, and the milliseconds spent on them, so far (`stat`'s first and
    /// fourth fields).
    fn reads(&self) -> anyhow::Result<(u64, u64)> {
        let text = std::fs::read_to_string(&self.stat)
            .with_context(|| format!("cannot read {}", self.stat.display()))?;
        let f: Vec<u64> = text
            .split_ascii_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        Ok((
            f.first().copied().unwrap_or(0),
            f.get(3).copied().unwrap_or(0),
        ))
    }
}

impl Guests {
    fn status(&self, guest: &str) -> anyhow::Result<GuestStatus> {
        vmnap_bench::status(&self.socket)?
            .into_iter()
            .find(|g| g.name == guest)
            .with_context(|| format!("{guest} is not in the daemon's status"))
    }

    fn dirty(&self, ip: Ipv4Addr, percent: u32) -> anyhow::Result<()> {
        let out = self.lab.exec(
            &self.client,
            &["sh", "-c", &format!("echo {percent} | nc -w 300 {ip} 8")],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.contains("dirtied") {
            bail!("the guest at {ip} did not write its RAM: {text:?}");
        }
        Ok(())
    }

    fn sleep(&self, guest: &str) -> anyhow::Result<()> {
        vmnap_bench::call(
            &self.socket,
            &Request::Sleep {
                guest: guest.into(),
            },
        )?;
        let st = self.status(guest)?;
        if st.state != State::Sleeping {
            bail!("{guest} is {} after `vmnap sleep`", st.state);
        }
        Ok(())
    }

    /// curl's first byte from the client, ms, and the SYNs it sent.
    fn wake_by_curl(&self, ip: Ipv4Addr) -> anyhow::Result<(f64, usize)> {
        let capture = self.lab.capture(
            &self.client,
            "eth0",
            &format!("dst host {ip} and tcp dst port 80 and tcp[tcpflags] & tcp-syn != 0"),
        )?;
        let out = self.lab.exec(
            &self.client,
            &[
                "curl",
                "-s",
                "--max-time",
                "60",
                "-o",
                "/dev/null",
                "-w",
                "%{time_starttransfer}",
                &format!("http://{ip}/"),
            ],
        )?;
        let lines = capture.stop()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("curl to {ip} failed ({}): {text}", out.status);
        }
        let s: f64 = text.trim().parse().context("curl's time")?;
        Ok((
            s * 1000.0,
            lines.iter().filter(|l| l.contains("Flags [S]")).count(),
        ))
    }

    fn wait_awake(&self, guest: &str, wakes: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .status(guest)
            .is_ok_and(|s| s.state == State::Awake && s.wakes > wakes)
        {
            if Instant::now() > deadline {
                bail!("{guest} did not finish waking");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The last page-out event of `guest` after `seq`: freed and written bytes, ms.
    fn paged_out_after(&self, guest: &str, seq: u64) -> anyhow::Result<Option<(u64, u64, f64)>> {
        let mut found = None;
        api::events(&self.socket, false, Some(guest), |rec| {
            if let api::Event::PagedOut {
                freed_bytes,
                written_bytes,
                took_ms,
                ..
            } = rec.event
            {
                if rec.seq > seq {
                    found = Some((freed_bytes, written_bytes, took_ms));
                }
            }
            true
        })
        .context("events")?;
        Ok(found)
    }

    fn last_seq(&self) -> anyhow::Result<u64> {
        let mut seq = 0;
        api::events(&self.socket, false, None, |rec| {
            seq = seq.max(rec.seq);
            true
        })?;
        Ok(seq)
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon.take() {
            self.lab.kill(pid);
        }
        // The QEMU a save-mode guest was restored into is the daemon's child, not the lab's.
        let dir = self.lab.dir().display().to_string();
        for pid in pids_mentioning(&dir) {
            // SAFETY: kill(2) on a QEMU this benchmark's daemon started (found by its lab
            // directory in the command line).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn one_size(
    vmnap: &Path,
    image: &GuestImage,
    disk: &RamDisk,
    size: u32,
    rounds: usize,
    dirty: u32,
) -> anyhow::Result<SizeResult> {
    let mut lab = Lab::new(LabOptions::default()).context("cannot build the lab")?;
    let client = lab
        .add_client(
            "c0",
            Ipv4Addr::new(198, 18, 1, 100),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, 0x100),
            0,
        )?
        .netns
        .clone();
    let ram_file = disk.mount.join(format!("po-{size}.ram"));
    let state_file = disk.mount.join(format!("sv-{size}.state"));
    let mut guests_toml = String::new();
    let mut ips = Vec::new();
    for (n, name) in ["pa", "po", "sv"].iter().enumerate() {
        let n = n as u8 + 1;
        let mut spec = VmSpec::new(
            name,
            Ipv4Addr::new(198, 18, 0, 30 + n),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x30 + u16::from(n)),
            image.clone(),
        );
        spec.memory_mib = size;
        if *name == "po" {
            spec.ram_file = Some(ram_file.clone());
            spec.wrapper = vec![vmnap.into(), OsString::from("run-qemu")];
        }
        let vm = lab
            .add_vm(spec)
            .with_context(|| format!("cannot boot {name}"))?
            .clone();
        let mode = match *name {
            "pa" => "mode = \"pause\"\nidle_after = \"off\"\n".to_owned(),
            "po" => "mode = \"pageout\"\nidle_after = \"20s\"\n".to_owned(),
            _ => {
                // The same command line for restores, without the lab's QMP socket (the
                // backend adds its own).
                let mut argv = cmdline(vm.pid);
                let at = argv
                    .iter()
                    .position(|a| a.starts_with("unix:") && a.contains(&*vm.qmp.to_string_lossy()))
                    .context("the lab's -qmp argument")?;
                argv.drain(at - 1..=at);
                let quoted: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
                format!(
                    "mode = \"save\"\nqemu_command = [{}]\nstate_file = \"{}\"\nidle_after = \"off\"\n",
                    quoted.join(", "),
                    state_file.display()
                )
            }
        };
        guests_toml += &format!(
            "\n[[guest]]\nname = \"{name}\"\nbridge = \"br0\"\ninterface = \"{}\"\nmac = \"{}\"\n\
             ipv4 = [\"{}\"]\nbackend = \"qmp\"\nqmp = \"{}\"\nwake_on = [\"tcp/80\"]\n{mode}",
            vm.tap,
            Mac(vm.mac),
            vm.ipv4,
            vm.qmp.display(),
        );
        ips.push((vm.name.clone(), vm.ipv4, vm.pid));
    }
    let socket = lab.dir().join("vmnap.sock");
    let config = lab.dir().join("vmnap.toml");
    let log = lab.dir().join("vmnap.log");
    std::fs::write(
        &config,
        format!(
            "[api]\nsocket = \"{}\"\n[idle]\ninterval = \"1s\"\n{guests_toml}",
            socket.display()
        ),
    )?;
    let daemon = vmnap_bench::start_daemon(
        &mut lab,
        vmnap,
        &config,
        &socket,
        &log,
        Duration::from_secs(30),
    )?;
    let g = Guests {
        lab,
        socket,
        client,
        daemon: Some(daemon),
        log,
        disk: DiskStat::of(&disk.device),
    };
    let fail = |e: anyhow::Error| {
        anyhow::anyhow!(
            "{e:#}\n--- daemon log ---\n{}",
            std::fs::read_to_string(&g.log).unwrap_or_default()
        )
    };
    let (pa_ip, pa_pid) = (ips[0].1, ips[0].2);
    let (po_ip, po_pid) = (ips[1].1, ips[1].2);
    let sv_ip = ips[2].1;
    let ram = RamFile::open(po_pid, &ram_file).context("po's RAM file")?;
    let mut r = SizeResult::default();
    for _ in 0..rounds {
        round_pause(&g, pa_ip, pa_pid, dirty, &mut r.pause).map_err(fail)?;
        round_pageout(&g, po_ip, &ram, dirty, false, &mut r.pageout).map_err(fail)?;
        round_pageout(&g, po_ip, &ram, dirty, true, &mut r.pageout_written_back).map_err(fail)?;
        round_save(&g, sv_ip, dirty, &mut r.save).map_err(fail)?;
    }
    Ok(r)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn count_wake(r: &mut Rounds, first_byte: f64, syns: usize) {
    r.first_byte.push(first_byte);
    r.syns += syns;
}

fn round_pause(
    g: &Guests,
    ip: Ipv4Addr,
    pid: u32,
    dirty: u32,
    r: &mut Rounds,
) -> anyhow::Result<()> {
    g.dirty(ip, dirty)?;
    let wakes = g.status("pa")?.wakes;
    let t = Instant::now();
    g.sleep("pa")?;
    r.to_free.push(ms(t.elapsed()));
    r.written_mib.push(0.0);
    r.asleep_mib
        .push(proc_status_number(pid, "VmRSS")? as f64 / 1024.0);
    let (first_byte, syns) = g.wake_by_curl(ip)?;
    count_wake(r, first_byte, syns);
    g.wait_awake("pa", wakes)
}

fn round_pageout(
    g: &Guests,
    ip: Ipv4Addr,
    ram: &RamFile,
    dirty: u32,
    written_back: bool,
    r: &mut Rounds,
) -> anyhow::Result<()> {
    g.dirty(ip, dirty)?;
    if written_back {
        // The daemon writes an idle guest's RAM back once it has idled half its idle_after.
        let deadline = Instant::now() + Duration::from_secs(60);
        while ram.resident()?.dirty > ram.len() / 100 {
            if Instant::now() > deadline {
                bail!("po's RAM was not written back while it idled");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let wakes = g.status("po")?.wakes;
    let seq = g.last_seq()?;
    let t = Instant::now();
    g.sleep("po")?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let (_, written, _) = loop {
        if let Some(p) = g.paged_out_after("po", seq)? {
            break p;
        }
        if Instant::now() > deadline {
            bail!("po was not paged out");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    r.to_free.push(ms(t.elapsed()));
    r.written_mib.push(mib(written));
    r.asleep_mib.push(mib(ram.resident()?.cached));
    let disk_before = g.disk.reads()?;
    let (first_byte, syns) = g.wake_by_curl(ip)?;
    let (reads, ticks) = g.disk.reads()?;
    let reads = reads - disk_before.0;
    r.wake_reads.push(reads as f64);
    r.read_ms
        .push((ticks - disk_before.1) as f64 / (reads.max(1)) as f64);
    let back = ram.resident()?;
    r.back_mib.push(mib(back.cached));
    r.back_mapped_mib.push(mib(back.mapped));
    count_wake(r, first_byte, syns);
    g.wait_awake("po", wakes)
}

fn round_save(g: &Guests, ip: Ipv4Addr, dirty: u32, r: &mut Rounds) -> anyhow::Result<()> {
    g.dirty(ip, dirty)?;
    let wakes = g.status("sv")?.wakes;
    let t = Instant::now();
    g.sleep("sv")?;
    r.to_free.push(ms(t.elapsed()));
    // QEMU has exited: none of the guest's RAM is in host memory.
    r.asleep_mib.push(0.0);
    let (first_byte, syns) = g.wake_by_curl(ip)?;
    count_wake(r, first_byte, syns);
    g.wait_awake("sv", wakes)
}

fn med(xs: &[f64]) -> String {
    if xs.is_empty() {
        "-".into()
    } else {
        format!("{:.1}", median(xs))
    }
}

fn print_size(size: u32, r: &SizeResult) {
    println!("{size} MiB guest:");
    println!(
        "  {:<34} {:>14} {:>11} {:>9} {:>20} {:>17} {:>13} {:>10} {:>6}",
        "mode",
        "asleep MiB",
        "first byte",
        "slowest",
        "back MiB (mapped)",
        "disk reads (ms)",
        "to free ms",
        "written",
        "SYNs"
    );
    for (name, x) in [
        ("pause", &r.pause),
        ("pageout, right after the writes", &r.pageout),
        ("pageout, after write-back idle", &r.pageout_written_back),
        ("save", &r.save),
    ] {
        let back = if x.back_mib.is_empty() {
            "-".to_owned()
        } else {
            format!("{} ({})", med(&x.back_mib), med(&x.back_mapped_mib))
        };
        let reads = if x.wake_reads.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.0} ({:.2})", median(&x.wake_reads), median(&x.read_ms))
        };
        println!(
            "  {name:<34} {:>8} {:>4.1}% {:>8} ms {:>6.0} ms {:>20} {:>17} {:>13} {:>7} MiB {:>3}/{}",
            med(&x.asleep_mib),
            if x.asleep_mib.is_empty() {
                0.0
            } else {
                median(&x.asleep_mib) * 100.0 / f64::from(size)
            },
            med(&x.first_byte),
            x.first_byte.iter().copied().fold(0.0, f64::max),
            back,
            reads,
            med(&x.to_free),
            med(&x.written_mib),
            x.syns,
            x.first_byte.len(),
        );
    }
    println!();
}

fn print_targets(all: &[(u32, SizeResult)]) {
    println!(
        "targets (issue 12), for a guest put to sleep as idleness does it (after its RAM was \
         written back while it idled): asleep <= 2% of RAM; first byte <= 50 ms median and \
         within 1.5x from the smallest to the largest; back after the first answer <= 32 MiB; \
         one SYN a wake"
    );
    let idle = |r: &SizeResult| median(&r.pageout_written_back.first_byte);
    let right_after = |r: &SizeResult| median(&r.pageout.first_byte);
    if let (Some((small, s)), Some((large, l))) = (all.first(), all.last()) {
        let ratio = idle(l) / idle(s).max(1e-9);
        println!(
            "  page-out first byte {small} MiB -> {large} MiB: {:.1} -> {:.1} ms ({ratio:.2}x, {}); save: {:.1} -> {:.1} ms",
            idle(s),
            idle(l),
            if ratio <= 1.5 { "met" } else { "MISSED" },
            median(&s.save.first_byte),
            median(&l.save.first_byte),
        );
    }
    for (size, r) in all {
        let x = &r.pageout_written_back;
        let pct = median(&x.asleep_mib) * 100.0 / f64::from(*size);
        let back = median(&x.back_mib);
        println!(
            "  {size} MiB: asleep {pct:.2}% {}, first byte {:.1} ms {}, back {back:.1} MiB {}, SYNs {} for {} wakes; \
             woken right after a page-out that wrote {:.0} MiB: {:.1} ms, its {:.0} reads at {:.2} ms each (after the idle write-back: {:.2} ms)",
            if pct <= 2.0 { "met" } else { "MISSED" },
            idle(r),
            if idle(r) <= 50.0 { "met" } else { "MISSED" },
            if back <= 32.0 { "met" } else { "MISSED" },
            r.pageout.syns + x.syns,
            r.pageout.first_byte.len() + x.first_byte.len(),
            median(&r.pageout.written_mib),
            right_after(r),
            median(&r.pageout.wake_reads),
            median(&r.pageout.read_ms),
            median(&x.read_ms),
        );
    }
}
