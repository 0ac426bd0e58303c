//! Handing freed heap back to the kernel.

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
