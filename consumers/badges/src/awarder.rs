//! Matching a message against the rules, in fedbadges' documented order, and
//! awarding:
//!
//! 0. a message whose `msg_id` was already seen is ignored, and one whose own
//!    timestamp is older than the configured age triggers nothing (both counted);
//! 1. the trigger;
//! 2. candidate recipients: the rule's `recipient` template (mapped by the
//!    nick2fas/email2fas/openid2fas flags) or the message's users minus the
//!    banned system users;
//! 3. IP-address-like names (`192.168.*`, `10.*`) dropped;
//! 4. people who hold the badge or opted out dropped;
//! 5. the criteria, evaluated once per message, answered by the history
//!    store's [`Store::count`];
//! 6. the award (idempotent; published with it, see [`crate::tahrir`]); the
//!    leaderboard follows in passes ([`crate::ranks`]).
//!
//! What makes this cheap per message:
//!
//! - the rules a topic can trigger are worked out once per topic (a trigger
//!   made of `topic` and `category` leaves depends on the topic alone); only
//!   those rules are looked at, and only triggers with an expression that the
//!   topic does not decide run it;
//! - who holds which badge, and who opted out, is read from Tahrir's tables
//!   once per person and then kept (awards only add to it; it is read again
//!   after [`PERSON_TTL`], and the award itself checks both again in its
//!   transaction);
//! - a count the criteria of several rules ask for with the same filter is
//!   asked of the history store once per message (the store's in-memory index
//!   answers it);
//! - trigger expressions whose leading operands read only the topic are
//!   ruled out per topic ([`Sandbox::decide_by_topic`]), and an expression
//!   several rules share is evaluated once per message;
//! - awards do not move the leaderboard: [`RankKeeper`] passes do, once for
//!   many awards.
//!
//! Any error while a rule is evaluated (a template naming a missing field, an
//! expression that fails or runs too long, a query the store refuses) skips
//! that rule for that message, and is counted and kept as the rule's last
//! error; the other rules go on. Upstream's last step, checking the person
//! exists in FAS, has no counterpart here (no account system is reachable).

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use fedhub_history::{Filter, Order, Store};
use rhai::Dynamic;
use serde_json::{json, Map, Value};

use crate::expr::{to_dynamic, Expr, ExprError, Sandbox};
use crate::ranks::RankKeeper;
use crate::rules::{
    format_text, trigger_matches, Condition, Criteria, LoadError, Operation, Pattern, Rule,
    Substitutions, Template, Trigger,
};
use crate::tahrir::{AwardError, Badge, Tahrir};

/// How long what the awarder read of a person (badges held, opted out) is
/// trusted before it is read again.
pub const PERSON_TTL: Duration = Duration::from_secs(60);

/// People remembered at most; past this the memory starts again.
const PEOPLE_KEPT: usize = 200_000;

/// Topics whose triggered rules are remembered at most (per rule set).
const TOPICS_KEPT: usize = 10_000;

/// Users never given badges on the default (message users) path: system
/// accounts (fedbadges' `banned_usernames`).
pub const BANNED_USERS: [&str; 5] = ["bodhi", "oscar", "apache", "koji", "taskotron"];

/// Why a rule could not be evaluated for a message.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A template named a field the message lacks.
    #[error(transparent)]
    Template(#[from] crate::rules::MissingField),
    /// An expression failed, returned the wrong type or ran past a limit.
    #[error(transparent)]
    Expression(#[from] ExprError),
    /// A filter value has the wrong type after substitution.
    #[error("filter {key}: {problem}")]
    Filter {
        /// The filter key.
        key: String,
        /// What was wrong.
        problem: String,
    },
    /// The history store failed.
    #[error("history query failed: {0}")]
    History(#[from] fedhub_history::StoreError),
    /// Tahrir's tables could not be read or written.
    #[error("badge database: {0}")]
    Storage(#[from] fedhub_storage::StorageError),
    /// The award could not be published (and was rolled back).
    #[error(transparent)]
    Award(#[from] AwardError),
}

/// Counters of what the awarder did; shared with HTTP and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages looked at.
    pub messages: AtomicU64,
    /// Messages ignored because their `msg_id` was already seen.
    pub duplicates: AtomicU64,
    /// Messages whose timestamp was older than the limit (no awards).
    pub too_old: AtomicU64,
    /// Rule evaluations that ended with an error.
    pub rule_errors: AtomicU64,
    /// Badges awarded.
    pub awards: AtomicU64,
    /// Awards skipped because the person already held the badge (found at insert).
    pub already_held: AtomicU64,
}

impl Counters {
    /// The counters as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "messages_total": self.messages.load(Ordering::Relaxed),
            "duplicates_ignored_total": self.duplicates.load(Ordering::Relaxed),
            "too_old_ignored_total": self.too_old.load(Ordering::Relaxed),
            "rule_errors_total": self.rule_errors.load(Ordering::Relaxed),
            "awards_total": self.awards.load(Ordering::Relaxed),
        })
    }
}

