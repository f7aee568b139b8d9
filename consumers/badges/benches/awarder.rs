//! Awarder throughput: 200 rules (a third each triggered by a topic, a
//! category and an expression; half with a count threshold over the history
//! store, half a first occurrence), 100k messages of demo traffic, the history
//! store (SQLite) already holding 1M messages. Each message is stored in the
//! history first, then handed to the awarder (as `after = ["Nommer"]` orders
//! it in a hub); the leaderboard passes run every second on the same thread
//! (a hub runs them on its `RankProducer`). Prints messages per second through
//! the awarder, p50/p99 handling time, the awards made and the load average. No timed assertion:
//! figures only. The same awarder inside a running hub, fed over ZeroMQ and
//! watched on the monitoring socket: `benches/hub.rs`.
//!
//! `nice -n 15 cargo bench -p fedhub-badges --bench awarder`
//! Settings: `BADGES_BENCH_HISTORY=N` (messages already stored, default
//! 1000000), `BADGES_BENCH_MESSAGES=N` (default 100000), `BADGES_BENCH_RULES=N`
//! (default 200), `BADGES_BENCH_DIR=path` (keep the 1M-message history there
//! and reuse it; each run works on a copy), `BADGES_BENCH_MATURE=0|1`
//! (default 1: the badges database starts with the awards the history already
//! earned, as on a hub that ran while the history grew; 0: empty, so nearly
//! every message awards something).

mod common;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::*;
use fedhub_badges::awarder::{Awarder, AwarderOptions, SharedRules};
use fedhub_badges::consumer::load_rules;
use fedhub_badges::expr::Sandbox;
use fedhub_badges::tahrir::{Issuer, Tahrir};
use fedhub_history::{NewMessage, SqliteStore, Store};
use fedhub_storage::{Database, DatabaseUrl, PoolOptions};
use fedhub_tools::demo::Generator;
use serde_json::Value;

