//! End-to-end tests of the hub over real ZeroMQ sockets on 127.0.0.1.

use std::time::Duration;

use fedhub::{HubBuilder, NullConsumer};
use fedhub_testkit::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(20);

/// What a recorder saw.
type Recorded = std::sync::Arc<std::sync::Mutex<Vec<Seen>>>;

/// A hub with two recorders on `bus`: "Everything" (all topics) and "Builds"
/// (`PREFIX.buildsys.*`), subscribed.
fn start_everything_and_builds(bus: &TestBus) -> (fedhub::RunningHub, Recorded, Recorded) {
    let mut config = config(bus);
    let (all, all_seen) = recorder("Everything", Duration::ZERO);
    let (builds, builds_seen) = recorder("Builds", Duration::ZERO);
    config.consumers.insert(
        "Builds".into(),
        section(&[("topics", json!([format!("{PREFIX}.buildsys.*")]))]),
    );
    let hub = HubBuilder::new(config)
        .consumer(all)
        .consumer(builds)
        .start()
        .unwrap();
    bus.wait_subscribed();
    (hub, all_seen, builds_seen)
}

#[test]
fn messages_reach_matching_consumers_with_every_field() {
    let bus = TestBus::new();
    let (hub, all_seen, builds_seen) = start_everything_and_builds(&bus);

    let sent_build = bus.send(
        "buildsys.build.state.change",
        1,
        json!({"name": "kernel", "new": 1}),
    );
    let sent_git = bus.send(
        "git.receive",
        2,
        json!({"text": "h\u{e9}llo \u{1F600}", "n": 1.5}),
    );
    // The legacy one-frame form: topic\0json.
    let topic = format!("{PREFIX}.planet.post.new");
    let legacy = body(&topic, 3, json!({"post": {"title": "x"}}));
    bus.send_frames(&[format!("{topic}\0{legacy}").as_bytes()]);

    assert!(wait_until(LONG, || all_seen.lock().unwrap().len() == 3));
    assert!(wait_until(LONG, || builds_seen.lock().unwrap().len() == 1));
    let all_seen = all_seen.lock().unwrap().clone();
    assert_eq!(all_seen[0].body, sent_build);
    assert_eq!(all_seen[1].body, sent_git);
    assert_eq!(
        all_seen[1].msg,
        Some(json!({"text": "h\u{e9}llo \u{1F600}", "n": 1.5}))
    );
    assert_eq!(all_seen[1].i, Some(2));
    assert_eq!(all_seen[2].topic, topic);
    assert_eq!(
        all_seen[2].msg_id.as_deref(),
        Some("2026-00000000-0000-4000-8000-000000000003")
    );
    assert_eq!(builds_seen.lock().unwrap()[0].body, sent_build);

    let stats = hub.stats();
    assert_eq!(stats.consumer("Everything").received(), 3);
    assert_eq!(stats.consumer("Builds").handled(), 1);
    assert_eq!(stats.bus("test").messages(), 3);
    hub.shutdown();
}

#[test]
fn a_burst_reaches_each_consumer_whole_and_in_order() {
    let bus = TestBus::new();
    let (hub, all_seen, builds_seen) = start_everything_and_builds(&bus);
    // Far more than one hand-off batch, sent as fast as ZeroMQ takes them, with
    // every third message also for the second consumer.
    const N: u64 = 5_000;
    for i in 0..N {
        let suffix = if i % 3 == 0 {
            "buildsys.build"
        } else {
            "git.receive"
        };
        bus.send(suffix, i, json!({"seq": i}));
    }
    assert!(wait_until(LONG, || all_seen.lock().unwrap().len() as u64 == N));
    let expected_builds = (0..N).filter(|i| i % 3 == 0).count();
    assert!(wait_until(LONG, || builds_seen.lock().unwrap().len()
        == expected_builds));
    let all_order: Vec<i64> = all_seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.i.unwrap())
        .collect();
    assert_eq!(all_order, (0..N as i64).collect::<Vec<_>>());
    let builds_order: Vec<i64> = builds_seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.i.unwrap())
        .collect();
    assert_eq!(
        builds_order,
        (0..N as i64).filter(|i| i % 3 == 0).collect::<Vec<_>>()
    );
    for name in ["Everything", "Builds"] {
        let consumer = hub.stats().consumer(name);
        assert!(
            wait_until(LONG, || consumer.backlog() == 0),
            "{name} drained"
        );
        assert_eq!(consumer.received(), consumer.handled(), "{name}");
        assert_eq!(consumer.dropped(), 0, "{name}");
    }
    hub.shutdown();
}

