//! History store benchmark: ingest rate through the consumer's path, then the
//! ten filter combinations of Fedora's 2015 datagrepper measurement, first page,
//! at 100k and 2M messages, on SQLite (the default) or PostgreSQL.
//!
//! Run: `cargo bench -p fedhub-history --bench query` (SQLite), or
//! `HISTORY_BENCH_DATABASE=postgres cargo bench -p fedhub-history --bench query`
//! (a throwaway PostgreSQL cluster from the testkit, as the tests start one).
//!
//! Environment: `HISTORY_BENCH_SIZES` (default `100000,2000000`),
//! `HISTORY_BENCH_RUNS` (default 30), `HISTORY_BENCH_DIR` (where the SQLite
//! databases go; default a temporary directory removed at the end),
//! `HISTORY_BENCH_SQL_RUNS` (SQLite: runs of the SQL-only baseline, default 5;
//! 0 skips it), `HISTORY_BENCH_DATABASE`: `sqlite` (default), `postgres` (a
//! throwaway cluster, one database per size), or a `postgres://` URL (one size;
//! its database must be empty or hold exactly that many messages, which are
//! then reused).
//!
//! On PostgreSQL the corpus is loaded through the same batched writer into
//! `PgStore`, then `VACUUM ANALYZE` is run (what autovacuum does after a
//! load: statistics, and the visibility map index-only scans rely on) before
//! the queries are timed.
//!
//! The corpus comes from `fedhub_tools::demo::Generator` (buildsys-heavy, long tail of
//! users and packages), one message every 4 seconds (about 21,600 a day, Fedora's
//! rate when datagrepper was measured), so a one-day `delta` holds the same
//! number of messages at both sizes and the queries without a time window cover
//! the whole archive.

mod common;

use common::{bench_dir, command, cpu_secs, env_or, load_average};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedhub::Envelope;
use fedhub_history::{
    BatchWriter, Filter, NewMessage, PgStore, SqliteStore, Store, WriterOptions, WriterState,
};
use fedhub_storage::{Connection, DatabaseUrl, PoolOptions};
use fedhub_tools::demo::Generator;

const SPACING_SECS: u64 = 4;
const START_TS: u64 = 1_700_000_000;
const CHUNK: usize = 100_000;
const DAY: f64 = 86_400.0;

/// The writer's batch size (`HISTORY_BENCH_BATCH`, default: the consumer's default).
fn batch_messages() -> usize {
    env_or(
        "HISTORY_BENCH_BATCH",
        WriterOptions::default().batch_messages,
    )
}

struct Ingest {
    messages: usize,
    secs: f64,
    db_bytes: u64,
    /// Decode + extraction alone (the consumer thread's share), µs per message.
    extract_us: f64,
    /// `insert_batch` alone (the writer thread's share), µs per message.
    store_us: f64,
    /// CPU time of the timed ingest (both threads), µs per message.
    cpu_us: f64,
}

/// Where the benchmark's databases are.
enum Target {
    /// SQLite files in a directory.
    Sqlite(std::path::PathBuf),
    /// A throwaway PostgreSQL cluster: one database per size.
    Cluster(fedhub_testkit::PgCluster),
    /// A PostgreSQL database given by URL.
    Url(String),
}

/// A store under test.
struct Opened {
    store: Arc<dyn Store>,
    /// Set on SQLite: its SQL-only path, the file.
    sqlite: Option<Arc<SqliteStore>>,
    /// Set on PostgreSQL.
    pg: Option<Arc<PgStore>>,
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Sqlite(_) => "SQLite",
            Target::Cluster(_) | Target::Url(_) => "PostgreSQL",
        }
    }

    /// The database of `size` messages (`scratch`: an empty one beside it).
    fn open(&self, size: usize, scratch: bool) -> Opened {
        let suffix = if scratch { "-scratch" } else { "" };
        let url = match self {
            Target::Sqlite(dir) => {
                let path = dir.join(format!("history-{size}{suffix}.sqlite"));
                if scratch {
                    for s in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{s}", path.display()));
                    }
                }
                let store = Arc::new(SqliteStore::open(&path).expect("open store"));
                return Opened {
                    store: store.clone(),
                    sqlite: Some(store),
                    pg: None,
                };
            }
            Target::Cluster(pg) => {
                let name = format!("history_{size}{}", suffix.replace('-', "_"));
                let exists = pg.psql(
                    "fedhub",
                    &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
                ) == "1";
                if exists && scratch {
                    pg.psql("fedhub", &format!("DROP DATABASE {name}"));
                }
                if !exists || scratch {
                    pg.create_database(&name)
                } else {
                    pg.url_for(&name)
                }
            }
            Target::Url(url) => url.clone(),
        };
        let parsed = DatabaseUrl::parse(&url).expect("a postgres:// URL");
        let store = Arc::new(
            PgStore::open(
                &parsed,
                &PoolOptions::default(),
                &prometheus::Registry::new(),
            )
            .expect("open PostgreSQL store"),
        );
        Opened {
            store: store.clone(),
            sqlite: None,
            pg: Some(store),
        }
    }
}

