//! A third-party fedhub consumer, written against fedhub's public API only: it
//! counts the words in every message's payload, per topic, and serves the counts
//! at `GET /wordcount` on the hub's HTTP server.
//!
//! Run it with `cargo run -p fedhub-example-wordcount -- [config.toml]`, then feed
//! it with `fedhub publish --endpoint tcp://127.0.0.1:9941 --topic logger.log --json '{"log": "hello world"}'`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fedhub::actix_web::{web, HttpResponse};
use fedhub::{
    Config, Consumer, ConsumerError, ConsumerFactory, Context, Envelope, HttpRoutes, HubBuilder,
};
use serde_json::Value;

/// Words seen per topic.
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Counts words in string values of the payload, per topic.
pub struct WordCount {
    counts: Counts,
}

/// Adds the number of whitespace-separated words in every string inside `value`.
fn count_words(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(items) => items.iter().map(count_words).sum(),
        Value::Object(map) => map.values().map(count_words).sum(),
        _ => 0,
    }
}

impl Consumer for WordCount {
    fn consume(&mut self, envelope: &Envelope, _ctx: &mut Context) -> Result<(), ConsumerError> {
        let words = envelope.msg().map(count_words).unwrap_or(0);
        let mut counts = self
            .counts
            .lock()
            .map_err(|_| ConsumerError::fatal("word counts lock poisoned"))?;
        *counts.entry(envelope.topic().to_string()).or_default() += words;
        Ok(())
    }

    fn http_routes(&self) -> Option<HttpRoutes> {
        let counts = self.counts.clone();
        Some(Arc::new(move |cfg: &mut web::ServiceConfig| {
            let counts = counts.clone();
            // Relative to the prefix declared on the factory: GET /wordcount.
            cfg.route(
                "",
                web::get().to(move || {
                    let counts = counts.clone();
                    async move {
                        let snapshot = counts.lock().map(|c| c.clone()).unwrap_or_default();
                        HttpResponse::Ok().json(snapshot)
                    }
                }),
            );
        }))
    }

    fn module(&self) -> &str {
        "wordcount"
    }
}

/// The factory that registers `WordCount` with a hub (enabled unless its
/// `[consumers.WordCount]` section says `enabled = false`).
pub fn factory() -> ConsumerFactory {
    ConsumerFactory::new("WordCount", |_settings| {
        Ok(Box::new(WordCount {
            counts: Arc::default(),
        }))
    })
    .enabled_by_default()
    .http_prefix("/wordcount")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    fedhub::init_logging();
    let path = std::env::args().nth(1).map(std::path::PathBuf::from);
    let config = Config::load(path.as_deref())?;
    let hub = HubBuilder::new(config).consumer(factory()).start()?;
    if let Some(addr) = hub.http_addr() {
        eprintln!("word counts at http://{addr}/wordcount");
    }
    fedhub::wait_for_shutdown_signal()?;
    hub.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_counted_in_nested_strings() {
        let msg =
            serde_json::json!({"log": "hello big world", "nested": {"list": ["a b", 3, null]}});
        assert_eq!(count_words(&msg), 5);
    }
}
