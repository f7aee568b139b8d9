//! The awarder inside a running hub: `FedoraBadgesConsumer` with
//! `after = ["Nommer"]` beside the history store (`Nommer`) already holding 1M
//! messages, 200 rules (as `benches/awarder.rs` makes them), fed 100k demo
//! messages over ZeroMQ (127.0.0.1) as fast as a Rust PUB sends them. The
//! awarder's backlog is read where ops read it: on the moksha monitoring
//! socket, one document a second, printed as it arrives. Prints the send rate,
//! the rate at which the awarder got through the burst (from the first send,
//! and from when Nommer had stored it all), the p99 of its
//! handling times (the `times` of the monitoring documents), the awards and
//! the load average. Figures only, no timed assertion.
//!
//! `nice -n 15 cargo bench -p fedhub-badges --bench hub`
//! Settings: as `benches/awarder.rs` (`BADGES_BENCH_HISTORY`,
//! `BADGES_BENCH_MESSAGES`, `BADGES_BENCH_RULES`, `BADGES_BENCH_DIR`), and
//! `BADGES_BENCH_MATURE`, and `BADGES_BENCH_TIMEOUT_SECS` (how long to wait
//! for the awarder, default 600).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fedhub::HubBuilder;
use fedhub_testkit::{section, TestBus};
use fedhub_tools::demo::Generator;
use serde_json::{json, Value};

/// One monitoring document's view of a consumer.
#[derive(Debug, Clone)]
struct Sample {
    at: f64,
    backlog: u64,
    headcount_in: u64,
    headcount_out: u64,
    times: Vec<f64>,
    nommer_backlog: u64,
}

