//! The embedded SQLite backend (rusqlite, bundled SQLite).
//!
//! Schema (datanommer's model with integer-coded names, so indexes stay small):
//!
//! ```sql
//! topic(id, name UNIQUE, category)      user(id, name UNIQUE)      package(id, name UNIQUE)
//! messages(id, msg_id, msg_hash, i, topic_id, timestamp, username, crypto,
//!          certificate, signature, msg, headers, extra)
//! user_messages(msg, user_id)       PRIMARY KEY (msg, user_id), WITHOUT ROWID
//! package_messages(msg, package_id) PRIMARY KEY (msg, package_id), WITHOUT ROWID
//! messages_view: the datanommer-shaped view (topic and category as text, _msg)
//! ```
//!
//! Every index costs each insert a B-tree update, and an index on a random key
//! (a UUID `msg_id`) costs a page write per message once it outgrows the
//! cache: measured at 2M messages, a `UNIQUE` index on `msg_id` held ingest to
//! 19k msg/s where the same store without it sustained 70k msg/s. So the only
//! secondary index is `messages(timestamp, topic_id, msg_hash)`, which grows at
//! its end as messages arrive in time order. It serves time windows and ordering
//! on the SQL path, checks topics without reading rows, and is the covering scan
//! that rebuilds the in-memory index on open. The bridge tables are keyed
//! `(msg, …)` so they grow at their end too, and `EXISTS` probes from a message
//! use their primary key.
//!
//! `msg_id` stays unique all the same: the writer checks each new message
//! against the in-memory table of `msg_id` hashes (comparing the stored
//! `msg_id` on a hash match) inside its `BEGIN IMMEDIATE` transaction, after
//! catching up with anything another process committed meanwhile, so two writers
//! (the hub and an import) cannot both store the same `msg_id`. `/id` lookups use
//! the same table. Filtered counts and pages are answered by
//! [`crate::index::MemIndex`]; SQL fetches the page's rows. Filters with
//! `contains` run entirely in SQL.
//!
//! Connections: one writer (WAL, `synchronous=NORMAL`, one transaction per
//! batch) and a pool of read-only connections for queries, so readers never
//! wait for the writer. The WAL is checkpointed every 8192 pages (32 MiB)
//! rather than SQLite's default 1000: pages rewritten by many batches (B-tree
//! interiors, the tail of the time index) are then copied into the database
//! once per checkpoint instead of many times. Measured at 500k messages on two
//! shared cores: ingest went from 56k to 73k msg/s (CPU from 24.4 to 19.1 µs
//! per message); 32768 pages was no better.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use roaring::RoaringBitmap;
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension};
use serde_json::{Map, Value};

use fedhub_storage::{Backend, Database, DatabaseUrl, PoolOptions};

use crate::filter::{Filter, Page, StoredMessage};
use crate::index::{msg_hash, snapshot_path, IndexedRow, MemIndex, SnapshotMark};
use crate::schema;
use crate::store::{BatchReport, NewMessage, Store, StoreError};

const ROW_COLUMNS: &str = "m.id, m.msg_id, m.i, t.name, t.category, m.timestamp, m.username, \
     m.crypto, m.certificate, m.signature, m.msg, m.headers, m.extra";

/// SQLite tuning.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a statement waits for a lock held by another process.
    pub busy_timeout: Duration,
    /// Page cache of the writer connection, in MiB.
    pub cache_mib: u32,
    /// Read-only connections kept for queries.
    pub readers: usize,
    /// Refuse to grow the file past this size (SQLite then reports "database or
    /// disk is full", like a full disk); `None` for no limit.
    pub max_database_bytes: Option<u64>,
    /// Rows stored since the last index snapshot after which the writer saves
    /// a new one, bounding what an open after a crash must catch up.
    pub snapshot_every_rows: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(5),
            cache_mib: 64,
            readers: 4,
            max_database_bytes: None,
            snapshot_every_rows: SNAPSHOT_AFTER_ROWS,
        }
    }
}

/// The writer connection and what it last saw of other writers.
struct Writer {
    conn: Connection,
    /// `PRAGMA data_version` when the index last matched the database.
    data_version: i64,
}

/// The SQLite [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    options: SqliteOptions,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    index: RwLock<MemIndex>,
    /// Where the index came from when the store opened.
    origin: IndexOrigin,
    /// The newest row in the last index snapshot written (-1: none yet).
    saved_max_row: AtomicI64,
}

/// Where the in-memory index came from when a [`SqliteStore`] opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexOrigin {
    /// Read from the snapshot beside the file, then caught up with the rows
    /// stored after it (`caught_up` of them).
    Snapshot {
        /// Rows added from the database after reading the snapshot.
        caught_up: u64,
    },
    /// Rebuilt from the database (no usable snapshot).
    Rebuilt,
}

fn open_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
        source: None,
    }
}

