//! The plugin API: what a statistics plugin is, what it sees of a message,
//! and what it hands to storage.
//!
//! A plugin keeps running state in memory ([`Plugin::process`]), and hands
//! what changed to the consumer when asked ([`Plugin::flush`]); the consumer
//! commits it through `fedhub-storage`, off the thread that handles messages.
//! A plugin never touches the database itself. It stores in one of two
//! shapes ([`Shape`]): counts per bucket and key (the volume family), or the
//! latest value per (category, constraint) (the releng dashboard).
//!
//! A third party implements [`Plugin`] in its own crate and registers it with
//! [`crate::StatsConsumer::with_plugins`] (or [`crate::factory_with`]):
//!
//! ```
//! use fedhub_statscache::{Message, Outcome, Plugin, PluginError, Shape, Update, Window};
//!
//! /// Counts messages about kernel builds per hour.
//! #[derive(Default)]
//! struct KernelBuilds { pending: std::collections::BTreeMap<i64, i64> }
//!
//! impl Plugin for KernelBuilds {
//!     fn name(&self) -> &str { "Kernel builds" }
//!     fn summary(&self) -> &str { "Kernel builds per hour" }
//!     fn description(&self) -> &str { "Messages of the buildsys category about the kernel package." }
//!     fn window(&self) -> Option<Window> { Some(Window::HOUR) }
//!     fn shape(&self) -> Shape { Shape::Counts { key: None } }
//!     fn process(&mut self, m: &Message<'_>) -> Result<Outcome, PluginError> {
//!         if m.category() != Some("buildsys") || !m.packages().contains("kernel") {
//!             return Ok(Outcome::Ignored);
//!         }
//!         let bucket = Window::HOUR.bucket_end(m.timestamp()?);
//!         *self.pending.entry(bucket).or_default() += 1;
//!         Ok(Outcome::Counted)
//!     }
//!     fn flush(&mut self) -> Vec<Update> {
//!         std::mem::take(&mut self.pending).into_iter()
//!             .map(|(bucket, add)| Update::Count { bucket, key: String::new(), add })
//!             .collect()
//!     }
//! }
//! assert_eq!(KernelBuilds::default().ident(), "kernel-builds-1h");
//! ```

use std::cell::OnceCell;
use std::collections::BTreeSet;

use fedhub::Envelope;
use serde_json::Value;

use crate::window::Window;

/// How a plugin's results are stored and served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A count per (bucket, key): rows `timestamp` (the bucket's end),
    /// the key column if any, and `volume`.
    Counts {
        /// The name of the key column (`category`, `topic`, `user`,
        /// `package`), or `None` for a plain total.
        key: Option<&'static str>,
    },
    /// The latest value per (category, constraint): rows `timestamp`,
    /// `category`, `category_constraint`, `message`.
    Latest,
}

impl Shape {
    /// The column names of this shape's rows, in CSV order (`timestamp`
    /// first, the others sorted, as statscache's `to_csv`).
    pub fn columns(self) -> Vec<&'static str> {
        match self {
            Shape::Counts { key: None } => vec!["timestamp", "volume"],
            Shape::Counts { key: Some(k) } => {
                let mut rest = vec![k, "volume"];
                rest.sort_unstable();
                std::iter::once("timestamp").chain(rest).collect()
            }
            Shape::Latest => vec!["timestamp", "category", "category_constraint", "message"],
        }
    }
}

/// One change a plugin hands to storage.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Add `add` to the count of (`bucket`, `key`); `key` is `""` for a plain total.
    Count {
        /// The bucket's end label, Unix seconds.
        bucket: i64,
        /// The key (a category, topic, user or package), `""` for a total.
        key: String,
        /// How much to add.
        add: i64,
    },
    /// Set the value of (`category`, `constraint`) unless a newer one is stored.
    Latest {
        /// The category (the releng dashboard's component id).
        category: String,
        /// The constraint within the category (`""` when there is none).
        constraint: String,
        /// When it happened, Unix seconds.
        timestamp: f64,
        /// The value.
        message: Value,
    },
}

/// What a plugin did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The message changed the plugin's state.
    Counted,
    /// The message is not one this plugin follows.
    Ignored,
}

/// Why a plugin could not use a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// A field the plugin reads is missing or of the wrong type: the message
    /// is skipped by this plugin, and counted.
    #[error("field {field} is missing or invalid: expected {expected}")]
    Missing {
        /// The field (a dotted path such as `msg.image_name`).
        field: String,
        /// What was expected.
        expected: String,
    },
    /// The plugin failed otherwise: counted as the plugin's error.
    #[error("{0}")]
    Failed(String),
}

impl PluginError {
    /// A missing or invalid `field`, `expected` saying what it should be.
    pub fn missing(field: &str, expected: &str) -> PluginError {
        PluginError::Missing {
            field: field.to_string(),
            expected: expected.to_string(),
        }
    }
}

/// A message as plugins see it: the envelope, plus what several plugins
/// derive from it (users and packages, fedmsg_meta's `msg2usernames` and
/// `msg2packages`), computed once for all plugins on first use.
pub struct Message<'a> {
    envelope: &'a Envelope,
    users: OnceCell<BTreeSet<String>>,
    packages: OnceCell<BTreeSet<String>>,
}

