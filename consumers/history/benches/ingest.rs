//! History ingest from the bus: a Rust XPUB on 127.0.0.1 sends pre-encoded
//! fedmsg messages as fast as it can into a live hub whose only consumer is
//! `Nommer`, and we measure how fast they are committed to SQLite or
//! PostgreSQL.
//!
//! Run: `cargo bench -p fedhub-history --bench ingest` (SQLite), or
//! `INGEST_BENCH_DATABASE=sqlite,postgres cargo bench -p fedhub-history --bench ingest`
//! (both, interleaved run by run).
//!
//! Environment: `INGEST_BENCH_MESSAGES` (default 1000000), `INGEST_BENCH_RUNS`
//! (default 3; a fresh database each run), `INGEST_BENCH_DIR` (where the
//! SQLite databases go; default a temporary directory),
//! `INGEST_BENCH_DATABASE` (`sqlite`, `postgres` or both, comma-separated;
//! default `sqlite`), `INGEST_BENCH_SINGLE_MESSAGES` (PostgreSQL: messages of
//! the one-per-transaction run, default 50000), `INGEST_BENCH_PG_SETTINGS`
//! (postgresql.conf lines for the cluster; default `shared_buffers = 128MB`,
//! PostgreSQL's own default, where the test clusters use 16 MB).
//!
//! PostgreSQL is a throwaway cluster started by the testkit (as the tests
//! start one: `fsync` and `synchronous_commit` off, so a commit costs a round
//! trip, not a disk flush). Each run stores the burst twice, into fresh
//! databases: with Nommer's default batching (one transaction per 10000
//! messages: names, one multi-row insert of the messages, one of each bridge
//! table, the count), then with `batch_messages = 1`, the way datanommer
//! stores: one transaction per message holding its row and its user and
//! package rows, through the same schema and SQL. The ratio of the two rates
//! is printed per run and as a median. Nommer's mailbox holds the whole
//! burst (`capacity_messages`), see `run_once`.
//!
//! Printed per run: the publisher's send rate (if it equals the stored rate, the
//! publisher was the limit), the hub's handled rate (messages the consumer took
//! off its mailbox), the stored rate (first message sent to last one committed),
//! the peak backlog and the process CPU per message. Then the medians.

mod common;

use common::{bench_dir, command, cpu_secs, env_or, load_average};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedhub::{Config, HubBuilder};
use fedhub_tools::demo::Generator;
use serde_json::{json, Map, Value};

/// The value of a counter in the hub's registry.
fn counter(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().iter())
        .map(|m| m.get_counter().get_value())
        .sum()
}

struct Run {
    sent_rate: f64,
    handled_rate: f64,
    stored_rate: f64,
    peak_backlog: u64,
    cpu_us: f64,
}

/// Removes a SQLite database and its WAL files.
fn remove_sqlite(database: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
}

