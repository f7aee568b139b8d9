//! The `FMNConsumer` consumer (FMN's class name, so sites' Nagios and
//! collectd definitions for it keep working), its configuration and its
//! [`factory`].
//!
//! Per message, in order: drop junk (`junk_suffixes`, ignored Copr owners,
//! this consumer's own `fmn.notification`s); apply invalidations (an
//! `fmn.*.update` reloads the user it names before anything after it is
//! matched; `.pkgdb.`, `.fas.group.` and Pagure access topics drop cached
//! ownership); create users announced by FAS or badges (`autocreate`); match;
//! deliver: an `fmn.notification` on the bus for every match, and for the
//! `email` and `webhook` contexts a delivery (or a place in the digest queue).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use fedhub::{
    ConfigError, Consumer, ConsumerError, ConsumerFactory, Context, Envelope, HttpRoutes,
    ProducerThread, Publisher, StateCounter,
};
use fedhub_history::meta;
use fedhub_storage::{Database, DatabaseUrl, PoolOptions};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::cache::{PreferenceCache, Recipient};
use crate::delivery::{Deliverer, DeliveryConfig, Notification, Outgoing};
use crate::ownership::{FileSource, HttpSource, Ownership};
use crate::rules::{MessageFacts, RuleLibrary};
use crate::store::FmnStore;

/// The consumer's name.
pub const NAME: &str = "FMNConsumer";

/// Where its HTTP routes are mounted.
pub const HTTP_PREFIX: &str = "/notifications";

/// The topics (titles) whose body `{openid, context, changed}` says a user's
/// preferences changed.
pub const INVALIDATION_TITLES: &[&str] = &[
    "fmn.preference.update",
    "fmn.filter.update",
    "fmn.rule.update",
    "fmn.confirmation.update",
];

/// The topic (without prefix) of the notification messages.
pub const NOTIFICATION_TOPIC: &str = "fmn.notification";

/// The name of the digest producer in monitoring output.
pub const DIGEST_PRODUCER: &str = "DigestProducer";

/// `[consumers.FMNConsumer]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FmnConfig {
    /// FMN's database (a SQLite path, `sqlite:PATH` or `postgres://...`).
    pub database: String,
    /// Contexts whose preferences are matched (FMN's `fmn.backends`).
    pub backends: Vec<String>,
    /// The token the changing HTTP endpoints require (`Authorization: Bearer
    /// <token>`). Empty: they are off.
    pub api_token: String,
    /// Package ownership and groups from a JSON file (see
    /// [`crate::ownership::OwnershipFile`]).
    pub ownership_file: Option<PathBuf>,
    /// Package ownership from dist-git's Pagure API (with `fasjson_url`).
    pub distgit_url: String,
    /// Group membership from FASJSON.
    pub fasjson_url: String,
    /// Timeout of one ownership request, in milliseconds.
    pub ownership_timeout_ms: u64,
    /// Messages whose topic ends with one of these are not matched.
    pub junk_suffixes: Vec<String>,
    /// Copr messages from these owners are not matched.
    pub ignored_copr_owners: Vec<String>,
    /// Create users (with FMN's defaults) announced by `fas.group.member.sponsor`
    /// (group `packager`) and `fedbadges.person.login.first`.
    pub autocreate: bool,
    /// How often the digest producer looks at the queues, in seconds.
    pub digest_interval_secs: f64,
    /// PostgreSQL: most connections.
    pub max_connections: u32,
    /// PostgreSQL: how long connecting may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long a statement waits for a lock, in milliseconds.
    pub busy_timeout_ms: u64,
    /// Webhook and e-mail delivery.
    pub delivery: DeliveryConfig,
}

impl Default for FmnConfig {
    fn default() -> Self {
        FmnConfig {
            database: "fedhub-fmn.sqlite".into(),
            backends: ["email", "irc", "webhook", "bus"]
                .map(String::from)
                .to_vec(),
            api_token: String::new(),
            ownership_file: None,
            distgit_url: String::new(),
            fasjson_url: String::new(),
            ownership_timeout_ms: 5000,
            junk_suffixes: [
                ".buildsys.package.list.change",
                ".buildsys.tag",
                ".buildsys.untag",
                ".buildsys.repo.init",
                ".buildsys.repo.done",
                ".buildsys.rpm.sign",
            ]
            .map(String::from)
            .to_vec(),
            ignored_copr_owners: Vec::new(),
            autocreate: true,
            digest_interval_secs: 10.0,
            max_connections: 4,
            connect_timeout_ms: 5000,
            busy_timeout_ms: 5000,
            delivery: DeliveryConfig::default(),
        }
    }
}

