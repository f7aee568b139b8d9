//! The `FedoraBadgesConsumer` consumer (fedbadges' class name, so sites'
//! Nagios and collectd definitions for it keep working), its configuration
//! and its [`factory`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use fedhub::{
    ConfigError, Consumer, ConsumerError, ConsumerFactory, Context, Envelope, HttpRoutes,
    ProducerThread, StateCounter,
};
use fedhub_history::{NommerConfig, Store};
use fedhub_storage::{Database, DatabaseUrl, PoolOptions};
use prometheus::{IntCounter, IntCounterVec, Opts};
use serde::Deserialize;
use serde_json::Value;

use crate::awarder::{Awarder, AwarderOptions, Counters, LoadedRule, Rules, SharedRules};
use crate::expr::{Limits, Sandbox};
use crate::ranks::RankKeeper;
use crate::rules::{load_dir, LoadError};
use crate::tahrir::{Issuer, Tahrir};

/// The consumer's name.
pub const NAME: &str = "FedoraBadgesConsumer";

/// Where its HTTP routes are mounted.
pub const HTTP_PREFIX: &str = "/badges";

/// The producer that brings the leaderboard up to date, as the monitoring
/// socket lists it.
pub const RANK_PRODUCER: &str = "RankProducer";

/// `[consumers.FedoraBadgesConsumer]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BadgesConfig {
    /// The directory of rule YAML files (walked recursively).
    pub rules_directory: PathBuf,
    /// Tahrir's database (a SQLite path, `sqlite:PATH` or `postgres://...`).
    pub database: String,
    /// The history store's database (the `database` of `[consumers.Nommer]`).
    pub history_database: String,
    /// Where award links point.
    pub datagrepper_url: String,
    /// `badge_issuer.issuer_origin`.
    pub issuer_origin: String,
    /// `badge_issuer.issuer_name`.
    pub issuer_name: String,
    /// `badge_issuer.issuer_org`.
    pub issuer_org: String,
    /// `badge_issuer.issuer_contact`.
    pub issuer_contact: String,
    /// A message older than this, by its own timestamp, awards nothing.
    pub max_message_age_secs: f64,
    /// How many recent `msg_id`s are remembered to ignore repeats.
    pub seen_msg_ids: usize,
    /// Longest time one expression may run, in milliseconds.
    pub expression_timeout_ms: u64,
    /// Most interpreter steps of one expression.
    pub expression_max_operations: u64,
    /// Reload the rules when a file in the directory changes (SIGHUP always does).
    pub watch_rules: bool,
    /// PostgreSQL: most connections.
    pub max_connections: u32,
    /// PostgreSQL: how long connecting may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long a statement waits for a lock, in milliseconds.
    pub busy_timeout_ms: u64,
    /// How often the leaderboard is brought up to date after awards (`RankProducer`).
    pub rank_interval_secs: f64,
}

impl Default for BadgesConfig {
    fn default() -> Self {
        BadgesConfig {
            rules_directory: PathBuf::from("badges"),
            database: "fedhub-badges.sqlite".into(),
            history_database: fedhub_history::consumer::DEFAULT_DATABASE.into(),
            datagrepper_url: "https://apps.fedoraproject.org/datagrepper".into(),
            issuer_origin: "https://badges.fedoraproject.org".into(),
            issuer_name: "Fedora Project".into(),
            issuer_org: "https://fedoraproject.org".into(),
            issuer_contact: "badges@fedoraproject.org".into(),
            max_message_age_secs: 86_400.0,
            seen_msg_ids: 200_000,
            expression_timeout_ms: 50,
            expression_max_operations: 100_000,
            watch_rules: true,
            max_connections: 4,
            connect_timeout_ms: 5000,
            busy_timeout_ms: 5000,
            rank_interval_secs: 1.0,
        }
    }
}

fn invalid(key: &str, value: impl std::fmt::Display, expected: &str) -> ConfigError {
    ConfigError::Invalid(format!(
        "[consumers.{NAME}] {key} = {value}: expected {expected}"
    ))
}

