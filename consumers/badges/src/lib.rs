//! fedhub's badge awarder (fedbadges): YAML rules in fedbadges' 1.x format,
//! criteria counted in the history store, idempotent awards in Tahrir's
//! tables, each award published on the bus.
//!
//! # Layout
//!
//! - [`rules`]: loading and validating a directory of rule files (every load
//!   error names the file, the rule and the field), substitution of
//!   `%(msg.x.y)s` templates.
//! - [`expr`]: the sandboxed expression language that replaces Python
//!   `lambda` nodes (rhai, with time, operation and size limits).
//! - [`awarder`]: matching in fedbadges' order and awarding; old-message
//!   protection (repeated `msg_id`s, old timestamps).
//! - [`tahrir`]: tahrir-api's tables through `fedhub-storage` (SQLite or
//!   PostgreSQL), idempotent awards, ranks.
//! - [`ranks`]: the leaderboard brought up to date after awards, in passes.
//! - [`http`]: `/badges/user/<name>`, `/badges/badge/<id>`, `/badges/rules`,
//!   `/badges/leaderboard`.
//! - [`consumer`]: `FedoraBadgesConsumer`, its config, reloads and [`factory`].
//!
//! # The history store
//!
//! Criteria are answered by the history store's query API
//! ([`fedhub_history::Store::count`]): this crate depends on `fedhub-history`
//! and opens the database the hub's `Nommer` writes (`history_database`)
//! through it, with the backend its URL names. Run the consumer with
//! `after = ["Nommer"]` so that a message is evaluated only once the history
//! store committed it, and a count includes the triggering message, without
//! fedbadges' 3 s sleep.
//!
//! # Why rhai
//!
//! Rules written for fedbadges used Python lambdas. Their replacement must be
//! sandboxed and bounded per evaluation: rhai has an operation limit, a
//! progress callback that ends an evaluation past a deadline, limits on string,
//! array and map sizes and on call depth, compiles expressions only (no
//! statements or loops when compiled with `compile_expression`), is pure Rust,
//! builds from crates.io with no system library, and is actively maintained.
//! The CEL interpreters for Rust offer no operation or time limit.

#![warn(missing_docs)]

pub mod awarder;
pub mod consumer;
pub mod expr;
pub mod http;
pub mod ranks;
pub mod rules;
pub mod tahrir;

pub use awarder::{Awarder, AwarderOptions, Counters, Outcome, Rules, SharedRules};
pub use consumer::{factory, BadgesConfig, FedoraBadgesConsumer, NAME};
pub use rules::{load_dir, parse_rule, LoadError, Rule, RuleSet};
pub use tahrir::{Issuer, Tahrir};
