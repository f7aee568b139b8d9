//! The monitoring-plugins form: read the hub's `/state` over HTTP, compare one
//! metric of each selected consumer with `-w`/`-c` ranges, print one line with
//! perfdata, exit with the worst state (CRITICAL > WARNING > UNKNOWN > OK).

use std::time::Duration;

use fedhub_probe::client::{self, FetchError, Limits, Target};
use fedhub_probe::state::{ConsumerView, Lenient, StateView};

use crate::range::Thresholds;
use crate::status::{Outcome, State};

/// Default HTTP port of the hub (`[http] listen`).
pub const DEFAULT_PORT: u16 = 8940;

/// Default time budget, as the plugin guidelines suggest.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Larger responses are refused rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// What is compared with the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Messages waiting in the mailbox (`backlog`).
    Backlog,
    /// Exceptions since the hub started (`exceptions_total`).
    Exceptions,
    /// Messages dropped since the hub started (`dropped_total`).
    Dropped,
    /// Mailbox fill level in percent (`mailbox_utilization` x 100).
    Utilization,
}

impl Metric {
    /// Parses `--metric`.
    pub fn parse(text: &str) -> Option<Metric> {
        match text {
            "backlog" => Some(Metric::Backlog),
            "exceptions" => Some(Metric::Exceptions),
            "dropped" => Some(Metric::Dropped),
            "utilization" => Some(Metric::Utilization),
            _ => None,
        }
    }

    /// The metric's name, lower case (summary and perfdata label suffix).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Backlog => "backlog",
            Metric::Exceptions => "exceptions",
            Metric::Dropped => "dropped",
            Metric::Utilization => "utilization",
        }
    }

    /// The `/state` field compared (named in messages).
    fn key(self) -> &'static str {
        match self {
            Metric::Backlog => "backlog",
            Metric::Exceptions => "exceptions_total",
            Metric::Dropped => "dropped_total",
            Metric::Utilization => "mailbox_utilization",
        }
    }

    /// The field's value in `entry`, as a number.
    fn value(self, entry: &ConsumerView) -> Option<f64> {
        match self {
            Metric::Backlog => entry.backlog.map(|v| v as f64),
            Metric::Exceptions => entry.exceptions_total.map(|v| v as f64),
            Metric::Dropped => entry.dropped_total.map(|v| v as f64),
            Metric::Utilization => entry.mailbox_utilization,
        }
    }

    fn scale(self) -> f64 {
        if self == Metric::Utilization {
            100.0
        } else {
            1.0
        }
    }

    /// Unit of measurement in perfdata: a percentage, a counter, or a plain count.
    fn uom(self) -> &'static str {
        match self {
            Metric::Backlog => "",
            Metric::Exceptions | Metric::Dropped => "c",
            Metric::Utilization => "%",
        }
    }

    /// Unit shown after the value in the summary.
    fn uom_in_text(self) -> &'static str {
        if self == Metric::Utilization {
            "%"
        } else {
            ""
        }
    }

    fn max(self) -> &'static str {
        if self == Metric::Utilization {
            "100"
        } else {
            ""
        }
    }
}

/// One monitoring-plugins check, fully parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginCheck {
    /// Where `/state` is.
    pub target: Target,
    /// `-w` and `-c`.
    pub thresholds: Thresholds,
    /// `-C`: consumers to check, in order; empty means all.
    pub consumers: Vec<String>,
    /// `--metric`.
    pub metric: Metric,
    /// `-t`.
    pub timeout: Duration,
    /// The state a timeout gives (`-t SECS:STATE`, UNKNOWN unless told).
    pub timeout_state: State,
}

impl PluginCheck {
    fn prefix(&self) -> String {
        format!("FEDHUB {}", self.metric.name().to_ascii_uppercase())
    }

    fn line(&self, state: State, summary: &str) -> Outcome {
        Outcome::new(
            state,
            format!("{} {state} - {}", self.prefix(), clean(summary)),
        )
    }