fn invalid(key: &str, value: impl std::fmt::Display, expected: &str) -> ConfigError {
    ConfigError::Invalid(format!(
        "[consumers.{NAME}] {key} = {value}: expected {expected}"
    ))
}

impl FmnConfig {
    /// Checks values; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for b in &self.backends {
            if crate::model::context(b).is_none() {
                return Err(invalid(
                    "backends",
                    format!("[.. {b:?} ..]"),
                    &format!(
                        "context names among {}",
                        crate::model::CONTEXTS
                            .iter()
                            .map(|c| c.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if !self.digest_interval_secs.is_finite()
            || !(0.05..=86_400.0).contains(&self.digest_interval_secs)
        {
            return Err(invalid(
                "digest_interval_secs",
                self.digest_interval_secs,
                "0.05 to 86400 seconds",
            ));
        }
        if self.ownership_file.is_some() && !self.distgit_url.is_empty() {
            return Err(invalid(
                "ownership_file",
                "(set)",
                "either ownership_file or distgit_url/fasjson_url, not both",
            ));
        }
        for (key, url) in [
            ("distgit_url", &self.distgit_url),
            ("fasjson_url", &self.fasjson_url),
        ] {
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    key,
                    format!("{url:?}"),
                    "an http:// or https:// URL",
                ));
            }
        }
        if self.distgit_url.is_empty() != self.fasjson_url.is_empty() {
            return Err(invalid(
                "distgit_url",
                format!("{:?}", self.distgit_url),
                "distgit_url and fasjson_url set together",
            ));
        }
        if self.max_connections == 0 || self.max_connections > 1000 {
            return Err(invalid(
                "max_connections",
                self.max_connections,
                "1 to 1000",
            ));
        }
        self.delivery
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[consumers.{NAME}.delivery] {e}")))?;
        self.database_url()?;
        Ok(())
    }

    /// The `database` setting, parsed.
    pub fn database_url(&self) -> Result<DatabaseUrl, ConfigError> {
        DatabaseUrl::from_setting(NAME, &self.database)
    }

    fn pool_options(&self) -> PoolOptions {
        PoolOptions::from_settings(
            self.max_connections,
            self.connect_timeout_ms,
            self.busy_timeout_ms,
        )
    }

    /// The ownership source the settings name.
    pub fn ownership(&self) -> Result<Ownership, ConfigError> {
        if let Some(path) = &self.ownership_file {
            let source = FileSource::open(path).map_err(|e| {
                ConfigError::Invalid(format!("[consumers.{NAME}] ownership_file: {e}"))
            })?;
            return Ok(Ownership::new(Arc::new(source)));
        }
        if !self.distgit_url.is_empty() {
            return Ok(Ownership::new(Arc::new(HttpSource::new(
                &self.distgit_url,
                &self.fasjson_url,
                Duration::from_millis(self.ownership_timeout_ms),
            ))));
        }
        Ok(Ownership::empty())
    }
}

/// What the HTTP API and the consumer share.
#[derive(Clone)]
pub struct Shared {
    /// The store.
    pub store: FmnStore,
    /// The compiled preferences.
    pub cache: Arc<PreferenceCache>,
    /// Ownership.
    pub ownership: Arc<Ownership>,
    /// Deliveries.
    pub deliverer: Arc<Deliverer>,
    /// The hub's publisher, once the consumer started.
    pub publisher: Arc<OnceLock<Publisher>>,
    /// The changing endpoints' token (empty: off).
    pub api_token: String,
}

impl Shared {
    /// Reloads one user from the store into the cache.
    pub fn reload_user(&self, openid: &str) -> Result<Duration, fedhub_storage::StorageError> {
        self.cache
            .reload_user(openid, || self.store.load_user(openid))
    }

