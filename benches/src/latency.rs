//! End-to-end latency of fedhub: from the publisher's send to the start of the
//! consumer's `consume`.
//!
//! `fedhub-bench latency-hub` runs a hub built here with fedhub's public API
//! ([`fedhub::HubBuilder`], [`ConsumerFactory`], [`Consumer`]) and one consumer,
//! [`LatencyConsumer`], the only one it registers. The consumer reads the wall
//! clock as the first thing in `consume`, finds the `sent_ns` the publisher
//! stamped into the body ([`crate::stamp`]), and records the difference in a
//! preallocated vector. It ignores the first `skip_messages` (the warm-up), records the
//! next `record_messages`, then hands the recording to the main thread, which
//! stops the hub and prints the percentiles as JSON. On SIGINT/SIGTERM (or
//! `--max-s`) it prints what it recorded so far, marked `"complete": false`.
//!
//! Config: a fedhub TOML file with a `[consumers.LatencyConsumer]` section
//! (`enabled = true`, `skip_messages`, `record_messages`, and the runtime keys
//! every consumer section accepts).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fedhub::{Consumer, ConsumerError, ConsumerFactory, Context, Envelope, HubBuilder};
use serde_json::{json, Value};

use crate::round;
use crate::stamp;

/// The consumer's name (its config section and monitoring name).
pub const NAME: &str = "LatencyConsumer";

/// [`LatencyConsumer`] settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyOptions {
    /// Messages ignored first (the warm-up).
    #[serde(default)]
    pub skip_messages: u64,
    /// Messages recorded after the warm-up.
    pub record_messages: u64,
}

/// What a [`LatencyConsumer`] recorded.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Per recorded message: wall clock at the start of `consume` minus `sent_ns`, ns.
    pub e2e_ns: Vec<i64>,
    /// Per recorded message: wall clock at the start of `consume`, ns since the epoch.
    pub at_ns: Vec<u64>,
    /// Per recorded message: when the hub decoded it ([`Envelope::received_at`])
    /// minus `sent_ns`, ns (the bus leg: publisher, libzmq, receiving and decoding threads).
    pub bus_ns: Vec<i64>,
    /// Messages ignored as warm-up.
    pub skipped: u64,
    /// Messages consumed in all.
    pub seen: u64,
    /// Messages after the warm-up without a readable `sent_ns` (not recorded).
    pub missing_stamp: u64,
    /// Wall clock at the start of the first and the last recorded `consume`, ns.
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
    /// Whether `record_messages` were recorded.
    pub complete: bool,
}

/// Where the consumer hands its recording over to the hub's owner.
#[derive(Default)]
pub struct Handover {
    recording: Mutex<Option<Recording>>,
    ready: Condvar,
}

