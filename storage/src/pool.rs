//! Opening a database: one connection pool per URL in the process, shared by
//! every consumer that names that URL; each consumer gets its own [`Database`]
//! handle (its name, its metrics) on the shared pool.
//!
//! Opening checks what can be checked at once, so a bad setting stops the hub
//! at start with a message naming the database rather than failing later:
//! the SQLite file can be created and written; the PostgreSQL server answers,
//! accepts the credentials, is 13 or later and is not read-only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use postgres::NoTls;
use r2d2::PooledConnection;
use r2d2_postgres::PostgresConnectionManager;
use r2d2_sqlite::SqliteConnectionManager;

use crate::error::{BackendError, StorageError};
use crate::events::PoolCheckout;
use crate::metrics::StorageMetrics;
use crate::url::{Backend, DatabaseUrl};

/// How pools connect. The first consumer to open a URL decides its pool's
/// options; later ones share that pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_connections: u32,
    /// How long a checkout waits for a free (or new) connection.
    pub checkout_timeout: Duration,
    /// How long connecting to a PostgreSQL server may take.
    pub connect_timeout: Duration,
    /// How long a SQLite statement waits for a lock held by another connection.
    pub busy_timeout: Duration,
}

impl PoolOptions {
    /// The options a consumer's section sets (`max_connections`,
    /// `connect_timeout_ms`, `busy_timeout_ms`); the rest default.
    pub fn from_settings(
        max_connections: u32,
        connect_timeout_ms: u64,
        busy_timeout_ms: u64,
    ) -> PoolOptions {
        PoolOptions {
            max_connections,
            connect_timeout: Duration::from_millis(connect_timeout_ms),
            busy_timeout: Duration::from_millis(busy_timeout_ms),
            ..PoolOptions::default()
        }
    }
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 8,
            checkout_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A pool of one backend.
enum Pool {
    Sqlite(r2d2::Pool<SqliteConnectionManager>),
    Postgres(PgPool),
}

/// What consumers naming the same URL share.
struct Shared {
    url: DatabaseUrl,
    pool: Pool,
}

/// A PostgreSQL pool that closes its connections on a thread of its own.
///
/// The synchronous PostgreSQL client closes a connection by blocking on a
/// runtime of its own, which panics on a thread already driving one: the
/// hub's actix threads, where the last handle on a database may well be
/// dropped (with a consumer's HTTP routes).
struct PgPool(Option<r2d2::Pool<PostgresConnectionManager<NoTls>>>);

impl std::ops::Deref for PgPool {
    type Target = r2d2::Pool<PostgresConnectionManager<NoTls>>;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("the pool is open until dropped")
    }
}

impl Drop for PgPool {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            let closing = std::thread::Builder::new()
                .name("fedhub-db-close".into())
                .spawn(move || drop(pool));
            if let Ok(handle) = closing {
                let _ = handle.join();
            }
        }
    }
}

/// Pools by URL (SQLite: absolute path). Weak: a pool closes when the last
/// consumer using it drops its handle.
fn pools() -> &'static Mutex<HashMap<String, Weak<Shared>>> {
    static POOLS: OnceLock<Mutex<HashMap<String, Weak<Shared>>>> = OnceLock::new();
    POOLS.get_or_init(Default::default)
}

/// A consumer's handle on a database: the shared pool, the consumer's name and
/// its metrics. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    shared: Arc<Shared>,
    consumer: String,
    metrics: Arc<StorageMetrics>,
}

/// A pooled connection.
pub enum Connection {
    /// A SQLite connection (WAL, busy timeout set).
    Sqlite(PooledConnection<SqliteConnectionManager>),
    /// A PostgreSQL client.
    Postgres(PooledConnection<PostgresConnectionManager<NoTls>>),
}

