//! The `Nommer` consumer: stores every message it receives (datanommer) and
//! mounts the query API on the hub's HTTP server (datagrepper).
//!
//! Register it with [`factory`]; its section is `[consumers.Nommer]`:
//!
//! ```toml
//! [consumers.Nommer]
//! enabled = true
//! database = "/var/lib/fedhub/history.sqlite"   # default: fedhub-history.sqlite
//! # database = "postgres://fedhub:secret@db01:5432/fedhub"   # several hubs, one database
//! batch_messages = 10000                        # most messages per transaction
//! batch_latency_ms = 250                        # longest wait before a commit
//! queue_messages = 20000                        # accepted, not yet committed
//! default_query_delta_secs = 0                  # /raw window without start/end/delta (0: none)
//! busy_timeout_ms = 5000                        # wait for locks held by other processes
//! cache_mib = 64                                # writer page cache
//! # max_database_bytes = 10_000_000_000         # refuse to grow past this size
//! max_response_bytes = 67108864                # most bytes of messages in one /raw page
//! ```

use std::sync::Arc;
use std::time::Duration;

use fedhub::{
    ConfigError, Consumer, ConsumerError, ConsumerFactory, Context, Envelope, HttpRoutes,
};
use serde::Deserialize;

use fedhub_storage::{DatabaseUrl, PoolOptions};

use crate::http::{routes, ApiOptions};
use crate::postgres::PgStore;
use crate::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{NewMessage, Store, StoreError};
use crate::writer::{BatchWriter, Health, WriterOptions, WriterState};

/// The consumer's name: datanommer's class name, so existing Nagios and
/// collectd definitions keep working.
pub const NAME: &str = "Nommer";

/// Default `max_response_bytes`: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// Smallest `max_response_bytes` accepted (1 MiB: one large message).
pub const MIN_MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// Largest `max_response_bytes` accepted (1 GiB).
pub const MAX_MAX_RESPONSE_BYTES: u64 = 1 << 30;

/// Default database file, relative to the working directory.
pub const DEFAULT_DATABASE: &str = "fedhub-history.sqlite";

/// `[consumers.Nommer]` settings (runtime keys such as `enabled` and `topics` aside).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NommerConfig {
    /// Where messages are kept: a SQLite file (a path or `sqlite:PATH`,
    /// created if missing) or `postgres://user:password@host:port/dbname`
    /// (see [`DatabaseUrl`]).
    pub database: String,
    /// Most messages per transaction.
    pub batch_messages: usize,
    /// Longest a message waits before its batch is committed, in milliseconds.
    pub batch_latency_ms: u64,
    /// Messages accepted but not yet committed before the consumer blocks.
    pub queue_messages: usize,
    /// Window of a `/raw` query without start, end or delta (datagrepper's
    /// `DEFAULT_QUERY_DELTA`); 0 means no time restriction.
    pub default_query_delta_secs: f64,
    /// How long a statement waits for a lock held by another process, in milliseconds.
    pub busy_timeout_ms: u64,
    /// Page cache of the writer connection, in MiB (SQLite).
    pub cache_mib: u32,
    /// Most connections to a PostgreSQL server (queries and the writer).
    pub max_connections: u32,
    /// How long connecting to a PostgreSQL server may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Refuse to grow the database file past this many bytes.
    pub max_database_bytes: Option<u64>,
    /// The most bytes of stored messages one `/raw` page may hold; a larger
    /// page is refused with 413 (ask for fewer `rows_per_page`).
    pub max_response_bytes: u64,
}