impl BadgesConfig {
    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.max_message_age_secs.is_finite() || self.max_message_age_secs <= 0.0 {
            return Err(invalid(
                "max_message_age_secs",
                self.max_message_age_secs,
                "a positive number of seconds",
            ));
        }
        if self.seen_msg_ids > 100_000_000 {
            return Err(invalid("seen_msg_ids", self.seen_msg_ids, "0 to 100000000"));
        }
        if !(1..=10_000).contains(&self.expression_timeout_ms) {
            return Err(invalid(
                "expression_timeout_ms",
                self.expression_timeout_ms,
                "1 to 10000 milliseconds",
            ));
        }
        if !(100..=1_000_000_000).contains(&self.expression_max_operations) {
            return Err(invalid(
                "expression_max_operations",
                self.expression_max_operations,
                "100 to 1000000000",
            ));
        }
        if self.max_connections == 0 || self.max_connections > 1000 {
            return Err(invalid(
                "max_connections",
                self.max_connections,
                "1 to 1000",
            ));
        }
        if !(0.05..=3600.0).contains(&self.rank_interval_secs) {
            return Err(invalid(
                "rank_interval_secs",
                self.rank_interval_secs,
                "0.05 to 3600 seconds",
            ));
        }
        if self.issuer_name.trim().is_empty() {
            return Err(invalid("issuer_name", "\"\"", "a non-empty name"));
        }
        self.database_url()?;
        Ok(())
    }

    /// The `database` setting, parsed.
    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        DatabaseUrl::from_setting(NAME, &self.database)
    }

    /// The expression limits.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_millis(self.expression_timeout_ms),
            max_operations: self.expression_max_operations,
            ..Limits::default()
        }
    }

    /// The issuer.
    pub fn issuer(&self) -> Issuer {
        Issuer {
            origin: self.issuer_origin.clone(),
            name: self.issuer_name.clone(),
            org: self.issuer_org.clone(),
            contact: self.issuer_contact.clone(),
        }
    }

    fn pool_options(&self) -> PoolOptions {
        PoolOptions::from_settings(
            self.max_connections,
            self.connect_timeout_ms,
            self.busy_timeout_ms,
        )
    }
}

/// Loads the rules of `dir`, registers their badges in Tahrir and returns
/// them. On a reload (`previous` given), a file that now fails keeps the rules
/// it had, and the error is reported beside them.
pub fn load_rules(
    dir: &Path,
    sandbox: &Sandbox,
    tahrir: &Tahrir,
    issuer_id: i64,
    previous: Option<&Rules>,
) -> Result<Rules, crate::rules::DirError> {
    let set = load_dir(dir, sandbox)?;
    let mut rules: Vec<Arc<LoadedRule>> = Vec::new();
    let mut errors: Vec<LoadError> = set.errors;
    for rule in set.rules {
        // A rule unchanged since the last load keeps its counters.
        let kept = previous.and_then(|p| {
            p.rules
                .iter()
                .find(|r| r.rule.badge_id == rule.badge_id && r.rule.file == rule.file)
                .filter(|r| same_rule(&r.rule, &rule))
                .cloned()
        });
        rules.push(kept.unwrap_or_else(|| Arc::new(LoadedRule::new(rule))));
    }
    if let Some(previous) = previous {
        for error in &errors {
            for old in previous.rules.iter().filter(|r| r.rule.file == error.file) {
                if !rules.iter().any(|r| r.rule.badge_id == old.rule.badge_id) {
                    rules.push(old.clone());
                }
            }
        }
    }
    let mut registered = Vec::with_capacity(rules.len());
    for rule in rules {
        match tahrir.ensure_badge(&rule.badge, issuer_id) {
            Ok(()) => registered.push(rule),
            Err(e) => errors.push(LoadError {
                file: rule.rule.file.clone(),
                rule: Some(rule.rule.name.clone()),
                field: String::new(),
                problem: format!("cannot register the badge: {}", fedhub::error_chain(&e)),
            }),
        }
    }
    for e in &errors {
        tracing::warn!(error = %e, "badge rule not loaded");
    }
    Ok(Rules {
        rules: registered,
        errors,
        loaded_at: SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        generation: previous.map(|p| p.generation + 1).unwrap_or(1),
    })
}

