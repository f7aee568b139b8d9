//! Storage errors, and the classification the writer acts on: a transient
//! failure (server gone, locked, disk full) is retried; a permanent one (a row
//! the database will always refuse) is dead-lettered.

use std::fmt;

/// What kind of failure a database reported, per backend (SQLite result codes,
/// PostgreSQL SQLSTATE classes, connection errors). The label is used in
/// metrics (`kind="busy"`) and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Locked or busy (SQLite `BUSY`/`LOCKED`, PostgreSQL `55P03`, a cancelled
    /// statement): transient.
    Busy,
    /// Out of disk or memory (SQLite `FULL`, PostgreSQL class `53`): transient.
    Full,
    /// The server or file cannot be reached: connection refused or closed,
    /// server shutting down (PostgreSQL classes `08`, `57`, `28`), no
    /// connection free in the pool, SQLite `CANTOPEN`: transient.
    Unavailable,
    /// The database accepts no writes (SQLite `READONLY`, PostgreSQL `25006`,
    /// a standby after a failover): transient, ops can fix it.
    ReadOnly,
    /// Writing is not permitted (SQLite `PERM`, PostgreSQL `42501`): transient,
    /// ops can fix it.
    Denied,
    /// An I/O error of the file system or server (SQLite `IOERR`, PostgreSQL
    /// class `58`): transient.
    Io,
    /// Transaction conflict (PostgreSQL class `40`: serialization failure,
    /// deadlock): transient, the retry succeeds.
    Conflict,
    /// A constraint refuses the row (SQLite `CONSTRAINT`, PostgreSQL class
    /// `23`): permanent.
    Constraint,
    /// The data cannot be stored as given (type or size mismatch, PostgreSQL
    /// class `22`, a value that does not convert): permanent.
    Data,
    /// Anything else (a statement the database does not understand, say):
    /// permanent.
    Other,
}

