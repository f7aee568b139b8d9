//! `scrape`: what a monitoring system does to a hub, timed. GETs the given paths
//! (`/metrics`, `/state`, ...) one after another every period, each on a fresh
//! connection, and records how long each request took from connect to the last
//! byte. Optionally also subscribes to the hub's moksha monitoring socket and
//! counts the documents it publishes, so that socket has a reader.
//!
//! When `/state` is among the paths and a target handled count is given, the
//! scraper also finds the burst window from its own readings (the last `/state`
//! that still showed the starting count, to the first that showed the target)
//! and reports the latencies of the requests that overlapped that window apart
//! from the others: those are the probes that had to be answered while the hub
//! was absorbing the burst.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use fedhub_bench::{now_epoch, probe, round, watch};

/// What to scrape, how often, and when to stop.
#[derive(Debug, Clone)]
pub struct ScrapeOptions {
    /// `host:port` of the hub's HTTP server.
    pub addr: String,
    /// Paths to GET each period, in this order.
    pub paths: Vec<String>,
    /// Period between the starts of two rounds of requests.
    pub every: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
    /// The moksha monitoring socket to subscribe to, if any.
    pub monitor: Option<String>,
    /// The consumer whose `handled_total` in `/state` marks the burst.
    pub consumer: String,
    /// Stop this long after `/state` showed this handled count.
    pub until_handled: Option<u64>,
    /// How long to keep scraping after the target was seen.
    pub after: Duration,
    /// Stop as soon as this file exists.
    pub stop_file: Option<PathBuf>,
    /// Stop after this long in any case.
    pub max: Duration,
    /// Write every request here (CSV).
    pub series: Option<PathBuf>,
}

/// One timed request.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    start: f64,
    end: f64,
    ok: bool,
    bytes: usize,
    handled: Option<u64>,
}

impl Request {
    fn ms(&self) -> f64 {
        (self.end - self.start) * 1e3
    }
}

/// Nearest-rank percentiles of `values` (any order), in the units given.
pub fn percentiles(values: &[f64]) -> Value {
    if values.is_empty() {
        return json!({"n": 0});
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| {
        let k = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[k.clamp(1, v.len()) - 1]
    };
    json!({
        "n": v.len(),
        "p50": round(rank(50.0), 3),
        "p95": round(rank(95.0), 3),
        "p99": round(rank(99.0), 3),
        "max": round(v[v.len() - 1], 3),
        "mean": round(v.iter().sum::<f64>() / v.len() as f64, 3),
    })
}

/// Counts what arrives on a SUB connected to `address` until `stop` is set.
fn subscribe(
    address: String,
    stop: Arc<AtomicBool>,
    documents: Arc<AtomicU64>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::SUB)?;
    socket.set_subscribe(b"")?;
    socket.set_rcvtimeo(100)?;
    socket.set_linger(0)?;
    socket
        .connect(&address)
        .with_context(|| format!("connecting to the monitoring socket {address}"))?;
    Ok(std::thread::spawn(move || {
        let _ctx = ctx;
        while !stop.load(Ordering::Acquire) {
            if socket.recv_bytes(0).is_ok() {
                documents.fetch_add(1, Ordering::Relaxed);
            }
        }
    }))
}

