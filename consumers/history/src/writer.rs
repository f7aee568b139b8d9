//! The batch writer: a dedicated thread that commits messages to the store in
//! batches, and the [`Health`] it reports.
//!
//! Why a thread of its own rather than committing inline in `consume`: a commit
//! writes pages, updates four B-trees per message and now and then checkpoints
//! the WAL, which takes milliseconds, and a locked database makes a statement
//! wait up to the busy timeout. Inline, each of those pauses stalls the consumer
//! and shows up as handling time and backlog for every message behind it. On
//! its own thread, the consumer only extracts users and packages (microseconds)
//! and enqueues; the writer commits one transaction per `batch_messages` or per
//! `batch_latency`, whichever comes first, while the consumer prepares the next
//! batch on the other core.
//!
//! Nothing is dropped. The queue between them is bounded (`queue_messages`):
//! when the database is slow or failing, `submit` blocks, the consumer stops
//! taking messages and the hub sees the backlog grow (they stay in the mailbox).
//! A batch that fails to commit (locked database, full disk) is kept and retried
//! with backoff until it succeeds; meanwhile each failed attempt is counted
//! (`fedhub_history_write_errors_total`), [`Health`] and the hub's
//! `/health/readyz` report the failure, and the consumer takes no more messages
//! until a commit succeeds: the rest wait in the hub's mailbox as backlog.
//! Messages handed over with [`BatchWriter::submit_holding`] (as the consumer
//! does) stay counted in the hub's backlog until their batch is committed, so
//! the backlog ops see is exactly what is not stored yet. What a crash can lose
//! is bounded by the queue plus one batch: the messages accepted but not yet
//! committed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use serde::Serialize;

use fedhub::BacklogGuard;

use crate::events::{names, CommitFailed, MessageRefused};
use crate::filter::now_secs;
use crate::store::{NewMessage, Store};

/// How the writer batches.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Most messages per transaction.
    pub batch_messages: usize,
    /// Longest a message waits before its batch is committed.
    pub batch_latency: Duration,
    /// Messages queued between the consumer and the writer.
    pub queue_messages: usize,
    /// Longest pause between retries of a failed batch.
    pub retry_max: Duration,
    /// How long `shutdown` keeps retrying a failing batch before giving up.
    pub shutdown_grace: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            batch_messages: 10_000,
            batch_latency: Duration::from_millis(250),
            queue_messages: 20_000,
            retry_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why the writer did not take or finish work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriterError {
    /// The writer thread is gone.
    #[error("the history writer is stopped")]
    Stopped,
    /// A flush did not finish in time.
    #[error("history writer did not commit within {waited_ms} ms ({queued} messages queued, last error: {last_error})")]
    Timeout {
        /// Milliseconds waited.
        waited_ms: u64,
        /// Messages still queued.
        queued: u64,
        /// The last write error, or `none`.
        last_error: String,
    },
}

/// A snapshot of the writer's state, for readiness checks and `/datagrepper/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// False while the last commit attempt failed.
    pub healthy: bool,
    /// Messages accepted but not yet committed.
    pub queued: u64,
    /// Messages stored since start.
    pub stored: u64,
    /// Messages skipped because their `msg_id` was already stored.
    pub duplicates: u64,
    /// Failed commit attempts.
    pub write_errors: u64,
    /// Messages the database refused for good (logged with their msg_id).
    pub rejected: u64,
    /// Queries refused with a 400 (bad parameters).
    pub bad_requests: u64,
    /// The last write error.
    pub last_error: Option<String>,
    /// When it happened (unix seconds).
    pub last_error_at: Option<f64>,
    /// When the last batch was committed (unix seconds).
    pub last_commit_at: Option<f64>,
}

/// Counters and state shared by the writer, the consumer and HTTP handlers.
/// Outlives writer restarts.
#[derive(Default)]
pub struct WriterState {
    failing: AtomicBool,
    queued: AtomicU64,
    stored: AtomicU64,
    duplicates: AtomicU64,
    write_errors: AtomicU64,
    rejected: AtomicU64,
    bad_requests: AtomicU64,
    last_error: Mutex<Option<(String, f64)>>,
    last_commit_at: Mutex<Option<f64>>,
    metrics: Mutex<Option<Metrics>>,
    readiness: Mutex<Option<fedhub::Readiness>>,
}

