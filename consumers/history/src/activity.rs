//! A `userwat`-style view of one user's recent activity.

use crate::filter::{Filter, Order, MAX_ROWS_PER_PAGE};
use crate::meta;
use crate::store::{Store, StoreError};

/// Formats unix seconds as `2026-11-23T06:56:34Z`.
pub fn format_time(timestamp: f64) -> String {
    chrono::DateTime::from_timestamp(timestamp.floor() as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("{timestamp}"))
}

/// A user's most recent activity, newest first, one line per message:
/// `<time> <topic> <subtitle>` (like fedmsg's `userwat`).
pub fn user_activity(
    store: &dyn Store,
    name: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut lines = Vec::new();
    let mut page = 1u32;
    while lines.len() < limit {
        let filter = Filter::new()
            .user(name)
            .order(Order::Desc)
            .page(page, MAX_ROWS_PER_PAGE);
        let found = store.grep(&filter)?;
        for m in &found.messages {
            if lines.len() == limit {
                break;
            }
            let subtitle = meta::subtitle_of(&m.topic, &m.msg);
            let line = format!("{} {} {subtitle}", format_time(m.timestamp), m.topic);
            lines.push(line.trim_end().to_string());
        }
        if u64::from(page) >= found.pages || found.messages.is_empty() {
            break;
        }
        page += 1;
    }
    Ok(lines)
}
