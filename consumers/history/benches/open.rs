//! Opening a large SQLite history store: the time `SqliteStore::open` takes
//! (schema check, migrations, and the in-memory index) and the process's
//! memory once it is open, at 20M messages (the size the original
//! datagrepper figures were measured at). Each run opens twice: cold, with no
//! index snapshot beside the file (the index is rebuilt from the database,
//! and the snapshot written, as on the first open after an upgrade or after
//! the snapshot was lost), then warm, from that snapshot (every later open).
//!
//! Run: `cargo bench -p fedhub-history --bench open`
//!
//! Environment: `OPEN_BENCH_MESSAGES` (default 20000000), `OPEN_BENCH_RUNS`
//! (default 3), `OPEN_BENCH_DIR` (where the database goes; default a temporary
//! directory; a file there already holding that many messages is reused),
//! `OPEN_BENCH_KEEP=1` (keep the file at the end; by default it is deleted).
//!
//! The file is built with the store's batched insert (`insert_batch`, batches
//! of the writer's default size) from the query benchmark's corpus
//! (`fedhub_tools::demo::Generator` seed 42, one message every 4 seconds).
//! Before building, the free space of the directory is checked against 600 bytes
//! per message. Each open runs in a fresh child process (this binary again), so
//! its memory is that of the open alone: `VmRSS` after opening and `VmHWM`
//! (the peak while opening), from `/proc/self/status`.

mod common;

use common::{bench_dir, command, env_or, load_average};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use fedhub::Envelope;
use fedhub_history::{Filter, IndexOrigin, NewMessage, SqliteStore, Store, WriterOptions};
use fedhub_tools::demo::Generator;

const SPACING_SECS: u64 = 4;
const START_TS: u64 = 1_700_000_000;
/// Set in the child process: the database to open.
const CHILD: &str = "OPEN_BENCH_CHILD";

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The child: opens the store, prints one line of `key=value`.
fn child(path: &str) {
    let began = Instant::now();
    let store = SqliteStore::open(path).expect("open");
    let open_ms = began.elapsed().as_secs_f64() * 1000.0;
    let rss = status_kib("VmRSS");
    let hwm = status_kib("VmHWM");
    let anon = status_kib("RssAnon");
    let file = status_kib("RssFile");
    let messages = store.message_count().expect("count");
    // One query, so the store is known to answer once open.
    let began = Instant::now();
    let buildsys = store
        .count(&Filter::new().category("buildsys"))
        .expect("count");
    let query_ms = began.elapsed().as_secs_f64() * 1000.0;
    let origin = match store.index_origin() {
        IndexOrigin::Rebuilt => "rebuilt".to_string(),
        IndexOrigin::Snapshot { caught_up } => format!("snapshot+{caught_up}"),
    };
    println!(
        "open_ms={open_ms:.0} rss_kib={rss} hwm_kib={hwm} anon_kib={anon} file_kib={file} messages={messages} buildsys={buildsys} query_ms={query_ms:.2} origin={origin}"
    );
}

/// Free bytes in the file system holding `dir` (`df`).
fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

