//! Helpers of the notification tests: the API over real HTTP, the hub's PUB
//! socket over real ZeroMQ, messages on the test bus.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use fedhub_testkit::TestBus;
use serde_json::{json, Value};

/// The API token the tests configure.
pub const TOKEN: &str = "s3cret-token";

/// A request to the hub's API; returns (status, JSON body).
pub fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://{addr}/notifications{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let response = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = agent.delete(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        (m, body) => {
            let mut r = match m {
                "POST" => agent.post(&url),
                "PATCH" => agent.patch(&url),
                other => panic!("method {other}"),
            };
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.header("Content-Type", "application/json")
                .send(body.unwrap_or(Value::Null).to_string())
        }
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A SUB on the hub's PUB socket, joined (a probe published by the hub arrived).
pub fn subscribe(hub: &fedhub::RunningHub, prefix: &str) -> (zmq::Context, zmq::Socket) {
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_subscribe(prefix.as_bytes()).unwrap();
    sub.set_subscribe(b"org.fedoraproject.prod.fmn.probe")
        .unwrap();
    sub.connect(&hub.publish_endpoints()[0]).unwrap();
    sub.set_rcvtimeo(200).unwrap();
    let mut joined = false;
    for _ in 0..100 {
        hub.publisher().publish("fmn.probe", json!({})).unwrap();
        if sub.recv_multipart(0).is_ok() {
            joined = true;
            break;
        }
    }
    assert!(joined, "the hub's PUB socket reached our SUB");
    while sub.recv_multipart(0).is_ok() {}
    sub.set_rcvtimeo(10_000).unwrap();
    (context, sub)
}

/// Receives the next message whose topic ends with `suffix`, as (topic, body).
pub fn next(sub: &zmq::Socket, suffix: &str) -> (String, Value) {
    loop {
        let frames = sub
            .recv_multipart(0)
            .unwrap_or_else(|e| panic!("waiting for a message ending {suffix}: {e}"));
        let topic = String::from_utf8_lossy(&frames[0]).to_string();
        if topic.ends_with(suffix) {
            return (topic, serde_json::from_slice(&frames[1]).unwrap());
        }
    }
}

/// Sends a message `org.fedoraproject.prod.<title>` on the test bus.
pub fn send(bus: &TestBus, title: &str, msg_id: &str, msg: Value) {
    let topic = format!("org.fedoraproject.prod.{title}");
    let body = fedhub::to_canonical_string(&json!({
        "topic": topic,
        "msg": msg,
        "msg_id": msg_id,
        "timestamp": 1_795_392_000u64,
        "i": 1,
        "username": "apache",
    }));
    bus.send_frames(&[topic.as_bytes(), body.as_bytes()]);
}

/// A koji build message.
pub fn build(owner: &str, package: &str, new: i64) -> Value {
    json!({"owner": owner, "name": package, "version": "1.0", "release": "1.fc41", "new": new, "build_id": 1, "instance": "primary"})
}

/// The ownership file the tests use.
pub fn ownership_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("ownership.json");
    std::fs::write(
        &path,
        json!({
            "packages": {"kernel": {"owner": ["ralph"]}, "python-requests": {"commit": ["group::python-sig"]}},
            "groups": {"python-sig": ["bob"], "packager": ["ralph", "bob"]}
        })
        .to_string(),
    )
    .unwrap();
    path
}

/// A hub config with FMNConsumer over `database`.
pub fn config(
    bus: &TestBus,
    database: &str,
    ownership: &std::path::Path,
    extra: &[(&str, Value)],
) -> fedhub::Config {
    let mut config = fedhub_testkit::config(bus);
    config.publish.bind = vec!["tcp://127.0.0.1:*".into()];
    config.hub.environment = "prod".into();
    let mut pairs = vec![
        ("enabled", json!(true)),
        ("database", json!(database)),
        ("api_token", json!(TOKEN)),
        ("ownership_file", json!(ownership)),
        ("digest_interval_secs", json!(0.2)),
    ];
    pairs.extend(extra.iter().cloned());
    config
        .consumers
        .insert("FMNConsumer".into(), fedhub_testkit::section(&pairs));
    config
}

/// Messages `FMNConsumer` handled so far, from `/state`.
pub fn handled(addr: SocketAddr) -> u64 {
    let state: Value = serde_json::from_str(&fedhub_testkit::http_get(addr, "/state").1).unwrap();
    state["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "FMNConsumer")
        .and_then(|c| c["handled_total"].as_u64())
        .unwrap_or_default()
}

/// Waits until `FMNConsumer` handled `count` messages more than `before`.
pub fn wait_handled(addr: SocketAddr, before: u64, count: u64) {
    assert!(
        fedhub_testkit::wait_until(Duration::from_secs(10), || handled(addr) >= before + count),
        "FMNConsumer handled {} of {count} messages",
        handled(addr) - before
    );
}