#[test]
fn unmatched_messages_are_counted() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    // Strict matching: subscribe to the exact topic only, so the prefix
    // subscription lets the longer topic through and the router must refuse it.
    config.bus.strict_topics = true;
    let (only, seen) = recorder("Only", Duration::ZERO);
    config.consumers.insert(
        "Only".into(),
        section(&[("topics", json!(format!("{PREFIX}.a")))]),
    );
    let hub = HubBuilder::new(config).consumer(only).start().unwrap();
    bus.wait_subscribed();
    bus.send("a.b", 1, json!({}));
    bus.send("a", 2, json!({}));
    assert!(wait_until(LONG, || seen.lock().unwrap().len() == 1));
    assert!(wait_until(LONG, || hub.stats().unrouted() == 1));
    hub.shutdown();
}

#[test]
fn backlog_is_counted_exactly_and_drains() {
    let bus = TestBus::new();
    let config = config(&bus);
    let hub = start_with_null_consumer(config, &[("sleep_ms", json!(5))]);
    bus.wait_subscribed();
    for i in 0..200 {
        bus.send("x", i, json!({"seq": i}));
    }
    let null = hub.stats().consumer("NullConsumer");
    // Everything sent is either handled or in the backlog, never anywhere else.
    assert!(wait_until(LONG, || null.received() == 200));
    let mut samples = 0;
    while null.handled() < 200 {
        let handled = null.handled() as i64;
        let backlog = null.backlog();
        let handled_after = null.handled() as i64;
        // backlog = received - handled, read between two reads of handled;
        // a message is counted handled just before its envelope is dropped and
        // its backlog released (a drained backlog means no message is held),
        // so one more may show for that instant.
        assert!(
            backlog <= 200 - handled + 1 && backlog >= 200 - handled_after - 1,
            "backlog {backlog}, handled {handled}..{handled_after}"
        );
        samples += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(samples > 5, "the slow consumer was observed while draining");
    assert!(null.peak_backlog() > 100, "peak {}", null.peak_backlog());
    assert!(wait_until(LONG, || null.backlog() == 0));
    assert_eq!(null.dropped(), 0);
    hub.shutdown();
}

#[test]
fn shed_policy_drops_and_counts_when_the_mailbox_is_full() {
    let bus = TestBus::new();
    let config = config(&bus);
    let hub = start_with_null_consumer(
        config,
        &[
            ("sleep_ms", json!(20)),
            ("capacity_messages", json!(5)),
            ("when_full", json!("shed")),
        ],
    );
    bus.wait_subscribed();
    for i in 0..100 {
        bus.send("x", i, json!({}));
    }
    let null = hub.stats().consumer("NullConsumer");
    assert!(wait_until(LONG, || null.received() + null.dropped() == 100));
    assert!(null.dropped() > 50, "dropped {}", null.dropped());
    assert!(wait_until(LONG, || null.handled() == null.received()));
    assert_eq!(null.backlog(), 0);
    let (_, metrics) = http_get(hub.http_addr().unwrap(), "/metrics");
    assert!(metrics.contains(&format!(
        "fedhub_consumer_dropped_total{{consumer=\"NullConsumer\",reason=\"mailbox_full\"}} {}",
        null.dropped()
    )));
    hub.shutdown();
}

#[test]
fn a_flood_for_a_shedding_consumer_is_counted_exactly() {
    let bus = TestBus::new();
    let config = config(&bus);
    let hub = start_with_null_consumer(
        config,
        &[
            ("sleep_ms", json!(50)),
            ("capacity_messages", json!(1)),
            ("when_full", json!("shed")),
        ],
    );
    bus.wait_subscribed();
    // Nearly every message is shed: none of them is bounded by a backlog, so they
    // must neither pile up unseen nor be miscounted, however fast they come.
    const N: u64 = 60_000;
    const BAD_EVERY: u64 = 3_000;
    let topic = format!("{PREFIX}.flood");
    let mismatched = format!(r#"{{"topic": "{PREFIX}.other"}}"#);
    let valid = body(&topic, 0, json!({"n": 0}));
    for i in 0..N {
        bus.send_frames(&[topic.as_bytes(), valid.as_bytes()]);
        if i % BAD_EVERY == 0 {
            bus.send_frames(&[topic.as_bytes(), mismatched.as_bytes()]);
        }
    }
    let null = hub.stats().consumer("NullConsumer");
    let test_bus = hub.stats().bus("test");
    assert!(
        wait_until(LONG, || null.received() + null.dropped() == N),
        "received {} dropped {}",
        null.received(),
        null.dropped()
    );
    assert!(null.dropped() > N / 2, "dropped {}", null.dropped());
    assert_eq!(test_bus.malformed("topic_mismatch"), N / BAD_EVERY);
    assert_eq!(test_bus.messages(), N + N / BAD_EVERY);
    assert_eq!(hub.stats().unrouted(), 0);
    assert!(wait_until(LONG, || null.backlog() == 0));
    assert_eq!(null.handled(), null.received());
    hub.shutdown();
}

#[test]
fn block_policy_loses_nothing_with_a_tiny_mailbox() {
    let bus = TestBus::new();
    let config = config(&bus);
    let hub = start_with_null_consumer(
        config,
        &[("sleep_ms", json!(0.5)), ("capacity_messages", json!(3))],
    );
    bus.wait_subscribed();
    for i in 0..500 {
        bus.send("x", i, json!({}));
    }
    let null = hub.stats().consumer("NullConsumer");
    assert!(wait_until(LONG, || null.handled() == 500));
    assert_eq!(null.dropped(), 0);
    // The bound applies to the exact backlog: never one message more.
    assert!(
        null.peak_backlog() <= 3,
        "peak {} with capacity 3",
        null.peak_backlog()
    );
    hub.shutdown();
}

#[test]
fn errors_and_panics_are_counted_and_the_consumer_goes_on() {
    let bus = TestBus::new();
    let config = config(&bus);
    let hub = start_with_null_consumer(
        config,
        &[("fail_every", json!(5)), ("panic_every", json!(7))],
    );
    bus.wait_subscribed();
    for i in 1..=70 {
        bus.send("x", i, json!({}));
    }
    let null = hub.stats().consumer("NullConsumer");
    assert!(wait_until(LONG, || null.handled() == 70));
    // Messages 7, 14, ... 70 panic (10); 5, 10, ... except those also divisible by 7 fail (14 - 2 = 12).
    assert_eq!(null.panics(), 10);
    assert_eq!(null.exceptions(), 22);
    assert!(null.initialized());
    hub.shutdown();
}

struct FatalOnce {
    starts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: bool,
}

impl fedhub::Consumer for FatalOnce {
    fn start(&mut self, _ctx: &mut fedhub::Context) -> Result<(), fedhub::ConsumerError> {
        self.starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    fn consume(
        &mut self,
        _envelope: &fedhub::Envelope,
        _ctx: &mut fedhub::Context,
    ) -> Result<(), fedhub::ConsumerError> {
        if !self.failed {
            self.failed = true;
            return Err(fedhub::ConsumerError::fatal("lost the database connection"));
        }
        Ok(())
    }
}

#[test]
fn fatal_errors_restart_the_consumer_and_retries_apply() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    config.consumers.insert(
        "Fatal".into(),
        section(&[("retries", json!(1)), ("dead_letter_file", json!(dead))]),
    );
    let starts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = starts.clone();
    let factory = fedhub::ConsumerFactory::new("Fatal", move |_| {
        Ok(Box::new(FatalOnce {
            starts: counter.clone(),
            failed: false,
        }))
    })
    .enabled_by_default();
    let hub = HubBuilder::new(config).consumer(factory).start().unwrap();
    bus.wait_subscribed();
    bus.send("x", 1, json!({}));
    bus.send("x", 2, json!({}));
    let stats = hub.stats().consumer("Fatal");
    assert!(wait_until(LONG, || stats.handled() == 2));
    assert_eq!(stats.restarts(), 1);
    assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The first message failed once, then succeeded on its retry.
    assert_eq!(stats.exceptions(), 0);
    assert!(!dead.exists());
    hub.shutdown();
}

#[test]
fn messages_that_keep_failing_go_to_the_dead_letter_file() {
    let bus = TestBus::new();
    let config = config(&bus);
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let hub = start_with_null_consumer(
        config,
        &[
            ("fail_every", json!(1)),
            ("retries", json!(2)),
            ("dead_letter_file", json!(dead)),
        ],
    );
    bus.wait_subscribed();
    let sent = bus.send("x", 1, json!({"keep": "me"}));
    let null = hub.stats().consumer("NullConsumer");
    assert!(wait_until(LONG, || null.handled() == 1));
    assert_eq!(null.exceptions(), 1);
    let line = std::fs::read_to_string(&dead).unwrap();
    let record: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(record["body"], sent);
    assert_eq!(record["consumer"], "NullConsumer");
    assert!(record["error"]
        .as_str()
        .unwrap()
        .contains("fails message 3"));
    hub.shutdown();
}

/// A dead letter that cannot be written (here the path is a directory) is
/// counted, and readyz fails naming the file, until one is written again.
#[test]
fn dead_letters_that_cannot_be_written_are_counted_and_fail_readyz() {
    let bus = TestBus::new();
    let config = config(&bus);
    let dir = tempfile::tempdir().unwrap();
    let hub = start_with_null_consumer(
        config,
        &[
            ("fail_every", json!(1)),
            ("dead_letter_file", json!(dir.path())),
        ],
    );
    bus.wait_subscribed();
    let addr = hub.http_addr().unwrap();
    assert_eq!(http_get(addr, "/health/readyz").0, 200);
    bus.burst("x", 3);
    let null = hub.stats().consumer("NullConsumer");
    assert!(wait_until(LONG, || null.handled() == 3));
    assert_eq!(null.exceptions(), 3);
    assert_eq!(null.dead_letter_errors(), 3);
    let (status, ready) = http_get(addr, "/health/readyz");
    assert_eq!(status, 503, "{ready}");
    assert!(ready.contains("cannot write dead letters to"), "{ready}");
    assert!(ready.contains(&dir.path().display().to_string()), "{ready}");
    let (_, metrics) = http_get(addr, "/metrics");
    assert!(
        metrics.contains("fedhub_consumer_dead_letter_errors_total{consumer=\"NullConsumer\"} 3"),
        "{metrics}"
    );
    let (_, state) = http_get(addr, "/state");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["consumers"][0]["dead_letter_errors_total"], 3);
    hub.shutdown();
}

/// A dead-letter file in a directory that does not exist is refused at start,
/// naming the key, rather than failing on every message later.
#[test]
fn a_dead_letter_file_in_a_missing_directory_is_refused_at_start() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.consumers.insert(
        "NullConsumer".into(),
        section(&[
            ("enabled", json!(true)),
            ("dead_letter_file", json!("/nonexistent/dir/dead.jsonl")),
        ]),
    );
    let error = HubBuilder::new(config)
        .consumer(NullConsumer::factory())
        .start()
        .err()
        .expect("refused");
    let text = fedhub::error_chain(&error);
    assert!(
        text.contains("[consumers.NullConsumer] dead_letter_file"),
        "{text}"
    );
    assert!(text.contains("/nonexistent/dir"), "{text}");
}

