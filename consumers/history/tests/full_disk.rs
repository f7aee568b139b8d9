//! A database that cannot grow (SQLite's "database or disk is full", the same
//! error a full disk gives): the writer counts and reports the failure, keeps
//! every message it was given, and stores them all once space is available.

use std::sync::Arc;
use std::time::Duration;

use fedhub::Envelope;
use fedhub_history::{
    BatchWriter, Filter, NewMessage, SqliteOptions, SqliteStore, Store, WriterOptions, WriterState,
};
use fedhub_testkit::wait_until;
use serde_json::json;

fn message(k: usize) -> NewMessage {
    let body = json!({
        "topic": "org.fedoraproject.prod.git.receive",
        "msg_id": format!("2023-00000000-0000-4000-8000-{k:012}"),
        "timestamp": 1_700_000_000.0 + k as f64,
        "i": k,
        "msg": {"commit": {"username": "ralph", "repo": "kernel", "namespace": "rpms",
                           "summary": "x".repeat(8000)}},
    });
    NewMessage::from_envelope(&Envelope::from_value(body).unwrap())
}

#[test]
fn a_full_database_is_reported_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open_with(
            dir.path().join("history.sqlite"),
            SqliteOptions {
                max_database_bytes: Some(256 * 1024),
                ..SqliteOptions::default()
            },
        )
        .unwrap(),
    );
    let state = WriterState::new();
    let writer = Arc::new(
        BatchWriter::spawn(
            store.clone() as Arc<dyn Store>,
            WriterOptions {
                batch_messages: 10,
                batch_latency: Duration::from_millis(10),
                queue_messages: 20,
                retry_max: Duration::from_millis(100),
                ..WriterOptions::default()
            },
            state.clone(),
        )
        .unwrap(),
    );
    let total = 100;
    let submitter = {
        let writer = writer.clone();
        std::thread::spawn(move || {
            for k in 0..total {
                writer.submit(message(k)).unwrap();
            }
        })
    };

    assert!(wait_until(Duration::from_secs(20), || state.is_failing()));
    let health = state.health();
    assert!(!health.healthy);
    assert!(health.write_errors >= 1, "{health:?}");
    let error = health.last_error.clone().unwrap();
    assert!(error.contains("full"), "{error}");
    let stored = store.message_count().unwrap();
    assert!(stored < total as u64, "{stored}");
    assert_eq!(health.stored, stored);
    // What is not stored is still queued (or waiting to be queued), not dropped.
    assert_eq!(health.rejected, 0);
    assert!(health.queued > 0);

    store.set_max_database_bytes(None).unwrap();
    submitter.join().unwrap();
    writer.flush(Duration::from_secs(20)).unwrap();
    let health = state.health();
    assert!(health.healthy, "{health:?}");
    assert_eq!((health.stored, health.queued), (total as u64, 0));
    assert_eq!(store.message_count().unwrap(), total as u64);
    assert_eq!(
        store
            .count(&Filter::new().user("ralph").package("kernel"))
            .unwrap(),
        total as u64
    );
    for k in 0..total {
        let id = format!("2023-00000000-0000-4000-8000-{k:012}");
        assert!(store.get(&id).unwrap().is_some(), "{id} stored");
    }
}
