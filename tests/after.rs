//! `after = [...]`: a consumer receives a message only once the consumers it
//! waits for have finished it, including work they hold after `consume`
//! returned (`Context::hold_backlog`), and the wait counts in its backlog.
//! Real ZeroMQ on 127.0.0.1, a real hub.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedhub::{Consumer, ConsumerError, ConsumerFactory, Context, Envelope, HubBuilder};
use fedhub_testkit::{section, wait_until, TestBus};
use serde_json::json;

/// Finishes each message on a thread of its own, `hold` later (like a batch
/// writer committing), and records it as done then.
struct Writer {
    done: Arc<Mutex<HashSet<String>>>,
    hold: Duration,
}

impl Consumer for Writer {
    fn consume(&mut self, envelope: &Envelope, ctx: &mut Context) -> Result<(), ConsumerError> {
        let guard = ctx.hold_backlog();
        let id = envelope.msg_id().unwrap_or_default().to_string();
        let (done, hold) = (self.done.clone(), self.hold);
        std::thread::spawn(move || {
            std::thread::sleep(hold);
            done.lock().unwrap().insert(id);
            drop(guard);
        });
        Ok(())
    }
}

/// Records, for each message, whether the writer had finished it on arrival.
struct Follower {
    done: Arc<Mutex<HashSet<String>>>,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Consumer for Follower {
    fn consume(&mut self, envelope: &Envelope, _ctx: &mut Context) -> Result<(), ConsumerError> {
        let id = envelope.msg_id().unwrap_or_default().to_string();
        let finished = self.done.lock().unwrap().contains(&id);
        self.seen.lock().unwrap().push((id, finished));
        Ok(())
    }
}

#[test]
fn a_follower_gets_each_message_after_its_predecessor_finished_it() {
    let done = Arc::new(Mutex::new(HashSet::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bus = TestBus::new();
    let mut config = fedhub_testkit::config(&bus);
    config
        .consumers
        .insert("Writer".into(), section(&[("enabled", json!(true))]));
    config.consumers.insert(
        "Follower".into(),
        section(&[
            ("enabled", json!(true)),
            ("after", json!(["Writer"])),
            // Only part of the Follower's topics are the Writer's: the rest
            // goes straight through.
            ("topics", json!(["org.fedoraproject.dev.test"])),
        ]),
    );
    let (d1, d2, s) = (done.clone(), done.clone(), seen.clone());
    let writer = ConsumerFactory::new("Writer", move |_| {
        Ok(Box::new(Writer {
            done: d1.clone(),
            hold: Duration::from_millis(300),
        }))
    })
    .topics(["org.fedoraproject.dev.test.written"]);
    let follower = ConsumerFactory::new("Follower", move |_| {
        Ok(Box::new(Follower {
            done: d2.clone(),
            seen: s.clone(),
        }))
    });
    let hub = HubBuilder::new(config)
        .consumer(writer)
        .consumer(follower)
        .start()
        .unwrap();
    bus.wait_subscribed();
    for i in 1..=20 {
        bus.send("written", i, json!({"n": i}));
    }
    for i in 21..=25 {
        bus.send("other", i, json!({"n": i}));
    }
    // While the writer holds the first messages, the follower's backlog
    // counts them.
    let follower_stats = hub.stats().consumer("Follower");
    assert!(
        wait_until(Duration::from_secs(5), || follower_stats.backlog() >= 20),
        "the follower's backlog counts the messages it waits for: {}",
        follower_stats.backlog()
    );
    assert!(wait_until(Duration::from_secs(20), || seen
        .lock()
        .unwrap()
        .len()
        == 25));
    let seen = seen.lock().unwrap().clone();
    let id = |i: u64| format!("2026-00000000-0000-4000-8000-{i:012}");
    for i in 1..=20 {
        assert!(
            seen.contains(&(id(i), true)),
            "message {i} reached the follower after the writer finished it: {seen:?}"
        );
    }
    for i in 21..=25 {
        assert!(
            seen.contains(&(id(i), false)),
            "message {i}, not the writer's, went straight through: {seen:?}"
        );
    }
    assert!(wait_until(Duration::from_secs(5), || follower_stats
        .backlog()
        == 0));
    let report = hub.shutdown();
    assert!(report.undrained.is_empty(), "{:?}", report.undrained);
}

#[test]
fn after_must_name_a_running_consumer() {
    let bus = TestBus::new();
    let mut config = fedhub_testkit::config(&bus);
    config.consumers.insert(
        "NullConsumer".into(),
        section(&[("enabled", json!(true)), ("after", json!(["Nommer"]))]),
    );
    let err = HubBuilder::new(config)
        .consumer(fedhub::NullConsumer::factory())
        .start()
        .err()
        .expect("a hub whose consumer waits for a consumer that does not run refuses to start");
    let text = err.to_string();
    assert!(
        text.contains("[consumers.NullConsumer] after")
            && text.contains("\"Nommer\" is not a running consumer"),
        "{text}"
    );
}
