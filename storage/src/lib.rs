//! fedhub-storage: the database layer every stateful fedhub consumer shares.
//!
//! A consumer names its database with the `database` key of its config
//! section ([`DatabaseUrl`]): a file path or `sqlite:PATH` for the embedded
//! SQLite default, or `postgres://user:password@host:port/dbname` when several
//! hubs share the work. It then gets:
//!
//! - [`Database`]: a handle on the process's connection pool for that URL
//!   (consumers naming the same URL share one pool, each keeping its own
//!   tables), checked at open (reachable, credentials, writable, PostgreSQL 13+),
//!   with [`Database::transaction`] for either backend;
//! - [`Migrations`]: its versioned schema, applied by [`Database::migrate`]
//!   with a migration history of its own; a newer schema than the binary's is
//!   refused naming both versions;
//! - [`BatchWriter`]: the batched writer thread that keeps each message in the
//!   consumer's backlog until its batch commits, retries transient failures
//!   while readiness reports them, and dead-letters what the database refuses
//!   for good ([`ErrorKind`] classifies each backend's errors);
//! - metrics per consumer and backend in the hub's registry ([`metrics::names`]).
//!
//! # Modules
//!
//! - `url`: parsing the `database` setting; passwords masked in `Display`.
//! - `error`: [`StorageError`] and the transient/permanent classification.
//! - `pool`: pools shared per URL, connections, transactions.
//! - `migrate`: per-consumer schema migrations.
//! - `writer`: the batched writer and the [`Sink`] it commits into.
//! - [`sql`]: portable queries (`$N` placeholders, rows as JSON) for small tables.
//! - [`metrics`]: metric names and series; `events`: typed events that log
//!   and count in one place.
//!
//! # Crates, and why
//!
//! - **rusqlite** (bundled SQLite, the version the history store already
//!   uses) and **postgres** (rust-postgres, the synchronous client): the
//!   writer and consumers run on threads of their own and block by design, so
//!   a synchronous client needs no async runtime beside actix.
//! - **r2d2** with **r2d2_sqlite** and **r2d2_postgres** for pools: r2d2 is
//!   synchronous, like the clients; it validates a PostgreSQL connection on
//!   checkout and drops broken ones, so the pool heals by itself after the
//!   server restarts; and its adapters come from the authors of the clients.
//!   deadpool was the alternative: it is async-first (deadpool-postgres wraps
//!   tokio-postgres), which would put a tokio runtime inside each blocking
//!   writer for nothing.
//! - **refinery** for migrations: it supports rusqlite and postgres with a
//!   per-consumer history table name, checksums applied migrations (an edited
//!   migration is refused), and applies a group in one transaction.

#![warn(missing_docs)]

mod error;
mod events;
pub mod metrics;
mod migrate;
mod pool;
pub mod sql;
mod url;
mod writer;

pub use error::{BackendError, Classify, ErrorKind, StorageError};
pub use metrics::StorageMetrics;
pub use migrate::{MigrationReport, Migrations};
pub use pool::{Connection, Database, PoolOptions, Tx};
pub use url::{mask_password, Backend, DatabaseUrl};
pub use writer::{
    BatchWriter, Sink, TransactionSink, WriteReport, WriterError, WriterHealth, WriterObserver,
    WriterOptions, WriterState, WriterTarget,
};

/// Re-exported so consumers write SQL against the same versions.
pub use postgres;
/// Re-exported so consumers write SQL against the same versions.
pub use rusqlite;
