//! The results of one `benches/run.sh` run: tables on stdout and a JSON summary.
//!
//! The driver leaves one file per tool run in the run directory, named
//! `<scenario>__<variant>__<n>__<rep>.<pub|recv>.json`, plus `phases.tsv`
//! (`name<TAB>start<TAB>end`, epoch seconds) and `sysmon.csv` (see
//! [`crate::sysmon`]). Medians are over the repetitions; every run is shown too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::round;

/// One tool run: the publisher's figures (if a separate file) and the receiver's.
#[derive(Debug, Clone)]
pub struct Run {
    /// Repetition number, from 1.
    pub rep: u32,
    /// The publisher's JSON.
    pub publisher: Option<Value>,
    /// The receiver's (bare SUB, watcher or backlog tool) JSON.
    pub receiver: Value,
}

/// `(scenario, variant, n)` -> runs in repetition order.
pub type Runs = BTreeMap<(String, String, u64), Vec<Run>>;

/// Reads every run file in `dir`.
pub fn load(dir: &Path) -> anyhow::Result<Runs> {
    let mut pubs: BTreeMap<(String, String, u64, u32), Value> = BTreeMap::new();
    let mut recvs: BTreeMap<(String, String, u64, u32), Value> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let (stem, kind) = if let Some(s) = name.strip_suffix(".pub.json") {
            (s, "pub")
        } else if let Some(s) = name.strip_suffix(".recv.json") {
            (s, "recv")
        } else {
            continue;
        };
        let parts: Vec<&str> = stem.split("__").collect();
        let [scenario, variant, n, rep] = parts[..] else {
            continue;
        };
        let (Ok(n), Ok(rep)) = (n.parse::<u64>(), rep.parse::<u32>()) else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        // A tool that failed leaves an empty or partial file: keep the run, mark it.
        let value = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or_else(|| json!({"error": format!("no JSON in {name}")}));
        let key = (scenario.to_string(), variant.to_string(), n, rep);
        if kind == "pub" {
            pubs.insert(key, value);
        } else {
            recvs.insert(key, value);
        }
    }
    let mut runs: Runs = BTreeMap::new();
    for ((scenario, variant, n, rep), receiver) in recvs {
        let publisher = pubs.remove(&(scenario.clone(), variant.clone(), n, rep));
        runs.entry((scenario, variant, n)).or_default().push(Run {
            rep,
            publisher,
            receiver,
        });
    }
    for list in runs.values_mut() {
        list.sort_by_key(|r| r.rep);
    }
    Ok(runs)
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// `x` rounded, with thousands separators (`1,234,567`).
pub(crate) fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn mb(kb: f64) -> String {
    format!("{:.1}", kb / 1024.0)
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// `median [run1 / run2 / run3]`, formatted with `f`.
pub(crate) fn med_runs(values: &[Option<f64>], f: &dyn Fn(f64) -> String) -> String {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let all: Vec<String> = values
        .iter()
        .map(|v| v.map(f).unwrap_or_else(|| "-".into()))
        .collect();
    match median(&present) {
        Some(m) => format!("{} [{}]", f(m), all.join(" / ")),
        None => format!("- [{}]", all.join(" / ")),
    }
}

const LABELS: [(&str, &str); 7] = [
    ("bare", "bare SUB, count only"),
    ("parse", "bare SUB + serde_json::Value"),
    ("envelope", "bare SUB + fedhub Envelope decode"),
    ("fedhub", "fedhub (NullConsumer)"),
    ("fedhub-base", "fedhub, BENCH_FEDHUB_BASE binary"),
    ("python", "Python fedmsg-hub"),
    ("fedhub-noop", "fedhub, no-op consumer"),
];

fn label(variant: &str) -> &str {
    LABELS
        .iter()
        .find(|(v, _)| *v == variant)
        .map(|(_, l)| *l)
        .unwrap_or(variant)
}

fn consumed(run: &Run) -> Option<f64> {
    num(&run.receiver, "rate").filter(|r| *r > 0.0)
}

fn sent(run: &Run) -> Option<f64> {
    run.publisher.as_ref().and_then(|p| num(p, "sent"))
}

fn got(run: &Run) -> Option<f64> {
    num(&run.receiver, "handled").or_else(|| num(&run.receiver, "received"))
}

/// Prints the tables and returns the JSON summary.
pub fn report(dir: &Path, out: &mut String) -> anyhow::Result<Value> {
    let runs = load(dir)?;
    let mut summary = serde_json::Map::new();
    let meta: Value = std::fs::read_to_string(dir.join("meta.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    summary.insert("meta".into(), meta.clone());
    summary.insert("dir".into(), dir.display().to_string().into());

    // 1. Throughput.
    let mut sizes: Vec<u64> = runs
        .keys()
        .filter(|(s, _, _)| s == "tput")
        .map(|(_, _, n)| *n)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut tput = serde_json::Map::new();
    let mut medians: BTreeMap<(u64, String), f64> = BTreeMap::new();
    let mut cpu_medians: BTreeMap<(u64, String), f64> = BTreeMap::new();
    writeln!(
        out,
        "\n== 1. Throughput, no-op consumer (msg/s: median [every run]) =="
    )?;
    writeln!(
        out,
        "{:>9}  {:<34} {:<44} {:<44} {:>8} {:>9}",
        "burst", "receiver", "publisher send rate", "consumed rate", "lost", "CPU us/msg"
    )?;
    for n in &sizes {
        let mut per_n = serde_json::Map::new();
        for (variant, _) in LABELS {
            let Some(list) = runs.get(&("tput".to_string(), variant.to_string(), *n)) else {
                continue;
            };
            let rates: Vec<Option<f64>> = list.iter().map(consumed).collect();
            let pub_rates: Vec<Option<f64>> = list
                .iter()
                .map(|r| r.publisher.as_ref().and_then(|p| num(p, "rate")))
                .collect();
            let losses: Vec<Option<f64>> = list.iter().map(|r| Some(sent(r)? - got(r)?)).collect();
            let cpu: Vec<Option<f64>> = list
                .iter()
                .map(|r| num(&r.receiver, "cpu_us_per_msg"))
                .collect();
            let k = |x: f64| thousands(x);
            writeln!(
                out,
                "{:>9}  {:<34} {:<44} {:<44} {:>8} {:>9}",
                thousands(*n as f64),
                label(variant),
                med_runs(&pub_rates, &k),
                med_runs(&rates, &k),
                losses
                    .iter()
                    .map(|l| l.map(thousands).unwrap_or_else(|| "?".into()))
                    .collect::<Vec<_>>()
                    .join("/"),
                median(&cpu.iter().flatten().copied().collect::<Vec<_>>())
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_else(|| "-".into()),
            )?;
            let present: Vec<f64> = rates.iter().flatten().copied().collect();
            if let Some(m) = median(&present) {
                medians.insert((*n, variant.to_string()), m);
            }
            if let Some(m) = median(&cpu.iter().flatten().copied().collect::<Vec<_>>()) {
                cpu_medians.insert((*n, variant.to_string()), m);
            }
            per_n.insert(
                variant.to_string(),
                json!({
                    "consumed_rate_median": median(&present).map(|x| round(x, 0)),
                    "consumed_rates": rates,
                    "publisher_rates": pub_rates,
                    "lost": losses,
                    "cpu_us_per_msg": cpu,
                    "runs": list.iter().map(|r| json!({"rep": r.rep, "publisher": r.publisher, "receiver": r.receiver})).collect::<Vec<_>>(),
                }),
            );
        }
        tput.insert(n.to_string(), Value::Object(per_n));
    }
    // Ratios, from medians and per repetition (runs were interleaved, so pairs
    // saw similar background load).
    let mut ratios = serde_json::Map::new();
    writeln!(
        out,
        "\nRatios (of medians; per-repetition pairs in brackets):"
    )?;
    for n in &sizes {
        for (num_v, den_v, name) in [
            ("fedhub", "python", "fedhub/python"),
            ("fedhub", "fedhub-base", "fedhub/fedhub-base"),
            ("fedhub", "bare", "fedhub/bare"),
            ("fedhub", "parse", "fedhub/bare+parse"),
            ("fedhub", "envelope", "fedhub/bare+envelope"),
            ("parse", "bare", "bare+parse/bare"),
            ("bare", "python", "bare/python (the ceiling)"),
        ] {
            let (Some(a), Some(b)) = (
                medians.get(&(*n, num_v.to_string())),
                medians.get(&(*n, den_v.to_string())),
            ) else {
                continue;
            };
            let pairs: Vec<String> = match (
                runs.get(&("tput".into(), num_v.into(), *n)),
                runs.get(&("tput".into(), den_v.into(), *n)),
            ) {
                (Some(x), Some(y)) => x
                    .iter()
                    .zip(y)
                    .map(|(p, q)| match (consumed(p), consumed(q)) {
                        (Some(p), Some(q)) => format!("{:.2}", p / q),
                        _ => "-".into(),
                    })
                    .collect(),
                _ => vec![],
            };
            writeln!(
                out,
                "  {:>9}  {:<22} {:>7.2}x  [{}]",
                thousands(*n as f64),
                name,
                a / b,
                pairs.join(" / ")
            )?;
            ratios.insert(format!("{name}@{n}"), json!(round(a / b, 3)));
        }
    }
    for n in &sizes {
        let key = |v: &str| (*n, v.to_string());
        if let (Some(a), Some(b)) = (
            cpu_medians.get(&key("fedhub")),
            cpu_medians.get(&key("fedhub-base")),
        ) {
            writeln!(
                out,
                "  {:>9}  {:<22} {:>7.2}x  (CPU us/msg {a:.2} vs {b:.2})",
                thousands(*n as f64),
                "CPU fedhub/fedhub-base",
                a / b
            )?;
            ratios.insert(
                format!("cpu fedhub/fedhub-base@{n}"),
                json!(round(a / b, 3)),
            );
        }
    }
    summary.insert("throughput".into(), Value::Object(tput));
    summary.insert("ratios".into(), Value::Object(ratios.clone()));

    // 2. Loss at 100k with default settings.
    writeln!(
        out,
        "\n== 2. Loss on a 100,000 burst, default settings (sent - handled) =="
    )?;
    let mut loss = serde_json::Map::new();
    for variant in ["fedhub", "python"] {
        let Some(list) = runs.get(&("tput".to_string(), variant.to_string(), 100_000)) else {
            continue;
        };
        let mut rows = Vec::new();
        for r in list {
            let s = sent(r);
            let h = got(r);
            let lost = s.zip(h).map(|(s, h)| s - h);
            writeln!(
                out,
                "  {:<24} run {}: sent {:>9}  handled {:>9}  lost {:>6}  dropped {:>4}  malformed {:>4}  bus received {:>9}",
                label(variant),
                r.rep,
                s.map(thousands).unwrap_or_else(|| "?".into()),
                h.map(thousands).unwrap_or_else(|| "?".into()),
                lost.map(thousands).unwrap_or_else(|| "?".into()),
                num(&r.receiver, "dropped").map(thousands).unwrap_or_else(|| "-".into()),
                num(&r.receiver, "malformed").map(thousands).unwrap_or_else(|| "-".into()),
                num(&r.receiver, "bus_messages").map(thousands).unwrap_or_else(|| "-".into()),
            )?;
            rows.push(json!({"rep": r.rep, "sent": s, "handled": h, "lost": lost,
                "dropped": r.receiver.get("dropped"), "malformed": r.receiver.get("malformed")}));
        }
        loss.insert(variant.to_string(), Value::Array(rows));
    }
    summary.insert("loss_100k".into(), Value::Object(loss.clone()));

    // 3. Memory.
    writeln!(
        out,
        "\n== 3. RSS (MB): idle, and a 100,000 backlog behind a slow consumer =="
    )?;
    let mut memory = serde_json::Map::new();
    if let Some(list) = runs
        .iter()
        .find(|((s, v, _), _)| s == "rss" && v == "fedhub")
        .map(|(_, l)| l)
    {
        let col = |key: &str| -> Vec<Option<f64>> {
            list.iter().map(|r| num(&r.receiver, key)).collect()
        };
        let after = list
            .first()
            .and_then(|r| num(&r.receiver, "after_s"))
            .unwrap_or(0.0);
        let rows = [
            ("idle (before the burst)", "rss_start_kb"),
            ("peak, sampled every 100 ms", "rss_peak_sampled_kb"),
            ("peak, VmHWM", "rss_hwm_kb"),
            ("when the last message was handled", "rss_at_reach_kb"),
            ("first sample with backlog 0", "rss_drained_kb"),
        ];
        for (name, key) in rows {
            writeln!(out, "  fedhub {:<40} {}", name, med_runs(&col(key), &mb))?;
        }
        writeln!(
            out,
            "  fedhub {:<40} {}",
            format!("{after:.0} s after draining"),
            med_runs(&col("rss_end_kb"), &mb)
        )?;
        writeln!(
            out,
            "  fedhub {:<40} {}",
            "peak reported backlog",
            med_runs(&col("peak_backlog_sampled"), &|x| thousands(x))
        )?;
        writeln!(
            out,
            "  fedhub {:<40} {}",
            "drain rate, msg/s",
            med_runs(&col("rate"), &|x| thousands(x))
        )?;
        let returned: Vec<Option<f64>> = list
            .iter()
            .map(|r| {
                let start = num(&r.receiver, "rss_start_kb")?;
                let peak = num(&r.receiver, "rss_hwm_kb")?;
                let end = num(&r.receiver, "rss_end_kb")?;
                (peak > start).then(|| 100.0 * (peak - end) / (peak - start))
            })
            .collect();
        writeln!(
            out,
            "  fedhub {:<40} {}",
            "growth given back after draining, %",
            med_runs(&returned, &|x| format!("{x:.0}"))
        )?;
        memory.insert(
            "fedhub_slow_consumer".into(),
            json!({
                "consumer_sleep_ms": meta.get("rss_sleep_ms"),
                "idle_kb": col("rss_start_kb"),
                "peak_sampled_kb": col("rss_peak_sampled_kb"),
                "hwm_kb": col("rss_hwm_kb"),
                "at_last_handled_kb": col("rss_at_reach_kb"),
                "drained_kb": col("rss_drained_kb"),
                "end_kb": col("rss_end_kb"),
                "after_s": after,
                "growth_returned_pct": returned,
                "peak_backlog": col("peak_backlog_sampled"),
                "runs": list.iter().map(|r| &r.receiver).collect::<Vec<_>>(),
            }),
        );
    }
    for (variant, n) in [("fedhub", 100_000u64), ("python", 100_000)] {
        if let Some(list) = runs.get(&("tput".to_string(), variant.to_string(), n)) {
            let idle: Vec<Option<f64>> = list
                .iter()
                .map(|r| num(&r.receiver, "rss_start_kb"))
                .collect();
            let hwm: Vec<Option<f64>> = list
                .iter()
                .map(|r| num(&r.receiver, "rss_hwm_kb"))
                .collect();
            let end: Vec<Option<f64>> = list
                .iter()
                .map(|r| num(&r.receiver, "rss_end_kb"))
                .collect();
            writeln!(
                out,
                "  {:<26} no-op 100k runs: idle {}  VmHWM {}  end {}",
                label(variant),
                med_runs(&idle, &mb),
                med_runs(&hwm, &mb),
                med_runs(&end, &mb)
            )?;
            memory.insert(
                format!("{variant}_noop_100k"),
                json!({"idle_kb": idle, "hwm_kb": hwm, "end_kb": end}),
            );
        }
    }
    summary.insert("memory".into(), Value::Object(memory.clone()));

    // 4. Backlog accuracy.
    writeln!(
        out,
        "\n== 4. Reported vs true backlog, 1 ms/message consumer (true = sent - handled) =="
    )?;
    let mut backlog = serde_json::Map::new();
    for variant in ["fedhub", "python", "fedhub-noop"] {
        let Some((key, list)) = runs
            .iter()
            .find(|((s, v, _), _)| s == "backlog" && v == variant)
        else {
            continue;
        };
        for r in list {
            let v = &r.receiver;
            writeln!(
                out,
                "  {:<24} run {}: sent {:>6} in {:.3} s; max reported {:>6}, max true {:>6}; max |reported - true| {:>6} overall, {:>4} once the burst was sent",
                label(variant),
                r.rep,
                num(v, "sent").map(thousands).unwrap_or_else(|| "?".into()),
                num(v, "publish_s").unwrap_or(0.0),
                num(v, "max_reported").map(thousands).unwrap_or_else(|| "?".into()),
                num(v, "max_true").map(thousands).unwrap_or_else(|| "?".into()),
                num(v, "max_abs_diff").map(thousands).unwrap_or_else(|| "?".into()),
                num(v, "max_abs_diff_after_burst").map(thousands).unwrap_or_else(|| "?".into()),
            )?;
        }
        // The series of the median run (by max diff after the burst), side by side.
        let mut sorted: Vec<&Run> = list.iter().collect();
        sorted.sort_by(|a, b| {
            num(&a.receiver, "max_abs_diff_after_burst")
                .unwrap_or(0.0)
                .total_cmp(&num(&b.receiver, "max_abs_diff_after_burst").unwrap_or(0.0))
        });
        if let Some(mid) = sorted.get(sorted.len() / 2) {
            writeln!(
                out,
                "  {} run {} series: {:>8} {:>7} {:>7} {:>9} {:>7} {:>6}",
                label(variant),
                mid.rep,
                "t (s)",
                "sent",
                "handled",
                "reported",
                "true",
                "diff"
            )?;
            if let Some(rows) = mid.receiver.get("series").and_then(Value::as_array) {
                for row in rows {
                    let c = |i: usize| row.get(i).and_then(Value::as_f64).unwrap_or(0.0);
                    writeln!(
                        out,
                        "  {:>38} {:>8.3} {:>7} {:>7} {:>9} {:>7} {:>6}",
                        "",
                        c(0),
                        c(1),
                        c(2),
                        c(3),
                        c(4),
                        c(5)
                    )?;
                }
            }
        }
        backlog.insert(
            variant.to_string(),
            json!({
                "n": key.2,
                "max_abs_diff": list.iter().map(|r| r.receiver.get("max_abs_diff")).collect::<Vec<_>>(),
                "max_abs_diff_after_burst": list.iter().map(|r| r.receiver.get("max_abs_diff_after_burst")).collect::<Vec<_>>(),
                "max_reported": list.iter().map(|r| r.receiver.get("max_reported")).collect::<Vec<_>>(),
                "max_true": list.iter().map(|r| r.receiver.get("max_true")).collect::<Vec<_>>(),
                "runs": list.iter().map(|r| &r.receiver).collect::<Vec<_>>(),
            }),
        );
    }
    summary.insert("backlog".into(), Value::Object(backlog.clone()));

    // 5 and 6: what monitoring costs.
    let (monitoring, monitoring_targets) = crate::monreport::report(dir, &runs, out)?;
    summary.insert("monitoring".into(), monitoring);

    // 7. End-to-end latency.
    let (latency, latency_targets) = crate::latreport::report(&runs, &meta, out)?;
    summary.insert("latency".into(), latency);

    // What else was running.
    let others = others_summary(dir)?;
    writeln!(
        out,
        "\n== What else was running (CPU cores busy; others = not this benchmark) =="
    )?;
    if let Some(phases) = others.get("phases").and_then(Value::as_array) {
        for p in phases {
            writeln!(
                out,
                "  {:<22} busy {:>5} cores, others {:>5} cores (max {:>5}); top others: {}",
                p["phase"].as_str().unwrap_or("?"),
                p["busy_mean"]
                    .as_f64()
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_default(),
                p["others_mean"]
                    .as_f64()
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_default(),
                p["others_max"]
                    .as_f64()
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_default(),
                p["top"].as_str().unwrap_or("-"),
            )?;
        }
    }
    summary.insert("others".into(), others);

    // Targets.
    writeln!(out, "\n== Targets: runtime core ==")?;
    let mut targets = Vec::new();
    let mut check = |name: &str, value: String, ok: Option<bool>| {
        let verdict = match ok {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "n/a",
        };
        targets.push(json!({"target": name, "value": value, "verdict": verdict}));
        (name.to_string(), value, verdict)
    };
    let mut lines = Vec::new();
    let r = ratios.get("fedhub/python@100000").and_then(Value::as_f64);
    lines.push(check(
        "fedhub >= 30x the Python hub (100k)",
        r.map(|x| format!("{x:.1}x")).unwrap_or_else(|| "-".into()),
        r.map(|x| x >= 30.0),
    ));
    for n in &sizes {
        let r = ratios
            .get(&format!("fedhub/bare@{n}"))
            .and_then(Value::as_f64);
        lines.push(check(
            &format!("fedhub >= 0.5 x bare SUB ({})", thousands(*n as f64)),
            r.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
            r.map(|x| x >= 0.5),
        ));
    }
    let fedhub_losses: Vec<f64> = loss
        .get("fedhub")
        .and_then(Value::as_array)
        .map(|rows| rows.iter().filter_map(|r| r["lost"].as_f64()).collect())
        .unwrap_or_default();
    lines.push(check(
        "loss 0 on a 100k burst",
        format!("{fedhub_losses:?}"),
        (!fedhub_losses.is_empty()).then(|| fedhub_losses.iter().all(|l| *l == 0.0)),
    ));
    let idle = memory
        .get("fedhub_slow_consumer")
        .and_then(|m| m["idle_kb"].as_array())
        .map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<_>>())
        .and_then(|v| median(&v));
    lines.push(check(
        "idle RSS <= 15 MB",
        idle.map(|x| format!("{} MB", mb(x)))
            .unwrap_or_else(|| "-".into()),
        idle.map(|x| x <= 15.0 * 1024.0),
    ));
    let returned = memory
        .get("fedhub_slow_consumer")
        .and_then(|m| m["growth_returned_pct"].as_array())
        .map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<_>>())
        .and_then(|v| median(&v));
    lines.push(check(
        "memory returned after the backlog drains (>= 90% of the growth)",
        returned
            .map(|x| format!("{x:.0}%"))
            .unwrap_or_else(|| "-".into()),
        returned.map(|x| x >= 90.0),
    ));
    let agree: Vec<f64> = backlog
        .get("fedhub")
        .and_then(|b| b["max_abs_diff_after_burst"].as_array())
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    lines.push(check(
        "reported backlog == true backlog once sent (|diff| <= 1)",
        format!("max |diff| per run {agree:?}"),
        (!agree.is_empty()).then(|| agree.iter().all(|d| *d <= 1.0)),
    ));
    for (name, value, verdict) in lines {
        writeln!(out, "  {verdict:<7} {name:<66} {value}")?;
    }
    if !monitoring_targets.is_empty() {
        writeln!(out, "\n== Targets: monitoring ==")?;
        for (name, value, verdict) in monitoring_targets {
            writeln!(out, "  {verdict:<7} {name:<66} {value}")?;
            targets.push(json!({"target": name, "value": value, "verdict": verdict}));
        }
    }
    if !latency_targets.is_empty() {
        writeln!(out, "\n== Targets: latency ==")?;
        for (name, value, verdict) in latency_targets {
            writeln!(out, "  {verdict:<7} {name:<66} {value}")?;
            targets.push(json!({"target": name, "value": value, "verdict": verdict}));
        }
    }
    summary.insert("targets".into(), Value::Array(targets));
    Ok(Value::Object(summary))
}

/// One `sysmon.csv` line: time, busy cores, others' cores, others' top list.
type SysSample = (f64, f64, f64, String);

fn others_summary(dir: &Path) -> anyhow::Result<Value> {
    let Ok(phases) = std::fs::read_to_string(dir.join("phases.tsv")) else {
        return Ok(json!({}));
    };
    let samples: Vec<SysSample> = std::fs::read_to_string(dir.join("sysmon.csv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.splitn(4, ',');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
                it.next().unwrap_or("").to_string(),
            ))
        })
        .collect();
    let mut out = Vec::new();
    for line in phases.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [name, start, end] = f[..] else { continue };
        let (Ok(start), Ok(end)) = (start.parse::<f64>(), end.parse::<f64>()) else {
            continue;
        };
        let inside: Vec<&SysSample> = samples
            .iter()
            .filter(|s| s.0 >= start && s.0 <= end + 1.0)
            .collect();
        if inside.is_empty() {
            continue;
        }
        let mean = |f: &dyn Fn(&SysSample) -> f64| {
            inside.iter().map(|s| f(s)).sum::<f64>() / inside.len() as f64
        };
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        for s in &inside {
            for item in s.3.split(';').filter(|x| !x.is_empty()) {
                if let Some((n, c)) = item.split_once('=') {
                    *by_name.entry(n.to_string()).or_insert(0.0) +=
                        c.parse::<f64>().unwrap_or(0.0) / inside.len() as f64;
                }
            }
        }
        let mut top: Vec<(String, f64)> = by_name.into_iter().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> = top
            .iter()
            .take(4)
            .filter(|(_, c)| *c >= 0.01)
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect();
        out.push(json!({
            "phase": name,
            "seconds": round(end - start, 1),
            "busy_mean": round(mean(&|s| s.1), 3),
            "others_mean": round(mean(&|s| s.2), 3),
            "others_max": round(inside.iter().map(|s| s.2).fold(0.0, f64::max), 3),
            "top": if top.is_empty() { "none".to_string() } else { top.join(", ") },
        }));
    }
    Ok(json!({"phases": out}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_numbers() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
