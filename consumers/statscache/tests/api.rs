//! StatsConsumer in a live hub: messages over real ZeroMQ, statistics in
//! SQLite on disk and in a real PostgreSQL, read back over the hub's HTTP
//! server the way dashboards read statscache.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use fedhub_statscache::{Message, Outcome, Plugin, PluginError, Shape, Update, Window};
use fedhub_testkit::wait_until;
use serde_json::{json, Value};

const N: usize = 300;

/// A plugin that panics on badges and fails on pushes: the others must not notice.
struct Faulty;

impl Plugin for Faulty {
    fn name(&self) -> &str {
        "Faulty"
    }
    fn summary(&self) -> &str {
        "Panics on badges, fails on pushes"
    }
    fn description(&self) -> &str {
        "A plugin that misbehaves, to show failures stay with it."
    }
    fn window(&self) -> Option<Window> {
        None
    }
    fn shape(&self) -> Shape {
        Shape::Counts { key: None }
    }
    fn process(&mut self, m: &Message<'_>) -> Result<Outcome, PluginError> {
        match m.category() {
            Some("fedbadges") => panic!("badges are too shiny"),
            Some("git") => Err(PluginError::Failed("cannot handle pushes".into())),
            _ => Ok(Outcome::Ignored),
        }
    }
    fn flush(&mut self) -> Vec<Update> {
        Vec::new()
    }
}

fn plugins_with_faulty() -> Vec<Box<dyn Plugin>> {
    let mut plugins = fedhub_statscache::plugins::builtin();
    plugins.push(Box::new(Faulty));
    plugins
}

fn exercise(database: &str) {
    let (hub, bus, addr) = start_hub(
        &[(
            "StatsConsumer",
            vec![
                ("database", json!(database)),
                ("history_database", json!("")),
                ("flush_interval_ms", json!(50)),
                ("max_limit", json!(1000)),
            ],
        )],
        vec![fedhub_statscache::factory_with(plugins_with_faulty)],
    );
    let sent = corpus(N, T0, 37.0, "aaaaaaaa");
    let mut no_time = sent[0].clone();
    no_time.timestamp = None;
    no_time.msg_id = "2023-no-time".into();
    publish(&bus, &sent);
    publish(&bus, &[no_time]);
    let timed = sent.len() as i64;
    assert!(
        wait_until(Duration::from_secs(30), || total_volume(
            addr,
            "volume-1d",
            ""
        ) == timed),
        "volume-1d never reached {timed}: {}",
        total_volume(addr, "volume-1d", "")
    );
    check_discovery(addr);
    check_volumes(addr, &sent);
    check_paging(addr, &sent);
    check_releng(addr, &sent);
    check_bad_input(addr);
    check_formats(addr);
    check_failures_are_isolated(addr, &sent);
    hub.shutdown();
}

fn check_discovery(addr: SocketAddr) {
    let r = get(addr, "/statscache/api/", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let idents: BTreeSet<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            for field in ["name", "summary", "description"] {
                assert!(!p[field].as_str().unwrap().is_empty(), "{p}");
            }
            p["ident"].as_str().unwrap().to_string()
        })
        .collect();
    for dimension in ["", "-by-category", "-by-topic", "-by-user", "-by-package"] {
        for window in ["1m", "1h", "1d"] {
            assert!(
                idents.contains(&format!("volume{dimension}-{window}")),
                "{idents:?}"
            );
        }
    }
    assert!(idents.contains("release-engineering-event-logs"));
    assert!(idents.contains("contributions-per-user-1d"));
    let page = get(addr, "/statscache/", None);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("/statscache/api/volume-by-category-1m"),
        "the page links every plugin"
    );
}

