//! fedhub-storage against real databases: SQLite files on disk and a real
//! PostgreSQL server (the testkit's throwaway cluster; a test fails when
//! PostgreSQL is not installed, it never skips).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedhub_storage::{
    BatchWriter, Database, DatabaseUrl, ErrorKind, Migrations, PoolOptions, Sink, StorageError,
    TransactionSink, Tx, WriterOptions,
};
use fedhub_testkit::{wait_until, PgCluster};

/// A consumer context outside a hub: its backlog and readiness are real.
fn context(name: &str) -> (fedhub::Context, Arc<fedhub::Stats>) {
    let stats = fedhub::Stats::new();
    let publisher = fedhub::Publisher::disconnected("org.fedoraproject", "test", stats.clone());
    let settings = fedhub::Settings::new(name, Default::default());
    (
        fedhub::Context::new(name, settings, publisher, stats.clone()),
        stats,
    )
}

fn backlog(stats: &fedhub::Stats, consumer: &str) -> i64 {
    stats.consumer(consumer).backlog()
}

/// A consumer's schema: one table of unique keys with a NOT NULL value.
fn schema(scope: &str) -> Migrations {
    Migrations::new(scope)
        .step(
            1,
            "create_items",
            &format!("CREATE TABLE {scope}_items (k TEXT PRIMARY KEY, v TEXT NOT NULL)"),
        )
        .step_per_backend(
            2,
            "add_log",
            &format!("CREATE TABLE {scope}_log (id INTEGER PRIMARY KEY, note TEXT)"),
            &format!("CREATE TABLE {scope}_log (id BIGSERIAL PRIMARY KEY, note TEXT)"),
        )
}

/// An item: a key and a value (`None` is refused by the NOT NULL constraint).
type Item = (String, Option<String>);

fn item(k: usize) -> Item {
    (format!("key-{k:05}"), Some(format!("value {k}")))
}

/// A sink inserting items idempotently (a key already stored is skipped), and
/// what it dead-lettered.
fn sink(
    db: &Database,
    scope: &str,
) -> (
    impl Sink<Item = Item, Error = StorageError>,
    Arc<Mutex<Vec<Item>>>,
) {
    struct Recording<S> {
        inner: S,
        dead: Arc<Mutex<Vec<Item>>>,
    }
    impl<S: Sink<Item = Item, Error = StorageError>> Sink for Recording<S> {
        type Item = Item;
        type Error = StorageError;
        fn write(&mut self, items: &[Item]) -> Result<(), StorageError> {
            self.inner.write(items)
        }
        fn describe(&self, item: &Item) -> String {
            self.inner.describe(item)
        }
        fn dead_letter(&mut self, item: Item, _error: &StorageError) {
            self.dead.lock().unwrap().push(item);
        }
    }
    let url = db.url().clone();
    let sqlite =
        format!("INSERT INTO {scope}_items (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO NOTHING");
    let postgres =
        format!("INSERT INTO {scope}_items (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING");
    let inner = TransactionSink::new(db.clone(), move |tx: &mut Tx<'_>, items: &[Item]| {
        match tx {
            Tx::Sqlite(t) => {
                let mut stmt = t
                    .prepare_cached(&sqlite)
                    .map_err(|e| StorageError::database(&url, "prepare", e))?;
                for (k, v) in items {
                    stmt.execute(fedhub_storage::rusqlite::params![k, v])
                        .map_err(|e| StorageError::database(&url, "insert", e))?;
                }
            }
            Tx::Postgres(t) => {
                let stmt = t
                    .prepare(&postgres)
                    .map_err(|e| StorageError::database(&url, "prepare", e))?;
                for (k, v) in items {
                    t.execute(&stmt, &[k, v])
                        .map_err(|e| StorageError::database(&url, "insert", e))?;
                }
            }
        }
        Ok(())
    })
    .describe_with(|item: &Item| item.0.clone());
    let dead = Arc::new(Mutex::new(Vec::new()));
    (
        Recording {
            inner,
            dead: dead.clone(),
        },
        dead,
    )
}

fn sqlite_count(path: &Path, table: &str) -> i64 {
    let conn = fedhub_storage::rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT count(DISTINCT k) FROM {table}"), [], |r| {
        r.get(0)
    })
    .unwrap()
}