/// A loaded rule with its own counters.
#[derive(Debug)]
pub struct LoadedRule {
    /// The rule.
    pub rule: Rule,
    /// Its badge in Tahrir's shape.
    pub badge: Badge,
    /// Messages that triggered it.
    pub triggered: AtomicU64,
    /// Badges it awarded.
    pub awarded: AtomicU64,
    /// Evaluations that failed.
    pub errors: AtomicU64,
    /// The last evaluation error.
    pub last_error: Mutex<Option<String>>,
}

impl LoadedRule {
    /// Wraps a rule.
    pub fn new(rule: Rule) -> LoadedRule {
        LoadedRule {
            badge: Badge {
                id: rule.badge_id.clone(),
                name: rule.name.clone(),
                image: rule.image_url.clone(),
                description: rule.description.clone(),
                criteria: rule.discussion.clone(),
                tags: rule.tags.join(","),
            },
            rule,
            triggered: AtomicU64::new(0),
            awarded: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }
}

/// The rules in force and the load errors of the last load.
#[derive(Debug, Default)]
pub struct Rules {
    /// The rules, in load order.
    pub rules: Vec<Arc<LoadedRule>>,
    /// Errors of the last load (rules rejected; kept from before if they were loaded).
    pub errors: Vec<LoadError>,
    /// When they were loaded (unix seconds).
    pub loaded_at: f64,
    /// How many times rules were loaded.
    pub generation: u64,
}

impl Rules {
    /// `/badges/rules`: every rule with its counters, and the load errors.
    pub fn to_json(&self) -> Value {
        json!({
            "generation": self.generation,
            "loaded_at": self.loaded_at,
            "rules": self.rules.iter().map(|r| json!({
                "name": r.rule.name,
                "badge_id": r.rule.badge_id,
                "file": r.rule.file.display().to_string(),
                "description": r.rule.description,
                "image_url": r.rule.image_url,
                "triggered_total": r.triggered.load(Ordering::Relaxed),
                "awarded_total": r.awarded.load(Ordering::Relaxed),
                "errors_total": r.errors.load(Ordering::Relaxed),
                "last_error": *r.last_error.lock().unwrap_or_else(|p| p.into_inner()),
            })).collect::<Vec<_>>(),
            "load_errors": self.errors.iter().map(|e| json!({
                "file": e.file.display().to_string(),
                "rule": e.rule,
                "field": e.field,
                "problem": e.problem,
                "error": e.to_string(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The rules, shared between the consumer, the reloader and HTTP.
pub type SharedRules = Arc<RwLock<Arc<Rules>>>;

/// What the awarder is told to do.
#[derive(Debug, Clone)]
pub struct AwarderOptions {
    /// A message older than this (by its own timestamp) awards nothing.
    pub max_message_age_secs: f64,
    /// How many recent `msg_id`s are remembered.
    pub seen_msg_ids: usize,
    /// Where award links point (`<url>/id?id=<msg_id>&is_raw=true&size=extra-large`).
    pub datagrepper_url: String,
}

impl Default for AwarderOptions {
    fn default() -> Self {
        AwarderOptions {
            max_message_age_secs: 86_400.0,
            seen_msg_ids: 200_000,
            datagrepper_url: "https://apps.fedoraproject.org/datagrepper".into(),
        }
    }
}

/// A bounded set of recent `msg_id`s (oldest forgotten first).
#[derive(Debug, Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Seen {
    /// True when `id` was already there.
    fn check_and_add(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return true;
        }
        if self.capacity == 0 {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        false
    }
}

/// One award made for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awarded {
    /// The badge.
    pub badge_id: String,
    /// The person.
    pub user: String,
}

/// What became of one message.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Awards made.
    pub awards: Vec<Awarded>,
    /// Rules that failed on it, with the error.
    pub errors: Vec<(String, String)>,
    /// It was ignored (already seen).
    pub duplicate: bool,
    /// It was too old to award anything.
    pub too_old: bool,
}

/// Publishes a message (`modname.event` topic, body); an error names why.
pub type PublishFn<'a> = &'a (dyn Fn(&str, Value) -> Result<(), String> + Sync);

/// The matching engine.
pub struct Awarder {
    rules: SharedRules,
    sandbox: Sandbox,
    history: Arc<dyn Store>,
    tahrir: Tahrir,
    options: AwarderOptions,
    counters: Arc<Counters>,
    seen: Seen,
    /// What is known of each person lately seen as a candidate.
    people: HashMap<String, Person>,
    /// The leaderboard, moved after the awards.
    ranks: Arc<RankKeeper>,
    /// The rules each topic can trigger, for the rules in force.
    topics: TopicIndex,
}

/// A person as the awarder knows them.
struct Person {
    opted_out: bool,
    /// The badges they hold (holding never ends, so this only grows).
    held: HashSet<String>,
    read_at: Instant,
}

/// Whether a trigger matches, from the topic alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decided {
    Yes,
    No,
    /// An expression has to run.
    Expression,
}

/// What one topic triggers: rule positions, each with whether an expression
/// still has to run.
type Triggered = Arc<[(usize, bool)]>;

/// The rules a topic can trigger, per topic, for one rule set.
#[derive(Default)]
struct TopicIndex {
    /// The rule set this is for (held, so its address is not reused).
    rules: Option<Arc<Rules>>,
    by_topic: HashMap<String, Triggered>,
}

impl TopicIndex {
    fn triggered(&mut self, rules: &Arc<Rules>, topic: &str, sandbox: &Sandbox) -> Triggered {
        let current = self.rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, rules));
        if !current || self.by_topic.len() >= TOPICS_KEPT {
            self.rules = Some(rules.clone());
            self.by_topic.clear();
        }
        if let Some(t) = self.by_topic.get(topic) {
            return t.clone();
        }
        let t = triggered_by(rules, topic, Some(sandbox));
        self.by_topic.insert(topic.to_string(), t.clone());
        t
    }
}

/// The rules `topic` can trigger; expressions' topic guards are consulted
/// when `guards` is given.
fn triggered_by(rules: &Rules, topic: &str, guards: Option<&Sandbox>) -> Triggered {
    rules
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match decide(&r.rule.trigger, topic, guards) {
            Decided::Yes => Some((i, false)),
            Decided::No => None,
            Decided::Expression => Some((i, true)),
        })
        .collect()
}

/// Decides a trigger from the topic where [`trigger_matches`] would not run
/// an expression before the answer is known, or where the expression's topic
/// guard gives its answer ([`Sandbox::decide_by_topic`]): so the expressions
/// that run, and their errors, are the same.
fn decide(trigger: &Trigger, topic: &str, guards: Option<&Sandbox>) -> Decided {
    let yes = |b: bool| if b { Decided::Yes } else { Decided::No };
    match trigger {
        Trigger::Topic(p) => yes(pattern_matches(p, &|v| topic.ends_with(v))),
        Trigger::Category(p) => {
            let category = topic.split('.').nth(3).unwrap_or("");
            yes(pattern_matches(p, &|v| category == v))
        }
        Trigger::Expression(e) => match guards.and_then(|g| g.decide_by_topic(e, topic)) {
            Some(answer) => yes(answer),
            None => Decided::Expression,
        },
        Trigger::All(c) => fold(c, topic, guards, Decided::No, Decided::Yes),
        Trigger::Any(c) => fold(c, topic, guards, Decided::Yes, Decided::No),
        Trigger::Not(c) => match fold(c, topic, guards, Decided::Yes, Decided::No) {
            Decided::Yes => Decided::No,
            Decided::No => Decided::Yes,
            Decided::Expression => Decided::Expression,
        },
    }
}

/// Children in order: the first `stop` reached before any expression is the
/// answer; all children past with none is `otherwise`.
fn fold(
    children: &[Trigger],
    topic: &str,
    guards: Option<&Sandbox>,
    stop: Decided,
    otherwise: Decided,
) -> Decided {
    for c in children {
        match decide(c, topic, guards) {
            d if d == stop => return stop,
            Decided::Expression => return Decided::Expression,
            _ => {}
        }
    }
    otherwise
}

fn pattern_matches(p: &Pattern, f: &impl Fn(&str) -> bool) -> bool {
    match p {
        Pattern::Is(v) => f(v),
        Pattern::Any(ps) => ps.iter().any(|p| pattern_matches(p, f)),
        Pattern::All(ps) => ps.iter().all(|p| pattern_matches(p, f)),
        Pattern::Not(ps) => !ps.iter().any(|p| pattern_matches(p, f)),
    }
}

/// A criteria filter after substitution: (key, value) in rule order.
type FilterValues = Vec<(String, Value)>;

/// The message as the rules see it, each view made once when first needed.
struct View<'a> {
    topic: &'a str,
    body: &'a Map<String, Value>,
    dynamic: OnceCell<Dynamic>,
    subs: Substitutions<'a>,
    /// Counts asked of the history store for this message, by filter.
    counts: std::cell::RefCell<Vec<(FilterValues, u64)>>,
    /// Trigger expressions evaluated on this message, by text (several rules
    /// often share one).
    triggers: std::cell::RefCell<Vec<(&'a str, Result<bool, ExprError>)>>,
}

impl<'a> View<'a> {
    /// The message for expressions: shared, so binding it to each
    /// expression does not copy it.
    fn dynamic(&self) -> Dynamic {
        self.dynamic
            .get_or_init(|| to_dynamic(self.body).into_shared())
            .clone()
    }