fn check_volumes(addr: SocketAddr, sent: &[Sent]) {
    for (ident, secs) in [
        ("volume-by-category-1m", 60),
        ("volume-by-category-1h", 3600),
        ("volume-by-category-1d", 86_400),
    ] {
        let mut expected: BTreeMap<(i64, String), i64> = BTreeMap::new();
        for m in sent {
            *expected
                .entry((bucket(m.timestamp.unwrap(), secs), m.category().to_string()))
                .or_default() += 1;
        }
        let got: BTreeMap<(i64, String), i64> = all_rows(addr, ident, "")
            .iter()
            .map(|r| {
                (
                    (
                        r["timestamp"].as_f64().unwrap() as i64,
                        r["category"].as_str().unwrap().to_string(),
                    ),
                    r["volume"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, expected, "{ident}");
    }
    let mut by_topic: BTreeMap<String, i64> = BTreeMap::new();
    for m in sent {
        *by_topic.entry(m.topic.clone()).or_default() += 1;
    }
    for (topic, count) in &by_topic {
        assert_eq!(
            total_volume(addr, "volume-by-topic-1h", &format!("&topic={topic}")),
            *count,
            "{topic}"
        );
    }
    // Users come from fedmsg_meta: ralph owns a third of the builds, badges and pushes.
    let ralph = total_volume(addr, "volume-by-user-1d", "&user=ralph");
    assert!(ralph > 0, "ralph has volume");
    let calendar = all_rows(addr, "contributions-per-user-1d", "&user=ralph");
    assert!(
        !calendar.is_empty() && calendar.iter().all(|r| r["user"] == "ralph"),
        "{calendar:?}"
    );
    assert!(total_volume(addr, "volume-by-package-1d", "&package=kernel") > 0);
    // /latest: the newest minute's rows.
    let newest = sent
        .iter()
        .map(|m| bucket(m.timestamp.unwrap(), 60))
        .max()
        .unwrap();
    let latest = get(addr, "/statscache/api/volume-by-category-1m/latest", None).json();
    let rows = latest.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["timestamp"].as_f64().unwrap() as i64 == newest),
        "{latest}"
    );
}

fn check_paging(addr: SocketAddr, sent: &[Sent]) {
    // Every page holds rows (statscache's came back empty after page 1), and
    // the Link header keeps the query.
    let path = "/statscache/api/volume-by-topic-1m?stop=9999999999&order=asc&rows_per_page=7";
    let first = get(addr, path, None);
    assert_eq!(first.status, 200);
    let pages: u64 = first.header("x-link-count").unwrap().parse().unwrap();
    assert!(pages > 2, "several pages");
    let link = first.header("link").unwrap();
    assert!(
        link.contains("rows_per_page=7")
            && link.contains("order=asc")
            && link.contains("page=2")
            && link.contains("rel=\"next\""),
        "{link}"
    );
    let mut seen = 0;
    let mut previous = 0.0;
    for page in 1..=pages {
        let r = get(addr, &format!("{path}&page={page}"), None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-link-number"), Some(page.to_string().as_str()));
        let rows = r.json();
        let rows = rows.as_array().unwrap();
        assert!(!rows.is_empty(), "page {page} is empty");
        for row in rows {
            let t = row["timestamp"].as_f64().unwrap();
            assert!(t >= previous, "ascending");
            previous = t;
        }
        seen += rows.len();
    }
    let mut distinct = BTreeSet::new();
    for m in sent {
        distinct.insert((bucket(m.timestamp.unwrap(), 60), m.topic.clone()));
    }
    assert_eq!(seen, distinct.len());
    let past = get(addr, &format!("{path}&page={}", pages + 1), None);
    assert_eq!(past.status, 400, "{}", past.body);
    assert_eq!(past.json()["parameter"], "page");
    // limit caps the items before paging.
    let limited = get(
        addr,
        "/statscache/api/volume-by-topic-1m?stop=9999999999&limit=10&rows_per_page=4&page=3",
        None,
    );
    assert_eq!(limited.json().as_array().unwrap().len(), 2);
    assert_eq!(limited.header("x-link-count"), Some("3"));
    // start and stop bound the timestamps.
    let start = T0 + 3600.0;
    let stop = T0 + 7200.0;
    let window = all_rows(addr, "volume-1m", &format!("&start={start}&stop={stop}"));
    let expected: i64 = sent
        .iter()
        .filter(|m| {
            let b = bucket(m.timestamp.unwrap(), 60) as f64;
            b >= start && b <= stop
        })
        .count() as i64;
    assert_eq!(
        window
            .iter()
            .map(|r| r["volume"].as_i64().unwrap())
            .sum::<i64>(),
        expected
    );
}

fn check_releng(addr: SocketAddr, sent: &[Sent]) {
    let rows = get(
        addr,
        "/statscache/api/release-engineering-event-logs/latest",
        None,
    )
    .json();
    let rows = rows.as_array().unwrap().clone();
    let keys: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["category"].as_str().unwrap().to_string(),
                r["category_constraint"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(keys.len(), rows.len(), "one row per (category, constraint)");
    // Update syncs: one row per release-repo (statscache added a row per sync).
    let syncs: Vec<&Value> = rows
        .iter()
        .filter(|r| r["category"] == "updates-fedora")
        .collect();
    let repos: BTreeSet<String> = sent
        .iter()
        .filter(|m| m.topic.ends_with("updates.fedora.sync"))
        .map(|m| format!("f40-{}", m.msg["repo"].as_str().unwrap()))
        .collect();
    assert_eq!(syncs.len(), repos.len(), "{syncs:?}");
    for row in &syncs {
        // The newest sync of that repo is kept.
        let name = row["message"]["name"].as_str().unwrap();
        let newest = sent
            .iter()
            .filter(|m| {
                m.topic.ends_with("updates.fedora.sync")
                    && format!("f40-{}", m.msg["repo"].as_str().unwrap()) == name
            })
            .map(|m| m.timestamp.unwrap())
            .fold(0.0, f64::max);
        assert_eq!(row["timestamp"].as_f64().unwrap(), newest);
        assert_eq!(row["message"]["status"], "synced out");
    }
    let compose: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            r["category"]
                .as_str()
                .unwrap()
                .starts_with("compose-rawhide")
        })
        .collect();
    assert_eq!(compose.len(), 2, "primary and arm: {compose:?}");
    assert!(rows.iter().any(|r| r["category"] == "ami-rawhide"));
    assert!(rows
        .iter()
        .any(|r| r["category"] == "artifact-livecd_x86_64"
            && r["message"]["link"].as_str().unwrap().contains("kojipkgs")));
    let layout = get(
        addr,
        "/statscache/api/release-engineering-event-logs/layout",
        None,
    );
    assert_eq!(layout.status, 200);
    let groups: Vec<String> = layout.json()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        groups,
        ["compose", "updates", "amis", "appliance", "livecd"]
    );
    // The AMI test messages lack image_name: skipped by releng and counted.
    let lacking = sent
        .iter()
        .filter(|m| m.topic.ends_with("fedimg.image.test"))
        .count() as f64;
    assert_eq!(
        metric(
            addr,
            "fedhub_statscache_plugin_skipped_total{plugin=\"release-engineering-event-logs\"}"
        ),
        Some(lacking)
    );
    // The message without a timestamp: skipped by every bucketed plugin.
    assert_eq!(
        metric(
            addr,
            "fedhub_statscache_plugin_skipped_total{plugin=\"volume-1m\"}"
        ),
        Some(1.0)
    );
}

