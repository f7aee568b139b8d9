//! The batch writer: a dedicated thread that commits messages to the store in
//! batches, and the [`Health`] it reports. The thread, its batching, retries
//! and backlog holds are `fedhub_storage`'s [`fedhub_storage::BatchWriter`];
//! this module gives it the store as its sink and keeps the history store's
//! own counters ([`WriterState`], its observer), which outlive writer restarts.
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use fedhub::BacklogGuard;
use fedhub_storage::{ErrorKind, Sink, WriteReport, WriterObserver, WriterTarget};

use crate::events::{names, CommitFailed, MessageRefused};
use crate::filter::now_secs;
use crate::store::{NewMessage, Store, StoreError};

pub use fedhub_storage::WriterError;

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

impl WriterOptions {
    fn storage(&self) -> fedhub_storage::WriterOptions {
        fedhub_storage::WriterOptions {
            batch_items: self.batch_messages,
            batch_latency: self.batch_latency,
            queue_items: self.queue_messages,
            retry_max: self.retry_max,
            shutdown_grace: self.shutdown_grace,
            ..fedhub_storage::WriterOptions::default()
        }
    }
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
/// Outlives writer restarts: a writer started again continues from it.
#[derive(Default)]
pub struct WriterState {
    /// The generic writer's state (queued, failing, last commit).
    writer: Arc<fedhub_storage::WriterState>,
    stored: AtomicU64,
    duplicates: AtomicU64,
    write_errors: AtomicU64,
    rejected: AtomicU64,
    bad_requests: AtomicU64,
    last_error: Mutex<Option<(String, f64)>>,
    metrics: Mutex<Option<Metrics>>,
    readiness: Mutex<Option<fedhub::Readiness>>,
}

/// Prometheus series for the writer, and the registry they are in.
#[derive(Clone)]
struct Metrics {
    registry: prometheus::Registry,
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
        let writer = self.writer.health();
        Health {
            healthy: writer.healthy,
            queued: writer.queued,
            stored: self.stored.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
            last_error: last_error.as_ref().map(|e| e.0.clone()),
            last_error_at: last_error.as_ref().map(|e| e.1),
            last_commit_at: writer.last_commit_at,
        }
    }

    /// Whether the last commit attempt failed.
    pub fn is_failing(&self) -> bool {
        self.writer.is_failing()
    }

    /// The last write error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| e.0.clone())
    }

    /// Registers `fedhub_history_*` series in `registry` (once; later calls are
    /// no-ops). The writer's `fedhub_storage_*` series go to the same registry.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        let mut slot = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Ok(());
        }
        let metrics = Metrics {
            registry: registry.clone(),
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
        fedhub::register_metrics(
            registry,
            vec![
                Box::new(metrics.stored.clone()),
                Box::new(metrics.duplicates.clone()),
                Box::new(metrics.write_errors.clone()),
                Box::new(metrics.queued.clone()),
                Box::new(metrics.bad_requests.clone()),
            ],
        )?;
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
            self.queued()
        )
    }

    /// Messages accepted and not yet committed.
    pub fn queued(&self) -> u64 {
        self.writer.queued()
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
            m.queued.set(self.queued().min(i64::MAX as u64) as i64);
        }
    }

    /// Counts a message the database refused for good (see [`MessageRefused`]).
    pub(crate) fn count_refused(&self, error: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((error.to_string(), now_secs()));
        if let Some(m) = self.metrics() {
            m.write_errors.inc();
        }
        self.queued_changed();
    }

    /// Counts a failed commit (see [`CommitFailed`]).
    pub(crate) fn count_commit_failure(&self, error: &str) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((error.to_string(), now_secs()));
        if let Some(m) = self.metrics() {
            m.write_errors.inc();
        }
    }
}