fn quick_options() -> PoolOptions {
    PoolOptions {
        checkout_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(2),
        busy_timeout: Duration::from_millis(100),
        ..PoolOptions::default()
    }
}

// ---------------------------------------------------------------- SQLite

#[test]
fn sqlite_opens_from_a_path_or_a_sqlite_url_and_shares_one_pool_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.sqlite");
    let registry = prometheus::Registry::new();
    let plain = DatabaseUrl::parse(path.to_str().unwrap()).unwrap();
    let prefixed = DatabaseUrl::parse(&format!("sqlite:{}", path.display())).unwrap();
    let a = Database::open(&plain, "OpenA", &quick_options(), &registry).unwrap();
    let b = Database::open(&prefixed, "OpenB", &quick_options(), &registry).unwrap();
    assert!(path.is_file(), "the file is created");
    assert!(a.shares_pool_with(&b), "one pool for one file");
    assert_eq!(b.backend().as_str(), "sqlite");
    let other = Database::open(
        &DatabaseUrl::sqlite(dir.path().join("other.sqlite")),
        "OpenA",
        &quick_options(),
        &registry,
    )
    .unwrap();
    assert!(!a.shares_pool_with(&other));

    // Each consumer keeps its own tables in the shared file.
    a.migrate(&schema("opena")).unwrap();
    b.migrate(&schema("openb")).unwrap();
    let n: i64 = a
        .transaction(|tx| match tx {
            Tx::Sqlite(t) => t
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name IN ('opena_items', 'openb_items', 'fedhub_opena_migrations', 'fedhub_openb_migrations')",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| StorageError::database(a.url(), "query", e)),
            Tx::Postgres(_) => unreachable!(),
        })
        .unwrap();
    assert_eq!(n, 4);
    assert!(a.metrics().checkouts() >= 2, "checkouts are measured");
}

#[test]
fn sqlite_migrations_apply_once_and_a_newer_schema_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::sqlite(dir.path().join("migrations.sqlite"));
    let registry = prometheus::Registry::new();
    let db = Database::open(&url, "Migrating", &quick_options(), &registry).unwrap();
    let first = db.migrate(&schema("migrating")).unwrap();
    assert_eq!(first.from, 0);
    assert_eq!(first.to, 2);
    assert_eq!(first.applied, ["V1__create_items", "V2__add_log"]);
    let again = db.migrate(&schema("migrating")).unwrap();
    assert_eq!(again.applied, Vec::<String>::new(), "idempotent");
    assert_eq!((again.from, again.to), (2, 2));

    // A binary that knows only version 1 refuses the database.
    let older = Migrations::new("migrating").step(
        1,
        "create_items",
        "CREATE TABLE migrating_items (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    );
    let err = db.migrate(&older).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::SchemaTooNew {
                database: 2,
                binary: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("version 2") && text.contains("version 1"),
        "{text}"
    );
    assert!(
        text.contains("migrations.sqlite"),
        "names the database: {text}"
    );

    // An edited migration is refused by its checksum.
    let edited = Migrations::new("migrating")
        .step(1, "create_items", "CREATE TABLE migrating_items (k TEXT)")
        .step(2, "add_log", "CREATE TABLE migrating_log (id INTEGER)");
    let err = db.migrate(&edited).unwrap_err();
    assert!(matches!(err, StorageError::Migration { .. }), "{err:?}");
}

/// Makes a file immutable (even root cannot write it) until dropped.
struct Immutable<'a>(&'a Path);

impl<'a> Immutable<'a> {
    fn set(path: &'a Path) -> Immutable<'a> {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .expect("chattr (e2fsprogs) runs");
        assert!(status.success(), "chattr +i {}", path.display());
        Immutable(path)
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(self.0)
            .status();
    }
}

#[test]
fn bad_sqlite_paths_and_a_read_only_file_give_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let open = |url: &DatabaseUrl| Database::open(url, "BadPaths", &quick_options(), &registry);

    let missing = DatabaseUrl::sqlite(dir.path().join("no/such/dir/x.sqlite"));
    let text = open(&missing)
        .err()
        .expect("a missing directory")
        .to_string();
    assert!(text.contains("no/such/dir/x.sqlite"), "{text}");
    assert!(text.contains("does not exist"), "{text}");

