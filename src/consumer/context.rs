//! What a consumer reaches from `start`, `consume` and `stop`: its settings, the
//! publisher, the clock, the metrics registry, readiness and backlog holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::backlog::BacklogGuard;
use crate::config::Settings;
use crate::publish::{PublishError, Publisher};
use crate::reload::ReloadHook;
use crate::stats::{ConsumerStats, ProducerStats, Stats};

/// The source of time, replaceable in tests.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(SystemTime::now))
    }

    /// A clock that reads `f`.
    pub fn from_fn(f: impl Fn() -> SystemTime + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

/// What a consumer can reach from `start`, `consume` and `stop`.
pub struct Context {
    name: String,
    settings: Settings,
    publisher: Publisher,
    stats: Arc<Stats>,
    /// This consumer's series, looked up on first use.
    own_stats: OnceLock<Arc<ConsumerStats>>,
    clock: Clock,
    /// Set while the message being handled is still counted by its batch: the
    /// first `hold_backlog` takes that count over instead of adding one, so the
    /// backlog never counts a message twice (and never exceeds the bound).
    handing_over: AtomicBool,
    reload: ReloadHook,
    /// The handoffs of the message being handled to consumers waiting for
    /// this one (`after`), lent to the backlog holds made meanwhile.
    handoffs: crate::after::Handoffs,
}

impl Context {
    /// Builds a context (the hub does this; tests of consumers can too).
    pub fn new(name: &str, settings: Settings, publisher: Publisher, stats: Arc<Stats>) -> Context {
        Context {
            name: name.to_string(),
            settings,
            publisher,
            stats,
            own_stats: OnceLock::new(),
            clock: Clock::system(),
            handing_over: AtomicBool::new(false),
            reload: ReloadHook::new(),
            handoffs: Vec::new(),
        }
    }

    /// Uses the hub's reload broadcast (the hub does this).
    pub fn with_reload_hook(mut self, hook: ReloadHook) -> Context {
        self.reload = hook;
        self
    }

    /// The hub's reload broadcast (SIGHUP): a consumer that loads rules or
    /// files can listen with [`ReloadHook::on_reload`] or
    /// [`ReloadHook::subscribe`] in its `start`, and read them again.
    pub fn reload_hook(&self) -> &ReloadHook {
        &self.reload
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Clock) -> Context {
        self.clock = clock;
        self
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The consumer's own settings from its config section.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Publishes `msg` on `topic` (`modname.event`; the hub adds prefix and
    /// environment). Returns the envelope sent.
    pub fn publish(
        &self,
        topic: &str,
        msg: Value,
    ) -> Result<serde_json::Map<String, Value>, PublishError> {
        self.publisher.publish(topic, msg)
    }

    /// The publisher, to hand to helper threads.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The Prometheus registry, for a consumer's own metrics.
    pub fn metrics(&self) -> &prometheus::Registry {
        self.stats.registry()
    }

    /// A handle with which the consumer, or a helper thread of its own, reports
    /// a problem that makes `/health/readyz` fail (a database it cannot write,
    /// say) and clears it again.
    pub fn readiness(&self) -> Readiness {
        Readiness(self.own_stats().clone())
    }

    /// Counts one more message in this consumer's backlog until the returned
    /// guard is dropped. For a consumer that hands messages to a thread of its
    /// own (a batch writer, say) and returns: the message it holds stays in the
    /// backlog that `/metrics`, `/state`, the monitoring socket, collectd and
    /// Nagios report, until the work on it is really done.
    ///
    /// Consumers configured to run `after` this one receive the message once
    /// every guard made while handling it is dropped.
    pub fn hold_backlog(&self) -> BacklogGuard {
        if self.handing_over.swap(false, Ordering::AcqRel) {
            BacklogGuard::adopting(self.own_stats(), self.handoffs.clone())
        } else {
            BacklogGuard::holding(self.own_stats(), self.handoffs.clone())
        }
    }

    /// The hub is about to hand a message that its batch still counts to
    /// `consume`: a `hold_backlog` may take that count over.
    pub(crate) fn begin_message(&self) {
        self.handing_over.store(true, Ordering::Release);
    }

    /// The message's handling returned: whether a `hold_backlog` took its count
    /// over (then its batch must not uncount it).
    pub(crate) fn end_message(&self) -> bool {
        !self.handing_over.swap(false, Ordering::AcqRel)
    }

    /// A counter of the consumer's own, shown in its `/state` entry under
    /// `counters` as `name` (for things the runtime cannot know: messages it
    /// ignored and why, say). Cheap to clone and to update from any thread;
    /// the same name gives the same counter, also after a restart.
    pub fn state_counter(&self, name: &str) -> StateCounter {
        StateCounter(self.own_stats().own_counter(name))
    }

    /// Registers a producer: a periodic job of this consumer (moksha's
    /// `PollingProducer`), run every `frequency` by a thread or timer of the
    /// consumer's own. It is listed in the monitoring socket's `producers`
    /// (`name`, `module`, `initialized`, `exceptions`, `frequency`, `now`,
    /// `last_ran`), so `fedmsg-check --producer` and Fedora's
    /// `check_fedmsg_producer_last_ran` watch it, and in `/metrics` and
    /// `/state`. The job reports each run through the returned handle.
    ///
    /// The same name gives a handle on the same entry (keeping `last_ran` and
    /// `exceptions`), so a consumer registers its producers in `start`, also
    /// after a restart.
    ///
    /// `last_ran` is `null` until the first [`ran`](ProducerHandle::ran), as
    /// with moksha (`now=False`): moksha-monitor-exporter reports itself down
    /// while any producer has not run yet, exactly as it does for moksha.
    pub fn producer(&self, name: &str, module: &str, frequency: Duration) -> ProducerHandle {
        ProducerHandle {
            stats: self.stats.producer(name, module, frequency),
            clock: self.clock.clone(),
        }
    }

    /// Sets the handoffs of the message about to be handled (the actor does).
    pub(crate) fn set_handoffs(&mut self, handoffs: crate::after::Handoffs) {
        self.handoffs = handoffs;
    }

    fn own_stats(&self) -> &Arc<ConsumerStats> {
        self.own_stats
            .get_or_init(|| self.stats.consumer(&self.name))
    }
}

/// Reports a consumer's own problems to `/health/readyz`; cheap to clone and
/// to call from any thread. See [`Context::readiness`].
#[derive(Clone)]
pub struct Readiness(Arc<ConsumerStats>);

impl Readiness {
    /// Marks the consumer not ready, with the reason readyz shows.
    pub fn set_problem(&self, reason: impl Into<String>) {
        self.0.set_problem(Some(reason.into()));
    }

    /// Marks the consumer's own problem resolved.
    pub fn clear(&self) {
        self.0.set_problem(None);
    }

    /// The problem reported, if any.
    pub fn problem(&self) -> Option<String> {
        self.0.problem()
    }
}

/// A consumer's own counter in `/state`; see [`Context::state_counter`].
#[derive(Clone)]
pub struct StateCounter(Arc<std::sync::atomic::AtomicU64>);

impl StateCounter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Sets the value (for a counter that reports a level, such as progress).
    pub fn set(&self, value: u64) {
        self.0.store(value, std::sync::atomic::Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Reports the runs of a producer (a consumer's periodic job); cheap to clone
/// and to call from any thread. See [`Context::producer`].
///
/// Call [`ran`](ProducerHandle::ran) when a run starts, then
/// [`succeeded`](ProducerHandle::succeeded) or [`failed`](ProducerHandle::failed)
/// when it ends, as moksha's `PollingProducer` does around `poll()`.
#[derive(Clone)]
pub struct ProducerHandle {
    stats: Arc<ProducerStats>,
    clock: Clock,
}

impl ProducerHandle {
    /// A run starts now: sets `last_ran` (moksha sets it before calling `poll`).
    pub fn ran(&self) {
        self.stats.record_ran(self.clock.now());
    }

    /// The run succeeded: `exceptions` (failures in a row) goes back to 0.
    pub fn succeeded(&self) {
        self.stats.record_succeeded();
    }

    /// The run failed: `exceptions` (failures in a row) grows by one.
    pub fn failed(&self) {
        self.stats.record_failed();
    }

    /// When the last run started; `None` before the first.
    pub fn last_ran(&self) -> Option<SystemTime> {
        self.stats
            .last_ran()
            .map(|seconds| std::time::UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0)))
    }

    /// Runs that failed in a row (0 after a success).
    pub fn exceptions(&self) -> u64 {
        self.stats.exceptions()
    }

    /// The producer's name.
    pub fn name(&self) -> &str {
        self.stats.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backlog::BatchBacklog;
    use crate::config::Settings;

    #[test]
    fn the_first_hold_takes_over_the_handled_message_count() {
        let stats = Stats::new();
        let publisher = Publisher::disconnected("org.fedoraproject", "dev", stats.clone());
        let ctx = Context::new("c", Settings::default(), publisher, stats.clone());
        let own = stats.consumer("c");
        // The router counted two messages; their batch holds both.
        own.backlog_inc();
        own.backlog_inc();
        let mut batch = BatchBacklog::adopt(&own, 2);

        // The first message: the consumer keeps it (and one more hold).
        ctx.begin_message();
        let kept = ctx.hold_backlog();
        assert_eq!(own.backlog(), 2, "taken over, not counted twice");
        let extra = ctx.hold_backlog();
        assert_eq!(own.backlog(), 3, "a second hold counts one more");
        assert!(ctx.end_message(), "handed over");
        batch.hand_over_one();
        assert_eq!(own.backlog(), 3);

        // The second message: handled without a hold.
        ctx.begin_message();
        assert!(!ctx.end_message());
        batch.release_one();
        assert_eq!(own.backlog(), 2);
        drop(extra);
        drop(kept);
        assert_eq!(own.backlog(), 0);
        drop(batch);
        assert_eq!(own.backlog(), 0, "nothing uncounted twice");
    }

    #[test]
    fn producers_count_failures_in_a_row_and_survive_a_restart() {
        let stats = Stats::new();
        let publisher = Publisher::disconnected("org.fedoraproject", "dev", stats.clone());
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_795_392_096_500);
        let ctx = Context::new("c", Settings::default(), publisher, stats.clone())
            .with_clock(Clock::from_fn(move || at));
        let job = ctx.producer("Digest", "fmn", Duration::from_secs(90));
        assert_eq!(job.last_ran(), None);
        job.ran();
        job.failed();
        job.ran();
        job.failed();
        assert_eq!(job.last_ran(), Some(at));
        assert_eq!(job.exceptions(), 2);
        // A restarted consumer registers again: the same entry.
        let again = ctx.producer("Digest", "fmn", Duration::from_secs(60));
        assert_eq!(again.exceptions(), 2);
        again.succeeded();
        assert_eq!(job.exceptions(), 0);
        let all = stats.producers();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].frequency_secs(), 60.0);
        assert_eq!(all[0].last_ran(), Some(1_795_392_096.5));
    }
}
