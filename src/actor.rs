//! The actor that runs one consumer: bounded mailbox, exact backlog, panics
//! caught, handling time recorded, restarts after fatal errors.
//!
//! The router hands messages over in batches ([`Deliver`]): everything that
//! arrived for a consumer in one drain of the bus, so a burst costs one mailbox
//! send and one wake-up of the consumer's thread per batch, not per message.
//!
//! actix has no public mailbox length, and a batch holds many messages, so the
//! backlog is counted: each message is counted when the router admits it, and a
//! [`BatchBacklog`] travels inside every batch, releasing one message as each is
//! handled and the rest when dropped (also when actix discards the batch because
//! the actor is gone), so the count stays exact either way.

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Handler, Message};

use crate::after::Handoffs;
use crate::backlog::BatchBacklog;
use crate::consumer::{Consumer, ConsumerError, Context};
use crate::events::{ConsumerFailed, ConsumerRestarted};
use crate::message::Envelope;
use crate::stats::{ConsumerStats, DropReason};

/// A batch of messages for a consumer, in arrival order, with their backlog count.
pub struct Deliver {
    /// The messages, each shared with the other consumers it matched.
    pub envelopes: Vec<Arc<Envelope>>,
    /// Uncounts each message as its handling ends.
    pub backlog: BatchBacklog,
    /// Consumers waiting for this one to finish a message (`after`): the
    /// position of the message in `envelopes` and its handoffs, in order of
    /// position; empty for most batches.
    pub after: Vec<(usize, Handoffs)>,
}

impl Message for Deliver {
    type Result = ();
}

/// Asks the consumer to stop; queued behind the messages already in the mailbox,
/// so handling it means the mailbox has drained.
pub struct StopConsumer {
    /// Told when the consumer has stopped.
    pub done: Sender<String>,
}

impl Message for StopConsumer {
    type Result = ();
}

/// Everything a consumer actor is made of.
pub struct ConsumerActor {
    name: String,
    consumer: Box<dyn Consumer>,
    ctx: Context,
    stats: Arc<ConsumerStats>,
    capacity: usize,
    retries: u32,
    dead_letter_file: Option<PathBuf>,
    started_tx: Option<Sender<Result<(), ConsumerError>>>,
    shutting_down: Arc<AtomicBool>,
    grace_over: Arc<AtomicBool>,
    stopped: bool,
}

/// What a consumer actor needs besides the consumer.
pub struct ActorSetup {
    /// The consumer's name.
    pub name: String,
    /// Its stats.
    pub stats: Arc<ConsumerStats>,
    /// Mailbox bound.
    pub capacity: usize,
    /// Extra attempts per failed message.
    pub retries: u32,
    /// Where finally failed messages are written.
    pub dead_letter_file: Option<PathBuf>,
    /// Receives the result of the first `start`.
    pub started_tx: Sender<Result<(), ConsumerError>>,
    /// Set when the hub is stopping (ends start retries).
    pub shutting_down: Arc<AtomicBool>,
    /// Set when the shutdown grace is over: messages still in the mailbox are
    /// discarded, counted as dropped (reason `shutdown`), not handled.
    pub grace_over: Arc<AtomicBool>,
}

impl ConsumerActor {
    /// Wraps a consumer.
    pub fn new(consumer: Box<dyn Consumer>, ctx: Context, setup: ActorSetup) -> ConsumerActor {
        ConsumerActor {
            name: setup.name,
            consumer,
            ctx,
            stats: setup.stats,
            capacity: setup.capacity,
            retries: setup.retries,
            dead_letter_file: setup.dead_letter_file,
            started_tx: Some(setup.started_tx),
            shutting_down: setup.shutting_down,
            grace_over: setup.grace_over,
            stopped: false,
        }
    }

