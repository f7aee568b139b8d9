//! The PostgreSQL backend, [`PgStore`]: the store several hubs share.
//!
//! Every hub writing to one server inserts into the same tables (see
//! [`crate::schema::POSTGRES_V1`]), so no hub can know from memory what the
//! others stored: every query (`/raw`, `/id`, `/messagecount`, counts for other
//! consumers) is answered by SQL on the server's indexes, at the moment it is
//! asked, and sees every hub's committed messages.
//!
//! What a hub caches is only what cannot change: the ids of topic, user and
//! package names. A name's row is never updated or deleted once inserted, so a
//! cached id stays right; a name not in the cache is inserted (`ON CONFLICT DO
//! NOTHING`, so two hubs adding it at once agree on one row) and read back. An
//! id learnt inside a transaction is cached only after that transaction
//! commits. Nothing else is cached: no counts, no pages, no `msg_id`s.
//!
//! Writes are idempotent. A batch's new names are committed first, in a
//! short transaction of their own. Its messages are then written in parts,
//! contiguous in `(timestamp, msg_id)` order, each part one transaction on its own
//! connection, the parts at once (one per core, up to four; one for small
//! batches): a PostgreSQL backend is one process, so a single connection
//! keeps one server core busy whatever the batch size. A part inserts its
//! messages with one multi-row `INSERT … ON CONFLICT (msg_id) DO NOTHING
//! RETURNING id`, the bridge rows of the messages it stored, its running
//! counts and the message count. A message another hub (or an earlier
//! attempt of a batch whose commit was lost, or a part that committed before
//! another failed) already stored is skipped and counted as a duplicate, so a
//! retried batch stores each message once. Rows are inserted in `(timestamp,
//! msg_id)` order and names and counts in key order, so parts and hubs writing at once
//! wait for each other rather than deadlock (a deadlock or serialization
//! failure would be retried anyway).
//!
//! Queries are planned in [`crate::pg_query`]: names resolved to ids in the
//! query's snapshot, counts from running counts and index ranges, pages
//! merged from ordered index ranges. `total` and the page are read in one
//! read-only `REPEATABLE READ` transaction, so they agree. The running counts
//! are added to in each batch's transaction, so they agree with the rows.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::RwLock;

use fedhub_storage::postgres::{IsolationLevel, Row, Transaction};
use fedhub_storage::{Backend, Connection, Database, DatabaseUrl, PoolOptions};

use crate::filter::{Filter, Page, StoredMessage};
use crate::pg_query;
use crate::schema;
use crate::sqlite::RawRow;
use crate::store::{BatchReport, NewMessage, Store, StoreError};

/// Name ids learnt from the server (they never change once given).
#[derive(Default)]
struct Names {
    topics: HashMap<String, i32>,
    users: HashMap<String, i32>,
    packages: HashMap<String, i32>,
}

/// The ids of a batch's names.
struct NameIds {
    topics: HashMap<String, i32>,
    users: HashMap<String, i32>,
    packages: HashMap<String, i32>,
}

/// How many transactions, on as many connections, write a batch of `rows`
/// messages: one per core (at most 4), and one for small batches, where the
/// connections would cost more than they give.
fn write_parts(rows: usize) -> usize {
    const MIN_PART: usize = 1000;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    (rows / MIN_PART).clamp(1, cores)
}

/// The PostgreSQL [`Store`].
pub struct PgStore {
    database: Database,
    names: RwLock<Names>,
}

/// Columns of a message row, in [`RawRow`] order.
const ROW_COLUMNS: &str = "m.id, m.msg_id, m.i, t.name, t.category, m.timestamp, m.username, \
     m.crypto, m.certificate, m.signature, m.msg, m.headers, m.extra";

impl PgStore {
    /// Connects to `url` (checking the server, credentials and version) and
    /// brings the history schema up to date. `registry` receives the storage
    /// metrics of the consumer `Nommer`.
    pub fn open(
        url: &DatabaseUrl,
        options: &PoolOptions,
        registry: &prometheus::Registry,
    ) -> Result<PgStore, StoreError> {
        let database = Database::open(url, crate::consumer::NAME, options, registry)
            .map_err(|e| StoreError::open(url, e))?;
        let report = database
            .migrate(&schema::migrations())
            .map_err(|e| StoreError::open(url, e))?;
        tracing::info!(
            database = %url,
            schema_version = report.to,
            "history database open"
        );
        Ok(PgStore {
            database,
            names: RwLock::new(Names::default()),
        })
    }

