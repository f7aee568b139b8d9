//! FMN's tables (fmn.lib 0.8.2: `contexts`, `users`, `preferences`,
//! `detail_values`, `filters`, `rules`, `queued_messages`), through
//! `fedhub-storage`: SQLite by default, PostgreSQL when several hubs share the
//! preferences. Created if missing (migration scope `fmn`).
//!
//! A whole load reads each table once and assembles the preferences in
//! memory; a user's reload reads only that user's rows.

use std::collections::HashMap;

use fedhub_storage::sql::{execute, insert_returning_id, now_sql, query, Param, Row};
use fedhub_storage::{BackendError, Database, Migrations, StorageError, Tx};
use serde_json::Value;

use crate::model::{
    context, default_filters, fedora_nick, FilterRow, NewFilter, NewRule, Preference,
    PreferenceUpdate, RuleRow, CONTEXTS, DEFAULT_CONTEXTS,
};

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contexts (
    name VARCHAR(50) PRIMARY KEY,
    description VARCHAR(1024) UNIQUE,
    created_on DATETIME,
    detail_name VARCHAR(64) NOT NULL,
    icon VARCHAR(32) NOT NULL,
    placeholder VARCHAR(256)
);
CREATE TABLE IF NOT EXISTS users (
    openid TEXT PRIMARY KEY,
    openid_url TEXT UNIQUE,
    api_key TEXT,
    created_on DATETIME
);
CREATE TABLE IF NOT EXISTS preferences (
    id INTEGER PRIMARY KEY,
    created_on DATETIME,
    batch_delta INTEGER,
    batch_count INTEGER,
    enabled BOOLEAN NOT NULL DEFAULT 0,
    markup_messages BOOLEAN DEFAULT 0,
    triggered_by_links BOOLEAN DEFAULT 1,
    shorten_links BOOLEAN DEFAULT 0,
    \"verbose\" BOOLEAN DEFAULT 1,
    openid TEXT NOT NULL REFERENCES users(openid),
    context_name VARCHAR(50) NOT NULL REFERENCES contexts(name),
    UNIQUE (openid, context_name)
);
CREATE TABLE IF NOT EXISTS detail_values (
    id INTEGER PRIMARY KEY,
    created_on DATETIME,
    value VARCHAR(1024) UNIQUE,
    preference_id INTEGER REFERENCES preferences(id)
);
CREATE TABLE IF NOT EXISTS filters (
    id INTEGER PRIMARY KEY,
    created_on DATETIME,
    name VARCHAR(50),
    active BOOLEAN NOT NULL DEFAULT 1,
    oneshot BOOLEAN NOT NULL DEFAULT 0,
    preference_id INTEGER REFERENCES preferences(id)
);
CREATE TABLE IF NOT EXISTS rules (
    id INTEGER PRIMARY KEY,
    created_on DATETIME,
    filter_id INTEGER REFERENCES filters(id),
    code_path VARCHAR(100) NOT NULL,
    _arguments VARCHAR(256),
    negated BOOLEAN DEFAULT 0
);
CREATE TABLE IF NOT EXISTS queued_messages (
    id INTEGER PRIMARY KEY,
    created_on DATETIME,
    _message TEXT,
    openid TEXT REFERENCES users(openid),
    context_name VARCHAR(50) REFERENCES contexts(name)
);
CREATE INDEX IF NOT EXISTS preferences_openid ON preferences (openid);
CREATE INDEX IF NOT EXISTS detail_values_preference ON detail_values (preference_id);
CREATE INDEX IF NOT EXISTS filters_preference ON filters (preference_id);
CREATE INDEX IF NOT EXISTS rules_filter ON rules (filter_id);
CREATE INDEX IF NOT EXISTS queued_messages_recipient ON queued_messages (openid, context_name);
";