/// Opens the file through `fedhub_storage` (which checks that it can be
/// created and written, naming the reason when not), for its migrations.
fn open_database(path: &Path, options: &SqliteOptions) -> Result<Database, StoreError> {
    let url = DatabaseUrl::sqlite(path);
    let pool = PoolOptions {
        max_connections: 1,
        busy_timeout: options.busy_timeout,
        ..PoolOptions::default()
    };
    Database::open(
        &url,
        crate::consumer::NAME,
        &pool,
        &prometheus::Registry::new(),
    )
    .map_err(|e| StoreError::open(path.display(), e))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let began = Instant::now();
        let database = open_database(&path, &options)?;
        let conn = Connection::open(&path).map_err(|e| open_error(&path, e))?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.busy_timeout(options.busy_timeout)
            .map_err(|e| open_error(&path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| open_error(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_error(
                &path,
                format!("cannot switch to WAL journal mode (got {mode})"),
            ));
        }
        let baseline = schema::check_sqlite_baseline(&conn).map_err(|e| open_error(&path, e))?;
        if baseline == schema::Baseline::Adopted {
            tracing::info!(
                path = %path.display(),
                "adopting a history database made before schema migrations as version 1"
            );
        }
        database
            .migrate(&schema::migrations())
            .map_err(|e| StoreError::open(path.display(), e))?;
        drop(database);
        conn.execute_batch(&format!(
            "PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-{}; PRAGMA wal_autocheckpoint=8192;",
            u64::from(options.cache_mib) * 1024
        ))
        .map_err(|e| open_error(&path, e))?;
        let data_version: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| open_error(&path, e))?;
        // On a connection of its own without memory mapping: the pages the
        // scan reads would otherwise stay mapped in a pooled reader and count
        // in the process's resident memory.
        let (index, origin) = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| {
            conn.busy_timeout(options.busy_timeout)?;
            conn.execute_batch("PRAGMA cache_size=-16384; PRAGMA mmap_size=0;")?;
            open_index(&conn, &path, options.busy_timeout)
        })
        .map_err(|e| open_error(&path, e))?;
        let rows = index.len();
        let store = SqliteStore {
            path: path.clone(),
            options: options.clone(),
            writer: Mutex::new(Writer { conn, data_version }),
            readers: Mutex::new(Vec::new()),
            index: RwLock::new(index),
            origin,
            saved_max_row: AtomicI64::new(-1),
        };
        store.set_max_database_bytes(options.max_database_bytes)?;
        let index_ms = began.elapsed().as_millis() as u64;
        tracing::info!(
            path = %path.display(),
            messages = rows,
            index = ?origin,
            index_ms,
            "history database open"
        );
        match origin {
            IndexOrigin::Snapshot { caught_up: 0 } => {
                // The snapshot on disk is this index.
                let max_row = store
                    .index
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .max_row();
                store.saved_max_row.store(max_row, AtomicOrdering::Relaxed);
            }
            IndexOrigin::Snapshot { caught_up } if caught_up < options.snapshot_every_rows => {}
            // The next open reads this instead of rebuilding it.
            _ => {
                if let Err(e) = store.save_index_snapshot() {
                    tracing::warn!(path = %path.display(), error = %e, "cannot save the index snapshot");
                }
            }
        }
        Ok(store)
    }

    /// Where the in-memory index came from when the store opened.
    pub fn index_origin(&self) -> IndexOrigin {
        self.origin
    }

    /// Writes the in-memory index beside the file (`<file>.index`), so the
    /// next open reads it instead of rebuilding it. Skipped (`Ok(None)`) when
    /// the last snapshot is current or the index is not in use; else the
    /// bytes written.
    pub fn save_index_snapshot(&self) -> Result<Option<u64>, StoreError> {
        // The writer's lock first, as every writer takes them: no batch
        // changes the index while it is written.
        let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        self.save_snapshot_locked(&guard.conn, &mut index)
    }

    /// [`save_index_snapshot`](Self::save_index_snapshot) with the writer's
    /// connection and the index already locked.
    fn save_snapshot_locked(
        &self,
        conn: &Connection,
        index: &mut MemIndex,
    ) -> Result<Option<u64>, StoreError> {
        let max_row = index.max_row();
        if !index.usable() || self.saved_max_row.load(AtomicOrdering::Relaxed) == max_row {
            return Ok(None);
        }
        let max_row_hash: u64 = if max_row == 0 {
            0
        } else {
            let hash: i64 = conn.query_row(
                "SELECT msg_hash FROM messages WHERE id = ?1",
                [max_row],
                |r| r.get(0),
            )?;
            hash as u64
        };
        let began = Instant::now();
        let path = snapshot_path(&self.path);
        let bytes = index
            .save_snapshot(
                &path,
                SnapshotMark {
                    max_row,
                    max_row_hash,
                },
            )
            .map_err(|e| open_error(&path, e))?;
        self.saved_max_row.store(max_row, AtomicOrdering::Relaxed);
        tracing::info!(
            path = %path.display(),
            bytes,
            ms = began.elapsed().as_millis() as u64,
            "index snapshot saved"
        );
        Ok(Some(bytes))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Caps the file size (`None` removes the cap); see [`SqliteOptions::max_database_bytes`].
    pub fn set_max_database_bytes(&self, bytes: Option<u64>) -> Result<(), StoreError> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let conn = &writer.conn;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = match bytes {
            Some(b) => (b / page_size.max(1) as u64).max(1),
            None => 1_073_741_823,
        };
        // The pragma returns the new limit (never below the current size).
        let _: i64 = conn.query_row(&format!("PRAGMA max_page_count={pages}"), [], |r| r.get(0))?;
        Ok(())
    }

    fn reader(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.busy_timeout(self.options.busy_timeout)?;
        conn.execute_batch("PRAGMA cache_size=-16384; PRAGMA mmap_size=268435456;")?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.options.readers {
            pool.push(conn);
        }
    }

    /// Runs `f` on a pooled read-only connection, after bringing the index up
    /// to date with rows other processes committed. Everything runs in one read
    /// transaction: one snapshot, and the WAL read lock is taken once rather
    /// than once per statement (a page of 25 rows is 25 lookups).
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.reader()?;
        let result = (|| {
            let tx = conn.unchecked_transaction()?;
            let out = self.catch_up_from(&conn).and_then(|()| f(&conn))?;
            tx.commit()?;
            Ok(out)
        })();
        if result.is_ok() {
            self.give_back(conn);
        }
        result
    }

    /// Indexes rows committed by other connections (cheap when there are none:
    /// one lookup of the largest row id).
    fn catch_up_from(&self, conn: &Connection) -> Result<(), StoreError> {
        let newest: Option<i64> = conn
            .prepare_cached("SELECT max(id) FROM messages")?
            .query_row([], |r| r.get(0))?;
        let known = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .max_row();
        if newest.unwrap_or(0) > known {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            catch_up(conn, &mut index)?;
        }
        Ok(())
    }

    /// The rows of the in-memory index for a query (after catching up).
    fn index_for_query(&self) -> Result<std::sync::RwLockReadGuard<'_, MemIndex>, StoreError> {
        let conn = self.reader()?;
        self.catch_up_from(&conn)?;
        self.give_back(conn);
        Ok(self.index.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs the filter on SQL alone (no in-memory index): used for `contains`,
    /// and by tests as the reference the index is checked against.
    pub fn grep_sql(&self, filter: &Filter) -> Result<Page, StoreError> {
        let window = filter.window()?;
        let (clause, args) = sql_where(filter, window);
        self.with_reader(|conn| {
            let total: i64 = conn
                .prepare_cached(&format!(
                    "SELECT count(*) FROM messages m JOIN topic t ON t.id = m.topic_id {clause}"
                ))?
                .query_row(params_from_iter(args.iter().map(SqlValue)), |r| r.get(0))?;
            let order = filter.order.as_str();
            let mut page_args = args.clone();
            page_args.push(Value::from(filter.rows_per_page));
            page_args.push(Value::from(filter.offset()));
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM messages m JOIN topic t ON t.id = m.topic_id {clause}
                 ORDER BY m.timestamp {order}, m.id {order} LIMIT ? OFFSET ?"
            ))?;
            let mut size = PageSize::new(filter.max_page_bytes);
            let rows = stmt
                .query_map(params_from_iter(page_args.iter().map(SqlValue)), raw_row)?
                .map(|row| {
                    let row = row?;
                    size.add(&row)?;
                    Ok(row)
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let messages = rows
                .into_iter()
                .map(RawRow::decode)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page::new(total as u64, filter.rows_per_page, messages))
        })
    }

    fn fetch(
        &self,
        conn: &Connection,
        ids: &[u32],
        max_bytes: Option<u64>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM messages m JOIN topic t ON t.id = m.topic_id WHERE m.id = ?1"
        ))?;
        let mut size = PageSize::new(max_bytes);
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            // A row indexed after this reader's snapshot began is skipped.
            if let Some(raw) = stmt.query_row([id], raw_row).optional()? {
                size.add(&raw)?;
                rows.push(raw);
            }
        }
        // Parsed only once the whole page is known to fit.
        rows.into_iter().map(RawRow::decode).collect()
    }
}

