//! Page-out: a stopped guest's RAM out of host memory, brought back only as the guest
//! touches it.
//!
//! A QEMU guest whose RAM is a shared mapping of a file (`memory-backend-file,share=on`,
//! or libvirt's `<memoryBacking><source type='file'/><access mode='shared'/>`) keeps its
//! RAM in the file's page cache. While it is paused, [`RamFile::evict`] empties that cache:
//!
//! 1. write-back of the file (`sync_file_range`, waiting): the kernel's reclaim writes back
//!    no dirty page of a file on behalf of a madvise, it skips it, so the dirty pages are
//!    written first;
//! 2. `process_madvise(MADV_PAGEOUT)` over QEMU's mappings of the file (through a pidfd):
//!    the pages leave QEMU's page tables and, clean now, the page cache;
//! 3. `posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file: what the mappings did not
//!    hold (pages the guest has not touched since readahead brought them) goes too.
//!
//! The file is found in QEMU's mappings by device and inode, so a path that names it
//! through a symbolic link, or a file removed after QEMU opened it, is still recognised.
//! How much of it is in memory is read with `mincore` over a mapping of this process's own
//! that is never touched ([`RamFile::resident`]): the page cache is shared, so that is the
//! guest's RAM in host memory, whoever maps it.
//!
//! On resume nothing is done: each page the guest touches is read back from the file by a
//! page fault, and with it whatever the kernel reads around it. Two things decide how much
//! that is, and both must be small for a wake to bring back little more than the guest
//! touches (measured: a 128 MiB guest answering a new connection touches about 2 MiB; with
//! either left as it is, 60 to 80 MiB came back):
//!
//! - **Huge-page advice.** QEMU advises huge pages on all guest RAM
//!   (`madvise(MADV_HUGEPAGE)`), and for a file mapping with that advice a fault reads two
//!   2 MiB folios, whatever the device's readahead ([`RamFile::huge_pages_advised`]).
//!   [`ignore_huge_page_advice`] installs a seccomp filter under which that `madvise` does
//!   nothing, for the process that calls it and all it starts (`vmnap run-qemu`).
//! - **The device's readahead** ([`RamFile::readahead_kib`]): a fault reads that much
//!   around the page (128 KiB on most disks, 8 MiB on some virtual ones). A file system
//!   kept for RAM files, on a device with `read_ahead_kb` 0, reads only what is touched.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// `MADV_PAGEOUT` (Linux 5.4).
const MADV_PAGEOUT: libc::c_int = 21;
/// How much of the file [`RamFile::evict_unless`] writes back between two looks at its
/// `cancel`: at most this much stands between a wake and its resume.
pub const WRITE_BACK_STEP: u64 = 32 << 20;
/// How much of a mapping it pages out between two looks.
pub const PAGE_OUT_STEP: u64 = 256 << 20;
/// The most ranges one [`RamFile::prefetch`] asks for, one system call each: beyond that,
/// neighbouring ranges are read as one, with what lies between them.
pub const PREFETCH_RANGES: usize = 4096;
/// The most `iovec`s one `process_madvise` takes (`UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

/// Errors of [`RamFile`]. Each names the file and, where one is involved, the process.
#[derive(Debug, thiserror::Error)]
pub enum PageOutError {
    /// The file could not be opened or read.
    #[error("cannot open the RAM file {}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The process could not be opened (`pidfd_open`) or its mappings read.
    #[error("cannot read the memory mappings of process {pid}")]
    Process {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The process maps the file nowhere.
    #[error("process {pid} does not map {}", .path.display())]
    NotMapped {
        /// The process.
        pid: u32,
        /// The file.
        path: PathBuf,
    },
    /// The process maps the file privately: its writes stay in its own anonymous memory,
    /// which a page-out of the file cannot reach.
    #[error(
        "process {pid} maps {} privately (QEMU's memory-backend-file needs share=on)",
        .path.display()
    )]
    Private {
        /// The process.
        pid: u32,
        /// The file.
        path: PathBuf,
    },
    /// A step of the eviction failed; what came before it happened.
    #[error("cannot {step} {}", .path.display())]
    Evict {
        /// `write back`, `page out`, or `drop from the page cache`.
        step: &'static str,
        /// The file.
        path: PathBuf,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

/// Where a process maps the file: `[start, end)` in its address space, from `offset` in
/// the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The first address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// The file's offset mapped at `start`.
    pub offset: u64,
}

