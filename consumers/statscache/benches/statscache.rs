//! statscache benchmarks, printing figures (no assertions):
//!
//! 1. aggregation throughput: every built-in plugin, one thread, messages
//!    decoded beforehand (the hub's decoding thread does that) and their
//!    JSON parsed in the timed loop (the consumer asks for it), flushes
//!    included; beside it, the same loop only parsing the JSON;
//! 2. a live hub (StatsConsumer and the history store, SQLite on disk) taking
//!    `STATS_BENCH_RATE` msg/s (default 5000) over real ZeroMQ: server-side
//!    latency (`Server-Timing`) and round trip of `/latest` and of one page of
//!    rows, p50 and p99;
//! 3. in the same run, the releng dashboard's latest values computed from the
//!    history store on each request (one `/datagrepper/raw` query per topic,
//!    reduced by the client, as the dashboard did), against one statscache
//!    `/latest` request: the ratio.
//!
//! Run: `cargo bench -p fedhub-statscache --bench statscache`.
//! Environment: `STATS_BENCH_MESSAGES` (default 300000), `STATS_BENCH_RUNS`
//! (default 3), `STATS_BENCH_RATE` (5000), `STATS_BENCH_REQUESTS` (2000).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedhub::{Envelope, HubBuilder};
use fedhub_statscache::{Engine, Message, Metrics};
use fedhub_testkit::{section, TestBus};
use fedhub_tools::demo::Generator;
use serde_json::{json, Value};

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Releng events the demo generator does not make, one in 20 messages.
fn releng(k: u64, ts: f64) -> (String, String) {
    // k is 19 mod 20 here: vary by the releng event's own count.
    let (suffix, msg) = match k / 20 % 4 {
        0 => (
            "compose.rawhide.mash.complete",
            json!({"arch": (if k.is_multiple_of(8) { "arm" } else { "" })}),
        ),
        1 => (
            "fedimg.image.upload",
            json!({"status": "completed", "image_name": format!("Fedora-Cloud-Base-rawhide-2026{}.x86_64", k % 97), "destination": (["us-east-1", "eu-west-1"][(k % 2) as usize]), "extra": {"id": format!("ami-{k}")}}),
        ),
        2 => (
            "bodhi.updates.fedora.sync",
            json!({"release": format!("f{}", 39 + k % 3), "repo": "updates"}),
        ),
        _ => (
            "buildsys.task.state.change",
            json!({"owner": "masher", "method": "livecd", "srpm": "fedora-live-workstation.x86_64", "id": k, "new": "CLOSED"}),
        ),
    };
    let topic = format!("org.fedoraproject.prod.{suffix}");
    let body = fedhub::to_canonical_string(&json!({
        "topic": topic, "msg": msg, "timestamp": ts, "msg_id": fedhub::new_msg_id(), "i": k, "username": "apache",
    }));
    (topic, body)
}

fn frames(n: u64, start: f64, step: f64) -> Vec<(String, String)> {
    let mut generator = Generator::new(42, "org.fedoraproject", "prod");
    (0..n)
        .map(|k| {
            let ts = start + step * k as f64;
            if k % 20 == 19 {
                releng(k, ts)
            } else {
                generator.next_frames(ts as u64)
            }
        })
        .collect()
}

fn decode(frames: &[(String, String)]) -> Vec<Envelope> {
    frames
        .iter()
        .map(|(t, b)| Envelope::from_frames(&[t.as_bytes(), b.as_bytes()], 1 << 20).expect("valid"))
        .collect()
}