/// A JSON parameter bound as the matching SQLite type.
struct SqlValue<'a>(&'a Value);

impl rusqlite::ToSql for SqlValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value as V};
        Ok(match self.0 {
            Value::String(s) => ToSqlOutput::from(s.as_str()),
            Value::Number(n) => match n.as_i64() {
                Some(i) => ToSqlOutput::Owned(V::Integer(i)),
                None => ToSqlOutput::Owned(V::Real(n.as_f64().unwrap_or(0.0))),
            },
            Value::Bool(b) => ToSqlOutput::Owned(V::Integer(i64::from(*b))),
            _ => ToSqlOutput::Owned(V::Null),
        })
    }
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The WHERE clause for a filter: every value is a bound parameter.
fn sql_where(filter: &Filter, window: Option<(f64, f64)>) -> (String, Vec<Value>) {
    let mut parts: Vec<String> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some((s, e)) = window {
        parts.push("m.timestamp BETWEEN ? AND ?".into());
        args.push(Value::from(s));
        args.push(Value::from(e));
    }
    let bridges = [
        (&filter.users, "user_messages", "user", "user_id", "EXISTS"),
        (
            &filter.packages,
            "package_messages",
            "package",
            "package_id",
            "EXISTS",
        ),
        (
            &filter.not_users,
            "user_messages",
            "user",
            "user_id",
            "NOT EXISTS",
        ),
        (
            &filter.not_packages,
            "package_messages",
            "package",
            "package_id",
            "NOT EXISTS",
        ),
    ];
    for (names, bridge, table, column, op) in bridges {
        if names.is_empty() {
            continue;
        }
        parts.push(format!(
            "{op} (SELECT 1 FROM {bridge} b WHERE b.msg = m.id AND b.{column} IN \
             (SELECT n.id FROM {table} n WHERE n.name IN ({})))",
            placeholders(names.len())
        ));
        args.extend(names.iter().map(|n| Value::from(n.as_str())));
    }
    let columns = [
        (&filter.categories, "t.category", "IN"),
        (&filter.topics, "t.name", "IN"),
        (&filter.not_categories, "t.category", "NOT IN"),
        (&filter.not_topics, "t.name", "NOT IN"),
    ];
    for (names, column, op) in columns {
        if names.is_empty() {
            continue;
        }
        parts.push(format!("{column} {op} ({})", placeholders(names.len())));
        args.extend(names.iter().map(|n| Value::from(n.as_str())));
    }
    if !filter.contains.is_empty() {
        let any: Vec<&str> = filter
            .contains
            .iter()
            .map(|_| "instr(m.msg, ?) > 0")
            .collect();
        parts.push(format!("({})", any.join(" OR ")));
        args.extend(filter.contains.iter().map(|c| Value::from(c.as_str())));
    }
    if parts.is_empty() {
        (String::new(), args)
    } else {
        (format!("WHERE {}", parts.join(" AND ")), args)
    }
}

