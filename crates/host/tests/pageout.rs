//! Page-out on a real kernel: a child process maps a file shared and writes to part of it,
//! as QEMU does its RAM; stopped, its pages are taken out of host memory, and what it wrote
//! is in the file.

mod common;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use vmnap_host::pageout::{PageOutError, RamFile};

const MIB: u64 = 1 << 20;
const LEN: u64 = 64 * MIB;
/// The child writes this byte to each page of the first 40% of the file.
const MARK: u8 = 0x5a;

/// A file of `LEN` bytes on a disk (the test's target directory; `/tmp` may be a tmpfs,
/// whose pages have nowhere to go).
fn ram_file(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("pageout-{tag}-{}", std::process::id()));
    let f = std::fs::File::create(&path).expect("create the RAM file");
    f.set_len(LEN).expect("size it");
    path
}

/// A child process that maps `path` (shared or not), writes [`MARK`] to each page of its
/// first 40%, and then waits to be killed. Ended and reaped on drop.
struct Child {
    pid: libc::pid_t,
}

/// What the child does besides mapping the file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Advice {
    /// Nothing.
    None,
    /// `madvise(MADV_HUGEPAGE)` over its mapping, as QEMU does over guest RAM.
    HugePages,
    /// The same, under [`vmnap_host::pageout::ignore_huge_page_advice`].
    HugePagesIgnored,
}

impl Child {
    fn map(path: &PathBuf, shared: bool) -> Child {
        Self::map_advised(path, shared, Advice::None)
    }

