//! Where a consumer's data lives: the `database` key of its config section,
//! parsed into a [`DatabaseUrl`].
//!
//! - a plain path (`/var/lib/fedhub/history.sqlite`, `history.sqlite`) or
//!   `sqlite:PATH` (`sqlite:///var/lib/x.sqlite` is the same as `sqlite:/var/lib/x.sqlite`):
//!   the embedded SQLite database, the default;
//! - `postgres://user:password@host:port/dbname` (or `postgresql://`), with
//!   libpq's query parameters (`?host=/run/postgresql` for a unix socket,
//!   `sslmode`, `connect_timeout`, ...): a PostgreSQL 13+ server.
//!
//! Anything else that looks like `scheme://...` is refused naming the scheme.
//! [`DatabaseUrl`]'s `Display` never shows a password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::StorageError;

/// Which database server (or library) a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Embedded SQLite (rusqlite, bundled).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The label used in metrics and logs: `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `database` setting.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum DatabaseUrl {
    /// A SQLite database file (created when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL server; the text is the URL as given (password included).
    Postgres(String),
}

impl DatabaseUrl {
    /// The `database` key of the config section `[consumers.<consumer>]`,
    /// parsed; the error names the key and what is expected (a password in
    /// the value is masked).
    pub fn from_setting(consumer: &str, value: &str) -> Result<DatabaseUrl, fedhub::ConfigError> {
        DatabaseUrl::parse(value).map_err(|e| {
            fedhub::ConfigError::Invalid(format!(
                "[consumers.{consumer}] database: {}",
                fedhub::error_chain(&e)
            ))
        })
    }

    /// Parses a `database` setting (see the module docs).
    pub fn parse(text: &str) -> Result<DatabaseUrl, StorageError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(StorageError::InvalidUrl {
                url: String::new(),
                reason: "empty: expected a file path, sqlite:PATH or postgres://user:password@host:port/dbname".into(),
                source: None,
            });
        }
        if let Some(rest) = trimmed.strip_prefix("sqlite:") {
            // sqlite:///abs/path and sqlite://rel are the SQLAlchemy spellings.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(StorageError::InvalidUrl {
                    url: trimmed.to_string(),
                    reason: "no file path after sqlite:".into(),
                    source: None,
                });
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if let Some(scheme) = scheme_of(trimmed) {
            return match scheme.to_ascii_lowercase().as_str() {
                "postgres" | "postgresql" => {
                    let masked = mask_password(trimmed);
                    let config = postgres::Config::from_str(trimmed).map_err(|e| {
                        StorageError::InvalidUrl {
                            reason: e.to_string(),
                            url: masked.clone(),
                            source: Some(Box::new(e)),
                        }
                    })?;
                    if config.get_dbname().is_none() {
                        return Err(StorageError::InvalidUrl {
                            url: masked,
                            reason: "no database name: expected postgres://user:password@host:port/dbname".into(),
                            source: None,
                        });
                    }
                    Ok(DatabaseUrl::Postgres(trimmed.to_string()))
                }
                _ => Err(StorageError::UnknownScheme {
                    url: mask_password(trimmed),
                    scheme: scheme.to_string(),
                }),
            };
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(trimmed)))
    }

    /// A SQLite file at `path`.
    pub fn sqlite(path: impl AsRef<Path>) -> DatabaseUrl {
        DatabaseUrl::Sqlite(path.as_ref().to_path_buf())
    }

    /// The backend it names.
    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite file, if it is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DatabaseUrl::Sqlite(path) => Some(path),
            DatabaseUrl::Postgres(_) => None,
        }
    }

    /// The URL with its password, for connecting. Never log this: use `Display`.
    pub fn expose(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => url.clone(),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatabaseUrl::parse(s)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => f.write_str(&mask_password(url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `scheme` of `scheme://...`, when the text has that shape.
fn scheme_of(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// The URL with the password of its user info and any `password=` parameter
/// replaced by `***`.
pub fn mask_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start]);
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => param.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_and_sqlite_urls_name_a_file() {
        let cases = [
            ("history.sqlite", "history.sqlite"),
            (
                "/var/lib/fedhub/history.sqlite",
                "/var/lib/fedhub/history.sqlite",
            ),
            ("sqlite:history.sqlite", "history.sqlite"),
            ("sqlite:/var/lib/x.sqlite", "/var/lib/x.sqlite"),
            ("sqlite:///var/lib/x.sqlite", "/var/lib/x.sqlite"),
            ("  spaced.sqlite ", "spaced.sqlite"),
        ];
        for (text, path) in cases {
            let url = DatabaseUrl::parse(text).unwrap();
            assert_eq!(url.sqlite_path(), Some(Path::new(path)), "{text}");
            assert_eq!(url.backend(), Backend::Sqlite);
        }
    }

    #[test]
    fn postgres_urls_parse_and_display_without_the_password() {
        let url =
            DatabaseUrl::parse("postgres://fedhub:s3cret@db.example:5433/datanommer").unwrap();
        assert_eq!(url.backend(), Backend::Postgres);
        assert_eq!(
            url.to_string(),
            "postgres://fedhub:***@db.example:5433/datanommer"
        );
        assert_eq!(
            format!("{url:?}"),
            "DatabaseUrl(postgres://fedhub:***@db.example:5433/datanommer)"
        );
        assert!(url.expose().contains("s3cret"));
        let socket =
            DatabaseUrl::parse("postgresql://fedhub@/nommer?host=/run/postgresql&password=pw")
                .unwrap();
        assert_eq!(
            socket.to_string(),
            "postgresql://fedhub@/nommer?host=/run/postgresql&password=***"
        );
    }

    #[test]
    fn bad_urls_are_refused_naming_what_is_wrong() {
        let err = DatabaseUrl::parse("mysql://root:pw@db/x").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown scheme \"mysql\""), "{text}");
        assert!(text.contains("mysql://root:***@db/x"), "{text}");
        assert!(!text.contains("pw@"), "{text}");
        assert!(
            text.contains("postgres://"),
            "names what is expected: {text}"
        );

        let err = DatabaseUrl::parse("postgres://u:pw@host:notaport/db").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("postgres://u:***@host:notaport/db"), "{text}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "the parser's error is kept"
        );

        let err = DatabaseUrl::parse("postgres://u:pw@host:5432").unwrap_err();
        assert!(err.to_string().contains("no database name"), "{err}");
        assert!(DatabaseUrl::parse("").is_err());
        assert!(DatabaseUrl::parse("sqlite:").is_err());
    }
}
