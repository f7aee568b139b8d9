//! Versioned schema migrations, one history per consumer (refinery, with the
//! table `fedhub_<scope>_migrations`), so consumers sharing one database each
//! keep their own tables and versions.
//!
//! Migrations are applied in one transaction (all or none). A database whose
//! history holds a version newer than the binary knows is refused before
//! anything runs ([`StorageError::SchemaTooNew`], naming both versions); one
//! whose applied migration differs from the binary's (edited SQL) is refused
//! by refinery's checksum check. On PostgreSQL an advisory lock per scope
//! makes hubs starting together apply each migration once.

use crate::error::{BackendError, StorageError};
use crate::pool::{Connection, Database};

/// One migration: a version, a name, and its SQL per backend.
#[derive(Debug, Clone)]
struct Step {
    version: u32,
    name: String,
    sqlite: String,
    postgres: String,
}

/// A consumer's schema, as an ordered list of migrations.
///
/// ```
/// let schema = fedhub_storage::Migrations::new("badges")
///     .step(1, "create_awards", "CREATE TABLE awards (person TEXT NOT NULL, badge TEXT NOT NULL, PRIMARY KEY (person, badge))")
///     .step_per_backend(
///         2,
///         "add_award_log",
///         "CREATE TABLE award_log (id INTEGER PRIMARY KEY, person TEXT NOT NULL)",
///         "CREATE TABLE award_log (id BIGSERIAL PRIMARY KEY, person TEXT NOT NULL)",
///     );
/// assert_eq!(schema.latest(), 2);
/// assert_eq!(schema.table(), "fedhub_badges_migrations");
/// ```
#[derive(Debug, Clone)]
pub struct Migrations {
    scope: String,
    steps: Vec<Step>,
}

/// What [`Database::migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The schema version before.
    pub from: i64,
    /// The schema version now.
    pub to: i64,
    /// The migrations applied (`V<version>__<name>`), in order.
    pub applied: Vec<String>,
}

impl Migrations {
    /// An empty schema for `scope` (a consumer's name in lowercase: letters,
    /// digits and `_`).
    pub fn new(scope: &str) -> Migrations {
        Migrations {
            scope: scope.to_string(),
            steps: Vec::new(),
        }
    }

    /// Adds migration `version` with the same SQL on both backends.
    pub fn step(self, version: u32, name: &str, sql: &str) -> Migrations {
        self.step_per_backend(version, name, sql, sql)
    }

    /// Adds migration `version` with SQL for each backend.
    pub fn step_per_backend(
        mut self,
        version: u32,
        name: &str,
        sqlite: &str,
        postgres: &str,
    ) -> Migrations {
        self.steps.push(Step {
            version,
            name: name.to_string(),
            sqlite: sqlite.to_string(),
            postgres: postgres.to_string(),
        });
        self
    }

    /// The newest version (0 when there is no migration).
    pub fn latest(&self) -> i64 {
        self.steps
            .iter()
            .map(|s| i64::from(s.version))
            .max()
            .unwrap_or(0)
    }

    /// The scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The table holding this scope's migration history.
    pub fn table(&self) -> String {
        format!("fedhub_{}_migrations", self.scope)
    }

