//! The engine: the registered plugins, each message handed to every one of
//! them with its failures isolated and counted per plugin.
//!
//! A plugin that returns an error or panics is counted in
//! `fedhub_statscache_plugin_errors_total{plugin}` (and logged, at most once a
//! minute per plugin); one that finds a field it reads missing skips the
//! message and counts it in `fedhub_statscache_plugin_skipped_total{plugin}`.
//! Either way the other plugins still see the message. A plugin that
//! panicked keeps running: its state is what it was when it panicked.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde_json::Value;

use crate::plugin::{Message, Outcome, Plugin, PluginError, Shape, Update};
use crate::window::Window;

/// Metric names.
pub mod names {
    /// Errors and panics per plugin.
    pub const PLUGIN_ERRORS: &str = "fedhub_statscache_plugin_errors_total";
    /// Messages a plugin skipped because a field it reads was missing.
    pub const PLUGIN_SKIPPED: &str = "fedhub_statscache_plugin_skipped_total";
    /// Messages replayed from the history store at start.
    pub const BACKFILLED: &str = "fedhub_statscache_backfill_messages_total";
    /// Messages seen both live and in the backfill, counted once.
    pub const DUPLICATES: &str = "fedhub_statscache_duplicates_total";
    /// API requests refused for bad input, per reason.
    pub const BAD_REQUESTS: &str = "fedhub_statscache_http_bad_requests_total";
}

/// The consumer's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// `fedhub_statscache_plugin_errors_total{plugin}`.
    pub plugin_errors: IntCounterVec,
    /// `fedhub_statscache_plugin_skipped_total{plugin}`.
    pub plugin_skipped: IntCounterVec,
    /// `fedhub_statscache_backfill_messages_total`.
    pub backfilled: IntCounter,
    /// `fedhub_statscache_duplicates_total`.
    pub duplicates: IntCounter,
    /// `fedhub_statscache_http_bad_requests_total{reason}`.
    pub bad_requests: IntCounterVec,
}

impl Metrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> Metrics {
        let vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        Metrics {
            plugin_errors: vec(
                names::PLUGIN_ERRORS,
                "Errors and panics of a statistics plugin (the message still reached the others).",
                "plugin",
            ),
            plugin_skipped: vec(
                names::PLUGIN_SKIPPED,
                "Messages a statistics plugin skipped because a field it reads was missing.",
                "plugin",
            ),
            backfilled: IntCounter::new(
                names::BACKFILLED,
                "Messages replayed from the history store at start.",
            )
            .expect("valid metric"),
            duplicates: IntCounter::new(
                names::DUPLICATES,
                "Messages seen both live and in the backfill, counted once.",
            )
            .expect("valid metric"),
            bad_requests: vec(
                names::BAD_REQUESTS,
                "statscache API requests refused for bad input.",
                "reason",
            ),
        }
    }

    /// Registers them in `registry` (already registered ones are kept).
    pub fn register(&self, registry: &Registry) {
        let all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.plugin_errors.clone()),
            Box::new(self.plugin_skipped.clone()),
            Box::new(self.backfilled.clone()),
            Box::new(self.duplicates.clone()),
            Box::new(self.bad_requests.clone()),
        ];
        if let Err(e) = fedhub::register_metrics(registry, all) {
            tracing::warn!(error = %e, "cannot register a statscache metric");
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// What the API says about a plugin (`/statscache/api/`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginInfo {
    /// The ident.
    pub ident: String,
    /// The name.
    pub name: String,
    /// One line.
    pub summary: String,
    /// A paragraph.
    pub description: String,
    /// The window (`1m`), or null.
    pub window: Option<String>,
    /// The window in seconds, or null.
    pub window_secs: Option<i64>,
    /// How rows look.
    #[serde(skip)]
    pub shape: Shape,
    /// The layout, if the plugin has one.
    #[serde(skip)]
    pub layout: Option<Value>,
    /// How far back a backfill may reach, if the plugin says.
    #[serde(skip)]
    pub backfill_limit_secs: Option<f64>,
    /// The window as a value.
    #[serde(skip)]
    pub window_value: Option<Window>,
}

/// Why a set of plugins cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A plugin lacks a name, summary or description.
    #[error("plugin {ident:?} has an empty {field}: every plugin needs a name, a summary and a description")]
    Empty {
        /// The plugin's ident (or type).
        ident: String,
        /// The empty field.
        field: &'static str,
    },
    /// Two plugins share an ident.
    #[error("two plugins have the ident {0:?}: idents must be unique")]
    Duplicate(String),
}

struct Slot {
    plugin: Box<dyn Plugin>,
    info: PluginInfo,
    errors: IntCounter,
    skipped: IntCounter,
    last_logged: Option<Instant>,
    /// During a backfill, the earliest timestamp this plugin takes.
    backfill_from: f64,
}

