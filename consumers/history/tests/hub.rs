//! The `Nommer` consumer in a live hub: messages published over real ZeroMQ on
//! 127.0.0.1, stored in SQLite on disk, queried over the hub's HTTP server the
//! way datagrepper is.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fedhub::{HubBuilder, RunningHub};
use fedhub_testkit::{http_get, section, wait_until, TestBus};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(20);
const T0: f64 = 1_700_000_000.0;
const USERS: [&str; 3] = ["ralph", "pingou", "kevin"];
const PACKAGES: [&str; 5] = ["kernel", "python3", "eclipse-ptp", "firefox", "bash"];

/// One published message and what datanommer should have extracted from it.
#[derive(Debug, Clone)]
struct Sent {
    topic: String,
    msg_id: String,
    timestamp: f64,
    category: &'static str,
    user: String,
    package: Option<String>,
    msg: Value,
}

impl Sent {
    fn body(&self, i: usize) -> String {
        fedhub::to_canonical_string(&json!({
            "topic": self.topic,
            "msg": self.msg,
            "msg_id": self.msg_id,
            "timestamp": self.timestamp,
            "i": i,
            "username": "apache",
        }))
    }
}

/// `n` messages of four kinds (builds, badges, pushes, blog posts), a minute apart.
fn corpus(n: usize) -> Vec<Sent> {
    (0..n)
        .map(|k| {
            let user = USERS[k % USERS.len()].to_string();
            let package = PACKAGES[k % PACKAGES.len()].to_string();
            let (suffix, category, msg, package) = match k % 4 {
                0 => (
                    "buildsys.build.state.change",
                    "buildsys",
                    json!({"owner": user, "name": package, "version": "1.0", "release": "1.fc40",
                           "new": 1, "build_id": k, "instance": "primary"}),
                    Some(package),
                ),
                1 => (
                    "fedbadges.badge.award",
                    "fedbadges",
                    json!({"user": {"username": user}, "badge": {"name": format!("Badge {k}")}}),
                    None,
                ),
                2 => (
                    "git.receive",
                    "git",
                    json!({"commit": {"username": user, "repo": package, "namespace": "rpms",
                                      "branch": "rawhide", "rev": format!("{k:040}"),
                                      "summary": format!("change {k}")}}),
                    Some(package),
                ),
                _ => (
                    "planet.post.new",
                    "planet",
                    json!({"username": user, "post": {"title": format!("Post {k}"), "link": "https://example.org"}}),
                    None,
                ),
            };
            Sent {
                topic: format!("org.fedoraproject.prod.{suffix}"),
                msg_id: format!("2023-00000000-0000-4000-8000-{k:012}"),
                timestamp: T0 + 60.0 * k as f64,
                category,
                user,
                package,
                msg,
            }
        })
        .collect()
}

fn publish(bus: &TestBus, messages: &[Sent]) {
    for (i, m) in messages.iter().enumerate() {
        let body = m.body(i);
        bus.send_frames(&[m.topic.as_bytes(), body.as_bytes()]);
    }
}

/// A hub with only `Nommer`, storing into `database`, and its bus.
fn start_hub(database: &Path, extra: &[(&str, Value)]) -> (RunningHub, TestBus, SocketAddr) {
    let bus = TestBus::new();
    let mut config = fedhub_testkit::config(&bus);
    config.hub.shutdown_grace_secs = 2;
    let mut pairs = vec![
        ("enabled", json!(true)),
        ("database", json!(database.display().to_string())),
        ("batch_latency_ms", json!(10)),
    ];
    pairs.extend(extra.iter().cloned());
    config.consumers.insert("Nommer".into(), section(&pairs));
    let hub = HubBuilder::new(config)
        .consumer(fedhub_history::factory())
        .start()
        .unwrap();
    bus.wait_subscribed();
    let addr = hub.http_addr().expect("HTTP server");
    (hub, bus, addr)
}

fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http_get(addr, path);
    let value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, value)
}

