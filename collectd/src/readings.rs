//! From the hub's `/state` document to collectd values, with Fedora's names.
//!
//! For each initialized consumer `<C>` (uninitialized ones are skipped, as
//! Fedora's exec script skips them):
//!
//! | type            | type instance     | value                                             |
//! |-----------------|-------------------|---------------------------------------------------|
//! | `queue_length`  | `<C>_backlog`     | current backlog                                   |
//! | `gauge`         | `<C>_exceptions`  | exceptions since the previous read                |
//! | `gauge`         | `<C>_in`          | messages received since the previous read         |
//! | `gauge`         | `<C>_out`         | messages handled since the previous read          |
//! | `response_time` | `<C>_min/_max/_avg` | handling time, ms, over the hub's last complete 5 s window (0 when idle) |
//!
//! `/state` has monotonic totals; moksha's document (and so Fedora's graphs) has
//! counts per window. The plugin keeps the totals it saw at the previous read
//! and dispatches the difference, so `_in`/`_out`/`_exceptions` are counts per
//! collectd interval. At the first read of a consumer there is no previous read:
//! those three are dispatched as NaN (collectd's "undefined", `U`), so the files
//! exist and graphs show a gap rather than a false 0 or a burst of everything
//! since the hub started. The same happens after the hub restarted (its
//! `started_at` changed or a total went down) and for a total that is missing.

use std::collections::HashMap;

use fedhub_probe::client;
use fedhub_probe::collectd::Series;
use fedhub_probe::state::{ConsumerView, StateView};

/// One value to dispatch.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The collectd type (`queue_length`, `gauge`, `response_time`).
    pub type_: &'static str,
    /// The type instance (`<Consumer>_backlog`, ...).
    pub type_instance: String,
    /// The value (NaN: undefined).
    pub value: f64,
}

impl Reading {
    /// The reading of `series` for the consumer `name`.
    pub fn new(series: Series, name: &str, value: f64) -> Reading {
        Reading {
            type_: series.type_(),
            type_instance: series.type_instance(name),
            value,
        }
    }
}

/// Why a document gave no readings at all.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    /// The body is not JSON.
    #[error("the hub's state is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not fedhub's `/state` document.
    #[error(
        "the hub's state has no \"consumers\" list (is Hub the fedhub [http] listen address?)"
    )]
    NoConsumers,
}

/// Totals seen at the previous read.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    received: Option<u64>,
    handled: Option<u64>,
    exceptions: Option<u64>,
}

/// Turns successive `/state` documents into readings, remembering the totals.
#[derive(Debug, Default)]
pub struct Tracker {
    started_at: Option<f64>,
    previous: HashMap<String, Totals>,
}

impl Tracker {
    /// A tracker that has seen nothing yet.
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Forgets the previous totals (the next read is like the first).
    pub fn reset(&mut self) {
        self.previous.clear();
        self.started_at = None;
    }

    /// Parses a `/state` body and returns the readings, plus the names of
    /// consumers that were skipped because an entry was malformed.
    pub fn read_body(&mut self, body: &[u8]) -> Result<(Vec<Reading>, Vec<String>), StateError> {
        let state = client::parse_state(body).map_err(|e| StateError::NotJson(e.to_string()))?;
        self.readings(&state)
    }

    /// The readings for one `/state` document, plus descriptions of the
    /// consumer entries that were skipped because they were malformed.
    pub fn readings(
        &mut self,
        state: &StateView,
    ) -> Result<(Vec<Reading>, Vec<String>), StateError> {
        let consumers = state.consumers.as_ref().ok_or(StateError::NoConsumers)?;
        if state.started_at != self.started_at {
            // A different hub process: its totals started again from zero.
            self.previous.clear();
            self.started_at = state.started_at;
        }
        let mut readings = Vec::with_capacity(consumers.len() * Series::CONSUMER.len());
        let mut skipped = Vec::new();
        let mut current = HashMap::with_capacity(consumers.len());
        for (index, consumer) in consumers.iter().enumerate() {
            let Some((consumer, name)) = consumer.get().and_then(|c| Some((c, named(c)?))) else {
                skipped.push(format!("consumer #{index} has no name"));
                continue;
            };
            if consumer.initialized != Some(true) {
                continue;
            }
            let totals = Totals {
                received: consumer.received_total,
                handled: consumer.handled_total,
                exceptions: consumer.exceptions_total,
            };
            let previous = self.previous.get(name).copied().unwrap_or_default();
            current.insert(name.to_string(), totals);

            match consumer.backlog {
                Some(backlog) => {
                    readings.push(Reading::new(Series::Backlog, name, backlog.max(0) as f64))
                }
                None => skipped.push(format!("consumer {name} has no numeric backlog")),
            }
            for (series, previous, current) in [
                (Series::Exceptions, previous.exceptions, totals.exceptions),
                (Series::In, previous.received, totals.received),
                (Series::Out, previous.handled, totals.handled),
            ] {
                readings.push(Reading::new(series, name, delta(previous, current)));
            }
            if let Some(window) = consumer.handling_last_window.as_ref() {
                for (series, seconds) in [
                    (Series::ResponseMin, window.min_seconds),
                    (Series::ResponseMax, window.max_seconds),
                    (Series::ResponseAvg, window.avg_seconds),
                ] {
                    if let Some(seconds) = seconds.filter(|s| s.is_finite() && *s >= 0.0) {
                        readings.push(Reading::new(series, name, seconds * 1000.0));
                    }
                }
            }
        }
        // Consumers that disappeared are forgotten, so the map cannot grow without bound.
        self.previous = current;
        Ok((readings, skipped))
    }
}

