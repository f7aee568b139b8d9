//! [`NullConsumer`]: counts, and on request sleeps, fails or panics.

use crate::message::Envelope;

use super::{Consumer, ConsumerError, ConsumerFactory, Context};

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
        .on_embedded_defaults()
        .example_config(include_str!("null.toml"))
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
        if self.options.panic_every > 0 && self.seen.is_multiple_of(self.options.panic_every) {
            panic!("NullConsumer panics on message {} as configured", self.seen);
        }
        if self.options.fail_every > 0 && self.seen.is_multiple_of(self.options.fail_every) {
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