fn message_count(addr: SocketAddr) -> u64 {
    get_json(addr, "/datagrepper/messagecount").1["messagecount"]
        .as_u64()
        .unwrap()
}

/// The value of an unlabelled series (or one with exactly `labels`) in /metrics.
fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = http_get(addr, "/metrics");
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        if name == series {
            value.parse().ok()
        } else {
            None
        }
    })
}

fn ids(response: &Value) -> Vec<String> {
    response["raw_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg_id"].as_str().unwrap().to_string())
        .collect()
}

/// What a query should return: the matching messages sorted by time, one page.
fn expected_page(
    all: &[Sent],
    keep: impl Fn(&Sent) -> bool,
    asc: bool,
    page: usize,
    rows: usize,
) -> (usize, Vec<String>) {
    let mut matching: Vec<&Sent> = all.iter().filter(|m| keep(m)).collect();
    matching.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    if !asc {
        matching.reverse();
    }
    let page_ids = matching
        .iter()
        .skip((page - 1) * rows)
        .take(rows)
        .map(|m| m.msg_id.clone())
        .collect();
    (matching.len(), page_ids)
}

fn iso(t: f64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[test]
fn stores_bus_messages_and_answers_datagrepper_queries() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("history.sqlite");
    let (hub, bus, addr) = start_hub(&database, &[]);
    let sent = corpus(40);
    publish(&bus, &sent);
    // The same msg_id again: ignored and counted.
    publish(&bus, &sent[7..8]);
    assert!(wait_until(LONG, || hub
        .stats()
        .consumer("Nommer")
        .handled()
        == 41));
    assert!(wait_until(LONG, || message_count(addr) == 40));
    assert!(wait_until(LONG, || metric(
        addr,
        "fedhub_history_duplicates_total"
    ) == Some(1.0)));
    assert_eq!(
        metric(addr, "fedhub_history_messages_stored_total"),
        Some(40.0)
    );

    // user, oldest first, second page of 5.
    let (status, r) = get_json(
        addr,
        "/datagrepper/raw?user=ralph&order=asc&rows_per_page=5&page=2",
    );
    assert_eq!(status, 200, "{r}");
    let (total, page) = expected_page(&sent, |m| m.user == "ralph", true, 2, 5);
    assert_eq!(r["total"], json!(total));
    assert_eq!(r["pages"], json!(total.div_ceil(5)));
    assert_eq!(r["count"], json!(page.len()));
    assert_eq!(ids(&r), page);
    let mut keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["arguments", "count", "pages", "raw_messages", "total"]
    );
    let arguments = &r["arguments"];
    for key in [
        "start",
        "end",
        "delta",
        "users",
        "packages",
        "categories",
        "topics",
        "contains",
        "not_users",
        "not_packages",
        "not_categories",
        "not_topics",
        "page",
        "rows_per_page",
        "order",
        "meta",
        "grouped",
    ] {
        assert!(arguments.get(key).is_some(), "arguments.{key}: {arguments}");
    }
    assert_eq!(arguments["users"], json!(["ralph"]));
    assert_eq!(arguments["page"], json!(2));
    assert_eq!(arguments["rows_per_page"], json!(5));
    assert_eq!(arguments["order"], json!("asc"));
    // Each message is datanommer's __json__ of what was sent.
    let first = &r["raw_messages"][0];
    let original = sent
        .iter()
        .find(|m| m.msg_id == first["msg_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(first["msg"], original.msg);
    assert_eq!(first["topic"], json!(original.topic));
    assert_eq!(first["timestamp"], json!(original.timestamp));
    assert_eq!(first["username"], json!("apache"));

    // Defaults: newest first, 25 rows.
    let (_, r) = get_json(addr, "/datagrepper/raw");
    let (total, page) = expected_page(&sent, |_| true, false, 1, 25);
    assert_eq!(
        (r["total"].clone(), r["pages"].clone()),
        (json!(total), json!(2))
    );
    assert_eq!(ids(&r), page);

    // category within an inclusive window given once as ISO 8601 and once as seconds.
    let (start, end) = (T0 + 600.0, T0 + 1800.0);
    let (_, r) = get_json(
        addr,
        &format!(
            "/datagrepper/raw?category=buildsys&start={}&end={end}&rows_per_page=100",
            iso(start)
        ),
    );
    let (total, page) = expected_page(
        &sent,
        |m| m.category == "buildsys" && m.timestamp >= start && m.timestamp <= end,
        false,
        1,
        100,
    );
    assert!(total > 0);
    assert_eq!(r["total"], json!(total));
    assert_eq!(ids(&r), page);
    assert_eq!(r["arguments"]["start"], json!(start));

    // topic + user, and category + not_package; values ORed within a list.
    let (_, r) = get_json(
        addr,
        "/datagrepper/raw?topic=org.fedoraproject.prod.git.receive&user=pingou&user=kevin&rows_per_page=100",
    );
    let (total, page) = expected_page(
        &sent,
        |m| m.category == "git" && (m.user == "pingou" || m.user == "kevin"),
        false,
        1,
        100,
    );
    assert!(total > 0);
    assert_eq!(ids(&r), page);
    let (_, r) = get_json(
        addr,
        "/datagrepper/raw?category=buildsys&not_package=kernel&rows_per_page=100",
    );
    let (total, page) = expected_page(
        &sent,
        |m| m.category == "buildsys" && m.package.as_deref() != Some("kernel"),
        false,
        1,
        100,
    );
    assert!(total > 0 && total < sent.len() / 4);
    assert_eq!(ids(&r), page);
    let (_, r) = get_json(addr, "/datagrepper/raw?package=firefox&rows_per_page=100");
    let (_, page) = expected_page(
        &sent,
        |m| m.package.as_deref() == Some("firefox"),
        false,
        1,
        100,
    );
    assert!(!page.is_empty());
    assert_eq!(ids(&r), page);

    // meta and JSON-P.
    let badge = sent.iter().find(|m| m.category == "fedbadges").unwrap();
    let (status, r) = get_json(
        addr,
        &format!(
            "/datagrepper/id?id={}&meta=subtitle&meta=link",
            badge.msg_id
        ),
    );
    assert_eq!(status, 200);
    assert_eq!(r["msg"], badge.msg);
    assert_eq!(
        r["meta"]["subtitle"],
        json!(format!(
            "{} has been awarded the \"{}\" badge",
            badge.user,
            badge.msg["badge"]["name"].as_str().unwrap()
        ))
    );
    assert_eq!(
        r["meta"]["link"],
        json!(format!(
            "https://badges.fedoraproject.org/user/{}",
            badge.user
        ))
    );
    let (status, text) = http_get(addr, "/datagrepper/messagecount?callback=show");
    assert_eq!(status, 200);
    assert_eq!(text, format!("show({});", json!({"messagecount": 40})));

    let (status, r) = get_json(addr, "/datagrepper/id");
    assert_eq!((status, r["parameter"].clone()), (400, json!("id")));
    let (status, r) = get_json(addr, "/datagrepper/id?id=2023-not-stored");
    assert_eq!(status, 404, "{r}");

    hub.shutdown();

    // A new hub on the same file sees everything and still skips known msg_ids.
    let (hub, bus, addr) = start_hub(&database, &[]);
    assert_eq!(message_count(addr), 40);
    publish(&bus, &sent[..3]);
    assert!(wait_until(LONG, || metric(
        addr,
        "fedhub_history_duplicates_total"
    ) == Some(3.0)));
    assert_eq!(message_count(addr), 40);
    hub.shutdown();
}

#[test]
fn bad_queries_get_400_naming_the_parameter_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, bus, addr) = start_hub(&dir.path().join("history.sqlite"), &[]);
    let sent = corpus(8);
    publish(&bus, &sent);
    assert!(wait_until(LONG, || message_count(addr) == 8));

    let sql = "1' OR '1'='1; DROP TABLE messages; --";
    let encoded: String = form_urlencoded::byte_serialize(sql.as_bytes()).collect();
    let mut cases: Vec<(String, &str)> = vec![
        ("start=yesterday".into(), "start"),
        ("end=2023-02-30".into(), "end"),
        ("start=2023-11-14T25:00:00Z".into(), "start"),
        ("start=1700000100&end=1700000000".into(), "end"),
        ("delta=-60".into(), "delta"),
        ("users=ralph".into(), "users"),
        ("bogus=1".into(), "bogus"),
        ("rows_per_page=10000".into(), "rows_per_page"),
        ("rows_per_page=0".into(), "rows_per_page"),
        ("page=-1".into(), "page"),
        ("page=0".into(), "page"),
        ("order=sideways".into(), "order"),
        ("page=1&page=2".into(), "page"),
        // contains without a topic or category would scan everything.
        ("contains=kernel".into(), "contains"),
    ];
    for parameter in [
        "start",
        "end",
        "delta",
        "user",
        "package",
        "category",
        "topic",
        "not_user",
        "not_package",
        "not_category",
        "not_topic",
        "page",
        "rows_per_page",
        "order",
        "meta",
        "callback",
        "grouped",
        "size",
        "chrome",
    ] {
        cases.push((format!("{parameter}={encoded}"), parameter));
    }
    // An SQL-looking parameter name is an unknown parameter.
    cases.push((format!("{encoded}=1"), sql));
    for (query, parameter) in &cases {
        let (status, r) = get_json(addr, &format!("/datagrepper/raw?{query}"));
        assert_eq!(status, 400, "{query}: {r}");
        assert_eq!(r["parameter"], json!(parameter), "{query}: {r}");
        let error = r["error"].as_str().unwrap();
        assert!(error.starts_with(parameter), "{query}: {error}");
        assert!(error.contains("expected"), "{query}: {error}");
    }
    // Free-text parameters are bound, never spliced into SQL: no match, no damage.
    let (status, r) = get_json(
        addr,
        &format!(
            "/datagrepper/raw?contains={encoded}&category=git&start={}&end={}",
            fedhub_history::filter::now_secs() - 86_400.0,
            fedhub_history::filter::now_secs()
        ),
    );
    assert_eq!((status, r["total"].clone()), (200, json!(0)), "{r}");
    let (status, _) = get_json(addr, &format!("/datagrepper/id?id={encoded}"));
    assert_eq!(status, 404);
    let (status, r) = get_json(addr, &format!("/datagrepper/messagecount?x={encoded}"));
    assert_eq!((status, r["parameter"].clone()), (400, json!("x")));

    assert_eq!(message_count(addr), 8);
    let (_, r) = get_json(addr, "/datagrepper/raw?user=ralph&rows_per_page=100");
    assert_eq!(
        r["total"],
        json!(sent.iter().filter(|m| m.user == "ralph").count())
    );
    assert_eq!(
        metric(addr, "fedhub_history_bad_requests_total{endpoint=\"raw\"}"),
        Some(cases.len() as f64)
    );
    assert_eq!(
        metric(
            addr,
            "fedhub_history_bad_requests_total{endpoint=\"messagecount\"}"
        ),
        Some(1.0)
    );
    hub.shutdown();
}

