//! The batched writer: a thread of its own that commits a consumer's work
//! items in batches, so blocking database work stays off the thread that
//! handles messages.
//!
//! - The consumer hands each item over with [`BatchWriter::submit_holding`]
//!   and the [`BacklogGuard`] from `Context::hold_backlog`, and returns. The
//!   guard travels with the item and is dropped when the item's batch commits
//!   (or the item is dead-lettered): until then the message stays in the
//!   consumer's backlog, so the backlog ops see is exactly what is not stored.
//! - A batch is committed when it holds `batch_items`, or `batch_latency`
//!   after its first item arrived, whichever comes first, or on
//!   [`BatchWriter::flush`].
//! - The queue to the writer is bounded (`queue_items`): when the database is
//!   slow or failing, `submit` blocks, the consumer stops taking messages and
//!   they wait in its mailbox (its backlog grows). Nothing is dropped.
//! - A transient failure (server gone, locked, disk full; see
//!   [`ErrorKind`](crate::ErrorKind)) keeps the batch and retries it with
//!   backoff; meanwhile each attempt is counted and the consumer's readiness
//!   (`/health/readyz`) fails naming the reason, until a commit succeeds.
//! - A permanent failure (a row the database will always refuse) makes the
//!   writer store the batch's items one by one: the refused ones are
//!   dead-lettered (counted, logged, handed to [`Sink::dead_letter`]), the rest
//!   commit.
//!
//! A commit whose outcome is unknown (the connection dropped during COMMIT) is
//! retried too, so a [`Sink`]'s writes must be idempotent (unique natural keys,
//! `ON CONFLICT DO NOTHING`): then every item is stored exactly once. A sink
//! says per batch how many items it stored and how many were already there
//! ([`WriteReport`], from [`Sink::write_reporting`]).
//!
//! A consumer that keeps counters of its own (stored, duplicates, errors)
//! gives the writer a [`WriterObserver`] in its [`WriterTarget`]: the writer
//! tells it of every commit, failure and dead letter, after its own counters
//! and metrics. A writer started again (the consumer restarted) with
//! [`BatchWriter::spawn_with_state`] and the previous [`WriterState`] keeps its
//! counts and its failing state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use fedhub::{BacklogGuard, Readiness};

use crate::error::{Classify, ErrorKind, StorageError};
use crate::events::{BatchCommitted, CommitFailed, ItemDeadLettered, WriterGaveUp};
use crate::metrics::StorageMetrics;
use crate::pool::{Database, Tx};

/// What a writer commits into: the consumer's database work for a batch.
pub trait Sink: Send + 'static {
    /// One unit of work (a message to store, a counter to bump).
    type Item: Send + 'static;
    /// The sink's error, classified transient or permanent.
    type Error: std::error::Error + Classify + Send + 'static;

    /// Writes `items` in one transaction and commits it: all of them or none.
    /// Must be idempotent (see the module docs): a batch whose commit failed
    /// with an unknown outcome is written again.
    fn write(&mut self, items: &[Self::Item]) -> Result<(), Self::Error>;

    /// Like [`write`](Self::write), and says how many items were stored and
    /// how many were already there (an idempotent write that changed nothing).
    /// The writer calls this one; the default counts every item as stored.
    fn write_reporting(&mut self, items: &[Self::Item]) -> Result<WriteReport, Self::Error> {
        self.write(items)?;
        Ok(WriteReport::stored(items.len()))
    }

    /// Names an item in logs (its msg_id, say).
    fn describe(&self, _item: &Self::Item) -> String {
        String::new()
    }

    /// Receives an item the database refused for good, after it was counted
    /// and logged (to keep it in a dead-letter file, say).
    fn dead_letter(&mut self, _item: Self::Item, _error: &Self::Error) {}
}

/// A [`Sink`] made of a [`Database`] and a function writing a batch in its
/// transaction.
pub struct TransactionSink<T, F> {
    database: Database,
    write: F,
    describe: fn(&T) -> String,
}

