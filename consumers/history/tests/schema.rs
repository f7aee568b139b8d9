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
    assert_eq!(migration_versions(&path), [1, 2, 3, 4]);
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
        [1, 2, 3, 4],
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
        text.contains("version 7")
            && text.contains(&format!("version {}", schema::migrations().latest())),
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

/// A PostgreSQL history left at version 2 by an older fedhub (bridge rows
/// without topic ids, no running counts) is migrated in place: the counts and
/// pages of every filter shape match the rows it already held, and new
/// batches add to the counts the migration filled in.
#[test]
fn a_postgres_history_of_version_2_is_migrated_with_its_rows() {
    use fedhub_storage::{Database, DatabaseUrl, Migrations, PoolOptions};
    let pg = fedhub_testkit::PgCluster::start();
    let url = DatabaseUrl::parse(&pg.create_database("v2")).unwrap();
    let registry = prometheus::Registry::new();
    {
        let old = Database::open(&url, "Nommer", &PoolOptions::default(), &registry).unwrap();
        let v2 = Migrations::new(schema::SCOPE)
            .step_per_backend(1, "history", schema::SQLITE_V1, schema::POSTGRES_V1)
            .step_per_backend(2, "imports", schema::SQLITE_V2, schema::POSTGRES_V2);
        old.migrate(&v2).unwrap();
    }
    // 60 messages as version 2 stored them: 3 topics in 2 categories, 4 users,
    // a package on every other message.
    let topics = [
        ("org.fedoraproject.prod.git.receive", "git"),
        (
            "org.fedoraproject.prod.buildsys.build.state.change",
            "buildsys",
        ),
        ("org.fedoraproject.prod.buildsys.tag", "buildsys"),
    ];
    let users = ["ralph", "pingou", "kevin", "adamw"];
    let packages = ["kernel", "bash", "firefox"];
    let mut sql = String::new();
    for (name, category) in topics {
        sql += &format!(
            "INSERT INTO history_topics (name, category) VALUES ('{name}', '{category}');\n"
        );
    }
    for u in users {
        sql += &format!("INSERT INTO history_users (name) VALUES ('{u}');\n");
    }
    for p in packages {
        sql += &format!("INSERT INTO history_packages (name) VALUES ('{p}');\n");
    }
    // (topic, user, package) of message k (ids from 1, in insertion order).
    let shape = |k: usize| (k % 3, k % 4, k.is_multiple_of(2).then_some(k % 3));
    for k in 0..60 {
        let (t, u, p) = shape(k);
        sql += &format!(
            "INSERT INTO history_messages (msg_id, topic_id, timestamp, msg) \
             VALUES ('old-{k:03}', {}, {}, '{{}}');\n\
             INSERT INTO history_user_messages (user_id, timestamp, msg) VALUES ({}, {}, {});\n",
            t + 1,
            1_700_000_000 + k,
            u + 1,
            1_700_000_000 + k,
            k + 1
        );
        if let Some(p) = p {
            sql += &format!(
                "INSERT INTO history_package_messages (package_id, timestamp, msg) \
                 VALUES ({}, {}, {});\n",
                p + 1,
                1_700_000_000 + k,
                k + 1
            );
        }
    }
    sql += "UPDATE history_stats SET messages = 60;\n";
    pg.psql("v2", &sql);

    let store = fedhub_history::PgStore::open(&url, &PoolOptions::default(), &registry).unwrap();
    let expect = |keep: &dyn Fn(usize, usize, Option<usize>) -> bool| {
        (0..60)
            .filter(|&k| {
                let (t, u, p) = shape(k);
                keep(t, u, p)
            })
            .count() as u64
    };
    let window = Filter::new().between(1_700_000_010.0, 1_700_000_039.0);
    let in_window = |k: usize| (10..=39).contains(&k);
    let cases: Vec<(Filter, u64)> = vec![
        (Filter::new(), 60),
        (Filter::new().category("buildsys"), expect(&|t, _, _| t > 0)),
        (Filter::new().user("ralph"), expect(&|_, u, _| u == 0)),
        (
            Filter::new().category("buildsys").user("pingou"),
            expect(&|t, u, _| t > 0 && u == 1),
        ),
        (
            Filter::new().user("ralph").not_package("kernel"),
            expect(&|_, u, p| u == 0 && p != Some(0)),
        ),
        (
            Filter::new().category("buildsys").not_package("bash"),
            expect(&|t, _, p| t > 0 && p != Some(1)),
        ),
        (
            Filter::new().package("firefox").not_user("kevin"),
            expect(&|_, u, p| p == Some(2) && u != 2),
        ),
        (
            window.clone().topic(topics[0].0).not_user("ralph"),
            (0..60)
                .filter(|&k| in_window(k) && shape(k).0 == 0 && shape(k).1 != 0)
                .count() as u64,
        ),
    ];
    for (filter, want) in &cases {
        assert_eq!(store.count(filter).unwrap(), *want, "{filter:?}");
        let page = store.grep(&filter.clone().page(1, 100)).unwrap();
        assert_eq!(page.total, *want, "{filter:?}");
        assert_eq!(page.messages.len() as u64, *want, "{filter:?}");
    }
    // A new message by ralph on kernel adds to the counts the migration made.
    let report = store.insert_batch(&[message(1)]).unwrap();
    assert_eq!(report.stored, 1);
    assert_eq!(
        store.count(&Filter::new().user("ralph")).unwrap(),
        expect(&|_, u, _| u == 0) + 1
    );
    assert_eq!(
        store
            .count(&Filter::new().user("ralph").not_package("kernel"))
            .unwrap(),
        expect(&|_, u, p| u == 0 && p != Some(0)),
        "the new message has package kernel"
    );
    assert_eq!(
        store.count(&Filter::new().topic(topics[0].0)).unwrap(),
        expect(&|t, _, _| t == 0) + 1
    );
    let versions = pg.psql(
        "v2",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM fedhub_nommer_migrations",
    );
    assert!(versions.contains("1,2,3"), "{versions}");
}
