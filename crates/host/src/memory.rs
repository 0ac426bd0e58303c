//! How the daemon's heap is kept small: few allocator arenas, and freed heap handed back.

/// Limits the C library's allocator to `arenas` heaps for all threads (`M_ARENA_MAX`),
/// before the first thread starts. glibc gives each thread that allocates while others do
/// a heap of its own, up to 8 per core, and keeps what each has touched: a burst of backend
/// and API threads leaves kilobytes per guest resident after the threads have ended. The
/// daemon allocates little on its hot paths, so two heaps lose nothing to contention.
/// A no-op where the C library is not glibc.
pub fn limit_arenas(arenas: u16) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of glibc's allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, i32::from(arenas.max(1)));
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Serves every allocation of `bytes` or more with a mapping of its own, returned to the
/// kernel whole when freed, and trims the heap's top once `bytes` of it are free. glibc
/// starts at 128 KiB but raises its threshold each time a mapped block is freed (up to
/// 32 MiB), after which the megabyte buffers of one status or metrics answer about 10,000
/// guests come from the heap and leave it in pieces. Setting it fixes it. A no-op where the
/// C library is not glibc.
pub fn map_large_allocations(bytes: u32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets tunables of glibc's allocator.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
            libc::mallopt(libc::M_TRIM_THRESHOLD, bytes);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}

/// Returns the heap that start-up freed (parsing a config of thousands of guests peaks at
/// megabytes that are then freed but kept by the allocator) to the kernel, so the daemon's
/// resident memory is what it keeps. A no-op where the C library has no `malloc_trim`.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap; 0 keeps no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The memory the host has available for new work (`MemAvailable` of `/proc/meminfo`), in
/// bytes; `None` if it cannot be read.
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod available_tests {
    #[test]
    fn the_hosts_available_memory_is_read() {
        let bytes = super::available().expect("MemAvailable");
        assert!(bytes > 16 << 20, "{bytes} bytes available");
    }
}
