//! The consumer API: what a consumer developer implements, and what they get.
//!
//! Implement [`Consumer`], register it with a [`ConsumerFactory`], and the hub
//! gives it a bounded mailbox on its own thread, metrics, panic isolation,
//! restarts, config and an HTTP surface.
//!
//! ```no_run
//! use fedhub::{Consumer, ConsumerError, Context, Envelope};
//!
//! struct Printer;
//!
//! impl Consumer for Printer {
//!     fn consume(&mut self, envelope: &Envelope, _ctx: &mut Context) -> Result<(), ConsumerError> {
//!         println!("{}", envelope.topic());
//!         Ok(())
//!     }
//! }
//! ```

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde_json::Value;

use crate::actor::BacklogGuard;
use crate::bus::{PublishError, Publisher};
use crate::config::{ConfigError, Settings};
use crate::message::Envelope;
use crate::stats::{ConsumerStats, Stats};

/// Why handling a message failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// This message could not be handled; the consumer goes on with the next one.
    #[error("{0}")]
    Message(String),
    /// The consumer is in a bad state: it is stopped and started again.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl ConsumerError {
    /// A per-message failure.
    pub fn msg(text: impl std::fmt::Display) -> ConsumerError {
        ConsumerError::Message(text.to_string())
    }

    /// A failure that needs a restart.
    pub fn fatal(text: impl std::fmt::Display) -> ConsumerError {
        ConsumerError::Fatal(text.to_string())
    }

    /// Whether the consumer must be restarted.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ConsumerError::Fatal(_))
    }
}

impl From<serde_json::Error> for ConsumerError {
    fn from(e: serde_json::Error) -> Self {
        ConsumerError::msg(e)
    }
}

impl From<std::io::Error> for ConsumerError {
    fn from(e: std::io::Error) -> Self {
        ConsumerError::msg(e)
    }
}

impl From<PublishError> for ConsumerError {
    fn from(e: PublishError) -> Self {
        ConsumerError::msg(e)
    }
}

/// Routes a consumer mounts on the hub's HTTP server.
pub type HttpRoutes = Arc<dyn Fn(&mut actix_web::web::ServiceConfig) + Send + Sync>;

/// A message consumer. Each one runs on its own thread, so `consume` may block.
pub trait Consumer: Send + 'static {
    /// Called once on the consumer's thread before the first message, and again
    /// after a restart.
    fn start(&mut self, _ctx: &mut Context) -> Result<(), ConsumerError> {
        Ok(())
    }

    /// Handles one message.
    fn consume(&mut self, envelope: &Envelope, ctx: &mut Context) -> Result<(), ConsumerError>;

    /// Called at shutdown after the mailbox drained, and before a restart.
    fn stop(&mut self, _ctx: &mut Context) {}

    /// Routes to mount on the hub's HTTP server (collected before `start`).
    fn http_routes(&self) -> Option<HttpRoutes> {
        None
    }

    /// The moksha `module` shown in monitoring output.
    fn module(&self) -> &str {
        "fedhub.consumers"
    }
}

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
        }
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
    pub fn hold_backlog(&self) -> BacklogGuard {
        BacklogGuard::new(self.own_stats())
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

type BuildFn = dyn Fn(&Settings) -> Result<Box<dyn Consumer>, ConfigError> + Send + Sync;

/// How the hub makes a consumer: a name (its config section and monitoring
/// name), default topics, whether it runs without being enabled, and a builder.
pub struct ConsumerFactory {
    name: String,
    topics: Vec<String>,
    enabled_by_default: bool,
    build: Box<BuildFn>,
}

impl ConsumerFactory {
    /// A factory for `name`, subscribed to everything and disabled unless its
    /// section says `enabled = true` (fedmsg's `config_key` convention).
    pub fn new(
        name: &str,
        build: impl Fn(&Settings) -> Result<Box<dyn Consumer>, ConfigError> + Send + Sync + 'static,
    ) -> ConsumerFactory {
        ConsumerFactory {
            name: name.to_string(),
            topics: vec!["*".to_string()],
            enabled_by_default: false,
            build: Box::new(build),
        }
    }

    /// Sets the default topics.
    pub fn topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Runs the consumer unless its section says `enabled = false`.
    pub fn enabled_by_default(mut self) -> Self {
        self.enabled_by_default = true;
        self
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The default topics.
    pub fn default_topics(&self) -> &[String] {
        &self.topics
    }

    /// Whether it runs without `enabled = true`.
    pub fn is_enabled_by_default(&self) -> bool {
        self.enabled_by_default
    }

    /// Builds the consumer from its settings.
    pub fn build(&self, settings: &Settings) -> Result<Box<dyn Consumer>, ConfigError> {
        (self.build)(settings)
    }
}

/// A consumer that only counts: for smoke tests and benchmarks.
///
/// Settings: `sleep_ms` (handling time per message, default 0), `fail_every`
/// (return an error on every Nth message, default never), `panic_every` (panic on
/// every Nth message, default never): these make it the slow, failing or
/// panicking consumer that tests and demos need.
#[derive(Debug, Default)]
pub struct NullConsumer {
    seen: u64,
    options: NullOptions,
}

/// [`NullConsumer`] settings.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NullOptions {
    /// Milliseconds to sleep per message (may be fractional).
    pub sleep_ms: f64,
    /// Fail every Nth message (0 = never).
    pub fail_every: u64,
    /// Panic on every Nth message (0 = never).
    pub panic_every: u64,
}

impl NullConsumer {
    /// A null consumer with these options.
    pub fn new(options: NullOptions) -> NullConsumer {
        NullConsumer { seen: 0, options }
    }

    /// Its factory, as registered in the `fedhub` binary.
    pub fn factory() -> ConsumerFactory {
        ConsumerFactory::new("NullConsumer", |settings| {
            Ok(Box::new(NullConsumer::new(settings.parse()?)))
        })
    }

    /// Messages seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

impl Consumer for NullConsumer {
    fn consume(&mut self, _envelope: &Envelope, _ctx: &mut Context) -> Result<(), ConsumerError> {
        self.seen += 1;
        if self.options.sleep_ms > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(
                self.options.sleep_ms / 1000.0,
            ));
        }
        if self.options.panic_every > 0 && self.seen % self.options.panic_every == 0 {
            panic!("NullConsumer panics on message {} as configured", self.seen);
        }
        if self.options.fail_every > 0 && self.seen % self.options.fail_every == 0 {
            return Err(ConsumerError::msg(format!(
                "NullConsumer fails message {} as configured",
                self.seen
            )));
        }
        Ok(())
    }

    fn module(&self) -> &str {
        "fedhub.consumer"
    }
}