#[test]
fn a_locked_database_is_reported_and_no_message_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("history.sqlite");
    let (hub, bus, addr) = start_hub(&database, &[("busy_timeout_ms", json!(50))]);
    let sent = corpus(60);
    publish(&bus, &sent[..10]);
    assert!(wait_until(LONG, || message_count(addr) == 10));
    assert_eq!(http_get(addr, "/health/readyz").0, 200);

    // Another process takes the write lock and keeps it.
    let other = rusqlite::Connection::open(&database).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    publish(&bus, &sent[10..20]);
    assert!(wait_until(LONG, || http_get(addr, "/health/readyz").0 == 503));
    // Once commits fail, new messages are not taken from the mailbox.
    publish(&bus, &sent[20..]);
    let nommer = hub.stats().consumer("Nommer");
    assert!(wait_until(LONG, || nommer.received() == 60));
    let (_, ready) = get_json(addr, "/health/readyz");
    let problems = ready["problems"].to_string();
    assert!(
        problems.contains("consumer Nommer") && problems.contains("locked"),
        "{ready}"
    );
    assert!(metric(addr, "fedhub_history_write_errors_total").unwrap_or(0.0) >= 1.0);
    let (status, health) = get_json(addr, "/datagrepper/health");
    assert_eq!(status, 503, "{health}");
    // Every message not stored is still held, in the hub's mailbox or accepted
    // by the writer and waiting for the lock, and the hub's backlog counts each:
    // it is exactly the number of messages not stored.
    assert!(
        wait_until(LONG, || nommer.backlog() == 50),
        "backlog {}",
        nommer.backlog()
    );
    let queued = get_json(addr, "/datagrepper/health").1["queued"]
        .as_u64()
        .unwrap();
    assert!(queued > 0 && queued < 50, "the writer holds some: {queued}");
    assert_eq!(message_count(addr), 10);

    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    assert!(wait_until(LONG, || message_count(addr) == 60));
    assert!(wait_until(LONG, || http_get(addr, "/health/readyz").0 == 200));
    assert_eq!(nommer.backlog(), 0);
    for m in &sent {
        let (status, _) = get_json(addr, &format!("/datagrepper/id?id={}", m.msg_id));
        assert_eq!(status, 200, "{} stored", m.msg_id);
    }
    assert_eq!(get_json(addr, "/datagrepper/health").0, 200);
    hub.shutdown();
}