/// This thread's time on a CPU so far, in seconds (Linux `schedstat`), or
/// `None` where that is not available: on a shared machine the rate per
/// second on the CPU says what the code costs, the wall-clock rate what the
/// machine gave it.
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn aggregation() {
    let n = env_or("STATS_BENCH_MESSAGES", 300_000);
    let runs = env_or("STATS_BENCH_RUNS", 3);
    let frames = frames(n, 1_790_000_000.0, 0.05);
    let bytes: usize = frames.iter().map(|(_, b)| b.len()).sum();
    println!("aggregation: {n} messages (demo traffic + 5% releng events, {} bytes average), {runs} runs, one thread", bytes / n as usize);
    let mut parse_rates = Vec::new();
    let mut rates = Vec::new();
    let mut cpu_rates = Vec::new();
    for run in 1..=runs {
        let envelopes = decode(&frames);
        let began = Instant::now();
        let mut fields = 0usize;
        for e in &envelopes {
            fields += e.json().len();
        }
        let parse = n as f64 / began.elapsed().as_secs_f64();
        parse_rates.push(parse);
        std::hint::black_box(fields);

        let envelopes = decode(&frames);
        let mut engine =
            Engine::new(fedhub_statscache::plugins::builtin(), Metrics::new()).unwrap();
        let began = Instant::now();
        let cpu_began = thread_cpu_secs();
        let mut updates = 0;
        for (i, e) in envelopes.iter().enumerate() {
            engine.process(&Message::new(e));
            if i % 50_000 == 49_999 {
                updates += engine.flush().len();
            }
        }
        updates += engine.flush().len();
        let rate = n as f64 / began.elapsed().as_secs_f64();
        rates.push(rate);
        let cpu = cpu_began
            .zip(thread_cpu_secs())
            .map(|(from, to)| n as f64 / (to - from));
        cpu_rates.extend(cpu);
        println!("  run {run}: {rate:>10.0} msg/s with {} plugins ({updates} updates flushed); JSON parse alone {parse:>10.0} msg/s; on-CPU {}", engine.infos().len(), cpu.map_or("n/a".into(), |r| format!("{r:.0} msg/s")));
    }
    println!(
        "aggregation median: {:.0} msg/s (target >= 100000); JSON parse alone median {:.0} msg/s",
        median(rates),
        median(parse_rates)
    );
    if !cpu_rates.is_empty() {
        println!(
            "aggregation median per second on the CPU: {:.0} msg/s (wall-clock time includes time the shared machine gave to others)",
            median(cpu_rates)
        );
    }
}

struct Reply {
    status: u16,
    server_ms: Option<f64>,
    body: String,
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).ok();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let server_ms = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("server-timing: app;dur=")
                .map(str::to_string)
        })
        .and_then(|v| v.trim().parse().ok());
    Reply {
        status,
        server_ms,
        body: body.to_string(),
    }
}

