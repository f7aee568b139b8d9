//! What the history benchmarks share: settings from the environment, where the
//! databases go, CPU time from /proc.

#![allow(dead_code)] // not every benchmark uses every helper

use std::path::PathBuf;

/// `key` from the environment, parsed, else `default`.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The directory named by `key` (created), else a temporary one, kept alive by
/// the returned guard.
pub fn bench_dir(key: &str) -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var(key) {
        Ok(d) => {
            std::fs::create_dir_all(&d).expect("bench dir");
            (PathBuf::from(d), None)
        }
        Err(_) => {
            let temp = tempfile::tempdir().expect("temp dir");
            (temp.path().to_path_buf(), Some(temp))
        }
    }
}

/// CPU seconds (user + system) used so far, from `/proc/<of>/stat`
/// (`self` for the process, `thread-self` for the calling thread).
pub fn cpu_secs(of: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{of}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = text.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// The load average (1, 5 and 15 minutes), as `/proc/loadavg` gives it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The command that reproduces this run of `bench`: the settings it read from
/// environment variables starting with `prefix` (passwords masked), then cargo.
pub fn command(prefix: &str, bench: &str) -> String {
    let mut settings: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| format!("{k}={}", fedhub_storage::mask_password(&v)))
        .collect();
    settings.sort();
    settings.push(format!("cargo bench -p fedhub-history --bench {bench}"));
    settings.join(" ")
}
