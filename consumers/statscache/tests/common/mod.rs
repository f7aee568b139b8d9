//! Shared by the integration tests: a corpus of Fedora-like messages, a
//! hub running StatsConsumer on a real ZeroMQ bus, and an HTTP client that
//! keeps headers.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use fedhub::{ConsumerFactory, HubBuilder, RunningHub};
use fedhub_testkit::{section, TestBus};
use serde_json::{json, Value};

/// A fixed hour boundary, so buckets are predictable: 2023-11-14 22:00 UTC.
pub const T0: f64 = 1_700_000_000.0 - 800.0;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Sent {
    pub topic: String,
    pub msg_id: String,
    pub timestamp: Option<f64>,
    pub msg: Value,
}

impl Sent {
    pub fn body(&self, i: usize) -> String {
        let mut body = json!({
            "topic": self.topic, "msg": self.msg, "msg_id": self.msg_id, "i": i, "username": "apache",
        });
        if let Some(t) = self.timestamp {
            body["timestamp"] = json!(t);
        }
        fedhub::to_canonical_string(&body)
    }

    pub fn category(&self) -> &str {
        self.topic.split('.').nth(3).unwrap()
    }
}

const USERS: [&str; 3] = ["ralph", "pingou", "kevin"];
const PACKAGES: [&str; 4] = ["kernel", "python3", "firefox", "bash"];

/// `n` messages, `step` seconds apart from `start`, of nine kinds: builds,
/// badges, pushes, update syncs (two repos), composes, AMIs, live CDs, and
/// one AMI message lacking its image name.
pub fn corpus(n: usize, start: f64, step: f64, tag: &str) -> Vec<Sent> {
    (0..n)
        .map(|k| {
            let user = USERS[k % USERS.len()];
            let package = PACKAGES[k % PACKAGES.len()];
            let (suffix, msg) = match k % 9 {
                0 => ("buildsys.build.state.change", json!({"owner": user, "name": package, "version": "1", "release": "1.fc40", "new": 1, "build_id": k, "instance": "primary"})),
                1 => ("fedbadges.badge.award", json!({"user": {"username": user}, "badge": {"name": format!("Badge {k}")}})),
                2 => ("git.receive", json!({"commit": {"username": user, "repo": package, "namespace": "rpms", "branch": "rawhide", "rev": format!("{k:040}"), "summary": "x"}})),
                3 => ("bodhi.updates.fedora.sync", json!({"release": "f40", "repo": if k.is_multiple_of(2) { "updates" } else { "updates-testing" }})),
                4 => ("compose.rawhide.mash.start", json!({})),
                5 => ("compose.rawhide.mash.complete", json!({"arch": "arm"})),
                6 => ("fedimg.image.upload", json!({"status": "completed", "image_name": format!("Fedora-Cloud-Base-rawhide-2015{k:04}.x86_64"), "destination": "us-east-1", "extra": {"id": format!("ami-{k}")}})),
                7 => ("buildsys.task.state.change", json!({"owner": "masher", "method": "livecd", "srpm": "fedora-live-workstation.x86_64", "id": 1000 + k, "new": "CLOSED"})),
                _ => ("fedimg.image.test", json!({"status": "completed", "destination": "eu-west-1"})),
            };
            Sent {
                topic: format!("org.fedoraproject.prod.{suffix}"),
                msg_id: format!("2023-{tag}-0000-4000-8000-{k:012}"),
                timestamp: Some(start + step * k as f64),
                msg,
            }
        })
        .collect()
}

pub fn publish(bus: &TestBus, messages: &[Sent]) {
    for (i, m) in messages.iter().enumerate() {
        let body = m.body(i);
        bus.send_frames(&[m.topic.as_bytes(), body.as_bytes()]);
    }
}

/// Starts a hub with `factories` and the given sections.
pub fn start_hub(
    sections: &[(&str, Vec<(&str, Value)>)],
    factories: Vec<ConsumerFactory>,
) -> (RunningHub, TestBus, SocketAddr) {
    let bus = TestBus::new();
    let mut config = fedhub_testkit::config(&bus);
    config.hub.shutdown_grace_secs = 5;
    for (name, pairs) in sections {
        let mut pairs = pairs.clone();
        pairs.push(("enabled", json!(true)));
        config.consumers.insert(name.to_string(), section(&pairs));
    }
    let hub = HubBuilder::new(config)
        .consumers(factories)
        .start()
        .unwrap();
    bus.wait_subscribed();
    let addr = hub.http_addr().expect("HTTP server");
    (hub, bus, addr)
}

/// A response: status, headers (lowercase names), body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Response {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n{accept}\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// The value of one series in /metrics.
pub fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let r = get(addr, "/metrics", None);
    r.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

/// Sum of `volume` over every row of `ident` (every page).
pub fn total_volume(addr: SocketAddr, ident: &str, extra: &str) -> i64 {
    all_rows(addr, ident, extra)
        .iter()
        .map(|r| r["volume"].as_i64().unwrap())
        .sum()
}

/// Every row of `ident`, following `Link: rel="next"`.
pub fn all_rows(addr: SocketAddr, ident: &str, extra: &str) -> Vec<Value> {
    let stop = if extra.contains("stop=") {
        ""
    } else {
        "&stop=9999999999"
    };
    let mut path = format!("/statscache/api/{ident}?rows_per_page=100{stop}{extra}");
    let mut rows = Vec::new();
    loop {
        let r = get(addr, &path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        rows.extend(r.json().as_array().unwrap().iter().cloned());
        let next = r.header("link").and_then(|l| {
            l.split(", ")
                .find(|p| p.ends_with("rel=\"next\""))
                .map(|p| p[1..p.find('>').unwrap()].to_string())
        });
        match next {
            Some(n) => path = n,
            None => return rows,
        }
    }
}

/// Bucket end of `t` for a window of `secs` (the test's own arithmetic).
pub fn bucket(t: f64, secs: i64) -> i64 {
    ((t / secs as f64).floor() as i64 + 1) * secs
}