    /// The database handle (its URL, pool and storage metrics).
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Runs `f` on a pooled client.
    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut fedhub_storage::postgres::Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.database.connection()? {
            Connection::Postgres(mut client) => f(&mut client),
            Connection::Sqlite(_) => unreachable!("a postgres:// URL opens a PostgreSQL pool"),
        }
    }

    /// Runs `f` in a read-only REPEATABLE READ transaction: one snapshot.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_client(|client| {
            let mut tx = client
                .build_transaction()
                .read_only(true)
                .isolation_level(IsolationLevel::RepeatableRead)
                .start()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// Writes one part of a batch (messages, their bridge rows, the running
    /// counts) in one transaction; returns how many messages were new.
    fn write_part(&self, rows: &[&NewMessage], ids: &NameIds) -> Result<u64, StoreError> {
        let (topic_ids, user_ids, package_ids) = (&ids.topics, &ids.users, &ids.packages);
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            let n = rows.len();
            let mut msg_ids = Vec::with_capacity(n);
            let mut seq = Vec::with_capacity(n);
            let mut topic_col = Vec::with_capacity(n);
            let mut times = Vec::with_capacity(n);
            let mut usernames = Vec::with_capacity(n);
            let mut cryptos = Vec::with_capacity(n);
            let mut certificates = Vec::with_capacity(n);
            let mut signatures = Vec::with_capacity(n);
            let mut msgs = Vec::with_capacity(n);
            let mut headers = Vec::with_capacity(n);
            let mut extras = Vec::with_capacity(n);
            for m in rows {
                msg_ids.push(m.msg_id.as_str());
                seq.push(m.i);
                topic_col.push(topic_ids[m.topic.as_str()]);
                times.push(m.timestamp);
                usernames.push(m.username.as_deref());
                cryptos.push(m.crypto.as_deref());
                certificates.push(m.certificate.as_deref());
                signatures.push(m.signature.as_deref());
                msgs.push(m.msg.as_str());
                headers.push(m.headers.as_deref());
                extras.push(m.extra.as_deref());
            }
            let inserted = tx.query(
                "INSERT INTO history_messages (msg_id, i, topic_id, timestamp, username, crypto,
                     certificate, signature, msg, headers, extra)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[], $4::float8[],
                     $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                     $11::text[])
                 ON CONFLICT (msg_id) DO NOTHING
                 RETURNING id, msg_id",
                &[
                    &msg_ids,
                    &seq,
                    &topic_col,
                    &times,
                    &usernames,
                    &cryptos,
                    &certificates,
                    &signatures,
                    &msgs,
                    &headers,
                    &extras,
                ],
            )?;
            let mut new_ids: HashMap<String, i64> = HashMap::with_capacity(inserted.len());
            for row in &inserted {
                new_ids.insert(row.try_get(1)?, row.try_get(0)?);
            }
            for (names, ids, table, column) in [
                (
                    &user_ids,
                    rows.iter().map(|m| &m.users).collect::<Vec<_>>(),
                    "history_user_messages",
                    "user_id",
                ),
                (
                    &package_ids,
                    rows.iter().map(|m| &m.packages).collect::<Vec<_>>(),
                    "history_package_messages",
                    "package_id",
                ),
            ] {
                let mut name_col: Vec<i32> = Vec::new();
                let mut topic_col: Vec<i32> = Vec::new();
                let mut time_col: Vec<f64> = Vec::new();
                let mut msg_col: Vec<i64> = Vec::new();
                for (m, list) in rows.iter().zip(ids) {
                    let Some(&msg) = new_ids.get(&m.msg_id) else {
                        continue;
                    };
                    let unique: BTreeSet<&String> = list.iter().collect();
                    for name in unique {
                        if let Some(&id) = names.get(name.as_str()) {
                            name_col.push(id);
                            topic_col.push(topic_ids[m.topic.as_str()]);
                            time_col.push(m.timestamp);
                            msg_col.push(msg);
                        }
                    }
                }
                if !name_col.is_empty() {
                    tx.execute(
                        &format!(
                            "INSERT INTO {table} ({column}, topic_id, timestamp, msg)
                             SELECT * FROM unnest($1::int4[], $2::int4[], $3::float8[], $4::int8[])"
                        ),
                        &[&name_col, &topic_col, &time_col, &msg_col],
                    )?;
                }
            }
            let counts = RunningCounts::of(rows, &new_ids, topic_ids, user_ids, package_ids);
            counts.add(&mut tx)?;
            let stored = new_ids.len() as i64;
            if stored > 0 {
                tx.execute(
                    "UPDATE history_stats SET messages = messages + $1 WHERE id = 1",
                    &[&stored],
                )?;
            }
            tx.commit()?;
            Ok(stored as u64)
        })
    }

    /// The ids of `wanted` names in `table`, creating the missing ones (with
    /// their category, for topics). Returns the ids and the names learnt.
    fn resolve(
        tx: &mut Transaction<'_>,
        table: &str,
        cached: &HashMap<String, i32>,
        wanted: &BTreeMap<&str, &str>,
        with_category: bool,
    ) -> Result<HashMap<String, i32>, StoreError> {
        let mut ids: HashMap<String, i32> = HashMap::with_capacity(wanted.len());
        let mut missing: Vec<String> = Vec::new();
        let mut categories: Vec<String> = Vec::new();
        for (name, category) in wanted {
            match cached.get(*name) {
                Some(id) => {
                    ids.insert((*name).to_string(), *id);
                }
                None => {
                    missing.push((*name).to_string());
                    categories.push((*category).to_string());
                }
            }
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        // In name order (BTreeMap), so concurrent hubs lock names in one order.
        if with_category {
            tx.execute(
                &format!(
                    "INSERT INTO {table} (name, category)
                     SELECT * FROM unnest($1::text[], $2::text[])
                     ON CONFLICT (name) DO NOTHING"
                ),
                &[&missing, &categories],
            )?;
        } else {
            tx.execute(
                &format!(
                    "INSERT INTO {table} (name) SELECT * FROM unnest($1::text[])
                     ON CONFLICT (name) DO NOTHING"
                ),
                &[&missing],
            )?;
        }
        for row in tx.query(
            &format!("SELECT id, name FROM {table} WHERE name = ANY($1)"),
            &[&missing],
        )? {
            ids.insert(row.try_get(1)?, row.try_get(0)?);
        }
        Ok(ids)
    }
}

