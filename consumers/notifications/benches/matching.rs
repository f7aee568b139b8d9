//! Matching throughput: 10,000 users with 3 filters of 3 rules each, demo
//! traffic (`fedhub demo`'s generator), on one core.
//!
//! - the way fedhub matches: preferences compiled in memory and indexed, a
//!   per-message rule memo (messages per second, p50/p99 per message);
//! - the old way, in the same run, as FMN did before its caches: every rule of
//!   every user read from the database for every message, then evaluated.
//!
//! `cargo bench -p fedhub-notifications --bench matching`
//! (`FMN_BENCH_USERS`, `FMN_BENCH_MESSAGES`, `FMN_BENCH_OLD_MESSAGES` change the sizes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use fedhub_notifications::cache::PreferenceCache;
use fedhub_notifications::ownership::{FileSource, Ownership, OwnershipFile, PackageAccess};
use fedhub_notifications::rules::{MessageFacts, RuleLibrary};
use fedhub_notifications::store::FmnStore;
use fedhub_storage::sql::{execute, insert_returning_id, Param};
use fedhub_storage::{Database, DatabaseUrl, PoolOptions};
use serde_json::{json, Value};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A rule: code path, arguments, negated.
type BenchRule = (&'static str, Value, bool);

/// The three filters of user `i`: (name, rules).
fn filters(i: usize) -> Vec<(String, Vec<BenchRule>)> {
    let nick = format!("user{i}");
    vec![
        (
            "mine".into(),
            vec![
                ("fmn.rules:user_filter", json!({"fasnick": nick}), false),
                ("fmn.rules:koji_build_started", Value::Null, true),
                ("fmn.rules:bodhi_catchall", Value::Null, true),
            ],
        ),
        (
            "my packages".into(),
            vec![
                (
                    "fmn.rules:user_package_filter",
                    json!({"fasnick": nick}),
                    false,
                ),
                ("fmn.rules:user_filter", json!({"fasnick": nick}), true),
                (
                    "fmn.rules:koji_instance",
                    json!({"instance": "ppc,s390,arm"}),
                    true,
                ),
            ],
        ),
        (
            "watched package builds".into(),
            vec![
                (
                    "fmn.rules:package_filter",
                    json!({"package": format!("python-pkg{}", i * 2)}),
                    false,
                ),
                ("fmn.rules:koji_catchall", Value::Null, false),
                ("fmn.rules:koji_build_started", Value::Null, true),
            ],
        ),
    ]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let users = env("FMN_BENCH_USERS", 10_000);
    let messages = env("FMN_BENCH_MESSAGES", 200_000);
    let old_messages = env("FMN_BENCH_OLD_MESSAGES", 20);
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let db = Database::open(
        &DatabaseUrl::sqlite(dir.path().join("fmn.sqlite")),
        "bench",
        &PoolOptions::default(),
        &registry,
    )
    .unwrap();
    let store = FmnStore::open(db.clone()).unwrap();
    let began = Instant::now();
    db.transaction(|tx| {
        let e = |e| fedhub_storage::StorageError::database(db.url(), "bench setup", e);
        for i in 0..users {
            let openid = format!("user{i}.id.fedoraproject.org");
            execute(tx, "INSERT INTO users (openid, openid_url, api_key, created_on) VALUES ($1, $2, 'k', '2026-01-01 00:00:00')", &[Param::Text(&openid), Param::Text(&format!("https://{openid}"))]).map_err(e)?;
            let pref = insert_returning_id(tx, "INSERT INTO preferences (created_on, enabled, markup_messages, triggered_by_links, shorten_links, \"verbose\", openid, context_name) VALUES ('2026-01-01 00:00:00', $1, $2, $2, $2, $2, $3, 'email')", &[Param::Bool(true), Param::Bool(false), Param::Text(&openid)]).map_err(e)?;
            execute(tx, "INSERT INTO detail_values (created_on, value, preference_id) VALUES ('2026-01-01 00:00:00', $1, $2)", &[Param::Text(&format!("user{i}@example.org")), Param::Int(pref)]).map_err(e)?;
            for (name, rules) in filters(i) {
                let filter = insert_returning_id(tx, "INSERT INTO filters (created_on, name, active, oneshot, preference_id) VALUES ('2026-01-01 00:00:00', $1, $2, $3, $4)", &[Param::Text(&name), Param::Bool(true), Param::Bool(false), Param::Int(pref)]).map_err(e)?;
                for (code_path, args, negated) in rules {
                    execute(tx, "INSERT INTO rules (created_on, filter_id, code_path, _arguments, negated) VALUES ('2026-01-01 00:00:00', $1, $2, $3, $4)", &[Param::Int(filter), Param::Text(code_path), Param::Text(&args.to_string()), Param::Bool(negated)]).map_err(e)?;
                }
            }
        }
        Ok(())
    })
    .unwrap();
    println!(
        "setup: {users} users, {} filters, {} rules written in {:.1} s",
        users * 3,
        users * 9,
        began.elapsed().as_secs_f64()
    );

    // Ownership: user<i> owns python-pkg<i>; groups of 10 share python-pkg<i+1>.
    let mut data = OwnershipFile::default();
    for i in 0..users.max(20_000) {
        let mut access = PackageAccess::default();
        access.owner.push(format!("user{}", i % users));
        if i % 10 == 0 {
            access.commit.push(format!("group::sig{}", i / 10));
        }
        data.packages.insert(format!("python-pkg{i}"), access);
    }
    for g in 0..users / 10 {
        data.groups.insert(
            format!("sig{g}"),
            (0..10).map(|k| format!("user{}", g * 10 + k)).collect(),
        );
    }
    let ownership = Ownership::new(Arc::new(FileSource::from_data(data)));

    // Demo traffic, as bytes on the wire.
    let mut generator = fedhub_tools::demo::Generator::new(7, "org.fedoraproject", "prod");
    let traffic: Vec<(String, String)> = (0..messages.min(50_000))
        .map(|i| generator.next_frames(1_795_392_000 + i as u64))
        .collect();

    let library = RuleLibrary::standard();
    let cache = PreferenceCache::new(library.clone(), vec!["email".into()]);
    let began = Instant::now();
    cache.load_all(store.load_all().unwrap());
    println!(
        "full load and compile: {:.0} ms ({} users, {} filters, {} index keys, {} unindexed users)",
        began.elapsed().as_secs_f64() * 1e3,
        cache.user_count(),
        cache.filter_count(),
        cache.index_keys(),
        cache.unindexed_count()
    );

    // fedhub: compiled, indexed, memoized. Parse + match per message, as the consumer does.
    let mut times = Vec::with_capacity(messages);
    let mut matches = 0usize;
    let began = Instant::now();
    for i in 0..messages {
        let (topic, body) = &traffic[i % traffic.len()];
        let t = Instant::now();
        let body: serde_json::Map<String, Value> = serde_json::from_str(body).unwrap();
        let facts = MessageFacts::new(topic, &body);
        matches += cache.recipients(&facts, &ownership).len();
        times.push(t.elapsed().as_secs_f64());
    }
    let total = began.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let fast_rate = messages as f64 / total;
    println!(
        "fedhub (compiled + indexed): {messages} messages in {total:.2} s = {fast_rate:.0} msg/s on one core; per message p50 {:.1} us, p99 {:.1} us, max {:.1} us; {matches} matches ({:.2} per message)",
        percentile(&times, 0.5) * 1e6,
        percentile(&times, 0.99) * 1e6,
        times.last().unwrap() * 1e6,
        matches as f64 / messages as f64
    );

    // The old way: every rule of every user from the database, per message.
    let mut old_matches = 0usize;
    let began = Instant::now();
    for (topic, body) in traffic.iter().take(old_messages) {
        let body: serde_json::Map<String, Value> = serde_json::from_str(body).unwrap();
        let facts = MessageFacts::new(topic, &body);
        let prefs = store.load_all().unwrap();
        let mut memo: HashMap<(String, String, bool), bool> = HashMap::new();
        for pref in prefs.iter().filter(|p| p.can_send()) {
            for filter in pref.filters.iter().filter(|f| f.active) {
                let matched = !filter.rules.is_empty()
                    && filter.rules.iter().all(|r| {
                        let key = (r.code_path.clone(), r.arguments.to_string(), r.negated);
                        *memo.entry(key).or_insert_with(|| {
                            library
                                .compile(&r.code_path, &r.arguments)
                                .ok()
                                .and_then(|c| c.evaluate(&facts, &ownership).ok())
                                .map(|v| v != r.negated)
                                .unwrap_or(false)
                        })
                    });
                if matched {
                    old_matches += 1;
                    break;
                }
            }
        }
    }
    let old_total = began.elapsed().as_secs_f64();
    let old_rate = old_messages as f64 / old_total;
    // Same answers on the same messages.
    let same: usize = traffic
        .iter()
        .take(old_messages)
        .map(|(topic, body)| {
            let body: serde_json::Map<String, Value> = serde_json::from_str(body).unwrap();
            cache
                .recipients(&MessageFacts::new(topic, &body), &ownership)
                .len()
        })
        .sum();
    println!(
        "old way (all rules from the database per message): {old_messages} messages in {old_total:.2} s = {old_rate:.2} msg/s ({:.0} ms per message); {old_matches} matches, fedhub found {same} on the same messages",
        old_total / old_messages as f64 * 1e3
    );
    assert_eq!(old_matches, same, "both ways find the same recipients");
    println!(
        "ratio: fedhub matches {:.0}x faster than the old way",
        fast_rate / old_rate
    );
}
