//! Awards in tahrir-api's tables (`persons`, `badges`, `issuers`,
//! `assertions`), through `fedhub-storage`, so Tahrir (the badges web
//! frontend) reads a fedhub database as its own.
//!
//! The tables are created if missing (`CREATE TABLE IF NOT EXISTS`: a database
//! Tahrir made is used as it is) by the `badges` migration scope. Every write is
//! idempotent: persons by their unique e-mail, badges by id, and an award is an
//! assertion whose primary key is tahrir's `"<badge_id> -> <person_id>"`,
//! inserted `ON CONFLICT DO NOTHING`. Only the transaction that really
//! inserted it publishes the award, before it commits: a publish that fails
//! rolls the award back, so an award and its bus message go together.

use fedhub_storage::sql::{execute, now_sql, query, Param as P};
use fedhub_storage::{BackendError, Database, Migrations, StorageError, Tx};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The e-mail domain of Fedora accounts, as tahrir's awards use it.
pub const EMAIL_DOMAIN: &str = "fedoraproject.org";

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS issuers (
    id INTEGER PRIMARY KEY,
    origin VARCHAR(128) NOT NULL,
    name VARCHAR(128) NOT NULL UNIQUE,
    org VARCHAR(128) NOT NULL,
    contact VARCHAR(128),
    created_on DATETIME NOT NULL
);
CREATE TABLE IF NOT EXISTS badges (
    id VARCHAR(128) PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE,
    image VARCHAR(128) NOT NULL,
    stl VARCHAR(128),
    description VARCHAR(128) NOT NULL,
    criteria VARCHAR(128) NOT NULL,
    issuer_id INTEGER NOT NULL REFERENCES issuers(id),
    created_on DATETIME NOT NULL,
    tags TEXT
);
CREATE TABLE IF NOT EXISTS persons (
    id INTEGER PRIMARY KEY,
    email VARCHAR(128) NOT NULL UNIQUE,
    nickname VARCHAR(128) UNIQUE,
    website VARCHAR(128),
    bio VARCHAR(140),
    created_on DATETIME NOT NULL,
    last_login DATETIME,
    opt_out BOOLEAN NOT NULL DEFAULT 0,
    rank INTEGER
);
CREATE TABLE IF NOT EXISTS assertions (
    id VARCHAR(128) PRIMARY KEY,
    badge_id VARCHAR(128) NOT NULL REFERENCES badges(id),
    person_id INTEGER NOT NULL REFERENCES persons(id),
    salt VARCHAR(128) NOT NULL,
    issued_on DATETIME NOT NULL,
    issued_for VARCHAR(256),
    recipient VARCHAR(256) NOT NULL
);
CREATE INDEX IF NOT EXISTS assertions_person ON assertions (person_id);
CREATE INDEX IF NOT EXISTS assertions_badge ON assertions (badge_id);
";

