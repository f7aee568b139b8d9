//! Every enabled preference compiled in memory, with an index so that a
//! message evaluates only the users whose filters could match it (a prefilter
//! like FMN 3.x's tracked cache), and a per-message memo of rule results
//! shared across users (FMN's `rule_cache`).
//!
//! The index: each filter is filed under the most selective key one of its
//! positive rules requires ([`Anchor`]): a username, a package, the users
//! owning a package, the topic's title, category or last segment. A message
//! looks up its own keys and evaluates only those users, plus the few whose
//! filters require nothing indexable. Evaluation itself is FMN's: a filter
//! matches when all its rules do (negation applied, an erroring rule does not
//! match), and the first matching filter of a preference wins.
//!
//! Reloads are per user (an invalidation message names the user) and
//! serialized, each reading the store after the one before it, so a later
//! reload never installs older rows.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::Serialize;
use serde_json::Value;

use crate::model::Preference;
use crate::ownership::Ownership;
use crate::rules::{Anchor, CompiledRule, MessageFacts, RuleLibrary};

/// A rule of a compiled filter.
#[derive(Debug, Clone)]
pub struct FilterRule {
    /// The rule, or why it could not be compiled (it never matches then).
    pub rule: Result<Arc<CompiledRule>, String>,
    /// Inverted.
    pub negated: bool,
    /// FMN's `cache_key`: the same code path, arguments and negation share
    /// one result per message, across users.
    pub key: u64,
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Deactivated after firing.
    pub oneshot: bool,
    /// Rules, in order.
    pub rules: Vec<FilterRule>,
    /// The index key, if a positive rule gives one.
    pub anchor: Option<Anchor>,
}

/// A compiled, sendable preference.
#[derive(Debug, Clone)]
pub struct CompiledPreference {
    /// Row id.
    pub id: i64,
    /// The context.
    pub context: String,
    /// Detail values.
    pub detail_values: Vec<String>,
    /// Digest: `batch_delta`.
    pub batch_delta: Option<i64>,
    /// Digest: `batch_count`.
    pub batch_count: Option<i64>,
    /// Active filters.
    pub filters: Vec<CompiledFilter>,
}

impl CompiledPreference {
    /// Whether matches are queued for a digest.
    pub fn should_batch(&self) -> bool {
        self.batch_delta.is_some() || self.batch_count.is_some()
    }
}

/// One user's compiled preferences.
#[derive(Debug, Clone, Default)]
pub struct UserEntry {
    /// Sendable preferences of the contexts in use.
    pub preferences: Vec<CompiledPreference>,
    /// Rules that failed to compile (code path and error).
    pub broken_rules: Vec<(String, String)>,
    /// Reloads of this user since startup.
    pub reloads: u64,
}

/// A recipient of one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recipient {
    /// The user.
    pub openid: String,
    /// The context.
    pub context: String,
    /// Detail values to send to.
    pub detail_values: Vec<String>,
    /// The filter that matched.
    pub filter_id: i64,
    /// Its name.
    pub filter_name: String,
    /// Whether it is oneshot.
    pub filter_oneshot: bool,
    /// Whether the preference queues for a digest.
    pub batch: bool,
}

/// Counters of the cache (exported as metrics and in `/state`).
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Rule results taken from the per-message memo.
    pub rule_hits: AtomicU64,
    /// Rule results computed.
    pub rule_misses: AtomicU64,
    /// Rule evaluations that failed (the filter did not match).
    pub rule_errors: AtomicU64,
    /// Users evaluated (candidates from the index).
    pub candidates: AtomicU64,
    /// Per-user reloads.
    pub user_reloads: AtomicU64,
    /// Full loads.
    pub full_loads: AtomicU64,
    /// Microseconds spent reloading.
    pub reload_micros: AtomicU64,
}

/// The compiled preferences and their index.
pub struct PreferenceCache {
    library: Arc<RuleLibrary>,
    contexts: Vec<String>,
    users: DashMap<String, Arc<UserEntry>>,
    index: DashMap<Anchor, HashSet<String>>,
    unindexed: DashMap<String, ()>,
    reload_lock: Mutex<()>,
    counters: Arc<CacheCounters>,
}

impl PreferenceCache {
    /// An empty cache keeping the preferences of `contexts` (FMN's `fmn.backends`).
    pub fn new(library: Arc<RuleLibrary>, contexts: Vec<String>) -> PreferenceCache {
        PreferenceCache {
            library,
            contexts,
            users: DashMap::new(),
            index: DashMap::new(),
            unindexed: DashMap::new(),
            reload_lock: Mutex::new(()),
            counters: Arc::default(),
        }
    }