    fn subs(&self) -> &Substitutions<'a> {
        &self.subs
    }

    /// A trigger expression's answer for this message, evaluated once per
    /// distinct text.
    fn trigger(&self, sandbox: &Sandbox, expr: &'a Expr) -> Result<bool, ExprError> {
        let known = self
            .triggers
            .borrow()
            .iter()
            .find(|(text, _)| *text == expr.text())
            .map(|(_, answer)| answer.clone());
        if let Some(answer) = known {
            return answer;
        }
        let answer = sandbox.eval_bool(expr, &[("msg", self.dynamic())]);
        self.triggers
            .borrow_mut()
            .push((expr.text(), answer.clone()));
        answer
    }
}

impl Awarder {
    /// An awarder over these rules and stores.
    pub fn new(
        rules: SharedRules,
        sandbox: Sandbox,
        history: Arc<dyn Store>,
        tahrir: Tahrir,
        options: AwarderOptions,
    ) -> Awarder {
        // Rank advances compare with the ranks before: start from right ones.
        if let Err(e) = tahrir.rank_everyone() {
            tracing::warn!(error = %e, "cannot rank the leaderboard");
        }
        Awarder {
            ranks: Arc::new(RankKeeper::new(tahrir.clone())),
            rules,
            sandbox,
            history,
            tahrir,
            seen: Seen {
                capacity: options.seen_msg_ids,
                ..Seen::default()
            },
            options,
            counters: Arc::default(),
            people: HashMap::new(),
            topics: TopicIndex::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The badge tables.
    pub fn tahrir(&self) -> &Tahrir {
        &self.tahrir
    }

    /// The leaderboard's keeper: its passes bring the ranks up to date after
    /// the awards ([`RankKeeper::update`]).
    pub fn ranks(&self) -> Arc<RankKeeper> {
        self.ranks.clone()
    }

    /// Handles one message (topic, whole body) received at `now`.
    pub fn handle(
        &mut self,
        topic: &str,
        body: &Value,
        now: SystemTime,
        publish: PublishFn<'_>,
    ) -> Outcome {
        // A body that is not an object has none of the fields rules read.
        let empty = Map::new();
        self.handle_body(topic, body.as_object().unwrap_or(&empty), now, publish)
    }

    /// [`handle`](Self::handle) for a body already parsed as an object (the
    /// hub's shared parse, [`fedhub::Envelope::json`]).
    pub fn handle_body(
        &mut self,
        topic: &str,
        body: &Map<String, Value>,
        now: SystemTime,
        publish: PublishFn<'_>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = body.get("msg_id").and_then(Value::as_str) {
            if self.seen.check_and_add(id) {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(msg_id = id, "message already seen; ignored");
                outcome.duplicate = true;
                return outcome;
            }
        }
        if let Some(ts) = body.get("timestamp").and_then(Value::as_f64) {
            let now = now
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            if now - ts > self.options.max_message_age_secs {
                self.counters.too_old.fetch_add(1, Ordering::Relaxed);
                outcome.too_old = true;
                return outcome;
            }
        }
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
        let view = View {
            topic,
            body,
            dynamic: OnceCell::new(),
            subs: Substitutions::new(body),
            counts: Default::default(),
            triggers: Default::default(),
        };
        // Expressions see the body's topic: what the envelope's topic decides
        // holds only when they agree.
        let triggered = if body.get("topic").and_then(Value::as_str) == Some(topic) {
            self.topics.triggered(&rules, topic, &self.sandbox)
        } else {
            triggered_by(&rules, topic, None)
        };
        // Who earned what, awarded together once every rule has been looked at.
        let mut earned: Vec<(usize, String)> = Vec::new();
        for &(index, expression) in triggered.iter() {
            let loaded = &rules.rules[index];
            match self.evaluate(loaded, expression, &view) {
                Ok(users) => earned.extend(users.into_iter().map(|u| (index, u))),
                Err(error) => self.failed(loaded, body, &error.to_string(), &mut outcome),
            }
        }
        if !earned.is_empty() {
            self.award(&rules, &earned, body, publish, &mut outcome);
        }
        outcome
    }

    /// Counts and reports a rule that could not be evaluated for a message.
    fn failed(
        &self,
        loaded: &LoadedRule,
        body: &Map<String, Value>,
        text: &str,
        outcome: &mut Outcome,
    ) {
        self.counters.rule_errors.fetch_add(1, Ordering::Relaxed);
        loaded.errors.fetch_add(1, Ordering::Relaxed);
        *loaded.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.to_string());
        tracing::warn!(
            rule = %loaded.rule.name,
            msg_id = body.get("msg_id").and_then(serde_json::Value::as_str).unwrap_or(""),
            error = %text,
            "badge rule skipped for this message"
        );
        outcome
            .errors
            .push((loaded.rule.name.clone(), text.to_string()));
    }

