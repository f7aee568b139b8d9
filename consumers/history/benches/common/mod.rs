//! What the history benchmarks share: settings from the environment, where the
//! databases go, CPU time from /proc.

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