    /// The rule library.
    pub fn library(&self) -> &Arc<RuleLibrary> {
        &self.library
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<CacheCounters> {
        &self.counters
    }

    /// Users with at least one sendable preference.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Compiled filters in all.
    pub fn filter_count(&self) -> usize {
        self.users
            .iter()
            .map(|u| u.preferences.iter().map(|p| p.filters.len()).sum::<usize>())
            .sum()
    }

    /// Keys in the index.
    pub fn index_keys(&self) -> usize {
        self.index.len()
    }

    /// Users evaluated on every message (no indexable filter).
    pub fn unindexed_count(&self) -> usize {
        self.unindexed.len()
    }

    /// A user's compiled entry.
    pub fn user(&self, openid: &str) -> Option<Arc<UserEntry>> {
        self.users.get(openid).map(|e| e.clone())
    }

    /// Replaces everything with `preferences` (startup).
    pub fn load_all(&self, preferences: Vec<Preference>) {
        let began = Instant::now();
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.users.clear();
        self.index.clear();
        self.unindexed.clear();
        let mut by_user: HashMap<String, Vec<Preference>> = HashMap::new();
        for p in preferences {
            by_user.entry(p.openid.clone()).or_default().push(p);
        }
        for (openid, prefs) in by_user {
            self.install(&openid, &prefs, 0);
        }
        self.counters.full_loads.fetch_add(1, Ordering::Relaxed);
        self.counters
            .reload_micros
            .fetch_add(began.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Reloads one user: `load` reads the user's rows (inside the reload
    /// lock, so reloads apply in the order they read). Returns the time taken.
    pub fn reload_user<E>(
        &self,
        openid: &str,
        load: impl FnOnce() -> Result<Vec<Preference>, E>,
    ) -> Result<Duration, E> {
        let began = Instant::now();
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let prefs = load()?;
        let reloads = self.users.get(openid).map(|e| e.reloads).unwrap_or(0) + 1;
        self.remove(openid);
        self.install(openid, &prefs, reloads);
        let took = began.elapsed();
        self.counters.user_reloads.fetch_add(1, Ordering::Relaxed);
        self.counters
            .reload_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        Ok(took)
    }

    fn remove(&self, openid: &str) {
        if let Some((_, old)) = self.users.remove(openid) {
            for f in old.preferences.iter().flat_map(|p| &p.filters) {
                if let Some(anchor) = &f.anchor {
                    let empty = self
                        .index
                        .get_mut(anchor)
                        .map(|mut set| {
                            set.remove(openid);
                            set.is_empty()
                        })
                        .unwrap_or(false);
                    if empty {
                        self.index.remove_if(anchor, |_, set| set.is_empty());
                    }
                }
            }
        }
        self.unindexed.remove(openid);
    }

    fn install(&self, openid: &str, prefs: &[Preference], reloads: u64) {
        let mut entry = UserEntry {
            reloads,
            ..UserEntry::default()
        };
        for p in prefs {
            if !self.contexts.iter().any(|c| c == &p.context) || !p.can_send() {
                continue;
            }
            let mut filters = Vec::new();
            for f in p.filters.iter().filter(|f| f.active) {
                let rules: Vec<FilterRule> = f
                    .rules
                    .iter()
                    .map(|r| {
                        let rule = self
                            .library
                            .compile(&r.code_path, &r.arguments)
                            .map(Arc::new)
                            .map_err(|e| e.to_string());
                        if let Err(e) = &rule {
                            entry.broken_rules.push((r.code_path.clone(), e.clone()));
                        }
                        FilterRule {
                            key: rule_key(&r.code_path, &r.arguments, r.negated),
                            rule,
                            negated: r.negated,
                        }
                    })
                    .collect();
                let anchor = Anchor::best(
                    rules
                        .iter()
                        .filter(|r| !r.negated)
                        .filter_map(|r| r.rule.as_ref().ok().and_then(|c| c.anchor())),
                );
                filters.push(CompiledFilter {
                    id: f.id,
                    name: f.name.clone(),
                    oneshot: f.oneshot,
                    rules,
                    anchor,
                });
            }
            entry.preferences.push(CompiledPreference {
                id: p.id,
                context: p.context.clone(),
                detail_values: p.detail_values.clone(),
                batch_delta: p.batch_delta,
                batch_count: p.batch_count,
                filters,
            });
        }
        for e in &entry.broken_rules {
            tracing::warn!(openid, rule = %e.0, error = %e.1, "rule not usable; its filter never matches");
        }
        if entry.preferences.is_empty() {
            return;
        }
        for f in entry.preferences.iter().flat_map(|p| &p.filters) {
            // A filter without rules never matches: it needs no entry.
            if f.rules.is_empty() {
                continue;
            }
            match &f.anchor {
                Some(anchor) => {
                    self.index
                        .entry(anchor.clone())
                        .or_default()
                        .insert(openid.to_string());
                }
                None => {
                    self.unindexed.insert(openid.to_string(), ());
                }
            }
        }
        self.users.insert(openid.to_string(), Arc::new(entry));
    }

    /// The users worth evaluating for a message.
    fn candidates(&self, facts: &MessageFacts<'_>, ownership: &Ownership) -> Vec<String> {
        let mut out: HashSet<String> = HashSet::new();
        let mut add = |anchor: Anchor| {
            if let Some(set) = self.index.get(&anchor) {
                out.extend(set.iter().cloned());
            }
        };
        add(Anchor::Title(facts.title().to_string()));
        add(Anchor::Category(facts.category().to_string()));
        add(Anchor::LastSegment(facts.last_segment().to_string()));
        for u in facts.usernames() {
            add(Anchor::User(u.clone()));
        }
        for p in facts.packages() {
            add(Anchor::Package(p.clone()));
            match ownership.package_users(p) {
                Ok(users) => {
                    for u in users.iter() {
                        add(Anchor::PackageOwner(u.clone()));
                    }
                }
                Err(e) => {
                    tracing::warn!(package = %p, error = %e, "package owners unknown; user_package filters skip this message")
                }
            }
        }
        for u in self.unindexed.iter() {
            out.insert(u.key().clone());
        }
        let mut out: Vec<String> = out.into_iter().collect();
        out.sort();
        out
    }

    /// FMN's `recipients`: for each candidate user and preference, the first
    /// matching filter.
    pub fn recipients(&self, facts: &MessageFacts<'_>, ownership: &Ownership) -> Vec<Recipient> {
        let candidates = self.candidates(facts, ownership);
        self.counters
            .candidates
            .fetch_add(candidates.len() as u64, Ordering::Relaxed);
        let mut memo: HashMap<u64, bool> = HashMap::new();
        let mut out = Vec::new();
        for openid in candidates {
            let Some(entry) = self.user(&openid) else {
                continue;
            };
            for pref in &entry.preferences {
                if let Some(f) = pref
                    .filters
                    .iter()
                    .find(|f| self.filter_matches(f, facts, ownership, &mut memo))
                {
                    out.push(Recipient {
                        openid: openid.clone(),
                        context: pref.context.clone(),
                        detail_values: pref.detail_values.clone(),
                        filter_id: f.id,
                        filter_name: f.name.clone(),
                        filter_oneshot: f.oneshot,
                        batch: pref.should_batch(),
                    });
                }
            }
        }
        out
    }

    fn filter_matches(
        &self,
        filter: &CompiledFilter,
        facts: &MessageFacts<'_>,
        ownership: &Ownership,
        memo: &mut HashMap<u64, bool>,
    ) -> bool {
        if filter.rules.is_empty() {
            return false;
        }
        for r in &filter.rules {
            let value = match memo.get(&r.key) {
                Some(v) => {
                    self.counters.rule_hits.fetch_add(1, Ordering::Relaxed);
                    *v
                }
                None => {
                    self.counters.rule_misses.fetch_add(1, Ordering::Relaxed);
                    let v = match &r.rule {
                        Ok(rule) => match rule.evaluate(facts, ownership) {
                            Ok(v) => Some(v != r.negated),
                            Err(e) => {
                                self.counters.rule_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(error = %e, "rule failed; the filter does not match");
                                None
                            }
                        },
                        Err(_) => None,
                    };
                    // An error fails the filter, negated or not.
                    let v = v.unwrap_or(false);
                    memo.insert(r.key, v);
                    v
                }
            };
            if !value {
                return false;
            }
        }
        true
    }

    /// A user's compiled filters as JSON (for `/notifications/cache/<openid>`).
    pub fn describe_user(&self, openid: &str) -> Option<Value> {
        let entry = self.user(openid)?;
        Some(serde_json::json!({
            "openid": openid,
            "reloads": entry.reloads,
            "broken_rules": entry.broken_rules.iter().map(|(p, e)| serde_json::json!({"code_path": p, "error": e})).collect::<Vec<_>>(),
            "preferences": entry.preferences.iter().map(|p| serde_json::json!({
                "context": p.context,
                "detail_values": p.detail_values,
                "batch_delta": p.batch_delta,
                "batch_count": p.batch_count,
                "filters": p.filters.iter().map(|f| serde_json::json!({
                    "id": f.id,
                    "name": f.name,
                    "oneshot": f.oneshot,
                    "rules": f.rules.len(),
                    "indexed_by": f.anchor.as_ref().map(|a| format!("{a:?}")),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }))
    }
}

/// FMN's `Rule.cache_key`, as a hash.
fn rule_key(code_path: &str, arguments: &Value, negated: bool) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    code_path.hash(&mut h);
    negated.hash(&mut h);
    arguments.to_string().hash(&mut h);
    h.finish()
}