fn main() {
    let history_n: usize = env_or("BADGES_BENCH_HISTORY", 1_000_000);
    let messages_n: usize = env_or("BADGES_BENCH_MESSAGES", 100_000);
    let rules_n: usize = env_or("BADGES_BENCH_RULES", 200);
    let (dir, _temp) = bench_dir();
    let now = now_secs();
    let (history_path, tally) = history_file(&dir, history_n);
    let mature = env_or("BADGES_BENCH_MATURE", 1) == 1;
    let run_path = dir.join(format!("history-run-{now}.sqlite"));
    copy_history(&history_path, &run_path);
    let began = Instant::now();
    let sqlite = SqliteStore::open(&run_path).unwrap();
    eprintln!(
        "history: opened ({:?}) in {:.1} s",
        sqlite.index_origin(),
        began.elapsed().as_secs_f64()
    );
    let store: Arc<dyn Store> = Arc::new(sqlite);
    // The traffic to award on, made up front; stored in steps of a thousand
    // just before the awarder sees them (the awarder runs after Nommer,
    // whose batches commit about that many at once under load).
    let mut traffic_gen = Generator::new(now, "org.fedoraproject", "prod");
    let traffic: Vec<Value> = (0..messages_n)
        .map(|i| Value::Object(traffic_gen.next_envelope(now - 600 + i as u64 / 200)))
        .collect();
    let rules_dir = dir.join(format!("rules-{now}"));
    std::fs::create_dir_all(&rules_dir).unwrap();
    let mix = write_rules(&rules_dir, rules_n);
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
    let preawarded = if mature {
        preaward(&tahrir, rules_n, &tally)
    } else {
        0
    };
    let shared: SharedRules = Arc::new(RwLock::new(Arc::new(rules)));
    let mut awarder = Awarder::new(
        shared,
        sandbox,
        store.clone(),
        tahrir.clone(),
        AwarderOptions::default(),
    );
    let advances = std::sync::atomic::AtomicU64::new(0);
    let publish = |topic: &str, _: Value| -> Result<(), String> {
        if topic == "fedbadges.person.rank.advance" {
            advances.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    };
    // The leaderboard passes a hub's RankProducer runs (every second, or
    // further apart when slow), run here between messages on the same
    // thread and counted in the handling time.
    let ranks = awarder.ranks();
    let rank_interval = Duration::from_secs(1);
    let mut next_pass = Instant::now() + rank_interval;
    let mut passes = 0usize;
    let mut ranking = Duration::ZERO;
    let mut times = Vec::with_capacity(traffic.len());
    let mut awards = 0usize;
    let mut errors = 0usize;
    let mut storing = Duration::ZERO;
    let mut handling = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    // Handling times of the messages that awarded nothing.
    let mut quiet = Vec::with_capacity(traffic.len());
    // (handling time, awards) per 10k messages.
    let mut segments: Vec<(Duration, usize)> = Vec::new();
    for (n, chunk) in traffic.chunks(1000).enumerate() {
        if n % 10 == 0 {
            segments.push((Duration::ZERO, 0));
        }
        let awards_before = awards;
        let t = Instant::now();
        let batch: Vec<NewMessage> = chunk
            .iter()
            .map(|b| NewMessage::from_envelope(&fedhub::Envelope::from_value(b.clone()).unwrap()))
            .collect();
        store.insert_batch(&batch).unwrap();
        storing += t.elapsed();
        let began = Instant::now();
        let cpu_began = thread_cpu();
        for body in chunk {
            let t = Instant::now();
            let topic = body["topic"].as_str().unwrap_or_default();
            let outcome = awarder.handle(topic, body, std::time::SystemTime::now(), &publish);
            times.push(t.elapsed());
            if outcome.awards.is_empty() {
                quiet.push(*times.last().unwrap());
            }
            awards += outcome.awards.len();
            errors += outcome.errors.len();
            if Instant::now() >= next_pass {
                let pass = ranks.update(&publish).unwrap();
                passes += 1;
                ranking += pass.took;
                next_pass = Instant::now()
                    + fedhub_badges::ranks::RankKeeper::pause_after(rank_interval, pass.took);
            }
        }
        if n + 1 == traffic.len().div_ceil(1000) {
            let pass = ranks.update(&publish).unwrap();
            passes += 1;
            ranking += pass.took;
        }
        handling += began.elapsed();
        cpu += thread_cpu() - cpu_began;
        let last = segments.last_mut().unwrap();
        last.0 += began.elapsed();
        last.1 += awards - awards_before;
    }
    let elapsed = handling;
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "rules: {rules_n} ({} topic, {} category, {} expression triggers ({} of them alone); {} count thresholds, {} first occurrences)",
        mix.topic, mix.category, mix.expression, mix.expression_alone, mix.count_threshold, mix.first_time
    );
    println!(
        "badges database: {} ({preawarded} awards the history earned already held)",
        if mature {
            "mature"
        } else {
            "empty (BADGES_BENCH_MATURE=0)"
        }
    );
    println!(
        "awarder: {} messages, history {} messages at the end: {:.0} msg/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {awards} awards, {} rank advances, {errors} rule errors; storing the traffic took {:.1} s (not counted); load average {}",
        traffic.len(),
        store.message_count().unwrap_or(0),
        traffic.len() as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*times.last().unwrap()),
        advances.load(std::sync::atomic::Ordering::Relaxed),
        storing.as_secs_f64(),
        load_average(),
    );
    let per_segment: Vec<String> = segments
        .iter()
        .map(|(d, a)| format!("{:.0} msg/s ({a} awards)", 10_000.0 / d.as_secs_f64()))
        .collect();
    println!("awarder: per 10k messages: {}", per_segment.join(", "));
    quiet.sort();
    let quiet_total: Duration = quiet.iter().sum();
    println!(
        "awarder: the {} messages that awarded nothing: {:.0} msg/s, p50 {:.3} ms, p99 {:.3} ms (the other {} took {:.1} s of {:.1} s)",
        quiet.len(),
        quiet.len() as f64 / quiet_total.as_secs_f64(),
        ms(quiet[quiet.len() / 2]),
        ms(quiet[(quiet.len() as f64 * 0.99) as usize]),
        traffic.len() - quiet.len(),
        (elapsed - quiet_total).as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    println!(
        "awarder: CPU time handling {:.2} s of {:.2} s elapsed: {:.0} msg per CPU second (the machine's other load takes the rest)",
        cpu.as_secs_f64(),
        elapsed.as_secs_f64(),
        traffic.len() as f64 / cpu.as_secs_f64()
    );
    println!(
        "awarder: {passes} leaderboard passes took {:.2} s in all ({:.1} ms each), counted above",
        ranking.as_secs_f64(),
        ranking.as_secs_f64() * 1000.0 / passes.max(1) as f64
    );
    println!("command: nice -n 15 cargo bench -p fedhub-badges --bench awarder");
    drop(awarder);
    drop(store);
    for suffix in ["", "-wal", "-shm", ".index"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", run_path.display()));
        let _ = std::fs::remove_file(format!("{}{suffix}", badges_path.display()));
    }
    let _ = std::fs::remove_dir_all(&rules_dir);
}
