//! The outbox: every accepted delivery is a row of `fmn_deliveries` until it
//! is sent (then deleted) or dead-lettered (`state = 'dead'`, kept for
//! inspection and [`retry`](Outbox::retry_dead)).
//!
//! `next_attempt_at` is in milliseconds since the Unix epoch on both
//! backends, so due rows are found by plain integer comparison. A worker
//! claims a row by moving its `next_attempt_at` forward by a lease (a
//! compare-and-set on the value it read): a row is attempted by one worker
//! at a time, also with several hubs on one PostgreSQL database, and a row
//! whose worker died becomes due again when the lease runs out.

use fedhub_storage::sql::{execute, insert_returning_id, now_sql, query, Param as P};
use fedhub_storage::{BackendError, Database, Migrations, StorageError, Tx};
use serde_json::Value;

use super::Outgoing;

/// The outbox's schema (migration scope `fmn_delivery`).
pub fn migrations() -> Migrations {
    Migrations::new("fmn_delivery").step_per_backend(
        1,
        "create_fmn_deliveries",
        "CREATE TABLE fmn_deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_on TEXT NOT NULL,
            openid TEXT NOT NULL,
            context_name TEXT NOT NULL,
            address TEXT NOT NULL,
            payload TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL,
            last_error TEXT,
            state TEXT NOT NULL DEFAULT 'pending'
        );
        CREATE INDEX fmn_deliveries_due ON fmn_deliveries (state, next_attempt_at);",
        "CREATE TABLE fmn_deliveries (
            id BIGSERIAL PRIMARY KEY,
            created_on TIMESTAMP NOT NULL,
            openid TEXT NOT NULL,
            context_name TEXT NOT NULL,
            address TEXT NOT NULL,
            payload TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at BIGINT NOT NULL,
            last_error TEXT,
            state TEXT NOT NULL DEFAULT 'pending'
        );
        CREATE INDEX fmn_deliveries_due ON fmn_deliveries (state, next_attempt_at);",
    )
}

/// A row claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The row's id.
    pub id: i64,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The delivery.
    pub outgoing: Outgoing,
}

/// A dead-lettered row, as [`Outbox::dead`] reads it.
#[derive(Debug, Clone)]
pub struct DeadRow {
    pub id: i64,
    pub created_on: String,
    pub openid: String,
    pub context: String,
    pub address: String,
    pub attempts: u32,
    pub last_error: String,
    pub payload: String,
}

/// The outbox table in one database.
#[derive(Clone)]
pub struct Outbox {
    db: Database,
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_default()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_default()
}

impl Outbox {
    /// The outbox in `db`, its table created or upgraded.
    pub fn open(db: Database) -> Result<Outbox, StorageError> {
        db.migrate(&migrations())?;
        Ok(Outbox { db })
    }