/// `depth` nested arrays around `inner`.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

/// The hub has one nesting limit, `fedhub::MAX_JSON_DEPTH` (the envelope object
/// is the first level): a body nested deeper is rejected as malformed and
/// counted as `too_deep`; one at the limit is delivered whole, and brackets
/// inside strings do not count.
#[test]
fn messages_nested_deeper_than_the_limit_are_rejected_as_malformed() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    let (recorder, seen) = recorder("Everything", Duration::ZERO);
    config.bus.max_message_bytes = 1 << 20;
    let hub = HubBuilder::new(config).consumer(recorder).start().unwrap();
    bus.wait_subscribed();
    let topic = format!("{PREFIX}.deep");
    let send = |i: u64, msg: &str| {
        let body = format!(
            r#"{{"i":{i},"msg":{msg},"msg_id":"2026-deep-{i}","timestamp":1795392000,"topic":"{topic}"}}"#
        );
        bus.send_frames(&[topic.as_bytes(), body.as_bytes()]);
    };
    let limit = fedhub::MAX_JSON_DEPTH;
    assert_eq!(limit, 64);
    send(1, &nested(limit - 1, "1"));
    send(2, &nested(limit, "1"));
    send(3, &nested(128, ""));
    send(4, &format!("{{\"a\":{}}}", nested(limit - 1, "")));
    send(5, &format!("\"{}\"", "[".repeat(10_000)));
    // The legacy one-frame form goes through the same check.
    let deep = format!(r#"{{"msg":{},"topic":"{topic}"}}"#, nested(100_000, ""));
    bus.send_frames(&[format!("{topic}\0{deep}").as_bytes()]);
    send(6, "{}");
    assert!(wait_until(LONG, || seen.lock().unwrap().len() == 3));
    let bus_stats = hub.stats().bus("test");
    assert!(wait_until(LONG, || bus_stats.malformed("too_deep") == 4));
    assert_eq!(bus_stats.malformed_total(), 4);
    let seen = seen.lock().unwrap().clone();
    let ids: Vec<_> = seen.iter().map(|s| s.msg_id.clone().unwrap()).collect();
    assert_eq!(ids, ["2026-deep-1", "2026-deep-5", "2026-deep-6"]);
    // What was accepted can be read back as a tree, whole.
    let msg = seen[0].msg.clone().unwrap();
    assert_eq!(serde_json::to_string(&msg).unwrap(), nested(limit - 1, "1"));
    let addr = hub.http_addr().unwrap();
    let (_, metrics) = http_get(addr, "/metrics");
    assert!(
        metrics.contains("fedhub_bus_malformed_total{bus=\"test\",reason=\"too_deep\"} 4"),
        "{metrics}"
    );
    hub.shutdown();
}