const POSTGRES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS issuers (
    id SERIAL PRIMARY KEY,
    origin VARCHAR(128) NOT NULL,
    name VARCHAR(128) NOT NULL UNIQUE,
    org VARCHAR(128) NOT NULL,
    contact VARCHAR(128),
    created_on TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS badges (
    id VARCHAR(128) PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE,
    image VARCHAR(128) NOT NULL,
    stl VARCHAR(128),
    description VARCHAR(128) NOT NULL,
    criteria VARCHAR(128) NOT NULL,
    issuer_id INTEGER NOT NULL REFERENCES issuers(id),
    created_on TIMESTAMP NOT NULL,
    tags TEXT
);
CREATE TABLE IF NOT EXISTS persons (
    id SERIAL PRIMARY KEY,
    email VARCHAR(128) NOT NULL UNIQUE,
    nickname VARCHAR(128) UNIQUE,
    website VARCHAR(128),
    bio VARCHAR(140),
    created_on TIMESTAMP NOT NULL,
    last_login TIMESTAMP,
    opt_out BOOLEAN NOT NULL DEFAULT false,
    rank INTEGER
);
CREATE TABLE IF NOT EXISTS assertions (
    id VARCHAR(128) PRIMARY KEY,
    badge_id VARCHAR(128) NOT NULL REFERENCES badges(id),
    person_id INTEGER NOT NULL REFERENCES persons(id),
    salt VARCHAR(128) NOT NULL,
    issued_on TIMESTAMP NOT NULL,
    issued_for VARCHAR(256),
    recipient VARCHAR(256) NOT NULL
);
CREATE INDEX IF NOT EXISTS assertions_person ON assertions (person_id);
CREATE INDEX IF NOT EXISTS assertions_badge ON assertions (badge_id);
";

/// An index on the leaderboard rank (the leaderboard reads by it).
const RANK_INDEX: &str = "CREATE INDEX IF NOT EXISTS persons_rank ON persons (rank);";

/// A person's badges read from the index alone (the awarder reads them for
/// every person it meets, ranking counts them), in place of the index on
/// `person_id` only.
const PERSON_BADGES_INDEX: &str = "
CREATE INDEX IF NOT EXISTS assertions_person_badge ON assertions (person_id, badge_id);
DROP INDEX IF EXISTS assertions_person;
";

/// The badges consumer's schema (scope `badges`): tahrir-api's tables, an
/// index on `persons.rank` and one on `assertions (person_id, badge_id)`.
pub fn migrations() -> Migrations {
    Migrations::new("badges")
        .step_per_backend(1, "tahrir_tables", SQLITE_SCHEMA, POSTGRES_SCHEMA)
        .step(2, "persons_rank_index", RANK_INDEX)
        .step(3, "assertions_person_badge_index", PERSON_BADGES_INDEX)
}

/// The issuer badges are awarded by (`badges_global.badge_issuer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    /// `issuer_origin`.
    pub origin: String,
    /// `issuer_name` (unique).
    pub name: String,
    /// `issuer_org`.
    pub org: String,
    /// `issuer_contact`.
    pub contact: String,
}

/// A badge as Tahrir stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Badge {
    /// Id (slug of the name).
    pub id: String,
    /// Name.
    pub name: String,
    /// Image URL.
    pub image: String,
    /// Description.
    pub description: String,
    /// Criteria URL (the rule's `discussion`).
    pub criteria: String,
    /// Tags, comma-joined.
    pub tags: String,
}

/// Whether someone already holds a badge, or opted out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// They hold the badge.
    pub holds: bool,
    /// They opted out of badges.
    pub opted_out: bool,
}

/// One award made.
#[derive(Debug, Clone, PartialEq)]
pub struct Award {
    /// The assertion id, `"<badge_id> -> <person_id>"`.
    pub assertion_id: String,
    /// The person's id.
    pub person_id: i64,
    /// The person's nickname.
    pub nickname: String,
    /// The `fedbadges.badge.award` message body (tahrir's shape).
    pub message: Value,
    /// The person's leaderboard rank before this award (`None`: unranked),
    /// what [`Tahrir::update_ranks`] compares with to announce an advance.
    pub rank_before: Option<i64>,
}

/// What the awarder needs to know about a person before evaluating criteria.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersonStanding {
    /// They opted out of badges.
    pub opted_out: bool,
    /// The ids of the badges they hold.
    pub badges: Vec<String>,
}

/// A person whose leaderboard rank got better.
#[derive(Debug, Clone, PartialEq)]
pub struct RankAdvance {
    /// The `fedbadges.person.rank.advance` message body.
    pub message: Value,
}

/// The badge tables of one database.
#[derive(Clone)]
pub struct Tahrir {
    db: Database,
}