/// The registered plugins.
pub struct Engine {
    slots: Vec<Slot>,
    metrics: Metrics,
}

impl Engine {
    /// Registers `plugins`; refuses empty names or duplicate idents.
    pub fn new(plugins: Vec<Box<dyn Plugin>>, metrics: Metrics) -> Result<Engine, RegistryError> {
        let mut idents = BTreeSet::new();
        let mut slots = Vec::new();
        for plugin in plugins {
            let ident = plugin.ident();
            for (field, value) in [
                ("name", plugin.name()),
                ("summary", plugin.summary()),
                ("description", plugin.description()),
            ] {
                if value.trim().is_empty() {
                    return Err(RegistryError::Empty { ident, field });
                }
            }
            if !idents.insert(ident.clone()) {
                return Err(RegistryError::Duplicate(ident));
            }
            let window = plugin.window();
            let info = PluginInfo {
                ident: ident.clone(),
                name: plugin.name().to_string(),
                summary: plugin.summary().to_string(),
                description: plugin.description().to_string(),
                window: window.map(|w| w.to_string()),
                window_secs: window.map(Window::secs),
                shape: plugin.shape(),
                layout: plugin.layout(),
                backfill_limit_secs: plugin.backfill_limit_secs(),
                window_value: window,
            };
            slots.push(Slot {
                errors: metrics.plugin_errors.with_label_values(&[&ident]),
                skipped: metrics.plugin_skipped.with_label_values(&[&ident]),
                plugin,
                info,
                last_logged: None,
                backfill_from: f64::INFINITY,
            });
        }
        Ok(Engine { slots, metrics })
    }

    /// What each plugin is, in registration order.
    pub fn infos(&self) -> Vec<PluginInfo> {
        self.slots.iter().map(|s| s.info.clone()).collect()
    }

    /// The idents, in registration order.
    pub fn idents(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.info.ident.clone()).collect()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Hands a live message to every plugin. Returns how many plugins counted it.
    pub fn process(&mut self, message: &Message<'_>) -> usize {
        let mut counted = 0;
        for slot in &mut self.slots {
            counted += usize::from(run(slot, message));
        }
        counted
    }

    /// Sets, per plugin ident, the earliest timestamp a backfill hands it
    /// (plugins not named take nothing from the backfill).
    pub fn set_backfill_from(&mut self, from: &std::collections::HashMap<String, f64>) {
        for slot in &mut self.slots {
            slot.backfill_from = from.get(&slot.info.ident).copied().unwrap_or(f64::INFINITY);
        }
    }

    /// Hands a message from the history store to the plugins whose backfill
    /// reaches back to its timestamp.
    pub fn process_backfill(&mut self, message: &Message<'_>) -> usize {
        let Ok(t) = message.timestamp() else {
            return 0;
        };
        let mut counted = 0;
        for slot in &mut self.slots {
            if t >= slot.backfill_from {
                counted += usize::from(run(slot, message));
            }
        }
        counted
    }

    /// Every plugin's changes since the last flush, with the plugin's ident
    /// index (into [`Engine::infos`]). A plugin panicking here is counted and
    /// its changes lost.
    pub fn flush(&mut self) -> Vec<(usize, Update)> {
        let mut out = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            match catch_unwind(AssertUnwindSafe(|| slot.plugin.flush())) {
                Ok(updates) => out.extend(updates.into_iter().map(|u| (index, u))),
                Err(_) => {
                    slot.errors.inc();
                    tracing::error!(plugin = %slot.info.ident, "statistics plugin panicked in flush");
                }
            }
        }
        out
    }
}

/// Runs one plugin on one message, isolating and counting its failure.
fn run(slot: &mut Slot, message: &Message<'_>) -> bool {
    let plugin = &mut slot.plugin;
    let result = catch_unwind(AssertUnwindSafe(|| plugin.process(message)))
        .unwrap_or_else(|panic| Err(PluginError::Failed(panic_text(&panic))));
    match result {
        Ok(Outcome::Counted) => true,
        Ok(Outcome::Ignored) => false,
        Err(e) => {
            let missing = matches!(e, PluginError::Missing { .. });
            if missing {
                slot.skipped.inc();
            } else {
                slot.errors.inc();
            }
            let quiet = slot
                .last_logged
                .is_some_and(|at| at.elapsed() < Duration::from_secs(60));
            if !quiet {
                slot.last_logged = Some(Instant::now());
                let msg_id = message.msg_id().unwrap_or("");
                if missing {
                    tracing::warn!(plugin = %slot.info.ident, msg_id, topic = message.topic(), error = %e, "statistics plugin skipped a message");
                } else {
                    tracing::error!(plugin = %slot.info.ident, msg_id, topic = message.topic(), error = %e, "statistics plugin failed on a message");
                }
            }
            false
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    format!("panicked: {text}")
}