fn file_bytes(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// Builds the database with `n` messages, generating and extracting on one
/// thread while the store inserts on this one.
fn build(path: &Path, n: usize) {
    let store = Arc::new(SqliteStore::open(path).expect("open store"));
    let batch = WriterOptions::default().batch_messages;
    let (send, receive) = std::sync::mpsc::sync_channel::<Vec<NewMessage>>(4);
    let producer = std::thread::spawn(move || {
        let mut generator = Generator::new(42, "org.fedoraproject", "prod");
        let mut done = 0usize;
        while done < n {
            let size = batch.min(n - done);
            let messages: Vec<NewMessage> = (0..size)
                .map(|k| {
                    let (topic, body) =
                        generator.next_frames(START_TS + ((done + k) as u64) * SPACING_SECS);
                    let envelope = Envelope::decode(topic.as_bytes(), body.as_bytes(), 1 << 20)
                        .expect("generated messages decode");
                    NewMessage::from_envelope(&envelope)
                })
                .collect();
            done += size;
            if send.send(messages).is_err() {
                return;
            }
        }
    });
    let began = Instant::now();
    let mut stored = 0usize;
    for messages in receive {
        stored += store.insert_batch(&messages).expect("insert").stored as usize;
        if stored % 1_000_000 < batch {
            eprint!(
                "\r  built {stored}/{n} ({:.0} msg/s, {:.1} GB)",
                stored as f64 / began.elapsed().as_secs_f64(),
                file_bytes(path) as f64 / 1e9
            );
        }
    }
    eprintln!();
    producer.join().expect("producer");
    assert_eq!(stored, n, "every message stored");
    println!(
        "built {n} messages in {:.0} s ({:.0} msg/s, generation and extraction on another thread); file {:.2} GB",
        began.elapsed().as_secs_f64(),
        n as f64 / began.elapsed().as_secs_f64(),
        file_bytes(path) as f64 / 1e9
    );
}

struct Opened {
    origin: String,
    open_ms: f64,
    rss_mib: f64,
    hwm_mib: f64,
    anon_mib: f64,
    file_mib: f64,
}

fn open_in_child(path: &Path, n: usize) -> Opened {
    let out = Command::new(std::env::current_exe().expect("this benchmark"))
        .env(CHILD, path)
        .output()
        .expect("child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| -> f64 {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    assert_eq!(field("messages") as usize, n, "the child saw every message");
    let origin = text
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("origin="))
        .unwrap_or("?")
        .to_string();
    Opened {
        origin,
        open_ms: field("open_ms"),
        rss_mib: field("rss_kib") / 1024.0,
        hwm_mib: field("hwm_kib") / 1024.0,
        anon_mib: field("anon_kib") / 1024.0,
        file_mib: field("file_kib") / 1024.0,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if let Ok(path) = std::env::var(CHILD) {
        child(&path);
        return;
    }
    let n: usize = env_or("OPEN_BENCH_MESSAGES", 20_000_000);
    let runs: usize = env_or("OPEN_BENCH_RUNS", 3).max(1);
    let keep = std::env::var("OPEN_BENCH_KEEP").is_ok_and(|v| v == "1");
    let (dir, _temp) = bench_dir("OPEN_BENCH_DIR");
    let path = dir.join(format!("history-{n}.sqlite"));
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    println!(
        "fedhub-history: opening a SQLite store of {n} messages ({cores} cores, shared; load before: {}; {})",
        load_average(),
        path.display()
    );
    // Counted without opening the store (which would rebuild its index).
    let existing = std::fs::metadata(&path).is_ok()
        && rusqlite::Connection::open(&path)
            .and_then(|c| c.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|c| c as usize == n);
    if existing {
        println!(
            "reusing {} ({:.2} GB)",
            path.display(),
            file_bytes(&path) as f64 / 1e9
        );
    } else {
        let free = free_bytes(&dir);
        let needed = n as u64 * 600;
        assert!(
            free > needed + (4 << 30),
            "{} has {:.1} GB free; {n} messages need about {:.1} GB (and 4 GB are left to others)",
            dir.display(),
            free as f64 / 1e9,
            needed as f64 / 1e9
        );
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
        build(&path, n);
    }
    let snapshot = {
        let mut name = path.as_os_str().to_owned();
        name.push(".index");
        std::path::PathBuf::from(name)
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for k in 0..runs {
        let _ = std::fs::remove_file(&snapshot);
        for (label, results) in [("cold", &mut cold), ("warm", &mut warm)] {
            let load = load_average();
            let opened = open_in_child(&path, n);
            println!(
                "  run {} {label} (index {}): open {:>7.0} ms | RSS after open {:>6.0} MiB (anonymous {:.0}, file {:.0}) | peak RSS while opening {:>6.0} MiB | load {load}",
                k + 1,
                opened.origin,
                opened.open_ms,
                opened.rss_mib,
                opened.anon_mib,
                opened.file_mib,
                opened.hwm_mib
            );
            results.push(opened);
        }
    }
    let snapshot_bytes = std::fs::metadata(&snapshot).map_or(0, |m| m.len());
    for (label, results) in [
        ("cold (rebuild, snapshot written)", &cold),
        ("warm (from the snapshot)", &warm),
    ] {
        println!(
            "median of {runs}, {label}: open {:.0} ms (target 10000) | RSS after open {:.0} MiB (target 1024) | peak {:.0} MiB | {n} messages, {:.2} GB, snapshot {:.2} GB",
            median(results.iter().map(|r| r.open_ms).collect()),
            median(results.iter().map(|r| r.rss_mib).collect()),
            median(results.iter().map(|r| r.hwm_mib).collect()),
            file_bytes(&path) as f64 / 1e9,
            snapshot_bytes as f64 / 1e9
        );
    }
    println!(
        "load after: {}; command: {}",
        load_average(),
        command("OPEN_BENCH_", "open")
    );
    if !keep {
        for s in ["", "-wal", "-shm", ".index"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
    }
}
