//! One suite of datagrepper queries, run against each backend: a SQLite file on
//! disk and a real PostgreSQL server (the testkit's throwaway cluster; the test
//! fails when PostgreSQL is not installed). Messages go over real ZeroMQ into
//! a hub running `Nommer`; `/datagrepper/raw`, `/id` and `/messagecount` are
//! asked over HTTP and checked against what was sent, and the PostgreSQL
//! answers are compared with the SQLite ones byte for byte.

use std::net::SocketAddr;
use std::time::Duration;

use fedhub::HubBuilder;
use fedhub_testkit::{http_get, section, wait_until, PgCluster, TestBus};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(30);
const USERS: [&str; 3] = ["ralph", "pingou", "kevin"];
const PACKAGES: [&str; 5] = ["kernel", "python3", "eclipse-ptp", "firefox", "bash"];

/// One message sent, and what should be extracted from it.
struct Sent {
    topic: String,
    category: &'static str,
    msg_id: String,
    timestamp: f64,
    user: String,
    package: Option<String>,
    msg: Value,
}

/// The first message's time: a day ago (so `contains`, which needs a window
/// starting at most 32 weeks ago, can be asked), on a whole second.
fn t0() -> f64 {
    (fedhub_history::filter::now_secs() - 86_400.0).floor()
}

fn corpus(n: usize, t0: f64) -> Vec<Sent> {
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
                    json!({"username": user, "post": {"title": format!("Post {k}")}}),
                    None,
                ),
            };
            Sent {
                topic: format!("org.fedoraproject.prod.{suffix}"),
                category,
                msg_id: format!("2026-00000000-0000-4000-8000-{k:012}"),
                timestamp: t0 + 60.0 * k as f64,
                user,
                package,
                msg,
            }
        })
        .collect()
}

fn publish(bus: &TestBus, messages: &[Sent]) {
    for (i, m) in messages.iter().enumerate() {
        let body = fedhub::to_canonical_string(&json!({
            "topic": m.topic, "msg": m.msg, "msg_id": m.msg_id,
            "timestamp": m.timestamp, "i": i, "username": "apache",
        }));
        bus.send_frames(&[m.topic.as_bytes(), body.as_bytes()]);
    }
}

fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http_get(addr, path);
    let value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, value)
}

fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = http_get(addr, "/metrics");
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

fn ids(response: &Value) -> Vec<String> {
    response["raw_messages"]
        .as_array()
        .unwrap_or_else(|| panic!("raw_messages: {response}"))
        .iter()
        .map(|m| m["msg_id"].as_str().unwrap().to_string())
        .collect()
}

/// A query, and which sent messages it should return (before paging).
struct Query {
    path: String,
    keep: Box<dyn Fn(&Sent) -> bool>,
    asc: bool,
    page: usize,
    rows: usize,
}

fn query(path: &str, keep: impl Fn(&Sent) -> bool + 'static) -> Query {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(path.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    Query {
        path: format!("/datagrepper/raw?{path}"),
        keep: Box::new(keep),
        asc: get("order").as_deref() == Some("asc"),
        page: get("page").map(|p| p.parse().unwrap()).unwrap_or(1),
        rows: get("rows_per_page")
            .map(|p| p.parse().unwrap())
            .unwrap_or(25),
    }
}

