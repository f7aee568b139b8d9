//! The `StatsConsumer` consumer: every message to every plugin, their
//! changes committed through `fedhub-storage`'s batched writer, the API
//! under `/statscache`.
//!
//! Messages are processed on the consumer's thread (in memory only); a
//! flusher thread hands what the plugins computed to the writer every
//! `flush_interval_ms` (or sooner, once `flush_messages` are pending).
//! Each message stays in the consumer's backlog until the flush holding
//! its changes is committed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fedhub::{
    BacklogGuard, ConfigError, Consumer, ConsumerError, ConsumerFactory, Context, Envelope,
    HttpRoutes,
};
use fedhub_storage::{
    BatchWriter, Database, DatabaseUrl, PoolOptions, TransactionSink, WriterOptions,
};
use serde::Deserialize;

use crate::backfill::{Backfill, BackfillProgress};
use crate::engine::{Engine, Metrics, PluginInfo};
use crate::http::{routes, ApiOptions};
use crate::plugin::{Message, Plugin};
use crate::plugins::builtin;
use crate::store::{self, Flush, Reader};

/// The consumer's name: statscache's class name, so existing Nagios and
/// collectd definitions keep working.
pub const NAME: &str = "StatsConsumer";

/// Where the API is mounted.
pub const HTTP_PREFIX: &str = "/statscache";

/// `[consumers.StatsConsumer]` settings (runtime keys such as `enabled` aside).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// A SQLite file (path or `sqlite:PATH`) or `postgres://…`.
    pub database: String,
    /// Plugin idents to run; empty means every registered plugin.
    pub plugins: Vec<String>,
    /// How often changes are committed, in milliseconds.
    pub flush_interval_ms: u64,
    /// Most messages pending before a flush is started anyway.
    pub flush_messages: usize,
    /// Rows per page when a request does not say.
    pub default_rows_per_page: u64,
    /// The most rows per page a request gets.
    pub max_rows_per_page: u64,
    /// The largest `limit` a request gets.
    pub max_limit: u64,
    /// The history store to backfill from (empty: no backfill).
    pub history_database: String,
    /// How far back a backfill reaches on a fresh database, in days.
    pub backfill_days: f64,
    /// Seconds before start in which msg_ids are compared between live
    /// messages and the backfill.
    pub backfill_overlap_secs: f64,
    /// PostgreSQL: most connections.
    pub max_connections: u32,
    /// PostgreSQL: how long connecting may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long a statement waits for a lock, in milliseconds.
    pub busy_timeout_ms: u64,
}

/// Default database file.
pub const DEFAULT_DATABASE: &str = "fedhub-statscache.sqlite";

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            database: DEFAULT_DATABASE.into(),
            plugins: Vec::new(),
            flush_interval_ms: 1000,
            flush_messages: 50_000,
            default_rows_per_page: 100,
            max_rows_per_page: 100,
            max_limit: 100_000,
            history_database: fedhub_history::consumer::DEFAULT_DATABASE.into(),
            backfill_days: 7.0,
            backfill_overlap_secs: 120.0,
            max_connections: 8,
            connect_timeout_ms: 5000,
            busy_timeout_ms: 5000,
        }
    }
}

fn invalid(key: &str, value: impl std::fmt::Display, expected: &str) -> ConfigError {
    ConfigError::Invalid(format!(
        "[consumers.{NAME}] {key} = {value}: expected {expected}"
    ))
}

