//! fedhub's history store: keeps every message (datanommer) and answers
//! datagrepper's queries fast.
//!
//! # Layout
//!
//! - [`meta`]: fedmsg_meta-style extraction (users, packages, subtitle), table-driven.
//! - [`store`]: the [`Store`] trait every backend implements, and [`NewMessage`].
//! - [`schema`]: the schema of each backend, as `fedhub_storage` migrations.
//! - [`sqlite`]: the embedded SQLite backend, [`SqliteStore`].
//! - [`postgres`]: the PostgreSQL backend several hubs share, [`PgStore`].
//! - [`index`]: the in-memory bitmap index that makes counts and pages cheap.
//! - [`filter`]: [`Filter`] (datanommer `grep` semantics, datagrepper time arguments) and [`Page`].
//! - [`events`]: the store's typed events (log and count in one place), metric names.
//! - [`writer`]: the batch writer thread (`fedhub_storage`'s) and its [`Health`].
//! - [`consumer`]: the `Nommer` consumer and its [`factory`].
//! - [`http`]: `/raw`, `/id`, `/messagecount`, `/health`, mounted under `/datagrepper`.
//! - [`import`]: JSON-lines import; [`activity`]: the userwat-style activity view.
//! - [`command`]: `fedhub history` (import, query, user), the subcommand this
//!   consumer brings to the `fedhub` binary.
//!
//! Other consumers count matches (badge criteria) with [`Store::count`]:
//!
//! ```no_run
//! use fedhub_history::{Filter, SqliteStore, Store};
//!
//! let store = SqliteStore::open("fedhub-history.sqlite")?;
//! let builds = store.count(&Filter::new().user("ralph").category("buildsys"))?;
//! # Ok::<(), fedhub_history::StoreError>(())
//! ```

#![warn(missing_docs)]

pub mod activity;
pub mod command;
pub mod consumer;
pub mod events;
pub mod filter;
pub mod http;
pub mod import;
pub mod index;
pub mod meta;
mod pg_query;
pub mod postgres;
pub mod schema;
pub mod sqlite;
pub mod store;
pub mod writer;

pub use activity::user_activity;
pub use consumer::{factory, Nommer, NommerConfig};
pub use filter::{Filter, FilterError, Order, Page, StoredMessage};
pub use http::{routes, ApiOptions};
pub use import::{
    import_datanommer, import_jsonl, import_jsonl_file, DatanommerError, DatanommerProgress,
    ImportError, ImportProgress, ImportReport,
};
pub use meta::{packages, subtitle, usernames};
pub use postgres::PgStore;
pub use sqlite::{IndexOrigin, SqliteOptions, SqliteStore};
pub use store::{BatchReport, NewMessage, Store, StoreError};
pub use writer::{BatchWriter, Health, WriterError, WriterOptions, WriterState};