/// A transaction of either backend, as handed to [`Database::transaction`].
pub enum Tx<'a> {
    /// SQLite (begun `IMMEDIATE`: the write lock is taken at once).
    Sqlite(rusqlite::Transaction<'a>),
    /// PostgreSQL.
    Postgres(postgres::Transaction<'a>),
}

impl Database {
    /// Opens `url` for the consumer `consumer`, with metrics in `registry`:
    /// the process's pool for that URL, created (and checked) if there is none.
    pub fn open(
        url: &DatabaseUrl,
        consumer: &str,
        options: &PoolOptions,
        registry: &prometheus::Registry,
    ) -> Result<Database, StorageError> {
        let metrics = StorageMetrics::for_consumer(registry, consumer, url.backend())
            .expect("storage metrics have valid names and labels");
        let key = pool_key(url);
        let mut pools = pools().lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|_, weak| weak.strong_count() > 0);
        let shared = match pools.get(&key).and_then(Weak::upgrade) {
            Some(shared) => shared,
            None => {
                let shared = Arc::new(Shared {
                    url: url.clone(),
                    pool: open_pool(url, options)?,
                });
                pools.insert(key, Arc::downgrade(&shared));
                tracing::info!(consumer, database = %url, "database open");
                shared
            }
        };
        Ok(Database {
            shared,
            consumer: consumer.to_string(),
            metrics,
        })
    }

    /// Opens `url` for the consumer whose context this is (its name, the hub's
    /// registry).
    pub fn for_consumer(
        ctx: &fedhub::Context,
        url: &DatabaseUrl,
        options: &PoolOptions,
    ) -> Result<Database, StorageError> {
        Database::open(url, ctx.name(), options, ctx.metrics())
    }

    /// The database's URL.
    pub fn url(&self) -> &DatabaseUrl {
        &self.shared.url
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.shared.url.backend()
    }

    /// The consumer this handle belongs to.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// This consumer's storage metrics.
    pub fn metrics(&self) -> &Arc<StorageMetrics> {
        &self.metrics
    }

    /// Whether `other` uses the same pool (same URL in this process).
    pub fn shares_pool_with(&self, other: &Database) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Connections the pool holds now (idle or in use).
    pub fn pool_connections(&self) -> u32 {
        match &self.shared.pool {
            Pool::Sqlite(p) => p.state().connections,
            Pool::Postgres(p) => p.state().connections,
        }
    }

    /// Checks a connection out of the pool (waiting up to the checkout
    /// timeout; the wait is measured).
    pub fn connection(&self) -> Result<Connection, StorageError> {
        let began = Instant::now();
        let result = match &self.shared.pool {
            Pool::Sqlite(p) => p.get().map(Connection::Sqlite),
            Pool::Postgres(p) => p.get().map(Connection::Postgres),
        }
        .map_err(|e| StorageError::database(self.url(), "connection checkout", e));
        PoolCheckout {
            metrics: &self.metrics,
            consumer: &self.consumer,
            waited: began.elapsed(),
            error: result.as_ref().err(),
        }
        .emit();
        result
    }

    /// Runs `f` in one transaction on a pooled connection and commits it; an
    /// error from `f` rolls it back. `f` returns errors made with
    /// [`StorageError::database`] so they keep their cause and classification.
    ///
    /// PostgreSQL's synchronous client drives a runtime of its own, which
    /// cannot run on a thread inside another runtime (a consumer's actor
    /// thread): there the transaction runs on a short-lived thread of its own,
    /// and this call waits for it.
    pub fn transaction<T: Send>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StorageError> + Send,
    ) -> Result<T, StorageError> {
        if self.backend() == Backend::Postgres && tokio::runtime::Handle::try_current().is_ok() {
            return std::thread::scope(|scope| {
                scope
                    .spawn(|| self.transaction_here(f))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
        }
        self.transaction_here(f)
    }

    /// [`transaction`](Self::transaction) for code written with the
    /// [`sql`](crate::sql) helpers: `f`'s backend errors are reported as `op`
    /// on this database.
    pub fn run_sql<T: Send>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, BackendError> + Send,
    ) -> Result<T, StorageError> {
        let error = self.error_for(op);
        self.transaction(|tx| f(tx).map_err(error))
    }

    /// Turns a backend error met doing `op` into a [`StorageError`] naming
    /// this database.
    pub fn error_for(&self, op: &'static str) -> impl Fn(BackendError) -> StorageError + '_ {
        move |e| StorageError::database(self.url(), op, e)
    }

    pub(crate) fn transaction_here<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let url = self.url();
        match self.connection()? {
            Connection::Sqlite(mut conn) => {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(|e| StorageError::database(url, "begin", e))?;
                let mut tx = Tx::Sqlite(tx);
                let out = f(&mut tx)?;
                match tx {
                    Tx::Sqlite(tx) => tx
                        .commit()
                        .map_err(|e| StorageError::database(url, "commit", e))?,
                    Tx::Postgres(_) => {
                        unreachable!("a SQLite connection begins a SQLite transaction")
                    }
                }
                Ok(out)
            }
            Connection::Postgres(mut conn) => {
                let tx = conn
                    .transaction()
                    .map_err(|e| StorageError::database(url, "begin", e))?;
                let mut tx = Tx::Postgres(tx);
                let out = f(&mut tx)?;
                match tx {
                    Tx::Postgres(tx) => tx
                        .commit()
                        .map_err(|e| StorageError::database(url, "commit", e))?,
                    Tx::Sqlite(_) => {
                        unreachable!("a PostgreSQL connection begins a PostgreSQL transaction")
                    }
                }
                Ok(out)
            }
        }
    }
}

/// The registry key: SQLite by absolute path, PostgreSQL by the whole URL.
fn pool_key(url: &DatabaseUrl) -> String {
    match url {
        DatabaseUrl::Sqlite(path) => {
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            // One file named two ways (a symlinked directory, `..`) is one pool.
            let canonical = match (absolute.parent(), absolute.file_name()) {
                (Some(dir), Some(name)) => dir
                    .canonicalize()
                    .map(|d| d.join(name))
                    .unwrap_or(absolute.clone()),
                _ => absolute.clone(),
            };
            format!("sqlite:{}", canonical.display())
        }
        DatabaseUrl::Postgres(text) => text.clone(),
    }
}