impl Handover {
    fn put(&self, recording: Recording) {
        let mut slot = self.recording.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(recording);
        }
        self.ready.notify_all();
    }

    /// Waits up to `timeout` for a recording; returns whether one is there.
    pub fn wait(&self, timeout: Duration) -> bool {
        let slot = self.recording.lock().unwrap_or_else(|e| e.into_inner());
        let (slot, _) = self
            .ready
            .wait_timeout_while(slot, timeout, |r| r.is_none())
            .unwrap_or_else(|e| e.into_inner());
        slot.is_some()
    }

    /// Takes the recording, if one was handed over.
    pub fn take(&self) -> Option<Recording> {
        self.recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// Records, per message, the time from the publisher's send to the start of `consume`.
pub struct LatencyConsumer {
    options: LatencyOptions,
    recording: Recording,
    handed_over: bool,
    handover: Arc<Handover>,
}

impl LatencyConsumer {
    /// A consumer that hands its recording to `handover`.
    pub fn new(options: LatencyOptions, handover: Arc<Handover>) -> LatencyConsumer {
        let capacity = options.record_messages as usize;
        LatencyConsumer {
            options,
            recording: Recording {
                e2e_ns: Vec::with_capacity(capacity),
                at_ns: Vec::with_capacity(capacity),
                bus_ns: Vec::with_capacity(capacity),
                ..Recording::default()
            },
            handed_over: false,
            handover,
        }
    }

    /// Its factory: every consumer it builds hands over to `handover`.
    pub fn factory(handover: Arc<Handover>) -> ConsumerFactory {
        ConsumerFactory::new(NAME, move |settings| {
            Ok(Box::new(LatencyConsumer::new(
                settings.parse()?,
                handover.clone(),
            )))
        })
    }

    fn hand_over(&mut self, complete: bool) {
        if !self.handed_over {
            self.handed_over = true;
            self.recording.complete = complete;
            self.handover.put(std::mem::take(&mut self.recording));
        }
    }
}

impl Consumer for LatencyConsumer {
    fn consume(&mut self, envelope: &Envelope, _ctx: &mut Context) -> Result<(), ConsumerError> {
        let now = stamp::wall_ns();
        self.recording.seen += 1;
        if self.handed_over {
            return Ok(());
        }
        if self.recording.seen <= self.options.skip_messages {
            self.recording.skipped += 1;
            return Ok(());
        }
        let Some(sent) = stamp::sent_ns(envelope.body()) else {
            self.recording.missing_stamp += 1;
            return Ok(());
        };
        let received = stamp::epoch_ns(envelope.received_at());
        self.recording.e2e_ns.push(now as i64 - sent as i64);
        self.recording.at_ns.push(now);
        self.recording.bus_ns.push(received as i64 - sent as i64);
        if self.recording.first_ns == 0 {
            self.recording.first_ns = now;
        }
        self.recording.last_ns = now;
        if self.recording.e2e_ns.len() as u64 >= self.options.record_messages {
            self.hand_over(true);
        }
        Ok(())
    }

    fn stop(&mut self, _ctx: &mut Context) {
        self.hand_over(false);
    }

    fn module(&self) -> &str {
        "fedhub_bench.latency"
    }
}

/// Percentiles (nearest rank) of nanosecond values, in milliseconds.
pub fn summarize_ns(values: &mut [i64]) -> Value {
    if values.is_empty() {
        return json!({"count": 0});
    }
    values.sort_unstable();
    let n = values.len();
    let ms = |ns: i64| round(ns as f64 / 1e6, 4);
    let at = |q: f64| ms(values[((q * n as f64).ceil() as usize).clamp(1, n) - 1]);
    let mean = values.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
    json!({
        "count": n,
        "min": ms(values[0]),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": ms(values[n - 1]),
        "mean": round(mean / 1e6, 4),
    })
}

/// Per `window_ms` of consume time (from the first recorded message): the count
/// and the p50/p99/max latency in ms, as CSV lines `t_s,count,p50_ms,p99_ms,max_ms`,
/// to tell a stall (one window's max) from steady queueing (every window's p50).
pub fn series_csv(at_ns: &[u64], e2e_ns: &[i64], window_ms: u64) -> String {
    let mut out = String::from("t_s,count,p50_ms,p99_ms,max_ms\n");
    let (Some(first), true) = (at_ns.first(), window_ms > 0) else {
        return out;
    };
    let width = window_ms * 1_000_000;
    let mut windows: std::collections::BTreeMap<u64, Vec<i64>> = Default::default();
    for (at, e2e) in at_ns.iter().zip(e2e_ns) {
        windows
            .entry(at.saturating_sub(*first) / width)
            .or_default()
            .push(*e2e);
    }
    for (w, mut values) in windows {
        let s = summarize_ns(&mut values);
        out.push_str(&format!(
            "{:.3},{},{},{},{}\n",
            (w * width) as f64 / 1e9,
            s["count"],
            s["p50"],
            s["p99"],
            s["max"]
        ));
    }
    out
}

/// How to run the latency hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// fedhub TOML config with a `[consumers.LatencyConsumer]` section.
    pub config: PathBuf,
    /// Give up (and print what was recorded) after this long.
    pub max: Duration,
    /// Write the per-window series here (see [`series_csv`]).
    pub series: Option<PathBuf>,
    /// The series' window, ms.
    pub window_ms: u64,
}