impl Default for NommerConfig {
    fn default() -> Self {
        let writer = WriterOptions::default();
        NommerConfig {
            database: DEFAULT_DATABASE.to_string(),
            batch_messages: writer.batch_messages,
            batch_latency_ms: writer.batch_latency.as_millis() as u64,
            queue_messages: writer.queue_messages,
            default_query_delta_secs: 0.0,
            busy_timeout_ms: 5000,
            cache_mib: 64,
            max_connections: 8,
            connect_timeout_ms: 5000,
            max_database_bytes: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

fn invalid(key: &str, value: impl std::fmt::Display, expected: &str) -> ConfigError {
    ConfigError::Invalid(format!(
        "[consumers.{NAME}] {key} = {value}: expected {expected}"
    ))
}

impl NommerConfig {
    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database_url()?;
        if self.batch_messages == 0 || self.batch_messages > 100_000 {
            return Err(invalid(
                "batch_messages",
                self.batch_messages,
                "1 to 100000 messages",
            ));
        }
        if self.batch_latency_ms == 0 || self.batch_latency_ms > 60_000 {
            return Err(invalid(
                "batch_latency_ms",
                self.batch_latency_ms,
                "1 to 60000 milliseconds",
            ));
        }
        if self.queue_messages == 0 || self.queue_messages > 10_000_000 {
            return Err(invalid(
                "queue_messages",
                self.queue_messages,
                "1 to 10000000 messages",
            ));
        }
        if self.busy_timeout_ms > 3_600_000 {
            return Err(invalid(
                "busy_timeout_ms",
                self.busy_timeout_ms,
                "0 to 3600000 milliseconds",
            ));
        }
        if !(MIN_MAX_RESPONSE_BYTES..=MAX_MAX_RESPONSE_BYTES).contains(&self.max_response_bytes) {
            return Err(invalid(
                "max_response_bytes",
                self.max_response_bytes,
                "1048576 to 1073741824 bytes",
            ));
        }
        if self.max_database_bytes == Some(0) {
            return Err(invalid(
                "max_database_bytes",
                0,
                "a positive number of bytes (or no limit: leave it unset)",
            ));
        }
        if !self.default_query_delta_secs.is_finite() || self.default_query_delta_secs < 0.0 {
            return Err(invalid(
                "default_query_delta_secs",
                self.default_query_delta_secs,
                "0 (no default window) or a positive number of seconds",
            ));
        }
        if self.max_connections == 0 || self.max_connections > 1000 {
            return Err(invalid(
                "max_connections",
                self.max_connections,
                "1 to 1000 connections",
            ));
        }
        if self.connect_timeout_ms == 0 {
            return Err(invalid(
                "connect_timeout_ms",
                self.connect_timeout_ms,
                "a positive number of milliseconds",
            ));
        }
        if self.cache_mib == 0 || self.cache_mib > 1_048_576 {
            return Err(invalid("cache_mib", self.cache_mib, "1 to 1048576 MiB"));
        }
        Ok(())
    }

    /// The `database` setting, parsed; the error names the key and what is
    /// expected (a password in it is masked).
    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        DatabaseUrl::from_setting(NAME, &self.database)
    }

    /// How PostgreSQL connections are made (pool size, timeouts).
    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions::from_settings(
            self.max_connections,
            self.connect_timeout_ms,
            self.busy_timeout_ms,
        )
    }

    /// Opens the store `database` names (SQLite or PostgreSQL), its schema
    /// brought up to date. `registry` receives the storage metrics.
    pub fn open_store(
        &self,
        registry: &prometheus::Registry,
    ) -> Result<Arc<dyn Store>, StoreError> {
        let url = self.database_url().map_err(|e| StoreError::Open {
            path: mask(&self.database),
            reason: e.to_string(),
            source: None,
        })?;
        Ok(match &url {
            DatabaseUrl::Sqlite(path) => {
                Arc::new(SqliteStore::open_with(path, self.sqlite_options())?)
            }
            DatabaseUrl::Postgres(_) => {
                Arc::new(PgStore::open(&url, &self.pool_options(), registry)?)
            }
        })
    }

    /// The writer options these settings describe.
    pub fn writer_options(&self) -> WriterOptions {
        WriterOptions {
            batch_messages: self.batch_messages,
            batch_latency: Duration::from_millis(self.batch_latency_ms),
            queue_messages: self.queue_messages,
            ..WriterOptions::default()
        }
    }

    /// The SQLite options these settings describe.
    pub fn sqlite_options(&self) -> SqliteOptions {
        SqliteOptions {
            busy_timeout: Duration::from_millis(self.busy_timeout_ms),
            cache_mib: self.cache_mib,
            max_database_bytes: self.max_database_bytes,
            ..SqliteOptions::default()
        }
    }
}

/// The history consumer.
pub struct Nommer {
    store: Arc<dyn Store>,
    options: WriterOptions,
    api: ApiOptions,
    state: Arc<WriterState>,
    writer: Option<BatchWriter>,
}

impl Nommer {
    /// A consumer writing to `store` (any backend: SQLite, or another [`Store`]).
    pub fn new(store: Arc<dyn Store>, options: WriterOptions, api: ApiOptions) -> Nommer {
        Nommer {
            store,
            options,
            api,
            state: WriterState::new(),
            writer: None,
        }
    }

    /// Opens the database named in `config` and builds the consumer.
    pub fn from_config(config: &NommerConfig) -> Result<Nommer, ConfigError> {
        Nommer::from_config_in(config, &prometheus::Registry::new())
    }

    /// Opens the database named in `config` (storage metrics in `registry`)
    /// and builds the consumer.
    pub fn from_config_in(
        config: &NommerConfig,
        registry: &prometheus::Registry,
    ) -> Result<Nommer, ConfigError> {
        config.validate()?;
        let store = config.open_store(registry).map_err(|e| {
            ConfigError::Invalid(format!(
                "[consumers.{NAME}] database = {:?}: {}",
                mask(&config.database),
                fedhub::error_chain(&e)
            ))
        })?;
        Ok(Nommer::new(
            store,
            config.writer_options(),
            ApiOptions {
                default_query_delta_secs: (config.default_query_delta_secs > 0.0)
                    .then_some(config.default_query_delta_secs),
                max_response_bytes: Some(config.max_response_bytes),
            },
        ))
    }

