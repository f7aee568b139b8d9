//! Backfill at start from the history store (`fedhub-history`), for the
//! windows not yet computed.
//!
//! Per plugin: a counts plugin with buckets stored resumes at the **start**
//! of its newest bucket, which is deleted first and recomputed whole
//! (statscache resumed at its end and lost that bucket's messages); a
//! latest-values plugin resumes at its newest timestamp (older or equal
//! events never replace a stored one); a plugin with nothing stored reaches
//! back `backfill_days` (or its own limit). Messages of the history store up
//! to the start time are replayed in timestamp order, each to the plugins
//! whose resume point it is at or after.
//!
//! Live messages are handled meanwhile. Those timestamped at or after the
//! start time never come from the backfill. For those in the overlap window
//! before it (`backfill_overlap_secs`), msg_ids are compared: whichever of
//! the live copy and the backfill's copy comes second is skipped and counted
//! in `fedhub_statscache_duplicates_total`. (A live message delayed by more
//! than the overlap window could be counted twice; raise the window if
//! deliveries lag that much.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use fedhub::{Context, Envelope, StateCounter};
use fedhub_history::{Filter, NommerConfig, Order};
use fedhub_storage::{DatabaseUrl, StorageError};
use serde::Serialize;

use crate::consumer::{sqlite_exists, Shared};
use crate::engine::{Metrics, PluginInfo};
use crate::plugin::{Message, Shape};
use crate::store::Reader;

/// Messages per history page.
const PAGE_ROWS: u32 = 100;

/// Where a backfill stands (served at `/statscache/api/_backfill`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProgressState {
    /// `idle`, `skipped`, `running`, `done` or `failed`.
    pub status: String,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// The oldest timestamp replayed from (Unix seconds).
    pub from: Option<f64>,
    /// The start time: the backfill stops there (Unix seconds).
    pub to: Option<f64>,
    /// Messages in the history store to replay.
    pub total_messages: u64,
    /// Messages replayed so far.
    pub replayed_messages: u64,
    /// Messages skipped because they were already counted live.
    pub duplicates: u64,
    /// Per plugin ident, the timestamp it resumes at.
    pub resume_at: HashMap<String, f64>,
}

/// The shared progress of the backfill, mirrored in the consumer's `/state`
/// counters once [`show_in_state`](BackfillProgress::show_in_state) was called.
#[derive(Default)]
pub struct BackfillProgress(Mutex<ProgressState>, OnceLock<StateCounters>);

/// The `/state` counters of a backfill: messages to replay, replayed, and
/// whether it finished (1) or not (0).
struct StateCounters {
    total: StateCounter,
    replayed: StateCounter,
    finished: StateCounter,
}

impl std::fmt::Debug for BackfillProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BackfillProgress").field(&self.0).finish()
    }
}

impl BackfillProgress {
    /// A snapshot.
    pub fn get(&self) -> ProgressState {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if state.status.is_empty() {
            state.status = "idle".into();
        }
        state
    }

    fn update(&self, f: impl FnOnce(&mut ProgressState)) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state);
        if let Some(counters) = self.1.get() {
            counters.total.set(state.total_messages);
            counters.replayed.set(state.replayed_messages);
            let finished = matches!(state.status.as_str(), "done" | "skipped" | "failed");
            counters.finished.set(u64::from(finished));
        }
    }

    /// Shows the progress in the consumer's `/state` entry, as the counters
    /// `backfill_total_messages`, `backfill_replayed_messages` and
    /// `backfill_finished` (1 once done, skipped or failed).
    pub fn show_in_state(&self, ctx: &Context) {
        let _ = self.1.set(StateCounters {
            total: ctx.state_counter("backfill_total_messages"),
            replayed: ctx.state_counter("backfill_replayed_messages"),
            finished: ctx.state_counter("backfill_finished"),
        });
        self.update(|_| {});
    }

    /// Whether the backfill finished (done, skipped or failed).
    pub fn finished(&self) -> bool {
        matches!(self.get().status.as_str(), "done" | "skipped" | "failed")
    }
}

/// One backfill run.
pub(crate) struct Backfill {
    pub(crate) infos: Arc<Vec<PluginInfo>>,
    pub(crate) reader: Arc<Reader>,
    pub(crate) history: String,
    pub(crate) started_at: f64,
    pub(crate) default_days: f64,
    pub(crate) progress: Arc<BackfillProgress>,
    pub(crate) metrics: Metrics,
    pub(crate) stop: Arc<AtomicBool>,
}

impl Backfill {
    fn skip(&self, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::info!(reason = %reason, "statscache backfill skipped");
        self.progress.update(|p| {
            p.status = "skipped".into();
            p.reason = Some(reason);
        });
    }

