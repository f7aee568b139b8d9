//! What both awarder benchmarks share: the generated rules, the history store
//! filled with demo traffic, settings from the environment, the load average.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fedhub_history::{NewMessage, SqliteStore, Store};
use fedhub_tools::demo::Generator;
use serde_json::Value;

/// A setting from the environment, or its default.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time this thread has used.
pub fn thread_cpu() -> std::time::Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// `/proc/loadavg`, trimmed.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The directory the databases go to: `BADGES_BENCH_DIR`, or a temporary
/// directory removed at the end (the guard).
pub fn bench_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var("BADGES_BENCH_DIR") {
        Ok(d) => {
            std::fs::create_dir_all(&d).unwrap();
            (PathBuf::from(d), None)
        }
        Err(_) => {
            let t = tempfile::tempdir().unwrap();
            (t.path().to_path_buf(), Some(t))
        }
    }
}

/// The demo traffic's topics (after `org.fedoraproject.prod.`), with the
/// template naming the person each one is about and its category.
pub const KINDS: [(&str, &str, &str); 8] = [
    ("buildsys.build.state.change", "%(msg.owner)s", "buildsys"),
    ("git.receive", "%(msg.commit.username)s", "git"),
    ("bodhi.update.request.testing", "%(msg.agent)s", "bodhi"),
    ("bodhi.update.comment", "%(msg.agent)s", "bodhi"),
    (
        "fedbadges.badge.award",
        "%(msg.user.username)s",
        "fedbadges",
    ),
    ("planet.post.new", "%(msg.username)s", "planet"),
    ("fas.user.update", "%(msg.user)s", "fas"),
    ("meetbot.meeting.complete", "%(msg.owner)s", "meetbot"),
];

/// What the generated rules are made of.
#[derive(Debug, Default, Clone, Copy)]
pub struct RuleMix {
    /// Rules triggered by a topic alone.
    pub topic: usize,
    /// Rules triggered by a category (`category: x` or `category: {any: [...]}`).
    pub category: usize,
    /// Rules triggered by an expression (beside a topic, as fedbadges' rules
    /// scope their lambdas, or alone).
    pub expression: usize,
    /// Of those, expressions alone (evaluated on every message).
    pub expression_alone: usize,
    /// Rules whose criteria are a count reaching a threshold above 1.
    pub count_threshold: usize,
    /// Rules whose criteria are a first occurrence (count at least 1).
    pub first_time: usize,
}

/// Writes `n` rules into `dir`: a third each triggered by a topic, by a
/// category and by an expression (a quarter of the expressions alone, so
/// they run on every message; the others beside a topic, as fedbadges' rules
/// scope their lambdas); half of them with a count threshold over the history
/// store (10 to 209 messages of that topic by that person), half a first
/// occurrence (at least 1).
pub fn write_rules(dir: &Path, n: usize) -> RuleMix {
    let mut mix = RuleMix::default();
    for k in 0..n {
        let s = k % KINDS.len();
        let (suffix, person, category) = KINDS[s];
        let trigger = match k % 3 {
            0 => {
                mix.topic += 1;
                format!("  topic: {suffix}")
            }
            1 => {
                mix.category += 1;
                if k % 2 == 0 {
                    format!("  all:\n  - category: {category}\n  - topic: {suffix}")
                } else {
                    // The README's form (upstream never matched it).
                    let other = KINDS[(s + 3) % KINDS.len()].2;
                    format!(
                        "  all:\n  - category: {{any: [{category}, {other}]}}\n  - topic: {suffix}"
                    )
                }
            }
            _ => {
                mix.expression += 1;
                if k % 12 == 2 {
                    mix.expression_alone += 1;
                    format!(
                        "  expression: 'msg.topic.ends_with(\"{suffix}\") && msg.i % {} != 7'",
                        2 + k % 5
                    )
                } else {
                    format!(
                        "  all:\n  - topic: {suffix}\n  - expression: 'msg.topic.len() > 10 && msg.i % {} != 7'",
                        2 + k % 5
                    )
                }
            }
        };
        let threshold = if k % 2 == 0 {
            mix.count_threshold += 1;
            10 + k
        } else {
            mix.first_time += 1;
            1
        };
        let text = format!(
            "name: Bench Badge {k}\ndescription: d\ncreator: bench\ndiscussion: https://example.org/{k}\nimage_url: https://example.org/{k}.png\nissuer_id: bench\ntrigger:\n{trigger}\ncriteria:\n  datanommer:\n    filter:\n      topics: [\"%(topic)s\"]\n      users: [\"{person}\"]\n    operation: count\n    condition:\n      greater than or equal to: {threshold}\nrecipient: \"{person}\"\n"
        );
        std::fs::write(dir.join(format!("rule-{k:03}.yml")), text).unwrap();
    }
    mix
}

/// The person a message of kind `kind` (a position in [`KINDS`]) is about,
/// as the rules' recipient template finds them (lowercased).
pub fn person_of(kind: usize, body: &Value) -> Option<String> {
    let path = KINDS[kind]
        .1
        .trim_start_matches("%(")
        .trim_end_matches(")s");
    let mut v = body;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    v.as_str().map(str::to_lowercase)
}

/// Messages per (kind, person) in a stretch of traffic.
pub type Tally = Vec<HashMap<String, u64>>;

fn count_into(tally: &mut Tally, body: &Value) {
    let topic = body["topic"].as_str().unwrap_or_default();
    if let Some(kind) = KINDS.iter().position(|k| topic.ends_with(k.0)) {
        if let Some(person) = person_of(kind, body) {
            *tally[kind].entry(person).or_default() += 1;
        }
    }
}