impl<T, F> TransactionSink<T, F>
where
    T: Send + 'static,
    F: FnMut(&mut Tx<'_>, &[T]) -> Result<(), StorageError> + Send + 'static,
{
    /// A sink running `write` in one transaction of `database` per batch.
    pub fn new(database: Database, write: F) -> TransactionSink<T, F> {
        TransactionSink {
            database,
            write,
            describe: |_| String::new(),
        }
    }

    /// Names items in logs with `describe`.
    pub fn describe_with(mut self, describe: fn(&T) -> String) -> TransactionSink<T, F> {
        self.describe = describe;
        self
    }
}

impl<T, F> Sink for TransactionSink<T, F>
where
    T: Send + 'static,
    F: FnMut(&mut Tx<'_>, &[T]) -> Result<(), StorageError> + Send + 'static,
{
    type Item = T;
    type Error = StorageError;

    fn write(&mut self, items: &[T]) -> Result<(), StorageError> {
        let write = &mut self.write;
        // The writer has a thread of its own, outside any runtime.
        self.database.transaction_here(|tx| write(tx, items))
    }

    fn describe(&self, item: &T) -> String {
        (self.describe)(item)
    }
}

/// How the writer batches.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Most items per transaction.
    pub batch_items: usize,
    /// Longest an item waits before its batch is committed.
    pub batch_latency: Duration,
    /// Items queued between the consumer and the writer.
    pub queue_items: usize,
    /// First pause before retrying a failed batch (doubles up to `retry_max`).
    pub retry_min: Duration,
    /// Longest pause between retries of a failed batch.
    pub retry_max: Duration,
    /// How long `shutdown` keeps retrying a failing batch before giving up.
    pub shutdown_grace: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            batch_items: 10_000,
            batch_latency: Duration::from_millis(250),
            queue_items: 20_000,
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// What one committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Items the batch stored.
    pub stored: u64,
    /// Items that were already stored (an idempotent write that changed nothing).
    pub duplicates: u64,
}

impl WriteReport {
    /// `items` stored, no duplicates.
    pub fn stored(items: usize) -> WriteReport {
        WriteReport {
            stored: items as u64,
            duplicates: 0,
        }
    }
}

/// Told what a writer does, on the writer's thread, after the writer updated
/// its own state and metrics: a consumer's own counters, metrics and logs hang
/// here. Every method has an empty default.
pub trait WriterObserver: Send + Sync {
    /// A batch of `items` was committed, as `report` says, in `took`.
    fn committed(&self, _items: usize, _report: &WriteReport, _took: Duration) {}

    /// A batch of `items` failed for a transient reason; it is retried after `retry_in`.
    fn commit_failed(&self, _items: usize, _kind: ErrorKind, _error: &str, _retry_in: Duration) {}

    /// The database refused an item for good (described by the sink); it was dead-lettered.
    fn dead_lettered(&self, _item: &str, _kind: ErrorKind, _error: &str) {}

    /// The writer stopped with `items` it could not commit within the shutdown grace.
    fn abandoned(&self, _items: &[String], _error: &str) {}

    /// Commits succeed again after failures.
    fn recovered(&self) {}
}

/// Where a writer commits, for its metrics, logs and readiness.
pub struct WriterTarget {
    /// The consumer.
    pub consumer: String,
    /// The database, as shown in logs and readyz (password masked).
    pub location: String,
    /// The consumer's storage metrics.
    pub metrics: Arc<StorageMetrics>,
    /// The consumer's readiness, failed while commits fail.
    pub readiness: Option<Readiness>,
    /// The consumer's own bookkeeping, told of each commit and failure.
    pub observer: Option<Arc<dyn WriterObserver>>,
}

impl WriterTarget {
    /// A target outside [`Database`] (a consumer's own store): metrics for
    /// `consumer` on `backend` in `registry`.
    pub fn new(
        consumer: &str,
        location: impl Into<String>,
        backend: crate::Backend,
        registry: &prometheus::Registry,
    ) -> WriterTarget {
        WriterTarget {
            consumer: consumer.to_string(),
            location: location.into(),
            metrics: StorageMetrics::for_consumer(registry, consumer, backend)
                .expect("storage metrics have valid names and labels"),
            readiness: None,
            observer: None,
        }
    }

    /// Reports failures to `readiness` (`/health/readyz`) until a commit succeeds.
    pub fn with_readiness(mut self, readiness: Option<Readiness>) -> WriterTarget {
        self.readiness = readiness;
        self
    }

    /// Tells `observer` of every commit and failure.
    pub fn observed_by(mut self, observer: Arc<dyn WriterObserver>) -> WriterTarget {
        self.observer = Some(observer);
        self
    }
}

impl Database {
    /// The target of a writer committing into this database for this consumer.
    pub fn writer_target(&self, readiness: Option<Readiness>) -> WriterTarget {
        WriterTarget {
            consumer: self.consumer().to_string(),
            location: self.url().to_string(),
            metrics: self.metrics().clone(),
            readiness,
            observer: None,
        }
    }
}

/// Why the writer did not take or finish work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriterError {
    /// The writer thread is gone.
    #[error("the database writer is stopped")]
    Stopped,
    /// A flush did not finish in time.
    #[error("database writer did not commit within {waited_ms} ms ({queued} items queued, last error: {last_error})")]
    Timeout {
        /// Milliseconds waited.
        waited_ms: u64,
        /// Items still queued.
        queued: u64,
        /// The last write error, or `none`.
        last_error: String,
    },
}