    /// Publishes FMN's invalidation message for a user (and reloads the user
    /// here first, so this hub applies the change at once).
    pub fn announce(
        &self,
        title: &str,
        openid: &str,
        context: &str,
        changed: &str,
    ) -> Result<(), String> {
        if let Err(e) = self.reload_user(openid) {
            tracing::warn!(openid, error = %fedhub::error_chain(&e), "user not reloaded");
        }
        let publisher = self
            .publisher
            .get()
            .ok_or_else(|| "the consumer has not started: nothing published".to_string())?;
        publisher
            .publish(
                title,
                json!({"openid": openid, "context": context, "changed": changed}),
            )
            .map(|_| ())
            .map_err(|e| format!("cannot publish {title}: {e}"))
    }
}

/// The notification matcher.
pub struct FMNConsumer {
    config: FmnConfig,
    shared: Shared,
    metrics: Option<Metrics>,
    state: Option<StateCounters>,
    /// `DigestProducer`: every interval, each queue whose `batch_count` or
    /// `batch_delta` is reached goes out as one delivery (a single message
    /// the normal way); a queue whose preference is gone or disabled is
    /// dropped, as FMN does ([`send_due_digests`]).
    digest: Option<ProducerThread>,
    publish_failing: AtomicBool,
}

struct StateCounters {
    matches: StateCounter,
    ignored: StateCounter,
    reloads: StateCounter,
    users: StateCounter,
}

struct Metrics {
    ignored: IntCounterVec,
    matches: IntCounterVec,
    rule_cache: IntCounterVec,
    ownership_cache: IntCounterVec,
    reloads: IntCounterVec,
    reload_seconds: Histogram,
    rule_errors: IntCounter,
    invalidation_errors: IntCounter,
    cached_users: IntGauge,
    candidates: IntCounter,
    published: IntCounter,
    publish_errors: IntCounter,
    delivery_errors: IntCounter,
}

impl Metrics {
    fn register(registry: &prometheus::Registry) -> Result<Metrics, prometheus::Error> {
        let ignored = IntCounterVec::new(
            Opts::new("fedhub_fmn_messages_ignored_total", "Messages not matched: reason=junk (junk_suffixes), copr_owner (ignored_copr_owners) or own_notification"),
            &["reason"],
        )?;
        let matches = IntCounterVec::new(
            Opts::new(
                "fedhub_fmn_matches_total",
                "Recipients found (a user's preference whose filter matched)",
            ),
            &["context"],
        )?;
        let rule_cache = IntCounterVec::new(
            Opts::new("fedhub_fmn_rule_cache_total", "Rule results: result=hit (taken from the per-message memo shared across users) or miss (evaluated)"),
            &["result"],
        )?;
        let ownership_cache = IntCounterVec::new(
            Opts::new(
                "fedhub_fmn_ownership_cache_total",
                "Package ownership and group lookups: result=hit, miss (asked the source) or error",
            ),
            &["result"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "fedhub_fmn_cache_reloads_total",
                "Preference cache loads: scope=user (an invalidation message) or full (startup)",
            ),
            &["scope"],
        )?;
        let reload_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "fedhub_fmn_cache_reload_seconds",
                "Time to reload one user's preferences from the store on an invalidation message",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0,
            ]),
        )?;
        let rule_errors = IntCounter::new(
            "fedhub_fmn_rule_errors_total",
            "Rule evaluations that failed (the filter did not match)",
        )?;
        let invalidation_errors = IntCounter::new("fedhub_fmn_invalidation_errors_total", "Invalidation messages that could not be applied (no openid, unknown user, store failure)")?;
        let cached_users = IntGauge::new(
            "fedhub_fmn_cached_users",
            "Users with sendable preferences in memory",
        )?;
        let candidates = IntCounter::new(
            "fedhub_fmn_candidates_total",
            "Users evaluated, as chosen by the index",
        )?;
        let published = IntCounter::new(
            "fedhub_fmn_notifications_published_total",
            "fmn.notification messages published",
        )?;
        let publish_errors = IntCounter::new(
            "fedhub_fmn_publish_errors_total",
            "fmn.* messages that could not be published",
        )?;
        let delivery_errors = IntCounter::new(
            "fedhub_fmn_delivery_submit_errors_total",
            "Matches that could not be handed to delivery or queued for a digest",
        )?;
        fedhub::register_metrics(
            registry,
            vec![
                Box::new(ignored.clone()),
                Box::new(matches.clone()),
                Box::new(rule_cache.clone()),
                Box::new(ownership_cache.clone()),
                Box::new(reloads.clone()),
                Box::new(reload_seconds.clone()),
                Box::new(rule_errors.clone()),
                Box::new(invalidation_errors.clone()),
                Box::new(cached_users.clone()),
                Box::new(candidates.clone()),
                Box::new(published.clone()),
                Box::new(publish_errors.clone()),
                Box::new(delivery_errors.clone()),
            ],
        )?;
        Ok(Metrics {
            ignored,
            matches,
            rule_cache,
            ownership_cache,
            reloads,
            reload_seconds,
            rule_errors,
            invalidation_errors,
            cached_users,
            candidates,
            published,
            publish_errors,
            delivery_errors,
        })
    }
}