const POSTGRES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contexts (
    name VARCHAR(50) PRIMARY KEY,
    description VARCHAR(1024) UNIQUE,
    created_on TIMESTAMP,
    detail_name VARCHAR(64) NOT NULL,
    icon VARCHAR(32) NOT NULL,
    placeholder VARCHAR(256)
);
CREATE TABLE IF NOT EXISTS users (
    openid TEXT PRIMARY KEY,
    openid_url TEXT UNIQUE,
    api_key TEXT,
    created_on TIMESTAMP
);
CREATE TABLE IF NOT EXISTS preferences (
    id SERIAL PRIMARY KEY,
    created_on TIMESTAMP,
    batch_delta INTEGER,
    batch_count INTEGER,
    enabled BOOLEAN NOT NULL DEFAULT false,
    markup_messages BOOLEAN DEFAULT false,
    triggered_by_links BOOLEAN DEFAULT true,
    shorten_links BOOLEAN DEFAULT false,
    \"verbose\" BOOLEAN DEFAULT true,
    openid TEXT NOT NULL REFERENCES users(openid),
    context_name VARCHAR(50) NOT NULL REFERENCES contexts(name),
    UNIQUE (openid, context_name)
);
CREATE TABLE IF NOT EXISTS detail_values (
    id SERIAL PRIMARY KEY,
    created_on TIMESTAMP,
    value VARCHAR(1024) UNIQUE,
    preference_id INTEGER REFERENCES preferences(id)
);
CREATE TABLE IF NOT EXISTS filters (
    id SERIAL PRIMARY KEY,
    created_on TIMESTAMP,
    name VARCHAR(50),
    active BOOLEAN NOT NULL DEFAULT true,
    oneshot BOOLEAN NOT NULL DEFAULT false,
    preference_id INTEGER REFERENCES preferences(id)
);
CREATE TABLE IF NOT EXISTS rules (
    id SERIAL PRIMARY KEY,
    created_on TIMESTAMP,
    filter_id INTEGER REFERENCES filters(id),
    code_path VARCHAR(100) NOT NULL,
    _arguments VARCHAR(256),
    negated BOOLEAN DEFAULT false
);
CREATE TABLE IF NOT EXISTS queued_messages (
    id SERIAL PRIMARY KEY,
    created_on TIMESTAMP,
    _message TEXT,
    openid TEXT REFERENCES users(openid),
    context_name VARCHAR(50) REFERENCES contexts(name)
);
CREATE INDEX IF NOT EXISTS preferences_openid ON preferences (openid);
CREATE INDEX IF NOT EXISTS detail_values_preference ON detail_values (preference_id);
CREATE INDEX IF NOT EXISTS filters_preference ON filters (preference_id);
CREATE INDEX IF NOT EXISTS rules_filter ON rules (filter_id);
CREATE INDEX IF NOT EXISTS queued_messages_recipient ON queued_messages (openid, context_name);
";

/// The notification consumer's schema (scope `fmn`): FMN's tables.
pub fn migrations() -> Migrations {
    Migrations::new("fmn").step_per_backend(1, "fmn_tables", SQLITE_SCHEMA, POSTGRES_SCHEMA)
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such user.
    #[error("no user {0:?}: create it first (POST /notifications/users)")]
    UnknownUser(String),
    /// No such context.
    #[error("no context {0:?}: expected one of {1}")]
    UnknownContext(String, String),
    /// The user has no such filter in that context.
    #[error("user {openid:?} has no filter {filter_id} in context {context:?}")]
    UnknownFilter {
        /// The user.
        openid: String,
        /// The context.
        context: String,
        /// The filter asked for.
        filter_id: i64,
    },
    /// The filter has no such rule.
    #[error("filter {filter_id} has no rule {rule_id}")]
    UnknownRule {
        /// The filter.
        filter_id: i64,
        /// The rule asked for.
        rule_id: i64,
    },
    /// A value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Messages queued for one recipient's digest.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSummary {
    /// The user.
    pub openid: String,
    /// The context.
    pub context: String,
    /// How many are queued.
    pub count: i64,
    /// When the oldest was queued (Unix seconds).
    pub oldest: f64,
}

/// FMN's tables in one database.
#[derive(Clone)]
pub struct FmnStore {
    db: Database,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_default()
}

fn boolean(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64() != Some(0),
        _ => false,
    }
}

/// A stored time (`2026-11-30 16:50:01.123` or with microseconds) as Unix seconds.
pub fn parse_time(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok())
        .map(|t| t.and_utc().timestamp_micros() as f64 / 1e6)
        .unwrap_or_default()
}