fn raw_row(row: &Row) -> Result<RawRow, StoreError> {
    Ok(RawRow {
        id: row.try_get(0)?,
        msg_id: row.try_get(1)?,
        i: row.try_get(2)?,
        topic: row.try_get(3)?,
        category: row.try_get(4)?,
        timestamp: row.try_get(5)?,
        username: row.try_get(6)?,
        crypto: row.try_get(7)?,
        certificate: row.try_get(8)?,
        signature: row.try_get(9)?,
        msg: row.try_get(10)?,
        headers: row.try_get(11)?,
        extra: row.try_get(12)?,
    })
}

impl Store for PgStore {
    fn insert_batch(&self, batch: &[NewMessage]) -> Result<BatchReport, StoreError> {
        let mut report = BatchReport::default();
        if batch.is_empty() {
            return Ok(report);
        }
        // One row per msg_id, in (timestamp, msg_id) order: the lock order of
        // every hub (the same messages sort the same everywhere), and the
        // order the history is read in, so a time window's rows sit together.
        let mut seen: HashSet<&str> = HashSet::with_capacity(batch.len());
        let mut rows: Vec<&NewMessage> = batch
            .iter()
            .filter(|m| seen.insert(m.msg_id.as_str()))
            .collect();
        report.duplicates = (batch.len() - rows.len()) as u64;
        rows.sort_by(|a, b| {
            a.timestamp
                .total_cmp(&b.timestamp)
                .then_with(|| a.msg_id.cmp(&b.msg_id))
        });

        let mut topics: BTreeMap<&str, &str> = BTreeMap::new();
        let mut users: BTreeMap<&str, &str> = BTreeMap::new();
        let mut packages: BTreeMap<&str, &str> = BTreeMap::new();
        for m in &rows {
            topics.insert(&m.topic, &m.category);
            users.extend(m.users.iter().map(|u| (u.as_str(), "")));
            packages.extend(m.packages.iter().map(|p| (p.as_str(), "")));
        }
        // Names first, in a short transaction of their own: the parts below
        // then only read them, and never wait for each other's new names.
        let (topic_ids, user_ids, package_ids) = self.with_client(|client| {
            let mut tx = client.transaction()?;
            let ids = {
                let cache = self.names.read().unwrap_or_else(|p| p.into_inner());
                (
                    Self::resolve(&mut tx, "history_topics", &cache.topics, &topics, true)?,
                    Self::resolve(&mut tx, "history_users", &cache.users, &users, false)?,
                    Self::resolve(
                        &mut tx,
                        "history_packages",
                        &cache.packages,
                        &packages,
                        false,
                    )?,
                )
            };
            tx.commit()?;
            Ok(ids)
        })?;
        {
            let mut cache = self.names.write().unwrap_or_else(|p| p.into_inner());
            cache
                .topics
                .extend(topic_ids.iter().map(|(k, v)| (k.clone(), *v)));
            cache
                .users
                .extend(user_ids.iter().map(|(k, v)| (k.clone(), *v)));
            cache
                .packages
                .extend(package_ids.iter().map(|(k, v)| (k.clone(), *v)));
        }
        let ids = NameIds {
            topics: topic_ids,
            users: user_ids,
            packages: package_ids,
        };
        // The messages in parts, each a transaction on its own connection, run
        // at once: one PostgreSQL backend writes a part while another writes
        // the next (a single connection keeps one server core busy and leaves
        // the others idle). Parts are contiguous in (timestamp, msg_id) order and every part
        // takes its row locks in key order, so concurrent parts, and other
        // hubs, wait for each other rather than deadlock.
        let parts = write_parts(rows.len());
        let chunk = rows.len().div_ceil(parts);
        let results: Vec<Result<u64, StoreError>> = if parts == 1 {
            vec![self.write_part(&rows, &ids)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = rows
                    .chunks(chunk)
                    .map(|part| scope.spawn(|| self.write_part(part, &ids)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };
        let mut stored = 0;
        for r in results {
            stored += r?;
        }
        report.stored = stored;
        report.duplicates += rows.len() as u64 - stored;
        Ok(report)
    }

    fn grep(&self, filter: &Filter) -> Result<Page, StoreError> {
        let window = filter.window()?;
        self.read(|tx| {
            let resolved = pg_query::resolve(tx, filter)?;
            let total = pg_query::count(tx, &resolved, window)?;
            let keys = pg_query::page_keys(&resolved, window, filter);
            let Some((keys, query)) = keys.filter(|_| total > filter.offset()) else {
                return Ok(Page::new(total, filter.rows_per_page, Vec::new()));
            };
            let order = filter.order.as_str();
            let page = format!(
                "({keys}) k JOIN history_messages m ON m.id = k.id
                 JOIN history_topics t ON t.id = m.topic_id"
            );
            if let Some(max_bytes) = filter.max_page_bytes {
                // The page's stored text, summed by the server before a row is
                // read: a page past the limit is refused without reading it.
                let bytes: i64 = tx
                    .query_one(
                        &format!(
                            "SELECT COALESCE(sum(octet_length(m.msg) + octet_length(t.name)
                                 + COALESCE(octet_length(m.certificate), 0)
                                 + COALESCE(octet_length(m.signature), 0)
                                 + COALESCE(octet_length(m.headers), 0)
                                 + COALESCE(octet_length(m.extra), 0)), 0)::BIGINT
                             FROM {page}"
                        ),
                        &query.refs(),
                    )?
                    .try_get(0)?;
                if bytes as u64 > max_bytes {
                    return Err(StoreError::PageTooLarge { limit: max_bytes });
                }
            }
            let rows = tx.query(
                &format!("SELECT {ROW_COLUMNS} FROM {page} ORDER BY k.ts {order}, k.id {order}"),
                &query.refs(),
            )?;
            let messages = rows
                .iter()
                .map(|r| raw_row(r)?.decode())
                .collect::<Result<Vec<StoredMessage>, StoreError>>()?;
            Ok(Page::new(total, filter.rows_per_page, messages))
        })
    }

    fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
        let window = filter.window()?;
        self.read(|tx| {
            let resolved = pg_query::resolve(tx, filter)?;
            pg_query::count(tx, &resolved, window)
        })
    }

