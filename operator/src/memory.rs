//! How the process holds memory. The operator is long-running and mostly idle between resyncs,
//! but converging many pipelines allocates in bursts (API responses, a Lambda zip and its
//! base64 request body). glibc's defaults keep what such bursts leave behind: one malloc arena
//! per thread that ever allocated, a "dynamic" mmap threshold that moves large buffers onto
//! the heap once one has been freed, and free pages in the middle of an arena are returned only
//! by `malloc_trim`. Measured with `make bench-scale` (docs/controller.md, *At scale*): at 100
//! pipelines the anonymous memory of the steady state fell from 23 to 15 MiB with the settings
//! below, and the peak while converging from 64 to 52 MiB. mimalloc, tried as the global
//! allocator instead, held more (37 MiB).
//!
//! Only on Linux with glibc (the operator image's libc); elsewhere these do nothing. A setting
//! whose glibc environment variable is set (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`,
//! `MALLOC_TRIM_THRESHOLD_`) is left to it.

use std::time::Duration;

/// How often [`trim_periodically`] hands free memory back to the kernel.
pub const TRIM_PERIOD: Duration = Duration::from_secs(60);

/// Bytes above which an allocation gets its own mapping (returned to the kernel when freed),
/// and free bytes at the heap's top above which the heap shrinks: glibc's initial defaults,
/// fixed instead of growing with the largest buffer freed so far.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// Sets the allocator up for a long-running process: one arena for every thread, large
/// buffers in their own mappings, the heap trimmed above 128 KiB free. Call it first thing in
/// `main`, before any thread is started (the arena limit is read when a second thread first
/// allocates).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let settings = [
            ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
            (
                "MALLOC_MMAP_THRESHOLD_",
                libc::M_MMAP_THRESHOLD,
                THRESHOLD_BYTES,
            ),
            (
                "MALLOC_TRIM_THRESHOLD_",
                libc::M_TRIM_THRESHOLD,
                THRESHOLD_BYTES,
            ),
        ];
        for (variable, param, value) in settings {
            if std::env::var_os(variable).is_none() {
                // SAFETY: mallopt only changes allocator parameters; it is called before any
                // other thread exists, and glibc validates the value (returns 0 if refused).
                unsafe { libc::mallopt(param, value) };
            }
        }
    }
}

/// Hands the allocator's free pages back to the kernel (`malloc_trim`), also those in the
/// middle of the heap, which glibc otherwise keeps. Returns whether any memory was released.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes the allocator's own locks; it is safe from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Calls [`release_free_memory`] every [`TRIM_PERIOD`] until `stop` completes: after a burst
/// of reconciliations the steady state keeps only the memory it uses.
pub async fn trim_periodically(stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(TRIM_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {
                let released = release_free_memory();
                tracing::trace!(released, "returned free heap pages to the kernel");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_leaves_the_process_after_a_trim() {
        tune_allocator();
        let anon = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        // Many small allocations (below the mmap threshold, so on the heap), touched, then all
        // but every 64th freed: the survivors pin the heap's top, so only a trim releases the
        // free pages between them.
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|_| vec![1u8; 4096]).collect();
        let full = anon();
        let mut i = 0;
        blocks.retain(|_| {
            i += 1;
            i % 64 == 0
        });
        release_free_memory();
        let after = anon();
        assert!(
            full.saturating_sub(after) > 40_000,
            "RssAnon {full} kB before, {after} kB after freeing ~78 MB and trimming"
        );
        drop(blocks);
    }
}