/// The suite: stores `corpus(40, t0)` through a hub on `database`, checks every
/// answer against the corpus, and returns the answers (for comparing backends).
fn suite(database: &str, t0: f64) -> Vec<Value> {
    let sent = corpus(40, t0);
    let bus = TestBus::new();
    let mut config = fedhub_testkit::config(&bus);
    config.hub.shutdown_grace_secs = 2;
    config.consumers.insert(
        "Nommer".into(),
        section(&[
            ("enabled", json!(true)),
            ("database", json!(database)),
            ("batch_latency_ms", json!(10)),
        ]),
    );
    let hub = HubBuilder::new(config)
        .consumer(fedhub_history::factory())
        .start()
        .unwrap();
    bus.wait_subscribed();
    let addr = hub.http_addr().unwrap();
    publish(&bus, &sent);
    publish(&bus, &sent[5..7]);
    let count = || get_json(addr, "/datagrepper/messagecount").1["messagecount"].clone();
    assert!(wait_until(LONG, || count() == json!(40)), "{}", count());
    assert!(wait_until(LONG, || metric(
        addr,
        "fedhub_history_duplicates_total"
    ) == Some(2.0)));
    assert_eq!(
        metric(addr, "fedhub_history_messages_stored_total"),
        Some(40.0)
    );

    let (w0, w1) = (t0 + 600.0, t0 + 1800.0);
    let queries = vec![
        query("rows_per_page=100", |_| true),
        query("", |_| true),
        query("page=2", |_| true),
        query("order=asc&rows_per_page=7&page=3", |_| true),
        query(
            &format!("start={w0}&end={w1}&rows_per_page=100"),
            move |m| m.timestamp >= w0 && m.timestamp <= w1,
        ),
        query(&format!("start={w0}&delta=600&order=asc"), move |m| {
            m.timestamp >= w0 && m.timestamp <= w0 + 600.0
        }),
        query("category=buildsys&category=git&rows_per_page=100", |m| {
            m.category == "buildsys" || m.category == "git"
        }),
        query("topic=org.fedoraproject.prod.fedbadges.badge.award", |m| {
            m.category == "fedbadges"
        }),
        query("user=ralph&order=asc&rows_per_page=5&page=2", |m| {
            m.user == "ralph"
        }),
        query("user=pingou&user=kevin&category=git", |m| {
            (m.user == "pingou" || m.user == "kevin") && m.category == "git"
        }),
        query("package=firefox&rows_per_page=100", |m| {
            m.package.as_deref() == Some("firefox")
        }),
        query(&format!("package=kernel&start={w0}&end={w1}"), move |m| {
            m.package.as_deref() == Some("kernel") && m.timestamp >= w0 && m.timestamp <= w1
        }),
        query("not_user=ralph&rows_per_page=100", |m| m.user != "ralph"),
        query("category=buildsys&not_package=kernel", |m| {
            m.category == "buildsys" && m.package.as_deref() != Some("kernel")
        }),
        query(
            "not_category=planet&not_topic=org.fedoraproject.prod.git.receive&rows_per_page=100",
            |m| m.category != "planet" && m.category != "git",
        ),
        query(
            &format!("contains=change%201&contains=rev-none&category=git&start={t0}"),
            |m| m.category == "git" && m.msg.to_string().contains("change 1"),
        ),
        query("user=nobody-at-all", |_| false),
        query("rows_per_page=10&page=9", |_| true),
        // The shapes PostgreSQL counts from running counts and index ranges.
        query("user=ralph&not_package=kernel&rows_per_page=100", |m| {
            m.user == "ralph" && m.package.as_deref() != Some("kernel")
        }),
        query("package=firefox&not_user=ralph&rows_per_page=100", |m| {
            m.package.as_deref() == Some("firefox") && m.user != "ralph"
        }),
        query("user=kevin&package=kernel&rows_per_page=100", |m| {
            m.user == "kevin" && m.package.as_deref() == Some("kernel")
        }),
        query(
            &format!("topic=org.fedoraproject.prod.git.receive&user=pingou&start={w0}&end={w1}"),
            move |m| {
                m.category == "git" && m.user == "pingou" && m.timestamp >= w0 && m.timestamp <= w1
            },
        ),
        query(
            &format!("not_package=kernel&start={w0}&end={w1}&rows_per_page=100"),
            move |m| {
                m.package.as_deref() != Some("kernel") && m.timestamp >= w0 && m.timestamp <= w1
            },
        ),
        query(
            &format!("category=git&category=planet&not_user=ralph&start={w0}&end={w1}&order=asc"),
            move |m| {
                (m.category == "git" || m.category == "planet")
                    && m.user != "ralph"
                    && m.timestamp >= w0
                    && m.timestamp <= w1
            },
        ),
        query(
            "category=buildsys&topic=org.fedoraproject.prod.buildsys.build.state.change&rows_per_page=3&page=4",
            |m| m.category == "buildsys",
        ),
        query("category=buildsys&not_package=no-such-package&rows_per_page=100", |m| {
            m.category == "buildsys"
        }),
        query("user=ralph&not_user=ralph", |_| false),
        query("package=kernel&not_package=kernel", |_| false),
        query("category=no-such-category", |_| false),
        query("category=git&user=ralph&rows_per_page=2&page=50", |m| {
            m.category == "git" && m.user == "ralph"
        }),
    ];
    let mut answers = Vec::new();
    for q in &queries {
        let (status, r) = get_json(addr, &q.path);
        assert_eq!(status, 200, "{}: {r}", q.path);
        let mut matching: Vec<&Sent> = sent.iter().filter(|m| (q.keep)(m)).collect();
        matching.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        if !q.asc {
            matching.reverse();
        }
        let page: Vec<String> = matching
            .iter()
            .skip((q.page - 1) * q.rows)
            .take(q.rows)
            .map(|m| m.msg_id.clone())
            .collect();
        assert_eq!(r["total"], json!(matching.len()), "{}", q.path);
        assert_eq!(
            r["pages"],
            json!(matching.len().div_ceil(q.rows)),
            "{}",
            q.path
        );
        assert_eq!(r["count"], json!(page.len()), "{}", q.path);
        assert_eq!(ids(&r), page, "{}", q.path);
        answers.push(r);
    }
    let first = &answers[0]["raw_messages"][0];
    let newest = sent.last().unwrap();
    assert_eq!(first["msg"], newest.msg);
    assert_eq!(first["timestamp"], json!(newest.timestamp));
    assert_eq!(first["username"], json!("apache"));

    for m in &sent[..6] {
        let (status, r) = get_json(
            addr,
            &format!("/datagrepper/id?id={}&meta=usernames", m.msg_id),
        );
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["msg"], m.msg);
        assert_eq!(r["topic"], json!(m.topic));
        answers.push(r);
    }
    let (status, r) = get_json(addr, "/datagrepper/id?id=2026-not-stored");
    assert_eq!(status, 404, "{r}");
    answers.push(r);
    let (_, r) = get_json(addr, "/datagrepper/messagecount");
    assert_eq!(r, json!({"messagecount": 40}));
    answers.push(r);
    let (status, health) = get_json(addr, "/datagrepper/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["duplicates"], json!(2));
    hub.shutdown();
    answers
}