impl Tahrir {
    /// Tahrir's tables in `db`, created if missing.
    pub fn open(db: Database) -> Result<Tahrir, StorageError> {
        db.migrate(&migrations())?;
        Ok(Tahrir { db })
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

    /// The issuer's id, adding it if it is new (`add_issuer`).
    pub fn ensure_issuer(&self, issuer: &Issuer) -> Result<i64, StorageError> {
        let now = now_sql(self.db.backend());
        self.run("add issuer", |tx| {
            execute(
                tx,
                &format!(
                    "INSERT INTO issuers (origin, name, org, contact, created_on) VALUES ($1, $2, $3, $4, {now}) ON CONFLICT (name) DO NOTHING"
                ),
                &[
                    P::Text(&issuer.origin),
                    P::Text(&issuer.name),
                    P::Text(&issuer.org),
                    P::Text(&issuer.contact),
                ],
            )?;
            let rows = query(tx, "SELECT id FROM issuers WHERE name = $1", &[P::Text(&issuer.name)])?;
            Ok(rows
                .first()
                .and_then(|r| r[0].as_i64())
                .unwrap_or_default())
        })
    }

    /// Adds the badge if it is new; an existing badge is not updated (as
    /// `add_badge`).
    pub fn ensure_badge(&self, badge: &Badge, issuer_id: i64) -> Result<(), StorageError> {
        let now = now_sql(self.db.backend());
        self.run("add badge", |tx| {
            execute(
                tx,
                &format!(
                    "INSERT INTO badges (id, name, image, description, criteria, issuer_id, created_on, tags) VALUES ($1, $2, $3, $4, $5, $6, {now}, $7) ON CONFLICT DO NOTHING"
                ),
                &[
                    P::Text(&badge.id),
                    P::Text(&badge.name),
                    P::Text(&badge.image),
                    P::Text(&badge.description),
                    P::Text(&badge.criteria),
                    P::Int(issuer_id),
                    P::Text(&badge.tags),
                ],
            )?;
            Ok(())
        })
    }

    /// Whether `nickname` holds `badge_id`, and whether they opted out
    /// (`assertion_exists`, `person.opt_out`).
    pub fn standing(&self, badge_id: &str, nickname: &str) -> Result<Standing, StorageError> {
        let email = format!("{nickname}@{EMAIL_DOMAIN}");
        self.run("read standing", |tx| {
            let rows = query(
                tx,
                "SELECT p.opt_out, (SELECT count(*) FROM assertions a WHERE a.person_id = p.id AND a.badge_id = $2) FROM persons p WHERE p.email = $1",
                &[P::Text(&email), P::Text(badge_id)],
            )?;
            Ok(rows
                .first()
                .map(|r| Standing {
                    opted_out: r[0].as_bool().unwrap_or_else(|| r[0].as_i64() == Some(1)),
                    holds: r[1].as_i64().unwrap_or(0) > 0,
                })
                .unwrap_or_default())
        })
    }

    /// A person's standing by nickname: opted out or not, and the badges
    /// held (`None`: no such person, so nothing held and not opted out).
    pub fn person_standing(&self, nickname: &str) -> Result<Option<PersonStanding>, StorageError> {
        let email = format!("{nickname}@{EMAIL_DOMAIN}");
        self.run("read standing", |tx| {
            let person = query(
                tx,
                "SELECT id, opt_out FROM persons WHERE email = $1",
                &[P::Text(&email)],
            )?;
            let Some(p) = person.first() else {
                return Ok(None);
            };
            let badges = query(
                tx,
                "SELECT badge_id FROM assertions WHERE person_id = $1",
                &[P::Int(p[0].as_i64().unwrap_or_default())],
            )?;
            Ok(Some(PersonStanding {
                opted_out: p[1].as_bool().unwrap_or_else(|| p[1].as_i64() == Some(1)),
                badges: badges
                    .iter()
                    .filter_map(|r| r[0].as_str().map(str::to_string))
                    .collect(),
            }))
        })
    }

    /// Awards `badge` to `nickname` for the message at `link`, unless they
    /// hold it already or opted out (then `None`). `publish` is called with
    /// the award before the transaction commits; its error rolls the award
    /// back.
    ///
    /// The leaderboard is not moved here: [`update_ranks`](Self::update_ranks)
    /// does it afterwards for any number of awards at once (the award carries
    /// the rank it had before, for the advance message).
    pub fn award(
        &self,
        badge: &Badge,
        nickname: &str,
        link: &str,
        publish: impl FnOnce(&Award) -> Result<(), String> + Send,
    ) -> Result<Option<Award>, AwardError> {
        let mut publish = Some(publish);
        let mut results =
            self.award_all(&[(badge, nickname)], link, |award| match publish.take() {
                Some(p) => p(award),
                None => Ok(()),
            })?;
        results.pop().unwrap_or(Ok(None))
    }

    /// Several awards for one message, in one transaction: each is made as
    /// [`award`](Self::award) makes it, in order, inside a savepoint of its
    /// own, so an award whose publication fails is rolled back alone and the
    /// others commit. One result per request: the award, `None` (held
    /// already, or opted out), or why it was rolled back. The outer error: the
    /// transaction failed and nothing was awarded.
    pub fn award_all(
        &self,
        requests: &[(&Badge, &str)],
        link: &str,
        mut publish: impl FnMut(&Award) -> Result<(), String> + Send,
    ) -> Result<Vec<Result<Option<Award>, AwardError>>, AwardError> {
        let now = now_sql(self.db.backend());
        let err = self.db.error_for("award");
        let results = self.db.transaction(|tx| {
            let mut results = Vec::with_capacity(requests.len());
            for (badge, nickname) in requests {
                let email = format!("{nickname}@{EMAIL_DOMAIN}");
                statement(tx, "SAVEPOINT award").map_err(&err)?;
                let Some(award) =
                    insert_award(tx, badge, &email, nickname, link, now).map_err(&err)?
                else {
                    statement(tx, "RELEASE SAVEPOINT award").map_err(&err)?;
                    results.push(Ok(None));
                    continue;
                };
                match publish(&award) {
                    Ok(()) => {
                        statement(tx, "RELEASE SAVEPOINT award").map_err(&err)?;
                        results.push(Ok(Some(award)));
                    }
                    Err(reason) => {
                        statement(tx, "ROLLBACK TO SAVEPOINT award").map_err(&err)?;
                        statement(tx, "RELEASE SAVEPOINT award").map_err(&err)?;
                        results.push(Err(AwardError::Publish(reason)));
                    }
                }
            }
            Ok(results)
        });
        results.map_err(AwardError::Storage)
    }

    /// Brings the leaderboard up to date after awards (tahrir's ranks: by
    /// badge count, ties share a rank, opted-out people unranked), in one
    /// transaction: everyone is ranked again from the counts (only changed
    /// ranks are written), so the awards of every hub sharing the database
    /// are counted. `winners` are (person id, rank before their first award
    /// since the last update); those whose rank got better get their
    /// `fedbadges.person.rank.advance`. On PostgreSQL the update takes a lock
    /// on `persons`, so the updates of several hubs run one at a time.
    pub fn update_ranks(
        &self,
        winners: &[(i64, Option<i64>)],
    ) -> Result<Vec<RankAdvance>, StorageError> {
        self.run("update ranks", |tx| {
            if matches!(tx, Tx::Postgres(_)) {
                statement(tx, "LOCK TABLE persons IN SHARE ROW EXCLUSIVE MODE")?;
            }
            rank_everyone(tx)?;
            let mut advances = Vec::new();
            for (person_id, before) in winners {
                advances.extend(rank_message(tx, *person_id, *before)?);
            }
            Ok(advances)
        })
    }

    /// Ranks everyone again (see [`update_ranks`](Self::update_ranks)) and
    /// reports whether `person_id` advanced: repairs ranks written by
    /// something else.
    pub fn adjust_ranks(&self, person_id: i64) -> Result<Option<RankAdvance>, StorageError> {
        self.run("adjust ranks", |tx| {
            let old = rank_of(tx, person_id)?;
            rank_everyone(tx)?;
            rank_message(tx, person_id, old)
        })
    }

    /// Ranks everyone again from the badge counts (see
    /// [`update_ranks`](Self::update_ranks)): the awarder does this once when
    /// it starts.
    pub fn rank_everyone(&self) -> Result<(), StorageError> {
        self.run("rank everyone", rank_everyone)
    }

    /// A person's badges (`None` if nobody has that nickname).
    pub fn person_badges(&self, nickname: &str) -> Result<Option<Value>, StorageError> {
        self.run("read person", |tx| {
            let person = query(
                tx,
                "SELECT id, nickname, rank, opt_out FROM persons WHERE nickname = $1",
                &[P::Text(nickname)],
            )?;
            let Some(p) = person.first() else { return Ok(None) };
            let badges = query(
                tx,
                "SELECT b.id, b.name, b.description, b.image, a.issued_on, a.issued_for FROM assertions a JOIN badges b ON b.id = a.badge_id WHERE a.person_id = $1 ORDER BY a.issued_on, b.id",
                &[P::Int(p[0].as_i64().unwrap_or_default())],
            )?;
            Ok(Some(json!({
                "user": p[1], "rank": p[2],
                "opt_out": p[3].as_bool().unwrap_or_else(|| p[3].as_i64() == Some(1)),
                "count": badges.len(),
                "badges": badges.iter().map(|b| json!({
                    "id": b[0], "name": b[1], "description": b[2], "image": b[3],
                    "issued_on": b[4], "issued_for": b[5],
                })).collect::<Vec<_>>(),
            })))
        })
    }

    /// A badge and who holds it (`None` if there is no such badge).
    pub fn badge_holders(&self, badge_id: &str) -> Result<Option<Value>, StorageError> {
        self.run("read badge", |tx| {
            let badge = query(
                tx,
                "SELECT id, name, description, image, criteria, tags FROM badges WHERE id = $1",
                &[P::Text(badge_id)],
            )?;
            let Some(b) = badge.first() else { return Ok(None) };
            let holders = query(
                tx,
                "SELECT p.nickname, a.issued_on FROM assertions a JOIN persons p ON p.id = a.person_id WHERE a.badge_id = $1 ORDER BY a.issued_on, p.nickname",
                &[P::Text(badge_id)],
            )?;
            Ok(Some(json!({
                "id": b[0], "name": b[1], "description": b[2], "image": b[3],
                "discussion": b[4], "tags": b[5], "count": holders.len(),
                "holders": holders.iter().map(|h| json!({"user": h[0], "issued_on": h[1]})).collect::<Vec<_>>(),
            })))
        })
    }

    /// The ranked people, best first, at most `limit`.
    pub fn leaderboard(&self, limit: i64) -> Result<Value, StorageError> {
        self.run("read leaderboard", |tx| {
            let rows = query(
                tx,
                "SELECT p.nickname, p.rank, count(a.id) FROM persons p JOIN assertions a ON a.person_id = p.id WHERE p.rank IS NOT NULL GROUP BY p.id, p.nickname, p.rank ORDER BY p.rank, p.nickname LIMIT $1",
                &[P::Int(limit)],
            )?;
            Ok(json!({
                "leaderboard": rows.iter().map(|r| json!({"user": r[0], "rank": r[1], "badges": r[2]})).collect::<Vec<_>>(),
            }))
        })
    }

    /// How many assertions (awards) are stored.
    pub fn assertion_count(&self) -> Result<u64, StorageError> {
        self.run("count assertions", |tx| {
            let rows = query(tx, "SELECT count(*) FROM assertions", &[])?;
            Ok(rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0) as u64)
        })
    }