/// Prometheus series for the writer.
#[derive(Clone)]
struct Metrics {
    stored: prometheus::IntCounter,
    duplicates: prometheus::IntCounter,
    write_errors: prometheus::IntCounter,
    queued: prometheus::IntGauge,
    bad_requests: prometheus::IntCounterVec,
}

impl WriterState {
    /// Fresh state.
    pub fn new() -> Arc<WriterState> {
        Arc::new(WriterState::default())
    }

    /// The current state.
    pub fn health(&self) -> Health {
        let last_error = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        Health {
            healthy: !self.failing.load(Ordering::Acquire),
            queued: self.queued.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
            last_error: last_error.as_ref().map(|e| e.0.clone()),
            last_error_at: last_error.as_ref().map(|e| e.1),
            last_commit_at: *self
                .last_commit_at
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Whether the last commit attempt failed.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// The last write error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| e.0.clone())
    }

    /// Registers `fedhub_history_*` series in `registry` (once; later calls are no-ops).
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        let mut slot = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        let metrics = Metrics {
            stored: prometheus::IntCounter::new(
                names::MESSAGES_STORED_TOTAL,
                "Messages stored by the history consumer",
            )?,
            duplicates: prometheus::IntCounter::new(
                names::DUPLICATES_TOTAL,
                "Messages skipped because their msg_id was already stored",
            )?,
            write_errors: prometheus::IntCounter::new(
                names::WRITE_ERRORS_TOTAL,
                "Failed commit attempts of the history store",
            )?,
            queued: prometheus::IntGauge::new(
                names::QUEUE_MESSAGES,
                "Messages accepted by the history consumer and not yet committed",
            )?,
            bad_requests: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    names::BAD_REQUESTS_TOTAL,
                    "History API requests refused with 400 (bad parameters), by endpoint",
                ),
                &["endpoint"],
            )?,
        };
        for c in [
            Box::new(metrics.stored.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.duplicates.clone()),
            Box::new(metrics.write_errors.clone()),
            Box::new(metrics.queued.clone()),
            Box::new(metrics.bad_requests.clone()),
        ] {
            match registry.register(c) {
                Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
                Err(e) => return Err(e),
            }
        }
        metrics.stored.inc_by(self.stored.load(Ordering::Relaxed));
        metrics
            .duplicates
            .inc_by(self.duplicates.load(Ordering::Relaxed));
        metrics
            .write_errors
            .inc_by(self.write_errors.load(Ordering::Relaxed));
        *slot = Some(metrics);
        Ok(())
    }

    /// Reports commit failures to the hub's `/health/readyz` through `readiness`
    /// (and clears them when a commit succeeds again).
    pub fn attach_readiness(&self, readiness: fedhub::Readiness) {
        if self.is_failing() {
            readiness.set_problem(self.problem_text());
        } else {
            readiness.clear();
        }
        *self.readiness.lock().unwrap_or_else(|p| p.into_inner()) = Some(readiness);
    }

    fn readiness(&self) -> Option<fedhub::Readiness> {
        self.readiness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn problem_text(&self) -> String {
        format!(
            "history store cannot commit ({}); {} messages waiting to be stored, retrying",
            self.last_error().unwrap_or_else(|| "unknown error".into()),
            self.queued.load(Ordering::Relaxed)
        )
    }

    /// Messages accepted and not yet committed.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// One place for "a query was refused": counter, metric, log.
    pub fn bad_request(&self, endpoint: &str, error: &crate::filter::FilterError) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics() {
            m.bad_requests.with_label_values(&[endpoint]).inc();
        }
        tracing::debug!(endpoint, parameter = %error.parameter, error = %error, "history query refused");
    }

    fn metrics(&self) -> Option<Metrics> {
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn queued_changed(&self) {
        if let Some(m) = self.metrics() {
            m.queued
                .set(self.queued.load(Ordering::Relaxed).min(i64::MAX as u64) as i64);
        }
    }

    /// One place for "a batch was committed": counters, metrics, log.
    fn committed(&self, messages: usize, stored: u64, duplicates: u64, took: Duration) {
        self.stored.fetch_add(stored, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.queued.fetch_sub(messages as u64, Ordering::Relaxed);
        *self
            .last_commit_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(now_secs());
        if self.failing.swap(false, Ordering::AcqRel) {
            if let Some(r) = self.readiness() {
                r.clear();
            }
            tracing::info!(messages, "history store recovered");
        }
        if let Some(m) = self.metrics() {
            m.stored.inc_by(stored);
            m.duplicates.inc_by(duplicates);
        }
        self.queued_changed();
        if duplicates > 0 {
            tracing::debug!(duplicates, "skipped messages already stored");
        }
        tracing::trace!(
            messages,
            stored,
            took_ms = took.as_millis() as u64,
            "batch committed"
        );
    }

    /// Counts a message the database refused for good (see [`MessageRefused`]).
    pub(crate) fn count_refused(&self, error: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.queued.fetch_sub(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((error.to_string(), now_secs()));
        if let Some(m) = self.metrics() {
            m.write_errors.inc();
        }
        self.queued_changed();
    }

    /// Counts a failed commit and reports it to readiness (see [`CommitFailed`]).
    pub(crate) fn count_commit_failure(&self, error: &str) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Release);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((error.to_string(), now_secs()));
        if let Some(m) = self.metrics() {
            m.write_errors.inc();
        }
        if let Some(r) = self.readiness() {
            r.set_problem(self.problem_text());
        }
    }
}

