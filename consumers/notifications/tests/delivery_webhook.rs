//! Webhook delivery against a real HTTP server on 127.0.0.1 (the testkit's
//! `HttpSink`), with the outbox on SQLite files and on PostgreSQL.

use std::time::{Duration, Instant};

use fedhub_notifications::delivery::{Deliverer, DeliveryConfig, Notification, Outgoing};
use fedhub_storage::{Database, DatabaseUrl, PoolOptions};
use fedhub_testkit::{wait_until, HttpSink};
use serde_json::json;

fn open(url: &DatabaseUrl) -> Database {
    Database::open(
        url,
        "FMNConsumer",
        &PoolOptions::default(),
        &prometheus::Registry::new(),
    )
    .unwrap()
}

fn sqlite(dir: &tempfile::TempDir) -> DatabaseUrl {
    DatabaseUrl::sqlite(dir.path().join("fmn.sqlite"))
}

fn config() -> DeliveryConfig {
    DeliveryConfig {
        retry_initial_ms: 100,
        retry_max_ms: 1000,
        webhook_timeout_ms: 2000,
        ..DeliveryConfig::default()
    }
}

fn note(url: &str, i: u32) -> Notification {
    Notification {
        openid: "ralph.id.fedoraproject.org".into(),
        context: "webhook".into(),
        address: url.into(),
        filter_name: "Events referring to my username".into(),
        filter_id: 3,
        msg_id: format!("2026-msg-{i}"),
        topic: "org.fedoraproject.prod.buildsys.build.state.change".into(),
        subtitle: format!("ralph's eclipse-ptp-{i}.0-1 completed"),
        link: format!("http://koji.fedoraproject.org/koji/buildinfo?buildID={i}"),
        message: json!({"owner": "ralph", "name": "eclipse-ptp", "new": 1, "build_id": i}),
    }
}

fn start(url: &DatabaseUrl, config: DeliveryConfig) -> Deliverer {
    Deliverer::start(open(url), config, &prometheus::Registry::new()).unwrap()
}

#[test]
fn single_and_digest_payloads_are_posted_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let sink = HttpSink::start();
    let url = sink.url("/hook");
    let registry = prometheus::Registry::new();
    let deliverer = Deliverer::start(open(&sqlite(&dir)), config(), &registry).unwrap();
    deliverer.submit(Outgoing::Single(note(&url, 1))).unwrap();
    deliverer
        .submit(Outgoing::Digest {
            openid: "ralph.id.fedoraproject.org".into(),
            context: "webhook".into(),
            address: url.clone(),
            notifications: vec![note(&url, 2), note(&url, 3)],
        })
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || sink
        .requests()
        .len()
        == 2));
    assert!(wait_until(Duration::from_secs(5), || deliverer
        .counters()
        .sent
        == 2));
    let requests = sink.requests();
    let single = requests
        .iter()
        .map(|r| r.json())
        .find(|j| j.get("msg_id").is_some())
        .expect("the single notification");
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(
        single,
        json!({
            "openid": "ralph.id.fedoraproject.org",
            "context": "webhook",
            "filter": "Events referring to my username",
            "filter_id": 3,
            "msg_id": "2026-msg-1",
            "topic": "org.fedoraproject.prod.buildsys.build.state.change",
            "subtitle": "ralph's eclipse-ptp-1.0-1 completed",
            "link": "http://koji.fedoraproject.org/koji/buildinfo?buildID=1",
            "message": {"owner": "ralph", "name": "eclipse-ptp", "new": 1, "build_id": 1},
        })
    );
    let digest = requests
        .iter()
        .map(|r| r.json())
        .find(|j| j.get("notifications").is_some())
        .expect("the digest");
    assert_eq!(digest["openid"], "ralph.id.fedoraproject.org");
    assert_eq!(digest["context"], "webhook");
    let ids: Vec<&str> = digest["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["msg_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["2026-msg-2", "2026-msg-3"]);
    assert_eq!(deliverer.pending_count(), 0);
    let counters = deliverer.counters();
    assert_eq!((counters.failed_attempts, counters.dead_lettered), (0, 0));
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains(r#"fedhub_fmn_deliveries_total{context="webhook",outcome="sent"} 2"#),
        "{text}"
    );
    assert!(text.contains("fedhub_fmn_deliveries_pending 0"), "{text}");
    assert!(
        text.contains("fedhub_fmn_delivery_seconds_count{context=\"webhook\"} 2"),
        "{text}"
    );
    deliverer.shutdown();
}

