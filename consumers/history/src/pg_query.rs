//! How [`PgStore`](crate::PgStore) answers a datagrepper filter on
//! PostgreSQL, where several hubs write the same tables and nothing but name
//! ids may be cached (see [`crate::schema::POSTGRES_V3`] for the tables).
//!
//! 1. **Resolve** the filter's names to ids inside the query's snapshot:
//!    categories, topics and their negations become one concrete set of topic
//!    ids (the topics table is small), users and packages their ids. A
//!    positive filter naming only unknown names matches nothing; an unknown
//!    name in a negative filter excludes nothing.
//! 2. **Count** (`total`, and `Store::count` for other consumers). The
//!    filters people combine, a topic set with at most one user or package
//!    and at most one excluded user or package, are counted without reading
//!    messages: without a time window from the running counts (a sum over a
//!    few rows), with one as index range counts; an exclusion is a
//!    subtraction (`count(T ∧ ¬p) = count(T) − count(T ∧ p)`). Anything else
//!    (several users, `contains`, …) is counted in SQL over the indexes.
//! 3. **Page.** The rows come from the most selective ordered source: the
//!    bridge rows of the one user or package when there is one, else the
//!    messages; for a set of topics, one ordered index range per topic merged
//!    by the server (`UNION ALL` of `ORDER BY … LIMIT` branches, a Merge
//!    Append), so the first page reads about `rows_per_page` entries per
//!    topic however many messages match. Full rows are read only for the page.

use std::collections::HashSet;

use fedhub_storage::postgres::types::ToSql;
use fedhub_storage::postgres::Transaction;

use crate::filter::{Filter, Order};
use crate::store::StoreError;

/// A bound parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// Above this many topics a page is read from one index scan filtered by
/// topic rather than merged from one range per topic.
const MAX_MERGED_TOPICS: usize = 64;

/// A user or a package, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    /// A user id.
    User(i32),
    /// A package id.
    Package(i32),
}

impl Name {
    /// The bridge table, its name column and its per-topic counts table.
    fn tables(self) -> (&'static str, &'static str, &'static str, i32) {
        match self {
            Name::User(id) => (
                "history_user_messages",
                "user_id",
                "history_user_topic_counts",
                id,
            ),
            Name::Package(id) => (
                "history_package_messages",
                "package_id",
                "history_package_topic_counts",
                id,
            ),
        }
    }
}

/// A filter with its names resolved to ids.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// The topics a message may have; `None`: any.
    pub topics: Option<Vec<i32>>,
    /// Any of these users (ids of the names that exist).
    pub users: Vec<i32>,
    /// Any of these packages.
    pub packages: Vec<i32>,
    /// None of these users.
    pub not_users: Vec<i32>,
    /// None of these packages.
    pub not_packages: Vec<i32>,
    /// Payload substrings (any of them).
    pub contains: Vec<String>,
    /// The filter can match nothing (a positive filter of unknown names, or
    /// topic filters that exclude every topic).
    pub nothing: bool,
    /// With one user or package and no topic filter: the topics that name
    /// has messages in (its bridge rows are keyed by topic first).
    pub driver_topics: Option<Vec<i32>>,
}

impl Resolved {
    /// The one user or package whose bridge rows drive the page, if any.
    fn driver(&self) -> Option<Name> {
        single(&self.users, Name::User).or(single(&self.packages, Name::Package))
    }
}

