//! Storage through `fedhub-storage`: the schema (one migration history,
//! scope `statscache`), the batch the writer commits, and the queries the
//! API runs. SQLite and PostgreSQL run the same SQL.
//!
//! - `statscache_counts (ident, bucket, key, volume)`: one row per plugin,
//!   bucket end and key; a flush adds to `volume` (upsert).
//! - `statscache_latest (ident, category, category_constraint, timestamp,
//!   message)`: one row per key, replaced only by a newer event.
//! - `statscache_flushes (flush_id, committed_at)`: every committed flush,
//!   so a batch whose commit outcome was unknown and that the writer commits
//!   again is not added twice (adding is not idempotent by itself).

use fedhub::BacklogGuard;
use fedhub_storage::{Connection, Database, Migrations, StorageError, Tx};
use serde_json::Value;

use crate::plugin::{Shape, Update};

/// The migration scope (history table `fedhub_statscache_migrations`).
pub const SCOPE: &str = "statscache";

/// The schema.
pub fn migrations() -> Migrations {
    Migrations::new(SCOPE)
        .step(
            1,
            "create_counts",
            "CREATE TABLE statscache_counts (
                ident TEXT NOT NULL,
                bucket BIGINT NOT NULL,
                key TEXT NOT NULL,
                volume BIGINT NOT NULL,
                PRIMARY KEY (ident, bucket, key)
            );
            CREATE INDEX statscache_counts_by_key ON statscache_counts (ident, key, bucket);",
        )
        .step(
            2,
            "create_latest",
            "CREATE TABLE statscache_latest (
                ident TEXT NOT NULL,
                category TEXT NOT NULL,
                category_constraint TEXT NOT NULL,
                timestamp DOUBLE PRECISION NOT NULL,
                message TEXT NOT NULL,
                PRIMARY KEY (ident, category, category_constraint)
            );
            CREATE INDEX statscache_latest_by_time ON statscache_latest (ident, timestamp);",
        )
        .step(
            3,
            "create_flushes",
            "CREATE TABLE statscache_flushes (
                flush_id TEXT PRIMARY KEY,
                committed_at DOUBLE PRECISION NOT NULL
            );",
        )
}

/// One flush of every plugin: the writer's unit of work. The holds keep the
/// flushed messages in the consumer's backlog until this commits.
pub struct Flush {
    /// Unique per flush (a UUID).
    pub id: String,
    /// (ident, change) pairs.
    pub updates: Vec<(String, Update)>,
    /// The messages whose changes this holds, kept in the backlog until commit.
    pub holds: Vec<BacklogGuard>,
    /// How many messages it covers.
    pub messages: u64,
}

/// Makes a backend error into a [`StorageError`] naming the database and operation.
fn err<'a, E: Into<fedhub_storage::BackendError>>(
    url: &'a fedhub_storage::DatabaseUrl,
    op: &'static str,
) -> impl Fn(E) -> StorageError + 'a {
    move |e| StorageError::database(url, op, e)
}

/// SQLite takes `?N` where PostgreSQL takes `$N`.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

const MARK: &str = "INSERT INTO statscache_flushes (flush_id, committed_at) VALUES ($1, $2) ON CONFLICT (flush_id) DO NOTHING";
const ADD: &str = "INSERT INTO statscache_counts (ident, bucket, key, volume) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (ident, bucket, key) DO UPDATE SET volume = statscache_counts.volume + excluded.volume";
const SET_LATEST: &str =
    "INSERT INTO statscache_latest (ident, category, category_constraint, timestamp, message) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (ident, category, category_constraint) DO UPDATE \
     SET timestamp = excluded.timestamp, message = excluded.message \
     WHERE excluded.timestamp > statscache_latest.timestamp";
const FORGET_FLUSHES: &str = "DELETE FROM statscache_flushes WHERE committed_at < $1";

/// How long flush ids are remembered (a retried commit comes within seconds).
const FLUSH_MEMORY_SECS: f64 = 86_400.0;