    /// What a timeout prints.
    pub fn timeout_outcome(&self) -> Outcome {
        self.line(
            self.timeout_state,
            &format!(
                "no answer from {} within {} (timeout)",
                self.target.url(),
                seconds(self.timeout)
            ),
        )
    }

    /// Fetches `/state` and compares it with the thresholds.
    pub fn run(&self) -> Outcome {
        let limits = Limits {
            step: self.timeout,
            total: self.timeout,
            max_response_bytes: MAX_RESPONSE_BYTES,
            user_agent: concat!("check_fedhub/", env!("CARGO_PKG_VERSION")),
        };
        let body = match client::get(&self.target, &limits) {
            Ok(body) => body,
            Err(e) if e.is_timeout() => return self.timeout_outcome(),
            Err(e) => return self.line(State::Unknown, &self.describe(&e)),
        };
        match client::parse_state(&body) {
            Ok(state) => self.compare_with_thresholds(&state),
            Err(e) => self.line(
                State::Unknown,
                &format!("{} is not valid JSON: {e}", self.target.url()),
            ),
        }
    }

    /// What went wrong with the request, in this plugin's words.
    fn describe(&self, error: &FetchError) -> String {
        let url = self.target.url();
        match error {
            FetchError::Resolve { host, source, .. } => {
                format!("cannot resolve '{host}': {source}")
            }
            FetchError::Connect { authority, source } => {
                format!("cannot connect to the hub at {authority}: {source}")
            }
            FetchError::Send { source, .. } => {
                format!("cannot send the request to {url}: {source}")
            }
            FetchError::Receive { source, .. } => {
                format!("cannot read the response from {url}: {source}")
            }
            FetchError::TooLarge { limit, .. } => {
                format!("the response from {url} is larger than {limit} bytes")
            }
            FetchError::Malformed { reason, .. } => {
                format!("bad HTTP response from {url}: {reason}")
            }
            FetchError::Status { status, .. } => {
                format!("{url} answered HTTP {status} (is this a fedhub?)")
            }
            FetchError::Timeout { .. } | FetchError::Deadline { .. } => format!(
                "no answer from {url} within {} (timeout)",
                seconds(self.timeout)
            ),
        }
    }

    /// Compares the metric of each selected consumer in a `/state` document
    /// with the thresholds: one line, worst state first, with perfdata.
    pub fn compare_with_thresholds(&self, state: &StateView) -> Outcome {
        let Some(entries) = &state.consumers else {
            return self.line(
                State::Unknown,
                &format!("{} has no \"consumers\" list", self.target.url()),
            );
        };
        let all: Vec<&ConsumerView> = entries.iter().filter_map(Lenient::get).collect();
        let known: Vec<String> = all.iter().filter_map(|c| c.name.clone()).collect();
        let selected: Vec<(String, Option<&ConsumerView>)> = if self.consumers.is_empty() {
            all.iter()
                .filter_map(|c| c.name.clone().map(|n| (n, Some(*c))))
                .collect()
        } else {
            self.consumers
                .iter()
                .map(|n| {
                    (
                        n.clone(),
                        all.iter()
                            .find(|c| c.name.as_deref() == Some(n.as_str()))
                            .copied(),
                    )
                })
                .collect()
        };
        if selected.is_empty() {
            return self.line(State::Unknown, "the hub reports no consumers");
        }
        let metric = self.metric;
        let several = selected.len() > 1;
        let mut items: Vec<(State, String)> = Vec::new();
        let mut perfdata: Vec<String> = Vec::new();
        for (name, entry) in &selected {
            let Some(entry) = entry else {
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                items.push((
                    State::Unknown,
                    format!("consumer '{name}' not found (the hub has: {known})"),
                ));
                continue;
            };
            let Some(value) = metric.value(entry).map(|v| v * metric.scale()) else {
                items.push((
                    State::Unknown,
                    format!("{name} has no numeric {}", metric.key()),
                ));
                continue;
            };
            let shown = format!("{}{}", number(value), metric.uom_in_text());
            perfdata.push(format!(
                "{}={}{};{};{};0;{}",
                label(&format!("{name}_{}", metric.name())),
                number(value),
                metric.uom(),
                self.thresholds.warning.as_ref().map_or("", |r| r.as_str()),
                self.thresholds.critical.as_ref().map_or("", |r| r.as_str()),
                metric.max()
            ));
            if entry.initialized == Some(false) {
                items.push((
                    State::Unknown,
                    format!("{name} not initialized, {} {shown}", metric.name()),
                ));
                continue;
            }
            let state = self.thresholds.state(value);
            let mut text = format!("{name} {} {shown}", metric.name());
            if several && state != State::Ok {
                text.push_str(&format!(" ({state})"));
            }
            items.push((state, text));
        }
        let worst = items
            .iter()
            .fold(State::Ok, |worst, (state, _)| worst.worst(*state));
        // Problems first, worst first; the order within a state is the hub's or -C's.
        let rank = |s: State| match s {
            State::Critical => 0,
            State::Warning => 1,
            State::Unknown => 2,
            State::Ok => 3,
        };
        items.sort_by_key(|(state, _)| rank(*state));
        let summary = items
            .iter()
            .map(|(_, text)| text.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut outcome = self.line(worst, &summary);
        if !perfdata.is_empty() {
            outcome.text.push_str(" | ");
            outcome.text.push_str(&perfdata.join(" "));
        }
        outcome
    }
}

/// A perfdata label: always quoted, `'` doubled, `=` (which would end the label) replaced.
pub fn label(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c == '=' || c.is_control() { '_' } else { c })
        .collect();
    format!("'{}'", cleaned.replace('\'', "''"))
}