/// Ids of the names in `table` (`history_users`, `history_packages`).
fn ids(tx: &mut Transaction<'_>, table: &str, names: &[String]) -> Result<Vec<i32>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i32> = tx
        .query(
            &format!("SELECT id FROM {table} WHERE name = ANY($1)"),
            &[&names],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// Resolves `filter`'s names inside the transaction's snapshot.
pub(crate) fn resolve(tx: &mut Transaction<'_>, filter: &Filter) -> Result<Resolved, StoreError> {
    let mut resolved = Resolved {
        contains: filter.contains.clone(),
        ..Resolved::default()
    };
    let by_topic = !(filter.categories.is_empty()
        && filter.topics.is_empty()
        && filter.not_categories.is_empty()
        && filter.not_topics.is_empty());
    if by_topic {
        let wanted = |list: &[String], value: &str| list.iter().any(|v| v == value);
        let mut topics = Vec::new();
        for row in tx.query("SELECT id, name, category FROM history_topics", &[])? {
            let (id, name, category): (i32, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let keep = (filter.categories.is_empty() || wanted(&filter.categories, &category))
                && (filter.topics.is_empty() || wanted(&filter.topics, &name))
                && !wanted(&filter.not_categories, &category)
                && !wanted(&filter.not_topics, &name);
            if keep {
                topics.push(id);
            }
        }
        topics.sort_unstable();
        resolved.nothing |= topics.is_empty();
        resolved.topics = Some(topics);
    }
    resolved.users = ids(tx, "history_users", &filter.users)?;
    resolved.packages = ids(tx, "history_packages", &filter.packages)?;
    resolved.not_users = ids(tx, "history_users", &filter.not_users)?;
    resolved.not_packages = ids(tx, "history_packages", &filter.not_packages)?;
    resolved.nothing |= (!filter.users.is_empty() && resolved.users.is_empty())
        || (!filter.packages.is_empty() && resolved.packages.is_empty());
    if let (Some(name), None) = (resolved.driver(), &resolved.topics) {
        resolved.driver_topics = Some(name_topics(tx, name)?);
    }
    Ok(resolved)
}

/// The topics `name` has messages in, from its running counts.
fn name_topics(tx: &mut Transaction<'_>, name: Name) -> Result<Vec<i32>, StoreError> {
    let (_, column, counts, id) = name.tables();
    let mut topics: Vec<i32> = tx
        .query(
            &format!("SELECT topic_id FROM {counts} WHERE {column} = {id} AND messages > 0"),
            &[],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    topics.sort_unstable();
    Ok(topics)
}

/// `a,b,c` (ids are integers from the server, written into the SQL).
fn list(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Builds the SQL text of one query: `$n` parameters in order.
#[derive(Default)]
pub(crate) struct Sql {
    /// The parameters, in `$n` order.
    pub params: Vec<Param>,
}

impl Sql {
    /// Binds `p`, returning its `$n`.
    pub fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    /// The parameters as `query` takes them.
    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// `count(*)` of one query.
fn count_of(tx: &mut Transaction<'_>, sql: &str, q: &Sql) -> Result<u64, StoreError> {
    let n: i64 = tx.query_one(sql, &q.refs())?.try_get(0)?;
    Ok(n.max(0) as u64)
}

/// Messages with a topic in `topics` (any when `None`) in `window`.
fn messages_count(
    tx: &mut Transaction<'_>,
    topics: Option<&[i32]>,
    window: Option<(f64, f64)>,
) -> Result<u64, StoreError> {
    let mut q = Sql::default();
    let sql = match (topics, window) {
        (None, None) => "SELECT messages FROM history_stats WHERE id = 1".to_string(),
        (Some(t), None) => format!(
            "SELECT COALESCE(sum(messages), 0)::BIGINT FROM history_topic_counts \
             WHERE topic_id IN ({})",
            list(t)
        ),
        (t, Some((s, e))) => {
            let (s, e) = (q.bind(Box::new(s)), q.bind(Box::new(e)));
            let topic = t
                .map(|t| format!("topic_id IN ({}) AND ", list(t)))
                .unwrap_or_default();
            format!(
                "SELECT count(*) FROM history_messages WHERE {topic}timestamp BETWEEN {s} AND {e}"
            )
        }
    };
    count_of(tx, &sql, &q)
}

/// Messages of `name` with a topic in `topics` (any when `None`) in `window`.
fn name_count(
    tx: &mut Transaction<'_>,
    name: Name,
    topics: Option<&[i32]>,
    window: Option<(f64, f64)>,
) -> Result<u64, StoreError> {
    let (bridge, column, counts, id) = name.tables();
    let mut q = Sql::default();
    let sql = match window {
        None => {
            let topic = topics
                .map(|t| format!(" AND topic_id IN ({})", list(t)))
                .unwrap_or_default();
            format!(
                "SELECT COALESCE(sum(messages), 0)::BIGINT FROM {counts} WHERE {column} = {id}{topic}"
            )
        }
        Some((s, e)) => {
            // The bridge rows are keyed (name, topic, time): one range per topic.
            let all;
            let topics = match topics {
                Some(t) => t,
                None => {
                    all = name_topics(tx, name)?;
                    &all
                }
            };
            if topics.is_empty() {
                return Ok(0);
            }
            let (s, e) = (q.bind(Box::new(s)), q.bind(Box::new(e)));
            format!(
                "SELECT count(*) FROM {bridge} WHERE {column} = {id} \
                 AND topic_id IN ({}) AND timestamp BETWEEN {s} AND {e}",
                list(topics)
            )
        }
    };
    count_of(tx, &sql, &q)
}

/// Messages of both `user` and `package`, over the whole history.
fn pair_count(tx: &mut Transaction<'_>, user: i32, package: i32) -> Result<u64, StoreError> {
    let sql = format!(
        "SELECT COALESCE(sum(messages), 0)::BIGINT FROM history_user_package_counts \
         WHERE user_id = {user} AND package_id = {package}"
    );
    count_of(tx, &sql, &Sql::default())
}

/// One name of a list of at most one, when the list has exactly one.
fn single(ids: &[i32], make: fn(i32) -> Name) -> Option<Name> {
    (ids.len() == 1).then(|| make(ids[0]))
}

/// The count of a filter of the shapes the running counts and index ranges
/// answer directly; `None` for the others.
fn quick_count(
    tx: &mut Transaction<'_>,
    r: &Resolved,
    window: Option<(f64, f64)>,
) -> Result<Option<u64>, StoreError> {
    if !r.contains.is_empty()
        || r.users.len() + r.packages.len() > 1
        || r.not_users.len() + r.not_packages.len() > 1
    {
        return Ok(None);
    }
    let positive = single(&r.users, Name::User).or(single(&r.packages, Name::Package));
    let negative = single(&r.not_users, Name::User).or(single(&r.not_packages, Name::Package));
    let topics = r.topics.as_deref();
    let minus = match (positive, negative) {
        (_, None) => 0,
        (None, Some(n)) => name_count(tx, n, topics, window)?,
        (Some(Name::User(u)), Some(Name::Package(p)))
        | (Some(Name::Package(p)), Some(Name::User(u)))
            if topics.is_none() && window.is_none() =>
        {
            pair_count(tx, u, p)?
        }
        _ => return Ok(None),
    };
    let base = match positive {
        None => messages_count(tx, topics, window)?,
        Some(p) => name_count(tx, p, topics, window)?,
    };
    Ok(Some(base.saturating_sub(minus)))
}

/// The conditions on a message row `m` (or, for those a bridge row answers,
/// on `key`, the driving row's message id and timestamp columns) beyond the
/// driving source's own.
fn conditions(
    r: &Resolved,
    q: &mut Sql,
    window: Option<(f64, f64)>,
    msg: &str,
    timestamp: &str,
    skip: Option<Name>,
    with_topics: bool,
) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some((s, e)) = window {
        let (s, e) = (q.bind(Box::new(s)), q.bind(Box::new(e)));
        parts.push(format!("{timestamp} BETWEEN {s} AND {e}"));
    }
    let bridges = [
        (&r.users, Name::User(0), ""),
        (&r.packages, Name::Package(0), ""),
        (&r.not_users, Name::User(0), "NOT "),
        (&r.not_packages, Name::Package(0), "NOT "),
    ];
    for (ids, kind, not) in bridges {
        if ids.is_empty() {
            continue;
        }
        let driving = matches!(
            (skip, kind),
            (Some(Name::User(_)), Name::User(_)) | (Some(Name::Package(_)), Name::Package(_))
        ) && not.is_empty();
        if driving {
            continue;
        }
        let (bridge, column, _, _) = kind.tables();
        parts.push(format!(
            "{not}EXISTS (SELECT 1 FROM {bridge} x WHERE x.msg = {msg} AND x.{column} IN ({}))",
            list(ids)
        ));
    }
    if with_topics {
        if let Some(t) = &r.topics {
            parts.push(format!("m.topic_id IN ({})", list(t)));
        }
    }
    if !r.contains.is_empty() {
        let any: Vec<String> = r
            .contains
            .iter()
            .map(|c| format!("strpos(m.msg, {}) > 0", q.bind(Box::new(c.clone()))))
            .collect();
        parts.push(format!("({})", any.join(" OR ")));
    }
    parts
}

/// The count of every message the filter matches.
pub(crate) fn count(
    tx: &mut Transaction<'_>,
    r: &Resolved,
    window: Option<(f64, f64)>,
) -> Result<u64, StoreError> {
    if r.nothing {
        return Ok(0);
    }
    if let Some(n) = quick_count(tx, r, window)? {
        return Ok(n);
    }
    let mut q = Sql::default();
    let parts = conditions(r, &mut q, window, "m.id", "m.timestamp", None, true);
    let clause = if parts.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", parts.join(" AND "))
    };
    count_of(
        tx,
        &format!("SELECT count(*) FROM history_messages m{clause}"),
        &q,
    )
}

/// The ids and timestamps of one page's messages, in order: the SQL of a
/// query yielding columns `id` and `ts`, and its parameters. `None` when the
/// filter matches nothing.
pub(crate) fn page_keys(
    r: &Resolved,
    window: Option<(f64, f64)>,
    filter: &Filter,
) -> Option<(String, Sql)> {
    if r.nothing {
        return None;
    }
    let mut q = Sql::default();
    let sql = page_keys_sql(r, window, filter, &mut q);
    Some((sql, q))
}

/// See [`page_keys`]; the SQL text.
fn page_keys_sql(r: &Resolved, window: Option<(f64, f64)>, filter: &Filter, q: &mut Sql) -> String {
    let order = match filter.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    let limit = filter.offset() + u64::from(filter.rows_per_page);
    // The driving source: the one user's or package's bridge rows, else messages.
    // A user with messages in very many topics is frequent: the newest
    // messages find their page sooner than a merge of that many ranges.
    let driver = r.driver().filter(|_| {
        r.driver_topics
            .as_ref()
            .is_none_or(|t| t.len() <= MAX_MERGED_TOPICS)
    });
    let (from, msg, ts, by_name) = match driver {
        Some(name) => {
            let (bridge, column, _, id) = name.tables();
            let join = if r.contains.is_empty() {
                String::new()
            } else {
                " JOIN history_messages m ON m.id = b.msg".to_string()
            };
            (
                format!("{bridge} b{join}"),
                "b.msg",
                "b.timestamp",
                Some(format!("b.{column} = {id}")),
            )
        }
        None => (
            "history_messages m".to_string(),
            "m.id",
            "m.timestamp",
            None,
        ),
    };
    let topic_column = if driver.is_some() {
        "b.topic_id"
    } else {
        "m.topic_id"
    };
    let mut parts = conditions(r, q, window, msg, ts, driver, false);
    parts.extend(by_name);
    let branch = |topic: Option<String>| -> String {
        let mut all = parts.clone();
        all.extend(topic);
        let clause = if all.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", all.join(" AND "))
        };
        format!(
            "(SELECT {msg} AS id, {ts} AS ts FROM {from}{clause} \
             ORDER BY {ts} {order}, {msg} {order} LIMIT {limit})"
        )
    };
    let topics = match driver {
        Some(_) => r.topics.as_ref().or(r.driver_topics.as_ref()),
        None => r.topics.as_ref(),
    };
    let branches: Vec<String> = match topics {
        None => vec![branch(None)],
        Some(t) if t.is_empty() => {
            return "SELECT NULL::BIGINT AS id, NULL::FLOAT8 AS ts WHERE false".to_string()
        }
        Some(t) if t.len() <= MAX_MERGED_TOPICS => t
            .iter()
            .map(|id| branch(Some(format!("{topic_column} = {id}"))))
            .collect(),
        Some(t) => vec![branch(Some(format!("{topic_column} IN ({})", list(t))))],
    };
    let mut seen = HashSet::new();
    let branches: Vec<String> = branches
        .into_iter()
        .filter(|b| seen.insert(b.clone()))
        .collect();
    format!(
        "SELECT id, ts FROM ({}) k ORDER BY ts {order}, id {order} LIMIT {} OFFSET {}",
        branches.join(" UNION ALL "),
        filter.rows_per_page,
        filter.offset()
    )
}
