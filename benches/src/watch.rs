//! Follows a running hub while a burst goes through it: its consumer counters
//! (fedhub's `/state`, or the Python peer consumer's stats file) every ~20 ms,
//! and its `/proc` memory and CPU every ~100 ms. The consumed rate is taken from
//! the first change of the handled count to the moment the consumer finished
//! the last message (fedhub's stamp), or its own first/last stamps (the peer).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::{now_epoch, probe, round};

/// Where the consumer's counters come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// fedhub: `GET http://addr/state`, the consumer called `consumer`.
    Hub {
        /// `host:port` of the hub's HTTP server.
        addr: String,
        /// The consumer's name in `/state`.
        consumer: String,
    },
    /// The Python peer: the JSON file its consumer rewrites every 0.1 s
    /// (`count`, `backlog`, `first_ts`, `last_ts`).
    Peer {
        /// `$PEER_STATS`.
        stats_file: PathBuf,
    },
}

/// One reading of the consumer's counters.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// When it was read (epoch seconds, middle of the request).
    pub t: f64,
    /// Messages the consumer finished.
    pub handled: u64,
    /// Backlog as the hub reports it.
    pub backlog: i64,
    /// Messages put in the consumer's mailbox (fedhub only).
    pub received: Option<u64>,
    /// Messages dropped for the consumer (fedhub only).
    pub dropped: Option<u64>,
    /// Messages received on all bus sockets (fedhub only).
    pub bus_messages: Option<u64>,
    /// Messages rejected on all bus sockets (fedhub only).
    pub malformed: Option<u64>,
    /// The hub's own backlog high-water mark (fedhub only).
    pub peak_backlog: Option<u64>,
    /// First and last consume timestamps (peer only).
    pub first_last: Option<(f64, f64)>,
    /// When the consumer last finished a message, epoch seconds (fedhub only,
    /// millisecond resolution).
    pub last_progress: Option<f64>,
}

impl Source {
    /// Reads the counters once; `None` when the hub does not answer (yet).
    pub fn sample(&self) -> Option<Sample> {
        let before = now_epoch();
        let mut sample = match self {
            Source::Hub { addr, consumer } => {
                let body = probe::http_get(addr, "/state", Duration::from_secs(2)).ok()?;
                parse_state(&body, consumer)?
            }
            Source::Peer { stats_file } => {
                let text = std::fs::read_to_string(stats_file).ok()?;
                let v: Value = serde_json::from_str(&text).ok()?;
                Sample {
                    handled: v["count"].as_u64().unwrap_or(0),
                    backlog: v["backlog"].as_i64().unwrap_or(0),
                    first_last: v["first_ts"].as_f64().zip(v["last_ts"].as_f64()),
                    // The file says when it was written: the counters are from then.
                    t: v["now"].as_f64().unwrap_or(0.0),
                    ..Sample::default()
                }
            }
        };
        if sample.t == 0.0 {
            sample.t = (before + now_epoch()) / 2.0;
        }
        Some(sample)
    }
}

/// Picks one consumer's counters out of a `/state` document.
pub fn parse_state(body: &str, consumer: &str) -> Option<Sample> {
    let state: Value = serde_json::from_str(body).ok()?;
    let c = state["consumers"]
        .as_array()?
        .iter()
        .find(|c| c["name"].as_str() == Some(consumer))?;
    let buses = state["buses"].as_array().cloned().unwrap_or_default();
    let sum = |key: &str| buses.iter().filter_map(|b| b[key].as_u64()).sum::<u64>();
    Some(Sample {
        t: 0.0,
        handled: c["handled_total"].as_u64()?,
        backlog: c["backlog"].as_i64().unwrap_or(0),
        received: c["received_total"].as_u64(),
        dropped: c["dropped_total"].as_u64(),
        bus_messages: Some(sum("messages_total")),
        malformed: Some(sum("malformed_total")),
        peak_backlog: c["peak_backlog"].as_u64(),
        first_last: None,
        last_progress: c["last_progress_ms"].as_f64().map(|ms| ms / 1000.0),
    })
}

/// What to follow and when to stop.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The counters.
    pub source: Source,
    /// The hub's process, for `/proc`.
    pub pid: u32,
    /// The handled count that ends the burst.
    pub until: u64,
    /// Counter polling period.
    pub poll: Duration,
    /// Memory sampling period.
    pub rss_every: Duration,
    /// How long to keep sampling after the target was reached (memory after drain).
    pub after: Duration,
    /// Give up when the handled count has not moved for this long.
    pub stall: Duration,
    /// Give up when nothing was handled for this long.
    pub max_wait: Duration,
    /// Write every sample here as CSV.
    pub series: Option<PathBuf>,
}