    /// Sets a person's opt-out flag (adding the person if new).
    pub fn set_opt_out(&self, nickname: &str, opt_out: bool) -> Result<(), StorageError> {
        let email = format!("{nickname}@{EMAIL_DOMAIN}");
        let now = now_sql(self.db.backend());
        self.run("set opt-out", |tx| {
            let (t, f) = if matches!(tx, Tx::Sqlite(_)) { ("1", "0") } else { ("true", "false") };
            execute(
                tx,
                &format!("INSERT INTO persons (email, nickname, created_on, opt_out) VALUES ($1, $2, {now}, {f}) ON CONFLICT DO NOTHING"),
                &[P::Text(&email), P::Text(nickname)],
            )?;
            execute(
                tx,
                &format!("UPDATE persons SET opt_out = {} WHERE email = $1", if opt_out { t } else { f }),
                &[P::Text(&email)],
            )?;
            Ok(())
        })
    }
}

/// Adds the person if new, then the assertion if new; the award made, if any.
fn insert_award(
    tx: &mut Tx<'_>,
    badge: &Badge,
    email: &str,
    nickname: &str,
    link: &str,
    now: &str,
) -> Result<Option<Award>, BackendError> {
    let false_sql = if matches!(tx, Tx::Sqlite(_)) {
        "0"
    } else {
        "false"
    };
    execute(
            tx,
            &format!(
                "INSERT INTO persons (email, nickname, created_on, opt_out) VALUES ($1, $2, {now}, {false_sql}) ON CONFLICT DO NOTHING"
            ),
            &[P::Text(email), P::Text(nickname)],
        )?;
    let rows = query(
        tx,
        "SELECT id, nickname, opt_out, rank FROM persons WHERE email = $1",
        &[P::Text(email)],
    )?;
    let Some(row) = rows.first() else {
        // The nickname belongs to another e-mail address.
        return Ok(None);
    };
    if row[2]
        .as_bool()
        .unwrap_or_else(|| row[2].as_i64() == Some(1))
    {
        // Opted out (perhaps since the awarder last looked).
        return Ok(None);
    }
    let person_id = row[0].as_i64().unwrap_or_default();
    let nick = row[1].as_str().unwrap_or(nickname).to_string();
    let assertion_id = format!("{} -> {}", badge.id, person_id);
    let salt = salt(&assertion_id);
    let recipient = hex(&Sha256::digest(format!("{email}{salt}").as_bytes()));
    let inserted = execute(
            tx,
            &format!(
                "INSERT INTO assertions (id, badge_id, person_id, salt, issued_on, issued_for, recipient) VALUES ($1, $2, $3, $4, {now}, $5, $6) ON CONFLICT DO NOTHING"
            ),
            &[
                P::Text(&assertion_id),
                P::Text(&badge.id),
                P::Int(person_id),
                P::Text(&salt),
                P::Text(link),
                P::Text(&recipient),
            ],
        )?;
    if inserted == 0 {
        return Ok(None);
    }
    Ok(Some(Award {
        message: json!({
            "badge": {
                "name": badge.name,
                "description": badge.description,
                "image_url": badge.image,
                "badge_id": badge.id,
            },
            "user": {"username": nick, "badges_user_id": person_id},
        }),
        assertion_id,
        person_id,
        nickname: nick,
        rank_before: row[3].as_i64(),
    }))
}