/// A snapshot of a writer's state, for health endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterHealth {
    /// False while the last commit attempt failed.
    pub healthy: bool,
    /// Items accepted but not yet committed.
    pub queued: u64,
    /// Items committed since start (stored or found already stored).
    pub committed: u64,
    /// Of those, items that were already stored.
    pub duplicates: u64,
    /// Items dead-lettered since start.
    pub dead_lettered: u64,
    /// Failed commit attempts since start.
    pub failed_attempts: u64,
    /// The kind of the last failure.
    pub last_error_kind: Option<ErrorKind>,
    /// The last error.
    pub last_error: Option<String>,
    /// When the last batch was committed (unix seconds).
    pub last_commit_at: Option<f64>,
}

/// A writer's counters, shared by the writer thread and its handle.
#[derive(Default)]
pub struct WriterState {
    failing: AtomicBool,
    queued: AtomicU64,
    committed: AtomicU64,
    duplicates: AtomicU64,
    dead_lettered: AtomicU64,
    failed_attempts: AtomicU64,
    last_error: Mutex<Option<(ErrorKind, String)>>,
    last_commit_at: Mutex<Option<f64>>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl WriterState {
    /// The current state.
    pub fn health(&self) -> WriterHealth {
        let last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        WriterHealth {
            healthy: !self.failing.load(Ordering::Acquire),
            queued: self.queued(),
            committed: self.committed.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            last_error_kind: last.as_ref().map(|l| l.0),
            last_error: last.as_ref().map(|l| l.1.clone()),
            last_commit_at: *self
                .last_commit_at
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Items accepted and not yet committed.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether the last commit attempt failed.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// The last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error_text()
    }

    fn last_error_text(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| l.1.clone())
    }

    pub(crate) fn queued_gauge(&self) -> i64 {
        self.queued().min(i64::MAX as u64) as i64
    }

    /// Counts committed items; true when this ends a run of failures.
    pub(crate) fn count_committed(&self, items: usize, report: &WriteReport) -> bool {
        self.committed.fetch_add(items as u64, Ordering::Relaxed);
        self.duplicates
            .fetch_add(report.duplicates, Ordering::Relaxed);
        self.queued.fetch_sub(items as u64, Ordering::Relaxed);
        *self
            .last_commit_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(now_secs());
        self.failing.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn count_failure(&self, kind: ErrorKind, error: &str) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Release);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((kind, error.to_string()));
    }

    pub(crate) fn count_dead_letter(&self, kind: ErrorKind, error: &str) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.queued.fetch_sub(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((kind, error.to_string()));
    }

    pub(crate) fn count_abandoned(&self, items: usize) {
        self.queued.fetch_sub(items as u64, Ordering::Relaxed);
    }
}

enum Command<T> {
    /// An item, and the hold that keeps its message in the consumer's backlog until committed.
    Write(T, Option<BacklogGuard>),
    Flush(Sender<()>),
}