/// How much of the file is in host memory, in bytes ([`RamFile::resident`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resident {
    /// In the page cache: the guest's RAM that the host holds, mapped or not.
    pub cached: u64,
    /// Of that, mapped by the process now (the `Rss` of its mappings of the file).
    pub mapped: u64,
    /// Of that, dirty or being written back: what an eviction has to write first (0 where
    /// the kernel cannot tell, before Linux 6.5).
    pub dirty: u64,
}

/// What an eviction did ([`RamFile::evict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// The file in host memory before.
    pub before: Resident,
    /// And after.
    pub after: Resident,
    /// How long `fdatasync` took (the dirty pages written out).
    pub write_back: std::time::Duration,
    /// The whole eviction.
    pub took: std::time::Duration,
    /// It stopped early, asked to ([`RamFile::evict_unless`]).
    pub cancelled: bool,
}

/// A guest's RAM file and the process (QEMU) that maps it shared.
#[derive(Debug)]
pub struct RamFile {
    pid: u32,
    pidfd: OwnedFd,
    file: File,
    path: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
}

impl RamFile {
    /// Opens the RAM file at `path` as process `pid` maps it; refuses a process that maps
    /// it nowhere, or privately.
    pub fn open(pid: u32, path: &Path) -> Result<Self, PageOutError> {
        let open_error = |source| PageOutError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        Self::from_file(pid, file, path.to_owned())
    }

    fn from_file(pid: u32, file: File, path: PathBuf) -> Result<Self, PageOutError> {
        let meta = file.metadata().map_err(|source| PageOutError::Open {
            path: path.clone(),
            source,
        })?;
        let pidfd = pidfd_open(pid).map_err(|source| PageOutError::Process { pid, source })?;
        let ram = RamFile {
            pid,
            pidfd,
            file,
            path,
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
        };
        ram.mappings()?;
        Ok(ram)
    }