    fn get(&self, msg_id: &str) -> Result<Option<StoredMessage>, StoreError> {
        self.with_client(|client| {
            client
                .query_opt(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM history_messages m
                         JOIN history_topics t ON t.id = m.topic_id WHERE m.msg_id = $1"
                    ),
                    &[&msg_id],
                )?
                .map(|row| raw_row(&row)?.decode())
                .transpose()
        })
    }

    fn message_count(&self) -> Result<u64, StoreError> {
        self.with_client(|client| {
            let n: i64 = client
                .query_one("SELECT messages FROM history_stats WHERE id = 1", &[])?
                .try_get(0)?;
            Ok(n.max(0) as u64)
        })
    }

    fn location(&self) -> String {
        self.database.url().to_string()
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn import_checkpoint(&self, source: &str) -> Result<Option<i64>, StoreError> {
        self.with_client(|client| {
            Ok(client
                .query_opt(
                    "SELECT last_id FROM history_imports WHERE source = $1",
                    &[&source],
                )?
                .map(|row| row.try_get(0))
                .transpose()?)
        })
    }

    fn save_import_checkpoint(&self, source: &str, last_id: i64) -> Result<(), StoreError> {
        self.with_client(|client| {
            client.execute(
                "INSERT INTO history_imports (source, last_id) VALUES ($1, $2)
                 ON CONFLICT (source) DO UPDATE SET last_id = excluded.last_id",
                &[&source, &last_id],
            )?;
            Ok(())
        })
    }
}