/// A statement without parameters or rows (a lock, a savepoint).
fn statement(tx: &mut Tx<'_>, sql: &str) -> Result<(), BackendError> {
    match tx {
        Tx::Sqlite(t) => t.execute_batch(sql)?,
        Tx::Postgres(t) => t.batch_execute(sql)?,
    }
    Ok(())
}

fn first_i64(rows: &[fedhub_storage::sql::Row]) -> Option<i64> {
    rows.first().and_then(|r| r[0].as_i64())
}

fn rank_of(tx: &mut Tx<'_>, person_id: i64) -> Result<Option<i64>, BackendError> {
    Ok(first_i64(&query(
        tx,
        "SELECT rank FROM persons WHERE id = $1",
        &[P::Int(person_id)],
    )?))
}

/// Ranks every person who is not opted out and holds a badge.
fn rank_everyone(tx: &mut Tx<'_>) -> Result<(), BackendError> {
    let not_opted = if matches!(tx, Tx::Sqlite(_)) {
        "p.opt_out = 0"
    } else {
        "NOT p.opt_out"
    };
    execute(
        tx,
        &format!(
            "UPDATE persons SET rank = r.rank FROM (
                SELECT p.id AS id, RANK() OVER (ORDER BY c.badges DESC) AS rank
                FROM (SELECT person_id, count(*) AS badges FROM assertions GROUP BY person_id) c
                JOIN persons p ON p.id = c.person_id
                WHERE {not_opted}) r
             WHERE persons.id = r.id AND persons.rank IS DISTINCT FROM r.rank"
        ),
        &[],
    )?;
    Ok(())
}