#[test]
fn other_contexts_and_empty_digests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let deliverer = start(&sqlite(&dir), config());
    let mut irc = note("nick", 1);
    irc.context = "irc".into();
    let err = deliverer.submit(Outgoing::Single(irc)).unwrap_err();
    assert!(err.to_string().contains("\"irc\""), "{err}");
    let err = deliverer
        .submit(Outgoing::Digest {
            openid: "o".into(),
            context: "webhook".into(),
            address: "http://127.0.0.1:1/".into(),
            notifications: vec![],
        })
        .unwrap_err();
    assert!(err.to_string().contains("no notification"), "{err}");
    assert_eq!(deliverer.pending_count(), 0);
}

#[test]
fn server_errors_are_retried_with_backoff_then_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sink = HttpSink::scripted(&[500, 503, 200], Duration::ZERO);
    let url = sink.url("/flaky");
    let deliverer = start(&sqlite(&dir), config());
    deliverer.submit(Outgoing::Single(note(&url, 1))).unwrap();
    assert!(wait_until(Duration::from_secs(10), || deliverer
        .counters()
        .sent
        == 1));
    let requests = sink.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 503, 200]
    );
    // 100 ms, then 200 ms (less at most 10 % jitter).
    let first = requests[1].at - requests[0].at;
    let second = requests[2].at - requests[1].at;
    assert!(first >= Duration::from_millis(90), "{first:?}");
    assert!(second >= Duration::from_millis(180), "{second:?}");
    let counters = deliverer.counters();
    assert_eq!(counters.failed_attempts, 2);
    assert_eq!(counters.dead_lettered, 0);
    assert_eq!(deliverer.pending_count(), 0);
    assert!(deliverer.dead_letters(10).unwrap().is_empty());
}

#[test]
fn an_unreachable_url_is_dead_lettered_with_its_error_and_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let port = fedhub_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}/gone");
    let deliverer = start(
        &sqlite(&dir),
        DeliveryConfig {
            max_attempts: 3,
            retry_initial_ms: 20,
            ..config()
        },
    );
    deliverer.submit(Outgoing::Single(note(&url, 1))).unwrap();
    deliverer
        .submit(Outgoing::Single(note("ftp://example.org/hook", 2)))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || deliverer
        .counters()
        .dead_lettered
        == 2));
    let dead = deliverer.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 2);
    let gone = dead.iter().find(|d| d.address == url).unwrap();
    assert_eq!(gone.attempts, 3);
    assert!(gone.last_error.contains(&url), "{}", gone.last_error);
    assert_eq!(gone.context, "webhook");
    assert_eq!(gone.openid, "ralph.id.fedoraproject.org");
    assert_eq!(gone.msg_ids, ["2026-msg-1"]);
    assert!(gone.summary.contains("2026-msg-1"), "{}", gone.summary);
    assert!(!gone.created_on.is_empty());
    // Not http(s): dead at the first attempt, saying why.
    let ftp = dead.iter().find(|d| d.address.starts_with("ftp")).unwrap();
    assert_eq!(ftp.attempts, 1);
    assert!(
        ftp.last_error.contains("not an http:// or https:// URL"),
        "{}",
        ftp.last_error
    );
    let counters = deliverer.counters();
    assert_eq!(counters.failed_attempts, 4);
    assert_eq!((counters.pending, counters.dead), (0, 2));

    // Retried: pending again with attempts reset, and dead again after three more.
    assert!(!deliverer.retry_dead(987_654).unwrap());
    assert!(deliverer.retry_dead(gone.id).unwrap());
    assert!(wait_until(Duration::from_secs(10), || deliverer
        .counters()
        .dead_lettered
        == 3));
    let again = deliverer.dead_letters(10).unwrap();
    let gone = again.iter().find(|d| d.address == url).unwrap();
    assert_eq!(gone.attempts, 3);
    assert_eq!(deliverer.counters().failed_attempts, 7);
}

