//! Giving memory back to the system after a burst.
//!
//! A burst allocates per message: ZeroMQ's buffers on its I/O thread and an
//! envelope on the ingress thread, freed later on other threads. glibc's
//! allocator keeps such freed memory in its per-thread arenas instead of
//! returning it, so without help the hub's resident size stays at its peak long
//! after the burst. The same holds for a few large messages: 40 bodies of 4 MB
//! are no burst by count, but 160 MB by size. [`Trimmer`] watches the message
//! and byte counts and, once a burst of either is over, asks the allocator to
//! return its free pages (`malloc_trim`).

use std::time::{Duration, Instant};

/// Messages received since the last trim that make a burst worth trimming after.
pub const TRIM_AFTER_MESSAGES: u64 = 50_000;

/// Bytes received since the last trim that make a burst worth trimming after,
/// however few the messages.
pub const TRIM_AFTER_BYTES: u64 = 32 * 1024 * 1024;

/// Least time between two trims: a trim walks every arena and briefly holds its lock.
pub const MIN_TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Decides when to trim, from periodic observations of the hub's counters.
#[derive(Debug, Default)]
pub struct Trimmer {
    received_at_last_trim: u64,
    last_received: u64,
    bytes_at_last_trim: u64,
    last_trim: Option<Instant>,
}

impl Trimmer {
    /// A trimmer that has seen nothing yet.
    pub fn new() -> Trimmer {
        Trimmer::default()
    }

    /// Records the total backlog (summed over consumers) and the totals of messages
    /// and bytes received (summed over bus sockets); true when memory should be
    /// trimmed now: at least [`TRIM_AFTER_MESSAGES`] or [`TRIM_AFTER_BYTES`]
    /// arrived since the last trim, nothing since the previous observation,
    /// every backlog is drained, and the last trim is long enough ago.
    pub fn observe(&mut self, backlog: i64, received: u64, bytes: u64, now: Instant) -> bool {
        let idle = received == self.last_received;
        self.last_received = received;
        let burst = received.saturating_sub(self.received_at_last_trim) >= TRIM_AFTER_MESSAGES
            || bytes.saturating_sub(self.bytes_at_last_trim) >= TRIM_AFTER_BYTES;
        let due = match self.last_trim {
            None => true,
            Some(at) => now.duration_since(at) >= MIN_TRIM_INTERVAL,
        };
        if burst && idle && backlog <= 0 && due {
            self.received_at_last_trim = received;
            self.bytes_at_last_trim = bytes;
            self.last_trim = Some(now);
            return true;
        }
        false
    }
}

/// Returns free heap memory to the system; true when the allocator released some.
/// A no-op (false) where the allocator has no such call. The hub calls it after
/// bursts; a consumer may call it after building something large (off the
/// data path: it walks every allocator arena).
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
    fn trims_once_a_burst_is_over() {
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        let mut trimmer = Trimmer::new();
        assert!(!trimmer.observe(0, 0, 0, t0), "nothing arrived");
        assert!(
            !trimmer.observe(0, 1_000, 1_000 * 100, later(1)),
            "a trickle is not a burst"
        );
        assert!(
            !trimmer.observe(0, 1_000, 1_000 * 100, later(2)),
            "idle, but too few messages"
        );
        assert!(
            !trimmer.observe(0, 80_000, 80_000 * 100, later(3)),
            "still arriving"
        );
        assert!(
            !trimmer.observe(5, 80_000, 80_000 * 100, later(4)),
            "a consumer still has a backlog"
        );
        assert!(
            trimmer.observe(0, 80_000, 80_000 * 100, later(5)),
            "idle and drained after a burst"
        );
        assert!(
            !trimmer.observe(0, 80_000, 80_000 * 100, later(6)),
            "already trimmed for that burst"
        );
        assert!(!trimmer.observe(0, 200_000, 200_000 * 100, later(7)));
        assert!(
            !trimmer.observe(0, 200_000, 200_000 * 100, later(8)),
            "too soon after the last trim"
        );
        assert!(
            trimmer.observe(0, 200_000, 200_000 * 100, later(15)),
            "the burst is remembered"
        );
    }

    #[test]
    fn a_few_large_messages_are_a_burst_too() {
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        let mut trimmer = Trimmer::new();
        let large = 40 * 3_900_000;
        assert!(!trimmer.observe(40, 40, large, t0), "still in the mailbox");
        assert!(trimmer.observe(0, 40, large, later(1)), "handled: trim");
        assert!(
            !trimmer.observe(0, 41, large + 300, later(20)),
            "small ones"
        );
        assert!(
            !trimmer.observe(0, 41, large + 300, later(21)),
            "not a burst"
        );
    }
}