impl StatsConfig {
    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database_url()?;
        if !(10..=600_000).contains(&self.flush_interval_ms) {
            return Err(invalid(
                "flush_interval_ms",
                self.flush_interval_ms,
                "10 to 600000 milliseconds",
            ));
        }
        if !(1..=10_000_000).contains(&self.flush_messages) {
            return Err(invalid(
                "flush_messages",
                self.flush_messages,
                "1 to 10000000 messages",
            ));
        }
        if !(1..=100_000).contains(&self.max_rows_per_page) {
            return Err(invalid(
                "max_rows_per_page",
                self.max_rows_per_page,
                "1 to 100000 rows",
            ));
        }
        if self.default_rows_per_page == 0 || self.default_rows_per_page > self.max_rows_per_page {
            return Err(invalid(
                "default_rows_per_page",
                self.default_rows_per_page,
                "1 to max_rows_per_page rows",
            ));
        }
        if self.max_limit == 0 {
            return Err(invalid(
                "max_limit",
                self.max_limit,
                "a positive number of rows",
            ));
        }
        if !self.backfill_days.is_finite() || self.backfill_days < 0.0 {
            return Err(invalid(
                "backfill_days",
                self.backfill_days,
                "0 or more days",
            ));
        }
        if !self.backfill_overlap_secs.is_finite()
            || !(0.0..=86_400.0).contains(&self.backfill_overlap_secs)
        {
            return Err(invalid(
                "backfill_overlap_secs",
                self.backfill_overlap_secs,
                "0 to 86400 seconds",
            ));
        }
        if self.max_connections == 0 || self.max_connections > 1000 {
            return Err(invalid(
                "max_connections",
                self.max_connections,
                "1 to 1000 connections",
            ));
        }
        Ok(())
    }

    /// The `database` setting, parsed.
    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        DatabaseUrl::from_setting(NAME, &self.database)
    }

    /// Pool settings.
    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions::from_settings(
            self.max_connections,
            self.connect_timeout_ms,
            self.busy_timeout_ms,
        )
    }

    /// Keeps the plugins `plugins` names (all when empty); unknown names are
    /// refused, naming them and the valid idents.
    pub fn select(&self, all: Vec<Box<dyn Plugin>>) -> Result<Vec<Box<dyn Plugin>>, ConfigError> {
        if self.plugins.is_empty() {
            return Ok(all);
        }
        let known: Vec<String> = all.iter().map(|p| p.ident()).collect();
        let unknown: Vec<&String> = self.plugins.iter().filter(|p| !known.contains(p)).collect();
        if !unknown.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "[consumers.{NAME}] plugins: unknown plugin(s) {}: expected idents among {}",
                unknown
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                known.join(", ")
            )));
        }
        Ok(all
            .into_iter()
            .filter(|p| self.plugins.contains(&p.ident()))
            .collect())
    }
}

/// The live side: the engine and what the next flush holds.
pub(crate) struct Live {
    pub(crate) engine: Engine,
    holds: Vec<BacklogGuard>,
    messages: u64,
    /// msg_ids seen (live or backfill) with timestamps in the overlap window.
    pub(crate) overlap_ids: HashSet<String>,
    /// Start time: messages before it come from the backfill too.
    pub(crate) started_at: f64,
    pub(crate) overlap_from: f64,
    /// When the overlap bookkeeping can stop (backfill done + grace).
    pub(crate) overlap_until: Option<Instant>,
    pub(crate) overlap_active: bool,
}

impl Live {
    fn take_flush(&mut self) -> Option<Flush> {
        let updates = self.engine.flush();
        if updates.is_empty() && self.holds.is_empty() {
            return None;
        }
        let infos = self.engine.idents();
        Some(Flush {
            id: uuid::Uuid::new_v4().to_string(),
            updates: updates
                .into_iter()
                .map(|(i, u)| (infos[i].clone(), u))
                .collect(),
            holds: std::mem::take(&mut self.holds),
            messages: std::mem::take(&mut self.messages),
        })
    }
}

/// Shared between the consumer, the flusher thread and the backfill thread.
pub(crate) struct Shared {
    pub(crate) live: Mutex<Live>,
    writer: Mutex<Option<BatchWriter<Flush>>>,
}

impl Shared {
    /// Takes what is pending and hands it to the writer.
    pub(crate) fn flush(&self) -> Result<(), ConsumerError> {
        let flush = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_flush();
        if let Some(flush) = flush {
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            match writer.as_ref() {
                Some(w) => w
                    .submit(flush)
                    .map_err(|e| ConsumerError::fatal(e.to_string()))?,
                None => return Err(ConsumerError::fatal("statscache writer is not running")),
            }
        }
        Ok(())
    }
}

/// The statistics consumer.
pub struct StatsConsumer {
    config: StatsConfig,
    infos: Arc<Vec<PluginInfo>>,
    shared: Arc<Shared>,
    metrics: Metrics,
    reader: Arc<Mutex<Option<Arc<Reader>>>>,
    progress: Arc<BackfillProgress>,
    stop: Arc<AtomicBool>,
    flusher: Option<JoinHandle<()>>,
    backfill: Option<JoinHandle<()>>,
}

impl StatsConsumer {
    /// The consumer with every built-in plugin (or those `config.plugins` names).
    pub fn from_config(config: StatsConfig) -> Result<StatsConsumer, ConfigError> {
        StatsConsumer::with_plugins(config, builtin())
    }

