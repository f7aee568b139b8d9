//! Delivery of notifications by webhook and e-mail, with retries, backoff
//! and a dead-letter state kept in the store.
//!
//! # Design
//!
//! ```text
//! matcher thread --submit()--> unbounded channel --> intake thread
//!                                                     | one transaction per batch
//!                                                     v
//!                                  fmn_deliveries (SQLite or PostgreSQL)
//!                                                     ^ claim (lease) / delete / record failure
//!                                                     |
//!                           workers x N (`workers`) --+--> webhook (ureq) / SMTP (lettre)
//! ```
//!
//! - [`Deliverer::submit`] never blocks and never drops: it checks the
//!   context (only `email` and `webhook` are delivered here; the matcher
//!   publishes bus notifications itself) and hands the item to the intake
//!   thread through an unbounded channel.
//! - The intake thread writes what is waiting, several items in one
//!   transaction, to the outbox table `fmn_deliveries` (migration scope
//!   `fmn_delivery`). From then on the delivery survives a restart: a new
//!   [`Deliverer`] on the same database picks up every pending row. On
//!   shutdown the intake thread stores what is still in the channel first.
//! - Each worker claims one due row at a time (moving its `next_attempt_at`
//!   forward by a lease, a compare-and-set, so hubs sharing PostgreSQL do not
//!   send a row twice) and skips rows whose address another worker of this
//!   process is sending to: a slow or unreachable target holds at most one
//!   worker, and e-mails and other webhooks keep flowing on the others.
//!   Every send has a timeout (`webhook_timeout_ms`, `smtp_timeout_ms`).
//! - A sent row is deleted. A failed attempt records `attempts`, `last_error`
//!   and the next attempt's time, `retry_initial_ms` doubled per failure up
//!   to `retry_max_ms`, less up to 10 % jitter. After `max_attempts`
//!   attempts, or at once for a permanent failure (a URL that is not
//!   http/https, an invalid e-mail address, a 5xx SMTP refusal), the row
//!   becomes `dead`: logged at warn with its context, address and error,
//!   counted, listed by [`Deliverer::dead_letters`] and sent again by
//!   [`Deliverer::retry_dead`].
//! - Delivery is at least once: a send whose result could not be recorded
//!   (database down) is attempted again when its lease runs out.
//!
//! Metrics (in the registry given to [`Deliverer::start`]):
//! `fedhub_fmn_deliveries_total{context,outcome}` (outcome `sent`, `failed`
//! for every failed attempt, `dead` when a delivery is dead-lettered),
//! `fedhub_fmn_delivery_seconds{context}` (one attempt), and the gauges
//! `fedhub_fmn_deliveries_pending` and `fedhub_fmn_deliveries_dead`.

mod config;
pub mod email;
mod metrics;
mod outbox;
pub mod webhook;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use fedhub_storage::{Database, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use config::DeliveryConfig;
pub use outbox::migrations;

use metrics::{AttemptFailed, DeadLettered, Metrics, Sent};
use outbox::{Claimed, Outbox};

/// One message matched for one recipient: what a delivery sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The user (`ralph.id.fedoraproject.org`).
    pub openid: String,
    /// The context (`email`, `webhook`, ...).
    pub context: String,
    /// The preference's detail value: an e-mail address, a webhook URL.
    pub address: String,
    /// The name of the filter that matched.
    pub filter_name: String,
    /// The id of the filter that matched.
    pub filter_id: i64,
    /// The message's `msg_id`.
    pub msg_id: String,
    /// The message's topic.
    pub topic: String,
    /// fedmsg_meta's one-line summary.
    pub subtitle: String,
    /// fedmsg_meta's link (may be empty).
    pub link: String,
    /// The whole fedmsg message body.
    pub message: Value,
}

