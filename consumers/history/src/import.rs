//! Importing JSON lines (fedmsg bodies, `fedhub tail` envelopes, datagrepper
//! `/raw` responses) into a store, in batches, duplicates skipped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use fedhub::Envelope;
use serde_json::Value;

use crate::store::{NewMessage, Store, StoreError};

/// Messages per transaction during an import.
pub const IMPORT_BATCH: usize = 2000;

/// Bad lines whose errors are kept in the report (the rest are only counted).
pub const KEPT_ERRORS: usize = 20;

/// Progress of an import, reported after every batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportProgress {
    /// Lines read.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Messages stored.
    pub stored: u64,
    /// Messages already stored (skipped).
    pub duplicates: u64,
    /// Lines that were not a message.
    pub bad_lines: u64,
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Final counts.
    pub progress: ImportProgress,
    /// The first [`KEPT_ERRORS`] problems, as `line N: reason`.
    pub errors: Vec<String>,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input could not be read.
    #[error("cannot read {source_name}: {error}")]
    Read {
        /// The file (or `input`).
        source_name: String,
        /// Why.
        error: std::io::Error,
    },
    /// The store refused a batch (nothing of that batch was stored).
    #[error("storing messages before line {line} failed: {error}")]
    Store {
        /// The line after the failed batch.
        line: u64,
        /// Why.
        error: StoreError,
    },
}