impl ErrorKind {
    /// Whether trying again later may succeed.
    pub fn is_transient(self) -> bool {
        !matches!(
            self,
            ErrorKind::Constraint | ErrorKind::Data | ErrorKind::Other
        )
    }

    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Busy => "busy",
            ErrorKind::Full => "full",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::Denied => "denied",
            ErrorKind::Io => "io",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Constraint => "constraint",
            ErrorKind::Data => "data",
            ErrorKind::Other => "other",
        }
    }

    /// Classifies a SQLite error by its result code.
    pub fn of_sqlite(error: &rusqlite::Error) -> ErrorKind {
        use rusqlite::ErrorCode as C;
        match error.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked) => ErrorKind::Busy,
            Some(C::DiskFull | C::OutOfMemory) => ErrorKind::Full,
            Some(C::CannotOpen | C::NotADatabase) => ErrorKind::Unavailable,
            Some(C::ReadOnly) => ErrorKind::ReadOnly,
            Some(C::PermissionDenied | C::AuthorizationForStatementDenied) => ErrorKind::Denied,
            Some(C::SystemIoFailure | C::FileLockingProtocolFailed) => ErrorKind::Io,
            Some(C::ConstraintViolation) => ErrorKind::Constraint,
            Some(C::TypeMismatch | C::TooBig | C::ParameterOutOfRange) => ErrorKind::Data,
            Some(_) => ErrorKind::Other,
            // Not from SQLite itself: a value that does not convert, a wrong
            // parameter count.
            None => ErrorKind::Data,
        }
    }

    /// Classifies a PostgreSQL error by its SQLSTATE, or as a connection
    /// failure when the server sent none.
    pub fn of_postgres(error: &postgres::Error) -> ErrorKind {
        if let Some(db) = error.as_db_error() {
            return ErrorKind::of_sqlstate(db.code().code());
        }
        if error.is_closed() {
            return ErrorKind::Unavailable;
        }
        let text = error.to_string();
        if text.starts_with("error serializing") || text.starts_with("error deserializing") {
            return ErrorKind::Data;
        }
        // No SQLSTATE: the connection failed (refused, reset, timed out, TLS).
        ErrorKind::Unavailable
    }

    /// Classifies a PostgreSQL SQLSTATE code (`23505`, `08006`, ...).
    pub fn of_sqlstate(code: &str) -> ErrorKind {
        match code {
            "25006" => ErrorKind::ReadOnly,
            "42501" => ErrorKind::Denied,
            "55P03" | "55006" | "57014" => ErrorKind::Busy,
            "53300" => ErrorKind::Unavailable,
            "3D000" => ErrorKind::Unavailable,
            _ => match code.get(..2) {
                Some("08" | "28" | "57") => ErrorKind::Unavailable,
                Some("53") => ErrorKind::Full,
                Some("58") => ErrorKind::Io,
                Some("40") => ErrorKind::Conflict,
                Some("23") => ErrorKind::Constraint,
                Some("22") => ErrorKind::Data,
                _ => ErrorKind::Other,
            },
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error the batched writer can classify: transient errors are retried,
/// permanent ones dead-lettered. Implemented by [`StorageError`]; a consumer's
/// own error type implements it to use its own sink.
pub trait Classify {
    /// What kind of failure this is.
    fn kind(&self) -> ErrorKind;
}

/// The database library's error behind a [`StorageError`].
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// From SQLite.
    #[error("{0}")]
    Sqlite(#[source] rusqlite::Error),
    /// From PostgreSQL (the server's message and SQLSTATE, or the connection's error).
    #[error("{}", postgres_text(.0))]
    Postgres(#[source] postgres::Error),
    /// From the connection pool (no connection within the timeout).
    #[error("{0}")]
    Pool(#[source] r2d2::Error),
    /// From the migrations runner.
    #[error("{0}")]
    Migration(#[source] refinery::Error),
}

/// PostgreSQL's errors print as "db error" and keep the server's message in the
/// source: show both, with the SQLSTATE.
fn postgres_text(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

impl BackendError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BackendError::Sqlite(e) => ErrorKind::of_sqlite(e),
            BackendError::Postgres(e) => ErrorKind::of_postgres(e),
            BackendError::Pool(_) => ErrorKind::Unavailable,
            BackendError::Migration(_) => ErrorKind::Other,
        }
    }
}

impl From<rusqlite::Error> for BackendError {
    fn from(e: rusqlite::Error) -> Self {
        BackendError::Sqlite(e)
    }
}

impl From<postgres::Error> for BackendError {
    fn from(e: postgres::Error) -> Self {
        BackendError::Postgres(e)
    }
}

impl From<r2d2::Error> for BackendError {
    fn from(e: r2d2::Error) -> Self {
        BackendError::Pool(e)
    }
}

/// A storage failure. Every message names the database (password masked).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The `database` setting names a scheme fedhub does not know.
    #[error("database URL {url} has an unknown scheme {scheme:?}: expected a file path, sqlite:PATH or postgres://user:password@host:port/dbname")]
    UnknownScheme {
        /// The URL (password masked).
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// The `database` setting is malformed.
    #[error("database URL {url:?} is invalid: {reason}")]
    InvalidUrl {
        /// The URL (password masked).
        url: String,
        /// What is wrong.
        reason: String,
        /// The parser's error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A SQLite database file cannot be created or opened.
    #[error("cannot create or open the SQLite database {path}: {reason}")]
    SqliteFile {
        /// The file.
        path: String,
        /// Why (a missing directory, a directory in its place, SQLite's message).
        reason: String,
        /// SQLite's error, if any.
        #[source]
        source: Option<BackendError>,
    },
    /// The server cannot be reached, or refuses the credentials, or the first
    /// connection fails otherwise.
    #[error("cannot connect to database {url}: {source}")]
    Connect {
        /// The URL (password masked).
        url: String,
        /// The cause.
        #[source]
        source: BackendError,
    },
    /// The database accepts no writes.
    #[error("database {url} is read-only ({detail}): fedhub needs to write to it")]
    ReadOnly {
        /// The URL (password masked).
        url: String,
        /// How it showed.
        detail: String,
    },
    /// The server is older than PostgreSQL 13.
    #[error("database {url} is PostgreSQL {version}: fedhub needs PostgreSQL 13 or later")]
    ServerTooOld {
        /// The URL (password masked).
        url: String,
        /// The server's version.
        version: String,
    },
    /// The schema in the database is newer than this binary knows.
    #[error("the {scope} schema in {url} is at version {database}, newer than this fedhub's version {binary}: run a newer fedhub, or point this one at another database")]
    SchemaTooNew {
        /// The URL (password masked).
        url: String,
        /// The consumer (or other owner) of the schema.
        scope: String,
        /// The version recorded in the database.
        database: i64,
        /// The newest version this binary has.
        binary: i64,
    },
    /// Applying migrations failed.
    #[error("cannot migrate the {scope} schema in {url}: {source}")]
    Migration {
        /// The URL (password masked).
        url: String,
        /// The consumer (or other owner) of the schema.
        scope: String,
        /// The cause.
        #[source]
        source: BackendError,
    },
    /// The migrations given are unusable (a bad name, a duplicate version).
    #[error("invalid migration {name:?} of {scope}: {reason}")]
    InvalidMigration {
        /// The consumer (or other owner) of the schema.
        scope: String,
        /// The migration's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A statement, transaction or connection checkout failed.
    #[error("{operation} on {url} failed: {source}")]
    Database {
        /// The URL (password masked).
        url: String,
        /// What was being done (`commit`, `checkout`, ...).
        operation: &'static str,
        /// The cause.
        #[source]
        source: BackendError,
    },
}

impl StorageError {
    /// A failed database operation on `url`.
    pub fn database(
        url: &crate::DatabaseUrl,
        operation: &'static str,
        source: impl Into<BackendError>,
    ) -> StorageError {
        StorageError::Database {
            url: url.to_string(),
            operation,
            source: source.into(),
        }
    }

    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::Database { source, .. } | StorageError::Connect { source, .. } => {
                source.kind()
            }
            StorageError::SqliteFile { .. } => ErrorKind::Unavailable,
            StorageError::ReadOnly { .. } => ErrorKind::ReadOnly,
            StorageError::Migration { source, .. } => match source.kind() {
                ErrorKind::Other => ErrorKind::Other,
                kind => kind,
            },
            StorageError::UnknownScheme { .. }
            | StorageError::InvalidUrl { .. }
            | StorageError::ServerTooOld { .. }
            | StorageError::SchemaTooNew { .. }
            | StorageError::InvalidMigration { .. } => ErrorKind::Other,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
    }
}

impl Classify for StorageError {
    fn kind(&self) -> ErrorKind {
        StorageError::kind(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_by_class() {
        let table = [
            ("23505", ErrorKind::Constraint, false),
            ("23502", ErrorKind::Constraint, false),
            ("22001", ErrorKind::Data, false),
            ("42601", ErrorKind::Other, false),
            ("08006", ErrorKind::Unavailable, true),
            ("57P01", ErrorKind::Unavailable, true),
            ("28P01", ErrorKind::Unavailable, true),
            ("53100", ErrorKind::Full, true),
            ("53300", ErrorKind::Unavailable, true),
            ("40001", ErrorKind::Conflict, true),
            ("40P01", ErrorKind::Conflict, true),
            ("25006", ErrorKind::ReadOnly, true),
            ("42501", ErrorKind::Denied, true),
            ("55P03", ErrorKind::Busy, true),
            ("58030", ErrorKind::Io, true),
        ];
        for (code, kind, transient) in table {
            assert_eq!(ErrorKind::of_sqlstate(code), kind, "{code}");
            assert_eq!(kind.is_transient(), transient, "{code}");
        }
    }

    #[test]
    fn sqlite_errors_are_classified_by_result_code() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        conn.execute("INSERT INTO t VALUES (1, 'a')", []).unwrap();
        let dup = conn
            .execute("INSERT INTO t VALUES (1, 'b')", [])
            .unwrap_err();
        assert_eq!(ErrorKind::of_sqlite(&dup), ErrorKind::Constraint);
        let null = conn
            .execute("INSERT INTO t VALUES (2, NULL)", [])
            .unwrap_err();
        assert_eq!(ErrorKind::of_sqlite(&null), ErrorKind::Constraint);
        let syntax = conn
            .execute("INSERT INTO nowhere VALUES (1)", [])
            .unwrap_err();
        assert_eq!(ErrorKind::of_sqlite(&syntax), ErrorKind::Other);
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert_eq!(ErrorKind::of_sqlite(&busy), ErrorKind::Busy);
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert!(ErrorKind::of_sqlite(&full).is_transient());
    }
}
