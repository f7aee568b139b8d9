//! The real Python monitoring tools read fedhub's monitoring socket unchanged:
//! `fedmsg-check` (fedmsg 1.1.7) and `moksha-monitor-exporter` (PyPI).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fedhub::RunningHub;
use fedhub_testkit::*;
use serde_json::json;

fn hub_with_monitoring() -> (TestBus, RunningHub) {
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.monitoring.socket = "tcp://127.0.0.1:*".into();
    config.monitoring.interval_secs = 0.5;
    let hub = start_with_null_consumer(config, &[]);
    bus.wait_subscribed();
    (bus, hub)
}

/// Runs `fedmsg-check` with a fedmsg config pointing at `endpoint`.
fn fedmsg_check(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fedmsg.d")).unwrap();
    std::fs::write(
        dir.path().join("fedmsg.d/monitoring.py"),
        format!("config = {{'endpoints': {{}}, 'moksha.monitoring.socket': '{endpoint}'}}\n"),
    )
    .unwrap();
    let output = python_tool("fedmsg-check", dir.path())
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn fedmsg_check_sees_consumers_and_producers() {
    let (bus, hub) = hub_with_monitoring();
    bus.send("x", 1, json!({}));
    let endpoint = hub.monitoring_endpoint().unwrap().to_string();
    let (code, stdout, stderr) = fedmsg_check(
        &endpoint,
        &[
            "--timeout",
            "5",
            "-c",
            "NullConsumer",
            "-p",
            "MonitoringProducer",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("All consumers and producers are active!\n"),
        "{stdout}"
    );
    let document: serde_json::Value =
        serde_json::from_str(stdout.split_once('\n').unwrap().1).unwrap();
    assert_eq!(document["consumers"][0]["name"], "NullConsumer");
    assert_eq!(document["consumers"][0]["initialized"], true);
    assert_eq!(document["producers"][0]["name"], "MonitoringProducer");

    let (code, stdout, stderr) =
        fedmsg_check(&endpoint, &["--timeout", "5", "-c", "NoSuchConsumer"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("\"NoSuchConsumer\" is not active!"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Error: Some consumers and/or producers are missing!"),
        "{stderr}"
    );
    hub.shutdown();

    // Nothing listening any more: fedmsg-check's own timeout message.
    let (code, _, stderr) = fedmsg_check(&endpoint, &["--timeout", "1"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "Error: Failed to receive message from the monitoring endpoint ({endpoint}) in 1 seconds."
        )),
        "{stderr}"
    );
}

#[test]
fn moksha_monitor_exporter_turns_fedhub_into_prometheus_metrics() {
    let (bus, hub) = hub_with_monitoring();
    for i in 0..5 {
        bus.send("x", i, json!({}));
    }
    let endpoint = hub.monitoring_endpoint().unwrap().to_string();
    let mon_port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let port = free_port();
    // The exporter is a Flask app; serve it with Flask's own server.
    let mut exporter = Command::new(python_env().join("bin/python"))
        .args([
            "-c",
            &format!(
                "from moksha_monitor_exporter.moksha_monitor_exporter import app; app.run(host='127.0.0.1', port={port})"
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    let mut body = String::new();
    if up {
        // The first request for a target waits ~5 s for a document; ask until it has one.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            body = http_get_slow(addr, &format!("/metrics?target=127.0.0.1&port={mon_port}"));
            if body.contains("moksha_monitor_exporter_consumers_backlog{") {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let _ = exporter.kill();
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        let _ = exporter.stderr.take().unwrap().read_to_string(&mut s);
        s
    };
    let _ = exporter.wait();
    hub.shutdown();
    assert!(up, "the exporter did not start: {stderr}");
    assert!(
        body.contains(r#"moksha_monitor_exporter_consumers_backlog{module="fedhub.consumer",name="NullConsumer",topic="*"} 0.0"#),
        "{body}\n{stderr}"
    );
    assert!(body.contains("moksha_monitor_exporter_up 1.0"), "{body}");
    assert!(body.contains(r#"moksha_monitor_exporter_producers_last_ran{module="fedhub.monitoring",name="MonitoringProducer"}"#), "{body}");
}

/// Like `http_get`, with a read timeout long enough for the exporter's first wait.
fn http_get_slow(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn a_consumers_producer_is_on_the_monitoring_socket_and_fedmsg_check_sees_it() {
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.monitoring.socket = "tcp://127.0.0.1:*".into();
    config.monitoring.interval_secs = 0.5;
    let hub = fedhub::HubBuilder::new(config)
        .consumer(polling_consumer(
            "Poller",
            "DigestProducer",
            "fmn.producers",
            Duration::from_millis(200),
        ))
        .start()
        .unwrap();
    bus.wait_subscribed();
    let endpoint = hub.monitoring_endpoint().unwrap().to_string();

    // A real SUB on the monitoring socket: documents until the producer has run.
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.set_rcvtimeo(5000).unwrap();
    sub.connect(&endpoint).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (raw, document) = loop {
        assert!(Instant::now() < deadline, "the producer never ran");
        let frame = sub.recv_bytes(0).expect("a document every 0.5 s");
        let raw = String::from_utf8(frame).unwrap();
        let document: serde_json::Value = serde_json::from_str(&raw).unwrap();
        if document["producers"][0]["last_ran"].is_f64() {
            break (raw, document);
        }
    };
    let producers = document["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 2, "{raw}");
    let producer = &producers[0];
    assert!(
        raw.contains(r#"{"name": "DigestProducer", "module": "fmn.producers", "initialized": true, "exceptions": 0, "frequency": 0.2, "now": false, "last_ran": "#),
        "moksha's key order and separators: {raw}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last_ran = producer["last_ran"].as_f64().unwrap();
    assert!(
        (now - 5.0..=now + 0.1).contains(&last_ran),
        "last_ran {last_ran} now {now}"
    );
    assert_eq!(producer["frequency"], 0.2);
    assert_eq!(producers[1]["name"], "MonitoringProducer");

    // /state and /metrics show it too.
    let (status, body) = http_get(hub.http_addr().unwrap(), "/state");
    assert_eq!(status, 200);
    let state: fedhub_probe::state::StateView = serde_json::from_str(&body).unwrap();
    let entry = state.producer("DigestProducer").expect("in /state");
    assert_eq!(entry.module.as_deref(), Some("fmn.producers"));
    assert_eq!(entry.frequency_secs, Some(0.2));
    assert_eq!(entry.exceptions, Some(0));
    assert!(entry.last_ran.unwrap() >= last_ran, "{body}");
    let (_, metrics) = http_get(hub.http_addr().unwrap(), "/metrics");
    assert!(
        metrics.contains("fedhub_producer_last_ran_seconds{producer=\"DigestProducer\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fedhub_producer_exceptions{producer=\"DigestProducer\"} 0"),
        "{metrics}"
    );

    // The real fedmsg-check finds it active.
    let (code, stdout, stderr) = fedmsg_check(
        &endpoint,
        &[
            "--timeout",
            "5",
            "-c",
            "Poller",
            "--producer",
            "DigestProducer",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("All consumers and producers are active!\n"),
        "{stdout}"
    );
    hub.shutdown();
}
