//! A third-party fedhub consumer, written against fedhub's public API only: it
//! counts the words in every message's payload, per topic, serves the counts at
//! `GET /wordcount` on the hub's HTTP server and, with `announce_every = N` in
//! its section, publishes a `wordcount.total` message every N messages.
//!
//! Run it with `cargo run -- [config.toml]` in this folder (or
//! `cargo run -p fedhub-example-wordcount -- [config.toml]` in fedhub's
//! workspace), then feed it with
//! `fedhub publish --endpoint tcp://127.0.0.1:9941 --topic logger.log --json '{"log": "hello world"}'`.
//!
//! Publishing (`ctx.publish`) needs `[publish] bind` or `connect` in the
//! config; without either it fails with `publishing is not configured`, which
//! the hub counts as an exception of the consumer and logs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fedhub::actix_web::{web, HttpResponse};
use fedhub::{
    Config, Consumer, ConsumerError, ConsumerFactory, Context, Envelope, HttpRoutes, HubBuilder,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// Words seen per topic.
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// The consumer's own keys in `[consumers.WordCount]` (the runtime's keys,
/// `enabled`, `topics`, `capacity_messages`..., are taken out before).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WordCountConfig {
    /// Publish `wordcount.total` every this many messages (0: never).
    pub announce_every: u64,
}

/// Counts words in string values of the payload, per topic.
pub struct WordCount {
    counts: Counts,
    config: WordCountConfig,
    handled: u64,
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
    /// On the consumer's thread, before the first message (and after a restart).
    /// Returning an error here stops the hub's start, naming the consumer.
    fn start(&mut self, _ctx: &mut Context) -> Result<(), ConsumerError> {
        eprintln!(
            "wordcount: started, announcing every {} messages",
            self.config.announce_every
        );
        Ok(())
    }

    fn consume(&mut self, envelope: &Envelope, ctx: &mut Context) -> Result<(), ConsumerError> {
        let words = envelope.msg().map(count_words).unwrap_or(0);
        let total = {
            let mut counts = self
                .counts
                .lock()
                .map_err(|_| ConsumerError::fatal("word counts lock poisoned"))?;
            *counts.entry(envelope.topic().to_string()).or_default() += words;
            counts.values().sum::<u64>()
        };
        self.handled += 1;
        let every = self.config.announce_every;
        if every > 0 && self.handled.is_multiple_of(every) {
            // Needs [publish] bind or connect; an error here is counted as an
            // exception of this consumer (and retried `retries` times).
            ctx.publish("wordcount.total", json!({ "words": total }))?;
        }
        Ok(())
    }

    /// At shutdown, once the mailbox drained (and before a restart).
    fn stop(&mut self, _ctx: &mut Context) {
        let total: u64 = self
            .counts
            .lock()
            .map(|c| c.values().sum())
            .unwrap_or_default();
        eprintln!("wordcount: stopped after {total} words");
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

    /// The `module` the moksha monitoring socket shows for this consumer.
    fn module(&self) -> &str {
        "wordcount"
    }
}

/// The factory that registers `WordCount` with a hub (enabled unless its
/// `[consumers.WordCount]` section says `enabled = false`).
pub fn factory() -> ConsumerFactory {
    ConsumerFactory::new("WordCount", |settings| {
        // Typos in the section are named (`#[serde(deny_unknown_fields)]`),
        // at start and by `--check`, with the runtime's keys listed too.
        let config: WordCountConfig = settings.parse()?;
        Ok(Box::new(WordCount {
            counts: Arc::default(),
            config,
            handled: 0,
        }))
    })
    .enabled_by_default()
    .http_prefix("/wordcount")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without this the hub logs nothing (RUST_LOG=debug for more).
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
        let msg = json!({"log": "hello big world", "nested": {"list": ["a b", 3, null]}});
        assert_eq!(count_words(&msg), 5);
    }
}
