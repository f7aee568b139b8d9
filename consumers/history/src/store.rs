//! The storage seam: the [`Store`] trait every backend implements (embedded
//! SQLite, [`crate::SqliteStore`]; PostgreSQL, [`crate::PgStore`]), and the
//! [`NewMessage`] rows it stores.
//!
//! A backend keeps datanommer's model: one row per message (unique `msg_id`),
//! and the users and packages extracted at insert time in bridge tables, never
//! recomputed. Inserting a `msg_id` that is already stored is not an error: the
//! message is skipped and counted in [`BatchReport::duplicates`].

use fedhub::Envelope;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::Value;

use fedhub_storage::{Backend, BackendError, Classify, ErrorKind, StorageError};

use crate::filter::{Filter, FilterError, Page, StoredMessage};
use crate::meta;

/// Category used when a topic has none (datanommer's fallback).
pub const UNCLASSIFIED: &str = "Unclassified";

/// Body keys kept in their own columns; any other key is kept in `extra`.
const ENVELOPE_KEYS: [&str; 10] = [
    "topic",
    "msg",
    "msg_id",
    "timestamp",
    "i",
    "username",
    "crypto",
    "certificate",
    "signature",
    "headers",
];

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The filter is invalid (names the parameter).
    #[error("bad query: {0}")]
    Filter(#[from] FilterError),
    /// The database refused or failed (locked, full disk, server gone, …).
    #[error("database error: {source}")]
    Database {
        /// The database library's error (SQLite's or the server's message).
        #[source]
        source: BackendError,
    },
    /// The database could not be opened or prepared.
    #[error("cannot open the history database {path}: {reason}")]
    Open {
        /// The database given (a path, or a URL with its password masked).
        path: String,
        /// Why.
        reason: String,
        /// The storage layer's error, if any.
        #[source]
        source: Option<Box<StorageError>>,
    },
    /// A page would hold more bytes of stored messages than
    /// [`Filter::max_page_bytes`](crate::Filter::max_page_bytes) allows.
    #[error("the page would hold more than {limit} bytes of stored messages")]
    PageTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The storage layer failed (no connection from the pool, say).
    #[error(transparent)]
    Storage(Box<StorageError>),
    /// A stored row could not be decoded.
    #[error("stored message {id} is unreadable: {reason}")]
    Corrupt {
        /// Row id.
        id: i64,
        /// Why.
        reason: String,
    },
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        StoreError::Storage(Box::new(e))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database {
            source: BackendError::Sqlite(e),
        }
    }
}

impl From<fedhub_storage::postgres::Error> for StoreError {
    fn from(e: fedhub_storage::postgres::Error) -> Self {
        StoreError::Database {
            source: BackendError::Postgres(e),
        }
    }
}

impl StoreError {
    /// The database at `path` cannot be opened: `error` says why.
    pub fn open(path: impl std::fmt::Display, error: StorageError) -> StoreError {
        StoreError::Open {
            path: path.to_string(),
            reason: fedhub::error_chain(&error),
            source: Some(Box::new(error)),
        }
    }

    /// Whether trying again later may succeed (as opposed to a message the
    /// database will always refuse).
    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
    }
}

impl Classify for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Database { source } => source.kind(),
            StoreError::Open { source, .. } => source
                .as_ref()
                .map(|e| e.kind())
                .unwrap_or(ErrorKind::Unavailable),
            StoreError::Storage(e) => e.kind(),
            StoreError::Filter(_)
            | StoreError::Corrupt { .. }
            | StoreError::PageTooLarge { .. } => ErrorKind::Data,
        }
    }
}

/// What one batch insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// New messages stored.
    pub stored: u64,
    /// Messages skipped because their `msg_id` was already stored.
    pub duplicates: u64,
}

/// A message ready to store: envelope fields, the payload as JSON text, and the
/// users and packages extracted from it. Built on the consumer's thread so the
/// writer only does database work.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Unique id (`msg_id`, or the `message-id` header, or a fresh `<year>-<uuid4>`).
    pub msg_id: String,
    /// Sender sequence number (0 when absent).
    pub i: i64,
    /// Topic.
    pub topic: String,
    /// Category (`Unclassified` when the topic has none).
    pub category: String,
    /// Unix seconds (the receive time when the body has none).
    pub timestamp: f64,
    /// The sender's Unix user.
    pub username: Option<String>,
    /// `x509` or `gpg`.
    pub crypto: Option<String>,
    /// Base64 certificate.
    pub certificate: Option<String>,
    /// Base64 signature.
    pub signature: Option<String>,
    /// The payload as compact JSON (sorted keys).
    pub msg: String,
    /// Headers as JSON, when present.
    pub headers: Option<String>,
    /// The other body fields as a JSON object, when there are any.
    pub extra: Option<String>,
    /// FAS users the message is about.
    pub users: Vec<String>,
    /// Packages the message is about.
    pub packages: Vec<String>,
}

