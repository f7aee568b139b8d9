//! Thread priorities: the data path yields the CPU to probes.
//!
//! Under a burst the ingress threads (receiving, decoding), the consumers and
//! ZeroMQ's I/O thread can keep every core busy. Requests to `/metrics`,
//! `/health/*` and `/state` need microseconds of CPU, but at equal priority they
//! wait for a time slice behind the data threads. Raising the nice value of the
//! data threads (`[hub] data_threads_nice`, off by default) lets the scheduler
//! run the probes first; it needs no privileges, and costs the data path nothing
//! while the CPU has room, but the data path then also yields to other processes.

/// Adds `nice` to the calling thread's nice value (Linux: per thread). Logs and
/// carries on when the system refuses; 0 does nothing.
pub fn lower_current_thread(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and getpriority/setpriority only read and change the
        // scheduling attributes of the calling thread.
        let (rc, error) = unsafe {
            let tid = libc::gettid() as libc::id_t;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            let target = (current + nice).min(19);
            let rc = libc::setpriority(libc::PRIO_PROCESS, tid, target);
            (rc, std::io::Error::last_os_error())
        };
        if rc != 0 {
            tracing::warn!(nice, error = %error, "cannot lower this thread's priority");
        }
    }
}

/// The calling thread's nice value (for tests and diagnostics).
#[cfg(target_os = "linux")]
#[cfg(test)]
pub fn current_thread_nice() -> i32 {
    // SAFETY: reads the calling thread's scheduling attribute.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = current_thread_nice();
        let lowered = std::thread::spawn(|| {
            let start = current_thread_nice();
            lower_current_thread(3);
            (start, current_thread_nice())
        })
        .join()
        .unwrap();
        assert_eq!(lowered.1, (lowered.0 + 3).min(19));
        assert_eq!(current_thread_nice(), before, "other threads keep theirs");
    }
}