impl FmnStore {
    /// FMN's tables in `db`, created if missing, with the contexts filled in.
    pub fn open(db: Database) -> Result<FmnStore, StorageError> {
        db.migrate(&migrations())?;
        let store = FmnStore { db };
        let now = now_sql(store.db.backend());
        store.run("add contexts", |tx| {
            for c in CONTEXTS {
                execute(
                    tx,
                    &format!(
                        "INSERT INTO contexts (name, description, created_on, detail_name, icon, placeholder) \
                         VALUES ($1, $2, {now}, $3, $4, $5) ON CONFLICT (name) DO NOTHING"
                    ),
                    &[
                        Param::Text(c.name),
                        Param::Text(c.description),
                        Param::Text(c.detail_name),
                        Param::Text(c.icon),
                        Param::Text(c.placeholder),
                    ],
                )?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn run<T: Send>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, BackendError> + Send,
    ) -> Result<T, StorageError> {
        self.db.run_sql(op, f)
    }

    /// Every user's preferences (all contexts, enabled or not, all filters).
    pub fn load_all(&self) -> Result<Vec<Preference>, StorageError> {
        self.run("load preferences", |tx| load(tx, None))
    }

    /// One user's preferences.
    pub fn load_user(&self, openid: &str) -> Result<Vec<Preference>, StorageError> {
        self.run("load a user's preferences", |tx| load(tx, Some(openid)))
    }

    /// Whether the user exists.
    pub fn user_exists(&self, openid: &str) -> Result<bool, StorageError> {
        self.run("find user", |tx| {
            Ok(!query(
                tx,
                "SELECT 1 FROM users WHERE openid = $1",
                &[Param::Text(openid)],
            )?
            .is_empty())
        })
    }

    /// How many users there are.
    pub fn user_count(&self) -> Result<i64, StorageError> {
        self.run("count users", |tx| {
            Ok(query(tx, "SELECT COUNT(*) FROM users", &[])?
                .first()
                .map(|r| int(&r[0]))
                .unwrap_or_default())
        })
    }

    /// Creates a user with FMN's default filters for the `email` and `irc`
    /// contexts (when the openid is a Fedora one), a preference per context
    /// named in `details` holding that detail value (enabled, as FMN does).
    /// Returns false when the user existed (nothing changes then).
    pub fn create_user(
        &self,
        openid: &str,
        details: &[(String, String)],
        library: &crate::rules::RuleLibrary,
    ) -> Result<bool, ChangeError> {
        if openid.is_empty() || openid.contains(char::is_whitespace) || openid.contains('/') {
            return Err(ChangeError::Invalid(format!(
                "openid {openid:?}: expected a name like ralph.id.fedoraproject.org (no scheme, no spaces)"
            )));
        }
        for (ctx, value) in details {
            check_context(ctx)?;
            check_detail(ctx, value)?;
        }
        let defaults = fedora_nick(openid).map(default_filters);
        if let Some(filters) = &defaults {
            for f in filters {
                for r in &f.rules {
                    library
                        .compile(&r.code_path, &r.arguments)
                        .map_err(|e| ChangeError::Invalid(e.to_string()))?;
                }
            }
        }
        let now = now_sql(self.db.backend());
        let api_key = uuid::Uuid::new_v4().simple().to_string();
        Ok(self.run("create user", |tx| {
            let inserted = execute(
                tx,
                &format!(
                    "INSERT INTO users (openid, openid_url, api_key, created_on) VALUES ($1, $2, $3, {now}) \
                     ON CONFLICT (openid) DO NOTHING"
                ),
                &[
                    Param::Text(openid),
                    Param::Text(&format!("https://{openid}")),
                    Param::Text(&api_key),
                ],
            )?;
            if inserted == 0 {
                return Ok(false);
            }
            let mut contexts: Vec<&str> = Vec::new();
            if defaults.is_some() {
                contexts.extend(DEFAULT_CONTEXTS);
            }
            for (ctx, _) in details {
                if !contexts.contains(&ctx.as_str()) {
                    contexts.push(ctx);
                }
            }
            for ctx in contexts {
                let detail = details.iter().find(|(c, _)| c == ctx).map(|(_, v)| v.as_str());
                let pref = ensure_preference(tx, now, openid, ctx, detail.is_some())?;
                if let Some(value) = detail {
                    insert_detail(tx, now, pref, value)?;
                }
                if let Some(filters) = &defaults {
                    if DEFAULT_CONTEXTS.contains(&ctx) {
                        for f in filters {
                            insert_filter(tx, now, pref, f)?;
                        }
                    }
                }
            }
            Ok(true)
        })?)
    }

    /// The preference's id, checking the user and context exist; created
    /// (disabled) when the user has none for that context.
    fn preference_id(&self, tx: &mut Tx<'_>, openid: &str, ctx: &str) -> Result<i64, ChangeError> {
        check_context(ctx)?;
        let err = self.db.error_for("find preference");
        if query(
            tx,
            "SELECT 1 FROM users WHERE openid = $1",
            &[Param::Text(openid)],
        )
        .map_err(&err)?
        .is_empty()
        {
            return Err(ChangeError::UnknownUser(openid.to_string()));
        }
        let now = now_sql(self.db.backend());
        Ok(ensure_preference(tx, now, openid, ctx, false).map_err(err)?)
    }

    /// Runs a change in one transaction. Every refusal is decided before the
    /// change writes anything, so a refused change commits nothing.
    fn change<T: Send>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, ChangeError> + Send,
    ) -> Result<T, ChangeError> {
        let mut refused = None;
        let value = self.db.transaction(|tx| match f(tx) {
            Ok(v) => Ok(Some(v)),
            Err(ChangeError::Storage(e)) => Err(e),
            Err(e) => {
                refused = Some(e);
                Ok(None)
            }
        })?;
        match (value, refused) {
            (Some(v), _) => Ok(v),
            (None, Some(e)) => Err(e),
            (None, None) => unreachable!("a change either gives a value or is refused"),
        }
    }

    /// Applies `update` to the user's preference for `ctx` (created if
    /// missing). Returns FMN's `changed` names.
    pub fn update_preference(
        &self,
        openid: &str,
        ctx: &str,
        update: &PreferenceUpdate,
    ) -> Result<Vec<&'static str>, ChangeError> {
        for v in [update.batch_delta, update.batch_count]
            .into_iter()
            .flatten()
            .flatten()
        {
            if v <= 0 {
                return Err(ChangeError::Invalid(format!(
                    "batch value {v}: expected a positive number, or null to send at once"
                )));
            }
        }
        if let Some(values) = &update.detail_values {
            for v in values {
                check_detail(ctx, v)?;
            }
        }
        let now = now_sql(self.db.backend());
        let err = self.db.error_for("update preference");
        self.change(|tx| {
            let pref = self.preference_id(tx, openid, ctx)?;
            for v in update.detail_values.iter().flatten() {
                let taken = query(
                    tx,
                    "SELECT 1 FROM detail_values WHERE value = $1 AND preference_id <> $2",
                    &[Param::Text(v), Param::Int(pref)],
                )
                .map_err(&err)?;
                if !taken.is_empty() {
                    return Err(ChangeError::Invalid(format!(
                        "detail value {v:?} already belongs to another preference"
                    )));
                }
            }
            let mut changed = Vec::new();
            let mut set = |column: &str, value: Param<'_>, name: &'static str, tx: &mut Tx<'_>| {
                execute(
                    tx,
                    &format!("UPDATE preferences SET \"{column}\" = $1 WHERE id = $2"),
                    &[value, Param::Int(pref)],
                )
                .map(|_| {
                    if !changed.contains(&name) {
                        changed.push(name)
                    }
                })
                .map_err(&err)
            };
            if let Some(v) = update.enabled {
                set("enabled", Param::Bool(v), "enabled", tx)?;
            }
            if let Some(v) = update.batch_delta {
                set(
                    "batch_delta",
                    v.map(Param::Int).unwrap_or(Param::Null),
                    "batch_values",
                    tx,
                )?;
            }
            if let Some(v) = update.batch_count {
                set(
                    "batch_count",
                    v.map(Param::Int).unwrap_or(Param::Null),
                    "batch_values",
                    tx,
                )?;
            }
            for (value, column) in [
                (update.markup_messages, "markup_messages"),
                (update.triggered_by_links, "triggered_by_links"),
                (update.shorten_links, "shorten_links"),
                (update.verbose, "verbose"),
            ] {
                if let Some(v) = value {
                    let name: &'static str = match column {
                        "markup_messages" => "markup_messages",
                        "triggered_by_links" => "triggered_by_links",
                        "shorten_links" => "shorten_links",
                        _ => "verbose",
                    };
                    set(column, Param::Bool(v), name, tx)?;
                }
            }
            if let Some(values) = &update.detail_values {
                execute(
                    tx,
                    "DELETE FROM detail_values WHERE preference_id = $1",
                    &[Param::Int(pref)],
                )
                .map_err(&err)?;
                for v in values {
                    insert_detail(tx, now, pref, v).map_err(&err)?;
                }
                changed.push("details");
            }
            Ok(changed)
        })
    }

    /// Adds a filter (rules checked against `library` first). Returns its id.
    pub fn add_filter(
        &self,
        openid: &str,
        ctx: &str,
        filter: &NewFilter,
        library: &crate::rules::RuleLibrary,
    ) -> Result<i64, ChangeError> {
        check_filter(filter, library)?;
        let now = now_sql(self.db.backend());
        let err = self.db.error_for("add filter");
        self.change(|tx| {
            let pref = self.preference_id(tx, openid, ctx)?;
            Ok(insert_filter(tx, now, pref, filter).map_err(err)?)
        })
    }

    fn filter_of(
        &self,
        tx: &mut Tx<'_>,
        openid: &str,
        ctx: &str,
        filter_id: i64,
    ) -> Result<(), ChangeError> {
        check_context(ctx)?;
        let found = query(
            tx,
            "SELECT 1 FROM filters f JOIN preferences p ON p.id = f.preference_id \
             WHERE f.id = $1 AND p.openid = $2 AND p.context_name = $3",
            &[Param::Int(filter_id), Param::Text(openid), Param::Text(ctx)],
        )
        .map_err(self.db.error_for("find filter"))?;
        if found.is_empty() {
            return Err(ChangeError::UnknownFilter {
                openid: openid.to_string(),
                context: ctx.to_string(),
                filter_id,
            });
        }
        Ok(())
    }

    /// Deletes a filter and its rules.
    pub fn delete_filter(
        &self,
        openid: &str,
        ctx: &str,
        filter_id: i64,
    ) -> Result<(), ChangeError> {
        let err = self.db.error_for("delete filter");
        self.change(|tx| {
            self.filter_of(tx, openid, ctx, filter_id)?;
            execute(
                tx,
                "DELETE FROM rules WHERE filter_id = $1",
                &[Param::Int(filter_id)],
            )
            .map_err(&err)?;
            execute(
                tx,
                "DELETE FROM filters WHERE id = $1",
                &[Param::Int(filter_id)],
            )
            .map_err(&err)?;
            Ok(())
        })
    }

    /// Sets a filter's `active` (and `oneshot` when given).
    pub fn set_filter(
        &self,
        openid: &str,
        ctx: &str,
        filter_id: i64,
        active: Option<bool>,
        oneshot: Option<bool>,
    ) -> Result<(), ChangeError> {
        let err = self.db.error_for("update filter");
        self.change(|tx| {
            self.filter_of(tx, openid, ctx, filter_id)?;
            if let Some(a) = active {
                execute(
                    tx,
                    "UPDATE filters SET active = $1 WHERE id = $2",
                    &[Param::Bool(a), Param::Int(filter_id)],
                )
                .map_err(&err)?;
            }
            if let Some(o) = oneshot {
                execute(
                    tx,
                    "UPDATE filters SET oneshot = $1 WHERE id = $2",
                    &[Param::Bool(o), Param::Int(filter_id)],
                )
                .map_err(&err)?;
            }
            Ok(())
        })
    }

    /// A oneshot filter fired: deactivates it (FMN's `Filter.fired`).
    /// Returns whether it was still active (only one hub wins).
    pub fn filter_fired(&self, filter_id: i64) -> Result<bool, StorageError> {
        self.run("deactivate a oneshot filter", |tx| {
            Ok(execute(
                tx,
                "UPDATE filters SET active = $1 WHERE id = $2 AND active = $3",
                &[Param::Bool(false), Param::Int(filter_id), Param::Bool(true)],
            )? > 0)
        })
    }

    /// Adds a rule at the end of a filter. Returns its id.
    pub fn add_rule(
        &self,
        openid: &str,
        ctx: &str,
        filter_id: i64,
        rule: &NewRule,
        library: &crate::rules::RuleLibrary,
    ) -> Result<i64, ChangeError> {
        check_rule(rule, library)?;
        let now = now_sql(self.db.backend());
        let err = self.db.error_for("add rule");
        self.change(|tx| {
            self.filter_of(tx, openid, ctx, filter_id)?;
            Ok(insert_rule(tx, now, filter_id, rule).map_err(err)?)
        })
    }

    /// Deletes a rule of a filter.
    pub fn delete_rule(
        &self,
        openid: &str,
        ctx: &str,
        filter_id: i64,
        rule_id: i64,
    ) -> Result<(), ChangeError> {
        let err = self.db.error_for("delete rule");
        self.change(|tx| {
            self.filter_of(tx, openid, ctx, filter_id)?;
            let n = execute(
                tx,
                "DELETE FROM rules WHERE id = $1 AND filter_id = $2",
                &[Param::Int(rule_id), Param::Int(filter_id)],
            )
            .map_err(&err)?;
            if n == 0 {
                return Err(ChangeError::UnknownRule { filter_id, rule_id });
            }
            Ok(())
        })
    }

    /// Sets a rule's `negated`.
    pub fn set_rule_negated(
        &self,
        openid: &str,
        ctx: &str,
        filter_id: i64,
        rule_id: i64,
        negated: bool,
    ) -> Result<(), ChangeError> {
        let err = self.db.error_for("update rule");
        self.change(|tx| {
            self.filter_of(tx, openid, ctx, filter_id)?;
            let n = execute(
                tx,
                "UPDATE rules SET negated = $1 WHERE id = $2 AND filter_id = $3",
                &[
                    Param::Bool(negated),
                    Param::Int(rule_id),
                    Param::Int(filter_id),
                ],
            )
            .map_err(&err)?;
            if n == 0 {
                return Err(ChangeError::UnknownRule { filter_id, rule_id });
            }
            Ok(())
        })
    }

    /// Queues a message for a recipient's digest (`QueuedMessage.enqueue`).
    pub fn enqueue(&self, openid: &str, ctx: &str, message: &str) -> Result<(), StorageError> {
        let now = now_sql(self.db.backend());
        self.run("queue a message", |tx| {
            execute(
                tx,
                &format!(
                    "INSERT INTO queued_messages (created_on, _message, openid, context_name) VALUES ({now}, $1, $2, $3)"
                ),
                &[Param::Text(message), Param::Text(openid), Param::Text(ctx)],
            )?;
            Ok(())
        })
    }

    /// The digest queues: per recipient, how many and since when.
    pub fn queues(&self) -> Result<Vec<QueueSummary>, StorageError> {
        self.run("read the digest queues", |tx| {
            Ok(query(
                tx,
                "SELECT openid, context_name, COUNT(*), MIN(created_on) FROM queued_messages GROUP BY openid, context_name ORDER BY openid, context_name",
                &[],
            )?
            .iter()
            .map(|r| QueueSummary {
                openid: text(&r[0]),
                context: text(&r[1]),
                count: int(&r[2]),
                oldest: parse_time(&r[3]),
            })
            .collect())
        })
    }

    /// Takes a recipient's queued messages (oldest first), removing them in
    /// the same transaction.
    pub fn take_queued(&self, openid: &str, ctx: &str) -> Result<Vec<String>, StorageError> {
        self.run("take queued messages", |tx| {
            let rows = query(
                tx,
                "SELECT id, _message FROM queued_messages WHERE openid = $1 AND context_name = $2 ORDER BY created_on, id",
                &[Param::Text(openid), Param::Text(ctx)],
            )?;
            for r in &rows {
                execute(tx, "DELETE FROM queued_messages WHERE id = $1", &[Param::Int(int(&r[0]))])?;
            }
            Ok(rows.iter().map(|r| text(&r[1])).collect())
        })
    }
}