/// A row as read, before JSON decoding (both backends).
pub(crate) struct RawRow {
    pub(crate) id: i64,
    pub(crate) msg_id: String,
    pub(crate) i: i64,
    pub(crate) topic: String,
    pub(crate) category: String,
    pub(crate) timestamp: f64,
    pub(crate) username: Option<String>,
    pub(crate) crypto: Option<String>,
    pub(crate) certificate: Option<String>,
    pub(crate) signature: Option<String>,
    pub(crate) msg: String,
    pub(crate) headers: Option<String>,
    pub(crate) extra: Option<String>,
}

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        id: r.get(0)?,
        msg_id: r.get(1)?,
        i: r.get(2)?,
        topic: r.get(3)?,
        category: r.get(4)?,
        timestamp: r.get(5)?,
        username: r.get(6)?,
        crypto: r.get(7)?,
        certificate: r.get(8)?,
        signature: r.get(9)?,
        msg: r.get(10)?,
        headers: r.get(11)?,
        extra: r.get(12)?,
    })
}

impl RawRow {
    /// Decodes the JSON columns (never failing on what was stored).
    pub(crate) fn decode(self) -> Result<StoredMessage, StoreError> {
        let id = self.id;
        let msg = stored_value(id, "msg", &self.msg);
        let headers = self
            .headers
            .as_deref()
            .map(|h| stored_value(id, "headers", h));
        let extra = match &self.extra {
            Some(text) => stored_object(id, text),
            None => Map::new(),
        };
        Ok(StoredMessage {
            id: self.id,
            msg_id: self.msg_id,
            i: self.i,
            topic: self.topic,
            category: self.category,
            timestamp: self.timestamp,
            username: self.username,
            crypto: self.crypto,
            certificate: self.certificate,
            signature: self.signature,
            msg,
            headers,
            extra,
        })
    }
}

/// The stored text a page holds so far, against its limit: checked row by
/// row as rows are read, so a page past the limit is refused before it is
/// read whole or parsed.
struct PageSize {
    bytes: u64,
    limit: Option<u64>,
}

impl PageSize {
    fn new(limit: Option<u64>) -> PageSize {
        PageSize { bytes: 0, limit }
    }

    fn add(&mut self, row: &RawRow) -> Result<(), StoreError> {
        let text = [&row.certificate, &row.signature, &row.headers, &row.extra]
            .iter()
            .map(|t| t.as_ref().map_or(0, String::len))
            .sum::<usize>()
            + row.msg.len()
            + row.topic.len();
        self.bytes += text as u64;
        match self.limit {
            Some(limit) if self.bytes > limit => Err(StoreError::PageTooLarge { limit }),
            _ => Ok(()),
        }
    }
}

/// A stored JSON value as a tree. Reading never fails on what was stored: a
/// value the parser cannot take (nested deeper than serde_json's 128 levels,
/// stored before ingress enforced `fedhub::MAX_JSON_DEPTH`) is served as its
/// stored text, in a JSON string, and logged.
fn stored_value(id: i64, field: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| {
        crate::events::StoredValueUnreadable {
            id,
            field,
            error: &error,
        }
        .emit();
        Value::String(text.to_string())
    })
}

/// The stored `extra` object: each field read as [`stored_value`] does (the
/// object is split without building a tree, which has no depth limit).
fn stored_object(id: i64, text: &str) -> Map<String, Value> {
    if let Ok(Value::Object(map)) = serde_json::from_str(text) {
        return map;
    }
    type Fields<'a> = std::collections::BTreeMap<String, &'a serde_json::value::RawValue>;
    match serde_json::from_str::<Fields<'_>>(text) {
        Ok(fields) => fields
            .into_iter()
            .map(|(key, raw)| {
                let value = stored_value(id, &format!("extra.{key}"), raw.get());
                (key, value)
            })
            .collect(),
        Err(error) => {
            crate::events::StoredValueUnreadable {
                id,
                field: "extra",
                error: &error,
            }
            .emit();
            Map::from_iter([("extra".to_string(), Value::String(text.to_string()))])
        }
    }
}