fn main() {
    let history_n: usize = env_or("BADGES_BENCH_HISTORY", 1_000_000);
    let messages_n: usize = env_or("BADGES_BENCH_MESSAGES", 100_000);
    let rules_n: usize = env_or("BADGES_BENCH_RULES", 200);
    let timeout = Duration::from_secs(env_or("BADGES_BENCH_TIMEOUT_SECS", 600));
    let (dir, _temp) = bench_dir();
    let now = now_secs();
    let (history_path, tally) = history_file(&dir, history_n);
    let mature = env_or("BADGES_BENCH_MATURE", 1) == 1;
    let run_path = dir.join(format!("history-hub-{now}.sqlite"));
    copy_history(&history_path, &run_path);
    let rules_dir = dir.join(format!("rules-hub-{now}"));
    std::fs::create_dir_all(&rules_dir).unwrap();
    let mix = write_rules(&rules_dir, rules_n);
    let badges_path = dir.join(format!("badges-hub-{now}.sqlite"));
    let preawarded = if mature {
        // The badges and the awards the history earned, before the hub starts.
        let db = fedhub_storage::Database::open(
            &fedhub_storage::DatabaseUrl::sqlite(&badges_path),
            "FedoraBadgesConsumer",
            &fedhub_storage::PoolOptions::default(),
            &prometheus::Registry::new(),
        )
        .unwrap();
        let tahrir = fedhub_badges::Tahrir::open(db).unwrap();
        let sandbox = fedhub_badges::expr::Sandbox::default();
        let issuer = tahrir
            .ensure_issuer(&fedhub_badges::Issuer {
                origin: "https://badges.fedoraproject.org".into(),
                name: "Fedora Project".into(),
                org: "https://fedoraproject.org".into(),
                contact: "badges@fedoraproject.org".into(),
            })
            .unwrap();
        fedhub_badges::consumer::load_rules(&rules_dir, &sandbox, &tahrir, issuer, None).unwrap();
        preaward(&tahrir, rules_n, &tally)
    } else {
        0
    };

    let bus = TestBus::new();
    let mut config = fedhub_testkit::config(&bus);
    config.hub.environment = "prod".into();
    // Awards are published: without a PUB socket they would be rolled back.
    config.publish.bind = vec!["tcp://127.0.0.1:*".into()];
    config.monitoring.socket = "tcp://127.0.0.1:*".into();
    config.monitoring.interval_secs = 1.0;
    config.consumers.insert(
        "Nommer".into(),
        section(&[
            ("enabled", json!(true)),
            ("database", json!(run_path)),
            ("capacity_messages", json!(messages_n + 1000)),
        ]),
    );
    config.consumers.insert(
        "FedoraBadgesConsumer".into(),
        section(&[
            ("enabled", json!(true)),
            ("after", json!(["Nommer"])),
            ("rules_directory", json!(rules_dir)),
            ("watch_rules", json!(false)),
            ("database", json!(badges_path)),
            ("history_database", json!(run_path)),
            ("capacity_messages", json!(messages_n + 1000)),
        ]),
    );
    let began = Instant::now();
    let hub = HubBuilder::new(config)
        .consumer(fedhub_history::factory())
        .consumer(fedhub_badges::factory())
        .start()
        .unwrap();
    eprintln!(
        "hub: started in {:.1} s (history {history_n} messages)",
        began.elapsed().as_secs_f64()
    );

    // The monitoring socket, read on a thread of its own.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.set_rcvtimeo(500).unwrap();
    sub.connect(hub.monitoring_endpoint().unwrap()).unwrap();
    // The first document proves the subscription is in place.
    let mut first = None;
    for _ in 0..20 {
        if let Ok(frame) = sub.recv_bytes(0) {
            first = Some(frame);
            break;
        }
    }
    assert!(first.is_some(), "a monitoring document within 10 s");
    let t0 = Instant::now();
    let reader = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let Ok(frame) = sub.recv_bytes(0) else {
                    continue;
                };
                let doc: Value = serde_json::from_slice(&frame).unwrap();
                let Some(c) = doc["consumers"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["name"] == "FedoraBadgesConsumer"))
                else {
                    continue;
                };
                let nommer = doc["consumers"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["name"] == "Nommer"))
                    .map(|n| n["backlog"].as_u64().unwrap_or(0))
                    .unwrap_or(0);
                let sample = Sample {
                    at: t0.elapsed().as_secs_f64(),
                    backlog: c["backlog"].as_u64().unwrap_or(0),
                    headcount_in: c["headcount_in"].as_u64().unwrap_or(0),
                    headcount_out: c["headcount_out"].as_u64().unwrap_or(0),
                    times: c["times"]
                        .as_array()
                        .map(|t| t.iter().filter_map(Value::as_f64).collect())
                        .unwrap_or_default(),
                    nommer_backlog: nommer,
                };
                println!(
                    "monitoring t={:6.1}s FedoraBadgesConsumer backlog={:6} in={:6} out={:6} (Nommer backlog={nommer})",
                    sample.at, sample.backlog, sample.headcount_in, sample.headcount_out
                );
                samples.lock().unwrap().push(sample);
            }
        })
    };

    // The burst: demo traffic stamped now, encoded before sending.
    let mut generator = Generator::new(now, "org.fedoraproject", "prod");
    let frames: Vec<(String, String)> = (0..messages_n)
        .map(|_| generator.next_frames(now))
        .collect();
    bus.wait_subscribed();
    let stats = hub.stats().consumer("FedoraBadgesConsumer");
    let handled_before = stats.handled();
    let sent_at = Instant::now();
    let sent_offset = sent_at.duration_since(t0).as_secs_f64();
    for (topic, body) in &frames {
        bus.send_frames(&[topic.as_bytes(), body.as_bytes()]);
    }
    let send_secs = sent_at.elapsed().as_secs_f64();
    let target = handled_before + messages_n as u64;
    let deadline = Instant::now() + timeout;
    while stats.handled() < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let done_secs = sent_at.elapsed().as_secs_f64();
    let handled = stats.handled() - handled_before;
    // One more document after the drain.
    std::thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::Release);
    reader.join().unwrap();
    let (status, body) = fedhub_testkit::http_get(hub.http_addr().unwrap(), "/badges/rules");
    let (awards, rule_errors) = if status == 200 {
        let doc = serde_json::from_str::<Value>(&body).unwrap();
        (
            doc["awarder"]["awards_total"].clone(),
            doc["awarder"]["rule_errors_total"].clone(),
        )
    } else {
        (Value::Null, Value::Null)
    };
    let report = hub.shutdown();

    let samples = samples.lock().unwrap();
    let mut times: Vec<f64> = samples.iter().flat_map(|s| s.times.clone()).collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let max_backlog = samples.iter().map(|s| s.backlog).max().unwrap_or(0);
    // The awarder alone: from the first document after Nommer stored the
    // whole burst (the awarder waits for Nommer's commits before that) to the
    // drain.
    let caught_up = samples
        .iter()
        .find(|s| s.at > sent_offset && s.nommer_backlog == 0 && s.headcount_in == 0);
    let after_history = match caught_up {
        Some(s) => format!(
            "once Nommer had stored the burst (t={:.1} s, awarder backlog {}): {:.0} msg/s",
            s.at,
            s.backlog,
            s.backlog as f64 / (sent_offset + done_secs - s.at)
        ),
        None => "Nommer still behind at every document".into(),
    };
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
        "hub: {messages_n} messages sent in {send_secs:.2} s ({:.0} msg/s); FedoraBadgesConsumer handled {handled} in {done_secs:.2} s from the first send: {:.0} msg/s; handling time from the monitoring documents ({} samples): p50 {:.3} ms, p99 {:.3} ms; largest backlog seen {max_backlog}; {awards} awards, {rule_errors} rule errors; undrained at shutdown {:?}; load average {}",
        messages_n as f64 / send_secs,
        handled as f64 / done_secs,
        times.len(),
        pct(0.50) * 1000.0,
        pct(0.99) * 1000.0,
        report.undrained,
        load_average(),
    );
    println!("hub: FedoraBadgesConsumer {after_history}");
    println!("command: nice -n 15 cargo bench -p fedhub-badges --bench hub");
    for suffix in ["", "-wal", "-shm", ".index"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", run_path.display()));
        let _ = std::fs::remove_file(format!("{}{suffix}", badges_path.display()));
    }
    let _ = std::fs::remove_dir_all(&rules_dir);
}