    /// Awards what a message earned (rule position, person), in one
    /// transaction; each award is published as it is made, its rank advance
    /// once they are committed.
    fn award(
        &mut self,
        rules: &Rules,
        earned: &[(usize, String)],
        body: &Map<String, Value>,
        publish: PublishFn<'_>,
        outcome: &mut Outcome,
    ) {
        let msg_id = body.get("msg_id").and_then(Value::as_str).unwrap_or("");
        let link = format!(
            "{}/id?id={}&is_raw=true&size=extra-large",
            self.options.datagrepper_url.trim_end_matches('/'),
            msg_id
        );
        let requests: Vec<(&Badge, &str)> = earned
            .iter()
            .map(|(i, user)| (&rules.rules[*i].badge, user.as_str()))
            .collect();
        let results = match self.tahrir.award_all(&requests, &link, |award| {
            publish("fedbadges.badge.award", award.message.clone())
        }) {
            Ok(results) => results,
            Err(error) => {
                let text = RuleError::from(error).to_string();
                let mut failed: Vec<usize> = earned.iter().map(|(i, _)| *i).collect();
                failed.dedup();
                for i in failed {
                    self.failed(&rules.rules[i], body, &text, outcome);
                }
                return;
            }
        };
        for ((index, user), result) in earned.iter().zip(results) {
            let loaded = &rules.rules[*index];
            let made = match result {
                Ok(made) => made,
                Err(error) => {
                    self.failed(loaded, body, &RuleError::from(error).to_string(), outcome);
                    continue;
                }
            };
            if let Some(person) = self.people.get_mut(user) {
                person.held.insert(loaded.rule.badge_id.clone());
            }
            let Some(award) = made else {
                self.counters.already_held.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.counters.awards.fetch_add(1, Ordering::Relaxed);
            loaded.awarded.fetch_add(1, Ordering::Relaxed);
            tracing::info!(badge = %loaded.rule.badge_id, user = %award.nickname, msg_id, "badge awarded");
            self.ranks.note(&award);
            outcome.awards.push(Awarded {
                badge_id: loaded.rule.badge_id.clone(),
                user: award.nickname,
            });
        }
    }

    /// What is known of `user`, read from Tahrir's tables if not lately.
    fn person(&mut self, user: &str) -> Result<&mut Person, RuleError> {
        let fresh = self
            .people
            .get(user)
            .is_some_and(|p| p.read_at.elapsed() < PERSON_TTL);
        if !fresh {
            let standing = self.tahrir.person_standing(user)?.unwrap_or_default();
            if self.people.len() >= PEOPLE_KEPT {
                self.people.clear();
            }
            self.people.insert(
                user.to_string(),
                Person {
                    opted_out: standing.opted_out,
                    held: standing.badges.into_iter().collect(),
                    read_at: Instant::now(),
                },
            );
        }
        Ok(self.people.get_mut(user).expect("just read"))
    }

    /// The people who earned the rule's badge with this message (not yet
    /// awarded).
    fn evaluate<'a>(
        &mut self,
        loaded: &'a LoadedRule,
        expression: bool,
        view: &View<'a>,
    ) -> Result<Vec<String>, RuleError> {
        let rule = &loaded.rule;
        if expression {
            let sandbox = &self.sandbox;
            let mut eval = |e: &'a Expr| view.trigger(sandbox, e);
            if !trigger_matches(&rule.trigger, view.topic, &mut eval)? {
                return Ok(Vec::new());
            }
        }
        loaded.triggered.fetch_add(1, Ordering::Relaxed);
        let mut candidates: BTreeSet<String> = match &rule.recipient {
            Some(template) => names(&self.format(template, view)?)
                .into_iter()
                .map(|n| map_name(&n, rule))
                .collect(),
            None => {
                let msg = view.body.get("msg").unwrap_or(&Value::Null);
                let mut users = fedhub_history::meta::usernames_of(view.topic, msg);
                users.retain(|u| !BANNED_USERS.contains(&u.as_str()));
                users
            }
        };
        candidates.retain(|c| !c.is_empty() && !c.starts_with("192.168.") && !c.starts_with("10."));
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut eligible = Vec::new();
        for user in candidates {
            let person = self.person(&user)?;
            if !person.opted_out && !person.held.contains(&rule.badge_id) {
                eligible.push(user);
            }
        }
        if eligible.is_empty() {
            return Ok(Vec::new());
        }
        if !self.criteria(&rule.criteria, view)? {
            return Ok(Vec::new());
        }
        Ok(eligible)
    }