/// fedmsg's `i` is an integer: one sent as a float or a string is rejected as
/// malformed (`wrong_type`), never turned into 0; null or absent means none.
#[test]
fn an_i_that_is_not_an_integer_is_rejected_not_invented() {
    let bus = TestBus::new();
    let config = config(&bus);
    let (recorder, seen) = recorder("Everything", Duration::ZERO);
    let hub = HubBuilder::new(config).consumer(recorder).start().unwrap();
    bus.wait_subscribed();
    let topic = format!("{PREFIX}.counter");
    for (n, i) in [
        "1.5",
        "\"7\"",
        "1e3",
        "2.0",
        "-3",
        "null",
        "9223372036854775808",
    ]
    .iter()
    .enumerate()
    {
        let body = format!(r#"{{"i":{i},"msg":{{}},"msg_id":"2026-i-{n}","topic":"{topic}"}}"#);
        bus.send_frames(&[topic.as_bytes(), body.as_bytes()]);
    }
    let body = format!(r#"{{"msg":{{}},"msg_id":"2026-i-absent","topic":"{topic}"}}"#);
    bus.send_frames(&[topic.as_bytes(), body.as_bytes()]);
    assert!(wait_until(LONG, || seen.lock().unwrap().len() == 3));
    let test_bus = hub.stats().bus("test");
    assert!(wait_until(LONG, || test_bus.malformed("wrong_type") == 5));
    assert_eq!(test_bus.malformed_total(), 5);
    let seen = seen.lock().unwrap().clone();
    let got: Vec<_> = seen
        .iter()
        .map(|s| (s.msg_id.clone().unwrap(), s.i))
        .collect();
    assert_eq!(
        got,
        [
            ("2026-i-4".to_string(), Some(-3)),
            ("2026-i-5".to_string(), None),
            ("2026-i-absent".to_string(), None),
        ]
    );
    hub.shutdown();
}

#[test]
fn bad_input_is_rejected_counted_and_loses_nothing_else() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.bus.max_message_bytes = 1024 * 1024;
    let (all, seen) = recorder("Everything", Duration::ZERO);
    let hub = HubBuilder::new(config).consumer(all).start().unwrap();
    bus.wait_subscribed();
    let topic = format!("{PREFIX}.x");
    let t = topic.as_bytes();
    let huge = format!(
        r#"{{"topic":"{topic}","msg":{{"blob":"{}"}}}}"#,
        "x".repeat(10 * 1024 * 1024)
    );
    let cases: Vec<(Vec<&[u8]>, &str)> = vec![
        (vec![t, b"{}", b"extra"], "frame_count"),
        (
            vec![b"org.fedoraproject.dev.test.no-separator"],
            "missing_separator",
        ),
        (
            vec![b"org.fedoraproject.dev.test.\xff", b"{}"],
            "topic_not_utf8",
        ),
        (vec![t, b"\xff\xfe"], "not_json"),
        (vec![t, b"this is not json"], "not_json"),
        (vec![t, b"[1, 2, 3]"], "not_object"),
        (vec![t, br#"{"msg": {}}"#], "missing_topic"),
        (vec![t, br#"{"topic": 42}"#], "wrong_type"),
        (
            vec![t, br#"{"topic": "org.fedoraproject.dev.test.other"}"#],
            "topic_mismatch",
        ),
        (vec![t, huge.as_bytes()], "too_large"),
    ];
    let mut expected_valid = Vec::new();
    for (i, (frames, _)) in cases.iter().enumerate() {
        bus.send_frames(frames);
        // A valid message after each bad one must still arrive.
        expected_valid.push(bus.send("x", i as u64, json!({"after": i})));
    }
    assert!(wait_until(LONG, || seen.lock().unwrap().len() == cases.len()));
    let bodies: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(bodies, expected_valid);
    let test_bus = hub.stats().bus("test");
    for reason in [
        "frame_count",
        "missing_separator",
        "topic_not_utf8",
        "not_object",
        "missing_topic",
        "wrong_type",
        "topic_mismatch",
        "too_large",
    ] {
        assert_eq!(test_bus.malformed(reason), 1, "{reason}");
    }
    assert_eq!(test_bus.malformed("not_json"), 2);
    assert_eq!(test_bus.malformed_total(), cases.len() as u64);
    // Rejections are neither drops nor deliveries, and leave no backlog behind
    // (several were admitted on their topic frame before decoding refused them).
    let everything = hub.stats().consumer("Everything");
    assert!(wait_until(LONG, || everything.backlog() == 0));
    assert_eq!(everything.received(), cases.len() as u64);
    assert_eq!(everything.handled(), cases.len() as u64);
    assert_eq!(everything.dropped(), 0);
    let (status, metrics) = http_get(hub.http_addr().unwrap(), "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("fedhub_bus_malformed_total{bus=\"test\",reason=\"too_large\"} 1"));
    hub.shutdown();
}

#[test]
fn shutdown_drains_the_mailboxes_first() {
    let bus = TestBus::new();
    let config = config(&bus);
    let hub = start_with_null_consumer(config, &[("sleep_ms", json!(10))]);
    bus.wait_subscribed();
    for i in 0..100 {
        bus.send("x", i, json!({}));
    }
    let null = hub.stats().consumer("NullConsumer");
    assert!(wait_until(LONG, || null.received() == 100));
    assert!(null.backlog() > 0);
    let report = hub.shutdown();
    assert!(report.undrained.is_empty(), "{:?}", report.undrained);
    assert_eq!(null.handled(), 100);
}

#[test]
fn shutdown_grace_is_bounded_and_reports_what_was_left() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.hub.shutdown_grace_secs = 0;
    let hub = start_with_null_consumer(config, &[("sleep_ms", json!(50))]);
    bus.wait_subscribed();
    for i in 0..200 {
        bus.send("x", i, json!({}));
    }
    let null = hub.stats().consumer("NullConsumer");
    assert!(wait_until(LONG, || null.received() == 200));
    let began = std::time::Instant::now();
    let report = hub.shutdown();
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "took {:?}",
        began.elapsed()
    );
    assert_eq!(report.undrained.len(), 1);
    assert!(report.undrained[0].1 > 0);
}

/// Shutdown ends within `shutdown_grace_secs` even when the backlog cannot
/// drain in time: what was left is not handled afterwards, it is counted as
/// `dropped{reason="shutdown"}` for its consumer and reported.
#[test]
fn shutdown_finishes_within_its_grace_and_counts_what_was_left() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.hub.shutdown_grace_secs = 1;
    let hub = start_with_null_consumer(
        config,
        &[
            ("sleep_ms", json!(2)),
            ("capacity_messages", json!(100_000)),
        ],
    );
    bus.wait_subscribed();
    bus.burst("x", 3000);
    let null = hub.stats().consumer("NullConsumer");
    assert!(wait_until(LONG, || null.received() == 3000));
    assert!(null.backlog() > 1000, "backlog {}", null.backlog());
    let stats = hub.stats().clone();
    let began = std::time::Instant::now();
    let report = hub.shutdown();
    let took = began.elapsed();
    assert!(took < Duration::from_millis(1800), "took {took:?}");
    assert_eq!(report.undrained.len(), 1, "{:?}", report.undrained);
    let (name, left) = report.undrained[0].clone();
    assert_eq!(name, "NullConsumer");
    assert!(left > 0);
    // Nothing was handled after the grace: handled and left add up.
    let handled = null.handled();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(null.handled(), handled);
    assert_eq!(handled + left as u64, 3000);
    assert_eq!(null.backlog(), 0);
    let metrics = stats.render_prometheus().unwrap();
    let series = format!(
        "fedhub_consumer_dropped_total{{consumer=\"NullConsumer\",reason=\"shutdown\"}} {left}"
    );
    assert!(metrics.contains(&series), "{series} in {metrics}");
}

/// The value of one series in the Prometheus text.
fn series_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

/// Each endpoint a bus connects to has a connection state from ZeroMQ's socket
/// monitor events, on `/metrics` and `/state`; with
/// `not_ready_after_disconnected_secs` set, readyz fails while no endpoint of
/// a bus has been connected for that long.
#[test]
fn endpoint_connection_state_is_exported_and_can_fail_readyz() {
    let port = free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut config = fedhub::Config::default();
    config.bus.endpoints.insert(
        "bodhi.app01".into(),
        fedhub::OneOrMany::Many(vec![endpoint.clone()]),
    );
    config.bus.inbound = String::new();
    config.bus.not_ready_after_disconnected_secs = 1;
    config.http.listen = "127.0.0.1:0".into();
    config.hub.status_log_interval_secs = 0;
    let hub = start_with_null_consumer(config, &[]);
    let addr = hub.http_addr().unwrap();
    let labels = format!("{{bus=\"bodhi.app01\",endpoint=\"{endpoint}\"}}");
    let metric = |name: &str| {
        let (_, text) = http_get(addr, "/metrics");
        series_value(&text, &format!("{name}{labels}"))
    };
    let endpoint_state = || {
        let (_, state) = http_get(addr, "/state");
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        state["buses"][0]["endpoints"][0].clone()
    };

    // Nobody listens: retried, not connected, and after a second not ready.
    assert!(wait_until(LONG, || metric(
        "fedhub_bus_endpoint_connect_retries_total"
    )
    .is_some_and(|n| n >= 1.0)));
    assert_eq!(metric("fedhub_bus_endpoint_connected"), Some(0.0));
    let state = endpoint_state();
    assert_eq!(state["address"], endpoint.as_str());
    assert_eq!(state["state"], "retrying", "{state}");
    assert!(wait_until(LONG, || http_get(addr, "/health/readyz").0 == 503));
    let (_, ready) = http_get(addr, "/health/readyz");
    assert!(
        ready.contains("bus bodhi.app01: no endpoint connected"),
        "{ready}"
    );

    // A publisher appears: connected, ready.
    let context = zmq::Context::new();
    let publisher = context.socket(zmq::PUB).unwrap();
    publisher.set_linger(0).unwrap();
    publisher.bind(&endpoint).unwrap();
    assert!(wait_until(LONG, || metric("fedhub_bus_endpoint_connected")
        == Some(1.0)));
    assert_eq!(metric("fedhub_bus_endpoint_connects_total"), Some(1.0));
    assert_eq!(endpoint_state()["state"], "connected");
    assert!(wait_until(LONG, || http_get(addr, "/health/readyz").0 == 200));

    // It goes away: disconnected, counted, and not ready again a second later.
    drop(publisher);
    assert!(wait_until(LONG, || metric("fedhub_bus_endpoint_connected")
        == Some(0.0)));
    assert_eq!(metric("fedhub_bus_endpoint_disconnects_total"), Some(1.0));
    let state = endpoint_state()["state"].clone();
    assert!(state == "disconnected" || state == "retrying", "{state}");
    assert!(wait_until(LONG, || http_get(addr, "/health/readyz").0 == 503));
    hub.shutdown();
}

/// Without `not_ready_after_disconnected_secs` (the default, 0), an endpoint
/// that is down is reported but does not fail readyz.
#[test]
fn a_down_endpoint_does_not_fail_readyz_by_default() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut config = fedhub::Config::default();
    config
        .bus
        .endpoints
        .insert("down".into(), fedhub::OneOrMany::One(endpoint));
    config.bus.inbound = String::new();
    config.http.listen = "127.0.0.1:0".into();
    let hub = start_with_null_consumer(config, &[]);
    let addr = hub.http_addr().unwrap();
    assert!(wait_until(LONG, || {
        let (_, text) = http_get(addr, "/metrics");
        text.lines().any(|l| {
            l.starts_with("fedhub_bus_endpoint_connect_retries_total{bus=\"down\"")
                && !l.ends_with(" 0")
        })
    }));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(http_get(addr, "/health/readyz").0, 200);
    hub.shutdown();
}

#[test]
fn http_surface_reports_health_state_and_metrics() {
    let bus = TestBus::new();
    let config = config(&bus);
    let hub = start_with_null_consumer(config, &[]);
    bus.wait_subscribed();
    bus.send("x", 1, json!({}));
    let null = hub.stats().consumer("NullConsumer");
    assert!(wait_until(LONG, || null.handled() == 1));
    let addr = hub.http_addr().unwrap();
    let (status, live) = http_get(addr, "/health/livez");
    assert_eq!((status, live.as_str()), (200, r#"{"live":true}"#));
    let (status, ready) = http_get(addr, "/health/readyz");
    assert_eq!(status, 200, "{ready}");
    let (status, state) = http_get(addr, "/state");
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["consumers"][0]["name"], "NullConsumer");
    assert_eq!(state["consumers"][0]["handled_total"], 1);
    assert_eq!(state["buses"][0]["messages_total"], 1);
    let (status, metrics) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("fedhub_consumer_backlog{consumer=\"NullConsumer\"} 0"));
    assert!(metrics.contains("fedhub_consumer_handled_total{consumer=\"NullConsumer\"} 1"));
    assert!(metrics.contains("process_resident_memory_bytes"));
    let (status, _) = http_get(addr, "/no/such/page");
    assert_eq!(status, 404);
    hub.shutdown();
}

#[test]
fn consumers_publish_fedmsg_envelopes() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.publish.bind = vec!["tcp://127.0.0.1:*".into()];
    config.hub.environment = "stg".into();
    let hub = HubBuilder::new(config).start().unwrap();
    let endpoint = hub.publish_endpoints()[0].clone();
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.set_rcvtimeo(200).unwrap();
    sub.connect(&endpoint).unwrap();
    // Publish until the subscription has arrived (slow joiner), then check one.
    let mut received = None;
    for _ in 0..100 {
        hub.publisher()
            .publish(
                "fedbadges.badge.award",
                json!({"user": {"username": "ralph"}}),
            )
            .unwrap();
        if let Ok(frames) = sub.recv_multipart(0) {
            received = Some(frames);
            break;
        }
    }
    let frames = received.expect("a published message arrived");
    assert_eq!(frames[0], b"org.fedoraproject.stg.fedbadges.badge.award");
    let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let envelope = fedhub::Envelope::from_frames(&parts, usize::MAX).unwrap();
    assert_eq!(envelope.canonical_body(), envelope.body());
    assert_eq!(
        envelope.msg(),
        Some(&json!({"user": {"username": "ralph"}}))
    );
    assert!(envelope.i().unwrap() >= 1);
    assert!(hub.stats().published() >= 1);
    hub.shutdown();
}

#[test]
fn unknown_consumer_sections_and_failed_starts_stop_the_hub_from_starting() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    config
        .consumers
        .insert("Nomer".into(), section(&[("enabled", json!(true))]));
    let err = HubBuilder::new(config.clone())
        .consumer(NullConsumer::factory())
        .start()
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("[consumers.Nomer]: no such consumer (available: NullConsumer)"),
        "{err}"
    );

    struct Broken;
    impl fedhub::Consumer for Broken {
        fn start(&mut self, _: &mut fedhub::Context) -> Result<(), fedhub::ConsumerError> {
            Err(fedhub::ConsumerError::msg(
                "database /nonexistent is unreachable",
            ))
        }
        fn consume(
            &mut self,
            _: &fedhub::Envelope,
            _: &mut fedhub::Context,
        ) -> Result<(), fedhub::ConsumerError> {
            Ok(())
        }
    }
    let mut config = fedhub_testkit::config(&bus);
    config.consumers.clear();
    let err = HubBuilder::new(config)
        .consumer(
            fedhub::ConsumerFactory::new("Broken", |_| Ok(Box::new(Broken))).enabled_by_default(),
        )
        .start()
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "consumer Broken failed to start: database /nonexistent is unreachable"
    );
}