enum Command {
    /// A message, and the hold that keeps it in the consumer's backlog until committed.
    Store(Box<NewMessage>, Option<BacklogGuard>),
    Flush(Sender<()>),
}

/// The handle to a running writer thread.
pub struct BatchWriter {
    tx: Option<Sender<Command>>,
    state: Arc<WriterState>,
    handle: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// Starts a writer thread committing into `store`.
    pub fn spawn(
        store: Arc<dyn Store>,
        options: WriterOptions,
        state: Arc<WriterState>,
    ) -> std::io::Result<BatchWriter> {
        let (tx, rx) = bounded(options.queue_messages.max(1));
        let thread_state = state.clone();
        let handle = std::thread::Builder::new()
            .name("fedhub-history-writer".into())
            .spawn(move || run(store, options, thread_state, rx))?;
        Ok(BatchWriter {
            tx: Some(tx),
            state,
            handle: Some(handle),
        })
    }

    /// The shared state (health, counters).
    pub fn state(&self) -> &Arc<WriterState> {
        &self.state
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.state.health()
    }

    /// Queues a message. Blocks while the queue is full (back-pressure); never drops.
    pub fn submit(&self, message: NewMessage) -> Result<(), WriterError> {
        self.send_store(message, None)
    }

    /// Queues a message that stays counted in the consumer's backlog (`hold`,
    /// from `Context::hold_backlog`) until its batch is committed.
    pub fn submit_holding(
        &self,
        message: NewMessage,
        hold: BacklogGuard,
    ) -> Result<(), WriterError> {
        self.send_store(message, Some(hold))
    }

