//! Matches delivered end to end: a user's webhook preference receives each
//! match as an HTTP POST on a real local server; with `batch_count` the
//! matches wait in FMN's `queued_messages` and go out as one digest, sent by
//! the digest producer. A failing webhook is retried, then dead-lettered and
//! listed by the API.

mod common;

use std::time::Duration;

use common::{api, build, send, TOKEN};
use fedhub::HubBuilder;
use fedhub_testkit::{wait_until, HttpSink, TestBus};
use serde_json::json;

const RALPH: &str = "ralph.id.fedoraproject.org";

#[test]
fn webhook_deliveries_digests_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("fmn.sqlite");
    let ownership = common::ownership_file(dir.path());
    let sink = HttpSink::start();
    let bus = TestBus::new();
    let config = common::config(
        &bus,
        database.to_str().unwrap(),
        &ownership,
        &[(
            "delivery",
            json!({"max_attempts": 2, "retry_initial_ms": 50, "retry_max_ms": 100}),
        )],
    );
    let hub = HubBuilder::new(config)
        .consumer(fedhub_notifications::factory())
        .start()
        .unwrap();
    let addr = hub.http_addr().unwrap();
    bus.wait_subscribed();
    let user = json!({"openid": RALPH, "webhook": sink.url("/ralph")});
    assert_eq!(api(addr, "POST", "/users", Some(TOKEN), Some(user)).0, 200);
    let filter = json!({"name": "kernel", "rules": [{"code_path": "fmn.rules:package_filter", "arguments": {"package": "kernel"}}]});
    let (status, body) = api(
        addr,
        "POST",
        &format!("/users/{RALPH}/webhook/filters"),
        Some(TOKEN),
        Some(filter),
    );
    assert_eq!(status, 200, "{body}");

    // One match, one POST.
    send(
        &bus,
        "buildsys.build.state.change",
        "w1",
        build("kevin", "kernel", 1),
    );
    assert!(wait_until(Duration::from_secs(10), || sink
        .requests_to("/ralph")
        .len()
        == 1));
    let posted = sink.requests_to("/ralph")[0].json();
    assert_eq!(posted["msg_id"], "w1");
    assert_eq!(posted["filter"], "kernel");
    assert_eq!(posted["openid"], RALPH);

    // A digest of three once three are queued.
    let (status, body) = api(
        addr,
        "PATCH",
        &format!("/users/{RALPH}/webhook"),
        Some(TOKEN),
        Some(json!({"batch_count": 3})),
    );
    assert_eq!(status, 200, "{body}");
    for i in 2..=4 {
        send(
            &bus,
            "buildsys.build.state.change",
            &format!("w{i}"),
            build("kevin", "kernel", 1),
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || sink.requests_to("/ralph").len()
            == 2),
        "{:?}",
        sink.requests()
    );
    let digest = sink.requests_to("/ralph")[1].json();
    let ids: Vec<&str> = digest["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["msg_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["w2", "w3", "w4"], "{digest}");

    // A webhook that is gone: retried, dead-lettered, listed.
    let (status, body) = api(
        addr,
        "PATCH",
        &format!("/users/{RALPH}/webhook"),
        Some(TOKEN),
        Some(json!({"batch_count": null, "detail_values": ["http://127.0.0.1:9/gone"]})),
    );
    assert_eq!(status, 200, "{body}");
    send(
        &bus,
        "buildsys.build.state.change",
        "w5",
        build("kevin", "kernel", 1),
    );
    assert!(wait_until(Duration::from_secs(15), || {
        let (_, dead) = api(addr, "GET", "/deliveries/dead", None, None);
        dead.as_array().is_some_and(|d| !d.is_empty())
    }));
    let (_, dead) = api(addr, "GET", "/deliveries/dead", None, None);
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:9"),
        "{dead}"
    );
    assert_eq!(dead[0]["msg_ids"], json!(["w5"]));
    let id = dead[0]["id"].as_i64().unwrap();
    assert_eq!(
        api(addr, "POST", &format!("/deliveries/{id}/retry"), None, None).0,
        401
    );
    let (status, body) = api(
        addr,
        "POST",
        &format!("/deliveries/{id}/retry"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = api(addr, "POST", "/deliveries/99999/retry", Some(TOKEN), None);
    assert_eq!(status, 404, "{body}");
    hub.shutdown();
}
