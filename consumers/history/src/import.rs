//! Importing JSON lines (fedmsg bodies, `fedhub tail` envelopes, datagrepper
//! `/raw` responses) into a store, in batches, duplicates skipped.

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