/// The generic writer tells the history store's state what it did.
impl WriterObserver for WriterState {
    fn committed(&self, messages: usize, report: &WriteReport, took: Duration) {
        self.stored.fetch_add(report.stored, Ordering::Relaxed);
        self.duplicates
            .fetch_add(report.duplicates, Ordering::Relaxed);
        if let Some(m) = self.metrics() {
            m.stored.inc_by(report.stored);
            m.duplicates.inc_by(report.duplicates);
        }
        self.queued_changed();
        if report.duplicates > 0 {
            tracing::debug!(
                duplicates = report.duplicates,
                "skipped messages already stored"
            );
        }
        tracing::trace!(
            messages,
            stored = report.stored,
            took_ms = took.as_millis() as u64,
            "history batch committed"
        );
    }

    fn commit_failed(&self, messages: usize, _kind: ErrorKind, error: &str, retry_in: Duration) {
        CommitFailed {
            state: self,
            messages,
            error,
            retry_in,
        }
        .emit();
    }

    fn dead_lettered(&self, msg_id: &str, _kind: ErrorKind, error: &str) {
        MessageRefused {
            state: self,
            msg_id,
            error,
        }
        .emit();
    }

    fn abandoned(&self, _messages: &[String], _error: &str) {
        self.queued_changed();
    }

    fn recovered(&self) {
        tracing::info!("history store recovered");
    }
}

/// The writer's sink: each batch is one [`Store::insert_batch`].
struct StoreSink {
    store: Arc<dyn Store>,
}

impl Sink for StoreSink {
    type Item = NewMessage;
    type Error = StoreError;

    fn write(&mut self, items: &[NewMessage]) -> Result<(), StoreError> {
        self.store.insert_batch(items).map(|_| ())
    }

    fn write_reporting(&mut self, items: &[NewMessage]) -> Result<WriteReport, StoreError> {
        let report = self.store.insert_batch(items)?;
        Ok(WriteReport {
            stored: report.stored,
            duplicates: report.duplicates,
        })
    }

    fn describe(&self, item: &NewMessage) -> String {
        item.msg_id.clone()
    }
}

/// The handle to a running writer thread.
pub struct BatchWriter {
    inner: fedhub_storage::BatchWriter<NewMessage>,
    state: Arc<WriterState>,
}

impl BatchWriter {
    /// Starts a writer thread committing into `store`, counting into `state`
    /// (its metrics go to the registry `state` registered in, if any).
    pub fn spawn(
        store: Arc<dyn Store>,
        options: WriterOptions,
        state: Arc<WriterState>,
    ) -> std::io::Result<BatchWriter> {
        let registry = state.metrics().map(|m| m.registry).unwrap_or_default();
        let target = WriterTarget::new(
            crate::consumer::NAME,
            store.location(),
            store.backend(),
            &registry,
        )
        .with_readiness(state.readiness())
        .observed_by(state.clone());
        let inner = fedhub_storage::BatchWriter::spawn_with_state(
            StoreSink { store },
            options.storage(),
            target,
            state.writer.clone(),
        )?;
        Ok(BatchWriter { inner, state })
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
        let result = self.inner.submit(message);
        self.state.queued_changed();
        result
    }

    /// Queues a message that stays counted in the consumer's backlog (`hold`,
    /// from `Context::hold_backlog`) until its batch is committed.
    pub fn submit_holding(
        &self,
        message: NewMessage,
        hold: BacklogGuard,
    ) -> Result<(), WriterError> {
        let result = self.inner.submit_holding(message, hold);
        self.state.queued_changed();
        result
    }

    /// Waits until every message submitted so far is committed.
    pub fn flush(&self, timeout: Duration) -> Result<(), WriterError> {
        self.inner.flush(timeout)
    }

    /// Commits what is queued and stops the thread. A batch that still fails after
    /// the shutdown grace period is reported (error log with its msg_ids) and dropped.
    pub fn shutdown(self) {
        self.inner.shutdown();
        self.state.queued_changed();
    }
}