/// `VACUUM ANALYZE` on a PostgreSQL store (what autovacuum does after a load).
fn vacuum(store: &PgStore) {
    match store.database().connection().expect("connection") {
        Connection::Postgres(mut client) => client
            .batch_execute("VACUUM ANALYZE")
            .expect("VACUUM ANALYZE"),
        Connection::Sqlite(_) => unreachable!(),
    }
}

/// Feeds `n` generated messages through decode -> NewMessage -> BatchWriter ->
/// the store, timing only that path (generation is done beforehand, per chunk).
fn ingest(target: &Target, store: &Arc<dyn Store>, size: usize) -> Ingest {
    let n = size;
    let state = WriterState::new();
    let writer = BatchWriter::spawn(
        store.clone(),
        WriterOptions {
            batch_messages: batch_messages(),
            ..WriterOptions::default()
        },
        state.clone(),
    )
    .expect("writer thread");
    let mut generator = Generator::new(42, "org.fedoraproject", "prod");
    let mut timed = Duration::ZERO;
    let mut cpu = 0.0;
    let mut extract = Duration::ZERO;
    let mut stored = Duration::ZERO;
    let mut done = 0usize;
    while done < n {
        let size = CHUNK.min(n - done);
        let frames: Vec<(String, String)> = (0..size)
            .map(|k| generator.next_frames(START_TS + ((done + k) as u64) * SPACING_SECS))
            .collect();
        if done == 0 {
            // The two halves of the path on their own, on the first chunk (into a
            // scratch database, so the timed run below starts from the same state).
            let alone = target.open(size, true).store;
            let began = cpu_secs("thread-self");
            let prepared: Vec<NewMessage> = frames
                .iter()
                .map(|(topic, body)| {
                    let envelope = Envelope::decode(topic.as_bytes(), body.as_bytes(), 1 << 20)
                        .expect("generated messages decode");
                    NewMessage::from_envelope(&envelope)
                })
                .collect();
            extract = Duration::from_secs_f64(cpu_secs("thread-self") - began);
            let began = cpu_secs("thread-self");
            for batch in prepared.chunks(batch_messages()) {
                alone.insert_batch(batch).expect("insert");
            }
            stored = Duration::from_secs_f64(cpu_secs("thread-self") - began);
        }
        let began = Instant::now();
        let cpu_began = cpu_secs("self");
        for (topic, body) in &frames {
            let envelope = Envelope::decode(topic.as_bytes(), body.as_bytes(), 1 << 20)
                .expect("generated messages decode");
            writer
                .submit(NewMessage::from_envelope(&envelope))
                .expect("writer accepts");
        }
        writer
            .flush(Duration::from_secs(600))
            .expect("writer commits");
        timed += began.elapsed();
        cpu += cpu_secs("self") - cpu_began;
        done += size;
        eprint!(
            "\r  ingested {done}/{n} (last chunk {:.0} msg/s)",
            size as f64 / began.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    let health = state.health();
    assert_eq!(
        health.stored as usize, n,
        "every message stored: {health:?}"
    );
    writer.shutdown();
    let db_bytes = database_bytes(target, store);
    let first = CHUNK.min(n) as f64;
    Ingest {
        messages: n,
        secs: timed.as_secs_f64(),
        db_bytes,
        extract_us: extract.as_secs_f64() * 1e6 / first,
        store_us: stored.as_secs_f64() * 1e6 / first,
        cpu_us: cpu * 1e6 / n as f64,
    }
}

/// The size of the database holding `store`.
fn database_bytes(target: &Target, store: &Arc<dyn Store>) -> u64 {
    match target {
        Target::Sqlite(_) => ["", "-wal"]
            .iter()
            .filter_map(|s| {
                std::fs::metadata(format!("{}{s}", store.location()))
                    .ok()
                    .map(|m| m.len())
            })
            .sum(),
        Target::Cluster(pg) => {
            let name = store
                .location()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            pg.psql("fedhub", &format!("SELECT pg_database_size('{name}')"))
                .parse()
                .unwrap_or(0)
        }
        Target::Url(_) => 0,
    }
}

/// The ten combinations, as measured in 2015.
fn queries(now: f64) -> Vec<(&'static str, Filter)> {
    let base = Filter::new().at(now);
    vec![
        ("user+delta", base.clone().user("ralph").delta(DAY)),
        (
            "category+delta",
            base.clone().category("buildsys").delta(DAY),
        ),
        (
            "topic+delta",
            base.clone()
                .topic("org.fedoraproject.prod.bodhi.update.comment")
                .delta(DAY),
        ),
        (
            "not_package+delta",
            base.clone().not_package("kernel").delta(DAY),
        ),
        (
            "category+user",
            base.clone().category("bodhi").user("ralph"),
        ),
        (
            "topic+user",
            base.clone()
                .topic("org.fedoraproject.prod.git.receive")
                .user("pingou"),
        ),
        (
            "user+not_package",
            base.clone().user("ralph").not_package("kernel"),
        ),
        (
            "category+topic",
            base.clone()
                .category("buildsys")
                .topic("org.fedoraproject.prod.buildsys.build.state.change"),
        ),
        (
            "category+not_package",
            base.clone().category("buildsys").not_package("kernel"),
        ),
        (
            "topic+not_package",
            base.clone()
                .topic("org.fedoraproject.prod.git.receive")
                .not_package("python3"),
        ),
    ]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Timing {
    p50_ms: f64,
    p95_ms: f64,
    total: u64,
}

fn time_query(runs: usize, mut f: impl FnMut() -> u64) -> Timing {
    for _ in 0..3.min(runs) {
        f();
    }
    let mut samples = Vec::with_capacity(runs);
    let mut total = 0;
    for _ in 0..runs {
        let began = Instant::now();
        total = f();
        samples.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Timing {
        p50_ms: percentile(&samples, 50.0),
        p95_ms: percentile(&samples, 95.0),
        total,
    }
}

struct SizeResult {
    size: usize,
    ingest: Ingest,
    reopen_ms: f64,
    rows: Vec<(&'static str, Timing, Option<Timing>)>,
}

fn run_size(target: &Target, size: usize, runs: usize, sql_runs: usize) -> SizeResult {
    let opened = target.open(size, false);
    let store = opened.store.clone();
    let stored = store.message_count().unwrap_or(0) as usize;
    let ingest_result = if stored == size {
        eprintln!("  reusing {}", store.location());
        Ingest {
            messages: 0,
            secs: 0.0,
            db_bytes: 0,
            extract_us: 0.0,
            store_us: 0.0,
            cpu_us: 0.0,
        }
    } else {
        assert_eq!(
            stored,
            0,
            "{} holds {stored} messages, neither none nor {size}",
            store.location()
        );
        ingest(target, &store, size)
    };
    drop(store);
    drop(opened);
    let began = Instant::now();
    let reopened = target.open(size, false);
    let reopen_ms = began.elapsed().as_secs_f64() * 1000.0;
    if let Some(pg) = &reopened.pg {
        let began = Instant::now();
        vacuum(pg);
        eprintln!("  VACUUM ANALYZE {:.1} s", began.elapsed().as_secs_f64());
    }
    let store = reopened.store;
    let sql_store = reopened.sqlite;
    let now = (START_TS + (size as u64 - 1) * SPACING_SECS) as f64;
    let mut rows = Vec::new();
    for (name, filter) in queries(now) {
        let sql = match &sql_store {
            Some(sql_store) => {
                // The index and SQL must agree before either is timed.
                let fast = store.grep(&filter).expect("query");
                let slow = sql_store.grep_sql(&filter).expect("sql query");
                assert_eq!(fast.total, slow.total, "{name}: totals differ");
                let ids =
                    |p: &fedhub_history::Page| p.messages.iter().map(|m| m.id).collect::<Vec<_>>();
                assert_eq!(ids(&fast), ids(&slow), "{name}: pages differ");
                (sql_runs > 0).then(|| {
                    time_query(sql_runs, || sql_store.grep_sql(&filter).expect("sql").total)
                })
            }
            None => None,
        };
        let timing = time_query(runs, || store.grep(&filter).expect("query").total);
        eprintln!(
            "  {name:<22} total {:>8}  p50 {:>8.2} ms",
            timing.total, timing.p50_ms
        );
        rows.push((name, timing, sql));
    }
    SizeResult {
        size,
        ingest: ingest_result,
        reopen_ms,
        rows,
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("HISTORY_BENCH_SIZES")
        .unwrap_or_else(|_| "100000,2000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = env_or("HISTORY_BENCH_RUNS", 30);
    let sql_runs: usize = env_or("HISTORY_BENCH_SQL_RUNS", 5);
    let (dir, _temp) = bench_dir("HISTORY_BENCH_DIR");
    let target = match std::env::var("HISTORY_BENCH_DATABASE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Target::Sqlite(dir.clone()),
        Ok("postgres") => Target::Cluster(fedhub_testkit::PgCluster::start()),
        Ok(url) if url.starts_with("postgres://") => {
            assert!(
                sizes.len() == 1,
                "a postgres:// URL holds one size: set HISTORY_BENCH_SIZES to one"
            );
            Target::Url(url.to_string())
        }
        Ok(other) => {
            panic!("HISTORY_BENCH_DATABASE: sqlite, postgres or a postgres:// URL, not {other}")
        }
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let place = match &target {
        Target::Sqlite(dir) => format!("SQLite files in {}", dir.display()),
        Target::Cluster(pg) => format!(
            "a throwaway PostgreSQL cluster (testkit PgCluster, {}, {})",
            pg.psql("fedhub", "SHOW server_version"),
            pg.psql(
                "fedhub",
                "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings \
                 WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'work_mem', \
                 'max_parallel_workers_per_gather')"
            )
        ),
        Target::Url(url) => fedhub_storage::mask_password(url),
    };
    println!(
        "fedhub-history query benchmark ({cores} cores, shared; load {}; {place})",
        load_average()
    );
    println!("corpus: fedhub_tools::demo::Generator seed 42, one message every {SPACING_SECS} s; delta = 1 day; first page of 25; {runs} runs after 3 warm-ups");
    let mut results = Vec::new();
    for size in sizes.iter().copied().filter(|s| *s > 0) {
        eprintln!("size {size}:");
        results.push(run_size(&target, size, runs, sql_runs));
    }
    println!();
    println!(
        "ingest (decode -> extract -> writer thread -> {}, batches of {}):",
        target.name(),
        batch_messages()
    );
    for r in &results {
        if r.ingest.messages == 0 {
            println!("  {:>9} messages: reused an existing database", r.size);
            continue;
        }
        println!(
            "  {:>9} messages in {:>6.1} s = {:>7.0} msg/s; database {:.0} MiB; reopen {:.0} ms",
            r.ingest.messages,
            r.ingest.secs,
            r.ingest.messages as f64 / r.ingest.secs,
            r.ingest.db_bytes as f64 / (1 << 20) as f64,
            r.reopen_ms
        );
        println!(
            "  {:>9} CPU {:.1} us/msg for both threads; first {}k alone (thread CPU): decode+extract {:.1} us/msg, insert_batch {:.1} us/msg into an empty database",
            "",
            r.ingest.cpu_us,
            CHUNK.min(r.ingest.messages) / 1000,
            r.ingest.extract_us,
            r.ingest.store_us
        );
    }
    println!();
    let mut header = format!("{:<22}", "query");
    for r in &results {
        header.push_str(&format!(
            " | {:>9} total  p50 ms  p95 ms  sql p50",
            format!("{}k", r.size / 1000)
        ));
    }
    if results.len() >= 2 {
        header.push_str(" | p50 growth");
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for q in 0..results.first().map(|r| r.rows.len()).unwrap_or(0) {
        let mut line = format!("{:<22}", results[0].rows[q].0);
        for r in &results {
            let (_, t, sql) = &r.rows[q];
            let sql = sql
                .as_ref()
                .map(|s| format!("{:>8.1}", s.p50_ms))
                .unwrap_or_else(|| format!("{:>8}", "-"));
            line.push_str(&format!(
                " | {:>15} {:>7.2} {:>7.2} {sql}",
                t.total, t.p50_ms, t.p95_ms
            ));
        }
        if results.len() >= 2 {
            let first = &results[0].rows[q].1;
            let last = &results[results.len() - 1].rows[q].1;
            line.push_str(&format!(
                " | {:>9.2}x",
                last.p50_ms / first.p50_ms.max(1e-6)
            ));
        }
        println!("{line}");
    }
    println!();
    if matches!(target, Target::Sqlite(_)) {
        println!("sql p50: the same query answered by SQLite alone (the path `contains` uses), {sql_runs} runs.");
    }
    println!(
        "{} queries; load after: {}; command: {}",
        target.name(),
        load_average(),
        command("HISTORY_BENCH_", "query")
    );
}