fn open_error(key: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("[consumers.{NAME}] {key}: {e}"))
}

impl FMNConsumer {
    /// Builds the consumer: opens the store (tables created if missing), loads
    /// and compiles every preference, starts delivery.
    pub fn from_config(config: &FmnConfig) -> Result<FMNConsumer, ConfigError> {
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
        let store = FmnStore::open(db.clone())
            .map_err(|e| open_error("database", fedhub::error_chain(&e)))?;
        let deliverer = Deliverer::start(db, config.delivery.clone(), &registry)
            .map_err(|e| open_error("delivery", fedhub::error_chain(&e)))?;
        FMNConsumer::new(config.clone(), store, config.ownership()?, deliverer)
    }

    /// Builds the consumer over a store and deliverer already open.
    pub fn new(
        config: FmnConfig,
        store: FmnStore,
        ownership: Ownership,
        deliverer: Deliverer,
    ) -> Result<FMNConsumer, ConfigError> {
        let cache = Arc::new(PreferenceCache::new(
            RuleLibrary::standard(),
            config.backends.clone(),
        ));
        let began = Instant::now();
        let all = store
            .load_all()
            .map_err(|e| open_error("database", fedhub::error_chain(&e)))?;
        let rows = all.len();
        cache.load_all(all);
        tracing::info!(
            preferences = rows,
            users = cache.user_count(),
            filters = cache.filter_count(),
            index_keys = cache.index_keys(),
            unindexed_users = cache.unindexed_count(),
            ownership = %ownership.describe(),
            took_ms = began.elapsed().as_millis() as u64,
            "notification preferences loaded"
        );
        Ok(FMNConsumer {
            shared: Shared {
                store,
                cache,
                ownership: Arc::new(ownership),
                deliverer: Arc::new(deliverer),
                publisher: Arc::default(),
                api_token: config.api_token.clone(),
            },
            config,
            metrics: None,
            state: None,
            digest: None,
            publish_failing: AtomicBool::new(false),
        })
    }