    /// The store, for queries from other code in the same process.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The writer's shared state: call [`WriterState::health`] on it from
    /// anywhere (it outlives restarts).
    pub fn state(&self) -> Arc<WriterState> {
        self.state.clone()
    }

    /// The writer's current health.
    pub fn health(&self) -> Health {
        self.state.health()
    }

    /// Waits until every accepted message is committed.
    pub fn flush(&self, timeout: Duration) -> Result<(), ConsumerError> {
        match &self.writer {
            Some(w) => w.flush(timeout).map_err(ConsumerError::msg),
            None => Ok(()),
        }
    }

    /// Blocks while the writer is retrying a failed commit. When nothing is
    /// queued (a writer restarted after giving up on a batch), the next message
    /// goes through and its commit decides whether the store has recovered.
    fn wait_while_failing(&self, msg_id: &str) {
        let began = std::time::Instant::now();
        let mut warned = began;
        while self.state.is_failing() && self.state.queued() > 0 {
            if warned.elapsed() >= Duration::from_secs(10) {
                warned = std::time::Instant::now();
                tracing::warn!(
                    msg_id,
                    waited_ms = began.elapsed().as_millis() as u64,
                    queued = self.state.queued(),
                    error = self.state.last_error().unwrap_or_default(),
                    "history store is failing; waiting before taking more messages"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ensure_writer(&mut self) -> Result<&BatchWriter, ConsumerError> {
        if self.writer.is_none() {
            let writer =
                BatchWriter::spawn(self.store.clone(), self.options.clone(), self.state.clone())
                    .map_err(|e| {
                        ConsumerError::fatal(format!("cannot start the history writer: {e}"))
                    })?;
            self.writer = Some(writer);
        }
        self.writer
            .as_ref()
            .ok_or_else(|| ConsumerError::fatal("history writer missing"))
    }
}

impl Consumer for Nommer {
    fn start(&mut self, ctx: &mut Context) -> Result<(), ConsumerError> {
        if let Err(e) = self.state.register_metrics(ctx.metrics()) {
            tracing::warn!(error = %e, "cannot register history metrics");
        }
        self.state.attach_readiness(ctx.readiness());
        self.ensure_writer()?;
        tracing::info!(
            consumer = ctx.name(),
            database = %self.store.location(),
            "history consumer started"
        );
        Ok(())
    }

    /// Extracts users and packages and hands the message to the writer. While
    /// commits fail (locked database, full disk) it waits for the writer to
    /// recover before taking the message, so the messages not yet stored stay
    /// in the hub's mailbox, counted as this consumer's backlog, and the failure
    /// shows in `/health/readyz`.
    fn consume(&mut self, envelope: &Envelope, ctx: &mut Context) -> Result<(), ConsumerError> {
        let message = NewMessage::from_envelope(envelope);
        self.wait_while_failing(&message.msg_id);
        // Handed to the writer thread, the message stays in the hub's backlog
        // until its batch is committed: the backlog ops see is what is not stored.
        self.ensure_writer()?
            .submit_holding(message, ctx.hold_backlog())
            .map_err(|e| ConsumerError::fatal(e.to_string()))
    }

    fn stop(&mut self, ctx: &mut Context) {
        if let Some(writer) = self.writer.take() {
            writer.shutdown();
        }
        if let Err(e) = self.store.save_index() {
            tracing::warn!(consumer = ctx.name(), error = %e, "cannot save the history index");
        }
        let health = self.state.health();
        tracing::info!(
            consumer = ctx.name(),
            stored = health.stored,
            duplicates = health.duplicates,
            write_errors = health.write_errors,
            "history consumer stopped"
        );
    }

    fn http_routes(&self) -> Option<HttpRoutes> {
        Some(routes(
            self.store.clone(),
            self.state.clone(),
            self.api.clone(),
        ))
    }

    fn module(&self) -> &str {
        "datanommer.consumer"
    }
}

/// The factory the hub registers: `Nommer`, subscribed to every topic (`*`),
/// disabled unless `[consumers.Nommer] enabled = true`.
pub fn factory() -> ConsumerFactory {
    ConsumerFactory::new(NAME, |settings| {
        let config: NommerConfig = settings.parse()?;
        Ok(Box::new(Nommer::from_config(&config)?))
    })
    .topics(["*"])
    .http_prefix(HTTP_PREFIX)
    .on_embedded_defaults()
    .example_config(include_str!("../fedhub.toml"))
    .command(crate::command::command())
}

/// The `database` setting as it may be shown (password masked).
fn mask(database: &str) -> String {
    fedhub_storage::mask_password(database)
}

/// Where the datagrepper API is mounted on the hub's HTTP server.
pub const HTTP_PREFIX: &str = "/datagrepper";