/// Writes `flushes` in the transaction `tx`; returns (applied, already there).
pub fn write(
    database: &Database,
    tx: &mut Tx<'_>,
    flushes: &[Flush],
) -> Result<(u64, u64), StorageError> {
    let url = database.url();
    let now = now_secs();
    let (mut applied, mut duplicates) = (0, 0);
    match tx {
        Tx::Sqlite(tx) => {
            let op = "statscache write";
            let mut mark = tx.prepare_cached(&sqlite_sql(MARK)).map_err(err(url, op))?;
            let mut add = tx.prepare_cached(&sqlite_sql(ADD)).map_err(err(url, op))?;
            let mut set = tx
                .prepare_cached(&sqlite_sql(SET_LATEST))
                .map_err(err(url, op))?;
            for flush in flushes {
                if mark
                    .execute(rusqlite::params![flush.id, now])
                    .map_err(err(url, op))?
                    == 0
                {
                    duplicates += 1;
                    continue;
                }
                applied += 1;
                for (ident, update) in &flush.updates {
                    match update {
                        Update::Count {
                            bucket,
                            key,
                            add: n,
                        } => {
                            add.execute(rusqlite::params![ident, bucket, key, n])
                                .map_err(err(url, op))?;
                        }
                        Update::Latest {
                            category,
                            constraint,
                            timestamp,
                            message,
                        } => {
                            set.execute(rusqlite::params![
                                ident,
                                category,
                                constraint,
                                timestamp,
                                message.to_string()
                            ])
                            .map_err(err(url, op))?;
                        }
                    }
                }
            }
            tx.execute(&sqlite_sql(FORGET_FLUSHES), [now - FLUSH_MEMORY_SECS])
                .map_err(err(url, op))?;
        }
        Tx::Postgres(tx) => {
            let op = "statscache write";
            let mark = tx.prepare(MARK).map_err(err(url, op))?;
            let add = tx.prepare(ADD).map_err(err(url, op))?;
            let set = tx.prepare(SET_LATEST).map_err(err(url, op))?;
            for flush in flushes {
                if tx
                    .execute(&mark, &[&flush.id, &now])
                    .map_err(err(url, op))?
                    == 0
                {
                    duplicates += 1;
                    continue;
                }
                applied += 1;
                for (ident, update) in &flush.updates {
                    match update {
                        Update::Count {
                            bucket,
                            key,
                            add: n,
                        } => {
                            tx.execute(&add, &[ident, bucket, key, n])
                                .map_err(err(url, op))?;
                        }
                        Update::Latest {
                            category,
                            constraint,
                            timestamp,
                            message,
                        } => {
                            tx.execute(
                                &set,
                                &[ident, category, constraint, timestamp, &message.to_string()],
                            )
                            .map_err(err(url, op))?;
                        }
                    }
                }
            }
            tx.execute(FORGET_FLUSHES, &[&(now - FLUSH_MEMORY_SECS)])
                .map_err(err(url, op))?;
        }
    }
    Ok((applied, duplicates))
}

/// One stored row.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// A count (a volume plugin's row).
    Count {
        /// The bucket's end, Unix seconds.
        timestamp: i64,
        /// The key (`""` for a total).
        key: String,
        /// The count.
        volume: i64,
    },
    /// A latest value (the releng plugin's row).
    Latest {
        /// When, Unix seconds.
        timestamp: f64,
        /// The category.
        category: String,
        /// The constraint.
        constraint: String,
        /// The value.
        message: Value,
    },
}

impl Row {
    /// The row as JSON, with the shape's column names (`timestamp` in float
    /// seconds, as statscache's `to_json`).
    pub fn to_json(&self, shape: Shape) -> Value {
        match (self, shape) {
            (
                Row::Count {
                    timestamp,
                    key,
                    volume,
                },
                Shape::Counts { key: column },
            ) => {
                let mut map = serde_json::Map::new();
                map.insert("timestamp".into(), Value::from(*timestamp as f64));
                if let Some(column) = column {
                    map.insert(column.into(), Value::from(key.clone()));
                }
                map.insert("volume".into(), Value::from(*volume));
                Value::Object(map)
            }
            (
                Row::Latest {
                    timestamp,
                    category,
                    constraint,
                    message,
                },
                _,
            ) => serde_json::json!({
                "timestamp": timestamp,
                "category": category,
                "category_constraint": constraint,
                "message": message,
            }),
            (
                Row::Count {
                    timestamp,
                    key,
                    volume,
                },
                Shape::Latest,
            ) => serde_json::json!({
                "timestamp": *timestamp as f64, "key": key, "volume": volume,
            }),
        }
    }

    /// The row's timestamp.
    pub fn timestamp(&self) -> f64 {
        match self {
            Row::Count { timestamp, .. } => *timestamp as f64,
            Row::Latest { timestamp, .. } => *timestamp,
        }
    }
}

/// Ascending or descending by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the default).
    Desc,
}

