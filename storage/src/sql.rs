//! Portable SQL for consumers whose queries read the same on both backends:
//! placeholders written `$1`, `$2`, ... (PostgreSQL's form, rewritten for
//! SQLite), parameters bound by the types the server infers, and rows read as
//! JSON values (text, integer, real, boolean or null).
//!
//! For small tables and administrative queries (preferences, awards); the hot
//! paths of the history store keep their own backend-specific code.

use serde_json::{json, Value};

use crate::{Backend, BackendError, Tx};

/// A parameter either backend binds.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// Text.
    Text(&'a str),
    /// An integer (bound as `INT4` or `INT8`, whichever the server expects).
    Int(i64),
    /// A boolean (an integer 0/1 in SQLite).
    Bool(bool),
    /// SQL `NULL`.
    Null,
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value as SqlValue};
        match self {
            Param::Text(s) => s.to_sql(),
            Param::Int(i) => i.to_sql(),
            Param::Bool(b) => b.to_sql(),
            Param::Null => Ok(ToSqlOutput::Owned(SqlValue::Null)),
        }
    }
}

/// One row: the columns the query asked for, in order.
pub type Row = Vec<Value>;

/// Runs `sql` and returns its rows.
pub fn query(tx: &mut Tx<'_>, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, BackendError> {
    match tx {
        Tx::Sqlite(tx) => {
            let mut stmt = tx.prepare_cached(&numbered(sql))?;
            let n = stmt.column_count();
            let refs: Vec<&dyn rusqlite::ToSql> =
                params.iter().map(|p| p as &dyn rusqlite::ToSql).collect();
            let rows = stmt.query_map(refs.as_slice(), |row| {
                (0..n)
                    .map(|i| {
                        use rusqlite::types::ValueRef;
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(i) => json!(i),
                            ValueRef::Real(f) => json!(f),
                            ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                            ValueRef::Blob(_) => Value::Null,
                        })
                    })
                    .collect::<Result<Row, _>>()
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }
        Tx::Postgres(tx) => {
            let stmt = tx.prepare(sql)?;
            let bound: Vec<PgParam> = stmt
                .params()
                .iter()
                .enumerate()
                .map(|(i, ty)| PgParam::bind(params.get(i).copied().unwrap_or(Param::Null), ty))
                .collect();
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = bound
                .iter()
                .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                .collect();
            let rows = tx.query(&stmt, &refs)?;
            Ok(rows.iter().map(pg_row).collect())
        }
    }
}

/// Runs a statement; returns how many rows it changed.
pub fn execute(tx: &mut Tx<'_>, sql: &str, params: &[Param<'_>]) -> Result<u64, BackendError> {
    match tx {
        Tx::Sqlite(tx) => {
            let refs: Vec<&dyn rusqlite::ToSql> =
                params.iter().map(|p| p as &dyn rusqlite::ToSql).collect();
            Ok(tx
                .prepare_cached(&numbered(sql))?
                .execute(refs.as_slice())? as u64)
        }
        Tx::Postgres(_) => {
            // Through `query` so parameters bind by inferred type; a statement
            // without RETURNING gives no rows, so count with RETURNING 1.
            let sql = format!("{sql} RETURNING 1");
            Ok(query(tx, &sql, params)?.len() as u64)
        }
    }
}

/// Runs an `INSERT` and returns the new row's integer `id`.
pub fn insert_returning_id(
    tx: &mut Tx<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<i64, BackendError> {
    let rows = query(tx, &format!("{sql} RETURNING id"), params)?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .and_then(Value::as_i64)
        .unwrap_or_default())
}

/// The current UTC time as SQL for `backend` (text in SQLite, `TIMESTAMP` in
/// PostgreSQL; both sort and compare as times).
pub fn now_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "strftime('%Y-%m-%d %H:%M:%f', 'now')",
        Backend::Postgres => "(now() AT TIME ZONE 'utc')",
    }
}

/// PostgreSQL's `$N` placeholders as SQLite's `?N`: SQLite numbers `$name`
/// parameters in order of appearance, `?N` by their number.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// A parameter converted to the type PostgreSQL inferred for its placeholder.
#[derive(Debug)]
enum PgParam {
    Int4(Option<i32>),
    Int8(Option<i64>),
    Bool(Option<bool>),
    Float(Option<f64>),
    Text(Option<String>),
}

impl PgParam {
    fn bind(param: Param<'_>, ty: &postgres::types::Type) -> PgParam {
        use postgres::types::Type;
        let text = match param {
            Param::Text(s) => Some(s.to_string()),
            Param::Int(i) => Some(i.to_string()),
            Param::Bool(b) => Some(b.to_string()),
            Param::Null => None,
        };
        let int = || match param {
            Param::Int(i) => Some(i),
            Param::Bool(b) => Some(i64::from(b)),
            Param::Text(s) => s.parse().ok(),
            Param::Null => None,
        };
        match *ty {
            Type::INT8 => PgParam::Int8(int()),
            Type::INT4 | Type::INT2 => PgParam::Int4(int().and_then(|i| i32::try_from(i).ok())),
            Type::FLOAT8 | Type::FLOAT4 => PgParam::Float(int().map(|i| i as f64)),
            Type::BOOL => PgParam::Bool(match param {
                Param::Bool(b) => Some(b),
                Param::Int(i) => Some(i != 0),
                Param::Text(s) => Some(s == "true" || s == "t" || s == "1"),
                Param::Null => None,
            }),
            _ => PgParam::Text(text),
        }
    }
}

impl postgres::types::ToSql for PgParam {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            PgParam::Int4(v) => v.to_sql(ty, out),
            PgParam::Int8(v) => v.to_sql(ty, out),
            PgParam::Bool(v) => v.to_sql(ty, out),
            PgParam::Float(v) => match *ty {
                postgres::types::Type::FLOAT4 => v.map(|f| f as f32).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            PgParam::Text(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn pg_row(row: &postgres::Row) -> Row {
    use postgres::types::Type;
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, col)| match *col.type_() {
            Type::INT2 => json!(row.get::<_, Option<i16>>(i)),
            Type::INT4 => json!(row.get::<_, Option<i32>>(i)),
            Type::INT8 => json!(row.get::<_, Option<i64>>(i)),
            Type::BOOL => json!(row.get::<_, Option<bool>>(i)),
            Type::FLOAT4 => json!(row.get::<_, Option<f32>>(i)),
            Type::FLOAT8 => json!(row.get::<_, Option<f64>>(i)),
            Type::TIMESTAMP => {
                json!(row
                    .get::<_, Option<std::time::SystemTime>>(i)
                    .map(|t| chrono::DateTime::<chrono::Utc>::from(t)
                        .format("%Y-%m-%d %H:%M:%S%.6f")
                        .to_string()))
            }
            _ => json!(row.get::<_, Option<String>>(i)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_placeholders_become_numbered_question_marks() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '$x'"),
            "SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '$x'"
        );
    }
}