    fn run<T: Send>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, BackendError> + Send,
    ) -> Result<T, StorageError> {
        self.db.run_sql(op, f)
    }

    /// Inserts `items` (due now) in one transaction; returns their ids.
    pub fn insert(&self, items: &[Outgoing], now_ms: i64) -> Result<Vec<i64>, StorageError> {
        let now = now_sql(self.db.backend());
        let sql = format!(
            "INSERT INTO fmn_deliveries (created_on, openid, context_name, address, payload, attempts, next_attempt_at, state) VALUES ({now}, $1, $2, $3, $4, 0, $5, 'pending')"
        );
        self.run("insert deliveries", |tx| {
            items
                .iter()
                .map(|item| {
                    let payload = serde_json::to_string(item).unwrap_or_default();
                    let (openid, context, address) = item.recipient();
                    insert_returning_id(
                        tx,
                        &sql,
                        &[
                            P::Text(openid),
                            P::Text(context),
                            P::Text(address),
                            P::Text(&payload),
                            P::Int(now_ms),
                        ],
                    )
                })
                .collect()
        })
    }

    /// Claims one due row whose address `busy` does not reject, leasing it
    /// until `lease_until_ms`. `None` when nothing suitable is due.
    pub fn claim(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        busy: impl Fn(&str) -> bool + Sync,
    ) -> Result<Option<Claimed>, StorageError> {
        self.run("claim a delivery", |tx| {
            let due = query(
                tx,
                "SELECT id, address, next_attempt_at FROM fmn_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT 64",
                &[P::Int(now_ms)],
            )?;
            for row in due {
                let (id, address, at) = (int(&row[0]), text(&row[1]), int(&row[2]));
                if busy(&address) {
                    continue;
                }
                let changed = execute(
                    tx,
                    "UPDATE fmn_deliveries SET next_attempt_at = $1 WHERE id = $2 AND state = 'pending' AND next_attempt_at = $3",
                    &[P::Int(lease_until_ms), P::Int(id), P::Int(at)],
                )?;
                if changed != 1 {
                    continue;
                }
                let rows = query(
                    tx,
                    "SELECT attempts, payload FROM fmn_deliveries WHERE id = $1",
                    &[P::Int(id)],
                )?;
                let Some(row) = rows.first() else { continue };
                let attempts = int(&row[0]).max(0) as u32;
                let payload = text(&row[1]);
                return Ok(Some(match serde_json::from_str::<Outgoing>(&payload) {
                    Ok(outgoing) => Claimed {
                        id,
                        attempts,
                        outgoing,
                    },
                    // A payload this version cannot read: kept, dead, with the reason.
                    Err(e) => {
                        execute(
                            tx,
                            "UPDATE fmn_deliveries SET state = 'dead', last_error = $1 WHERE id = $2",
                            &[P::Text(&format!("unreadable payload: {e}")), P::Int(id)],
                        )?;
                        continue;
                    }
                }));
            }
            Ok(None)
        })
    }

    /// The earliest `next_attempt_at` of a pending row.
    pub fn next_due(&self) -> Result<Option<i64>, StorageError> {
        self.run("read the next due delivery", |tx| {
            let rows = query(
                tx,
                "SELECT min(next_attempt_at) FROM fmn_deliveries WHERE state = 'pending'",
                &[],
            )?;
            Ok(rows.first().and_then(|r| r[0].as_i64()))
        })
    }

    /// Deletes a delivered row.
    pub fn delivered(&self, id: i64) -> Result<(), StorageError> {
        self.run("delete a delivered row", |tx| {
            execute(
                tx,
                "DELETE FROM fmn_deliveries WHERE id = $1",
                &[P::Int(id)],
            )?;
            Ok(())
        })
    }

    /// Records a failed attempt: `attempts` made so far, the error, and
    /// either the next attempt's time or (`None`) the dead state.
    pub fn failed(
        &self,
        id: i64,
        attempts: u32,
        error: &str,
        next_attempt_at_ms: Option<i64>,
    ) -> Result<(), StorageError> {
        self.run("record a failed delivery", |tx| {
            match next_attempt_at_ms {
                Some(at) => execute(
                    tx,
                    "UPDATE fmn_deliveries SET attempts = $1, last_error = $2, next_attempt_at = $3 WHERE id = $4",
                    &[P::Int(attempts.into()), P::Text(error), P::Int(at), P::Int(id)],
                )?,
                None => execute(
                    tx,
                    "UPDATE fmn_deliveries SET attempts = $1, last_error = $2, state = 'dead' WHERE id = $3",
                    &[P::Int(attempts.into()), P::Text(error), P::Int(id)],
                )?,
            };
            Ok(())
        })
    }

    /// Rows in `state` (`pending` or `dead`).
    pub fn count(&self, state: &str) -> Result<u64, StorageError> {
        self.run("count deliveries", |tx| {
            let rows = query(
                tx,
                "SELECT count(*) FROM fmn_deliveries WHERE state = $1",
                &[P::Text(state)],
            )?;
            Ok(rows.first().map(|r| int(&r[0]).max(0) as u64).unwrap_or(0))
        })
    }

    /// The newest `limit` dead rows, newest first.
    pub fn dead(&self, limit: usize) -> Result<Vec<DeadRow>, StorageError> {
        self.run("read dead letters", |tx| {
            let rows = query(
                tx,
                "SELECT id, created_on, openid, context_name, address, attempts, last_error, payload FROM fmn_deliveries WHERE state = 'dead' ORDER BY id DESC LIMIT $1",
                &[P::Int(limit.min(i64::MAX as usize) as i64)],
            )?;
            Ok(rows
                .iter()
                .map(|r| DeadRow {
                    id: int(&r[0]),
                    created_on: text(&r[1]),
                    openid: text(&r[2]),
                    context: text(&r[3]),
                    address: text(&r[4]),
                    attempts: int(&r[5]).max(0) as u32,
                    last_error: text(&r[6]),
                    payload: text(&r[7]),
                })
                .collect())
        })
    }

    /// Makes dead row `id` pending again, due now, with no attempt counted.
    /// False when there is no dead row `id`.
    pub fn retry_dead(&self, id: i64, now_ms: i64) -> Result<bool, StorageError> {
        self.run("retry a dead letter", |tx| {
            Ok(execute(
                tx,
                "UPDATE fmn_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1 WHERE id = $2 AND state = 'dead'",
                &[P::Int(now_ms), P::Int(id)],
            )? == 1)
        })
    }
}