/// Loads names with ids above what the index knows.
fn load_names(conn: &Connection, index: &mut MemIndex) -> rusqlite::Result<()> {
    let (topic, user, package) = index.max_name_ids();
    let mut stmt = conn.prepare_cached("SELECT id, name, category FROM topic WHERE id > ?1")?;
    let mut rows = stmt.query([topic])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(1)?;
        let category: String = r.get(2)?;
        index.add_topic(&name, &category, r.get(0)?);
    }
    let mut stmt = conn.prepare_cached("SELECT id, name FROM user WHERE id > ?1")?;
    let mut rows = stmt.query([user])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(1)?;
        index.add_user(&name, r.get(0)?);
    }
    let mut stmt = conn.prepare_cached("SELECT id, name FROM package WHERE id > ?1")?;
    let mut rows = stmt.query([package])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(1)?;
        index.add_package(&name, r.get(0)?);
    }
    Ok(())
}

/// Loads the bridge rows of messages above `after`.
fn load_links(conn: &Connection, index: &mut MemIndex, after: i64) -> rusqlite::Result<()> {
    let mut links: Vec<(i64, i64)> = Vec::new();
    for (table, column, is_user) in [
        ("user_messages", "user_id", true),
        ("package_messages", "package_id", false),
    ] {
        let mut stmt =
            conn.prepare_cached(&format!("SELECT msg, {column} FROM {table} WHERE msg > ?1"))?;
        let mut rows = stmt.query([after])?;
        while let Some(r) = rows.next()? {
            let (msg, id): (i64, i64) = (r.get(0)?, r.get(1)?);
            if index.has_row(msg) {
                links.push((id, msg));
            }
        }
        drop(rows);
        for (id, msg) in links.drain(..) {
            if is_user {
                index.add_user_link(id, msg);
            } else {
                index.add_package_link(id, msg);
            }
        }
    }
    Ok(())
}

/// Per-user and per-package bitmaps of row ids.
type LinkMaps = (HashMap<i64, RoaringBitmap>, HashMap<i64, RoaringBitmap>);

/// The bitmaps of the bridge rows of messages up to `max_row` (both tables
/// are keyed by message first, so every bitmap grows at its end).
fn load_link_maps(conn: &Connection, max_row: i64) -> rusqlite::Result<LinkMaps> {
    let mut maps: LinkMaps = (HashMap::new(), HashMap::new());
    for (table, column) in [
        ("user_messages", "user_id"),
        ("package_messages", "package_id"),
    ] {
        let map = if table == "user_messages" {
            &mut maps.0
        } else {
            &mut maps.1
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT msg, {column} FROM {table} WHERE msg <= ?1"
        ))?;
        let mut rows = stmt.query([max_row])?;
        while let Some(r) = rows.next()? {
            let (msg, id): (i64, i64) = (r.get(0)?, r.get(1)?);
            // Rows past the bitmaps' range make the index unusable anyway.
            if let Ok(row) = u32::try_from(msg) {
                let bitmap: &mut RoaringBitmap = map.entry(id).or_default();
                if !bitmap.push(row) {
                    bitmap.insert(row);
                }
            }
        }
    }
    Ok(maps)
}

/// Builds the in-memory index from covering indexes (no message bodies are
/// read): the messages on `conn`, and at the same time the bridge tables on a
/// second connection to `path`, so both cores work. The messages are read in
/// one transaction; the bridge rows of the messages it saw are committed with
/// them, so the second connection, which starts later, sees every one.
fn load_index(conn: &Connection, path: &Path, busy: Duration) -> rusqlite::Result<MemIndex> {
    conn.execute_batch("BEGIN")?;
    let built = (|| {
        let max_row: i64 =
            conn.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |r| {
                r.get(0)
            })?;
        std::thread::scope(|scope| {
            let links = scope.spawn(|| -> rusqlite::Result<LinkMaps> {
                let other = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                other.busy_timeout(busy)?;
                other.execute_batch("PRAGMA cache_size=-16384; PRAGMA mmap_size=0;")?;
                load_link_maps(&other, max_row)
            });
            let mut index = MemIndex::new();
            index.reserve(usize::try_from(max_row).unwrap_or(0));
            load_names(conn, &mut index)?;
            let mut stmt = conn.prepare(
                "SELECT id, msg_hash, topic_id, timestamp FROM messages INDEXED BY messages_timestamp",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let hash: i64 = r.get(1)?;
                index.add_time_topic(r.get(0)?, hash as u64, r.get(2)?, r.get(3)?);
            }
            drop(rows);
            index.finish_bulk();
            let (users, packages) = links
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            index.set_links(users, packages);
            Ok(index)
        })
    })();
    let _ = conn.execute_batch("COMMIT");
    built
}

impl Drop for SqliteStore {
    /// Saves the index snapshot, so the next open is quick.
    fn drop(&mut self) {
        if let Err(e) = self.save_index_snapshot() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot save the index snapshot");
        }
    }
}

/// The default of [`SqliteOptions::snapshot_every_rows`]: about a day of
/// Fedora's traffic, and a second or two of catching up.
const SNAPSHOT_AFTER_ROWS: u64 = 1_000_000;

