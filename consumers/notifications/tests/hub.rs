//! `FMNConsumer` in a live hub: users and filters through the API over real
//! HTTP, messages over real ZeroMQ on 127.0.0.1, FMN's tables in a SQLite
//! file, notifications read from the hub's PUB socket.

mod common;

use common::{api, build, next, send, subscribe, TOKEN};
use fedhub::HubBuilder;
use fedhub_notifications::model::PreferenceUpdate;
use fedhub_notifications::store::FmnStore;
use fedhub_storage::{Database, DatabaseUrl, PoolOptions};
use fedhub_testkit::{http_get, TestBus};
use serde_json::{json, Value};

const RALPH: &str = "ralph.id.fedoraproject.org";

fn filter_named<'a>(prefs: &'a Value, context: &str, name: &str) -> &'a Value {
    prefs["preferences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["context"] == context)
        .and_then(|p| {
            p["filters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
        })
        .unwrap_or_else(|| panic!("no filter {name:?} in {context}: {prefs}"))
}

#[test]
fn users_filters_invalidation_and_oneshot_in_a_live_hub() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("fmn.sqlite");
    let ownership = common::ownership_file(dir.path());
    let bus = TestBus::new();
    let config = common::config(&bus, database.to_str().unwrap(), &ownership, &[]);
    let hub = HubBuilder::new(config)
        .consumer(fedhub_notifications::factory())
        .start()
        .unwrap();
    let addr = hub.http_addr().unwrap();
    let (_context, sub) = subscribe(&hub, "org.fedoraproject.prod.fmn");
    bus.wait_subscribed();

    // Changing endpoints need the token.
    let user = json!({"openid": RALPH, "email": "ralph@example.org"});
    assert_eq!(api(addr, "POST", "/users", None, Some(user.clone())).0, 401);
    assert_eq!(
        api(addr, "POST", "/users", Some("wrong"), Some(user.clone())).0,
        401
    );
    let (status, body) = api(addr, "POST", "/users", Some(TOKEN), Some(user));
    assert_eq!(status, 200, "{body}");
    let (status, prefs) = api(addr, "GET", &format!("/users/{RALPH}"), None, None);
    assert_eq!(status, 200, "{prefs}");
    // FMN's defaults: three filters for email and for irc.
    for context in ["email", "irc"] {
        for name in [
            "Events on packages that I own",
            "Events referring to my username",
            "Critical taskotron tasks on my packages",
        ] {
            filter_named(&prefs, context, name);
        }
    }
    let (status, cached) = api(addr, "GET", &format!("/cache/{RALPH}"), None, None);
    assert_eq!(status, 200, "{cached}");
    // irc has no nick: only the email preference can send.
    assert_eq!(
        cached["preferences"].as_array().unwrap().len(),
        1,
        "{cached}"
    );

    // Someone else builds ralph's package: "packages that I own".
    send(
        &bus,
        "buildsys.build.state.change",
        "m1",
        build("kevin", "kernel", 1),
    );
    let (topic, n) = next(&sub, "fmn.notification");
    assert_eq!(topic, "org.fedoraproject.prod.fmn.notification");
    assert_eq!(n["msg"]["recipient"], RALPH);
    assert_eq!(n["msg"]["context"], "email");
    assert_eq!(n["msg"]["filter"], "Events on packages that I own");
    assert_eq!(n["msg"]["msg_id"], "m1");
    assert!(
        n["msg"]["subtitle"].as_str().unwrap().contains("kernel"),
        "{n}"
    );
    // A build start is excluded by the defaults; ralph's own build is "my username".
    send(
        &bus,
        "buildsys.build.state.change",
        "m2",
        build("kevin", "kernel", 0),
    );
    send(
        &bus,
        "buildsys.build.state.change",
        "m3",
        build("ralph", "gcc", 1),
    );
    let (_, n) = next(&sub, "fmn.notification");
    assert_eq!(
        n["msg"]["msg_id"], "m3",
        "the excluded build start notified: {n}"
    );
    assert_eq!(n["msg"]["filter"], "Events referring to my username");

    // A change made elsewhere (another host's FMN), announced on the bus: the
    // message right after the announcement is matched against the new rules.
    let registry = prometheus::Registry::new();
    let db = Database::open(
        &DatabaseUrl::sqlite(&database),
        "test",
        &PoolOptions::default(),
        &registry,
    )
    .unwrap();
    let store = FmnStore::open(db).unwrap();
    let disable = PreferenceUpdate {
        enabled: Some(false),
        ..PreferenceUpdate::default()
    };
    store.update_preference(RALPH, "email", &disable).unwrap();
    let before = common::handled(addr);
    send(
        &bus,
        "fmn.preference.update",
        "inv1",
        json!({"openid": RALPH, "context": "email", "changed": "enabled"}),
    );
    send(
        &bus,
        "buildsys.build.state.change",
        "m4",
        build("kevin", "kernel", 1),
    );
    common::wait_handled(addr, before, 2);
    let enable = PreferenceUpdate {
        enabled: Some(true),
        ..PreferenceUpdate::default()
    };
    store.update_preference(RALPH, "email", &enable).unwrap();
    send(
        &bus,
        "fmn.preference.update",
        "inv2",
        json!({"openid": RALPH, "context": "email", "changed": "enabled"}),
    );
    send(
        &bus,
        "buildsys.build.state.change",
        "m5",
        build("kevin", "kernel", 1),
    );
    let (_, n) = next(&sub, "fmn.notification");
    assert_eq!(
        n["msg"]["msg_id"], "m5",
        "a message after the invalidation was matched against the old rules: {n}"
    );

    // A filter added through the API takes effect for the next message.
    let filter = json!({"name": "requests", "rules": [{"code_path": "fmn.rules:package_filter", "arguments": {"package": "python-requests"}}]});
    let (status, body) = api(
        addr,
        "POST",
        &format!("/users/{RALPH}/email/filters"),
        Some(TOKEN),
        Some(filter),
    );
    assert_eq!(status, 200, "{body}");
    let (_, announced) = next(&sub, "fmn.preference.update");
    assert_eq!(
        announced["msg"],
        json!({"openid": RALPH, "context": "email", "changed": "filters"})
    );
    send(
        &bus,
        "buildsys.build.state.change",
        "m6",
        build("kevin", "python-requests", 1),
    );
    let (_, n) = next(&sub, "fmn.notification");
    assert_eq!(
        (n["msg"]["msg_id"].as_str(), n["msg"]["filter"].as_str()),
        (Some("m6"), Some("requests"))
    );

    // A oneshot filter fires once, then is deactivated and announced.
    let oneshot = json!({"name": "glibc once", "oneshot": true, "rules": [{"code_path": "fmn.rules:package_filter", "arguments": {"package": "glibc"}}]});
    assert_eq!(
        api(
            addr,
            "POST",
            &format!("/users/{RALPH}/email/filters"),
            Some(TOKEN),
            Some(oneshot)
        )
        .0,
        200
    );
    send(
        &bus,
        "buildsys.build.state.change",
        "m7",
        build("kevin", "glibc", 1),
    );
    let (_, n) = next(&sub, "fmn.notification");
    assert_eq!(
        (n["msg"]["msg_id"].as_str(), n["msg"]["filter"].as_str()),
        (Some("m7"), Some("glibc once"))
    );
    let (_, fired) = next(&sub, "fmn.filter.update");
    assert_eq!(fired["msg"]["changed"], "active");
    send(
        &bus,
        "buildsys.build.state.change",
        "m8",
        build("kevin", "glibc", 1),
    );
    send(
        &bus,
        "buildsys.build.state.change",
        "m9",
        build("kevin", "kernel", 1),
    );
    let (_, n) = next(&sub, "fmn.notification");
    assert_eq!(
        n["msg"]["msg_id"], "m9",
        "the oneshot filter fired twice: {n}"
    );
    let (_, prefs) = api(addr, "GET", &format!("/users/{RALPH}"), None, None);
    assert_eq!(filter_named(&prefs, "email", "glibc once")["active"], false);

    // Bad input: refused with the input named, nothing changed.
    let filters = format!("/users/{RALPH}/email/filters");
    let refused = |method: &str, path: &str, body: Option<Value>, status: u16, needle: &str| {
        let (got, answer) = api(addr, method, path, Some(TOKEN), body);
        assert_eq!(got, status, "{method} {path}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(needle),
            "{method} {path}: {error:?} lacks {needle:?}"
        );
    };
    refused(
        "POST",
        &filters,
        Some(json!({"name": "x", "rules": [{"code_path": "fmn.rules:no_such_rule"}]})),
        400,
        "fmn.rules:no_such_rule",
    );
    refused(
        "POST",
        &filters,
        Some(
            json!({"name": "x", "rules": [{"code_path": "fmn.rules:user_filter", "arguments": {"nick": "x"}}]}),
        ),
        400,
        "unknown argument \"nick\"",
    );
    refused(
        "PATCH",
        "/users/nobody.id.fedoraproject.org/email",
        Some(json!({"enabled": true})),
        404,
        "no user \"nobody.id.fedoraproject.org\"",
    );
    refused(
        "PATCH",
        &format!("/users/{RALPH}/pager"),
        Some(json!({"enabled": true})),
        400,
        "no context \"pager\"",
    );
    refused(
        "DELETE",
        &format!("{filters}/99999"),
        None,
        404,
        "no filter 99999",
    );
    refused(
        "PATCH",
        &format!("/users/{RALPH}/email"),
        Some(json!({"enabeld": true})),
        400,
        "enabeld",
    );
    refused(
        "PATCH",
        &format!("/users/{RALPH}/email"),
        Some(json!({"batch_count": -1})),
        400,
        "batch value -1",
    );
    refused(
        "POST",
        &filters,
        Some(json!("not an object")),
        400,
        "request body",
    );
    // Invalidations naming nobody, or an unknown user, are counted.
    send(
        &bus,
        "fmn.filter.update",
        "inv3",
        json!({"context": "email"}),
    );
    send(
        &bus,
        "fmn.filter.update",
        "inv4",
        json!({"openid": "ghost.id.fedoraproject.org"}),
    );
    send(
        &bus,
        "buildsys.build.state.change",
        "m10",
        build("kevin", "kernel", 1),
    );
    let (_, n) = next(&sub, "fmn.notification");
    assert_eq!(n["msg"]["msg_id"], "m10");
    let metrics = http_get(addr, "/metrics").1;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    };
    assert_eq!(value("fedhub_fmn_invalidation_errors_total"), 2.0);
    assert!(value("fedhub_fmn_rule_cache_total{result=\"hit\"}") > 0.0);
    assert!(value("fedhub_fmn_cache_reloads_total{scope=\"user\"}") >= 4.0);
    assert!(value("fedhub_fmn_ownership_cache_total{result=\"hit\"}") > 0.0);
    // The digest producer is listed, with a recent run.
    let state: Value = serde_json::from_str(&http_get(addr, "/state").1).unwrap();
    let producers = state["producers"].as_array().unwrap();
    assert!(
        producers
            .iter()
            .any(|p| p["name"] == "DigestProducer" && p["last_ran"].is_number()),
        "{state}"
    );
    hub.shutdown();
}

#[test]
fn changing_endpoints_are_off_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let ownership = common::ownership_file(dir.path());
    let bus = TestBus::new();
    let database = dir.path().join("fmn.sqlite");
    let config = common::config(
        &bus,
        database.to_str().unwrap(),
        &ownership,
        &[("api_token", json!(""))],
    );
    let hub = HubBuilder::new(config)
        .consumer(fedhub_notifications::factory())
        .start()
        .unwrap();
    let addr = hub.http_addr().unwrap();
    let (status, body) = api(
        addr,
        "POST",
        "/users",
        Some(""),
        Some(json!({"openid": RALPH})),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("api_token"),
        "{body}"
    );
    let (status, rules) = api(addr, "GET", "/rules", None, None);
    assert_eq!(status, 200);
    assert!(rules
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["code_path"] == "fmn.rules:user_package_filter"));
    hub.shutdown();
}
