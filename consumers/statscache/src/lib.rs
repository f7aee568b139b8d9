//! fedhub's statistics consumer (statscache): pluggable running statistics,
//! cached latest values, and a fast HTTP API under `/statscache`.
//!
//! # Layout
//!
//! - [`window`]: time windows, buckets labelled by their end.
//! - [`plugin`]: the [`Plugin`] trait a third party implements, [`Message`],
//!   [`Update`].
//! - [`plugins`]: the built-in plugins (volume family, releng dashboard,
//!   contributions).
//! - [`engine`]: plugins registered, failures isolated and counted per plugin.
//! - [`store`]: the schema and SQL (SQLite or PostgreSQL, via `fedhub-storage`).
//! - [`backfill`]: recomputing from the history store at start.
//! - [`consumer`]: the `StatsConsumer` consumer and its [`factory`].
//! - [`http`]: the REST API; `page`: the HTML page introducing it.
//! - [`command`]: `fedhub stats quote CATEGORY`.

#![warn(missing_docs)]

pub mod backfill;
pub mod command;
pub mod consumer;
pub mod engine;
pub mod http;
mod page;
pub mod plugin;
pub mod plugins;
pub mod store;
pub mod window;

pub use backfill::{BackfillProgress, ProgressState};
pub use consumer::{factory, factory_with, StatsConfig, StatsConsumer, HTTP_PREFIX, NAME};
pub use engine::{Engine, Metrics, PluginInfo, RegistryError};
pub use plugin::{ident, Message, Outcome, Plugin, PluginError, Shape, Update};
pub use store::{Reader, Row};
pub use window::Window;

/// Now, in Unix seconds.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