/// The index from the snapshot at `snapshot` when it matches the database
/// (caught up with the rows stored after it), else rebuilt.
fn open_index(
    conn: &Connection,
    path: &Path,
    busy: Duration,
) -> rusqlite::Result<(MemIndex, IndexOrigin)> {
    let snapshot = snapshot_path(path);
    let snapshot = snapshot.as_path();
    match MemIndex::load_snapshot(snapshot) {
        Ok((mut index, mark)) => {
            let newest: Option<i64> = if mark.max_row == 0 {
                None
            } else {
                conn.query_row(
                    "SELECT msg_hash FROM messages WHERE id = ?1",
                    [mark.max_row],
                    |r| r.get(0),
                )
                .optional()?
            };
            let matches = mark.max_row == 0 || newest.map(|h| h as u64) == Some(mark.max_row_hash);
            if matches {
                index.finish_bulk();
                catch_up(conn, &mut index)?;
                let caught_up = (index.max_row() - mark.max_row).max(0) as u64;
                return Ok((index, IndexOrigin::Snapshot { caught_up }));
            }
            tracing::warn!(
                snapshot = %snapshot.display(),
                "the index snapshot does not match the database (its newest row differs); rebuilding the index"
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            snapshot = %snapshot.display(),
            error = %e,
            "cannot use the index snapshot; rebuilding the index"
        ),
    }
    Ok((load_index(conn, path, busy)?, IndexOrigin::Rebuilt))
}

/// Adds rows committed since the index was last updated (by another process),
/// in id order, with their names and links.
fn catch_up(conn: &Connection, index: &mut MemIndex) -> rusqlite::Result<()> {
    let after = index.max_row();
    load_names(conn, index)?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, msg_hash, topic_id, timestamp FROM messages WHERE id > ?1 ORDER BY id",
    )?;
    let rows: Vec<(i64, i64, i64, f64)> = stmt
        .query_map([after], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let added = rows.len();
    for (id, hash, topic_id, timestamp) in rows {
        index.add_row(&IndexedRow {
            id,
            hash: hash as u64,
            topic_id,
            timestamp,
            users: &[],
            packages: &[],
        });
    }
    load_links(conn, index, after)?;
    if added > 0 {
        tracing::debug!(rows = added, "indexed messages stored by another process");
    }
    Ok(())
}

/// Rows per multi-row INSERT (statement overhead is paid once per chunk).
const ROWS_PER_INSERT: usize = 64;

/// Message columns in insert order.
const INSERT_COLUMNS: &str = "id, msg_id, msg_hash, i, topic_id, timestamp, username, crypto, \
     certificate, signature, msg, headers, extra";

/// Inserts message rows (with their ids) in chunks.
fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    rows: &[(i64, u64, i64, &NewMessage)],
) -> rusqlite::Result<()> {
    const ONE: &str = "(?,?,?,?,?,?,?,?,?,?,?,?,?)";
    let mut many = tx.prepare_cached(&format!(
        "INSERT INTO messages({INSERT_COLUMNS}) VALUES {}",
        vec![ONE; ROWS_PER_INSERT].join(",")
    ))?;
    let mut single = tx.prepare_cached(&format!(
        "INSERT INTO messages({INSERT_COLUMNS}) VALUES {ONE}"
    ))?;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let stmt = if chunk.len() == ROWS_PER_INSERT {
            &mut many
        } else {
            &mut single
        };
        let per_statement = if chunk.len() == ROWS_PER_INSERT {
            chunk.len()
        } else {
            1
        };
        for group in chunk.chunks(per_statement) {
            let mut at = 1;
            for (id, hash, topic_id, m) in group {
                stmt.raw_bind_parameter(at, id)?;
                stmt.raw_bind_parameter(at + 1, &m.msg_id)?;
                stmt.raw_bind_parameter(at + 2, *hash as i64)?;
                stmt.raw_bind_parameter(at + 3, m.i)?;
                stmt.raw_bind_parameter(at + 4, topic_id)?;
                stmt.raw_bind_parameter(at + 5, m.timestamp)?;
                stmt.raw_bind_parameter(at + 6, &m.username)?;
                stmt.raw_bind_parameter(at + 7, &m.crypto)?;
                stmt.raw_bind_parameter(at + 8, &m.certificate)?;
                stmt.raw_bind_parameter(at + 9, &m.signature)?;
                stmt.raw_bind_parameter(at + 10, &m.msg)?;
                stmt.raw_bind_parameter(at + 11, &m.headers)?;
                stmt.raw_bind_parameter(at + 12, &m.extra)?;
                at += 13;
            }
            stmt.raw_execute()?;
        }
    }
    Ok(())
}

/// Inserts bridge rows `(msg, id)` in chunks.
fn insert_links(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    column: &str,
    links: &[(i64, i64)],
) -> rusqlite::Result<()> {
    let rows = ROWS_PER_INSERT * 4;
    let mut many = tx.prepare_cached(&format!(
        "INSERT INTO {table}(msg, {column}) VALUES {} ON CONFLICT DO NOTHING",
        vec!["(?,?)"; rows].join(",")
    ))?;
    let mut single = tx.prepare_cached(&format!(
        "INSERT INTO {table}(msg, {column}) VALUES (?,?) ON CONFLICT DO NOTHING"
    ))?;
    for chunk in links.chunks(rows) {
        if chunk.len() == rows {
            for (k, (msg, id)) in chunk.iter().enumerate() {
                many.raw_bind_parameter(2 * k + 1, msg)?;
                many.raw_bind_parameter(2 * k + 2, id)?;
            }
            many.raw_execute()?;
        } else {
            for (msg, id) in chunk {
                single.raw_bind_parameter(1, msg)?;
                single.raw_bind_parameter(2, id)?;
                single.raw_execute()?;
            }
        }
    }
    Ok(())
}