fn same_rule(a: &crate::rules::Rule, b: &crate::rules::Rule) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// The badge awarder.
pub struct FedoraBadgesConsumer {
    config: BadgesConfig,
    awarder: Awarder,
    rules: SharedRules,
    counters: Arc<Counters>,
    sandbox: Sandbox,
    issuer_id: i64,
    metrics: Option<Metrics>,
    state: Option<StateCounters>,
    reloader: Option<Reloader>,
    /// `RankProducer`: the leaderboard passes ([`RankKeeper::update`]) every
    /// interval (further apart when passes are slow), publishing the rank
    /// advances; a last pass runs when it stops.
    rank_producer: Option<ProducerThread>,
}

/// The counters shown in this consumer's `/state` entry.
struct StateCounters {
    duplicates: StateCounter,
    too_old: StateCounter,
    awards: StateCounter,
    rule_errors: StateCounter,
}

struct Metrics {
    ignored: IntCounterVec,
    awards: IntCounter,
    rule_errors: IntCounter,
}

impl Metrics {
    fn register(registry: &prometheus::Registry) -> Result<Metrics, prometheus::Error> {
        let ignored = IntCounterVec::new(
            Opts::new(
                "fedhub_badges_messages_ignored_total",
                "Messages the badge awarder ignored: reason=duplicate (msg_id seen) or too_old (timestamp past max_message_age_secs)",
            ),
            &["reason"],
        )?;
        let awards = IntCounter::new("fedhub_badges_awards_total", "Badges awarded")?;
        let rule_errors = IntCounter::new(
            "fedhub_badges_rule_errors_total",
            "Rule evaluations skipped because of an error (named in /badges/rules)",
        )?;
        fedhub::register_metrics(
            registry,
            vec![
                Box::new(ignored.clone()),
                Box::new(awards.clone()),
                Box::new(rule_errors.clone()),
            ],
        )?;
        Ok(Metrics {
            ignored,
            awards,
            rule_errors,
        })
    }
}

impl FedoraBadgesConsumer {
    /// Builds the consumer: loads the rules, opens the history store and
    /// Tahrir's tables (created if missing), registers the issuer and badges.
    pub fn from_config(config: &BadgesConfig) -> Result<FedoraBadgesConsumer, ConfigError> {
        config.validate()?;
        let registry = prometheus::Registry::new();
        let url = config.database_url()?;
        let db = Database::open(&url, NAME, &config.pool_options(), &registry).map_err(|e| {
            ConfigError::Invalid(format!(
                "[consumers.{NAME}] database = {:?}: {}",
                fedhub_storage::mask_password(&config.database),
                fedhub::error_chain(&e)
            ))
        })?;
        let tahrir = Tahrir::open(db).map_err(|e| {
            ConfigError::Invalid(format!(
                "[consumers.{NAME}] database: {}",
                fedhub::error_chain(&e)
            ))
        })?;
        let history_config = NommerConfig {
            database: config.history_database.clone(),
            busy_timeout_ms: config.busy_timeout_ms,
            ..NommerConfig::default()
        };
        let history: Arc<dyn Store> = history_config.open_store(&registry).map_err(|e| {
            ConfigError::Invalid(format!(
                "[consumers.{NAME}] history_database = {:?}: {}",
                fedhub_storage::mask_password(&config.history_database),
                fedhub::error_chain(&e)
            ))
        })?;
        FedoraBadgesConsumer::new(config.clone(), tahrir, history)
    }

