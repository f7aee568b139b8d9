//! Section 7 of the report: end-to-end latency, paced, from the publisher's send
//! to the start of `consume`.
//!
//! Files in the run directory: `latency__<fedhub|python>__<rate>__<rep>.pub.json`
//! (the paced, stamping publisher) and `.recv.json` (`fedhub-bench latency-hub`,
//! or the Python hub's latency consumer: the same fields).

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::monreport::Target;
use crate::report::{med_runs, median, thousands, Run, Runs};

/// The rate at which fedhub's p99 target applies, msg/s.
pub const TARGET_RATE: u64 = 50_000;

/// fedhub's p99 target at [`TARGET_RATE`], ms.
pub const TARGET_P99_MS: f64 = 1.0;

const LABELS: [(&str, &str); 2] = [
    ("fedhub", "fedhub (LatencyConsumer)"),
    ("python", "Python fedmsg-hub"),
];

fn e2e(run: &Run, key: &str) -> Option<f64> {
    run.receiver.get("e2e_ms")?.get(key)?.as_f64()
}

fn bus(run: &Run, key: &str) -> Option<f64> {
    run.receiver.get("bus_ms")?.get(key)?.as_f64()
}

fn publisher(run: &Run, key: &str) -> Option<f64> {
    run.publisher.as_ref()?.get(key)?.as_f64()
}

fn pace(run: &Run, key: &str) -> Option<f64> {
    run.publisher.as_ref()?.get("pace")?.get(key)?.as_f64()
}

/// Lost: sent by the publisher minus consumed by the hub's consumer (warm-up included).
fn lost(run: &Run) -> Option<f64> {
    Some(publisher(run, "sent")? - run.receiver.get("seen")?.as_f64()?)
}