/// A consumer serving `/pong` with the text `name`, under whatever prefix its
/// factory declares.
struct Ponger(&'static str);

impl fedhub::Consumer for Ponger {
    fn consume(
        &mut self,
        _: &fedhub::Envelope,
        _: &mut fedhub::Context,
    ) -> Result<(), fedhub::ConsumerError> {
        Ok(())
    }

    fn http_routes(&self) -> Option<fedhub::HttpRoutes> {
        let name = self.0;
        Some(std::sync::Arc::new(
            move |cfg: &mut fedhub::actix_web::web::ServiceConfig| {
                cfg.route(
                    "/pong",
                    fedhub::actix_web::web::get().to(move || async move { name }),
                );
            },
        ))
    }
}

fn ponger(name: &'static str, prefix: Option<&str>) -> fedhub::ConsumerFactory {
    let factory = fedhub::ConsumerFactory::new(name, move |_| Ok(Box::new(Ponger(name))))
        .enabled_by_default();
    match prefix {
        Some(prefix) => factory.http_prefix(prefix),
        None => factory,
    }
}

/// Each consumer's routes are served under the prefix it declared, and only there.
#[test]
fn consumer_routes_are_mounted_under_their_prefix() {
    let bus = TestBus::new();
    let hub = HubBuilder::new(config(&bus))
        .consumer(ponger("Ping", Some("/ping")))
        .consumer(ponger("Pong", Some("/pingpong")))
        .start()
        .unwrap();
    let addr = hub.http_addr().unwrap();
    assert_eq!(http_get(addr, "/ping/pong"), (200, "Ping".to_string()));
    assert_eq!(http_get(addr, "/pingpong/pong"), (200, "Pong".to_string()));
    assert_eq!(
        http_get(addr, "/pong").0,
        404,
        "nothing outside the prefixes"
    );
    assert_eq!(
        http_get(addr, "/health/livez").0,
        200,
        "the hub's routes stay"
    );
    hub.shutdown();
}

/// Two consumers claiming overlapping prefixes, one claiming a hub route, or one
/// serving routes without a prefix: the hub refuses to start, naming them.
#[test]
fn colliding_http_prefixes_are_refused_at_start_naming_both() {
    let bus = TestBus::new();
    let start = |factories: Vec<fedhub::ConsumerFactory>| {
        HubBuilder::new(config(&bus))
            .consumers(factories)
            .start()
            .err()
            .expect("the hub refuses to start")
            .to_string()
    };
    let err = start(vec![
        ponger("Nommer", Some("/datagrepper")),
        ponger("Copycat", Some("/datagrepper")),
    ]);
    assert!(
        err.contains("Nommer") && err.contains("Copycat") && err.contains("/datagrepper"),
        "{err}"
    );
    let err = start(vec![ponger("Greedy", Some("/metrics"))]);
    assert!(err.contains("Greedy") && err.contains("/metrics"), "{err}");
    let err = start(vec![ponger("Shy", None)]);
    assert!(
        err.contains("Shy") && err.contains("declares no prefix"),
        "{err}"
    );
}

/// An HTTP address already in use stops the start with an error naming it, and
/// what was started before (the consumers' threads) is stopped, not left behind.
#[test]
fn an_http_address_in_use_fails_the_start_promptly_naming_it() {
    let bus = TestBus::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut config = config(&bus);
    config.http.listen = address.clone();
    let (factory, _seen) = recorder("Recorder", Duration::ZERO);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = HubBuilder::new(config).consumer(factory).start();
        let _ = tx.send(outcome.err().map(|e| fedhub::error_chain(&e)));
    });
    let error = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("start returns instead of hanging")
        .expect("the start fails");
    assert!(
        error.contains(&format!("[http] listen = \"{address}\": cannot listen")),
        "{error}"
    );
}