    /// The consumer with `plugins` (a third party's with or instead of the
    /// built-ins), narrowed to those `config.plugins` names.
    pub fn with_plugins(
        config: StatsConfig,
        plugins: Vec<Box<dyn Plugin>>,
    ) -> Result<StatsConsumer, ConfigError> {
        config.validate()?;
        let plugins = config.select(plugins)?;
        let metrics = Metrics::new();
        let engine = Engine::new(plugins, metrics.clone())
            .map_err(|e| ConfigError::Invalid(format!("[consumers.{NAME}] plugins: {e}")))?;
        let infos = Arc::new(engine.infos());
        Ok(StatsConsumer {
            config,
            infos,
            shared: Arc::new(Shared {
                live: Mutex::new(Live {
                    engine,
                    holds: Vec::new(),
                    messages: 0,
                    overlap_ids: HashSet::new(),
                    started_at: f64::NEG_INFINITY,
                    overlap_from: f64::NEG_INFINITY,
                    overlap_until: None,
                    overlap_active: false,
                }),
                writer: Mutex::new(None),
            }),
            metrics,
            reader: Arc::new(Mutex::new(None)),
            progress: Arc::new(BackfillProgress::default()),
            stop: Arc::new(AtomicBool::new(false)),
            flusher: None,
            backfill: None,
        })
    }

    /// What each plugin is.
    pub fn plugins(&self) -> &[PluginInfo] {
        &self.infos
    }

    /// The backfill's progress.
    pub fn backfill_progress(&self) -> Arc<BackfillProgress> {
        self.progress.clone()
    }

    /// Commits everything processed so far, waiting up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), ConsumerError> {
        self.shared.flush()?;
        let writer = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        match writer.as_ref() {
            Some(w) => w.flush(timeout).map_err(ConsumerError::msg),
            None => Ok(()),
        }
    }

    fn open(
        &mut self,
        name: &str,
        registry: &prometheus::Registry,
        readiness: fedhub::Readiness,
    ) -> Result<(), ConsumerError> {
        let url = self
            .config
            .database_url()
            .map_err(|e| ConsumerError::fatal(e.to_string()))?;
        let database =
            Database::open(&url, name, &self.config.pool_options(), registry).map_err(|e| {
                ConsumerError::fatal(format!(
                    "cannot open the statscache database: {}",
                    fedhub::error_chain(&e)
                ))
            })?;
        database.migrate(&store::migrations()).map_err(|e| {
            ConsumerError::fatal(format!(
                "cannot prepare the statscache schema: {}",
                fedhub::error_chain(&e)
            ))
        })?;
        let sink_db = database.clone();
        let sink = TransactionSink::new(database.clone(), move |tx, flushes: &[Flush]| {
            store::write(&sink_db, tx, flushes).map(|_| ())
        })
        .describe_with(|f| format!("flush {} ({} messages)", f.id, f.messages));
        let writer = BatchWriter::spawn(
            sink,
            WriterOptions {
                batch_items: 16,
                batch_latency: Duration::from_millis(50),
                queue_items: 64,
                ..WriterOptions::default()
            },
            database.writer_target(Some(readiness)),
        )
        .map_err(|e| ConsumerError::fatal(format!("cannot start the statscache writer: {e}")))?;
        *self.shared.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(writer);
        *self.reader.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::new(Reader::new(database)));
        Ok(())
    }

    fn start_backfill(&mut self) -> Result<(), ConsumerError> {
        let reader = self
            .reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(reader) = reader else { return Ok(()) };
        let history = self.config.history_database.trim().to_string();
        let now = crate::now_secs();
        let backfill = Backfill {
            infos: self.infos.clone(),
            reader,
            history,
            started_at: now,
            default_days: self.config.backfill_days,
            progress: self.progress.clone(),
            metrics: self.metrics.clone(),
            stop: self.stop.clone(),
        };
        // Reverting the open windows must happen before the first live flush.
        let from = backfill.prepare().map_err(|e| {
            ConsumerError::fatal(format!(
                "cannot prepare the statscache backfill: {}",
                fedhub::error_chain(&e)
            ))
        })?;
        let Some(from) = from else { return Ok(()) };
        {
            let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
            live.engine.set_backfill_from(&from);
            live.started_at = now;
            live.overlap_from = now - self.config.backfill_overlap_secs;
            live.overlap_active = true;
        }
        let shared = self.shared.clone();
        let grace = Duration::from_secs_f64(self.config.backfill_overlap_secs);
        self.backfill = Some(
            std::thread::Builder::new()
                .name("fedhub-stats-bf".into())
                .spawn(move || {
                    backfill.run(&shared);
                    let mut live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
                    live.overlap_until = Some(Instant::now() + grace);
                })
                .map_err(|e| {
                    ConsumerError::fatal(format!("cannot start the backfill thread: {e}"))
                })?,
        );
        Ok(())
    }
}