fn open_pool(url: &DatabaseUrl, options: &PoolOptions) -> Result<Pool, StorageError> {
    match url {
        DatabaseUrl::Sqlite(path) => open_sqlite(path, options).map(Pool::Sqlite),
        DatabaseUrl::Postgres(text) => {
            open_postgres(url, text, options).map(|p| Pool::Postgres(PgPool(Some(p))))
        }
    }
}

/// Settings every SQLite connection gets.
fn init_sqlite(conn: &mut rusqlite::Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")?;
    Ok(())
}

fn sqlite_file_error(
    path: &Path,
    reason: impl Into<String>,
    source: Option<rusqlite::Error>,
) -> StorageError {
    StorageError::SqliteFile {
        path: path.display().to_string(),
        reason: reason.into(),
        source: source.map(BackendError::Sqlite),
    }
}

fn open_sqlite(
    path: &Path,
    options: &PoolOptions,
) -> Result<r2d2::Pool<SqliteConnectionManager>, StorageError> {
    if path.is_dir() {
        return Err(sqlite_file_error(path, "it is a directory", None));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(sqlite_file_error(
            path,
            format!("the directory {} does not exist", parent.display()),
            None,
        ));
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let url = DatabaseUrl::Sqlite(path.to_path_buf());
    let mut conn = rusqlite::Connection::open_with_flags(path, flags)
        .map_err(|e| sqlite_file_error(path, e.to_string(), Some(e)))?;
    let read_only = |detail: String| StorageError::ReadOnly {
        url: url.to_string(),
        detail,
    };
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
        return Err(read_only("the file cannot be opened for writing".into()));
    }
    if let Err(e) = init_sqlite(&mut conn, options.busy_timeout) {
        return Err(match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ReadOnly) => read_only(e.to_string()),
            _ => sqlite_file_error(path, e.to_string(), Some(e)),
        });
    }
    // A write that changes nothing proves the file (and its directory, for the
    // WAL) is writable.
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE; COMMIT;") {
        return Err(match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ReadOnly) => read_only(e.to_string()),
            _ => sqlite_file_error(path, e.to_string(), Some(e)),
        });
    }
    drop(conn);
    let busy = options.busy_timeout;
    let manager = SqliteConnectionManager::file(path)
        .with_flags(flags)
        .with_init(move |c| init_sqlite(c, busy));
    Ok(r2d2::Pool::builder()
        .max_size(options.max_connections.max(1))
        .min_idle(Some(0))
        .connection_timeout(options.checkout_timeout)
        .error_handler(Box::new(LogErrors {
            url: url.to_string(),
        }))
        .build_unchecked(manager))
}

fn open_postgres(
    url: &DatabaseUrl,
    text: &str,
    options: &PoolOptions,
) -> Result<r2d2::Pool<PostgresConnectionManager<NoTls>>, StorageError> {
    let mut config = postgres::Config::from_str(text).map_err(|e| StorageError::InvalidUrl {
        url: url.to_string(),
        reason: e.to_string(),
        source: Some(Box::new(e)),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("fedhub");
    }
    let connect_error = |e: postgres::Error| StorageError::Connect {
        url: url.to_string(),
        source: BackendError::Postgres(e),
    };
    let mut client = config.connect(NoTls).map_err(connect_error)?;
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .and_then(|row| row.try_get(0))
        .map_err(connect_error)?;
    if version.parse::<u32>().map(|v| v < 130_000).unwrap_or(false) {
        let shown: String = client
            .query_one("SHOW server_version", &[])
            .and_then(|row| row.try_get(0))
            .unwrap_or(version);
        return Err(StorageError::ServerTooOld {
            url: url.to_string(),
            version: shown,
        });
    }
    let read_only: String = client
        .query_one("SHOW transaction_read_only", &[])
        .and_then(|row| row.try_get(0))
        .map_err(connect_error)?;
    if read_only == "on" {
        return Err(StorageError::ReadOnly {
            url: url.to_string(),
            detail: "transaction_read_only is on (a standby, or default_transaction_read_only)"
                .into(),
        });
    }
    drop(client);
    let manager = PostgresConnectionManager::new(config, NoTls);
    Ok(r2d2::Pool::builder()
        .max_size(options.max_connections.max(1))
        .min_idle(Some(0))
        .connection_timeout(options.checkout_timeout)
        .test_on_check_out(true)
        .error_handler(Box::new(LogErrors {
            url: url.to_string(),
        }))
        .build_unchecked(manager))
}

/// Logs the pool's background connection errors (r2d2 would use `log`).
#[derive(Debug)]
struct LogErrors {
    url: String,
}

impl<E: std::fmt::Display> r2d2::HandleError<E> for LogErrors {
    fn handle_error(&self, error: E) {
        tracing::debug!(database = %self.url, error = %error, "database pool cannot connect");
    }
}