fn check_bad_input(addr: SocketAddr) {
    let r = get(addr, "/statscache/api/no-such-plugin", None);
    assert_eq!(r.status, 404);
    let idents = r.json()["idents"].as_array().unwrap().len();
    assert!(idents >= 17, "the 404 lists the valid idents");
    for (query, parameter) in [
        ("start=soon", "start"),
        ("stop=inf", "stop"),
        ("order=up", "order"),
        ("page=zero", "page"),
        ("rows_per_page=-3", "rows_per_page"),
        ("limit=0", "limit"),
        ("callback=alert(1)", "callback"),
        ("format=xml", "format"),
        ("wat=1", "wat"),
    ] {
        let r = get(addr, &format!("/statscache/api/volume-1m?{query}"), None);
        assert_eq!(r.status, 400, "{query}");
        let body = r.json();
        assert_eq!(body["parameter"], parameter, "{query}");
        assert!(
            body["error"].as_str().unwrap().contains("expected"),
            "{body}"
        );
    }
    let r = get(
        addr,
        "/statscache/api/volume-by-topic-1m?rows_per_page=100000&limit=5000000&stop=9999999999",
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-capped"),
        Some("limit=1000 (asked 5000000), rows_per_page=100 (asked 100000)")
    );
    assert!(r.json().as_array().unwrap().len() <= 100);
    assert!(
        metric(
            addr,
            "fedhub_statscache_http_bad_requests_total{reason=\"start\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        get(addr, "/statscache/api/volume-1m", Some("image/png")).status,
        406
    );
    assert_eq!(
        get(addr, "/statscache/api/volume-1m/layout", None).status,
        404
    );
}

fn check_formats(addr: SocketAddr) {
    let csv = get(
        addr,
        "/statscache/api/volume-by-category-1h?stop=9999999999&rows_per_page=5",
        Some("text/csv"),
    );
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let mut lines = csv.body.lines();
    assert_eq!(lines.next(), Some("timestamp,category,volume"));
    assert_eq!(lines.count(), 5);
    let jsonp = get(
        addr,
        "/statscache/api/volume-1h?callback=show&stop=9999999999&rows_per_page=2",
        None,
    );
    assert!(
        jsonp.body.starts_with("show([") && jsonp.body.ends_with("])"),
        "{}",
        jsonp.body
    );
    assert_eq!(jsonp.header("content-type"), Some("application/javascript"));
    let releng_csv = get(
        addr,
        "/statscache/api/release-engineering-event-logs?format=csv&stop=9999999999",
        None,
    );
    let header = releng_csv.body.lines().next().unwrap();
    assert_eq!(header, "timestamp,category,category_constraint,message");
    // Messages are JSON with commas: quoted, so every line has four fields.
    assert!(
        releng_csv.body.lines().skip(1).all(|l| l.contains(",\"{")),
        "{}",
        releng_csv.body
    );
}

fn check_failures_are_isolated(addr: SocketAddr, sent: &[Sent]) {
    let badges = sent.iter().filter(|m| m.category() == "fedbadges").count() as f64;
    let pushes = sent.iter().filter(|m| m.category() == "git").count() as f64;
    assert_eq!(
        metric(
            addr,
            "fedhub_statscache_plugin_errors_total{plugin=\"faulty\"}"
        ),
        Some(badges + pushes)
    );
    // The others counted every badge.
    assert_eq!(
        total_volume(addr, "volume-by-category-1d", "&category=fedbadges") as f64,
        badges
    );
    assert_eq!(
        metric(
            addr,
            "fedhub_consumer_exceptions_total{consumer=\"StatsConsumer\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn sqlite_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.sqlite");
    exercise(&path.display().to_string());
    check_quote(&path);
}

/// `fedhub stats quote`'s figures, read from the database the hub left.
fn check_quote(path: &std::path::Path) {
    use fedhub_statscache::command::{hourly_volume, quote};
    let url = fedhub_storage::DatabaseUrl::sqlite(path);
    let database = fedhub_storage::Database::open(
        &url,
        "quote",
        &Default::default(),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let reader = fedhub_statscache::Reader::new(database);
    let sent = corpus(N, T0, 37.0, "aaaaaaaa");
    let now = T0 + 2.5 * 3600.0;
    let end = bucket(now, 3600);
    let hourly = hourly_volume(&reader, "buildsys", now).unwrap();
    let in_hour = |h: usize| {
        let label = end - (47 - h as i64) * 3600;
        sent.iter()
            .filter(|m| m.category() == "buildsys" && bucket(m.timestamp.unwrap(), 3600) == label)
            .count() as i64
    };
    let expected: Vec<i64> = (0..48).map(in_hour).collect();
    assert_eq!(hourly, expected);
    assert!(hourly.iter().sum::<i64>() > 0);
    let (first, second) = quote("buildsys", &hourly, now);
    // Nothing the day before: the change is reported as new.
    assert_eq!(
        first,
        "BLD, buildsys new (none the day before) over yesterday"
    );
    assert!(
        second.contains(" over 24 hours (")
            && second.chars().filter(|c| ('▁'..='█').contains(c)).count() == 24,
        "{second}"
    );
}

#[test]
fn postgresql() {
    let pg = fedhub_testkit::PgCluster::start();
    let url = pg.create_database("statscache");
    exercise(&url);
}

#[test]
fn unknown_plugins_are_refused_at_start_naming_them() {
    let config = fedhub_statscache::StatsConfig {
        plugins: vec!["volume-1m".into(), "volume-5s".into(), "nope".into()],
        ..Default::default()
    };
    let e = fedhub_statscache::StatsConsumer::from_config(config)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("\"volume-5s\", \"nope\""), "{e}");
    assert!(
        e.contains("volume-by-category-1m"),
        "lists the valid idents: {e}"
    );
}