/// One burst of `frames` into a fresh hub storing into `database` (a path or
/// URL); `batch_messages` overrides Nommer's default; `label` names the line.
fn run_once(
    database: &str,
    frames: &[(String, String)],
    k: usize,
    batch_messages: Option<usize>,
    label: &str,
) -> Run {
    let n = frames.len();
    let context = zmq::Context::new();
    let socket = context.socket(zmq::XPUB).expect("xpub");
    socket.set_sndhwm(0).expect("sndhwm");
    socket.bind("tcp://127.0.0.1:*").expect("bind");
    let endpoint = socket
        .get_last_endpoint()
        .expect("endpoint")
        .expect("utf-8 endpoint");

    let mut config = Config::default();
    config
        .bus
        .endpoints
        .insert("bench".into(), fedhub::OneOrMany::Many(vec![endpoint]));
    config.bus.inbound = String::new();
    config.http.listen = "127.0.0.1:0".into();
    config.hub.status_log_interval_secs = 0;
    config.hub.shutdown_grace_secs = 60;
    let mut section = Map::new();
    section.insert("enabled".into(), json!(true));
    section.insert("database".into(), Value::from(database));
    if let Some(batch) = batch_messages {
        section.insert("batch_messages".into(), json!(batch));
    }
    // The whole burst fits in the mailbox: with the default bound (250000,
    // blocking), a 1M burst that outran the store (PostgreSQL, or SQLite on a
    // busy machine) stopped short of n handled messages, the hub idle.
    section.insert("capacity_messages".into(), json!(n.max(1)));
    config.consumers.insert("Nommer".into(), section);
    let hub = HubBuilder::new(config)
        .consumer(fedhub_history::factory())
        .start()
        .expect("hub starts");
    socket.set_rcvtimeo(10_000).expect("rcvtimeo");
    let subscription = socket.recv_bytes(0).expect("the hub subscribes");
    assert_eq!(subscription.first(), Some(&1));

    let registry = hub.stats().registry().clone();
    let nommer = hub.stats().consumer("Nommer");
    let cpu_began = cpu_secs("self");
    let began = Instant::now();
    let sending = Arc::new(AtomicBool::new(true));
    let publisher = {
        let frames = frames.to_vec();
        let sending = sending.clone();
        std::thread::spawn(move || {
            let began = Instant::now();
            for (topic, body) in &frames {
                socket
                    .send_multipart([topic.as_bytes(), body.as_bytes()], 0)
                    .expect("send");
            }
            let secs = began.elapsed().as_secs_f64();
            sending.store(false, Ordering::Release);
            // Keep the socket open until the hub has read everything.
            (socket, context, secs)
        })
    };
    let mut handled_at = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    // The handled count is an atomic (cheap to poll); the stored count comes from
    // the registry, whose gathering also reads /proc, so it is polled only once
    // everything was handled.
    loop {
        if handled_at.is_none() && nommer.handled() >= n as u64 {
            handled_at = Some(began.elapsed().as_secs_f64());
        }
        if handled_at.is_some()
            && counter(&registry, "fedhub_history_messages_stored_total") >= n as f64
        {
            break;
        }
        assert!(Instant::now() < deadline, "not stored within 600 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stored_secs = began.elapsed().as_secs_f64();
    let cpu = cpu_secs("self") - cpu_began;
    let (_socket, _context, sent_secs) = publisher.join().expect("publisher");
    let handled_secs = handled_at.unwrap_or(stored_secs);
    let peak_backlog = nommer.peak_backlog();
    hub.shutdown();
    let run = Run {
        sent_rate: n as f64 / sent_secs,
        handled_rate: n as f64 / handled_secs,
        stored_rate: n as f64 / stored_secs,
        peak_backlog,
        cpu_us: cpu * 1e6 / n as f64,
    };
    println!(
        "  {label:<22} run {}: sent {:>8.0} msg/s | handled {:>8.0} msg/s | stored {:>8.0} msg/s ({n} in {stored_secs:.1} s) | peak backlog {:>7} | CPU {:.1} us/msg | load {}",
        k + 1,
        run.sent_rate,
        run.handled_rate,
        run.stored_rate,
        run.peak_backlog,
        run.cpu_us,
        load_average()
    );
    run
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What is measured: a backend and how it batches.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Sqlite,
    PgBatched,
    PgSingle,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Sqlite => "SQLite batched",
            Mode::PgBatched => "PostgreSQL batched",
            Mode::PgSingle => "PostgreSQL 1 per tx",
        }
    }
}