    /// Decides where each plugin resumes and deletes the buckets it will
    /// recompute. `None` when there is nothing to backfill from.
    pub(crate) fn prepare(&self) -> Result<Option<HashMap<String, f64>>, StorageError> {
        if self.history.is_empty() {
            self.skip("no history_database configured");
            return Ok(None);
        }
        match DatabaseUrl::parse(&self.history) {
            Ok(url) if !sqlite_exists(&url) => {
                self.skip(format!("the history store {url} does not exist"));
                return Ok(None);
            }
            Ok(_) => {}
            Err(e) => {
                self.skip(format!("history_database: {e}"));
                return Ok(None);
            }
        }
        let mut from = HashMap::new();
        for info in self.infos.iter() {
            let limit = info
                .backfill_limit_secs
                .unwrap_or(self.default_days * 86_400.0);
            let floor = self.started_at - limit;
            let resume = match (info.shape, info.window_value) {
                (Shape::Counts { .. }, Some(window)) => {
                    match self.reader.last_bucket(&info.ident)? {
                        Some(last) => {
                            let deleted = self.reader.revert_counts(&info.ident, last)?;
                            tracing::debug!(plugin = %info.ident, bucket = last, rows = deleted, "reverted the open window");
                            window.bucket_start(last) as f64
                        }
                        None => window.bucket_start(window.bucket_end(floor)) as f64,
                    }
                }
                (Shape::Counts { .. }, None) => continue,
                (Shape::Latest, _) => self.reader.last_timestamp(&info.ident)?.unwrap_or(floor),
            };
            if resume < self.started_at {
                from.insert(info.ident.clone(), resume);
            }
        }
        if from.is_empty() {
            self.skip("every plugin is up to date");
            return Ok(None);
        }
        let oldest = from.values().copied().fold(f64::INFINITY, f64::min);
        let map = from.clone();
        self.progress.update(|p| {
            p.status = "running".into();
            p.from = Some(oldest);
            p.to = Some(self.started_at);
            p.resume_at = map;
        });
        Ok(Some(from))
    }

    /// Replays the history store into the plugins.
    pub(crate) fn run(&self, shared: &Shared) {
        match self.replay(shared) {
            Ok(()) => {
                let p = self.progress.get();
                tracing::info!(
                    replayed = p.replayed_messages,
                    duplicates = p.duplicates,
                    "statscache backfill done"
                );
                self.progress.update(|p| p.status = "done".into());
            }
            Err(reason) => {
                tracing::error!(reason = %reason, "statscache backfill failed");
                self.progress.update(|p| {
                    p.status = "failed".into();
                    p.reason = Some(reason);
                });
            }
        }
        if let Err(e) = shared.flush() {
            tracing::error!(error = %e, "statscache flush after the backfill failed");
        }
    }

    fn replay(&self, shared: &Shared) -> Result<(), String> {
        let config = NommerConfig {
            database: self.history.clone(),
            ..NommerConfig::default()
        };
        let store = config
            .open_store(&prometheus::Registry::new())
            .map_err(|e| format!("cannot open the history store: {}", fedhub::error_chain(&e)))?;
        let oldest = self.progress.get().from.unwrap_or(self.started_at);
        // The window is inclusive: messages at the start time itself are live.
        let end = self.started_at - 1e-6;
        let filter = || Filter::new().between(oldest, end).order(Order::Asc);
        let total = store.count(&filter()).map_err(|e| e.to_string())?;
        self.progress.update(|p| p.total_messages = total);
        tracing::info!(from = oldest, to = self.started_at, messages = total, history = %store.location(), "statscache backfill started");
        let pages = total.div_ceil(u64::from(PAGE_ROWS));
        for page in 1..=pages {
            if self.stop.load(Ordering::SeqCst) {
                return Err("stopped before the end".into());
            }
            let found = store
                .grep(&filter().page(page as u32, PAGE_ROWS))
                .map_err(|e| format!("history page {page}: {e}"))?;
            let envelopes: Vec<Envelope> = found
                .messages
                .iter()
                .filter_map(|m| Envelope::from_value(m.body()).ok())
                .collect();
            let (mut replayed, mut duplicates) = (0, 0);
            {
                let mut live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
                for envelope in &envelopes {
                    let message = Message::new(envelope);
                    let t = message.timestamp().unwrap_or(f64::NEG_INFINITY);
                    if t >= self.started_at {
                        continue;
                    }
                    if t >= live.overlap_from {
                        if let Some(id) = message.msg_id() {
                            if !live.overlap_ids.insert(id.to_string()) {
                                duplicates += 1;
                                continue;
                            }
                        }
                    }
                    live.engine.process_backfill(&message);
                    replayed += 1;
                }
            }
            self.metrics.backfilled.inc_by(replayed);
            self.metrics.duplicates.inc_by(duplicates);
            self.progress.update(|p| {
                p.replayed_messages += replayed;
                p.duplicates += duplicates;
            });
            if page.is_multiple_of(100) || page == pages {
                tracing::info!(
                    page,
                    pages,
                    replayed = self.progress.get().replayed_messages,
                    "statscache backfill progress"
                );
                shared.flush().map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}
