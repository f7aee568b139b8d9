//! The history store's schema through `fedhub_storage`'s migrations: a new
//! file gets the latest version, a file made before migrations existed is
//! adopted as version 1 and migrated from there, and files that are not
//! fedhub's are refused naming why.

use fedhub::Envelope;
use fedhub_history::{schema, Filter, NewMessage, NommerConfig, SqliteStore, Store};
use serde_json::json;

fn message(k: usize) -> NewMessage {
    let body = json!({
        "topic": "org.fedoraproject.prod.git.receive",
        "msg_id": format!("2023-00000000-0000-4000-8000-{k:012}"),
        "timestamp": 1_700_000_000.0 + k as f64,
        "i": k,
        "msg": {"commit": {"username": "ralph", "repo": "kernel", "namespace": "rpms"}},
    });
    NewMessage::from_envelope(&Envelope::from_value(body).unwrap())
}

fn migration_versions(path: &std::path::Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT version FROM fedhub_nommer_migrations ORDER BY version")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn user_version(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_new_file_is_migrated_to_the_latest_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    store.insert_batch(&[message(1)]).unwrap();
    drop(store);
    assert_eq!(migration_versions(&path), [1, 2]);
    assert_eq!(user_version(&path), 1, "older binaries still open it");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.message_count().unwrap(), 1);
}

#[test]
fn a_file_made_before_migrations_is_adopted_with_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        // What fedhub wrote before migrations: the schema, user_version 1, rows.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL").unwrap();
        conn.execute_batch(schema::SQLITE_V1).unwrap();
        conn.execute_batch(
            "INSERT INTO topic(id, name, category) VALUES (1, 'org.fedoraproject.prod.git.receive', 'git');
             INSERT INTO user(id, name) VALUES (1, 'ralph');
             INSERT INTO messages(id, msg_id, msg_hash, i, topic_id, timestamp, msg)
                 VALUES (1, 'old-1', 0, 1, 1, 1600000000.0, '{\"a\":1}');
             INSERT INTO user_messages(msg, user_id) VALUES (1, 1);",
        )
        .unwrap();
        let hash = fedhub_history::index::msg_hash("old-1") as i64;
        conn.execute("UPDATE messages SET msg_hash = ?1", [hash])
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.message_count().unwrap(), 1);
    let old = store.get("old-1").unwrap().expect("the old message");
    assert_eq!(old.msg, json!({"a": 1}));
    assert_eq!(store.count(&Filter::new().user("ralph")).unwrap(), 1);
    let report = store.insert_batch(&[message(2), message(2)]).unwrap();
    assert_eq!((report.stored, report.duplicates), (1, 1));
    drop(store);
    assert_eq!(
        migration_versions(&path),
        [1, 2],
        "adopted as version 1, then migrated"
    );
    assert_eq!(user_version(&path), 1);
    // Opening again changes nothing.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.message_count().unwrap(), 2);
}

#[test]
fn files_that_are_not_a_history_this_fedhub_knows_are_refused_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("datanommer.sqlite");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE messages (id INTEGER PRIMARY KEY, msg_id TEXT, _msg TEXT)")
        .unwrap();
    let text = SqliteStore::open(&foreign).err().unwrap().to_string();
    assert!(
        text.contains("datanommer.sqlite") && text.contains("no msg_hash column"),
        "{text}"
    );

    let newer = dir.path().join("newer.sqlite");
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.execute_batch(schema::SQLITE_V1).unwrap();
        conn.execute_batch("PRAGMA user_version = 2").unwrap();
    }
    let text = SqliteStore::open(&newer).err().unwrap().to_string();
    assert!(
        text.contains("newer.sqlite") && text.contains("schema version 2 is newer"),
        "{text}"
    );

    // A migration history newer than this binary: refused by fedhub-storage,
    // naming both versions.
    let ahead = dir.path().join("ahead.sqlite");
    drop(SqliteStore::open(&ahead).unwrap());
    rusqlite::Connection::open(&ahead)
        .unwrap()
        .execute(
            "INSERT INTO fedhub_nommer_migrations (version, name, applied_on, checksum)
             VALUES (7, 'future', '2030-01-01T00:00:00Z', '0')",
            [],
        )
        .unwrap();
    let text = fedhub::error_chain(&SqliteStore::open(&ahead).err().unwrap());
    assert!(
        text.contains("version 7") && text.contains("version 2"),
        "{text}"
    );
}

#[test]
fn the_database_key_is_a_url_and_a_plain_path_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    for database in [
        dir.path().join("plain.sqlite").display().to_string(),
        format!("sqlite:{}", dir.path().join("prefixed.sqlite").display()),
    ] {
        let config = NommerConfig {
            database: database.clone(),
            ..NommerConfig::default()
        };
        config.validate().unwrap();
        let store = config.open_store(&registry).unwrap();
        store.insert_batch(&[message(1)]).unwrap();
        assert_eq!(store.message_count().unwrap(), 1, "{database}");
    }
    assert!(dir.path().join("prefixed.sqlite").is_file());

    let bad = NommerConfig {
        database: "mysql://root:hunter2@db/history".into(),
        ..NommerConfig::default()
    };
    let text = bad.validate().unwrap_err().to_string();
    assert!(
        text.contains("[consumers.Nommer] database") && text.contains("unknown scheme \"mysql\""),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "password masked: {text}");
}