fn main() {
    let n: usize = env_or("INGEST_BENCH_MESSAGES", 1_000_000);
    let single_n: usize = env_or("INGEST_BENCH_SINGLE_MESSAGES", 50_000);
    let backends = std::env::var("INGEST_BENCH_DATABASE").unwrap_or_else(|_| "sqlite".into());
    let mut modes = Vec::new();
    for backend in backends.split(',').map(str::trim) {
        match backend {
            "sqlite" => modes.push(Mode::Sqlite),
            "postgres" => modes.extend([Mode::PgBatched, Mode::PgSingle]),
            other => panic!("INGEST_BENCH_DATABASE: sqlite and/or postgres, not {other}"),
        }
    }
    // PostgreSQL's own default buffer size, not the test clusters' 16 MB
    // (`INGEST_BENCH_PG_SETTINGS` replaces it: postgresql.conf lines).
    let pg_settings = std::env::var("INGEST_BENCH_PG_SETTINGS")
        .unwrap_or_else(|_| "shared_buffers = 128MB".into());
    let pg = modes
        .contains(&Mode::PgBatched)
        .then(|| fedhub_testkit::PgCluster::start_with(&pg_settings));
    let runs: usize = env_or("INGEST_BENCH_RUNS", 3).max(1);
    let (dir, _temp) = bench_dir("INGEST_BENCH_DIR");
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let mut generator = Generator::new(7, "org.fedoraproject", "prod");
    let start = 1_700_000_000u64;
    let frames: Vec<(String, String)> = (0..n)
        .map(|k| generator.next_frames(start + k as u64 / 4))
        .collect();
    let mean_bytes = frames.iter().map(|(t, b)| t.len() + b.len()).sum::<usize>() / n.max(1);
    println!(
        "fedhub-history ingest from the bus ({cores} cores, shared; load before: {}; SQLite databases in {})",
        load_average(),
        dir.display()
    );
    if let Some(pg) = &pg {
        println!(
            "PostgreSQL: a throwaway cluster (testkit PgCluster, {}; {})",
            pg.psql("fedhub", "SHOW server_version"),
            pg.psql(
                "fedhub",
                "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings \
                 WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'wal_level')"
            )
        );
    }
    println!(
        "{n} pre-encoded messages (fedhub_tools::demo::Generator seed 7, mean {mean_bytes} bytes; the first {} for one per transaction) from a Rust XPUB over tcp 127.0.0.1 into a hub with Nommer only (default settings: batches of 10000; SQLite in WAL mode)",
        single_n.min(n)
    );
    // Interleaved: each run measures every mode once, so load changes hit all alike.
    let mut results: Vec<(Mode, Run)> = Vec::new();
    for k in 0..runs {
        for &mode in &modes {
            let run = match (mode, &pg) {
                (Mode::Sqlite, _) => {
                    let database = dir.join(format!("ingest-{k}.sqlite"));
                    remove_sqlite(&database);
                    let run = run_once(
                        &database.display().to_string(),
                        &frames,
                        k,
                        None,
                        mode.label(),
                    );
                    remove_sqlite(&database);
                    run
                }
                (Mode::PgBatched | Mode::PgSingle, Some(pg)) => {
                    let name = format!("ingest_{k}_{}", results.len());
                    let url = pg.create_database(&name);
                    let (frames, batch) = if mode == Mode::PgSingle {
                        (&frames[..single_n.min(n)], Some(1))
                    } else {
                        (&frames[..], None)
                    };
                    let run = run_once(&url, frames, k, batch, mode.label());
                    drop_database(pg, &name);
                    run
                }
                _ => unreachable!("a PostgreSQL mode starts a cluster"),
            };
            results.push((mode, run));
        }
    }
    let medians = |mode: Mode| -> Option<(f64, f64, f64, f64)> {
        let of = |f: fn(&Run) -> f64| -> f64 {
            median(
                results
                    .iter()
                    .filter(|(m, _)| *m == mode)
                    .map(|(_, r)| f(r))
                    .collect(),
            )
        };
        modes.contains(&mode).then(|| {
            (
                of(|r| r.sent_rate),
                of(|r| r.handled_rate),
                of(|r| r.stored_rate),
                of(|r| r.cpu_us),
            )
        })
    };
    for mode in [Mode::Sqlite, Mode::PgBatched, Mode::PgSingle] {
        if let Some((sent, handled, stored, cpu)) = medians(mode) {
            println!(
                "median of {runs}: {:<22} stored {stored:>8.0} msg/s | sent {sent:.0} msg/s | handled {handled:.0} msg/s | CPU {cpu:.1} us/msg",
                mode.label()
            );
        }
    }
    if modes.contains(&Mode::PgBatched) {
        let ratios: Vec<f64> = results
            .chunks(modes.len())
            .map(|run| {
                let rate = |mode: Mode| {
                    run.iter()
                        .find(|(m, _)| *m == mode)
                        .map(|(_, r)| r.stored_rate)
                        .unwrap_or(f64::NAN)
                };
                rate(Mode::PgBatched) / rate(Mode::PgSingle)
            })
            .collect();
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.1}x")).collect();
        println!(
            "PostgreSQL batched / one per transaction: median {:.1}x (runs: {})",
            median(ratios.clone()),
            listed.join(", ")
        );
    }
    println!(
        "load after: {}; command: {}",
        load_average(),
        command("INGEST_BENCH_", "ingest")
    );
}

/// Drops a database of the cluster (it is not needed once measured).
fn drop_database(pg: &fedhub_testkit::PgCluster, name: &str) {
    pg.psql("fedhub", &format!("DROP DATABASE {name} WITH (FORCE)"));
}