    let text = open(&DatabaseUrl::sqlite(dir.path()))
        .err()
        .expect("a directory")
        .to_string();
    assert!(text.contains("is a directory"), "{text}");

    let path = dir.path().join("readonly.sqlite");
    {
        let conn = fedhub_storage::rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE t (x)")
            .unwrap();
    }
    let _immutable = Immutable::set(&path);
    let err = open(&DatabaseUrl::sqlite(&path))
        .err()
        .expect("a read-only file");
    assert!(matches!(err, StorageError::ReadOnly { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("readonly.sqlite") && text.contains("read-only"),
        "{text}"
    );

    let err = DatabaseUrl::parse("mongodb://db/x").unwrap_err();
    assert!(
        err.to_string().contains("unknown scheme \"mongodb\""),
        "{err}"
    );
}

#[test]
fn the_writer_commits_in_batches_and_holds_the_backlog_until_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batches.sqlite");
    let (ctx, stats) = context("Batching");
    let db = Database::for_consumer(&ctx, &DatabaseUrl::sqlite(&path), &quick_options()).unwrap();
    db.migrate(&schema("batching")).unwrap();
    let (sink, _dead) = sink(&db, "batching");
    let options = WriterOptions {
        batch_items: 10,
        batch_latency: Duration::from_secs(60),
        ..WriterOptions::default()
    };
    let writer =
        BatchWriter::spawn(sink, options, db.writer_target(Some(ctx.readiness()))).unwrap();
    for k in 0..25 {
        writer.submit_holding(item(k), ctx.hold_backlog()).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(10), || writer.health().committed == 20),
        "two full batches commit: {:?}",
        writer.health()
    );
    assert_eq!(sqlite_count(&path, "batching_items"), 20);
    assert_eq!(
        backlog(&stats, "Batching"),
        5,
        "the five items of the open batch stay in the backlog"
    );
    assert_eq!(writer.health().queued, 5);
    writer.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(sqlite_count(&path, "batching_items"), 25);
    assert_eq!(backlog(&stats, "Batching"), 0);
    let m = db.metrics();
    assert_eq!((m.batches(), m.committed()), (3, 25));
    let text = stats.render_prometheus().unwrap();
    for family in [
        "fedhub_storage_commit_seconds_bucket",
        "fedhub_storage_batch_items_bucket",
        "fedhub_storage_items_committed_total",
        "fedhub_storage_pool_wait_seconds_bucket",
        "fedhub_storage_queue_items",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(family)
                && l.contains("consumer=\"Batching\"")
                && l.contains("backend=\"sqlite\"")),
            "{family} in /metrics"
        );
    }
    writer.shutdown();
}

#[test]
fn an_item_the_database_refuses_is_dead_lettered_and_the_rest_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refused.sqlite");
    let (ctx, stats) = context("Refusing");
    let db = Database::for_consumer(&ctx, &DatabaseUrl::sqlite(&path), &quick_options()).unwrap();
    db.migrate(&schema("refusing")).unwrap();
    let (sink, dead) = sink(&db, "refusing");
    let writer = BatchWriter::spawn(
        sink,
        WriterOptions::default(),
        db.writer_target(Some(ctx.readiness())),
    )
    .unwrap();
    for k in 0..10 {
        let mut it = item(k);
        if k == 4 {
            it.1 = None;
        }
        writer.submit_holding(it, ctx.hold_backlog()).unwrap();
    }
    writer.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(sqlite_count(&path, "refusing_items"), 9);
    assert_eq!(
        dead.lock().unwrap().as_slice(),
        &[("key-00004".to_string(), None)]
    );
    let health = writer.health();
    assert_eq!(
        (health.committed, health.dead_lettered, health.queued),
        (9, 1, 0)
    );
    assert!(health.healthy, "a refused row is not an outage");
    assert_eq!(ctx.readiness().problem(), None);
    assert_eq!(backlog(&stats, "Refusing"), 0);
    assert_eq!(db.metrics().dead_letters(), 1);
    assert_eq!(db.metrics().errors(ErrorKind::Constraint), 1);
}