/// Numbers as perfdata wants them: integers plainly, others with up to 4 decimals.
pub fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        let text = format!("{value:.4}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        if text == "-0" {
            "0".into()
        } else {
            text.into()
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{} s", number(d.as_secs_f64()))
}

/// Keeps the text part on one line and free of the perfdata separator.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '|' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::Range;
    use serde_json::{json, Value};

    /// A JSON document read the way `run` reads a body.
    fn view(doc: &Value) -> StateView {
        client::parse_state(&serde_json::to_vec(doc).unwrap()).unwrap()
    }

    fn check(w: &str, c: &str, consumers: &[&str], metric: Metric) -> PluginCheck {
        PluginCheck {
            target: Target {
                host: "127.0.0.1".into(),
                port: 8940,
                path: "/state".into(),
            },
            thresholds: Thresholds {
                warning: Some(Range::parse(w).unwrap()),
                critical: Some(Range::parse(c).unwrap()),
            },
            consumers: consumers.iter().map(|s| s.to_string()).collect(),
            metric,
            timeout: DEFAULT_TIMEOUT,
            timeout_state: State::Unknown,
        }
    }

    fn state() -> Value {
        json!({"consumers": [
            {"name": "NullConsumer", "initialized": true, "backlog": 0, "exceptions_total": 7,
             "dropped_total": 0, "mailbox_utilization": 0.0},
            {"name": "Badges", "initialized": true, "backlog": 45, "exceptions_total": 0,
             "dropped_total": 2, "mailbox_utilization": 0.125},
            {"name": "It's", "initialized": false, "backlog": 3, "exceptions_total": 0,
             "dropped_total": 0, "mailbox_utilization": 0.5},
        ]})
    }

    fn compare(c: &PluginCheck) -> (i32, String) {
        let o = c.compare_with_thresholds(&view(&state()));
        (o.state.code(), o.text)
    }

    #[test]
    fn one_consumer_ok() {
        assert_eq!(
            compare(&check("30", "60", &["NullConsumer"], Metric::Backlog)),
            (
                0,
                "FEDHUB BACKLOG OK - NullConsumer backlog 0 | 'NullConsumer_backlog'=0;30;60;0;"
                    .into()
            )
        );
    }

    #[test]
    fn worst_state_wins_and_problems_come_first() {
        assert_eq!(
            compare(&check("30", "60", &["NullConsumer", "Badges"], Metric::Backlog)),
            (
                1,
                "FEDHUB BACKLOG WARNING - Badges backlog 45 (WARNING), NullConsumer backlog 0 | 'NullConsumer_backlog'=0;30;60;0; 'Badges_backlog'=45;30;60;0;".into()
            )
        );
        // All consumers: the uninitialized one is UNKNOWN, WARNING is worse.
        let (code, line) = compare(&check("30", "60", &[], Metric::Backlog));
        assert_eq!(code, 1);
        assert!(line.starts_with("FEDHUB BACKLOG WARNING - Badges backlog 45 (WARNING), It's not initialized, backlog 3, NullConsumer backlog 0 | "), "{line}");
        assert!(line.ends_with(" 'It''s_backlog'=3;30;60;0;"), "{line}");
    }

    #[test]
    fn unknown_consumer_is_named() {
        assert_eq!(
            compare(&check("30", "60", &["Ghost"], Metric::Backlog)),
            (
                3,
                "FEDHUB BACKLOG UNKNOWN - consumer 'Ghost' not found (the hub has: NullConsumer, Badges, It's)".into()
            )
        );
        // CRITICAL elsewhere outranks the missing consumer.
        let (code, line) = compare(&check("10", "20", &["Ghost", "Badges"], Metric::Backlog));
        assert_eq!(code, 2);
        assert!(line.starts_with("FEDHUB BACKLOG CRITICAL - Badges backlog 45 (CRITICAL), consumer 'Ghost' not found"), "{line}");
    }

    #[test]
    fn other_metrics() {
        assert_eq!(
            compare(&check("5", "10", &["NullConsumer"], Metric::Exceptions)),
            (
                1,
                "FEDHUB EXCEPTIONS WARNING - NullConsumer exceptions 7 | 'NullConsumer_exceptions'=7c;5;10;0;".into()
            )
        );
        assert_eq!(
            compare(&check("10", "20", &["Badges"], Metric::Utilization)),
            (
                1,
                "FEDHUB UTILIZATION WARNING - Badges utilization 12.5% | 'Badges_utilization'=12.5%;10;20;0;100".into()
            )
        );
        assert_eq!(
            compare(&check("1", "5", &["Badges"], Metric::Dropped)),
            (
                1,
                "FEDHUB DROPPED WARNING - Badges dropped 2 | 'Badges_dropped'=2c;1;5;0;".into()
            )
        );
    }

    #[test]
    fn malformed_state_is_unknown() {
        let c = check("1", "2", &[], Metric::Backlog);
        for doc in [
            json!(null),
            json!({"consumers": {}}),
            json!({"consumers": []}),
            json!({"consumers": [{"name": "A|B"}]}),
        ] {
            let o = c.compare_with_thresholds(&view(&doc));
            assert_eq!(o.state, State::Unknown, "{doc}");
            assert!(
                o.text.starts_with("FEDHUB BACKLOG UNKNOWN - "),
                "{}",
                o.text
            );
            assert!(!o.text.contains('|'), "{}", o.text);
        }
    }

    #[test]
    fn metric_keys_are_state_fields() {
        for metric in [
            Metric::Backlog,
            Metric::Exceptions,
            Metric::Dropped,
            Metric::Utilization,
        ] {
            assert!(
                fedhub_probe::state::ConsumerState::FIELDS.contains(&metric.key()),
                "{}",
                metric.key()
            );
        }
    }

    #[test]
    fn labels_and_numbers() {
        assert_eq!(label("It's"), "'It''s'");
        assert_eq!(label("a=b c"), "'a_b c'");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.125 * 100.0), "12.5");
        assert_eq!(number(1.0 / 3.0), "0.3333");
        assert_eq!(number(-0.00001), "0");
        assert_eq!(number(1e20), "100000000000000000000");
    }
}