    fn try_start(&mut self) -> Result<(), ConsumerError> {
        let outcome = caught(|| self.consumer.start(&mut self.ctx));
        let result = match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(ConsumerError::msg(format!(
                "panicked: {}",
                panic_text(&panic)
            ))),
        };
        self.stats.set_initialized(result.is_ok());
        result
    }

    /// Before handling a message, make sure the consumer runs; retry a failed
    /// (re)start with backoff. Messages wait in the mailbox meanwhile, visible as
    /// backlog, rather than being thrown away.
    fn ensure_started(&mut self) {
        let mut delay = Duration::from_millis(500);
        while !self.stats.initialized() && !self.shutting_down.load(Ordering::Acquire) {
            match self.try_start() {
                Ok(()) => tracing::info!(consumer = %self.name, "consumer restarted"),
                Err(error) => {
                    let error = crate::error_chain(&error);
                    tracing::error!(consumer = %self.name, %error, retry_in_ms = delay.as_millis() as u64, "consumer failed to start");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn restart(&mut self, reason: &str) {
        ConsumerRestarted {
            consumer: &self.stats,
            reason,
        }
        .emit();
        let _ = caught(|| self.consumer.stop(&mut self.ctx));
        self.stats.set_initialized(false);
        if let Err(error) = self.try_start() {
            let error = crate::error_chain(&error);
            tracing::error!(consumer = %self.name, %error, "consumer failed to start after a fatal error");
        }
    }

    fn dead_letter(&self, envelope: &Envelope, error: &str) {
        let Some(path) = &self.dead_letter_file else {
            return;
        };
        let line = serde_json::json!({
            "consumer": self.name,
            "error": error,
            "failed_at": crate::stats::unix_seconds(std::time::SystemTime::now()),
            "topic": envelope.topic(),
            "body": envelope.body(),
        });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        match written {
            Ok(()) => self.stats.clear_dead_letter_problem(),
            Err(error) => crate::events::DeadLetterFailed {
                consumer: &self.stats,
                path,
                error: &error,
            }
            .emit(),
        }
    }
}

thread_local! {
    /// Set while a consumer's own code runs under `catch_unwind` on this thread.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic caught on this thread happened (`file:line`).
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs, once per process, a panic hook that stays quiet about panics
/// caught in consumer code: those are counted and logged as one short, rate
/// limited line by [`ConsumerFailed`] (message and location, never a
/// backtrace). Every other panic goes to the hook that was installed before.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs consumer code, catching a panic (reported by the hook above only
/// through [`panic_text`]).
fn caught<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    let was = CATCHING.with(|c| c.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was));
    outcome
}

/// The panic's message and, when the hook saw it, where it happened.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let message = if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic payload".to_string()
    };
    match PANIC_LOCATION.with(|slot| slot.borrow_mut().take()) {
        Some(location) => format!("{message} (at {location})"),
        None => message,
    }
}

impl Actor for ConsumerActor {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.capacity);
        self.stats.set_capacity(self.capacity);
        let result = self.try_start();
        if let Some(tx) = self.started_tx.take() {
            let _ = tx.send(result);
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.stats.set_initialized(false);
    }
}

impl ConsumerActor {
    /// Handles one message: retries, panics caught, failures dead-lettered,
    /// handling time recorded.
    fn handle_one(&mut self, envelope: &Envelope) {
        if self.stopped {
            crate::events::MessageDropped {
                consumer: &self.stats,
                reason: DropReason::ConsumerStopped,
                topic: envelope.topic(),
            }
            .emit();
            return;
        }
        self.ensure_started();
        if !self.stats.initialized() {
            // Only reachable when the hub stops while the consumer cannot start.
            crate::events::MessageDropped {
                consumer: &self.stats,
                reason: DropReason::Shutdown,
                topic: envelope.topic(),
            }
            .emit();
            return;
        }
        let began = Instant::now();
        let mut failure: Option<String> = None;
        let mut panicked = false;
        for attempt in 1..=self.retries.saturating_add(1) {
            let outcome = caught(|| self.consumer.consume(envelope, &mut self.ctx));
            let (error, is_panic, fatal) = match outcome {
                Ok(Ok(())) => {
                    failure = None;
                    break;
                }
                Ok(Err(e)) => (crate::error_chain(&e), false, e.is_fatal()),
                Err(panic) => (panic_text(&panic), true, false),
            };
            ConsumerFailed {
                consumer: &self.name,
                topic: envelope.topic(),
                msg_id: envelope.msg_id(),
                error: &error,
                panicked: is_panic,
                attempt,
            }
            .emit();
            panicked |= is_panic;
            if fatal {
                self.restart(&error);
            }
            failure = Some(error);
        }
        self.stats
            .record_handled(began.elapsed(), failure.is_some(), panicked);
        if let Some(error) = failure {
            self.dead_letter(envelope, &error);
        }
    }
}

impl Handler<Deliver> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
        let Deliver {
            envelopes,
            mut backlog,
            after,
        } = msg;
        let mut after = after.into_iter().peekable();
        for (position, envelope) in envelopes.into_iter().enumerate() {
            // The handoffs of this message are lent to the holds `consume`
            // makes, and dropped here otherwise: the followers get the message
            // when this consumer's work on it is done.
            let handoffs = match after.peek() {
                Some((p, _)) if *p == position => after.next().map(|(_, h)| h),
                _ => None,
            };
            if let Some(h) = handoffs {
                self.ctx.set_handoffs(h);
            }
            if self.grace_over.load(Ordering::Relaxed) {
                // Counted here, logged once per consumer by the hub.
                self.stats.count_dropped(DropReason::Shutdown);
                self.ctx.set_handoffs(Vec::new());
                drop(envelope);
                backlog.release_one();
                continue;
            }
            self.ctx.begin_message();
            self.handle_one(&envelope);
            let handed_over = self.ctx.end_message();
            self.ctx.set_handoffs(Vec::new());
            // The envelope goes before its count: a drained backlog means the
            // consumer holds no message any more.
            drop(envelope);
            if handed_over {
                backlog.hand_over_one();
            } else {
                backlog.release_one();
            }
        }
    }
}

impl Handler<StopConsumer> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, msg: StopConsumer, _ctx: &mut Self::Context) {
        if !self.stopped {
            self.stopped = true;
            let _ = caught(|| self.consumer.stop(&mut self.ctx));
            self.stats.set_initialized(false);
        }
        let _ = msg.done.send(self.name.clone());
    }
}