#[test]
fn a_locked_sqlite_database_is_retried_while_readiness_names_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.sqlite");
    let (ctx, stats) = context("Locked");
    let db = Database::for_consumer(&ctx, &DatabaseUrl::sqlite(&path), &quick_options()).unwrap();
    db.migrate(&schema("locked")).unwrap();
    let (sink, _dead) = sink(&db, "locked");
    let options = WriterOptions {
        batch_latency: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..WriterOptions::default()
    };
    let writer =
        BatchWriter::spawn(sink, options, db.writer_target(Some(ctx.readiness()))).unwrap();

    // Another process holds the write lock.
    let other = fedhub_storage::rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    for k in 0..30 {
        writer.submit_holding(item(k), ctx.hold_backlog()).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(10), || ctx
            .readiness()
            .problem()
            .is_some()),
        "readiness fails while the database is locked"
    );
    let problem = ctx.readiness().problem().unwrap();
    assert!(
        problem.contains("Locked cannot commit to sqlite:"),
        "{problem}"
    );
    assert!(problem.contains("busy"), "{problem}");
    assert!(!writer.health().healthy);
    assert_eq!(backlog(&stats, "Locked"), 30, "nothing leaves the backlog");
    other.execute_batch("COMMIT").unwrap();

    writer.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(sqlite_count(&path, "locked_items"), 30);
    assert_eq!(ctx.readiness().problem(), None, "readiness recovers");
    assert_eq!(backlog(&stats, "Locked"), 0);
    assert!(db.metrics().errors(ErrorKind::Busy) >= 1);
    assert!(writer.health().healthy);
}

// ---------------------------------------------------------------- PostgreSQL

#[test]
fn postgres_opens_shares_pools_migrates_and_dead_letters_a_refused_row() {
    let pg = PgCluster::start();
    let url = DatabaseUrl::parse(&pg.url()).unwrap();
    assert!(!url.to_string().contains(PgCluster::PASSWORD), "{url}");
    let (ctx, stats) = context("PgWriter");
    let db = Database::for_consumer(&ctx, &url, &quick_options()).unwrap();
    let registry = prometheus::Registry::new();
    let same = Database::open(&url, "PgOther", &quick_options(), &registry).unwrap();
    assert!(db.shares_pool_with(&same));
    assert_eq!(db.backend().as_str(), "postgres");
    let socket = DatabaseUrl::parse(&pg.socket_url_for("fedhub")).unwrap();
    let by_socket = Database::open(&socket, "PgSocket", &quick_options(), &registry).unwrap();
    assert!(
        !by_socket.shares_pool_with(&db),
        "another URL, another pool"
    );

    // Migrations: once, idempotent, per consumer, newer refused.
    let report = db.migrate(&schema("pgwriter")).unwrap();
    assert_eq!(report.applied, ["V1__create_items", "V2__add_log"]);
    assert!(db.migrate(&schema("pgwriter")).unwrap().applied.is_empty());
    assert_eq!(same.migrate(&schema("pgother")).unwrap().to, 2);
    assert_eq!(
        pg.psql(
            "fedhub",
            "SELECT max(version) FROM fedhub_pgwriter_migrations"
        ),
        "2"
    );
    let older = Migrations::new("pgwriter").step(
        1,
        "create_items",
        "CREATE TABLE pgwriter_items (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    );
    let text = by_socket.migrate(&older).unwrap_err().to_string();
    assert!(
        text.contains("version 2") && text.contains("version 1"),
        "{text}"
    );

    // The writer: batches, backlog held until commit, a refused row dead-lettered.
    let (sink, dead) = sink(&db, "pgwriter");
    let options = WriterOptions {
        batch_items: 25,
        batch_latency: Duration::from_secs(60),
        ..WriterOptions::default()
    };
    let writer =
        BatchWriter::spawn(sink, options, db.writer_target(Some(ctx.readiness()))).unwrap();
    for k in 0..60 {
        let mut it = item(k);
        if k == 7 {
            it.1 = None;
        }
        writer.submit_holding(it, ctx.hold_backlog()).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || {
        let h = writer.health();
        h.committed + h.dead_lettered == 50
    }));
    assert_eq!(
        backlog(&stats, "PgWriter"),
        10,
        "the open batch stays in the backlog"
    );
    writer.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(
        pg.psql("fedhub", "SELECT count(*) FROM pgwriter_items"),
        "59"
    );
    assert_eq!(dead.lock().unwrap().len(), 1);
    assert_eq!(db.metrics().errors(ErrorKind::Constraint), 1);
    assert_eq!(backlog(&stats, "PgWriter"), 0);
    assert_eq!(ctx.readiness().problem(), None);
    let text = stats.render_prometheus().unwrap();
    assert!(
        text.contains(
            "fedhub_storage_dead_letters_total{backend=\"postgres\",consumer=\"PgWriter\"} 1"
        ),
        "{text}"
    );
}