    /// Builds the consumer over stores already open.
    pub fn new(
        config: BadgesConfig,
        tahrir: Tahrir,
        history: Arc<dyn Store>,
    ) -> Result<FedoraBadgesConsumer, ConfigError> {
        let sandbox = Sandbox::new(config.limits());
        let issuer_id = tahrir.ensure_issuer(&config.issuer()).map_err(|e| {
            ConfigError::Invalid(format!(
                "[consumers.{NAME}] cannot register the issuer {:?}: {}",
                config.issuer_name,
                fedhub::error_chain(&e)
            ))
        })?;
        let rules = load_rules(&config.rules_directory, &sandbox, &tahrir, issuer_id, None)
            .map_err(|e| {
                ConfigError::Invalid(format!("[consumers.{NAME}] rules_directory: {e}"))
            })?;
        tracing::info!(
            rules = rules.rules.len(),
            rejected = rules.errors.len(),
            directory = %config.rules_directory.display(),
            "badge rules loaded"
        );
        let rules: SharedRules = Arc::new(RwLock::new(Arc::new(rules)));
        let awarder = Awarder::new(
            rules.clone(),
            sandbox.clone(),
            history,
            tahrir,
            AwarderOptions {
                max_message_age_secs: config.max_message_age_secs,
                seen_msg_ids: config.seen_msg_ids,
                datagrepper_url: config.datagrepper_url.clone(),
            },
        );
        Ok(FedoraBadgesConsumer {
            counters: awarder.counters(),
            config,
            awarder,
            rules,
            sandbox,
            issuer_id,
            metrics: None,
            state: None,
            reloader: None,
            rank_producer: None,
        })
    }

    /// The rules in force.
    pub fn rules(&self) -> SharedRules {
        self.rules.clone()
    }

    /// The awarder's counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Loads the rules again now (what SIGHUP and the directory watch do).
    pub fn reload(&self) {
        reload(&self.reload_target());
    }

    fn reload_target(&self) -> ReloadTarget {
        ReloadTarget {
            dir: self.config.rules_directory.clone(),
            sandbox: self.sandbox.clone(),
            tahrir: self.awarder.tahrir().clone(),
            issuer_id: self.issuer_id,
            rules: self.rules.clone(),
        }
    }
}

/// What a reload needs.
#[derive(Clone)]
struct ReloadTarget {
    dir: PathBuf,
    sandbox: Sandbox,
    tahrir: Tahrir,
    issuer_id: i64,
    rules: SharedRules,
}

fn reload(target: &ReloadTarget) {
    let previous = target
        .rules
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match load_rules(
        &target.dir,
        &target.sandbox,
        &target.tahrir,
        target.issuer_id,
        Some(&previous),
    ) {
        Ok(rules) => {
            tracing::info!(
                rules = rules.rules.len(),
                rejected = rules.errors.len(),
                generation = rules.generation,
                "badge rules reloaded"
            );
            *target.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
        }
        Err(e) => {
            tracing::error!(error = %e, "badge rules not reloaded; the old rules stay in force");
        }
    }
}

/// The thread that reloads the rules on SIGHUP and on changes in the directory.
struct Reloader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
    signal: Option<signal_hook::SigId>,
}