    fn map_advised(path: &PathBuf, shared: bool, advice: Advice) -> Child {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the RAM file");
        let mut ready = [0 as libc::c_int; 2];
        // SAFETY: pipe(2) fills the two descriptors.
        assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
        let flags = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // SAFETY: the child calls only async-signal-safe functions (mmap, write, pause,
        // _exit) and touches no lock or allocation of the parent's.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: in the child; see above. The filter is two prctl calls over a program
            // on the stack.
            unsafe {
                if advice == Advice::HugePagesIgnored
                    && vmnap_host::pageout::ignore_huge_page_advice().is_err()
                {
                    libc::_exit(2);
                }
                let len = LEN as usize;
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                    file.as_raw_fd(),
                    0,
                );
                if p == libc::MAP_FAILED {
                    libc::_exit(1);
                }
                if advice != Advice::None && libc::madvise(p, len, libc::MADV_HUGEPAGE) != 0 {
                    libc::_exit(3);
                }
                let bytes = p.cast::<u8>();
                let mut at = 0;
                while at < len * 4 / 10 {
                    std::ptr::write_volatile(bytes.add(at), MARK);
                    at += 4096;
                }
                libc::write(ready[1], b"r".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        let mut byte = 0u8;
        // SAFETY: reads one byte into `byte` from the pipe's read end.
        let n = unsafe { libc::read(ready[0], (&mut byte as *mut u8).cast(), 1) };
        assert_eq!(n, 1, "the child did not map the file");
        // SAFETY: the pipe's two ends, not used again.
        unsafe {
            libc::close(ready[0]);
            libc::close(ready[1]);
        }
        Child { pid }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the child this test forked, not reaped yet.
        assert_eq!(unsafe { libc::kill(self.pid, sig) }, 0);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: kill and waitpid on the child this test forked.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

#[test]
fn a_stopped_process_file_backed_ram_leaves_host_memory_and_its_writes_are_kept() {
    let path = ram_file("evict");
    let child = Child::map(&path, true);
    let ram = RamFile::open(child.pid as u32, &path).expect("open");
    assert_eq!(ram.len(), LEN);
    let before = ram.resident().expect("resident");
    let written = LEN * 4 / 10;
    assert!(
        before.cached >= written && before.mapped >= written,
        "what the child wrote is in memory: {before:?}"
    );
    // Stopped, as a paused QEMU: nothing it does brings a page back meanwhile.
    child.signal(libc::SIGSTOP);
    let evicted = ram.evict().expect("evict");
    assert_eq!(evicted.before, before);
    assert!(
        evicted.after.cached <= LEN / 50 && evicted.after.mapped <= LEN / 50,
        "at most 2% left: {evicted:?}"
    );
    assert_eq!(ram.resident().expect("resident"), evicted.after);
    // What the child wrote is in the file, read back from the disk.
    let data = std::fs::read(&path).expect("read the file");
    let marked = data.chunks(4096).filter(|p| p[0] == MARK).count() as u64;
    assert_eq!(marked, written.div_ceil(4096), "every written page kept");
    drop(data);
    child.signal(libc::SIGCONT);
    drop(child);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn background_write_back_leaves_the_eviction_less_to_write() {
    let path = ram_file("wb");
    let child = Child::map(&path, true);
    let ram = RamFile::open(child.pid as u32, &path).expect("open");
    let dirty = ram.resident().expect("resident").dirty;
    assert!(
        dirty >= LEN * 4 / 10,
        "what the child wrote is dirty: {dirty}"
    );
    ram.start_write_back().expect("start write-back");
    // The kernel writes it back by itself: the file's dirty pages go, and its cache stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = ram.resident().expect("resident");
        if r.dirty == 0 {
            assert!(r.cached >= LEN * 4 / 10, "written back, not evicted: {r:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the file still has dirty pages: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.signal(libc::SIGSTOP);
    let evicted = ram.evict().expect("evict");
    assert_eq!(
        evicted.before.dirty, 0,
        "nothing left to write: {evicted:?}"
    );
    assert!(evicted.after.cached <= LEN / 50, "{evicted:?}");
    drop(child);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn what_the_process_touched_is_read_and_a_prefetch_brings_it_back_unmapped() {
    let path = ram_file("touched");
    let child = Child::map(&path, true);
    let ram = RamFile::open(child.pid as u32, &path).expect("open");
    // It wrote each page of the first 40%: that is what it has in its page tables, and
    // what the kernel mapped around them (fault-around maps a page cache folio whole).
    let written = (LEN * 4 / 10).div_ceil(4096) * 4096;
    let touched = ram.touched().expect("touched");
    assert!(
        touched.len() == 1
            && touched[0].start == 0
            && (written..=written + 2 * MIB).contains(&touched[0].end),
        "{touched:?}, not 0..{written}"
    );
    child.signal(libc::SIGSTOP);
    ram.evict().expect("evict");
    assert_eq!(ram.touched().expect("touched"), []);
    // Read back, without waiting: into the page cache, not into the process's page
    // tables (so what it touches next is told apart from what was read for it). A range
    // past the end of the file is cut.
    ram.prefetch(&[
        0..MIB,
        8 * MIB..9 * MIB,
        8 * MIB + 4096..10 * MIB,
        LEN - 4096..LEN + MIB,
    ])
    .expect("prefetch");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want = 3 * MIB + 4096;
    loop {
        let r = ram.resident().expect("resident");
        if r.cached >= want {
            assert!(r.cached <= want + MIB, "no more than was asked for: {r:?}");
            assert_eq!(r.mapped, 0, "{r:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the prefetch did not read {want} bytes: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ram.touched().expect("touched"), []);
    drop(child);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_private_mapping_or_none_is_refused_by_name() {
    let path = ram_file("private");
    let child = Child::map(&path, false);
    match RamFile::open(child.pid as u32, &path) {
        Err(e @ PageOutError::Private { .. }) => {
            assert!(e.to_string().contains("share=on"), "{e}");
        }
        other => panic!("a private mapping: {other:?}"),
    }
    drop(child);
    match RamFile::open(std::process::id(), &path) {
        Err(e @ PageOutError::NotMapped { .. }) => {
            assert!(e.to_string().contains("does not map"), "{e}");
        }
        other => panic!("no mapping: {other:?}"),
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn huge_page_advice_is_seen_and_can_be_made_to_do_nothing() {
    let path = ram_file("huge");
    let advised = Child::map_advised(&path, true, Advice::HugePages);
    let ram = RamFile::open(advised.pid as u32, &path).expect("open");
    assert!(
        ram.huge_pages_advised().expect("smaps"),
        "QEMU's advice is seen"
    );
    drop(advised);
    let ignored = Child::map_advised(&path, true, Advice::HugePagesIgnored);
    let ram = RamFile::open(ignored.pid as u32, &path).expect("open");
    assert!(
        !ram.huge_pages_advised().expect("smaps"),
        "the advice succeeded and did nothing"
    );
    // The rest of the child's work went on: it wrote its pages.
    assert!(ram.resident().expect("resident").mapped >= LEN * 4 / 10);
    drop(ignored);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_cancelled_eviction_stops_and_says_so() {
    let path = ram_file("cancel");
    let child = Child::map(&path, true);
    let ram = RamFile::open(child.pid as u32, &path).expect("open");
    child.signal(libc::SIGSTOP);
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let evicted = ram.evict_unless(&cancel).expect("evict");
    assert!(evicted.cancelled, "{evicted:?}");
    assert!(
        evicted.after.cached >= LEN * 4 / 10,
        "nothing was taken out: {evicted:?}"
    );
    cancel.store(false, std::sync::atomic::Ordering::Relaxed);
    let evicted = ram.evict_unless(&cancel).expect("evict");
    assert!(
        !evicted.cancelled && evicted.after.cached <= LEN / 50,
        "{evicted:?}"
    );
    drop(child);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_largest_shared_file_mapping_of_a_process_is_found_without_its_path() {
    let path = ram_file("find");
    let child = Child::map(&path, true);
    // Removed while mapped, as QEMU does with a RAM file it creates in a directory.
    std::fs::remove_file(&path).expect("remove");
    let ram = RamFile::find_in(child.pid as u32).expect("found");
    assert_eq!(ram.len(), LEN);
    assert!(
        ram.path().to_string_lossy().contains("pageout-find"),
        "{}",
        ram.path().display()
    );
    assert!(ram.resident().expect("resident").mapped >= LEN * 4 / 10);
    assert!(ram.process_alive());
    drop(child);
    assert!(!ram.process_alive(), "the child was killed and reaped");
    match RamFile::find_in(std::process::id()) {
        Err(PageOutError::NotMapped { .. }) => {}
        other => panic!("this test maps no file shared: {other:?}"),
    }
}

#[test]
fn the_process_holding_a_tap_is_found_by_the_taps_name() {
    let ns = common::Netns::new("tap");
    let found = ns.run(|| {
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("open /dev/net/tun");
        // struct ifreq: the name, then the flags (IFF_TAP | IFF_NO_PI).
        let mut ifr = [0u8; 40];
        ifr[..7].copy_from_slice(b"vt-find");
        ifr[16..18].copy_from_slice(&(0x0002u16 | 0x1000).to_ne_bytes());
        const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
        // SAFETY: TUNSETIFF reads (and writes back) the ifreq above, alive for the call.
        let r = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) };
        assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        let found = vmnap_host::process::holding_tap("vt-find");
        drop(tun);
        found
    });
    assert_eq!(found, vec![std::process::id()]);
    assert!(vmnap_host::process::holding_tap("vt-nobody").is_empty());
}
