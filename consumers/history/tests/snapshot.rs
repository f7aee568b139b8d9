//! The SQLite store's index snapshot (`<file>.index`): written when the store
//! closes, read on the next open instead of rebuilding the index, caught up
//! with rows stored after it, and ignored (the index rebuilt) when it does
//! not match the database or is damaged. Whatever the index came from, every
//! query answers as SQL alone does, and duplicates are still found.

use std::path::Path;

use fedhub::Envelope;
use fedhub_history::{Filter, IndexOrigin, NewMessage, Order, SqliteStore, Store};
use serde_json::json;

const USERS: [&str; 4] = ["ralph", "pingou", "kevin", "adamw"];
const PACKAGES: [&str; 3] = ["kernel", "bash", "firefox"];
const TOPICS: [&str; 3] = [
    "org.fedoraproject.prod.git.receive",
    "org.fedoraproject.prod.buildsys.build.state.change",
    "org.fedoraproject.prod.bodhi.update.comment",
];

fn message(k: usize, tag: &str) -> NewMessage {
    let topic = TOPICS[k % TOPICS.len()];
    let user = USERS[k % USERS.len()];
    let package = PACKAGES[k % PACKAGES.len()];
    let msg = match k % 3 {
        0 => json!({"commit": {"username": user, "repo": package, "namespace": "rpms"}}),
        1 => json!({"owner": user, "name": package, "instance": "primary"}),
        _ => json!({"comment": {"user": {"name": user}, "update": {"title": package}}}),
    };
    let body = json!({
        "topic": topic,
        "msg_id": format!("2025-{tag}-{k:08}"),
        // Out of order now and then, as imports store them.
        "timestamp": 1_700_000_000.0 + (k as f64) * 30.0 - if k.is_multiple_of(7) { 5000.0 } else { 0.0 },
        "i": k,
        "msg": msg,
    });
    NewMessage::from_envelope(&Envelope::from_value(body).unwrap())
}

fn store_range(store: &SqliteStore, range: std::ops::Range<usize>, tag: &str) {
    let batch: Vec<NewMessage> = range.map(|k| message(k, tag)).collect();
    for chunk in batch.chunks(500) {
        store.insert_batch(chunk).unwrap();
    }
}

fn filters() -> Vec<Filter> {
    let mut all = vec![
        Filter::new(),
        Filter::new().user("ralph"),
        Filter::new().package("kernel").order(Order::Asc),
        Filter::new().category("buildsys").not_user("kevin"),
        Filter::new()
            .topic(TOPICS[0])
            .user("pingou")
            .not_package("bash"),
        Filter::new().between(1_700_003_000.0, 1_700_020_000.0),
        Filter::new().user("adamw").page(3, 7),
    ];
    for f in &mut all {
        f.rows_per_page = f.rows_per_page.min(50);
    }
    all
}

/// Every filter answers from the index exactly as from SQL alone.
fn assert_answers_as_sql(store: &SqliteStore, context: &str) {
    for filter in filters() {
        let fast = store.grep(&filter).unwrap();
        let slow = store.grep_sql(&filter).unwrap();
        let ids = |p: &fedhub_history::Page| -> Vec<String> {
            p.messages.iter().map(|m| m.msg_id.clone()).collect()
        };
        assert_eq!(fast.total, slow.total, "{context}: total of {filter:?}");
        assert_eq!(ids(&fast), ids(&slow), "{context}: page of {filter:?}");
        assert_eq!(store.count(&filter).unwrap(), slow.total, "{context}");
    }
}

fn snapshot_of(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".index");
    name.into()
}

#[test]
fn a_closed_store_reopens_from_its_snapshot_and_answers_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.index_origin(), IndexOrigin::Rebuilt, "a new file");
    store_range(&store, 0..3000, "a");
    assert_answers_as_sql(&store, "before closing");
    drop(store);
    assert!(snapshot_of(&db).is_file(), "written on close");

    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.index_origin(), IndexOrigin::Snapshot { caught_up: 0 });
    assert_eq!(store.message_count().unwrap(), 3000);
    assert_answers_as_sql(&store, "reopened from the snapshot");
    // Duplicates are still found through the snapshot's msg_id table.
    let again: Vec<NewMessage> = (0..3000).step_by(97).map(|k| message(k, "a")).collect();
    let report = store.insert_batch(&again).unwrap();
    assert_eq!((report.stored, report.duplicates), (0, again.len() as u64));
    store_range(&store, 3000..3500, "a");
    assert_answers_as_sql(&store, "stored after reopening");
}

