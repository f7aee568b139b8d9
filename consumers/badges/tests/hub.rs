//! `FedoraBadgesConsumer` in a live hub beside the history store (`Nommer`),
//! with `after = ["Nommer"]`: messages over real ZeroMQ on 127.0.0.1, the
//! history and Tahrir's tables in SQLite files, the award published on the
//! hub's PUB socket, the API served under `/badges`.

use std::time::Duration;

use fedhub::HubBuilder;
use fedhub_testkit::{http_get, section, wait_until, TestBus};
use serde_json::{json, Value};

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn send_build(bus: &TestBus, i: u64, owner: &str) {
    send_build_at(bus, i, owner, now());
}

fn send_build_at(bus: &TestBus, i: u64, owner: &str, timestamp: f64) {
    let topic = "org.fedoraproject.prod.buildsys.build.state.change";
    let body = fedhub::to_canonical_string(&json!({
        "topic": topic,
        "msg": {"owner": owner, "name": "kernel", "version": "6.1", "release": "1.fc41", "new": 1, "build_id": i, "instance": "primary"},
        "msg_id": format!("2026-hub-{i}"),
        "timestamp": timestamp,
        "i": i,
        "username": "apache",
    }));
    bus.send_frames(&[topic.as_bytes(), body.as_bytes()]);
}

