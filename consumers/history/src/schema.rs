//! The history store's schema on each backend, as `fedhub_storage`
//! migrations (scope `nommer`, history table `fedhub_nommer_migrations`).
//!
//! Version 1 on SQLite is the schema fedhub created before migrations existed
//! (it kept its version in `PRAGMA user_version`). Its statements are written
//! `IF NOT EXISTS`, so a file made then is adopted as version 1 unchanged:
//! [`check_sqlite_baseline`] first makes sure such a file really is one
//! (fedhub's columns, a version this binary knows), and migration 1 then only
//! records it. `user_version` stays 1 so older binaries still open the file.
//!
//! Version 2 adds where imports from another database resume (`imports`,
//! `history_imports`).
//!
//! PostgreSQL has its own version 1, designed for several hubs writing one set
//! of tables and for answering datagrepper's queries with SQL alone (see
//! [`crate::postgres`]).

use fedhub_storage::Migrations;

/// The migration scope (and so `fedhub_nommer_migrations`).
pub const SCOPE: &str = "nommer";

/// The SQLite schema of version 1 (the one fedhub used before migrations).
pub const SQLITE_V1: &str = "
CREATE TABLE IF NOT EXISTS topic (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS user (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS package (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL,
    msg_hash INTEGER NOT NULL,
    i INTEGER NOT NULL DEFAULT 0,
    topic_id INTEGER NOT NULL REFERENCES topic(id),
    timestamp REAL NOT NULL,
    username TEXT,
    crypto TEXT,
    certificate TEXT,
    signature TEXT,
    msg TEXT NOT NULL,
    headers TEXT,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS messages_timestamp ON messages(timestamp, topic_id, msg_hash);
CREATE TABLE IF NOT EXISTS user_messages (
    msg INTEGER NOT NULL REFERENCES messages(id),
    user_id INTEGER NOT NULL REFERENCES user(id),
    PRIMARY KEY (msg, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS package_messages (
    msg INTEGER NOT NULL REFERENCES messages(id),
    package_id INTEGER NOT NULL REFERENCES package(id),
    PRIMARY KEY (msg, package_id)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS messages_view AS
    SELECT m.id, m.msg_id, m.i, t.name AS topic, t.category AS category, m.timestamp,
           m.username, m.crypto, m.certificate, m.signature, m.msg AS _msg,
           m.headers AS _headers, m.extra
    FROM messages m JOIN topic t ON t.id = m.topic_id;
PRAGMA user_version = 1;
";

/// The PostgreSQL schema of version 1.
///
/// - `history_messages`: one row per message, `msg_id` UNIQUE (a second
///   insert of a message, from this hub or another, is skipped with
///   `ON CONFLICT DO NOTHING` and counted as a duplicate); `(timestamp, id)`
///   serves windows, ordering and paging of unfiltered queries, and
///   `(topic_id, timestamp, id)` those filtered by topic or category (a
///   category is the set of its topics' ids).
/// - `history_topics`, `history_users`, `history_packages`: names coded as
///   integers; their ids never change once given, so a hub may cache them.
/// - `history_user_messages`, `history_package_messages`: the bridge rows,
///   keyed `(user_id, timestamp, msg)` so a user's or package's messages in a
///   window are one index range, newest or oldest first; `(msg)` serves the
///   `EXISTS` probes from a message (`not_user`, and users beside other filters).
/// - `history_stats`: the exact message count, updated in each batch's
///   transaction, so `/messagecount` is one row read however large the table.
pub const POSTGRES_V1: &str = "
CREATE TABLE history_topics (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL
);
CREATE INDEX history_topics_category ON history_topics (category);
CREATE TABLE history_users (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE history_packages (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE history_messages (
    id BIGSERIAL PRIMARY KEY,
    msg_id TEXT NOT NULL UNIQUE,
    i BIGINT NOT NULL DEFAULT 0,
    topic_id INTEGER NOT NULL REFERENCES history_topics (id),
    timestamp DOUBLE PRECISION NOT NULL,
    username TEXT,
    crypto TEXT,
    certificate TEXT,
    signature TEXT,
    msg TEXT NOT NULL,
    headers TEXT,
    extra TEXT
);
CREATE INDEX history_messages_time ON history_messages (timestamp, id);
CREATE INDEX history_messages_topic_time ON history_messages (topic_id, timestamp, id);
CREATE TABLE history_user_messages (
    user_id INTEGER NOT NULL REFERENCES history_users (id),
    timestamp DOUBLE PRECISION NOT NULL,
    msg BIGINT NOT NULL REFERENCES history_messages (id),
    PRIMARY KEY (user_id, timestamp, msg)
);
CREATE INDEX history_user_messages_msg ON history_user_messages (msg);
CREATE TABLE history_package_messages (
    package_id INTEGER NOT NULL REFERENCES history_packages (id),
    timestamp DOUBLE PRECISION NOT NULL,
    msg BIGINT NOT NULL REFERENCES history_messages (id),
    PRIMARY KEY (package_id, timestamp, msg)
);
CREATE INDEX history_package_messages_msg ON history_package_messages (msg);
CREATE TABLE history_stats (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    messages BIGINT NOT NULL
);
INSERT INTO history_stats (id, messages) VALUES (1, 0);
";

/// Version 2 on SQLite: where imports from other databases resume.
pub const SQLITE_V2: &str = "
CREATE TABLE IF NOT EXISTS imports (
    source TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
);
";

/// Version 2 on PostgreSQL: where imports from other databases resume.
pub const POSTGRES_V2: &str = "
CREATE TABLE history_imports (
    source TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL
);
";

/// Version 3 on SQLite: nothing (its queries are answered from the hub's
/// in-memory index, which holds what these PostgreSQL tables hold).
pub const SQLITE_V3: &str = "SELECT 1;";

/// Version 3 on PostgreSQL: what answers datagrepper's combined filters from
/// index ranges and running counts instead of scans (see `crate::pg_query`).
///
/// - The bridge rows carry their message's `topic_id`, and are keyed
///   `(name id, topic_id, timestamp, msg)` instead of `(name id, timestamp,
///   msg)`: a user's or package's messages of one topic in a window are one
///   index range, newest or oldest first, and a category, or all of a user's
///   topics, a merge of such ranges (the topics a user has messages in are
///   read from the running counts). Each bridge row still updates two
///   indexes, this key and `(msg)`.
/// - Running counts, updated in each batch's transaction: messages per topic,
///   per (user, topic), per (package, topic) and per (user, package). A count
///   without a time window is a sum over a few rows of these, however large
///   the history; two hubs writing at once add to the same rows (in key order,
///   so they wait for each other rather than deadlock).
///
/// Existing rows are filled in by the migration itself (one pass over the
/// bridge tables; about a minute per ten million messages).
pub const POSTGRES_V3: &str = "
ALTER TABLE history_user_messages ADD COLUMN topic_id INTEGER;
UPDATE history_user_messages b SET topic_id = m.topic_id
    FROM history_messages m WHERE m.id = b.msg;
ALTER TABLE history_user_messages ALTER COLUMN topic_id SET NOT NULL;
ALTER TABLE history_user_messages DROP CONSTRAINT history_user_messages_pkey;
ALTER TABLE history_user_messages ADD PRIMARY KEY (user_id, topic_id, timestamp, msg);
ALTER TABLE history_package_messages ADD COLUMN topic_id INTEGER;
UPDATE history_package_messages b SET topic_id = m.topic_id
    FROM history_messages m WHERE m.id = b.msg;
ALTER TABLE history_package_messages ALTER COLUMN topic_id SET NOT NULL;
ALTER TABLE history_package_messages DROP CONSTRAINT history_package_messages_pkey;
ALTER TABLE history_package_messages ADD PRIMARY KEY (package_id, topic_id, timestamp, msg);
CREATE TABLE history_topic_counts (
    topic_id INTEGER PRIMARY KEY REFERENCES history_topics (id),
    messages BIGINT NOT NULL
);
INSERT INTO history_topic_counts (topic_id, messages)
    SELECT topic_id, count(*) FROM history_messages GROUP BY topic_id;
CREATE TABLE history_user_topic_counts (
    user_id INTEGER NOT NULL REFERENCES history_users (id),
    topic_id INTEGER NOT NULL REFERENCES history_topics (id),
    messages BIGINT NOT NULL,
    PRIMARY KEY (user_id, topic_id)
);
INSERT INTO history_user_topic_counts (user_id, topic_id, messages)
    SELECT user_id, topic_id, count(*) FROM history_user_messages GROUP BY user_id, topic_id;
CREATE TABLE history_package_topic_counts (
    package_id INTEGER NOT NULL REFERENCES history_packages (id),
    topic_id INTEGER NOT NULL REFERENCES history_topics (id),
    messages BIGINT NOT NULL,
    PRIMARY KEY (package_id, topic_id)
);
INSERT INTO history_package_topic_counts (package_id, topic_id, messages)
    SELECT package_id, topic_id, count(*) FROM history_package_messages
    GROUP BY package_id, topic_id;
CREATE TABLE history_user_package_counts (
    user_id INTEGER NOT NULL REFERENCES history_users (id),
    package_id INTEGER NOT NULL REFERENCES history_packages (id),
    messages BIGINT NOT NULL,
    PRIMARY KEY (user_id, package_id)
);
INSERT INTO history_user_package_counts (user_id, package_id, messages)
    SELECT u.user_id, p.package_id, count(*)
    FROM history_user_messages u JOIN history_package_messages p ON p.msg = u.msg
    GROUP BY u.user_id, p.package_id;
";

/// Version 4 on SQLite: nothing (SQLite does not enforce its foreign keys here).
pub const SQLITE_V4: &str = "SELECT 1;";

/// Version 4 on PostgreSQL: no foreign-key checks on the write path.
///
/// Each bridge and count row checked its message, user, package and topic
/// with a key-share lock on the referenced row, per row inserted: a third of
/// a batch's time. The writer only ever writes ids it has just resolved or
/// inserted in the same transaction, and nothing deletes, so the references
/// hold without the checks.
pub const POSTGRES_V4: &str = "
ALTER TABLE history_messages DROP CONSTRAINT IF EXISTS history_messages_topic_id_fkey;
ALTER TABLE history_user_messages
    DROP CONSTRAINT IF EXISTS history_user_messages_user_id_fkey,
    DROP CONSTRAINT IF EXISTS history_user_messages_msg_fkey;
ALTER TABLE history_package_messages
    DROP CONSTRAINT IF EXISTS history_package_messages_package_id_fkey,
    DROP CONSTRAINT IF EXISTS history_package_messages_msg_fkey;
ALTER TABLE history_topic_counts DROP CONSTRAINT IF EXISTS history_topic_counts_topic_id_fkey;
ALTER TABLE history_user_topic_counts
    DROP CONSTRAINT IF EXISTS history_user_topic_counts_user_id_fkey,
    DROP CONSTRAINT IF EXISTS history_user_topic_counts_topic_id_fkey;
ALTER TABLE history_package_topic_counts
    DROP CONSTRAINT IF EXISTS history_package_topic_counts_package_id_fkey,
    DROP CONSTRAINT IF EXISTS history_package_topic_counts_topic_id_fkey;
ALTER TABLE history_user_package_counts
    DROP CONSTRAINT IF EXISTS history_user_package_counts_user_id_fkey,
    DROP CONSTRAINT IF EXISTS history_user_package_counts_package_id_fkey;
";

/// The history store's migrations, both backends.
pub fn migrations() -> Migrations {
    Migrations::new(SCOPE)
        .step_per_backend(1, "history", SQLITE_V1, POSTGRES_V1)
        .step_per_backend(2, "imports", SQLITE_V2, POSTGRES_V2)
        .step_per_backend(3, "combined_filters", SQLITE_V3, POSTGRES_V3)
        .step_per_backend(4, "no_foreign_key_checks", SQLITE_V4, POSTGRES_V4)
}

/// Checks a SQLite file before migrating it: a file made before migrations
/// existed is adopted as version 1 when it holds fedhub's schema; anything
/// else is refused with the reason.
pub fn check_sqlite_baseline(conn: &rusqlite::Connection) -> Result<Baseline, String> {
    let table = |name: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )
    };
    let text = |e: rusqlite::Error| e.to_string();
    if table(&migrations().table()).map_err(text)? {
        return Ok(Baseline::Migrated);
    }
    if !table("messages").map_err(text)? {
        return Ok(Baseline::Empty);
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(text)?;
    if version > 1 {
        return Err(format!(
            "schema version {version} is newer than this fedhub (1)"
        ));
    }
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('messages')")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(text)?;
    for needed in ["msg_id", "msg_hash", "topic_id", "timestamp", "msg"] {
        if !columns.iter().any(|c| c == needed) {
            return Err(format!(
                "its messages table is not fedhub's (no {needed} column; a datanommer database? \
                 expected a fedhub history file, or a new file)"
            ));
        }
    }
    Ok(Baseline::Adopted)
}

/// What [`check_sqlite_baseline`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// No history tables yet.
    Empty,
    /// A file with fedhub's schema from before migrations: adopted as version 1.
    Adopted,
    /// A file with a migration history.
    Migrated,
}
