//! History ingest from the bus: a Rust XPUB on 127.0.0.1 sends pre-encoded
//! fedmsg messages as fast as it can into a live hub whose only consumer is
//! `Nommer`, and we measure how fast they are committed to SQLite.
//!
//! Run: `cargo bench -p fedhub-history --bench ingest`
//!
//! Environment: `INGEST_BENCH_MESSAGES` (default 1000000), `INGEST_BENCH_RUNS`
//! (default 3; a fresh database each run), `INGEST_BENCH_DIR` (where the
//! databases go; default a temporary directory).
//!
//! Printed per run: the publisher's send rate (if it equals the stored rate, the
//! publisher was the limit), the hub's handled rate (messages the consumer took
//! off its mailbox), the stored rate (first message sent to last one committed),
//! the peak backlog and the process CPU per message. Then the medians.

mod common;

use common::{bench_dir, cpu_secs, env_or};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedhub::{Config, HubBuilder};
use fedhub_tools::demo::Generator;
use serde_json::{json, Map, Value};

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

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

fn run_once(dir: &std::path::Path, frames: &[(String, String)], k: usize) -> Run {
    let n = frames.len();
    let database = dir.join(format!("ingest-{k}.sqlite"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
    }
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
    section.insert(
        "database".into(),
        Value::from(database.display().to_string()),
    );
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
        "  run {}: sent {:>8.0} msg/s | handled {:>8.0} msg/s | stored {:>8.0} msg/s ({n} in {stored_secs:.1} s) | peak backlog {:>7} | CPU {:.1} us/msg | load {}",
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

fn main() {
    let n: usize = env_or("INGEST_BENCH_MESSAGES", 1_000_000);
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
        "fedhub-history ingest from the bus ({cores} cores, shared; load before: {}; databases in {})",
        load_average(),
        dir.display()
    );
    println!(
        "{n} pre-encoded messages (fedhub_tools::demo::Generator seed 7, mean {mean_bytes} bytes) from a Rust XPUB over tcp 127.0.0.1 into a hub with Nommer only (default settings: batches of 10000, WAL)"
    );
    let results: Vec<Run> = (0..runs).map(|k| run_once(&dir, &frames, k)).collect();
    println!(
        "median of {runs}: sent {:.0} msg/s | handled {:.0} msg/s | stored {:.0} msg/s | CPU {:.1} us/msg",
        median(results.iter().map(|r| r.sent_rate).collect()),
        median(results.iter().map(|r| r.handled_rate).collect()),
        median(results.iter().map(|r| r.stored_rate).collect()),
        median(results.iter().map(|r| r.cpu_us).collect()),
    );
}
