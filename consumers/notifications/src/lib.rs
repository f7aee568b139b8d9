//! fedhub's notification matcher, `FMNConsumer` (FMN's class name, so sites'
//! Nagios and collectd definitions keep working).
//!
//! Every user's preferences are compiled in memory and indexed; a message
//! evaluates only the filters that could match it. When a preference changes
//! (through this consumer's HTTP API, or FMN's own tools), an
//! `fmn.*.update` bus message names the user and every hub reloads exactly
//! that user: no database round trip per message.
//!
//! # Modules
//!
//! - [`model`]: FMN's data model and the defaults new users get.
//! - [`store`]: FMN's tables through `fedhub-storage` (SQLite or PostgreSQL).
//! - [`rules`]: the rule library (`fmn.rules:*`), compiled rules and the
//!   per-message facts they read.
//! - [`ownership`]: package ownership and group membership, cached and
//!   invalidated by bus messages.
//! - [`cache`]: the compiled preferences, their index, and matching.
//! - [`consumer`]: the consumer, its configuration, the digest producer.
//! - [`http`]: the API under `/notifications`.
//! - [`delivery`]: sending notifications by webhook and e-mail, with retries,
//!   backoff and a dead-letter state kept in the store.

#![warn(missing_docs)]

pub mod cache;
pub mod consumer;
pub mod delivery;
pub mod http;
pub mod model;
pub mod ownership;
pub mod rules;
pub mod store;

pub use consumer::{factory, FMNConsumer, FmnConfig};