    /// What the consumer and its HTTP API share.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    fn ignore(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.ignored.with_label_values(&[reason]).inc();
        }
        if let Some(s) = &self.state {
            s.ignored.inc();
        }
    }

    /// Applies an `fmn.*.update`: reloads the user it names.
    fn invalidate(&self, body: &Map<String, Value>) -> Result<(), ConsumerError> {
        let fail = |text: String| {
            if let Some(m) = &self.metrics {
                m.invalidation_errors.inc();
            }
            ConsumerError::msg(text)
        };
        let Some(openid) = body
            .get("msg")
            .and_then(|m| m.get("openid"))
            .and_then(Value::as_str)
        else {
            return Err(fail(format!(
                "invalidation message without msg.openid (got msg = {}): expected {{\"openid\": ..., \"context\": ..., \"changed\": ...}}",
                truncate(&body.get("msg").cloned().unwrap_or(Value::Null).to_string(), 200)
            )));
        };
        let took = self.shared.reload_user(openid).map_err(|e| {
            fail(format!(
                "cannot reload the preferences of {openid:?}: {}",
                fedhub::error_chain(&e)
            ))
        })?;
        if let Some(m) = &self.metrics {
            m.reload_seconds.observe(took.as_secs_f64());
        }
        if let Some(s) = &self.state {
            s.reloads.inc();
        }
        if self.shared.cache.user(openid).is_none()
            && !self.shared.store.user_exists(openid).unwrap_or(true)
        {
            return Err(fail(format!(
                "invalidation message for unknown user {openid:?}: nothing to reload"
            )));
        }
        tracing::debug!(openid, took_us = took.as_micros() as u64, "user reloaded");
        Ok(())
    }

    fn invalidate_ownership(&self, title: &str, facts: &MessageFacts<'_>) {
        let o = &self.shared.ownership;
        if title.starts_with("pkgdb.") || is_pagure_access(title) {
            let mut packages = facts.packages().clone();
            if is_pagure_access(title) {
                if let Some(name) = facts.msg().pointer("/project/name").and_then(Value::as_str) {
                    packages.insert(name.to_string());
                }
            }
            o.invalidate_packages(facts.usernames(), &packages);
        } else if title.starts_with("fas.group.") {
            let group = facts.msg().get("group").and_then(Value::as_str);
            o.invalidate_groups(facts.usernames(), group);
        }
    }

    fn autocreate(&self, title: &str, body: &Map<String, Value>) {
        let msg = body.get("msg").unwrap_or(&Value::Null);
        let user = match title {
            "fas.group.member.sponsor"
                if msg.get("group").and_then(Value::as_str) == Some("packager") =>
            {
                msg.get("user").and_then(Value::as_str)
            }
            "fedbadges.person.login.first" => msg.pointer("/user/username").and_then(Value::as_str),
            _ => None,
        };
        let Some(user) = user.filter(|u| !u.is_empty() && !u.contains(['/', ' ', '.'])) else {
            return;
        };
        let openid = format!("{user}.id.fedoraproject.org");
        let email = format!("{user}@fedoraproject.org");
        match self.shared.store.create_user(
            &openid,
            &[("email".to_string(), email)],
            self.shared.cache.library(),
        ) {
            Ok(true) => {
                tracing::info!(openid, "user created with FMN's defaults");
                if let Err(e) =
                    self.shared
                        .announce("fmn.preference.update", &openid, "email", "filters")
                {
                    tracing::warn!(openid, error = %e, "new user not announced");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(openid, error = %e, "user not created"),
        }
    }

    fn deliver(&self, recipient: &Recipient, facts: &MessageFacts<'_>, ctx: &Context) {
        let msg_id = facts
            .body()
            .get("msg_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let subtitle = facts.subtitle();
        let link = facts.link().to_string();
        match ctx.publish(
            NOTIFICATION_TOPIC,
            json!({
                "recipient": recipient.openid,
                "context": recipient.context,
                "filter": recipient.filter_name,
                "filter_id": recipient.filter_id,
                "msg_id": msg_id,
                "topic": facts.topic(),
                "subtitle": subtitle,
                "link": link,
            }),
        ) {
            Ok(_) => {
                self.publish_failing.store(false, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.published.inc();
                }
            }
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.publish_errors.inc();
                }
                // Once per failure streak: a hub without [publish] would
                // otherwise log every match.
                if !self.publish_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(openid = %recipient.openid, error = %e, "fmn.notification not published (counted in fedhub_fmn_publish_errors_total; logged again after a success)");
                }
            }
        }
        if !matches!(recipient.context.as_str(), "email" | "webhook") {
            return;
        }
        for address in &recipient.detail_values {
            let notification = Notification {
                openid: recipient.openid.clone(),
                context: recipient.context.clone(),
                address: address.clone(),
                filter_name: recipient.filter_name.clone(),
                filter_id: recipient.filter_id,
                msg_id: msg_id.clone(),
                topic: facts.topic().to_string(),
                subtitle: subtitle.clone(),
                link: link.clone(),
                message: Value::Object(facts.body().clone()),
            };
            let result = if recipient.batch {
                serde_json::to_string(&notification)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        self.shared
                            .store
                            .enqueue(&recipient.openid, &recipient.context, &text)
                            .map_err(|e| fedhub::error_chain(&e))
                    })
            } else {
                self.shared
                    .deliverer
                    .submit(Outgoing::Single(notification))
                    .map_err(|e| fedhub::error_chain(&e))
            };
            if let Err(e) = result {
                if let Some(m) = &self.metrics {
                    m.delivery_errors.inc();
                }
                tracing::error!(openid = %recipient.openid, context = %recipient.context, address, error = %e, "notification not handed to delivery");
            }
        }
    }

    fn fired(&self, recipient: &Recipient) {
        match self.shared.store.filter_fired(recipient.filter_id) {
            Ok(true) => {
                if let Err(e) = self.shared.announce(
                    "fmn.filter.update",
                    &recipient.openid,
                    &recipient.context,
                    "active",
                ) {
                    if let Some(m) = &self.metrics {
                        m.publish_errors.inc();
                    }
                    tracing::warn!(openid = %recipient.openid, error = %e, "oneshot filter deactivated but not announced");
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(filter_id = recipient.filter_id, error = %fedhub::error_chain(&e), "oneshot filter not deactivated")
            }
        }
    }

    fn export_counters(&self) {
        let Some(m) = &self.metrics else { return };
        let c = self.shared.cache.counters();
        let sync = |counter: &IntCounter, value: u64| {
            let now = counter.get();
            if value > now {
                counter.inc_by(value - now);
            }
        };
        sync(
            &m.rule_cache.with_label_values(&["hit"]),
            c.rule_hits.load(Ordering::Relaxed),
        );
        sync(
            &m.rule_cache.with_label_values(&["miss"]),
            c.rule_misses.load(Ordering::Relaxed),
        );
        sync(&m.rule_errors, c.rule_errors.load(Ordering::Relaxed));
        sync(&m.candidates, c.candidates.load(Ordering::Relaxed));
        sync(
            &m.reloads.with_label_values(&["user"]),
            c.user_reloads.load(Ordering::Relaxed),
        );
        let o = self.shared.ownership.counters();
        sync(
            &m.ownership_cache.with_label_values(&["hit"]),
            o.hits.load(Ordering::Relaxed),
        );
        sync(
            &m.ownership_cache.with_label_values(&["miss"]),
            o.misses.load(Ordering::Relaxed),
        );
        sync(
            &m.ownership_cache.with_label_values(&["error"]),
            o.errors.load(Ordering::Relaxed),
        );
        m.cached_users.set(self.shared.cache.user_count() as i64);
        if let Some(s) = &self.state {
            s.users.set(self.shared.cache.user_count() as u64);
        }
    }
}