/// The ids of every name a batch uses.
struct BatchNames<'a> {
    topics: HashMap<&'a str, i64>,
    users: HashMap<&'a str, i64>,
    packages: HashMap<&'a str, i64>,
    created_topics: Vec<(&'a str, &'a str, i64)>,
    created_users: Vec<(&'a str, i64)>,
    created_packages: Vec<(&'a str, i64)>,
}

/// Files each of `names` under `known` (with the id `lookup` finds) or `missing`.
fn sort_names<'a>(
    names: &'a [String],
    known: &mut HashMap<&'a str, i64>,
    missing: &mut BTreeSet<&'a str>,
    lookup: impl Fn(&str) -> Option<i64>,
) {
    for name in names {
        if known.contains_key(name.as_str()) {
            continue;
        }
        match lookup(name) {
            Some(id) => {
                known.insert(name, id);
            }
            None => {
                missing.insert(name);
            }
        }
    }
}

impl SqliteStore {
    /// Resolves a batch's topics, users and packages: known ones from the index,
    /// the others created in the caller's transaction (they reach the index only
    /// after it commits).
    fn resolve_names<'a>(
        &self,
        tx: &rusqlite::Transaction<'_>,
        batch: &'a [NewMessage],
    ) -> Result<BatchNames<'a>, StoreError> {
        let mut names = BatchNames {
            topics: HashMap::new(),
            users: HashMap::new(),
            packages: HashMap::new(),
            created_topics: Vec::new(),
            created_users: Vec::new(),
            created_packages: Vec::new(),
        };
        let mut missing_topics: BTreeMap<&str, &str> = BTreeMap::new();
        let mut missing_users: BTreeSet<&str> = BTreeSet::new();
        let mut missing_packages: BTreeSet<&str> = BTreeSet::new();
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            for m in batch {
                if !names.topics.contains_key(m.topic.as_str()) {
                    match index.topic_id(&m.topic) {
                        Some(id) => {
                            names.topics.insert(&m.topic, id);
                        }
                        None => {
                            missing_topics.insert(&m.topic, &m.category);
                        }
                    }
                }
                sort_names(&m.users, &mut names.users, &mut missing_users, |n| {
                    index.user_id(n)
                });
                sort_names(
                    &m.packages,
                    &mut names.packages,
                    &mut missing_packages,
                    |n| index.package_id(n),
                );
            }
        }
        let mut create = tx.prepare_cached(
            "INSERT INTO topic(name, category) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET name = excluded.name RETURNING id",
        )?;
        for (name, category) in missing_topics {
            let id: i64 = create.query_row([name, category], |r| r.get(0))?;
            names.topics.insert(name, id);
            names.created_topics.push((name, category, id));
        }
        let mut create = tx.prepare_cached(
            "INSERT INTO user(name) VALUES (?1)
             ON CONFLICT(name) DO UPDATE SET name = excluded.name RETURNING id",
        )?;
        for name in missing_users {
            let id: i64 = create.query_row([name], |r| r.get(0))?;
            names.users.insert(name, id);
            names.created_users.push((name, id));
        }
        let mut create = tx.prepare_cached(
            "INSERT INTO package(name) VALUES (?1)
             ON CONFLICT(name) DO UPDATE SET name = excluded.name RETURNING id",
        )?;
        for name in missing_packages {
            let id: i64 = create.query_row([name], |r| r.get(0))?;
            names.packages.insert(name, id);
            names.created_packages.push((name, id));
        }
        Ok(names)
    }
}

/// A message's ids once its names are resolved.
struct Resolved {
    topic_id: i64,
    users: Vec<i64>,
    packages: Vec<i64>,
}

