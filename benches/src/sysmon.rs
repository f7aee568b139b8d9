//! What else is running: once a second, the machine's busy CPU and the CPU used
//! by processes that are not part of the benchmark (not descendants of the
//! driver, and not the Python peer hub), by command name. The figures of a
//! 2-core machine shared with other work only mean something next to this.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::{now_epoch, probe};

struct ProcInfo {
    ppid: u32,
    name: String,
    cpu_s: f64,
    ours_hint: bool,
}

fn busy_and_total() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    Some((total - idle, total))
}

fn processes(marker: &str) -> HashMap<u32, ProcInfo> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ppid = fields.get(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        let cpu_s = probe::cpu_seconds(pid).unwrap_or(0.0);
        let ours_hint = !marker.is_empty()
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false);
        out.insert(
            pid,
            ProcInfo {
                ppid,
                name: stat[open + 1..close].to_string(),
                cpu_s,
                ours_hint,
            },
        );
    }
    out
}

fn is_ours(pid: u32, root: u32, procs: &HashMap<u32, ProcInfo>) -> bool {
    let mut at = pid;
    for _ in 0..64 {
        if at == root {
            return true;
        }
        match procs.get(&at) {
            Some(p) if p.ours_hint => return true,
            Some(p) if p.ppid != 0 && p.ppid != at => at = p.ppid,
            _ => return false,
        }
    }
    false
}

/// Samples every `period` until `root` exits, appending CSV lines to `out`:
/// `t,busy_cores,others_cores,others` where `others` lists the busiest
/// non-benchmark commands as `name=cores` separated by `;`. Processes that are
/// descendants of `root`, or whose command line contains `marker`, are ours.
pub fn run(root: u32, marker: &str, period: Duration, out: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    writeln!(file, "t,busy_cores,others_cores,others")?;
    let ticks = {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    };
    let mut before = processes(marker);
    let mut stat_before = busy_and_total();
    let mut at = Instant::now();
    while probe::alive(root) {
        std::thread::sleep(period);
        let now = processes(marker);
        let stat_now = busy_and_total();
        let elapsed = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        let busy = match (stat_before, stat_now) {
            (Some((b0, _)), Some((b1, _))) => (b1 - b0) / ticks / elapsed,
            _ => 0.0,
        };
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        for (pid, p) in &now {
            if is_ours(*pid, root, &now) {
                continue;
            }
            let was = before.get(pid).map(|b| b.cpu_s).unwrap_or(p.cpu_s);
            let used = (p.cpu_s - was).max(0.0);
            if used > 0.0 {
                *by_name.entry(p.name.clone()).or_insert(0.0) += used / elapsed;
            }
        }
        let others: f64 = by_name.values().sum();
        let mut top: Vec<(String, f64)> = by_name.into_iter().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let list: Vec<String> = top
            .iter()
            .take(5)
            .filter(|(_, c)| *c >= 0.01)
            .map(|(n, c)| format!("{}={:.2}", n.replace([',', ';', '='], "_"), c))
            .collect();
        writeln!(
            file,
            "{:.3},{:.3},{:.3},{}",
            now_epoch(),
            busy,
            others,
            list.join(";")
        )?;
        file.flush()?;
        before = now;
        stat_before = stat_now;
    }
    Ok(())
}