fn check_context(ctx: &str) -> Result<(), ChangeError> {
    if context(ctx).is_none() {
        return Err(ChangeError::UnknownContext(
            ctx.to_string(),
            CONTEXTS
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    Ok(())
}

fn check_detail(ctx: &str, value: &str) -> Result<(), ChangeError> {
    let bad = |expected: &str| {
        Err(ChangeError::Invalid(format!(
            "detail value {value:?} for context {ctx:?}: expected {expected}"
        )))
    };
    if value.is_empty() || value.len() > 1024 {
        return bad("1 to 1024 characters");
    }
    match ctx {
        "email" if !value.contains('@') || value.contains(char::is_whitespace) => {
            bad("an e-mail address")
        }
        "webhook" if !(value.starts_with("http://") || value.starts_with("https://")) => {
            bad("an http:// or https:// URL")
        }
        _ => Ok(()),
    }
}

fn check_rule(rule: &NewRule, library: &crate::rules::RuleLibrary) -> Result<(), ChangeError> {
    library
        .compile(&rule.code_path, &rule.arguments)
        .map_err(|e| ChangeError::Invalid(e.to_string()))?;
    if arguments_text(&rule.arguments).len() > 256 {
        return Err(ChangeError::Invalid(format!(
            "rule {:?}: arguments longer than FMN's 256 characters",
            rule.code_path
        )));
    }
    Ok(())
}

fn check_filter(
    filter: &NewFilter,
    library: &crate::rules::RuleLibrary,
) -> Result<(), ChangeError> {
    if filter.name.trim().is_empty() || filter.name.chars().count() > 50 {
        return Err(ChangeError::Invalid(format!(
            "filter name {:?}: expected 1 to 50 characters",
            filter.name
        )));
    }
    for r in &filter.rules {
        check_rule(r, library)?;
    }
    Ok(())
}

fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::Null => "{}".into(),
        v => v.to_string(),
    }
}

fn ensure_preference(
    tx: &mut Tx<'_>,
    now: &str,
    openid: &str,
    ctx: &str,
    enabled: bool,
) -> Result<i64, BackendError> {
    if let Some(row) = query(
        tx,
        "SELECT id FROM preferences WHERE openid = $1 AND context_name = $2",
        &[Param::Text(openid), Param::Text(ctx)],
    )?
    .first()
    {
        return Ok(int(&row[0]));
    }
    insert_returning_id(
        tx,
        &format!(
            "INSERT INTO preferences (created_on, enabled, markup_messages, triggered_by_links, shorten_links, \"verbose\", openid, context_name) \
             VALUES ({now}, $1, $2, $3, $4, $5, $6, $7)"
        ),
        &[
            Param::Bool(enabled),
            Param::Bool(false),
            Param::Bool(true),
            Param::Bool(false),
            Param::Bool(true),
            Param::Text(openid),
            Param::Text(ctx),
        ],
    )
}

fn insert_detail(tx: &mut Tx<'_>, now: &str, pref: i64, value: &str) -> Result<(), BackendError> {
    execute(
        tx,
        &format!(
            "INSERT INTO detail_values (created_on, value, preference_id) VALUES ({now}, $1, $2)"
        ),
        &[Param::Text(value), Param::Int(pref)],
    )?;
    Ok(())
}

fn insert_filter(
    tx: &mut Tx<'_>,
    now: &str,
    pref: i64,
    filter: &NewFilter,
) -> Result<i64, BackendError> {
    let id = insert_returning_id(
        tx,
        &format!(
            "INSERT INTO filters (created_on, name, active, oneshot, preference_id) VALUES ({now}, $1, $2, $3, $4)"
        ),
        &[
            Param::Text(&filter.name),
            Param::Bool(true),
            Param::Bool(filter.oneshot),
            Param::Int(pref),
        ],
    )?;
    for rule in &filter.rules {
        insert_rule(tx, now, id, rule)?;
    }
    Ok(id)
}

fn insert_rule(
    tx: &mut Tx<'_>,
    now: &str,
    filter_id: i64,
    rule: &NewRule,
) -> Result<i64, BackendError> {
    insert_returning_id(
        tx,
        &format!(
            "INSERT INTO rules (created_on, filter_id, code_path, _arguments, negated) VALUES ({now}, $1, $2, $3, $4)"
        ),
        &[
            Param::Int(filter_id),
            Param::Text(&rule.code_path),
            Param::Text(&arguments_text(&rule.arguments)),
            Param::Bool(rule.negated),
        ],
    )
}

/// Loads preferences (one user's, or everyone's) with four queries.
fn load(tx: &mut Tx<'_>, openid: Option<&str>) -> Result<Vec<Preference>, BackendError> {
    let (clause, params): (&str, Vec<Param<'_>>) = match openid {
        Some(o) => ("WHERE p.openid = $1", vec![Param::Text(o)]),
        None => ("", Vec::new()),
    };
    let prefs = query(
        tx,
        &format!(
            "SELECT p.id, p.openid, p.context_name, p.enabled, p.batch_delta, p.batch_count, \
             p.markup_messages, p.triggered_by_links, p.shorten_links, p.\"verbose\" \
             FROM preferences p {clause} ORDER BY p.openid, p.context_name"
        ),
        &params,
    )?;
    let details = query(
        tx,
        &format!(
            "SELECT d.preference_id, d.value FROM detail_values d JOIN preferences p ON p.id = d.preference_id {clause} ORDER BY d.id"
        ),
        &params,
    )?;
    let filters = query(
        tx,
        &format!(
            "SELECT f.preference_id, f.id, f.name, f.active, f.oneshot FROM filters f \
             JOIN preferences p ON p.id = f.preference_id {clause} ORDER BY f.created_on, f.id"
        ),
        &params,
    )?;
    let rules = query(
        tx,
        &format!(
            "SELECT r.filter_id, r.id, r.code_path, r._arguments, r.negated FROM rules r \
             JOIN filters f ON f.id = r.filter_id JOIN preferences p ON p.id = f.preference_id {clause} \
             ORDER BY r.created_on, r.id"
        ),
        &params,
    )?;
    Ok(assemble(prefs, details, filters, rules))
}

fn assemble(
    prefs: Vec<Row>,
    details: Vec<Row>,
    filters: Vec<Row>,
    rules: Vec<Row>,
) -> Vec<Preference> {
    let mut rules_of: HashMap<i64, Vec<RuleRow>> = HashMap::new();
    for r in rules {
        let arguments = r[3]
            .as_str()
            .map(|s| serde_json::from_str(s).unwrap_or(Value::String(s.to_string())))
            .unwrap_or(Value::Null);
        rules_of.entry(int(&r[0])).or_default().push(RuleRow {
            id: int(&r[1]),
            code_path: text(&r[2]),
            arguments,
            negated: boolean(&r[4]),
        });
    }
    let mut filters_of: HashMap<i64, Vec<FilterRow>> = HashMap::new();
    for f in filters {
        let id = int(&f[1]);
        filters_of.entry(int(&f[0])).or_default().push(FilterRow {
            id,
            name: text(&f[2]),
            active: boolean(&f[3]),
            oneshot: boolean(&f[4]),
            rules: rules_of.remove(&id).unwrap_or_default(),
        });
    }
    let mut details_of: HashMap<i64, Vec<String>> = HashMap::new();
    for d in details {
        details_of.entry(int(&d[0])).or_default().push(text(&d[1]));
    }
    prefs
        .into_iter()
        .map(|p| {
            let id = int(&p[0]);
            Preference {
                id,
                openid: text(&p[1]),
                context: text(&p[2]),
                enabled: boolean(&p[3]),
                batch_delta: p[4].as_i64(),
                batch_count: p[5].as_i64(),
                markup_messages: boolean(&p[6]),
                triggered_by_links: boolean(&p[7]),
                shorten_links: boolean(&p[8]),
                verbose: boolean(&p[9]),
                detail_values: details_of.remove(&id).unwrap_or_default(),
                filters: filters_of.remove(&id).unwrap_or_default(),
            }
        })
        .collect()
}
