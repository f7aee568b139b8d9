//! The hub's own status page (`GET /`), for people who would rather look than
//! read JSON: each consumer's backlog drawn over the last minutes, rates in and
//! out, exceptions, readiness and its reasons, each bus endpoint's connection
//! state, and links to every endpoint the hub serves.
//!
//! The page is plain HTML and JavaScript compiled into the binary (no build
//! step, no external assets). It reads `/state`, `/health/readyz` and
//! `/state/history`: a short in-memory history of each consumer's counters,
//! sampled once a second for the last ten minutes by the HTTP server's thread.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::stats::{unix_millis, Stats};

/// How often the history is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How many samples are kept: ten minutes.
const SAMPLES_KEPT: usize = 600;

/// The page itself.
const PAGE: &str = include_str!("status.html");

/// One consumer's counters at one moment.
#[derive(Debug, Clone, Serialize)]
struct ConsumerSample {
    name: String,
    backlog: i64,
    received_total: u64,
    handled_total: u64,
    exceptions_total: u64,
}

/// Every consumer's counters at one moment (`at`: Unix milliseconds).
#[derive(Debug, Clone, Serialize)]
struct Sample {
    at: u64,
    consumers: Vec<ConsumerSample>,
}

/// The last ten minutes of each consumer's counters, one sample a second.
#[derive(Debug, Default)]
pub struct StatusHistory {
    samples: Mutex<VecDeque<Sample>>,
}

impl StatusHistory {
    /// An empty history.
    pub fn new() -> Arc<StatusHistory> {
        Arc::new(StatusHistory::default())
    }

    /// Records the registry's counters now (the oldest sample beyond ten
    /// minutes is dropped).
    pub fn sample(&self, stats: &Stats) {
        let sample = Sample {
            at: unix_millis(SystemTime::now()),
            consumers: stats
                .consumers()
                .iter()
                .map(|c| ConsumerSample {
                    name: c.name().to_string(),
                    backlog: c.backlog(),
                    received_total: c.received(),
                    handled_total: c.handled(),
                    exceptions_total: c.exceptions(),
                })
                .collect(),
        };
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The history as the page reads it.
    pub fn to_json(&self) -> serde_json::Value {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "interval_secs": SAMPLE_EVERY.as_secs_f64(),
            "samples": samples.iter().collect::<Vec<_>>(),
        })
    }
}

/// The page, with a link to each of `endpoints` (the hub's routes and each
/// consumer's prefix).
pub fn page(name: &str, endpoints: &[String]) -> String {
    let links: String = endpoints
        .iter()
        .map(|path| {
            let path = escape(path);
            format!("<li><a href=\"{path}\">{path}</a></li>")
        })
        .collect();
    PAGE.replace("{{NAME}}", &escape(name))
        .replace("{{ENDPOINTS}}", &links)
}

/// Text made safe inside HTML elements and attributes.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_keeps_ten_minutes_of_samples() {
        let stats = Stats::new();
        stats.consumer("NullConsumer").set_initialized(true);
        let history = StatusHistory::default();
        for _ in 0..SAMPLES_KEPT + 5 {
            history.sample(&stats);
        }
        let json = history.to_json();
        let samples = json["samples"].as_array().unwrap();
        assert_eq!(samples.len(), SAMPLES_KEPT);
        assert_eq!(samples[0]["consumers"][0]["name"], "NullConsumer");
        assert_eq!(samples[0]["consumers"][0]["backlog"], 0);
    }

    #[test]
    fn the_page_links_every_endpoint_escaped() {
        let html = page("hub<1>", &["/metrics".into(), "/a\"b".into()]);
        assert!(html.contains("<a href=\"/metrics\">/metrics</a>"));
        assert!(html.contains("/a&quot;b"));
        assert!(html.contains("hub&lt;1&gt;"));
        assert!(!html.contains("{{"));
    }
}