/// What goes out in one delivery: one notification, or a digest of several
/// for one recipient (batch preferences).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outgoing {
    /// One notification.
    Single(Notification),
    /// Several queued notifications for one address, sent together.
    Digest {
        /// The user.
        openid: String,
        /// The context.
        context: String,
        /// The detail value.
        address: String,
        /// The notifications, oldest first.
        notifications: Vec<Notification>,
    },
}

/// The contexts delivered here (the matcher publishes the others on the bus).
pub const CONTEXTS: &[&str] = &["email", "webhook"];

/// The most items the intake thread writes in one transaction.
const INTAKE_BATCH: usize = 500;

/// The longest a worker sleeps before looking for due deliveries again.
const IDLE_POLL: Duration = Duration::from_secs(1);

impl Outgoing {
    /// The recipient: `(openid, context, address)`.
    pub fn recipient(&self) -> (&str, &str, &str) {
        match self {
            Outgoing::Single(n) => (&n.openid, &n.context, &n.address),
            Outgoing::Digest {
                openid,
                context,
                address,
                ..
            } => (openid, context, address),
        }
    }

    /// The notifications it carries, oldest first.
    pub fn notifications(&self) -> &[Notification] {
        match self {
            Outgoing::Single(n) => std::slice::from_ref(n),
            Outgoing::Digest { notifications, .. } => notifications,
        }
    }

    /// One line describing it: `<topic> <msg_id>: <subtitle>`, or
    /// `digest of N notifications (<first msg_id>, ...)`.
    pub fn summary(&self) -> String {
        match self {
            Outgoing::Single(n) => format!("{} {}: {}", n.topic, n.msg_id, n.subtitle),
            Outgoing::Digest { notifications, .. } => {
                let ids: Vec<&str> = notifications.iter().map(|n| n.msg_id.as_str()).collect();
                format!(
                    "digest of {} notifications ({})",
                    notifications.len(),
                    ids.join(", ")
                )
            }
        }
    }
}

/// What went wrong starting the deliverer or handing it work.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A setting is invalid (the text names the key and what was expected).
    #[error("[consumers.FMNConsumer] {0}")]
    Config(String),
    /// The outbox could not be read or written.
    #[error("notification outbox: {0}")]
    Storage(#[from] StorageError),
    /// The metrics could not be registered.
    #[error("registering the delivery metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The context is not delivered here.
    #[error("notifications for context {context:?} are not delivered by e-mail or webhook: expected one of \"email\", \"webhook\"")]
    UnsupportedContext {
        /// The context given.
        context: String,
    },
    /// A digest without notifications.
    #[error("the digest for {address} holds no notification")]
    EmptyDigest {
        /// Its address.
        address: String,
    },
    /// A thread could not be started.
    #[error("starting the delivery thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The deliverer is stopping and takes no more work.
    #[error("the notification deliverer has stopped")]
    Stopped,
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendError {
    /// Worth trying again later (timeouts, refused connections, HTTP 500).
    Transient(String),
    /// Will fail every time (a bad address): dead at once.
    Permanent(String),
}

/// A delivery that gave up, as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The outbox row's id (for [`Deliverer::retry_dead`]).
    pub id: i64,
    /// When it was submitted (UTC, `YYYY-MM-DD HH:MM:SS.fff`).
    pub created_on: String,
    /// The user.
    pub openid: String,
    /// The context (`email`, `webhook`).
    pub context: String,
    /// The e-mail address or URL.
    pub address: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: String,
    /// What it carried ([`Outgoing::summary`]).
    pub summary: String,
    /// The `msg_id`s of the notifications it carried.
    pub msg_ids: Vec<String>,
}

/// The counters `/state` shows. `sent`, `failed_attempts` and
/// `dead_lettered` count since this deliverer started; `pending` and `dead`
/// are levels (read from the store at start, then kept by this process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounters {
    /// Deliveries sent.
    pub sent: u64,
    /// Failed attempts (each retry that failed counts).
    pub failed_attempts: u64,
    /// Deliveries that became dead letters.
    pub dead_lettered: u64,
    /// Deliveries waiting to be sent or retried.
    pub pending: u64,
    /// Dead letters in the store.
    pub dead: u64,
}