#[test]
fn postgres_wrong_credentials_unreachable_missing_and_read_only_give_clear_errors() {
    let pg = PgCluster::start();
    let registry = prometheus::Registry::new();
    let open = |text: &str| {
        Database::open(
            &DatabaseUrl::parse(text).unwrap(),
            "PgErrors",
            &quick_options(),
            &registry,
        )
        .err()
        .map(|e| (fedhub::error_chain(&e), e))
        .expect("opening fails")
    };

    let wrong = pg.url().replace(PgCluster::PASSWORD, "not-the-password");
    let (text, err) = open(&wrong);
    assert!(matches!(err, StorageError::Connect { .. }), "{err:?}");
    assert!(
        text.contains(&format!("127.0.0.1:{}/fedhub", pg.port())),
        "{text}"
    );
    assert!(text.contains("postgres:***@"), "password masked: {text}");
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");

    let port = fedhub_testkit::free_port();
    let (text, _) = open(&format!("postgres://postgres:pw@127.0.0.1:{port}/fedhub"));
    assert!(text.contains("cannot connect to database"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        text.to_lowercase().contains("refused"),
        "names the cause: {text}"
    );

    let (text, _) = open(&pg.url_for("nosuchdb"));
    assert!(
        text.contains("nosuchdb") && text.contains("does not exist"),
        "{text}"
    );

    pg.create_database("readonly");
    pg.psql(
        "fedhub",
        "ALTER DATABASE readonly SET default_transaction_read_only = on",
    );
    let (text, err) = open(&pg.url_for("readonly"));
    assert!(matches!(err, StorageError::ReadOnly { .. }), "{err:?}");
    assert!(
        text.contains("/readonly") && text.contains("read-only"),
        "{text}"
    );
}

#[test]
fn postgres_stopped_mid_burst_is_retried_with_readiness_failing_and_every_item_stored_once() {
    let mut pg = PgCluster::start();
    let url = DatabaseUrl::parse(&pg.url()).unwrap();
    let (ctx, stats) = context("PgOutage");
    let db = Database::for_consumer(&ctx, &url, &quick_options()).unwrap();
    db.migrate(&schema("pgoutage")).unwrap();
    let (sink, dead) = sink(&db, "pgoutage");
    let options = WriterOptions {
        batch_items: 20,
        batch_latency: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..WriterOptions::default()
    };
    let writer =
        BatchWriter::spawn(sink, options, db.writer_target(Some(ctx.readiness()))).unwrap();
    for k in 0..50 {
        writer.submit_holding(item(k), ctx.hold_backlog()).unwrap();
    }
    pg.stop();
    for k in 50..200 {
        writer.submit_holding(item(k), ctx.hold_backlog()).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(20), || ctx
            .readiness()
            .problem()
            .is_some()),
        "readiness fails while the server is down"
    );
    let problem = ctx.readiness().problem().unwrap();
    assert!(
        problem.contains("PgOutage cannot commit to postgres://postgres:***@"),
        "{problem}"
    );
    assert!(problem.contains("unavailable"), "{problem}");
    assert!(!problem.contains(PgCluster::PASSWORD), "{problem}");
    let held = backlog(&stats, "PgOutage");
    assert!(
        held >= 150,
        "what is not committed stays in the backlog: {held}"
    );
    assert_eq!(held as u64, writer.health().queued);

    pg.restart();
    writer.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(
        pg.psql(
            "fedhub",
            "SELECT count(*), count(DISTINCT k) FROM pgoutage_items"
        ),
        "200|200",
        "every item stored exactly once"
    );
    assert!(
        dead.lock().unwrap().is_empty(),
        "an outage dead-letters nothing"
    );
    assert_eq!(ctx.readiness().problem(), None, "readiness recovers");
    assert_eq!(backlog(&stats, "PgOutage"), 0);
    let health = writer.health();
    assert!(health.healthy && health.failed_attempts >= 1, "{health:?}");
    assert_eq!(health.last_error_kind, Some(ErrorKind::Unavailable));
    assert!(db.metrics().errors(ErrorKind::Unavailable) >= 1);
    assert_eq!(db.metrics().committed(), 200);
}

