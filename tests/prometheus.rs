//! `/metrics` passes the real `promtool check metrics`, and readiness tells why.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use fedhub::HubBuilder;
use fedhub_testkit::*;
use serde_json::json;

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: install the Debian package `prometheus`");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}

#[test]
fn metrics_pass_promtool_with_traffic_errors_and_drops() {
    let bus = TestBus::new();
    let config = config(&bus);
    let hub = start_with_null_consumer(
        config,
        &[
            ("fail_every", json!(3)),
            ("capacity_messages", json!(2)),
            ("when_full", json!("shed")),
            ("sleep_ms", json!(1)),
        ],
    );
    bus.wait_subscribed();
    for i in 0..50 {
        bus.send("x", i, json!({}));
    }
    bus.send_frames(&[b"garbage"]);
    let null = hub.stats().consumer("NullConsumer");
    assert!(
        wait_until(Duration::from_secs(20), || null.received() + null.dropped()
            == 50),
        "received {} dropped {} backlog {}",
        null.received(),
        null.dropped(),
        null.backlog()
    );
    assert!(wait_until(Duration::from_secs(20), || null.backlog() == 0));
    let (status, text) = http_get(hub.http_addr().unwrap(), "/metrics");
    assert_eq!(status, 200);
    let (ok, report) = promtool_check(&text);
    assert!(ok, "promtool: {report}\n{text}");
    for family in [
        "fedhub_consumer_backlog",
        "fedhub_consumer_mailbox_capacity",
        "fedhub_consumer_received_total",
        "fedhub_consumer_handled_total",
        "fedhub_consumer_exceptions_total",
        "fedhub_consumer_dropped_total",
        "fedhub_consumer_restarts_total",
        "fedhub_consumer_handling_seconds_bucket",
        "fedhub_bus_messages_received_total",
        "fedhub_bus_received_bytes_total",
        "fedhub_bus_malformed_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(family), "{family} missing");
    }
    assert!(
        text.contains("fedhub_bus_malformed_total{bus=\"test\",reason=\"missing_separator\"} 1")
    );
    hub.shutdown();
}

#[test]
fn producer_gauges_pass_promtool() {
    let bus = TestBus::new();
    let config = config(&bus);
    let hub = HubBuilder::new(config)
        .consumer(polling_consumer(
            "Poller",
            "DigestProducer",
            "fmn.producers",
            Duration::from_millis(50),
        ))
        .start()
        .unwrap();
    bus.wait_subscribed();
    let addr = hub.http_addr().unwrap();
    let mut text = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            text = http_get(addr, "/metrics").1;
            text.contains("fedhub_producer_last_ran_seconds{producer=\"DigestProducer\"} 1")
        }),
        "{text}"
    );
    assert!(text.contains("# TYPE fedhub_producer_last_ran_seconds gauge"));
    assert!(text.contains("fedhub_producer_exceptions{producer=\"DigestProducer\"} 0"));
    let (ok, report) = promtool_check(&text);
    assert!(ok, "promtool: {report}\n{text}");
    hub.shutdown();
}

#[test]
fn promtool_really_checks() {
    // The check above means something only if promtool rejects bad exposition.
    let (ok, _) = promtool_check("# TYPE bad_counter counter\nbad_counter 1\n");
    assert!(!ok, "a counter without _total must be rejected");
}

struct NeverStarts;

impl fedhub::Consumer for NeverStarts {
    fn consume(
        &mut self,
        _: &fedhub::Envelope,
        _: &mut fedhub::Context,
    ) -> Result<(), fedhub::ConsumerError> {
        Err(fedhub::ConsumerError::fatal("backend is gone"))
    }
    fn start(&mut self, _: &mut fedhub::Context) -> Result<(), fedhub::ConsumerError> {
        static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        // Starts once, then never again: after its fatal error it stays down.
        if STARTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Err(fedhub::ConsumerError::msg("backend is gone"))
        } else {
            Ok(())
        }
    }
}

#[test]
fn readiness_fails_with_the_reason_when_a_consumer_is_down() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    // Its last message can never be handled: do not wait for it at shutdown.
    config.hub.shutdown_grace_secs = 0;
    let factory =
        fedhub::ConsumerFactory::new("Flaky", |_| Ok(Box::new(NeverStarts))).enabled_by_default();
    let hub = HubBuilder::new(config).consumer(factory).start().unwrap();
    bus.wait_subscribed();
    let addr = hub.http_addr().unwrap();
    assert_eq!(http_get(addr, "/health/readyz").0, 200);
    bus.send("x", 1, json!({}));
    let flaky = hub.stats().consumer("Flaky");
    assert!(wait_until(Duration::from_secs(20), || flaky.restarts() == 1));
    let (status, body) = http_get(addr, "/health/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("consumer Flaky is not initialized"), "{body}");
    // Liveness is about the process, not the consumers.
    assert_eq!(http_get(addr, "/health/livez").0, 200);
    // The next message waits in the mailbox, visible as backlog, instead of being lost.
    bus.send("x", 2, json!({}));
    assert!(wait_until(Duration::from_secs(5), || flaky.backlog() == 1));
    assert_eq!(flaky.dropped(), 0);
    let report = hub.shutdown();
    assert_eq!(report.undrained, vec![("Flaky".to_string(), 1)]);
}

#[test]
fn the_grafana_dashboard_queries_parse_and_name_real_metrics() {
    let path = format!(
        "{}/examples/grafana/fedhub-dashboard.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$consumer", ".*")
        })
        .collect();
    assert!(exprs.len() >= 8);

    // promtool parses every query (as recording rules).
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let mut text = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        text.push_str(&format!(
            "  - record: dashboard:query{i}\n    expr: '{}'\n",
            expr.replace('\'', "''")
        ));
    }
    std::fs::write(&rules, text).unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool is missing: install the Debian package `prometheus`");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    // Every metric they name exists on a live hub.
    let bus = TestBus::new();
    let config = config(&bus);
    let hub = start_with_null_consumer(config, &[]);
    let (_, metrics) = http_get(hub.http_addr().unwrap(), "/metrics");
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("fedhub_") || word.starts_with("process_") {
                assert!(
                    metrics.contains(&format!("\n{word}")),
                    "{word} (in {expr}) is not exported"
                );
            }
        }
    }
    hub.shutdown();
}