/// Stores `n` demo messages (one every 10 ms from `t0`) in batches of 10k;
/// the envelopes are kept when `keep`; `tally` counts them per kind and person.
pub fn fill(
    store: &dyn Store,
    generator: &mut Generator,
    n: usize,
    t0: u64,
    keep: bool,
    tally: &mut Tally,
) -> Vec<Value> {
    let mut kept = Vec::new();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let envelope = Value::Object(generator.next_envelope(t0 + i as u64 / 100));
        count_into(tally, &envelope);
        let e = fedhub::Envelope::from_value(envelope.clone()).unwrap();
        batch.push(NewMessage::from_envelope(&e));
        if keep {
            kept.push(envelope);
        }
        if batch.len() == 10_000 {
            store.insert_batch(&batch).unwrap();
            batch.clear();
        }
    }
    store.insert_batch(&batch).unwrap();
    kept
}

/// The history store at `dir/history-<n>.sqlite`, holding `n` demo messages of
/// the last 30 days (made on first use; kept when `BADGES_BENCH_DIR` is set,
/// so later runs reuse it), and its messages per kind and person (kept beside
/// it as JSON). Returns the path and the tally.
pub fn history_file(dir: &Path, n: usize) -> (PathBuf, Tally) {
    let path = dir.join(format!("history-{n}.sqlite"));
    let tally_path = dir.join(format!("history-{n}.tally.json"));
    let mut tally: Tally = vec![HashMap::new(); KINDS.len()];
    if path.exists() && tally_path.exists() {
        tally = serde_json::from_slice(&std::fs::read(&tally_path).unwrap()).unwrap();
    } else {
        let _ = std::fs::remove_file(&path);
        let partial = dir.join(format!("history-{n}.partial.sqlite"));
        for suffix in ["", "-wal", "-shm", ".index"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", partial.display()));
        }
        let began = Instant::now();
        {
            let store = SqliteStore::open(&partial).unwrap();
            let mut old = Generator::new(1, "org.fedoraproject", "prod");
            fill(
                &store,
                &mut old,
                n,
                now_secs() - 30 * 86_400,
                false,
                &mut tally,
            );
            store.save_index_snapshot().unwrap();
        }
        std::fs::write(&tally_path, serde_json::to_vec(&tally).unwrap()).unwrap();
        for suffix in ["", "-wal", "-shm", ".index"] {
            let from = format!("{}{suffix}", partial.display());
            if Path::new(&from).exists() {
                std::fs::rename(&from, format!("{}{suffix}", path.display())).unwrap();
            }
        }
        eprintln!(
            "history: {n} messages stored in {:.1} s",
            began.elapsed().as_secs_f64()
        );
    }
    (path, tally)
}

/// The awards the history already earned, as if the awarder had run over it:
/// for each generated rule (see [`write_rules`]), everyone with at least its
/// threshold of messages of its kind holds its badge (the `msg.i % n` part of
/// the expression triggers is not modelled). Inserted in one transaction,
/// then everyone ranked. Returns how many awards.
pub fn preaward(tahrir: &fedhub_badges::Tahrir, rules_n: usize, tally: &Tally) -> usize {
    use fedhub_storage::sql::{execute, query, Param as P};
    let began = Instant::now();
    let mut people: Vec<&String> = tally.iter().flat_map(|t| t.keys()).collect();
    people.sort();
    people.dedup();
    let awards = tahrir
        .database()
        .transaction(|tx| {
            let err = |e| fedhub_storage::StorageError::database(tahrir.database().url(), "preaward", e);
            let mut ids = HashMap::new();
            for person in &people {
                execute(
                    tx,
                    "INSERT INTO persons (email, nickname, created_on, opt_out) VALUES ($1, $2, '2026-01-01 00:00:00', 0) ON CONFLICT DO NOTHING",
                    &[P::Text(&format!("{person}@fedoraproject.org")), P::Text(person)],
                )
                .map_err(err)?;
                let id = query(
                    tx,
                    "SELECT id FROM persons WHERE nickname = $1",
                    &[P::Text(person)],
                )
                .map_err(err)?[0][0]
                    .as_i64()
                    .unwrap();
                ids.insert(person.as_str(), id);
            }
            let mut awards = 0;
            for k in 0..rules_n {
                let kind = k % KINDS.len();
                let threshold = if k % 2 == 0 { 10 + k as u64 } else { 1 };
                let badge = format!("bench-badge-{k}");
                for (person, n) in &tally[kind] {
                    if *n < threshold {
                        continue;
                    }
                    let id = ids[person.as_str()];
                    awards += execute(
                        tx,
                        "INSERT INTO assertions (id, badge_id, person_id, salt, issued_on, issued_for, recipient) VALUES ($1, $2, $3, 's', '2026-01-01 00:00:00', 'history', 'r') ON CONFLICT DO NOTHING",
                        &[P::Text(&format!("{badge} -> {id}")), P::Text(&badge), P::Int(id)],
                    )
                    .map_err(err)? as usize;
                }
            }
            Ok(awards)
        })
        .unwrap();
    tahrir.rank_everyone().unwrap();
    eprintln!(
        "badges: {awards} awards the history earned, stored and ranked in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    awards
}

/// Copies the history file (and its index snapshot) to `to`, so a run that
/// adds messages leaves the original at its size.
pub fn copy_history(from: &Path, to: &Path) {
    let began = Instant::now();
    {
        // Checkpoint, so the copy is the whole database.
        let store = SqliteStore::open(from).unwrap();
        drop(store);
    }
    for suffix in ["", "-wal", ".index"] {
        let f = format!("{}{suffix}", from.display());
        if Path::new(&f).exists() {
            std::fs::copy(&f, format!("{}{suffix}", to.display())).unwrap();
        }
    }
    eprintln!(
        "history: copied for this run in {:.1} s",
        began.elapsed().as_secs_f64()
    );
}