fn live() {
    let rate = env_or("STATS_BENCH_RATE", 5000);
    let requests = env_or("STATS_BENCH_REQUESTS", 2000);
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::new();
    let mut config = fedhub_testkit::config(&bus);
    config.hub.shutdown_grace_secs = 10;
    let history = dir.path().join("history.sqlite").display().to_string();
    config.consumers.insert(
        "Nommer".into(),
        section(&[("enabled", json!(true)), ("database", json!(history))]),
    );
    config.consumers.insert(
        "StatsConsumer".into(),
        section(&[
            ("enabled", json!(true)),
            (
                "database",
                json!(dir.path().join("stats.sqlite").display().to_string()),
            ),
            ("history_database", json!("")),
        ]),
    );
    let hub = HubBuilder::new(config)
        .consumer(fedhub_history::factory())
        .consumer(fedhub_statscache::factory())
        .start()
        .unwrap();
    bus.wait_subscribed();
    let addr = hub.http_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut generator = Generator::new(7, "org.fedoraproject", "prod");
            let began = Instant::now();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (began.elapsed().as_secs_f64() * rate as f64) as u64;
                while k < due {
                    let ts = fedhub_statscache::now_secs();
                    let (t, b) = if k % 20 == 19 {
                        releng(k, ts)
                    } else {
                        generator.next_frames(ts as u64)
                    };
                    bus.send_frames(&[t.as_bytes(), b.as_bytes()]);
                    k += 1;
                }
                sent.store(k, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
            bus
        })
    };
    println!(
        "\nlive hub: StatsConsumer + Nommer (SQLite), publishing {rate} msg/s; warming up 10 s"
    );
    std::thread::sleep(Duration::from_secs(10));
    let handled = |name: &str| -> f64 {
        let metrics = get(addr, "/metrics").body;
        let series = format!("fedhub_consumer_handled_total{{consumer=\"{name}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let (sent0, handled0, began) = (
        sent.load(Ordering::Relaxed),
        handled("StatsConsumer"),
        Instant::now(),
    );
    let endpoints = [
        "/statscache/api/volume-by-category-1m/latest",
        "/statscache/api/release-engineering-event-logs/latest",
        "/statscache/api/volume-by-topic-1h?rows_per_page=100",
    ];
    for path in endpoints {
        let (mut server, mut round) = (Vec::new(), Vec::new());
        for _ in 0..requests {
            let t = Instant::now();
            let r = get(addr, path);
            round.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            server.push(r.server_ms.expect("Server-Timing"));
        }
        println!(
            "  {path}: server p50 {:.3} ms, p99 {:.3} ms; round trip p50 {:.3} ms, p99 {:.3} ms ({requests} requests, {} rows in the last)",
            percentile(&server, 0.5), percentile(&server, 0.99), percentile(&round, 0.5), percentile(&round, 0.99),
            serde_json::from_str::<Value>(&get(addr, path).body).map(|v| v.as_array().map_or(0, Vec::len)).unwrap_or(0)
        );
    }
    // The dashboard's way: one datagrepper query per releng topic, reduced by the client.
    let topics = [
        "org.fedoraproject.prod.compose.rawhide.mash.complete",
        "org.fedoraproject.prod.compose.rawhide.mash.start",
        "org.fedoraproject.prod.compose.branched.mash.complete",
        "org.fedoraproject.prod.fedimg.image.upload",
        "org.fedoraproject.prod.fedimg.image.test",
        "org.fedoraproject.prod.bodhi.updates.fedora.sync",
        "org.fedoraproject.prod.bodhi.updates.epel.sync",
        "org.fedoraproject.prod.buildsys.task.state.change",
    ];
    let loads = (requests / 20).max(20);
    let (mut grep_ms, mut cache_ms) = (Vec::new(), Vec::new());
    for _ in 0..loads {
        let t = Instant::now();
        let mut latest = std::collections::HashMap::new();
        for topic in topics {
            let r = get(
                addr,
                &format!("/datagrepper/raw?topic={topic}&rows_per_page=100&order=desc&delta=86400"),
            );
            assert_eq!(r.status, 200, "{}", r.body);
            let v: Value = serde_json::from_str(&r.body).unwrap();
            for m in v["raw_messages"].as_array().unwrap() {
                latest
                    .entry((
                        topic,
                        m["msg"]["image_name"].clone(),
                        m["msg"]["release"].clone(),
                    ))
                    .or_insert(m["timestamp"].clone());
            }
        }
        std::hint::black_box(latest.len());
        grep_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let r = get(
            addr,
            "/statscache/api/release-engineering-event-logs/latest",
        );
        assert_eq!(r.status, 200);
        cache_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (g, c) = (median(grep_ms.clone()), median(cache_ms.clone()));
    println!(
        "  releng latest values, {loads} loads: from the history store ({} /datagrepper/raw queries, newest 100 each) median {g:.3} ms, p99 {:.3} ms; statscache /latest median {c:.3} ms, p99 {:.3} ms: {:.0}x faster",
        topics.len(), percentile(&grep_ms, 0.99), percentile(&cache_ms, 0.99), g / c
    );
    let secs = began.elapsed().as_secs_f64();
    let (sent1, handled1) = (sent.load(Ordering::Relaxed), handled("StatsConsumer"));
    println!(
        "  during the measurement ({secs:.1} s): published {:.0} msg/s, StatsConsumer handled {:.0} msg/s",
        (sent1 - sent0) as f64 / secs,
        (handled1 - handled0) / secs
    );
    stop.store(true, Ordering::Relaxed);
    let _bus = publisher.join().unwrap();
    hub.shutdown();
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "statscache benchmark; load average at start: {}",
        load.trim()
    );
    aggregation();
    live();
}