/// `depth` nested empty arrays.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// What is accepted can be served: the bus rejects a body nested deeper than
/// `fedhub::MAX_JSON_DEPTH` (counted as `too_deep`) before it reaches the store,
/// and a row stored before that limit existed, deeper than a JSON parser takes,
/// is still served by `/raw` and `/id`, its payload as its stored text.
#[test]
fn deeply_nested_messages_never_make_the_history_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("history.sqlite");
    let topic = "org.fedoraproject.prod.git.receive";
    let legacy_msg = nested(200);
    {
        use fedhub_history::Store as _;
        let store = fedhub_history::SqliteStore::open(&database).unwrap();
        let legacy = fedhub_history::NewMessage {
            msg_id: "2020-legacy-deep".into(),
            i: 1,
            topic: topic.into(),
            category: "git".into(),
            timestamp: T0 - 60.0,
            username: None,
            crypto: None,
            certificate: None,
            signature: None,
            msg: legacy_msg.clone(),
            headers: None,
            extra: Some(format!(r#"{{"deep":{legacy_msg},"source_version":"1"}}"#)),
            users: vec![],
            packages: vec![],
        };
        store.insert_batch(&[legacy]).unwrap();
    }
    let (hub, bus, addr) = start_hub(&database, &[]);
    let deep_body = format!(
        r#"{{"msg":{},"msg_id":"2026-deep","timestamp":{T0},"topic":"{topic}"}}"#,
        nested(128)
    );
    bus.send_frames(&[topic.as_bytes(), deep_body.as_bytes()]);
    let sent = corpus(2);
    publish(&bus, &sent);
    assert!(wait_until(LONG, || message_count(addr) == 3));
    assert!(wait_until(LONG, || metric(
        addr,
        "fedhub_bus_malformed_total{bus=\"test\",reason=\"too_deep\"}"
    ) == Some(1.0)));

    let (status, page) = get_json(addr, "/datagrepper/raw?rows_per_page=100&order=asc");
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        ids(&page),
        ["2020-legacy-deep", &sent[0].msg_id, &sent[1].msg_id]
    );
    assert_eq!(
        page["raw_messages"][0]["msg"],
        Value::String(legacy_msg.clone())
    );
    assert_eq!(page["raw_messages"][1]["msg"], sent[0].msg);
    let (status, one) = get_json(addr, "/datagrepper/id?id=2020-legacy-deep");
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["msg"], Value::String(legacy_msg.clone()));
    let (status, missing) = get_json(addr, "/datagrepper/id?id=2026-deep");
    assert_eq!(status, 404, "{missing}");
    hub.shutdown();
    // The store's own reading (what `fedhub history query` uses) keeps the
    // other body fields too, the unreadable one as its text.
    use fedhub_history::Store as _;
    let store = fedhub_history::SqliteStore::open(&database).unwrap();
    let stored = store.get("2020-legacy-deep").unwrap().unwrap();
    assert_eq!(stored.msg, Value::String(legacy_msg.clone()));
    assert_eq!(stored.extra["deep"], Value::String(legacy_msg));
    assert_eq!(stored.extra["source_version"], "1");
    let page = store.grep(&fedhub_history::Filter::new()).unwrap();
    assert_eq!(page.messages.len(), 3);
}