#[test]
fn rows_stored_after_the_snapshot_are_caught_up_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let store = SqliteStore::open(&db).unwrap();
    store_range(&store, 0..2000, "b");
    drop(store);
    let old_snapshot = std::fs::read(snapshot_of(&db)).unwrap();

    let store = SqliteStore::open(&db).unwrap();
    store_range(&store, 2000..2600, "b");
    drop(store);
    // As after a crash: the snapshot on disk is older than the database.
    std::fs::write(snapshot_of(&db), &old_snapshot).unwrap();

    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(
        store.index_origin(),
        IndexOrigin::Snapshot { caught_up: 600 }
    );
    assert_eq!(store.message_count().unwrap(), 2600);
    assert_answers_as_sql(&store, "caught up");
    let report = store.insert_batch(&[message(2500, "b")]).unwrap();
    assert_eq!(report.duplicates, 1, "a caught-up row is known");
}

#[test]
fn a_snapshot_of_another_database_or_a_damaged_one_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let store = SqliteStore::open(&db).unwrap();
    store_range(&store, 0..1500, "c");
    drop(store);
    let snapshot = std::fs::read(snapshot_of(&db)).unwrap();

    // Another database with as many rows, under the first one's snapshot.
    let other = dir.path().join("other.sqlite");
    let store = SqliteStore::open(&other).unwrap();
    store_range(&store, 0..1500, "d");
    drop(store);
    std::fs::write(snapshot_of(&other), &snapshot).unwrap();
    let store = SqliteStore::open(&other).unwrap();
    assert_eq!(store.index_origin(), IndexOrigin::Rebuilt);
    assert_answers_as_sql(&store, "another database's snapshot");
    let report = store.insert_batch(&[message(10, "d")]).unwrap();
    assert_eq!(report.duplicates, 1);
    drop(store);

    // Damaged: cut short, bytes flipped, not a snapshot at all.
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("cut short", snapshot[..snapshot.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"not an index at all".to_vec()),
        ("wrong end marker", {
            let mut bytes = snapshot.clone();
            let n = bytes.len();
            bytes[n - 1] ^= 0xff;
            bytes
        }),
        ("unsorted msg_id table", {
            let mut bytes = snapshot.clone();
            // Header: magic 8, format 4, mark 16, usable 8, then the
            // timestamps (count + 8 each), then the table's count and hashes.
            let ts = u64::from_le_bytes(bytes[36..44].try_into().unwrap()) as usize;
            let hashes = 44 + ts * 8 + 8;
            bytes[hashes..hashes + 8].copy_from_slice(&u64::MAX.to_le_bytes());
            bytes
        }),
    ];
    for (what, bytes) in damages {
        std::fs::write(snapshot_of(&db), &bytes).unwrap();
        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.index_origin(), IndexOrigin::Rebuilt, "{what}");
        assert_eq!(store.message_count().unwrap(), 1500, "{what}");
        assert_answers_as_sql(&store, what);
    }
}

#[test]
fn the_writer_saves_snapshots_as_it_goes_so_a_crash_costs_little() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let options = fedhub_history::SqliteOptions {
        snapshot_every_rows: 1000,
        ..fedhub_history::SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&db, options.clone()).unwrap();
    store_range(&store, 0..3400, "e");
    // A crash: the store is never closed, so no snapshot is written on close.
    std::mem::forget(store);

    let store = SqliteStore::open_with(&db, options).unwrap();
    match store.index_origin() {
        IndexOrigin::Snapshot { caught_up } => assert!(
            caught_up < 1000,
            "at most the rows since the last periodic snapshot: {caught_up}"
        ),
        other => panic!("expected the periodic snapshot, got {other:?}"),
    }
    assert_eq!(store.message_count().unwrap(), 3400);
    assert_answers_as_sql(&store, "after a crash");
}