/// The entry's name, if it has a non-empty one.
fn named(consumer: &ConsumerView) -> Option<&str> {
    consumer.name.as_deref().filter(|n| !n.is_empty())
}

/// The count since the previous read; NaN when unknown (first read, reset, missing).
fn delta(previous: Option<u64>, current: Option<u64>) -> f64 {
    match (previous, current) {
        (Some(p), Some(c)) if c >= p => (c - p) as f64,
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A JSON document read the way `read_body` reads a body.
    fn view(doc: &Value) -> StateView {
        client::parse_state(&serde_json::to_vec(doc).unwrap()).unwrap()
    }

    fn consumer(name: &str, backlog: i64, received: u64, handled: u64, exceptions: u64) -> Value {
        json!({
            "name": name, "initialized": true, "backlog": backlog, "peak_backlog": 0,
            "received_total": received, "handled_total": handled,
            "exceptions_total": exceptions,
            "handling_last_window": {"window_secs": 5, "count": 3, "min_seconds": 0.001,
                                     "max_seconds": 0.25, "avg_seconds": 0.0125},
        })
    }

    fn find<'a>(readings: &'a [Reading], type_: &str, instance: &str) -> Option<&'a Reading> {
        readings
            .iter()
            .find(|r| r.type_ == type_ && r.type_instance == instance)
    }

    #[test]
    fn fedoras_names_and_per_read_counts() {
        let mut tracker = Tracker::new();
        let doc =
            json!({"started_at": 1.0, "consumers": [consumer("FMNConsumer", 12, 100, 88, 2)]});
        let (first, skipped) = tracker.readings(&view(&doc)).unwrap();
        assert!(skipped.is_empty());
        let names: Vec<_> = first
            .iter()
            .map(|r| format!("{}-{}", r.type_, r.type_instance))
            .collect();
        assert_eq!(
            names,
            [
                "queue_length-FMNConsumer_backlog",
                "gauge-FMNConsumer_exceptions",
                "gauge-FMNConsumer_in",
                "gauge-FMNConsumer_out",
                "response_time-FMNConsumer_min",
                "response_time-FMNConsumer_max",
                "response_time-FMNConsumer_avg",
            ]
        );
        assert_eq!(
            find(&first, "queue_length", "FMNConsumer_backlog")
                .unwrap()
                .value,
            12.0
        );
        // First read: no baseline, undefined counts.
        assert!(find(&first, "gauge", "FMNConsumer_in")
            .unwrap()
            .value
            .is_nan());
        assert_eq!(
            find(&first, "response_time", "FMNConsumer_max")
                .unwrap()
                .value,
            250.0
        );
        assert_eq!(
            find(&first, "response_time", "FMNConsumer_min")
                .unwrap()
                .value,
            1.0
        );
        assert_eq!(
            find(&first, "response_time", "FMNConsumer_avg")
                .unwrap()
                .value,
            12.5
        );

        let doc =
            json!({"started_at": 1.0, "consumers": [consumer("FMNConsumer", 0, 130, 130, 5)]});
        let (second, _) = tracker.readings(&view(&doc)).unwrap();
        assert_eq!(
            find(&second, "gauge", "FMNConsumer_in").unwrap().value,
            30.0
        );
        assert_eq!(
            find(&second, "gauge", "FMNConsumer_out").unwrap().value,
            42.0
        );
        assert_eq!(
            find(&second, "gauge", "FMNConsumer_exceptions")
                .unwrap()
                .value,
            3.0
        );
        assert_eq!(
            find(&second, "queue_length", "FMNConsumer_backlog")
                .unwrap()
                .value,
            0.0
        );
    }

    #[test]
    fn a_restarted_hub_gives_undefined_counts_not_negative_ones() {
        let mut tracker = Tracker::new();
        let c = consumer("C", 0, 100, 100, 0);
        tracker
            .readings(&view(&json!({"started_at": 1.0, "consumers": [c]})))
            .unwrap();
        // New process (started_at changed): rebased.
        let c = consumer("C", 0, 5, 5, 0);
        let (r, _) = tracker
            .readings(&view(&json!({"started_at": 2.0, "consumers": [c]})))
            .unwrap();
        assert!(find(&r, "gauge", "C_in").unwrap().value.is_nan());
        // A total going down without a new started_at is also a reset.
        let c = consumer("C", 0, 1, 1, 0);
        let (r, _) = tracker
            .readings(&view(&json!({"started_at": 2.0, "consumers": [c]})))
            .unwrap();
        assert!(find(&r, "gauge", "C_out").unwrap().value.is_nan());
        let c = consumer("C", 0, 4, 4, 0);
        let (r, _) = tracker
            .readings(&view(&json!({"started_at": 2.0, "consumers": [c]})))
            .unwrap();
        assert_eq!(find(&r, "gauge", "C_out").unwrap().value, 3.0);
    }

    #[test]
    fn uninitialized_and_malformed_consumers_are_skipped_without_panicking() {
        let mut tracker = Tracker::new();
        let doc = json!({"consumers": [
            {"name": "Down", "initialized": false, "backlog": 3},
            {"initialized": true},
            {"name": "", "initialized": true},
            {"name": "NoNumbers", "initialized": true, "backlog": "many",
             "received_total": -1, "handling_last_window": {"min_seconds": "x", "max_seconds": -1.0}},
            "not an object",
            null,
        ]});
        let (readings, skipped) = tracker.readings(&view(&doc)).unwrap();
        assert!(readings
            .iter()
            .all(|r| !r.type_instance.starts_with("Down")));
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        assert!(skipped
            .iter()
            .any(|s| s.contains("NoNumbers has no numeric backlog")));
        let nn: Vec<_> = readings.iter().map(|r| r.type_instance.as_str()).collect();
        assert_eq!(
            nn,
            ["NoNumbers_exceptions", "NoNumbers_in", "NoNumbers_out"]
        );
        // A negative backlog (cannot happen, but) is clamped to queue_length's minimum.
        let doc = json!({"consumers": [consumer("Neg", -2, 0, 0, 0)]});
        let (r, _) = tracker.readings(&view(&doc)).unwrap();
        assert_eq!(find(&r, "queue_length", "Neg_backlog").unwrap().value, 0.0);
    }

    #[test]
    fn documents_that_are_not_state_are_errors() {
        let mut tracker = Tracker::new();
        assert!(matches!(
            tracker.read_body(b"<html>"),
            Err(StateError::NotJson(_))
        ));
        assert_eq!(
            tracker.read_body(b"[1, 2]").unwrap_err(),
            StateError::NoConsumers
        );
        assert_eq!(
            tracker
                .read_body(br#"{"consumers": {"a": 1}}"#)
                .unwrap_err(),
            StateError::NoConsumers
        );
        let (r, s) = tracker.read_body(br#"{"consumers": []}"#).unwrap();
        assert!(r.is_empty() && s.is_empty());
    }

    #[test]
    fn a_real_state_document_from_the_hub_shape() {
        // The shape /state has (src/stats.rs snapshot), values rounded.
        let body = br#"{"started_at": 1795392000.5, "consumers": [{"name": "NullConsumer",
            "initialized": true, "backlog": 7, "peak_backlog": 9, "mailbox_capacity": 1000,
            "mailbox_utilization": 0.007, "received_total": 9, "handled_total": 2,
            "exceptions_total": 0, "panics_total": 0, "dropped_total": 0, "restarts_total": 0,
            "handling_seconds_sum": 0.04, "handling_seconds_count": 2, "last_progress_ms": 1,
            "handling_last_window": {"window_secs": 5, "count": 0, "min_seconds": 0.0,
            "max_seconds": 0.0, "avg_seconds": 0.0}}], "buses": [], "unrouted_total": 0,
            "published_total": 0, "ingress_blocked_seconds_total": 0.0}"#;
        let mut tracker = Tracker::new();
        let (r, s) = tracker.read_body(body).unwrap();
        assert!(s.is_empty());
        assert_eq!(r.len(), 7);
        assert_eq!(
            find(&r, "response_time", "NullConsumer_avg").unwrap().value,
            0.0
        );
    }
}