/// The handle to a running writer thread. Dropping it commits what is queued
/// (within the shutdown grace) and stops the thread.
pub struct BatchWriter<T: Send + 'static> {
    tx: Option<Sender<Command<T>>>,
    state: Arc<WriterState>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> BatchWriter<T> {
    /// Starts a writer thread committing into `sink`.
    pub fn spawn<S: Sink<Item = T>>(
        sink: S,
        options: WriterOptions,
        target: WriterTarget,
    ) -> std::io::Result<BatchWriter<T>> {
        Self::spawn_with_state(sink, options, target, Arc::new(WriterState::default()))
    }

    /// Starts a writer thread committing into `sink` with the state of a
    /// previous writer (counts, failing or not), so a consumer restarted by
    /// the hub reports as if its writer had never stopped.
    pub fn spawn_with_state<S: Sink<Item = T>>(
        sink: S,
        options: WriterOptions,
        target: WriterTarget,
        state: Arc<WriterState>,
    ) -> std::io::Result<BatchWriter<T>> {
        let (tx, rx) = bounded(options.queue_items.max(1));
        let thread_state = state.clone();
        // Linux keeps 15 bytes of a thread's name.
        let name = format!("fedhub-db-{}", target.consumer);
        let handle = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                Writer {
                    sink,
                    options,
                    target,
                    state: thread_state,
                }
                .run(rx)
            })?;
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
    pub fn health(&self) -> WriterHealth {
        self.state.health()
    }

    /// Queues an item. Blocks while the queue is full (back-pressure); never drops.
    pub fn submit(&self, item: T) -> Result<(), WriterError> {
        self.send(item, None)
    }

    /// Queues an item whose message stays counted in the consumer's backlog
    /// (`hold`, from `Context::hold_backlog`) until its batch is committed.
    pub fn submit_holding(&self, item: T, hold: BacklogGuard) -> Result<(), WriterError> {
        self.send(item, Some(hold))
    }

    fn send(&self, item: T, hold: Option<BacklogGuard>) -> Result<(), WriterError> {
        let tx = self.tx.as_ref().ok_or(WriterError::Stopped)?;
        self.state.queued.fetch_add(1, Ordering::Relaxed);
        let mut command = Command::Write(item, hold);
        let began = Instant::now();
        let mut warned = Instant::now();
        loop {
            match tx.send_timeout(command, Duration::from_millis(500)) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(back)) => {
                    command = back;
                    if warned.elapsed() >= Duration::from_secs(10) {
                        warned = Instant::now();
                        tracing::warn!(
                            waited_ms = began.elapsed().as_millis() as u64,
                            queued = self.state.queued(),
                            last_error = self.state.last_error_text().unwrap_or_default(),
                            "database writer queue is full, waiting"
                        );
                    }
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    self.state.queued.fetch_sub(1, Ordering::Relaxed);
                    return Err(WriterError::Stopped);
                }
            }
        }
    }

    /// Waits until every item submitted so far is committed (or dead-lettered).
    pub fn flush(&self, timeout: Duration) -> Result<(), WriterError> {
        let tx = self.tx.as_ref().ok_or(WriterError::Stopped)?;
        let (done_tx, done_rx) = bounded(1);
        let began = Instant::now();
        let timed_out = |state: &WriterState| WriterError::Timeout {
            waited_ms: began.elapsed().as_millis() as u64,
            queued: state.queued(),
            last_error: state.last_error_text().unwrap_or_else(|| "none".into()),
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

    /// Commits what is queued and stops the thread. A batch that still fails
    /// after the shutdown grace period is reported (error log naming its items)
    /// and dropped.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("database writer thread panicked");
            }
        }
    }
}

impl<T: Send + 'static> Drop for BatchWriter<T> {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The writer thread.
struct Writer<S: Sink> {
    sink: S,
    options: WriterOptions,
    target: WriterTarget,
    state: Arc<WriterState>,
}

/// The batch being collected: items, and their holds at the same index.
struct Batch<T> {
    items: Vec<T>,
    holds: Vec<Option<BacklogGuard>>,
}