impl Consumer for StatsConsumer {
    fn start(&mut self, ctx: &mut Context) -> Result<(), ConsumerError> {
        self.metrics.register(ctx.metrics());
        self.progress.show_in_state(ctx);
        self.stop.store(false, Ordering::SeqCst);
        // The PostgreSQL client blocks on a runtime of its own, which cannot
        // start on this (actix) thread: open and prepare on a plain thread.
        let (name, registry, readiness) = (
            ctx.name().to_string(),
            ctx.metrics().clone(),
            ctx.readiness(),
        );
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.open(&name, &registry, readiness)?;
                    self.start_backfill()
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(ConsumerError::fatal(
                        "opening the statscache database panicked",
                    ))
                })
        })?;
        let (shared, stop) = (self.shared.clone(), self.stop.clone());
        let interval = Duration::from_millis(self.config.flush_interval_ms);
        self.flusher = Some(
            std::thread::Builder::new()
                .name("fedhub-stats-fl".into())
                .spawn(move || {
                    let mut next = Instant::now() + interval;
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10).min(interval));
                        if Instant::now() >= next {
                            next = Instant::now() + interval;
                            if let Err(e) = shared.flush() {
                                tracing::error!(error = %e, "statscache flush failed");
                            }
                        }
                    }
                })
                .map_err(|e| {
                    ConsumerError::fatal(format!("cannot start the flusher thread: {e}"))
                })?,
        );
        tracing::info!(
            consumer = ctx.name(),
            database = %fedhub_storage::mask_password(&self.config.database),
            plugins = self.infos.len(),
            "statistics consumer started"
        );
        Ok(())
    }

    fn consume(&mut self, envelope: &Envelope, ctx: &mut Context) -> Result<(), ConsumerError> {
        let message = Message::new(envelope);
        let full = {
            let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
            let duplicate = live.overlap_active && is_duplicate(&mut live, &message);
            if duplicate {
                self.metrics.duplicates.inc();
            } else {
                live.engine.process(&message);
            }
            live.holds.push(ctx.hold_backlog());
            live.messages += 1;
            live.messages >= self.config.flush_messages as u64
        };
        if full {
            self.shared.flush()?;
        }
        Ok(())
    }

    fn stop(&mut self, ctx: &mut Context) {
        self.stop.store(true, Ordering::SeqCst);
        for handle in [self.backfill.take(), self.flusher.take()]
            .into_iter()
            .flatten()
        {
            if handle.join().is_err() {
                tracing::error!("a statscache thread panicked");
            }
        }
        if let Err(e) = self.shared.flush() {
            tracing::error!(error = %e, "statscache: last flush failed");
        }
        if let Some(writer) = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            writer.shutdown();
        }
        tracing::info!(consumer = ctx.name(), "statistics consumer stopped");
    }

    fn http_routes(&self) -> Option<HttpRoutes> {
        Some(routes(
            self.infos.clone(),
            self.reader.clone(),
            self.progress.clone(),
            self.metrics.clone(),
            ApiOptions {
                default_rows_per_page: self.config.default_rows_per_page,
                max_rows_per_page: self.config.max_rows_per_page,
                max_limit: self.config.max_limit,
            },
        ))
    }

    fn module(&self) -> &str {
        "statscache.consumer"
    }
}

/// Whether a live message was already counted by the backfill (or will be
/// skipped by it): msg_ids in the overlap window are compared.
fn is_duplicate(live: &mut Live, message: &Message<'_>) -> bool {
    if live
        .overlap_until
        .is_some_and(|until| Instant::now() >= until)
    {
        live.overlap_active = false;
        live.overlap_ids = HashSet::new();
        return false;
    }
    let (Ok(t), Some(id)) = (message.timestamp(), message.msg_id()) else {
        return false;
    };
    if t >= live.started_at || t < live.overlap_from {
        return false;
    }
    !live.overlap_ids.insert(id.to_string())
}

/// The factory the hub registers: `StatsConsumer`, every topic, off unless
/// `[consumers.StatsConsumer] enabled = true` (on under a bare `fedhub run`,
/// with SQLite files in the working directory).
pub fn factory() -> ConsumerFactory {
    factory_with(builtin)
}

/// A factory whose consumer runs the plugins `plugins` makes (a site's own
/// plugins beside the built-ins, say).
pub fn factory_with(plugins: fn() -> Vec<Box<dyn Plugin>>) -> ConsumerFactory {
    ConsumerFactory::new(NAME, move |settings| {
        let config: StatsConfig = settings.parse()?;
        Ok(Box::new(StatsConsumer::with_plugins(config, plugins())?))
    })
    .topics(["*"])
    .http_prefix(HTTP_PREFIX)
    .on_embedded_defaults()
    .example_config(include_str!("../fedhub.toml"))
    .command(crate::command::command())
}

/// Whether `path` names an existing SQLite file (a backfill source must exist).
pub(crate) fn sqlite_exists(url: &DatabaseUrl) -> bool {
    url.sqlite_path().is_none_or(|p: &Path| p.exists())
}