/// What one batch adds to the running counts (see
/// [`crate::schema::POSTGRES_V3`]), keyed in order so that hubs adding to the
/// same rows lock them in one order.
#[derive(Default)]
struct RunningCounts {
    topics: BTreeMap<i32, i64>,
    user_topics: BTreeMap<(i32, i32), i64>,
    package_topics: BTreeMap<(i32, i32), i64>,
    user_packages: BTreeMap<(i32, i32), i64>,
}

impl RunningCounts {
    /// The counts of the messages of `rows` that were stored (`stored`).
    fn of(
        rows: &[&NewMessage],
        stored: &HashMap<String, i64>,
        topic_ids: &HashMap<String, i32>,
        user_ids: &HashMap<String, i32>,
        package_ids: &HashMap<String, i32>,
    ) -> RunningCounts {
        let mut counts = RunningCounts::default();
        for m in rows.iter().filter(|m| stored.contains_key(&m.msg_id)) {
            let topic = topic_ids[m.topic.as_str()];
            *counts.topics.entry(topic).or_default() += 1;
            let users: BTreeSet<i32> = m
                .users
                .iter()
                .filter_map(|u| user_ids.get(u.as_str()).copied())
                .collect();
            let packages: BTreeSet<i32> = m
                .packages
                .iter()
                .filter_map(|p| package_ids.get(p.as_str()).copied())
                .collect();
            for &u in &users {
                *counts.user_topics.entry((u, topic)).or_default() += 1;
                for &p in &packages {
                    *counts.user_packages.entry((u, p)).or_default() += 1;
                }
            }
            for &p in &packages {
                *counts.package_topics.entry((p, topic)).or_default() += 1;
            }
        }
        counts
    }

    /// Adds them in the batch's transaction.
    fn add(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        if !self.topics.is_empty() {
            let (ids, n): (Vec<i32>, Vec<i64>) = self.topics.iter().map(|(k, v)| (*k, *v)).unzip();
            tx.execute(
                "INSERT INTO history_topic_counts (topic_id, messages)
                 SELECT * FROM unnest($1::int4[], $2::int8[])
                 ON CONFLICT (topic_id)
                 DO UPDATE SET messages = history_topic_counts.messages + EXCLUDED.messages",
                &[&ids, &n],
            )?;
        }
        for (table, columns, map) in [
            (
                "history_user_topic_counts",
                "user_id, topic_id",
                &self.user_topics,
            ),
            (
                "history_package_topic_counts",
                "package_id, topic_id",
                &self.package_topics,
            ),
            (
                "history_user_package_counts",
                "user_id, package_id",
                &self.user_packages,
            ),
        ] {
            if map.is_empty() {
                continue;
            }
            let mut a = Vec::with_capacity(map.len());
            let mut b = Vec::with_capacity(map.len());
            let mut n = Vec::with_capacity(map.len());
            for (&(x, y), &count) in map {
                a.push(x);
                b.push(y);
                n.push(count);
            }
            tx.execute(
                &format!(
                    "INSERT INTO {table} ({columns}, messages)
                     SELECT * FROM unnest($1::int4[], $2::int4[], $3::int8[])
                     ON CONFLICT ({columns})
                     DO UPDATE SET messages = {table}.messages + EXCLUDED.messages"
                ),
                &[&a, &b, &n],
            )?;
        }
        Ok(())
    }
}
