//! What a monitoring system does to a hub: GET each of a list of HTTP paths
//! (`/metrics`, `/state`) every tick, one connection per request as Prometheus
//! and the collectd plugin do, and optionally read the moksha monitoring socket
//! with a SUB, as `fedmsg-check` and collectd's exec script do. Runs until SIGINT
//! or SIGTERM (or `max_s`), then prints the latency of each path (p50, p90, p99,
//! max, in ms), the errors, how many monitoring documents arrived, and how late
//! the scraper's own sleeps woke up (`scraper_wake_late`: the machine's scheduling
//! delay, which no probe answered over a socket can beat).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::{now_epoch, probe, round};

/// What to scrape and how often.
#[derive(Debug, Clone)]
pub struct ScrapeOptions {
    /// `host:port` of the hub's HTTP server.
    pub addr: String,
    /// Paths fetched in order at every tick.
    pub paths: Vec<String>,
    /// Time from the start of one tick to the start of the next.
    pub interval: Duration,
    /// A moksha monitoring socket to subscribe to, if any.
    pub monitor: Option<String>,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Stop after this long even without a signal.
    pub max: Duration,
    /// Write every request here (CSV: `t,path,ms,ok`).
    pub series: Option<std::path::PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_stop_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latency summary of one path, in ms.
pub fn summarize(latencies_ms: &[f64]) -> Value {
    let mut sorted = latencies_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let r = |x: Option<f64>| x.map(|v| round(v, 3));
    let mean = if sorted.is_empty() {
        None
    } else {
        Some(sorted.iter().sum::<f64>() / sorted.len() as f64)
    };
    json!({
        "count": sorted.len(),
        "p50_ms": r(percentile(&sorted, 50.0)),
        "p90_ms": r(percentile(&sorted, 90.0)),
        "p99_ms": r(percentile(&sorted, 99.0)),
        "max_ms": r(sorted.last().copied()),
        "mean_ms": r(mean),
    })
}

/// Scrapes until stopped and returns the figures as JSON.
pub fn run(o: &ScrapeOptions) -> anyhow::Result<Value> {
    install_stop_handlers();
    let context = zmq::Context::new();
    let monitor = match &o.monitor {
        Some(addr) => {
            let socket = context.socket(zmq::SUB)?;
            socket.set_linger(0)?;
            socket.set_subscribe(b"")?;
            socket
                .connect(addr)
                .with_context(|| format!("connecting to {addr}"))?;
            Some(socket)
        }
        None => None,
    };
    let mut series = match &o.series {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    if let Some(w) = series.as_mut() {
        use std::io::Write as _;
        writeln!(w, "t,path,ms,ok")?;
    }
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); o.paths.len()];
    let mut errors: Vec<u64> = vec![0; o.paths.len()];
    let mut last_error: Option<String> = None;
    let mut documents = 0u64;
    let mut document_bytes = 0u64;
    let started = Instant::now();
    let t_start = now_epoch();
    let mut ticks = 0u64;
    let mut wake_late_ms: Vec<f64> = Vec::new();
    let mut next = Instant::now();
    while !STOP.load(Ordering::Relaxed) && started.elapsed() < o.max {
        ticks += 1;
        for (i, path) in o.paths.iter().enumerate() {
            let t = now_epoch();
            let before = Instant::now();
            let result = probe::http_get(&o.addr, path, o.timeout);
            let ms = before.elapsed().as_secs_f64() * 1000.0;
            let ok = result.is_ok();
            match result {
                Ok(_) => latencies[i].push(ms),
                Err(e) => {
                    errors[i] += 1;
                    last_error = Some(format!("{path}: {e}"));
                }
            }
            if let Some(w) = series.as_mut() {
                use std::io::Write as _;
                writeln!(w, "{t:.4},{path},{ms:.3},{}", ok as u8)?;
            }
        }
        next += o.interval;
        // Read the monitoring socket while waiting for the next tick.
        loop {
            if let Some(socket) = &monitor {
                while let Ok(bytes) = socket.recv_bytes(zmq::DONTWAIT) {
                    documents += 1;
                    document_bytes += bytes.len() as u64;
                }
            }
            let now = Instant::now();
            if now >= next || STOP.load(Ordering::Relaxed) {
                break;
            }
            // How late the scraper itself wakes up: the machine's scheduling delay,
            // the floor under every probe latency measured here.
            let nap = (next - now).min(Duration::from_millis(20));
            std::thread::sleep(nap);
            wake_late_ms.push((now.elapsed().saturating_sub(nap)).as_secs_f64() * 1000.0);
        }
        if Instant::now() > next + o.interval {
            // Fell behind (a slow request): do not fire a catch-up volley.
            next = Instant::now();
        }
    }
    if let Some(mut w) = series {
        use std::io::Write as _;
        w.flush()?;
    }
    let mut paths = serde_json::Map::new();
    for (i, path) in o.paths.iter().enumerate() {
        let mut summary = summarize(&latencies[i]);
        summary["errors"] = json!(errors[i]);
        paths.insert(path.clone(), summary);
    }
    Ok(json!({
        "tool": "scrape",
        "addr": o.addr,
        "interval_ms": o.interval.as_secs_f64() * 1000.0,
        "ticks": ticks,
        "seconds": round(started.elapsed().as_secs_f64(), 3),
        "t_start": round(t_start, 4),
        "t_end": round(now_epoch(), 4),
        "paths": paths,
        "last_error": last_error,
        "monitor": o.monitor,
        "monitor_documents": documents,
        "scraper_wake_late": summarize(&wake_late_ms),
        "monitor_bytes": document_bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