/// Runs the hub until the consumer recorded what it was asked to, a signal, or
/// `max`; returns the figures as JSON.
pub fn run_hub(options: &HubOptions) -> anyhow::Result<Value> {
    let config = fedhub::Config::load(Some(&options.config))
        .with_context(|| format!("loading {}", options.config.display()))?;
    let handover = Arc::new(Handover::default());
    let hub = HubBuilder::new(config)
        .consumer(LatencyConsumer::factory(handover.clone()))
        .start()
        .context("starting the hub")?;
    let signalled = Arc::new(AtomicBool::new(false));
    {
        let signalled = signalled.clone();
        let handover = handover.clone();
        std::thread::spawn(move || {
            if fedhub::wait_for_shutdown_signal().is_ok() {
                signalled.store(true, Ordering::Release);
                handover.ready.notify_all();
            }
        });
    }
    let started = Instant::now();
    let mut why = "max_s";
    while started.elapsed() < options.max {
        if handover.wait(Duration::from_millis(100)) {
            why = "recorded";
            break;
        }
        if signalled.load(Ordering::Acquire) {
            why = "signal";
            break;
        }
    }
    // Shutting down drains the mailbox and calls `stop`, which hands over a
    // partial recording if the full one did not come.
    let report = hub.shutdown();
    let recording = handover.take().unwrap_or_default();
    if let Some(path) = &options.series {
        std::fs::write(
            path,
            series_csv(&recording.at_ns, &recording.e2e_ns, options.window_ms),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summarize(recording, why, report.undrained.len()))
}

fn summarize(mut r: Recording, why: &str, undrained: usize) -> Value {
    let span_s = r.last_ns.saturating_sub(r.first_ns) as f64 / 1e9;
    let recorded = r.e2e_ns.len();
    let rate = if recorded > 1 && span_s > 0.0 {
        round((recorded - 1) as f64 / span_s, 1)
    } else {
        0.0
    };
    json!({
        "tool": "latency-hub",
        "hub": "fedhub",
        "complete": r.complete,
        "ended_by": why,
        "seen": r.seen,
        "skipped": r.skipped,
        "recorded": recorded,
        "missing_stamp": r.missing_stamp,
        "e2e_ms": summarize_ns(&mut r.e2e_ns),
        "bus_ms": summarize_ns(&mut r.bus_ns),
        "first_consume": round(r.first_ns as f64 / 1e9, 6),
        "last_consume": round(r.last_ns as f64 / 1e9, 6),
        "rate": rate,
        "consumers_undrained": undrained,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_in_ms() {
        let mut v: Vec<i64> = (1..=1000).map(|x| x * 1000).collect();
        let s = summarize_ns(&mut v);
        assert_eq!(s["count"], 1000);
        assert_eq!(s["p50"], 0.5);
        assert_eq!(s["p99"], 0.99);
        assert_eq!(s["max"], 1.0);
        assert_eq!(s["min"], 0.001);
        assert_eq!(summarize_ns(&mut [])["count"], 0);
    }

    #[test]
    fn series_windows_start_at_the_first_message() {
        let at = [
            1_000_000_000u64,
            1_050_000_000,
            1_150_000_000,
            1_160_000_000,
        ];
        let e2e = [1_000_000i64, 3_000_000, 2_000_000, 4_000_000];
        let csv = series_csv(&at, &e2e, 100);
        assert_eq!(
            csv,
            "t_s,count,p50_ms,p99_ms,max_ms\n0.000,2,1.0,3.0,3.0\n0.100,2,2.0,4.0,4.0\n"
        );
        assert_eq!(
            series_csv(&[], &[], 100),
            "t_s,count,p50_ms,p99_ms,max_ms\n"
        );
    }
}