/// Scrapes until a stop condition holds and returns the latencies as JSON.
pub fn scrape(o: &ScrapeOptions) -> anyhow::Result<Value> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let documents = Arc::new(AtomicU64::new(0));
    let subscriber = match &o.monitor {
        Some(address) => Some(subscribe(address.clone(), stop.clone(), documents.clone())?),
        None => None,
    };
    let mut requests: Vec<Request> = Vec::new();
    let mut reached: Option<Instant> = None;
    let mut next = Instant::now();
    let stop_reason = loop {
        for path in &o.paths {
            let start = now_epoch();
            let result = probe::http_get(&o.addr, path, o.timeout);
            let end = now_epoch();
            let handled = match (&result, path.as_str()) {
                (Ok(body), "/state") => watch::parse_state(body, &o.consumer).map(|s| s.handled),
                _ => None,
            };
            if let (Some(h), Some(target), None) = (handled, o.until_handled, reached) {
                if h >= target {
                    reached = Some(Instant::now());
                }
            }
            requests.push(Request {
                path: path.clone(),
                start,
                end,
                ok: result.is_ok(),
                bytes: result.as_ref().map(|b| b.len()).unwrap_or(0),
                handled,
            });
        }
        if reached.is_some_and(|t| t.elapsed() >= o.after) {
            break "reached";
        }
        if o.stop_file.as_ref().is_some_and(|f| f.exists()) {
            break "stop_file";
        }
        if started.elapsed() >= o.max {
            break "max_time";
        }
        next += o.every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Behind (a slow answer): start the next round now, do not catch up.
            next = now;
        }
    };
    stop.store(true, Ordering::Release);
    if let Some(handle) = subscriber {
        let _ = handle.join();
    }
    if let Some(path) = &o.series {
        write_series(path, &requests)?;
    }

    // The burst window, from the scraper's own /state readings.
    let states: Vec<&Request> = requests.iter().filter(|r| r.handled.is_some()).collect();
    let baseline = states.first().and_then(|r| r.handled);
    let window = match (baseline, o.until_handled) {
        (Some(base), Some(target)) => {
            let last_before = states
                .iter()
                .filter(|r| r.handled == Some(base))
                .map(|r| r.start)
                .fold(f64::NAN, f64::max);
            let first_at_target = states
                .iter()
                .find(|r| r.handled.is_some_and(|h| h >= target))
                .map(|r| r.end);
            match first_at_target {
                Some(end) if last_before.is_finite() && end > last_before => {
                    Some((last_before, end))
                }
                _ => None,
            }
        }
        _ => None,
    };
    let in_window = |r: &Request| window.is_some_and(|(from, to)| r.end >= from && r.start <= to);

    let mut by_path = BTreeMap::new();
    for path in &o.paths {
        let of_path: Vec<&Request> = requests.iter().filter(|r| &r.path == path).collect();
        let all: Vec<f64> = of_path.iter().filter(|r| r.ok).map(|r| r.ms()).collect();
        let burst: Vec<f64> = of_path
            .iter()
            .filter(|r| r.ok && in_window(r))
            .map(|r| r.ms())
            .collect();
        let outside: Vec<f64> = of_path
            .iter()
            .filter(|r| r.ok && !in_window(r))
            .map(|r| r.ms())
            .collect();
        let failed = of_path.iter().filter(|r| !r.ok).count();
        let bytes = of_path.iter().map(|r| r.bytes).max().unwrap_or(0);
        by_path.insert(
            path.clone(),
            json!({
                "all_ms": percentiles(&all),
                "burst_ms": percentiles(&burst),
                "failed": failed,
                "failed_in_burst": of_path.iter().filter(|r| !r.ok && in_window(r)).count(),
                "body_bytes_max": bytes,
                "outside_ms": percentiles(&outside),
                "burst_latencies_ms": burst.iter().map(|x| round(*x, 3)).collect::<Vec<_>>(),
                "outside_latencies_ms": outside.iter().map(|x| round(*x, 3)).collect::<Vec<_>>(),
            }),
        );
    }
    Ok(json!({
        "tool": "scrape",
        "stop": stop_reason,
        "every_ms": o.every.as_secs_f64() * 1e3,
        "requests": requests.len(),
        "seconds": round(started.elapsed().as_secs_f64(), 3),
        "handled_start": baseline,
        "handled_last": states.last().and_then(|r| r.handled),
        "burst_window": window.map(|(a, b)| json!({"from": round(a, 4), "to": round(b, 4), "seconds": round(b - a, 4)})),
        "monitoring_documents": o.monitor.as_ref().map(|_| documents.load(Ordering::Relaxed)),
        "paths": by_path,
    }))
}