    fn format(&self, template: &Template, view: &View<'_>) -> Result<Value, RuleError> {
        Ok(match template {
            Template::Literal(v) => v.clone(),
            Template::Text(t) => format_text(t, view.subs())?,
            Template::Expression(e) => self.sandbox.eval_json(e, &[("msg", view.dynamic())])?,
            Template::List(items) => Value::Array(
                items
                    .iter()
                    .map(|t| self.format(t, view))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), self.format(t, view)?)))
                    .collect::<Result<_, RuleError>>()?,
            ),
        })
    }

    fn criteria(&self, criteria: &Criteria, view: &View<'_>) -> Result<bool, RuleError> {
        Ok(match criteria {
            Criteria::All(c) => {
                for c in c {
                    if !self.criteria(c, view)? {
                        return Ok(false);
                    }
                }
                true
            }
            Criteria::Any(c) => {
                for c in c {
                    if self.criteria(c, view)? {
                        return Ok(true);
                    }
                }
                false
            }
            Criteria::Not(c) => {
                for c in c {
                    if self.criteria(c, view)? {
                        return Ok(false);
                    }
                }
                true
            }
            Criteria::Datanommer {
                filter,
                operation,
                condition,
            } => {
                let mut values = Vec::with_capacity(filter.len());
                for (key, template) in filter {
                    values.push((key.as_str(), self.format(template, view)?));
                }
                let filter = build_filter(&values)?;
                let known = view.counts.borrow().iter().find_map(|(k, n)| {
                    (k.len() == values.len()
                        && k.iter()
                            .zip(&values)
                            .all(|((a, av), (b, bv))| a == b && av == bv))
                    .then_some(*n)
                });
                let total = match known {
                    Some(n) => n,
                    None => {
                        let n = self.history.count(&filter)?;
                        view.counts.borrow_mut().push((
                            values
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.clone()))
                                .collect(),
                            n,
                        ));
                        n
                    }
                };
                let value = match operation {
                    Operation::Count => json!(total),
                    Operation::Expression(e) => {
                        let mut query = rhai::Map::new();
                        query.insert("total".into(), Dynamic::from(total as i64));
                        if e.text().contains("messages") {
                            let page = self.history.grep(&filter)?;
                            let bodies: Vec<Value> =
                                page.messages.iter().map(|m| m.body()).collect();
                            query.insert("messages".into(), to_dynamic(&Value::Array(bodies)));
                        }
                        self.sandbox
                            .eval_json(e, &[("query", Dynamic::from_map(query))])?
                    }
                };
                match condition {
                    Condition::Compare(cmp, threshold) => {
                        let Some(v) = value.as_f64() else {
                            return Err(RuleError::Filter {
                                key: "operation".into(),
                                problem: format!(
                                    "returned {value}: the condition expects a number"
                                ),
                            });
                        };
                        cmp.holds(v, *threshold)
                    }
                    Condition::Expression(e) => self
                        .sandbox
                        .eval_bool(e, &[("value", to_dynamic(&value))])?,
                }
            }
        })
    }
}