    /// Finds the RAM file of process `pid` (a QEMU whose command line vmnap does not know,
    /// as libvirt starts it): the file the process maps shared and writable the most of (a
    /// guest's RAM is by far its largest mapping), opened through `/proc/PID/map_files`, so
    /// that a file QEMU created and removed at once (libvirt's `memory_backing_dir`) is
    /// found too. Refuses a process that maps no file shared and writable.
    pub fn find_in(pid: u32) -> Result<Self, PageOutError> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map_err(|source| PageOutError::Process { pid, source })?;
        // By file: its bytes mapped, and one of its mappings.
        let mut files: Vec<((u64, u64), u64, Mapping)> = Vec::new();
        for m in maps.lines().filter_map(parse_maps_line) {
            if !m.shared || !m.writable || m.ino == 0 {
                continue;
            }
            let len = m.range.end - m.range.start;
            match files.iter_mut().find(|f| f.0 == (m.dev, m.ino)) {
                Some(f) => f.1 += len,
                None => files.push(((m.dev, m.ino), len, m.range)),
            }
        }
        let Some(&(_, _, range)) = files.iter().max_by_key(|f| f.1) else {
            return Err(PageOutError::NotMapped {
                pid,
                path: PathBuf::from("(any file, shared and writable)"),
            });
        };
        let via = PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            range.start, range.end
        ));
        let shown = std::fs::read_link(&via).unwrap_or_else(|_| via.clone());
        let open_error = |source| PageOutError::Open {
            path: shown.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .open(&via)
            .map_err(open_error)?;
        Self::from_file(pid, file, shown)
    }

    /// Whether the process still runs (asked through its pidfd, so a PID reused since
    /// is not taken for it).
    pub fn process_alive(&self) -> bool {
        // SAFETY: pidfd_send_signal(2) with signal 0 only checks; the pidfd is this
        // RamFile's own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        r == 0
    }

    /// The process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size, in bytes: the guest's RAM.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (no RAM).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The process's shared mappings of the file, from `/proc/PID/maps`.
    pub fn mappings(&self) -> Result<Vec<Mapping>, PageOutError> {
        let maps =
            std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).map_err(|source| {
                PageOutError::Process {
                    pid: self.pid,
                    source,
                }
            })?;
        let mut shared = Vec::new();
        let mut private = false;
        for line in maps.lines() {
            let Some(m) = parse_maps_line(line) else {
                continue;
            };
            if (m.dev, m.ino) != (self.dev, self.ino) {
                continue;
            }
            if m.shared {
                shared.push(m.range);
            } else {
                private = true;
            }
        }
        match (shared.is_empty(), private) {
            (false, _) => Ok(shared),
            (true, true) => Err(PageOutError::Private {
                pid: self.pid,
                path: self.path.clone(),
            }),
            (true, false) => Err(PageOutError::NotMapped {
                pid: self.pid,
                path: self.path.clone(),
            }),
        }
    }

    /// How much of the file is in host memory now: the page cache's count for the file
    /// (`cachestat`, Linux 6.5; before, `mincore` over a mapping of this process's own that
    /// is never touched, so that reading it brings nothing in), and the process's `Rss` of
    /// its mappings.
    pub fn resident(&self) -> Result<Resident, PageOutError> {
        let (cached, dirty) = self.cached_and_dirty()?;
        let mapped = self.mapped_bytes()?;
        Ok(Resident {
            cached,
            mapped,
            dirty,
        })
    }

    /// The file's bytes in the page cache alone ([`Resident::cached`]), without walking
    /// the process's mappings for what it maps: what a caller asking every few seconds
    /// needs.
    pub fn cached(&self) -> Result<u64, PageOutError> {
        Ok(self.cached_and_dirty()?.0)
    }

    /// The page cache's count for the file, and of it what is dirty or under write-back.
    fn cached_and_dirty(&self) -> Result<(u64, u64), PageOutError> {
        let open_error = |source| PageOutError::Open {
            path: self.path.clone(),
            source,
        };
        match cachestat(&self.file) {
            Ok(c) => Ok(c),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                Ok((cached_bytes(&self.file, self.len).map_err(open_error)?, 0))
            }
            Err(e) => Err(open_error(e)),
        }
    }

    /// The `Rss` of the process's mappings of the file, from `/proc/PID/smaps`.
    fn mapped_bytes(&self) -> Result<u64, PageOutError> {
        let mut kib = 0u64;
        self.each_smaps_line(|line| {
            if let Some(v) = line.strip_prefix("Rss:") {
                kib += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        })?;
        Ok(kib * 1024)
    }

    /// Calls `f` with each line of `/proc/PID/smaps` that describes one of the process's
    /// mappings of the file (after its first line).
    fn each_smaps_line(&self, mut f: impl FnMut(&str)) -> Result<(), PageOutError> {
        let smaps =
            std::fs::read_to_string(format!("/proc/{}/smaps", self.pid)).map_err(|source| {
                PageOutError::Process {
                    pid: self.pid,
                    source,
                }
            })?;
        let mut ours = false;
        for line in smaps.lines() {
            if let Some(m) = parse_maps_line(line) {
                ours = (m.dev, m.ino) == (self.dev, self.ino);
            } else if ours {
                f(line);
            }
        }
        Ok(())
    }

    /// Starts writing the file's dirty pages back, without waiting for it
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that an eviction later has less to
    /// write. It competes with nothing the guest does but the disk.
    pub fn start_write_back(&self) -> io::Result<()> {
        sync_range(&self.file, 0, 0, libc::SYNC_FILE_RANGE_WRITE)
    }

    /// Takes the file out of host memory: writes it back, pages the process's mappings
    /// out, and drops the file from the page cache (see the module's documentation). The
    /// process must not run meanwhile (a paused QEMU), or what it touches comes back.
    pub fn evict(&self) -> Result<Evicted, PageOutError> {
        self.evict_unless(&AtomicBool::new(false))
    }

    /// [`RamFile::evict`], in steps (the write-back in pieces of [`WRITE_BACK_STEP`], the
    /// page-out in pieces of [`PAGE_OUT_STEP`]), stopping between two once `cancel` is set:
    /// then [`Evicted::cancelled`] says so, and what was done stays done. The write-back
    /// is `sync_file_range` (write, and wait for it), not `fdatasync`: the pages must be
    /// clean, not the file durable, and no journal commit is waited for.
    pub fn evict_unless(&self, cancel: &AtomicBool) -> Result<Evicted, PageOutError> {
        let started = std::time::Instant::now();
        let before = self.resident()?;
        let step = |step, source| PageOutError::Evict {
            step,
            path: self.path.clone(),
            source,
        };
        let stop = |after: Resident, write_back| Evicted {
            before,
            after,
            write_back,
            took: started.elapsed(),
            cancelled: true,
        };
        let mut at = 0;
        while at < self.len {
            if cancel.load(Ordering::Relaxed) {
                return Ok(stop(self.resident()?, started.elapsed()));
            }
            let n = WRITE_BACK_STEP.min(self.len - at);
            write_back(&self.file, at, n).map_err(|e| step("write back", e))?;
            at += n;
        }
        let write_back = started.elapsed();
        for range in self.mappings()? {
            let mut from = range.start;
            while from < range.end {
                if cancel.load(Ordering::Relaxed) {
                    return Ok(stop(self.resident()?, write_back));
                }
                let to = range.end.min(from + PAGE_OUT_STEP);
                page_out(
                    &self.pidfd,
                    &[Mapping {
                        start: from,
                        end: to,
                        offset: range.offset + (from - range.start),
                    }],
                )
                .map_err(|e| step("page out", e))?;
                from = to;
            }
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(stop(self.resident()?, write_back));
        }
        self.trim()
            .map_err(|e| step("drop from the page cache", e))?;
        Ok(Evicted {
            before,
            after: self.resident()?,
            write_back,
            took: started.elapsed(),
            cancelled: false,
        })
    }

    /// Drops the file's pages that no process maps from the page cache
    /// (`posix_fadvise(POSIX_FADV_DONTNEED)`; dirty ones are written back first by the
    /// kernel, mapped ones stay): what readahead brought in that the guest has not touched.
    pub fn trim(&self) -> io::Result<()> {
        // SAFETY: posix_fadvise on a descriptor this RamFile owns; 0, 0 is the whole file.
        let r =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(())
    }

    /// The parts of the file that the process has in its page tables now, as sorted,
    /// disjoint byte ranges of the file (from `/proc/PID/pagemap`, present pages of its
    /// mappings of the file). After an eviction, that is what the guest (or QEMU for it)
    /// has touched since: pages only read ahead or [`RamFile::prefetch`]ed, and not
    /// touched, are not in it.
    pub fn touched(&self) -> Result<Vec<Range<u64>>, PageOutError> {
        /// Entries of `pagemap` read at once (512 KiB).
        const CHUNK: usize = 64 << 10;
        /// `pagemap`'s "page present" bit.
        const PRESENT: u64 = 1 << 63;
        let process = |source| PageOutError::Process {
            pid: self.pid,
            source,
        };
        let page = page_size();
        let pagemap = File::open(format!("/proc/{}/pagemap", self.pid)).map_err(process)?;
        let mut runs: Vec<Range<u64>> = Vec::new();
        let mut buf = vec![0u8; CHUNK * 8];
        for m in self.mappings()? {
            let mut vpage = m.start / page;
            let last = m.end / page;
            while vpage < last {
                let n = (last - vpage).min(CHUNK as u64) as usize;
                let bytes = &mut buf[..n * 8];
                std::os::unix::fs::FileExt::read_exact_at(&pagemap, bytes, vpage * 8)
                    .map_err(process)?;
                for (i, entry) in bytes.chunks_exact(8).enumerate() {
                    let entry = u64::from_ne_bytes(entry.try_into().expect("8 bytes"));
                    if entry & PRESENT == 0 {
                        continue;
                    }
                    let at = m.offset + (vpage + i as u64) * page - m.start;
                    match runs.last_mut() {
                        Some(r) if r.end == at => r.end += page,
                        _ => runs.push(at..at + page),
                    }
                }
                vpage += n as u64;
            }
        }
        Ok(merge_ranges(runs))
    }

    /// Starts reading `ranges` of the file into the page cache, without waiting for it
    /// (`posix_fadvise(POSIX_FADV_WILLNEED)` on each; the reads go to the device at once,
    /// side by side, so that they take about as long as one). Called with what the guest
    /// touched after its last wake ([`RamFile::touched`]) just before it is resumed, its
    /// page faults find their pages read or on their way, instead of reading each in turn.
    /// Ranges that overlap are joined, more than [`PREFETCH_RANGES`] are joined across
    /// their smallest gaps, and ranges beyond the end of the file are cut.
    pub fn prefetch(&self, ranges: &[Range<u64>]) -> io::Result<()> {
        for r in &coarsen(ranges.to_vec(), PREFETCH_RANGES) {
            let end = r.end.min(self.len);
            if r.start >= end {
                continue;
            }
            let big = || io::Error::from_raw_os_error(libc::EFBIG);
            let offset = libc::off_t::try_from(r.start).map_err(|_| big())?;
            let len = libc::off_t::try_from(end - r.start).map_err(|_| big())?;
            // SAFETY: posix_fadvise on a descriptor this RamFile owns, with plain integers.
            let e = unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    offset,
                    len,
                    libc::POSIX_FADV_WILLNEED,
                )
            };
            if e != 0 {
                return Err(io::Error::from_raw_os_error(e));
            }
        }
        Ok(())
    }

    /// Whether the process advised huge pages on any of its mappings of the file
    /// (`VmFlags` `hg` in `/proc/PID/smaps`): then each page the guest touches after an
    /// eviction brings back 4 MiB (see the module's documentation).
    pub fn huge_pages_advised(&self) -> Result<bool, PageOutError> {
        let mut advised = false;
        self.each_smaps_line(|line| {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                advised |= flags.split_ascii_whitespace().any(|f| f == "hg");
            }
        })?;
        Ok(advised)
    }

    /// Whether the file is on a tmpfs (or another file system of shared memory), whose
    /// pages a page-out can only move to swap: without swap it frees nothing.
    pub fn on_tmpfs(&self) -> bool {
        /// `TMPFS_MAGIC`.
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        // SAFETY: a zeroed statfs (integers only) is valid.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatfs fills `st` for a descriptor this RamFile owns.
        let r = unsafe { libc::fstatfs(self.file.as_raw_fd(), &mut st) };
        r == 0 && st.f_type as i64 == TMPFS_MAGIC
    }

    /// The readahead of the block device the file is on, in KiB (its
    /// `queue/read_ahead_kb`): up to this much more than a page may come back with each
    /// page the guest touches after an eviction. `None` where the device has none (tmpfs,
    /// a network file system) or it cannot be read.
    pub fn readahead_kib(&self) -> Option<u64> {
        let (major, minor) = (libc::major(self.dev), libc::minor(self.dev));
        let bdi = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
        std::fs::read_to_string(bdi)
            .ok()
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Makes `madvise(ADDR, LEN, MADV_HUGEPAGE)` return success without doing anything, in the
/// calling thread and in every process it starts from now on (a seccomp filter, kept
/// across `fork` and `execve` and not removable); every other system call, `madvise` with
/// any other advice among them, runs as before. Sets `no_new_privs` first, as an
/// unprivileged filter needs (a set-user-ID program started later gains no privileges).
///
/// QEMU advises huge pages on all guest RAM; for RAM in a file that makes each page fault
/// after a page-out read 4 MiB (see the module's documentation). Run QEMU under this, and
/// its RAM comes back a page at a time. Huge pages QEMU would have had for anonymous RAM
/// are lost with it, so use it for guests that sleep by page-out.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn ignore_huge_page_advice() -> io::Result<()> {
    /// `MADV_HUGEPAGE`.
    const MADV_HUGEPAGE: u32 = 14;
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    // `struct seccomp_data`: nr, arch, instruction_pointer, args[6] (little-endian words).
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    const ARG2_LOW: u32 = 16 + 2 * 8;
    const ARG2_HIGH: u32 = ARG2_LOW + 4;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ALLOW: u32 = 0x7fff_0000;
    /// `SECCOMP_RET_ERRNO` with errno 0: the call returns 0.
    const RET_SUCCEED: u32 = 0x0005_0000;
    let f = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let program = [
        f(LD_W_ABS, 0, 0, ARCH),
        f(JEQ_K, 0, 7, AUDIT_ARCH),
        f(LD_W_ABS, 0, 0, NR),
        f(JEQ_K, 0, 5, libc::SYS_madvise as u32),
        f(LD_W_ABS, 0, 0, ARG2_LOW),
        f(JEQ_K, 0, 3, MADV_HUGEPAGE),
        f(LD_W_ABS, 0, 0, ARG2_HIGH),
        f(JEQ_K, 0, 1, 0),
        f(RET_K, 0, 0, RET_SUCCEED),
        f(RET_K, 0, 0, RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with plain integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fprog` points at `program`, both alive for the call; the kernel copies them.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// [`ignore_huge_page_advice`] where the filter is not written: always an error.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn ignore_huge_page_advice() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the seccomp filter is written for x86_64 and aarch64 only",
    ))
}

/// One line of `/proc/PID/maps` (or a mapping's first line in `smaps`).
struct MapsLine {
    range: Mapping,
    shared: bool,
    writable: bool,
    dev: u64,
    ino: u64,
}

/// `start-end perms offset major:minor inode [path]`; `None` for any other line.
fn parse_maps_line(line: &str) -> Option<MapsLine> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let ino: u64 = fields.next()?.parse().ok()?;
    if perms.len() != 4 {
        return None;
    }
    Some(MapsLine {
        range: Mapping {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            offset: u64::from_str_radix(offset, 16).ok()?,
        },
        shared: perms.ends_with('s'),
        writable: perms.as_bytes().get(1) == Some(&b'w'),
        dev: libc::makedev(
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        ino,
    })
}

/// The system's page size.
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// `ranges` sorted, with ranges that overlap or touch joined.
fn merge_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `ranges` merged ([`merge_ranges`]), then, if more than `max` are left, joined across
/// their smallest gaps until at most `max` are.
fn coarsen(ranges: Vec<Range<u64>>, max: usize) -> Vec<Range<u64>> {
    let ranges = merge_ranges(ranges);
    if ranges.len() <= max.max(1) {
        return ranges;
    }
    let mut gaps: Vec<u64> = ranges.windows(2).map(|w| w[1].start - w[0].end).collect();
    gaps.sort_unstable();
    // Joining every gap up to this one leaves at most `max` ranges.
    let widest = gaps[ranges.len() - max.max(1) - 1];
    let mut out: Vec<Range<u64>> = Vec::with_capacity(max);
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start - last.end <= widest => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

/// Writes `len` bytes of `file` from `offset` back and waits until they are clean.
fn write_back(file: &File, offset: u64, len: u64) -> io::Result<()> {
    sync_range(
        file,
        offset,
        len,
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
    )
}

/// `sync_file_range(2)`; `len` 0 is to the end of the file.
fn sync_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    let big = || io::Error::from_raw_os_error(libc::EFBIG);
    let offset = libc::off64_t::try_from(offset).map_err(|_| big())?;
    let len = libc::off64_t::try_from(len).map_err(|_| big())?;
    // SAFETY: sync_file_range on a descriptor the caller owns, with plain integers.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open(2) takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `process_madvise(MADV_PAGEOUT)` over `ranges` of the process behind `pidfd`, in calls of
/// at most [`MAX_IOV`] ranges, each repeated until the kernel has taken all its bytes.
fn page_out(pidfd: &OwnedFd, ranges: &[Mapping]) -> io::Result<()> {
    for chunk in ranges.chunks(MAX_IOV) {
        let mut iov: Vec<libc::iovec> = chunk
            .iter()
            .map(|m| libc::iovec {
                iov_base: m.start as *mut libc::c_void,
                iov_len: (m.end - m.start) as usize,
            })
            .collect();
        let mut at = 0;
        while at < iov.len() {
            // SAFETY: process_madvise(2) reads `iov` (valid for its length) and acts on the
            // other process's address space; nothing here is written.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_process_madvise,
                    pidfd.as_raw_fd(),
                    iov[at..].as_ptr(),
                    iov.len() - at,
                    MADV_PAGEOUT,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // Skip what was advised; a range taken in part is shortened.
            let mut done = n as usize;
            while at < iov.len() && done >= iov[at].iov_len {
                done -= iov[at].iov_len;
                at += 1;
            }
            if at < iov.len() && done > 0 {
                iov[at].iov_base = (iov[at].iov_base as usize + done) as *mut libc::c_void;
                iov[at].iov_len -= done;
            }
            if n == 0 {
                break;
            }
        }
    }
    Ok(())
}

/// `cachestat(2)` (Linux 6.5) over the whole file: its bytes in the page cache, and of
/// those the dirty ones and the ones being written back.
fn cachestat(file: &File) -> io::Result<(u64, u64)> {
    /// `SYS_cachestat`, the same on every architecture.
    const SYS_CACHESTAT: libc::c_long = 451;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // Length 0: to the end of the file.
    let range = Range { off: 0, len: 0 };
    let mut stat = Stat::default();
    // SAFETY: cachestat(2) reads `range` and writes `stat`, both valid for the call.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Ok((
        stat.nr_cache * page,
        (stat.nr_dirty + stat.nr_writeback) * page,
    ))
}

/// The bytes of `file` (of length `len`) in the page cache: `mincore` over a shared,
/// read-only mapping of it that is never touched, so that reading it brings nothing in.
fn cached_bytes(file: &File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let len_usize = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    // SAFETY: a new read-only shared mapping of a file this process has open; it is
    // unmapped below and never dereferenced.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len_usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut vec = vec![0u8; len_usize.div_ceil(page)];
    // SAFETY: `addr` is a mapping of `len_usize` bytes; `vec` has one byte per page of it.
    let r = unsafe { libc::mincore(addr, len_usize, vec.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: the mapping made above, of that length.
    unsafe { libc::munmap(addr, len_usize) };
    if r < 0 {
        return Err(err);
    }
    Ok(vec.iter().filter(|&&b| b & 1 == 1).count() as u64 * page as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_range_sharing_device_and_inode() {
        let l = "7f0000000000-7f0008000000 rw-s 00200000 fd:01 1234567 /var/lib/ram/vm1 (deleted)";
        let m = parse_maps_line(l).expect("a mapping");
        assert_eq!(
            m.range,
            Mapping {
                start: 0x7f00_0000_0000,
                end: 0x7f00_0800_0000,
                offset: 0x20_0000,
            }
        );
        assert!(m.shared);
        assert_eq!((libc::major(m.dev), libc::minor(m.dev)), (0xfd, 1));
        assert_eq!(m.ino, 1_234_567);
        let p = parse_maps_line("00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus")
            .expect("a mapping");
        assert!(!p.shared);
        assert!(parse_maps_line("Rss:                 512 kB").is_none());
        assert!(parse_maps_line("VmFlags: rd wr sh mr mw me ms sd").is_none());
    }

    #[test]
    fn ranges_merge_and_coarsen_across_the_smallest_gaps() {
        assert_eq!(
            merge_ranges(vec![8..12, 0..4, 4..6, 10..16, 20..24]),
            vec![0..6, 8..16, 20..24]
        );
        assert_eq!(merge_ranges(Vec::new()), Vec::<Range<u64>>::new());
        let r = vec![0..1, 2..3, 10..11, 11..12, 30..31, 33..34];
        // Merged: 0..1 2..3 10..12 30..31 33..34, gaps 1, 7, 18, 2.
        assert_eq!(coarsen(r.clone(), 10).len(), 5);
        assert_eq!(coarsen(r.clone(), 3), vec![0..3, 10..12, 30..34]);
        assert_eq!(coarsen(r.clone(), 2), vec![0..12, 30..34]);
        assert_eq!(coarsen(r, 1), vec![0..34]);
    }
}
