//! The query model: a [`Filter`] with datanommer's `grep` semantics and
//! datagrepper's time arguments, and the [`Page`] a query returns.
//!
//! Semantics, as in datanommer: values within one list are ORed, different
//! lists are ANDed, and each `not_*` list excludes messages matching any of its
//! values (`NOT (a OR b)`). The time window is inclusive at both ends. Users and
//! packages are the ones extracted when the message was stored.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// The largest page a query may ask for (datagrepper's limit).
pub const MAX_ROWS_PER_PAGE: u32 = 100;

/// datagrepper's default page size (its code's default; its docs say 20).
pub const DEFAULT_ROWS_PER_PAGE: u32 = 25;

/// Seconds `end` reaches back when only `end` is given (datagrepper: 10 minutes).
pub const END_ONLY_WINDOW_SECS: f64 = 600.0;

/// Sort order by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (datagrepper's default).
    #[default]
    Desc,
}

impl Order {
    /// `"asc"` or `"desc"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

/// Why a filter cannot be run; each names the parameter at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{parameter}: {problem}")]
pub struct FilterError {
    /// The parameter (datagrepper's name, e.g. `rows_per_page`).
    pub parameter: String,
    /// What was wrong and what was expected.
    pub problem: String,
}

impl FilterError {
    /// An error about `parameter`.
    pub fn new(parameter: &str, problem: impl Into<String>) -> FilterError {
        FilterError {
            parameter: parameter.to_string(),
            problem: problem.into(),
        }
    }
}

/// A query over stored messages.
///
/// Build one with [`Filter::new`] and the chained setters, or fill the fields.
/// Times are unix seconds. `start`, `end` and `delta` combine as in datagrepper
/// (see [`Filter::window`]); with none of them there is no time restriction.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Window start (inclusive).
    pub start: Option<f64>,
    /// Window end (inclusive).
    pub end: Option<f64>,
    /// Window length in seconds.
    pub delta: Option<f64>,
    /// The reference time for `delta` and `start`-only windows; the current time when `None`.
    pub now: Option<f64>,
    /// Any of these users.
    pub users: Vec<String>,
    /// Any of these packages.
    pub packages: Vec<String>,
    /// Any of these categories (`buildsys`, `bodhi`, …).
    pub categories: Vec<String>,
    /// Any of these exact topics.
    pub topics: Vec<String>,
    /// The payload's JSON text contains any of these strings (case-sensitive).
    pub contains: Vec<String>,
    /// None of these users.
    pub not_users: Vec<String>,
    /// None of these packages.
    pub not_packages: Vec<String>,
    /// None of these categories.
    pub not_categories: Vec<String>,
    /// None of these topics.
    pub not_topics: Vec<String>,
    /// 1-based page number.
    pub page: u32,
    /// Messages per page, 1 to [`MAX_ROWS_PER_PAGE`].
    pub rows_per_page: u32,
    /// Sort order by timestamp (ties broken by storage order).
    pub order: Order,
    /// The most bytes of stored messages one page may hold; a store refuses a
    /// larger page (`StoreError::PageTooLarge`) before reading it whole.
    /// `None`: no limit.
    pub max_page_bytes: Option<u64>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            start: None,
            end: None,
            delta: None,
            now: None,
            users: vec![],
            packages: vec![],
            categories: vec![],
            topics: vec![],
            contains: vec![],
            not_users: vec![],
            not_packages: vec![],
            not_categories: vec![],
            not_topics: vec![],
            page: 1,
            rows_per_page: DEFAULT_ROWS_PER_PAGE,
            order: Order::Desc,
            max_page_bytes: None,
        }
    }
}

