//! The moksha-compatible monitoring socket, read by a real ZeroMQ SUB.

use std::time::{Duration, Instant};

use fedhub::{HubBuilder, NullConsumer};
use fedhub_testkit::*;
use serde_json::{json, Value};

fn subscribe(endpoint: &str) -> (zmq::Context, zmq::Socket) {
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.set_rcvtimeo(5000).unwrap();
    sub.connect(endpoint).unwrap();
    (context, sub)
}

#[test]
fn per_window_documents_add_up_to_the_totals() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.monitoring.socket = "tcp://127.0.0.1:*".into();
    config.monitoring.interval_secs = 0.2;
    let topics = json!([
        "org.fedoraproject.dev.test.*",
        "org.fedoraproject.dev.other"
    ]);
    let hub = start_with_null_consumer(
        config,
        &[
            ("sleep_ms", json!(2)),
            ("fail_every", json!(10)),
            ("topics", topics),
        ],
    );
    let (_context, sub) = subscribe(hub.monitoring_endpoint().unwrap());
    // The first document proves the subscription is in place before counting.
    let first: Value = serde_json::from_slice(&sub.recv_bytes(0).unwrap()).unwrap();
    assert_eq!(
        first["consumers"][0]["topic"],
        json!([
            "org.fedoraproject.dev.test.*",
            "org.fedoraproject.dev.other"
        ])
    );
    bus.wait_subscribed();
    for i in 1..=300 {
        bus.send("x", i, json!({}));
    }
    let (mut sum_in, mut sum_out, mut sum_exceptions, mut sum_times) = (0u64, 0u64, 0u64, 0u64);
    let mut max_backlog = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sum_out < 300 && Instant::now() < deadline {
        let frame = sub.recv_bytes(0).expect("a document every 0.2 s");
        let doc: Value = serde_json::from_slice(&frame).unwrap();
        let c = &doc["consumers"][0];
        assert_eq!(c["name"], "NullConsumer");
        assert_eq!(c["initialized"], true);
        sum_in += c["headcount_in"].as_u64().unwrap();
        sum_out += c["headcount_out"].as_u64().unwrap();
        sum_exceptions += c["exceptions"].as_u64().unwrap();
        sum_times += c["times"].as_array().unwrap().len() as u64;
        max_backlog = max_backlog.max(c["backlog"].as_u64().unwrap());
        let producer = &doc["producers"][0];
        assert_eq!(producer["name"], "MonitoringProducer");
        assert!(producer["last_ran"].as_f64().unwrap() > 1.7e9);
    }
    assert_eq!(
        (sum_in, sum_out, sum_exceptions, sum_times),
        (300, 300, 30, 300)
    );
    assert!(max_backlog > 0, "a 2 ms consumer shows a backlog");
    hub.shutdown();
}

#[test]
fn an_ipc_socket_gets_its_mode_and_is_removed_at_shutdown() {
    use std::os::unix::fs::PermissionsExt;
    let bus = TestBus::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("monitoring-fedmsg-hub.socket");
    let mut config = config(&bus);
    config.monitoring.socket = format!("ipc://{}", path.display());
    config.monitoring.socket_mode = "770".into();
    config.monitoring.interval_secs = 0.1;
    let hub = start_with_null_consumer(config, &[]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o770);
    // Fedora's scripts connect with four slashes: ipc:////var/run/...
    let (_context, sub) = subscribe(&format!("ipc:///{}", path.display()));
    let doc: Value = serde_json::from_slice(&sub.recv_bytes(0).unwrap()).unwrap();
    assert_eq!(doc["consumers"][0]["backlog"], 0);
    hub.shutdown();
    assert!(!path.exists());
}

#[test]
fn a_busy_monitoring_address_is_a_clear_startup_error() {
    let bus = TestBus::new();
    let context = zmq::Context::new();
    let squatter = context.socket(zmq::PUB).unwrap();
    squatter.bind("tcp://127.0.0.1:*").unwrap();
    let taken = squatter.get_last_endpoint().unwrap().unwrap();
    let mut config = config(&bus);
    config.monitoring.socket = taken.clone();
    let err = HubBuilder::new(config)
        .consumer(NullConsumer::factory())
        .start()
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!("[monitoring] socket = \"{taken}\": cannot bind: Address already in use"),
        "names the setting, the address and the cause, once"
    );
}