/// What the worker and intake threads share.
struct Shared {
    outbox: Outbox,
    config: DeliveryConfig,
    webhook: webhook::WebhookSender,
    email: email::EmailSender,
    metrics: Metrics,
    /// The addresses a worker of this process is sending to.
    in_flight: Mutex<HashSet<String>>,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
}

impl Shared {
    fn wake(&self, n: usize) {
        for _ in 0..n {
            if self.wake_tx.try_send(()).is_err() {
                break;
            }
        }
    }

    /// How long a claimed row stays leased to its worker.
    fn lease(&self) -> Duration {
        let longest = self
            .config
            .smtp_timeout()
            .max(self.config.webhook_timeout());
        longest * 4 + Duration::from_secs(60)
    }
}

/// Sends notifications by webhook and e-mail from worker threads, through
/// an outbox in the store. See the [module documentation](self).
pub struct Deliverer {
    shared: Arc<Shared>,
    intake: Option<Sender<Outgoing>>,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, DeliveryError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|source| DeliveryError::Thread { name, source })
}

impl Deliverer {
    /// Validates `config`, creates or upgrades the outbox table in `db`,
    /// registers the metrics in `registry` and starts the intake thread and
    /// `config.workers` workers. Pending rows left by an earlier run are
    /// sent again.
    pub fn start(
        db: Database,
        config: DeliveryConfig,
        registry: &prometheus::Registry,
    ) -> Result<Deliverer, DeliveryError> {
        config.validate().map_err(DeliveryError::Config)?;
        let outbox = Outbox::open(db)?;
        let metrics = Metrics::register(registry)?;
        let email = email::EmailSender::new(&config).map_err(DeliveryError::Config)?;
        let webhook = webhook::WebhookSender::new(config.webhook_timeout());
        let (pending, dead) = (outbox.count("pending")?, outbox.count("dead")?);
        metrics.set_levels(pending, dead);
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(config.workers * 2);
        let workers = config.workers;
        let shared = Arc::new(Shared {
            outbox,
            config,
            webhook,
            email,
            metrics,
            in_flight: Mutex::new(HashSet::new()),
            wake_tx,
            wake_rx,
        });
        let (intake_tx, intake_rx) = crossbeam_channel::unbounded::<Outgoing>();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let mut deliverer = Deliverer {
            shared: shared.clone(),
            intake: Some(intake_tx),
            stop: Some(stop_tx),
            threads: Vec::with_capacity(workers + 1),
        };
        {
            let shared = shared.clone();
            let stop = stop_rx.clone();
            deliverer
                .threads
                .push(spawn("fmn-delivery-intake".into(), move || {
                    intake_loop(&shared, &intake_rx, &stop)
                })?);
        }
        for i in 0..workers {
            let shared = shared.clone();
            let stop = stop_rx.clone();
            deliverer
                .threads
                .push(spawn(format!("fmn-delivery-{i}"), move || {
                    worker_loop(&shared, &stop)
                })?);
        }
        tracing::info!(workers, pending, dead, "notification delivery started");
        Ok(deliverer)
    }

    /// Accepts one delivery; returns at once (the intake thread stores it).
    /// Errors: a context other than `email` or `webhook`
    /// ([`DeliveryError::UnsupportedContext`]), an empty digest, or a
    /// deliverer that has stopped. Nothing accepted is dropped.
    pub fn submit(&self, outgoing: Outgoing) -> Result<(), DeliveryError> {
        let (_, context, address) = outgoing.recipient();
        if !CONTEXTS.contains(&context) {
            return Err(DeliveryError::UnsupportedContext {
                context: context.to_string(),
            });
        }
        if outgoing.notifications().is_empty() {
            return Err(DeliveryError::EmptyDigest {
                address: address.to_string(),
            });
        }
        let intake = self.intake.as_ref().ok_or(DeliveryError::Stopped)?;
        self.shared.metrics.add_pending(1);
        intake.send(outgoing).map_err(|_| {
            self.shared.metrics.add_pending(-1);
            DeliveryError::Stopped
        })
    }