#[test]
fn a_slow_webhook_does_not_hold_another_one() {
    let dir = tempfile::tempdir().unwrap();
    let slow = HttpSink::scripted(&[200], Duration::from_secs(4));
    let fast = HttpSink::start();
    let deliverer = start(
        &sqlite(&dir),
        DeliveryConfig {
            webhook_timeout_ms: 1500,
            retry_initial_ms: 60_000,
            retry_max_ms: 60_000,
            ..config()
        },
    );
    for i in 0..3 {
        deliverer
            .submit(Outgoing::Single(note(&slow.url("/slow"), i)))
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(5), || !slow
        .requests()
        .is_empty()));
    let started = Instant::now();
    for i in 10..15 {
        deliverer
            .submit(Outgoing::Single(note(&fast.url("/fast"), i)))
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || fast
        .requests()
        .len()
        == 5));
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1200),
        "the fast webhook waited {took:?}"
    );
    // The slow one timed out: a failed attempt naming the URL, retried later.
    assert!(wait_until(Duration::from_secs(5), || deliverer
        .counters()
        .failed_attempts
        >= 1));
    assert!(wait_until(Duration::from_secs(5), || deliverer
        .counters()
        .sent
        == 5));
}

/// Deliveries pending when a deliverer stops are sent by the next one on
/// the same database; nothing submitted before the stop is lost.
fn pending_deliveries_survive_a_restart(url: &DatabaseUrl) {
    let sink = HttpSink::scripted(&[500, 500, 500, 200], Duration::ZERO);
    let hook = sink.url("/restart");
    let first = start(
        url,
        DeliveryConfig {
            retry_initial_ms: 1500,
            retry_max_ms: 1500,
            ..config()
        },
    );
    for i in 0..3 {
        first.submit(Outgoing::Single(note(&hook, i))).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || first
        .counters()
        .failed_attempts
        == 3));
    assert_eq!(first.pending_count(), 3);
    first.shutdown();

    let second = start(url, config());
    assert_eq!(second.pending_count(), 3, "the pending rows are read back");
    assert!(wait_until(Duration::from_secs(10), || second
        .counters()
        .sent
        == 3));
    let delivered: std::collections::BTreeSet<String> = sink
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json()["msg_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(delivered.len(), 3);
    assert_eq!(second.pending_count(), 0);

    // Submitted and stopped at once: each item is sent, or stored and sent
    // by the next deliverer.
    for i in 100..140 {
        second.submit(Outgoing::Single(note(&hook, i))).unwrap();
    }
    let sent_before = second.counters().sent;
    second.shutdown();
    let third = start(url, config());
    let left = third.pending_count();
    assert!(wait_until(Duration::from_secs(10), || third
        .counters()
        .sent
        == left));
    let ids: std::collections::BTreeSet<String> = sink
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.json()["msg_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        43,
        "every submitted notification arrived ({sent_before} before the stop)"
    );
    third.shutdown();
}

#[test]
fn pending_deliveries_survive_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    pending_deliveries_survive_a_restart(&sqlite(&dir));
}

#[test]
fn pending_deliveries_survive_a_restart_on_postgres() {
    let cluster = fedhub_testkit::PgCluster::start();
    cluster.create_database("fmn");
    let url = DatabaseUrl::parse(&cluster.url_for("fmn")).unwrap();
    pending_deliveries_survive_a_restart(&url);
}