/// The rank advance message, when `person_id`'s rank is now better than `old`.
fn rank_message(
    tx: &mut Tx<'_>,
    person_id: i64,
    old: Option<i64>,
) -> Result<Option<RankAdvance>, BackendError> {
    let rows = query(
        tx,
        "SELECT id, email, nickname, rank, opt_out, created_on FROM persons WHERE id = $1",
        &[P::Int(person_id)],
    )?;
    Ok(rows.first().and_then(|row| advance_message(row, old)))
}

/// The rank advance message for a person row (`id, email, nickname, rank,
/// opt_out, created_on`), when their rank is now better than `old`.
fn advance_message(row: &[Value], old: Option<i64>) -> Option<RankAdvance> {
    let new = row[3].as_i64();
    let advanced = match (old, new) {
        (None, Some(_)) => true,
        (Some(o), Some(n)) => n < o,
        _ => false,
    };
    advanced.then(|| RankAdvance {
        message: json!({
            "person": {
                "id": row[0], "email": row[1], "nickname": row[2], "rank": row[3],
                "opt_out": row[4].as_bool().unwrap_or_else(|| row[4].as_i64() == Some(1)),
                "created_on": row[5],
            },
            "old_rank": old,
        }),
    })
}

/// Why an award failed.
#[derive(Debug, thiserror::Error)]
pub enum AwardError {
    /// The database failed; nothing was awarded.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The award message could not be published; the award was rolled back.
    #[error("cannot publish the award, so it was rolled back: {0}")]
    Publish(String),
}

/// A salt for an assertion, as tahrir makes one (random hex).
fn salt(seed: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let digest = Sha256::digest(format!("{seed}{nanos}{}", std::process::id()).as_bytes());
    hex(&digest[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