/// A recipient value as names: a scalar is one name, a list of strings or of
/// objects with `name` several, `null` none.
fn names(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Array(items) => items.iter().flat_map(names).collect(),
        Value::Object(map) => map
            .get("name")
            .or_else(|| map.get("username"))
            .map(names)
            .unwrap_or_default(),
        Value::Bool(_) => Vec::new(),
    }
}

/// Applies the rule's name mappings (without an account system: e-mail and
/// OpenID forms of Fedora accounts map to the account; an IRC nick is kept).
fn map_name(name: &str, rule: &Rule) -> String {
    let mut name = name.to_string();
    if rule.email2fas {
        if let Some(user) = name.strip_suffix("@fedoraproject.org") {
            name = user.to_string();
        }
    }
    if rule.openid2fas {
        let rest = name
            .strip_prefix("https://")
            .or_else(|| name.strip_prefix("http://"));
        if let Some(user) = rest.and_then(|r| {
            r.trim_end_matches('/')
                .strip_suffix(".id.fedoraproject.org")
        }) {
            if !user.is_empty() && !user.contains('/') {
                name = user.to_string();
            }
        }
    }
    name
}

/// The history filter a rule's (substituted) `filter` describes.
pub fn build_filter(values: &[(&str, Value)]) -> Result<Filter, RuleError> {
    let mut filter = Filter::new();
    for (key, value) in values {
        let bad = |problem: String| RuleError::Filter {
            key: key.to_string(),
            problem,
        };
        let list = || -> Result<Vec<String>, RuleError> {
            let items: Vec<&Value> = match value {
                Value::Array(items) => {
                    // Pagure: a list inside `users` replaces the list.
                    if let Some(Value::Array(inner)) = items.iter().find(|v| v.is_array()) {
                        inner.iter().collect()
                    } else {
                        items.iter().collect()
                    }
                }
                other => vec![other],
            };
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    Value::Number(n) => out.push(n.to_string()),
                    Value::Object(m) => match m.get("name").and_then(Value::as_str) {
                        Some(n) => out.push(n.to_string()),
                        None => return Err(bad(format!("expected names, got {item}"))),
                    },
                    Value::Null => {}
                    other => return Err(bad(format!("expected names, got {other}"))),
                }
            }
            Ok(out)
        };
        let number = || {
            value
                .as_f64()
                .ok_or_else(|| bad(format!("expected a number, got {value}")))
        };
        match *key {
            "users" => filter.users = list()?,
            "not_users" => filter.not_users = list()?,
            "packages" => filter.packages = list()?,
            "not_packages" => filter.not_packages = list()?,
            "categories" => filter.categories = list()?,
            "not_categories" => filter.not_categories = list()?,
            "topics" => filter.topics = list()?,
            "not_topics" => filter.not_topics = list()?,
            "contains" => filter.contains = list()?,
            "start" => filter.start = Some(number()?),
            "end" => filter.end = Some(number()?),
            "page" => filter.page = number()? as u32,
            "rows_per_page" => filter.rows_per_page = number()? as u32,
            "order" => {
                filter.order = if value.as_str() == Some("asc") {
                    Order::Asc
                } else {
                    Order::Desc
                }
            }
            other => return Err(bad(format!("unknown filter key {other}"))),
        }
    }
    // A start alone counts up to now; an end alone counts from the beginning
    // (datanommer wanted both).
    if filter.start.is_none() && filter.end.is_some() {
        filter.start = Some(0.0);
    }
    filter.validate().map_err(|e| RuleError::Filter {
        key: "filter".into(),
        problem: e.to_string(),
    })?;
    Ok(filter)
}