/// Drops what legitimately differs between runs (the window's `now`).
fn comparable(answers: Vec<Value>) -> Vec<Value> {
    answers
        .into_iter()
        .map(|mut a| {
            if let Some(args) = a.get_mut("arguments").and_then(Value::as_object_mut) {
                args.remove("start");
                args.remove("end");
                args.remove("delta");
            }
            a
        })
        .collect()
}

#[test]
fn sqlite_answers_the_datagrepper_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(
        &dir.path().join("history.sqlite").display().to_string(),
        t0(),
    );
}

#[test]
fn postgres_answers_the_datagrepper_suite_as_sqlite_does() {
    let pg = PgCluster::start();
    let t0 = t0();
    let on_postgres = suite(&pg.url(), t0);
    assert_eq!(
        pg.psql(
            "fedhub",
            "SELECT count(*), count(DISTINCT msg_id) FROM history_messages"
        ),
        "40|40"
    );
    assert_eq!(
        pg.psql(
            "fedhub",
            "SELECT max(version) FROM fedhub_nommer_migrations"
        ),
        fedhub_history::schema::migrations().latest().to_string()
    );
    let dir = tempfile::tempdir().unwrap();
    let on_sqlite = suite(&dir.path().join("history.sqlite").display().to_string(), t0);
    assert_eq!(comparable(on_postgres), comparable(on_sqlite));
}

/// Five stored messages of about 10 kB each, with timestamps in the last minute.
fn large_messages() -> Vec<fedhub_history::NewMessage> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    (0..5)
        .map(|k| {
            let body = json!({
                "topic": "org.fedoraproject.prod.buildsys.build.state.change",
                "msg_id": format!("2026-large-{k}"),
                "timestamp": now - 30.0 + k as f64,
                "i": k,
                "msg": {"log": "x".repeat(10_000)},
            });
            fedhub_history::NewMessage::from_envelope(&fedhub::Envelope::from_value(body).unwrap())
        })
        .collect()
}

/// A page past `max_page_bytes` is refused, the same way on both backends,
/// and a page within it is served whole.
fn pages_are_bounded_in_bytes(store: &dyn fedhub_history::Store) {
    store.insert_batch(&large_messages()).unwrap();
    let mut filter = fedhub_history::Filter::new().delta(3600.0).page(1, 5);
    filter.max_page_bytes = Some(30_000);
    match store.grep(&filter) {
        Err(fedhub_history::StoreError::PageTooLarge { limit }) => assert_eq!(limit, 30_000),
        other => panic!("expected PageTooLarge, got {other:?}"),
    }
    filter.max_page_bytes = Some(100_000);
    assert_eq!(store.grep(&filter).unwrap().messages.len(), 5);
    let mut small = fedhub_history::Filter::new().delta(3600.0).page(1, 2);
    small.max_page_bytes = Some(30_000);
    assert_eq!(store.grep(&small).unwrap().messages.len(), 2);
}

#[test]
fn sqlite_pages_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = fedhub_history::SqliteStore::open(dir.path().join("h.sqlite")).unwrap();
    pages_are_bounded_in_bytes(&store);
}

#[test]
fn postgres_pages_are_bounded_in_bytes() {
    let pg = PgCluster::start();
    let store = pg_store(&pg);
    pages_are_bounded_in_bytes(&store);
}