#[test]
fn a_build_on_the_bus_earns_a_badge_counted_with_itself_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    // At least one build: true at the first build only when the triggering
    // message is counted, i.e. the history store committed it before the
    // awarder looked (the award names the message that earned it).
    std::fs::write(
        rules.join("first-build.yml"),
        "name: First Build\ndescription: d\ncreator: c\ndiscussion: https://example.org/d\nimage_url: https://example.org/i.png\nissuer_id: fedora-project\ntrigger:\n  topic: buildsys.build.state.change\ncriteria:\n  datanommer:\n    filter:\n      topics: [\"%(topic)s\"]\n      users: [\"%(msg.owner)s\"]\n    operation: count\n    condition:\n      greater than or equal to: 1\nrecipient: \"%(msg.owner)s\"\n",
    )
    .unwrap();
    std::fs::write(rules.join("broken.yml"), "name: Broken\ncolour: red\n").unwrap();
    let history = dir.path().join("history.sqlite");
    let bus = TestBus::new();
    let mut config = fedhub_testkit::config(&bus);
    config.publish.bind = vec!["tcp://127.0.0.1:*".into()];
    config.hub.environment = "prod".into();
    config.consumers.insert(
        "Nommer".into(),
        section(&[
            ("enabled", json!(true)),
            ("database", json!(history)),
            ("batch_latency_ms", json!(200)),
        ]),
    );
    config.consumers.insert(
        "FedoraBadgesConsumer".into(),
        section(&[
            ("enabled", json!(true)),
            ("after", json!(["Nommer"])),
            ("rules_directory", json!(rules)),
            ("database", json!(dir.path().join("badges.sqlite"))),
            ("history_database", json!(history)),
            ("rank_interval_secs", json!(0.2)),
        ]),
    );
    let hub = HubBuilder::new(config)
        .consumer(fedhub_history::factory())
        .consumer(fedhub_badges::factory())
        .start()
        .unwrap();
    let addr = hub.http_addr().unwrap();
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"org.fedoraproject.prod.fedbadges")
        .unwrap();
    sub.set_rcvtimeo(10_000).unwrap();
    sub.connect(&hub.publish_endpoints()[0]).unwrap();
    bus.wait_subscribed();
    // Our SUB is connected once a probe published by the hub arrives.
    sub.set_rcvtimeo(200).unwrap();
    let mut joined = false;
    for _ in 0..100 {
        hub.publisher()
            .publish("fedbadges.probe", json!({}))
            .unwrap();
        if sub.recv_multipart(0).is_ok() {
            joined = true;
            break;
        }
    }
    assert!(joined, "the hub's PUB socket reached our SUB");
    while sub.recv_multipart(0).is_ok() {}
    sub.set_rcvtimeo(10_000).unwrap();
    for i in 1..=3 {
        send_build(&bus, i, "ralph");
    }
    send_build(&bus, 4, "kevin");
    let mut awards: Vec<Value> = Vec::new();
    let mut advances: Vec<Value> = Vec::new();
    while awards.len() < 2 || advances.len() < 2 {
        let frames = sub.recv_multipart(0).unwrap_or_else(|e| {
            panic!(
                "award messages on the bus: {e}; rules: {}; state: {}",
                http_get(addr, "/badges/rules").1,
                http_get(addr, "/state").1
            )
        });
        let body: Value = serde_json::from_slice(&frames[1]).unwrap();
        match &frames[0][..] {
            b"org.fedoraproject.prod.fedbadges.badge.award" => awards.push(body["msg"].clone()),
            // RankProducer's pass after the awards: both now share rank 1.
            b"org.fedoraproject.prod.fedbadges.person.rank.advance" => {
                advances.push(body["msg"].clone())
            }
            _ => {}
        }
    }
    assert!(
        advances
            .iter()
            .all(|a| a["person"]["rank"] == 1 && a["old_rank"].is_null()),
        "{advances:?}"
    );
    let mut users: Vec<&str> = awards
        .iter()
        .map(|a| a["user"]["username"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, vec!["kevin", "ralph"]);
    assert!(awards
        .iter()
        .all(|a| a["badge"]["badge_id"] == "first-build"));

    let (status, body) = http_get(addr, "/badges/user/ralph");
    assert_eq!(status, 200, "{body}");
    let person: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(person["count"], 1);
    assert_eq!(person["badges"][0]["id"], "first-build");
    assert!(
        person["badges"][0]["issued_for"]
            .as_str()
            .unwrap()
            .contains("id=2026-hub-1"),
        "the first build earned it: {person}"
    );
    let (status, body) = http_get(addr, "/badges/badge/first-build");
    assert_eq!(status, 200);
    let badge: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(badge["count"], 2);
    let (status, _) = http_get(addr, "/badges/user/nobody");
    assert_eq!(status, 404);
    let (status, body) = http_get(addr, "/badges/leaderboard");
    assert_eq!(status, 200);
    let board: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(board["leaderboard"].as_array().unwrap().len(), 2, "{board}");
    let (status, body) = http_get(addr, "/badges/leaderboard?limit=0");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit=0"));
    let (status, body) = http_get(addr, "/badges/rules");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["rules"][0]["name"], "First Build");
    assert_eq!(doc["rules"][0]["triggered_total"], 4);
    let error = &doc["load_errors"][0];
    assert_eq!(error["rule"], "Broken");
    assert_eq!(error["field"], "colour");
    assert!(error["file"].as_str().unwrap().ends_with("broken.yml"));
    assert_eq!(doc["awarder"]["awards_total"], 2);
    assert!(doc["ranks"]["passes_total"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(doc["ranks"]["advances_total"], 2, "{doc}");
    // A repeated message and a two-day-old one award nothing, counted in /state.
    send_build(&bus, 1, "ralph");
    send_build_at(&bus, 5, "adamw", now() - 2.0 * 86_400.0);
    let stats = hub.stats().consumer("FedoraBadgesConsumer");
    assert!(wait_until(Duration::from_secs(10), || stats.handled() == 6
        && stats.backlog() == 0));
    let (status, body) = http_get(addr, "/state");
    assert_eq!(status, 200);
    let state: Value = serde_json::from_str(&body).unwrap();
    let entry = state["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "FedoraBadgesConsumer")
        .unwrap();
    assert_eq!(entry["counters"]["awards_total"], 2, "{entry}");
    assert_eq!(entry["counters"]["duplicates_ignored_total"], 1, "{entry}");
    assert_eq!(entry["counters"]["too_old_ignored_total"], 1, "{entry}");
    assert_eq!(entry["counters"]["rule_errors_total"], 0, "{entry}");
    let producer = state["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "RankProducer")
        .unwrap_or_else(|| panic!("RankProducer in /state: {state}"));
    assert!(producer["last_ran"].is_number(), "{producer}");
    let (_, body) = http_get(addr, "/badges/user/adamw");
    assert!(
        body.contains("error"),
        "no badge for an old message: {body}"
    );
    let report = hub.shutdown();
    assert!(report.undrained.is_empty(), "{:?}", report.undrained);
}