fn is_pagure_access(title: &str) -> bool {
    // pagure.project.(user|group).(access.updated|added|removed)
    let Some(rest) = title.strip_prefix("pagure.project.") else {
        return false;
    };
    let Some((kind, change)) = rest.split_once('.') else {
        return false;
    };
    matches!(kind, "user" | "group") && matches!(change, "access.updated" | "added" | "removed")
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl Consumer for FMNConsumer {
    fn start(&mut self, ctx: &mut Context) -> Result<(), ConsumerError> {
        match Metrics::register(ctx.metrics()) {
            Ok(m) => {
                m.reloads.with_label_values(&["full"]).inc();
                self.metrics = Some(m);
            }
            Err(e) => tracing::warn!(error = %e, "cannot register notification metrics"),
        }
        self.state = Some(StateCounters {
            matches: ctx.state_counter("matches_total"),
            ignored: ctx.state_counter("ignored_total"),
            reloads: ctx.state_counter("user_reloads_total"),
            users: ctx.state_counter("cached_users"),
        });
        let _ = self.shared.publisher.set(ctx.publisher().clone());
        if self.digest.is_none() {
            let interval = Duration::from_secs_f64(self.config.digest_interval_secs);
            let producer = ctx.producer(DIGEST_PRODUCER, "fmn.consumer.producer", interval);
            let shared = self.shared.clone();
            match ProducerThread::start(producer, interval, false, move || {
                send_due_digests(&shared).map(|_| None)
            }) {
                Ok(thread) => self.digest = Some(thread),
                Err(e) => tracing::error!(error = %e, "cannot start the digest producer"),
            }
        }
        self.export_counters();
        Ok(())
    }

    fn consume(&mut self, envelope: &Envelope, ctx: &mut Context) -> Result<(), ConsumerError> {
        let topic = envelope.topic();
        let title = meta::title(topic);
        if title == NOTIFICATION_TOPIC {
            self.ignore("own_notification");
            return Ok(());
        }
        if self
            .config
            .junk_suffixes
            .iter()
            .any(|s| topic.ends_with(s.as_str()))
        {
            self.ignore("junk");
            return Ok(());
        }
        // The hub's parse of the body, shared with the other consumers.
        let body = envelope.json();
        if title.starts_with("copr.") && !self.config.ignored_copr_owners.is_empty() {
            if let Some(owner) = body
                .get("msg")
                .and_then(|m| m.get("owner"))
                .and_then(Value::as_str)
            {
                if self.config.ignored_copr_owners.iter().any(|o| o == owner) {
                    self.ignore("copr_owner");
                    return Ok(());
                }
            }
        }
        let mut outcome = Ok(());
        if INVALIDATION_TITLES.contains(&title) {
            outcome = self.invalidate(body);
        }
        let facts = MessageFacts::new(topic, body);
        self.invalidate_ownership(title, &facts);
        if self.config.autocreate {
            self.autocreate(title, body);
        }
        let recipients = self.shared.cache.recipients(&facts, &self.shared.ownership);
        for r in &recipients {
            if let Some(m) = &self.metrics {
                m.matches.with_label_values(&[&r.context]).inc();
            }
            self.deliver(r, &facts, ctx);
        }
        if let Some(s) = &self.state {
            s.matches.add(recipients.len() as u64);
        }
        for r in recipients.iter().filter(|r| r.filter_oneshot) {
            self.fired(r);
        }
        self.export_counters();
        outcome
    }

    fn stop(&mut self, _ctx: &mut Context) {
        self.digest = None;
    }

    fn http_routes(&self) -> Option<HttpRoutes> {
        Some(crate::http::routes(self.shared.clone()))
    }

    fn module(&self) -> &str {
        "fmn.consumer"
    }
}

/// One digest run; returns how many digests went out.
pub fn send_due_digests(shared: &Shared) -> Result<usize, String> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let queues = shared.store.queues().map_err(|e| fedhub::error_chain(&e))?;
    let mut sent = 0;
    for q in queues {
        let pref = shared.cache.user(&q.openid).and_then(|u| {
            u.preferences
                .iter()
                .find(|p| p.context == q.context)
                .cloned()
        });
        let due = match &pref {
            None => true,
            Some(p) => {
                p.batch_count.is_some_and(|n| q.count >= n)
                    || p.batch_delta.is_some_and(|d| now - q.oldest >= d as f64)
                    || !p.should_batch()
            }
        };
        if !due {
            continue;
        }
        let queued = shared
            .store
            .take_queued(&q.openid, &q.context)
            .map_err(|e| fedhub::error_chain(&e))?;
        if pref.is_none() {
            tracing::info!(openid = %q.openid, context = %q.context, dropped = queued.len(), "digest queue dropped: the preference is disabled or gone");
            continue;
        }
        let mut by_address: std::collections::BTreeMap<String, Vec<Notification>> =
            std::collections::BTreeMap::new();
        for text in queued {
            match serde_json::from_str::<Notification>(&text) {
                Ok(n) => by_address.entry(n.address.clone()).or_default().push(n),
                Err(e) => {
                    tracing::error!(openid = %q.openid, error = %e, "queued message unreadable; skipped")
                }
            }
        }
        for (address, mut notifications) in by_address {
            let outgoing = if notifications.len() == 1 {
                Outgoing::Single(notifications.remove(0))
            } else {
                Outgoing::Digest {
                    openid: q.openid.clone(),
                    context: q.context.clone(),
                    address,
                    notifications,
                }
            };
            shared
                .deliverer
                .submit(outgoing)
                .map_err(|e| fedhub::error_chain(&e))?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// The factory the hub registers: `FMNConsumer`, every topic, disabled
/// unless enabled, routes under `/notifications`.
pub fn factory() -> ConsumerFactory {
    ConsumerFactory::new(NAME, |settings| {
        let config: FmnConfig = settings.parse()?;
        Ok(Box::new(FMNConsumer::from_config(&config)?))
    })
    .topics(["*"])
    .http_prefix(HTTP_PREFIX)
    .example_config(include_str!("../fedhub.toml"))
}