// ---------------------------------------------------------------- observers

/// A sink that reports keys it has seen before as duplicates, and an observer
/// recording what the writer tells it.
#[derive(Default)]
struct Seen {
    committed: Mutex<Vec<(usize, u64, u64)>>,
    failures: Mutex<u64>,
}

impl fedhub_storage::WriterObserver for Seen {
    fn committed(&self, items: usize, report: &fedhub_storage::WriteReport, _took: Duration) {
        self.committed
            .lock()
            .unwrap()
            .push((items, report.stored, report.duplicates));
    }
    fn commit_failed(&self, _: usize, _: ErrorKind, _: &str, _: Duration) {
        *self.failures.lock().unwrap() += 1;
    }
}

struct Dedup {
    known: std::collections::HashSet<String>,
    fail_next: Arc<Mutex<u32>>,
}

#[derive(Debug, thiserror::Error)]
#[error("server gone")]
struct Gone;

impl fedhub_storage::Classify for Gone {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

impl Sink for Dedup {
    type Item = String;
    type Error = Gone;
    fn write(&mut self, items: &[String]) -> Result<(), Gone> {
        self.write_reporting(items).map(|_| ())
    }
    fn write_reporting(&mut self, items: &[String]) -> Result<fedhub_storage::WriteReport, Gone> {
        let mut fail = self.fail_next.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(Gone);
        }
        let mut report = fedhub_storage::WriteReport::default();
        for item in items {
            if self.known.insert(item.clone()) {
                report.stored += 1;
            } else {
                report.duplicates += 1;
            }
        }
        Ok(report)
    }
}

#[test]
fn the_writer_reports_duplicates_to_its_observer_and_a_restarted_writer_keeps_its_state() {
    let registry = prometheus::Registry::new();
    let seen = Arc::new(Seen::default());
    let target = || {
        fedhub_storage::WriterTarget::new(
            "Observed",
            "memory",
            fedhub_storage::Backend::Sqlite,
            &registry,
        )
        .observed_by(seen.clone())
    };
    let fail_next = Arc::new(Mutex::new(0));
    let sink = || Dedup {
        known: Default::default(),
        fail_next: fail_next.clone(),
    };
    let options = WriterOptions {
        batch_latency: Duration::from_millis(10),
        retry_min: Duration::from_millis(5),
        ..WriterOptions::default()
    };
    let writer = BatchWriter::spawn(sink(), options.clone(), target()).unwrap();
    for k in ["a", "b", "a"] {
        writer.submit(k.to_string()).unwrap();
    }
    writer.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(seen.committed.lock().unwrap().as_slice(), &[(3, 2, 1)]);
    let health = writer.health();
    assert_eq!((health.committed, health.duplicates), (3, 1));

    // The writer fails, is stopped, and a new one starts on the same state.
    let state = writer.state().clone();
    *fail_next.lock().unwrap() = 1_000_000;
    writer.submit("c".into()).unwrap();
    assert!(wait_until(Duration::from_secs(10), || state.is_failing()));
    *fail_next.lock().unwrap() = 0;
    writer.shutdown();
    assert!(*seen.failures.lock().unwrap() >= 1);
    let again = BatchWriter::spawn_with_state(sink(), options, target(), state.clone()).unwrap();
    assert!(again.health().committed >= 3, "counts survive the restart");
    again.submit("d".into()).unwrap();
    again.flush(Duration::from_secs(10)).unwrap();
    assert!(!state.is_failing(), "a commit clears the failing state");
}