impl NewMessage {
    /// Prepares an envelope for storage (extracts users and packages).
    ///
    /// The body's top-level values are read without building a tree for the
    /// whole envelope: the payload is kept as the JSON text received (fedmsg
    /// bodies are canonical: compact, sorted keys) and parsed once for the
    /// user and package extraction.
    pub fn from_envelope(envelope: &Envelope) -> NewMessage {
        let fields: BTreeMap<String, &RawValue> =
            serde_json::from_str(envelope.body()).unwrap_or_default();
        let text = |key: &str| -> Option<String> {
            fields
                .get(key)
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        };
        let topic = envelope.topic().to_string();
        let msg_text = fields.get("msg").map(|raw| raw.get()).unwrap_or("null");
        let msg_value: Value = serde_json::from_str(msg_text).unwrap_or(Value::Null);
        let headers = fields
            .get("headers")
            .map(|raw| raw.get())
            .filter(|h| *h != "null");
        let msg_id = envelope
            .msg_id()
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .or_else(|| {
                let headers: Value = serde_json::from_str(headers?).ok()?;
                headers
                    .get("message-id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(fresh_msg_id);
        let timestamp = envelope
            .timestamp()
            .filter(|t| t.is_finite())
            .unwrap_or_else(|| {
                envelope
                    .received_at()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0)
            });
        let mut extra = String::new();
        for (key, raw) in &fields {
            if ENVELOPE_KEYS.contains(&key.as_str()) {
                continue;
            }
            extra.push(if extra.is_empty() { '{' } else { ',' });
            extra.push_str(&Value::from(key.as_str()).to_string());
            extra.push(':');
            extra.push_str(raw.get());
        }
        if !extra.is_empty() {
            extra.push('}');
        }
        NewMessage {
            msg_id,
            // Decoding refused an `i` that is not an integer; absent is 0, as in datanommer.
            i: envelope.i().unwrap_or(0),
            category: envelope.category().unwrap_or(UNCLASSIFIED).to_string(),
            timestamp,
            username: text("username"),
            crypto: text("crypto"),
            certificate: text("certificate"),
            signature: text("signature"),
            msg: msg_text.to_string(),
            headers: headers.map(str::to_string),
            extra: (!extra.is_empty()).then_some(extra),
            users: meta::usernames_of(&topic, &msg_value).into_iter().collect(),
            packages: meta::packages_of(&topic, &msg_value).into_iter().collect(),
            topic,
        }
    }
}

/// datanommer's fallback id: `<year>-<uuid4>`.
fn fresh_msg_id() -> String {
    let year = chrono::Utc::now().format("%Y");
    format!("{year}-{}", uuid::Uuid::new_v4())
}

/// A message store. Implementations are shared between the writer thread and
/// HTTP handlers, so every method takes `&self` and may block.
pub trait Store: Send + Sync {
    /// Stores a batch atomically (all or nothing), skipping known `msg_id`s.
    fn insert_batch(&self, batch: &[NewMessage]) -> Result<BatchReport, StoreError>;

    /// One page of messages matching `filter`, with the total.
    fn grep(&self, filter: &Filter) -> Result<Page, StoreError>;

    /// How many messages match `filter` (paging ignored).
    fn count(&self, filter: &Filter) -> Result<u64, StoreError>;

    /// The message with this `msg_id`.
    fn get(&self, msg_id: &str) -> Result<Option<StoredMessage>, StoreError>;

    /// How many messages are stored.
    fn message_count(&self) -> Result<u64, StoreError>;

    /// Where the messages are kept (a file path, a server with its password
    /// masked), for logs.
    fn location(&self) -> String;

    /// Which kind of database this is.
    fn backend(&self) -> Backend;

    /// Where an import from `source` (a database URL, password masked) stopped:
    /// the last source row id it stored, if it ran before.
    fn import_checkpoint(&self, source: &str) -> Result<Option<i64>, StoreError>;

    /// Records that an import from `source` stored every row up to `last_id`.
    fn save_import_checkpoint(&self, source: &str, last_id: i64) -> Result<(), StoreError>;

    /// Saves what makes the next open quick (SQLite: the snapshot of its
    /// in-memory index); nothing for backends that keep no such state.
    fn save_index(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
