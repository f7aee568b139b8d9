//! Giving memory back to the system after a backlog drains.
//!
//! A burst that fills mailboxes allocates an envelope per queued message on the
//! ingress thread and frees it on a consumer's thread. glibc's allocator keeps
//! such freed memory in its per-thread arenas instead of returning it, so
//! without help the hub's resident size stays at its peak long after the
//! backlog is gone. [`Trimmer`] watches the total backlog and, once a large one
//! has drained, asks the allocator to return its free pages (`malloc_trim`).

use std::time::{Duration, Instant};

/// Backlog (messages, summed over consumers) that is worth trimming after.
pub const TRIM_AFTER_PEAK_MESSAGES: i64 = 10_000;

/// Least time between two trims: a trim walks every arena and briefly holds its lock.
pub const MIN_TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Decides when to trim, from backlog observations.
#[derive(Debug)]
pub struct Trimmer {
    peak_since_trim: i64,
    last_trim: Option<Instant>,
}

impl Default for Trimmer {
    fn default() -> Self {
        Trimmer::new()
    }
}

impl Trimmer {
    /// A trimmer that has seen no backlog yet.
    pub fn new() -> Trimmer {
        Trimmer {
            peak_since_trim: 0,
            last_trim: None,
        }
    }

    /// Records the current total backlog; true when memory should be trimmed now:
    /// a backlog of at least [`TRIM_AFTER_PEAK_MESSAGES`] was seen and has
    /// drained to under 1% of that peak, and the last trim is long enough ago.
    pub fn observe(&mut self, backlog: i64, now: Instant) -> bool {
        self.peak_since_trim = self.peak_since_trim.max(backlog);
        let drained = backlog.max(0) * 100 < self.peak_since_trim;
        let due = match self.last_trim {
            None => true,
            Some(at) => now.duration_since(at) >= MIN_TRIM_INTERVAL,
        };
        if self.peak_since_trim >= TRIM_AFTER_PEAK_MESSAGES && drained && due {
            self.peak_since_trim = backlog.max(0);
            self.last_trim = Some(now);
            return true;
        }
        false
    }
}

/// Returns free heap memory to the system; true when the allocator released some.
/// A no-op (false) where the allocator has no such call.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only reorganizes the allocator's free lists; it is
        // thread-safe and takes no pointers.
        unsafe { libc::malloc_trim(0) == 1 }
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
    fn trims_once_after_a_large_backlog_drains() {
        let t0 = Instant::now();
        let mut trimmer = Trimmer::new();
        assert!(!trimmer.observe(0, t0), "nothing seen yet");
        assert!(!trimmer.observe(500, t0), "small backlogs are not worth it");
        assert!(!trimmer.observe(0, t0));
        assert!(!trimmer.observe(50_000, t0), "still queued");
        assert!(!trimmer.observe(1_000, t0), "2% of the peak is left");
        assert!(trimmer.observe(400, t0), "under 1% of the peak");
        assert!(!trimmer.observe(0, t0), "already trimmed for that peak");
        assert!(!trimmer.observe(20_000, t0 + Duration::from_secs(1)));
        assert!(
            !trimmer.observe(0, t0 + Duration::from_secs(2)),
            "too soon after the last trim"
        );
        assert!(
            trimmer.observe(0, t0 + MIN_TRIM_INTERVAL),
            "the peak is remembered"
        );
    }
}