    fn invalid(&self, name: &str, reason: impl Into<String>) -> StorageError {
        StorageError::InvalidMigration {
            scope: self.scope.clone(),
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// refinery's migrations for `postgres` or SQLite.
    fn refinery(&self, postgres: bool) -> Result<Vec<refinery::Migration>, StorageError> {
        let word =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !word(&self.scope) || self.scope.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(self.invalid("", "the scope must be lowercase letters, digits and _"));
        }
        let mut seen = std::collections::BTreeSet::new();
        self.steps
            .iter()
            .map(|step| {
                if step.version == 0 || !seen.insert(step.version) {
                    return Err(self.invalid(
                        &step.name,
                        format!("version {} is 0 or used twice", step.version),
                    ));
                }
                if !word(&step.name) {
                    return Err(self.invalid(&step.name, "names are letters, digits and _"));
                }
                let sql = if postgres {
                    &step.postgres
                } else {
                    &step.sqlite
                };
                refinery::Migration::unapplied(&format!("V{}__{}", step.version, step.name), sql)
                    .map_err(|e| self.invalid(&step.name, e.to_string()))
            })
            .collect()
    }
}

impl Database {
    /// Brings the consumer's schema up to `migrations.latest()`, applying what
    /// is missing in one transaction. Idempotent; refuses a database whose
    /// schema is newer than `migrations` (naming both versions).
    pub fn migrate(&self, migrations: &Migrations) -> Result<MigrationReport, StorageError> {
        let table = migrations.table();
        let url = self.url().to_string();
        let fail = |source: BackendError| StorageError::Migration {
            url: url.clone(),
            scope: migrations.scope().to_string(),
            source,
        };
        let mut conn = self.connection()?;
        let postgres = matches!(conn, Connection::Postgres(_));
        let steps = migrations.refinery(postgres)?;
        let mut runner = refinery::Runner::new(&steps).set_grouped(true);
        runner.set_migration_table_name(&table);
        let binary = migrations.latest();
        let report = match &mut conn {
            Connection::Sqlite(c) => {
                let exists: bool = c
                    .query_row(
                        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                        [&table],
                        |r| r.get(0),
                    )
                    .map_err(|e| fail(e.into()))?;
                let from: i64 = if exists {
                    c.query_row(
                        &format!("SELECT coalesce(max(version), 0) FROM {table}"),
                        [],
                        |r| r.get(0),
                    )
                    .map_err(|e| fail(e.into()))?
                } else {
                    0
                };
                self.check_not_newer(migrations, from, binary)?;
                let report = runner
                    .run(&mut **c)
                    .map_err(|e| fail(BackendError::Migration(e)))?;
                (from, report)
            }
            Connection::Postgres(c) => {
                // One hub at a time per scope: the others wait, then find
                // nothing left to apply.
                let lock = format!("fedhub migrations {table}");
                c.execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock])
                    .map_err(|e| fail(e.into()))?;
                let result = (|| {
                    let exists: bool = c
                        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                        .and_then(|row| row.try_get(0))
                        .map_err(|e| fail(e.into()))?;
                    let from: i64 = if exists {
                        c.query_one(
                            &format!("SELECT coalesce(max(version), 0)::bigint FROM {table}"),
                            &[],
                        )
                        .and_then(|row| row.try_get(0))
                        .map_err(|e| fail(e.into()))?
                    } else {
                        0
                    };
                    self.check_not_newer(migrations, from, binary)?;
                    let report = runner
                        .run(&mut **c)
                        .map_err(|e| fail(BackendError::Migration(e)))?;
                    Ok((from, report))
                })();
                let unlocked = c.execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock]);
                let out = result?;
                unlocked.map_err(|e| fail(e.into()))?;
                out
            }
        };
        let (from, report) = report;
        let applied: Vec<String> = report
            .applied_migrations()
            .iter()
            .map(|m| format!("V{}__{}", m.version(), m.name()))
            .collect();
        let to = from.max(binary);
        if !applied.is_empty() {
            tracing::info!(
                consumer = %self.consumer(),
                database = %self.url(),
                scope = migrations.scope(),
                from,
                to,
                applied = ?applied,
                "schema migrated"
            );
        }
        Ok(MigrationReport { from, to, applied })
    }

    fn check_not_newer(
        &self,
        migrations: &Migrations,
        database: i64,
        binary: i64,
    ) -> Result<(), StorageError> {
        if database > binary {
            return Err(StorageError::SchemaTooNew {
                url: self.url().to_string(),
                scope: migrations.scope().to_string(),
                database,
                binary,
            });
        }
        Ok(())
    }
}
