//! Reported backlog against true backlog. One thread publishes a burst and
//! counts what it has handed to libzmq; this thread samples the hub's reported
//! backlog and handled count. True backlog at a sample is what the publisher
//! had sent minus what the consumer had handled: it includes messages still
//! inside ZeroMQ, which a hub that only counts its own queue cannot see.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::corpus::Corpus;
use crate::publisher::{publish, PublishOptions};
use crate::watch::Source;
use crate::{now_epoch, round};

/// The burst and the sampling.
#[derive(Debug, Clone)]
pub struct BacklogOptions {
    /// Where the reported backlog comes from.
    pub source: Source,
    /// The burst (its `count` is the target).
    pub publish: PublishOptions,
    /// Sampling period.
    pub poll: Duration,
    /// Give up when the handled count has not moved for this long.
    pub stall: Duration,
    /// Write every sample here as CSV.
    pub series: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Point {
    t: f64,
    sent_before: u64,
    sent_after: u64,
    publishing: bool,
    handled: u64,
    reported: i64,
}

impl Point {
    /// Sent minus handled, with the sent count read after the hub answered
    /// (during the burst the two reads bracket the instant of the snapshot).
    fn true_backlog(&self) -> i64 {
        self.sent_after as i64 - self.handled as i64
    }
}

/// Runs the burst while sampling, and returns both series' summary as JSON.
pub fn run(corpus: &Corpus, o: &BacklogOptions) -> anyhow::Result<Value> {
    let sent = AtomicU64::new(0);
    let publishing = AtomicBool::new(true);
    let target = o.publish.count as u64;
    let started = Instant::now();
    let t0 = now_epoch();
    let mut points: Vec<Point> = Vec::new();
    let mut stop_reason = "reached";
    let publisher_result = std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            let result = publish(corpus, &o.publish, Some(&sent));
            publishing.store(false, Ordering::Release);
            result
        });
        let mut baseline: Option<u64> = None;
        let mut last_change = Instant::now();
        let mut last_handled = None;
        let mut reached_at: Option<Instant> = None;
        let mut next = Instant::now();
        loop {
            let was_publishing = publishing.load(Ordering::Acquire);
            let sent_before = sent.load(Ordering::Acquire);
            let sample = o.source.sample();
            let sent_after = sent.load(Ordering::Acquire);
            if let Some(s) = sample {
                let base = *baseline.get_or_insert(s.handled);
                let handled = s.handled - base;
                if last_handled != Some(handled) {
                    last_handled = Some(handled);
                    last_change = Instant::now();
                }
                points.push(Point {
                    t: s.t - t0,
                    sent_before,
                    sent_after,
                    publishing: was_publishing || publishing.load(Ordering::Acquire),
                    handled,
                    reported: s.backlog,
                });
                if handled >= target && reached_at.is_none() {
                    reached_at = Some(Instant::now());
                }
            }
            if reached_at.is_some_and(|r| r.elapsed() >= o.poll * 4) {
                break;
            }
            if handle.is_finished() && last_change.elapsed() >= o.stall {
                stop_reason = "stalled";
                break;
            }
            if started.elapsed() >= o.stall * 20 && last_handled.unwrap_or(0) == 0 {
                stop_reason = "nothing_handled";
                break;
            }
            next += o.poll;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        handle
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("publisher thread panicked")))
    });
    let publisher = publisher_result?;
    if let Some(path) = &o.series {
        write_series(path, &points)?;
    }
    let diffs = |filter: &dyn Fn(&Point) -> bool| {
        points
            .iter()
            .filter(|p| filter(p))
            .map(|p| (p.reported - p.true_backlog()).abs())
            .max()
            .unwrap_or(0)
    };
    let steady = |p: &Point| !p.publishing && p.sent_before == p.sent_after;
    let max_diff_all = diffs(&|_| true);
    let max_diff_after_burst = diffs(&steady);
    // Rows to print: every sample during the burst, then about 24 spread evenly.
    let after: Vec<&Point> = points.iter().filter(|p| steady(p)).collect();
    let step = (after.len() / 24).max(1);
    let mut shown: Vec<&Point> = points.iter().filter(|p| !steady(p)).collect();
    shown.extend(after.iter().step_by(step).copied());
    if let Some(last) = after.last() {
        if shown.last().map(|p| p.t) != Some(last.t) {
            shown.push(last);
        }
    }
    let table: Vec<Value> = shown
        .iter()
        .map(|p| {
            json!([
                round(p.t, 3),
                p.sent_after,
                p.handled,
                p.reported,
                p.true_backlog(),
                p.reported - p.true_backlog()
            ])
        })
        .collect();
    let last = points.last();
    Ok(json!({
        "tool": "backlog",
        "target": target,
        "stop": stop_reason,
        "sent": publisher["sent"],
        "publish_rate": publisher["rate"],
        "publish_s": publisher["seconds"],
        "handled": last.map(|p| p.handled),
        "samples": points.len(),
        "samples_during_burst": points.iter().filter(|p| !steady(p)).count(),
        "max_reported": points.iter().map(|p| p.reported).max(),
        "max_true": points.iter().map(|p| p.true_backlog()).max(),
        "max_abs_diff": max_diff_all,
        "max_abs_diff_after_burst": max_diff_after_burst,
        "series_columns": ["t_s", "sent", "handled", "reported", "true", "diff"],
        "series": table,
        "publisher": publisher,
    }))
}

fn write_series(path: &PathBuf, points: &[Point]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(
        out,
        "t_s,sent_before,sent_after,publishing,handled,reported,true,diff"
    )?;
    for p in points {
        writeln!(
            out,
            "{:.4},{},{},{},{},{},{},{}",
            p.t,
            p.sent_before,
            p.sent_after,
            u8::from(p.publishing),
            p.handled,
            p.reported,
            p.true_backlog(),
            p.reported - p.true_backlog()
        )?;
    }
    out.flush()?;
    Ok(())
}