/// CPU seconds, per-thread CPU and memory when the target was reached.
type AtReach = (f64, Vec<(u32, String, f64)>, probe::Memory);

struct Row {
    sample: Sample,
    rss_kb: u64,
}

/// Follows the hub until the target is reached (plus `after`), it stalls, or it
/// dies, and returns the figures as JSON.
pub fn watch(o: &WatchOptions) -> anyhow::Result<Value> {
    let started = Instant::now();
    let cpu_start = probe::cpu_seconds(o.pid).context("the hub's /proc entry")?;
    let threads_start = probe::thread_cpu(o.pid);
    let memory_start = probe::memory(o.pid).unwrap_or_default();
    let mut memory_last = memory_start;
    let mut rss_peak = memory_start.rss_kb;
    let mut rows: Vec<Row> = Vec::new();
    let mut first_change: Option<(f64, u64)> = None;
    let mut reached: Option<(Instant, f64)> = None;
    let mut reached_sample: Option<Sample> = None;
    let mut at_reach: Option<AtReach> = None;
    let mut drained_rss: Option<u64> = None;
    let mut last_change = Instant::now();
    let mut last_handled: Option<u64> = None;
    let mut baseline: Option<u64> = None;
    let mut next_rss = Instant::now();
    let mut next_poll = Instant::now();
    let stop_reason;
    loop {
        let now = Instant::now();
        if now >= next_rss {
            if let Some(memory) = probe::memory(o.pid) {
                memory_last = memory;
                rss_peak = rss_peak.max(memory.rss_kb);
            }
            next_rss += o.rss_every;
        }
        if now >= next_poll {
            if let Some(sample) = o.source.sample() {
                let base = *baseline.get_or_insert(sample.handled);
                if first_change.is_none() && sample.handled > base {
                    first_change = Some((sample.t, sample.handled));
                }
                if reached.is_none() && sample.handled >= o.until {
                    reached = Some((Instant::now(), sample.t));
                    reached_sample = Some(sample.clone());
                    at_reach = Some((
                        probe::cpu_seconds(o.pid).unwrap_or(cpu_start),
                        probe::thread_cpu(o.pid),
                        probe::memory(o.pid).unwrap_or_default(),
                    ));
                }
                if reached.is_some() && drained_rss.is_none() && sample.backlog <= 0 {
                    drained_rss = Some(memory_last.rss_kb);
                }
                if last_handled != Some(sample.handled) {
                    last_handled = Some(sample.handled);
                    last_change = Instant::now();
                }
                rows.push(Row {
                    sample,
                    rss_kb: memory_last.rss_kb,
                });
            }
            next_poll += o.poll;
        }
        if let Some((when, _)) = reached {
            if when.elapsed() >= o.after {
                stop_reason = "reached";
                break;
            }
        }
        if !probe::alive(o.pid) {
            stop_reason = "hub_exited";
            break;
        }
        if first_change.is_some() && reached.is_none() && last_change.elapsed() >= o.stall {
            stop_reason = "stalled";
            break;
        }
        if first_change.is_none() && started.elapsed() >= o.max_wait {
            stop_reason = "nothing_handled";
            break;
        }
        let wake = next_poll.min(next_rss);
        let now = Instant::now();
        if wake > now {
            std::thread::sleep(wake - now);
        }
    }
    let memory_end = probe::memory(o.pid).unwrap_or(memory_last);
    let cpu_end = probe::cpu_seconds(o.pid).unwrap_or(cpu_start);
    let threads_end = probe::thread_cpu(o.pid);
    if let Some(path) = &o.series {
        write_series(path, &rows)?;
    }
    let last = rows.last().map(|r| r.sample.clone()).unwrap_or_default();
    let baseline = baseline.unwrap_or(0);
    let target = o.until;
    // As asked: from the first change of handled_total to the poll that saw the target.
    let rate_first_to_n = match (first_change, reached) {
        (Some((t1, h1)), Some((_, t2))) if t2 > t1 => (target - h1) as f64 / (t2 - t1),
        _ => 0.0,
    };
    // Finer: between the first and last samples strictly inside the burst, where
    // both the count and the time are exact (no polling-period rounding at the end).
    let inside: Vec<&Sample> = rows
        .iter()
        .map(|r| &r.sample)
        .filter(|s| s.handled > baseline && s.handled < target)
        .collect();
    let rate_inside = match (inside.first(), inside.last()) {
        (Some(a), Some(b)) if b.t > a.t && b.handled > a.handled => {
            (b.handled - a.handled) as f64 / (b.t - a.t)
        }
        _ => 0.0,
    };
    // fedhub stamps the moment its consumer finished the last message: from the
    // first change to that stamp, with no polling-period rounding at the end.
    let rate_stamps = match (
        first_change,
        reached_sample.as_ref().and_then(|s| s.last_progress),
    ) {
        (Some((t1, h1)), Some(t2)) if t2 > t1 => (target - h1) as f64 / (t2 - t1),
        _ => 0.0,
    };
    // The peer's consumer stamps its first and last message itself.
    let rate_consumer = match last.first_last {
        Some((first, last_ts)) if last_ts > first && last.handled > 1 => {
            (last.handled - 1) as f64 / (last_ts - first)
        }
        _ => 0.0,
    };
    let (cpu_reach, threads_reach, memory_reach) =
        at_reach
            .clone()
            .unwrap_or((cpu_end, threads_end.clone(), memory_end));
    let cpu_s = cpu_reach - cpu_start;
    let handled_in_run = last.handled.saturating_sub(baseline);
    let peak_sampled_backlog = rows.iter().map(|r| r.sample.backlog).max().unwrap_or(0);
    let (kind, rate) = match o.source {
        Source::Hub { .. } => ("fedhub", rate_stamps),
        Source::Peer { .. } => ("python", rate_consumer),
    };
    Ok(json!({
        "tool": "watch",
        "hub": kind,
        "target": target,
        "stop": stop_reason,
        "handled": handled_in_run,
        "received": last.received,
        "dropped": last.dropped,
        "bus_messages": last.bus_messages,
        "malformed": last.malformed,
        "rate": round(rate, 1),
        "rate_first_to_n": round(rate_first_to_n, 1),
        "rate_first_to_stamp": round(rate_stamps, 1),
        "rate_inside": round(rate_inside, 1),
        "rate_consumer_stamps": round(rate_consumer, 1),
        "samples": rows.len(),
        "samples_inside": inside.len(),
        "t_first_change": first_change.map(|(t, _)| round(t, 4)),
        "t_reached": reached.map(|(_, t)| round(t, 4)),
        "peak_backlog_sampled": peak_sampled_backlog,
        "peak_backlog_hub": last.peak_backlog,
        "rss_start_kb": memory_start.rss_kb,
        "rss_peak_sampled_kb": rss_peak,
        "rss_hwm_kb": memory_end.hwm_kb,
        "rss_at_reach_kb": memory_reach.rss_kb,
        "rss_drained_kb": drained_rss,
        "rss_end_kb": memory_end.rss_kb,
        "after_s": o.after.as_secs_f64(),
        "cpu_s": round(cpu_s, 3),
        "cpu_us_per_msg": if handled_in_run > 0 { round(cpu_s * 1e6 / handled_in_run as f64, 2) } else { 0.0 },
        "thread_cpu_s": probe::thread_cpu_delta(o.pid, &threads_start, &threads_reach),
    }))
}

fn write_series(path: &PathBuf, rows: &[Row]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(out, "t,handled,backlog,received,bus_messages,rss_kb")?;
    for r in rows {
        let s = &r.sample;
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        writeln!(
            out,
            "{:.4},{},{},{},{},{}",
            s.t,
            s.handled,
            s.backlog,
            opt(s.received),
            opt(s.bus_messages),
            r.rss_kb
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_document_is_read() {
        let body = r#"{"consumers":[{"name":"Other","handled_total":1},
            {"name":"NullConsumer","backlog":3,"handled_total":10,"received_total":13,
             "dropped_total":0,"peak_backlog":7}],
            "buses":[{"name":"inbound","messages_total":13,"malformed_total":1}]}"#;
        let s = parse_state(body, "NullConsumer").unwrap();
        assert_eq!((s.handled, s.backlog, s.received), (10, 3, Some(13)));
        assert_eq!((s.bus_messages, s.malformed), (Some(13), Some(1)));
        assert!(parse_state(body, "Missing").is_none());
    }
}