/// Writes section 7 and returns its summary and target lines.
pub fn report(runs: &Runs, meta: &Value, out: &mut String) -> anyhow::Result<(Value, Vec<Target>)> {
    let mut summary = serde_json::Map::new();
    let mut targets = Vec::new();
    // (variant, rate) of every latency run.
    let keys: Vec<(&str, u64)> = runs
        .keys()
        .filter(|(s, _, _)| s == "latency")
        .map(|(_, v, n)| (v.as_str(), *n))
        .collect();
    if keys.is_empty() {
        return Ok((Value::Object(summary), targets));
    }
    let warmup = meta.get("lat_warmup_s").and_then(Value::as_f64);
    let secs = meta.get("lat_secs").and_then(Value::as_f64);
    writeln!(
        out,
        "\n== 7. End-to-end latency, paced: publisher send -> start of consume (ms: median [every run]) =="
    )?;
    writeln!(
        out,
        "  (publisher stamps sent_ns = wall clock right before sending; the consumer reads the wall clock first thing in consume; same machine, same clock;"
    )?;
    writeln!(
        out,
        "   first {} s of each run discarded as warm-up, then {} s recorded; open-loop pacing, 'late' = how late the publisher sent after each due time)",
        warmup.map(|x| format!("{x}")).unwrap_or_else(|| "?".into()),
        secs.map(|x| format!("{x}")).unwrap_or_else(|| "?".into()),
    )?;
    writeln!(
        out,
        "  {:>7}  {:<25} {:<22} {:<22} {:<22} {:>8} {:>10} {:>9} {:>6}  send->decoded p50/p99 (fedhub)",
        "rate/s",
        "hub",
        "p50",
        "p99",
        "max",
        "recorded",
        "consumed/s",
        "late p99us",
        "lost",
    )?;
    let ms = |x: f64| format!("{x:.3}");
    let mut order: Vec<(u64, usize)> = keys
        .iter()
        .filter_map(|(v, n)| LABELS.iter().position(|(l, _)| l == v).map(|i| (*n, i)))
        .collect();
    order.sort_unstable();
    for (rate, idx) in order {
        let (variant, label) = LABELS[idx];
        let Some(list) = runs.get(&("latency".to_string(), variant.to_string(), rate)) else {
            continue;
        };
        let col =
            |f: &dyn Fn(&Run) -> Option<f64>| -> Vec<Option<f64>> { list.iter().map(f).collect() };
        let p50 = col(&|r| e2e(r, "p50"));
        let p99 = col(&|r| e2e(r, "p99"));
        let max = col(&|r| e2e(r, "max"));
        let recorded = col(&|r| e2e(r, "count"));
        let rate_seen = col(&|r| r.receiver.get("rate").and_then(Value::as_f64));
        let late = col(&|r| pace(r, "late_us_p99"));
        let losses = col(&lost);
        let bus50 = col(&|r| bus(r, "p50"));
        let bus99 = col(&|r| bus(r, "p99"));
        let incomplete: Vec<u32> = list
            .iter()
            .filter(|r| r.receiver.get("complete").and_then(Value::as_bool) != Some(true))
            .map(|r| r.rep)
            .collect();
        let med = |v: &[Option<f64>]| median(&v.iter().flatten().copied().collect::<Vec<_>>());
        writeln!(
            out,
            "  {:>7}  {:<25} {:<22} {:<22} {:<22} {:>8} {:>10} {:>9} {:>6}  {}{}",
            thousands(rate as f64),
            label,
            med_runs(&p50, &ms),
            med_runs(&p99, &ms),
            med_runs(&max, &ms),
            med(&recorded).map(thousands).unwrap_or_else(|| "-".into()),
            med(&rate_seen).map(thousands).unwrap_or_else(|| "-".into()),
            med(&late)
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "-".into()),
            losses
                .iter()
                .map(|l| l.map(thousands).unwrap_or_else(|| "?".into()))
                .collect::<Vec<_>>()
                .join("/"),
            match (med(&bus50), med(&bus99)) {
                (Some(a), Some(b)) => format!("{a:.3} / {b:.3}"),
                _ => "-".into(),
            },
            if incomplete.is_empty() {
                String::new()
            } else {
                format!("  INCOMPLETE runs {incomplete:?} (see the .recv.json)")
            },
        )?;
        let entry = summary
            .entry(variant.to_string())
            .or_insert_with(|| json!({}));
        entry[rate.to_string()] = json!({
            "p50_ms_median": med(&p50),
            "p99_ms_median": med(&p99),
            "max_ms_median": med(&max),
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max,
            "recorded": recorded,
            "consumed_rate": rate_seen,
            "publisher_late_us_p99": late,
            "lost": losses,
            "send_to_decoded_p50_ms": bus50,
            "send_to_decoded_p99_ms": bus99,
            "incomplete_reps": incomplete,
            "runs": list.iter().map(|r| json!({"rep": r.rep, "publisher": r.publisher, "receiver": r.receiver})).collect::<Vec<_>>(),
        });
    }
    let p99_at = |variant: &str, rate: u64| -> Option<f64> {
        summary.get(variant)?.get(rate.to_string())?["p99_ms_median"].as_f64()
    };
    let common: Vec<u64> = keys
        .iter()
        .filter(|(v, _)| *v == "python")
        .map(|(_, n)| *n)
        .collect();
    for rate in common {
        if let (Some(f), Some(p)) = (p99_at("fedhub", rate), p99_at("python", rate)) {
            writeln!(
                out,
                "  p99 at {}/s: Python hub {:.3} ms, fedhub {:.3} ms ({:.1}x lower)",
                thousands(rate as f64),
                p,
                f,
                if f > 0.0 { p / f } else { f64::NAN }
            )?;
        }
    }
    let at_target = p99_at("fedhub", TARGET_RATE);
    let incomplete_at_target = summary
        .get("fedhub")
        .and_then(|v| v.get(TARGET_RATE.to_string()))
        .and_then(|v| v["incomplete_reps"].as_array())
        .is_some_and(|a| !a.is_empty());
    targets.push((
        format!(
            "fedhub end-to-end p99 <= {TARGET_P99_MS} ms at {}/s",
            thousands(TARGET_RATE as f64)
        ),
        at_target
            .map(|x| {
                format!(
                    "{x:.3} ms{}",
                    if incomplete_at_target {
                        " (incomplete runs)"
                    } else {
                        ""
                    }
                )
            })
            .unwrap_or_else(|| "-".into()),
        match at_target {
            Some(x) if x <= TARGET_P99_MS && !incomplete_at_target => "MET",
            Some(_) => "MISSED",
            None => "n/a",
        },
    ));
    summary.insert("warmup_s".into(), json!(warmup));
    summary.insert("recorded_s".into(), json!(secs));
    Ok((Value::Object(summary), targets))
}
