//! The storage layer's typed events: each one writes its log line and updates
//! its metrics (and the writer's state and readiness) in one place.

use std::time::Duration;

use crate::error::{ErrorKind, StorageError};
use crate::metrics::StorageMetrics;
use crate::writer::{WriteReport, WriterState, WriterTarget};

/// A connection was checked out of a pool (or the checkout timed out).
pub struct PoolCheckout<'a> {
    /// The consumer's metrics.
    pub metrics: &'a StorageMetrics,
    /// The consumer.
    pub consumer: &'a str,
    /// How long the checkout waited.
    pub waited: Duration,
    /// The failure, if no connection came.
    pub error: Option<&'a StorageError>,
}

impl PoolCheckout<'_> {
    /// Records the wait and logs a failure (counted by whoever gives up on
    /// it: a failed commit, say, so one outage is not counted twice).
    pub fn emit(self) {
        self.metrics
            .pool_wait_seconds
            .observe(self.waited.as_secs_f64());
        if let Some(error) = self.error {
            let kind = error.kind();
            tracing::debug!(
                consumer = self.consumer,
                waited_ms = self.waited.as_millis() as u64,
                kind = kind.as_str(),
                error = %error,
                "no database connection"
            );
        }
    }
}

/// A batch was committed.
pub struct BatchCommitted<'a> {
    /// Where it went.
    pub target: &'a WriterTarget,
    /// The writer's state.
    pub state: &'a WriterState,
    /// Items in the batch.
    pub items: usize,
    /// What the sink says it stored.
    pub report: &'a WriteReport,
    /// Time to write and commit it.
    pub took: Duration,
}

impl BatchCommitted<'_> {
    /// Counts the batch; clears readiness when the writer was failing.
    pub fn emit(self) {
        let m = &self.target.metrics;
        m.commit_seconds.observe(self.took.as_secs_f64());
        m.batch_items.observe(self.items as f64);
        m.committed.inc_by(self.items as u64);
        let recovered = self.state.count_committed(self.items, self.report);
        m.queue.set(self.state.queued_gauge());
        if let Some(o) = &self.target.observer {
            o.committed(self.items, self.report, self.took);
        }
        if recovered {
            if let Some(r) = &self.target.readiness {
                r.clear();
            }
            if let Some(o) = &self.target.observer {
                o.recovered();
            }
            tracing::info!(
                consumer = %self.target.consumer,
                database = %self.target.location,
                items = self.items,
                "database writes recovered"
            );
        }
        tracing::trace!(
            consumer = %self.target.consumer,
            items = self.items,
            stored = self.report.stored,
            duplicates = self.report.duplicates,
            took_ms = self.took.as_millis() as u64,
            "batch committed"
        );
    }
}

/// A batch could not be committed for a transient reason; it is retried after `retry_in`.
pub struct CommitFailed<'a> {
    /// Where it was going.
    pub target: &'a WriterTarget,
    /// The writer's state.
    pub state: &'a WriterState,
    /// Items in the batch.
    pub items: usize,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The error, as one line with its causes.
    pub error: &'a str,
    /// When the batch is tried again.
    pub retry_in: Duration,
}

impl CommitFailed<'_> {
    /// Counts the failure, marks the consumer not ready naming the reason, logs it.
    pub fn emit(self) {
        self.target
            .metrics
            .errors
            .with_label_values(&[self.kind.as_str()])
            .inc();
        self.state.count_failure(self.kind, self.error);
        if let Some(o) = &self.target.observer {
            o.commit_failed(self.items, self.kind, self.error, self.retry_in);
        }
        if let Some(r) = &self.target.readiness {
            r.set_problem(format!(
                "{} cannot commit to {} ({}: {}); {} items waiting, retrying",
                self.target.consumer,
                self.target.location,
                self.kind,
                self.error,
                self.state.queued()
            ));
        }
        tracing::error!(
            consumer = %self.target.consumer,
            database = %self.target.location,
            items = self.items,
            kind = self.kind.as_str(),
            error = self.error,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "batch not committed, will retry"
        );
    }
}

/// The database refused one item for good: it is dead-lettered, not retried.
pub struct ItemDeadLettered<'a> {
    /// Where it was going.
    pub target: &'a WriterTarget,
    /// The writer's state.
    pub state: &'a WriterState,
    /// The item, as the sink describes it (its msg_id, say).
    pub item: &'a str,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The error, as one line with its causes.
    pub error: &'a str,
}

impl ItemDeadLettered<'_> {
    /// Counts the item and the error, logs it.
    pub fn emit(self) {
        let m = &self.target.metrics;
        m.dead_letters.inc();
        m.errors.with_label_values(&[self.kind.as_str()]).inc();
        self.state.count_dead_letter(self.kind, self.error);
        m.queue.set(self.state.queued_gauge());
        if let Some(o) = &self.target.observer {
            o.dead_lettered(self.item, self.kind, self.error);
        }
        tracing::error!(
            consumer = %self.target.consumer,
            database = %self.target.location,
            item = self.item,
            kind = self.kind.as_str(),
            error = self.error,
            "item refused by the database, dead-lettered"
        );
    }
}

/// The writer stopped with a batch it could not commit within the shutdown grace.
pub struct WriterGaveUp<'a> {
    /// Where it was going.
    pub target: &'a WriterTarget,
    /// The writer's state.
    pub state: &'a WriterState,
    /// The items, as the sink describes them.
    pub items: &'a [String],
    /// The last error.
    pub error: &'a str,
}

impl WriterGaveUp<'_> {
    /// Uncounts the items and logs them.
    pub fn emit(self) {
        self.state.count_abandoned(self.items.len());
        self.target.metrics.queue.set(self.state.queued_gauge());
        if let Some(o) = &self.target.observer {
            o.abandoned(self.items, self.error);
        }
        tracing::error!(
            consumer = %self.target.consumer,
            database = %self.target.location,
            count = self.items.len(),
            items = ?self.items,
            error = self.error,
            "writer stopping with items not stored"
        );
    }
}