    fn send_store(
        &self,
        message: NewMessage,
        hold: Option<BacklogGuard>,
    ) -> Result<(), WriterError> {
        let tx = self.tx.as_ref().ok_or(WriterError::Stopped)?;
        self.state.queued.fetch_add(1, Ordering::Relaxed);
        let mut command = Command::Store(Box::new(message), hold);
        let began = Instant::now();
        let mut warned = Instant::now();
        loop {
            match tx.send_timeout(command, Duration::from_millis(500)) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(back)) => {
                    command = back;
                    if warned.elapsed() >= Duration::from_secs(10) {
                        warned = Instant::now();
                        tracing::warn!(
                            waited_ms = began.elapsed().as_millis() as u64,
                            queued = self.state.queued.load(Ordering::Relaxed),
                            last_error = self.state.last_error().unwrap_or_default(),
                            "history writer queue is full, waiting"
                        );
                    }
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    self.state.queued.fetch_sub(1, Ordering::Relaxed);
                    return Err(WriterError::Stopped);
                }
            }
        }
        self.state.queued_changed();
        Ok(())
    }

    /// Waits until every message submitted so far is committed.
    pub fn flush(&self, timeout: Duration) -> Result<(), WriterError> {
        let tx = self.tx.as_ref().ok_or(WriterError::Stopped)?;
        let (done_tx, done_rx) = bounded(1);
        let began = Instant::now();
        let timed_out = |state: &WriterState| WriterError::Timeout {
            waited_ms: began.elapsed().as_millis() as u64,
            queued: state.queued.load(Ordering::Relaxed),
            last_error: state.last_error().unwrap_or_else(|| "none".into()),
        };
        match tx.send_timeout(Command::Flush(done_tx), timeout) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(timed_out(&self.state)),
            Err(SendTimeoutError::Disconnected(_)) => return Err(WriterError::Stopped),
        }
        let left = timeout.saturating_sub(began.elapsed());
        match done_rx.recv_timeout(left) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(timed_out(&self.state)),
            Err(RecvTimeoutError::Disconnected) => Err(WriterError::Stopped),
        }
    }

    /// Commits what is queued and stops the thread. A batch that still fails after
    /// the shutdown grace period is reported (error log with its msg_ids) and dropped.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("history writer thread panicked");
            }
        }
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn run(
    store: Arc<dyn Store>,
    options: WriterOptions,
    state: Arc<WriterState>,
    rx: Receiver<Command>,
) {
    let mut batch: Vec<NewMessage> = Vec::with_capacity(options.batch_messages);
    // Released once their batch is committed (or given up at shutdown).
    let mut holds: Vec<BacklogGuard> = Vec::with_capacity(options.batch_messages);
    let mut waiting: Vec<Sender<()>> = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let received = match deadline {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_deadline(at),
        };
        let (commit_now, closing) = match received {
            Ok(Command::Store(message, hold)) => {
                if batch.is_empty() {
                    deadline = Some(Instant::now() + options.batch_latency);
                }
                batch.push(*message);
                holds.extend(hold);
                (batch.len() >= options.batch_messages, false)
            }
            Ok(Command::Flush(done)) => {
                waiting.push(done);
                (true, false)
            }
            Err(RecvTimeoutError::Timeout) => (true, false),
            Err(RecvTimeoutError::Disconnected) => (true, true),
        };
        if commit_now {
            commit(&*store, &options, &state, &mut batch, closing);
            holds.clear();
            deadline = None;
            for done in waiting.drain(..) {
                let _ = done.send(());
            }
        }
        if closing {
            break;
        }
    }
    tracing::debug!("history writer stopped");
}

/// Commits `batch`, retrying with backoff until it succeeds (or, when closing,
/// until the grace period ends).
fn commit(
    store: &dyn Store,
    options: &WriterOptions,
    state: &WriterState,
    batch: &mut Vec<NewMessage>,
    closing: bool,
) {
    if batch.is_empty() {
        return;
    }
    let began = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt = Instant::now();
        match store.insert_batch(batch) {
            Ok(report) => {
                state.committed(
                    batch.len(),
                    report.stored,
                    report.duplicates,
                    attempt.elapsed(),
                );
                batch.clear();
                return;
            }
            Err(e) if !e.is_transient() => {
                // The database refuses something in this batch for good: store the
                // messages one by one and report the ones it refuses.
                let mut rest = Vec::new();
                for message in batch.drain(..) {
                    match store.insert_batch(std::slice::from_ref(&message)) {
                        Ok(report) => {
                            state.committed(1, report.stored, report.duplicates, Duration::ZERO)
                        }
                        Err(e) if e.is_transient() => rest.push(message),
                        Err(e) => MessageRefused {
                            state,
                            message: &message,
                            error: &e.to_string(),
                        }
                        .emit(),
                    }
                }
                *batch = rest;
                if batch.is_empty() {
                    return;
                }
            }
            Err(e) => {
                let error = e.to_string();
                if closing && began.elapsed() >= options.shutdown_grace {
                    let ids: Vec<&str> = batch.iter().map(|m| m.msg_id.as_str()).collect();
                    CommitFailed {
                        state,
                        messages: batch.len(),
                        error: &error,
                        retry_in: Duration::ZERO,
                    }
                    .emit();
                    tracing::error!(
                        messages = batch.len(),
                        msg_ids = ?ids,
                        error,
                        "history writer stopping with messages not stored"
                    );
                    state
                        .queued
                        .fetch_sub(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                CommitFailed {
                    state,
                    messages: batch.len(),
                    error: &error,
                    retry_in: delay,
                }
                .emit();
                std::thread::sleep(delay);
                delay = (delay * 2).min(options.retry_max);
            }
        }
    }
}