/// The fedmsg bodies in one JSON line: a body (`{"topic", "msg", …}`), an
/// envelope wrapping one (`{"topic", "body": {…}}`), or a datagrepper response
/// (`{"raw_messages": […]}`).
fn bodies(value: Value) -> Result<Vec<Value>, String> {
    match value {
        Value::Object(mut map) => {
            if let Some(Value::Array(items)) = map.remove("raw_messages") {
                return Ok(items);
            }
            if !map.contains_key("msg") {
                if let Some(body @ Value::Object(_)) = map.remove("body") {
                    return Ok(vec![body]);
                }
            }
            Ok(vec![Value::Object(map)])
        }
        other => Err(format!(
            "expected a JSON object, found {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )),
    }
}

/// Imports JSON lines (one fedmsg body per line, as `fedhub tail` prints them)
/// into `store`, in batches, calling `progress` after each batch. Bad lines are
/// counted and reported, not fatal; duplicates are skipped.
pub fn import_jsonl<R: BufRead>(
    reader: R,
    store: &dyn Store,
    mut progress: impl FnMut(&ImportProgress),
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut batch: Vec<NewMessage> = Vec::with_capacity(IMPORT_BATCH);
    let flush = |batch: &mut Vec<NewMessage>,
                 report: &mut ImportReport,
                 progress: &mut dyn FnMut(&ImportProgress)|
     -> Result<(), ImportError> {
        if !batch.is_empty() {
            let done = store
                .insert_batch(batch)
                .map_err(|error| ImportError::Store {
                    line: report.progress.lines,
                    error,
                })?;
            report.progress.stored += done.stored;
            report.progress.duplicates += done.duplicates;
            batch.clear();
        }
        progress(&report.progress);
        Ok(())
    };
    for (number, line) in reader.lines().enumerate() {
        let line = line.map_err(|error| ImportError::Read {
            source_name: "input".into(),
            error,
        })?;
        report.progress.lines += 1;
        report.progress.bytes += line.len() as u64 + 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(text)
            .map_err(|e| format!("not valid JSON ({e})"))
            .and_then(bodies)
            .and_then(|bodies| {
                bodies
                    .into_iter()
                    .map(|b| Envelope::from_value(b).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()
            });
        match parsed {
            Ok(envelopes) => batch.extend(envelopes.iter().map(NewMessage::from_envelope)),
            Err(reason) => {
                report.progress.bad_lines += 1;
                if report.errors.len() < KEPT_ERRORS {
                    report.errors.push(format!("line {}: {reason}", number + 1));
                }
            }
        }
        if batch.len() >= IMPORT_BATCH {
            flush(&mut batch, &mut report, &mut progress)?;
        }
    }
    flush(&mut batch, &mut report, &mut progress)?;
    tracing::info!(
        lines = report.progress.lines,
        stored = report.progress.stored,
        duplicates = report.progress.duplicates,
        bad_lines = report.progress.bad_lines,
        "history import finished"
    );
    Ok(report)
}

/// [`import_jsonl`] from a file.
pub fn import_jsonl_file(
    path: &Path,
    store: &dyn Store,
    progress: impl FnMut(&ImportProgress),
) -> Result<ImportReport, ImportError> {
    let file = File::open(path).map_err(|error| ImportError::Read {
        source_name: path.display().to_string(),
        error,
    })?;
    import_jsonl(BufReader::new(file), store, progress).map_err(|e| match e {
        ImportError::Read { error, .. } => ImportError::Read {
            source_name: path.display().to_string(),
            error,
        },
        other => other,
    })
}

/// Messages read from a datanommer database per batch (one transaction each).
pub const DATANOMMER_BATCH: usize = 2000;

/// Why an import from datanommer stopped.
#[derive(Debug, thiserror::Error)]
pub enum DatanommerError {
    /// The datanommer server cannot be reached, or refuses the credentials.
    #[error("cannot connect to the datanommer database {url}: {source}")]
    Connect {
        /// The URL (password masked).
        url: String,
        /// The cause.
        #[source]
        source: fedhub_storage::BackendError,
    },
    /// A query on the datanommer database failed (not datanommer's schema, say).
    #[error("reading the datanommer database {url} failed: {source}")]
    Read {
        /// The URL (password masked).
        url: String,
        /// The cause.
        #[source]
        source: fedhub_storage::BackendError,
    },
    /// The store refused a batch (nothing of that batch was stored; the import
    /// resumes with it).
    #[error("storing datanommer messages after id {after} failed: {source}")]
    Store {
        /// The last datanommer id stored before the failure.
        after: i64,
        /// Why.
        #[source]
        source: StoreError,
    },
}

/// Progress of an import from datanommer, reported after every batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatanommerProgress {
    /// datanommer messages to read in all (counted at start, after the checkpoint).
    pub total: u64,
    /// Messages read so far.
    pub read: u64,
    /// Messages stored.
    pub stored: u64,
    /// Messages already stored (skipped).
    pub duplicates: u64,
    /// The datanommer id the import resumed after (0 when it started from the beginning).
    pub resumed_after: i64,
    /// The last datanommer id stored.
    pub last_id: i64,
}

/// Copies the messages of a datanommer database (its PostgreSQL schema of
/// 2016-2021: `messages`, `user_messages`, `package_messages`) into `store`,
/// with the users and packages datanommer recorded for each (not extracted
/// again), in batches of [`DATANOMMER_BATCH`] by datanommer id.
///
/// Resumable: after each batch the last datanommer id is saved in `store`
/// ([`Store::save_import_checkpoint`], under the URL with its password
/// masked), and a later run starts after it. Idempotent: a message whose
/// `msg_id` is already stored is skipped and counted, so a batch stored again
/// after an interruption changes nothing. A message without `msg_id` (before
/// 2017) gets `datanommer-<id>`, the same on every run.
pub fn import_datanommer(
    url: &fedhub_storage::DatabaseUrl,
    store: &dyn Store,
    mut progress: impl FnMut(&DatanommerProgress),
) -> Result<DatanommerProgress, DatanommerError> {
    use fedhub_storage::BackendError;
    let shown = url.to_string();
    let mut client =
        fedhub_storage::postgres::Client::connect(&url.expose(), fedhub_storage::postgres::NoTls)
            .map_err(|e| DatanommerError::Connect {
            url: shown.clone(),
            source: BackendError::Postgres(e),
        })?;
    let read_error = |e: fedhub_storage::postgres::Error| DatanommerError::Read {
        url: shown.clone(),
        source: BackendError::Postgres(e),
    };
    let after = store
        .import_checkpoint(&shown)
        .map_err(|source| DatanommerError::Store { after: 0, source })?
        .unwrap_or(0);
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM messages WHERE id > $1::bigint",
            &[&after],
        )
        .and_then(|r| r.try_get(0))
        .map_err(read_error)?;
    let mut done = DatanommerProgress {
        total: total as u64,
        resumed_after: after,
        last_id: after,
        ..DatanommerProgress::default()
    };
    progress(&done);
    let page = client
        .prepare(
            "SELECT id::bigint, msg_id, coalesce(i, 0)::bigint, topic,
                    extract(epoch FROM timestamp)::float8, certificate, signature, category,
                    username, crypto, _msg, _headers
             FROM messages WHERE id > $1::bigint ORDER BY id LIMIT $2",
        )
        .map_err(read_error)?;
    let users = client
        .prepare("SELECT msg::bigint, username FROM user_messages WHERE msg = ANY($1::bigint[]) ORDER BY username")
        .map_err(read_error)?;
    let packages = client
        .prepare(
            "SELECT msg::bigint, package FROM package_messages WHERE msg = ANY($1::bigint[]) ORDER BY package",
        )
        .map_err(read_error)?;
    loop {
        let rows = client
            .query(&page, &[&done.last_id, &(DATANOMMER_BATCH as i64)])
            .map_err(read_error)?;
        let Some(last) = rows.last() else {
            break;
        };
        let last_id: i64 = last.try_get(0).map_err(read_error)?;
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(read_error)?;
        let mut names: HashMap<i64, (Vec<String>, Vec<String>)> = HashMap::new();
        for (statement, is_user) in [(&users, true), (&packages, false)] {
            for row in client.query(statement, &[&ids]).map_err(read_error)? {
                let msg: i64 = row.try_get(0).map_err(read_error)?;
                let name: String = row.try_get(1).map_err(read_error)?;
                let entry = names.entry(msg).or_default();
                if is_user {
                    entry.0.push(name);
                } else {
                    entry.1.push(name);
                }
            }
        }
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get(0).map_err(read_error)?;
            let (users, packages) = names.remove(&id).unwrap_or_default();
            let msg_id: Option<String> = row.try_get(1).map_err(read_error)?;
            let topic: String = row.try_get(3).map_err(read_error)?;
            let category: Option<String> = row.try_get(7).map_err(read_error)?;
            let msg: String = row.try_get(10).map_err(read_error)?;
            batch.push(NewMessage {
                msg_id: msg_id
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| format!("datanommer-{id}")),
                i: row.try_get(2).map_err(read_error)?,
                category: category.unwrap_or_else(|| crate::store::UNCLASSIFIED.to_string()),
                topic,
                timestamp: row.try_get(4).map_err(read_error)?,
                certificate: row.try_get(5).map_err(read_error)?,
                signature: row.try_get(6).map_err(read_error)?,
                username: row.try_get(8).map_err(read_error)?,
                crypto: row.try_get(9).map_err(read_error)?,
                msg: compact_json(&msg),
                headers: row
                    .try_get::<_, Option<String>>(11)
                    .map_err(read_error)?
                    .filter(|h| h != "null")
                    .map(|h| compact_json(&h)),
                extra: None,
                users,
                packages,
            });
        }
        let report = store
            .insert_batch(&batch)
            .map_err(|source| DatanommerError::Store {
                after: done.last_id,
                source,
            })?;
        store
            .save_import_checkpoint(&shown, last_id)
            .map_err(|source| DatanommerError::Store {
                after: done.last_id,
                source,
            })?;
        done.read += rows.len() as u64;
        done.stored += report.stored;
        done.duplicates += report.duplicates;
        done.last_id = last_id;
        progress(&done);
    }
    tracing::info!(
        source = %shown,
        stored = done.stored,
        duplicates = done.duplicates,
        last_id = done.last_id,
        "datanommer import finished"
    );
    Ok(done)
}

/// JSON text as fedhub stores payloads (compact, keys sorted); text that is
/// not JSON is kept as a JSON string, so the row stays readable.
fn compact_json(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => fedhub::to_canonical_string(&value),
        Err(_) => Value::from(text).to_string(),
    }
}