impl<'a> Message<'a> {
    /// A view of `envelope`.
    pub fn new(envelope: &'a Envelope) -> Message<'a> {
        Message {
            envelope,
            users: OnceCell::new(),
            packages: OnceCell::new(),
        }
    }

    /// The envelope.
    pub fn envelope(&self) -> &'a Envelope {
        self.envelope
    }

    /// The topic.
    pub fn topic(&self) -> &'a str {
        self.envelope.topic()
    }

    /// The category (`topic.split('.')[3]`), if the topic has one.
    pub fn category(&self) -> Option<&'a str> {
        self.envelope.category()
    }

    /// The `msg_id`, if any.
    pub fn msg_id(&self) -> Option<&'a str> {
        self.envelope.msg_id()
    }

    /// The message's `timestamp` (Unix seconds); a missing, non-finite or
    /// negative one is [`PluginError::Missing`].
    pub fn timestamp(&self) -> Result<f64, PluginError> {
        match self.envelope.timestamp() {
            Some(t) if t.is_finite() && t >= 0.0 => Ok(t),
            _ => Err(PluginError::missing(
                "timestamp",
                "a number of seconds since 1970",
            )),
        }
    }

    /// The payload (`msg`), `Null` when absent.
    pub fn msg(&self) -> &'a Value {
        static NULL: Value = Value::Null;
        self.envelope.msg().unwrap_or(&NULL)
    }

    /// A string at a dotted path inside `msg` (`"image_name"`, `"repo.name"`).
    pub fn msg_str(&self, path: &str) -> Option<&'a str> {
        let mut value = self.msg();
        for part in path.split('.') {
            value = value.get(part)?;
        }
        value.as_str()
    }

    /// FAS usernames the message is about.
    pub fn users(&self) -> &BTreeSet<String> {
        self.users
            .get_or_init(|| fedhub_history::meta::usernames_of(self.topic(), self.msg()))
    }

    /// Package names the message is about.
    pub fn packages(&self) -> &BTreeSet<String> {
        self.packages
            .get_or_init(|| fedhub_history::meta::packages_of(self.topic(), self.msg()))
    }
}

/// statscache's ident rule: the name lowercased, spaces to `-`, the
/// characters `" ' ( ) * & ? ,` removed, and `-<window>` appended when the
/// plugin has a window.
pub fn ident(name: &str, window: Option<Window>) -> String {
    let mut ident: String = name
        .to_lowercase()
        .replace(' ', "-")
        .chars()
        .filter(|c| !"\"'()*&?,".contains(*c))
        .collect();
    if let Some(window) = window {
        ident.push('-');
        ident.push_str(&window.to_string());
    }
    ident
}

/// A statistics plugin. `name`, `summary` and `description` must not be
/// empty (the consumer refuses such a plugin at start, naming it).
pub trait Plugin: Send + 'static {
    /// A human name (`Volume by category`); the ident derives from it.
    fn name(&self) -> &str;
    /// One line about what the plugin counts.
    fn summary(&self) -> &str;
    /// A paragraph about it, shown on the API page.
    fn description(&self) -> &str;
    /// The window its counts are bucketed by, or `None`.
    fn window(&self) -> Option<Window>;
    /// How its results are stored and served.
    fn shape(&self) -> Shape;

    /// The ident, statscache's rule by default ([`ident`]).
    fn ident(&self) -> String {
        ident(self.name(), self.window())
    }

    /// Handles one message: updates in-memory state only.
    fn process(&mut self, message: &Message<'_>) -> Result<Outcome, PluginError>;

    /// Hands over (and forgets) every change since the last flush.
    fn flush(&mut self) -> Vec<Update>;

    /// Any JSON layout served at `/statscache/api/<ident>/layout` (the
    /// releng dashboard's groups and components).
    fn layout(&self) -> Option<Value> {
        None
    }

    /// How far back a backfill from the history store may reach for this
    /// plugin, in seconds (statscache's `backlog_delta`); `None` for the
    /// consumer's default.
    fn backfill_limit_secs(&self) -> Option<f64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents_follow_statscache() {
        assert_eq!(
            ident("Volume, by category", Some(Window::MINUTE)),
            "volume-by-category-1m"
        );
        assert_eq!(
            ident("Release engineering event logs", None),
            "release-engineering-event-logs"
        );
        assert_eq!(
            ident(
                "Number of contribution per user to pagure.io",
                Some(Window::DAY)
            ),
            "number-of-contribution-per-user-to-pagure.io-1d"
        );
        assert_eq!(ident("What's \"this\" (& that)?", None), "whats-this--that");
    }

    #[test]
    fn csv_columns_put_timestamp_first_then_sorted() {
        assert_eq!(
            Shape::Counts { key: Some("user") }.columns(),
            ["timestamp", "user", "volume"]
        );
        assert_eq!(
            Shape::Counts {
                key: Some("category")
            }
            .columns(),
            ["timestamp", "category", "volume"]
        );
    }
}