/// The current time in unix seconds.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Filter {
    /// A filter matching everything, newest first, 25 per page.
    pub fn new() -> Filter {
        Filter::default()
    }

    /// Adds a user.
    pub fn user(mut self, name: &str) -> Self {
        self.users.push(name.into());
        self
    }

    /// Adds a package.
    pub fn package(mut self, name: &str) -> Self {
        self.packages.push(name.into());
        self
    }

    /// Adds a category.
    pub fn category(mut self, name: &str) -> Self {
        self.categories.push(name.into());
        self
    }

    /// Adds a topic.
    pub fn topic(mut self, name: &str) -> Self {
        self.topics.push(name.into());
        self
    }

    /// Adds a `contains` term.
    pub fn contains(mut self, text: &str) -> Self {
        self.contains.push(text.into());
        self
    }

    /// Excludes a user.
    pub fn not_user(mut self, name: &str) -> Self {
        self.not_users.push(name.into());
        self
    }

    /// Excludes a package.
    pub fn not_package(mut self, name: &str) -> Self {
        self.not_packages.push(name.into());
        self
    }

    /// Excludes a category.
    pub fn not_category(mut self, name: &str) -> Self {
        self.not_categories.push(name.into());
        self
    }

    /// Excludes a topic.
    pub fn not_topic(mut self, name: &str) -> Self {
        self.not_topics.push(name.into());
        self
    }

    /// Sets an explicit inclusive window.
    pub fn between(mut self, start: f64, end: f64) -> Self {
        self.start = Some(start);
        self.end = Some(end);
        self
    }

    /// Sets `delta` (seconds).
    pub fn delta(mut self, seconds: f64) -> Self {
        self.delta = Some(seconds);
        self
    }

    /// Sets the reference time for `delta`.
    pub fn at(mut self, now: f64) -> Self {
        self.now = Some(now);
        self
    }

    /// Sets page and page size.
    pub fn page(mut self, page: u32, rows_per_page: u32) -> Self {
        self.page = page;
        self.rows_per_page = rows_per_page;
        self
    }

    /// Sets the order.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Checks paging and times; names the parameter at fault.
    pub fn validate(&self) -> Result<(), FilterError> {
        if self.page < 1 {
            return Err(FilterError::new(
                "page",
                format!("expected a page number of 1 or more, got {}", self.page),
            ));
        }
        if self.rows_per_page < 1 || self.rows_per_page > MAX_ROWS_PER_PAGE {
            return Err(FilterError::new(
                "rows_per_page",
                format!(
                    "expected 1 to {MAX_ROWS_PER_PAGE} rows per page, got {}",
                    self.rows_per_page
                ),
            ));
        }
        for (name, value) in [("start", self.start), ("end", self.end), ("now", self.now)] {
            if let Some(v) = value {
                if !v.is_finite() {
                    return Err(FilterError::new(
                        name,
                        format!("expected unix seconds, got {v}"),
                    ));
                }
            }
        }
        if let Some(d) = self.delta {
            if !d.is_finite() || d <= 0.0 {
                return Err(FilterError::new(
                    "delta",
                    format!("expected a positive number of seconds, got {d}"),
                ));
            }
        }
        if let (Some(s), Some(e)) = (self.start, self.end) {
            if s > e {
                return Err(FilterError::new(
                    "end",
                    format!(
                        "end ({e}) is before start ({s}); expected an end at or after the start"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The inclusive time window, resolved the way datagrepper does
    /// (`util.assemble_timerange`); `None` means no time restriction.
    ///
    /// | delta | start | end | window |
    /// |---|---|---|---|
    /// | – | – | – | none |
    /// | ✓ | – | – | `[now - delta, now]` |
    /// | – | ✓ | – | `[start, now]` |
    /// | ✓ | ✓ | – | `[start, start + delta]` |
    /// | – | – | ✓ | `[end - 600, end]` |
    /// | ✓ | – | ✓ | `[end - delta, end]` |
    /// | any | ✓ | ✓ | `[start, end]` |
    pub fn window(&self) -> Result<Option<(f64, f64)>, FilterError> {
        self.validate()?;
        let now = || self.now.unwrap_or_else(now_secs);
        let window = match (self.delta, self.start, self.end) {
            (None, None, None) => None,
            (Some(d), None, None) => {
                let n = now();
                Some((n - d, n))
            }
            (None, Some(s), None) => Some((s, now())),
            (Some(d), Some(s), None) => Some((s, s + d)),
            (None, None, Some(e)) => Some((e - END_ONLY_WINDOW_SECS, e)),
            (Some(d), None, Some(e)) => Some((e - d, e)),
            (_, Some(s), Some(e)) => Some((s, e)),
        };
        if let Some((s, e)) = window {
            if s > e {
                return Err(FilterError::new(
                    "start",
                    format!(
                        "the window starts ({s}) after it ends ({e}); expected start before end"
                    ),
                ));
            }
        }
        Ok(window)
    }

    /// Whether any list restricts the result (times aside).
    pub fn has_lists(&self) -> bool {
        !(self.users.is_empty()
            && self.packages.is_empty()
            && self.categories.is_empty()
            && self.topics.is_empty()
            && self.contains.is_empty()
            && self.not_users.is_empty()
            && self.not_packages.is_empty()
            && self.not_categories.is_empty()
            && self.not_topics.is_empty())
    }

    /// Offset of the first row of the page.
    pub fn offset(&self) -> u64 {
        u64::from(self.page.saturating_sub(1)) * u64::from(self.rows_per_page)
    }

    /// datagrepper's `arguments` object for this filter, with the resolved window.
    pub fn arguments(&self, window: Option<(f64, f64)>) -> Value {
        let delta = match (window, self.delta) {
            (Some((s, e)), _) if self.start.is_some() && self.end.is_some() => json!(e - s),
            (_, Some(d)) => json!(d),
            _ => Value::Null,
        };
        json!({
            "start": window.map(|w| w.0),
            "end": window.map(|w| w.1),
            "delta": delta,
            "users": self.users,
            "packages": self.packages,
            "categories": self.categories,
            "topics": self.topics,
            "contains": self.contains,
            "not_users": self.not_users,
            "not_packages": self.not_packages,
            "not_categories": self.not_categories,
            "not_topics": self.not_topics,
            "page": self.page,
            "rows_per_page": self.rows_per_page,
            "order": self.order.as_str(),
        })
    }
}

/// One stored message, as datanommer's `Message.__json__()` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// The store's row id (storage order).
    pub id: i64,
    /// `msg_id`.
    pub msg_id: String,
    /// The sender's sequence number.
    pub i: i64,
    /// The topic.
    pub topic: String,
    /// The category (topic segment 3, or `Unclassified`).
    pub category: String,
    /// Unix seconds.
    pub timestamp: f64,
    /// The sender's Unix user.
    pub username: Option<String>,
    /// `x509` or `gpg`.
    pub crypto: Option<String>,
    /// Base64 certificate.
    pub certificate: Option<String>,
    /// Base64 signature.
    pub signature: Option<String>,
    /// The payload.
    pub msg: Value,
    /// Envelope headers, when the message had some.
    pub headers: Option<Value>,
    /// Any other body fields, as received.
    pub extra: Map<String, Value>,
}

/// `source_name` in stored messages' JSON.
pub const SOURCE_NAME: &str = "fedhub-history";

impl StoredMessage {
    /// datanommer's `__json__` (2017 shape): `i, msg_id, topic, timestamp, certificate,
    /// signature, username, crypto, msg, headers, source_name, source_version`.
    pub fn to_json(&self) -> Value {
        json!({
            "i": self.i,
            "msg_id": self.msg_id,
            "topic": self.topic,
            "timestamp": self.timestamp,
            "certificate": self.certificate,
            "signature": self.signature,
            "username": self.username,
            "crypto": self.crypto,
            "msg": self.msg,
            "headers": self.headers,
            "source_name": SOURCE_NAME,
            "source_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// The body as it was received (envelope fields plus any others).
    pub fn body(&self) -> Value {
        let mut body = self.extra.clone();
        body.insert("topic".into(), self.topic.clone().into());
        body.insert("msg".into(), self.msg.clone());
        body.insert("msg_id".into(), self.msg_id.clone().into());
        body.insert("timestamp".into(), json!(self.timestamp));
        body.insert("i".into(), self.i.into());
        for (key, value) in [
            ("username", &self.username),
            ("crypto", &self.crypto),
            ("certificate", &self.certificate),
            ("signature", &self.signature),
        ] {
            if let Some(v) = value {
                body.insert(key.into(), v.clone().into());
            }
        }
        if let Some(h) = &self.headers {
            body.insert("headers".into(), h.clone());
        }
        Value::Object(body)
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Messages matching the filter, all pages together.
    pub total: u64,
    /// `ceil(total / rows_per_page)`.
    pub pages: u64,
    /// This page's messages, in the filter's order.
    pub messages: Vec<StoredMessage>,
}

impl Page {
    /// Builds a page, computing `pages`.
    pub fn new(total: u64, rows_per_page: u32, messages: Vec<StoredMessage>) -> Page {
        Page {
            total,
            pages: total.div_ceil(u64::from(rows_per_page.max(1))),
            messages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrepper_time_table() {
        let base = Filter::new().at(10_000.0);
        let cases = [
            (None, None, None, None),
            (Some(100.0), None, None, Some((9_900.0, 10_000.0))),
            (None, Some(5_000.0), None, Some((5_000.0, 10_000.0))),
            (Some(100.0), Some(5_000.0), None, Some((5_000.0, 5_100.0))),
            (None, None, Some(8_000.0), Some((7_400.0, 8_000.0))),
            (Some(100.0), None, Some(8_000.0), Some((7_900.0, 8_000.0))),
            (None, Some(1_000.0), Some(8_000.0), Some((1_000.0, 8_000.0))),
            (
                Some(5.0),
                Some(1_000.0),
                Some(8_000.0),
                Some((1_000.0, 8_000.0)),
            ),
        ];
        for (delta, start, end, want) in cases {
            let f = Filter {
                delta,
                start,
                end,
                ..base.clone()
            };
            assert_eq!(f.window().unwrap(), want, "{delta:?} {start:?} {end:?}");
        }
    }

    #[test]
    fn bad_paging_and_times_name_the_parameter() {
        let cases = [
            (Filter::new().page(0, 25), "page"),
            (Filter::new().page(1, 0), "rows_per_page"),
            (Filter::new().page(1, 10_000), "rows_per_page"),
            (Filter::new().delta(-5.0), "delta"),
            (Filter::new().delta(f64::NAN), "delta"),
            (Filter::new().between(10.0, 5.0), "end"),
            (
                Filter {
                    start: Some(f64::INFINITY),
                    ..Filter::new()
                },
                "start",
            ),
        ];
        for (f, parameter) in cases {
            let err = f.window().unwrap_err();
            assert_eq!(err.parameter, parameter, "{err}");
        }
        // start alone in the future of `now`
        let err = Filter {
            start: Some(20.0),
            now: Some(10.0),
            ..Filter::new()
        }
        .window()
        .unwrap_err();
        assert_eq!(err.parameter, "start");
    }

    #[test]
    fn pages_round_up() {
        assert_eq!(Page::new(0, 25, vec![]).pages, 0);
        assert_eq!(Page::new(25, 25, vec![]).pages, 1);
        assert_eq!(Page::new(26, 25, vec![]).pages, 2);
        assert_eq!(Filter::new().page(3, 10).offset(), 20);
    }
}