/// A `/raw` page is bounded in bytes (`max_response_bytes`): past it the
/// query is refused with 413 and a JSON error naming `rows_per_page` and the
/// limit, before the rows are read whole, and counted; a smaller page is
/// served. Probes answer while large queries run.
#[test]
fn large_raw_pages_are_refused_past_max_response_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("history.sqlite");
    let (hub, bus, addr) = start_hub(&database, &[("max_response_bytes", json!(4 << 20))]);
    let topic = "org.fedoraproject.prod.git.receive";
    let text = "x".repeat(1_000_000);
    for n in 0..12 {
        let body = format!(
            r#"{{"i":{n},"msg":{{"text":"{text}"}},"msg_id":"2026-large-{n}","timestamp":{},"topic":"{topic}"}}"#,
            T0 + n as f64
        );
        bus.send_frames(&[topic.as_bytes(), body.as_bytes()]);
    }
    assert!(wait_until(LONG, || message_count(addr) == 12));

    let (status, refused) = get_json(addr, "/datagrepper/raw?rows_per_page=10&order=asc");
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["parameter"], "rows_per_page", "{refused}");
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("max_response_bytes"), "{error}");
    assert!(error.contains("4194304"), "{error}");
    assert_eq!(
        metric(addr, "fedhub_history_bad_requests_total{endpoint=\"raw\"}"),
        Some(1.0)
    );

    let (status, page) = get_json(addr, "/datagrepper/raw?rows_per_page=3&order=asc");
    assert_eq!(status, 200);
    assert_eq!(page["count"], 3);
    assert_eq!(page["total"], 12);
    assert_eq!(
        page["raw_messages"][0]["msg"]["text"]
            .as_str()
            .unwrap()
            .len(),
        1_000_000
    );

    // Large queries in flight do not keep the probes waiting.
    let queries: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..3 {
                    http_get(addr, "/datagrepper/raw?rows_per_page=3&order=desc");
                }
            })
        })
        .collect();
    for _ in 0..10 {
        assert_eq!(http_get(addr, "/health/livez").0, 200);
        assert_eq!(http_get(addr, "/metrics").0, 200);
    }
    for q in queries {
        q.join().unwrap();
    }
    hub.shutdown();
}

/// A burst many times the mailbox bound (blocking overflow) is stored in full:
/// admission waits for the writer's commits to release backlog, and resumes.
#[test]
fn a_burst_larger_than_the_mailbox_is_stored_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("history.sqlite");
    let (hub, bus, addr) = start_hub(
        &database,
        &[
            ("capacity_messages", json!(300)),
            ("batch_messages", json!(1000)),
        ],
    );
    let sent = corpus(20_000);
    publish(&bus, &sent);
    let nommer = hub.stats().consumer("Nommer");
    let stored = wait_until(Duration::from_secs(120), || message_count(addr) == 20_000);
    assert!(
        stored,
        "stored {} of 20000; received {} handled {} backlog {}",
        message_count(addr),
        nommer.received(),
        nommer.handled(),
        nommer.backlog()
    );
    assert!(
        nommer.peak_backlog() <= 300,
        "peak {}",
        nommer.peak_backlog()
    );
    assert!(
        wait_until(LONG, || nommer.backlog() == 0),
        "backlog {}",
        nommer.backlog()
    );
    hub.shutdown();
}
