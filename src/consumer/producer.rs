//! A producer's runs on a thread of their own, as moksha's `PollingProducer`
//! runs `poll()` every `frequency`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::context::ProducerHandle;

/// How long the thread sleeps at a time while it waits, so a stop is seen
/// promptly.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// Runs a producer's `poll` on a thread named after it: each run is counted
/// on its [`ProducerHandle`] (`ran`, then `succeeded`, or `failed` with the
/// error logged), and the next starts after the pause the run asked for
/// (`Ok(None)` or a failure: the interval). Dropping it stops the thread,
/// after one last run when `poll_on_stop` was set (to hand on work that is
/// only noted in memory).
pub struct ProducerThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProducerThread {
    /// Starts the thread; `poll` runs at once, then every `interval` (or after
    /// the pause it returns).
    pub fn start(
        handle: ProducerHandle,
        interval: Duration,
        poll_on_stop: bool,
        mut poll: impl FnMut() -> Result<Option<Duration>, String> + Send + 'static,
    ) -> std::io::Result<ProducerThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(handle.name().to_string())
            .spawn(move || loop {
                let stopping = flag.load(Ordering::Acquire);
                if stopping && !poll_on_stop {
                    break;
                }
                handle.ran();
                let pause = match poll() {
                    Ok(pause) => {
                        handle.succeeded();
                        pause.unwrap_or(interval)
                    }
                    Err(error) => {
                        handle.failed();
                        tracing::warn!(producer = handle.name(), %error, "producer run failed; trying again next interval");
                        interval
                    }
                };
                if stopping {
                    break;
                }
                let until = Instant::now() + pause;
                while Instant::now() < until && !flag.load(Ordering::Acquire) {
                    std::thread::sleep(STOP_CHECK.min(pause));
                }
            })?;
        Ok(ProducerThread {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ProducerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::stats::Stats;
    use crate::{Context, Publisher};
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn runs_are_counted_paced_and_a_last_one_runs_on_stop() {
        let stats = Stats::new();
        let publisher = Publisher::disconnected("org.fedoraproject", "dev", stats.clone());
        let ctx = Context::new("c", Settings::default(), publisher, stats);
        let handle = ctx.producer("TestProducer", "tests", Duration::from_millis(30));
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let thread =
            ProducerThread::start(handle.clone(), Duration::from_millis(30), true, move || {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                match n {
                    // The second run fails, the third asks for a long pause.
                    2 => Err("no database".into()),
                    3 => Ok(Some(Duration::from_secs(3600))),
                    _ => Ok(None),
                }
            })
            .unwrap();
        let began = Instant::now();
        while runs.load(Ordering::SeqCst) < 3 && began.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(runs.load(Ordering::SeqCst), 3, "the long pause holds");
        assert_eq!(handle.exceptions(), 0, "the third run succeeded");
        assert!(handle.last_ran().is_some());
        let stopping = Instant::now();
        drop(thread);
        assert!(
            stopping.elapsed() < Duration::from_secs(1),
            "a stop ends the pause"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 4, "one last run on stop");
    }
}
