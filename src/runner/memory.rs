//! Keeping the run's resident memory flat over thousands of tasks. The tasks' short-lived
//! allocations (pipes' buffers, JSON, libgit2's trees) are spread by glibc over one arena per
//! thread that touched them, and freed pages in an arena stay resident: a run's RSS grew by
//! about 4 KB per task with its live heap flat. Fewer arenas and a trim now and then keep it
//! near the live heap.

/// How many ended tasks between two trims: a trim walks the arenas (well under a
/// millisecond at the heap sizes of a run).
pub(super) const TRIM_EVERY: usize = 32;

/// One malloc arena for every thread (glibc's default is eight per core): two measured 1–2 MB
/// more at 10 000 tasks and no faster. Before any thread starts.
pub(super) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets an allocator parameter; called before the runtime's threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives the arenas' free pages back to the system.
pub(super) fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim is thread-safe (it locks each arena) and takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}