/// One user with messages in 100 topics (more than PostgreSQL merges range by
/// range) and one with messages in 3: their pages, counts and windows are the
/// same on both backends.
#[test]
fn users_of_many_topics_and_of_few_are_paged_alike_on_both_backends() {
    use fedhub_history::{Filter, Order, Store};
    let messages: Vec<fedhub_history::NewMessage> = (0..600)
        .map(|k| {
            // The git processor reads the commit's author whatever follows `git.`.
            let (user, topic) = if k % 2 == 0 {
                (
                    "prolific",
                    format!("org.fedoraproject.prod.git.receive.t{}", k % 100),
                )
            } else {
                (
                    "rare",
                    format!("org.fedoraproject.prod.git.receive.r{}", k % 3),
                )
            };
            let body = json!({
                "topic": topic,
                "msg_id": format!("2026-topics-{k:05}"),
                "timestamp": 1_700_000_000.0 + ((k * 7919) % 600) as f64,
                "i": k,
                "msg": {"commit": {"username": user, "namespace": "rpms",
                                   "repo": if k % 5 == 0 { "kernel" } else { "bash" }}},
            });
            fedhub_history::NewMessage::from_envelope(&fedhub::Envelope::from_value(body).unwrap())
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = fedhub_history::SqliteStore::open(dir.path().join("h.sqlite")).unwrap();
    let pg = PgCluster::start();
    let postgres = pg_store(&pg);
    for store in [&sqlite as &dyn Store, &postgres] {
        for chunk in messages.chunks(97) {
            store.insert_batch(chunk).unwrap();
        }
    }
    let filters = [
        Filter::new().user("prolific").page(1, 20),
        Filter::new().user("prolific").page(4, 13).order(Order::Asc),
        Filter::new()
            .user("prolific")
            .between(1_700_000_100.0, 1_700_000_300.0),
        Filter::new().user("rare").page(2, 30),
        Filter::new().user("rare").not_user("prolific"),
        Filter::new().user("nobody"),
    ];
    let ids = |p: &fedhub_history::Page| -> Vec<String> {
        p.messages.iter().map(|m| m.msg_id.clone()).collect()
    };
    for filter in filters {
        let (a, b) = (
            sqlite.grep(&filter).unwrap(),
            postgres.grep(&filter).unwrap(),
        );
        assert_eq!(a.total, b.total, "{filter:?}");
        assert_eq!(ids(&a), ids(&b), "{filter:?}");
        assert_eq!(postgres.count(&filter).unwrap(), a.total, "{filter:?}");
    }
    assert_eq!(
        sqlite.count(&Filter::new().user("prolific")).unwrap(),
        300,
        "the extraction found the user"
    );
}

/// A batch large enough to be written by several transactions at once on
/// PostgreSQL (one per core) stores every message once, with the same counts
/// as SQLite, and a replay of it stores nothing.
#[test]
fn a_large_batch_written_in_parallel_parts_counts_as_sqlite_does() {
    use fedhub_history::{Filter, Store};
    let mut generator = fedhub_tools::demo::Generator::new(11, "org.fedoraproject", "prod");
    let messages: Vec<fedhub_history::NewMessage> = (0..6000)
        .map(|k| {
            let (topic, body) = generator.next_frames(1_700_000_000 + k);
            let envelope =
                fedhub::Envelope::from_frames(&[topic.as_bytes(), body.as_bytes()], usize::MAX)
                    .unwrap();
            fedhub_history::NewMessage::from_envelope(&envelope)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = fedhub_history::SqliteStore::open(dir.path().join("h.sqlite")).unwrap();
    let pg = PgCluster::start();
    let postgres = pg_store(&pg);
    for store in [&sqlite as &dyn Store, &postgres] {
        let first = store.insert_batch(&messages).unwrap();
        assert_eq!((first.stored, first.duplicates), (6000, 0));
        let again = store.insert_batch(&messages).unwrap();
        assert_eq!((again.stored, again.duplicates), (0, 6000));
        assert_eq!(store.message_count().unwrap(), 6000);
    }
    let mut filters = vec![Filter::new()];
    for m in messages.iter().step_by(500) {
        filters.push(Filter::new().topic(&m.topic));
        for u in &m.users {
            filters.push(Filter::new().user(u));
        }
        for p in &m.packages {
            filters.push(Filter::new().package(p));
        }
    }
    for filter in filters {
        assert_eq!(
            postgres.count(&filter).unwrap(),
            sqlite.count(&filter).unwrap(),
            "{filter:?}"
        );
    }
}

/// The history store on the cluster's database.
fn pg_store(pg: &PgCluster) -> fedhub_history::PgStore {
    fedhub_history::PgStore::open(
        &fedhub_storage::DatabaseUrl::parse(&pg.url()).unwrap(),
        &fedhub_storage::PoolOptions::default(),
        &prometheus::Registry::new(),
    )
    .unwrap()
}
