//! The history store's typed events: each one logs its line and updates its
//! counters in one place; and the names of the metrics it registers.

use std::time::Duration;

use crate::writer::WriterState;

/// The `fedhub_history_*` metric families, by name.
pub mod names {
    /// Messages stored.
    pub const MESSAGES_STORED_TOTAL: &str = "fedhub_history_messages_stored_total";
    /// Messages skipped because their msg_id was already stored.
    pub const DUPLICATES_TOTAL: &str = "fedhub_history_duplicates_total";
    /// Failed commit attempts and messages refused for good.
    pub const WRITE_ERRORS_TOTAL: &str = "fedhub_history_write_errors_total";
    /// Messages accepted and not yet committed (gauge).
    pub const QUEUE_MESSAGES: &str = "fedhub_history_queue_messages";
    /// API requests refused with 400, by endpoint.
    pub const BAD_REQUESTS_TOTAL: &str = "fedhub_history_bad_requests_total";
}

/// A batch could not be committed; it is retried after `retry_in`.
pub struct CommitFailed<'a> {
    /// The writer's shared state (counters, readiness).
    pub state: &'a WriterState,
    /// Messages in the batch.
    pub messages: usize,
    /// The database's error.
    pub error: &'a str,
    /// When the batch is tried again.
    pub retry_in: Duration,
}

impl CommitFailed<'_> {
    /// Counts the failure (the storage layer has logged it and marked the
    /// consumer not ready).
    pub fn emit(self) {
        self.state.count_commit_failure(self.error);
        tracing::debug!(
            messages = self.messages,
            error = self.error,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "history batch not committed, will retry"
        );
    }
}

/// The database refused one message for good (it is not retried).
pub struct MessageRefused<'a> {
    /// The writer's shared state.
    pub state: &'a WriterState,
    /// The message's id.
    pub msg_id: &'a str,
    /// The database's error.
    pub error: &'a str,
}

impl MessageRefused<'_> {
    /// Counts the refusal (the storage layer has logged it with the msg_id).
    pub fn emit(self) {
        self.state.count_refused(self.error);
        tracing::debug!(
            msg_id = self.msg_id,
            error = self.error,
            "message refused by the history store"
        );
    }
}

/// A stored value could not be parsed into a tree and is served as its stored
/// text (see the store's reading of rows).
pub struct StoredValueUnreadable<'a> {
    /// The row id.
    pub id: i64,
    /// Which field (`msg`, `headers`, `extra.<key>`).
    pub field: &'a str,
    /// The parser's error.
    pub error: &'a serde_json::Error,
}

impl StoredValueUnreadable<'_> {
    /// Logs it: the message is served with the field as a JSON string.
    pub fn emit(self) {
        tracing::warn!(
            id = self.id,
            field = self.field,
            error = %self.error,
            "stored value cannot be parsed; serving its stored text as a string"
        );
    }
}
