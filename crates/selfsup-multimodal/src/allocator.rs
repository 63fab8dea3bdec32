//! The C allocator's settings for CPU training.
//!
//! libtorch takes every CPU tensor from `malloc`. With glibc's defaults a
//! CLIP step's large activations (16 MiB for the first block of the small
//! CNN at batch 128) are handed back to the kernel when the step frees them
//! (the top of the heap is trimmed, or the block was its own `mmap`), and
//! the next step faults the same pages in again, each one zeroed by the
//! kernel: a fifth of a CPU step in the profile of the CLIP preset, in
//! `clear_page` and the page-fault path. Keeping freed memory in the process
//! (no trimming; blocks up to 256 MiB from the heap) lets the next step reuse
//! it. The peak memory stays what the run needs at its peak; only the return
//! of memory to the system after that peak is given up.

/// Largest block served from the heap (and so reused); larger ones are
/// mapped and unmapped on their own. Above any block of a training step of
/// the CLIP CPU preset (glibc's default starts at 128 KiB and adapts up to 32 MiB).
pub const MMAP_THRESHOLD: i32 = 256 << 20;

/// Free memory kept at the top of the heap before glibc gives it back.
pub const TRIM_THRESHOLD: i32 = 1 << 30;

/// Keeps freed memory for reuse instead of returning it to the kernel after
/// every step (glibc: `mallopt(M_MMAP_THRESHOLD, 256 MiB)`,
/// `mallopt(M_TRIM_THRESHOLD, 1 GiB)`). Process-wide; returns whether both
/// settings were taken (false on other C libraries, where it does nothing).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's tunables (under its
        // own lock); both values are within glibc's documented ranges.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        // SAFETY: as above.
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_both_settings() {
        let taken = keep_freed_memory();
        assert_eq!(taken, cfg!(all(target_os = "linux", target_env = "gnu")));
        // Idempotent: a second run in the same process sets them again.
        assert_eq!(keep_freed_memory(), taken);
    }
}