/// A rows query.
#[derive(Debug, Clone, PartialEq)]
pub struct RowsQuery {
    /// Rows at or after (Unix seconds).
    pub start: Option<f64>,
    /// Rows at or before (Unix seconds).
    pub stop: f64,
    /// Only this key (`?user=ralph` on a by-user plugin).
    pub key: Option<String>,
    /// Order by timestamp.
    pub order: Order,
    /// Rows skipped.
    pub offset: u64,
    /// Most rows returned.
    pub length: u64,
}

/// Reads a plugin's rows.
pub struct Reader {
    database: Database,
}

impl Reader {
    /// Reads from `database`.
    pub fn new(database: Database) -> Reader {
        Reader { database }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    fn filter(shape: Shape, q: &RowsQuery) -> (String, String) {
        let (table, time) = match shape {
            Shape::Counts { .. } => ("statscache_counts", "bucket"),
            Shape::Latest => ("statscache_latest", "timestamp"),
        };
        let mut clause = format!("FROM {table} WHERE ident = $1 AND {time} >= $2 AND {time} <= $3");
        if q.key.is_some() {
            clause.push_str(match shape {
                Shape::Counts { .. } => " AND key = $4",
                Shape::Latest => " AND category = $4",
            });
        }
        (clause, time.to_string())
    }

    /// How many rows match `q` (paging aside), and the page it asks for.
    pub fn rows(
        &self,
        ident: &str,
        shape: Shape,
        q: &RowsQuery,
    ) -> Result<(u64, Vec<Row>), StorageError> {
        let (clause, time) = Reader::filter(shape, q);
        let order = match q.order {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        };
        let columns = match shape {
            Shape::Counts { .. } => "bucket, key, volume",
            Shape::Latest => "timestamp, category, category_constraint, message",
        };
        let second = match shape {
            Shape::Counts { .. } => "key",
            Shape::Latest => "category, category_constraint",
        };
        let count_sql = format!("SELECT COUNT(*) {clause}");
        let page_sql = format!(
            "SELECT {columns} {clause} ORDER BY {time} {order}, {second} LIMIT {} OFFSET {}",
            q.length, q.offset
        );
        self.run(ident, shape, q, &count_sql, &page_sql)
    }

    /// The latest values: for counts, the rows of the newest bucket; for
    /// latest values, every key's row (newest first).
    pub fn latest(
        &self,
        ident: &str,
        shape: Shape,
        key: Option<&str>,
        max_rows: u64,
    ) -> Result<Vec<Row>, StorageError> {
        let q = RowsQuery {
            start: None,
            stop: f64::MAX,
            key: key.map(str::to_string),
            order: Order::Desc,
            offset: 0,
            length: max_rows,
        };
        match shape {
            Shape::Latest => Ok(self.rows(ident, shape, &q)?.1),
            Shape::Counts { .. } => {
                let key_clause = if key.is_some() { " AND key = $4" } else { "" };
                let sql = format!(
                    "SELECT bucket, key, volume FROM statscache_counts WHERE ident = $1 AND bucket >= $2 AND bucket <= $3{key_clause} \
                     AND bucket = (SELECT MAX(bucket) FROM statscache_counts WHERE ident = $1{key_clause}) \
                     ORDER BY volume DESC, key LIMIT {max_rows}"
                );
                Ok(self.run(ident, shape, &q, "", &sql)?.1)
            }
        }
    }

    fn run(
        &self,
        ident: &str,
        shape: Shape,
        q: &RowsQuery,
        count_sql: &str,
        page_sql: &str,
    ) -> Result<(u64, Vec<Row>), StorageError> {
        let url = self.database.url();
        let op = "statscache query";
        let key = q.key.clone().unwrap_or_default();
        let start_f = q.start.unwrap_or(f64::MIN).max(-1e15);
        let stop_f = q.stop.min(1e15);
        // Buckets are whole seconds: a bound is rounded inwards.
        let (start_i, stop_i) = (start_f.ceil() as i64, stop_f.floor() as i64);
        let counts = matches!(shape, Shape::Counts { .. });
        match self.database.connection()? {
            Connection::Sqlite(conn) => {
                let mut params: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(ident.to_string())];
                if counts {
                    params.push(Box::new(start_i));
                    params.push(Box::new(stop_i));
                } else {
                    params.push(Box::new(start_f));
                    params.push(Box::new(stop_f));
                }
                if q.key.is_some() {
                    params.push(Box::new(key));
                }
                let params = rusqlite::params_from_iter(params.iter());
                let total: i64 = if count_sql.is_empty() {
                    0
                } else {
                    conn.prepare_cached(&sqlite_sql(count_sql))
                        .map_err(err(url, op))?
                        .query_row(params.clone(), |r| r.get(0))
                        .map_err(err(url, op))?
                };
                let mut stmt = conn
                    .prepare_cached(&sqlite_sql(page_sql))
                    .map_err(err(url, op))?;
                let rows = stmt
                    .query_map(params, |r| {
                        Ok(if counts {
                            Row::Count {
                                timestamp: r.get(0)?,
                                key: r.get(1)?,
                                volume: r.get(2)?,
                            }
                        } else {
                            let text: String = r.get(3)?;
                            Row::Latest {
                                timestamp: r.get(0)?,
                                category: r.get(1)?,
                                constraint: r.get(2)?,
                                message: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                            }
                        })
                    })
                    .map_err(err(url, op))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err(url, op))?;
                Ok((total as u64, rows))
            }
            Connection::Postgres(mut client) => {
                let ident = ident.to_string();
                let mut params: Vec<&(dyn fedhub_storage::postgres::types::ToSql + Sync)> =
                    vec![&ident];
                if counts {
                    params.push(&start_i);
                    params.push(&stop_i);
                } else {
                    params.push(&start_f);
                    params.push(&stop_f);
                }
                if q.key.is_some() {
                    params.push(&key);
                }
                let total: i64 = if count_sql.is_empty() {
                    0
                } else {
                    client
                        .query_one(count_sql, &params)
                        .map_err(err(url, op))?
                        .get(0)
                };
                let rows = client
                    .query(page_sql, &params)
                    .map_err(err(url, op))?
                    .into_iter()
                    .map(|r| {
                        if counts {
                            Row::Count {
                                timestamp: r.get(0),
                                key: r.get(1),
                                volume: r.get(2),
                            }
                        } else {
                            let text: String = r.get(3);
                            Row::Latest {
                                timestamp: r.get(0),
                                category: r.get(1),
                                constraint: r.get(2),
                                message: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                            }
                        }
                    })
                    .collect();
                Ok((total as u64, rows))
            }
        }
    }

    /// The newest bucket end stored for a counts plugin.
    pub fn last_bucket(&self, ident: &str) -> Result<Option<i64>, StorageError> {
        self.scalar_i64(
            "SELECT MAX(bucket) FROM statscache_counts WHERE ident = $1",
            ident,
        )
    }

    /// The newest timestamp stored for a latest-values plugin.
    pub fn last_timestamp(&self, ident: &str) -> Result<Option<f64>, StorageError> {
        let url = self.database.url();
        let op = "statscache query";
        let sql = "SELECT MAX(timestamp) FROM statscache_latest WHERE ident = $1";
        match self.database.connection()? {
            Connection::Sqlite(conn) => conn
                .query_row(&sqlite_sql(sql), [ident], |r| r.get(0))
                .map_err(err(url, op)),
            Connection::Postgres(mut client) => Ok(client
                .query_one(sql, &[&ident])
                .map_err(err(url, op))?
                .get(0)),
        }
    }

    fn scalar_i64(&self, sql: &str, ident: &str) -> Result<Option<i64>, StorageError> {
        let url = self.database.url();
        let op = "statscache query";
        match self.database.connection()? {
            Connection::Sqlite(conn) => conn
                .query_row(&sqlite_sql(sql), [ident], |r| r.get(0))
                .map_err(err(url, op)),
            Connection::Postgres(mut client) => Ok(client
                .query_one(sql, &[&ident])
                .map_err(err(url, op))?
                .get(0)),
        }
    }

    /// Deletes a counts plugin's buckets ending at or after `from` (the
    /// backfill recomputes them).
    pub fn revert_counts(&self, ident: &str, from: i64) -> Result<u64, StorageError> {
        let url = self.database.url().clone();
        let sql = "DELETE FROM statscache_counts WHERE ident = $1 AND bucket >= $2";
        self.database.transaction(|tx| {
            let (url, op) = (&url, "statscache revert");
            Ok(match tx {
                Tx::Sqlite(tx) => tx
                    .execute(&sqlite_sql(sql), rusqlite::params![ident, from])
                    .map_err(err(url, op))? as u64,
                Tx::Postgres(tx) => tx.execute(sql, &[&ident, &from]).map_err(err(url, op))?,
            })
        })
    }
}

use fedhub_storage::rusqlite;