/// Mean, sample standard deviation, min and max of `values`.
fn spread(values: &[f64]) -> Value {
    if values.is_empty() {
        return json!({"n": 0});
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = if values.len() > 1 {
        (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    json!({
        "n": values.len(),
        "mean": round(mean, 1),
        "sd": round(sd, 1),
        "cv_pct": round(100.0 * sd / mean, 2),
        "min": round(values.iter().copied().fold(f64::INFINITY, f64::min), 1),
        "max": round(values.iter().copied().fold(f64::NEG_INFINITY, f64::max), 1),
        "values": values.iter().map(|x| round(*x, 1)).collect::<Vec<_>>(),
    })
}

/// Two-sided 95 % critical value of Student's t with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const TABLE: [f64; 15] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131,
    ];
    match df {
        0 => f64::NAN,
        1..=15 => TABLE[df - 1],
        16..=30 => 2.06,
        _ => 1.96,
    }
}

fn read_json(path: &std::path::Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Files in `dir` whose names start with `prefix` and end with `suffix`, sorted.
fn files(dir: &std::path::Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The monitoring benchmark's summary of a run directory written by
/// `benches/monitoring.sh`: throughput of each arm (`tput__monitored__*` and
/// `tput__plain__*` watch results), their ratio, and the probe latencies pooled
/// over every `lat__*.scrape.json`. Appends a table to `text`.
pub fn monitoring_report(dir: &std::path::Path, text: &mut String) -> anyhow::Result<Value> {
    use std::fmt::Write as _;
    // Per arm: rep -> (rate, hub CPU us per message) of every run that reached N.
    type Arm = BTreeMap<String, (f64, f64)>;
    let rates = |arm: &str| -> (Arm, Vec<Value>) {
        let mut ok_runs = BTreeMap::new();
        let mut runs = Vec::new();
        let prefix = format!("tput__{arm}__");
        for f in files(dir, &prefix, ".recv.json") {
            let Some(v) = read_json(&f) else { continue };
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let rep = name
                .trim_start_matches(prefix.as_str())
                .trim_end_matches(".recv.json")
                .to_string();
            let rate = v["rate"].as_f64().unwrap_or(0.0);
            let ok = v["stop"] == "reached" && rate > 0.0;
            if ok {
                ok_runs.insert(
                    rep,
                    (rate, v["cpu_us_per_msg"].as_f64().unwrap_or(f64::NAN)),
                );
            }
            let scrape = read_json(&PathBuf::from(
                f.to_string_lossy().replace(".recv.json", ".scrape.json"),
            ));
            runs.push(json!({
                "file": name,
                "ok": ok,
                "rate": v["rate"],
                "handled": v["handled"],
                "dropped": v["dropped"],
                "cpu_us_per_msg": v["cpu_us_per_msg"],
                "thread_cpu_s": v["thread_cpu_s"],
                "scrapes": scrape.as_ref().map(|s| s["requests"].clone()),
                "scrape_failed": scrape.as_ref().map(|s| {
                    s["paths"].as_object().map(|p| p.values().map(|x| x["failed"].as_u64().unwrap_or(0)).sum::<u64>())
                }),
                "monitoring_documents": scrape.as_ref().map(|s| s["monitoring_documents"].clone()),
            }));
        }
        (ok_runs, runs)
    };
    let (mon_arm, mon_runs) = rates("monitored");
    let (plain_arm, plain_runs) = rates("plain");
    let mon: Vec<f64> = mon_arm.values().map(|r| r.0).collect();
    let plain: Vec<f64> = plain_arm.values().map(|r| r.0).collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let ratio = mean(&mon) / mean(&plain);
    // Pairwise ratios (rep i monitored / rep i plain): the interleaved pairs.
    let pairs: Vec<f64> = mon_arm
        .iter()
        .filter_map(|(rep, m)| plain_arm.get(rep).map(|p| m.0 / p.0))
        .collect();
    let cpu = |arm: &Arm| mean(&arm.values().map(|r| r.1).collect::<Vec<_>>());
    let _ = writeln!(
        text,
        "== throughput: monitoring socket + scraping vs neither =="
    );
    let _ = writeln!(
        text,
        "{:<12} {:>3} {:>12} {:>10} {:>7} {:>12} {:>12} {:>14}",
        "arm", "n", "mean msg/s", "sd", "cv %", "min", "max", "hub CPU us/msg"
    );
    for (name, v, arm) in [("monitored", &mon, &mon_arm), ("plain", &plain, &plain_arm)] {
        let s = spread(v);
        let _ = writeln!(
            text,
            "{:<12} {:>3} {:>12.0} {:>10.0} {:>7.2} {:>12.0} {:>12.0} {:>14.2}",
            name,
            v.len(),
            s["mean"].as_f64().unwrap_or(f64::NAN),
            s["sd"].as_f64().unwrap_or(f64::NAN),
            s["cv_pct"].as_f64().unwrap_or(f64::NAN),
            s["min"].as_f64().unwrap_or(f64::NAN),
            s["max"].as_f64().unwrap_or(f64::NAN),
            cpu(arm),
        );
    }
    let pair_spread = spread(&pairs.iter().map(|r| r * 1000.0).collect::<Vec<_>>());
    // 95 % confidence interval of the mean pair ratio (Student's t); the 2 % target
    // is met only when the whole interval is at or above 0.98.
    let (ci_low, ci_high) = if pairs.len() >= 2 {
        let n = pairs.len() as f64;
        let m = mean(&pairs);
        let sd = (pairs.iter().map(|r| (r - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let half = t95(pairs.len() - 1) * sd / n.sqrt();
        (m - half, m + half)
    } else {
        (f64::NAN, f64::NAN)
    };
    let verdict = if ci_low >= 0.98 {
        "met"
    } else if ci_high < 0.98 {
        "missed"
    } else {
        "inconclusive"
    };
    let _ = writeln!(
        text,
        "ratio of means monitored/plain: {:.4} ({:+.2} %); per-pair ratios: {}",
        ratio,
        (ratio - 1.0) * 100.0,
        pairs
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );

    let mut latency = BTreeMap::new();
    let mut windows = Vec::new();
    let mut failed = 0u64;
    let mut pooled: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut pooled_outside: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for f in files(dir, "lat__", ".scrape.json") {
        let Some(v) = read_json(&f) else { continue };
        windows.push(v["burst_window"]["seconds"].clone());
        for (path, p) in v["paths"].as_object().cloned().unwrap_or_default() {
            failed += p["failed"].as_u64().unwrap_or(0);
            pooled_outside.entry(path.clone()).or_default().extend(
                p["outside_latencies_ms"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_f64()).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
            pooled.entry(path).or_default().extend(
                p["burst_latencies_ms"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_f64()).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
        }
    }
    let _ = writeln!(
        text,
        "mean pair ratio {:.4}, 95 % interval [{:.4}, {:.4}]; target (monitored >= 0.98 x plain): {verdict}",
        mean(&pairs),
        ci_low,
        ci_high
    );
    let _ = writeln!(
        text,
        "\n== probe latency while the hub absorbs a burst (requests overlapping the burst, all reps pooled) =="
    );
    let _ = writeln!(
        text,
        "{:<10} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "path", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "mean ms"
    );
    for (path, burst) in &pooled {
        let p = percentiles(burst);
        let g = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            text,
            "{:<10} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            path,
            p["n"],
            g("p50"),
            g("p95"),
            g("p99"),
            g("max"),
            g("mean")
        );
        latency.insert(path.clone(), p);
    }
    let mut outside = BTreeMap::new();
    for (path, values) in &pooled_outside {
        let p = percentiles(values);
        let g = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            text,
            "{:<10} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}   (outside the burst)",
            path,
            p["n"],
            g("p50"),
            g("p95"),
            g("p99"),
            g("max"),
            g("mean")
        );
        outside.insert(path.clone(), p);
    }
    let worst_p99 = latency
        .values()
        .filter_map(|p| p["p99"].as_f64())
        .fold(f64::NAN, f64::max);
    let _ = writeln!(
        text,
        "worst p99 during the burst: {worst_p99:.3} ms; target (p99 <= 5 ms): {}",
        if worst_p99 <= 5.0 { "met" } else { "missed" }
    );
    let _ = writeln!(
        text,
        "burst windows (s): {}; failed requests: {failed}",
        windows
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );

    Ok(json!({
        "throughput": {
            "monitored": spread(&mon),
            "plain": spread(&plain),
            "ratio_of_means": round(ratio, 4),
            "cpu_us_per_msg_mean": {"monitored": round(cpu(&mon_arm), 2), "plain": round(cpu(&plain_arm), 2)},
            "pair_ratios_x1000": pair_spread,
            "pair_ratio_mean": round(mean(&pairs), 4),
            "pair_ratio_ci95": [round(ci_low, 4), round(ci_high, 4)],
            "target_within_2pct": verdict,
            "runs": {"monitored": mon_runs, "plain": plain_runs},
        },
        "latency_burst_ms": latency,
        "latency_outside_burst_ms": outside,
        "latency_failed_requests": failed,
        "burst_windows_s": windows,
        "latency_target_p99_le_5ms": worst_p99 <= 5.0,
    }))
}

fn write_series(path: &PathBuf, requests: &[Request]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(out, "start,path,ms,ok,bytes,handled")?;
    for r in requests {
        writeln!(
            out,
            "{:.6},{},{:.3},{},{},{}",
            r.start,
            r.path,
            r.ms(),
            r.ok as u8,
            r.bytes,
            r.handled.map(|h| h.to_string()).unwrap_or_default()
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&v);
        assert_eq!(p["p50"], 50.0);
        assert_eq!(p["p95"], 95.0);
        assert_eq!(p["p99"], 99.0);
        assert_eq!(p["max"], 100.0);
        assert_eq!(percentiles(&[2.0])["p99"], 2.0);
        assert_eq!(percentiles(&[])["n"], 0);
    }
}
