//! Awarder throughput: 200 rules (topic, category and expression triggers;
//! half of them long-term count criteria, half first-time ones), 100k messages
//! of demo traffic, the history store (SQLite) already holding 1M messages.
//! Prints messages per second through the awarder, p50/p99 handling time, the
//! awards made and the load average. No timed assertion: figures only.
//!
//! `nice -n 15 cargo bench -p fedhub-badges --bench awarder`
//! Settings: `BADGES_BENCH_HISTORY=N` (messages already stored, default
//! 1000000), `BADGES_BENCH_MESSAGES=N` (default 100000), `BADGES_BENCH_RULES=N`
//! (default 200), `BADGES_BENCH_DIR=path` (keep and reuse the databases).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fedhub_badges::awarder::{Awarder, AwarderOptions, SharedRules};
use fedhub_badges::consumer::load_rules;
use fedhub_badges::expr::Sandbox;
use fedhub_badges::tahrir::{Issuer, Tahrir};
use fedhub_history::{NewMessage, SqliteStore, Store};
use fedhub_storage::{Database, DatabaseUrl, PoolOptions};
use fedhub_tools::demo::Generator;
use serde_json::Value;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const SUFFIXES: [&str; 8] = [
    "buildsys.build.state.change",
    "git.receive",
    "bodhi.update.request.testing",
    "bodhi.update.comment",
    "fedbadges.badge.award",
    "planet.post.new",
    "fas.user.update",
    "meetbot.meeting.complete",
];
const RECIPIENTS: [&str; 8] = [
    "%(msg.owner)s",
    "%(msg.commit.username)s",
    "%(msg.agent)s",
    "%(msg.agent)s",
    "%(msg.user.username)s",
    "%(msg.username)s",
    "%(msg.user)s",
    "%(msg.owner)s",
];
const CATEGORIES: [&str; 7] = [
    "buildsys",
    "git",
    "bodhi",
    "fedbadges",
    "planet",
    "fas",
    "meetbot",
];

fn write_rules(dir: &Path, n: usize) {
    for k in 0..n {
        let s = k % SUFFIXES.len();
        let trigger = match k % 3 {
            0 => format!("  topic: {}", SUFFIXES[s]),
            1 => format!(
                "  all:\n  - category: {{any: [{}]}}\n  - topic: {}",
                CATEGORIES[s.min(CATEGORIES.len() - 1)],
                SUFFIXES[s]
            ),
            _ => format!(
                "  all:\n  - topic: {}\n  - expression: 'msg.topic.len() > 10 && msg.i % {} != 7'",
                SUFFIXES[s],
                2 + k % 5
            ),
        };
        let threshold = if k % 2 == 0 { 10 + k } else { 1 };
        let text = format!(
            "name: Bench Badge {k}\ndescription: d\ncreator: bench\ndiscussion: https://example.org/{k}\nimage_url: https://example.org/{k}.png\nissuer_id: bench\ntrigger:\n{trigger}\ncriteria:\n  datanommer:\n    filter:\n      topics: [\"%(topic)s\"]\n      users: [\"{r}\"]\n    operation: count\n    condition:\n      greater than or equal to: {threshold}\nrecipient: \"{r}\"\n",
            r = RECIPIENTS[s]
        );
        std::fs::write(dir.join(format!("rule-{k:03}.yml")), text).unwrap();
    }
}

fn fill(store: &dyn Store, generator: &mut Generator, n: usize, t0: u64) -> Vec<Value> {
    let mut kept = Vec::new();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let envelope = Value::Object(generator.next_envelope(t0 + i as u64 / 100));
        let e = fedhub::Envelope::from_value(envelope.clone()).unwrap();
        batch.push(NewMessage::from_envelope(&e));
        kept.push(envelope);
        if batch.len() == 10_000 {
            store.insert_batch(&batch).unwrap();
            batch.clear();
        }
    }
    store.insert_batch(&batch).unwrap();
    kept
}

fn main() {
    let history_n: usize = env_or("BADGES_BENCH_HISTORY", 1_000_000);
    let messages_n: usize = env_or("BADGES_BENCH_MESSAGES", 100_000);
    let rules_n: usize = env_or("BADGES_BENCH_RULES", 200);
    let (dir, _temp) = match std::env::var("BADGES_BENCH_DIR") {
        Ok(d) => {
            std::fs::create_dir_all(&d).unwrap();
            (std::path::PathBuf::from(d), None)
        }
        Err(_) => {
            let t = tempfile::tempdir().unwrap();
            (t.path().to_path_buf(), Some(t))
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let history_path = dir.join(format!("history-{history_n}.sqlite"));
    let fresh = !history_path.exists();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&history_path).unwrap());
    if fresh {
        let began = Instant::now();
        let mut old = Generator::new(1, "org.fedoraproject", "prod");
        fill(&*store, &mut old, history_n, now - 30 * 86_400);
        eprintln!(
            "history: {history_n} messages stored in {:.1} s",
            began.elapsed().as_secs_f64()
        );
    }
    // The traffic to award on, stored first (the awarder runs after Nommer).
    let mut traffic_gen = Generator::new(now, "org.fedoraproject", "prod");
    let traffic = fill(&*store, &mut traffic_gen, messages_n, now - 600);
    let rules_dir = dir.join(format!("rules-{now}"));
    std::fs::create_dir_all(&rules_dir).unwrap();
    write_rules(&rules_dir, rules_n);
    let badges_path = dir.join(format!("badges-{now}.sqlite"));
    let db = Database::open(
        &DatabaseUrl::sqlite(&badges_path),
        "FedoraBadgesConsumer",
        &PoolOptions::default(),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let tahrir = Tahrir::open(db).unwrap();
    let sandbox = Sandbox::default();
    let issuer_id = tahrir
        .ensure_issuer(&Issuer {
            origin: "o".into(),
            name: "bench".into(),
            org: "o".into(),
            contact: "c".into(),
        })
        .unwrap();
    let rules = load_rules(&rules_dir, &sandbox, &tahrir, issuer_id, None).unwrap();
    assert!(rules.errors.is_empty(), "{:?}", rules.errors);
    let shared: SharedRules = Arc::new(RwLock::new(Arc::new(rules)));
    let mut awarder = Awarder::new(
        shared,
        sandbox,
        store.clone(),
        tahrir.clone(),
        AwarderOptions::default(),
    );
    let publish = |_: &str, _: Value| -> Result<(), String> { Ok(()) };
    let mut times = Vec::with_capacity(traffic.len());
    let mut awards = 0usize;
    let mut errors = 0usize;
    let began = Instant::now();
    for body in &traffic {
        let t = Instant::now();
        let topic = body["topic"].as_str().unwrap_or_default();
        let outcome = awarder.handle(topic, body, std::time::SystemTime::now(), &publish);
        times.push(t.elapsed());
        awards += outcome.awards.len();
        errors += outcome.errors.len();
    }
    let elapsed = began.elapsed();
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "awarder: {} messages, {rules_n} rules, history {} messages: {:.0} msg/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {awards} awards, {errors} rule errors; load average {}",
        traffic.len(),
        store.message_count().unwrap_or(0),
        traffic.len() as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*times.last().unwrap()),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    );
    println!("command: nice -n 15 cargo bench -p fedhub-badges --bench awarder");
}