impl Store for SqliteStore {
    fn insert_batch(&self, batch: &[NewMessage]) -> Result<BatchReport, StoreError> {
        let mut report = BatchReport::default();
        if batch.is_empty() {
            return Ok(report);
        }
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let writer = &mut *guard;
        let tx = writer
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Holding the write lock now: anything another process committed is
        // visible and nothing more can arrive, so catching up here makes the
        // duplicate check below exact.
        let version: i64 = tx.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if version != writer.data_version {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            catch_up(&tx, &mut index)?;
        }
        let names = self.resolve_names(&tx, batch)?;
        let mut added: Vec<(i64, u64, f64, Resolved)> = Vec::with_capacity(batch.len());
        {
            // Duplicates are found in memory (comparing the stored msg_id on a hash
            // match), then the new rows get ids and go in with multi-row INSERTs.
            let mut stored_id = tx.prepare_cached("SELECT msg_id FROM messages WHERE id = ?1")?;
            let mut next_id: i64 = tx
                .prepare_cached("SELECT coalesce(max(id), 0) + 1 FROM messages")?
                .query_row([], |r| r.get(0))?;
            let mut in_batch: HashSet<&str> = HashSet::with_capacity(batch.len());
            let mut rows: Vec<(i64, u64, i64, &NewMessage)> = Vec::with_capacity(batch.len());
            let mut user_links: Vec<(i64, i64)> = Vec::new();
            let mut package_links: Vec<(i64, i64)> = Vec::new();
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            for m in batch {
                let Some(&topic_id) = names.topics.get(m.topic.as_str()) else {
                    continue;
                };
                let hash = msg_hash(&m.msg_id);
                let mut duplicate = !in_batch.insert(m.msg_id.as_str());
                for row in index.rows_with_hash(hash) {
                    if duplicate {
                        break;
                    }
                    let known: Option<String> =
                        stored_id.query_row([row], |r| r.get(0)).optional()?;
                    duplicate = known.as_deref() == Some(m.msg_id.as_str());
                }
                if duplicate {
                    report.duplicates += 1;
                    continue;
                }
                let id = next_id;
                next_id += 1;
                let mut resolved = Resolved {
                    topic_id,
                    users: Vec::with_capacity(m.users.len()),
                    packages: Vec::with_capacity(m.packages.len()),
                };
                for name in &m.users {
                    if let Some(&uid) = names.users.get(name.as_str()) {
                        user_links.push((id, uid));
                        resolved.users.push(uid);
                    }
                }
                for name in &m.packages {
                    if let Some(&pid) = names.packages.get(name.as_str()) {
                        package_links.push((id, pid));
                        resolved.packages.push(pid);
                    }
                }
                rows.push((id, hash, topic_id, m));
                report.stored += 1;
                added.push((id, hash, m.timestamp, resolved));
            }
            drop(index);
            insert_rows(&tx, &rows)?;
            insert_links(&tx, "user_messages", "user_id", &user_links)?;
            insert_links(&tx, "package_messages", "package_id", &package_links)?;
        }
        let version: i64 = tx.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        tx.commit()?;
        writer.data_version = version;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for (name, category, id) in &names.created_topics {
            index.add_topic(name, category, *id);
        }
        for (name, id) in &names.created_users {
            index.add_user(name, *id);
        }
        for (name, id) in &names.created_packages {
            index.add_package(name, *id);
        }
        for (id, hash, timestamp, r) in &added {
            index.add_row(&IndexedRow {
                id: *id,
                hash: *hash,
                topic_id: r.topic_id,
                timestamp: *timestamp,
                users: &r.users,
                packages: &r.packages,
            });
        }
        // A snapshot now and then bounds what an open after a crash catches up.
        let since = index.max_row() - self.saved_max_row.load(AtomicOrdering::Relaxed).max(0);
        if since >= self.options.snapshot_every_rows as i64 {
            if let Err(e) = self.save_snapshot_locked(&writer.conn, &mut index) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot save the index snapshot");
            }
        }
        Ok(report)
    }

    fn grep(&self, filter: &Filter) -> Result<Page, StoreError> {
        let window = filter.window()?;
        if !filter.contains.is_empty() {
            return self.grep_sql(filter);
        }
        self.with_reader(|conn| {
            let (total, ids) = {
                let index = self.index.read().unwrap_or_else(|p| p.into_inner());
                if !index.usable() {
                    drop(index);
                    return self.grep_sql(filter);
                }
                let rows = index.select(filter, window);
                let total = index.count_selected(&rows, window);
                let ids = index.page_selected(
                    &rows,
                    window,
                    filter.order,
                    filter.offset(),
                    u64::from(filter.rows_per_page),
                    total,
                );
                (total, ids)
            };
            let messages = self.fetch(conn, &ids, filter.max_page_bytes)?;
            Ok(Page::new(total, filter.rows_per_page, messages))
        })
    }

    fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
        let window = filter.window()?;
        if filter.contains.is_empty() {
            let index = self.index_for_query()?;
            if index.usable() {
                return Ok(index.count_selected(&index.select(filter, window), window));
            }
        }
        let (clause, args) = sql_where(filter, window);
        self.with_reader(|conn| {
            let n: i64 = conn
                .prepare_cached(&format!(
                    "SELECT count(*) FROM messages m JOIN topic t ON t.id = m.topic_id {clause}"
                ))?
                .query_row(params_from_iter(args.iter().map(SqlValue)), |r| r.get(0))?;
            Ok(n as u64)
        })
    }

    fn get(&self, msg_id: &str) -> Result<Option<StoredMessage>, StoreError> {
        self.with_reader(|conn| {
            let rows = {
                let index = self.index.read().unwrap_or_else(|p| p.into_inner());
                index
                    .usable()
                    .then(|| index.rows_with_hash(msg_hash(msg_id)))
            };
            let found = match rows {
                Some(rows) => self
                    .fetch(conn, &rows, None)?
                    .into_iter()
                    .find(|m| m.msg_id == msg_id),
                None => conn
                    .prepare_cached(&format!(
                        "SELECT {ROW_COLUMNS} FROM messages m JOIN topic t ON t.id = m.topic_id
                         WHERE m.msg_id = ?1"
                    ))?
                    .query_row([msg_id], raw_row)
                    .optional()?
                    .map(RawRow::decode)
                    .transpose()?,
            };
            Ok(found)
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn import_checkpoint(&self, source: &str) -> Result<Option<i64>, StoreError> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(writer
            .conn
            .query_row(
                "SELECT last_id FROM imports WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn save_import_checkpoint(&self, source: &str, last_id: i64) -> Result<(), StoreError> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.conn.execute(
            "INSERT INTO imports (source, last_id) VALUES (?1, ?2)
             ON CONFLICT (source) DO UPDATE SET last_id = excluded.last_id",
            rusqlite::params![source, last_id],
        )?;
        Ok(())
    }

    fn save_index(&self) -> Result<(), StoreError> {
        self.save_index_snapshot().map(|_| ())
    }

    fn message_count(&self) -> Result<u64, StoreError> {
        {
            let index = self.index_for_query()?;
            if index.usable() {
                return Ok(index.len());
            }
        }
        self.with_reader(|conn| {
            let n: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
            Ok(n as u64)
        })
    }
}