impl Reloader {
    fn start(target: ReloadTarget, watch: bool) -> Reloader {
        let stop = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        let signal = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
            .map_err(|e| tracing::warn!(error = %e, "cannot watch SIGHUP; rules reload only on file changes"))
            .ok();
        let changed = Arc::new(AtomicBool::new(false));
        let watcher = if watch {
            use notify::Watcher;
            let flag = changed.clone();
            let made = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    if !event.kind.is_access() {
                        flag.store(true, Ordering::Release);
                    }
                }
            })
            .and_then(|mut w| {
                w.watch(&target.dir, notify::RecursiveMode::Recursive)?;
                Ok(w)
            });
            match made {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(directory = %target.dir.display(), error = %e, "cannot watch the rules directory; send SIGHUP to reload");
                    None
                }
            }
        } else {
            None
        };
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("badges-reload".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(200));
                    let by_signal = hup.swap(false, Ordering::AcqRel);
                    if changed.swap(false, Ordering::AcqRel) {
                        // Let an editor finish writing (several events per save).
                        std::thread::sleep(Duration::from_millis(300));
                        changed.store(false, Ordering::Release);
                        reload(&target);
                    } else if by_signal {
                        reload(&target);
                    }
                }
            })
            .ok();
        Reloader {
            stop,
            thread,
            _watcher: watcher,
            signal,
        }
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(id) = self.signal.take() {
            signal_hook::low_level::unregister(id);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Consumer for FedoraBadgesConsumer {
    fn start(&mut self, ctx: &mut Context) -> Result<(), ConsumerError> {
        match Metrics::register(ctx.metrics()) {
            Ok(m) => self.metrics = Some(m),
            Err(e) => tracing::warn!(error = %e, "cannot register badge metrics"),
        }
        self.state = Some(StateCounters {
            duplicates: ctx.state_counter("duplicates_ignored_total"),
            too_old: ctx.state_counter("too_old_ignored_total"),
            awards: ctx.state_counter("awards_total"),
            rule_errors: ctx.state_counter("rule_errors_total"),
        });
        if self.reloader.is_none() {
            self.reloader = Some(Reloader::start(
                self.reload_target(),
                self.config.watch_rules,
            ));
        }
        if self.rank_producer.is_none() {
            let interval = Duration::from_secs_f64(self.config.rank_interval_secs);
            let keeper = self.awarder.ranks();
            let publisher = ctx.publisher().clone();
            let publish = move |topic: &str, msg: Value| -> Result<(), String> {
                publisher
                    .publish(topic, msg)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            let producer = ctx.producer(RANK_PRODUCER, "fedbadges.consumers", interval);
            match ProducerThread::start(producer, interval, true, move || {
                let pass = keeper
                    .update(&publish)
                    .map_err(|e| fedhub::error_chain(&e))?;
                Ok(Some(RankKeeper::pause_after(interval, pass.took)))
            }) {
                Ok(thread) => self.rank_producer = Some(thread),
                Err(e) => tracing::error!(error = %e, "cannot start the rank producer"),
            }
        }
        Ok(())
    }

    fn consume(&mut self, envelope: &Envelope, ctx: &mut Context) -> Result<(), ConsumerError> {
        let publish = |topic: &str, msg: Value| -> Result<(), String> {
            ctx.publish(topic, msg)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let outcome =
            self.awarder
                .handle_body(envelope.topic(), envelope.json(), ctx.now(), &publish);
        if let Some(m) = &self.metrics {
            if outcome.duplicate {
                m.ignored.with_label_values(&["duplicate"]).inc();
            }
            if outcome.too_old {
                m.ignored.with_label_values(&["too_old"]).inc();
            }
            m.awards.inc_by(outcome.awards.len() as u64);
            m.rule_errors.inc_by(outcome.errors.len() as u64);
        }
        if let Some(s) = &self.state {
            s.duplicates.add(u64::from(outcome.duplicate));
            s.too_old.add(u64::from(outcome.too_old));
            s.awards.add(outcome.awards.len() as u64);
            s.rule_errors.add(outcome.errors.len() as u64);
        }
        Ok(())
    }

    fn stop(&mut self, _ctx: &mut Context) {
        self.reloader = None;
        // Its last pass settles the awards made until now.
        self.rank_producer = None;
    }

    fn http_routes(&self) -> Option<HttpRoutes> {
        Some(crate::http::routes(crate::http::Api {
            tahrir: self.awarder.tahrir().clone(),
            rules: self.rules.clone(),
            counters: self.counters.clone(),
            ranks: self.awarder.ranks(),
        }))
    }

    fn module(&self) -> &str {
        "fedbadges.consumers"
    }
}

/// The factory the hub registers: `FedoraBadgesConsumer`, every topic,
/// disabled unless enabled, routes under `/badges`.
pub fn factory() -> ConsumerFactory {
    ConsumerFactory::new(NAME, |settings| {
        let config: BadgesConfig = settings.parse()?;
        Ok(Box::new(FedoraBadgesConsumer::from_config(&config)?))
    })
    .topics(["*"])
    .http_prefix(HTTP_PREFIX)
    .example_config(include_str!("../fedhub.toml"))
}