    /// Deliveries waiting to be sent or retried (submitted, not yet sent nor
    /// dead).
    pub fn pending_count(&self) -> u64 {
        self.shared.metrics.pending()
    }

    /// The newest `limit` dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, DeliveryError> {
        Ok(self
            .shared
            .outbox
            .dead(limit)?
            .into_iter()
            .map(|row| {
                let outgoing = serde_json::from_str::<Outgoing>(&row.payload).ok();
                DeadLetter {
                    id: row.id,
                    created_on: row.created_on,
                    openid: row.openid,
                    context: row.context,
                    address: row.address,
                    attempts: row.attempts,
                    last_error: row.last_error,
                    summary: outgoing
                        .as_ref()
                        .map(Outgoing::summary)
                        .unwrap_or_else(|| "(unreadable payload)".into()),
                    msg_ids: outgoing
                        .as_ref()
                        .map(|o| o.notifications().iter().map(|n| n.msg_id.clone()).collect())
                        .unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Makes dead letter `id` pending again, due now, its attempts reset.
    /// False when there is no dead letter `id`.
    pub fn retry_dead(&self, id: i64) -> Result<bool, DeliveryError> {
        let retried = self.shared.outbox.retry_dead(id, now_ms())?;
        if retried {
            tracing::info!(id, "dead notification delivery queued again");
            self.shared.metrics.add_dead(-1);
            self.shared.metrics.add_pending(1);
            self.shared.wake(1);
        }
        Ok(retried)
    }

    /// The counters for `/state`.
    pub fn counters(&self) -> DeliveryCounters {
        let m = &self.shared.metrics;
        DeliveryCounters {
            sent: m.sent.load(Ordering::Relaxed),
            failed_attempts: m.failed_attempts.load(Ordering::Relaxed),
            dead_lettered: m.dead_lettered.load(Ordering::Relaxed),
            pending: m.pending(),
            dead: m.dead(),
        }
    }

    /// Stops: what was submitted is stored, the sends under way finish and
    /// are recorded, the threads end. What is pending stays in the store for
    /// the next start.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.intake.take();
        self.stop.take();
        for thread in self.threads.drain(..) {
            let name = thread.thread().name().unwrap_or("").to_string();
            if thread.join().is_err() {
                tracing::error!(thread = name, "notification delivery thread panicked");
            }
        }
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn stopped(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
}

/// Stores submitted items, several per transaction, until the channel
/// closes (shutdown), then stores what is left and ends.
fn intake_loop(shared: &Shared, items: &Receiver<Outgoing>, stop: &Receiver<()>) {
    while let Ok(first) = items.recv() {
        let mut batch = vec![first];
        batch.extend(items.try_iter().take(INTAKE_BATCH - 1));
        let mut failures = 0u32;
        loop {
            match shared.outbox.insert(&batch, now_ms()) {
                Ok(_) => break,
                Err(e) => {
                    failures += 1;
                    if stopped(stop) && failures >= 5 {
                        shared.metrics.add_pending(-(batch.len() as i64));
                        tracing::error!(
                            lost = batch.len(),
                            error = %fedhub::error_chain(&e),
                            "notification outbox unavailable at shutdown: deliveries lost"
                        );
                        break;
                    }
                    let wait = Duration::from_millis(100 * u64::from(failures.min(50)));
                    tracing::warn!(
                        items = batch.len(),
                        failures,
                        retry_in_ms = wait.as_millis() as u64,
                        error = %fedhub::error_chain(&e),
                        "storing notification deliveries failed; holding them and retrying"
                    );
                    std::thread::sleep(wait);
                }
            }
        }
        shared.wake(batch.len().min(shared.config.workers));
    }
}

/// Claims due deliveries and attempts them until shutdown.
fn worker_loop(shared: &Shared, stop: &Receiver<()>) {
    loop {
        if stopped(stop) {
            return;
        }
        let claimed = {
            let mut in_flight = shared.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_ms();
            let lease_until = now + shared.lease().as_millis() as i64;
            let claimed = shared
                .outbox
                .claim(now, lease_until, |address| in_flight.contains(address));
            if let Ok(Some(c)) = &claimed {
                in_flight.insert(c.outgoing.recipient().2.to_string());
            }
            claimed
        };
        let wait = match claimed {
            Ok(Some(claimed)) => {
                let address = claimed.outgoing.recipient().2.to_string();
                attempt(shared, claimed);
                shared
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&address);
                // Another worker may have skipped a row for this address.
                shared.wake(1);
                continue;
            }
            Ok(None) => match shared.outbox.next_due() {
                Ok(Some(at)) => {
                    let until = at - now_ms();
                    if until <= 0 {
                        // Due, but its address is busy: look again soon.
                        Duration::from_millis(50)
                    } else {
                        Duration::from_millis(until as u64).min(IDLE_POLL)
                    }
                }
                Ok(None) => IDLE_POLL,
                Err(e) => {
                    tracing::warn!(error = %fedhub::error_chain(&e), "reading the notification outbox failed");
                    IDLE_POLL
                }
            },
            Err(e) => {
                tracing::warn!(error = %fedhub::error_chain(&e), "claiming a notification delivery failed");
                IDLE_POLL
            }
        };
        crossbeam_channel::select! {
            recv(stop) -> _ => return,
            recv(shared.wake_rx) -> _ => {},
            default(wait) => {},
        }
    }
}

/// One attempt of a claimed delivery, and its outcome recorded.
fn attempt(shared: &Shared, claimed: Claimed) {
    let Claimed {
        id,
        attempts,
        outgoing,
    } = claimed;
    let (_, context, address) = outgoing.recipient();
    let started = Instant::now();
    let result = match context {
        "webhook" => shared.webhook.send(address, &outgoing),
        "email" => shared.email.send(address, &outgoing),
        other => Err(SendError::Permanent(format!(
            "context {other:?} is not delivered by e-mail or webhook"
        ))),
    };
    let elapsed = started.elapsed();
    shared.metrics.observe(context, elapsed);
    let attempts = attempts + 1;
    let (error, permanent) = match result {
        Ok(()) => {
            if let Err(e) = shared.outbox.delivered(id) {
                tracing::error!(
                    id,
                    context,
                    address,
                    error = %fedhub::error_chain(&e),
                    "a delivered notification could not be removed from the outbox; it will be sent again"
                );
            }
            Sent {
                id,
                context,
                address,
                attempts,
                elapsed,
            }
            .emit(&shared.metrics);
            return;
        }
        Err(SendError::Transient(e)) => (e, false),
        Err(SendError::Permanent(e)) => (e, true),
    };
    let dead = permanent || attempts >= shared.config.max_attempts;
    let retry_in = (!dead).then(|| shared.config.backoff(attempts));
    let recorded = shared.outbox.failed(
        id,
        attempts,
        &error,
        retry_in.map(|d| now_ms() + d.as_millis() as i64),
    );
    AttemptFailed {
        id,
        context,
        address,
        attempts,
        error: &error,
        retry_in,
    }
    .emit(&shared.metrics);
    if let Err(e) = recorded {
        tracing::error!(
            id,
            context,
            address,
            error = %fedhub::error_chain(&e),
            "a failed notification delivery could not be recorded; it is retried when its lease ends"
        );
        return;
    }
    if dead {
        DeadLettered {
            id,
            context,
            address,
            attempts,
            error: &error,
        }
        .emit(&shared.metrics);
    }
}