impl<S: Sink> Writer<S> {
    fn run(mut self, rx: Receiver<Command<S::Item>>) {
        let mut batch = Batch {
            items: Vec::with_capacity(self.options.batch_items.min(65_536)),
            holds: Vec::with_capacity(self.options.batch_items.min(65_536)),
        };
        let mut waiting: Vec<Sender<()>> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            let received = match deadline {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_deadline(at),
            };
            let (commit_now, closing) = match received {
                Ok(Command::Write(item, hold)) => {
                    if batch.items.is_empty() {
                        deadline = Some(Instant::now() + self.options.batch_latency);
                    }
                    batch.items.push(item);
                    batch.holds.push(hold);
                    self.target.metrics.queue.set(self.state.queued_gauge());
                    (batch.items.len() >= self.options.batch_items, false)
                }
                Ok(Command::Flush(done)) => {
                    waiting.push(done);
                    (true, false)
                }
                Err(RecvTimeoutError::Timeout) => (true, false),
                Err(RecvTimeoutError::Disconnected) => (true, true),
            };
            if commit_now {
                self.commit(&mut batch, closing);
                deadline = None;
                for done in waiting.drain(..) {
                    let _ = done.send(());
                }
            }
            if closing {
                break;
            }
        }
        tracing::debug!(consumer = %self.target.consumer, "database writer stopped");
    }

    /// Commits `batch`, retrying transient failures with backoff until it
    /// succeeds (or, when closing, until the grace period ends).
    fn commit(&mut self, batch: &mut Batch<S::Item>, closing: bool) {
        let began = Instant::now();
        let mut delay = self.options.retry_min.max(Duration::from_millis(1));
        while !batch.items.is_empty() {
            let attempt = Instant::now();
            let error = match self.sink.write_reporting(&batch.items) {
                Ok(report) => {
                    self.committed(batch.items.len(), &report, attempt.elapsed());
                    batch.items.clear();
                    batch.holds.clear();
                    return;
                }
                Err(e) => e,
            };
            let kind = error.kind();
            if !kind.is_transient() {
                self.one_by_one(batch);
                continue;
            }
            let text = fedhub::error_chain(&error);
            if closing && began.elapsed() >= self.options.shutdown_grace {
                let items: Vec<String> =
                    batch.items.iter().map(|i| self.sink.describe(i)).collect();
                WriterGaveUp {
                    target: &self.target,
                    state: &self.state,
                    items: &items,
                    error: &text,
                }
                .emit();
                batch.items.clear();
                batch.holds.clear();
                return;
            }
            CommitFailed {
                target: &self.target,
                state: &self.state,
                items: batch.items.len(),
                kind,
                error: &text,
                retry_in: delay,
            }
            .emit();
            std::thread::sleep(delay);
            delay = (delay * 2).min(self.options.retry_max);
        }
    }

    /// The database refuses something in the batch for good: writes the items
    /// one by one, dead-letters the refused ones, and keeps the rest of the
    /// batch from the first transient failure on (retried by the caller).
    fn one_by_one(&mut self, batch: &mut Batch<S::Item>) {
        let items = std::mem::take(&mut batch.items);
        let holds = std::mem::take(&mut batch.holds);
        let mut transient = false;
        for (item, hold) in items.into_iter().zip(holds) {
            if transient {
                batch.items.push(item);
                batch.holds.push(hold);
                continue;
            }
            let attempt = Instant::now();
            match self.sink.write_reporting(std::slice::from_ref(&item)) {
                Ok(report) => {
                    drop(hold);
                    self.committed(1, &report, attempt.elapsed());
                }
                Err(e) if e.kind().is_transient() => {
                    transient = true;
                    batch.items.push(item);
                    batch.holds.push(hold);
                }
                Err(e) => {
                    let description = self.sink.describe(&item);
                    ItemDeadLettered {
                        target: &self.target,
                        state: &self.state,
                        item: &description,
                        kind: e.kind(),
                        error: &fedhub::error_chain(&e),
                    }
                    .emit();
                    drop(hold);
                    self.sink.dead_letter(item, &e);
                }
            }
        }
    }

    fn committed(&self, items: usize, report: &WriteReport, took: Duration) {
        BatchCommitted {
            target: &self.target,
            state: &self.state,
            items,
            report,
            took,
        }
        .emit();
    }
}
